//! Presence (API.md, Chat additions — v1.1): who is `online`, `idle` or `offline`.
//!
//! - **Local tracker** (per node): per user, its open connections on this node and how
//!   many of them are active. The node's *local status* of a user is `online` (an active
//!   connection), `idle` (connections, none active) or — after its last connection closed
//!   — the status it had, kept for the grace period (a quick reconnect shows nothing),
//!   then gone.
//! - **Store** ([`store`]): what every node's local statuses add up to. In-process without
//!   Redis (one node: the local status is the status); with Redis one hash per user
//!   (field = node, value = its local status), the status being the best field
//!   (online > idle > offline). Every change is applied by one Lua script that also
//!   publishes the new status when it changed, so changes reach every node in the order
//!   they were made. Nodes refresh a liveness key; the fields of a node whose key
//!   expired (kill -9, partition) are removed by one survivor once the grace period since
//!   its last heartbeat is over.
//! - **Subscriber index**: target user → the local connections subscribed to it. A change
//!   costs one lookup and one frame per subscriber — never a scan over rooms or all
//!   connections (room-based fan-out, as in Synapse, costs members × rooms per change).
//!   Frames go through the connection's bounded hub inbox as ephemeral frames (like
//!   typing): dropped, never waited for, when the client is behind.
//! - **Blocks**: a user who blocks the viewer is shown `offline` with `last_seen_at` null.
//!   Checked once per subscribe (and per `GET`) with one primary-key read of chat's copy
//!   of the blocks for the ≤ 200 ids; a block made while subscribed takes effect at the
//!   viewer's next subscribe.
//!
//! `last_seen_at` is when the user was last online: for an `online` user the time of the
//! answer (now), for `idle` the moment it went idle, for `offline` the moment it stopped
//! being online (went idle, or its last connection closed, or its node's last heartbeat).

mod blocks;
mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::hub::Inbox;
pub use blocks::blockers_of;
pub use store::Store;

/// Ids per `GET /chat/presence` or `presence.subscribe` (API.md).
pub const MAX_IDS: usize = 200;
/// Users whose changes go to the store in one round trip (one Redis pipeline): one call
/// per change capped a node at ~1,000 changes/s on the 2-vCPU bench machine, and 10,000
/// users connecting at once queued for 10 s.
pub(crate) const WRITE_BATCH: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Offline = 0,
    Idle = 1,
    Online = 2,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Offline => "offline",
            Status::Idle => "idle",
            Status::Online => "online",
        }
    }
    fn from_rank(r: i64) -> Status {
        match r {
            2 => Status::Online,
            1 => Status::Idle,
            _ => Status::Offline,
        }
    }
}

/// One user's presence as answered: `last_seen_at` in epoch ms (`None` = never seen).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seen {
    pub status: Status,
    pub last_seen: Option<i64>,
}

impl Seen {
    pub const UNKNOWN: Seen = Seen {
        status: Status::Offline,
        last_seen: None,
    };

    /// The JSON item of `GET /chat/presence` and of the `presence` frame (without `type`).
    pub fn to_json(self, user: Uuid) -> serde_json::Value {
        let last_seen = match self.status {
            Status::Online => Some(kit::time::now_ms()),
            _ => self.last_seen,
        };
        serde_json::json!({
            "user_id": user,
            "status": self.status.as_str(),
            "last_seen_at": last_seen.map(kit::time::rfc3339),
        })
    }
}

/// This node's view of one user.
#[derive(Default)]
struct Entry {
    conns: u32,
    active: u32,
    /// The status shown while connected (kept through the grace period after the last close).
    shown: Option<Status>,
    /// The last connection closed at this time (ms); the entry goes at `closed_at + grace`.
    closed_at: Option<i64>,
    /// When the user last stopped being online on this node (ms).
    left_online: Option<i64>,
    /// What the store holds for this node (`None` = nothing, or unknown after an error).
    written: Option<Status>,
    /// A write is queued.
    queued: bool,
}

impl Entry {
    /// The local status the store should hold now (`None` = no field: gone).
    fn desired(&self, now: i64, grace: i64) -> Option<Status> {
        if self.conns > 0 {
            return Some(if self.active > 0 {
                Status::Online
            } else {
                Status::Idle
            });
        }
        match self.closed_at {
            Some(t) if now < t + grace => self.shown,
            _ => None,
        }
    }
    fn refresh_shown(&mut self, now: i64) {
        if self.conns == 0 {
            return;
        }
        let status = if self.active > 0 {
            Status::Online
        } else {
            Status::Idle
        };
        if self.shown == Some(Status::Online) && status != Status::Online {
            self.left_online = Some(now);
        }
        self.shown = Some(status);
    }
}

struct Sub {
    targets: HashSet<Uuid>,
    /// Targets that block the viewer: never sent.
    hidden: HashSet<Uuid>,
    inbox: mpsc::Sender<Inbox>,
}

#[derive(Default)]
struct Subs {
    conns: HashMap<u64, Sub>,
    by_target: HashMap<Uuid, HashSet<u64>>,
    /// Per target with local subscribers: the status they were last sent (initial lookup
    /// or change). Drops duplicate announcements, and lets [`Presence::repair`] send only
    /// what changed while this node missed announcements.
    shown: HashMap<Uuid, Status>,
}

impl Subs {
    fn remove(&mut self, conn: u64) {
        let Some(sub) = self.conns.remove(&conn) else {
            return;
        };
        for t in sub.targets {
            if let Some(set) = self.by_target.get_mut(&t) {
                set.remove(&conn);
                if set.is_empty() {
                    self.by_target.remove(&t);
                    self.shown.remove(&t);
                }
            }
        }
    }
}

pub struct Presence {
    grace_ms: i64,
    local: Mutex<HashMap<Uuid, Entry>>,
    subs: Mutex<Subs>,
    store: Store,
    dirty: mpsc::UnboundedSender<Uuid>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent at every await-free step; a panic elsewhere must not end
    // presence for the whole node.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings from [`crate::Config`].
pub struct Settings {
    pub grace: Duration,
    pub heartbeat: Duration,
    pub node_ttl: Duration,
    pub prefix: String,
}

impl Presence {
    /// Starts the writer, the sweeper/heartbeat and (with Redis) the change subscriber.
    pub fn start(
        redis_url: Option<&str>,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Arc<Self>, Vec<tokio::task::JoinHandle<()>>)> {
        let store = Store::new(redis_url, &settings)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let presence = Arc::new(Presence {
            grace_ms: settings.grace.as_millis() as i64,
            local: Mutex::new(HashMap::new()),
            subs: Mutex::new(Subs::default()),
            store,
            dirty: tx,
        });
        let mut tasks = vec![
            tokio::spawn(writer(
                presence.clone(),
                rx,
                settings.heartbeat,
                shutdown.clone(),
            )),
            tokio::spawn(ticker(presence.clone(), settings, shutdown.clone())),
        ];
        if let Some(t) = presence.store.spawn_subscriber(presence.clone(), shutdown) {
            tasks.push(t);
        }
        Ok((presence, tasks))
    }

    fn mark(&self, local: &mut HashMap<Uuid, Entry>, user: Uuid) {
        if let Some(e) = local.get_mut(&user)
            && !e.queued
        {
            e.queued = true;
            let _ = self.dirty.send(user);
        }
    }

    /// A connection of `user` opened on this node (connections start active).
    pub fn connect(&self, user: Uuid) {
        let now = kit::time::now_ms();
        let mut local = lock(&self.local);
        let e = local.entry(user).or_default();
        e.conns += 1;
        e.active += 1;
        e.closed_at = None;
        e.refresh_shown(now);
        self.mark(&mut local, user);
    }

    /// A connection of `user` turned active (`true`) or idle.
    pub fn activity(&self, user: Uuid, active: bool) {
        let now = kit::time::now_ms();
        let mut local = lock(&self.local);
        let Some(e) = local.get_mut(&user) else {
            return;
        };
        if active {
            e.active += 1;
        } else {
            e.active = e.active.saturating_sub(1);
        }
        e.refresh_shown(now);
        self.mark(&mut local, user);
    }

    /// A connection of `user` closed; `active` = it was active. The user keeps its status
    /// for the grace period after its last connection here closed.
    pub fn disconnect(&self, user: Uuid, active: bool) {
        let now = kit::time::now_ms();
        let mut local = lock(&self.local);
        let Some(e) = local.get_mut(&user) else {
            return;
        };
        e.conns = e.conns.saturating_sub(1);
        if active {
            e.active = e.active.saturating_sub(1);
        }
        if e.conns == 0 {
            e.closed_at = Some(now);
            if e.shown == Some(Status::Online) {
                e.left_online = Some(now);
            }
        } else {
            e.refresh_shown(now);
        }
        self.mark(&mut local, user);
    }

    /// Replaces the targets of connection `conn` (inbox `inbox`); `hidden` are the
    /// targets that block the connection's user. Returns the targets that were not in the
    /// previous set (in the order given): those get their current status.
    pub fn subscribe(
        &self,
        conn: u64,
        inbox: mpsc::Sender<Inbox>,
        targets: &[Uuid],
        hidden: HashSet<Uuid>,
    ) -> Vec<Uuid> {
        let mut subs = lock(&self.subs);
        let new: Vec<Uuid> = match subs.conns.get(&conn) {
            Some(old) => targets
                .iter()
                .filter(|t| !old.targets.contains(t))
                .copied()
                .collect(),
            None => targets.to_vec(),
        };
        subs.remove(conn);
        if targets.is_empty() {
            metrics::gauge!("chat_presence_subscribed_connections").set(subs.conns.len() as f64);
            return new;
        }
        let targets: HashSet<Uuid> = targets.iter().copied().collect();
        for t in &targets {
            subs.by_target.entry(*t).or_default().insert(conn);
        }
        subs.conns.insert(
            conn,
            Sub {
                targets,
                hidden,
                inbox,
            },
        );
        metrics::gauge!("chat_presence_subscribed_connections").set(subs.conns.len() as f64);
        new
    }

    pub fn unsubscribe(&self, conn: u64) {
        let mut subs = lock(&self.subs);
        subs.remove(conn);
        metrics::gauge!("chat_presence_subscribed_connections").set(subs.conns.len() as f64);
    }

    /// Current presence of `users` (≤ [`MAX_IDS`]), as this node knows it when the store
    /// cannot be read (Redis down: this node's own connections, else offline/unknown).
    pub async fn lookup(&self, users: &[Uuid]) -> Vec<Seen> {
        match self.store.lookup(users).await {
            Some(found) => found,
            None => {
                let now = kit::time::now_ms();
                let local = lock(&self.local);
                users
                    .iter()
                    .map(
                        |u| match local.get(u).and_then(|e| e.desired(now, self.grace_ms)) {
                            Some(status) => Seen {
                                status,
                                last_seen: local.get(u).and_then(|e| e.left_online),
                            },
                            None => Seen::UNKNOWN,
                        },
                    )
                    .collect()
            }
        }
    }

    /// Sends a change of `user` to its subscribers on this node.
    fn deliver(&self, user: Uuid, seen: Seen) {
        let mut subs = lock(&self.subs);
        if !subs.by_target.contains_key(&user)
            || subs.shown.insert(user, seen.status) == Some(seen.status)
        {
            return;
        }
        let subs = &*subs;
        let Some(ids) = subs.by_target.get(&user) else {
            return;
        };
        let mut frame = seen.to_json(user);
        frame["type"] = "presence".into();
        let frame = Utf8Bytes::from(frame.to_string());
        let mut delivered = 0u64;
        for id in ids {
            if let Some(sub) = subs.conns.get(id)
                && !sub.hidden.contains(&user)
                && sub.inbox.try_send(Inbox::Typing(frame.clone())).is_ok()
            {
                delivered += 1;
            }
        }
        metrics::counter!("chat_presence_frames_delivered_total").increment(delivered);
    }

    /// Records what subscribers were just told of `users` (their initial frames), where
    /// nothing is recorded yet.
    pub fn seed(&self, users: &[Uuid], found: &[Seen]) {
        let mut subs = lock(&self.subs);
        for (u, seen) in users.iter().zip(found) {
            if subs.by_target.contains_key(u) {
                subs.shown.entry(*u).or_insert(seen.status);
            }
        }
    }

    /// After this node was cut off from the change announcements (Redis pub/sub
    /// reconnected): looks every subscribed target up again (200 per round trip) and sends
    /// the changes its subscribers missed.
    pub async fn repair(&self) {
        let targets: Vec<Uuid> = lock(&self.subs).by_target.keys().copied().collect();
        for chunk in targets.chunks(MAX_IDS) {
            let Some(found) = self.store.lookup(chunk).await else {
                return;
            };
            for (u, seen) in chunk.iter().zip(found) {
                self.deliver(*u, seen);
            }
        }
    }

    /// Writes what changed locally for `users` to the store (one round trip).
    async fn flush(&self, users: &[Uuid]) {
        let now = kit::time::now_ms();
        let mut changes = Vec::new();
        {
            let mut local = lock(&self.local);
            for user in users {
                let Some(e) = local.get_mut(user) else {
                    continue;
                };
                e.queued = false;
                let desired = e.desired(now, self.grace_ms);
                if desired != e.written {
                    changes.push((*user, desired, e.left_online));
                }
            }
        }
        if !changes.is_empty() {
            if !self.store.write(self, &changes).await {
                // `written` stays what the store last accepted (so a field that may still
                // be there keeps the entry): the sweep retries once the store is back.
                return;
            }
            let mut local = lock(&self.local);
            for (user, desired, _) in &changes {
                if let Some(e) = local.get_mut(user) {
                    e.written = *desired;
                }
            }
        }
        for user in users {
            self.drop_if_gone(*user, now);
        }
    }

    fn drop_if_gone(&self, user: Uuid, now: i64) {
        let mut local = lock(&self.local);
        if local.get(&user).is_some_and(|e| {
            e.conns == 0 && e.written.is_none() && e.desired(now, self.grace_ms).is_none()
        }) {
            local.remove(&user);
        }
    }

    /// Users whose grace period ended, or whose store state is not what it should be.
    fn sweep(&self) {
        // While Redis is down every write would fail (after up to 1 s each): wait for the
        // heartbeat to find it back instead of queueing a retry per user per sweep.
        if self.store.is_down() {
            return;
        }
        let now = kit::time::now_ms();
        let mut local = lock(&self.local);
        let due: Vec<Uuid> = local
            .iter()
            .filter(|(_, e)| !e.queued && e.desired(now, self.grace_ms) != e.written)
            .map(|(u, _)| *u)
            .collect();
        for u in due {
            self.mark(&mut local, u);
        }
    }

    /// This node's users and the status the store holds for them (heartbeat refresh).
    fn written(&self) -> Vec<(Uuid, Status)> {
        lock(&self.local)
            .iter()
            .filter_map(|(u, e)| e.written.map(|s| (*u, s)))
            .collect()
    }

    #[cfg(test)]
    fn local_len(&self) -> usize {
        lock(&self.local).len()
    }
}

/// Applies local changes to the store, and (with Redis) refreshes this node's liveness
/// and fields every heartbeat — on the same task, so a refresh never writes a status
/// that a change applied after its snapshot replaced.
async fn writer(
    presence: Arc<Presence>,
    mut rx: mpsc::UnboundedReceiver<Uuid>,
    heartbeat: Duration,
    shutdown: CancellationToken,
) {
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    return;
                }
                presence.flush(&batch).await;
                batch.clear();
            }
            _ = beat.tick() => presence.store.heartbeat(&presence).await,
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Ends grace periods (checked 10 times per grace period, at most every 25 ms, at least
/// every second: an offline shows at most ~10% late) and, with Redis, cleans up after
/// dead nodes once per heartbeat interval.
async fn ticker(presence: Arc<Presence>, settings: Settings, shutdown: CancellationToken) {
    let sweep_every =
        (settings.grace / 10).clamp(Duration::from_millis(25), Duration::from_secs(1));
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(settings.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => presence.sweep(),
            _ = beat.tick() => presence.store.reap().await,
        }
    }
    // A graceful stop only drops the liveness key: the others take this node's users
    // offline after the grace period unless they reconnected elsewhere meanwhile.
    presence.store.leave(&presence).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(grace_ms: u64) -> Settings {
        Settings {
            grace: Duration::from_millis(grace_ms),
            heartbeat: Duration::from_millis(100),
            node_ttl: Duration::from_millis(500),
            prefix: "unit".into(),
        }
    }

    #[tokio::test]
    async fn entries_go_after_the_grace_period() {
        let stop = CancellationToken::new();
        let (p, _tasks) = Presence::start(None, settings(50), stop.clone()).unwrap();
        let u = Uuid::now_v7();
        p.connect(u);
        p.disconnect(u, true);
        assert_eq!(p.local_len(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(p.local_len(), 0, "the entry of a gone user is dropped");
        assert_eq!(p.lookup(&[u]).await[0].status, Status::Offline);
        stop.cancel();
    }
}
