//! `ward-bench`: the load tool of issue #6 (docs/BENCHMARKS.md).
//!
//! `ward-bench load` puts N WebSocket clients in M group dialogs and has K of them send
//! messages over HTTP at a target rate; it reports accepted messages per second,
//! send-to-receive latency, errors, and the server's memory and CPU. `ward-bench idle`
//! holds N authenticated WebSockets open and reports the server's memory per connection.
//! Both start `ward serve` themselves on a fresh data dir (`--ward PATH`) or bench a
//! running server (`--url`, `--admin-token`, optionally `--server-pid`).

mod api;
mod files;
mod idle;
mod load;
mod procfs;
mod report;
mod stats;
mod target;
mod ws;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ward-bench", version, about = "Load tool for Ward's messaging and real-time channel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N WebSocket clients in M group dialogs; K senders POST messages at a total target rate.
    Load(LoadArgs),
    /// N authenticated, idle WebSockets held open; the server's memory per connection.
    Idle(IdleArgs),
    /// Upload and download throughput of one large file, and the server's RSS while a
    /// larger one streams through.
    Files(FilesArgs),
}

/// Which server, and how the bench talks to it.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Start this `ward` binary (`ward serve --no-tls` on 127.0.0.1:0, fresh temp data dir).
    #[arg(long, value_name = "PATH", conflicts_with = "url", required_unless_present = "url")]
    ward: Option<PathBuf>,
    /// Bench a running server instead (plain http://, e.g. `ward serve --no-tls`).
    #[arg(long, value_name = "URL", requires = "admin_token")]
    url: Option<String>,
    /// With --url: a full (MFA-verified) session token of an administrator, to create users.
    #[arg(long, value_name = "TOKEN", env = "WARD_BENCH_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// With --url: the server's process id, to read its memory and CPU from /proc.
    #[arg(long, value_name = "PID", requires = "url")]
    server_pid: Option<u32>,
    /// Log level of the spawned server (default: the server's own, `info`).
    #[arg(long, value_name = "LEVEL")]
    server_log_level: Option<String>,
    /// Keep the spawned server's data dir (its path is printed), e.g. to run `ward audit verify`.
    #[arg(long)]
    keep_data: bool,
    /// Role of the bench users: clinician, staff, patient or service (TOTP is enrolled when
    /// the role requires MFA).
    #[arg(long, default_value = "staff")]
    role: String,
    /// Users created and signed in at once during setup.
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// WebSocket handshakes in progress at once (keeps the accept backlog from overflowing).
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Time allowed for one WebSocket to connect and get `ready`, seconds.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// WebSocket clients (each a user of its own).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Group dialogs; client i joins dialog i mod M, so each message goes to about N/M - 1
    /// other clients.
    #[arg(long, default_value_t = 10)]
    dialogs: usize,
    /// Clients that send (default: all); spread evenly over the dialogs.
    #[arg(long)]
    senders: Option<usize>,
    /// Total target send rate, messages per second (open loop).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Length of the send phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most sends in flight; a send that is due while this many are outstanding is skipped
    /// and counted, so an overloaded server shows as a lower accepted rate.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Size of each message body in bytes (at least the 20-odd bytes of its marker).
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Time allowed for one send, seconds (then it counts as `timeout`).
    #[arg(long, default_value_t = 10)]
    request_timeout: u64,
    /// After the last answer, how long to wait for outstanding deliveries, seconds.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
}

#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// WebSocket connections to hold open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Users the connections are spread over (one session each, shared by its sockets).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// How long to hold the connections once all are open, seconds.
    #[arg(long, default_value_t = 30.0)]
    hold: f64,
}

#[derive(Debug, Args)]
pub struct FilesArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Size of the file whose upload and download are timed, MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Size of the file streamed up and down while the server's RSS is sampled, MiB.
    #[arg(long, default_value_t = 1024)]
    stream_mib: u64,
    /// Time allowed for one transfer, seconds.
    #[arg(long, default_value_t = 900)]
    request_timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ward-bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let target_args = match &cli.command {
        Command::Load(a) => &a.target,
        Command::Idle(a) => &a.target,
        Command::Files(a) => &a.target,
    };
    if !matches!(target_args.role.as_str(), "clinician" | "staff" | "patient" | "service") {
        bail!("--role must be a conversation role: clinician, staff, patient or service");
    }
    // Each socket is a file descriptor here and in a spawned server (which inherits the limit).
    let wanted = match &cli.command {
        Command::Load(a) => a.clients + a.max_in_flight,
        Command::Idle(a) => a.connections,
        Command::Files(_) => 64,
    } as u64
        + 512;
    let nofile = rlimit::increase_nofile_limit(wanted).context("raising RLIMIT_NOFILE")?;
    if nofile < wanted {
        eprintln!("ward-bench: warning: RLIMIT_NOFILE is {nofile} (hard limit), below the {wanted} this run needs");
    }

    let mut server = match (&target_args.ward, &target_args.url) {
        (Some(ward), _) => {
            progress(target_args, format_args!("starting {} serve", ward.display()));
            target::Server::spawn(ward, target_args.server_log_level.as_deref(), target_args.keep_data)?
        }
        (None, Some(url)) => {
            let token = target_args.admin_token.clone().context("--url needs --admin-token")?;
            target::Server::attach(url, token, target_args.server_pid)?
        }
        (None, None) => bail!("give --ward PATH or --url URL"),
    };
    let work = async {
        match &cli.command {
            Command::Load(args) => load::run(&server, args).await?.print(args.target.json),
            Command::Idle(args) => idle::run(&server, args).await?.print(args.target.json),
            Command::Files(args) => files::run(&server, args).await?.print(args.target.json),
        }
    };
    // Ctrl-C or SIGTERM still stops a spawned server and removes its data dir.
    let outcome = tokio::select! {
        r = work => r,
        s = interrupted() => Err(anyhow::anyhow!("interrupted by {s}")),
    };
    server.stop();
    outcome
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// A progress line on stderr, unless `--quiet`.
pub fn progress(target: &TargetArgs, line: std::fmt::Arguments<'_>) {
    if !target.quiet {
        eprintln!("[ward-bench] {line}");
    }
}

/// Seconds as a Duration (negative and NaN become zero).
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

/// A short random id for this run's user names and client message ids.
pub fn run_id() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("b{}", &id[24..])
}
