//! `ward-bench idle`: hold N authenticated WebSockets open and measure what they cost the
//! server.
//!
//! U users are created and signed in once each; connection i authenticates with user
//! i mod U's token (a session may have many sockets). Sockets are opened
//! `connect_concurrency` at a time so the server's accept backlog never overflows. The
//! server's VmRSS is read before the first socket (baseline), when all are `ready`, every
//! second of the hold and after it; its CPU is measured over the hold. Every socket keeps
//! reading, which answers the server's Pings.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::procfs::{self, CpuUse};
use crate::report::{self, ServerInfo, cpu_line, row};
use crate::stats::{Errors, Latency, Percentiles, errors_line};
use crate::target::{Server, random_password};
use crate::ws;
use crate::{IdleArgs, progress, run_id, secs};

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub mode: &'static str,
    pub server: ServerInfo,
    pub connections: usize,
    pub users: usize,
    pub role: String,
    pub hold_s: f64,
    pub connect_concurrency: usize,
    pub users_setup_s: f64,
    /// Sockets that got `ready`.
    pub connected: usize,
    pub connect_failures: std::collections::BTreeMap<String, u64>,
    /// From the first connect to the last socket ready (or failed), seconds.
    pub connect_s: f64,
    /// Connect + auth frame + `ready`, per socket.
    pub time_to_ready: Percentiles,
    /// Sockets still open at the end of the hold.
    pub open_after_hold: u64,
    /// Why sockets closed during the hold.
    pub hold_errors: std::collections::BTreeMap<String, u64>,
    pub server_memory: Option<IdleMemory>,
    /// Server CPU while the sockets were held idle.
    pub server_cpu_hold: Option<CpuUse>,
    /// This tool's own RSS with every socket open, MiB.
    pub client_rss_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct IdleMemory {
    /// VmRSS after the users signed in, before the first socket.
    pub baseline_mib: f64,
    /// VmRSS once every socket is ready.
    pub connected_mib: f64,
    /// VmRSS at the end of the hold.
    pub after_hold_mib: f64,
    /// Highest VmRSS of the once-a-second sampling during the hold.
    pub max_sampled_mib: f64,
    /// VmHWM: the process's peak RSS since it started.
    pub hwm_mib: f64,
    /// `(connected - baseline) / connected sockets`, KiB.
    pub per_connection_kib: f64,
    /// `(after_hold - baseline) / connected sockets`, KiB.
    pub per_connection_after_hold_kib: f64,
}

pub async fn run(server: &Server, args: &IdleArgs) -> anyhow::Result<IdleReport> {
    let t = &args.target;
    let c = args.connections;
    let u = args.users.min(c);
    if c == 0 || u == 0 {
        bail!("--connections and --users must be positive");
    }
    let api = Api::new(&server.http, Duration::from_secs(30), t.setup_concurrency + 4)?;
    progress(t, format_args!("setup: {u} users ({})", t.role));
    let started = Instant::now();
    let admin = api.admin(&server.admin).await.context("signing in as the administrator")?;
    let sessions = api.users(&admin, &run_id(), &t.role, &random_password(), u, t.setup_concurrency).await?;
    let users_setup_s = started.elapsed().as_secs_f64();

    let baseline = report::sample_server(server);
    progress(t, format_args!("opening {c} WebSockets, {} at a time", t.connect_concurrency));
    let stop = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(t.connect_concurrency.max(1)));
    let ready_times = Arc::new(Latency::default());
    let hold_errors = Arc::new(Errors::default());
    let lost = Arc::new(AtomicU64::new(0));
    let (opened_tx, mut opened_rx) = mpsc::channel::<Result<(), String>>(c);
    let started = Instant::now();
    let mut holders = Vec::with_capacity(c);
    for i in 0..c {
        let token = sessions[i % u].token.clone();
        let (url, gate, opened, stop) = (server.ws.clone(), gate.clone(), opened_tx.clone(), stop.clone());
        let (ready_times, hold_errors, lost) = (ready_times.clone(), hold_errors.clone(), lost.clone());
        let limit = Duration::from_secs(t.connect_timeout);
        holders.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("the gate is never closed");
            let begun = Instant::now();
            let opened_ws = ws::open(&url, &token, limit).await;
            drop(permit);
            let mut socket = match opened_ws {
                Ok(s) => s,
                Err(label) => {
                    let _ = opened.send(Err(label)).await;
                    return;
                }
            };
            ready_times.record(i, begun.elapsed());
            let _ = opened.send(Ok(())).await;
            drop(opened);
            loop {
                let message = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    m = socket.next() => m,
                };
                let end = match message {
                    Some(Ok(Message::Close(frame))) => ws::close_label(frame.as_ref()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => format!("ws error: {}", ws::short(&e)),
                    None => "ws ended".into(),
                };
                hold_errors.add(end);
                lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            ws::close(socket).await;
        }));
    }
    drop(opened_tx);
    let connect_failures = Errors::default();
    let mut connected = 0;
    let mut last_report = Instant::now();
    while let Some(r) = opened_rx.recv().await {
        match r {
            Ok(()) => connected += 1,
            Err(label) => connect_failures.add(label),
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            progress(t, format_args!("{connected} ready, {} failed", connect_failures.total()));
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    let client_rss_mib = procfs::sample(std::process::id()).ok().map(|s| procfs::mib(s.rss_kib));
    let at_connected = report::sample_server(server);
    progress(t, format_args!("{connected} of {c} sockets ready in {connect_s:.1} s; holding for {} s", args.hold));

    let mut max_rss = at_connected.map_or(0, |s| s.rss_kib);
    let hold_until = Instant::now() + secs(args.hold);
    while Instant::now() < hold_until {
        let next = (Instant::now() + Duration::from_secs(1)).min(hold_until);
        tokio::time::sleep_until(next.into()).await;
        if let Some(s) = report::sample_server(server) {
            max_rss = max_rss.max(s.rss_kib);
            if !t.quiet {
                let left = hold_until.saturating_duration_since(Instant::now()).as_secs();
                progress(
                    t,
                    format_args!(
                        "holding: server RSS {:.1} MiB, {} sockets lost, {left} s left",
                        procfs::mib(s.rss_kib),
                        lost.load(Ordering::Relaxed)
                    ),
                );
            }
        }
    }
    let after_hold = report::sample_server(server);
    let open_after_hold = (connected as u64).saturating_sub(lost.load(Ordering::Relaxed));
    stop.cancel();
    for h in holders {
        let _ = h.await;
    }

    let ticks = procfs::clock_ticks();
    let server_cpu_hold = match (&at_connected, &after_hold) {
        (Some(a), Some(b)) => Some(CpuUse::between(a, b, ticks)),
        _ => None,
    };
    let server_memory = match (baseline, at_connected, after_hold) {
        (Some(b), Some(a), Some(h)) => {
            let per = |x: u64| if connected == 0 { 0.0 } else { x.saturating_sub(b.rss_kib) as f64 / connected as f64 };
            Some(IdleMemory {
                baseline_mib: procfs::mib(b.rss_kib),
                connected_mib: procfs::mib(a.rss_kib),
                after_hold_mib: procfs::mib(h.rss_kib),
                max_sampled_mib: procfs::mib(max_rss.max(h.rss_kib)),
                hwm_mib: procfs::mib(h.hwm_kib),
                per_connection_kib: per(a.rss_kib),
                per_connection_after_hold_kib: per(h.rss_kib),
            })
        }
        _ => None,
    };
    Ok(IdleReport {
        mode: "idle",
        server: ServerInfo::of(server),
        connections: c,
        users: u,
        role: t.role.clone(),
        hold_s: args.hold,
        connect_concurrency: t.connect_concurrency,
        users_setup_s,
        connected,
        connect_failures: connect_failures.snapshot(),
        connect_s,
        time_to_ready: ready_times.summary(),
        open_after_hold,
        hold_errors: hold_errors.snapshot(),
        server_memory,
        server_cpu_hold,
        client_rss_mib,
    })
}

impl IdleReport {
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        println!("ward-bench idle");
        self.server.print();
        row(
            "connections",
            format!(
                "{} over {} users ({}), opened {} at a time; held {} s",
                self.connections, self.users, self.role, self.connect_concurrency, self.hold_s
            ),
        );
        row("setup", format!("users {:.1} s", self.users_setup_s));
        row(
            "ready",
            format!(
                "{} of {} in {:.1} s; failures: {}",
                self.connected,
                self.connections,
                self.connect_s,
                errors_line(&self.connect_failures)
            ),
        );
        row("time to ready", self.time_to_ready.line());
        row(
            "after the hold",
            format!("{} still open; closed during the hold: {}", self.open_after_hold, errors_line(&self.hold_errors)),
        );
        match &self.server_memory {
            Some(m) => {
                row(
                    "server RSS",
                    format!(
                        "{:.1} MiB baseline · {:.1} MiB all ready · {:.1} MiB after the hold · {:.1} MiB max sampled \
                         · peak (VmHWM) {:.1} MiB",
                        m.baseline_mib, m.connected_mib, m.after_hold_mib, m.max_sampled_mib, m.hwm_mib
                    ),
                );
                row(
                    "per connection",
                    format!(
                        "{:.1} KiB when all ready, {:.1} KiB after the hold (RSS growth over baseline / sockets)",
                        m.per_connection_kib, m.per_connection_after_hold_kib
                    ),
                );
            }
            None => row("server RSS", "n/a (no server pid)"),
        }
        if let Some(cpu) = &self.server_cpu_hold {
            row("server CPU (hold)", cpu_line(cpu));
        }
        if let Some(rss) = self.client_rss_mib {
            row("ward-bench RSS", format!("{rss:.1} MiB"));
        }
        Ok(())
    }
}
