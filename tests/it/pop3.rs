//! The POP3 proxy against Dovecot's POP3 service (started by tests/run):
//! Python poplib and curl through Postern, upstream over implicit TLS and
//! STLS, with an app password and with XOAUTH2; and a scripted POP3
//! upstream for the failures a real server will not produce on demand.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Postern with a POP3 listener (plain with STLS on one address, implicit
/// TLS on another) reading through Dovecot's POP3 as `user`.
fn pop3_postern(user: &str, upstream_tls: &str, auth: &str, env: &[(&str, &str)]) -> Postern {
    let port = match upstream_tls {
        "implicit" => peer_env("DOVECOT_POP3S_PORT"),
        _ => peer_env("DOVECOT_POP3_PORT"),
    };
    let cfg = format!(
        "data_dir = \"var\"\n[pop3]\nlisten = [{{ addr = \"127.0.0.1:0\", tls = \"starttls\" }}, {{ addr = \"127.0.0.1:0\", tls = \"implicit\" }}]\n[users.app]\npassword_hash = \"{APP_HASH}\"\nread_via = \"dv\"\n{FAST_LIMITS}upstream_timeout = \"3s\"\n[accounts.dv]\nemail = \"{user}\"\npop3 = {{ host = \"localhost\", port = {port}, tls = \"{upstream_tls}\" }}\nca_file = \"{}\"\n{auth}\n",
        peer_env("PEERS_CA")
    );
    Postern::start_with(&cfg, 2, env)
}

fn pw_auth() -> &'static str {
    "auth = \"password\"\npassword_env = \"U_PW\""
}

fn local_cert(p: &Postern) -> String {
    p.data_dir()
        .join("tls/localhost.pem")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Empty `user`'s INBOX (a rerun by hand finds the last run's mail), then
/// put messages into it straight at Dovecot (IMAPS), each with `marker` in
/// its subject; `big` makes the last one 5 MiB.
fn seed(user: &str, marker: &str, n: usize, big: bool) {
    const APPEND: &str = r#"
import imaplib, ssl, sys
port, ca, user, pw, marker, n, big = sys.argv[1:8]
m = imaplib.IMAP4_SSL('localhost', int(port), ssl_context=ssl.create_default_context(cafile=ca))
m.login(user, pw)
typ, count = m.select('INBOX')
if int(count[0]) > 0:
    m.store('1:*', '+FLAGS', '\\Deleted')
    m.expunge()
for i in range(int(n)):
    body = ('Subject: %s %d\r\n\r\nbody %d\r\n.leading dot\r\n' % (marker, i, i)).encode()
    if big == '1' and i == int(n) - 1:
        body += (b'0123456789abcdef' * 64 + b'\r\n') * 5120
    typ, _ = m.append('INBOX', None, None, body)
    assert typ == 'OK', typ
m.logout()
"#;
    let local = user.split('@').next().unwrap();
    let (ok, out, err) = python(
        APPEND,
        &[
            &peer_env("DOVECOT_IMAPS_PORT"),
            &peer_env("PEERS_CA"),
            user,
            &format!("pw-{local}"),
            marker,
            &n.to_string(),
            if big { "1" } else { "0" },
        ],
    );
    assert!(ok, "{out}{err}");
}

/// poplib through Postern: log in (`how`: user, plain), then STAT, LIST,
/// UIDL, TOP, RETR of every message (compared with what was seeded), and
/// DELE of the first; QUIT.
const POPLIB: &str = r#"
import poplib, ssl, sys, base64
mode, port, cafile, user, pw, how, marker, big, dele = sys.argv[1:10]
ctx = ssl.create_default_context(cafile=cafile)
if mode == 'implicit':
    m = poplib.POP3_SSL('127.0.0.1', int(port), context=ctx)
else:
    m = poplib.POP3('127.0.0.1', int(port))
    print('capa', sorted(m.capa().keys()))
    if mode == 'stls':
        print('stls', m.stls(context=ctx))
print('welcome', m.getwelcome())
if how == 'user':
    m.user(user)
    print('login', m.pass_(pw))
else:
    tok = base64.b64encode(('\0%s\0%s' % (user, pw)).encode()).decode()
    print('login', m._shortcmd('AUTH PLAIN ' + tok))
n, size = m.stat()
print('stat', n)
resp, listing, _ = m.list()
print('list', len(listing))
resp, uidls, _ = m.uidl()
print('uidl', len(uidls))
for i in range(1, n + 1):
    resp, top, _ = m.top(i, 0)
    subj = [l for l in top if l.startswith(b'Subject:')][0].decode()
    resp, lines, octets = m.retr(i)
    body = b'\r\n'.join(lines) + b'\r\n'
    want = ('Subject: %s %d\r\n\r\nbody %d\r\n.leading dot\r\n' % (marker, i - 1, i - 1)).encode()
    if big == '1' and i == n:
        want += (b'0123456789abcdef' * 64 + b'\r\n') * 5120
    print('retr', i, subj, body == want, len(body))
if dele == '1':
    print('dele', m.dele(1))
print('quit', m.quit())
"#;

#[allow(clippy::too_many_arguments)]
fn poplib(p: &Postern, mode: &str, how: &str, marker: &str, big: bool, dele: bool) -> String {
    let port = match mode {
        "implicit" => p.addr_tls("pop3", "implicit"),
        _ => p.addr_tls("pop3", "starttls"),
    }
    .port()
    .to_string();
    let (ok, out, err) = python(
        POPLIB,
        &[
            mode,
            &port,
            &local_cert(p),
            "app",
            APP_PASSWORD,
            how,
            marker,
            if big { "1" } else { "0" },
            if dele { "1" } else { "0" },
        ],
    );
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    out
}

/// USER/PASS, AUTH PLAIN and STLS to Postern; an app password over
/// implicit TLS upstream; every transaction command; a deleted message
/// really gone upstream; a 5 MiB message byte for byte.
#[test]
fn poplib_through_postern_with_an_app_password_over_implicit_tls() {
    let user = "u41@example.test";
    let m = marker("pop");
    seed(user, &m, 3, true);
    let p = pop3_postern(user, "implicit", pw_auth(), &[("U_PW", "pw-u41")]);
    let out = poplib(&p, "plain", "user", &m, true, false);
    assert!(out.contains("login b'+OK Logged in (account dv)'"), "{out}");
    assert!(
        out.contains("'STLS'") && out.contains("'USER'") && out.contains("'SASL'"),
        "{out}"
    );
    assert!(out.contains("stat 3") && out.contains("list 3") && out.contains("uidl 3"));
    for i in 1..=3 {
        assert!(
            out.contains(&format!("retr {i} Subject: {m} {} True", i - 1)),
            "{out}"
        );
    }
    let out = poplib(&p, "stls", "plain", &m, true, true);
    assert!(out.contains("stls b'+OK Begin TLS negotiation'"), "{out}");
    assert!(
        out.contains("stat 3") && out.contains("dele b'+OK"),
        "{out}"
    );
    // DELE + QUIT removed it upstream: two are left, and the first one
    // now is the message that was second.
    let out = poplib(&p, "implicit", "user", &format!("{m}-none"), false, false);
    assert!(out.contains("stat 2"), "{out}");
    assert!(out.contains(&format!("Subject: {m} 1")), "{out}");
    assert!(!p.logs().contains("pw-u41") && !p.logs().contains(APP_PASSWORD));
}

fn mint(token: &str, user: &str) {
    let (ok, o, e) = run(
        repo_root().join("tests/peers/token").to_str().unwrap(),
        &["mint", token, user],
    );
    assert!(ok, "{o}{e}");
}

/// XOAUTH2 upstream over STLS (the form Microsoft requires: the response
/// after `+`); a revoked token gives `-ERR [AUTH]` with the fix, and the
/// token never appears in the log.
#[test]
fn xoauth2_upstream_over_stls_and_a_revoked_token() {
    let user = "u42@example.test";
    let m = marker("popx");
    seed(user, &m, 1, false);
    let tok = marker("poptok");
    mint(&tok, user);
    let auth = format!("auth = \"oauth2\"\ntoken_command = \"echo {tok}\"");
    let p = pop3_postern(user, "starttls", &auth, &[]);
    let out = poplib(&p, "plain", "user", &m, false, false);
    assert!(
        out.contains("stat 1") && out.contains(&format!("retr 1 Subject: {m} 0 True")),
        "{out}"
    );
    let (ok, o, e) = run(
        repo_root().join("tests/peers/token").to_str().unwrap(),
        &["revoke", &tok],
    );
    assert!(ok, "{o}{e}");
    let mut c = Raw::connect(p.addr_tls("pop3", "starttls"));
    assert!(c.line().unwrap().starts_with("+OK"));
    assert!(c.ask("USER app").starts_with("+OK"));
    let r = c.ask(&format!("PASS {APP_PASSWORD}"));
    assert!(
        r.starts_with("-ERR [AUTH] upstream rejected the access token of account dv"),
        "{r}"
    );
    assert!(r.contains("postern auth dv"), "{r}");
    assert!(!p.logs().contains(&tok), "token in the log");
    // The session goes on: QUIT is answered.
    assert!(c.ask("QUIT").starts_with("+OK"));
}

/// curl's pop3:// (plaintext on loopback) and pop3s:// (implicit TLS,
/// trusting Postern's generated certificate) list and retrieve.
#[test]
fn curl_pop3_and_pop3s() {
    let user = "u43@example.test";
    let m = marker("popc");
    seed(user, &m, 2, false);
    let p = pop3_postern(user, "implicit", pw_auth(), &[("U_PW", "pw-u43")]);
    let plain = p.addr_tls("pop3", "starttls");
    let (ok, out, err) = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            &format!("pop3://127.0.0.1:{}/", plain.port()),
            "-u",
            &format!("app:{APP_PASSWORD}"),
        ],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let tls = p.addr_tls("pop3", "implicit");
    let (ok, out, err) = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            &local_cert(&p),
            &format!("pop3s://127.0.0.1:{}/2", tls.port()),
            "-u",
            &format!("app:{APP_PASSWORD}"),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("Subject: {m} 1")), "{out}");
}

/// What the scripted upstream does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Script {
    /// `-ERR [AUTH]` to PASS.
    AuthErr,
    /// `-ERR [SYS/TEMP]` to PASS.
    SysTemp,
    /// Accepts, never greets.
    NoGreeting,
    /// Greets, then closes at the first command.
    Drop,
    /// CAPA without STLS (the account wants STLS).
    NoStls,
}

/// A scripted POP3 server on 127.0.0.1; returns its port and the lines it
/// received.
fn scripted(script: Script) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let seen = seen2.clone();
            std::thread::spawn(move || {
                if script == Script::NoGreeting {
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                }
                let _ = s.write_all(b"+OK scripted ready\r\n");
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end().to_owned();
                    seen.lock().unwrap().push(line.clone());
                    if script == Script::Drop {
                        return;
                    }
                    let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "CAPA" if script == Script::NoStls => b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n",
                        "CAPA" => b"+OK\r\nUSER\r\nSTLS\r\n.\r\n",
                        "USER" => b"+OK\r\n",
                        "PASS" if script == Script::AuthErr => {
                            b"-ERR [AUTH] Invalid credentials.\r\n"
                        }
                        "PASS" => b"-ERR [SYS/TEMP] Backend unavailable, try later.\r\n",
                        "QUIT" => b"+OK bye\r\n",
                        _ => b"-ERR what\r\n",
                    };
                    if s.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// Each upstream failure gives the client its documented `-ERR` with a
/// response code, within `upstream_timeout`; a server without STLS never
/// sees the user name or password.
#[test]
fn scripted_upstream_failures() {
    let rows = [
        (
            Script::AuthErr,
            "none",
            "-ERR [AUTH] upstream rejected the app password of account dv",
        ),
        (Script::SysTemp, "none", "-ERR [SYS/TEMP]"),
        (Script::NoGreeting, "none", "-ERR [SYS/TEMP]"),
        (Script::Drop, "none", "-ERR [SYS/TEMP]"),
        (Script::NoStls, "starttls", "-ERR [SYS/PERM]"),
    ];
    for (script, tls, want) in rows {
        let (port, seen) = scripted(script);
        let cfg = format!(
            "data_dir = \"var\"\n[pop3]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{APP_HASH}\"\nread_via = \"dv\"\n{FAST_LIMITS}upstream_timeout = \"2s\"\n[accounts.dv]\nemail = \"x@example.test\"\npop3 = {{ host = \"127.0.0.1\", port = {port}, tls = \"{tls}\" }}\nauth = \"password\"\npassword_env = \"U_PW\"\n"
        );
        let p = Postern::start_with(&cfg, 1, &[("U_PW", "app-secret")]);
        let mut c = Raw::connect(p.addr("pop3"));
        assert!(c.line().unwrap().starts_with("+OK"));
        assert!(c.ask("USER app").starts_with("+OK"));
        let t = Instant::now();
        let r = c.ask(&format!("PASS {APP_PASSWORD}"));
        assert!(r.starts_with(want), "{script:?}: {r}\n{}", p.logs());
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{script:?} took {:?}",
            t.elapsed()
        );
        assert!(!r.contains("app-secret") && !p.logs().contains("app-secret"));
        if script == Script::NoStls {
            assert!(r.contains("STLS"), "{r}");
            let seen = seen.lock().unwrap();
            assert!(
                seen.iter()
                    .all(|l| !l.starts_with("USER") && !l.starts_with("PASS")),
                "credentials sent in plaintext: {seen:?}"
            );
        }
        assert!(c.ask("QUIT").starts_with("+OK"), "{script:?}");
    }
}

/// Before login: errors are protocol errors, over-long lines are refused
/// and skipped, USER without TLS from a non-loopback address is refused
/// (covered by the unit tests), APOP and unknown commands get `-ERR`.
#[test]
fn pre_login_dialogue() {
    let (port, _) = scripted(Script::AuthErr);
    let cfg = format!(
        "data_dir = \"var\"\n[pop3]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{APP_HASH}\"\nread_via = \"dv\"\n{FAST_LIMITS}\n[accounts.dv]\nemail = \"x@example.test\"\npop3 = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\" }}\nauth = \"password\"\npassword_env = \"U_PW\"\n"
    );
    let p = Postern::start_with(&cfg, 1, &[("U_PW", "x")]);
    let mut c = Raw::connect(p.addr("pop3"));
    assert!(c.line().unwrap().starts_with("+OK"));
    assert!(c
        .ask("STAT")
        .starts_with("-ERR STAT is not valid before login"));
    assert!(c
        .ask("APOP app 0123456789abcdef0123456789abcdef")
        .starts_with("-ERR APOP"));
    assert!(c.ask("PASS x").starts_with("-ERR Send USER first"));
    assert!(c
        .ask("AUTH CRAM-MD5")
        .starts_with("-ERR Unsupported mechanism"));
    c.send(format!("NOOP {}\r\n", "x".repeat(5000)).as_bytes());
    assert!(c.line().unwrap().to_ascii_lowercase().contains("too long"));
    let r = c.ask("AUTH");
    assert_eq!(r, "+OK");
    assert_eq!(c.line().unwrap(), "PLAIN");
    assert_eq!(c.line().unwrap(), ".");
    assert!(c.ask("USER app").starts_with("+OK"));
    assert!(c
        .ask("PASS wrong")
        .starts_with("-ERR [AUTH] Authentication failed"));
    // AUTH PLAIN with the response after "+ ".
    assert_eq!(c.ask("AUTH PLAIN"), "+ ");
    assert!(c
        .ask(&b64(format!("\0app\0{APP_PASSWORD}").as_bytes()))
        .starts_with("-ERR [AUTH] upstream rejected the app password"));
    assert!(c.ask("QUIT").starts_with("+OK"));
    assert!(c.closed());
}

/// `doctor` checks every server of an account (SMTP, IMAP, POP3) with the
/// same steps, and finds the working TLS mode for a POP3 server set up
/// wrongly.
#[test]
fn doctor_checks_smtp_imap_and_pop3() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    let good = format!(
        "[pop3]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{APP_HASH}\"\nread_via = \"dv\"\n[accounts.dv]\nemail = \"u49@example.test\"\nsmtp = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\nimap = {{ host = \"localhost\", port = {}, tls = \"implicit\" }}\npop3 = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"U_PW\"\n",
        peer_env("DOVECOT_SUBMISSION_PORT"),
        peer_env("DOVECOT_IMAPS_PORT"),
        peer_env("DOVECOT_POP3_PORT"),
        peer_env("PEERS_CA")
    );
    std::fs::write(&path, &good).unwrap();
    let doctor = || {
        run_env(
            BIN,
            &["--config", path.to_str().unwrap(), "doctor", "dv"],
            &[("U_PW", "pw-u49")],
        )
    };
    let (ok, out, err) = doctor();
    assert!(ok, "{out}{err}");
    for section in ["smtp localhost:", "imap localhost:", "pop3 localhost:"] {
        assert!(out.contains(section), "{out}");
    }
    assert_eq!(out.matches("[ok    ] authenticate").count(), 3, "{out}");
    assert!(
        out.contains("CAPA: SASL") && out.contains("Postern Test CA"),
        "{out}"
    );
    // POP3 set to implicit TLS on the STLS port: the fix names the mode.
    let pop3 = peer_env("DOVECOT_POP3_PORT");
    std::fs::write(
        &path,
        good.replace(
            &format!("port = {pop3}, tls = \"starttls\""),
            &format!("port = {pop3}, tls = \"implicit\""),
        ),
    )
    .unwrap();
    let (ok, out, _) = doctor();
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("port {pop3} with tls = \"starttls\" works"))
            && out.contains(&format!(
                "set pop3 = {{ host = \"localhost\", port = {pop3}, tls = \"starttls\" }}"
            )),
        "{out}"
    );
}
