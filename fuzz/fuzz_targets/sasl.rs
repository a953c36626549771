//! `sasl`: every SASL decoder in `postern::sasl`, with its encoder.
//!
//! Input: a client response line (CRLF removed). Every mechanism decoder sees
//! the input both as already-decoded bytes and, when it is valid base64, as
//! the bytes `decode_response` gives.
//!
//! Properties (decode → encode → decode stable, and more where exact):
//! - `decode_response`: strict base64, so `encode_response` gives back the
//!   very line (an empty line, being empty, comes back as `=`);
//! - `plain_decode`: `plain_encode` gives back the very bytes;
//! - `login_field`: the field is the bytes;
//! - `xoauth2_decode`: `xoauth2_encode` then decode gives the same `Bearer`;
//! - `oauthbearer_decode`: `oauthbearer_encode` (host and port filled in when
//!   absent) then decode gives the same user and token, host and port;
//! - `bearer_error_decode`: the fields written back as JSON decode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::sasl::{
    bearer_error_decode, decode_response, encode_response, login_field, oauthbearer_decode,
    oauthbearer_encode, plain_decode, plain_encode, xoauth2_decode, xoauth2_encode, BearerError,
    SaslError,
};

fuzz_target!(|data: &[u8]| {
    match decode_response(data) {
        Ok(raw) => {
            let line = encode_response(&raw);
            let want: &[u8] = if data.is_empty() { b"=" } else { data };
            assert_eq!(line.as_bytes(), want, "base64 is not canonical");
            assert_eq!(decode_response(line.as_bytes()), Ok(raw.clone()));
            mechanisms(&raw);
        }
        Err(SaslError::Cancelled) => assert_eq!(data, b"*"),
        Err(_) => {}
    }
    mechanisms(data);
});

fn mechanisms(raw: &[u8]) {
    if let Ok(p) = plain_decode(raw) {
        assert_eq!(plain_encode(&p.authzid, &p.authcid, &p.password), raw);
        assert_eq!(
            plain_decode(&plain_encode(&p.authzid, &p.authcid, &p.password)),
            Ok(p)
        );
    }
    if let Ok(field) = login_field(raw) {
        assert_eq!(field.as_bytes(), raw);
    }
    if let Ok(b) = xoauth2_decode(raw) {
        let wire = xoauth2_encode(&b.user, &b.token);
        assert_eq!(xoauth2_decode(&wire), Ok(b));
    }
    if let Ok(b) = oauthbearer_decode(raw) {
        let host = b.host.clone().unwrap_or_else(|| "localhost".into());
        let port = b.port.unwrap_or(143);
        let wire = oauthbearer_encode(&b.user, &host, port, &b.token);
        let again = oauthbearer_decode(&wire).expect("an encoded OAUTHBEARER response decodes");
        assert_eq!(again.user, b.user);
        assert_eq!(again.token, b.token);
        assert_eq!(again.host, Some(host));
        assert_eq!(again.port, Some(port));
    }
    if let Some(e) = bearer_error_decode(raw) {
        let mut json = serde_json::Map::new();
        json.insert("status".into(), e.status.clone().into());
        if let Some(s) = &e.scope {
            json.insert("scope".into(), s.clone().into());
        }
        if let Some(s) = &e.schemes {
            json.insert("schemes".into(), s.clone().into());
        }
        let wire = serde_json::to_vec(&json).expect("JSON encodes");
        assert_eq!(bearer_error_decode(&wire), Some(BearerError { ..e }));
    }
}
