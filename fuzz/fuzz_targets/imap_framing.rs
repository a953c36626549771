//! `imap_framing`: IMAP line + literal framing (`imap::codec::Framer`).
//!
//! Input: `fuzz::Reads` layout (byte 0 = how many read sizes follow, then the
//! sizes), then 5 bytes: mode and four limits, then the byte stream.
//! Mode bit 0: frame responses (we are the client) instead of commands; bit 1:
//! small limits from the next four bytes (`max_line`, `max_literal`,
//! `max_nonsync_literal`, `max_frame` / 4) instead of `Limits::PRE_AUTH`, so
//! the caps are hit by short inputs.
//!
//! Properties:
//! - the stream fed in those reads gives the same sequence of frames,
//!   continuation requests and errors as fed whole, and leaves the same bytes
//!   in the buffer;
//! - while `decode` returns `Incomplete`, the buffer holds at most
//!   `max_frame` bytes; every frame is at most `max_frame` bytes and ends
//!   with its line end;
//! - after a fatal error, `decode` only ever says `Stopped`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postern::imap::codec::{Decoded, FrameError, Framer, Limits};
use postern_fuzz::{header, Reads};

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Frame(Vec<u8>),
    Continue(Decoded),
    Error(FrameError),
}

fuzz_target!(|data: &[u8]| {
    let reads = Reads::parse(data);
    let ([mode, line, literal, nonsync, frame], stream) = header::<5>(reads.payload);
    let reads = reads.with_payload(stream);
    let limits = if mode & 2 != 0 {
        Limits {
            max_line: usize::from(line),
            max_literal: usize::from(literal),
            max_nonsync_literal: usize::from(nonsync),
            max_frame: usize::from(frame) * 4,
        }
    } else {
        Limits::PRE_AUTH
    };
    let new = || {
        if mode & 1 != 0 {
            Framer::for_responses(limits)
        } else {
            Framer::for_commands(limits)
        }
    };

    let whole: Vec<&[u8]> = if stream.is_empty() {
        Vec::new()
    } else {
        vec![stream]
    };
    let (want, want_left) = run(new(), &whole);
    let (got, got_left) = run(new(), &reads.chunks());
    assert_eq!(got, want, "fed in reads, framing differs from fed whole");
    assert_eq!(got_left, want_left, "different bytes left in the buffer");
});

/// Frames `reads` one after the other, decoding until `Incomplete` after
/// each. Returns the events and, unless stopped, what is left in the buffer.
fn run(mut framer: Framer, reads: &[&[u8]]) -> (Vec<Event>, Option<Vec<u8>>) {
    let max_frame = framer.limits().max_frame;
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match framer.decode(&mut buf) {
                Ok(Decoded::Incomplete) => {
                    assert!(
                        buf.len() <= max_frame,
                        "Incomplete with {} bytes buffered, max_frame {max_frame}",
                        buf.len()
                    );
                    break;
                }
                Ok(Decoded::Frame(f)) => {
                    let f = f.as_bytes();
                    assert!(f.len() <= max_frame, "frame of {} bytes", f.len());
                    assert_eq!(f.last(), Some(&b'\n'), "frame without its line end");
                    events.push(Event::Frame(f.to_vec()));
                }
                Ok(c @ Decoded::NeedContinuation { .. }) => events.push(Event::Continue(c)),
                Err(e) => {
                    assert_ne!(
                        e,
                        FrameError::Stopped,
                        "Stopped without a fatal error first"
                    );
                    let fatal = e.is_fatal();
                    events.push(Event::Error(e));
                    if fatal {
                        for _ in 0..2 {
                            assert_eq!(framer.decode(&mut buf), Err(FrameError::Stopped));
                        }
                        return (events, None);
                    }
                }
            }
        }
    }
    (events, Some(buf.to_vec()))
}
