//! Listener sets: any non-empty mix of SMTP, IMAP and POP3; several TLS
//! modes in one section; devices that cannot log in (anonymous_user with
//! allow_from); the generated certificate's name; quiet TLS logs.

use std::time::Duration;

use crate::harness::*;

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let (ok, out, err) = run_env(
        BIN,
        &["--config", path.to_str().unwrap(), "check-config"],
        &[("U_PW", "x")],
    );
    (ok, format!("{out}{err}"))
}

#[test]
fn a_config_without_listeners_says_what_to_add() {
    let (ok, out) = check_config(&format!(
        "[users.app]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\n"
    ));
    assert!(!ok);
    assert!(
        out.contains("no listener") && out.contains("[smtp]") && out.contains("[pop3]"),
        "{out}"
    );
}

/// IMAP only and POP3 only start and serve (through Dovecot); SMTP only is
/// every other test.
#[test]
fn imap_only_and_pop3_only() {
    let account = format!(
        "[users.app]\npassword_hash = \"{APP_HASH}\"\nread_via = \"dv\"\n[accounts.dv]\nemail = \"u46@example.test\"\nimap = {{ host = \"localhost\", port = {}, tls = \"implicit\" }}\npop3 = {{ host = \"localhost\", port = {}, tls = \"implicit\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"U_PW\"\n",
        peer_env("DOVECOT_IMAPS_PORT"),
        peer_env("DOVECOT_POP3S_PORT"),
        peer_env("PEERS_CA")
    );
    let env = [("U_PW", "pw-u46")];
    let p = Postern::start_with(
        &format!("data_dir = \"var\"\n[imap]\nlisten = \"127.0.0.1:0\"\n{account}"),
        1,
        &env,
    );
    let mut c = Raw::connect(p.addr("imap"));
    assert!(c.line().unwrap().starts_with("* OK"));
    let r = c.ask(&format!("a LOGIN app {APP_PASSWORD}"));
    assert!(r.starts_with("a OK"), "{r}\n{}", p.logs());
    drop(p);
    let p = Postern::start_with(
        &format!("data_dir = \"var\"\n[pop3]\nlisten = \"127.0.0.1:0\"\n{account}"),
        1,
        &env,
    );
    let mut c = Raw::connect(p.addr("pop3"));
    assert!(c.line().unwrap().starts_with("+OK"));
    assert!(c.ask("USER app").starts_with("+OK"));
    let r = c.ask(&format!("PASS {APP_PASSWORD}"));
    assert!(r.starts_with("+OK Logged in"), "{r}\n{}", p.logs());
    assert!(c.ask("STAT").starts_with("+OK"));
    assert!(c.ask("QUIT").starts_with("+OK"));
    // No TLS anywhere: check-config does not speak of a certificate.
    let (ok, out) = check_config(&format!("[pop3]\nlisten = \"127.0.0.1:0\"\n{account}"));
    assert!(ok, "{out}");
    assert!(!out.contains("self-signed"), "{out}");
    let (ok, out) = check_config(&format!(
        "[pop3]\nlisten = \"127.0.0.1:0\"\ntls = \"implicit\"\n{account}"
    ));
    assert!(ok && out.contains("self-signed"), "{out}");
}

const SMTPS: &str = r#"
import smtplib, ssl, sys
plain, implicit, ca, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP('127.0.0.1', int(plain), timeout=20)
s.starttls(context=ctx)
s.login('app', pw)
print('starttls', s.sendmail('a@example.test', ['b@example.test'], b'Subject: one\r\n\r\nx\r\n'))
s.quit()
s = smtplib.SMTP_SSL('127.0.0.1', int(implicit), context=ctx, timeout=20)
s.login('app', pw)
print('implicit', s.sendmail('a@example.test', ['b@example.test'], b'Subject: two\r\n\r\nx\r\n'))
s.quit()
"#;

/// One [smtp] section serving 587-style STARTTLS and 465-style implicit
/// TLS on two addresses; the generated certificate has a name a person
/// recognises, its fingerprint is logged, and TLS clients that send an IP
/// address as SNI do not make warnings.
#[test]
fn starttls_and_implicit_in_one_section_and_the_local_certificate() {
    let p = Postern::start(
        &format!(
            "data_dir = \"var\"\n[smtp]\nlisten = [{{ addr = \"127.0.0.1:0\", tls = \"starttls\" }}, {{ addr = \"127.0.0.1:0\", tls = \"implicit\" }}]\n{}",
            users_section("capture")
        ),
        2,
    );
    let cert = p.data_dir().join("tls/localhost.pem");
    let plain = p.addr_tls("smtp", "starttls");
    let implicit = p.addr_tls("smtp", "implicit");
    let (ok, out, err) = python(
        SMTPS,
        &[
            &plain.port().to_string(),
            &implicit.port().to_string(),
            cert.to_str().unwrap(),
            APP_PASSWORD,
        ],
    );
    assert!(ok, "{out}{err}\n{}", p.logs());
    assert!(
        out.contains("starttls {}") && out.contains("implicit {}"),
        "{out}"
    );
    let (ok, subject, err) = run(
        "openssl",
        &["x509", "-noout", "-subject", "-in", cert.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert!(subject.contains("Postern local ("), "{subject}");
    let (ok, fp, err) = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            cert.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let hex: String = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase();
    assert!(p.logs().contains(&format!("sha256:{hex}")), "{}", p.logs());
    // An IP address as SNI (what many clients send) is not a warning.
    let (ok, out, err) = run(
        "sh",
        &[
            "-c",
            &format!(
                "echo QUIT | timeout 10 openssl s_client -connect 127.0.0.1:{} -servername 127.0.0.1 -quiet 2>&1",
                implicit.port()
            ),
        ],
    );
    assert!(ok || out.contains("220"), "{out}{err}");
    assert!(p.wait_log("session ended", Duration::from_secs(5)));
    assert!(!p.logs().contains("Illegal SNI"), "{}", p.logs());
}

fn anonymous_config(extra: &str) -> String {
    format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\nanonymous_user = \"printer\"\nallow_from = [\"127.0.0.1/32\"]\n{}[users.printer]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\nallowed_senders = [\"scanner@office.test\"]\nallowed_recipients = [\"*@example.test\"]\n{extra}",
        users_section("capture")
    )
}

const ANON: &str = r#"
import smtplib, sys
port, source, sender, rcpt, marker = sys.argv[1:6]
s = smtplib.SMTP('127.0.0.1', int(port), timeout=20, source_address=(source, 0))
try:
    s.sendmail(sender, [rcpt], ('Subject: %s\r\n\r\nscan attached\r\n' % marker).encode())
    print('sent')
except smtplib.SMTPSenderRefused as e:
    print('sender refused', e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPRecipientsRefused as e:
    for r, (code, text) in e.recipients.items():
        print('rcpt refused', code, text.decode())
s.quit()
"#;

/// A scanner that cannot log in: from an allow_from address MAIL without
/// AUTH is the anonymous user (captured as it); a sender or recipient
/// outside its patterns gets 550 5.7.1 naming the rule; another address
/// (127.0.0.2) gets 530.
#[test]
fn anonymous_submission_from_allowed_addresses_only() {
    let p = Postern::start(&anonymous_config(""), 1);
    let port = p.smtp().port().to_string();
    let send = |source: &str, sender: &str, rcpt: &str, m: &str| {
        let (ok, out, err) = python(ANON, &[&port, source, sender, rcpt, m]);
        assert!(ok, "{out}{err}");
        out
    };
    let m = marker("scan");
    let out = send("127.0.0.1", "scanner@office.test", "boss@example.test", &m);
    assert_eq!(out.trim(), "sent");
    let (head, _) = find_captured(&p.capture_new(), &m);
    assert!(head.contains("printer"), "{head}");
    let out = send(
        "127.0.0.1",
        "evil@office.test",
        "boss@example.test",
        &marker("x"),
    );
    assert!(
        out.contains("sender refused 550 5.7.1") && out.contains("users.printer.allowed_senders"),
        "{out}"
    );
    let out = send(
        "127.0.0.1",
        "scanner@office.test",
        "someone@elsewhere.test",
        &marker("x"),
    );
    assert!(
        out.contains("rcpt refused 550 5.7.1") && out.contains("users.printer.allowed_recipients"),
        "{out}"
    );
    let out = send(
        "127.0.0.2",
        "scanner@office.test",
        "boss@example.test",
        &marker("x"),
    );
    assert!(out.contains("sender refused 530"), "{out}");
    // Logged-in users are unaffected.
    let mut c = Raw::connect(p.smtp());
    c.line();
    c.cmd("EHLO t");
    assert!(c
        .cmd(&format!(
            "AUTH PLAIN {}",
            b64(format!("\0app\0{APP_PASSWORD}").as_bytes())
        ))
        .starts_with("235"));
    assert!(c.cmd("MAIL FROM:<anyone@anywhere.test>").starts_with("250"));
}

#[test]
fn anonymous_user_rules_are_checked() {
    // The anonymous user must list its senders.
    let text = anonymous_config("").replace("allowed_senders = [\"scanner@office.test\"]\n", "");
    let (ok, out) = check_config(&text);
    assert!(
        !ok && out.contains("users.printer.allowed_senders"),
        "{out}"
    );
    // A network wider than a host is allowed, with a warning.
    let text = anonymous_config("").replace(
        "[\"127.0.0.1/32\"]",
        "[\"127.0.0.1/32\", \"192.168.0.0/16\"]",
    );
    let (ok, out) = check_config(&text);
    assert!(ok, "{out}");
    assert!(
        out.contains("WARNING smtp.allow_from: 192.168.0.0/16 is wider than a single host"),
        "{out}"
    );
    let (ok, out) = check_config(&anonymous_config(""));
    assert!(ok && !out.contains("WARNING"), "{out}");
    // Only SMTP takes anonymous clients.
    let (ok, out) = check_config(&format!(
        "[imap]\nlisten = \"127.0.0.1:0\"\nanonymous_user = \"app\"\nallow_from = [\"127.0.0.1\"]\n{}",
        users_section("capture")
    ));
    assert!(!ok && out.contains("only an [smtp] listener"), "{out}");
}

const RESET: &str = r#"
import socket, struct, sys, time
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.recv(1024)
s.sendall(b'EHLO x\r\n' if sys.argv[2] == 'smtp' else b'CAPA\r\n')
time.sleep(0.2)
s.sendall(b'NOOP\r\n')
# Close with a reset (linger 0) while Postern still has our replies to read.
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
s.close()
"#;

/// A client that resets the connection before login is logged at info with
/// the stage and the reason, not only as `end=IoError` at debug.
#[test]
fn a_reset_before_login_is_logged_with_stage_and_reason() {
    let p = Postern::start(
        &format!(
            "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[pop3]\nlisten = \"127.0.0.1:0\"\n{}",
            users_section("capture")
        ),
        2,
    );
    for proto in ["smtp", "pop3"] {
        let (ok, out, err) = python(RESET, &[&p.addr(proto).port().to_string(), proto]);
        assert!(ok, "{out}{err}");
    }
    assert!(
        p.wait_log("SMTP connection failed", Duration::from_secs(5))
            && p.wait_log("POP3 connection failed", Duration::from_secs(5)),
        "{}",
        p.logs()
    );
    let logs = p.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("SMTP connection failed"))
        .unwrap();
    assert!(
        line.contains(" INFO ") && line.contains("stage=") && line.contains("reason="),
        "{line}"
    );
}
