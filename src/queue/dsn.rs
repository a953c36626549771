//! RFC 3464 delivery status notifications: the message that tells a sender
//! their queued mail could not be delivered (a permanent refusal, or
//! `max_queue_age` passed). A `multipart/report` with a human part, the
//! machine-readable `message/delivery-status` part and the original headers
//! (`text/rfc822-headers`, RFC 6522). Pure: bytes in, bytes out.

use jiff::Timestamp;

/// One recipient the report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub rcpt: String,
    /// RFC 3463 status, e.g. `5.1.1`, or `4.4.7` for an expired message.
    pub status: String,
    /// What the server said (`550 5.1.1 No such user`), or why it expired.
    pub diagnostic: String,
}

/// What the report says.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// This host's name (`hostname` in the config).
    pub reporting_mta: &'a str,
    /// The From of the report (`"Mail Delivery System" <…>`).
    pub from: &'a str,
    /// The original envelope sender: the report goes to them.
    pub to: &'a str,
    pub queue_id: &'a str,
    pub arrival: Timestamp,
    pub now: Timestamp,
    pub failed: &'a [Failed],
    /// The original message (only its header block is included).
    pub original: &'a [u8],
}

/// The header block of a message: up to the first empty line, CRLF lines.
pub fn header_block(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| message.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
        .unwrap_or(message.len());
    &message[..end]
}

fn rfc2822(t: Timestamp) -> String {
    jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_string(&t)
        .unwrap_or_else(|_| t.to_string())
}

/// Text that goes into a header or a report field: one line, printable.
fn field(s: &str) -> String {
    crate::text::sanitize(s, 900)
}

/// The report as a message (CRLF line ends).
pub fn build(r: &Report<'_>) -> Vec<u8> {
    let boundary = format!("postern-dsn-{}-{}", r.queue_id, r.now.as_millisecond());
    let expired = r.failed.iter().all(|f| f.status.starts_with('4'));
    let subject = if expired {
        "Undelivered Mail Returned to Sender (delivery time expired)"
    } else {
        "Undelivered Mail Returned to Sender"
    };
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push_str("\r\n");
    };
    line(&format!("From: {}", field(r.from)));
    line(&format!("To: <{}>", field(r.to)));
    line(&format!("Subject: {subject}"));
    line(&format!("Date: {}", rfc2822(r.now)));
    line(&format!(
        "Message-ID: <postern-dsn.{}.{}@{}>",
        r.queue_id,
        r.now.as_millisecond(),
        field(r.reporting_mta)
    ));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Description: Notification");
    line("");
    line(&format!(
        "This is the mail system at {} (Postern).",
        field(r.reporting_mta)
    ));
    line("");
    if expired {
        line("Your message could not be delivered in time to the recipients below;");
        line("Postern has stopped trying.");
    } else {
        line("Your message could not be delivered to the recipients below.");
    }
    line("");
    for f in r.failed {
        line(&format!("<{}>: {}", field(&f.rcpt), field(&f.diagnostic)));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("Content-Description: Delivery report");
    line("");
    line(&format!("Reporting-MTA: dns; {}", field(r.reporting_mta)));
    line(&format!("X-Postern-Queue-ID: {}", r.queue_id));
    line(&format!("Arrival-Date: {}", rfc2822(r.arrival)));
    for f in r.failed {
        line("");
        line(&format!("Final-Recipient: rfc822; {}", field(&f.rcpt)));
        line("Action: failed");
        line(&format!("Status: {}", field(&f.status)));
        line(&format!("Diagnostic-Code: smtp; {}", field(&f.diagnostic)));
        line(&format!("Last-Attempt-Date: {}", rfc2822(r.now)));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("Content-Description: Undelivered message headers");
    line("");
    let mut bytes = out.into_bytes();
    let headers = header_block(r.original);
    bytes.extend_from_slice(headers);
    if !headers.ends_with(b"\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// The RFC 3463 status in a reply line (`550 5.1.1 …` → `5.1.1`), or the
/// class from the code.
pub fn status_of(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    let enhanced = words
        .next()
        .filter(|w| w.split('.').count() == 3 && w.split('.').all(|p| p.parse::<u16>().is_ok()));
    match enhanced {
        Some(e) => e.to_owned(),
        None => format!("{}.0.0", code.chars().next().unwrap_or('5')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_has_the_three_parts_and_the_original_headers() {
        let original = b"From: a@example.test\r\nSubject: hello\r\n\r\nbody that stays out\r\n";
        let failed = [Failed {
            rcpt: "bob@example.org".into(),
            status: status_of("550 5.1.1 No such user"),
            diagnostic: "550 5.1.1 No such user".into(),
        }];
        let t: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let dsn = build(&Report {
            reporting_mta: "gw.example.test",
            from: "\"Mail Delivery System\" <acct@example.test>",
            to: "a@example.test",
            queue_id: "000000002A",
            arrival: t,
            now: t,
            failed: &failed,
            original,
        });
        let text = String::from_utf8(dsn.clone()).unwrap();
        assert!(text.contains("multipart/report; report-type=delivery-status"));
        assert!(text.contains("Content-Type: message/delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; bob@example.org"));
        assert!(text.contains("Status: 5.1.1"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 No such user"));
        assert!(text.contains("Content-Type: text/rfc822-headers"));
        assert!(text.contains("Subject: hello\r\n"));
        assert!(!text.contains("body that stays out"));
        assert!(text.ends_with("--\r\n"));
        // Every line ends with CRLF.
        assert!(!dsn.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        // A mail parser sees a report.
        let parsed = mail_parser::MessageParser::default().parse(&dsn).unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
    }

    #[test]
    fn statuses_and_header_blocks() {
        assert_eq!(status_of("550 5.7.1 Relaying denied"), "5.7.1");
        assert_eq!(status_of("554 Transaction failed"), "5.0.0");
        assert_eq!(header_block(b"A: b\r\n\r\nbody"), b"A: b\r\n");
        assert_eq!(header_block(b"A: b\n\nbody"), b"A: b\n");
        assert_eq!(header_block(b"no body"), b"no body");
    }
}
