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
