//! Framing: a byte stream split into frames (one line plus the literals it
//! announces) under hard caps, before anything is parsed.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::syntax::{leading_tag, Tag};

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
    /// Before login: 40 KiB lines (an RFC 2971 `ID` at its largest, 30
    /// pairs with values of 1024 octets, is about 32 KB), 64 KiB literals,
    /// LITERAL- and one line plus one literal per frame.
    pub const PRE_AUTH: Limits = Limits {
        max_line: 40 * 1024,
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
pub(super) enum Reading {
    /// We are the server: synchronising literals wait for our `+`.
    Commands,
    /// We are the client: every literal follows its announcement at once.
    Responses,
}

/// Where the end of the current line stands with respect to a literal
/// announcement: `literal = "{" number64 ["+"] "}" CRLF *CHAR8`.
/// Fed one byte at a time so that a skipped line needs no buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tail {
    Other,
    Open,
    Digits(u64),
    Plus(u64),
    /// `{n}` (sync = true) or `{n+}` (sync = false) just seen.
    Close(u64, bool),
    CloseCr(u64, bool),
}

impl Tail {
    pub(super) fn step(self, b: u8) -> Tail {
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
    pub(super) fn announcement(self) -> Option<(u64, bool)> {
        match self {
            Tail::Close(n, sync) | Tail::CloseCr(n, sync) => Some((n, sync)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum State {
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

    pub(super) fn new(reading: Reading, mut limits: Limits) -> Framer {
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
    pub(super) fn peer_waits(&self, sync: bool) -> bool {
        sync && self.reading == Reading::Commands
    }

    /// Forget the current (refused) frame: drop its bytes from `src`.
    pub(super) fn drop_frame(&mut self, src: &mut BytesMut) {
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
    pub(super) fn scan_line(&mut self, src: &mut BytesMut) -> Option<Result<Decoded, FrameError>> {
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
    pub(super) fn literal_announced(
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
