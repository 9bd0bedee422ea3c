//! Redis Streams transport: one stream per source (`intellicolab:events:<source>`,
//! approximately MAXLEN-bounded), a consumer group per consuming service.
//!
//! A consumer reads with XREADGROUP and XACKs only after its handler committed.
//! Entries a dead consumer left pending are taken over with XAUTOCLAIM once they have
//! been idle for `claim_idle`; redeliveries are safe because consumers are idempotent.
//!
//! A broadcast subscriber reads with a plain XREAD (no group, nothing acknowledged), so
//! every process sees every entry. It starts at the stream id `<now − lookback>-0`
//! (entry ids are millisecond timestamps), keeps its position in memory, and on a
//! Redis error reconnects with exponential backoff and continues from that position.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamMaxlen, StreamReadOptions,
    StreamReadReply,
};
use tokio_util::sync::CancellationToken;

use crate::{Broadcast, Envelope, Handler, RETRY_DELAY, Subscription, stream_key};

/// Approximate number of entries kept per stream.
const MAX_LEN: usize = 1_000_000;
const READ_COUNT: usize = 100;
const BLOCK_MS: usize = 1_000;
/// Broadcast reconnect backoff: doubles from the first to the last value.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct RedisBus {
    client: redis::Client,
    conn: ConnectionManager,
    /// How long an entry must sit unacknowledged before another consumer claims it.
    pub claim_idle: Duration,
    consumer_name: String,
}

impl RedisBus {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
        Ok(Self {
            client,
            conn,
            claim_idle: Duration::from_secs(30),
            consumer_name: format!(
                "{host}-{}-{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ),
        })
    }

    /// A copy with a different claim idle time (tests use a short one).
    pub fn with_claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle;
        self
    }

    pub async fn publish(&self, event: &Envelope) -> anyhow::Result<()> {
        let json = serde_json::to_string(event)?;
        let mut conn = self.conn.clone();
        let _: String = conn
            .xadd_maxlen(
                stream_key(&event.source),
                StreamMaxlen::Approx(MAX_LEN),
                "*",
                &[("e", json)],
            )
            .await?;
        Ok(())
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    pub fn subscribe(
        self: std::sync::Arc<Self>,
        sub: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let run = self.consume(&sub, &handler, &shutdown);
                match run.await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(group = %sub.group, error = %e, "Redis consumer failed; reconnecting");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(RETRY_DELAY) => {}
                        }
                    }
                }
            }
        })
    }

    /// A dedicated connection for blocking reads. Its response timeout must outlast
    /// `BLOCK_MS`: with the client's default (500 ms) every idle XREAD/XREADGROUP BLOCK would
    /// time out, fail and reconnect with a growing back-off, delaying the next event.
    async fn blocking_connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_millis(BLOCK_MS as u64 + 5_000)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    pub fn subscribe_broadcast(
        self: std::sync::Arc<Self>,
        sub: Broadcast,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        // The window is fixed when the caller subscribes (not when the task first runs), and
        // includes its first millisecond: XREAD is exclusive, so start just before it.
        let start = sub.window_start_ms();
        let first = if start > 0 {
            format!("{}-{}", start - 1, u64::MAX)
        } else {
            "0-0".to_owned()
        };
        tokio::spawn(async move {
            // Position per stream: the id of the last entry handled (exclusive for XREAD).
            let mut positions: Vec<(String, String)> = sub
                .sources
                .iter()
                .map(|s| (stream_key(s), first.clone()))
                .collect();
            let mut backoff = BACKOFF_MIN;
            loop {
                let mut progressed = false;
                let run =
                    self.read_broadcast(&sub, &mut positions, &handler, &shutdown, &mut progressed);
                match run.await {
                    Ok(()) => return,
                    Err(e) => {
                        if progressed {
                            backoff = BACKOFF_MIN;
                        }
                        tracing::warn!(consumer = %sub.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "Redis broadcast reader failed; reconnecting");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        })
    }

    /// Reads `positions` onward until shutdown (`Ok`) or a Redis error (`Err`).
    /// `progressed` is set once a read succeeded (the connection worked).
    async fn read_broadcast(
        &self,
        sub: &Broadcast,
        positions: &mut [(String, String)],
        handler: &Handler,
        shutdown: &CancellationToken,
        progressed: &mut bool,
    ) -> anyhow::Result<()> {
        // A dedicated connection: XREAD BLOCK would stall a shared one.
        let mut conn: MultiplexedConnection = self.blocking_connection().await?;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let keys: Vec<&str> = positions.iter().map(|(k, _)| k.as_str()).collect();
            let ids: Vec<&str> = positions.iter().map(|(_, id)| id.as_str()).collect();
            let opts = StreamReadOptions::default()
                .count(READ_COUNT)
                .block(BLOCK_MS);
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = conn.xread_options(&keys, &ids, &opts) => r?,
            };
            *progressed = true;
            let Some(reply) = reply else { continue };
            for stream in reply.keys {
                let Some(pos) = positions.iter().position(|(k, _)| *k == stream.key) else {
                    continue;
                };
                for entry in stream.ids {
                    if !deliver_broadcast(sub, handler, &entry, shutdown).await {
                        return Ok(());
                    }
                    positions[pos].1 = entry.id;
                }
            }
        }
    }

    async fn consume(
        &self,
        sub: &Subscription,
        handler: &Handler,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        // A dedicated connection: XREADGROUP BLOCK would stall a shared one.
        let mut conn: MultiplexedConnection = self.blocking_connection().await?;
        let keys: Vec<String> = sub.sources.iter().map(|s| stream_key(s)).collect();
        for key in &keys {
            let created: redis::RedisResult<()> =
                conn.xgroup_create_mkstream(key, &sub.group, "0").await;
            if let Err(e) = created
                && e.code() != Some("BUSYGROUP")
            {
                return Err(e.into());
            }
        }
        // First what this consumer name had pending (none for a fresh name), then new entries.
        let mut last_claim = std::time::Instant::now() - self.claim_idle;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if last_claim.elapsed() >= self.claim_idle / 2 {
                last_claim = std::time::Instant::now();
                for key in &keys {
                    self.claim_abandoned(&mut conn, key, sub, handler, shutdown)
                        .await?;
                }
            }
            let ids: Vec<&str> = keys.iter().map(|_| ">").collect();
            let opts = StreamReadOptions::default()
                .group(&sub.group, &self.consumer_name)
                .count(READ_COUNT)
                .block(BLOCK_MS);
            let reply: Option<StreamReadReply> = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = conn.xread_options(&keys, &ids, &opts) => r?,
            };
            let Some(reply) = reply else { continue };
            for stream in reply.keys {
                for entry in stream.ids {
                    if !self
                        .handle(&mut conn, &stream.key, sub, handler, &entry, shutdown)
                        .await?
                    {
                        return Ok(());
                    }
                }
            }
            self.report_pending(&mut conn, &keys, sub).await;
        }
    }

    /// Takes over entries idle longer than `claim_idle` (left by a dead consumer).
    async fn claim_abandoned(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
        sub: &Subscription,
        handler: &Handler,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut start = "0-0".to_owned();
        loop {
            let opts = StreamAutoClaimOptions::default().count(READ_COUNT);
            let reply: StreamAutoClaimReply = conn
                .xautoclaim_options(
                    key,
                    &sub.group,
                    &self.consumer_name,
                    self.claim_idle.as_millis() as u64,
                    &start,
                    opts,
                )
                .await?;
            for entry in &reply.claimed {
                metrics::counter!("bus_redeliveries_total", "consumer" => sub.group.clone())
                    .increment(1);
                if !self
                    .handle(conn, key, sub, handler, entry, shutdown)
                    .await?
                {
                    return Ok(());
                }
            }
            if reply.next_stream_id == "0-0" || reply.claimed.is_empty() {
                return Ok(());
            }
            start = reply.next_stream_id;
        }
    }

    /// Runs the handler for one entry; XACK on success. Returns false on shutdown.
    async fn handle(
        &self,
        conn: &mut MultiplexedConnection,
        key: &str,
        sub: &Subscription,
        handler: &Handler,
        entry: &StreamId,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let event: Option<Envelope> = entry
            .get::<String>("e")
            .and_then(|json| serde_json::from_str(&json).ok());
        let Some(event) = event else {
            tracing::error!(group = %sub.group, id = %entry.id, "undecodable stream entry; acknowledging");
            let _: i64 = conn.xack(key, &sub.group, &[&entry.id]).await?;
            return Ok(true);
        };
        loop {
            match handler(event.clone()).await {
                Ok(()) => {
                    let _: i64 = conn.xack(key, &sub.group, &[&entry.id]).await?;
                    metrics::counter!("bus_events_consumed_total", "consumer" => sub.group.clone(), "type" => event.kind.clone()).increment(1);
                    return Ok(true);
                }
                Err(e) => {
                    tracing::warn!(group = %sub.group, event = %event.id, kind = %event.kind, error = %e, "event handler failed; retrying");
                    metrics::counter!("bus_redeliveries_total", "consumer" => sub.group.clone())
                        .increment(1);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(false),
                        _ = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            }
        }
    }

    async fn report_pending(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &[String],
        sub: &Subscription,
    ) {
        let mut total = 0i64;
        for key in keys {
            let pending: redis::RedisResult<redis::streams::StreamPendingReply> =
                conn.xpending(key, &sub.group).await;
            if let Ok(p) = pending {
                total += p.count() as i64;
            }
        }
        metrics::gauge!("bus_consumer_pending", "consumer" => sub.group.clone()).set(total as f64);
    }
}

/// Runs the handler of a broadcast subscriber for one entry, retrying until it succeeds.
/// Returns false on shutdown.
async fn deliver_broadcast(
    sub: &Broadcast,
    handler: &Handler,
    entry: &StreamId,
    shutdown: &CancellationToken,
) -> bool {
    let event: Option<Envelope> = entry
        .get::<String>("e")
        .and_then(|json| serde_json::from_str(&json).ok());
    let Some(event) = event else {
        tracing::error!(consumer = %sub.name, id = %entry.id, "undecodable stream entry; skipped");
        return true;
    };
    loop {
        match handler(event.clone()).await {
            Ok(()) => {
                metrics::counter!("bus_events_consumed_total", "consumer" => sub.name.clone(), "type" => event.kind.clone()).increment(1);
                return true;
            }
            Err(e) => {
                tracing::warn!(consumer = %sub.name, event = %event.id, kind = %event.kind, error = %e, "event handler failed; retrying");
                metrics::counter!("bus_redeliveries_total", "consumer" => sub.name.clone())
                    .increment(1);
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}

/// Deletes the streams of `sources` (tests).
pub async fn delete_streams(url: &str, sources: &[&str]) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = sources.iter().map(|s| stream_key(s)).collect();
    let _: i64 = conn.del(keys).await?;
    Ok(())
}
