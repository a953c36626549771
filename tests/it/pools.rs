//! Sending pools end to end: real Dovecot mailboxes plus a scripted upstream
//! that answers with quota replies on command; durable counters across a
//! kill -9; two Postern processes sharing one redis-server.

use std::time::{Duration, SystemTime};

use crate::fake_smtp::{FakeSmtp, Script, TestPki, Tls};
use crate::harness::*;
use crate::relay::{sink_messages, strip_trace};

fn uniq(name: &str) -> String {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}{}", n % 1_000_000_000)
}

fn dovecot(name: &str, user: &str, limit: u32) -> String {
    format!(
        "[accounts.{name}]\nemail = \"{user}\"\nsmtp = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"PW_{}\"\ndaily_limit = {limit}\n",
        peer_env("DOVECOT_SUBMISSION_PORT"),
        peer_env("PEERS_CA"),
        name.to_uppercase()
    )
}

pub fn fake_account(name: &str, f: &FakeSmtp, pki: &TestPki, limit: u32) -> String {
    format!(
        "[accounts.{name}]\nemail = \"{name}@fake.example\"\nsmtp = {{ host = \"localhost\", port = {}, tls = \"implicit\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"PW_FAKE\"\ndaily_limit = {limit}\n",
        f.addr.port(),
        pki.ca_pem_path.display()
    )
}

fn pool_config(pool: &str, accounts: &[&str], extra_pool: &str, rest: &str) -> String {
    let list = accounts
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}upstream_timeout = \"5s\"\n\n{rest}\n[pools.{pool}]\naccounts = [{list}]\n{extra_pool}\n",
        users_section(&format!("pool:{pool}"))
    )
}

fn login(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.smtp());
    c.reply();
    c.cmd("EHLO pool.test");
    let auth = b64(format!("\0app\0{APP_PASSWORD}").as_bytes());
    assert!(c.cmd(&format!("AUTH PLAIN {auth}")).starts_with("235"));
    c
}

/// One message with one recipient; the final reply (or the first failure).
pub fn send(c: &mut Raw, from: &str, marker: &str) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    if !r.starts_with("250") {
        return r;
    }
    let r = c.cmd("RCPT TO:<someone@example.org>");
    if !r.starts_with("250") {
        c.cmd("RSET");
        return r;
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("From: \"Sender\" <{from}>\r\nSubject: {marker}\r\n\r\nbody\r\n").as_bytes());
    c.cmd(".")
}

#[test]
fn rotation_limits_quota_failover_and_exhaustion() {
    let pki = TestPki::new();
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
        &pki,
    );
    let (d1, d2) = (uniq("da"), uniq("db"));
    let rest = format!(
        "{}{}{}",
        dovecot(&d1, "u21@example.test", 12),
        dovecot(&d2, "u22@example.test", 12),
        fake_account("fk", &f, &pki, 12)
    );
    let cfg = pool_config(
        "out",
        &[&d1, &d2, "fk"],
        "strategy = \"round-robin\"\n",
        &rest,
    );
    let pw1 = format!("PW_{}", d1.to_uppercase());
    let pw2 = format!("PW_{}", d2.to_uppercase());
    let p = Postern::start_with(
        &cfg,
        1,
        &[(&pw1, "pw-u21"), (&pw2, "pw-u22"), ("PW_FAKE", "x")],
    );
    let m = uniq("rot-");
    let mut c = login(&p);
    for i in 0..30 {
        let r = send(&mut c, "app@corp.example", &format!("{m}-{i}"));
        assert!(r.starts_with("250"), "message {i}: {r}\n{}", p.logs());
    }
    let at_sink = sink_messages(&format!("{m}-"), 20, Duration::from_secs(10));
    let by = |u: &str| at_sink.iter().filter(|s| s.mail_from == u).count();
    assert_eq!(
        (
            by("u21@example.test"),
            by("u22@example.test"),
            f.messages().len()
        ),
        (10, 10, 10),
        "round-robin shares"
    );
    // The fake mailbox starts refusing with Gmail's quota reply.
    f.set_script(Script {
        tls: Tls::Implicit,
        end_reply: "550 5.4.5 Daily user sending limit exceeded.".into(),
        ..Script::default()
    });
    for i in 30..34 {
        let r = send(&mut c, "app@corp.example", &format!("{m}-{i}"));
        assert!(
            r.starts_with("250"),
            "message {i} must be failed over: {r}\n{}",
            p.logs()
        );
    }
    assert_eq!(
        f.messages().len(),
        10,
        "no message accepted by the quota-refusing mailbox"
    );
    let at_sink = sink_messages(&format!("{m}-"), 24, Duration::from_secs(10));
    assert_eq!(
        by_count(&at_sink, "u21@example.test") + by_count(&at_sink, "u22@example.test"),
        24
    );
    assert!(
        by_count(&at_sink, "u21@example.test") <= 12
            && by_count(&at_sink, "u22@example.test") <= 12
    );
    // All full or parked: 451 4.4.5 with the time capacity returns.
    let r = send(&mut c, "app@corp.example", &format!("{m}-last"));
    assert!(
        r.starts_with("451 4.4.5") && r.contains("capacity returns at"),
        "{r}"
    );
    assert!(
        p.logs().contains("pool route"),
        "routing decisions are logged"
    );
    // Status shows the parked mailbox and the used counts.
    let (ok, out, err) = run(BIN, &["--config", p.config.to_str().unwrap(), "status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("fk: used 10/10") && out.contains("parked (quota)"),
        "{out}"
    );
    assert!(out.contains(&format!("{d1}: used 12/12")), "{out}");
    let (ok, json, _) = run(
        BIN,
        &["--config", p.config.to_str().unwrap(), "status", "--json"],
    );
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let fk = v["quota"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "fk")
        .unwrap()
        .clone();
    assert_eq!(
        fk["ceiling"]["value"], 10,
        "observed ceiling recorded: {fk}"
    );
}

fn by_count(v: &[crate::relay::SinkMessage], user: &str) -> usize {
    v.iter().filter(|s| s.mail_from == user).count()
}

#[test]
fn from_rewrite_keeps_every_other_byte() {
    let d = uniq("dr");
    let cfg = pool_config(
        "rw",
        &[&d],
        "from_policy = \"rewrite\"\n",
        &dovecot(&d, "u23@example.test", 100),
    );
    let pw = format!("PW_{}", d.to_uppercase());
    let p = Postern::start_with(&cfg, 1, &[(&pw, "pw-u23")]);
    let m = uniq("rewrite-");
    let msg = format!(
        "Subject: {m}\r\nFrom: \"Alice Example\" <alice@corp.example>\r\nTo: <x@example.org>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{m}@corp.example>\r\n\r\nFrom: this is body text\r\n.dot\r\n"
    );
    let mut c = login(&p);
    assert!(c.cmd("MAIL FROM:<alice@corp.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<x@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(msg.replace("\r\n.dot", "\r\n..dot").as_bytes());
    let r = c.cmd(".");
    assert!(r.starts_with("250"), "{r}");
    let got = sink_messages(&m, 1, Duration::from_secs(10));
    assert_eq!(got[0].mail_from, "u23@example.test");
    let want = msg.replace(
        "From: \"Alice Example\" <alice@corp.example>\r\n",
        "From: \"Alice Example\" <u23@example.test>\r\nReply-To: \"Alice Example\" <alice@corp.example>\r\n",
    );
    assert_eq!(String::from_utf8(strip_trace(&got[0].data)).unwrap(), want);
}

#[test]
fn require_match_refuses_foreign_senders() {
    let d = uniq("dm");
    let cfg = pool_config(
        "rm",
        &[&d],
        "from_policy = \"require-match\"\n",
        &dovecot(&d, "u24@example.test", 100),
    );
    let pw = format!("PW_{}", d.to_uppercase());
    let p = Postern::start_with(&cfg, 1, &[(&pw, "pw-u24")]);
    let mut c = login(&p);
    let r = c.cmd("MAIL FROM:<alice@corp.example>");
    assert!(
        r.starts_with("550 5.7.1") && r.contains("u24@example.test"),
        "{r}"
    );
    let m = uniq("match-");
    let r = send(&mut c, "u24@example.test", &m);
    assert!(r.starts_with("250"), "{r}");
}

#[test]
fn counters_survive_kill_9() {
    let pki = TestPki::new();
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
        &pki,
    );
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}\n{}",
        users_section("fk"),
        fake_account("fk", &f, &pki, 1000)
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let mut c = login(&p);
    for i in 0..8 {
        assert!(send(&mut c, "fk@fake.example", &format!("crash-{i}")).starts_with("250"));
    }
    // A transaction in flight: recipients reserved, message not finished.
    assert!(c.cmd("MAIL FROM:<fk@fake.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: half\r\n\r\nhalf a message\r\n");
    let mut p = p;
    p.signal("KILL");
    p.wait_exit(Duration::from_secs(10));
    let accepted = f.messages().len();
    assert_eq!(accepted, 8);
    // Restart on the same data_dir: nothing is forgotten.
    let tmp = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
    let config = p.config.clone();
    drop(p);
    let p2 = Postern::spawn(tmp, config.clone(), 1, &[("PW_FAKE", "x")]);
    let (ok, json, err) = run(
        BIN,
        &["--config", config.to_str().unwrap(), "status", "--json"],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let a = &v["quota"]["accounts"][0];
    let counted = a["used"].as_u64().unwrap() + a["reserved"].as_u64().unwrap();
    assert!(
        counted >= accepted as u64,
        "counted {counted} < accepted {accepted}: {a}"
    );
    assert_eq!(
        counted, 10,
        "8 sent + 2 reserved in flight (over-counting is the safe side): {a}"
    );
    drop(p2);
}

#[test]
fn two_instances_share_limits_through_redis() {
    let pki = TestPki::new();
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
        &pki,
    );
    let acct = uniq("shared");
    let cfg = format!(
        "data_dir = \"var\"\nquota_store = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}\n{}[pools.sh]\naccounts = [\"{acct}\"]\nfrom_policy = \"keep\"\n",
        peer_env("REDIS_URL"),
        users_section("pool:sh"),
        fake_account(&acct, &f, &pki, 20)
    );
    let a = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let b = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for p in [&a, &b] {
            for t in 0..8 {
                let results = &results;
                s.spawn(move || {
                    let mut c = login(p);
                    for i in 0..3 {
                        let r = send(&mut c, "x@corp.example", &format!("shared-{t}-{i}"));
                        results.lock().unwrap().push(r);
                    }
                });
            }
        }
    });
    let results = results.into_inner().unwrap();
    let ok = results.iter().filter(|r| r.starts_with("250")).count();
    let refused = results
        .iter()
        .filter(|r| r.starts_with("451") || r.starts_with("452"))
        .count();
    assert_eq!(
        f.messages().len(),
        20,
        "exactly the limit reached the upstream"
    );
    assert_eq!(ok, 20, "{results:?}");
    assert_eq!(refused, results.len() - 20, "{results:?}");
}

#[test]
fn trace_header_only_when_asked() {
    let d = uniq("dt");
    // trace_header is a top-level key: put it before any table.
    let cfg = format!(
        "trace_header = true\n{}",
        pool_config("tr", &[&d], "", &dovecot(&d, "u25@example.test", 100))
    );
    let pw = format!("PW_{}", d.to_uppercase());
    let p = Postern::start_with(&cfg, 1, &[(&pw, "pw-u25")]);
    let m = uniq("trace-");
    let mut c = login(&p);
    assert!(send(&mut c, "u25@example.test", &m).starts_with("250"));
    let got = sink_messages(&m, 1, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(
        text.contains(&format!("X-Postern-Route: pool=tr; account={d}\r\n")),
        "{text}"
    );
    assert!(p.logs().contains("pool route"));
}
