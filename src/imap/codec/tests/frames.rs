//! IMAP codec tests: framer: known answers.

use super::*;

#[test]
fn framer_known_answers() {
    use super::Side::*;
    const D: Limits = Limits::PRE_AUTH;
    let frame_cap = Limits {
        max_line: 100,
        max_literal: 100,
        max_nonsync_literal: 100,
        max_frame: 24,
    };
    #[rustfmt::skip]
    let cases: Vec<FrameCase> = vec![
        // (side, limits, input, events, bytes left in the buffer)
        (Cmd, D, b"", vec![], b""),
        (Cmd, D, b"a NOOP\r\n", vec![f(b"a NOOP\r\n")], b""),
        (Cmd, D, b"a NOOP\r\nb NO", vec![f(b"a NOOP\r\n")], b"b NO"),
        (Cmd, D, b"a NOOP\nb NOOP\r\n", vec![f(b"a NOOP\n"), f(b"b NOOP\r\n")], b""),
        // a lone CR is not a line end
        (Cmd, D, b"a NOOP\rb NOOP\r\n", vec![f(b"a NOOP\rb NOOP\r\n")], b""),
        // synchronising literal: continuation, then the frame
        (Cmd, D, b"a LOGIN {3}\r\nabc x\r\n", vec![Ev::Cont(3), f(b"a LOGIN {3}\r\nabc x\r\n")], b""),
        (Cmd, D, b"a LOGIN {3}\r\nab", vec![Ev::Cont(3)], b"a LOGIN {3}\r\nab"),
        (Cmd, D, b"a LOGIN {3}\n", vec![Ev::Cont(3)], b"a LOGIN {3}\n"),
        (Cmd, D, b"a LOGIN {0}\r\n x\r\n", vec![Ev::Cont(0), f(b"a LOGIN {0}\r\n x\r\n")], b""),
        // literal bytes are never scanned for line ends or announcements
        (Cmd, D, b"a X {5}\r\n{1}\r\n\r\nb\r\n", vec![Ev::Cont(5), f(b"a X {5}\r\n{1}\r\n\r\n"), f(b"b\r\n")], b""),
        // non-synchronising literals need no continuation
        (Cmd, D, b"a LOGIN {3+}\r\nabc {1+}\r\nx\r\n", vec![f(b"a LOGIN {3+}\r\nabc {1+}\r\nx\r\n")], b""),
        (Cmd, D, b"a LOGIN {3+}\r\nab", vec![], b"a LOGIN {3+}\r\nab"),
        (Cmd, D, b"a LOGIN {0003+}\r\nabc\r\n", vec![f(b"a LOGIN {0003+}\r\nabc\r\n")], b""),
        // not announcements: {n-}, nothing after }, CR CR, text after }, no digits
        (Cmd, D, b"a LOGIN {3-}\r\nabc\r\n", vec![f(b"a LOGIN {3-}\r\n"), f(b"abc\r\n")], b""),
        (Cmd, D, b"a X {5}\r\r\nb\r\n", vec![f(b"a X {5}\r\r\n"), f(b"b\r\n")], b""),
        (Cmd, D, b"a X {5}x\r\n", vec![f(b"a X {5}x\r\n")], b""),
        (Cmd, D, b"a X {}\r\na X {+}\r\n", vec![f(b"a X {}\r\n"), f(b"a X {+}\r\n")], b""),
        (Cmd, D, b"a X {1{2}\r\nxy\r\n", vec![Ev::Cont(2), f(b"a X {1{2}\r\nxy\r\n")], b""),
        // refused synchronising literal: line consumed, framing goes on
        (Cmd, D, b"a APPEND x {65537}\r\nb NOOP\r\n", vec![ltl(t("a"), 65537, 65536, false), f(b"b NOOP\r\n")], b""),
        (Cmd, D, b"a X {4294967295}\r\n", vec![ltl(t("a"), 4294967295, 65536, false)], b""),
        (Cmd, D, b"a X {99999999999999999999}\r\n", vec![ltl(t("a"), u64::MAX, 65536, false)], b""),
        (Cmd, D, b"(bad X {70000}\r\n", vec![ltl(None, 70000, 65536, false)], b""),
        // LITERAL-: {n+} over 4096 is fatal, the bytes are on their way
        (Cmd, D, b"a LOGIN {4096+}\r\n", vec![], b"a LOGIN {4096+}\r\n"),
        (Cmd, D, b"a LOGIN {4097+}\r\nxxxx", vec![ltl(t("a"), 4097, 4096, true)], b"xxxx"),
        (Cmd, D, b"a X {18446744073709551616+}\r\n", vec![ltl(t("a"), u64::MAX, 4096, true)], b""),
        // line caps: 16 bytes with the line end is fine, 17 is not
        (Cmd, SMALL, b"a NOOP 1234567\r\n", vec![f(b"a NOOP 1234567\r\n")], b""),
        (Cmd, SMALL, b"a NOOP 12345678\r\nb NOOP\r\n", vec![long(t("a"), 16), f(b"b NOOP\r\n")], b""),
        (Cmd, SMALL, b"a NOOP 0123456789abcdef", vec![long(t("a"), 16)], b""),
        (Cmd, SMALL, b"0123456789abcdefghij\r\nb\r\n", vec![long(None, 16), f(b"b\r\n")], b""),
        (Cmd, SMALL, b"a+b NOOP 0123456789\r\n", vec![long(None, 16)], b""),
        // the skipped line ends in {n}: the client waits, we go on
        (Cmd, SMALL, b"a X 0123456789abcdef {3}\r\nb NOOP\r\n", vec![long(t("a"), 16), f(b"b NOOP\r\n")], b""),
        // the skipped line ends in {n+}: the bytes would be read as commands
        (Cmd, SMALL, b"a X 0123456789abcdef {3+}\r\nabc\r\n",
            vec![long(t("a"), 16), Ev::E(FrameError::DiscardedLiteral { tag: t("a") })], b"abc\r\n"),
        // literal caps
        (Cmd, SMALL, b"a {8}\r\n12345678\r\n", vec![Ev::Cont(8), f(b"a {8}\r\n12345678\r\n")], b""),
        (Cmd, SMALL, b"a {9}\r\nb\r\n", vec![ltl(t("a"), 9, 8, false), f(b"b\r\n")], b""),
        (Cmd, SMALL, b"a {4+}\r\n1234\r\n", vec![f(b"a {4+}\r\n1234\r\n")], b""),
        (Cmd, SMALL, b"a {5+}\r\n12345\r\n", vec![ltl(t("a"), 5, 4, true)], b"12345\r\n"),
        // the frame cap limits later literals and lines of the same frame
        // 24 bytes exactly; one more and the literal is refused (room is
        // kept for the line end after it)
        (Cmd, frame_cap, b"a {8}\r\n12345678 {2}\r\nbc\n",
            vec![Ev::Cont(8), Ev::Cont(2), f(b"a {8}\r\n12345678 {2}\r\nbc\n")], b""),
        (Cmd, frame_cap, b"a {8}\r\n12345678 {3}\r\nb\r\n",
            vec![Ev::Cont(8), ltl(t("a"), 3, 2, false), f(b"b\r\n")], b""),
        (Cmd, frame_cap, b"a {8}\r\n12345678 {2}\r\nbcd\n",
            vec![Ev::Cont(8), Ev::Cont(2), long(t("a"), 1)], b""),
        // no room left for a line end: even {0} is refused
        (Cmd, Limits { max_frame: 7, ..SMALL }, b"a {0}\n\n", vec![Ev::Cont(0), f(b"a {0}\n\n")], b""),
        (Cmd, Limits { max_frame: 7, ..SMALL }, b"ab {0}\n\n", vec![ltl(t("ab"), 0, 0, false), f(b"\n")], b""),
        (Cmd, frame_cap, b"a {8}\r\n12345678 12345678\r\n", vec![Ev::Cont(8), long(t("a"), 9)], b""),
        // responses: literals follow at once, no continuation
        (Resp, D, b"* 1 FETCH (BODY[] {3}\r\nabc)\r\n", vec![f(b"* 1 FETCH (BODY[] {3}\r\nabc)\r\n")], b""),
        (Resp, D, b"* 1 FETCH (BODY[] {3}\r\nab", vec![], b"* 1 FETCH (BODY[] {3}\r\nab"),
        (Resp, D, b"* ID (\"a\" {2+}\r\nxy)\r\n", vec![f(b"* ID (\"a\" {2+}\r\nxy)\r\n")], b""),
        (Resp, D, b"+ go\r\na1 OK done\r\n", vec![f(b"+ go\r\n"), f(b"a1 OK done\r\n")], b""),
        (Resp, SMALL, b"* X {9}\r\n123456789\r\n", vec![ltl(None, 9, 8, true)], b"123456789\r\n"),
        (Resp, SMALL, b"a1 OK {9}\r\n", vec![ltl(t("a1"), 9, 8, true)], b""),
        (Resp, SMALL, b"* OK 0123456789abcdef {3}\r\nabc",
            vec![long(None, 16), Ev::E(FrameError::DiscardedLiteral { tag: None })], b"abc"),
        (Resp, SMALL, b"* OK 0123456789abcdef\r\n* OK\r\n", vec![long(None, 16), f(b"* OK\r\n")], b""),
    ];
    for (i, (side, limits, input, want, left)) in cases.into_iter().enumerate() {
        let mut fr = framer(side, limits);
        let mut src = BytesMut::from(input);
        let mut got = Vec::new();
        drain(&mut fr, &mut src, &mut got);
        assert_eq!(got, want, "case {i}: {:?}", String::from_utf8_lossy(input));
        assert_eq!(
            &src[..],
            left,
            "case {i} leftover: {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn framer_stays_stopped_after_a_fatal_error() {
    let mut fr = Framer::for_commands(Limits::PRE_AUTH);
    let mut src = BytesMut::from(&b"a LOGIN {5000+}\r\n"[..]);
    let err = fr.decode(&mut src).unwrap_err();
    assert!(err.is_fatal());
    assert_eq!(err.tag(), t("a").as_ref());
    src.extend_from_slice(b"b NOOP\r\n");
    assert_eq!(fr.decode(&mut src), Err(FrameError::Stopped));
    assert_eq!(&src[..], b"b NOOP\r\n");
    assert!(FrameError::Stopped.is_fatal());
    assert_eq!(FrameError::Stopped.tag(), None);
}

#[test]
fn framer_error_flags() {
    assert!(!FrameError::LineTooLong {
        tag: None,
        limit: 1
    }
    .is_fatal());
    assert!(FrameError::DiscardedLiteral { tag: None }.is_fatal());
    let e = FrameError::LiteralTooLarge {
        tag: t("x"),
        size: 2,
        limit: 1,
        fatal: false,
    };
    assert!(!e.is_fatal());
    assert_eq!(e.to_string(), "literal too large (2 bytes, limit 1)");
}

#[test]
fn continuation_carries_the_tag() {
    let mut fr = Framer::for_commands(Limits::PRE_AUTH);
    let mut src = BytesMut::from(&b"A001 LOGIN {5}\r\n"[..]);
    assert_eq!(
        fr.decode(&mut src),
        Ok(Decoded::NeedContinuation {
            tag: t("A001"),
            size: 5
        })
    );
    assert_eq!(fr.decode(&mut src), Ok(Decoded::Incomplete));
}

#[test]
fn zero_limits_are_raised() {
    let fr = Framer::for_commands(Limits {
        max_line: 0,
        max_literal: 0,
        max_nonsync_literal: 0,
        max_frame: 0,
    });
    assert_eq!(fr.limits().max_line, 1);
    assert_eq!(fr.limits().max_frame, 1);
}
