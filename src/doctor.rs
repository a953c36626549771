//! `postern doctor ACCOUNT`: check an account end to end before the first
//! real send — resolve, connect, TLS mode on the configured port (and which
//! alternative works when it fails), capabilities, credential, login — and
//! print each step with the fix for a failure.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::config::{Account, Config, Endpoint};
use crate::providers::TlsMode;
use crate::smtp::upstream::{AccountRelay, Connection, UpstreamConfig, UpstreamError};

/// Per-step timeout: the whole check stays within 30 seconds.
const STEP_TIMEOUT: Duration = Duration::from_secs(6);

/// The printed report and whether every step passed.
pub struct Report {
    pub text: String,
    pub ok: bool,
}

struct Out {
    text: String,
    ok: bool,
}

impl Out {
    fn step(&mut self, ok: bool, what: &str, detail: &str) {
        let tag = if ok { "ok    " } else { "FAILED" };
        let _ = writeln!(
            self.text,
            "  [{tag}] {what}{}{detail}",
            if detail.is_empty() { "" } else { ": " }
        );
        if !ok {
            self.ok = false;
        }
    }
    fn fix(&mut self, fix: &str) {
        let _ = writeln!(self.text, "           fix: {fix}");
    }
    fn note(&mut self, note: &str) {
        let _ = writeln!(self.text, "           {note}");
    }
}

/// Other ways to reach the same provider, to suggest when the configured one fails.
fn alternatives(a: &Account, configured: &Endpoint) -> Vec<Endpoint> {
    let mut v = Vec::new();
    let other_mode = match configured.tls {
        TlsMode::Implicit => TlsMode::Starttls,
        _ => TlsMode::Implicit,
    };
    v.push(Endpoint {
        tls: other_mode,
        ..configured.clone()
    });
    if let Some(alt) = a.smtp.as_ref().and_then(|s| s.alternate.clone()) {
        v.push(alt);
    }
    for (port, tls) in [(465, TlsMode::Implicit), (587, TlsMode::Starttls)] {
        v.push(Endpoint {
            host: configured.host.clone(),
            port,
            tls,
        });
    }
    v.retain(|e| e != configured);
    let mut seen = Vec::new();
    v.retain(|e| {
        let new = !seen.contains(e);
        seen.push(e.clone());
        new
    });
    v
}

pub async fn run(config: &Config, account: &str) -> Report {
    let mut out = Out {
        text: String::new(),
        ok: true,
    };
    let started = Instant::now();
    check(config, account, &mut out, started).await;
    let _ = writeln!(
        out.text,
        "{} ({} ms)",
        if out.ok {
            "all checks passed"
        } else {
            "some checks FAILED"
        },
        started.elapsed().as_millis()
    );
    Report {
        text: out.text,
        ok: out.ok,
    }
}

async fn check(config: &Config, account: &str, out: &mut Out, started: Instant) {
    let Some(a) = config.accounts.get(account) else {
        out.step(
            false,
            "account",
            &format!("no account \"{account}\" in {}", config.file.display()),
        );
        return;
    };
    let preset = a.provider.map(|p| p.name).unwrap_or("custom");
    let _ = writeln!(
        out.text,
        "account {} <{}> (preset {preset})",
        a.name, a.email
    );
    if let Some(p) = a.provider {
        for h in p.hints {
            out.note(&format!("note: {h}"));
        }
    }
    let limits = crate::config::Limits {
        upstream_timeout: STEP_TIMEOUT,
        ..config.limits.clone()
    };
    let tokens = if crate::auth::oauth::uses_builtin(a) {
        match crate::auth::oauth::TokenManager::from_config(config) {
            Ok(t) => t,
            Err(e) => {
                out.step(false, "token store", &e.to_string());
                return;
            }
        }
    } else {
        None
    };
    let relay = match AccountRelay::from_account(
        a,
        &config.hostname,
        &limits,
        tokens.as_ref(),
        None,
    ) {
        Ok(Some(r)) => r,
        Ok(None) => {
            if a.smtp.is_none() {
                out.step(false, "smtp", "this account has no SMTP server configured");
            } else {
                out.step(false, "credential", "no credential source: set token_command, or oauth = { client_id = \"…\" } and run `postern auth`");
            }
            return;
        }
        Err(e) => {
            out.step(false, "TLS trust store", &e.to_string());
            out.fix("check ca_file");
            return;
        }
    };
    let cfg = &relay.cfg;
    let _ = writeln!(out.text, "smtp {} as {}", cfg.endpoint, cfg.username);

    // Resolve.
    match tokio::time::timeout(
        STEP_TIMEOUT,
        tokio::net::lookup_host((cfg.endpoint.host.as_str(), cfg.endpoint.port)),
    )
    .await
    {
        Ok(Ok(addrs)) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            out.step(
                true,
                "resolve",
                &format!("{} → {}", cfg.endpoint.host, addrs.join(", ")),
            );
        }
        Ok(Err(e)) => {
            out.step(false, "resolve", &format!("{}: {e}", cfg.endpoint.host));
            out.fix("check the host name and this machine's DNS");
            return;
        }
        Err(_) => {
            out.step(false, "resolve", "DNS timed out");
            return;
        }
    }

    // Connect + TLS + EHLO.
    let conn = match Connection::open(cfg).await {
        Ok(c) => {
            out.step(
                true,
                "connect",
                &format!("{} ({} ms)", c.peer, started.elapsed().as_millis()),
            );
            out.step(
                true,
                "TLS",
                &format!("{} on port {} works", cfg.endpoint.tls, cfg.endpoint.port),
            );
            let auth = if c.caps.auth.is_empty() {
                "none".to_owned()
            } else {
                c.caps.auth.join(" ")
            };
            out.step(true, "EHLO", &format!("AUTH {auth}"));
            Some(c)
        }
        Err(e) => {
            let what = match &e {
                UpstreamError::Resolve { .. }
                | UpstreamError::Connect { .. }
                | UpstreamError::ConnectTimeout { .. } => "connect",
                UpstreamError::Tls { .. }
                | UpstreamError::NoStartTls { .. }
                | UpstreamError::NoGreeting { .. } => "TLS",
                UpstreamError::Timeout {
                    stage: crate::upstream::Stage::TlsHandshake,
                    ..
                } => "TLS",
                _ => "greeting",
            };
            out.step(false, what, &e.to_string());
            if let Some(h) = e.hint() {
                out.fix(&h);
            }
            // Which alternative works?
            let mut found = false;
            for alt in alternatives(a, &cfg.endpoint) {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                let try_cfg = UpstreamConfig {
                    endpoint: alt.clone(),
                    timeout: Duration::from_secs(3),
                    ..cfg.clone()
                };
                if let Ok(c) = Connection::open(&try_cfg).await {
                    out.step(
                        true,
                        "alternative",
                        &format!("port {} with tls = \"{}\" works", alt.port, alt.tls),
                    );
                    out.fix(&format!(
                        "set smtp = {{ host = \"{}\", port = {}, tls = \"{}\" }} for account {}",
                        alt.host, alt.port, alt.tls, a.name
                    ));
                    c.quit().await;
                    found = true;
                    break;
                }
            }
            if !found {
                out.note("no alternative port/TLS mode worked either");
            }
            None
        }
    };
    let Some(conn) = conn else { return };
    conn.quit().await;

    // Credential + login (a fresh connection, the way `run` logs in).
    match relay.connect().await {
        Ok(c) => {
            out.step(true, "authenticate", &format!("as {}", cfg.username));
            c.quit().await;
        }
        Err(e) => {
            let what = match &e {
                UpstreamError::Credential(_) => "credential",
                _ => "authenticate",
            };
            out.step(false, what, &e.to_string());
            if let Some(h) = e.hint() {
                out.fix(&h);
            }
        }
    }
}
