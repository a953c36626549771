//! The token manager behind the built-in OAuth2 token source: each account's
//! access token in memory, refreshed ahead of expiry with one request in
//! flight per account however many sessions ask, a rotated refresh token
//! saved before the new access token is used, transient endpoint failures
//! retried with back-off, `invalid_grant` turned into "needs consent".

use crate::auth::oauth::http::classify;
use crate::auth::oauth::http::fingerprint;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use oauth2::{RefreshToken, Scope};
use tracing::{debug, info, warn};

use super::http::{Failure, Http, Issued};
use super::settings::{uses_builtin, OAuthError, OAuthSettings};
use crate::auth::store::{self, from_unix, to_unix, AccountState, StoredToken, TokenStore};
use crate::auth::token::{BearerSource, TokenFuture, TokenSource};
use crate::auth::token::{Token, TokenError};
use crate::config::{Account, Config, Grant};
use crate::secret::Secret;

/// Token requests per refresh when the endpoint fails transiently.
const ATTEMPTS: usize = 3;
/// Pauses between those attempts.
const RETRY_DELAYS: [Duration; ATTEMPTS - 1] = [Duration::from_millis(300), Duration::from_secs(1)];
/// After a failed refresh, logins fail at once (or use the still-valid
/// token) for this long, doubling up to `BACKOFF_MAX`, so a broken endpoint
/// is not hammered by every login.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

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

/// `refresh_token_expiring`, when the account's consent has a known end
/// (`refresh_token_lifetime`) and it is near: within a seventh of the
/// lifetime (a day of Google's 7), at least a minute, at most two days.
/// Told once a day per consent until a new consent is saved.
fn consent_expiry(s: &OAuthSettings, consented_at: u64) {
    let Some(life) = s.refresh_token_lifetime else {
        return;
    };
    let warn = (life / 7).clamp(Duration::from_secs(60), Duration::from_secs(2 * 86_400));
    let ends = consented_at.saturating_add(life.as_secs());
    let now = to_unix(SystemTime::now());
    if now.saturating_add(warn.as_secs()) < ends {
        return;
    }
    let at = |t: u64| {
        jiff::Timestamp::from_second(i64::try_from(t).unwrap_or(i64::MAX))
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    crate::events::emit_once(
        "refresh_token_expiring",
        &format!("{}/{consented_at}", s.account),
        Duration::from_secs(86_400),
        serde_json::json!({
            "account": s.account,
            "consented_at": at(consented_at),
            "expires_at": at(ends),
            "command": format!("postern auth {}", s.account),
        }),
    );
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

fn builtin_accounts(config: &Config) -> Vec<&Account> {
    config
        .accounts
        .values()
        .filter(|a| a.enabled && uses_builtin(a))
        .collect()
}

impl TokenManager {
    /// Whether `config` has exactly the built-in OAuth accounts, with the
    /// same settings, that this manager serves: a reload keeps the manager
    /// (its cached tokens and its one refresh in flight per account) then.
    pub fn serves(&self, config: &Config) -> bool {
        let builtin = builtin_accounts(config);
        self.data_dir == config.data_dir
            && builtin.len() == self.accounts.len()
            && builtin.iter().all(|a| {
                let (Some(e), Ok(s)) = (self.accounts.get(&a.name), OAuthSettings::resolve(a))
                else {
                    return false;
                };
                format!("{s:?}") == format!("{:?}", e.settings)
            })
    }

    /// The manager for the config's built-in OAuth accounts; None when no
    /// account uses built-in OAuth (then no key or store is touched).
    /// Opens the store (making its key on first use) and reads every
    /// account's saved tokens, so a wrong key stops the start at once.
    pub fn from_config(config: &Config) -> Result<Option<Arc<TokenManager>>, OAuthError> {
        let builtin = builtin_accounts(config);
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
    pub fn source(self: &Arc<Self>, account: &str) -> Option<TokenSource> {
        self.accounts
            .contains_key(account)
            .then(|| TokenSource::new(Arc::new(OAuthSource::new(self.clone(), account))))
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
                    consent_expiry(s, t.consented_at);
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
        crate::metrics::METRICS.refresh(&account, outcome.is_ok());
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
                crate::events::clear("refresh_failed", &account);
                crate::events::clear("consent_needed", &account);
                consent_expiry(s, record.consented_at);
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
        // Told once per failing spell (until a refresh works again), at
        // most every 10 minutes. The saved tokens are kept: a temporary
        // failure never costs the consent.
        crate::events::emit_once(
            "refresh_failed",
            &e.settings.account,
            Duration::from_secs(600),
            serde_json::json!({
                "account": e.settings.account,
                "temporary": matches!(err, TokenError::Unavailable { .. }),
                "error": crate::text::sanitize(&err.to_string(), 300),
                "retry_in_s": f.backoff.as_secs(),
                "tokens_kept": true,
            }),
        );
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
        crate::events::emit_once(
            "consent_needed",
            &account,
            Duration::from_secs(3600),
            serde_json::json!({
                "account": account,
                "reason": why.as_deref().map(|w| crate::text::sanitize(w, 300)),
                "command": format!("postern auth {account}"),
            }),
        );
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

/// The built-in OAuth2 token source: one account of a shared manager.
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
}

impl BearerSource for OAuthSource {
    fn token(&self) -> TokenFuture<'_, Result<Token, TokenError>> {
        Box::pin(self.manager.token(&self.account))
    }

    fn invalidate<'a>(&'a self, rejected: &'a Secret) -> TokenFuture<'a, ()> {
        Box::pin(self.manager.invalidate(&self.account, rejected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::oauth::settings::DEFAULT_REFRESH_MARGIN;

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
}
