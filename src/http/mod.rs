//! The one HTTP surface (`[http] listen`): the sandbox web UI ([`ui`]), the
//! Mailpit-compatible API with Postern's additions ([`api`]), on axum over
//! hyper on the same tokio runtime as everything else. Loopback needs no
//! login; any other address needs `password_hash` (HTTP Basic, any user
//! name) or a bearer token (`token_env` / `token_file`), checked here for
//! every request.

pub mod api;
pub mod ui;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::capture::Capture;
use crate::config::{Config, SendVia};
use crate::sandbox::faults::Faults;
use crate::secret::Secret;
use crate::smtp::route::Router;

/// What every request handler shares.
pub struct Shared {
    pub capture: Arc<Capture>,
    pub faults: Arc<Faults>,
    pub router: Arc<Router>,
    /// `[sandbox] release_via`.
    pub release_via: Option<SendVia>,
    /// Each local user's inbox (for the UI's switcher and POP3).
    pub inboxes: BTreeMap<String, String>,
    pub hostname: String,
    pub started: Instant,
    auth: Auth,
}

/// How requests must identify themselves (nothing on loopback-only setups).
struct Auth {
    password_hash: Option<String>,
    token: Option<Secret>,
    /// SHA-256 of `Authorization` values already verified (argon2 is slow).
    verified: Mutex<std::collections::HashSet<[u8; 32]>>,
}

pub type AppState = Arc<Shared>;

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
        let state = Arc::new(Shared {
            capture,
            faults,
            router,
            release_via: config.sandbox.release_via.clone(),
            inboxes: config
                .users
                .values()
                .map(|u| (u.name.clone(), u.inbox.clone()))
                .collect(),
            hostname: config.hostname.clone(),
            started: Instant::now(),
            auth: Auth {
                password_hash: h.password_hash.clone(),
                token,
                verified: Mutex::default(),
            },
        });
        Ok(Some(HttpServer { listeners, state }))
    }

    /// The app: UI and API behind the auth check.
    pub fn app(state: AppState) -> axum::Router {
        axum::Router::new()
            .merge(ui::routes())
            .merge(api::routes())
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                authorize,
            ))
            .layer(axum::middleware::from_fn(security_headers))
            .with_state(state)
    }

    /// Serves until `shutdown`.
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

/// Every response: no sniffing, no framing by other sites.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.entry("x-frame-options")
        .or_insert(HeaderValue::from_static("SAMEORIGIN"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

/// Checks `Authorization` when the config asks for it.
async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let a = &s.auth;
    if a.password_hash.is_none() && a.token.is_none() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !given.is_empty() && s.authorized(&given).await {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"Postern\", charset=\"UTF-8\"",
        )],
        "401 authentication required\n",
    )
        .into_response()
}

impl Shared {
    async fn authorized(&self, given: &str) -> bool {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(given.as_bytes()).into();
        let a = &self.auth;
        if a.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&key)
        {
            return true;
        }
        let ok = if let Some(t) = given.strip_prefix("Bearer ") {
            a.token
                .as_ref()
                .is_some_and(|want| constant_eq(t.trim().as_bytes(), want.expose().as_bytes()))
        } else if let (Some(b64), Some(hash)) = (given.strip_prefix("Basic "), &a.password_hash) {
            let pw = crate::sasl::decode_response(b64.trim().as_bytes())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|s| s.split_once(':').map(|(_, p)| p.to_owned()));
            match pw {
                Some(pw) => {
                    let hash = hash.clone();
                    tokio::task::spawn_blocking(move || {
                        use argon2::PasswordVerifier;
                        argon2::PasswordHash::new(&hash).is_ok_and(|h| {
                            argon2::Argon2::default()
                                .verify_password(pw.as_bytes(), &h)
                                .is_ok()
                        })
                    })
                    .await
                    .unwrap_or(false)
                }
                None => false,
            }
        } else {
            false
        };
        if ok {
            let mut v = a
                .verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if v.len() > 64 {
                v.clear();
            }
            v.insert(key);
        } else {
            // As slow as a wrong SMTP password, so guessing is no faster here.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        ok
    }

    /// The inbox a local user's mail goes to.
    pub fn inbox_of(&self, user: &str) -> String {
        self.inboxes
            .get(user)
            .cloned()
            .unwrap_or_else(|| user.to_owned())
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
