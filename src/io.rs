//! A stream that is plaintext or TLS, so one session type serves plain
//! listeners, implicit TLS and STARTTLS upgrades alike.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `T` is the TLS stream type: server side by default, or
/// `tokio_rustls::client::TlsStream<S>` for upstream connections.
pub enum MaybeTls<S, T = tokio_rustls::server::TlsStream<S>> {
    Plain(S),
    Tls(Box<T>),
}

/// An upstream (client-side) connection.
pub type ClientStream<S> = MaybeTls<S, tokio_rustls::client::TlsStream<S>>;

impl<S, T> MaybeTls<S, T> {
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// STARTTLS: the handshake `tls` over the plaintext stream, by value, so
    /// no one can use the stream half-way. A stream that is TLS already is
    /// returned as it is (callers refuse a second STARTTLS before this).
    pub async fn upgrade<F, Fut, E>(self, tls: F) -> Result<Self, E>
    where
        F: FnOnce(S) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        match self {
            MaybeTls::Plain(s) => Ok(MaybeTls::Tls(Box::new(tls(s).await?))),
            done @ MaybeTls::Tls(_) => Ok(done),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, T: AsyncRead + AsyncWrite + Unpin> AsyncRead
    for MaybeTls<S, T>
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, T: AsyncRead + AsyncWrite + Unpin> AsyncWrite
    for MaybeTls<S, T>
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Writes and flushes within `limit` (`ErrorKind::TimedOut` past it): a
/// peer that never reads cannot hold a session forever.
pub async fn write_all_within<S: AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
    limit: Duration,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    match tokio::time::timeout(limit, async {
        stream.write_all(data).await?;
        stream.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer does not read",
        )),
    }
}

/// Reads ahead while data streams in bulk. A TLS layer above asks for 4 KiB
/// at a time (rustls), so a 16 KiB record costs four or five `recv` calls;
/// through this, once a read comes back full, one `recv` of up to
/// [`READ_AHEAD`] bytes serves many of those asks. The buffer exists only
/// from a read that fills the ask to the brim until the socket runs dry or a
/// fill comes back small: an idle or interactive connection holds none (idle
/// proxied sessions must stay small).
pub struct ReadAhead<S> {
    inner: S,
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
    /// The last fill was large: keep the buffer once it is drained.
    keep: bool,
}

/// Size of a read-ahead fill.
pub const READ_AHEAD: usize = 64 * 1024;

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            buf: None,
            pos: 0,
            end: 0,
            keep: false,
        }
    }

    /// Whether a read-ahead buffer is held now.
    pub fn buffering(&self) -> bool {
        self.buf.is_some()
    }

    /// Hands out buffered bytes; drops the buffer once drained after a small fill.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        if let Some(buf) = &self.buf {
            let n = out.remaining().min(self.end - self.pos);
            out.put_slice(&buf[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.end && !self.keep {
                self.buf = None;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.pos < this.end {
            this.serve(out);
            return Poll::Ready(Ok(()));
        }
        match this.buf.as_mut() {
            Some(buf) => {
                let mut fill = ReadBuf::new(buf);
                match Pin::new(&mut this.inner).poll_read(cx, &mut fill) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Pending => {
                        // Drained and the socket is dry: the burst paused,
                        // so hold no buffer while waiting.
                        this.buf = None;
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                }
                let n = fill.filled().len();
                (this.pos, this.end) = (0, n);
                // A fill a quarter full: the burst is over.
                this.keep = n >= READ_AHEAD / 4;
                if n == 0 {
                    this.buf = None;
                }
                this.serve(out);
                Poll::Ready(Ok(()))
            }
            None => {
                let want = out.remaining();
                let before = out.filled().len();
                match Pin::new(&mut this.inner).poll_read(cx, out) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
                // The ask was filled to the brim: more is likely waiting.
                if out.filled().len() - before == want && want < READ_AHEAD {
                    this.buf = Some(vec![0; READ_AHEAD].into_boxed_slice());
                    this.keep = true;
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn read_ahead_passes_every_byte_and_holds_no_buffer_when_dry() {
        let (mut w, r) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w
        });
        let mut ra = ReadAhead::new(r);
        let mut got = Vec::new();
        let mut ask = [0u8; 4096];
        let mut buffered_at_some_point = false;
        while got.len() < data.len() {
            let n = ra.read(&mut ask).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&ask[..n]);
            buffered_at_some_point |= ra.buffering();
        }
        assert!(got == data, "bytes differ");
        assert!(buffered_at_some_point, "a bulk stream is read ahead");
        // Nothing more is coming: the next read waits, and meanwhile no
        // buffer is held.
        let waited = tokio::time::timeout(Duration::from_millis(50), ra.read(&mut ask)).await;
        assert!(waited.is_err());
        assert!(!ra.buffering(), "an idle stream holds no read-ahead buffer");
        // Small interactive reads never allocate one.
        let mut w = writer.await.unwrap();
        for line in [&b"a1 NOOP\r\n"[..], b"a2 NOOP\r\n"] {
            w.write_all(line).await.unwrap();
            let n = ra.read(&mut ask).await.unwrap();
            assert_eq!(&ask[..n], line);
            assert!(!ra.buffering());
        }
        drop(w);
        assert_eq!(ra.read(&mut ask).await.unwrap(), 0, "EOF passes through");
    }
}
