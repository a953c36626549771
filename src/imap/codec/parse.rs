//! Parse errors and the cursor the command and response parsers read a
//! frame with.

use super::syntax::{is_astring_char, is_atom_char, leading_tag, IdParams, Tag};

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
    pub(super) fn new(tag: Option<&Tag>, kind: ParseErrorKind) -> ParseError {
        ParseError {
            tag: tag.cloned(),
            kind,
        }
    }
}

pub(super) type Kind = ParseErrorKind;

pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub(super) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect(&mut self, b: u8, kind: Kind) -> Result<(), Kind> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(kind)
        }
    }

    pub(super) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        &self.buf[start..self.pos]
    }

    /// `CRLF`, or a bare LF.
    pub(super) fn line_end(&mut self) -> bool {
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

    pub(super) fn at_line_end(&self) -> bool {
        let rest = self.rest();
        rest.starts_with(b"\r\n") || rest.starts_with(b"\n")
    }

    /// The line end, and nothing after it.
    pub(super) fn finish(&mut self) -> Result<(), Kind> {
        if !self.line_end() {
            return Err(Kind::LineEnd);
        }
        if self.pos != self.buf.len() {
            return Err(Kind::Trailing);
        }
        Ok(())
    }

    /// Everything up to the line end.
    pub(super) fn text(&mut self) -> &'a [u8] {
        self.take_while(|b| b != b'\r' && b != b'\n')
    }

    /// `nil = "NIL"`, case-insensitive, as a whole atom.
    pub(super) fn nil(&mut self) -> bool {
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
    pub(super) fn atom(&mut self) -> &'a str {
        let bytes = self.take_while(is_atom_char);
        // ATOM-CHARs are ASCII.
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    /// `tag = 1*<any ASTRING-CHAR except "+">`, followed by SP or a line end.
    pub(super) fn tag(&mut self) -> Option<Tag> {
        let tag = leading_tag(self.rest())?;
        self.pos += tag.0.len();
        Some(tag)
    }

    /// ```abnf
    /// astring = 1*ASTRING-CHAR / string
    /// string  = quoted / literal
    /// ```
    pub(super) fn astring(&mut self) -> Result<Vec<u8>, Kind> {
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
    pub(super) fn string(&mut self, otherwise: Kind) -> Result<Vec<u8>, Kind> {
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
    pub(super) fn quoted(&mut self) -> Result<Vec<u8>, Kind> {
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
    pub(super) fn literal(&mut self) -> Result<Vec<u8>, Kind> {
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
    pub(super) fn nstring(&mut self, otherwise: Kind) -> Result<Option<Vec<u8>>, Kind> {
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
    pub(super) fn id_params(&mut self) -> Result<IdParams, Kind> {
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
    pub(super) fn capabilities(&mut self) -> Result<Vec<String>, Kind> {
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

pub(super) fn utf8(bytes: Vec<u8>) -> Result<String, Kind> {
    String::from_utf8(bytes).map_err(|_| Kind::Utf8)
}
