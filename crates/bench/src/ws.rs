//! One client of `GET /v1/ws`: connect, send `{"type":"auth","token"}` as the first frame,
//! wait for `{"type":"ready"}`. Afterwards the caller keeps reading, which also answers the
//! server's Pings (tungstenite queues the Pong and flushes it on the next read).
//!
//! Buffers are kept small (4 KiB) so that 10,000 sockets do not cost the bench gigabytes;
//! frames larger than that still arrive whole.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(4 * 1024)
}

/// Opens an authenticated socket. The error is a short label for the report's error
/// table (`ws connect refused`, `ws close 4401 unauthenticated`, `ws ready timeout`, …).
pub async fn open(url: &str, token: &str, limit: Duration) -> Result<Ws, String> {
    let attempt = async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config()), true)
            .await
            .map_err(|e| format!("ws connect: {}", connect_error(&e)))?;
        let auth = serde_json::json!({"type": "auth", "token": token}).to_string();
        ws.send(Message::text(auth)).await.map_err(|_| "ws auth send failed".to_string())?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.contains("\"type\":\"ready\"") => return Ok(ws),
                Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_) | Message::Binary(_))) => continue,
                Some(Ok(Message::Close(frame))) => return Err(close_label(frame.as_ref())),
                Some(Ok(Message::Frame(_))) => continue,
                Some(Err(e)) => return Err(format!("ws error before ready: {}", short(&e))),
                None => return Err("ws ended before ready".into()),
            }
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => Err("ws ready timeout".into()),
    }
}

/// `ws close CODE REASON` for a close frame (`ws close (no code)` without one).
pub fn close_label(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) => format!("ws close {} {}", u16::from(f.code), f.reason).trim_end().to_string(),
        None => "ws close (no code)".into(),
    }
}

fn connect_error(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Io(io) => format!("{:?}", io.kind()),
        Error::Http(res) => format!("HTTP {}", res.status()),
        other => short(other),
    }
}

/// An error's kind, without addresses or ids, so that equal failures count together.
pub fn short(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Io(io) => format!("io {:?}", io.kind()),
        Error::ConnectionClosed => "connection closed".into(),
        Error::AlreadyClosed => "already closed".into(),
        Error::Protocol(p) => format!("protocol {p}"),
        Error::Capacity(_) => "capacity".into(),
        other => {
            let text = other.to_string();
            text.split(':').next().unwrap_or_default().to_string()
        }
    }
}

/// Sends a close frame and gives the server a moment to answer, without waiting long.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
}
