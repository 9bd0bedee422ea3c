//! In-process transport for the single-binary mode: an append-only log per source,
//! read by each consumer group from the start, so a consumer that subscribes late
//! still sees what was published before it. Bounded: the oldest entries are dropped
//! past `MAX_RETAINED` per source (durability lives in the producers' outboxes).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Envelope, Handler, RETRY_DELAY, Subscription};

const MAX_RETAINED: usize = 100_000;

#[derive(Default)]
struct Log {
    base: usize,
    items: VecDeque<Arc<Envelope>>,
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
            log.items.push_back(Arc::new(event.clone()));
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
        let items: Vec<_> = log.items.iter().skip(start - log.base).cloned().collect();
        let next = start + items.len();
        (items, next)
    }

    pub fn subscribe(
        self: Arc<Self>,
        sub: Subscription,
        handler: Handler,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut offsets: HashMap<String, usize> = HashMap::new();
            let mut changes = self.version.subscribe();
            loop {
                changes.borrow_and_update();
                let mut delivered = false;
                for source in &sub.sources {
                    let offset = offsets.get(source).copied().unwrap_or(0);
                    let (events, next) = self.read(source, offset);
                    for event in events {
                        delivered = true;
                        // At-least-once: retry until the handler succeeds.
                        loop {
                            match handler(Envelope::clone(&event)).await {
                                Ok(()) => {
                                    metrics::counter!("bus_events_consumed_total", "consumer" => sub.group.clone(), "type" => event.kind.clone()).increment(1);
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(group = %sub.group, event = %event.id, kind = %event.kind, error = %e, "event handler failed; retrying");
                                    metrics::counter!("bus_redeliveries_total", "consumer" => sub.group.clone()).increment(1);
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
        })
    }
}
