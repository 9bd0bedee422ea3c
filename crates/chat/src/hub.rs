//! In-process fan-out: room id → the local WebSocket connections subscribed to it.
//!
//! Every committed room event reaches [`Hub::dispatch`] (directly from the node that
//! committed it, and through Redis on the other nodes). Per room the hub delivers in
//! seq order with no gap: a duplicate is dropped, and an event that jumps ahead of the
//! last one delivered first brings the missing seqs from the database. Seqs commit in
//! order per room (the `rooms` row lock), so when seq N is visible every seq below it is.
//!
//! Each connection has a bounded inbox; when it is full the connection is too slow to
//! keep up and is closed (4008), so memory stays bounded. Connections keep their own
//! per-room cursor as well, which covers the moment they subscribe and `resume`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use kit::db::Db;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::{RoomEvent, kinds};
use crate::store;

/// WebSocket close codes of this service (documented in the OpenAPI description).
pub mod close {
    /// The client's access token expired or its session was revoked: reconnect with a new token.
    pub const SESSION_ENDED: u16 = 4001;
    /// The client did not read its events fast enough; reconnect and `resume`.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Nothing arrived from the client within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4009;
    /// The server is shutting down; reconnect (to another node) and `resume`.
    pub const GOING_AWAY: u16 = 1001;
    /// Policy violation: the user has too many open connections (`too_many_connections`).
    pub const POLICY: u16 = 1008;
    /// The database cannot be reached right now; reconnect later and `resume`.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A committed room event, with its WebSocket frame rendered once for all receivers.
pub struct Dispatched {
    pub event: RoomEvent,
    pub member: Option<Uuid>,
    pub frame: Utf8Bytes,
}

impl Dispatched {
    pub fn new(event: RoomEvent) -> Self {
        let member = event.member();
        let frame = Utf8Bytes::from(event.to_frame());
        Self {
            event,
            member,
            frame,
        }
    }
}

/// What the hub tells a connection.
pub enum Inbox {
    Event(Arc<Dispatched>),
    /// The connection now receives `room` (its user joined); deliver from `after + 1`.
    Subscribed {
        room: Uuid,
        after: i64,
    },
    /// The user left or was removed: stop delivering `room`.
    Unsubscribed {
        room: Uuid,
    },
    /// The room's last committed seq; catch up from the database if behind.
    Check {
        room: Uuid,
        last_seq: i64,
    },
    Typing(Utf8Bytes),
}

/// Closes a connection with a code the client can act on.
#[derive(Clone, Default)]
pub struct Closer {
    token: CancellationToken,
    reason: Arc<Mutex<Option<(u16, &'static str)>>>,
}

impl Closer {
    pub fn close(&self, code: u16, reason: &'static str) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
        {
            *r = Some((code, reason));
        }
        self.token.cancel();
    }
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
    pub fn reason(&self) -> Option<(u16, &'static str)> {
        self.reason.lock().ok().and_then(|r| *r)
    }
}

pub struct ConnHandle {
    pub user: Uuid,
    pub session: Uuid,
    pub inbox: mpsc::Sender<Inbox>,
    pub closer: Closer,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, ConnHandle>,
    by_user: HashMap<Uuid, HashSet<u64>>,
    rooms: HashMap<Uuid, HashSet<u64>>,
}

impl Inner {
    fn remove_conn(&mut self, id: u64) -> Option<ConnHandle> {
        let handle = self.conns.remove(&id)?;
        if let Some(set) = self.by_user.get_mut(&handle.user) {
            set.remove(&id);
            if set.is_empty() {
                self.by_user.remove(&handle.user);
            }
        }
        self.rooms.retain(|_, set| {
            set.remove(&id);
            !set.is_empty()
        });
        Some(handle)
    }
}

type Gate = Arc<tokio::sync::Mutex<Option<i64>>>;

pub struct Hub {
    db: Db,
    inner: Mutex<Inner>,
    /// Per room: the last seq delivered on this node (serialises delivery per room).
    gates: Mutex<HashMap<Uuid, Gate>>,
}

const GAP_PAGE: i64 = 500;

impl Hub {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            inner: Mutex::new(Inner::default()),
            gates: Mutex::new(HashMap::new()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than losing fan-out altogether, so keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection, or returns `None` when its user already has `max_per_user`
    /// connections on this node (0 = no limit).
    pub fn register(&self, handle: ConnHandle, max_per_user: usize) -> Option<u64> {
        let mut inner = self.inner();
        if max_per_user > 0
            && inner
                .by_user
                .get(&handle.user)
                .is_some_and(|s| s.len() >= max_per_user)
        {
            return None;
        }
        inner.next_id += 1;
        let id = inner.next_id;
        inner.by_user.entry(handle.user).or_default().insert(id);
        inner.conns.insert(id, handle);
        metrics::gauge!("chat_ws_connections").set(inner.conns.len() as f64);
        Some(id)
    }

    pub fn unregister(&self, id: u64) {
        let mut inner = self.inner();
        inner.remove_conn(id);
        metrics::gauge!("chat_ws_connections").set(inner.conns.len() as f64);
        self.prune_gates(&inner);
    }

    fn prune_gates(&self, inner: &Inner) {
        if let Ok(mut gates) = self.gates.lock() {
            gates.retain(|room, _| inner.rooms.contains_key(room));
        }
    }

    pub fn subscribe(&self, id: u64, rooms: &[Uuid]) {
        let mut inner = self.inner();
        if !inner.conns.contains_key(&id) {
            return;
        }
        for room in rooms {
            inner.rooms.entry(*room).or_default().insert(id);
        }
    }

    pub fn local_rooms(&self) -> Vec<Uuid> {
        self.inner().rooms.keys().copied().collect()
    }

    /// Closes every connection of session `sid` (revoked).
    pub fn close_session(&self, sid: Uuid) {
        let inner = self.inner();
        for handle in inner.conns.values().filter(|h| h.session == sid) {
            handle.closer.close(close::SESSION_ENDED, "session revoked");
        }
    }

    pub fn close_all(&self, code: u16, reason: &'static str) {
        for handle in self.inner().conns.values() {
            handle.closer.close(code, reason);
        }
    }

    fn gate(&self, room: Uuid) -> Gate {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.entry(room).or_default().clone()
    }

    fn interested(&self, event: &RoomEvent) -> bool {
        let inner = self.inner();
        inner.rooms.contains_key(&event.room_id)
            || (event.kind == kinds::MEMBER_JOINED
                && event
                    .member()
                    .is_some_and(|u| inner.by_user.contains_key(&u)))
    }

    /// Delivers a committed event to the local connections, in seq order per room.
    pub async fn dispatch(&self, event: RoomEvent) {
        if !self.interested(&event) {
            return;
        }
        let room = event.room_id;
        let gate = self.gate(room);
        let mut last = gate.lock().await;
        match *last {
            Some(l) if event.seq <= l => return,
            Some(l) if event.seq > l + 1 => {
                self.fill(room, &mut last, event.seq).await;
                if last.is_some_and(|l| event.seq <= l) {
                    return;
                }
            }
            _ => {}
        }
        let seq = event.seq;
        self.deliver(&Arc::new(Dispatched::new(event)));
        *last = Some(seq);
    }

    /// Delivers the events after `*last` and before `before` from the database.
    async fn fill(&self, room: Uuid, last: &mut Option<i64>, before: i64) {
        let Some(mut after) = *last else { return };
        metrics::counter!("chat_fanout_gap_fills_total").increment(1);
        loop {
            let page = store::events(self.db.pool(), room, after, Some(before), GAP_PAGE).await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    // The connections' own cursors repair this on their next event.
                    tracing::warn!(error = %e, %room, "cannot fill a fan-out gap from the database");
                    return;
                }
            };
            let n = page.len() as i64;
            for e in page {
                after = e.seq;
                self.deliver(&Arc::new(Dispatched::new(e)));
                *last = Some(after);
            }
            if n < GAP_PAGE {
                return;
            }
        }
    }

    fn deliver(&self, d: &Arc<Dispatched>) {
        let room = d.event.room_id;
        let mut slow = Vec::new();
        let mut inner = self.inner();
        if d.event.kind == kinds::MEMBER_JOINED
            && let Some(user) = d.member
        {
            let ids: Vec<u64> = inner
                .by_user
                .get(&user)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            for id in ids {
                if inner.rooms.entry(room).or_default().insert(id)
                    && let Some(h) = inner.conns.get(&id)
                    && h.inbox
                        .try_send(Inbox::Subscribed {
                            room,
                            after: d.event.seq - 1,
                        })
                        .is_err()
                {
                    slow.push(id);
                }
            }
        }
        let mut delivered = 0u64;
        if let Some(set) = inner.rooms.get(&room) {
            for id in set {
                let Some(h) = inner.conns.get(id) else {
                    continue;
                };
                match h.inbox.try_send(Inbox::Event(d.clone())) {
                    Ok(()) => delivered += 1,
                    Err(_) => slow.push(*id),
                }
            }
        }
        if matches!(
            d.event.kind.as_str(),
            kinds::MEMBER_LEFT | kinds::MEMBER_REMOVED
        ) && let Some(user) = d.member
        {
            let ids: Vec<u64> = inner
                .by_user
                .get(&user)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            for id in ids {
                let removed = inner.rooms.get_mut(&room).is_some_and(|s| s.remove(&id));
                if removed
                    && let Some(h) = inner.conns.get(&id)
                    && h.inbox.try_send(Inbox::Unsubscribed { room }).is_err()
                {
                    slow.push(id);
                }
            }
            if inner.rooms.get(&room).is_some_and(HashSet::is_empty) {
                inner.rooms.remove(&room);
            }
        }
        for id in slow {
            if let Some(h) = inner.remove_conn(id) {
                metrics::counter!("chat_ws_slow_consumer_disconnects_total").increment(1);
                h.closer.close(close::SLOW_CONSUMER, "slow consumer");
            }
        }
        metrics::gauge!("chat_ws_connections").set(inner.conns.len() as f64);
        drop(inner);
        if delivered > 0 {
            metrics::counter!("chat_fanout_deliveries_total").increment(delivered);
            let age_ms = (kit::time::now_ms() - d.event.created_at).max(0);
            metrics::histogram!("chat_fanout_latency_seconds").record(age_ms as f64 / 1000.0);
        }
    }

    /// `{"type":"typing"}` to the room's connections of other users (dropped when full).
    pub fn typing(&self, room: Uuid, user: Uuid) {
        let frame = Utf8Bytes::from(
            serde_json::json!({"type": "typing", "room_id": room, "user_id": user}).to_string(),
        );
        self.to_others(room, user, frame);
    }

    /// `{"type":"read"}` (v1.1 read receipts) to the room's connections of other users;
    /// ephemeral like typing (the `Typing` inbox slot: dropped when full, never held).
    pub fn read(&self, room: Uuid, user: Uuid, seq: i64) {
        let frame = Utf8Bytes::from(
            serde_json::json!({"type": "read", "room_id": room, "user_id": user, "seq": seq})
                .to_string(),
        );
        self.to_others(room, user, frame);
    }

    /// An ephemeral frame to every connection of `user` on this node (dropped when full).
    pub fn to_user(&self, user: Uuid, frame: serde_json::Value) {
        let frame = Utf8Bytes::from(frame.to_string());
        let inner = self.inner();
        for id in inner.by_user.get(&user).into_iter().flatten() {
            if let Some(h) = inner.conns.get(id) {
                let _ = h.inbox.try_send(Inbox::Typing(frame.clone()));
            }
        }
    }

    fn to_others(&self, room: Uuid, user: Uuid, frame: Utf8Bytes) {
        let inner = self.inner();
        let Some(set) = inner.rooms.get(&room) else {
            return;
        };
        for id in set {
            if let Some(h) = inner.conns.get(id)
                && h.user != user
            {
                let _ = h.inbox.try_send(Inbox::Typing(frame.clone()));
            }
        }
    }

    /// Compares the rooms' committed seqs with what was delivered here and delivers what
    /// is missing (an event lost on the Redis bus, with nothing after it yet).
    pub async fn resync(&self) {
        let rooms = self.local_rooms();
        if rooms.is_empty() {
            return;
        }
        let seqs = match self.db.pool().acquire().await {
            Ok(mut conn) => store::last_seqs(&mut conn, &rooms).await,
            Err(e) => Err(e),
        };
        let seqs = match seqs {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "fan-out resync cannot read the rooms");
                return;
            }
        };
        for (room, last_seq) in seqs {
            let gate = self.gate(room);
            let mut last = gate.lock().await;
            match *last {
                Some(l) if l >= last_seq => {}
                Some(_) => self.fill(room, &mut last, last_seq + 1).await,
                None => {
                    let mut slow = Vec::new();
                    let mut inner = self.inner();
                    if let Some(set) = inner.rooms.get(&room) {
                        for id in set {
                            if let Some(h) = inner.conns.get(id)
                                && h.inbox.try_send(Inbox::Check { room, last_seq }).is_err()
                            {
                                slow.push(*id);
                            }
                        }
                    }
                    for id in slow {
                        if let Some(h) = inner.remove_conn(id) {
                            metrics::counter!("chat_ws_slow_consumer_disconnects_total")
                                .increment(1);
                            h.closer.close(close::SLOW_CONSUMER, "slow consumer");
                        }
                    }
                }
            }
        }
        let inner = self.inner();
        self.prune_gates(&inner);
    }
}
