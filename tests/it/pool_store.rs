//! The shared quota store against the real redis-server the test script
//! starts (`REDIS_URL`). Every test uses its own key prefix, and an injected
//! clock: nothing sleeps.

use std::path::Path;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use postern::config::Config;
use postern::pool::{LimitSource, ParkKind, Pick, Pools, Reservation, Reserve, SkipReason, Store};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_URL is not set: run the suite with tests/run, or \
             `tests/peers/start && source tests/peers/run/env` (it starts redis-server)"
        )
    })
}

/// A key prefix no other test (or earlier run) uses.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("postern-test:{test}:{}:{nanos}:", std::process::id())
}

fn config(accounts: &[(&str, &str)], pools: &str) -> Config {
    let mut text = String::from("[smtp]\nlisten = \"127.0.0.1:2525\"\n");
    for (name, extra) in accounts {
        text.push_str(&format!(
            "[accounts.{name}]\nemail = \"{name}@example.test\"\n\
             smtp = {{ host = \"127.0.0.1\", port = 2525, tls = \"none\" }}\n\
             auth = \"password\"\npassword_env = \"UNUSED\"\n{extra}\n"
        ));
    }
    text.push_str(pools);
    Config::from_str(&text, Path::new("/nonexistent/postern.toml")).expect("test config is valid")
}

/// One "process": its own connection to redis-server, its own Pools.
async fn instance(cfg: &Config, prefix: &str) -> Arc<Pools> {
    let store = Store::redis(&redis_url(), prefix)
        .await
        .unwrap_or_else(|e| panic!("cannot reach redis-server at {}: {e}", redis_url()));
    Arc::new(Pools::new(cfg, store).unwrap())
}

/// Deletes the test's keys (the server is shared with other tests).
async fn cleanup(prefix: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut con)
        .await
        .unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut con)
            .await
            .unwrap();
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn hours(n: i64) -> SignedDuration {
    SignedDuration::from_hours(n)
}

async fn reserve_ok(p: &Pools, account: &str, n: u32, now: Timestamp) -> Reservation {
    match p.reserve(account, n, now).await.unwrap() {
        Reserve::Reserved(r) => r,
        Reserve::Full(f) => panic!("{account}: expected room for {n}, got {f:?}"),
    }
}

async fn is_full(p: &Pools, account: &str, n: u32, now: Timestamp) -> bool {
    match p.reserve(account, n, now).await.unwrap() {
        Reserve::Full(_) => true,
        Reserve::Reserved(r) => {
            p.release(&[r], now).await.unwrap();
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_exceed_a_limit_together() {
    let prefix = prefix("limit");
    let cfg = config(&[("shared", "daily_limit = 20")], "");
    let one = instance(&cfg, &prefix).await;
    let two = instance(&cfg, &prefix).await;
    let now = ts("2030-01-01T12:00:00Z");
    let mut tasks = Vec::new();
    for i in 0..16 {
        // 8 concurrent reservers per instance, 5 recipients each.
        let pools = Arc::clone(if i < 8 { &one } else { &two });
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..5 {
                if let Reserve::Reserved(r) = pools.reserve("shared", 1, now).await.unwrap() {
                    got.push(r);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(
        all.len(),
        20,
        "exactly the limit is reserved across both instances"
    );
    let s = one.account_status("shared", now).await.unwrap();
    assert_eq!((s.used, s.reserved, s.remaining), (0, 20, 0));
    // Commit half on one instance: both see them as sent.
    one.commit(&all[..10], now).await.unwrap();
    let s = two.account_status("shared", now).await.unwrap();
    assert_eq!((s.used, s.reserved), (10, 10));
    assert!(is_full(&two, "shared", 1, now).await);
    // Releasing on the other instance frees units for everyone.
    two.release(&all[10..13], now).await.unwrap();
    let s = one.account_status("shared", now).await.unwrap();
    assert_eq!((s.used, s.reserved, s.remaining), (10, 7, 3));
    let r = reserve_ok(&one, "shared", 3, now).await;
    assert!(is_full(&two, "shared", 1, now).await);
    two.release(&[r], now).await.unwrap();
    cleanup(&prefix).await;
}

#[tokio::test]
async fn windows_ramp_and_ceiling_through_redis() {
    let prefix = prefix("windows");
    let cfg = config(
        &[
            ("roll", "daily_limit = 3"),
            (
                "cal",
                "daily_limit = 2\nwindow = \"calendar-day\"\ntime_zone = \"America/New_York\"",
            ),
            ("ramp", "daily_limit = 10\nramp = { start = 2, step = 3 }"),
        ],
        "",
    );
    let p = instance(&cfg, &prefix).await;
    let t0 = ts("2030-03-10T04:30:00Z"); // 23:30 EST on 2030-03-09

    // Rolling: full until the oldest unit is 24h old.
    let r = reserve_ok(&p, "roll", 3, t0).await;
    p.commit(&[r], t0).await.unwrap();
    match p.reserve("roll", 1, t0 + hours(23)).await.unwrap() {
        Reserve::Full(f) => {
            assert_eq!(f.counted, 3);
            assert_eq!(f.room_at, Some(t0 + hours(24)));
        }
        Reserve::Reserved(r) => panic!("reserved {r:?}"),
    }
    let r = reserve_ok(&p, "roll", 3, t0 + hours(24)).await;
    p.release(&[r], t0).await.unwrap();

    // Calendar day in New York: new day at local midnight, an hour later.
    let r = reserve_ok(&p, "cal", 2, t0).await;
    p.commit(&[r], t0).await.unwrap();
    assert!(is_full(&p, "cal", 1, t0).await);
    let s = p.account_status("cal", t0).await.unwrap();
    assert_eq!(s.next_free_at, Some(ts("2030-03-10T05:00:00Z")));
    let r = reserve_ok(&p, "cal", 2, ts("2030-03-10T05:00:00Z")).await;
    p.release(&[r], t0).await.unwrap();

    // Ramp: day 0 allows 2; a commit starts the ramp; day 1 allows 5.
    let s = p.account_status("ramp", t0).await.unwrap();
    assert_eq!(s.limit.value, 2);
    assert_eq!(s.limit.source, LimitSource::Ramp { day: 0 });
    let r = reserve_ok(&p, "ramp", 2, t0).await;
    assert!(is_full(&p, "ramp", 1, t0).await);
    p.commit(&[r], t0).await.unwrap();
    let d1 = t0 + hours(24);
    assert!(!is_full(&p, "ramp", 5, d1).await);
    assert!(is_full(&p, "ramp", 6, d1).await);

    // Observed ceiling: 2 counted below the limit of 3 → ceiling 2 for 7 days.
    let later = t0 + hours(30);
    let r = reserve_ok(&p, "roll", 2, later).await;
    p.commit(&[r], later).await.unwrap();
    let q = p
        .quota_refused("roll", "550 5.4.5 Daily user sending limit exceeded", later)
        .await
        .unwrap();
    assert_eq!(q.ceiling.map(|c| c.value), Some(2));
    assert_eq!(q.parked.until, later + hours(24));
    let week = later + hours(24 * 7);
    let s = p.account_status("roll", later + hours(25)).await.unwrap();
    assert_eq!(s.limit.source, LimitSource::Ceiling { until: week });
    assert!(!is_full(&p, "roll", 2, later + hours(25)).await);
    assert!(is_full(&p, "roll", 3, later + hours(25)).await);
    assert!(!is_full(&p, "roll", 3, week).await);
    assert_eq!(
        s.last_error.map(|e| e.text).as_deref(),
        Some("550 5.4.5 Daily user sending limit exceeded")
    );
    cleanup(&prefix).await;
}

#[tokio::test]
async fn pacing_and_parking_are_shared() {
    let prefix = prefix("pacing");
    let cfg = config(
        &[
            ("a", "min_interval = \"60s\""),
            ("b", "min_interval = \"60s\""),
        ],
        "[pools.p]\naccounts = [\"a\", \"b\"]\n",
    );
    let one = instance(&cfg, &prefix).await;
    let two = instance(&cfg, &prefix).await;
    let now = ts("2030-01-01T00:00:00Z");
    let first = match one.pick("p", 1, &[], now).await.unwrap() {
        Pick::Picked(p) => p,
        Pick::Exhausted(e) => panic!("{e:?}"),
    };
    assert_eq!(first.account, "a");
    // The other instance's round-robin also starts at a, but a is paced out
    // by the first instance's pick.
    let second = match two.pick("p", 1, &[], now).await.unwrap() {
        Pick::Picked(p) => p,
        Pick::Exhausted(e) => panic!("{e:?}"),
    };
    assert_eq!(second.account, "b");
    assert!(second
        .skipped
        .iter()
        .any(|s| s.account == "a" && matches!(s.why, SkipReason::Paced { .. })));
    // Both paced: exhausted until the first pace slot ends.
    match one.pick("p", 1, &[], now).await.unwrap() {
        Pick::Exhausted(e) => {
            assert_eq!(
                e.capacity_returns_at,
                Some(now + SignedDuration::from_secs(60))
            )
        }
        Pick::Picked(p) => panic!("picked {p:?}"),
    }
    // Parking on one instance is seen by the other.
    let t = now + SignedDuration::from_secs(60);
    let parked = one.throttled("a", "421 4.7.0 too fast", t).await.unwrap();
    assert_eq!(parked.until, t + SignedDuration::from_mins(1));
    match two.pick("p", 1, &[], t).await.unwrap() {
        Pick::Picked(p) => assert_eq!(p.account, "b"),
        Pick::Exhausted(e) => panic!("{e:?}"),
    }
    let again = two.throttled("a", "421 4.7.0 too fast", t).await.unwrap();
    assert_eq!(
        again.until, parked.until,
        "a reply while parked keeps the step"
    );
    let t = parked.until;
    let second = two.throttled("a", "421 4.7.0 too fast", t).await.unwrap();
    assert_eq!(
        second.until,
        t + SignedDuration::from_mins(5),
        "ladder is shared"
    );
    // Auth parking until unparked, cleared by kind.
    two.auth_failed("b", "535 5.7.8", t).await.unwrap();
    let s = one.account_status("b", t + hours(24 * 365)).await.unwrap();
    assert_eq!(s.parked.map(|p| p.kind), Some(ParkKind::Auth));
    assert!(!one.unpark("b", Some(ParkKind::Quota)).await.unwrap());
    assert!(one.unpark("b", Some(ParkKind::Auth)).await.unwrap());
    assert_eq!(two.account_status("b", t).await.unwrap().parked, None);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn reservations_outlive_the_instance() {
    let prefix = prefix("crash");
    let cfg = config(&[("a", "daily_limit = 4")], "");
    let now = ts("2030-01-01T00:00:00Z");
    {
        let p = instance(&cfg, &prefix).await;
        let _in_flight = reserve_ok(&p, "a", 3, now).await;
        // The instance goes away without commit or release.
    }
    let p = instance(&cfg, &prefix).await;
    let s = p.account_status("a", now + hours(1)).await.unwrap();
    assert_eq!((s.used, s.reserved, s.remaining), (0, 3, 1));
    let st = p.status(now).await.unwrap();
    assert!(st.store.starts_with("redis "), "{}", st.store);
    cleanup(&prefix).await;
}
