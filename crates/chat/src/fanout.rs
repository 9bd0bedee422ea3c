//! Getting committed room events to every node: the local [`Hub`] directly, and — with
//! Redis configured — the other nodes over one pub/sub channel. Each node holds ONE
//! subscriber connection for all rooms. Pub/sub is lossy (a node that is disconnected
//! misses messages), so the hub fills seq gaps from the database, and a periodic resync
//! delivers events whose announcement was lost with nothing after them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::RoomEvent;
use crate::hub::Hub;

/// Messages queued for Redis beyond this are dropped (the receivers' resync repairs them).
const PUBLISH_QUEUE: usize = 10_000;

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    Event {
        node: Uuid,
        event: RoomEvent,
    },
    Typing {
        node: Uuid,
        room_id: Uuid,
        user_id: Uuid,
    },
    /// A member's read marker moved (v1.1 read receipts; ephemeral like typing).
    Read {
        node: Uuid,
        room_id: Uuid,
        user_id: Uuid,
        seq: i64,
    },
}

#[derive(Clone)]
pub struct Fanout {
    pub hub: Arc<Hub>,
    node: Uuid,
    redis: Option<mpsc::Sender<String>>,
}

impl Fanout {
    /// Starts the Redis publisher and subscriber (when `redis_url` is set) and the resync.
    pub async fn start(
        hub: Arc<Hub>,
        redis_url: Option<&str>,
        channel: String,
        resync_every: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Self, Vec<tokio::task::JoinHandle<()>>)> {
        let node = Uuid::now_v7();
        let mut tasks = Vec::new();
        let redis = match redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url)
                    .map_err(|e| anyhow::anyhow!("invalid redis_url: {e}"))?;
                // Lazy: the node starts (and serves its local rooms) while Redis is down; the
                // manager connects on the first publish and reconnects after failures, and
                // the subscriber loop below retries on its own. One connect attempt of 1 s
                // and one retry, so a publish during an outage fails fast (the receivers'
                // resync repairs what it dropped).
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(1);
                let publisher =
                    redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)
                        .map_err(|e| anyhow::anyhow!("invalid Redis configuration: {e}"))?;
                let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
                tasks.push(tokio::spawn(publish_loop(
                    publisher,
                    channel.clone(),
                    rx,
                    shutdown.clone(),
                )));
                tasks.push(tokio::spawn(subscribe_loop(
                    client,
                    channel,
                    node,
                    hub.clone(),
                    shutdown.clone(),
                )));
                Some(tx)
            }
        };
        let resync_hub = hub.clone();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(resync_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => resync_hub.resync().await,
                }
            }
        }));
        Ok((Self { hub, node, redis }, tasks))
    }

    fn send(&self, wire: &Wire) {
        let Some(tx) = &self.redis else { return };
        let Ok(text) = serde_json::to_string(wire) else {
            return;
        };
        if tx.try_send(text).is_err() {
            metrics::counter!("chat_fanout_publish_dropped_total").increment(1);
        }
    }

    /// Hands committed events to every node (call after commit, in seq order).
    pub async fn publish(&self, events: Vec<RoomEvent>) {
        for event in events {
            self.send(&Wire::Event {
                node: self.node,
                event: event.clone(),
            });
            self.hub.dispatch(event).await;
        }
    }

    pub fn typing(&self, room_id: Uuid, user_id: Uuid) {
        self.send(&Wire::Typing {
            node: self.node,
            room_id,
            user_id,
        });
        self.hub.typing(room_id, user_id);
    }

    /// `{"type":"read"}` to the room's other members on every node.
    pub fn read(&self, room_id: Uuid, user_id: Uuid, seq: i64) {
        self.send(&Wire::Read {
            node: self.node,
            room_id,
            user_id,
            seq,
        });
        self.hub.read(room_id, user_id, seq);
    }
}

async fn publish_loop(
    mut conn: redis::aio::ConnectionManager,
    channel: String,
    mut rx: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = shutdown.cancelled() => None,
        };
        let Some(msg) = msg else { return };
        let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(msg)
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            metrics::counter!("chat_fanout_publish_errors_total").increment(1);
            tracing::warn!(error = %e, "cannot publish a room event to Redis");
        }
    }
}

async fn subscribe_loop(
    client: redis::Client,
    channel: String,
    node: Uuid,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    // Reconnect backoff: doubles from 500 ms to 2 s while Redis is away (a warn line each
    // time, not two a second), back to 500 ms once subscribed. Whatever is published
    // meanwhile is repaired by the resync on (re)subscription.
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
                tracing::info!("subscribed to the chat fan-out channel");
                backoff = BACKOFF_MIN;
                // Whatever was published while we were away is in the database.
                hub.resync().await;
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
                    handle(&text, node, &hub).await;
                }
                tracing::warn!("chat fan-out subscription lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to the chat fan-out channel")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn handle(text: &str, me: Uuid, hub: &Hub) {
    let wire: Wire = match serde_json::from_str(text) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable fan-out message");
            return;
        }
    };
    match wire {
        Wire::Event { node, .. } | Wire::Typing { node, .. } | Wire::Read { node, .. }
            if node == me => {}
        Wire::Event { event, .. } => hub.dispatch(event).await,
        Wire::Typing {
            room_id, user_id, ..
        } => hub.typing(room_id, user_id),
        Wire::Read {
            room_id,
            user_id,
            seq,
            ..
        } => hub.read(room_id, user_id, seq),
    }
}
