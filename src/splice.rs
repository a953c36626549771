//! After login, the IMAP and POP3 proxies step aside: bytes are copied both
//! ways unchanged (so COMPRESS, IDLE and anything else the two ends agree
//! on just work), half-closes are passed on, and the pair is closed after
//! `imap_idle_timeout` without traffic in either direction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

/// Splice buffer while data flows in bulk.
const BULK_BUF: usize = 64 * 1024;
/// Read size while a direction is idle or interactive.
const SMALL_BUF: usize = 2 * 1024;

/// Copy bytes both ways until both sides are done or the connection is idle
/// for `idle`. Half-close is passed on; buffers are big only while data flows.
/// The read buffers of the login phase (`a_pending`, `b_pending`: what each
/// side sent ahead) are written on and freed before the copying starts, so
/// an idle session holds none of them.
pub async fn splice<A, B>(a: A, b: B, a_pending: BytesMut, b_pending: BytesMut, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    // Bytes each side sent before the splice began (pipelined commands).
    if !a_pending.is_empty()
        && (bw.write_all(&a_pending).await.is_err() || bw.flush().await.is_err())
    {
        return;
    }
    if !b_pending.is_empty()
        && (aw.write_all(&b_pending).await.is_err() || aw.flush().await.is_err())
    {
        return;
    }
    drop((a_pending, b_pending));
    let up = pump(&mut ar, &mut bw, &touch);
    let down = pump(&mut br, &mut aw, &touch);
    let watchdog = async {
        loop {
            let since = epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if since >= idle {
                return;
            }
            tokio::time::sleep(idle - since).await;
        }
    };
    tokio::pin!(up, down, watchdog);
    let mut up_done = false;
    let mut down_done = false;
    loop {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                if r.is_err() { break; }
            }
            r = &mut down, if !down_done => {
                down_done = true;
                if r.is_err() { break; }
            }
            _ = &mut watchdog => {
                debug!("spliced session idle; closing");
                break;
            }
        }
        if up_done && down_done {
            break;
        }
    }
}

/// One direction: read, write, flush; on EOF shut the writer down.
async fn pump<R, W>(r: &mut R, w: &mut W, touch: &impl Fn()) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; SMALL_BUF];
    let mut big: Option<Vec<u8>> = None;
    loop {
        let n = match big.as_mut() {
            Some(b) => r.read(b).await?,
            None => r.read(&mut small).await?,
        };
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        touch();
        match big.as_ref() {
            Some(b) => w.write_all(&b[..n]).await?,
            None => w.write_all(&small[..n]).await?,
        }
        w.flush().await?;
        // Bulk transfer: switch to a large buffer; back to small once the
        // flow turns interactive, so idle sessions hold no big buffers.
        match big {
            None if n == SMALL_BUF => big = Some(vec![0u8; BULK_BUF]),
            Some(_) if n < SMALL_BUF => big = None,
            _ => {}
        }
    }
}
