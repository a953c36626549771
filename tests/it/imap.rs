//! The IMAP proxy against a real Dovecot (started by tests/run): real
//! clients (Python imaplib, curl, raw sockets) through Postern.

use std::time::{Duration, Instant};

use crate::harness::*;

/// Postern with SMTP capture and IMAP reading via a Dovecot account.
fn imap_postern(
    user: &str,
    imap_tls: &str,
    local_tls: &str,
    auth: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> Postern {
    let port = match imap_tls {
        "implicit" => peer_env("DOVECOT_IMAPS_PORT"),
        _ => peer_env("DOVECOT_IMAP_PORT"),
    };
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[imap]\nlisten = \"127.0.0.1:0\"\ntls = \"{local_tls}\"\n[users.app]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\nread_via = \"dv\"\n[users.noimap]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"capture\"\n{FAST_LIMITS}upstream_timeout = \"3s\"\n{extra}\n[accounts.dv]\nemail = \"{user}\"\nimap = {{ host = \"localhost\", port = {port}, tls = \"{imap_tls}\" }}\nca_file = \"{}\"\n{auth}\n",
        peer_env("PEERS_CA")
    );
    Postern::start_with(&cfg, 2, env)
}

fn pw_auth() -> &'static str {
    "auth = \"password\"\npassword_env = \"U_PW\""
}

fn self_signed(p: &Postern) -> String {
    p.data_dir()
        .join("tls/localhost.pem")
        .to_str()
        .unwrap()
        .to_owned()
}

const IMAPLIB: &str = r#"
import imaplib, ssl, sys, os
mode, port, user, pw, how, cafile, size, marker = sys.argv[1:9]
size = int(size)
if mode == 'starttls':
    m = imaplib.IMAP4('127.0.0.1', int(port))
    m.starttls(ssl_context=ssl.create_default_context(cafile=cafile))
else:
    m = imaplib.IMAP4('127.0.0.1', int(port))
if how == 'login':
    typ, data = m.login(user, pw)
elif how == 'plain':
    typ, data = m.authenticate('PLAIN', lambda _: ('\0%s\0%s' % (user, pw)).encode())
elif how == 'literal':
    # LOGIN with the password as a synchronising literal.
    m.literal = pw.encode()
    typ, data = m._simple_command('LOGIN', user)
    m.state = 'AUTH'
print('login', typ, data)
caps = m.capabilities
print('caps', ' '.join(c if isinstance(c, str) else c.decode() for c in caps))
if size > 0:
    body = ('Subject: %s\r\n\r\n' % marker).encode() + (b'0123456789abcdef' * 64 + b'\r\n') * (size // 1026)
    typ, data = m.append('INBOX', None, None, body)
    print('append', typ)
    m.select('INBOX')
    typ, data = m.search(None, 'SUBJECT', marker)
    num = data[0].split()[-1]
    typ, data = m.fetch(num, '(BODY.PEEK[])')
    got = data[0][1]
    print('same', got == body, len(got), len(body))
m.logout()
"#;

fn imaplib(p: &Postern, mode: &str, how: &str, size: usize, m: &str) -> String {
    let port = p.addr("imap").port().to_string();
    let ca = self_signed(p);
    let (ok, out, err) = python(
        IMAPLIB,
        &[
            mode,
            &port,
            "app",
            APP_PASSWORD,
            how,
            &ca,
            &size.to_string(),
            m,
        ],
    );
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    out
}

#[test]
fn implicit_upstream_password_login_plain_literal_and_5mib_append() {
    let p = imap_postern(
        "u12@example.test",
        "implicit",
        "none",
        pw_auth(),
        "",
        &[("U_PW", "pw-u12")],
    );
    let out = imaplib(&p, "plain", "login", 0, "");
    assert!(out.contains("login OK"), "{out}");
    // Upstream capabilities, IMAP4rev1 first.
    assert!(
        out.contains("caps IMAP4REV1") || out.contains("caps IMAP4rev1"),
        "{out}"
    );
    assert!(out.contains("IDLE"), "{out}");
    let out = imaplib(&p, "plain", "plain", 0, "");
    assert!(out.contains("login OK"), "{out}");
    let out = imaplib(&p, "plain", "literal", 0, "");
    assert!(out.contains("login OK"), "{out}");
    let m = marker("big");
    let out = imaplib(&p, "plain", "login", 5 * 1024 * 1024, &m);
    assert!(
        out.contains("append OK") && out.contains("same True"),
        "{out}"
    );
}

#[test]
fn starttls_to_postern_and_starttls_upstream() {
    let p = imap_postern(
        "u13@example.test",
        "starttls",
        "starttls",
        pw_auth(),
        "",
        &[("U_PW", "pw-u13")],
    );
    let out = imaplib(&p, "starttls", "login", 64 * 1024, &marker("stls"));
    assert!(
        out.contains("login OK") && out.contains("same True"),
        "{out}"
    );
}

fn mint(token: &str, user: &str) {
    let (ok, o, e) = run(
        repo_root().join("tests/peers/token").to_str().unwrap(),
        &["mint", token, user],
    );
    assert!(ok, "{o}{e}");
}

#[test]
fn xoauth2_upstream_and_revocation() {
    let user = "u14@example.test";
    let dir = tempfile::tempdir().unwrap();
    let tok = marker("imaptok");
    mint(&tok, user);
    let file = dir.path().join("tok");
    std::fs::write(&file, &tok).unwrap();
    let auth = format!(
        "auth = \"oauth2\"\ntoken_command = \"cat {}\"",
        file.display()
    );
    let p = imap_postern(user, "starttls", "none", &auth, "", &[]);
    let out = imaplib(&p, "plain", "login", 1024, &marker("x"));
    assert!(
        out.contains("login OK") && out.contains("same True"),
        "{out}"
    );
    // Revoked: the command is run again, gives the same revoked token, and
    // the client gets the documented NO.
    let (ok, o, e) = run(
        repo_root().join("tests/peers/token").to_str().unwrap(),
        &["revoke", &tok],
    );
    assert!(ok, "{o}{e}");
    let mut c = Raw::connect(p.addr("imap"));
    c.line();
    c.send(format!("a1 LOGIN app {APP_PASSWORD}\r\n").as_bytes());
    let r = c.line().unwrap();
    assert!(
        r.starts_with(
            "a1 NO [AUTHENTICATIONFAILED] upstream rejected the access token of account dv"
        ),
        "{r}"
    );
    assert!(r.contains("postern auth dv"), "{r}");
    assert!(!p.logs().contains(&tok));
    // The proxy stays up for the next client.
    let mut c = Raw::connect(p.addr("imap"));
    assert!(c.line().unwrap().starts_with("* OK"));
}

#[test]
fn idle_sees_a_message_delivered_meanwhile() {
    let user = "u15@example.test";
    let p = imap_postern(
        user,
        "implicit",
        "none",
        pw_auth(),
        "",
        &[("U_PW", "pw-u15")],
    );
    let mut c = Raw::connect(p.addr("imap"));
    assert!(c.line().unwrap().starts_with("* OK"));
    c.send(format!("a1 LOGIN app {APP_PASSWORD}\r\n").as_bytes());
    assert!(c.line().unwrap().starts_with("a1 OK"));
    c.send(b"a2 SELECT INBOX\r\n");
    while !c.line().unwrap().starts_with("a2 ") {}
    c.send(b"a3 IDLE\r\n");
    assert!(c.line().unwrap().starts_with("+"));
    // Deliver with a direct connection to Dovecot.
    let m = marker("idle");
    let script = r#"
import imaplib, ssl, sys
port, user, pw, cafile, marker = sys.argv[1:6]
m = imaplib.IMAP4_SSL('localhost', int(port), ssl_context=ssl.create_default_context(cafile=cafile))
m.login(user, pw)
m.append('INBOX', None, None, ('Subject: %s\r\n\r\nhi\r\n' % marker).encode())
m.logout()
"#;
    let (ok, o, e) = python(
        script,
        &[
            &peer_env("DOVECOT_IMAPS_PORT"),
            user,
            "pw-u15",
            &peer_env("PEERS_CA"),
            &m,
        ],
    );
    assert!(ok, "{o}{e}");
    let t = Instant::now();
    let mut seen = false;
    while t.elapsed() < Duration::from_secs(15) {
        let l = c.line().unwrap();
        if l.contains("EXISTS") {
            seen = true;
            break;
        }
    }
    assert!(seen, "no EXISTS during IDLE");
    c.send(b"DONE\r\n");
    while !c.line().unwrap().starts_with("a3 ") {}
    c.send(b"a4 LOGOUT\r\n");
}

#[test]
fn curl_imap_and_imaps_list_and_fetch() {
    let user = "u16@example.test";
    // Put a message in the mailbox first (direct to Dovecot).
    let m = marker("curl");
    let script = r#"
import imaplib, ssl, sys
port, user, pw, cafile, marker = sys.argv[1:6]
m = imaplib.IMAP4_SSL('localhost', int(port), ssl_context=ssl.create_default_context(cafile=cafile))
m.login(user, pw)
m.append('INBOX', None, None, ('Subject: %s\r\n\r\ncurl body\r\n' % marker).encode())
m.logout()
"#;
    let (ok, o, e) = python(
        script,
        &[
            &peer_env("DOVECOT_IMAPS_PORT"),
            user,
            "pw-u16",
            &peer_env("PEERS_CA"),
            &m,
        ],
    );
    assert!(ok, "{o}{e}");
    for local in ["none", "implicit"] {
        let p = imap_postern(
            user,
            "implicit",
            local,
            pw_auth(),
            "",
            &[("U_PW", "pw-u16")],
        );
        let port = p.addr("imap").port();
        let (scheme, host) = if local == "none" {
            ("imap", "127.0.0.1")
        } else {
            ("imaps", "localhost")
        };
        let resolve = format!("localhost:{port}:127.0.0.1");
        let ca = self_signed(&p);
        let base = format!("{scheme}://{host}:{port}");
        let creds = format!("app:{APP_PASSWORD}");
        let mut args = vec!["-sS", "-u", &creds, "--resolve", &resolve, "--cacert", &ca];
        let list_url = format!("{base}/");
        let mut a = args.clone();
        a.push(&list_url);
        let (ok, out, err) = run("curl", &a);
        assert!(ok && out.contains("INBOX"), "{out}\n{err}\n{}", p.logs());
        let fetch_url = format!("{base}/INBOX;UID=1");
        args.push(&fetch_url);
        let (ok, out, err) = run("curl", &args);
        assert!(ok && out.contains("Subject: "), "{out}\n{err}");
    }
}

#[test]
fn local_side_dialogue_and_refusals() {
    let p = imap_postern(
        "u17@example.test",
        "implicit",
        "none",
        pw_auth(),
        "max_bad_commands = 50\n",
        &[("U_PW", "pw-u17")],
    );
    let mut c = Raw::connect(p.addr("imap"));
    let g = c.line().unwrap();
    assert!(
        g.starts_with("* OK [CAPABILITY IMAP4rev1 ") && g.contains("AUTH=PLAIN"),
        "{g}"
    );
    c.send(b"t1 NOOP\r\n");
    assert_eq!(c.line().unwrap(), "t1 OK NOOP completed");
    c.send(b"t2 ID (\"name\" \"test\")\r\n");
    assert!(c.line().unwrap().starts_with("* ID (\"name\" \"Postern\""));
    assert!(c.line().unwrap().starts_with("t2 OK"));
    c.send(b"t3 SELECT INBOX\r\n");
    let r = c.line().unwrap();
    assert!(
        r.starts_with("t3 BAD SELECT is not valid before login"),
        "{r}"
    );
    c.send(b"t4 AUTHENTICATE CRAM-MD5\r\n");
    assert!(c.line().unwrap().starts_with("t4 NO"));
    c.send(b"t5 STARTTLS\r\n");
    assert!(c.line().unwrap().starts_with("t5 BAD"));
    // Oversized literal: refused before any of it is sent.
    c.send(b"t6 LOGIN app {4294967295}\r\n");
    let r = c.line().unwrap();
    assert!(r.starts_with("t6 BAD [TOOBIG]"), "{r}");
    c.send(b"t7 LOGIN app {99999999999999999999}\r\n");
    assert!(c.line().unwrap().starts_with("t7 BAD [TOOBIG]"));
    // Wrong password.
    c.send(b"t8 LOGIN app wrong\r\n");
    assert!(c
        .line()
        .unwrap()
        .starts_with("t8 NO [AUTHENTICATIONFAILED]"));
    // A user without read_via.
    c.send(format!("t9 LOGIN noimap \"{APP_PASSWORD}\"\r\n").as_bytes());
    let r = c.line().unwrap();
    assert!(
        r.starts_with("t9 NO") && r.contains("IMAP is not configured for user noimap"),
        "{r}"
    );
    // Quoted string with escapes and a synchronising literal; tag kept exactly.
    c.send(b"Tag.10 LOGIN \"app\" {9}\r\n");
    assert!(c.line().unwrap().starts_with("+ "));
    c.send(format!("{APP_PASSWORD}\r\n").as_bytes());
    let r = c.line().unwrap();
    assert!(r.starts_with("Tag.10 OK [CAPABILITY IMAP4rev1"), "{r}");
    c.send(b"x LOGOUT\r\n");
    assert!(c.line().unwrap().starts_with("* BYE"));
}

#[test]
fn non_synchronising_literal_and_authenticate_continuation() {
    let p = imap_postern(
        "u18@example.test",
        "implicit",
        "none",
        pw_auth(),
        "",
        &[("U_PW", "pw-u18")],
    );
    let mut c = Raw::connect(p.addr("imap"));
    c.line();
    c.send(format!("a LOGIN {{3+}}\r\napp {{9+}}\r\n{APP_PASSWORD}\r\n").as_bytes());
    let r = c.line().unwrap();
    assert!(r.starts_with("a OK [CAPABILITY"), "{r}");
    let mut c = Raw::connect(p.addr("imap"));
    c.line();
    c.send(b"b AUTHENTICATE PLAIN\r\n");
    assert!(c.line().unwrap().starts_with("+"));
    c.send(format!("{}\r\n", b64(format!("\0app\0{APP_PASSWORD}").as_bytes())).as_bytes());
    let r = c.line().unwrap();
    assert!(r.starts_with("b OK [CAPABILITY"), "{r}");
    // Pipelined after login: goes straight to the upstream.
    c.send(b"c NOOP\r\nd NOOP\r\n");
    assert!(c.line().unwrap().starts_with("c OK"));
    assert!(c.line().unwrap().starts_with("d OK"));
}

#[test]
fn unreachable_upstream_and_tls_name_mismatch_give_unavailable() {
    use crate::fake_smtp::TestPki;
    // A TLS server whose certificate names another host.
    let pki = TestPki::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bad_port = listener.local_addr().unwrap().port();
    let server = pki.server_config(&["wrong.example"]);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let cfg = server.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut conn = rustls::ServerConnection::new(cfg).unwrap();
                let _ = conn.complete_io(&mut s);
            });
        }
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[imap]\nlisten = \"127.0.0.1:0\"\n[users.a]\npassword_hash = \"{APP_HASH}\"\nread_via = \"gone\"\n[users.b]\npassword_hash = \"{APP_HASH}\"\nread_via = \"badname\"\n{FAST_LIMITS}upstream_timeout = \"2s\"\n[accounts.gone]\nemail = \"g@example.test\"\nimap = {{ host = \"127.0.0.1\", port = {closed}, tls = \"implicit\" }}\nauth = \"password\"\npassword_env = \"X\"\n[accounts.badname]\nemail = \"b@example.test\"\nimap = {{ host = \"localhost\", port = {bad_port}, tls = \"implicit\" }}\nca_file = \"{}\"\nauth = \"password\"\npassword_env = \"X\"\n",
        pki.ca_pem_path.display()
    );
    let p = Postern::start_with(&cfg, 2, &[("X", "pw")]);
    let mut c = Raw::connect(p.addr("imap"));
    c.line();
    c.send(format!("1 LOGIN a {APP_PASSWORD}\r\n").as_bytes());
    let r = c.line().unwrap();
    assert!(
        r.starts_with("1 NO [UNAVAILABLE]") && r.contains("try 993"),
        "{r}"
    );
    c.send(format!("2 LOGIN b {APP_PASSWORD}\r\n").as_bytes());
    let r = c.line().unwrap();
    assert!(
        r.starts_with("2 NO [UNAVAILABLE]") && r.contains("not valid for that name"),
        "{r}"
    );
    c.send(b"3 LOGOUT\r\n");
    assert!(c.line().unwrap().starts_with("* BYE"));
}

/// A scripted plaintext IMAP upstream on loopback: a greeting, then for each
/// command line a canned answer chosen by the closure. Records what it got.
fn scripted_imap(
    greeting: &'static str,
    answer: fn(&str) -> Vec<String>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = w.write_all(format!("{greeting}\r\n").as_bytes());
                let mut r = BufReader::new(s);
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let l = line.trim_end().to_owned();
                    seen.lock().unwrap().push(l.clone());
                    for a in answer(&l) {
                        let _ = w.write_all(format!("{a}\r\n").as_bytes());
                    }
                    line.clear();
                }
            });
        }
    });
    (port, seen)
}

fn scripted_postern(port: u16, auth: &str) -> Postern {
    let cfg = format!(
        "data_dir = \"var\"\n[smtp]\nlisten = \"127.0.0.1:0\"\n[imap]\nlisten = \"127.0.0.1:0\"\n[users.app]\npassword_hash = \"{APP_HASH}\"\nread_via = \"fk\"\n{FAST_LIMITS}upstream_timeout = \"3s\"\n[accounts.fk]\nemail = \"fk@example.test\"\nimap = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\" }}\n{auth}\n"
    );
    Postern::start_with(&cfg, 2, &[("X", "pw")])
}

#[test]
fn upstream_greeting_bye_preauth_and_oauthbearer_only() {
    let pw = "auth = \"password\"\npassword_env = \"X\"";
    // BYE greeting: the client is told the server refused.
    let (port, _) = scripted_imap("* BYE Too busy, try later", |_| vec![]);
    let p = scripted_postern(port, pw);
    let mut c = Raw::connect(p.addr("imap"));
    c.line();
    c.send(format!("a LOGIN app {APP_PASSWORD}\r\n").as_bytes());
    let r = c.line().unwrap();
    assert!(
        r.starts_with("a NO [UNAVAILABLE]") && r.contains("Too busy"),
        "{r}"
    );

    // PREAUTH: no login upstream; the capabilities are asked for.
    let (port, seen) = scripted_imap("* PREAUTH IMAP4rev1 server logged in as fk", |l| {
        let tag = l.split(' ').next().unwrap_or("*").to_owned();
        if l.contains("CAPABILITY") {
            vec![
                "* CAPABILITY IMAP4rev1 IDLE".into(),
                format!("{tag} OK done"),
            ]
        } else {
            vec![format!("{tag} OK {l}")]
        }
    });
    let p = scripted_postern(port, pw);
    let mut c = Raw::connect(p.addr("imap"));
    c.line();
    c.send(format!("a LOGIN app {APP_PASSWORD}\r\n").as_bytes());
    let r = c.line().unwrap();
    assert!(r.starts_with("a OK [CAPABILITY IMAP4rev1 IDLE]"), "{r}");
    assert!(
        !seen.lock().unwrap().iter().any(|l| l.contains("LOGIN")),
        "{:?}",
        seen.lock().unwrap()
    );

    // Only OAUTHBEARER offered, no SASL-IR: AUTHENTICATE via a continuation.
    let (port, seen) = scripted_imap("* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER] ready", |l| {
        if l.ends_with("AUTHENTICATE OAUTHBEARER") {
            vec!["+ ".into()]
        } else if l.starts_with('P') && l.contains(' ') {
            let tag = l.split(' ').next().unwrap().to_owned();
            vec![format!("{tag} OK done")]
        } else if !l.contains(' ') {
            // The SASL payload line: accept.
            vec!["P1 OK [CAPABILITY IMAP4rev1 IDLE] authenticated".into()]
        } else {
            vec![]
        }
    });
    let p = scripted_postern(port, "auth = \"oauth2\"\ntoken_command = \"echo tok-ob\"");
    let mut c = Raw::connect(p.addr("imap"));
    c.line();
    c.send(format!("a LOGIN app {APP_PASSWORD}\r\n").as_bytes());
    let r = c.line().unwrap();
    assert!(
        r.starts_with("a OK [CAPABILITY IMAP4rev1 IDLE]"),
        "{r}\n{}",
        p.logs()
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], "P1 AUTHENTICATE OAUTHBEARER", "{seen:?}");
    let payload =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &seen[1]).unwrap();
    let payload = String::from_utf8(payload).unwrap();
    assert!(
        payload.starts_with("n,a=fk@example.test,\u{1}host=127.0.0.1\u{1}")
            && payload.contains("auth=Bearer tok-ob"),
        "{payload:?}"
    );
}

const COMPRESS: &str = r#"
import socket, sys, zlib
port, pw, marker = sys.argv[1:4]
s = socket.create_connection(('127.0.0.1', int(port)), timeout=20)
raw = b''
comp = None
decomp = None
def feed():
    global raw
    chunk = s.recv(65536)
    if not chunk:
        raise SystemExit('closed; so far %r' % raw[:200])
    raw += decomp.decompress(chunk) if decomp else chunk
def line():
    global raw
    while b'\r\n' not in raw:
        feed()
    l, raw = raw.split(b'\r\n', 1)
    return l
def take(n):
    global raw
    while len(raw) < n:
        feed()
    out, raw = raw[:n], raw[n:]
    return out
def send(data):
    s.sendall(comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH) if comp else data)
def until(tag):
    while True:
        l = line()
        if l.startswith(tag + b' '):
            return l
line()
send(b'a LOGIN app ' + pw.encode() + b'\r\n')
print('login', until(b'a').decode())
send(b'b COMPRESS DEFLATE\r\n')
print('compress', until(b'b').decode())
# Everything from here on is deflated both ways (RFC 4978).
comp = zlib.compressobj(wbits=-15)
decomp = zlib.decompressobj(wbits=-15)
raw = decomp.decompress(raw)
body = ('Subject: %s\r\n\r\n' % marker).encode() + (b'compressible line ' * 50 + b'\r\n') * 2000
send(b'c APPEND INBOX {%d}\r\n' % len(body))
assert line().startswith(b'+'), 'no continuation'
send(body + b'\r\n')
print('append', until(b'c').decode())
send(b'd SELECT INBOX\r\n')
until(b'd')
send(b'e UID SEARCH SUBJECT ' + marker.encode() + b'\r\n')
uid = None
while True:
    l = line()
    if l.startswith(b'* SEARCH'):
        uid = l.split()[-1]
    elif l.startswith(b'e '):
        break
send(b'f UID FETCH ' + uid + b' BODY.PEEK[]\r\n')
got = None
while True:
    l = line()
    if l.startswith(b'* ') and l.endswith(b'}'):
        n = int(l[l.rindex(b'{') + 1:-1])
        got = take(n)
    elif l.startswith(b'f '):
        print('fetch', l.decode())
        break
print('same', got == body, len(body))
send(b'g LOGOUT\r\n')
until(b'g')
"#;

/// RFC 4978 COMPRESS=DEFLATE, enabled after login through Postern (Dovecot
/// with imap_zlib): the splice carries the deflated stream both ways, and
/// a 1.8 MB message is appended and read back byte for byte.
#[test]
fn compress_deflate_through_the_splice() {
    let user = "u47@example.test";
    let p = imap_postern(
        user,
        "implicit",
        "none",
        pw_auth(),
        "",
        &[("U_PW", "pw-u47")],
    );
    let m = marker("deflate");
    let (ok, out, err) = python(
        COMPRESS,
        &[&p.addr("imap").port().to_string(), APP_PASSWORD, &m],
    );
    assert!(ok, "{out}\n{err}\n{}", p.logs());
    assert!(
        out.contains("login a OK") && out.contains("COMPRESS=DEFLATE"),
        "{out}"
    );
    assert!(out.contains("compress b OK"), "{out}");
    assert!(
        out.contains("append c OK") && out.contains("fetch f OK"),
        "{out}"
    );
    assert!(out.contains("same True"), "{out}");
}

/// RFC 2971 allows 30 field/value pairs of up to 1024 octets in ID: about
/// 32 KB on one line, before login.
#[test]
fn a_full_size_id_before_login() {
    let p = imap_postern(
        "u47@example.test",
        "implicit",
        "none",
        pw_auth(),
        "",
        &[("U_PW", "pw-u47")],
    );
    let mut c = Raw::connect(p.addr("imap"));
    c.line();
    let pairs: Vec<String> = (0..30)
        .map(|i| format!("\"field{i:02}\" \"{}\"", "v".repeat(1024)))
        .collect();
    c.send(format!("t1 ID ({})\r\n", pairs.join(" ")).as_bytes());
    assert!(c.line().unwrap().starts_with("* ID (\"name\" \"Postern\""));
    let r = c.line().unwrap();
    assert!(r.starts_with("t1 OK"), "{r}");
    // Past that, still bounded.
    c.send(format!("t2 ID (\"x\" \"{}\")\r\n", "v".repeat(70_000)).as_bytes());
    let r = c.line().unwrap();
    assert!(r.contains("BAD"), "{r}");
}
