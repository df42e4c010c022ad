//! `ward audit verify` and `ward audit export`.
//!
//! `verify` exits 0 when the trail is intact and 3 when it is not, naming the first bad
//! `seq`; a progress bar is drawn on stderr when stderr is a terminal. It only reads.
//! `export` records itself in the trail first, then streams to stdout.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use futures_util::StreamExt as _;
use ward_audit::checkpoint::{public_path, read_public_key};
use ward_audit::export::{self, Format};
use ward_audit::{Outcome, verify_store};
use ward_storage::AuditFilter;

use crate::cli::{Failure, GlobalArgs};
use crate::startup;

pub async fn verify(
    global: &GlobalArgs,
    flags: Vec<(String, String, toml::Value)>,
    public_keys: Vec<PathBuf>,
) -> Result<(), Failure> {
    let config = startup::load_config(global.config.as_ref(), flags)?;
    startup::init_logging(&config, Some("warn"))?;
    let store = startup::open_store(&config).await?;
    let settings = startup::audit_settings(&config);
    let key_files = if public_keys.is_empty() { vec![public_path(&settings.key_file)] } else { public_keys };
    let mut keys = Vec::new();
    for path in &key_files {
        keys.push(read_public_key(path).map_err(|e| {
            Failure::runtime(format!("{e} (give the checkpoint signing public key with --public-key FILE)"))
        })?);
    }
    let (total, _) = store.audit_head().await.map_err(|e| Failure::runtime(e.to_string()))?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0));
        if let Ok(style) = indicatif::ProgressStyle::with_template("verifying {bar:40} {pos}/{len} records ({per_sec})")
        {
            bar.set_style(style);
        }
        bar
    });
    let outcome = verify_store(&*store, &keys, &settings.checkpoint_file, |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    })
    .await
    .map_err(|e| Failure::runtime(e.to_string()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    store.close().await;
    match outcome {
        Ok(report) => {
            println!(
                "audit trail intact: {} records (seq 1..={}), {} signed checkpoints, newest at seq {}",
                report.records, report.last_seq, report.checkpoints, report.newest_checkpoint
            );
            if report.newest_checkpoint < report.last_seq {
                println!(
                    "note: records {}..={} are newer than the newest checkpoint and are covered by the chain only",
                    report.newest_checkpoint + 1,
                    report.last_seq
                );
            }
            Ok(())
        }
        Err(tamper) => Err(Failure {
            code: 3,
            message: format!("audit trail FAILED verification at seq {}: {tamper}", tamper.first_bad_seq()),
        }),
    }
}

pub async fn export(
    global: &GlobalArgs,
    flags: Vec<(String, String, toml::Value)>,
    format: &str,
    since: Option<String>,
    until: Option<String>,
) -> Result<(), Failure> {
    let format: Format = format.parse().map_err(|m: String| Failure { code: 2, message: m })?;
    let micros = |name: &str, v: Option<String>| -> Result<Option<i64>, Failure> {
        v.map(|s| {
            export::parse_time_us(&s)
                .ok_or_else(|| Failure { code: 2, message: format!("--{name}: expected an RFC 3339 time") })
        })
        .transpose()
    };
    let filter =
        AuditFilter { since_us: micros("since", since)?, until_us: micros("until", until)?, ..Default::default() };
    let config = startup::load_config(global.config.as_ref(), flags)?;
    startup::init_logging(&config, Some("warn"))?;
    let store = startup::open_store(&config).await?;
    let keys = startup::data_keys(&config, store.clone()).await?;
    let audit = startup::audit_log(&config, store.clone(), &keys).await?;
    let event = crate::admin::cli_context().event("audit.export", Outcome::Success).detail("format", format.name());
    audit.record_alone(&event).await.map_err(|e| Failure::runtime(e.to_string()))?;
    let observer = export::observer(store.backend().as_str());
    let mut chunks = Box::pin(export::stream(audit.clone(), filter, format, observer));
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| Failure::runtime(e.to_string()))?;
        out.write_all(&chunk).map_err(|e| Failure::runtime(format!("writing stdout: {e}")))?;
    }
    out.flush().map_err(|e| Failure::runtime(format!("writing stdout: {e}")))?;
    let _ = audit.checkpoint(true).await;
    store.close().await;
    Ok(())
}
