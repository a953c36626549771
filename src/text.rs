//! Text that came from outside (a client, a server, a token endpoint), made
//! safe for one line of a reply or a log. Plain functions on `str`: every
//! layer may use them, and they use nothing of the crate.

/// No CR, LF or other controls (each becomes a space), at most `max`
/// characters; `…` marks a cut.
pub fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn controls_become_spaces_and_cuts_are_marked() {
        assert_eq!(sanitize("a\r\nb\0c", 10), "a  b c");
        assert_eq!(sanitize("abcdef", 3), "abc…");
        assert_eq!(sanitize("abc", 3), "abc");
    }
}
