//! The private redis-server helper itself: kill, restart empty, FLUSHALL, AOF rewind.
#![allow(clippy::unwrap_used)]

use bus::testing::PrivateRedis;
use redis::AsyncCommands;

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn private_redis_restarts_empty_flushes_and_rewinds_its_aof() {
    let Some(mut redis) = PrivateRedis::start("private_redis_restarts_empty") else {
        return;
    };
    let _: () = conn(&redis.url()).await.set("k", "v").await.unwrap();
    redis.flushall();
    let v: Option<String> = conn(&redis.url()).await.get("k").await.unwrap();
    assert_eq!(v, None);
    let _: () = conn(&redis.url()).await.set("k", "v").await.unwrap();
    redis.restart_empty();
    let v: Option<String> = conn(&redis.url()).await.get("k").await.unwrap();
    assert_eq!(v, None, "restart_empty loses everything");
    redis.kill();
    assert!(
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .is_err()
    );

    let Some(mut aof) = PrivateRedis::start_aof("private_redis_rewinds_its_aof") else {
        return;
    };
    let _: () = conn(&aof.url()).await.set("before", "1").await.unwrap();
    let checkpoint = aof.aof_checkpoint();
    let _: () = conn(&aof.url()).await.set("after", "1").await.unwrap();
    aof.restart();
    let mut c = conn(&aof.url()).await;
    let after: Option<String> = c.get("after").await.unwrap();
    assert_eq!(
        after.as_deref(),
        Some("1"),
        "a plain restart reloads the AOF"
    );
    aof.restart_from(&checkpoint);
    let mut c = conn(&aof.url()).await;
    let before: Option<String> = c.get("before").await.unwrap();
    let after: Option<String> = c.get("after").await.unwrap();
    assert_eq!(before.as_deref(), Some("1"));
    assert_eq!(after, None, "writes after the checkpoint are gone");
}
