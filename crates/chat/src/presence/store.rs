//! Where the nodes' local statuses add up: in-process (one node) or Redis (several).
//!
//! Redis layout (`P` = `presence_prefix`):
//! - `P:u:{user}` hash: field = node id, value = `online` | `idle` (that node's local status);
//! - `P:seen` hash: user → when it last stopped being online (epoch ms);
//! - `P:n:{node}` set: the users with a field of that node (for the clean-up of a dead node);
//! - `P:nodes` hash: node → its last heartbeat (epoch ms); `P:alive:{node}`: liveness key,
//!   refreshed every heartbeat with a TTL of `presence_node_ttl_ms`;
//! - channel `P:changes`: `user|rank|seen_ms` (rank 2 online, 1 idle, 0 offline) whenever
//!   a user's best status changes. Published by the same Lua script that changes the
//!   hash, so changes are announced exactly once, in the order they happened.
//!
//! A Redis outage never blocks a socket or a send: writes fail fast (1 s timeouts), are
//! counted (`chat_presence_redis_errors_total`), logged once per outage and retried by
//! the heartbeat; lookups fall back to this node's own connections (others show offline).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Presence, Seen, Settings, Status, lock};

pub enum Store {
    Memory(Memory),
    Redis(Box<RedisStore>),
}

#[derive(Default)]
pub struct Memory {
    status: Mutex<HashMap<Uuid, Status>>,
    seen: Mutex<HashMap<Uuid, i64>>,
}

pub struct RedisStore {
    client: redis::Client,
    conn: redis::aio::ConnectionManager,
    node: Uuid,
    prefix: String,
    channel: String,
    grace_ms: i64,
    ttl_ms: i64,
    script: redis::Script,
    /// Set while Redis fails: one warning per outage, not one per change.
    down: AtomicBool,
}

/// Sets (`ARGV[2]` = status) or removes (`ARGV[2]` = '') node `ARGV[1]`'s field of user
/// `ARGV[4]`, raises its `seen` to `ARGV[3]` (when > 0; with `ARGV[6]` = '1' only if the
/// node's field was `online`) and publishes on `ARGV[5]` when the best status changed.
/// Returns the best status's rank and 1 if it changed (published), else 0.
const UPDATE: &str = r"
local function best()
  local r = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    if v == 'online' then return 2 elseif v == 'idle' then r = 1 end
  end
  return r
end
local before = best()
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[4])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[4])
end
local seen = tonumber(ARGV[3])
if seen > 0 and (ARGV[6] ~= '1' or old == 'online') then
  local prev = tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')
  if seen > prev then redis.call('HSET', KEYS[2], ARGV[4], ARGV[3]) end
end
local after = best()
if after ~= before then
  local s = redis.call('HGET', KEYS[2], ARGV[4]) or ''
  redis.call('PUBLISH', ARGV[5], ARGV[4] .. '|' .. after .. '|' .. s)
  return {after, 1}
end
return {after, 0}
";

impl Store {
    pub fn new(redis_url: Option<&str>, s: &Settings) -> anyhow::Result<Store> {
        let Some(url) = redis_url else {
            return Ok(Store::Memory(Memory::default()));
        };
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("invalid redis_url: {e}"))?;
        // Lazy, 1 s timeouts and one retry: the node serves while Redis is down, and a
        // presence write or lookup during an outage fails fast instead of holding a socket.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1);
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| anyhow::anyhow!("invalid Redis configuration: {e}"))?;
        Ok(Store::Redis(Box::new(RedisStore {
            client,
            conn,
            node: Uuid::now_v7(),
            channel: format!("{}:changes", s.prefix),
            prefix: s.prefix.clone(),
            grace_ms: s.grace.as_millis() as i64,
            ttl_ms: s.node_ttl.as_millis() as i64,
            script: redis::Script::new(UPDATE),
            down: AtomicBool::new(false),
        })))
    }

    /// Writes this node's local status of each user (`None` = remove; with when it last
    /// stopped being online here). Delivers (in-process) or publishes (Redis) the changes
    /// of their best status. `false` on a store error (nothing is known to be written).
    pub async fn write(
        &self,
        presence: &Presence,
        changes: &[(Uuid, Option<Status>, Option<i64>)],
    ) -> bool {
        match self {
            Store::Memory(m) => {
                for &(user, status, left_online) in changes {
                    m.write(presence, user, status, left_online);
                }
                true
            }
            Store::Redis(r) => r.write(changes).await.is_ok(),
        }
    }

    /// The last Redis call failed (the in-process store never is).
    pub fn is_down(&self) -> bool {
        match self {
            Store::Memory(_) => false,
            Store::Redis(r) => r.down.load(Ordering::Relaxed),
        }
    }

    pub async fn lookup(&self, users: &[Uuid]) -> Option<Vec<Seen>> {
        match self {
            Store::Memory(m) => {
                let status = lock(&m.status);
                let seen = lock(&m.seen);
                Some(
                    users
                        .iter()
                        .map(|u| Seen {
                            status: status.get(u).copied().unwrap_or(Status::Offline),
                            last_seen: seen.get(u).copied(),
                        })
                        .collect(),
                )
            }
            Store::Redis(r) => r.lookup(users).await,
        }
    }

    pub async fn heartbeat(&self, presence: &Presence) {
        if let Store::Redis(r) = self {
            r.heartbeat(presence).await;
        }
    }

    pub async fn reap(&self) {
        if let Store::Redis(r) = self
            && !r.down.load(Ordering::Relaxed)
            && let Err(e) = r.reap(kit::time::now_ms()).await
        {
            r.failed(&e);
        }
    }

    pub async fn leave(&self, _presence: &Presence) {
        if let Store::Redis(r) = self {
            // Survivors clean this node's fields up after the grace period from its last
            // heartbeat: clients reconnecting to another node meanwhile show no blip.
            let mut conn = r.conn.clone();
            let _: redis::RedisResult<()> = redis::cmd("DEL")
                .arg(r.key_alive(r.node))
                .query_async(&mut conn)
                .await;
        }
    }

    pub fn spawn_subscriber(
        &self,
        presence: Arc<Presence>,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(tokio::spawn(subscribe_loop(
                r.client.clone(),
                r.channel.clone(),
                presence,
                shutdown,
            ))),
        }
    }
}

impl Memory {
    fn write(&self, presence: &Presence, user: Uuid, status: Option<Status>, left: Option<i64>) {
        let seen = {
            let mut seen = lock(&self.seen);
            if let Some(t) = left {
                let s = seen.entry(user).or_insert(t);
                *s = (*s).max(t);
            }
            seen.get(&user).copied()
        };
        let before = {
            let mut map = lock(&self.status);
            match status {
                Some(s) => map.insert(user, s),
                None => map.remove(&user),
            }
        };
        let before = before.unwrap_or(Status::Offline);
        let after = status.unwrap_or(Status::Offline);
        if before != after {
            metrics::counter!("chat_presence_changes_published_total").increment(1);
            presence.deliver(
                user,
                Seen {
                    status: after,
                    last_seen: seen,
                },
            );
        }
    }
}

impl RedisStore {
    fn key_user(&self, user: Uuid) -> String {
        format!("{}:u:{user}", self.prefix)
    }
    fn key_seen(&self) -> String {
        format!("{}:seen", self.prefix)
    }
    fn key_node_users(&self, node: Uuid) -> String {
        format!("{}:n:{node}", self.prefix)
    }
    fn key_nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn key_alive(&self, node: Uuid) -> String {
        format!("{}:alive:{node}", self.prefix)
    }

    fn failed(&self, e: &redis::RedisError) {
        metrics::counter!("chat_presence_redis_errors_total").increment(1);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "presence store (Redis) unreachable: presence shows this node's users only until it is back");
        }
    }

    fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("presence store (Redis) reachable again");
        }
    }

    /// This node's changes in one pipeline (the script is loaded first, so a Redis that
    /// restarted without it needs no second round trip).
    async fn write(
        &self,
        changes: &[(Uuid, Option<Status>, Option<i64>)],
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(UPDATE).ignore();
        let invocations: Vec<_> = changes
            .iter()
            .map(|&(user, status, left)| {
                self.invocation(self.node, user, status, left.unwrap_or(0), false)
            })
            .collect();
        for inv in &invocations {
            pipe.invoke_script(inv);
        }
        let mut conn = self.conn.clone();
        match pipe.query_async::<Vec<(i64, i64)>>(&mut conn).await {
            Ok(results) => {
                self.succeeded();
                let published = results.iter().filter(|(_, changed)| *changed == 1).count();
                metrics::counter!("chat_presence_changes_published_total")
                    .increment(published as u64);
                Ok(())
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }

    fn invocation(
        &self,
        node: Uuid,
        user: Uuid,
        status: Option<Status>,
        seen: i64,
        only_if_online: bool,
    ) -> redis::ScriptInvocation<'_> {
        let mut inv = self.script.prepare_invoke();
        inv.key(self.key_user(user))
            .key(self.key_seen())
            .key(self.key_node_users(node))
            .arg(node.to_string())
            .arg(status.map(Status::as_str).unwrap_or(""))
            .arg(seen)
            .arg(user.to_string())
            .arg(&self.channel)
            .arg(if only_if_online { "1" } else { "0" });
        inv
    }

    async fn lookup(&self, users: &[Uuid]) -> Option<Vec<Seen>> {
        if users.is_empty() {
            return Some(Vec::new());
        }
        let mut pipe = redis::pipe();
        for u in users {
            pipe.cmd("HVALS").arg(self.key_user(*u));
        }
        pipe.cmd("HMGET").arg(self.key_seen());
        for u in users {
            pipe.arg(u.to_string());
        }
        let mut conn = self.conn.clone();
        let mut answer: Vec<redis::Value> = match pipe.query_async(&mut conn).await {
            Ok(v) => v,
            Err(e) => {
                self.failed(&e);
                return None;
            }
        };
        self.succeeded();
        let seen: Vec<Option<i64>> = answer
            .pop()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        Some(
            answer
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let fields: Vec<String> = redis::from_redis_value(v).unwrap_or_default();
                    let status = fields
                        .iter()
                        .map(|f| match f.as_str() {
                            "online" => Status::Online,
                            "idle" => Status::Idle,
                            _ => Status::Offline,
                        })
                        .max()
                        .unwrap_or(Status::Offline);
                    Seen {
                        status,
                        last_seen: seen.get(i).copied().flatten(),
                    }
                })
                .collect(),
        )
    }

    /// Refreshes this node's liveness and fields (one pipeline: after a Redis restart the
    /// fields come back within one heartbeat). Runs on the writer task, between changes.
    async fn heartbeat(&self, presence: &Presence) {
        let now = kit::time::now_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key_alive(self.node))
            .arg(now)
            .arg("PX")
            .arg(self.ttl_ms)
            .ignore();
        pipe.cmd("HSET")
            .arg(self.key_nodes())
            .arg(self.node.to_string())
            .arg(now)
            .ignore();
        for (user, status) in presence.written() {
            pipe.cmd("HSET")
                .arg(self.key_user(user))
                .arg(self.node.to_string())
                .arg(status.as_str())
                .ignore();
            pipe.cmd("SADD")
                .arg(self.key_node_users(self.node))
                .arg(user.to_string())
                .ignore();
        }
        let mut conn = self.conn.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            self.failed(&e);
            return;
        }
        self.succeeded();
    }

    /// Removes the fields of nodes whose liveness key expired, once the grace period since
    /// their last heartbeat is over (one survivor does it: `SET NX` on a clean-up key).
    async fn reap(&self, now: i64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let nodes: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(self.key_nodes())
            .query_async(&mut conn)
            .await?;
        for (node, beat) in nodes {
            let Ok(node) = node.parse::<Uuid>() else {
                continue;
            };
            if node == self.node || now < beat + self.grace_ms {
                continue;
            }
            let alive: bool = redis::cmd("EXISTS")
                .arg(self.key_alive(node))
                .query_async(&mut conn)
                .await?;
            if alive {
                continue;
            }
            let won: Option<String> = redis::cmd("SET")
                .arg(format!("{}:cleanup:{node}", self.prefix))
                .arg(self.node.to_string())
                .arg("NX")
                .arg("PX")
                .arg(self.ttl_ms.max(10_000))
                .query_async(&mut conn)
                .await?;
            if won.is_none() {
                continue;
            }
            let users: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.key_node_users(node))
                .query_async(&mut conn)
                .await?;
            tracing::info!(%node, users = users.len(), "presence: cleaning up after a dead node");
            metrics::counter!("chat_presence_dead_nodes_reaped_total").increment(1);
            let users: Vec<Uuid> = users.iter().filter_map(|u| u.parse().ok()).collect();
            for chunk in users.chunks(super::WRITE_BATCH) {
                let invocations: Vec<_> = chunk
                    .iter()
                    .map(|u| self.invocation(node, *u, None, beat, true))
                    .collect();
                let mut pipe = redis::pipe();
                pipe.cmd("SCRIPT").arg("LOAD").arg(UPDATE).ignore();
                for inv in &invocations {
                    pipe.invoke_script(inv);
                }
                let results: Vec<(i64, i64)> = pipe.query_async(&mut conn).await?;
                let published = results.iter().filter(|(_, changed)| *changed == 1).count();
                metrics::counter!("chat_presence_changes_published_total")
                    .increment(published as u64);
            }
            redis::pipe()
                .cmd("DEL")
                .arg(self.key_node_users(node))
                .ignore()
                .cmd("HDEL")
                .arg(self.key_nodes())
                .arg(node.to_string())
                .ignore()
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }
}

async fn subscribe_loop(
    client: redis::Client,
    channel: String,
    presence: Arc<Presence>,
    shutdown: CancellationToken,
) {
    // As the fan-out's subscriber: reconnect with a backoff of 500 ms doubling to 2 s.
    const BACKOFF_MIN: Duration = Duration::from_millis(500);
    const BACKOFF_MAX: Duration = Duration::from_secs(2);
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            r = connected => r,
            _ = shutdown.cancelled() => return,
        };
        match pubsub {
            Ok(mut pubsub) => {
                backoff = BACKOFF_MIN;
                // Changes announced while we were away are lost: compare instead.
                presence.repair().await;
                let mut stream = pubsub.on_message();
                loop {
                    let msg = tokio::select! {
                        m = stream.next() => m,
                        _ = shutdown.cancelled() => return,
                    };
                    let Some(msg) = msg else { break };
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if let Some((user, seen)) = parse_change(&text) {
                        metrics::counter!("chat_presence_changes_received_total").increment(1);
                        presence.deliver(user, seen);
                    }
                }
                tracing::warn!("presence subscription lost; reconnecting");
            }
            Err(e) => {
                metrics::counter!("chat_presence_redis_errors_total").increment(1);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to the presence channel");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// `user|rank|seen_ms` (seen empty when never seen).
fn parse_change(text: &str) -> Option<(Uuid, Seen)> {
    let mut parts = text.split('|');
    let user = parts.next()?.parse().ok()?;
    let rank: i64 = parts.next()?.parse().ok()?;
    let last_seen = parts.next().and_then(|s| s.parse().ok());
    Some((
        user,
        Seen {
            status: Status::from_rank(rank),
            last_seen,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse() {
        let u = Uuid::now_v7();
        let (user, seen) = parse_change(&format!("{u}|1|1700000000000")).unwrap();
        assert_eq!(user, u);
        assert_eq!(
            seen,
            Seen {
                status: Status::Idle,
                last_seen: Some(1_700_000_000_000)
            }
        );
        let (_, seen) = parse_change(&format!("{u}|2|")).unwrap();
        assert_eq!(seen.last_seen, None);
        assert!(parse_change("nonsense").is_none());
    }
}
