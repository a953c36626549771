//! Reloading a running `postern run` (SIGHUP, `postern reload`): a session
//! in the middle of DATA finishes on the config it started with, new
//! sessions see the new users, accounts and routes, listeners are opened
//! and closed, and a config that does not load or does not start is
//! refused with the old one still serving.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use crate::relay::{dovecot_account, message, sink_messages};

const NEW_PASSWORD: &str = "the-new-pass";

fn hash(password: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `postern reload` for this instance: (exit ok, stdout, stderr).
fn reload(p: &Postern) -> (bool, String, String) {
    run(
        BIN,
        &[
            "--config",
            p.config.to_str().unwrap(),
            "reload",
            "--wait",
            "20",
        ],
    )
}

/// An SMTP session logged in with AUTH PLAIN (or refused): the client and
/// the AUTH reply.
pub fn login(p: &Postern, user: &str, password: &str) -> (Raw, String) {
    let mut c = Raw::connect(p.smtp());
    c.line();
    c.cmd("EHLO t");
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(format!("\0{user}\0{password}").as_bytes())
    ));
    (c, r)
}

fn base(users: &str, extra: &str) -> String {
    format!("data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{users}{FAST_LIMITS}upstream_timeout = \"5s\"\n{extra}")
}

#[test]
fn reload_mid_data_keeps_the_session_and_swaps_users_and_accounts() {
    let mut p = Postern::start(&base(&users_section("capture"), ""), 1);
    let m = marker("reload-mid");

    // A session that is in the middle of DATA when the config changes.
    let (mut c, r) = login(&p, "app", APP_PASSWORD);
    assert!(r.starts_with("235"), "{r}");
    assert!(c.cmd("MAIL FROM:<app@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<rcpt@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("Subject: {m}-old\r\n\r\nfirst half\r\n").as_bytes());

    // The new config: app's password changed and its mail goes to a new
    // Dovecot account instead of capture.
    let pw_file = p.dir.path().join("dv.pass");
    std::fs::write(&pw_file, "pw-u53\n").unwrap();
    let new_users = format!(
        "[users.app]\npassword_hash = \"{}\"\nsend_via = \"dv\"\n",
        hash(NEW_PASSWORD)
    );
    let account = dovecot_account(
        "dv",
        "u53@example.test",
        "starttls",
        &format!("password_file = \"{}\"", pw_file.display()),
    );
    std::fs::write(&p.config, base(&new_users, &account)).unwrap();
    let (ok, out, err) = reload(&p);
    assert!(ok, "postern reload failed: {out}{err}\n{}", p.logs());
    assert!(out.contains("reloaded: 1 users, 1 accounts"), "{out}");

    // The session in flight finishes on the config it started with.
    c.send(b"second half\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}");
    let (_, body) = find_captured(&p.capture_new(), &format!("{m}-old"));
    assert!(String::from_utf8_lossy(&body).contains("second half"));
    assert!(c.cmd("QUIT").starts_with("221"));

    // New logins: the old password is refused, the new one relays.
    let (_, r) = login(&p, "app", APP_PASSWORD);
    assert!(r.starts_with("535"), "{r}");
    let (mut c, r) = login(&p, "app", NEW_PASSWORD);
    assert!(r.starts_with("235"), "{r}");
    assert!(c.cmd("MAIL FROM:<u53@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<rcpt@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let mut data = message(&format!("{m}-new"), "u53@example.test");
    data.extend_from_slice(b".\r\n");
    c.send(&data);
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}");
    let got = sink_messages(&format!("{m}-new"), 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert!(p.is_running());
}

#[test]
fn reload_opens_and_closes_listeners() {
    let mut p = Postern::start(&base(&users_section("capture"), ""), 1);
    let with_pop = base(
        &users_section("capture"),
        "[sandbox]\npop3 = \"127.0.0.1:0\"\n",
    );
    std::fs::write(&p.config, &with_pop).unwrap();
    let (ok, out, err) = reload(&p);
    assert!(ok, "{out}{err}\n{}", p.logs());
    assert!(out.contains("1 listeners opened, 0 closed"), "{out}");
    let pop = p.addr_tls("pop3", "none");
    let mut c = Raw::connect(pop);
    assert!(c.line().unwrap().starts_with("+OK"));

    // Dropped again: the address stops accepting; the session already
    // open on it goes on.
    std::fs::write(&p.config, base(&users_section("capture"), "")).unwrap();
    let (ok, out, _) = reload(&p);
    assert!(ok);
    assert!(out.contains("0 listeners opened, 1 closed"), "{out}");
    assert!(
        TcpStream::connect(pop).is_err(),
        "{pop} still accepts after the reload dropped it"
    );
    assert!(c.ask("CAPA").starts_with("+OK"));
    // The SMTP listener was kept, with its address.
    let (_, r) = login(&p, "app", APP_PASSWORD);
    assert!(r.starts_with("235"), "{r}");
    assert!(p.is_running());
}

#[test]
fn a_config_that_does_not_load_or_start_is_refused_and_the_old_one_serves() {
    let mut p = Postern::start(&base(&users_section("capture"), ""), 1);
    let good = std::fs::read_to_string(&p.config).unwrap();

    // Not TOML: `postern reload` says so without signalling anyone.
    std::fs::write(&p.config, "this is [not toml").unwrap();
    let (ok, _, err) = reload(&p);
    assert!(!ok);
    assert!(err.contains("invalid; nothing was reloaded"), "{err}");
    // SIGHUP itself (systemctl reload) logs the refusal.
    p.signal("HUP");
    assert!(
        p.wait_log(
            "reload refused: the config file is invalid",
            Duration::from_secs(10)
        ),
        "{}",
        p.logs()
    );

    // Loads, but cannot start: an account whose secret is missing. The
    // running instance refuses it and says why.
    let broken = format!(
        "{good}{}",
        dovecot_account(
            "dv",
            "u53@example.test",
            "starttls",
            "password_env = \"POSTERN_TEST_NOT_SET\""
        )
    )
    .replace("send_via = \"capture\"", "send_via = \"dv\"");
    std::fs::write(&p.config, broken).unwrap();
    let (ok, out, err) = reload(&p);
    assert!(!ok, "{out}");
    assert!(
        err.contains("reload refused") && err.contains("POSTERN_TEST_NOT_SET"),
        "{err}"
    );
    assert!(p.wait_log(
        "reload refused; the running config is unchanged",
        Duration::from_secs(5)
    ));

    // A listener address that is taken refuses the whole reload.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clash = good.replace(
        "listen = \"127.0.0.1:0\"",
        &format!(
            "listen = [\"127.0.0.1:0\", \"{}\"]",
            taken.local_addr().unwrap()
        ),
    );
    std::fs::write(&p.config, clash).unwrap();
    let (ok, _, err) = reload(&p);
    assert!(!ok);
    assert!(err.contains("cannot listen on"), "{err}");

    // The old config still serves.
    assert!(p.is_running());
    let (mut c, r) = login(&p, "app", APP_PASSWORD);
    assert!(r.starts_with("235"), "{r}");
    assert!(c.cmd("MAIL FROM:<app@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<x@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: still-old\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
}

#[test]
fn reload_without_a_running_instance_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("postern.toml");
    std::fs::write(&cfg, base(&users_section("capture"), "")).unwrap();
    let (ok, _, err) = run(BIN, &["--config", cfg.to_str().unwrap(), "reload"]);
    assert!(!ok);
    assert!(err.contains("no running instance"), "{err}");
}
