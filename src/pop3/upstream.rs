//! The upstream POP3 client: connect with implicit TLS (995) or STLS (RFC
//! 2595; never a plaintext fallback), read the greeting, learn CAPA (RFC
//! 2449), and log in with `AUTH XOAUTH2` or `AUTH OAUTHBEARER` (RFC 5034,
//! the mechanism's response on its own line after `+`, as Microsoft
//! requires), or with an app password over `USER`/`PASS` or `AUTH PLAIN`.
//! Every command has `upstream_timeout` for its whole answer. After login
//! the connection is handed to the splice and this module is done.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::time::Instant;
use tracing::debug;

use crate::auth::credentials::Credential;
use crate::io::{MaybeTls, ReadAhead};
use crate::pop3::codec::{self, AuthAnswer, Command, Line, MultiLine, Response, Status};
use crate::providers::TlsMode;
use crate::sasl::{self, Mechanism};
use crate::secret::Secret;
use crate::upstream::{CredentialKind, Stage, UpstreamError};

/// A CAPA answer larger than this is not a capability list.
const MAX_CAPA: usize = 64 * 1024;
/// `+` continuations one AUTH may draw: the payload and the
/// acknowledgement of an error challenge.
const MAX_CONTINUATIONS: usize = 2;

/// Where and how to reach one account's POP3 server.
pub type Pop3Account = crate::upstream::MailboxServer;

/// The upstream socket: plaintext, or TLS over a read-ahead socket.
pub type UpstreamStream = crate::upstream::ReaderStream;

/// A connection to the upstream POP3 server, before or after login.
pub struct Pop3Upstream {
    pub stream: UpstreamStream,
    /// Bytes read but not yet consumed (handed to the splice after login).
    pub rbuf: BytesMut,
    /// CAPA lines (empty when the server has no CAPA).
    pub caps: Vec<String>,
    pub peer: SocketAddr,
    target: String,
    timeout: Duration,
}

/// Why the upstream login failed, telling a refused cached token apart.
pub enum LoginFailure {
    Error(UpstreamError),
    CachedTokenRefused(Secret, UpstreamError),
}

impl From<UpstreamError> for LoginFailure {
    fn from(e: UpstreamError) -> Self {
        LoginFailure::Error(e)
    }
}

/// A status line from the server.
struct Answer {
    ok: bool,
    code: Option<String>,
    text: String,
}

impl Answer {
    fn line(&self) -> String {
        let code = self
            .code
            .as_ref()
            .map(|c| format!("[{c}] "))
            .unwrap_or_default();
        format!(
            "{} {code}{}",
            if self.ok { "+OK" } else { "-ERR" },
            self.text
        )
    }

    /// Whether the response code is `name` (RFC 2449 codes are
    /// hierarchical: `SYS/TEMP`; compared case-insensitively).
    fn code_is(&self, name: &str) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(name))
    }
}

impl Pop3Upstream {
    /// The stream and what was read ahead of it, for the splice; the rest
    /// (capabilities, names) is freed here, not held by an idle session.
    pub fn into_parts(self) -> (UpstreamStream, BytesMut) {
        (self.stream, self.rbuf)
    }

    /// TCP, TLS as configured, greeting, CAPA.
    pub async fn connect(cfg: &Pop3Account) -> Result<Pop3Upstream, UpstreamError> {
        let target = cfg.target();
        let (tcp, peer) =
            crate::upstream::dial(&cfg.endpoint.host, cfg.endpoint.port, cfg.timeout).await?;
        let stream = match cfg.endpoint.tls {
            TlsMode::Implicit => {
                let tls = crate::upstream::tls_connect(
                    &cfg.endpoint,
                    &cfg.tls,
                    ReadAhead::new(tcp),
                    cfg.timeout,
                )
                .await?;
                MaybeTls::Tls(Box::new(tls))
            }
            _ => MaybeTls::Plain(tcp),
        };
        let mut up = Pop3Upstream {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            caps: Vec::new(),
            peer,
            target: target.clone(),
            timeout: cfg.timeout,
        };
        let deadline = up.deadline();
        let greeting = match up.status(Stage::Greeting, deadline).await {
            Ok(g) => g,
            Err(UpstreamError::Timeout { .. }) => {
                return Err(UpstreamError::NoGreeting {
                    target,
                    secs: cfg.timeout.as_secs().max(1),
                    tls: cfg.endpoint.tls,
                })
            }
            Err(e) => return Err(e),
        };
        if !greeting.ok {
            let detail = greeting.line();
            return Err(
                if crate::upstream::says_too_many_connections(&greeting.text) {
                    UpstreamError::TooManyConnections { target, detail }
                } else {
                    UpstreamError::Greeting { target, detail }
                },
            );
        }
        up.capa().await?;
        if cfg.endpoint.tls == TlsMode::Starttls {
            if !codec::capability_has(&up.caps, "STLS") {
                return Err(UpstreamError::NoStartTls { target });
            }
            let deadline = up.deadline();
            up.send(&Command::Stls, Stage::StartTls).await?;
            let a = up.status(Stage::StartTls, deadline).await?;
            if !a.ok {
                return Err(UpstreamError::NoStartTls { target });
            }
            up.stream = crate::upstream::upgrade_reader(up.stream, &up.rbuf, cfg).await?;
            // RFC 2595 §4: after STLS the client must discard what it knew.
            up.capa().await?;
        }
        Ok(up)
    }

    /// Connect and log in, retrying once with a new token when the server
    /// refuses a cached one.
    pub async fn open(cfg: &Pop3Account) -> Result<Pop3Upstream, UpstreamError> {
        let mut retried = false;
        let metrics = &crate::metrics::METRICS;
        let account = &cfg.account;
        loop {
            let mut up = metrics
                .timed("pop3", account, "connect", Pop3Upstream::connect(cfg))
                .await?;
            match metrics.timed("pop3", account, "login", up.login(cfg)).await {
                Ok(()) => return Ok(up),
                Err(LoginFailure::CachedTokenRefused(token, _)) if !retried => {
                    tracing::info!(account = %cfg.account, "upstream refused the cached token; fetching a new one");
                    if let Credential::Bearer(src) = &cfg.credential {
                        src.invalidate(&token).await;
                    }
                    retried = true;
                }
                Err(LoginFailure::CachedTokenRefused(_, e)) | Err(LoginFailure::Error(e)) => {
                    return Err(e)
                }
            }
        }
    }

    /// The SASL mechanisms the server lists in CAPA.
    pub fn mechanisms(&self) -> Vec<String> {
        codec::sasl_mechanisms(&self.caps)
    }

    /// End politely (QUIT, not waiting long for its answer).
    pub async fn quit(mut self) {
        if self.send(&Command::Quit, Stage::Quit).await.is_ok() {
            let deadline = Instant::now() + Duration::from_secs(2).min(self.timeout);
            let _ = self.status(Stage::Quit, deadline).await;
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    async fn write(&mut self, data: &[u8], stage: Stage) -> Result<(), UpstreamError> {
        crate::upstream::write_within(&mut self.stream, data, self.timeout, &self.target, stage)
            .await
    }

    async fn send(&mut self, cmd: &Command, stage: Stage) -> Result<(), UpstreamError> {
        let bytes = codec::encode_command(cmd);
        self.write(&bytes, stage).await
    }

    async fn read_more(&mut self, stage: Stage, deadline: Instant) -> Result<(), UpstreamError> {
        self.rbuf.reserve(4096);
        crate::upstream::read_more(
            &mut self.stream,
            &mut self.rbuf,
            deadline,
            &self.target,
            stage,
            self.timeout.as_secs(),
        )
        .await
    }

    fn protocol(&self, what: String) -> UpstreamError {
        UpstreamError::Protocol {
            target: self.target.clone(),
            what,
        }
    }

    /// The next response line, parsed, before `deadline`.
    async fn response(
        &mut self,
        stage: Stage,
        deadline: Instant,
    ) -> Result<Response, UpstreamError> {
        loop {
            match codec::take_line(&self.rbuf, codec::MAX_RESPONSE_LINE) {
                Line::Done { len, consumed } => {
                    let r = codec::parse_response(&self.rbuf[..len])
                        .map_err(|e| self.protocol(format!("while reading {stage}: {e}")));
                    self.rbuf.advance(consumed);
                    return r;
                }
                Line::TooLong { .. } => {
                    return Err(self.protocol(format!(
                        "while reading {stage}: a response line over {} bytes",
                        codec::MAX_RESPONSE_LINE
                    )))
                }
                Line::Incomplete => self.read_more(stage, deadline).await?,
            }
        }
    }

    /// A `+OK` / `-ERR` line (a `+` continuation here is a protocol error).
    async fn status(&mut self, stage: Stage, deadline: Instant) -> Result<Answer, UpstreamError> {
        match self.response(stage, deadline).await? {
            Response::Status { status, code, text } => Ok(Answer {
                ok: status == Status::Ok,
                code,
                text,
            }),
            Response::Continue(_) => Err(self.protocol(format!(
                "a continuation request where {stage} expects +OK or -ERR"
            ))),
        }
    }

    /// CAPA; a server without it (`-ERR`) has no capabilities to tell.
    async fn capa(&mut self) -> Result<(), UpstreamError> {
        let deadline = self.deadline();
        self.send(&Command::Capa, Stage::Capability).await?;
        let a = self.status(Stage::Capability, deadline).await?;
        self.caps.clear();
        if !a.ok {
            debug!(answer = %a.line(), "upstream has no CAPA");
            return Ok(());
        }
        loop {
            match codec::take_multiline(&self.rbuf, codec::MAX_RESPONSE_LINE, MAX_CAPA) {
                MultiLine::Done { lines, consumed } => {
                    self.rbuf.advance(consumed);
                    self.caps = lines;
                    return Ok(());
                }
                MultiLine::TooLong => {
                    return Err(self.protocol(format!("a CAPA answer over {MAX_CAPA} bytes")))
                }
                MultiLine::Incomplete => self.read_more(Stage::Capability, deadline).await?,
            }
        }
    }

    /// Log in with the account's credential.
    pub async fn login(&mut self, cfg: &Pop3Account) -> Result<(), LoginFailure> {
        let mechs = self.mechanisms();
        let offers = |m: Mechanism| mechs.iter().any(|x| x.eq_ignore_ascii_case(m.as_str()));
        let mut fresh = true;
        let mut used_token = None;
        let (kind, answer) = match &cfg.credential {
            Credential::Password(src) => {
                let pw = Credential::password(&cfg.account, src)
                    .map_err(|e| LoginFailure::Error(e.into()))?;
                // USER/PASS unless the server lists capabilities without
                // USER but with SASL PLAIN (RFC 2449 §6.3).
                let answer = if !self.caps.is_empty()
                    && !codec::capability_has(&self.caps, "USER")
                    && offers(Mechanism::Plain)
                {
                    let raw = sasl::plain_encode("", &cfg.username, &pw);
                    self.authenticate(Mechanism::Plain, &raw).await?
                } else {
                    self.user_pass(&cfg.username, pw).await?
                };
                (CredentialKind::AppPassword, answer)
            }
            Credential::Bearer(src) => {
                // A server that lists no SASL line may still take XOAUTH2
                // (what Gmail and Microsoft publish for POP); one that lists
                // mechanisms without either cannot take a token.
                let mech = if offers(Mechanism::XOAuth2) || mechs.is_empty() {
                    Mechanism::XOAuth2
                } else if offers(Mechanism::OAuthBearer) {
                    Mechanism::OAuthBearer
                } else {
                    return Err(LoginFailure::Error(UpstreamError::NoMechanism {
                        target: self.target.clone(),
                        offered: mechs.join(" "),
                        needed: "SASL XOAUTH2 or OAUTHBEARER (OAuth2)",
                    }));
                };
                let (raw, token) =
                    crate::upstream::bearer_response(src, mech, &cfg.username, &cfg.endpoint)
                        .await?;
                fresh = token.fresh;
                used_token = Some(token.secret);
                (
                    CredentialKind::AccessToken,
                    self.authenticate(mech, &raw).await?,
                )
            }
        };
        if answer.ok {
            return Ok(());
        }
        let detail = answer.line();
        let e = if crate::upstream::says_too_many_connections(&answer.text) {
            UpstreamError::TooManyConnections {
                target: self.target.clone(),
                detail,
            }
        } else if answer.code_is("SYS/TEMP")
            || answer.code_is("IN-USE")
            || answer.code_is("LOGIN-DELAY")
        {
            // RFC 2449 §8.1 / RFC 3206: the mailbox is busy or the login
            // service is down for now; the credential is not at fault.
            UpstreamError::AuthTemporary {
                account: cfg.account.clone(),
                detail,
            }
        } else {
            UpstreamError::AuthRejected {
                account: cfg.account.clone(),
                kind,
                detail,
            }
        };
        match (used_token, &e) {
            (Some(t), UpstreamError::AuthRejected { .. }) if !fresh => {
                Err(LoginFailure::CachedTokenRefused(t, e))
            }
            _ => Err(LoginFailure::Error(e)),
        }
    }

    async fn user_pass(&mut self, user: &str, pw: Secret) -> Result<Answer, UpstreamError> {
        let deadline = self.deadline();
        self.send(&Command::User(user.to_owned()), Stage::Login)
            .await?;
        let a = self.status(Stage::Login, deadline).await?;
        if !a.ok {
            return Ok(a);
        }
        let deadline = self.deadline();
        self.send(&Command::Pass(pw), Stage::Login).await?;
        self.status(Stage::Login, deadline).await
    }

    /// `AUTH MECH`, then the response after `+` on its own line (RFC 5034
    /// §4; Microsoft accepts only this form for XOAUTH2); an error
    /// challenge is acknowledged so the server sends its `-ERR`.
    async fn authenticate(&mut self, mech: Mechanism, raw: &[u8]) -> Result<Answer, UpstreamError> {
        let deadline = self.deadline();
        self.send(
            &Command::Auth {
                mechanism: mech.as_str().to_owned(),
                initial: None,
            },
            Stage::Authenticate,
        )
        .await?;
        let mut sent_payload = false;
        for _ in 0..=MAX_CONTINUATIONS {
            match self.response(Stage::Authenticate, deadline).await? {
                Response::Status { status, code, text } => {
                    return Ok(Answer {
                        ok: status == Status::Ok,
                        code,
                        text,
                    })
                }
                Response::Continue(challenge) => {
                    let answer = if !sent_payload {
                        sent_payload = true;
                        sasl::encode_response(raw)
                    } else {
                        let detail = sasl::decode_response(challenge.trim().as_bytes())
                            .ok()
                            .and_then(|r| sasl::bearer_error_decode(&r));
                        debug!(?detail, "bearer token refused with a challenge");
                        sasl::encode_response(sasl::bearer_error_ack(mech))
                    };
                    // An empty response is an empty line (RFC 5034 §4).
                    let answer = if answer == "=" { String::new() } else { answer };
                    let line = codec::encode_auth_answer(&AuthAnswer::Data(Secret::new(answer)));
                    self.write(&line, Stage::Authenticate).await?;
                }
            }
        }
        Err(self.protocol(
            "AUTH: the server keeps asking for more (a third continuation request)".into(),
        ))
    }
}
