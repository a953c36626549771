//! The load generator's SMTP and IMAP clients. One type serves the direct
//! path (implicit TLS to the upstream) and the path through Postern
//! (plaintext SMTP / implicit-TLS IMAP to Postern's listeners).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use postern::io::ClientStream;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub type Stream = BufStream<ClientStream<TcpStream>>;

/// How to reach a server: its address, and TLS from the first byte or not.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<Arc<ClientConfig>>,
}

fn err(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// TCP (NODELAY), then the TLS handshake when the endpoint wants it.
pub async fn connect(ep: &Endpoint, rbuf: usize) -> io::Result<Stream> {
    let tcp = TcpStream::connect(ep.addr).await?;
    tcp.set_nodelay(true)?;
    let s = match &ep.tls {
        Some(cfg) => {
            let name = ServerName::try_from("localhost").expect("name");
            let tls = TlsConnector::from(cfg.clone()).connect(name, tcp).await?;
            ClientStream::Tls(Box::new(tls))
        }
        None => ClientStream::Plain(tcp),
    };
    Ok(BufStream::with_capacity(rbuf, 16 * 1024, s))
}

// ---------------------------------------------------------------------------
// SMTP
// ---------------------------------------------------------------------------

pub struct Smtp {
    s: Stream,
    line: Vec<u8>,
}

impl Smtp {
    /// Connect, greeting, EHLO, AUTH PLAIN.
    pub async fn open(ep: &Endpoint, user: &str, pass: &str) -> io::Result<Smtp> {
        let s = connect(ep, 8 * 1024).await?;
        let mut c = Smtp {
            s,
            line: Vec::with_capacity(256),
        };
        c.expect(220, "greeting").await?;
        c.cmd(b"EHLO bench.localhost\r\n", 250, "EHLO").await?;
        let auth = format!(
            "AUTH PLAIN {}\r\n",
            b64(format!("\0{user}\0{pass}").as_bytes())
        );
        c.cmd(auth.as_bytes(), 235, "AUTH").await?;
        Ok(c)
    }

    /// [`Smtp::open`], then a pause and a NOOP before the first mail: a
    /// careful client for email-oauth2-proxy, which left sessions of the
    /// benchmark's fast client without an answer at 16 sessions.
    pub async fn open_settled(ep: &Endpoint, user: &str, pass: &str) -> io::Result<Smtp> {
        let mut c = Smtp::open(ep, user, pass).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokio::time::timeout(Duration::from_secs(10), c.cmd(b"NOOP\r\n", 250, "NOOP"))
            .await
            .map_err(|_| err("no answer to NOOP after AUTH"))??;
        Ok(c)
    }

    async fn reply(&mut self) -> io::Result<(u16, String)> {
        loop {
            self.line.clear();
            if self.s.read_until(b'\n', &mut self.line).await? == 0 {
                return Err(err("SMTP server closed the connection"));
            }
            if self.line.len() < 4 {
                return Err(err("short SMTP reply"));
            }
            let code: u16 = std::str::from_utf8(&self.line[..3])
                .ok()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| err("bad SMTP reply code"))?;
            if self.line[3] != b'-' {
                return Ok((
                    code,
                    String::from_utf8_lossy(&self.line).trim_end().to_owned(),
                ));
            }
        }
    }

    async fn expect(&mut self, code: u16, what: &str) -> io::Result<()> {
        let (c, text) = self.reply().await?;
        if c != code {
            return Err(err(format!("{what}: expected {code}, got: {text}")));
        }
        Ok(())
    }

    async fn cmd(&mut self, line: &[u8], code: u16, what: &str) -> io::Result<()> {
        self.s.write_all(line).await?;
        self.s.flush().await?;
        self.expect(code, what).await
    }

    /// One transaction (no pipelining, like most legacy clients). Returns
    /// the time from the end of DATA (message and terminator flushed) to
    /// the 250.
    pub async fn send(&mut self, from: &str, to: &str, stuffed: &[u8]) -> io::Result<Duration> {
        self.cmd(format!("MAIL FROM:<{from}>\r\n").as_bytes(), 250, "MAIL")
            .await?;
        self.cmd(format!("RCPT TO:<{to}>\r\n").as_bytes(), 250, "RCPT")
            .await?;
        self.cmd(b"DATA\r\n", 354, "DATA").await?;
        // The message and its terminator are buffered, then go out in one
        // flush. The clock starts before that write: on a busy machine the
        // reply can arrive while this task is preempted right after it.
        self.s.write_all(stuffed).await?;
        let t = Instant::now();
        self.s.flush().await?;
        self.expect(250, "end of DATA").await?;
        Ok(t.elapsed())
    }

    pub async fn quit(mut self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.cmd(b"QUIT\r\n", 221, "QUIT")).await;
    }
}

/// A 10 KiB-ish message of `size` bytes (CRLF lines of 78 characters, no
/// line starting with a dot) and its dot-stuffed form with the terminator.
pub fn message(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut m = b"From: Postern bench <postern-bench@example.test>\r\nTo: <sink@example.test>\r\nSubject: postern benchmark message\r\nMessage-ID: <postern-bench@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n".to_vec();
    let pattern = b"The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUV";
    let mut i = 0usize;
    while m.len() + 80 <= size {
        let rot = i % pattern.len();
        m.extend_from_slice(&pattern[rot..]);
        m.extend_from_slice(&pattern[..rot]);
        m.extend_from_slice(b"\r\n");
        i += 1;
    }
    while m.len() + 2 < size {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n");
    let mut stuffed = Vec::new();
    postern::smtp::codec::stuff(&m, &mut stuffed);
    (m, stuffed)
}

// ---------------------------------------------------------------------------
// IMAP
// ---------------------------------------------------------------------------

pub struct Imap {
    s: Stream,
    line: Vec<u8>,
    next: u32,
    scratch: Vec<u8>,
}

/// How the client logs in.
#[derive(Clone)]
pub enum Login {
    /// `LOGIN user password`.
    Password(String, String),
    /// `AUTHENTICATE XOAUTH2` with SASL-IR: (user, bearer token).
    XOAuth2(String, String),
}

/// The tagged completion and what came before it.
pub struct Done {
    pub ok: bool,
    pub text: String,
    pub untagged: Vec<String>,
    pub literal_bytes: u64,
}

impl Imap {
    /// Connect and read the greeting.
    pub async fn connect(ep: &Endpoint) -> io::Result<Imap> {
        let s = connect(ep, 64 * 1024).await?;
        let mut c = Imap {
            s,
            line: Vec::with_capacity(512),
            next: 1,
            scratch: Vec::new(),
        };
        c.read_line().await?;
        if !c.line.starts_with(b"* OK") && !c.line.starts_with(b"* PREAUTH") {
            return Err(err(format!(
                "IMAP greeting: {}",
                String::from_utf8_lossy(&c.line).trim_end()
            )));
        }
        Ok(c)
    }

    async fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        if self.s.read_until(b'\n', &mut self.line).await? == 0 {
            return Err(err("IMAP server closed the connection"));
        }
        Ok(())
    }

    /// Send a command (`TAG ` is prepended) and read to its tagged reply.
    /// Literals in responses are read; with `keep`, appended to it.
    pub async fn command(&mut self, cmd: &str, keep: Option<&mut Vec<u8>>) -> io::Result<Done> {
        let tag = format!("b{}", self.next);
        self.next += 1;
        self.s
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        self.s.flush().await?;
        self.tagged(&tag, keep).await
    }

    /// APPEND with a non-synchronising literal (LITERAL+).
    pub async fn append(&mut self, mailbox: &str, data: &[u8]) -> io::Result<Done> {
        let tag = format!("b{}", self.next);
        self.next += 1;
        let head = format!("{tag} APPEND {mailbox} {{{}+}}\r\n", data.len());
        self.s.write_all(head.as_bytes()).await?;
        self.s.write_all(data).await?;
        self.s.write_all(b"\r\n").await?;
        self.s.flush().await?;
        self.tagged(&tag, None).await
    }

    async fn tagged(&mut self, tag: &str, mut keep: Option<&mut Vec<u8>>) -> io::Result<Done> {
        let mut untagged = Vec::new();
        let mut literal_bytes = 0u64;
        let prefix = format!("{tag} ");
        loop {
            self.read_line().await?;
            if self.line.starts_with(prefix.as_bytes()) {
                let text = String::from_utf8_lossy(&self.line[prefix.len()..])
                    .trim_end()
                    .to_owned();
                return Ok(Done {
                    ok: text.starts_with("OK"),
                    text,
                    untagged,
                    literal_bytes,
                });
            }
            let text = String::from_utf8_lossy(&self.line).trim_end().to_owned();
            if let Some(n) = literal_size(&self.line) {
                self.read_literal(n, keep.as_deref_mut()).await?;
                literal_bytes += n as u64;
            }
            if untagged.len() < 64 {
                untagged.push(text);
            }
        }
    }

    /// Read (and drop, or keep) `n` literal bytes with large reads.
    async fn read_literal(&mut self, n: usize, mut keep: Option<&mut Vec<u8>>) -> io::Result<()> {
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; 256 * 1024];
        }
        let mut left = n;
        while left > 0 {
            let want = left.min(self.scratch.len());
            let got = self.s.read(&mut self.scratch[..want]).await?;
            if got == 0 {
                return Err(err("connection closed inside a literal"));
            }
            if let Some(k) = keep.as_deref_mut() {
                k.extend_from_slice(&self.scratch[..got]);
            }
            left -= got;
        }
        Ok(())
    }

    pub async fn login(&mut self, how: &Login) -> io::Result<Done> {
        let cmd = match how {
            Login::Password(u, p) => format!("LOGIN {} {}", quote(u), quote(p)),
            Login::XOAuth2(u, t) => format!(
                "AUTHENTICATE XOAUTH2 {}",
                b64(format!("user={u}\x01auth=Bearer {t}\x01\x01").as_bytes())
            ),
        };
        self.command(&cmd, None).await
    }

    /// LOGOUT and wait for the server to answer (or close).
    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.command("LOGOUT", None)).await;
    }
}

/// `{n}` or `{n+}` at the end of a response line.
fn literal_size(line: &[u8]) -> Option<usize> {
    let t = line.strip_suffix(b"\r\n").unwrap_or(line);
    let t = t.strip_suffix(b"}")?;
    let open = t.iter().rposition(|&b| b == b'{')?;
    let digits = &t[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Connect and log in; the time from before the TCP connect to the tagged OK.
pub async fn timed_login(ep: &Endpoint, how: &Login) -> io::Result<(Duration, Imap)> {
    let t = Instant::now();
    let mut c = Imap::connect(ep).await?;
    let done = c.login(how).await?;
    let took = t.elapsed();
    if !done.ok {
        return Err(err(format!("login refused: {}", done.text)));
    }
    Ok((took, c))
}
