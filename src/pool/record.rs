//! The records the quota stores keep and return: parking, the last error,
//! a mailbox's record, what a load, reserve or claim answers, reservations,
//! and the store's error. The bottom of the pool layer: plain data shared by
//! both backends, the dispatch above them and the pools above that.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::window::Ceiling;

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

impl crate::db::DbError for StoreError {
    fn shared(&self) -> StoreError {
        StoreError::batch(self)
    }
    fn task(what: &str) -> StoreError {
        StoreError::Task(what.to_owned())
    }
    fn invalid(what: String) -> StoreError {
        StoreError::Invalid(what)
    }
    fn io(path: &std::path::Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
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
    pub(crate) fn active_park(&self, now: Timestamp) -> Option<&Parked> {
        self.parked.as_ref().filter(|p| p.until > now)
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
