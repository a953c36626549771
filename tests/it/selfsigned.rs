//! Upstreams with the certificate `openssl req -x509` makes by default
//! (self-signed, `CA:TRUE`): Dovecot on 127.0.0.5 (tests/peers/start).
//! With that file in `ca_file`, or with `tls_pin`, relay, IMAP and POP3
//! work; without, they fail in plain words; a wrong pin fails and `doctor`
//! prints the right fingerprint and the `tls_pin` line.

use std::time::Duration;

use crate::harness::*;
use crate::relay::{message, sink_messages, smtplib};

/// An account on the self-signed Dovecot with all three servers, and
/// `trust` (a `ca_file` or `tls_pin` line, or nothing).
fn config(user: &str, trust: &str) -> String {
    let host = peer_env("SELFSIGNED_HOST");
    format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[imap]\nlisten = \"127.0.0.1:0\"\n[pop3]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"ss\"\nread_via = \"ss\"\n{FAST_LIMITS}upstream_timeout = \"5s\"\n[accounts.ss]\nemail = \"{user}\"\nsmtp = {{ host = \"{host}\", port = {}, tls = \"implicit\" }}\nimap = {{ host = \"{host}\", port = {}, tls = \"implicit\" }}\npop3 = {{ host = \"{host}\", port = {}, tls = \"implicit\" }}\nauth = \"password\"\npassword_env = \"U_PW\"\n{trust}\n",
        peer_env("DOVECOT_SELFSIGNED_SUBMISSIONS_PORT"),
        peer_env("DOVECOT_SELFSIGNED_IMAPS_PORT"),
        peer_env("DOVECOT_SELFSIGNED_POP3S_PORT"),
    )
}

const READ: &str = r#"
import imaplib, poplib, sys
iport, pport, pw = sys.argv[1:4]
m = imaplib.IMAP4('127.0.0.1', int(iport))
try:
    print('imap', m.login('app', pw)[0])
    m.logout()
except imaplib.IMAP4.error as e:
    print('imap error', e)
p = poplib.POP3('127.0.0.1', int(pport))
p.user('app')
try:
    print('pop3', p.pass_(pw))
    print('stat', p.stat()[0])
    p.quit()
except poplib.error_proto as e:
    print('pop3 error', e)
"#;

fn read(p: &Postern) -> String {
    let (ok, out, err) = python(
        READ,
        &[
            &p.addr("imap").port().to_string(),
            &p.addr("pop3").port().to_string(),
            APP_PASSWORD,
        ],
    );
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    out
}

fn doctor(p: &Postern) -> (bool, String) {
    let (ok, out, err) = run_env(
        BIN,
        &["--config", p.config.to_str().unwrap(), "doctor", "ss"],
        &[("U_PW", "pw-u44")],
    );
    (ok, format!("{out}{err}"))
}

#[test]
fn ca_file_holding_the_server_certificate_itself() {
    let user = "u44@example.test";
    let trust = format!("ca_file = \"{}\"", peer_env("SELFSIGNED_CERT"));
    let p = Postern::start_with(&config(user, &trust), 3, &[("U_PW", "pw-u44")]);
    let m = marker("selfsigned-ca");
    let out = smtplib(&p, &message(&m, user), user, &["rcpt@example.org"]);
    assert!(out.contains("refused []"), "{out}\n{}", p.logs());
    assert_eq!(sink_messages(&m, 1, Duration::from_secs(10)).len(), 1);
    let out = read(&p);
    assert!(
        out.contains("imap OK") && out.contains("pop3 b'+OK"),
        "{out}"
    );
    let (ok, out) = doctor(&p);
    assert!(ok, "{out}");
    assert!(
        out.contains("accepted because it is listed in ca_file") && out.contains("CA:TRUE"),
        "{out}"
    );
    assert!(
        out.contains("imap 127.0.0.5") && out.contains("pop3 127.0.0.5"),
        "{out}"
    );
}

#[test]
fn without_trust_the_error_says_self_signed_and_doctor_gives_the_pin() {
    let user = "u44@example.test";
    let p = Postern::start_with(&config(user, ""), 3, &[("U_PW", "pw-u44")]);
    let m = marker("selfsigned-none");
    let out = smtplib(&p, &message(&m, user), user, &["rcpt@example.org"]);
    assert!(out.contains("self-signed"), "{out}");
    assert!(
        !out.contains("CaUsedAsEndEntity") && !out.contains("OtherError"),
        "{out}"
    );
    let out = read(&p);
    assert!(
        out.contains("imap error") && out.contains("self-signed"),
        "{out}"
    );
    assert!(
        out.contains("pop3 error") && out.contains("self-signed"),
        "{out}"
    );
    let (ok, out) = doctor(&p);
    assert!(!ok);
    let fp = peer_env("SELFSIGNED_FINGERPRINT");
    assert!(out.contains(&format!("fingerprint: sha256:{fp}")), "{out}");
    assert!(out.contains(&format!("tls_pin = \"sha256:{fp}\"")), "{out}");
    assert!(
        out.contains("(self-signed)") && out.contains("ca_file"),
        "{out}"
    );
}

#[test]
fn tls_pin_accepts_exactly_that_certificate() {
    let user = "u45@example.test";
    let fp = peer_env("SELFSIGNED_FINGERPRINT");
    let p = Postern::start_with(
        &config(user, &format!("tls_pin = \"sha256:{fp}\"")),
        3,
        &[("U_PW", "pw-u45")],
    );
    let m = marker("selfsigned-pin");
    let out = smtplib(&p, &message(&m, user), user, &["rcpt@example.org"]);
    assert!(out.contains("refused []"), "{out}\n{}", p.logs());
    assert_eq!(sink_messages(&m, 1, Duration::from_secs(10)).len(), 1);
    let out = read(&p);
    assert!(
        out.contains("imap OK") && out.contains("pop3 b'+OK"),
        "{out}"
    );
    drop(p);
    // One digit off: refused, and doctor names the right one.
    let last = fp.chars().last().unwrap();
    let wrong = format!(
        "{}{}",
        &fp[..fp.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let p = Postern::start_with(
        &config(user, &format!("tls_pin = \"sha256:{wrong}\"")),
        3,
        &[("U_PW", "pw-u45")],
    );
    let out = smtplib(&p, &message(&m, user), user, &["rcpt@example.org"]);
    assert!(out.contains("tls_pin"), "{out}");
    let (ok, out) = doctor(&p);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("tls_pin = \"sha256:{fp}\"")), "{out}");
}
