//! `smtp_data`: DATA transparency, dot-stuffing both ways and end-of-data.
//!
//! Input: `fuzz::Reads` layout (byte 0 = how many read sizes follow, then the
//! sizes), then one byte for the size cap, then the bytes a client sends
//! after `354`.
//!
//! Properties:
//! - `DataDecoder` fed the payload in those reads gives the same end position,
//!   output, `size()` and `oversize()` as `reference` below, a plain
//!   whole-buffer implementation of the decoder's documented semantics (not
//!   a restriction of the inputs): only CR LF "." CR LF ends the data, the
//!   very start counting as after a CRLF; a "." starting any line (after CRLF
//!   or a bare LF) is removed; a line ended by a bare LF is stored with CRLF;
//!   a bare CR is content. While the data goes on, a CR right after a
//!   terminator-candidate "." is held back (it is content only if no LF
//!   follows), so it is not in the output yet.
//! - `unstuff(stuff(m)) == m` for `m` the payload normalised to CRLF lines
//!   (split on LF, re-joined with CRLF, a final CRLF added); for the raw
//!   payload `unstuff(stuff(p))` is `p` with `stuff`'s normalisation; and the
//!   decoder finds the end of `stuff(m)` exactly at its last byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::codec::{stuff, unstuff, DataDecoder, DataProgress};
use postern_fuzz::{header, Reads};

fuzz_target!(|data: &[u8]| {
    let reads = Reads::parse(data);
    let ([cap_byte], payload) = header::<1>(reads.payload);
    let reads = reads.with_payload(payload);

    // The decoder against the reference, with no cap and with one that may
    // cut the message (cap_byte/64 of the expected size, so both sides of it).
    let want = reference(payload);
    check_decoder(&reads, usize::MAX, &want);
    let cap = want.out.len() * usize::from(cap_byte) / 64;
    check_decoder(&reads, cap, &want);

    // Round trip of a message with CRLF line ends.
    let mut m = Vec::with_capacity(payload.len() + 8);
    for line in payload.split(|&b| b == b'\n') {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    roundtrip(&m, &m);
    // Any payload: stuff() normalises, unstuff() gives that normalisation.
    roundtrip(payload, &normalise(payload));
});

fn roundtrip(m: &[u8], want: &[u8]) {
    let mut s = Vec::new();
    stuff(m, &mut s);
    let mut d = DataDecoder::new(usize::MAX);
    let mut out = Vec::new();
    assert_eq!(
        d.feed(&s, &mut out),
        DataProgress::End { consumed: s.len() },
        "end of data not at the end of the stuffed message"
    );
    assert_eq!(out, want, "decoder");
    assert_eq!(unstuff(&s).as_deref(), Some(want), "unstuff(stuff(m))");
}

/// What `stuff` makes of a message's lines: each LF-ended line keeps its text
/// without one CR before the LF and gets CRLF; a last line without LF gets CRLF.
fn normalise(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut lines = m.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if last {
            if !line.is_empty() {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        } else {
            out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

struct Expected {
    /// Bytes of the input up to and including the terminator, if there is one.
    end: Option<usize>,
    /// The unstuffed message; while the data goes on, what has been released.
    out: Vec<u8>,
}

/// A plain implementation of the documented semantics of `DataDecoder`.
fn reference(input: &[u8]) -> Expected {
    // The end: the first CR LF "." CR LF, the start of input counting as after
    // CR LF. In `CRLF + input` a match at i ends at input offset i + 5 - 2.
    let mut padded = b"\r\n".to_vec();
    padded.extend_from_slice(input);
    let end = padded
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|i| i + 3);
    // The message: everything before the terminator line ".\r\n".
    let body = match end {
        Some(e) => &input[..e - 3],
        None => input,
    };
    let mut out = Vec::with_capacity(body.len());
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_prefix(b".").unwrap_or(line);
        out.extend_from_slice(line);
        if lines.peek().is_some() {
            // LF-ended: CRLF stays CRLF, a bare LF becomes CRLF.
            if !line.ends_with(b"\r") {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
    }
    // Unterminated and ending in "." CR at the start of a line after CRLF (or
    // at the start): the CR is held back until the next byte shows what it is.
    if end.is_none() && padded.ends_with(b"\r\n.\r") {
        assert_eq!(out.pop(), Some(b'\r'));
    }
    Expected { end, out }
}

fn check_decoder(reads: &Reads<'_>, max: usize, want: &Expected) {
    let mut d = DataDecoder::new(max);
    let mut out = Vec::new();
    let mut fed = 0;
    let mut end = None;
    for chunk in reads.chunks() {
        if let DataProgress::End { consumed } = d.feed(chunk, &mut out) {
            assert!(consumed <= chunk.len());
            end = Some(fed + consumed);
            break;
        }
        fed += chunk.len();
    }
    assert_eq!(end, want.end, "end-of-data position");
    assert_eq!(d.size(), want.out.len(), "size()");
    let over = want.out.len() > max;
    assert_eq!(d.oversize(), over, "oversize() with cap {max}");
    if over {
        assert!(out.is_empty(), "an oversize message keeps no bytes");
    } else {
        assert!(out == want.out, "output differs from the reference");
    }
}
