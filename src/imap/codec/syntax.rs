//! The lexical pieces every part of the codec shares: RFC 9051 section 9
//! character classes and the command tag.

use std::fmt;

/// ```abnf
/// ATOM-CHAR       = <any CHAR except atom-specials>
/// atom-specials   = "(" / ")" / "{" / SP / CTL / list-wildcards /
///                   quoted-specials / resp-specials
/// list-wildcards  = "%" / "*"
/// quoted-specials = DQUOTE / "\"
/// resp-specials   = "]"
/// ```
pub(super) fn is_atom_char(b: u8) -> bool {
    matches!(b, 0x21..=0x7e) && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// `ASTRING-CHAR = ATOM-CHAR / resp-specials`
pub(super) fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// `tag = 1*<any ASTRING-CHAR except "+">`
pub(super) fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

/// `base64-char = ALPHA / DIGIT / "+" / "/"`
pub(super) fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// ```abnf
/// base64          = *(4base64-char) [base64-terminal]
/// base64-terminal = (2base64-char "==") / (3base64-char "=")
/// ```
pub(super) fn is_base64(s: &[u8]) -> bool {
    if s.len() % 4 != 0 {
        return false;
    }
    let pad = s.iter().rev().take_while(|&&b| b == b'=').count();
    pad <= 2 && s[..s.len() - pad].iter().all(|&b| is_base64_char(b))
}

pub(super) fn is_atom(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_atom_char)
}

/// A command tag, checked against `tag = 1*<any ASTRING-CHAR except "+">`.
/// Kept byte for byte as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag(pub(super) String);

impl Tag {
    /// `None` unless `s` is a valid tag.
    pub fn new(s: &str) -> Option<Tag> {
        is_tag(s.as_bytes()).then(|| Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(super) fn is_tag(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tag_char(b))
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tag at the start of a frame, if it is complete (followed by SP or a
/// line end) and valid. Used to address error replies.
pub(super) fn leading_tag(frame: &[u8]) -> Option<Tag> {
    let end = frame.iter().position(|&b| !is_tag_char(b))?;
    if end == 0 || !matches!(frame[end], b' ' | b'\r' | b'\n') {
        return None;
    }
    // Tag characters are ASCII, so this is lossless.
    Some(Tag(String::from_utf8_lossy(&frame[..end]).into_owned()))
}

/// RFC 2971 ID parameters: `None` for `NIL`, else (field, value) pairs.
pub type IdParams = Option<Vec<(String, Option<String>)>>;
