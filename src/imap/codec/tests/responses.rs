//! IMAP codec tests: responses: known answers.

use super::*;

#[test]
fn response_known_answers() {
    for (input, want, left) in response_cases() {
        let (got, rest) = first_response(input);
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(
            rest,
            left,
            "leftover of {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn response_known_answers_without_framer() {
    for (input, want) in raw_response_cases() {
        assert_eq!(
            parse_response(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn greeting_known_answers() {
    for (input, want) in greeting_cases() {
        assert_eq!(
            parse_greeting(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let g = parse_greeting(b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] x\r\n").unwrap();
    assert!(has_capability(g.capabilities().unwrap(), "auth=xoauth2"));
    let g = parse_greeting(b"* OK x\r\n").unwrap();
    assert_eq!(g.capabilities(), None);
}

/// Every parse error kind appears in the tables above.
#[test]
fn every_parse_error_is_covered() {
    use crate::imap::codec::ParseErrorKind as E;
    let mut seen = Vec::new();
    let mut note = |r: Result<(), ParseError>| {
        if let Err(e) = r {
            seen.push(e.kind);
        }
    };
    for (_, r, _) in command_cases() {
        note(r.map(drop));
    }
    for (_, r) in raw_command_cases() {
        note(r.map(drop));
    }
    for (_, r) in auth_response_cases() {
        note(r.map(drop));
    }
    for (_, r, _) in response_cases() {
        note(r.map(drop));
    }
    for (_, r) in raw_response_cases() {
        note(r.map(drop));
    }
    for (_, r) in greeting_cases() {
        note(r.map(drop));
    }
    for kind in [
        E::Tag,
        E::CommandName,
        E::Space,
        E::LineEnd,
        E::Trailing,
        E::Argument,
        E::Quoted,
        E::Literal,
        E::Utf8,
        E::Base64,
        E::Atom,
        E::IdList,
        E::Status,
        E::Code,
        E::Capability,
        E::Greeting,
    ] {
        assert!(seen.contains(&kind), "no case for {kind:?}");
    }
}

#[test]
fn capability_helpers() {
    let caps = strings(&["IMAP4rev1", "Auth=XOAUTH2", "LITERAL-"]);
    assert!(has_capability(&caps, "AUTH=XOAUTH2"));
    assert!(has_capability(&caps, "imap4REV1"));
    assert!(!has_capability(&caps, "AUTH=PLAIN"));
    assert!(!has_capability(&caps, "AUTH=XOAUTH"));
    assert_eq!(
        LiteralSupport::from_capabilities(&caps),
        LiteralSupport::Minus
    );
    assert_eq!(
        LiteralSupport::from_capabilities(&strings(&["IMAP4rev1", "literal+"])),
        LiteralSupport::Plus
    );
    assert_eq!(
        LiteralSupport::from_capabilities(&strings(&["IMAP4rev2"])),
        LiteralSupport::Minus
    );
    assert_eq!(
        LiteralSupport::from_capabilities(&strings(&["IMAP4rev1"])),
        LiteralSupport::SyncOnly
    );
}

#[test]
fn tags() {
    assert_eq!(Tag::new("A001").unwrap().as_str(), "A001");
    assert_eq!(Tag::new("a]").unwrap().to_string(), "a]");
    for bad in [
        "", "a b", "a+", "*", "a{", "a%", "a\"", "a\\", "(", "\u{e9}", "a\r",
    ] {
        assert_eq!(Tag::new(bad), None, "{bad:?}");
    }
}
