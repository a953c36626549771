//! A local client's connection, as every listener's session uses it (SMTP,
//! the IMAP and POP3 proxies before login): the stream (plaintext, TLS, or
//! TLS after STARTTLS), the read buffer, the reply buffer, the deadline of
//! the command now arriving, and the shutdown watch.
//!
//! Owns no protocol: a session takes commands out of [`Conn::rbuf`] with
//! its own codec and tells the connection when it took one
//! ([`Conn::unit_taken`]), so the next command's clock starts right.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::Bind;
use crate::io::MaybeTls;
use crate::providers::TlsMode;

/// How much a read asks for at most.
const READ_CHUNK: usize = 16 * 1024;

/// What waiting for more input came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Data,
    Closed,
    /// Silent for `idle_timeout`.
    Timeout,
    /// The deadline (of the pending command, or one given) passed.
    Deadline,
    Shutdown,
}

/// Why a STARTTLS upgrade ended the connection.
#[derive(Debug)]
pub enum UpgradeError {
    Handshake(io::Error),
    Timeout,
}

/// One local client's connection.
pub struct Conn<S> {
    stream: MaybeTls<S>,
    /// Bytes read and not yet taken by the session.
    pub rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// The listening address the client reached, with its TLS mode.
    local: Bind,
    /// `idle_timeout`: the most a client may stay silent, the most one
    /// command may take from its first byte, and the most a write may wait
    /// for a client that does not read.
    idle: Duration,
    /// When the first byte of the command now pending arrived (`None`:
    /// nothing pending). The command must be complete `idle` later: a
    /// deadline, not restarted by each byte, so a client trickling a byte at
    /// a time (slowloris) cannot hold a session.
    pending_since: Option<Instant>,
    /// When the last read returned data.
    last_read: Instant,
    /// The last read or write error, for the log line of a session that
    /// ends on it.
    last_error: Option<String>,
    shutdown: CancellationToken,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(
        stream: MaybeTls<S>,
        local: Bind,
        idle: Duration,
        shutdown: CancellationToken,
    ) -> Conn<S> {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(1024),
            wbuf: Vec::with_capacity(512),
            local,
            idle,
            pending_since: None,
            last_read: Instant::now(),
            last_error: None,
            shutdown,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Plaintext AUTH is fine over loopback; elsewhere only after TLS.
    pub fn auth_allowed(&self) -> bool {
        self.is_tls() || self.local.addr.ip().is_loopback()
    }

    /// The address the client connected to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local.addr
    }

    /// Whether STARTTLS (STLS) is offered now: on a `starttls` address,
    /// before TLS.
    pub fn offers_starttls(&self) -> bool {
        self.local.tls == TlsMode::Starttls && !self.is_tls()
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Read more bytes into `rbuf`, bounded by the idle timeout and by
    /// `deadline`; with `watch_shutdown` a shutdown request ends the wait.
    pub async fn read_more(
        &mut self,
        watch_shutdown: bool,
        deadline: Option<Instant>,
    ) -> io::Result<Read> {
        let idle_end = Instant::now() + self.idle;
        let (until, hard) = match deadline {
            Some(d) if d < idle_end => (d, true),
            _ => (idle_end, false),
        };
        self.rbuf.reserve(READ_CHUNK);
        let r = tokio::select! {
            r = tokio::time::timeout_at(until, self.stream.read_buf(&mut self.rbuf)) => match r {
                Ok(Ok(0)) => Ok(Read::Closed),
                Ok(Ok(_)) => Ok(Read::Data),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(if hard { Read::Deadline } else { Read::Timeout }),
            },
            _ = self.shutdown.cancelled(), if watch_shutdown => Ok(Read::Shutdown),
        };
        match &r {
            Ok(Read::Data) => self.last_read = Instant::now(),
            Err(e) => self.last_error = Some(e.to_string()),
            _ => {}
        }
        r
    }

    /// Why the connection failed last (a read or write error), if it did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Read more of the command now arriving: its deadline runs from its
    /// first byte.
    pub async fn read_command_more(&mut self, watch_shutdown: bool) -> io::Result<Read> {
        let deadline = self.pending_since.map(|t| t + self.idle);
        let r = self.read_more(watch_shutdown, deadline).await;
        if let Ok(Read::Data) = r {
            self.pending_since.get_or_insert(self.last_read);
        }
        r
    }

    /// A command was taken from `rbuf` (or refused). Whatever follows it
    /// arrived with the last read, so a pending command (if any, or if
    /// `still_pending`: the rest of an over-long line is being skipped)
    /// started then.
    pub fn unit_taken(&mut self, still_pending: bool) {
        self.pending_since = (still_pending || !self.rbuf.is_empty()).then_some(self.last_read);
    }

    /// Forget what the client sent so far (after STARTTLS; the session logs it).
    fn discard_input(&mut self) -> usize {
        let n = self.rbuf.len();
        self.rbuf.clear();
        self.pending_since = None;
        n
    }

    /// Queue bytes for the client (written by [`Conn::flush`]).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// The queue, for encoders that write into it.
    pub fn queue_mut(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Drop what is queued and not written.
    pub fn unqueue(&mut self) {
        self.wbuf.clear();
    }

    /// Write what is queued within `idle_timeout`: a client that never
    /// reads its replies cannot hold the session.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.wbuf);
        let written = crate::io::write_all_within(&mut self.stream, &buf, self.idle).await;
        // Keep the buffer's capacity for the next replies.
        buf.clear();
        self.wbuf = buf;
        if let Err(e) = &written {
            self.last_error = Some(e.to_string());
        }
        written
    }

    /// Queue and flush.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.queue(bytes);
        self.flush().await
    }

    /// STARTTLS on a plaintext connection (the session has sent its "go
    /// ahead"). Anything the client pipelined after the command arrived in
    /// plaintext and is thrown away (RFC 3207 6, CVE-2011-0411); the count
    /// comes back for the log. The handshake must finish within
    /// `idle_timeout`.
    pub async fn starttls(
        mut self,
        acceptor: &TlsAcceptor,
    ) -> Result<(Conn<S>, usize), UpgradeError> {
        let dropped = self.discard_input();
        let idle = self.idle;
        let stream = self
            .stream
            .upgrade(|plain| async move {
                match tokio::time::timeout(idle, acceptor.accept(plain)).await {
                    Ok(Ok(tls)) => Ok(tls),
                    Ok(Err(e)) => Err(UpgradeError::Handshake(e)),
                    Err(_) => Err(UpgradeError::Timeout),
                }
            })
            .await?;
        self.stream = stream;
        Ok((self, dropped))
    }

    /// Close the connection (TLS: with close_notify), waiting at most 2 s.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.shutdown()).await;
    }

    /// The stream and what was read but not taken (for the splice).
    pub fn into_parts(self) -> (MaybeTls<S>, BytesMut) {
        (self.stream, self.rbuf)
    }
}
