//! Binding, serving and graceful shutdown.
//!
//! [`Application::build`] binds first, so the caller learns the real port (for
//! `--listen 127.0.0.1:0`) before serving starts and a port in use is reported as a
//! start-up error. [`Application::run`] serves until the shutdown future resolves, then
//! stops accepting, cancels [`AppState::shutdown`] so long-lived connections close with
//! 1001, lets in-flight requests finish (up to `server.shutdown_grace_s`) and returns.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;

use crate::{AppState, routes};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, ready-to-serve Ward API.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    state: AppState,
}

impl Application {
    /// Binds `addr` and prepares the router. TLS is used when `tls` is given.
    pub fn build(state: AppState, addr: SocketAddr, tls: Option<Arc<ServerConfig>>) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        let local_addr = listener.local_addr()?;
        Ok(Self { listener, local_addr, tls, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() { Scheme::Https } else { Scheme::Http }
    }

    /// `scheme://ip:port`, as printed in the `ward listening on` line.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme().as_str(), self.local_addr)
    }

    /// Serves until `shutdown` resolves, then drains gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let grace = Duration::from_secs(self.state.config.server.shutdown_grace_s);
        let cancel = self.state.shutdown.clone();
        let app = routes::build(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let handle: Handle<SocketAddr> = Handle::new();
        let watcher = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!(grace_s = grace.as_secs(), "shutting down: finishing in-flight requests");
            cancel.cancel();
            watcher.graceful_shutdown(Some(grace));
        });
        match self.tls {
            Some(config) => {
                axum_server::from_tcp_rustls(self.listener, RustlsConfig::from_config(config))?
                    .handle(handle)
                    .serve(app)
                    .await?
            }
            None => axum_server::from_tcp(self.listener)?.handle(handle).serve(app).await?,
        }
        Ok(())
    }
}
