//! `ward-bench files`: throughput of one upload and one download of a large file over
//! loopback, and the server's memory while a larger file streams through.
//!
//! The bodies are generated on the fly (never held whole by the bench): text with a fixed
//! pattern, so the upload passes the `text/plain` check. The server's SHA-256 of each
//! upload is compared with the bench's, and each file is downloaded once with its SHA-256
//! checked; the timed download of the first file only counts bytes, so the bench's own
//! hashing is not in the figure (the upload's time includes the server's hashing, as it
//! should). While the stream file
//! goes up and comes back, the server's VmRSS is sampled every 20 ms; the growth over the
//! baseline taken just before is what the file streaming costs (issue #8's target: under
//! 32 MiB for 1 GiB).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes_stream::body;
use futures_util::StreamExt as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::{Api, Session};
use crate::procfs;
use crate::report::{self, ServerInfo, row};
use crate::target::{Server, random_password};
use crate::{FilesArgs, progress, run_id};

const MIB: u64 = 1024 * 1024;

/// The generated upload body.
mod bytes_stream {
    use futures_util::stream::{self, Stream};

    /// 1 MiB of a repeating text line: every chunk of the body.
    fn chunk() -> Vec<u8> {
        b"ward-bench file line 0123456789 abcdefghijklmnopqrstuvwxyz\n"
            .iter()
            .copied()
            .cycle()
            .take(super::MIB as usize)
            .collect()
    }

    /// `size` bytes in 1 MiB chunks.
    pub fn body(size: u64) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
        let chunk = chunk();
        stream::unfold(0u64, move |sent| {
            let chunk = chunk.clone();
            async move {
                if sent >= size {
                    return None;
                }
                let n = (size - sent).min(chunk.len() as u64);
                Some((Ok(chunk[..n as usize].to_vec()), sent + n))
            }
        })
    }

    /// The SHA-256 of what [`body`] sends.
    pub fn digest(size: u64) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        let chunk = chunk();
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64);
            h.update(&chunk[..n as usize]);
            left -= n;
        }
        hex::encode(h.finalize())
    }
}

#[derive(Debug, Serialize)]
pub struct FilesReport {
    pub mode: &'static str,
    pub server: ServerInfo,
    pub size_mib: u64,
    pub upload_mib_s: f64,
    pub download_mib_s: f64,
    pub upload_s: f64,
    pub download_s: f64,
    pub stream_mib: u64,
    pub stream_memory: Option<StreamMemory>,
}

#[derive(Debug, Serialize)]
pub struct StreamMemory {
    /// VmRSS just before the stream file's upload.
    pub baseline_mib: f64,
    /// Highest sampled VmRSS during its upload.
    pub upload_peak_mib: f64,
    /// Highest sampled VmRSS during its download.
    pub download_peak_mib: f64,
    /// `max(upload_peak, download_peak) - baseline`.
    pub growth_mib: f64,
    /// Samples taken.
    pub samples: u64,
}

/// Samples the server's VmRSS every 20 ms until stopped; returns the highest, KiB.
fn sampler(pid: u32, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(s) = procfs::sample(pid) {
                peak = peak.max(s.rss_kib);
                count.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

async fn upload(api: &Api, who: &Session, dialog: &str, size: u64) -> anyhow::Result<(String, f64)> {
    let started = Instant::now();
    let res = api
        .http
        .post(format!("{}/v1/files?dialog_id={dialog}", api.base))
        .header("x-ward-file-name", "bench.txt")
        .bearer_auth(&who.token)
        .header("content-type", "text/plain")
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(body(size)))
        .send()
        .await
        .context("upload")?;
    let status = res.status();
    let answer: serde_json::Value = res.json().await.context("upload answer")?;
    let took = started.elapsed().as_secs_f64();
    if status != reqwest::StatusCode::CREATED {
        bail!("upload: HTTP {status} {answer}");
    }
    if answer["sha256"].as_str() != Some(bytes_stream::digest(size).as_str()) {
        bail!("upload: the server's SHA-256 differs from what was sent");
    }
    Ok((answer["id"].as_str().context("no file id")?.to_string(), took))
}

/// Downloads the file; with `verify`, hashes it on the way and compares with the upload's
/// SHA-256 (the hashing then counts in the time), else only counts the bytes.
async fn download(api: &Api, who: &Session, id: &str, size: u64, verify: bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let res =
        api.http.get(format!("{}/v1/files/{id}", api.base)).bearer_auth(&who.token).send().await.context("download")?;
    if res.status() != reqwest::StatusCode::OK {
        bail!("download: HTTP {}", res.status());
    }
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("download body")?;
        got += chunk.len() as u64;
        if verify {
            hasher.update(&chunk);
        }
    }
    let took = started.elapsed().as_secs_f64();
    if got != size {
        bail!("download: {got} bytes of {size}");
    }
    if verify && hex::encode(hasher.finalize()) != bytes_stream::digest(size) {
        bail!("download: the SHA-256 differs from the upload's");
    }
    Ok(took)
}

pub async fn run(server: &Server, args: &FilesArgs) -> anyhow::Result<FilesReport> {
    let t = &args.target;
    let api = Api::new(&server.http, Duration::from_secs(args.request_timeout), 4)?;
    let admin = api.admin(&server.admin).await.context("signing in as the administrator")?;
    let users = api.users(&admin, &run_id(), &t.role, &random_password(), 1, 1).await?;
    let who = &users[0];
    let dialog = api.group(who, "files bench", &[]).await?;

    let size = args.size_mib * MIB;
    progress(t, format_args!("uploading {} MiB", args.size_mib));
    let (id, upload_s) = upload(&api, who, &dialog, size).await?;
    progress(t, format_args!("downloading {} MiB (verifying its SHA-256), then again timed", args.size_mib));
    download(&api, who, &id, size, true).await?;
    let download_s = download(&api, who, &id, size, false).await?;

    let stream = args.stream_mib * MIB;
    let stream_memory = match server.pid {
        Some(pid) => {
            let baseline = report::sample_server(server).context("reading the server's memory")?.rss_kib;
            let count = Arc::new(AtomicU64::new(0));
            progress(t, format_args!("streaming {} MiB up, sampling the server's RSS", args.stream_mib));
            let stop = Arc::new(AtomicBool::new(false));
            let up = sampler(pid, stop.clone(), count.clone());
            let (stream_id, _) = upload(&api, who, &dialog, stream).await?;
            stop.store(true, Ordering::Relaxed);
            let upload_peak = up.join().map_err(|_| anyhow::anyhow!("sampler panicked"))?;
            progress(t, format_args!("streaming {} MiB down", args.stream_mib));
            let stop = Arc::new(AtomicBool::new(false));
            let down = sampler(pid, stop.clone(), count.clone());
            download(&api, who, &stream_id, stream, true).await?;
            stop.store(true, Ordering::Relaxed);
            let download_peak = down.join().map_err(|_| anyhow::anyhow!("sampler panicked"))?;
            Some(StreamMemory {
                baseline_mib: procfs::mib(baseline),
                upload_peak_mib: procfs::mib(upload_peak),
                download_peak_mib: procfs::mib(download_peak),
                growth_mib: procfs::mib(upload_peak.max(download_peak).saturating_sub(baseline)),
                samples: count.load(Ordering::Relaxed),
            })
        }
        None => None,
    };
    let mib_s = |s: f64| if s > 0.0 { args.size_mib as f64 / s } else { 0.0 };
    Ok(FilesReport {
        mode: "files",
        server: ServerInfo::of(server),
        size_mib: args.size_mib,
        upload_mib_s: mib_s(upload_s),
        download_mib_s: mib_s(download_s),
        upload_s,
        download_s,
        stream_mib: args.stream_mib,
        stream_memory,
    })
}

impl FilesReport {
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        println!("ward-bench files");
        self.server.print();
        row("upload", format!("{} MiB in {:.2} s: {:.1} MiB/s", self.size_mib, self.upload_s, self.upload_mib_s));
        row("download", format!("{} MiB in {:.2} s: {:.1} MiB/s", self.size_mib, self.download_s, self.download_mib_s));
        match &self.stream_memory {
            Some(m) => row(
                "server RSS",
                format!(
                    "streaming {} MiB: {:.1} MiB before · peak {:.1} MiB up, {:.1} MiB down · growth {:.1} MiB \
                     ({} samples)",
                    self.stream_mib, m.baseline_mib, m.upload_peak_mib, m.download_peak_mib, m.growth_mib, m.samples
                ),
            ),
            None => row("server RSS", "n/a (no server pid)"),
        }
        Ok(())
    }
}
