//! POP3 codec tests: properties.

use super::*;
use proptest::prelude::*;

/// Verbs `parse_command` knows; `Command::Other` never has one.
const KNOWN: [&str; 9] = [
    "CAPA", "STLS", "QUIT", "NOOP", "RSET", "USER", "PASS", "AUTH", "APOP",
];

/// Text with no NUL, CR or LF, and no space at either end.
fn word_ends() -> impl Strategy<Value = String> {
    prop_oneof![
        r"[!-~]([ -~]{0,20}[!-~])?",
        r"[^\x00\r\n ]([^\x00\r\n]{0,20}[^\x00\r\n ])?",
    ]
}

/// Text with no NUL, CR or LF.
fn line_text() -> impl Strategy<Value = String> {
    prop_oneof![r"[ -~]{0,30}", r"[^\x00\r\n]{0,30}", r"[ =*a]{0,4}"]
}

fn upper_word() -> impl Strategy<Value = String> {
    prop_oneof![r"[A-Z][A-Z0-9_-]{0,10}", r"[^\x00\r\n a-z]{1,6}"]
}

/// Any command `parse_command` can return.
fn command() -> impl Strategy<Value = Command> {
    let initial = prop_oneof![
        Just(None),
        Just(Some(String::new())),
        word_ends()
            .prop_filter("= is the empty response", |s| s != "=")
            .prop_map(Some),
    ];
    prop_oneof![
        Just(Command::Capa),
        Just(Command::Stls),
        Just(Command::Quit),
        Just(Command::Noop),
        Just(Command::Rset),
        word_ends().prop_map(Command::User),
        r"[^\x00\r\n]{1,40}".prop_map(|p| Command::Pass(Secret::new(p))),
        Just(auth("", None)),
        (upper_word(), initial).prop_map(|(mechanism, initial)| Command::Auth {
            mechanism,
            initial: initial.map(Secret::new),
        }),
        (word_ends(), r"[^\x00\r\n ]{1,32}")
            .prop_map(|(name, digest)| Command::Apop { name, digest }),
        (
            upper_word().prop_filter("a known verb", |v| !KNOWN.contains(&v.as_str())),
            line_text()
        )
            .prop_map(|(verb, args)| Command::Other { verb, args }),
    ]
}

/// Lines that look like POP3 often enough to reach every branch.
fn pop_line() -> impl Strategy<Value = Vec<u8>> {
    let verb = prop_oneof![
        proptest::sample::select(&KNOWN[..]).prop_map(str::to_owned),
        proptest::sample::select(&["user", "Pass", "auth", "apop", "stat", "LIST", "TOP", ""][..])
            .prop_map(str::to_owned),
        r"[ -~]{0,6}",
    ];
    let piece = prop_oneof![
        Just(" ".to_owned()),
        Just("=".to_owned()),
        Just("*".to_owned()),
        r"[ -~]{0,10}",
        any::<String>(),
    ];
    prop_oneof![
        4 => (verb, proptest::collection::vec(piece, 0..5))
            .prop_map(|(v, p)| format!("{v}{}", p.concat()).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A byte stream of POP3-ish lines with every kind of line end.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b".".to_vec()),
        Just(b".\r\n".to_vec()),
        Just(b"..".to_vec()),
        "[A-Z]{1,4} [a-z0-9]{0,6}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn cuts(len: usize, picks: &[prop::sample::Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// What a reader gets from `take_line`: lines, and `None` for each line over
/// the cap.
type Framed = (Vec<Option<Vec<u8>>>, Vec<u8>, bool);

/// Reads `input` in pieces ending at `cuts`, as an I/O layer would: take
/// lines until `Incomplete`, drop an over-long line up to its line end.
/// Returns the lines, what is left buffered, and whether it is dropping.
fn frame(input: &[u8], cuts: &[usize], max: usize) -> Framed {
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let mut dropping = false;
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        buf.extend_from_slice(&input[start..end]);
        start = end;
        loop {
            if dropping {
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        buf.drain(..=i);
                        dropping = false;
                    }
                    None => {
                        buf.clear();
                        break;
                    }
                }
            }
            match take_line(&buf, max) {
                Line::Incomplete => {
                    assert!(buf.len() <= max + 1, "holds {} > {max} + 1", buf.len());
                    break;
                }
                Line::Done { len, consumed } => {
                    assert!(len <= max && consumed <= len + 2);
                    events.push(Some(buf[..len].to_vec()));
                    buf.drain(..consumed);
                }
                Line::TooLong { consumed, complete } => {
                    events.push(None);
                    buf.drain(..consumed);
                    dropping = !complete;
                }
            }
        }
    }
    (events, buf, dropping)
}

/// Feeds `input` in pieces, calling `take_multiline` on what has arrived
/// after each, until it is not `Incomplete`.
fn multiline_in_reads(
    input: &[u8],
    cuts: &[usize],
    max_line: usize,
    max_total: usize,
) -> MultiLine {
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let got = take_multiline(&input[..end], max_line, max_total);
        if got != MultiLine::Incomplete {
            return got;
        }
        assert!(
            end <= max_total,
            "Incomplete with {end} bytes over {max_total}"
        );
    }
    MultiLine::Incomplete
}

/// `r` as `encode_response` is documented to send it.
fn sanitised(r: &Response) -> Response {
    let clean = |t: &str| t.replace(['\r', '\n', '\0'], " ");
    match r {
        Response::Continue(d) => Response::Continue(clean(d)),
        Response::Status { status, code, text } => {
            let valid = |c: &str| {
                c.split('/').all(|l| {
                    !l.is_empty() && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                })
            };
            let code = code
                .as_deref()
                .filter(|c| valid(c))
                .map(str::to_ascii_uppercase);
            let mut text = clean(text);
            let reads_as_code = text
                .strip_prefix('[')
                .and_then(|t| t.split_once(']'))
                .is_some_and(|(c, _)| valid(c));
            if code.is_none() && reads_as_code {
                text.replace_range(..1, "(");
            }
            Response::Status {
                status: status.clone(),
                code,
                text,
            }
        }
    }
}

fn response() -> impl Strategy<Value = Response> {
    let code = prop_oneof![
        Just(None),
        proptest::sample::select(
            &[
                "AUTH",
                "SYS/TEMP",
                "sys/perm",
                "IN-USE",
                "LOGIN-DELAY",
                "",
                "A B",
                "A]B",
                "X//Y"
            ][..]
        )
        .prop_map(|c| Some(c.to_owned())),
        r"[A-Za-z0-9/-]{0,8}".prop_map(Some),
    ];
    let text = prop_oneof![
        line_text(),
        any::<String>(),
        r"\[[A-Za-z/ -]{0,6}\]?[ -~]{0,6}",
        r"[ a\r\n\x00\[\]]{0,8}",
    ];
    let status = prop_oneof![Just(Status::Ok), Just(Status::Err)];
    prop_oneof![
        3 => (status, code, text.clone())
            .prop_map(|(status, code, text)| Response::Status { status, code, text }),
        1 => text.prop_map(Response::Continue),
    ]
}

/// The line of `wire` without its CRLF; `wire` must be exactly one line.
fn one_line(wire: &[u8]) -> &[u8] {
    let line = wire.strip_suffix(b"\r\n").expect("ends with CRLF");
    assert!(
        !line.contains(&b'\n') && !line.contains(&b'\r'),
        "{:?}",
        show(wire)
    );
    line
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn commands_round_trip(cmd in command()) {
        let wire = encode_command(&cmd);
        prop_assert_eq!(parse_command(one_line(&wire)), Ok(cmd), "{:?}", show(&wire));
    }

    #[test]
    fn parsed_commands_encode_to_themselves(line in pop_line()) {
        let parsed = parse_command(&line);
        // The keyword's case does not matter.
        let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        let mut upper = line.clone();
        upper[..end].make_ascii_uppercase();
        prop_assert_eq!(&parse_command(&upper), &parsed);
        if let Ok(cmd) = parsed {
            let wire = encode_command(&cmd);
            prop_assert_eq!(parse_command(one_line(&wire)), Ok(cmd));
        }
    }

    #[test]
    fn auth_answers_round_trip(line in pop_line()) {
        if let Ok(a) = parse_auth_answer(&line) {
            let wire = encode_auth_answer(&a);
            prop_assert_eq!(one_line(&wire), &line[..]);
            prop_assert_eq!(parse_auth_answer(one_line(&wire)), Ok(a));
        }
    }

    #[test]
    fn responses_round_trip_up_to_sanitising(r in response()) {
        let wire = encode_response(&r);
        let again = parse_response(one_line(&wire));
        prop_assert_eq!(&again, &Ok(sanitised(&r)), "{:?}", show(&wire));
        // Sanitising is done once: encoding the result changes nothing.
        prop_assert_eq!(encode_response(&again.unwrap()), wire);
    }

    #[test]
    fn parsed_responses_encode_to_themselves(
        line in prop_oneof![
            pop_line(),
            (proptest::sample::select(&["+OK", "-ERR", "+", "+OK ", "-ERR [", "+ "][..]), pop_line())
                .prop_map(|(s, l)| [s.as_bytes(), &l].concat()),
        ],
    ) {
        if let Ok(r) = parse_response(&line) {
            let wire = encode_response(&r);
            prop_assert_eq!(parse_response(one_line(&wire)), Ok(r));
        }
    }

    #[test]
    fn take_line_reads_alike_in_any_pieces(
        input in stream(),
        max in prop_oneof![0usize..12, Just(MAX_COMMAND)],
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let whole = frame(&input, &[], max);
        prop_assert_eq!(&frame(&input, &cuts(input.len(), &picks), max), &whole);
        let bytewise: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(frame(&input, &bytewise, max), whole);
    }

    #[test]
    fn take_multiline_reads_alike_in_any_pieces(
        input in stream(),
        max_line in 0usize..12,
        max_total in 0usize..80,
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let whole = take_multiline(&input, max_line, max_total);
        let cuts = cuts(input.len(), &picks);
        prop_assert_eq!(&multiline_in_reads(&input, &cuts, max_line, max_total), &whole);
        let bytewise: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(&multiline_in_reads(&input, &bytewise, max_line, max_total), &whole);
        if let MultiLine::Done { consumed, .. } = whole {
            prop_assert!(consumed <= max_total && input[consumed - 1] == b'\n');
        }
    }

    #[test]
    fn multiline_round_trips(
        lines in proptest::collection::vec(
            prop_oneof![line_text(), Just(".".to_owned()), r"\.{1,3}[a-z]{0,2}", any::<String>()]
                .prop_map(|l| l.replace(['\r', '\n'], "")),
            0..12,
        ),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut wire = encode_multiline(&lines);
        let len = wire.len();
        wire.extend_from_slice(&tail);
        prop_assert_eq!(
            take_multiline(&wire, usize::MAX, len),
            MultiLine::Done { lines, consumed: len }
        );
    }

    #[test]
    fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600), max in 0usize..600) {
        let _ = take_line(&buf, max);
        let _ = take_multiline(&buf, max, max);
        let _ = parse_command(&buf);
        let _ = parse_auth_answer(&buf);
        let _ = parse_response(&buf);
    }
}
