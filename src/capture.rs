//! Sandbox sink: each message becomes one Maildir file under
//! `data_dir/capture/` (written to `tmp/`, fsynced, renamed into `new/`), with
//! the envelope in `X-Postern-*` header lines above the message bytes, which
//! are stored exactly as received.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::smtp::codec::Path as MailPath;

/// What the capture file records about the transaction.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub user: &'a str,
    pub mail_from: &'a MailPath,
    pub rcpts: &'a [MailPath],
    pub helo: &'a str,
    pub peer: std::net::SocketAddr,
}

#[derive(Debug)]
pub struct Capture {
    dir: PathBuf,
    counter: AtomicU64,
}

impl Capture {
    /// Make sure `dir/{tmp,new,cur}` exist, and remove what a crash left in
    /// `tmp/` (see [`Capture::clean_tmp`]).
    pub fn open(dir: &Path) -> std::io::Result<Capture> {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let removed = Self::clean_tmp(&dir.join("tmp"));
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, "removed unfinished captures left by a crash");
        }
        Ok(Capture {
            dir: dir.to_owned(),
            counter: AtomicU64::new(0),
        })
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
        head.push_str(&format!(
            "X-Postern-Mail-From: {}\r\n",
            clean(&env.mail_from.to_string())
        ));
        for r in env.rcpts {
            head.push_str(&format!("X-Postern-Rcpt-To: {}\r\n", clean(&r.to_string())));
        }
        head.push_str(&format!(
            "X-Postern-Received: from {} ({}) at {}\r\n",
            clean(env.helo),
            env.peer,
            humantime::format_rfc3339_seconds(now)
        ));
        let tmp = self.dir.join("tmp").join(&id);
        let new = self.dir.join("new").join(&id);
        let message = message.to_vec();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
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
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(id)
    }
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
