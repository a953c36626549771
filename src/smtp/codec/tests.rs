//! SMTP codec tests: known-answer tables and properties (proptest).

use super::*;

#[test]
fn lines() {
    let cases: &[(&[u8], usize, Line)] = &[
        (b"", 10, Line::Incomplete),
        (b"NOOP", 10, Line::Incomplete),
        (
            b"NOOP\r\nQUIT",
            10,
            Line::Done {
                len: 4,
                consumed: 6,
            },
        ),
        (
            b"NOOP\nX",
            10,
            Line::Done {
                len: 4,
                consumed: 5,
            },
        ),
        (
            b"\r\n",
            10,
            Line::Done {
                len: 0,
                consumed: 2,
            },
        ),
        (
            b"0123456789",
            10,
            Line::TooLong {
                consumed: 10,
                complete: false,
            },
        ),
        (
            b"0123456789ab\r\nNOOP",
            10,
            Line::TooLong {
                consumed: 14,
                complete: true,
            },
        ),
        (
            b"012345678\n",
            10,
            Line::Done {
                len: 9,
                consumed: 10,
            },
        ),
    ];
    for (input, max, want) in cases {
        assert_eq!(
            take_line(input, *max),
            *want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn commands() {
    use Command::*;
    let ok: &[(&str, Command)] = &[
        ("EHLO client.example", Ehlo("client.example".into())),
        ("ehlo [127.0.0.1]", Ehlo("[127.0.0.1]".into())),
        ("HELO x", Helo("x".into())),
        (
            "MAIL FROM:<a@b.c>",
            Mail {
                from: Path::new("a@b.c"),
                params: MailParams::default(),
            },
        ),
        (
            "mail from: <a@b.c>",
            Mail {
                from: Path::new("a@b.c"),
                params: MailParams::default(),
            },
        ),
        (
            "MAIL FROM:<>",
            Mail {
                from: Path::null(),
                params: MailParams::default(),
            },
        ),
        (
            "MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME SMTPUTF8",
            Mail {
                from: Path::new("a@b.c"),
                params: MailParams {
                    size: Some(1000),
                    body: Some(Body::EightBitMime),
                    smtputf8: true,
                },
            },
        ),
        (
            "MAIL FROM:<a@b.c> AUTH=<>",
            Mail {
                from: Path::new("a@b.c"),
                params: MailParams::default(),
            },
        ),
        (
            "MAIL FROM:<@r1,@r2:a@b.c>",
            Mail {
                from: Path::new("a@b.c"),
                params: MailParams::default(),
            },
        ),
        (
            "MAIL FROM:<\"a b\"@c.d>",
            Mail {
                from: Path::new("\"a b\"@c.d"),
                params: MailParams::default(),
            },
        ),
        (
            "RCPT TO:<x@y.z>",
            Rcpt {
                to: Path::new("x@y.z"),
            },
        ),
        (
            "RCPT TO:<jöran@exämple.se>",
            Rcpt {
                to: Path::new("jöran@exämple.se"),
            },
        ),
        ("DATA", Data),
        ("rset", Rset),
        ("NOOP anything", Noop),
        ("QUIT", Quit),
        ("VRFY someone", Vrfy),
        ("HELP", Help),
        ("STARTTLS", StartTls),
        (
            "AUTH PLAIN",
            Auth {
                mechanism: "PLAIN".into(),
                initial: None,
            },
        ),
        (
            "auth plain AGEAYg==",
            Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into()),
            },
        ),
        (
            "AUTH LOGIN =",
            Auth {
                mechanism: "LOGIN".into(),
                initial: Some("=".into()),
            },
        ),
    ];
    for (line, want) in ok {
        assert_eq!(parse_command(line.as_bytes()).as_ref(), Ok(want), "{line}");
    }
    let bad: &[(&[u8], CommandError)] = &[
        (b"", CommandError::Unknown),
        (b"FOO", CommandError::Unknown),
        (b"BDAT 10 LAST", CommandError::Unknown),
        (b"EHLO", CommandError::Syntax("EHLO/HELO needs a domain")),
        (
            b"MAIL <a@b>",
            CommandError::Syntax("expected MAIL FROM:<address>"),
        ),
        (
            b"MAIL FROM:a@b.c",
            CommandError::Syntax("address must be in angle brackets"),
        ),
        (
            b"MAIL FROM:<a@b.c",
            CommandError::Syntax("missing closing '>'"),
        ),
        (
            b"MAIL FROM:<a@b.c>x",
            CommandError::Syntax("garbage after address"),
        ),
        (
            b"MAIL FROM:<ab.c>",
            CommandError::Syntax("address needs local@domain"),
        ),
        (
            b"MAIL FROM:<a b@c.d>",
            CommandError::Syntax("bad character in local part"),
        ),
        // fuzz/corpus/smtp_command/regression-at-in-local-part
        (
            b"mail from: <@rela]e:@0u@60t>",
            CommandError::Syntax("bad character in local part"),
        ),
        (
            b"RCPT TO:<a@b@c.d>",
            CommandError::Syntax("bad character in local part"),
        ),
        (
            b"RCPT TO:<\"a\rb\"@c.d>",
            CommandError::Syntax("control character in local part"),
        ),
        (b"MAIL FROM:<a@b..c>", CommandError::Syntax("bad domain")),
        (
            b"MAIL FROM:<a@b.c> SIZE=x",
            CommandError::Syntax("SIZE needs a number"),
        ),
        (
            b"MAIL FROM:<a@b.c> RET=FULL",
            CommandError::UnsupportedParam("RET=FULL".into()),
        ),
        (
            b"MAIL FROM:<a@b.c> BODY=BINARYMIME",
            CommandError::UnsupportedParam("BODY=BINARYMIME".into()),
        ),
        (
            b"RCPT TO:<>",
            CommandError::Syntax("empty recipient address"),
        ),
        (
            b"RCPT TO:<a@b.c> NOTIFY=NEVER",
            CommandError::UnsupportedParam("NOTIFY=NEVER".into()),
        ),
        (
            b"DATA x",
            CommandError::Syntax("this command takes no arguments"),
        ),
        (b"AUTH", CommandError::Syntax("AUTH needs a mechanism")),
        (
            b"AUTH PL/AIN",
            CommandError::Syntax("bad SASL mechanism name"),
        ),
        (
            b"AUTH PLAIN a b",
            CommandError::Syntax("AUTH takes a mechanism and one response"),
        ),
        (b"NOOP\0", CommandError::BadBytes),
        (b"NOOP \xff", CommandError::BadBytes),
    ];
    for (line, want) in bad {
        assert_eq!(
            parse_command(line).as_ref(),
            Err(want),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn reply_encoding() {
    let r = Reply::plain(
        250,
        vec!["host".into(), "PIPELINING".into(), "SIZE 10".into()],
    );
    assert_eq!(
        r.to_bytes(),
        b"250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
    );
    let r = Reply::new(535, "5.7.8", "bad\r\ncredentials");
    assert_eq!(r.to_bytes(), b"535 5.7.8 bad  credentials\r\n");
    assert_eq!(r.enhanced(), Some("5.7.8"));
    assert_eq!(Reply::plain(220, vec!["hi there".into()]).enhanced(), None);
    assert_eq!(Reply::plain(250, vec![]).to_bytes(), b"250 \r\n");
}

#[test]
fn reply_parsing() {
    let cases: &[(&[u8], Result<ReplyParse, ReplyError>)] = &[
        (b"", Ok(ReplyParse::Incomplete)),
        (b"250 ok", Ok(ReplyParse::Incomplete)),
        (
            b"250 ok\r\nX",
            Ok(ReplyParse::Done(Reply::plain(250, vec!["ok".into()]), 8)),
        ),
        (
            b"250\r\n",
            Ok(ReplyParse::Done(Reply::plain(250, vec!["".into()]), 5)),
        ),
        (
            b"250-a\r\n250-b\r\n250 c\r\n",
            Ok(ReplyParse::Done(
                Reply::plain(250, vec!["a".into(), "b".into(), "c".into()]),
                21,
            )),
        ),
        (b"250-a\r\n250", Ok(ReplyParse::Incomplete)),
        (b"250-a\r\n251 b\r\n", Err(ReplyError::CodeMismatch)),
        (b"25 x\r\n", Err(ReplyError::Malformed)),
        (b"abc x\r\n", Err(ReplyError::Malformed)),
        (b"250x\r\n", Err(ReplyError::Malformed)),
        (b"199 x\r\n", Err(ReplyError::Malformed)),
        (b"600 x\r\n", Err(ReplyError::Malformed)),
    ];
    for (input, want) in cases {
        assert_eq!(
            &parse_reply(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let long = vec![b'2'; MAX_REPLY_LINE + 10];
    assert_eq!(parse_reply(&long), Err(ReplyError::TooLong));
    let mut many = Vec::new();
    for _ in 0..MAX_REPLY_LINES + 1 {
        many.extend_from_slice(b"250-x\r\n");
    }
    assert_eq!(parse_reply(&many), Err(ReplyError::TooManyLines));
}

fn decode_all(input: &[u8], max: usize) -> (Vec<u8>, Option<usize>, bool) {
    let mut d = DataDecoder::new(max);
    let mut out = Vec::new();
    match d.feed(input, &mut out) {
        DataProgress::End { consumed } => (out, Some(consumed), d.oversize()),
        DataProgress::More => (out, None, d.oversize()),
    }
}

#[test]
fn data_known_answers() {
    let cases: &[(&[u8], &[u8], Option<usize>)] = &[
        (b".\r\n", b"", Some(3)),
        (b"a\r\n.\r\n", b"a\r\n", Some(6)),
        (b"a\r\n.\r\nQUIT\r\n", b"a\r\n", Some(6)),
        (b"..a\r\n.\r\n", b".a\r\n", Some(8)),
        (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", Some(10)),
        (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n", Some(11)),
        (b"a\n.\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", Some(10)),
        (b"a\n.\r\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", Some(11)),
        (b"a\r\n.\nb\r\n.\r\n", b"a\r\n\r\nb\r\n", Some(11)),
        (b"a\rb\r\n.\r\n", b"a\rb\r\n", Some(8)),
        (b"a\r\n.\rb\r\n.\r\n", b"a\r\n\rb\r\n", Some(11)),
        (b"a\r\n.x", b"a\r\nx", None),
        (b"no end", b"no end", None),
    ];
    for (input, want, end) in cases {
        let (out, consumed, _) = decode_all(input, 1 << 20);
        assert_eq!(
            (out.as_slice(), consumed),
            (*want, *end),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn data_size_cap() {
    let (out, end, over) = decode_all(b"0123456789\r\n.\r\n", 5);
    assert_eq!((out.len(), end, over), (0, Some(15), true));
    let (out, end, over) = decode_all(b"0123\r\n.\r\n", 6);
    assert_eq!((out, end, over), (b"0123\r\n".to_vec(), Some(9), false));
}

#[test]
fn stuffing() {
    let mut out = Vec::new();
    stuff(b".a\r\nb\n.\r\nc", &mut out);
    assert_eq!(out, b"..a\r\nb\r\n..\r\nc\r\n.\r\n");
    assert_eq!(unstuff(&out).unwrap(), b".a\r\nb\r\n.\r\nc\r\n");
    out.clear();
    stuff(b"", &mut out);
    assert_eq!(out, b".\r\n");
}

mod props {
    use super::super::*;
    use proptest::prelude::*;

    fn crlf_message() -> impl Strategy<Value = Vec<u8>> {
        // Lines of arbitrary bytes without CR/LF, each ended by CRLF.
        proptest::collection::vec(
            proptest::collection::vec(
                any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
                0..20,
            )
            .prop_map(|mut l| {
                if !l.is_empty() && l[0] != b'.' && l.len() % 3 == 0 {
                    l.insert(0, b'.');
                }
                l
            }),
            0..20,
        )
        .prop_map(|lines| {
            let mut m = Vec::new();
            for l in lines {
                m.extend_from_slice(&l);
                m.extend_from_slice(b"\r\n");
            }
            m
        })
    }

    proptest! {
        #[test]
        fn unstuff_stuff_roundtrip(m in crlf_message()) {
            let mut s = Vec::new();
            stuff(&m, &mut s);
            prop_assert_eq!(unstuff(&s).unwrap(), m);
        }

        #[test]
        fn any_split_same_result(input in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64), cuts in proptest::collection::vec(0usize..64, 0..8)) {
            let mut whole = DataDecoder::new(1 << 20);
            let mut want = Vec::new();
            let want_end = match whole.feed(&input, &mut want) { DataProgress::End { consumed } => Some(consumed), _ => None };
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= input.len()).collect();
            cuts.sort_unstable();
            cuts.push(input.len());
            let mut d = DataDecoder::new(1 << 20);
            let mut got = Vec::new();
            let mut prev = 0;
            let mut got_end = None;
            for c in cuts {
                if let DataProgress::End { consumed } = d.feed(&input[prev..c], &mut got) {
                    got_end = Some(prev + consumed);
                    break;
                }
                prev = c;
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(got_end, want_end);
        }

        #[test]
        fn commands_never_panic(line in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_command(&line);
        }

        #[test]
        fn reply_encode_parse_roundtrip(
            code in 200u16..600,
            lines in proptest::collection::vec("[ -~]{0,80}", 1..6),
        ) {
            let r = Reply::plain(code, lines);
            let bytes = r.to_bytes();
            prop_assert_eq!(parse_reply(&bytes), Ok(ReplyParse::Done(r, bytes.len())));
        }

        #[test]
        fn replies_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_reply(&buf);
        }
    }
}
