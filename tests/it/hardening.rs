//! Regression tests for the defects adversarial probing found: back-off
//! across connections, upstream IMAP commands that never finish, the
//! end-of-DATA wait, over-parking on a burst, spurious pacing deferrals, a
//! Redis that lost its data, secrets checked at start, and what a crash
//! leaves behind.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fake_smtp::{FakeSmtp, Script, TestPki, Tls};
use crate::harness::*;
use crate::pools::fake_account;

/// A logged-in local SMTP client (`user` with the test password).
fn smtp_login(p: &Postern, user: &str) -> Raw {
    let mut c = Raw::connect(p.smtp());
    c.reply();
    c.cmd("EHLO hardening.test");
    let auth = b64(format!("\0{user}\0{APP_PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {auth}"));
    assert!(r.starts_with("235"), "{user}: {r}");
    c
}

/// One message; the final reply (or the first refusal).
fn send_one(c: &mut Raw, marker: &str) -> String {
    crate::pools::send(c, "me@corp.example", marker)
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

fn status_json(p: &Postern) -> serde_json::Value {
    let (ok, out, err) = run(
        BIN,
        &["--config", p.config.to_str().unwrap(), "status", "--json"],
    );
    assert!(ok, "status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

// ---------------------------------------------------------------------------
// 1. Back-off holds across connections
// ---------------------------------------------------------------------------

/// Wrong passwords for `user` on one connection until `until`; how many
/// answers came back.
fn guess_until(p: &Postern, user: &str, until: Instant, answers: &AtomicUsize) {
    let mut c = Raw::connect(p.smtp());
    c.reply();
    c.cmd("EHLO guesser.test");
    let wrong = b64(format!("\0{user}\0not-the-password").as_bytes());
    while Instant::now() < until {
        let r = c.cmd(&format!("AUTH PLAIN {wrong}"));
        assert!(r.starts_with("535"), "{r}");
        // Answers that arrive after the end (queued behind the others)
        // are not counted.
        if Instant::now() <= until {
            answers.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn backoff_holds_across_connections() {
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n\
         [users.target]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\n\
         [users.baseline]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\n\
         [users.bystander]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\n\
         [limits]\nauth_failure_delay = \"100ms\"\nauth_backoff_max = \"400ms\"\nmax_bad_commands = 100000\n"
    );
    let p = Postern::start(&cfg, 1);
    let many = AtomicUsize::new(0);
    let one = AtomicUsize::new(0);
    let until = Instant::now() + Duration::from_secs(4);
    let bystander_took = std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| guess_until(&p, "target", until, &many));
        }
        s.spawn(|| guess_until(&p, "baseline", until, &one));
        // Another user logs in while both are in back-off.
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        let mut c = smtp_login(&p, "bystander");
        assert!(send_one(&mut c, &marker("bystander")).starts_with("250"));
        started.elapsed()
    });
    let (many, one) = (many.into_inner(), one.into_inner());
    eprintln!(
        "16 connections got {many} answers, one connection {one}; bystander logged in and sent in {bystander_took:?}"
    );
    assert!(one >= 3, "the single guesser got only {one} answers");
    assert!(
        many <= one + 3,
        "16 connections guessing at once got {many} answers, one connection {one}"
    );
    // Unaffected: queued behind the guessers it would wait 16 back-off
    // steps (6.4 s).
    assert!(
        bystander_took < Duration::from_secs(2),
        "bystander took {bystander_took:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Upstream IMAP commands have a deadline for the whole command
// ---------------------------------------------------------------------------

/// How the drip upstream answers LOGIN.
#[derive(Clone, Copy)]
pub enum Drip {
    /// `* 1 EXISTS` every 500 ms, never the tagged reply.
    Untagged,
    /// `+ ` continuation lines as fast as the socket takes them.
    Continuations,
}

/// A plaintext IMAP upstream that greets, answers CAPABILITY, and then
/// answers LOGIN with an endless drip. Returns its port and a stop flag.
pub fn drip_upstream(drip: Drip) -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let stop = stop2.clone();
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = w.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] drip ready\r\n");
                let mut r = BufReader::new(s);
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let tag = line.split(' ').next().unwrap_or("*").to_owned();
                    if line.contains("CAPABILITY") {
                        let _ = w.write_all(
                            format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n")
                                .as_bytes(),
                        );
                    } else if line.contains("LOGIN") {
                        while !stop.load(Ordering::SeqCst) {
                            let (bytes, pause): (&[u8], u64) = match drip {
                                Drip::Untagged => (b"* 1 EXISTS\r\n", 500),
                                Drip::Continuations => (b"+ \r\n+ \r\n+ \r\n+ \r\n", 0),
                            };
                            if w.write_all(bytes).is_err() {
                                return;
                            }
                            if pause > 0 {
                                std::thread::sleep(Duration::from_millis(pause));
                            }
                        }
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    (port, stop)
}

fn drip_postern(port: u16) -> Postern {
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[imap]\nlisten = \"127.0.0.1:0\"\n\
         [users.app]\npassword_hash = \"{APP_HASH}\"\nread_via = \"drip\"\n\
         {FAST_LIMITS}upstream_timeout = \"2s\"\n\
         [accounts.drip]\nemail = \"drip@example.test\"\n\
         imap = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\" }}\n\
         auth = \"password\"\npassword_env = \"DRIP_PW\"\n"
    );
    Postern::start_with(&cfg, 2, &[("DRIP_PW", "pw")])
}

#[test]
fn imap_upstream_that_drips_forever_gets_unavailable_in_time() {
    for drip in [Drip::Untagged, Drip::Continuations] {
        let (port, stop) = drip_upstream(drip);
        let p = drip_postern(port);
        let mut c = Raw::connect(p.addr("imap"));
        assert!(c.line().unwrap().starts_with("* OK"));
        let started = Instant::now();
        c.send(format!("a LOGIN app {APP_PASSWORD}\r\n").as_bytes());
        let r = c.line().unwrap();
        let took = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
        // The deadline is upstream_timeout (2 s) for LOGIN; connect,
        // greeting and CAPABILITY were answered at once.
        assert!(took < Duration::from_secs(10), "took {took:?}: {r}");
        assert!(
            p.wait_log("upstream IMAP login failed", Duration::from_secs(5)),
            "{}",
            p.logs()
        );
        let logs = p.logs();
        let line = logs
            .lines()
            .find(|l| l.contains("upstream IMAP login failed"))
            .unwrap();
        assert!(line.contains("account=drip"), "{line}");
        match drip {
            Drip::Untagged => assert!(line.contains("timed out"), "{line}"),
            Drip::Continuations => assert!(
                line.contains("timed out") || line.contains("responses to LOGIN"),
                "{line}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// 3. The end-of-DATA wait follows config
// ---------------------------------------------------------------------------

#[test]
fn upstream_frozen_after_the_final_dot_answers_451_within_upstream_data_timeout() {
    let pki = TestPki::new();
    for chunking in [false, true] {
        let mut ehlo = Script::default().ehlo_extensions;
        if chunking {
            ehlo.push("CHUNKING".into());
        }
        let f = FakeSmtp::start(
            Script {
                tls: Tls::Implicit,
                ehlo_extensions: ehlo,
                freeze_after_data: true,
                ..Script::default()
            },
            &pki,
        );
        let cfg = format!(
            "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}upstream_data_timeout = \"2s\"\n{}",
            users_section("fz"),
            fake_account("fz", &f, &pki, 1000)
        );
        let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
        let mut c = smtp_login(&p, "app");
        let started = Instant::now();
        let r = send_one(&mut c, &marker("frozen"));
        let took = started.elapsed();
        assert!(r.starts_with("451 4.4.2"), "chunking={chunking}: {r}");
        assert!(
            r.contains("timed out") && r.contains("may have been delivered"),
            "{r}"
        );
        assert!(took >= Duration::from_secs(2), "{took:?}");
        assert!(took < Duration::from_secs(20), "{took:?}");
        assert_eq!(f.messages().len(), 1, "the upstream did take it");
    }
}

// ---------------------------------------------------------------------------
// 4. One burst does not park a mailbox for an hour
// ---------------------------------------------------------------------------

#[test]
fn a_burst_of_connection_refusals_does_not_park_the_mailbox() {
    let pki = TestPki::new();
    let f = FakeSmtp::start(
        Script {
            tls: Tls::Implicit,
            max_sessions: Some((
                10,
                "421 4.7.0 Maximum number of connections from user+IP exceeded".into(),
            )),
            ..Script::default()
        },
        &pki,
    );
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}\n{}[pools.burst]\naccounts = [\"mb\"]\nfrom_policy = \"keep\"\n",
        users_section("pool:burst"),
        fake_account("mb", &f, &pki, 1000) + "max_connections = 16\n"
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let replies = std::sync::Mutex::new(Vec::new());
    // Logged in first, then all at once: 16 upstream connections together.
    let ready = std::sync::Barrier::new(16);
    std::thread::scope(|s| {
        for i in 0..16 {
            let (p, replies, ready) = (&p, &replies, &ready);
            s.spawn(move || {
                let mut c = smtp_login(p, "app");
                ready.wait();
                let r = send_one(&mut c, &marker(&format!("burst-{i}")));
                replies.lock().unwrap().push(r);
            });
        }
    });
    assert!(f.auth_attempts() > 10, "no burst happened");
    let replies = replies.into_inner().unwrap();
    let ok = replies.iter().filter(|r| r.starts_with("250")).count();
    // A refusal lowers the cap and the session waits for a connection
    // already open: none of the sixteen is refused.
    assert_eq!(ok, 16, "{replies:?}");
    let v = status_json(&p);
    let a = &v["quota"]["accounts"][0];
    let parked = &a["parked"];
    if !parked.is_null() {
        let since: jiff::Timestamp = parked["since"].as_str().unwrap().parse().unwrap();
        let until: jiff::Timestamp = parked["until"].as_str().unwrap().parse().unwrap();
        assert!(
            until - since <= jiff::SignedDuration::from_mins(1),
            "parked beyond the first level: {a}"
        );
    }
    assert!(a["throttles"].as_u64().unwrap() <= 1, "{a}");
    // And the next send goes through.
    let mut c = smtp_login(&p, "app");
    assert!(send_one(&mut c, &marker("after-burst")).starts_with("250"));
}

// ---------------------------------------------------------------------------
// 5. No spurious 451 without pacing
// ---------------------------------------------------------------------------

#[test]
fn no_deferrals_without_pacing_under_32_concurrent_senders() {
    let pki = TestPki::new();
    let f = implicit_fake(&pki);
    for store in ["sqlite", "redis"] {
        let quota_store = match store {
            "redis" => format!("quota_store = \"{}\"\n", peer_env("REDIS_URL")),
            _ => String::new(),
        };
        let a = format!("np{}", &marker("a")[2..].replace('-', ""));
        let b = format!("nq{}", &marker("b")[2..].replace('-', ""));
        let cfg = format!(
            "data_dir = \"var\"\n{quota_store}[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}\n{}{}[pools.np]\naccounts = [\"{a}\", \"{b}\"]\nfrom_policy = \"keep\"\n",
            users_section("pool:np"),
            fake_account(&a, &f, &pki, 100000),
            fake_account(&b, &f, &pki, 100000),
        );
        let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
        let deferred = AtomicUsize::new(0);
        for round in 0..10 {
            std::thread::scope(|s| {
                for i in 0..32 {
                    let (p, deferred) = (&p, &deferred);
                    s.spawn(move || {
                        let mut c = smtp_login(p, "app");
                        let r = send_one(&mut c, &marker(&format!("np-{round}-{i}")));
                        if !r.starts_with("250") {
                            eprintln!("{store}: {r}");
                            deferred.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
            });
        }
        assert_eq!(
            deferred.into_inner(),
            0,
            "{store}: deferrals without pacing"
        );
    }
}

// ---------------------------------------------------------------------------
// 6. A Redis that lost its data is not trusted
// ---------------------------------------------------------------------------

/// A private redis-server (the shared one must never be flushed).
pub struct PrivateRedis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
    /// Keep data across a restart (an append-only file in `dir`).
    aof: bool,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        Self::start_with(false)
    }

    /// One that keeps its data when stopped and started again.
    pub fn start_persistent() -> PrivateRedis {
        Self::start_with(true)
    }

    fn start_with(aof: bool) -> PrivateRedis {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = PrivateRedis {
            dir,
            port,
            child: None,
            aof,
        };
        r.spawn();
        r
    }

    pub fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                if self.aof { "yes" } else { "no" },
                "--appendfsync",
                "always",
                "--dir",
                self.dir.path().to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (tests/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stop without saving and start again: an empty Redis.
    fn restart_empty(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stop without saving (a crash, or a Redis taken down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn redis_that_lost_its_data_fails_closed_until_the_reset_is_accepted() {
    let pki = TestPki::new();
    let f = implicit_fake(&pki);
    let mut redis = PrivateRedis::start();
    let cfg = format!(
        "data_dir = \"var\"\nquota_store = \"{}\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}\n{}{}[pools.lost]\naccounts = [\"la\", \"lb\"]\nfrom_policy = \"keep\"\n",
        redis.url(),
        users_section("pool:lost"),
        fake_account("la", &f, &pki, 3),
        fake_account("lb", &f, &pki, 3),
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let mut c = smtp_login(&p, "app");
    for i in 0..4 {
        let r = send_one(&mut c, &format!("lost-before-{i}"));
        assert!(r.starts_with("250"), "{r}");
    }
    // Redis restarts without persistence: every counter is gone.
    redis.restart_empty();
    for i in 0..6 {
        let r = send_one(&mut c, &format!("lost-after-{i}"));
        assert!(r.starts_with("451 4.3.0"), "{r}");
        // The first may meet the connection to Redis being re-made.
        if i > 0 {
            assert!(r.contains("accept-reset"), "{r}");
        }
    }
    assert_eq!(
        f.messages().len(),
        4,
        "nothing went out on an emptied store"
    );
    assert!(p.wait_log("quota store lost its state", Duration::from_secs(5)));
    let v = status_json(&p);
    assert!(
        v["quota"]["store_lost"]
            .as_str()
            .is_some_and(|s| s.contains("gone")),
        "{v}"
    );
    let (ok, text, _) = run(BIN, &["--config", p.config.to_str().unwrap(), "status"]);
    assert!(ok && text.contains("LOST ITS STATE"), "{text}");
    // The operator accepts the reset: sending resumes.
    let (ok, said, err) = run(
        BIN,
        &[
            "--config",
            p.config.to_str().unwrap(),
            "quota",
            "accept-reset",
        ],
    );
    assert!(ok, "{said}{err}");
    assert!(said.contains("resume"), "{said}");
    let r = send_one(&mut c, "lost-resumed");
    assert!(r.starts_with("250"), "{r}\n{}", p.logs());
    assert!(status_json(&p)["quota"]["store_lost"].is_null());
    // A restart of Postern after another loss notices it too (the epoch it
    // last saw is kept in data_dir).
    drop(c);
    let mut p = p;
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(0));
    redis.restart_empty();
    let tmp = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
    let config = p.config.clone();
    drop(p);
    let p = Postern::spawn(tmp, config, 1, &[("PW_FAKE", "x")]);
    let mut c = smtp_login(&p, "app");
    let r = send_one(&mut c, "lost-after-restart");
    assert!(r.starts_with("451 4.3.0"), "{r}");
    assert_eq!(f.messages().len(), 5);
}

// ---------------------------------------------------------------------------
// 7. check-config and run check that every secret is there
// ---------------------------------------------------------------------------

#[test]
fn missing_secrets_fail_check_config_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("missing.pw");
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}\n\
         [accounts.envless]\nemail = \"e@example.test\"\nsmtp = {{ host = \"127.0.0.1\", port = 1, tls = \"none\" }}\nauth = \"password\"\npassword_env = \"POSTERN_TEST_UNSET_VAR\"\n\
         [accounts.fileless]\nemail = \"f@example.test\"\nsmtp = {{ host = \"127.0.0.1\", port = 1, tls = \"none\" }}\nauth = \"password\"\npassword_file = \"{}\"\n",
        users_section("envless"),
        pw_file.display()
    );
    let path = dir.path().join("postern.toml");
    std::fs::write(&path, &cfg).unwrap();
    let config = path.to_str().unwrap();
    let (ok, out, err) = run(BIN, &["--config", config, "check-config"]);
    assert!(!ok, "check-config passed: {out}");
    let all = format!("{out}{err}");
    assert!(
        all.contains("accounts.envless.password_env")
            && all.contains("POSTERN_TEST_UNSET_VAR")
            && all.contains("accounts.fileless.password_file"),
        "{all}"
    );
    let out = std::process::Command::new(BIN)
        .args(["--config", config, "run"])
        .env_remove("POSTERN_TEST_UNSET_VAR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("accounts.envless.password_env") && err.contains("accounts.fileless"),
        "{err}"
    );
    // An empty password file is missing too; a disabled account needs none.
    std::fs::write(&pw_file, "\n").unwrap();
    let (ok, out, err) = run(BIN, &["--config", config, "check-config"]);
    assert!(
        !ok && format!("{out}{err}").contains("is empty"),
        "{out}{err}"
    );
    let cfg = cfg
        .replace(
            "[accounts.envless]\n",
            "[accounts.envless]\nenabled = false\n",
        )
        .replace(
            "[accounts.fileless]\n",
            "[accounts.fileless]\nenabled = false\n",
        );
    std::fs::write(&path, &cfg).unwrap();
    let (ok, out, err) = run(BIN, &["--config", config, "check-config"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("disabled"), "{out}");
    // Running, a user sending through the disabled account is told so.
    let p = Postern::spawn(dir, path, 1, &[]);
    let mut c = smtp_login(&p, "app");
    let r = c.cmd("MAIL FROM:<me@corp.example>");
    assert!(r.starts_with("451") && r.contains("disabled"), "{r}");
}

// ---------------------------------------------------------------------------
// Smaller: what a crash leaves behind; error texts
// ---------------------------------------------------------------------------

#[test]
fn orphans_in_capture_tmp_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("var/capture/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // Written by a process that is gone (no such pid), and a file of
    // someone else's (not Postern's name form: left to the 36-hour rule).
    let orphan = tmp.join("1700000000.M1P4000000000Q0.postern");
    std::fs::write(&orphan, b"half a message").unwrap();
    let foreign = tmp.join("not-postern");
    std::fs::write(&foreign, b"x").unwrap();
    let path = dir.path().join("postern.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}",
            users_section("capture")
        ),
    )
    .unwrap();
    let p = Postern::spawn(dir, path, 1, &[]);
    assert!(!orphan.exists(), "the orphan is still there");
    assert!(foreign.exists());
    assert!(p.logs().contains("removed unfinished captures"));
}

#[test]
fn a_taken_port_is_reported_once() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"var\"\n[smtp]\nlisten = \"{}\"\n{}",
            taken.local_addr().unwrap(),
            users_section("capture")
        ),
    )
    .unwrap();
    let (ok, _, err) = run(BIN, &["--config", path.to_str().unwrap(), "run"]);
    assert!(!ok);
    assert_eq!(
        err.matches("Address already in use").count(),
        1,
        "the cause is repeated: {err}"
    );
}

#[test]
fn a_frozen_implicit_tls_server_is_reported_as_timed_out() {
    // Accepts and never says a word (not even a TLS ServerHello).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    let pki = TestPki::new();
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}upstream_timeout = \"1s\"\n\
         [accounts.frozen]\nemail = \"f@example.test\"\nsmtp = {{ host = \"localhost\", port = {port}, tls = \"implicit\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"PW_FAKE\"\n",
        users_section("frozen"),
        pki.ca_pem_path.display()
    );
    let p = Postern::start_with(&cfg, 1, &[("PW_FAKE", "x")]);
    let mut c = smtp_login(&p, "app");
    let r = c.cmd("MAIL FROM:<me@corp.example>");
    assert!(r.starts_with("451"), "{r}");
    assert!(
        r.contains("timed out") && !r.contains("plaintext first"),
        "{r}"
    );
}
