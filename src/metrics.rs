//! The process's counters for `GET /metrics` (Prometheus text format, with
//! the `prometheus-client` crate). Counted where things happen: sessions
//! (server), local logins (auth::users), messages (the SMTP session). What
//! is a state rather than an event (quota, queue, connection caps, faults,
//! captured mail) is read at scrape time by `http::ops`.
//!
//! Label values are config names (users, accounts, routes, listener
//! addresses) or fixed words, never what a client sent: a login under an
//! unknown name counts as `(unknown)`. No secret is ever a label.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Latency buckets in seconds, 1 ms to 30 s: a loopback server answers in
/// about a millisecond, a provider across the world in hundreds, a TLS
/// handshake to a slow one in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type Latencies = Family<Labels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    sessions_total: Family<Labels, Counter>,
    sessions_open: Family<Labels, Gauge>,
    logins: Family<Labels, Counter>,
    messages: Family<Labels, Counter>,
    recipients: Family<Labels, Counter>,
    refreshes: Family<Labels, Counter>,
    upstream_latency: Latencies,
    upstream_messages: Family<Labels, Counter>,
    queue_rcpts: Family<Labels, Counter>,
    started: std::time::SystemTime,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    sessions_total: Family::default(),
    sessions_open: Family::default(),
    logins: Family::default(),
    messages: Family::default(),
    recipients: Family::default(),
    refreshes: Family::default(),
    upstream_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
    upstream_messages: Family::default(),
    queue_rcpts: Family::default(),
    started: std::time::SystemTime::now(),
});

/// Counts a session open while it lives.
pub struct SessionGuard(Labels);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        METRICS.sessions_open.get_or_create(&self.0).dec();
    }
}

/// What became of a message at the end of DATA, from the reply's code and
/// whether Postern's queue took it (an upstream's own "queued as" is not).
pub fn outcome(code: u16, queued: bool) -> &'static str {
    match code {
        200..=299 if queued => "queued",
        200..=299 => "accepted",
        400..=499 => "deferred",
        _ => "refused",
    }
}

/// The labels of a transaction's step: user, route, outcome and the
/// reply's enhanced status code.
fn tx_labels(user: &str, route: &str, outcome: &str, status: Option<&str>) -> Labels {
    vec![
        ("user", user.to_owned()),
        ("route", route.to_owned()),
        ("outcome", outcome.to_owned()),
        ("status", status.unwrap_or("").to_owned()),
    ]
}

/// The `result` label of a check: "ok" or "failed".
fn result(ok: bool) -> String {
    if ok { "ok" } else { "failed" }.to_owned()
}

impl Metrics {
    /// A session began on `listener` (its configured address).
    pub fn session(&self, proto: &str, listener: &str) -> SessionGuard {
        let l: Labels = vec![
            ("proto", proto.to_owned()),
            ("listener", listener.to_owned()),
        ];
        self.sessions_total.get_or_create(&l).inc();
        self.sessions_open.get_or_create(&l).inc();
        SessionGuard(l)
    }

    /// A local login was checked; `user` is a configured name or `None`.
    pub fn login(&self, user: Option<&str>, ok: bool) {
        let l: Labels = vec![
            ("user", user.unwrap_or("(unknown)").to_owned()),
            ("result", result(ok)),
        ];
        self.logins.get_or_create(&l).inc();
    }

    /// A transaction ended for local user `user` on `route` (its
    /// `send_via` key): its outcome and the reply's enhanced status code
    /// (RFC 3463, the reason: `4.7.0` a quota, `5.7.1` a policy…).
    pub fn message(&self, user: &str, route: &str, outcome: &'static str, status: Option<&str>) {
        self.messages
            .get_or_create(&tx_labels(user, route, outcome, status))
            .inc();
    }

    /// A recipient was answered for local user `user` on `route`: accepted,
    /// deferred or refused, with the enhanced status code of the reply.
    pub fn recipient(&self, user: &str, route: &str, code: u16, status: Option<&str>) {
        let outcome = match code {
            200..=299 => "accepted",
            400..=499 => "deferred",
            _ => "refused",
        };
        self.recipients
            .get_or_create(&tx_labels(user, route, outcome, status))
            .inc();
    }

    /// A token request for built-in OAuth account `account` ended.
    pub fn refresh(&self, account: &str, ok: bool) {
        let l: Labels = vec![("account", account.to_owned()), ("result", result(ok))];
        self.refreshes.get_or_create(&l).inc();
    }

    /// Runs one step with an upstream server and, when it succeeds, records
    /// how long it took: `connect` (TCP and TLS, up to the greeting),
    /// `login` (authentication) or `submit` (the message, from DATA to the
    /// final reply).
    pub async fn timed<T, E>(
        &self,
        proto: &'static str,
        account: &str,
        step: &'static str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = std::time::Instant::now();
        let r = f.await;
        if r.is_ok() {
            let l: Labels = vec![
                ("proto", proto.to_owned()),
                ("account", account.to_owned()),
                ("step", step.to_owned()),
            ];
            self.upstream_latency
                .get_or_create(&l)
                .observe(started.elapsed().as_secs_f64());
        }
        r
    }

    /// Account `account`'s server gave its verdict on a message (`verdict`
    /// as in `upstream::Verdict`: accepted, quota, throttled, …), or the
    /// submission failed on the way (`lost`).
    pub fn upstream_message(&self, account: &str, verdict: &str) {
        let l: Labels = vec![
            ("account", account.to_owned()),
            ("verdict", verdict.to_owned()),
        ];
        self.upstream_messages.get_or_create(&l).inc();
    }

    /// `n` recipients of a queued message on `route` reached their end:
    /// `delivered`, `bounced` (refused for good) or `expired`.
    pub fn queue_done(&self, route: &str, outcome: &'static str, n: usize) {
        let l: Labels = vec![("route", route.to_owned()), ("outcome", outcome.to_owned())];
        self.queue_rcpts.get_or_create(&l).inc_by(n as u64);
    }

    /// A registry with the counters; the caller adds what it reads now.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("postern");
        let counters = [
            (
                "sessions",
                "Sessions accepted, by protocol and listener",
                &self.sessions_total,
            ),
            (
                "logins",
                "Local logins checked, by user and result",
                &self.logins,
            ),
            (
                "messages",
                "SMTP transactions ended at DATA, by user, route, outcome (accepted, queued, deferred, refused) and enhanced status code",
                &self.messages,
            ),
            (
                "recipients",
                "Recipients answered at RCPT, by user, route, outcome (accepted, deferred, refused) and enhanced status code",
                &self.recipients,
            ),
            (
                "oauth_refreshes",
                "Token requests of built-in OAuth accounts, by account and result",
                &self.refreshes,
            ),
            (
                "upstream_messages",
                "Messages submitted to an account's server, by account and verdict (accepted, quota, throttled, sender_denied, auth, busy, transient, permanent)",
                &self.upstream_messages,
            ),
            (
                "queue_recipients_done",
                "Recipients of queued messages that reached their end, by route and outcome (delivered, bounced, expired)",
                &self.queue_rcpts,
            ),
        ];
        for (name, help, family) in counters {
            r.register(name, help, family.clone());
        }
        r.register(
            "sessions_open",
            "Sessions open now, by protocol and listener",
            self.sessions_open.clone(),
        );
        r.register(
            "upstream_latency_seconds",
            "Time taken by upstream servers, by protocol, account and step (connect: TCP and TLS to the greeting; login; submit: DATA to the final reply)",
            self.upstream_latency.clone(),
        );
        let start = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        start.set(
            self.started
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        r.register(
            "start_time_seconds",
            "When the process started (Unix time)",
            start,
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_from_replies() {
        assert_eq!(outcome(250, true), "queued");
        assert_eq!(outcome(250, false), "accepted");
        assert_eq!(outcome(451, false), "deferred");
        assert_eq!(outcome(554, false), "refused");
    }
}
