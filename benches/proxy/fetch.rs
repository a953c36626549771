//! 2. IMAP FETCH throughput with TLS on both hops.

use crate::*;

pub struct FetchResult {
    pub mib_s: f64,
    pub mib: f64,
    pub secs: f64,
    pub cpu: Cpu,
}

impl FetchResult {
    pub fn plus(self, other: FetchResult) -> FetchResult {
        let (mib, secs) = (self.mib + other.mib, self.secs + other.secs);
        FetchResult {
            mib_s: mib / secs,
            mib,
            secs,
            cpu: self.cpu.plus(other.cpu),
        }
    }
}

pub async fn fetch_run(
    ep: &Endpoint,
    how: &Login,
    (fetch_cmd, fetch_expect): (&str, &Arc<Vec<u8>>),
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
        let d = c.command(fetch_cmd, Some(&mut got)).await?;
        if !d.ok || got != **fetch_expect {
            bail!(
                "FETCH returned {} bytes, not the {} expected ({})",
                got.len(),
                fetch_expect.len(),
                d.text
            );
        }
        sessions.push(c);
    }
    let from = Instant::now() + warm;
    let end = from + secs;
    let mut set = JoinSet::new();
    for mut c in sessions {
        let cmd = fetch_cmd.to_owned();
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

pub async fn fetch_section(
    t: &Target,
    p: &postern::Postern,
    tls: &tlsutil::Material,
    s: &Settings,
    r: &mut Report,
) -> anyhow::Result<()> {
    let mut sizes = vec![("1 MiB", t.fetch_cmd.clone(), t.fetch_expect.clone())];
    if let Some((cmd, expect)) = &t.fetch_big {
        sizes.push(("32 MiB", cmd.clone(), expect.clone()));
    }
    for (size, cmd, expect) in sizes {
        fetch_size(t, p, tls, s, r, size, (&cmd, &expect)).await?;
    }
    Ok(())
}

/// FETCH of one message, direct, via Postern and (on Dovecot) via the
/// peer, in alternating rounds.
async fn fetch_size(
    t: &Target,
    p: &postern::Postern,
    tls: &tlsutil::Material,
    s: &Settings,
    r: &mut Report,
    size: &str,
    msg: (&str, &Arc<Vec<u8>>),
) -> anyhow::Result<()> {
    let (_, via_imap) = via_endpoints(p, tls);
    let (mut direct, mut via): (Option<FetchResult>, Option<FetchResult>) = (None, None);
    let mut peer: Option<FetchResult> = None;
    let peer_here = peer_for(s, t);
    for i in 0..s.rounds {
        let (via_first, (warm, secs)) = round_plan(s, i);
        // A window holds several whole FETCHes of the big message too (only
        // those that end inside it count).
        let window = (warm, secs * msg.1.len().div_ceil(8 * FETCH_SIZE) as u32);
        if let Some(pr) = peer_here {
            // A peer that stops answering fails the run instead of hanging it.
            let w = tokio::time::timeout(
                window.0 + window.1 + Duration::from_secs(60),
                fetch_run(&pr.imap, &pr.login(), msg, window, s.fetch_sessions, pr.pid),
            )
            .await
            .map_err(|_| anyhow::anyhow!("email-oauth2-proxy stopped answering"))?
            .context("via email-oauth2-proxy")?;
            peer = Some(match peer.take() {
                Some(a) => a.plus(w),
                None => w,
            });
        }
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
            let w = fetch_run(ep, &login, msg, window, s.fetch_sessions, p.pid()).await?;
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
        "{} fetch {size}: direct {:.0} MiB/s, via {:.0} MiB/s{}",
        t.name,
        direct.mib_s,
        via.mib_s,
        peer.as_ref()
            .map(|x| format!(", email-oauth2-proxy {:.0} MiB/s", x.mib_s))
            .unwrap_or_default()
    ));
    let n = s.fetch_sessions;
    let sess = if n == 1 {
        "1 session".to_string()
    } else {
        format!("{n} sessions")
    };
    let figure = format!("IMAP FETCH MiB/s, {size} message, TLS both hops, {sess}");
    r.row(t.name, figure.clone(), direct.mib_s, via.mib_s, 0, "");
    let per = |cpu: f64, res: &FetchResult| {
        if res.mib > 0.0 {
            cpu * 1e3 / res.mib
        } else {
            f64::NAN
        }
    };
    let cpu_figure = if size == "1 MiB" {
        "CPU ms/MiB: client (direct) vs Postern (via), FETCH".to_string()
    } else {
        format!("CPU ms/MiB: client (direct) vs Postern (via), FETCH {size}")
    };
    r.row(
        t.name,
        cpu_figure.clone(),
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
    if let Some(pr) = peer {
        r.peer(t.name, &figure, pr.mib_s);
        r.peer(t.name, &cpu_figure, per(pr.cpu.postern, &pr));
    }
    Ok(())
}
