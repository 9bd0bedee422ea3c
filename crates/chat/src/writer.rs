//! Group commit for message sends.
//!
//! Checked sends queue (bounded: a full queue makes senders wait) for a writer task that
//! takes everything queued — up to [`MAX_BATCH`] — and stores it in ONE transaction:
//! membership re-checked and `client_msg_id`s looked up with one query each, each room's
//! seqs taken with one `UPDATE … RETURNING` (the row locks keep seqs gap-free and in
//! commit order, as for single writes), then multi-row inserts of the messages, their
//! events and their outbox rows (one statement on PostgreSQL), and one commit. Only then are the events handed to the
//! fan-out and the senders answered.
//!
//! - A `client_msg_id` sent twice in one batch is stored once; both senders get it.
//! - A `client_msg_id` stored meanwhile by another node does not insert
//!   (`ON CONFLICT DO NOTHING`); the batch is rolled back (its seqs would have a hole)
//!   and retried without it, and that sender gets the stored message.
//! - Any other failure rolls the batch back and stores its sends one by one, so each
//!   sender gets its own result; nothing is acknowledged that was not committed.
//!
//! Rooms are spread over several writers on PostgreSQL (a room always to the same one,
//! so its events are published in seq order); SQLite has a single writer anyway.

use std::collections::HashMap;
use std::hash::BuildHasher;

use kit::ApiError;
use kit::db::{Backend, Db};
use kit::error::code;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::access;
use crate::domain::{Message, RoomEvent, kinds};
use crate::events;
use crate::fanout::Fanout;
use crate::store;

/// Sends stored by one transaction at most.
pub const MAX_BATCH: usize = 512;
/// Sends waiting per writer before senders wait.
const QUEUE: usize = 4096;
/// Committed batches waiting to be published per writer.
const PUBLISH_QUEUE: usize = 64;
/// Attempts of a batch that loses `client_msg_id` races before it is written one by one.
const ATTEMPTS: usize = 3;

pub type SendResult = Result<(Message, bool), ApiError>;

/// A send whose body and ids passed the caller-side checks (reply target, thread root),
/// with its mentions resolved.
#[derive(Debug, Default)]
pub struct NewSend {
    pub room_id: Uuid,
    pub body: String,
    pub client_msg_id: Option<String>,
    pub reply_to: Option<Uuid>,
    pub thread_root_id: Option<Uuid>,
    pub mentions: Vec<Uuid>,
    /// Checked with the files service (the sender's uploads), in the order sent.
    pub attachments: Vec<crate::domain::Attachment>,
    /// For the bus event only (a notifications consumer needs them without calling back).
    pub notify: NotifyInfo,
}

/// What the `chat.message.created` event says beyond the message itself.
#[derive(Debug, Default, Clone)]
pub struct NotifyInfo {
    pub sender_username: String,
    /// `@room` counted (sent by the owner or an admin).
    pub mentioned_room: bool,
    pub reply_to_sender_id: Option<Uuid>,
    pub thread_root_sender_id: Option<Uuid>,
}

struct Job {
    sender: Uuid,
    send: NewSend,
    reply: oneshot::Sender<SendResult>,
    /// When the send was queued (for the queue-wait histogram).
    queued: std::time::Instant,
}

#[derive(Clone)]
pub struct Writer {
    shards: std::sync::Arc<[mpsc::Sender<Job>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Writer {
    /// Starts the writers (they stop when every `Writer` clone is dropped, after
    /// storing what is queued).
    pub fn spawn(db: Db, fanout: Fanout, outbox: bus::outbox::Outbox, writers: usize) -> Self {
        let shards = match (writers, db.backend()) {
            (0, Backend::Sqlite) => 1,
            (0, Backend::Postgres) => 4,
            (n, _) => n,
        };
        let mut senders = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel(QUEUE);
            let (pub_tx, pub_rx) = mpsc::channel(PUBLISH_QUEUE);
            tokio::spawn(write_loop(db.clone(), rx, pub_tx));
            tokio::spawn(publish_loop(fanout.clone(), outbox.clone(), pub_rx));
            senders.push(tx);
        }
        Self {
            shards: senders.into(),
            hasher: Default::default(),
        }
    }

    /// Queues a send (waiting only for queue space) and returns its pending result.
    /// Sends queued one after the other to the same room are stored in that order, so a
    /// caller may queue several before waiting for the first.
    pub async fn enqueue(&self, sender: Uuid, send: NewSend) -> Result<Pending, ApiError> {
        let shard = (self.hasher.hash_one(send.room_id) % self.shards.len() as u64) as usize;
        let (reply, rx) = oneshot::channel();
        let job = Job {
            sender,
            send,
            reply,
            queued: std::time::Instant::now(),
        };
        self.shards[shard]
            .send(job)
            .await
            .map_err(|_| unavailable())?;
        Ok(Pending(rx))
    }
}

/// A queued send: its result arrives after its batch committed (or failed).
pub struct Pending(oneshot::Receiver<SendResult>);

impl Pending {
    pub async fn stored(self) -> SendResult {
        self.0.await.map_err(|_| unavailable())?
    }
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        code::SHUTTING_DOWN,
        "the message was not stored: the service is shutting down",
    )
}

/// A batch that committed: events to publish (seq order per room), then the answers.
struct Committed {
    events: Vec<RoomEvent>,
    replies: Vec<(oneshot::Sender<SendResult>, SendResult)>,
    stored: u64,
}

async fn write_loop(db: Db, mut rx: mpsc::Receiver<Job>, publish: mpsc::Sender<Committed>) {
    // Handles looked up once: the queue-wait histogram is recorded for every send.
    let batch_size = metrics::histogram!("chat_send_batch_size");
    let queue_wait = metrics::histogram!("chat_send_queue_seconds");
    let batch_time = metrics::histogram!("chat_send_batch_seconds");
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_BATCH));
        batch_size.record(batch.len() as f64);
        let started = std::time::Instant::now();
        for job in &batch {
            queue_wait.record(started.duration_since(job.queued).as_secs_f64());
        }
        let committed = write_batch(&db, batch).await;
        batch_time.record(started.elapsed().as_secs_f64());
        if publish.send(committed).await.is_err() {
            return;
        }
    }
}

async fn publish_loop(
    fanout: Fanout,
    outbox: bus::outbox::Outbox,
    mut rx: mpsc::Receiver<Committed>,
) {
    while let Some(c) = rx.recv().await {
        if c.stored > 0 {
            metrics::counter!("chat_messages_stored_total").increment(c.stored);
            outbox.wake();
        }
        fanout.publish(c.events).await;
        for (tx, result) in c.replies {
            let _ = tx.send(result);
        }
    }
}

/// What happened to one (leading) send of a batch.
enum Outcome {
    Stored(Message, RoomEvent),
    Existing(Message),
    Failed(ApiError),
}

/// Stores a batch; falls back to one transaction per send when the batch fails.
async fn write_batch(db: &Db, jobs: Vec<Job>) -> Committed {
    // Duplicates inside the batch follow the first send with the same key.
    let mut leaders: Vec<Job> = Vec::with_capacity(jobs.len());
    let mut followers: Vec<(usize, Job)> = Vec::new();
    let mut first: HashMap<(Uuid, String), usize> = HashMap::new();
    for job in jobs {
        if let Some(cmid) = &job.send.client_msg_id {
            match first.get(&(job.sender, cmid.clone())) {
                Some(&i) => {
                    followers.push((i, job));
                    continue;
                }
                None => {
                    first.insert((job.sender, cmid.clone()), leaders.len());
                }
            }
        }
        leaders.push(job);
    }

    let mut outcomes: Vec<Option<Outcome>> = (0..leaders.len()).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..leaders.len()).collect();
    let mut attempts = 0;
    let mut events = Vec::new();
    // Set once the database is found unreachable: the remaining sends fail with it.
    let mut down: Option<ApiError> = None;
    while !pending.is_empty() {
        attempts += 1;
        if attempts > ATTEMPTS {
            break;
        }
        match try_batch(db, &leaders, &pending).await {
            Ok(done) => {
                for (i, outcome) in done {
                    if let Outcome::Stored(_, e) = &outcome {
                        events.push(e.clone());
                    }
                    outcomes[i] = Some(outcome);
                }
                pending.clear();
            }
            Err(BatchError::Raced(raced)) => {
                // Another node stored these keys meanwhile: answer them with what is
                // stored, and write the rest again.
                metrics::counter!("chat_send_batch_retries_total").increment(1);
                let found = lookup_existing(db, &leaders, &raced).await;
                for i in raced {
                    outcomes[i] = Some(match &found {
                        Ok(found) => match found.get(&i) {
                            Some(m) => Outcome::Existing(m.clone()),
                            None => Outcome::Failed(ApiError::internal(
                                "a client_msg_id conflict without a stored message",
                            )),
                        },
                        Err(e) => Outcome::Failed(e.clone()),
                    });
                }
                pending.retain(|i| outcomes[*i].is_none());
            }
            Err(BatchError::Db(e)) => {
                metrics::counter!("chat_send_batch_failures_total").increment(1);
                if unreachable(&e) {
                    // The database cannot be reached: every send of the batch gets the
                    // same 503 now. One by one, each would wait for a connection again
                    // (300 ms each once the database is known down: 512 sends, 2.5 min).
                    tracing::warn!(error = %e, sends = pending.len(), "a send batch failed: database unavailable");
                    down = Some(ApiError::from(e));
                } else {
                    tracing::warn!(error = %e, sends = pending.len(), "a send batch failed; storing its sends one by one");
                }
                break;
            }
        }
    }
    // Whatever is left is written alone, each with its own result.
    for i in pending {
        if outcomes[i].is_some() {
            continue;
        }
        if let Some(e) = &down {
            outcomes[i] = Some(Outcome::Failed(e.clone()));
            continue;
        }
        let outcome = match try_batch(db, &leaders, &[i]).await {
            Ok(mut done) => done
                .pop()
                .map(|(_, o)| o)
                .unwrap_or_else(|| Outcome::Failed(ApiError::internal("empty send result"))),
            Err(BatchError::Raced(_)) => match lookup_existing(db, &leaders, &[i]).await {
                Ok(mut found) => match found.remove(&i) {
                    Some(m) => Outcome::Existing(m),
                    None => Outcome::Failed(ApiError::internal("client_msg_id conflict")),
                },
                Err(e) => Outcome::Failed(e),
            },
            Err(BatchError::Db(e)) => {
                let failed = unreachable(&e);
                let e = ApiError::from(e);
                if failed {
                    down = Some(e.clone());
                }
                Outcome::Failed(e)
            }
        };
        if let Outcome::Stored(_, e) = &outcome {
            events.push(e.clone());
        }
        outcomes[i] = Some(outcome);
    }

    let mut stored = 0;
    let mut replies = Vec::with_capacity(leaders.len() + followers.len());
    let results: Vec<SendResult> = leaders
        .iter()
        .zip(outcomes)
        .map(|(job, outcome)| match outcome {
            Some(Outcome::Stored(m, _)) => {
                stored += 1;
                Ok((m, true))
            }
            Some(Outcome::Existing(m)) => same_send(m, job.send.room_id),
            Some(Outcome::Failed(e)) => Err(e),
            None => Err(ApiError::internal("send left without a result")),
        })
        .collect();
    for (leader, job) in followers {
        let result = match &results[leader] {
            Ok((m, _)) => same_send(m.clone(), job.send.room_id),
            Err(e) => Err(e.clone()),
        };
        replies.push((job.reply, result));
    }
    for (job, result) in leaders.into_iter().zip(results) {
        replies.push((job.reply, result));
    }
    // Events in seq order per room (a room's seqs were assigned in job order).
    events.sort_by_key(|e| (e.room_id, e.seq));
    Committed {
        events,
        replies,
        stored,
    }
}

pub fn same_send(existing: Message, room_id: Uuid) -> SendResult {
    if existing.room_id != room_id {
        return Err(ApiError::conflict(
            code::CLIENT_MSG_ID_CONFLICT,
            "this client_msg_id was already used for a message in another room",
        ));
    }
    Ok((existing, false))
}

/// Whether `e` means the database cannot be reached or used now (connection errors, pool
/// timeout, SQLite busy past its timeout), so that the batch's other sends would fail the
/// same way. A deadlock or serialization failure (40P01, 40001) is about this batch only:
/// its sends are still retried one by one.
fn unreachable(e: &sqlx::Error) -> bool {
    let transaction_conflict = e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40001" || c == "40P01");
    kit::db::is_unavailable(e) && !transaction_conflict
}

/// The stored messages of raced sends; a database error is the sends' answer (503 when
/// the database cannot be reached, never a 500 that hides it).
async fn lookup_existing(
    db: &Db,
    jobs: &[Job],
    idx: &[usize],
) -> Result<HashMap<usize, Message>, ApiError> {
    let keys: Vec<(Uuid, &str)> = idx
        .iter()
        .filter_map(|&i| Some((jobs[i].sender, jobs[i].send.client_msg_id.as_deref()?)))
        .collect();
    let found = match db.pool().acquire().await {
        Ok(mut conn) => store::messages_by_client_ids(&mut conn, &keys).await,
        Err(e) => Err(e),
    };
    let found = found.map_err(|e| {
        tracing::warn!(error = %e, "cannot look up raced client_msg_ids");
        ApiError::from(e)
    })?;
    let mut out = HashMap::new();
    for &i in idx {
        let job = &jobs[i];
        if let Some(m) = found
            .iter()
            .find(|m| m.sender_id == job.sender && m.client_msg_id == job.send.client_msg_id)
        {
            out.insert(i, m.clone());
        }
    }
    Ok(out)
}

enum BatchError {
    /// These sends' `client_msg_id`s were stored concurrently (the transaction was
    /// rolled back).
    Raced(Vec<usize>),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Db(e)
    }
}

/// One transaction for the sends `idx` of `jobs`; commits unless it returns an error.
async fn try_batch(
    db: &Db,
    jobs: &[Job],
    idx: &[usize],
) -> Result<Vec<(usize, Outcome)>, BatchError> {
    let mut done = Vec::with_capacity(idx.len());
    let mut tx = db.begin().await?;

    // Still members, and for a DM not blocked either way? (Membership is checked by the
    // caller too; a leave may have committed since. Blocks are chat's event-fed copy, read
    // in this transaction: no round trip to the user service per send.)
    let mut pairs: Vec<(Uuid, Uuid)> = idx
        .iter()
        .map(|&i| (jobs[i].send.room_id, jobs[i].sender))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let members = store::memberships(tx.conn(), &pairs).await?;

    // Sent before (a retry of an earlier send)?
    let keys: Vec<(Uuid, &str)> = idx
        .iter()
        .filter_map(|&i| Some((jobs[i].sender, jobs[i].send.client_msg_id.as_deref()?)))
        .collect();
    let existing = if keys.is_empty() {
        Vec::new()
    } else {
        store::messages_by_client_ids(tx.conn(), &keys).await?
    };

    let mut new: Vec<usize> = Vec::with_capacity(idx.len());
    for &i in idx {
        let job = &jobs[i];
        let Some(dm_blocked) = members
            .get(&(job.send.room_id, job.sender))
            .map(|r| r.dm_blocked)
        else {
            // 404 or 403 as the room's visibility says (rare: read one by one).
            let error = match access::member_access(tx.conn(), job.send.room_id, job.sender).await {
                Err(e) => e,
                Ok(_) => access::not_member(),
            };
            done.push((i, Outcome::Failed(error)));
            continue;
        };
        if let Some(m) = existing.iter().find(|m| {
            job.send.client_msg_id.is_some()
                && m.sender_id == job.sender
                && m.client_msg_id == job.send.client_msg_id
        }) {
            // A retry of a send stored before a block still gets its message.
            done.push((i, Outcome::Existing(m.clone())));
        } else if dm_blocked {
            done.push((i, Outcome::Failed(access::blocked())));
        } else {
            new.push(i);
        }
    }
    if new.is_empty() {
        tx.commit().await?;
        return Ok(done);
    }

    // Seqs: per room, as many as it has new messages, in job order.
    let mut counts: HashMap<Uuid, i64> = HashMap::new();
    for &i in &new {
        *counts.entry(jobs[i].send.room_id).or_default() += 1;
    }
    let mut wanted: Vec<(Uuid, i64)> = counts.iter().map(|(r, n)| (*r, *n)).collect();
    wanted.sort_unstable();
    let taken = store::take_seqs(tx.conn(), &wanted).await?;
    if taken.len() != wanted.len() {
        return Err(BatchError::Db(sqlx::Error::RowNotFound));
    }
    let mut next: HashMap<Uuid, i64> = taken
        .into_iter()
        .map(|(room, last)| (room, last - counts.get(&room).copied().unwrap_or(0) + 1))
        .collect();

    let now = kit::time::now_ms();
    let created_at = kit::time::rfc3339(now);
    let mut messages = Vec::with_capacity(new.len());
    for &i in &new {
        let job = &jobs[i];
        let Some(seq) = next.get_mut(&job.send.room_id) else {
            return Err(BatchError::Db(sqlx::Error::RowNotFound));
        };
        messages.push(Message {
            id: Uuid::now_v7(),
            room_id: job.send.room_id,
            seq: *seq,
            sender_id: job.sender,
            body: job.send.body.clone(),
            client_msg_id: job.send.client_msg_id.clone(),
            reply_to: job.send.reply_to,
            created_at: created_at.clone(),
            edited_at: None,
            deleted: false,
            mentions: job.send.mentions.clone(),
            thread_root_id: job.send.thread_root_id,
            reply_count: 0,
            last_reply_at: None,
            reactions: Vec::new(),
            pinned: false,
            attachments: job.send.attachments.clone(),
        });
        *seq += 1;
    }
    let events: Vec<RoomEvent> = messages
        .iter()
        .map(|m| RoomEvent {
            room_id: m.room_id,
            seq: m.seq,
            kind: kinds::MESSAGE_CREATED.to_owned(),
            created_at: now,
            payload: json!({ "message": m }),
        })
        .collect();
    let envelopes: Vec<bus::Envelope> = new
        .iter()
        .zip(&messages)
        .map(|(&i, m)| {
            let room = members.get(&(m.room_id, m.sender_id));
            events::MessageCreated::envelope(m, room, &jobs[i].send.notify)
        })
        .collect();
    let message_rows: Vec<(&Message, i64)> = messages.iter().map(|m| (m, now)).collect();
    let event_rows: Vec<(&RoomEvent, Option<Uuid>)> = events
        .iter()
        .zip(&messages)
        .map(|(e, m)| (e, Some(m.id)))
        .collect();
    let inserted = store::insert_sends(tx.conn(), &message_rows, &event_rows, &envelopes).await?;
    // Thread roots count their new replies (same transaction: a root's count never
    // disagrees with its listed replies).
    let mut roots: HashMap<Uuid, i64> = HashMap::new();
    for m in &messages {
        if let Some(root) = m.thread_root_id {
            *roots.entry(root).or_default() += 1;
        }
    }
    if !roots.is_empty() {
        let mut roots: Vec<(Uuid, i64)> = roots.into_iter().collect();
        roots.sort_unstable();
        store::bump_threads(tx.conn(), &roots, now).await?;
    }
    if inserted.len() != messages.len() {
        // Some client_msg_id was stored concurrently: their seqs would stay unused (and
        // their events were written): roll everything back.
        let raced = new
            .iter()
            .zip(&messages)
            .filter(|(_, m)| !inserted.contains(&m.id))
            .map(|(i, _)| *i)
            .collect();
        drop(tx);
        return Err(BatchError::Raced(raced));
    }
    store::search::index(tx.conn(), &message_rows).await?;
    tx.commit().await?;

    for ((i, m), e) in new.into_iter().zip(messages).zip(events) {
        done.push((i, Outcome::Stored(m, e)));
    }
    Ok(done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The batch logic on both backends, with batches built by hand (through HTTP the
    //! batching depends on timing).

    use super::*;
    use crate::domain::Role;

    struct Fixture {
        db: Db,
        _dir: tempfile::TempDir,
        _test_db: kit::testing::TestDb,
    }

    async fn fixture(backend: Backend, test: &str) -> Option<Fixture> {
        let test_db = kit::testing::test_db(backend, test).await?;
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(test_db.url.as_deref(), dir.path(), "chat")
            .await
            .unwrap();
        db.migrate(store::MIGRATIONS).await.unwrap();
        Some(Fixture {
            db,
            _dir: dir,
            _test_db: test_db,
        })
    }

    async fn room(db: &Db, members: &[Uuid]) -> Uuid {
        let id = Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        store::insert_room(
            tx.conn(),
            &store::NewRoom {
                id,
                kind: "channel",
                name: "r",
                topic: "",
                visibility: "public",
                owner_id: members[0],
                dm_key: None,
                created_at: 0,
            },
        )
        .await
        .unwrap();
        for m in members {
            store::add_member(tx.conn(), id, *m, Role::Member, 0)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        id
    }

    fn job(
        sender: Uuid,
        room_id: Uuid,
        cmid: Option<&str>,
    ) -> (Job, oneshot::Receiver<SendResult>) {
        let (reply, rx) = oneshot::channel();
        (
            Job {
                sender,
                send: NewSend {
                    room_id,
                    body: format!("from {sender}"),
                    client_msg_id: cmid.map(str::to_owned),
                    ..Default::default()
                },
                reply,
                queued: std::time::Instant::now(),
            },
            rx,
        )
    }

    async fn answers(c: Committed, mut rxs: Vec<oneshot::Receiver<SendResult>>) -> Vec<SendResult> {
        for (tx, r) in c.replies {
            let _ = tx.send(r);
        }
        let mut out = Vec::new();
        for rx in rxs.iter_mut() {
            out.push(rx.await.unwrap());
        }
        out
    }

    kit::backend_tests!(
        one_batch_many_senders,
        duplicates_in_and_across_batches,
        insert_skips_a_stored_client_msg_id
    );

    /// The batch insert (one JSON-fed statement on PostgreSQL) skips a message whose
    /// `client_msg_id` is already stored and reports only the others: the writer then
    /// rolls back (`BatchError::Raced`).
    async fn insert_skips_a_stored_client_msg_id(backend: Backend) {
        let Some(f) = fixture(backend, "writer_insert_skips").await else {
            return;
        };
        let alice = Uuid::now_v7();
        let r = room(&f.db, &[alice]).await;
        let (j, rx) = job(alice, r, Some("taken"));
        let committed = write_batch(&f.db, vec![j]).await;
        assert_eq!(
            answers(committed, vec![rx]).await[0]
                .as_ref()
                .unwrap()
                .0
                .seq,
            1
        );

        let message = |seq: i64, cmid: &str| Message {
            id: Uuid::now_v7(),
            room_id: r,
            seq,
            sender_id: alice,
            body: format!("body {seq}"),
            client_msg_id: Some(cmid.to_owned()),
            reply_to: None,
            created_at: kit::time::rfc3339(0),
            edited_at: None,
            deleted: false,
            mentions: vec![],
            thread_root_id: None,
            reply_count: 0,
            last_reply_at: None,
            reactions: Vec::new(),
            pinned: false,
            attachments: Vec::new(),
        };
        let (raced, fresh) = (message(2, "taken"), message(3, "fresh"));
        let event = |m: &Message| RoomEvent {
            room_id: r,
            seq: m.seq,
            kind: kinds::MESSAGE_CREATED.to_owned(),
            created_at: 0,
            payload: json!({ "message": m }),
        };
        let events = [event(&raced), event(&fresh)];
        let envelopes: Vec<bus::Envelope> = (0..2)
            .map(|i| bus::Envelope::new(events::SOURCE, events::MESSAGE_CREATED, json!({ "i": i })))
            .collect();
        let mut tx = f.db.begin().await.unwrap();
        let inserted = store::insert_sends(
            tx.conn(),
            &[(&raced, 0), (&fresh, 0)],
            &[(&events[0], Some(raced.id)), (&events[1], Some(fresh.id))],
            &envelopes,
        )
        .await
        .unwrap();
        assert_eq!(inserted, std::collections::HashSet::from([fresh.id]));
        let stored: Vec<String> = sqlx::query_scalar("SELECT body FROM messages ORDER BY seq")
            .fetch_all(tx.conn())
            .await
            .unwrap();
        assert_eq!(
            stored.len(),
            2,
            "the stored message is untouched, the fresh one added"
        );
        drop(tx);
    }

    async fn one_batch_many_senders(backend: Backend) {
        let Some(f) = fixture(backend, "writer_one_batch_many_senders").await else {
            return;
        };
        let users: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        let busy = room(&f.db, &users).await;
        let quiet = room(&f.db, &users[..2]).await;
        let outsider = Uuid::now_v7();
        let mut jobs = Vec::new();
        let mut rxs = Vec::new();
        for (i, u) in users.iter().enumerate() {
            let (j, rx) = job(*u, busy, Some(&format!("c{i}")));
            jobs.push(j);
            rxs.push(rx);
            if i < 2 {
                let (j, rx) = job(*u, quiet, None);
                jobs.push(j);
                rxs.push(rx);
            }
        }
        let (j, rx) = job(outsider, busy, Some("x"));
        jobs.push(j);
        rxs.push(rx);

        let committed = write_batch(&f.db, jobs).await;
        assert_eq!(committed.stored, 52);
        let events: Vec<(Uuid, i64)> = committed
            .events
            .iter()
            .map(|e| (e.room_id, e.seq))
            .collect();
        let results = answers(committed, rxs).await;
        let (outsider_result, results) = results.split_last().unwrap();
        assert_eq!(
            outsider_result.as_ref().err().map(|e| e.code),
            Some("not_member")
        );
        let mut busy_seqs = Vec::new();
        let mut quiet_seqs = Vec::new();
        for r in results {
            let (m, created) = r.as_ref().unwrap();
            assert!(created);
            if m.room_id == busy {
                busy_seqs.push(m.seq);
            } else {
                quiet_seqs.push(m.seq);
            }
        }
        assert_eq!(
            busy_seqs,
            (1..=50).collect::<Vec<_>>(),
            "in queue order, no hole"
        );
        assert_eq!(quiet_seqs, vec![1, 2]);
        // Published in seq order per room.
        let busy_events: Vec<i64> = events.iter().filter(|e| e.0 == busy).map(|e| e.1).collect();
        assert_eq!(busy_events, (1..=50).collect::<Vec<_>>());

        let mut conn = f.db.pool().acquire().await.unwrap();
        let stored = store::events(&mut *conn, busy, 0, None, 1000)
            .await
            .unwrap();
        assert_eq!(
            stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=50).collect::<Vec<_>>()
        );
        let (history, _) = store::history(&mut *conn, busy, None, None, 1000)
            .await
            .unwrap();
        assert_eq!(history.len(), 50);
        let rooms = store::last_seqs(&mut conn, &[busy, quiet]).await.unwrap();
        assert!(rooms.contains(&(busy, 50)) && rooms.contains(&(quiet, 2)));
        let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(outbox, 52);
    }

    async fn duplicates_in_and_across_batches(backend: Backend) {
        let Some(f) = fixture(backend, "writer_duplicates").await else {
            return;
        };
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let r = room(&f.db, &[alice, bob]).await;
        let other = room(&f.db, &[alice]).await;

        // The same client_msg_id three times in one batch (and once from bob): stored once.
        let mut jobs = Vec::new();
        let mut rxs = Vec::new();
        for (u, room_id, cmid) in [
            (alice, r, "a"),
            (alice, r, "a"),
            (bob, r, "a"),
            (alice, r, "a"),
            (alice, other, "a"),
        ] {
            let (j, rx) = job(u, room_id, Some(cmid));
            jobs.push(j);
            rxs.push(rx);
        }
        let committed = write_batch(&f.db, jobs).await;
        assert_eq!(committed.stored, 2);
        let results = answers(committed, rxs).await;
        let first = results[0].as_ref().unwrap();
        assert!(first.1);
        for i in [1, 3] {
            let again = results[i].as_ref().unwrap();
            assert_eq!((again.0.id, again.1), (first.0.id, false));
        }
        let bobs = results[2].as_ref().unwrap();
        assert!(bobs.1 && bobs.0.id != first.0.id);
        assert_eq!(
            results[4].as_ref().err().map(|e| e.code),
            Some("client_msg_id_conflict")
        );
        assert_eq!((first.0.seq, bobs.0.seq), (1, 2));

        // A later batch retrying it gets the stored message; the new one takes seq 3.
        let (j1, rx1) = job(alice, r, Some("a"));
        let (j2, rx2) = job(alice, r, Some("b"));
        let committed = write_batch(&f.db, vec![j1, j2]).await;
        assert_eq!(committed.stored, 1);
        let results = answers(committed, vec![rx1, rx2]).await;
        let retried = results[0].as_ref().unwrap();
        assert_eq!((retried.0.id, retried.1), (first.0.id, false));
        assert_eq!(results[1].as_ref().unwrap().0.seq, 3);

        let mut conn = f.db.pool().acquire().await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE room_id = $1")
            .bind(r.to_string())
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(count, 3);
        let seqs: Vec<i64> = store::events(&mut *conn, r, 0, None, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }
}
