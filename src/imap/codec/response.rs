//! The responses a client needs to log in: greeting, CAPABILITY, tagged
//! status, continuation.

use super::parse::{Cursor, Kind, ParseError};
use super::syntax::IdParams;
use super::syntax::Tag;

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
    pub(super) fn as_str(self) -> &'static str {
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

pub(super) fn untagged(c: &mut Cursor<'_>, frame: &[u8]) -> Result<Response, Kind> {
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

pub(super) fn tagged(c: &mut Cursor<'_>, tag: Tag) -> Result<Response, Kind> {
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
pub(super) fn resp_text(c: &mut Cursor<'_>) -> Result<(Option<Code>, String), Kind> {
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
