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

mod pki;
mod selftest;
mod session;

pub use pki::TestPki;
use session::{Session, Stream};

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
    /// Wait this long after the whole message arrived (it is recorded
    /// first) before the final reply.
    pub end_reply_delay: Option<Duration>,
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
            end_reply_delay: None,
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

pub(super) struct Shared {
    pub(super) script: Mutex<Script>,
    pub(super) pki: TestPki,
    pub(super) configs: Mutex<HashMap<Vec<String>, Arc<ServerConfig>>>,
    pub(super) stop: AtomicBool,
    pub(super) connections: AtomicUsize,
    /// Connections open now.
    pub(super) open: AtomicUsize,
    /// Most connections open at once so far.
    pub(super) peak_open: AtomicUsize,
    /// Connections logged in now.
    pub(super) authed: AtomicUsize,
    pub(super) auth_attempts: AtomicUsize,
    pub(super) transcript: Mutex<Vec<String>>,
    pub(super) messages: Mutex<Vec<Received>>,
    pub(super) auths: Mutex<Vec<AuthRecord>>,
    pub(super) live: Mutex<Vec<TcpStream>>,
}

impl Shared {
    pub(super) fn script(&self) -> Script {
        lock(&self.script).clone()
    }

    pub(super) fn log(&self, conn: usize, line: &str) {
        lock(&self.transcript).push(format!("c{conn} {line}"));
    }

    pub(super) fn server_config(&self, names: &[String]) -> Result<Arc<ServerConfig>, String> {
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
        Self::start_on(0, script, pki)
    }

    /// The same on a given port of 127.0.0.1 (an upstream that comes back
    /// where it was).
    pub fn start_on(port: u16, script: Script, pki: &TestPki) -> FakeSmtp {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
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

pub(super) fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
