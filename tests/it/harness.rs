//! Running a real `postern` process for a test, and the clients that talk to it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// Password of the test user `app` in [`APP_HASH`].
pub const APP_PASSWORD: &str = "test-pass";
pub const APP_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$jtjte1sjA6VjHO6XRY7TGA$VSF/br51eDECkd7XSn4u+Us04AOeBmtmP3PB0T9dnUA";

/// A peer the test script must have started; fail (never skip) without it.
pub fn peer_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with tests/run (it starts Dovecot, redis and the sink)")
    })
}

/// A unique marker (subject, token, user name part) so parallel tests never
/// count each other's messages.
pub fn marker(name: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{n}")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running postern with its own temp dir, config and data_dir.
pub struct Postern {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    pub listeners: Vec<(String, SocketAddr)>,
}

/// Config preamble: data_dir in the temp dir; the caller adds listeners etc.
pub fn users_section(send_via: &str) -> String {
    format!("[users.app]\npassword_hash = \"{APP_HASH}\"\nsend_via = \"{send_via}\"\n")
}

/// Fast auth failures so negative tests do not crawl.
pub const FAST_LIMITS: &str =
    "[limits]\nauth_failure_delay = \"50ms\"\nauth_backoff_max = \"200ms\"\n";

impl Postern {
    /// Start with this config text (written to `<tmp>/postern.toml`). Waits
    /// until `expect_listeners` "listening" lines were logged.
    pub fn start(config: &str, expect_listeners: usize) -> Postern {
        Self::start_with(config, expect_listeners, &[])
    }

    pub fn start_with(config: &str, expect_listeners: usize, env: &[(&str, &str)]) -> Postern {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postern.toml");
        std::fs::write(&path, config).unwrap();
        Self::spawn(dir, path, expect_listeners, env)
    }

    pub fn spawn(
        dir: tempfile::TempDir,
        path: PathBuf,
        expect_listeners: usize,
        env: &[(&str, &str)],
    ) -> Postern {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&path).arg("run");
        cmd.env("RUST_LOG", "info,postern=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn postern");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let logs2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                logs2.lock().unwrap().push(line);
            }
        });
        let mut p = Postern {
            child: Some(child),
            dir,
            config: path,
            logs,
            listeners: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = p.parse_listeners();
            if found.len() >= expect_listeners {
                p.listeners = found;
                break;
            }
            if let Some(status) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("postern exited early ({status}):\n{}", p.logs());
            }
            assert!(
                Instant::now() < deadline,
                "postern did not start:\n{}",
                p.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    fn parse_listeners(&self) -> Vec<(String, SocketAddr)> {
        self.parse_listeners_tls()
            .into_iter()
            .map(|(p, a, _)| (p, a))
            .collect()
    }

    /// Every listener as logged: protocol, address, TLS mode.
    fn parse_listeners_tls(&self) -> Vec<(String, SocketAddr, String)> {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .filter(|l| l.contains(" listening "))
            .filter_map(|l| {
                let proto = l.split("proto=\"").nth(1)?.split('"').next()?.to_owned();
                let addr = l.split(" addr=").nth(1)?.split(' ').next()?.parse().ok()?;
                let tls = l.split(" tls=").nth(1)?.split(' ').next()?.to_owned();
                Some((proto, addr, tls))
            })
            .collect()
    }

    /// The address of the `proto` listener that speaks `tls` (a listener
    /// section may serve several TLS modes).
    pub fn addr_tls(&self, proto: &str, tls: &str) -> SocketAddr {
        self.parse_listeners_tls()
            .into_iter()
            .find(|(p, _, t)| p == proto && t == tls)
            .map(|(_, a, _)| a)
            .unwrap_or_else(|| panic!("no {proto} listener with tls={tls}:\n{}", self.logs()))
    }

    pub fn addr(&self, proto: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(p, _)| p == proto)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {proto} listener"))
    }

    pub fn smtp(&self) -> SocketAddr {
        self.addr("smtp")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    pub fn capture_new(&self) -> PathBuf {
        self.data_dir().join("capture/new")
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Wait for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Wait for the process to exit; returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }
}

impl Drop for Postern {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// All files in a Maildir `new/` folder, sorted by name.
pub fn maildir_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Split a captured file into its X-Postern-* header lines and the message
/// bytes exactly as received.
pub fn split_capture(bytes: &[u8]) -> (String, Vec<u8>) {
    let mut pos = 0;
    while bytes[pos..].starts_with(b"X-Postern-") {
        let nl = bytes[pos..].iter().position(|&b| b == b'\n').unwrap();
        pos += nl + 1;
    }
    (
        String::from_utf8_lossy(&bytes[..pos]).into_owned(),
        bytes[pos..].to_vec(),
    )
}

/// Find the one captured message whose body contains `marker`, waiting a little.
pub fn find_captured(dir: &Path, marker: &str) -> (String, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for f in maildir_files(dir) {
            let bytes = std::fs::read(&f).unwrap();
            if bytes.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                return split_capture(&bytes);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no captured message contains {marker}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run a Python script (stdin) with args; returns (status ok, stdout, stderr).
pub fn python(script: &str, args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new("python3")
        .arg("-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run a command; returns (status ok, stdout, stderr).
pub fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    run_env(cmd, args, &[])
}

/// Run a command with extra environment variables.
pub fn run_env(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(cmd)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (is it installed? tests/run installs it)"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw line-oriented client for SMTP/IMAP dialogues.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).unwrap();
    }

    /// One line (without CRLF); None on EOF.
    pub fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                return Some(s);
            }
            let mut tmp = [0u8; 4096];
            match self.stream.read(&mut tmp) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// A full SMTP reply (all lines), joined with '\n'.
    pub fn reply(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let l = self
                .line()
                .unwrap_or_else(|| panic!("connection closed; so far: {out:?}"));
            let last = l.len() < 4 || l.as_bytes()[3] == b' ';
            out.push(l);
            if last {
                return out.join("\n");
            }
        }
    }

    /// Send a line and read the SMTP reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Send a line and read one line back (POP3, IMAP untagged-free).
    pub fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.line()
            .unwrap_or_else(|| panic!("connection closed after {line:?}"))
    }

    /// True if the server closed the connection (EOF) within the timeout.
    pub fn closed(&mut self) -> bool {
        self.line().is_none()
    }
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// An HTTP response: status, headers (lower-case names), body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), with
/// extra headers; chunked bodies are decoded.
pub fn http_with(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..nl])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            rest = &rest[nl + 2..];
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n + 2..];
        }
        body = out;
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

pub fn http(method: &str, addr: SocketAddr, path: &str, body: &[u8]) -> HttpResponse {
    http_with(method, addr, path, body, &[])
}
