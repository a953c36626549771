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

//!
//! # Files
//!
//! [`syntax`] (character classes, tags), [`frame`] (the framer), [`parse`]
//! (errors and the cursor), [`command`] and [`response`] (the parsers),
//! [`encode`] (the encoders); the known-answer tables and properties are in
//! `tests/`.

pub mod command;
pub mod encode;
pub mod frame;
pub mod parse;
pub mod response;
pub mod syntax;
#[cfg(test)]
mod tests;

pub use command::{parse_auth_response, parse_command, AuthResponse, Command, CommandKind};
pub use encode::{
    encode_auth_response, encode_command, encode_response, EncodeError, LiteralSupport,
};
pub use frame::{Decoded, Frame, FrameError, Framer, Limits};
pub use parse::{ParseError, ParseErrorKind};
pub use response::{
    has_capability, parse_greeting, parse_response, Code, Response, Status, StatusResponse,
};
pub use syntax::{IdParams, Tag};
