//! Encoding the commands Postern sends upstream and the responses it sends
//! to the local client.

use super::command::{AuthResponse, Command, CommandKind};
use super::frame::Tail;
use super::response::{has_capability, Code, Response, Status};
use super::syntax::IdParams;
use super::syntax::{is_atom, is_base64};

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

    pub(super) fn non_sync(self, size: usize) -> bool {
        match self {
            LiteralSupport::SyncOnly => false,
            LiteralSupport::Plus => true,
            LiteralSupport::Minus => size <= 4096,
        }
    }
}

/// Output split where the sender must wait for a continuation request.
pub(super) struct Out {
    parts: Vec<Vec<u8>>,
    cur: Vec<u8>,
}

/// How a literal is written: in a command (per the server's support), or in a
/// response (`{n}`, which the server sends without waiting).
#[derive(Clone, Copy)]
pub(super) enum Literals {
    Command(LiteralSupport),
    Response,
}

impl Out {
    pub(super) fn new() -> Out {
        Out {
            parts: Vec::new(),
            cur: Vec::new(),
        }
    }

    pub(super) fn put(&mut self, bytes: &[u8]) {
        self.cur.extend_from_slice(bytes);
    }

    pub(super) fn finish(mut self) -> Vec<Vec<u8>> {
        self.cur.extend_from_slice(b"\r\n");
        self.parts.push(self.cur);
        self.parts
    }

    /// `string = quoted / literal`: quoted for 7-bit text without CR/LF,
    /// a literal for anything else.
    pub(super) fn string(&mut self, s: &str, literals: Literals) -> Result<(), EncodeError> {
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

    pub(super) fn atom(&mut self, s: &str) -> Result<(), EncodeError> {
        if !is_atom(s) {
            return Err(EncodeError::Atom);
        }
        self.put(s.as_bytes());
        Ok(())
    }

    pub(super) fn id_params(
        &mut self,
        params: &IdParams,
        literals: Literals,
    ) -> Result<(), EncodeError> {
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
pub(super) fn clean_continue_text(text: &str) -> String {
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
pub(super) fn clean_status_text(text: &str, has_code: bool) -> String {
    let mut out = clean_continue_text(text);
    if !has_code && out.starts_with('[') {
        out.replace_range(..1, "(");
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

pub(super) fn put_capabilities(out: &mut Out, caps: &[String]) -> Result<(), EncodeError> {
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
