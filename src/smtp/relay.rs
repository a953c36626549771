//! Relay transactions with quota accounting: a single account (every send
//! counts against its window) and a sending pool (pick a mailbox at MAIL
//! FROM, reserve a unit per RCPT, fail over by replaying the whole
//! transaction on another mailbox, rewrite the sender as configured).
//!
//! The pool module decides *which* mailbox and keeps the counters; this
//! module speaks SMTP to the chosen one and turns outcomes into replies.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use tracing::{info, warn};

use crate::config::FromPolicy;
use crate::pool::{Pick, PoolError, Pools, Reservation, Reserve};
use crate::smtp::codec::{MailParams, Path, Reply};
use crate::smtp::upstream::{AccountRelay, Outcome, RelayTransaction, Verdict};

fn now() -> Timestamp {
    Timestamp::now()
}

fn store_trouble(e: PoolError) -> Reply {
    warn!(error = %e, "quota store failed");
    if e.is_store_lost() {
        return Reply::new(
            451,
            "4.3.0",
            "Quota store lost its counters (Redis restarted empty); sending is paused until the operator runs `postern quota accept-reset`; try again later",
        );
    }
    Reply::new(451, "4.3.0", "Quota store unavailable; try again later")
}

/// Park or note a mailbox after a refusal, by kind of refusal.
async fn note_failure(pools: &Pools, account: &str, o: &Outcome) {
    let t = now();
    let r = match o.verdict {
        Verdict::Quota => pools.quota_refused(account, &o.detail, t).await.map(|_| ()),
        Verdict::Throttled => pools.throttled(account, &o.detail, t).await.map(|_| ()),
        Verdict::Auth => pools.auth_failed(account, &o.detail, t).await.map(|_| ()),
        Verdict::Accepted => Ok(()),
        // TooManyConnections is a connection-count signal, not a fault of
        // the mailbox: parking it would turn one burst into an hour without
        // mail. It is only noted, like any other failure.
        _ => pools.record_error(account, &o.detail, t).await,
    };
    if let Err(e) = r {
        warn!(account, error = %e, "could not record a mailbox failure");
    }
}

/// The upstream accepted the message: mark its units sent.
async fn commit(pools: &Pools, reservations: &[Reservation], t: Timestamp) {
    match pools.commit(reservations, t).await {
        Ok(()) => {}
        Err(e) if e.is_store_lost() => {
            warn!(error = %e, "message sent, but the quota store lost its state meanwhile: it is not counted there")
        }
        Err(e) => {
            warn!(error = %e, "could not mark the units sent (they stay counted as reserved)")
        }
    }
}

/// Release reservations, in the background when the caller cannot wait.
fn release_later(pools: &Arc<Pools>, res: Vec<Reservation>) {
    if res.is_empty() {
        return;
    }
    let pools = pools.clone();
    tokio::spawn(async move {
        if let Err(e) = pools.release(&res, now()).await {
            warn!(error = %e, "could not release reservations");
        }
    });
}

/// A refusal for the client, and when trying again makes sense (a pool out
/// of capacity knows when it returns; the queue holds its messages until then).
#[derive(Debug, Clone)]
pub struct Refused {
    pub reply: Reply,
    pub retry_at: Option<Timestamp>,
}

impl From<Reply> for Refused {
    fn from(reply: Reply) -> Refused {
        Refused {
            reply,
            retry_at: None,
        }
    }
}

/// The 452 for a recipient that does not fit in the window.
fn no_room(account: &str, room_at: Option<Timestamp>) -> Reply {
    let when = room_at
        .map(|t| format!("; room again at {t:.0}"))
        .unwrap_or_default();
    Reply::new(
        452,
        "4.5.3",
        format!("Mailbox {account} has no room for more recipients in its daily window{when}; send the rest in another transaction"),
    )
}

// ---------------------------------------------------------------------------
// A single account
// ---------------------------------------------------------------------------

/// A transaction on one account (`send_via = "ACCOUNT"`), counted against the
/// account's window.
pub struct DirectTransaction {
    tx: RelayTransaction,
    pools: Arc<Pools>,
    reservations: Vec<Reservation>,
    /// The first recipient's unit, reserved while MAIL FROM went upstream
    /// (a transaction has at least one recipient): the first RCPT then
    /// waits only for the upstream, as a direct client would.
    ahead: Option<Result<Reserve, PoolError>>,
    /// When a recipient refused for want of room would fit.
    room_at: Option<Timestamp>,
}

impl std::fmt::Debug for DirectTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectTransaction")
            .field("tx", &self.tx)
            .finish()
    }
}

impl DirectTransaction {
    pub async fn open(
        relay: Arc<AccountRelay>,
        pools: Arc<Pools>,
        from: &Path,
        params: &MailParams,
    ) -> Result<(DirectTransaction, Reply), Refused> {
        let account = relay.cfg.account.clone();
        let (opened, ahead) = tokio::join!(
            RelayTransaction::open(relay, from, params),
            pools.reserve(&account, 1, now())
        );
        match opened {
            Ok((tx, o)) => Ok((
                DirectTransaction {
                    tx,
                    pools,
                    reservations: Vec::new(),
                    ahead: Some(ahead),
                    room_at: None,
                },
                o.reply,
            )),
            Err(o) => {
                if let Ok(Reserve::Reserved(r)) = ahead {
                    release_later(&pools, vec![r]);
                }
                note_failure(&pools, &account, &o).await;
                Err(o.reply.into())
            }
        }
    }

    pub async fn rcpt(&mut self, to: &Path) -> Reply {
        let account = self.tx.account().to_owned();
        let reserved = match self.ahead.take() {
            Some(r) => r,
            None => self.pools.reserve(&account, 1, now()).await,
        };
        let res = match reserved {
            Ok(Reserve::Reserved(r)) => r,
            Ok(Reserve::Full(f)) => {
                self.room_at = f.room_at;
                return no_room(&account, f.room_at);
            }
            Err(e) => return store_trouble(e),
        };
        let o = self.tx.rcpt(to).await;
        if o.accepted() {
            self.reservations.push(res);
        } else if let Err(e) = self.pools.release(&[res], now()).await {
            warn!(error = %e, "could not release a reservation");
        }
        o.reply
    }

    pub async fn data(self, message: &[u8]) -> Reply {
        let DirectTransaction {
            tx,
            pools,
            reservations,
            ahead,
            ..
        } = self;
        if let Some(Ok(Reserve::Reserved(r))) = ahead {
            release_later(&pools, vec![r]);
        }
        let account = tx.account().to_owned();
        let o = tx.data(message).await;
        let t = now();
        if o.accepted() {
            commit(&pools, &reservations, t).await;
        } else {
            if let Err(e) = pools.release(&reservations, t).await {
                warn!(error = %e, "could not release reservations");
            }
            note_failure(&pools, &account, &o).await;
        }
        o.reply
    }

    /// When a recipient refused for want of room would fit.
    pub fn retry_at(&self) -> Option<Timestamp> {
        self.room_at
    }

    pub fn abort(mut self) {
        if let Some(Ok(Reserve::Reserved(r))) = self.ahead.take() {
            self.reservations.push(r);
        }
        release_later(&self.pools, self.reservations);
        self.tx.abort();
    }
}

// ---------------------------------------------------------------------------
// A pool
// ---------------------------------------------------------------------------

/// One `[pools.NAME]`: its mailboxes and policies.
#[derive(Debug)]
pub struct PoolRoute {
    pub name: String,
    pub pools: Arc<Pools>,
    pub members: BTreeMap<String, Arc<AccountRelay>>,
    pub from_policy: FromPolicy,
    pub trace_header: bool,
}

impl PoolRoute {
    fn addresses(&self) -> Vec<String> {
        self.members
            .values()
            .map(|r| r.cfg.email.to_ascii_lowercase())
            .collect()
    }

    fn is_pool_address(&self, addr: &str) -> bool {
        self.addresses()
            .iter()
            .any(|a| a.eq_ignore_ascii_case(addr))
    }

    fn exhausted(&self, at: Option<Timestamp>, last: Option<&Outcome>) -> Reply {
        let when = match at {
            Some(t) => format!("capacity returns at {t:.0}"),
            None => "no mailbox can take this many recipients; send fewer per message".to_owned(),
        };
        let last = last
            .map(|o| format!(" (last refusal: {})", crate::text::sanitize(&o.detail, 160)))
            .unwrap_or_default();
        Reply::new(
            451,
            "4.4.5",
            format!(
                "Pool {} is at its sending limits; {when}; try again later{last}",
                self.name
            ),
        )
    }

    /// `from_policy = "require-match"`: the sender must be one of the pool's
    /// addresses.
    pub fn check_sender(&self, from: &Path) -> Result<(), Reply> {
        if self.from_policy == FromPolicy::RequireMatch && !self.is_pool_address(from.as_str()) {
            return Err(Reply::new(
                550,
                "5.7.1",
                format!(
                    "Sender {from} is not one of pool {}'s addresses ({}); send from one of them",
                    self.name,
                    self.addresses().join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The envelope sender on a mailbox, per `from_policy`.
    fn envelope_from(&self, account: &str, from: &Path) -> Path {
        match self.from_policy {
            FromPolicy::Rewrite => Path::new(self.members[account].cfg.email.clone()),
            _ => from.clone(),
        }
    }
}

struct Current {
    account: String,
    tx: RelayTransaction,
}

/// A transaction on a pool: the mailbox may change (failover) until the
/// message is accepted.
pub struct PoolTransaction {
    route: Arc<PoolRoute>,
    from: Path,
    params: MailParams,
    current: Option<Current>,
    accepted: Vec<Path>,
    reservations: Vec<Reservation>,
    tried: Vec<String>,
    /// When the pool has room again, once it said it had none.
    retry_at: Option<Timestamp>,
}

impl std::fmt::Debug for PoolTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolTransaction")
            .field("pool", &self.route.name)
            .field(
                "account",
                &self.current.as_ref().map(|c| c.account.as_str()),
            )
            .field("tried", &self.tried)
            .finish()
    }
}

impl PoolTransaction {
    /// MAIL FROM: choose a mailbox (failing over while MAIL is refused).
    pub async fn open(
        route: Arc<PoolRoute>,
        from: &Path,
        params: &MailParams,
    ) -> Result<(PoolTransaction, Reply), Refused> {
        route.check_sender(from)?;
        let mut t = PoolTransaction {
            route,
            from: from.clone(),
            params: params.clone(),
            current: None,
            accepted: Vec::new(),
            reservations: Vec::new(),
            tried: Vec::new(),
            retry_at: None,
        };
        match t.switch(0).await {
            Ok(()) => {
                let account = t
                    .current
                    .as_ref()
                    .map(|c| c.account.clone())
                    .unwrap_or_default();
                let reply = Reply::new(
                    250,
                    "2.1.0",
                    format!("Sender OK (pool {}, account {account})", t.route.name),
                );
                Ok((t, reply))
            }
            Err(r) => Err(Refused {
                reply: r,
                retry_at: t.retry_at,
            }),
        }
    }

    /// Move the transaction to a new mailbox with room for `k` recipients,
    /// replaying MAIL and the accepted recipients there. `Err`: the reply
    /// for the client (the pool is exhausted, the replay was refused, or the
    /// store failed).
    async fn switch(&mut self, k: u32) -> Result<(), Reply> {
        let route = self.route.clone();
        let mut last: Option<Outcome> = None;
        loop {
            let t = now();
            let picked = match route
                .pools
                .pick(&route.name, k.max(1), &self.tried, t)
                .await
            {
                Ok(Pick::Picked(p)) => p,
                Ok(Pick::Exhausted(e)) => {
                    let skipped: Vec<String> = e
                        .skipped
                        .iter()
                        .map(|s| format!("{}: {}", s.account, s.why))
                        .collect();
                    info!(pool = %route.name, need = k, skipped = %skipped.join("; "), capacity_returns_at = ?e.capacity_returns_at.map(|t| t.to_string()), "pool exhausted");
                    self.retry_at = e.capacity_returns_at;
                    return Err(route.exhausted(e.capacity_returns_at, last.as_ref()));
                }
                Err(e) => return Err(store_trouble(e)),
            };
            let account = picked.account.clone();
            let skipped: Vec<String> = picked
                .skipped
                .iter()
                .map(|s| format!("{}: {}", s.account, s.why))
                .collect();
            info!(
                pool = %route.name,
                account = %account,
                remaining = picked.remaining(),
                limit = picked.limit.value,
                skipped = %skipped.join("; "),
                replaying = k,
                "pool route"
            );
            self.tried.push(account.clone());
            let Some(relay) = route.members.get(&account).cloned() else {
                // In the rotation but not usable here (no credential source).
                warn!(pool = %route.name, account = %account, "picked mailbox has no usable credential; skipping it");
                continue;
            };
            // Reserve the replayed recipients all at once.
            let mut res = Vec::new();
            if k > 0 {
                match route.pools.reserve(&account, k, t).await {
                    Ok(Reserve::Reserved(r)) => res.push(r),
                    Ok(Reserve::Full(_)) => continue, // another process won the race
                    Err(e) => return Err(store_trouble(e)),
                }
            }
            let from = route.envelope_from(&account, &self.from);
            match RelayTransaction::open_with(relay, &from, &self.params, &self.accepted).await {
                Ok((tx, _mail, rcpts)) => {
                    if let Some(bad) = rcpts.iter().position(|o| !o.accepted()) {
                        let o = &rcpts[bad];
                        warn!(pool = %route.name, account = %account, rcpt = %self.accepted[bad], reply = %o.detail, "replay refused a recipient");
                        let _ = route.pools.release(&res, now()).await;
                        tx.abort();
                        note_failure(&route.pools, &account, o).await;
                        return Err(Reply::new(
                            451,
                            "4.4.5",
                            format!(
                                "Pool {}: mailbox {account} refused recipient {} on failover ({}); message not sent, try again",
                                route.name,
                                self.accepted[bad],
                                crate::text::sanitize(&o.detail, 160)
                            ),
                        ));
                    }
                    self.reservations = res;
                    self.current = Some(Current { account, tx });
                    return Ok(());
                }
                Err(o) => {
                    let _ = route.pools.release(&res, now()).await;
                    note_failure(&route.pools, &account, &o).await;
                    if self.route.from_policy == FromPolicy::Keep
                        && matches!(o.verdict, Verdict::Permanent | Verdict::SenderDenied)
                        && k == 0
                    {
                        // The client's own sender is refused: another mailbox would refuse it too.
                        return Err(o.reply);
                    }
                    last = Some(o);
                }
            }
        }
    }

    pub async fn rcpt(&mut self, to: &Path) -> Reply {
        let Some(cur) = self.current.as_mut() else {
            return Reply::new(
                451,
                "4.4.5",
                format!(
                    "Pool {}: no mailbox available for this transaction",
                    self.route.name
                ),
            );
        };
        let account = cur.account.clone();
        let pools = self.route.pools.clone();
        let res = match pools.reserve(&account, 1, now()).await {
            Ok(Reserve::Reserved(r)) => r,
            Ok(Reserve::Full(f)) => {
                self.retry_at = f.room_at;
                return no_room(&account, f.room_at);
            }
            Err(e) => return store_trouble(e),
        };
        let o = cur.tx.rcpt(to).await;
        if o.accepted() {
            self.reservations.push(res);
            self.accepted.push(to.clone());
            return Reply::new(
                250,
                "2.1.5",
                format!("Recipient OK (pool {}, account {account})", self.route.name),
            );
        }
        let _ = pools.release(&[res], now()).await;
        match o.verdict {
            Verdict::Quota | Verdict::Throttled | Verdict::Auth | Verdict::Busy => {
                // The mailbox is out, not the recipient: move the whole
                // transaction (with this recipient) elsewhere.
                note_failure(&pools, &account, &o).await;
                let old = self.current.take();
                let old_res = std::mem::take(&mut self.reservations);
                let _ = pools.release(&old_res, now()).await;
                if let Some(c) = old {
                    c.tx.abort();
                }
                self.accepted.push(to.clone());
                let k = self.accepted.len() as u32;
                match self.switch(k).await {
                    Ok(()) => {
                        let account = self
                            .current
                            .as_ref()
                            .map(|c| c.account.clone())
                            .unwrap_or_default();
                        Reply::new(
                            250,
                            "2.1.5",
                            format!("Recipient OK (pool {}, account {account})", self.route.name),
                        )
                    }
                    Err(r) => {
                        self.accepted.pop();
                        r
                    }
                }
            }
            _ => o.reply,
        }
    }

    /// The message as sent through `account`: From rewritten per policy,
    /// and the route trace header when configured.
    fn message_for(&self, account: &str, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.route.trace_header {
            let tried = self
                .tried
                .iter()
                .filter(|a| a.as_str() != account)
                .cloned()
                .collect::<Vec<_>>();
            let mut h = format!(
                "X-Postern-Route: pool={}; account={account}",
                self.route.name
            );
            if !tried.is_empty() {
                h.push_str(&format!("; failed-over-from={}", tried.join(",")));
            }
            h.push_str("\r\n");
            out.extend_from_slice(h.as_bytes());
        }
        match self.route.from_policy {
            FromPolicy::Rewrite => out.extend_from_slice(&crate::rewrite::rewrite_from(
                message,
                &self.route.members[account].cfg.email,
            )),
            _ => out.extend_from_slice(message),
        }
        out
    }

    pub async fn data(mut self, message: &[u8]) -> Reply {
        if self.route.from_policy == FromPolicy::RequireMatch {
            let h = crate::rewrite::headers(message);
            let from = h.from.and_then(|f| f.address).unwrap_or_default();
            if !self.route.is_pool_address(&from) {
                let pools = self.route.pools.clone();
                let _ = pools.release(&self.reservations, now()).await;
                if let Some(c) = self.current.take() {
                    c.tx.abort();
                }
                return Reply::new(
                    550,
                    "5.7.1",
                    format!(
                        "The From header <{from}> is not one of pool {}'s addresses ({})",
                        self.route.name,
                        self.route.addresses().join(", ")
                    ),
                );
            }
        }
        let pools = self.route.pools.clone();
        loop {
            let Some(cur) = self.current.take() else {
                return Reply::new(
                    451,
                    "4.4.5",
                    format!("Pool {}: no mailbox available", self.route.name),
                );
            };
            let body = self.message_for(&cur.account, message);
            let account = cur.account.clone();
            let o = cur.tx.data(&body).await;
            let t = now();
            let res = std::mem::take(&mut self.reservations);
            if o.accepted() {
                commit(&pools, &res, t).await;
                return o.reply;
            }
            let _ = pools.release(&res, t).await;
            note_failure(&pools, &account, &o).await;
            if matches!(o.verdict, Verdict::Permanent) {
                // A refusal of the message itself (content, size): another
                // mailbox would refuse it too.
                return o.reply;
            }
            info!(pool = %self.route.name, account = %account, verdict = ?o.verdict, reply = %o.detail, "failing over");
            let k = self.accepted.len() as u32;
            match self.switch(k).await {
                Ok(()) => continue,
                Err(r) => return r,
            }
        }
    }

    /// When the pool has room again, once it said it had none.
    pub fn retry_at(&self) -> Option<Timestamp> {
        self.retry_at
    }

    pub fn abort(self) {
        release_later(&self.route.pools, self.reservations);
        if let Some(c) = self.current {
            c.tx.abort();
        }
    }
}
