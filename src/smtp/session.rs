//! The local SMTP server (RFC 5321 submission, RFC 4954 AUTH, RFC 3207
//! STARTTLS, RFC 2920 PIPELINING) for one client connection.
//!
//! Generic over the stream so tests can drive it without sockets. The session
//! checks the local login, then hands every transaction to the user's
//! [`Route`](crate::smtp::route::Route); it never accepts a message the route
//! did not accept. Where the dialogue stands is one [`Phase`], moved from one
//! value to the next.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::users::{LoginError, Users};
use crate::config::{Limits, User};
use crate::conn::{Conn, Read, UpgradeError};
use crate::io::MaybeTls;
use crate::sandbox::faults::{Event as FaultEvent, Stage};
use crate::sasl;
use crate::secret::Secret;
use crate::smtp::codec::{self, Command, DataDecoder, DataProgress, Line, MailParams, Path, Reply};
use crate::smtp::route::{Router, SessionInfo, Transaction};

/// Longest command line accepted (Postfix uses 2048 too; RFC 5321's 512 is a
/// floor). AUTH responses fit comfortably.
pub const MAX_LINE: usize = 2048;
/// Replies queued beyond this are written out before more commands are
/// handled, so a client that pipelines without reading cannot make us buffer
/// its replies without bound (it then waits on TCP back-pressure, and the
/// write times out).
const WBUF_FLUSH: usize = 16 * 1024;

/// What every SMTP session of one listener shares.
pub struct SmtpContext {
    pub hostname: String,
    pub limits: Limits,
    pub users: Arc<Users>,
    pub router: Arc<Router>,
    pub acceptor: Option<TlsAcceptor>,
    /// `anonymous_user` / `allow_from` of this listener.
    pub anonymous: Option<crate::config::Anonymous>,
    /// Fault injection rules (`[[faults]]` and the API).
    pub faults: Arc<crate::sandbox::faults::Faults>,
    pub shutdown: CancellationToken,
}

/// An open transaction: the envelope so far and the route's handle.
struct Mail {
    tx: Transaction,
    from: Path,
    params: MailParams,
    rcpts: Vec<Path>,
}

/// Where the dialogue stands. Each phase holds what it knows; commands
/// move the session from one to the next by value.
enum Phase {
    /// Greeted, or just after STARTTLS (RFC 3207 4.2: all is forgotten).
    Greeted,
    /// EHLO/HELO given.
    Helo { helo: String },
    /// Logged in.
    Authed { helo: String, user: Arc<User> },
    /// MAIL FROM accepted: a transaction is open.
    Mail {
        helo: String,
        user: Arc<User>,
        mail: Box<Mail>,
    },
}

impl Phase {
    fn user(&self) -> Option<&Arc<User>> {
        match self {
            Phase::Authed { user, .. } | Phase::Mail { user, .. } => Some(user),
            _ => None,
        }
    }

    fn in_mail(&self) -> bool {
        matches!(self, Phase::Mail { .. })
    }

    /// Leave the transaction, if one is open (its route is told); what the
    /// session knew of the client stays.
    fn end_mail(self) -> Phase {
        match self {
            Phase::Mail { helo, user, mail } => {
                mail.tx.abort();
                Phase::Authed { helo, user }
            }
            other => other,
        }
    }
}

/// How a session ended (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Quit,
    ClientClosed,
    IdleTimeout,
    TooManyErrors,
    Shutdown,
    IoError,
    /// A fault rule closed the connection.
    Fault,
}

/// What handling a command asks of the loop.
enum Step {
    Continue,
    End(End),
    /// The client asked for TLS and was told to go ahead.
    StartTls(TlsAcceptor),
}

struct Session<S> {
    ctx: Arc<SmtpContext>,
    conn: Conn<S>,
    peer: SocketAddr,
    phase: Phase,
    bad_commands: u32,
    /// Discarding the rest of an over-long line.
    discarding: bool,
    /// Shutdown was requested; finish the transaction in flight, then close.
    draining: bool,
    /// A fault rule closes the connection after this command: `Some(true)`
    /// drops it without a reply, `Some(false)` after the reply.
    end_after: Option<bool>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    fn reply(&mut self, r: Reply) {
        r.encode(self.conn.queue_mut());
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush().await
    }

    /// The 421 for a command line that did not complete in time.
    fn line_deadline_reply(&self) -> Reply {
        Reply::new(
            421,
            "4.4.2",
            format!(
                "Command line not completed within {}, closing connection",
                humantime::format_duration(self.ctx.limits.idle_timeout)
            ),
        )
    }

    /// The whole session: the greeting, then the dialogue, upgraded in
    /// place when the client asks for STARTTLS.
    async fn run(mut self) -> End {
        if self.inject(Stage::Connect, None, &[]).await {
            if self.end_after != Some(true) {
                let _ = self.flush().await;
            }
            self.conn.close().await;
            return End::Fault;
        }
        self.reply(Reply::plain(
            220,
            vec![format!("{} ESMTP Postern ready", self.ctx.hostname)],
        ));
        let end = match self.flush().await {
            Err(_) => End::IoError,
            Ok(()) => loop {
                match self.dialogue().await {
                    Step::End(end) => break end,
                    Step::Continue => {}
                    Step::StartTls(acceptor) => match self.conn.starttls(&acceptor).await {
                        Ok((conn, dropped)) => {
                            if dropped > 0 {
                                warn!(
                                    bytes = dropped,
                                    "discarding plaintext pipelined after STARTTLS"
                                );
                            }
                            self.conn = conn;
                            self.discarding = false;
                            // RFC 3207 4.2: forget everything learned before TLS.
                            self.phase = Phase::Greeted;
                            debug!("STARTTLS done");
                        }
                        Err(UpgradeError::Handshake(e)) => {
                            info!(stage = "STARTTLS", reason = %e, "TLS handshake failed");
                            return End::IoError;
                        }
                        Err(UpgradeError::Timeout) => return End::IdleTimeout,
                    },
                }
            },
        };
        let phase = std::mem::replace(&mut self.phase, Phase::Greeted);
        if end == End::IoError {
            let stage = match &phase {
                Phase::Greeted => "after the greeting",
                Phase::Helo { .. } => "before login",
                Phase::Authed { .. } => "after login",
                Phase::Mail { .. } => "in a transaction",
            };
            info!(
                stage,
                reason = self.conn.last_error().unwrap_or("the connection broke"),
                "SMTP connection failed"
            );
        }
        let _ = phase.end_mail();
        self.conn.close().await;
        end
    }

    /// Commands until the session ends or asks for STARTTLS.
    async fn dialogue(&mut self) -> Step {
        loop {
            // Handle every complete line already buffered (pipelining), then
            // flush the replies before waiting for more input.
            match self.take_command() {
                Some(Ok(line)) => {
                    match self.handle_line(line).await {
                        Step::Continue => {}
                        Step::End(end) => {
                            let _ = self.flush().await;
                            return Step::End(end);
                        }
                        tls @ Step::StartTls(_) => return tls,
                    }
                    if let Some(drop) = self.end_after {
                        self.abort_mail();
                        if drop {
                            self.conn.unqueue();
                        } else {
                            let _ = self.flush().await;
                        }
                        return Step::End(End::Fault);
                    }
                    if self.conn.queued() >= WBUF_FLUSH && self.flush().await.is_err() {
                        return Step::End(End::IoError);
                    }
                    continue;
                }
                Some(Err(())) => {
                    if self.count_bad() {
                        let _ = self.flush().await;
                        return Step::End(End::TooManyErrors);
                    }
                    if self.conn.queued() >= WBUF_FLUSH && self.flush().await.is_err() {
                        return Step::End(End::IoError);
                    }
                    continue;
                }
                None => {}
            }
            if self.flush().await.is_err() {
                return Step::End(End::IoError);
            }
            if self.draining && !self.phase.in_mail() {
                self.reply(Reply::new(
                    421,
                    "4.3.2",
                    "Service shutting down, please try again later",
                ));
                let _ = self.flush().await;
                return Step::End(End::Shutdown);
            }
            let watch = !self.phase.in_mail() && !self.draining;
            match self.conn.read_command_more(watch).await {
                Ok(Read::Data) => {}
                Ok(Read::Closed) => return Step::End(End::ClientClosed),
                Ok(Read::Timeout) => {
                    self.reply(Reply::new(421, "4.4.2", "Idle timeout, closing connection"));
                    let _ = self.flush().await;
                    return Step::End(End::IdleTimeout);
                }
                Ok(Read::Deadline) => {
                    info!("command line not completed in time (slow client)");
                    self.reply(self.line_deadline_reply());
                    let _ = self.flush().await;
                    return Step::End(End::IdleTimeout);
                }
                Ok(Read::Shutdown) => {
                    self.draining = true;
                }
                Err(e) => {
                    debug!(error = %e, "read failed");
                    return Step::End(End::IoError);
                }
            }
            if self.conn.shutting_down() {
                self.draining = true;
            }
        }
    }

    /// Take one command line from the buffer. `Some(Err)` means an over-long
    /// line was refused (the reply is queued).
    fn take_command(&mut self) -> Option<Result<Vec<u8>, ()>> {
        loop {
            match codec::take_line(&self.conn.rbuf, MAX_LINE) {
                Line::Incomplete => return None,
                Line::Done { len, consumed } => {
                    let line = self.conn.rbuf[..len].to_vec();
                    self.conn.rbuf.advance(consumed);
                    let tail = self.discarding;
                    self.discarding = false;
                    self.conn.unit_taken(false);
                    if tail {
                        // The tail of an over-long line: already answered.
                        continue;
                    }
                    return Some(Ok(line));
                }
                Line::TooLong { consumed, complete } => {
                    self.conn.rbuf.advance(consumed);
                    let already = self.discarding;
                    self.discarding = !complete;
                    if complete {
                        self.conn.unit_taken(false);
                    }
                    if already {
                        if complete {
                            continue;
                        }
                        return None;
                    }
                    self.reply(Reply::new(
                        500,
                        "5.5.2",
                        format!("Line too long (limit {MAX_LINE} bytes)"),
                    ));
                    return Some(Err(()));
                }
            }
        }
    }

    /// Count a bad command; true when the session must end.
    fn count_bad(&mut self) -> bool {
        self.bad_commands += 1;
        if self.bad_commands > self.ctx.limits.max_bad_commands {
            self.reply(Reply::new(
                421,
                "4.7.0",
                "Too many errors, closing connection",
            ));
            return true;
        }
        false
    }

    /// `Step::End(TooManyErrors)` when a bad command is one too many.
    fn bad(&mut self) -> Step {
        if self.count_bad() {
            Step::End(End::TooManyErrors)
        } else {
            Step::Continue
        }
    }

    /// Handle one command line.
    async fn handle_line(&mut self, line: Vec<u8>) -> Step {
        let cmd = match codec::parse_command(&line) {
            Ok(c) => c,
            Err(e) => {
                self.reply(e.reply());
                return self.bad();
            }
        };
        let verb = match &cmd {
            Command::Auth { mechanism, .. } => format!("AUTH {mechanism}"),
            Command::Mail { .. } => "MAIL".into(),
            Command::Rcpt { .. } => "RCPT".into(),
            other => format!("{other:?}"),
        };
        debug!(command = %verb, "command");
        let bad = match cmd {
            Command::Ehlo(d) => {
                self.ehlo(d, true);
                false
            }
            Command::Helo(d) => {
                self.ehlo(d, false);
                false
            }
            Command::StartTls => return self.starttls().await,
            Command::Auth { mechanism, initial } => match self.auth(&mechanism, initial).await {
                Ok(bad) => bad,
                Err(end) => return Step::End(end),
            },
            Command::Mail { from, params } => self.mail_from(from, params).await,
            Command::Rcpt { to } => self.rcpt_to(to).await,
            Command::Data => return self.data().await,
            Command::Rset => {
                self.abort_mail();
                self.reply(Reply::new(250, "2.0.0", "Reset OK"));
                false
            }
            Command::Noop => {
                self.reply(Reply::new(250, "2.0.0", "OK"));
                false
            }
            Command::Quit => {
                self.abort_mail();
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                return Step::End(End::Quit);
            }
            Command::Vrfy => {
                self.reply(Reply::new(
                    252,
                    "2.5.0",
                    "Cannot VRFY user, but will accept the message and attempt delivery",
                ));
                false
            }
            Command::Expn => {
                self.reply(Reply::new(502, "5.5.1", "EXPN is not available"));
                false
            }
            Command::Help => {
                self.reply(Reply::new(
                    214,
                    "2.0.0",
                    "Postern: EHLO, AUTH PLAIN/LOGIN, MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT. Log in with your local user.",
                ));
                false
            }
        };
        if bad {
            return self.bad();
        }
        Step::Continue
    }

    fn ehlo(&mut self, domain: String, extended: bool) {
        // A new EHLO ends the transaction; a login stays (RFC 4954 4).
        let phase = std::mem::replace(&mut self.phase, Phase::Greeted).end_mail();
        let authed = phase.user().is_some();
        self.phase = match phase {
            Phase::Authed { user, .. } => Phase::Authed { helo: domain, user },
            _ => Phase::Helo { helo: domain },
        };
        if !extended {
            self.reply(Reply::plain(250, vec![self.ctx.hostname.clone()]));
            return;
        }
        let mut lines = vec![
            format!("{} Hello", self.ctx.hostname),
            "PIPELINING".into(),
            format!("SIZE {}", self.ctx.limits.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if self.conn.offers_starttls() && self.ctx.acceptor.is_some() {
            lines.push("STARTTLS".into());
        }
        if self.conn.auth_allowed() && !authed {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.push("HELP".into());
        self.reply(Reply::plain(250, lines));
    }

    async fn starttls(&mut self) -> Step {
        if self.conn.is_tls() {
            self.reply(Reply::new(503, "5.5.1", "TLS is already active"));
            return self.bad();
        }
        let acceptor = match &self.ctx.acceptor {
            Some(a) if self.conn.offers_starttls() => a.clone(),
            _ => {
                self.reply(Reply::new(
                    502,
                    "5.5.1",
                    "STARTTLS is not offered on this listener",
                ));
                return self.bad();
            }
        };
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        if self.flush().await.is_err() {
            return Step::End(End::IoError);
        }
        self.abort_mail();
        Step::StartTls(acceptor)
    }

    /// Read one line during an AUTH exchange. `Err(end)`: the session is
    /// over (connection gone, or a 421 was queued).
    async fn auth_line(&mut self, challenge: &str) -> Result<Result<Vec<u8>, Reply>, End> {
        self.reply(Reply::plain(334, vec![challenge.to_owned()]));
        if self.flush().await.is_err() {
            return Err(End::IoError);
        }
        loop {
            match self.take_command() {
                Some(Ok(line)) => return Ok(Ok(line)),
                Some(Err(())) => {
                    // take_command queued a 500; replace it with the AUTH reply.
                    self.conn.unqueue();
                    return Ok(Err(Reply::new(
                        500,
                        "5.5.6",
                        "Authentication exchange line too long",
                    )));
                }
                None => {}
            }
            match self.conn.read_command_more(false).await {
                Ok(Read::Data) => {}
                Ok(Read::Timeout) => {
                    self.reply(Reply::new(
                        421,
                        "4.4.2",
                        "Idle timeout during authentication, closing connection",
                    ));
                    return Err(End::IdleTimeout);
                }
                Ok(Read::Deadline) => {
                    info!("authentication response not completed in time (slow client)");
                    self.reply(self.line_deadline_reply());
                    return Err(End::IdleTimeout);
                }
                Ok(Read::Closed) | Ok(Read::Shutdown) => return Err(End::ClientClosed),
                Err(_) => return Err(End::IoError),
            }
        }
    }

    /// Decode one SASL response line (initial or continuation).
    fn sasl_decode(line: &[u8]) -> Result<Vec<u8>, Reply> {
        sasl::decode_response(line).map_err(|e| match e {
            sasl::SaslError::Cancelled => Reply::new(501, "5.7.0", "Authentication cancelled"),
            sasl::SaslError::TooLong => {
                Reply::new(500, "5.5.6", "Authentication response too long")
            }
            _ => Reply::new(
                501,
                "5.5.2",
                "Cannot decode the authentication response (base64 expected)",
            ),
        })
    }

    /// `Ok(true)` when the command counts as a bad one; `Err` ends the session.
    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Result<bool, End> {
        let refusal = match &self.phase {
            // A transaction is open only after a login.
            Phase::Authed { .. } | Phase::Mail { .. } => Some("Already authenticated"),
            Phase::Greeted => Some("Send EHLO first"),
            Phase::Helo { .. } => None,
        };
        if let Some(text) = refusal {
            self.reply(Reply::new(503, "5.5.1", text));
            return Ok(true);
        }
        if !self.conn.auth_allowed() {
            self.reply(Reply::new(
                538,
                "5.7.11",
                "Encryption required: use STARTTLS before AUTH",
            ));
            return Ok(true);
        }
        let creds: Result<(String, Secret), Reply> = match sasl::Mechanism::parse(mechanism) {
            Some(sasl::Mechanism::Plain) => {
                let line = match initial {
                    Some(i) => Ok(i.into_bytes()),
                    None => self.auth_line("").await?,
                };
                line.and_then(|l| Self::sasl_decode(&l)).and_then(|raw| {
                    let p = sasl::plain_decode(&raw)
                        .map_err(|_| Reply::new(501, "5.5.2", "Malformed PLAIN response"))?;
                    if !p.authzid.is_empty() && p.authzid != p.authcid {
                        return Err(Reply::new(
                            535,
                            "5.7.8",
                            "Authorization identity must be empty or your own user name",
                        ));
                    }
                    Ok((p.authcid, p.password))
                })
            }
            Some(sasl::Mechanism::Login) => {
                let user = match initial {
                    Some(i) => Self::sasl_decode(i.as_bytes()),
                    None => self
                        .auth_line(sasl::LOGIN_USER_PROMPT)
                        .await?
                        .and_then(|l| Self::sasl_decode(&l)),
                }
                .and_then(|raw| {
                    sasl::login_field(&raw)
                        .map_err(|_| Reply::new(501, "5.5.2", "Malformed user name"))
                });
                match user {
                    Ok(user) => self
                        .auth_line(sasl::LOGIN_PASS_PROMPT)
                        .await?
                        .and_then(|l| Self::sasl_decode(&l))
                        .and_then(|raw| {
                            sasl::login_field(&raw)
                                .map(|p| (user, Secret::new(p)))
                                .map_err(|_| Reply::new(501, "5.5.2", "Malformed password"))
                        }),
                    Err(r) => Err(r),
                }
            }
            _ => Err(Reply::new(
                504,
                "5.5.4",
                "Unsupported mechanism: use PLAIN or LOGIN",
            )),
        };
        let (name, password) = match creds {
            Ok(c) => c,
            Err(r) => {
                self.reply(r);
                return Ok(true);
            }
        };
        match self.ctx.users.verify(&name, &password).await {
            Ok(user) => {
                info!(user = %user.name, "local login");
                tracing::Span::current().record("user", user.name.as_str());
                if self.inject(Stage::Auth, Some(&user.name), &[]).await {
                    return Ok(false);
                }
                if let Phase::Helo { helo } = std::mem::replace(&mut self.phase, Phase::Greeted) {
                    self.phase = Phase::Authed { helo, user };
                }
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
                Ok(false)
            }
            Err(LoginError::Invalid) => {
                self.reply(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
                Ok(true)
            }
            Err(LoginError::Internal) => {
                self.reply(Reply::new(
                    454,
                    "4.7.0",
                    "Temporary authentication failure, try again",
                ));
                Ok(false)
            }
        }
    }

    /// The listener's `anonymous_user`, when the client's address is in
    /// its `allow_from`.
    fn anonymous_user(&self) -> Option<Arc<User>> {
        let a = self.ctx.anonymous.as_ref()?;
        if !a.allow_from.iter().any(|n| n.contains(self.peer.ip())) {
            return None;
        }
        self.ctx.users.get(&a.user).cloned()
    }

    fn session_info(&self, helo: &str, user: &User) -> SessionInfo {
        SessionInfo {
            user: user.name.clone(),
            inbox: user.inbox.clone(),
            helo: helo.to_owned(),
            peer: self.peer,
            queued: Default::default(),
        }
    }

    async fn mail_from(&mut self, from: Path, params: MailParams) -> bool {
        let (helo, user) = match &self.phase {
            Phase::Greeted => {
                self.reply(Reply::new(503, "5.5.1", "Send EHLO first"));
                return true;
            }
            Phase::Helo { helo } => match self.anonymous_user() {
                Some(user) => {
                    info!(user = %user.name, "mail without AUTH from an allow_from address: sending as anonymous_user");
                    tracing::Span::current().record("user", user.name.as_str());
                    (helo.clone(), user)
                }
                None => {
                    self.reply(Reply::new(530, "5.7.0", "Authentication required"));
                    return true;
                }
            },
            Phase::Mail { .. } => {
                self.reply(Reply::new(
                    503,
                    "5.5.1",
                    "Sender already given (RSET to start over)",
                ));
                return true;
            }
            Phase::Authed { helo, user } => (helo.clone(), user.clone()),
        };
        if self.inject(Stage::Mail, Some(&user.name), &[]).await {
            return false;
        }
        if let Some(size) = params.size {
            if size > self.ctx.limits.max_message_size as u64 {
                self.reply(Reply::new(
                    552,
                    "5.3.4",
                    format!(
                        "Message too big (limit {} bytes)",
                        self.ctx.limits.max_message_size
                    ),
                ));
                return false;
            }
        }
        if !from.as_str().is_ascii() && !params.smtputf8 {
            self.reply(Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address needs the SMTPUTF8 parameter",
            ));
            return true;
        }
        if !user.allowed_senders.is_empty()
            && crate::pattern::first_match(&user.allowed_senders, from.as_str()).is_none()
        {
            info!(user = %user.name, "sender refused by allowed_senders");
            self.reply(Reply::new(
                550,
                "5.7.1",
                format!(
                    "Sender <{}> is not allowed: it matches nothing in users.{}.allowed_senders",
                    crate::text::sanitize(from.as_str(), 256),
                    user.name
                ),
            ));
            return false;
        }
        let Some(via) = &user.send_via else {
            self.reply(Reply::new(
                550,
                "5.7.1",
                format!(
                    "User {} has no send_via configured: sending is not allowed",
                    user.name
                ),
            ));
            return false;
        };
        let Some(route) = self.ctx.router.route_for(&user) else {
            self.reply(Reply::new(
                451,
                "4.3.0",
                format!("Route {via} is not available (disabled, or without a usable credential: see `postern check-config`)"),
            ));
            return false;
        };
        let info = self.session_info(&helo, &user);
        let mode = self.ctx.router.delivery(&user);
        let queuing = self.ctx.router.queuing(via);
        match route.open_for(&info, &from, &params, mode, queuing).await {
            Ok((tx, reply)) => {
                self.reply(reply);
                self.phase = Phase::Mail {
                    helo,
                    user,
                    mail: Box::new(Mail {
                        tx,
                        from,
                        params,
                        rcpts: Vec::new(),
                    }),
                };
                false
            }
            Err(r) => {
                self.reply(r.reply);
                false
            }
        }
    }

    async fn rcpt_to(&mut self, to: Path) -> bool {
        let max = self.ctx.limits.max_recipients;
        let Some(name) = self
            .phase
            .user()
            .filter(|_| self.phase.in_mail())
            .map(|u| u.name.clone())
        else {
            self.reply(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
            return true;
        };
        if self.inject(Stage::Rcpt, Some(&name), &[to.as_str()]).await {
            return false;
        }
        let info = match &self.phase {
            Phase::Mail { helo, user, .. } => self.session_info(helo, user),
            _ => return true,
        };
        let Phase::Mail { mail, user, .. } = &mut self.phase else {
            self.reply(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
            return true;
        };
        if !user.allowed_recipients.is_empty()
            && crate::pattern::first_match(&user.allowed_recipients, to.as_str()).is_none()
        {
            info!(user = %user.name, "recipient refused by allowed_recipients");
            let r = Reply::new(
                550,
                "5.7.1",
                format!(
                    "Recipient <{}> is not allowed: it matches nothing in users.{}.allowed_recipients",
                    crate::text::sanitize(to.as_str(), 256),
                    user.name
                ),
            );
            self.reply(r);
            return false;
        }
        if mail.rcpts.len() >= max {
            self.reply(Reply::new(
                452,
                "4.5.3",
                format!("Too many recipients (limit {max} per message)"),
            ));
            return false;
        }
        if !to.as_str().is_ascii() && !mail.params.smtputf8 {
            self.reply(Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address needs SMTPUTF8 on MAIL FROM",
            ));
            return true;
        }
        let r = mail.tx.rcpt_for(&info, &to).await;
        let route = user.route_key();
        crate::metrics::METRICS.recipient(&user.name, &route, r.code, r.enhanced());
        if r.is_positive() {
            mail.rcpts.push(to);
        }
        self.reply(r);
        false
    }

    async fn data(&mut self) -> Step {
        let no_rcpts = match &self.phase {
            Phase::Mail { mail, .. } => mail.rcpts.is_empty(),
            _ => {
                self.reply(Reply::new(503, "5.5.1", "Need MAIL and RCPT before DATA"));
                return self.bad();
            }
        };
        if no_rcpts {
            self.reply(Reply::new(554, "5.5.1", "No valid recipients"));
            return self.bad();
        }
        self.reply(Reply::plain(
            354,
            vec!["End data with <CR><LF>.<CR><LF>".into()],
        ));
        if self.flush().await.is_err() {
            return Step::End(End::IoError);
        }
        let max = self.ctx.limits.max_message_size;
        // Each read may take up to idle_timeout, and the whole DATA phase up to
        // data_timeout: a client trickling a byte at a time cannot hold the
        // session (or, past max_message_size, our attention) for ever. Past the
        // size limit the bytes are counted and dropped, so memory stays put.
        let data_timeout = self.ctx.limits.data_timeout;
        let deadline = Instant::now() + data_timeout;
        let mut decoder = DataDecoder::new(max);
        let mut message = Vec::with_capacity(self.conn.rbuf.len().clamp(4096, 1 << 20));
        loop {
            let mut input = std::mem::take(&mut self.conn.rbuf);
            match decoder.feed(&input, &mut message) {
                DataProgress::End { consumed } => {
                    input.advance(consumed);
                    self.conn.rbuf = input;
                    break;
                }
                DataProgress::More => {
                    input.clear();
                    self.conn.rbuf = input;
                }
            }
            match self.conn.read_more(false, Some(deadline)).await {
                Ok(Read::Data) => {}
                Ok(Read::Timeout) => {
                    self.reply(Reply::new(
                        421,
                        "4.4.2",
                        "Timeout during DATA, closing connection",
                    ));
                    self.abort_mail();
                    return Step::End(End::IdleTimeout);
                }
                Ok(Read::Deadline) => {
                    info!(
                        size = decoder.size(),
                        "message not completed within data_timeout (slow or endless DATA)"
                    );
                    self.reply(Reply::new(
                        421,
                        "4.4.2",
                        format!(
                            "Message not completed within {}, closing connection",
                            humantime::format_duration(data_timeout)
                        ),
                    ));
                    self.abort_mail();
                    return Step::End(End::IdleTimeout);
                }
                Ok(Read::Closed) | Ok(Read::Shutdown) => {
                    self.abort_mail();
                    return Step::End(End::ClientClosed);
                }
                Err(_) => {
                    self.abort_mail();
                    return Step::End(End::IoError);
                }
            }
        }
        // Bytes after the final dot arrived with the last read.
        self.conn.unit_taken(false);
        let Phase::Mail { helo, user, mail } = std::mem::replace(&mut self.phase, Phase::Greeted)
        else {
            // DATA was checked to be in a transaction above.
            return Step::End(End::IoError);
        };
        let info = self.session_info(&helo, &user);
        let route = user.route_key();
        self.phase = Phase::Authed { helo, user };
        if decoder.oversize() {
            mail.tx.abort();
            self.reply(Reply::new(
                552,
                "5.3.4",
                format!("Message too big (limit {max} bytes)"),
            ));
            return Step::Continue;
        }
        let Mail {
            tx, from, rcpts, ..
        } = *mail;
        let names: Vec<&str> = rcpts.iter().map(|r| r.as_str()).collect();
        if self.inject(Stage::Data, Some(&info.user), &names).await {
            crate::metrics::METRICS.message(&info.user, &route, "refused", None);
            tx.abort();
            return Step::Continue;
        }
        let started = std::time::Instant::now();
        let reply = tx.data(&info, &message).await;
        let said = reply.lines.first().map(String::as_str).unwrap_or("");
        let queued = info.queued.get().map(|id| id.to_string());
        let outcome = crate::metrics::outcome(reply.code, queued.is_some());
        crate::metrics::METRICS.message(&info.user, &route, outcome, reply.enhanced());
        // One line per message, for operators to grep (as Postfix's are);
        // the span adds the user and the account that took it.
        info!(
            from = %from,
            queue_id = %queued.as_deref().unwrap_or("-"),
            rcpts = rcpts.len(),
            size = message.len(),
            route = %route,
            outcome = %outcome,
            code = reply.code,
            reply = %crate::text::sanitize(said, 200),
            ms = started.elapsed().as_millis() as u64,
            "transaction done"
        );
        self.reply(reply);
        Step::Continue
    }

    fn abort_mail(&mut self) {
        let phase = std::mem::replace(&mut self.phase, Phase::Greeted);
        self.phase = phase.end_mail();
    }

    /// Asks the fault rules about this point of the dialogue. True when a
    /// rule answered for it (its reply is queued, or the connection is to
    /// be dropped: see `end_after`); a rule with only a delay waits here
    /// and lets the session go on.
    async fn inject(&mut self, stage: Stage, user: Option<&str>, rcpts: &[&str]) -> bool {
        let Some(a) = self.ctx.faults.check(FaultEvent {
            stage,
            user,
            rcpts,
            peer: self.peer.ip(),
        }) else {
            return false;
        };
        info!(fault = %a.rule, %stage, "fault injected");
        if let Some(d) = a.delay {
            let _ = self.flush().await;
            tokio::time::sleep(d).await;
        }
        match a.reply {
            Some((code, lines)) => {
                self.reply(Reply::plain(code, lines));
                if a.close {
                    self.end_after = Some(false);
                }
                true
            }
            None if a.close => {
                self.end_after = Some(true);
                true
            }
            None => false,
        }
    }
}

/// Serve one SMTP client on an accepted stream (already TLS for implicit
/// listeners). Returns how the session ended.
pub async fn serve<S>(
    ctx: Arc<SmtpContext>,
    stream: MaybeTls<S>,
    peer: SocketAddr,
    local: crate::config::Bind,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let conn = Conn::new(stream, local, ctx.limits.idle_timeout, ctx.shutdown.clone());
    let s = Session {
        ctx,
        conn,
        peer,
        phase: Phase::Greeted,
        bad_commands: 0,
        discarding: false,
        draining: false,
        end_after: None,
    };
    let end = s.run().await;
    debug!(?end, "session ended");
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Capture;
    use crate::config::{Bind, Config};
    use crate::providers::TlsMode;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$jtjte1sjA6VjHO6XRY7TGA$VSF/br51eDECkd7XSn4u+Us04AOeBmtmP3PB0T9dnUA";

    fn context(dir: &std::path::Path) -> Arc<SmtpContext> {
        context_with(dir, "")
    }

    fn context_with(dir: &std::path::Path, extra: &str) -> Arc<SmtpContext> {
        let toml = format!(
            "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{HASH}\"\nsend_via = \"capture\"\n{extra}"
        );
        let config = Config::from_str(&toml, &dir.join("p.toml")).unwrap();
        let capture = Arc::new(Capture::open(&dir.join("capture")).unwrap());
        let tls = crate::tls::server_config(None, dir).unwrap();
        Arc::new(SmtpContext {
            hostname: "test".into(),
            limits: config.limits.clone(),
            users: Arc::new(Users::new(&config.users, &config.limits)),
            router: Arc::new(Router::new(&config, capture).unwrap()),
            acceptor: Some(TlsAcceptor::from(tls)),
            anonymous: None,
            faults: Default::default(),
            shutdown: CancellationToken::new(),
        })
    }

    async fn reply<R: AsyncBufReadExt + Unpin>(r: &mut R) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            assert!(!line.is_empty(), "closed; got {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// On a non-loopback listener, AUTH needs TLS first (538 5.7.11), and
    /// commands pipelined behind STARTTLS in plaintext are never executed.
    #[tokio::test]
    async fn non_loopback_requires_tls_and_ignores_injection() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "192.0.2.5:40000".parse().unwrap();
        let local = Bind {
            addr: "192.0.2.1:587".parse().unwrap(),
            tls: TlsMode::Starttls,
        };
        let task = tokio::spawn(serve(ctx, MaybeTls::Plain(server), peer, local));
        let (rd, mut wr) = tokio::io::split(client);
        let mut rd = BufReader::new(rd);
        assert!(reply(&mut rd).await.starts_with("220 "));
        wr.write_all(b"EHLO c\r\n").await.unwrap();
        let ehlo = reply(&mut rd).await;
        assert!(
            ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
            "{ehlo}"
        );
        wr.write_all(b"AUTH PLAIN AGFwcAB0ZXN0LXBhc3M=\r\n")
            .await
            .unwrap();
        assert!(reply(&mut rd).await.starts_with("538 5.7.11"));
        wr.write_all(b"MAIL FROM:<a@b.example>\r\n").await.unwrap();
        assert!(reply(&mut rd).await.starts_with("530 5.7.0"));
        // CVE-2011-0411: the injected RSET/QUIT must be thrown away.
        wr.write_all(b"STARTTLS\r\nQUIT\r\n").await.unwrap();
        assert!(reply(&mut rd).await.starts_with("220 2.0.0"));
        let client = rd.into_inner().unsplit(wr);
        let tls = crate::tls::test_connect(&dir.path().join("tls/localhost.pem"), client).await;
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = BufReader::new(rd);
        wr.write_all(b"EHLO c\r\n").await.unwrap();
        let ehlo = reply(&mut rd).await;
        assert!(
            ehlo.starts_with("250-test Hello"),
            "the injected QUIT was answered: {ehlo}"
        );
        assert!(
            ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
            "{ehlo}"
        );
        wr.write_all(b"AUTH PLAIN AGFwcAB0ZXN0LXBhc3M=\r\n")
            .await
            .unwrap();
        assert!(reply(&mut rd).await.starts_with("235 2.7.0"));
        wr.write_all(b"QUIT\r\n").await.unwrap();
        assert!(reply(&mut rd).await.starts_with("221"));
        assert_eq!(task.await.unwrap(), End::Quit);
    }

    /// Slowloris: a byte every 200 ms keeps every read within idle_timeout, but
    /// the line must be complete idle_timeout after its first byte.
    #[tokio::test]
    async fn slow_command_line_is_cut_by_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context_with(dir.path(), "[limits]\nidle_timeout = \"3s\"\n");
        let (client, server) = tokio::io::duplex(64 * 1024);
        let local = Bind {
            addr: "127.0.0.1:25".parse().unwrap(),
            tls: TlsMode::None,
        };
        let task = tokio::spawn(serve(ctx, MaybeTls::Plain(server), local.addr, local));
        let (rd, mut wr) = tokio::io::split(client);
        let mut rd = BufReader::new(rd);
        assert!(reply(&mut rd).await.starts_with("220 "));
        // A whole line sent slowly but within the deadline is fine.
        for b in b"NOOP\r\n" {
            wr.write_all(&[*b]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(reply(&mut rd).await.starts_with("250 "));
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            for b in b"EHLO a.slow.client.example\r\n".iter() {
                if wr.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let r = reply(&mut rd).await;
        assert!(r.starts_with("421 4.4.2 Command line not completed"), "{r}");
        // A lower bound only: the deadline, never less.
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert_eq!(task.await.unwrap(), End::IdleTimeout);
        writer.abort();
    }
}
