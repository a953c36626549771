//! Sending pools: mailbox rotation, durable daily quotas, pacing,
//! parking and observed ceilings. Knows nothing of SMTP or IMAP: the SMTP
//! route calls in here and maps the answers to replies.
//!
//! # Model
//!
//! - **Units are recipients.** Each accepted RCPT reserves one unit on the
//!   mailbox the transaction runs on. A reservation is durable the moment
//!   [`Pools::reserve`] returns: after a crash it still counts (over-counting
//!   is the safe side). [`Pools::commit`] marks units sent (the upstream
//!   accepted the message); [`Pools::release`] drops them (the upstream
//!   refused it). A reservation that is neither stays counted.
//! - **Windows.** Rolling 24 hours (units with a timestamp after `now − 24h`
//!   count) or a calendar day in the account's `time_zone` (units since local
//!   midnight count).
//! - **Effective limit** = min(daily limit, ramp for today = `start + step ×
//!   whole days since the first committed send`, observed ceiling if recorded
//!   in the last 7 days). [`Limit::source`] says which one binds.
//! - **Pacing.** When a mailbox is picked it is not eligible again until
//!   `now + min_interval + uniform(0..=jitter)`. The claim is atomic in the
//!   store, so processes sharing Redis share pacing.
//! - **Parking.** A parked mailbox is skipped until its `until`: quota replies
//!   until the window frees, throttles on the 1/5/15/60-minute ladder
//!   (consecutive throttles; a commit resets the count), auth failures until
//!   [`Pools::unpark`] (the credential changed, or `postern auth`).
//! - **Stores.** [`Store::open`] picks SQLite in `data_dir/state.sqlite3`
//!   (WAL, `BEGIN IMMEDIATE` per write) or Redis (`quota_store`, one Lua
//!   script per reserve) so N processes never exceed a limit together.
//! - **Clock.** Every call takes `now: jiff::Timestamp`; nothing reads the
//!   clock inside this module (pass `jiff::Timestamp::now()` in production).
//!
//! # How the SMTP route uses it
//!
//! ```text
//! startup      let pools = Arc::new(Pools::new(&config, Store::open(&config).await?)?);
//!              pools.unpark(account, Some(ParkKind::Auth)) when a credential changed
//! MAIL FROM    pools.pick("outreach", 1, &[], now)
//!                Pick::Picked(p)    → open upstream on p.account
//!                Pick::Exhausted(e) → 451 4.4.5 … capacity returns at e.capacity_returns_at
//! each RCPT    pools.reserve(account, 1, now)
//!                Reserve::Reserved(r) → relay RCPT; keep r (release it if the upstream refuses that RCPT)
//!                Reserve::Full(_)     → 452 4.5.3 (send the rest in another transaction)
//! end of DATA  accepted → pools.commit(&reservations, now)
//!              refused  → pools.release(&reservations, now), then by kind of reply:
//!                quota    → pools.quota_refused(account, text, now)  (parks; may record a ceiling)
//!                throttle → pools.throttled(account, text, now)      (parks on the ladder)
//!                auth     → pools.auth_failed(account, text, now)    (parks until unpark)
//!                other    → pools.record_error(account, text, now)
//! failover     k = accepted recipients; tried = mailboxes tried so far
//!              pools.pick(pool, k, &tried, now) → Picked: pools.reserve(new, k, now)
//!                (Full after all — another process won the race: add it to tried, pick again)
//! status       pools.status(now) → Status (Display for text, Serialize for --json)
//! direct sends through an account (no pool) count too: reserve/commit/release on the account.
//! ```

mod quota;
mod record;
mod redis_store;
mod sqlite_store;
mod store;
pub mod strategy;
pub mod window;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::{Config, Strategy};
use crate::providers::Window;

pub use quota::{PoolError, Quota};
pub use record::{
    throttle_backoff, LastError, ParkKind, Parked, Reservation, StoreError, STALE_AFTER_MS,
};
pub use redis_store::RedisStore;
pub use sqlite_store::SqliteStore;
pub use store::{Store, DEFAULT_REDIS_PREFIX, REDIS_EPOCH_FILE, SQLITE_FILE};
pub use window::{Ceiling, Limit, LimitSource, QuotaWindow, CEILING_TTL, FOREVER};

use record::{Claim, Loaded, Record, Reserved};
use strategy::{Candidate, StrategyState};
use window::{add, room_at, RoomInput};

/// The answer to [`Pools::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// The units are counted (durably) on the mailbox.
    Reserved(Reservation),
    /// No room for that many units now.
    Full(Full),
}

/// A mailbox without room for the units asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Full {
    /// Units counting in the window (sent + reserved).
    pub counted: u32,
    pub limit: Limit,
    /// When that many units next fit (`None`: not foreseeable — more than the
    /// limit will ever allow).
    pub room_at: Option<Timestamp>,
}

/// The answer to [`Pools::pick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Picked(Picked),
    /// No mailbox can take the transaction now.
    Exhausted(Exhausted),
}

/// The mailbox chosen for a transaction, with the reasons for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    pub account: String,
    /// Units counting in its window before this transaction.
    pub counted: u32,
    pub limit: Limit,
    /// When it may be picked again (pacing).
    pub pace_until: Timestamp,
    /// Mailboxes passed over, and why (for the routing log).
    pub skipped: Vec<Skipped>,
}

impl Picked {
    /// Units left in the window before this transaction.
    pub fn remaining(&self) -> u32 {
        self.limit.value.saturating_sub(self.counted)
    }
}

/// Every mailbox of the pool is excluded, parked, paced out or full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    /// The earliest time some non-excluded mailbox can take the units asked
    /// for; `None` if none ever can (e.g. more recipients than any limit).
    pub capacity_returns_at: Option<Timestamp>,
    pub skipped: Vec<Skipped>,
}

/// A mailbox passed over by a pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub account: String,
    pub why: SkipReason,
    /// When it could take the units asked for (parking, pacing and quota
    /// together); `None` for excluded ones, or never.
    pub ready_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The caller excluded it (already tried in this transaction).
    Excluded,
    Parked {
        until: Timestamp,
        kind: ParkKind,
        reason: String,
    },
    Paced {
        until: Timestamp,
    },
    Full {
        counted: u32,
        limit: Limit,
        need: u32,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Excluded => f.write_str("already tried"),
            SkipReason::Parked {
                until,
                kind,
                reason,
            } => {
                if *until == FOREVER {
                    write!(f, "parked ({kind}) until unparked: {reason}")
                } else {
                    write!(f, "parked ({kind}) until {until:.0}: {reason}")
                }
            }
            SkipReason::Paced { until } => write!(f, "paced until {until:.0}"),
            SkipReason::Full {
                counted,
                limit,
                need,
            } => write!(
                f,
                "no room for {need} (used {counted}/{} {})",
                limit.value,
                source_word(&limit.source)
            ),
        }
    }
}

fn source_word(s: &LimitSource) -> String {
    match s {
        LimitSource::Unlimited => "unlimited".into(),
        LimitSource::Configured => "configured".into(),
        LimitSource::Ramp { day } => format!("ramp day {day}"),
        LimitSource::Ceiling { until } => format!("observed ceiling until {until:.0}"),
    }
}

/// What [`Pools::quota_refused`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// The observed ceiling recorded (units counted when the reply came),
    /// if that was below the configured limit.
    pub ceiling: Option<Ceiling>,
    pub parked: Parked,
}

/// One mailbox's state, for `postern status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountStatus {
    pub account: String,
    pub window: Window,
    /// The length of a rolling window in seconds (86400 unless
    /// `window_length`).
    pub window_secs: u64,
    pub time_zone: Option<String>,
    /// Units in the window the upstream accepted.
    pub used: u32,
    /// Units in the window reserved and not committed (in flight, or left by
    /// a crash: they count).
    pub reserved: u32,
    /// Of those, the ones older than an hour: no transaction lives that
    /// long, so they were left by a crash (the message may or may not have
    /// gone out). They keep counting until they leave the window.
    pub stale: u32,
    pub limit: Limit,
    /// `daily_limit` or the preset's (`None`: none).
    pub configured_limit: Option<u32>,
    /// `limit − used − reserved`, at least 0.
    pub remaining: u32,
    /// When the oldest counted unit leaves the window (rolling: its time +
    /// 24h; calendar: next local midnight); `None` when nothing counts.
    pub next_free_at: Option<Timestamp>,
    /// When one more unit fits the quota (now if it does).
    pub room_at: Option<Timestamp>,
    /// When it can next be picked: quota, parking and pacing together.
    pub ready_at: Option<Timestamp>,
    /// Only while in force.
    pub parked: Option<Parked>,
    /// Only while in force.
    pub paced_until: Option<Timestamp>,
    pub last_pick: Option<Timestamp>,
    pub last_error: Option<LastError>,
    /// Only while in force.
    pub ceiling: Option<Ceiling>,
    pub first_send: Option<Timestamp>,
    /// Consecutive throttle replies since the last accepted message.
    pub throttles: u32,
}

/// A pool as configured, for `postern status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub strategy: String,
    pub accounts: Vec<String>,
    pub weights: BTreeMap<String, u32>,
}

/// Everything `postern status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub at: Timestamp,
    pub store: String,
    /// Why the store is not trusted (it lost its state), while it is not.
    pub store_lost: Option<String>,
    pub pools: Vec<PoolStatus>,
    /// Every configured account (pooled or not), in name order.
    pub accounts: Vec<AccountStatus>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |ts: &Option<Timestamp>| match ts {
            Some(ts) if *ts == FOREVER => "never".to_owned(),
            Some(ts) => format!("{ts:.0}"),
            None => "-".to_owned(),
        };
        writeln!(f, "quota store: {} (at {:.0})", self.store, self.at)?;
        if let Some(why) = &self.store_lost {
            writeln!(
                f,
                "  LOST ITS STATE: {why}\n  sends counted through it are refused (451 4.3.0); once Redis keeps its data (appendonly yes), accept the reset with `postern quota accept-reset`"
            )?;
        }
        for p in &self.pools {
            writeln!(
                f,
                "pool {} ({}): {}",
                p.name,
                p.strategy,
                p.accounts.join(", ")
            )?;
        }
        for a in &self.accounts {
            let limit = match a.limit.source {
                LimitSource::Unlimited => "unlimited".to_owned(),
                _ => a.limit.value.to_string(),
            };
            let window = if a.window == Window::Rolling24h && a.window_secs != 86_400 {
                format!(
                    "rolling {}",
                    humantime::format_duration(Duration::from_secs(a.window_secs))
                )
            } else {
                a.window.to_string()
            };
            write!(
                f,
                "{}: used {}/{} ({} reserved) in {window}",
                a.account, a.used, limit, a.reserved
            )?;
            if let Some(tz) = &a.time_zone {
                write!(f, " {tz}")?;
            }
            match a.limit.source {
                LimitSource::Configured | LimitSource::Unlimited => {}
                s => write!(f, " [{}]", source_word(&s))?,
            }
            writeln!(f)?;
            if a.stale > 0 {
                writeln!(
                    f,
                    "  {} of the reserved are stale: left by a crash or a lost store connection (they may have been sent); they count until they leave the window",
                    a.stale
                )?;
            }
            if a.next_free_at.is_some() {
                writeln!(f, "  next unit frees at {}", t(&a.next_free_at))?;
            }
            if a.room_at != Some(self.at) {
                writeln!(f, "  full; room returns at {}", t(&a.room_at))?;
            }
            if let Some(p) = &a.parked {
                writeln!(
                    f,
                    "  parked ({}) until {}: {}",
                    p.kind,
                    if p.until == FOREVER {
                        "unparked (fix the credential, or `postern auth`)".to_owned()
                    } else {
                        t(&Some(p.until))
                    },
                    p.reason
                )?;
            }
            if let Some(e) = &a.last_error {
                writeln!(f, "  last error at {:.0}: {}", e.at, e.text)?;
            }
            if a.last_pick.is_some() {
                writeln!(f, "  last picked at {}", t(&a.last_pick))?;
            }
        }
        Ok(())
    }
}

struct Member {
    account: String,
    weight: u32,
}

struct Rotation {
    strategy: Strategy,
    members: Vec<Member>,
    state: Mutex<StrategyState>,
}

/// The pools and quotas of one config over one store. Share it (`Arc`)
/// between sessions; every method is safe to call concurrently, also from
/// several processes on the same store.
pub struct Pools {
    store: Store,
    quotas: BTreeMap<String, Quota>,
    rotations: BTreeMap<String, Rotation>,
    rng: Mutex<StdRng>,
}

impl fmt::Debug for Pools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pools")
            .field("store", &self.store)
            .field("accounts", &self.quotas.keys().collect::<Vec<_>>())
            .field("pools", &self.rotations.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The `parked` event.
fn tell_parked(account: &str, p: &Parked) {
    crate::events::emit(
        "parked",
        serde_json::json!({
            "account": account,
            "kind": p.kind.as_str(),
            "until": (p.until != FOREVER).then(|| p.until.to_string()),
            "reason": crate::text::sanitize(&p.reason, 300),
        }),
    );
}

/// The `quota_reached` event: once an hour per mailbox while it stays full.
fn tell_full(account: &str, f: &Full) {
    crate::events::emit_once(
        "quota_reached",
        account,
        Duration::from_secs(3600),
        serde_json::json!({
            "account": account,
            "counted": f.counted,
            "limit": f.limit.value,
            "room_at": f.room_at.map(|t| t.to_string()),
        }),
    );
}

impl Pools {
    /// Quotas for every account and a rotation for every pool of `config`.
    pub fn new(config: &Config, store: Store) -> Result<Pools, PoolError> {
        Pools::with_rng(config, store, StdRng::from_os_rng())
    }

    /// As [`Pools::new`], with the jitter drawn from a seeded generator.
    pub fn with_seed(config: &Config, store: Store, seed: u64) -> Result<Pools, PoolError> {
        Pools::with_rng(config, store, StdRng::seed_from_u64(seed))
    }

    fn with_rng(config: &Config, store: Store, rng: StdRng) -> Result<Pools, PoolError> {
        let quotas = config
            .accounts
            .values()
            .map(|a| Ok((a.name.clone(), Quota::from_account(config, a)?)))
            .collect::<Result<BTreeMap<_, _>, PoolError>>()?;
        let mut rotations = BTreeMap::new();
        for (name, p) in &config.pools {
            let mut members = Vec::with_capacity(p.accounts.len());
            for a in config.pool_members(p) {
                members.push(Member {
                    account: a.name.clone(),
                    weight: p.weights.get(&a.name).copied().unwrap_or(1).max(1),
                });
            }
            rotations.insert(
                name.clone(),
                Rotation {
                    strategy: p.strategy,
                    state: Mutex::new(StrategyState::new(p.strategy, members.len())),
                    members,
                },
            );
        }
        Ok(Pools {
            store,
            quotas,
            rotations,
            rng: Mutex::new(rng),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The resolved limits of an account.
    pub fn quota(&self, account: &str) -> Option<&Quota> {
        self.quotas.get(account)
    }

    fn quota_of(&self, account: &str) -> Result<&Quota, PoolError> {
        self.quotas
            .get(account)
            .ok_or_else(|| PoolError::UnknownAccount(account.to_owned()))
    }

    /// Chooses a mailbox of `pool` for a transaction that needs room for
    /// `units` recipients (at least 1), skipping `exclude`d, parked,
    /// paced-out and full mailboxes. The chosen one's pacing slot is claimed
    /// atomically (it is not eligible again until `pace_until`). Units are
    /// not reserved: call [`Pools::reserve`] per recipient (or for all `k`
    /// on failover).
    pub async fn pick(
        &self,
        pool: &str,
        units: u32,
        exclude: &[String],
        now: Timestamp,
    ) -> Result<Pick, PoolError> {
        let rot = self
            .rotations
            .get(pool)
            .ok_or_else(|| PoolError::UnknownPool(pool.to_owned()))?;
        let need = units.max(1);
        let mut cands = Vec::with_capacity(rot.members.len());
        let mut limits = Vec::with_capacity(rot.members.len());
        let mut skipped: Vec<Option<Skipped>> = Vec::with_capacity(rot.members.len());
        for m in &rot.members {
            let quota = self.quota_of(&m.account)?;
            if exclude.contains(&m.account) {
                cands.push(Candidate {
                    eligible: false,
                    counted: 0,
                    limit: 0,
                    weight: m.weight,
                });
                limits.push(quota.limit(&Record::default(), now));
                skipped.push(Some(Skipped {
                    account: m.account.clone(),
                    why: SkipReason::Excluded,
                    ready_at: None,
                }));
                continue;
            }
            let loaded = self.store.load(&m.account, quota, need, now).await?;
            let view = View::new(quota, &loaded, need, now);
            cands.push(Candidate {
                eligible: view.why.is_none(),
                counted: view.counted,
                limit: view.limit.value,
                weight: m.weight,
            });
            limits.push(view.limit);
            if let Some(SkipReason::Full { counted, limit, .. }) = &view.why {
                tell_full(
                    &m.account,
                    &Full {
                        counted: *counted,
                        limit: *limit,
                        room_at: view.room_at,
                    },
                );
            }
            skipped.push(view.why.map(|why| Skipped {
                account: m.account.clone(),
                why,
                ready_at: view.ready_at,
            }));
        }
        loop {
            let chosen = rot
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .choose(&cands);
            let Some(i) = chosen else { break };
            let m = &rot.members[i];
            let quota = self.quota_of(&m.account)?;
            let pace_until = add(add(now, quota.min_interval), self.jitter(quota.jitter));
            let slot = quota.paced().then_some(pace_until);
            let lost = match self.store.claim(&m.account, now, slot).await? {
                Claim::Claimed => {
                    let skipped: Vec<Skipped> = skipped.into_iter().flatten().collect();
                    tracing::debug!(
                        pool,
                        account = %m.account,
                        counted = cands[i].counted,
                        limit = cands[i].limit,
                        skipped = skipped.len(),
                        "pool picked a mailbox"
                    );
                    return Ok(Pick::Picked(Picked {
                        account: m.account.clone(),
                        counted: cands[i].counted,
                        limit: limits[i],
                        pace_until,
                        skipped,
                    }));
                }
                // Another task or process claimed it since we looked.
                Claim::Parked(until) => (
                    SkipReason::Parked {
                        until,
                        kind: ParkKind::Other,
                        reason: "parked meanwhile".into(),
                    },
                    until,
                ),
                Claim::Paced(until) => (SkipReason::Paced { until }, until),
            };
            cands[i].eligible = false;
            skipped[i] = Some(Skipped {
                account: m.account.clone(),
                why: lost.0,
                ready_at: Some(lost.1),
            });
        }
        let skipped: Vec<Skipped> = skipped.into_iter().flatten().collect();
        let capacity_returns_at = skipped
            .iter()
            .filter(|s| s.why != SkipReason::Excluded)
            .filter_map(|s| s.ready_at)
            .min();
        tracing::debug!(pool, need, ?capacity_returns_at, "pool exhausted");
        Ok(Pick::Exhausted(Exhausted {
            capacity_returns_at,
            skipped,
        }))
    }

    fn jitter(&self, max: Duration) -> Duration {
        let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        if max_ms == 0 {
            return Duration::ZERO;
        }
        let ms = self
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .random_range(0..=max_ms);
        Duration::from_millis(ms)
    }

    /// Atomically reserves `units` units (all or none) on `account`: succeeds
    /// only if counted + units ≤ the effective limit now. Durable on return.
    pub async fn reserve(
        &self,
        account: &str,
        units: u32,
        now: Timestamp,
    ) -> Result<Reserve, PoolError> {
        let quota = self.quota_of(account)?;
        match self.store.reserve(account, quota, units, now).await? {
            Reserved::Ok(ids) => Ok(Reserve::Reserved(Reservation {
                account: account.to_owned(),
                at: now,
                ids,
            })),
            Reserved::Full { counted, .. } => {
                let loaded = self.store.load(account, quota, units, now).await?;
                let view = View::new(quota, &loaded, units, now);
                let full = Full {
                    counted: counted.max(view.counted),
                    limit: view.limit,
                    room_at: view.room_at,
                };
                tell_full(account, &full);
                Ok(Reserve::Full(full))
            }
        }
    }

    /// The upstream accepted the message: the units stay counted, as sent.
    /// Also records the first send (ramp day 0) and resets the throttle count.
    /// On SQLite it is lazy (see `SqliteStore::commit`): later operations of
    /// this process see it at once, other processes within ~50 ms; meanwhile
    /// the units count as reserved, which counts the same.
    pub async fn commit(
        &self,
        reservations: &[Reservation],
        now: Timestamp,
    ) -> Result<(), PoolError> {
        Ok(self.store.commit(reservations, now).await?)
    }

    /// The upstream refused the message (or the RCPT): the units stop counting.
    /// (`now` is unused today; kept so every call reads alike.)
    pub async fn release(
        &self,
        reservations: &[Reservation],
        _now: Timestamp,
    ) -> Result<(), PoolError> {
        Ok(self.store.release(reservations).await?)
    }

    /// Takes a mailbox out of rotation until `until`.
    pub async fn park(
        &self,
        account: &str,
        kind: ParkKind,
        until: Timestamp,
        reason: &str,
        now: Timestamp,
    ) -> Result<Parked, PoolError> {
        self.quota_of(account)?;
        let parked = Parked {
            until,
            since: now,
            kind,
            reason: reason.to_owned(),
        };
        self.store.park(account, &parked).await?;
        tell_parked(account, &parked);
        Ok(parked)
    }

    /// Puts a mailbox back into rotation if it is parked with `kind` (any kind
    /// for `None`). Returns whether it was parked so.
    pub async fn unpark(&self, account: &str, kind: Option<ParkKind>) -> Result<bool, PoolError> {
        self.quota_of(account)?;
        let was = self.store.unpark(account, kind).await?;
        if was {
            crate::events::emit("unparked", serde_json::json!({ "account": account }));
        }
        Ok(was)
    }

    /// A throttle reply (`421 4.7.0`, `432 4.3.2`, `454 4.7.0`, …): parks on the
    /// back-off ladder ([`throttle_backoff`] of the consecutive count) and
    /// records the error.
    pub async fn throttled(
        &self,
        account: &str,
        reply: &str,
        now: Timestamp,
    ) -> Result<Parked, PoolError> {
        self.quota_of(account)?;
        let parked = self.store.park_throttled(account, reply, now).await?;
        tell_parked(account, &parked);
        self.record_error(account, reply, now).await?;
        tracing::info!(account, until = %parked.until, reply, "mailbox throttled: parked");
        Ok(parked)
    }

    /// Login refused: parks until [`Pools::unpark`] (credential changed).
    pub async fn auth_failed(
        &self,
        account: &str,
        reply: &str,
        now: Timestamp,
    ) -> Result<Parked, PoolError> {
        let parked = self
            .park(account, ParkKind::Auth, FOREVER, reply, now)
            .await?;
        self.record_error(account, reply, now).await?;
        tracing::info!(
            account,
            reply,
            "mailbox login refused: parked until unparked"
        );
        Ok(parked)
    }

    /// A quota reply (`550 5.4.5`, `554 5.2.0 …SubmissionQuotaExceeded`).
    /// Call after releasing the refused transaction's reservations. If the
    /// units counted now are below the configured limit (and at least 1),
    /// records them as the observed ceiling for 7 days; parks the mailbox
    /// until its window frees (rolling: oldest counted unit + 24h, or 24h
    /// when none counts; calendar: next local midnight); records the error.
    pub async fn quota_refused(
        &self,
        account: &str,
        reply: &str,
        now: Timestamp,
    ) -> Result<QuotaRefusal, PoolError> {
        let quota = self.quota_of(account)?;
        let loaded = self.store.load(account, quota, 1, now).await?;
        let counted = loaded.sent.saturating_add(loaded.reserved);
        let ceiling = if counted >= 1 && counted < quota.daily_limit.unwrap_or(u32::MAX) {
            let c = Ceiling {
                value: counted,
                until: add(now, CEILING_TTL),
            };
            self.store.record_ceiling(account, c).await?;
            Some(c)
        } else {
            None
        };
        let until = loaded
            .oldest
            .and_then(|o| quota.window.unit_expires_at(o, now))
            .or_else(|| match &quota.window {
                QuotaWindow::CalendarDay(tz) => window::next_local_midnight(tz, now),
                QuotaWindow::Rolling(_) => None,
            })
            .unwrap_or_else(|| add(now, Duration::from_secs(24 * 3600)));
        let parked = self
            .park(account, ParkKind::Quota, until, reply, now)
            .await?;
        self.record_error(account, reply, now).await?;
        tracing::info!(account, counted, ceiling = ?ceiling.map(|c| c.value), until = %until, reply,
            "mailbox quota reply: parked");
        Ok(QuotaRefusal { ceiling, parked })
    }

    /// Records `n` as the mailbox's limit for the next 7 days.
    pub async fn record_ceiling(
        &self,
        account: &str,
        n: u32,
        now: Timestamp,
    ) -> Result<Ceiling, PoolError> {
        self.quota_of(account)?;
        let c = Ceiling {
            value: n,
            until: add(now, CEILING_TTL),
        };
        self.store.record_ceiling(account, c).await?;
        Ok(c)
    }

    /// Remembers the last error text of a mailbox, for `status`.
    pub async fn record_error(
        &self,
        account: &str,
        text: &str,
        now: Timestamp,
    ) -> Result<(), PoolError> {
        self.quota_of(account)?;
        let e = LastError {
            at: now,
            text: text.to_owned(),
        };
        Ok(self.store.record_error(account, &e).await?)
    }

    /// When capacity next returns on `account` (the oldest counted unit
    /// leaves the window); `None` when nothing counts.
    pub async fn next_free_at(
        &self,
        account: &str,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, PoolError> {
        Ok(self.account_status(account, now).await?.next_free_at)
    }

    /// One mailbox's state now.
    pub async fn account_status(
        &self,
        account: &str,
        now: Timestamp,
    ) -> Result<AccountStatus, PoolError> {
        let quota = self.quota_of(account)?;
        let loaded = self.store.load(account, quota, 1, now).await?;
        let view = View::new(quota, &loaded, 1, now);
        let r = &loaded.record;
        Ok(AccountStatus {
            account: account.to_owned(),
            window: quota.window.kind(),
            window_secs: match quota.window {
                QuotaWindow::Rolling(ms) => (ms / 1000).max(0) as u64,
                QuotaWindow::CalendarDay(_) => 86_400,
            },
            time_zone: quota.time_zone.clone(),
            used: loaded.sent,
            reserved: loaded.reserved,
            stale: if loaded.reserved > 0 {
                self.store.stale(account, quota, now).await?
            } else {
                0
            },
            limit: view.limit,
            configured_limit: quota.daily_limit,
            remaining: view.limit.value.saturating_sub(view.counted),
            next_free_at: loaded
                .oldest
                .and_then(|o| quota.window.unit_expires_at(o, now)),
            room_at: view.room_at,
            ready_at: view.ready_at,
            parked: r.active_park(now).cloned(),
            paced_until: r.pace_until.filter(|&p| p > now),
            last_pick: r.last_pick,
            last_error: r.last_error.clone(),
            ceiling: r.ceiling.filter(|c| c.until > now),
            first_send: r.first_send,
            throttles: r.throttles,
        })
    }

    /// Whether the quota store answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// Every pool and account, for `postern status`.
    pub async fn status(&self, now: Timestamp) -> Result<Status, PoolError> {
        let mut accounts = Vec::with_capacity(self.quotas.len());
        for name in self.quotas.keys() {
            accounts.push(self.account_status(name, now).await?);
        }
        let pools = self
            .rotations
            .iter()
            .map(|(name, r)| PoolStatus {
                name: name.clone(),
                strategy: match r.strategy {
                    Strategy::RoundRobin => "round-robin",
                    Strategy::LeastUsed => "least-used",
                    Strategy::Weighted => "weighted",
                }
                .into(),
                accounts: r.members.iter().map(|m| m.account.clone()).collect(),
                weights: r
                    .members
                    .iter()
                    .map(|m| (m.account.clone(), m.weight))
                    .collect(),
            })
            .collect();
        Ok(Status {
            at: now,
            store: self.store.describe(),
            store_lost: self.store.lost(),
            pools,
            accounts,
        })
    }
}

/// A mailbox judged for a transaction needing `need` units.
struct View {
    counted: u32,
    limit: Limit,
    /// When `need` units fit the quota.
    room_at: Option<Timestamp>,
    /// When it can be picked for them (quota, parking, pacing).
    ready_at: Option<Timestamp>,
    /// Why it cannot be picked now.
    why: Option<SkipReason>,
}

impl View {
    fn new(quota: &Quota, l: &Loaded, need: u32, now: Timestamp) -> View {
        let r = &l.record;
        let counted = l.sent.saturating_add(l.reserved);
        let limit = quota.limit(r, now);
        let fits = u64::from(counted) + u64::from(need) <= u64::from(limit.value);
        let room = if fits {
            Some(now)
        } else {
            room_at(
                &RoomInput {
                    window: &quota.window,
                    daily: quota.daily_limit,
                    ramp: quota.ramp,
                    first_send: r.first_send,
                    ceiling: r.ceiling,
                    units: &l.units,
                },
                need,
                now,
            )
        };
        let parked = r.active_park(now);
        let paced = r.pace_until.filter(|&p| p > now && quota.paced());
        // Auth parking ("until unparked") has no time to offer.
        let ready_at = room
            .map(|t| {
                t.max(parked.map_or(now, |p| p.until))
                    .max(paced.unwrap_or(now))
            })
            .filter(|&t| t != FOREVER);
        let why = if let Some(p) = parked {
            Some(SkipReason::Parked {
                until: p.until,
                kind: p.kind,
                reason: p.reason.clone(),
            })
        } else if let Some(until) = paced {
            Some(SkipReason::Paced { until })
        } else if !fits {
            Some(SkipReason::Full {
                counted,
                limit,
                need,
            })
        } else {
            None
        };
        View {
            counted,
            limit,
            room_at: room,
            ready_at,
            why,
        }
    }
}

#[cfg(test)]
mod tests;
