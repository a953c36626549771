//! The IMAP proxy for one client: answer the not-authenticated state
//! ourselves (RFC 9051: CAPABILITY, NOOP, LOGOUT, STARTTLS, ID, LOGIN,
//! AUTHENTICATE PLAIN), check the local login, log in upstream with the
//! account's credential, hand back the upstream's capabilities under the
//! client's own tag, and then splice bytes both ways untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::users::{LoginError, Users};
use crate::config::Limits;
use crate::conn::{Conn, Read};
use crate::imap::codec::{
    self, AuthResponse, Code, Command, CommandKind, Decoded, FrameError, Framer, Response, Status,
    StatusResponse, Tag,
};
use crate::imap::upstream::{ImapAccount, ImapUpstream};
use crate::io::MaybeTls;
use crate::sasl;
use crate::secret::Secret;
use crate::upstream::UpstreamError;

/// What every IMAP session of one listener shares.
pub struct ImapContext {
    pub hostname: String,
    pub limits: Limits,
    pub users: Arc<Users>,
    pub accounts: std::collections::BTreeMap<String, Arc<ImapAccount>>,
    pub acceptor: Option<TlsAcceptor>,
    pub shutdown: CancellationToken,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Logout,
    ClientClosed,
    IdleTimeout,
    TooManyErrors,
    Shutdown,
    IoError,
    Spliced,
}

struct Session<S> {
    ctx: Arc<ImapContext>,
    conn: Conn<S>,
    framer: Framer,
    bad: u32,
}

enum Next {
    Continue,
    End(End),
    /// Logged in upstream: splice.
    Splice(Box<ImapUpstream>),
    /// The client was told to begin TLS.
    StartTls(TlsAcceptor),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    fn auth_allowed(&self) -> bool {
        self.conn.auth_allowed()
    }

    fn capabilities(&self) -> Vec<String> {
        let mut caps = vec![
            "IMAP4rev1".to_owned(),
            "SASL-IR".into(),
            "LITERAL-".into(),
            "ID".into(),
        ];
        if self.conn.offers_starttls() && self.ctx.acceptor.is_some() {
            caps.push("STARTTLS".into());
        }
        if self.auth_allowed() {
            caps.push("AUTH=PLAIN".into());
        } else {
            caps.push("LOGINDISABLED".into());
        }
        caps
    }

    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.conn.send(data).await
    }

    async fn respond(&mut self, r: Response) -> std::io::Result<()> {
        let bytes = codec::encode_response(&r)
            .unwrap_or_else(|_| b"* BAD Internal encoding error\r\n".to_vec());
        self.write(&bytes).await
    }

    async fn status(
        &mut self,
        tag: Option<&Tag>,
        status: Status,
        code: Option<Code>,
        text: impl Into<String>,
    ) -> std::io::Result<()> {
        self.respond(Response::Status(StatusResponse {
            tag: tag.cloned(),
            status,
            code,
            text: text.into(),
        }))
        .await
    }

    /// The tagged reply that ends a command (`tag STATUS [CODE] text`); the
    /// session goes on unless the write failed.
    async fn finish(
        &mut self,
        tag: &Tag,
        status: Status,
        code: Option<&str>,
        text: impl Into<String>,
    ) -> Next {
        match self
            .status(Some(tag), status, code.and_then(Self::code), text)
            .await
        {
            Ok(()) => Next::Continue,
            Err(_) => Next::End(End::IoError),
        }
    }

    fn code(name: &str) -> Option<Code> {
        Some(Code::Other {
            name: name.to_owned(),
            args: None,
        })
    }

    /// Read until a frame is available (answering literal continuations),
    /// or the session must end. Framing errors are answered here.
    async fn next_frame(&mut self) -> Result<Vec<u8>, End> {
        loop {
            match self.read_frame().await? {
                Ok(f) => return Ok(f),
                Err(e) => {
                    if self.frame_error(&e, None).await {
                        return Err(End::TooManyErrors);
                    }
                }
            }
        }
    }

    /// Answer a framing error (`TAG BAD …` or `* BAD …`; with `auth`, the
    /// AUTHENTICATE command it interrupts is the one answered). True when the
    /// session must end.
    async fn frame_error(&mut self, e: &FrameError, auth: Option<&Tag>) -> bool {
        let text = match e {
            FrameError::LiteralTooLarge { .. } => {
                format!("{e}: Postern accepts small literals before login")
            }
            _ => e.to_string(),
        };
        let code = matches!(e, FrameError::LiteralTooLarge { .. }).then(|| Code::Other {
            name: "TOOBIG".into(),
            args: None,
        });
        let tag = auth.or(e.tag()).cloned();
        let _ = self.status(tag.as_ref(), Status::Bad, code, text).await;
        if e.is_fatal() {
            let _ = self
                .status(
                    None,
                    Status::Bye,
                    None,
                    "Closing: the connection cannot be resynchronised",
                )
                .await;
            return true;
        }
        self.count_bad().await
    }

    /// Read until the framer gives a frame or an error. `Err(end)`: the
    /// session is over (the BYE, if any, was sent).
    ///
    /// A frame must be complete `idle_timeout` after its first byte arrived
    /// (see [`Conn::read_command_more`]), so a client trickling a byte at a
    /// time (slowloris) cannot hold the session open.
    async fn read_frame(&mut self) -> Result<Result<Vec<u8>, FrameError>, End> {
        loop {
            match self.framer.decode(&mut self.conn.rbuf) {
                Ok(Decoded::Frame(f)) => {
                    self.conn.unit_taken(false);
                    return Ok(Ok(f.as_bytes().to_vec()));
                }
                Ok(Decoded::NeedContinuation { .. }) => {
                    self.respond(Response::Continue("Ready for literal".into()))
                        .await
                        .map_err(|_| End::IoError)?;
                    continue;
                }
                Ok(Decoded::Incomplete) => {}
                Err(e) => {
                    // A refused literal drops its frame; an over-long line
                    // keeps the clock running until its line end.
                    if matches!(e, FrameError::LiteralTooLarge { .. }) {
                        self.conn.unit_taken(false);
                    }
                    return Ok(Err(e));
                }
            }
            let idle = self.ctx.limits.idle_timeout;
            match self.conn.read_command_more(true).await {
                Ok(Read::Data) => {}
                Ok(Read::Closed) => return Err(End::ClientClosed),
                Ok(Read::Shutdown) => {
                    let _ = self
                        .status(
                            None,
                            Status::Bye,
                            Self::code("UNAVAILABLE"),
                            "Postern is shutting down",
                        )
                        .await;
                    return Err(End::Shutdown);
                }
                Err(_) => return Err(End::IoError),
                Ok(Read::Deadline) => {
                    info!("command not completed in time (slow client)");
                    let text = format!(
                        "Command not completed within {}, closing connection",
                        humantime::format_duration(idle)
                    );
                    let _ = self.status(None, Status::Bye, None, text).await;
                    return Err(End::IdleTimeout);
                }
                Ok(Read::Timeout) => {
                    let _ = self
                        .status(None, Status::Bye, None, "Idle timeout, closing connection")
                        .await;
                    return Err(End::IdleTimeout);
                }
            }
        }
    }

    /// Count a bad command; true when the session must end.
    async fn count_bad(&mut self) -> bool {
        self.bad += 1;
        if self.bad > self.ctx.limits.max_bad_commands {
            let _ = self
                .status(
                    None,
                    Status::Bye,
                    None,
                    "Too many errors, closing connection",
                )
                .await;
            return true;
        }
        false
    }

    /// The greeting, then the dialogue, upgraded in place on STARTTLS;
    /// returns the connection and the upstream once logged in.
    async fn run(mut self) -> Result<(Conn<S>, Box<ImapUpstream>), End> {
        let caps = self.capabilities();
        let greeted = self
            .status(
                None,
                Status::Ok,
                Some(Code::Capability(caps)),
                format!("{} Postern IMAP proxy ready", self.ctx.hostname),
            )
            .await;
        if greeted.is_err() {
            self.conn.close().await;
            return Err(End::IoError);
        }
        loop {
            match self.dialogue().await {
                Ok(Next::Splice(up)) => return Ok((self.conn, up)),
                Ok(Next::StartTls(acceptor)) => match self.conn.starttls(&acceptor).await {
                    Ok((conn, dropped)) => {
                        if dropped > 0 {
                            warn!(
                                bytes = dropped,
                                "discarding plaintext pipelined after STARTTLS"
                            );
                        }
                        self.conn = conn;
                        self.framer = Framer::for_commands(codec::Limits::PRE_AUTH);
                    }
                    Err(e) => {
                        info!(stage = "STARTTLS", reason = ?e, "TLS handshake failed");
                        return Err(End::IoError);
                    }
                },
                Ok(Next::Continue) => {}
                Ok(Next::End(e)) | Err(e) => {
                    if e == End::IoError {
                        info!(
                            stage = "before login",
                            reason = self.conn.last_error().unwrap_or("the connection broke"),
                            "IMAP connection failed"
                        );
                    }
                    self.conn.close().await;
                    return Err(e);
                }
            }
        }
    }

    /// Commands until login, the end, or STARTTLS.
    async fn dialogue(&mut self) -> Result<Next, End> {
        loop {
            let frame = self.next_frame().await?;
            let cmd = match codec::parse_command(&frame) {
                Ok(c) => c,
                Err(e) => {
                    self.status(
                        e.tag.as_ref(),
                        Status::Bad,
                        None,
                        format!("Syntax error: {}", e.kind),
                    )
                    .await
                    .map_err(|_| End::IoError)?;
                    if self.count_bad().await {
                        return Err(End::TooManyErrors);
                    }
                    continue;
                }
            };
            match self.handle(cmd).await {
                Next::Continue => {}
                Next::End(e) => return Err(e),
                done => return Ok(done),
            }
        }
    }

    async fn handle(&mut self, cmd: Command) -> Next {
        let Command { tag, kind } = cmd;
        match kind {
            CommandKind::Capability => {
                let caps = self.capabilities();
                if self.respond(Response::Capability(caps)).await.is_err() {
                    return Next::End(End::IoError);
                }
                self.finish(&tag, Status::Ok, None, "CAPABILITY completed")
                    .await
            }
            CommandKind::Noop => self.finish(&tag, Status::Ok, None, "NOOP completed").await,
            CommandKind::Logout => {
                let _ = self
                    .status(None, Status::Bye, None, "Postern logging out")
                    .await;
                let _ = self
                    .status(Some(&tag), Status::Ok, None, "LOGOUT completed")
                    .await;
                Next::End(End::Logout)
            }
            CommandKind::Id(_) => {
                let id = Some(vec![
                    ("name".to_owned(), Some("Postern".to_owned())),
                    (
                        "version".to_owned(),
                        Some(env!("CARGO_PKG_VERSION").to_owned()),
                    ),
                ]);
                if self.respond(Response::Id(id)).await.is_err() {
                    return Next::End(End::IoError);
                }
                self.finish(&tag, Status::Ok, None, "ID completed").await
            }
            CommandKind::StartTls => self.starttls(&tag).await,
            CommandKind::Login { user, password } => {
                if !self.auth_allowed() {
                    return self
                        .finish(
                            &tag,
                            Status::No,
                            Some("PRIVACYREQUIRED"),
                            "LOGIN is disabled until STARTTLS: use STARTTLS first",
                        )
                        .await;
                }
                self.login(&tag, &user, &password).await
            }
            CommandKind::Authenticate { mechanism, initial } => {
                if !mechanism.eq_ignore_ascii_case("PLAIN") {
                    return self
                        .finish(
                            &tag,
                            Status::No,
                            Some("CANNOT"),
                            "Unsupported mechanism: use AUTHENTICATE PLAIN or LOGIN",
                        )
                        .await;
                }
                if !self.auth_allowed() {
                    return self
                        .finish(
                            &tag,
                            Status::No,
                            Some("PRIVACYREQUIRED"),
                            "Use STARTTLS before AUTHENTICATE",
                        )
                        .await;
                }
                let b64 = match initial {
                    Some(i) => i,
                    None => {
                        if self
                            .respond(Response::Continue(String::new()))
                            .await
                            .is_err()
                        {
                            return Next::End(End::IoError);
                        }
                        // A framing error here ends the AUTHENTICATE command
                        // (answered under its tag), not just the line.
                        let frame = match self.read_frame().await {
                            Ok(Ok(f)) => f,
                            Ok(Err(e)) => {
                                if self.frame_error(&e, Some(&tag)).await {
                                    return Next::End(End::TooManyErrors);
                                }
                                return Next::Continue;
                            }
                            Err(e) => return Next::End(e),
                        };
                        match codec::parse_auth_response(&frame) {
                            Ok(AuthResponse::Data(d)) => d,
                            Ok(AuthResponse::Cancel) => {
                                return self
                                    .finish(&tag, Status::Bad, None, "AUTHENTICATE cancelled")
                                    .await;
                            }
                            Err(_) => {
                                return self
                                    .finish(
                                        &tag,
                                        Status::Bad,
                                        None,
                                        "Invalid base64 in AUTHENTICATE",
                                    )
                                    .await;
                            }
                        }
                    }
                };
                let creds = sasl::decode_response(if b64.is_empty() {
                    b"="
                } else {
                    b64.expose().as_bytes()
                })
                .ok()
                .and_then(|raw| sasl::plain_decode(&raw).ok());
                let Some(p) = creds else {
                    return self
                        .finish(&tag, Status::Bad, None, "Malformed PLAIN response")
                        .await;
                };
                if !p.authzid.is_empty() && p.authzid != p.authcid {
                    return self
                        .finish(
                            &tag,
                            Status::No,
                            Some("AUTHORIZATIONFAILED"),
                            "Authorization identity must be empty or your own user name",
                        )
                        .await;
                }
                self.login(&tag, &p.authcid, &p.password).await
            }
            CommandKind::Other { name } => {
                let r = self
                    .status(
                        Some(&tag),
                        Status::Bad,
                        None,
                        format!("{} is not valid before login: log in with LOGIN or AUTHENTICATE PLAIN first", codec_safe(&name)),
                    )
                    .await;
                if r.is_err() {
                    return Next::End(End::IoError);
                }
                if self.count_bad().await {
                    return Next::End(End::TooManyErrors);
                }
                Next::Continue
            }
        }
    }

    async fn starttls(&mut self, tag: &Tag) -> Next {
        if self.is_tls() {
            let _ = self
                .status(Some(tag), Status::Bad, None, "TLS is already active")
                .await;
            return Next::Continue;
        }
        let acceptor = match &self.ctx.acceptor {
            Some(a) if self.conn.offers_starttls() => a.clone(),
            _ => {
                let _ = self
                    .status(
                        Some(tag),
                        Status::Bad,
                        None,
                        "STARTTLS is not offered on this listener",
                    )
                    .await;
                return Next::Continue;
            }
        };
        if self
            .status(Some(tag), Status::Ok, None, "Begin TLS negotiation now")
            .await
            .is_err()
        {
            return Next::End(End::IoError);
        }
        Next::StartTls(acceptor)
    }

    async fn login(&mut self, tag: &Tag, user: &str, password: &Secret) -> Next {
        let u = match self.ctx.users.verify(user, password).await {
            Ok(u) => u,
            Err(LoginError::Invalid) => {
                let next = self
                    .finish(
                        tag,
                        Status::No,
                        Some("AUTHENTICATIONFAILED"),
                        "Authentication failed: wrong user name or password",
                    )
                    .await;
                if self.count_bad().await {
                    return Next::End(End::TooManyErrors);
                }
                return next;
            }
            Err(LoginError::Internal) => {
                return self
                    .finish(
                        tag,
                        Status::No,
                        Some("UNAVAILABLE"),
                        "Temporary authentication failure, try again",
                    )
                    .await;
            }
        };
        tracing::Span::current().record("user", u.name.as_str());
        let Some(account_name) = u.read_via.clone() else {
            let text = format!(
                "IMAP is not configured for user {}: set read_via in the Postern config",
                u.name
            );
            return self
                .finish(tag, Status::No, Some("AUTHORIZATIONFAILED"), text)
                .await;
        };
        let Some(account) = self.ctx.accounts.get(&account_name).cloned() else {
            let text = format!("Account {account_name} has no usable IMAP credential (run `postern doctor {account_name}`)");
            return self
                .finish(tag, Status::No, Some("UNAVAILABLE"), text)
                .await;
        };
        let started = Instant::now();
        match ImapUpstream::open(&account).await {
            Ok(mut up) => {
                info!(user = %u.name, account = %account_name, upstream_ms = started.elapsed().as_millis() as u64, "IMAP login; splicing");
                // IMAP4rev1/IMAP4rev2 first (RFC 9051 7.2.2 lists them first).
                let mut caps = std::mem::take(&mut up.caps);
                caps.sort_by_key(|c| {
                    !(c.eq_ignore_ascii_case("IMAP4rev1") || c.eq_ignore_ascii_case("IMAP4rev2"))
                });
                let text = format!("Logged in (account {account_name})");
                if self
                    .status(Some(tag), Status::Ok, Some(Code::Capability(caps)), text)
                    .await
                    .is_err()
                {
                    return Next::End(End::IoError);
                }
                Next::Splice(Box::new(up))
            }
            Err(e) => {
                warn!(user = %u.name, account = %account_name, error = %e, "upstream IMAP login failed");
                let code = match &e {
                    UpstreamError::AuthRejected { .. } => "AUTHENTICATIONFAILED",
                    UpstreamError::Credential(
                        crate::auth::credentials::CredentialError::Token(t),
                    ) if !t.is_transient() => "AUTHENTICATIONFAILED",
                    _ => "UNAVAILABLE",
                };
                let text = match e.imap_hint() {
                    Some(h) => format!("{e}. Fix: {h}"),
                    None => e.to_string(),
                };
                self.finish(tag, Status::No, Some(code), text).await
            }
        }
    }
}

/// A command name from the client, made safe to echo.
fn codec_safe(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect()
}

/// Serve one IMAP client on an accepted stream (already TLS for implicit
/// listeners).
pub async fn serve<S>(
    ctx: Arc<ImapContext>,
    stream: MaybeTls<S>,
    _peer: SocketAddr,
    local: crate::config::Bind,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let s = Session {
        ctx: ctx.clone(),
        conn: Conn::new(stream, local, ctx.limits.idle_timeout, ctx.shutdown.clone()),
        framer: Framer::for_commands(codec::Limits::PRE_AUTH),
        bad: 0,
    };
    match s.run().await {
        Ok((conn, up)) => {
            let (client, pending_client) = conn.into_parts();
            let (upstream, pending_up) = (*up).into_parts();
            crate::splice::splice(
                client,
                upstream,
                pending_client,
                pending_up,
                ctx.limits.imap_idle_timeout,
            )
            .await;
            End::Spliced
        }
        Err(end) => {
            debug!(?end, "IMAP session ended");
            end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Bind, Config};
    use crate::providers::TlsMode;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::io::{AsyncBufReadExt, BufReader};

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$jtjte1sjA6VjHO6XRY7TGA$VSF/br51eDECkd7XSn4u+Us04AOeBmtmP3PB0T9dnUA";

    /// On a non-loopback listener: LOGINDISABLED and no AUTH=PLAIN until
    /// STARTTLS; LOGIN is refused with PRIVACYREQUIRED; plaintext pipelined
    /// after STARTTLS is dropped.
    #[tokio::test]
    async fn non_loopback_needs_starttls_before_login() {
        let dir = tempfile::tempdir().unwrap();
        let toml =
            format!("[smtp]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{HASH}\"\n");
        let config = Config::from_str(&toml, &dir.path().join("p.toml")).unwrap();
        let tls = crate::tls::server_config(None, dir.path()).unwrap();
        let ctx = Arc::new(ImapContext {
            hostname: "test".into(),
            limits: config.limits.clone(),
            users: Arc::new(Users::new(&config.users, &config.limits)),
            accounts: Default::default(),
            acceptor: Some(TlsAcceptor::from(tls)),
            shutdown: CancellationToken::new(),
        });
        let (client, server) = tokio::io::duplex(64 * 1024);
        let local = Bind {
            addr: "192.0.2.1:143".parse().unwrap(),
            tls: TlsMode::Starttls,
        };
        let task = tokio::spawn(serve(
            ctx,
            MaybeTls::Plain(server),
            "192.0.2.9:5000".parse().unwrap(),
            local,
        ));
        let (rd, mut wr) = tokio::io::split(client);
        let mut rd = BufReader::new(rd);
        let mut line = String::new();
        rd.read_line(&mut line).await.unwrap();
        assert!(
            line.contains("LOGINDISABLED")
                && line.contains("STARTTLS")
                && !line.contains("AUTH=PLAIN"),
            "{line}"
        );
        wr.write_all(b"a LOGIN app test-pass\r\n").await.unwrap();
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("a NO [PRIVACYREQUIRED]"), "{line}");
        wr.write_all(b"b AUTHENTICATE PLAIN AGFwcAB0ZXN0LXBhc3M=\r\n")
            .await
            .unwrap();
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("b NO [PRIVACYREQUIRED]"), "{line}");
        wr.write_all(b"c STARTTLS\r\nd LOGOUT\r\n").await.unwrap();
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("c OK"), "{line}");
        let client = rd.into_inner().unsplit(wr);
        let tls = crate::tls::test_connect(&dir.path().join("tls/localhost.pem"), client).await;
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = BufReader::new(rd);
        wr.write_all(b"e CAPABILITY\r\n").await.unwrap();
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(
            line.starts_with("* CAPABILITY")
                && line.contains("AUTH=PLAIN")
                && !line.contains("LOGINDISABLED"),
            "the injected LOGOUT was answered? {line}"
        );
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("e OK"), "{line}");
        wr.write_all(b"f LOGOUT\r\n").await.unwrap();
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("* BYE"));
        assert_eq!(task.await.unwrap(), End::Logout);
    }

    /// Slowloris: a byte every 200 ms keeps every read within idle_timeout, but
    /// the command must be complete idle_timeout after its first byte.
    #[tokio::test]
    async fn slow_command_is_cut_by_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!("[smtp]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{HASH}\"\n[limits]\nidle_timeout = \"3s\"\n");
        let config = Config::from_str(&toml, &dir.path().join("p.toml")).unwrap();
        let ctx = Arc::new(ImapContext {
            hostname: "test".into(),
            limits: config.limits.clone(),
            users: Arc::new(Users::new(&config.users, &config.limits)),
            accounts: Default::default(),
            acceptor: None,
            shutdown: CancellationToken::new(),
        });
        let (client, server) = tokio::io::duplex(64 * 1024);
        let local = Bind {
            addr: "127.0.0.1:143".parse().unwrap(),
            tls: TlsMode::None,
        };
        let task = tokio::spawn(serve(ctx, MaybeTls::Plain(server), local.addr, local));
        let (rd, mut wr) = tokio::io::split(client);
        let mut rd = BufReader::new(rd);
        let mut line = String::new();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("* OK"), "{line}");
        for b in b"a NOOP\r\n" {
            wr.write_all(&[*b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("a OK"), "{line}");
        let started = tokio::time::Instant::now();
        let writer = tokio::spawn(async move {
            for b in b"b NOOP and a very slow tail\r\n".iter() {
                if wr.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("* BYE Command not completed"), "{line}");
        // A lower bound only: the deadline, never less.
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert_eq!(task.await.unwrap(), End::IdleTimeout);
        writer.abort();
    }
}
