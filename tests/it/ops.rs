//! The operator's HTTP endpoints against a running `postern run`: `/metrics`
//! parsed with the Prometheus client library's own OpenMetrics parser
//! (Debian's python3-prometheus-client), its values following logins,
//! sends, a refused login and a fault, no client-supplied address in any
//! label; `/healthz`; `/readyz` following the quota store (a private Redis
//! stopped and started); `/api/status` equal to `postern status --json`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::hardening::PrivateRedis;
use crate::harness::*;
use crate::sandbox::{get, sandbox_config, send, send_as, simple};

const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// `/metrics`, parsed: `(name, labels, value)` per sample.
fn scrape(p: &Postern) -> (String, Vec<(String, serde_json::Value, f64)>) {
    let r = get(p, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text();
    let f = p.dir.path().join(format!("metrics-{}.txt", marker("m")));
    std::fs::write(&f, &text).unwrap();
    // Debian's interpreter: the one apt installed the parser for.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PARSE, f.to_str().unwrap()])
        .output()
        .expect("/usr/bin/python3");
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics (tests/run installs python3-prometheus-client): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<(String, serde_json::Value, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    (text, v)
}

fn value(samples: &[(String, serde_json::Value, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn metrics_health_and_status_over_http() {
    let cfg = sandbox_config(
        "[[faults]]\nname = \"quota\"\nreply = \"gmail-daily-limit\"\nusers = [\"app2\"]\n",
    );
    let p = Postern::start(&cfg, 2);
    let (_, before) = scrape(&p);
    assert_eq!(value(&before, "postern_messages_total", &[]), 0.0);

    assert!(send(&p, &simple(&marker("ops"))).starts_with("sent"));
    let r = send_as(
        &p,
        "app2",
        &simple("refused"),
        "me@example.test",
        &["victim@example.test"],
    );
    assert!(r.starts_with("data 550"), "{r}");
    // Wrong passwords: a configured user, and a name the client made up.
    for user in ["app", "evil@attacker.test"] {
        let (_, r) = crate::reload::login(&p, user, "nope");
        assert!(r.starts_with("535"), "{r}");
    }

    let (text, m) = scrape(&p);
    let sessions = value(&m, "postern_sessions_total", &[("proto", "smtp")]);
    assert!(sessions >= 4.0, "{text}");
    assert_eq!(
        value(
            &m,
            "postern_logins_total",
            &[("user", "app"), ("result", "ok")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            "postern_logins_total",
            &[("user", "app"), ("result", "failed")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "postern_logins_total",
            &[("user", "(unknown)"), ("result", "failed")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "postern_messages_total",
            &[
                ("user", "app"),
                ("route", "capture"),
                ("outcome", "accepted")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "postern_messages_total",
            &[("user", "app2"), ("outcome", "refused")]
        ),
        1.0
    );
    assert_eq!(value(&m, "postern_faults_fired", &[("rule", "quota")]), 1.0);
    assert_eq!(
        value(&m, "postern_captured_messages", &[("inbox", "app")]),
        1.0
    );
    assert_eq!(value(&m, "postern_quota_store_up", &[]), 1.0);
    assert!(value(&m, "postern_start_time_seconds", &[]) > 1.7e9);
    // Labels are config names and fixed words: nothing a client sent.
    for (name, labels, _) in &m {
        for (k, v) in labels.as_object().unwrap() {
            let v = v.as_str().unwrap();
            assert!(
                !v.contains('@') && !v.contains("attacker") && !v.contains(APP_PASSWORD),
                "{name}{{{k}={v}}}"
            );
        }
    }
    assert!(!text.contains("nope") && !text.contains(APP_PASSWORD));

    let h = get(&p, "/healthz");
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    let r = get(&p, "/readyz");
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));

    // /api/status is `postern status --json`.
    let mut over_http = get(&p, "/api/status").json();
    let out = Command::new(BIN)
        .args(["status", "--json", "--config", p.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for v in [&mut over_http, &mut cli] {
        v["quota"].as_object_mut().unwrap().remove("at");
    }
    assert_eq!(over_http, cli);
}

#[test]
fn readyz_follows_the_quota_store() {
    let mut redis = PrivateRedis::start_persistent();
    // quota_store is a top-level key: before any table.
    let cfg = format!("quota_store = \"{}\"\n{}", redis.url(), sandbox_config(""));
    let p = Postern::start(&cfg, 2);
    assert_eq!(get(&p, "/readyz").status, 200);

    redis.stop();
    let r = get(&p, "/readyz");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().starts_with("not ready: quota store"),
        "{}",
        r.text()
    );
    assert!(!r.text().contains('\r'));
    let (_, m) = scrape(&p);
    assert_eq!(value(&m, "postern_quota_store_up", &[]), 0.0);
    assert_eq!(get(&p, "/healthz").status, 200, "the process is up");

    // Back (with its data: it was only down): ready again.
    redis.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(&p, "/readyz");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {}", r.text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Mail relayed through a Dovecot account is measured per account: the
/// upstream's connect, login and submit times, its verdict, the quota in
/// force; a recipient deferred by the quota counts with its reason; and
/// the message gets one summary line naming user, account and reply.
#[test]
fn relayed_mail_is_measured_per_account() {
    let cfg = crate::relay::relay_config(
        "dv",
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n{}",
            crate::relay::dovecot_account(
                "dv",
                "u56@example.test",
                "starttls",
                "auth = \"password\"\npassword_env = \"U_PW\"\ndaily_limit = 1"
            )
        ),
    );
    let p = Postern::start_with(&cfg, 2, &[("U_PW", "pw-u56")]);
    let m1 = marker("measured");
    let r = send_as(
        &p,
        "app",
        &crate::relay::message(&m1, "u56@example.test"),
        "u56@example.test",
        &["rcpt@example.org"],
    );
    assert!(r.starts_with("sent"), "{r}\n{}", p.logs());
    let r = send_as(
        &p,
        "app",
        &crate::relay::message(&marker("over"), "u56@example.test"),
        "u56@example.test",
        &["rcpt@example.org"],
    );
    assert!(r.starts_with("rcpt 4"), "the quota did not defer: {r}");

    let (text, m) = scrape(&p);
    for step in ["connect", "login", "submit"] {
        let n = value(
            &m,
            "postern_upstream_latency_seconds_count",
            &[("proto", "smtp"), ("account", "dv"), ("step", step)],
        );
        assert!(n >= 1.0, "no {step} time for dv:\n{text}");
        let sum = value(
            &m,
            "postern_upstream_latency_seconds_sum",
            &[("account", "dv"), ("step", step)],
        );
        assert!(sum > 0.0 && sum < 10.0, "{step} took {sum} s");
    }
    assert_eq!(
        value(
            &m,
            "postern_upstream_messages_total",
            &[("account", "dv"), ("verdict", "accepted")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            "postern_messages_total",
            &[("user", "app"), ("route", "dv"), ("outcome", "accepted")]
        ),
        1.0,
        "{text}"
    );
    let deferred: Vec<_> = m
        .iter()
        .filter(|(n, l, _)| {
            n == "postern_recipients_total" && l["user"] == "app" && l["outcome"] == "deferred"
        })
        .collect();
    assert_eq!(deferred.len(), 1, "{text}");
    assert!(
        deferred[0].1["status"].as_str().unwrap().starts_with("4."),
        "{deferred:?}"
    );
    assert_eq!(
        value(&m, "postern_quota_used", &[("account", "dv")]),
        1.0,
        "{text}"
    );
    assert_eq!(value(&m, "postern_quota_limit", &[("account", "dv")]), 1.0);
    assert!(value(&m, "postern_upstream_connections_cap", &[("account", "dv")]) >= 1.0);
    assert!(!text.contains("pw-u56") && !text.contains("u56@"));

    // One grep-able line for the relayed message (the log reader may be a
    // moment behind the reply).
    p.wait_log("transaction done", Duration::from_secs(10));
    let logs = p.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("transaction done") && l.contains("outcome=accepted"))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    for want in [
        "user=\"app\"",
        "account=\"dv\"",
        "queue_id=-",
        "rcpts=1",
        "size=",
        "code=250",
        "ms=",
    ] {
        assert!(lines[0].contains(want), "{want} missing: {}", lines[0]);
    }
}
