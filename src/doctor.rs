//! `postern doctor ACCOUNT`: check an account end to end before the first
//! real use — for each of its servers (SMTP, IMAP, POP3): resolve, connect,
//! the TLS mode on the configured port (and which alternative works when it
//! fails), the server's certificate (who it names, until when, its
//! fingerprint and the `tls_pin` line that accepts it), what the server
//! offers, the credential and the login — and print each step with the fix
//! for a failure.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::credentials::Credential;
use crate::cert::CertInfo;
use crate::config::{Account, Config, Endpoint, Service};
use crate::imap::upstream::{ImapAccount, ImapUpstream};
use crate::pop3::upstream::{Pop3Account, Pop3Upstream};
use crate::providers::TlsMode;
use crate::smtp::upstream::{AccountRelay, Connection, UpstreamConfig};
use crate::tls::AccountVerifier;
use crate::upstream::{MailboxServer, Protocol, Stage, UpstreamError};

/// Per-step timeout: each server's check stays within about 30 seconds.
const STEP_TIMEOUT: Duration = Duration::from_secs(6);
/// Alternatives are tried while a server's check is younger than this.
const ALTERNATIVES_UNTIL: Duration = Duration::from_secs(20);

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

/// One server of the account, ready to be probed.
enum Probe {
    Smtp(AccountRelay),
    Imap(ImapAccount),
    Pop3(Pop3Account),
}

impl Probe {
    fn proto(&self) -> Protocol {
        match self {
            Probe::Smtp(_) => Protocol::Smtp,
            Probe::Imap(_) => Protocol::Imap,
            Probe::Pop3(_) => Protocol::Pop3,
        }
    }

    fn endpoint(&self) -> &Endpoint {
        match self {
            Probe::Smtp(r) => &r.cfg.endpoint,
            Probe::Imap(a) => &a.endpoint,
            Probe::Pop3(a) => &a.endpoint,
        }
    }

    fn username(&self) -> &str {
        match self {
            Probe::Smtp(r) => &r.cfg.username,
            Probe::Imap(a) => &a.username,
            Probe::Pop3(a) => &a.username,
        }
    }

    /// The same server at another port or TLS mode, with a short timeout.
    fn at(&self, endpoint: Endpoint) -> Probe {
        let timeout = Duration::from_secs(3);
        match self {
            Probe::Smtp(r) => Probe::Smtp(AccountRelay::new(UpstreamConfig {
                endpoint,
                timeout,
                ..r.cfg.clone()
            })),
            Probe::Imap(a) => Probe::Imap(ImapAccount {
                endpoint,
                timeout,
                ..a.clone()
            }),
            Probe::Pop3(a) => Probe::Pop3(Pop3Account {
                endpoint,
                timeout,
                ..a.clone()
            }),
        }
    }

    /// Connect, TLS and the greeting without logging in; what the server
    /// offers for login.
    async fn connect(&self) -> Result<(SocketAddr, String), UpstreamError> {
        match self {
            Probe::Smtp(r) => {
                let c = Connection::open(&r.cfg).await?;
                let offered = if c.caps.auth.is_empty() {
                    "EHLO: AUTH none".to_owned()
                } else {
                    format!("EHLO: AUTH {}", c.caps.auth.join(" "))
                };
                let peer = c.peer;
                c.quit().await;
                Ok((peer, offered))
            }
            Probe::Imap(a) => {
                let up = ImapUpstream::connect(a).await?;
                let auth: Vec<&str> = up
                    .caps
                    .iter()
                    .filter(|c| c.len() > 5 && c[..5].eq_ignore_ascii_case("AUTH="))
                    .map(|c| &c[5..])
                    .collect();
                let login = if up
                    .caps
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case("LOGINDISABLED"))
                {
                    ", LOGIN disabled"
                } else {
                    ", LOGIN"
                };
                Ok((
                    up.peer,
                    format!("CAPABILITY: AUTH {}{login}", auth.join(" ")),
                ))
            }
            Probe::Pop3(a) => {
                let up = Pop3Upstream::connect(a).await?;
                let mechs = up.mechanisms();
                let user = crate::pop3::codec::capability_has(&up.caps, "USER");
                let offered = if up.caps.is_empty() {
                    "no CAPA (USER/PASS assumed)".to_owned()
                } else {
                    format!(
                        "CAPA: SASL {}{}",
                        if mechs.is_empty() {
                            "none".into()
                        } else {
                            mechs.join(" ")
                        },
                        if user { ", USER" } else { "" }
                    )
                };
                let peer = up.peer;
                up.quit().await;
                Ok((peer, offered))
            }
        }
    }

    /// A login the way `run` logs in.
    async fn login(&self) -> Result<(), UpstreamError> {
        match self {
            Probe::Smtp(r) => {
                r.connect().await?.quit().await;
            }
            Probe::Imap(a) => {
                ImapUpstream::open(a).await?;
            }
            Probe::Pop3(a) => {
                Pop3Upstream::open(a).await?.quit().await;
            }
        }
        Ok(())
    }
}

/// Other ways to reach the same server, to suggest when the configured one
/// fails: the other TLS mode on the same port, the preset's alternative,
/// and the protocol's well-known ports.
fn alternatives(proto: Protocol, svc: Option<&Service>, configured: &Endpoint) -> Vec<Endpoint> {
    let mut v = vec![Endpoint {
        tls: match configured.tls {
            TlsMode::Implicit => TlsMode::Starttls,
            _ => TlsMode::Implicit,
        },
        ..configured.clone()
    }];
    v.extend(svc.and_then(|s| s.alternate.clone()));
    for (port, tls) in [
        (proto.implicit_port(), TlsMode::Implicit),
        (proto.starttls_port(), TlsMode::Starttls),
    ] {
        v.push(Endpoint {
            host: configured.host.clone(),
            port,
            tls,
        });
    }
    let mut seen = vec![configured.clone()];
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
    check(config, account, &mut out).await;
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

async fn check(config: &Config, account: &str, out: &mut Out) {
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
    if !a.enabled {
        out.note("note: enabled = false: `run` does not use this account");
    }
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
    // Built here, not per account, so that the doctor can read the
    // certificate a server presented.
    let (tls, verifier) = match crate::tls::client_config_with(a.ca_file.as_deref(), a.tls_pin) {
        Ok(x) => x,
        Err(e) => {
            out.step(false, "TLS trust store", &e.to_string());
            out.fix("check ca_file");
            return;
        }
    };
    let enabled = Account {
        enabled: true,
        ..a.clone()
    };
    let Some(credential) = Credential::for_account(&enabled, tokens.as_ref()) else {
        out.step(false, "credential", "no credential source: set password_env or password_file (app password), or token_command, or oauth = { client_id = \"…\" } and run `postern auth`");
        return;
    };
    let limits = crate::config::Limits {
        upstream_timeout: STEP_TIMEOUT,
        ..config.limits.clone()
    };
    let mut probes = Vec::new();
    if let Some(s) = &a.smtp {
        if let Ok(Some(r)) =
            AccountRelay::from_account(&enabled, &config.hostname, &limits, tokens.as_ref(), None)
        {
            let cfg = UpstreamConfig {
                tls: tls.clone(),
                credential: credential.clone(),
                ..r.cfg.clone()
            };
            probes.push((Probe::Smtp(AccountRelay::new(cfg)), s));
        }
    }
    let reader = |s: &Service| MailboxServer {
        account: a.name.clone(),
        endpoint: s.endpoint.clone(),
        username: s.username.clone(),
        credential: credential.clone(),
        tls: tls.clone(),
        timeout: STEP_TIMEOUT,
    };
    if let Some(s) = &a.imap {
        probes.push((Probe::Imap(reader(s)), s));
    }
    if let Some(s) = &a.pop3 {
        probes.push((Probe::Pop3(reader(s)), s));
    }
    for (probe, svc) in probes {
        check_server(a, &probe, svc, &verifier, out).await;
    }
}

async fn check_server(
    a: &Account,
    probe: &Probe,
    svc: &Service,
    verifier: &Arc<AccountVerifier>,
    out: &mut Out,
) {
    let started = Instant::now();
    let proto = probe.proto();
    let ep = probe.endpoint();
    let _ = writeln!(out.text, "{} {ep} as {}", proto.as_str(), probe.username());
    match tokio::time::timeout(
        STEP_TIMEOUT,
        tokio::net::lookup_host((ep.host.as_str(), ep.port)),
    )
    .await
    {
        Ok(Ok(addrs)) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            out.step(
                true,
                "resolve",
                &format!("{} → {}", ep.host, addrs.join(", ")),
            );
        }
        Ok(Err(e)) => {
            out.step(false, "resolve", &format!("{}: {e}", ep.host));
            out.fix("check the host name and this machine's DNS");
            return;
        }
        Err(_) => {
            out.step(false, "resolve", "DNS timed out");
            return;
        }
    }
    verifier.forget();
    match probe.connect().await {
        Ok((peer, offered)) => {
            out.step(
                true,
                "connect",
                &format!("{peer} ({} ms)", started.elapsed().as_millis()),
            );
            out.step(
                true,
                "TLS",
                &format!("{} on port {} works", ep.tls, ep.port),
            );
            if let Some(info) = verifier.last_presented().as_ref().and_then(CertInfo::parse) {
                certificate_ok(a, ep, &info, out);
            }
            let what = match proto {
                Protocol::Smtp => "EHLO",
                Protocol::Imap => "capabilities",
                Protocol::Pop3 => "CAPA",
            };
            out.step(
                true,
                what,
                offered.split_once(": ").map_or(&offered, |x| x.1),
            );
        }
        Err(e) => {
            let what = match &e {
                UpstreamError::Resolve { .. }
                | UpstreamError::Connect { .. }
                | UpstreamError::ConnectTimeout { .. } => "connect",
                UpstreamError::Tls { .. }
                | UpstreamError::NoStartTls { .. }
                | UpstreamError::NoGreeting { .. }
                | UpstreamError::Timeout {
                    stage: Stage::TlsHandshake,
                    ..
                } => "TLS",
                _ => "greeting",
            };
            out.step(false, what, &e.to_string());
            if let Some(h) = e.hint_for(proto) {
                out.fix(&h);
            }
            let certificate = certificate_failed(&e);
            if certificate {
                if let Some(info) = verifier.last_presented().as_ref().and_then(CertInfo::parse) {
                    certificate_report(a, &info, out);
                }
                // Another port would present the same certificate.
                return;
            }
            alternative(a, probe, svc, started, out).await;
            return;
        }
    }
    match probe.login().await {
        Ok(()) => out.step(true, "authenticate", &format!("as {}", probe.username())),
        Err(e) => {
            let what = match &e {
                UpstreamError::Credential(_) => "credential",
                _ => "authenticate",
            };
            out.step(false, what, &e.to_string());
            if let Some(h) = e.hint_for(proto) {
                out.fix(&h);
            }
        }
    }
}

/// Whether the TLS failure is about the certificate (not the port or mode).
fn certificate_failed(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Tls { failure, .. } => {
            matches!(failure.rustls(), Some(rustls::Error::InvalidCertificate(_)))
        }
        _ => false,
    }
}

/// A certificate that was accepted: say what it is, and warn of what a pin
/// lets through (an expired certificate, another name).
fn certificate_ok(a: &Account, ep: &Endpoint, info: &CertInfo, out: &mut Out) {
    out.note(&format!("certificate: {info}"));
    let pinned = a.tls_pin == Some(info.fingerprint);
    if pinned {
        out.note("accepted because tls_pin names it");
        let now = jiff::Timestamp::now();
        if !info.valid_at(now) {
            out.note(&format!(
                "warning: outside its validity period ({} to {}); the pin accepts it anyway",
                info.not_before.strftime("%Y-%m-%d"),
                info.not_after.strftime("%Y-%m-%d")
            ));
        }
        if !info.covers(&ep.host) {
            out.note(&format!(
                "warning: not issued for {}; the pin accepts it anyway",
                ep.host
            ));
        }
    } else if info.self_signed {
        out.note("accepted because it is listed in ca_file");
    }
}

/// A refused certificate: what it is, its fingerprint and the pin line.
fn certificate_report(a: &Account, info: &CertInfo, out: &mut Out) {
    out.note(&format!("server certificate: {info}"));
    out.note(&format!(
        "fingerprint: {}",
        crate::cert::pin_text(&info.fingerprint)
    ));
    out.note(&format!(
        "to accept exactly this certificate (check the fingerprint with the server's administrator first), add to [accounts.{}]:",
        a.name
    ));
    out.note(&format!("    {}", info.pin_line()));
}

/// Which other port or TLS mode works, to suggest it.
async fn alternative(a: &Account, probe: &Probe, svc: &Service, started: Instant, out: &mut Out) {
    let proto = probe.proto();
    for alt in alternatives(proto, Some(svc), probe.endpoint()) {
        if started.elapsed() > ALTERNATIVES_UNTIL {
            break;
        }
        if probe.at(alt.clone()).connect().await.is_ok() {
            out.step(
                true,
                "alternative",
                &format!("port {} with tls = \"{}\" works", alt.port, alt.tls),
            );
            out.fix(&format!(
                "set {} = {{ host = \"{}\", port = {}, tls = \"{}\" }} for account {}",
                proto.as_str(),
                alt.host,
                alt.port,
                alt.tls,
                a.name
            ));
            return;
        }
    }
    out.note("no alternative port/TLS mode worked either");
}
