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
//!
//! Redis may be down or lose its data (a restart without persistence, `appendfsync
//! everysec` losing its last second, a failover to a replica that was behind):
//! - The shared connection is lazy: a service starts while Redis is down; commands fail
//!   until it is back (the outbox keeps unpublished events, the relay retries).
//! - Consumers reconnect with backoff and (re)create their groups at `0`, never `$`, so
//!   they read what producers re-publish after a loss (see [`crate::recovery`]). A group
//!   this consumer had seen and now had to create again counts as a detected loss.
//! - A broadcast reader whose stream now ends before its position (ids went backwards:
//!   the stream restarted on a clock that is behind) starts over at its lookback window.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamMaxlen,
    StreamRangeReply, StreamReadOptions, StreamReadReply,
};
use tokio_util::sync::CancellationToken;

use crate::{Broadcast, Envelope, Handler, RETRY_DELAY, Subscription, stream_key};

/// Approximate number of entries kept per stream.
const MAX_LEN: usize = 1_000_000;
const READ_COUNT: usize = 100;
const BLOCK_MS: usize = 1_000;
/// Reconnect backoff of consumers and broadcast readers: doubles from the first to the
/// last value. A refused connection costs nothing, so the cap is short: once Redis is back
/// every reader is reading again within 2 s.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a broadcast reader checks that its streams did not restart behind its position.
const RESTART_CHECK: Duration = Duration::from_secs(1);
/// One connection attempt of the shared connection; commands fail after it (one retry) so
/// a publish during an outage fails within ~2 s instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RedisBus {
    client: redis::Client,
    conn: ConnectionManager,
    /// How long an entry must sit unacknowledged before another consumer claims it.
    pub claim_idle: Duration,
    consumer_name: String,
}

impl RedisBus {
    /// Fails only on an invalid URL: the connection is made on first use (and remade after
    /// a failure), so a service starts while Redis is down.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| anyhow::anyhow!("invalid Redis configuration: {e}"))?;
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

    /// The epoch marker of `service` ([`epoch_key`]: random, set once by the first relay
    /// that finds it missing) and the progress of relay `relay` ([`progress_key`]: the start
    /// time, epoch ms, of the latest batch it published), in one read. See
    /// [`crate::recovery`].
    pub(crate) async fn read_marker(
        &self,
        service: &str,
        relay: &str,
    ) -> redis::RedisResult<(Option<String>, Option<i64>)> {
        let read = || async {
            let mut conn = self.conn.clone();
            redis::cmd("MGET")
                .arg(epoch_key(service))
                .arg(progress_key(service, relay))
                .query_async::<(Option<String>, Option<i64>)>(&mut conn)
                .await
        };
        retry_reconnected(read).await
    }

    /// Sets `service`'s epoch unless one is set; true when this call set it.
    pub(crate) async fn create_epoch(
        &self,
        service: &str,
        epoch: &str,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        conn.set_nx(epoch_key(service), epoch).await
    }

    /// Raises relay `relay`'s progress to `at` if the epoch is still `epoch` and its progress
    /// still at least `known_at`. Returns false, changing nothing, when not: Redis lost data
    /// since the relay last looked, and overwriting the evidence would hide the loss from its
    /// next check. The progress key expires after [`PROGRESS_TTL`] without a batch or check.
    pub(crate) async fn advance_marker(
        &self,
        service: &str,
        relay: &str,
        epoch: &str,
        known_at: i64,
        at: i64,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let advanced: i64 = redis::Script::new(ADVANCE_MARKER)
            .key(epoch_key(service))
            .key(progress_key(service, relay))
            .arg(at)
            .arg(epoch)
            .arg(known_at)
            .arg(PROGRESS_TTL.as_secs())
            .invoke_async(&mut conn)
            .await?;
        Ok(advanced == 1)
    }

    /// Keeps relay `relay`'s progress key from expiring while the relay is idle.
    pub(crate) async fn touch_progress(
        &self,
        service: &str,
        relay: &str,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: bool = conn
            .expire(progress_key(service, relay), PROGRESS_TTL.as_secs() as i64)
            .await?;
        Ok(())
    }

    /// The stream id time (ms) up to which every consumer group of `service`'s stream has
    /// processed its events: the oldest entry still pending, else the last one delivered,
    /// over all groups. `None` when no group reads the stream (or it does not exist).
    pub(crate) async fn consumed_up_to(&self, service: &str) -> redis::RedisResult<Option<i64>> {
        let mut conn = self.conn.clone();
        let key = stream_key(service);
        let groups: redis::RedisResult<StreamInfoGroupsReply> = conn.xinfo_groups(&key).await;
        let groups = match groups {
            Ok(g) => g.groups,
            // "ERR no such key": nothing published since the stream was lost or created.
            Err(e) if e.code() == Some("ERR") => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut lowest: Option<u64> = None;
        for group in groups {
            let mut point = parse_id(&group.last_delivered_id).map(|(ms, _)| ms);
            if group.pending > 0 {
                let pending: redis::streams::StreamPendingReply =
                    conn.xpending(&key, &group.name).await?;
                if let redis::streams::StreamPendingReply::Data(p) = pending {
                    point = parse_id(&p.start_id).map(|(ms, _)| ms).or(point);
                }
            }
            if let Some(point) = point {
                lowest = Some(lowest.map_or(point, |l| l.min(point)));
            }
        }
        Ok(lowest.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)))
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let ping = || async {
            let mut conn = self.conn.clone();
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        retry_reconnected(ping).await?;
        Ok(())
    }

    pub fn subscribe(
        self: std::sync::Arc<Self>,
        sub: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Streams on which this subscriber has seen its group: creating it again there
            // means Redis lost it.
            let mut known_groups = HashSet::new();
            let mut backoff = BACKOFF_MIN;
            loop {
                let mut progressed = false;
                let run = self.consume(
                    &sub,
                    &handler,
                    &shutdown,
                    &mut known_groups,
                    &mut progressed,
                );
                match run.await {
                    Ok(()) => return,
                    Err(e) => {
                        if progressed {
                            backoff = BACKOFF_MIN;
                        }
                        tracing::warn!(group = %sub.group, error = %e, retry_in_ms = backoff.as_millis() as u64, "Redis consumer failed; reconnecting");
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
        // The window is fixed when the caller subscribes (not when the task first runs).
        let first = window_start_id(&sub);
        tokio::spawn(async move {
            let mut positions: Vec<Cursor> = sub
                .sources
                .iter()
                .map(|s| Cursor {
                    key: stream_key(s),
                    id: first.clone(),
                    from_entry: false,
                })
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
        positions: &mut [Cursor],
        handler: &Handler,
        shutdown: &CancellationToken,
        progressed: &mut bool,
    ) -> anyhow::Result<()> {
        // A dedicated connection: XREAD BLOCK would stall a shared one.
        let mut conn: MultiplexedConnection = self.blocking_connection().await?;
        let mut last_check = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if last_check.elapsed() >= RESTART_CHECK {
                last_check = Instant::now();
                restart_if_behind(&mut conn, sub, positions).await?;
            }
            let keys: Vec<&str> = positions.iter().map(|c| c.key.as_str()).collect();
            let ids: Vec<&str> = positions.iter().map(|c| c.id.as_str()).collect();
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
                let Some(pos) = positions.iter().position(|c| c.key == stream.key) else {
                    continue;
                };
                for entry in stream.ids {
                    if !deliver_broadcast(sub, handler, &entry, shutdown).await {
                        return Ok(());
                    }
                    positions[pos].id = entry.id;
                    positions[pos].from_entry = true;
                }
            }
        }
    }

    async fn consume(
        &self,
        sub: &Subscription,
        handler: &Handler,
        shutdown: &CancellationToken,
        known_groups: &mut HashSet<String>,
        progressed: &mut bool,
    ) -> anyhow::Result<()> {
        // A dedicated connection: XREADGROUP BLOCK would stall a shared one.
        let mut conn: MultiplexedConnection = self.blocking_connection().await?;
        let keys: Vec<String> = sub.sources.iter().map(|s| stream_key(s)).collect();
        for key in &keys {
            // At `0`, not `$`: after a loss the group must read what producers re-publish
            // (and, on first creation, what was published before this consumer existed).
            let created: redis::RedisResult<()> =
                conn.xgroup_create_mkstream(key, &sub.group, "0").await;
            match created {
                Ok(()) if known_groups.contains(key) => {
                    tracing::warn!(group = %sub.group, stream = %key, "consumer group was gone: Redis lost data; recreated it at the stream's start (producers re-publish from their outboxes)");
                    metrics::counter!("bus_redis_data_loss_detected_total", "service" => sub.group.clone()).increment(1);
                }
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
            known_groups.insert(key.clone());
        }
        *progressed = true;
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

/// Runs `command` on the shared connection, once more after a connection error: after an
/// outage the connection manager answers the first command with the failure of its last
/// reconnect attempt (made while Redis was down) and only then reconnects, so without the
/// second try the caller would back off once more (up to 2 s) although Redis is back.
async fn retry_reconnected<T, F, Fut>(command: F) -> redis::RedisResult<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    match command().await {
        Err(e) if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
            command().await
        }
        other => other,
    }
}

/// KEYS: epoch, progress. ARGV: at, epoch, known_at, ttl (s). Raises the progress to `at`
/// (if higher; refreshing its expiry either way) when the epoch is ARGV[2] and the progress
/// at least ARGV[3]; returns 0 (and writes nothing) otherwise.
const ADVANCE_MARKER: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return 0
end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current < tonumber(ARGV[3]) then
  return 0
end
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[4])
else
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 1
";

/// A relay's progress key outlives the relay by this long (a restarted process is a new
/// relay with a new key); a live relay refreshes it at least hourly.
pub(crate) const PROGRESS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Redis key of `service`'s epoch (the `{service}` hash tag keeps a service's marker keys
/// in one Cluster slot, for the script that reads both).
pub fn epoch_key(service: &str) -> String {
    format!("intellicolab:bus:{{{service}}}:epoch")
}

/// Redis key of one relay's progress (see [`epoch_key`]).
pub fn progress_key(service: &str, relay: &str) -> String {
    format!("intellicolab:bus:{{{service}}}:progress:{relay}")
}

/// A broadcast reader's position in one stream: the id of the last entry handled
/// (exclusive for XREAD), or just before its lookback window (`from_entry` false).
struct Cursor {
    key: String,
    id: String,
    from_entry: bool,
}

/// The XREAD id just before `sub`'s lookback window: the window includes its first
/// millisecond and XREAD is exclusive.
fn window_start_id(sub: &Broadcast) -> String {
    let start = sub.window_start_ms();
    if start > 0 {
        format!("{}-{}", start - 1, u64::MAX)
    } else {
        "0-0".to_owned()
    }
}

/// `ms-seq` as a comparable pair (`None` for anything else).
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A stream whose newest entry is older than the reader's position restarted: Redis lost
/// the entries the reader had seen and new ones get ids below its position (the server's
/// clock is behind the old one's, e.g. after a failover), which XREAD would skip for as long
/// as that gap lasts. The reader starts over at its lookback window (handlers are
/// idempotent), as a restarted process would.
async fn restart_if_behind(
    conn: &mut MultiplexedConnection,
    sub: &Broadcast,
    positions: &mut [Cursor],
) -> anyhow::Result<()> {
    for cursor in positions.iter_mut().filter(|c| c.from_entry) {
        let newest: StreamRangeReply = conn.xrevrange_count(&cursor.key, "+", "-", 1).await?;
        let Some(newest) = newest.ids.first() else {
            // Empty or missing: anything added later gets a fresh id; checked again then.
            continue;
        };
        if parse_id(&newest.id) < parse_id(&cursor.id) {
            tracing::warn!(consumer = %sub.name, stream = %cursor.key, position = %cursor.id, newest = %newest.id, "stream ids went backwards: Redis lost data; re-reading the lookback window");
            metrics::counter!("bus_redis_data_loss_detected_total", "service" => sub.name.clone())
                .increment(1);
            cursor.id = window_start_id(sub);
            cursor.from_entry = false;
        }
    }
    Ok(())
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
