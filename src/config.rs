//! TOML → validated [`Config`].
//!
//! Owns the configuration contract of DESIGN.md: names, defaults and every
//! check that can be made without a socket. Errors name the file, the key and
//! what is wrong. Reads the config file and nothing else (secrets named by
//! `password_env` / `password_file` are read later, when they are used).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::providers::{self, TlsMode, UserForm, Window};

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

// ---------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub file: PathBuf,
    pub data_dir: PathBuf,
    pub log_level: Option<String>,
    /// Name this server gives itself in greetings.
    pub hostname: String,
    pub smtp: Listener,
    pub imap: Option<Listener>,
    pub tls: Option<TlsFiles>,
    pub users: BTreeMap<String, User>,
    pub accounts: BTreeMap<String, Account>,
    pub pools: BTreeMap<String, Pool>,
    pub limits: Limits,
    pub quota_store: Option<String>,
    pub trace_header: bool,
    /// Key for the OAuth token store (64 hex characters in a file).
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub listen: Vec<SocketAddr>,
    pub tls: TlsMode,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendVia {
    Capture,
    Account(String),
    Pool(String),
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
    pub ca_file: Option<PathBuf>,
    pub auth: AuthMethod,
    pub token_command: Option<String>,
    pub oauth: Option<OAuthConfig>,
    pub password: Option<PasswordSource>,
    pub daily_limit: Option<u32>,
    pub window: Window,
    pub time_zone: Option<String>,
    pub min_interval: Option<Duration>,
    pub jitter: Option<Duration>,
    pub ramp: Option<Ramp>,
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

// ---------------------------------------------------------------------------
// Raw (as written) configuration
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    hostname: Option<String>,
    smtp: Option<RawListener>,
    imap: Option<RawListener>,
    tls: Option<RawTls>,
    #[serde(default)]
    users: BTreeMap<String, RawUser>,
    #[serde(default)]
    accounts: BTreeMap<String, RawAccount>,
    #[serde(default)]
    pools: BTreeMap<String, RawPool>,
    limits: Option<RawLimits>,
    quota_store: Option<String>,
    #[serde(default)]
    trace_header: bool,
    key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    listen: OneOrMany,
    #[serde(default = "tls_none")]
    tls: TlsMode,
}

fn tls_none() -> TlsMode {
    TlsMode::None
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    password_hash: String,
    send_via: Option<String>,
    read_via: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    host: String,
    port: u16,
    tls: TlsMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    enabled: Option<bool>,
    provider: Option<String>,
    email: String,
    username: Option<String>,
    smtp: Option<RawEndpoint>,
    imap: Option<RawEndpoint>,
    ca_file: Option<PathBuf>,
    auth: Option<AuthMethod>,
    token_command: Option<String>,
    oauth: Option<OAuthConfig>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    daily_limit: Option<u32>,
    window: Option<Window>,
    time_zone: Option<String>,
    #[serde(default, with = "opt_duration")]
    min_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    jitter: Option<Duration>,
    ramp: Option<Ramp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    accounts: Vec<String>,
    strategy: Option<Strategy>,
    #[serde(default)]
    weights: BTreeMap<String, u32>,
    from_policy: Option<FromPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    #[serde(default, with = "opt_duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    imap_idle_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    data_timeout: Option<Duration>,
    max_message_size: Option<usize>,
    max_recipients: Option<usize>,
    max_bad_commands: Option<u32>,
    #[serde(default, with = "opt_duration")]
    auth_failure_delay: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    auth_backoff_max: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    shutdown_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    upstream_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    upstream_data_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    upstream_keepalive: Option<Duration>,
    upstream_pool: Option<usize>,
}

/// Durations are written as humantime strings: "90s", "5m", "1h 30m".
mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
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

// ---------------------------------------------------------------------------
// Loading and checking
// ---------------------------------------------------------------------------

struct Checker<'a> {
    file: &'a Path,
    base: &'a Path,
}

impl Checker<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Relative paths are relative to the config file's folder.
    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }
}

impl Config {
    /// Read and check a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Config::from_str(&text, file)
    }

    /// Check config text as if it had been read from `file`.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let c = Checker { file, base: &base };
        let data_dir = c.path(raw.data_dir.as_deref().unwrap_or(Path::new("var")));

        let smtp = match raw.smtp {
            Some(l) => check_listener(&c, "smtp", l)?,
            None => {
                return Err(c.err(
                    "smtp",
                    "missing: add [smtp] with listen = \"127.0.0.1:2525\"",
                ))
            }
        };
        let imap = raw
            .imap
            .map(|l| check_listener(&c, "imap", l))
            .transpose()?;
        let tls = raw.tls.map(|t| TlsFiles {
            cert: c.path(&t.cert),
            key: c.path(&t.key),
        });

        let mut accounts = BTreeMap::new();
        for (name, a) in raw.accounts {
            check_name(&c, "accounts", &name)?;
            let acct = check_account(&c, &name, a)?;
            accounts.insert(name, acct);
        }

        let mut pools = BTreeMap::new();
        for (name, p) in raw.pools {
            check_name(&c, "pools", &name)?;
            let key = format!("pools.{name}");
            if p.accounts.is_empty() {
                return Err(c.err(
                    format!("{key}.accounts"),
                    "a pool needs at least one account",
                ));
            }
            for (i, a) in p.accounts.iter().enumerate() {
                let acct = accounts.get(a).ok_or_else(|| {
                    c.err(
                        format!("{key}.accounts"),
                        format!("unknown account \"{a}\"{}", known(accounts.keys())),
                    )
                })?;
                if acct.smtp.is_none() {
                    return Err(c.err(
                        format!("{key}.accounts"),
                        format!("account \"{a}\" has no SMTP server"),
                    ));
                }
                if p.accounts[..i].contains(a) {
                    return Err(c.err(
                        format!("{key}.accounts"),
                        format!("account \"{a}\" is listed twice"),
                    ));
                }
            }
            let strategy = p.strategy.unwrap_or(Strategy::RoundRobin);
            for (w, n) in &p.weights {
                if !p.accounts.contains(w) {
                    return Err(c.err(
                        format!("{key}.weights.{w}"),
                        "not one of the pool's accounts",
                    ));
                }
                if *n == 0 {
                    return Err(c.err(format!("{key}.weights.{w}"), "a weight must be at least 1"));
                }
            }
            if strategy != Strategy::Weighted && !p.weights.is_empty() {
                return Err(c.err(
                    format!("{key}.weights"),
                    "weights need strategy = \"weighted\"",
                ));
            }
            pools.insert(
                name.clone(),
                Pool {
                    name,
                    accounts: p.accounts,
                    strategy,
                    weights: p.weights,
                    from_policy: p.from_policy.unwrap_or(FromPolicy::Rewrite),
                },
            );
        }

        let mut users = BTreeMap::new();
        for (name, u) in raw.users {
            let key = format!("users.{name}");
            if name.is_empty() || name.len() > 255 || name.chars().any(|ch| ch.is_control()) {
                return Err(c.err(key, "a user name must be 1–255 printable characters"));
            }
            if let Err(e) = argon2::PasswordHash::new(&u.password_hash) {
                return Err(c.err(
                    format!("{key}.password_hash"),
                    format!("not a password hash ({e}); make one with `postern hash-password`"),
                ));
            }
            let send_via = u
                .send_via
                .map(|s| -> Result<SendVia, ConfigError> {
                    if s == "capture" {
                        Ok(SendVia::Capture)
                    } else if let Some(p) = s.strip_prefix("pool:") {
                        if pools.contains_key(p) {
                            Ok(SendVia::Pool(p.to_owned()))
                        } else {
                            Err(c.err(
                                format!("{key}.send_via"),
                                format!("unknown pool \"{p}\"{}", known(pools.keys())),
                            ))
                        }
                    } else {
                        match accounts.get(&s) {
                            Some(a) if a.smtp.is_some() => Ok(SendVia::Account(s)),
                            Some(_) => Err(c.err(
                                format!("{key}.send_via"),
                                format!("account \"{s}\" has no SMTP server"),
                            )),
                            None => Err(c.err(
                                format!("{key}.send_via"),
                                format!(
                                    "\"{s}\" is not \"capture\", \"pool:NAME\" or an account{}",
                                    known(accounts.keys())
                                ),
                            )),
                        }
                    }
                })
                .transpose()?;
            if let Some(r) = &u.read_via {
                match accounts.get(r) {
                    Some(a) if a.imap.is_some() => {}
                    Some(_) => {
                        return Err(c.err(
                            format!("{key}.read_via"),
                            format!("account \"{r}\" has no IMAP server"),
                        ))
                    }
                    None => {
                        return Err(c.err(
                            format!("{key}.read_via"),
                            format!("unknown account \"{r}\"{}", known(accounts.keys())),
                        ))
                    }
                }
            }
            users.insert(
                name.clone(),
                User {
                    name,
                    password_hash: u.password_hash,
                    send_via,
                    read_via: u.read_via,
                },
            );
        }

        let mut limits = Limits::default();
        if let Some(l) = raw.limits {
            let d = &mut limits;
            if let Some(v) = l.max_connections {
                if v == 0 {
                    return Err(c.err("limits.max_connections", "must be at least 1"));
                }
                d.max_connections = v;
            }
            if let Some(v) = l.idle_timeout {
                d.idle_timeout = v;
            }
            if let Some(v) = l.imap_idle_timeout {
                if v < Duration::from_secs(31 * 60) {
                    return Err(c.err(
                        "limits.imap_idle_timeout",
                        "must be at least 31m: RFC 9051 lets an IDLE client stay silent for 29 minutes",
                    ));
                }
                d.imap_idle_timeout = v;
            }
            if let Some(v) = l.data_timeout {
                if v.is_zero() {
                    return Err(c.err("limits.data_timeout", "must be more than 0"));
                }
                d.data_timeout = v;
            }
            if let Some(v) = l.max_message_size {
                if v < 1024 {
                    return Err(c.err("limits.max_message_size", "must be at least 1024 bytes"));
                }
                d.max_message_size = v;
            }
            if let Some(v) = l.max_recipients {
                if v == 0 {
                    return Err(c.err("limits.max_recipients", "must be at least 1"));
                }
                d.max_recipients = v;
            }
            if let Some(v) = l.max_bad_commands {
                d.max_bad_commands = v;
            }
            if let Some(v) = l.auth_failure_delay {
                d.auth_failure_delay = v;
            }
            if let Some(v) = l.auth_backoff_max {
                d.auth_backoff_max = v;
            }
            if let Some(v) = l.shutdown_timeout {
                d.shutdown_timeout = v;
            }
            if let Some(v) = l.upstream_timeout {
                if v.is_zero() {
                    return Err(c.err("limits.upstream_timeout", "must be more than 0"));
                }
                d.upstream_timeout = v;
            }
            if let Some(v) = l.upstream_data_timeout {
                if v.is_zero() {
                    return Err(c.err("limits.upstream_data_timeout", "must be more than 0"));
                }
                d.upstream_data_timeout = v;
            }
            if let Some(v) = l.upstream_pool {
                d.upstream_pool = v;
            }
            if let Some(v) = l.upstream_keepalive {
                d.upstream_keepalive = v;
            }
            if d.idle_timeout.is_zero() {
                return Err(c.err("limits.idle_timeout", "must be more than 0"));
            }
        }

        if let Some(q) = &raw.quota_store {
            if !q.starts_with("redis://") {
                return Err(c.err(
                    "quota_store",
                    "must be a redis://host:port URL (TLS to Redis is not supported; leave quota_store out for the embedded SQLite store)",
                ));
            }
        }

        if let Some(level) = &raw.log_level {
            if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                return Err(c.err(
                    "log_level",
                    format!(
                        "\"{level}\" is not a level or filter (trace, debug, info, warn, error)"
                    ),
                ));
            }
        }

        Ok(Config {
            file: file.to_owned(),
            data_dir,
            log_level: raw.log_level,
            hostname: raw.hostname.unwrap_or_else(|| "localhost".to_owned()),
            smtp,
            imap,
            tls,
            users,
            accounts,
            pools,
            limits,
            quota_store: raw.quota_store,
            trace_header: raw.trace_header,
            key_file: raw.key_file.map(|p| c.path(&p)),
        })
    }

    /// The human-readable resolved setup printed by `postern check-config`.
    /// Never contains a secret: only where secrets come from.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        use std::fmt::Write;
        let _ = writeln!(w, "config:    {}", self.file.display());
        let _ = writeln!(w, "data_dir:  {}", self.data_dir.display());
        let listener = |w: &mut String, name: &str, l: &Listener| {
            for a in &l.listen {
                let auth = if a.ip().is_loopback() || l.tls == TlsMode::Implicit {
                    "AUTH allowed"
                } else {
                    "AUTH after STARTTLS"
                };
                let _ = writeln!(w, "{name:<10} {a} tls={} ({auth})", l.tls);
            }
        };
        let _ = writeln!(w, "\nlisteners:");
        listener(w, "  smtp", &self.smtp);
        match &self.imap {
            Some(l) => listener(w, "  imap", l),
            None => {
                let _ = writeln!(w, "  imap      (off)");
            }
        }
        match &self.tls {
            Some(t) => {
                let _ = writeln!(
                    w,
                    "  tls cert  {} key {}",
                    t.cert.display(),
                    t.key.display()
                );
            }
            None => {
                let _ = writeln!(
                    w,
                    "  tls cert  self-signed, kept in {}",
                    self.data_dir.join("tls").display()
                );
            }
        }
        let _ = writeln!(w, "\nusers:");
        for u in self.users.values() {
            let send = u
                .send_via
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "(no sending)".into());
            let read = u.read_via.as_deref().unwrap_or("(no IMAP)");
            let _ = writeln!(w, "  {:<16} send_via={send} read_via={read}", u.name);
        }
        let _ = writeln!(w, "\naccounts:");
        if self.accounts.is_empty() {
            let _ = writeln!(w, "  (none)");
        }
        for a in self.accounts.values() {
            let preset = a.provider.map(|p| p.name).unwrap_or("custom");
            let off = if a.enabled {
                ""
            } else {
                " (disabled: enabled = false)"
            };
            let _ = writeln!(w, "  {} <{}> preset={preset}{off}", a.name, a.email);
            for (proto, svc) in [("smtp", &a.smtp), ("imap", &a.imap)] {
                if let Some(svc) = svc {
                    let alt = svc
                        .alternate
                        .as_ref()
                        .map(|e| format!(", alternate {e}"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        w,
                        "    {proto}  {} user {}{alt}",
                        svc.endpoint, svc.username
                    );
                }
            }
            let cred = match (a.auth, &a.token_command, &a.password) {
                (AuthMethod::Oauth2, Some(_), _) => "oauth2 via token_command".to_owned(),
                (AuthMethod::Oauth2, None, _) => {
                    let o = a.oauth.as_ref();
                    let grant = match o.and_then(|o| o.grant).unwrap_or(Grant::AuthorizationCode) {
                        Grant::AuthorizationCode => "authorization code",
                        Grant::Device => "device",
                        Grant::ClientCredentials => "client credentials",
                    };
                    let client = o.and_then(|o| o.client_id.as_deref()).unwrap_or("?");
                    let secret = match o {
                        Some(o)
                            if o.client_secret_env.is_some() || o.client_secret_file.is_some() =>
                        {
                            "confidential client"
                        }
                        _ => "public client",
                    };
                    format!("oauth2 (built-in: {grant} grant, client_id {client}, {secret}; consent with `postern auth {}`)", a.name)
                }
                (AuthMethod::Password, _, Some(PasswordSource::Env(v))) => {
                    format!("password from ${v}")
                }
                (AuthMethod::Password, _, Some(PasswordSource::File(f))) => {
                    format!("password from {}", f.display())
                }
                (AuthMethod::Password, _, None) => "password (missing source)".to_owned(),
            };
            let _ = writeln!(w, "    auth  {cred}");
            if let Some(ca) = &a.ca_file {
                let _ = writeln!(w, "    ca    {}", ca.display());
            }
            let limit = self
                .daily_limit(a)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "none".into());
            let _ = writeln!(w, "    limit {limit}/day, window {}", a.window);
        }
        if !self.pools.is_empty() {
            let _ = writeln!(w, "\npools:");
            for p in self.pools.values() {
                let _ = writeln!(
                    w,
                    "  {} strategy={:?} from_policy={:?} accounts={}",
                    p.name,
                    p.strategy,
                    p.from_policy,
                    p.accounts.join(", ")
                );
            }
        }
        let l = &self.limits;
        let _ = writeln!(
            w,
            "\nlimits: max_connections={} idle_timeout={} imap_idle_timeout={} data_timeout={} max_message_size={} max_recipients={} max_bad_commands={} auth_failure_delay={} auth_backoff_max={}",
            l.max_connections,
            humantime::format_duration(l.idle_timeout),
            humantime::format_duration(l.imap_idle_timeout),
            humantime::format_duration(l.data_timeout),
            l.max_message_size,
            l.max_recipients,
            l.max_bad_commands,
            humantime::format_duration(l.auth_failure_delay),
            humantime::format_duration(l.auth_backoff_max),
        );
        s
    }

    /// The accounts a pool sends through: its listed accounts that are
    /// enabled, in order. The pool's rotation and its route both come from
    /// this one list.
    pub fn pool_members<'a>(&'a self, pool: &'a Pool) -> impl Iterator<Item = &'a Account> + 'a {
        pool.accounts
            .iter()
            .filter_map(|a| self.accounts.get(a))
            .filter(|a| a.enabled)
    }

    /// The effective daily limit of an account: its own, else its preset's.
    pub fn daily_limit(&self, a: &Account) -> Option<u32> {
        a.daily_limit.or(a.provider.map(|p| p.daily_limit))
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" (known: {})", v.join(", "))
    }
}

fn check_name(c: &Checker, section: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(c.err(
            format!("{section}.{name}"),
            "names may use letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

fn check_listener(c: &Checker, section: &str, l: RawListener) -> Result<Listener, ConfigError> {
    let list = match l.listen {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if list.is_empty() {
        return Err(c.err(format!("{section}.listen"), "needs at least one address"));
    }
    let mut listen = Vec::new();
    for s in list {
        let addr: SocketAddr = s.parse().map_err(|_| {
            c.err(
                format!("{section}.listen"),
                format!("\"{s}\" is not an address with a port, like \"127.0.0.1:2525\" or \"[::1]:2525\""),
            )
        })?;
        if !addr.ip().is_loopback() && l.tls == TlsMode::None {
            return Err(c.err(
                format!("{section}.tls"),
                format!(
                    "{addr} is not a loopback address, so it needs tls = \"starttls\" or \"implicit\": plaintext passwords may cross only the loopback interface"
                ),
            ));
        }
        listen.push(addr);
    }
    Ok(Listener { listen, tls: l.tls })
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_account(c: &Checker, name: &str, a: RawAccount) -> Result<Account, ConfigError> {
    let key = format!("accounts.{name}");
    let email = a.email.trim().to_owned();
    match email.rsplit_once('@') {
        Some((l, d)) if !l.is_empty() && d.contains('.') || d_is_local(&email) => {}
        _ => {
            return Err(c.err(
                format!("{key}.email"),
                format!("\"{email}\" is not an email address"),
            ))
        }
    }
    let preset = match &a.provider {
        Some(p) => Some(providers::get(p).ok_or_else(|| {
            c.err(
                format!("{key}.provider"),
                format!(
                    "unknown provider \"{p}\" (known: {}; see `postern providers`)",
                    providers::names().collect::<Vec<_>>().join(", ")
                ),
            )
        })?),
        None => None,
    };
    let service = |proto: &str,
                   explicit: Option<RawEndpoint>,
                   from_preset: Option<providers::Service>|
     -> Result<Option<Service>, ConfigError> {
        let (endpoint, alternate, form) = match (explicit, from_preset) {
            (Some(e), p) => {
                if e.host.trim().is_empty() {
                    return Err(c.err(format!("{key}.{proto}.host"), "empty host"));
                }
                if e.port == 0 {
                    return Err(c.err(format!("{key}.{proto}.port"), "port 0 is not a server port"));
                }
                if e.tls == TlsMode::None && !is_loopback_host(&e.host) {
                    return Err(c.err(
                        format!("{key}.{proto}.tls"),
                        format!("tls = \"none\" is only allowed for loopback hosts; {} needs \"implicit\" or \"starttls\"", e.host),
                    ));
                }
                let ep = Endpoint {
                    host: e.host,
                    port: e.port,
                    tls: e.tls,
                };
                (ep, None, p.map(|p| p.user).unwrap_or(UserForm::FullAddress))
            }
            (None, Some(p)) => (p.primary.into(), p.alternate.map(Endpoint::from), p.user),
            (None, None) => return Ok(None),
        };
        let username = a.username.clone().unwrap_or_else(|| form.apply(&email));
        Ok(Some(Service {
            endpoint,
            alternate,
            username,
        }))
    };
    let smtp = service("smtp", a.smtp, preset.and_then(|p| p.smtp))?;
    let imap = service("imap", a.imap, preset.and_then(|p| p.imap))?;
    if smtp.is_none() && imap.is_none() {
        return Err(c.err(
            key,
            "needs provider = \"…\" (see `postern providers`) or smtp = { host, port, tls } / imap = { … }",
        ));
    }
    let auth = match a.auth {
        Some(m) => m,
        None => match preset {
            Some(p) if p.auth.first() == Some(&providers::AuthKind::Oauth2) => AuthMethod::Oauth2,
            _ if a.token_command.is_some() || a.oauth.is_some() => AuthMethod::Oauth2,
            _ => AuthMethod::Password,
        },
    };
    let password = match (a.password_env, a.password_file) {
        (Some(_), Some(_)) => {
            return Err(c.err(
                format!("{key}.password_env"),
                "give password_env or password_file, not both",
            ))
        }
        (Some(v), None) => Some(PasswordSource::Env(v)),
        (None, Some(f)) => Some(PasswordSource::File(c.path(&f))),
        (None, None) => None,
    };
    match auth {
        AuthMethod::Password => {
            if password.is_none() {
                return Err(c.err(
                    format!("{key}.auth"),
                    "auth = \"password\" needs password_env = \"VAR\" or password_file = \"path\" (an app password)",
                ));
            }
            if a.token_command.is_some() || a.oauth.is_some() {
                return Err(c.err(
                    format!("{key}.token_command"),
                    "token_command/oauth need auth = \"oauth2\"",
                ));
            }
            if let Some(p) = preset {
                if !p.auth.iter().any(|k| *k != providers::AuthKind::Oauth2) {
                    return Err(c.err(
                        format!("{key}.auth"),
                        format!("{} accepts only OAuth2; set auth = \"oauth2\"", p.display),
                    ));
                }
            }
        }
        AuthMethod::Oauth2 => {
            if password.is_some() {
                return Err(c.err(
                    format!("{key}.password_env"),
                    "a password needs auth = \"password\"",
                ));
            }
            if a.token_command.is_some() && a.oauth.is_some() {
                return Err(c.err(
                    format!("{key}.token_command"),
                    "give token_command or oauth, not both",
                ));
            }
            if let Some(cmd) = &a.token_command {
                if cmd.trim().is_empty() {
                    return Err(c.err(format!("{key}.token_command"), "empty command"));
                }
            } else {
                let has_client = a
                    .oauth
                    .as_ref()
                    .and_then(|o| o.client_id.as_ref())
                    .is_some();
                if !has_client {
                    return Err(c.err(
                        format!("{key}.auth"),
                        "auth = \"oauth2\" needs token_command = \"…\" or oauth = { client_id = \"…\" }",
                    ));
                }
                if let Some(o) = &a.oauth {
                    check_oauth(c, &key, preset.and_then(|p| p.oauth), o)?;
                }
            }
        }
    }
    if a.window == Some(Window::CalendarDay) && a.time_zone.is_none() {
        return Err(c.err(
            format!("{key}.time_zone"),
            "window = \"calendar-day\" needs time_zone, e.g. \"America/New_York\" or \"UTC\"",
        ));
    }
    if let Some(r) = a.ramp {
        if r.start == 0 {
            return Err(c.err(format!("{key}.ramp.start"), "must be at least 1"));
        }
    }
    Ok(Account {
        name: name.to_owned(),
        enabled: a.enabled.unwrap_or(true),
        provider: preset,
        email,
        smtp,
        imap,
        ca_file: a.ca_file.map(|p| c.path(&p)),
        auth,
        token_command: a.token_command,
        oauth: a.oauth.map(|mut o| {
            o.client_secret_file = o.client_secret_file.map(|f| c.path(&f));
            o
        }),
        password,
        daily_limit: a.daily_limit,
        window: a
            .window
            .unwrap_or(preset.map(|p| p.window).unwrap_or(Window::Rolling24h)),
        time_zone: a.time_zone,
        min_interval: a.min_interval,
        jitter: a.jitter,
        ramp: a.ramp,
    })
}

/// Built-in OAuth settings (`oauth = { … }`): what can be checked without
/// the network. Endpoints come from the provider preset unless given.
fn check_oauth(
    c: &Checker,
    key: &str,
    provider: Option<providers::OAuthProvider>,
    o: &OAuthConfig,
) -> Result<(), ConfigError> {
    use providers::OAuthProvider as P;
    let k = |field: &str| format!("{key}.oauth.{field}");
    if o.client_id
        .as_deref()
        .is_some_and(|id| id.trim().is_empty())
    {
        return Err(c.err(k("client_id"), "empty client_id"));
    }
    if o.client_secret_env.is_some() && o.client_secret_file.is_some() {
        return Err(c.err(
            k("client_secret_env"),
            "give client_secret_env or client_secret_file, not both",
        ));
    }
    for (field, value) in [
        ("auth_url", &o.auth_url),
        ("token_url", &o.token_url),
        ("device_url", &o.device_url),
    ] {
        let Some(v) = value else { continue };
        let ok = url::Url::parse(v).ok().is_some_and(|u| match u.scheme() {
            "https" => u.host().is_some(),
            "http" => u.host_str().is_some_and(is_loopback_host),
            _ => false,
        });
        if !ok {
            return Err(c.err(
                k(field),
                format!("\"{v}\" must be an https:// URL (http:// only on a loopback address)"),
            ));
        }
    }
    if let Some(t) = &o.tenant {
        if t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(c.err(
                k("tenant"),
                "a tenant is \"common\", \"organizations\", a tenant id or a domain like contoso.onmicrosoft.com",
            ));
        }
    }
    if let Some(s) = &o.scopes {
        if s.iter()
            .any(|x| x.trim().is_empty() || x.contains(char::is_whitespace))
        {
            return Err(c.err(k("scopes"), "each scope is one word, with no spaces"));
        }
    }
    let grant = o.grant.unwrap_or(Grant::AuthorizationCode);
    if provider.is_none() {
        let needed = match grant {
            Grant::AuthorizationCode => Some(("auth_url", &o.auth_url)),
            Grant::Device => Some(("device_url", &o.device_url)),
            Grant::ClientCredentials => None,
        };
        if o.token_url.is_none() {
            return Err(c.err(
                k("token_url"),
                "needed: this account has no provider preset with OAuth endpoints",
            ));
        }
        if let Some((field, None)) = needed {
            return Err(c.err(
                k(field),
                "needed for this grant: this account has no provider preset with OAuth endpoints",
            ));
        }
    }
    match (grant, provider) {
        (Grant::Device, Some(P::Yahoo | P::Aol)) if o.device_url.is_none() => {
            return Err(c.err(
                k("grant"),
                "this provider has no device flow; leave grant out and use `postern auth --no-browser` on a machine without a browser",
            ));
        }
        (Grant::Device, Some(P::Google)) if o.scopes.is_none() => {
            return Err(c.err(
                k("grant"),
                "Google's device flow does not allow the Gmail scope; leave grant out and use `postern auth --no-browser` on a machine without a browser",
            ));
        }
        (Grant::ClientCredentials, _) => {
            if o.client_secret_env.is_none() && o.client_secret_file.is_none() {
                return Err(c.err(
                    k("grant"),
                    "grant = \"client_credentials\" needs the app's secret: client_secret_env or client_secret_file",
                ));
            }
            match provider {
                Some(P::Microsoft) => {
                    let tenant = o.tenant.as_deref().unwrap_or("common");
                    if ["common", "organizations", "consumers"].contains(&tenant) {
                        return Err(c.err(
                            k("tenant"),
                            "grant = \"client_credentials\" needs your tenant: tenant = \"<tenant id>\" or \"contoso.onmicrosoft.com\"",
                        ));
                    }
                }
                Some(_) if o.token_url.is_none() => {
                    return Err(c.err(
                        k("grant"),
                        "this provider has no app-only (client_credentials) access to mailboxes",
                    ));
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// `user@localhost` style addresses are fine for loopback test setups.
fn d_is_local(email: &str) -> bool {
    email.rsplit_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && (d == "localhost" || d.ends_with(".test") || d.ends_with(".localhost"))
    })
}

#[cfg(test)]
mod props {
    use super::Config;
    use proptest::prelude::*;
    use std::path::Path;

    /// TOML-ish text: keys, tables and values the config knows, in any order.
    fn tomlish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("[smtp]\n".to_owned()),
            Just("[imap]\n".to_owned()),
            Just("[limits]\n".to_owned()),
            Just("[users.a]\n".to_owned()),
            Just("[accounts.x]\n".to_owned()),
            Just("[pools.p]\n".to_owned()),
            Just("listen = \"127.0.0.1:0\"\n".to_owned()),
            Just("listen = [\"[::1]:1\", \"10.0.0.1:25\"]\n".to_owned()),
            Just("tls = \"implicit\"\n".to_owned()),
            Just("provider = \"gmail\"\n".to_owned()),
            Just("email = \"x@gmail.com\"\n".to_owned()),
            Just("auth = \"oauth2\"\n".to_owned()),
            Just("token_command = \"echo t\"\n".to_owned()),
            Just("accounts = [\"x\", \"x\"]\n".to_owned()),
            Just("send_via = \"pool:p\"\n".to_owned()),
            Just("idle_timeout = \"0s\"\n".to_owned()),
            Just("max_connections = 0\n".to_owned()),
            "[a-z_]{1,12} = \"[ -~]{0,12}\"\n",
            "[ -~\n]{0,20}",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        /// Any text loads or gives an error; it never panics.
        #[test]
        fn config_never_panics(text in tomlish()) {
            let _ = Config::from_str(&text, Path::new("prop.toml"));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Config::from_str(&text, Path::new("prop.toml"));
        }
    }
}
