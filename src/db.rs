//! One SQLite file behind one thread, with group commit: the embedded
//! stores (quota counters, the outbound queue) run every operation here.
//!
//! The thread owns the connection and takes the operations waiting for it
//! as one batch: one `BEGIN IMMEDIATE` transaction (`BEGIN DEFERRED` when
//! the batch only reads), each operation in its own savepoint (one that
//! fails is rolled back alone), and one `COMMIT`. So the check and the write
//! of an operation cannot interleave with another connection's, in this
//! process or another one on the same file, and many operations at once pay
//! for one fsync. An operation's caller hears back only after its batch is
//! committed. A batch holding a *durable* operation commits with
//! `synchronous = FULL` (on disk before anyone hears back); others with
//! `NORMAL`.
//!
//! *Lazy* operations (nobody waits for them) do not wake the thread: they
//! ride along with the next batch, within [`LAZY_WAIT`].
//!
//! Knows nothing of what the operations do; the store modules above own
//! their schema and their error type ([`DbError`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

/// Operations run in one batch at most (a batch is one transaction).
const MAX_BATCH: usize = 256;

/// How long a batch of only lazy operations waits for company.
pub const LAZY_WAIT: Duration = Duration::from_millis(50);

/// What a store's error type must offer the batch thread.
pub trait DbError: From<rusqlite::Error> + Send + 'static {
    /// The same failure for another caller of the same batch (a failed
    /// BEGIN or COMMIT reaches every operation in it).
    fn shared(&self) -> Self;
    /// The thread is gone, or an operation panicked.
    fn task(what: &str) -> Self;
    /// The file cannot be used: `what` says why.
    fn invalid(what: String) -> Self;
    /// The folder or the thread could not be made.
    fn io(path: &Path, source: std::io::Error) -> Self;
}

/// What an operation's caller is told once its batch has committed (or not).
type Reply<E> = Box<dyn FnOnce(Result<(), &E>) + Send>;

/// An operation: given the connection inside the batch's transaction, or the
/// reason the batch could not begin (then it only reports that).
type Op<E> = Box<dyn FnOnce(Result<&Connection, &E>) -> Reply<E> + Send>;

/// One operation for the thread.
struct Job<E> {
    /// Writes something (the batch then takes the write lock at BEGIN).
    writes: bool,
    /// Must be on disk before its caller hears back (`synchronous = FULL`).
    durable: bool,
    /// `None`: a wake-up for the lazy queue, nothing to run itself.
    run: Option<Op<E>>,
}

/// Lazy operations wait here, not in the channel, so that queueing one does
/// not wake the thread: the next batch takes them along. Only the first one
/// queued while the queue is empty sends a wake-up, so they wait at most
/// [`LAZY_WAIT`] when nothing else comes.
type LazyQueue<E> = Arc<Mutex<Vec<Job<E>>>>;

/// A schema: its `user_version` and the statements that create it (run when
/// the file's version is lower; they must be idempotent, `IF NOT EXISTS`).
pub struct Schema {
    pub version: i64,
    pub sql: &'static str,
}

/// A database file and its thread. Cloning shares the thread; it ends when
/// the last clone is dropped, after the operations already sent.
pub struct Db<E> {
    path: PathBuf,
    jobs: mpsc::Sender<Job<E>>,
    lazy: LazyQueue<E>,
}

impl<E> Clone for Db<E> {
    fn clone(&self) -> Self {
        Db {
            path: self.path.clone(),
            jobs: self.jobs.clone(),
            lazy: Arc::clone(&self.lazy),
        }
    }
}

impl<E: DbError> Db<E> {
    /// Opens (creating if needed) the file and its folder in WAL mode,
    /// creates or upgrades the schema, and starts the thread `name`.
    pub fn open(path: &Path, schema: &Schema, name: &str) -> Result<Db<E>, E> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| E::io(dir, e))?;
        }
        let mut conn = Connection::open(path)?;
        // Another process (a second `run`, or `status`) may hold the write
        // lock for a moment.
        conn.busy_timeout(Duration::from_secs(10))?;
        // Every statement stays prepared.
        conn.set_prepared_statement_cache_capacity(64);
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(E::invalid(format!(
                "{}: cannot switch to WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Create the schema only when missing: reading `user_version` takes
        // no lock, so opening never waits for a busy writer (`status`).
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < schema.version {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(schema.sql)?;
            tx.pragma_update(None, "user_version", schema.version)?;
            tx.commit()?;
        } else if version > schema.version {
            return Err(E::invalid(format!(
                "{}: written by a newer Postern (schema {version}, this one knows {})",
                path.display(),
                schema.version
            )));
        }
        let (jobs, queue) = mpsc::channel();
        let lazy = LazyQueue::default();
        let lazy_queue = Arc::clone(&lazy);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(conn, &queue, &lazy_queue))
            .map_err(|e| E::io(path, e))?;
        Ok(Db {
            path: path.to_owned(),
            jobs,
            lazy,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the thread inside the next batch; the answer comes once
    /// that batch has committed (with `durable`, on disk).
    pub async fn run<T, F>(&self, writes: bool, durable: bool, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (tell, answer) = oneshot::channel();
        let run: Op<E> = Box::new(move |c: Result<&Connection, &E>| -> Reply<E> {
            let result = c.map_err(E::shared).and_then(|c| in_savepoint(c, f));
            Box::new(move |committed: Result<(), &E>| {
                let result = result.and_then(|v| committed.map(|()| v).map_err(E::shared));
                let _ = tell.send(result);
            })
        });
        self.jobs
            .send(Job {
                writes,
                durable,
                run: Some(run),
            })
            .map_err(|_| E::task("the database thread has stopped"))?;
        answer
            .await
            .map_err(|_| E::task("the database thread stopped"))?
    }

    pub async fn read<T, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.run(false, false, f).await
    }

    pub async fn write<T, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.run(true, false, f).await
    }

    /// Queues `f` for a coming batch without waiting for it; a failure is
    /// logged with `what`.
    pub fn lazy<F>(&self, what: &'static str, f: F) -> Result<(), E>
    where
        F: FnOnce(&Connection) -> Result<(), E> + Send + 'static,
        E: std::fmt::Display,
    {
        let run: Op<E> = Box::new(move |c: Result<&Connection, &E>| -> Reply<E> {
            let result = c.map_err(E::shared).and_then(|c| in_savepoint(c, f));
            Box::new(move |committed: Result<(), &E>| {
                let result = result.and_then(|()| committed.map_err(E::shared));
                if let Err(e) = result {
                    tracing::warn!(error = %e, "{what}");
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
                .map_err(|_| E::task("the database thread has stopped"))?;
        }
        Ok(())
    }
}

/// The thread: batches until every `Db` clone is gone, then runs what is
/// left in the lazy queue.
fn serve<E: DbError>(conn: Connection, queue: &mpsc::Receiver<Job<E>>, lazy: &Mutex<Vec<Job<E>>>) {
    let mut full = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let take_lazy = |batch: &mut Vec<Job<E>>| {
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
            // with the next operation instead of a transaction of its own.
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
fn run_batch<E: DbError>(conn: &Connection, batch: &mut Vec<Job<E>>, full: &mut bool) {
    batch.retain(|j| j.run.is_some());
    if batch.is_empty() {
        return;
    }
    let writes = batch.iter().any(|j| j.writes);
    let durable = batch.iter().any(|j| j.durable);
    let begun = (|| -> Result<(), E> {
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
    let replies: Vec<Reply<E>> = ops.map(|op| op(Ok(conn))).collect();
    let committed = conn
        .prepare_cached("COMMIT")
        .and_then(|mut st| st.execute([]))
        .map(drop)
        .map_err(E::from);
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for reply in replies {
        reply(committed.as_ref().map(|_| ()));
    }
}

/// Runs one operation in a savepoint: on error (or panic) only its own
/// changes are undone.
fn in_savepoint<T, E: DbError, F>(c: &Connection, f: F) -> Result<T, E>
where
    F: FnOnce(&Connection) -> Result<T, E>,
{
    c.prepare_cached("SAVEPOINT op")?.execute([])?;
    let result = match catch_unwind(AssertUnwindSafe(|| f(c))) {
        Ok(r) => r,
        Err(_) => Err(E::task("a database operation panicked")),
    };
    if result.is_err() {
        c.prepare_cached("ROLLBACK TO op")?.execute([])?;
    }
    c.prepare_cached("RELEASE op")?.execute([])?;
    result
}
