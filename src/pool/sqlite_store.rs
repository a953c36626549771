//! The embedded store: one SQLite file (`data_dir/state.sqlite3`), WAL, run
//! by one [`Db`](crate::db::Db) thread with group commit: each operation is
//! one savepoint in a batch's transaction, so the check and the insert of a
//! reserve cannot interleave with another connection's, in this process or
//! another one on the same file, and sixteen sessions reserving at once pay
//! for one fsync, not sixteen.
//!
//! Durability: a reservation is a durable operation (`synchronous = FULL`),
//! so a unit is on disk before its RCPT is answered and neither `kill -9`
//! nor a power cut makes Postern forget it. Other batches commit with
//! `NORMAL` (no fsync): after a power cut a commit that did not reach the
//! disk leaves its units reserved, which still count (over-counting is the
//! safe side). Marking units sent is lazy.
//!
//! Counting: the `windows` table keeps, per mailbox, how many units after
//! `cutoff_ms` are sent and reserved. Triggers on `units` keep it right for
//! every insert, update and delete (also for edits made with `sqlite3`), and
//! moving the window forward subtracts only the units that left it, so a
//! reserve costs the same with 10 units in the window or 10 million.
//!
//! Inspect with `sqlite3 var/state.sqlite3 'SELECT * FROM accounts'`; times
//! are milliseconds since the Unix epoch.

use std::fmt;
use std::path::Path;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use super::quota::Quota;
use super::record::{
    throttle_backoff, Claim, LastError, Loaded, ParkKind, Parked, Record, Reservation, Reserved,
    StoreError,
};
use super::window::{add, ms_to_ts, Ceiling, KEEP_MS};
use crate::db::{Db, Schema};

/// `PRAGMA user_version` of the schema below.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS units (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT    NOT NULL,
    at_ms   INTEGER NOT NULL,
    -- 0: reserved (in flight, or unknown after a crash: still counts); 1: accepted upstream
    sent    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS units_by_account ON units (account, at_ms);
CREATE TABLE IF NOT EXISTS accounts (
    account          TEXT PRIMARY KEY,
    first_send_ms    INTEGER,
    ceiling          INTEGER,
    ceiling_until_ms INTEGER,
    last_pick_ms     INTEGER,
    pace_until_ms    INTEGER,
    parked_until_ms  INTEGER,
    parked_since_ms  INTEGER,
    park_kind        TEXT,
    park_reason      TEXT,
    throttles        INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    last_error_ms    INTEGER
);
-- Schema 2: running counts of the units with at_ms > cutoff_ms. A missing
-- row means \"count from `units`\" (and is written by the next reserve).
CREATE TABLE IF NOT EXISTS windows (
    account   TEXT PRIMARY KEY,
    cutoff_ms INTEGER NOT NULL,
    sent      INTEGER NOT NULL,
    reserved  INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS units_insert AFTER INSERT ON units BEGIN
    UPDATE windows SET sent = sent + (NEW.sent = 1), reserved = reserved + (NEW.sent = 0)
     WHERE account = NEW.account AND cutoff_ms < NEW.at_ms;
END;
CREATE TRIGGER IF NOT EXISTS units_delete AFTER DELETE ON units BEGIN
    UPDATE windows SET sent = sent - (OLD.sent = 1), reserved = reserved - (OLD.sent = 0)
     WHERE account = OLD.account AND cutoff_ms < OLD.at_ms;
END;
CREATE TRIGGER IF NOT EXISTS units_update AFTER UPDATE OF account, at_ms, sent ON units BEGIN
    UPDATE windows SET sent = sent - (OLD.sent = 1), reserved = reserved - (OLD.sent = 0)
     WHERE account = OLD.account AND cutoff_ms < OLD.at_ms;
    UPDATE windows SET sent = sent + (NEW.sent = 1), reserved = reserved + (NEW.sent = 0)
     WHERE account = NEW.account AND cutoff_ms < NEW.at_ms;
END;
";

/// The SQLite store. Cloning shares the store thread; it ends when the last
/// clone is dropped, after the operations already sent.
#[derive(Clone)]
pub struct SqliteStore {
    db: Db<StoreError>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.db.path())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its folder, and
    /// starts the store thread.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let schema = Schema {
            version: SCHEMA_VERSION,
            sql: SCHEMA,
        };
        Ok(SqliteStore {
            db: Db::open(path, &schema, "postern-store")?,
        })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    async fn run<T, F>(&self, writes: bool, durable: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.run(writes, durable, f).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.read(f).await
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.write(f).await
    }

    fn lazy<F>(&self, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        self.db.lazy(
            "quota store: could not mark units sent (they stay counted)",
            f,
        )
    }
}

/// Sent and reserved units of one mailbox after a cutoff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    sent: u32,
    reserved: u32,
}

impl Counts {
    fn total(self) -> u64 {
        u64::from(self.sent) + u64::from(self.reserved)
    }
}

fn count_units(c: &Connection, account: &str, after: i64, upto: i64) -> rusqlite::Result<Counts> {
    c.prepare_cached(
        "SELECT COALESCE(SUM(sent = 1), 0), COALESCE(SUM(sent = 0), 0)
         FROM units WHERE account = ?1 AND at_ms > ?2 AND at_ms <= ?3",
    )?
    .query_row(params![account, after, upto], |r| {
        Ok(Counts {
            sent: r.get(0)?,
            reserved: r.get(1)?,
        })
    })
}

/// The units counted in the window that starts after `cutoff`: from the
/// running counts minus the units that left the window since they were
/// stored, or counted afresh when there are none (or the window moved back).
/// With `store`, the result becomes the new running counts.
fn window_counts(
    c: &Connection,
    account: &str,
    cutoff: i64,
    store: bool,
) -> rusqlite::Result<Counts> {
    let stored: Option<(i64, u32, u32)> = c
        .prepare_cached("SELECT cutoff_ms, sent, reserved FROM windows WHERE account = ?1")?
        .query_row(params![account], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let counts = match stored {
        Some((at, sent, reserved)) if at == cutoff => return Ok(Counts { sent, reserved }),
        Some((at, sent, reserved)) if at < cutoff => {
            let gone = count_units(c, account, at, cutoff)?;
            Counts {
                sent: sent.saturating_sub(gone.sent),
                reserved: reserved.saturating_sub(gone.reserved),
            }
        }
        _ => count_units(c, account, cutoff, i64::MAX)?,
    };
    if store {
        c.prepare_cached(
            "INSERT OR REPLACE INTO windows (account, cutoff_ms, sent, reserved)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![account, cutoff, counts.sent, counts.reserved])?;
    }
    Ok(counts)
}

impl SqliteStore {
    pub(crate) async fn load(
        &self,
        account: &str,
        quota: &Quota,
        need: u32,
        now: Timestamp,
    ) -> Result<Loaded, StoreError> {
        let (account, quota) = (account.to_owned(), quota.clone());
        self.read(move |c| {
            let record = read_record(c, &account)?;
            let cutoff = quota.window.cutoff_ms(now);
            let counts = window_counts(c, &account, cutoff, false)?;
            let oldest: Option<i64> = c
                .prepare_cached("SELECT MIN(at_ms) FROM units WHERE account = ?1 AND at_ms > ?2")?
                .query_row(params![account, cutoff], |r| r.get(0))?;
            let limit = quota.limit(&record, now);
            let mut units = Vec::new();
            if counts.total() + u64::from(need) > u64::from(limit.value) {
                let mut st = c.prepare_cached(
                    "SELECT at_ms FROM units WHERE account = ?1 AND at_ms > ?2 ORDER BY at_ms",
                )?;
                let rows = st.query_map(params![account, cutoff], |r| r.get::<_, i64>(0))?;
                for r in rows {
                    units.push(r?);
                }
            }
            Ok(Loaded {
                record,
                sent: counts.sent,
                reserved: counts.reserved,
                oldest,
                units,
            })
        })
        .await
    }

    pub(crate) async fn stale(
        &self,
        account: &str,
        after: i64,
        before: i64,
    ) -> Result<u32, StoreError> {
        let account = account.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT COUNT(*) FROM units
                 WHERE account = ?1 AND sent = 0 AND at_ms > ?2 AND at_ms < ?3",
            )?
            .query_row(params![account, after, before], |r| r.get(0))?)
        })
        .await
    }

    pub(crate) async fn reserve(
        &self,
        account: &str,
        quota: &Quota,
        n: u32,
        now: Timestamp,
    ) -> Result<Reserved, StoreError> {
        let (account, quota) = (account.to_owned(), quota.clone());
        // Durable: the batch commits with an fsync before the answer.
        self.run(true, true, move |c| reserve_in(c, &account, &quota, n, now))
            .await
    }
}

/// The reservation (inside a write batch).
fn reserve_in(
    c: &Connection,
    account: &str,
    quota: &Quota,
    n: u32,
    now: Timestamp,
) -> Result<Reserved, StoreError> {
    let now_ms = now.as_millisecond();
    c.prepare_cached("DELETE FROM units WHERE account = ?1 AND at_ms < ?2")?
        .execute(params![account, now_ms - KEEP_MS])?;
    let record = read_record(c, account)?;
    let limit = quota.limit(&record, now).value;
    let counts = window_counts(c, account, quota.window.cutoff_ms(now), true)?;
    if counts.total() + u64::from(n) > u64::from(limit) {
        let counted = u32::try_from(counts.total()).unwrap_or(u32::MAX);
        return Ok(Reserved::Full { counted, limit });
    }
    let mut ids = Vec::with_capacity(n as usize);
    let mut st = c.prepare_cached("INSERT INTO units (account, at_ms) VALUES (?1, ?2)")?;
    for _ in 0..n {
        st.execute(params![account, now_ms])?;
        ids.push(c.last_insert_rowid().unsigned_abs());
    }
    Ok(Reserved::Ok(ids))
}

impl SqliteStore {
    /// Marks the units sent. Lazy: nobody waits for it, and it rides along
    /// with the next batch (within [`LAZY_WAIT`]). Every later operation
    /// of this process sees it; until it lands, other processes see the
    /// units as reserved, which count the same. A failure is logged.
    pub(crate) async fn commit(
        &self,
        rs: &[Reservation],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let rs = rs.to_vec();
        self.lazy(move |c| {
            for r in &rs {
                {
                    let mut st = c.prepare_cached(
                        "UPDATE units SET sent = 1 WHERE id = ?1 AND account = ?2 AND sent = 0",
                    )?;
                    for id in &r.ids {
                        st.execute(params![i64::try_from(*id).unwrap_or(-1), r.account])?;
                    }
                }
                // Records the first send (ramp day 0) and resets the
                // throttle count, writing the row only when that changes it.
                c.prepare_cached(
                    "INSERT INTO accounts (account, first_send_ms) VALUES (?1, ?2)
                     ON CONFLICT (account) DO UPDATE
                        SET first_send_ms = COALESCE(first_send_ms, excluded.first_send_ms),
                            throttles = 0
                      WHERE first_send_ms IS NULL OR throttles != 0",
                )?
                .execute(params![r.account, now.as_millisecond()])?;
            }
            Ok(())
        })
    }

    pub(crate) async fn release(&self, rs: &[Reservation]) -> Result<(), StoreError> {
        let rs = rs.to_vec();
        self.write(move |c| {
            let mut st = c.prepare_cached("DELETE FROM units WHERE id = ?1 AND account = ?2")?;
            for r in &rs {
                for id in &r.ids {
                    st.execute(params![i64::try_from(*id).unwrap_or(-1), r.account])?;
                }
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn claim(
        &self,
        account: &str,
        now: Timestamp,
        pace_until: Option<Timestamp>,
    ) -> Result<Claim, StoreError> {
        let account = account.to_owned();
        self.write(move |c| {
            let record = read_record(c, &account)?;
            if let Some(p) = record.active_park(now) {
                return Ok(Claim::Parked(p.until));
            }
            if let Some(p) = record
                .pace_until
                .filter(|&p| p > now && pace_until.is_some())
            {
                return Ok(Claim::Paced(p));
            }
            ensure_row(c, &account)?;
            c.prepare_cached(
                "UPDATE accounts SET last_pick_ms = ?2, pace_until_ms = ?3 WHERE account = ?1",
            )?
            .execute(params![
                account,
                now.as_millisecond(),
                pace_until.map(Timestamp::as_millisecond)
            ])?;
            Ok(Claim::Claimed)
        })
        .await
    }

    pub(crate) async fn park(&self, account: &str, parked: &Parked) -> Result<(), StoreError> {
        let (account, parked) = (account.to_owned(), parked.clone());
        self.write(move |c| Ok(write_park(c, &account, &parked)?))
            .await
    }

    pub(crate) async fn park_throttled(
        &self,
        account: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Parked, StoreError> {
        let (account, reason) = (account.to_owned(), reason.to_owned());
        self.write(move |c| {
            // Replies that arrive while the mailbox is parked (a burst of
            // concurrent sessions failing together) do not climb the ladder.
            if let Some(p) = read_record(c, &account)?.active_park(now) {
                return Ok(p.clone());
            }
            ensure_row(c, &account)?;
            let n: u32 = c
                .prepare_cached(
                    "UPDATE accounts SET throttles = throttles + 1 WHERE account = ?1
                 RETURNING throttles",
                )?
                .query_row(params![account], |r| r.get(0))?;
            let parked = Parked {
                until: add(now, throttle_backoff(n)),
                since: now,
                kind: ParkKind::Throttle,
                reason,
            };
            write_park(c, &account, &parked)?;
            Ok(parked)
        })
        .await
    }

    pub(crate) async fn unpark(
        &self,
        account: &str,
        kind: Option<ParkKind>,
    ) -> Result<bool, StoreError> {
        let account = account.to_owned();
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE accounts SET parked_until_ms = NULL, parked_since_ms = NULL,
                        park_kind = NULL, park_reason = NULL
                 WHERE account = ?1 AND park_kind IS NOT NULL
                   AND (?2 IS NULL OR park_kind = ?2)",
                )?
                .execute(params![account, kind.map(ParkKind::as_str)])?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn record_ceiling(
        &self,
        account: &str,
        ceiling: Ceiling,
    ) -> Result<(), StoreError> {
        let account = account.to_owned();
        self.write(move |c| {
            ensure_row(c, &account)?;
            c.prepare_cached(
                "UPDATE accounts SET ceiling = ?2, ceiling_until_ms = ?3 WHERE account = ?1",
            )?
            .execute(params![
                account,
                ceiling.value,
                ceiling.until.as_millisecond()
            ])?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn record_error(
        &self,
        account: &str,
        error: &LastError,
    ) -> Result<(), StoreError> {
        let (account, error) = (account.to_owned(), error.clone());
        self.write(move |c| {
            ensure_row(c, &account)?;
            c.prepare_cached(
                "UPDATE accounts SET last_error = ?2, last_error_ms = ?3 WHERE account = ?1",
            )?
            .execute(params![account, error.text, error.at.as_millisecond()])?;
            Ok(())
        })
        .await
    }
}

fn ensure_row(c: &Connection, account: &str) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR IGNORE INTO accounts (account) VALUES (?1)")?
        .execute(params![account])
        .map(drop)
}

fn write_park(c: &Connection, account: &str, p: &Parked) -> rusqlite::Result<()> {
    ensure_row(c, account)?;
    c.prepare_cached(
        "UPDATE accounts SET parked_until_ms = ?2, parked_since_ms = ?3, park_kind = ?4,
                park_reason = ?5
         WHERE account = ?1",
    )?
    .execute(params![
        account,
        p.until.as_millisecond(),
        p.since.as_millisecond(),
        p.kind.as_str(),
        p.reason
    ])
    .map(drop)
}

fn read_record(c: &Connection, account: &str) -> rusqlite::Result<Record> {
    let row = c
        .prepare_cached(
            "SELECT first_send_ms, ceiling, ceiling_until_ms, last_pick_ms, pace_until_ms,
                    parked_until_ms, parked_since_ms, park_kind, park_reason, throttles,
                    last_error, last_error_ms
             FROM accounts WHERE account = ?1",
        )?
        .query_row(params![account], |r| {
            let ts = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
                Ok(r.get::<_, Option<i64>>(i)?.and_then(ms_to_ts))
            };
            let ceiling = match (r.get::<_, Option<u32>>(1)?, ts(2)?) {
                (Some(value), Some(until)) => Some(Ceiling { value, until }),
                _ => None,
            };
            let parked = match (ts(5)?, r.get::<_, Option<String>>(7)?) {
                (Some(until), Some(kind)) => Some(Parked {
                    until,
                    since: ts(6)?.unwrap_or(until),
                    kind: ParkKind::parse(&kind),
                    reason: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                }),
                _ => None,
            };
            let last_error = match (r.get::<_, Option<String>>(10)?, ts(11)?) {
                (Some(text), Some(at)) => Some(LastError { at, text }),
                _ => None,
            };
            Ok(Record {
                first_send: ts(0)?,
                ceiling,
                last_pick: ts(3)?,
                pace_until: ts(4)?,
                parked,
                throttles: r.get(9)?,
                last_error,
            })
        })
        .optional()?;
    Ok(row.unwrap_or_default())
}
