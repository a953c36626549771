//! `[events]`: a command and a webhook told, as JSON, that a mailbox was
//! parked (Dovecot refuses its password) and unparked again by a reload
//! with the right one. The failed-refresh event is in `oauth.rs`, next to
//! the test authorization server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::relay::{dovecot_account, message};
use crate::reload::login;

/// Lines of `file` (JSON events) whose `event` is `kind`, waiting for one.
pub fn wait_event(file: &std::path::Path, kind: &str, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            if v["event"] == kind {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event in {}:\n{text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the webhook receiver got: each request's head and body.
type Hooked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver: every POST body, answered 204.
fn webhook() -> (String, Hooked) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook/s3cr3t-path", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            g.lock().unwrap().push((head, body));
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn a_parked_and_unparked_mailbox_reaches_the_command_and_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong-password\n").unwrap();
    let (url, hooked) = webhook();
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}upstream_timeout = \"5s\"\n\
         [events]\ncommand = \"cat >> '{}'\"\nwebhook = \"{url}\"\n{}",
        users_section("dv"),
        events.display(),
        dovecot_account(
            "dv",
            "u54@example.test",
            "starttls",
            &format!("password_file = \"{}\"", pw.display())
        ),
    );
    let path = dir.path().join("postern.toml");
    std::fs::write(&path, &cfg).unwrap();
    let p = Postern::spawn(dir, path, 1, &[]);

    let (mut c, r) = login(&p, "app", APP_PASSWORD);
    assert!(r.starts_with("235"), "{r}");
    let r = c.cmd("MAIL FROM:<u54@example.test>");
    assert!(
        !r.starts_with("250"),
        "the wrong password was accepted: {r}"
    );

    let e = wait_event(&events, "parked", Duration::from_secs(15));
    assert_eq!(e["account"], "dv", "{e}");
    assert_eq!(e["kind"], "auth", "{e}");
    assert!(e["until"].is_null(), "auth parking has no end: {e}");
    assert!(e["time"].is_string() && e["host"].is_string(), "{e}");
    // The webhook got the same event, and the secret path of its address
    // is in no log line.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hooked.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the webhook got nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (head, body) = hooked.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("POST /hook/s3cr3t-path HTTP/1.1"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["event"], "parked");
    assert!(!p.logs().contains("s3cr3t-path"), "{}", p.logs());
    assert!(!p.logs().contains("wrong-password"));

    // The right password and a reload: unparked, and the mail goes out.
    std::fs::write(&pw, "pw-u54\n").unwrap();
    let (ok, out, err) = run(BIN, &["--config", p.config.to_str().unwrap(), "reload"]);
    assert!(ok, "{out}{err}");
    let e = wait_event(&events, "unparked", Duration::from_secs(10));
    assert_eq!(e["account"], "dv");
    let (mut c, r) = login(&p, "app", APP_PASSWORD);
    assert!(r.starts_with("235"), "{r}");
    assert!(c.cmd("MAIL FROM:<u54@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<rcpt@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let mut data = message(&marker("events-unparked"), "u54@example.test");
    data.extend_from_slice(b".\r\n");
    c.send(&data);
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}");
}

#[test]
fn events_config_is_checked() {
    for (bad, says) in [
        ("webhook = \"ftp://x\"", "events.webhook"),
        ("command = \"  \"", "events.command"),
        ("kinds = [\"parkd\"]", "not an event kind"),
        ("timeout = \"0s\"", "events.timeout"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(
            &f,
            format!(
                "[smtp]\nlisten = \"127.0.0.1:0\"\n{}[events]\n{bad}\n",
                users_section("capture")
            ),
        )
        .unwrap();
        let (ok, _, err) = run(BIN, &["--config", f.to_str().unwrap(), "check-config"]);
        assert!(!ok, "{bad} was accepted");
        assert!(err.contains(says), "{bad}: {err}");
    }
}
