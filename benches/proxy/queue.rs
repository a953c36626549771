//! Section 5, the durable queue: how fast messages go into it (each on disk
//! before its 250, group commit) and how fast the workers drain it to the
//! upstream, against the direct relay rate at 16 sessions.

use crate::*;

/// The longest the drain figure is measured.
const DRAIN_WINDOW: Duration = Duration::from_secs(15);

/// Sessions sending into the queue, and workers draining it.
const QUEUE_SESSIONS: usize = 16;

/// Postern's config for the queue figures: user `app` queues everything;
/// with `held`, the account lets one message start per minute, so the
/// workers stall and the accept rate is the queue's alone.
fn queue_config(t: &Target, tls: &tlsutil::Material, s: &Settings, held: bool) -> String {
    let up = postern::Upstream {
        email: &t.email,
        smtp_port: t.smtp.addr.port(),
        imap_port: t.imap.addr.port(),
        ca_file: &t.ca,
        token_file: &t.token_file,
    };
    let mut cfg = postern::config(&up, &tls.cert_pem, &tls.key_pem, &s.postern_log);
    cfg = cfg.replace(
        "send_via = \"up\"\nread_via = \"up\"\n",
        "send_via = \"up\"\nread_via = \"up\"\ndelivery = \"queue\"\n",
    );
    if held {
        cfg = cfg.replace(
            "max_connections = 64\n",
            "max_connections = 64\nmax_per_minute = 1\n",
        );
        cfg.push_str("upstream_timeout = \"600s\"\n");
    }
    cfg.push_str(&format!(
        "\n[queue]\nworkers = {QUEUE_SESSIONS}\nretry = [\"1s\"]\n"
    ));
    cfg
}

/// Messages in the queue now (read straight from its file).
fn depth(dir: &Path) -> anyhow::Result<u64> {
    let c = rusqlite::Connection::open_with_flags(
        dir.join("queue.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    c.busy_timeout(Duration::from_secs(5))?;
    Ok(
        c.query_row("SELECT messages FROM totals WHERE one = 1", [], |r| {
            r.get::<_, i64>(0)
        })?
        .max(0) as u64,
    )
}

pub async fn queue_section(
    t: &Target,
    tls: &tlsutil::Material,
    s: &Settings,
    r: &mut Report,
) -> anyhow::Result<()> {
    let (_, stuffed) = clients::message(SMTP_SIZE);
    let stuffed = Arc::new(stuffed);
    let mut p = postern::Postern::start(&queue_config(t, tls, s, true), &t.password)?;
    let (via_smtp, _) = via_endpoints(&p, tls);
    let w = smtp_run(
        &via_smtp,
        "app",
        postern::LOCAL_PASSWORD,
        QUEUE_SESSIONS,
        (s.warm, s.secs / 2),
        stuffed.clone(),
        p.pid(),
        false,
    )
    .await
    .context("into the queue")?;
    let accepted = smtp_result(vec![w]);
    if let Some(e) = &accepted.error {
        bail!("queueing: {e}\n{}", p.log_tail(20));
    }
    let queued = depth(&p.data_dir())?;
    progress(format!(
        "{} queue: accepted {:.0} msg/s (p50 {:.2} ms); {queued} queued",
        t.name, accepted.rate, accepted.p50
    ));
    // The same data_dir without the hold: from the restarted Postern's
    // first listening line until the queue is empty.
    p.restart(&queue_config(t, tls, s, false))?;
    let started = Instant::now();
    let c0 = Cpu::now(p.pid());
    let queued = depth(&p.data_dir())?;
    // Until it is empty, or for at most DRAIN_WINDOW (the queue accepts
    // far faster than Dovecot takes mail: draining all of it would take a
    // minute of the run); what is left goes with the temp dir.
    let deadline = started + DRAIN_WINDOW;
    let mut left = queued;
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = depth(&p.data_dir())?;
    }
    let took = started.elapsed().as_secs_f64();
    let cpu = Cpu::now(p.pid()).since(c0);
    let queued = queued - left;
    if queued == 0 {
        bail!("nothing left the queue in {took:.0} s\n{}", p.log_tail(20));
    }
    let drain = queued as f64 / took;
    progress(format!(
        "{} queue: drained {queued} in {took:.2} s ({drain:.0} msg/s; {left} left)",
        t.name
    ));
    check_warnings(&p, &format!("{} queue", t.name), r);
    drop(p);
    // The direct relay figure with the most sessions measured (16 in a
    // full run).
    let (direct, n) = s
        .sessions
        .iter()
        .rev()
        .find_map(|&n| {
            let label = if n == 1 { "session" } else { "sessions" };
            r.find(t.name, &format!("SMTP msgs/s, 10 KiB, {n} {label}"))
                .map(|x| (x.direct, n))
        })
        .unwrap_or((f64::NAN, 0));
    r.row(
        t.name,
        "Queue accept msgs/s, 10 KiB, 16 sessions (direct: relay)",
        direct,
        accepted.rate,
        0,
        format!(
            "each message fsynced before its 250; p50 {:.2} ms, p99 {:.2} ms; direct: relay with {n} sessions",
            accepted.p50, accepted.p99
        ),
    );
    r.row(
        t.name,
        "Queue drain msgs/s, 16 workers (direct: relay)",
        direct,
        drain,
        0,
        format!(
            "{queued} messages in {took:.2} s; Postern {:.0} µs/msg; direct: relay with {n} sessions",
            if queued > 0 {
                cpu.postern * 1e6 / queued as f64
            } else {
                f64::NAN
            }
        ),
    );
    if let Some(dir) = &t.sink_dir {
        clean_sink(dir);
    }
    Ok(())
}
