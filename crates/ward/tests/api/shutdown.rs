//! SIGTERM: stop accepting, finish in-flight requests, exit 0.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use crate::helpers::*;

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let dir = data_dir();
    add_user(&dir.path, &[], "grace", "staff", "a long enough passphrase");
    let server = Server::plain(&dir.path);
    let addr = server.url.trim_start_matches("http://").to_string();

    // Start a sign-in whose body arrives in two halves, with SIGTERM in between.
    let body = r#"{"username":"grace","password":"a long enough passphrase"}"#;
    let (first, second) = body.split_at(20);
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(
        stream,
        "POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}",
        body.len()
    )
    .expect("send head");
    stream.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    signal(&server.child, "TERM");
    std::thread::sleep(Duration::from_millis(500));

    // New connections are no longer accepted...
    let refused = TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(2));
    if let Ok(mut late) = refused {
        // (the kernel may still complete a handshake queued before close; it must get no answer)
        late.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let _ = late.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = [0u8; 16];
        let n = late.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "no answer on a connection opened after SIGTERM");
    }

    // ...but the one in flight completes.
    stream.write_all(second.as_bytes()).expect("send rest");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "in-flight sign-in answered: {answer}");
    assert!(answer.contains("\"token\""));

    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "clean exit after SIGTERM");
}
