//! In-process transport for the single-binary mode: an append-only log per source,
//! read by each consumer group from the start, so a consumer that subscribes late
//! still sees what was published before it. Bounded: the oldest entries are dropped
//! past `MAX_RETAINED` per source (durability lives in the producers' outboxes).
//!
//! Every subscriber keeps its own read position, so in one process a consumer group
//! reads every event anyway; a [`Broadcast`] subscriber starts at the first event of
//! its lookback window instead of the start of the log.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Broadcast, Envelope, Handler, RETRY_DELAY, Subscription};

const MAX_RETAINED: usize = 100_000;

#[derive(Default)]
struct Log {
    base: usize,
    /// Events with the time (epoch ms) they were published.
    items: VecDeque<(i64, Arc<Envelope>)>,
}

pub struct MemoryBus {
    logs: Mutex<HashMap<String, Log>>,
    version: watch::Sender<u64>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self {
            logs: Mutex::new(HashMap::new()),
            version: watch::channel(0).0,
        }
    }
}

impl MemoryBus {
    pub fn publish(&self, event: &Envelope) {
        if let Ok(mut logs) = self.logs.lock() {
            let log = logs.entry(event.source.clone()).or_default();
            log.items
                .push_back((kit::time::now_ms(), Arc::new(event.clone())));
            if log.items.len() > MAX_RETAINED {
                log.items.pop_front();
                log.base += 1;
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Events of `source` from `offset` on, and the offset after them.
    fn read(&self, source: &str, offset: usize) -> (Vec<Arc<Envelope>>, usize) {
        let Ok(logs) = self.logs.lock() else {
            return (Vec::new(), offset);
        };
        let Some(log) = logs.get(source) else {
            return (Vec::new(), offset);
        };
        let start = offset.max(log.base);
        if start > offset {
            tracing::warn!(
                source,
                lost = start - offset,
                "in-process bus dropped old events"
            );
        }
        let items: Vec<_> = log
            .items
            .iter()
            .skip(start - log.base)
            .map(|(_, e)| e.clone())
            .collect();
        let next = start + items.len();
        (items, next)
    }

    /// Offset of the first event of `source` published at or after `since_ms`.
    fn offset_since(&self, source: &str, since_ms: i64) -> usize {
        let Ok(logs) = self.logs.lock() else {
            return 0;
        };
        let Some(log) = logs.get(source) else {
            return 0;
        };
        log.base + log.items.partition_point(|(at, _)| *at < since_ms)
    }

    pub fn subscribe(
        self: Arc<Self>,
        sub: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let offsets = HashMap::new();
        tokio::spawn(self.run(sub.group, sub.sources, offsets, handler, shutdown))
    }

    pub fn subscribe_broadcast(
        self: Arc<Self>,
        sub: Broadcast,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let since = sub.window_start_ms();
        let offsets = sub
            .sources
            .iter()
            .map(|s| (s.clone(), self.offset_since(s, since)))
            .collect();
        tokio::spawn(self.run(sub.name, sub.sources, offsets, handler, shutdown))
    }

    /// Delivers the events of `sources` from `offsets` (0 where absent) on.
    async fn run(
        self: Arc<Self>,
        consumer: String,
        sources: Vec<String>,
        mut offsets: HashMap<String, usize>,
        handler: Handler,
        shutdown: CancellationToken,
    ) {
        let mut changes = self.version.subscribe();
        loop {
            changes.borrow_and_update();
            let mut delivered = false;
            for source in &sources {
                let offset = offsets.get(source).copied().unwrap_or(0);
                let (events, next) = self.read(source, offset);
                for event in events {
                    delivered = true;
                    // At-least-once: retry until the handler succeeds.
                    loop {
                        match handler(Envelope::clone(&event)).await {
                            Ok(()) => {
                                metrics::counter!("bus_events_consumed_total", "consumer" => consumer.clone(), "type" => event.kind.clone()).increment(1);
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(consumer = %consumer, event = %event.id, kind = %event.kind, error = %e, "event handler failed; retrying");
                                metrics::counter!("bus_redeliveries_total", "consumer" => consumer.clone()).increment(1);
                                tokio::select! {
                                    _ = shutdown.cancelled() => return,
                                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                                }
                            }
                        }
                    }
                }
                offsets.insert(source.clone(), next);
            }
            if delivered {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = changes.changed() => if r.is_err() { return },
            }
        }
    }
}
