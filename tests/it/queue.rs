//! The durable queue and the connection caps, end to end: nothing is pushed
//! back onto a client that cannot retry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fake_smtp::{FakeSmtp, Script, TestPki, Tls};
use crate::harness::*;
use crate::pools::fake_account;
use crate::relay::{dovecot_account, sink_messages};

/// A logged-in local client as `app`.
fn login(p: &Postern) -> Raw {
    let mut c = Raw::connect(p.smtp());
    c.reply();
    c.cmd("EHLO queue.test");
    let auth = b64(format!("\0app\0{APP_PASSWORD}").as_bytes());
    assert!(c.cmd(&format!("AUTH PLAIN {auth}")).starts_with("235"));
    c
}

/// One message from `from` to `to` with `subject`; the final reply (or the
/// first refusal).
fn send(c: &mut Raw, from: &str, to: &str, subject: &str) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}>"));
    if !r.starts_with("250") {
        return r;
    }
    let r = c.cmd(&format!("RCPT TO:<{to}>"));
    if !r.starts_with("250") {
        c.cmd("RSET");
        return r;
    }
    let r = c.cmd("DATA");
    if !r.starts_with("354") {
        return r;
    }
    c.send(
        format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n")
            .as_bytes(),
    );
    c.cmd(".")
}

fn implicit_fake(pki: &TestPki) -> FakeSmtp {
    FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
        pki,
    )
}

fn cli(p: &Postern, args: &[&str]) -> String {
    let mut all = vec!["--config", p.config.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, out, err) = run(BIN, &all);
    assert!(ok, "postern {args:?}: {out}{err}");
    out
}

fn queue_json(p: &Postern) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&cli(p, &["queue", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `f` holds, or panics with `what` and the logs.
fn wait_for(p: &Postern, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what}: not in time\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const QUEUE_FAST: &str = "[queue]\nretry = [\"1s\"]\n";

// ---------------------------------------------------------------------------
// Connection caps
// ---------------------------------------------------------------------------

#[test]
fn forty_clients_through_one_dovecot_account_are_all_delivered() {
    let m = marker("cap40");
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}upstream_timeout = \"60s\"\n{}",
        users_section("dv"),
        // A custom server: max_connections defaults to 4.
        dovecot_account("dv", "u10@example.test", "starttls", "auth = \"password\"\npassword_env = \"DV_PW\"")
    );
    let p = Postern::start_with(&cfg, 1, &[("DV_PW", "pw-u10")]);
    let replies = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..40 {
            let (p, replies, m) = (&p, &replies, &m);
            s.spawn(move || {
                let mut c = login(p);
                let r = send(
                    &mut c,
                    "u10@example.test",
                    "rcpt@example.org",
                    &format!("{m}-{i}"),
                );
                replies.lock().unwrap().push(r);
            });
        }
    });
    let replies = replies.into_inner().unwrap();
    assert!(
        replies.iter().all(|r| r.starts_with("250")),
        "{replies:?}\n{}",
        p.logs()
    );
    assert_eq!(sink_messages(&m, 40, Duration::from_secs(30)).len(), 40);
}

#[test]
fn a_server_that_refuses_past_three_connections_lowers_the_cap_and_nothing_fails() {
    let pki = TestPki::new();
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            max_sessions: Some((3, "421 4.7.0 Too many connections, try later".into())),
            end_reply_delay: Some(Duration::from_millis(50)),
            ..Script::default()
        },
        &pki,
    );
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}upstream_timeout = \"60s\"\n{}max_connections = 8\n",
        users_section("capped"),
        fake_account("capped", &f, &pki, 1000)
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let ok = AtomicUsize::new(0);
    let replies = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..40 {
            let (p, ok, replies) = (&p, &ok, &replies);
            s.spawn(move || {
                let mut c = login(p);
                let r = send(
                    &mut c,
                    "me@corp.example",
                    "x@example.org",
                    &format!("cap3-{i}"),
                );
                if r.starts_with("250") {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                replies.lock().unwrap().push(r);
            });
        }
    });
    assert_eq!(
        ok.load(Ordering::SeqCst),
        40,
        "{:?}",
        replies.lock().unwrap()
    );
    assert_eq!(f.messages().len(), 40);
    assert!(p.logs().contains("cap lowered"), "{}", p.logs());
    let status = cli(&p, &["status"]);
    assert!(status.contains("cap lowered to"), "{status}");
    let v: serde_json::Value = serde_json::from_str(&cli(&p, &["status", "--json"])).unwrap();
    let c = &v["connections"][0];
    assert_eq!(c["configured"], 8, "{v}");
    assert!(c["cap"].as_u64().unwrap() <= 3, "{v}");
    // Never parked for it.
    assert!(v["quota"]["accounts"][0]["parked"].is_null(), "{v}");
}

// ---------------------------------------------------------------------------
// Delivery modes
// ---------------------------------------------------------------------------

#[test]
fn a_pool_smaller_than_its_volume_queues_the_rest_and_sends_it_when_the_window_frees() {
    let pki = TestPki::new();
    let f = implicit_fake(&pki);
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}\n{}window_length = \"8s\"\n{}window_length = \"8s\"\n\
         [pools.small]\naccounts = [\"pa\", \"pb\"]\ndelivery = \"relay-then-queue\"\n{QUEUE_FAST}",
        users_section("pool:small"),
        fake_account("pa", &f, &pki, 3),
        fake_account("pb", &f, &pki, 3),
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let mut c = login(&p);
    let started = Instant::now();
    let mut queued = 0;
    for i in 0..10 {
        let r = send(
            &mut c,
            "me@corp.example",
            "x@example.org",
            &format!("small-{i}"),
        );
        assert!(r.starts_with("250"), "{r}");
        if r.contains("Ok: queued as") {
            queued += 1;
        }
    }
    assert_eq!(queued, 4, "6 fit the two windows now, 4 wait");
    let now_sent = f.messages().len();
    assert_eq!(now_sent, 6);
    let list = queue_json(&p);
    assert_eq!(list.len(), 4);
    for e in &list {
        assert!(
            e["next_try"].is_string() && e["route"] == "pool:small",
            "{e}"
        );
    }
    let status = cli(&p, &["status"]);
    assert!(
        status.contains("queue pool:small: 4 message(s)"),
        "{status}"
    );
    // The windows free 8 s after the first sends: the 4 go out then.
    assert!(
        f.wait_for_messages(10, Duration::from_secs(40)),
        "{}",
        p.logs()
    );
    assert!(started.elapsed() >= Duration::from_secs(7));
    wait_for(&p, "queue empty", Duration::from_secs(10), || {
        queue_json(&p).is_empty()
    });
    // Round-robin over both, 3 + 2 each, never more than 3 per mailbox in
    // one 8 s window (the pool rewrote MAIL FROM to the mailbox's address).
    let msgs = f.messages();
    for acct in ["pa@fake.example", "pb@fake.example"] {
        let n = msgs.iter().filter(|m| m.mail_from == acct).count();
        assert_eq!(n, 5, "{acct}");
    }
    assert_eq!(msgs.len(), 10);
    let v: serde_json::Value = serde_json::from_str(&cli(&p, &["status", "--json"])).unwrap();
    for a in v["quota"]["accounts"].as_array().unwrap() {
        let counted = a["used"].as_u64().unwrap() + a["reserved"].as_u64().unwrap();
        assert!(counted <= 3, "over the limit: {a}");
    }
}

#[test]
fn upstream_down_queues_twenty_and_delivers_each_once_when_it_is_back() {
    let pki = TestPki::new();
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}delivery = \"relay-then-queue\"\n{FAST_LIMITS}upstream_timeout = \"2s\"\n\
         [accounts.down]\nemail = \"down@fake.example\"\nsmtp = {{ host = \"localhost\", port = {port}, tls = \"implicit\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"PW_FAKE\"\n{QUEUE_FAST}",
        users_section("down"),
        pki.ca_pem_path.display()
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let mut c = login(&p);
    let m = marker("down");
    for i in 0..20 {
        let r = send(
            &mut c,
            "me@corp.example",
            "x@example.org",
            &format!("{m}-{i}"),
        );
        assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    }
    assert_eq!(queue_json(&p).len(), 20);
    // Back where it was.
    let f = FakeSmtp::start_on(
        port,
        Script {
            tls: Tls::Implicit,
            ..Script::default()
        },
        &pki,
    );
    assert!(
        f.wait_for_messages(20, Duration::from_secs(40)),
        "{}",
        p.logs()
    );
    wait_for(&p, "queue empty", Duration::from_secs(10), || {
        queue_json(&p).is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let msgs = f.messages();
    assert_eq!(msgs.len(), 20, "each exactly once");
    for i in 0..20 {
        let subject = format!("Subject: {m}-{i}\r\n");
        let n = msgs
            .iter()
            .filter(|x| {
                x.data
                    .windows(subject.len())
                    .any(|w| w == subject.as_bytes())
            })
            .count();
        assert_eq!(n, 1, "{m}-{i}");
    }
}

#[test]
fn queue_mode_answers_at_once_and_the_cli_lists_shows_retries_and_deletes() {
    let pki = TestPki::new();
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            rcpt_replies: vec![("later".into(), "450 4.2.1 Try later".into())],
            ..Script::default()
        },
        &pki,
    );
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}delivery = \"queue\"\n{FAST_LIMITS}\n{}[queue]\nretry = [\"1h\"]\n",
        users_section("qa"),
        fake_account("qa", &f, &pki, 1000)
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let mut c = login(&p);
    let r = send(&mut c, "me@corp.example", "now@example.org", "cli-1");
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    assert!(f.wait_for_messages(1, Duration::from_secs(10)));
    // A recipient refused for now stays, with its next try an hour away.
    let r = send(&mut c, "me@corp.example", "later@example.org", "cli-2");
    let id = r.rsplit(' ').next().unwrap().to_owned();
    wait_for(&p, "first attempt", Duration::from_secs(10), || {
        queue_json(&p).first().is_some_and(|e| e["attempts"] == 1)
    });
    let text = cli(&p, &["queue"]);
    assert!(text.contains(&id) && text.contains("450 4.2.1"), "{text}");
    let shown = cli(&p, &["queue", "show", &id]);
    assert!(
        shown.contains("Subject: cli-2")
            && shown.contains("deferred")
            && shown.contains("<later@example.org>"),
        "{shown}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&cli(&p, &["queue", "show", &id, "--json"])).unwrap();
    assert_eq!(v["message"]["id"], id.as_str());
    // Retry now: tried again at once.
    cli(&p, &["queue", "retry", &id]);
    wait_for(&p, "second attempt", Duration::from_secs(10), || {
        queue_json(&p).first().is_some_and(|e| e["attempts"] == 2)
    });
    cli(&p, &["queue", "retry", "--all"]);
    // Delete: gone, and its history says so.
    let out = cli(&p, &["queue", "delete", &id]);
    assert!(out.contains("deleted"), "{out}");
    assert!(queue_json(&p).is_empty());
    let shown = cli(&p, &["queue", "show", &id]);
    assert!(
        shown.contains("not in the queue") && shown.contains("deleted"),
        "{shown}"
    );
    assert_eq!(f.messages().len(), 1);
}

#[test]
fn a_permanent_refusal_bounces_to_the_sender_at_the_sink() {
    let m = marker("bounce");
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}delivery = \"queue\"\n{FAST_LIMITS}\n{}",
        users_section("dvb"),
        dovecot_account("dvb", "u11@example.test", "starttls", "auth = \"password\"\npassword_env = \"DV_PW\"")
    );
    let p = Postern::start_with(&cfg, 1, &[("DV_PW", "pw-u11")]);
    let mut c = login(&p);
    // The sink refuses reject-5xx@ with 550 (Dovecot passes that on).
    let r = send(&mut c, "u11@example.test", "reject-5xx@example.org", &m);
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    // The summary line names the queue id and says it was queued.
    let id = r.rsplit(' ').next().unwrap().trim();
    // Logged as the reply goes out: the log reader may be a moment behind.
    p.wait_log("transaction done", Duration::from_secs(10));
    let logs = p.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("transaction done"))
        .unwrap_or_else(|| panic!("no summary line\n{logs}"));
    assert!(
        line.contains(&format!("queue_id={id}")) && line.contains("outcome=queued"),
        "{line}"
    );
    // The refused message never reached the sink: what carries the marker
    // is the report (the original headers are in it).
    let report = sink_messages(&m, 1, Duration::from_secs(30))
        .into_iter()
        .find(|x| String::from_utf8_lossy(&x.data).contains("Undelivered Mail Returned to Sender"))
        .unwrap_or_else(|| panic!("no report at the sink\n{}", p.logs()));
    assert_eq!(report.rcpts, ["u11@example.test"]);
    let text = String::from_utf8_lossy(&report.data);
    assert!(text.contains("message/delivery-status"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; reject-5xx@example.org"),
        "{text}"
    );
    assert!(text.contains("550"), "{text}");
    assert!(
        text.contains(&format!("Subject: {m}")),
        "the original headers: {text}"
    );
    wait_for(&p, "queue empty", Duration::from_secs(10), || {
        queue_json(&p).is_empty()
    });
}

#[test]
fn a_full_queue_answers_452_and_loses_nothing() {
    let pki = TestPki::new();
    // Refuses every recipient for now: what is queued stays queued.
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            rcpt_replies: vec![("@".into(), "451 4.3.0 Not now".into())],
            ..Script::default()
        },
        &pki,
    );
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}delivery = \"queue\"\n{FAST_LIMITS}\n{}\
         [queue]\nretry = [\"1h\"]\nmax_queue_size = {{ messages = 3 }}\n",
        users_section("full"),
        fake_account("full", &f, &pki, 1000)
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let mut c = login(&p);
    for i in 0..3 {
        let r = send(
            &mut c,
            "me@corp.example",
            "x@example.org",
            &format!("full-{i}"),
        );
        assert!(r.starts_with("250"), "{r}");
    }
    let r = send(&mut c, "me@corp.example", "x@example.org", "full-3");
    assert!(r.starts_with("452 4.3.1"), "{r}");
    assert_eq!(queue_json(&p).len(), 3);
}

/// A 2 MiB tmpfs as the data_dir: the disk fills while a message is being
/// queued.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let (ok, _, err) = run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ],
        );
        assert!(
            ok,
            "cannot mount a tmpfs for the disk-full test (run as root): {err}"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_answers_452_and_nothing_half_written_is_delivered() {
    let pki = TestPki::new();
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            rcpt_replies: vec![("@".into(), "451 4.3.0 Not now".into())],
            ..Script::default()
        },
        &pki,
    );
    let disk = Tmpfs::mount("3m");
    let cfg = format!(
        "data_dir = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}delivery = \"queue\"\n{FAST_LIMITS}\n{}\
         [queue]\nretry = [\"1h\"]\n",
        disk.0.path().join("var").display(),
        users_section("disk"),
        fake_account("disk", &f, &pki, 1000)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.toml");
    std::fs::write(&path, &cfg).unwrap();
    let p = Postern::spawn(dir, path, 1, &[("PW_FAKE", "x")]);
    let mut c = login(&p);
    let chunk = "x".repeat(998);
    let mut accepted = Vec::new();
    let mut full = None;
    for i in 0..20 {
        assert!(c.cmd("MAIL FROM:<me@corp.example>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<x@example.org>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let mut body = format!("Subject: disk-{i}\r\n\r\n");
        for _ in 0..300 {
            body.push_str(&chunk);
            body.push_str("\r\n");
        }
        c.send(body.as_bytes());
        let r = c.cmd(".");
        if r.starts_with("250") {
            accepted.push(format!("disk-{i}"));
        } else {
            full = Some(r);
            break;
        }
    }
    let full = full.expect("the 3 MiB disk never filled");
    assert!(full.starts_with("452 4.3.1"), "{full}");
    assert!(full.contains("disk"), "{full}");
    // What got a 250 is queued whole; nothing else is.
    let list = queue_json(&p);
    assert_eq!(list.len(), accepted.len(), "{list:?}");
    for e in &list {
        assert!(e["size"].as_u64().unwrap() > 300_000, "{e}");
    }
    let mut p = p;
    assert!(p.is_running());
}

// ---------------------------------------------------------------------------
// Crashes and shared counters
// ---------------------------------------------------------------------------

/// Several points to die at: waiting for slow final replies (the upstream
/// has the message, Postern has no answer yet), and with fast replies right
/// after the first or the tenth arrived (the upstream said 250, the queue
/// may not have marked it yet).
#[test]
fn kill_9_during_queue_delivery_loses_nothing_and_says_what_may_be_twice() {
    for (delay, after) in [(300, 3), (0, 1), (0, 10)] {
        kill_9_at(Duration::from_millis(delay), after);
    }
}

fn kill_9_at(delay: Duration, after: usize) {
    let pki = TestPki::new();
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            end_reply_delay: (!delay.is_zero()).then_some(delay),
            ..Script::default()
        },
        &pki,
    );
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}delivery = \"queue\"\n{FAST_LIMITS}\n{}max_connections = 8\n[queue]\nretry = [\"1s\"]\nworkers = 8\n",
        users_section("crash"),
        fake_account("crash", &f, &pki, 1000)
    );
    let m = marker("crash");
    let accepted = std::sync::Arc::new(Mutex::new(Vec::new()));
    let mut p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    // The client keeps sending while the workers deliver; Postern dies
    // under both once `after` messages reached the upstream.
    let mut c = login(&p);
    let (got, m2) = (accepted.clone(), m.clone());
    let sender = std::thread::spawn(move || {
        for i in 0..30 {
            let subject = format!("{m2}-{i}");
            let r = send(&mut c, "me@corp.example", "x@example.org", &subject);
            if !r.starts_with("250") {
                return;
            }
            got.lock().unwrap().push(subject);
        }
    });
    assert!(f.wait_for_messages(after, Duration::from_secs(20)));
    p.signal("KILL");
    p.wait_exit(Duration::from_secs(10));
    // It ends when the connection goes (a closed connection panics the
    // test client: expected here).
    let _ = sender.join();
    let accepted = accepted.lock().unwrap().clone();
    let seen_before = f.messages().len();
    let tmp = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
    let config = p.config.clone();
    drop(p);
    let p = Postern::spawn(tmp, config, 1, &[("PW_FAKE", "x")]);
    let crashed: Vec<String> = queue_json(&p)
        .iter()
        .filter(|e| e["crashed"] == true)
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    wait_for(&p, "queue empty", Duration::from_secs(60), || {
        queue_json(&p).is_empty()
    });
    std::thread::sleep(Duration::from_secs(1));
    let msgs = f.messages();
    let mut twice = 0;
    for subject in &accepted {
        let needle = format!("Subject: {subject}\r\n");
        let n = msgs
            .iter()
            .filter(|x| x.data.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .count();
        assert!(n >= 1, "{subject} got a 250 and never arrived");
        if n > 1 {
            twice += 1;
        }
    }
    eprintln!(
        "kill after {after} (reply delay {delay:?}): {} delivered before the kill, {} in flight then (marked crashed), {twice} delivered twice",
        seen_before,
        crashed.len()
    );
    assert!(
        twice <= crashed.len(),
        "{twice} twice, {} marked",
        crashed.len()
    );
    assert!(p.logs().contains("may arrive twice") || crashed.is_empty());
}

#[test]
fn two_instances_with_their_own_queues_share_one_redis_limit() {
    let pki = TestPki::new();
    let f = implicit_fake(&pki);
    let acct = format!("shq{}", &marker("x")[2..].replace('-', ""));
    let cfg = format!(
        "data_dir = \"var\"\nquota_store = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}\n{}[pools.shq]\naccounts = [\"{acct}\"]\nfrom_policy = \"keep\"\ndelivery = \"queue\"\n[queue]\nretry = [\"1s\"]\n",
        peer_env("REDIS_URL"),
        users_section("pool:shq"),
        fake_account(&acct, &f, &pki, 7)
    );
    let a = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let b = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    std::thread::scope(|s| {
        for p in [&a, &b] {
            s.spawn(move || {
                let mut c = login(p);
                for i in 0..10 {
                    let r = send(
                        &mut c,
                        "x@corp.example",
                        "y@example.org",
                        &format!("shq-{i}"),
                    );
                    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
                }
            });
        }
    });
    // Both queues drain into the one limit of 7; the rest wait.
    assert!(f.wait_for_messages(7, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(f.messages().len(), 7, "exactly the limit went out");
    assert_eq!(queue_json(&a).len() + queue_json(&b).len(), 13);
}

#[test]
fn relay_then_queue_queues_a_transient_refusal_of_the_message_and_passes_a_permanent_one() {
    let pki = TestPki::new();
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            end_reply: "451 4.3.0 Temporary local problem".into(),
            ..Script::default()
        },
        &pki,
    );
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}delivery = \"relay-then-queue\"\n{FAST_LIMITS}\n{}{QUEUE_FAST}",
        users_section("rtq"),
        fake_account("rtq", &f, &pki, 1000)
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let mut c = login(&p);
    let r = send(&mut c, "me@corp.example", "x@example.org", "rtq-transient");
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    // The upstream recovers: the queued copy goes out.
    f.set_script(Script {
        tls: Tls::Implicit,
        ..Script::default()
    });
    assert!(
        f.wait_for_messages(1, Duration::from_secs(20)),
        "{}",
        p.logs()
    );
    // A permanent refusal still reaches the client, and nothing is queued.
    f.set_script(Script {
        tls: Tls::Implicit,
        end_reply: "554 5.7.1 Message rejected as spam".into(),
        ..Script::default()
    });
    let r = send(&mut c, "me@corp.example", "x@example.org", "rtq-permanent");
    assert!(r.starts_with("554 5.7.1"), "{r}");
    wait_for(&p, "queue empty", Duration::from_secs(10), || {
        queue_json(&p).is_empty()
    });
}
