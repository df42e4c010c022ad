//! Files over HTTP: round trips of every size class with SHA-256 equality, byte ranges,
//! refusals (non-member, size, type), tamper detection on the stored object, deletion that
//! leaves nothing behind, the orphan sweep, attachments, and the same against S3 (moto's
//! server on loopback). A marker scan proves no plaintext reaches the disk or the bucket.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;
use crate::secrets_at_rest::files_under;

/// Bytes a sealed segment adds (format byte, nonce, tag).
const OVERHEAD: u64 = 29;
const SEGMENT: u64 = 64 * 1024;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `len` bytes of text that carry `marker` again and again.
fn text(marker: &str, len: usize) -> Vec<u8> {
    let line = format!("{marker} lab result line\n");
    line.bytes().cycle().take(len).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn scan_dir(dir: &Path, marker: &str, when: &str) {
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).expect("read");
        assert!(!contains(&bytes, marker.as_bytes()), "{when}: {} holds file plaintext", file.display());
    }
}

async fn group(server: &Server, token: &str, members: &[&str]) -> String {
    let res = server
        .client()
        .post(server.at("/v1/dialogs"))
        .bearer_auth(token)
        .json(&json!({"type": "group", "members": members}))
        .send()
        .await
        .expect("dialog");
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_string()
}

/// A client without the helpers' 30 s limit, for large bodies.
fn patient_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder().use_rustls_tls().timeout(Duration::from_secs(600)).build().expect("client")
}

async fn upload(server: &Server, token: &str, dialog: &str, name: &str, ty: &str, body: Vec<u8>) -> reqwest::Response {
    patient_client()
        .post(server.at(&format!("/v1/files?dialog_id={dialog}")))
        .bearer_auth(token)
        .header("content-type", ty)
        .header("x-ward-file-name", urlencode(name))
        .body(body)
        .send()
        .await
        .expect("upload")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn uploaded(server: &Server, token: &str, dialog: &str, name: &str, ty: &str, body: Vec<u8>) -> Value {
    let (len, digest) = (body.len(), sha(&body));
    let res = upload(server, token, dialog, name, ty, body).await;
    assert_eq!(res.status(), 201, "upload of {len} bytes");
    let info: Value = res.json().await.expect("json");
    assert_eq!((info["size"].as_u64(), info["sha256"].as_str()), (Some(len as u64), Some(digest.as_str())));
    assert_eq!(info["content_type"], ty);
    info
}

async fn download(server: &Server, token: &str, id: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = patient_client().get(server.at(&format!("/v1/files/{id}"))).bearer_auth(token);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.expect("download")
}

/// The whole body, or `None` when the transfer broke off.
async fn body_of(res: reqwest::Response) -> Option<Vec<u8>> {
    res.bytes().await.ok().map(|b| b.to_vec())
}

fn object(dir: &Path, id: &str) -> PathBuf {
    dir.join("files").join(id)
}

fn trail(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = ward();
    cmd.args(["audit", "export", "--format", "jsonl", "--data-dir"]).arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    String::from_utf8_lossy(&run(cmd, None).stdout).to_string()
}

/// An object with no record and a staging file of an upload that never finished, both
/// older than the grace period.
fn plant_orphans(dir: &Path) -> (PathBuf, PathBuf) {
    let files = dir.join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    let id = uuid::Uuid::now_v7();
    let (orphan, staging) = (files.join(id.to_string()), files.join(format!("{}#1", uuid::Uuid::now_v7())));
    let old = SystemTime::now() - Duration::from_secs(3 * 86_400);
    for p in [&orphan, &staging] {
        std::fs::write(p, b"sealed leftovers").expect("plant");
        std::fs::File::options().write(true).open(p).expect("open").set_modified(old).expect("age it");
    }
    (orphan, staging)
}

#[tokio::test]
async fn files_round_trip_sealed_ranged_refused_tamper_evident_and_deleted() {
    let dir = data_dir();
    let env = [("WARD_MASTER_PASSPHRASE", "files test passphrase"), ("WARD_FILES_MAX_BYTES", "54525952")];
    add_user(&dir.path, &[], "pat.up", "patient", "violet orchard lantern 4471");
    add_user(&dir.path, &[], "pat.peer", "patient", "copper meadow signal 5582");
    add_user(&dir.path, &[], "pat.out", "patient", "amber harbor willow 6693");
    std::fs::create_dir_all(&dir.path).expect("data dir");
    let (orphan, staging) = plant_orphans(&dir.path);
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let c = server.client();
    let up = login(&server, "pat.up", "violet orchard lantern 4471").await;
    let peer = login(&server, "pat.peer", "copper meadow signal 5582").await;
    let out = login(&server, "pat.out", "amber harbor willow 6693").await;
    let peer_id = user_id(&server, &peer).await;
    let dialog = group(&server, &up, &[&peer_id]).await;
    let other_dialog = group(&server, &peer, &[]).await;

    let ready: Value = c.get(server.at("/readyz")).send().await.expect("ready").json().await.expect("json");
    assert_eq!(ready["checks"]["files"]["status"], "ok", "{ready}");
    assert!(ready["checks"]["files"]["warnings"].to_string().contains("not scanned"), "{ready}");

    // The sweep at start-up removed the planted leftovers.
    for _ in 0..50 {
        if !orphan.exists() && !staging.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!orphan.exists() && !staging.exists(), "the start-up sweep removes orphans and stale staging files");

    let marker = format!("PHI-FILE-{}", uuid::Uuid::new_v4().simple());
    let name = format!("{marker} r\u{e9}sultat.txt");
    let mut ids = Vec::new();
    for len in [0usize, 1, 65_535, 65_536, 65_537, 50 * 1024 * 1024] {
        let body = text(&marker, len);
        let info = uploaded(&server, &up, &dialog, &name, "text/plain", body.clone()).await;
        let id = info["id"].as_str().expect("id").to_string();
        let res = download(&server, &peer, &id, None).await;
        assert_eq!(res.status(), 200, "download of {len} bytes");
        let h = res.headers().clone();
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h["content-disposition"].to_str().expect("ascii").starts_with("attachment; filename="));
        assert!(h["content-disposition"].to_str().expect("ascii").contains("r%C3%A9sultat.txt"));
        let got = body_of(res).await.expect("whole body");
        assert_eq!((got.len(), sha(&got)), (len, sha(&body)), "{len} bytes round trip");
        let stored = std::fs::metadata(object(&dir.path, &id)).expect("object").len();
        let segments = (len as u64).div_ceil(SEGMENT).max(1);
        assert_eq!(stored, len as u64 + segments * OVERHEAD, "the object is the sealed segments");
        ids.push((len, id, body));
    }

    // Byte ranges, across a segment boundary and from the end.
    let (_, id, body) = ids.iter().find(|(l, ..)| *l == 65_537).expect("65537").clone();
    let res = download(&server, &peer, &id, Some("bytes=65530-65536")).await;
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], "bytes 65530-65536/65537");
    assert_eq!(body_of(res).await.expect("range"), body[65_530..]);
    let res = download(&server, &peer, &id, Some("bytes=-3")).await;
    assert_eq!((res.status().as_u16(), body_of(res).await.expect("suffix")), (206, body[65_534..].to_vec()));
    let res = download(&server, &peer, &id, Some("bytes=100-")).await;
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], "bytes 100-65536/65537");
    assert_eq!(body_of(res).await.expect("open range"), body[100..]);
    let (_, empty_id, _) = ids.iter().find(|(l, ..)| *l == 0).expect("0 B").clone();
    let res = download(&server, &peer, &empty_id, Some("bytes=0-")).await;
    assert_eq!(res.status(), 416, "no range of an empty file is satisfiable");
    let res = download(&server, &peer, &id, Some("bytes=70000-")).await;
    assert_eq!(res.headers().get("content-range").map(|v| v.to_str().expect("ascii")), Some("bytes */65537"));
    assert_eq!((res.status().as_u16(), error_code(res).await), (416, "range_not_satisfiable".to_string()));

    // A non-member gets 404 on reading, deleting and uploading, like an unknown id.
    let unknown = uuid::Uuid::now_v7().to_string();
    for res in [
        download(&server, &out, &id, None).await,
        c.delete(server.at(&format!("/v1/files/{id}"))).bearer_auth(&out).send().await.expect("delete"),
        upload(&server, &out, &dialog, "x.txt", "text/plain", b"hello".to_vec()).await,
        download(&server, &peer, &unknown, None).await,
    ] {
        assert_eq!((res.status().as_u16(), error_code(res).await), (404, "not_found".to_string()));
    }

    // Types: outside the allowlist, or contradicted by the bytes: 415, nothing kept.
    let before = files_under(&dir.path.join("files")).len();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec();
    uploaded(&server, &up, &dialog, "scan.png", "image/png", png.clone()).await;
    for (ty, bytes) in [("text/html", b"<script>alert(1)</script>".to_vec()), ("image/png", b"MZ\x90\0".to_vec())] {
        let res = upload(&server, &up, &dialog, "bad", ty, bytes).await;
        assert_eq!((res.status().as_u16(), error_code(res).await), (415, "unsupported_media_type".to_string()));
    }
    let res = upload(&server, &up, &dialog, "bad", "text/plain", png).await;
    assert_eq!(res.status(), 415, "a PNG declared as text");
    assert_eq!(files_under(&dir.path.join("files")).len(), before + 1, "only the real PNG was kept");

    // Above the limit: 413 from Content-Length before a byte is read, and while streaming
    // when no length is declared. Nothing is kept either way.
    let before = files_under(&dir.path.join("files")).len();
    let too_big = text(&marker, 54_525_953);
    // The body trickles (1 MiB, then a pause), so the early answer is read before the
    // client could be cut off writing the rest.
    let first = too_big[..1 << 20].to_vec();
    let trickle = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(vec![b'x'; 10])
        }),
    );
    let res = patient_client()
        .post(server.at(&format!("/v1/files?dialog_id={dialog}")))
        .bearer_auth(&up)
        .header("content-type", "text/plain")
        .header("content-length", too_big.len())
        .body(reqwest::Body::wrap_stream(trickle))
        .send()
        .await
        .expect("an early answer to a declared length above the limit");
    assert_eq!((res.status().as_u16(), error_code(res).await), (413, "payload_too_large".to_string()));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = too_big.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let streamed = patient_client()
        .post(server.at(&format!("/v1/files?dialog_id={dialog}")))
        .bearer_auth(&up)
        .header("content-type", "text/plain")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await;
    if let Ok(res) = streamed {
        assert_eq!(res.status(), 413, "a chunked upload past the limit");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(files_under(&dir.path.join("files")).len(), before, "no object or staging file is left");

    // Attachments: files of the same dialog only, live ones only.
    let res = c
        .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
        .bearer_auth(&up)
        .json(&json!({"body": "see attached", "attachments": [id]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.expect("json")["attachments"], json!([id]));
    let res = c
        .post(server.at(&format!("/v1/dialogs/{other_dialog}/messages")))
        .bearer_auth(&peer)
        .json(&json!({"body": "elsewhere", "attachments": [id]}))
        .send()
        .await
        .expect("send");
    assert_eq!((res.status().as_u16(), error_code(res).await), (400, "invalid_request".to_string()));

    // Tampering with the stored object: a flipped byte at the start fails cleanly; in the
    // last segment the body breaks off; a dropped last segment fails. Never the bytes.
    let (_, first_id, _) = ids.iter().find(|(l, ..)| *l == 65_535).expect("65535").clone();
    let path = object(&dir.path, &first_id);
    let mut bytes = std::fs::read(&path).expect("object");
    bytes[40] ^= 0x01;
    std::fs::write(&path, &bytes).expect("tamper");
    let res = download(&server, &peer, &first_id, None).await;
    assert_eq!((res.status().as_u16(), error_code(res).await), (500, "integrity_failure".to_string()));

    let (_, big_id, big) = ids.iter().find(|(l, ..)| *l == 50 * 1024 * 1024).expect("50 MiB").clone();
    let path = object(&dir.path, &big_id);
    let mut bytes = std::fs::read(&path).expect("object");
    let end = bytes.len() - 10;
    bytes[end] ^= 0x80;
    std::fs::write(&path, &bytes).expect("tamper");
    let res = download(&server, &peer, &big_id, None).await;
    assert_eq!(res.status(), 200, "the first segment is sound, so the answer starts");
    match body_of(res).await {
        None => {}
        Some(got) => {
            panic!("a tampered last segment must break the body off; got {} of {} bytes", got.len(), big.len())
        }
    }

    let path = object(&dir.path, &id);
    let bytes = std::fs::read(&path).expect("object");
    std::fs::write(&path, &bytes[..(SEGMENT + OVERHEAD) as usize]).expect("drop the last segment");
    let res = download(&server, &peer, &id, None).await;
    assert_eq!((res.status().as_u16(), error_code(res).await), (500, "integrity_failure".to_string()));

    // The scan: neither the content nor the name is anywhere under the data dir or in the log.
    scan_dir(&dir.path, &marker, "running");
    assert!(!server.stderr().contains(&marker), "the log holds file content or a name");

    // A name that could disguise its extension is refused.
    let res = upload(&server, &up, &dialog, "photo\u{202E}gpj.exe", "text/plain", b"x".to_vec()).await;
    assert_eq!((res.status().as_u16(), error_code(res).await), (400, "invalid_request".to_string()));

    // The dialog's owner may delete a member's file.
    let peers = uploaded(&server, &peer, &dialog, "peer.txt", "text/plain", b"from the peer".to_vec()).await;
    let peers_id = peers["id"].as_str().expect("id");
    let res = c.delete(server.at(&format!("/v1/files/{peers_id}"))).bearer_auth(&up).send().await.expect("del");
    assert_eq!(res.status(), 204, "an owner deletes another member's file");
    assert!(!object(&dir.path, peers_id).exists());

    // Delete: a member who neither uploaded nor administers gets 403; the uploader deletes,
    // the object is gone, the file reads as unknown and can no longer be attached.
    let (_, small_id, _) = ids.iter().find(|(l, ..)| *l == 1).expect("1 B").clone();
    let res = c.delete(server.at(&format!("/v1/files/{small_id}"))).bearer_auth(&peer).send().await.expect("del");
    assert_eq!((res.status().as_u16(), error_code(res).await), (403, "forbidden".to_string()));
    for (_, id, _) in &ids {
        let res = c.delete(server.at(&format!("/v1/files/{id}"))).bearer_auth(&up).send().await.expect("delete");
        assert_eq!(res.status(), 204);
        assert!(!object(&dir.path, id).exists(), "the object is removed");
        assert_eq!(download(&server, &peer, id, None).await.status(), 404);
    }
    let res = c
        .post(server.at(&format!("/v1/dialogs/{dialog}/messages")))
        .bearer_auth(&up)
        .json(&json!({"body": "gone", "attachments": [small_id]}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 400, "a deleted file is not attachable");

    let log = server.stderr();
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    scan_dir(&dir.path, &marker, "stopped");
    assert!(!log.contains(&marker));

    // The trail names files by id only.
    let trail = trail(&dir.path, &env[..1]);
    for action in ["\"file.upload\"", "\"file.read\"", "\"file.delete\"", "\"file.sweep\""] {
        assert!(trail.contains(action), "{action} is recorded");
    }
    assert!(trail.contains("\"too_large\"") && trail.contains("\"unsupported_type\""));
    assert_eq!(trail.matches("\"integrity\"").count(), 3, "each failed check is recorded, mid-stream too");
    assert!(!trail.contains(&marker) && !trail.contains("scan.png"), "no file name or content in the trail");
    // Refusals name the file asked for: the outsider's read and delete by the file's id
    // (its dialog a detail), the unknown id as an attempt on a file that does not exist.
    let records: Vec<Value> = trail.lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect();
    for action in ["file.read", "file.delete"] {
        let refused: Vec<&Value> = records
            .iter()
            .filter(|r| r["action"] == action && r["outcome"] == "denied" && r["resource"] == format!("file/{id}"))
            .collect();
        assert_eq!(refused.len(), 1, "the outsider's {action} is recorded against the file");
        assert_eq!(refused[0]["details"]["dialog_id"], dialog.as_str());
        assert_eq!(refused[0]["details"]["policy_action"], action.replace('.', ":"));
    }
    let unknown_read: Vec<&Value> =
        records.iter().filter(|r| r["action"] == "file.read" && r["resource"] == format!("file/{unknown}")).collect();
    assert_eq!(unknown_read.len(), 1, "a read of an unknown id is recorded");
    assert_eq!((&unknown_read[0]["outcome"], &unknown_read[0]["reason"]), (&json!("failure"), &json!("no such file")));
    // Reads after the delete are recorded as attempts on files that no longer exist.
    for (_, deleted, _) in &ids {
        let attempts = records.iter().filter(|r| {
            r["action"] == "file.read" && r["resource"] == format!("file/{deleted}") && r["reason"] == "no such file"
        });
        assert_eq!(attempts.count(), 1, "the read of deleted {deleted} is recorded");
    }
}

/// An upload cut off by `[files] transfer_timeout_s` (its body stalls) answers 503, keeps
/// nothing, and is recorded as `cut_off` against the file id it would have had.
#[tokio::test]
async fn an_upload_cut_off_by_the_transfer_timeout_is_recorded() {
    let dir = data_dir();
    let env = [("WARD_MASTER_PASSPHRASE", "files cut passphrase"), ("WARD_FILES_TRANSFER_TIMEOUT_S", "30")];
    add_user(&dir.path, &[], "pat.slow", "patient", "violet orchard lantern 4471");
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let token = login(&server, "pat.slow", "violet orchard lantern 4471").await;
    let dialog = group(&server, &token, &[]).await;
    let marker = format!("PHI-CUT-{}", uuid::Uuid::new_v4().simple());
    let first = text(&marker, 100_000);
    // One chunk, then a body that never ends.
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures_util::stream::pending());
    let res = patient_client()
        .post(server.at(&format!("/v1/files?dialog_id={dialog}")))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("an answer after the timeout");
    assert_eq!((res.status().as_u16(), error_code(res).await), (503, "unavailable".to_string()));

    // The record is written by a task of its own once the request is dropped.
    let mut trail_records = Vec::new();
    for _ in 0..50 {
        let trail = trail(&dir.path, &env[..1]);
        trail_records = trail
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("jsonl"))
            .filter(|r| r["action"] == "file.upload")
            .collect();
        if !trail_records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(trail_records.len(), 1, "{trail_records:?}");
    let r = &trail_records[0];
    assert_eq!((&r["outcome"], &r["reason"]), (&json!("failure"), &json!("cut_off")));
    assert!(r["resource"].as_str().expect("resource").starts_with("file/"));
    assert_eq!(r["details"]["dialog_id"], dialog.as_str());
    assert!(!trail_records[0].to_string().contains(&marker));

    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    scan_dir(&dir.path, &marker, "stopped");
}

/// A running `moto_server` (S3 on loopback); killed when dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    async fn start() -> Moto {
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
            let child = std::process::Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("moto_server is on PATH (scripts/services.sh installs it)");
            let mut moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
            for _ in 0..300 {
                if moto.child.try_wait().expect("status").is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return moto;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("moto_server did not start");
    }
}

#[tokio::test]
async fn files_on_s3_round_trip_sealed_and_deleted() {
    let moto = Moto::start().await;
    let s3 = patient_client();
    let bucket = "ward-files-test";
    let res = s3.put(format!("{}/{bucket}", moto.endpoint)).send().await.expect("create bucket");
    assert!(res.status().is_success(), "bucket: {}", res.status());

    let dir = data_dir();
    let env = [
        ("WARD_MASTER_PASSPHRASE", "files s3 passphrase"),
        ("WARD_FILES_BACKEND", "s3"),
        ("WARD_FILES_S3_BUCKET", bucket),
        ("WARD_FILES_S3_ENDPOINT", moto.endpoint.as_str()),
        ("WARD_FILES_S3_REGION", "us-east-1"),
        ("WARD_FILES_S3_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "AKIAWARDTESTKEY00000"),
        ("AWS_SECRET_ACCESS_KEY", "ward-test-secret-never-printed"),
    ];
    add_user(&dir.path, &[], "pat.s3", "patient", "violet orchard lantern 4471");
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let token = login(&server, "pat.s3", "violet orchard lantern 4471").await;
    let dialog = group(&server, &token, &[]).await;
    let marker = format!("PHI-S3-{}", uuid::Uuid::new_v4().simple());

    let mut ids = Vec::new();
    // One part, and three multipart parts (5 MiB each).
    for len in [1usize, 65_537, 12 * 1024 * 1024 + 3] {
        let body = text(&marker, len);
        let info = uploaded(&server, &token, &dialog, "s3.txt", "text/plain", body.clone()).await;
        let id = info["id"].as_str().expect("id").to_string();
        let got = body_of(download(&server, &token, &id, None).await).await.expect("body");
        assert_eq!(sha(&got), sha(&body), "{len} bytes round trip through S3");
        let res = download(&server, &token, &id, Some("bytes=65536-65536")).await;
        if len > 65_536 {
            assert_eq!(body_of(res).await.expect("range"), body[65_536..65_537]);
        }
        ids.push(id);
    }

    // The bucket holds only sealed objects, under files/.
    let listing = s3.get(format!("{}/{bucket}?list-type=2", moto.endpoint)).send().await.expect("list");
    let listing = listing.text().await.expect("xml");
    for id in &ids {
        assert!(listing.contains(&format!("<Key>files/{id}</Key>")), "files/{id} is in the bucket");
        let object = s3.get(format!("{}/{bucket}/files/{id}", moto.endpoint)).send().await.expect("get");
        let bytes = object.bytes().await.expect("bytes");
        assert!(!contains(&bytes, marker.as_bytes()), "the bucket holds plaintext of {id}");
    }
    assert!(!server.stderr().contains(&marker));

    for id in &ids {
        let res =
            server.client().delete(server.at(&format!("/v1/files/{id}"))).bearer_auth(&token).send().await.expect("d");
        assert_eq!(res.status(), 204);
    }
    let listing = s3.get(format!("{}/{bucket}?list-type=2", moto.endpoint)).send().await.expect("list");
    let listing = listing.text().await.expect("xml");
    assert!(!listing.contains("<Key>"), "delete leaves no object in the bucket: {listing}");
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
}

/// A running `clamd` with a test signature database (no signature download is possible
/// here): one body signature matching the EICAR test string. Killed when dropped.
struct Clamd {
    child: std::process::Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Clamd {
    async fn start() -> Clamd {
        let exe = ["/usr/sbin/clamd", "/usr/bin/clamd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("clamd is installed (scripts/services.sh installs clamav-daemon)");
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).expect("db dir");
        let signature = hex::encode("EICAR-STANDARD-ANTIVIRUS-TEST-FILE");
        std::fs::write(db.join("ward-test.ndb"), format!("Ward.Test.EICAR:0:*:{signature}\n")).expect("signature");
        let socket = dir.path().join("clamd.sock");
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "Foreground yes\nLocalSocket {}\nDatabaseDirectory {}\nTemporaryDirectory {}\nStreamMaxLength 64M\n\
                 User root\nLogFile {}\n",
                socket.display(),
                db.display(),
                dir.path().display(),
                dir.path().join("clamd.log").display()
            ),
        )
        .expect("conf");
        let child = std::process::Command::new(exe)
            .arg(format!("--config-file={}", conf.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start clamd");
        let mut clamd = Clamd { child, socket, _dir: dir };
        for _ in 0..600 {
            assert!(clamd.child.try_wait().expect("status").is_none(), "clamd exited at start");
            if std::os::unix::net::UnixStream::connect(&clamd.socket).is_ok() {
                return clamd;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("clamd did not open its socket within 60 s");
    }
}

#[tokio::test]
async fn uploads_are_scanned_by_clamd_and_kept_only_when_clean() {
    let mut clamd = Clamd::start().await;
    let dir = data_dir();
    let socket = clamd.socket.display().to_string();
    let env = [("WARD_MASTER_PASSPHRASE", "files clamd passphrase"), ("WARD_FILES_CLAMD_SOCKET", socket.as_str())];
    add_user(&dir.path, &[], "pat.scan", "patient", "violet orchard lantern 4471");
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let token = login(&server, "pat.scan", "violet orchard lantern 4471").await;
    let dialog = group(&server, &token, &[]).await;

    let ready: Value = server.client().get(server.at("/readyz")).send().await.expect("ready").json().await.expect("j");
    assert_eq!(ready["checks"]["files"]["status"], "ok", "{ready}");
    assert!(ready["checks"]["files"].get("warnings").is_none(), "scanning is on: no warning: {ready}");

    // Clean: scanned, kept, readable.
    let clean = text("clean lab note", 200_000);
    let info = uploaded(&server, &token, &dialog, "note.txt", "text/plain", clean.clone()).await;
    let got = body_of(download(&server, &token, info["id"].as_str().expect("id"), None).await).await;
    assert_eq!(got.expect("body"), clean);
    let kept = files_under(&dir.path.join("files")).len();

    // The EICAR test string, past the first segment of a text file: refused, nothing kept.
    let mut infected = text("note", 100_000);
    infected.extend_from_slice(br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    let res = upload(&server, &token, &dialog, "eicar.txt", "text/plain", infected).await;
    assert_eq!((res.status().as_u16(), error_code(res).await), (422, "malware_detected".to_string()));
    assert_eq!(files_under(&dir.path.join("files")).len(), kept, "nothing of the infected upload is kept");

    // clamd gone: no verdict, so nothing is accepted (fail closed).
    let _ = clamd.child.kill();
    let _ = clamd.child.wait();
    let res = upload(&server, &token, &dialog, "later.txt", "text/plain", b"a later note".to_vec()).await;
    assert_eq!((res.status().as_u16(), error_code(res).await), (503, "unavailable".to_string()));
    assert_eq!(files_under(&dir.path.join("files")).len(), kept, "nothing is kept without a verdict");
    let res = server.client().get(server.at("/readyz")).send().await.expect("ready");
    assert_eq!(res.status(), 503, "not ready without clamd");
    let ready: Value = res.json().await.expect("json");
    assert_eq!(ready["checks"]["files"]["status"], "failing", "{ready}");

    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
    let trail = trail(&dir.path, &env[..1]);
    assert!(trail.contains("\"infected\"") && trail.contains("Ward.Test.EICAR"), "the refusal and its signature");
    assert!(trail.contains("\"scan_failed\""));
}

#[tokio::test]
async fn when_the_audit_store_refuses_writes_file_requests_fail_with_503_and_change_nothing() {
    use sqlx::Connection as _;
    let dir = data_dir();
    let env = [("WARD_MASTER_PASSPHRASE", "files audit passphrase")];
    add_user(&dir.path, &[], "pat.audit", "patient", "violet orchard lantern 4471");
    let server = Server::start(&dir.path, &["--no-tls"], &env);
    let token = login(&server, "pat.audit", "violet orchard lantern 4471").await;
    let dialog = group(&server, &token, &[]).await;
    let kept = uploaded(&server, &token, &dialog, "kept.txt", "text/plain", text("kept", 70_000)).await;
    let kept_id = kept["id"].as_str().expect("id").to_string();

    let url = format!("sqlite://{}", dir.path.join("ward.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
    let count = |sql: &'static str| {
        let url = url.clone();
        async move {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
            sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await.expect("count")
        }
    };
    let (files_before, keys_before) =
        (count("SELECT count(*) FROM files").await, count("SELECT count(*) FROM data_keys").await);
    let objects_before = files_under(&dir.path.join("files")).len();
    sqlx::raw_sql(
        "CREATE TRIGGER block_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit blocked'); END",
    )
    .execute(&mut conn)
    .await
    .expect("block");

    let marker = format!("PHI-UNAUDITED-{}", uuid::Uuid::new_v4().simple());
    let res = upload(&server, &token, &dialog, "never.txt", "text/plain", text(&marker, 200_000)).await;
    assert_eq!((res.status().as_u16(), error_code(res).await), (503, "unavailable".to_string()));
    let res = download(&server, &token, &kept_id, None).await;
    assert_eq!((res.status().as_u16(), error_code(res).await), (503, "unavailable".to_string()), "no unaudited read");
    let res =
        server.client().delete(server.at(&format!("/v1/files/{kept_id}"))).bearer_auth(&token).send().await.expect("d");
    assert_eq!((res.status().as_u16(), error_code(res).await), (503, "unavailable".to_string()));
    assert_eq!(count("SELECT count(*) FROM files").await, files_before, "no file was recorded");
    assert_eq!(count("SELECT count(*) FROM data_keys").await, keys_before, "no data key was stored");
    assert_eq!(files_under(&dir.path.join("files")).len(), objects_before, "the unrecorded object was removed");
    assert_eq!(count("SELECT count(*) FROM data_keys WHERE destroyed_at IS NOT NULL").await, 0, "nothing erased");
    scan_dir(&dir.path, &marker, "refused upload");

    sqlx::raw_sql("DROP TRIGGER block_audit").execute(&mut conn).await.expect("unblock");
    let got = body_of(download(&server, &token, &kept_id, None).await).await.expect("body");
    assert_eq!(got, text("kept", 70_000), "the file survived the refused delete");
    signal(&server.child, "TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
}
