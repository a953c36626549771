//! SASL, sans-I/O: the bytes of the PLAIN (RFC 4616), LOGIN, XOAUTH2 (Google)
//! and OAUTHBEARER (RFC 7628) mechanisms, and the RFC 4954 base64 wrapping of
//! each client response line.
//!
//! This module owns encoding and decoding only. It does no I/O, keeps no
//! session state, checks no credentials and knows nothing of SMTP or IMAP
//! framing: the caller hands it one response line with the CRLF already
//! removed. Passwords and tokens come out as [`Secret`]; no error value carries
//! a byte of the input, so an error can be logged or sent as a reply as is.
//!
//! Every decoder is total: any input gives `Ok` or `Err`, never a panic.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::secret::Secret;

/// A SASL mechanism this gateway speaks, on either side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Login,
    XOAuth2,
    OAuthBearer,
}

impl Mechanism {
    /// Every mechanism, in the order a server would advertise them.
    pub const ALL: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::XOAuth2,
        Mechanism::OAuthBearer,
    ];

    /// The mechanism named by `name`. RFC 4422 §3.1: mechanism names are
    /// compared case-insensitively (IMAP and SMTP clients send them as typed).
    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// The registered name, upper case, as advertised on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client response was refused. Variants carry no input bytes (only
/// static text), so the message is safe to log and to send back.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum SaslError {
    /// The client sent `*` (RFC 4954 §4): it gives up on this exchange.
    #[error("authentication cancelled by the client")]
    Cancelled,
    /// Not strict base64 (standard alphabet, canonical padding, no spaces).
    #[error("response is not valid base64")]
    BadBase64,
    /// The decoded response would exceed [`MAX_RESPONSE`].
    #[error("response is too long")]
    TooLong,
    /// A single field exceeds [`MAX_FIELD`] octets.
    #[error("a field of the response is too long")]
    FieldTooLong,
    /// Text where UTF-8 is required is not UTF-8.
    #[error("response is not valid UTF-8")]
    NotUtf8,
    /// The response does not follow the mechanism's grammar; the text says
    /// which rule failed.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// Upper bound on a decoded response; [`decode_response`] refuses anything
/// longer with [`SaslError::TooLong`].
pub const MAX_RESPONSE: usize = 16 * 1024;

/// Upper bound, in octets, on each PLAIN field and each LOGIN answer. RFC 4616
/// §2 requires servers to accept up to 255 octets; we accept no more, which
/// keeps identities and passwords short enough for any log line or store.
pub const MAX_FIELD: usize = 255;

/// Longest base64 text that can decode to [`MAX_RESPONSE`] bytes. Checked
/// before decoding so an oversized line is refused without a decode pass.
const MAX_ENCODED: usize = 4 * MAX_RESPONSE.div_ceil(3);

/// Decode one client response line (CRLF already removed).
///
/// RFC 4954 §4: the response is base64; a line of `*` cancels the exchange
/// (gives [`SaslError::Cancelled`]); a lone `=` is an empty response (the form
/// RFC 4954 uses for an empty initial response). An empty line is also an
/// empty response, being the base64 of nothing (RFC 3501 AUTHENTICATE, and the
/// way clients acknowledge an XOAUTH2 error challenge). Otherwise the decoding
/// is strict: standard alphabet, canonical padding, nothing trimmed.
pub fn decode_response(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    match line {
        b"*" => return Err(SaslError::Cancelled),
        b"=" => return Ok(Vec::new()),
        _ => {}
    }
    if line.len() > MAX_ENCODED {
        return Err(SaslError::TooLong);
    }
    let raw = STANDARD.decode(line).map_err(|_| SaslError::BadBase64)?;
    // A full-length line can still decode to up to two bytes over the cap.
    if raw.len() > MAX_RESPONSE {
        return Err(SaslError::TooLong);
    }
    Ok(raw)
}

/// Base64 for the wire (standard alphabet, padded). Empty input encodes as
/// `=`, the RFC 4954 form of an empty initial response.
pub fn encode_response(raw: &[u8]) -> String {
    if raw.is_empty() {
        "=".to_owned()
    } else {
        STANDARD.encode(raw)
    }
}

// ---------------------------------------------------------------------------
// PLAIN (RFC 4616)

/// The three fields of a PLAIN response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plain {
    /// Identity to act as; empty means "the same as `authcid`".
    pub authzid: String,
    /// Identity whose password this is.
    pub authcid: String,
    pub password: Secret,
}

/// Decode a PLAIN response (already base64-decoded).
///
/// ```text
/// ; RFC 4616 §2
/// message   = [authzid] UTF8NUL authcid UTF8NUL passwd
/// authcid   = 1*SAFE ; MUST accept up to 255 octets
/// authzid   = 1*SAFE ; MUST accept up to 255 octets
/// passwd    = 1*SAFE ; MUST accept up to 255 octets
/// SAFE      = UTF1 / UTF2 / UTF3 / UTF4 ; any UTF-8 except NUL
/// ```
pub fn plain_decode(raw: &[u8]) -> Result<Plain, SaslError> {
    let text = std::str::from_utf8(raw).map_err(|_| SaslError::NotUtf8)?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslError::Malformed("PLAIN needs two NUL separators"));
    };
    if fields.next().is_some() {
        return Err(SaslError::Malformed("NUL inside a PLAIN field"));
    }
    if [authzid, authcid, password]
        .iter()
        .any(|f| f.len() > MAX_FIELD)
    {
        return Err(SaslError::FieldTooLong);
    }
    if authcid.is_empty() {
        return Err(SaslError::Malformed("empty PLAIN authcid"));
    }
    if password.is_empty() {
        return Err(SaslError::Malformed("empty PLAIN password"));
    }
    Ok(Plain {
        authzid: authzid.to_owned(),
        authcid: authcid.to_owned(),
        password: Secret::new(password),
    })
}

/// Encode a PLAIN response (before base64). The caller passes validated
/// values: no NUL in any field, and non-empty `authcid` and password, or the
/// peer will refuse the result.
pub fn plain_encode(authzid: &str, authcid: &str, password: &Secret) -> Vec<u8> {
    let password = password.expose().as_bytes();
    let mut out = Vec::with_capacity(authzid.len() + authcid.len() + password.len() + 2);
    out.extend_from_slice(authzid.as_bytes());
    out.push(0);
    out.extend_from_slice(authcid.as_bytes());
    out.push(0);
    out.extend_from_slice(password);
    out
}

// ---------------------------------------------------------------------------
// LOGIN (draft-murchison-sasl-login): two server prompts, one answer each.

/// First LOGIN challenge: base64 of `Username:`.
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// Second LOGIN challenge: base64 of `Password:`.
pub const LOGIN_PASS_PROMPT: &str = "UGFzc3dvcmQ6";

/// Decode one LOGIN answer (already base64-decoded), the username or the
/// password: UTF-8, non-empty, no NUL, at most [`MAX_FIELD`] octets. The
/// caller wraps a password answer in a [`Secret`] at once.
pub fn login_field(raw: &[u8]) -> Result<String, SaslError> {
    let text = std::str::from_utf8(raw).map_err(|_| SaslError::NotUtf8)?;
    if text.is_empty() {
        return Err(SaslError::Malformed("empty LOGIN field"));
    }
    if text.contains('\0') {
        return Err(SaslError::Malformed("NUL inside a LOGIN field"));
    }
    if text.len() > MAX_FIELD {
        return Err(SaslError::FieldTooLong);
    }
    Ok(text.to_owned())
}

// ---------------------------------------------------------------------------
// XOAUTH2 and OAUTHBEARER

/// A bearer-token response, from XOAUTH2 or OAUTHBEARER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    /// XOAUTH2 `user=`; OAUTHBEARER gs2 authzid `a=` (unescaped), empty when
    /// the client left it out.
    pub user: String,
    pub token: Secret,
    /// OAUTHBEARER `host=`; always `None` for XOAUTH2.
    pub host: Option<String>,
    /// OAUTHBEARER `port=`; always `None` for XOAUTH2.
    pub port: Option<u16>,
}

/// Key-value separator, `kvsep = %x01` (RFC 7628 §3.1; XOAUTH2 uses the same).
const KVSEP: u8 = 0x01;

/// Encode an XOAUTH2 response (before base64), Google's format:
/// `"user=" {user} ^A "auth=Bearer " {token} ^A ^A`.
pub fn xoauth2_encode(user: &str, token: &Secret) -> Vec<u8> {
    let mut out = Vec::with_capacity(user.len() + token.expose().len() + 20);
    push_kv(&mut out, "user", user);
    push_auth(&mut out, token);
    out.push(KVSEP);
    out
}

/// Decode an XOAUTH2 response (already base64-decoded). The pairs are read
/// like RFC 7628 key-value pairs: `user` and `auth` are required, in any
/// order; unknown keys are ignored.
pub fn xoauth2_decode(raw: &[u8]) -> Result<Bearer, SaslError> {
    let text = std::str::from_utf8(raw).map_err(|_| SaslError::NotUtf8)?;
    let body = text
        .strip_suffix("\x01\x01")
        .ok_or(SaslError::Malformed("XOAUTH2 must end with two ^A"))?;
    let pairs = KvPairs::parse(body)?;
    let user = pairs
        .get("user")
        .ok_or(SaslError::Malformed("XOAUTH2 without user"))?;
    if user.is_empty() {
        return Err(SaslError::Malformed("XOAUTH2 with empty user"));
    }
    let token = bearer_token(pairs.get("auth"))?;
    Ok(Bearer {
        user: user.to_owned(),
        token,
        host: None,
        port: None,
    })
}

/// Encode an OAUTHBEARER initial response (before base64), RFC 7628 §3.1:
/// `"n," ["a=" saslname] "," ^A "host=" H ^A "port=" P ^A "auth=Bearer " T ^A ^A`.
/// An empty `user` leaves the authzid out. `,` and `=` in `user` are escaped
/// as `=2C` and `=3D` (RFC 5801 §4).
pub fn oauthbearer_encode(user: &str, host: &str, port: u16, token: &Secret) -> Vec<u8> {
    let mut out = Vec::with_capacity(user.len() + host.len() + token.expose().len() + 40);
    out.extend_from_slice(b"n,");
    if !user.is_empty() {
        out.extend_from_slice(b"a=");
        for c in user.chars() {
            match c {
                ',' => out.extend_from_slice(b"=2C"),
                '=' => out.extend_from_slice(b"=3D"),
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
    }
    out.push(b',');
    out.push(KVSEP);
    push_kv(&mut out, "host", host);
    push_kv(&mut out, "port", &port.to_string());
    push_auth(&mut out, token);
    out.push(KVSEP);
    out
}

/// Decode an OAUTHBEARER initial response (already base64-decoded).
///
/// ```text
/// ; RFC 7628 §3.1
/// kvsep          = %x01
/// key            = 1*(ALPHA)
/// value          = *(VCHAR / SP / HTAB / CR / LF )
/// kvpair         = key "=" value kvsep
/// client-resp    = (gs2-header kvsep *kvpair kvsep) / kvsep
/// ```
/// `auth` is required; `host` and `port` are optional; unknown keys are
/// ignored. The bare `kvsep` form (the answer to an error challenge) is not an
/// initial response and is refused here.
pub fn oauthbearer_decode(raw: &[u8]) -> Result<Bearer, SaslError> {
    let text = std::str::from_utf8(raw).map_err(|_| SaslError::NotUtf8)?;
    let body = text
        .strip_suffix("\x01\x01")
        .ok_or(SaslError::Malformed("OAUTHBEARER must end with two ^A"))?;
    // The header cannot hold ^A (we refuse it in the authzid), so the first
    // ^A ends it.
    let (header, pairs) = match body.split_once('\x01') {
        Some((header, pairs)) => (header, KvPairs::parse(pairs)?),
        None => (body, KvPairs::default()),
    };
    let user = gs2_authzid(header)?;
    let token = bearer_token(pairs.get("auth"))?;
    let port = pairs.get("port").map(parse_port).transpose()?;
    Ok(Bearer {
        user,
        token,
        host: pairs.get("host").map(str::to_owned),
        port,
    })
}

/// The authzid of a GS2 header, unescaped; empty if absent.
///
/// ```text
/// ; RFC 5801 §4
/// gs2-header      = [gs2-nonstd-flag ","] gs2-cb-flag "," [gs2-authzid] ","
/// gs2-nonstd-flag = "F"
/// gs2-cb-flag     = ("p=" cb-name) / "n" / "y"
/// gs2-authzid     = "a=" saslname
/// saslname        = 1*(UTF8-char-safe / "=2C" / "=3D")
/// UTF8-char-safe  = any UTF-8 but NUL, "=" and ","
/// ```
/// OAUTHBEARER has no channel binding (RFC 7628 §3.1), so `p=` is refused.
fn gs2_authzid(header: &str) -> Result<String, SaslError> {
    let header = header.strip_prefix("F,").unwrap_or(header);
    let rest = match header.split_once(',') {
        Some(("n" | "y", rest)) => rest,
        Some((flag, _)) if flag.starts_with("p=") => {
            return Err(SaslError::Malformed("OAUTHBEARER has no channel binding"))
        }
        _ => return Err(SaslError::Malformed("bad gs2 channel-binding flag")),
    };
    let authzid = rest
        .strip_suffix(',')
        .ok_or(SaslError::Malformed("gs2 header must end with ','"))?;
    if authzid.is_empty() {
        return Ok(String::new());
    }
    let name = authzid
        .strip_prefix("a=")
        .ok_or(SaslError::Malformed("bad gs2 authzid"))?;
    if name.is_empty() {
        return Err(SaslError::Malformed("empty gs2 authzid"));
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '=' => match (chars.next(), chars.next()) {
                (Some('2'), Some('C')) => out.push(','),
                (Some('3'), Some('D')) => out.push('='),
                _ => return Err(SaslError::Malformed("bad '=' escape in gs2 authzid")),
            },
            ',' => return Err(SaslError::Malformed("unescaped ',' in gs2 authzid")),
            '\0' | '\x01' => return Err(SaslError::Malformed("control character in gs2 authzid")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The key-value pairs between the header and the final `^A`, split on `^A`.
#[derive(Default)]
struct KvPairs<'a>(Vec<(&'a str, &'a str)>);

impl<'a> KvPairs<'a> {
    /// `pairs` is `kvpair *(kvsep kvpair)` with the trailing separators gone.
    fn parse(pairs: &'a str) -> Result<Self, SaslError> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for pair in pairs.split('\x01') {
            let (key, value) = pair
                .split_once('=')
                .ok_or(SaslError::Malformed("key-value pair without '='"))?;
            // key = 1*(ALPHA)
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(SaslError::Malformed("bad key in key-value pair"));
            }
            if value.contains('\0') {
                return Err(SaslError::Malformed("NUL in key-value pair"));
            }
            if out.iter().any(|(k, _)| *k == key) {
                return Err(SaslError::Malformed("duplicate key in key-value pairs"));
            }
            out.push((key, value));
        }
        Ok(KvPairs(out))
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// The token of an `auth` value.
///
/// ```text
/// ; RFC 6750 §2.1 (scheme name case-insensitive per RFC 7235 §2.1)
/// credentials = "Bearer" 1*SP b64token
/// b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
/// ```
fn bearer_token(auth: Option<&str>) -> Result<Secret, SaslError> {
    let auth = auth.ok_or(SaslError::Malformed("no auth value"))?;
    let (scheme, rest) = auth.split_once(' ').ok_or(SaslError::Malformed(
        "auth value is not \"Bearer\" SP token",
    ))?;
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(SaslError::Malformed("auth scheme is not Bearer"));
    }
    let token = rest.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err(SaslError::Malformed("bearer token is not a b64token"));
    }
    Ok(Secret::new(token))
}

fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// `port=` value: 1 to 5 decimal digits, at most 65535.
fn parse_port(value: &str) -> Result<u16, SaslError> {
    if value.is_empty() || value.len() > 5 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SaslError::Malformed("bad port"));
    }
    value.parse().map_err(|_| SaslError::Malformed("bad port"))
}

fn push_kv(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.push(KVSEP);
}

fn push_auth(out: &mut Vec<u8>, token: &Secret) {
    out.extend_from_slice(b"auth=Bearer ");
    out.extend_from_slice(token.expose().as_bytes());
    out.push(KVSEP);
}

// ---------------------------------------------------------------------------
// Bearer error challenge

/// The JSON a server sends as a challenge after refusing a bearer token.
/// XOAUTH2 (Google): `{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}`;
/// OAUTHBEARER (RFC 7628 §3.2.2): `{"status":"invalid_token","scope":"…",…}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BearerError {
    pub status: String,
    pub scope: Option<String>,
    pub schemes: Option<String>,
}

/// Read an error challenge (already base64-decoded). `None` unless it is a
/// JSON object with a `status`; `status` may be a string or (tolerated) a
/// number. `scope` and `schemes` are kept when they are strings; other
/// members (`openid-configuration`, …) are ignored.
pub fn bearer_error_decode(raw: &[u8]) -> Option<BearerError> {
    let value: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let object = value.as_object()?;
    let status = match object.get("status")? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let string = |key: &str| object.get(key)?.as_str().map(str::to_owned);
    Some(BearerError {
        status,
        scope: string("scope"),
        schemes: string("schemes"),
    })
}

/// What the client answers to an error challenge before the server sends the
/// final failure: XOAUTH2 an empty response, OAUTHBEARER a single `^A` (RFC
/// 7628 §3.2.3). PLAIN and LOGIN have no such challenge; they get the empty
/// response too.
pub fn bearer_error_ack(mech: Mechanism) -> &'static [u8] {
    match mech {
        Mechanism::OAuthBearer => b"\x01",
        Mechanism::XOAuth2 | Mechanism::Plain | Mechanism::Login => b"",
    }
}

#[cfg(test)]
mod tests;
