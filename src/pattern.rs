//! Small matchers for the rules a config writes down: address patterns
//! (`allowed_senders`, `allowed_recipients`) and networks (`allow_from`).
//! Pure functions, no I/O.

use std::fmt;
use std::net::IpAddr;

/// An address pattern: `*` matches any run of characters, `?` one
/// character, everything else itself; case-insensitive (domains are, and
/// no mail system in use treats local parts by case). `<>` matches the null
/// sender only. Examples: `scanner@office.example`, `*@office.example`,
/// `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    lower: Vec<char>,
}

impl Pattern {
    /// A pattern, or why it is not one.
    pub fn parse(s: &str) -> Result<Pattern, &'static str> {
        let t = s.trim();
        if t.is_empty() {
            return Err("an empty pattern matches nothing; use \"*\" for any address or \"<>\" for the null sender");
        }
        if t.chars()
            .any(|c| c.is_whitespace() || c.is_control() || (c == '<' || c == '>') && t != "<>")
        {
            return Err("a pattern is an address with * and ?, like \"*@example.com\"");
        }
        Ok(Pattern {
            text: t.to_owned(),
            lower: t.to_lowercase().chars().collect(),
        })
    }

    /// Whether `addr` (without angle brackets; empty for the null sender)
    /// matches.
    pub fn matches(&self, addr: &str) -> bool {
        if addr.is_empty() {
            return self.text == "<>";
        }
        let a: Vec<char> = addr.to_lowercase().chars().collect();
        glob(&self.lower, &a)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The first of `patterns` that `addr` matches.
pub fn first_match<'a>(patterns: &'a [Pattern], addr: &str) -> Option<&'a Pattern> {
    patterns.iter().find(|p| p.matches(addr))
}

/// Iterative wildcard match with one backtrack point: linear in practice,
/// O(n·m) at worst, never exponential.
fn glob(p: &[char], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A network in CIDR form (`192.168.1.50/32`, `::1/128`; a bare address
/// is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn parse(s: &str) -> Result<Net, &'static str> {
        const HOW: &str = "not a network like \"192.168.1.50/32\", \"127.0.0.1\" or \"::1/128\"";
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| HOW)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|n| *n <= max).ok_or(HOW)?,
            None => max,
        };
        Ok(Net { addr, prefix })
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// A single host, or a network inside loopback: what `check-config`
    /// does not warn about.
    pub fn is_narrow(&self) -> bool {
        let host = self.prefix == if self.addr.is_ipv4() { 32 } else { 128 };
        host || self.addr.is_loopback() && self.prefix >= 8
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let rows: &[(&str, &str, bool)] = &[
            ("scanner@office.example", "scanner@office.example", true),
            ("scanner@office.example", "Scanner@Office.Example", true),
            ("scanner@office.example", "scanner2@office.example", false),
            ("*@office.example", "a@office.example", true),
            ("*@office.example", "a@evil.example", false),
            ("*@office.example", "a@office.example.evil", false),
            ("*@*.example", "a@b.example", true),
            ("s?@x", "s1@x", true),
            ("s?@x", "s12@x", false),
            ("*", "anything@anywhere", true),
            ("*", "", false),
            ("<>", "", true),
            ("<>", "a@b", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbYd", false),
            ("**", "x", true),
        ];
        for (p, a, want) in rows {
            assert_eq!(Pattern::parse(p).unwrap().matches(a), *want, "{p} ~ {a}");
        }
        for bad in ["", " ", "a b@c", "<a@b>", "a\u{1}"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn glob_is_not_exponential() {
        let p = Pattern::parse(&"*a".repeat(40)).unwrap();
        assert!(!p.matches(&"a".repeat(39)));
        assert!(!p.matches(&format!("{}b", "a".repeat(5000))));
    }

    #[test]
    fn nets() {
        let n = Net::parse("192.168.1.0/24").unwrap();
        assert!(n.contains("192.168.1.50".parse().unwrap()));
        assert!(!n.contains("192.168.2.1".parse().unwrap()));
        assert!(n.contains("::ffff:192.168.1.9".parse().unwrap()));
        assert!(!n.is_narrow());
        let h = Net::parse("127.0.0.1").unwrap();
        assert_eq!(h.to_string(), "127.0.0.1/32");
        assert!(h.contains("127.0.0.1".parse().unwrap()));
        assert!(!h.contains("127.0.0.2".parse().unwrap()));
        assert!(h.is_narrow());
        assert!(Net::parse("127.0.0.0/8").unwrap().is_narrow());
        assert!(!Net::parse("0.0.0.0/0").unwrap().is_narrow());
        assert!(Net::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Net::parse("::1/128")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Net::parse("::/0")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        for bad in ["", "1.2.3.4/33", "::1/129", "host", "1.2.3.4/x"] {
            assert!(Net::parse(bad).is_err(), "{bad:?}");
        }
    }
}
