//! `imap_response`: the IMAP response and greeting parsers and the response
//! encoder.
//!
//! Input: what an upstream IMAP server sends. It is parsed whole as one
//! frame, and also split into frames by `Framer::for_responses` and parsed
//! frame by frame (the corpus holds whole Dovecot sessions).
//!
//! Properties:
//! - `parse_response` and `parse_greeting` never panic, and agree: a greeting
//!   is exactly an untagged OK, PREAUTH or BYE status response;
//! - where a response parses, `encode_response` succeeds and its bytes parse
//!   to the same response, except for the sanitising the encoder documents
//!   (CR, LF, NUL in text become spaces; text ending like a literal
//!   announcement gets a "."; a status text starting with "[" without a code
//!   becomes "("; an empty status text becomes "."), which `expected` below
//!   applies; and encoding that again gives the same bytes (a fixed point).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postern::imap::codec::{
    encode_response, parse_greeting, parse_response, Decoded, Framer, Limits, Response, Status,
    StatusResponse,
};

fuzz_target!(|data: &[u8]| {
    check_frame(data);
    let mut framer = Framer::for_responses(Limits::PRE_AUTH);
    let mut buf = BytesMut::from(data);
    loop {
        match framer.decode(&mut buf) {
            Ok(Decoded::Frame(f)) => check_frame(f.as_bytes()),
            Ok(Decoded::Incomplete) => break,
            Ok(Decoded::NeedContinuation { .. }) => {
                panic!("a response framer asked for a continuation")
            }
            Err(e) if e.is_fatal() => break,
            Err(_) => {}
        }
    }
});

fn check_frame(frame: &[u8]) {
    let parsed = parse_response(frame);
    let greeting = parse_greeting(frame);
    match &parsed {
        Ok(Response::Status(
            s @ StatusResponse {
                tag: None,
                status: Status::Ok | Status::PreAuth | Status::Bye,
                ..
            },
        )) => assert_eq!(greeting.as_ref(), Ok(s), "a greeting refused"),
        _ => assert!(
            greeting.is_err(),
            "not a greeting, but parse_greeting took it"
        ),
    }
    let Ok(r) = parsed else {
        return;
    };
    let wire = encode_response(&r)
        .unwrap_or_else(|e| panic!("a parsed response does not encode: {e}: {r:?}"));
    let again = parse_response(&wire).unwrap_or_else(|e| {
        panic!(
            "encoded response does not parse: {e}: {:?}",
            String::from_utf8_lossy(&wire)
        )
    });
    assert_eq!(again, expected(&r), "{:?}", String::from_utf8_lossy(&wire));
    let wire2 = encode_response(&again).expect("encodes again");
    assert_eq!(wire2, wire, "encoding is not a fixed point");
}

/// `r` as the encoder is documented to send it.
fn expected(r: &Response) -> Response {
    match r {
        Response::Status(s) => {
            let mut text = clean_continue(&s.text);
            if s.code.is_none() && text.starts_with('[') {
                text.replace_range(..1, "(");
            }
            if text.is_empty() {
                text.push('.');
            }
            Response::Status(StatusResponse { text, ..s.clone() })
        }
        Response::Continue(t) => Response::Continue(clean_continue(t)),
        other => other.clone(),
    }
}

fn clean_continue(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if matches!(c, '\r' | '\n' | '\0') {
                ' '
            } else {
                c
            }
        })
        .collect();
    if ends_like_literal(out.as_bytes()) {
        out.push('.');
    }
    out
}

/// `"{" 1*DIGIT ["+"] "}"` at the very end.
fn ends_like_literal(s: &[u8]) -> bool {
    let Some(s) = s.strip_suffix(b"}") else {
        return false;
    };
    let s = s.strip_suffix(b"+").unwrap_or(s);
    let digits = s.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && s[..s.len() - digits].ends_with(b"{")
}
