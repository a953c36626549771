//! The durable state behind pools, and the one interface both stores share.
//!
//! [`Store`] dispatches to the embedded SQLite store or the shared Redis
//! store. Each operation is one atomic step in the backing store (one
//! `BEGIN IMMEDIATE` transaction, or one Lua script / `MULTI`), so any number
//! of tasks and processes can use a store at once.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::redis_store::RedisStore;
use super::sqlite_store::SqliteStore;
use super::window::{ms_to_ts, Ceiling};
use super::Quota;
use crate::config::Config;

/// File name of the embedded store inside `data_dir`.
pub const SQLITE_FILE: &str = "state.sqlite3";

/// File in `data_dir` holding the epoch of the Redis store last seen, so a
/// restart can tell a Redis that lost its data from a new one.
pub const REDIS_EPOCH_FILE: &str = "redis-epoch";

/// Key prefix of the Redis store unless told otherwise.
pub const DEFAULT_REDIS_PREFIX: &str = "postern:";

/// A failure of the backing store (not "no room": that is a value).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("quota store (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("quota store (Redis): {0}")]
    Redis(#[from] redis::RedisError),
    #[error("quota store {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("quota store: {0}")]
    Invalid(String),
    #[error("quota store task failed: {0}")]
    Task(String),
    /// A failure shared by every operation of one SQLite batch (the
    /// transaction could not begin or commit).
    #[error("{0}")]
    Batch(String),
    /// The shared store forgot what it counted (Redis restarted without
    /// persistence, or was flushed): its counters cannot be trusted, so
    /// nothing is reserved through it until an operator accepts the reset.
    #[error("quota store {store} lost its state ({why}); sends counted through it are paused until an operator runs `postern quota accept-reset`")]
    Lost { store: String, why: String },
}

impl StoreError {
    /// Whether this is [`StoreError::Lost`].
    pub fn is_lost(&self) -> bool {
        matches!(self, StoreError::Lost { .. })
    }

    pub(crate) fn batch(e: &StoreError) -> StoreError {
        StoreError::Batch(e.to_string())
    }
}

/// Why a mailbox is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParkKind {
    /// A quota reply: parked until the window frees.
    Quota,
    /// A throttle reply: parked on the back-off ladder (1, 5, 15, 60 min).
    Throttle,
    /// Login refused: parked until the credential changes (`unpark`).
    Auth,
    /// Anything else the caller decides.
    Other,
}

impl ParkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParkKind::Quota => "quota",
            ParkKind::Throttle => "throttle",
            ParkKind::Auth => "auth",
            ParkKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> ParkKind {
        match s {
            "quota" => ParkKind::Quota,
            "throttle" => ParkKind::Throttle,
            "auth" => ParkKind::Auth,
            _ => ParkKind::Other,
        }
    }
}

impl fmt::Display for ParkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mailbox taken out of rotation until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parked {
    /// [`FOREVER`](super::FOREVER) for auth parking ("until the credential changes").
    pub until: Timestamp,
    pub since: Timestamp,
    pub kind: ParkKind,
    pub reason: String,
}

/// The last error seen on a mailbox, for `postern status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub at: Timestamp,
    pub text: String,
}

/// Everything a store keeps about a mailbox besides its units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub first_send: Option<Timestamp>,
    /// As recorded; it may have expired.
    pub ceiling: Option<Ceiling>,
    pub last_pick: Option<Timestamp>,
    /// Not eligible for a pick before this.
    pub pace_until: Option<Timestamp>,
    /// As recorded; it may have run out.
    pub parked: Option<Parked>,
    /// Consecutive throttle replies (reset by a commit).
    pub throttles: u32,
    pub last_error: Option<LastError>,
}

impl Record {
    pub fn active_park(&self, now: Timestamp) -> Option<&Parked> {
        self.parked.as_ref().filter(|p| p.until > now)
    }

    /// Builds a record from string fields (the Redis hash).
    pub fn from_fields(f: &HashMap<String, String>) -> Record {
        let int = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
        let ts = |k: &str| int(k).and_then(ms_to_ts);
        let ceiling = match (int("ceiling"), ts("ceiling_until")) {
            (Some(v), Some(until)) => Some(Ceiling {
                value: u32::try_from(v.max(0)).unwrap_or(u32::MAX),
                until,
            }),
            _ => None,
        };
        let parked = match (ts("parked_until"), f.get("park_kind")) {
            (Some(until), Some(kind)) => Some(Parked {
                until,
                since: ts("parked_since").unwrap_or(until),
                kind: ParkKind::parse(kind),
                reason: f.get("park_reason").cloned().unwrap_or_default(),
            }),
            _ => None,
        };
        let last_error = match (ts("last_error_at"), f.get("last_error")) {
            (Some(at), Some(text)) => Some(LastError {
                at,
                text: text.clone(),
            }),
            _ => None,
        };
        Record {
            first_send: ts("first_send"),
            ceiling,
            last_pick: ts("last_pick"),
            pace_until: ts("pace_until"),
            parked,
            throttles: int("throttles")
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(0),
            last_error,
        }
    }
}

/// One mailbox's state as read from a store.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded {
    pub record: Record,
    /// Units in the window that the upstream accepted.
    pub sent: u32,
    /// Units in the window reserved and not (yet) committed: in flight, or
    /// left by a crash (they count, to be safe).
    pub reserved: u32,
    /// The oldest counted unit (ms).
    pub oldest: Option<i64>,
    /// All counted units (ms, ascending), filled only when the mailbox has no
    /// room for the units asked for, to work out when room returns.
    pub units: Vec<i64>,
}

/// Result of an atomic reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reserved {
    Ok(Vec<u64>),
    Full { counted: u32, limit: u32 },
}

/// Result of an atomic pick claim (pacing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    Claimed,
    Parked(Timestamp),
    Paced(Timestamp),
}

/// Units reserved on one mailbox. Commit it when the upstream accepted the
/// message, release it when the upstream refused it. Dropping it without
/// either leaves the units counted (as after a crash): over-counting is the
/// safe side.
#[must_use = "commit or release a reservation; dropped, its units stay counted"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub(crate) account: String,
    pub(crate) at: Timestamp,
    pub(crate) ids: Vec<u64>,
}

impl Reservation {
    /// The mailbox the units are reserved on.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// How many units (recipients).
    pub fn units(&self) -> u32 {
        u32::try_from(self.ids.len()).unwrap_or(u32::MAX)
    }

    /// When it was made.
    pub fn at(&self) -> Timestamp {
        self.at
    }
}

/// The durable quota store: embedded SQLite or shared Redis.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Redis(RedisStore),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Store {
    /// The store the config names: `quota_store = "redis://…"` (key prefix
    /// [`DEFAULT_REDIS_PREFIX`]; the epoch it was last seen with is kept in
    /// `data_dir/`[`REDIS_EPOCH_FILE`]), else SQLite in `data_dir/state.sqlite3`.
    pub async fn open(config: &Config) -> Result<Store, StoreError> {
        match &config.quota_store {
            Some(url) => RedisStore::connect_with_marker(
                url,
                DEFAULT_REDIS_PREFIX,
                Some(config.data_dir.join(REDIS_EPOCH_FILE)),
            )
            .await
            .map(Store::Redis),
            None => Store::sqlite(&config.data_dir.join(SQLITE_FILE)),
        }
    }

    /// Why the store cannot be trusted now, if it cannot (Redis lost its
    /// state); for `status`.
    pub fn lost(&self) -> Option<String> {
        match self {
            Store::Sqlite(_) => None,
            Store::Redis(r) => r.lost(),
        }
    }

    /// The operator accepts that the shared store lost its state: a new
    /// epoch is written and every instance resumes counting from what the
    /// store holds now. Returns what was done, in words.
    pub async fn accept_reset(&self) -> Result<String, StoreError> {
        match self {
            Store::Sqlite(s) => Ok(format!(
                "{} is the embedded store: it keeps its counters on disk and has no reset to accept",
                s.path().display()
            )),
            Store::Redis(r) => r.accept_reset().await,
        }
    }

    /// The embedded store in one SQLite file (created with its folder if
    /// missing; WAL, so `postern status` can read it while `run` writes).
    pub fn sqlite(path: &Path) -> Result<Store, StoreError> {
        SqliteStore::open(path).map(Store::Sqlite)
    }

    /// The shared store on a redis-server; every key starts with `prefix`.
    pub async fn redis(url: &str, prefix: &str) -> Result<Store, StoreError> {
        RedisStore::connect(url, prefix).await.map(Store::Redis)
    }

    /// "sqlite PATH" or "redis URL (prefix P)", for logs and `status`.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => format!("sqlite {}", s.path().display()),
            Store::Redis(r) => r.describe(),
        }
    }

    pub(crate) async fn load(
        &self,
        account: &str,
        quota: &Quota,
        need: u32,
        now: Timestamp,
    ) -> Result<Loaded, StoreError> {
        match self {
            Store::Sqlite(s) => s.load(account, quota, need, now).await,
            Store::Redis(r) => r.load(account, quota, need, now).await,
        }
    }

    /// Reserved units in the window older than [`STALE_AFTER_MS`].
    pub(crate) async fn stale(
        &self,
        account: &str,
        quota: &Quota,
        now: Timestamp,
    ) -> Result<u32, StoreError> {
        let (after, before) = (
            quota.window.cutoff_ms(now),
            now.as_millisecond() - STALE_AFTER_MS,
        );
        match self {
            Store::Sqlite(s) => s.stale(account, after, before).await,
            Store::Redis(r) => r.stale(account, after, before).await,
        }
    }

    pub(crate) async fn reserve(
        &self,
        account: &str,
        quota: &Quota,
        units: u32,
        now: Timestamp,
    ) -> Result<Reserved, StoreError> {
        match self {
            Store::Sqlite(s) => s.reserve(account, quota, units, now).await,
            Store::Redis(r) => r.reserve(account, quota, units, now).await,
        }
    }

    pub(crate) async fn commit(
        &self,
        rs: &[Reservation],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.commit(rs, now).await,
            Store::Redis(r) => r.commit(rs, now).await,
        }
    }

    pub(crate) async fn release(&self, rs: &[Reservation]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.release(rs).await,
            Store::Redis(r) => r.release(rs).await,
        }
    }

    /// Claims the mailbox for a pick: refused while it is parked, and, with
    /// `pace_until` (a paced mailbox), while another pick's pacing runs.
    pub(crate) async fn claim(
        &self,
        account: &str,
        now: Timestamp,
        pace_until: Option<Timestamp>,
    ) -> Result<Claim, StoreError> {
        match self {
            Store::Sqlite(s) => s.claim(account, now, pace_until).await,
            Store::Redis(r) => r.claim(account, now, pace_until).await,
        }
    }

    pub(crate) async fn park(&self, account: &str, parked: &Parked) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.park(account, parked).await,
            Store::Redis(r) => r.park(account, parked).await,
        }
    }

    /// Counts one more consecutive throttle and parks for the ladder step.
    pub(crate) async fn park_throttled(
        &self,
        account: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Parked, StoreError> {
        match self {
            Store::Sqlite(s) => s.park_throttled(account, reason, now).await,
            Store::Redis(r) => r.park_throttled(account, reason, now).await,
        }
    }

    pub(crate) async fn unpark(
        &self,
        account: &str,
        kind: Option<ParkKind>,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.unpark(account, kind).await,
            Store::Redis(r) => r.unpark(account, kind).await,
        }
    }

    pub(crate) async fn record_ceiling(
        &self,
        account: &str,
        ceiling: Ceiling,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.record_ceiling(account, ceiling).await,
            Store::Redis(r) => r.record_ceiling(account, ceiling).await,
        }
    }

    pub(crate) async fn record_error(
        &self,
        account: &str,
        error: &LastError,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.record_error(account, error).await,
            Store::Redis(r) => r.record_error(account, error).await,
        }
    }
}

/// A reservation older than this is not in flight any more: no transaction
/// lives that long (DATA and the upstream's final reply are bounded by
/// `data_timeout` and `upstream_data_timeout`, 10 minutes each by default).
/// It was left by a crash or a lost store connection; it keeps counting (the
/// message may have gone out) and `status` shows it as stale.
pub const STALE_AFTER_MS: i64 = 3_600_000;

/// The throttle back-off ladder: 1, 5, 15, then 60 minutes for the 1st, 2nd,
/// 3rd and every later consecutive throttle reply.
pub fn throttle_backoff(consecutive: u32) -> Duration {
    let minutes = match consecutive {
        0 | 1 => 1,
        2 => 5,
        3 => 15,
        _ => 60,
    };
    Duration::from_secs(minutes * 60)
}
