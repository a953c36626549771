//! Hostile clients against a running Postern: over-long lines, NUL
//! and invalid UTF-8, garbage and oversized AUTH responses, huge IMAP
//! literals, endless DATA, slowloris, clients that never read, a connection
//! flood, password guessing, TLS mix-ups and STARTTLS command injection.
//!
//! For each: the documented reply or a clean close, the process stays up, a
//! well-behaved client completes its session afterwards (or during, where
//! said), and memory stays bounded: one warm-up round, then a hostile round
//! whose growth of the resident set (VmRSS), and its peak (VmHWM) during the
//! round, must stay under [`RSS_BOUND`] above where the round started.
//! Time enters only as lower bounds (a slowed-down attacker takes *at least*
//! so long) and as generous caps, many times the configured deadlines, that
//! keep a broken server from hanging the test.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hardening::{drip_upstream, Drip};
use crate::harness::*;

/// Allowed growth of Postern's resident set over one hostile round, after a
/// warm-up round of the same clients. Also stated in the README.
const RSS_BOUND_MIB: u64 = 64;
const RSS_BOUND: u64 = RSS_BOUND_MIB * 1024 * 1024;

/// Test limits: short timeouts so slowloris and silent clients are cut in
/// seconds; a 1 MiB message cap so "past the limit" is cheap to reach.
const IDLE: &str = "3s";
const DATA_TIMEOUT: &str = "8s";
const MAX_MESSAGE: usize = 1024 * 1024;

/// Dovecot user for the well-behaved IMAP client (not used by other tests).
const DV_USER: &str = "u27@example.test";
const DV_PW: &str = "pw-u27";

/// The second local user (same password as `app`), for password guessing.
const VICTIM: &str = "victim";

/// A Postern with SMTP (capture) and IMAP (via Dovecot) listeners, plus two
/// IMAP accounts whose upstreams answer LOGIN with an endless drip (users
/// `drip-untagged` and `drip-plus`).
fn config(smtp_tls: &str, imap_tls: &str, limits: &str) -> String {
    let (untagged, _) = drip_upstream(Drip::Untagged);
    let (plus, _) = drip_upstream(Drip::Continuations);
    let drips = format!(
        "[users.drip-untagged]\npassword_hash = \"{APP_HASH}\"\nread_via = \"dripu\"\n\
         [users.drip-plus]\npassword_hash = \"{APP_HASH}\"\nread_via = \"dripc\"\n\
         [accounts.dripu]\nemail = \"dripu@example.test\"\n\
         imap = {{ host = \"127.0.0.1\", port = {untagged}, tls = \"none\" }}\n\
         auth = \"password\"\npassword_env = \"DV_PW\"\n\
         [accounts.dripc]\nemail = \"dripc@example.test\"\n\
         imap = {{ host = \"127.0.0.1\", port = {plus}, tls = \"none\" }}\n\
         auth = \"password\"\npassword_env = \"DV_PW\"\n"
    );
    let main = format!(
        "data_dir = \"var\"\n\
         [smtp]\nlisten = \"127.0.0.1:0\"\ntls = \"{smtp_tls}\"\n\
         [imap]\nlisten = \"127.0.0.1:0\"\ntls = \"{imap_tls}\"\n\
         [users.app]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\nread_via = \"dv\"\n\
         [users.{VICTIM}]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\n\
         [limits]\n{limits}\n\
         [accounts.dv]\nemail = \"{DV_USER}\"\n\
         imap = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\n\
         ca_file = \"{}\"\nauth = \"password\"\npassword_env = \"DV_PW\"\n",
        peer_env("DOVECOT_IMAP_PORT"),
        peer_env("PEERS_CA"),
    );
    main + &drips
}

fn start(smtp_tls: &str, imap_tls: &str, limits: &str) -> Postern {
    Postern::start_with(&config(smtp_tls, imap_tls, limits), 2, &[("DV_PW", DV_PW)])
}

fn round_limits() -> String {
    format!(
        "idle_timeout = \"{IDLE}\"\ndata_timeout = \"{DATA_TIMEOUT}\"\nmax_message_size = {MAX_MESSAGE}\n\
         auth_failure_delay = \"10ms\"\nauth_backoff_max = \"40ms\"\nupstream_timeout = \"5s\"\n"
    )
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn tls_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    // Plaintext-only listeners make no certificate: then nothing is trusted
    // (enough for a ClientHello).
    if cert.exists() {
        for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn tls_wrap(tcp: TcpStream, cfg: &Arc<rustls::ClientConfig>) -> Box<dyn Stream> {
    let conn = rustls::ClientConnection::new(cfg.clone(), "localhost".try_into().unwrap()).unwrap();
    Box::new(rustls::StreamOwned::new(conn, tcp))
}

/// A line client over plain TCP or TLS.
struct Client {
    s: Box<dyn Stream>,
    /// The same socket, for timeouts and addresses.
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let handle = tcp.try_clone().unwrap();
        let s: Box<dyn Stream> = match tls {
            Some(cfg) => tls_wrap(tcp, cfg),
            None => Box::new(tcp),
        };
        Client {
            s,
            tcp: handle,
            buf: Vec::new(),
        }
    }

    fn local(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap()
    }

    /// Upgrade after STARTTLS (nothing may be buffered).
    fn starttls(self, cfg: &Arc<rustls::ClientConfig>) -> Client {
        assert!(
            self.buf.is_empty(),
            "server sent more after the STARTTLS reply"
        );
        let tcp = self.tcp.try_clone().unwrap();
        Client {
            s: tls_wrap(tcp, cfg),
            tcp: self.tcp,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, data: &[u8]) {
        self.s.write_all(data).unwrap();
        self.s.flush().unwrap();
    }

    fn try_send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.s.write_all(data)?;
        self.s.flush()
    }

    /// One line without its line end; `Ok(None)` at EOF.
    fn read_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                ));
            }
            let mut tmp = [0u8; 8192];
            match self.s.read(&mut tmp) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                // TLS without close_notify: the peer closed all the same.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn line(&mut self) -> String {
        match self.read_line() {
            Ok(Some(l)) => l,
            other => panic!("expected a line, got {other:?}"),
        }
    }

    /// A full SMTP reply, lines joined with '\n'.
    fn reply(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let l = self.line();
            let last = l.len() < 4 || l.as_bytes()[3] == b' ';
            out.push(l);
            if last {
                return out.join("\n");
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// IMAP: lines up to and including the one tagged `tag`.
    fn tagged(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line();
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
    }

    fn imap(&mut self, tag: &str, cmd: &str) -> Vec<String> {
        self.send(format!("{tag} {cmd}\r\n").as_bytes());
        self.tagged(tag)
    }

    /// Send raw bytes, then read up to the line tagged `tag`.
    fn imap_raw(&mut self, tag: &str, data: &[u8]) -> Vec<String> {
        self.send(data);
        self.tagged(tag)
    }

    /// Read what is left until the server closes; `None` if it does not
    /// close within the read timeout. Returns the lines read before.
    fn until_closed(&mut self) -> Option<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            match self.read_line() {
                Ok(Some(l)) => lines.push(l),
                Ok(None) => return Some(lines),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                // Reset, broken pipe, TLS alert: closed.
                Err(_) => return Some(lines),
            }
        }
    }

    /// Wait up to `d` for data (a short read timeout doubles as the sleep
    /// of a slow client). True if something arrived or the peer closed.
    fn poll(&mut self, d: Duration) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        self.tcp.set_read_timeout(Some(d)).unwrap();
        let mut tmp = [0u8; 4096];
        let r = self.s.read(&mut tmp);
        self.tcp
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        match r {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }
}

/// Where one round of clients goes.
#[derive(Clone)]
struct Target {
    smtp: SocketAddr,
    imap: SocketAddr,
    /// Client config when the listener is implicit TLS.
    smtp_tls: Option<Arc<rustls::ClientConfig>>,
    imap_tls: Option<Arc<rustls::ClientConfig>>,
    tls: Arc<rustls::ClientConfig>,
    capture: PathBuf,
}

impl Target {
    fn new(p: &Postern, smtp_implicit: bool, imap_implicit: bool) -> Target {
        let tls = tls_config(&p.data_dir().join("tls/localhost.pem"));
        Target {
            smtp: p.smtp(),
            imap: p.addr("imap"),
            smtp_tls: smtp_implicit.then(|| tls.clone()),
            imap_tls: imap_implicit.then(|| tls.clone()),
            tls,
            capture: p.capture_new(),
        }
    }

    fn smtp(&self) -> Client {
        let mut c = Client::connect(self.smtp, self.smtp_tls.as_ref());
        let g = c.reply();
        assert!(g.starts_with("220 "), "{g}");
        c
    }

    fn imap(&self) -> Client {
        let mut c = Client::connect(self.imap, self.imap_tls.as_ref());
        let g = c.line();
        assert!(g.starts_with("* OK [CAPABILITY"), "{g}");
        c
    }

    /// SMTP after EHLO and AUTH PLAIN as `app`.
    fn smtp_authed(&self) -> Client {
        let mut c = self.smtp();
        assert!(c.cmd("EHLO good.example").starts_with("250-"));
        let a = c.cmd(&format!(
            "AUTH PLAIN {}",
            b64(format!("\0app\0{APP_PASSWORD}").as_bytes())
        ));
        assert!(a.starts_with("235 "), "{a}");
        c
    }
}

/// A complete, correct SMTP session: the message is captured.
fn good_smtp(t: &Target, name: &str) {
    let mut c = t.smtp_authed();
    finish_smtp(t, &mut c, name);
}

fn finish_smtp(t: &Target, c: &mut Client, name: &str) {
    let m = marker(name);
    assert!(c.cmd("MAIL FROM:<good@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<rcpt@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.cmd(&format!("Subject: {m}\r\n\r\nwell-behaved client\r\n."));
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
    find_captured(&t.capture, &m);
}

/// A complete, correct IMAP session through to Dovecot.
fn good_imap(t: &Target) {
    let mut c = t.imap();
    finish_imap(&mut c);
}

fn finish_imap(c: &mut Client) {
    let r = c.imap("g1", &format!("LOGIN app {APP_PASSWORD}"));
    assert!(r.last().unwrap().starts_with("g1 OK"), "{r:?}");
    let r = c.imap("g2", "SELECT INBOX");
    assert!(r.last().unwrap().starts_with("g2 OK"), "{r:?}");
    let r = c.imap("g3", "LOGOUT");
    assert!(r.iter().any(|l| l.starts_with("* BYE")), "{r:?}");
    assert!(r.last().unwrap().starts_with("g3 OK"), "{r:?}");
}

// ---------------------------------------------------------------------------
// Process state
// ---------------------------------------------------------------------------

/// A field of /proc/PID/status in bytes (VmRSS, VmHWM).
fn proc_bytes(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// Reset the process's peak RSS (VmHWM) to its current RSS (Linux 4.0+), so
/// that the next VmHWM reading is the peak of what follows.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// Growth of RSS over one round, and the peak during it, both relative to
/// the RSS before the round; asserted under RSS_BOUND.
fn measure(pid: u32, name: &str, round: impl FnOnce()) {
    let before = proc_bytes(pid, "VmRSS");
    reset_peak(pid);
    round();
    std::thread::sleep(Duration::from_millis(500));
    let after = proc_bytes(pid, "VmRSS");
    let peak = proc_bytes(pid, "VmHWM");
    eprintln!(
        "RSS {name}: before {:.1} MiB, after {:.1} MiB (growth {:+.1} MiB), peak during {:.1} MiB (+{:.1} MiB); bound {RSS_BOUND_MIB} MiB",
        mib(before),
        mib(after),
        (after as f64 - before as f64) / (1024.0 * 1024.0),
        mib(peak),
        mib(peak.saturating_sub(before)),
    );
    assert!(
        after.saturating_sub(before) < RSS_BOUND,
        "{name}: RSS grew by {:.1} MiB (bound {RSS_BOUND_MIB} MiB)",
        mib(after - before)
    );
    assert!(
        peak.saturating_sub(before) < RSS_BOUND,
        "{name}: RSS peaked {:.1} MiB above where it started (bound {RSS_BOUND_MIB} MiB)",
        mib(peak - before)
    );
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// A log line containing all of `needles`, waiting up to `timeout`.
fn wait_log_all(p: &Postern, needles: &[&str], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if p.logs()
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The test process needs many descriptors for the flood.
fn raise_own_nofile() -> u64 {
    let n = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        n >= 4200,
        "open-files limit {n}: the flood needs about 4,100"
    );
    n
}

// ---------------------------------------------------------------------------
// Hostile clients (one round runs them all at once)
// ---------------------------------------------------------------------------

const MIB: usize = 1024 * 1024;

/// A 1 MiB line without CRLF: 500 5.5.2, the rest is skipped, the session
/// resynchronises at the line end; never ended, the line deadline closes it.
fn smtp_long_line(t: &Target) {
    let mut c = t.smtp();
    c.send(&vec![b'A'; MIB]);
    let r = c.reply();
    assert!(r.starts_with("500 5.5.2 Line too long"), "{r}");
    c.send(b"\r\n");
    assert!(c.cmd("NOOP").starts_with("250 "));
    c.send(&vec![b'B'; MIB]);
    assert!(c.reply().starts_with("500 5.5.2"));
    // Never finished: cut idle_timeout after its first byte.
    let rest = c.until_closed().expect("server did not close");
    assert!(
        rest.len() == 1 && rest[0].starts_with("421 4.4.2 Command line not completed"),
        "{rest:?}"
    );
}

/// NUL bytes and invalid UTF-8: 500 5.5.2, then normal service.
fn smtp_bad_bytes(t: &Target) {
    let mut c = t.smtp();
    for bad in [
        &b"EHLO a\0b"[..],
        b"\0\0\0\0",
        b"EHLO \xff\xfe\xfd",
        b"MAIL FROM:<\xc3\x28@example.test>",
        b"\xed\xa0\x80NOOP",
    ] {
        let mut line = bad.to_vec();
        line.extend_from_slice(b"\r\n");
        c.send(&line);
        let r = c.reply();
        assert!(r.starts_with("500 5.5.2"), "{bad:?}: {r}");
    }
    assert!(c.cmd("EHLO ok.example").starts_with("250-"));
    assert!(c.cmd("QUIT").starts_with("221"));
}

/// Garbage and oversized responses in AUTH PLAIN/LOGIN continuations.
fn smtp_auth_garbage(t: &Target) {
    let mut c = t.smtp();
    assert!(c.cmd("EHLO a.example").starts_with("250-"));
    // PLAIN: not base64.
    assert_eq!(c.cmd("AUTH PLAIN"), "334 ");
    let r = c.cmd("!!!%%%not*base64***");
    assert!(r.starts_with("501 5.5.2"), "{r}");
    // PLAIN: base64 of garbage.
    assert_eq!(c.cmd("AUTH PLAIN"), "334 ");
    let r = c.cmd(&b64(&[0xffu8; 300]));
    assert!(r.starts_with("501 5.5.2") || r.starts_with("535"), "{r}");
    // PLAIN: a 1 MiB response.
    assert_eq!(c.cmd("AUTH PLAIN"), "334 ");
    c.send(&vec![b'Q'; MIB]);
    c.send(b"\r\n");
    let r = c.reply();
    assert!(r.starts_with("500 5.5.6"), "{r}");
    // LOGIN: garbage user name, then a 1 MiB password.
    assert!(c.cmd("AUTH LOGIN").starts_with("334 VXNlcm5hbWU6"));
    let r = c.cmd("@@@@");
    assert!(r.starts_with("501"), "{r}");
    assert!(c.cmd("AUTH LOGIN").starts_with("334 VXNlcm5hbWU6"));
    assert!(c.cmd(&b64(b"app")).starts_with("334 UGFzc3dvcmQ6"));
    c.send(&vec![b'Q'; MIB]);
    c.send(b"\r\n");
    let r = c.reply();
    assert!(r.starts_with("500 5.5.6"), "{r}");
    // A long but in-limit initial response that is not PLAIN.
    let r = c.cmd(&format!("AUTH PLAIN {}", b64(&[b'x'; 1400])));
    assert!(r.starts_with("5"), "{r}");
    // Then a correct login still works on the same connection.
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(format!("\0app\0{APP_PASSWORD}").as_bytes())
    ));
    assert!(r.starts_with("235 "), "{r}");
    assert!(c.cmd("QUIT").starts_with("221"));
}

fn smtp_in_data(t: &Target) -> Client {
    let mut c = t.smtp_authed();
    assert!(c.cmd("MAIL FROM:<big@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<rcpt@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c
}

/// DATA past max_message_size: the bytes are dropped as they come, the end
/// gets 552 5.3.4 and the session goes on.
fn smtp_data_too_big(t: &Target) {
    let mut c = smtp_in_data(t);
    let line = [&[b'x'; 998][..], b"\r\n"].concat();
    let chunk = line.repeat(64);
    for _ in 0..(8 * MAX_MESSAGE) / chunk.len() {
        c.send(&chunk);
    }
    let r = c.cmd(".");
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(c.cmd("NOOP").starts_with("250 "));
    assert!(c.cmd("QUIT").starts_with("221"));
}

/// DATA that never ends: 128 MiB past the limit and no end. Memory must not
/// grow with it; data_timeout ends it with 421 4.4.2 (or, if the client is
/// still writing then, a reset).
fn smtp_data_endless(t: &Target) -> usize {
    let mut c = smtp_in_data(t);
    let line = [&[b'y'; 998][..], b"\r\n"].concat();
    let chunk = line.repeat(256);
    let mut sent = 0;
    while sent < 128 * MIB {
        if c.try_send(&chunk).is_err() {
            return sent;
        }
        sent += chunk.len();
    }
    // And it still does not end: a line now and then, so that reads never
    // time out and only data_timeout can end it.
    let rest = slowloris(&mut c, b"y\r\n");
    assert!(
        rest.len() == 1 && rest[0].starts_with("421 4.4.2 Message not completed"),
        "{rest:?}"
    );
    sent
}

/// One byte per second, never finishing the line: cut idle_timeout after
/// the first byte (the idle timer alone would never fire).
fn slowloris(c: &mut Client, text: &[u8]) -> Vec<String> {
    for (i, b) in text.iter().cycle().enumerate() {
        assert!(i < 40, "slowloris still connected after 40 s");
        if c.try_send(&[*b]).is_err() {
            break;
        }
        if c.poll(Duration::from_secs(1)) {
            break;
        }
    }
    c.until_closed()
        .expect("server did not close the slow client")
}

fn smtp_slowloris(t: &Target) {
    let mut c = t.smtp();
    let rest = slowloris(&mut c, b"EHLO slow.example.test");
    assert!(
        rest.len() == 1 && rest[0].starts_with("421 4.4.2 Command line not completed"),
        "{rest:?}"
    );
    // Inside an AUTH exchange too.
    let mut c = t.smtp();
    assert!(c.cmd("EHLO slow.example").starts_with("250-"));
    assert_eq!(c.cmd("AUTH PLAIN"), "334 ");
    let rest = slowloris(&mut c, b"AGFwcABzbG93");
    assert!(
        rest.len() == 1 && rest[0].starts_with("421 4.4.2 Command line not completed"),
        "{rest:?}"
    );
}

/// DATA at one byte per second: every read is in time, but the whole DATA
/// phase must finish within data_timeout.
fn smtp_data_slowloris(t: &Target) {
    let mut c = smtp_in_data(t);
    let rest = slowloris(&mut c, b"Subject: slow\r\n");
    assert!(
        rest.len() == 1 && rest[0].starts_with("421 4.4.2 Message not completed"),
        "{rest:?}"
    );
}

/// Write commands without ever reading the replies, until the server stops
/// reading us; the server's writes must time out and the session end.
fn never_reads(p: &Postern, mut c: Client, cmd: &[u8], end: &str) {
    c.tcp
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let chunk = cmd.repeat(4096 / cmd.len());
    let mut sent = 0;
    while sent < 64 * MIB && c.try_send(&chunk).is_ok() {
        sent += chunk.len();
    }
    assert!(
        sent < 64 * MIB,
        "the server kept reading a client that never reads"
    );
    let peer = format!("peer={}", c.local());
    assert!(
        wait_log_all(p, &[&peer, end], Duration::from_secs(20)),
        "session of {peer} did not end with {end}"
    );
    assert!(c.until_closed().is_some(), "not closed");
}

fn smtp_never_reads(p: &Postern, t: &Target) {
    never_reads(
        p,
        t.smtp(),
        b"EHLO never-reads.example\r\n",
        "session ended end=IoError",
    );
}

fn imap_never_reads(p: &Postern, t: &Target) {
    never_reads(
        p,
        t.imap(),
        b"n CAPABILITY\r\n",
        "IMAP session ended end=IoError",
    );
}

/// A raw TLS ClientHello (what a TLS client sends first).
fn client_hello(t: &Target) -> Vec<u8> {
    let mut conn =
        rustls::ClientConnection::new(t.tls.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert_eq!(hello[0], 0x16, "a handshake record");
    hello
}

/// A ClientHello on a plaintext port: plaintext errors (5xx / BAD) or the
/// line deadline, then a close. Plaintext on a TLS port: the handshake fails
/// and the connection closes without a plaintext reply.
fn tls_mixups(t: &Target) {
    for (addr, implicit, smtp) in [
        (t.smtp, t.smtp_tls.is_some(), true),
        (t.imap, t.imap_tls.is_some(), false),
    ] {
        let mut c = Client::connect(addr, None);
        if implicit {
            let cmd: &[u8] = if smtp {
                b"EHLO plain.example\r\n"
            } else {
                b"a LOGIN app x\r\n"
            };
            c.send(cmd);
            let mut got = Vec::new();
            let closed = loop {
                let mut tmp = [0u8; 1024];
                match c.s.read(&mut tmp) {
                    Ok(0) => break true,
                    Ok(n) => got.extend_from_slice(&tmp[..n]),
                    Err(e) => {
                        break !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                    }
                }
            };
            assert!(closed, "plaintext on the TLS port: not closed");
            // Nothing, or a TLS alert record: never a plaintext reply.
            assert!(got.is_empty() || got[0] == 0x15, "{got:?}");
            // A ClientHello trickled a byte a second: the handshake deadline.
            let mut c = Client::connect(addr, None);
            let hello = client_hello(t);
            let mut closed = false;
            for b in hello.iter().take(40) {
                if c.try_send(&[*b]).is_err() || c.poll(Duration::from_secs(1)) {
                    closed = true;
                    break;
                }
            }
            assert!(
                closed && c.until_closed().is_some(),
                "slow handshake not cut"
            );
        } else {
            c.send(&client_hello(t));
            let lines = c
                .until_closed()
                .expect("ClientHello on the plaintext port: not closed");
            let ok = |l: &String| {
                if smtp {
                    l.starts_with("220 ") || l.starts_with("500 ") || l.starts_with("421 ")
                } else {
                    l.starts_with("* OK [CAPABILITY")
                        || l.starts_with("* BAD")
                        || l.starts_with("* BYE")
                        || l.contains(" BAD ")
                }
            };
            assert!(!lines.is_empty() && lines.iter().all(ok), "{lines:?}");
        }
    }
}

/// IMAP: a 1 MiB line without CRLF gets BAD, the session resynchronises;
/// never ended, the frame deadline closes it.
fn imap_long_line(t: &Target) {
    let mut c = t.imap();
    c.send(b"a NOOP ");
    c.send(&vec![b'x'; MIB]);
    let l = c.line();
    assert!(l.starts_with("a BAD line too long"), "{l}");
    c.send(b"\r\n");
    let r = c.imap("b", "NOOP");
    assert!(r.last().unwrap().starts_with("b OK"), "{r:?}");
    c.send(&vec![b'y'; MIB]);
    assert!(c.line().starts_with("* BAD line too long"));
    let rest = c.until_closed().expect("server did not close");
    assert!(
        rest.len() == 1 && rest[0].starts_with("* BYE Command not completed"),
        "{rest:?}"
    );
}

fn imap_bad_bytes(t: &Target) {
    let mut c = t.imap();
    for bad in [
        &b"a\0 NOOP"[..],
        b"b NOOP\0",
        b"\xff\xfe NOOP",
        b"c LOGIN \xff\xfe pw",
        b"d LOGIN \"\xc3\x28\" \"pw\"",
    ] {
        let mut line = bad.to_vec();
        line.extend_from_slice(b"\r\n");
        c.send(&line);
        let l = c.line();
        assert!(l.contains("BAD") || l.contains(" NO "), "{bad:?}: {l}");
    }
    let r = c.imap("e", "NOOP");
    assert!(r.last().unwrap().starts_with("e OK"), "{r:?}");
}

/// Garbage and oversized responses in an AUTHENTICATE PLAIN continuation:
/// each ends the AUTHENTICATE command with a tagged BAD.
fn imap_auth_garbage(t: &Target) {
    let mut c = t.imap();
    c.send(b"a AUTHENTICATE PLAIN\r\n");
    assert!(c.line().starts_with('+'));
    let r = c.imap_raw("a", b"!!!not*base64***\r\n");
    assert!(r.last().unwrap().starts_with("a BAD"), "{r:?}");
    c.send(b"b AUTHENTICATE PLAIN\r\n");
    assert!(c.line().starts_with('+'));
    let mut huge = vec![b'Q'; MIB];
    huge.extend_from_slice(b"\r\n");
    let r = c.imap_raw("b", &huge);
    assert!(
        r.last().unwrap().starts_with("b BAD line too long"),
        "{r:?}"
    );
    let r = c.imap("c", "NOOP");
    assert!(
        r.last().unwrap().starts_with("c OK"),
        "the exchange did not end: {r:?}"
    );
    let r = c.imap("d", &format!("AUTHENTICATE PLAIN {}", b64(&[0xffu8; 3000])));
    let last = r.last().unwrap();
    assert!(
        last.starts_with("d BAD") || last.starts_with("d NO"),
        "{r:?}"
    );
    c.send(b"e AUTHENTICATE PLAIN\r\n");
    assert!(c.line().starts_with('+'));
    let r = c.imap_raw("e", b"*\r\n");
    assert!(r.last().unwrap().starts_with("e BAD"), "{r:?}");
    // A correct exchange on the same connection logs in (through Dovecot).
    c.send(b"f AUTHENTICATE PLAIN\r\n");
    assert!(c.line().starts_with('+'));
    let r = c.imap_raw(
        "f",
        format!("{}\r\n", b64(format!("\0app\0{APP_PASSWORD}").as_bytes())).as_bytes(),
    );
    assert!(r.last().unwrap().starts_with("f OK"), "{r:?}");
    let r = c.imap("g", "LOGOUT");
    assert!(r.last().unwrap().starts_with("g OK"), "{r:?}");
}

/// `{4294967295}` and `{99999999999999999999}`: a synchronising literal is
/// refused with BAD [TOOBIG] and no continuation, and the session goes on;
/// a non-synchronising one cannot be skipped: BAD, BYE, close.
fn imap_literals(t: &Target) {
    let mut c = t.imap();
    for (tag, n) in [("a", "4294967295"), ("b", "99999999999999999999")] {
        let r = c.imap(tag, &format!("LOGIN {{{n}}}"));
        assert!(
            r.len() == 1 && r[0].starts_with(&format!("{tag} BAD [TOOBIG]")),
            "{r:?}"
        );
    }
    let r = c.imap("c", "NOOP");
    assert!(r.last().unwrap().starts_with("c OK"), "{r:?}");
    for n in ["4294967295", "99999999999999999999"] {
        let mut c = t.imap();
        c.send(format!("d LOGIN {{{n}+}}\r\nxxxxxxxxxxxxxxxx").as_bytes());
        let rest = c
            .until_closed()
            .expect("not closed after a huge non-sync literal");
        assert!(
            rest.len() == 2
                && rest[0].starts_with("d BAD [TOOBIG]")
                && rest[1].starts_with("* BYE"),
            "{rest:?}"
        );
    }
}

/// One byte per second: cut idle_timeout after the command's first byte,
/// also inside an AUTHENTICATE exchange.
fn imap_slowloris(t: &Target) {
    let mut c = t.imap();
    let rest = slowloris(&mut c, b"a NOOP slowly slowly slowly");
    assert!(
        rest.len() == 1 && rest[0].starts_with("* BYE Command not completed"),
        "{rest:?}"
    );
    let mut c = t.imap();
    c.send(b"a AUTHENTICATE PLAIN\r\n");
    assert!(c.line().starts_with('+'));
    let rest = slowloris(&mut c, b"AGFwcABzbG93");
    assert!(
        rest.len() == 1 && rest[0].starts_with("* BYE Command not completed"),
        "{rest:?}"
    );
}

/// Users whose upstream never completes LOGIN (endless `* 1 EXISTS`, or
/// endless `+` lines as fast as the socket takes them): `NO [UNAVAILABLE]`
/// within the command's deadline, and the session goes on.
fn imap_drips(t: &Target) {
    for user in ["drip-untagged", "drip-plus"] {
        let mut c = t.imap();
        c.send(format!("a LOGIN {user} {APP_PASSWORD}\r\n").as_bytes());
        let r = c.line();
        assert!(r.starts_with("a NO [UNAVAILABLE]"), "{user}: {r}");
        c.send(b"b NOOP\r\n");
        assert!(c.line().starts_with("b OK"));
    }
}

/// `n` wrong passwords for VICTIM over SMTP, reconnecting when the server
/// closes after max_bad_commands; returns how many were answered 535.
fn wrong_smtp_passwords(t: &Target, n: usize) -> usize {
    let mut c = t.smtp();
    assert!(c.cmd("EHLO guess.example").starts_with("250-"));
    let mut refused = 0;
    while refused < n {
        let r = c.cmd(&format!(
            "AUTH PLAIN {}",
            b64(format!("\0{VICTIM}\0guess-{refused}").as_bytes())
        ));
        if r.starts_with("421 4.7.0") {
            assert!(c.until_closed().is_some());
            c = t.smtp();
            assert!(c.cmd("EHLO guess.example").starts_with("250-"));
            continue;
        }
        assert!(r.starts_with("535 5.7.8"), "{r}");
        refused += 1;
    }
    refused
}

/// The same over IMAP LOGIN.
fn wrong_imap_passwords(t: &Target, n: usize) -> usize {
    let mut c = t.imap();
    let mut refused = 0;
    while refused < n {
        c.send(format!("w LOGIN {VICTIM} guess-{refused}\r\n").as_bytes());
        let l = c.line();
        if l.starts_with("* BYE") {
            assert!(c.until_closed().is_some());
            c = t.imap();
            continue;
        }
        assert!(l.starts_with("w NO [AUTHENTICATIONFAILED]"), "{l}");
        refused += 1;
    }
    refused
}

/// Every hostile client at once, with well-behaved clients during and after.
/// Password guessing is not part of the measured rounds (it has its own
/// test): each failed check costs a fresh argon2 block that glibc may keep in
/// a new malloc arena, which would measure the allocator, not the limits.
fn round(p: &mut Postern, t: &Target, name: &str) {
    let started = Instant::now();
    let sent = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let pr: &Postern = p;
        let mut hs = Vec::new();
        macro_rules! go {
            ($e:expr) => {
                hs.push(s.spawn(|| $e));
            };
        }
        go!(smtp_long_line(t));
        go!(smtp_bad_bytes(t));
        go!(smtp_auth_garbage(t));
        go!(smtp_data_too_big(t));
        go!({
            sent.store(smtp_data_endless(t), Ordering::Relaxed);
        });
        go!(smtp_slowloris(t));
        go!(smtp_data_slowloris(t));
        go!(smtp_never_reads(pr, t));
        go!(imap_long_line(t));
        go!(imap_bad_bytes(t));
        go!(imap_auth_garbage(t));
        go!(imap_literals(t));
        go!(imap_slowloris(t));
        go!(imap_never_reads(pr, t));
        go!(imap_drips(t));
        go!(tls_mixups(t));
        // Well-behaved clients while all that goes on.
        go!({
            std::thread::sleep(Duration::from_millis(500));
            good_smtp(t, "during");
            good_imap(t);
        });
        for h in hs {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
    assert!(
        p.is_running(),
        "postern died in the {name} round:\n{}",
        p.logs()
    );
    // And afterwards.
    good_smtp(t, "after");
    good_imap(t);
    eprintln!(
        "{name} round: {:.1} s; endless DATA client sent {:.0} MiB",
        started.elapsed().as_secs_f64(),
        mib(sent.load(Ordering::Relaxed) as u64)
    );
}

/// One postern, a warm-up round, then the hostile round: RSS growth over the
/// hostile round under RSS_BOUND.
fn rounds(smtp_tls: &str, imap_tls: &str) {
    let mut p = start(smtp_tls, imap_tls, &round_limits());
    let t = Target::new(&p, smtp_tls == "implicit", imap_tls == "implicit");
    good_smtp(&t, "first");
    good_imap(&t);
    let pid = p.pid();
    let rss_start = proc_bytes(pid, "VmRSS");
    round(&mut p, &t, "warm-up");
    std::thread::sleep(Duration::from_millis(500));
    eprintln!(
        "RSS smtp={smtp_tls} imap={imap_tls}: {:.1} MiB at start, {:.1} MiB after the warm-up round",
        mib(rss_start),
        mib(proc_bytes(pid, "VmRSS"))
    );
    let name = format!("hostile round smtp={smtp_tls} imap={imap_tls}");
    measure(pid, &name, || round(&mut p, &t, "hostile"));
    assert!(p.is_running());
}

#[test]
fn hostile_round_plain_smtp_tls_imap() {
    rounds("none", "implicit");
}

#[test]
fn hostile_round_tls_smtp_plain_imap() {
    rounds("implicit", "none");
}

/// 2,000 connections at once against max_connections = 500: a client
/// connected before the flood finishes its session during it; the extra
/// connections get 421 4.7.0 / * BYE [UNAVAILABLE]; once the flood closes,
/// new clients are served at once (long before any idle timeout could free
/// a slot). Warm-up flood, then the measured one.
#[test]
fn flood_of_2000_connections_against_max_500() {
    raise_own_nofile();
    let limits = "max_connections = 500\nidle_timeout = \"60s\"\nauth_failure_delay = \"10ms\"\nauth_backoff_max = \"40ms\"\n";
    let mut p = start("none", "none", limits);
    let t = Target::new(&p, false, false);
    let pid = p.pid();
    flood(&t, "warm-up");
    std::thread::sleep(Duration::from_millis(500));
    measure(pid, "hostile flood", || flood(&t, "hostile"));
    assert!(p.is_running());
    assert!(p.logs().contains("too many connections; refusing"));
}

fn flood(t: &Target, name: &str) {
    const FLOOD: usize = 2000;
    const MAX: usize = 500;
    // Connected before the flood: SMTP logged in, IMAP greeted.
    let mut early_smtp = t.smtp_authed();
    let mut early_imap = t.imap();
    let started = Instant::now();
    let results: Vec<(TcpStream, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|k| {
                s.spawn(move || {
                    let addr = if k % 2 == 0 { t.smtp } else { t.imap };
                    let conns: Vec<TcpStream> = (0..FLOOD / 4)
                        .map(|_| {
                            let c = TcpStream::connect(addr).unwrap();
                            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                            c
                        })
                        .collect();
                    conns
                        .into_iter()
                        .map(|mut c| {
                            let mut first = Vec::new();
                            let mut b = [0u8; 1];
                            while !first.ends_with(b"\n") {
                                match c.read(&mut b) {
                                    Ok(1) => first.push(b[0]),
                                    Ok(_) => break,
                                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                                    Err(e) => panic!("flood connection got no answer: {e}"),
                                }
                            }
                            (c, String::from_utf8_lossy(&first).into_owned())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let accepted = results
        .iter()
        .filter(|(_, l)| l.starts_with("220 ") || l.starts_with("* OK"))
        .count();
    let refused = results
        .iter()
        .filter(|(_, l)| {
            l.starts_with("421 4.7.0 Too many connections")
                || l.starts_with("* BYE [UNAVAILABLE] Too many connections")
        })
        .count();
    let closed = results.iter().filter(|(_, l)| l.is_empty()).count();
    eprintln!(
        "{name} flood: {accepted} served, {refused} refused, {closed} closed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(accepted + refused + closed, FLOOD, "unexpected first lines");
    // Two slots are held by the early clients; the flood holds the rest.
    assert_eq!(accepted, MAX - 2);
    // A newcomer is refused while the flood holds every slot.
    let mut c = Client::connect(t.smtp, None);
    let r = c.line();
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(c.until_closed().is_some());
    let mut c = Client::connect(t.imap, None);
    let r = c.line();
    assert!(r.starts_with("* BYE [UNAVAILABLE]"), "{r}");
    // The early clients finish their sessions during the flood.
    finish_smtp(t, &mut early_smtp, "early");
    finish_imap(&mut early_imap);
    // The flood goes away; new clients are served at once. Slots are freed
    // when the flood's sessions see the close, not by the 60 s idle timeout.
    drop(results);
    let closed_at = Instant::now();
    let mut refusals = 0;
    loop {
        let mut c = Client::connect(t.smtp, None);
        let g = c.reply();
        if g.starts_with("220 ") {
            break;
        }
        assert!(g.starts_with("421 4.7.0"), "{g}");
        refusals += 1;
        assert!(
            closed_at.elapsed() < Duration::from_secs(15),
            "slots not freed after the flood closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{name} flood: served again after {refusals} refusals");
    good_smtp(t, "after-flood");
    good_imap(t);
}

/// On an implicit-TLS listener a refused connection is closed: no plaintext
/// `421`/`* BYE` where the client expects a TLS record.
#[test]
fn refusal_on_a_tls_port_is_a_close() {
    let p = start(
        "implicit",
        "implicit",
        "max_connections = 1\nidle_timeout = \"10s\"\n",
    );
    let t = Target::new(&p, true, true);
    let held = t.smtp();
    for addr in [t.smtp, t.imap] {
        let mut c = Client::connect(addr, None);
        let mut buf = Vec::new();
        let r = c.tcp.read_to_end(&mut buf);
        assert!(r.is_ok() || r.unwrap_err().kind() == ErrorKind::ConnectionReset);
        assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    }
    drop(held);
}

/// The data dir Postern creates is private (captured mail, TLS key, token
/// store live there); the generated TLS key is readable by its owner only.
#[test]
fn data_dir_and_tls_key_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let p = start("implicit", "none", "");
    let mode = |path: PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(p.data_dir()), 0o700);
    assert_eq!(mode(p.data_dir().join("tls/localhost-key.pem")), 0o600);
}

/// 100 wrong passwords in a row for one user: each failure is answered
/// after a delay that doubles up to auth_backoff_max for that user, so the
/// guesses take at least the sum of the delays; meanwhile another user logs
/// in without any delay, and the owner's right password still works.
#[test]
fn hundred_wrong_passwords_slow_down_that_user_only() {
    let limits = "auth_failure_delay = \"10ms\"\nauth_backoff_max = \"40ms\"\n";
    let p = start("none", "none", limits);
    let t = Target::new(&p, false, false);
    let pid = p.pid();
    let rss_before = proc_bytes(pid, "VmRSS");
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (elapsed, during) = std::thread::scope(|s| {
        let attacker = s.spawn(|| {
            let n = wrong_smtp_passwords(&t, 60) + wrong_imap_passwords(&t, 40);
            assert_eq!(n, 100);
            let e = started.elapsed();
            done.store(true, Ordering::SeqCst);
            e
        });
        let mut during = 0;
        while !done.load(Ordering::SeqCst) {
            let mut c = t.smtp_authed();
            assert!(c.cmd("QUIT").starts_with("221"));
            let mut c = t.imap();
            finish_imap(&mut c);
            if !done.load(Ordering::SeqCst) {
                during += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (attacker.join().unwrap(), during)
    });
    eprintln!(
        "100 wrong passwords took {:.1} s; the other user logged in {during} times meanwhile",
        elapsed.as_secs_f64()
    );
    // argon2 runs in two reused work areas (~19 MiB each), so 100 failed
    // checks cost at most those two areas, whatever the allocator does.
    let rss_after = proc_bytes(pid, "VmRSS");
    eprintln!(
        "RSS around 100 wrong passwords: {:.1} MiB before, {:.1} MiB after",
        mib(rss_before),
        mib(rss_after)
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 64 << 20,
        "RSS grew by {:.1} MiB over 100 wrong passwords (bound: 64 MiB)",
        mib(rss_after.saturating_sub(rss_before))
    );
    assert!(
        during >= 1,
        "the other user never logged in during the attack"
    );
    // 10 + 20 + 98 x 40 ms of delays, at least.
    assert!(elapsed >= Duration::from_millis(3950), "{elapsed:?}");
    let logs = p.logs();
    let failed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("local login failed"))
        .collect();
    assert_eq!(
        failed
            .iter()
            .filter(|l| l.contains(&format!("user={VICTIM} ")))
            .count(),
        100,
        "{failed:#?}"
    );
    assert!(
        failed.iter().all(|l| !l.contains("user=app ")),
        "{failed:#?}"
    );
    assert!(
        failed.last().unwrap().contains("delay_ms=40"),
        "{failed:#?}"
    );
    // Per user: app's first failure gets the base delay, not victim's.
    let mut c = t.smtp();
    assert!(c.cmd("EHLO x.example").starts_with("250-"));
    let r = c.cmd(&format!("AUTH PLAIN {}", b64(b"\0app\0wrong")));
    assert!(r.starts_with("535 5.7.8"), "{r}");
    assert!(wait_log_all(
        &p,
        &["local login failed", "user=app ", "delay_ms=10"],
        Duration::from_secs(5)
    ));
    // The owner's right password still works.
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(format!("\0{VICTIM}\0{APP_PASSWORD}").as_bytes())
    ));
    assert!(r.starts_with("235 "), "{r}");
}

/// STARTTLS with commands pipelined behind it in the same packet (the
/// CVE-2011-0411 class): the plaintext tail is thrown away, never answered
/// inside TLS. Real sockets, a real TLS client (rustls).
#[test]
fn starttls_pipelined_commands_are_not_honoured() {
    let p = start("starttls", "starttls", "auth_failure_delay = \"10ms\"\n");
    let t = Target::new(&p, false, false);
    // SMTP
    let mut c = t.smtp();
    let e = c.cmd("EHLO before.example");
    assert!(e.contains("STARTTLS"), "{e}");
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.test>\r\nQUIT\r\n");
    let r = c.reply();
    assert!(r.starts_with("220 2.0.0"), "{r}");
    let mut c = c.starttls(&t.tls);
    let e = c.cmd("EHLO after.example");
    assert!(
        e.starts_with("250-") && e.contains(" Hello"),
        "an injected command was answered: {e}"
    );
    assert!(
        e.contains("AUTH PLAIN LOGIN") && !e.contains("STARTTLS"),
        "{e}"
    );
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK");
    let a = c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(format!("\0app\0{APP_PASSWORD}").as_bytes())
    ));
    assert!(a.starts_with("235 "), "{a}");
    // MAIL is accepted: no injected transaction is open.
    finish_smtp(&t, &mut c, "after-starttls");
    // IMAP
    let mut c = t.imap();
    c.send(b"a STARTTLS\r\nb LOGOUT\r\nc LOGIN app test-pass\r\n");
    let l = c.line();
    assert!(l.starts_with("a OK"), "{l}");
    let mut c = c.starttls(&t.tls);
    let r = c.imap("d", "CAPABILITY");
    assert!(
        r.len() == 2 && r[0].starts_with("* CAPABILITY") && r[0].contains("AUTH=PLAIN"),
        "an injected command was answered: {r:?}"
    );
    assert!(!r[0].contains("STARTTLS"), "{r:?}");
    finish_imap(&mut c);
    assert!(wait_log_all(
        &p,
        &[
            "discarding plaintext pipelined after STARTTLS",
            "proto=\"smtp\""
        ],
        Duration::from_secs(5)
    ));
    assert!(wait_log_all(
        &p,
        &[
            "discarding plaintext pipelined after STARTTLS",
            "proto=\"imap\""
        ],
        Duration::from_secs(5)
    ));
}

/// The `[limits]` of DESIGN.md are all configurable, with sane defaults, and
/// nonsense values are refused at load time.
#[test]
fn limits_are_configurable_with_sane_defaults() {
    use postern::config::{Config, Limits};
    let d = Limits::default();
    assert_eq!(d.max_connections, 500);
    assert_eq!(d.idle_timeout, Duration::from_secs(300));
    assert!(d.imap_idle_timeout >= Duration::from_secs(31 * 60));
    assert_eq!(d.data_timeout, Duration::from_secs(600));
    assert_eq!(d.max_message_size, 25 * 1024 * 1024);
    assert_eq!(d.max_recipients, 100);
    assert_eq!(d.max_bad_commands, 20);
    assert_eq!(d.auth_failure_delay, Duration::from_secs(1));
    assert_eq!(d.auth_backoff_max, Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let base = "[smtp]\nlisten = \"127.0.0.1:0\"\n[limits]\n";
    let all = "max_connections = 7\nidle_timeout = \"42s\"\nimap_idle_timeout = \"40m\"\ndata_timeout = \"3m\"\nmax_message_size = 2048\nmax_recipients = 3\nmax_bad_commands = 4\nauth_failure_delay = \"5ms\"\nauth_backoff_max = \"6s\"\n";
    let l = Config::from_str(&format!("{base}{all}"), &file)
        .unwrap()
        .limits;
    assert_eq!(
        (
            l.max_connections,
            l.idle_timeout,
            l.imap_idle_timeout,
            l.data_timeout
        ),
        (
            7,
            Duration::from_secs(42),
            Duration::from_secs(2400),
            Duration::from_secs(180)
        )
    );
    assert_eq!(
        (l.max_message_size, l.max_recipients, l.max_bad_commands),
        (2048, 3, 4)
    );
    assert_eq!(
        (l.auth_failure_delay, l.auth_backoff_max),
        (Duration::from_millis(5), Duration::from_secs(6))
    );
    for (bad, key) in [
        ("max_connections = 0", "max_connections"),
        ("idle_timeout = \"0s\"", "idle_timeout"),
        ("imap_idle_timeout = \"29m\"", "imap_idle_timeout"),
        ("data_timeout = \"0s\"", "data_timeout"),
        ("max_message_size = 100", "max_message_size"),
        ("max_recipients = 0", "max_recipients"),
        ("idle_timeout = \"soon\"", "idle_timeout"),
        ("max_sessions = 3", "max_sessions"),
    ] {
        let e = Config::from_str(&format!("{base}{bad}\n"), &file)
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"))
            .to_string();
        assert!(e.contains(key), "{bad}: {e}");
    }
}

/// Postern raises its soft open-files limit to the hard limit at start and
/// logs the value: started from a shell with `ulimit -Sn 1024`.
#[test]
fn raises_its_open_files_limit_and_logs_it() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 1024 && exec \"$0\" --config \"$1\" run")
        .arg(BIN)
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("open-files limit") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("no open-files limit line in the log");
    let logged: u64 = line
        .split("nofile=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let v: Vec<&str> = row.split_whitespace().collect();
    let (soft, hard): (u64, u64) = (v[3].parse().unwrap(), v[4].parse().unwrap());
    assert!(soft > 1024, "soft limit still {soft}");
    assert_eq!(soft, logged, "{line}\n{row}");
    assert_eq!(soft, hard, "{row}");
}
