//! `ward keys status` and `ward keys rotate`: the master-key versions, and rotation with
//! the rewrap of every data key (with a progress bar). `rotate --resume` only finishes an
//! interrupted rewrap. Also the server's hourly key upkeep ([`maintain`]).

use std::sync::Arc;

use ward_keys::KeyStatus;

use crate::cli::{Failure, GlobalArgs};
use crate::startup;

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure::runtime(e.to_string())
}

fn print_status(status: &KeyStatus) {
    println!("backend: {}", status.backend);
    println!("{:<8} {:<13} {:<26} {:>9}", "version", "state", "created", "data keys");
    for v in &status.versions {
        let created = v.info.created_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let state = match v.info.state {
            ward_keys::KeyState::Active => "active",
            ward_keys::KeyState::DecryptOnly => "decrypt-only",
        };
        println!("{:<8} {:<13} {:<26} {:>9}", v.info.version, state, created, v.data_keys);
    }
    if status.pending_rewrap > 0 {
        println!(
            "{} data keys still wrapped by an older version (run `ward keys rotate --resume`)",
            status.pending_rewrap
        );
    }
    for w in &status.warnings {
        println!("warning: {w}");
    }
}

/// `ward keys status`.
pub async fn status(global: &GlobalArgs, flags: Vec<(String, String, toml::Value)>) -> Result<(), Failure> {
    let config = startup::load_config(global.config.as_ref(), flags)?;
    startup::init_logging(&config, Some("warn"))?;
    let services = startup::services(&config).await?;
    let status = services.keys.status().await.map_err(fail)?;
    print_status(&status);
    services.store.close().await;
    Ok(())
}

/// `ward keys rotate [--resume]`: a new master version (unless `--resume`), then the rewrap.
pub async fn rotate(
    global: &GlobalArgs,
    flags: Vec<(String, String, toml::Value)>,
    resume_only: bool,
) -> Result<(), Failure> {
    let config = startup::load_config(global.config.as_ref(), flags)?;
    startup::init_logging(&config, Some("warn"))?;
    let services = startup::services(&config).await?;
    let ctx = crate::admin::cli_context();
    // The same lease as the servers' key upkeep: never two rotations or rewraps at once.
    let holder = format!("cli/{}", uuid::Uuid::now_v7());
    let job = || async {
        if !resume_only {
            let before = services.keys.status().await.map_err(fail)?.active_version;
            let version = services.keys.rotate(&services.audit, &ctx).await.map_err(fail)?;
            if version > before {
                println!("created master key version {version}");
            } else {
                // AWS KMS rotates the key material behind one key id; old ciphertexts still open.
                println!("rotated the key material of master key version {version} inside the key store");
            }
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("rewrapping data keys {bar:40} {pos}/{len}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let report = services
            .keys
            .rewrap(&services.audit, &ctx, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await
            .map_err(fail)?;
        bar.finish_and_clear();
        println!("rewrapped {} data keys ({} already done elsewhere)", report.rewrapped, report.skipped);
        Ok::<_, Failure>(())
    };
    let mut tries = 0;
    loop {
        let held = ward_storage::leases::hold(&*services.store, "keys.maintain", &holder, MAINTAIN_LEASE, job());
        match held.await.map_err(fail)? {
            Some(done) => break done?,
            // A server's hourly check holds it for a moment; a rewrap for longer.
            None if tries < 150 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            None => {
                return Err(Failure::runtime(
                    "a server is rotating or rewrapping keys (it holds the keys.maintain lease); try again later",
                ));
            }
        }
    }
    let _ = services.audit.checkpoint(true).await;
    services.store.close().await;
    Ok(())
}

/// The server's key upkeep until `stop`: finishes a rewrap left unfinished (a crash, or a
/// rotation by another process), then checks hourly whether the active master version is
/// `rotation_days` old and, if so, rotates and rewraps. Recorded as the system. With
/// several nodes, each check runs under the `keys.maintain` lease, so one node at a time
/// rotates and rewraps (`holder` names this process).
pub async fn maintain(
    keys: ward_keys::DataKeys,
    audit: ward_audit::AuditLog,
    rotation_days: u64,
    lease: (Arc<dyn ward_storage::Store>, String),
    stop: tokio_util::sync::CancellationToken,
) {
    let (store, holder) = lease;
    loop {
        let upkeep = upkeep(&keys, &audit, rotation_days);
        match ward_storage::leases::hold(&*store, "keys.maintain", &holder, MAINTAIN_LEASE, upkeep).await {
            Ok(Some(())) => {}
            Ok(None) => tracing::debug!("another node holds the key upkeep lease"),
            Err(e) => tracing::error!(error = %e, "cannot take the key upkeep lease; retrying within the hour"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

/// How long the key upkeep lease lasts without renewal: a node that dies mid-rewrap
/// leaves the work to another after this long.
const MAINTAIN_LEASE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// One check: rotate if due, then finish any pending rewrap.
async fn upkeep(keys: &ward_keys::DataKeys, audit: &ward_audit::AuditLog, rotation_days: u64) {
    let now = time::OffsetDateTime::now_utc();
    let ctx = ward_audit::Context::system(now);
    let status = match keys.status().await {
        Ok(status) => status,
        Err(e) => return tracing::error!(error = %e, "cannot read the key status"),
    };
    let active = status.versions.iter().find(|v| v.info.version == status.active_version);
    let due = active.is_some_and(|v| now - v.info.created_at >= time::Duration::days(rotation_days as i64));
    if due {
        match keys.rotate(audit, &ctx).await {
            Ok(v) => tracing::info!(version = v, rotation_days, "rotated the master key (scheduled)"),
            Err(e) => tracing::error!(error = %e, "scheduled master-key rotation failed"),
        }
    }
    if due || status.pending_rewrap > 0 {
        match keys.rewrap(audit, &ctx, |_, _| {}).await {
            Ok(r) if r.rewrapped > 0 => tracing::info!(rewrapped = r.rewrapped, "data keys rewrapped"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "rewrap stopped; retrying within the hour"),
        }
    }
}
