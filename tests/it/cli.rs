//! The command line: check-config, hash-password, providers, config errors.

use crate::harness::*;

fn check(config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, config).unwrap();
    let r = run_env(
        BIN,
        &["--config", path.to_str().unwrap(), "check-config"],
        &[("ICLOUD_PW", "app-specific-pw")],
    );
    drop(dir);
    r
}

#[test]
fn check_config_prints_resolved_setup_without_secrets() {
    let cfg = format!(
        r#"
data_dir = "var"
[smtp]
listen = ["127.0.0.1:2525", "[::1]:2525"]
[imap]
listen = "127.0.0.1:1143"
tls = "starttls"
[users.app]
password_hash = "{APP_HASH}"
send_via = "pool:p"
read_via = "icl"
[accounts.icl]
provider = "icloud"
email = "jane@icloud.com"
auth = "password"
password_env = "ICLOUD_PW"
[accounts.lab]
email = "lab@example.test"
smtp = {{ host = "127.0.0.1", port = 11465, tls = "implicit" }}
auth = "oauth2"
token_command = "echo SECRET-TOKEN-VALUE"
[pools.p]
accounts = ["icl", "lab"]
"#
    );
    let (ok, out, err) = check(&cfg);
    assert!(ok, "{out}\n{err}");
    for want in [
        "127.0.0.1:2525 tls=none",
        "[::1]:2525",
        "127.0.0.1:1143 tls=starttls",
        "smtp.mail.me.com:587 (starttls) user jane@icloud.com",
        "imap.mail.me.com:993 (implicit) user jane",
        "127.0.0.1:11465 (implicit)",
        "password from $ICLOUD_PW",
        "oauth2 via token_command",
        "send_via=pool:p read_via=icl",
        "strategy=RoundRobin",
        "config OK",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        !out.contains("SECRET-TOKEN-VALUE") && !out.contains("argon2id"),
        "{out}"
    );
}

#[test]
fn config_errors_name_file_key_and_problem() {
    let cases: &[(&str, &[&str])] = &[
        ("[smtp]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n", &["p.toml", "unknown field `bogus`"]),
        ("[smtp]\nlisten = \"10.1.2.3:25\"\n", &["p.toml", "`smtp.tls`", "not a loopback address"]),
        ("[smtp]\nlisten = \"nonsense\"\n", &["`smtp.listen`", "not an address"]),
        ("data_dir = \"v\"\n", &["no listener", "[imap]", "[pop3]"]),
        (
            "[pop3]\nlisten = \"127.0.0.1:1\"\n[accounts.x]\nprovider = \"icloud\"\nemail = \"x@icloud.com\"\npop3 = true\nauth = \"password\"\npassword_env = \"P\"\n",
            &["`accounts.x.pop3`", "has no POP3 server", "IMAP"],
        ),
        (
            "[smtp]\nlisten = \"127.0.0.1:1\"\n[accounts.x]\nemail = \"x@example.org\"\nsmtp = { host = \"127.0.0.1\", port = 25, tls = \"none\" }\ntls_pin = \"sha1:abcd\"\nauth = \"password\"\npassword_env = \"P\"\n",
            &["`accounts.x.tls_pin`", "sha256:"],
        ),
        (
            "[smtp]\nlisten = [\"127.0.0.1:1\", { addr = \"127.0.0.1:1\", tls = \"implicit\" }]\n",
            &["`smtp.listen`", "listed twice"],
        ),
        (
            "[smtp]\nlisten = \"127.0.0.1:1\"\nanonymous_user = \"p\"\nallow_from = [\"10.0.0.300\"]\n",
            &["`smtp.allow_from`", "not a network"],
        ),
        (
            &format!("[smtp]\nlisten = \"127.0.0.1:1\"\n[users.a]\npassword_hash = \"{APP_HASH}\"\nallowed_senders = [\"a b@c\"]\n"),
            &["`users.a.allowed_senders`", "pattern"],
        ),
        (
            "[smtp]\nlisten = \"127.0.0.1:1\"\n[users.a]\npassword_hash = \"plain\"\n",
            &["`users.a.password_hash`", "hash-password"],
        ),
        (
            &format!("[smtp]\nlisten = \"127.0.0.1:1\"\n[users.a]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"nobody\"\n"),
            &["`users.a.send_via`", "\"nobody\""],
        ),
        (
            "[smtp]\nlisten = \"127.0.0.1:1\"\n[accounts.x]\nprovider = \"gmial\"\nemail = \"x@gmail.com\"\n",
            &["`accounts.x.provider`", "unknown provider \"gmial\"", "gmail"],
        ),
        (
            "[smtp]\nlisten = \"127.0.0.1:1\"\n[accounts.x]\nprovider = \"gmail\"\nemail = \"x@gmail.com\"\nauth = \"password\"\n",
            &["`accounts.x.auth`", "password_env"],
        ),
        (
            "[smtp]\nlisten = \"127.0.0.1:1\"\n[accounts.x]\nprovider = \"google-workspace\"\nemail = \"x@corp.example\"\nauth = \"password\"\npassword_env = \"P\"\n",
            &["`accounts.x.auth`", "only OAuth2"],
        ),
        (
            "[smtp]\nlisten = \"127.0.0.1:1\"\n[accounts.x]\nemail = \"x@example.org\"\nsmtp = { host = \"mail.example.org\", port = 25, tls = \"none\" }\nauth = \"password\"\npassword_env = \"P\"\n",
            &["`accounts.x.smtp.tls`", "loopback"],
        ),
        (
            "[smtp]\nlisten = \"127.0.0.1:1\"\n[limits]\nimap_idle_timeout = \"10m\"\n",
            &["`limits.imap_idle_timeout`", "31m"],
        ),
        ("[smtp]\nlisten = \"127.0.0.1:1\"\n[limits]\nidle_timeout = \"soon\"\n", &["not a duration"]),
    ];
    for (cfg, wants) in cases {
        let (ok, out, err) = check(cfg);
        assert!(!ok, "accepted:\n{cfg}\n{out}");
        for w in *wants {
            assert!(err.contains(w), "error for\n{cfg}\nlacks {w:?}:\n{err}");
        }
    }
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let path = dir.path().join("sub/p.toml");
    std::fs::write(
        &path,
        "data_dir = \"state\"\n[smtp]\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let (ok, out, _) = run(BIN, &["--config", path.to_str().unwrap(), "check-config"]);
    assert!(ok);
    assert!(
        out.contains(&format!("{}", dir.path().join("sub/state").display())),
        "{out}"
    );
}

#[test]
fn missing_configured_certificate_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\ntls = \"implicit\"\n[tls]\ncert = \"nope.pem\"\nkey = \"nope-key.pem\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(BIN, &["--config", path.to_str().unwrap(), "run"]);
    assert!(!ok);
    assert!(
        err.contains("nope.pem") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn hash_password_prints_argon2id() {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(!hash.contains("s3cret"));
}

#[test]
fn providers_prints_the_table() {
    let (ok, out, _) = run(BIN, &["providers"]);
    assert!(ok);
    for name in [
        "gmail",
        "google-workspace",
        "outlook",
        "office365",
        "icloud",
        "att-legacy",
        "gmx-net",
        "smtp.gmail.com",
        "outbound.att.net",
    ] {
        assert!(out.contains(name), "{name} missing");
    }
}

#[test]
fn shipped_examples_are_valid() {
    for f in [
        "config/postern.toml",
        "config/examples/gmail.toml",
        "config/examples/outlook.toml",
        "config/examples/pool.toml",
        "config/examples/custom-server.toml",
        "config/examples/staging-allowlist.toml",
        "config/examples/fault-quota.toml",
    ] {
        let path = repo_root().join(f);
        let env = [
            ("GMAIL_APP_PASSWORD", "x"),
            ("ALICE_APP_PASSWORD", "x"),
            ("A_APP_PASSWORD", "x"),
            ("B_APP_PASSWORD", "x"),
        ];
        let (ok, out, err) = run_env(
            BIN,
            &["--config", path.to_str().unwrap(), "check-config"],
            &env,
        );
        if f.ends_with("custom-server.toml") {
            // Valid, but its password file lives in /etc/postern.
            assert!(!ok, "{f}: {out}\n{err}");
            let missing: Vec<&str> = out.lines().filter(|l| l.starts_with("MISSING")).collect();
            assert!(
                missing.len() == 1 && missing[0].contains("password_file"),
                "{f}: {out}\n{err}"
            );
        } else {
            assert!(ok, "{f}: {out}\n{err}");
        }
    }
}

#[test]
fn json_log_format() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args([
            "--config",
            path.to_str().unwrap(),
            "--log-format",
            "json",
            "run",
        ])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut found = None;
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        if v["fields"]["message"] == "listening" {
            found = Some(v);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = found.expect("a listening line");
    assert_eq!(v["fields"]["proto"], "smtp");
    assert!(v["fields"]["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}
