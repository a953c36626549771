//! The queue's delivery workers: they take due messages from the durable
//! queue in order and send them through the same route a session would
//! (account or pool: quotas, pacing, ramp, failover, From policy, the
//! connection cap all apply).
//!
//! What a delivery comes to, per recipient: delivered (the message leaves
//! the queue when every recipient has it), refused for now (back in the
//! queue after the next wait of `[queue] retry`, or until the pool or
//! account said it has room again — that does not count as an attempt, and
//! the route's other messages wait too instead of spinning), or refused for
//! good (an RFC 3464 report goes to the sender, queued on the same route).
//! A message still undelivered `max_queue_age` after it arrived is
//! reported and dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Bounce, Config, QueueConfig, SendVia};
use crate::queue::dsn::{self, Failed};
use crate::queue::{Claimed, NewMessage, Params, Queue, QueueId};
use crate::smtp::codec::{Body, MailParams, Path, Reply};
use crate::smtp::route::{Router, SessionInfo};

/// How long the workers sleep at most without being woken (so a
/// `postern queue retry` from another process is seen soon).
const POLL: Duration = Duration::from_secs(2);

/// The delivery workers of one queue.
pub struct Workers {
    /// What the config decides; a reload swaps it, a delivery in flight
    /// keeps the one it started with.
    settings: ArcSwap<Settings>,
    queue: Arc<Queue>,
    /// Routes that said they have no room, until when.
    held: Mutex<HashMap<String, Timestamp>>,
    slots: Arc<Semaphore>,
}

/// The part of the workers that comes from the config.
struct Settings {
    router: Arc<Router>,
    cfg: QueueConfig,
    hostname: String,
    /// Each user's `bounce`, when it has one.
    bounces: BTreeMap<String, Bounce>,
}

impl Settings {
    fn new(config: &Config, router: Arc<Router>) -> Settings {
        Settings {
            router,
            cfg: config.queue.clone(),
            hostname: config.hostname.clone(),
            bounces: config
                .users
                .values()
                .filter_map(|u| u.bounce.clone().map(|b| (u.name.clone(), b)))
                .collect(),
        }
    }
}

/// What happened to one recipient.
enum Fate {
    Delivered,
    Later(String),
    Failed(String),
}

fn ms(d: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

impl Workers {
    pub fn new(config: &Config, router: Arc<Router>, queue: Arc<Queue>) -> Arc<Workers> {
        Arc::new(Workers {
            settings: ArcSwap::from_pointee(Settings::new(config, router)),
            queue,
            held: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(config.queue.workers)),
        })
    }

    /// Deliver until `shutdown`; deliveries in flight then get up to
    /// `grace` to finish (what is cut off is found in flight at the next
    /// start and retried, marked as possibly delivered twice).
    /// Deliveries that start from now on use `config` and `router` (the
    /// number of workers stays as started).
    pub fn reload(&self, config: &Config, router: Arc<Router>) {
        self.settings.store(Arc::new(Settings::new(config, router)));
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let mut tasks = tokio::task::JoinSet::new();
        // Handed to a worker and not finished: not to be handed out again.
        let taken: Arc<Mutex<HashSet<QueueId>>> = Arc::default();
        loop {
            let wake = self.queue.wake().notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let now = Timestamp::now();
            let skip = self.held_routes(now);
            let free = self.slots.available_permits();
            let mut found = 0;
            if free > 0 {
                let busy: Vec<QueueId> = taken
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .copied()
                    .collect();
                match self.queue.due(now, free, skip, busy).await {
                    Ok(batch) => {
                        found = batch.len();
                        for m in batch {
                            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                                return;
                            };
                            let id = m.entry.id;
                            taken
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(id);
                            let (me, taken) = (self.clone(), taken.clone());
                            tasks.spawn(async move {
                                // Marked in flight on disk first; the
                                // workers starting together share an fsync.
                                match me.queue.start(id, Timestamp::now()).await {
                                    Ok(true) => me.deliver(m).await,
                                    Ok(false) => {}
                                    Err(e) => warn!(queue_id = %id, error = %e, "queue: could not start a delivery"),
                                }
                                taken.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => warn!(error = %e, "queue: could not read due messages"),
                }
            }
            while tasks.try_join_next().is_some() {}
            if found > 0 && found == free {
                continue;
            }
            // All workers busy: a finished one wakes the loop; else sleep
            // until the next message is due.
            let sleep = if self.slots.available_permits() == 0 {
                POLL
            } else {
                self.sleep_until(now).await
            };
            tokio::select! {
                _ = &mut wake => {}
                _ = tokio::time::sleep(sleep) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if !tasks.is_empty() {
            info!(
                in_flight = tasks.len(),
                "queue: waiting for deliveries in flight"
            );
            let _ =
                tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                    .await;
        }
    }

    /// How long to sleep: until the next message is due or a held route
    /// frees, at most [`POLL`].
    async fn sleep_until(&self, now: Timestamp) -> Duration {
        let next = self
            .queue
            .next_due(self.held_routes(now))
            .await
            .ok()
            .flatten();
        let held = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .min()
            .copied();
        [next, held]
            .into_iter()
            .flatten()
            .map(|t| (t - now).try_into().unwrap_or(Duration::ZERO))
            .min()
            .unwrap_or(POLL)
            .clamp(Duration::from_millis(10), POLL)
    }

    fn held_routes(&self, now: Timestamp) -> Vec<String> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, until| *until > now);
        held.keys().cloned().collect()
    }

    fn hold(&self, route: &str, until: Timestamp) {
        info!(route, until = %until, "queue: route has no room; holding its messages until then");
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(route.to_owned(), until);
    }

    /// One delivery attempt of `m`.
    async fn deliver(&self, m: Claimed) {
        let id = m.entry.id;
        let live = self.settings.load_full();
        let now = Timestamp::now();
        let age: Duration = (now - m.entry.received)
            .try_into()
            .unwrap_or(Duration::ZERO);
        if age > live.cfg.max_queue_age {
            let why = format!(
                "not delivered within max_queue_age ({}); last error: {}",
                humantime::format_duration(live.cfg.max_queue_age),
                m.entry.last_error.as_deref().unwrap_or("none")
            );
            let failed: Vec<Failed> = m
                .entry
                .rcpts
                .iter()
                .map(|r| Failed {
                    rcpt: r.clone(),
                    status: "4.4.7".into(),
                    diagnostic: why.clone(),
                })
                .collect();
            warn!(queue_id = %id, "queue: message expired");
            self.bounce(&m, &failed).await;
            self.finish_remove(id, "expired", why).await;
            return;
        }
        let via = SendVia::from_key(&m.entry.route);
        let Some(route) = live.router.route(&via) else {
            let why = format!(
                "route {} is not configured or has no usable account",
                m.entry.route
            );
            self.later(&m, m.entry.rcpts.clone(), why, None).await;
            return;
        };
        let info = SessionInfo {
            user: m.entry.user.clone(),
            inbox: m.entry.user.clone(),
            helo: m.helo.clone(),
            peer: m
                .peer
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            queued: Default::default(),
        };
        let from = Path::new(m.entry.mail_from.clone());
        let params = mail_params(&m.params);
        let mut tx = match route.open(&info, &from, &params).await {
            Ok((tx, _)) => tx,
            Err(refused) if refused.reply.is_transient() => {
                let why = refused.reply.to_string();
                if let Some(t) = refused.retry_at {
                    self.hold(&m.entry.route, t);
                }
                self.later(&m, m.entry.rcpts.clone(), why, refused.retry_at)
                    .await;
                return;
            }
            Err(refused) => {
                let why = refused.reply.to_string();
                let failed = failed_all(&m.entry.rcpts, &refused.reply);
                self.bounce(&m, &failed).await;
                self.finish_remove(id, "bounced", why).await;
                return;
            }
        };
        let mut fates = Vec::with_capacity(m.entry.rcpts.len());
        let mut accepted = 0;
        for r in &m.entry.rcpts {
            let reply = tx.rcpt_for(&info, &Path::new(r.clone())).await;
            fates.push(if reply.is_positive() {
                accepted += 1;
                Fate::Delivered
            } else if reply.is_transient() {
                Fate::Later(reply.to_string())
            } else {
                Fate::Failed(reply.to_string())
            });
        }
        let room_at = tx.retry_at();
        if accepted == 0 {
            tx.abort();
        } else {
            let reply = tx.data(&info, &m.body).await;
            if !reply.is_positive() {
                let text = reply.to_string();
                for f in fates.iter_mut() {
                    if matches!(f, Fate::Delivered) {
                        *f = if reply.is_transient() {
                            Fate::Later(text.clone())
                        } else {
                            Fate::Failed(text.clone())
                        };
                    }
                }
            } else {
                crate::metrics::METRICS.queue_done(&m.entry.route, "delivered", accepted);
                info!(queue_id = %id, route = %m.entry.route, rcpts = accepted, size = m.body.len(),
                    attempts = m.entry.attempts + 1, reply = %reply, "queue: delivered");
            }
        }
        let mut later = Vec::new();
        let mut failed = Vec::new();
        let mut last = None;
        for (r, f) in m.entry.rcpts.iter().zip(fates) {
            match f {
                Fate::Delivered => {}
                Fate::Later(why) => {
                    later.push(r.clone());
                    last = Some(why);
                }
                Fate::Failed(why) => failed.push(Failed {
                    rcpt: r.clone(),
                    status: dsn::status_of(&why),
                    diagnostic: why,
                }),
            }
        }
        if !failed.is_empty() {
            self.bounce(&m, &failed).await;
        }
        if !later.is_empty() {
            if let Some(t) = room_at {
                self.hold(&m.entry.route, t);
            }
            self.later(&m, later, last.unwrap_or_default(), room_at)
                .await;
        } else if failed.is_empty() {
            if let Err(e) = self
                .queue
                .delivered(id, Timestamp::now(), "delivered".into())
            {
                warn!(queue_id = %id, error = %e, "queue: could not record the delivery");
            }
        } else {
            let text = failed
                .iter()
                .map(|f| format!("<{}>: {}", f.rcpt, f.diagnostic))
                .collect::<Vec<_>>()
                .join("; ");
            self.finish_remove(id, "bounced", text).await;
        }
    }

    /// Back to the queue for `rcpts`: at `room_at` (no attempt counted) or
    /// after the next wait of the retry schedule.
    async fn later(
        &self,
        m: &Claimed,
        rcpts: Vec<String>,
        why: String,
        room_at: Option<Timestamp>,
    ) {
        let now = Timestamp::now();
        let (next, attempt) = match room_at {
            Some(t) if t > now => (t, false),
            _ => (
                now.checked_add(ms(self.settings.load().cfg.backoff(m.entry.attempts + 1)))
                    .unwrap_or(now),
                true,
            ),
        };
        info!(queue_id = %m.entry.id, route = %m.entry.route, rcpts = rcpts.len(), next_try = %next,
            reason = %crate::text::sanitize(&why, 300), "queue: deferred");
        if let Err(e) = self
            .queue
            .defer(m.entry.id, rcpts, next, why, attempt, now)
            .await
        {
            warn!(queue_id = %m.entry.id, error = %e, "queue: could not defer a message (it stays in flight until the next start)");
        }
    }

    async fn finish_remove(&self, id: QueueId, kind: &'static str, text: String) {
        if let Err(e) = self.queue.remove(id, kind, text, Timestamp::now()).await {
            warn!(queue_id = %id, error = %e, "queue: could not remove a message");
        }
    }

    /// Queue a delivery report for `failed` on the message's route, to the
    /// sender (or the configured address); none for a report itself.
    async fn bounce(&self, m: &Claimed, failed: &[Failed]) {
        // Expired (4.4.7) or refused for good: either way someone is told.
        let expired = failed.iter().all(|f| f.status == "4.4.7");
        crate::metrics::METRICS.queue_done(
            &m.entry.route,
            if expired { "expired" } else { "bounced" },
            failed.len(),
        );
        crate::events::emit(
            if expired { "expired" } else { "bounced" },
            serde_json::json!({
                "queue_id": m.entry.id.to_string(),
                "user": m.entry.user,
                "route": m.entry.route,
                "attempts": m.entry.attempts,
                "recipients": failed.iter().map(|f| serde_json::json!({
                    "rcpt": f.rcpt,
                    "status": f.status,
                    "diagnostic": crate::text::sanitize(&f.diagnostic, 300),
                })).collect::<Vec<_>>(),
            }),
        );
        let live = self.settings.load_full();
        let target = match live.bounces.get(&m.entry.user).unwrap_or(&live.cfg.bounce) {
            Bounce::None => None,
            Bounce::Sender => Some(m.entry.mail_from.clone()).filter(|s| !s.is_empty()),
            Bounce::Address(a) => Some(a.clone()),
        };
        for f in failed {
            warn!(queue_id = %m.entry.id, rcpt = %f.rcpt, status = %f.status,
                diagnostic = %crate::text::sanitize(&f.diagnostic, 300), "queue: recipient failed for good");
        }
        let Some(to) = target else { return };
        let via = SendVia::from_key(&m.entry.route);
        let address = live
            .router
            .route_address(&via)
            .unwrap_or_else(|| format!("postmaster@{}", live.hostname));
        let from = format!("\"Mail Delivery System\" <{address}>");
        let now = Timestamp::now();
        let body = dsn::build(&dsn::Report {
            reporting_mta: &live.hostname,
            from: &from,
            to: &to,
            queue_id: &m.entry.id.to_string(),
            arrival: m.entry.received,
            now,
            failed,
            original: &m.body,
        });
        let report = NewMessage {
            user: m.entry.user.clone(),
            route: m.entry.route.clone(),
            mail_from: String::new(),
            params: Params {
                size: Some(body.len() as u64),
                eight_bit: true,
                smtputf8: false,
            },
            rcpts: vec![to.clone()],
            helo: live.hostname.clone(),
            peer: "127.0.0.1:0".into(),
            body,
        };
        match self.queue.enqueue(report, now).await {
            Ok(id) => {
                info!(queue_id = %m.entry.id, report = %id, to = %to, "queue: delivery report queued")
            }
            Err(e) => {
                warn!(queue_id = %m.entry.id, error = %e, "queue: could not queue a delivery report")
            }
        }
    }
}

fn mail_params(p: &Params) -> MailParams {
    MailParams {
        size: p.size,
        body: p.eight_bit.then_some(Body::EightBitMime),
        smtputf8: p.smtputf8,
    }
}

fn failed_all(rcpts: &[String], reply: &Reply) -> Vec<Failed> {
    let text = reply.to_string();
    rcpts
        .iter()
        .map(|r| Failed {
            rcpt: r.clone(),
            status: dsn::status_of(&text),
            diagnostic: text.clone(),
        })
        .collect()
}
