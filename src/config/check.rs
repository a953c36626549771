//! Checking a raw config: one function per section (listeners, accounts
//! with their OAuth settings, pools, users, limits), each naming the key
//! and what is wrong. Reads nothing but the text it is given.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{
    RawAccount, RawBind, RawConfig, RawEndpoint, RawEvents, RawHttp, RawLimits, RawListener,
    RawPool, RawPop3, RawQueue, RawSandbox, RawUser,
};
use super::types::*;
use crate::pattern::{Net, Pattern};
use crate::providers::{self, TlsMode, UserForm, Window};

pub(super) struct Checker<'a> {
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

/// Parse and check config text as if it had been read from `file`.
pub(super) fn config(text: &str, file: &Path) -> Result<Config, ConfigError> {
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

    let smtp = raw
        .smtp
        .map(|l| check_listener(&c, "smtp", l))
        .transpose()?;
    let imap = raw
        .imap
        .map(|l| check_listener(&c, "imap", l))
        .transpose()?;
    let pop3 = raw
        .pop3
        .map(|l| check_listener(&c, "pop3", l))
        .transpose()?;
    let http = raw.http.map(|h| check_http(&c, h)).transpose()?;
    if smtp.is_none() && imap.is_none() && pop3.is_none() && http.is_none() {
        return Err(c.err(
            "smtp",
            "no listener: add at least one of [smtp] listen = \"127.0.0.1:2525\", [imap] listen = \"127.0.0.1:1143\" or [pop3] listen = \"127.0.0.1:1110\"",
        ));
    }
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

    let pools = check_pools(&c, raw.pools, &accounts)?;
    let users = check_users(&c, raw.users, &accounts, &pools)?;
    if let Some(a) = smtp.as_ref().and_then(|l| l.anonymous.as_ref()) {
        match users.get(&a.user) {
            None => {
                return Err(c.err(
                    "smtp.anonymous_user",
                    format!("unknown user \"{}\"{}", a.user, known(users.keys())),
                ))
            }
            Some(u) if u.allowed_senders.is_empty() => {
                return Err(c.err(
                    format!("users.{}.allowed_senders", a.user),
                    "the anonymous user must list the senders it may use (for example [\"scanner@office.example\"]), so that the listener can never relay for anyone",
                ))
            }
            Some(u) if u.send_via.is_none() => {
                return Err(c.err(
                    format!("users.{}.send_via", a.user),
                    "the anonymous user needs a send_via (an account, a pool, or \"capture\")",
                ))
            }
            Some(_) => {}
        }
    }
    let limits = check_limits(&c, raw.limits)?;
    let sandbox = check_sandbox(&c, raw.sandbox, &accounts, &pools)?;
    if let Err(e) = crate::sandbox::faults::Faults::from_specs(raw.faults.clone()) {
        return Err(c.err("faults", e));
    }
    let queue = check_queue(&c, raw.queue)?;
    let events = check_events(&c, raw.events)?;

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
                format!("\"{level}\" is not a level or filter (trace, debug, info, warn, error)"),
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
        pop3,
        http,
        sandbox,
        faults: raw.faults,
        tls,
        users,
        accounts,
        pools,
        limits,
        quota_store: raw.quota_store,
        trace_header: raw.trace_header,
        key_file: raw.key_file.map(|p| c.path(&p)),
        queue,
        events,
    })
}

/// `[events]`.
fn check_events(c: &Checker, raw: Option<RawEvents>) -> Result<EventsConfig, ConfigError> {
    let Some(r) = raw else {
        return Ok(EventsConfig::default());
    };
    if r.command.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Err(c.err("events.command", "is empty"));
    }
    if let Some(w) = &r.webhook {
        match url::Url::parse(w) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(c.err(
                    "events.webhook",
                    format!("\"{w}\" is not an http:// or https:// address"),
                ))
            }
        }
    }
    if let Some(kinds) = &r.kinds {
        for k in kinds {
            if !EVENT_KINDS.contains(&k.as_str()) {
                return Err(c.err(
                    "events.kinds",
                    format!("\"{k}\" is not an event kind ({})", EVENT_KINDS.join(", ")),
                ));
            }
        }
    }
    let timeout = r.timeout.unwrap_or(Duration::from_secs(30));
    if timeout.is_zero() {
        return Err(c.err("events.timeout", "must be more than 0"));
    }
    Ok(EventsConfig {
        command: r.command,
        webhook: r.webhook,
        timeout,
        kinds: r.kinds,
    })
}

/// A `bounce` value: "sender", "none" or an address.
fn check_bounce(c: &Checker, key: &str, v: &str) -> Result<Bounce, ConfigError> {
    match v {
        "sender" => Ok(Bounce::Sender),
        "none" => Ok(Bounce::None),
        a if a
            .rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
            && !a.contains(|ch: char| {
                ch.is_whitespace() || ch.is_control() || ch == '<' || ch == '>'
            }) =>
        {
            Ok(Bounce::Address(a.to_owned()))
        }
        _ => Err(c.err(
            key,
            format!(
                "\"{v}\" is not \"sender\", \"none\" or an address like \"postmaster@example.com\""
            ),
        )),
    }
}

/// `[queue]`: the defaults with what the file sets.
fn check_queue(c: &Checker, raw: Option<RawQueue>) -> Result<QueueConfig, ConfigError> {
    let mut q = QueueConfig::default();
    let Some(r) = raw else { return Ok(q) };
    if let Some(v) = r.max_queue_age {
        if v.is_zero() {
            return Err(c.err("queue.max_queue_age", "must be more than 0"));
        }
        q.max_queue_age = v;
    }
    if let Some(s) = r.max_queue_size {
        if let Some(m) = s.messages {
            if m == 0 {
                return Err(c.err("queue.max_queue_size.messages", "must be at least 1"));
            }
            q.max_messages = m;
        }
        if let Some(b) = s.bytes {
            if b < 1024 {
                return Err(c.err("queue.max_queue_size.bytes", "must be at least 1024"));
            }
            q.max_bytes = b;
        }
    }
    if let Some(list) = r.retry {
        if list.is_empty() {
            return Err(c.err(
                "queue.retry",
                "needs at least one wait, e.g. [\"1m\", \"5m\", \"15m\", \"1h\"]",
            ));
        }
        let mut waits = Vec::new();
        for w in list {
            match humantime::parse_duration(&w) {
                Ok(d) if !d.is_zero() => waits.push(d),
                _ => {
                    return Err(c.err(
                        "queue.retry",
                        format!(
                            "`{w}` is not a duration above 0; write e.g. \"90s\", \"5m\" or \"1h\""
                        ),
                    ))
                }
            }
        }
        q.retry = waits;
    }
    if let Some(b) = &r.bounce {
        q.bounce = check_bounce(c, "queue.bounce", b)?;
    }
    if let Some(w) = r.workers {
        if w == 0 {
            return Err(c.err("queue.workers", "must be at least 1"));
        }
        q.workers = w;
    }
    Ok(q)
}

/// `[pools.NAME]`: accounts that exist, have SMTP and appear once; weights only
/// with `strategy = "weighted"`.
fn check_pools(
    c: &Checker,
    pools_raw: BTreeMap<String, RawPool>,
    accounts: &BTreeMap<String, Account>,
) -> Result<BTreeMap<String, Pool>, ConfigError> {
    let mut pools = BTreeMap::new();
    for (name, p) in pools_raw {
        check_name(c, "pools", &name)?;
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
                delivery: p.delivery,
            },
        );
    }
    Ok(pools)
}

/// `[users.NAME]`: a password hash that parses, a `send_via` and `read_via`
/// that name something usable.
fn check_users(
    c: &Checker,
    users_raw: BTreeMap<String, RawUser>,
    accounts: &BTreeMap<String, Account>,
    pools: &BTreeMap<String, Pool>,
) -> Result<BTreeMap<String, User>, ConfigError> {
    let mut users = BTreeMap::new();
    for (name, u) in users_raw {
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
                Some(a) if a.imap.is_some() || a.pop3.is_some() => {}
                Some(_) => {
                    return Err(c.err(
                        format!("{key}.read_via"),
                        format!("account \"{r}\" has no IMAP or POP3 server"),
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
        if u.delivery.is_some_and(|d| d != Delivery::Relay)
            && matches!(send_via, None | Some(SendVia::Capture))
        {
            return Err(c.err(
                format!("{key}.delivery"),
                "the queue delivers through an account or a pool; this user's send_via is neither",
            ));
        }
        let bounce = u
            .bounce
            .as_deref()
            .map(|b| check_bounce(c, &format!("{key}.bounce"), b))
            .transpose()?;
        let patterns = |what: &str, list: Option<Vec<String>>| {
            list.unwrap_or_default()
                .iter()
                .map(|p| {
                    Pattern::parse(p)
                        .map_err(|e| c.err(format!("{key}.{what}"), format!("\"{p}\": {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let inbox = match u.inbox {
            Some(i) if i.trim().is_empty() || i.len() > 255 || i.chars().any(char::is_control) => {
                return Err(c.err(
                    format!("{key}.inbox"),
                    "an inbox name must be 1–255 printable characters",
                ))
            }
            Some(i) => i.trim().to_owned(),
            None => name.clone(),
        };
        let sandbox = match (u.redirect, u.allowlist) {
            (Some(_), Some(_)) => {
                return Err(c.err(
                    format!("{key}.redirect"),
                    "give redirect or allowlist, not both",
                ))
            }
            (Some(to), None) => {
                let to = to.trim().to_owned();
                if !to
                    .rsplit_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
                    || to.contains(|ch: char| {
                        ch.is_whitespace() || ch.is_control() || ch == '<' || ch == '>'
                    })
                {
                    return Err(c.err(
                        format!("{key}.redirect"),
                        format!("\"{to}\" is not an address"),
                    ));
                }
                Some(SandboxRoute::Redirect(to))
            }
            (None, Some(list)) => {
                if list.is_empty() {
                    return Err(c.err(
                        format!("{key}.allowlist"),
                        "an empty allowlist relays nothing: use send_via = \"capture\" instead",
                    ));
                }
                Some(SandboxRoute::Allowlist(patterns("allowlist", Some(list))?))
            }
            (None, None) => None,
        };
        if sandbox.is_some() {
            if !matches!(send_via, Some(SendVia::Account(_)) | Some(SendVia::Pool(_))) {
                return Err(c.err(
                    format!("{key}.send_via"),
                    "redirect and allowlist relay through an account or a pool: set send_via to one",
                ));
            }
            if u.delivery.is_some_and(|d| d != Delivery::Relay) {
                return Err(c.err(
                    format!("{key}.delivery"),
                    "redirect and allowlist relay in the session: delivery must be \"relay\"",
                ));
            }
        }
        let allowed_senders = patterns("allowed_senders", u.allowed_senders)?;
        let allowed_recipients = patterns("allowed_recipients", u.allowed_recipients)?;
        users.insert(
            name.clone(),
            User {
                name,
                password_hash: u.password_hash,
                send_via,
                read_via: u.read_via,
                delivery: u.delivery,
                bounce,
                allowed_senders,
                allowed_recipients,
                inbox,
                sandbox,
            },
        );
    }
    Ok(users)
}

/// `[limits]`: the defaults with what the file sets, each in its range.
fn check_limits(c: &Checker, limits_raw: Option<RawLimits>) -> Result<Limits, ConfigError> {
    let mut limits = Limits::default();
    if let Some(l) = limits_raw {
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
    Ok(limits)
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
    let list = l.listen.into_vec();
    if list.is_empty() {
        return Err(c.err(format!("{section}.listen"), "needs at least one address"));
    }
    let default_tls = l.tls.unwrap_or(TlsMode::None);
    let mut binds: Vec<Bind> = Vec::new();
    for b in list {
        let (s, tls) = match b {
            RawBind::Addr(s) => (s, default_tls),
            RawBind::Table(t) => (t.addr, t.tls.unwrap_or(default_tls)),
        };
        let addr: SocketAddr = s.parse().map_err(|_| {
            c.err(
                format!("{section}.listen"),
                format!("\"{s}\" is not an address with a port, like \"127.0.0.1:2525\" or \"[::1]:2525\""),
            )
        })?;
        if !addr.ip().is_loopback() && tls == TlsMode::None {
            return Err(c.err(
                format!("{section}.tls"),
                format!(
                    "{addr} is not a loopback address, so it needs tls = \"starttls\" or \"implicit\": plaintext passwords may cross only the loopback interface"
                ),
            ));
        }
        if addr.port() != 0 && binds.iter().any(|b| b.addr == addr) {
            return Err(c.err(
                format!("{section}.listen"),
                format!("{addr} is listed twice"),
            ));
        }
        binds.push(Bind { addr, tls });
    }
    let anonymous = match (l.anonymous_user, l.allow_from) {
        (None, None) => None,
        _ if section != "smtp" => {
            return Err(c.err(
                format!("{section}.anonymous_user"),
                "only an [smtp] listener takes clients that do not log in",
            ))
        }
        (Some(_), None) => {
            return Err(c.err(
                "smtp.allow_from",
                "anonymous_user needs allow_from: the addresses of the devices that send without logging in, like [\"192.168.1.50/32\"]",
            ))
        }
        (None, Some(_)) => {
            return Err(c.err(
                "smtp.anonymous_user",
                "allow_from names who may send without logging in; it needs anonymous_user, the user they send as",
            ))
        }
        (Some(user), Some(nets)) => {
            if nets.is_empty() {
                return Err(c.err("smtp.allow_from", "needs at least one network"));
            }
            let allow_from = nets
                .iter()
                .map(|n| {
                    Net::parse(n).map_err(|e| c.err("smtp.allow_from", format!("\"{n}\": {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(Anonymous { user, allow_from })
        }
    };
    Ok(Listener { binds, anonymous })
}

/// `[http]`: addresses, and auth wherever the address is not loopback.
fn check_http(c: &Checker, h: RawHttp) -> Result<HttpConfig, ConfigError> {
    let list = h.listen.into_vec();
    if list.is_empty() {
        return Err(c.err("http.listen", "needs at least one address"));
    }
    let listen = list
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>().map_err(|_| {
                c.err(
                    "http.listen",
                    format!("\"{s}\" is not an address with a port, like \"127.0.0.1:8025\""),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(hash) = &h.password_hash {
        if let Err(e) = argon2::PasswordHash::new(hash) {
            return Err(c.err(
                "http.password_hash",
                format!("not a password hash ({e}); make one with `postern hash-password`"),
            ));
        }
    }
    let token = match (h.token_env, h.token_file) {
        (Some(_), Some(_)) => {
            return Err(c.err("http.token_env", "give token_env or token_file, not both"))
        }
        (Some(v), None) => Some(PasswordSource::Env(v)),
        (None, Some(f)) => Some(PasswordSource::File(c.path(&f))),
        (None, None) => None,
    };
    let cfg = HttpConfig {
        listen,
        password_hash: h.password_hash,
        token,
    };
    if let Some(a) = cfg.listen.iter().find(|a| !a.ip().is_loopback()) {
        if !cfg.needs_auth() {
            return Err(c.err(
                "http.password_hash",
                format!("{a} is not a loopback address: the sandbox UI and API there need password_hash (basic auth) or token_env/token_file (bearer)"),
            ));
        }
    }
    Ok(cfg)
}

/// `[sandbox]`.
fn check_sandbox(
    c: &Checker,
    raw: Option<RawSandbox>,
    accounts: &BTreeMap<String, Account>,
    pools: &BTreeMap<String, Pool>,
) -> Result<SandboxConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SandboxConfig::default());
    };
    let pop3 = match raw.pop3 {
        Some(list) => {
            check_listener(
                c,
                "sandbox.pop3",
                RawListener {
                    listen: super::raw::OneOrMany::Many(list.into_vec()),
                    tls: None,
                    anonymous_user: None,
                    allow_from: None,
                },
            )?
            .binds
        }
        None => Vec::new(),
    };
    if raw.max_messages == Some(0) {
        return Err(c.err("sandbox.max_messages", "must be at least 1"));
    }
    let release_via = match raw.release_via {
        None => None,
        Some(v) => {
            let via = SendVia::from_key(&v);
            let ok = match &via {
                SendVia::Capture => false,
                SendVia::Account(a) => accounts.get(a).is_some_and(|a| a.smtp.is_some()),
                SendVia::Pool(p) => pools.contains_key(p),
            };
            if !ok {
                return Err(c.err(
                    "sandbox.release_via",
                    format!(
                        "\"{v}\" is not an account with SMTP or \"pool:NAME\"{}",
                        known(accounts.keys())
                    ),
                ));
            }
            Some(via)
        }
    };
    Ok(SandboxConfig {
        pop3,
        retention: crate::capture::Retention {
            max_messages: raw.max_messages,
            max_age: raw.max_age,
        },
        release_via,
    })
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
    let preset_pop = preset.and_then(|p| p.pop);
    let pop3 = match a.pop3 {
        None => service("pop3", None, preset_pop)?,
        Some(RawPop3::Preset(false)) => None,
        Some(RawPop3::Preset(true)) => match (preset, preset_pop) {
            (Some(_), Some(p)) => service("pop3", None, Some(p))?,
            (Some(p), None) => {
                return Err(c.err(
                    format!("{key}.pop3"),
                    format!(
                        "{} has no POP3 server (it publishes IMAP and SMTP only); read this account over IMAP ([imap] listener) instead",
                        p.display
                    ),
                ))
            }
            (None, _) => {
                return Err(c.err(
                    format!("{key}.pop3"),
                    "pop3 = true takes the POP3 server of a provider preset; this account has none, so give pop3 = { host, port, tls }",
                ))
            }
        },
        Some(RawPop3::Server(e)) => service("pop3", Some(e), preset_pop)?,
    };
    if smtp.is_none() && imap.is_none() && pop3.is_none() {
        return Err(c.err(
            key,
            "needs provider = \"…\" (see `postern providers`) or smtp = { host, port, tls } / imap = { … } / pop3 = { … }",
        ));
    }
    let tls_pin = match &a.tls_pin {
        None => None,
        Some(p) => Some(crate::cert::parse_pin(p).ok_or_else(|| {
            c.err(
                format!("{key}.tls_pin"),
                "not a pin: write \"sha256:\" and the 64 hexadecimal digits of the certificate's SHA-256 fingerprint (`postern doctor` prints the line)",
            )
        })?),
    };
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
    // A custom server: 4 at once is what a small Postfix or Dovecot takes
    // from one client without complaint.
    let max_connections = a
        .max_connections
        .or(preset.map(|p| p.max_connections))
        .unwrap_or(4);
    if max_connections == 0 {
        return Err(c.err(format!("{key}.max_connections"), "must be at least 1"));
    }
    let window_length = match (a.window_length, a.window) {
        (None, _) => Duration::from_secs(86_400),
        (Some(_), Some(Window::CalendarDay)) => {
            return Err(c.err(
                format!("{key}.window_length"),
                "a calendar day has no length to set; window_length goes with a rolling window",
            ))
        }
        (Some(d), _) if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) => {
            return Err(c.err(
                format!("{key}.window_length"),
                "must be between 1s and 24h (e.g. \"1h\" for a provider that counts per hour)",
            ))
        }
        (Some(d), _) => d,
    };
    let max_per_minute = a.max_per_minute.or(preset.and_then(|p| p.max_per_minute));
    if max_per_minute == Some(0) {
        return Err(c.err(format!("{key}.max_per_minute"), "must be at least 1"));
    }
    Ok(Account {
        name: name.to_owned(),
        enabled: a.enabled.unwrap_or(true),
        provider: preset,
        email,
        smtp,
        imap,
        pop3,
        ca_file: a.ca_file.map(|p| c.path(&p)),
        tls_pin,
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
        window_length,
        time_zone: a.time_zone,
        min_interval: a.min_interval,
        jitter: a.jitter,
        ramp: a.ramp,
        max_connections,
        max_per_minute,
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
