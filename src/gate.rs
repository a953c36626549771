//! Per-account caps towards a provider: how many upstream connections may
//! be open at once (`max_connections`, lowered for a while when the server
//! says "too many connections") and how many messages may start per minute
//! (`max_per_minute`). A session past a cap waits (bounded by its deadline)
//! instead of failing.
//!
//! Knows nothing of SMTP: a connection holds a [`Slot`] for as long as it
//! is open (in use or kept warm), and dropping the slot frees it.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// How long a cap lowered by the server's "too many connections" stays
/// lowered before Postern tries the configured number again.
pub const LOWERED_FOR: Duration = Duration::from_secs(10 * 60);

/// File in `data_dir` where a running Postern keeps its connection caps
/// (for `postern status`).
pub const BOARD_FILE: &str = "upstream-connections.json";

/// One account's caps as `status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStatus {
    pub account: String,
    /// Connections open now (in use or warm).
    pub open: usize,
    /// The cap in force now.
    pub cap: usize,
    /// `max_connections`.
    pub configured: usize,
    /// While the cap is lowered: until when, and the server's words.
    pub lowered_until: Option<Timestamp>,
    pub lowered_reason: Option<String>,
    pub max_per_minute: Option<u32>,
}

/// Where a running Postern writes the caps of its accounts whenever one is
/// lowered or restored.
#[derive(Debug)]
pub struct Board {
    path: PathBuf,
    rows: Mutex<BTreeMap<String, GateStatus>>,
}

impl Board {
    pub fn new(path: PathBuf) -> Arc<Board> {
        Arc::new(Board {
            path,
            rows: Mutex::new(BTreeMap::new()),
        })
    }

    fn update(&self, row: GateStatus) {
        let text = {
            let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
            rows.insert(row.account.clone(), row);
            serde_json::to_string_pretty(&rows.values().collect::<Vec<_>>()).unwrap_or_default()
        };
        let tmp = self.path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path))
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not write the connection caps");
        }
    }

    /// What a running Postern last wrote (empty when nothing was lowered).
    pub fn read(path: &std::path::Path) -> Vec<GateStatus> {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct State {
    open: usize,
    cap: usize,
    lowered_until: Option<Instant>,
    lowered_reason: Option<String>,
    /// When the messages of the last minute started.
    started: VecDeque<Instant>,
}

/// One account's caps.
#[derive(Debug)]
pub struct Gate {
    account: String,
    configured: usize,
    per_minute: Option<u32>,
    state: Mutex<State>,
    /// Woken when a connection is given back or closed.
    freed: Notify,
    board: Option<Arc<Board>>,
}

/// An open upstream connection's place under the cap.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.open = s.open.saturating_sub(1);
        drop(s);
        self.gate.freed.notify_waiters();
    }
}

impl Gate {
    pub fn new(
        account: &str,
        max_connections: usize,
        max_per_minute: Option<u32>,
        board: Option<Arc<Board>>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            account: account.to_owned(),
            configured: max_connections.max(1),
            per_minute: max_per_minute,
            state: Mutex::new(State {
                open: 0,
                cap: max_connections.max(1),
                lowered_until: None,
                lowered_reason: None,
                started: VecDeque::new(),
            }),
            freed: Notify::new(),
            board,
        })
    }

    /// Whether `other` has the same configured caps (a reload keeps the
    /// gate then, with the connections and the lowering it counts).
    pub fn same_caps(&self, other: &Gate) -> bool {
        self.account == other.account
            && self.configured == other.configured
            && self.per_minute == other.per_minute
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Woken when a connection is given back (warm) or closed.
    pub fn freed(&self) -> &Notify {
        &self.freed
    }

    /// The cap in force now (a lowered cap runs out here).
    pub fn cap(&self) -> usize {
        let (cap, restored) = {
            let mut s = self.lock();
            let restored = s.lowered_until.is_some_and(|u| Instant::now() >= u);
            if restored {
                s.cap = self.configured;
                s.lowered_until = None;
                s.lowered_reason = None;
            }
            (s.cap, restored)
        };
        if restored {
            tracing::info!(account = %self.account, cap, "upstream connection cap back to max_connections");
            self.publish();
        }
        cap
    }

    /// A place for one more connection, if the cap allows.
    pub fn try_open(self: &Arc<Self>) -> Option<Slot> {
        let cap = self.cap();
        let mut s = self.lock();
        if s.open >= cap {
            return None;
        }
        s.open += 1;
        Some(Slot { gate: self.clone() })
    }

    /// The server refused one more connection: the cap becomes what is open
    /// now (at least 1) for [`LOWERED_FOR`].
    pub fn lower(&self, reason: &str) {
        let (cap, open) = {
            let mut s = self.lock();
            s.cap = s.open.max(1).min(self.configured);
            s.lowered_until = Some(Instant::now() + LOWERED_FOR);
            s.lowered_reason = Some(crate::text::sanitize(reason, 200));
            (s.cap, s.open)
        };
        tracing::info!(account = %self.account, cap, open, reason = %crate::text::sanitize(reason, 200),
            "server refuses more connections: cap lowered for 10 minutes");
        self.publish();
    }

    /// Waits until one more message may start under `max_per_minute`, or
    /// `Err` when that is after `deadline`. Counts the message.
    pub async fn admit(&self, deadline: Instant) -> Result<(), ()> {
        let Some(per_minute) = self.per_minute else {
            return Ok(());
        };
        let minute = Duration::from_secs(60);
        loop {
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                while s
                    .started
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= minute)
                {
                    s.started.pop_front();
                }
                if s.started.len() < per_minute as usize {
                    s.started.push_back(now);
                    return Ok(());
                }
                s.started.front().map(|t| minute - now.duration_since(*t))
            };
            let until = Instant::now() + wait.unwrap_or(minute);
            if until > deadline {
                return Err(());
            }
            tokio::time::sleep_until(until).await;
        }
    }

    pub fn max_per_minute(&self) -> Option<u32> {
        self.per_minute
    }

    pub fn status(&self) -> GateStatus {
        let s = self.lock();
        let now = Instant::now();
        GateStatus {
            account: self.account.clone(),
            open: s.open,
            cap: s.cap,
            configured: self.configured,
            lowered_until: s.lowered_until.map(|u| {
                let left = u.saturating_duration_since(now);
                Timestamp::now()
                    .checked_add(jiff::SignedDuration::try_from(left).unwrap_or_default())
                    .unwrap_or_else(|_| Timestamp::now())
            }),
            lowered_reason: s.lowered_reason.clone(),
            max_per_minute: self.per_minute,
        }
    }

    fn publish(&self) {
        if let Some(b) = &self.board {
            b.update(self.status());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_respect_the_cap_and_a_lowered_cap() {
        let g = Gate::new("a", 3, None, None);
        let s1 = g.try_open().unwrap();
        let s2 = g.try_open().unwrap();
        let s3 = g.try_open().unwrap();
        assert!(g.try_open().is_none());
        drop(s3);
        // The server refused a third: the cap is what is open (2).
        g.lower("421 4.7.0 too many connections");
        assert_eq!(g.cap(), 2);
        assert!(g.try_open().is_none());
        drop(s2);
        let _s = g.try_open().unwrap();
        assert_eq!(g.status().open, 2);
        drop(s1);
        assert_eq!(g.status().open, 1);
        assert!(g.status().lowered_until.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_waits_for_the_minute_or_gives_up() {
        let g = Gate::new("a", 3, Some(2), None);
        let far = Instant::now() + Duration::from_secs(120);
        g.admit(far).await.unwrap();
        g.admit(far).await.unwrap();
        // The third waits for the first to leave the minute.
        let soon = Instant::now() + Duration::from_secs(10);
        assert!(g.admit(soon).await.is_err());
        let started = Instant::now();
        g.admit(far).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(59));
    }
}
