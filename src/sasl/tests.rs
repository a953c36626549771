//! SASL tests: known-answer tables and properties (proptest).

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
    let valid = prop_oneof![
        ("[^\\x00]{0,8}", "[^\\x00]{1,8}", "[^\\x00]{1,8}").prop_map(|(z, c, p)| plain_encode(
            &z,
            &c,
            &p.into()
        )),
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
