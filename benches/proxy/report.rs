//! The report: rows of direct/via figures, notes, targets, and CPU accounting.

use crate::*;

pub struct Row {
    pub upstream: String,
    pub figure: String,
    pub direct: f64,
    pub via: f64,
    /// The peer proxy (email-oauth2-proxy) on the same figure, or NaN.
    pub peer: f64,
    pub decimals: usize,
    pub note: String,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub targets: Vec<String>,
}

impl Report {
    pub fn row(
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
            peer: f64::NAN,
            decimals,
            note: note.into(),
        });
    }

    /// The peer's figure for a row already added.
    pub fn peer(&mut self, upstream: &str, figure: &str, value: f64) {
        if let Some(row) = self
            .rows
            .iter_mut()
            .find(|r| r.upstream == upstream && r.figure == figure)
        {
            row.peer = value;
        }
    }

    fn has_peer(&self) -> bool {
        self.rows.iter().any(|r| r.peer.is_finite())
    }

    pub fn find(&self, upstream: &str, figure: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.upstream == upstream && r.figure == figure)
    }

    pub fn render(&self, header: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{header}");
        let peer = self.has_peer();
        if peer {
            let _ = writeln!(
                o,
                "| upstream | figure | direct | via Postern | via email-oauth2-proxy | Postern/direct | Postern/peer | note |"
            );
            let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---|");
        } else {
            let _ = writeln!(
                o,
                "| upstream | figure | direct | via Postern | via/direct | note |"
            );
            let _ = writeln!(o, "|---|---|---:|---:|---:|---|");
        }
        let ratio = |a: f64, b: f64| {
            if a.is_finite() && b.is_finite() && b != 0.0 {
                format!("{:.2}", a / b)
            } else {
                "–".into()
            }
        };
        for r in &self.rows {
            let f = |v: f64| {
                if v.is_finite() {
                    format!("{:.*}", r.decimals, v)
                } else {
                    "–".into()
                }
            };
            let peer_cells = if peer {
                format!(" {} |", f(r.peer))
            } else {
                String::new()
            };
            let peer_ratio = if peer {
                format!(" {} |", ratio(r.via, r.peer))
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |{peer_cells} {} |{peer_ratio} {} |",
                r.upstream,
                r.figure,
                f(r.direct),
                f(r.via),
                ratio(r.via, r.direct),
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

pub fn progress(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted durations, in ms.
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    ms(sorted[i.min(sorted.len() - 1)])
}

/// CPU seconds of Postern, the load generator's threads and the in-process
/// upstream's threads.
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub postern: f64,
    pub client: f64,
    pub upstream: f64,
}

impl Cpu {
    pub fn now(pid: u32) -> Cpu {
        Cpu {
            postern: procfs::process_cpu(pid),
            client: procfs::threads_cpu(CLIENT_THREADS),
            upstream: procfs::threads_cpu(UPSTREAM_THREADS),
        }
    }
    pub fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            postern: self.postern + other.postern,
            client: self.client + other.client,
            upstream: self.upstream + other.upstream,
        }
    }
    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            postern: self.postern - before.postern,
            client: self.client - before.client,
            upstream: self.upstream - before.upstream,
        }
    }
}

pub fn check_warnings(p: &postern::Postern, what: &str, r: &mut Report) {
    let w = p.warnings();
    if w > 0 {
        r.notes.push(format!(
            "{what}: Postern logged {w} WARN/ERROR lines; last lines:\n\n```\n{}\n```",
            p.log_tail(5)
        ));
    }
}

pub fn target_line(what: &str, met: bool, detail: String) -> String {
    format!("{}: {what} — {detail}", if met { "MET" } else { "MISSED" })
}

pub fn evaluate(r: &mut Report) {
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
    for u in ["dovecot", "memory"] {
        if let Some((_, v)) = ratio(
            r,
            u,
            "Queue accept msgs/s, 10 KiB, 16 sessions (direct: relay)",
        ) {
            r.targets.push(target_line(
                &format!("{u}: queue accepts ≥ 2,000 msgs/s of 10 KiB, fsync included"),
                v >= 2000.0,
                format!("{v:.0} msgs/s"),
            ));
        }
        if let Some((d, v)) = ratio(r, u, "Queue drain msgs/s, 16 workers (direct: relay)") {
            let q = v / d;
            r.targets.push(target_line(
                &format!("{u}: queue drains ≥ 0.9 × the direct relay rate"),
                q >= 0.9,
                format!("{q:.2} ({v:.0} vs {d:.0} msgs/s)"),
            ));
        }
    }
    let cpu_rows: Vec<(String, String, f64, f64)> = r
        .rows
        .iter()
        .filter(|x| x.figure.starts_with("CPU "))
        .map(|x| (x.upstream.clone(), x.figure.clone(), x.direct, x.via))
        .collect();
    if let Some((d, v)) = ratio(
        r,
        "dovecot",
        "CPU µs/msg: client (direct) vs Postern (via), 16 sessions",
    ) {
        let q = v / d;
        r.targets.push(target_line(
            "dovecot: Postern's CPU per relayed message at 16 sessions ≤ 2 × the direct client's",
            q <= 2.0,
            format!("{q:.2} × ({v:.0} vs {d:.0} µs/msg)"),
        ));
    }
    for (u, f, d, v) in cpu_rows {
        r.targets.push(target_line(
            &format!("{u}: Postern's CPU no worse than the direct client's own ({f})"),
            v <= d,
            format!("Postern {v:.2} vs client {d:.2}"),
        ));
    }
    r.targets.extend(earlier);
}
