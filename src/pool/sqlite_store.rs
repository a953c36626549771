//! The embedded store: one SQLite file (`data_dir/state.sqlite3`), WAL.
//!
//! One thread ("postern-store") owns the connection and runs every operation
//! for this process. It takes the operations waiting for it as one batch:
//! one `BEGIN IMMEDIATE` transaction (`BEGIN DEFERRED` when the batch only
//! reads), each operation in its own savepoint (one that fails is rolled back
//! alone), and one `COMMIT` (group commit). So the check and the insert of a
//! reserve cannot interleave with another connection's, in this process or
//! another one on the same file, and sixteen sessions reserving at once pay
//! for one fsync, not sixteen. An operation's caller hears back only after
//! its batch is committed.
//!
//! Durability: a batch holding a reservation commits with
//! `synchronous = FULL`, so a unit is on disk before its RCPT is answered and
//! neither `kill -9` nor a power cut makes Postern forget it. Other batches
//! commit with `NORMAL` (no fsync): after a power cut a commit that did not
//! reach the disk leaves its units reserved, which still count (over-counting
//! is the safe side).
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
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use super::quota::Quota;
use super::record::{
    throttle_backoff, Claim, LastError, Loaded, ParkKind, Parked, Record, Reservation, Reserved,
    StoreError,
};
use super::window::{add, ms_to_ts, Ceiling, KEEP_MS};

/// `PRAGMA user_version` of the schema below.
const SCHEMA_VERSION: i64 = 2;

/// Operations run in one batch at most (a batch is one transaction).
const MAX_BATCH: usize = 256;

/// How long a batch of only lazy operations (commits) waits for company.
const LAZY_WAIT: Duration = Duration::from_millis(50);

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

/// What an operation's caller is told once its batch has committed (or not).
type Reply = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// An operation: given the connection inside the batch's transaction, or the
/// reason the batch could not begin (then it only reports that).
type Op = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> Reply + Send>;

/// One operation for the store thread.
struct Job {
    /// Writes something (the batch then takes the write lock at BEGIN).
    writes: bool,
    /// Must be on disk before its caller hears back (`synchronous = FULL`).
    durable: bool,
    /// `None`: a wake-up for the lazy queue, nothing to run itself.
    run: Option<Op>,
}

/// Lazy operations (commits) wait here, not in the channel, so that queueing
/// one does not wake the store thread: the next batch takes them along. Only
/// the first one queued while the queue is empty sends a wake-up, so they
/// wait at most [`LAZY_WAIT`] when nothing else comes.
type LazyQueue = Arc<Mutex<Vec<Job>>>;

/// The SQLite store. Cloning shares the store thread; it ends when the last
/// clone is dropped, after the operations already sent.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    lazy: LazyQueue,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its folder, and
    /// starts the store thread.
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
        // Every statement below stays prepared (there are about 30).
        conn.set_prepared_statement_cache_capacity(64);
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid(format!(
                "{}: cannot switch to WAL (journal_mode is {mode})",
                path.display()
            )));
        }
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
        let (jobs, queue) = mpsc::channel();
        let lazy = LazyQueue::default();
        let lazy_queue = Arc::clone(&lazy);
        std::thread::Builder::new()
            .name("postern-store".into())
            .spawn(move || serve(conn, &queue, &lazy_queue))
            .map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(SqliteStore {
            path: path.to_owned(),
            jobs,
            lazy,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the store thread inside the next batch; the answer comes
    /// once that batch has committed.
    async fn run<T, F>(&self, writes: bool, durable: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tell, answer) = oneshot::channel();
        let run: Op = Box::new(move |c: Result<&Connection, &StoreError>| -> Reply {
            let result = c
                .map_err(StoreError::batch)
                .and_then(|c| in_savepoint(c, f));
            Box::new(move |committed: Result<(), &StoreError>| {
                let result = result.and_then(|v| committed.map(|()| v).map_err(StoreError::batch));
                let _ = tell.send(result);
            })
        });
        self.jobs
            .send(Job {
                writes,
                durable,
                run: Some(run),
            })
            .map_err(|_| StoreError::Task("the store thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Task("the store thread stopped".into()))?
    }

    /// Queues `f` for a coming batch without waiting for it.
    fn lazy<F>(&self, f: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let run: Op = Box::new(move |c: Result<&Connection, &StoreError>| -> Reply {
            let result = c
                .map_err(StoreError::batch)
                .and_then(|c| in_savepoint(c, f));
            Box::new(move |committed: Result<(), &StoreError>| {
                let result = result.and_then(|()| committed.map_err(StoreError::batch));
                if let Err(e) = result {
                    tracing::warn!(error = %e, "quota store: could not mark units sent (they stay counted)");
                }
            })
        });
        let first = {
            let mut q = self.lazy.lock().unwrap_or_else(PoisonError::into_inner);
            q.push(Job {
                writes: true,
                durable: false,
                run: Some(run),
            });
            q.len() == 1
        };
        if first {
            let wake = Job {
                writes: false,
                durable: false,
                run: None,
            };
            self.jobs
                .send(wake)
                .map_err(|_| StoreError::Task("the store thread has stopped".into()))?;
        }
        Ok(())
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(false, false, f).await
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(true, false, f).await
    }
}

/// The store thread: batches until every `SqliteStore` clone is gone, then
/// runs what is left in the lazy queue.
fn serve(conn: Connection, queue: &mpsc::Receiver<Job>, lazy: &Mutex<Vec<Job>>) {
    let mut full = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let take_lazy = |batch: &mut Vec<Job>| {
        let mut q = lazy.lock().unwrap_or_else(PoisonError::into_inner);
        // Queued before the jobs just received (or at the same time): first.
        batch.splice(0..0, q.drain(..));
    };
    while let Ok(first) = queue.recv() {
        batch.push(first);
        loop {
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // Only a wake-up for lazy work: give it a moment to ride along
            // with the next reservation instead of a transaction of its own.
            if batch.iter().any(|j| j.run.is_some()) {
                break;
            }
            match queue.recv_timeout(LAZY_WAIT) {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        take_lazy(&mut batch);
        run_batch(&conn, &mut batch, &mut full);
    }
    take_lazy(&mut batch);
    run_batch(&conn, &mut batch, &mut full);
}

/// One transaction for every job in `batch` (emptied).
fn run_batch(conn: &Connection, batch: &mut Vec<Job>, full: &mut bool) {
    batch.retain(|j| j.run.is_some());
    if batch.is_empty() {
        return;
    }
    let writes = batch.iter().any(|j| j.writes);
    let durable = batch.iter().any(|j| j.durable);
    let begun = (|| -> Result<(), StoreError> {
        if durable != *full {
            let mode = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            conn.prepare_cached(mode)?.execute([])?;
            *full = durable;
        }
        let begin = if writes {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN DEFERRED"
        };
        conn.prepare_cached(begin)?.execute([])?;
        Ok(())
    })();
    let ops = batch.drain(..).filter_map(|j| j.run);
    if let Err(e) = &begun {
        // Every caller in the batch hears why; none of them ran.
        for op in ops {
            op(Err(e))(Err(e));
        }
        return;
    }
    let replies: Vec<Reply> = ops.map(|op| op(Ok(conn))).collect();
    let committed = conn
        .prepare_cached("COMMIT")
        .and_then(|mut st| st.execute([]))
        .map(drop)
        .map_err(StoreError::from);
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for reply in replies {
        reply(committed.as_ref().map(|_| ()));
    }
}

/// Runs one operation in a savepoint: on error (or panic) only its own
/// changes are undone.
fn in_savepoint<T, F>(c: &Connection, f: F) -> Result<T, StoreError>
where
    F: FnOnce(&Connection) -> Result<T, StoreError>,
{
    c.prepare_cached("SAVEPOINT op")?.execute([])?;
    let result = match catch_unwind(AssertUnwindSafe(|| f(c))) {
        Ok(r) => r,
        Err(_) => Err(StoreError::Task("a quota store operation panicked".into())),
    };
    if result.is_err() {
        c.prepare_cached("ROLLBACK TO op")?.execute([])?;
    }
    c.prepare_cached("RELEASE op")?.execute([])?;
    result
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
