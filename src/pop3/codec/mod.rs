//! Sans-I/O POP3: line framing, the commands a client sends (RFC 1939, CAPA
//! from RFC 2449, STLS from RFC 2595, AUTH from RFC 5034) and the lines it
//! sends during AUTH, the status and continuation lines a server sends
//! (response codes from RFC 2449 8 and RFC 3206), multi-line bodies
//! (dot-stuffing) and the capability list.
//!
//! Owns bytes-to-values and values-to-bytes only. Must not touch: sockets,
//! tokio, timers, config, accounts, logging, and base64: SASL data stays
//! base64 text here (in a [`Secret`]); `crate::sasl::decode_response` decodes
//! it and `crate::sasl::encode_response` makes it.
//!
//! # How the I/O layer drives it
//!
//! Read into a buffer and call [`take_line`] on it until `Incomplete`. Frame
//! client lines with [`MAX_AUTH_LINE`]: [`parse_command`] itself refuses any
//! command but AUTH over [`MAX_COMMAND`] (an AUTH line may carry a bearer
//! token as its initial response). On `TooLong { complete: false }` drop the
//! buffer and keep dropping until a line end has gone by, then answer
//! `-ERR`. Server lines are framed with [`MAX_RESPONSE_LINE`]; after a `+OK`
//! that starts a multi-line body (CAPA, LIST, UIDL) call [`take_multiline`]
//! on the bytes after the status line.
//!
//! After the STLS `+OK` any bytes left in the buffer were sent in plaintext
//! before the handshake: drop them (RFC 2595 4, command injection).
//!
//! # Decisions
//!
//! - Line ends: CRLF, and a bare LF too; a lone CR is content, which both
//!   parsers refuse (`BadBytes`), so a CR never reaches a server that might
//!   take it for a line end.
//! - Separators are single SP (RFC 1939 3); `USER` and `APOP` arguments and an
//!   AUTH initial response are trimmed of spaces, `PASS` keeps the whole rest
//!   of the line, and `Other` keeps its arguments byte for byte.
//! - Commands that take no argument (CAPA, STLS, QUIT, NOOP, RSET) ignore any.
//! - An AUTH initial response of `=` (RFC 5034 4: the empty response) is the
//!   empty string; `encode_command` writes it back as `=`.
//! - Response codes: a leading `[level/level]` whose levels are letters,
//!   digits and `-` (the RFC 3206 and RFC 2449 codes all are); they are
//!   upper-cased, since RFC 3206 4 says case is not significant. Any other
//!   bracketed text is plain text.
//! - Status text is decoded as lossy UTF-8 (it is for people; one odd byte
//!   should not fail a login); a NUL, CR or LF in a response line is
//!   `BadBytes`. Command lines must be UTF-8 (user names and passwords become
//!   `String` and [`Secret`]).
//! - Caps count a line without its line end (as [`take_line`] does).
//! - Encoders write one line per value whatever it holds: CR, LF and NUL in
//!   text become spaces (in multi-line bodies only CR and LF do). A response
//!   code that is not a valid code is left out; a text without a code that
//!   would read as one gets `(` for its `[`.
//! - Errors never carry input, so their `Display` is a safe `-ERR` text.

use std::borrow::Cow;

use crate::secret::Secret;

#[cfg(test)]
mod tests;

/// RFC 2449 4: a command line is at most 255 octets with its CRLF; Postern accepts up to this many.
pub const MAX_COMMAND: usize = 512;
/// A client's AUTH continuation line (base64; PLAIN fits easily).
pub const MAX_AUTH_LINE: usize = 8192;
/// A server response line: RFC 1939 says 512 octets with CRLF; servers exceed it, so accept up to this.
pub const MAX_RESPONSE_LINE: usize = 8192;

// ---------------------------------------------------------------------------
// Line framing
// ---------------------------------------------------------------------------

/// Result of looking for one line at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// No line end yet, and what there is of the line is within the cap.
    Incomplete,
    /// A line: `len` bytes of content (without CR LF), `consumed` bytes
    /// including the line end (CRLF or a bare LF).
    Done { len: usize, consumed: usize },
    /// The line's content is longer than the cap. `consumed` is how much may
    /// be dropped: up to and including the line end if it was seen
    /// (`complete`), otherwise the whole buffer, and the caller keeps
    /// dropping until a line end.
    TooLong { consumed: usize, complete: bool },
}

/// The first line in `buf` (CRLF or bare LF ends it), capped at `max` bytes without the line end.
///
/// The contract of `smtp::codec::take_line`, except that `max` does not count
/// the line end (that one's cap includes it), so it is not reused. A CR at the
/// very end of `buf` may be the first half of a CRLF and does not count
/// against the cap until the next byte shows what it is.
pub fn take_line(buf: &[u8], max: usize) -> Line {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let len = if i > 0 && buf[i - 1] == b'\r' {
                i - 1
            } else {
                i
            };
            if len <= max {
                Line::Done {
                    len,
                    consumed: i + 1,
                }
            } else {
                Line::TooLong {
                    consumed: i + 1,
                    complete: true,
                }
            }
        }
        None => {
            let pending = buf.len() - usize::from(buf.last() == Some(&b'\r'));
            if pending <= max {
                Line::Incomplete
            } else {
                Line::TooLong {
                    consumed: buf.len(),
                    complete: false,
                }
            }
        }
    }
}

/// `line` as text, if it has no NUL, CR or LF and is UTF-8.
fn clean_text(line: &[u8]) -> Option<&str> {
    if line.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')) {
        return None;
    }
    std::str::from_utf8(line).ok()
}

/// Appends `s` with each CR, LF and NUL replaced by a space.
fn push_one_line(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().map(|b| {
        if matches!(b, 0 | b'\r' | b'\n') {
            b' '
        } else {
            b
        }
    }));
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// A client command. `Debug` never shows a password or SASL data: they are
/// [`Secret`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    Stls,
    Quit,
    Noop,
    Rset,
    /// `USER name`, the rest of the line trimmed of spaces.
    User(String),
    /// `PASS string`: the whole rest of the line (passwords may contain spaces).
    Pass(Secret),
    /// `AUTH [mechanism [initial-response]]`; the mechanism upper-cased, the
    /// initial response as base64 text (`""` for `=`). `AUTH` alone asks for
    /// the mechanism list: `mechanism` is empty.
    Auth {
        mechanism: String,
        initial: Option<Secret>,
    },
    /// `APOP name digest`.
    Apop {
        name: String,
        digest: String,
    },
    /// Any other command (STAT, LIST, RETR, TOP, UIDL, DELE, XTND…): verb upper-cased, args as given.
    Other {
        verb: String,
        args: String,
    },
}

/// Why a client line was refused. The texts hold no input: each is a safe
/// `-ERR` reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No keyword: an empty line, or one that starts with a space.
    #[error("empty command")]
    Empty,
    /// A NUL, CR or LF in the line, or bytes that are not UTF-8.
    #[error("command contains a NUL, CR or invalid UTF-8 byte")]
    BadBytes,
    /// USER, PASS or APOP without the argument it needs.
    #[error("{0} needs an argument")]
    MissingArgument(&'static str),
    /// Over [`MAX_COMMAND`] bytes ([`MAX_AUTH_LINE`] for AUTH and AUTH answers).
    #[error("command line too long")]
    TooLong,
}

/// Parses one command line (`line` without its line end).
///
/// ```text
/// ; RFC 2449 3
/// command      =  keyword *(SP param) CRLF    ;255 octets maximum
/// keyword      =  3*4VCHAR
/// param        =  1*VCHAR
/// ; RFC 1939 7: USER name, PASS string, APOP name digest
/// ; RFC 5034 4
/// auth-command =  "AUTH" SP sasl-mech [SP initial-response] CRLF
/// initial-response = base64 / "="
/// ```
/// Keywords are case-insensitive. Lenient where clients are: keywords of any
/// length, and `AUTH` alone (the mechanism listing some clients ask for).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    if line.len() > MAX_AUTH_LINE {
        return Err(CommandError::TooLong);
    }
    let line = clean_text(line).ok_or(CommandError::BadBytes)?;
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    if verb.is_empty() {
        return Err(CommandError::Empty);
    }
    let verb = verb.to_ascii_uppercase();
    if verb != "AUTH" && line.len() > MAX_COMMAND {
        return Err(CommandError::TooLong);
    }
    Ok(match verb.as_str() {
        "CAPA" => Command::Capa,
        "STLS" => Command::Stls,
        "QUIT" => Command::Quit,
        "NOOP" => Command::Noop,
        "RSET" => Command::Rset,
        "USER" => {
            let name = rest.trim_matches(' ');
            if name.is_empty() {
                return Err(CommandError::MissingArgument("USER"));
            }
            Command::User(name.to_owned())
        }
        "PASS" => {
            // RFC 1939 7: "Since the PASS command has exactly one argument, a
            // POP3 server may treat spaces in the argument as part of the
            // password".
            if rest.is_empty() {
                return Err(CommandError::MissingArgument("PASS"));
            }
            Command::Pass(Secret::new(rest))
        }
        "AUTH" => {
            let rest = rest.trim_start_matches(' ');
            let (mechanism, initial) = rest.split_once(' ').unwrap_or((rest, ""));
            let initial = match initial.trim_matches(' ') {
                "" => None,
                "=" => Some(Secret::new("")),
                data => Some(Secret::new(data)),
            };
            Command::Auth {
                mechanism: mechanism.to_ascii_uppercase(),
                initial,
            }
        }
        "APOP" => {
            // The digest is the last word (32 hex digits); the name is the rest.
            let (name, digest) = rest
                .trim_matches(' ')
                .rsplit_once(' ')
                .ok_or(CommandError::MissingArgument("APOP"))?;
            let name = name.trim_end_matches(' ');
            if name.is_empty() {
                return Err(CommandError::MissingArgument("APOP"));
            }
            Command::Apop {
                name: name.to_owned(),
                digest: digest.to_owned(),
            }
        }
        _ => Command::Other {
            verb,
            args: rest.to_owned(),
        },
    })
}

/// The wire form of `cmd`, with CRLF: the inverse of [`parse_command`] for
/// every value it returns. Any value gives one line (CR, LF and NUL become
/// spaces); `Auth` with an empty mechanism is `AUTH` (its initial response
/// has nowhere to go).
pub fn encode_command(cmd: &Command) -> Vec<u8> {
    fn word(out: &mut Vec<u8>, s: &str) {
        out.push(b' ');
        push_one_line(out, s);
    }
    let mut out = Vec::with_capacity(64);
    match cmd {
        Command::Capa => out.extend_from_slice(b"CAPA"),
        Command::Stls => out.extend_from_slice(b"STLS"),
        Command::Quit => out.extend_from_slice(b"QUIT"),
        Command::Noop => out.extend_from_slice(b"NOOP"),
        Command::Rset => out.extend_from_slice(b"RSET"),
        Command::User(name) => {
            out.extend_from_slice(b"USER");
            word(&mut out, name);
        }
        Command::Pass(password) => {
            out.extend_from_slice(b"PASS");
            word(&mut out, password.expose());
        }
        Command::Auth { mechanism, initial } => {
            out.extend_from_slice(b"AUTH");
            if !mechanism.is_empty() {
                word(&mut out, mechanism);
                match initial {
                    Some(data) if data.is_empty() => word(&mut out, "="),
                    Some(data) => word(&mut out, data.expose()),
                    None => {}
                }
            }
        }
        Command::Apop { name, digest } => {
            out.extend_from_slice(b"APOP");
            word(&mut out, name);
            word(&mut out, digest);
        }
        Command::Other { verb, args } => {
            push_one_line(&mut out, verb);
            if !args.is_empty() {
                word(&mut out, args);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A client's answer during AUTH: base64 data, or `*` to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    /// The base64 text as sent, not decoded (`""` for an empty line).
    Data(Secret),
    /// `*`: the client gives up; RFC 5034 4: the server "MUST reject the AUTH
    /// command by sending an -ERR reply".
    Cancel,
}

/// Parses one client line during AUTH (without its line end).
///
/// ```text
/// ; RFC 5034 4
/// auth-command =  "AUTH" SP sasl-mech [SP initial-response]
///                 *(CRLF [base64]) [CRLF cancel-response] CRLF
/// cancel-response = "*"
/// ```
/// The base64 is not checked here: `crate::sasl::decode_response` does that
/// strictly and says what is wrong.
pub fn parse_auth_answer(line: &[u8]) -> Result<AuthAnswer, CommandError> {
    if line.len() > MAX_AUTH_LINE {
        return Err(CommandError::TooLong);
    }
    match clean_text(line).ok_or(CommandError::BadBytes)? {
        "*" => Ok(AuthAnswer::Cancel),
        data => Ok(AuthAnswer::Data(Secret::new(data))),
    }
}

/// The wire form of `a`, with CRLF (one line whatever the data holds).
pub fn encode_auth_answer(a: &AuthAnswer) -> Vec<u8> {
    let mut out = Vec::new();
    match a {
        AuthAnswer::Cancel => out.push(b'*'),
        AuthAnswer::Data(data) => push_one_line(&mut out, data.expose()),
    }
    out.extend_from_slice(b"\r\n");
    out
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    Err,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `+OK text` / `-ERR [CODE] text` (RFC 2449 extended response codes, RFC 3206: SYS/TEMP, SYS/PERM, AUTH, IN-USE, LOGIN-DELAY; codes may be hierarchical "SYS/TEMP").
    Status {
        status: Status,
        code: Option<String>,
        text: String,
    },
    /// `+ data` (a SASL continuation; `+` alone too, which Microsoft sends).
    Continue(String),
}

/// Why a server line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Starts with neither `+OK`, `-ERR` nor `+` followed by the end or a space.
    #[error("response is not +OK, -ERR or a continuation")]
    BadStatus,
    #[error("response contains a NUL, CR or LF byte")]
    BadBytes,
    /// Over [`MAX_RESPONSE_LINE`] bytes.
    #[error("response line too long")]
    TooLong,
}

/// Parses one server line (without its line end).
///
/// ```text
/// ; RFC 2449 3
/// single-line  =  status [SP text] CRLF       ;512 octets maximum
/// status       =  "+OK" / "-ERR"
/// text         =  *schar / resp-code *CHAR
/// resp-code    =  "[" resp-level *("/" resp-level) "]"
/// resp-level   =  1*rchar
/// ; RFC 5034 4
/// continue-req =  "+" SP [base64] CRLF
/// ```
/// Lenient where servers are: `+` alone (Microsoft), text over 512 octets,
/// text right after the code's `]`.
pub fn parse_response(line: &[u8]) -> Result<Response, ResponseError> {
    if line.len() > MAX_RESPONSE_LINE {
        return Err(ResponseError::TooLong);
    }
    if line.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(ResponseError::BadBytes);
    }
    let (status, rest) = if let Some(rest) = line.strip_prefix(b"+OK") {
        (Status::Ok, rest)
    } else if let Some(rest) = line.strip_prefix(b"-ERR") {
        (Status::Err, rest)
    } else if let Some(rest) = line.strip_prefix(b"+") {
        return match rest {
            [] => Ok(Response::Continue(String::new())),
            [b' ', data @ ..] => Ok(Response::Continue(lossy(data))),
            _ => Err(ResponseError::BadStatus),
        };
    } else {
        return Err(ResponseError::BadStatus);
    };
    let text = match rest {
        [] => String::new(),
        [b' ', text @ ..] => lossy(text),
        _ => return Err(ResponseError::BadStatus),
    };
    let (code, text) = match split_code(&text) {
        Some((code, after)) => (Some(code.to_ascii_uppercase()), after.to_owned()),
        None => (None, text),
    };
    Ok(Response::Status { status, code, text })
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A response code at the start of `text`, and the text after it (one space
/// dropped).
fn split_code(text: &str) -> Option<(&str, &str)> {
    let (code, after) = text.strip_prefix('[')?.split_once(']')?;
    if !is_code(code) {
        return None;
    }
    Some((code, after.strip_prefix(' ').unwrap_or(after)))
}

/// `resp-level *("/" resp-level)` with levels of letters, digits and `-`.
fn is_code(code: &str) -> bool {
    code.split('/').all(|level| {
        !level.is_empty()
            && level
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// The wire form of `r`, with CRLF. Text is sanitised: no CR/LF/NUL (each
/// becomes a space); a code is written upper-cased if it is a valid code
/// token (letters, digits, '/', '-'), and left out otherwise; a text without
/// a code that starts like one (`[AUTH] …`) gets `(` for its `[`, so it reads
/// back as text. A `Continue` is always `+ ` and its data.
pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match r {
        Response::Continue(data) => {
            out.extend_from_slice(b"+ ");
            push_one_line(&mut out, data);
        }
        Response::Status { status, code, text } => {
            out.extend_from_slice(match status {
                Status::Ok => b"+OK",
                Status::Err => b"-ERR",
            });
            let code = code.as_deref().filter(|c| is_code(c));
            if let Some(code) = code {
                out.extend_from_slice(b" [");
                out.extend_from_slice(code.to_ascii_uppercase().as_bytes());
                out.push(b']');
            }
            if !text.is_empty() {
                out.push(b' ');
                let text: Cow<'_, str> = if code.is_none() && split_code(text).is_some() {
                    format!("({}", &text[1..]).into()
                } else {
                    text.into()
                };
                push_one_line(&mut out, &text);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

// ---------------------------------------------------------------------------
// Multi-line bodies
// ---------------------------------------------------------------------------

/// A multi-line response body (after its +OK line): lines up to the terminating "." line, dot-unstuffed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiLine {
    /// No terminating line yet, and the buffer is within the caps.
    Incomplete,
    /// The lines, unstuffed, and the bytes of the body including the
    /// terminating `.` line; bytes after it are the next response.
    Done { lines: Vec<String>, consumed: usize },
    /// A line over `max_line`, or no terminator within `max_total` bytes.
    TooLong,
}

/// Decodes a multi-line body from `buf` with caps on each line and on the total (`max_total` bytes); lines must be UTF-8-lossy decoded text (CAPA lists).
///
/// ```text
/// ; RFC 2449 3
/// multi-line   =  single-line *dot-stuffed "." CRLF
/// dot-stuffed  =  *CHAR CRLF                  ;must be dot-stuffed
/// capa-resp    =  single-line *capability "." CRLF
/// ```
/// RFC 1939 3: "If any line of the multi-line response begins with the
/// termination octet, the line is "byte-stuffed" by pre-pending the
/// termination octet to that line". `max_total` counts every byte up to and
/// including the terminator's line end; while the answer is `Incomplete`, `buf`
/// holds at most `max_total` bytes. The buffer is scanned from its start on
/// every call, which suits the short bodies this is for (CAPA, LIST, UIDL),
/// not messages.
pub fn take_multiline(buf: &[u8], max_line: usize, max_total: usize) -> MultiLine {
    let mut pos = 0;
    let mut lines = Vec::new();
    loop {
        match take_line(&buf[pos..], max_line) {
            Line::Incomplete if buf.len() <= max_total => return MultiLine::Incomplete,
            Line::Incomplete | Line::TooLong { .. } => return MultiLine::TooLong,
            Line::Done { len, consumed } => {
                let line = &buf[pos..pos + len];
                pos += consumed;
                if pos > max_total {
                    return MultiLine::TooLong;
                }
                if line == b"." {
                    return MultiLine::Done {
                        lines,
                        consumed: pos,
                    };
                }
                lines.push(lossy(line.strip_prefix(b".").unwrap_or(line)));
            }
        }
    }
}

/// Dot-stuffed, CRLF-ended lines and the final ".\r\n". CR and LF in a line
/// become spaces, so a line can never end the body early.
pub fn encode_multiline(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 3).sum::<usize>() + 3);
    for line in lines {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend(
            line.bytes()
                .map(|b| if matches!(b, b'\r' | b'\n') { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

// ---------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------

/// The capability keyword of a CAPA line (`capa-tag = 1*cchar`, RFC 2449 3).
fn capa_tag(line: &str) -> Option<&str> {
    line.split_ascii_whitespace().next()
}

/// Whether a CAPA line has this keyword (case-insensitive), e.g. `"STLS"`,
/// `"SASL"`, `"RESP-CODES"`.
///
/// ```text
/// ; RFC 2449 3
/// capability   =  capa-tag *(SP param) CRLF   ;512 octets maximum
/// ```
pub fn capability_has(caps: &[String], keyword: &str) -> bool {
    caps.iter()
        .any(|line| capa_tag(line).is_some_and(|tag| tag.eq_ignore_ascii_case(keyword)))
}

/// The mechanisms of the `SASL` line (RFC 2449 6.3 with RFC 5034 6:
/// `SASL PLAIN XOAUTH2`), upper-cased, in order, each once; from every SASL
/// line if a server sends more than one.
pub fn sasl_mechanisms(caps: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in caps {
        let mut words = line.split_ascii_whitespace();
        if !words.next().is_some_and(|t| t.eq_ignore_ascii_case("SASL")) {
            continue;
        }
        for mech in words {
            let mech = mech.to_ascii_uppercase();
            if !out.contains(&mech) {
                out.push(mech);
            }
        }
    }
    out
}
