//! The web UI for captured mail, rendered on the server (every page works
//! without JavaScript; `assets/app.js` only adds live updates over
//! `/api/events` and a confirmation before deleting).
//!
//! - `/`: the list, newest first, with search (`?q=`, the API's syntax),
//!   an inbox switcher (`?inbox=`) and paging (`?start=`), delete all;
//! - `/view/ID`: one message: envelope and headers, the HTML body in a
//!   sandboxed frame, the text body, the headers, the source, attachments,
//!   delete and release;
//! - `/view/ID/html`: the HTML body alone, under a policy that blocks
//!   scripts, forms and remote content (`?remote=1` allows remote images,
//!   styles and fonts; scripts never run).
//!
//! Everything a message brings is escaped here ([`esc`]): it is hostile
//! input. Writes are forms that answer with a redirect; cross-site writes
//! are refused for the whole HTTP surface (see `shared::same_origin_writes`).

use std::fmt::Write as _;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::api::{self, ListQuery};
use super::shared::AppState;
use crate::config::SendVia;
use crate::sandbox::index::{Page, Search};
use crate::sandbox::message::{self, Address, Attachment, Summary};

/// Messages per page in the list.
const PAGE: usize = 50;
/// The source shown inline at most (the rest is a download away).
const SOURCE_SHOWN: usize = 1 << 20;

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// The policy of the UI's own pages: nothing from elsewhere, no inline
/// script, frames only from here.
const UI_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'";

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", get(list))
        .route("/view/{id}", get(view))
        .route("/view/{id}/html", get(html_body))
        .route("/view/{id}/delete", post(delete_one))
        .route("/view/{id}/release", post(release_one))
        .route("/delete", post(delete_all))
        .route(
            "/assets/app.css",
            get(|| asset(CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/app.js",
            get(|| asset(JS, "text/javascript; charset=utf-8")),
        )
}

async fn asset(body: &'static str, ctype: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `s`, safe as HTML text and inside a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one query-string value.
fn qv(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Bytes for people: `812 B`, `1.2 KiB`, `3.4 MiB` (app.js has the same).
fn size(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// An RFC 3339 time as `2026-12-03 06:40:12` (UTC; app.js has the same).
fn when(rfc3339: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| rfc3339.to_owned())
}

fn who(a: &Address) -> String {
    if a.name.is_empty() {
        a.address.clone()
    } else {
        a.name.clone()
    }
}

fn full(a: &Address) -> String {
    if a.name.is_empty() {
        a.address.clone()
    } else {
        format!("{} <{}>", a.name, a.address)
    }
}

/// The list's `To` cell: the first two, then how many more.
fn short_list(to: &[Address]) -> String {
    let mut s: Vec<String> = to.iter().take(2).map(who).collect();
    if to.len() > 2 {
        s.push(format!("+{}", to.len() - 2));
    }
    s.join(", ")
}

/// A whole page: the bar with search and inbox switcher, then `main`.
fn page(title: &str, body_attrs: &str, bar: &str, main: &str) -> Response {
    let mut h = String::with_capacity(main.len() + 1024);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/assets/app.css\">\
         <script src=\"/assets/app.js\" defer></script></head>\
         <body {body_attrs}>{bar}<main>{main}</main></body></html>\n",
        esc(title)
    );
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        h,
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(UI_CSP),
    );
    r
}

/// The top bar: the name, the inbox switcher and the search box.
async fn bar(s: &AppState, inbox: &str, q: &str) -> String {
    let mut counts = s.capture.index().inboxes().await.unwrap_or_default();
    for name in s.view().inboxes.values() {
        if !counts.iter().any(|c| &c.name == name) {
            counts.push(crate::sandbox::index::InboxCount {
                name: name.clone(),
                total: 0,
                unread: 0,
            });
        }
    }
    counts.sort_by(|a, b| a.name.cmp(&b.name));
    let all: u64 = counts.iter().map(|c| c.total).sum();
    let mut h = String::new();
    let _ = write!(
        h,
        "<header class=\"bar\"><a class=\"brand\" href=\"/\">Postern <span>sandbox</span></a>\
         <form class=\"search\" method=\"get\" action=\"/\">\
         <label class=\"sr\" for=\"inbox\">Inbox</label><select id=\"inbox\" name=\"inbox\">\
         <option value=\"\">All inboxes ({all})</option>"
    );
    for c in &counts {
        let _ = write!(
            h,
            "<option value=\"{n}\"{sel}>{n} ({t}{u})</option>",
            n = esc(&c.name),
            sel = if c.name == inbox { " selected" } else { "" },
            t = c.total,
            u = if c.unread > 0 {
                format!(", {} unread", c.unread)
            } else {
                String::new()
            },
        );
    }
    let _ = write!(
        h,
        "</select><label class=\"sr\" for=\"q\">Search</label>\
         <input id=\"q\" type=\"search\" name=\"q\" value=\"{}\" \
         placeholder=\"Search: text, from:, to:, subject:, is:unread, has:attachment\">\
         <button type=\"submit\">Search</button></form>\
         <span class=\"live\" id=\"live\" title=\"Live updates\"></span></header>",
        esc(q)
    );
    h
}

#[derive(Debug, Deserialize, Default)]
pub struct ListParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    inbox: String,
    #[serde(default)]
    start: Option<String>,
}

/// `?inbox=…&q=…` for links that keep the current view.
fn keep(inbox: &str, q: &str) -> String {
    let mut parts = Vec::new();
    if !inbox.is_empty() {
        parts.push(format!("inbox={}", qv(inbox)));
    }
    if !q.is_empty() {
        parts.push(format!("q={}", qv(q)));
    }
    parts.join("&")
}

fn row(m: &Summary) -> String {
    let from = m.from.as_ref().map(who).unwrap_or_default();
    let from_title = m.from.as_ref().map(full).unwrap_or_default();
    let to_title: Vec<String> = m.to.iter().map(full).collect();
    format!(
        "<tr class=\"message{unread}\" data-id=\"{id}\" data-inbox=\"{inbox}\">\
         <td class=\"from\" title=\"{ft}\">{from}</td>\
         <td class=\"to\" title=\"{tt}\">{to}</td>\
         <td class=\"subject\"><a href=\"/view/{id}\">{subject}</a>\
         <span class=\"snippet\">{snippet}</span>{att}</td>\
         <td class=\"size\">{size}</td>\
         <td class=\"time\"><time datetime=\"{created}\">{when}</time></td></tr>",
        unread = if m.read { "" } else { " unread" },
        id = esc(&m.id),
        inbox = esc(&m.inbox),
        ft = esc(&from_title),
        from = esc(&from),
        tt = esc(&to_title.join(", ")),
        to = esc(&short_list(&m.to)),
        subject = if m.subject.is_empty() {
            "<em>(no subject)</em>".to_owned()
        } else {
            esc(&m.subject)
        },
        snippet = esc(&m.snippet),
        att = if m.attachments > 0 {
            format!(
                "<span class=\"clip\" title=\"{n} attachment(s)\">{n} 📎</span>",
                n = m.attachments
            )
        } else {
            String::new()
        },
        size = size(m.size),
        created = esc(&m.created),
        when = esc(&when(&m.created)),
    )
}

async fn list(State(s): State<AppState>, Query(p): Query<ListParams>) -> Response {
    let start: usize = p.start.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    let inbox = (!p.inbox.is_empty()).then(|| p.inbox.clone());
    let found = s
        .capture
        .index()
        .list(inbox, Search::parse(&p.q), start, PAGE)
        .await;
    let page_data: Page = match found {
        Ok(x) => x,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut m = String::new();
    let shown = page_data.messages.len();
    let _ = write!(
        m,
        "<div class=\"toolbar\"><p id=\"count\" data-total=\"{total}\" data-unread=\"{unread}\">{count}</p>\
         <div id=\"fresh\" class=\"fresh\" hidden><a href=\"/?{k}\">New mail: show</a></div>\
         <form method=\"post\" action=\"/delete\" data-confirm=\"Delete {what}?\">\
         <input type=\"hidden\" name=\"inbox\" value=\"{inbox}\"><input type=\"hidden\" name=\"q\" value=\"{q}\">\
         <button class=\"danger\" id=\"delete-all\" type=\"submit\"{off}>Delete {what}</button></form></div>",
        total = page_data.messages_count,
        unread = page_data.messages_unread,
        count = counts_text(page_data.messages_count, page_data.messages_unread, !p.q.is_empty()),
        k = keep(&p.inbox, &p.q),
        what = if p.q.is_empty() { "all" } else { "these" },
        inbox = esc(&p.inbox),
        q = esc(&p.q),
        off = if page_data.messages_count == 0 { " disabled" } else { "" },
    );
    m.push_str(
        "<table id=\"messages\"><thead><tr><th>From</th><th>To</th><th>Subject</th>\
         <th class=\"size\">Size</th><th class=\"time\">Received (UTC)</th></tr></thead><tbody>",
    );
    for msg in &page_data.messages {
        m.push_str(&row(msg));
    }
    m.push_str("</tbody></table>");
    let _ = write!(
        m,
        "<p id=\"empty\" class=\"empty\"{}>{}</p>",
        if shown == 0 { "" } else { " hidden" },
        if p.q.is_empty() {
            "No messages yet. Send some to the SMTP listener and they appear here."
        } else {
            "No messages match."
        }
    );
    if start > 0 || start + shown < page_data.messages_count as usize {
        m.push_str("<nav class=\"pager\">");
        let k = keep(&p.inbox, &p.q);
        let amp = if k.is_empty() { "" } else { "&" };
        if start > 0 {
            let _ = write!(
                m,
                "<a rel=\"prev\" href=\"/?{k}{amp}start={}\">← Newer</a>",
                start.saturating_sub(PAGE)
            );
        }
        let _ = write!(
            m,
            "<span>{}–{} of {}</span>",
            start + 1,
            start + shown,
            page_data.messages_count
        );
        if start + shown < page_data.messages_count as usize {
            let _ = write!(
                m,
                "<a rel=\"next\" href=\"/?{k}{amp}start={}\">Older →</a>",
                start + PAGE
            );
        }
        m.push_str("</nav>");
    }
    let attrs = format!(
        "data-page=\"list\" data-inbox=\"{}\" data-query=\"{}\" data-start=\"{start}\" data-limit=\"{PAGE}\"",
        esc(&p.inbox),
        esc(&p.q)
    );
    let title = match page_data.messages_unread {
        0 => "Postern sandbox".to_owned(),
        n => format!("({n}) Postern sandbox"),
    };
    page(&title, &attrs, &bar(&s, &p.inbox, &p.q).await, &m)
}

fn counts_text(total: u64, unread: u64, search: bool) -> String {
    let noun = if total == 1 { "message" } else { "messages" };
    let verb = if search { " found" } else { "" };
    format!("{total} {noun}{verb}, {unread} unread")
}

/// An error page.
fn problem(code: StatusCode, text: &str) -> Response {
    let mut r = page(
        "Postern sandbox",
        "data-page=\"error\"",
        "<header class=\"bar\"><a class=\"brand\" href=\"/\">Postern <span>sandbox</span></a></header>",
        &format!(
            "<p class=\"notice error\">{}</p><p><a href=\"/\">Back to the list</a></p>",
            esc(text)
        ),
    );
    *r.status_mut() = code;
    r
}

/// The text of an API response (for the UI's notices).
async fn answer(r: Response) -> (bool, String) {
    let ok = r.status().is_success();
    let body = axum::body::to_bytes(r.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    (ok, body)
}

#[derive(Debug, Deserialize, Default)]
pub struct ViewParams {
    #[serde(default)]
    remote: Option<String>,
    #[serde(default)]
    notice: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl ViewParams {
    fn remote(&self) -> bool {
        self.remote.as_deref() == Some("1")
    }
}

fn addresses(l: &[Address]) -> String {
    l.iter().map(full).collect::<Vec<_>>().join(", ")
}

async fn view(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ViewParams>,
) -> Response {
    let sum = match api::find(&s, &id, &ListQuery::default()).await {
        Ok(m) => m,
        Err(_) => return problem(StatusCode::NOT_FOUND, "Message not found"),
    };
    let (head, raw) = match api::source(&s, &sum.id).await {
        Ok(x) => x,
        Err(_) => return problem(StatusCode::NOT_FOUND, "Message not found"),
    };
    let (v, headers, raw) = match tokio::task::spawn_blocking(move || {
        let v = message::view(&sum, &raw);
        let h = message::headers(&raw);
        (v, h, raw)
    })
    .await
    {
        Ok(x) => x,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    // Read once looked at, as Mailpit does.
    let _ = s
        .capture
        .index()
        .set_read(vec![v.id.clone()], None, Search::default(), true)
        .await;
    let id = esc(&v.id);
    let mut m = String::new();
    if let Some(n) = &p.notice {
        let _ = write!(m, "<p class=\"notice\" id=\"notice\">{}</p>", esc(n));
    }
    if let Some(e) = &p.error {
        let _ = write!(m, "<p class=\"notice error\" id=\"notice\">{}</p>", esc(e));
    }
    m.push_str("<p class=\"notice\" id=\"gone\" hidden>This message was deleted.</p>");
    let _ = write!(
        m,
        "<p class=\"back\"><a href=\"/?{}\">← All messages</a></p><h1 id=\"subject\">{}</h1>",
        keep(&v.inbox, ""),
        if v.subject.is_empty() {
            "<em>(no subject)</em>".to_owned()
        } else {
            esc(&v.subject)
        }
    );
    m.push_str("<table class=\"meta\" id=\"meta\">");
    let mut meta = |name: &str, value: String| {
        if !value.is_empty() {
            let _ = write!(m, "<tr><th>{name}</th><td>{}</td></tr>", esc(&value));
        }
    };
    meta("From", v.from.as_ref().map(full).unwrap_or_default());
    meta("To", addresses(&v.to));
    meta("Cc", addresses(&v.cc));
    meta("Bcc", addresses(&v.bcc));
    meta("Reply-To", addresses(&v.reply_to));
    meta("Date", when(&v.date));
    meta(
        "Received",
        format!("{} UTC", when(&sum_created(&head, &v.date))),
    );
    meta("Size", size(v.size));
    meta("Inbox", v.inbox.clone());
    meta("Local user", v.username.clone());
    meta("Envelope from", head.mail_from.clone());
    meta("Envelope to", head.rcpts.join(", "));
    meta("Message-ID", v.message_id.clone());
    m.push_str("</table>");
    // Actions.
    let _ = write!(
        m,
        "<div class=\"actions\"><a class=\"button\" href=\"/api/v1/message/{id}/raw?dl=1\">Download .eml</a>\
         <form method=\"post\" action=\"/view/{id}/delete\" data-confirm=\"Delete this message?\">\
         <button class=\"danger\" id=\"delete\" type=\"submit\">Delete</button></form>"
    );
    let _ = write!(
        m,
        "<form class=\"release\" method=\"post\" action=\"/view/{id}/release\">\
         <label for=\"release-to\">Release to</label>\
         <input id=\"release-to\" name=\"to\" placeholder=\"{}\">\
         <label for=\"release-via\">through</label><select id=\"release-via\" name=\"via\">",
        esc(&head.rcpts.join(", "))
    );
    let view = s.view();
    let default = view
        .release_via
        .as_ref()
        .map(SendVia::key)
        .unwrap_or_default();
    if view.release_choices.is_empty() {
        m.push_str("<option value=\"\">(no account configured)</option>");
    }
    for c in &view.release_choices {
        let _ = write!(
            m,
            "<option value=\"{v}\"{sel}>{v}</option>",
            v = esc(c),
            sel = if *c == default { " selected" } else { "" }
        );
    }
    let _ = write!(
        m,
        "</select><button type=\"submit\" id=\"release\"{}>Release</button></form></div>",
        if view.release_choices.is_empty() {
            " disabled"
        } else {
            ""
        }
    );
    // Tabs: plain anchors; CSS shows the one targeted (the first without).
    let first = if v.html.is_empty() { "text" } else { "html" };
    let all = v.inline.len() + v.attachments.len();
    let _ = write!(
        m,
        "<nav class=\"tabs\" data-first=\"{first}\">{}<a href=\"#text\">Text</a>\
         <a href=\"#headers\">Headers</a><a href=\"#source\">Source</a>\
         <a href=\"#attachments\">Attachments ({})</a></nav>",
        if v.html.is_empty() {
            ""
        } else {
            "<a href=\"#html\">HTML</a>"
        },
        v.attachments.len()
    );
    if !v.html.is_empty() {
        let remote = p.remote();
        let _ = write!(
            m,
            "<section id=\"html\" class=\"tab{first_cls}\">\
             <p class=\"remote\">{toggle}</p>\
             <iframe id=\"body-html\" title=\"HTML body\" sandbox=\"allow-popups allow-popups-to-escape-sandbox\" \
             referrerpolicy=\"no-referrer\" src=\"/view/{id}/html{q}\"></iframe></section>",
            first_cls = if first == "html" { " first" } else { "" },
            toggle = if remote {
                format!("Remote content is shown. <a href=\"/view/{id}#html\">Block it</a>")
            } else {
                format!(
                    "Remote content (images, styles, fonts from other sites) is blocked. \
                     <a id=\"show-remote\" href=\"/view/{id}?remote=1#html\">Show it</a>"
                )
            },
            q = if remote { "?remote=1" } else { "" },
        );
    }
    let _ = write!(
        m,
        "<section id=\"text\" class=\"tab{}\"><pre id=\"body-text\">{}</pre></section>",
        if first == "text" { " first" } else { "" },
        if v.text.is_empty() {
            "<em>(no text part)</em>".to_owned()
        } else {
            esc(&v.text)
        }
    );
    m.push_str("<section id=\"headers\" class=\"tab\"><table id=\"header-table\">");
    for (name, values) in &headers {
        for value in values {
            let _ = write!(m, "<tr><th>{}</th><td>{}</td></tr>", esc(name), esc(value));
        }
    }
    m.push_str("</table></section>");
    let shown = &raw[..raw.len().min(SOURCE_SHOWN)];
    let _ = write!(
        m,
        "<section id=\"source\" class=\"tab\"><pre id=\"raw\">{}</pre>{}</section>",
        esc(&String::from_utf8_lossy(shown)),
        if raw.len() > SOURCE_SHOWN {
            format!(
                "<p class=\"notice\">The first {} of {} are shown. \
                 <a href=\"/api/v1/message/{id}/raw\">The whole source</a></p>",
                size(SOURCE_SHOWN as u64),
                size(raw.len() as u64)
            )
        } else {
            String::new()
        }
    );
    m.push_str("<section id=\"attachments\" class=\"tab\">");
    if all == 0 {
        m.push_str("<p class=\"empty\">No attachments.</p>");
    } else {
        m.push_str("<ul class=\"files\" id=\"files\">");
        for (a, inline) in v
            .attachments
            .iter()
            .map(|a| (a, false))
            .chain(v.inline.iter().map(|a| (a, true)))
        {
            m.push_str(&file(&v.id, a, inline));
        }
        m.push_str("</ul>");
    }
    m.push_str("</section>");
    let attrs = format!("data-page=\"view\" data-id=\"{id}\"");
    page(&v.subject, &attrs, &bar(&s, &v.inbox, "").await, &m)
}

/// When the capture received it (the `X-Postern-Received` line), else the
/// message's own date.
fn sum_created(head: &crate::capture::Head, date: &str) -> String {
    head.received
        .map(message::rfc3339)
        .unwrap_or_else(|| date.to_owned())
}

fn file(id: &str, a: &Attachment, inline: bool) -> String {
    let name = if a.file_name.is_empty() {
        format!("part {}", a.part_id)
    } else {
        a.file_name.clone()
    };
    format!(
        "<li class=\"file\"><a href=\"/api/v1/message/{id}/part/{part}\" download=\"{name}\">{name}</a>\
         <span>{ctype}, {size}{inline}</span></li>",
        id = esc(id),
        part = qv(&a.part_id),
        name = esc(&name),
        ctype = esc(&a.content_type),
        size = size(a.size),
        inline = if inline { ", inline" } else { "" },
    )
}

/// The HTML body, for the sandboxed frame: `cid:` images point at their
/// parts; scripts, forms, plugins and (unless `?remote=1`) remote content
/// are blocked by the policy sent with it, whatever the browser does with
/// the frame's `sandbox` attribute.
async fn html_body(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ViewParams>,
    headers: HeaderMap,
) -> Response {
    let sum = match api::find(&s, &id, &ListQuery::default()).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let (_, raw) = match api::source(&s, &sum.id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let v = match tokio::task::spawn_blocking(move || message::view(&sum, &raw)).await {
        Ok(v) => v,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut html = v.html;
    for a in v.inline.iter().chain(&v.attachments) {
        if !a.content_id.is_empty() {
            let url = format!("/api/v1/message/{}/part/{}", qv(&v.id), qv(&a.part_id));
            html = html.replace(&format!("cid:{}", a.content_id), &url);
        }
    }
    // Links open outside the frame; nothing else in the message changes.
    let html = format!("<base target=\"_blank\">{html}");
    // The frame has an opaque origin, so 'self' would match nothing there:
    // name this server by the Host the browser used.
    let here = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .map(|h| format!("http://{h}"))
        .unwrap_or_default();
    let csp = if p.remote() {
        format!(
            "default-src 'none'; img-src {here} data: http: https:; style-src 'unsafe-inline' http: https:; \
             font-src data: http: https:; media-src http: https:; form-action 'none'; \
             sandbox allow-popups allow-popups-to-escape-sandbox"
        )
    } else {
        format!(
            "default-src 'none'; img-src {here} data:; style-src 'unsafe-inline'; font-src data:; \
             form-action 'none'; sandbox allow-popups allow-popups-to-escape-sandbox"
        )
    };
    let mut r = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

async fn delete_one(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let inbox = match s.capture.index().get(id.clone()).await {
        Ok(Some(m)) => m.inbox,
        _ => String::new(),
    };
    match s.capture.delete(vec![id]).await {
        Ok(_) => Redirect::to(&format!("/?{}", keep(&inbox, ""))).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct ScopeForm {
    #[serde(default)]
    inbox: String,
    #[serde(default)]
    q: String,
}

async fn delete_all(State(s): State<AppState>, Form(f): Form<ScopeForm>) -> Response {
    let inbox = (!f.inbox.is_empty()).then(|| f.inbox.clone());
    let ids = match s.capture.index().matching(inbox, Search::parse(&f.q)).await {
        Ok(ids) => ids,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match s.capture.delete(ids).await {
        Ok(_) => Redirect::to(&format!("/?{}", keep(&f.inbox, ""))).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct ReleaseForm {
    #[serde(default)]
    to: String,
    #[serde(default)]
    via: String,
}

async fn release_one(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Form(f): Form<ReleaseForm>,
) -> Response {
    let to: Vec<String> =
        f.to.split([',', ';', ' ', '\n'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
    let via = (!f.via.is_empty()).then(|| SendVia::from_key(&f.via));
    let (ok, text) = answer(api::release_to(&s, &id, via, to).await).await;
    let (key, text) = if ok {
        ("notice", "Released.".to_owned())
    } else {
        ("error", format!("Not released: {text}"))
    };
    Redirect::to(&format!("/view/{}?{key}={}", qv(&id), qv(&text))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_treats_specially() {
        assert_eq!(
            esc("<img src=x onerror='a()'>&\""),
            "&lt;img src=x onerror=&#39;a()&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 20), "3.0 MiB");
        assert_eq!(when("2026-12-03T06:40:12.5Z"), "2026-12-03 06:40:12");
        assert_eq!(when("not a time"), "not a time");
    }

    #[test]
    fn links_keep_inbox_and_search() {
        assert_eq!(keep("", ""), "");
        assert_eq!(keep("team a", "to:x&y"), "inbox=team+a&q=to%3Ax%26y");
    }
}
