//! Guided setup: `postern account add` answered in a real pseudo-terminal
//! (Python's `pty`) against the test Dovecot, then the written config loads
//! with `check-config`, keeps its comments, passes `doctor` and relays mail
//! for the new local login; the preset path and `user add` by flags, as a
//! script would run them; and what is refused leaves the file unchanged.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::*;
use crate::relay::{message, sink_messages};
use crate::reload::login;

/// Runs argv[1] (JSON) in a pseudo-terminal, answering each prompt of
/// argv[2] (JSON pairs: text to wait for, answer) as it appears, and prints
/// JSON: everything the terminal showed and the exit code.
const PTY: &str = r#"
import json, os, pty, select, sys, time
argv, script = json.loads(sys.argv[1]), json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out, pos = b"", 0
def read(deadline):
    global out
    r, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
    if not r:
        return False
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    if not data:
        return None
    out += data
    return True
for want, answer in script:
    deadline = time.time() + 30
    while want.encode() not in out[pos:]:
        if time.time() > deadline or read(deadline) is None:
            print(json.dumps({"out": out.decode(errors="replace"), "code": -1, "waiting": want}))
            sys.exit(0)
    pos = out.index(want.encode(), pos) + len(want)
    time.sleep(0.05)
    os.write(fd, answer.encode() + b"\n")
deadline = time.time() + 60
while time.time() < deadline and read(deadline) is not None:
    pass
_, status = os.waitpid(pid, 0)
print(json.dumps({"out": out.decode(errors="replace"), "code": os.waitstatus_to_exitcode(status)}))
"#;

fn in_pty(argv: &[&str], script: &[(&str, &str)]) -> (String, i32) {
    let (ok, out, err) = python(
        PTY,
        &[
            &serde_json::to_string(argv).unwrap(),
            &serde_json::to_string(script).unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    if let Some(w) = v.get("waiting") {
        panic!("no prompt {w} on the terminal:\n{}", v["out"]);
    }
    (
        v["out"].as_str().unwrap().to_owned(),
        v["code"].as_i64().unwrap() as i32,
    )
}

/// `postern --config CFG account add ARGS…`, with `env`.
fn account_add(cfg: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut all = vec!["--config", cfg, "account", "add"];
    all.extend_from_slice(args);
    run_env(BIN, &all, env)
}

/// A commented config with SMTP and IMAP listeners and no account yet.
const START: &str = "# My Postern: the comments and layout must survive the edit.\n\
data_dir = \"var\"   # next to this file\n\
\n\
[smtp]\n\
listen = \"127.0.0.1:0\"\n\
\n\
[imap]\n\
listen = \"127.0.0.1:0\"\n\
\n\
# Programs that only test\n\
[users.tester]\n\
password_hash = \"HASH\"\n\
send_via = \"capture\"   # never leaves\n";

fn start_config(dir: &std::path::Path) -> std::path::PathBuf {
    let f = dir.join("postern.toml");
    std::fs::write(&f, START.replace("HASH", APP_HASH)).unwrap();
    f
}

#[test]
fn account_add_in_a_terminal_writes_an_account_that_doctor_passes_and_that_relays() {
    let dir = tempfile::tempdir().unwrap();
    let file = start_config(dir.path());
    let before = std::fs::read_to_string(&file).unwrap();
    let smtp = format!("localhost:{}", peer_env("DOVECOT_SUBMISSION_PORT"));
    let imap = format!("localhost:{}/implicit", peer_env("DOVECOT_IMAPS_PORT"));
    let ca = peer_env("PEERS_CA");
    let (out, code) = in_pty(
        &[
            BIN,
            "--config",
            file.to_str().unwrap(),
            "account",
            "add",
            "u57@example.test",
        ],
        &[
            ("SMTP server", &smtp),
            ("IMAP server", &imap),
            ("CA certificate", &ca),
            (
                "How should Postern sign in (password, app-password) [password]",
                "",
            ),
            ("Password for u57@example.test (typing is hidden)", "pw-u57"),
            ("Local login for your programs [u57]", ""),
            (
                "Local password for u57 (typing is hidden)",
                "local-57-secret",
            ),
            ("Again", "local-57-secret"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No preset serves example.test"), "{out}");
    // Hidden input stays hidden: the terminal never showed the passwords.
    assert!(
        !out.contains("pw-u57") && !out.contains("local-57-secret"),
        "{out}"
    );
    assert!(
        out.contains("Wrote [accounts.u57] and [users.u57]"),
        "{out}"
    );
    assert!(out.contains("all checks passed"), "{out}");

    // The file: the old text untouched, the new tables after it, no secret.
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(after.starts_with(before.trim_end()), "{after}");
    assert!(after.contains("send_via = \"capture\"   # never leaves"));
    assert!(after.contains("# u57@example.test: added by `postern account add` on "));
    assert!(!after.contains("pw-u57") && !after.contains("local-57-secret"));
    assert!(after.contains("[accounts.u57]") && after.contains("[users.u57]"));
    let secret = dir.path().join("var/secrets/u57.password");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "pw-u57\n");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let cfg = file.to_str().unwrap();
    let (ok, o, e) = run(BIN, &["--config", cfg, "check-config"]);
    assert!(ok, "{o}\n{e}");
    let (ok, o, e) = run(BIN, &["--config", cfg, "doctor", "u57"]);
    assert!(ok, "{o}\n{e}");
    assert!(o.contains("imap") && o.contains("smtp"), "{o}");

    // And `run` serves it: the new local login relays through Dovecot.
    let p = Postern::spawn(dir, file, 2, &[]);
    let (mut c, r) = login(&p, "u57", "local-57-secret");
    assert!(r.starts_with("235"), "{r}\n{}", p.logs());
    let m = marker("account-add");
    assert!(c.cmd("MAIL FROM:<u57@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<rcpt@example.org>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    let mut data = message(&m, "u57@example.test");
    data.extend_from_slice(b".\r\n");
    c.send(&data);
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}\n{}", p.logs());
    assert_eq!(sink_messages(&m, 1, Duration::from_secs(20)).len(), 1);
}

#[test]
fn account_add_by_flags_uses_the_preset_and_its_hints() {
    let dir = tempfile::tempdir().unwrap();
    let file = start_config(dir.path());
    let cfg = file.to_str().unwrap();
    let (ok, out, err) = account_add(
        cfg,
        &[
            "Jane.Doe@icloud.com",
            "--password-env",
            "JANE_APP_PW",
            "--user",
            "scanner",
            "--user-password-env",
            "SCANNER_PW",
            "--no-doctor",
        ],
        &[("SCANNER_PW", "scan-pw")],
    );
    assert!(ok, "{out}\n{err}");
    // The preset found from the domain, and iCloud's own setup hint.
    assert!(err.contains("iCloud Mail (preset \"icloud\")"), "{err}");
    assert!(
        err.contains("IMAP user is the name part of the address"),
        "{err}"
    );
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(after.contains(
        "[accounts.jane-doe]\nprovider = \"icloud\"\nemail = \"Jane.Doe@icloud.com\"\nauth = \"password\"\npassword_env = \"JANE_APP_PW\"\n"
    ), "{after}");
    assert!(
        after.contains("[users.scanner]\npassword_hash = \"$argon2id$"),
        "{after}"
    );
    assert!(after.contains("send_via = \"jane-doe\"\nread_via = \"jane-doe\"\n"));
    assert!(!after.contains("scan-pw"));
    let (ok, o, e) = run_env(
        BIN,
        &["--config", cfg, "check-config"],
        &[("JANE_APP_PW", "x")],
    );
    assert!(ok, "{o}\n{e}");

    // What the provider does not accept is refused, and nothing is written.
    let (ok, _, err) = account_add(
        cfg,
        &[
            "bob@outlook.com",
            "--auth",
            "app-password",
            "--password-env",
            "X",
            "--no-user",
            "--no-doctor",
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("does not accept app-password; it accepts oauth2"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), after);
    // A password for an OAuth-only provider is refused too.
    let (ok, _, err) = account_add(
        cfg,
        &["bob@outlook.com", "--password-env", "X", "--no-user"],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("takes only OAuth"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), after);
    // Built-in OAuth: the client is written, doctor waits for consent.
    let (ok, _, err) = account_add(
        cfg,
        &[
            "bob@outlook.com",
            "--client-id",
            "1234-abcd",
            "--client-secret-env",
            "MS_SECRET",
            "--no-user",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(err.contains("Next: `postern auth bob`"), "{err}");
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(
        after.contains("[accounts.bob]\nprovider = \"outlook\"\nemail = \"bob@outlook.com\"\nauth = \"oauth2\"\noauth = { client_id = \"1234-abcd\", client_secret_env = \"MS_SECRET\" }\n"),
        "{after}"
    );
    // A second account under the same address name gets its own key.
    let (ok, o, e) = account_add(
        cfg,
        &[
            "jane.doe@gmail.com",
            "--token-command",
            "pizauth show jane",
            "--no-user",
            "--no-doctor",
        ],
        &[],
    );
    assert!(ok, "{o}\n{e}");
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(
        after.contains("[accounts.jane-doe-2]\nprovider = \"gmail\""),
        "{after}"
    );
    assert!(after.contains("auth = \"oauth2\"\ntoken_command = \"pizauth show jane\""));
}

#[test]
fn user_add_hashes_a_hidden_password_and_checks_its_routes() {
    let dir = tempfile::tempdir().unwrap();
    let file = start_config(dir.path());
    let cfg = file.to_str().unwrap();
    let (out, code) = in_pty(
        &[
            BIN,
            "--config",
            cfg,
            "user",
            "add",
            "printer",
            "--send-via",
            "capture",
        ],
        &[
            ("Password for printer (typing is hidden)", "print-secret"),
            ("Again", "print-secret"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("print-secret"), "{out}");
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(
        after.contains("[users.printer]\npassword_hash = \"$argon2id$"),
        "{after}"
    );
    assert!(!after.contains("print-secret"));

    // A route to nowhere fails the check, and the file stays as it was.
    let (ok, _, err) = run_env(
        BIN,
        &[
            "--config",
            cfg,
            "user",
            "add",
            "ghost",
            "--send-via",
            "nosuch",
            "--password-env",
            "PW",
        ],
        &[("PW", "x")],
    );
    assert!(!ok);
    assert!(
        err.contains("the file is unchanged") && err.contains("nosuch"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), after);

    // The new login works in `run`.
    let p = Postern::spawn(dir, file, 2, &[]);
    let (_, r) = login(&p, "printer", "print-secret");
    assert!(r.starts_with("235"), "{r}");
}
