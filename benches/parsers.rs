//! Parser micro-benchmarks (criterion): SMTP command parsing, DATA
//! dot-unstuffing throughput, IMAP framing. `cargo bench --bench parsers`;
//! BENCHMARKS.md has a recorded run.
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it only checks
//! once that every input decodes as expected, and returns at once.

// A test or bench crate has no public API: `pub` in its modules means
// "shared between its files".
#![allow(unreachable_pub)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput};
use postern::imap::codec::{Decoded, Framer, Limits};
use postern::smtp::codec::{self as smtp, DataDecoder, DataProgress};

const SMTP_LINES: &[(&str, &[u8])] = &[
    ("EHLO", b"EHLO client.example.com"),
    (
        "MAIL",
        b"MAIL FROM:<alice@example.com> SIZE=10240 BODY=8BITMIME",
    ),
    ("RCPT", b"RCPT TO:<bob@example.org>"),
    ("AUTH", b"AUTH PLAIN AGFwcAB0ZXN0LXBhc3M="),
    ("DATA", b"DATA"),
];

/// A 1 MiB message of 76-character lines; every 50th line starts with a dot.
fn message(size: usize, line_len: usize, dot_every: usize) -> Vec<u8> {
    let mut m = b"From: <a@example.com>\r\nTo: <b@example.org>\r\nSubject: bench\r\n\r\n".to_vec();
    let text = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore";
    let mut i = 0;
    while m.len() + line_len + 2 <= size {
        if dot_every > 0 && i % dot_every == 0 {
            m.push(b'.');
            m.extend_from_slice(&text[..line_len - 1]);
        } else {
            m.extend_from_slice(&text[..line_len]);
        }
        m.extend_from_slice(b"\r\n");
        i += 1;
    }
    m
}

fn stuffed(m: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    smtp::stuff(m, &mut s);
    s
}

/// Feed `input` in `chunk`-byte reads; the unstuffed message size.
fn unstuff(input: &[u8], chunk: usize, out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut d = DataDecoder::new(usize::MAX);
    for c in input.chunks(chunk) {
        if let DataProgress::End { .. } = d.feed(c, out) {
            return out.len();
        }
    }
    panic!("no end of data");
}

/// A pipeline of pre-login commands, one with a synchronising literal.
fn imap_commands(total: usize) -> BytesMut {
    let mut b = BytesMut::new();
    let mut i = 0;
    while b.len() < total {
        let cmd = match i % 4 {
            0 => format!("a{i} CAPABILITY\r\n"),
            1 => format!("a{i} NOOP\r\n"),
            2 => format!("a{i} ID (\"name\" \"legacy-app\" \"version\" \"1.0\")\r\n"),
            _ => format!("a{i} LOGIN app {{9}}\r\ntest-pass\r\n"),
        };
        b.extend_from_slice(cmd.as_bytes());
        i += 1;
    }
    b
}

/// A FETCH response with a 1 MiB literal, then its tagged OK.
fn imap_fetch_response() -> BytesMut {
    let body = message(1 << 20, 76, 0);
    let mut b = BytesMut::new();
    b.extend_from_slice(format!("* 1 FETCH (UID 7 BODY[] {{{}}}\r\n", body.len()).as_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(b")\r\nb2 OK FETCH completed\r\n");
    b
}

/// Untagged status lines, as a server sends them during SELECT or IDLE.
fn imap_response_lines(total: usize) -> BytesMut {
    let mut b = BytesMut::new();
    let mut i = 0;
    while b.len() < total {
        b.extend_from_slice(
            format!(
                "* {i} FETCH (FLAGS (\\Seen \\Answered) UID {})\r\n",
                i + 1000
            )
            .as_bytes(),
        );
        i += 1;
    }
    b
}

const RESPONSE_LIMITS: Limits = Limits {
    max_line: 64 * 1024,
    max_literal: 4 << 20,
    max_nonsync_literal: 4 << 20,
    max_frame: 8 << 20,
};

/// Frame everything in `buf`; (frames, bytes framed).
fn frame_all(mut framer: Framer, mut buf: BytesMut) -> (usize, usize) {
    let mut frames = 0;
    let mut bytes = 0;
    loop {
        match framer.decode(&mut buf).expect("valid input") {
            Decoded::Frame(f) => {
                frames += 1;
                bytes += f.as_bytes().len();
            }
            Decoded::NeedContinuation { .. } => {}
            Decoded::Incomplete => return (frames, bytes),
        }
    }
}

fn check() {
    for (name, line) in SMTP_LINES {
        assert!(smtp::parse_command(line).is_ok(), "{name}");
    }
    let m = message(1 << 20, 76, 50);
    let s = stuffed(&m);
    let mut out = Vec::new();
    assert_eq!(unstuff(&s, s.len(), &mut out), m.len());
    assert_eq!(out, m);
    assert_eq!(unstuff(&s, 16 * 1024, &mut out), m.len());
    let cmds = imap_commands(64 * 1024);
    let n = cmds.len();
    assert_eq!(frame_all(Framer::for_commands(Limits::PRE_AUTH), cmds).1, n);
    let r = imap_fetch_response();
    let n = r.len();
    assert_eq!(frame_all(Framer::for_responses(RESPONSE_LIMITS), r), (2, n));
    let r = imap_response_lines(64 * 1024);
    let n = r.len();
    assert_eq!(frame_all(Framer::for_responses(RESPONSE_LIMITS), r).1, n);
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("smtp_parse_command");
    g.throughput(Throughput::Elements(1));
    for (name, line) in SMTP_LINES {
        g.bench_function(*name, |b| b.iter(|| smtp::parse_command(black_box(line))));
    }
    g.finish();

    let mut g = c.benchmark_group("smtp_data_unstuff");
    let mut out = Vec::with_capacity(2 << 20);
    for (name, m, chunk) in [
        (
            "1MiB_76col_lines_one_read",
            message(1 << 20, 76, 50),
            usize::MAX,
        ),
        (
            "1MiB_76col_lines_16KiB_reads",
            message(1 << 20, 76, 50),
            16 * 1024,
        ),
        (
            "1MiB_short_dotted_lines_16KiB_reads",
            message(1 << 20, 10, 1),
            16 * 1024,
        ),
    ] {
        let s = stuffed(&m);
        g.throughput(Throughput::Bytes(s.len() as u64));
        g.bench_function(name, |b| b.iter(|| unstuff(black_box(&s), chunk, &mut out)));
    }
    g.finish();

    let mut g = c.benchmark_group("imap_framer");
    for (name, buf, commands) in [
        ("pre_auth_commands_64KiB", imap_commands(64 * 1024), true),
        ("fetch_response_1MiB_literal", imap_fetch_response(), false),
        (
            "response_lines_64KiB",
            imap_response_lines(64 * 1024),
            false,
        ),
    ] {
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || buf.clone(),
                |buf| {
                    let framer = if commands {
                        Framer::for_commands(Limits::PRE_AUTH)
                    } else {
                        Framer::for_responses(RESPONSE_LIMITS)
                    };
                    frame_all(framer, buf)
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn main() {
    check();
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "parsers benchmark: inputs checked; not timed (run `cargo bench --bench parsers`)"
        );
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
}
