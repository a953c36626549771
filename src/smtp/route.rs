//! Where a local user's mail goes after the SMTP session accepted it: the one
//! `Route` interface between the session and the destinations (capture, a
//! single account, a pool), in one of three delivery modes.
//!
//! A route opens a transaction at MAIL FROM, gives a verdict per RCPT, and a
//! verdict for the message at the end of DATA. In `relay` mode those are the
//! destination's own, so nothing is acknowledged that the destination did
//! not accept. In `queue` mode the message goes to the durable queue at the
//! end of DATA (`250 … queued as ID`, once it is on disk). In
//! `relay-then-queue` mode the destination is tried first and what cannot
//! go now (a transient refusal at MAIL, RCPT or the end of DATA, a pool out
//! of capacity, no free connection in time) is queued instead; permanent
//! refusals still reach the client.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;

use crate::capture::{self, Capture};
use crate::config::{Config, Delivery, SandboxRoute, SendVia, User};
use crate::pool::Pools;
use crate::queue::{NewMessage, Params, Queue, QueueError};
use crate::smtp::codec::{Body, MailParams, Path, Reply};
use crate::smtp::relay::{DirectTransaction, PoolRoute, PoolTransaction, Refused};
use crate::smtp::upstream::AccountRelay;

/// A destination for a user's mail.
#[derive(Debug, Clone)]
pub enum Route {
    Capture(Arc<Capture>),
    Account(Arc<AccountRelay>, Arc<Pools>),
    Pool(Arc<PoolRoute>),
    /// `redirect` / `allowlist` in front of an account or pool.
    Sandbox(Box<(SandboxRoute, Route, Arc<Capture>)>),
}

/// What the queue needs to hold a message: where it is and how it goes.
#[derive(Debug, Clone)]
pub struct Queuing {
    pub queue: Arc<Queue>,
    /// `send_via` as written (`ACCOUNT` or `pool:NAME`).
    pub route: String,
}

/// Facts about the session that a route may record or use.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: String,
    /// Where captured copies go (the user's `inbox`, else its name).
    pub inbox: String,
    pub helo: String,
    pub peer: std::net::SocketAddr,
    /// Set when the message went to the queue (its id), for the session's
    /// summary line and metrics.
    pub queued: std::sync::OnceLock<crate::queue::QueueId>,
}

/// An open mail transaction on a route.
#[derive(Debug)]
pub enum Transaction {
    Capture {
        sink: Arc<Capture>,
        from: Path,
        rcpts: Vec<Path>,
    },
    Relay(Box<DirectTransaction>),
    Pool(Box<PoolTransaction>),
    /// `queue`: nothing goes upstream in the session.
    Queued(Box<Held>),
    /// `relay-then-queue`: what the live transaction cannot take is held.
    Hybrid(Box<Hybrid>),
    /// A sandbox route (see below).
    Sandbox(Box<SandboxTx>),
}

/// An envelope held for the queue.
#[derive(Debug)]
pub struct Held {
    queuing: Queuing,
    from: Path,
    params: MailParams,
    rcpts: Vec<Path>,
    /// Why it is held and not relayed (for the log and the queue's events).
    why: Option<String>,
}

/// `relay-then-queue`: a live transaction (if one could be opened) and the
/// recipients held for the queue.
#[derive(Debug)]
pub struct Hybrid {
    live: Option<Transaction>,
    live_rcpts: Vec<Path>,
    held: Held,
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Maps a user's `send_via` to a route.
#[derive(Debug)]
pub struct Router {
    capture: Arc<Capture>,
    accounts: BTreeMap<String, Arc<AccountRelay>>,
    pools: Option<Arc<Pools>>,
    pool_routes: BTreeMap<String, Arc<PoolRoute>>,
    /// `delivery` of each pool.
    pool_delivery: BTreeMap<String, Delivery>,
    queue: Option<Arc<Queue>>,
}

impl Router {
    pub fn new(config: &Config, capture: Arc<Capture>) -> Result<Router, RouterError> {
        Router::with_tokens(config, capture, None)
    }

    /// Like [`Router::new`], with the token manager that serves built-in
    /// OAuth accounts (accounts that need it are left out without one).
    pub fn with_tokens(
        config: &Config,
        capture: Arc<Capture>,
        tokens: Option<&Arc<crate::auth::oauth::TokenManager>>,
    ) -> Result<Router, RouterError> {
        let mut accounts = BTreeMap::new();
        let board = crate::gate::Board::new(config.data_dir.join(crate::gate::BOARD_FILE));
        for a in config.accounts.values() {
            if let Some(relay) = AccountRelay::from_account(
                a,
                &config.hostname,
                &config.limits,
                tokens,
                Some(&board),
            )? {
                accounts.insert(a.name.clone(), Arc::new(relay));
            }
        }
        Ok(Router {
            capture,
            accounts,
            pools: None,
            pool_routes: BTreeMap::new(),
            pool_delivery: config
                .pools
                .iter()
                .filter_map(|(n, p)| p.delivery.map(|d| (n.clone(), d)))
                .collect(),
            queue: None,
        })
    }

    /// After a reload: accounts whose caps are unchanged keep counting their
    /// upstream connections against `old`'s gates.
    pub fn keep_gates(&mut self, old: &Router) {
        for (name, relay) in self.accounts.iter_mut() {
            if let (Some(new), Some(prev)) = (Arc::get_mut(relay), old.accounts.get(name)) {
                new.keep_gate(prev);
            }
        }
    }

    /// Attach the quota counters: account sends are counted and pools routed.
    pub fn set_pools(&mut self, config: &Config, pools: Arc<Pools>) {
        self.pool_routes.clear();
        for (name, p) in &config.pools {
            let members: BTreeMap<_, _> = config
                .pool_members(p)
                .filter_map(|a| {
                    self.accounts
                        .get(&a.name)
                        .map(|r| (a.name.clone(), r.clone()))
                })
                .collect();
            if members.len() < p.accounts.len() {
                tracing::warn!(pool = %name, "some pool accounts are disabled and left out");
            }
            if members.is_empty() {
                continue;
            }
            self.pool_routes.insert(
                name.clone(),
                Arc::new(PoolRoute {
                    name: name.clone(),
                    pools: pools.clone(),
                    members,
                    from_policy: p.from_policy,
                    trace_header: config.trace_header,
                }),
            );
        }
        self.pools = Some(pools);
    }

    pub fn pools(&self) -> Option<&Arc<Pools>> {
        self.pools.as_ref()
    }

    /// Attach the durable queue (`queue` and `relay-then-queue` delivery).
    pub fn set_queue(&mut self, queue: Arc<Queue>) {
        self.queue = Some(queue);
    }

    pub fn queue(&self) -> Option<&Arc<Queue>> {
        self.queue.as_ref()
    }

    /// How `user`'s mail is delivered: the user's `delivery`, else its
    /// pool's, else `relay`.
    pub fn delivery(&self, user: &User) -> Delivery {
        user.delivery
            .or(match &user.send_via {
                Some(SendVia::Pool(p)) => self.pool_delivery.get(p).copied(),
                _ => None,
            })
            .unwrap_or(Delivery::Relay)
    }

    /// The address of the mailbox `via` sends as (the first member of a
    /// pool): the From of the delivery reports on that route.
    pub fn route_address(&self, via: &SendVia) -> Option<String> {
        match via {
            SendVia::Capture => None,
            SendVia::Account(a) => self.accounts.get(a).map(|r| r.cfg.email.clone()),
            SendVia::Pool(p) => self
                .pool_routes
                .get(p)
                .and_then(|r| r.members.values().next().map(|m| m.cfg.email.clone())),
        }
    }

    /// Where queued mail for `via` is held (None without a queue, or for
    /// capture).
    pub fn queuing(&self, via: &SendVia) -> Option<Queuing> {
        if *via == SendVia::Capture {
            return None;
        }
        Some(Queuing {
            queue: self.queue.clone()?,
            route: via.key(),
        })
    }

    /// Every account that relays, in name order.
    pub fn accounts(&self) -> impl Iterator<Item = &Arc<AccountRelay>> {
        self.accounts.values()
    }

    pub fn account(&self, name: &str) -> Option<&Arc<AccountRelay>> {
        self.accounts.get(name)
    }

    pub fn route(&self, via: &SendVia) -> Option<Route> {
        match via {
            SendVia::Capture => Some(Route::Capture(self.capture.clone())),
            SendVia::Account(a) => {
                let pools = self.pools.clone()?;
                self.accounts
                    .get(a)
                    .map(|r| Route::Account(r.clone(), pools))
            }
            SendVia::Pool(p) => self.pool_routes.get(p).map(|r| Route::Pool(r.clone())),
        }
    }

    /// The route for a user's mail: its `send_via`, behind its sandbox
    /// rule when it has one.
    pub fn route_for(&self, user: &User) -> Option<Route> {
        let base = self.route(user.send_via.as_ref()?)?;
        Some(match &user.sandbox {
            Some(rule) => Route::Sandbox(Box::new((rule.clone(), base, self.capture.clone()))),
            None => base,
        })
    }
}

impl Route {
    /// MAIL FROM in `relay` mode: open a transaction (with the reply for
    /// the client), or say why not.
    pub async fn open(
        &self,
        _info: &SessionInfo,
        from: &Path,
        params: &MailParams,
    ) -> Result<(Transaction, Reply), Refused> {
        match self {
            Route::Capture(sink) => Ok((
                Transaction::Capture {
                    sink: sink.clone(),
                    from: from.clone(),
                    rcpts: Vec::new(),
                },
                Reply::new(250, "2.1.0", "Sender OK (capture)"),
            )),
            Route::Account(relay, pools) => {
                let (tx, reply) =
                    DirectTransaction::open(relay.clone(), pools.clone(), from, params).await?;
                Ok((Transaction::Relay(Box::new(tx)), reply))
            }
            Route::Pool(route) => {
                let (tx, reply) = PoolTransaction::open(route.clone(), from, params).await?;
                Ok((Transaction::Pool(Box::new(tx)), reply))
            }
            Route::Sandbox(b) => {
                let (rule, inner, capture) = &**b;
                let (tx, reply) =
                    SandboxTx::open(rule.clone(), inner.clone(), capture.clone(), from, params);
                Ok((Transaction::Sandbox(Box::new(tx)), reply))
            }
        }
    }

    /// MAIL FROM in a delivery mode: `relay` as [`Route::open`]; `queue`
    /// holds the envelope (after the checks that need no upstream);
    /// `relay-then-queue` holds it when the upstream refuses for now.
    pub async fn open_for(
        &self,
        info: &SessionInfo,
        from: &Path,
        params: &MailParams,
        mode: Delivery,
        queuing: Option<Queuing>,
    ) -> Result<(Transaction, Reply), Refused> {
        let queuing = match (mode, queuing, self) {
            (Delivery::Relay, _, _) | (_, _, Route::Capture(_)) | (_, _, Route::Sandbox(_)) => {
                return self.open(info, from, params).await
            }
            (_, Some(q), _) => q,
            (_, None, _) => {
                return Err(
                    Reply::new(451, "4.3.0", "The queue is not available; try again later").into(),
                )
            }
        };
        let held = |why: Option<String>| Held {
            queuing: queuing.clone(),
            from: from.clone(),
            params: params.clone(),
            rcpts: Vec::new(),
            why,
        };
        if mode == Delivery::Queue {
            if let Route::Pool(p) = self {
                p.check_sender(from)?;
            }
            return Ok((
                Transaction::Queued(Box::new(held(None))),
                Reply::new(250, "2.1.0", "Sender OK (queued delivery)"),
            ));
        }
        match self.open(info, from, params).await {
            Ok((tx, reply)) => Ok((
                Transaction::Hybrid(Box::new(Hybrid {
                    live: Some(tx),
                    live_rcpts: Vec::new(),
                    held: held(None),
                })),
                reply,
            )),
            Err(r) if r.reply.is_transient() => {
                let why = r.reply.to_string();
                tracing::info!(reason = %why, "upstream not available now: holding the message for the queue");
                Ok((
                    Transaction::Hybrid(Box::new(Hybrid {
                        live: None,
                        live_rcpts: Vec::new(),
                        held: held(Some(why)),
                    })),
                    Reply::new(
                        250,
                        "2.1.0",
                        "Sender OK (the upstream is busy: the message will be queued)",
                    ),
                ))
            }
            Err(r) => Err(r),
        }
    }
}

impl Held {
    /// Puts the message on disk for the queue workers: the client's 250
    /// (or 452 4.3.1 when the queue is full, 451 when it fails).
    async fn enqueue(&self, info: &SessionInfo, message: &[u8]) -> Reply {
        let m = NewMessage {
            user: info.user.clone(),
            route: self.queuing.route.clone(),
            mail_from: self.from.as_str().to_owned(),
            params: Params {
                size: self.params.size,
                eight_bit: self.params.body == Some(Body::EightBitMime),
                smtputf8: self.params.smtputf8,
            },
            rcpts: self.rcpts.iter().map(|r| r.as_str().to_owned()).collect(),
            helo: info.helo.clone(),
            peer: info.peer.to_string(),
            body: message.to_vec(),
        };
        match self.queuing.queue.enqueue(m, Timestamp::now()).await {
            Ok(id) => {
                let _ = info.queued.set(id);
                tracing::info!(queue_id = %id, route = %self.queuing.route, rcpts = self.rcpts.len(),
                    size = message.len(), reason = self.why.as_deref().unwrap_or("delivery = queue"), "message queued");
                Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
            }
            Err(e) => queue_trouble(&e),
        }
    }
}

/// The reply when the queue cannot take a message: nothing was written.
fn queue_trouble(e: &QueueError) -> Reply {
    if e.is_full() {
        tracing::warn!(error = %e, "queue full: message refused with 452");
        let why = if e.is_disk_full() {
            "the disk holding the queue is full".to_owned()
        } else {
            e.to_string()
        };
        return Reply::new(
            452,
            "4.3.1",
            format!("Insufficient system storage: {why}; try again later"),
        );
    }
    tracing::error!(error = %e, "could not queue a message");
    Reply::new(451, "4.3.0", "Could not queue the message; try again later")
}

impl Transaction {
    /// RCPT TO: the destination's verdict for this recipient (a sandbox
    /// route opens its relay transaction here, with the session's facts).
    pub async fn rcpt_for(&mut self, info: &SessionInfo, to: &Path) -> Reply {
        match self {
            Transaction::Sandbox(tx) => tx.rcpt(info, to).await,
            Transaction::Capture { rcpts, .. } => {
                rcpts.push(to.clone());
                Reply::new(250, "2.1.5", "Recipient OK (capture)")
            }
            Transaction::Relay(tx) => tx.rcpt(to).await,
            Transaction::Pool(tx) => tx.rcpt(to).await,
            Transaction::Queued(h) => {
                h.rcpts.push(to.clone());
                Reply::new(250, "2.1.5", "Recipient OK (queued delivery)")
            }
            Transaction::Hybrid(h) => {
                if let Some(live) = h.live.as_mut() {
                    let r = Box::pin(live.rcpt_for(info, to)).await;
                    if r.is_positive() {
                        h.live_rcpts.push(to.clone());
                        return r;
                    }
                    if !r.is_transient() {
                        return r;
                    }
                    tracing::info!(reply = %r, "recipient refused for now: held for the queue");
                }
                h.held.rcpts.push(to.clone());
                Reply::new(
                    250,
                    "2.1.5",
                    "Recipient OK (not deliverable right now: it will be queued)",
                )
            }
        }
    }

    /// When the destination said it has room again (for the queue).
    pub fn retry_at(&self) -> Option<Timestamp> {
        match self {
            Transaction::Relay(tx) => tx.retry_at(),
            Transaction::Pool(tx) => tx.retry_at(),
            _ => None,
        }
    }

    /// End of DATA: the destination's verdict for the whole message.
    pub async fn data(self, info: &SessionInfo, message: &[u8]) -> Reply {
        match self {
            Transaction::Capture { sink, from, rcpts } => {
                let env = capture::Envelope {
                    user: &info.user,
                    inbox: &info.inbox,
                    mail_from: &from,
                    rcpts: &rcpts,
                    helo: &info.helo,
                    peer: info.peer,
                    notes: &[],
                };
                match sink.store(&env, message).await {
                    Ok(id) => {
                        tracing::info!(id = %id, rcpts = rcpts.len(), size = message.len(), "message captured");
                        Reply::new(250, "2.0.0", format!("Ok: captured as {id}"))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, dir = %sink.dir().display(), "capture failed");
                        Reply::new(451, "4.3.0", "Could not store the message; try again later")
                    }
                }
            }
            Transaction::Relay(tx) => tx.data(message).await,
            Transaction::Pool(tx) => tx.data(message).await,
            Transaction::Queued(h) => h.enqueue(info, message).await,
            Transaction::Sandbox(tx) => tx.data(info, message).await,
            Transaction::Hybrid(h) => {
                let Hybrid {
                    live,
                    live_rcpts,
                    mut held,
                } = *h;
                let Some(live) = live.filter(|_| !live_rcpts.is_empty()) else {
                    return held.enqueue(info, message).await;
                };
                let r = Box::pin(live.data(info, message)).await;
                if r.is_positive() {
                    if held.rcpts.is_empty() {
                        return r;
                    }
                    // Delivered to some; the others wait in the queue.
                    let q = held.enqueue(info, message).await;
                    if !q.is_positive() {
                        tracing::error!(reply = %q, delivered = %r, "message delivered to some recipients but the others could not be queued");
                        return q;
                    }
                    return Reply::new(
                        250,
                        "2.0.0",
                        format!(
                            "{} ({} recipients delivered; {} queued: {})",
                            crate::text::sanitize(&r.text(), 200),
                            live_rcpts.len(),
                            held.rcpts.len(),
                            q.text()
                        ),
                    );
                }
                if r.is_transient() {
                    tracing::info!(reply = %r, "upstream refused the message for now: queued");
                    held.why = Some(r.to_string());
                    let mut all = live_rcpts;
                    all.append(&mut held.rcpts);
                    held.rcpts = all;
                    return held.enqueue(info, message).await;
                }
                r
            }
        }
    }

    /// The client reset or abandoned the transaction.
    pub fn abort(self) {
        match self {
            Transaction::Capture { .. } => {}
            Transaction::Relay(tx) => tx.abort(),
            Transaction::Pool(tx) => tx.abort(),
            Transaction::Queued(_) => {}
            Transaction::Sandbox(tx) => tx.abort(),
            Transaction::Hybrid(h) => {
                if let Some(live) = h.live {
                    live.abort();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Sandbox routes in front of a real account or pool (a user's `redirect` or
// `allowlist`): every message is also captured, so a test can look at what
// was sent, and only what the rule lets through reaches the provider.
//
// - `redirect = "qa@example.com"`: the message goes to that one address
//   instead of its recipients, which it carries in `X-Postern-Original-To`.
// - `allowlist = ["*@ourcompany.com"]`: recipients that match are relayed;
//   the others are only captured, in the same transaction, and the client
//   sees one `250` for all.
//
// The upstream transaction is opened at the first recipient that needs it
// (so a message to captured recipients only never touches the provider).
// The copy is captured after the relay accepted it; when the relay refuses,
// nothing is kept and the client gets the refusal, so its retry does not
// leave a duplicate behind.
// ---------------------------------------------------------------------------

/// An open transaction through a sandbox route.
#[derive(Debug)]
pub struct SandboxTx {
    rule: SandboxRoute,
    /// The real route, and its transaction once opened.
    route: Route,
    live: Option<Transaction>,
    capture: Arc<Capture>,
    from: Path,
    params: MailParams,
    /// Every recipient the client gave (all are captured).
    all: Vec<Path>,
    /// Those relayed (allowlist), or the redirect address once accepted.
    relayed: Vec<Path>,
}

impl SandboxTx {
    pub fn open(
        rule: SandboxRoute,
        route: Route,
        capture: Arc<Capture>,
        from: &Path,
        params: &MailParams,
    ) -> (SandboxTx, Reply) {
        let what = match &rule {
            SandboxRoute::Redirect(to) => format!("Sender OK (redirected to {to}; captured)"),
            SandboxRoute::Allowlist(_) => "Sender OK (allowlist; captured)".to_owned(),
        };
        (
            SandboxTx {
                rule,
                route,
                live: None,
                capture,
                from: from.clone(),
                params: params.clone(),
                all: Vec::new(),
                relayed: Vec::new(),
            },
            Reply::new(250, "2.1.0", what),
        )
    }

    /// The live transaction, opened on first use.
    async fn live(&mut self, info: &SessionInfo) -> Result<&mut Transaction, Reply> {
        if self.live.is_none() {
            let (tx, _) = self
                .route
                .open(info, &self.from, &self.params)
                .await
                .map_err(|r| r.reply)?;
            self.live = Some(tx);
        }
        self.live
            .as_mut()
            .ok_or_else(|| Reply::new(451, "4.3.0", "internal error"))
    }

    pub async fn rcpt(&mut self, info: &SessionInfo, to: &Path) -> Reply {
        match self.rule.clone() {
            SandboxRoute::Redirect(addr) => {
                if self.relayed.is_empty() {
                    let target = Path::new(addr.clone());
                    let live = match self.live(info).await {
                        Ok(l) => l,
                        Err(r) => return r,
                    };
                    let r = Box::pin(live.rcpt_for(info, &target)).await;
                    if !r.is_positive() {
                        return r;
                    }
                    self.relayed.push(target);
                }
                self.all.push(to.clone());
                Reply::new(250, "2.1.5", format!("Recipient OK (redirected to {addr})"))
            }
            SandboxRoute::Allowlist(patterns) => {
                if crate::pattern::first_match(&patterns, to.as_str()).is_some() {
                    let live = match self.live(info).await {
                        Ok(l) => l,
                        Err(r) => return r,
                    };
                    let r = Box::pin(live.rcpt_for(info, to)).await;
                    if r.is_positive() {
                        self.relayed.push(to.clone());
                        self.all.push(to.clone());
                    }
                    return r;
                }
                self.all.push(to.clone());
                Reply::new(
                    250,
                    "2.1.5",
                    "Recipient OK (not on the allowlist: captured only)",
                )
            }
        }
    }

    pub async fn data(self, info: &SessionInfo, message: &[u8]) -> Reply {
        let SandboxTx {
            rule,
            live,
            capture,
            from,
            all,
            relayed,
            ..
        } = self;
        let mut notes: Vec<(&str, String)> = Vec::new();
        let mut relay_reply = None;
        match live {
            Some(tx) if !relayed.is_empty() => {
                let body = match &rule {
                    SandboxRoute::Redirect(_) => {
                        let original: Vec<&str> = all.iter().map(Path::as_str).collect();
                        let mut b = format!(
                            "X-Postern-Original-To: {}\r\n",
                            crate::text::sanitize(&original.join(", "), 4000)
                        )
                        .into_bytes();
                        b.extend_from_slice(message);
                        b
                    }
                    SandboxRoute::Allowlist(_) => message.to_vec(),
                };
                let r = Box::pin(tx.data(info, &body)).await;
                if !r.is_positive() {
                    tracing::info!(reply = %r, "sandbox route: the relay refused the message; nothing captured");
                    return r;
                }
                relay_reply = Some(r);
            }
            Some(tx) => tx.abort(),
            None => {}
        }
        let relayed_to: Vec<&str> = relayed.iter().map(Path::as_str).collect();
        notes.push((
            "Route",
            match &rule {
                SandboxRoute::Redirect(_) => "redirect".to_owned(),
                SandboxRoute::Allowlist(_) => "allowlist".to_owned(),
            },
        ));
        if !relayed_to.is_empty() {
            notes.push(("Relayed-To", relayed_to.join(", ")));
        }
        let env = capture::Envelope {
            user: &info.user,
            inbox: &info.inbox,
            mail_from: &from,
            rcpts: &all,
            helo: &info.helo,
            peer: info.peer,
            notes: &notes,
        };
        let captured = capture.store(&env, message).await;
        match (relay_reply, captured) {
            (Some(r), Ok(id)) => Reply::new(
                250,
                "2.0.0",
                format!(
                    "Ok: relayed to {} ({}); captured as {id}",
                    relayed_to.join(", "),
                    crate::text::sanitize(&r.text(), 200)
                ),
            ),
            (Some(r), Err(e)) => {
                // Relayed already: a refusal now would make the client send it again.
                tracing::error!(error = %e, "sandbox route: relayed, but the captured copy could not be stored");
                r
            }
            (None, Ok(id)) => Reply::new(250, "2.0.0", format!("Ok: captured as {id}")),
            (None, Err(e)) => {
                tracing::error!(error = %e, "capture failed");
                Reply::new(451, "4.3.0", "Could not store the message; try again later")
            }
        }
    }

    pub fn abort(self) {
        if let Some(tx) = self.live {
            tx.abort();
        }
    }
}
