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

pub async fn fetch_section(
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
