//! Relaying through Postern to a real Dovecot submission server (started by
//! tests/run), over implicit TLS and STARTTLS, with app passwords and with
//! XOAUTH2 tokens from token_command; messages checked at the sink.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::*;

/// A Dovecot-backed account section.
pub fn dovecot_account(name: &str, user: &str, tls: &str, auth: &str) -> String {
    let port = match tls {
        "implicit" => peer_env("DOVECOT_SUBMISSIONS_PORT"),
        _ => peer_env("DOVECOT_SUBMISSION_PORT"),
    };
    format!(
        "[accounts.{name}]\nemail = \"{user}\"\nsmtp = {{ host = \"localhost\", port = {port}, tls = \"{tls}\" }}\nca_file = \"{}\"\n{auth}\n",
        peer_env("PEERS_CA")
    )
}

pub fn relay_config(account: &str, extra: &str) -> String {
    format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n{}{FAST_LIMITS}upstream_timeout = \"5s\"\n{extra}",
        users_section(account)
    )
}

/// A message as a careful client sends it (with Date and Message-ID, so
/// Dovecot adds nothing but its Received: header).
pub fn message(marker: &str, from: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <rcpt@example.org>\r\nSubject: {marker}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{marker}@example.test>\r\n\r\nbody line\r\n.dot line\r\n\r\nend\r\n"
    )
    .into_bytes()
}

/// A message at the sink: envelope and data.
pub struct SinkMessage {
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

/// Messages at the sink whose data contains `marker`, waiting up to `wait`
/// for at least `want`.
pub fn sink_messages(marker: &str, want: usize, wait: Duration) -> Vec<SinkMessage> {
    let dir = PathBuf::from(peer_env("SINK_DIR"));
    let deadline = Instant::now() + wait;
    loop {
        let mut found = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for f in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "eml"))
        {
            let data = std::fs::read(&f).unwrap();
            if !data.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                continue;
            }
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(f.with_extension("json")).unwrap()).unwrap();
            found.push(SinkMessage {
                mail_from: meta["mail_from"].as_str().unwrap_or_default().to_owned(),
                rcpts: meta["rcpt_tos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect(),
                data,
            });
        }
        if found.len() >= want || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drop the upstream's trace headers (Received:, with continuation lines)
/// from the top of a message.
pub fn strip_trace(data: &[u8]) -> Vec<u8> {
    let text = data;
    let mut pos = 0;
    loop {
        let rest = &text[pos..];
        if rest.len() >= 9 && rest[..9].eq_ignore_ascii_case(b"Received:") {
            // Skip this header and its folded lines.
            let mut i = pos;
            loop {
                let nl = text[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|n| i + n + 1)
                    .unwrap_or(text.len());
                i = nl;
                if i >= text.len() || !(text[i] == b' ' || text[i] == b'\t') {
                    break;
                }
            }
            pos = i;
        } else {
            return text[pos..].to_vec();
        }
    }
}

const SMTPLIB: &str = r#"
import smtplib, sys
port, user, pw, msgfile, mail_from = sys.argv[1:6]
rcpts = sys.argv[6:]
msg = open(msgfile, 'rb').read()
s = smtplib.SMTP('127.0.0.1', int(port), timeout=30)
s.login(user, pw)
try:
    refused = s.sendmail(mail_from, rcpts, msg)
    print('refused', sorted(refused.items()))
except smtplib.SMTPRecipientsRefused as e:
    print('all refused', sorted(e.recipients.items()))
except smtplib.SMTPResponseException as e:
    print('error', e.smtp_code, e.smtp_error.decode())
s.quit()
"#;

pub fn smtplib(p: &Postern, msg: &[u8], from: &str, rcpts: &[&str]) -> String {
    let f = p.dir.path().join(format!("m-{}.eml", marker("f")));
    std::fs::write(&f, msg).unwrap();
    let port = p.smtp().port().to_string();
    let mut args = vec![
        port.as_str(),
        "app",
        APP_PASSWORD,
        f.to_str().unwrap(),
        from,
    ];
    args.extend_from_slice(rcpts);
    let (ok, out, err) = python(SMTPLIB, &args);
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    out
}

fn password_auth(var: &str) -> String {
    format!("auth = \"password\"\npassword_env = \"{var}\"")
}

#[test]
fn implicit_tls_and_plain_with_app_password() {
    let cfg = relay_config(
        "dv",
        &dovecot_account("dv", "u01@example.test", "implicit", &password_auth("U_PW")),
    );
    let p = Postern::start_with(&cfg, 1, &[("U_PW", "pw-u01")]);
    let m = marker("implicit-plain");
    let msg = message(&m, "u01@example.test");
    let out = smtplib(
        &p,
        &msg,
        "u01@example.test",
        &["a@example.org", "b@example.org"],
    );
    assert!(out.contains("refused []"), "{out}");
    let got = sink_messages(&m, 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "u01@example.test");
    assert_eq!(got[0].rcpts, vec!["a@example.org", "b@example.org"]);
    assert_eq!(strip_trace(&got[0].data), msg);
}

#[test]
fn starttls_with_swaks_and_local_login() {
    let cfg = relay_config(
        "dv",
        &dovecot_account("dv", "u02@example.test", "starttls", &password_auth("U_PW")),
    );
    let p = Postern::start_with(&cfg, 1, &[("U_PW", "pw-u02")]);
    let m = marker("starttls-swaks");
    let server = format!("127.0.0.1:{}", p.smtp().port());
    let subject = format!("Subject: {m}");
    let (ok, out, err) = run(
        "swaks",
        &[
            "--server",
            &server,
            "-a",
            "LOGIN",
            "-au",
            "app",
            "-ap",
            APP_PASSWORD,
            "--from",
            "u02@example.test",
            "--to",
            "x@example.org",
            "--header",
            &subject,
        ],
    );
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    assert!(out.contains("(account dv)"), "{out}");
    assert_eq!(sink_messages(&m, 1, Duration::from_secs(10)).len(), 1);
}

#[test]
fn curl_through_postern_to_dovecot() {
    let cfg = relay_config(
        "dv",
        &dovecot_account("dv", "u03@example.test", "starttls", &password_auth("U_PW")),
    );
    let p = Postern::start_with(&cfg, 1, &[("U_PW", "pw-u03")]);
    let m = marker("curl-relay");
    let msg = message(&m, "u03@example.test");
    let f = p.dir.path().join("c.eml");
    std::fs::write(&f, &msg).unwrap();
    let url = format!("smtp://127.0.0.1:{}", p.smtp().port());
    let (ok, out, err) = run(
        "curl",
        &[
            "-sS",
            &url,
            "-u",
            &format!("app:{APP_PASSWORD}"),
            "--mail-from",
            "u03@example.test",
            "--mail-rcpt",
            "c@example.org",
            "-T",
            f.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    let got = sink_messages(&m, 1, Duration::from_secs(10));
    assert_eq!(strip_trace(&got[0].data), msg);
}

#[test]
fn rejected_recipient_is_reported_for_that_recipient_only() {
    let cfg = relay_config(
        "dv",
        &dovecot_account("dv", "u04@example.test", "starttls", &password_auth("U_PW")),
    );
    let p = Postern::start_with(&cfg, 1, &[("U_PW", "pw-u04")]);
    let m = marker("rcpt-reject");
    let out = smtplib(
        &p,
        &message(&m, "u04@example.test"),
        "u04@example.test",
        &[
            "ok1@example.org",
            "reject-5xx@example.org",
            "ok2@example.org",
        ],
    );
    assert!(
        out.contains("reject-5xx@example.org") && out.contains("550"),
        "{out}"
    );
    assert!(!out.contains("ok1@") && !out.contains("ok2@"), "{out}");
    let got = sink_messages(&m, 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, vec!["ok1@example.org", "ok2@example.org"]);
}

/// A token_command that prints the token kept in a file and counts its runs.
fn token_setup(p_dir: &std::path::Path, token: &str) -> (PathBuf, PathBuf, String) {
    let tok = p_dir.join("token");
    let runs = p_dir.join("runs");
    std::fs::write(&tok, token).unwrap();
    let cmd = format!("echo run >> {}; cat {}", runs.display(), tok.display());
    (tok, runs, cmd)
}

fn mint(token: &str, user: &str) {
    let (ok, out, err) = run(
        repo_root().join("tests/peers/token").to_str().unwrap(),
        &["mint", token, user],
    );
    assert!(ok, "{out}{err}");
}

fn revoke(token: &str) {
    let (ok, out, err) = run(
        repo_root().join("tests/peers/token").to_str().unwrap(),
        &["revoke", token],
    );
    assert!(ok, "{out}{err}");
}

fn xoauth2_via_token_command(tls: &str, user: &str) {
    let dir = tempfile::tempdir().unwrap();
    let t1 = marker("tok");
    mint(&t1, user);
    let (_, runs, cmd) = token_setup(dir.path(), &t1);
    let auth = format!("auth = \"oauth2\"\ntoken_command = \"{cmd}\"");
    let cfg = relay_config("dv", &dovecot_account("dv", user, tls, &auth));
    let p = Postern::start(&cfg, 1);
    let m = marker(&format!("xoauth2-{tls}"));
    let msg = message(&m, user);
    let out = smtplib(&p, &msg, user, &["x@example.org"]);
    assert!(out.contains("refused []"), "{out}\n{}", p.logs());
    let got = sink_messages(&m, 1, Duration::from_secs(10));
    assert_eq!(strip_trace(&got[0].data), msg);
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);
    assert!(!p.logs().contains(&t1), "token leaked into the log");
}

#[test]
fn starttls_xoauth2_via_token_command() {
    xoauth2_via_token_command("starttls", "u05@example.test");
}

#[test]
fn implicit_tls_xoauth2_via_token_command() {
    xoauth2_via_token_command("implicit", "u06@example.test");
}

#[test]
fn revoked_token_reruns_the_command_once() {
    let user = "u07@example.test";
    let dir = tempfile::tempdir().unwrap();
    let t1 = marker("tok1");
    mint(&t1, user);
    let (tok, runs, cmd) = token_setup(dir.path(), &t1);
    let auth = format!("auth = \"oauth2\"\ntoken_command = \"{cmd}\"");
    // No warm connections: every transaction logs in anew.
    let cfg = relay_config(
        "dv",
        &format!(
            "upstream_keepalive = \"0s\"\n{}",
            dovecot_account("dv", user, "starttls", &auth)
        ),
    );
    let p = Postern::start(&cfg, 1);
    let m = marker("revoke-1");
    assert!(smtplib(&p, &message(&m, user), user, &["x@example.org"]).contains("refused []"));
    // Revoke the cached token; the helper now hands out a new one.
    revoke(&t1);
    let t2 = marker("tok2");
    mint(&t2, user);
    std::fs::write(&tok, &t2).unwrap();
    let m2 = marker("revoke-2");
    let out = smtplib(&p, &message(&m2, user), user, &["x@example.org"]);
    assert!(out.contains("refused []"), "{out}\n{}", p.logs());
    assert_eq!(sink_messages(&m2, 1, Duration::from_secs(10)).len(), 1);
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        2,
        "{}",
        p.logs()
    );
    // Both revoked, and the command keeps giving the bad one: a clear 454.
    revoke(&t2);
    let m3 = marker("revoke-3");
    let out = smtplib(&p, &message(&m3, user), user, &["x@example.org"]);
    assert!(
        out.contains("454") && out.contains("postern auth dv"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 3);
    let logs = p.logs();
    assert!(
        !logs.contains(&t1) && !logs.contains(&t2),
        "token leaked into the log"
    );
}

#[test]
fn wrong_app_password_gives_454_with_the_fix() {
    let cfg = relay_config(
        "dv",
        &dovecot_account("dv", "u08@example.test", "starttls", &password_auth("U_PW")),
    );
    let p = Postern::start_with(&cfg, 1, &[("U_PW", "not-the-password")]);
    let out = smtplib(
        &p,
        &message(&marker("badpw"), "u08@example.test"),
        "u08@example.test",
        &["x@example.org"],
    );
    assert!(
        out.contains("error 454") && out.contains("app password"),
        "{out}"
    );
    assert!(!p.logs().contains("not-the-password"));
}

#[test]
fn doctor_against_dovecot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let good = relay_config(
        "dv",
        &dovecot_account("dv", "u09@example.test", "starttls", &password_auth("U_PW")),
    );
    std::fs::write(&path, &good).unwrap();
    let doctor = |pw: &str| {
        let out = std::process::Command::new(BIN)
            .args(["--config", path.to_str().unwrap(), "doctor", "dv"])
            .env("U_PW", pw)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = doctor("pw-u09");
    assert!(ok, "{out}");
    assert!(
        out.contains("all checks passed") && !out.contains("FAILED"),
        "{out}"
    );
    // Bad password: the authenticate step fails and names the fix.
    let (ok, out) = doctor("wrong");
    assert!(!ok);
    assert!(
        out.contains("[FAILED] authenticate")
            && out.contains("fix: ")
            && out.contains("app password"),
        "{out}"
    );
    // Wrong TLS mode: implicit configured on the STARTTLS port.
    std::fs::write(
        &path,
        good.replace("tls = \"starttls\"", "tls = \"implicit\""),
    )
    .unwrap();
    let (ok, out) = doctor("pw-u09");
    assert!(!ok);
    assert!(
        out.contains("[FAILED] TLS") && out.contains("set tls = \"starttls\""),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "port {} with tls = \"starttls\" works",
            peer_env("DOVECOT_SUBMISSION_PORT")
        )),
        "{out}"
    );
    // Wrong port: nothing listens there; the report says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &path,
        good.replace(&peer_env("DOVECOT_SUBMISSION_PORT"), &closed.to_string()),
    )
    .unwrap();
    let t = Instant::now();
    let (ok, out) = doctor("pw-u09");
    assert!(!ok);
    assert!(
        out.contains("[FAILED] connect") && out.contains("try 587"),
        "{out}"
    );
    assert!(t.elapsed() < Duration::from_secs(30));
}
