//! Built-in OAuth2 end to end: `postern auth` against a local authorization
//! server (tests/it/oauth_server.rs, real HTTP on 127.0.0.1) whose tokens the
//! real Dovecot accepts, then `postern run` relaying to Dovecot submission
//! and proxying Dovecot IMAP with those tokens: refresh on expiry, one
//! refresh for many logins, rotation across restarts, the encrypted store,
//! invalid_grant, transient endpoint failures, the device and client
//! credentials grants, and no secret in trace-level logs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::oauth_server::{revoke, OAuthServer};
use crate::relay::sink_messages;

const CLIENT: &str = "postern-test-client";

/// A test's authorization server, config and data dir.
struct Env {
    server: OAuthServer,
    dir: Option<tempfile::TempDir>,
    config: PathBuf,
    data_dir: PathBuf,
    user: &'static str,
}

impl Env {
    /// `oauth_extra` goes inside `oauth = { … }`, `limits_extra` into [limits].
    fn new(user: &'static str, secret: Option<&str>, oauth_extra: &str, limits_extra: &str) -> Env {
        let server = OAuthServer::start(CLIENT, secret, user);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("postern.toml");
        // [limits]: fast failures, 5 s upstream timeout unless given, no
        // warm connections (every send logs in upstream).
        let timeout = if limits_extra.contains("upstream_timeout") {
            ""
        } else {
            "upstream_timeout = \"5s\"\n"
        };
        let text = format!(
            "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[imap]\nlisten = \"127.0.0.1:0\"\n\
             [users.app]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"acct\"\nread_via = \"acct\"\n\
             {FAST_LIMITS}{timeout}upstream_keepalive = \"0s\"\n{limits_extra}\n\
             [accounts.acct]\nemail = \"{user}\"\n\
             smtp = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\n\
             imap = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\n\
             ca_file = \"{}\"\nauth = \"oauth2\"\n\
             oauth = {{ client_id = \"{CLIENT}\", auth_url = \"{}\", token_url = \"{}\", device_url = \"{}\", scopes = [\"mail\", \"offline\"]{oauth_extra} }}\n",
            peer_env("DOVECOT_SUBMISSION_PORT"),
            peer_env("DOVECOT_IMAP_PORT"),
            peer_env("PEERS_CA"),
            server.url("/authorize"),
            server.url("/token"),
            server.url("/device"),
        );
        std::fs::write(&config, text).unwrap();
        let data_dir = dir.path().join("var");
        Env {
            server,
            dir: Some(dir),
            config,
            data_dir,
            user,
        }
    }

    /// Run `postern --config … ARGS` in the background.
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Cli {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("RUST_LOG").env_remove("POSTERN_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |r: Box<dyn std::io::Read + Send>| {
            let buf = Arc::new(Mutex::new(Vec::<String>::new()));
            let b = buf.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    b.lock().unwrap().push(line);
                }
            });
            buf
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Cli {
            stdin: child.stdin.take(),
            child,
            out,
            err,
        }
    }

    /// `postern auth acct` through the loopback redirect, with the test
    /// playing the browser (curl follows the server's redirect to Postern's
    /// listener). Returns (stdout, stderr).
    fn consent(&self, env: &[(&str, &str)]) -> (String, String) {
        let run = self.cli(&["auth", "acct"], env);
        let prefix = self.server.url("/authorize?");
        let url = run.wait_for(
            |l| l.trim_start().starts_with(&prefix),
            Duration::from_secs(20),
        );
        let (ok, page, e) = run_cmd("curl", &["-sS", "-L", "--max-time", "20", url.trim()]);
        assert!(ok, "{e}");
        assert!(
            page.contains("Postern received the authorization for account acct"),
            "{page}"
        );
        let (code, out, err) = run.finish(Duration::from_secs(20));
        assert_eq!(code, Some(0), "auth failed:\n{out}\n{err}");
        assert!(
            out.contains("Saved the authorization of account acct"),
            "{out}"
        );
        (out, err)
    }

    fn start(&mut self, env: &[(&str, &str)]) -> Postern {
        let dir = self.dir.take().expect("postern already running");
        Postern::spawn(dir, self.config.clone(), 2, env)
    }

    /// Kill postern (SIGKILL, like a crash) and keep its data dir.
    fn kill(&mut self, mut p: Postern) {
        let dir = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
        drop(p);
        self.dir = Some(dir);
    }

    fn status(&self, json: bool) -> String {
        let mut args = vec!["status"];
        if json {
            args.push("--json");
        }
        let (code, out, err) = self.cli(&args, &[]).finish(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{err}");
        out
    }

    fn token_file(&self) -> PathBuf {
        self.data_dir.join("oauth/acct.token")
    }
}

/// A running CLI command with its output collected.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Cli {
    /// The first stdout line matching `pred`.
    fn wait_for(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.out.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such line; stdout:\n{}\nstderr:\n{}",
                self.out.lock().unwrap().join("\n"),
                self.err.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_line(&mut self, line: &str) {
        let w = self.stdin.as_mut().unwrap();
        w.write_all(format!("{line}\n").as_bytes()).unwrap();
        w.flush().unwrap();
    }

    /// Wait for the exit: (code, stdout, stderr).
    fn finish(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(100));
        let out = self.out.lock().unwrap().join("\n");
        let err = self.err.lock().unwrap().join("\n");
        (code, out, err)
    }
}

fn run_cmd(cmd: &str, args: &[&str]) -> (bool, String, String) {
    run(cmd, args)
}

/// One SMTP transaction through Postern: (MAIL FROM reply, final reply).
fn smtp_send(p: &Postern, from: &str, marker: &str) -> (String, Option<String>) {
    let mut c = Raw::connect(p.smtp());
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO test").starts_with("250"));
    let auth = b64(format!("\0app\0{APP_PASSWORD}").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {auth}"));
    assert!(r.starts_with("235"), "{r}");
    let m = c.cmd(&format!("MAIL FROM:<{from}>"));
    if !m.starts_with("250") {
        c.cmd("QUIT");
        return (m, None);
    }
    let r = c.cmd("RCPT TO:<rcpt@example.org>");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(
        format!(
            "From: <{from}>\r\nTo: <rcpt@example.org>\r\nSubject: {marker}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{marker}@example.test>\r\n\r\nbody {marker}\r\n.\r\n"
        )
        .as_bytes(),
    );
    let f = c.reply();
    c.cmd("QUIT");
    (m, Some(f))
}

/// Send and expect delivery at the sink.
fn send_ok(p: &Postern, from: &str, name: &str) {
    let m = marker(name);
    let (mail, fin) = smtp_send(p, from, &m);
    assert!(mail.starts_with("250"), "{mail}\n{}", p.logs());
    let fin = fin.unwrap();
    assert!(fin.starts_with("250"), "{fin}");
    assert_eq!(sink_messages(&m, 1, Duration::from_secs(10)).len(), 1);
}

/// `LOGIN` through Postern's IMAP proxy: the tagged reply.
fn imap_login(p: &Postern) -> String {
    let mut c = Raw::connect(p.addr("imap"));
    assert!(c.line().unwrap().starts_with("* OK"));
    c.send(format!("a1 LOGIN app {APP_PASSWORD}\r\n").as_bytes());
    let tagged = loop {
        let l = c.line().expect("IMAP connection closed");
        if l.starts_with("a1 ") {
            break l;
        }
    };
    if tagged.starts_with("a1 OK") {
        c.send(b"a2 SELECT INBOX\r\n");
        loop {
            let l = c.line().unwrap();
            if l.starts_with("a2 ") {
                assert!(l.starts_with("a2 OK"), "{l}");
                break;
            }
        }
        c.send(b"a3 LOGOUT\r\n");
    }
    tagged
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The base64 forms in which `s` can appear inside a longer base64 text
/// (at any alignment): the parts that do not depend on the bytes around it.
fn b64_forms(s: &str) -> Vec<String> {
    (0..3)
        .map(|pad| {
            let mut bytes = vec![b'x'; pad];
            bytes.extend_from_slice(s.as_bytes());
            let enc = b64(&bytes);
            let skip = (pad * 4).div_ceil(3);
            enc[skip..enc.len().saturating_sub(4)].to_owned()
        })
        .collect()
}

fn assert_no_secrets(what: &str, logs: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!logs.contains(s.as_str()), "{what} contains a secret");
        for f in b64_forms(s) {
            assert!(!logs.contains(&f), "{what} contains a secret in base64");
        }
    }
}

fn store_is_sealed(env: &Env) {
    let path = env.token_file();
    assert_eq!(mode(&path), 0o600);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"PSTNTOK1"));
    let text = String::from_utf8_lossy(&bytes);
    for s in env.server.secrets() {
        assert!(!text.contains(&s), "the store holds a token in plain text");
    }
    for word in ["refresh_token", "access_token", CLIENT, "mail"] {
        assert!(!text.contains(word), "the store is readable: {word}");
    }
}

#[test]
fn consent_send_and_read_with_transparent_refresh_and_no_secrets_in_trace_logs() {
    // Tokens live 4 s and are renewed 1 s before they expire.
    let mut env = Env::new("u31@example.test", None, ", refresh_margin = \"1s\"", "");
    let user = env.user;
    env.server.set(|s| s.expires_in = Some(4));
    let trace = [("RUST_LOG", "trace")];
    let (auth_out, auth_err) = env.consent(&trace);
    let consented = Instant::now();
    store_is_sealed(&env);
    assert_eq!(mode(&env.data_dir.join("oauth/key")), 0o600);
    let status = env.status(false);
    assert!(
        status.contains("acct") && status.contains("ok: access token valid until"),
        "{status}"
    );

    let p = env.start(&trace);
    // The token from the consent serves SMTP and IMAP alike.
    send_ok(&p, user, "oauth-e2e-1");
    let r = imap_login(&p);
    assert!(r.starts_with("a1 OK"), "{r}\n{}", p.logs());
    assert_eq!(env.server.counters().refreshes, 0);

    // The access token expires mid-test; the provider stops accepting it.
    std::thread::sleep(Duration::from_millis(4300).saturating_sub(consented.elapsed()));
    env.server.set(|s| s.expires_in = Some(60));
    let first = env.server.access_tokens()[0].clone();
    revoke(&first);
    // IMAP leg: the login after expiry refreshes first (never tries the
    // expired token), and SMTP then uses the same new token.
    let r = imap_login(&p);
    assert!(r.starts_with("a1 OK"), "{r}\n{}", p.logs());
    assert_eq!(env.server.counters().refreshes, 1);
    send_ok(&p, user, "oauth-e2e-2");
    assert_eq!(env.server.counters().refreshes, 1);
    assert!(
        !p.logs().contains("refused the cached token"),
        "{}",
        p.logs()
    );

    // The provider revokes the current token before its expiry: the upstream
    // refuses the cached token, Postern refreshes once and retries once.
    let second = env.server.access_tokens().last().unwrap().clone();
    revoke(&second);
    send_ok(&p, user, "oauth-e2e-3");
    assert_eq!(env.server.counters().refreshes, 2);
    assert!(
        p.wait_log("refused the cached token", Duration::from_secs(2)),
        "{}",
        p.logs()
    );

    // Trace level really is on, and nothing secret reached either log.
    let logs = p.logs();
    assert!(logs.contains("TRACE"), "not a trace log");
    let mut secrets = env.server.secrets();
    secrets.push(APP_PASSWORD.to_owned());
    secrets.push(format!("\0app\0{APP_PASSWORD}"));
    for t in env.server.access_tokens() {
        secrets.push(format!("user={user}\x01auth=Bearer {t}\x01\x01"));
    }
    assert!(secrets.len() >= 8);
    assert_no_secrets("postern run log", &logs, &secrets);
    assert_no_secrets(
        "postern auth output",
        &format!("{auth_out}\n{auth_err}"),
        &secrets,
    );
}

#[test]
fn fifty_concurrent_logins_on_an_expired_token_cause_one_refresh() {
    let mut env = Env::new("u32@example.test", None, "", "");
    env.server.set(|s| s.expires_in = Some(1));
    env.consent(&[]);
    std::thread::sleep(Duration::from_millis(1300));
    // A slow token endpoint keeps the refresh in flight while all ask.
    env.server.set(|s| {
        s.expires_in = Some(3600);
        s.delay = Duration::from_millis(800);
    });
    let p = env.start(&[]);
    let before = env.server.counters();
    let addr = p.smtp();
    let user = env.user;
    let barrier = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                c.reply();
                c.cmd("EHLO many");
                let auth = b64(format!("\0app\0{APP_PASSWORD}").as_bytes());
                assert!(c.cmd(&format!("AUTH PLAIN {auth}")).starts_with("235"));
                barrier.wait();
                let r = c.cmd(&format!("MAIL FROM:<{user}>"));
                c.cmd("QUIT");
                r
            })
        })
        .collect();
    let replies: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for r in &replies {
        assert!(r.starts_with("250"), "{r}\n{}", p.logs());
    }
    let after = env.server.counters();
    assert_eq!(after.refreshes - before.refreshes, 1, "{}", p.logs());
    assert_eq!(after.token_requests - before.token_requests, 1);
}

#[test]
fn rotated_refresh_token_survives_a_restart() {
    let mut env = Env::new("u33@example.test", None, "", "");
    env.server.set(|s| {
        s.rotate = true;
        s.expires_in = Some(1);
    });
    env.consent(&[]);
    let rt1 = env.server.valid_refresh_tokens();
    assert_eq!(rt1.len(), 1);
    std::thread::sleep(Duration::from_millis(1300));
    env.server.set(|s| s.expires_in = Some(2));
    let p = env.start(&[]);
    send_ok(&p, env.user, "oauth-rot-1");
    let rt2 = env.server.valid_refresh_tokens();
    assert_eq!(rt2.len(), 1);
    assert_ne!(rt1, rt2, "the server rotated the refresh token");
    store_is_sealed(&env);
    // A crash right after the rotation: the new refresh token was saved.
    env.kill(p);
    std::thread::sleep(Duration::from_millis(2200));
    let p = env.start(&[]);
    send_ok(&p, env.user, "oauth-rot-2");
    assert_eq!(
        env.server.refresh_used(),
        vec![rt1[0].clone(), rt2[0].clone()]
    );
    assert_eq!(env.server.counters().refreshes, 2);
    store_is_sealed(&env);
    assert!(env.status(false).contains("ok: access token valid until"));
}

#[test]
fn invalid_grant_asks_for_consent_and_a_new_consent_is_picked_up() {
    let mut env = Env::new("u34@example.test", None, "", "");
    env.server.set(|s| s.expires_in = Some(1));
    env.consent(&[]);
    std::thread::sleep(Duration::from_millis(1300));
    env.server.set(|s| {
        s.invalid_grant = true;
        s.expires_in = Some(3600);
    });
    let mut p = env.start(&[]);
    let want = "needs consent: run `postern auth acct`";
    for _ in 0..2 {
        let (mail, _) = smtp_send(&p, env.user, &marker("oauth-ig"));
        assert!(
            mail.starts_with("454 4.7.0") && mail.contains(want),
            "{mail}"
        );
    }
    let r = imap_login(&p);
    assert!(
        r.starts_with("a1 NO") && r.contains("postern auth acct"),
        "{r}"
    );
    // One refusal is enough: the endpoint is not asked again.
    assert_eq!(env.server.counters().refreshes, 1);
    assert!(p.is_running());
    let status = env.status(false);
    assert!(
        status.contains("NEEDS CONSENT: run `postern auth acct`")
            && status.contains("invalid_grant"),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&env.status(true)).unwrap();
    assert_eq!(json["oauth"][0]["account"], "acct");
    assert_eq!(json["oauth"][0]["needs_consent"], true);

    // The user consents again while postern runs: no restart needed.
    env.server.set(|s| s.invalid_grant = false);
    env.consent(&[]);
    send_ok(&p, env.user, "oauth-ig-ok");
    assert_eq!(env.server.counters().refreshes, 1);
    let json: serde_json::Value = serde_json::from_str(&env.status(true)).unwrap();
    assert_eq!(json["oauth"][0]["needs_consent"], false, "{json}");
    assert_eq!(json["oauth"][0]["valid"], true, "{json}");
    assert!(p.is_running());
}

#[test]
fn transient_token_endpoint_failures_are_retried_and_reported_as_4xx() {
    let mut env = Env::new("u35@example.test", None, "", "upstream_timeout = \"2s\"\n");
    env.server.set(|s| s.expires_in = Some(1));
    env.consent(&[]);
    std::thread::sleep(Duration::from_millis(1300));
    // Two 500s, then an answer: retried within one login.
    env.server.set(|s| s.fail_next = 2);
    let mut p = env.start(&[]);
    let before = env.server.counters().token_requests;
    send_ok(&p, env.user, "oauth-tr-1");
    assert_eq!(env.server.counters().token_requests - before, 3);
    assert_eq!(env.server.counters().refreshes, 1);

    // The endpoint stays down: a 4xx naming the problem, and no crash.
    std::thread::sleep(Duration::from_millis(1300));
    env.server.set(|s| s.fail_all = true);
    let before = env.server.counters().token_requests;
    let (mail, _) = smtp_send(&p, env.user, &marker("oauth-tr-2"));
    assert!(
        mail.starts_with("454 4.7.0") && mail.contains("unavailable") && mail.contains("HTTP 500"),
        "{mail}"
    );
    assert_eq!(env.server.counters().token_requests - before, 3);
    // Backing off: the next login is answered at once, without a request.
    let (mail, _) = smtp_send(&p, env.user, &marker("oauth-tr-3"));
    assert!(mail.starts_with("454 4.7.0"), "{mail}");
    assert_eq!(env.server.counters().token_requests - before, 3);
    let status = env.status(false);
    assert!(
        status.contains("last refresh error") && status.contains("HTTP 500"),
        "{status}"
    );

    // A slow endpoint (3 s > upstream_timeout 2 s) is a timeout, also 4xx.
    env.server.set(|s| {
        s.fail_all = false;
        s.delay = Duration::from_secs(3);
    });
    std::thread::sleep(Duration::from_millis(2100));
    let (mail, _) = smtp_send(&p, env.user, &marker("oauth-tr-4"));
    assert!(
        mail.starts_with("454 4.7.0") && mail.contains("no answer within 2"),
        "{mail}"
    );
    assert!(p.is_running());

    // Recovered: after the back-off, logins work again.
    env.server.set(|s| {
        s.delay = Duration::ZERO;
        s.expires_in = Some(3600);
    });
    std::thread::sleep(Duration::from_millis(4200));
    send_ok(&p, env.user, "oauth-tr-5");
}

/// `[events]`: a refresh that fails (the endpoint answers 500) reaches the
/// command as JSON, once, and the saved tokens stay: the next refresh,
/// when the endpoint is back, works without a new consent. A consent with
/// a known lifetime near its end is told too.
#[test]
fn a_failed_refresh_is_an_event_and_the_tokens_stay() {
    let mut env = Env::new(
        "u55@example.test",
        None,
        ", refresh_token_lifetime = \"7s\"",
        "upstream_timeout = \"2s\"\n",
    );
    let events = env.config.with_file_name("events.jsonl");
    let mut text = std::fs::read_to_string(&env.config).unwrap();
    text.push_str(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[events]\ncommand = \"cat >> '{0}'\"\n",
        events.display()
    ));
    std::fs::write(&env.config, text).unwrap();
    env.server.set(|s| s.expires_in = Some(1));
    env.consent(&[]);
    let saved = std::fs::read(env.token_file()).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    env.server.set(|s| s.fail_all = true);
    let p = env.start(&[]);
    let (mail, _) = smtp_send(&p, env.user, &marker("oauth-ev-1"));
    assert!(mail.starts_with("454 4.7.0"), "{mail}");
    let e = crate::events::wait_event(&events, "refresh_failed", Duration::from_secs(15));
    assert_eq!(e["account"], "acct", "{e}");
    assert_eq!(e["temporary"], true, "{e}");
    assert_eq!(e["tokens_kept"], true, "{e}");
    assert!(e["error"].as_str().unwrap().contains("HTTP 500"), "{e}");
    // Still failing: not told again within the quiet time.
    let (mail, _) = smtp_send(&p, env.user, &marker("oauth-ev-2"));
    assert!(mail.starts_with("454 4.7.0"), "{mail}");
    std::thread::sleep(Duration::from_millis(300));
    let told = std::fs::read_to_string(&events).unwrap();
    assert_eq!(told.matches("refresh_failed").count(), 1, "{told}");
    assert!(!told.contains("consent_needed"), "{told}");
    // The saved refresh token is untouched, and works once the endpoint is back.
    assert_eq!(std::fs::read(env.token_file()).unwrap(), saved);
    env.server.set(|s| {
        s.fail_all = false;
        s.expires_in = Some(3600);
    });
    std::thread::sleep(Duration::from_millis(4200));
    send_ok(&p, env.user, "oauth-ev-3");
    assert_eq!(env.server.counters().refreshes, 1);
    let e = crate::events::wait_event(&events, "refresh_token_expiring", Duration::from_secs(10));
    assert_eq!(e["account"], "acct", "{e}");
    assert_eq!(e["command"], "postern auth acct", "{e}");
    assert!(e["expires_at"].as_str().unwrap().ends_with('Z'), "{e}");
    // /metrics counts the token requests by result.
    let m = http("GET", p.addr_tls("http", "none"), "/metrics", b"").text();
    let count = |result: &str| {
        m.lines()
            .find(|l| {
                l.starts_with("postern_oauth_refreshes_total{")
                    && l.contains("account=\"acct\"")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(count("failed") >= 1.0, "{m}");
    assert!(count("ok") >= 1.0, "{m}");
}

#[test]
fn device_grant_polls_through_pending_and_slow_down_and_reports_expiry() {
    let env = Env::new("u36@example.test", None, "", "");
    env.server.set(|s| {
        s.device_pending = 1;
        s.device_slow_down = true;
    });
    let run = env.cli(&["auth", "--device", "acct"], &[]);
    run.wait_for(|l| l.contains("WDJB-MJHT"), Duration::from_secs(10));
    run.wait_for(
        |l| l.contains(&env.server.url("/activate")),
        Duration::from_secs(1),
    );
    let (code, out, err) = run.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}\n{err}");
    let c = env.server.counters();
    assert_eq!(
        (c.device_codes, c.device_polls),
        (1, 3),
        "pending, slow_down, success"
    );
    store_is_sealed(&env);
    assert!(env.status(false).contains("ok: access token valid until"));

    env.server.set(|s| s.device_expired = true);
    let (code, out, err) = env
        .cli(&["auth", "--device", "acct"], &[])
        .finish(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains("expired") && err.contains("postern auth --device acct"),
        "{err}"
    );
}

#[test]
fn client_credentials_need_no_consent_and_send_the_secret() {
    let secret = marker("cc-secret");
    let mut env = Env::new(
        "u37@example.test",
        Some(&secret),
        ", grant = \"client_credentials\", client_secret_env = \"ACCT_OAUTH_SECRET\"",
        "",
    );
    let envs = [("ACCT_OAUTH_SECRET", secret.as_str())];
    let (code, out, err) = env
        .cli(&["check-config"], &envs)
        .finish(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains(&secret));
    let p = env.start(&envs);
    send_ok(&p, env.user, "oauth-cc");
    let c = env.server.counters();
    assert_eq!(c.client_credentials, 1);
    assert_eq!(c.refreshes + c.code_exchanges, 0);
    let req = &env.server.requests()[0];
    assert_eq!(req.params.get("client_secret"), Some(&secret));
    assert!(!p.logs().contains(&secret));
    let status = env.status(false);
    assert!(status.contains("ok: access token valid until"), "{status}");
    // `postern auth` says no consent is needed and checks the client.
    let (code, out, _) = env
        .cli(&["auth", "acct"], &envs)
        .finish(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    assert!(out.contains("no consent is needed"), "{out}");
}

#[test]
fn no_browser_consent_takes_the_pasted_redirect_address() {
    let env = Env::new("u38@example.test", None, "", "");
    let mut run = env.cli(&["auth", "--no-browser", "acct"], &[]);
    let prefix = env.server.url("/authorize?");
    let url = run.wait_for(
        |l| l.trim_start().starts_with(&prefix),
        Duration::from_secs(20),
    );
    // The browser is elsewhere: it ends on the redirect address, which the
    // user copies instead of following.
    let (ok, location, e) = run_cmd(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{redirect_url}",
            "--max-time",
            "10",
            url.trim(),
        ],
    );
    assert!(ok && location.contains("code="), "{location} {e}");
    // An address from another sign-in is refused; the right one is taken.
    run.type_line(&location.replace("state=", "state=x"));
    run.wait_for(|l| l.contains("does not match"), Duration::from_secs(10));
    run.type_line(&location);
    let (code, out, err) = run.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{out}\n{err}");
    // PKCE S256, login hint, and a public client sends no secret.
    let a = &env.server.authorize_params()[0];
    assert_eq!(
        a.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert_eq!(a.get("login_hint").map(String::as_str), Some(env.user));
    assert_eq!(a.get("scope").map(String::as_str), Some("mail offline"));
    let t = &env.server.requests()[0];
    assert!(t.params.contains_key("code_verifier"));
    assert!(!t.params.contains_key("client_secret") && !t.basic_auth);
    assert_eq!(t.params.get("client_id").map(String::as_str), Some(CLIENT));
    store_is_sealed(&env);
}

#[test]
fn store_key_from_postern_key_and_a_wrong_key_stops_the_start() {
    let mut env = Env::new("u39@example.test", None, "", "");
    let key = "5a".repeat(32);
    let wrong = "a5".repeat(32);
    env.consent(&[("POSTERN_KEY", key.as_str())]);
    assert!(
        !env.data_dir.join("oauth/key").exists(),
        "no key file with POSTERN_KEY"
    );
    store_is_sealed(&env);
    let (code, _, err) = env
        .cli(&["run"], &[("POSTERN_KEY", wrong.as_str())])
        .finish(Duration::from_secs(20));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot decrypt") && err.contains("POSTERN_KEY"),
        "{err}"
    );
    assert!(!err.contains(&wrong) && !err.contains(&key));
    let p = env.start(&[("POSTERN_KEY", key.as_str())]);
    send_ok(&p, env.user, "oauth-key");
}
