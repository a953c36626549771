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
mod fetch;
mod idle;
mod login;
mod memory;
mod peer;
mod postern;
mod procfs;
mod queue;
mod report;
mod smtp;
mod targets;
mod tlsutil;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clients::{Endpoint, Imap, Login, Smtp};
use tokio::task::JoinSet;

use fetch::*;
use idle::*;
use login::*;
use peer::*;
use queue::*;
use report::*;
use smtp::*;
use targets::*;

pub const SMTP_FROM: &str = "postern-bench@example.test";
pub const SMTP_TO: &str = "sink@example.test";
pub const SMTP_SIZE: usize = 10 * 1024;
pub const FETCH_SIZE: usize = 1024 * 1024;
/// Header that marks the benchmark's 1 MiB message in the Dovecot mailbox.
pub const FETCH_MARK: &str = "postern-bench-fetch-1mib-v1";
/// Header that marks the 32 MiB message.
pub const FETCH_MARK_BIG: &str = "postern-bench-fetch-32mib-v1";
/// The Dovecot test user the benchmark uses (no test uses it).
pub const DOVECOT_USER: &str = "u40@example.test";
pub const DOVECOT_PASSWORD: &str = "pw-u40";
pub const CLIENT_THREADS: &str = "bench-client";
pub const UPSTREAM_THREADS: &str = "bench-upstrm";

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
  --peer eop|none       also measure email-oauth2-proxy in front of the same Dovecot
                        (default: eop when benches/eop/start's variables are set)
  --peer-logins N       timed logins through the peer (default 40: each costs it ~0.3 s)
  --peer-idle N         idle sessions held through the peer (default 100, see BENCHMARKS.md)
  --postern-log LEVEL   Postern's log_level (default info, the shipped default)
  --out FILE            also write the report (markdown) to FILE"
}

#[derive(Clone)]
pub struct Settings {
    pub quick: bool,
    /// Started by `cargo test`: a tiny run whose report is checked for
    /// every figure (never for values).
    pub smoke: bool,
    pub upstreams: Vec<String>,
    pub only: BTreeSet<String>,
    pub idle: Option<usize>,
    pub sessions: Vec<usize>,
    pub warm: Duration,
    pub secs: Duration,
    pub rounds: usize,
    pub logins: usize,
    pub login_warm: usize,
    pub fetch_sessions: usize,
    pub postern_log: String,
    pub out: Option<PathBuf>,
    pub peer: Option<Arc<Peer>>,
    pub peer_logins: usize,
    pub peer_idle: usize,
}

fn parse_args() -> anyhow::Result<Option<Settings>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = Settings {
        quick: false,
        smoke: false,
        upstreams: vec!["dovecot".into(), "memory".into()],
        only: ["smtp", "queue", "fetch", "login"]
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
        peer: None,
        peer_logins: 40,
        peer_idle: 100,
    };
    // --peer: given, else eop when benches/eop/start's variables are set.
    let peer_arg = args
        .iter()
        .position(|a| a == "--peer")
        .and_then(|i| args.get(i + 1).cloned());
    let want_peer = match peer_arg.as_deref() {
        Some("eop") => true,
        Some("none") => false,
        Some(other) => bail!("unknown peer {other} (eop, none)"),
        None => std::env::var_os("EOP_IMAP_PORT").is_some(),
    };
    if want_peer {
        s.peer = Some(Arc::new(Peer::from_env()?));
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench`:
        // a smoke run against the in-process upstream (no peers needed), in
        // short windows, to prove the benchmark works; `main` checks that
        // its report holds every figure. `cargo test --bench proxy --
        // --peer eop` adds the Dovecot upstream and the peer's column.
        println!("proxy benchmark: smoke run (the real one: `benches/run`)");
        s.smoke = true;
        s.upstreams = vec!["memory".into()];
        s.sessions = vec![2];
        s.warm = Duration::from_millis(100);
        s.secs = Duration::from_millis(300);
        s.rounds = 2;
        s.logins = 3;
        s.login_warm = 1;
        s.peer_logins = 3;
        s.peer_idle = 5;
        if s.peer.is_some() {
            // The peer fronts Dovecot: the smoke run adds that upstream,
            // and a few idle sessions for the RSS row.
            s.upstreams.insert(0, "dovecot".into());
            s.sessions = vec![1, 2];
            s.idle = Some(5);
            s.only.insert("idle".into());
        }
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
            "--peer" => {
                val()?;
            }
            "--peer-logins" => s.peer_logins = val()?.parse()?,
            "--peer-idle" => s.peer_idle = val()?.parse()?,
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
    if s.peer.is_some() && s.idle.is_none() && !s.quick {
        // The three-column table has the idle memory row.
        s.idle = Some(1000);
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
    let mut peer_idle_kib = None;
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
        if s.only.contains("queue") {
            queue_section(&t, &tls, &s, &mut r).await.context("queue")?;
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
        if let (Some(pr), true) = (peer_for(&s, &t), s.only.contains("idle")) {
            let (kib, k) = peer_idle(pr, s.peer_idle)
                .await
                .context("idle via the peer")?;
            peer_idle_kib = Some((kib, k));
        }
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
    if let Some((kib, k)) = peer_idle_kib {
        r.peer("memory", IDLE_FIGURE, kib);
        r.notes.push(format!(
            "idle: email-oauth2-proxy's figure is from {k} logged-in sessions against Dovecot (its logins cost about 0.3 s of CPU each, one at a time: 1,000 would take 5 minutes); Postern's from the in-process upstream"
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

/// With a peer, the Dovecot rows (and the idle row) have its figure too.
fn check_peer_column(report: &str) -> anyhow::Result<()> {
    for (upstream, figure) in [
        ("dovecot", "SMTP msgs/s, 10 KiB, 1 session"),
        (
            "dovecot",
            "CPU µs/msg: client (direct) vs Postern (via), 1 session",
        ),
        (
            "dovecot",
            "IMAP FETCH MiB/s, 1 MiB message, TLS both hops, 1 session",
        ),
        (
            "dovecot",
            "IMAP FETCH MiB/s, 32 MiB message, TLS both hops, 1 session",
        ),
        (
            "dovecot",
            "CPU ms/MiB: client (direct) vs Postern (via), FETCH",
        ),
        ("dovecot", "IMAP login p50 ms (XOAUTH2, cached token)"),
        ("memory", IDLE_FIGURE),
    ] {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {upstream} | {figure} |")))
            .with_context(|| format!("no row {upstream} {figure:?}"))?;
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        match cells.get(5).map(|c| c.parse::<f64>()) {
            Some(Ok(x)) if x > 0.0 => {}
            _ => bail!("{upstream} {figure}: no email-oauth2-proxy figure in {row:?}"),
        }
    }
    Ok(())
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
        "Queue accept msgs/s, 10 KiB, 16 sessions (direct: relay)",
        "Queue drain msgs/s, 16 workers (direct: relay)",
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
    let with_peer = s.peer.is_some();
    let report = client_rt.block_on(async move { tokio::spawn(run(s, handle)).await? })?;
    println!("{report}");
    if smoke {
        check_smoke_report(&report)?;
        if with_peer {
            check_peer_column(&report)?;
            println!("proxy benchmark: the email-oauth2-proxy column is present");
        }
    }
    if let Some(path) = out {
        std::fs::write(&path, &report).with_context(|| format!("{}", path.display()))?;
    }
    client_rt.shutdown_timeout(Duration::from_secs(1));
    upstream_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
