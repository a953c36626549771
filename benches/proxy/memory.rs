//! The stress-case upstream: an SMTP sink and an IMAP server that serve from
//! memory over implicit TLS, in this process (on their own tokio runtime,
//! so their CPU time is counted apart from the load generator's).
//!
//! Minimal but correct for what Postern and the load generator send:
//! SMTP EHLO/HELO, AUTH PLAIN/LOGIN/XOAUTH2 (any credential), MAIL, RCPT,
//! DATA (dot-unstuffed with Postern's own decoder, end found exactly),
//! RSET, NOOP, QUIT; IMAP greeting with capabilities, CAPABILITY, LOGIN,
//! AUTHENTICATE (SASL-IR or continuation), ID, ENABLE, SELECT/EXAMINE (one
//! message), SEARCH, FETCH of the 1 MiB message as a literal, NOOP, IDLE,
//! LOGOUT.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use postern::smtp::codec::{DataDecoder, DataProgress};
use rustls::ServerConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

pub struct Memory {
    pub smtp: SocketAddr,
    pub imap: SocketAddr,
    /// Messages accepted by the sink.
    pub received: Arc<AtomicU64>,
}

/// Bind both servers on 127.0.0.1 and serve on the current runtime.
pub async fn start(tls: Arc<ServerConfig>, message: Arc<Vec<u8>>) -> anyhow::Result<Memory> {
    let acceptor = TlsAcceptor::from(tls);
    let smtp_l = TcpListener::bind("127.0.0.1:0").await?;
    let imap_l = TcpListener::bind("127.0.0.1:0").await?;
    let received = Arc::new(AtomicU64::new(0));
    let m = Memory {
        smtp: smtp_l.local_addr()?,
        imap: imap_l.local_addr()?,
        received: received.clone(),
    };
    let a = acceptor.clone();
    tokio::spawn(accept_loop(smtp_l, a, move |s| {
        let received = received.clone();
        async move { smtp(s, received).await }
    }));
    tokio::spawn(accept_loop(imap_l, acceptor, move |s| {
        let message = message.clone();
        async move { imap(s, message).await }
    }));
    Ok(m)
}

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

async fn accept_loop<F, Fut>(l: TcpListener, acceptor: TlsAcceptor, serve: F)
where
    F: Fn(BufStream<Tls>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let serve = Arc::new(serve);
    loop {
        let Ok((tcp, _)) = l.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let serve = serve.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                // Small buffers: the idle test holds thousands of these;
                // big writes (the FETCH literal) bypass the write buffer.
                let _ = serve(BufStream::with_capacity(4096, 4096, tls)).await;
            }
        });
    }
}

async fn line<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufStream<S>,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    buf.clear();
    let n = s.read_until(b'\n', buf).await?;
    Ok(n > 0)
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufStream<S>,
    data: &[u8],
) -> std::io::Result<()> {
    s.write_all(data).await?;
    s.flush().await
}

async fn smtp<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: BufStream<S>,
    received: Arc<AtomicU64>,
) -> std::io::Result<()> {
    send(&mut s, b"220 localhost bench sink ESMTP\r\n").await?;
    let mut buf = Vec::with_capacity(512);
    let mut out = Vec::new();
    loop {
        if !line(&mut s, &mut buf).await? {
            return Ok(());
        }
        let verb: String = buf
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .map(|b| b.to_ascii_uppercase() as char)
            .collect();
        let arg = String::from_utf8_lossy(&buf).trim_end().to_owned();
        match verb.as_str() {
            "EHLO" => {
                send(
                    &mut s,
                    b"250-localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 104857600\r\n250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN XOAUTH2\r\n",
                )
                .await?
            }
            "HELO" => send(&mut s, b"250 localhost\r\n").await?,
            "AUTH" => {
                let parts: Vec<&str> = arg.split_whitespace().collect();
                let mech = parts.get(1).map(|m| m.to_ascii_uppercase()).unwrap_or_default();
                if mech == "LOGIN" {
                    if parts.len() < 3 {
                        send(&mut s, b"334 VXNlcm5hbWU6\r\n").await?;
                        line(&mut s, &mut buf).await?;
                    }
                    send(&mut s, b"334 UGFzc3dvcmQ6\r\n").await?;
                    line(&mut s, &mut buf).await?;
                } else if parts.len() < 3 {
                    send(&mut s, b"334 \r\n").await?;
                    line(&mut s, &mut buf).await?;
                }
                send(&mut s, b"235 2.7.0 Authentication successful\r\n").await?
            }
            "MAIL" => send(&mut s, b"250 2.1.0 Ok\r\n").await?,
            "RCPT" => send(&mut s, b"250 2.1.5 Ok\r\n").await?,
            "DATA" => {
                send(&mut s, b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut d = DataDecoder::new(200 << 20);
                loop {
                    let chunk = s.fill_buf().await?;
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    out.clear();
                    match d.feed(chunk, &mut out) {
                        DataProgress::More => {
                            let n = chunk.len();
                            s.consume(n);
                        }
                        DataProgress::End { consumed } => {
                            s.consume(consumed);
                            break;
                        }
                    }
                }
                received.fetch_add(1, Ordering::Relaxed);
                send(&mut s, b"250 2.0.0 Ok: queued in memory\r\n").await?
            }
            "RSET" | "NOOP" => send(&mut s, b"250 2.0.0 Ok\r\n").await?,
            "QUIT" => {
                send(&mut s, b"221 2.0.0 Bye\r\n").await?;
                let _ = s.shutdown().await;
                return Ok(());
            }
            _ => send(&mut s, b"502 5.5.2 Command not recognised\r\n").await?,
        }
    }
}

const CAPS: &str = "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE UIDPLUS AUTH=PLAIN AUTH=XOAUTH2";

/// One IMAP command with its literals inlined: (tag, NAME, rest of line).
async fn imap_command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufStream<S>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, String, String)>> {
    let mut full = Vec::new();
    loop {
        if !line(s, buf).await? {
            return Ok(None);
        }
        full.extend_from_slice(buf);
        // A literal at the end of the line: `{n}` (send `+`) or `{n+}`.
        let trimmed = buf.strip_suffix(b"\r\n").unwrap_or(buf);
        let lit = trimmed
            .strip_suffix(b"}")
            .and_then(|t| t.iter().rposition(|&b| b == b'{').map(|i| &t[i + 1..]));
        let Some(lit) = lit else { break };
        let (digits, sync) = match lit.strip_suffix(b"+") {
            Some(d) => (d, false),
            None => (lit, true),
        };
        let Some(n) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<usize>().ok())
        else {
            break;
        };
        if sync {
            send(s, b"+ Ready\r\n").await?;
        }
        let mut data = vec![0u8; n];
        s.read_exact(&mut data).await?;
        full.extend_from_slice(&data);
    }
    let text = String::from_utf8_lossy(&full).trim_end().to_owned();
    let mut it = text.splitn(3, ' ');
    let tag = it.next().unwrap_or("*").to_owned();
    let name = it.next().unwrap_or("").to_ascii_uppercase();
    let rest = it.next().unwrap_or("").to_owned();
    Ok(Some((tag, name, rest)))
}

async fn imap<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: BufStream<S>,
    message: Arc<Vec<u8>>,
) -> std::io::Result<()> {
    send(
        &mut s,
        format!("* OK [CAPABILITY {CAPS}] bench IMAP ready\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::with_capacity(256);
    loop {
        let Some((tag, mut name, mut rest)) = imap_command(&mut s, &mut buf).await? else {
            return Ok(());
        };
        if name == "UID" {
            let mut it = rest.splitn(2, ' ');
            name = it.next().unwrap_or("").to_ascii_uppercase();
            rest = it.next().unwrap_or("").to_owned();
        }
        let reply = match name.as_str() {
            "CAPABILITY" => format!("* CAPABILITY {CAPS}\r\n{tag} OK CAPABILITY completed\r\n"),
            "LOGIN" => format!("{tag} OK [CAPABILITY {CAPS}] Logged in\r\n"),
            "AUTHENTICATE" => {
                if rest.split_whitespace().count() < 2 {
                    send(&mut s, b"+ \r\n").await?;
                    line(&mut s, &mut buf).await?;
                }
                format!("{tag} OK [CAPABILITY {CAPS}] Logged in\r\n")
            }
            "ID" => format!("* ID NIL\r\n{tag} OK ID completed\r\n"),
            "ENABLE" | "NOOP" | "CHECK" | "CLOSE" | "UNSELECT" => format!("{tag} OK {name} completed\r\n"),
            "SELECT" | "EXAMINE" => format!(
                "* FLAGS (\\Seen)\r\n* 1 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n* OK [UIDNEXT 2] next\r\n{tag} OK [READ-WRITE] {name} completed\r\n"
            ),
            "SEARCH" => format!("* SEARCH 1\r\n{tag} OK SEARCH completed\r\n"),
            "FETCH" => {
                let head = format!("* 1 FETCH (UID 1 BODY[] {{{}}}\r\n", message.len());
                s.write_all(head.as_bytes()).await?;
                s.write_all(&message).await?;
                format!(")\r\n{tag} OK FETCH completed\r\n")
            }
            "IDLE" => {
                send(&mut s, b"+ idling\r\n").await?;
                if !line(&mut s, &mut buf).await? {
                    return Ok(());
                }
                format!("{tag} OK IDLE terminated\r\n")
            }
            "LOGOUT" => {
                send(&mut s, format!("* BYE bench logging out\r\n{tag} OK LOGOUT completed\r\n").as_bytes())
                    .await?;
                let _ = s.shutdown().await;
                return Ok(());
            }
            _ => format!("{tag} BAD unknown command\r\n"),
        };
        send(&mut s, reply.as_bytes()).await?;
    }
}
