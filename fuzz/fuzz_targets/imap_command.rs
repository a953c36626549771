//! `imap_command`: the pre-auth IMAP command parser and the command encoder.
//!
//! Input: what a local IMAP client sends. It is parsed whole as one frame,
//! and also split into frames by `Framer::for_commands` and parsed frame by
//! frame (the corpus holds whole sessions); each frame is also tried as an
//! AUTHENTICATE continuation line.
//!
//! Properties:
//! - `parse_command` and `parse_auth_response` never panic;
//! - a parse error carries the tag exactly when the frame starts with a
//!   valid tag;
//! - where a command parses, `encode_command` (for each of SyncOnly, LITERAL+
//!   and LITERAL-) succeeds; framing its parts with a command framer asks for
//!   a continuation exactly where the encoder waits for one (answering them),
//!   yields one frame, and that frame parses to the same `Command`;
//! - where an AUTHENTICATE line parses, `encode_auth_response` and parsing
//!   again gives the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postern::imap::codec::{
    encode_auth_response, encode_command, parse_auth_response, parse_command, Command, Decoded,
    Framer, Limits, LiteralSupport,
};

fuzz_target!(|data: &[u8]| {
    check_frame(data);
    let mut framer = Framer::for_commands(Limits::PRE_AUTH);
    let mut buf = BytesMut::from(data);
    loop {
        match framer.decode(&mut buf) {
            Ok(Decoded::Incomplete) => break,
            Ok(Decoded::NeedContinuation { .. }) => {}
            Ok(Decoded::Frame(f)) => check_frame(f.as_bytes()),
            Err(e) if e.is_fatal() => break,
            Err(_) => {}
        }
    }
});

fn check_frame(frame: &[u8]) {
    match parse_command(frame) {
        Ok(cmd) => roundtrip(&cmd),
        Err(e) => {
            if let Some(tag) = &e.tag {
                let tag = tag.as_str().as_bytes();
                assert!(frame.starts_with(tag), "error tag is not the frame's");
                assert!(matches!(frame.get(tag.len()), Some(b' ' | b'\r' | b'\n')));
            }
        }
    }
    if let Ok(r) = parse_auth_response(frame) {
        let wire = encode_auth_response(&r).expect("a parsed AUTHENTICATE line encodes");
        assert_eq!(parse_auth_response(&wire), Ok(r));
    }
}

fn roundtrip(cmd: &Command) {
    for support in [
        LiteralSupport::SyncOnly,
        LiteralSupport::Plus,
        LiteralSupport::Minus,
    ] {
        let parts = encode_command(cmd, support)
            .unwrap_or_else(|e| panic!("a parsed command does not encode ({support:?}): {e}"));
        // Caps well over anything a parsed command can hold (the input is
        // bounded by libFuzzer's -max_len); LITERAL+ literals of any size.
        let big = 1 << 24;
        let mut framer = Framer::for_commands(Limits {
            max_line: big,
            max_literal: big,
            max_nonsync_literal: big,
            max_frame: big,
        });
        let mut buf = BytesMut::new();
        let mut frame = None;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            buf.extend_from_slice(part);
            match framer.decode(&mut buf) {
                Ok(Decoded::NeedContinuation { tag, .. }) if !last => {
                    assert_eq!(tag.as_ref(), Some(&cmd.tag), "continuation for another tag");
                    assert_eq!(framer.decode(&mut buf), Ok(Decoded::Incomplete));
                }
                Ok(Decoded::Frame(f)) if last => frame = Some(f),
                other => panic!(
                    "part {i} of {} ({support:?}): encoder and framer disagree: {other:?}",
                    parts.len()
                ),
            }
        }
        assert!(buf.is_empty(), "bytes left after the frame");
        let frame = frame.expect("one frame");
        let again = parse_command(frame.as_bytes());
        assert_eq!(
            again.as_ref(),
            Ok(cmd),
            "{support:?}: re-parsed differently"
        );
    }
}
