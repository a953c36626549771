//! Sans-I/O IMAP codec for the part of IMAP that Postern speaks itself: the
//! not-authenticated state towards the local client (server side) and the
//! upstream login towards the provider (client side).
//!
//! Owns: splitting a byte stream into command/response frames (one line plus
//! the literals it announces) under hard caps; parsing the pre-auth commands
//! (RFC 9051 / RFC 3501 not-authenticated state, ID from RFC 2971, SASL-IR from
//! RFC 4959); parsing the responses a client needs to log in (greeting,
//! CAPABILITY, tagged status, continuation); encoding the commands Postern sends
//! upstream and the responses it sends to the local client.
//!
//! Must not touch: sockets, tokio, timers, config, accounts, logging, base64
//! decoding (SASL payloads stay base64 text here; `crate::sasl` decodes them),
//! and anything after login: once logged in, `imap::proxy` splices bytes both
//! ways and no byte goes through this module again.
//!
//! # API
//!
//! Framing ([`Framer`]):
//! - `Framer::for_commands(Limits) -> Framer`: we are the server, reading a client.
//! - `Framer::for_responses(Limits) -> Framer`: we are the client, reading a server.
//! - `Framer::decode(&mut self, src: &mut BytesMut) -> Result<Decoded, FrameError>`,
//!   with `Decoded::{Incomplete, NeedContinuation { tag, size }, Frame(Frame)}`.
//!
//! Parsing (each takes exactly one frame, as the framer yields it):
//! - `parse_command(&[u8]) -> Result<Command, ParseError>`
//! - `parse_auth_response(&[u8]) -> Result<AuthResponse, ParseError>` (a client line during AUTHENTICATE)
//! - `parse_response(&[u8]) -> Result<Response, ParseError>`
//! - `parse_greeting(&[u8]) -> Result<StatusResponse, ParseError>`
//! - `has_capability(&[String], &str) -> bool`, `LiteralSupport::from_capabilities(&[String])`
//!
//! Encoding:
//! - `encode_command(&Command, LiteralSupport) -> Result<Vec<Vec<u8>>, EncodeError>`:
//!   send `parts[0]`; send each further part only after the server answered `+`.
//! - `encode_auth_response(&AuthResponse) -> Result<Vec<u8>, EncodeError>`
//! - `encode_response(&Response) -> Result<Vec<u8>, EncodeError>`
//!
//! # How the I/O layer drives it
//!
//! Read into a `BytesMut`, then call `decode` on that same buffer until it
//! returns `Incomplete`; read again. The buffer must only be appended to between
//! calls (the framer remembers how far it has scanned). On `NeedContinuation`
//! send `+ Ready for literal` (`Response::Continue`) and keep decoding. On a
//! non-fatal `FrameError` answer `TAG BAD …` (or `* BAD …` without a tag) and
//! keep decoding: the framer has already resynchronised. On a fatal one
//! ([`FrameError::is_fatal`]) answer and close the connection.
//!
//! Bytes left in the buffer after a frame belong to the next frame. Two
//! consequences for the I/O layer: after the STARTTLS frame any bytes still in
//! the buffer were sent in plaintext before the handshake and must be dropped
//! (command injection, CVE-2011-0411 style), and a new `Framer` used on the TLS
//! stream; after the LOGIN/AUTHENTICATE exchange, leftover bytes are the
//! client's pipelined commands and go to the upstream as they are.
//!
//! # Decisions
//!
//! - Line ends: CRLF, and a bare LF is accepted too (legacy clients); a lone CR is not a line end.
//! - Literal announcements are recognised at the end of any line (`{n}` or
//!   `{n+}` right before the line end), as RFC 7888 tells servers to. There is
//!   no `{n-}` syntax: LITERAL- is a capability that limits `{n+}` to 4096
//!   bytes ([`Limits::max_nonsync_literal`]). `{5-}` is plain text; the parser
//!   then refuses it.
//! - Sizes are read saturating into `u64`: `{99999999999999999999}` is a
//!   literal of `u64::MAX` bytes, refused by the cap; nothing is allocated from
//!   an announced size.
//! - Caps: a line (with its line end) may have at most `max_line` bytes, a literal
//!   at most `max_literal` (`max_nonsync_literal` when the client does not wait
//!   for us), and a whole frame at most `max_frame`. While `decode` returns
//!   `Incomplete` the buffer holds at most `max_frame` bytes.
//! - Over-long line: reported as soon as the cap is hit, with the tag if the tag
//!   was complete. The rest of the line is skipped without buffering. If that
//!   skipped line announced a literal the client sends without waiting (`{n+}`),
//!   a second, fatal `DiscardedLiteral` follows: the literal bytes would
//!   otherwise be read as commands. A skipped `{n}` ends the command (the client
//!   waits for a `+` that never comes, and has got our BAD). A client that
//!   never ends its line costs reads, not memory: the I/O layer's idle timeout
//!   and bad-command count end it.
//! - Too-large synchronising literal: reported when its line ends; the line is
//!   consumed, the I/O layer answers `TAG NO|BAD [TOOBIG] …` and does not send the
//!   continuation; the client abandons the command and framing goes on.
//! - Too-large non-synchronising literal (and any too-large literal in a
//!   response): fatal. The peer sends the bytes anyway; skipping gigabytes or
//!   guessing where they end is worse than closing (RFC 7888 leaves the server
//!   that choice). After a fatal error `decode` returns `FrameError::Stopped`.
//! - Strings in commands we encode: a quoted string when every byte is 7-bit and
//!   not CR/LF (with `\"` and `\\` escaped); otherwise a literal (`{n+}` when
//!   the server has LITERAL+, or LITERAL-/IMAP4rev2 and n ≤ 4096; else `{n}`
//!   and a wait for `+`). 8-bit text goes as a literal because only IMAP4rev2 or
//!   UTF8=ACCEPT servers take it quoted. NUL cannot be sent at all: `EncodeError::Nul`.
//! - Parsed strings must be UTF-8 (RFC 9051 allows UTF-8 in quoted strings);
//!   anything else is `ParseErrorKind::Utf8`.
//! - SASL data (AUTHENTICATE initial response, client continuation lines) is
//!   kept as its base64 text in a [`Secret`], since it carries passwords and
//!   tokens; an empty initial response (`=` on the wire) is the empty string.
//!   The mechanism name is upper-cased.
//! - `Frame`'s `Debug` prints only its length: a frame may hold a password.
//! - Response text we encode never contains CR, LF or NUL (each becomes a
//!   space), never ends like a literal announcement (`{5}` gets a `.` after it,
//!   or the client would wait for 5 bytes), never starts with `[` unless a code
//!   precedes it (it becomes `(`), and is never empty (`.`), because RFC 3501
//!   clients expect text.
//! - `ID ()` is accepted and encoded as the empty list; `ID NIL` is `None`.
//! - Errors never echo input: `ParseErrorKind` texts are fixed, so
//!   `TAG BAD {error}` is a safe reply. A parse error with `tag: None` (no
//!   valid tag) is answered `* BAD`.
//! - Responses are parsed leniently where real servers differ from the grammar:
//!   `+` without a space, `* OK` without text, repeated spaces in capability lists.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use crate::secret::Secret;

// ---------------------------------------------------------------------------
// Character classes (RFC 9051 section 9)
// ---------------------------------------------------------------------------

/// ```abnf
/// ATOM-CHAR       = <any CHAR except atom-specials>
/// atom-specials   = "(" / ")" / "{" / SP / CTL / list-wildcards /
///                   quoted-specials / resp-specials
/// list-wildcards  = "%" / "*"
/// quoted-specials = DQUOTE / "\"
/// resp-specials   = "]"
/// ```
fn is_atom_char(b: u8) -> bool {
    matches!(b, 0x21..=0x7e) && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// `ASTRING-CHAR = ATOM-CHAR / resp-specials`
fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// `tag = 1*<any ASTRING-CHAR except "+">`
fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

/// `base64-char = ALPHA / DIGIT / "+" / "/"`
fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// ```abnf
/// base64          = *(4base64-char) [base64-terminal]
/// base64-terminal = (2base64-char "==") / (3base64-char "=")
/// ```
fn is_base64(s: &[u8]) -> bool {
    if s.len() % 4 != 0 {
        return false;
    }
    let pad = s.iter().rev().take_while(|&&b| b == b'=').count();
    pad <= 2 && s[..s.len() - pad].iter().all(|&b| is_base64_char(b))
}

fn is_atom(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_atom_char)
}

// ---------------------------------------------------------------------------
// Tag
// ---------------------------------------------------------------------------

/// A command tag, checked against `tag = 1*<any ASTRING-CHAR except "+">`.
/// Kept byte for byte as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// `None` unless `s` is a valid tag.
    pub fn new(s: &str) -> Option<Tag> {
        is_tag(s.as_bytes()).then(|| Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_tag(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tag_char(b))
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tag at the start of a frame, if it is complete (followed by SP or a
/// line end) and valid. Used to address error replies.
fn leading_tag(frame: &[u8]) -> Option<Tag> {
    let end = frame.iter().position(|&b| !is_tag_char(b))?;
    if end == 0 || !matches!(frame[end], b' ' | b'\r' | b'\n') {
        return None;
    }
    // Tag characters are ASCII, so this is lossless.
    Some(Tag(String::from_utf8_lossy(&frame[..end]).into_owned()))
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// Caps for one [`Framer`]. Every byte the framer keeps is under these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest line, counting its line end.
    pub max_line: usize,
    /// Largest literal.
    pub max_literal: usize,
    /// Largest literal the peer sends without waiting for us (`{n+}` from a
    /// client). 4096 is LITERAL- (RFC 7888, and IMAP4rev2); set it to
    /// `max_literal` when advertising LITERAL+. Not used for responses.
    pub max_nonsync_literal: usize,
    /// Largest frame: all lines and literals of one command or response.
    pub max_frame: usize,
}

impl Limits {
    /// Before login: 8 KiB lines, 64 KiB literals, LITERAL- and one line plus
    /// one literal per frame.
    pub const PRE_AUTH: Limits = Limits {
        max_line: 8 * 1024,
        max_literal: 64 * 1024,
        max_nonsync_literal: 4096,
        max_frame: 72 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::PRE_AUTH
    }
}

/// One complete command or response: its first line, every literal it
/// announced and the lines after them, up to and including the final line end.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl fmt::Debug for Frame {
    // A LOGIN frame holds a password: show the size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame(<{} bytes>)", self.0.len())
    }
}

/// What [`Framer::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Need more bytes: read, append to the same buffer, decode again.
    Incomplete,
    /// The client announced a synchronising literal `{size}` and waits: send a
    /// continuation request (`+ Ready for literal`) now, then keep decoding.
    /// Only from [`Framer::for_commands`].
    NeedContinuation { tag: Option<Tag>, size: usize },
    /// A complete frame, removed from the buffer.
    Frame(Frame),
}

/// Refusals from the framer. Each maps to one reply: `TAG BAD …` when the tag
/// is known, `* BAD …` otherwise; after a fatal one, close the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A line reached `limit` bytes without a line end. Not fatal: the rest of
    /// the line is skipped.
    #[error("line too long (limit {limit} bytes)")]
    LineTooLong { tag: Option<Tag>, limit: usize },
    /// An announced literal is over `limit`: the literal cap, or what is left
    /// of the frame cap after keeping one byte for the line end that must
    /// follow (0 when nothing is left: then even `{0}` is refused). `size` is
    /// saturated at `u64::MAX`. Fatal unless the peer waits for a
    /// continuation, which the I/O layer then does not send.
    #[error("literal too large ({size} bytes, limit {limit})")]
    LiteralTooLarge {
        tag: Option<Tag>,
        size: u64,
        limit: usize,
        fatal: bool,
    },
    /// A line being skipped after `LineTooLong` announced a literal that the
    /// peer sends without waiting. Always fatal.
    #[error("over-long command went on with a literal")]
    DiscardedLiteral { tag: Option<Tag> },
    /// A fatal error was reported before; nothing more is framed.
    #[error("connection must be closed after an earlier framing error")]
    Stopped,
}

impl FrameError {
    /// The tag to answer, when it was complete and valid.
    pub fn tag(&self) -> Option<&Tag> {
        match self {
            FrameError::LineTooLong { tag, .. }
            | FrameError::LiteralTooLarge { tag, .. }
            | FrameError::DiscardedLiteral { tag } => tag.as_ref(),
            FrameError::Stopped => None,
        }
    }

    /// True when the connection cannot be resynchronised and must be closed.
    pub fn is_fatal(&self) -> bool {
        match self {
            FrameError::LineTooLong { .. } => false,
            FrameError::LiteralTooLarge { fatal, .. } => *fatal,
            FrameError::DiscardedLiteral { .. } | FrameError::Stopped => true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// We are the server: synchronising literals wait for our `+`.
    Commands,
    /// We are the client: every literal follows its announcement at once.
    Responses,
}

/// Where the end of the current line stands with respect to a literal
/// announcement: `literal = "{" number64 ["+"] "}" CRLF *CHAR8`.
/// Fed one byte at a time so that a skipped line needs no buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tail {
    Other,
    Open,
    Digits(u64),
    Plus(u64),
    /// `{n}` (sync = true) or `{n+}` (sync = false) just seen.
    Close(u64, bool),
    CloseCr(u64, bool),
}

impl Tail {
    fn step(self, b: u8) -> Tail {
        match (self, b) {
            (_, b'{') => Tail::Open,
            (Tail::Open, b'0'..=b'9') => Tail::Digits(u64::from(b - b'0')),
            (Tail::Digits(n), b'0'..=b'9') => {
                Tail::Digits(n.saturating_mul(10).saturating_add(u64::from(b - b'0')))
            }
            (Tail::Digits(n), b'+') => Tail::Plus(n),
            (Tail::Digits(n), b'}') => Tail::Close(n, true),
            (Tail::Plus(n), b'}') => Tail::Close(n, false),
            (Tail::Close(n, sync), b'\r') => Tail::CloseCr(n, sync),
            _ => Tail::Other,
        }
    }

    /// At a line feed: the literal this line announced, as (size, sync).
    fn announcement(self) -> Option<(u64, bool)> {
        match self {
            Tail::Close(n, sync) | Tail::CloseCr(n, sync) => Some((n, sync)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Scanning a line of the current frame.
    Line,
    /// Inside a literal of the current frame.
    Literal { remaining: u64 },
    /// Skipping the rest of an over-long line (nothing is kept).
    Discard { tag: Option<Tag> },
    /// A fatal error was reported.
    Stopped,
}

/// Splits an IMAP byte stream into frames before anything is parsed, so that
/// a line or literal over its cap is refused before it is buffered.
///
/// The current frame stays in the caller's buffer until it is complete;
/// the framer keeps only its position in it.
#[derive(Clone, Debug)]
pub struct Framer {
    reading: Reading,
    limits: Limits,
    state: State,
    tail: Tail,
    /// Bytes of the buffer already examined; all belong to the current frame.
    scanned: usize,
    /// Offset of the current line within the buffer.
    line_start: usize,
}

impl Framer {
    /// Frames commands from a client (we are the server).
    pub fn for_commands(limits: Limits) -> Framer {
        Framer::new(Reading::Commands, limits)
    }

    /// Frames responses from a server (we are the client).
    pub fn for_responses(limits: Limits) -> Framer {
        Framer::new(Reading::Responses, limits)
    }

    fn new(reading: Reading, mut limits: Limits) -> Framer {
        // A frame is at least its line end.
        limits.max_line = limits.max_line.max(1);
        limits.max_frame = limits.max_frame.max(1);
        Framer {
            reading,
            limits,
            state: State::Line,
            tail: Tail::Other,
            scanned: 0,
            line_start: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Does the peer wait for our `+` before sending this literal?
    fn peer_waits(&self, sync: bool) -> bool {
        sync && self.reading == Reading::Commands
    }

    /// Forget the current (refused) frame: drop its bytes from `src`.
    fn drop_frame(&mut self, src: &mut BytesMut) {
        src.advance(self.scanned);
        self.scanned = 0;
        self.line_start = 0;
        self.tail = Tail::Other;
    }

    /// Advances over `src`, which must be the same buffer as in earlier calls,
    /// only appended to. A complete frame is split off the front of `src`;
    /// skipped bytes are removed; bytes of an incomplete frame stay.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Decoded, FrameError> {
        loop {
            match &self.state {
                State::Stopped => return Err(FrameError::Stopped),
                State::Literal { remaining } => {
                    let remaining = *remaining;
                    let available = (src.len() - self.scanned) as u64;
                    let take = available.min(remaining);
                    // take <= remaining <= a usize cap, so this cannot truncate.
                    self.scanned += take as usize;
                    if take < remaining {
                        self.state = State::Literal {
                            remaining: remaining - take,
                        };
                        return Ok(Decoded::Incomplete);
                    }
                    self.state = State::Line;
                    self.line_start = self.scanned;
                    self.tail = Tail::Other;
                }
                State::Discard { tag } => {
                    let tag = tag.clone();
                    let mut i = 0;
                    while i < src.len() {
                        let b = src[i];
                        i += 1;
                        if b == b'\n' {
                            let announced = self.tail.announcement();
                            src.advance(i);
                            self.tail = Tail::Other;
                            if let Some((_, sync)) = announced {
                                if !self.peer_waits(sync) {
                                    self.state = State::Stopped;
                                    return Err(FrameError::DiscardedLiteral { tag });
                                }
                            }
                            self.state = State::Line;
                            break;
                        }
                        self.tail = self.tail.step(b);
                    }
                    if self.state != State::Line {
                        src.clear();
                        return Ok(Decoded::Incomplete);
                    }
                }
                State::Line => {
                    if let Some(result) = self.scan_line(src) {
                        return result;
                    }
                }
            }
        }
    }

    /// Scans the current line. `None`: a literal starts, go on in the loop.
    fn scan_line(&mut self, src: &mut BytesMut) -> Option<Result<Decoded, FrameError>> {
        while self.scanned < src.len() {
            let b = src[self.scanned];
            self.scanned += 1;
            if b == b'\n' {
                let announced = self.tail.announcement();
                self.tail = Tail::Other;
                let Some((size, sync)) = announced else {
                    let frame = src.split_to(self.scanned).freeze();
                    self.scanned = 0;
                    self.line_start = 0;
                    return Some(Ok(Decoded::Frame(Frame(frame))));
                };
                return self.literal_announced(src, size, sync);
            }
            self.tail = self.tail.step(b);
            let line_len = self.scanned - self.line_start;
            if line_len >= self.limits.max_line || self.scanned >= self.limits.max_frame {
                let limit = self
                    .limits
                    .max_line
                    .min(self.limits.max_frame.saturating_sub(self.line_start));
                let tag = leading_tag(&src[..self.scanned]);
                let tail = self.tail;
                self.drop_frame(src);
                // The skipped line's tail decides what happens at its end.
                self.tail = tail;
                self.state = State::Discard { tag: tag.clone() };
                return Some(Err(FrameError::LineTooLong { tag, limit }));
            }
        }
        Some(Ok(Decoded::Incomplete))
    }

    /// The line just ended with `{size}` or `{size+}`: check the caps and
    /// switch to the literal.
    fn literal_announced(
        &mut self,
        src: &mut BytesMut,
        size: u64,
        sync: bool,
    ) -> Option<Result<Decoded, FrameError>> {
        let waits = self.peer_waits(sync);
        // Leave room in the frame for at least the line end after the literal.
        let room = self
            .limits
            .max_frame
            .saturating_sub(self.scanned)
            .saturating_sub(1);
        let mut limit = self.limits.max_literal.min(room);
        if self.reading == Reading::Commands && !sync {
            limit = limit.min(self.limits.max_nonsync_literal);
        }
        let tag = leading_tag(&src[..self.scanned]);
        // Without room for a line end after it, even `{0}` is too large.
        let no_room = self.scanned >= self.limits.max_frame;
        if no_room || size > u64::try_from(limit).unwrap_or(u64::MAX) {
            self.drop_frame(src);
            if !waits {
                self.state = State::Stopped;
            }
            return Some(Err(FrameError::LiteralTooLarge {
                tag,
                size,
                limit,
                fatal: !waits,
            }));
        }
        self.state = State::Literal { remaining: size };
        if waits {
            // size <= limit, a usize.
            return Some(Ok(Decoded::NeedContinuation {
                tag,
                size: size as usize,
            }));
        }
        None
    }
}

// ---------------------------------------------------------------------------
// Parse errors and the cursor
// ---------------------------------------------------------------------------

/// What was wrong with a frame. The texts are fixed, so they may go into a
/// `BAD` reply or a log: they never echo the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("missing or invalid tag")]
    Tag,
    #[error("missing command name")]
    CommandName,
    #[error("expected a space")]
    Space,
    #[error("expected end of line")]
    LineEnd,
    #[error("data after end of line")]
    Trailing,
    #[error("invalid argument")]
    Argument,
    #[error("invalid quoted string")]
    Quoted,
    #[error("invalid literal")]
    Literal,
    #[error("string is not UTF-8")]
    Utf8,
    #[error("invalid base64")]
    Base64,
    #[error("invalid atom")]
    Atom,
    #[error("invalid ID parameter list")]
    IdList,
    #[error("invalid status")]
    Status,
    #[error("invalid response code")]
    Code,
    #[error("invalid capability")]
    Capability,
    #[error("not a greeting")]
    Greeting,
}

/// A frame that does not parse. With `tag: None` the reply is `* BAD`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    pub tag: Option<Tag>,
    pub kind: ParseErrorKind,
}

impl ParseError {
    fn new(tag: Option<&Tag>, kind: ParseErrorKind) -> ParseError {
        ParseError {
            tag: tag.cloned(),
            kind,
        }
    }
}

type Kind = ParseErrorKind;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8, kind: Kind) -> Result<(), Kind> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(kind)
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.buf[start..self.pos]
    }

    /// `CRLF`, or a bare LF.
    fn line_end(&mut self) -> bool {
        let rest = self.rest();
        if rest.starts_with(b"\r\n") {
            self.pos += 2;
            true
        } else if rest.starts_with(b"\n") {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn at_line_end(&self) -> bool {
        let rest = self.rest();
        rest.starts_with(b"\r\n") || rest.starts_with(b"\n")
    }

    /// The line end, and nothing after it.
    fn finish(&mut self) -> Result<(), Kind> {
        if !self.line_end() {
            return Err(Kind::LineEnd);
        }
        if self.pos != self.buf.len() {
            return Err(Kind::Trailing);
        }
        Ok(())
    }

    /// Everything up to the line end.
    fn text(&mut self) -> &'a [u8] {
        self.take_while(|b| b != b'\r' && b != b'\n')
    }

    /// `nil = "NIL"`, case-insensitive, as a whole atom.
    fn nil(&mut self) -> bool {
        let rest = self.rest();
        let is_nil = rest.len() >= 3
            && rest[..3].eq_ignore_ascii_case(b"NIL")
            && !rest.get(3).is_some_and(|&b| is_atom_char(b));
        if is_nil {
            self.pos += 3;
        }
        is_nil
    }

    /// `atom = 1*ATOM-CHAR` (may be empty here; callers decide).
    fn atom(&mut self) -> &'a str {
        let bytes = self.take_while(is_atom_char);
        // ATOM-CHARs are ASCII.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// `tag = 1*<any ASTRING-CHAR except "+">`, followed by SP or a line end.
    fn tag(&mut self) -> Option<Tag> {
        let tag = leading_tag(self.rest())?;
        self.pos += tag.0.len();
        Some(tag)
    }

    /// ```abnf
    /// astring = 1*ASTRING-CHAR / string
    /// string  = quoted / literal
    /// ```
    fn astring(&mut self) -> Result<Vec<u8>, Kind> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            _ => {
                let atom = self.take_while(is_astring_char);
                if atom.is_empty() {
                    return Err(Kind::Argument);
                }
                Ok(atom.to_vec())
            }
        }
    }

    /// `string = quoted / literal`
    fn string(&mut self, otherwise: Kind) -> Result<Vec<u8>, Kind> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            _ => Err(otherwise),
        }
    }

    /// ```abnf
    /// quoted          = DQUOTE *QUOTED-CHAR DQUOTE
    /// QUOTED-CHAR     = <any TEXT-CHAR except quoted-specials> /
    ///                   "\" quoted-specials / UTF8-2 / UTF8-3 / UTF8-4
    /// TEXT-CHAR       = <any CHAR except CR and LF>
    /// ```
    /// (RFC 9051; RFC 3501 has no UTF8-*. Callers check UTF-8.)
    fn quoted(&mut self) -> Result<Vec<u8>, Kind> {
        self.expect(b'"', Kind::Quoted)?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r' | b'\n' | 0) => return Err(Kind::Quoted),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return Err(Kind::Quoted),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// ```abnf
    /// literal  = "{" number64 ["+"] "}" CRLF *CHAR8
    ///            ; <number64> represents the number of CHAR8s.
    /// CHAR8    = %x01-ff
    /// ```
    fn literal(&mut self) -> Result<Vec<u8>, Kind> {
        self.expect(b'{', Kind::Literal)?;
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err(Kind::Literal);
        }
        let size = digits.iter().fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        self.eat(b'+');
        self.expect(b'}', Kind::Literal)?;
        if !self.line_end() {
            return Err(Kind::Literal);
        }
        let available = self.rest().len();
        if size > available as u64 {
            return Err(Kind::Literal);
        }
        let data = &self.rest()[..size as usize];
        if data.contains(&0) {
            return Err(Kind::Literal);
        }
        self.pos += data.len();
        Ok(data.to_vec())
    }

    /// `nstring = string / nil`
    fn nstring(&mut self, otherwise: Kind) -> Result<Option<Vec<u8>>, Kind> {
        if self.nil() {
            return Ok(None);
        }
        self.string(otherwise).map(Some)
    }

    /// RFC 2971:
    /// ```abnf
    /// id_params_list ::= "(" #(string SPACE nstring) ")" / nil
    /// ```
    /// (pairs separated by SP, as in the RFC's examples; `()` is accepted).
    fn id_params(&mut self) -> Result<IdParams, Kind> {
        if self.nil() {
            return Ok(None);
        }
        self.expect(b'(', Kind::IdList)?;
        let mut params = Vec::new();
        if self.eat(b')') {
            return Ok(Some(params));
        }
        loop {
            let key = utf8(self.string(Kind::IdList)?)?;
            self.expect(b' ', Kind::IdList)?;
            let value = self.nstring(Kind::IdList)?.map(utf8).transpose()?;
            params.push((key, value));
            if self.eat(b')') {
                return Ok(Some(params));
            }
            self.expect(b' ', Kind::IdList)?;
        }
    }

    /// ```abnf
    /// capability-data = "CAPABILITY" *(SP capability) SP "IMAP4rev1"
    ///                   *(SP capability)
    /// capability      = ("AUTH=" auth-type) / atom
    /// ```
    /// Lenient: the IMAP4rev1 entry is not required (IMAP4rev2 servers), and
    /// runs of spaces are taken as one. Stops before `]` or the line end.
    fn capabilities(&mut self) -> Result<Vec<String>, Kind> {
        let mut caps = Vec::new();
        while self.eat(b' ') {
            self.take_while(|b| b == b' ');
            if self.peek() == Some(b']') || self.at_line_end() {
                break;
            }
            let cap = self.atom();
            if cap.is_empty() {
                return Err(Kind::Capability);
            }
            caps.push(cap.to_owned());
        }
        if self.peek() == Some(b']') || self.at_line_end() {
            Ok(caps)
        } else {
            Err(Kind::Capability)
        }
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, Kind> {
    String::from_utf8(bytes).map_err(|_| Kind::Utf8)
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// RFC 2971 ID parameters: `None` for `NIL`, else (field, value) pairs.
pub type IdParams = Option<Vec<(String, Option<String>)>>;

/// A parsed client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub tag: Tag,
    pub kind: CommandKind,
}

/// The commands Postern answers before login; everything else is `Other`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Capability,
    Noop,
    Logout,
    StartTls,
    Id(IdParams),
    Login {
        user: String,
        password: Secret,
    },
    /// `mechanism` upper-cased. `initial`: the SASL-IR base64 text, `""` for
    /// an empty response (`=` on the wire), `None` without one.
    Authenticate {
        mechanism: String,
        initial: Option<Secret>,
    },
    /// Any other command, its name as sent. The I/O layer answers BAD.
    Other {
        name: String,
    },
}

/// Parses one command frame.
///
/// ```abnf
/// command          = tag SP (command-any / command-auth / command-nonauth /
///                    command-select) CRLF
/// command-any      = "CAPABILITY" / "LOGOUT" / "NOOP" / x-command / id
/// command-nonauth  = login / authenticate / "STARTTLS"
/// login            = "LOGIN" SP userid SP password
/// userid           = astring
/// password         = astring
/// authenticate     = "AUTHENTICATE" SP auth-type [SP initial-resp]
///                    *(CRLF base64)
/// auth-type        = atom
/// initial-resp     = (base64 / "=")          ; RFC 4959
/// id               = "ID" SP id_params_list  ; RFC 2971
/// ```
/// Command names are case-insensitive. An invalid tag gives
/// `ParseError { tag: None, .. }`.
pub fn parse_command(frame: &[u8]) -> Result<Command, ParseError> {
    let mut c = Cursor::new(frame);
    let tag = c.tag().ok_or(ParseError::new(None, Kind::Tag))?;
    let kind = command_kind(&mut c).map_err(|kind| ParseError::new(Some(&tag), kind))?;
    Ok(Command { tag, kind })
}

fn command_kind(c: &mut Cursor<'_>) -> Result<CommandKind, Kind> {
    c.expect(b' ', Kind::CommandName)?;
    let name = c.atom();
    if name.is_empty() {
        return Err(Kind::CommandName);
    }
    let kind = match name.to_ascii_uppercase().as_str() {
        "CAPABILITY" => CommandKind::Capability,
        "NOOP" => CommandKind::Noop,
        "LOGOUT" => CommandKind::Logout,
        "STARTTLS" => CommandKind::StartTls,
        "ID" => {
            c.expect(b' ', Kind::Space)?;
            CommandKind::Id(c.id_params()?)
        }
        "LOGIN" => {
            c.expect(b' ', Kind::Space)?;
            let user = utf8(c.astring()?)?;
            c.expect(b' ', Kind::Space)?;
            let password = Secret::new(utf8(c.astring()?)?);
            CommandKind::Login { user, password }
        }
        "AUTHENTICATE" => {
            c.expect(b' ', Kind::Space)?;
            let mechanism = c.atom();
            if mechanism.is_empty() {
                return Err(Kind::Atom);
            }
            let mechanism = mechanism.to_ascii_uppercase();
            let initial = if c.eat(b' ') {
                let text = c.text();
                if text == b"=" {
                    Some(Secret::new(""))
                } else if !text.is_empty() && is_base64(text) {
                    Some(Secret::new(String::from_utf8_lossy(text)))
                } else {
                    return Err(Kind::Base64);
                }
            } else {
                None
            };
            CommandKind::Authenticate { mechanism, initial }
        }
        _ => {
            return Ok(CommandKind::Other {
                name: name.to_owned(),
            })
        }
    };
    c.finish()?;
    Ok(kind)
}

/// A client line during AUTHENTICATE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthResponse {
    /// The base64 text as sent (`""` for an empty line).
    Data(Secret),
    /// `*`: the client cancels; answer `TAG BAD`.
    Cancel,
}

/// Parses a client's answer to a continuation request during AUTHENTICATE.
///
/// ```abnf
/// authenticate = "AUTHENTICATE" SP auth-type [SP initial-resp] *(CRLF base64)
/// ```
/// Each `CRLF base64` is one such line; `"*" CRLF` cancels (RFC 9051 6.2.2).
/// Errors have no tag: the I/O layer knows the AUTHENTICATE tag.
pub fn parse_auth_response(frame: &[u8]) -> Result<AuthResponse, ParseError> {
    let mut c = Cursor::new(frame);
    let text = c.text();
    c.finish().map_err(|kind| ParseError::new(None, kind))?;
    if text == b"*" {
        Ok(AuthResponse::Cancel)
    } else if is_base64(text) {
        Ok(AuthResponse::Data(Secret::new(String::from_utf8_lossy(
            text,
        ))))
    } else {
        Err(ParseError::new(None, Kind::Base64))
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// The status word of a status response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    PreAuth,
    Bye,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::PreAuth => "PREAUTH",
            Status::Bye => "BYE",
        }
    }
}

/// A response code, the bracketed part of `resp-text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    /// `[CAPABILITY …]`, case preserved.
    Capability(Vec<String>),
    /// Any other code: `atom [SP 1*<any TEXT-CHAR except "]">]`, as sent.
    Other { name: String, args: Option<String> },
}

/// `tag OK|NO|BAD …` or `* OK|NO|BAD|PREAUTH|BYE …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusResponse {
    /// `None` for untagged (`*`).
    pub tag: Option<Tag>,
    pub status: Status,
    pub code: Option<Code>,
    pub text: String,
}

impl StatusResponse {
    /// The capabilities in a `[CAPABILITY …]` code, if there is one.
    pub fn capabilities(&self) -> Option<&[String]> {
        match &self.code {
            Some(Code::Capability(caps)) => Some(caps),
            _ => None,
        }
    }
}

/// A server response, as far as a pre-login client cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Status(StatusResponse),
    /// `* CAPABILITY …`
    Capability(Vec<String>),
    /// `* ID …` (RFC 2971).
    Id(IdParams),
    /// `+ …`: the text after `+ `, base64 or human text.
    Continue(String),
    /// Any other untagged response: the whole frame. Encoded verbatim.
    Other(Vec<u8>),
}

/// Parses one response frame.
///
/// ```abnf
/// response         = *(continue-req / response-data) response-done
/// continue-req     = "+" SP (resp-text / base64) CRLF
/// response-data    = "*" SP (resp-cond-state / resp-cond-bye /
///                    mailbox-data / message-data / capability-data /
///                    enable-data) CRLF
/// response-tagged  = tag SP resp-cond-state CRLF
/// resp-cond-state  = ("OK" / "NO" / "BAD") SP resp-text
/// resp-cond-bye    = "BYE" SP resp-text
/// resp-cond-auth   = ("OK" / "PREAUTH") SP resp-text
/// resp-text        = ["[" resp-text-code "]" SP] [text]
/// ```
/// Untagged responses other than status, CAPABILITY and ID are `Other`
/// (so is an `* ID` that does not parse: it is informational).
pub fn parse_response(frame: &[u8]) -> Result<Response, ParseError> {
    let mut c = Cursor::new(frame);
    if c.eat(b'+') {
        c.eat(b' ');
        let text = String::from_utf8_lossy(c.text()).into_owned();
        c.finish().map_err(|kind| ParseError::new(None, kind))?;
        return Ok(Response::Continue(text));
    }
    if c.eat(b'*') {
        return untagged(&mut c, frame).map_err(|kind| ParseError::new(None, kind));
    }
    let tag = c.tag().ok_or(ParseError::new(None, Kind::Tag))?;
    tagged(&mut c, tag.clone()).map_err(|kind| ParseError::new(Some(&tag), kind))
}

fn untagged(c: &mut Cursor<'_>, frame: &[u8]) -> Result<Response, Kind> {
    c.expect(b' ', Kind::Space)?;
    let name = c.atom();
    let status = match name.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        "PREAUTH" => Status::PreAuth,
        "BYE" => Status::Bye,
        "CAPABILITY" => {
            let caps = c.capabilities()?;
            c.finish()?;
            return Ok(Response::Capability(caps));
        }
        "ID" => {
            let parsed = c
                .expect(b' ', Kind::Space)
                .and_then(|()| c.id_params())
                .and_then(|params| c.finish().map(|()| params));
            return Ok(match parsed {
                Ok(params) => Response::Id(params),
                Err(_) => Response::Other(frame.to_vec()),
            });
        }
        _ => return Ok(Response::Other(frame.to_vec())),
    };
    let (code, text) = resp_text(c)?;
    Ok(Response::Status(StatusResponse {
        tag: None,
        status,
        code,
        text,
    }))
}

fn tagged(c: &mut Cursor<'_>, tag: Tag) -> Result<Response, Kind> {
    c.expect(b' ', Kind::Space)?;
    let status = match c.atom().to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        _ => return Err(Kind::Status),
    };
    let (code, text) = resp_text(c)?;
    Ok(Response::Status(StatusResponse {
        tag: Some(tag),
        status,
        code,
        text,
    }))
}

/// ```abnf
/// resp-text        = ["[" resp-text-code "]" SP] [text]
/// resp-text-code   = … / capability-data / …
///                    / atom [SP 1*<any TEXT-CHAR except "]">]
/// text             = 1*(TEXT-CHAR / UTF8-2 / UTF8-3 / UTF8-4)
/// ```
/// Starts right after the status word; consumes the line end.
fn resp_text(c: &mut Cursor<'_>) -> Result<(Option<Code>, String), Kind> {
    if c.at_line_end() {
        c.finish()?;
        return Ok((None, String::new()));
    }
    c.expect(b' ', Kind::Space)?;
    let mut code = None;
    if c.eat(b'[') {
        let name = c.atom();
        if name.is_empty() {
            return Err(Kind::Code);
        }
        code = Some(if name.eq_ignore_ascii_case("CAPABILITY") {
            Code::Capability(c.capabilities().map_err(|_| Kind::Code)?)
        } else {
            let name = name.to_owned();
            let args = if c.eat(b' ') {
                // TEXT-CHAR is CHAR (%x01-7F) except CR and LF: no NUL, which
                // `encode_response` could not send back (found by fuzzing).
                let args = c.take_while(|b| !matches!(b, b']' | b'\r' | b'\n' | 0));
                if args.is_empty() {
                    return Err(Kind::Code);
                }
                Some(String::from_utf8_lossy(args).into_owned())
            } else {
                None
            };
            Code::Other { name, args }
        });
        c.expect(b']', Kind::Code)?;
        if !c.eat(b' ') && !c.at_line_end() {
            return Err(Kind::Code);
        }
    }
    let text = String::from_utf8_lossy(c.text()).into_owned();
    c.finish()?;
    Ok((code, text))
}

/// Parses the server greeting.
///
/// ```abnf
/// greeting         = "*" SP (resp-cond-auth / resp-cond-bye) CRLF
/// ```
/// Anything else, parseable or not, is `ParseErrorKind::Greeting` (no tag):
/// the upstream is not an IMAP server we can talk to.
pub fn parse_greeting(frame: &[u8]) -> Result<StatusResponse, ParseError> {
    match parse_response(frame) {
        Ok(Response::Status(
            status @ StatusResponse {
                tag: None,
                status: Status::Ok | Status::PreAuth | Status::Bye,
                ..
            },
        )) => Ok(status),
        _ => Err(ParseError::new(None, Kind::Greeting)),
    }
}

/// Whether `caps` holds `name`, compared case-insensitively (RFC 9051 7.2.2).
pub fn has_capability(caps: &[String], name: &str) -> bool {
    caps.iter().any(|cap| cap.eq_ignore_ascii_case(name))
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Values that cannot be put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// IMAP cannot carry NUL in any string (CHAR8 = %x01-ff).
    #[error("string contains NUL")]
    Nul,
    /// A command name, mechanism, capability or code name that is not an atom.
    #[error("not an atom")]
    Atom,
    /// SASL data that is not base64.
    #[error("not base64")]
    Base64,
    /// Response-code arguments that are empty or hold `]`, CR, LF or NUL.
    #[error("invalid response-code arguments")]
    CodeArgs,
    /// PREAUTH and BYE are untagged only.
    #[error("PREAUTH and BYE cannot be tagged")]
    TaggedStatus,
}

/// How the server takes literals in commands (RFC 7888).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralSupport {
    /// Only `{n}`: wait for `+` before each literal.
    SyncOnly,
    /// LITERAL+: `{n+}` of any size.
    Plus,
    /// LITERAL- (also implied by IMAP4rev2): `{n+}` up to 4096 bytes.
    Minus,
}

impl LiteralSupport {
    pub fn from_capabilities(caps: &[String]) -> LiteralSupport {
        if has_capability(caps, "LITERAL+") {
            LiteralSupport::Plus
        } else if has_capability(caps, "LITERAL-") || has_capability(caps, "IMAP4rev2") {
            LiteralSupport::Minus
        } else {
            LiteralSupport::SyncOnly
        }
    }

    fn non_sync(self, size: usize) -> bool {
        match self {
            LiteralSupport::SyncOnly => false,
            LiteralSupport::Plus => true,
            LiteralSupport::Minus => size <= 4096,
        }
    }
}

/// Output split where the sender must wait for a continuation request.
struct Out {
    parts: Vec<Vec<u8>>,
    cur: Vec<u8>,
}

/// How a literal is written: in a command (per the server's support), or in a
/// response (`{n}`, which the server sends without waiting).
#[derive(Clone, Copy)]
enum Literals {
    Command(LiteralSupport),
    Response,
}

impl Out {
    fn new() -> Out {
        Out {
            parts: Vec::new(),
            cur: Vec::new(),
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.cur.extend_from_slice(bytes);
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.cur.extend_from_slice(b"\r\n");
        self.parts.push(self.cur);
        self.parts
    }

    /// `string = quoted / literal`: quoted for 7-bit text without CR/LF,
    /// a literal for anything else.
    fn string(&mut self, s: &str, literals: Literals) -> Result<(), EncodeError> {
        let bytes = s.as_bytes();
        if bytes.contains(&0) {
            return Err(EncodeError::Nul);
        }
        if bytes.iter().all(|&b| b < 0x80 && b != b'\r' && b != b'\n') {
            self.cur.push(b'"');
            for &b in bytes {
                if b == b'"' || b == b'\\' {
                    self.cur.push(b'\\');
                }
                self.cur.push(b);
            }
            self.cur.push(b'"');
            return Ok(());
        }
        match literals {
            Literals::Response => {
                self.put(format!("{{{}}}\r\n", bytes.len()).as_bytes());
            }
            Literals::Command(support) if support.non_sync(bytes.len()) => {
                self.put(format!("{{{}+}}\r\n", bytes.len()).as_bytes());
            }
            Literals::Command(_) => {
                self.put(format!("{{{}}}\r\n", bytes.len()).as_bytes());
                self.parts.push(std::mem::take(&mut self.cur));
            }
        }
        self.put(bytes);
        Ok(())
    }

    fn atom(&mut self, s: &str) -> Result<(), EncodeError> {
        if !is_atom(s) {
            return Err(EncodeError::Atom);
        }
        self.put(s.as_bytes());
        Ok(())
    }

    fn id_params(&mut self, params: &IdParams, literals: Literals) -> Result<(), EncodeError> {
        let Some(params) = params else {
            self.put(b"NIL");
            return Ok(());
        };
        self.put(b"(");
        for (i, (key, value)) in params.iter().enumerate() {
            if i > 0 {
                self.put(b" ");
            }
            self.string(key, literals)?;
            self.put(b" ");
            match value {
                Some(value) => self.string(value, literals)?,
                None => self.put(b"NIL"),
            }
        }
        self.put(b")");
        Ok(())
    }
}

/// Encodes a command for an upstream server. Send `parts[0]` first and each
/// further part only after the server answered `+` (only with
/// `LiteralSupport::SyncOnly`, or Minus and a literal over 4096 bytes, is
/// there more than one part). The bytes hold the password: never log them.
pub fn encode_command(
    command: &Command,
    literals: LiteralSupport,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let literals = Literals::Command(literals);
    let mut out = Out::new();
    out.put(command.tag.as_str().as_bytes());
    out.put(b" ");
    match &command.kind {
        CommandKind::Capability => out.put(b"CAPABILITY"),
        CommandKind::Noop => out.put(b"NOOP"),
        CommandKind::Logout => out.put(b"LOGOUT"),
        CommandKind::StartTls => out.put(b"STARTTLS"),
        CommandKind::Id(params) => {
            out.put(b"ID ");
            out.id_params(params, literals)?;
        }
        CommandKind::Login { user, password } => {
            out.put(b"LOGIN ");
            out.string(user, literals)?;
            out.put(b" ");
            out.string(password.expose(), literals)?;
        }
        CommandKind::Authenticate { mechanism, initial } => {
            out.put(b"AUTHENTICATE ");
            out.atom(mechanism)?;
            if let Some(initial) = initial {
                out.put(b" ");
                let text = initial.expose();
                if text.is_empty() {
                    out.put(b"=");
                } else if is_base64(text.as_bytes()) {
                    out.put(text.as_bytes());
                } else {
                    return Err(EncodeError::Base64);
                }
            }
        }
        CommandKind::Other { name } => out.atom(name)?,
    }
    Ok(out.finish())
}

/// Encodes a client line during AUTHENTICATE (the answer to a `+`).
pub fn encode_auth_response(response: &AuthResponse) -> Result<Vec<u8>, EncodeError> {
    let mut line = match response {
        AuthResponse::Cancel => b"*".to_vec(),
        AuthResponse::Data(data) => {
            if !is_base64(data.expose().as_bytes()) {
                return Err(EncodeError::Base64);
            }
            data.expose().as_bytes().to_vec()
        }
    };
    line.extend_from_slice(b"\r\n");
    Ok(line)
}

/// Continuation text made safe for one line: CR, LF and NUL become spaces,
/// and a text that ends like a literal announcement (`{5}`) gets a `.` after
/// it, or the client would wait for literal bytes. May be empty.
fn clean_continue_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|ch| {
            if matches!(ch, '\r' | '\n' | '\0') {
                ' '
            } else {
                ch
            }
        })
        .collect();
    let tail = out.bytes().fold(Tail::Other, Tail::step);
    if tail.announcement().is_some() {
        out.push('.');
    }
    out
}

/// Status text made safe: as [`clean_continue_text`], and a leading `[`
/// (which a client would take for a code) becomes `(` when no code precedes
/// it, and empty text becomes `.`.
fn clean_status_text(text: &str, has_code: bool) -> String {
    let mut out = clean_continue_text(text);
    if !has_code && out.starts_with('[') {
        out.replace_range(..1, "(");
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

fn put_capabilities(out: &mut Out, caps: &[String]) -> Result<(), EncodeError> {
    out.put(b"CAPABILITY");
    for cap in caps {
        out.put(b" ");
        out.atom(cap)?;
    }
    Ok(())
}

/// Encodes a response for the local client. Text is sanitised (see
/// `clean_status_text`); structural parts that cannot be sent are errors.
/// `Response::Other` is written verbatim (it is a frame from upstream).
pub fn encode_response(response: &Response) -> Result<Vec<u8>, EncodeError> {
    let mut out = Out::new();
    match response {
        Response::Status(status) => {
            match &status.tag {
                Some(_) if matches!(status.status, Status::PreAuth | Status::Bye) => {
                    return Err(EncodeError::TaggedStatus)
                }
                Some(tag) => out.put(tag.as_str().as_bytes()),
                None => out.put(b"*"),
            }
            out.put(b" ");
            out.put(status.status.as_str().as_bytes());
            out.put(b" ");
            match &status.code {
                None => {}
                Some(Code::Capability(caps)) => {
                    out.put(b"[");
                    put_capabilities(&mut out, caps)?;
                    out.put(b"] ");
                }
                Some(Code::Other { name, args }) => {
                    out.put(b"[");
                    out.atom(name)?;
                    if let Some(args) = args {
                        let bad = |b: u8| matches!(b, b']' | b'\r' | b'\n' | 0);
                        if args.is_empty() || args.bytes().any(bad) {
                            return Err(EncodeError::CodeArgs);
                        }
                        out.put(b" ");
                        out.put(args.as_bytes());
                    }
                    out.put(b"] ");
                }
            }
            out.put(clean_status_text(&status.text, status.code.is_some()).as_bytes());
        }
        Response::Capability(caps) => {
            out.put(b"* ");
            put_capabilities(&mut out, caps)?;
        }
        Response::Id(params) => {
            out.put(b"* ID ");
            out.id_params(params, Literals::Response)?;
        }
        Response::Continue(text) => {
            out.put(b"+ ");
            out.put(clean_continue_text(text).as_bytes());
        }
        Response::Other(frame) => return Ok(frame.clone()),
    }
    Ok(out.finish().concat())
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // --- helpers -------------------------------------------------------------

    fn t(s: &str) -> Option<Tag> {
        Some(Tag::new(s).expect("valid tag"))
    }

    fn tag(s: &str) -> Tag {
        Tag::new(s).expect("valid tag")
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// What the framer yielded, with frame bytes visible (tests only).
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Ev {
        F(Vec<u8>),
        Cont(usize),
        E(FrameError),
    }

    fn f(b: &[u8]) -> Ev {
        Ev::F(b.to_vec())
    }

    /// Decodes until `Incomplete` or a fatal error; true if stopped.
    fn drain(framer: &mut Framer, src: &mut BytesMut, events: &mut Vec<Ev>) -> bool {
        loop {
            match framer.decode(src) {
                Ok(Decoded::Incomplete) => return false,
                Ok(Decoded::NeedContinuation { size, .. }) => events.push(Ev::Cont(size)),
                Ok(Decoded::Frame(frame)) => events.push(Ev::F(frame.as_bytes().to_vec())),
                Err(e) => {
                    let fatal = e.is_fatal();
                    events.push(Ev::E(e));
                    if fatal {
                        return true;
                    }
                }
            }
        }
    }

    /// (side, limits, input, events, bytes left in the buffer)
    type FrameCase = (Side, Limits, &'static [u8], Vec<Ev>, &'static [u8]);
    /// (input, parsed first frame, bytes left for the next frame)
    type CommandCase = (&'static [u8], Result<Command, ParseError>, &'static [u8]);
    type ResponseCase = (&'static [u8], Result<Response, ParseError>, &'static [u8]);
    type EncodeCase = (
        CommandKind,
        LiteralSupport,
        Result<Vec<Vec<u8>>, EncodeError>,
    );

    const SMALL: Limits = Limits {
        max_line: 16,
        max_literal: 8,
        max_nonsync_literal: 4,
        max_frame: 32,
    };

    #[derive(Clone, Copy, Debug)]
    enum Side {
        Cmd,
        Resp,
    }

    fn framer(side: Side, limits: Limits) -> Framer {
        match side {
            Side::Cmd => Framer::for_commands(limits),
            Side::Resp => Framer::for_responses(limits),
        }
    }

    fn ltl(tag: Option<Tag>, size: u64, limit: usize, fatal: bool) -> Ev {
        Ev::E(FrameError::LiteralTooLarge {
            tag,
            size,
            limit,
            fatal,
        })
    }

    fn long(tag: Option<Tag>, limit: usize) -> Ev {
        Ev::E(FrameError::LineTooLong { tag, limit })
    }

    // --- framer: known answers ------------------------------------------------

    #[test]
    fn framer_known_answers() {
        use Side::*;
        const D: Limits = Limits::PRE_AUTH;
        let frame_cap = Limits {
            max_line: 100,
            max_literal: 100,
            max_nonsync_literal: 100,
            max_frame: 24,
        };
        #[rustfmt::skip]
        let cases: Vec<FrameCase> = vec![
            // (side, limits, input, events, bytes left in the buffer)
            (Cmd, D, b"", vec![], b""),
            (Cmd, D, b"a NOOP\r\n", vec![f(b"a NOOP\r\n")], b""),
            (Cmd, D, b"a NOOP\r\nb NO", vec![f(b"a NOOP\r\n")], b"b NO"),
            (Cmd, D, b"a NOOP\nb NOOP\r\n", vec![f(b"a NOOP\n"), f(b"b NOOP\r\n")], b""),
            // a lone CR is not a line end
            (Cmd, D, b"a NOOP\rb NOOP\r\n", vec![f(b"a NOOP\rb NOOP\r\n")], b""),
            // synchronising literal: continuation, then the frame
            (Cmd, D, b"a LOGIN {3}\r\nabc x\r\n", vec![Ev::Cont(3), f(b"a LOGIN {3}\r\nabc x\r\n")], b""),
            (Cmd, D, b"a LOGIN {3}\r\nab", vec![Ev::Cont(3)], b"a LOGIN {3}\r\nab"),
            (Cmd, D, b"a LOGIN {3}\n", vec![Ev::Cont(3)], b"a LOGIN {3}\n"),
            (Cmd, D, b"a LOGIN {0}\r\n x\r\n", vec![Ev::Cont(0), f(b"a LOGIN {0}\r\n x\r\n")], b""),
            // literal bytes are never scanned for line ends or announcements
            (Cmd, D, b"a X {5}\r\n{1}\r\n\r\nb\r\n", vec![Ev::Cont(5), f(b"a X {5}\r\n{1}\r\n\r\n"), f(b"b\r\n")], b""),
            // non-synchronising literals need no continuation
            (Cmd, D, b"a LOGIN {3+}\r\nabc {1+}\r\nx\r\n", vec![f(b"a LOGIN {3+}\r\nabc {1+}\r\nx\r\n")], b""),
            (Cmd, D, b"a LOGIN {3+}\r\nab", vec![], b"a LOGIN {3+}\r\nab"),
            (Cmd, D, b"a LOGIN {0003+}\r\nabc\r\n", vec![f(b"a LOGIN {0003+}\r\nabc\r\n")], b""),
            // not announcements: {n-}, nothing after }, CR CR, text after }, no digits
            (Cmd, D, b"a LOGIN {3-}\r\nabc\r\n", vec![f(b"a LOGIN {3-}\r\n"), f(b"abc\r\n")], b""),
            (Cmd, D, b"a X {5}\r\r\nb\r\n", vec![f(b"a X {5}\r\r\n"), f(b"b\r\n")], b""),
            (Cmd, D, b"a X {5}x\r\n", vec![f(b"a X {5}x\r\n")], b""),
            (Cmd, D, b"a X {}\r\na X {+}\r\n", vec![f(b"a X {}\r\n"), f(b"a X {+}\r\n")], b""),
            (Cmd, D, b"a X {1{2}\r\nxy\r\n", vec![Ev::Cont(2), f(b"a X {1{2}\r\nxy\r\n")], b""),
            // refused synchronising literal: line consumed, framing goes on
            (Cmd, D, b"a APPEND x {65537}\r\nb NOOP\r\n", vec![ltl(t("a"), 65537, 65536, false), f(b"b NOOP\r\n")], b""),
            (Cmd, D, b"a X {4294967295}\r\n", vec![ltl(t("a"), 4294967295, 65536, false)], b""),
            (Cmd, D, b"a X {99999999999999999999}\r\n", vec![ltl(t("a"), u64::MAX, 65536, false)], b""),
            (Cmd, D, b"(bad X {70000}\r\n", vec![ltl(None, 70000, 65536, false)], b""),
            // LITERAL-: {n+} over 4096 is fatal, the bytes are on their way
            (Cmd, D, b"a LOGIN {4096+}\r\n", vec![], b"a LOGIN {4096+}\r\n"),
            (Cmd, D, b"a LOGIN {4097+}\r\nxxxx", vec![ltl(t("a"), 4097, 4096, true)], b"xxxx"),
            (Cmd, D, b"a X {18446744073709551616+}\r\n", vec![ltl(t("a"), u64::MAX, 4096, true)], b""),
            // line caps: 16 bytes with the line end is fine, 17 is not
            (Cmd, SMALL, b"a NOOP 1234567\r\n", vec![f(b"a NOOP 1234567\r\n")], b""),
            (Cmd, SMALL, b"a NOOP 12345678\r\nb NOOP\r\n", vec![long(t("a"), 16), f(b"b NOOP\r\n")], b""),
            (Cmd, SMALL, b"a NOOP 0123456789abcdef", vec![long(t("a"), 16)], b""),
            (Cmd, SMALL, b"0123456789abcdefghij\r\nb\r\n", vec![long(None, 16), f(b"b\r\n")], b""),
            (Cmd, SMALL, b"a+b NOOP 0123456789\r\n", vec![long(None, 16)], b""),
            // the skipped line ends in {n}: the client waits, we go on
            (Cmd, SMALL, b"a X 0123456789abcdef {3}\r\nb NOOP\r\n", vec![long(t("a"), 16), f(b"b NOOP\r\n")], b""),
            // the skipped line ends in {n+}: the bytes would be read as commands
            (Cmd, SMALL, b"a X 0123456789abcdef {3+}\r\nabc\r\n",
                vec![long(t("a"), 16), Ev::E(FrameError::DiscardedLiteral { tag: t("a") })], b"abc\r\n"),
            // literal caps
            (Cmd, SMALL, b"a {8}\r\n12345678\r\n", vec![Ev::Cont(8), f(b"a {8}\r\n12345678\r\n")], b""),
            (Cmd, SMALL, b"a {9}\r\nb\r\n", vec![ltl(t("a"), 9, 8, false), f(b"b\r\n")], b""),
            (Cmd, SMALL, b"a {4+}\r\n1234\r\n", vec![f(b"a {4+}\r\n1234\r\n")], b""),
            (Cmd, SMALL, b"a {5+}\r\n12345\r\n", vec![ltl(t("a"), 5, 4, true)], b"12345\r\n"),
            // the frame cap limits later literals and lines of the same frame
            // 24 bytes exactly; one more and the literal is refused (room is
            // kept for the line end after it)
            (Cmd, frame_cap, b"a {8}\r\n12345678 {2}\r\nbc\n",
                vec![Ev::Cont(8), Ev::Cont(2), f(b"a {8}\r\n12345678 {2}\r\nbc\n")], b""),
            (Cmd, frame_cap, b"a {8}\r\n12345678 {3}\r\nb\r\n",
                vec![Ev::Cont(8), ltl(t("a"), 3, 2, false), f(b"b\r\n")], b""),
            (Cmd, frame_cap, b"a {8}\r\n12345678 {2}\r\nbcd\n",
                vec![Ev::Cont(8), Ev::Cont(2), long(t("a"), 1)], b""),
            // no room left for a line end: even {0} is refused
            (Cmd, Limits { max_frame: 7, ..SMALL }, b"a {0}\n\n", vec![Ev::Cont(0), f(b"a {0}\n\n")], b""),
            (Cmd, Limits { max_frame: 7, ..SMALL }, b"ab {0}\n\n", vec![ltl(t("ab"), 0, 0, false), f(b"\n")], b""),
            (Cmd, frame_cap, b"a {8}\r\n12345678 12345678\r\n", vec![Ev::Cont(8), long(t("a"), 9)], b""),
            // responses: literals follow at once, no continuation
            (Resp, D, b"* 1 FETCH (BODY[] {3}\r\nabc)\r\n", vec![f(b"* 1 FETCH (BODY[] {3}\r\nabc)\r\n")], b""),
            (Resp, D, b"* 1 FETCH (BODY[] {3}\r\nab", vec![], b"* 1 FETCH (BODY[] {3}\r\nab"),
            (Resp, D, b"* ID (\"a\" {2+}\r\nxy)\r\n", vec![f(b"* ID (\"a\" {2+}\r\nxy)\r\n")], b""),
            (Resp, D, b"+ go\r\na1 OK done\r\n", vec![f(b"+ go\r\n"), f(b"a1 OK done\r\n")], b""),
            (Resp, SMALL, b"* X {9}\r\n123456789\r\n", vec![ltl(None, 9, 8, true)], b"123456789\r\n"),
            (Resp, SMALL, b"a1 OK {9}\r\n", vec![ltl(t("a1"), 9, 8, true)], b""),
            (Resp, SMALL, b"* OK 0123456789abcdef {3}\r\nabc",
                vec![long(None, 16), Ev::E(FrameError::DiscardedLiteral { tag: None })], b"abc"),
            (Resp, SMALL, b"* OK 0123456789abcdef\r\n* OK\r\n", vec![long(None, 16), f(b"* OK\r\n")], b""),
        ];
        for (i, (side, limits, input, want, left)) in cases.into_iter().enumerate() {
            let mut fr = framer(side, limits);
            let mut src = BytesMut::from(input);
            let mut got = Vec::new();
            drain(&mut fr, &mut src, &mut got);
            assert_eq!(got, want, "case {i}: {:?}", String::from_utf8_lossy(input));
            assert_eq!(
                &src[..],
                left,
                "case {i} leftover: {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn framer_stays_stopped_after_a_fatal_error() {
        let mut fr = Framer::for_commands(Limits::PRE_AUTH);
        let mut src = BytesMut::from(&b"a LOGIN {5000+}\r\n"[..]);
        let err = fr.decode(&mut src).unwrap_err();
        assert!(err.is_fatal());
        assert_eq!(err.tag(), t("a").as_ref());
        src.extend_from_slice(b"b NOOP\r\n");
        assert_eq!(fr.decode(&mut src), Err(FrameError::Stopped));
        assert_eq!(&src[..], b"b NOOP\r\n");
        assert!(FrameError::Stopped.is_fatal());
        assert_eq!(FrameError::Stopped.tag(), None);
    }

    #[test]
    fn framer_error_flags() {
        assert!(!FrameError::LineTooLong {
            tag: None,
            limit: 1
        }
        .is_fatal());
        assert!(FrameError::DiscardedLiteral { tag: None }.is_fatal());
        let e = FrameError::LiteralTooLarge {
            tag: t("x"),
            size: 2,
            limit: 1,
            fatal: false,
        };
        assert!(!e.is_fatal());
        assert_eq!(e.to_string(), "literal too large (2 bytes, limit 1)");
    }

    #[test]
    fn continuation_carries_the_tag() {
        let mut fr = Framer::for_commands(Limits::PRE_AUTH);
        let mut src = BytesMut::from(&b"A001 LOGIN {5}\r\n"[..]);
        assert_eq!(
            fr.decode(&mut src),
            Ok(Decoded::NeedContinuation {
                tag: t("A001"),
                size: 5
            })
        );
        assert_eq!(fr.decode(&mut src), Ok(Decoded::Incomplete));
    }

    #[test]
    fn zero_limits_are_raised() {
        let fr = Framer::for_commands(Limits {
            max_line: 0,
            max_literal: 0,
            max_nonsync_literal: 0,
            max_frame: 0,
        });
        assert_eq!(fr.limits().max_line, 1);
        assert_eq!(fr.limits().max_frame, 1);
    }

    // --- commands: known answers ----------------------------------------------

    /// Frames `input` as a client's stream and parses the first frame; returns
    /// the result and the bytes left for the next frame.
    fn first_command(input: &[u8]) -> (Result<Command, ParseError>, Vec<u8>) {
        let mut fr = Framer::for_commands(Limits::PRE_AUTH);
        let mut src = BytesMut::from(input);
        loop {
            match fr.decode(&mut src).expect("frames") {
                Decoded::Frame(frame) => return (parse_command(frame.as_bytes()), src.to_vec()),
                Decoded::NeedContinuation { .. } => {}
                Decoded::Incomplete => panic!("no complete frame in {input:?}"),
            }
        }
    }

    fn cmd(tag_s: &str, kind: CommandKind) -> Result<Command, ParseError> {
        Ok(Command {
            tag: tag(tag_s),
            kind,
        })
    }

    fn perr(tag: Option<Tag>, kind: ParseErrorKind) -> ParseError {
        ParseError { tag, kind }
    }

    fn login(user: &str, password: &str) -> CommandKind {
        CommandKind::Login {
            user: user.to_owned(),
            password: Secret::new(password),
        }
    }

    fn auth(mechanism: &str, initial: Option<&str>) -> CommandKind {
        CommandKind::Authenticate {
            mechanism: mechanism.to_owned(),
            initial: initial.map(Secret::new),
        }
    }

    fn id(pairs: &[(&str, Option<&str>)]) -> CommandKind {
        CommandKind::Id(Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect(),
        ))
    }

    fn command_cases() -> Vec<CommandCase> {
        use CommandKind as K;
        use ParseErrorKind as E;
        let a = || t("a");
        #[rustfmt::skip]
        let cases: Vec<CommandCase> = vec![
            (b"a CAPABILITY\r\n", cmd("a", K::Capability), b""),
            (b"A1 capability\r\nb NOOP\r\n", cmd("A1", K::Capability), b"b NOOP\r\n"),
            (b"a Noop\r\n", cmd("a", K::Noop), b""),
            (b"a NOOP\n", cmd("a", K::Noop), b""),
            (b"a LOGOUT\r\n", cmd("a", K::Logout), b""),
            (b"a StartTLS\r\nleft", cmd("a", K::StartTls), b"left"),
            (b"a]b.c-1 NOOP\r\n", cmd("a]b.c-1", K::Noop), b""),
            (b"a LOGIN alice secret\r\n", cmd("a", login("alice", "secret")), b""),
            (b"a login alice]x pw\r\n", cmd("a", login("alice]x", "pw")), b""),
            (b"a LOGIN \"al ice\" \"p\\\"w\\\\d\"\r\n", cmd("a", login("al ice", "p\"w\\d")), b""),
            (b"a LOGIN \"\" \"\"\r\n", cmd("a", login("", "")), b""),
            (b"a LOGIN {5}\r\nalice {6+}\r\nsecret\r\n", cmd("a", login("alice", "secret")), b""),
            (b"a LOGIN {0}\r\n {2}\r\n\r\n\r\n", cmd("a", login("", "\r\n")), b""),
            (b"a LOGIN \"\xc3\xbc\" {2}\r\n\xc3\xa9\r\n", cmd("a", login("\u{fc}", "\u{e9}")), b""),
            (b"a AUTHENTICATE PLAIN\r\n", cmd("a", auth("PLAIN", None)), b""),
            (b"a authenticate plain AGFsaWNlAHNlY3JldA==\r\n", cmd("a", auth("PLAIN", Some("AGFsaWNlAHNlY3JldA=="))), b""),
            (b"a AUTHENTICATE XOAUTH2 =\r\n", cmd("a", auth("XOAUTH2", Some(""))), b""),
            (b"a AUTHENTICATE PLAIN YWJj\r\n", cmd("a", auth("PLAIN", Some("YWJj"))), b""),
            (b"a ID NIL\r\n", cmd("a", K::Id(None)), b""),
            (b"a id nil\r\n", cmd("a", K::Id(None)), b""),
            (b"a ID ()\r\n", cmd("a", id(&[])), b""),
            (b"a ID (\"name\" \"sodr\" \"version\" NIL)\r\n", cmd("a", id(&[("name", Some("sodr")), ("version", None)])), b""),
            (b"a ID ({4}\r\nname {1+}\r\nx)\r\n", cmd("a", id(&[("name", Some("x"))])), b""),
            (b"a SELECT INBOX\r\n", cmd("a", K::Other { name: "SELECT".into() }), b""),
            (b"a x-Foo \"whatever\r\n", cmd("a", K::Other { name: "x-Foo".into() }), b""),
            // no usable tag: answer `* BAD`
            (b"\r\n", Err(perr(None, E::Tag)), b""),
            (b" NOOP\r\n", Err(perr(None, E::Tag)), b""),
            (b"a+ NOOP\r\n", Err(perr(None, E::Tag)), b""),
            (b"+ NOOP\r\n", Err(perr(None, E::Tag)), b""),
            (b"* NOOP\r\n", Err(perr(None, E::Tag)), b""),
            (b"a(b NOOP\r\n", Err(perr(None, E::Tag)), b""),
            (b"a\"b NOOP\r\n", Err(perr(None, E::Tag)), b""),
            (b"\xc3\xa9 NOOP\r\n", Err(perr(None, E::Tag)), b""),
            // tag known: answer `a BAD`
            (b"a\r\n", Err(perr(a(), E::CommandName)), b""),
            (b"a  NOOP\r\n", Err(perr(a(), E::CommandName)), b""),
            (b"a \"NOOP\"\r\n", Err(perr(a(), E::CommandName)), b""),
            (b"a NOOP x\r\n", Err(perr(a(), E::LineEnd)), b""),
            (b"a CAPABILITY \r\n", Err(perr(a(), E::LineEnd)), b""),
            (b"a LOGIN\r\n", Err(perr(a(), E::Space)), b""),
            (b"a LOGIN alice\r\n", Err(perr(a(), E::Space)), b""),
            (b"a LOGIN alice \r\n", Err(perr(a(), E::Argument)), b""),
            (b"a LOGIN (x) y\r\n", Err(perr(a(), E::Argument)), b""),
            (b"a LOGIN \xff y\r\n", Err(perr(a(), E::Argument)), b""),
            (b"a LOGIN x y z\r\n", Err(perr(a(), E::LineEnd)), b""),
            (b"a LOGIN \"open y\r\n", Err(perr(a(), E::Quoted)), b""),
            (b"a LOGIN \"bad\\x\" y\r\n", Err(perr(a(), E::Quoted)), b""),
            (b"a LOGIN \"a\0\" y\r\n", Err(perr(a(), E::Quoted)), b""),
            (b"a LOGIN {3-}\r\nabc y\r\n", Err(perr(a(), E::Literal)), b"abc y\r\n"),
            (b"a LOGIN {3} y\r\n", Err(perr(a(), E::Literal)), b""),
            (b"a LOGIN {}\r\n", Err(perr(a(), E::Literal)), b""),
            (b"a LOGIN {3}\r\na\0c y\r\n", Err(perr(a(), E::Literal)), b""),
            (b"a LOGIN {1}\r\n\xff y\r\n", Err(perr(a(), E::Utf8)), b""),
            (b"a LOGIN \"\xc3\" y\r\n", Err(perr(a(), E::Utf8)), b""),
            (b"a AUTHENTICATE\r\n", Err(perr(a(), E::Space)), b""),
            (b"a AUTHENTICATE \r\n", Err(perr(a(), E::Atom)), b""),
            (b"a AUTHENTICATE (PLAIN)\r\n", Err(perr(a(), E::Atom)), b""),
            (b"a AUTHENTICATE PLAIN \r\n", Err(perr(a(), E::Base64)), b""),
            (b"a AUTHENTICATE PLAIN abc\r\n", Err(perr(a(), E::Base64)), b""),
            (b"a AUTHENTICATE PLAIN ab=c\r\n", Err(perr(a(), E::Base64)), b""),
            (b"a AUTHENTICATE PLAIN a===\r\n", Err(perr(a(), E::Base64)), b""),
            (b"a AUTHENTICATE PLAIN ==\r\n", Err(perr(a(), E::Base64)), b""),
            (b"a AUTHENTICATE PLAIN YW Jj\r\n", Err(perr(a(), E::Base64)), b""),
            (b"a AUTHENTICATE PLAIN(\r\n", Err(perr(a(), E::LineEnd)), b""),
            (b"a ID\r\n", Err(perr(a(), E::Space)), b""),
            (b"a ID name\r\n", Err(perr(a(), E::IdList)), b""),
            (b"a ID NILS\r\n", Err(perr(a(), E::IdList)), b""),
            (b"a ID (name \"x\")\r\n", Err(perr(a(), E::IdList)), b""),
            (b"a ID (\"name\")\r\n", Err(perr(a(), E::IdList)), b""),
            (b"a ID (\"name\" x)\r\n", Err(perr(a(), E::IdList)), b""),
            (b"a ID (\"a\" \"b\"\r\n", Err(perr(a(), E::IdList)), b""),
            (b"a ID (\"a\" \"b\"  \"c\" NIL)\r\n", Err(perr(a(), E::IdList)), b""),
            (b"a ID (\"a\" \"b\")x\r\n", Err(perr(a(), E::LineEnd)), b""),
            (b"a ID (\"a\\q\" NIL)\r\n", Err(perr(a(), E::Quoted)), b""),
        ];
        cases
    }

    #[test]
    fn command_known_answers() {
        for (input, want, left) in command_cases() {
            let (got, rest) = first_command(input);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(
                rest,
                left,
                "leftover of {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Inputs the framer never yields (no line end, bytes after it): the parser
    /// still answers, without a panic.
    fn raw_command_cases() -> Vec<(&'static [u8], Result<Command, ParseError>)> {
        use ParseErrorKind as E;
        vec![
            (b"", Err(perr(None, E::Tag))),
            (b"a", Err(perr(None, E::Tag))),
            (b"a NOOP", Err(perr(t("a"), E::LineEnd))),
            (b"a NOOP\r", Err(perr(t("a"), E::LineEnd))),
            (b"a NOOP\r\nb NOOP\r\n", Err(perr(t("a"), E::Trailing))),
            (b"a LOGIN {10}\r\nabc\r\n", Err(perr(t("a"), E::Literal))),
            (
                b"a LOGIN {99999999999999999999}\r\n",
                Err(perr(t("a"), E::Literal)),
            ),
            (b"a LOGIN \"x", Err(perr(t("a"), E::Quoted))),
            (b"a LOGIN \"x\\", Err(perr(t("a"), E::Quoted))),
        ]
    }

    #[test]
    fn command_known_answers_without_framer() {
        for (input, want) in raw_command_cases() {
            assert_eq!(
                parse_command(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn auth_response_cases() -> Vec<(&'static [u8], Result<AuthResponse, ParseError>)> {
        use ParseErrorKind as E;
        vec![
            (
                b"AGFsaWNl\r\n",
                Ok(AuthResponse::Data(Secret::new("AGFsaWNl"))),
            ),
            (b"YQ==\n", Ok(AuthResponse::Data(Secret::new("YQ==")))),
            (b"\r\n", Ok(AuthResponse::Data(Secret::new("")))),
            (b"*\r\n", Ok(AuthResponse::Cancel)),
            (b"=\r\n", Err(perr(None, E::Base64))),
            (b"abc\r\n", Err(perr(None, E::Base64))),
            (b"* \r\n", Err(perr(None, E::Base64))),
            (b"YW Jj\r\n", Err(perr(None, E::Base64))),
            (b"YWJj", Err(perr(None, E::LineEnd))),
            (b"YWJj\r\nx", Err(perr(None, E::Trailing))),
        ]
    }

    #[test]
    fn auth_response_known_answers() {
        for (input, want) in auth_response_cases() {
            assert_eq!(
                parse_auth_response(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    // --- responses: known answers ---------------------------------------------

    fn first_response(input: &[u8]) -> (Result<Response, ParseError>, Vec<u8>) {
        let mut fr = Framer::for_responses(Limits::PRE_AUTH);
        let mut src = BytesMut::from(input);
        match fr.decode(&mut src).expect("frames") {
            Decoded::Frame(frame) => (parse_response(frame.as_bytes()), src.to_vec()),
            other => panic!("no frame in {input:?}: {other:?}"),
        }
    }

    fn status(tag: Option<Tag>, status: Status, code: Option<Code>, text: &str) -> Response {
        Response::Status(StatusResponse {
            tag,
            status,
            code,
            text: text.to_owned(),
        })
    }

    fn caps_code(v: &[&str]) -> Option<Code> {
        Some(Code::Capability(strings(v)))
    }

    fn other_code(name: &str, args: Option<&str>) -> Option<Code> {
        Some(Code::Other {
            name: name.to_owned(),
            args: args.map(str::to_owned),
        })
    }

    fn response_cases() -> Vec<ResponseCase> {
        use ParseErrorKind as E;
        use Status::{Bad, Bye, No, PreAuth};
        const OK: Status = Status::Ok;
        let a1 = || t("a1");
        #[rustfmt::skip]
        let cases: Vec<ResponseCase> = vec![
            (b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR] Gimap ready\r\n",
                Ok(status(None, OK, caps_code(&["IMAP4rev1", "AUTH=XOAUTH2", "SASL-IR"]), "Gimap ready")), b""),
            (b"* OK Dovecot ready.\r\na1 OK x\r\n", Ok(status(None, OK, None, "Dovecot ready.")), b"a1 OK x\r\n"),
            (b"* PREAUTH ready\r\n", Ok(status(None, PreAuth, None, "ready")), b""),
            (b"* BYE shutting down\r\n", Ok(status(None, Bye, None, "shutting down")), b""),
            (b"* NO [ALERT] quota\r\n", Ok(status(None, No, other_code("ALERT", None), "quota")), b""),
            (b"* bad x\r\n", Ok(status(None, Bad, None, "x")), b""),
            (b"* ok\r\n", Ok(status(None, OK, None, "")), b""),
            (b"* OK \r\n", Ok(status(None, OK, None, "")), b""),
            (b"* OK [capability IMAP4rev2] x\r\n", Ok(status(None, OK, caps_code(&["IMAP4rev2"]), "x")), b""),
            (b"* OK [CAPABILITY] x\r\n", Ok(status(None, OK, caps_code(&[]), "x")), b""),
            (b"* CAPABILITY IMAP4rev1 LITERAL+  ID\r\n", Ok(Response::Capability(strings(&["IMAP4rev1", "LITERAL+", "ID"]))), b""),
            (b"* CAPABILITY IMAP4rev1 \r\n", Ok(Response::Capability(strings(&["IMAP4rev1"]))), b""),
            (b"* CAPABILITY\r\n", Ok(Response::Capability(vec![])), b""),
            (b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n",
                Ok(status(a1(), OK, caps_code(&["IMAP4rev1", "IDLE"]), "Logged in")), b""),
            (b"a1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n",
                Ok(status(a1(), No, other_code("AUTHENTICATIONFAILED", None), "Invalid credentials (Failure)")), b""),
            (b"a1 BAD [BADCHARSET (UTF-8)] x\r\n", Ok(status(a1(), Bad, other_code("BADCHARSET", Some("(UTF-8)")), "x")), b""),
            (b"a1 OK [ALERT]\r\n", Ok(status(a1(), OK, other_code("ALERT", None), "")), b""),
            (b"a1 ok done \xff\r\n", Ok(status(a1(), OK, None, "done \u{fffd}")), b""),
            (b"+ \r\n", Ok(Response::Continue(String::new())), b""),
            (b"+\r\n", Ok(Response::Continue(String::new())), b""),
            (b"+ eyJzdGF0dXMiOiI0MDAifQ==\r\n", Ok(Response::Continue("eyJzdGF0dXMiOiI0MDAifQ==".into())), b""),
            (b"+ Ready for literal\r\n", Ok(Response::Continue("Ready for literal".into())), b""),
            (b"* 3 EXISTS\r\n", Ok(Response::Other(b"* 3 EXISTS\r\n".to_vec())), b""),
            (b"* 1 FETCH (BODY[] {3}\r\nabc)\r\n", Ok(Response::Other(b"* 1 FETCH (BODY[] {3}\r\nabc)\r\n".to_vec())), b""),
            (b"* (weird)\r\n", Ok(Response::Other(b"* (weird)\r\n".to_vec())), b""),
            (b"* ID (\"name\" \"Dovecot\")\r\n", Ok(Response::Id(Some(vec![("name".into(), Some("Dovecot".into()))]))), b""),
            (b"* ID NIL\r\n", Ok(Response::Id(None)), b""),
            (b"* ID garbage\r\n", Ok(Response::Other(b"* ID garbage\r\n".to_vec())), b""),
            // errors
            (b"a1 PREAUTH x\r\n", Err(perr(a1(), E::Status)), b""),
            (b"a1 BYE x\r\n", Err(perr(a1(), E::Status)), b""),
            (b"a1 OK[x\r\n", Err(perr(a1(), E::Status)), b""),
            (b"a1 CAPABILITY X\r\n", Err(perr(a1(), E::Status)), b""),
            (b"a1\r\n", Err(perr(a1(), E::Space)), b""),
            (b"a1 OK\tx\r\n", Err(perr(a1(), E::Space)), b""),
            (b"*OK\r\n", Err(perr(None, E::Space)), b""),
            (b"(x\r\n", Err(perr(None, E::Tag)), b""),
            (b"a1 OK [ALERT x\r\n", Err(perr(a1(), E::Code)), b""),
            (b"a1 OK []\r\n", Err(perr(a1(), E::Code)), b""),
            (b"a1 OK [ALERT ] x\r\n", Err(perr(a1(), E::Code)), b""),
            (b"a1 OK [ALERT]x\r\n", Err(perr(a1(), E::Code)), b""),
            // fuzz/corpus/imap_response/regression-nul-in-code-args
            (b"a1 NO [X a\0b] text\r\n", Err(perr(a1(), E::Code)), b""),
            (b"* OK [CAPABILITY IMAP4rev1 (x)] hi\r\n", Err(perr(None, E::Code)), b""),
            (b"* OK [CAPABILITY IMAP4rev1\r\n", Err(perr(None, E::Code)), b""),
            (b"* CAPABILITY IMAP4rev1 (x)\r\n", Err(perr(None, E::Capability)), b""),
            (b"* CAPABILITY IMAP4rev1]\r\n", Err(perr(None, E::LineEnd)), b""),
        ];
        cases
    }

    #[test]
    fn response_known_answers() {
        for (input, want, left) in response_cases() {
            let (got, rest) = first_response(input);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(
                rest,
                left,
                "leftover of {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn raw_response_cases() -> Vec<(&'static [u8], Result<Response, ParseError>)> {
        use ParseErrorKind as E;
        vec![
            (b"", Err(perr(None, E::Tag))),
            (b"a1 OK x", Err(perr(t("a1"), E::LineEnd))),
            (b"a1 OK x\r\ny", Err(perr(t("a1"), E::Trailing))),
            (b"+ x\r", Err(perr(None, E::LineEnd))),
            (b"* CAPABILITY A\r\n\r\n", Err(perr(None, E::Trailing))),
            (b"*", Err(perr(None, E::Space))),
        ]
    }

    #[test]
    fn response_known_answers_without_framer() {
        for (input, want) in raw_response_cases() {
            assert_eq!(
                parse_response(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn greeting_cases() -> Vec<(&'static [u8], Result<StatusResponse, ParseError>)> {
        use ParseErrorKind as E;
        let ok = |status, code, text: &str| {
            Ok(StatusResponse {
                tag: None,
                status,
                code,
                text: text.to_owned(),
            })
        };
        vec![
            (
                b"* OK [CAPABILITY IMAP4rev1 STARTTLS] hi\r\n",
                ok(Status::Ok, caps_code(&["IMAP4rev1", "STARTTLS"]), "hi"),
            ),
            (b"* PREAUTH x\r\n", ok(Status::PreAuth, None, "x")),
            (b"* BYE busy\r\n", ok(Status::Bye, None, "busy")),
            (b"* NO x\r\n", Err(perr(None, E::Greeting))),
            (b"* BAD x\r\n", Err(perr(None, E::Greeting))),
            (b"a1 OK x\r\n", Err(perr(None, E::Greeting))),
            (b"+ x\r\n", Err(perr(None, E::Greeting))),
            (b"* CAPABILITY X\r\n", Err(perr(None, E::Greeting))),
            (b"* 1 EXISTS\r\n", Err(perr(None, E::Greeting))),
            (b"HTTP/1.1 400\r\n", Err(perr(None, E::Greeting))),
            (b"(x\r\n", Err(perr(None, E::Greeting))),
        ]
    }

    #[test]
    fn greeting_known_answers() {
        for (input, want) in greeting_cases() {
            assert_eq!(
                parse_greeting(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let g = parse_greeting(b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] x\r\n").unwrap();
        assert!(has_capability(g.capabilities().unwrap(), "auth=xoauth2"));
        let g = parse_greeting(b"* OK x\r\n").unwrap();
        assert_eq!(g.capabilities(), None);
    }

    /// Every parse error kind appears in the tables above.
    #[test]
    fn every_parse_error_is_covered() {
        use ParseErrorKind as E;
        let mut seen = Vec::new();
        let mut note = |r: Result<(), ParseError>| {
            if let Err(e) = r {
                seen.push(e.kind);
            }
        };
        for (_, r, _) in command_cases() {
            note(r.map(drop));
        }
        for (_, r) in raw_command_cases() {
            note(r.map(drop));
        }
        for (_, r) in auth_response_cases() {
            note(r.map(drop));
        }
        for (_, r, _) in response_cases() {
            note(r.map(drop));
        }
        for (_, r) in raw_response_cases() {
            note(r.map(drop));
        }
        for (_, r) in greeting_cases() {
            note(r.map(drop));
        }
        for kind in [
            E::Tag,
            E::CommandName,
            E::Space,
            E::LineEnd,
            E::Trailing,
            E::Argument,
            E::Quoted,
            E::Literal,
            E::Utf8,
            E::Base64,
            E::Atom,
            E::IdList,
            E::Status,
            E::Code,
            E::Capability,
            E::Greeting,
        ] {
            assert!(seen.contains(&kind), "no case for {kind:?}");
        }
    }

    #[test]
    fn capability_helpers() {
        let caps = strings(&["IMAP4rev1", "Auth=XOAUTH2", "LITERAL-"]);
        assert!(has_capability(&caps, "AUTH=XOAUTH2"));
        assert!(has_capability(&caps, "imap4REV1"));
        assert!(!has_capability(&caps, "AUTH=PLAIN"));
        assert!(!has_capability(&caps, "AUTH=XOAUTH"));
        assert_eq!(
            LiteralSupport::from_capabilities(&caps),
            LiteralSupport::Minus
        );
        assert_eq!(
            LiteralSupport::from_capabilities(&strings(&["IMAP4rev1", "literal+"])),
            LiteralSupport::Plus
        );
        assert_eq!(
            LiteralSupport::from_capabilities(&strings(&["IMAP4rev2"])),
            LiteralSupport::Minus
        );
        assert_eq!(
            LiteralSupport::from_capabilities(&strings(&["IMAP4rev1"])),
            LiteralSupport::SyncOnly
        );
    }

    #[test]
    fn tags() {
        assert_eq!(Tag::new("A001").unwrap().as_str(), "A001");
        assert_eq!(Tag::new("a]").unwrap().to_string(), "a]");
        for bad in [
            "", "a b", "a+", "*", "a{", "a%", "a\"", "a\\", "(", "\u{e9}", "a\r",
        ] {
            assert_eq!(Tag::new(bad), None, "{bad:?}");
        }
    }

    // --- encoders: known answers ----------------------------------------------

    fn enc(kind: CommandKind, literals: LiteralSupport) -> Result<Vec<Vec<u8>>, EncodeError> {
        encode_command(
            &Command {
                tag: tag("a"),
                kind,
            },
            literals,
        )
    }

    fn parts(v: &[&[u8]]) -> Result<Vec<Vec<u8>>, EncodeError> {
        Ok(v.iter().map(|p| p.to_vec()).collect())
    }

    #[test]
    fn command_encoder_known_answers() {
        use CommandKind as K;
        use LiteralSupport::*;
        let big = "\u{e9}".repeat(2049); // 4098 bytes
        let big_tail = format!("{big}\r\n");
        let big_plus = format!("a LOGIN \"u\" {{4098+}}\r\n{big}\r\n");
        #[rustfmt::skip]
        let cases: Vec<EncodeCase> = vec![
            (K::Capability, SyncOnly, parts(&[b"a CAPABILITY\r\n"])),
            (K::StartTls, SyncOnly, parts(&[b"a STARTTLS\r\n"])),
            (K::Logout, SyncOnly, parts(&[b"a LOGOUT\r\n"])),
            (K::Noop, SyncOnly, parts(&[b"a NOOP\r\n"])),
            (login("alice", "secret"), SyncOnly, parts(&[b"a LOGIN \"alice\" \"secret\"\r\n"])),
            (login("al ice", "p\"w\\d"), SyncOnly, parts(&[b"a LOGIN \"al ice\" \"p\\\"w\\\\d\"\r\n"])),
            (login("", "\t"), SyncOnly, parts(&[b"a LOGIN \"\" \"\t\"\r\n"])),
            (login("j\u{f6}rg", "pw"), SyncOnly, parts(&[b"a LOGIN {5}\r\n", b"j\xc3\xb6rg \"pw\"\r\n"])),
            (login("j\u{f6}rg", "pw"), Plus, parts(&[b"a LOGIN {5+}\r\nj\xc3\xb6rg \"pw\"\r\n"])),
            (login("j\u{f6}rg", "pw"), Minus, parts(&[b"a LOGIN {5+}\r\nj\xc3\xb6rg \"pw\"\r\n"])),
            (login("u", "a\r\nb"), SyncOnly, parts(&[b"a LOGIN \"u\" {4}\r\n", b"a\r\nb\r\n"])),
            (login("u", &big), Minus, parts(&[b"a LOGIN \"u\" {4098}\r\n", big_tail.as_bytes()])),
            (login("u", &big), Plus, parts(&[big_plus.as_bytes()])),
            (login("u", "a\0b"), Plus, Err(EncodeError::Nul)),
            (login("u\0", "b"), Plus, Err(EncodeError::Nul)),
            (auth("XOAUTH2", Some("dXNlcj1h")), SyncOnly, parts(&[b"a AUTHENTICATE XOAUTH2 dXNlcj1h\r\n"])),
            (auth("XOAUTH2", None), SyncOnly, parts(&[b"a AUTHENTICATE XOAUTH2\r\n"])),
            (auth("PLAIN", Some("")), SyncOnly, parts(&[b"a AUTHENTICATE PLAIN =\r\n"])),
            (auth("PLAIN", Some("abc")), SyncOnly, Err(EncodeError::Base64)),
            (auth("PLAIN", Some("YW Jj")), SyncOnly, Err(EncodeError::Base64)),
            (auth("X Y", None), SyncOnly, Err(EncodeError::Atom)),
            (auth("", None), SyncOnly, Err(EncodeError::Atom)),
            (K::Id(None), SyncOnly, parts(&[b"a ID NIL\r\n"])),
            (id(&[]), SyncOnly, parts(&[b"a ID ()\r\n"])),
            (id(&[("name", Some("Postern")), ("os", None)]), SyncOnly, parts(&[b"a ID (\"name\" \"Postern\" \"os\" NIL)\r\n"])),
            (id(&[("name", Some("\u{e9}"))]), Plus, parts(&[b"a ID (\"name\" {2+}\r\n\xc3\xa9)\r\n"])),
            (id(&[("name", Some("\0"))]), Plus, Err(EncodeError::Nul)),
            (K::Other { name: "SELECT".into() }, SyncOnly, parts(&[b"a SELECT\r\n"])),
            (K::Other { name: "SEL ECT".into() }, SyncOnly, Err(EncodeError::Atom)),
        ];
        for (i, (kind, literals, want)) in cases.into_iter().enumerate() {
            assert_eq!(enc(kind, literals), want, "case {i}");
        }
    }

    #[test]
    fn auth_response_encoder_known_answers() {
        let cases: Vec<(AuthResponse, Result<&[u8], EncodeError>)> = vec![
            (
                AuthResponse::Data(Secret::new("dXNlcg==")),
                Ok(b"dXNlcg==\r\n"),
            ),
            (AuthResponse::Data(Secret::new("")), Ok(b"\r\n")),
            (AuthResponse::Cancel, Ok(b"*\r\n")),
            (
                AuthResponse::Data(Secret::new("a b=")),
                Err(EncodeError::Base64),
            ),
            (
                AuthResponse::Data(Secret::new("*")),
                Err(EncodeError::Base64),
            ),
        ];
        for (response, want) in cases {
            assert_eq!(
                encode_auth_response(&response),
                want.map(<[u8]>::to_vec),
                "{response:?}"
            );
        }
    }

    #[test]
    fn response_encoder_known_answers() {
        use Status::{Bad, Bye, No, PreAuth};
        const OK: Status = Status::Ok;
        let ok_caps = status(
            None,
            OK,
            caps_code(&["IMAP4rev1", "AUTH=PLAIN", "ID"]),
            "Postern ready",
        );
        #[rustfmt::skip]
        let cases: Vec<(Response, Result<&[u8], EncodeError>)> = vec![
            (ok_caps, Ok(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] Postern ready\r\n")),
            (status(t("a"), OK, caps_code(&["IMAP4rev1", "IDLE"]), "Logged in"), Ok(b"a OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")),
            (status(t("a"), No, other_code("AUTHENTICATIONFAILED", None), "Invalid\r\nX"), Ok(b"a NO [AUTHENTICATIONFAILED] Invalid  X\r\n")),
            (status(t("a"), Bad, other_code("TOOBIG", None), "literal too large"), Ok(b"a BAD [TOOBIG] literal too large\r\n")),
            (status(t("a"), No, other_code("UNAVAILABLE", Some("x y")), "later"), Ok(b"a NO [UNAVAILABLE x y] later\r\n")),
            (status(None, Bad, None, "[oops"), Ok(b"* BAD (oops\r\n")),
            (status(None, OK, other_code("ALERT", None), "[fine"), Ok(b"* OK [ALERT] [fine\r\n")),
            (status(t("a"), OK, None, ""), Ok(b"a OK .\r\n")),
            (status(t("a"), OK, None, "nul\0here"), Ok(b"a OK nul here\r\n")),
            (status(t("a"), No, None, "send {5}"), Ok(b"a NO send {5}.\r\n")),
            (status(t("a"), No, None, "send {5+}\r"), Ok(b"a NO send {5+} \r\n")),
            (status(t("a"), No, None, "send {5} x"), Ok(b"a NO send {5} x\r\n")),
            (status(None, Bye, None, "Logging out"), Ok(b"* BYE Logging out\r\n")),
            (status(None, PreAuth, None, "x"), Ok(b"* PREAUTH x\r\n")),
            (Response::Continue("Ready for literal".into()), Ok(b"+ Ready for literal\r\n")),
            (Response::Continue(String::new()), Ok(b"+ \r\n")),
            (Response::Continue("a\r\nb {3}".into()), Ok(b"+ a  b {3}.\r\n")),
            (Response::Capability(strings(&["IMAP4rev1", "STARTTLS"])), Ok(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n")),
            (Response::Id(None), Ok(b"* ID NIL\r\n")),
            (Response::Id(Some(vec![("name".into(), Some("Postern".into())), ("version".into(), None)])),
                Ok(b"* ID (\"name\" \"Postern\" \"version\" NIL)\r\n")),
            (Response::Id(Some(vec![("name".into(), Some("\u{e9}".into()))])), Ok(b"* ID (\"name\" {2}\r\n\xc3\xa9)\r\n")),
            (Response::Other(b"* 3 EXISTS\r\n".to_vec()), Ok(b"* 3 EXISTS\r\n")),
            // errors
            (status(t("a"), Bye, None, "x"), Err(EncodeError::TaggedStatus)),
            (status(t("a"), PreAuth, None, "x"), Err(EncodeError::TaggedStatus)),
            (status(None, OK, caps_code(&["A B"]), "x"), Err(EncodeError::Atom)),
            (status(None, OK, caps_code(&[""]), "x"), Err(EncodeError::Atom)),
            (status(None, OK, other_code("", None), "x"), Err(EncodeError::Atom)),
            (status(None, OK, other_code("X", Some("a]b")), "x"), Err(EncodeError::CodeArgs)),
            (status(None, OK, other_code("X", Some("")), "x"), Err(EncodeError::CodeArgs)),
            (status(None, OK, other_code("X", Some("a\nb")), "x"), Err(EncodeError::CodeArgs)),
            (Response::Capability(strings(&["IMAP4rev1", "(x)"])), Err(EncodeError::Atom)),
            (Response::Id(Some(vec![("na\0me".into(), None)])), Err(EncodeError::Nul)),
        ];
        for (response, want) in cases {
            assert_eq!(
                encode_response(&response),
                want.map(<[u8]>::to_vec),
                "{response:?}"
            );
        }
    }

    #[test]
    fn secrets_do_not_reach_debug_output() {
        let input = b"a LOGIN alice hunter2\r\n";
        let mut fr = Framer::for_commands(Limits::PRE_AUTH);
        let mut src = BytesMut::from(&input[..]);
        let frame = match fr.decode(&mut src).unwrap() {
            Decoded::Frame(frame) => frame,
            other => panic!("{other:?}"),
        };
        let command = parse_command(frame.as_bytes()).unwrap();
        let printed = format!("{frame:?} {:?} {command:?}", Decoded::Frame(frame.clone()));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("alice"));

        // AGFsaWNlAGh1bnRlcjI= is base64 of "\0alice\0hunter2"
        let command = parse_command(b"a AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=\r\n").unwrap();
        let response = parse_auth_response(b"AGFsaWNlAGh1bnRlcjI=\r\n").unwrap();
        let printed = format!("{command:?} {response:?}");
        assert!(!printed.contains("AGFsaWNlAGh1bnRlcjI"), "{printed}");
    }

    // --- properties -----------------------------------------------------------

    /// Bytes that look like IMAP often enough to reach every framer state.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..12),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            (0u64..24, any::<bool>()).prop_map(|(n, plus)| {
                format!("{{{n}{}}}\r\n", if plus { "+" } else { "" }).into_bytes()
            }),
            "[a-z0-9]{1,4} [A-Z]{1,6} ".prop_map(String::into_bytes),
            Just(b"{99999999999999999999}\r\n".to_vec()),
            Just(b"{5000+}\n".to_vec()),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    fn limits() -> impl Strategy<Value = Limits> {
        prop_oneof![
            Just(Limits::PRE_AUTH),
            Just(SMALL),
            Just(Limits {
                max_line: 6,
                max_literal: 3,
                max_nonsync_literal: 2,
                max_frame: 12,
            }),
            (1usize..40, 0usize..40, 0usize..40, 1usize..80).prop_map(|(l, lit, ns, fr)| Limits {
                max_line: l,
                max_literal: lit,
                max_nonsync_literal: ns,
                max_frame: fr,
            }),
        ]
    }

    fn side() -> impl Strategy<Value = Side> {
        prop_oneof![Just(Side::Cmd), Just(Side::Resp)]
    }

    /// Feeds `input` in the given chunks; checks the caps after every
    /// `Incomplete`. Returns the events and the bytes left.
    fn feed(side: Side, limits: Limits, input: &[u8], cuts: &[usize]) -> (Vec<Ev>, Vec<u8>) {
        let mut fr = framer(side, limits);
        let limits = fr.limits();
        let mut src = BytesMut::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            src.extend_from_slice(&input[start..end]);
            start = end;
            if drain(&mut fr, &mut src, &mut events) {
                // Stopped: the rest is never read; keep it as leftover.
                src.extend_from_slice(&input[start..]);
                break;
            }
            assert!(
                src.len() <= limits.max_frame,
                "holds {} > {}",
                src.len(),
                limits.max_frame
            );
        }
        for ev in &events {
            if let Ev::F(frame) = ev {
                assert!(frame.len() <= limits.max_frame);
            }
        }
        (events, src.to_vec())
    }

    /// A little base64 encoder so the tests need no crate for it.
    fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn b64_helper_matches_rfc4648() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ -~]{0,12}",
            "[a-z\"\\\\ ]{0,8}",
            "[a-z\u{e9}\u{20ac}\u{1f600}\r\n\t {}+0-9]{0,10}",
        ]
    }

    fn nul_free() -> impl Strategy<Value = String> {
        text().prop_map(|s| s.replace('\0', ""))
    }

    fn support() -> impl Strategy<Value = LiteralSupport> {
        prop_oneof![
            Just(LiteralSupport::SyncOnly),
            Just(LiteralSupport::Plus),
            Just(LiteralSupport::Minus),
        ]
    }

    fn any_tag() -> impl Strategy<Value = Tag> {
        "[A-Za-z0-9.\\]-]{1,8}".prop_map(|s| Tag::new(&s).expect("tag"))
    }

    fn id_params() -> impl Strategy<Value = IdParams> {
        proptest::option::of(proptest::collection::vec(
            (nul_free(), proptest::option::of(nul_free())),
            0..4,
        ))
    }

    fn command() -> impl Strategy<Value = Command> {
        let kind = prop_oneof![
            Just(CommandKind::Capability),
            Just(CommandKind::Noop),
            Just(CommandKind::Logout),
            Just(CommandKind::StartTls),
            id_params().prop_map(CommandKind::Id),
            (nul_free(), nul_free()).prop_map(|(user, pw)| CommandKind::Login {
                user,
                password: Secret::new(pw),
            }),
            (
                "[A-Z0-9_-]{1,12}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24))
            )
                .prop_map(|(mechanism, initial)| CommandKind::Authenticate {
                    mechanism,
                    initial: initial.map(|b| Secret::new(b64(&b))),
                }),
            "X[A-Z0-9]{0,8}".prop_map(|name| CommandKind::Other { name }),
        ];
        (any_tag(), kind).prop_map(|(tag, kind)| Command { tag, kind })
    }

    /// Sends encoded command parts through a command framer the way the I/O
    /// layers would: each part after the first only after a continuation.
    fn frame_parts(parts: &[Vec<u8>]) -> Vec<u8> {
        let limits = Limits {
            max_nonsync_literal: Limits::PRE_AUTH.max_literal,
            ..Limits::PRE_AUTH
        };
        let mut fr = Framer::for_commands(limits);
        let mut src = BytesMut::new();
        for (i, part) in parts.iter().enumerate() {
            src.extend_from_slice(part);
            let last = i + 1 == parts.len();
            let got = fr.decode(&mut src).expect("frames");
            if last {
                let Decoded::Frame(frame) = got else {
                    panic!("no frame at the end: {got:?}");
                };
                assert!(src.is_empty());
                return frame.as_bytes().to_vec();
            }
            assert!(
                matches!(got, Decoded::NeedContinuation { .. }),
                "part {i}: {got:?}"
            );
            assert_eq!(fr.decode(&mut src), Ok(Decoded::Incomplete));
        }
        unreachable!("encode_command returns at least one part")
    }

    fn response() -> impl Strategy<Value = Response> {
        let cap = "[A-Za-z0-9=+.-]{1,10}";
        let code = prop_oneof![
            proptest::collection::vec(cap, 0..5).prop_map(Code::Capability),
            (
                "[A-Z][A-Z-]{0,10}".prop_filter("not CAPABILITY", |n| n != "CAPABILITY"),
                proptest::option::of("[^\\]\r\n\u{0}]{1,12}"),
            )
                .prop_map(|(name, args)| Code::Other { name, args }),
        ];
        let status = prop_oneof![
            Just(Status::Ok),
            Just(Status::No),
            Just(Status::Bad),
            Just(Status::PreAuth),
            Just(Status::Bye),
        ];
        let status_response = (
            proptest::option::of(any_tag()),
            status,
            proptest::option::of(code),
            text(),
        )
            .prop_map(|(tag, status, code, text)| {
                // PREAUTH and BYE are untagged only.
                let status = match (&tag, status) {
                    (Some(_), Status::PreAuth | Status::Bye) => Status::Ok,
                    (_, s) => s,
                };
                Response::Status(StatusResponse {
                    tag,
                    status,
                    code,
                    text,
                })
            });
        prop_oneof![
            status_response,
            proptest::collection::vec(cap, 0..6).prop_map(Response::Capability),
            id_params().prop_map(Response::Id),
            text().prop_map(Response::Continue),
        ]
    }

    /// What parsing an encoded response gives back: the value with its text
    /// sanitised as the encoder does.
    fn as_sent(response: &Response) -> Response {
        match response {
            Response::Status(s) => Response::Status(StatusResponse {
                text: clean_status_text(&s.text, s.code.is_some()),
                ..s.clone()
            }),
            Response::Continue(text) => Response::Continue(clean_continue_text(text)),
            other => other.clone(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn chunking_does_not_change_frames(
            side in side(),
            limits in limits(),
            input in stream(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            cuts.sort_unstable();
            let whole = feed(side, limits, &input, &[]);
            let chunked = feed(side, limits, &input, &cuts);
            prop_assert_eq!(&chunked, &whole);
            let bytewise: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(feed(side, limits, &input, &bytewise), whole);
        }

        #[test]
        fn login_round_trips(
            tag in any_tag(),
            user in text(),
            password in text(),
            literals in support(),
        ) {
            let command = Command {
                tag,
                kind: CommandKind::Login { user: user.clone(), password: Secret::new(password.clone()) },
            };
            let encoded = encode_command(&command, literals);
            if user.contains('\0') || password.contains('\0') {
                prop_assert_eq!(encoded, Err(EncodeError::Nul));
            } else {
                let parts = encoded.expect("encodes");
                let frame = frame_parts(&parts);
                prop_assert_eq!(parse_command(&frame), Ok(command));
            }
        }

        #[test]
        fn commands_round_trip(command in command(), literals in support()) {
            let parts = encode_command(&command, literals).expect("encodes");
            let frame = frame_parts(&parts);
            prop_assert_eq!(parse_command(&frame), Ok(command));
        }

        #[test]
        fn responses_round_trip(response in response()) {
            let bytes = encode_response(&response).expect("encodes");
            let mut fr = Framer::for_responses(Limits::PRE_AUTH);
            let mut src = BytesMut::from(&bytes[..]);
            let frame = match fr.decode(&mut src) {
                Ok(Decoded::Frame(frame)) => frame,
                other => panic!("not one frame: {other:?} for {bytes:?}"),
            };
            prop_assert!(src.is_empty(), "more than one frame: {:?}", bytes);
            prop_assert_eq!(parse_response(frame.as_bytes()), Ok(as_sent(&response)));
        }

        #[test]
        fn auth_responses_round_trip(data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))) {
            let response = match data {
                Some(d) => AuthResponse::Data(Secret::new(b64(&d))),
                None => AuthResponse::Cancel,
            };
            let line = encode_auth_response(&response).expect("encodes");
            prop_assert_eq!(parse_auth_response(&line), Ok(response));
        }

        /// decode(encode(decode(b))) == decode(b) for any command bytes that parse.
        #[test]
        fn parsed_commands_reencode(input in stream()) {
            if let Ok(command) = parse_command(&input) {
                let parts = encode_command(&command, LiteralSupport::Plus).expect("a parsed command encodes");
                prop_assert_eq!(parse_command(&parts.concat()), Ok(command));
            }
        }

        /// Re-encoding a parsed response is stable after one round of sanitising.
        #[test]
        fn parsed_responses_reencode(input in stream()) {
            if let Ok(response) = parse_response(&input) {
                if let Ok(bytes) = encode_response(&response) {
                    let again = parse_response(&bytes).expect("our encoding parses");
                    let bytes2 = encode_response(&again).expect("re-encodes");
                    prop_assert_eq!(parse_response(&bytes2), Ok(again));
                }
            }
        }

        #[test]
        fn parsers_never_panic(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_command(&input);
            let _ = parse_response(&input);
            let _ = parse_greeting(&input);
            let _ = parse_auth_response(&input);
        }

        #[test]
        fn parsers_never_panic_on_imapish_input(input in stream()) {
            let _ = parse_command(&input);
            let _ = parse_response(&input);
            let _ = parse_greeting(&input);
            let _ = parse_auth_response(&input);
        }
    }
}
