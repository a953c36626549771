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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One known-answer row: input bytes and the expected result.
    type Case<'a, T> = (&'a [u8], Result<T, SaslError>);

    fn b64(raw: &[u8]) -> Vec<u8> {
        STANDARD.encode(raw).into_bytes()
    }

    // -- Mechanism ---------------------------------------------------------

    #[test]
    fn mechanism_names() {
        let table: &[(&str, Option<Mechanism>)] = &[
            ("PLAIN", Some(Mechanism::Plain)),
            ("plain", Some(Mechanism::Plain)),
            ("Login", Some(Mechanism::Login)),
            ("XOAUTH2", Some(Mechanism::XOAuth2)),
            ("xoauth2", Some(Mechanism::XOAuth2)),
            ("OAuthBearer", Some(Mechanism::OAuthBearer)),
            ("XOAUTH", None),
            ("CRAM-MD5", None),
            ("PLAIN ", None),
            ("", None),
        ];
        for (name, want) in table {
            assert_eq!(Mechanism::parse(name), *want, "{name:?}");
        }
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.as_str()), Some(m));
            assert_eq!(m.to_string(), m.as_str());
        }
    }

    // -- RFC 4954 base64 ---------------------------------------------------

    #[test]
    fn decode_response_table() {
        let table: &[Case<&[u8]>] = &[
            (b"=", Ok(b"")),
            (b"", Ok(b"")),
            (b"*", Err(SaslError::Cancelled)),
            (b"dGVzdA==", Ok(b"test")),
            (
                b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm",
                Ok(b"\0tim\0tanstaaftanstaaf"),
            ),
            // bad padding: missing, partial, extra, non-canonical trailing bits
            (b"dGVzdA", Err(SaslError::BadBase64)),
            (b"dGVzdA=", Err(SaslError::BadBase64)),
            (b"dGVzdA===", Err(SaslError::BadBase64)),
            (b"dGVzdB==", Err(SaslError::BadBase64)),
            // nothing trimmed, standard alphabet only
            (b"dGVzdA==\r\n", Err(SaslError::BadBase64)),
            (b" dGVzdA==", Err(SaslError::BadBase64)),
            (b"dGVz dA==", Err(SaslError::BadBase64)),
            (b"-_-_", Err(SaslError::BadBase64)),
            (b"==", Err(SaslError::BadBase64)),
            (b"**", Err(SaslError::BadBase64)),
            (b"\xff\xfe", Err(SaslError::BadBase64)),
        ];
        for (line, want) in table {
            assert_eq!(
                decode_response(line),
                want.map(<[u8]>::to_vec),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn decode_response_length_cap() {
        let at_cap = vec![b'x'; MAX_RESPONSE];
        assert_eq!(decode_response(&b64(&at_cap)), Ok(at_cap));
        // Same encoded length as the cap, one decoded byte over.
        let over = b64(&[b'x'; MAX_RESPONSE + 1]);
        assert_eq!(over.len(), MAX_ENCODED);
        assert_eq!(decode_response(&over), Err(SaslError::TooLong));
        // Longer than any valid line: refused before decoding, even if junk.
        assert_eq!(
            decode_response(&vec![b'!'; MAX_ENCODED + 1]),
            Err(SaslError::TooLong)
        );
    }

    #[test]
    fn encode_response_table() {
        assert_eq!(encode_response(b""), "=");
        assert_eq!(encode_response(b"test"), "dGVzdA==");
        assert_eq!(encode_response(b"Username:"), LOGIN_USER_PROMPT);
        assert_eq!(encode_response(b"Password:"), LOGIN_PASS_PROMPT);
    }

    // -- PLAIN -------------------------------------------------------------

    fn plain(authzid: &str, authcid: &str, password: &str) -> Plain {
        Plain {
            authzid: authzid.into(),
            authcid: authcid.into(),
            password: password.into(),
        }
    }

    #[test]
    fn plain_decode_table() {
        let long = "x".repeat(MAX_FIELD);
        let too_long = "x".repeat(MAX_FIELD + 1);
        let table: Vec<(Vec<u8>, Result<Plain, SaslError>)> = vec![
            // RFC 4616 §4 examples
            (
                b"\0tim\0tanstaaftanstaaf".to_vec(),
                Ok(plain("", "tim", "tanstaaftanstaaf")),
            ),
            (
                b"Ursel\0Kurt\0xipj3plmq".to_vec(),
                Ok(plain("Ursel", "Kurt", "xipj3plmq")),
            ),
            (
                "\0j\u{f6}rg\0p\u{e4}ss w\u{f6}rd".as_bytes().to_vec(),
                Ok(plain("", "j\u{f6}rg", "p\u{e4}ss w\u{f6}rd")),
            ),
            (
                format!("{long}\0{long}\0{long}").into_bytes(),
                Ok(plain(&long, &long, &long)),
            ),
            (
                format!("\0{too_long}\0pw").into_bytes(),
                Err(SaslError::FieldTooLong),
            ),
            (
                format!("\0tim\0{too_long}").into_bytes(),
                Err(SaslError::FieldTooLong),
            ),
            (
                format!("{too_long}\0tim\0pw").into_bytes(),
                Err(SaslError::FieldTooLong),
            ),
            (
                b"timtanstaaf".to_vec(),
                Err(SaslError::Malformed("PLAIN needs two NUL separators")),
            ),
            (
                b"tim\0tanstaaf".to_vec(),
                Err(SaslError::Malformed("PLAIN needs two NUL separators")),
            ),
            (
                b"".to_vec(),
                Err(SaslError::Malformed("PLAIN needs two NUL separators")),
            ),
            (
                b"\0tim\0tans\0taaf".to_vec(),
                Err(SaslError::Malformed("NUL inside a PLAIN field")),
            ),
            (
                b"\0tim\0tanstaaf\0".to_vec(),
                Err(SaslError::Malformed("NUL inside a PLAIN field")),
            ),
            (
                b"\0tim\0".to_vec(),
                Err(SaslError::Malformed("empty PLAIN password")),
            ),
            (
                b"\0\0tanstaaf".to_vec(),
                Err(SaslError::Malformed("empty PLAIN authcid")),
            ),
            (b"\0tim\0\xff\xfe".to_vec(), Err(SaslError::NotUtf8)),
            (b"\0t\xc3\0pw".to_vec(), Err(SaslError::NotUtf8)),
        ];
        for (raw, want) in table {
            assert_eq!(
                plain_decode(&raw),
                want,
                "{:?}",
                String::from_utf8_lossy(&raw)
            );
        }
    }

    #[test]
    fn plain_encode_known_answer() {
        let raw = plain_encode("", "tim", &"tanstaaftanstaaf".into());
        assert_eq!(raw, b"\0tim\0tanstaaftanstaaf");
        assert_eq!(encode_response(&raw), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        assert_eq!(
            plain_encode("Ursel", "Kurt", &"xipj3plmq".into()),
            b"Ursel\0Kurt\0xipj3plmq"
        );
    }

    // -- LOGIN -------------------------------------------------------------

    #[test]
    fn login_field_table() {
        let table: Vec<(Vec<u8>, Result<String, SaslError>)> = vec![
            (b"tim".to_vec(), Ok("tim".into())),
            ("j\u{f6}rg".as_bytes().to_vec(), Ok("j\u{f6}rg".into())),
            (b"pass word ".to_vec(), Ok("pass word ".into())),
            (b"".to_vec(), Err(SaslError::Malformed("empty LOGIN field"))),
            (
                b"ti\0m".to_vec(),
                Err(SaslError::Malformed("NUL inside a LOGIN field")),
            ),
            (b"\xff".to_vec(), Err(SaslError::NotUtf8)),
            (vec![b'x'; MAX_FIELD], Ok("x".repeat(MAX_FIELD))),
            (vec![b'x'; MAX_FIELD + 1], Err(SaslError::FieldTooLong)),
        ];
        for (raw, want) in table {
            assert_eq!(login_field(&raw), want, "{raw:?}");
        }
        assert_eq!(
            decode_response(LOGIN_USER_PROMPT.as_bytes()).as_deref(),
            Ok(&b"Username:"[..])
        );
        assert_eq!(
            decode_response(LOGIN_PASS_PROMPT.as_bytes()).as_deref(),
            Ok(&b"Password:"[..])
        );
    }

    // -- XOAUTH2 -----------------------------------------------------------

    const GOOGLE_RAW: &[u8] = b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01";
    const GOOGLE_B64: &str = "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==";
    const GOOGLE_TOKEN: &str = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg";

    fn bearer(user: &str, token: &str, host: Option<&str>, port: Option<u16>) -> Bearer {
        Bearer {
            user: user.into(),
            token: token.into(),
            host: host.map(Into::into),
            port,
        }
    }

    #[test]
    fn xoauth2_google_example() {
        let raw = xoauth2_encode("someuser@example.com", &GOOGLE_TOKEN.into());
        assert_eq!(raw, GOOGLE_RAW);
        assert_eq!(encode_response(&raw), GOOGLE_B64);
        let decoded = decode_response(GOOGLE_B64.as_bytes()).unwrap();
        assert_eq!(
            xoauth2_decode(&decoded),
            Ok(bearer("someuser@example.com", GOOGLE_TOKEN, None, None))
        );
    }

    #[test]
    fn xoauth2_decode_table() {
        let ok = |user: &str, token: &str| Ok(bearer(user, token, None, None));
        let table: &[Case<Bearer>] = &[
            (b"user=u@x\x01auth=Bearer tok\x01\x01", ok("u@x", "tok")),
            // RFC 6750 / RFC 7235: scheme case-insensitive, 1*SP
            (b"user=u@x\x01auth=bearer tok\x01\x01", ok("u@x", "tok")),
            (
                b"user=u@x\x01auth=BEARER  tok==\x01\x01",
                ok("u@x", "tok=="),
            ),
            // order and extra keys tolerated
            (b"auth=Bearer tok\x01user=u@x\x01\x01", ok("u@x", "tok")),
            (
                b"user=u@x\x01foo=bar\x01auth=Bearer tok\x01\x01",
                ok("u@x", "tok"),
            ),
            (b"user=a=b\x01auth=Bearer tok\x01\x01", ok("a=b", "tok")),
            (
                b"user=u@x\x01\x01",
                Err(SaslError::Malformed("no auth value")),
            ),
            (
                b"auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("XOAUTH2 without user")),
            ),
            (
                b"user=\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("XOAUTH2 with empty user")),
            ),
            (
                b"user=u@x\x01auth=Basic dTpw\x01\x01",
                Err(SaslError::Malformed("auth scheme is not Bearer")),
            ),
            (
                b"user=u@x\x01auth=Bearertok\x01\x01",
                Err(SaslError::Malformed(
                    "auth value is not \"Bearer\" SP token",
                )),
            ),
            (
                b"user=u@x\x01auth=Bearer \x01\x01",
                Err(SaslError::Malformed("bearer token is not a b64token")),
            ),
            (
                b"user=u@x\x01auth=Bearer to ken\x01\x01",
                Err(SaslError::Malformed("bearer token is not a b64token")),
            ),
            (
                b"user=u@x\x01auth=Bearer =\x01\x01",
                Err(SaslError::Malformed("bearer token is not a b64token")),
            ),
            (
                b"user=u@x\x01auth=Bearer tok\x01",
                Err(SaslError::Malformed("XOAUTH2 must end with two ^A")),
            ),
            (
                b"user=u@x\x01auth=Bearer tok",
                Err(SaslError::Malformed("XOAUTH2 must end with two ^A")),
            ),
            (
                b"user=u@x\x01\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("key-value pair without '='")),
            ),
            (
                b"user=u@x\x01user=v@x\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("duplicate key in key-value pairs")),
            ),
            (
                b"us3r=u@x\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("bad key in key-value pair")),
            ),
            (
                b"user=u\0@x\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("NUL in key-value pair")),
            ),
            (
                b"user=\xff\x01auth=Bearer tok\x01\x01",
                Err(SaslError::NotUtf8),
            ),
            (
                b"",
                Err(SaslError::Malformed("XOAUTH2 must end with two ^A")),
            ),
        ];
        for (raw, want) in table {
            assert_eq!(
                xoauth2_decode(raw),
                *want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    // -- OAUTHBEARER -------------------------------------------------------

    const RFC7628_41: &[u8] = b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
    const RFC7628_41_TOKEN: &str = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==";

    #[test]
    fn oauthbearer_rfc7628_example() {
        let raw = oauthbearer_encode(
            "user@example.com",
            "server.example.com",
            143,
            &RFC7628_41_TOKEN.into(),
        );
        assert_eq!(raw, RFC7628_41);
        // The wire (base64) form of the §4.1 message.
        assert_eq!(
            encode_response(&raw),
            "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
        );
        assert_eq!(
            oauthbearer_decode(RFC7628_41),
            Ok(bearer(
                "user@example.com",
                RFC7628_41_TOKEN,
                Some("server.example.com"),
                Some(143)
            ))
        );
    }

    #[test]
    fn oauthbearer_escaping() {
        let raw = oauthbearer_encode("a,b=c", "h", 993, &"t".into());
        assert_eq!(
            raw,
            b"n,a=a=2Cb=3Dc,\x01host=h\x01port=993\x01auth=Bearer t\x01\x01"
        );
        assert_eq!(
            oauthbearer_decode(&raw),
            Ok(bearer("a,b=c", "t", Some("h"), Some(993)))
        );
        // Empty user: no a= at all.
        let raw = oauthbearer_encode("", "h", 1, &"t".into());
        assert_eq!(raw, b"n,,\x01host=h\x01port=1\x01auth=Bearer t\x01\x01");
    }

    #[test]
    fn oauthbearer_decode_table() {
        let table: &[Case<Bearer>] = &[
            // gs2 header without a=; host and port are optional
            (
                b"n,,\x01auth=Bearer tok\x01\x01",
                Ok(bearer("", "tok", None, None)),
            ),
            (
                b"y,,\x01host=h\x01auth=Bearer tok\x01\x01",
                Ok(bearer("", "tok", Some("h"), None)),
            ),
            (
                b"F,n,a=u,\x01port=0\x01auth=Bearer tok\x01\x01",
                Ok(bearer("u", "tok", None, Some(0))),
            ),
            (
                b"n,a=u,\x01port=65535\x01auth=bearer tok\x01ext=x y\x01\x01",
                Ok(bearer("u", "tok", None, Some(65535))),
            ),
            (
                b"n,a=a=2C=3D,\x01auth=Bearer tok\x01\x01",
                Ok(bearer("a,=", "tok", None, None)),
            ),
            (
                b"n,a=u,\x01\x01",
                Err(SaslError::Malformed("no auth value")),
            ),
            (
                b"n,a=u,\x01host=h\x01\x01",
                Err(SaslError::Malformed("no auth value")),
            ),
            (
                b"\x01",
                Err(SaslError::Malformed("OAUTHBEARER must end with two ^A")),
            ),
            (
                b"\x01\x01",
                Err(SaslError::Malformed("bad gs2 channel-binding flag")),
            ),
            (
                b"p=tls-unique,,\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("OAUTHBEARER has no channel binding")),
            ),
            (
                b"x,,\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("bad gs2 channel-binding flag")),
            ),
            (
                b"n\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("bad gs2 channel-binding flag")),
            ),
            (
                b"n,a=u\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("gs2 header must end with ','")),
            ),
            (
                b"n,b=u,\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("bad gs2 authzid")),
            ),
            (
                b"n,a=,\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("empty gs2 authzid")),
            ),
            (
                b"n,a=a=2c,\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("bad '=' escape in gs2 authzid")),
            ),
            (
                b"n,a=a=,\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("bad '=' escape in gs2 authzid")),
            ),
            (
                b"n,a=a,b,\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("unescaped ',' in gs2 authzid")),
            ),
            (
                b"n,a=a\0b,\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("control character in gs2 authzid")),
            ),
            (
                b"n,,\x01port=65536\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("bad port")),
            ),
            (
                b"n,,\x01port=+1\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("bad port")),
            ),
            (
                b"n,,\x01port=\x01auth=Bearer tok\x01\x01",
                Err(SaslError::Malformed("bad port")),
            ),
            (
                b"n,,\x01auth=Basic dTpw\x01\x01",
                Err(SaslError::Malformed("auth scheme is not Bearer")),
            ),
            (
                b"n,,\x01auth=Bearer tok\x01",
                Err(SaslError::Malformed("OAUTHBEARER must end with two ^A")),
            ),
            (
                b"n,,\x01auth=Bearer tok\x01\x01\x01",
                Err(SaslError::Malformed("key-value pair without '='")),
            ),
            (
                b"n,a=\xff,\x01auth=Bearer tok\x01\x01",
                Err(SaslError::NotUtf8),
            ),
        ];
        for (raw, want) in table {
            assert_eq!(
                oauthbearer_decode(raw),
                *want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    // -- Error challenge ---------------------------------------------------

    #[test]
    fn bearer_error_table() {
        let google = decode_response(
            b"eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==",
        )
        .unwrap();
        let table: Vec<(&[u8], Option<BearerError>)> = vec![
            (
                &google,
                Some(BearerError {
                    status: "401".into(),
                    scope: Some("https://mail.google.com/".into()),
                    schemes: Some("Bearer".into()),
                }),
            ),
            // RFC 7628 §4.3
            (
                br#"{"status":"invalid_token","scope":"example_scope","openid-configuration":"https://example.com/.well-known/openid-configuration"}"#,
                Some(BearerError {
                    status: "invalid_token".into(),
                    scope: Some("example_scope".into()),
                    schemes: None,
                }),
            ),
            (
                br#" {"status": 401, "scope": 7} "#,
                Some(BearerError {
                    status: "401".into(),
                    ..BearerError::default()
                }),
            ),
            (br#"{"scope":"x"}"#, None),
            (br#"{"status":null}"#, None),
            (br#"["status","401"]"#, None),
            (br#""401""#, None),
            (br#"{"status":"401""#, None),
            (b"", None),
            (b"\x01", None),
            (b"\xff\xfe", None),
        ];
        for (raw, want) in table {
            assert_eq!(
                bearer_error_decode(raw),
                want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn bearer_error_acks() {
        assert_eq!(bearer_error_ack(Mechanism::XOAuth2), b"");
        assert_eq!(bearer_error_ack(Mechanism::OAuthBearer), b"\x01");
        // On the wire: "=" (or an empty line) and "AQ==".
        assert_eq!(encode_response(bearer_error_ack(Mechanism::XOAuth2)), "=");
        assert_eq!(
            encode_response(bearer_error_ack(Mechanism::OAuthBearer)),
            "AQ=="
        );
    }

    // -- Secrets never print -----------------------------------------------

    #[test]
    fn secrets_never_print() {
        let password = "hunter2-correct-horse";
        let p = plain_decode(&plain_encode("", "tim", &password.into())).unwrap();
        let b = oauthbearer_decode(&oauthbearer_encode("u", "h", 1, &GOOGLE_TOKEN.into())).unwrap();
        let x = xoauth2_decode(GOOGLE_RAW).unwrap();
        let printed = format!("{p:?} {b:?} {x:?} {:?}", [&b.token, &x.token]);
        for secret in [password, GOOGLE_TOKEN] {
            assert!(!printed.contains(secret), "{printed}");
            assert!(!printed.contains(&STANDARD.encode(secret)), "{printed}");
        }
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn errors_never_carry_input() {
        let token = "SECRETTOKEN";
        let inputs: Vec<Vec<u8>> = vec![
            format!("user=u\x01auth=Basic {token}\x01\x01").into_bytes(),
            format!("user=u\x01auth=Bearer {token}!\x01\x01").into_bytes(),
            format!("n,a={token},\x01auth=Bearer {token}\x01").into_bytes(),
            format!("\0u\0{token}\0").into_bytes(),
        ];
        for raw in &inputs {
            let errors = [
                plain_decode(raw).err(),
                xoauth2_decode(raw).err(),
                oauthbearer_decode(raw).err(),
                login_field(raw).err(),
            ];
            for e in errors.into_iter().flatten() {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains(token), "{shown}");
            }
        }
    }

    // -- Properties ----------------------------------------------------------

    /// RFC 6750 b64token.
    fn b64token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~+/-]{1,64}={0,2}"
    }

    /// Bytes built from the pieces the parsers look for, so random inputs
    /// reach past the first check more often than plain random bytes do.
    fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"\x01"[..]),
            Just(&b"\0"[..]),
            Just(&b"="[..]),
            Just(&b","[..]),
            Just(&b"n,"[..]),
            Just(&b"a="[..]),
            Just(&b"=2C"[..]),
            Just(&b"user="[..]),
            Just(&b"host="[..]),
            Just(&b"port="[..]),
            Just(&b"auth=Bearer "[..]),
            Just(&b"tok"[..]),
            Just(&b"99999"[..]),
            Just(&b"\xff"[..]),
            Just(&b"\xc3"[..]),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    /// A valid message of some mechanism with one byte replaced, inserted or
    /// removed (or none): inputs one step away from the happy path.
    fn near_valid() -> impl Strategy<Value = Vec<u8>> {
        let valid =
            prop_oneof![
                ("[^\\x00]{0,8}", "[^\\x00]{1,8}", "[^\\x00]{1,8}")
                    .prop_map(|(z, c, p)| plain_encode(&z, &c, &p.into())),
                ("[^\\x00\\x01]{1,8}", b64token()).prop_map(|(u, t)| xoauth2_encode(&u, &t.into())),
                ("[a-z,=]{0,8}", "[a-z.]{0,8}", any::<u16>(), b64token())
                    .prop_map(|(u, h, p, t)| oauthbearer_encode(&u, &h, p, &t.into())),
            ];
        (valid, any::<prop::sample::Index>(), 0..4u8, any::<u8>()).prop_map(
            |(mut raw, at, edit, byte)| {
                let i = at.index(raw.len() + 1);
                match edit {
                    0 if i < raw.len() => raw[i] = byte,
                    1 => raw.insert(i, byte),
                    2 if i < raw.len() => {
                        raw.remove(i);
                    }
                    _ => {}
                }
                raw
            },
        )
    }

    fn any_input() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            tricky_bytes(),
            near_valid(),
        ]
    }

    proptest! {
        #[test]
        fn response_round_trip(raw in prop::collection::vec(any::<u8>(), 0..=MAX_RESPONSE)) {
            let line = encode_response(&raw);
            prop_assert_eq!(decode_response(line.as_bytes()), Ok(raw));
        }

        #[test]
        fn plain_round_trip(
            authzid in "[^\\x00]{0,40}",
            authcid in "[^\\x00]{1,40}",
            password in "[^\\x00]{1,40}",
        ) {
            let password = Secret::new(password);
            let raw = plain_encode(&authzid, &authcid, &password);
            prop_assert_eq!(
                plain_decode(&raw),
                Ok(Plain { authzid, authcid, password })
            );
        }

        #[test]
        fn xoauth2_round_trip(user in "[^\\x00\\x01]{1,40}", token in b64token()) {
            let token = Secret::new(token);
            let raw = xoauth2_encode(&user, &token);
            prop_assert_eq!(
                xoauth2_decode(&raw),
                Ok(Bearer { user, token, host: None, port: None })
            );
        }

        #[test]
        fn oauthbearer_round_trip(
            user in "[a-z@.,=]{0,20}|[^\\x00\\x01]{0,40}",
            host in "[^\\x00\\x01]{0,40}",
            port in any::<u16>(),
            token in b64token(),
        ) {
            let token = Secret::new(token);
            let raw = oauthbearer_encode(&user, &host, port, &token);
            prop_assert_eq!(
                oauthbearer_decode(&raw),
                Ok(Bearer { user, token, host: Some(host), port: Some(port) })
            );
        }

        /// Total: no decoder panics, and whatever decodes re-encodes to
        /// something that decodes to the same value.
        #[test]
        fn decoders_are_total(raw in any_input()) {
            let _ = decode_response(&raw);
            let _ = login_field(&raw);
            let _ = bearer_error_decode(&raw);
            if let Ok(p) = plain_decode(&raw) {
                let again = plain_encode(&p.authzid, &p.authcid, &p.password);
                prop_assert_eq!(plain_decode(&again), Ok(p));
            }
            if let Ok(b) = xoauth2_decode(&raw) {
                prop_assert_eq!(xoauth2_decode(&xoauth2_encode(&b.user, &b.token)), Ok(b));
            }
            if let Ok(b) = oauthbearer_decode(&raw) {
                if let (Some(host), Some(port)) = (&b.host, b.port) {
                    let again = oauthbearer_encode(&b.user, host, port, &b.token);
                    prop_assert_eq!(oauthbearer_decode(&again), Ok(b.clone()));
                }
            }
        }

        /// Any line that decodes re-encodes to itself (or to "=" for the
        /// empty line): strict base64 has exactly one spelling per value.
        #[test]
        fn response_canonical(line in "[A-Za-z0-9+/=*]{0,64}") {
            if let Ok(raw) = decode_response(line.as_bytes()) {
                let again = encode_response(&raw);
                prop_assert!(again == line || (raw.is_empty() && again == "="));
            }
        }
    }
}
