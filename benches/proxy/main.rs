//! Proxy benchmark: what Postern costs on top of talking to the
//! server directly, measured in the same run.
//!
//! Two upstreams on 127.0.0.1: the Dovecot of the test peers (realistic:
//! submission + IMAP, implicit TLS) and an in-process SMTP sink + IMAP server
//! serving from memory over TLS (stress case: the 2 cores are shared by the
//! load generator, the upstream and Postern). A release `postern` process
//! sits in front of each. For each upstream and figure: the direct path, the
//! path through Postern, the ratio, and Postern's own CPU time (from
//! /proc/PID/stat) per message and per MiB.
//!
//! Run: `benches/run` (starts the peers when needed), or
//! `tests/peers/start && source tests/peers/run/env && cargo bench --bench proxy`.
//! Options after `--`: see `usage()`. BENCHMARKS.md explains the output.

// A test or bench crate has no public API: `pub` in its modules means
// "shared between its files".
#![allow(unreachable_pub)]

mod clients;
mod memory;
mod postern;
mod procfs;
mod tlsutil;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clients::{Endpoint, Imap, Login, Smtp};
use tokio::task::JoinSet;

const SMTP_FROM: &str = "postern-bench@example.test";
const SMTP_TO: &str = "sink@example.test";
const SMTP_SIZE: usize = 10 * 1024;
const FETCH_SIZE: usize = 1024 * 1024;
/// Header that marks the benchmark's 1 MiB message in the Dovecot mailbox.
const FETCH_MARK: &str = "postern-bench-fetch-1mib-v1";
/// The Dovecot test user the benchmark uses (no test uses it).
const DOVECOT_USER: &str = "u40@example.test";
const DOVECOT_PASSWORD: &str = "pw-u40";
const CLIENT_THREADS: &str = "bench-client";
const UPSTREAM_THREADS: &str = "bench-upstrm";

fn usage() -> &'static str {
    "cargo bench --bench proxy -- [options]
  --quick               short windows and few logins (a smoke test, ~30 s)
  --upstream LIST       dovecot,memory (default both; dovecot needs the test peers' env)
  --only LIST           smtp,fetch,login,idle (default: smtp,fetch,login; idle only with --idle)
  --idle N              also hold N logged-in idle IMAP sessions through Postern (e.g. 10000)
  --sessions LIST       concurrent SMTP sessions (default 1,16,64)
  --secs S              measured seconds per SMTP/FETCH figure and path (default 4; quick 1)
  --rounds R            split each of them into R alternating direct/via rounds, in
                        ABBA order, so drifting background load cancels (default 4; quick 1)
  --logins N            timed logins per path and kind (default 200; quick 20)
  --fetch-sessions N    concurrent FETCH sessions (default 1)
  --postern-log LEVEL   Postern's log_level (default info, the shipped default)
  --out FILE            also write the report (markdown) to FILE"
}

#[derive(Clone)]
struct Settings {
    quick: bool,
    /// Started by `cargo test`: a tiny run whose report is checked for
    /// every figure (never for values).
    smoke: bool,
    upstreams: Vec<String>,
    only: BTreeSet<String>,
    idle: Option<usize>,
    sessions: Vec<usize>,
    warm: Duration,
    secs: Duration,
    rounds: usize,
    logins: usize,
    login_warm: usize,
    fetch_sessions: usize,
    postern_log: String,
    out: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Option<Settings>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = Settings {
        quick: false,
        smoke: false,
        upstreams: vec!["dovecot".into(), "memory".into()],
        only: ["smtp", "fetch", "login"]
            .iter()
            .map(|x| x.to_string())
            .collect(),
        idle: None,
        sessions: vec![1, 16, 64],
        warm: Duration::from_secs(1),
        secs: Duration::from_secs(4),
        rounds: 4,
        logins: 200,
        login_warm: 5,
        fetch_sessions: 1,
        postern_log: "info".into(),
        out: None,
    };
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench`:
        // a smoke run against the in-process upstream (no peers needed), in
        // short windows, to prove the benchmark works; `main` checks that
        // its report holds every figure.
        println!("proxy benchmark: smoke run (the real one: `benches/run`)");
        s.smoke = true;
        s.upstreams = vec!["memory".into()];
        s.sessions = vec![2];
        s.warm = Duration::from_millis(100);
        s.secs = Duration::from_millis(300);
        s.rounds = 2;
        s.logins = 3;
        s.login_warm = 1;
        return Ok(Some(s));
    }
    let mut secs = None;
    let mut rounds = None;
    let mut logins = None;
    let mut only_given = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--bench" => {}
            "--quick" => s.quick = true,
            "--upstream" => s.upstreams = val()?.split(',').map(str::to_owned).collect(),
            "--only" => {
                s.only = val()?.split(',').map(str::to_owned).collect();
                only_given = true;
            }
            "--idle" => s.idle = Some(val()?.parse()?),
            "--sessions" => {
                s.sessions = val()?
                    .split(',')
                    .map(|x| x.parse())
                    .collect::<Result<_, _>>()?
            }
            "--secs" => secs = Some(val()?.parse::<f64>()?),
            "--rounds" => rounds = Some(val()?.parse::<usize>()?.max(1)),
            "--logins" => logins = Some(val()?.parse::<usize>()?),
            "--fetch-sessions" => s.fetch_sessions = val()?.parse()?,
            "--postern-log" => s.postern_log = val()?,
            "--out" => s.out = Some(val()?.into()),
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(None);
            }
            other => bail!("unknown option {other}\n{}", usage()),
        }
    }
    if s.quick {
        s.warm = Duration::from_millis(300);
        s.secs = Duration::from_secs(1);
        s.rounds = 1;
        s.logins = 20;
        s.login_warm = 2;
    }
    if let Some(x) = secs {
        s.secs = Duration::from_secs_f64(x);
    }
    if let Some(r) = rounds {
        s.rounds = r;
    }
    if let Some(n) = logins {
        s.logins = n;
    }
    if s.idle.is_some() && !only_given {
        s.only.insert("idle".into());
    }
    for u in &s.upstreams {
        if u != "dovecot" && u != "memory" {
            bail!("unknown upstream {u} (dovecot, memory)");
        }
    }
    Ok(Some(s))
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

struct Row {
    upstream: String,
    figure: String,
    direct: f64,
    via: f64,
    decimals: usize,
    note: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    targets: Vec<String>,
}

impl Report {
    fn row(
        &mut self,
        upstream: &str,
        figure: impl Into<String>,
        direct: f64,
        via: f64,
        decimals: usize,
        note: impl Into<String>,
    ) {
        self.rows.push(Row {
            upstream: upstream.into(),
            figure: figure.into(),
            direct,
            via,
            decimals,
            note: note.into(),
        });
    }

    fn find(&self, upstream: &str, figure: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.upstream == upstream && r.figure == figure)
    }

    fn render(&self, header: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{header}");
        let _ = writeln!(
            o,
            "| upstream | figure | direct | via Postern | via/direct | note |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|---:|---|");
        for r in &self.rows {
            let f = |v: f64| {
                if v.is_finite() {
                    format!("{:.*}", r.decimals, v)
                } else {
                    "–".into()
                }
            };
            let ratio = if r.direct.is_finite() && r.via.is_finite() && r.direct != 0.0 {
                format!("{:.2}", r.via / r.direct)
            } else {
                "–".into()
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                r.upstream,
                r.figure,
                f(r.direct),
                f(r.via),
                ratio,
                r.note
            );
        }
        if !self.targets.is_empty() {
            let _ = writeln!(o, "\nTargets (measured, not asserted):");
            for t in &self.targets {
                let _ = writeln!(o, "- {t}");
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(o, "\nNotes:");
            for n in &self.notes {
                let _ = writeln!(o, "- {n}");
            }
        }
        o
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted durations, in ms.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    ms(sorted[i.min(sorted.len() - 1)])
}

/// CPU seconds of Postern, the load generator's threads and the in-process
/// upstream's threads.
#[derive(Clone, Copy, Default)]
struct Cpu {
    postern: f64,
    client: f64,
    upstream: f64,
}

impl Cpu {
    fn now(pid: u32) -> Cpu {
        Cpu {
            postern: procfs::process_cpu(pid),
            client: procfs::threads_cpu(CLIENT_THREADS),
            upstream: procfs::threads_cpu(UPSTREAM_THREADS),
        }
    }
    fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            postern: self.postern + other.postern,
            client: self.client + other.client,
            upstream: self.upstream + other.upstream,
        }
    }
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            postern: self.postern - before.postern,
            client: self.client - before.client,
            upstream: self.upstream - before.upstream,
        }
    }
}

// ---------------------------------------------------------------------------
// Targets: where each upstream is and how to log in
// ---------------------------------------------------------------------------

struct Target {
    name: &'static str,
    smtp: Endpoint,
    imap: Endpoint,
    email: String,
    password: String,
    token: String,
    token_file: PathBuf,
    ca: PathBuf,
    fetch_cmd: String,
    fetch_expect: Arc<Vec<u8>>,
    sink_dir: Option<PathBuf>,
    in_process: bool,
}

fn env(var: &str) -> anyhow::Result<String> {
    std::env::var(var).with_context(|| {
        format!("{var} is not set: start the test peers first (benches/run does), or pass --upstream memory")
    })
}

/// The 1 MiB message (exact size, CRLF lines) served by both upstreams.
fn fetch_message() -> Vec<u8> {
    let mut m = format!(
        "From: <postern-bench@example.test>\r\nTo: <{DOVECOT_USER}>\r\nSubject: postern bench 1 MiB\r\nX-Postern-Bench: {FETCH_MARK}\r\nMessage-ID: <{FETCH_MARK}@example.test>\r\n\r\n"
    )
    .into_bytes();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n";
    while m.len() + line.len() <= FETCH_SIZE - 2 {
        m.extend_from_slice(line);
    }
    while m.len() < FETCH_SIZE - 2 {
        m.push(b'.');
    }
    m.extend_from_slice(b"\r\n");
    assert_eq!(m.len(), FETCH_SIZE);
    m
}

async fn dovecot_target(
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
    let find = format!("UID SEARCH HEADER X-Postern-Bench {FETCH_MARK}");
    let mut uid = search_uid(&c.command(&find, None).await?);
    if uid.is_none() {
        let d = c.append("INBOX", &message).await?;
        if !d.ok {
            bail!("APPEND of the 1 MiB message: {}", d.text);
        }
        uid = search_uid(&c.command(&find, None).await?);
    }
    let uid = uid.context("the 1 MiB message is not in the mailbox after APPEND")?;
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
        sink_dir: Some(sink),
        in_process: false,
    })
}

fn search_uid(d: &clients::Done) -> Option<u32> {
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

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

async fn memory_target(
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
        sink_dir: None,
        in_process: true,
    };
    Ok((t, m))
}

fn start_postern(
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
fn via_endpoints(p: &postern::Postern, tls: &tlsutil::Material) -> (Endpoint, Endpoint) {
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

// ---------------------------------------------------------------------------
// 1. SMTP relay
// ---------------------------------------------------------------------------

/// One measured window of one path.
struct SmtpWindow {
    lat: Vec<Duration>,
    secs: f64,
    cpu: Cpu,
    error: Option<String>,
}

struct SmtpResult {
    rate: f64,
    p50: f64,
    p99: f64,
    n: usize,
    cpu: Cpu,
    error: Option<String>,
}

async fn smtp_run(
    ep: &Endpoint,
    user: &str,
    pass: &str,
    sessions: usize,
    (warm, secs): (Duration, Duration),
    stuffed: Arc<Vec<u8>>,
    pid: u32,
) -> anyhow::Result<SmtpWindow> {
    let mut set = JoinSet::new();
    for _ in 0..sessions {
        let (ep, user, pass) = (ep.clone(), user.to_owned(), pass.to_owned());
        set.spawn(async move { Smtp::open(&ep, &user, &pass).await });
    }
    let mut conns = Vec::new();
    while let Some(r) = set.join_next().await {
        conns.push(r?.context("SMTP session setup")?);
    }
    let from = Instant::now() + warm;
    let end = from + secs;
    let mut set = JoinSet::new();
    for mut c in conns {
        let stuffed = stuffed.clone();
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut error = None;
            while Instant::now() < end {
                match c.send(SMTP_FROM, SMTP_TO, &stuffed).await {
                    Ok(d) => {
                        let t = Instant::now();
                        if t >= from && t <= end {
                            lat.push(d);
                        }
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            if error.is_none() {
                c.quit().await;
            }
            (lat, error)
        });
    }
    tokio::time::sleep_until(from.into()).await;
    let c0 = Cpu::now(pid);
    tokio::time::sleep_until(end.into()).await;
    let cpu = Cpu::now(pid).since(c0);
    let mut lat = Vec::new();
    let mut error = None;
    while let Some(r) = set.join_next().await {
        let (l, e) = r?;
        lat.extend(l);
        if error.is_none() {
            error = e;
        }
    }
    Ok(SmtpWindow {
        lat,
        secs: secs.as_secs_f64(),
        cpu,
        error,
    })
}

/// The windows of one path, as one result.
fn smtp_result(windows: Vec<SmtpWindow>) -> SmtpResult {
    let mut lat = Vec::new();
    let (mut secs, mut cpu, mut error) = (0.0, Cpu::default(), None);
    let debug = std::env::var_os("BENCH_DEBUG").is_some();
    let mut per_round = Vec::new();
    for w in windows {
        per_round.push(format!("{:.0}", w.lat.len() as f64 / w.secs));
        lat.extend(w.lat);
        secs += w.secs;
        cpu = cpu.plus(w.cpu);
        error = error.or(w.error);
    }
    lat.sort();
    if debug {
        progress(format!("msgs/s per round: {}", per_round.join(" ")));
        let q: Vec<String> = [1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0]
            .iter()
            .map(|p| format!("p{p}={:.3}", pct(&lat, *p)))
            .collect();
        progress(format!("latency ms: {}", q.join(" ")));
    }
    SmtpResult {
        rate: lat.len() as f64 / secs,
        p50: pct(&lat, 50.0),
        p99: pct(&lat, 99.0),
        n: lat.len(),
        cpu,
        error,
    }
}

/// Whether round `i` measures via Postern first (ABBA: D V, V D, D V, …),
/// and the warm-up and measured length of each of its two windows.
fn round_plan(s: &Settings, i: usize) -> (bool, (Duration, Duration)) {
    let warm = if i == 0 { s.warm } else { s.warm / 2 };
    (i % 2 == 1, (warm, s.secs / s.rounds as u32))
}

async fn smtp_section(
    t: &Target,
    tls: &tlsutil::Material,
    s: &Settings,
    r: &mut Report,
) -> anyhow::Result<()> {
    let (_, stuffed) = clients::message(SMTP_SIZE);
    let stuffed = Arc::new(stuffed);
    let per_msg_mib = SMTP_SIZE as f64 / (1024.0 * 1024.0);
    for &n in &s.sessions {
        // A fresh Postern per figure: every send through an account is
        // counted in its quota store, and a figure should not pay for the
        // rows the figures before it left (a real account's window holds at
        // most its daily limit).
        let p = start_postern(t, tls, s)?;
        let (direct, via) = match smtp_pair(t, &p, tls, s, n, &stuffed).await {
            Ok(x) => x,
            Err(e) => bail!(
                "{n} sessions: {e:#}\n--- postern log (last lines) ---\n{}",
                p.log_tail(30)
            ),
        };
        check_warnings(&p, &format!("{} SMTP {n} sessions", t.name), r);
        drop(p);
        progress(format!(
            "{} smtp {n} sessions: direct {:.0} msg/s (p50 {:.2} ms), via {:.0} msg/s (p50 {:.2} ms)",
            t.name, direct.rate, direct.p50, via.rate, via.p50
        ));
        let mut note = String::new();
        for (path, res) in [("direct", &direct), ("via", &via)] {
            if let Some(e) = &res.error {
                let _ = write!(note, "{path}: a session failed: {} ", e.replace('|', "/"));
            }
        }
        let label = if n == 1 {
            "session".to_string()
        } else {
            "sessions".to_string()
        };
        r.row(
            t.name,
            format!("SMTP msgs/s, 10 KiB, {n} {label}"),
            direct.rate,
            via.rate,
            0,
            note,
        );
        r.row(
            t.name,
            format!("SMTP end-of-DATA→250 p50 ms, {n} {label}"),
            direct.p50,
            via.p50,
            2,
            "",
        );
        r.row(
            t.name,
            format!("SMTP end-of-DATA→250 p99 ms, {n} {label}"),
            direct.p99,
            via.p99,
            2,
            "",
        );
        let per = |cpu: f64, res: &SmtpResult| {
            if res.n > 0 {
                cpu * 1e6 / res.n as f64
            } else {
                f64::NAN
            }
        };
        r.row(
            t.name,
            format!("CPU µs/msg: client (direct) vs Postern (via), {n} {label}"),
            per(direct.cpu.client, &direct),
            per(via.cpu.postern, &via),
            0,
            format!(
                "Postern {:.1} ms/MiB; client via Postern {:.0} µs/msg{}",
                per(via.cpu.postern, &via) / 1e3 / per_msg_mib,
                per(via.cpu.client, &via),
                if t.in_process {
                    format!(
                        "; in-process upstream {:.0} (direct) / {:.0} (via) µs/msg",
                        per(direct.cpu.upstream, &direct),
                        per(via.cpu.upstream, &via)
                    )
                } else {
                    String::new()
                }
            ),
        );
    }
    if let Some(dir) = &t.sink_dir {
        let removed = clean_sink(dir);
        progress(format!(
            "removed {removed} benchmark messages from the test sink"
        ));
    }
    Ok(())
}

/// Direct and through Postern, with `n` concurrent sessions, in alternating
/// rounds (see `round_plan`).
async fn smtp_pair(
    t: &Target,
    p: &postern::Postern,
    tls: &tlsutil::Material,
    s: &Settings,
    n: usize,
    stuffed: &Arc<Vec<u8>>,
) -> anyhow::Result<(SmtpResult, SmtpResult)> {
    let (via_smtp, _) = via_endpoints(p, tls);
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for i in 0..s.rounds {
        let (via_first, window) = round_plan(s, i);
        for is_via in [via_first, !via_first] {
            if is_via {
                let w = smtp_run(
                    &via_smtp,
                    "app",
                    postern::LOCAL_PASSWORD,
                    n,
                    window,
                    stuffed.clone(),
                    p.pid(),
                )
                .await
                .context("via Postern")?;
                via.push(w);
            } else {
                let w = smtp_run(
                    &t.smtp,
                    &t.email,
                    &t.password,
                    n,
                    window,
                    stuffed.clone(),
                    p.pid(),
                )
                .await
                .context("direct")?;
                direct.push(w);
            }
        }
    }
    Ok((smtp_result(direct), smtp_result(via)))
}

/// Remove the messages this benchmark sent from the test peers' sink (their
/// sidecar names the benchmark's sender), so tests that scan it stay fast.
fn clean_sink(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let Ok(meta) = std::fs::read_to_string(&p) else {
            continue;
        };
        if meta.contains(SMTP_FROM) {
            let _ = std::fs::remove_file(p.with_extension("eml"));
            let _ = std::fs::remove_file(&p);
            n += 1;
        }
    }
    n
}

// ---------------------------------------------------------------------------
// 2. IMAP FETCH throughput
// ---------------------------------------------------------------------------

struct FetchResult {
    mib_s: f64,
    mib: f64,
    secs: f64,
    cpu: Cpu,
}

impl FetchResult {
    fn plus(self, other: FetchResult) -> FetchResult {
        let (mib, secs) = (self.mib + other.mib, self.secs + other.secs);
        FetchResult {
            mib_s: mib / secs,
            mib,
            secs,
            cpu: self.cpu.plus(other.cpu),
        }
    }
}

async fn fetch_run(
    ep: &Endpoint,
    how: &Login,
    t: &Target,
    (warm, secs): (Duration, Duration),
    fetch_sessions: usize,
    pid: u32,
) -> anyhow::Result<FetchResult> {
    let mut sessions = Vec::new();
    for _ in 0..fetch_sessions {
        let mut c = Imap::connect(ep).await?;
        let d = c.login(how).await?;
        if !d.ok {
            bail!("login: {}", d.text);
        }
        let d = c.command("SELECT INBOX", None).await?;
        if !d.ok {
            bail!("SELECT: {}", d.text);
        }
        // One checked FETCH: the bytes arrive unchanged.
        let mut got = Vec::new();
        let d = c.command(&t.fetch_cmd, Some(&mut got)).await?;
        if !d.ok || got != *t.fetch_expect {
            bail!(
                "FETCH returned {} bytes, not the {} expected ({})",
                got.len(),
                t.fetch_expect.len(),
                d.text
            );
        }
        sessions.push(c);
    }
    let from = Instant::now() + warm;
    let end = from + secs;
    let mut set = JoinSet::new();
    for mut c in sessions {
        let cmd = t.fetch_cmd.clone();
        set.spawn(async move {
            let mut bytes = 0u64;
            while Instant::now() < end {
                let d = c.command(&cmd, None).await?;
                if !d.ok {
                    return Err(anyhow::anyhow!("FETCH: {}", d.text));
                }
                let now = Instant::now();
                if now >= from && now <= end {
                    bytes += d.literal_bytes;
                }
            }
            c.logout().await;
            Ok::<u64, anyhow::Error>(bytes)
        });
    }
    tokio::time::sleep_until(from.into()).await;
    let c0 = Cpu::now(pid);
    tokio::time::sleep_until(end.into()).await;
    let cpu = Cpu::now(pid).since(c0);
    let mut bytes = 0;
    while let Some(r) = set.join_next().await {
        bytes += r??;
    }
    let mib = bytes as f64 / (1024.0 * 1024.0);
    Ok(FetchResult {
        mib_s: mib / secs.as_secs_f64(),
        mib,
        secs: secs.as_secs_f64(),
        cpu,
    })
}

async fn fetch_section(
    t: &Target,
    p: &postern::Postern,
    tls: &tlsutil::Material,
    s: &Settings,
    r: &mut Report,
) -> anyhow::Result<()> {
    let (_, via_imap) = via_endpoints(p, tls);
    let (mut direct, mut via): (Option<FetchResult>, Option<FetchResult>) = (None, None);
    for i in 0..s.rounds {
        let (via_first, window) = round_plan(s, i);
        for is_via in [via_first, !via_first] {
            let (ep, login, acc) = if is_via {
                (
                    &via_imap,
                    Login::Password("app".into(), postern::LOCAL_PASSWORD.into()),
                    &mut via,
                )
            } else {
                (
                    &t.imap,
                    Login::Password(t.email.clone(), t.password.clone()),
                    &mut direct,
                )
            };
            let w = fetch_run(ep, &login, t, window, s.fetch_sessions, p.pid()).await?;
            *acc = Some(match acc.take() {
                Some(a) => a.plus(w),
                None => w,
            });
        }
    }
    let (Some(direct), Some(via)) = (direct, via) else {
        bail!("no FETCH rounds ran");
    };
    progress(format!(
        "{} fetch: direct {:.0} MiB/s, via {:.0} MiB/s",
        t.name, direct.mib_s, via.mib_s
    ));
    let n = s.fetch_sessions;
    let sess = if n == 1 {
        "1 session".to_string()
    } else {
        format!("{n} sessions")
    };
    r.row(
        t.name,
        format!("IMAP FETCH MiB/s, 1 MiB message, TLS both hops, {sess}"),
        direct.mib_s,
        via.mib_s,
        0,
        "",
    );
    let per = |cpu: f64, res: &FetchResult| {
        if res.mib > 0.0 {
            cpu * 1e3 / res.mib
        } else {
            f64::NAN
        }
    };
    r.row(
        t.name,
        "CPU ms/MiB: client (direct) vs Postern (via), FETCH",
        per(direct.cpu.client, &direct),
        per(via.cpu.postern, &via),
        2,
        format!(
            "client via Postern {:.2} ms/MiB{}",
            per(via.cpu.client, &via),
            if t.in_process {
                format!(
                    "; in-process upstream {:.2} (direct) / {:.2} (via) ms/MiB",
                    per(direct.cpu.upstream, &direct),
                    per(via.cpu.upstream, &via)
                )
            } else {
                String::new()
            }
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Login latency
// ---------------------------------------------------------------------------

async fn login_section(
    t: &Target,
    p: &postern::Postern,
    tls: &tlsutil::Material,
    s: &Settings,
    r: &mut Report,
) -> anyhow::Result<()> {
    let (_, via_imap) = via_endpoints(p, tls);
    let kinds = [
        (
            "app password",
            Login::Password(t.email.clone(), t.password.clone()),
            Login::Password("app".into(), postern::LOCAL_PASSWORD.into()),
        ),
        (
            "XOAUTH2, cached token",
            Login::XOAuth2(t.email.clone(), t.token.clone()),
            Login::Password("tok".into(), postern::LOCAL_PASSWORD.into()),
        ),
    ];
    for (kind, direct_how, via_how) in kinds {
        let mut direct = Vec::new();
        let mut via = Vec::new();
        // Warm-up (argon2 check, token fetch, TLS session caches), then
        // direct and via alternate so drift hits both alike.
        for i in 0..(s.login_warm + s.logins) {
            for (ep, how, out) in [
                (&t.imap, &direct_how, &mut direct),
                (&via_imap, &via_how, &mut via),
            ] {
                let (d, c) = clients::timed_login(ep, how)
                    .await
                    .with_context(|| format!("{} login ({kind}) via {}", t.name, ep.addr))?;
                c.logout().await;
                if i >= s.login_warm {
                    out.push(d);
                }
            }
        }
        direct.sort();
        via.sort();
        let (d50, v50) = (pct(&direct, 50.0), pct(&via, 50.0));
        progress(format!(
            "{} login ({kind}): direct p50 {d50:.2} ms, via p50 {v50:.2} ms (added {:.2} ms)",
            t.name,
            v50 - d50
        ));
        r.row(
            t.name,
            format!("IMAP login p50 ms ({kind})"),
            d50,
            v50,
            2,
            format!("added {:.2} ms", v50 - d50),
        );
        let (d99, v99) = (pct(&direct, 99.0), pct(&via, 99.0));
        r.row(
            t.name,
            format!("IMAP login p99 ms ({kind})"),
            d99,
            v99,
            2,
            format!("added {:.2} ms", v99 - d99),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Idle sessions
// ---------------------------------------------------------------------------

async fn idle_section(
    t: &Target,
    tls: &tlsutil::Material,
    s: &Settings,
    want: usize,
    r: &mut Report,
) -> anyhow::Result<()> {
    // A fresh Postern, so its baseline holds nothing from earlier figures.
    let p = start_postern(t, tls, s)?;
    let (_, via_imap) = via_endpoints(&p, tls);
    let how = Login::Password("app".into(), postern::LOCAL_PASSWORD.into());
    // Warm-up: the argon2 check (19 MiB, freed after) and the code paths.
    for _ in 0..3 {
        let (_, c) = clients::timed_login(&via_imap, &how).await?;
        c.logout().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = p.pid();
    // Each proxied session is two sockets in Postern (client, upstream), and
    // two here (client, in-process upstream): fit both in the open-files limit.
    let limit = procfs::nofile_limit(pid).min(procfs::nofile_limit(std::process::id()));
    let used = procfs::fd_count(pid).max(procfs::fd_count(std::process::id()));
    let fit = (limit.saturating_sub(used as u64 + 32) / 2) as usize;
    let n = want.min(fit);
    if n < want {
        r.notes.push(format!(
            "idle: {want} sessions requested; {n} fit in the open-files limit ({limit}; a proxied session is 2 descriptors in Postern and 2 in the load generator), so {n} were held"
        ));
    }
    let rss0 = procfs::rss(pid);
    let fds0 = procfs::fd_count(pid);
    progress(format!(
        "idle: opening {n} sessions through Postern (RSS before {:.1} MiB)",
        rss0 as f64 / 1048576.0
    ));
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (ep, how, sem) = (via_imap.clone(), how.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let mut last = None;
            for _ in 0..3 {
                match clients::timed_login(&ep, &how).await {
                    Ok((_, c)) => return Ok(c),
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(last.expect("an error"))
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_err = None;
    while let Some(res) = set.join_next().await {
        match res? {
            Ok(c) => held.push(c),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    let setup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = procfs::rss(pid);
    let fds1 = procfs::fd_count(pid);
    // Still alive and spliced: a NOOP on a sample goes through to the upstream.
    let mut alive = 0;
    let step = (held.len() / 50).max(1);
    let mut sampled = 0;
    for c in held.iter_mut().step_by(step) {
        sampled += 1;
        if matches!(c.command("NOOP", None).await, Ok(d) if d.ok) {
            alive += 1;
        }
    }
    let k = held.len();
    let per = if k > 0 {
        (rss1 as f64 - rss0 as f64) / k as f64
    } else {
        f64::NAN
    };
    progress(format!(
        "idle: {k} sessions held ({failed} failed) in {:.1} s; RSS {:.1} → {:.1} MiB = {:.1} KiB/session; NOOP ok on {alive}/{sampled}",
        setup.as_secs_f64(),
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        per / 1024.0
    ));
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss2 = procfs::rss(pid);
    r.row(
        t.name,
        format!("idle IMAP sessions held through Postern (TLS both hops; {failed} failed)"),
        f64::NAN,
        k as f64,
        0,
        format!(
            "set up in {:.1} s; NOOP answered on {alive}/{sampled} sampled",
            setup.as_secs_f64()
        ),
    );
    r.row(
        t.name,
        "Postern RSS MiB: before → with the idle sessions",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        1,
        format!(
            "{:.1} MiB after they closed; descriptors {fds0} → {fds1}",
            rss2 as f64 / 1048576.0
        ),
    );
    r.row(
        t.name,
        "Postern RSS KiB per idle proxied session",
        f64::NAN,
        per / 1024.0,
        1,
        "",
    );
    if let Some(e) = first_err {
        r.notes.push(format!("idle: first failure: {e}"));
    }
    r.targets.push(target_line(
        "≤ 64 KiB RSS per idle proxied session",
        per / 1024.0 <= 64.0,
        format!(
            "{:.1} KiB ({k} sessions, {} upstream)",
            per / 1024.0,
            t.name
        ),
    ));
    Ok(())
}

fn check_warnings(p: &postern::Postern, what: &str, r: &mut Report) {
    let w = p.warnings();
    if w > 0 {
        r.notes.push(format!(
            "{what}: Postern logged {w} WARN/ERROR lines; last lines:\n\n```\n{}\n```",
            p.log_tail(5)
        ));
    }
}

fn target_line(what: &str, met: bool, detail: String) -> String {
    format!("{}: {what} — {detail}", if met { "MET" } else { "MISSED" })
}

fn evaluate(r: &mut Report) {
    // The idle figure's line (added while it ran) goes last.
    let earlier = std::mem::take(&mut r.targets);
    let ratio = |r: &Report, u: &str, f: &str| r.find(u, f).map(|x| (x.direct, x.via));
    for (figure, target, unit) in [
        (
            "IMAP FETCH MiB/s, 1 MiB message, TLS both hops, 1 session",
            "Dovecot IMAP FETCH via Postern ≥ 0.9 × direct",
            "MiB/s",
        ),
        (
            "SMTP msgs/s, 10 KiB, 16 sessions",
            "Dovecot SMTP msgs/s via Postern ≥ 0.9 × direct at 16 sessions",
            "msg/s",
        ),
    ] {
        if let Some((d, v)) = ratio(r, "dovecot", figure) {
            let q = v / d;
            let missed = if q < 0.9 {
                format!(", missed by {:.0}%", (0.9 - q) / 0.9 * 100.0)
            } else {
                String::new()
            };
            let t = target_line(
                target,
                q >= 0.9,
                format!("{q:.2} ({v:.0} vs {d:.0} {unit}){missed}"),
            );
            r.targets.push(t);
        }
    }
    for u in ["dovecot", "memory"] {
        for kind in ["XOAUTH2, cached token", "app password"] {
            if let Some((d, v)) = ratio(r, u, &format!("IMAP login p50 ms ({kind})")) {
                let added = v - d;
                r.targets.push(target_line(
                    &format!("{u}: added login latency p50 < 2 ms ({kind})"),
                    added < 2.0,
                    format!("{added:.2} ms ({v:.2} vs {d:.2} ms)"),
                ));
            }
        }
    }
    let cpu_rows: Vec<(String, String, f64, f64)> = r
        .rows
        .iter()
        .filter(|x| x.figure.starts_with("CPU "))
        .map(|x| (x.upstream.clone(), x.figure.clone(), x.direct, x.via))
        .collect();
    for (u, f, d, v) in cpu_rows {
        r.targets.push(target_line(
            &format!("{u}: Postern's CPU no worse than the direct client's own ({f})"),
            v <= d,
            format!("Postern {v:.2} vs client {d:.2}"),
        ));
    }
    r.targets.extend(earlier);
}

// ---------------------------------------------------------------------------

/// fsync latency (p50, p99 in ms) of the disk under `dir`: Postern's quota
/// store syncs its SQLite WAL on every reservation, so SMTP figures through
/// Postern depend on it.
fn fsync_probe(dir: &Path) -> (f64, f64) {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let Ok(mut f) = std::fs::File::create(&path) else {
        return (f64::NAN, f64::NAN);
    };
    let mut t = Vec::new();
    for _ in 0..100 {
        if f.write_all(&[b'x'; 4096]).is_err() {
            break;
        }
        let s = Instant::now();
        if f.sync_all().is_err() {
            break;
        }
        t.push(s.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    t.sort();
    (pct(&t, 50.0), pct(&t, 99.0))
}

fn git_describe() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = run(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    format!(
        "{head}{}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    )
}

async fn run(s: Settings, upstream_rt: tokio::runtime::Handle) -> anyhow::Result<String> {
    let begun = Instant::now();
    let load0 = procfs::loadavg();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    if load0.0 > 0.5 {
        progress(format!(
            "WARNING: load average {:.2} (> 0.5): other work is running; figures will be noisy",
            load0.0
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("postern-bench-")
        .tempdir()?;
    let peers_ca = std::env::var("PEERS_CA").ok().map(PathBuf::from);
    let want_dovecot = s.upstreams.iter().any(|u| u == "dovecot");
    if want_dovecot && peers_ca.is_none() {
        env("PEERS_CA")?;
    }
    let tls = tlsutil::make(dir.path(), peers_ca.as_deref())?;
    let fsync = fsync_probe(dir.path());
    let message = Arc::new(fetch_message());
    let mut r = Report::default();
    let mut memory_target_kept = None;
    for u in &s.upstreams {
        let t = if u == "dovecot" {
            dovecot_target(&tls, dir.path(), message.clone()).await?
        } else {
            let (t, m) = memory_target(&tls, dir.path(), message.clone(), &upstream_rt).await?;
            memory_target_kept = Some(m);
            t
        };
        if s.only.contains("smtp") {
            smtp_section(&t, &tls, &s, &mut r).await.context("SMTP")?;
        }
        let p = start_postern(&t, &tls, &s)?;
        progress(format!(
            "{}: postern pid {} smtp {} imap {}",
            t.name,
            p.pid(),
            p.smtp,
            p.imap
        ));
        let res = async {
            if s.only.contains("fetch") {
                fetch_section(&t, &p, &tls, &s, &mut r)
                    .await
                    .context("FETCH")?;
            }
            if s.only.contains("login") {
                login_section(&t, &p, &tls, &s, &mut r)
                    .await
                    .context("login")?;
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if let Err(e) = res {
            bail!(
                "{}: {e:#}\n--- postern log (last lines) ---\n{}",
                t.name,
                p.log_tail(30)
            );
        }
        check_warnings(&p, t.name, &mut r);
        if u == "memory" {
            if let (Some(n), true) = (s.idle, s.only.contains("idle")) {
                drop(p);
                idle_section(&t, &tls, &s, n, &mut r)
                    .await
                    .context("idle")?;
            }
        }
    }
    if s.only.contains("idle") && s.idle.is_some() && !s.upstreams.iter().any(|u| u == "memory") {
        r.notes.push(
            "idle: runs against the in-process upstream only (add memory to --upstream)".into(),
        );
    }
    if let Some(m) =
        memory_target_kept.filter(|m| m.received.load(std::sync::atomic::Ordering::Relaxed) > 0)
    {
        r.notes.push(format!(
            "the in-process sink accepted {} messages in all",
            m.received.load(std::sync::atomic::Ordering::Relaxed)
        ));
    }
    evaluate(&mut r);
    let load1 = procfs::loadavg();
    let quiet = load0.0 <= 0.5;
    let header = format!(
        "## Postern proxy benchmark\n\nmachine: {cores} cores ({}); load average at start {:.2} {:.2} {:.2}{}, at end {:.2}; fsync of a 4 KiB write in the temp dir p50 {:.2} ms, p99 {:.2} ms\npostern: {} ({}); commit {}\nsettings: {}SMTP {} s per figure and path in {} alternating rounds (ABBA; warm-up {} s, then {} s before later rounds), {} KiB messages, sessions {:?}; FETCH {} session(s) × {} s, rounds likewise; {} timed logins per path and kind{}\nduration: {:.0} s\n",
        procfs::cpu_model(),
        load0.0,
        load0.1,
        load0.2,
        if quiet { " (quiet)" } else { " (NOT quiet: other work was running)" },
        load1.0,
        fsync.0,
        fsync.1,
        postern::bin(),
        if s.smoke {
            "debug build, smoke run under `cargo test`: the figures mean nothing"
        } else {
            "release"
        },
        git_describe(),
        if s.quick { "--quick; " } else { "" },
        s.secs.as_secs_f64(),
        s.rounds,
        s.warm.as_secs_f64(),
        s.warm.as_secs_f64() / 2.0,
        SMTP_SIZE / 1024,
        s.sessions,
        s.fetch_sessions,
        s.secs.as_secs_f64(),
        s.logins,
        s.idle.map(|n| format!("; idle {n}")).unwrap_or_default(),
        begun.elapsed().as_secs_f64()
    );
    Ok(r.render(&header))
}

/// The smoke run's report has a direct and a via figure for everything.
fn check_smoke_report(report: &str) -> anyhow::Result<()> {
    for figure in [
        "SMTP msgs/s, 10 KiB, 2 sessions",
        "SMTP end-of-DATA→250 p50 ms, 2 sessions",
        "CPU µs/msg: client (direct) vs Postern (via), 2 sessions",
        "IMAP FETCH MiB/s, 1 MiB message, TLS both hops, 1 session",
        "CPU ms/MiB: client (direct) vs Postern (via), FETCH",
        "IMAP login p50 ms (app password)",
        "IMAP login p50 ms (XOAUTH2, cached token)",
    ] {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| memory | {figure} |")))
            .with_context(|| format!("smoke run: no row {figure:?}"))?;
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for (path, cell) in [("direct", cells[3]), ("via", cells[4])] {
            match cell.parse::<f64>() {
                Ok(x) if x > 0.0 => {}
                _ => bail!("smoke run: {figure} has no {path} figure ({cell:?})"),
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let Some(s) = parse_args()? else {
        return Ok(());
    };
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => progress(format!("open-files limit {n}")),
        Err(e) => progress(format!("could not raise the open-files limit: {e}")),
    }
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(UPSTREAM_THREADS)
        .enable_all()
        .build()?;
    let out = s.out.clone();
    let handle = upstream_rt.handle().clone();
    // The orchestration itself runs as a task on the client runtime.
    let smoke = s.smoke;
    let report = client_rt.block_on(async move { tokio::spawn(run(s, handle)).await? })?;
    println!("{report}");
    if smoke {
        check_smoke_report(&report)?;
    }
    if let Some(path) = out {
        std::fs::write(&path, &report).with_context(|| format!("{}", path.display()))?;
    }
    client_rt.shutdown_timeout(Duration::from_secs(1));
    upstream_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
