//! `ward serve`: start-up checks, the listening line, signals and graceful shutdown.

use std::sync::Arc;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use ward_api::{AppState, Application, metrics::Metrics, tls};
use ward_audit::{Context, Outcome};

use crate::cli::{Failure, GlobalArgs, LogFormatArg, ServeArgs};
use crate::startup::{self, StartError};

pub async fn run(
    global: &GlobalArgs,
    mut flags: Vec<(String, String, toml::Value)>,
    args: ServeArgs,
) -> Result<(), Failure> {
    if let Some(listen) = args.listen {
        flags.push(("--listen".into(), "server.listen".into(), toml::Value::String(listen.to_string())));
    }
    if args.no_tls {
        flags.push(("--no-tls".into(), "server.tls".into(), toml::Value::Boolean(false)));
    }
    if let Some(format) = args.log_format {
        let f = match format {
            LogFormatArg::Human => "human",
            LogFormatArg::Json => "json",
        };
        flags.push(("--log-format".into(), "log.format".into(), toml::Value::String(f.into())));
    }
    if let Some(level) = args.log_level {
        flags.push(("--log-level".into(), "log.level".into(), toml::Value::String(level)));
    }
    let config = startup::load_config(global.config.as_ref(), flags)?;
    if args.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(());
    }
    let server = &config.server;
    if !server.tls && !server.listen.ip().is_loopback() && !server.behind_tls_proxy {
        return Err(Failure {
            code: 2,
            message: format!(
                "--no-tls (server.tls = false) is refused on {}: plaintext is allowed only on a loopback \
                 address or with `server.behind_tls_proxy = true` when a TLS-terminating proxy sits in front",
                server.listen
            ),
        });
    }
    startup::init_logging(&config, None)?;

    let startup::Services { store, audit, keys, accounts } = startup::services(&config).await?;
    let tls = if server.tls {
        let material = tls::load_or_generate(&server.data_dir, server.tls_cert.as_deref(), server.tls_key.as_deref())
            .map_err(|e| StartError::Other(format!("TLS: {e}")))?;
        Some(material)
    } else {
        None
    };

    let access = startup::access(&config, store.clone(), audit.clone(), keys.clone())?;
    // Grants from before break-glass reasons were sealed (migration 0011) are sealed now.
    match access.seal_legacy_reasons(&Context::system(OffsetDateTime::now_utc())).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(grants = n, "sealed the plaintext reasons of earlier break-glass grants"),
        Err(e) => tracing::error!(error = %e, "cannot seal the plaintext reasons of earlier break-glass grants"),
    }
    let messaging = startup::messaging(&config, store.clone(), audit.clone(), keys.clone(), access.clone())?;
    let files = startup::files(&config, store.clone(), audit.clone(), keys.clone(), messaging.clone())?;
    let relay_stop = CancellationToken::new();
    let relay = match &config.cluster.nats_url {
        Some(url) => Some(
            crate::cluster::start(
                url,
                config.cluster.nats_subject.clone(),
                messaging.hub().clone(),
                &keys,
                relay_stop.clone(),
            )
            .await
            .map_err(|e| Failure::runtime(format!("cluster: {e}")))?,
        ),
        None => None,
    };
    let state = AppState {
        config: Arc::new(config.clone()),
        store: store.clone(),
        accounts: accounts.clone(),
        keys: keys.clone(),
        messaging: messaging.clone(),
        files: files.clone(),
        access: access.clone(),
        audit: audit.clone(),
        metrics: Arc::new(Metrics::with_sources(|registry| {
            keys.metrics().register(registry);
            if let Some(push) = messaging.push_metrics() {
                push.register(registry);
            }
            if let Some(alerts) = access.alert_metrics() {
                alerts.register(registry);
            }
        })),
        shutdown: CancellationToken::new(),
        tls: tls.is_some(),
    };
    let rustls = tls.as_ref().map(|m| m.config.clone());
    let app = Application::build(state, server.listen, rustls).map_err(|e| Failure::runtime(e.to_string()))?;
    match &tls {
        Some(material) => {
            if material.generated {
                tracing::warn!(cert = %material.cert_path.display(), "generated a self-signed certificate for \
                    localhost; configure server.tls_cert and server.tls_key for production");
            }
            tracing::info!(sha256 = %material.fingerprint, cert = %material.cert_path.display(), "TLS certificate");
        }
        None => tracing::warn!("TLS is off: serving plain HTTP"),
    }
    let start = Context::system(OffsetDateTime::now_utc())
        .event("server.start", Outcome::Success)
        .detail("version", env!("CARGO_PKG_VERSION"))
        .detail("listen", app.url())
        .detail("backend", store.backend().as_str())
        .detail("audit_retention_days", config.audit.retention_days);
    audit.record_alone(&start).await.map_err(|e| Failure::runtime(format!("cannot write the audit trail: {e}")))?;
    let changed = audit
        .record_settings(&Context::system(OffsetDateTime::now_utc()), &config.audited_settings())
        .await
        .map_err(|e| Failure::runtime(format!("cannot write the audit trail: {e}")))?;
    if changed > 0 {
        tracing::info!(changed, "recorded setting changes in the audit trail");
    }
    if config.audit.retention_days < ward_config::AUDIT_RETENTION_FLOOR_DAYS {
        let short = Context::system(OffsetDateTime::now_utc())
            .event("settings.audit_retention_short", Outcome::Success)
            .resource("setting/audit.retention_days")
            .detail("retention_days", config.audit.retention_days)
            .detail("floor_days", ward_config::AUDIT_RETENTION_FLOOR_DAYS);
        audit.record_alone(&short).await.map_err(|e| Failure::runtime(format!("cannot write the audit trail: {e}")))?;
        tracing::warn!(days = config.audit.retention_days, "audit retention is below the 6-year HIPAA floor");
    }
    let checkpoints = CancellationToken::new();
    let checkpointer = tokio::spawn(audit.clone().run_checkpointer(checkpoints.clone()));
    let follower = tokio::spawn(
        accounts.clone().follow_session_changes(std::time::Duration::from_millis(250), checkpoints.clone()),
    );
    // Names this process in the leases that keep cluster-wide jobs on one node at a time.
    let holder = format!("{}/{}", hostname(), uuid::Uuid::now_v7());
    let key_upkeep = tokio::spawn(crate::keys_cmd::maintain(
        keys.clone(),
        audit.clone(),
        config.keys.rotation_days,
        (store.clone(), holder.clone()),
        checkpoints.clone(),
    ));
    let sweeper = tokio::spawn(startup::sweep_files(
        files,
        std::time::Duration::from_secs(config.files.sweep_interval_s),
        (store.clone(), holder),
        checkpoints.clone(),
    ));
    let forwarder = match (&config.audit.syslog_addr, config.audit.syslog_name()) {
        (Some(addr), Some(server_name)) => {
            if let Some(ca) = &config.audit.syslog_ca_file {
                std::fs::read(ca)
                    .map_err(|e| Failure::runtime(format!("audit.syslog_ca_file {}: {e}", ca.display())))?;
            }
            let settings = ward_audit::syslog::SyslogSettings {
                addr: addr.clone(),
                server_name,
                ca_file: config.audit.syslog_ca_file.clone(),
                hostname: hostname(),
                cursor_file: server.data_dir.join("audit/syslog.cursor"),
                poll_interval: std::time::Duration::from_millis(500),
            };
            tracing::info!(addr = %addr, "streaming audit records to syslog over TLS");
            Some(tokio::spawn(ward_audit::syslog::run_forwarder(store.clone(), settings, checkpoints.clone())))
        }
        _ => None,
    };
    if server.metrics_token.is_none() && !server.listen.ip().is_loopback() {
        tracing::warn!(
            "GET /metrics needs no credential: set server.metrics_token, or keep the port off untrusted networks"
        );
    }
    tracing::info!(backend = store.backend().as_str(), data_dir = %server.data_dir.display(), "ward ready");
    let signals = shutdown_signal()?;
    // The one line scripts and tests wait for; printed directly so its form never changes.
    eprintln!("ward listening on {}", app.url());

    let result = app.run(signals).await;
    // Break-glass alerts and push notices still queued are delivered before the end, within
    // the shutdown grace.
    let grace = std::time::Duration::from_secs(config.server.shutdown_grace_s);
    let (alerts, push) = tokio::join!(access.drain_alerts(grace), messaging.drain_push(grace));
    if !(alerts && push) {
        tracing::error!("webhook calls were abandoned at shutdown (see above)");
    }
    checkpoints.cancel();
    let _ = checkpointer.await;
    let _ = follower.await;
    let _ = key_upkeep.await;
    let _ = sweeper.await;
    relay_stop.cancel();
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    if let Some(f) = forwarder
        && let Ok(Err(e)) = f.await
    {
        tracing::error!(error = %e, "syslog forwarding stopped with an error");
    }
    let stop = Context::system(OffsetDateTime::now_utc()).event("server.stop", Outcome::Success);
    if let Err(e) = audit.record_alone(&stop).await {
        tracing::error!(error = %e, "cannot record server.stop");
    }
    if let Err(e) = audit.checkpoint(true).await {
        tracing::error!(error = %e, "cannot write the final audit checkpoint");
    }
    store.close().await;
    result.map_err(|e| Failure::runtime(e.to_string()))?;
    tracing::info!("ward stopped");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers at once (so a signal that arrives right after
/// start-up is not fatal) and returns a future that resolves on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Failure::runtime(format!("cannot watch SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::runtime(format!("cannot watch SIGINT: {e}")))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// This machine's name for syslog headers (`HOSTNAME`, else `/etc/hostname`, else `ward`).
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ward".to_string())
}
