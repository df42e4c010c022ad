//! The server under test: a `ward serve` that this tool starts on a fresh data dir
//! (`--ward PATH`), or one that already runs (`--url URL --admin-token TOKEN`).
//!
//! A spawned server gets [`BENCH_ENV`]: audit and encryption stay on (a sealed local
//! keyring, the audit chain, SQLite with `synchronous = FULL`); what changes is listed
//! and explained there. Its stderr is drained for the whole run (a full pipe would stall
//! its logging); the last lines and the warnings and errors are kept for the report.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

/// The settings a spawned server runs with (environment variables), and why.
pub const BENCH_ENV: &[(&str, &str, &str)] = &[
    (
        "WARD_MASTER_PASSPHRASE",
        "ward-bench throw-away keyring passphrase",
        "the local keyring is sealed, as in production (the data dir is deleted afterwards)",
    ),
    (
        "WARD_AUTH_LOGIN_ATTEMPTS_PER_IP_PER_MINUTE",
        "100000",
        "every bench user signs in from 127.0.0.1; the default 60 per minute would answer 429",
    ),
    (
        "WARD_AUTH_ARGON2_MEMORY_KIB",
        "34816",
        "argon2id at 34 MiB instead of 64 MiB so that setting up N users is quicker (only user creation and \
         sign-in hash). Not the 19 MiB floor: below glibc's 32 MiB cap on its dynamic mmap threshold, freed \
         hash buffers stay in the heap and the server's RSS grows by hundreds of MiB during setup",
    ),
    ("WARD_AUTH_ARGON2_ITERATIONS", "2", "argon2id at its floor (t = 2); only user creation and sign-in use it"),
    (
        "WARD_FILES_MAX_BYTES",
        "2147483648",
        "`ward-bench files` streams a 1 GiB file through one upload; the default limit is 100 MiB",
    ),
    (
        "WARD_SESSION_IDLE_TIMEOUT_S",
        "43200",
        "receivers send nothing, so the default 15 min automatic logoff would close their sockets (4401) in \
         long runs; the deadline is enforced the same way with either value",
    ),
];

/// How this tool signs in as an administrator.
pub enum Admin {
    /// A user created with `ward user add` before the server started.
    Password { username: String, password: String },
    /// A session token given on the command line.
    Token(String),
}

/// The last lines of the server's stderr, and its warnings and errors.
#[derive(Default)]
pub struct LogTail {
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    last: VecDeque<String>,
    lines: u64,
    warnings: u64,
    errors: u64,
    problems: VecDeque<String>,
}

/// What the server logged during the bench.
#[derive(Debug, Clone, Serialize)]
pub struct LogSummary {
    pub lines: u64,
    pub warnings: u64,
    pub errors: u64,
    /// The last warning and error lines (at most 10).
    pub last_problems: Vec<String>,
}

impl LogTail {
    fn push(&self, line: String) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.lines += 1;
        let level = line.split_whitespace().take(3).find(|w| matches!(*w, "WARN" | "ERROR")).map(str::to_string);
        if let Some(level) = level {
            if level == "WARN" {
                inner.warnings += 1;
            } else {
                inner.errors += 1;
            }
            if inner.problems.len() == 10 {
                inner.problems.pop_front();
            }
            inner.problems.push_back(line.clone());
        }
        if inner.last.len() == 40 {
            inner.last.pop_front();
        }
        inner.last.push_back(line);
    }

    fn last_lines(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.last.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub fn summary(&self) -> LogSummary {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        LogSummary {
            lines: inner.lines,
            warnings: inner.warnings,
            errors: inner.errors,
            last_problems: inner.problems.iter().cloned().collect(),
        }
    }
}

/// The server under test.
pub struct Server {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub http: String,
    /// The WebSocket URL of `/v1/ws`.
    pub ws: String,
    /// The server's process id, when known (memory and CPU are read from /proc).
    pub pid: Option<u32>,
    pub admin: Admin,
    pub log: Arc<LogTail>,
    child: Option<Child>,
    data: Option<tempfile::TempDir>,
    keep_data: bool,
}

/// A strong random password (a UUIDv7 carries 74 random bits; two of them, in hex).
pub fn random_password() -> String {
    let a = uuid::Uuid::now_v7().simple().to_string();
    let b = uuid::Uuid::now_v7().simple().to_string();
    format!("wb-{}-{}", &a[16..], &b[16..])
}

/// A `ward` command with the bench settings and no WARD_* variable of our own environment.
fn ward_command(ward: &Path) -> Command {
    let mut cmd = Command::new(ward);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    for (k, v, _) in BENCH_ENV {
        cmd.env(k, v);
    }
    cmd
}

impl Server {
    /// Creates a data dir, an administrator (`ward user add`), then starts `ward serve
    /// --no-tls` on a free loopback port and waits for its `ward listening on` line.
    pub fn spawn(ward: &Path, log_level: Option<&str>, keep_data: bool) -> anyhow::Result<Server> {
        let ward = std::fs::canonicalize(ward).with_context(|| format!("no ward binary at {}", ward.display()))?;
        let root = tempfile::Builder::new().prefix("ward-bench-").tempdir().context("creating a temp dir")?;
        let data_dir = root.path().join("data");
        let username = "bench-admin".to_string();
        let password = random_password();

        let mut add = ward_command(&ward);
        add.args(["user", "add", &username, "--role", "admin", "--password-stdin", "--data-dir"])
            .arg(&data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = add.spawn().with_context(|| format!("running {}", ward.display()))?;
        child.stdin.take().context("stdin")?.write_all(format!("{password}\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("`ward user add` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }

        let mut serve = ward_command(&ward);
        serve.arg("serve").arg("--data-dir").arg(&data_dir).args(["--listen", "127.0.0.1:0", "--no-tls"]);
        if let Some(level) = log_level {
            serve.args(["--log-level", level]);
        }
        serve.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = serve.spawn().with_context(|| format!("starting {} serve", ward.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let log = Arc::new(LogTail::default());
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::Builder::new().name("ward-stderr".into()).spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ward listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                sink.push(line);
            }
        })?;
        let pid = child.id();
        let mut server = Server {
            http: String::new(),
            ws: String::new(),
            pid: Some(pid),
            admin: Admin::Password { username, password },
            log,
            child: Some(child),
            data: Some(root),
            keep_data,
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => {
                server.set_url(&url)?;
                Ok(server)
            }
            Err(_) => {
                let tail = server.log.last_lines();
                drop(server);
                bail!("ward serve did not print its listening line within 120 s; its stderr:\n{tail}")
            }
        }
    }

    /// A server that already runs at `url` (plain `http://`).
    pub fn attach(url: &str, admin_token: String, pid: Option<u32>) -> anyhow::Result<Server> {
        let mut server = Server {
            http: String::new(),
            ws: String::new(),
            pid,
            admin: Admin::Token(admin_token),
            log: Arc::new(LogTail::default()),
            child: None,
            data: None,
            keep_data: false,
        };
        server.set_url(url)?;
        Ok(server)
    }

    fn set_url(&mut self, url: &str) -> anyhow::Result<()> {
        let base = url.trim_end_matches('/');
        let Some(rest) = base.strip_prefix("http://") else {
            bail!("only plain http:// servers can be benched (ward serve --no-tls), got {url}");
        };
        self.http = base.to_string();
        self.ws = format!("ws://{rest}/v1/ws");
        Ok(())
    }

    /// Whether this tool started the server (so its log is available).
    pub fn spawned(&self) -> bool {
        self.child.is_some()
    }

    /// Stops a spawned server: SIGTERM, then SIGKILL after 30 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        if self.keep_data
            && let Some(dir) = self.data.take()
        {
            let kept = dir.keep();
            eprintln!("ward-bench: kept the data dir {}", kept.join("data").display());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
