//! TLS on by default, 1.2 and 1.3 only; plaintext only where allowed.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::*;

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("https://").to_string()
}

#[tokio::test]
async fn default_start_serves_https_with_a_generated_certificate() {
    let dir = data_dir();
    let server = Server::start(&dir.path, &[], &[]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let key_mode = std::fs::metadata(dir.path.join("tls/key.pem")).expect("key").permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600, "private key is owner-only");

    let res = server.client().get(server.at("/healthz")).send().await.expect("https healthz");
    assert_eq!(res.status(), 200);
    let hsts = res.headers().get("strict-transport-security").expect("HSTS over TLS");
    assert!(hsts.to_str().expect("ascii").contains("max-age="));

    // The logged fingerprint is the certificate's SHA-256.
    let pem = std::fs::read(dir.path.join("tls/cert.pem")).expect("cert");
    let der = rustls_pemfile_der(&pem);
    let expected = sha256_colon_hex(&der);
    assert!(server.stderr().contains(&expected), "fingerprint {expected} logged:\n{}", server.stderr());
}

#[tokio::test]
async fn tls_1_2_and_1_3_handshakes_succeed() {
    let dir = data_dir();
    let server = Server::start(&dir.path, &[], &[]);
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let negotiated = handshake(&server, version).await;
        assert_eq!(negotiated, Some(version.version), "negotiated {:?}", version.version);
    }
}

#[test]
fn a_tls_1_1_client_hello_is_refused() {
    let dir = data_dir();
    let server = Server::start(&dir.path, &[], &[]);
    let mut stream = TcpStream::connect(addr(&server)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(&tls11_client_hello()).expect("send hello");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(!reply.is_empty(), "server answers with an alert");
    assert_eq!(reply[0], 0x15, "first record is an alert, not a ServerHello: {reply:02x?}");
}

#[test]
fn no_tls_is_refused_off_loopback_unless_a_proxy_is_declared() {
    let dir = data_dir();
    let mut cmd = ward();
    cmd.args(["serve", "--no-tls", "--listen", "0.0.0.0:0", "--data-dir"]).arg(&dir.path);
    let out = run(cmd, None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-tls (server.tls = false) is refused") && err.contains("behind_tls_proxy"), "{err}");

    let server = Server::start(&dir.path, &["--no-tls"], &[("WARD_SERVER_BEHIND_TLS_PROXY", "true")]);
    assert!(server.url.starts_with("http://"));
}

async fn handshake(
    server: &Server,
    version: &'static rustls::SupportedProtocolVersion,
) -> Option<rustls::ProtocolVersion> {
    let pem = std::fs::read(server.data_dir.join("tls/cert.pem")).expect("cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pemfile_der(&pem).into()).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr(server)).await.expect("connect");
    let mut tls = connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await.expect("handshake");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut body = String::new();
    tls.read_to_string(&mut body).await.expect("read");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    tls.get_ref().1.protocol_version()
}

fn rustls_pemfile_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("utf8");
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")
}

fn sha256_colon_hex(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// A minimal ClientHello offering only TLS 1.1 (legacy version 0x0302, no
/// supported_versions extension) with common TLS 1.1 cipher suites.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id length
    let suites: [u16; 4] = [0xc013, 0xc014, 0x002f, 0x0035];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}
