//! The upstream SMTP client: connect to the provider on the account's port
//! and TLS mode, authenticate with XOAUTH2/OAUTHBEARER or an app password,
//! and relay one transaction at a time. Also the account relay with its small
//! pool of warm authenticated connections, and the mapping of upstream
//! failures to replies that tell the user what to do (DESIGN.md, errors).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::auth::credentials::Credential;
use crate::config::{Account, Endpoint};
use crate::gate::{Board, Gate, Slot};
use crate::io::{ClientStream, MaybeTls};
use crate::providers::TlsMode;
use crate::sasl::{self, Mechanism};
use crate::secret::Secret;
use crate::smtp::codec::{self, MailParams, Path, Reply, ReplyParse};
use crate::upstream::{CredentialKind, Stage, TlsFailure};
pub use crate::upstream::{UpstreamError, Verdict};

/// A connection idle for longer than this gets a health check before reuse.
const HEALTH_CHECK_AFTER: Duration = Duration::from_secs(5);

/// Where and how to reach one account's SMTP server.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub account: String,
    pub email: String,
    pub endpoint: Endpoint,
    pub username: String,
    pub credential: Credential,
    pub tls: Arc<ClientConfig>,
    /// Our name in EHLO.
    pub ehlo_name: String,
    pub timeout: Duration,
    /// How long the final reply after the message may take
    /// (`upstream_data_timeout`).
    pub data_timeout: Duration,
    /// How long an idle warm connection is kept.
    pub keepalive: Duration,
    /// How many idle authenticated connections are kept.
    pub warm_max: usize,
}

impl UpstreamConfig {
    pub fn target(&self) -> String {
        format!("{}:{}", self.endpoint.host, self.endpoint.port)
    }
}

/// What an upstream reply means for routing.
pub fn classify(r: &Reply) -> Verdict {
    if r.is_positive() {
        return Verdict::Accepted;
    }
    let enh = r.enhanced().unwrap_or("");
    let text = r.text().to_ascii_lowercase();
    if enh == "5.4.5"
        || text.contains("submissionquotaexceeded")
        || text.contains("sending limit exceeded")
        || text.contains("daily user sending quota")
        || (enh == "5.2.0" && text.contains("quota"))
    {
        return Verdict::Quota;
    }
    if enh == "5.7.60"
        || enh == "5.7.1"
            && (text.contains("relay")
                || text.contains("send as")
                || text.contains("sendas")
                || text.contains("not owned"))
    {
        return Verdict::SenderDenied;
    }
    if r.is_transient() && crate::upstream::says_too_many_connections(&text) {
        return Verdict::Busy;
    }
    if r.is_transient() {
        if matches!(enh, "4.7.0" | "4.3.2" | "4.7.28" | "4.7.1") && r.code != 450
            || r.code == 421
            || text.contains("rate")
            || text.contains("too many")
        {
            return Verdict::Throttled;
        }
        return Verdict::Transient;
    }
    Verdict::Permanent
}

/// The client-facing reply for an upstream verdict on MAIL, RCPT or the
/// message: the upstream's code and text, with the account named; quota and
/// sender problems rewritten to say what they mean.
pub fn relay_reply(account: &str, email: &str, stage: Stage, r: &Reply) -> Reply {
    let upstream = crate::text::sanitize(&r.text(), 300);
    match classify(r) {
        Verdict::Quota => Reply::new(
            451,
            "4.4.5",
            format!("Daily sending quota of account {account} reached; try again later (upstream: {} {upstream})", r.code),
        ),
        Verdict::SenderDenied => Reply::new(
            550,
            "5.7.1",
            format!(
                "Account {account} ({email}) may not send as this From address; send from {email} or an alias the provider allows (upstream: {} {upstream})",
                r.code
            ),
        ),
        _ => {
            let enh = r.enhanced().map(str::to_owned).unwrap_or_else(|| {
                let class = r.code / 100;
                match (class, stage) {
                    (2, Stage::MailFrom) => "2.1.0".into(),
                    (2, Stage::RcptTo) => "2.1.5".into(),
                    (c, _) => format!("{c}.0.0"),
                }
            });
            let text = r.text();
            let text = text.strip_prefix(&enh).map(str::trim_start).unwrap_or(&text);
            let code = if (200..600).contains(&r.code) && r.code != 354 { r.code } else { 451 };
            Reply::new(code, &enh, format!("{} (account {account})", crate::text::sanitize(text, 300)))
        }
    }
}

/// The SMTP reply a local client gets for an upstream failure: the failure
/// and its fix, under the code that tells the client to retry later.
pub fn reply_for(e: &UpstreamError) -> Reply {
    let text = match e.hint() {
        Some(h) => format!("{e}. Fix: {h}"),
        None => e.to_string(),
    };
    match e {
        UpstreamError::AuthRejected { .. }
        | UpstreamError::AuthTemporary { .. }
        | UpstreamError::Credential(_)
        | UpstreamError::Tls { .. }
        | UpstreamError::NoStartTls { .. }
        | UpstreamError::NoMechanism { .. } => Reply::new(454, "4.7.0", text),
        UpstreamError::Connect { .. }
        | UpstreamError::ConnectTimeout { .. }
        | UpstreamError::Resolve { .. } => Reply::new(451, "4.4.1", text),
        UpstreamError::TooManyConnections { .. }
        | UpstreamError::NoConnection { .. }
        | UpstreamError::RateLimited { .. } => Reply::new(451, "4.4.5", text),
        _ => Reply::new(451, "4.4.2", text),
    }
}

/// Capabilities from the upstream's EHLO reply.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub starttls: bool,
    pub pipelining: bool,
    /// CHUNKING (RFC 3030): BDAT.
    pub chunking: bool,
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub auth: Vec<String>,
    pub lines: Vec<String>,
}

impl Capabilities {
    fn parse(r: &Reply) -> Capabilities {
        let mut c = Capabilities {
            lines: r.lines.iter().skip(1).cloned().collect(),
            ..Default::default()
        };
        for line in r.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let kw = words.next().unwrap_or("").to_ascii_uppercase();
            match kw.as_str() {
                "STARTTLS" => c.starttls = true,
                "PIPELINING" => c.pipelining = true,
                "CHUNKING" => c.chunking = true,
                "8BITMIME" => c.eightbitmime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "SIZE" => c.size = words.next().and_then(|n| n.parse().ok()),
                "AUTH" => c.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ if kw.starts_with("AUTH=") => {
                    c.auth.extend(kw[5..].split(',').map(str::to_owned))
                }
                _ => {}
            }
        }
        c.auth.dedup();
        c
    }

    pub fn offers(&self, m: Mechanism) -> bool {
        self.auth.iter().any(|a| a == m.as_str())
    }
}

/// One connection to an upstream SMTP server.
pub struct Connection {
    stream: ClientStream<TcpStream>,
    rbuf: Vec<u8>,
    target: String,
    timeout: Duration,
    data_timeout: Duration,
    pub caps: Capabilities,
    pub peer: SocketAddr,
    last_used: Instant,
    /// A transaction was left open: RSET before reuse.
    dirty: bool,
    /// Its place under the account's connection cap (freed when dropped).
    slot: Option<Slot>,
}

/// Result of the login step, telling a refused cached token apart.
enum AuthFailure {
    Error(UpstreamError),
    CachedTokenRefused(Secret, UpstreamError),
}

impl Connection {
    /// TCP, greeting, EHLO, TLS as configured (never a plaintext fallback).
    pub async fn open(cfg: &UpstreamConfig) -> Result<Connection, UpstreamError> {
        let target = cfg.target();
        let ep = &cfg.endpoint;
        let secs = cfg.timeout.as_secs().max(1);
        let (tcp, peer) = crate::upstream::dial(&ep.host, ep.port, cfg.timeout).await?;
        let stream = match ep.tls {
            TlsMode::Implicit => MaybeTls::Tls(Box::new(tls_connect(cfg, tcp).await?)),
            _ => MaybeTls::Plain(tcp),
        };
        let mut c = Connection {
            stream,
            rbuf: Vec::with_capacity(4096),
            target: target.clone(),
            timeout: cfg.timeout,
            data_timeout: cfg.data_timeout,
            caps: Capabilities::default(),
            peer,
            last_used: Instant::now(),
            dirty: false,
            slot: None,
        };
        let greeting = match c.read_reply_within(cfg.timeout, Stage::Greeting).await {
            Ok(r) => r,
            Err(UpstreamError::Timeout { .. }) => {
                return Err(UpstreamError::NoGreeting {
                    target,
                    secs,
                    tls: ep.tls,
                })
            }
            Err(e) => return Err(e),
        };
        if greeting.code != 220 && crate::upstream::says_too_many_connections(&greeting.to_string())
        {
            return Err(UpstreamError::TooManyConnections {
                target,
                detail: greeting.to_string(),
            });
        }
        if greeting.code != 220 {
            return Err(UpstreamError::Greeting {
                target,
                detail: greeting.to_string(),
            });
        }
        c.ehlo(&cfg.ehlo_name).await?;
        if ep.tls == TlsMode::Starttls {
            if !c.caps.starttls {
                return Err(UpstreamError::NoStartTls { target });
            }
            let r = c.command("STARTTLS", Stage::StartTls).await?;
            if r.code != 220 {
                return Err(UpstreamError::Tls {
                    target,
                    failure: TlsFailure::StartTlsRefused(r.to_string()),
                    tls: ep.tls,
                });
            }
            c.stream = c
                .stream
                .upgrade(|tcp| {
                    crate::upstream::starttls(&c.rbuf, tcp, &cfg.endpoint, &cfg.tls, cfg.timeout)
                })
                .await?;
            c.ehlo(&cfg.ehlo_name).await?;
        }
        Ok(c)
    }

    async fn ehlo(&mut self, name: &str) -> Result<(), UpstreamError> {
        let r = self.command(&format!("EHLO {name}"), Stage::Ehlo).await?;
        if r.code != 250 {
            return Err(UpstreamError::Protocol {
                target: self.target.clone(),
                what: format!("EHLO refused: {r}"),
            });
        }
        self.caps = Capabilities::parse(&r);
        Ok(())
    }

    async fn write(&mut self, data: &[u8], stage: Stage) -> Result<(), UpstreamError> {
        crate::upstream::write_within(&mut self.stream, data, self.timeout, &self.target, stage)
            .await
    }

    async fn read_reply_within(
        &mut self,
        t: Duration,
        stage: Stage,
    ) -> Result<Reply, UpstreamError> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match codec::parse_reply(&self.rbuf) {
                Ok(ReplyParse::Done(r, n)) => {
                    self.rbuf.drain(..n);
                    self.last_used = Instant::now();
                    return Ok(r);
                }
                Ok(ReplyParse::Incomplete) => {}
                Err(e) => {
                    return Err(UpstreamError::Protocol {
                        target: self.target.clone(),
                        what: format!("bad reply to {stage}: {e}"),
                    })
                }
            }
            self.rbuf.reserve(4096);
            crate::upstream::read_more(
                &mut self.stream,
                &mut self.rbuf,
                deadline,
                &self.target,
                stage,
                t.as_secs(),
            )
            .await?;
        }
    }

    async fn read_reply(&mut self, stage: Stage) -> Result<Reply, UpstreamError> {
        self.read_reply_within(self.timeout, stage).await
    }

    /// Send one command line and read its reply.
    async fn command(&mut self, line: &str, stage: Stage) -> Result<Reply, UpstreamError> {
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        self.write(&buf, stage).await?;
        self.read_reply(stage).await
    }

    /// Log in with the account's credential.
    async fn login(&mut self, cfg: &UpstreamConfig) -> Result<(), AuthFailure> {
        match &cfg.credential {
            Credential::Password(src) => {
                let pw = Credential::password(&cfg.account, src)
                    .map_err(|e| AuthFailure::Error(e.into()))?;
                let r = if self.caps.offers(Mechanism::Plain) {
                    let ir = sasl::encode_response(&sasl::plain_encode("", &cfg.username, &pw));
                    self.command(&format!("AUTH PLAIN {ir}"), Stage::Auth).await
                } else if self.caps.offers(Mechanism::Login) {
                    self.auth_login(&cfg.username, &pw).await
                } else {
                    return Err(AuthFailure::Error(UpstreamError::NoMechanism {
                        target: self.target.clone(),
                        offered: self.caps.auth.join(" "),
                        needed: "PLAIN or LOGIN (app password)",
                    }));
                }
                .map_err(AuthFailure::Error)?;
                self.auth_outcome(cfg, r, CredentialKind::AppPassword)
                    .map_err(AuthFailure::Error)
            }
            Credential::Bearer(src) => {
                let mech = if self.caps.offers(Mechanism::XOAuth2) {
                    Mechanism::XOAuth2
                } else if self.caps.offers(Mechanism::OAuthBearer) {
                    Mechanism::OAuthBearer
                } else {
                    return Err(AuthFailure::Error(UpstreamError::NoMechanism {
                        target: self.target.clone(),
                        offered: self.caps.auth.join(" "),
                        needed: "XOAUTH2 or OAUTHBEARER (OAuth2)",
                    }));
                };
                let (raw, token) =
                    crate::upstream::bearer_response(src, mech, &cfg.username, &cfg.endpoint)
                        .await
                        .map_err(AuthFailure::Error)?;
                let line = format!("AUTH {} {}", mech.as_str(), sasl::encode_response(&raw));
                let mut r = self
                    .command(&line, Stage::Auth)
                    .await
                    .map_err(AuthFailure::Error)?;
                if r.code == 334 {
                    // The error challenge: a base64 JSON status. Acknowledge it
                    // so the server sends its final (failure) reply.
                    let detail = r
                        .lines
                        .first()
                        .and_then(|l| sasl::decode_response(l.trim().as_bytes()).ok())
                        .and_then(|raw| sasl::bearer_error_decode(&raw));
                    debug!(?detail, "bearer token refused with a challenge");
                    let ack = sasl::encode_response(sasl::bearer_error_ack(mech));
                    let ack = if ack == "=" { String::new() } else { ack };
                    r = self
                        .command(&ack, Stage::Auth)
                        .await
                        .map_err(AuthFailure::Error)?;
                }
                match self.auth_outcome(cfg, r, CredentialKind::AccessToken) {
                    Ok(()) => Ok(()),
                    Err(e @ UpstreamError::AuthRejected { .. }) if !token.fresh => {
                        Err(AuthFailure::CachedTokenRefused(token.secret, e))
                    }
                    Err(e) => Err(AuthFailure::Error(e)),
                }
            }
        }
    }

    async fn auth_login(&mut self, user: &str, pw: &Secret) -> Result<Reply, UpstreamError> {
        let r = self.command("AUTH LOGIN", Stage::Auth).await?;
        if r.code != 334 {
            return Ok(r);
        }
        let r = self
            .command(&sasl::encode_response(user.as_bytes()), Stage::Auth)
            .await?;
        if r.code != 334 {
            return Ok(r);
        }
        self.command(&sasl::encode_response(pw.expose().as_bytes()), Stage::Auth)
            .await
    }

    fn auth_outcome(
        &self,
        cfg: &UpstreamConfig,
        r: Reply,
        kind: CredentialKind,
    ) -> Result<(), UpstreamError> {
        match r.code {
            235 => Ok(()),
            c if (400..500).contains(&c)
                && crate::upstream::says_too_many_connections(&r.to_string()) =>
            {
                Err(UpstreamError::TooManyConnections {
                    target: self.target.clone(),
                    detail: r.to_string(),
                })
            }
            c if (400..500).contains(&c) => Err(UpstreamError::AuthTemporary {
                account: cfg.account.clone(),
                detail: r.to_string(),
            }),
            _ => Err(UpstreamError::AuthRejected {
                account: cfg.account.clone(),
                kind,
                detail: r.to_string(),
            }),
        }
    }

    /// MAIL FROM with the parameters this upstream supports.
    pub async fn mail(&mut self, from: &Path, params: &MailParams) -> Result<Reply, UpstreamError> {
        self.command(&self.mail_line(from, params), Stage::MailFrom)
            .await
    }

    fn mail_line(&self, from: &Path, params: &MailParams) -> String {
        let mut line = format!("MAIL FROM:{from}");
        if let (Some(size), Some(_)) = (params.size, self.caps.size) {
            line.push_str(&format!(" SIZE={size}"));
        }
        if params.body == Some(codec::Body::EightBitMime) && self.caps.eightbitmime {
            line.push_str(" BODY=8BITMIME");
        }
        if params.smtputf8 && self.caps.smtputf8 {
            line.push_str(" SMTPUTF8");
        }
        line
    }

    pub async fn rcpt(&mut self, to: &Path) -> Result<Reply, UpstreamError> {
        self.command(&format!("RCPT TO:{to}"), Stage::RcptTo).await
    }

    /// The message and the final reply. With CHUNKING (RFC 3030) it goes as
    /// one `BDAT n LAST` chunk, command and bytes in one write: one round
    /// trip and no dot-stuffing. Otherwise DATA, the 354, the dot-stuffed
    /// message.
    pub async fn data(&mut self, message: &[u8]) -> Result<Reply, UpstreamError> {
        if self.caps.chunking {
            let mut chunk = Vec::with_capacity(message.len() + 32);
            chunk.extend_from_slice(format!("BDAT {} LAST\r\n", message.len()).as_bytes());
            chunk.extend_from_slice(message);
            self.write(&chunk, Stage::Message).await?;
            drop(chunk);
            return self
                .read_reply_within(self.data_timeout, Stage::MessageEnd)
                .await;
        }
        let r = self.command("DATA", Stage::Data).await?;
        if r.code != 354 {
            return Ok(r);
        }
        let mut stuffed = Vec::new();
        codec::stuff(message, &mut stuffed);
        self.write(&stuffed, Stage::Message).await?;
        drop(stuffed);
        self.read_reply_within(self.data_timeout, Stage::MessageEnd)
            .await
    }

    /// Replay a whole envelope (pipelined when the server allows): MAIL and
    /// every RCPT; returns MAIL's reply and each RCPT's.
    pub async fn envelope(
        &mut self,
        from: &Path,
        params: &MailParams,
        rcpts: &[Path],
    ) -> Result<(Reply, Vec<Reply>), UpstreamError> {
        if !self.caps.pipelining {
            let m = self.mail(from, params).await?;
            let mut rs = Vec::new();
            if m.is_positive() {
                for r in rcpts {
                    rs.push(self.rcpt(r).await?);
                }
            }
            return Ok((m, rs));
        }
        let mut buf = self.mail_line(from, params);
        buf.push_str("\r\n");
        for r in rcpts {
            buf.push_str(&format!("RCPT TO:{r}\r\n"));
        }
        self.write(buf.as_bytes(), Stage::MailFrom).await?;
        let m = self.read_reply(Stage::MailFrom).await?;
        let mut rs = Vec::with_capacity(rcpts.len());
        for _ in rcpts {
            rs.push(self.read_reply(Stage::RcptTo).await?);
        }
        if !m.is_positive() {
            rs.clear();
        }
        Ok((m, rs))
    }

    pub async fn rset(&mut self) -> Result<bool, UpstreamError> {
        Ok(self.command("RSET", Stage::Rset).await?.code == 250)
    }

    pub async fn quit(mut self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.command("QUIT", Stage::Quit)).await;
    }

    /// Mark that a transaction was abandoned on this connection.
    pub fn set_dirty(&mut self) {
        self.dirty = true;
    }
}

async fn tls_connect(
    cfg: &UpstreamConfig,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    crate::upstream::tls_connect(&cfg.endpoint, &cfg.tls, tcp, cfg.timeout).await
}

/// One account's relay: configuration, warm authenticated connections, and
/// the caps on how many connections may be open and how many messages may
/// start per minute.
pub struct AccountRelay {
    pub cfg: UpstreamConfig,
    warm: std::sync::Mutex<Vec<Connection>>,
    gate: Arc<Gate>,
}

impl AccountRelay {
    /// Its upstream connections now: open, the cap in force, `max_connections`.
    pub fn gate_status(&self) -> crate::gate::GateStatus {
        self.gate.status()
    }

    /// Count against `old`'s gate when the caps are unchanged: the
    /// connections that sessions of the previous config still hold then
    /// stay under the one cap.
    pub fn keep_gate(&mut self, old: &AccountRelay) {
        if self.gate.same_caps(&old.gate) {
            self.gate = old.gate.clone();
        }
    }
}

impl std::fmt::Debug for AccountRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRelay")
            .field("account", &self.cfg.account)
            .finish()
    }
}

impl AccountRelay {
    /// A relay without connection or rate caps worth speaking of (tests,
    /// `doctor`).
    pub fn new(cfg: UpstreamConfig) -> AccountRelay {
        let gate = Gate::new(&cfg.account, usize::MAX, None, None);
        AccountRelay::with_gate(cfg, gate)
    }

    pub fn with_gate(cfg: UpstreamConfig, gate: Arc<Gate>) -> AccountRelay {
        AccountRelay {
            cfg,
            warm: std::sync::Mutex::new(Vec::new()),
            gate,
        }
    }

    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Build from an account's config (None when it has no SMTP server or
    /// no usable credential source).
    pub fn from_account(
        a: &Account,
        ehlo_name: &str,
        limits: &crate::config::Limits,
        tokens: Option<&Arc<crate::auth::oauth::TokenManager>>,
        board: Option<&Arc<Board>>,
    ) -> Result<Option<AccountRelay>, crate::tls::TlsError> {
        let Some(smtp) = &a.smtp else { return Ok(None) };
        let Some(credential) = Credential::for_account(a, tokens) else {
            return Ok(None);
        };
        let tls = crate::tls::client_config(a.ca_file.as_deref(), a.tls_pin)?;
        let gate = Gate::new(&a.name, a.max_connections, a.max_per_minute, board.cloned());
        Ok(Some(AccountRelay::with_gate(
            UpstreamConfig {
                account: a.name.clone(),
                email: a.email.clone(),
                endpoint: smtp.endpoint.clone(),
                username: smtp.username.clone(),
                credential,
                tls,
                ehlo_name: ehlo_name.to_owned(),
                timeout: limits.upstream_timeout,
                data_timeout: limits.upstream_data_timeout,
                keepalive: limits.upstream_keepalive,
                warm_max: limits.upstream_pool,
            },
            gate,
        )))
    }

    /// A fresh, authenticated connection. A cached token that the server
    /// refuses is dropped, a new one fetched, and the login tried once more.
    pub async fn connect(&self) -> Result<Connection, UpstreamError> {
        let slot = self.gate.try_open();
        self.connect_in(slot).await
    }

    /// [`AccountRelay::connect`] in `slot` (the connection keeps it).
    async fn connect_in(&self, slot: Option<Slot>) -> Result<Connection, UpstreamError> {
        let mut retried = false;
        let mut slot = slot;
        let (metrics, account) = (&crate::metrics::METRICS, &self.cfg.account);
        loop {
            let mut c = metrics
                .timed("smtp", account, "connect", Connection::open(&self.cfg))
                .await?;
            c.slot = slot.take();
            match metrics
                .timed("smtp", account, "login", c.login(&self.cfg))
                .await
            {
                Ok(()) => {
                    debug!(account = %self.cfg.account, upstream = %self.cfg.target(), "upstream login ok");
                    return Ok(c);
                }
                Err(AuthFailure::CachedTokenRefused(token, e)) if !retried => {
                    info!(account = %self.cfg.account, "upstream refused the cached token; fetching a new one");
                    if let Credential::Bearer(src) = &self.cfg.credential {
                        src.invalidate(&token).await;
                    }
                    retried = true;
                    drop(e);
                    slot = c.slot.take();
                    c.quit().await;
                }
                Err(AuthFailure::CachedTokenRefused(_, e)) | Err(AuthFailure::Error(e)) => {
                    c.quit().await;
                    return Err(e);
                }
            }
        }
    }

    /// A warm connection if a healthy one is kept, else a new one if the
    /// account's cap allows, else the next one given back, waiting up to
    /// `upstream_timeout`. A server that refuses one more connection lowers
    /// the cap (see [`Gate::lower`]) and the wait goes on for a connection
    /// already open. `reused` tells the caller whether a failure could be a
    /// stale socket.
    pub async fn checkout(&self) -> Result<(Connection, bool), UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        loop {
            let freed = self.gate.freed().notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(c) = self.take_warm().await {
                return Ok((c, true));
            }
            let refused = match self.gate.try_open() {
                Some(slot) => match self.connect_in(Some(slot)).await {
                    Ok(c) => return Ok((c, false)),
                    Err(UpstreamError::TooManyConnections { detail, .. }) => {
                        self.gate.lower(&detail);
                        true
                    }
                    Err(e) => return Err(e),
                },
                None => false,
            };
            // Wait for a connection given back; after a refusal with none of
            // ours open, try again a little later.
            let retry = tokio::time::Instant::now() + Duration::from_millis(500);
            let until = if refused {
                retry.min(deadline)
            } else {
                deadline
            };
            if tokio::time::timeout_at(until, freed).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                warn!(account = %self.cfg.account, cap = self.gate.cap(), "no upstream connection free in time");
                return Err(UpstreamError::NoConnection {
                    account: self.cfg.account.clone(),
                    cap: self.gate.cap(),
                    secs: self.cfg.timeout.as_secs(),
                });
            }
        }
    }

    /// A healthy warm connection, if one is kept.
    async fn take_warm(&self) -> Option<Connection> {
        loop {
            let candidate = {
                let mut warm = self.warm.lock().expect("warm pool lock");
                let keep = self.cfg.keepalive;
                warm.retain(|c| c.last_used.elapsed() < keep);
                warm.pop()
            };
            let mut c = candidate?;
            if c.dirty || c.last_used.elapsed() > HEALTH_CHECK_AFTER {
                match c.rset().await {
                    Ok(true) => c.dirty = false,
                    _ => continue,
                }
            }
            return Some(c);
        }
    }

    /// Return a connection after a finished transaction.
    pub fn checkin(&self, c: Connection) {
        {
            let mut warm = self.warm.lock().expect("warm pool lock");
            let keep = self.cfg.warm_max.min(self.gate.cap());
            if warm.len() < keep && !self.cfg.keepalive.is_zero() {
                warm.push(c);
            }
            // Else it closes here, and its slot frees.
        }
        self.gate.freed().notify_waiters();
    }
}

/// An upstream verdict: the reply for the local client and what it means
/// for routing (pools fail over on quota, throttle, auth and transient ones).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub reply: Reply,
    pub verdict: Verdict,
    /// The upstream's own words (or the failure), for logs and `status`.
    pub detail: String,
}

impl Outcome {
    fn upstream(account: &str, email: &str, stage: Stage, r: &Reply) -> Outcome {
        Outcome {
            reply: relay_reply(account, email, stage, r),
            verdict: classify(r),
            detail: r.to_string(),
        }
    }

    fn failure(e: &UpstreamError) -> Outcome {
        Outcome {
            reply: reply_for(e),
            verdict: e.verdict(),
            detail: e.to_string(),
        }
    }

    pub fn accepted(&self) -> bool {
        self.verdict == Verdict::Accepted
    }
}

/// A transaction open on an account's connection.
pub struct RelayTransaction {
    relay: Arc<AccountRelay>,
    conn: Option<Connection>,
    from: Path,
}

impl std::fmt::Debug for RelayTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayTransaction")
            .field("account", &self.relay.cfg.account)
            .field("from", &self.from)
            .finish()
    }
}

impl RelayTransaction {
    /// MAIL FROM on a (warm or new) connection. A reused connection that
    /// turns out dead is replaced once, transparently.
    pub async fn open(
        relay: Arc<AccountRelay>,
        from: &Path,
        params: &MailParams,
    ) -> Result<(RelayTransaction, Outcome), Outcome> {
        Self::open_with(relay, from, params, &[])
            .await
            .map(|(tx, mail, _)| (tx, mail))
    }

    /// Open and replay a whole envelope (pipelined when the server allows):
    /// MAIL and every RCPT. Returns the transaction, MAIL's outcome and each
    /// RCPT's outcome; Err when MAIL itself failed.
    pub async fn open_with(
        relay: Arc<AccountRelay>,
        from: &Path,
        params: &MailParams,
        rcpts: &[Path],
    ) -> Result<(RelayTransaction, Outcome, Vec<Outcome>), Outcome> {
        let cfg = &relay.cfg;
        let deadline = tokio::time::Instant::now() + cfg.timeout;
        if relay.gate.admit(deadline).await.is_err() {
            let e = UpstreamError::RateLimited {
                account: cfg.account.clone(),
                per_minute: relay.gate.max_per_minute().unwrap_or(0),
            };
            info!(account = %cfg.account, "max_per_minute reached");
            return Err(Outcome::failure(&e));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut conn, reused) = match relay.checkout().await {
                Ok(x) => x,
                Err(e) => {
                    warn!(account = %cfg.account, error = %e, hint = e.hint().as_deref().unwrap_or(""), "upstream unavailable");
                    return Err(Outcome::failure(&e));
                }
            };
            if params.smtputf8 && !conn.caps.smtputf8 {
                relay.checkin(conn);
                return Err(Outcome {
                    reply: Reply::new(
                        553,
                        "5.6.7",
                        format!(
                            "The server of account {} does not support SMTPUTF8 addresses",
                            cfg.account
                        ),
                    ),
                    verdict: Verdict::Permanent,
                    detail: "no SMTPUTF8".into(),
                });
            }
            match conn.envelope(from, params, rcpts).await {
                Ok((m, rs)) if m.is_positive() => {
                    let mail = Outcome::upstream(&cfg.account, &cfg.email, Stage::MailFrom, &m);
                    let rcpt_outcomes = rs
                        .iter()
                        .map(|r| Outcome::upstream(&cfg.account, &cfg.email, Stage::RcptTo, r))
                        .collect();
                    let tx = RelayTransaction {
                        relay: relay.clone(),
                        conn: Some(conn),
                        from: from.clone(),
                    };
                    return Ok((tx, mail, rcpt_outcomes));
                }
                Ok((m, _)) => {
                    info!(account = %cfg.account, reply = %m, "upstream refused MAIL FROM");
                    relay.checkin(conn);
                    return Err(Outcome::upstream(
                        &cfg.account,
                        &cfg.email,
                        Stage::MailFrom,
                        &m,
                    ));
                }
                Err(e) if reused && attempt == 1 => {
                    debug!(account = %cfg.account, error = %e, "warm connection was stale; reconnecting");
                    continue;
                }
                Err(e) => {
                    warn!(account = %cfg.account, error = %e, "upstream failed at MAIL FROM");
                    return Err(Outcome::failure(&e));
                }
            }
        }
    }

    pub fn account(&self) -> &str {
        &self.relay.cfg.account
    }

    pub fn relay(&self) -> &Arc<AccountRelay> {
        &self.relay
    }

    fn lost(&self) -> Outcome {
        Outcome {
            reply: Reply::new(
                451,
                "4.4.2",
                format!(
                    "Connection to the server of account {} was lost; start the transaction again",
                    self.relay.cfg.account
                ),
            ),
            verdict: Verdict::Transient,
            detail: "connection lost".into(),
        }
    }

    pub async fn rcpt(&mut self, to: &Path) -> Outcome {
        let Some(conn) = self.conn.as_mut() else {
            return self.lost();
        };
        match conn.rcpt(to).await {
            Ok(r) => Outcome::upstream(
                &self.relay.cfg.account,
                &self.relay.cfg.email,
                Stage::RcptTo,
                &r,
            ),
            Err(e) => {
                warn!(account = %self.relay.cfg.account, error = %e, "upstream failed at RCPT TO");
                self.conn = None;
                Outcome::failure(&e)
            }
        }
    }

    /// Submit the message; the connection goes back to the warm pool when
    /// the exchange completed (whatever the verdict).
    pub async fn data(mut self, message: &[u8]) -> Outcome {
        let Some(mut conn) = self.conn.take() else {
            return self.lost();
        };
        let account = self.relay.cfg.account.clone();
        // The session's summary line names the account that took it.
        tracing::Span::current().record("account", account.as_str());
        let metrics = &crate::metrics::METRICS;
        match metrics
            .timed("smtp", &account, "submit", conn.data(message))
            .await
        {
            Ok(r) => {
                // The session's summary line (or the queue's "delivered") says it at info.
                debug!(account = %account, upstream = %conn.target, reply = %r, "upstream verdict on the message");
                self.relay.checkin(conn);
                let o = Outcome::upstream(&account, &self.relay.cfg.email, Stage::MessageEnd, &r);
                metrics.upstream_message(&account, o.verdict.as_str());
                o
            }
            Err(e) => {
                // The message may or may not have arrived: never claim it did.
                warn!(account = %account, error = %e, "upstream failed during DATA; not accepted");
                metrics.upstream_message(&account, "lost");
                Outcome::failure(&e)
            }
        }
    }

    /// The client abandoned the transaction: keep the connection for reuse;
    /// it gets an RSET before the next transaction.
    pub fn abort(mut self) {
        if let Some(mut c) = self.conn.take() {
            c.set_dirty();
            self.relay.checkin(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16, text: &str) -> Reply {
        Reply::plain(code, vec![text.to_owned()])
    }

    #[test]
    fn verdicts() {
        let cases = [
            (r(250, "2.0.0 OK"), Verdict::Accepted),
            (
                r(550, "5.4.5 Daily user sending limit exceeded."),
                Verdict::Quota,
            ),
            (
                r(
                    554,
                    "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
                ),
                Verdict::Quota,
            ),
            (r(550, "5.7.1 Relaying denied"), Verdict::SenderDenied),
            (
                r(
                    550,
                    "5.7.60 SMTP; Client does not have permissions to send as this sender",
                ),
                Verdict::SenderDenied,
            ),
            (
                r(421, "4.7.0 Try again later, closing connection"),
                Verdict::Throttled,
            ),
            (
                r(
                    432,
                    "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
                ),
                Verdict::Busy,
            ),
            (
                r(432, "4.3.2 Concurrent connections limit exceeded."),
                Verdict::Busy,
            ),
            (
                r(
                    421,
                    "4.7.0 Maximum number of connections from user+IP exceeded",
                ),
                Verdict::Busy,
            ),
            (r(432, "4.3.2 Try again later"), Verdict::Throttled),
            (r(454, "4.7.0 Too many login attempts"), Verdict::Throttled),
            (
                r(451, "4.3.0 Mail server temporarily rejected message"),
                Verdict::Transient,
            ),
            (r(550, "5.1.1 No such user"), Verdict::Permanent),
        ];
        for (reply, want) in cases {
            assert_eq!(classify(&reply), want, "{reply}");
        }
    }

    #[test]
    fn relay_replies_name_the_account() {
        let x = relay_reply(
            "alice",
            "alice@gmail.com",
            Stage::RcptTo,
            &r(550, "5.1.1 No such user"),
        );
        assert_eq!(x.to_bytes(), b"550 5.1.1 No such user (account alice)\r\n");
        let x = relay_reply("alice", "a@x", Stage::MailFrom, &r(250, "OK"));
        assert_eq!(x.to_bytes(), b"250 2.1.0 OK (account alice)\r\n");
        let x = relay_reply(
            "alice",
            "a@x",
            Stage::MessageEnd,
            &r(550, "5.4.5 Daily user sending limit exceeded"),
        );
        assert_eq!(x.code, 451);
        assert_eq!(x.enhanced(), Some("4.4.5"));
        assert!(x
            .text()
            .contains("Daily sending quota of account alice reached"));
        let x = relay_reply(
            "alice",
            "a@x",
            Stage::MailFrom,
            &r(550, "5.7.60 SendAsDenied"),
        );
        assert!(x.text().contains("may not send as this From"));
        // Never pass an odd code through as if it were a verdict.
        assert_eq!(
            relay_reply("a", "a@x", Stage::MessageEnd, &r(354, "go")).code,
            451
        );
    }

    #[test]
    fn capabilities() {
        let ehlo = Reply::plain(
            250,
            vec![
                "smtp.example Hello".into(),
                "SIZE 35882577".into(),
                "8BITMIME".into(),
                "STARTTLS".into(),
                "AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH".into(),
                "ENHANCEDSTATUSCODES".into(),
                "PIPELINING".into(),
                "CHUNKING".into(),
                "SMTPUTF8".into(),
            ],
        );
        let c = Capabilities::parse(&ehlo);
        assert!(c.starttls && c.pipelining && c.chunking && c.eightbitmime && c.smtputf8);
        assert_eq!(c.size, Some(35882577));
        assert!(
            c.offers(Mechanism::XOAuth2)
                && c.offers(Mechanism::OAuthBearer)
                && c.offers(Mechanism::Plain)
        );
    }
}
