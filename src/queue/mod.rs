//! The durable outbound queue: messages Postern accepted with `250 …
//! queued as ID` and delivers later, in `data_dir/queue.sqlite3`.
//!
//! Why SQLite and not a file per message: the promise is "on disk before
//! the 250", and a file per message costs an fsync of the file and of its
//! directory for every message, while one [`Db`] thread commits every
//! message waiting at that moment with one fsync (group commit) — and a
//! transaction is all or nothing, so a message half-written when the disk
//! filled up or the process died is simply not there. The message bytes
//! sit in the row's last column, so listing the queue never reads them.
//!
//! A message's life: [`Queue::enqueue`] (durable) → the workers find
//! [`Queue::due`] messages and [`Queue::start`] each (durable: a message is
//! marked in flight before anything goes upstream) → [`Queue::delivered`]
//! (the row goes), [`Queue::defer`]
//! (back with a next try) or [`Queue::remove`] after a bounce or expiry.
//! A message found in flight at start was being delivered when the process
//! died: it goes back to the queue marked `crashed` (it may arrive twice),
//! which `postern queue` shows.
//!
//! Knows nothing of SMTP, routes or providers: addresses are strings, the
//! message is bytes. The delivery workers live in `smtp::delivery`.

pub mod dsn;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tokio::sync::Notify;

use crate::db::{Db, DbError, Schema};

/// File name of the queue inside `data_dir`.
pub const QUEUE_FILE: &str = "queue.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user         TEXT    NOT NULL,
    route        TEXT    NOT NULL,
    mail_from    TEXT    NOT NULL,
    -- size=N, 8bitmime, smtputf8 (space separated)
    params       TEXT    NOT NULL,
    -- one recipient per line
    rcpts        TEXT    NOT NULL,
    helo         TEXT    NOT NULL,
    peer         TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_ms  INTEGER NOT NULL,
    last_error   TEXT,
    -- set while a worker delivers it
    in_flight_ms INTEGER,
    -- 1: it was in flight when a Postern process died: it may arrive twice
    crashed      INTEGER NOT NULL DEFAULT 0,
    body         BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (next_try_ms);
CREATE TABLE IF NOT EXISTS totals (
    one      INTEGER PRIMARY KEY CHECK (one = 1),
    messages INTEGER NOT NULL,
    bytes    INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals (one, messages, bytes) VALUES (1, 0, 0);
CREATE TRIGGER IF NOT EXISTS queue_insert AFTER INSERT ON queue BEGIN
    UPDATE totals SET messages = messages + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS queue_delete AFTER DELETE ON queue BEGIN
    UPDATE totals SET messages = messages - 1, bytes = bytes - OLD.size;
END;
CREATE TABLE IF NOT EXISTS events (
    at_ms INTEGER NOT NULL,
    id    INTEGER NOT NULL,
    kind  TEXT    NOT NULL,
    text  TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_id ON events (id, at_ms);
";

/// Events are kept this long (`postern queue show` prints a message's).
const EVENTS_KEEP_MS: i64 = 7 * 86_400_000;

/// A queue failure.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("queue {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("queue: {0}")]
    Invalid(String),
    #[error("queue: {0}")]
    Task(String),
    #[error("{0}")]
    Shared(String),
    /// `max_queue_size` reached: nothing was written.
    #[error("the queue is full ({messages} messages, {bytes} bytes; max_queue_size is {max_messages} messages, {max_bytes} bytes)")]
    Full {
        messages: u64,
        bytes: u64,
        max_messages: u64,
        max_bytes: u64,
    },
    #[error("no queued message {0}")]
    NoSuchMessage(QueueId),
}

impl QueueError {
    /// The disk (or the file's size limit) is full: nothing was written.
    pub fn is_disk_full(&self) -> bool {
        match self {
            QueueError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            QueueError::Shared(text) => text.contains("database or disk is full"),
            _ => false,
        }
    }

    /// Full (by the cap or the disk): the client should try again later.
    pub fn is_full(&self) -> bool {
        matches!(self, QueueError::Full { .. }) || self.is_disk_full()
    }
}

impl DbError for QueueError {
    fn shared(&self) -> QueueError {
        QueueError::Shared(self.to_string())
    }
    fn task(what: &str) -> QueueError {
        QueueError::Task(what.to_owned())
    }
    fn invalid(what: String) -> QueueError {
        QueueError::Invalid(what)
    }
    fn io(path: &Path, source: std::io::Error) -> QueueError {
        QueueError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A queued message's id, as `250 2.0.0 queued as ID` and `postern queue`
/// show it: ten hexadecimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct QueueId(pub i64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010X}", self.0)
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.to_string()
    }
}

impl std::str::FromStr for QueueId {
    type Err = String;
    fn from_str(s: &str) -> Result<QueueId, String> {
        i64::from_str_radix(s.trim(), 16)
            .ok()
            .filter(|n| *n > 0)
            .map(QueueId)
            .ok_or_else(|| {
                format!("{s:?} is not a queue id (hexadecimal, as `postern queue` shows it)")
            })
    }
}

/// MAIL FROM parameters kept with a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Params {
    pub size: Option<u64>,
    pub eight_bit: bool,
    pub smtputf8: bool,
}

impl Params {
    fn encode(&self) -> String {
        let mut v = Vec::new();
        if let Some(s) = self.size {
            v.push(format!("size={s}"));
        }
        if self.eight_bit {
            v.push("8bitmime".into());
        }
        if self.smtputf8 {
            v.push("smtputf8".into());
        }
        v.join(" ")
    }

    fn decode(s: &str) -> Params {
        let mut p = Params::default();
        for w in s.split_whitespace() {
            match w {
                "8bitmime" => p.eight_bit = true,
                "smtputf8" => p.smtputf8 = true,
                _ => p.size = w.strip_prefix("size=").and_then(|n| n.parse().ok()),
            }
        }
        p
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The local user that sent it.
    pub user: String,
    /// The route it goes by (`ACCOUNT` or `pool:NAME`).
    pub route: String,
    /// The envelope sender without angle brackets (empty: `<>`).
    pub mail_from: String,
    pub params: Params,
    pub rcpts: Vec<String>,
    pub helo: String,
    pub peer: String,
    pub body: Vec<u8>,
}

/// A queued message as listed (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: QueueId,
    pub user: String,
    pub route: String,
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub size: u64,
    pub received: Timestamp,
    pub attempts: u32,
    pub next_try: Timestamp,
    pub last_error: Option<String>,
    /// Being delivered now (since then).
    pub in_flight: Option<Timestamp>,
    /// It was in flight when a Postern process died: it may arrive twice.
    pub crashed: bool,
}

/// A message claimed for delivery, with its bytes.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub entry: Entry,
    pub params: Params,
    pub helo: String,
    pub peer: String,
    pub body: Vec<u8>,
}

/// One event in a message's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub at: Timestamp,
    pub kind: String,
    pub text: String,
}

/// Depth and age of the queue for one route, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSummary {
    pub route: String,
    pub messages: u64,
    pub bytes: u64,
    pub oldest: Timestamp,
    pub next_try: Timestamp,
}

/// `max_queue_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub max_messages: u64,
    pub max_bytes: u64,
}

/// The queue. Cheap to clone (shares the database thread).
#[derive(Clone)]
pub struct Queue {
    db: Db<QueueError>,
    caps: Caps,
    /// Woken when a message is queued (or retried) by this process.
    wake: Arc<Notify>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("path", &self.db.path())
            .finish()
    }
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

const ENTRY_COLUMNS: &str = "id, user, route, mail_from, rcpts, size, received_ms, attempts,
    next_try_ms, last_error, in_flight_ms, crashed";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let rcpts: String = r.get(4)?;
    Ok(Entry {
        id: QueueId(r.get(0)?),
        user: r.get(1)?,
        route: r.get(2)?,
        mail_from: r.get(3)?,
        rcpts: rcpts.lines().map(str::to_owned).collect(),
        size: r.get::<_, i64>(5)?.max(0) as u64,
        received: ts(r.get(6)?),
        attempts: r.get(7)?,
        next_try: ts(r.get(8)?),
        last_error: r.get(9)?,
        in_flight: r.get::<_, Option<i64>>(10)?.map(ts),
        crashed: r.get::<_, i64>(11)? != 0,
    })
}

fn event(
    c: &Connection,
    id: QueueId,
    at: Timestamp,
    kind: &str,
    text: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO events (at_ms, id, kind, text) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![at.as_millisecond(), id.0, kind, text])
        .map(drop)
}

impl Queue {
    /// Opens (creating if needed) `path`.
    pub fn open(path: &Path, caps: Caps) -> Result<Queue, QueueError> {
        let schema = Schema {
            version: 1,
            sql: SCHEMA,
        };
        Ok(Queue {
            db: Db::open(path, &schema, "postern-queue")?,
            caps,
            wake: Arc::new(Notify::new()),
        })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// Woken when this process queues or retries a message.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Puts a message on disk (fsynced) and returns its id; `Full` when
    /// `max_queue_size` would be passed. Nothing is written on any error.
    pub async fn enqueue(&self, m: NewMessage, now: Timestamp) -> Result<QueueId, QueueError> {
        let caps = self.caps;
        let id = self
            .db
            .run(true, true, move |c| {
                let (messages, bytes): (i64, i64) = c
                    .prepare_cached("SELECT messages, bytes FROM totals WHERE one = 1")?
                    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let (messages, bytes) = (messages.max(0) as u64, bytes.max(0) as u64);
                let size = m.body.len() as u64;
                if messages + 1 > caps.max_messages || bytes + size > caps.max_bytes {
                    return Err(QueueError::Full {
                        messages,
                        bytes,
                        max_messages: caps.max_messages,
                        max_bytes: caps.max_bytes,
                    });
                }
                c.prepare_cached(
                    "INSERT INTO queue (user, route, mail_from, params, rcpts, helo, peer, size,
                        received_ms, next_try_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
                )?
                .execute(params![
                    m.user,
                    m.route,
                    m.mail_from,
                    m.params.encode(),
                    m.rcpts.join("\n"),
                    m.helo,
                    m.peer,
                    size as i64,
                    now.as_millisecond(),
                    m.body,
                ])?;
                let id = QueueId(c.last_insert_rowid());
                event(
                    c,
                    id,
                    now,
                    "queued",
                    &format!("from user {} via {}", m.user, m.route),
                )?;
                Ok(id)
            })
            .await?;
        self.wake.notify_waiters();
        Ok(id)
    }

    /// Up to `limit` messages due by `now` that are not in flight, oldest
    /// first, with their bytes, skipping the routes in `skip` and the ids in
    /// `taken` (handed to a worker already). Reads only: a worker marks a
    /// message with [`Queue::start`] before it sends anything.
    pub async fn due(
        &self,
        now: Timestamp,
        limit: usize,
        skip: Vec<String>,
        taken: Vec<QueueId>,
    ) -> Result<Vec<Claimed>, QueueError> {
        self.db
            .read(move |c| {
                let mut out = Vec::new();
                let not_in = (0..skip.len())
                    .map(|i| format!("?{}", i + 3))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut st = c.prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS}, params, helo, peer, body FROM queue
                     WHERE next_try_ms <= ?1 AND in_flight_ms IS NULL AND route NOT IN ({not_in})
                     ORDER BY next_try_ms, id LIMIT ?2"
                ))?;
                let mut args: Vec<rusqlite::types::Value> = vec![
                    now.as_millisecond().into(),
                    ((limit + taken.len()) as i64).into(),
                ];
                args.extend(skip.into_iter().map(rusqlite::types::Value::from));
                let mut rows = st.query(rusqlite::params_from_iter(args))?;
                while let Some(r) = rows.next()? {
                    let e = entry(r)?;
                    if taken.contains(&e.id) {
                        continue;
                    }
                    out.push(Claimed {
                        entry: e,
                        params: Params::decode(&r.get::<_, String>(12)?),
                        helo: r.get(13)?,
                        peer: r.get(14)?,
                        body: r.get(15)?,
                    });
                    if out.len() == limit {
                        break;
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Marks a message in flight, durably, before anything of it goes
    /// upstream; false when it is in flight already or gone. Workers
    /// starting together share one fsync.
    pub async fn start(&self, id: QueueId, now: Timestamp) -> Result<bool, QueueError> {
        self.db
            .run(true, true, move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE queue SET in_flight_ms = ?2 WHERE id = ?1 AND in_flight_ms IS NULL",
                    )?
                    .execute(params![id.0, now.as_millisecond()])?;
                Ok(n == 1)
            })
            .await
    }

    /// Delivered to every recipient: the message leaves the queue. Lazy:
    /// after a `kill -9` within ~50 ms it is still marked in flight, so it
    /// comes back marked `crashed` (it may arrive twice).
    pub fn delivered(&self, id: QueueId, now: Timestamp, text: String) -> Result<(), QueueError> {
        self.db
            .lazy("queue: could not record a delivery", move |c| {
                c.prepare_cached("DELETE FROM queue WHERE id = ?1")?
                    .execute(params![id.0])?;
                event(c, id, now, "delivered", &text)?;
                Ok(())
            })
    }

    /// Not delivered (to `rcpts`, now the message's recipients): back in
    /// the queue until `next_try`. `attempt`: counts as a delivery attempt
    /// (a pool out of capacity holding its messages does not).
    pub async fn defer(
        &self,
        id: QueueId,
        rcpts: Vec<String>,
        next_try: Timestamp,
        error: String,
        attempt: bool,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE queue SET rcpts = ?2, next_try_ms = ?3, last_error = ?4,
                        attempts = attempts + ?5, in_flight_ms = NULL
                     WHERE id = ?1",
                )?
                .execute(params![
                    id.0,
                    rcpts.join("\n"),
                    next_try.as_millisecond(),
                    error,
                    i64::from(attempt)
                ])?;
                event(
                    c,
                    id,
                    now,
                    if attempt { "deferred" } else { "held" },
                    &error,
                )?;
                Ok(())
            })
            .await
    }

    /// Gone for good (bounced, expired, deleted): `kind` and `text` say why.
    pub async fn remove(
        &self,
        id: QueueId,
        kind: &'static str,
        text: String,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        self.db
            .write(move |c| {
                let n = c
                    .prepare_cached("DELETE FROM queue WHERE id = ?1")?
                    .execute(params![id.0])?;
                if n == 0 {
                    return Err(QueueError::NoSuchMessage(id));
                }
                event(c, id, now, kind, &text)?;
                Ok(())
            })
            .await
    }

    /// Due now (`postern queue retry`): every message, or one.
    pub async fn retry(&self, id: Option<QueueId>, now: Timestamp) -> Result<u64, QueueError> {
        let n = self
            .db
            .write(move |c| {
                let n = match id {
                    Some(id) => {
                        let n = c
                            .prepare_cached("UPDATE queue SET next_try_ms = ?2 WHERE id = ?1")?
                            .execute(params![id.0, now.as_millisecond()])?;
                        if n == 0 {
                            return Err(QueueError::NoSuchMessage(id));
                        }
                        n
                    }
                    None => c
                        .prepare_cached("UPDATE queue SET next_try_ms = ?1")?
                        .execute(params![now.as_millisecond()])?,
                };
                Ok(n as u64)
            })
            .await?;
        self.wake.notify_waiters();
        Ok(n)
    }

    /// At start: what was in flight when this queue's Postern died goes back
    /// to the queue, due now, marked `crashed`. Also forgets old events.
    pub async fn recover(&self, now: Timestamp) -> Result<Vec<QueueId>, QueueError> {
        self.db
            .write(move |c| {
                let ids: Vec<i64> = c
                    .prepare_cached("SELECT id FROM queue WHERE in_flight_ms IS NOT NULL")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in &ids {
                    c.prepare_cached(
                        "UPDATE queue SET in_flight_ms = NULL, crashed = 1, next_try_ms = ?2
                         WHERE id = ?1",
                    )?
                    .execute(params![id, now.as_millisecond()])?;
                    event(
                        c,
                        QueueId(*id),
                        now,
                        "crashed",
                        "was being delivered when Postern stopped: it may arrive twice",
                    )?;
                }
                c.prepare_cached("DELETE FROM events WHERE at_ms < ?1")?
                    .execute(params![now.as_millisecond() - EVENTS_KEEP_MS])?;
                Ok(ids.into_iter().map(QueueId).collect())
            })
            .await
    }

    /// Every queued message, oldest first.
    pub async fn list(&self) -> Result<Vec<Entry>, QueueError> {
        self.db
            .read(|c| {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM queue ORDER BY received_ms, id"
                ))?;
                let rows = st.query_map([], entry)?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    /// One message with its bytes (None: not queued), and its events.
    pub async fn show(&self, id: QueueId) -> Result<(Option<Claimed>, Vec<Event>), QueueError> {
        self.db
            .read(move |c| {
                let m = c
                    .prepare_cached(&format!(
                        "SELECT {ENTRY_COLUMNS}, params, helo, peer, body FROM queue WHERE id = ?1"
                    ))?
                    .query_row(params![id.0], |r| {
                        Ok(Claimed {
                            entry: entry(r)?,
                            params: Params::decode(&r.get::<_, String>(12)?),
                            helo: r.get(13)?,
                            peer: r.get(14)?,
                            body: r.get(15)?,
                        })
                    })
                    .optional()?;
                let events = c
                    .prepare_cached(
                        "SELECT at_ms, kind, text FROM events WHERE id = ?1 ORDER BY at_ms",
                    )?
                    .query_map(params![id.0], |r| {
                        Ok(Event {
                            at: ts(r.get(0)?),
                            kind: r.get(1)?,
                            text: r.get(2)?,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                Ok((m, events))
            })
            .await
    }

    /// Depth, bytes, oldest arrival and next try per route.
    pub async fn summary(&self) -> Result<Vec<RouteSummary>, QueueError> {
        self.db
            .read(|c| {
                let mut st = c.prepare_cached(
                    "SELECT route, COUNT(*), SUM(size), MIN(received_ms), MIN(next_try_ms)
                     FROM queue GROUP BY route ORDER BY route",
                )?;
                let rows = st.query_map([], |r| {
                    Ok(RouteSummary {
                        route: r.get(0)?,
                        messages: r.get::<_, i64>(1)?.max(0) as u64,
                        bytes: r.get::<_, i64>(2)?.max(0) as u64,
                        oldest: ts(r.get(3)?),
                        next_try: ts(r.get(4)?),
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    /// The earliest next try of a message not in flight and not on one of
    /// the `skip` routes (for the workers' sleep).
    pub async fn next_due(&self, skip: Vec<String>) -> Result<Option<Timestamp>, QueueError> {
        self.db
            .read(move |c| {
                let not_in = (0..skip.len())
                    .map(|i| format!("?{}", i + 1))
                    .collect::<Vec<_>>()
                    .join(", ");
                let args: Vec<rusqlite::types::Value> =
                    skip.into_iter().map(rusqlite::types::Value::from).collect();
                Ok(c.prepare_cached(&format!(
                    "SELECT MIN(next_try_ms) FROM queue
                     WHERE in_flight_ms IS NULL AND route NOT IN ({not_in})"
                ))?
                .query_row(rusqlite::params_from_iter(args), |r| {
                    r.get::<_, Option<i64>>(0)
                })?
                .map(ts))
            })
            .await
    }
}

#[cfg(test)]
mod tests;
