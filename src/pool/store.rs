//! The durable state behind pools, and the one interface both stores share.
//!
//! [`Store`] dispatches to the embedded SQLite store or the shared Redis
//! store. Each operation is one atomic step in the backing store (one
//! `BEGIN IMMEDIATE` transaction, or one Lua script / `MULTI`), so any number
//! of tasks and processes can use a store at once.

use std::fmt;
use std::path::Path;

use jiff::Timestamp;

use super::quota::Quota;
use super::record::{
    Claim, LastError, Loaded, ParkKind, Parked, Reservation, Reserved, StoreError, STALE_AFTER_MS,
};
use super::redis_store::RedisStore;
use super::sqlite_store::SqliteStore;
use super::window::Ceiling;
use crate::config::Config;

/// File name of the embedded store inside `data_dir`.
pub const SQLITE_FILE: &str = "state.sqlite3";

/// File in `data_dir` holding the epoch of the Redis store last seen, so a
/// restart can tell a Redis that lost its data from a new one.
pub const REDIS_EPOCH_FILE: &str = "redis-epoch";

/// Key prefix of the Redis store unless told otherwise.
pub const DEFAULT_REDIS_PREFIX: &str = "postern:";

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

    /// Whether the store answers now (SQLite in data_dir always does).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Redis(r) => r.ping().await,
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
