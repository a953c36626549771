//! Shared by the SMTP and IMAP upstream clients: reaching a provider (DNS,
//! TCP, TLS with the account's trust anchors) and the typed failures with the
//! fix a user needs (DESIGN.md, "Errors a user sees").

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::auth::credentials::CredentialError;
use crate::config::Endpoint;
use crate::providers::TlsMode;

/// Where in a conversation with an upstream something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Greeting,
    TlsHandshake,
    Ehlo,
    StartTls,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    /// The message bytes (DATA's body or a BDAT chunk).
    Message,
    /// The final reply after the message.
    MessageEnd,
    Rset,
    Quit,
    Capability,
    Login,
    Authenticate,
    LiteralContinuation,
    /// Any other command.
    Command,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Greeting => "the greeting",
            Stage::TlsHandshake => "the TLS handshake",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Message => "the message",
            Stage::MessageEnd => "the end of the message",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
            Stage::Capability => "CAPABILITY",
            Stage::Login => "LOGIN",
            Stage::Authenticate => "AUTHENTICATE",
            Stage::LiteralContinuation => "a literal continuation",
            Stage::Command => "a command",
        })
    }
}

/// Which credential an upstream refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    AppPassword,
    AccessToken,
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialKind::AppPassword => "app password",
            CredentialKind::AccessToken => "access token",
        })
    }
}

/// Why TLS with an upstream did not come up.
#[derive(Debug, Clone)]
pub enum TlsFailure {
    /// The handshake failed; the `io::Error` carries the `rustls::Error`.
    Handshake(Arc<std::io::Error>),
    /// The server answered STARTTLS with a refusal.
    StartTlsRefused(String),
    /// The host cannot be a TLS server name.
    BadName,
}

impl TlsFailure {
    /// The rustls error behind a failed handshake.
    pub fn rustls(&self) -> Option<&rustls::Error> {
        match self {
            TlsFailure::Handshake(e) => e.get_ref()?.downcast_ref::<rustls::Error>(),
            _ => None,
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o))) =
            self.rustls()
        {
            if let Some(p) = o.0.downcast_ref::<crate::cert::CertProblem>() {
                return write!(f, "{p}");
            }
        }
        match self {
            TlsFailure::Handshake(e) => write!(f, "{e}"),
            TlsFailure::StartTlsRefused(r) => write!(f, "STARTTLS refused: {r}"),
            TlsFailure::BadName => f.write_str("the host is not a valid TLS server name"),
        }
    }
}

/// Which protocol an upstream speaks (for the words of a fix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
}

impl Protocol {
    /// The well-known implicit-TLS port.
    pub fn implicit_port(self) -> u16 {
        match self {
            Protocol::Smtp => 465,
            Protocol::Imap => 993,
            Protocol::Pop3 => 995,
        }
    }

    /// The well-known port that upgrades with STARTTLS (STLS for POP3).
    pub fn starttls_port(self) -> u16 {
        match self {
            Protocol::Smtp => 587,
            Protocol::Imap => 143,
            Protocol::Pop3 => 110,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        }
    }
}

/// What an upstream failure or reply means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Daily sending quota reached (Gmail 550 5.4.5, Microsoft 554 5.2.0 SubmissionQuotaExceeded).
    Quota,
    /// Slow down: 421 4.7.0, 432 4.3.2, 454 4.7.0, 451 4.7.x rate limits.
    Throttled,
    /// The mailbox may not send as this From (550 5.7.1 relay denied, 5.7.60 SendAsDenied).
    SenderDenied,
    /// The mailbox's credential was refused (parks it until the credential changes).
    Auth,
    /// Too much at once: the server refuses one more simultaneous
    /// connection, or Postern's own cap (`max_connections`,
    /// `max_per_minute`) kept the transaction waiting too long. Never a
    /// reason to park the mailbox.
    Busy,
    Transient,
    Permanent,
}

impl Verdict {
    /// The metrics label: `accepted`, `quota`, `throttled`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Quota => "quota",
            Verdict::Throttled => "throttled",
            Verdict::SenderDenied => "sender_denied",
            Verdict::Auth => "auth",
            Verdict::Busy => "busy",
            Verdict::Transient => "transient",
            Verdict::Permanent => "permanent",
        }
    }
}

/// Why talking to the upstream failed. Each maps to one client reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve {target}: {reason}")]
    Resolve { target: String, reason: String },
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: Arc<std::io::Error>,
    },
    #[error("connecting to {target} timed out")]
    ConnectTimeout { target: String },
    #[error("{target} sent no greeting within {secs} s")]
    NoGreeting {
        target: String,
        secs: u64,
        tls: TlsMode,
    },
    #[error("{target} refused the connection: {detail}")]
    Greeting { target: String, detail: String },
    #[error("TLS handshake with {target} failed: {failure}")]
    Tls {
        target: String,
        failure: TlsFailure,
        tls: TlsMode,
    },
    #[error("{target} does not offer STARTTLS")]
    NoStartTls { target: String },
    #[error("{target} offers no usable AUTH mechanism (offered: {offered}; needed: {needed})")]
    NoMechanism {
        target: String,
        offered: String,
        needed: &'static str,
    },
    #[error("upstream rejected the {kind} of account {account}: {detail}")]
    AuthRejected {
        account: String,
        kind: CredentialKind,
        detail: String,
    },
    #[error("upstream could not check the login of account {account} right now: {detail}")]
    AuthTemporary { account: String, detail: String },
    /// The server refuses one more simultaneous connection (`421 4.7.0
    /// Maximum number of connections …`, `432 4.3.2 Concurrent connections
    /// limit exceeded`): a signal about the connection count, not a fault of
    /// the mailbox.
    #[error("{target} refuses more simultaneous connections: {detail}")]
    TooManyConnections { target: String, detail: String },
    /// Every connection Postern may open to the account (`max_connections`,
    /// or fewer while the server refuses more) stayed busy for `secs`.
    #[error("all {cap} connections to the server of account {account} stayed busy for {secs} s")]
    NoConnection {
        account: String,
        cap: usize,
        secs: u64,
    },
    /// `max_per_minute` of the account would be passed for longer than the
    /// transaction may wait.
    #[error(
        "account {account} has sent its {per_minute} messages of this minute (max_per_minute)"
    )]
    RateLimited { account: String, per_minute: u32 },
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("{target} broke the protocol: {what}")]
    Protocol { target: String, what: String },
    #[error("connection to {target} lost: {source}")]
    Io {
        target: String,
        source: Arc<std::io::Error>,
    },
    #[error("connection to {target} lost: closed while waiting for {stage}")]
    Closed { target: String, stage: Stage },
    #[error("{target} ended the session: {text}")]
    Bye { target: String, text: String },
    #[error("{target} timed out: no answer to {stage} within {secs} s")]
    Timeout {
        target: String,
        stage: Stage,
        secs: u64,
    },
}

impl UpstreamError {
    /// Whether the same thing may work later without a change of config.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            UpstreamError::NoStartTls { .. }
                | UpstreamError::NoMechanism { .. }
                | UpstreamError::Tls { .. }
        )
    }

    /// What the user should do about it (for replies, logs and `doctor`),
    /// for an SMTP server.
    pub fn hint(&self) -> Option<String> {
        self.hint_for(Protocol::Smtp)
    }

    /// The same for an IMAP server.
    pub fn imap_hint(&self) -> Option<String> {
        self.hint_for(Protocol::Imap)
    }

    /// The same for a POP3 server.
    pub fn pop3_hint(&self) -> Option<String> {
        self.hint_for(Protocol::Pop3)
    }

    /// The fix, for a server of protocol `proto`.
    pub fn hint_for(&self, proto: Protocol) -> Option<String> {
        let implicit = proto.implicit_port();
        Some(match self {
            UpstreamError::Resolve { .. } => "check the host name and this machine's DNS".into(),
            UpstreamError::Connect { target, .. } | UpstreamError::ConnectTimeout { target } => {
                let ports = match proto {
                    Protocol::Imap => "993 (implicit TLS) or 143 (STARTTLS)",
                    Protocol::Pop3 => "995 (implicit TLS) or 110 (STLS)",
                    Protocol::Smtp => "587 (STARTTLS) or 465 (implicit TLS)",
                };
                format!("{target} cannot be reached: the port is probably blocked by a firewall or the ISP; try {ports}")
            }
            UpstreamError::NoGreeting { target, tls, .. } => match tls {
                TlsMode::Starttls | TlsMode::None => format!(
                    "{target} may expect TLS from the first byte (port {implicit}): set tls = \"implicit\""
                ),
                TlsMode::Implicit => "the server accepted TLS but stayed silent; check the port".into(),
            },
            UpstreamError::Tls { target, failure, tls } => tls_hint(target, failure, *tls, proto),
            UpstreamError::NoStartTls { target } => format!(
                "{target} does not offer {}, so the credentials would travel in plaintext; use the provider's implicit-TLS port ({implicit}) with tls = \"implicit\"",
                if proto == Protocol::Pop3 { "STLS" } else { "STARTTLS" }
            ),
            UpstreamError::NoMechanism { needed, .. } => {
                format!("the server does not accept {needed}; check auth = … for this account")
            }
            UpstreamError::AuthRejected { account, kind, .. } => match kind {
                CredentialKind::AccessToken => format!("the token was refused: renew consent with `postern auth {account}` or check token_command"),
                CredentialKind::AppPassword => "the provider wants an app password (with 2-step verification) or OAuth, not the account password; Google Workspace and Microsoft accept OAuth only".to_string(),
            },
            UpstreamError::AuthTemporary { .. } => "the provider's login service is busy; it will be retried".into(),
            UpstreamError::TooManyConnections { .. } => "the provider caps simultaneous connections per mailbox; lower the number of programs sending at once through this account, or try again shortly".into(),
            UpstreamError::NoConnection { account, .. } => format!("many sends at once through account {account}: try again shortly, or use delivery = \"relay-then-queue\" so Postern queues what cannot go at once"),
            UpstreamError::RateLimited { .. } => "try again in a minute, or use delivery = \"relay-then-queue\" so Postern queues what cannot go now".into(),
            UpstreamError::Timeout { stage: Stage::MessageEnd, .. } => {
                "the server took the whole message but did not confirm it in time (upstream_data_timeout); it may have been delivered anyway, so a retry can duplicate it".into()
            }
            UpstreamError::Timeout { target, .. } => format!(
                "{target} accepted the connection but stopped answering (frozen or overloaded); try again later, or raise upstream_timeout"
            ),
            // Token errors already say what to do ("needs consent: run …").
            UpstreamError::Credential(CredentialError::Token(t)) if t.is_transient() => {
                "the OAuth token endpoint did not answer; Postern retries it — try again shortly".into()
            }
            UpstreamError::Credential(CredentialError::Token(_)) => return None,
            UpstreamError::Credential(_) => "set the password variable or file named in the account".into(),
            _ => return None,
        })
    }

    /// What this failure means for routing.
    pub fn verdict(&self) -> Verdict {
        match self {
            UpstreamError::AuthRejected { .. } => Verdict::Auth,
            UpstreamError::Credential(CredentialError::Token(t)) if t.is_transient() => {
                Verdict::Transient
            }
            UpstreamError::Credential(_) => Verdict::Auth,
            UpstreamError::AuthTemporary { .. } => Verdict::Throttled,
            UpstreamError::TooManyConnections { .. }
            | UpstreamError::NoConnection { .. }
            | UpstreamError::RateLimited { .. } => Verdict::Busy,
            _ => Verdict::Transient,
        }
    }
}

/// A name as rustls reports it (`DnsName("mail.example")`), as a person
/// writes it (`mail.example`).
fn presented_name(n: &str) -> String {
    let inner = n
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(n);
    crate::text::sanitize(inner.trim_matches('"'), 100)
}

/// A certificate date, as a day.
fn day(t: rustls_pki_types::UnixTime) -> String {
    jiff::Timestamp::from_second(t.as_secs() as i64)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The fix for a TLS failure, from the rustls error behind it.
fn tls_hint(target: &str, failure: &TlsFailure, tls: TlsMode, proto: Protocol) -> String {
    let implicit = proto.implicit_port();
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match failure.rustls() {
        // A mail server speaks first: plaintext bytes read as a TLS record.
        Some(E::InvalidMessage(_)) | Some(E::PeerSentOversizedRecord) => format!(
            "{target} answered in plaintext: it looks like a STARTTLS port (587/143), not implicit TLS; set tls = \"starttls\" (or use port 465 for implicit TLS)"
        ),
        Some(E::InvalidCertificate(C::NotValidForName)) => format!(
            "the certificate of {target} is not valid for that name: check the host name"
        ),
        Some(E::InvalidCertificate(C::NotValidForNameContext { presented, .. })) => format!(
            "the certificate of {target} is not valid for that name: it is for {}; connect to one of those names (host = \"…\"), or ask the server's administrator for a certificate with this one",
            presented.iter().map(|n| presented_name(n)).collect::<Vec<_>>().join(", ")
        ),
        Some(E::InvalidCertificate(C::Expired)) => {
            format!("the certificate of {target} has expired: the server's administrator must renew it")
        }
        Some(E::InvalidCertificate(C::ExpiredContext { not_after, .. })) => format!(
            "the certificate of {target} expired on {}: the server's administrator must renew it",
            day(*not_after)
        ),
        Some(E::InvalidCertificate(C::NotValidYet)) => format!(
            "the certificate of {target} is not valid yet: check this machine's clock"
        ),
        Some(E::InvalidCertificate(C::NotValidYetContext { not_before, .. })) => format!(
            "the certificate of {target} is valid only from {}: check this machine's clock",
            day(*not_before)
        ),
        Some(E::InvalidCertificate(C::UnknownIssuer)) => format!(
            "the certificate of {target} is issued by a CA this machine does not trust (a private CA?): add that CA's certificate with ca_file = \"…\", or accept exactly this certificate with tls_pin (`postern doctor ACCOUNT` prints the line)"
        ),
        Some(E::InvalidCertificate(C::Other(o))) => match o.0.downcast_ref::<crate::cert::CertProblem>() {
            Some(crate::cert::CertProblem::SelfSigned { .. }) => format!(
                "{target} presents a self-signed certificate: if it is your server, put that certificate in ca_file = \"…\" (fetch it with `openssl s_client -connect {target} -showcerts`), or accept exactly it with tls_pin (`postern doctor ACCOUNT` prints the line)"
            ),
            Some(crate::cert::CertProblem::CaAsServer { .. }) => format!(
                "{target} presents a CA certificate (CA:TRUE, as `openssl req -x509` makes by default) as its own: put that very certificate in ca_file = \"…\", or accept exactly it with tls_pin (`postern doctor ACCOUNT` prints the line)"
            ),
            Some(crate::cert::CertProblem::PinMismatch { presented, .. }) => format!(
                "{target} presents another certificate than tls_pin names: if the server's certificate was renewed on purpose, set tls_pin = \"{presented}\""
            ),
            None => format!(
                "the certificate of {target} is not trusted: check the host name, or add its CA with ca_file"
            ),
        },
        Some(E::InvalidCertificate(_)) => format!(
            "the certificate of {target} is not trusted: check the host name, or add its CA with ca_file"
        ),
        Some(E::PeerIncompatible(_)) | Some(E::AlertReceived(A::ProtocolVersion)) => {
            "the server offers only TLS older than 1.2, which Postern refuses".into()
        }
        _ if matches!(failure, TlsFailure::StartTlsRefused(_)) => {
            format!("{target} refused STARTTLS; use its implicit-TLS port ({implicit}) with tls = \"implicit\"")
        }
        _ if tls == TlsMode::Implicit => {
            format!("TLS failed on {target}: if this is a STARTTLS port ({}), set tls = \"starttls\"", proto.starttls_port())
        }
        _ => format!(
            "TLS failed on {target}: check the TLS mode and port ({implicit} = TLS from the first byte, {} = STARTTLS)",
            proto.starttls_port()
        ),
    }
}

/// Whether a server's words say it refuses one more simultaneous connection
/// (Dovecot: "Maximum number of connections from user+IP exceeded";
/// Microsoft 365: "432 4.3.2 Concurrent connections limit exceeded" and
/// "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"; Gmail IMAP:
/// "Too many simultaneous connections").
pub fn says_too_many_connections(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("sender thread limit")
        || t.contains("connection")
            && (t.contains("too many")
                || t.contains("maximum")
                || t.contains("limit")
                || t.contains("exceeded"))
}

/// Read more bytes from an upstream into `buf` before `deadline`.
pub async fn read_more<S, B>(
    stream: &mut S,
    buf: &mut B,
    deadline: tokio::time::Instant,
    target: &str,
    stage: Stage,
    secs: u64,
) -> Result<(), UpstreamError>
where
    S: tokio::io::AsyncRead + Unpin,
    B: bytes::BufMut,
{
    use tokio::io::AsyncReadExt;
    match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
        Ok(Ok(0)) => Err(UpstreamError::Closed {
            target: target.to_owned(),
            stage,
        }),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(UpstreamError::Io {
            target: target.to_owned(),
            source: Arc::new(e),
        }),
        Err(_) => Err(UpstreamError::Timeout {
            target: target.to_owned(),
            stage,
            secs,
        }),
    }
}

/// Write and flush to an upstream within `timeout`.
pub async fn write_within<S>(
    stream: &mut S,
    data: &[u8],
    timeout: Duration,
    target: &str,
    stage: Stage,
) -> Result<(), UpstreamError>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    crate::io::write_all_within(stream, data, timeout)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => UpstreamError::Timeout {
                target: target.to_owned(),
                stage,
                secs: timeout.as_secs(),
            },
            _ => UpstreamError::Io {
                target: target.to_owned(),
                source: Arc::new(e),
            },
        })
}

/// Resolve and connect (each address in turn), within `timeout` per step.
pub async fn dial(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), UpstreamError> {
    let target = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return Err(UpstreamError::Resolve {
                    target,
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(UpstreamError::Resolve {
                    target,
                    reason: "DNS timed out".into(),
                })
            }
        };
    let mut last_err = UpstreamError::Resolve {
        target: target.clone(),
        reason: "no addresses".into(),
    };
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, addr));
            }
            Ok(Err(e)) => {
                last_err = UpstreamError::Connect {
                    target: target.clone(),
                    source: Arc::new(e),
                }
            }
            Err(_) => {
                last_err = UpstreamError::ConnectTimeout {
                    target: target.clone(),
                }
            }
        }
    }
    Err(last_err)
}

/// TLS client handshake towards `endpoint` (certificate checked for its host).
pub async fn tls_connect<IO>(
    endpoint: &Endpoint,
    tls: &Arc<ClientConfig>,
    tcp: IO,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<IO>, UpstreamError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let target = format!("{}:{}", endpoint.host, endpoint.port);
    let host = endpoint
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let name = ServerName::try_from(host).map_err(|_| UpstreamError::Tls {
        target: target.clone(),
        failure: TlsFailure::BadName,
        tls: endpoint.tls,
    })?;
    let connector = TlsConnector::from(tls.clone());
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(UpstreamError::Tls {
            target,
            failure: TlsFailure::Handshake(Arc::new(e)),
            tls: endpoint.tls,
        }),
        // Mail servers speak first, so a STARTTLS port answers a ClientHello
        // at once (with plaintext: "corrupt message"); silence means the
        // server is frozen or overloaded.
        Err(_) => Err(UpstreamError::Timeout {
            target,
            stage: Stage::TlsHandshake,
            secs: timeout.as_secs().max(1),
        }),
    }
}

/// After the server said yes to STARTTLS: refuse anything it sent after that
/// reply (it arrived in plaintext: the CVE-2011-0411 injection class), then
/// the TLS handshake over the same socket.
pub async fn starttls<IO>(
    pending: &[u8],
    plain: IO,
    endpoint: &Endpoint,
    tls: &Arc<ClientConfig>,
    timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<IO>, UpstreamError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if !pending.is_empty() {
        return Err(UpstreamError::Protocol {
            target: format!("{}:{}", endpoint.host, endpoint.port),
            what: "data after the STARTTLS reply (possible injection)".into(),
        });
    }
    tls_connect(endpoint, tls, plain, timeout).await
}

/// A token from `src` as the SASL response of `mech` (XOAUTH2, else
/// OAUTHBEARER) for `user` on `endpoint`: the raw response, and the token
/// (to drop from the cache if the server refuses it; `fresh` when it was
/// fetched just now).
pub async fn bearer_response(
    src: &crate::auth::token::TokenSource,
    mech: crate::sasl::Mechanism,
    user: &str,
    endpoint: &Endpoint,
) -> Result<(Vec<u8>, crate::auth::token::Token), UpstreamError> {
    use crate::sasl;
    let token = src
        .token()
        .await
        .map_err(|e| UpstreamError::Credential(e.into()))?;
    let raw = match mech {
        sasl::Mechanism::XOAuth2 => sasl::xoauth2_encode(user, &token.secret),
        _ => sasl::oauthbearer_encode(user, &endpoint.host, endpoint.port, &token.secret),
    };
    Ok((raw, token))
}

/// Where and how to reach one account's reading server (IMAP or POP3):
/// what the proxies and `doctor` connect with.
#[derive(Debug, Clone)]
pub struct MailboxServer {
    pub account: String,
    pub endpoint: Endpoint,
    pub username: String,
    pub credential: crate::auth::credentials::Credential,
    pub tls: Arc<ClientConfig>,
    pub timeout: Duration,
}

impl MailboxServer {
    /// The server `svc` of account `a` (its `imap` or `pop3`), if it has
    /// that server and a credential.
    pub fn of(
        a: &crate::config::Account,
        svc: Option<&crate::config::Service>,
        credential: Option<crate::auth::credentials::Credential>,
        timeout: Duration,
    ) -> Result<Option<MailboxServer>, crate::tls::TlsError> {
        let (Some(svc), Some(credential)) = (svc, credential) else {
            return Ok(None);
        };
        Ok(Some(MailboxServer {
            account: a.name.clone(),
            endpoint: svc.endpoint.clone(),
            username: svc.username.clone(),
            credential,
            tls: crate::tls::client_config(a.ca_file.as_deref(), a.tls_pin)?,
            timeout,
        }))
    }

    pub fn target(&self) -> String {
        format!("{}:{}", self.endpoint.host, self.endpoint.port)
    }
}

/// A reading server's socket: plaintext, or TLS over a read-ahead socket
/// (one `recv` per 64 KiB while a FETCH or RETR streams).
pub type ReaderStream = crate::io::MaybeTls<
    TcpStream,
    tokio_rustls::client::TlsStream<crate::io::ReadAhead<TcpStream>>,
>;

/// STARTTLS (STLS) on a reading server's plaintext socket, after its "go
/// ahead"; `pending` must be empty (bytes after the go-ahead would be
/// plaintext injection).
pub async fn upgrade_reader(
    stream: ReaderStream,
    pending: &[u8],
    cfg: &MailboxServer,
) -> Result<ReaderStream, UpstreamError> {
    stream
        .upgrade(|tcp| async {
            starttls(
                pending,
                crate::io::ReadAhead::new(tcp),
                &cfg.endpoint,
                &cfg.tls,
                cfg.timeout,
            )
            .await
        })
        .await
}
