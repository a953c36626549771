//! What a person needs to know about a server's certificate: who it names,
//! who issued it, when it is valid, whether it is self-signed or a CA, and
//! its SHA-256 fingerprint (what `tls_pin` takes). Used by `doctor` and by
//! the words of a TLS failure. Parsing only (x509-parser); the trust
//! decision stays with rustls ([`crate::tls::AccountVerifier`]).

use std::fmt;
use std::net::IpAddr;

use rustls_pki_types::CertificateDer;

/// The SHA-256 of a certificate (what `tls_pin = "sha256:…"` names).
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(cert.as_ref()).into()
}

/// `sha256:` and 64 hexadecimal digits, as `tls_pin` takes it.
pub fn pin_text(fp: &[u8; 32]) -> String {
    let hex: String = fp.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Parses `sha256:HEX` (colons between the bytes allowed, any case).
pub fn parse_pin(s: &str) -> Option<[u8; 32]> {
    let hex: String = s
        .trim()
        .strip_prefix("sha256:")?
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A certificate, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Issued by itself (subject and issuer are the same name).
    pub self_signed: bool,
    /// `basicConstraints CA:TRUE`.
    pub is_ca: bool,
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
    /// Subject alternative names: DNS names and IP addresses.
    pub names: Vec<String>,
    pub fingerprint: [u8; 32],
}

impl CertInfo {
    /// The certificate's description, or `None` if it does not parse.
    pub fn parse(der: &CertificateDer<'_>) -> Option<CertInfo> {
        use x509_parser::prelude::*;
        let (_, c) = X509Certificate::from_der(der.as_ref()).ok()?;
        let names = match c.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(b) => ip_text(b),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let time = |t: &ASN1Time| jiff::Timestamp::from_second(t.timestamp()).ok();
        Some(CertInfo {
            subject: text(&c.subject().to_string()),
            issuer: text(&c.issuer().to_string()),
            self_signed: c.subject().as_raw() == c.issuer().as_raw(),
            is_ca: c.is_ca(),
            not_before: time(&c.validity().not_before)?,
            not_after: time(&c.validity().not_after)?,
            names,
            fingerprint: fingerprint(der),
        })
    }

    /// Whether `now` lies inside the validity period.
    pub fn valid_at(&self, now: jiff::Timestamp) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Whether one of the names covers `host` (a `*.` wildcard covers one
    /// label), as a client checks it.
    pub fn covers(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.names.iter().any(|n| n.parse::<IpAddr>() == Ok(ip));
        }
        self.names.iter().any(|n| {
            let n = n.to_ascii_lowercase();
            match n.strip_prefix("*.") {
                Some(rest) => host
                    .split_once('.')
                    .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
                None => n == host,
            }
        })
    }

    /// The `tls_pin` line that accepts exactly this certificate.
    pub fn pin_line(&self) -> String {
        format!("tls_pin = \"{}\"", pin_text(&self.fingerprint))
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = |t: jiff::Timestamp| t.strftime("%Y-%m-%d").to_string();
        write!(f, "subject {}", self.subject)?;
        if self.self_signed {
            f.write_str(" (self-signed)")?;
        } else {
            write!(f, ", issuer {}", self.issuer)?;
        }
        if self.is_ca {
            f.write_str(", CA:TRUE")?;
        }
        write!(
            f,
            ", valid {} to {}",
            day(self.not_before),
            day(self.not_after)
        )?;
        if !self.names.is_empty() {
            write!(f, ", names {}", self.names.join(" "))?;
        }
        Ok(())
    }
}

fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        _ => None,
    }
}

/// Names come from the server: no control characters, bounded.
fn text(s: &str) -> String {
    crate::text::sanitize(s, 200)
}

/// Why the account's verifier refused a certificate, in the cases rustls
/// has no words for (carried inside `rustls::CertificateError::Other`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    /// Issued by itself and not listed in `ca_file`.
    #[error("the server's certificate is self-signed ({subject}) and is not in ca_file")]
    SelfSigned { subject: String },
    /// A CA certificate (`CA:TRUE`) presented as the server's own, not
    /// listed byte for byte in `ca_file`.
    #[error("the server presents a CA certificate (CA:TRUE) as its own ({subject})")]
    CaAsServer { subject: String },
    /// `tls_pin` is set and names another certificate; the server's is not
    /// otherwise trusted either.
    #[error("the server's certificate is not the one tls_pin names (the server's is {presented}) and is not otherwise trusted: {cause}")]
    PinMismatch { presented: String, cause: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(names: &[&str], ca: bool) -> CertificateDer<'static> {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "mail.example.test");
        p.distinguished_name = dn;
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let k = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&k).unwrap().der().clone()
    }

    #[test]
    fn describes_a_self_signed_ca_certificate() {
        let der = make(&["mail.example.test", "127.0.0.5", "*.wild.test"], true);
        let c = CertInfo::parse(&der).unwrap();
        assert!(c.self_signed && c.is_ca, "{c:?}");
        assert_eq!(c.subject, "CN=mail.example.test");
        assert!(c.covers("mail.example.test") && c.covers("MAIL.example.test."));
        assert!(c.covers("127.0.0.5") && !c.covers("127.0.0.1"));
        assert!(c.covers("a.wild.test") && !c.covers("a.b.wild.test") && !c.covers("wild.test"));
        assert!(!c.covers("other.test"));
        assert!(c.valid_at(jiff::Timestamp::now()));
        assert_eq!(c.fingerprint, fingerprint(&der));
        let shown = c.to_string();
        assert!(
            shown.contains("(self-signed)") && shown.contains("CA:TRUE"),
            "{shown}"
        );
        assert!(c.pin_line().starts_with("tls_pin = \"sha256:"));
        let leaf = CertInfo::parse(&make(&["x.test"], false)).unwrap();
        assert!(!leaf.is_ca);
        assert!(CertInfo::parse(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_none());
    }

    #[test]
    fn pins_parse_and_print() {
        let fp = [0xabu8; 32];
        let text = pin_text(&fp);
        assert_eq!(text.len(), 7 + 64);
        assert_eq!(parse_pin(&text), Some(fp));
        let colons: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_pin(&format!("sha256:{}", colons.join(":"))), Some(fp));
        for bad in ["", "sha256:", "sha1:abab", "sha256:zz", &text[..70]] {
            assert_eq!(parse_pin(bad), None, "{bad}");
        }
    }
}
