//! `smtp_command`: the local SMTP server's command line framing and parser.
//!
//! Input: byte 0 picks a line cap, the rest is what a client sends.
//! Properties:
//! - `take_line(buf, cap)` never reports a line longer than `cap` (with its
//!   line end), and what it reports is exactly the first line of `buf`;
//! - `parse_command` never panics on any bytes; on a line (no LF, as
//!   `take_line` yields them) it ignores the case of the verb;
//! - a parsed command written the way `smtp::upstream` writes it
//!   (`MAIL FROM:<path> SIZE=… BODY=8BITMIME SMTPUTF8`, `RCPT TO:<path>`,
//!   `AUTH MECH resp`, …) parses back to the same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::codec::{parse_command, take_line, Body, Command, Line, MAX_COMMAND_LINE};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, buf)) = data.split_first() else {
        return;
    };
    let cap = match pick % 4 {
        0 => MAX_COMMAND_LINE,
        1 => 1000,
        2 => usize::from(pick / 4), // 0..=63: tiny caps, including 0
        _ => 12 * 1024,             // the session's AUTH-sized cap
    };
    check_take_line(buf, cap);

    // Whole input as one line. `parse_command` takes a line without its line
    // end (`take_line` cuts at the first LF), so only LF-free input is a line
    // whose properties are checked; any other input must merely not panic.
    if buf.contains(&b'\n') {
        let _ = parse_command(buf);
    } else {
        check_command(buf);
    }
    // And line by line, as a session reads a pipelined stream.
    let mut rest = buf;
    loop {
        match take_line(rest, MAX_COMMAND_LINE) {
            Line::Done { len, consumed } => {
                check_command(&rest[..len]);
                rest = &rest[consumed..];
            }
            Line::TooLong { consumed, .. } => rest = &rest[consumed..],
            Line::Incomplete => break,
        }
    }
});

fn check_take_line(buf: &[u8], cap: usize) {
    let first_lf = buf.iter().position(|&b| b == b'\n');
    match take_line(buf, cap) {
        Line::Incomplete => {
            assert!(buf.len() < cap, "Incomplete at or over the cap");
            assert_eq!(first_lf, None, "Incomplete although a line end is there");
        }
        Line::Done { len, consumed } => {
            assert!(consumed <= cap, "line of {consumed} bytes over cap {cap}");
            assert_eq!(first_lf, Some(consumed - 1), "not the first line");
            let content = &buf[..consumed - 1];
            let want = content.strip_suffix(b"\r").unwrap_or(content).len();
            assert_eq!(len, want, "content length");
        }
        Line::TooLong { consumed, complete } => {
            assert!(
                first_lf.is_none_or(|i| i >= cap),
                "TooLong although the line fits"
            );
            if complete {
                assert_eq!(
                    first_lf,
                    Some(consumed - 1),
                    "TooLong must drop up to the line end"
                );
            } else {
                assert_eq!(first_lf, None);
                assert_eq!(consumed, buf.len());
            }
            assert!(buf.len() >= cap);
        }
    }
}

fn check_command(line: &[u8]) {
    let parsed = parse_command(line);

    // The verb is case-insensitive: upper-casing it changes nothing.
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let mut upper = line.to_vec();
    upper[..verb_end].make_ascii_uppercase();
    assert_eq!(
        parse_command(&upper),
        parsed,
        "verb case changed the result"
    );

    let Ok(cmd) = parsed else {
        return;
    };
    let wire = encode(&cmd);
    assert!(
        !wire.contains('\n'),
        "a parsed command re-encodes with a line feed: {wire:?}"
    );
    assert_eq!(
        parse_command(wire.as_bytes()),
        Ok(cmd),
        "re-encoded as {wire:?}"
    );
}

/// The line `smtp::upstream` would send for `cmd` (it writes paths with
/// `Path`'s `Display`), or the canonical form of the other commands.
fn encode(cmd: &Command) -> String {
    match cmd {
        Command::Ehlo(d) => format!("EHLO {d}"),
        Command::Helo(d) => format!("HELO {d}"),
        Command::Mail { from, params } => {
            let mut line = format!("MAIL FROM:{from}");
            if let Some(size) = params.size {
                line.push_str(&format!(" SIZE={size}"));
            }
            match params.body {
                Some(Body::EightBitMime) => line.push_str(" BODY=8BITMIME"),
                Some(Body::SevenBit) => line.push_str(" BODY=7BIT"),
                None => {}
            }
            if params.smtputf8 {
                line.push_str(" SMTPUTF8");
            }
            line
        }
        Command::Rcpt { to } => format!("RCPT TO:{to}"),
        Command::Data => "DATA".into(),
        Command::Rset => "RSET".into(),
        Command::Noop => "NOOP".into(),
        Command::Quit => "QUIT".into(),
        Command::Vrfy => "VRFY".into(),
        Command::Expn => "EXPN".into(),
        Command::Help => "HELP".into(),
        Command::StartTls => "STARTTLS".into(),
        Command::Auth { mechanism, initial } => match initial {
            Some(r) => format!("AUTH {mechanism} {r}"),
            None => format!("AUTH {mechanism}"),
        },
    }
}
