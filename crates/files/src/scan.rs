//! Malware scanning with ClamAV's clamd (`[files] clamd_socket`), while the upload streams.
//!
//! Each upload opens one `INSTREAM` session on clamd's Unix socket (through the
//! `clamav-client` crate) and feeds it the plaintext chunks as they arrive, beside the
//! encryption. The verdict is awaited before the upload's record is committed, so a file is
//! readable only after a clean scan; an infected one is never recorded and its object is
//! aborted. A scan that cannot finish (clamd down, its `StreamMaxLength` exceeded, a time-out)
//! refuses the upload: fail closed.
//!
//! clamd sees plaintext, and writes each `INSTREAM` stream to a temporary file while it
//! scans: run it on the same host (a Unix socket, mode 0660) with its `TemporaryDirectory`
//! on a tmpfs or an encrypted volume (docs/files.md).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::FilesError;

/// Where clamd listens and how long one scan may take after the last byte.
#[derive(Debug, Clone)]
pub struct Clamd {
    pub socket: PathBuf,
    pub timeout: Duration,
}

/// A scan in progress.
pub struct Scan {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    task: JoinHandle<std::io::Result<Vec<u8>>>,
    timeout: Duration,
    /// Set when a chunk did not reach clamd: then only a `FOUND` verdict counts.
    incomplete: AtomicBool,
}

impl Scan {
    /// Opens a scan session fed by [`Scan::feed`].
    pub fn start(clamd: &Clamd) -> Scan {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let input = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let socket = clamav_client::tokio::Socket { socket_path: clamd.socket.clone() };
        let task = tokio::spawn(async move { clamav_client::tokio::scan_stream(input, socket, None).await });
        Scan { tx, task, timeout: clamd.timeout, incomplete: AtomicBool::new(false) }
    }

    /// Hands clamd the next chunk. A session that already ended (clamd refused or failed)
    /// shows in [`Scan::finish`].
    pub async fn feed(&self, chunk: Bytes) {
        // A stalled or finished clamd does not hold the upload: the chunk is dropped and
        // the scan is marked incomplete, which `finish` refuses (never a partial "OK").
        if self.incomplete.load(Ordering::Relaxed) {
            return;
        }
        if !matches!(tokio::time::timeout(self.timeout, self.tx.send(Ok(chunk))).await, Ok(Ok(()))) {
            self.incomplete.store(true, Ordering::Relaxed);
        }
    }

    /// Ends the stream and waits for the verdict: `Ok(())` when clean,
    /// [`FilesError::Infected`] with the signature's name, or
    /// [`FilesError::ScanFailed`] when there is no verdict.
    pub async fn finish(self) -> Result<(), FilesError> {
        drop(self.tx);
        let answer = match tokio::time::timeout(self.timeout, self.task).await {
            Err(_) => return Err(FilesError::ScanFailed("clamd gave no verdict in time".into())),
            Ok(Err(join)) => return Err(FilesError::ScanFailed(format!("the scan task failed: {join}"))),
            Ok(Ok(Err(io))) => return Err(FilesError::ScanFailed(format!("clamd: {io}"))),
            Ok(Ok(Ok(answer))) => answer,
        };
        match verdict(&answer) {
            Ok(()) if self.incomplete.load(Ordering::Relaxed) => {
                Err(FilesError::ScanFailed("clamd did not receive the whole file".into()))
            }
            other => other,
        }
    }
}

/// Reads clamd's answer to `INSTREAM`: `stream: OK`, `stream: <name> FOUND`, or an error.
fn verdict(answer: &[u8]) -> Result<(), FilesError> {
    let text = String::from_utf8_lossy(answer);
    let text = text.trim_end_matches(['\0', '\n', ' ']);
    let result = text.strip_prefix("stream: ").unwrap_or(text);
    if result == "OK" {
        Ok(())
    } else if let Some(name) = result.strip_suffix(" FOUND") {
        Err(FilesError::Infected(name.chars().take(200).collect()))
    } else {
        Err(FilesError::ScanFailed(format!("clamd answered: {}", result.chars().take(200).collect::<String>())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamd_answers_are_read_strictly() {
        assert!(verdict(b"stream: OK\0").is_ok());
        assert!(
            matches!(verdict(b"stream: Eicar-Signature FOUND\0"), Err(FilesError::Infected(n)) if n == "Eicar-Signature")
        );
        assert!(matches!(verdict(b"INSTREAM size limit exceeded. ERROR\0"), Err(FilesError::ScanFailed(_))));
        assert!(matches!(verdict(b""), Err(FilesError::ScanFailed(_))), "no answer is no verdict");
    }
}
