//! `GET /chat/ws`: the real-time protocol of API.md.
//!
//! One connection = a writer task (owns the socket's sink, sends server pings) and the
//! connection loop (client frames, hub events, per-room cursors). Both queues between
//! them and the hub are bounded: a client that cannot keep up is closed with 4008 and
//! resumes from its last seqs. Per room the connection delivers seqs in order without
//! gaps, filling any gap (at subscription, on `resume`, after a lost announcement) from
//! the database, and drops what it already delivered. Until the client's first frame
//! (at most `ws_resume_wait_ms`) live events are held back, so that a `resume` sent first
//! is replayed before any of them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use kit::ApiError;
use kit::error::code;
use kit::http::Query;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::hub::{Closer, ConnHandle, Inbox, close};
use crate::service;
use crate::state::ApiContext;
use crate::store;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/chat/ws", get(upgrade))
}

/// Sends of one connection waiting to be stored (pipelining, bounded).
const SEND_QUEUE: usize = 32;
const CATCH_UP_PAGE: i64 = 200;
/// Bytes read from the socket at once (see [`upgrade`]).
const WS_READ_BUFFER: usize = 2 * 1024;
/// Outgoing bytes buffered before they are written to the socket; the writer flushes
/// after each batch of queued frames anyway.
const WS_WRITE_BUFFER: usize = 8 * 1024;
/// Frames the writer takes from its queue before one flush.
const WRITE_BATCH: usize = 64;
/// Hub items the connection handles in a row before it looks at the socket again.
const INBOX_BATCH: usize = 64;

#[derive(Deserialize)]
struct WsQuery {
    access_token: Option<String>,
}

/// The upgrade request, or a problem+json 400 for a plain HTTP request.
struct Upgrade(WebSocketUpgrade);

impl FromRequestParts<ApiContext> for Upgrade {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, ctx: &ApiContext) -> Result<Self, ApiError> {
        WebSocketUpgrade::from_request_parts(parts, ctx)
            .await
            .map(Upgrade)
            .map_err(|e| ApiError::bad_request(code::WEBSOCKET_REQUIRED, e.body_text()))
    }
}

async fn upgrade(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    ws: Result<Upgrade, ApiError>,
) -> Result<Response, ApiError> {
    // Browsers cannot set headers on WebSockets, hence the query parameter. It is never
    // logged: the request log records the route template only.
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token::extract::bearer)
        .map(str::to_owned)
        .or(q.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| token::extract::rejection(token::TokenError::Missing))?;
    let claims = ctx
        .verifier
        .verify(&token)
        .await
        .map_err(token::extract::rejection)?;
    let Upgrade(ws) = ws?;
    let max = ctx.config.ws_max_frame_bytes;
    Ok(ws
        // Small socket buffers: tungstenite defaults to 128 KiB for reading (allocated per
        // connection and re-zeroed up to its capacity on every read attempt) and 128 KiB
        // of write batching. Client frames are small; larger ones grow the buffer as needed.
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_frame_size(max)
        .max_message_size(max)
        .on_upgrade(move |socket| run(ctx, socket, claims))
        .into_response())
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Send {
        room_id: Uuid,
        /// May be left out (or empty) when the message has attachments.
        #[serde(default)]
        body: String,
        client_msg_id: String,
        reply_to: Option<Uuid>,
        thread_root_id: Option<Uuid>,
        #[serde(default)]
        attachment_ids: Vec<Uuid>,
    },
    Resume {
        rooms: BTreeMap<Uuid, i64>,
    },
    Typing {
        room_id: Uuid,
    },
    Ping,
    /// Replaces the users whose presence this connection receives (≤ 200).
    #[serde(rename = "presence.subscribe")]
    PresenceSubscribe {
        user_ids: Vec<Uuid>,
    },
    /// The client is idle (no input for a while) / active again.
    Idle,
    Active,
}

fn error_frame(client_msg_id: Option<&str>, code: &str, message: &str) -> Value {
    let mut v = json!({"type": "error", "code": code, "message": message});
    if let Some(id) = client_msg_id {
        v["client_msg_id"] = Value::String(id.to_owned());
    }
    v
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

/// Closes a connection that was never served (with `code` and `reason`), waiting a
/// little for the client's Close so that it reads the code instead of a reset.
async fn refuse(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    if tokio::time::timeout(Duration::from_secs(5), socket.send(frame))
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = socket.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Whether a read failed because a client frame or message is over `ws_max_frame_bytes`:
/// tungstenite's capacity error, which axum wraps.
fn too_big(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

async fn run(ctx: ApiContext, socket: WebSocket, claims: token::Claims) {
    let cfg = ctx.config.clone();
    let (out_tx, out_rx) = mpsc::channel::<Message>(cfg.ws_outbound_queue);
    let (inbox_tx, inbox_rx) = mpsc::channel::<Inbox>(cfg.ws_inbox_queue);
    let closer = Closer::default();
    let hub = ctx.fanout.hub.clone();
    let presence_inbox = inbox_tx.clone();
    let registered = hub.register(
        ConnHandle {
            user: claims.sub,
            session: claims.sid,
            inbox: inbox_tx,
            closer: closer.clone(),
        },
        cfg.ws_max_per_user,
    );
    // Over the per-user cap: accepted, then closed with 1008 and a reason a browser can
    // read (a refused handshake shows it only a generic error).
    let Some(id) = registered else {
        metrics::counter!("chat_ws_refused_total", "reason" => "too_many_connections").increment(1);
        refuse(socket, close::POLICY, code::TOO_MANY_CONNECTIONS).await;
        return;
    };
    ctx.presence.connect(claims.sub);
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(write_loop(
        sink,
        out_rx,
        closer.clone(),
        Duration::from_secs(cfg.ws_heartbeat_secs),
    ));
    let send_timeout = Duration::from_millis(cfg.ws_send_timeout_ms);
    let mut conn = Conn {
        ctx: ctx.clone(),
        user: claims.sub,
        username: claims.username.clone(),
        hub_id: id,
        out: out_tx,
        closer: closer.clone(),
        cursors: HashMap::new(),
        typing_sent: HashMap::new(),
        send_timeout,
        sends: None,
        hold: None,
        active: true,
        presence_inbox,
    };
    match conn.setup().await {
        Ok(()) => conn.serve(&mut stream, inbox_rx, claims.exp).await,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up a WebSocket connection");
            close_for(&closer, &e);
        }
    }
    hub.unregister(id);
    ctx.presence.unsubscribe(id);
    ctx.presence.disconnect(claims.sub, conn.active);
    closer.close(1000, "bye");
    let sender = conn.sends.take().map(|(_, task)| task);
    drop(conn);
    // Sends already queued are still stored (and acknowledged if the socket is open).
    if let Some(sender) = sender {
        let _ = sender.await;
    }
    let _ = writer.await;
    // Closing handshake: wait a little for the client's Close before dropping the TCP
    // connection, so that it reads our close code instead of a reset.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
    closer: Closer,
    heartbeat: Duration,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        let msg = tokio::select! {
            biased;
            _ = closer.token().cancelled() => break,
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = ping.tick() => Message::Ping(Default::default()),
        };
        // Whatever else is queued goes out with it: one flush (write syscall) per batch.
        let write = async {
            sink.feed(msg).await?;
            for _ in 1..WRITE_BATCH {
                match rx.try_recv() {
                    Ok(m) => sink.feed(m).await?,
                    Err(_) => break,
                }
            }
            sink.flush().await
        };
        tokio::select! {
            r = write => if r.is_err() { return },
            _ = closer.token().cancelled() => break,
        }
    }
    if let Some((code, reason)) = closer.reason() {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        // A slow client may read its backlog first; give it time to get to the close code.
        let _ = tokio::time::timeout(Duration::from_secs(30), sink.send(frame)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// Closes after a database error: 1013 (try again later) when the database cannot be
/// reached, else 1011.
fn close_for(closer: &Closer, e: &sqlx::Error) {
    if kit::db::is_unavailable(e) {
        closer.close(close::TRY_AGAIN_LATER, "database unavailable");
    } else {
        closer.close(1011, "internal error");
    }
}

struct Conn {
    ctx: ApiContext,
    user: Uuid,
    username: String,
    hub_id: u64,
    out: mpsc::Sender<Message>,
    closer: Closer,
    /// Per subscribed room: the last seq delivered to this client.
    cursors: HashMap<Uuid, i64>,
    typing_sent: HashMap<Uuid, Instant>,
    send_timeout: Duration,
    /// To the connection's sender task: stores sends one after the other, so messages
    /// from one socket keep the order in which they were sent. Started by the first send
    /// (most sockets only receive: no task, no queue for them).
    sends: Option<(mpsc::Sender<SendJob>, tokio::task::JoinHandle<()>)>,
    /// Hub items held back after `ready` until the client's first frame (or
    /// `ws_resume_wait_ms`): a `resume` is replayed before any of them, so the client sees
    /// each resumed room's missed events in seq order, then the live ones.
    hold: Option<Vec<Inbox>>,
    /// Presence: the client said it is active (the default) rather than `idle`.
    active: bool,
    /// Where presence frames for this connection go (its hub inbox).
    presence_inbox: mpsc::Sender<Inbox>,
}

struct SendJob {
    room_id: Uuid,
    body: String,
    client_msg_id: String,
    reply_to: Option<Uuid>,
    thread_root_id: Option<Uuid>,
    attachment_ids: Vec<Uuid>,
}

/// Stores the connection's sends in order and answers each with `ack` or `error`.
///
/// Sends that arrived together are queued for the writer together (in order, so they
/// are stored in order) before the first ack is awaited: a client that does not wait
/// for each ack gets its messages into the same group commit instead of one per commit.
async fn send_loop(
    ctx: ApiContext,
    user: Uuid,
    username: String,
    mut jobs: mpsc::Receiver<SendJob>,
    out: mpsc::Sender<Message>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(SEND_QUEUE);
    let mut pending = Vec::with_capacity(SEND_QUEUE);
    while jobs.recv_many(&mut batch, SEND_QUEUE).await > 0 {
        for job in batch.drain(..) {
            let queued = service::queue_message(
                &ctx,
                user,
                service::SendInput {
                    room_id: job.room_id,
                    body: &job.body,
                    client_msg_id: Some(&job.client_msg_id),
                    reply_to: job.reply_to,
                    thread_root_id: job.thread_root_id,
                    attachment_ids: &job.attachment_ids,
                    sender_username: &username,
                },
            )
            .await;
            pending.push((job.client_msg_id, queued));
        }
        for (client_msg_id, queued) in pending.drain(..) {
            let result = match queued {
                Ok(p) => p.stored().await,
                Err(e) => Err(e),
            };
            let frame = match result {
                Ok((message, _)) => {
                    json!({"type": "ack", "client_msg_id": client_msg_id, "message": message})
                }
                Err(e) => {
                    let mut frame = error_frame(Some(&client_msg_id), e.code, &e.detail);
                    // A dependency outage (503) says when to retry, as `Retry-After` does
                    // over HTTP and `retry_after_ms` does for the rate limit.
                    if let Some((_, secs)) = e.headers.iter().find(|(h, _)| *h == "retry-after")
                        && let Ok(secs) = secs.parse::<u64>()
                    {
                        frame["retry_after_ms"] = Value::from(secs * 1000);
                    }
                    frame
                }
            };
            // A lost ack is harmless: the client resends the same client_msg_id.
            if out.send_timeout(text(&frame), timeout).await.is_err() {
                return;
            }
        }
    }
}

impl Conn {
    /// Subscribes to the user's rooms: first in the hub (so nothing committed from now on
    /// is missed), then reads where each room stands (the cursors), then says `ready`.
    async fn setup(&mut self) -> Result<(), sqlx::Error> {
        let mut db = self.ctx.db.pool().acquire().await?;
        let rooms = store::room_ids_of(&mut *db, self.user).await?;
        self.ctx.fanout.hub.subscribe(self.hub_id, &rooms);
        let seqs = store::last_seqs(&mut db, &rooms).await?;
        drop(db);
        let mut ready = serde_json::Map::new();
        for (room, seq) in seqs {
            self.cursors.insert(room, seq);
            ready.insert(room.to_string(), Value::from(seq));
        }
        if self.ctx.config.ws_resume_wait_ms > 0 {
            self.hold = Some(Vec::new());
        }
        self.emit(text(&json!({"type": "ready", "rooms": ready})))
            .await;
        Ok(())
    }

    /// Ends the hold: the held items are handled in the order they came (events the
    /// replay already delivered are dropped by the cursors, gaps filled).
    async fn release(&mut self) {
        if let Some(held) = self.hold.take() {
            for item in held {
                self.handle_inbox(item).await;
            }
        }
    }

    async fn serve(
        &mut self,
        stream: &mut futures::stream::SplitStream<WebSocket>,
        mut inbox: mpsc::Receiver<Inbox>,
        exp: i64,
    ) {
        let cfg = self.ctx.config.clone();
        let idle = Duration::from_secs(cfg.ws_idle_timeout_secs);
        let mut last_seen = Instant::now();
        let mut idle_check = tokio::time::interval(idle / 4);
        let expires_in = (exp - kit::time::now_ms() / 1000).max(0) as u64;
        let expiry = tokio::time::sleep(Duration::from_secs(expires_in));
        tokio::pin!(expiry);
        let closing = self.closer.token().clone();
        let shutdown = self.ctx.shutdown.clone();
        let hold_timer = tokio::time::sleep(Duration::from_millis(cfg.ws_resume_wait_ms));
        tokio::pin!(hold_timer);
        loop {
            tokio::select! {
                biased;
                _ = closing.cancelled() => return,
                _ = shutdown.cancelled() => {
                    self.closer.close(close::GOING_AWAY, "server shutting down");
                    return;
                }
                _ = &mut hold_timer, if self.hold.is_some() => self.release().await,
                frame = stream.next() => {
                    last_seen = Instant::now();
                    match frame {
                        None => return,
                        Some(Err(e)) => {
                            if too_big(e) {
                                self.closer.close(1009, "frame too large");
                            }
                            return;
                        }
                        Some(Ok(Message::Text(t))) => self.on_text(t.as_str()).await,
                        Some(Ok(Message::Binary(_))) => {
                            self.release().await;
                            self.emit(text(&error_frame(None, code::MALFORMED_FRAME, "frames are JSON text"))).await;
                        }
                        Some(Ok(Message::Close(_))) => return,
                        Some(Ok(_)) => {}
                    }
                }
                item = inbox.recv() => match item {
                    Some(item) => {
                        self.on_inbox(item).await;
                        // Take what else is queued before polling the socket again.
                        for _ in 1..INBOX_BATCH {
                            match inbox.try_recv() {
                                Ok(item) => self.on_inbox(item).await,
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
                _ = idle_check.tick() => {
                    if last_seen.elapsed() > idle {
                        self.closer.close(close::IDLE_TIMEOUT, "idle timeout");
                        return;
                    }
                }
                _ = &mut expiry => {
                    self.closer.close(close::SESSION_ENDED, "access token expired");
                    return;
                }
            }
        }
    }

    /// Queues a frame; a client that leaves the queue full too long is too slow.
    async fn emit(&self, msg: Message) {
        tokio::select! {
            r = tokio::time::timeout(self.send_timeout, self.out.send(msg)) => match r {
                Ok(_) => {}
                Err(_) => {
                    metrics::counter!("chat_ws_slow_consumer_disconnects_total").increment(1);
                    self.closer.close(close::SLOW_CONSUMER, "slow consumer");
                }
            },
            _ = self.closer.token().cancelled() => {}
        }
    }

    async fn on_text(&mut self, raw: &str) {
        let value: Value = match serde_json::from_str(raw) {
            Ok(v) => v,
            Err(e) => {
                self.release().await;
                let msg = format!("not JSON: {e}");
                self.emit(text(&error_frame(None, code::MALFORMED_FRAME, &msg)))
                    .await;
                return;
            }
        };
        let client_msg_id = value
            .get("client_msg_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let frame: ClientFrame = match serde_json::from_value(value) {
            Ok(f) => f,
            Err(e) => {
                self.release().await;
                let msg = format!("invalid frame: {e}");
                self.emit(text(&error_frame(
                    client_msg_id.as_deref(),
                    code::MALFORMED_FRAME,
                    &msg,
                )))
                .await;
                return;
            }
        };
        // The first frame ends the hold; a `resume` first replays its rooms.
        if !matches!(frame, ClientFrame::Resume { .. }) {
            self.release().await;
        }
        match frame {
            ClientFrame::Ping => self.emit(text(&json!({"type": "pong"}))).await,
            ClientFrame::PresenceSubscribe { user_ids } => {
                self.on_presence_subscribe(user_ids).await
            }
            ClientFrame::Idle => self.set_active(false),
            ClientFrame::Active => self.set_active(true),
            ClientFrame::Typing { room_id } => self.on_typing(room_id).await,
            ClientFrame::Resume { rooms } => {
                self.on_resume(rooms).await;
                self.release().await;
            }
            ClientFrame::Send {
                room_id,
                body,
                client_msg_id,
                reply_to,
                thread_root_id,
                attachment_ids,
            } => {
                let job = SendJob {
                    room_id,
                    body,
                    client_msg_id,
                    reply_to,
                    thread_root_id,
                    attachment_ids,
                };
                self.on_send(job).await
            }
        }
    }

    async fn on_send(&mut self, job: SendJob) {
        if let Err(wait_ms) = service::check_send_rate(&self.ctx, self.user) {
            let mut frame = error_frame(
                Some(&job.client_msg_id),
                code::RATE_LIMITED,
                "too many messages; retry later",
            );
            frame["retry_after_ms"] = Value::from(wait_ms);
            self.emit(text(&frame)).await;
            return;
        }
        let sends = match &self.sends {
            Some((sends, _)) => sends.clone(),
            None => {
                let (tx, rx) = mpsc::channel(SEND_QUEUE);
                let task = tokio::spawn(send_loop(
                    self.ctx.clone(),
                    self.user,
                    self.username.clone(),
                    rx,
                    self.out.clone(),
                    self.send_timeout,
                ));
                self.sends = Some((tx.clone(), task));
                tx
            }
        };
        tokio::select! {
            _ = sends.send(job) => {}
            _ = self.closer.token().cancelled() => {}
        }
    }

    async fn on_typing(&mut self, room_id: Uuid) {
        if !self.cursors.contains_key(&room_id) {
            self.emit(text(&error_frame(
                None,
                code::NOT_MEMBER,
                "you are not a member of this room",
            )))
            .await;
            return;
        }
        let throttle = Duration::from_millis(self.ctx.config.typing_throttle_ms);
        let now = Instant::now();
        if self
            .typing_sent
            .get(&room_id)
            .is_some_and(|t| now.duration_since(*t) < throttle)
        {
            return;
        }
        self.typing_sent.insert(room_id, now);
        // Not in a DM whose members block each other: checked on a task (one indexed read,
        // at most once per throttle interval), so the connection loop never waits on the
        // database for an ephemeral notice; when the check fails the notice is dropped.
        let (ctx, user) = (self.ctx.clone(), self.user);
        tokio::spawn(async move {
            let blocked = store::dm_blocked(ctx.db.pool(), room_id).await;
            if let Ok(false) = blocked {
                ctx.fanout.typing(room_id, user);
            }
        });
    }

    fn set_active(&mut self, active: bool) {
        if self.active != active {
            self.active = active;
            self.ctx.presence.activity(self.user, active);
        }
    }

    /// Replaces the connection's presence subscriptions, then sends the current presence
    /// of each user not subscribed before (one frame each); changes follow through the
    /// inbox. Subscribed before the lookup, so a change in between is not missed (at
    /// worst it arrives twice). The blocks are read once here, never per change.
    async fn on_presence_subscribe(&mut self, user_ids: Vec<Uuid>) {
        let ids = match super::presence::parse_ids(user_ids) {
            Ok(ids) => ids,
            Err(e) => {
                self.emit(text(&error_frame(None, e.code, &e.detail))).await;
                return;
            }
        };
        let hidden = match crate::presence::blockers_of(&self.ctx.db, self.user, &ids).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "presence subscribe cannot read the blocks");
                let code = if kit::db::is_unavailable(&e) {
                    code::DATABASE_UNAVAILABLE
                } else {
                    code::INTERNAL
                };
                self.emit(text(&error_frame(
                    None,
                    code,
                    "presence is unavailable; retry later",
                )))
                .await;
                return;
            }
        };
        let new = self.ctx.presence.subscribe(
            self.hub_id,
            self.presence_inbox.clone(),
            &ids,
            hidden.clone(),
        );
        let found = self.ctx.presence.lookup(&new).await;
        self.ctx.presence.seed(&new, &found);
        for (seen, id) in found.into_iter().zip(&new) {
            let seen = if hidden.contains(id) {
                crate::presence::Seen::UNKNOWN
            } else {
                seen
            };
            let mut frame = seen.to_json(*id);
            frame["type"] = "presence".into();
            self.emit(text(&frame)).await;
        }
    }

    async fn on_resume(&mut self, rooms: BTreeMap<Uuid, i64>) {
        for (room, after) in rooms {
            if !self.cursors.contains_key(&room) {
                let mut frame =
                    error_frame(None, code::NOT_MEMBER, "you are not a member of this room");
                frame["room_id"] = Value::String(room.to_string());
                self.emit(text(&frame)).await;
                continue;
            }
            self.cursors.insert(room, after.max(0));
            self.catch_up(room, None).await;
        }
    }

    /// Delivers the room's stored events after the cursor (and before `before`).
    async fn catch_up(&mut self, room: Uuid, before: Option<i64>) {
        loop {
            let Some(&after) = self.cursors.get(&room) else {
                return;
            };
            let page = store::events(self.ctx.db.pool(), room, after, before, CATCH_UP_PAGE).await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, %room, "WebSocket catch-up failed");
                    close_for(&self.closer, &e);
                    return;
                }
            };
            let n = page.len() as i64;
            for event in page {
                let seq = event.seq;
                self.emit(Message::Text(Utf8Bytes::from(event.to_frame())))
                    .await;
                self.cursors.insert(room, seq);
            }
            if n < CATCH_UP_PAGE || self.closer.token().is_cancelled() {
                return;
            }
        }
    }

    async fn on_inbox(&mut self, item: Inbox) {
        if let Some(held) = &mut self.hold
            && !matches!(item, Inbox::Typing(_))
        {
            held.push(item);
            // Bounded like the inbox: a client that lets this much pile up before its
            // first frame gets what is held now.
            if held.len() >= self.ctx.config.ws_inbox_queue {
                self.release().await;
            }
            return;
        }
        self.handle_inbox(item).await;
    }

    async fn handle_inbox(&mut self, item: Inbox) {
        match item {
            Inbox::Event(d) => {
                let room = d.event.room_id;
                let seq = d.event.seq;
                let Some(&cursor) = self.cursors.get(&room) else {
                    return;
                };
                if seq <= cursor {
                    return;
                }
                if seq > cursor + 1 {
                    self.catch_up(room, Some(seq)).await;
                }
                if self.cursors.get(&room).is_some_and(|c| *c < seq) {
                    self.emit(Message::Text(d.frame.clone())).await;
                    self.cursors.insert(room, seq);
                }
            }
            Inbox::Subscribed { room, after } => {
                self.cursors.insert(room, after);
            }
            Inbox::Unsubscribed { room } => {
                self.cursors.remove(&room);
                self.typing_sent.remove(&room);
            }
            Inbox::Check { room, last_seq } => {
                if self.cursors.get(&room).is_some_and(|c| *c < last_seq) {
                    self.catch_up(room, Some(last_seq + 1)).await;
                }
            }
            Inbox::Typing(frame) => {
                // Ephemeral: dropped rather than waited for when the client is behind.
                let _ = self.out.try_send(Message::Text(frame));
            }
        }
    }
}
