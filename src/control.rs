//! How `postern reload` reaches the running instance: `run` writes its pid
//! to `data_dir/postern.pid` and, after each reload, the outcome to
//! `data_dir/reload.json`; `postern reload` sends SIGHUP and waits for the
//! outcome to change.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const PID_FILE: &str = "postern.pid";
pub const RELOAD_FILE: &str = "reload.json";

/// The outcome of the running instance's last reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub pid: u32,
    /// Counts the reloads asked of this instance (0: none yet).
    pub generation: u64,
    pub ok: bool,
    pub message: String,
    pub at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no running instance: {path} is missing (is `postern run` using this config's data_dir?)"
    )]
    NoPidFile { path: PathBuf },
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("no running instance: process {pid} from {path} is gone (a stale pid file)")]
    Gone { pid: u32, path: PathBuf },
    #[error("cannot signal process {pid}: {source}")]
    Signal { pid: u32, source: io::Error },
    #[error("process {pid} did not answer the reload within {secs} s (see its log)")]
    NoAnswer { pid: u32, secs: u64 },
}

/// The pid file of a running instance; removed on drop if it is still ours.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Write this process's pid into `data_dir`. An existing file naming a
    /// live process is replaced with a warning: `postern reload` then
    /// signals the newest instance.
    pub fn create(data_dir: &Path) -> io::Result<PidFile> {
        let path = data_dir.join(PID_FILE);
        if let Ok(Some(other)) = read_pid(&path) {
            if alive(other) && other != std::process::id() {
                tracing::warn!(pid = other, file = %path.display(), "another postern seems to run on this data_dir; `postern reload` now reaches this one");
            }
        }
        let pid = std::process::id();
        crate::auth::store::write_atomic(&path, format!("{pid}\n").as_bytes())
            .map_err(io::Error::other)?;
        Ok(PidFile { path, pid })
    }
}

impl PidFile {
    /// The pid of the instance running on `data_dir`, if one is.
    pub fn running(data_dir: &Path) -> Option<u32> {
        read_pid(&data_dir.join(PID_FILE))
            .ok()
            .flatten()
            .filter(|p| alive(*p))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if matches!(read_pid(&self.path), Ok(Some(p)) if p == self.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> io::Result<Option<u32>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn pid_of(pid: u32) -> Option<rustix::process::Pid> {
    rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Whether the process exists and may be signalled (kill with signal 0).
fn alive(pid: u32) -> bool {
    pid_of(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// Record the outcome of reload number `generation`.
pub fn record(data_dir: &Path, generation: u64, outcome: &Result<String, String>) {
    let o = ReloadOutcome {
        pid: std::process::id(),
        generation,
        ok: outcome.is_ok(),
        message: match outcome {
            Ok(m) | Err(m) => m.clone(),
        },
        at: jiff::Timestamp::now().to_string(),
    };
    let body = serde_json::to_vec_pretty(&o).unwrap_or_default();
    if let Err(e) = crate::auth::store::write_atomic(&data_dir.join(RELOAD_FILE), &body) {
        tracing::warn!(error = %e, "could not record the reload outcome");
    }
}

fn read_outcome(data_dir: &Path) -> Option<ReloadOutcome> {
    let body = std::fs::read(data_dir.join(RELOAD_FILE)).ok()?;
    serde_json::from_slice(&body).ok()
}

/// Send SIGHUP to the instance running on `data_dir` and wait up to
/// `wait` for its answer.
pub fn reload(data_dir: &Path, wait: Duration) -> Result<ReloadOutcome, ControlError> {
    let path = data_dir.join(PID_FILE);
    let pid = match read_pid(&path) {
        Ok(Some(p)) => p,
        Ok(None) if path.exists() => {
            return Err(ControlError::Unreadable {
                path,
                reason: "not a process id".into(),
            })
        }
        Ok(None) => return Err(ControlError::NoPidFile { path }),
        Err(e) => {
            return Err(ControlError::Unreadable {
                path,
                reason: e.to_string(),
            })
        }
    };
    if !alive(pid) {
        return Err(ControlError::Gone { pid, path });
    }
    let before = read_outcome(data_dir)
        .filter(|o| o.pid == pid)
        .map_or(0, |o| o.generation);
    let p = pid_of(pid).ok_or_else(|| ControlError::Gone {
        pid,
        path: path.clone(),
    })?;
    rustix::process::kill_process(p, rustix::process::Signal::HUP).map_err(|e| {
        ControlError::Signal {
            pid,
            source: e.into(),
        }
    })?;
    let start = Instant::now();
    while start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(o) = read_outcome(data_dir) {
            if o.pid == pid && o.generation > before {
                return Ok(o);
            }
        }
    }
    Err(ControlError::NoAnswer {
        pid,
        secs: wait.as_secs(),
    })
}
