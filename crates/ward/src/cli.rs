//! The command line of shared/API.md. Every command takes `--data-dir` and `--config`.
//!
//! Exit codes: 0 success; 1 a runtime failure (database unreachable, port in use, …);
//! 2 a usage or configuration error; 3 `audit verify` found tampering; 69 a command whose
//! feature is not yet available.
//! Failures print one line on stderr, `ward: …`, never a panic or a backtrace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::startup::StartError;

#[derive(Debug, Parser)]
#[command(name = "ward", version, about = "Ward: a self-hosted, HIPAA-ready communication backend")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory (SQLite database, TLS material, keys). Default ./ward-data.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Account administration (works while the server runs).
    #[command(subcommand)]
    User(UserCommand),
    /// Audit trail verification and export.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Access control: the periodic access review.
    #[command(subcommand)]
    Access(AccessCommand),
    /// Master key status and rotation.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Encrypted, verifiable backups.
    #[command(subcommand)]
    Backup(BackupCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address; port 0 picks a free port. Default 127.0.0.1:8443.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Serve plain HTTP: only on a loopback address or behind a declared TLS proxy.
    #[arg(long)]
    pub no_tls: bool,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log format on stderr.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// Log level or filter (e.g. `debug`, `info,ward_api=debug`).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints a generated password once unless --password-stdin.
    Add {
        name: String,
        /// Role(s): admin, clinician, staff, patient, auditor, service. Repeat or comma-separate.
        #[arg(long = "role", required = true, value_delimiter = ',')]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user and end all their sessions.
    Disable { name: String },
    /// Clear failed sign-in counters and locks.
    Unlock { name: String },
    /// Removes a user's second factors and recovery codes (a lost device) and ends their
    /// sessions; the next sign-in enrolls again.
    ResetMfa { name: String },
    /// Set a new password (generated unless --password-stdin) and end all sessions.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit chain and its signed checkpoints (exit 3 when tampered).
    Verify {
        /// Trust this checkpoint public key file (repeatable); default: the `.pub` beside
        /// the configured signing key.
        #[arg(long = "public-key", value_name = "FILE")]
        public_keys: Vec<PathBuf>,
    },
    /// Write the audit trail to stdout.
    Export {
        #[arg(long, value_parser = ["jsonl", "csv", "fhir"])]
        format: String,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Per user: roles, policies, effective permissions, dialog memberships, last sign-in,
    /// MFA state, break-glass uses and dormancy (recorded as `access.review`).
    Review {
        #[arg(long, value_parser = ["table", "csv", "json"], default_value = "table")]
        format: String,
        /// Break-glass uses of the last this many days.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(i64).range(1..=366))]
        days: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Key versions and their states.
    Status,
    /// Create a new master key version and rewrap data keys.
    Rotate {
        /// Only finish an interrupted rewrap; make no new version.
        #[arg(long)]
        resume: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    Create,
    Verify,
    Restore,
}

/// A command's failure: its message and exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<StartError> for Failure {
    fn from(e: StartError) -> Self {
        Failure { code: e.exit_code(), message: e.to_string() }
    }
}

impl Failure {
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure { code: 1, message: message.into() }
    }

    fn not_yet_available(what: &str) -> Self {
        Failure { code: 69, message: format!("`ward {what}` is not yet available in this version") }
    }
}

/// Parses arguments, runs the command, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for every client in the process (push webhook, KMS, NATS).
    // It can only fail if one is installed already, which is then the one used.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ward: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("ward: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let mut flags = Vec::new();
    if let Some(dir) = &cli.global.data_dir {
        flags.push(("--data-dir".into(), "server.data_dir".into(), toml::Value::String(dir.display().to_string())));
    }
    match cli.command {
        Command::Serve(args) => crate::serve::run(&cli.global, flags, args).await,
        Command::User(cmd) => crate::admin::user(&cli.global, flags, cmd).await,
        Command::Audit(AuditCommand::Verify { public_keys }) => {
            crate::audit_cmd::verify(&cli.global, flags, public_keys).await
        }
        Command::Audit(AuditCommand::Export { format, since, until }) => {
            crate::audit_cmd::export(&cli.global, flags, &format, since, until).await
        }
        Command::Access(AccessCommand::Review { format, days }) => {
            crate::access_cmd::review(&cli.global, flags, &format, days).await
        }
        Command::Keys(KeysCommand::Status) => crate::keys_cmd::status(&cli.global, flags).await,
        Command::Keys(KeysCommand::Rotate { resume }) => crate::keys_cmd::rotate(&cli.global, flags, resume).await,
        Command::Backup(BackupCommand::Create) => Err(Failure::not_yet_available("backup create")),
        Command::Backup(BackupCommand::Verify) => Err(Failure::not_yet_available("backup verify")),
        Command::Backup(BackupCommand::Restore) => Err(Failure::not_yet_available("backup restore")),
    }
}
