//! Listeners, connection limits and graceful shutdown. Binds the configured
//! addresses, accepts connections, does implicit TLS, and spawns one session
//! per connection inside a span. Nothing imports this module but `main` and
//! tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::auth::users::Users;
use crate::capture::Capture;
use crate::config::Config;
use crate::io::MaybeTls;
use crate::providers::TlsMode;
use crate::route::Router;
use crate::smtp::session::{self, SmtpContext};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Router(#[from] crate::route::RouterError),
    #[error("data_dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Smtp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Smtp => "smtp",
        }
    }
}

struct Bound {
    proto: Proto,
    listener: TcpListener,
    addr: SocketAddr,
}

/// A server with its sockets bound, ready to run.
pub struct Server {
    listeners: Vec<Bound>,
    smtp: Arc<SmtpContext>,
    max_connections: usize,
    shutdown: CancellationToken,
    shutdown_timeout: std::time::Duration,
}

impl Server {
    /// Bind every listener and prepare shared state. Fails before anything
    /// runs when an address is taken or a certificate is missing.
    pub async fn bind(config: &Config, shutdown: CancellationToken) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let needs_tls = config.smtp.tls != TlsMode::None
            || config.imap.as_ref().is_some_and(|l| l.tls != TlsMode::None);
        let acceptor = if needs_tls {
            Some(TlsAcceptor::from(crate::tls::server_config(
                config.tls.as_ref(),
                &config.data_dir,
            )?))
        } else {
            None
        };
        let capture_dir = config.data_dir.join("capture");
        let capture = Capture::open(&capture_dir).map_err(|source| ServerError::DataDir {
            path: capture_dir.clone(),
            source,
        })?;
        let users = Arc::new(Users::new(&config.users, &config.limits));
        let router = Arc::new(Router::new(config, Arc::new(capture))?);
        let smtp = Arc::new(SmtpContext {
            hostname: config.hostname.clone(),
            limits: config.limits.clone(),
            users,
            router,
            tls_mode: config.smtp.tls,
            acceptor,
            shutdown: shutdown.clone(),
        });
        let mut listeners = Vec::new();
        let total = config.smtp.listen.len();
        for addr in &config.smtp.listen {
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                // A machine without IPv6 cannot bind [::1]: carry on with the
                // other addresses rather than refuse to start.
                Err(e) if total > 1 && addr.is_ipv6() && ipv6_missing(&e) => {
                    warn!(addr = %addr, error = %e, "IPv6 loopback not available; skipping this address");
                    continue;
                }
                Err(source) => {
                    return Err(ServerError::Bind {
                        addr: *addr,
                        source,
                    })
                }
            };
            let addr = listener.local_addr().map_err(|source| ServerError::Bind {
                addr: *addr,
                source,
            })?;
            listeners.push(Bound {
                proto: Proto::Smtp,
                listener,
                addr,
            });
        }
        Ok(Server {
            listeners,
            smtp,
            max_connections: config.limits.max_connections,
            shutdown,
            shutdown_timeout: config.limits.shutdown_timeout,
        })
    }

    /// The bound addresses (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(Proto, SocketAddr)> {
        self.listeners.iter().map(|b| (b.proto, b.addr)).collect()
    }

    /// Accept until shutdown is requested, then give sessions in flight up to
    /// `shutdown_timeout` to finish.
    pub async fn run(self) {
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let ids = Arc::new(AtomicU64::new(1));
        for b in self.listeners {
            info!(proto = b.proto.as_str(), addr = %b.addr, tls = %self.smtp.tls_mode, "listening");
            let ctx = self.smtp.clone();
            let shutdown = self.shutdown.clone();
            let tracker2 = tracker.clone();
            let slots = slots.clone();
            let ids = ids.clone();
            tracker.spawn(accept_loop(b, ctx, shutdown, tracker2, slots, ids));
        }
        self.shutdown.cancelled().await;
        info!(
            in_flight = tracker.len(),
            "shutting down: no new connections; waiting for sessions in flight"
        );
        tracker.close();
        if tokio::time::timeout(self.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = tracker.len(),
                "shutdown deadline passed; closing remaining sessions"
            );
        }
        info!("stopped");
    }
}

async fn accept_loop(
    b: Bound,
    ctx: Arc<SmtpContext>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
    ids: Arc<AtomicU64>,
) {
    loop {
        let accepted = tokio::select! {
            r = b.listener.accept() => r,
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("conn", session = id, proto = b.proto.as_str(), %peer, user = tracing::field::Empty);
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                tracker.spawn(
                    async move {
                        warn!("too many connections; refusing");
                        refuse(stream, b.proto).await;
                    }
                    .instrument(span),
                );
                continue;
            }
        };
        let ctx = ctx.clone();
        let local = b.addr;
        tracker.spawn(
            async move {
                let _permit = permit;
                match b.proto {
                    Proto::Smtp => {
                        let stream = match wrap(
                            stream,
                            ctx.tls_mode,
                            ctx.acceptor.as_ref(),
                            ctx.limits.idle_timeout,
                        )
                        .await
                        {
                            Some(s) => s,
                            None => return,
                        };
                        session::serve(ctx, stream, peer, local).await;
                    }
                }
            }
            .instrument(span),
        );
    }
}

fn ipv6_missing(e: &std::io::Error) -> bool {
    // EADDRNOTAVAIL (99) or EAFNOSUPPORT (97) on Linux.
    e.kind() == std::io::ErrorKind::AddrNotAvailable
        || matches!(e.raw_os_error(), Some(97) | Some(99))
}

/// For implicit TLS listeners, do the handshake first.
async fn wrap(
    stream: TcpStream,
    mode: TlsMode,
    acceptor: Option<&TlsAcceptor>,
    timeout: std::time::Duration,
) -> Option<MaybeTls<TcpStream>> {
    match (mode, acceptor) {
        (TlsMode::Implicit, Some(a)) => match tokio::time::timeout(timeout, a.accept(stream)).await
        {
            Ok(Ok(tls)) => Some(MaybeTls::Tls(Box::new(tls))),
            Ok(Err(e)) => {
                info!(error = %e, "TLS handshake failed (plaintext on the TLS port?)");
                None
            }
            Err(_) => None,
        },
        _ => Some(MaybeTls::Plain(stream)),
    }
}

async fn refuse(mut stream: TcpStream, proto: Proto) {
    let msg: &[u8] = match proto {
        Proto::Smtp => b"421 4.7.0 Too many connections, try again later\r\n",
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.write_all(msg)).await;
}
