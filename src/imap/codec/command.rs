//! The pre-login commands a client sends (RFC 9051 not-authenticated state,
//! ID from RFC 2971, SASL-IR from RFC 4959) and AUTHENTICATE's client lines.

use crate::secret::Secret;

use super::parse::{utf8, Cursor, Kind, ParseError};
use super::syntax::{is_base64, IdParams, Tag};

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

pub(super) fn command_kind(c: &mut Cursor<'_>) -> Result<CommandKind, Kind> {
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
