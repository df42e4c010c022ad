//! `ward-bench load`: N WebSocket clients in M group dialogs, K of them sending at a total
//! target rate, open loop.
//!
//! Setup: N users of one conversation role (client i is user i and a member of dialog
//! i mod M, so a message reaches the other N/M - 1 members), each signed in once, then all
//! N sockets opened (`connect_concurrency` handshakes at a time) and `ready`.
//!
//! Send phase: message n is due at `n / rate` seconds. When it is due it is sent by sender
//! n mod K as `POST /v1/dialogs/{id}/messages {body, client_msg_id}` on a keep-alive
//! connection, unless `max_in_flight` sends are outstanding: then it is skipped and
//! counted (an overloaded server shows as a lower accepted rate, not as growing memory
//! here). The body starts with a marker `wb:<n>:<sender>:`; the instant just before the
//! POST is kept under n.
//!
//! Receiving: every client reads its socket all the time. A `message.created` frame with a
//! marker is a delivery (the sender's own copy is not counted); its latency is the time
//! since that message's POST started. Expected deliveries are, for every 201, the size
//! of the dialog minus one. After the last answer the run waits up to `--drain` seconds
//! for outstanding deliveries, then closes every socket.

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
use crate::stats::{Errors, Latency, Percentiles, errors_line, micros};
use crate::target::{Server, random_password};
use crate::ws::{self, Ws};
use crate::{LoadArgs, progress, run_id, secs};

const MARKER: &str = "\"body\":\"wb:";
const CREATED: &str = "\"type\":\"message.created\"";

/// Counters and timestamps shared by the scheduler, the sends and the readers.
struct Shared {
    /// The zero of every timestamp below.
    base: Instant,
    /// For message n: nanoseconds since `base` just before its POST, plus one (0 = not sent).
    sent_at: Vec<AtomicU64>,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    skipped: AtomicU64,
    sent: AtomicU64,
    expected: AtomicU64,
    received: AtomicU64,
    echoes: AtomicU64,
    unknown: AtomicU64,
    other_frames: AtomicU64,
    sockets_lost: AtomicU64,
    /// Nanoseconds since `base` of the latest answer to a send.
    last_answer: AtomicU64,
    errors: Errors,
    delivery: Latency,
    post: Latency,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One sending client.
struct Sender {
    index: usize,
    token: String,
    /// `…/v1/dialogs/{id}/messages`.
    url: Arc<str>,
    /// Members of its dialog other than itself.
    recipients: u64,
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub mode: &'static str,
    pub server: ServerInfo,
    pub clients: usize,
    pub dialogs: usize,
    pub members_per_dialog: (usize, usize),
    pub senders: usize,
    pub role: String,
    pub target_rate: f64,
    pub duration_s: f64,
    pub max_in_flight: usize,
    pub body_bytes: usize,
    pub setup: Setup,
    /// Messages due in the send phase (rate × duration).
    pub scheduled: u64,
    /// Messages POSTed.
    pub sent: u64,
    /// Messages not sent because `max_in_flight` sends were outstanding.
    pub skipped_at_cap: u64,
    /// 201 answers.
    pub accepted: u64,
    /// From the first send to the last answer, seconds.
    pub send_window_s: f64,
    /// `accepted / send_window_s`.
    pub accepted_per_s: f64,
    /// Failed sends and lost sockets, by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
    pub deliveries: Deliveries,
    /// From just before the POST to the `message.created` frame at a receiving client.
    pub delivery_latency: Percentiles,
    /// From just before the POST to its 201 answer.
    pub send_latency: Percentiles,
    pub server_resources: Option<ServerResources>,
    /// This tool's CPU over the send window.
    pub client_cpu: Option<CpuUse>,
}

#[derive(Debug, Serialize)]
pub struct Setup {
    pub users_s: f64,
    pub dialogs_s: f64,
    pub connect_s: f64,
    pub connected: usize,
    pub connect_failures: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Deliveries {
    /// Sum over 201 answers of (dialog members - 1).
    pub expected: u64,
    /// `message.created` frames of this run at clients other than the sender.
    pub received: u64,
    /// `received / expected`.
    pub ratio: f64,
    /// Copies the senders got of their own messages (not counted as deliveries).
    pub echoes_to_sender: u64,
    /// Frames with a marker this run did not send (should be 0).
    pub unknown: u64,
    /// Other frames (session warnings, errors, …).
    pub other_frames: u64,
    /// Sockets that closed or failed during the run.
    pub sockets_lost: u64,
}

#[derive(Debug, Serialize)]
pub struct ServerResources {
    /// VmRSS after setup, before the send phase.
    pub rss_before_mib: f64,
    /// Highest VmRSS seen by the once-a-second sampling during the run.
    pub rss_max_sampled_mib: f64,
    /// VmRSS at the end of the run (after the drain).
    pub rss_end_mib: f64,
    /// VmHWM: the process's peak RSS since it started (setup included).
    pub hwm_mib: f64,
    /// Server CPU over the send window.
    pub cpu: CpuUse,
    /// Server CPU time over the send window divided by the 201 answers, milliseconds.
    pub cpu_ms_per_accepted: Option<f64>,
}

pub async fn run(server: &Server, args: &LoadArgs) -> anyhow::Result<LoadReport> {
    let t = &args.target;
    let (n, m) = (args.clients, args.dialogs);
    if m == 0 || n < 2 * m {
        bail!("--clients must be at least twice --dialogs (every dialog needs a sender and a receiver)");
    }
    if n.div_ceil(m) > 1000 {
        bail!("a group holds at most 1,000 members by default: use more dialogs");
    }
    let k = args.senders.unwrap_or(n);
    if k == 0 || k > n {
        bail!("--senders must be between 1 and --clients");
    }
    if !(args.rate > 0.0 && args.duration > 0.0) {
        bail!("--rate and --duration must be positive");
    }
    let scheduled = (args.rate * args.duration).round() as u64;
    let api = Api::new(&server.http, Duration::from_secs(args.request_timeout), args.max_in_flight + 16)?;
    let run = run_id();

    progress(t, format_args!("setup: {n} users ({}), {m} dialogs", t.role));
    let started = Instant::now();
    let admin = api.admin(&server.admin).await.context("signing in as the administrator")?;
    let password = random_password();
    let sessions = api.users(&admin, &run, &t.role, &password, n, t.setup_concurrency).await?;
    let users_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let members: Vec<Vec<usize>> = (0..m).map(|d| (d..n).step_by(m).collect()).collect();
    let made = futures_util::stream::iter(members.iter().enumerate())
        .map(|(d, list)| {
            let api = api.clone();
            let owner = sessions[list[0]].clone();
            let others: Vec<String> = list[1..].iter().map(|i| sessions[*i].user_id.clone()).collect();
            let name = format!("{run}-d{d}");
            async move { api.group(&owner, &name, &others).await.map(|id| (d, id)) }
        })
        .buffer_unordered(t.setup_concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut dialog_ids = vec![String::new(); m];
    for r in made {
        let (d, id) = r?;
        dialog_ids[d] = id;
    }
    let dialogs_s = started.elapsed().as_secs_f64();

    let shared = Arc::new(Shared {
        base: Instant::now(),
        sent_at: (0..scheduled).map(|_| AtomicU64::new(0)).collect(),
        accepted: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        received: AtomicU64::new(0),
        echoes: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        other_frames: AtomicU64::new(0),
        sockets_lost: AtomicU64::new(0),
        last_answer: AtomicU64::new(0),
        errors: Errors::default(),
        delivery: Latency::default(),
        post: Latency::default(),
    });

    // Sockets.
    progress(t, format_args!("connecting {n} WebSockets"));
    let started = Instant::now();
    let stop = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(t.connect_concurrency.max(1)));
    let (opened_tx, mut opened_rx) = mpsc::channel::<Result<(), String>>(n);
    let mut readers = Vec::with_capacity(n);
    for (i, s) in sessions.iter().enumerate() {
        let (url, token, gate, opened, stop, shared) =
            (server.ws.clone(), s.token.clone(), gate.clone(), opened_tx.clone(), stop.clone(), shared.clone());
        let limit = Duration::from_secs(t.connect_timeout);
        readers.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("the gate is never closed");
            let opened_ws = ws::open(&url, &token, limit).await;
            drop(permit);
            match opened_ws {
                Ok(socket) => {
                    let _ = opened.send(Ok(())).await;
                    drop(opened);
                    read(i, socket, &shared, &stop).await;
                }
                Err(label) => {
                    let _ = opened.send(Err(label)).await;
                }
            }
        }));
    }
    drop(opened_tx);
    let connect_failures = Errors::default();
    let mut connected = 0;
    while let Some(r) = opened_rx.recv().await {
        match r {
            Ok(()) => connected += 1,
            Err(label) => connect_failures.add(label),
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    if connected < n {
        progress(
            t,
            format_args!(
                "{} of {n} sockets failed to open: {}",
                n - connected,
                errors_line(&connect_failures.snapshot())
            ),
        );
    }

    // Senders: the first K clients, which fall round-robin into the dialogs.
    let senders: Vec<Arc<Sender>> = (0..k)
        .map(|i| {
            let d = i % m;
            Arc::new(Sender {
                index: i,
                token: sessions[i].token.clone(),
                url: format!("{}/v1/dialogs/{}/messages", server.http, dialog_ids[d]).into(),
                recipients: (members[d].len() - 1) as u64,
            })
        })
        .collect();

    // The send phase.
    let ticks = procfs::clock_ticks();
    let server_before = report::sample_server(server);
    let client_before = procfs::sample(std::process::id()).ok();
    let rss_max = Arc::new(AtomicU64::new(server_before.map_or(0, |s| s.rss_kib)));
    let monitor = spawn_monitor(server.pid, shared.clone(), rss_max.clone(), t.quiet, stop.clone());
    progress(t, format_args!("sending {scheduled} messages at {} msg/s for {} s", args.rate, args.duration));
    let in_flight = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let filler = filler(args.body_bytes);
    let send_start = Instant::now();
    let start_ns = shared.now_ns();
    let mut next = 0u64;
    while next < scheduled {
        let due = ((send_start.elapsed().as_secs_f64() * args.rate) as u64 + 1).min(scheduled);
        while next < due {
            let sender = senders[(next % k as u64) as usize].clone();
            match in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (api, shared, run, filler) = (api.clone(), shared.clone(), run.clone(), filler.clone());
                    tokio::spawn(async move {
                        send(&api, &shared, &sender, next, &run, &filler).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    shared.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
            next += 1;
        }
        if next < scheduled {
            tokio::time::sleep_until((send_start + secs(next as f64 / args.rate)).into()).await;
        }
    }
    // Every outstanding send ends within the request timeout.
    let all = u32::try_from(args.max_in_flight.max(1)).unwrap_or(u32::MAX);
    let wait = Duration::from_secs(args.request_timeout + 5);
    if tokio::time::timeout(wait, in_flight.acquire_many(all)).await.is_err() {
        shared.errors.add("send still outstanding at the end");
    }
    let last_answer = shared.last_answer.load(Ordering::Relaxed).max(start_ns);
    let send_window_s = Duration::from_nanos(last_answer - start_ns).as_secs_f64().max(args.duration);
    let server_after_send = report::sample_server(server);
    let client_cpu = client_before.as_ref().and_then(|b| report::own_cpu(b, ticks));

    // Drain: wait for the deliveries still on their way.
    let drain_until = Instant::now() + secs(args.drain);
    while Instant::now() < drain_until
        && shared.received.load(Ordering::Relaxed) < shared.expected.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_end = report::sample_server(server);
    stop.cancel();
    for r in readers {
        let _ = r.await;
    }
    let _ = monitor.await;

    let accepted = shared.accepted.load(Ordering::Relaxed);
    let expected = shared.expected.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    let server_resources = match (server_before, server_after_send, server_end) {
        (Some(before), Some(after), Some(end)) => Some(ServerResources {
            rss_before_mib: procfs::mib(before.rss_kib),
            rss_max_sampled_mib: procfs::mib(rss_max.load(Ordering::Relaxed).max(end.rss_kib)),
            rss_end_mib: procfs::mib(end.rss_kib),
            hwm_mib: procfs::mib(end.hwm_kib),
            cpu: CpuUse::between(&before, &after, ticks),
            cpu_ms_per_accepted: (accepted > 0)
                .then(|| 1000.0 * CpuUse::between(&before, &after, ticks).cpu_s / accepted as f64),
        }),
        _ => None,
    };
    let sizes: Vec<usize> = members.iter().map(Vec::len).collect();
    Ok(LoadReport {
        mode: "load",
        server: ServerInfo::of(server),
        clients: n,
        dialogs: m,
        members_per_dialog: (
            sizes.iter().copied().min().unwrap_or_default(),
            sizes.iter().copied().max().unwrap_or_default(),
        ),
        senders: k,
        role: t.role.clone(),
        target_rate: args.rate,
        duration_s: args.duration,
        max_in_flight: args.max_in_flight,
        body_bytes: args.body_bytes,
        setup: Setup { users_s, dialogs_s, connect_s, connected, connect_failures: connect_failures.snapshot() },
        scheduled,
        sent: shared.sent.load(Ordering::Relaxed),
        skipped_at_cap: shared.skipped.load(Ordering::Relaxed),
        accepted,
        send_window_s,
        accepted_per_s: accepted as f64 / send_window_s,
        errors: shared.errors.snapshot(),
        deliveries: Deliveries {
            expected,
            received,
            ratio: if expected == 0 { 0.0 } else { received as f64 / expected as f64 },
            echoes_to_sender: shared.echoes.load(Ordering::Relaxed),
            unknown: shared.unknown.load(Ordering::Relaxed),
            other_frames: shared.other_frames.load(Ordering::Relaxed),
            sockets_lost: shared.sockets_lost.load(Ordering::Relaxed),
        },
        delivery_latency: shared.delivery.summary(),
        send_latency: shared.post.summary(),
        server_resources,
        client_cpu,
    })
}

/// `bytes` of ASCII text (at least one) that fills each body up after its marker.
fn filler(bytes: usize) -> Arc<str> {
    const TEXT: &str = "Patient reports feeling better today; please review the latest vitals before rounds. ";
    TEXT.chars().cycle().take(bytes.max(1)).collect::<String>().into()
}

/// A body of `filler.len()` bytes (or just over, when the marker alone is longer).
fn body_text(n: u64, sender: usize, filler: &str) -> String {
    let mut body = format!("wb:{n}:{sender}:");
    let rest = filler.len().saturating_sub(body.len()).max(1);
    body.push_str(&filler[..rest.min(filler.len())]);
    body
}

/// One send: POST, then count the answer.
async fn send(api: &Api, shared: &Shared, sender: &Sender, n: u64, run: &str, filler: &str) {
    let text = body_text(n, sender.index, filler);
    let body = format!("{{\"body\":\"{text}\",\"client_msg_id\":\"{run}-{n}\"}}");
    shared.sent.fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = shared.sent_at.get(n as usize) {
        slot.store(shared.now_ns() + 1, Ordering::Relaxed);
    }
    let started = Instant::now();
    let answer = api
        .http
        .post(&*sender.url)
        .bearer_auth(&sender.token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let outcome = match answer {
        Ok(res) => {
            let status = res.status().as_u16();
            // Read the body so the connection goes back to the pool.
            match res.bytes().await {
                Ok(_) => Ok(status),
                Err(e) => Err(transport_label(&e)),
            }
        }
        Err(e) => Err(transport_label(&e)),
    };
    shared.last_answer.fetch_max(shared.now_ns(), Ordering::Relaxed);
    match outcome {
        Ok(201) => {
            shared.post.record(n as usize, started.elapsed());
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            shared.expected.fetch_add(sender.recipients, Ordering::Relaxed);
        }
        Ok(200) => {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
            shared.errors.add("http 200 (repeated client_msg_id)");
        }
        Ok(status) => shared.errors.add(format!("http {status}")),
        Err(label) => shared.errors.add(label),
    }
}

fn transport_label(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect error".into()
    } else {
        "http transport error".into()
    }
}

/// Reads one client's socket until `stop`, recording deliveries.
async fn read(index: usize, mut socket: Ws, shared: &Shared, stop: &CancellationToken) {
    let mut batch: Vec<u64> = Vec::with_capacity(64);
    let me = index.to_string();
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            m = socket.next() => m,
        };
        match message {
            Some(Ok(Message::Text(text))) => match marker(&text) {
                Some((_, sender)) if sender == me => {
                    shared.echoes.fetch_add(1, Ordering::Relaxed);
                }
                Some((n, _)) => {
                    let sent = shared.sent_at.get(n as usize).map_or(0, |s| s.load(Ordering::Relaxed));
                    if sent == 0 {
                        shared.unknown.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let latency = shared.now_ns().saturating_sub(sent - 1);
                    batch.push(micros(Duration::from_nanos(latency)));
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    if batch.len() == batch.capacity() {
                        shared.delivery.record_all(index, &batch);
                        batch.clear();
                    }
                }
                None => {
                    shared.other_frames.fetch_add(1, Ordering::Relaxed);
                }
            },
            Some(Ok(Message::Close(frame))) => {
                shared.errors.add(ws::close_label(frame.as_ref()));
                shared.sockets_lost.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                shared.errors.add(format!("ws error: {}", ws::short(&e)));
                shared.sockets_lost.fetch_add(1, Ordering::Relaxed);
                break;
            }
            None => {
                shared.errors.add("ws ended");
                shared.sockets_lost.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    shared.delivery.record_all(index, &batch);
    ws::close(socket).await;
}

/// `(n, sender)` of a `message.created` frame sent by this tool.
fn marker(text: &str) -> Option<(u64, &str)> {
    if !text.contains(CREATED) {
        return None;
    }
    let rest = &text[text.find(MARKER)? + MARKER.len()..];
    let (n, rest) = rest.split_once(':')?;
    let (sender, _) = rest.split_once(':')?;
    Some((n.parse().ok()?, sender))
}

/// Samples the server's RSS every second and prints progress.
fn spawn_monitor(
    pid: Option<u32>,
    shared: Arc<Shared>,
    rss_max: Arc<AtomicU64>,
    quiet: bool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut s = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            s += 1;
            let rss = pid.and_then(|p| procfs::sample(p).ok()).map(|x| x.rss_kib);
            if let Some(r) = rss {
                rss_max.fetch_max(r, Ordering::Relaxed);
            }
            if !quiet {
                eprintln!(
                    "[ward-bench] {s:>3} s: sent {} · 201 {} · skipped {} · delivered {}/{} · errors {} · server RSS {}",
                    shared.sent.load(Ordering::Relaxed),
                    shared.accepted.load(Ordering::Relaxed),
                    shared.skipped.load(Ordering::Relaxed),
                    shared.received.load(Ordering::Relaxed),
                    shared.expected.load(Ordering::Relaxed),
                    shared.errors.total(),
                    rss.map_or_else(|| "n/a".into(), |r| format!("{:.1} MiB", procfs::mib(r))),
                );
            }
        }
    })
}

impl LoadReport {
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        let (lo, hi) = self.members_per_dialog;
        let members = if lo == hi { format!("{lo}") } else { format!("{lo}-{hi}") };
        println!("ward-bench load");
        self.server.print();
        row(
            "clients",
            format!(
                "{} ({}) in {} group dialogs of {members} members; {} senders",
                self.clients, self.role, self.dialogs, self.senders
            ),
        );
        row(
            "target",
            format!(
                "{} msg/s for {} s ({} scheduled, at most {} in flight, {}-byte bodies)",
                self.target_rate, self.duration_s, self.scheduled, self.max_in_flight, self.body_bytes
            ),
        );
        let s = &self.setup;
        row(
            "setup",
            format!(
                "users {:.1} s · dialogs {:.1} s · sockets {:.1} s ({} of {} ready{})",
                s.users_s,
                s.dialogs_s,
                s.connect_s,
                s.connected,
                self.clients,
                if s.connect_failures.is_empty() {
                    String::new()
                } else {
                    format!("; failures: {}", errors_line(&s.connect_failures))
                }
            ),
        );
        row("sent", format!("{} (skipped at the in-flight cap: {})", self.sent, self.skipped_at_cap));
        row(
            "accepted (201)",
            format!("{} = {:.1} msg/s over {:.2} s", self.accepted, self.accepted_per_s, self.send_window_s),
        );
        row("errors", errors_line(&self.errors));
        let d = &self.deliveries;
        row(
            "deliveries",
            format!(
                "{} received of {} expected ({:.2} %); sockets lost {}; other frames {}",
                d.received,
                d.expected,
                100.0 * d.ratio,
                d.sockets_lost,
                d.other_frames
            ),
        );
        row("delivery latency", self.delivery_latency.line());
        row("send latency (201)", self.send_latency.line());
        match &self.server_resources {
            Some(r) => {
                row(
                    "server RSS",
                    format!(
                        "{:.1} MiB before · {:.1} MiB max sampled · {:.1} MiB at end · peak (VmHWM) {:.1} MiB",
                        r.rss_before_mib, r.rss_max_sampled_mib, r.rss_end_mib, r.hwm_mib
                    ),
                );
                let per = r.cpu_ms_per_accepted.map_or_else(String::new, |ms| format!("; {ms:.3} ms per 201"));
                row("server CPU", format!("{}{per}", cpu_line(&r.cpu)));
            }
            None => row("server RSS / CPU", "n/a (no server pid)"),
        }
        if let Some(c) = &self.client_cpu {
            row("ward-bench CPU", cpu_line(c));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marker_in_a_frame() {
        let frame = r#"{"dialog_id":"d","message":{"body":"wb:42:7:Patient reports","id":"x","seq":3},"type":"message.created"}"#;
        assert_eq!(marker(frame), Some((42, "7")));
        assert_eq!(marker(r#"{"type":"message.updated","message":{"body":"wb:1:2:x"}}"#), None);
        assert_eq!(marker(r#"{"type":"message.created","message":{"body":"hello"}}"#), None);
    }

    #[test]
    fn filler_makes_bodies_of_the_asked_size() {
        let f = filler(100);
        assert_eq!(body_text(12_345, 999, &f).len(), 100);
        let frame = format!("{{{CREATED},\"message\":{{\"body\":\"{}\"}}}}", body_text(7, 3, &f));
        assert_eq!(marker(&frame), Some((7, "3")));
        assert_eq!(body_text(1, 2, &filler(4)), "wb:1:2:P");
    }
}
