//! Listeners, connection limits and graceful shutdown. Binds the configured
//! addresses, accepts connections, does implicit TLS, and spawns one session
//! per connection inside a span. Nothing imports this module but `main` and
//! tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};

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

/// Which listener a session came in on: the section, the address as
/// configured (port 0 stays 0) and its TLS mode. A reload keeps the
/// listeners whose key it still has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ListenerKey {
    section: &'static str,
    addr: SocketAddr,
    tls: TlsMode,
}

/// A listening socket with the sessions' state, swapped by reloads.
struct Running {
    service: Arc<ArcSwap<Service>>,
    /// Ends this listener's accept loop (a reload that drops it).
    stop: CancellationToken,
    local: Bind,
}

/// What lives for the whole run, whatever the reloads: the captured mail,
/// the fault rules, the quota store, the queue.
struct Core {
    capture: Arc<Capture>,
    faults: Arc<crate::sandbox::faults::Faults>,
    store: crate::pool::Store,
    queue: Arc<crate::queue::Queue>,
    shutdown: CancellationToken,
}

/// What one config makes: the sessions that start under it keep it to the
/// end, whatever reloads come meanwhile.
struct Generation {
    config: Arc<Config>,
    router: Arc<Router>,
    tokens: Option<Arc<crate::auth::oauth::TokenManager>>,
    services: BTreeMap<ListenerKey, (Bind, Service)>,
}

/// Asks the running server to apply a new config; answered with what the
/// reload did, or why it was refused.
pub struct ReloadRequest {
    pub config: Config,
    pub done: tokio::sync::oneshot::Sender<Result<String, String>>,
}

/// A server with its sockets bound, ready to run.
pub struct Server {
    core: Core,
    current: Generation,
    listeners: BTreeMap<ListenerKey, Running>,
    pending: Vec<(ListenerKey, TcpListener, Bind)>,
    /// `[http]`: the sandbox UI and API.
    http: Option<crate::http::HttpServer>,
    /// Its handlers' state, which a reload swaps.
    http_state: Option<crate::http::AppState>,
    /// The queue's delivery workers.
    workers: Arc<crate::smtp::delivery::Workers>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    shutdown_timeout: Duration,
    reloads: tokio::sync::mpsc::Receiver<ReloadRequest>,
    reload_tx: tokio::sync::mpsc::Sender<ReloadRequest>,
}

async fn bind_one(bind: &Bind, total: usize) -> Result<Option<(TcpListener, Bind)>, ServerError> {
    let addr = &bind.addr;
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        // A machine without IPv6 cannot bind [::1]: carry on with the
        // other addresses rather than refuse to start.
        Err(e) if total > 1 && addr.is_ipv6() && ipv6_missing(&e) => {
            warn!(addr = %addr, error = %e, "IPv6 loopback not available; skipping this address");
            return Ok(None);
        }
        Err(source) => {
            return Err(ServerError::Bind {
                addr: *addr,
                source,
            })
        }
    };
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: *addr,
        source,
    })?;
    Ok(Some((
        listener,
        Bind {
            addr: local,
            tls: bind.tls,
        },
    )))
}

/// The sections of a config that only a restart applies.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |name, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        if format!("{a:?}") != format!("{b:?}") {
            v.push(name);
        }
    };
    check("data_dir", &old.data_dir, &new.data_dir);
    check("log_level", &old.log_level, &new.log_level);
    check("[http]", &old.http, &new.http);
    check("quota_store", &old.quota_store, &new.quota_store);
    check("key_file", &old.key_file, &new.key_file);
    check("[queue]", &old.queue, &new.queue);
    check("[[faults]]", &old.faults, &new.faults);
    check(
        "[sandbox] retention",
        &old.sandbox.retention,
        &new.sandbox.retention,
    );
    v
}

impl Generation {
    /// A start or a reload is when credentials change: give auth-parked
    /// mailboxes another chance (once the generation is in force).
    async fn unpark_auth(&self) {
        let Some(pools) = self.router.pools() else {
            return;
        };
        for a in self.config.accounts.keys() {
            if let Err(e) = pools.unpark(a, Some(crate::pool::ParkKind::Auth)).await {
                warn!(account = %a, error = %e, "could not clear an auth parking");
            }
        }
    }

    /// Bind every address of this generation that `listening` says is not
    /// bound yet; the first that fails drops the sockets bound so far.
    async fn bind_missing(
        &self,
        listening: impl Fn(&ListenerKey) -> bool,
    ) -> Result<Vec<(ListenerKey, TcpListener, Bind)>, ServerError> {
        let mut out = Vec::new();
        for (key, (bind, _)) in &self.services {
            if listening(key) {
                continue;
            }
            let total = self
                .services
                .keys()
                .filter(|k| k.section == key.section)
                .count();
            if let Some((l, local)) = bind_one(bind, total).await? {
                out.push((*key, l, local));
            }
        }
        Ok(out)
    }

    /// Everything the sessions of `config` share. `previous` is the
    /// generation running now, if any: its token manager and its
    /// connection gates are kept where the config leaves them unchanged.
    async fn build(
        config: &Config,
        core: &Core,
        previous: Option<&Generation>,
    ) -> Result<Generation, ServerError> {
        let missing = crate::auth::credentials::missing_secrets(config);
        if !missing.is_empty() {
            return Err(ServerError::Secrets(missing));
        }
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
        let users = Arc::new(Users::new(&config.users, &config.limits));
        // Built-in OAuth accounts share one token manager (None without any).
        let tokens = match previous.and_then(|p| p.tokens.as_ref()) {
            Some(m) if m.serves(config) => Some(m.clone()),
            _ => crate::auth::oauth::TokenManager::from_config(config)?,
        };
        let mut router = Router::with_tokens(config, core.capture.clone(), tokens.as_ref())?;
        if let Some(p) = previous {
            router.keep_gates(&p.router);
        }
        let pools = Arc::new(crate::pool::Pools::new(config, core.store.clone())?);
        router.set_pools(config, pools);
        router.set_queue(core.queue.clone());
        let router = Arc::new(router);
        let mut services = BTreeMap::new();
        let mut add = |section: &'static str, binds: &[Bind], service: Service| {
            for b in binds {
                let key = ListenerKey {
                    section,
                    addr: b.addr,
                    tls: b.tls,
                };
                services.insert(key, (*b, service.clone()));
            }
        };
        if let Some(l) = &config.smtp {
            let smtp = Service::Smtp(Arc::new(SmtpContext {
                hostname: config.hostname.clone(),
                limits: config.limits.clone(),
                users: users.clone(),
                router: router.clone(),
                acceptor: acceptor.clone(),
                anonymous: l.anonymous.clone(),
                faults: core.faults.clone(),
                shutdown: core.shutdown.clone(),
            }));
            add("smtp", &l.binds, smtp);
        }
        // The readers share the SMTP side's credential (and its token cache).
        let credential = |a: &crate::config::Account| {
            router
                .account(&a.name)
                .map(|r| r.cfg.credential.clone())
                .or_else(|| Credential::for_account(a, tokens.as_ref()))
        };
        let readers = |pick: fn(&crate::config::Account) -> Option<&crate::config::Service>| {
            let mut accounts = BTreeMap::new();
            for a in config.accounts.values().filter(|a| a.enabled) {
                if let Some(acct) =
                    MailboxServer::of(a, pick(a), credential(a), config.limits.upstream_timeout)?
                {
                    accounts.insert(a.name.clone(), Arc::new(acct));
                }
            }
            Ok::<_, ServerError>(accounts)
        };
        if let Some(imap) = &config.imap {
            let service = Service::Imap(Arc::new(ImapContext {
                hostname: config.hostname.clone(),
                limits: config.limits.clone(),
                users: users.clone(),
                accounts: readers(|a| a.imap.as_ref())?,
                acceptor: acceptor.clone(),
                shutdown: core.shutdown.clone(),
            }));
            add("imap", &imap.binds, service);
        }
        let pop3 = |accounts, sandbox| {
            Service::Pop3(Arc::new(Pop3Context {
                hostname: config.hostname.clone(),
                limits: config.limits.clone(),
                users: users.clone(),
                accounts,
                sandbox,
                acceptor: acceptor.clone(),
                shutdown: core.shutdown.clone(),
            }))
        };
        if let Some(l) = &config.pop3 {
            add("pop3", &l.binds, pop3(readers(|a| a.pop3.as_ref())?, None));
        }
        if !config.sandbox.pop3.is_empty() {
            add(
                "sandbox.pop3",
                &config.sandbox.pop3,
                pop3(BTreeMap::new(), Some(core.capture.clone())),
            );
        }
        Ok(Generation {
            config: Arc::new(config.clone()),
            router,
            tokens,
            services,
        })
    }
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
        let store = crate::pool::Store::open(config).await?;
        info!(store = %store.describe(), "quota store");
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
        let core = Core {
            capture,
            faults,
            store,
            queue: Arc::new(queue),
            shutdown,
        };
        let current = Generation::build(config, &core, None).await?;
        current.unpark_auth().await;
        crate::events::configure(&config.events, &config.hostname);
        let workers =
            crate::smtp::delivery::Workers::new(config, current.router.clone(), core.queue.clone());
        let pending = current.bind_missing(|_| false).await?;
        let http = crate::http::HttpServer::bind(
            config,
            core.capture.clone(),
            core.faults.clone(),
            current.router.clone(),
        )
        .await?;
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(4);
        Ok(Server {
            core,
            current,
            listeners: BTreeMap::new(),
            pending,
            http_state: http.as_ref().map(crate::http::HttpServer::state),
            http,
            workers,
            slots: Arc::new(Semaphore::new(config.limits.max_connections)),
            max_connections: config.limits.max_connections,
            shutdown_timeout: config.limits.shutdown_timeout,
            reloads,
            reload_tx,
        })
    }

    /// Where reloads are asked for (SIGHUP in `main`).
    pub fn reloader(&self) -> tokio::sync::mpsc::Sender<ReloadRequest> {
        self.reload_tx.clone()
    }

    fn start_listener(
        &mut self,
        key: ListenerKey,
        listener: TcpListener,
        local: Bind,
        service: Service,
        tracker: &TaskTracker,
        ids: &Arc<AtomicU64>,
    ) {
        info!(proto = service.proto().as_str(), addr = %local.addr, tls = %local.tls, "listening");
        let running = Running {
            service: Arc::new(ArcSwap::from_pointee(service)),
            stop: self.core.shutdown.child_token(),
            local,
        };
        tracker.spawn(accept_loop(
            listener,
            running.service.clone(),
            local,
            running.stop.clone(),
            tracker.clone(),
            self.slots.clone(),
            ids.clone(),
        ));
        self.listeners.insert(key, running);
    }

    /// Apply `config` to new sessions, or refuse it and keep the old one.
    async fn reload(
        &mut self,
        config: Config,
        tracker: &TaskTracker,
        ids: &Arc<AtomicU64>,
    ) -> Result<String, ServerError> {
        let next = Generation::build(&config, &self.core, Some(&self.current)).await?;
        // Bind the new addresses first: one that cannot be bound refuses
        // the whole reload, and the sockets bound so far are dropped.
        let opened = next
            .bind_missing(|k| self.listeners.contains_key(k))
            .await?;
        // Nothing below can fail: the new config takes over.
        let mut closed = 0;
        self.listeners.retain(|key, r| {
            if next.services.contains_key(key) {
                return true;
            }
            info!(addr = %r.local.addr, "reload: no longer listening here");
            r.stop.cancel();
            closed += 1;
            false
        });
        for (key, r) in &self.listeners {
            if let Some((_, service)) = next.services.get(key) {
                r.service.store(Arc::new(service.clone()));
            }
        }
        let added = opened.len();
        for (key, l, local) in opened {
            let service = next.services[&key].1.clone();
            self.start_listener(key, l, local, service, tracker, ids);
        }
        let want = config.limits.max_connections;
        if want > self.max_connections {
            self.slots.add_permits(want - self.max_connections);
        } else if want < self.max_connections {
            // Taken as sessions end, and never given back.
            let fewer = (self.max_connections - want) as u32;
            let slots = self.slots.clone();
            tokio::spawn(async move {
                if let Ok(p) = slots.acquire_many_owned(fewer).await {
                    p.forget();
                }
            });
        }
        self.max_connections = want;
        self.shutdown_timeout = config.limits.shutdown_timeout;
        self.workers.reload(&config, next.router.clone());
        crate::events::configure(&config.events, &config.hostname);
        if let Some(h) = &self.http_state {
            h.reload(&config, next.router.clone());
        }
        let later = restart_only(&self.current.config, &config);
        if !later.is_empty() {
            warn!(sections = %later.join(", "), "reload: these settings changed and take effect only at a restart");
        }
        self.current = next;
        self.current.unpark_auth().await;
        Ok(format!(
            "reloaded: {} users, {} accounts, {} pools; {} listeners opened, {} closed{}",
            config.users.len(),
            config.accounts.len(),
            config.pools.len(),
            added,
            closed,
            if later.is_empty() {
                String::new()
            } else {
                format!("; needs a restart: {}", later.join(", "))
            }
        ))
    }

    /// Accept until shutdown is requested, then give sessions in flight up to
    /// `shutdown_timeout` to finish.
    pub async fn run(mut self) {
        raise_nofile_limit();
        let tracker = TaskTracker::new();
        let ids = Arc::new(AtomicU64::new(1));
        for (key, l, local) in std::mem::take(&mut self.pending) {
            let service = self.current.services[&key].1.clone();
            self.start_listener(key, l, local, service, &tracker, &ids);
        }
        tracker.spawn(
            self.workers
                .clone()
                .run(self.core.shutdown.clone(), self.shutdown_timeout),
        );
        if let Some(http) = self.http.take() {
            tracker.spawn(http.run(self.core.shutdown.clone()));
        }
        let shutdown = self.core.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(req) = self.reloads.recv() => {
                    let file = req.config.file.display().to_string();
                    let answer = match self.reload(req.config, &tracker, &ids).await {
                        Ok(done) => {
                            info!(config = %file, "{done}");
                            Ok(done)
                        }
                        Err(e) => {
                            error!(config = %file, error = %e, "reload refused; the running config is unchanged");
                            Err(e.to_string())
                        }
                    };
                    let _ = req.done.send(answer);
                }
            }
        }
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
    listener: TcpListener,
    slot: Arc<ArcSwap<Service>>,
    local: Bind,
    stop: CancellationToken,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
    ids: Arc<AtomicU64>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
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
        // The session keeps the config in force now to its end.
        let service = Service::clone(&slot.load());
        let proto = service.proto();
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("conn", session = id, proto = proto.as_str(), %peer, user = tracing::field::Empty, account = tracing::field::Empty);
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let tls = local.tls;
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
