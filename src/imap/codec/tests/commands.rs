//! IMAP codec tests: commands: known answers.

use super::*;

#[test]
fn command_known_answers() {
    for (input, want, left) in command_cases() {
        let (got, rest) = first_command(input);
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
fn command_known_answers_without_framer() {
    for (input, want) in raw_command_cases() {
        assert_eq!(
            parse_command(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn auth_response_known_answers() {
    for (input, want) in auth_response_cases() {
        assert_eq!(
            parse_auth_response(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// RFC 2971 §3.3: up to 30 field/value pairs, values up to 1024 octets:
/// an ID that large frames before login and parses.
#[test]
fn full_size_id_before_login() {
    let pairs: Vec<String> = (0..30)
        .map(|i| format!("\"field{i:02}\" \"{}\"", "v".repeat(1024)))
        .collect();
    let input = format!("t1 ID ({})\r\n", pairs.join(" "));
    assert!(input.len() > 31_000);
    let mut fr = Framer::for_commands(Limits::PRE_AUTH);
    let mut src = BytesMut::from(input.as_bytes());
    let frame = match fr.decode(&mut src).unwrap() {
        Decoded::Frame(frame) => frame,
        other => panic!("{other:?}"),
    };
    match parse_command(frame.as_bytes()).unwrap().kind {
        CommandKind::Id(Some(p)) => {
            assert_eq!(p.len(), 30);
            assert_eq!(p[29].1.as_deref().map(str::len), Some(1024));
        }
        other => panic!("{other:?}"),
    }
}
