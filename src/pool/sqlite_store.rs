//! The embedded store: one SQLite file (`data_dir/state.sqlite3`), WAL.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction, so the check and the
//! insert of a reserve cannot interleave with another connection's — in this
//! process or another one on the same file. `synchronous = FULL`: a unit is on
//! disk before `reserve` returns, so neither `kill -9` nor a power cut makes
//! Postern forget it. Blocking calls run on tokio's blocking pool.
//!
//! Inspect with `sqlite3 var/state.sqlite3 'SELECT * FROM accounts'`; times
//! are milliseconds since the Unix epoch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::store::{
    throttle_backoff, Claim, LastError, Loaded, ParkKind, Parked, Record, Reservation, Reserved,
    StoreError,
};
use super::window::{add, ms_to_ts, Ceiling, KEEP_MS};
use super::Quota;

/// `PRAGMA user_version` of the schema below.
const SCHEMA_VERSION: i64 = 1;

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
";

/// The SQLite store. Cloning shares the connection.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its folder.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut conn = Connection::open(path)?;
        // Another process (a second `run`, or `status`) may hold the write
        // lock for a moment.
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid(format!(
                "{}: cannot switch to WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        // Commits and releases need no fsync: after a power cut a commit that
        // did not reach the disk leaves its units reserved, which still count
        // (over-counting is the safe side). Reservations are made with FULL
        // (see `reserve`), so a unit is on disk before its RCPT is answered.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Create the schema only when missing: reading `user_version` takes
        // no lock, so opening never waits for a busy writer (`status`).
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < SCHEMA_VERSION {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        } else if version > SCHEMA_VERSION {
            return Err(StoreError::Invalid(format!(
                "{}: written by a newer Postern (schema {version}, this one knows {SCHEMA_VERSION})",
                path.display()
            )));
        }
        Ok(SqliteStore {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    pub(crate) async fn load(
        &self,
        account: &str,
        quota: &Quota,
        need: u32,
        now: Timestamp,
    ) -> Result<Loaded, StoreError> {
        let (account, quota) = (account.to_owned(), quota.clone());
        self.call(move |c| {
            // A read transaction: record and counts from one snapshot.
            let tx = c.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let record = read_record(&tx, &account)?;
            let cutoff = quota.window.cutoff_ms(now);
            let (sent, reserved, oldest): (u32, u32, Option<i64>) = tx
                .prepare_cached(
                    "SELECT COALESCE(SUM(sent = 1), 0), COALESCE(SUM(sent = 0), 0), MIN(at_ms)
                 FROM units WHERE account = ?1 AND at_ms > ?2",
                )?
                .query_row(params![account, cutoff], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            let limit = quota.limit(&record, now);
            let counted = u64::from(sent) + u64::from(reserved);
            let mut units = Vec::new();
            if counted + u64::from(need) > u64::from(limit.value) {
                let mut st = tx.prepare_cached(
                    "SELECT at_ms FROM units WHERE account = ?1 AND at_ms > ?2 ORDER BY at_ms",
                )?;
                let rows = st.query_map(params![account, cutoff], |r| r.get::<_, i64>(0))?;
                for r in rows {
                    units.push(r?);
                }
            }
            Ok(Loaded {
                record,
                sent,
                reserved,
                oldest,
                units,
            })
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
        self.call(move |c| {
            c.pragma_update(None, "synchronous", "FULL")?;
            let r = reserve_in(c, &account, &quota, n, now);
            c.pragma_update(None, "synchronous", "NORMAL")?;
            r
        })
        .await
    }
}

/// The reservation transaction (run with `synchronous = FULL`).
fn reserve_in(
    c: &mut Connection,
    account: &str,
    quota: &Quota,
    n: u32,
    now: Timestamp,
) -> Result<Reserved, StoreError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now_ms = now.as_millisecond();
    tx.prepare_cached("DELETE FROM units WHERE account = ?1 AND at_ms < ?2")?
        .execute(params![account, now_ms - KEEP_MS])?;
    let record = read_record(&tx, account)?;
    let limit = quota.limit(&record, now).value;
    let counted: u32 = tx
        .prepare_cached("SELECT COUNT(*) FROM units WHERE account = ?1 AND at_ms > ?2")?
        .query_row(params![account, quota.window.cutoff_ms(now)], |r| r.get(0))?;
    if u64::from(counted) + u64::from(n) > u64::from(limit) {
        tx.commit()?;
        return Ok(Reserved::Full { counted, limit });
    }
    let mut ids = Vec::with_capacity(n as usize);
    {
        let mut st = tx.prepare_cached("INSERT INTO units (account, at_ms) VALUES (?1, ?2)")?;
        for _ in 0..n {
            st.execute(params![account, now_ms])?;
            ids.push(tx.last_insert_rowid().unsigned_abs());
        }
    }
    tx.commit()?;
    Ok(Reserved::Ok(ids))
}

impl SqliteStore {
    pub(crate) async fn commit(
        &self,
        rs: &[Reservation],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let rs = rs.to_vec();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for r in &rs {
                {
                    let mut st = tx.prepare_cached(
                        "UPDATE units SET sent = 1 WHERE id = ?1 AND account = ?2",
                    )?;
                    for id in &r.ids {
                        st.execute(params![i64::try_from(*id).unwrap_or(-1), r.account])?;
                    }
                }
                ensure_row(&tx, &r.account)?;
                tx.prepare_cached(
                    "UPDATE accounts SET first_send_ms = COALESCE(first_send_ms, ?2), throttles = 0
                     WHERE account = ?1",
                )?
                .execute(params![r.account, now.as_millisecond()])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn release(&self, rs: &[Reservation]) -> Result<(), StoreError> {
        let rs = rs.to_vec();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut st =
                    tx.prepare_cached("DELETE FROM units WHERE id = ?1 AND account = ?2")?;
                for r in &rs {
                    for id in &r.ids {
                        st.execute(params![i64::try_from(*id).unwrap_or(-1), r.account])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn claim(
        &self,
        account: &str,
        now: Timestamp,
        pace_until: Timestamp,
    ) -> Result<Claim, StoreError> {
        let account = account.to_owned();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let record = read_record(&tx, &account)?;
            if let Some(p) = record.active_park(now) {
                return Ok(Claim::Parked(p.until));
            }
            if let Some(p) = record.pace_until.filter(|&p| p > now) {
                return Ok(Claim::Paced(p));
            }
            ensure_row(&tx, &account)?;
            tx.prepare_cached(
                "UPDATE accounts SET last_pick_ms = ?2, pace_until_ms = ?3 WHERE account = ?1",
            )?
            .execute(params![
                account,
                now.as_millisecond(),
                pace_until.as_millisecond()
            ])?;
            tx.commit()?;
            Ok(Claim::Claimed)
        })
        .await
    }

    pub(crate) async fn park(&self, account: &str, parked: &Parked) -> Result<(), StoreError> {
        let (account, parked) = (account.to_owned(), parked.clone());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            write_park(&tx, &account, &parked)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn park_throttled(
        &self,
        account: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Parked, StoreError> {
        let (account, reason) = (account.to_owned(), reason.to_owned());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_row(&tx, &account)?;
            let n: u32 = tx
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
            write_park(&tx, &account, &parked)?;
            tx.commit()?;
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
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx
                .prepare_cached(
                    "UPDATE accounts SET parked_until_ms = NULL, parked_since_ms = NULL,
                        park_kind = NULL, park_reason = NULL
                 WHERE account = ?1 AND park_kind IS NOT NULL
                   AND (?2 IS NULL OR park_kind = ?2)",
                )?
                .execute(params![account, kind.map(ParkKind::as_str)])?;
            tx.commit()?;
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
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_row(&tx, &account)?;
            tx.prepare_cached(
                "UPDATE accounts SET ceiling = ?2, ceiling_until_ms = ?3 WHERE account = ?1",
            )?
            .execute(params![
                account,
                ceiling.value,
                ceiling.until.as_millisecond()
            ])?;
            tx.commit()?;
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
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_row(&tx, &account)?;
            tx.prepare_cached(
                "UPDATE accounts SET last_error = ?2, last_error_ms = ?3 WHERE account = ?1",
            )?
            .execute(params![account, error.text, error.at.as_millisecond()])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

fn ensure_row(tx: &Transaction<'_>, account: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO accounts (account) VALUES (?1)")?
        .execute(params![account])
        .map(drop)
}

fn write_park(tx: &Transaction<'_>, account: &str, p: &Parked) -> rusqlite::Result<()> {
    ensure_row(tx, account)?;
    tx.prepare_cached(
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

fn read_record(tx: &Transaction<'_>, account: &str) -> rusqlite::Result<Record> {
    let row = tx
        .query_row(
            "SELECT first_send_ms, ceiling, ceiling_until_ms, last_pick_ms, pace_until_ms,
                    parked_until_ms, parked_since_ms, park_kind, park_reason, throttles,
                    last_error, last_error_ms
             FROM accounts WHERE account = ?1",
            params![account],
            |r| {
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
            },
        )
        .optional()?;
    Ok(row.unwrap_or_default())
}
