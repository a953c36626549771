//! The development sandbox over real HTTP, SMTP and POP3 against a running
//! `postern run`: the Mailpit-compatible API (list, message, raw, headers,
//! parts, search, wait, delete, read flags), Mailpit's JSON shapes, inboxes
//! per user with the sandbox POP3 server, release through the real
//! Dovecot, redirect and allowlist routes, fault injection, bad input,
//! retention and the index rebuilt from the Maildir, and HTTP auth.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::relay::sink_messages;

/// Sends `msg` as local user `user` (password APP_PASSWORD) with smtplib;
/// prints one line per outcome (`sent`, `rcpt CODE TEXT`, `error CODE TEXT`).
const SEND: &str = r#"
import smtplib, sys
port, user, pw, msgfile, sender = sys.argv[1:6]
rcpts = sys.argv[6:]
msg = open(msgfile, 'rb').read()
try:
    s = smtplib.SMTP('127.0.0.1', int(port), timeout=60)
    s.login(user, pw)
    refused = s.sendmail(sender, rcpts, msg)
    print('sent', sorted(refused.items()))
    s.quit()
except smtplib.SMTPRecipientsRefused as e:
    for r, (code, text) in sorted(e.recipients.items()):
        print('rcpt', code, text.decode())
except smtplib.SMTPAuthenticationError as e:
    print('auth', e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPSenderRefused as e:
    print('sender', e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPDataError as e:
    print('data', e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPServerDisconnected as e:
    print('disconnected', e)
except smtplib.SMTPResponseException as e:
    print('error', e.smtp_code, e.smtp_error.decode())
"#;

pub fn send_as(p: &Postern, user: &str, msg: &[u8], from: &str, rcpts: &[&str]) -> String {
    let f = p.dir.path().join(format!("m-{}.eml", marker("f")));
    std::fs::write(&f, msg).unwrap();
    let port = p.smtp().port().to_string();
    let mut args = vec![port.as_str(), user, APP_PASSWORD, f.to_str().unwrap(), from];
    args.extend_from_slice(rcpts);
    let (ok, out, err) = python(SEND, &args);
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    out
}

pub fn send(p: &Postern, msg: &[u8]) -> String {
    send_as(p, "app", msg, "me@example.test", &["you@example.test"])
}

pub fn simple(subject: &str) -> Vec<u8> {
    format!(
        "From: Sender <me@example.test>\r\nTo: You <you@example.test>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nHello {subject}\r\n.leading dot\r\n"
    )
    .into_bytes()
}

pub fn sandbox_config(extra: &str) -> String {
    format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\n[users.app2]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\ninbox = \"other\"\n{FAST_LIMITS}{extra}"
    )
}

pub fn api(p: &Postern) -> SocketAddr {
    p.addr("http")
}

pub fn get(p: &Postern, path: &str) -> HttpResponse {
    http("GET", api(p), path, b"")
}

/// Every key of `want` (a Mailpit fixture) is in `got` with the same JSON
/// type; arrays are compared by their first elements.
fn same_shape(want: &serde_json::Value, got: &serde_json::Value, at: &str) {
    use serde_json::Value as V;
    match (want, got) {
        (V::Object(w), V::Object(g)) => {
            for (k, wv) in w {
                let gv = g
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} missing in {got}"));
                same_shape(wv, gv, &format!("{at}.{k}"));
            }
        }
        (V::Array(w), V::Array(g)) => {
            if let (Some(w0), Some(g0)) = (w.first(), g.first()) {
                same_shape(w0, g0, &format!("{at}[0]"));
            }
        }
        (V::Number(_), V::Number(_)) | (V::String(_), V::String(_)) | (V::Bool(_), V::Bool(_)) => {}
        (V::Object(_), V::Null) => {} // From may be null when a message has none
        _ => panic!("{at}: fixture has {want}, Postern gives {got}"),
    }
}

fn fixture(name: &str) -> serde_json::Value {
    let path = repo_root().join("tests/data/mailpit").join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

const MIXED: &str = "From: \"Example App\" <noreply@app.example.com>\r\nTo: Jane Smith <jane@example.com>\r\nCc: Accounts <accounts@example.com>\r\nReply-To: support@app.example.com\r\nSubject: MARK\r\nMessage-ID: <MARK@app.example.com>\r\nDate: Mon, 01 Jan 2024 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: multipart/related; boundary=\"b2\"\r\n\r\n--b2\r\nContent-Type: multipart/alternative; boundary=\"b3\"\r\n\r\n--b3\r\nContent-Type: text/plain\r\n\r\nHi Jane, confirm: https://app.example.com/confirm/MARK\r\n--b3\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>Jane</b></p><img src=\"cid:logo@app\"><img src=\"https://tracker.example/x.gif\">\r\n--b3--\r\n--b2\r\nContent-Type: image/png\r\nContent-ID: <logo@app>\r\nContent-Disposition: inline; filename=\"logo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--b2--\r\n--b1\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n";

#[test]
fn api_list_message_raw_search_wait_and_delete() {
    let p = Postern::start(&sandbox_config(""), 2);
    let m = marker("api");
    let mixed = MIXED.replace("MARK", &m).into_bytes();
    assert!(send(&p, &mixed).starts_with("sent"));
    let plain = simple(&format!("{m}-plain"));
    assert!(send(&p, &plain).starts_with("sent"));
    // And with curl, as another client would.
    let f = p.dir.path().join("curl.eml");
    std::fs::write(&f, simple(&format!("{m}-curl"))).unwrap();
    let (ok, o, e) = run(
        "curl",
        &[
            "-sS",
            &format!("smtp://127.0.0.1:{}", p.smtp().port()),
            "-u",
            &format!("app:{APP_PASSWORD}"),
            "--mail-from",
            "c@example.test",
            "--mail-rcpt",
            "d@example.test",
            "-T",
            f.to_str().unwrap(),
        ],
    );
    assert!(ok, "{o}{e}");

    let list = get(&p, "/api/v1/messages?limit=2").json();
    same_shape(&fixture("messages.json"), &list, "messages");
    assert_eq!(list["total"], 3);
    assert_eq!(list["count"], 2);
    assert_eq!(
        list["messages"][0]["Subject"],
        format!("{m}-curl"),
        "newest first: {list}"
    );
    let page2 = get(&p, "/api/v1/messages?start=2&limit=2").json();
    assert_eq!(page2["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page2["messages"][0]["Subject"], m);
    let id = page2["messages"][0]["ID"].as_str().unwrap().to_owned();
    assert_eq!(page2["messages"][0]["Attachments"], 1);
    assert_eq!(page2["messages"][0]["Inbox"], "app");
    assert_eq!(page2["messages"][0]["Username"], "app");

    let one = get(&p, &format!("/api/v1/message/{id}"));
    assert_eq!(one.status, 200);
    let one = one.json();
    same_shape(&fixture("message.json"), &one, "message");
    assert_eq!(one["Subject"], m);
    assert!(one["Text"]
        .as_str()
        .unwrap()
        .contains(&format!("confirm/{m}")));
    assert!(one["HTML"].as_str().unwrap().contains("<b>Jane</b>"));
    assert_eq!(one["Attachments"][0]["FileName"], "invoice.pdf");
    assert_eq!(one["Inline"][0]["ContentID"], "logo@app");
    // Fetching marked it read.
    let list = get(&p, "/api/v1/messages").json();
    assert_eq!(list["unread"], 2, "{list}");

    let raw = get(&p, &format!("/api/v1/message/{id}/raw"));
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body, mixed, "raw source byte for byte");
    let dl = get(&p, &format!("/api/v1/message/{id}/raw?dl=1"));
    assert!(dl
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    let headers = get(&p, &format!("/api/v1/message/{id}/headers")).json();
    assert_eq!(headers["Message-Id"][0], format!("<{m}@app.example.com>"));
    let part = get(&p, &format!("/api/v1/message/{id}/part/2"));
    assert_eq!(part.status, 200);
    assert_eq!(part.body, b"%PDF-1.4\n");
    assert_eq!(part.header("content-type"), Some("application/pdf"));
    assert_eq!(get(&p, &format!("/api/v1/message/{id}/part/9")).status, 404);
    let latest = get(&p, "/api/v1/message/latest").json();
    assert_eq!(latest["Subject"], format!("{m}-curl"));

    for (q, n) in [
        (format!("subject:{m}-plain"), 1),
        ("from:noreply@app.example.com".to_owned(), 1),
        ("to:jane".to_owned(), 1),
        (format!("confirm/{m}"), 1),
        ("has:attachment".to_owned(), 1),
        (format!("{m} -has:attachment"), 2),
        // The `latest` fetch above marked one message read.
        ("is:unread".to_owned(), 1),
        ("\"leading dot\"".to_owned(), 2),
    ] {
        let r = get(&p, &format!("/api/v1/search?query={}", url(&q))).json();
        assert_eq!(r["messages_count"], n, "{q}: {r}");
    }
    assert_eq!(get(&p, "/api/v1/search?query=").status, 400);

    // Wait: a message sent after the wait began ends it.
    let late = format!("{m}-late");
    let addr = api(&p);
    let q = format!("/api/v1/wait?query=subject:{late}&timeout=30s");
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        (http("GET", addr, &q, b""), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(600));
    assert!(send(&p, &simple(&late)).starts_with("sent"));
    let (r, took) = waiter.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Subject"], late);
    assert!(took >= Duration::from_millis(500), "{took:?}");
    let t = Instant::now();
    let r = get(&p, "/api/v1/wait?query=subject:never-sent&timeout=1s");
    assert_eq!(r.status, 408);
    assert!(t.elapsed() < Duration::from_secs(10));

    // Read flags, then delete one, then all.
    let r = http("PUT", api(&p), "/api/v1/messages", br#"{"Read": true}"#);
    assert_eq!((r.status, r.text()), (200, "ok".to_owned()));
    assert_eq!(get(&p, "/api/v1/messages").json()["unread"], 0);
    let body = format!("{{\"ids\": [\"{id}\"]}}");
    assert_eq!(
        http("DELETE", api(&p), "/api/v1/messages", body.as_bytes()).status,
        200
    );
    assert_eq!(get(&p, &format!("/api/v1/message/{id}")).status, 404);
    assert_eq!(get(&p, "/api/v1/messages").json()["total"], 3);
    assert_eq!(http("DELETE", api(&p), "/api/v1/messages", b"").status, 200);
    assert_eq!(get(&p, "/api/v1/messages").json()["total"], 0);
    assert!(maildir_files(&p.capture_new()).is_empty());
    assert_eq!(get(&p, "/api/v1/message/latest").status, 404);
}

fn url(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const POP: &str = r#"
import poplib, sys
port, user, pw = sys.argv[1:4]
p = poplib.POP3('127.0.0.1', int(port))
p.user(user)
p.pass_(pw)
n, size = p.stat()
print('stat', n)
for i in range(1, n + 1):
    lines = p.retr(i)[1]
    print('subject', [l.decode() for l in lines if l.startswith(b'Subject:')][0])
p.quit()
"#;

/// Each user's mail lands in its own inbox: the API filters by it and the
/// sandbox POP3 server shows each login its own; a captured message is
/// released through the real Dovecot to the sink.
#[test]
fn two_inboxes_pop3_and_release_through_dovecot() {
    let account = format!(
        "[accounts.dv]\nemail = \"u50@example.test\"\nsmtp = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"U_PW\"\n",
        peer_env("DOVECOT_SUBMISSION_PORT"),
        peer_env("PEERS_CA")
    );
    let cfg = sandbox_config(&format!(
        "[sandbox]\npop3 = \"127.0.0.1:0\"\nrelease_via = \"dv\"\n{account}"
    ));
    let p = Postern::start_with(&cfg, 3, &[("U_PW", "pw-u50")]);
    let m = marker("inbox");
    assert!(send_as(
        &p,
        "app",
        &simple(&format!("{m}-a1")),
        "u50@example.test",
        &["x@example.org"]
    )
    .starts_with("sent"));
    assert!(send_as(
        &p,
        "app",
        &simple(&format!("{m}-a2")),
        "u50@example.test",
        &["x@example.org"]
    )
    .starts_with("sent"));
    assert!(send_as(
        &p,
        "app2",
        &simple(&format!("{m}-b1")),
        "me@example.test",
        &["y@example.org"]
    )
    .starts_with("sent"));
    let a = get(&p, "/api/v1/messages?inbox=app").json();
    let b = get(&p, "/api/v1/messages?inbox=other").json();
    assert_eq!(
        (a["total"].as_u64(), b["total"].as_u64()),
        (Some(2), Some(1)),
        "{a}\n{b}"
    );
    assert_eq!(b["messages"][0]["Inbox"], "other");
    let inboxes = get(&p, "/api/v1/inboxes").json();
    let names: Vec<&str> = inboxes
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "other"]);
    let pop = p.addr("pop3").port().to_string();
    for (user, n, subj) in [("app", 2, "-a"), ("app2", 1, "-b1")] {
        let (ok, out, err) = python(POP, &[&pop, user, APP_PASSWORD]);
        assert!(ok, "{out}{err}");
        assert!(out.contains(&format!("stat {n}")), "{user}: {out}");
        assert!(
            out.lines()
                .filter(|l| l.starts_with("subject"))
                .all(|l| l.contains(&format!("{m}{subj}"))),
            "{user}: {out}"
        );
    }
    // Release a1 for real (the route's From rules and quota apply).
    let id = a["messages"][1]["ID"].as_str().unwrap().to_owned();
    let r = http(
        "POST",
        api(&p),
        &format!("/api/v1/release/{id}"),
        br#"{"to": ["released@example.org"]}"#,
    );
    assert_eq!((r.status, r.text()), (200, "ok".to_owned()), "{}", p.logs());
    let at_sink = sink_messages(&format!("{m}-a1"), 1, Duration::from_secs(10));
    assert_eq!(at_sink.len(), 1);
    assert_eq!(at_sink[0].rcpts, ["released@example.org"]);
    // Mailpit's form: {"To": [...]} through release_via.
    let r = http(
        "POST",
        api(&p),
        &format!("/api/v1/message/{id}/release"),
        br#"{"To": ["again@example.org"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        sink_messages(&format!("{m}-a1"), 2, Duration::from_secs(10)).len(),
        2
    );
    let r = http(
        "POST",
        api(&p),
        &format!("/api/v1/message/{id}/release"),
        br#"{"To": ["not an address"]}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Invalid email address"), "{}", r.text());
}

/// Redirect and allowlist in front of the real Dovecot: only what the rule
/// lets through reaches the sink, everything is captured, one 250.
#[test]
fn redirect_and_allowlist_against_dovecot() {
    let dv = |name: &str, user: &str| {
        format!(
            "[accounts.{name}]\nemail = \"{user}\"\nsmtp = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"U_PW\"\n",
            peer_env("DOVECOT_SUBMISSION_PORT"),
            peer_env("PEERS_CA")
        )
    };
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[users.staging]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"dv\"\nallowlist = [\"*@ourcompany.test\", \"boss@partner.test\"]\n[users.qa]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"dv\"\nredirect = \"qa-inbox@ourcompany.test\"\n{FAST_LIMITS}{}",
        dv("dv", "u51@example.test")
    );
    let p = Postern::start_with(&cfg, 2, &[("U_PW", "pw-u51")]);
    let m = marker("allow");
    let out = send_as(
        &p,
        "staging",
        &simple(&m),
        "u51@example.test",
        &[
            "dev@ourcompany.test",
            "customer@elsewhere.test",
            "boss@partner.test",
        ],
    );
    assert_eq!(out.trim(), "sent []", "{out}\n{}", p.logs());
    let at_sink = sink_messages(&m, 1, Duration::from_secs(10));
    assert_eq!(at_sink.len(), 1);
    let mut rcpts = at_sink[0].rcpts.clone();
    rcpts.sort();
    assert_eq!(rcpts, ["boss@partner.test", "dev@ourcompany.test"]);
    let captured = get(&p, &format!("/api/v1/search?query=subject:{m}")).json();
    assert_eq!(captured["messages_count"], 1);
    let id = captured["messages"][0]["ID"].as_str().unwrap();
    let (head, _) = split_capture(&std::fs::read(p.capture_new().join(id)).unwrap());
    assert!(
        head.contains("X-Postern-Rcpt-To: <customer@elsewhere.test>"),
        "{head}"
    );
    assert!(
        head.contains("X-Postern-Relayed-To: dev@ourcompany.test, boss@partner.test"),
        "{head}"
    );
    // Nobody allowed: captured only, the provider never sees it.
    let m2 = marker("allow-none");
    assert_eq!(
        send_as(
            &p,
            "staging",
            &simple(&m2),
            "u51@example.test",
            &["a@elsewhere.test"]
        )
        .trim(),
        "sent []"
    );
    assert!(sink_messages(&m2, 1, Duration::from_secs(2)).is_empty());
    assert_eq!(
        get(&p, &format!("/api/v1/search?query=subject:{m2}")).json()["messages_count"],
        1
    );
    // Redirect: all recipients replaced, the original ones in a header.
    let m3 = marker("redirect");
    assert_eq!(
        send_as(
            &p,
            "qa",
            &simple(&m3),
            "u51@example.test",
            &["x@customer.test", "y@customer.test"]
        )
        .trim(),
        "sent []"
    );
    let at_sink = sink_messages(&m3, 1, Duration::from_secs(10));
    assert_eq!(at_sink.len(), 1);
    assert_eq!(at_sink[0].rcpts, ["qa-inbox@ourcompany.test"]);
    let body = String::from_utf8_lossy(&at_sink[0].data);
    assert!(
        body.contains("X-Postern-Original-To: x@customer.test, y@customer.test"),
        "{body}"
    );
    assert_eq!(
        get(&p, &format!("/api/v1/search?query=subject:{m3}")).json()["messages_count"],
        1
    );
}

/// Named faults give their providers' replies at their stages; every 3rd is
/// exactly every third; a fault switched on through the API applies to the
/// next transaction; a dropped connection drops.
#[test]
fn faults_named_every_third_and_at_run_time() {
    let cfg = sandbox_config(
        "[[faults]]\nname = \"quota\"\nreply = \"gmail-daily-limit\"\nevery = 3\nusers = [\"app\"]\n[[faults]]\nreply = \"relay-denied\"\nrecipients = [\"*@blocked.test\"]\n[[faults]]\nreply = \"outlook-auth-disabled\"\nusers = [\"app2\"]\n",
    );
    let p = Postern::start(&cfg, 2);
    let mut replies = Vec::new();
    for i in 1..=6 {
        replies.push(send(&p, &simple(&format!("{}-{i}", marker("every")))));
    }
    let refused: Vec<usize> = replies
        .iter()
        .enumerate()
        .filter(|(_, r)| r.starts_with("data 550"))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(refused, [3, 6], "{replies:?}");
    assert!(
        replies[2]
            .contains("5.4.5 Daily user sending limit exceeded. For more information on Gmail"),
        "{}",
        replies[2]
    );
    assert!(
        replies[2].contains("https://support.google.com/a/answer/166852")
            && replies[2].contains(" - gsmtp")
    );
    assert_eq!(
        get(&p, "/api/v1/messages").json()["total"],
        4,
        "refused messages are not kept"
    );
    let r = send_as(
        &p,
        "app2",
        &simple("x"),
        "me@example.test",
        &["a@example.test"],
    );
    assert!(r.starts_with("auth 535") && r.contains("5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant"), "{r}");
    let r = send_as(
        &p,
        "app",
        &simple("y"),
        "me@example.test",
        &["x@blocked.test"],
    );
    assert!(
        r.starts_with("rcpt 550 5.7.1 <x@blocked.test>... Relaying denied"),
        "{r}"
    );

    // Switched off: the every-3rd rule no longer fires.
    assert_eq!(
        http(
            "PUT",
            api(&p),
            "/api/v1/faults/quota",
            br#"{"enabled": false}"#
        )
        .status,
        200
    );
    for i in 0..3 {
        assert!(send(&p, &simple(&format!("off-{i}"))).starts_with("sent"));
    }
    // At run time: the next transaction fails with Microsoft's quota reply,
    // twice, then passes.
    let rule = br#"{"name": "ms", "reply": "outlook-submission-quota", "count": 2}"#;
    let r = http("POST", api(&p), "/api/v1/faults", rule);
    assert_eq!(r.status, 200, "{}", r.text());
    let results: Vec<String> = (0..3)
        .map(|i| send(&p, &simple(&format!("ms-{i}"))))
        .collect();
    assert!(
        results[0].starts_with("data 554")
            && results[0]
                .contains("5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"),
        "{results:?}"
    );
    assert!(results[1].starts_with("data 554"));
    assert!(results[2].starts_with("sent"), "{results:?}");
    let list = get(&p, "/api/v1/faults").json();
    let ms = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["ID"] == "ms")
        .unwrap();
    assert_eq!(ms["Fired"], 2);
    // Removed; a bad rule is refused with the reason.
    assert_eq!(
        http("DELETE", api(&p), "/api/v1/faults/quota", b"").status,
        200
    );
    let r = http(
        "POST",
        api(&p),
        "/api/v1/faults",
        br#"{"reply": "no-such-reply"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("unknown reply"), "{}", r.text());
    // A dropped connection at MAIL, after a delay.
    let r = http(
        "POST",
        api(&p),
        "/api/v1/faults",
        br#"{"stage": "mail", "drop": true, "delay": "300ms", "count": 1}"#,
    );
    assert_eq!(r.status, 200);
    let t = Instant::now();
    let r = send(&p, &simple("dropped"));
    assert!(r.starts_with("disconnected"), "{r}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(send(&p, &simple("after-drop")).starts_with("sent"));
    // Gmail's throttle closes the connection after its 421.
    let r = http(
        "POST",
        api(&p),
        "/api/v1/faults",
        br#"{"reply": "gmail-rate-limit", "count": 1}"#,
    );
    assert_eq!(r.status, 200);
    let mut c = Raw::connect(p.smtp());
    c.line();
    c.cmd("EHLO t");
    c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(format!("\0app\0{APP_PASSWORD}").as_bytes())
    ));
    let r = c.cmd("MAIL FROM:<a@b.test>");
    assert!(
        r.starts_with("421-4.7.0 Try again later, closing connection. (MAIL)"),
        "{r}"
    );
    assert!(c.closed());
}

/// Bad input: the API (and the process) survive everything and show what
/// they can.
#[test]
fn bad_input_never_fails_the_api() {
    let p = Postern::start(&sandbox_config(""), 2);
    let m = marker("bad");
    let mut big = format!("Subject: {m}-big\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--x\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n").into_bytes();
    let line = b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n";
    while big.len() < 20 * 1024 * 1024 {
        big.extend_from_slice(line);
    }
    big.extend_from_slice(b"--x--\r\n");
    let cases: Vec<Vec<u8>> = vec![
        format!("Subject: {m}-mime\r\nContent-Type: multipart/mixed; boundary=\"nope\r\n\r\n--nope\r\nbroken").into_bytes(),
        [format!("Subject: {m}-utf8 ").as_bytes(), b"\xff\xfe\xc3\r\nFrom: \x80\x81 <\xfe@x>\r\n\r\nbody \xff\r\n"].concat(),
        format!("Subject: {m}-notext\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n").into_bytes(),
        big,
        format!("Subject: {m}-nohdr").into_bytes(),
    ];
    for c in &cases {
        let out = send(&p, c);
        assert!(out.starts_with("sent"), "{out}");
    }
    let list = get(&p, "/api/v1/messages?limit=10");
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list["total"], cases.len());
    for msg in list["messages"].as_array().unwrap() {
        let id = msg["ID"].as_str().unwrap();
        for path in [
            format!("/api/v1/message/{id}"),
            format!("/api/v1/message/{id}/headers"),
            format!("/api/v1/message/{id}/raw"),
        ] {
            let r = get(&p, &path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
        }
        let view = get(&p, &format!("/api/v1/message/{id}")).json();
        for a in view["Attachments"].as_array().unwrap() {
            let r = get(
                &p,
                &format!(
                    "/api/v1/message/{id}/part/{}",
                    a["PartID"].as_str().unwrap()
                ),
            );
            assert_eq!(r.status, 200);
        }
    }
    let big = get(&p, &format!("/api/v1/search?query=subject:{m}-big")).json();
    let id = big["messages"][0]["ID"].as_str().unwrap();
    let view = get(&p, &format!("/api/v1/message/{id}")).json();
    assert!(
        view["Attachments"][0]["Size"].as_u64().unwrap() > 14 * 1024 * 1024,
        "{}",
        view["Attachments"]
    );
    assert!(p.wait_log("message captured", Duration::from_secs(1)));
    assert_eq!(
        get(&p, "/api/v1/message/..%2F..%2Fetc%2Fpasswd").status,
        404
    );
    assert_eq!(get(&p, "/api/v1/messages?limit=abc").status, 200);
}

/// Retention keeps the newest `max_messages`; deleting the index file loses
/// nothing: the next start rebuilds it from the Maildir.
#[test]
fn retention_and_index_rebuilt_from_the_maildir() {
    let cfg = sandbox_config("[sandbox]\nmax_messages = 3\n");
    let mut p = Postern::start(&cfg, 2);
    let m = marker("keep");
    for i in 0..5 {
        assert!(send(&p, &simple(&format!("{m}-{i}"))).starts_with("sent"));
    }
    let list = get(&p, "/api/v1/messages").json();
    assert_eq!(list["total"], 3);
    let subjects: Vec<&str> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["Subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [format!("{m}-4"), format!("{m}-3"), format!("{m}-2")]
    );
    assert_eq!(maildir_files(&p.capture_new()).len(), 3);
    // Stop, remove the index, start again on the same data_dir.
    p.signal("TERM");
    p.wait_exit(Duration::from_secs(20));
    let dir = p.dir.path().to_owned();
    for f in std::fs::read_dir(dir.join("var/capture"))
        .unwrap()
        .flatten()
    {
        if f.file_name().to_string_lossy().starts_with("postern-index") {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    let dir = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
    let config = p.config.clone();
    drop(p);
    let p = Postern::spawn(dir, config, 2, &[]);
    assert!(
        p.wait_log(
            "capture index brought in line with the Maildir",
            Duration::from_secs(10)
        ),
        "{}",
        p.logs()
    );
    let list = get(&p, "/api/v1/messages").json();
    assert_eq!(list["total"], 3, "{list}");
    assert_eq!(list["messages"][0]["Subject"], format!("{m}-4"));
}

/// Loopback needs no login; with password_hash or a token every request
/// must carry it; a non-loopback address without either is refused.
#[test]
fn http_auth() {
    let tok = "test-token-123";
    let cfg = sandbox_config("").replace(
        "[http]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[http]\nlisten = \"127.0.0.1:0\"\npassword_hash = \"{APP_HASH}\"\ntoken_env = \"HTTP_TOKEN\"\n"),
    );
    let p = Postern::start_with(&cfg, 2, &[("HTTP_TOKEN", tok)]);
    assert_eq!(get(&p, "/api/v1/messages").status, 401);
    let basic = format!("Basic {}", b64(format!("anyone:{APP_PASSWORD}").as_bytes()));
    let bearer = format!("Bearer {tok}");
    for h in [basic.as_str(), bearer.as_str()] {
        let r = http_with(
            "GET",
            api(&p),
            "/api/v1/messages",
            b"",
            &[("Authorization", h)],
        );
        assert_eq!(r.status, 200, "{h}");
    }
    let wrong = format!("Basic {}", b64(b"anyone:wrong"));
    let r = http_with(
        "GET",
        api(&p),
        "/api/v1/messages",
        b"",
        &[("Authorization", &wrong)],
    );
    assert_eq!(r.status, 401);
    assert!(!p.logs().contains(tok) && !p.logs().contains(APP_PASSWORD));
    // Non-loopback without auth: refused at check-config.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        sandbox_config("").replace(
            "[http]\nlisten = \"127.0.0.1:0\"",
            "[http]\nlisten = \"0.0.0.0:0\"",
        ),
    )
    .unwrap();
    let (ok, _, err) = run(BIN, &["--config", path.to_str().unwrap(), "check-config"]);
    assert!(
        !ok && err.contains("http.password_hash") && err.contains("not a loopback address"),
        "{err}"
    );
}
