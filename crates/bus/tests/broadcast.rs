//! Broadcast subscriptions (every subscriber gets every event, plus a lookback window on
//! start) next to consumer groups (each event to one member), in-process and on a real
//! Redis (skipped with a printed reason when `TEST_REDIS_URL` is unset).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Broadcast, Bus, Envelope, Subscription};
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

type Seen = Arc<Mutex<Vec<uuid::Uuid>>>;

fn source() -> String {
    format!("test-{}", uuid::Uuid::now_v7().simple())
}

fn sink() -> (Seen, bus::Handler) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let handler = bus::handler(move |e: Envelope| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(e.id);
            Ok(())
        }
    });
    (seen, handler)
}

fn ids(seen: &Seen) -> Vec<uuid::Uuid> {
    seen.lock().unwrap().clone()
}

async fn wait_for(what: &str, check: impl Fn() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not met in time");
}

/// Lets a subscriber that is behind catch up before asserting nothing more arrives.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn publish_n(bus: &Bus, src: &str, n: usize) -> Vec<uuid::Uuid> {
    let mut out = Vec::new();
    for i in 0..n {
        let e = Envelope::new(src, "thing.happened", serde_json::json!({ "n": i }));
        bus.publish(&e).await.unwrap();
        out.push(e.id);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_broadcast_reaches_every_subscriber_and_replays_the_lookback() {
    let bus = Bus::memory();
    let src = source();
    let stop = CancellationToken::new();
    let (a, ha) = sink();
    let (b, hb) = sink();
    bus.subscribe_broadcast(Broadcast::new("a", &[&src]), ha, stop.clone());
    bus.subscribe_broadcast(Broadcast::new("b", &[&src]), hb, stop.clone());
    let sent = publish_n(&bus, &src, 3).await;
    wait_for("both subscribers", || {
        ids(&a).len() == 3 && ids(&b).len() == 3
    })
    .await;
    assert_eq!(ids(&a), sent);
    assert_eq!(ids(&b), sent);

    // Started after publication: the lookback window replays them; a zero window does not.
    let (late, hl) = sink();
    bus.subscribe_broadcast(Broadcast::new("late", &[&src]), hl, stop.clone());
    // Events are stamped in milliseconds and a window includes its first millisecond: let
    // the clock move past the events published above.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (live, hv) = sink();
    bus.subscribe_broadcast(
        Broadcast::new("live", &[&src]).with_lookback(Duration::ZERO),
        hv,
        stop.clone(),
    );
    wait_for("late subscriber", || ids(&late).len() == 3).await;
    assert_eq!(ids(&late), sent);
    let next = publish_n(&bus, &src, 1).await;
    wait_for("live subscriber", || ids(&live).len() == 1).await;
    settle().await;
    assert_eq!(ids(&live), next, "a zero lookback replays nothing");
    stop.cancel();
}

async fn redis_bus(url: &str) -> Arc<bus::redis_streams::RedisBus> {
    Arc::new(bus::redis_streams::RedisBus::connect(url).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broadcast_reaches_every_subscriber() {
    let Some(url) = kit::testing::redis_url("redis_broadcast_reaches_every_subscriber") else {
        return;
    };
    let src = source();
    let publisher = Bus::redis(&url).await.unwrap();
    // Two "processes": separate connections, same subscription.
    let (p1, p2) = (
        Bus::Redis(redis_bus(&url).await),
        Bus::Redis(redis_bus(&url).await),
    );
    let stop = CancellationToken::new();
    let (a, ha) = sink();
    let (b, hb) = sink();
    p1.subscribe_broadcast(Broadcast::new("gw", &[&src]), ha, stop.clone());
    p2.subscribe_broadcast(Broadcast::new("gw", &[&src]), hb, stop.clone());
    let sent = publish_n(&publisher, &src, 5).await;
    wait_for("both subscribers", || {
        ids(&a).len() >= 5 && ids(&b).len() >= 5
    })
    .await;
    settle().await;
    assert_eq!(ids(&a), sent);
    assert_eq!(ids(&b), sent);
    stop.cancel();
    bus::redis_streams::delete_streams(&url, &[&src])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_late_broadcast_subscriber_gets_the_lookback_window() {
    let Some(url) =
        kit::testing::redis_url("redis_late_broadcast_subscriber_gets_the_lookback_window")
    else {
        return;
    };
    let src = source();
    // An entry from two hours ago (stream ids are ms timestamps), outside the window.
    let old = Envelope::new(&src, "thing.happened", serde_json::json!({"old": true}));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let old_id = format!("{}-0", kit::time::now_ms() - 2 * 3600 * 1000);
    let _: String = conn
        .xadd(
            bus::stream_key(&src),
            &old_id,
            &[("e", serde_json::to_string(&old).unwrap())],
        )
        .await
        .unwrap();
    let publisher = Bus::redis(&url).await.unwrap();
    let sent = publish_n(&publisher, &src, 3).await;

    let stop = CancellationToken::new();
    let late_bus = Bus::Redis(redis_bus(&url).await);
    let (late, hl) = sink();
    late_bus.subscribe_broadcast(Broadcast::new("late", &[&src]), hl, stop.clone());
    // Stream ids have millisecond resolution and a window starts at `<now − lookback>-0`, so
    // entries of the very millisecond a zero-lookback subscriber starts in are included; let
    // the clock move past the entries published above.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (live, hv) = sink();
    late_bus.subscribe_broadcast(
        Broadcast::new("live", &[&src]).with_lookback(Duration::ZERO),
        hv,
        stop.clone(),
    );
    wait_for("late subscriber", || ids(&late).len() >= 3).await;
    let next = publish_n(&publisher, &src, 1).await;
    wait_for("live subscriber", || !ids(&live).is_empty()).await;
    settle().await;
    let mut expected = sent.clone();
    expected.extend(&next);
    assert_eq!(ids(&late), expected, "the window, not the older entry");
    assert_eq!(ids(&live), next, "a zero lookback replays nothing");
    stop.cancel();
    bus::redis_streams::delete_streams(&url, &[&src])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_group_subscription_still_delivers_each_event_once_per_group() {
    let Some(url) = kit::testing::redis_url(
        "redis_group_subscription_still_delivers_each_event_once_per_group",
    ) else {
        return;
    };
    let src = source();
    let publisher = Bus::redis(&url).await.unwrap();
    let (p1, p2) = (
        Bus::Redis(redis_bus(&url).await),
        Bus::Redis(redis_bus(&url).await),
    );
    let stop = CancellationToken::new();
    let (a, ha) = sink();
    let (b, hb) = sink();
    let (c, hc) = sink();
    p1.subscribe(Subscription::new("workers", &[&src]), ha, stop.clone());
    p2.subscribe(Subscription::new("workers", &[&src]), hb, stop.clone());
    p2.subscribe_broadcast(Broadcast::new("cache", &[&src]), hc, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await; // groups created
    let sent = publish_n(&publisher, &src, 20).await;
    wait_for("the group and the broadcast", || {
        ids(&a).len() + ids(&b).len() >= 20 && ids(&c).len() >= 20
    })
    .await;
    settle().await;
    let mut group: Vec<_> = ids(&a).into_iter().chain(ids(&b)).collect();
    group.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(group, expected, "each event to exactly one group member");
    assert_eq!(ids(&c), sent, "the broadcast subscriber sees every event");
    stop.cancel();
    bus::redis_streams::delete_streams(&url, &[&src])
        .await
        .unwrap();
}
