//! The operator's endpoints on the one HTTP listener: `/healthz` (the
//! process answers), `/readyz` (the quota store answers and trusts its
//! state), `/api/status` (what `postern status --json` prints) and
//! `/metrics` (Prometheus text format: the counters of [`crate::metrics`]
//! and the states read now: quota per mailbox, upstream connections per
//! account, the queue per route, faults fired, captured mail per inbox).

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::api::error as text;
use super::shared::AppState;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(|| async { text(StatusCode::OK, "ok\n") }))
        .route("/readyz", get(ready))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
}

/// Why Postern cannot serve as it should now, if it cannot.
async fn not_ready(s: &AppState) -> Option<String> {
    let view = s.view();
    let pools = view.router.pools()?;
    if let Err(e) = pools.ping().await {
        return Some(format!("quota store unreachable: {e}"));
    }
    match pools.status(jiff::Timestamp::now()).await {
        Err(e) => Some(format!("quota store unreachable: {e}")),
        Ok(st) => st
            .store_lost
            .map(|why| format!("quota store lost its state: {why}")),
    }
}

async fn ready(State(s): State<AppState>) -> Response {
    match not_ready(&s).await {
        None => text(StatusCode::OK, "ready\n"),
        Some(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", crate::text::sanitize(&why, 500)),
        ),
    }
}

async fn status(State(s): State<AppState>) -> Response {
    let view = s.view();
    let (Some(pools), Some(queue)) = (view.router.pools(), view.router.queue()) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "status is not available\n");
    };
    match crate::status::json(&view.config, pools, queue).await {
        Ok(v) => {
            let mut b = serde_json::to_vec_pretty(&v).unwrap_or_default();
            b.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], b).into_response()
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;

/// A gauge family filled from `rows`.
fn gauges<I: IntoIterator<Item = (Labels, f64)>>(rows: I) -> Family<Labels, FGauge> {
    let f = Family::<Labels, FGauge>::default();
    for (l, v) in rows {
        f.get_or_create(&l).set(v);
    }
    f
}

fn one(key: &'static str, value: &str) -> Labels {
    vec![(key, value.to_owned())]
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut r = crate::metrics::METRICS.registry();
    let now = jiff::Timestamp::now();
    let view = s.view();
    if let Some(pools) = view.router.pools() {
        let up = match (pools.ping().await, pools.status(now).await) {
            (Ok(()), Ok(st)) => {
                let acc = &st.accounts;
                r.register(
                    "quota_used",
                    "Recipients the upstream accepted in the mailbox's window",
                    gauges(
                        acc.iter()
                            .map(|a| (one("account", &a.account), a.used as f64)),
                    ),
                );
                r.register(
                    "quota_reserved",
                    "Recipients reserved in the window and not yet committed",
                    gauges(
                        acc.iter()
                            .map(|a| (one("account", &a.account), a.reserved as f64)),
                    ),
                );
                r.register(
                    "quota_limit",
                    "The mailbox's limit in force now (configured, ramp or observed ceiling)",
                    gauges(
                        acc.iter()
                            .map(|a| (one("account", &a.account), a.limit.value as f64)),
                    ),
                );
                r.register(
                    "quota_window_seconds",
                    "The length of the mailbox's counting window",
                    gauges(
                        acc.iter()
                            .map(|a| (one("account", &a.account), a.window_secs as f64)),
                    ),
                );
                if st.store_lost.is_some() {
                    0.0
                } else {
                    1.0
                }
            }
            _ => 0.0,
        };
        r.register(
            "quota_store_up",
            "1 when the quota store answers and trusts its state",
            gauges([(Vec::new(), up)]),
        );
    }
    let caps: Vec<_> = view.router.accounts().map(|a| a.gate_status()).collect();
    r.register(
        "upstream_connections_open",
        "Upstream SMTP connections open now (in use or warm)",
        gauges(
            caps.iter()
                .map(|c| (one("account", &c.account), c.open as f64)),
        ),
    );
    r.register(
        "upstream_connections_cap",
        "The upstream connection cap in force now (lowered after a too-many-connections reply)",
        gauges(
            caps.iter()
                .map(|c| (one("account", &c.account), c.cap as f64)),
        ),
    );
    if let Some(q) = view.router.queue() {
        if let Ok(routes) = q.summary().await {
            r.register(
                "queue_messages",
                "Messages in the queue, by route",
                gauges(
                    routes
                        .iter()
                        .map(|q| (one("route", &q.route), q.messages as f64)),
                ),
            );
            r.register(
                "queue_oldest_age_seconds",
                "Age of the oldest queued message, by route",
                gauges(routes.iter().map(|q| {
                    (
                        one("route", &q.route),
                        (now - q.oldest).as_secs().max(0) as f64,
                    )
                })),
            );
        }
    }
    r.register(
        "faults_fired",
        "Fault injections fired, by rule",
        gauges(
            s.faults
                .list()
                .into_iter()
                .map(|f| (one("rule", &f.id), f.fired as f64)),
        ),
    );
    if let Ok(inboxes) = s.capture.index().inboxes().await {
        r.register(
            "captured_messages",
            "Captured messages kept, by inbox",
            gauges(
                inboxes
                    .iter()
                    .map(|i| (one("inbox", &i.name), i.total as f64)),
            ),
        );
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
