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
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    sessions_total: Family<Labels, Counter>,
    sessions_open: Family<Labels, Gauge>,
    logins: Family<Labels, Counter>,
    messages: Family<Labels, Counter>,
    refreshes: Family<Labels, Counter>,
    started: std::time::SystemTime,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    sessions_total: Family::default(),
    sessions_open: Family::default(),
    logins: Family::default(),
    messages: Family::default(),
    refreshes: Family::default(),
    started: std::time::SystemTime::now(),
});

/// Counts a session open while it lives.
pub struct SessionGuard(Labels);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        METRICS.sessions_open.get_or_create(&self.0).dec();
    }
}

/// What became of a message at the end of DATA, from the reply's code.
pub fn outcome(code: u16, text: &str) -> &'static str {
    match code {
        200..=299 if text.contains("queued as") => "queued",
        200..=299 => "accepted",
        400..=499 => "deferred",
        _ => "refused",
    }
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

    /// A transaction ended with `code` for local user `user` on `route`
    /// (its `send_via` key).
    pub fn message(&self, user: &str, route: &str, outcome: &'static str) {
        let l: Labels = vec![
            ("user", user.to_owned()),
            ("route", route.to_owned()),
            ("outcome", outcome.to_owned()),
        ];
        self.messages.get_or_create(&l).inc();
    }

    /// A token request for built-in OAuth account `account` ended.
    pub fn refresh(&self, account: &str, ok: bool) {
        let l: Labels = vec![("account", account.to_owned()), ("result", result(ok))];
        self.refreshes.get_or_create(&l).inc();
    }

    /// A registry with the counters; the caller adds what it reads now.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("postern");
        r.register(
            "sessions",
            "Sessions accepted, by protocol and listener",
            self.sessions_total.clone(),
        );
        r.register(
            "sessions_open",
            "Sessions open now, by protocol and listener",
            self.sessions_open.clone(),
        );
        r.register(
            "logins",
            "Local logins checked, by user and result",
            self.logins.clone(),
        );
        r.register(
            "messages",
            "SMTP transactions ended at DATA, by user, route and outcome (accepted, queued, deferred, refused)",
            self.messages.clone(),
        );
        r.register(
            "oauth_refreshes",
            "Token requests of built-in OAuth accounts, by account and result",
            self.refreshes.clone(),
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
        assert_eq!(outcome(250, "2.0.0 queued as 7"), "queued");
        assert_eq!(outcome(250, "2.0.0 OK"), "accepted");
        assert_eq!(outcome(451, "4.4.1 later"), "deferred");
        assert_eq!(outcome(554, "5.2.0 quota"), "refused");
    }
}
