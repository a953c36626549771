//! The local SMTP server with the capture route, driven by real clients:
//! Python smtplib, curl, swaks and raw sockets.

use std::time::{Duration, SystemTime};

use crate::harness::*;

fn config(tls: &str, extra: &str) -> String {
    format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\ntls = \"{tls}\"\n{}{FAST_LIMITS}{extra}",
        users_section("capture")
    )
}

/// A message with CRLF line ends and lines that start with dots.
fn message(marker: &str) -> Vec<u8> {
    format!(
        "From: Sender <from@example.test>\r\nTo: to1@example.test\r\nSubject: {marker}\r\n\r\nHello.\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n"
    )
    .into_bytes()
}

const SMTPLIB: &str = r#"
import smtplib, ssl, sys
mode, host, port, user, pw, mech, msgfile, cafile = sys.argv[1:9]
msg = open(msgfile, 'rb').read()
ctx = ssl.create_default_context(cafile=cafile) if cafile != '-' else None
if mode == 'ssl':
    s = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=20)
else:
    s = smtplib.SMTP(host, int(port), timeout=20)
s.ehlo()
if mode == 'starttls':
    s.starttls(context=ctx)
    s.ehlo()
s.user, s.password = user, pw
if mech == 'PLAIN':
    code, resp = s.auth('PLAIN', s.auth_plain)
else:
    code, resp = s.auth('LOGIN', s.auth_login, initial_response_ok=False)
print('auth', code)
refused = s.sendmail('from@example.test', ['to1@example.test', 'to2@example.test'], msg)
print('refused', refused)
s.quit()
"#;

fn smtplib_send(
    p: &Postern,
    mode: &str,
    mech: &str,
    cafile: Option<&str>,
    msg: &[u8],
) -> (bool, String, String) {
    let f = p.dir.path().join(format!(
        "msg-{}.eml",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&f, msg).unwrap();
    let port = p.smtp().port().to_string();
    python(
        SMTPLIB,
        &[
            mode,
            "127.0.0.1",
            &port,
            "app",
            APP_PASSWORD,
            mech,
            f.to_str().unwrap(),
            cafile.unwrap_or("-"),
        ],
    )
}

fn self_signed_cert(p: &Postern) -> String {
    p.data_dir()
        .join("tls/localhost.pem")
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn smtplib_plain_auth_plain_captures_byte_for_byte() {
    let p = Postern::start(&config("none", ""), 1);
    let m = marker("plain");
    let msg = message(&m);
    let (ok, out, err) = smtplib_send(&p, "plain", "PLAIN", None, &msg);
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    assert!(out.contains("auth 235"), "{out}");
    let (head, body) = find_captured(&p.capture_new(), &m);
    assert_eq!(body, msg, "captured bytes differ");
    assert!(head.contains("X-Postern-User: app\r\n"), "{head}");
    assert!(
        head.contains("X-Postern-Mail-From: <from@example.test>\r\n"),
        "{head}"
    );
    assert!(
        head.contains(
            "X-Postern-Rcpt-To: <to1@example.test>\r\nX-Postern-Rcpt-To: <to2@example.test>\r\n"
        ),
        "{head}"
    );
}

#[test]
fn smtplib_auth_login() {
    let p = Postern::start(&config("none", ""), 1);
    let m = marker("login");
    let (ok, out, err) = smtplib_send(&p, "plain", "LOGIN", None, &message(&m));
    assert!(ok && out.contains("auth 235"), "{out}\n{err}");
    let (_, body) = find_captured(&p.capture_new(), &m);
    assert_eq!(body, message(&m));
}

#[test]
fn smtplib_starttls_with_generated_certificate() {
    let p = Postern::start(&config("starttls", ""), 1);
    let m = marker("starttls");
    let (ok, out, err) = smtplib_send(
        &p,
        "starttls",
        "PLAIN",
        Some(&self_signed_cert(&p)),
        &message(&m),
    );
    assert!(ok && out.contains("auth 235"), "{out}\n{err}\n{}", p.logs());
    let (_, body) = find_captured(&p.capture_new(), &m);
    assert_eq!(body, message(&m));
}

#[test]
fn smtplib_implicit_tls() {
    let p = Postern::start(&config("implicit", ""), 1);
    let m = marker("implicit");
    let (ok, out, err) = smtplib_send(
        &p,
        "ssl",
        "LOGIN",
        Some(&self_signed_cert(&p)),
        &message(&m),
    );
    assert!(ok && out.contains("auth 235"), "{out}\n{err}\n{}", p.logs());
    let (_, body) = find_captured(&p.capture_new(), &m);
    assert_eq!(body, message(&m));
}

#[test]
fn generated_certificate_is_reused() {
    let p = Postern::start(&config("implicit", ""), 1);
    let cert = std::fs::read(self_signed_cert(&p)).unwrap();
    let dir = p.dir.path().to_owned();
    let cfg = p.config.clone();
    // Keep the temp dir alive: move it out of the first instance.
    let mut p = p;
    let tmp = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
    drop(p);
    let p2 = Postern::spawn(tmp, cfg, 1, &[]);
    assert_eq!(
        std::fs::read(dir.join("var/tls/localhost.pem")).unwrap(),
        cert
    );
    drop(p2);
}

#[test]
fn curl_smtp_and_smtps() {
    let p = Postern::start(&config("none", ""), 1);
    let m = marker("curl");
    let f = p.dir.path().join("curl.eml");
    std::fs::write(&f, message(&m)).unwrap();
    let url = format!("smtp://127.0.0.1:{}", p.smtp().port());
    let (ok, out, err) = run(
        "curl",
        &[
            "-sS",
            &url,
            "-u",
            &format!("app:{APP_PASSWORD}"),
            "--mail-from",
            "from@example.test",
            "--mail-rcpt",
            "to1@example.test",
            "-T",
            f.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    let (_, body) = find_captured(&p.capture_new(), &m);
    assert_eq!(body, message(&m));

    let p = Postern::start(&config("implicit", ""), 1);
    let m = marker("curls");
    std::fs::write(&f, message(&m)).unwrap();
    let url = format!("smtps://localhost:{}", p.smtp().port());
    let (ok, out, err) = run(
        "curl",
        &[
            "-sS",
            &url,
            "--resolve",
            &format!("localhost:{}:127.0.0.1", p.smtp().port()),
            "--cacert",
            &self_signed_cert(&p),
            "-u",
            &format!("app:{APP_PASSWORD}"),
            "--mail-from",
            "from@example.test",
            "--mail-rcpt",
            "to1@example.test",
            "-T",
            f.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    let (_, body) = find_captured(&p.capture_new(), &m);
    assert_eq!(body, message(&m));
}

#[test]
fn swaks_plain_and_starttls() {
    let p = Postern::start(&config("starttls", ""), 1);
    let server = format!("127.0.0.1:{}", p.smtp().port());
    for (tls, mech) in [(false, "LOGIN"), (true, "PLAIN")] {
        let m = marker("swaks");
        let mut args = vec![
            "--server",
            &server,
            "-a",
            mech,
            "-au",
            "app",
            "-ap",
            APP_PASSWORD,
            "--from",
            "from@example.test",
            "--to",
            "to1@example.test",
            "--header",
            "",
        ];
        let subject = format!("Subject: {m}");
        args[13] = &subject;
        let ca = self_signed_cert(&p);
        if tls {
            args.extend(["--tls", "--tls-verify", "--tls-ca-path", &ca]);
        }
        let (ok, out, err) = run("swaks", &args);
        assert!(ok, "swaks tls={tls}: {out}\n{err}\n{}", p.logs());
        let (_, body) = find_captured(&p.capture_new(), &m);
        assert!(String::from_utf8_lossy(&body).contains(&m));
    }
}

#[test]
fn pipelined_transaction_over_raw_socket() {
    let p = Postern::start(&config("none", ""), 1);
    let m = marker("pipe");
    let mut c = Raw::connect(p.smtp());
    assert!(c.reply().starts_with("220 "));
    let ehlo = c.cmd("EHLO raw.example");
    for ext in [
        "PIPELINING",
        "SIZE ",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(ehlo.contains(ext), "{ehlo}");
    }
    let auth = b64(format!("\0app\0{APP_PASSWORD}").as_bytes());
    // One write: AUTH, MAIL, two RCPTs, DATA (RFC 2920: DATA ends the group).
    c.send(format!("AUTH PLAIN {auth}\r\nMAIL FROM:<a@example.test> BODY=8BITMIME\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n").as_bytes());
    assert!(c.reply().starts_with("235 2.7.0"));
    assert!(c.reply().starts_with("250 2.1.0"));
    assert!(c.reply().starts_with("250 2.1.5"));
    assert!(c.reply().starts_with("250 2.1.5"));
    assert!(c.reply().starts_with("354 "));
    // Message, end of data and the next transaction's commands in one write.
    c.send(format!("Subject: {m}\r\n\r\n..stuffed\r\n.\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<d@example.test>\r\nDATA\r\n").as_bytes());
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0 Ok: captured as "), "{r}");
    assert!(c.reply().starts_with("250 2.1.0"));
    assert!(c.reply().starts_with("250 2.1.5"));
    assert!(c.reply().starts_with("354 "));
    c.send(format!("Subject: {m}-2\r\n\r\nsecond\r\n.\r\nQUIT\r\n").as_bytes());
    assert!(c.reply().starts_with("250 2.0.0"));
    assert!(c.reply().starts_with("221 2.0.0"));
    let (_, body) = find_captured(&p.capture_new(), &format!("{m}\r\n"));
    assert_eq!(
        body,
        format!("Subject: {m}\r\n\r\n.stuffed\r\n").into_bytes()
    );
    let (head, _) = find_captured(&p.capture_new(), &format!("{m}-2"));
    assert!(head.contains("<d@example.test>"));
}

#[test]
fn documented_refusals() {
    let p = Postern::start(
        &config("none", "max_message_size = 2000\nmax_recipients = 3\n"),
        1,
    );
    let mut c = Raw::connect(p.smtp());
    c.reply();
    c.cmd("EHLO raw.example");
    // MAIL before AUTH: never an open relay.
    assert!(c.cmd("MAIL FROM:<a@example.test>").starts_with("530 5.7.0"));
    // Wrong password.
    let bad = b64(b"\0app\0wrong");
    assert!(c.cmd(&format!("AUTH PLAIN {bad}")).starts_with("535 5.7.8"));
    // Unknown user: same answer.
    let bad = b64(b"\0nobody\0wrong");
    assert!(c.cmd(&format!("AUTH PLAIN {bad}")).starts_with("535 5.7.8"));
    // Cancelled exchange.
    assert!(c.cmd("AUTH PLAIN").starts_with("334"));
    assert!(c.cmd("*").starts_with("501 5.7.0"));
    assert!(c.cmd("AUTH CRAM-MD5").starts_with("504 5.5.4"));
    let good = b64(format!("\0app\0{APP_PASSWORD}").as_bytes());
    assert!(c.cmd("AUTH PLAIN").starts_with("334"));
    assert!(c.cmd(&good).starts_with("235 2.7.0"));
    // SIZE over the limit.
    assert!(c
        .cmd("MAIL FROM:<a@example.test> SIZE=5000")
        .starts_with("552 5.3.4"));
    assert!(c
        .cmd("MAIL FROM:<a@example.test> SIZE=100")
        .starts_with("250"));
    for i in 0..3 {
        assert!(c
            .cmd(&format!("RCPT TO:<r{i}@example.test>"))
            .starts_with("250"));
    }
    assert!(c.cmd("RCPT TO:<r4@example.test>").starts_with("452 4.5.3"));
    // Oversize during DATA: 552 after the end, and nothing is captured.
    assert!(c.cmd("DATA").starts_with("354"));
    let big = "x".repeat(100);
    for _ in 0..40 {
        c.send(format!("{big}\r\n").as_bytes());
    }
    let r = c.cmd(".");
    assert!(r.starts_with("552 5.3.4"), "{r}");
    // Over-long command line.
    let r = c.cmd(&format!("NOOP {}", "y".repeat(5000)));
    assert!(r.starts_with("500 5.5.2 Line too long"), "{r}");
    assert!(c.cmd("NOOP").starts_with("250"));
    // Sequence errors and syntax errors.
    assert!(c.cmd("RCPT TO:<x@example.test>").starts_with("503 5.5.1"));
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    assert!(c.cmd("MAIL FROM:<bad address>").starts_with("501 5.5.4"));
    assert!(c
        .cmd("MAIL FROM:<a@example.test> RET=HDRS")
        .starts_with("555 5.5.4"));
    assert!(c
        .cmd("MAIL FROM:<jörg@example.test>")
        .starts_with("553 5.6.7"));
    assert!(c.cmd("VRFY x").starts_with("252"));
    assert!(c.cmd("HELP").starts_with("214"));
    assert!(c.cmd("STARTTLS").starts_with("502 5.5.1"));
    assert!(c.cmd("QUIT").starts_with("221"));
    assert_eq!(maildir_files(&p.capture_new()).len(), 0);
}

#[test]
fn too_many_bad_commands_closes() {
    let p = Postern::start(&config("none", "max_bad_commands = 3\n"), 1);
    let mut c = Raw::connect(p.smtp());
    c.reply();
    for _ in 0..3 {
        assert!(c.cmd("BOGUS").starts_with("500 5.5.2"));
    }
    assert!(c.cmd("BOGUS").starts_with("500 5.5.2"));
    let r = c.reply();
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(c.closed());
}

#[test]
fn idle_timeout_closes_with_421() {
    let p = Postern::start(&config("none", "idle_timeout = \"1s\"\n"), 1);
    let mut c = Raw::connect(p.smtp());
    c.reply();
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(c.closed());
}

#[test]
fn repeated_failures_slow_down_one_user_only() {
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}[users.other]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\n[limits]\nauth_failure_delay = \"100ms\"\nauth_backoff_max = \"800ms\"\n",
        users_section("capture")
    );
    let p = Postern::start(&cfg, 1);
    let mut c = Raw::connect(p.smtp());
    c.reply();
    c.cmd("EHLO x");
    let bad = b64(b"\0app\0wrong");
    let mut last = Duration::ZERO;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        assert!(c.cmd(&format!("AUTH PLAIN {bad}")).starts_with("535"));
        last = t.elapsed();
    }
    assert!(
        last >= Duration::from_millis(800),
        "5th failure took {last:?}"
    );
    // Another user logs in at once (from the same address).
    let mut c2 = Raw::connect(p.smtp());
    c2.reply();
    c2.cmd("EHLO y");
    let good = b64(format!("\0other\0{APP_PASSWORD}").as_bytes());
    assert!(c2.cmd(&format!("AUTH PLAIN {good}")).starts_with("235"));
}

#[test]
fn sigterm_lets_data_in_flight_finish() {
    let p = Postern::start(&config("none", ""), 1);
    let m = marker("drain");
    let mut c = Raw::connect(p.smtp());
    c.reply();
    c.cmd("EHLO x");
    let good = b64(format!("\0app\0{APP_PASSWORD}").as_bytes());
    assert!(c.cmd(&format!("AUTH PLAIN {good}")).starts_with("235"));
    assert!(c.cmd("MAIL FROM:<a@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("Subject: {m}\r\n\r\nfirst half\r\n").as_bytes());
    // A second, idle client is told to go away.
    let mut idle = Raw::connect(p.smtp());
    idle.reply();
    let mut p = p;
    p.signal("TERM");
    assert!(
        p.wait_log("shutting down", Duration::from_secs(10)),
        "{}",
        p.logs()
    );
    let r = idle.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    // New connections are no longer accepted.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        std::net::TcpStream::connect(p.smtp()).is_err() || {
            let mut n = Raw::connect(p.smtp());
            n.closed()
        }
    );
    c.send(b"second half\r\n");
    let r = c.cmd(".");
    assert!(r.starts_with("250 2.0.0"), "{r}\n{}", p.logs());
    let r = c.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    let (_, body) = find_captured(&p.capture_new(), &m);
    assert!(String::from_utf8_lossy(&body).ends_with("first half\r\nsecond half\r\n"));
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        p.logs()
    );
}

#[test]
fn shipped_default_config_runs_and_captures() {
    // The shipped file, unchanged, in a scratch copy of the layout
    // (data_dir "../var" lands in the scratch folder, not the checkout).
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("config")).unwrap();
    let cfg = tmp.path().join("config/postern.toml");
    std::fs::copy(repo_root().join("config/postern.toml"), &cfg).unwrap();
    let p = Postern::spawn(tmp, cfg, 1, &[]);
    assert_eq!(p.smtp().port(), 2525);
    let m = marker("shipped");
    let f = p.dir.path().join("m.eml");
    std::fs::write(&f, message(&m)).unwrap();
    let (ok, out, err) = run(
        "curl",
        &[
            "-sS",
            "smtp://127.0.0.1:2525",
            "-u",
            "app:sandbox",
            "--mail-from",
            "me@example.test",
            "--mail-rcpt",
            "you@example.test",
            "-T",
            f.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    let (_, body) = find_captured(&p.dir.path().join("var/capture/new"), &m);
    assert_eq!(body, message(&m));
}
