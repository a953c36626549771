//! A captured message as the sandbox shows it: the summary kept in the
//! index and the full view the API and the UI serve, with Mailpit's field
//! names (`ID`, `From`, `To`, `PartID`, …) so that Mailpit clients read
//! them unchanged. Parsing is mail-parser's and never fails: a message it
//! cannot make sense of still has its size, its raw source and whatever
//! headers could be read.

use std::borrow::Cow;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;
use sha2::Digest;

/// Characters of body text in a summary's snippet (Mailpit's limit).
const SNIPPET: usize = 250;
/// Body text kept for search, per message.
const SEARCH_TEXT: usize = 64 * 1024;

/// `{"Name": …, "Address": …}` (Go's `net/mail.Address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Address {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Address")]
    pub address: String,
}

/// What the index stores per message and the list endpoints return
/// (Mailpit's `MessageSummary`, plus `Inbox`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Summary {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "MessageID")]
    pub message_id: String,
    #[serde(rename = "Read")]
    pub read: bool,
    #[serde(rename = "From")]
    pub from: Option<Address>,
    #[serde(rename = "To")]
    pub to: Vec<Address>,
    #[serde(rename = "Cc")]
    pub cc: Vec<Address>,
    #[serde(rename = "Bcc")]
    pub bcc: Vec<Address>,
    #[serde(rename = "ReplyTo")]
    pub reply_to: Vec<Address>,
    #[serde(rename = "Subject")]
    pub subject: String,
    /// When Postern received it (RFC 3339).
    #[serde(rename = "Created")]
    pub created: String,
    /// The local user that sent it.
    #[serde(rename = "Username")]
    pub username: String,
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    /// Bytes of the message as received.
    #[serde(rename = "Size")]
    pub size: u64,
    /// How many attachments (a count here, a list in [`View`]).
    #[serde(rename = "Attachments")]
    pub attachments: u64,
    #[serde(rename = "Snippet")]
    pub snippet: String,
    /// The inbox it belongs to (the user's `inbox`, else the user name).
    #[serde(rename = "Inbox")]
    pub inbox: String,
}

/// A part that is not the body: `Attachments` and `Inline` entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attachment {
    /// The MIME path (`"2"`, `"1.2"`), as Mailpit numbers parts.
    #[serde(rename = "PartID")]
    pub part_id: String,
    #[serde(rename = "FileName")]
    pub file_name: String,
    #[serde(rename = "ContentType")]
    pub content_type: String,
    #[serde(rename = "ContentID")]
    pub content_id: String,
    /// Decoded bytes.
    #[serde(rename = "Size")]
    pub size: u64,
    #[serde(rename = "Checksums")]
    pub checksums: Checksums,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checksums {
    #[serde(rename = "MD5")]
    pub md5: String,
    #[serde(rename = "SHA1")]
    pub sha1: String,
    #[serde(rename = "SHA256")]
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListUnsubscribe {
    #[serde(rename = "Header")]
    pub header: String,
    #[serde(rename = "Links")]
    pub links: Vec<String>,
    #[serde(rename = "Errors")]
    pub errors: String,
    #[serde(rename = "HeaderPost")]
    pub header_post: String,
}

/// One message in full (Mailpit's `Message`, plus `Inbox`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "MessageID")]
    pub message_id: String,
    #[serde(rename = "From")]
    pub from: Option<Address>,
    #[serde(rename = "To")]
    pub to: Vec<Address>,
    #[serde(rename = "Cc")]
    pub cc: Vec<Address>,
    #[serde(rename = "Bcc")]
    pub bcc: Vec<Address>,
    #[serde(rename = "ReplyTo")]
    pub reply_to: Vec<Address>,
    #[serde(rename = "ReturnPath")]
    pub return_path: String,
    #[serde(rename = "Subject")]
    pub subject: String,
    #[serde(rename = "ListUnsubscribe")]
    pub list_unsubscribe: ListUnsubscribe,
    #[serde(rename = "Date")]
    pub date: String,
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    #[serde(rename = "Username")]
    pub username: String,
    #[serde(rename = "Text")]
    pub text: String,
    #[serde(rename = "HTML")]
    pub html: String,
    #[serde(rename = "Size")]
    pub size: u64,
    #[serde(rename = "Inline")]
    pub inline: Vec<Attachment>,
    #[serde(rename = "Attachments")]
    pub attachments: Vec<Attachment>,
    #[serde(rename = "Inbox")]
    pub inbox: String,
}

/// What the capture knows beyond the message: who sent it and when.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: String,
    pub inbox: String,
    pub username: String,
    pub created: jiff::Timestamp,
    pub read: bool,
}

/// A summary and the text the index searches (lower-cased headers and
/// body text).
pub fn summarize(meta: &Meta, raw: &[u8]) -> (Summary, String) {
    let parsed = MessageParser::default().parse(raw);
    let mut s = Summary {
        id: meta.id.clone(),
        message_id: String::new(),
        read: meta.read,
        from: None,
        to: Vec::new(),
        cc: Vec::new(),
        bcc: Vec::new(),
        reply_to: Vec::new(),
        subject: String::new(),
        created: rfc3339(meta.created),
        username: meta.username.clone(),
        tags: Vec::new(),
        size: raw.len() as u64,
        attachments: 0,
        snippet: String::new(),
        inbox: meta.inbox.clone(),
    };
    let mut search = String::new();
    if let Some(m) = &parsed {
        s.message_id = m.message_id().map(one_line).unwrap_or_default();
        s.from = m.from().and_then(|a| addresses(Some(a)).into_iter().next());
        s.to = addresses(m.to());
        s.cc = addresses(m.cc());
        s.bcc = addresses(m.bcc());
        s.reply_to = addresses(m.reply_to());
        s.subject = m.subject().map(one_line).unwrap_or_default();
        s.attachments = parts(m).1.len() as u64;
        s.snippet = m
            .body_preview(SNIPPET * 2)
            .map(|p| collapse(&p, SNIPPET))
            .unwrap_or_default();
        for (name, value) in m.headers_raw() {
            search.push_str(name);
            search.push_str(": ");
            search.push_str(value.trim());
            search.push('\n');
        }
        // Decoded forms too, so a search finds an encoded subject.
        search.push_str(&s.subject);
        search.push('\n');
        for a in s.from.iter().chain(&s.to).chain(&s.cc).chain(&s.bcc) {
            search.push_str(&a.name);
            search.push(' ');
            search.push_str(&a.address);
            search.push('\n');
        }
        let mut body = m.body_text(0).unwrap_or(Cow::Borrowed(""));
        if body.is_empty() {
            body = m.body_html(0).unwrap_or(Cow::Borrowed(""));
        }
        search.extend(body.chars().take(SEARCH_TEXT));
    } else {
        search.push_str(&String::from_utf8_lossy(&raw[..raw.len().min(SEARCH_TEXT)]));
    }
    (s, search.to_lowercase())
}

/// The full view of a message.
pub fn view(summary: &Summary, raw: &[u8]) -> View {
    let parsed = MessageParser::default().parse(raw);
    let mut v = View {
        id: summary.id.clone(),
        message_id: summary.message_id.clone(),
        from: summary.from.clone(),
        to: summary.to.clone(),
        cc: summary.cc.clone(),
        bcc: summary.bcc.clone(),
        reply_to: summary.reply_to.clone(),
        return_path: summary
            .from
            .as_ref()
            .map(|a| a.address.clone())
            .unwrap_or_default(),
        subject: summary.subject.clone(),
        list_unsubscribe: ListUnsubscribe {
            header: String::new(),
            links: Vec::new(),
            errors: String::new(),
            header_post: String::new(),
        },
        date: summary.created.clone(),
        tags: summary.tags.clone(),
        username: summary.username.clone(),
        text: String::new(),
        html: String::new(),
        size: summary.size,
        inline: Vec::new(),
        attachments: Vec::new(),
        inbox: summary.inbox.clone(),
    };
    let Some(m) = parsed else { return v };
    if let Some(rp) = m.return_address() {
        v.return_path = one_line(rp);
    }
    if let Some(d) = m.date() {
        if let Ok(t) = jiff::Timestamp::from_second(d.to_timestamp()) {
            v.date = rfc3339(t);
        }
    }
    if let Some(h) = m.header_raw("List-Unsubscribe") {
        v.list_unsubscribe.header = one_line(h.trim());
        v.list_unsubscribe.links = h
            .split(',')
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix('<')?.strip_suffix('>').map(str::to_owned)
            })
            .collect();
    }
    if let Some(h) = m.header_raw("List-Unsubscribe-Post") {
        v.list_unsubscribe.header_post = one_line(h.trim());
    }
    v.text = m.body_text(0).map(Cow::into_owned).unwrap_or_default();
    v.html = m.body_html(0).map(Cow::into_owned).unwrap_or_default();
    // mail-parser makes an HTML body out of a text-only message: Mailpit
    // leaves HTML empty then.
    if m.html_body_count() == 0
        || m.html_body.iter().all(|i| {
            !matches!(
                m.parts.get(*i as usize).map(|p| &p.body),
                Some(PartType::Html(_))
            )
        })
    {
        v.html.clear();
    }
    let (inline, attachments) = parts(&m);
    v.inline = inline;
    v.attachments = attachments;
    v
}

/// The decoded bytes and content type of the part with MIME path `part_id`,
/// and its file name.
pub fn part(raw: &[u8], part_id: &str) -> Option<(Vec<u8>, String, String)> {
    let m = MessageParser::default().parse(raw)?;
    let paths = mime_paths(&m);
    let (idx, _) = paths.iter().find(|(_, p)| p == part_id)?;
    let p = m.parts.get(*idx)?;
    let body = match &p.body {
        PartType::Text(t) | PartType::Html(t) => t.as_bytes().to_vec(),
        PartType::Binary(b) | PartType::InlineBinary(b) => b.to_vec(),
        PartType::Message(inner) => inner.raw_message.to_vec(),
        PartType::Multipart(_) => return None,
    };
    Some((
        body,
        content_type(p),
        p.attachment_name().map(one_line).unwrap_or_default(),
    ))
}

/// Headers as Mailpit's `/headers` gives them: canonical names (Go's
/// textproto: `Message-Id`, `Content-Type`), each with its values in order.
pub fn headers(raw: &[u8]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    if let Some(m) = MessageParser::default().parse(raw) {
        for (name, value) in m.headers_raw() {
            out.entry(canonical(name)).or_default().push(unfold(value));
        }
    }
    out
}

/// Inline parts and attachments (every part that is not a body).
fn parts(m: &mail_parser::Message<'_>) -> (Vec<Attachment>, Vec<Attachment>) {
    let paths = mime_paths(m);
    let mut inline = Vec::new();
    let mut attachments = Vec::new();
    for &i in &m.attachments {
        let i = i as usize;
        let Some(p) = m.parts.get(i) else { continue };
        let bytes: Cow<'_, [u8]> = match &p.body {
            PartType::Text(t) | PartType::Html(t) => Cow::Borrowed(t.as_bytes()),
            PartType::Binary(b) | PartType::InlineBinary(b) => Cow::Borrowed(b.as_ref()),
            PartType::Message(inner) => Cow::Borrowed(inner.raw_message.as_ref()),
            PartType::Multipart(_) => continue,
        };
        let content_id = p
            .content_id()
            .map(|c| one_line(c.trim_start_matches('<').trim_end_matches('>')))
            .unwrap_or_default();
        let file_name = p
            .attachment_name()
            .map(one_line)
            .unwrap_or_else(|| content_id.clone());
        let a = Attachment {
            part_id: paths
                .iter()
                .find(|(idx, _)| *idx == i)
                .map(|(_, p)| p.clone())
                .unwrap_or_default(),
            file_name,
            content_type: content_type(p),
            content_id: content_id.clone(),
            size: bytes.len() as u64,
            checksums: checksums(&bytes),
        };
        let disposition_inline = p
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline"));
        if matches!(p.body, PartType::InlineBinary(_))
            || (disposition_inline && !content_id.is_empty())
        {
            inline.push(a);
        } else {
            attachments.push(a);
        }
    }
    (inline, attachments)
}

/// Each part's MIME path: the children of a multipart are numbered from 1
/// under their parent's path; a message that is one part is `"1"`.
fn mime_paths(m: &mail_parser::Message<'_>) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let Some(root) = m.parts.first() else {
        return out;
    };
    match &root.body {
        PartType::Multipart(children) => {
            let mut stack: Vec<(usize, String)> = children
                .iter()
                .enumerate()
                .rev()
                .map(|(n, c)| (*c as usize, (n + 1).to_string()))
                .collect();
            // Bounded: every part is visited once (mail-parser's tree).
            let mut seen = vec![false; m.parts.len()];
            while let Some((i, path)) = stack.pop() {
                if i >= m.parts.len() || std::mem::replace(&mut seen[i], true) {
                    continue;
                }
                if let PartType::Multipart(kids) = &m.parts[i].body {
                    for (n, c) in kids.iter().enumerate().rev() {
                        stack.push((*c as usize, format!("{path}.{}", n + 1)));
                    }
                }
                out.push((i, path));
            }
        }
        _ => out.push((0, "1".into())),
    }
    out
}

fn content_type(p: &mail_parser::MessagePart<'_>) -> String {
    match p.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => one_line(&format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase()),
            None => one_line(&ct.ctype().to_ascii_lowercase()),
        },
        None => match p.body {
            PartType::Html(_) => "text/html".into(),
            PartType::Text(_) => "text/plain".into(),
            PartType::Message(_) => "message/rfc822".into(),
            _ => "application/octet-stream".into(),
        },
    }
}

fn checksums(bytes: &[u8]) -> Checksums {
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Checksums {
        md5: hex(&md5::Md5::digest(bytes)),
        sha1: hex(&sha1::Sha1::digest(bytes)),
        sha256: hex(&sha2::Sha256::digest(bytes)),
    }
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> Vec<Address> {
    let Some(a) = a else { return Vec::new() };
    a.iter()
        .map(|x| Address {
            name: x.name.as_deref().map(one_line).unwrap_or_default(),
            address: x.address.as_deref().map(one_line).unwrap_or_default(),
        })
        .collect()
}

/// RFC 3339 with nanoseconds, UTC.
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// Text from a message, made safe for one line of JSON or HTML.
fn one_line(s: &str) -> String {
    crate::text::sanitize(s, 4096)
}

fn collapse(s: &str, max: usize) -> String {
    let words: Vec<&str> = s.split_whitespace().collect();
    words.join(" ").chars().take(max).collect()
}

fn unfold(v: &str) -> String {
    let joined: Vec<&str> = v
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    crate::text::sanitize(&joined.join(" "), 16 * 1024)
}

/// `message-id` → `Message-Id` (Go's textproto.CanonicalMIMEHeaderKey).
fn canonical(name: &str) -> String {
    let mut up = true;
    name.chars()
        .map(|c| {
            let out = if up {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            up = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            id: "m1".into(),
            inbox: "app".into(),
            username: "app".into(),
            created: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            read: false,
        }
    }

    const MIXED: &[u8] = b"From: \"Example App\" <noreply@app.example>\r\nTo: Jane <jane@example.com>, bob@example.com\r\nCc: c@example.com\r\nSubject: =?utf-8?q?Confirm_caf=C3=A9?=\r\nMessage-ID: <abc@app.example>\r\nDate: Mon, 01 Jan 2024 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: multipart/related; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>Jane</b></p><img src=\"cid:logo@app\">\r\n--b2\r\nContent-Type: image/png\r\nContent-ID: <logo@app>\r\nContent-Disposition: inline; filename=\"logo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b2--\r\n--b1\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n";

    #[test]
    fn a_mixed_message_in_mailpit_terms() {
        let (s, search) = summarize(&meta(), MIXED);
        assert_eq!(s.subject, "Confirm café");
        assert_eq!(s.message_id, "abc@app.example");
        assert_eq!(
            s.from,
            Some(Address {
                name: "Example App".into(),
                address: "noreply@app.example".into()
            })
        );
        assert_eq!(s.to.len(), 2);
        assert_eq!(s.to[1].name, "");
        assert_eq!(s.attachments, 1, "inline parts are not counted");
        assert!(s.snippet.contains("Hi Jane"), "{}", s.snippet);
        assert!(search.contains("confirm café") && search.contains("jane@example.com"));
        let v = view(&s, MIXED);
        assert!(v.html.contains("<b>Jane</b>"));
        assert_eq!(v.date, "2024-01-01T12:00:00.000000000Z");
        assert_eq!(v.inline.len(), 1);
        assert_eq!(v.inline[0].part_id, "1.2");
        assert_eq!(v.inline[0].content_id, "logo@app");
        assert_eq!(v.attachments.len(), 1);
        let a = &v.attachments[0];
        assert_eq!(
            (a.part_id.as_str(), a.file_name.as_str()),
            ("2", "invoice.pdf")
        );
        assert_eq!(a.content_type, "application/pdf");
        assert_eq!(a.size, 9);
        let (bytes, ct, name) = part(MIXED, "2").unwrap();
        assert_eq!(bytes, b"%PDF-1.4\n");
        assert_eq!(
            (ct.as_str(), name.as_str()),
            ("application/pdf", "invoice.pdf")
        );
        assert!(part(MIXED, "9").is_none());
        let h = headers(MIXED);
        assert_eq!(h["Message-Id"], vec!["<abc@app.example>"]);
        assert!(h.contains_key("Mime-Version"));
    }

    #[test]
    fn bad_input_still_gives_a_summary() {
        let cases: &[&[u8]] = &[
            b"",
            b"no headers at all",
            b"Subject: \xff\xfe bad utf-8\r\nFrom: \x80@\x81\r\n\r\nbody",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nunterminated",
            b"Subject: only an attachment\r\nContent-Type: application/octet-stream\r\n\r\nAAAA",
        ];
        for raw in cases {
            let (s, _) = summarize(&meta(), raw);
            assert_eq!(s.size, raw.len() as u64);
            let v = view(&s, raw);
            let _ = serde_json::to_string(&v).unwrap();
            let _ = headers(raw);
        }
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical("message-id"), "Message-Id");
        assert_eq!(canonical("X-POSTERN-user"), "X-Postern-User");
    }
}
