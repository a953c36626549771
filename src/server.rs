//! Listeners, connection limits and graceful shutdown. Binds the configured
//! addresses, accepts connections, does implicit TLS, and spawns one session
//! per connection inside a span. Nothing imports this module but `main` and
//! tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::auth::credentials::Credential;
use crate::auth::users::Users;
use crate::capture::Capture;
use crate::config::{Bind, Config};
use crate::imap::proxy::{self, ImapContext};
use crate::io::MaybeTls;
use crate::pop3::proxy::Pop3Context;
use crate::providers::TlsMode;
use crate::smtp::route::Router;
use crate::smtp::session::{self, SmtpContext};
use crate::upstream::MailboxServer;

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
    Router(#[from] crate::smtp::route::RouterError),
    #[error("quota store: {0}")]
    Store(#[from] crate::pool::StoreError),
    #[error("pools: {0}")]
    Pool(#[from] crate::pool::PoolError),
    #[error(transparent)]
    OAuth(#[from] crate::auth::oauth::OAuthError),
    #[error("secrets missing (set them, or mark the account enabled = false):\n  {}", .0.join("\n  "))]
    Secrets(Vec<String>),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error("faults: {0}")]
    Faults(String),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
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
    Imap,
    Pop3,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Smtp => "smtp",
            Proto::Imap => "imap",
            Proto::Pop3 => "pop3",
        }
    }
}

/// The shared state of one listener's sessions.
#[derive(Clone)]
enum Service {
    Smtp(Arc<SmtpContext>),
    Imap(Arc<ImapContext>),
    Pop3(Arc<Pop3Context>),
}

impl Service {
    fn proto(&self) -> Proto {
        match self {
            Service::Smtp(_) => Proto::Smtp,
            Service::Imap(_) => Proto::Imap,
            Service::Pop3(_) => Proto::Pop3,
        }
    }
    fn tls(&self) -> (Option<&TlsAcceptor>, Duration) {
        match self {
            Service::Smtp(c) => (c.acceptor.as_ref(), c.limits.idle_timeout),
            Service::Imap(c) => (c.acceptor.as_ref(), c.limits.idle_timeout),
            Service::Pop3(c) => (c.acceptor.as_ref(), c.limits.idle_timeout),
        }
    }
}

struct Bound {
    service: Service,
    listener: TcpListener,
    /// The address as bound (port 0 resolved), with its TLS mode.
    local: Bind,
}

/// A server with its sockets bound, ready to run.
pub struct Server {
    listeners: Vec<Bound>,
    /// `[http]`: the sandbox UI and API.
    http: Option<crate::http::HttpServer>,
    /// The queue's delivery workers.
    workers: Arc<crate::smtp::delivery::Workers>,
    max_connections: usize,
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
}

async fn bind_all(
    binds: &[Bind],
    service: &Service,
    out: &mut Vec<Bound>,
) -> Result<(), ServerError> {
    let total = binds.len();
    for bind in binds {
        let addr = &bind.addr;
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
        out.push(Bound {
            service: service.clone(),
            listener,
            local: Bind {
                addr,
                tls: bind.tls,
            },
        });
    }
    Ok(())
}

impl Server {
    /// Bind every listener and prepare shared state. Fails before anything
    /// runs when an address is taken or a certificate is missing.
    pub async fn bind(config: &Config, shutdown: CancellationToken) -> Result<Server, ServerError> {
        let missing = crate::auth::credentials::missing_secrets(config);
        if !missing.is_empty() {
            return Err(ServerError::Secrets(missing));
        }
        // Captured mail, the TLS key and the token store live here: a data_dir
        // that Postern creates is private to its user (an existing one keeps
        // the mode it has).
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(&config.data_dir)
            .map_err(|source| ServerError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        let needs_tls = [&config.smtp, &config.imap, &config.pop3]
            .into_iter()
            .flatten()
            .any(crate::config::Listener::uses_tls)
            || config.sandbox.pop3.iter().any(|b| b.tls != TlsMode::None);
        let acceptor = if needs_tls {
            Some(TlsAcceptor::from(crate::tls::server_config(
                config.tls.as_ref(),
                &config.data_dir,
            )?))
        } else {
            None
        };
        let capture_dir = config.data_dir.join("capture");
        let capture =
            Capture::open_with(&capture_dir, config.sandbox.retention).map_err(|source| {
                ServerError::DataDir {
                    path: capture_dir.clone(),
                    source,
                }
            })?;
        if let Err(e) = capture.reconcile().await {
            warn!(error = %e, "the capture index could not be brought in line with the Maildir");
        }
        let capture = Arc::new(capture);
        let faults = Arc::new(
            crate::sandbox::faults::Faults::from_specs(config.faults.clone())
                .map_err(ServerError::Faults)?,
        );
        // The connection caps of a previous run are not this one's.
        let _ = std::fs::remove_file(config.data_dir.join(crate::gate::BOARD_FILE));
        let users = Arc::new(Users::new(&config.users, &config.limits));
        // Built-in OAuth accounts share one token manager (None without any).
        let tokens = crate::auth::oauth::TokenManager::from_config(config)?;
        let mut router = Router::with_tokens(config, capture.clone(), tokens.as_ref())?;
        let store = crate::pool::Store::open(config).await?;
        info!(store = %store.describe(), "quota store");
        let pools = Arc::new(crate::pool::Pools::new(config, store)?);
        // A restart is when credentials change: give auth-parked mailboxes
        // another chance.
        for a in config.accounts.keys() {
            if let Err(e) = pools.unpark(a, Some(crate::pool::ParkKind::Auth)).await {
                warn!(account = %a, error = %e, "could not clear an auth parking");
            }
        }
        router.set_pools(config, pools);
        let queue_file = config.data_dir.join(crate::queue::QUEUE_FILE);
        let queue = crate::queue::Queue::open(
            &queue_file,
            crate::queue::Caps {
                max_messages: config.queue.max_messages,
                max_bytes: config.queue.max_bytes,
            },
        )?;
        let crashed = queue.recover(jiff::Timestamp::now()).await?;
        if !crashed.is_empty() {
            let ids: Vec<String> = crashed.iter().map(|i| i.to_string()).collect();
            warn!(ids = %ids.join(" "), "queued messages were being delivered when Postern last stopped: retrying them; they may arrive twice");
        }
        let queue = Arc::new(queue);
        router.set_queue(queue.clone());
        let router = Arc::new(router);
        let workers = crate::smtp::delivery::Workers::new(config, router.clone(), queue);
        let mut listeners = Vec::new();

        if let Some(l) = &config.smtp {
            let smtp = Service::Smtp(Arc::new(SmtpContext {
                hostname: config.hostname.clone(),
                limits: config.limits.clone(),
                users: users.clone(),
                router: router.clone(),
                acceptor: acceptor.clone(),
                anonymous: l.anonymous.clone(),
                faults: faults.clone(),
                shutdown: shutdown.clone(),
            }));
            bind_all(&l.binds, &smtp, &mut listeners).await?;
        }

        // The readers share the SMTP side's credential (and its token cache).
        let credential = |a: &crate::config::Account| {
            router
                .account(&a.name)
                .map(|r| r.cfg.credential.clone())
                .or_else(|| Credential::for_account(a, tokens.as_ref()))
        };
        if let Some(imap) = &config.imap {
            let mut accounts = BTreeMap::new();
            for a in config.accounts.values().filter(|a| a.enabled) {
                if let Some(acct) = MailboxServer::of(
                    a,
                    a.imap.as_ref(),
                    credential(a),
                    config.limits.upstream_timeout,
                )? {
                    accounts.insert(a.name.clone(), Arc::new(acct));
                }
            }
            let service = Service::Imap(Arc::new(ImapContext {
                hostname: config.hostname.clone(),
                limits: config.limits.clone(),
                users: users.clone(),
                accounts,
                acceptor: acceptor.clone(),
                shutdown: shutdown.clone(),
            }));
            bind_all(&imap.binds, &service, &mut listeners).await?;
        }
        if let Some(pop3) = &config.pop3 {
            let mut accounts = BTreeMap::new();
            for a in config.accounts.values().filter(|a| a.enabled) {
                if let Some(acct) = MailboxServer::of(
                    a,
                    a.pop3.as_ref(),
                    credential(a),
                    config.limits.upstream_timeout,
                )? {
                    accounts.insert(a.name.clone(), Arc::new(acct));
                }
            }
            let service = Service::Pop3(Arc::new(Pop3Context {
                hostname: config.hostname.clone(),
                limits: config.limits.clone(),
                users: users.clone(),
                accounts,
                sandbox: None,
                acceptor: acceptor.clone(),
                shutdown: shutdown.clone(),
            }));
            bind_all(&pop3.binds, &service, &mut listeners).await?;
        }
        if !config.sandbox.pop3.is_empty() {
            let service = Service::Pop3(Arc::new(Pop3Context {
                hostname: config.hostname.clone(),
                limits: config.limits.clone(),
                users: users.clone(),
                accounts: BTreeMap::new(),
                sandbox: Some(capture.clone()),
                acceptor: acceptor.clone(),
                shutdown: shutdown.clone(),
            }));
            bind_all(&config.sandbox.pop3, &service, &mut listeners).await?;
        }
        let http =
            crate::http::HttpServer::bind(config, capture.clone(), faults, router.clone()).await?;
        Ok(Server {
            http,
            listeners,
            max_connections: config.limits.max_connections,
            shutdown,
            shutdown_timeout: config.limits.shutdown_timeout,
            workers,
        })
    }
    /// Accept until shutdown is requested, then give sessions in flight up to
    /// `shutdown_timeout` to finish.
    pub async fn run(self) {
        raise_nofile_limit();
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let ids = Arc::new(AtomicU64::new(1));
        for b in self.listeners {
            info!(proto = b.service.proto().as_str(), addr = %b.local.addr, tls = %b.local.tls, "listening");
            tracker.spawn(accept_loop(
                b,
                self.shutdown.clone(),
                tracker.clone(),
                slots.clone(),
                ids.clone(),
            ));
        }
        tracker.spawn(
            self.workers
                .clone()
                .run(self.shutdown.clone(), self.shutdown_timeout),
        );
        if let Some(http) = self.http {
            tracker.spawn(http.run(self.shutdown.clone()));
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
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
    ids: Arc<AtomicU64>,
) {
    let proto = b.service.proto();
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
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("conn", session = id, proto = proto.as_str(), %peer, user = tracing::field::Empty);
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let tls = b.local.tls;
                tracker.spawn(
                    async move {
                        warn!("too many connections; refusing");
                        refuse(stream, proto, tls).await;
                    }
                    .instrument(span),
                );
                continue;
            }
        };
        let service = b.service.clone();
        let local = b.local;
        tracker.spawn(
            async move {
                let _permit = permit;
                let _open =
                    crate::metrics::METRICS.session(proto.as_str(), &local.addr.to_string());
                let (acceptor, timeout) = service.tls();
                let Some(stream) = wrap(stream, local.tls, acceptor, timeout).await else {
                    return;
                };
                match service {
                    Service::Smtp(ctx) => {
                        session::serve(ctx, stream, peer, local).await;
                    }
                    Service::Imap(ctx) => {
                        proxy::serve(ctx, stream, peer, local).await;
                    }
                    Service::Pop3(ctx) => {
                        crate::pop3::proxy::serve(ctx, stream, peer, local).await;
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// Raise the soft open-files limit to the hard limit: a proxied IMAP session
/// holds about four descriptors, and the default soft limit is 1,024.
pub fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!(nofile = n, "open-files limit"),
        Err(e) => warn!(error = %e, "could not raise the open-files limit"),
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
    timeout: Duration,
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

/// Refuse a connection over `max_connections`: 421 / `* BYE` on plaintext
/// listeners; on implicit-TLS ones a plain close (a plaintext reply would be
/// garbage to a TLS client, and a handshake per refusal would cost the CPU
/// a flood is already taking).
async fn refuse(mut stream: TcpStream, proto: Proto, tls: TlsMode) {
    if tls == TlsMode::Implicit {
        return;
    }
    let msg: &[u8] = match proto {
        Proto::Smtp => b"421 4.7.0 Too many connections, try again later\r\n",
        Proto::Imap => b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
        Proto::Pop3 => b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(msg)).await;
}
