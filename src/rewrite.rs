//! Sender identity for pools: rewrite the From header to the mailbox that
//! actually sends, keeping the display name, and keep the original sender
//! reachable through Reply-To. mail-parser locates the headers; every byte
//! outside the From line (and the inserted Reply-To line) stays as it was.

use mail_parser::{HeaderName, HeaderValue, MessageParser};

/// The first From header of a message: its byte range (name to end of the
/// line, folded lines included), display name and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromHeader {
    pub range: std::ops::Range<usize>,
    /// The raw value (after "From:"), as written.
    pub raw_value: Vec<u8>,
    pub name: Option<String>,
    pub address: Option<String>,
}

/// Headers of interest, found in one parse.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pub from: Option<FromHeader>,
    pub has_reply_to: bool,
    /// Where the header section ends (the blank line), or the message length.
    pub body_offset: usize,
}

pub fn headers(message: &[u8]) -> Headers {
    let parsed = MessageParser::new().parse_headers(message);
    let mut out = Headers {
        body_offset: message.len(),
        ..Headers::default()
    };
    let Some(msg) = parsed else { return out };
    let root = msg.root_part();
    out.body_offset = (root.offset_body as usize).min(message.len());
    for h in root.headers() {
        match &h.name {
            HeaderName::From if out.from.is_none() => {
                let (name, address) = match &h.value {
                    HeaderValue::Address(a) => match a.first() {
                        Some(addr) => (
                            addr.name.as_ref().map(|s| s.to_string()),
                            addr.address.as_ref().map(|s| s.to_string()),
                        ),
                        None => (None, None),
                    },
                    _ => (None, None),
                };
                let start = h.offset_field as usize;
                let value_start = h.offset_start as usize;
                let end = (h.offset_end as usize).min(message.len());
                if start <= value_start && value_start <= end {
                    out.from = Some(FromHeader {
                        range: start..end,
                        raw_value: message[value_start..end].to_vec(),
                        name,
                        address,
                    });
                }
            }
            HeaderName::ReplyTo => out.has_reply_to = true,
            _ => {}
        }
    }
    out
}

/// A display name as a header phrase: a quoted string, or RFC 2047 base64
/// when it is not printable ASCII.
fn phrase(name: &str) -> String {
    if name.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    } else {
        use base64::Engine;
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name.as_bytes())
        )
    }
}

/// The message with From set to `address` (display name kept) and, when the
/// message had none, a Reply-To carrying the original From value. A message
/// without a From header gets one at the top.
pub fn rewrite_from(message: &[u8], address: &str) -> Vec<u8> {
    let h = headers(message);
    let mut out = Vec::with_capacity(message.len() + 128);
    match h.from {
        Some(from) => {
            out.extend_from_slice(&message[..from.range.start]);
            let new = match from.name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => format!("From: {} <{address}>\r\n", phrase(n)),
                None => format!("From: <{address}>\r\n"),
            };
            out.extend_from_slice(new.as_bytes());
            if !h.has_reply_to {
                out.extend_from_slice(b"Reply-To:");
                out.extend_from_slice(&from.raw_value);
                if !from.raw_value.ends_with(b"\n") {
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(&message[from.range.end..]);
        }
        None => {
            out.extend_from_slice(format!("From: <{address}>\r\n").as_bytes());
            out.extend_from_slice(message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_keeping_everything_else() {
        let m = b"Subject: hi\r\nFrom: \"Alice Example\" <alice@corp.example>\r\nTo: bob@example.org\r\n\r\nbody\r\nFrom: not a header\r\n";
        let out = rewrite_from(m, "pool1@gmail.com");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Subject: hi\r\nFrom: \"Alice Example\" <pool1@gmail.com>\r\nReply-To: \"Alice Example\" <alice@corp.example>\r\nTo: bob@example.org\r\n\r\nbody\r\nFrom: not a header\r\n"
        );
    }

    #[test]
    fn keeps_existing_reply_to_and_handles_bare_and_folded_from() {
        let m = b"From: alice@corp.example\r\nReply-To: help@corp.example\r\n\r\nx\r\n";
        assert_eq!(
            rewrite_from(m, "p@x.example"),
            b"From: <p@x.example>\r\nReply-To: help@corp.example\r\n\r\nx\r\n".to_vec()
        );
        let m = b"From: Alice\r\n <alice@corp.example>\r\nSubject: s\r\n\r\nx\r\n";
        let out = String::from_utf8(rewrite_from(m, "p@x.example")).unwrap();
        assert!(out.starts_with("From: \"Alice\" <p@x.example>\r\nReply-To: Alice\r\n <alice@corp.example>\r\nSubject: s\r\n"), "{out}");
        let m = "From: Jörg <j@corp.example>\r\n\r\nx\r\n".as_bytes();
        let out = String::from_utf8(rewrite_from(m, "p@x.example")).unwrap();
        assert!(
            out.starts_with("From: =?utf-8?b?SsO2cmc=?= <p@x.example>\r\n"),
            "{out}"
        );
    }

    #[test]
    fn no_from_header() {
        assert_eq!(
            rewrite_from(b"Subject: s\r\n\r\nx\r\n", "p@x.example"),
            b"From: <p@x.example>\r\nSubject: s\r\n\r\nx\r\n".to_vec()
        );
    }

    #[test]
    fn finds_the_from_address() {
        let h = headers(b"From: \"A\" <a@b.example>\r\n\r\n");
        assert_eq!(h.from.unwrap().address.as_deref(), Some("a@b.example"));
    }
}
