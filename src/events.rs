//! Events for people and programs (`[events]`): when an account needs
//! someone (consent, a failing token refresh, a refresh token about to
//! expire), a mailbox is parked or unparked, a quota is reached, or a
//! queued message bounces or expires, each is given as one JSON object to
//! a command (on its standard input, with `POSTERN_EVENT` set to the kind)
//! and/or POSTed to a webhook.
//!
//! [`emit`] never blocks and never fails its caller: events go through a
//! bounded channel to one delivery task, which runs the command and the
//! webhook one event at a time, each within `[events] timeout`. When the
//! channel is full an event is dropped with a warning. Outside `run` (the
//! CLI commands) nothing is configured and events are not sent.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use crate::config::EventsConfig;

/// Events waiting for delivery at most; more are dropped (and said).
const BACKLOG: usize = 256;
/// Webhook attempts per event, and the waits between them.
const WEBHOOK_RETRIES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];

struct Sinks {
    cfg: EventsConfig,
    hostname: String,
    http: Option<oauth2::reqwest::Client>,
}

struct Dispatcher {
    sinks: ArcSwapOption<Sinks>,
    tx: tokio::sync::mpsc::Sender<(std::sync::Arc<Sinks>, Value)>,
    /// When each deduplicated event was last sent.
    recent: Mutex<HashMap<String, Instant>>,
}

static DISPATCHER: OnceLock<Dispatcher> = OnceLock::new();

/// Send events to `cfg`'s command and webhook from now on (at start and at
/// each reload). Must be called inside the tokio runtime.
pub fn configure(cfg: &EventsConfig, hostname: &str) {
    let d = DISPATCHER.get_or_init(|| {
        let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
        tokio::spawn(deliver(rx));
        Dispatcher {
            sinks: ArcSwapOption::empty(),
            tx,
            recent: Mutex::new(HashMap::new()),
        }
    });
    if cfg.command.is_none() && cfg.webhook.is_none() {
        d.sinks.store(None);
        return;
    }
    let http = cfg.webhook.as_ref().and_then(|_| {
        oauth2::reqwest::Client::builder()
            .redirect(oauth2::reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| warn!(error = %e, "events: no HTTP client for the webhook"))
            .ok()
    });
    d.sinks.store(Some(std::sync::Arc::new(Sinks {
        cfg: cfg.clone(),
        hostname: hostname.to_owned(),
        http,
    })));
}

/// Tell the configured command and webhook: `kind` (one of
/// [`crate::config::EVENT_KINDS`]) with `fields` (a JSON object).
pub fn emit(kind: &'static str, fields: Value) {
    let Some(d) = DISPATCHER.get() else { return };
    let Some(sinks) = d.sinks.load_full() else {
        return;
    };
    if let Some(kinds) = &sinks.cfg.kinds {
        if !kinds.iter().any(|k| k == kind) {
            return;
        }
    }
    let mut event = Map::new();
    event.insert("event".into(), json!(kind));
    event.insert("time".into(), json!(jiff::Timestamp::now().to_string()));
    event.insert("host".into(), json!(sinks.hostname));
    if let Value::Object(f) = fields {
        event.extend(f);
    }
    if d.tx.try_send((sinks, Value::Object(event))).is_err() {
        warn!(kind, "events: too many events waiting; this one is dropped");
    }
}

/// [`emit`], unless the same `key` was emitted within `quiet` (a quota
/// that stays full, a refresh that keeps failing).
pub fn emit_once(kind: &'static str, key: &str, quiet: Duration, fields: Value) {
    let Some(d) = DISPATCHER.get() else { return };
    if d.sinks.load().is_none() {
        return;
    }
    let key = format!("{kind}/{key}");
    {
        let mut recent = d.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if recent
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < quiet)
        {
            return;
        }
        if recent.len() > 4096 {
            recent.retain(|_, t| now.duration_since(*t) < quiet);
        }
        recent.insert(key, now);
    }
    emit(kind, fields);
}

/// Forget that `kind`/`key` was sent, so the next [`emit_once`] goes out
/// (the condition ended: the refresh worked, the quota has room).
pub fn clear(kind: &'static str, key: &str) {
    if let Some(d) = DISPATCHER.get() {
        d.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&format!("{kind}/{key}"));
    }
}

async fn deliver(mut rx: tokio::sync::mpsc::Receiver<(std::sync::Arc<Sinks>, Value)>) {
    while let Some((sinks, event)) = rx.recv().await {
        let kind = event["event"].as_str().unwrap_or_default().to_owned();
        let body = serde_json::to_vec(&event).unwrap_or_default();
        if let Some(cmd) = &sinks.cfg.command {
            run_command(cmd, &kind, &body, sinks.cfg.timeout).await;
        }
        if let (Some(url), Some(http)) = (&sinks.cfg.webhook, &sinks.http) {
            post(http, url, &kind, body).await;
        }
    }
}

async fn run_command(cmd: &str, kind: &str, body: &[u8], timeout: Duration) {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("POSTERN_EVENT", kind)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            warn!(kind, error = %e, "events: the command could not be started");
            return;
        }
    };
    let stdin = child.stdin.take();
    let run = async {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input is fine.
            let _ = stdin.write_all(body).await;
            let _ = stdin.write_all(b"\n").await;
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => warn!(
            kind,
            timeout_s = timeout.as_secs(),
            "events: the command took too long and was killed"
        ),
        Ok(Err(e)) => warn!(kind, error = %e, "events: the command failed"),
        Ok(Ok(out)) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            warn!(kind, status = %out.status, stderr = %crate::text::sanitize(stderr.trim(), 300), "events: the command failed");
        }
        Ok(Ok(_)) => debug!(kind, "events: command done"),
    }
}

/// POST `body`; a transport error or a 5xx is tried again. The address is
/// never logged (webhook addresses often carry a secret): only its host.
async fn post(http: &oauth2::reqwest::Client, url: &str, kind: &str, body: Vec<u8>) {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let mut waits = WEBHOOK_RETRIES.iter();
    loop {
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let why = match r {
            Ok(resp) if resp.status().is_success() => {
                debug!(kind, host = %host, "events: webhook done");
                return;
            }
            Ok(resp) if resp.status().is_client_error() => {
                warn!(kind, host = %host, status = resp.status().as_u16(), "events: the webhook refused the event");
                return;
            }
            Ok(resp) => format!("HTTP status {}", resp.status().as_u16()),
            Err(e) if e.is_timeout() => "no answer in time".to_owned(),
            Err(e) if e.is_connect() => "cannot connect".to_owned(),
            Err(_) => "the request failed".to_owned(),
        };
        match waits.next() {
            Some(w) => tokio::time::sleep(*w).await,
            None => {
                warn!(kind, host = %host, error = %why, "events: the webhook failed; the event is dropped");
                return;
            }
        }
    }
}
