//! Pool tests on the SQLite store with an injected clock (no sleeping).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn secs(n: i64) -> SignedDuration {
    SignedDuration::from_secs(n)
}

fn hours(n: i64) -> SignedDuration {
    SignedDuration::from_hours(n)
}

/// A config with `[accounts.NAME]` bodies given as TOML lines, plus pools.
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

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    pools: Pools,
}

fn fixture(accounts: &[(&str, &str)], pools: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SQLITE_FILE);
    let store = Store::sqlite(&path).unwrap();
    let pools = Pools::with_seed(&config(accounts, pools), store, 7).unwrap();
    Fixture {
        _dir: dir,
        path,
        pools,
    }
}

async fn reserve_ok(p: &Pools, account: &str, n: u32, now: Timestamp) -> Reservation {
    match p.reserve(account, n, now).await.unwrap() {
        Reserve::Reserved(r) => r,
        Reserve::Full(f) => panic!("{account}: expected room for {n}, got {f:?}"),
    }
}

async fn reserve_full(p: &Pools, account: &str, n: u32, now: Timestamp) -> Full {
    match p.reserve(account, n, now).await.unwrap() {
        Reserve::Full(f) => f,
        Reserve::Reserved(r) => panic!("{account}: expected full, reserved {r:?}"),
    }
}

/// `n` reserves of one unit each, all started at once; `who(i)` gives the
/// pools and the account of the i-th.
async fn reserve_at_once(
    n: usize,
    who: impl Fn(usize) -> (Arc<Pools>, &'static str),
    now: Timestamp,
) -> Vec<Result<Reserve, PoolError>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (pools, account) = who(i);
            tokio::spawn(async move { pools.reserve(account, 1, now).await })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

/// How many of `results` reserved their unit (a store error fails the test).
fn reserved(results: &[Result<Reserve, PoolError>]) -> usize {
    results
        .iter()
        .filter(|r| matches!(r.as_ref().expect("store error"), Reserve::Reserved(_)))
        .count()
}

async fn picked(p: &Pools, pool: &str, k: u32, exclude: &[String], now: Timestamp) -> String {
    match p.pick(pool, k, exclude, now).await.unwrap() {
        Pick::Picked(p) => p.account,
        Pick::Exhausted(e) => panic!("expected a pick, pool exhausted: {e:?}"),
    }
}

async fn exhausted(p: &Pools, pool: &str, k: u32, exclude: &[String], now: Timestamp) -> Exhausted {
    match p.pick(pool, k, exclude, now).await.unwrap() {
        Pick::Exhausted(e) => e,
        Pick::Picked(p) => panic!("expected exhaustion, picked {p:?}"),
    }
}

#[tokio::test]
async fn reserve_commit_release_arithmetic() {
    let f = fixture(&[("a", "daily_limit = 5")], "");
    let p = &f.pools;
    let now = ts("2024-05-01T12:00:00Z");
    let r1 = reserve_ok(p, "a", 2, now).await;
    let r2 = reserve_ok(p, "a", 1, now).await;
    assert_eq!((r1.units(), r1.account()), (2, "a"));
    let s = p.account_status("a", now).await.unwrap();
    assert_eq!((s.used, s.reserved, s.remaining), (0, 3, 2));
    p.commit(std::slice::from_ref(&r1), now).await.unwrap();
    let s = p.account_status("a", now).await.unwrap();
    assert_eq!((s.used, s.reserved, s.remaining), (2, 1, 2));
    assert_eq!(s.first_send, Some(now));
    // All or nothing: 3 more do not fit (2 left), 2 do.
    let full = reserve_full(p, "a", 3, now).await;
    assert_eq!(full.counted, 3);
    assert_eq!(full.limit.value, 5);
    // Rolling: r1's units (at `now`) leave the window 24h later.
    assert_eq!(full.room_at, Some(now + hours(24)));
    let r3 = reserve_ok(p, "a", 2, now).await;
    reserve_full(p, "a", 1, now).await;
    // Releasing gives the units back.
    p.release(&[r2, r3], now).await.unwrap();
    let s = p.account_status("a", now).await.unwrap();
    assert_eq!((s.used, s.reserved, s.remaining), (2, 0, 3));
    // Committing or releasing twice does nothing more.
    p.commit(std::slice::from_ref(&r1), now).await.unwrap();
    let s = p.account_status("a", now).await.unwrap();
    assert_eq!((s.used, s.reserved), (2, 0));
}

#[tokio::test]
async fn rolling_window_frees_each_unit_after_24h() {
    let f = fixture(&[("a", "daily_limit = 2")], "");
    let p = &f.pools;
    let t0 = ts("2024-05-01T08:00:00Z");
    let t1 = t0 + hours(3);
    let r = reserve_ok(p, "a", 1, t0).await;
    p.commit(&[r], t0).await.unwrap();
    let r = reserve_ok(p, "a", 1, t1).await;
    p.commit(&[r], t1).await.unwrap();
    let now = t1 + hours(1);
    let full = reserve_full(p, "a", 1, now).await;
    assert_eq!(full.room_at, Some(t0 + hours(24)));
    assert_eq!(
        p.next_free_at("a", now).await.unwrap(),
        Some(t0 + hours(24))
    );
    // One millisecond before: still counted; at t0 + 24h: free.
    reserve_full(p, "a", 1, t0 + hours(24) - SignedDuration::from_millis(1)).await;
    let r = reserve_ok(p, "a", 1, t0 + hours(24)).await;
    p.commit(&[r], t0 + hours(24)).await.unwrap();
    let later = t0 + hours(25);
    let s = p.account_status("a", later).await.unwrap();
    assert_eq!((s.used, s.remaining), (2, 0));
    assert_eq!(s.next_free_at, Some(t1 + hours(24)));
    assert_eq!(s.room_at, Some(t1 + hours(24)));
}

#[tokio::test]
async fn calendar_window_resets_at_local_midnight_across_dst() {
    let f = fixture(
        &[(
            "ny",
            "daily_limit = 2\nwindow = \"calendar-day\"\ntime_zone = \"America/New_York\"",
        )],
        "",
    );
    let p = &f.pools;
    // 2024-03-09 23:30 EST = 2024-03-10T04:30Z; two units.
    let late = ts("2024-03-10T04:30:00Z");
    let r = reserve_ok(p, "ny", 2, late).await;
    p.commit(&[r], late).await.unwrap();
    let full = reserve_full(p, "ny", 1, late).await;
    // Next local midnight: 2024-03-10 00:00 EST = 05:00Z.
    assert_eq!(full.room_at, Some(ts("2024-03-10T05:00:00Z")));
    // 00:30 EST on the DST day: a new calendar day, though only an hour
    // has passed.
    let after = ts("2024-03-10T05:30:00Z");
    let r = reserve_ok(p, "ny", 2, after).await;
    p.commit(&[r], after).await.unwrap();
    let s = p.account_status("ny", after).await.unwrap();
    assert_eq!(
        (s.used, s.window, s.time_zone.as_deref()),
        (2, Window::CalendarDay, Some("America/New_York"))
    );
    // The DST day has 23 hours: it ends at 2024-03-11 00:00 EDT = 04:00Z.
    assert_eq!(s.next_free_at, Some(ts("2024-03-11T04:00:00Z")));
    assert_eq!(s.room_at, Some(ts("2024-03-11T04:00:00Z")));
    reserve_full(p, "ny", 1, ts("2024-03-11T03:59:59Z")).await;
    let r = reserve_ok(p, "ny", 2, ts("2024-03-11T04:00:00Z")).await;
    p.release(&[r], after).await.unwrap();
    // A rolling window would have counted the 23:30 units until 23:30 next day.
}

#[tokio::test]
async fn unknown_time_zone_is_an_error() {
    let cfg = config(
        &[(
            "x",
            "window = \"calendar-day\"\ntime_zone = \"Mars/Olympus_Mons\"",
        )],
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite(&dir.path().join(SQLITE_FILE)).unwrap();
    let err = Pools::new(&cfg, store).unwrap_err();
    assert!(matches!(err, PoolError::TimeZone { .. }), "{err}");
    assert!(err.to_string().contains("Mars/Olympus_Mons"), "{err}");
}

#[tokio::test]
async fn ramp_grows_per_day_since_first_send() {
    let f = fixture(
        &[("a", "daily_limit = 5\nramp = { start = 2, step = 1 }")],
        "",
    );
    let p = &f.pools;
    let d0 = ts("2024-05-01T10:00:00Z");
    let s = p.account_status("a", d0).await.unwrap();
    assert_eq!(
        s.limit,
        Limit {
            value: 2,
            source: LimitSource::Ramp { day: 0 }
        }
    );
    let r = reserve_ok(p, "a", 2, d0).await;
    p.commit(&[r], d0).await.unwrap();
    let full = reserve_full(p, "a", 1, d0 + hours(1)).await;
    assert_eq!(full.limit.source, LimitSource::Ramp { day: 0 });
    // Day 1 begins 24h after the first send: limit 3, but 2 still count
    // until d0 + 24h too, so room for 1.
    let d1 = d0 + hours(24);
    let s = p.account_status("a", d1).await.unwrap();
    assert_eq!(
        s.limit,
        Limit {
            value: 3,
            source: LimitSource::Ramp { day: 1 }
        }
    );
    let r = reserve_ok(p, "a", 3, d1).await;
    p.commit(&[r], d1).await.unwrap();
    // Day 3: 5 = daily limit → configured.
    let d3 = d0 + hours(72);
    let s = p.account_status("a", d3).await.unwrap();
    assert_eq!(
        s.limit,
        Limit {
            value: 5,
            source: LimitSource::Configured
        }
    );
    let d9 = d0 + hours(24 * 9);
    assert_eq!(p.account_status("a", d9).await.unwrap().limit.value, 5);
}

#[tokio::test]
async fn pacing_respects_min_interval_and_jitter_bounds() {
    let f = fixture(
        &[("a", "min_interval = \"90s\"\njitter = \"30s\"")],
        "[pools.p]\naccounts = [\"a\"]\n",
    );
    let p = &f.pools;
    let mut now = ts("2024-05-01T00:00:00Z");
    let mut gaps = Vec::new();
    for _ in 0..200 {
        let pick = match p.pick("p", 1, &[], now).await.unwrap() {
            Pick::Picked(x) => x,
            Pick::Exhausted(e) => panic!("{e:?}"),
        };
        let gap = pick.pace_until - now;
        assert!(gap >= secs(90), "never earlier than min_interval: {gap:?}");
        assert!(
            gap <= secs(120),
            "never later than min_interval + jitter: {gap:?}"
        );
        gaps.push(gap);
        // Just before the pace slot ends: paced out, capacity returns then.
        let e = exhausted(
            p,
            "p",
            1,
            &[],
            pick.pace_until - SignedDuration::from_millis(1),
        )
        .await;
        assert_eq!(e.capacity_returns_at, Some(pick.pace_until));
        assert!(
            matches!(e.skipped[0].why, SkipReason::Paced { until } if until == pick.pace_until)
        );
        now = pick.pace_until;
    }
    // The jitter is really drawn: spread over the range, not constant.
    let min = gaps.iter().min().unwrap();
    let max = gaps.iter().max().unwrap();
    assert!(*max - *min > secs(20), "jitter spread {min:?}..{max:?}");
}

#[tokio::test]
async fn pacing_without_jitter_is_exact() {
    let f = fixture(
        &[("a", "min_interval = \"90s\""), ("b", "")],
        "[pools.p]\naccounts = [\"a\", \"b\"]\n",
    );
    let p = &f.pools;
    let now = ts("2024-05-01T00:00:00Z");
    assert_eq!(picked(p, "p", 1, &[], now).await, "a");
    assert_eq!(picked(p, "p", 1, &[], now).await, "b");
    // a is paced: round-robin comes back to b.
    assert_eq!(picked(p, "p", 1, &[], now + secs(89)).await, "b");
    assert_eq!(picked(p, "p", 1, &[], now + secs(90)).await, "a");
}

#[tokio::test]
async fn round_robin_rotates_in_order() {
    let f = fixture(
        &[("a", ""), ("b", ""), ("c", "")],
        "[pools.p]\naccounts = [\"b\", \"a\", \"c\"]\n",
    );
    let now = ts("2024-05-01T00:00:00Z");
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(picked(&f.pools, "p", 1, &[], now).await);
    }
    assert_eq!(got, ["b", "a", "c", "b", "a", "c"]);
}

#[tokio::test]
async fn least_used_prefers_the_emptiest_mailbox() {
    let f = fixture(
        &[
            ("a", "daily_limit = 10"),
            ("b", "daily_limit = 20"),
            ("c", "daily_limit = 10"),
        ],
        "[pools.p]\naccounts = [\"a\", \"b\", \"c\"]\nstrategy = \"least-used\"\n",
    );
    let p = &f.pools;
    let now = ts("2024-05-01T00:00:00Z");
    // a: 5/10, b: 5/20, c: 2/10 → c, then after sending…
    for (acct, n) in [("a", 5), ("b", 5), ("c", 2)] {
        let r = reserve_ok(p, acct, n, now).await;
        p.commit(&[r], now).await.unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..6 {
        let a = picked(p, "p", 1, &[], now).await;
        let r = reserve_ok(p, &a, 1, now).await;
        p.commit(&[r], now).await.unwrap();
        order.push(a);
    }
    // c .2 → c; b .25 < c .3 → b; b .3 = c .3 → b (listed first);
    // c .3 < b .35 → c; b .35 < c .4 → b; b .4 = c .4 → b.
    assert_eq!(order, ["c", "b", "b", "c", "b", "b"]);
}

#[tokio::test]
async fn weighted_picks_match_weights_exactly() {
    let f = fixture(
        &[("a", ""), ("b", ""), ("c", "")],
        "[pools.p]\naccounts = [\"a\", \"b\", \"c\"]\nstrategy = \"weighted\"\n\
         weights = { a = 2, b = 1, c = 1 }\n",
    );
    let now = ts("2024-05-01T00:00:00Z");
    let mut counts = BTreeMap::new();
    for _ in 0..400 {
        *counts
            .entry(picked(&f.pools, "p", 1, &[], now).await)
            .or_insert(0) += 1;
    }
    assert_eq!(counts["a"], 200);
    assert_eq!(counts["b"], 100);
    assert_eq!(counts["c"], 100);
}

#[tokio::test]
async fn pick_needs_room_for_k_and_honours_exclusion() {
    let f = fixture(
        &[("a", "daily_limit = 5"), ("b", "daily_limit = 10")],
        "[pools.p]\naccounts = [\"a\", \"b\"]\n",
    );
    let p = &f.pools;
    let now = ts("2024-05-01T12:00:00Z");
    let r = reserve_ok(p, "a", 3, now).await;
    p.commit(&[r], now).await.unwrap();
    // a has 2 left: a transaction with 3 recipients must go to b, every time.
    for _ in 0..3 {
        assert_eq!(picked(p, "p", 3, &[], now).await, "b");
    }
    // 2 fit on a.
    assert_eq!(picked(p, "p", 2, &[], now).await, "a");
    // Failover from b: b excluded, a too small.
    let e = exhausted(p, "p", 3, &["b".to_owned()], now).await;
    assert_eq!(e.skipped.len(), 2);
    let a = e.skipped.iter().find(|s| s.account == "a").unwrap();
    assert_eq!(
        a.why,
        SkipReason::Full {
            counted: 3,
            limit: Limit {
                value: 5,
                source: LimitSource::Configured
            },
            need: 3,
        }
    );
    assert_eq!(a.why.to_string(), "no room for 3 (used 3/5 configured)");
    // a has room for 3 once its units leave the window.
    assert_eq!(e.capacity_returns_at, Some(now + hours(24)));
    let b = e.skipped.iter().find(|s| s.account == "b").unwrap();
    assert_eq!((&b.why, b.ready_at), (&SkipReason::Excluded, None));
    // More than any limit: never.
    let e = exhausted(p, "p", 11, &[], now).await;
    assert_eq!(e.capacity_returns_at, None);
}

#[tokio::test]
async fn capacity_returns_at_the_earliest_mailbox() {
    let f = fixture(
        &[
            ("parked", ""),
            ("paced", "min_interval = \"10m\""),
            ("full", "daily_limit = 1"),
        ],
        "[pools.p]\naccounts = [\"parked\", \"paced\", \"full\"]\n",
    );
    let p = &f.pools;
    let t0 = ts("2024-05-01T00:00:00Z");
    let r = reserve_ok(p, "full", 1, t0).await;
    p.commit(&[r], t0).await.unwrap();
    let now = t0 + hours(20); // "full" frees at t0 + 24h
    p.park(
        "parked",
        ParkKind::Other,
        now + hours(5),
        "maintenance",
        now,
    )
    .await
    .unwrap();
    assert_eq!(picked(p, "p", 1, &[], now).await, "paced");
    let e = exhausted(p, "p", 1, &[], now).await;
    // paced: now + 10m is the earliest of (now + 5h, now + 10m, t0 + 24h).
    assert_eq!(
        e.capacity_returns_at,
        Some(now + SignedDuration::from_mins(10))
    );
    // Parked longer than the others wait: the full one (t0 + 24h) is next.
    p.park("paced", ParkKind::Other, now + hours(6), "x", now)
        .await
        .unwrap();
    let e = exhausted(p, "p", 1, &[], now).await;
    assert_eq!(e.capacity_returns_at, Some(t0 + hours(24)));
    // A mailbox that is both full and parked is ready when both clear.
    p.park("full", ParkKind::Other, t0 + hours(30), "x", now)
        .await
        .unwrap();
    let e = exhausted(p, "p", 1, &[], now).await;
    assert_eq!(e.capacity_returns_at, Some(now + hours(5)));
}

#[tokio::test]
async fn quota_reply_records_ceiling_for_seven_days() {
    let f = fixture(&[("a", "daily_limit = 10")], "");
    let p = &f.pools;
    let t0 = ts("2024-05-01T00:00:00Z");
    let r = reserve_ok(p, "a", 3, t0).await;
    p.commit(&[r], t0).await.unwrap();
    let now = t0 + hours(2);
    // The message that got the quota reply was released first.
    let r = reserve_ok(p, "a", 1, now).await;
    p.release(&[r], now).await.unwrap();
    let q = p
        .quota_refused("a", "550 5.4.5 Daily user sending limit exceeded", now)
        .await
        .unwrap();
    let until = now + hours(24 * 7);
    assert_eq!(q.ceiling, Some(Ceiling { value: 3, until }));
    // Parked until the window frees: the oldest unit + 24h.
    assert_eq!(q.parked.until, t0 + hours(24));
    assert_eq!(q.parked.kind, ParkKind::Quota);
    let s = p.account_status("a", now).await.unwrap();
    assert_eq!(
        s.limit,
        Limit {
            value: 3,
            source: LimitSource::Ceiling { until }
        }
    );
    assert_eq!(
        s.last_error.as_ref().unwrap().text,
        "550 5.4.5 Daily user sending limit exceeded"
    );
    assert_eq!(s.parked.as_ref().unwrap().until, t0 + hours(24));
    // The next day: units gone, parking over, ceiling still 3.
    let d1 = t0 + hours(25);
    let r = reserve_ok(p, "a", 3, d1).await;
    reserve_full(p, "a", 1, d1).await;
    p.release(&[r], d1).await.unwrap();
    // One millisecond before 7 days: still 3; at 7 days: 10 again.
    let s = p
        .account_status("a", until - SignedDuration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(s.limit.value, 3);
    let s = p.account_status("a", until).await.unwrap();
    assert_eq!(
        s.limit,
        Limit {
            value: 10,
            source: LimitSource::Configured
        }
    );
    assert_eq!(s.ceiling, None);
    let _all = reserve_ok(p, "a", 10, until).await;
}

#[tokio::test]
async fn quota_reply_at_the_configured_limit_records_no_ceiling() {
    let f = fixture(
        &[(
            "a",
            "daily_limit = 2\nwindow = \"calendar-day\"\ntime_zone = \"UTC\"",
        )],
        "",
    );
    let p = &f.pools;
    let now = ts("2024-05-01T10:00:00Z");
    let r = reserve_ok(p, "a", 2, now).await;
    p.commit(&[r], now).await.unwrap();
    let q = p.quota_refused("a", "550 5.4.5", now).await.unwrap();
    assert_eq!(q.ceiling, None);
    assert_eq!(q.parked.until, ts("2024-05-02T00:00:00Z"));
    // Nothing counted (sent from elsewhere): no ceiling, parked a day.
    let f = fixture(&[("b", "daily_limit = 2")], "");
    let q = f.pools.quota_refused("b", "550 5.4.5", now).await.unwrap();
    assert_eq!(q.ceiling, None);
    assert_eq!(q.parked.until, now + hours(24));
    // record_ceiling directly.
    let c = f.pools.record_ceiling("b", 1, now).await.unwrap();
    assert_eq!(c.until, now + hours(24 * 7));
    assert_eq!(
        f.pools.account_status("b", now).await.unwrap().limit.value,
        1
    );
}

#[tokio::test]
async fn throttle_ladder_and_reset_on_commit() {
    assert_eq!(throttle_backoff(1), Duration::from_secs(60));
    assert_eq!(throttle_backoff(2), Duration::from_secs(300));
    assert_eq!(throttle_backoff(3), Duration::from_secs(900));
    assert_eq!(throttle_backoff(4), Duration::from_secs(3600));
    assert_eq!(throttle_backoff(40), Duration::from_secs(3600));
    let f = fixture(&[("a", "")], "[pools.p]\naccounts = [\"a\"]\n");
    let p = &f.pools;
    let now = ts("2024-05-01T00:00:00Z");
    let mut got = Vec::new();
    let mut t = now;
    for _ in 0..5 {
        let parked = p.throttled("a", "421 4.7.0 try later", t).await.unwrap();
        assert_eq!(parked.kind, ParkKind::Throttle);
        got.push((parked.until - t).as_mins());
        // More replies while parked (a burst of sessions failing together)
        // do not climb the ladder.
        let again = p.throttled("a", "421 4.7.0 try later", t).await.unwrap();
        assert_eq!(again.until, parked.until);
        t = parked.until;
    }
    assert_eq!(got, [1, 5, 15, 60, 60]);
    let now = t - hours(1);
    let s = p.account_status("a", now).await.unwrap();
    assert_eq!(s.throttles, 5);
    let e = exhausted(p, "p", 1, &[], now).await;
    assert_eq!(e.capacity_returns_at, Some(now + hours(1)));
    let now = t;
    // An accepted message resets the ladder.
    let r = reserve_ok(p, "a", 1, now).await;
    p.commit(&[r], now).await.unwrap();
    let parked = p.throttled("a", "421", now).await.unwrap();
    assert_eq!(parked.until - now, SignedDuration::from_mins(1));
}

#[tokio::test]
async fn auth_parking_lasts_until_unparked() {
    let f = fixture(
        &[("a", ""), ("b", "")],
        "[pools.p]\naccounts = [\"a\", \"b\"]\n",
    );
    let p = &f.pools;
    let now = ts("2024-05-01T00:00:00Z");
    p.auth_failed("a", "535 5.7.8 bad credentials", now)
        .await
        .unwrap();
    let far = now + hours(24 * 365 * 20);
    for _ in 0..3 {
        assert_eq!(picked(p, "p", 1, &[], far).await, "b");
    }
    let e = exhausted(p, "p", 1, &["b".to_owned()], far).await;
    assert_eq!(
        e.capacity_returns_at, None,
        "no time while a credential is bad"
    );
    assert!(
        e.skipped[0].why.to_string().contains("until unparked"),
        "{}",
        e.skipped[0].why
    );
    let s = p.account_status("a", far).await.unwrap();
    assert_eq!(s.parked.as_ref().map(|x| x.kind), Some(ParkKind::Auth));
    assert_eq!(s.ready_at, None);
    // Unparking a different kind leaves it; the right kind clears it.
    assert!(!p.unpark("a", Some(ParkKind::Throttle)).await.unwrap());
    assert!(p.unpark("a", Some(ParkKind::Auth)).await.unwrap());
    assert!(!p.unpark("a", None).await.unwrap());
    assert_eq!(picked(p, "p", 1, &["b".to_owned()], far).await, "a");
}

#[tokio::test]
async fn fifty_tasks_against_limit_twenty() {
    let f = fixture(&[("a", "daily_limit = 20")], "");
    let pools = Arc::new(f.pools);
    let now = ts("2024-05-01T00:00:00Z");
    let results = reserve_at_once(50, |_| (Arc::clone(&pools), "a"), now).await;
    assert_eq!(reserved(&results), 20);
    let s = pools.account_status("a", now).await.unwrap();
    assert_eq!((s.reserved, s.remaining), (20, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_on_one_file_never_overshoot() {
    // As two processes would: two stores (two connections) on one file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SQLITE_FILE);
    let cfg = config(&[("a", "daily_limit = 20")], "");
    let one = Arc::new(Pools::new(&cfg, Store::sqlite(&path).unwrap()).unwrap());
    let two = Arc::new(Pools::new(&cfg, Store::sqlite(&path).unwrap()).unwrap());
    let now = ts("2024-05-01T00:00:00Z");
    let results = reserve_at_once(
        40,
        |i| (Arc::clone(if i % 2 == 0 { &one } else { &two }), "a"),
        now,
    )
    .await;
    assert_eq!(reserved(&results), 20);
}

#[tokio::test]
async fn reservations_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SQLITE_FILE);
    let cfg = config(&[("a", "daily_limit = 5")], "");
    let now = ts("2024-05-01T00:00:00Z");
    {
        let pools = Pools::new(&cfg, Store::sqlite(&path).unwrap()).unwrap();
        let sent = reserve_ok(&pools, "a", 2, now).await;
        pools.commit(&[sent], now).await.unwrap();
        // In flight at the "crash": never committed nor released.
        let _in_flight = reserve_ok(&pools, "a", 2, now).await;
        // Dropping the store without a word is what kill -9 leaves behind.
    }
    let pools = Pools::new(&cfg, Store::sqlite(&path).unwrap()).unwrap();
    let later = now + hours(1);
    let s = pools.account_status("a", later).await.unwrap();
    assert_eq!((s.used, s.reserved, s.remaining), (2, 2, 1));
    let _last = reserve_ok(&pools, "a", 1, later).await;
    reserve_full(&pools, "a", 1, later).await;
}

#[tokio::test]
async fn a_second_connection_reads_while_the_first_writes() {
    let f = fixture(&[("a", "daily_limit = 5")], "");
    let now = ts("2024-05-01T00:00:00Z");
    let r = reserve_ok(&f.pools, "a", 1, now).await;
    f.pools.commit(&[r], now).await.unwrap();
    // The commit is lazy; any later operation of this store has it applied.
    assert_eq!(f.pools.account_status("a", now).await.unwrap().used, 1);
    // A raw writer holds the write lock with an uncommitted unit.
    let writer = rusqlite::Connection::open(&f.path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    writer
        .execute(
            "INSERT INTO units (account, at_ms) VALUES ('a', ?1)",
            [now.as_millisecond()],
        )
        .unwrap();
    // `postern status` opens its own store meanwhile: no waiting for the
    // writer (WAL), and it sees the last committed state.
    let started = std::time::Instant::now();
    let cfg = config(&[("a", "daily_limit = 5")], "");
    let reader = Pools::new(&cfg, Store::sqlite(&f.path).unwrap()).unwrap();
    let s = reader.account_status("a", now).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reader waited for the writer"
    );
    assert_eq!((s.used, s.reserved), (1, 0));
    writer.execute_batch("COMMIT").unwrap();
    let s = reader.account_status("a", now).await.unwrap();
    assert_eq!((s.used, s.reserved), (1, 1));
    // And the file is plain SQLite for `sqlite3`.
    let mode: String = writer
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn status_lists_pools_and_accounts() {
    let f = fixture(
        &[("a", "daily_limit = 4"), ("b", "")],
        "[pools.p]\naccounts = [\"a\", \"b\"]\nstrategy = \"weighted\"\nweights = { a = 3 }\n",
    );
    let p = &f.pools;
    let now = ts("2024-05-01T00:00:00Z");
    let r = reserve_ok(p, "a", 4, now).await;
    p.commit(&[r], now).await.unwrap();
    p.throttled("b", "421 4.7.0 slow down", now).await.unwrap();
    let st = p.status(now).await.unwrap();
    assert_eq!(st.pools.len(), 1);
    assert_eq!(st.pools[0].strategy, "weighted");
    assert_eq!(st.pools[0].weights["a"], 3);
    assert_eq!(st.pools[0].weights["b"], 1);
    assert_eq!(st.accounts.len(), 2);
    let text = st.to_string();
    assert!(
        text.contains("a: used 4/4 (0 reserved) in rolling-24h"),
        "{text}"
    );
    assert!(
        text.contains("room returns at 2024-05-02T00:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains("parked (throttle) until 2024-05-01T00:01:00Z: 421 4.7.0 slow down"),
        "{text}"
    );
    assert!(text.contains("b: used 0/unlimited"), "{text}");
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["accounts"][0]["used"], 4);
    assert_eq!(json["accounts"][0]["limit"]["source"]["kind"], "configured");
    assert_eq!(json["accounts"][1]["parked"]["kind"], "throttle");
    assert_eq!(json["accounts"][0]["room_at"], "2024-05-02T00:00:00Z");
}

#[tokio::test]
async fn unknown_names_are_errors() {
    let f = fixture(&[("a", "")], "");
    let now = ts("2024-05-01T00:00:00Z");
    assert!(matches!(
        f.pools.pick("nope", 1, &[], now).await,
        Err(PoolError::UnknownPool(_))
    ));
    assert!(matches!(
        f.pools.reserve("nope", 1, now).await,
        Err(PoolError::UnknownAccount(_))
    ));
}

/// Units of `account` after `cutoff`, counted from scratch: (sent, reserved).
fn fresh_count(db: &rusqlite::Connection, account: &str, cutoff: i64) -> (u32, u32) {
    db.query_row(
        "SELECT COALESCE(SUM(sent = 1), 0), COALESCE(SUM(sent = 0), 0) FROM units
         WHERE account = ?1 AND at_ms > ?2",
        rusqlite::params![account, cutoff],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[tokio::test]
async fn running_counts_match_a_fresh_count() {
    // Random reserves, commits, releases and outside edits over twelve days,
    // on a rolling and a calendar-day window: the running counts (`windows`
    // and its triggers) always equal a count from scratch, and every reserve
    // decides as that count says it should.
    let f = fixture(
        &[
            ("a", "daily_limit = 10"),
            (
                "b",
                "daily_limit = 8\nwindow = \"calendar-day\"\ntime_zone = \"America/New_York\"",
            ),
        ],
        "",
    );
    let db = rusqlite::Connection::open(&f.path).unwrap();
    let quota = |a: &str| f.pools.quota_of(a).unwrap().clone();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut now = ts("2024-03-08T12:00:00Z"); // spans the DST change in New York
    let mut held: Vec<Reservation> = Vec::new();
    let (mut full, mut reserved) = (0, 0);
    for step in 0..600 {
        now += secs(i64::try_from(next(3600)).unwrap());
        let account = if next(2) == 0 { "a" } else { "b" };
        let cutoff = quota(account).window.cutoff_ms(now);
        match next(10) {
            0..=4 => {
                let k = u32::try_from(1 + next(3)).unwrap();
                let (s, r) = fresh_count(&db, account, cutoff);
                let limit = quota(account).daily_limit.unwrap();
                match f.pools.reserve(account, k, now).await.unwrap() {
                    Reserve::Reserved(res) => {
                        assert!(s + r + k <= limit, "step {step}: reserved past the limit");
                        reserved += 1;
                        held.push(res);
                    }
                    Reserve::Full(_) => {
                        assert!(s + r + k > limit, "step {step}: refused with room left");
                        full += 1;
                    }
                }
            }
            5..=6 if !held.is_empty() => {
                let res = held.swap_remove(usize::try_from(next(held.len() as u64)).unwrap());
                f.pools.commit(&[res], now).await.unwrap();
            }
            7 if !held.is_empty() => {
                let res = held.swap_remove(usize::try_from(next(held.len() as u64)).unwrap());
                f.pools.release(&[res], now).await.unwrap();
            }
            8 => {
                // Somebody tidies up with sqlite3.
                db.execute(
                    "DELETE FROM units WHERE id = (SELECT id FROM units ORDER BY random() LIMIT 1)",
                    [],
                )
                .unwrap();
            }
            _ => {}
        }
        for a in ["a", "b"] {
            // The store first (it applies any lazy commit), then the file.
            let st = f.pools.account_status(a, now).await.unwrap();
            let (s, r) = fresh_count(&db, a, quota(a).window.cutoff_ms(now));
            assert_eq!((st.used, st.reserved), (s, r), "step {step}, account {a}");
        }
    }
    assert!(
        full > 10 && reserved > 100,
        "{full} full, {reserved} reserved"
    );
}

#[tokio::test]
async fn a_schema_1_file_is_upgraded_and_counted() {
    // A file as the first Postern wrote it: no `windows` table.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SQLITE_FILE);
    let now = ts("2024-05-01T12:00:00Z");
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE units (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL,
                                 at_ms INTEGER NOT NULL, sent INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX units_by_account ON units (account, at_ms);
             CREATE TABLE accounts (account TEXT PRIMARY KEY, first_send_ms INTEGER,
                 ceiling INTEGER, ceiling_until_ms INTEGER, last_pick_ms INTEGER,
                 pace_until_ms INTEGER, parked_until_ms INTEGER, parked_since_ms INTEGER,
                 park_kind TEXT, park_reason TEXT, throttles INTEGER NOT NULL DEFAULT 0,
                 last_error TEXT, last_error_ms INTEGER);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        let mut st = db
            .prepare("INSERT INTO units (account, at_ms, sent) VALUES ('a', ?1, ?2)")
            .unwrap();
        for (age_h, sent) in [(1, 1), (2, 1), (3, 0), (30, 1)] {
            st.execute(rusqlite::params![
                (now - hours(age_h)).as_millisecond(),
                sent
            ])
            .unwrap();
        }
    }
    let cfg = config(&[("a", "daily_limit = 5")], "");
    let pools = Pools::new(&cfg, Store::sqlite(&path).unwrap()).unwrap();
    let s = pools.account_status("a", now).await.unwrap();
    assert_eq!((s.used, s.reserved, s.remaining), (2, 1, 2));
    let r = reserve_ok(&pools, "a", 2, now).await;
    reserve_full(&pools, "a", 1, now).await;
    pools.release(&[r], now).await.unwrap();
    // 22 h later the units 2 h and 3 h old have left the window.
    let s = pools
        .account_status("a", now + hours(22) + secs(1))
        .await
        .unwrap();
    assert_eq!((s.used, s.reserved), (1, 0));
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_operation_does_not_spoil_its_batch() {
    // Many operations land in one batch; one of them fails inside SQLite (a
    // trigger put there to refuse one account's units). The others commit,
    // and the failed one leaves nothing behind.
    let f = fixture(&[("a", "daily_limit = 100"), ("bad", "")], "");
    let db = rusqlite::Connection::open(&f.path).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_bad BEFORE INSERT ON units WHEN NEW.account = 'bad'
         BEGIN SELECT RAISE(ABORT, 'refused by test'); END;",
    )
    .unwrap();
    let now = ts("2024-05-01T00:00:00Z");
    let pools = Arc::new(f.pools);
    let results = reserve_at_once(
        40,
        |i| (Arc::clone(&pools), if i == 20 { "bad" } else { "a" }),
        now,
    )
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 39);
    assert_eq!(fresh_count(&db, "a", 0), (0, 39));
    assert_eq!(fresh_count(&db, "bad", 0), (0, 0));
    let s = pools.account_status("a", now).await.unwrap();
    assert_eq!(s.reserved, 39);
}

#[tokio::test]
async fn a_lazy_commit_lands_on_its_own_soon() {
    // Nobody waits for a commit and nothing else runs: it still reaches the
    // file within the lazy wait, for other processes (`postern status`).
    let f = fixture(&[("a", "daily_limit = 5")], "");
    let now = ts("2024-05-01T00:00:00Z");
    let r = reserve_ok(&f.pools, "a", 2, now).await;
    f.pools.commit(&[r], now).await.unwrap();
    let db = rusqlite::Connection::open(&f.path).unwrap();
    let started = std::time::Instant::now();
    while fresh_count(&db, "a", 0) != (2, 0) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the commit never landed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn reservations_older_than_an_hour_show_as_stale() {
    let f = fixture(&[("a", "daily_limit = 100")], "");
    let p = &f.pools;
    let now = ts("2024-05-01T12:00:00Z");
    // Left by a crash two hours ago, and one in flight now.
    let _crashed = reserve_ok(p, "a", 2, now - hours(2)).await;
    let _live = reserve_ok(p, "a", 1, now).await;
    let s = p.account_status("a", now).await.unwrap();
    assert_eq!((s.reserved, s.stale), (3, 2), "{s:?}");
    // They keep counting.
    assert_eq!(s.remaining, 97);
    let text = p.status(now).await.unwrap().to_string();
    assert!(text.contains("2 of the reserved are stale"), "{text}");
}

#[tokio::test]
async fn concurrent_picks_without_pacing_never_wait_on_each_other() {
    let f = fixture(
        &[("a", "daily_limit = 100000"), ("b", "daily_limit = 100000")],
        "[pools.p]\naccounts = [\"a\", \"b\"]\n",
    );
    let p = Arc::new(f.pools);
    for _ in 0..10 {
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let p = p.clone();
            // Each with its own clock reading, as sessions do.
            tasks.push(tokio::spawn(async move {
                p.pick("p", 1, &[], Timestamp::now()).await.unwrap()
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Pick::Picked(_)));
        }
    }
}
