//! The API: Mailpit's REST API v1 paths and JSON shapes (what Mailpit
//! client libraries and test snippets use), plus Postern's own: `inbox`
//! filters, `/api/v1/inboxes`, a long-poll `/api/v1/wait`, fault rules
//! (`/api/v1/faults`), release through a real account or pool
//! (`/api/v1/release/ID`), and live events (`/api/events`, server-sent).
//!
//! Like Mailpit: successes without a body answer `ok` (text/plain), errors
//! are plain text with 400 or 404, and request bodies match field names
//! case-insensitively (`IDs` or `ids`).

// Handlers return `Result<_, Response>` so that an early error is the
// response itself (axum's own idiom); the Err side is a whole Response.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::shared::AppState;
use crate::capture::{Event, Head};
use crate::config::SendVia;
use crate::sandbox::faults::FaultSpec;
use crate::sandbox::index::Search;
use crate::sandbox::message::{self, Summary};
use crate::smtp::codec::{MailParams, Path as MailPath};
use crate::smtp::route::SessionInfo;

/// The longest a wait may be asked to last.
const MAX_WAIT: Duration = Duration::from_secs(300);

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/api/v1/messages",
            get(list).put(set_read).delete(delete_messages),
        )
        .route("/api/v1/search", get(search).delete(delete_search))
        .route("/api/v1/message/{id}", get(one))
        .route("/api/v1/message/{id}/headers", get(headers))
        .route("/api/v1/message/{id}/raw", get(raw))
        .route("/api/v1/message/{id}/part/{part}", get(part))
        .route("/api/v1/message/{id}/release", post(release_mailpit))
        .route("/api/v1/release/{id}", post(release))
        .route("/api/v1/info", get(info))
        .route("/api/v1/inboxes", get(inboxes))
        .route("/api/v1/wait", get(wait))
        .route(
            "/api/v1/faults",
            get(faults).post(add_fault).delete(clear_faults),
        )
        .route(
            "/api/v1/faults/{id}",
            delete(remove_fault).put(switch_fault),
        )
        .route("/api/events", get(events))
}

/// A plain-text error, as Mailpit sends them.
pub(super) fn error(code: StatusCode, text: impl Into<String>) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into(),
    )
        .into_response()
}

fn ok() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "sandbox API failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// JSON with Mailpit's trailing newline.
fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(mut b) => {
            b.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], b).into_response()
        }
        Err(e) => internal(e),
    }
}

/// Request bodies with their keys lower-cased (Go's encoding/json matches
/// field names case-insensitively; Mailpit clients send `IDs` or `ids`).
fn lower_keys(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        )),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}"))),
    }
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    inbox: Option<String>,
}

impl ListQuery {
    fn page(&self) -> (usize, usize) {
        let start = self
            .start
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let limit = match self.limit.as_deref().and_then(|s| s.parse::<i64>().ok()) {
            Some(n) if n > 0 => n as usize,
            _ => 50,
        };
        (start, limit)
    }

    fn inbox(&self) -> Option<String> {
        self.inbox.clone().filter(|i| !i.is_empty())
    }
}

async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let (start, limit) = q.page();
    match s
        .capture
        .index()
        .list(q.inbox(), Search::default(), start, limit)
        .await
    {
        Ok(p) => json(&p),
        Err(e) => internal(e),
    }
}

async fn search(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let text = q.query.clone().unwrap_or_default();
    if text.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "Error: no search query");
    }
    let (start, limit) = q.page();
    match s
        .capture
        .index()
        .list(q.inbox(), Search::parse(&text), start, limit)
        .await
    {
        Ok(p) => json(&p),
        Err(e) => internal(e),
    }
}

async fn delete_search(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let text = q.query.clone().unwrap_or_default();
    if text.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "Error: no search query");
    }
    match s
        .capture
        .index()
        .matching(q.inbox(), Search::parse(&text))
        .await
    {
        Ok(ids) => match s.capture.delete(ids).await {
            Ok(_) => ok(),
            Err(e) => internal(e),
        },
        Err(e) => internal(e),
    }
}

/// `DELETE /api/v1/messages`: `{"IDs": […]}`, or everything (in `?inbox=`).
async fn delete_messages(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
    body: axum::body::Bytes,
) -> Response {
    let m = match lower_keys(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut ids = strings(m.get("ids"));
    if ids.is_empty() {
        ids = match s
            .capture
            .index()
            .matching(q.inbox(), Search::default())
            .await
        {
            Ok(ids) => ids,
            Err(e) => return internal(e),
        };
    }
    match s.capture.delete(ids).await {
        Ok(_) => ok(),
        Err(e) => internal(e),
    }
}

/// `PUT /api/v1/messages`: `{"IDs": […], "Read": bool, "Search": "…"}`.
async fn set_read(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
    body: axum::body::Bytes,
) -> Response {
    let m = match lower_keys(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let read = m.get("read").and_then(|v| v.as_bool()).unwrap_or(false);
    let ids = strings(m.get("ids"));
    let search = Search::parse(m.get("search").and_then(|v| v.as_str()).unwrap_or(""));
    match s
        .capture
        .index()
        .set_read(ids, q.inbox(), search, read)
        .await
    {
        Ok(_) => ok(),
        Err(e) => internal(e),
    }
}

/// The summary for `id`, or for `latest` the newest matching `?query=` in
/// `?inbox=`.
pub(super) async fn find(s: &AppState, id: &str, q: &ListQuery) -> Result<Summary, Response> {
    let found = if id == "latest" {
        let search = Search::parse(q.query.as_deref().unwrap_or(""));
        s.capture
            .index()
            .list(q.inbox(), search, 0, 1)
            .await
            .map(|p| p.messages.into_iter().next())
    } else {
        s.capture.index().get(id.to_owned()).await
    };
    match found {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, "Message not found")),
        Err(e) => Err(internal(e)),
    }
}

/// The message bytes as received.
pub(super) async fn source(s: &AppState, id: &str) -> Result<(Head, Vec<u8>), Response> {
    match s.capture.read(id).await {
        Ok(Some(x)) => Ok(x),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, "Message not found")),
        Err(e) => Err(internal(e)),
    }
}

async fn one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let sum = match find(&s, &id, &q).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let (_, raw) = match source(&s, &sum.id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let view = tokio::task::spawn_blocking(move || message::view(&sum, &raw)).await;
    let view = match view {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    // Mailpit marks a message read when it is fetched.
    let _ = s
        .capture
        .index()
        .set_read(vec![view.id.clone()], None, Search::default(), true)
        .await;
    json(&view)
}

async fn headers(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let sum = match find(&s, &id, &q).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    match source(&s, &sum.id).await {
        Ok((_, raw)) => json(&message::headers(&raw)),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct RawQuery {
    #[serde(default)]
    dl: Option<String>,
}

async fn raw(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
    Query(r): Query<RawQuery>,
) -> Response {
    let sum = match find(&s, &id, &q).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let (_, bytes) = match source(&s, &sum.id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut resp = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response();
    if r.dl.as_deref() == Some("1") {
        if let Ok(v) = format!("attachment; filename=\"{}.eml\"", safe_name(&sum.id)).parse() {
            resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    resp
}

async fn part(State(s): State<AppState>, Path((id, part_id)): Path<(String, String)>) -> Response {
    let (_, raw) = match source(&s, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let found = tokio::task::spawn_blocking(move || message::part(&raw, &part_id)).await;
    let Ok(Some((bytes, ctype, name))) = found else {
        return error(StatusCode::NOT_FOUND, "Part not found");
    };
    // Active content (HTML, XML, SVG) is downloaded, never shown here.
    let active = ["html", "xml", "svg", "javascript"]
        .iter()
        .any(|a| ctype.contains(a));
    let name = if name.is_empty() {
        "part".to_owned()
    } else {
        safe_name(&name)
    };
    let (ctype, disp) = if active {
        (
            "application/octet-stream".to_owned(),
            format!("attachment; filename=\"{name}\""),
        )
    } else {
        (ctype, format!("inline; filename=\"{name}\""))
    };
    let mut resp = bytes.into_response();
    if let Ok(v) = ctype.parse() {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = disp.parse() {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// A file name safe inside a quoted header parameter.
fn safe_name(n: &str) -> String {
    n.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '/' {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect()
}

/// Mailpit's release: `{"To": [...]}`, through `[sandbox] release_via`.
async fn release_mailpit(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let m = match lower_keys(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let to = strings(m.get("to"));
    if to.is_empty() {
        return error(StatusCode::BAD_REQUEST, "No valid addresses found");
    }
    release_to(&s, &id, None, to).await
}

/// Postern's release: `{"via": "ACCOUNT" | "pool:NAME", "to": [...]}`,
/// both optional (the message's own recipients, `[sandbox] release_via`).
async fn release(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let m = match lower_keys(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let via = m.get("via").and_then(|v| v.as_str()).map(SendVia::from_key);
    release_to(&s, &id, via, strings(m.get("to"))).await
}

/// Relays a captured message for real: the route's quota, pacing and From
/// rules apply as for any message; the answer is the route's.
pub(super) async fn release_to(
    s: &AppState,
    id: &str,
    via: Option<SendVia>,
    to: Vec<String>,
) -> Response {
    let view = s.view();
    let Some(via) = via.or_else(|| view.release_via.clone()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "no route to release through: give {\"via\": \"ACCOUNT\"} or set [sandbox] release_via",
        );
    };
    if via == SendVia::Capture {
        return error(
            StatusCode::BAD_REQUEST,
            "release goes through an account or a pool, not capture",
        );
    }
    let Some(route) = view.router.route(&via) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{via} is not configured or has no usable credential"),
        );
    };
    let (head, raw) = match source(s, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rcpts: Vec<String> = if to.is_empty() {
        head.rcpts
            .iter()
            .map(|r| r.trim_start_matches('<').trim_end_matches('>').to_owned())
            .collect()
    } else {
        to
    };
    for r in &rcpts {
        if !r
            .rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
            || r.contains(|c: char| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        {
            return error(
                StatusCode::BAD_REQUEST,
                format!("Invalid email address: {}", crate::text::sanitize(r, 200)),
            );
        }
    }
    if rcpts.is_empty() {
        return error(StatusCode::BAD_REQUEST, "No valid addresses found");
    }
    let from = MailPath::new(head.mail_from.trim_start_matches('<').trim_end_matches('>'));
    let info = SessionInfo {
        user: if head.user.is_empty() {
            "release".into()
        } else {
            head.user.clone()
        },
        inbox: head.inbox.clone(),
        helo: view.hostname.clone(),
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        queued: Default::default(),
    };
    let params = MailParams::default();
    let (mut tx, _) = match route.open(&info, &from, &params).await {
        Ok(x) => x,
        Err(r) => return error(StatusCode::BAD_REQUEST, format!("SMTP error: {}", r.reply)),
    };
    let mut accepted = 0;
    let mut refused = Vec::new();
    for r in &rcpts {
        let reply = tx.rcpt_for(&info, &MailPath::new(r.clone())).await;
        if reply.is_positive() {
            accepted += 1;
        } else {
            refused.push(format!("{r}: {reply}"));
        }
    }
    if accepted == 0 {
        tx.abort();
        return error(
            StatusCode::BAD_REQUEST,
            format!("SMTP error: {}", refused.join("; ")),
        );
    }
    let reply = tx.data(&info, &raw).await;
    if !reply.is_positive() {
        return error(StatusCode::BAD_REQUEST, format!("SMTP error: {reply}"));
    }
    tracing::info!(id = %id, via = %via, rcpts = accepted, "captured message released");
    if refused.is_empty() {
        ok()
    } else {
        error(
            StatusCode::BAD_REQUEST,
            format!(
                "SMTP error: sent to {accepted}; refused: {}",
                refused.join("; ")
            ),
        )
    }
}

async fn info(State(s): State<AppState>) -> Response {
    let all = match s.capture.index().list(None, Search::default(), 0, 1).await {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let size = std::fs::metadata(s.capture.dir().join(crate::capture::INDEX_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    json(&serde_json::json!({
        "Version": concat!("postern ", env!("CARGO_PKG_VERSION")),
        "LatestVersion": "",
        "Database": s.capture.dir().join(crate::capture::INDEX_FILE).display().to_string(),
        "DatabaseSize": size,
        "Messages": all.total,
        "Unread": all.unread,
        "Tags": {},
        "RuntimeStats": {
            "Uptime": s.started.elapsed().as_secs(),
            "Memory": 0,
            "MessagesDeleted": 0,
            "SMTPAccepted": 0,
            "SMTPAcceptedSize": 0,
            "SMTPRejected": 0,
            "SMTPIgnored": 0
        }
    }))
}

async fn inboxes(State(s): State<AppState>) -> Response {
    let mut counts: BTreeMap<String, crate::sandbox::index::InboxCount> =
        match s.capture.index().inboxes().await {
            Ok(v) => v.into_iter().map(|c| (c.name.clone(), c)).collect(),
            Err(e) => return internal(e),
        };
    // Configured inboxes are listed even while empty.
    for i in s.view().inboxes.values() {
        counts
            .entry(i.clone())
            .or_insert(crate::sandbox::index::InboxCount {
                name: i.clone(),
                total: 0,
                unread: 0,
            });
    }
    json(&counts.into_values().collect::<Vec<_>>())
}

#[derive(Debug, Deserialize, Default)]
pub struct WaitQuery {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    inbox: Option<String>,
    /// `30s`, `2m` (default 30s, at most 5m).
    #[serde(default)]
    timeout: Option<String>,
    /// Only mail received at or after this (RFC 3339, or seconds /
    /// milliseconds since the epoch); default: any, so mail that arrived
    /// just before the wait began still counts.
    #[serde(default)]
    since: Option<String>,
}

/// Long-poll: the newest message matching `query` (in `inbox`, since
/// `since`), as soon as there is one; `408` when `timeout` passes first.
async fn wait(State(s): State<AppState>, Query(q): Query<WaitQuery>) -> Response {
    let timeout = match q.timeout.as_deref() {
        None => Duration::from_secs(30),
        Some(t) => match humantime::parse_duration(t)
            .ok()
            .or_else(|| t.parse::<u64>().ok().map(Duration::from_secs))
        {
            Some(d) => d.min(MAX_WAIT),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "timeout \"{}\" is not a duration like \"30s\"",
                        crate::text::sanitize(t, 50)
                    ),
                )
            }
        },
    };
    let mut text = q.query.clone().unwrap_or_default();
    if let Some(since) = q.since.as_deref().filter(|x| !x.is_empty()) {
        text.push_str(&format!(" after:{since}"));
    }
    let search = Search::parse(&text);
    let inbox = q.inbox.clone().filter(|i| !i.is_empty());
    // Subscribe first, so nothing arrives between the check and the wait.
    let mut rx = s.capture.subscribe();
    match s
        .capture
        .index()
        .list(inbox.clone(), search.clone(), 0, 1)
        .await
    {
        Ok(p) => {
            if let Some(m) = p.messages.into_iter().next() {
                return json(&m);
            }
        }
        Err(e) => return internal(e),
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "no matching message within {}",
                        humantime::format_duration(timeout)
                    ),
                )
            }
            Ok(Ok(Event::New(m, text))) => {
                if inbox.as_ref().is_none_or(|i| *i == m.inbox) && search.matches(&m, &text) {
                    return json(&*m);
                }
            }
            Ok(Ok(Event::Deleted(_))) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                // Missed some: look again.
                if let Ok(p) = s
                    .capture
                    .index()
                    .list(inbox.clone(), search.clone(), 0, 1)
                    .await
                {
                    if let Some(m) = p.messages.into_iter().next() {
                        return json(&m);
                    }
                }
            }
            Ok(Err(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        }
    }
}

async fn faults(State(s): State<AppState>) -> Response {
    json(&s.faults.list())
}

async fn add_fault(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
    };
    match s.faults.add(spec) {
        Ok(id) => {
            tracing::info!(fault = %id, "fault rule added");
            json(&serde_json::json!({ "ID": id }))
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn clear_faults(State(s): State<AppState>) -> Response {
    s.faults.remove(None);
    ok()
}

async fn remove_fault(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if s.faults.remove(Some(&id)) {
        ok()
    } else {
        error(StatusCode::NOT_FOUND, "no such fault")
    }
}

async fn switch_fault(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let m = match lower_keys(&body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(on) = m.get("enabled").and_then(|v| v.as_bool()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "send {\"enabled\": true} or {\"enabled\": false}",
        );
    };
    if s.faults.set_enabled(&id, on) {
        ok()
    } else {
        error(StatusCode::NOT_FOUND, "no such fault")
    }
}

/// Server-sent events: `new` (a summary) and `delete` (ids).
async fn events(
    State(s): State<AppState>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.capture.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        {
            let ev = match rx.recv().await {
                Ok(Event::New(m, _)) => SseEvent::default()
                    .event("new")
                    .data(serde_json::to_string(&*m).unwrap_or_default()),
                Ok(Event::Deleted(ids)) => SseEvent::default()
                    .event("delete")
                    .data(serde_json::to_string(&ids).unwrap_or_default()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    SseEvent::default().event("reload").data("{}")
                }
                Err(_) => return None,
            };
            Some((Ok(ev), rx))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
