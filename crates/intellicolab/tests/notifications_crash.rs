//! kill -9 of the real notifications process (`intellicolab serve notifications`, on its
//! own, consuming chat's stream on a private Redis) while it applies `@room` mentions of
//! a 1,000-member room: after the restart every message has exactly 999 notifications,
//! one per member but the sender, none twice; the members see each once through the API.
//!
//! The mentions are published straight onto the `chat` stream, as chat publishes them
//! (chat resolves `@room` to the 999 other members), so the room's members need no
//! accounts; three of them are real accounts at auth, to read their inbox.
//! On SQLite, and on a fresh PostgreSQL database when `TEST_DATABASE_URL` is set; both
//! need `TEST_REDIS_URL` (a private `redis-server`: separate processes share no bus).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bus::Envelope;
use bus::testing::PrivateRedis;
use kit::db::Backend;
use serde_json::json;
use support::{Client, Ports, Proc};
use uuid::Uuid;

kit::backend_tests!(kill_9_of_notifications_creates_each_notification_once);

/// Members of the room, the sender included.
const MEMBERS: usize = 1_000;
/// `@room` messages published before the kill: 20 × 999 = 19,980 notifications, so the
/// kill lands while some are applied and others are not.
const MESSAGES: usize = 20;

async fn count(db: &kit::db::Db, sql: &str) -> i64 {
    let n: Result<i64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db.pool())
        .await;
    n.unwrap_or(0)
}

async fn kill_9_of_notifications_creates_each_notification_once(backend: Backend) {
    let test = "kill_9_of_notifications";
    let Some(redis) = PrivateRedis::start(test) else {
        return;
    };
    let Some(db) = kit::testing::test_db(backend, test).await else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let mut env = ports.env(dir.path());
    env.push(("INTELLICOLAB_REDIS_URL", redis.url()));
    if let Some(url) = &db.url {
        env.push(("INTELLICOLAB_NOTIFICATIONS__DATABASE_URL", url.clone()));
    }
    // Debug logs of 20,000 notifications would only slow the machine down.
    env.push(("RUST_LOG", "info,sqlx=warn".to_owned()));
    let _auth = Proc::start(dir.path(), "auth", &["serve", "auth"], &env);
    support::wait_ready(&format!("{}/readyz", ports.auth_url())).await;
    let start = || {
        Proc::start(
            dir.path(),
            "notifications",
            &["serve", "notifications"],
            &env,
        )
    };
    let mut notifications = start();
    let base = ports.notifications_url();
    support::wait_ready(&format!("{base}/readyz")).await;

    let auth = Client::new(&ports.auth_url());
    let mut readers = Vec::new();
    for name in ["reader1", "reader2", "reader3"] {
        readers.push(auth.register(name).await);
    }
    let sender = Uuid::now_v7();
    let mut members: Vec<Uuid> = readers
        .iter()
        .map(|a| Uuid::parse_str(&a.id).unwrap())
        .collect();
    while members.len() < MEMBERS - 1 {
        members.push(Uuid::now_v7());
    }
    let room = Uuid::now_v7();
    let publisher = bus::Bus::redis(&redis.url()).await.unwrap();
    for seq in 1..=MESSAGES as i64 {
        let event = Envelope::new(
            "chat",
            "chat.message.created",
            json!({
                "message_id": Uuid::now_v7(), "room_id": room, "seq": seq,
                "sender_id": sender, "sender_username": "announcer",
                "room_kind": "channel", "room_name": "everyone",
                "mentioned_user_ids": members, "mentioned_room": true,
                "thread_root_id": null, "thread_root_sender_id": null,
                "reply_to": null, "reply_to_sender_id": null,
                "recipient_ids": [], "preview": format!("@room announcement {seq}"),
                "created_at": "2026-12-03T10:00:00Z",
            }),
        );
        publisher.publish(&event).await.unwrap();
    }

    // The database as the process sees it (a file in the data dir on SQLite).
    let handle = kit::db::Db::open(db.url.as_deref(), dir.path(), notifications::NAME)
        .await
        .unwrap();
    let total = (MESSAGES * (MEMBERS - 1)) as i64;
    // Kill it once some of the mentions are applied and before all are.
    let deadline = Instant::now() + Duration::from_secs(30);
    let at_kill = loop {
        let n = count(&handle, "SELECT COUNT(*) FROM notifications").await;
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "nothing applied in 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    notifications.kill9();
    assert!(
        at_kill < total,
        "all {total} were applied before the kill: the test proves nothing"
    );
    // The last message's 999 rows come in one transaction: a partial count at the kill
    // would mean a torn batch.
    let torn = count(
        &handle,
        "SELECT COUNT(*) FROM (SELECT message_id FROM notifications GROUP BY message_id HAVING COUNT(*) <> 999) t",
    )
    .await;
    assert_eq!(
        torn, 0,
        "a message had part of its notifications at the kill"
    );

    notifications = start();
    support::wait_ready(&format!("{base}/readyz")).await;
    // The event the killed process had read but not acknowledged is taken over once it
    // has been idle for the bus's claim time (30 s, looked at every 15 s): up to 45 s.
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        let n = count(&handle, "SELECT COUNT(*) FROM notifications").await;
        if n >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {total} notifications after the restart; logs:\n{}",
            notifications.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settle: nothing more comes (a redelivered event inserts nothing).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&handle, "SELECT COUNT(*) FROM notifications").await,
        total
    );
    for (what, sql) in [
        (
            "messages",
            "SELECT COUNT(DISTINCT message_id) FROM notifications",
        ),
        (
            "recipients",
            "SELECT COUNT(DISTINCT user_id) FROM notifications",
        ),
        (
            "(recipient, message) pairs twice",
            "SELECT COUNT(*) FROM (SELECT user_id, message_id FROM notifications GROUP BY user_id, message_id HAVING COUNT(*) > 1) t",
        ),
    ] {
        let expected = match what {
            "messages" => MESSAGES as i64,
            "recipients" => (MEMBERS - 1) as i64,
            _ => 0,
        };
        assert_eq!(count(&handle, sql).await, expected, "{what}");
    }
    assert_eq!(
        count(
            &handle,
            &format!("SELECT COUNT(*) FROM notifications WHERE user_id = '{sender}'")
        )
        .await,
        0,
        "the sender is not notified"
    );
    // Through the API: each reader has each mention once.
    let api = Client::new(&base);
    for reader in &readers {
        let (s, body, _) = api
            .call(
                "GET",
                "/notifications/unread-count",
                Some(&reader.access),
                None,
            )
            .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["count"], MESSAGES as i64, "{}", reader.username);
        let (s, body, _) = api
            .call(
                "GET",
                "/notifications?limit=100",
                Some(&reader.access),
                None,
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), MESSAGES, "{}", reader.username);
        let mut messages: Vec<&str> = items
            .iter()
            .map(|n| n["message_id"].as_str().unwrap())
            .collect();
        messages.sort_unstable();
        messages.dedup();
        assert_eq!(messages.len(), MESSAGES, "a message twice in the inbox");
        assert!(items.iter().all(|n| n["kind"] == "mention"));
    }
    handle.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(150),
        "took {:?}",
        started.elapsed()
    );
}
