//! IMAP codec tests: properties.

use super::*;

/// Bytes that look like IMAP often enough to reach every framer state.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..12),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        (0u64..24, any::<bool>()).prop_map(|(n, plus)| {
            format!("{{{n}{}}}\r\n", if plus { "+" } else { "" }).into_bytes()
        }),
        "[a-z0-9]{1,4} [A-Z]{1,6} ".prop_map(String::into_bytes),
        Just(b"{99999999999999999999}\r\n".to_vec()),
        Just(b"{5000+}\n".to_vec()),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::PRE_AUTH),
        Just(SMALL),
        Just(Limits {
            max_line: 6,
            max_literal: 3,
            max_nonsync_literal: 2,
            max_frame: 12,
        }),
        (1usize..40, 0usize..40, 0usize..40, 1usize..80).prop_map(|(l, lit, ns, fr)| Limits {
            max_line: l,
            max_literal: lit,
            max_nonsync_literal: ns,
            max_frame: fr,
        }),
    ]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Cmd), Just(Side::Resp)]
}

/// Feeds `input` in the given chunks; checks the caps after every
/// `Incomplete`. Returns the events and the bytes left.
fn feed(side: Side, limits: Limits, input: &[u8], cuts: &[usize]) -> (Vec<Ev>, Vec<u8>) {
    let mut fr = framer(side, limits);
    let limits = fr.limits();
    let mut src = BytesMut::new();
    let mut events = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        src.extend_from_slice(&input[start..end]);
        start = end;
        if drain(&mut fr, &mut src, &mut events) {
            // Stopped: the rest is never read; keep it as leftover.
            src.extend_from_slice(&input[start..]);
            break;
        }
        assert!(
            src.len() <= limits.max_frame,
            "holds {} > {}",
            src.len(),
            limits.max_frame
        );
    }
    for ev in &events {
        if let Ev::F(frame) = ev {
            assert!(frame.len() <= limits.max_frame);
        }
    }
    (events, src.to_vec())
}

/// A little base64 encoder so the tests need no crate for it.
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn b64_helper_matches_rfc4648() {
    assert_eq!(b64(b""), "");
    assert_eq!(b64(b"f"), "Zg==");
    assert_eq!(b64(b"fo"), "Zm8=");
    assert_eq!(b64(b"foo"), "Zm9v");
    assert_eq!(b64(b"foobar"), "Zm9vYmFy");
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,12}",
        "[a-z\"\\\\ ]{0,8}",
        "[a-z\u{e9}\u{20ac}\u{1f600}\r\n\t {}+0-9]{0,10}",
    ]
}

fn nul_free() -> impl Strategy<Value = String> {
    text().prop_map(|s| s.replace('\0', ""))
}

fn support() -> impl Strategy<Value = LiteralSupport> {
    prop_oneof![
        Just(LiteralSupport::SyncOnly),
        Just(LiteralSupport::Plus),
        Just(LiteralSupport::Minus),
    ]
}

fn any_tag() -> impl Strategy<Value = Tag> {
    "[A-Za-z0-9.\\]-]{1,8}".prop_map(|s| Tag::new(&s).expect("tag"))
}

fn id_params() -> impl Strategy<Value = IdParams> {
    proptest::option::of(proptest::collection::vec(
        (nul_free(), proptest::option::of(nul_free())),
        0..4,
    ))
}

fn command() -> impl Strategy<Value = Command> {
    let kind = prop_oneof![
        Just(CommandKind::Capability),
        Just(CommandKind::Noop),
        Just(CommandKind::Logout),
        Just(CommandKind::StartTls),
        id_params().prop_map(CommandKind::Id),
        (nul_free(), nul_free()).prop_map(|(user, pw)| CommandKind::Login {
            user,
            password: Secret::new(pw),
        }),
        (
            "[A-Z0-9_-]{1,12}",
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24))
        )
            .prop_map(|(mechanism, initial)| CommandKind::Authenticate {
                mechanism,
                initial: initial.map(|b| Secret::new(b64(&b))),
            }),
        "X[A-Z0-9]{0,8}".prop_map(|name| CommandKind::Other { name }),
    ];
    (any_tag(), kind).prop_map(|(tag, kind)| Command { tag, kind })
}

/// Sends encoded command parts through a command framer the way the I/O
/// layers would: each part after the first only after a continuation.
fn frame_parts(parts: &[Vec<u8>]) -> Vec<u8> {
    let limits = Limits {
        max_nonsync_literal: Limits::PRE_AUTH.max_literal,
        ..Limits::PRE_AUTH
    };
    let mut fr = Framer::for_commands(limits);
    let mut src = BytesMut::new();
    for (i, part) in parts.iter().enumerate() {
        src.extend_from_slice(part);
        let last = i + 1 == parts.len();
        let got = fr.decode(&mut src).expect("frames");
        if last {
            let Decoded::Frame(frame) = got else {
                panic!("no frame at the end: {got:?}");
            };
            assert!(src.is_empty());
            return frame.as_bytes().to_vec();
        }
        assert!(
            matches!(got, Decoded::NeedContinuation { .. }),
            "part {i}: {got:?}"
        );
        assert_eq!(fr.decode(&mut src), Ok(Decoded::Incomplete));
    }
    unreachable!("encode_command returns at least one part")
}

fn response() -> impl Strategy<Value = Response> {
    let cap = "[A-Za-z0-9=+.-]{1,10}";
    let code = prop_oneof![
        proptest::collection::vec(cap, 0..5).prop_map(Code::Capability),
        (
            "[A-Z][A-Z-]{0,10}".prop_filter("not CAPABILITY", |n| n != "CAPABILITY"),
            proptest::option::of("[^\\]\r\n\u{0}]{1,12}"),
        )
            .prop_map(|(name, args)| Code::Other { name, args }),
    ];
    let status = prop_oneof![
        Just(Status::Ok),
        Just(Status::No),
        Just(Status::Bad),
        Just(Status::PreAuth),
        Just(Status::Bye),
    ];
    let status_response = (
        proptest::option::of(any_tag()),
        status,
        proptest::option::of(code),
        text(),
    )
        .prop_map(|(tag, status, code, text)| {
            // PREAUTH and BYE are untagged only.
            let status = match (&tag, status) {
                (Some(_), Status::PreAuth | Status::Bye) => Status::Ok,
                (_, s) => s,
            };
            Response::Status(StatusResponse {
                tag,
                status,
                code,
                text,
            })
        });
    prop_oneof![
        status_response,
        proptest::collection::vec(cap, 0..6).prop_map(Response::Capability),
        id_params().prop_map(Response::Id),
        text().prop_map(Response::Continue),
    ]
}

/// What parsing an encoded response gives back: the value with its text
/// sanitised as the encoder does.
fn as_sent(response: &Response) -> Response {
    match response {
        Response::Status(s) => Response::Status(StatusResponse {
            text: clean_status_text(&s.text, s.code.is_some()),
            ..s.clone()
        }),
        Response::Continue(text) => Response::Continue(clean_continue_text(text)),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn chunking_does_not_change_frames(
        side in side(),
        limits in limits(),
        input in stream(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        cuts.sort_unstable();
        let whole = feed(side, limits, &input, &[]);
        let chunked = feed(side, limits, &input, &cuts);
        prop_assert_eq!(&chunked, &whole);
        let bytewise: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(feed(side, limits, &input, &bytewise), whole);
    }

    #[test]
    fn login_round_trips(
        tag in any_tag(),
        user in text(),
        password in text(),
        literals in support(),
    ) {
        let command = Command {
            tag,
            kind: CommandKind::Login { user: user.clone(), password: Secret::new(password.clone()) },
        };
        let encoded = encode_command(&command, literals);
        if user.contains('\0') || password.contains('\0') {
            prop_assert_eq!(encoded, Err(EncodeError::Nul));
        } else {
            let parts = encoded.expect("encodes");
            let frame = frame_parts(&parts);
            prop_assert_eq!(parse_command(&frame), Ok(command));
        }
    }

    #[test]
    fn commands_round_trip(command in command(), literals in support()) {
        let parts = encode_command(&command, literals).expect("encodes");
        let frame = frame_parts(&parts);
        prop_assert_eq!(parse_command(&frame), Ok(command));
    }

    #[test]
    fn responses_round_trip(response in response()) {
        let bytes = encode_response(&response).expect("encodes");
        let mut fr = Framer::for_responses(Limits::PRE_AUTH);
        let mut src = BytesMut::from(&bytes[..]);
        let frame = match fr.decode(&mut src) {
            Ok(Decoded::Frame(frame)) => frame,
            other => panic!("not one frame: {other:?} for {bytes:?}"),
        };
        prop_assert!(src.is_empty(), "more than one frame: {:?}", bytes);
        prop_assert_eq!(parse_response(frame.as_bytes()), Ok(as_sent(&response)));
    }

    #[test]
    fn auth_responses_round_trip(data in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))) {
        let response = match data {
            Some(d) => AuthResponse::Data(Secret::new(b64(&d))),
            None => AuthResponse::Cancel,
        };
        let line = encode_auth_response(&response).expect("encodes");
        prop_assert_eq!(parse_auth_response(&line), Ok(response));
    }

    /// decode(encode(decode(b))) == decode(b) for any command bytes that parse.
    #[test]
    fn parsed_commands_reencode(input in stream()) {
        if let Ok(command) = parse_command(&input) {
            let parts = encode_command(&command, LiteralSupport::Plus).expect("a parsed command encodes");
            prop_assert_eq!(parse_command(&parts.concat()), Ok(command));
        }
    }

    /// Re-encoding a parsed response is stable after one round of sanitising.
    #[test]
    fn parsed_responses_reencode(input in stream()) {
        if let Ok(response) = parse_response(&input) {
            if let Ok(bytes) = encode_response(&response) {
                let again = parse_response(&bytes).expect("our encoding parses");
                let bytes2 = encode_response(&again).expect("re-encodes");
                prop_assert_eq!(parse_response(&bytes2), Ok(again));
            }
        }
    }

    #[test]
    fn parsers_never_panic(input in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_command(&input);
        let _ = parse_response(&input);
        let _ = parse_greeting(&input);
        let _ = parse_auth_response(&input);
    }

    #[test]
    fn parsers_never_panic_on_imapish_input(input in stream()) {
        let _ = parse_command(&input);
        let _ = parse_response(&input);
        let _ = parse_greeting(&input);
        let _ = parse_auth_response(&input);
    }
}
