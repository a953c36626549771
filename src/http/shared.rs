//! What every HTTP handler shares ([`Shared`]) and the two layers every
//! request passes: the login check and the security headers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::capture::Capture;
use crate::config::{Config, SendVia};
use crate::sandbox::faults::Faults;
use crate::secret::Secret;
use crate::smtp::route::Router;

/// What every request handler shares.
pub struct Shared {
    /// What the running config decides; a reload swaps it.
    view: ArcSwap<View>,
    pub capture: Arc<Capture>,
    pub faults: Arc<Faults>,
    pub started: Instant,
    pub(super) auth: Auth,
}

/// The part of [`Shared`] that comes from the config (one reload's worth).
pub struct View {
    pub config: Arc<Config>,
    pub router: Arc<Router>,
    /// `[sandbox] release_via`.
    pub release_via: Option<SendVia>,
    /// Every account and pool a message can be released through (their
    /// `send_via` keys), for the UI's release form.
    pub release_choices: Vec<String>,
    /// Each local user's inbox (for the UI's switcher and POP3).
    pub inboxes: BTreeMap<String, String>,
    pub hostname: String,
}

impl View {
    pub fn new(config: &Config, router: Arc<Router>) -> View {
        View {
            config: Arc::new(config.clone()),
            router,
            release_via: config.sandbox.release_via.clone(),
            release_choices: config
                .accounts
                .keys()
                .cloned()
                .chain(config.pools.keys().map(|p| format!("pool:{p}")))
                .collect(),
            inboxes: config
                .users
                .values()
                .map(|u| (u.name.clone(), u.inbox.clone()))
                .collect(),
            hostname: config.hostname.clone(),
        }
    }

    /// The inbox a local user's mail goes to.
    pub fn inbox_of(&self, user: &str) -> String {
        self.inboxes
            .get(user)
            .cloned()
            .unwrap_or_else(|| user.to_owned())
    }
}

/// How requests must identify themselves (nothing on loopback-only setups).
pub(super) struct Auth {
    pub(super) password_hash: Option<String>,
    pub(super) token: Option<Secret>,
    /// SHA-256 of `Authorization` values already verified (argon2 is slow).
    pub(super) verified: Mutex<std::collections::HashSet<[u8; 32]>>,
}

pub type AppState = Arc<Shared>;

/// Every response: no sniffing, no framing by other sites, no referrer
/// sent to other sites.
pub(super) async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.entry("x-frame-options")
        .or_insert(HeaderValue::from_static("SAMEORIGIN"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

/// Refuses writes (anything but GET, HEAD, OPTIONS) that a browser sent on
/// behalf of another site: a page elsewhere could otherwise delete the
/// captured mail or release it to real recipients with a simple form post.
/// Clients that are not browsers send neither header and pass.
pub(super) async fn same_origin_writes(req: Request, next: Next) -> Response {
    use axum::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let h = req.headers();
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    // Browsers since 2020-2023 say where a request comes from in
    // Sec-Fetch-Site; older ones only in Origin ("null" when the page's
    // referrer policy hides it, or from a sandboxed frame).
    let refused = match text(header::HeaderName::from_static("sec-fetch-site")) {
        Some(site) => !matches!(site, "same-origin" | "none"),
        None => match text(header::ORIGIN) {
            None => false,
            Some(o) => {
                let o = o
                    .strip_prefix("http://")
                    .or_else(|| o.strip_prefix("https://"));
                o.is_none() || o != text(header::HOST)
            }
        },
    };
    if refused {
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "403 cross-origin request refused: writes come from this server's own pages or from non-browser clients\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// Checks `Authorization` when the config asks for it.
pub(super) async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
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
    pub(super) fn new(
        config: &Config,
        router: Arc<Router>,
        capture: Arc<Capture>,
        faults: Arc<Faults>,
        auth: Auth,
    ) -> Shared {
        Shared {
            view: ArcSwap::from_pointee(View::new(config, router)),
            capture,
            faults,
            started: Instant::now(),
            auth,
        }
    }

    /// The config in force now (a handler loads it once and keeps it).
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Requests from now on see `config` and `router`.
    pub fn reload(&self, config: &Config, router: Arc<Router>) {
        self.view.store(Arc::new(View::new(config, router)));
    }

    pub(super) async fn authorized(&self, given: &str) -> bool {
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
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
