//! Redis down at start-up and Redis losing its data, on a private `redis-server` per test
//! (never the shared one): a producer's outbox relay, a consumer group applying through
//! the inbox and a broadcast reader, while Redis is FLUSHALL-ed, killed and restarted empty,
//! or restarted from an AOF that lacks its last writes. Afterwards every event reached the
//! consumer exactly once and the broadcast reader at least once. Skipped with a printed
//! reason when `TEST_REDIS_URL` is unset or there is no `redis-server`.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::testing::PrivateRedis;
use bus::{Broadcast, Bus, Envelope, Subscription, outbox};
use kit::db::{Backend, Db, Migration};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

kit::backend_tests!(
    starts_while_redis_is_down_and_publishes_once_it_is_up,
    no_event_lost_when_redis_is_flushed,
    no_event_lost_when_redis_restarts_empty,
    no_event_lost_when_redis_restarts_from_an_aof_missing_its_tail,
);

const EFFECTS: Migration = Migration {
    id: "test-0001-effects",
    sqlite: "CREATE TABLE effects (event_id TEXT NOT NULL)",
    postgres: "CREATE TABLE effects (event_id TEXT NOT NULL)",
};

/// How long a recovery may take before the test fails (measured ones are printed).
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);

async fn open_db(
    backend: Backend,
    test: &str,
) -> Option<(Db, kit::testing::TestDb, tempfile::TempDir)> {
    let handle = kit::testing::test_db(backend, test).await?;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(handle.url.as_deref(), dir.path(), "producer")
        .await
        .unwrap();
    db.migrate(&[bus::inbox::MIGRATION, EFFECTS]).await.unwrap();
    Some((db, handle, dir))
}

/// A producer service name of its own (the relay wants `&'static str`).
fn service() -> &'static str {
    Box::leak(format!("prod{}", uuid::Uuid::now_v7().simple()).into_boxed_str())
}

/// The consumer's database (SQLite in its own temp dir: another service).
async fn consumer_db(dir: &tempfile::TempDir) -> Db {
    let db = Db::open(None, dir.path(), "consumer").await.unwrap();
    db.migrate(&[bus::inbox::MIGRATION, EFFECTS]).await.unwrap();
    db
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

/// Starts a member of consumer group `group` (its own Redis connection, like another
/// process).
async fn start_consumer(url: &str, group: &str, service: &str, db: &Db) -> CancellationToken {
    let bus = Bus::redis(url).await.unwrap();
    let stop = CancellationToken::new();
    let db = db.clone();
    bus.subscribe(
        Subscription::new(group, &[service]),
        bus::handler(move |e| {
            let db = db.clone();
            async move { apply(&db, &e).await }
        }),
        stop.clone(),
    );
    stop
}

type Seen = Arc<Mutex<Vec<uuid::Uuid>>>;

async fn start_broadcast(url: &str, service: &str, stop: CancellationToken) -> Seen {
    let bus = Bus::redis(url).await.unwrap();
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    bus.subscribe_broadcast(
        Broadcast::new("reader", &[service]),
        bus::handler(move |e: Envelope| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(e.id);
                Ok(())
            }
        }),
        stop,
    );
    seen
}

/// Commits one event in the producer's outbox and wakes the relay.
async fn produce(db: &Db, outbox: &outbox::Outbox, service: &str, n: usize) -> uuid::Uuid {
    let event = Envelope::new(service, "thing.happened", serde_json::json!({ "n": n }));
    let mut tx = db.begin().await.unwrap();
    outbox::enqueue(&mut tx, &event).await.unwrap();
    tx.commit().await.unwrap();
    outbox.wake();
    event.id
}

async fn applied(db: &Db) -> Vec<String> {
    sqlx::query_scalar("SELECT event_id FROM effects")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

async fn unpublished(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// Waits until the consumer applied every event of `ids`; returns how long that took.
async fn wait_applied(db: &Db, ids: &[uuid::Uuid], what: &str) -> Duration {
    let started = Instant::now();
    let want: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    loop {
        let got: HashSet<String> = applied(db).await.into_iter().collect();
        if want.is_subset(&got) {
            return started.elapsed();
        }
        if started.elapsed() > RECOVERY_LIMIT {
            panic!(
                "{what}: {} of {} events never reached the consumer",
                want.difference(&got).count(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_published(db: &Db) {
    for _ in 0..500 {
        if unpublished(db).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the relay did not publish the outbox");
}

async fn starts_while_redis_is_down_and_publishes_once_it_is_up(backend: Backend) {
    let test = "starts_while_redis_is_down";
    let Some(mut redis) = PrivateRedis::start(test) else {
        return;
    };
    let Some((db, _h, _d)) = open_db(backend, test).await else {
        return;
    };
    redis.kill();
    let url = redis.url();
    let service = service();
    // Everything is built and started while nothing listens on the port.
    let bus = Bus::redis(&url)
        .await
        .expect("the bus builds while Redis is down");
    assert!(bus.ping().await.is_err(), "ping reports Redis down");
    let stop = CancellationToken::new();
    let (outbox, _relay) = outbox::Relay::spawn(service, db.clone(), bus.clone(), stop.clone());
    let cdir = tempfile::tempdir().unwrap();
    let cdb = consumer_db(&cdir).await;
    let consumer = start_consumer(&url, "consumer", service, &cdb).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(produce(&db, &outbox, service, n).await);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        unpublished(&db).await,
        10,
        "the outbox keeps them meanwhile"
    );
    assert!(applied(&cdb).await.is_empty());

    redis.restart();
    let took = wait_applied(&cdb, &ids, "after Redis came up").await;
    println!("[{backend:?}] Redis up at last: every event applied {took:?} later");
    bus.ping().await.unwrap();
    let got = applied(&cdb).await;
    assert_eq!(got.len(), 10, "each applied once: {got:?}");
    stop.cancel();
    consumer.cancel();
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Flushall,
    RestartEmpty,
    AofRewind,
}

/// Events flow (phase 1, consumed); the consumer stops; more events are published (phase 2,
/// in Redis, unconsumed); while a producer keeps committing (phase 3), Redis loses its data;
/// the consumer comes back. Every event must be applied exactly once. A second consuming
/// service (its own group and inbox) reads throughout, so its group vanishes under it; on
/// PostgreSQL a second relay shares the outbox (two nodes of one service).
async fn no_event_lost(backend: Backend, test: &str, fault: Fault) {
    let started = match fault {
        Fault::AofRewind => PrivateRedis::start_aof(test),
        _ => PrivateRedis::start(test),
    };
    let Some(mut redis) = started else {
        return;
    };
    let Some((db, _h, _d)) = open_db(backend, test).await else {
        return;
    };
    let url = redis.url();
    let service = service();
    let stop = CancellationToken::new();
    let bus = Bus::redis(&url).await.unwrap();
    let (outbox, _relay) = outbox::Relay::spawn(service, db.clone(), bus.clone(), stop.clone());
    if backend == Backend::Postgres {
        let node_b = Bus::redis(&url).await.unwrap();
        outbox::Relay::spawn(service, db.clone(), node_b, stop.clone());
    }
    let cdir = tempfile::tempdir().unwrap();
    let cdb = consumer_db(&cdir).await;
    let consumer = start_consumer(&url, "consumer", service, &cdb).await;
    let odir = tempfile::tempdir().unwrap();
    let other_db = consumer_db(&odir).await;
    let other = start_consumer(&url, "other", service, &other_db).await;
    let seen = start_broadcast(&url, service, stop.clone()).await;

    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(produce(&db, &outbox, service, n).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_applied(&cdb, &ids, "phase 1").await;
    consumer.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // What the AOF will hold on restart: nothing from here on (as if these writes were in
    // the second `appendfsync everysec` had not yet synced, or the replica had not received).
    let checkpoint = matches!(fault, Fault::AofRewind).then(|| redis.aof_checkpoint());
    tokio::time::sleep(Duration::from_millis(5)).await;
    for n in 30..60 {
        ids.push(produce(&db, &outbox, service, n).await);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_published(&db).await;
    // Phase 3: a producer keeps committing through the fault.
    let flowing = {
        let (db, outbox) = (db.clone(), outbox.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 60..100 {
                ids.push(produce(&db, &outbox, service, n).await);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            ids
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before_fault = ids.clone();
    match fault {
        Fault::Flushall => redis.flushall(),
        Fault::RestartEmpty => {
            redis.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.restart_empty();
        }
        Fault::AofRewind => redis.restart_from(checkpoint.as_ref().unwrap()),
    }
    let consumer = start_consumer(&url, "consumer", service, &cdb).await;
    let took = wait_applied(&cdb, &before_fault, "events published before the fault").await;
    println!(
        "[{backend:?}] {fault:?}: every event published before the loss applied {took:?} after Redis was back"
    );
    ids.extend(flowing.await.unwrap());
    let took_all = wait_applied(&cdb, &ids, "every event").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    wait_applied(&other_db, &ids, "the consumer that read throughout").await;
    for db in [&cdb, &other_db] {
        let got = applied(db).await;
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), got.len(), "an event applied twice");
        assert_eq!(got.len(), ids.len(), "every event applied once");
    }
    for _ in 0..200 {
        let broadcast: HashSet<uuid::Uuid> = seen.lock().unwrap().iter().copied().collect();
        if ids.iter().all(|i| broadcast.contains(i)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let broadcast: HashSet<uuid::Uuid> = seen.lock().unwrap().iter().copied().collect();
    let missed = ids.iter().filter(|i| !broadcast.contains(i)).count();
    assert_eq!(missed, 0, "the broadcast reader missed events");
    println!(
        "[{backend:?}] {fault:?}: all {} events applied once ({took_all:?} after the phase-3 producer ended)",
        ids.len()
    );
    stop.cancel();
    consumer.cancel();
    other.cancel();
}

async fn no_event_lost_when_redis_is_flushed(backend: Backend) {
    no_event_lost(
        backend,
        "no_event_lost_when_redis_is_flushed",
        Fault::Flushall,
    )
    .await;
}

async fn no_event_lost_when_redis_restarts_empty(backend: Backend) {
    no_event_lost(
        backend,
        "no_event_lost_when_redis_restarts_empty",
        Fault::RestartEmpty,
    )
    .await;
}

async fn no_event_lost_when_redis_restarts_from_an_aof_missing_its_tail(backend: Backend) {
    no_event_lost(
        backend,
        "no_event_lost_when_redis_restarts_from_an_aof_missing_its_tail",
        Fault::AofRewind,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reader_follows_a_stream_whose_ids_went_backwards() {
    let test = "broadcast_reader_follows_a_stream_whose_ids_went_backwards";
    let Some(mut redis) = PrivateRedis::start(test) else {
        return;
    };
    let url = redis.url();
    let service = service();
    let stop = CancellationToken::new();
    let seen = start_broadcast(&url, service, stop.clone()).await;
    // Entries stamped an hour ahead: written by a server whose clock was ahead (the old
    // primary before a failover).
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ahead = kit::time::now_ms() + 3_600_000;
    let mut early = Vec::new();
    for i in 0..3 {
        let e = Envelope::new(service, "thing.happened", serde_json::json!({ "i": i }));
        let _: String = conn
            .xadd(
                bus::stream_key(service),
                format!("{ahead}-{i}"),
                &[("e", serde_json::to_string(&e).unwrap())],
            )
            .await
            .unwrap();
        early.push(e.id);
    }
    for _ in 0..200 {
        if seen.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(*seen.lock().unwrap(), early);

    // The new server starts empty, on the right clock: its ids are an hour below the reader's
    // position.
    redis.restart_empty();
    let publisher = Bus::redis(&url).await.unwrap();
    let started = Instant::now();
    let mut later = Vec::new();
    for i in 0..3 {
        let e = Envelope::new(service, "thing.happened", serde_json::json!({ "later": i }));
        publisher.publish(&e).await.unwrap();
        later.push(e.id);
    }
    for _ in 0..400 {
        let got = seen.lock().unwrap().clone();
        if later.iter().all(|id| got.contains(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = seen.lock().unwrap().clone();
    assert!(
        later.iter().all(|id| got.contains(id)),
        "events below the old position never arrived: {got:?}"
    );
    println!(
        "broadcast reader caught up with the restarted stream {:?} after the first publish",
        started.elapsed()
    );
    stop.cancel();
}
