//! The POP3 proxy for one client: answer the AUTHORIZATION state ourselves
//! (RFC 1939 USER/PASS/QUIT, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH
//! PLAIN), check the local login, log in upstream with the account's
//! credential, answer `+OK`, and then splice bytes both ways untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::users::{LoginError, Users};
use crate::config::Limits;
use crate::conn::{Conn, Read};
use crate::io::MaybeTls;
use crate::pop3::codec::{self, AuthAnswer, Command, CommandError, Line};
use crate::pop3::upstream::{Pop3Account, Pop3Upstream};
use crate::sasl;
use crate::secret::Secret;
use crate::upstream::UpstreamError;

/// What every POP3 session of one listener shares.
pub struct Pop3Context {
    pub hostname: String,
    pub limits: Limits,
    pub users: Arc<Users>,
    pub accounts: std::collections::BTreeMap<String, Arc<Pop3Account>>,
    /// `[sandbox] pop3`: logins read their inbox of captured mail here
    /// instead of a provider's mailbox.
    pub sandbox: Option<Arc<crate::capture::Capture>>,
    pub acceptor: Option<TlsAcceptor>,
    pub shutdown: CancellationToken,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Quit,
    ClientClosed,
    IdleTimeout,
    TooManyErrors,
    Shutdown,
    IoError,
    Spliced,
}

pub(super) enum Next {
    Continue,
    /// Logged in to the sandbox: serve this inbox of captured mail.
    Mailbox(String),
    End(End),
    /// Logged in upstream: splice.
    Splice(Box<Pop3Upstream>),
    /// The client was told to begin TLS.
    StartTls(TlsAcceptor),
}

pub(super) struct Session<S> {
    pub(super) ctx: Arc<Pop3Context>,
    pub(super) conn: Conn<S>,
    /// The name given by USER, waiting for PASS.
    user: Option<String>,
    bad: u32,
    /// Dropping the rest of an over-long line.
    discarding: bool,
}

/// A response code (RFC 2449 §8, RFC 3206) and text, as one `-ERR` line.
fn err_line(code: Option<&str>, text: &str) -> Vec<u8> {
    let code = code.map(|c| format!("[{c}] ")).unwrap_or_default();
    format!("-ERR {code}{text}\r\n").into_bytes()
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) async fn write(&mut self, data: &[u8]) -> Result<(), End> {
        self.conn.send(data).await.map_err(|_| End::IoError)
    }

    pub(super) async fn ok(&mut self, text: &str) -> Result<(), End> {
        self.write(format!("+OK {text}\r\n").as_bytes()).await
    }

    pub(super) async fn err(&mut self, code: Option<&str>, text: &str) -> Result<(), End> {
        self.write(&err_line(code, text)).await
    }

    /// Answer a refused command and count it; the session ends after
    /// `max_bad_commands`.
    pub(super) async fn bad(&mut self, code: Option<&str>, text: &str) -> Result<(), End> {
        self.err(code, text).await?;
        self.bad += 1;
        if self.bad > self.ctx.limits.max_bad_commands {
            self.err(None, "Too many errors, closing connection")
                .await?;
            return Err(End::TooManyErrors);
        }
        Ok(())
    }

    fn capabilities(&self) -> Vec<String> {
        let mut caps = vec![
            "TOP".to_owned(),
            "UIDL".into(),
            "RESP-CODES".into(),
            "AUTH-RESP-CODE".into(),
        ];
        if self.conn.offers_starttls() && self.ctx.acceptor.is_some() {
            caps.push("STLS".into());
        }
        // RFC 2595 §4: no USER and no SASL mechanisms where a plaintext
        // password would be refused anyway.
        if self.conn.auth_allowed() {
            caps.push("USER".into());
            caps.push("SASL PLAIN".into());
        }
        caps.push("IMPLEMENTATION Postern".into());
        caps
    }

    /// The next command line (without its line end), or the end of the
    /// session. A line must be complete `idle_timeout` after its first
    /// byte (slowloris); an over-long one is answered and skipped.
    pub(super) async fn next_line(&mut self, max: usize) -> Result<Vec<u8>, End> {
        loop {
            if self.discarding {
                match self.conn.rbuf.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        self.conn.rbuf.advance(i + 1);
                        self.conn.unit_taken(false);
                        self.discarding = false;
                        self.bad(None, "Line too long").await?;
                        continue;
                    }
                    None => {
                        self.conn.rbuf.clear();
                        self.conn.unit_taken(true);
                    }
                }
            } else {
                match codec::take_line(&self.conn.rbuf, max) {
                    Line::Done { len, consumed } => {
                        let line = self.conn.rbuf[..len].to_vec();
                        self.conn.rbuf.advance(consumed);
                        self.conn.unit_taken(false);
                        return Ok(line);
                    }
                    Line::TooLong { consumed, complete } => {
                        self.conn.rbuf.advance(consumed);
                        if complete {
                            self.conn.unit_taken(false);
                            self.bad(None, "Line too long").await?;
                        } else {
                            self.discarding = true;
                            self.conn.unit_taken(true);
                        }
                        continue;
                    }
                    Line::Incomplete => {}
                }
            }
            match self.conn.read_command_more(true).await {
                Ok(Read::Data) => {}
                Ok(Read::Closed) => return Err(End::ClientClosed),
                Ok(Read::Shutdown) => {
                    let _ = self.err(Some("SYS/TEMP"), "Postern is shutting down").await;
                    return Err(End::Shutdown);
                }
                Err(_) => return Err(End::IoError),
                Ok(Read::Deadline) => {
                    info!("command not completed in time (slow client)");
                    let _ = self
                        .err(None, "Command not completed in time, closing connection")
                        .await;
                    return Err(End::IdleTimeout);
                }
                Ok(Read::Timeout) => {
                    let _ = self.err(None, "Idle timeout, closing connection").await;
                    return Err(End::IdleTimeout);
                }
            }
        }
    }

    /// The greeting, then the dialogue, upgraded in place on STLS; returns
    /// the connection and the upstream once logged in.
    async fn run(mut self) -> Result<(Conn<S>, Box<Pop3Upstream>), End> {
        let greeting = format!("{} Postern POP3 proxy ready", self.ctx.hostname);
        if self.ok(&greeting).await.is_err() {
            self.conn.close().await;
            return Err(End::IoError);
        }
        loop {
            match self.step().await {
                Ok(Next::Splice(up)) => return Ok((self.conn, up)),
                Ok(Next::Mailbox(inbox)) => {
                    let end = self.mailbox(&inbox).await;
                    self.conn.close().await;
                    return Err(end);
                }
                Ok(Next::StartTls(acceptor)) => match self.conn.starttls(&acceptor).await {
                    Ok((conn, dropped)) => {
                        if dropped > 0 {
                            warn!(bytes = dropped, "discarding plaintext pipelined after STLS");
                        }
                        self.conn = conn;
                        // RFC 2595 §4: forget what was said before TLS.
                        self.user = None;
                    }
                    Err(e) => {
                        info!(stage = "STLS", reason = ?e, "TLS handshake failed");
                        return Err(End::IoError);
                    }
                },
                Ok(Next::Continue) => {}
                Ok(Next::End(e)) | Err(e) => {
                    if e == End::IoError {
                        info!(
                            stage = "before login",
                            reason = self.conn.last_error().unwrap_or("the connection broke"),
                            "POP3 connection failed"
                        );
                    }
                    self.conn.close().await;
                    return Err(e);
                }
            }
        }
    }

    async fn step(&mut self) -> Result<Next, End> {
        // AUTH may carry a long initial response; the codec holds every
        // other command to MAX_COMMAND.
        let line = self.next_line(codec::MAX_AUTH_LINE).await?;
        let cmd = match codec::parse_command(&line) {
            Ok(c) => c,
            Err(CommandError::Empty) => {
                self.bad(None, "Empty command").await?;
                return Ok(Next::Continue);
            }
            Err(e) => {
                self.bad(None, &e.to_string()).await?;
                return Ok(Next::Continue);
            }
        };
        match cmd {
            Command::Capa => {
                let mut out = b"+OK Capability list follows\r\n".to_vec();
                out.extend_from_slice(&codec::encode_multiline(&self.capabilities()));
                self.write(&out).await?;
            }
            Command::Quit => {
                let _ = self.ok("Postern POP3 proxy signing off").await;
                return Ok(Next::End(End::Quit));
            }
            Command::Stls => return self.stls().await,
            Command::User(name) => {
                if !self.conn.auth_allowed() {
                    self.bad(
                        None,
                        "Plaintext passwords are refused on this connection: use STLS first",
                    )
                    .await?;
                } else {
                    self.user = Some(name);
                    self.ok("Send PASS").await?;
                }
            }
            Command::Pass(pw) => {
                let Some(user) = self.user.take() else {
                    self.bad(None, "Send USER first").await?;
                    return Ok(Next::Continue);
                };
                return self.login(&user, &pw).await;
            }
            Command::Auth { mechanism, initial } => return self.auth(&mechanism, initial).await,
            Command::Apop { .. } => {
                self.bad(
                    None,
                    "APOP is not supported: log in with USER/PASS or AUTH PLAIN",
                )
                .await?;
            }
            Command::Noop | Command::Rset => {
                self.bad(None, "Log in first (USER/PASS or AUTH PLAIN)")
                    .await?;
            }
            Command::Other { verb, .. } => {
                let text = format!(
                    "{} is not valid before login: log in with USER/PASS or AUTH PLAIN first",
                    safe_verb(&verb)
                );
                self.bad(None, &text).await?;
            }
        }
        Ok(Next::Continue)
    }

    async fn stls(&mut self) -> Result<Next, End> {
        let acceptor = match &self.ctx.acceptor {
            Some(a) if self.conn.offers_starttls() => a.clone(),
            _ if self.conn.is_tls() => {
                self.bad(None, "TLS is already active").await?;
                return Ok(Next::Continue);
            }
            _ => {
                self.bad(None, "STLS is not offered on this listener")
                    .await?;
                return Ok(Next::Continue);
            }
        };
        self.ok("Begin TLS negotiation").await?;
        Ok(Next::StartTls(acceptor))
    }

    /// `AUTH` (RFC 5034): PLAIN, with the response on the line or after
    /// `+ `. A bare `AUTH` lists the mechanisms, as older clients expect.
    async fn auth(&mut self, mechanism: &str, initial: Option<Secret>) -> Result<Next, End> {
        if mechanism.is_empty() {
            self.write(b"+OK\r\nPLAIN\r\n.\r\n").await?;
            return Ok(Next::Continue);
        }
        if !mechanism.eq_ignore_ascii_case("PLAIN") {
            self.bad(None, "Unsupported mechanism: use AUTH PLAIN or USER/PASS")
                .await?;
            return Ok(Next::Continue);
        }
        if !self.conn.auth_allowed() {
            self.bad(
                None,
                "Plaintext passwords are refused on this connection: use STLS first",
            )
            .await?;
            return Ok(Next::Continue);
        }
        let b64 = match initial {
            Some(i) => i,
            None => {
                self.write(b"+ \r\n").await?;
                let line = self.next_line(codec::MAX_AUTH_LINE).await?;
                match codec::parse_auth_answer(&line) {
                    Ok(AuthAnswer::Data(d)) => d,
                    Ok(AuthAnswer::Cancel) => {
                        self.bad(None, "AUTH cancelled").await?;
                        return Ok(Next::Continue);
                    }
                    Err(_) => {
                        self.bad(None, "Malformed AUTH response").await?;
                        return Ok(Next::Continue);
                    }
                }
            }
        };
        let b64 = if b64.expose().is_empty() {
            "="
        } else {
            b64.expose()
        };
        let creds = sasl::decode_response(b64.as_bytes())
            .ok()
            .and_then(|raw| sasl::plain_decode(&raw).ok());
        let Some(p) = creds else {
            self.bad(None, "Malformed PLAIN response").await?;
            return Ok(Next::Continue);
        };
        if !p.authzid.is_empty() && p.authzid != p.authcid {
            self.bad(
                Some("AUTH"),
                "Authorization identity must be empty or your own user name",
            )
            .await?;
            return Ok(Next::Continue);
        }
        self.login(&p.authcid, &p.password).await
    }

    async fn login(&mut self, user: &str, password: &Secret) -> Result<Next, End> {
        let u = match self.ctx.users.verify(user, password).await {
            Ok(u) => u,
            Err(LoginError::Invalid) => {
                self.bad(
                    Some("AUTH"),
                    "Authentication failed: wrong user name or password",
                )
                .await?;
                return Ok(Next::Continue);
            }
            Err(LoginError::Internal) => {
                self.err(
                    Some("SYS/TEMP"),
                    "Temporary authentication failure, try again",
                )
                .await?;
                return Ok(Next::Continue);
            }
        };
        tracing::Span::current().record("user", u.name.as_str());
        if self.ctx.sandbox.is_some() {
            info!(user = %u.name, inbox = %u.inbox, "sandbox POP3 login");
            return Ok(Next::Mailbox(u.inbox.clone()));
        }
        let Some(account_name) = u.read_via.clone() else {
            let text = format!(
                "POP3 is not configured for user {}: set read_via in the Postern config",
                u.name
            );
            self.err(Some("SYS/PERM"), &text).await?;
            return Ok(Next::Continue);
        };
        let Some(account) = self.ctx.accounts.get(&account_name).cloned() else {
            let text = format!("Account {account_name} has no POP3 server or no usable credential (see `postern check-config` and `postern doctor {account_name}`)");
            self.err(Some("SYS/PERM"), &text).await?;
            return Ok(Next::Continue);
        };
        let started = Instant::now();
        match Pop3Upstream::open(&account).await {
            Ok(up) => {
                info!(user = %u.name, account = %account_name, upstream_ms = started.elapsed().as_millis() as u64, "POP3 login; splicing");
                self.ok(&format!("Logged in (account {account_name})"))
                    .await?;
                Ok(Next::Splice(Box::new(up)))
            }
            Err(e) => {
                warn!(user = %u.name, account = %account_name, error = %e, "upstream POP3 login failed");
                let code = match &e {
                    UpstreamError::AuthRejected { .. } => "AUTH",
                    UpstreamError::Credential(
                        crate::auth::credentials::CredentialError::Token(t),
                    ) if !t.is_transient() => "AUTH",
                    UpstreamError::AuthTemporary { detail, .. } if detail.contains("[IN-USE]") => {
                        "IN-USE"
                    }
                    UpstreamError::NoStartTls { .. }
                    | UpstreamError::NoMechanism { .. }
                    | UpstreamError::Tls { .. } => "SYS/PERM",
                    _ => "SYS/TEMP",
                };
                let text = match e.pop3_hint() {
                    Some(h) => format!("{e}. Fix: {h}"),
                    None => e.to_string(),
                };
                self.err(Some(code), &crate::text::sanitize(&text, 400))
                    .await?;
                Ok(Next::Continue)
            }
        }
    }
}

/// A command verb from the client, made safe to echo.
fn safe_verb(verb: &str) -> String {
    verb.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect()
}

/// Serve one POP3 client on an accepted stream (already TLS for implicit
/// listeners).
pub async fn serve<S>(
    ctx: Arc<Pop3Context>,
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
        user: None,
        bad: 0,
        discarding: false,
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
            debug!(?end, "POP3 session ended");
            end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Bind, Config};
    use crate::providers::TlsMode;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$jtjte1sjA6VjHO6XRY7TGA$VSF/br51eDECkd7XSn4u+Us04AOeBmtmP3PB0T9dnUA";

    /// On a non-loopback address CAPA lists neither USER nor SASL until
    /// STLS, USER and AUTH are refused, and commands pipelined behind STLS
    /// in plaintext are never executed.
    #[tokio::test]
    async fn non_loopback_needs_stls_before_login() {
        let dir = tempfile::tempdir().unwrap();
        let toml =
            format!("[pop3]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{HASH}\"\n");
        let config = Config::from_str(&toml, &dir.path().join("p.toml")).unwrap();
        let tls = crate::tls::server_config(None, dir.path()).unwrap();
        let ctx = Arc::new(Pop3Context {
            hostname: "test".into(),
            limits: config.limits.clone(),
            users: Arc::new(Users::new(&config.users, &config.limits)),
            accounts: Default::default(),
            sandbox: None,
            acceptor: Some(TlsAcceptor::from(tls)),
            shutdown: CancellationToken::new(),
        });
        let (client, server) = tokio::io::duplex(64 * 1024);
        let local = Bind {
            addr: "192.0.2.1:110".parse().unwrap(),
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
        assert!(line.starts_with("+OK test Postern POP3"), "{line}");
        wr.write_all(b"CAPA\r\n").await.unwrap();
        let mut capa = String::new();
        loop {
            line.clear();
            rd.read_line(&mut line).await.unwrap();
            capa.push_str(&line);
            if line == ".\r\n" {
                break;
            }
        }
        assert!(
            capa.contains("STLS") && !capa.contains("USER") && !capa.contains("SASL"),
            "{capa}"
        );
        wr.write_all(b"USER app\r\n").await.unwrap();
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("-ERR") && line.contains("STLS"), "{line}");
        wr.write_all(b"AUTH PLAIN AGFwcAB0ZXN0LXBhc3M=\r\n")
            .await
            .unwrap();
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("-ERR") && line.contains("STLS"), "{line}");
        wr.write_all(b"STLS\r\nQUIT\r\n").await.unwrap();
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("+OK Begin TLS"), "{line}");
        let client = rd.into_inner().unsplit(wr);
        let tls = crate::tls::test_connect(&dir.path().join("tls/localhost.pem"), client).await;
        let (rd, mut wr) = tokio::io::split(tls);
        let mut rd = BufReader::new(rd);
        wr.write_all(b"CAPA\r\n").await.unwrap();
        let mut capa = String::new();
        loop {
            line.clear();
            rd.read_line(&mut line).await.unwrap();
            assert!(
                !line.starts_with("+OK Postern POP3 proxy signing off"),
                "the injected QUIT was answered"
            );
            capa.push_str(&line);
            if line == ".\r\n" {
                break;
            }
        }
        assert!(
            capa.contains("USER") && capa.contains("SASL PLAIN") && !capa.contains("STLS"),
            "{capa}"
        );
        wr.write_all(b"QUIT\r\n").await.unwrap();
        line.clear();
        rd.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("+OK"), "{line}");
        assert_eq!(task.await.unwrap(), End::Quit);
    }
}
