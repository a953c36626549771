//! 4. Idle sessions: Postern's memory per idle proxied IMAP session.

use crate::*;

pub const IDLE_FIGURE: &str = "RSS KiB per idle proxied IMAP session";

pub async fn idle_section(
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
    r.row(t.name, IDLE_FIGURE, f64::NAN, per / 1024.0, 1, "");
    if let Some(e) = first_err {
        r.notes.push(format!("idle: first failure: {e}"));
    }
    r.targets.push(target_line(
        "≤ 32 KiB RSS per idle proxied session (at 10,000 sessions)",
        per / 1024.0 <= 32.0,
        format!(
            "{:.1} KiB ({k} sessions, {} upstream)",
            per / 1024.0,
            t.name
        ),
    ));
    Ok(())
}

/// The peer's RSS per idle logged-in IMAP session (KiB), with `n` held, and
/// how many were held.
pub async fn peer_idle(pr: &Peer, n: usize) -> anyhow::Result<(f64, usize)> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = procfs::rss(pr.pid);
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    // One at a time: the peer is one Python thread, and each login costs it
    // about 0.3 s of CPU whatever the concurrency.
    for _ in 0..n {
        let (_, c) = clients::timed_login(&pr.imap, &pr.login())
            .await
            .context("idle login via email-oauth2-proxy")?;
        held.push(c);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = procfs::rss(pr.pid);
    let k = held.len();
    let per = (rss1 as f64 - rss0 as f64) / k.max(1) as f64 / 1024.0;
    progress(format!(
        "idle via email-oauth2-proxy: {k} sessions in {:.1} s; RSS {:.1} → {:.1} MiB = {per:.1} KiB/session",
        started.elapsed().as_secs_f64(),
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
    ));
    for c in held {
        c.logout().await;
    }
    Ok((per, k))
}
