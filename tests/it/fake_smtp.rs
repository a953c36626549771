//! A scripted fake upstream SMTP server (the "provider") for integration tests.
//!
//! It speaks real ESMTP over a real socket on `127.0.0.1`, with plaintext,
//! STARTTLS or implicit TLS (certificates issued by a throw-away test CA, see
//! [`TestPki`]), AUTH PLAIN/LOGIN/XOAUTH2/OAUTHBEARER, and scripted replies
//! (see [`Script`]) so tests can exercise the relay's failure handling.
//!
//! Std threads and blocking sockets only (one thread per connection); no tokio.
//! Server threads never panic on client misbehaviour: they just close.
//!
//! ```ignore
//! let pki = TestPki::new();
//! let fake = FakeSmtp::start(Script { tls: Tls::Implicit, ..Script::default() }, &pki);
//! // point postern at fake.addr, trusting pki.ca_pem_path ...
//! assert_eq!(fake.messages().len(), 1);
//! ```
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

/// Read/write timeout on every server-side socket, so stuck tests end.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest command line accepted (AUTH lines with big tokens included).
const MAX_COMMAND: usize = 64 * 1024;
/// Largest message accepted by DATA.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// The server's name in EHLO/HELO replies.
const SERVER_NAME: &str = "fake.test";
/// Final reply after the bearer challenge dance.
const BEARER_FAILED: &str = "535 5.7.8 Username and Password not accepted";
/// JSON error sent (base64) in the 334 bearer challenge, as Gmail does.
pub const BEARER_CHALLENGE_JSON: &str =
    r#"{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}"#;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

// ---------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------

/// A throw-away certificate authority. The CA certificate (PEM) is written to
/// `ca_pem_path` inside a temp dir that lives as long as any clone of this value.
#[derive(Clone)]
pub struct TestPki {
    /// The CA certificate, PEM, on disk (give this to postern as a trust anchor).
    pub ca_pem_path: PathBuf,
    /// The same CA certificate, PEM text.
    pub ca_pem: String,
    /// The same CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    inner: Arc<PkiInner>,
}

struct PkiInner {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    _dir: tempfile::TempDir,
}

impl TestPki {
    /// A fresh CA (ECDSA P-256, `is_ca`), its certificate written to a temp file.
    pub fn new() -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Postern Fake SMTP Test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_pem_path = dir.path().join("fake-smtp-ca.pem");
        let ca_pem = cert.pem();
        std::fs::write(&ca_pem_path, &ca_pem).unwrap();
        TestPki {
            ca_pem_path,
            ca_pem,
            ca_der: cert.der().clone(),
            inner: Arc::new(PkiInner {
                issuer: rcgen::Issuer::new(params, key),
                _dir: dir,
            }),
        }
    }

    /// A server config whose leaf certificate (signed by this CA) covers `names`
    /// (DNS names, or IP addresses such as `"127.0.0.1"`).
    pub fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        self.try_server_config(&names).unwrap()
    }

    fn try_server_config(&self, names: &[String]) -> Result<Arc<ServerConfig>, String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|x| e(&x))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cn = names.first().map(String::as_str).unwrap_or("fake smtp");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::NoCa;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().map_err(|x| e(&x))?;
        let cert = params
            .signed_by(&key, &self.inner.issuer)
            .map_err(|x| e(&x))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|x| e(&x))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .map_err(|x| e(&x))?;
        Ok(Arc::new(config))
    }

    /// A client config trusting only this CA (for tests that talk TLS themselves).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

// ---------------------------------------------------------------------------
// Script
// ---------------------------------------------------------------------------

/// How the fake server does TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plaintext only; STARTTLS not offered.
    None,
    /// Plaintext, STARTTLS offered. Before TLS, AUTH and MAIL get
    /// `530 5.7.0 Must issue a STARTTLS command first`.
    Starttls,
    /// Plaintext, STARTTLS not offered (STARTTLS gets 502); AUTH works in plaintext,
    /// so a test can see in the transcript whether the client leaked credentials.
    StarttlsNotOffered,
    /// TLS handshake first, then the greeting.
    Implicit,
}

/// How the fake answers AUTH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Every mechanism succeeds (`235 2.7.0 Accepted`).
    Accept,
    /// Every mechanism fails with this reply line, e.g.
    /// `"535 5.7.8 Username and Password not accepted"`.
    Reject(String),
    /// XOAUTH2/OAUTHBEARER: `334 <base64 of BEARER_CHALLENGE_JSON>`, then expects
    /// the client's empty line (XOAUTH2) or `AQ==` (OAUTHBEARER), then
    /// `535 5.7.8 Username and Password not accepted`. PLAIN/LOGIN: that 535 at once.
    BearerChallenge,
    /// XOAUTH2/OAUTHBEARER: accept only this bearer token, otherwise the challenge
    /// dance as in `BearerChallenge`. PLAIN/LOGIN: accept.
    AcceptToken(String),
}

/// What the fake server does. Replies are full reply lines ("250 2.1.0 OK").
/// A reply may also be given already multi-line, lines separated by `\n`
/// (e.g. "535-5.7.8 first\n535 5.7.8 second"): it is then sent as is (CRLF).
#[derive(Clone, Debug)]
pub struct Script {
    pub tls: Tls,
    /// Names in the leaf certificate; default `["localhost", "127.0.0.1"]`.
    pub cert_names: Vec<String>,
    /// Default `Some("220 fake.test ESMTP")`; `None`: accept and never say anything.
    /// A non-2xx greeting makes every command but QUIT get `503 5.5.1`.
    pub greeting: Option<String>,
    /// EHLO keywords. "STARTTLS" is appended before TLS when `tls == Starttls`.
    /// If no "AUTH ..." keyword is present, AUTH is refused (504) and MAIL does not
    /// require authentication; otherwise only the listed mechanisms are accepted.
    pub ehlo_extensions: Vec<String>,
    pub auth: Auth,
    /// Reply to MAIL FROM (after successful AUTH); default "250 2.1.0 OK".
    pub mail_reply: String,
    /// `(substring of the address, reply line)`, first match wins;
    /// otherwise "250 2.1.5 OK". Recipients with a 2xx reply are recorded.
    pub rcpt_replies: Vec<(String, String)>,
    /// Reply to DATA; default "354 Go ahead". Non-3xx: the message is not read.
    pub data_reply: String,
    /// Reply after the final "."; default "250 2.0.0 OK queued as 1".
    /// The message is recorded only if this starts with '2'.
    pub end_reply: String,
    /// Close the socket (no reply) once this many raw message bytes arrived
    /// after the 354 (0: right after the 354).
    pub drop_after_data_bytes: Option<usize>,
    /// Take the whole message (recorded as delivered, as a real server that
    /// hangs after queueing it), then never answer the final dot or BDAT LAST.
    pub freeze_after_data: bool,
    /// At most this many connections at once are logged in: a successful
    /// AUTH beyond that gets this reply line and the connection closes
    /// (Dovecot's `mail_max_userip_connections`).
    pub max_sessions: Option<(usize, String)>,
    /// Send the greeting, AUTH failures, MAIL/RCPT replies and the end-of-data reply
    /// as two-line replies, and send every multi-line reply (EHLO too) one line per
    /// write with a short pause in between, to exercise the client's reply parser.
    pub replies_multiline: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            tls: Tls::None,
            cert_names: vec!["localhost".into(), "127.0.0.1".into()],
            greeting: Some("220 fake.test ESMTP".into()),
            ehlo_extensions: [
                "PIPELINING",
                "8BITMIME",
                "SIZE 10485760",
                "ENHANCEDSTATUSCODES",
                "AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            auth: Auth::Accept,
            mail_reply: "250 2.1.0 OK".into(),
            rcpt_replies: Vec::new(),
            data_reply: "354 Go ahead".into(),
            end_reply: "250 2.0.0 OK queued as 1".into(),
            drop_after_data_bytes: None,
            freeze_after_data: false,
            max_sessions: None,
            replies_multiline: false,
        }
    }
}

impl Script {
    /// The mechanisms listed in the "AUTH ..." EHLO keyword(s), upper-cased;
    /// `None` when AUTH is not advertised at all.
    fn auth_mechanisms(&self) -> Option<Vec<String>> {
        let mut found = None;
        for ext in &self.ehlo_extensions {
            let mut words = ext.split_whitespace();
            if words.next().is_some_and(|w| w.eq_ignore_ascii_case("AUTH")) {
                found
                    .get_or_insert_with(Vec::new)
                    .extend(words.map(|w| w.to_ascii_uppercase()));
            }
        }
        found
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// A message the fake accepted (end-of-data reply 2xx).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub mail_from: String,
    /// Recipients that got a 2xx RCPT reply.
    pub rcpts: Vec<String>,
    /// The message, dot-unstuffed, without the final CRLF.CRLF
    /// (so "a\r\nb\r\n.\r\n" gives "a\r\nb").
    pub data: Vec<u8>,
}

/// Credentials a client presented in an AUTH exchange (decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRecord {
    /// "PLAIN", "LOGIN", "XOAUTH2" or "OAUTHBEARER".
    pub mechanism: String,
    pub user: String,
    /// The password (PLAIN/LOGIN) or the bearer token (XOAUTH2/OAUTHBEARER).
    pub secret: String,
}

struct Shared {
    script: Mutex<Script>,
    pki: TestPki,
    configs: Mutex<HashMap<Vec<String>, Arc<ServerConfig>>>,
    stop: AtomicBool,
    connections: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Most connections open at once so far.
    peak_open: AtomicUsize,
    /// Connections logged in now.
    authed: AtomicUsize,
    auth_attempts: AtomicUsize,
    transcript: Mutex<Vec<String>>,
    messages: Mutex<Vec<Received>>,
    auths: Mutex<Vec<AuthRecord>>,
    live: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn script(&self) -> Script {
        lock(&self.script).clone()
    }

    fn log(&self, conn: usize, line: &str) {
        lock(&self.transcript).push(format!("c{conn} {line}"));
    }

    fn server_config(&self, names: &[String]) -> Result<Arc<ServerConfig>, String> {
        let mut cache = lock(&self.configs);
        if let Some(c) = cache.get(names) {
            return Ok(c.clone());
        }
        let c = self.pki.try_server_config(names)?;
        cache.insert(names.to_vec(), c.clone());
        Ok(c)
    }
}

/// The fake SMTP server; serves until dropped (dropping also closes the
/// connections still open).
pub struct FakeSmtp {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeSmtp {
    /// Binds `127.0.0.1:0` and serves each connection in its own thread.
    pub fn start(script: Script, pki: &TestPki) -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            script: Mutex::new(script.clone()),
            pki: pki.clone(),
            configs: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            peak_open: AtomicUsize::new(0),
            authed: AtomicUsize::new(0),
            auth_attempts: AtomicUsize::new(0),
            transcript: Mutex::new(Vec::new()),
            messages: Mutex::new(Vec::new()),
            auths: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
        });
        if script.tls != Tls::None {
            // Build the certificate now, so a bad name fails the test, not a thread.
            shared.server_config(&script.cert_names).unwrap();
        }
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("fake-smtp-{}", addr.port()))
            .spawn(move || accept_loop(listener, sh))
            .unwrap();
        FakeSmtp {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Replaces the script; takes effect from the next command (TLS settings:
    /// from the next handshake).
    pub fn set_script(&self, script: Script) {
        *lock(&self.shared.script) = script;
    }

    /// The current script (e.g. to modify one field and `set_script` it back).
    pub fn script(&self) -> Script {
        self.shared.script()
    }

    /// Every line received outside message data, across connections, in order,
    /// tagged with the connection number: "c1 EHLO x", "c1 AUTH PLAIN AGEAYg==",
    /// "c2 MAIL FROM:<a@b>". AUTH continuation lines are included as sent
    /// (an empty continuation shows as "c1 ").
    pub fn transcript(&self) -> Vec<String> {
        lock(&self.shared.transcript).clone()
    }

    /// Messages accepted with a 2xx end-of-data reply.
    pub fn messages(&self) -> Vec<Received> {
        lock(&self.shared.messages).clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The most connections that were open at the same time.
    pub fn peak_open(&self) -> usize {
        self.shared.peak_open.load(Ordering::SeqCst)
    }

    /// AUTH commands received so far (whatever their outcome).
    pub fn auth_attempts(&self) -> usize {
        self.shared.auth_attempts.load(Ordering::SeqCst)
    }

    /// Decoded credentials of every well-formed AUTH exchange, in order.
    pub fn auths(&self) -> Vec<AuthRecord> {
        lock(&self.shared.auths).clone()
    }

    /// Waits until at least `n` messages were accepted; false on timeout.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.shared.messages).len() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl FakeSmtp {
    /// Close every open connection (as a server does to idle clients), but
    /// keep accepting new ones.
    pub fn close_connections(&self) {
        for s in lock(&self.shared.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in lock(&self.shared.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for sock in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(sock) = sock else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
        let _ = sock.set_write_timeout(Some(IO_TIMEOUT));
        let _ = sock.set_nodelay(true);
        if let Ok(clone) = sock.try_clone() {
            lock(&shared.live).push(clone);
        }
        let sh = shared.clone();
        let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_open.fetch_max(open, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("fake-smtp-c{id}"))
            .spawn(move || {
                let mut session = Session {
                    shared: sh,
                    id,
                    stream: Stream::Plain(sock),
                    buf: Vec::new(),
                    tls_active: false,
                    authed: false,
                    mail_from: None,
                    rcpts: Vec::new(),
                    chunks: Vec::new(),
                };
                let _ = session.run();
                session.close();
                session.shared.open.fetch_sub(1, Ordering::SeqCst);
                if session.authed {
                    session.shared.authed.fetch_sub(1, Ordering::SeqCst);
                }
            });
        if spawned.is_err() {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    Gone,
}

impl Stream {
    fn sock(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(t) => Some(&t.sock),
            Stream::Gone => None,
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection gone")
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
            Stream::Gone => Err(gone()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
            Stream::Gone => Err(gone()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
            Stream::Gone => Err(gone()),
        }
    }
}

enum Flow {
    Continue,
    Close,
}

struct Session {
    shared: Arc<Shared>,
    id: usize,
    stream: Stream,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
    tls_active: bool,
    authed: bool,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    /// BDAT chunks of the message in progress.
    chunks: Vec<u8>,
}

fn bad_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Lines of a reply, expanded to two lines when `multiline` (see `Script`).
fn reply_lines(reply: &str, multiline: bool) -> Vec<String> {
    if reply.contains('\n') {
        return reply
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.is_empty())
            .collect();
    }
    let b = reply.as_bytes();
    let coded = b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ';
    if !(multiline && coded) {
        return vec![reply.to_string()];
    }
    let (code, text) = (&reply[..3], &reply[4..]);
    let enh = text
        .split_whitespace()
        .next()
        .filter(|w| w.split('.').count() == 3 && w.split('.').all(|p| p.parse::<u16>().is_ok()));
    let last = match enh {
        Some(e) => format!("{code} {e} (end of multi-line reply)"),
        None => format!("{code} (end of multi-line reply)"),
    };
    vec![format!("{code}-{text}"), last]
}

/// Parses the address of "FROM:<a@b> ..." / "TO:<a@b> ...".
fn parse_path(rest: &str, prefix: &str) -> Option<String> {
    let head = rest.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let arg = rest[prefix.len()..].trim_start();
    if let Some(inner) = arg.strip_prefix('<') {
        let end = inner.find('>')?;
        Some(inner[..end].to_string())
    } else {
        let addr = arg.split_whitespace().next()?;
        Some(addr.to_string())
    }
}

/// Removes one leading dot from every line of `data` (CRLF-separated).
fn unstuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut at_line_start = true;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if !(at_line_start && b == b'.') {
            out.push(b);
        }
        at_line_start = b == b'\n' && i > 0 && data[i - 1] == b'\r';
        i += 1;
    }
    out
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The (user, token) of an XOAUTH2 or OAUTHBEARER initial response.
fn parse_bearer(mech: &str, decoded: &str) -> Option<(String, String)> {
    let mut fields = decoded.split('\x01');
    let user = if mech == "XOAUTH2" {
        fields.next()?.strip_prefix("user=")?.to_string()
    } else {
        // gs2 header: "n,a=user," (or "y,..."), then key=value pairs.
        let gs2 = fields.next()?;
        let mut parts = gs2.split(',');
        let flag = parts.next()?;
        if !matches!(flag, "n" | "y") && !flag.starts_with("p=") {
            return None;
        }
        parts
            .next()
            .and_then(|a| a.strip_prefix("a="))
            .unwrap_or("")
            .to_string()
    };
    let auth = fields.find_map(|f| f.strip_prefix("auth="))?;
    let (scheme, token) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Bearer") || token.is_empty() {
        return None;
    }
    Some((user, token.to_string()))
}

impl Session {
    fn close(&mut self) {
        if let Some(s) = self.stream.sock() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.stream = Stream::Gone;
    }

    /// Reads more bytes into `buf`; Ok(false) on EOF.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// One line without its line ending; None on EOF.
    fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=scanned + i).collect();
                let mut line = &line[..line.len() - 1];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                return Ok(Some(String::from_utf8_lossy(line).into_owned()));
            }
            scanned = self.buf.len();
            if scanned > MAX_COMMAND {
                let _ = self.send_raw("500 5.5.2 Line too long");
                return Err(bad_data("line too long"));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads an AUTH continuation line, logging it; None on EOF.
    fn read_continuation(&mut self) -> io::Result<Option<String>> {
        let line = self.read_line()?;
        if let Some(l) = &line {
            self.shared.log(self.id, l);
        }
        Ok(line)
    }

    fn write_lines(&mut self, lines: &[String], split: bool) -> io::Result<()> {
        if split && lines.len() > 1 {
            for l in lines {
                self.stream.write_all(format!("{l}\r\n").as_bytes())?;
                self.stream.flush()?;
                std::thread::sleep(Duration::from_millis(5));
            }
            return Ok(());
        }
        let mut out = String::new();
        for l in lines {
            out.push_str(l);
            out.push_str("\r\n");
        }
        self.stream.write_all(out.as_bytes())?;
        self.stream.flush()
    }

    /// Sends a fixed single reply line.
    fn send_raw(&mut self, line: &str) -> io::Result<()> {
        self.write_lines(&[line.to_string()], false)
    }

    /// Sends a scripted reply, multi-line if the script says so.
    fn reply(&mut self, reply: &str, script: &Script) -> io::Result<()> {
        let lines = reply_lines(reply, script.replies_multiline);
        self.write_lines(&lines, script.replies_multiline)
    }

    fn start_tls(&mut self, script: &Script) -> io::Result<()> {
        let config = self
            .shared
            .server_config(&script.cert_names)
            .map_err(|e| bad_data(&e))?;
        let Stream::Plain(sock) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(bad_data("not a plaintext stream"));
        };
        let conn = ServerConnection::new(config).map_err(|e| bad_data(&e.to_string()))?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            let (r, w) = tls.conn.complete_io(&mut tls.sock)?;
            if r == 0 && w == 0 && tls.conn.is_handshaking() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.stream = Stream::Tls(Box::new(tls));
        self.tls_active = true;
        Ok(())
    }

    fn run(&mut self) -> io::Result<()> {
        let script = self.shared.script();
        if script.tls == Tls::Implicit {
            self.start_tls(&script)?;
        }
        let Some(greeting) = script.greeting.clone() else {
            // Say nothing; swallow whatever comes until EOF/timeout/drop.
            while self.fill()? {
                self.buf.clear();
            }
            return Ok(());
        };
        self.reply(&greeting, &script)?;
        let serving = greeting.starts_with('2');
        loop {
            let Some(line) = self.read_line()? else {
                return Ok(());
            };
            self.shared.log(self.id, &line);
            let script = self.shared.script();
            match self.command(&line, &script, serving)? {
                Flow::Continue => {}
                Flow::Close => return Ok(()),
            }
        }
    }

    fn reset_envelope(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
        self.chunks.clear();
    }

    fn command(&mut self, line: &str, script: &Script, serving: bool) -> io::Result<Flow> {
        let (verb, rest) = match line.split_once(' ') {
            Some((v, r)) => (v.to_ascii_uppercase(), r.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        if verb == "QUIT" {
            self.send_raw("221 2.0.0 closing connection")?;
            if let Stream::Tls(t) = &mut self.stream {
                t.conn.send_close_notify();
                let _ = t.flush();
            }
            return Ok(Flow::Close);
        }
        if !serving {
            self.send_raw("503 5.5.1 No service")?;
            return Ok(Flow::Continue);
        }
        let needs_starttls = script.tls == Tls::Starttls && !self.tls_active;
        match verb.as_str() {
            "EHLO" => {
                self.reset_envelope();
                let mut lines = vec![format!("{SERVER_NAME} Hello {rest}")];
                lines.extend(script.ehlo_extensions.iter().cloned());
                if needs_starttls {
                    lines.push("STARTTLS".into());
                }
                let n = lines.len();
                let lines: Vec<String> = lines
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
                    .collect();
                self.write_lines(&lines, script.replies_multiline)?;
            }
            "HELO" => {
                self.reset_envelope();
                self.send_raw(&format!("250 {SERVER_NAME}"))?;
            }
            "STARTTLS" => {
                if self.tls_active {
                    self.send_raw("503 5.5.1 TLS already active")?;
                } else if script.tls != Tls::Starttls {
                    self.send_raw("502 5.5.1 STARTTLS not supported")?;
                } else if !rest.is_empty() {
                    self.send_raw("501 5.5.4 Syntax error (no parameters allowed)")?;
                } else {
                    self.send_raw("220 2.0.0 Ready to start TLS")?;
                    // Anything pipelined after STARTTLS in plaintext is discarded.
                    self.buf.clear();
                    self.start_tls(script)?;
                    self.authed = false;
                    self.reset_envelope();
                }
            }
            "AUTH" => return self.auth(rest, script, needs_starttls),
            "MAIL" => {
                if needs_starttls {
                    self.send_raw("530 5.7.0 Must issue a STARTTLS command first")?;
                } else if script.auth_mechanisms().is_some() && !self.authed {
                    self.send_raw("530 5.7.0 Authentication Required")?;
                } else if self.mail_from.is_some() {
                    self.send_raw("503 5.5.1 Nested MAIL command")?;
                } else if let Some(from) = parse_path(rest, "FROM:") {
                    self.reply(&script.mail_reply, script)?;
                    if script.mail_reply.starts_with('2') {
                        self.mail_from = Some(from);
                        self.rcpts.clear();
                    }
                } else {
                    self.send_raw("501 5.5.4 Syntax error in MAIL command")?;
                }
            }
            "RCPT" => {
                if self.mail_from.is_none() {
                    self.send_raw("503 5.5.1 MAIL first")?;
                } else if let Some(to) = parse_path(rest, "TO:") {
                    let reply = script
                        .rcpt_replies
                        .iter()
                        .find(|(pat, _)| to.contains(pat.as_str()))
                        .map(|(_, r)| r.clone())
                        .unwrap_or_else(|| "250 2.1.5 OK".into());
                    self.reply(&reply, script)?;
                    if reply.starts_with('2') {
                        self.rcpts.push(to);
                    }
                } else {
                    self.send_raw("501 5.5.4 Syntax error in RCPT command")?;
                }
            }
            "DATA" => {
                if self.mail_from.is_none() {
                    self.send_raw("503 5.5.1 MAIL first")?;
                } else if self.rcpts.is_empty() {
                    self.send_raw("503 5.5.1 RCPT first")?;
                } else if !script.data_reply.starts_with('3') {
                    self.reply(&script.data_reply, script)?;
                    self.reset_envelope();
                } else {
                    self.send_raw(&script.data_reply)?;
                    return self.data(script);
                }
            }
            "BDAT" if script.ehlo_extensions.iter().any(|e| e == "CHUNKING") => {
                return self.bdat(rest, script);
            }
            "RSET" => {
                self.reset_envelope();
                self.send_raw("250 2.0.0 OK")?;
            }
            "NOOP" => self.send_raw("250 2.0.0 OK")?,
            _ => self.send_raw("500 5.5.1 Unrecognized command")?,
        }
        Ok(Flow::Continue)
    }

    /// `BDAT n [LAST]` (RFC 3030): reads exactly n bytes; the last chunk
    /// ends the message (recorded as DATA would, without a final CRLF).
    fn bdat(&mut self, rest: &str, script: &Script) -> io::Result<Flow> {
        let mut words = rest.split_whitespace();
        let size = words.next().and_then(|n| n.parse::<usize>().ok());
        let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
        let Some(size) = size.filter(|&n| n <= MAX_MESSAGE) else {
            self.send_raw("501 5.5.4 Syntax: BDAT size [LAST]")?;
            return Ok(Flow::Close);
        };
        if let Some(limit) = script.drop_after_data_bytes {
            if self.chunks.len() + size > limit {
                return Ok(Flow::Close);
            }
        }
        while self.buf.len() < size {
            if !self.fill()? {
                return Ok(Flow::Close);
            }
        }
        let rest_of_input = self.buf.split_off(size);
        let chunk = std::mem::replace(&mut self.buf, rest_of_input);
        self.chunks.extend_from_slice(&chunk);
        if self.mail_from.is_none() || self.rcpts.is_empty() {
            self.chunks.clear();
            self.send_raw("503 5.5.1 MAIL and RCPT first")?;
            return Ok(Flow::Continue);
        }
        if !last {
            self.send_raw(&format!("250 2.0.0 {size} octets received"))?;
            return Ok(Flow::Continue);
        }
        let mut data = std::mem::take(&mut self.chunks);
        if data.ends_with(b"\r\n") {
            data.truncate(data.len() - 2);
        }
        self.end_message(data, script)?;
        Ok(Flow::Continue)
    }

    /// The whole message is in: record it (when the end reply is 2xx, before
    /// the reply goes out, so a client that saw the 2xx always finds it in
    /// `messages()`), then reply.
    fn end_message(&mut self, data: Vec<u8>, script: &Script) -> io::Result<()> {
        if script.freeze_after_data {
            if let Some(mail_from) = self.mail_from.take() {
                lock(&self.shared.messages).push(Received {
                    mail_from,
                    rcpts: std::mem::take(&mut self.rcpts),
                    data,
                });
            }
            // Silence until the client gives up (EOF) or IO_TIMEOUT passes.
            let mut sink = [0u8; 1024];
            while self.stream.read(&mut sink)? > 0 {}
            return Err(bad_data("frozen after the message"));
        }
        if script.end_reply.starts_with('2') {
            if let Some(mail_from) = self.mail_from.take() {
                lock(&self.shared.messages).push(Received {
                    mail_from,
                    rcpts: std::mem::take(&mut self.rcpts),
                    data,
                });
            }
        }
        self.reset_envelope();
        self.reply(&script.end_reply, script)
    }

    /// Reads the message after the 354.
    fn data(&mut self, script: &Script) -> io::Result<Flow> {
        let mut raw = std::mem::take(&mut self.buf);
        let mut searched = 0;
        loop {
            if let Some(limit) = script.drop_after_data_bytes {
                if raw.len() >= limit {
                    return Ok(Flow::Close);
                }
            }
            let end = if raw.starts_with(b".\r\n") {
                Some((0, 3))
            } else {
                find(&raw, b"\r\n.\r\n", searched).map(|p| (p, p + 5))
            };
            if let Some((body_end, term_end)) = end {
                self.buf = raw.split_off(term_end);
                self.end_message(unstuff(&raw[..body_end]), script)?;
                return Ok(Flow::Continue);
            }
            if raw.len() > MAX_MESSAGE {
                self.send_raw("552 5.3.4 Message too big")?;
                return Ok(Flow::Close);
            }
            searched = raw.len().saturating_sub(4);
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(Flow::Close);
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    }

    /// The initial response, or a 334 with `challenge` and the client's answer.
    /// Ok(None): EOF.
    fn auth_response(&mut self, ir: Option<&str>, challenge: &str) -> io::Result<Option<String>> {
        match ir {
            Some(ir) => Ok(Some(ir.to_string())),
            None => {
                self.send_raw(&format!("334 {challenge}"))?;
                self.read_continuation()
            }
        }
    }

    fn auth(&mut self, rest: &str, script: &Script, needs_starttls: bool) -> io::Result<Flow> {
        self.shared.auth_attempts.fetch_add(1, Ordering::SeqCst);
        let mut words = rest.split_whitespace();
        let mech = words.next().unwrap_or("").to_ascii_uppercase();
        let ir = words.next();
        let Some(mechs) = script.auth_mechanisms() else {
            self.send_raw("502 5.5.1 AUTH not available")?;
            return Ok(Flow::Continue);
        };
        if needs_starttls {
            self.send_raw("530 5.7.0 Must issue a STARTTLS command first")?;
            return Ok(Flow::Continue);
        }
        if self.authed {
            self.send_raw("503 5.5.1 Already authenticated")?;
            return Ok(Flow::Continue);
        }
        if self.mail_from.is_some() {
            self.send_raw("503 5.5.1 MAIL transaction in progress")?;
            return Ok(Flow::Continue);
        }
        if !mechs.contains(&mech) {
            self.send_raw("504 5.5.4 Unrecognized authentication type")?;
            return Ok(Flow::Continue);
        }
        let decode = |s: &str| -> Option<String> {
            if s == "=" {
                return Some(String::new());
            }
            B64.decode(s.trim())
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let aborted = "501 5.7.0 Authentication aborted";
        let undecodable = "501 5.5.2 Cannot decode response";
        match mech.as_str() {
            "PLAIN" | "LOGIN" => {
                let creds = if mech == "PLAIN" {
                    let Some(resp) = self.auth_response(ir, "")? else {
                        return Ok(Flow::Close);
                    };
                    if resp == "*" {
                        self.send_raw(aborted)?;
                        return Ok(Flow::Continue);
                    }
                    decode(&resp).and_then(|d| {
                        let mut p = d.split('\0');
                        let (_authz, user, pass) = (p.next()?, p.next()?, p.next()?);
                        Some((user.to_string(), pass.to_string()))
                    })
                } else {
                    let Some(u) = self.auth_response(ir, "VXNlcm5hbWU6")? else {
                        return Ok(Flow::Close);
                    };
                    if u == "*" {
                        self.send_raw(aborted)?;
                        return Ok(Flow::Continue);
                    }
                    let Some(p) = self.auth_response(None, "UGFzc3dvcmQ6")? else {
                        return Ok(Flow::Close);
                    };
                    if p == "*" {
                        self.send_raw(aborted)?;
                        return Ok(Flow::Continue);
                    }
                    decode(&u).zip(decode(&p))
                };
                let Some((user, pass)) = creds else {
                    self.send_raw(undecodable)?;
                    return Ok(Flow::Continue);
                };
                self.record_auth(&mech, user, pass);
                match &script.auth {
                    Auth::Accept | Auth::AcceptToken(_) => self.accept_auth()?,
                    Auth::Reject(line) => self.reply(line, script)?,
                    Auth::BearerChallenge => self.reply(BEARER_FAILED, script)?,
                }
            }
            _ => {
                // XOAUTH2 / OAUTHBEARER
                let Some(resp) = self.auth_response(ir, "")? else {
                    return Ok(Flow::Close);
                };
                if resp == "*" {
                    self.send_raw(aborted)?;
                    return Ok(Flow::Continue);
                }
                let Some((user, token)) = decode(&resp).and_then(|d| parse_bearer(&mech, &d))
                else {
                    self.send_raw(&format!("501 5.5.2 Malformed {mech} response"))?;
                    return Ok(Flow::Continue);
                };
                self.record_auth(&mech, user, token.clone());
                let ok = match &script.auth {
                    Auth::Accept => true,
                    Auth::Reject(line) => {
                        self.reply(line, script)?;
                        return Ok(Flow::Continue);
                    }
                    Auth::BearerChallenge => false,
                    Auth::AcceptToken(t) => *t == token,
                };
                if ok {
                    self.accept_auth()?;
                    return Ok(Flow::Continue);
                }
                self.send_raw(&format!("334 {}", B64.encode(BEARER_CHALLENGE_JSON)))?;
                let Some(answer) = self.read_continuation()? else {
                    return Ok(Flow::Close);
                };
                let expected = if mech == "XOAUTH2" { "" } else { "AQ==" };
                if answer == expected {
                    self.reply(BEARER_FAILED, script)?;
                } else if answer == "*" {
                    self.send_raw(aborted)?;
                } else {
                    self.send_raw("501 5.5.2 Unexpected response to the 334 challenge")?;
                }
            }
        }
        Ok(Flow::Continue)
    }

    fn record_auth(&self, mechanism: &str, user: String, secret: String) {
        let mechanism = mechanism.to_string();
        lock(&self.shared.auths).push(AuthRecord {
            mechanism,
            user,
            secret,
        });
    }

    fn accept_auth(&mut self) -> io::Result<()> {
        let now_authed = self.shared.authed.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((max, line)) = self.shared.script().max_sessions {
            if now_authed > max {
                self.shared.authed.fetch_sub(1, Ordering::SeqCst);
                self.send_raw(&line)?;
                return Err(bad_data("too many sessions"));
            }
        }
        self.authed = true;
        self.send_raw("235 2.7.0 Accepted")
    }
}

// ---------------------------------------------------------------------------
// Self-tests, with a tiny blocking SMTP client.
// ---------------------------------------------------------------------------

enum ClientStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

/// Minimal blocking SMTP client for the self-tests.
struct Client {
    stream: ClientStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream: ClientStream::Plain(sock),
            buf: Vec::new(),
        }
    }

    fn connect_tls(addr: SocketAddr, pki: &TestPki, name: &str) -> io::Result<Client> {
        let mut c = Client::connect(addr);
        c.upgrade(pki, name)?;
        Ok(c)
    }

    fn upgrade(&mut self, pki: &TestPki, name: &str) -> io::Result<()> {
        let ClientStream::Plain(sock) = std::mem::replace(&mut self.stream, ClientStream::Gone)
        else {
            panic!("already TLS");
        };
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.stream = ClientStream::Tls(Box::new(tls));
        Ok(())
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match &mut self.stream {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(t) => t.as_mut(),
            ClientStream::Gone => panic!("gone"),
        }
    }

    fn send(&mut self, raw: &str) {
        let io = self.io();
        io.write_all(raw.as_bytes()).unwrap();
        io.flush().unwrap();
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8(line[..i].to_vec()).unwrap());
            }
            let mut chunk = [0u8; 4096];
            let n = self.io().read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// (code, text of each line)
    fn try_reply(&mut self) -> io::Result<(u16, Vec<String>)> {
        let mut texts = Vec::new();
        loop {
            let line = self.read_line()?;
            let code: u16 = line[..3].parse().unwrap();
            texts.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, texts));
            }
        }
    }

    fn reply(&mut self) -> (u16, Vec<String>) {
        self.try_reply().unwrap()
    }

    fn cmd(&mut self, line: &str) -> (u16, Vec<String>) {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }

    fn code(&mut self, line: &str) -> u16 {
        self.cmd(line).0
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn b64(s: &str) -> String {
    B64.encode(s)
}

#[test]
fn fake_smtp_plaintext_auth_plain_and_dot_stuffed_message() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(Script::default(), &pki);
    let mut c = Client::connect(fake.addr);
    assert_eq!(c.reply(), (220, vec!["fake.test ESMTP".to_string()]));
    let (code, ehlo) = c.cmd("EHLO client.test");
    assert_eq!(code, 250);
    assert!(ehlo.contains(&"AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER".to_string()));
    assert!(!ehlo.contains(&"STARTTLS".to_string()));
    assert_eq!(c.code("MAIL FROM:<a@example.com>"), 530);
    assert_eq!(
        c.code(&format!("AUTH PLAIN {}", b64("\0user@example.com\0secret"))),
        235
    );
    assert_eq!(c.code("MAIL FROM:<a@example.com> BODY=8BITMIME"), 250);
    assert_eq!(c.code("RCPT TO:<b@example.com>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send("Subject: hi\r\n\r\n..leading dot\r\n..\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    assert_eq!(c.code("NOOP"), 250);
    assert_eq!(c.code("FROB"), 500);
    assert_eq!(c.code("QUIT"), 221);

    assert_eq!(
        fake.messages(),
        vec![Received {
            mail_from: "a@example.com".into(),
            rcpts: vec!["b@example.com".into()],
            data: b"Subject: hi\r\n\r\n.leading dot\r\n.\r\nbody".to_vec(),
        }]
    );
    let t = fake.transcript();
    assert_eq!(t[0], "c1 EHLO client.test");
    assert!(t.contains(&"c1 MAIL FROM:<a@example.com> BODY=8BITMIME".to_string()));
    assert!(t.contains(&"c1 DATA".to_string()));
    assert!(!t
        .iter()
        .any(|l| l.contains("Subject") || l.contains("body")));
    assert_eq!(t.last().unwrap(), "c1 QUIT");
    assert_eq!(fake.connections(), 1);
    assert_eq!(fake.auth_attempts(), 1);
    assert_eq!(fake.auths()[0].user, "user@example.com");
    assert_eq!(fake.auths()[0].secret, "secret");
}

#[test]
fn fake_smtp_rcpt_rejection_and_failed_end_reply() {
    let pki = TestPki::new();
    let script = Script {
        rcpt_replies: vec![("nobody".into(), "550 5.1.1 No such user".into())],
        ..Script::default()
    };
    let fake = FakeSmtp::start(script.clone(), &pki);
    let mut c = Client::connect(fake.addr);
    c.reply();
    c.cmd("EHLO x");
    // AUTH LOGIN with continuations.
    assert_eq!(c.cmd("AUTH LOGIN"), (334, vec!["VXNlcm5hbWU6".to_string()]));
    assert_eq!(c.cmd(&b64("u")).0, 334);
    assert_eq!(c.code(&b64("p")), 235);
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(
        c.cmd("RCPT TO:<nobody@x.test>"),
        (550, vec!["5.1.1 No such user".to_string()])
    );
    assert_eq!(c.code("RCPT TO:<somebody@x.test>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send("one\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    assert_eq!(
        fake.messages()[0].rcpts,
        vec!["somebody@x.test".to_string()]
    );
    assert_eq!(fake.messages()[0].data, b"one");

    // Switch mid-test to a quota failure at end of data: not recorded.
    fake.set_script(Script {
        end_reply: "452 4.2.2 Mailbox full".into(),
        ..script
    });
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(c.code("RCPT TO:<somebody@x.test>"), 250);
    assert_eq!(c.code("RSET"), 250);
    assert_eq!(c.code("DATA"), 503);
    assert_eq!(c.code("MAIL FROM:<a@x.test>"), 250);
    assert_eq!(c.code("RCPT TO:<somebody@x.test>"), 250);
    assert_eq!(c.code("DATA"), 354);
    c.send("two\r\n.\r\nQUIT\r\n"); // pipelined QUIT after the data
    assert_eq!(c.reply().0, 452);
    assert_eq!(c.reply().0, 221);
    assert_eq!(fake.messages().len(), 1);
}

#[test]
fn fake_smtp_bearer_challenge_dance() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            auth: Auth::BearerChallenge,
            ..Script::default()
        },
        &pki,
    );
    let mut c = Client::connect(fake.addr);
    c.reply();
    c.cmd("EHLO x");
    let ir = b64("user=me@gmail.com\x01auth=Bearer ya29.tok\x01\x01");
    let (code, text) = c.cmd(&format!("AUTH XOAUTH2 {ir}"));
    assert_eq!(code, 334);
    assert_eq!(
        B64.decode(&text[0]).unwrap(),
        BEARER_CHALLENGE_JSON.as_bytes()
    );
    assert_eq!(
        c.cmd(""),
        (
            535,
            vec!["5.7.8 Username and Password not accepted".to_string()]
        )
    );
    assert_eq!(c.code("MAIL FROM:<me@gmail.com>"), 530);
    assert_eq!(fake.auth_attempts(), 1);
    assert_eq!(
        fake.auths(),
        vec![AuthRecord {
            mechanism: "XOAUTH2".into(),
            user: "me@gmail.com".into(),
            secret: "ya29.tok".into()
        }]
    );
    assert_eq!(fake.transcript()[2], "c1 "); // the empty answer to the challenge

    // AcceptToken with OAUTHBEARER: a wrong token gets the dance, the right one 235.
    fake.set_script(Script {
        auth: Auth::AcceptToken("good".into()),
        ..Script::default()
    });
    let bad = b64("n,a=me@gmail.com,\x01host=127.0.0.1\x01port=587\x01auth=Bearer bad\x01\x01");
    assert_eq!(c.code(&format!("AUTH OAUTHBEARER {bad}")), 334);
    assert_eq!(c.code("AQ=="), 535);
    assert_eq!(c.code("AUTH OAUTHBEARER"), 334); // no initial response
    let good = b64("n,a=me@gmail.com,\x01host=127.0.0.1\x01port=587\x01auth=Bearer good\x01\x01");
    assert_eq!(c.code(&good), 235);
    assert_eq!(c.code("MAIL FROM:<me@gmail.com>"), 250);
    assert_eq!(fake.auth_attempts(), 3);
}

#[test]
fn fake_smtp_starttls_not_offered() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            tls: Tls::StarttlsNotOffered,
            ..Script::default()
        },
        &pki,
    );
    let mut c = Client::connect(fake.addr);
    c.reply();
    let (_, ehlo) = c.cmd("EHLO x");
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
    assert_eq!(c.code("STARTTLS"), 502);
    assert_eq!(c.code("QUIT"), 221);
}

#[test]
fn fake_smtp_starttls_discards_pipelined_plaintext() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            tls: Tls::Starttls,
            ..Script::default()
        },
        &pki,
    );
    let mut c = Client::connect(fake.addr);
    c.reply();
    let (_, ehlo) = c.cmd("EHLO x");
    assert_eq!(ehlo.last().unwrap(), "STARTTLS");
    assert_eq!(c.code(&format!("AUTH PLAIN {}", b64("\0u\0p"))), 530);
    c.send("STARTTLS\r\nNOOP\r\n");
    assert_eq!(c.reply().0, 220);
    c.upgrade(&pki, "localhost").unwrap();
    let (_, ehlo) = c.cmd("EHLO x");
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
    assert_eq!(c.code(&format!("AUTH PLAIN {}", b64("\0u\0p"))), 235);
    assert_eq!(c.code("QUIT"), 221);
    let t = fake.transcript();
    assert!(!t.contains(&"c1 NOOP".to_string()), "{t:?}");
    assert_eq!(t.iter().filter(|l| *l == "c1 EHLO x").count(), 2);
}

#[test]
fn fake_smtp_implicit_tls_and_name_mismatch() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
        &pki,
    );
    for name in ["localhost", "127.0.0.1"] {
        let mut c = Client::connect_tls(fake.addr, &pki, name).unwrap();
        assert_eq!(c.reply().0, 220);
        let (_, ehlo) = c.cmd("EHLO x");
        assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")));
        assert_eq!(c.code(&format!("AUTH PLAIN {}", b64("\0u\0p"))), 235);
        assert_eq!(c.code("MAIL FROM:<a@b.test>"), 250);
        assert_eq!(c.code("RCPT TO:<c@d.test>"), 250);
        assert_eq!(c.code("DATA"), 354);
        c.send("x\r\n.\r\n");
        assert_eq!(c.reply().0, 250);
        assert_eq!(c.code("QUIT"), 221);
    }
    assert_eq!(fake.messages().len(), 2);
    assert_eq!(fake.connections(), 2);

    fake.set_script(Script {
        tls: Tls::Implicit,
        cert_names: vec!["wrong.example".into()],
        ..Script::default()
    });
    let err = Client::connect_tls(fake.addr, &pki, "localhost")
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(fake.transcript().len(), 12);
}

#[test]
fn fake_smtp_drop_after_data_bytes() {
    let pki = TestPki::new();
    let script = Script {
        drop_after_data_bytes: Some(10),
        ..Script::default()
    };
    let fake = FakeSmtp::start(script, &pki);
    let mut c = Client::connect(fake.addr);
    c.reply();
    c.cmd("EHLO x");
    c.cmd(&format!("AUTH PLAIN {}", b64("\0u\0p")));
    c.cmd("MAIL FROM:<a@b.test>");
    c.cmd("RCPT TO:<c@d.test>");
    assert_eq!(c.code("DATA"), 354);
    c.send("0123456789012345678901234567890123456789\r\n.\r\n");
    assert!(c.try_reply().is_err());
    assert!(fake.messages().is_empty());
}

#[test]
fn fake_smtp_multiline_replies() {
    let pki = TestPki::new();
    let script = Script {
        replies_multiline: true,
        auth: Auth::Reject(
            "535-5.7.8 Username and Password not accepted.\n535 5.7.8 https://x".into(),
        ),
        ..Script::default()
    };
    let fake = FakeSmtp::start(script, &pki);
    let mut c = Client::connect(fake.addr);
    let (code, g) = c.reply();
    assert_eq!((code, g.len(), g[0].as_str()), (220, 2, "fake.test ESMTP"));
    assert_eq!(c.cmd("EHLO x").1.len(), 6);
    let (code, lines) = c.cmd(&format!("AUTH PLAIN {}", b64("\0u\0p")));
    assert_eq!((code, lines.len()), (535, 2));
    fake.set_script(Script {
        replies_multiline: true,
        ..Script::default()
    });
    assert_eq!(c.code(&format!("AUTH PLAIN {}", b64("\0u\0p"))), 235);
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").1.len(), 2);
    c.cmd("RCPT TO:<c@d.test>");
    assert_eq!(c.code("DATA"), 354);
    c.send(".\r\n");
    let (code, end) = c.reply();
    assert_eq!(code, 250);
    assert_eq!(end[0], "2.0.0 OK queued as 1");
    assert_eq!(end[1], "2.0.0 (end of multi-line reply)");
    assert_eq!(fake.messages()[0].data, b"");
}

#[test]
fn fake_smtp_silent_greeting_and_drop_closes_connections() {
    let pki = TestPki::new();
    let fake = FakeSmtp::start(
        Script {
            greeting: None,
            ..Script::default()
        },
        &pki,
    );
    let mut c = Client::connect(fake.addr);
    if let ClientStream::Plain(s) = &c.stream {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    let err = c.try_reply().unwrap_err();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    drop(fake);
    if let ClientStream::Plain(s) = &c.stream {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let err = c.try_reply().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}
