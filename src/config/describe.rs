//! `postern check-config`'s description of the resolved setup. Never
//! prints a secret: only where secrets come from.

use super::types::*;
use crate::providers::TlsMode;

impl Config {
    /// The human-readable resolved setup printed by `postern check-config`.
    /// Never contains a secret: only where secrets come from.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        use std::fmt::Write;
        let _ = writeln!(w, "config:    {}", self.file.display());
        let _ = writeln!(w, "data_dir:  {}", self.data_dir.display());
        let listener = |w: &mut String, name: &str, l: &Option<Listener>| {
            let Some(l) = l else {
                let _ = writeln!(w, "  {name:<9} (off)");
                return;
            };
            for b in &l.binds {
                let auth = if b.addr.ip().is_loopback() || b.tls == TlsMode::Implicit {
                    "AUTH allowed"
                } else {
                    "AUTH after STARTTLS"
                };
                let _ = writeln!(w, "  {name:<9} {} tls={} ({auth})", b.addr, b.tls);
            }
            if let Some(a) = &l.anonymous {
                let nets: Vec<String> = a.allow_from.iter().map(|n| n.to_string()).collect();
                let _ = writeln!(
                    w,
                    "  {:<9} without AUTH from {} as user {}",
                    "",
                    nets.join(", "),
                    a.user
                );
            }
        };
        let _ = writeln!(w, "\nlisteners:");
        listener(w, "smtp", &self.smtp);
        listener(w, "imap", &self.imap);
        listener(w, "pop3", &self.pop3);
        if let Some(h) = &self.http {
            let auth = match (&h.password_hash, &h.token) {
                (Some(_), Some(_)) => "basic auth or bearer token",
                (Some(_), None) => "basic auth",
                (None, Some(_)) => "bearer token",
                (None, None) => "no login (loopback)",
            };
            for a in &h.listen {
                let _ = writeln!(w, "  http      http://{a}/ ({auth}): sandbox UI and API");
            }
        }
        for b in &self.sandbox.pop3 {
            let _ = writeln!(
                w,
                "  sandbox   pop3 {} tls={}: each login reads its inbox of captured mail",
                b.addr, b.tls
            );
        }
        let tls_used = [&self.smtp, &self.imap, &self.pop3]
            .into_iter()
            .flatten()
            .any(Listener::uses_tls);
        match &self.tls {
            Some(t) => {
                let _ = writeln!(
                    w,
                    "  tls cert  {} key {}",
                    t.cert.display(),
                    t.key.display()
                );
            }
            None if tls_used => {
                let _ = writeln!(
                    w,
                    "  tls cert  self-signed, kept in {}",
                    self.data_dir.join("tls").display()
                );
            }
            None => {}
        }
        let _ = writeln!(w, "\nusers:");
        for u in self.users.values() {
            let send = u
                .send_via
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "(no sending)".into());
            let read = u.read_via.as_deref().unwrap_or("(no reading)");
            let _ = writeln!(w, "  {:<16} send_via={send} read_via={read}", u.name);
            let list = |p: &[crate::pattern::Pattern]| {
                p.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !u.allowed_senders.is_empty() {
                let _ = writeln!(
                    w,
                    "  {:<16} allowed_senders={}",
                    "",
                    list(&u.allowed_senders)
                );
            }
            match &u.sandbox {
                Some(SandboxRoute::Redirect(to)) => {
                    let _ = writeln!(
                        w,
                        "  {:<16} redirect: every recipient replaced by {to} (captured too)",
                        ""
                    );
                }
                Some(SandboxRoute::Allowlist(p)) => {
                    let _ = writeln!(
                        w,
                        "  {:<16} allowlist: relayed to {}, others captured only",
                        "",
                        list(p)
                    );
                }
                None => {}
            }
            if u.inbox != u.name {
                let _ = writeln!(w, "  {:<16} inbox={}", "", u.inbox);
            }
            if !u.allowed_recipients.is_empty() {
                let _ = writeln!(
                    w,
                    "  {:<16} allowed_recipients={}",
                    "",
                    list(&u.allowed_recipients)
                );
            }
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
            for (proto, svc) in [("smtp", &a.smtp), ("imap", &a.imap), ("pop3", &a.pop3)] {
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
            if let Some(pin) = &a.tls_pin {
                let _ = writeln!(w, "    pin   {}", crate::cert::pin_text(pin));
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
        let r = &self.sandbox.retention;
        if r.max_messages.is_some() || r.max_age.is_some() {
            let _ = writeln!(
                w,
                "\nsandbox: keep {} messages{}",
                r.max_messages
                    .map(|n| format!("at most {n}"))
                    .unwrap_or_else(|| "all".into()),
                r.max_age
                    .map(|d| format!(", none older than {}", humantime::format_duration(d)))
                    .unwrap_or_default()
            );
        }
        if !self.faults.is_empty() {
            let _ = writeln!(w, "\nfaults:");
            for f in &self.faults {
                let what = f
                    .reply
                    .clone()
                    .or(f.code.map(|c| c.to_string()))
                    .unwrap_or_else(|| {
                        if f.drop {
                            "drop".into()
                        } else {
                            "delay".into()
                        }
                    });
                let stage = f
                    .stage
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "default stage".into());
                let _ = writeln!(
                    w,
                    "  {what} at {stage}{}",
                    if f.enabled { "" } else { " (off)" }
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
}

impl Config {
    /// What `check-config` and `run` warn about: allowed, but probably not
    /// what was meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(a) = self.smtp.as_ref().and_then(|l| l.anonymous.as_ref()) {
            for n in a.allow_from.iter().filter(|n| !n.is_narrow()) {
                out.push(format!(
                    "smtp.allow_from: {n} is wider than a single host: every machine in it may send as user {} without logging in; list each device as ADDRESS/32",
                    a.user
                ));
            }
        }
        out
    }
}
