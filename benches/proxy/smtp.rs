//! 1. SMTP relay: messages/s and end-of-DATA latency at 1, 16 and 64 sessions, direct and via, in ABBA rounds.

use crate::*;

/// One measured window of one path.
pub struct SmtpWindow {
    pub lat: Vec<Duration>,
    pub secs: f64,
    pub cpu: Cpu,
    pub error: Option<String>,
}

pub struct SmtpResult {
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub n: usize,
    pub cpu: Cpu,
    pub error: Option<String>,
}

#[allow(clippy::too_many_arguments)]
pub async fn smtp_run(
    ep: &Endpoint,
    user: &str,
    pass: &str,
    sessions: usize,
    (warm, secs): (Duration, Duration),
    stuffed: Arc<Vec<u8>>,
    pid: u32,
    settle: bool,
) -> anyhow::Result<SmtpWindow> {
    let mut conns = Vec::new();
    if settle {
        // One at a time (see `Smtp::open_settled`): email-oauth2-proxy left
        // some of 16 simultaneous new sessions without an answer.
        for _ in 0..sessions {
            conns.push(
                Smtp::open_settled(ep, user, pass)
                    .await
                    .context("SMTP session setup")?,
            );
        }
    } else {
        let mut set = JoinSet::new();
        for _ in 0..sessions {
            let (ep, user, pass) = (ep.clone(), user.to_owned(), pass.to_owned());
            set.spawn(async move { Smtp::open(&ep, &user, &pass).await });
        }
        while let Some(r) = set.join_next().await {
            conns.push(r?.context("SMTP session setup")?);
        }
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
pub fn smtp_result(windows: Vec<SmtpWindow>) -> SmtpResult {
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
pub fn round_plan(s: &Settings, i: usize) -> (bool, (Duration, Duration)) {
    let warm = if i == 0 { s.warm } else { s.warm / 2 };
    (i % 2 == 1, (warm, s.secs / s.rounds as u32))
}

pub async fn smtp_section(
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
        let (direct, via, peer) = match smtp_pair(t, &p, tls, s, n, &stuffed).await {
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
        let cpu_figure = format!("CPU µs/msg: client (direct) vs Postern (via), {n} {label}");
        r.row(
            t.name,
            cpu_figure.clone(),
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
        if let Some(pr) = peer {
            progress(format!(
                "{} smtp {n} sessions: email-oauth2-proxy {:.0} msg/s (p50 {:.2} ms), {:.0} µs CPU/msg",
                t.name,
                pr.rate,
                pr.p50,
                per(pr.cpu.postern, &pr)
            ));
            let name = |f: &str| format!("{f}, {n} {label}");
            r.peer(t.name, &name("SMTP msgs/s, 10 KiB"), pr.rate);
            r.peer(t.name, &name("SMTP end-of-DATA→250 p50 ms"), pr.p50);
            r.peer(t.name, &name("SMTP end-of-DATA→250 p99 ms"), pr.p99);
            // The peer's own CPU per message, as Postern's (via).
            r.peer(t.name, &cpu_figure, per(pr.cpu.postern, &pr));
            if let Some(e) = &pr.error {
                r.notes.push(format!(
                    "{} SMTP {n} sessions: an email-oauth2-proxy session failed: {e}",
                    t.name
                ));
            }
        }
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
/// rounds (see `round_plan`); and through the peer proxy, at 1 and 16
/// sessions, after each round's pair.
pub async fn smtp_pair(
    t: &Target,
    p: &postern::Postern,
    tls: &tlsutil::Material,
    s: &Settings,
    n: usize,
    stuffed: &Arc<Vec<u8>>,
) -> anyhow::Result<(SmtpResult, SmtpResult, Option<SmtpResult>)> {
    let (via_smtp, _) = via_endpoints(p, tls);
    let (mut direct, mut via, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    let peer_here = peer_for(s, t).filter(|_| n == 1 || n == 16);
    for i in 0..s.rounds {
        let (via_first, window) = round_plan(s, i);
        if let Some(pr) = peer_here {
            // A peer that stops answering fails the run instead of hanging it.
            let w = tokio::time::timeout(
                window.0 + window.1 + Duration::from_secs(60),
                smtp_run(
                    &pr.smtp,
                    &pr.user,
                    &pr.password,
                    n,
                    window,
                    stuffed.clone(),
                    pr.pid,
                    true,
                ),
            )
            .await
            .map_err(|_| anyhow::anyhow!("email-oauth2-proxy stopped answering"))?
            .context("via email-oauth2-proxy")?;
            peer.push(w);
        }
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
                    false,
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
                    false,
                )
                .await
                .context("direct")?;
                direct.push(w);
            }
        }
    }
    let peer = (!peer.is_empty()).then(|| smtp_result(peer));
    Ok((smtp_result(direct), smtp_result(via), peer))
}

/// Remove the messages this benchmark sent from the test peers' sink (their
/// sidecar names the benchmark's sender), so tests that scan it stay fast.
pub fn clean_sink(dir: &Path) -> usize {
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
