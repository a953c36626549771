//! The index of captured mail: one SQLite row per Maildir file with the
//! summary the list views show, the addresses and the text searches match,
//! the inbox and the read flag. The Maildir is the truth: the index is
//! rebuilt from it when missing and reconciled with it at every start, so
//! deleting the index file loses nothing but read flags.
//!
//! Searches take Mailpit's syntax (`from:`, `to:`, `subject:`, `is:read`,
//! `has:attachment`, `after:`/`before:`, `larger:`/`smaller:`, quoted
//! phrases, `-` or `!` to negate, plain words over headers and body text).

use std::path::Path;

use rusqlite::{params_from_iter, types::Value};

use super::message::Summary;
use crate::db::{Db, DbError, Schema};

const SCHEMA: Schema = Schema {
    version: 1,
    sql: "
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    inbox TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    attachments INTEGER NOT NULL,
    subject TEXT NOT NULL,
    message_id TEXT NOT NULL,
    from_l TEXT NOT NULL,
    to_l TEXT NOT NULL,
    cc_l TEXT NOT NULL,
    bcc_l TEXT NOT NULL,
    reply_to_l TEXT NOT NULL,
    search TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (created_ms, id);
CREATE INDEX IF NOT EXISTS messages_by_inbox ON messages (inbox, created_ms);
",
};

/// Most messages one page may hold.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("capture index: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("capture index: {0}")]
    Shared(String),
    #[error("capture index: {0}")]
    Task(String),
    #[error("capture index: {0}")]
    Invalid(String),
    #[error("capture index {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("capture index: a stored summary does not parse: {0}")]
    Json(#[from] serde_json::Error),
}

impl DbError for IndexError {
    fn shared(&self) -> IndexError {
        IndexError::Shared(self.to_string())
    }
    fn task(what: &str) -> IndexError {
        IndexError::Task(what.to_owned())
    }
    fn invalid(what: String) -> IndexError {
        IndexError::Invalid(what)
    }
    fn io(path: &Path, source: std::io::Error) -> IndexError {
        IndexError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// One search term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// A field (`from`, `to`, `cc`, `bcc`, `reply-to`, `addressed`,
    /// `subject`, `message-id`) containing the text.
    Field(&'static str, String),
    /// Headers or body text containing the text.
    Text(String),
    IsRead(bool),
    HasAttachment,
    /// Received at or after / before (milliseconds since the epoch).
    After(i64),
    Before(i64),
    /// Larger / smaller than (bytes).
    Larger(u64),
    Smaller(u64),
}

/// A parsed search: terms, each possibly negated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub terms: Vec<(bool, Term)>,
}

impl Search {
    /// Mailpit's query syntax. Unknown `word:` prefixes are searched as
    /// text, as Mailpit does.
    pub fn parse(q: &str) -> Search {
        let mut terms = Vec::new();
        for raw in split_terms(q) {
            let (neg, t) = match raw.strip_prefix(['-', '!']) {
                Some(rest) if !rest.is_empty() => (true, rest.to_owned()),
                _ => (false, raw),
            };
            let lower = t.to_lowercase();
            let term = match lower.split_once(':') {
                Some((k, v)) if !v.is_empty() => match k {
                    "from" => Term::Field("from_l", v.to_owned()),
                    "to" => Term::Field("to_l", v.to_owned()),
                    "cc" => Term::Field("cc_l", v.to_owned()),
                    "bcc" => Term::Field("bcc_l", v.to_owned()),
                    "reply-to" => Term::Field("reply_to_l", v.to_owned()),
                    "addressed" => Term::Field("addressed", v.to_owned()),
                    "subject" => Term::Field("subject", v.to_owned()),
                    "message-id" => Term::Field("message_id", v.to_owned()),
                    "is" if v == "read" => Term::IsRead(true),
                    "is" if v == "unread" => Term::IsRead(false),
                    "has" if v.starts_with("attachment") => Term::HasAttachment,
                    "after" | "before" => match parse_date(v) {
                        Some(ms) if k == "after" => Term::After(ms),
                        Some(ms) => Term::Before(ms),
                        None => Term::Text(lower.clone()),
                    },
                    "larger" | "smaller" => match parse_size(v) {
                        Some(n) if k == "larger" => Term::Larger(n),
                        Some(n) => Term::Smaller(n),
                        None => Term::Text(lower.clone()),
                    },
                    _ => Term::Text(lower.clone()),
                },
                _ => Term::Text(lower.clone()),
            };
            terms.push((neg, term));
        }
        Search { terms }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether `s` (with its search text) matches: the same test as the SQL
    /// (for the wait endpoint, which checks each new message).
    pub fn matches(&self, s: &Summary, search: &str) -> bool {
        let addr = |list: &mut dyn Iterator<Item = &super::message::Address>| {
            let mut out = String::new();
            for a in list {
                out.push_str(&a.name.to_lowercase());
                out.push(' ');
                out.push_str(&a.address.to_lowercase());
                out.push('\n');
            }
            out
        };
        self.terms.iter().all(|(neg, t)| {
            let hit = match t {
                Term::Field(f, v) => {
                    let hay = match *f {
                        "from_l" => addr(&mut s.from.iter()),
                        "to_l" => addr(&mut s.to.iter()),
                        "cc_l" => addr(&mut s.cc.iter()),
                        "bcc_l" => addr(&mut s.bcc.iter()),
                        "reply_to_l" => addr(&mut s.reply_to.iter()),
                        "subject" => s.subject.to_lowercase(),
                        "message_id" => s.message_id.to_lowercase(),
                        _ => addr(
                            &mut s
                                .from
                                .iter()
                                .chain(&s.to)
                                .chain(&s.cc)
                                .chain(&s.bcc)
                                .chain(&s.reply_to),
                        ),
                    };
                    hay.contains(v.as_str())
                }
                Term::Text(v) => search.contains(v.as_str()),
                Term::IsRead(r) => s.read == *r,
                Term::HasAttachment => s.attachments > 0,
                Term::After(ms) => created_ms(s) >= *ms,
                Term::Before(ms) => created_ms(s) < *ms,
                Term::Larger(n) => s.size > *n,
                Term::Smaller(n) => s.size < *n,
            };
            hit != *neg
        })
    }

    /// The SQL condition and its parameters.
    fn sql(&self, inbox: Option<&str>) -> (String, Vec<Value>) {
        let mut conds = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if let Some(i) = inbox {
            conds.push("inbox = ?".to_owned());
            params.push(Value::Text(i.to_owned()));
        }
        for (neg, t) in &self.terms {
            let c = match t {
                Term::Field("addressed", v) => {
                    let like = like(v);
                    for _ in 0..5 {
                        params.push(Value::Text(like.clone()));
                    }
                    "(from_l LIKE ? ESCAPE '\\' OR to_l LIKE ? ESCAPE '\\' OR cc_l LIKE ? ESCAPE '\\' OR bcc_l LIKE ? ESCAPE '\\' OR reply_to_l LIKE ? ESCAPE '\\')".to_owned()
                }
                Term::Field(f, v) => {
                    params.push(Value::Text(like(v)));
                    if *f == "subject" || *f == "message_id" {
                        format!("lower({f}) LIKE ? ESCAPE '\\'")
                    } else {
                        format!("{f} LIKE ? ESCAPE '\\'")
                    }
                }
                Term::Text(v) => {
                    params.push(Value::Text(like(v)));
                    "search LIKE ? ESCAPE '\\'".to_owned()
                }
                Term::IsRead(r) => format!("read = {}", i64::from(*r)),
                Term::HasAttachment => "attachments > 0".to_owned(),
                Term::After(ms) => format!("created_ms >= {ms}"),
                Term::Before(ms) => format!("created_ms < {ms}"),
                Term::Larger(n) => format!("size > {n}"),
                Term::Smaller(n) => format!("size < {n}"),
            };
            conds.push(if *neg { format!("NOT ({c})") } else { c });
        }
        if conds.is_empty() {
            ("1".into(), params)
        } else {
            (conds.join(" AND "), params)
        }
    }
}

fn created_ms(s: &Summary) -> i64 {
    s.created
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .unwrap_or(0)
}

/// Whitespace-separated terms; `"a phrase"` (also `to:"a b"`) stays one.
fn split_terms(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in q.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `%text%` with LIKE's wildcards escaped.
fn like(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('%');
    for c in v.chars() {
        if matches!(c, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('%');
    s
}

/// `2024-01-31`, an RFC 3339 time, or seconds / milliseconds since the
/// epoch.
fn parse_date(v: &str) -> Option<i64> {
    if let Ok(n) = v.parse::<i64>() {
        return Some(if n > 100_000_000_000 { n } else { n * 1000 });
    }
    if let Ok(t) = v.parse::<jiff::Timestamp>() {
        return Some(t.as_millisecond());
    }
    let d: jiff::civil::Date = v.parse().ok()?;
    d.to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_millisecond())
}

/// `500`, `500k`, `2mb` (Mailpit's units: k/kb, m/mb).
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("kb").or(v.strip_suffix('k')) {
        (n, 1024)
    } else if let Some(n) = v.strip_suffix("mb").or(v.strip_suffix('m')) {
        (n, 1024 * 1024)
    } else {
        (v, 1)
    };
    let n: f64 = num.trim().parse().ok()?;
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

/// One page of a listing, with the counts Mailpit's `MessagesSummary` has.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page {
    /// Messages in the inbox (or all inboxes).
    pub total: u64,
    pub unread: u64,
    /// The length of this page (Mailpit's legacy field).
    pub count: u64,
    /// Messages matching the search.
    pub messages_count: u64,
    pub messages_unread: u64,
    pub start: u64,
    pub tags: Vec<String>,
    pub messages: Vec<Summary>,
}

/// An inbox with its counts (for the UI's switcher).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InboxCount {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Total")]
    pub total: u64,
    #[serde(rename = "Unread")]
    pub unread: u64,
}

/// The index file.
#[derive(Clone)]
pub struct Index {
    db: Db<IndexError>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.db.path())
            .finish()
    }
}

fn row_summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, bool)> {
    Ok((r.get(0)?, r.get::<_, i64>(1)? != 0))
}

fn decode(rows: Vec<(String, bool)>) -> Result<Vec<Summary>, IndexError> {
    rows.into_iter()
        .map(|(json, read)| {
            let mut s: Summary = serde_json::from_str(&json)?;
            s.read = read;
            Ok(s)
        })
        .collect()
}

impl Index {
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        Ok(Index {
            db: Db::open(path, &SCHEMA, "capture-index")?,
        })
    }

    /// Adds (or replaces) a message.
    pub async fn add(&self, s: Summary, search: String) -> Result<(), IndexError> {
        self.add_many(vec![(s, search)]).await
    }

    pub async fn add_many(&self, items: Vec<(Summary, String)>) -> Result<(), IndexError> {
        self.db
            .write(move |c| {
                let mut st = c.prepare_cached(
                    "INSERT OR REPLACE INTO messages (id, inbox, created_ms, read, size, attachments, subject, message_id, from_l, to_l, cc_l, bcc_l, reply_to_l, search, summary)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )?;
                for (s, search) in &items {
                    let list = |a: &mut dyn Iterator<Item = &super::message::Address>| {
                        a.map(|x| format!("{} {}", x.name, x.address).to_lowercase())
                            .collect::<Vec<_>>()
                            .join("\n")
                    };
                    st.execute(rusqlite::params![
                        s.id,
                        s.inbox,
                        created_ms(s),
                        i64::from(s.read),
                        s.size as i64,
                        s.attachments as i64,
                        s.subject,
                        s.message_id,
                        list(&mut s.from.iter()),
                        list(&mut s.to.iter()),
                        list(&mut s.cc.iter()),
                        list(&mut s.bcc.iter()),
                        list(&mut s.reply_to.iter()),
                        search,
                        serde_json::to_string(s)?,
                    ])?;
                }
                Ok(())
            })
            .await
    }

    /// A page of messages, newest first.
    pub async fn list(
        &self,
        inbox: Option<String>,
        search: Search,
        start: usize,
        limit: usize,
    ) -> Result<Page, IndexError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        self.db
            .read(move |c| {
                let (scope, scope_params) = Search::default().sql(inbox.as_deref());
                let (cond, params) = search.sql(inbox.as_deref());
                let counts = |cond: &str, params: &[Value]| -> rusqlite::Result<(u64, u64)> {
                    c.query_row(
                        &format!("SELECT count(*), coalesce(sum(read = 0), 0) FROM messages WHERE {cond}"),
                        params_from_iter(params.iter()),
                        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
                    )
                };
                let (total, unread) = counts(&scope, &scope_params)?;
                let (matching, matching_unread) = if search.is_empty() {
                    (total, unread)
                } else {
                    counts(&cond, &params)?
                };
                let mut p = params.clone();
                p.push(Value::Integer(limit as i64));
                p.push(Value::Integer(start as i64));
                let mut st = c.prepare(&format!(
                    "SELECT summary, read FROM messages WHERE {cond} ORDER BY created_ms DESC, id DESC LIMIT ? OFFSET ?"
                ))?;
                let rows = st
                    .query_map(params_from_iter(p.iter()), row_summary)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let messages = decode(rows)?;
                Ok(Page {
                    total,
                    unread,
                    count: messages.len() as u64,
                    messages_count: matching,
                    messages_unread: matching_unread,
                    start: start as u64,
                    tags: Vec::new(),
                    messages,
                })
            })
            .await
    }

    /// One message by id, or the newest (`latest`) matching `search`.
    pub async fn get(&self, id: String) -> Result<Option<Summary>, IndexError> {
        self.db
            .read(move |c| {
                let rows = c
                    .prepare_cached("SELECT summary, read FROM messages WHERE id = ?1")?
                    .query_map([&id], row_summary)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(decode(rows)?.pop())
            })
            .await
    }

    /// Marks messages read or unread: these ids, or every message matching
    /// `search` in `inbox` when `ids` is empty.
    pub async fn set_read(
        &self,
        ids: Vec<String>,
        inbox: Option<String>,
        search: Search,
        read: bool,
    ) -> Result<u64, IndexError> {
        self.db
            .write(move |c| {
                let flag = i64::from(read);
                if !ids.is_empty() {
                    let mut st = c.prepare_cached("UPDATE messages SET read = ?1 WHERE id = ?2")?;
                    let mut n = 0;
                    for id in &ids {
                        n += st.execute(rusqlite::params![flag, id])? as u64;
                    }
                    return Ok(n);
                }
                let (cond, params) = search.sql(inbox.as_deref());
                let mut p = vec![Value::Integer(flag)];
                p.extend(params);
                Ok(c.execute(
                    &format!("UPDATE messages SET read = ? WHERE {cond}"),
                    params_from_iter(p.iter()),
                )? as u64)
            })
            .await
    }

    /// Ids matching `search` in `inbox` (all of them when both are empty).
    pub async fn matching(
        &self,
        inbox: Option<String>,
        search: Search,
    ) -> Result<Vec<String>, IndexError> {
        self.db
            .read(move |c| {
                let (cond, params) = search.sql(inbox.as_deref());
                let mut st = c.prepare(&format!("SELECT id FROM messages WHERE {cond}"))?;
                let ids = st
                    .query_map(params_from_iter(params.iter()), |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(ids)
            })
            .await
    }

    /// Removes rows; returns the ids that were there.
    pub async fn remove(&self, ids: Vec<String>) -> Result<Vec<String>, IndexError> {
        self.db
            .write(move |c| {
                let mut st = c.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
                let mut gone = Vec::new();
                for id in ids {
                    if st.execute([&id])? > 0 {
                        gone.push(id);
                    }
                }
                Ok(gone)
            })
            .await
    }

    /// An inbox's messages, oldest first, with their sizes (a POP3 maildrop).
    pub async fn mailbox(&self, inbox: String) -> Result<Vec<(String, u64)>, IndexError> {
        self.db
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, size FROM messages WHERE inbox = ?1 ORDER BY created_ms, id",
                )?;
                let rows = st
                    .query_map([&inbox], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }

    /// Every id, oldest first.
    pub async fn all_ids(&self) -> Result<Vec<String>, IndexError> {
        self.matching(None, Search::default()).await
    }

    /// Ids to prune: beyond the newest `max_messages`, or received before
    /// `before_ms`.
    pub async fn prunable(
        &self,
        max_messages: Option<u64>,
        before_ms: Option<i64>,
    ) -> Result<Vec<String>, IndexError> {
        self.db
            .read(move |c| {
                let mut out = Vec::new();
                if let Some(ms) = before_ms {
                    let mut st = c.prepare_cached("SELECT id FROM messages WHERE created_ms < ?1")?;
                    out.extend(
                        st.query_map([ms], |r| r.get::<_, String>(0))?
                            .collect::<rusqlite::Result<Vec<_>>>()?,
                    );
                }
                if let Some(max) = max_messages {
                    let mut st = c.prepare_cached(
                        "SELECT id FROM messages ORDER BY created_ms DESC, id DESC LIMIT -1 OFFSET ?1",
                    )?;
                    for id in st
                        .query_map([max as i64], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                    {
                        if !out.contains(&id) {
                            out.push(id);
                        }
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Every inbox with its counts, by name.
    pub async fn inboxes(&self) -> Result<Vec<InboxCount>, IndexError> {
        self.db
            .read(|c| {
                let mut st = c.prepare_cached(
                    "SELECT inbox, count(*), coalesce(sum(read = 0), 0) FROM messages GROUP BY inbox ORDER BY inbox",
                )?;
                let rows = st
                    .query_map([], |r| {
                        Ok(InboxCount {
                            name: r.get(0)?,
                            total: r.get::<_, i64>(1)? as u64,
                            unread: r.get::<_, i64>(2)? as u64,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailpit_query_syntax() {
        let s = Search::parse("from:Jane to:\"bob smith\" -subject:spam !is:read has:attachment hello larger:2mb smaller:500k after:2024-01-31 foo:bar");
        assert_eq!(
            s.terms,
            vec![
                (false, Term::Field("from_l", "jane".into())),
                (false, Term::Field("to_l", "bob smith".into())),
                (true, Term::Field("subject", "spam".into())),
                (true, Term::IsRead(true)),
                (false, Term::HasAttachment),
                (false, Term::Text("hello".into())),
                (false, Term::Larger(2 * 1024 * 1024)),
                (false, Term::Smaller(500 * 1024)),
                (false, Term::After(1_706_659_200_000)),
                (false, Term::Text("foo:bar".into())),
            ]
        );
        assert!(Search::parse("   ").is_empty());
        assert_eq!(like("50%_x\\"), "%50\\%\\_x\\\\%");
    }
}
