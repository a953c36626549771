//! Sandbox sink: each message becomes one Maildir file under
//! `data_dir/capture/` (written to `tmp/`, fsynced, renamed into `new/`), with
//! the envelope in `X-Postern-*` header lines above the message bytes, which
//! are stored exactly as received. Each file is also entered in the index
//! (`capture/postern-index.sqlite3`, [`crate::sandbox::index`]) that the web
//! UI, the API and the sandbox POP3 server read, and announced to whoever
//! waits for new mail.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::sandbox::index::{Index, IndexError};
use crate::sandbox::message::{self, Meta, Summary};
use crate::smtp::codec::Path as MailPath;

/// The index file, inside the Maildir folder (Maildir readers ignore files
/// at the top, as they do Dovecot's).
pub const INDEX_FILE: &str = "postern-index.sqlite3";

/// What the capture file records about the transaction.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub user: &'a str,
    /// The inbox it goes to (the user's `inbox`, else the user name).
    pub inbox: &'a str,
    pub mail_from: &'a MailPath,
    pub rcpts: &'a [MailPath],
    pub helo: &'a str,
    pub peer: std::net::SocketAddr,
    /// More `X-Postern-NAME: value` lines (what a sandbox route did).
    pub notes: &'a [(&'a str, String)],
}

/// What happened to captured mail (for live views and waiters).
#[derive(Debug, Clone)]
pub enum Event {
    New(Box<Summary>, std::sync::Arc<String>),
    Deleted(Vec<String>),
}

/// `X-Postern-*` lines of a capture file, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub user: String,
    pub inbox: String,
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub received: Option<jiff::Timestamp>,
    /// Every line, name without the prefix and value.
    pub lines: Vec<(String, String)>,
}

impl Head {
    /// Splits a capture file into its head and the message bytes.
    pub fn split(file: &[u8]) -> (Head, &[u8]) {
        let mut h = Head::default();
        let mut pos = 0;
        while file[pos..].starts_with(b"X-Postern-") {
            let Some(nl) = file[pos..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = String::from_utf8_lossy(&file[pos + 10..pos + nl]);
            let line = line.trim_end_matches('\r');
            if let Some((k, v)) = line.split_once(": ") {
                match k {
                    "User" => h.user = v.to_owned(),
                    "Inbox" => h.inbox = v.to_owned(),
                    "Mail-From" => h.mail_from = v.to_owned(),
                    "Rcpt-To" => h.rcpts.push(v.to_owned()),
                    "Received" => {
                        h.received = v.rsplit_once(" at ").and_then(|(_, t)| t.parse().ok())
                    }
                    _ => {}
                }
                h.lines.push((k.to_owned(), v.to_owned()));
            }
            pos += nl + 1;
        }
        if h.inbox.is_empty() {
            h.inbox = h.user.clone();
        }
        (h, &file[pos..])
    }
}

/// `[sandbox]` retention: what pruning keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_messages: Option<u64>,
    pub max_age: Option<std::time::Duration>,
}

#[derive(Debug)]
pub struct Capture {
    dir: PathBuf,
    counter: AtomicU64,
    index: Index,
    events: broadcast::Sender<Event>,
    retention: Retention,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl From<CaptureError> for std::io::Error {
    fn from(e: CaptureError) -> std::io::Error {
        match e {
            CaptureError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        }
    }
}

impl Capture {
    /// Make sure `dir/{tmp,new,cur}` exist, and remove what a crash left in
    /// `tmp/` (see [`Capture::clean_tmp`]).
    pub fn open(dir: &Path) -> std::io::Result<Capture> {
        Self::open_with(dir, Retention::default())
    }

    /// As [`Capture::open`], with `[sandbox]` retention; the index is
    /// opened (made if missing); call [`Capture::reconcile`] before use.
    pub fn open_with(dir: &Path, retention: Retention) -> std::io::Result<Capture> {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let removed = Self::clean_tmp(&dir.join("tmp"));
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, "removed unfinished captures left by a crash");
        }
        let index =
            Index::open(&dir.join(INDEX_FILE)).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Capture {
            dir: dir.to_owned(),
            counter: AtomicU64::new(0),
            index,
            events: broadcast::channel(1024).0,
            retention,
        })
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// New mail and deletions, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Makes the index agree with the Maildir: files it lacks are read and
    /// entered (all of them when the index was missing), rows without a
    /// file are dropped. Returns (entered, dropped).
    pub async fn reconcile(&self) -> Result<(usize, usize), CaptureError> {
        let known: std::collections::HashSet<String> =
            self.index.all_ids().await?.into_iter().collect();
        let dir = self.dir.clone();
        let files = tokio::task::spawn_blocking(move || list_files(&dir))
            .await
            .map_err(std::io::Error::other)??;
        let on_disk: std::collections::HashSet<&String> = files.iter().map(|(id, _)| id).collect();
        let stale: Vec<String> = known
            .iter()
            .filter(|id| !on_disk.contains(id))
            .cloned()
            .collect();
        let dropped = self.index.remove(stale).await?.len();
        let missing: Vec<(String, PathBuf)> = files
            .into_iter()
            .filter(|(id, _)| !known.contains(id))
            .collect();
        let mut entered = 0;
        for chunk in missing.chunks(256) {
            let chunk = chunk.to_vec();
            let items = tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .filter_map(|(id, path)| {
                        let bytes = std::fs::read(&path).ok()?;
                        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                        let (head, raw) = Head::split(&bytes);
                        let created = head
                            .received
                            .or_else(|| mtime.and_then(|t| jiff::Timestamp::try_from(t).ok()))
                            .unwrap_or_else(jiff::Timestamp::now);
                        let meta = Meta {
                            id,
                            inbox: head.inbox.clone(),
                            username: head.user.clone(),
                            created,
                            read: false,
                        };
                        Some(message::summarize(&meta, raw))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(std::io::Error::other)?;
            entered += items.len();
            self.index.add_many(items).await?;
        }
        if entered > 0 || dropped > 0 {
            tracing::info!(dir = %self.dir.display(), entered, dropped, "capture index brought in line with the Maildir");
        }
        self.prune().await?;
        Ok((entered, dropped))
    }

    /// The file of message `id` (in `new/` or `cur/`), if the id is a
    /// plain file name.
    fn file_of(&self, id: &str) -> Option<PathBuf> {
        if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\', '\0']) {
            return None;
        }
        ["new", "cur"]
            .iter()
            .map(|sub| self.dir.join(sub).join(id))
            .find(|p| p.is_file())
    }

    /// A captured message: its head and the bytes as received.
    pub async fn read(&self, id: &str) -> Result<Option<(Head, Vec<u8>)>, CaptureError> {
        let Some(path) = self.file_of(id) else {
            return Ok(None);
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (head, raw) = Head::split(&bytes);
        let raw = raw.to_vec();
        Ok(Some((head, raw)))
    }

    /// Deletes messages (files and index rows); returns the ids that were
    /// there.
    pub async fn delete(&self, ids: Vec<String>) -> Result<Vec<String>, CaptureError> {
        let paths: Vec<PathBuf> = ids.iter().filter_map(|id| self.file_of(id)).collect();
        tokio::task::spawn_blocking(move || {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        })
        .await
        .map_err(std::io::Error::other)?;
        let gone = self.index.remove(ids).await?;
        if !gone.is_empty() {
            let _ = self.events.send(Event::Deleted(gone.clone()));
        }
        Ok(gone)
    }

    /// Applies `[sandbox]` retention (`max_messages`, `max_age`).
    pub async fn prune(&self) -> Result<usize, CaptureError> {
        if self.retention == Retention::default() {
            return Ok(0);
        }
        let before = self.retention.max_age.map(|age| {
            jiff::Timestamp::now().as_millisecond() - age.as_millis().min(i64::MAX as u128) as i64
        });
        let ids = self
            .index
            .prunable(self.retention.max_messages, before)
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let n = self.delete(ids).await?.len();
        tracing::info!(pruned = n, "captured mail pruned by [sandbox] retention");
        Ok(n)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes files in `tmp/` that no one is writing any more: written by
    /// a Postern process that is gone (the `P<pid>` in the name), or older
    /// than 36 hours (the Maildir rule). A message in `tmp/` was never
    /// acknowledged, so nothing accepted is lost. Returns how many went.
    pub fn clean_tmp(tmp: &Path) -> usize {
        const MAILDIR_TMP_AGE: std::time::Duration = std::time::Duration::from_secs(36 * 3600);
        let Ok(entries) = std::fs::read_dir(tmp) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > MAILDIR_TMP_AGE);
            if (old || !writer_alive(&name)) && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Store one message; returns its file name (the id given to the client).
    /// The message is safe once this returns: an index failure is logged
    /// and mended at the next start.
    pub async fn store(&self, env: &Envelope<'_>, message: &[u8]) -> std::io::Result<String> {
        let now = SystemTime::now();
        let since = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Maildir unique name: time.M<usec>P<pid>Q<counter>.host
        let id = format!(
            "{}.M{}P{}Q{}.postern",
            since.as_secs(),
            since.subsec_micros(),
            std::process::id(),
            n
        );
        let mut head = String::with_capacity(256);
        head.push_str(&format!("X-Postern-User: {}\r\n", clean(env.user)));
        if env.inbox != env.user {
            head.push_str(&format!("X-Postern-Inbox: {}\r\n", clean(env.inbox)));
        }
        head.push_str(&format!(
            "X-Postern-Mail-From: {}\r\n",
            clean(&env.mail_from.to_string())
        ));
        for r in env.rcpts {
            head.push_str(&format!("X-Postern-Rcpt-To: {}\r\n", clean(&r.to_string())));
        }
        for (name, value) in env.notes {
            head.push_str(&format!("X-Postern-{}: {}\r\n", clean(name), clean(value)));
        }
        let created = jiff::Timestamp::try_from(now).unwrap_or_else(|_| jiff::Timestamp::now());
        head.push_str(&format!(
            "X-Postern-Received: from {} ({}) at {}\r\n",
            clean(env.helo),
            env.peer,
            humantime::format_rfc3339_micros(now)
        ));
        let tmp = self.dir.join("tmp").join(&id);
        let new = self.dir.join("new").join(&id);
        let message = message.to_vec();
        let meta = Meta {
            id: id.clone(),
            inbox: env.inbox.to_owned(),
            username: env.user.to_owned(),
            created,
            read: false,
        };
        let (summary, search) =
            tokio::task::spawn_blocking(move || -> std::io::Result<(Summary, String)> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(head.as_bytes())?;
                f.write_all(&message)?;
                f.sync_all()?;
                drop(f);
                std::fs::rename(&tmp, &new)?;
                // Make the rename itself durable.
                if let Some(parent) = new.parent() {
                    if let Ok(d) = std::fs::File::open(parent) {
                        let _ = d.sync_all();
                    }
                }
                Ok(message::summarize(&meta, &message))
            })
            .await
            .map_err(std::io::Error::other)??;
        let search = std::sync::Arc::new(search);
        match self.index.add(summary.clone(), (*search).clone()).await {
            Ok(()) => {
                let _ = self.events.send(Event::New(Box::new(summary), search));
            }
            Err(e) => {
                tracing::error!(id = %id, error = %e, "captured message not indexed (it is on disk; the index is mended at the next start)")
            }
        }
        if self.retention.max_messages.is_some() {
            if let Err(e) = self.prune().await {
                tracing::warn!(error = %e, "pruning captured mail failed");
            }
        }
        Ok(id)
    }
}

/// Every message file in `new/` and `cur/`: (id, path).
fn list_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(dir.join(sub))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            out.push((name, e.path()));
        }
    }
    Ok(out)
}

/// Whether the process that names itself in a capture file name
/// (`…P<pid>Q…`) may still be writing it: this one, or one alive.
fn writer_alive(name: &str) -> bool {
    let pid = name
        .split_once('P')
        .and_then(|(_, rest)| rest.split_once('Q'))
        .and_then(|(pid, _)| pid.parse::<u32>().ok());
    match pid {
        Some(pid) if pid == std::process::id() => true,
        Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        // Not a name Postern writes: leave it to the 36-hour rule.
        None => true,
    }
}

/// Header values come from the client: keep them on one line.
fn clean(s: &str) -> String {
    crate::text::sanitize(s, usize::MAX)
}
