//! `pop3`: the POP3 codec (`pop3::codec`): line framing, commands, AUTH
//! answers, responses, multi-line bodies and the CAPA helpers.
//!
//! Input: `fuzz::Reads` layout (byte 0 = how many read sizes follow, then the
//! sizes), then 2 bytes, then what a client or a server sends. Byte `cap`
//! picks the line cap (`cap % 4`: 0 `MAX_COMMAND`, 1 `MAX_AUTH_LINE`, 2 a
//! tiny cap `cap / 4`, 3 512); byte `total` is `take_multiline`'s `max_total`
//! in units of 16 bytes (0: 64 KiB).
//!
//! Properties:
//! - the stream fed in those reads gives the same lines and over-long lines
//!   from `take_line` as fed whole, leaves the same bytes, and never holds
//!   more than the cap plus one byte (a CR) while `Incomplete`; each line
//!   reported is exactly the first line of what was buffered;
//! - on every line: `parse_command`, `parse_auth_answer` and `parse_response`
//!   never panic; the keyword's case does not change `parse_command`; what
//!   each parser returns encodes to one CRLF line that parses back to the same
//!   value (an AUTH answer to the very same bytes; a response whenever its
//!   encoding fits `MAX_RESPONSE_LINE`: lossy UTF-8 can make it longer);
//!   `Command::Pass` debug-prints `<redacted>`;
//! - any text (and its first word as a code) given to `encode_response` as a
//!   status or a continuation gives one line that parses, and encoding that
//!   again gives the same bytes: the sanitising is done once;
//! - `take_multiline` on the stream, and on what follows its first line (a
//!   body after its `+OK`), answers the same fed in reads as fed whole, and
//!   only holds `max_total` bytes while `Incomplete`; a body it returns ends
//!   at a line end within `max_total`, and `encode_multiline` of its lines
//!   decodes to the same lines (a CR inside a line becomes a space);
//! - over such lines `capability_has` finds each line's own keyword, and
//!   `sasl_mechanisms` are upper case, once each, without spaces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::pop3::codec::{
    capability_has, encode_auth_answer, encode_command, encode_multiline, encode_response,
    parse_auth_answer, parse_command, parse_response, sasl_mechanisms, take_line, take_multiline,
    Command, Line, MultiLine, Response, Status, MAX_AUTH_LINE, MAX_COMMAND, MAX_RESPONSE_LINE,
};
use postern_fuzz::{header, Reads};

fuzz_target!(|data: &[u8]| {
    let reads = Reads::parse(data);
    let ([cap, total], stream) = header::<2>(reads.payload);
    let reads = reads.with_payload(stream);
    let max = match cap % 4 {
        0 => MAX_COMMAND,
        1 => MAX_AUTH_LINE,
        2 => usize::from(cap / 4),
        _ => 512,
    };
    let max_total = match total {
        0 => 64 * 1024,
        n => usize::from(n) * 16,
    };

    let chunks = reads.chunks();
    let whole = frame(&[stream], max);
    assert_eq!(frame(&chunks, max), whole, "fed in reads, lines differ");
    for line in whole.0.iter().flatten() {
        check_command(line);
        check_auth_answer(line);
        check_response(line);
        check_encoder(line);
    }

    check_multiline(stream, &chunks, max, max_total);
    if let Line::Done { consumed, .. } = take_line(stream, max) {
        // A body after its status line, read in the same pieces.
        let body = &stream[consumed..];
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in &chunks {
            let end = at + c.len();
            if end > consumed {
                pieces.push(&stream[at.max(consumed)..end]);
            }
            at = end;
        }
        check_multiline(body, &pieces, max, max_total);
    }
});

/// Lines (`None` for one over the cap), bytes left, and whether the reader
/// is dropping the rest of an over-long line.
type Framed = (Vec<Option<Vec<u8>>>, Vec<u8>, bool);

/// Reads as an I/O layer does: take lines until `Incomplete`; drop an
/// over-long line up to its line end.
fn frame(reads: &[&[u8]], max: usize) -> Framed {
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    let mut dropping = false;
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            if dropping {
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        buf.drain(..=i);
                        dropping = false;
                    }
                    None => {
                        buf.clear();
                        break;
                    }
                }
            }
            let first_lf = buf.iter().position(|&b| b == b'\n');
            match take_line(&buf, max) {
                Line::Incomplete => {
                    assert_eq!(first_lf, None, "Incomplete although a line end is there");
                    assert!(buf.len() <= max + 1, "holds {} bytes, cap {max}", buf.len());
                    break;
                }
                Line::Done { len, consumed } => {
                    assert_eq!(first_lf, Some(consumed - 1), "not the first line");
                    let content = &buf[..consumed - 1];
                    let content = content.strip_suffix(b"\r").unwrap_or(content);
                    assert_eq!(len, content.len(), "content length");
                    assert!(len <= max, "line of {len} over cap {max}");
                    lines.push(Some(buf[..len].to_vec()));
                    buf.drain(..consumed);
                }
                Line::TooLong { consumed, complete } => {
                    match first_lf {
                        Some(i) => assert!(complete && consumed == i + 1),
                        None => assert!(!complete && consumed == buf.len()),
                    }
                    lines.push(None);
                    buf.drain(..consumed);
                    dropping = !complete;
                }
            }
        }
    }
    (lines, buf, dropping)
}

/// `wire` without its CRLF, which must end it and be its only line end.
fn one_line(wire: &[u8]) -> &[u8] {
    let line = wire.strip_suffix(b"\r\n").expect("encoding ends with CRLF");
    assert!(
        !line.contains(&b'\n') && !line.contains(&b'\r'),
        "encoded as more than one line: {:?}",
        String::from_utf8_lossy(wire)
    );
    line
}

fn check_command(line: &[u8]) {
    let parsed = parse_command(line);
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let mut upper = line.to_vec();
    upper[..end].make_ascii_uppercase();
    assert_eq!(
        parse_command(&upper),
        parsed,
        "keyword case changed the result"
    );
    let Ok(cmd) = parsed else {
        return;
    };
    if let Command::Pass(_) = &cmd {
        assert_eq!(format!("{cmd:?}"), "Pass(<redacted>)");
    }
    let wire = encode_command(&cmd);
    assert_eq!(
        parse_command(one_line(&wire)),
        Ok(cmd),
        "re-encoded as {:?}",
        String::from_utf8_lossy(&wire)
    );
}

fn check_auth_answer(line: &[u8]) {
    let Ok(answer) = parse_auth_answer(line) else {
        return;
    };
    let wire = encode_auth_answer(&answer);
    assert_eq!(
        one_line(&wire),
        line,
        "an AUTH answer re-encodes differently"
    );
    assert_eq!(parse_auth_answer(one_line(&wire)), Ok(answer));
}

fn check_response(line: &[u8]) {
    let Ok(r) = parse_response(line) else {
        return;
    };
    let wire = encode_response(&r);
    if one_line(&wire).len() > MAX_RESPONSE_LINE {
        // Lossy UTF-8 made it longer (each bad byte is 3 bytes of U+FFFD).
        return;
    }
    let again = parse_response(one_line(&wire));
    assert_eq!(
        again.as_ref(),
        Ok(&r),
        "re-encoded as {:?}",
        String::from_utf8_lossy(&wire)
    );
}

/// Any text through the encoder: one line that parses, and encoding what it
/// parses to gives the same bytes (the sanitising is done once).
fn check_encoder(line: &[u8]) {
    let text = String::from_utf8_lossy(line).into_owned();
    let code = text.split(' ').next().map(str::to_owned);
    let status = if line.len() % 2 == 0 {
        Status::Ok
    } else {
        Status::Err
    };
    for r in [
        Response::Status {
            status: status.clone(),
            code,
            text: text.clone(),
        },
        Response::Status {
            status,
            code: None,
            text: text.clone(),
        },
        Response::Continue(text),
    ] {
        let wire = encode_response(&r);
        if one_line(&wire).len() > MAX_RESPONSE_LINE {
            continue;
        }
        let again = parse_response(one_line(&wire)).unwrap_or_else(|e| {
            panic!("encoded {r:?} as {:?}: {e}", String::from_utf8_lossy(&wire))
        });
        assert_eq!(
            encode_response(&again),
            wire,
            "encoding is not a fixed point"
        );
    }
}

fn check_multiline(stream: &[u8], pieces: &[&[u8]], max_line: usize, max_total: usize) {
    let whole = take_multiline(stream, max_line, max_total);
    let mut got = MultiLine::Incomplete;
    let mut end = 0;
    for p in pieces {
        end += p.len();
        got = take_multiline(&stream[..end], max_line, max_total);
        if got != MultiLine::Incomplete {
            break;
        }
        assert!(
            end <= max_total,
            "Incomplete holding {end} > {max_total} bytes"
        );
    }
    assert_eq!(got, whole, "fed in reads, the body differs");

    let MultiLine::Done { lines, consumed } = whole else {
        return;
    };
    assert!(consumed <= max_total && stream[consumed - 1] == b'\n');
    let wire = encode_multiline(&lines);
    let want: Vec<String> = lines.iter().map(|l| l.replace('\r', " ")).collect();
    assert_eq!(
        take_multiline(&wire, usize::MAX, wire.len()),
        MultiLine::Done {
            lines: want,
            consumed: wire.len()
        },
        "re-encoded as {:?}",
        String::from_utf8_lossy(&wire)
    );

    for line in &lines {
        if let Some(keyword) = line.split_ascii_whitespace().next() {
            assert!(capability_has(&lines, keyword), "{keyword:?} not found");
        }
    }
    let mechs = sasl_mechanisms(&lines);
    for (i, m) in mechs.iter().enumerate() {
        assert!(!m.is_empty() && !m.contains(|c: char| c.is_ascii_whitespace()));
        assert_eq!(*m, m.to_ascii_uppercase());
        assert!(!mechs[..i].contains(m), "{m} twice");
    }
}
