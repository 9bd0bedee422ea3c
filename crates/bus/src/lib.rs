//! Domain events between services.
//!
//! - [`Envelope`]: `{id (uuid v7), type, version, occurred_at, source, traceparent, data}`.
//! - [`outbox`]: producers write events in the same DB transaction as the state change
//!   ([`outbox::enqueue`]); the [`outbox::Relay`] publishes committed rows and marks
//!   them sent. A rolled-back change publishes nothing; a crash between commit and
//!   publish only delays delivery.
//! - [`inbox`]: consumers record each processed event id in their own DB in the same
//!   transaction as its effect, so at-least-once delivery applies an event once.
//! - Transports ([`Bus`]): in-process (embedded default) and Redis Streams with consumer
//!   groups (XREADGROUP, XACK after the handler commits, XAUTOCLAIM of entries left
//!   pending by a dead consumer, MAXLEN-bounded streams).
//! - [`recovery`]: Redis may be down (services start anyway and catch up) or lose data
//!   (the relays notice through an epoch marker and re-publish from their outboxes, within
//!   the outbox retention window, 24 h).
//! - [`testing`]: a private `redis-server` per test, to kill, wipe or rewind.
//!
//! Two ways to subscribe:
//! - [`Bus::subscribe`] with a [`Subscription`] (consumer group): each event reaches
//!   **one** instance of the consuming service — for work that must happen once
//!   (projections into the service's database, through [`inbox`]).
//! - [`Bus::subscribe_broadcast`] with a [`Broadcast`]: **every** subscriber, in every
//!   process, gets every event — for per-process state such as caches and in-memory
//!   revocation lists (`session.revoked`). On start it also reads back the events of a
//!   lookback window, so a restarted process learns what happened just before.
//!   Broadcast delivery is at least once per subscriber (the lookback replays, a failed
//!   handler is retried), so broadcast handlers must be idempotent.

pub mod inbox;
pub mod memory;
pub mod outbox;
pub mod recovery;
pub mod redis_streams;
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// One domain event as it travels on the bus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub id: uuid::Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
    pub occurred_at: String,
    pub source: String,
    /// W3C trace context of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: serde_json::Value,
}

impl Envelope {
    pub fn new(source: &str, kind: &str, data: impl Serialize) -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            kind: kind.to_owned(),
            version: 1,
            occurred_at: kit::time::rfc3339(kit::time::now_ms()),
            source: source.to_owned(),
            // Created inside a request (or event) handler: the event continues its trace.
            traceparent: kit::trace::current_traceparent(),
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        }
    }

    /// Decodes `data` into the event's payload type.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_value(self.data.clone())
            .map_err(|e| anyhow::anyhow!("bad {} payload: {e}", self.kind))
    }
}

/// Handles one event. Returning `Err` leaves it unacknowledged: it is delivered again.
pub type Handler = Arc<dyn Fn(Envelope) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// Wraps an async fn as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Envelope) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Arc::new(move |e| Box::pin(f(e)))
}

/// A subscription: consumer group `group` reading the streams of `sources`.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub group: String,
    pub sources: Vec<String>,
}

impl Subscription {
    pub fn new(group: &str, sources: &[&str]) -> Self {
        Self {
            group: group.to_owned(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Default lookback of a [`Broadcast`]: the access-token lifetime (15 min), so a process
/// that (re)starts still learns every revocation of a token that can still be presented.
pub const DEFAULT_BROADCAST_LOOKBACK: Duration = Duration::from_secs(15 * 60);

/// A broadcast subscription: every subscriber gets every event of `sources`.
///
/// On start the subscriber first receives the retained events published during the
/// last `lookback` (then live ones). Delivery is at least once per subscriber: events
/// in the lookback window are replayed after a restart, and a handler returning `Err`
/// gets the same event again — **handlers must be idempotent**. Events are not
/// acknowledged anywhere: a broadcast subscriber leaves no state in the transport.
#[derive(Clone, Debug)]
pub struct Broadcast {
    /// A label for logs and metrics (`consumer`), e.g. the subscribing service's name.
    pub name: String,
    pub sources: Vec<String>,
    pub lookback: Duration,
}

impl Broadcast {
    pub fn new(name: &str, sources: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            lookback: DEFAULT_BROADCAST_LOOKBACK,
        }
    }

    /// Replaces the lookback window read on start (zero: live events only).
    pub fn with_lookback(mut self, lookback: Duration) -> Self {
        self.lookback = lookback;
        self
    }

    /// Where the lookback window starts (epoch ms), taken when the caller subscribes.
    pub(crate) fn window_start_ms(&self) -> i64 {
        let lookback_ms = i64::try_from(self.lookback.as_millis()).unwrap_or(i64::MAX);
        kit::time::now_ms().saturating_sub(lookback_ms)
    }
}

/// The event transport, chosen by configuration.
#[derive(Clone)]
pub enum Bus {
    Memory(Arc<memory::MemoryBus>),
    Redis(Arc<redis_streams::RedisBus>),
}

impl Bus {
    pub fn memory() -> Self {
        Bus::Memory(Arc::new(memory::MemoryBus::default()))
    }

    /// Fails only on an invalid URL: the connection is made on first use, so a service
    /// starts (and serves what does not need events) while Redis is down.
    pub async fn redis(url: &str) -> anyhow::Result<Self> {
        Ok(Bus::Redis(Arc::new(
            redis_streams::RedisBus::connect(url).await?,
        )))
    }

    /// `redis_url` set → Redis Streams, else the in-process bus.
    pub async fn from_config(redis_url: Option<&str>) -> anyhow::Result<Self> {
        match redis_url.filter(|u| !u.trim().is_empty()) {
            Some(url) => Self::redis(url).await,
            None => Ok(Self::memory()),
        }
    }

    pub async fn publish(&self, event: &Envelope) -> anyhow::Result<()> {
        let r = match self {
            Bus::Memory(b) => {
                b.publish(event);
                Ok(())
            }
            Bus::Redis(b) => b.publish(event).await,
        };
        if r.is_ok() {
            metrics::counter!("bus_events_published_total", "service" => event.source.clone(), "type" => event.kind.clone()).increment(1);
        }
        r
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        match self {
            Bus::Memory(_) => Ok(()),
            Bus::Redis(b) => b.ping().await,
        }
    }

    /// [`Bus::ping`] as a readiness probe (what `kit::server::Setup::start` takes: the bus
    /// is reported, never required, see `kit::server::readiness`).
    pub fn probe(
        &self,
    ) -> impl Fn() -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync + 'static {
        let bus = self.clone();
        move || {
            let bus = bus.clone();
            Box::pin(async move { bus.ping().await })
        }
    }

    /// Runs `handler` for every event of the subscription until `shutdown`.
    pub fn subscribe(
        &self,
        sub: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        // Present from the start (at 0), so alerts and dashboards see the series.
        metrics::counter!("bus_redeliveries_total", "consumer" => sub.group.clone()).increment(0);
        let handler = traced(sub.group.clone(), handler);
        match self {
            Bus::Memory(b) => b.clone().subscribe(sub, handler, shutdown),
            Bus::Redis(b) => b.clone().subscribe(sub, handler, shutdown),
        }
    }

    /// Runs `handler` for every event of `sources` in **this** subscriber until
    /// `shutdown`, however many other processes subscribe too (see [`Broadcast`]; the
    /// handler must be idempotent). Redis: a plain XREAD per subscriber, starting
    /// `lookback` ago, reconnecting with backoff. In-process: every subscriber reads
    /// the whole log from the first event of the lookback window.
    pub fn subscribe_broadcast(
        &self,
        sub: Broadcast,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let handler = traced(sub.name.clone(), handler);
        match self {
            Bus::Memory(b) => b.clone().subscribe_broadcast(sub, handler, shutdown),
            Bus::Redis(b) => b.clone().subscribe_broadcast(sub, handler, shutdown),
        }
    }
}

/// Back-off after a failed handler or transport error.
pub(crate) const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Redis stream key of a source's events.
pub fn stream_key(source: &str) -> String {
    format!("intellicolab:events:{source}")
}

/// Runs each event's handler in a span that continues the producer's trace (the envelope's
/// `traceparent`), so its logs, exported spans and the events it emits join that trace.
fn traced(consumer: String, handler: Handler) -> Handler {
    use tracing::Instrument;
    Arc::new(move |event: Envelope| {
        let incoming = event
            .traceparent
            .as_deref()
            .and_then(kit::trace::TraceParent::parse)
            .unwrap_or_else(kit::trace::TraceParent::new_root);
        let ctx = incoming.child();
        let span = tracing::info_span!(
            "event",
            consumer = %consumer,
            event_type = %event.kind,
            event_id = %event.id,
            trace_id = %ctx.trace_id,
        );
        kit::trace::set_remote_parent(&span, &incoming);
        let fut = handler(event).instrument(span);
        Box::pin(kit::trace::scope(ctx, fut))
    })
}
