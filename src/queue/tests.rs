//! Queue tests on a real SQLite file, with an injected clock.

use super::*;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn caps(messages: u64, bytes: u64) -> Caps {
    Caps {
        max_messages: messages,
        max_bytes: bytes,
    }
}

/// What a worker does: due messages, each started.
async fn claim(q: &Queue, now: Timestamp, limit: usize, skip: Vec<String>) -> Vec<Claimed> {
    let mut out = Vec::new();
    for mut m in q.due(now, limit, skip, Vec::new()).await.unwrap() {
        if q.start(m.entry.id, now).await.unwrap() {
            m.entry.in_flight = Some(now);
            out.push(m);
        }
    }
    out
}

fn msg(route: &str, body: &[u8]) -> NewMessage {
    NewMessage {
        user: "app".into(),
        route: route.into(),
        mail_from: "me@example.test".into(),
        params: Params {
            size: Some(body.len() as u64),
            eight_bit: true,
            smtputf8: false,
        },
        rcpts: vec!["a@example.org".into(), "b@example.org".into()],
        helo: "client.test".into(),
        peer: "127.0.0.1:4000".into(),
        body: body.to_vec(),
    }
}

#[tokio::test]
async fn a_message_goes_through_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(&dir.path().join(QUEUE_FILE), caps(100, 1 << 20)).unwrap();
    let now = t("2026-12-01T10:00:00Z");
    let id = q
        .enqueue(msg("alice", b"Subject: x\r\n\r\nhi\r\n"), now)
        .await
        .unwrap();
    assert_eq!(id.to_string().parse::<QueueId>().unwrap(), id);
    let list = q.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].rcpts, ["a@example.org", "b@example.org"]);
    // Claimed: in flight, so a second claim does not see it.
    let c = claim(&q, now, 10, Vec::new()).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].body, b"Subject: x\r\n\r\nhi\r\n");
    assert!(c[0].params.eight_bit && c[0].params.size == Some(c[0].body.len() as u64));
    assert!(claim(&q, now, 10, Vec::new()).await.is_empty());
    // Deferred for one recipient, a minute on.
    let later = t("2026-12-01T10:01:00Z");
    q.defer(
        id,
        vec!["b@example.org".into()],
        later,
        "451 try later".into(),
        true,
        now,
    )
    .await
    .unwrap();
    assert!(claim(&q, now, 10, Vec::new()).await.is_empty());
    let e = &q.list().await.unwrap()[0];
    assert_eq!((e.attempts, e.rcpts.len(), e.next_try), (1, 1, later));
    let c = claim(&q, later, 10, Vec::new()).await;
    assert_eq!(c[0].entry.rcpts, ["b@example.org"]);
    q.delivered(id, later, "250 ok".into()).unwrap();
    // Lazy, but this process's next operation sees it.
    assert!(q.list().await.unwrap().is_empty());
    let (gone, events) = q.show(id).await.unwrap();
    assert!(gone.is_none());
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["queued", "deferred", "delivered"]);
}

#[tokio::test]
async fn the_size_cap_refuses_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(&dir.path().join(QUEUE_FILE), caps(2, 1000)).unwrap();
    let now = t("2026-12-01T10:00:00Z");
    q.enqueue(msg("a", &[b'x'; 400]), now).await.unwrap();
    let e = q.enqueue(msg("a", &[b'x'; 700]), now).await.unwrap_err();
    assert!(matches!(e, QueueError::Full { .. }) && e.is_full(), "{e}");
    q.enqueue(msg("a", &[b'x'; 100]), now).await.unwrap();
    let e = q.enqueue(msg("a", b"x"), now).await.unwrap_err();
    assert!(e.is_full(), "{e}");
    assert_eq!(q.list().await.unwrap().len(), 2);
    // Room again once one leaves.
    let id = q.list().await.unwrap()[0].id;
    q.remove(id, "deleted", "by test".into(), now)
        .await
        .unwrap();
    q.enqueue(msg("a", b"x"), now).await.unwrap();
}

#[tokio::test]
async fn what_was_in_flight_at_a_crash_comes_back_marked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(QUEUE_FILE);
    let now = t("2026-12-01T10:00:00Z");
    let id = {
        let q = Queue::open(&path, caps(100, 1 << 20)).unwrap();
        let id = q.enqueue(msg("a", b"x"), now).await.unwrap();
        q.enqueue(msg("a", b"y"), now).await.unwrap();
        assert_eq!(claim(&q, now, 1, Vec::new()).await.len(), 1);
        id
        // "crash": dropped while the first is in flight
    };
    let q = Queue::open(&path, caps(100, 1 << 20)).unwrap();
    let back = q.recover(now).await.unwrap();
    assert_eq!(back, [id]);
    let list = q.list().await.unwrap();
    assert!(list.iter().find(|e| e.id == id).unwrap().crashed);
    assert!(!list.iter().find(|e| e.id != id).unwrap().crashed);
    assert_eq!(claim(&q, now, 10, Vec::new()).await.len(), 2);
}

#[tokio::test]
async fn claims_skip_held_routes_and_retry_makes_all_due() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(&dir.path().join(QUEUE_FILE), caps(100, 1 << 20)).unwrap();
    let now = t("2026-12-01T10:00:00Z");
    for r in ["pool:p", "pool:p", "alice"] {
        q.enqueue(msg(r, b"x"), now).await.unwrap();
    }
    let c = claim(&q, now, 10, vec!["pool:p".into()]).await;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].entry.route, "alice");
    let far = t("2026-12-02T10:00:00Z");
    for m in claim(&q, now, 10, Vec::new()).await {
        q.defer(m.entry.id, m.entry.rcpts, far, "held".into(), false, now)
            .await
            .unwrap();
    }
    assert!(claim(&q, now, 10, Vec::new()).await.is_empty());
    assert_eq!(q.retry(None, now).await.unwrap(), 3);
    assert_eq!(claim(&q, now, 10, Vec::new()).await.len(), 2);
    let s = q.summary().await.unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s.iter().map(|r| r.messages).sum::<u64>(), 3);
}
