//! Sans-I/O SMTP: command line framing and parsing, reply encoding and parsing,
//! and the DATA transparency layer (dot-stuffing, end-of-data detection).
//!
//! This module owns bytes-to-values and values-to-bytes only. It knows nothing
//! of tokio, configuration, users or accounts; sessions drive it.

use std::fmt::{self, Write as _};

use crate::text::sanitize;

/// RFC 5321 4.5.3.1.4: a command line is at most 512 octets including CRLF.
/// AUTH initial responses (RFC 4954 4) may be longer; the session passes its
/// own cap, this is the default.
pub const MAX_COMMAND_LINE: usize = 512;
/// RFC 5321 4.5.3.1.6: a reply line is at most 512 octets; servers send longer
/// ones in practice, so the upstream parser allows more.
pub const MAX_REPLY_LINE: usize = 4096;
/// Upper bound on the lines of one multi-line reply.
pub const MAX_REPLY_LINES: usize = 128;

// ---------------------------------------------------------------------------
// Line framing
// ---------------------------------------------------------------------------

/// Result of looking for one line at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// No line end yet, and the buffer is still under the cap.
    Incomplete,
    /// A line: `len` bytes of content (without CR LF), `consumed` bytes
    /// including the line end. A bare LF is accepted as a line end.
    Done { len: usize, consumed: usize },
    /// The line is longer than the cap. `consumed` is how much may be dropped:
    /// everything up to and including the line end if it was seen, otherwise
    /// the whole buffer (the caller then keeps discarding until a line end).
    TooLong { consumed: usize, complete: bool },
}

/// Find the first line in `buf`, allowing at most `max` bytes including CRLF.
pub fn take_line(buf: &[u8], max: usize) -> Line {
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let len = if i > 0 && buf[i - 1] == b'\r' {
                i - 1
            } else {
                i
            };
            Line::Done {
                len,
                consumed: i + 1,
            }
        }
        None if buf.len() < max => Line::Incomplete,
        None => match buf[max..].iter().position(|&b| b == b'\n') {
            Some(i) => Line::TooLong {
                consumed: max + i + 1,
                complete: true,
            },
            None => Line::TooLong {
                consumed: buf.len(),
                complete: false,
            },
        },
    }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// BODY= parameter of MAIL (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// Parameters of MAIL FROM that Postern understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// RFC 1870 SIZE=
    pub size: Option<u64>,
    /// RFC 6152 BODY=
    pub body: Option<Body>,
    /// RFC 6531 SMTPUTF8
    pub smtputf8: bool,
}

/// A reverse-path or forward-path: the mailbox between the angle brackets,
/// without source route. Empty for the null reverse-path `<>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path(String);

impl Path {
    pub fn new(mailbox: impl Into<String>) -> Self {
        Path(mailbox.into())
    }
    pub fn null() -> Self {
        Path(String::new())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The domain part, if any.
    pub fn domain(&self) -> Option<&str> {
        self.0.rsplit_once('@').map(|(_, d)| d)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        from: Path,
        params: MailParams,
    },
    Rcpt {
        to: Path,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// AUTH mechanism [initial-response]; the response is kept as the raw
    /// base64 text (or "=") for the SASL layer to decode.
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
}

/// Why a command line was refused. Each maps to exactly one reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unrecognised command")]
    Unknown,
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    #[error("parameter not supported: {0}")]
    UnsupportedParam(String),
    #[error("command line contains a NUL or non-UTF-8 byte")]
    BadBytes,
}

impl CommandError {
    /// The reply this error gives the client.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unknown => Reply::new(500, "5.5.2", "Command not recognised"),
            CommandError::Syntax(what) => Reply::new(501, "5.5.4", format!("Syntax error: {what}")),
            CommandError::UnsupportedParam(p) => Reply::new(
                555,
                "5.5.4",
                format!("MAIL/RCPT parameter {} not supported", sanitize(p, 40)),
            ),
            CommandError::BadBytes => {
                Reply::new(500, "5.5.2", "Command contains a NUL or invalid UTF-8 byte")
            }
        }
    }
}

/// Parse one command line (without its CRLF).
///
/// ```text
/// ; RFC 5321 4.1.1
/// ehlo = "EHLO" SP ( Domain / address-literal ) CRLF
/// mail = "MAIL FROM:" Reverse-path [SP Mail-parameters] CRLF
/// rcpt = "RCPT TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path ) [SP Rcpt-parameters] CRLF
/// ```
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    if line.contains(&0) {
        return Err(CommandError::BadBytes);
    }
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadBytes)?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    if verb.len() > 8 {
        return Err(CommandError::Unknown);
    }
    let verb = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax("this command takes no arguments"))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            let domain = rest.trim();
            if domain.is_empty() || domain.contains(char::is_whitespace) && verb == "HELO" {
                return Err(CommandError::Syntax("EHLO/HELO needs a domain"));
            }
            // Some clients send "EHLO name extra words"; keep the first word.
            let domain = domain.split_whitespace().next().unwrap_or("").to_owned();
            Ok(if verb == "EHLO" {
                Command::Ehlo(domain)
            } else {
                Command::Helo(domain)
            })
        }
        "MAIL" => {
            let arg = strip_prefix_ci(rest, "FROM:")
                .ok_or(CommandError::Syntax("expected MAIL FROM:<address>"))?;
            let (path, params) = parse_path(arg.trim_start(), true)?;
            Ok(Command::Mail {
                from: path,
                params: parse_mail_params(params)?,
            })
        }
        "RCPT" => {
            let arg = strip_prefix_ci(rest, "TO:")
                .ok_or(CommandError::Syntax("expected RCPT TO:<address>"))?;
            let (path, params) = parse_path(arg.trim_start(), false)?;
            if let Some(p) = params.split_whitespace().next() {
                return Err(CommandError::UnsupportedParam(p.to_owned()));
            }
            Ok(Command::Rcpt { to: path })
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(Command::StartTls),
        "AUTH" => {
            let mut parts = rest.split(' ').filter(|s| !s.is_empty());
            let mechanism = parts
                .next()
                .ok_or(CommandError::Syntax("AUTH needs a mechanism"))?;
            if !mechanism
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(CommandError::Syntax("bad SASL mechanism name"));
            }
            let initial = parts.next().map(str::to_owned);
            if parts.next().is_some() {
                return Err(CommandError::Syntax(
                    "AUTH takes a mechanism and one response",
                ));
            }
            Ok(Command::Auth {
                mechanism: mechanism.to_ascii_uppercase(),
                initial,
            })
        }
        _ => Err(CommandError::Unknown),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// ```text
/// ; RFC 5321 4.1.2
/// Reverse-path = Path / "<>"
/// Path         = "<" [ A-d-l ":" ] Mailbox ">"
/// Mailbox      = Local-part "@" ( Domain / address-literal )
/// Local-part   = Dot-string / Quoted-string
/// ```
/// Returns the path and the rest of the line (the parameters).
fn parse_path(s: &str, allow_null: bool) -> Result<(Path, &str), CommandError> {
    let s = s
        .strip_prefix('<')
        .ok_or(CommandError::Syntax("address must be in angle brackets"))?;
    // Find the closing '>' outside a quoted local part.
    let mut in_quote = false;
    let mut escaped = false;
    let mut end = None;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end.ok_or(CommandError::Syntax("missing closing '>'"))?;
    let inner = &s[..end];
    let rest = &s[end + 1..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(CommandError::Syntax("garbage after address"));
    }
    // Drop an obsolete source route: "@a,@b:user@domain".
    let mailbox = if inner.starts_with('@') {
        inner
            .split_once(':')
            .map(|(_, m)| m)
            .ok_or(CommandError::Syntax("bad source route"))?
    } else {
        inner
    };
    if mailbox.is_empty() {
        if allow_null {
            return Ok((Path::null(), rest.trim_start()));
        }
        return Err(CommandError::Syntax("empty recipient address"));
    }
    validate_mailbox(mailbox)?;
    Ok((Path::new(mailbox), rest.trim_start()))
}

fn validate_mailbox(m: &str) -> Result<(), CommandError> {
    if m.len() > 254 {
        return Err(CommandError::Syntax("address too long"));
    }
    let (local, domain) = m
        .rsplit_once('@')
        .ok_or(CommandError::Syntax("address needs local@domain"))?;
    if local.is_empty() || domain.is_empty() {
        return Err(CommandError::Syntax("address needs local@domain"));
    }
    let quoted = local.starts_with('"') && local.ends_with('"') && local.len() >= 2;
    // Dot-string atoms (RFC 5322 atext) hold no "@": "<a@b@c.d>" is refused,
    // and so is "<@r:@x@y.z>", whose "@x@y.z" would go upstream as
    // "MAIL FROM:<@x@y.z>", a malformed source route (found by fuzzing).
    if !quoted
        && local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\@".contains(c))
    {
        return Err(CommandError::Syntax("bad character in local part"));
    }
    // RFC 5321 4.1.2: qtextSMTP and quoted-pairSMTP are printable (%d32-126,
    // or UTF-8 with SMTPUTF8): no CR, LF or other controls even when quoted.
    if quoted && local.chars().any(|c| c.is_control()) {
        return Err(CommandError::Syntax("control character in local part"));
    }
    if domain.starts_with('[') {
        if !domain.ends_with(']') {
            return Err(CommandError::Syntax("bad address literal"));
        }
    } else if domain
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\@".contains(c))
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(CommandError::Syntax("bad domain"));
    }
    Ok(())
}

/// ```text
/// ; RFC 5321 4.1.2
/// Mail-parameters = esmtp-param *(SP esmtp-param)
/// esmtp-param     = esmtp-keyword ["=" esmtp-value]
/// ```
fn parse_mail_params(s: &str) -> Result<MailParams, CommandError> {
    let mut p = MailParams::default();
    for param in s.split(' ').filter(|x| !x.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (param, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) => {
                let n = v
                    .parse::<u64>()
                    .map_err(|_| CommandError::Syntax("SIZE needs a number"))?;
                p.size = Some(n);
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => p.body = Some(Body::SevenBit),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                p.body = Some(Body::EightBitMime)
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            // RFC 4954 5: AUTH=<> on MAIL is allowed and may be ignored.
            ("AUTH", Some(_)) => {}
            _ => return Err(CommandError::UnsupportedParam(param.to_owned())),
        }
    }
    Ok(p)
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// An SMTP reply: a code and one or more lines of text. With enhanced status
/// codes the text of each line starts with the code ("2.0.0 Ok").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: &str, text: impl AsRef<str>) -> Reply {
        Reply {
            code,
            lines: vec![format!("{enhanced} {}", sanitize(text.as_ref(), 400))],
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, lines }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The enhanced status code at the start of the first line, if any
    /// (RFC 3463: class "." subject "." detail).
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let word = first.split(' ').next()?;
        let mut parts = word.split('.');
        let class = parts.next()?;
        let ok = matches!(class, "2" | "4" | "5")
            && parts
                .by_ref()
                .take(2)
                .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .count()
                == 2
            && parts.next().is_none();
        ok.then_some(word)
    }

    /// All lines joined, for logs and error texts.
    pub fn text(&self) -> String {
        self.lines.join(" / ")
    }

    /// Wire form: "250-first\r\n250 last\r\n".
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let line = self.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == n { ' ' } else { '-' };
            let mut s = String::with_capacity(line.len() + 6);
            let _ = write!(s, "{}{}", self.code, sep);
            s.push_str(line);
            s.push_str("\r\n");
            out.extend_from_slice(s.as_bytes());
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

/// Result of parsing a reply from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyParse {
    Incomplete,
    Done(Reply, usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line too long")]
    TooLong,
    #[error("too many reply lines")]
    TooManyLines,
    #[error("malformed reply line")]
    Malformed,
    #[error("reply code changed within a multi-line reply")]
    CodeMismatch,
}

/// Parse one (possibly multi-line) reply.
///
/// ```text
/// ; RFC 5321 4.2
/// Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF
/// Reply-code = %x32-35 %x30-35 %x30-39
/// ```
pub fn parse_reply(buf: &[u8]) -> Result<ReplyParse, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let (len, consumed) = match take_line(&buf[pos..], MAX_REPLY_LINE) {
            Line::Incomplete => return Ok(ReplyParse::Incomplete),
            Line::TooLong { .. } => return Err(ReplyError::TooLong),
            Line::Done { len, consumed } => (len, consumed),
        };
        let line = &buf[pos..pos + len];
        pos += consumed;
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::Malformed);
        }
        let c =
            (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
        if !(200..=599).contains(&c) {
            return Err(ReplyError::Malformed);
        }
        if *code.get_or_insert(c) != c {
            return Err(ReplyError::CodeMismatch);
        }
        let (last, text) = match line.get(3) {
            None => (true, &[][..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(ReplyError::Malformed),
        };
        lines.push(String::from_utf8_lossy(text).into_owned());
        if last {
            return Ok(ReplyParse::Done(Reply { code: c, lines }, pos));
        }
        if lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
    }
}

// ---------------------------------------------------------------------------
// DATA transparency (RFC 5321 4.5.2)
// ---------------------------------------------------------------------------

/// Incremental DATA reader: unstuffs leading dots, finds the end-of-data
/// sequence `CRLF . CRLF`, and enforces a size cap without buffering past it.
///
/// Line ends: a line ended by a bare LF is stored with CRLF (as Postfix does),
/// and only the exact sequence CR LF "." CR LF ends the data, so a bare-LF
/// "smuggled" terminator (CVE-2023-51764 class) can never split one message
/// into two. Bare CR is kept as content.
#[derive(Debug)]
pub struct DataDecoder {
    max: usize,
    size: usize,
    over: bool,
    /// True at the start of a line that followed a real CRLF (or the start).
    line_start_crlf: bool,
    /// True at the start of any line.
    line_start: bool,
    state: DataState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// Inside a line.
    Text,
    /// Saw CR inside a line.
    Cr,
    /// Saw "." at the start of a line that followed CRLF.
    Dot,
    /// Saw "." CR at the start of a line that followed CRLF.
    DotCr,
}

/// What one call to [`DataDecoder::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataProgress {
    /// All of the input was consumed; the message goes on.
    More,
    /// The end-of-data line was found; `consumed` bytes of the input belong
    /// to the message (the rest is the next command, e.g. when pipelined).
    End { consumed: usize },
}

impl DataDecoder {
    /// `max`: the largest message (after unstuffing) that is kept.
    pub fn new(max: usize) -> Self {
        DataDecoder {
            max,
            size: 0,
            over: false,
            line_start_crlf: true,
            line_start: true,
            state: DataState::Text,
        }
    }

    /// Bytes of the message seen so far (counted even past the cap).
    pub fn size(&self) -> usize {
        self.size
    }

    /// True once the message grew past the cap; its bytes are then dropped.
    pub fn oversize(&self) -> bool {
        self.over
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        self.size += bytes.len();
        if self.over {
            return;
        }
        if self.size > self.max {
            self.over = true;
            out.clear();
            out.shrink_to_fit();
            return;
        }
        out.extend_from_slice(bytes);
    }

    /// Feed bytes received during DATA; unstuffed message bytes go to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataProgress {
        let mut i = 0;
        // Start of the current run of plain text not yet copied to `out`.
        let mut run = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                DataState::Text => {
                    if self.line_start && b == b'.' {
                        // Dot at the start of a line: flush text, drop the dot.
                        self.emit(out, &input[run..i]);
                        run = i + 1;
                        self.line_start = false;
                        if self.line_start_crlf {
                            self.state = DataState::Dot;
                        }
                        i += 1;
                        continue;
                    }
                    self.line_start = false;
                    // Fast path: skip to the next CR or LF.
                    match input[i..].iter().position(|&c| c == b'\r' || c == b'\n') {
                        None => {
                            i = input.len();
                        }
                        Some(off) => {
                            i += off;
                            if input[i] == b'\r' {
                                self.state = DataState::Cr;
                            } else {
                                // Bare LF: store as CRLF.
                                self.emit(out, &input[run..i]);
                                self.emit(out, b"\r\n");
                                run = i + 1;
                                self.line_start = true;
                                self.line_start_crlf = false;
                            }
                            i += 1;
                        }
                    }
                }
                DataState::Cr => {
                    if b == b'\n' {
                        self.line_start = true;
                        self.line_start_crlf = true;
                        self.state = DataState::Text;
                        i += 1;
                    } else {
                        // Bare CR: content. Re-examine this byte as text.
                        self.state = DataState::Text;
                    }
                }
                DataState::Dot => {
                    if b == b'\r' {
                        // Hold the CR back: it is content only if no LF follows.
                        run = i + 1;
                        self.state = DataState::DotCr;
                        i += 1;
                    } else {
                        // A stuffed dot: the dot was dropped, this byte is text.
                        self.state = DataState::Text;
                        self.line_start_crlf = false;
                    }
                }
                DataState::DotCr => {
                    if b == b'\n' {
                        // CRLF "." CRLF: the end. The final CRLF before the dot
                        // belongs to the message.
                        self.state = DataState::Text;
                        self.line_start = true;
                        self.line_start_crlf = true;
                        return DataProgress::End { consumed: i + 1 };
                    }
                    // ".\r" followed by something else: the dot was a stuffed
                    // one; the held-back CR is content.
                    self.emit(out, b"\r");
                    run = i;
                    self.state = DataState::Text;
                    self.line_start_crlf = false;
                }
            }
        }
        self.emit(out, &input[run..]);
        DataProgress::More
    }
}

/// Dot-stuff a message for sending: every line starting with "." gets one
/// more, line ends are made CRLF, and the end-of-data sequence is appended.
/// A message that does not end with CRLF gets one (RFC 5321 4.1.1.4).
pub fn stuff(message: &[u8], out: &mut Vec<u8>) {
    out.reserve(message.len() + message.len() / 64 + 5);
    let mut line_start = true;
    let mut i = 0;
    while i < message.len() {
        if line_start && message[i] == b'.' {
            out.push(b'.');
        }
        match message[i..].iter().position(|&c| c == b'\n') {
            None => {
                out.extend_from_slice(&message[i..]);
                i = message.len();
                line_start = false;
            }
            Some(off) => {
                let end = i + off;
                let text_end = if end > i && message[end - 1] == b'\r' {
                    end - 1
                } else {
                    end
                };
                out.extend_from_slice(&message[i..text_end]);
                out.extend_from_slice(b"\r\n");
                i = end + 1;
                line_start = true;
            }
        }
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// Reverse of [`stuff`] for a complete stuffed message (with its terminator).
/// Returns `None` when no end-of-data line is present. Used by tests and fuzzing.
pub fn unstuff(stuffed: &[u8]) -> Option<Vec<u8>> {
    let mut d = DataDecoder::new(usize::MAX);
    let mut out = Vec::new();
    match d.feed(stuffed, &mut out) {
        DataProgress::End { .. } => Some(out),
        DataProgress::More => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let cases: &[(&[u8], usize, Line)] = &[
            (b"", 10, Line::Incomplete),
            (b"NOOP", 10, Line::Incomplete),
            (
                b"NOOP\r\nQUIT",
                10,
                Line::Done {
                    len: 4,
                    consumed: 6,
                },
            ),
            (
                b"NOOP\nX",
                10,
                Line::Done {
                    len: 4,
                    consumed: 5,
                },
            ),
            (
                b"\r\n",
                10,
                Line::Done {
                    len: 0,
                    consumed: 2,
                },
            ),
            (
                b"0123456789",
                10,
                Line::TooLong {
                    consumed: 10,
                    complete: false,
                },
            ),
            (
                b"0123456789ab\r\nNOOP",
                10,
                Line::TooLong {
                    consumed: 14,
                    complete: true,
                },
            ),
            (
                b"012345678\n",
                10,
                Line::Done {
                    len: 9,
                    consumed: 10,
                },
            ),
        ];
        for (input, max, want) in cases {
            assert_eq!(
                take_line(input, *max),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn commands() {
        use Command::*;
        let ok: &[(&str, Command)] = &[
            ("EHLO client.example", Ehlo("client.example".into())),
            ("ehlo [127.0.0.1]", Ehlo("[127.0.0.1]".into())),
            ("HELO x", Helo("x".into())),
            (
                "MAIL FROM:<a@b.c>",
                Mail {
                    from: Path::new("a@b.c"),
                    params: MailParams::default(),
                },
            ),
            (
                "mail from: <a@b.c>",
                Mail {
                    from: Path::new("a@b.c"),
                    params: MailParams::default(),
                },
            ),
            (
                "MAIL FROM:<>",
                Mail {
                    from: Path::null(),
                    params: MailParams::default(),
                },
            ),
            (
                "MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME SMTPUTF8",
                Mail {
                    from: Path::new("a@b.c"),
                    params: MailParams {
                        size: Some(1000),
                        body: Some(Body::EightBitMime),
                        smtputf8: true,
                    },
                },
            ),
            (
                "MAIL FROM:<a@b.c> AUTH=<>",
                Mail {
                    from: Path::new("a@b.c"),
                    params: MailParams::default(),
                },
            ),
            (
                "MAIL FROM:<@r1,@r2:a@b.c>",
                Mail {
                    from: Path::new("a@b.c"),
                    params: MailParams::default(),
                },
            ),
            (
                "MAIL FROM:<\"a b\"@c.d>",
                Mail {
                    from: Path::new("\"a b\"@c.d"),
                    params: MailParams::default(),
                },
            ),
            (
                "RCPT TO:<x@y.z>",
                Rcpt {
                    to: Path::new("x@y.z"),
                },
            ),
            (
                "RCPT TO:<jöran@exämple.se>",
                Rcpt {
                    to: Path::new("jöran@exämple.se"),
                },
            ),
            ("DATA", Data),
            ("rset", Rset),
            ("NOOP anything", Noop),
            ("QUIT", Quit),
            ("VRFY someone", Vrfy),
            ("HELP", Help),
            ("STARTTLS", StartTls),
            (
                "AUTH PLAIN",
                Auth {
                    mechanism: "PLAIN".into(),
                    initial: None,
                },
            ),
            (
                "auth plain AGEAYg==",
                Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some("AGEAYg==".into()),
                },
            ),
            (
                "AUTH LOGIN =",
                Auth {
                    mechanism: "LOGIN".into(),
                    initial: Some("=".into()),
                },
            ),
        ];
        for (line, want) in ok {
            assert_eq!(parse_command(line.as_bytes()).as_ref(), Ok(want), "{line}");
        }
        let bad: &[(&[u8], CommandError)] = &[
            (b"", CommandError::Unknown),
            (b"FOO", CommandError::Unknown),
            (b"BDAT 10 LAST", CommandError::Unknown),
            (b"EHLO", CommandError::Syntax("EHLO/HELO needs a domain")),
            (
                b"MAIL <a@b>",
                CommandError::Syntax("expected MAIL FROM:<address>"),
            ),
            (
                b"MAIL FROM:a@b.c",
                CommandError::Syntax("address must be in angle brackets"),
            ),
            (
                b"MAIL FROM:<a@b.c",
                CommandError::Syntax("missing closing '>'"),
            ),
            (
                b"MAIL FROM:<a@b.c>x",
                CommandError::Syntax("garbage after address"),
            ),
            (
                b"MAIL FROM:<ab.c>",
                CommandError::Syntax("address needs local@domain"),
            ),
            (
                b"MAIL FROM:<a b@c.d>",
                CommandError::Syntax("bad character in local part"),
            ),
            // fuzz/corpus/smtp_command/regression-at-in-local-part
            (
                b"mail from: <@rela]e:@0u@60t>",
                CommandError::Syntax("bad character in local part"),
            ),
            (
                b"RCPT TO:<a@b@c.d>",
                CommandError::Syntax("bad character in local part"),
            ),
            (
                b"RCPT TO:<\"a\rb\"@c.d>",
                CommandError::Syntax("control character in local part"),
            ),
            (b"MAIL FROM:<a@b..c>", CommandError::Syntax("bad domain")),
            (
                b"MAIL FROM:<a@b.c> SIZE=x",
                CommandError::Syntax("SIZE needs a number"),
            ),
            (
                b"MAIL FROM:<a@b.c> RET=FULL",
                CommandError::UnsupportedParam("RET=FULL".into()),
            ),
            (
                b"MAIL FROM:<a@b.c> BODY=BINARYMIME",
                CommandError::UnsupportedParam("BODY=BINARYMIME".into()),
            ),
            (
                b"RCPT TO:<>",
                CommandError::Syntax("empty recipient address"),
            ),
            (
                b"RCPT TO:<a@b.c> NOTIFY=NEVER",
                CommandError::UnsupportedParam("NOTIFY=NEVER".into()),
            ),
            (
                b"DATA x",
                CommandError::Syntax("this command takes no arguments"),
            ),
            (b"AUTH", CommandError::Syntax("AUTH needs a mechanism")),
            (
                b"AUTH PL/AIN",
                CommandError::Syntax("bad SASL mechanism name"),
            ),
            (
                b"AUTH PLAIN a b",
                CommandError::Syntax("AUTH takes a mechanism and one response"),
            ),
            (b"NOOP\0", CommandError::BadBytes),
            (b"NOOP \xff", CommandError::BadBytes),
        ];
        for (line, want) in bad {
            assert_eq!(
                parse_command(line).as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn reply_encoding() {
        let r = Reply::plain(
            250,
            vec!["host".into(), "PIPELINING".into(), "SIZE 10".into()],
        );
        assert_eq!(
            r.to_bytes(),
            b"250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
        let r = Reply::new(535, "5.7.8", "bad\r\ncredentials");
        assert_eq!(r.to_bytes(), b"535 5.7.8 bad  credentials\r\n");
        assert_eq!(r.enhanced(), Some("5.7.8"));
        assert_eq!(Reply::plain(220, vec!["hi there".into()]).enhanced(), None);
        assert_eq!(Reply::plain(250, vec![]).to_bytes(), b"250 \r\n");
    }

    #[test]
    fn reply_parsing() {
        let cases: &[(&[u8], Result<ReplyParse, ReplyError>)] = &[
            (b"", Ok(ReplyParse::Incomplete)),
            (b"250 ok", Ok(ReplyParse::Incomplete)),
            (
                b"250 ok\r\nX",
                Ok(ReplyParse::Done(Reply::plain(250, vec!["ok".into()]), 8)),
            ),
            (
                b"250\r\n",
                Ok(ReplyParse::Done(Reply::plain(250, vec!["".into()]), 5)),
            ),
            (
                b"250-a\r\n250-b\r\n250 c\r\n",
                Ok(ReplyParse::Done(
                    Reply::plain(250, vec!["a".into(), "b".into(), "c".into()]),
                    21,
                )),
            ),
            (b"250-a\r\n250", Ok(ReplyParse::Incomplete)),
            (b"250-a\r\n251 b\r\n", Err(ReplyError::CodeMismatch)),
            (b"25 x\r\n", Err(ReplyError::Malformed)),
            (b"abc x\r\n", Err(ReplyError::Malformed)),
            (b"250x\r\n", Err(ReplyError::Malformed)),
            (b"199 x\r\n", Err(ReplyError::Malformed)),
            (b"600 x\r\n", Err(ReplyError::Malformed)),
        ];
        for (input, want) in cases {
            assert_eq!(
                &parse_reply(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = vec![b'2'; MAX_REPLY_LINE + 10];
        assert_eq!(parse_reply(&long), Err(ReplyError::TooLong));
        let mut many = Vec::new();
        for _ in 0..MAX_REPLY_LINES + 1 {
            many.extend_from_slice(b"250-x\r\n");
        }
        assert_eq!(parse_reply(&many), Err(ReplyError::TooManyLines));
    }

    fn decode_all(input: &[u8], max: usize) -> (Vec<u8>, Option<usize>, bool) {
        let mut d = DataDecoder::new(max);
        let mut out = Vec::new();
        match d.feed(input, &mut out) {
            DataProgress::End { consumed } => (out, Some(consumed), d.oversize()),
            DataProgress::More => (out, None, d.oversize()),
        }
    }

    #[test]
    fn data_known_answers() {
        let cases: &[(&[u8], &[u8], Option<usize>)] = &[
            (b".\r\n", b"", Some(3)),
            (b"a\r\n.\r\n", b"a\r\n", Some(6)),
            (b"a\r\n.\r\nQUIT\r\n", b"a\r\n", Some(6)),
            (b"..a\r\n.\r\n", b".a\r\n", Some(8)),
            (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", Some(10)),
            (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n", Some(11)),
            (b"a\n.\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", Some(10)),
            (b"a\n.\r\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", Some(11)),
            (b"a\r\n.\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", Some(11)),
            (b"a\rb\r\n.\r\n", b"a\rb\r\n", Some(8)),
            (b"a\r\n.\rb\r\n.\r\n", b"a\r\n\rb\r\n", Some(11)),
            (b"a\r\n.x", b"a\r\nx", None),
            (b"no end", b"no end", None),
        ];
        for (input, want, end) in cases {
            let (out, consumed, _) = decode_all(input, 1 << 20);
            assert_eq!(
                (out.as_slice(), consumed),
                (*want, *end),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn data_size_cap() {
        let (out, end, over) = decode_all(b"0123456789\r\n.\r\n", 5);
        assert_eq!((out.len(), end, over), (0, Some(15), true));
        let (out, end, over) = decode_all(b"0123\r\n.\r\n", 6);
        assert_eq!((out, end, over), (b"0123\r\n".to_vec(), Some(9), false));
    }

    #[test]
    fn stuffing() {
        let mut out = Vec::new();
        stuff(b".a\r\nb\n.\r\nc", &mut out);
        assert_eq!(out, b"..a\r\nb\r\n..\r\nc\r\n.\r\n");
        assert_eq!(unstuff(&out).unwrap(), b".a\r\nb\r\n.\r\nc\r\n");
        out.clear();
        stuff(b"", &mut out);
        assert_eq!(out, b".\r\n");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn crlf_message() -> impl Strategy<Value = Vec<u8>> {
            // Lines of arbitrary bytes without CR/LF, each ended by CRLF.
            proptest::collection::vec(
                proptest::collection::vec(
                    any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
                    0..20,
                )
                .prop_map(|mut l| {
                    if !l.is_empty() && l[0] != b'.' && l.len() % 3 == 0 {
                        l.insert(0, b'.');
                    }
                    l
                }),
                0..20,
            )
            .prop_map(|lines| {
                let mut m = Vec::new();
                for l in lines {
                    m.extend_from_slice(&l);
                    m.extend_from_slice(b"\r\n");
                }
                m
            })
        }

        proptest! {
            #[test]
            fn unstuff_stuff_roundtrip(m in crlf_message()) {
                let mut s = Vec::new();
                stuff(&m, &mut s);
                prop_assert_eq!(unstuff(&s).unwrap(), m);
            }

            #[test]
            fn any_split_same_result(input in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64), cuts in proptest::collection::vec(0usize..64, 0..8)) {
                let mut whole = DataDecoder::new(1 << 20);
                let mut want = Vec::new();
                let want_end = match whole.feed(&input, &mut want) { DataProgress::End { consumed } => Some(consumed), _ => None };
                let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= input.len()).collect();
                cuts.sort_unstable();
                cuts.push(input.len());
                let mut d = DataDecoder::new(1 << 20);
                let mut got = Vec::new();
                let mut prev = 0;
                let mut got_end = None;
                for c in cuts {
                    if let DataProgress::End { consumed } = d.feed(&input[prev..c], &mut got) {
                        got_end = Some(prev + consumed);
                        break;
                    }
                    prev = c;
                }
                prop_assert_eq!(got, want);
                prop_assert_eq!(got_end, want_end);
            }

            #[test]
            fn commands_never_panic(line in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse_command(&line);
            }

            #[test]
            fn reply_encode_parse_roundtrip(
                code in 200u16..600,
                lines in proptest::collection::vec("[ -~]{0,80}", 1..6),
            ) {
                let r = Reply::plain(code, lines);
                let bytes = r.to_bytes();
                prop_assert_eq!(parse_reply(&bytes), Ok(ReplyParse::Done(r, bytes.len())));
            }

            #[test]
            fn replies_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse_reply(&buf);
            }
        }
    }
}
