// Unit tests of the store's event sequencing: dedupe by (room, seq), events held back
// behind a gap, gap filling over HTTP (`GET /chat/rooms/{id}/events?after=`), catching up
// when the room list is ahead, and room-list snapshots that must not roll applied events
// back. The store runs under node with a fake chat service in place of HTTP
// (`node --test web/test/`; no npm packages).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Store } from '../js/store.js';

const ME = 'me';
const BOB = 'bob';
const ROOM = 'r1';

/**
 * The chat service as the store sees it: one event log per room and the two routes the
 * sequencing uses. `pageSize` caps an events page (the store asks for 100); `failNext`
 * makes that many event fetches fail as a 503 would; `hold()` keeps the next event fetches
 * waiting until the returned release function is called (the page is read from the log
 * when released, as a server would answer then).
 */
class FakeChat {
  constructor() {
    this.logs = new Map();
    this.eventCalls = [];
    this.pageSize = 100;
    this.failNext = 0;
    this.gate = null;
    this.listAt = null; // seq of the GET /chat/rooms snapshot; null = the log's end
    this.unreadInList = null; // unread_count in that snapshot; null = count of others' messages
  }

  log(roomId) {
    if (!this.logs.has(roomId)) this.logs.set(roomId, []);
    return this.logs.get(roomId);
  }

  /** Append the room's next event: a message from `sender`, or a member event. */
  append(roomId, { kind = 'message.created', sender = BOB, userId } = {}) {
    const log = this.log(roomId);
    const seq = log.length + 1;
    const event = { room_id: roomId, seq, kind, created_at: new Date(seq * 1000).toISOString() };
    if (kind.startsWith('message.')) event.message = message(roomId, seq, sender);
    else event.user_id = userId;
    log.push(event);
    return event;
  }

  /** Append n messages and return their events. */
  appendMany(roomId, n, opts) {
    return Array.from({ length: n }, () => this.append(roomId, opts));
  }

  frame(roomId, seq) {
    const event = this.log(roomId)[seq - 1];
    assert.ok(event, `no event ${seq} in ${roomId}`);
    return { type: 'event', room_id: roomId, seq, event };
  }

  hold() {
    let release;
    const gate = new Promise((resolve) => { release = resolve; });
    this.gate = gate;
    return () => { if (this.gate === gate) this.gate = null; release(); };
  }

  roomSnapshot(roomId) {
    const log = this.log(roomId);
    const at = this.listAt ?? log.length;
    const upTo = log.slice(0, at);
    const messages = upTo.filter((e) => e.kind === 'message.created');
    const joins = upTo.filter((e) => e.kind === 'member.joined').length;
    const leaves = upTo.filter((e) => e.kind === 'member.left' || e.kind === 'member.removed').length;
    return {
      id: roomId, kind: 'channel', name: 'General', topic: null, visibility: 'private',
      owner_id: ME, created_at: new Date(0).toISOString(), member_count: 2 + joins - leaves, last_seq: at,
      unread_count: this.unreadInList ?? messages.filter((e) => e.message.sender_id !== ME).length,
      last_message: messages.at(-1)?.message ?? null,
    };
  }

  api = async (path, { query = {} } = {}) => {
    const events = path.match(/^\/chat\/rooms\/([^/]+)\/events$/);
    if (events) {
      this.eventCalls.push({ room: events[1], after: query.after, limit: query.limit });
      if (this.gate) await this.gate;
      if (this.failNext > 0) {
        this.failNext -= 1;
        throw Object.assign(new Error('HTTP 503'), { status: 503, code: 'database_unavailable' });
      }
      const newer = this.log(events[1]).filter((e) => e.seq > query.after);
      const size = Math.min(query.limit, this.pageSize);
      return { items: newer.slice(0, size), has_more: newer.length > size };
    }
    if (path === '/chat/rooms') {
      return { items: [...this.logs.keys()].map((id) => this.roomSnapshot(id)), next_cursor: null };
    }
    throw new Error(`unexpected request ${path}`);
  };
}

function message(roomId, seq, sender) {
  return {
    id: `m${seq}`, room_id: roomId, seq, sender_id: sender, body: `message ${seq}`,
    client_msg_id: null, reply_to: null, created_at: new Date(seq * 1000).toISOString(),
    edited_at: null, deleted: false,
  };
}

/**
 * A store over a fake chat service with one room I am in, known up to seq `at` (as the
 * room list said), and the seqs of the events it applies, in order.
 */
function setup({ at = 0, visible = true } = {}) {
  const chat = new FakeChat();
  chat.log(ROOM);
  const quiet = () => {};
  const store = new Store({
    api: chat.api,
    auth: { user: { id: ME, username: 'me' } },
    announce: quiet,
    toast: quiet,
    pageVisible: () => visible,
    Realtime: null, // start() is not called: frames are fed to handleFrame directly
  });
  const applied = [];
  store.addEventListener('room-event', (e) => applied.push(`${e.detail.room_id}:${e.detail.event.seq}`));
  const room = store.upsertRoom({ ...chat.roomSnapshot(ROOM), last_seq: at }, { fromList: true });
  return { chat, store, room, applied };
}

const seqs = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => `${ROOM}:${from + i}`);

/** Let pending promise callbacks (fake HTTP answers) run. */
async function settle() {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

test('events are applied once each, in seq order; redelivered seqs are dropped', async () => {
  const { chat, store, room, applied } = setup();
  chat.appendMany(ROOM, 3);
  for (const seq of [1, 2, 2, 1, 3, 3]) store.handleFrame(chat.frame(ROOM, seq));
  await settle();
  assert.deepEqual(applied, seqs(1, 3));
  assert.equal(room.lastSeq, 3);
  assert.equal(room.unread_count, 3, 'a redelivered message is not counted twice');
  assert.equal(room.last_message.id, 'm3');
  assert.deepEqual(chat.eventCalls, [], 'no gap, no HTTP');
});

test('an event after a gap waits until the missed ones are fetched, and is applied once', async () => {
  const { chat, store, room, applied } = setup();
  chat.appendMany(ROOM, 5);
  store.handleFrame(chat.frame(ROOM, 1));
  store.handleFrame(chat.frame(ROOM, 5));
  assert.deepEqual(applied, seqs(1, 1), 'seq 5 is held back behind the gap');
  await settle();
  assert.deepEqual(chat.eventCalls, [{ room: ROOM, after: 1, limit: 100 }]);
  assert.deepEqual(applied, seqs(1, 5));
  assert.equal(room.lastSeq, 5);
  assert.equal(room.buffer.size, 0);
  assert.equal(room.unread_count, 5);
});

test('one fill at a time: frames arriving meanwhile wait for it, and it goes on until they are applied', async () => {
  const { chat, store, applied } = setup();
  chat.appendMany(ROOM, 3);
  const release = chat.hold();
  store.handleFrame(chat.frame(ROOM, 3)); // 1 and 2 missed: the fill starts (and is held)
  chat.appendMany(ROOM, 3);
  store.handleFrame(chat.frame(ROOM, 4));
  store.handleFrame(chat.frame(ROOM, 6)); // 5 lost on the way
  await settle();
  assert.equal(chat.eventCalls.length, 1, 'no second fill while one runs');
  assert.deepEqual(applied, []);
  // The held page is read now: 1..6. Pretend it was read earlier, when the log ended at 3.
  chat.pageSize = 3;
  release();
  await settle();
  assert.deepEqual(chat.eventCalls.map((c) => c.after), [0, 4]);
  assert.deepEqual(applied, seqs(1, 6));
});

test('a fill follows has_more page by page', async () => {
  const { chat, store, applied } = setup();
  chat.pageSize = 2;
  chat.appendMany(ROOM, 7);
  store.handleFrame(chat.frame(ROOM, 7));
  await settle();
  // Pages 1–2, 3–4, 5–6; then 7, held back, is next.
  assert.deepEqual(chat.eventCalls.map((c) => c.after), [0, 2, 4]);
  assert.deepEqual(applied, seqs(1, 7));
});

test('an event replayed on resume while a fill brings it too is applied once', async () => {
  const { chat, store, applied } = setup();
  chat.appendMany(ROOM, 4);
  const release = chat.hold();
  store.handleFrame(chat.frame(ROOM, 4));
  // The socket reconnects and the server replays 1..4 while the page is on its way.
  for (const seq of [1, 2, 3, 4]) store.handleFrame(chat.frame(ROOM, seq));
  release();
  await settle();
  assert.deepEqual(applied, seqs(1, 4));
});

test('a fill that fails is retried without waiting for another event', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { chat, store, room, applied } = setup();
  chat.appendMany(ROOM, 3);
  chat.failNext = 2;
  store.handleFrame(chat.frame(ROOM, 3)); // a quiet room: nothing else will arrive
  await settle();
  assert.equal(chat.eventCalls.length, 1);
  assert.deepEqual(applied, []);
  for (let i = 0; i < 10 && room.lastSeq < 3; i++) {
    t.mock.timers.tick(1000);
    await settle();
  }
  assert.equal(chat.eventCalls.length, 3, 'two failures, then the page');
  assert.deepEqual(applied, seqs(1, 3));
});

test('a room list ahead of the applied events catches up over HTTP, counters moved by the events only', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { chat, store, room, applied } = setup({ visible: false });
  chat.appendMany(ROOM, 2);
  store.handleFrame(chat.frame(ROOM, 1));
  store.handleFrame(chat.frame(ROOM, 2));
  chat.append(ROOM, { kind: 'member.joined', userId: 'carol' });
  chat.appendMany(ROOM, 2); // 3..5 never came over the socket
  await store.loadRooms();
  assert.equal(room.lastSeq, 2, 'the applied mark only moves as events are applied');
  assert.equal(room.unread_count, 2);
  assert.equal(room.last_message.id, 'm2');
  assert.equal(room.member_count, 2);
  t.mock.timers.tick(1500);
  await settle();
  assert.deepEqual(applied, seqs(1, 5));
  assert.equal(room.unread_count, 4);
  assert.equal(room.last_message.id, 'm5');
  assert.equal(room.member_count, 3, 'the join is counted once');
});

test('a room list older than the applied events does not roll them back', async () => {
  const { chat, store, room } = setup({ visible: false });
  chat.appendMany(ROOM, 3);
  // The list left the server at seq 2; event 3 came over the socket before it arrived.
  chat.listAt = 2;
  const list = store.loadRooms();
  store.handleFrame(chat.frame(ROOM, 1));
  store.handleFrame(chat.frame(ROOM, 2));
  store.handleFrame(chat.frame(ROOM, 3));
  await list;
  assert.equal(room.lastSeq, 3);
  assert.equal(room.last_seq, 3);
  assert.equal(room.unread_count, 3);
  assert.equal(room.last_message.id, 'm3');
  // A list at the applied mark is the server's word: read on another device.
  chat.listAt = 3;
  chat.unreadInList = 0;
  await store.loadRooms();
  assert.equal(room.unread_count, 0);
  assert.equal(room.last_message.id, 'm3');
});

test('nothing is applied to a room after I was removed from it', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] }); // the room list reload it schedules
  const { chat, store, applied } = setup();
  const removed = [];
  store.addEventListener('removed', (e) => removed.push(e.detail.room_id));
  chat.append(ROOM);
  chat.append(ROOM, { kind: 'member.removed', userId: ME });
  chat.append(ROOM);
  const release = chat.hold();
  store.handleFrame(chat.frame(ROOM, 1));
  store.handleFrame(chat.frame(ROOM, 3)); // held back: a fill starts
  store.handleFrame(chat.frame(ROOM, 2)); // removed: the room is forgotten
  release();
  await settle();
  assert.deepEqual(removed, [ROOM]);
  assert.equal(store.rooms.has(ROOM), false);
  assert.deepEqual(applied, seqs(1, 1), 'the removal forgets the room; seq 3 came after it');
});

test('messages from others count as unread unless I watch the room; mine clear their pending copy', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] }); // the HTTP fallback of the pending send
  const { chat, store, room } = setup({ visible: true });
  const pending = store.sendMessage(ROOM, 'hi');
  assert.equal(store.pendingFor(ROOM).size, 1);
  chat.append(ROOM); // from Bob, room not open
  const mine = chat.append(ROOM, { sender: ME });
  mine.message.client_msg_id = pending.client_msg_id;
  store.handleFrame(chat.frame(ROOM, 1));
  store.handleFrame(chat.frame(ROOM, 2));
  assert.equal(room.unread_count, 1);
  assert.equal(store.pendingFor(ROOM).size, 0);
  store.activeRoomId = ROOM;
  chat.append(ROOM);
  store.handleFrame(chat.frame(ROOM, 3));
  assert.equal(room.unread_count, 1, 'seen as it arrived');
});
