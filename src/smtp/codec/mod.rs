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
mod tests;
