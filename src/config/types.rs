//! The validated configuration: what the rest of Postern reads, checked
//! once at load (DESIGN.md's configuration contract).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::providers::{self, TlsMode, Window};

/// A configuration problem, with the file and the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub file: PathBuf,
    pub data_dir: PathBuf,
    pub log_level: Option<String>,
    /// Name this server gives itself in greetings.
    pub hostname: String,
    /// The listeners; at least one of the three is set.
    pub smtp: Option<Listener>,
    pub imap: Option<Listener>,
    pub pop3: Option<Listener>,
    /// `[http]`: the sandbox UI and API.
    pub http: Option<HttpConfig>,
    pub sandbox: SandboxConfig,
    /// `[[faults]]`, checked.
    pub faults: Vec<crate::sandbox::faults::FaultSpec>,
    pub tls: Option<TlsFiles>,
    pub users: BTreeMap<String, User>,
    pub accounts: BTreeMap<String, Account>,
    pub pools: BTreeMap<String, Pool>,
    pub limits: Limits,
    pub quota_store: Option<String>,
    pub trace_header: bool,
    /// Key for the OAuth token store (64 hex characters in a file).
    pub key_file: Option<PathBuf>,
    pub queue: QueueConfig,
    /// `[events]`: who is told when an account needs a person.
    pub events: EventsConfig,
}

/// Every kind of event `[events]` can be told (see `crate::events`).
pub const EVENT_KINDS: &[&str] = &[
    "consent_needed",
    "refresh_failed",
    "refresh_token_expiring",
    "parked",
    "unparked",
    "quota_reached",
    "bounced",
    "expired",
];

/// `[events]`: a command and/or a webhook that receive each event as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsConfig {
    /// Run with `sh -c`, the event's JSON on its standard input.
    pub command: Option<String>,
    /// POSTed the event's JSON (http:// or https://).
    pub webhook: Option<String>,
    /// How long the command or the webhook may take (default 30 s).
    pub timeout: Duration,
    /// Only these kinds (default: all).
    pub kinds: Option<Vec<String>>,
}

/// One listener section: its addresses, each with its TLS mode.
#[derive(Debug, Clone)]
pub struct Listener {
    pub binds: Vec<Bind>,
    /// SMTP only: clients that may send without AUTH.
    pub anonymous: Option<Anonymous>,
}

impl Listener {
    /// Whether any address of this listener speaks TLS.
    pub fn uses_tls(&self) -> bool {
        self.binds.iter().any(|b| b.tls != TlsMode::None)
    }
}

/// `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: Vec<SocketAddr>,
    /// Basic auth (any user name) with this password.
    pub password_hash: Option<String>,
    /// Bearer token from here.
    pub token: Option<PasswordSource>,
}

impl HttpConfig {
    pub fn needs_auth(&self) -> bool {
        self.password_hash.is_some() || self.token.is_some()
    }
}

/// `[sandbox]`.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// The POP3 server over captured mail.
    pub pop3: Vec<Bind>,
    pub retention: crate::capture::Retention,
    /// Where `release` sends when the request names no route.
    pub release_via: Option<SendVia>,
}

/// What a sandbox route does with a user's mail besides capturing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxRoute {
    /// Every recipient replaced by this one address.
    Redirect(String),
    /// Recipients matching go through send_via; the others are captured.
    Allowlist(Vec<crate::pattern::Pattern>),
}

/// An address to listen on and the TLS mode it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind {
    pub addr: SocketAddr,
    pub tls: TlsMode,
}

/// `anonymous_user` and `allow_from`: a client from one of these networks
/// that sends MAIL without AUTH is this user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anonymous {
    pub user: String,
    pub allow_from: Vec<crate::pattern::Net>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// PHC string ("$argon2id$…"), checked to parse at load.
    pub password_hash: String,
    pub send_via: Option<SendVia>,
    pub read_via: Option<String>,
    /// How this user's mail is delivered (else the pool's, else relay).
    pub delivery: Option<Delivery>,
    /// Where this user's bounces go (else `[queue] bounce`).
    pub bounce: Option<Bounce>,
    /// Envelope senders this user may use (any when empty).
    pub allowed_senders: Vec<crate::pattern::Pattern>,
    /// Recipients this user may send to (any when empty).
    pub allowed_recipients: Vec<crate::pattern::Pattern>,
    /// The sandbox inbox its captured mail goes to (its name unless set).
    pub inbox: String,
    /// `redirect` / `allowlist`: a sandbox in front of `send_via`.
    pub sandbox: Option<SandboxRoute>,
}

impl User {
    /// `send_via` as written (`ACCOUNT`, `pool:NAME`, `capture`), or "".
    pub fn route_key(&self) -> String {
        self.send_via.as_ref().map(SendVia::key).unwrap_or_default()
    }
}

/// How a message reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// In the session: the client gets the upstream's own verdict.
    Relay,
    /// In the session when it can be; what cannot go now (a transient
    /// failure, a pool out of capacity, no free connection in time) is
    /// queued and the client gets `250 … queued as ID`.
    RelayThenQueue,
    /// Always queued at the end of DATA; delivered by the workers.
    Queue,
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Delivery::Relay => "relay",
            Delivery::RelayThenQueue => "relay-then-queue",
            Delivery::Queue => "queue",
        })
    }
}

/// Where a delivery status notification for a queued message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounce {
    /// To the envelope sender (none for a null sender).
    Sender,
    /// Nowhere: the failure is only logged and kept in the queue's events.
    None,
    /// To this address.
    Address(String),
}

impl fmt::Display for Bounce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bounce::Sender => f.write_str("sender"),
            Bounce::None => f.write_str("none"),
            Bounce::Address(a) => f.write_str(a),
        }
    }
}

/// `[queue]`: the durable outbound queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// A message still undelivered this long after it arrived bounces.
    pub max_queue_age: Duration,
    /// `max_queue_size`: past either, new messages get `452 4.3.1`.
    pub max_messages: u64,
    pub max_bytes: u64,
    /// Waits after each failed attempt; the last one repeats.
    pub retry: Vec<Duration>,
    pub bounce: Bounce,
    /// Deliveries in flight at once.
    pub workers: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            // Postfix's maximal_queue_lifetime.
            max_queue_age: Duration::from_secs(5 * 86_400),
            max_messages: 100_000,
            max_bytes: 2 * 1024 * 1024 * 1024,
            retry: [60, 300, 900, 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            bounce: Bounce::Sender,
            workers: 8,
        }
    }
}

impl QueueConfig {
    /// The wait after the `attempts`th failed attempt.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) as usize - 1).min(self.retry.len().saturating_sub(1));
        self.retry
            .get(i)
            .copied()
            .unwrap_or(Duration::from_secs(3600))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendVia {
    Capture,
    Account(String),
    Pool(String),
}

impl SendVia {
    /// As written in `send_via` (`capture`, `ACCOUNT`, `pool:NAME`): how the
    /// queue names a message's route.
    pub fn key(&self) -> String {
        match self {
            SendVia::Capture => "capture".into(),
            SendVia::Account(a) => a.clone(),
            SendVia::Pool(p) => format!("pool:{p}"),
        }
    }

    /// The inverse of [`SendVia::key`] (no check that the account or pool exists).
    pub fn from_key(key: &str) -> SendVia {
        match key {
            "capture" => SendVia::Capture,
            k => match k.strip_prefix("pool:") {
                Some(p) => SendVia::Pool(p.to_owned()),
                None => SendVia::Account(k.to_owned()),
            },
        }
    }
}

impl fmt::Display for SendVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendVia::Capture => f.write_str("capture"),
            SendVia::Account(a) => write!(f, "account {a}"),
            SendVia::Pool(p) => write!(f, "pool:{p}"),
        }
    }
}

/// A server Postern connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.host, self.port, self.tls)
    }
}

impl From<providers::Server> for Endpoint {
    fn from(s: providers::Server) -> Self {
        Endpoint {
            host: s.host.to_owned(),
            port: s.port,
            tls: s.tls,
        }
    }
}

/// One protocol of an account: where to connect and which login name to use.
#[derive(Debug, Clone)]
pub struct Service {
    pub endpoint: Endpoint,
    /// Another port/TLS mode the provider offers (from the preset), for `doctor`.
    pub alternate: Option<Endpoint>,
    pub username: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Oauth2,
    Password,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    AuthorizationCode,
    Device,
    ClientCredentials,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub tenant: Option<String>,
    pub grant: Option<Grant>,
    #[serde(default, with = "opt_duration")]
    pub refresh_margin: Option<Duration>,
    /// How long a consent lasts at this provider, when it is known to end:
    /// Google issues refresh tokens "expiring in 7 days" to apps whose
    /// consent screen is External with publishing status "Testing"
    /// (https://developers.google.com/identity/protocols/oauth2#expiration).
    /// Postern then sends `refresh_token_expiring` before the end.
    #[serde(default, with = "opt_duration")]
    pub refresh_token_lifetime: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub start: u32,
    pub step: u32,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    /// `enabled = false`: kept in the file but not used (its secrets are
    /// not needed, pools skip it, users cannot send or read through it).
    pub enabled: bool,
    pub provider: Option<&'static providers::Preset>,
    pub email: String,
    pub smtp: Option<Service>,
    pub imap: Option<Service>,
    pub pop3: Option<Service>,
    pub ca_file: Option<PathBuf>,
    /// `tls_pin = "sha256:…"`: the one server certificate accepted as is.
    pub tls_pin: Option<[u8; 32]>,
    pub auth: AuthMethod,
    pub token_command: Option<String>,
    pub oauth: Option<OAuthConfig>,
    pub password: Option<PasswordSource>,
    pub daily_limit: Option<u32>,
    pub window: Window,
    /// The length of a rolling window (24 hours unless `window_length`).
    pub window_length: Duration,
    pub time_zone: Option<String>,
    pub min_interval: Option<Duration>,
    pub jitter: Option<Duration>,
    pub ramp: Option<Ramp>,
    /// Upstream SMTP connections open at most (preset's, else 4).
    pub max_connections: usize,
    /// Messages per minute at most (preset's for Microsoft).
    pub max_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    RoundRobin,
    LeastUsed,
    Weighted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FromPolicy {
    Rewrite,
    RequireMatch,
    Keep,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub accounts: Vec<String>,
    pub strategy: Strategy,
    pub weights: BTreeMap<String, u32>,
    pub from_policy: FromPolicy,
    pub delivery: Option<Delivery>,
}

/// Abuse limits (`[limits]`), with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    /// How long a client may stay silent, and how long one command line (or
    /// pre-login IMAP command) may take from its first byte to its line end.
    pub idle_timeout: Duration,
    pub imap_idle_timeout: Duration,
    /// The whole of one SMTP DATA phase, from the 354 to the final dot.
    pub data_timeout: Duration,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_bad_commands: u32,
    pub auth_failure_delay: Duration,
    pub auth_backoff_max: Duration,
    pub shutdown_timeout: Duration,
    /// Connect, greeting and per-command timeout towards upstream servers.
    pub upstream_timeout: Duration,
    /// How long the upstream may take to answer the end of a message (its
    /// final reply after DATA or BDAT LAST).
    pub upstream_data_timeout: Duration,
    /// How long an idle authenticated upstream connection is kept for reuse.
    pub upstream_keepalive: Duration,
    /// Authenticated upstream connections kept warm per account.
    pub upstream_pool: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 500,
            idle_timeout: Duration::from_secs(300),
            imap_idle_timeout: Duration::from_secs(31 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_bad_commands: 20,
            auth_failure_delay: Duration::from_secs(1),
            auth_backoff_max: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            upstream_timeout: Duration::from_secs(30),
            // RFC 5321 4.5.3.2.6: a client waits 10 minutes for the reply to
            // the final dot.
            upstream_data_timeout: Duration::from_secs(10 * 60),
            upstream_keepalive: Duration::from_secs(60),
            upstream_pool: 16,
        }
    }
}

/// Durations are written as humantime strings: "90s", "5m", "1h 30m".
pub(super) mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            humantime::parse_duration(&s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a duration ({e}); write e.g. \"90s\", \"5m\" or \"1h\""
                ))
            })
        })
        .transpose()
    }
}
