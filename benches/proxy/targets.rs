//! Targets: where each upstream is (the test Dovecot, the in-process memory upstream) and how to log in; the Postern in front of it.

use crate::*;

pub struct Target {
    pub name: &'static str,
    pub smtp: Endpoint,
    pub imap: Endpoint,
    pub email: String,
    pub password: String,
    pub token: String,
    pub token_file: PathBuf,
    pub ca: PathBuf,
    pub fetch_cmd: String,
    pub fetch_expect: Arc<Vec<u8>>,
    /// A 32 MiB message's FETCH and bytes (Dovecot only).
    pub fetch_big: Option<(String, Arc<Vec<u8>>)>,
    pub sink_dir: Option<PathBuf>,
    pub in_process: bool,
}

pub fn env(var: &str) -> anyhow::Result<String> {
    std::env::var(var).with_context(|| {
        format!("{var} is not set: start the test peers first (benches/run does), or pass --upstream memory")
    })
}

/// The 1 MiB message (exact size, CRLF lines) served by both upstreams.
pub fn fetch_message() -> Vec<u8> {
    bench_message(FETCH_SIZE, FETCH_MARK)
}

/// A message of exactly `size` bytes marked by `mark` in X-Postern-Bench.
pub fn bench_message(size: usize, mark: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <postern-bench@example.test>\r\nTo: <{DOVECOT_USER}>\r\nSubject: postern bench {} KiB\r\nX-Postern-Bench: {mark}\r\nMessage-ID: <{mark}@example.test>\r\n\r\n",
        size / 1024
    )
    .into_bytes();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n";
    while m.len() + line.len() <= size - 2 {
        m.extend_from_slice(line);
    }
    while m.len() < size - 2 {
        m.push(b'.');
    }
    m.extend_from_slice(b"\r\n");
    assert_eq!(m.len(), size);
    m
}

pub async fn dovecot_target(
    tls: &tlsutil::Material,
    dir: &Path,
    message: Arc<Vec<u8>>,
) -> anyhow::Result<Target> {
    let imaps: u16 = env("DOVECOT_IMAPS_PORT")?.parse()?;
    let subs: u16 = env("DOVECOT_SUBMISSIONS_PORT")?.parse()?;
    let ca = PathBuf::from(env("PEERS_CA")?);
    let sink = PathBuf::from(env("SINK_DIR")?);
    let ep = |port| Endpoint {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        tls: Some(tls.client.clone()),
    };
    let imap = ep(imaps);
    // A bearer token the test introspection endpoint knows.
    let token = format!("postern-bench-{}-{}", std::process::id(), now_nanos());
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/token");
    let st = std::process::Command::new(&tool)
        .args(["mint", &token, DOVECOT_USER])
        .status()
        .with_context(|| format!("{}", tool.display()))?;
    if !st.success() {
        bail!("tests/peers/token mint failed");
    }
    let token_file = dir.join("dovecot.token");
    std::fs::write(&token_file, &token)?;
    // The 1 MiB message: found by its header, appended once.
    let mut c = Imap::connect(&imap).await.context("Dovecot IMAPS")?;
    let d = c
        .login(&Login::Password(
            DOVECOT_USER.into(),
            DOVECOT_PASSWORD.into(),
        ))
        .await?;
    if !d.ok {
        bail!("Dovecot login as {DOVECOT_USER}: {}", d.text);
    }
    c.command("SELECT INBOX", None).await?;
    let uid = find_or_append(&mut c, FETCH_MARK, &message).await?;
    let big = Arc::new(bench_message(32 * FETCH_SIZE, FETCH_MARK_BIG));
    let big_uid = find_or_append(&mut c, FETCH_MARK_BIG, &big).await?;
    c.logout().await;
    Ok(Target {
        name: "dovecot",
        smtp: ep(subs),
        imap,
        email: DOVECOT_USER.into(),
        password: DOVECOT_PASSWORD.into(),
        token,
        token_file,
        ca,
        fetch_cmd: format!("UID FETCH {uid} BODY.PEEK[]"),
        fetch_expect: message,
        fetch_big: Some((format!("UID FETCH {big_uid} BODY.PEEK[]"), big)),
        sink_dir: Some(sink),
        in_process: false,
    })
}

/// The UID of the message marked `mark`, appended once when missing.
async fn find_or_append(c: &mut Imap, mark: &str, message: &[u8]) -> anyhow::Result<u32> {
    let find = format!("UID SEARCH HEADER X-Postern-Bench {mark}");
    if let Some(uid) = search_uid(&c.command(&find, None).await?) {
        return Ok(uid);
    }
    let d = c.append("INBOX", message).await?;
    if !d.ok {
        bail!(
            "APPEND of the {} KiB message: {}",
            message.len() / 1024,
            d.text
        );
    }
    search_uid(&c.command(&find, None).await?)
        .with_context(|| format!("the {mark} message is not in the mailbox after APPEND"))
}

pub fn search_uid(d: &clients::Done) -> Option<u32> {
    d.untagged
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| {
            l.split_whitespace()
                .filter_map(|n| n.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .max()
}

pub fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

pub async fn memory_target(
    tls: &tlsutil::Material,
    dir: &Path,
    message: Arc<Vec<u8>>,
    upstream_rt: &tokio::runtime::Handle,
) -> anyhow::Result<(Target, memory::Memory)> {
    let m = upstream_rt
        .spawn(memory::start(tls.server.clone(), message.clone()))
        .await??;
    let ep = |addr| Endpoint {
        addr,
        tls: Some(tls.client.clone()),
    };
    let token_file = dir.join("memory.token");
    std::fs::write(&token_file, "memory-token")?;
    let t = Target {
        name: "memory",
        smtp: ep(m.smtp),
        imap: ep(m.imap),
        email: "bench@example.test".into(),
        password: "memory-password".into(),
        token: "memory-token".into(),
        token_file,
        ca: tls.cert_pem.clone(),
        fetch_cmd: "UID FETCH 1 BODY.PEEK[]".into(),
        fetch_expect: message,
        fetch_big: None,
        sink_dir: None,
        in_process: true,
    };
    Ok((t, m))
}

pub fn start_postern(
    t: &Target,
    tls: &tlsutil::Material,
    s: &Settings,
) -> anyhow::Result<postern::Postern> {
    let up = postern::Upstream {
        email: &t.email,
        smtp_port: t.smtp.addr.port(),
        imap_port: t.imap.addr.port(),
        ca_file: &t.ca,
        token_file: &t.token_file,
    };
    let cfg = postern::config(&up, &tls.cert_pem, &tls.key_pem, &s.postern_log);
    postern::Postern::start(&cfg, &t.password)
}

/// Postern's side of a target: plaintext SMTP, implicit-TLS IMAP.
pub fn via_endpoints(p: &postern::Postern, tls: &tlsutil::Material) -> (Endpoint, Endpoint) {
    (
        Endpoint {
            addr: p.smtp,
            tls: None,
        },
        Endpoint {
            addr: p.imap,
            tls: Some(tls.client.clone()),
        },
    )
}
