//! The Postern under test: the release binary (`CARGO_BIN_EXE_postern`) as a
//! separate process with its own temp dir and config, as a user runs it.
//! Bound addresses come from its `listening proto=… addr=…` log lines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub const BIN: &str = env!("CARGO_BIN_EXE_postern");

/// The binary under test: `POSTERN_BENCH_BIN` (to compare another build,
/// e.g. a patched one) or the release build of this tree.
pub fn bin() -> String {
    std::env::var("POSTERN_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// Local password of the users `app` and `tok` (hash below, argon2id).
pub const LOCAL_PASSWORD: &str = "test-pass";
const LOCAL_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$jtjte1sjA6VjHO6XRY7TGA$VSF/br51eDECkd7XSn4u+Us04AOeBmtmP3PB0T9dnUA";

/// What Postern relays to: one upstream's SMTP and IMAP servers.
pub struct Upstream<'a> {
    pub email: &'a str,
    /// Port of the implicit-TLS submission server (465-like).
    pub smtp_port: u16,
    /// Port of the implicit-TLS IMAP server (993-like).
    pub imap_port: u16,
    /// Trust anchor for the upstream's certificate.
    pub ca_file: &'a Path,
    /// File whose content is a valid bearer token for `email`.
    pub token_file: &'a Path,
}

pub struct Postern {
    child: Option<Child>,
    /// Config, data_dir and log; removed when Postern is dropped.
    dir: tempfile::TempDir,
    password: String,
    pub log: PathBuf,
    pub smtp: SocketAddr,
    pub imap: SocketAddr,
}

/// The config: plaintext SMTP listener (a legacy app on loopback), implicit
/// TLS IMAP listener (TLS on both hops), user `app` → account `up`
/// (app password, SMTP + IMAP), user `tok` → account `uptok` (XOAUTH2 with
/// a token from `token_command`, cached by Postern).
pub fn config(up: &Upstream, cert: &Path, key: &Path, log_level: &str) -> String {
    format!(
        r#"data_dir = "var"
hostname = "localhost"
log_level = "{log_level}"

[smtp]
listen = "127.0.0.1:0"
tls = "none"

[imap]
listen = "127.0.0.1:0"
tls = "implicit"

[tls]
cert = "{cert}"
key = "{key}"

[users.app]
password_hash = "{LOCAL_HASH}"
send_via = "up"
read_via = "up"

[users.tok]
password_hash = "{LOCAL_HASH}"
send_via = "up"
read_via = "uptok"

[accounts.up]
email = "{email}"
smtp = {{ host = "localhost", port = {smtp}, tls = "implicit" }}
imap = {{ host = "localhost", port = {imap}, tls = "implicit" }}
ca_file = "{ca}"
auth = "password"
password_env = "BENCH_UPSTREAM_PASSWORD"
daily_limit = 1000000000
# As many connections as the load generator's sessions (a custom server
# would get 4).
max_connections = 64

[accounts.uptok]
email = "{email}"
imap = {{ host = "localhost", port = {imap}, tls = "implicit" }}
ca_file = "{ca}"
auth = "oauth2"
token_command = "cat {tok}"

[limits]
max_connections = 30000
"#,
        cert = cert.display(),
        key = key.display(),
        email = up.email,
        smtp = up.smtp_port,
        imap = up.imap_port,
        ca = up.ca_file.display(),
        tok = up.token_file.display(),
    )
}

impl Postern {
    pub fn start(config: &str, password: &str) -> anyhow::Result<Postern> {
        let dir = tempfile::Builder::new()
            .prefix("postern-bench-")
            .tempdir()?;
        let log = dir.path().join("postern.log");
        let mut p = Postern {
            child: None,
            dir,
            password: password.to_owned(),
            log,
            smtp: "0.0.0.0:0".parse().unwrap(),
            imap: "0.0.0.0:0".parse().unwrap(),
        };
        p.spawn(config)?;
        Ok(p)
    }

    /// Stop (SIGKILL) and start again on the same data_dir with `config`.
    pub fn restart(&mut self, config: &str) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn(config)
    }

    /// The data_dir (`var` beside the config).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    fn spawn(&mut self, config: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join("postern.toml");
        std::fs::write(&path, config)?;
        let logf = std::fs::File::create(&self.log)?;
        let bin = bin();
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&path)
            .arg("run")
            .env_remove("RUST_LOG")
            .env("BENCH_UPSTREAM_PASSWORD", &self.password)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("spawn {bin}"))?;
        self.child = Some(child);
        let p = self;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let found = listeners(&text);
            let smtp = found.iter().find(|(p, _)| p == "smtp").map(|x| x.1);
            let imap = found.iter().find(|(p, _)| p == "imap").map(|x| x.1);
            if let (Some(s), Some(i)) = (smtp, imap) {
                p.smtp = s;
                p.imap = i;
                return Ok(());
            }
            if let Some(st) = p.child.as_mut().unwrap().try_wait()? {
                bail!("postern exited early ({st}):\n{text}");
            }
            if Instant::now() > deadline {
                bail!("postern did not start within 30 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The last lines of Postern's log, for error reports.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Count log lines at WARN or ERROR (signs of trouble during a run).
    pub fn warnings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count()
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

fn listeners(log: &str) -> Vec<(String, SocketAddr)> {
    log.lines()
        .filter(|l| l.contains(" listening "))
        .filter_map(|l| {
            let proto = l.split("proto=\"").nth(1)?.split('"').next()?.to_owned();
            let addr = l.split(" addr=").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((proto, addr))
        })
        .collect()
}
