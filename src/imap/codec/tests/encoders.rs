//! IMAP codec tests: encoders: known answers.

use super::*;

fn enc(kind: CommandKind, literals: LiteralSupport) -> Result<Vec<Vec<u8>>, EncodeError> {
    encode_command(
        &Command {
            tag: tag("a"),
            kind,
        },
        literals,
    )
}

fn parts(v: &[&[u8]]) -> Result<Vec<Vec<u8>>, EncodeError> {
    Ok(v.iter().map(|p| p.to_vec()).collect())
}

#[test]
fn command_encoder_known_answers() {
    use crate::imap::codec::CommandKind as K;
    use crate::imap::codec::LiteralSupport::*;
    let big = "\u{e9}".repeat(2049); // 4098 bytes
    let big_tail = format!("{big}\r\n");
    let big_plus = format!("a LOGIN \"u\" {{4098+}}\r\n{big}\r\n");
    #[rustfmt::skip]
    let cases: Vec<EncodeCase> = vec![
        (K::Capability, SyncOnly, parts(&[b"a CAPABILITY\r\n"])),
        (K::StartTls, SyncOnly, parts(&[b"a STARTTLS\r\n"])),
        (K::Logout, SyncOnly, parts(&[b"a LOGOUT\r\n"])),
        (K::Noop, SyncOnly, parts(&[b"a NOOP\r\n"])),
        (login("alice", "secret"), SyncOnly, parts(&[b"a LOGIN \"alice\" \"secret\"\r\n"])),
        (login("al ice", "p\"w\\d"), SyncOnly, parts(&[b"a LOGIN \"al ice\" \"p\\\"w\\\\d\"\r\n"])),
        (login("", "\t"), SyncOnly, parts(&[b"a LOGIN \"\" \"\t\"\r\n"])),
        (login("j\u{f6}rg", "pw"), SyncOnly, parts(&[b"a LOGIN {5}\r\n", b"j\xc3\xb6rg \"pw\"\r\n"])),
        (login("j\u{f6}rg", "pw"), Plus, parts(&[b"a LOGIN {5+}\r\nj\xc3\xb6rg \"pw\"\r\n"])),
        (login("j\u{f6}rg", "pw"), Minus, parts(&[b"a LOGIN {5+}\r\nj\xc3\xb6rg \"pw\"\r\n"])),
        (login("u", "a\r\nb"), SyncOnly, parts(&[b"a LOGIN \"u\" {4}\r\n", b"a\r\nb\r\n"])),
        (login("u", &big), Minus, parts(&[b"a LOGIN \"u\" {4098}\r\n", big_tail.as_bytes()])),
        (login("u", &big), Plus, parts(&[big_plus.as_bytes()])),
        (login("u", "a\0b"), Plus, Err(EncodeError::Nul)),
        (login("u\0", "b"), Plus, Err(EncodeError::Nul)),
        (auth("XOAUTH2", Some("dXNlcj1h")), SyncOnly, parts(&[b"a AUTHENTICATE XOAUTH2 dXNlcj1h\r\n"])),
        (auth("XOAUTH2", None), SyncOnly, parts(&[b"a AUTHENTICATE XOAUTH2\r\n"])),
        (auth("PLAIN", Some("")), SyncOnly, parts(&[b"a AUTHENTICATE PLAIN =\r\n"])),
        (auth("PLAIN", Some("abc")), SyncOnly, Err(EncodeError::Base64)),
        (auth("PLAIN", Some("YW Jj")), SyncOnly, Err(EncodeError::Base64)),
        (auth("X Y", None), SyncOnly, Err(EncodeError::Atom)),
        (auth("", None), SyncOnly, Err(EncodeError::Atom)),
        (K::Id(None), SyncOnly, parts(&[b"a ID NIL\r\n"])),
        (id(&[]), SyncOnly, parts(&[b"a ID ()\r\n"])),
        (id(&[("name", Some("Postern")), ("os", None)]), SyncOnly, parts(&[b"a ID (\"name\" \"Postern\" \"os\" NIL)\r\n"])),
        (id(&[("name", Some("\u{e9}"))]), Plus, parts(&[b"a ID (\"name\" {2+}\r\n\xc3\xa9)\r\n"])),
        (id(&[("name", Some("\0"))]), Plus, Err(EncodeError::Nul)),
        (K::Other { name: "SELECT".into() }, SyncOnly, parts(&[b"a SELECT\r\n"])),
        (K::Other { name: "SEL ECT".into() }, SyncOnly, Err(EncodeError::Atom)),
    ];
    for (i, (kind, literals, want)) in cases.into_iter().enumerate() {
        assert_eq!(enc(kind, literals), want, "case {i}");
    }
}

#[test]
fn auth_response_encoder_known_answers() {
    let cases: Vec<(AuthResponse, Result<&[u8], EncodeError>)> = vec![
        (
            AuthResponse::Data(Secret::new("dXNlcg==")),
            Ok(b"dXNlcg==\r\n"),
        ),
        (AuthResponse::Data(Secret::new("")), Ok(b"\r\n")),
        (AuthResponse::Cancel, Ok(b"*\r\n")),
        (
            AuthResponse::Data(Secret::new("a b=")),
            Err(EncodeError::Base64),
        ),
        (
            AuthResponse::Data(Secret::new("*")),
            Err(EncodeError::Base64),
        ),
    ];
    for (response, want) in cases {
        assert_eq!(
            encode_auth_response(&response),
            want.map(<[u8]>::to_vec),
            "{response:?}"
        );
    }
}

#[test]
fn response_encoder_known_answers() {
    use crate::imap::codec::Status::{Bad, Bye, No, PreAuth};
    const OK: Status = Status::Ok;
    let ok_caps = status(
        None,
        OK,
        caps_code(&["IMAP4rev1", "AUTH=PLAIN", "ID"]),
        "Postern ready",
    );
    #[rustfmt::skip]
    let cases: Vec<(Response, Result<&[u8], EncodeError>)> = vec![
        (ok_caps, Ok(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN ID] Postern ready\r\n")),
        (status(t("a"), OK, caps_code(&["IMAP4rev1", "IDLE"]), "Logged in"), Ok(b"a OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")),
        (status(t("a"), No, other_code("AUTHENTICATIONFAILED", None), "Invalid\r\nX"), Ok(b"a NO [AUTHENTICATIONFAILED] Invalid  X\r\n")),
        (status(t("a"), Bad, other_code("TOOBIG", None), "literal too large"), Ok(b"a BAD [TOOBIG] literal too large\r\n")),
        (status(t("a"), No, other_code("UNAVAILABLE", Some("x y")), "later"), Ok(b"a NO [UNAVAILABLE x y] later\r\n")),
        (status(None, Bad, None, "[oops"), Ok(b"* BAD (oops\r\n")),
        (status(None, OK, other_code("ALERT", None), "[fine"), Ok(b"* OK [ALERT] [fine\r\n")),
        (status(t("a"), OK, None, ""), Ok(b"a OK .\r\n")),
        (status(t("a"), OK, None, "nul\0here"), Ok(b"a OK nul here\r\n")),
        (status(t("a"), No, None, "send {5}"), Ok(b"a NO send {5}.\r\n")),
        (status(t("a"), No, None, "send {5+}\r"), Ok(b"a NO send {5+} \r\n")),
        (status(t("a"), No, None, "send {5} x"), Ok(b"a NO send {5} x\r\n")),
        (status(None, Bye, None, "Logging out"), Ok(b"* BYE Logging out\r\n")),
        (status(None, PreAuth, None, "x"), Ok(b"* PREAUTH x\r\n")),
        (Response::Continue("Ready for literal".into()), Ok(b"+ Ready for literal\r\n")),
        (Response::Continue(String::new()), Ok(b"+ \r\n")),
        (Response::Continue("a\r\nb {3}".into()), Ok(b"+ a  b {3}.\r\n")),
        (Response::Capability(strings(&["IMAP4rev1", "STARTTLS"])), Ok(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n")),
        (Response::Id(None), Ok(b"* ID NIL\r\n")),
        (Response::Id(Some(vec![("name".into(), Some("Postern".into())), ("version".into(), None)])),
            Ok(b"* ID (\"name\" \"Postern\" \"version\" NIL)\r\n")),
        (Response::Id(Some(vec![("name".into(), Some("\u{e9}".into()))])), Ok(b"* ID (\"name\" {2}\r\n\xc3\xa9)\r\n")),
        (Response::Other(b"* 3 EXISTS\r\n".to_vec()), Ok(b"* 3 EXISTS\r\n")),
        // errors
        (status(t("a"), Bye, None, "x"), Err(EncodeError::TaggedStatus)),
        (status(t("a"), PreAuth, None, "x"), Err(EncodeError::TaggedStatus)),
        (status(None, OK, caps_code(&["A B"]), "x"), Err(EncodeError::Atom)),
        (status(None, OK, caps_code(&[""]), "x"), Err(EncodeError::Atom)),
        (status(None, OK, other_code("", None), "x"), Err(EncodeError::Atom)),
        (status(None, OK, other_code("X", Some("a]b")), "x"), Err(EncodeError::CodeArgs)),
        (status(None, OK, other_code("X", Some("")), "x"), Err(EncodeError::CodeArgs)),
        (status(None, OK, other_code("X", Some("a\nb")), "x"), Err(EncodeError::CodeArgs)),
        (Response::Capability(strings(&["IMAP4rev1", "(x)"])), Err(EncodeError::Atom)),
        (Response::Id(Some(vec![("na\0me".into(), None)])), Err(EncodeError::Nul)),
    ];
    for (response, want) in cases {
        assert_eq!(
            encode_response(&response),
            want.map(<[u8]>::to_vec),
            "{response:?}"
        );
    }
}

#[test]
fn secrets_do_not_reach_debug_output() {
    let input = b"a LOGIN alice hunter2\r\n";
    let mut fr = Framer::for_commands(Limits::PRE_AUTH);
    let mut src = BytesMut::from(&input[..]);
    let frame = match fr.decode(&mut src).unwrap() {
        Decoded::Frame(frame) => frame,
        other => panic!("{other:?}"),
    };
    let command = parse_command(frame.as_bytes()).unwrap();
    let printed = format!("{frame:?} {:?} {command:?}", Decoded::Frame(frame.clone()));
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("alice"));

    // AGFsaWNlAGh1bnRlcjI= is base64 of "\0alice\0hunter2"
    let command = parse_command(b"a AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=\r\n").unwrap();
    let response = parse_auth_response(b"AGFsaWNlAGh1bnRlcjI=\r\n").unwrap();
    let printed = format!("{command:?} {response:?}");
    assert!(!printed.contains("AGFsaWNlAGh1bnRlcjI"), "{printed}");
}
