//! The one HTTP surface (`[http] listen`): the sandbox web UI ([`ui`]), the
//! Mailpit-compatible API with Postern's additions ([`api`]), the operator's
//! health, status and metrics ([`ops`]), on axum over
//! hyper on the same tokio runtime as everything else. Loopback needs no
//! login; any other address needs `password_hash` (HTTP Basic, any user
//! name) or a bearer token (`token_env` / `token_file`), checked here for
//! every request.

pub mod api;
pub mod ops;
pub mod shared;
pub mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::capture::Capture;
use crate::config::Config;
use crate::sandbox::faults::Faults;
use crate::smtp::route::Router;
pub use shared::AppState;
use shared::{authorize, same_origin_writes, security_headers, Auth, Shared};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr} (http): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http token: {0}")]
    Token(String),
}

/// The HTTP listeners, bound, with their state.
pub struct HttpServer {
    listeners: Vec<TcpListener>,
    state: AppState,
}

impl HttpServer {
    /// Binds `[http] listen` (fails before anything runs when an address
    /// is taken).
    pub async fn bind(
        config: &Config,
        capture: Arc<Capture>,
        faults: Arc<Faults>,
        router: Arc<Router>,
    ) -> Result<Option<HttpServer>, HttpError> {
        let Some(h) = &config.http else {
            return Ok(None);
        };
        let token = match &h.token {
            Some(src) => Some(
                crate::auth::credentials::Credential::password("http", src)
                    .map_err(|e| HttpError::Token(e.to_string()))?,
            ),
            None => None,
        };
        let mut listeners = Vec::new();
        for addr in &h.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| HttpError::Bind {
                    addr: *addr,
                    source,
                })?;
            listeners.push(l);
        }
        let auth = Auth {
            password_hash: h.password_hash.clone(),
            token,
            verified: Mutex::default(),
        };
        let state = Arc::new(Shared::new(config, router, capture, faults, auth));
        Ok(Some(HttpServer { listeners, state }))
    }

    /// The app: UI and API behind the auth check.
    pub fn app(state: AppState) -> axum::Router {
        axum::Router::new()
            .merge(ui::routes())
            .merge(api::routes())
            .merge(ops::routes())
            .layer(axum::middleware::from_fn(same_origin_writes))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                authorize,
            ))
            .layer(axum::middleware::from_fn(security_headers))
            .with_state(state)
    }

    /// Serves until `shutdown`.
    /// What a reload swaps (see [`Shared::reload`]).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks = Vec::new();
        for l in self.listeners {
            let addr = l.local_addr().ok();
            if let Some(a) = addr {
                info!(proto = "http", addr = %a, tls = %"none", "listening");
            }
            let app = HttpServer::app(self.state.clone());
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                let r = axum::serve(l, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = r {
                    warn!(error = %e, "http listener stopped");
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}
