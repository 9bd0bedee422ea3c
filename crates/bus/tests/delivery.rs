//! Outbox atomicity, crash recovery, idempotent consumption and Redis consumer-group
//! take-over, against real SQLite/PostgreSQL databases and a real Redis.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, Envelope, Subscription, outbox};
use kit::db::{Backend, Db, Migration};
use tokio_util::sync::CancellationToken;

kit::backend_tests!(
    rolled_back_change_publishes_nothing,
    committed_events_survive_a_crash_before_publish,
    duplicate_delivery_is_applied_once,
);

const EFFECTS: Migration = Migration {
    id: "test-0001-effects",
    sqlite: "CREATE TABLE effects (event_id TEXT NOT NULL)",
    postgres: "CREATE TABLE effects (event_id TEXT NOT NULL)",
};

async fn open(
    backend: Backend,
    test: &str,
) -> Option<(Db, kit::testing::TestDb, tempfile::TempDir)> {
    let handle = kit::testing::test_db(backend, test).await?;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(handle.url.as_deref(), dir.path(), "bus")
        .await
        .unwrap();
    db.migrate(&[bus::inbox::MIGRATION, EFFECTS]).await.unwrap();
    Some((db, handle, dir))
}

fn source() -> String {
    format!("test-{}", uuid::Uuid::now_v7().simple())
}

fn collect(bus: &Bus, source: &str, shutdown: CancellationToken) -> Arc<Mutex<Vec<Envelope>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    bus.subscribe(
        Subscription::new("collector", &[source]),
        bus::handler(move |e| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(e);
                Ok(())
            }
        }),
        shutdown,
    );
    seen
}

async fn wait_for(check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met in time");
}

async fn rolled_back_change_publishes_nothing(backend: Backend) {
    let Some((db, _h, _d)) = open(backend, "rolled_back_change").await else {
        return;
    };
    let bus = Bus::memory();
    let src = source();
    let seen = collect(&bus, &src, CancellationToken::new());
    {
        let mut tx = db.begin().await.unwrap();
        outbox::enqueue(
            &mut tx,
            &Envelope::new(&src, "thing.happened", serde_json::json!({"n": 1})),
        )
        .await
        .unwrap();
        // Dropped without commit: rolled back.
    }
    assert_eq!(outbox::relay_batch("test", &db, &bus).await.unwrap(), 0);
    let mut tx = db.begin().await.unwrap();
    let kept = Envelope::new(&src, "thing.happened", serde_json::json!({"n": 2}));
    outbox::enqueue(&mut tx, &kept).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outbox::relay_batch("test", &db, &bus).await.unwrap(), 1);
    assert_eq!(
        outbox::relay_batch("test", &db, &bus).await.unwrap(),
        0,
        "published rows are not sent again"
    );
    wait_for(|| !seen.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0], kept);
}

async fn committed_events_survive_a_crash_before_publish(backend: Backend) {
    let Some((db, _h, _d)) = open(backend, "crash_before_publish").await else {
        return;
    };
    let src = source();
    // Commit events while no relay runs: the process "died" between commit and publish.
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut tx = db.begin().await.unwrap();
        let e = Envelope::new(&src, "thing.happened", serde_json::json!({ "n": n }));
        ids.push(e.id);
        outbox::enqueue(&mut tx, &e).await.unwrap();
        tx.commit().await.unwrap();
    }
    // The restarted process starts its relay: everything committed goes out, in order.
    let bus = Bus::memory();
    let shutdown = CancellationToken::new();
    let seen = collect(&bus, &src, shutdown.clone());
    let (_outbox, relay) = outbox::Relay::spawn("test", db.clone(), bus.clone(), shutdown.clone());
    wait_for(|| seen.lock().unwrap().len() == 5).await;
    let got: Vec<_> = seen.lock().unwrap().iter().map(|e| e.id).collect();
    assert_eq!(got, ids);
    // On shutdown the relay flushes what was committed just before.
    let mut tx = db.begin().await.unwrap();
    outbox::enqueue(&mut tx, &Envelope::new(&src, "late", serde_json::json!({})))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    shutdown.cancel();
    relay.await.unwrap();
    let unsent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(unsent, 0);
}

/// Applies `event` once: the inbox row and the effect share a transaction.
async fn apply(db: &Db, event: &Envelope) -> anyhow::Result<()> {
    let Some(mut tx) = bus::inbox::begin_once(db, "effects", event).await? else {
        return Ok(());
    };
    sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
        .bind(event.id.to_string())
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn effects(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM effects")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn duplicate_delivery_is_applied_once(backend: Backend) {
    let Some((db, _h, _d)) = open(backend, "duplicate_delivery").await else {
        return;
    };
    let e = Envelope::new("x", "thing.happened", serde_json::json!({}));
    apply(&db, &e).await.unwrap();
    apply(&db, &e).await.unwrap();
    apply(&db, &e.clone()).await.unwrap();
    assert_eq!(effects(&db).await, 1);
    // A failed effect rolls the inbox row back too, so the redelivery applies it.
    let other = Envelope::new("x", "thing.happened", serde_json::json!({}));
    {
        let mut tx = bus::inbox::begin_once(&db, "effects", &other)
            .await
            .unwrap()
            .unwrap();
        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
            .bind("x")
            .execute(tx.conn())
            .await
            .unwrap();
        // dropped: handler "crashed" before commit
    }
    apply(&db, &other).await.unwrap();
    assert_eq!(effects(&db).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_consumer_death_is_taken_over_and_duplicates_apply_once() {
    let Some(url) = kit::testing::redis_url("redis_consumer_death") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(None, dir.path(), "consumer").await.unwrap();
    db.migrate(&[bus::inbox::MIGRATION, EFFECTS]).await.unwrap();
    let src = source();
    let idle = Duration::from_millis(400);
    let publisher = Bus::redis(&url).await.unwrap();

    // Consumer A takes the entry and dies before acknowledging it.
    let a = Arc::new(
        bus::redis_streams::RedisBus::connect(&url)
            .await
            .unwrap()
            .with_claim_idle(idle),
    );
    let a_got = Arc::new(Mutex::new(0));
    let a_count = a_got.clone();
    let a_stop = CancellationToken::new();
    let a_task = a.clone().subscribe(
        Subscription::new("workers", &[&src]),
        bus::handler(move |_| {
            let a_count = a_count.clone();
            async move {
                *a_count.lock().unwrap() += 1;
                std::future::pending::<()>().await;
                Ok(())
            }
        }),
        a_stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // group created
    let event = Envelope::new(&src, "thing.happened", serde_json::json!({}));
    publisher.publish(&event).await.unwrap();
    wait_for(|| *a_got.lock().unwrap() == 1).await;
    a_task.abort(); // kill -9 of consumer A: the entry stays pending, unacknowledged

    // Consumer B of the same group claims it once it has been idle long enough.
    let b = Arc::new(
        bus::redis_streams::RedisBus::connect(&url)
            .await
            .unwrap()
            .with_claim_idle(idle),
    );
    let b_db = db.clone();
    let b_stop = CancellationToken::new();
    b.clone().subscribe(
        Subscription::new("workers", &[&src]),
        bus::handler(move |e| {
            let db = b_db.clone();
            async move { apply(&db, &e).await }
        }),
        b_stop.clone(),
    );
    for _ in 0..200 {
        if effects(&db).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(effects(&db).await, 1, "B took over A's pending entry");

    // At-least-once: the same event delivered again is applied once.
    publisher.publish(&event).await.unwrap();
    let second = Envelope::new(&src, "thing.happened", serde_json::json!({}));
    publisher.publish(&second).await.unwrap();
    for _ in 0..200 {
        if effects(&db).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(effects(&db).await, 2);
    b_stop.cancel();
    bus::redis_streams::delete_streams(&url, &[&src])
        .await
        .unwrap();
}
