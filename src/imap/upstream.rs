//! The upstream IMAP client: connect with implicit TLS or STARTTLS (never a
//! plaintext fallback), read the greeting (OK, PREAUTH, BYE), log in with
//! XOAUTH2/OAUTHBEARER (SASL-IR when offered) or LOGIN / AUTHENTICATE PLAIN
//! with an app password, and learn the post-login capabilities. After that
//! the connection is handed to the splice and this module is done.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::debug;

use crate::auth::credentials::Credential;
use crate::imap::codec::{
    self, AuthResponse, Code, Command, CommandKind, Decoded, Framer, Limits, LiteralSupport,
    Response, Status, StatusResponse, Tag,
};
use crate::io::{MaybeTls, ReadAhead};
use crate::providers::TlsMode;
use crate::sasl::{self, Mechanism};
use crate::secret::Secret;
use crate::upstream::{CredentialKind, Stage, UpstreamError};

/// Caps for reading the upstream before login.
const RESPONSE_LIMITS: Limits = Limits {
    max_line: 64 * 1024,
    max_literal: 256 * 1024,
    max_nonsync_literal: 256 * 1024,
    max_frame: 512 * 1024,
};

/// Responses one pre-login command may draw before its tagged reply (a
/// server answering LOGIN with endless `* 1 EXISTS` or `+` lines is cut
/// off here, if its deadline has not cut it off already).
const MAX_RESPONSES: usize = 256;

/// Where and how to reach one account's IMAP server.
pub type ImapAccount = crate::upstream::MailboxServer;

/// The upstream socket: plaintext, or TLS over a read-ahead socket.
pub type UpstreamStream = crate::upstream::ReaderStream;

/// The TLS handshake over `tcp` (implicit TLS).
async fn tls_over(cfg: &ImapAccount, tcp: TcpStream) -> Result<UpstreamStream, UpstreamError> {
    let tls =
        crate::upstream::tls_connect(&cfg.endpoint, &cfg.tls, ReadAhead::new(tcp), cfg.timeout)
            .await?;
    Ok(MaybeTls::Tls(Box::new(tls)))
}

/// A connection to the upstream IMAP server, before or after login.
pub struct ImapUpstream {
    /// Under TLS the socket reads ahead while a FETCH streams (see
    /// [`ReadAhead`]): one `recv` per 64 KiB instead of four per TLS record.
    pub stream: UpstreamStream,
    /// Bytes read but not yet consumed (handed to the splice after login).
    pub rbuf: BytesMut,
    framer: Framer,
    pub caps: Vec<String>,
    pub peer: SocketAddr,
    target: String,
    timeout: Duration,
    next_tag: u32,
    /// The server said PREAUTH: already logged in.
    preauth: bool,
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

impl ImapUpstream {
    /// The stream and what was read ahead of it, for the splice; the rest
    /// (capabilities, names) is freed here, not held by an idle session.
    pub fn into_parts(self) -> (UpstreamStream, BytesMut) {
        (self.stream, self.rbuf)
    }

    /// TCP, TLS as configured, greeting, capabilities.
    pub async fn connect(cfg: &ImapAccount) -> Result<ImapUpstream, UpstreamError> {
        let target = cfg.target();
        let (tcp, peer) =
            crate::upstream::dial(&cfg.endpoint.host, cfg.endpoint.port, cfg.timeout).await?;
        let stream = match cfg.endpoint.tls {
            TlsMode::Implicit => tls_over(cfg, tcp).await?,
            _ => MaybeTls::Plain(tcp),
        };
        let mut up = ImapUpstream {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            framer: Framer::for_responses(RESPONSE_LIMITS),
            caps: Vec::new(),
            peer,
            target: target.clone(),
            timeout: cfg.timeout,
            next_tag: 1,
            preauth: false,
        };
        let greeting = match up.read_frame(Stage::Greeting, up.deadline()).await {
            Ok(f) => f,
            Err(UpstreamError::Timeout { .. }) => {
                return Err(UpstreamError::NoGreeting {
                    target,
                    secs: cfg.timeout.as_secs().max(1),
                    tls: cfg.endpoint.tls,
                })
            }
            Err(e) => return Err(e),
        };
        let greeting = codec::parse_greeting(&greeting).map_err(|e| UpstreamError::Protocol {
            target: target.clone(),
            what: format!("bad greeting: {e}"),
        })?;
        match greeting.status {
            Status::Bye if crate::upstream::says_too_many_connections(&greeting.text) => {
                return Err(UpstreamError::TooManyConnections {
                    target,
                    detail: format!("* BYE {}", greeting.text),
                })
            }
            Status::Bye => {
                return Err(UpstreamError::Greeting {
                    target,
                    detail: format!("* BYE {}", greeting.text),
                })
            }
            Status::PreAuth => up.preauth = true,
            _ => {}
        }
        if let Some(caps) = greeting.capabilities() {
            up.caps = caps.to_vec();
        }
        if cfg.endpoint.tls == TlsMode::Starttls {
            if up.preauth {
                // RFC 9051 7.1.4: PREAUTH on a cleartext connection cannot be
                // upgraded; refuse rather than run in plaintext.
                return Err(UpstreamError::NoStartTls { target });
            }
            if up.caps.is_empty() {
                up.capability().await?;
            }
            if !codec::has_capability(&up.caps, "STARTTLS") {
                return Err(UpstreamError::NoStartTls { target });
            }
            let tag = up.tag();
            let deadline = up.deadline();
            up.send(
                &Command {
                    tag: tag.clone(),
                    kind: CommandKind::StartTls,
                },
                deadline,
            )
            .await?;
            let done = up.tagged(&tag, Stage::StartTls, deadline).await?;
            if done.status != Status::Ok {
                return Err(UpstreamError::NoStartTls { target });
            }
            up.stream = crate::upstream::upgrade_reader(up.stream, &up.rbuf, cfg).await?;
            up.framer = Framer::for_responses(RESPONSE_LIMITS);
            up.caps.clear();
        }
        if up.caps.is_empty() && !up.preauth {
            up.capability().await?;
        }
        Ok(up)
    }

    /// When a command started now must be complete: every upstream command
    /// (with its literals, continuations and untagged responses) gets
    /// `upstream_timeout` in all, however the server trickles its answer.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.timeout
    }

    fn tag(&mut self) -> Tag {
        let t = Tag::new(&format!("P{}", self.next_tag)).expect("valid tag");
        self.next_tag += 1;
        t
    }

    async fn write(&mut self, data: &[u8], stage: Stage) -> Result<(), UpstreamError> {
        crate::upstream::write_within(&mut self.stream, data, self.timeout, &self.target, stage)
            .await
    }

    /// Send a command, waiting for `+` between literal parts.
    async fn send(
        &mut self,
        cmd: &Command,
        deadline: tokio::time::Instant,
    ) -> Result<(), UpstreamError> {
        let parts = codec::encode_command(cmd, LiteralSupport::from_capabilities(&self.caps))
            .map_err(|e| UpstreamError::Protocol {
                target: self.target.clone(),
                what: format!("cannot encode the command: {e}"),
            })?;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                // Wait for the continuation before a synchronising literal.
                loop {
                    let f = self
                        .read_frame(Stage::LiteralContinuation, deadline)
                        .await?;
                    match codec::parse_response(&f) {
                        Ok(Response::Continue(_)) => break,
                        Ok(Response::Status(s)) if s.tag.is_some() => {
                            return Err(UpstreamError::Protocol {
                                target: self.target.clone(),
                                what: format!(
                                    "command refused before its literal: {:?} {}",
                                    s.status, s.text
                                ),
                            })
                        }
                        _ => continue,
                    }
                }
            }
            self.write(part, Stage::Command).await?;
        }
        Ok(())
    }

    /// The next response frame, before `deadline` (the command's, not the
    /// read's: see [`ImapUpstream::deadline`]).
    async fn read_frame(
        &mut self,
        stage: Stage,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, UpstreamError> {
        loop {
            match self.framer.decode(&mut self.rbuf) {
                Ok(Decoded::Frame(f)) => return Ok(f.as_bytes().to_vec()),
                Ok(Decoded::Incomplete) | Ok(Decoded::NeedContinuation { .. }) => {}
                Err(e) => {
                    return Err(UpstreamError::Protocol {
                        target: self.target.clone(),
                        what: format!("while reading {stage}: {e}"),
                    })
                }
            }
            self.rbuf.reserve(8192);
            crate::upstream::read_more(
                &mut self.stream,
                &mut self.rbuf,
                deadline,
                &self.target,
                stage,
                self.timeout.as_secs(),
            )
            .await?;
        }
    }

    /// Read until the tagged response for `tag`, noting CAPABILITY on the
    /// way; all of it before `deadline`.
    async fn tagged(
        &mut self,
        tag: &Tag,
        stage: Stage,
        deadline: tokio::time::Instant,
    ) -> Result<StatusResponse, UpstreamError> {
        for _ in 0..MAX_RESPONSES {
            let f = self.read_frame(stage, deadline).await?;
            match codec::parse_response(&f) {
                Ok(Response::Status(s)) if s.tag.as_ref() == Some(tag) => return Ok(s),
                Ok(Response::Status(s)) if s.tag.is_none() && s.status == Status::Bye => {
                    return Err(UpstreamError::Bye {
                        target: self.target.clone(),
                        text: s.text,
                    })
                }
                Ok(Response::Capability(c)) => self.caps = c,
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "unparsed upstream response ignored");
                }
            }
        }
        Err(self.too_many_responses(stage))
    }

    async fn capability(&mut self) -> Result<(), UpstreamError> {
        let tag = self.tag();
        let deadline = self.deadline();
        self.send(
            &Command {
                tag: tag.clone(),
                kind: CommandKind::Capability,
            },
            deadline,
        )
        .await?;
        let done = self.tagged(&tag, Stage::Capability, deadline).await?;
        if done.status != Status::Ok {
            return Err(UpstreamError::Protocol {
                target: self.target.clone(),
                what: format!("CAPABILITY refused: {}", done.text),
            });
        }
        Ok(())
    }

    fn too_many_responses(&self, stage: Stage) -> UpstreamError {
        UpstreamError::Protocol {
            target: self.target.clone(),
            what: format!("more than {MAX_RESPONSES} responses to {stage} without completing it"),
        }
    }

    fn offers(&self, m: Mechanism) -> bool {
        codec::has_capability(&self.caps, &format!("AUTH={}", m.as_str()))
    }

    /// Log in with the account's credential. On success `caps` holds the
    /// post-login capabilities.
    pub async fn login(&mut self, cfg: &ImapAccount) -> Result<(), LoginFailure> {
        if self.preauth {
            // Already logged in by the server (PREAUTH): just learn the
            // capabilities.
            if self.caps.is_empty() {
                self.capability().await?;
            }
            return Ok(());
        }
        let tag = self.tag();
        let mut fresh = true;
        let mut used_token = None;
        let kind;
        let done = match &cfg.credential {
            Credential::Password(src) => {
                kind = CredentialKind::AppPassword;
                let pw = Credential::password(&cfg.account, src)
                    .map_err(|e| LoginFailure::Error(e.into()))?;
                if !codec::has_capability(&self.caps, "LOGINDISABLED") {
                    let deadline = self.deadline();
                    self.send(
                        &Command {
                            tag: tag.clone(),
                            kind: CommandKind::Login {
                                user: cfg.username.clone(),
                                password: pw,
                            },
                        },
                        deadline,
                    )
                    .await?;
                    self.tagged(&tag, Stage::Login, deadline).await?
                } else if self.offers(Mechanism::Plain) {
                    let raw = sasl::plain_encode("", &cfg.username, &pw);
                    self.authenticate(&tag, Mechanism::Plain, &raw).await?
                } else {
                    return Err(LoginFailure::Error(UpstreamError::NoMechanism {
                        target: self.target.clone(),
                        offered: self.caps.join(" "),
                        needed: "LOGIN or AUTH=PLAIN (app password)",
                    }));
                }
            }
            Credential::Bearer(src) => {
                kind = CredentialKind::AccessToken;
                let mech = if self.offers(Mechanism::XOAuth2) {
                    Mechanism::XOAuth2
                } else if self.offers(Mechanism::OAuthBearer) {
                    Mechanism::OAuthBearer
                } else {
                    return Err(LoginFailure::Error(UpstreamError::NoMechanism {
                        target: self.target.clone(),
                        offered: self.caps.join(" "),
                        needed: "AUTH=XOAUTH2 or AUTH=OAUTHBEARER (OAuth2)",
                    }));
                };
                let (raw, token) =
                    crate::upstream::bearer_response(src, mech, &cfg.username, &cfg.endpoint)
                        .await?;
                fresh = token.fresh;
                used_token = Some(token.secret);
                self.authenticate(&tag, mech, &raw).await?
            }
        };
        match done.status {
            Status::Ok => {
                match done.code {
                    Some(Code::Capability(c)) => self.caps = c,
                    _ => self.capability().await?,
                }
                Ok(())
            }
            Status::No => {
                let unavailable = matches!(&done.code, Some(Code::Other { name, .. }) if name.eq_ignore_ascii_case("UNAVAILABLE"));
                let detail = format!("NO {}", done.text);
                if crate::upstream::says_too_many_connections(&done.text) {
                    return Err(LoginFailure::Error(UpstreamError::TooManyConnections {
                        target: self.target.clone(),
                        detail,
                    }));
                }
                if unavailable {
                    return Err(LoginFailure::Error(UpstreamError::AuthTemporary {
                        account: cfg.account.clone(),
                        detail,
                    }));
                }
                let e = UpstreamError::AuthRejected {
                    account: cfg.account.clone(),
                    kind,
                    detail,
                };
                match used_token {
                    Some(t) if !fresh => Err(LoginFailure::CachedTokenRefused(t, e)),
                    _ => Err(LoginFailure::Error(e)),
                }
            }
            _ => Err(LoginFailure::Error(UpstreamError::Protocol {
                target: self.target.clone(),
                what: format!("login refused: {:?} {}", done.status, done.text),
            })),
        }
    }

    /// AUTHENTICATE with SASL-IR when offered, else via a continuation; the
    /// bearer error challenge is acknowledged so the server sends its NO.
    async fn authenticate(
        &mut self,
        tag: &Tag,
        mech: Mechanism,
        raw: &[u8],
    ) -> Result<StatusResponse, UpstreamError> {
        let b64 = sasl::encode_response(raw);
        let ir = codec::has_capability(&self.caps, "SASL-IR");
        let b64_ir = if b64 == "=" {
            String::new()
        } else {
            b64.clone()
        };
        let deadline = self.deadline();
        self.send(
            &Command {
                tag: tag.clone(),
                kind: CommandKind::Authenticate {
                    mechanism: mech.as_str().to_owned(),
                    initial: ir.then(|| Secret::new(b64_ir.clone())),
                },
            },
            deadline,
        )
        .await?;
        let mut sent_payload = ir;
        // The payload (without SASL-IR) and the acknowledgement of an error
        // challenge: a server that asks for more is not speaking PLAIN,
        // XOAUTH2 or OAUTHBEARER.
        let mut continuations = 0;
        for _ in 0..MAX_RESPONSES {
            let f = self.read_frame(Stage::Authenticate, deadline).await?;
            match codec::parse_response(&f) {
                Ok(Response::Status(s)) if s.tag.as_ref() == Some(tag) => return Ok(s),
                Ok(Response::Capability(c)) => self.caps = c,
                Ok(Response::Continue(_)) if continuations == 2 => {
                    return Err(UpstreamError::Protocol {
                        target: self.target.clone(),
                        what: "AUTHENTICATE: the server keeps asking for more (a third continuation request)".into(),
                    })
                }
                Ok(Response::Continue(text)) => {
                    continuations += 1;
                    let answer = if !sent_payload {
                        sent_payload = true;
                        AuthResponse::Data(Secret::new(b64_ir.clone()))
                    } else {
                        // The error challenge (base64 JSON): acknowledge it.
                        let detail = sasl::decode_response(text.trim().as_bytes())
                            .ok()
                            .and_then(|r| sasl::bearer_error_decode(&r));
                        debug!(?detail, "bearer token refused with a challenge");
                        let ack = sasl::encode_response(sasl::bearer_error_ack(mech));
                        AuthResponse::Data(Secret::new(if ack == "=" {
                            String::new()
                        } else {
                            ack
                        }))
                    };
                    let line = codec::encode_auth_response(&answer).map_err(|e| {
                        UpstreamError::Protocol {
                            target: self.target.clone(),
                            what: format!("cannot encode the SASL answer: {e}"),
                        }
                    })?;
                    self.write(&line, Stage::Authenticate).await?;
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "unparsed upstream response ignored"),
            }
        }
        Err(self.too_many_responses(Stage::Authenticate))
    }

    /// Connect and log in, retrying once with a new token when the server
    /// refuses a cached one.
    pub async fn open(cfg: &ImapAccount) -> Result<ImapUpstream, UpstreamError> {
        let mut retried = false;
        let metrics = &crate::metrics::METRICS;
        let account = &cfg.account;
        loop {
            let mut up = metrics
                .timed("imap", account, "connect", ImapUpstream::connect(cfg))
                .await?;
            match metrics.timed("imap", account, "login", up.login(cfg)).await {
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
}
