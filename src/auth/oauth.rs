//! Built-in OAuth2: provider endpoint presets, the token manager behind the
//! `TokenSource::OAuth` source, the consent flows of `postern auth`, and the
//! OAuth part of `postern status`.
//!
//! The token manager keeps each account's access token in memory (a
//! `DashMap`), refreshes it ahead of expiry with exactly one request in
//! flight per account however many sessions ask, saves a rotated refresh
//! token before anything uses the new access token, retries transient
//! token-endpoint failures (network, 5xx, 429) with back-off and reports them
//! as [`TokenError::Unavailable`] (a 4xx for clients), and turns
//! `invalid_grant` into [`TokenError::NeedsConsent`], whose text names the
//! command that fixes it. Tokens live in [`Secret`]s; nothing here logs a
//! token, a code, a verifier or a client secret.
//!
//! HTTP goes through the `oauth2` crate on reqwest (rustls with ring),
//! with redirects disabled. Knows nothing of SMTP or IMAP.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use oauth2::basic::BasicClient;
use oauth2::url::Url;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    DeviceAuthorizationUrl, DeviceCodeErrorResponseType, ErrorResponseType, PkceCodeChallenge,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardDeviceAuthorizationResponse,
    StandardErrorResponse, TokenResponse, TokenUrl,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::auth::store::{
    self, from_unix, to_unix, AccountState, StoreError, StoredToken, TokenStore,
};
use crate::auth::token::{Token, TokenError};
use crate::config::{Account, AuthMethod, Config, Grant};
use crate::providers::OAuthProvider;
use crate::secret::Secret;

/// Refresh this long before the access token expires (`refresh_margin`).
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Lifetime assumed when the token endpoint sends no `expires_in`.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);
/// Token requests per refresh when the endpoint fails transiently.
const ATTEMPTS: usize = 3;
/// Pauses between those attempts.
const RETRY_DELAYS: [Duration; ATTEMPTS - 1] = [Duration::from_millis(300), Duration::from_secs(1)];
/// After a failed refresh, logins fail at once (or use the still-valid
/// token) for this long, doubling up to `BACKOFF_MAX`, so a broken endpoint
/// is not hammered by every login.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long `postern auth` waits for the browser or a pasted address.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Longest request head the loopback listener reads.
const MAX_REDIRECT_REQUEST: usize = 16 * 1024;

// ---------------------------------------------------------------------------
// Provider presets
// ---------------------------------------------------------------------------

/// A provider's authorization server, as the presets know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderOAuth {
    pub name: &'static str,
    pub auth_url: String,
    pub token_url: String,
    pub device_url: Option<String>,
    /// Scopes for a user's mailbox (authorization code and device grants).
    pub scopes: Vec<String>,
    /// Scopes for app-only access (client credentials grant).
    pub app_only_scopes: Vec<String>,
    /// Extra parameters of the authorization request.
    pub auth_params: Vec<(String, String)>,
    /// Host name in the loopback redirect URI the app registration expects.
    pub redirect_host: &'static str,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The endpoints and default scopes of `p` (`tenant`: Microsoft only).
pub fn provider_oauth(p: OAuthProvider, tenant: &str) -> ProviderOAuth {
    match p {
        OAuthProvider::Google => ProviderOAuth {
            name: "Google",
            auth_url: "https://accounts.google.com/o/oauth2/v2/auth".into(),
            token_url: "https://oauth2.googleapis.com/token".into(),
            // Exists, but does not allow the Gmail scope (see `consent`).
            device_url: Some("https://oauth2.googleapis.com/device/code".into()),
            scopes: strings(&["https://mail.google.com/"]),
            app_only_scopes: Vec::new(),
            // offline: issue a refresh token; consent: issue it again on re-consent.
            auth_params: vec![
                ("access_type".into(), "offline".into()),
                ("prompt".into(), "consent".into()),
            ],
            redirect_host: "127.0.0.1",
        },
        OAuthProvider::Microsoft => {
            let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
            ProviderOAuth {
                name: "Microsoft",
                auth_url: format!("{base}/authorize"),
                token_url: format!("{base}/token"),
                device_url: Some(format!("{base}/devicecode")),
                scopes: strings(&[
                    "https://outlook.office.com/IMAP.AccessAsUser.All",
                    "https://outlook.office.com/POP.AccessAsUser.All",
                    "https://outlook.office.com/SMTP.Send",
                    "offline_access",
                ]),
                app_only_scopes: strings(&["https://outlook.office365.com/.default"]),
                auth_params: Vec::new(),
                // "Mobile and desktop applications" registrations use
                // http://localhost; the port is free at run time.
                redirect_host: "localhost",
            }
        }
        OAuthProvider::Yahoo => ProviderOAuth {
            name: "Yahoo",
            auth_url: "https://api.login.yahoo.com/oauth2/request_auth".into(),
            token_url: "https://api.login.yahoo.com/oauth2/get_token".into(),
            device_url: None,
            scopes: strings(&["mail-w"]),
            app_only_scopes: Vec::new(),
            auth_params: Vec::new(),
            redirect_host: "localhost",
        },
        OAuthProvider::Aol => ProviderOAuth {
            name: "AOL",
            auth_url: "https://api.login.aol.com/oauth2/request_auth".into(),
            token_url: "https://api.login.aol.com/oauth2/get_token".into(),
            device_url: None,
            scopes: strings(&["mail-w"]),
            app_only_scopes: Vec::new(),
            auth_params: Vec::new(),
            redirect_host: "localhost",
        },
    }
}

/// Whether an account gets its tokens from the built-in OAuth client.
pub fn uses_builtin(a: &Account) -> bool {
    a.auth == AuthMethod::Oauth2 && a.token_command.is_none() && a.oauth.is_some()
}

/// Where a client secret is read from (when it is needed, so a rotated
/// secret is picked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSecretSource {
    Env(String),
    File(PathBuf),
}

/// An account's OAuth settings: its preset with the account's overrides.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub account: String,
    pub email: String,
    pub provider: Option<OAuthProvider>,
    pub client_id: String,
    /// None: a public client, which sends no secret.
    pub client_secret: Option<ClientSecretSource>,
    pub auth_url: Option<String>,
    pub token_url: String,
    pub device_url: Option<String>,
    pub scopes: Vec<String>,
    pub grant: Grant,
    pub refresh_margin: Duration,
    pub auth_params: Vec<(String, String)>,
    pub redirect_host: &'static str,
}

impl OAuthSettings {
    pub fn resolve(a: &Account) -> Result<OAuthSettings, OAuthError> {
        let cfg_err = |message: &str| OAuthError::Config {
            account: a.name.clone(),
            message: message.to_owned(),
        };
        if !uses_builtin(a) {
            return Err(OAuthError::NotBuiltin {
                account: a.name.clone(),
            });
        }
        let o = a.oauth.as_ref().expect("checked by uses_builtin");
        let provider = a.provider.and_then(|p| p.oauth);
        let preset = provider.map(|p| provider_oauth(p, o.tenant.as_deref().unwrap_or("common")));
        let grant = o.grant.unwrap_or(Grant::AuthorizationCode);
        let client_id = o
            .client_id
            .clone()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| cfg_err("oauth.client_id is missing"))?;
        let token_url = o
            .token_url
            .clone()
            .or_else(|| preset.as_ref().map(|p| p.token_url.clone()))
            .ok_or_else(|| cfg_err("oauth.token_url is needed (no provider preset)"))?;
        let scopes = o.scopes.clone().unwrap_or_else(|| match (&preset, grant) {
            (Some(p), Grant::ClientCredentials) => p.app_only_scopes.clone(),
            (Some(p), _) => p.scopes.clone(),
            (None, _) => Vec::new(),
        });
        let client_secret = match (&o.client_secret_env, &o.client_secret_file) {
            (Some(v), _) => Some(ClientSecretSource::Env(v.clone())),
            (None, Some(f)) => Some(ClientSecretSource::File(f.clone())),
            (None, None) => None,
        };
        Ok(OAuthSettings {
            account: a.name.clone(),
            email: a.email.clone(),
            provider,
            client_id,
            client_secret,
            auth_url: o
                .auth_url
                .clone()
                .or_else(|| preset.as_ref().map(|p| p.auth_url.clone())),
            token_url,
            device_url: o
                .device_url
                .clone()
                .or_else(|| preset.as_ref().and_then(|p| p.device_url.clone())),
            scopes,
            grant,
            refresh_margin: o.refresh_margin.unwrap_or(DEFAULT_REFRESH_MARGIN),
            auth_params: preset
                .as_ref()
                .map(|p| p.auth_params.clone())
                .unwrap_or_default(),
            redirect_host: preset
                .as_ref()
                .map(|p| p.redirect_host)
                .unwrap_or("127.0.0.1"),
        })
    }

    /// The client secret, read now; None for a public client.
    pub fn client_secret(&self) -> Result<Option<Secret>, TokenError> {
        let rejected = |reason: String| TokenError::Rejected {
            account: self.account.clone(),
            reason,
        };
        let s = match &self.client_secret {
            None => return Ok(None),
            Some(ClientSecretSource::Env(v)) => std::env::var(v).map_err(|_| {
                rejected(format!(
                    "the client secret is not available: environment variable {v} is not set"
                ))
            })?,
            Some(ClientSecretSource::File(f)) => std::fs::read_to_string(f)
                .map_err(|e| {
                    rejected(format!(
                        "the client secret is not available: cannot read {}: {}",
                        f.display(),
                        e.kind()
                    ))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        if s.is_empty() {
            return Err(rejected("the client secret is empty".into()));
        }
        Ok(Some(Secret::new(s)))
    }

    fn grant_name(grant: Grant) -> &'static str {
        match grant {
            Grant::AuthorizationCode => "authorization_code",
            Grant::Device => "device",
            Grant::ClientCredentials => "client_credentials",
        }
    }

    /// A token-endpoint client with this account's id, secret and endpoint.
    fn client(&self) -> Result<TokenClient, TokenError> {
        let token_url =
            TokenUrl::new(self.token_url.clone()).map_err(|_| TokenError::Rejected {
                account: self.account.clone(),
                reason: "oauth.token_url is not a URL".into(),
            })?;
        let mut c = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(token_url)
            // Secrets (when there is one) go in the form body, which every
            // preset's server accepts; a public client sends only client_id.
            .set_auth_type(AuthType::RequestBody);
        if let Some(s) = self.client_secret()? {
            c = c.set_client_secret(ClientSecret::new(s.expose().to_owned()));
        }
        Ok(c)
    }
}

type TokenClient = BasicClient<
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Errors of the consent flows and of setting up the token manager.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    #[error("no account \"{account}\" in the configuration")]
    UnknownAccount { account: String },
    #[error("account {account} does not use built-in OAuth2 (it needs auth = \"oauth2\" and oauth = {{ client_id = \"…\" }}, without token_command)")]
    NotBuiltin { account: String },
    #[error("account {account}: {message}")]
    Config { account: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("account {account}: {message}")]
    Consent { account: String, message: String },
    #[error("cannot start the HTTP client: {0}")]
    Http(String),
    #[error("cannot listen for the browser's redirect on 127.0.0.1: {0}")]
    Listen(String),
}

// ---------------------------------------------------------------------------
// HTTP: reqwest through oauth2, redirects off, status codes kept
// ---------------------------------------------------------------------------

/// A transport failure or a status that means "try again later".
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(u16),
}

type HttpFuture = Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send>>;

#[derive(Clone)]
struct Http {
    client: oauth2::reqwest::Client,
    timeout: Duration,
}

impl Http {
    fn new(timeout: Duration) -> Result<Http, OAuthError> {
        let client = oauth2::reqwest::Client::builder()
            // A token endpoint that redirects is misconfigured; following it
            // could send credentials elsewhere (oauth2 crate advice).
            .redirect(oauth2::reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OAuthError::Http(e.to_string()))?;
        Ok(Http { client, timeout })
    }

    /// The oauth2 HTTP client: 5xx and 429 become errors so they are told
    /// apart from OAuth error answers (which oauth2 parses).
    fn caller(&self) -> impl Fn(oauth2::HttpRequest) -> HttpFuture + Send + Sync + 'static {
        let client = self.client.clone();
        let timeout = self.timeout;
        move |req| {
            let client = client.clone();
            Box::pin(async move {
                let resp = oauth2::AsyncHttpClient::call(&client, req)
                    .await
                    .map_err(|e| HttpError::Transport(describe_http_error(&e, timeout)))?;
                let status = resp.status().as_u16();
                if status >= 500 || status == 429 {
                    return Err(HttpError::Status(status));
                }
                Ok(resp)
            })
        }
    }
}

fn describe_http_error(
    e: &oauth2::HttpClientError<oauth2::reqwest::Error>,
    timeout: Duration,
) -> String {
    match e {
        oauth2::HttpClientError::Reqwest(r) => {
            if r.is_timeout() {
                return format!("no answer within {} s", timeout.as_secs_f32());
            }
            // The innermost cause says what happened ("Connection refused").
            let mut src: &dyn std::error::Error = r.as_ref();
            while let Some(next) = src.source() {
                src = next;
            }
            if r.is_connect() {
                format!("cannot connect: {src}")
            } else {
                src.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// What went wrong with a token request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Network, timeout, 5xx, 429, `temporarily_unavailable`: retry later.
    Transient(String),
    /// The grant is dead (`invalid_grant` and friends): the user must consent again.
    Consent(String),
    /// The client or request is wrong: a configuration problem.
    Rejected(String),
}

/// Printable, short text from the server (descriptions are the server's words).
fn clean(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    t.trim().to_owned()
}

fn classify<T>(e: RequestTokenError<HttpError, StandardErrorResponse<T>>) -> Failure
where
    T: ErrorResponseType + std::fmt::Display + 'static,
{
    match e {
        RequestTokenError::Request(HttpError::Transport(r)) => Failure::Transient(r),
        RequestTokenError::Request(HttpError::Status(s)) => {
            Failure::Transient(format!("the token endpoint answered HTTP {s}"))
        }
        RequestTokenError::ServerResponse(r) => {
            let code = r.error().to_string();
            let text = match r.error_description() {
                Some(d) => format!("{code} ({})", clean(d, 200)),
                None => code.clone(),
            };
            match code.as_str() {
                "invalid_grant"
                | "interaction_required"
                | "consent_required"
                | "login_required" => Failure::Consent(text),
                "temporarily_unavailable" | "server_error" => Failure::Transient(text),
                "invalid_client" | "unauthorized_client" => Failure::Rejected(format!(
                    "{text}: check client_id and the client secret of the account"
                )),
                "invalid_scope" => Failure::Rejected(format!("{text}: check oauth.scopes")),
                _ => Failure::Rejected(text),
            }
        }
        RequestTokenError::Parse(..) => Failure::Rejected(
            "the token endpoint's answer is not an OAuth2 token response; check oauth.token_url"
                .into(),
        ),
        RequestTokenError::Other(m) => Failure::Rejected(clean(&m, 200)),
    }
}

/// The parts of a token response Postern keeps.
struct Issued {
    access: Secret,
    refresh: Option<Secret>,
    lifetime: Duration,
    scopes: Option<Vec<String>>,
}

impl Issued {
    fn from_response<R: TokenResponse>(r: &R) -> Issued {
        Issued {
            access: Secret::new(r.access_token().secret().as_str()),
            refresh: r.refresh_token().map(|t| Secret::new(t.secret().as_str())),
            // A missing (or zero) expires_in counts as an hour.
            lifetime: r
                .expires_in()
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_EXPIRES_IN),
            scopes: r
                .scopes()
                .map(|s| s.iter().map(|x| x.to_string()).collect()),
        }
    }
}

fn fingerprint(s: &Secret) -> [u8; 32] {
    Sha256::digest(s.expose().as_bytes()).into()
}

// ---------------------------------------------------------------------------
// Token manager
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Cached {
    token: Secret,
    expires_at: SystemTime,
    issued_at: SystemTime,
    generation: u64,
    /// Fetched from the endpoint by this process (not loaded from the store).
    from_endpoint: bool,
}

impl Cached {
    fn lifetime(&self) -> Duration {
        self.expires_at
            .duration_since(self.issued_at)
            .unwrap_or_default()
    }

    /// Good to hand out: not within the refresh margin of its expiry. The
    /// margin is at most half the token's lifetime, so short-lived tokens
    /// are not refreshed on every login.
    fn usable(&self, now: SystemTime, margin: Duration) -> bool {
        now + margin.min(self.lifetime() / 2) < self.expires_at
    }

    /// Still valid for a little while (used when a refresh failed).
    fn unexpired(&self, now: SystemTime) -> bool {
        now + Duration::from_secs(5).min(self.lifetime() / 4) < self.expires_at
    }
}

#[derive(Default)]
struct Flight {
    /// Until then, do not ask the endpoint again (after a failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: Option<TokenError>,
    /// The refresh token the provider refused (invalid_grant).
    refused_refresh: Option<[u8; 32]>,
    state: AccountState,
}

struct Entry {
    settings: OAuthSettings,
    /// Held while fetching: the single flight per account.
    flight: tokio::sync::Mutex<Flight>,
    generation: AtomicU64,
    /// Token requests sent (for status and tests).
    requests: AtomicU64,
    /// The last access token an upstream refused, so a copy in the store
    /// is not handed out again.
    rejected_access: std::sync::Mutex<Option<[u8; 32]>>,
}

impl Entry {
    fn is_rejected(&self, t: &Secret) -> bool {
        *self.rejected_access.lock().expect("rejected lock") == Some(fingerprint(t))
    }
}

enum Request {
    Refresh(Secret),
    ClientCredentials,
}

/// Access tokens of every built-in OAuth account, shared by all sessions.
pub struct TokenManager {
    data_dir: PathBuf,
    store: TokenStore,
    http: Http,
    accounts: BTreeMap<String, Arc<Entry>>,
    cache: DashMap<String, Cached>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("store", &self.store)
            .field("accounts", &self.accounts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    /// The manager for the config's built-in OAuth accounts; None when no
    /// account uses built-in OAuth (then no key or store is touched).
    /// Opens the store (making its key on first use) and reads every
    /// account's saved tokens, so a wrong key stops the start at once.
    pub fn from_config(config: &Config) -> Result<Option<Arc<TokenManager>>, OAuthError> {
        let builtin: Vec<&Account> = config
            .accounts
            .values()
            .filter(|a| a.enabled && uses_builtin(a))
            .collect();
        if builtin.is_empty() {
            return Ok(None);
        }
        let store = TokenStore::open(&config.data_dir, config.key_file.as_deref())?;
        let http = Http::new(config.limits.upstream_timeout)?;
        let mut accounts = BTreeMap::new();
        for a in builtin {
            accounts.insert(
                a.name.clone(),
                Arc::new(Entry {
                    settings: OAuthSettings::resolve(a)?,
                    flight: tokio::sync::Mutex::new(Flight::default()),
                    generation: AtomicU64::new(0),
                    requests: AtomicU64::new(0),
                    rejected_access: std::sync::Mutex::new(None),
                }),
            );
        }
        let m = TokenManager {
            data_dir: config.data_dir.clone(),
            store,
            http,
            accounts,
            cache: DashMap::new(),
        };
        m.start()?;
        Ok(Some(Arc::new(m)))
    }

    /// Load saved tokens into the cache and write each account's state.
    fn start(&self) -> Result<(), OAuthError> {
        let now = SystemTime::now();
        for (name, e) in &self.accounts {
            let stored = self.store.load(name)?;
            let previous = store::read_state(&self.data_dir, name);
            let mut st = AccountState::default();
            match &stored {
                Some(t) => {
                    st.consented_at = Some(t.consented_at);
                    st.needs_consent =
                        t.refresh_token.is_none() && e.settings.grant != Grant::ClientCredentials;
                    // Keep a refusal seen before the restart on display until
                    // the next attempt or a new consent says otherwise.
                    if let Some(p) = previous.filter(|p| p.consented_at == Some(t.consented_at)) {
                        st.needs_consent |= p.needs_consent;
                        st.last_error = p.last_error;
                        st.last_error_at = p.last_error_at;
                        st.last_refresh = p.last_refresh;
                    }
                    if let (Some(tok), Some(exp)) = (&t.access_token, t.expires_at) {
                        st.valid_until = Some(exp);
                        let c = Cached {
                            token: tok.clone(),
                            expires_at: from_unix(exp),
                            issued_at: from_unix(t.issued_at.unwrap_or(exp.saturating_sub(3600))),
                            generation: 0,
                            from_endpoint: false,
                        };
                        if c.unexpired(now) {
                            self.cache.insert(name.clone(), c);
                        }
                    }
                }
                None => st.needs_consent = e.settings.grant != Grant::ClientCredentials,
            }
            if st.needs_consent {
                warn!(account = %name, "no usable OAuth authorization saved: run `postern auth {name}`");
            }
            let mut f = e.flight.try_lock().expect("no one else holds it yet");
            f.state = st;
            self.write_state(e, &mut f);
        }
        Ok(())
    }

    /// The token source of `account` (None if it is not a built-in account).
    pub fn source(self: &Arc<Self>, account: &str) -> Option<crate::auth::token::TokenSource> {
        self.accounts
            .contains_key(account)
            .then(|| crate::auth::token::TokenSource::oauth(self.clone(), account))
    }

    /// Token requests sent for `account` by this process.
    pub fn requests(&self, account: &str) -> u64 {
        self.accounts
            .get(account)
            .map(|e| e.requests.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    fn entry(&self, account: &str) -> Result<&Arc<Entry>, TokenError> {
        self.accounts
            .get(account)
            .ok_or_else(|| TokenError::Rejected {
                account: account.to_owned(),
                reason: "not a built-in OAuth account".into(),
            })
    }

    /// An access token for `account`: the cached one while it is good, else
    /// a new one. Concurrent callers share one refresh.
    pub async fn token(&self, account: &str) -> Result<Token, TokenError> {
        let e = self.entry(account)?;
        let margin = e.settings.refresh_margin;
        let seen = e.generation.load(Ordering::SeqCst);
        if let Some(c) = self.cache.get(account) {
            if c.usable(SystemTime::now(), margin) {
                return Ok(Token {
                    secret: c.token.clone(),
                    fresh: false,
                });
            }
        }
        let mut f = e.flight.lock().await;
        // Someone may have refreshed while this caller waited.
        if let Some(c) = self.cache.get(account) {
            if c.usable(SystemTime::now(), margin) {
                return Ok(Token {
                    secret: c.token.clone(),
                    fresh: c.from_endpoint && c.generation > seen,
                });
            }
        }
        self.obtain(e, &mut f).await
    }

    /// An upstream refused `rejected`: forget it (unless it was already
    /// replaced), so the next call fetches a new token.
    pub async fn invalidate(&self, account: &str, rejected: &Secret) {
        let Ok(e) = self.entry(account) else { return };
        *e.rejected_access.lock().expect("rejected lock") = Some(fingerprint(rejected));
        if self
            .cache
            .remove_if(account, |_, c| c.token == *rejected)
            .is_some()
        {
            debug!(account = %account, "cached access token dropped after an upstream refused it");
        }
    }

    /// The slow path, with the account's flight lock held.
    async fn obtain(&self, e: &Entry, f: &mut Flight) -> Result<Token, TokenError> {
        let s = &e.settings;
        let account = s.account.clone();
        let now = SystemTime::now();
        // Re-read the store: `postern auth` may have run since, or a
        // restart left a still-valid access token there.
        let stored = self
            .store
            .load(&account)
            .map_err(|err| TokenError::Rejected {
                account: account.clone(),
                reason: err.to_string(),
            })?;
        let stored = stored.filter(|t| {
            let same = t.client_id == s.client_id && t.token_url == s.token_url;
            if !same {
                debug!(account = %account, "saved tokens belong to another client_id or token_url; ignoring them");
            }
            same
        });
        if let Some(t) = &stored {
            if let (Some(tok), Some(exp)) = (&t.access_token, t.expires_at) {
                let c = Cached {
                    token: tok.clone(),
                    expires_at: from_unix(exp),
                    issued_at: from_unix(t.issued_at.unwrap_or(exp.saturating_sub(3600))),
                    generation: e.generation.fetch_add(1, Ordering::SeqCst) + 1,
                    from_endpoint: false,
                };
                if c.usable(now, s.refresh_margin) && !e.is_rejected(tok) {
                    self.cache.insert(account.clone(), c);
                    // New consent (or another process's refresh): the
                    // earlier refusal no longer holds.
                    if f.state.needs_consent || f.state.valid_until != Some(exp) {
                        f.state.needs_consent = false;
                        f.state.valid_until = Some(exp);
                        f.state.consented_at = Some(t.consented_at);
                        f.retry_at = None;
                        f.last_error = None;
                        self.write_state(e, f);
                        info!(account = %account, "using the access token saved by `postern auth` or another process");
                    }
                    return Ok(Token {
                        secret: tok.clone(),
                        fresh: false,
                    });
                }
            }
        }
        // Backing off after a failure: do not ask the endpoint yet.
        if let (Some(at), Some(err)) = (f.retry_at, &f.last_error) {
            if Instant::now() < at {
                return self.stale_or(&account, now, err.clone());
            }
        }
        let request = match s.grant {
            Grant::ClientCredentials => Request::ClientCredentials,
            _ => {
                let Some(rt) = stored.as_ref().and_then(|t| t.refresh_token.clone()) else {
                    return Err(self.needs_consent(e, f, None));
                };
                if f.refused_refresh == Some(fingerprint(&rt)) {
                    return Err(TokenError::NeedsConsent { account });
                }
                Request::Refresh(rt)
            }
        };
        self.fetch(e, f, request, stored).await
    }

    /// Ask the token endpoint (with retries) and record the outcome.
    async fn fetch(
        &self,
        e: &Entry,
        f: &mut Flight,
        request: Request,
        stored: Option<StoredToken>,
    ) -> Result<Token, TokenError> {
        let s = &e.settings;
        let account = s.account.clone();
        let started = Instant::now();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            e.requests.fetch_add(1, Ordering::Relaxed);
            let r = self.request(s, &request).await;
            match r {
                Err(Failure::Transient(ref why))
                    if attempt < ATTEMPTS && started.elapsed() < self.http.timeout =>
                {
                    debug!(account = %account, attempt, error = %why, "token endpoint failed; retrying");
                    tokio::time::sleep(RETRY_DELAYS[attempt - 1]).await;
                }
                r => break r,
            }
        };
        let now = SystemTime::now();
        match outcome {
            Ok(issued) => {
                let rotated = match (&issued.refresh, &request) {
                    (Some(new), Request::Refresh(old)) => new != old,
                    _ => false,
                };
                let refresh = issued.refresh.clone().or(match &request {
                    Request::Refresh(old) => Some(old.clone()),
                    Request::ClientCredentials => None,
                });
                let expires_at = now + issued.lifetime;
                let record = StoredToken {
                    client_id: s.client_id.clone(),
                    token_url: s.token_url.clone(),
                    grant: OAuthSettings::grant_name(s.grant).into(),
                    refresh_token: refresh,
                    access_token: Some(issued.access.clone()),
                    expires_at: Some(to_unix(expires_at)),
                    issued_at: Some(to_unix(now)),
                    consented_at: stored
                        .as_ref()
                        .map(|t| t.consented_at)
                        .unwrap_or_else(|| to_unix(now)),
                    scopes: issued
                        .scopes
                        .or_else(|| stored.as_ref().map(|t| t.scopes.clone()))
                        .unwrap_or_else(|| s.scopes.clone()),
                };
                // `postern auth` may have saved a new consent while this
                // request was out: keep that one rather than overwrite it.
                let newer_consent = matches!(
                    self.store.load(&account),
                    Ok(Some(t)) if stored.as_ref().is_some_and(|s| s.consented_at != t.consented_at)
                );
                // Save before anyone uses the new access token: a rotated
                // refresh token must survive a crash right after this.
                if newer_consent {
                    debug!(account = %account, "a new consent was saved meanwhile; keeping it");
                } else if let Err(err) = self.store.save(&account, &record) {
                    warn!(account = %account, error = %err, rotated, "could not save the new tokens; a rotated refresh token would be lost at restart");
                }
                let generation = e.generation.fetch_add(1, Ordering::SeqCst) + 1;
                self.cache.insert(
                    account.clone(),
                    Cached {
                        token: issued.access.clone(),
                        expires_at,
                        issued_at: now,
                        generation,
                        from_endpoint: true,
                    },
                );
                *e.rejected_access.lock().expect("rejected lock") = None;
                f.retry_at = None;
                f.backoff = Duration::ZERO;
                f.last_error = None;
                f.refused_refresh = None;
                f.state.valid_until = Some(to_unix(expires_at));
                f.state.last_refresh = Some(to_unix(now));
                f.state.needs_consent = false;
                f.state.last_error = None;
                f.state.last_error_at = None;
                f.state.consented_at = Some(record.consented_at);
                self.write_state(e, f);
                info!(account = %account, valid_for_s = issued.lifetime.as_secs(), rotated, "new access token");
                Ok(Token {
                    secret: issued.access,
                    fresh: true,
                })
            }
            Err(Failure::Consent(why)) if matches!(request, Request::Refresh(_)) => {
                if let Request::Refresh(rt) = &request {
                    f.refused_refresh = Some(fingerprint(rt));
                }
                Err(self.needs_consent(e, f, Some(why)))
            }
            Err(Failure::Transient(why)) => {
                let err = TokenError::Unavailable {
                    account: account.clone(),
                    reason: why,
                };
                self.failed(e, f, &err, now);
                self.stale_or(&account, now, err)
            }
            Err(Failure::Consent(why)) | Err(Failure::Rejected(why)) => {
                let err = TokenError::Rejected {
                    account: account.clone(),
                    reason: why,
                };
                self.failed(e, f, &err, now);
                Err(err)
            }
        }
    }

    /// One token request.
    async fn request(&self, s: &OAuthSettings, request: &Request) -> Result<Issued, Failure> {
        let client = s.client().map_err(|e| Failure::Rejected(reason_of(&e)))?;
        let http = self.http.caller();
        let r = match request {
            Request::Refresh(rt) => {
                let rt = RefreshToken::new(rt.expose().to_owned());
                client
                    .exchange_refresh_token(&rt)
                    .request_async(&http)
                    .await
            }
            Request::ClientCredentials => {
                client
                    .exchange_client_credentials()
                    .add_scopes(s.scopes.iter().cloned().map(Scope::new))
                    .request_async(&http)
                    .await
            }
        };
        r.map(|t| Issued::from_response(&t)).map_err(classify)
    }

    /// A failed refresh: back off and record it.
    fn failed(&self, e: &Entry, f: &mut Flight, err: &TokenError, now: SystemTime) {
        f.backoff = (f.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        f.retry_at = Some(Instant::now() + f.backoff);
        f.last_error = Some(err.clone());
        f.state.last_error = Some(err.to_string());
        f.state.last_error_at = Some(to_unix(now));
        self.write_state(e, f);
        warn!(account = %e.settings.account, error = %err, retry_in_s = f.backoff.as_secs(), "token refresh failed");
    }

    /// The saved authorization is missing or refused: every login now gets
    /// the "needs consent" answer until `postern auth` is run.
    fn needs_consent(&self, e: &Entry, f: &mut Flight, why: Option<String>) -> TokenError {
        let account = e.settings.account.clone();
        self.cache.remove(&account);
        let now = to_unix(SystemTime::now());
        f.state.needs_consent = true;
        if let Some(w) = &why {
            f.state.last_error = Some(w.clone());
            f.state.last_error_at = Some(now);
        }
        self.write_state(e, f);
        match &why {
            Some(w) => {
                warn!(account = %account, error = %w, "the provider refused the saved authorization; run `postern auth {account}`")
            }
            None => {
                warn!(account = %account, "no saved authorization; run `postern auth {account}`")
            }
        }
        TokenError::NeedsConsent { account }
    }

    /// After a failed refresh: the current token if it is still valid, else `err`.
    fn stale_or(
        &self,
        account: &str,
        now: SystemTime,
        err: TokenError,
    ) -> Result<Token, TokenError> {
        match self.cache.get(account) {
            Some(c) if c.unexpired(now) => Ok(Token {
                secret: c.token.clone(),
                fresh: false,
            }),
            _ => Err(err),
        }
    }

    fn write_state(&self, e: &Entry, f: &mut Flight) {
        f.state.updated_at = store::unix_now();
        f.state.pid = std::process::id();
        f.state.refreshes = e.requests.load(Ordering::Relaxed);
        if let Err(err) = store::write_state(&self.data_dir, &e.settings.account, &f.state) {
            warn!(account = %e.settings.account, error = %err, "cannot write the OAuth state for `postern status`");
        }
    }
}

fn reason_of(e: &TokenError) -> String {
    match e {
        TokenError::Rejected { reason, .. } | TokenError::Unavailable { reason, .. } => {
            reason.clone()
        }
        other => other.to_string(),
    }
}

/// The `TokenSource::OAuth` handle: one account of a shared manager.
#[derive(Clone)]
pub struct OAuthSource {
    manager: Arc<TokenManager>,
    account: Arc<str>,
}

impl std::fmt::Debug for OAuthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSource")
            .field("account", &self.account)
            .finish()
    }
}

impl OAuthSource {
    pub fn new(manager: Arc<TokenManager>, account: &str) -> OAuthSource {
        OAuthSource {
            manager,
            account: account.into(),
        }
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn manager(&self) -> &Arc<TokenManager> {
        &self.manager
    }

    pub async fn token(&self) -> Result<Token, TokenError> {
        self.manager.token(&self.account).await
    }

    pub async fn invalidate(&self, rejected: &Secret) {
        self.manager.invalidate(&self.account, rejected).await
    }
}

// ---------------------------------------------------------------------------
// Consent: `postern auth ACCOUNT`
// ---------------------------------------------------------------------------

/// How `postern auth` asks for consent.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsentOptions {
    /// Do not try to open a browser; the redirected address is pasted back.
    pub no_browser: bool,
    /// Use the device authorization grant.
    pub device: bool,
}

/// What `postern auth` saved.
#[derive(Debug, Clone)]
pub struct ConsentOutcome {
    pub account: String,
    pub grant: Grant,
    pub valid_until: SystemTime,
    pub has_refresh_token: bool,
    pub store_file: PathBuf,
}

/// Run the account's consent flow and save the tokens. `say` prints a line
/// for the user (instructions only; never a token).
pub async fn consent(
    config: &Config,
    account: &str,
    opts: ConsentOptions,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<ConsentOutcome, OAuthError> {
    let a = config
        .accounts
        .get(account)
        .ok_or_else(|| OAuthError::UnknownAccount {
            account: account.to_owned(),
        })?;
    let s = OAuthSettings::resolve(a)?;
    let store = TokenStore::open(&config.data_dir, config.key_file.as_deref())?;
    let http = Http::new(config.limits.upstream_timeout)?;
    let grant = if opts.device { Grant::Device } else { s.grant };
    let issued = match grant {
        Grant::AuthorizationCode => authorization_code(&s, &http, opts, say).await?,
        Grant::Device => device(&s, &http, say).await?,
        Grant::ClientCredentials => {
            say(&format!(
                "Account {account} uses grant = \"client_credentials\": no consent is needed. Checking that the client can get a token…"
            ));
            let client = s.client()?;
            let r = client
                .exchange_client_credentials()
                .add_scopes(s.scopes.iter().cloned().map(Scope::new))
                .request_async(&http.caller())
                .await;
            Issued::from_response(&r.map_err(|e| failure_error(&s, classify(e)))?)
        }
    };
    let now = SystemTime::now();
    let valid_until = now + issued.lifetime;
    let has_refresh_token = issued.refresh.is_some();
    if !has_refresh_token && grant != Grant::ClientCredentials {
        say("Warning: the provider sent no refresh token, so this consent lasts only until the access token expires.");
    }
    let record = StoredToken {
        client_id: s.client_id.clone(),
        token_url: s.token_url.clone(),
        grant: OAuthSettings::grant_name(grant).into(),
        refresh_token: issued.refresh,
        access_token: Some(issued.access),
        expires_at: Some(to_unix(valid_until)),
        issued_at: Some(to_unix(now)),
        consented_at: to_unix(now),
        scopes: issued.scopes.unwrap_or_else(|| s.scopes.clone()),
    };
    store.save(account, &record)?;
    let state = AccountState {
        updated_at: to_unix(now),
        pid: std::process::id(),
        valid_until: Some(to_unix(valid_until)),
        needs_consent: false,
        consented_at: Some(record.consented_at),
        last_refresh: Some(to_unix(now)),
        last_error: None,
        last_error_at: None,
        refreshes: 0,
    };
    if let Err(e) = store::write_state(&config.data_dir, account, &state) {
        warn!(account = %account, error = %e, "cannot write the OAuth state for `postern status`");
    }
    info!(account = %account, grant = OAuthSettings::grant_name(grant), "OAuth consent saved");
    Ok(ConsentOutcome {
        account: account.to_owned(),
        grant,
        valid_until,
        has_refresh_token,
        store_file: store.token_path(account),
    })
}

/// A token-endpoint failure during consent, as an error for the user.
fn failure_error(s: &OAuthSettings, f: Failure) -> OAuthError {
    let account = s.account.clone();
    match f {
        Failure::Transient(reason) => {
            OAuthError::Token(TokenError::Unavailable { account, reason })
        }
        Failure::Consent(reason) => OAuthError::Consent {
            account,
            message: format!("the provider refused the authorization: {reason}"),
        },
        Failure::Rejected(reason) => OAuthError::Token(TokenError::Rejected { account, reason }),
    }
}

/// Authorization code with PKCE (S256) and a loopback redirect listener.
async fn authorization_code(
    s: &OAuthSettings,
    http: &Http,
    opts: ConsentOptions,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<Issued, OAuthError> {
    let account = &s.account;
    let auth_url = s.auth_url.clone().ok_or_else(|| OAuthError::Config {
        account: account.clone(),
        message: "oauth.auth_url is needed for the authorization code grant".into(),
    })?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| OAuthError::Listen(e.to_string()))?;
    let port = listener
        .local_addr()
        .map_err(|e| OAuthError::Listen(e.to_string()))?
        .port();
    // A browser may resolve "localhost" to ::1 first: listen there too.
    let v6 = if s.redirect_host == "localhost" {
        TcpListener::bind(("::1", port)).await.ok()
    } else {
        None
    };
    let redirect = format!("http://{}:{port}/", s.redirect_host);
    let bad_url = |what: &str| OAuthError::Config {
        account: account.clone(),
        message: format!("oauth.{what} is not a URL"),
    };
    let client = s
        .client()?
        .set_auth_uri(AuthUrl::new(auth_url).map_err(|_| bad_url("auth_url"))?)
        .set_redirect_uri(RedirectUrl::new(redirect.clone()).map_err(|_| bad_url("redirect"))?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(s.scopes.iter().cloned().map(Scope::new))
        .set_pkce_challenge(challenge);
    for (k, v) in &s.auth_params {
        req = req.add_extra_param(k.clone(), v.clone());
    }
    if !s.email.is_empty() {
        req = req.add_extra_param("login_hint", s.email.clone());
    }
    let (url, state) = req.url();
    let who = s
        .provider
        .map(|p| provider_oauth(p, "common").name)
        .unwrap_or("the provider");
    say(&format!(
        "Account {account} <{}>: sign in with {who} and allow access.\n\nOpen this address in a browser:\n\n    {url}\n",
        s.email
    ));
    say(&format!(
        "Waiting for the browser to come back to {redirect}\nOn another machine (or no browser here)? Sign in there, then copy the address the browser ends on\n(it starts with {redirect} and the page may say it cannot be reached) and paste it here:"
    ));
    if !opts.no_browser {
        open_browser(url.as_str());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, OAuthError>>(4);
    let expected = state.secret().clone();
    let server = tokio::spawn(serve_redirects(
        listener,
        v6,
        expected.clone(),
        account.clone(),
        tx.clone(),
    ));
    let mut pasted = stdin_lines();
    let code = tokio::time::timeout(CONSENT_TIMEOUT, async {
        loop {
            tokio::select! {
                Some(r) = rx.recv() => return r,
                Some(line) = pasted.recv() => match parse_pasted(&line, &expected, account) {
                    None => {}
                    Some(Ok(code)) => return Ok(code),
                    Some(Err(OAuthError::Consent { message, .. })) if message.contains("state") => {
                        say(&format!("{message}; paste the address from this run's sign-in"));
                    }
                    Some(Err(e)) => return Err(e),
                },
            }
        }
    })
    .await
    .map_err(|_| OAuthError::Consent {
        account: account.clone(),
        message: format!(
            "no answer from the browser within {} minutes; run `postern auth {account}` again",
            CONSENT_TIMEOUT.as_secs() / 60
        ),
    })?;
    server.abort();
    let code = code?;
    say("Authorization received; getting tokens…");
    let r = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http.caller())
        .await;
    Ok(Issued::from_response(
        &r.map_err(|e| failure_error(s, classify(e)))?,
    ))
}

/// Try to open `url` in the desktop's browser; silently do nothing on a
/// machine without one.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some_and(|v| !v.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|v| !v.is_empty())
    {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(cmd) = opener {
        let _ = std::process::Command::new(cmd)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// Lines typed on standard input (read on a plain thread, which does not
/// hold up the exit). Closed input just ends the stream.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The code from a pasted redirect address (or a bare code). None: nothing
/// usable on this line.
fn parse_pasted(line: &str, state: &str, account: &str) -> Option<Result<String, OAuthError>> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if !line.contains("code=") && !line.contains("error=") {
        if line.contains(char::is_whitespace) || line.contains("://") {
            return None;
        }
        return Some(Ok(line.to_owned()));
    }
    let query = line.split_once('?').map(|(_, q)| q).unwrap_or(line);
    let query = query.split('#').next().unwrap_or(query);
    Some(redirect_outcome(
        oauth2::url::form_urlencoded::parse(query.as_bytes()),
        state,
        account,
    ))
}

/// Read the authorization response (RFC 6749 4.1.2): `code` and `state`, or
/// `error` and `error_description`.
fn redirect_outcome<'a>(
    pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    state: &str,
    account: &str,
) -> Result<String, OAuthError> {
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    let mut description = None;
    for (k, v) in pairs {
        match k.as_ref() {
            "code" => code = Some(v.into_owned()),
            "state" => got_state = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    let consent = |message: String| OAuthError::Consent {
        account: account.to_owned(),
        message,
    };
    if let Some(e) = error {
        let d = description
            .map(|d| format!(" ({})", clean(&d, 200)))
            .unwrap_or_default();
        return Err(consent(format!(
            "consent was not given: {}{d}",
            clean(&e, 60)
        )));
    }
    if got_state.as_deref() != Some(state) {
        return Err(consent(
            "the answer's state does not match this sign-in (an old browser tab?)".into(),
        ));
    }
    code.filter(|c| !c.is_empty())
        .ok_or_else(|| consent("the answer carries no authorization code".into()))
}

async fn accept_any(a: &TcpListener, b: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match b {
        None => a.accept().await.map(|(s, _)| s),
        Some(b) => tokio::select! {
            r = a.accept() => r.map(|(s, _)| s),
            r = b.accept() => r.map(|(s, _)| s),
        },
    }
}

/// Answer the browser's requests on the loopback listener(s); each request
/// in its own task, so a browser's idle pre-connection blocks nothing.
async fn serve_redirects(
    a: TcpListener,
    b: Option<TcpListener>,
    state: String,
    account: String,
    tx: tokio::sync::mpsc::Sender<Result<String, OAuthError>>,
) {
    loop {
        let Ok(stream) = accept_any(&a, b.as_ref()).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (state, account, tx) = (state.clone(), account.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(60),
                answer_redirect(stream, &state, &account, &tx),
            )
            .await;
        });
    }
}

async fn answer_redirect(
    mut s: TcpStream,
    state: &str,
    account: &str,
    tx: &tokio::sync::mpsc::Sender<Result<String, OAuthError>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REDIRECT_REQUEST {
            return respond(&mut s, 431, "Request too large").await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut s, 405, "Only GET is answered here.").await;
    }
    let Ok(url) = Url::parse(&format!("http://127.0.0.1{target}")) else {
        return respond(&mut s, 400, "Bad request.").await;
    };
    if url.path() != "/" || url.query().is_none() {
        return respond(&mut s, 404, "Not found.").await;
    }
    match redirect_outcome(url.query_pairs(), state, account) {
        Ok(code) => {
            respond(
                &mut s,
                200,
                &format!("Postern received the authorization for account {account}. You can close this window."),
            )
            .await?;
            let _ = tx.send(Ok(code)).await;
        }
        Err(OAuthError::Consent { message, .. }) if message.contains("state") => {
            respond(
                &mut s,
                400,
                &format!(
                    "{message}. Use the address printed by the `postern auth` run that is waiting."
                ),
            )
            .await?;
        }
        Err(e) => {
            respond(
                &mut s,
                200,
                &format!("Postern: {e}. Run `postern auth {account}` again."),
            )
            .await?;
            let _ = tx.send(Err(e)).await;
        }
    }
    Ok(())
}

async fn respond(s: &mut TcpStream, status: u16, text: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let esc = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Postern</title></head><body><p>{esc}</p></body></html>\n"
    );
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(msg.as_bytes()).await?;
    s.shutdown().await
}

/// Device authorization grant (RFC 8628).
async fn device(
    s: &OAuthSettings,
    http: &Http,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<Issued, OAuthError> {
    let account = &s.account;
    let cfg = |message: String| OAuthError::Config {
        account: account.clone(),
        message,
    };
    if s.provider == Some(OAuthProvider::Google)
        && s.scopes
            .iter()
            .any(|x| x.starts_with("https://mail.google.com"))
    {
        return Err(cfg(format!(
            "Google's device flow does not allow the Gmail scope (https://mail.google.com/); on a machine without a browser run `postern auth --no-browser {account}` and paste the address back"
        )));
    }
    let device_url = s.device_url.clone().ok_or_else(|| {
        cfg(format!(
            "this provider has no device flow (set oauth.device_url if it has one); use `postern auth --no-browser {account}`"
        ))
    })?;
    let client = s.client()?.set_device_authorization_url(
        DeviceAuthorizationUrl::new(device_url)
            .map_err(|_| cfg("oauth.device_url is not a URL".into()))?,
    );
    let caller = http.caller();
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(s.scopes.iter().cloned().map(Scope::new))
        .request_async(&caller)
        .await
        .map_err(|e| failure_error(s, classify(e)))?;
    say(&format!(
        "Account {account} <{}>: to sign in, open\n\n    {}\n\nand enter the code\n\n    {}\n",
        s.email,
        details.verification_uri().as_str(),
        details.user_code().secret()
    ));
    if let Some(c) = details.verification_uri_complete() {
        say(&format!(
            "(or open {} , which carries the code)",
            c.secret()
        ));
    }
    say(&format!(
        "Waiting for the sign-in (the code is valid for {} min)…",
        details.expires_in().as_secs().div_ceil(60)
    ));
    // The oauth2 crate polls at the server's interval, keeps polling on
    // authorization_pending, adds 5 s on slow_down and stops on
    // expired_token / access_denied.
    let r = client
        .exchange_device_access_token(&details)
        .request_async(&caller, tokio::time::sleep, None)
        .await;
    match r {
        Ok(t) => Ok(Issued::from_response(&t)),
        Err(RequestTokenError::ServerResponse(e)) => {
            let message = match e.error() {
                DeviceCodeErrorResponseType::ExpiredToken => format!(
                    "the code expired before the sign-in was finished; run `postern auth --device {account}` again"
                ),
                DeviceCodeErrorResponseType::AccessDenied => "the sign-in was declined".to_owned(),
                other => {
                    let f = classify(RequestTokenError::<HttpError, _>::ServerResponse(
                        StandardErrorResponse::new(other.clone(), e.error_description().cloned(), None),
                    ));
                    return Err(failure_error(s, f));
                }
            };
            Err(OAuthError::Consent {
                account: account.clone(),
                message,
            })
        }
        Err(e) => Err(failure_error(s, classify(e))),
    }
}

// ---------------------------------------------------------------------------
// `postern status`
// ---------------------------------------------------------------------------

struct StatusRow {
    account: String,
    source: &'static str,
    /// Consent saved, or not needed (client credentials).
    consented: bool,
    app_only: bool,
    state: Option<AccountState>,
}

fn status_rows(config: &Config) -> Vec<StatusRow> {
    config
        .accounts
        .values()
        .filter(|a| a.auth == AuthMethod::Oauth2)
        .map(|a| {
            if uses_builtin(a) {
                let app_only =
                    a.oauth.as_ref().and_then(|o| o.grant) == Some(Grant::ClientCredentials);
                StatusRow {
                    account: a.name.clone(),
                    source: "built-in",
                    consented: app_only || store::token_path(&config.data_dir, &a.name).exists(),
                    app_only,
                    state: store::read_state(&config.data_dir, &a.name),
                }
            } else {
                StatusRow {
                    account: a.name.clone(),
                    source: "token_command",
                    consented: false,
                    app_only: false,
                    state: None,
                }
            }
        })
        .collect()
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(from_unix(unix)).to_string()
}

fn relative(unix: u64, now: u64) -> String {
    let d = |s: u64| humantime::format_duration(Duration::from_secs(s)).to_string();
    if unix >= now {
        format!("in {}", d(unix - now))
    } else {
        format!("{} ago", d(now - unix))
    }
}

/// The OAuth part of `postern status`, from the state `run` keeps in
/// `data_dir/oauth/` (no secrets).
pub fn status_report(config: &Config) -> String {
    let rows = status_rows(config);
    let now = store::unix_now();
    let mut out = String::new();
    let _ = writeln!(out, "OAuth2 accounts:");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let width = rows.iter().map(|r| r.account.len()).max().unwrap_or(0);
    for r in &rows {
        let name = &r.account;
        let line = if r.source == "token_command" {
            "tokens from token_command (not managed by Postern)".to_owned()
        } else {
            match (&r.state, r.consented) {
                (Some(st), _) if st.needs_consent => {
                    let mut l = format!("NEEDS CONSENT: run `postern auth {name}`");
                    if let (Some(e), Some(at)) = (&st.last_error, st.last_error_at) {
                        let _ = write!(
                            l,
                            "; last refresh error {} ({}): {e}",
                            rfc3339(at),
                            relative(at, now)
                        );
                    }
                    l
                }
                (_, false) => format!("no consent yet: run `postern auth {name}`"),
                (None, true) if r.app_only => {
                    "client_credentials: no consent needed; no token yet".to_owned()
                }
                (None, true) => "consent saved; no state yet (`postern run` writes it)".to_owned(),
                (Some(st), true) => {
                    let mut l = match st.valid_until {
                        Some(v) if v > now => format!(
                            "ok: access token valid until {} ({})",
                            rfc3339(v),
                            relative(v, now)
                        ),
                        Some(v) => format!(
                            "ok: access token expired {} ({}); renewed at the next login",
                            rfc3339(v),
                            relative(v, now)
                        ),
                        None => "ok: no access token yet; fetched at the next login".to_owned(),
                    };
                    if let Some(t) = st.last_refresh {
                        let _ = write!(l, "; last refresh {}", rfc3339(t));
                    }
                    if let (Some(e), Some(at)) = (&st.last_error, st.last_error_at) {
                        let _ = write!(
                            l,
                            "; last refresh error {} ({}): {e}",
                            rfc3339(at),
                            relative(at, now)
                        );
                    }
                    l
                }
            }
        };
        let _ = writeln!(out, "  {name:<width$}  {line}");
    }
    out
}

/// The OAuth part of `postern status --json`: one object per OAuth account.
pub fn status_json(config: &Config) -> serde_json::Value {
    let now = store::unix_now();
    let rows: Vec<serde_json::Value> = status_rows(config)
        .into_iter()
        .map(|r| {
            let st = r.state.unwrap_or_default();
            let t = |v: Option<u64>| v.map(rfc3339);
            json!({
                "account": r.account,
                "source": r.source,
                "consented": r.consented,
                "app_only": r.app_only,
                "needs_consent": r.source == "built-in" && (st.needs_consent || !r.consented),
                "valid_until": t(st.valid_until),
                "valid": st.valid_until.is_some_and(|v| v > now),
                "last_refresh": t(st.last_refresh),
                "last_error": st.last_error,
                "last_error_at": t(st.last_error_at),
                "state_updated_at": (st.updated_at > 0).then(|| rfc3339(st.updated_at)),
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn account(toml: &str) -> Account {
        let text = format!("[smtp]\nlisten = \"127.0.0.1:2525\"\n[accounts.a]\n{toml}\n");
        let c = Config::from_str(&text, Path::new("/tmp/x/postern.toml")).unwrap();
        c.accounts["a"].clone()
    }

    #[test]
    fn presets_and_overrides() {
        let g = OAuthSettings::resolve(&account(
            "provider = \"gmail\"\nemail = \"a@gmail.com\"\noauth = { client_id = \"cid\" }",
        ))
        .unwrap();
        assert_eq!(g.token_url, "https://oauth2.googleapis.com/token");
        assert_eq!(g.scopes, ["https://mail.google.com/"]);
        assert!(g
            .auth_params
            .contains(&("access_type".into(), "offline".into())));
        assert_eq!(g.client_secret, None, "public client by default");
        assert_eq!(g.refresh_margin, DEFAULT_REFRESH_MARGIN);

        let m = OAuthSettings::resolve(&account(
            "provider = \"office365\"\nemail = \"a@contoso.com\"\noauth = { client_id = \"cid\", client_secret_env = \"S\", refresh_margin = \"2m\" }",
        ))
        .unwrap();
        assert_eq!(
            m.auth_url.as_deref(),
            Some("https://login.microsoftonline.com/common/oauth2/v2.0/authorize")
        );
        assert!(m.scopes.iter().any(|s| s == "offline_access"));
        assert!(m.scopes.iter().any(|s| s.ends_with("SMTP.Send")));
        assert_eq!(m.client_secret, Some(ClientSecretSource::Env("S".into())));
        assert_eq!(m.refresh_margin, Duration::from_secs(120));
        assert_eq!(m.redirect_host, "localhost");

        let app = OAuthSettings::resolve(&account(
            "provider = \"office365\"\nemail = \"a@contoso.com\"\noauth = { client_id = \"cid\", client_secret_env = \"S\", tenant = \"contoso.onmicrosoft.com\", grant = \"client_credentials\" }",
        ))
        .unwrap();
        assert_eq!(
            app.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(app.scopes, ["https://outlook.office365.com/.default"]);

        let custom = OAuthSettings::resolve(&account(
            "email = \"a@x.test\"\nsmtp = { host = \"127.0.0.1\", port = 25, tls = \"none\" }\noauth = { client_id = \"cid\", token_url = \"http://127.0.0.1:9/t\", auth_url = \"http://127.0.0.1:9/a\", scopes = [\"s1\"] }",
        ))
        .unwrap();
        assert_eq!(custom.token_url, "http://127.0.0.1:9/t");
        assert_eq!(custom.scopes, ["s1"]);
        assert_eq!(custom.device_url, None);
        for p in [OAuthProvider::Yahoo, OAuthProvider::Aol] {
            let y = provider_oauth(p, "common");
            assert!(y.token_url.starts_with("https://") && y.device_url.is_none());
        }
    }

    #[test]
    fn config_checks() {
        let err = |toml: &str| {
            let text = format!("[smtp]\nlisten = \"127.0.0.1:2525\"\n[accounts.a]\n{toml}\n");
            Config::from_str(&text, Path::new("/tmp/x/postern.toml"))
                .unwrap_err()
                .to_string()
        };
        let custom =
            "email = \"a@x.test\"\nsmtp = { host = \"127.0.0.1\", port = 25, tls = \"none\" }\n";
        let e = err(&format!("{custom}oauth = {{ client_id = \"c\" }}"));
        assert!(e.contains("oauth.token_url"), "{e}");
        let e = err(&format!(
            "{custom}oauth = {{ client_id = \"c\", token_url = \"http://example.com/t\", auth_url = \"https://x/a\" }}"
        ));
        assert!(e.contains("https://"), "{e}");
        let e = err(&format!(
            "{custom}oauth = {{ client_id = \"c\", token_url = \"https://x/t\" }}"
        ));
        assert!(e.contains("oauth.auth_url"), "{e}");
        let e = err("provider = \"gmail\"\nemail = \"a@gmail.com\"\noauth = { client_id = \"c\", grant = \"device\" }");
        assert!(e.contains("--no-browser"), "{e}");
        let e = err("provider = \"yahoo\"\nemail = \"a@yahoo.com\"\nauth = \"oauth2\"\noauth = { client_id = \"c\", grant = \"device\" }");
        assert!(e.contains("no device flow"), "{e}");
        let e = err("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", grant = \"client_credentials\", client_secret_env = \"S\" }");
        assert!(e.contains("tenant"), "{e}");
        let e = err("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", grant = \"client_credentials\", tenant = \"t1\" }");
        assert!(e.contains("client_secret_env"), "{e}");
        let e = err("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", client_secret_env = \"S\", client_secret_file = \"f\" }");
        assert!(e.contains("not both"), "{e}");
        let e = err("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", tenant = \"a/b\" }");
        assert!(e.contains("tenant"), "{e}");
        // A relative client_secret_file is relative to the config file.
        let a = account("provider = \"office365\"\nemail = \"a@c.com\"\noauth = { client_id = \"c\", client_secret_file = \"s.txt\" }");
        assert_eq!(
            OAuthSettings::resolve(&a).unwrap().client_secret,
            Some(ClientSecretSource::File(PathBuf::from("/tmp/x/s.txt")))
        );
    }

    #[test]
    fn cached_token_margin() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = Cached {
            token: Secret::new("x"),
            issued_at: t0,
            expires_at: t0 + Duration::from_secs(3600),
            generation: 1,
            from_endpoint: true,
        };
        let m = DEFAULT_REFRESH_MARGIN;
        assert!(c.usable(t0 + Duration::from_secs(3600 - 301), m));
        assert!(!c.usable(t0 + Duration::from_secs(3600 - 299), m));
        assert!(c.unexpired(t0 + Duration::from_secs(3600 - 10)));
        assert!(!c.unexpired(t0 + Duration::from_secs(3600)));
        // A 10 s token with a 5 min margin is still used for its first 5 s.
        let short = Cached {
            expires_at: t0 + Duration::from_secs(10),
            ..c
        };
        assert!(short.usable(t0 + Duration::from_secs(4), m));
        assert!(!short.usable(t0 + Duration::from_secs(6), m));
    }

    #[test]
    fn redirect_answers() {
        let pairs = |q: &'static str| oauth2::url::form_urlencoded::parse(q.as_bytes());
        assert_eq!(
            redirect_outcome(pairs("code=abc&state=s1"), "s1", "a").unwrap(),
            "abc"
        );
        let e = redirect_outcome(pairs("code=abc&state=s2"), "s1", "a").unwrap_err();
        assert!(e.to_string().contains("state does not match"), "{e}");
        let e = redirect_outcome(
            pairs("error=access_denied&error_description=User+said+no&state=s1"),
            "s1",
            "a",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("access_denied (User said no)"),
            "{e}"
        );
        assert!(redirect_outcome(pairs("state=s1"), "s1", "a").is_err());

        let p = |l| parse_pasted(l, "s1", "a");
        assert_eq!(
            p("http://127.0.0.1:4567/?code=4%2F0Ab&state=s1&scope=x")
                .unwrap()
                .unwrap(),
            "4/0Ab"
        );
        assert_eq!(p("  code=zz&state=s1 ").unwrap().unwrap(), "zz");
        assert_eq!(p("bare-code").unwrap().unwrap(), "bare-code");
        assert!(p("").is_none());
        assert!(p("http://127.0.0.1:4567/?code=zz&state=other")
            .unwrap()
            .is_err());
    }

    #[test]
    fn error_classes() {
        use oauth2::basic::BasicErrorResponseType as T;
        let server = |t: T| {
            classify(RequestTokenError::<HttpError, _>::ServerResponse(
                StandardErrorResponse::new(t, Some("why\nnot".into()), None),
            ))
        };
        assert_eq!(
            server(T::InvalidGrant),
            Failure::Consent("invalid_grant (why not)".into())
        );
        assert!(
            matches!(server(T::InvalidClient), Failure::Rejected(m) if m.contains("client_id"))
        );
        assert!(matches!(
            server(T::Extension("temporarily_unavailable".into())),
            Failure::Transient(_)
        ));
        assert_eq!(
            classify::<oauth2::basic::BasicErrorResponseType>(RequestTokenError::Request(
                HttpError::Status(503)
            )),
            Failure::Transient("the token endpoint answered HTTP 503".into())
        );
    }
}
