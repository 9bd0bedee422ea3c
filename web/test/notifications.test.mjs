// Unit tests of the web client's notifications (v1.1), under node with fakes (no browser):
// the service worker (../sw.js run against a fake `self`: a dispatched `push` event shows
// one notification titled from the kind and the names the page posted, with the preview,
// the id as tag and the room/message as data; a click focuses an open page and posts it
// the room, or opens one at the room's URL), the badge text, mute times, the count kept by
// frames and GETs, marking read, and the push subscription calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';

import {
  Notifications, badgeText, relativeTime, muteUntil, muteState, describeRoomSetting, notificationHref,
  base64UrlToBytes, subscriptionBody, KIND_TEXT, MUTE_FOREVER, PUSH_KEY,
} from '../js/notifications.js';

const SW_SOURCE = fs.readFileSync(fileURLToPath(new URL('../sw.js', import.meta.url)), 'utf8');

/** A minimal ExtendableEvent: `waitUntil` collects the promises the handler must finish. */
class FakeExtendableEvent extends Event {
  constructor(type, init = {}) {
    super(type);
    Object.assign(this, init);
    this.pending = [];
  }
  waitUntil(p) { this.pending.push(p); }
  async done() { await Promise.all(this.pending); }
}

/** Cache Storage in memory (one cache is all the worker uses). */
function fakeCaches() {
  const caches = new Map();
  return {
    async open(name) {
      if (!caches.has(name)) caches.set(name, new Map());
      const c = caches.get(name);
      return {
        async match(url) { return c.has(url) ? new Response(c.get(url)) : undefined; },
        async put(url, res) { c.set(url, await res.text()); },
        async delete(url) { return c.delete(url); },
      };
    },
  };
}

/** Load sw.js against a fake `self`; `windows` are the open pages `clients.matchAll` finds. */
function loadWorker({ windows = [] } = {}) {
  const self = new EventTarget();
  const shown = [];
  const opened = [];
  self.registration = { showNotification: async (title, options) => { shown.push({ title, options }); } };
  self.clients = {
    matchAll: async (opts) => { assert.equal(opts.type, 'window'); return windows; },
    openWindow: async (url) => { opened.push(url); return {}; },
    claim: async () => {},
  };
  self.caches = fakeCaches();
  self.skipWaiting = () => {};
  vm.runInNewContext(SW_SOURCE, { self, Response, console });
  const dispatch = async (type, init) => {
    const e = new FakeExtendableEvent(type, init);
    self.dispatchEvent(e);
    await e.done();
    return e;
  };
  return { self, shown, opened, dispatch };
}

const NOTE = {
  id: '5b8a2c1e-0000-4000-8000-000000000001',
  kind: 'mention',
  room_id: 'room-1',
  message_id: 'msg-1',
  seq: 42,
  actor_id: 'ann',
  preview: 'Hi @ben have a look',
  created_at: '2026-12-03T15:00:00Z',
  read_at: null,
};
/** Objects made inside the worker's context have its prototypes: compare their JSON. */
const plain = (v) => JSON.parse(JSON.stringify(v));
const pushData = (value) => ({ json: () => (typeof value === 'string' ? JSON.parse(value) : value) });

test('sw: a push event shows the notification: title from kind and names, preview, tag, data', async () => {
  const w = loadWorker();
  await w.dispatch('message', { data: { type: 'names', names: { users: { ann: 'Ann' }, rooms: { 'room-1': 'Design' } } } });
  await w.dispatch('push', { data: pushData(JSON.stringify(NOTE)) });
  assert.equal(w.shown.length, 1);
  const { title, options } = w.shown[0];
  assert.equal(title, 'Ann mentioned you in Design');
  assert.equal(options.body, 'Hi @ben have a look');
  assert.equal(options.tag, NOTE.id);
  assert.deepEqual(plain(options.data), { id: NOTE.id, room_id: 'room-1', message_id: 'msg-1', seq: 42, href: notificationHref(NOTE) });
  assert.equal(options.timestamp, Date.parse(NOTE.created_at));
});

test('sw: without names the title is generic; a DM does not name the room; previews off give an empty body', async () => {
  const w = loadWorker();
  await w.dispatch('push', { data: pushData({ ...NOTE, kind: 'reply' }) });
  await w.dispatch('message', { data: { type: 'names', names: { users: { ann: 'Ann' }, rooms: { 'room-1': 'Ann' } } } });
  await w.dispatch('push', { data: pushData({ ...NOTE, id: 'n2', kind: 'dm', preview: '' }) });
  assert.deepEqual(w.shown.map((s) => s.title), ['Someone replied to you', 'Ann sent you a message']);
  // Names posted later are merged into the known ones.
  await w.dispatch('message', { data: { type: 'names', names: { users: { bo: 'Bo' }, rooms: {} } } });
  await w.dispatch('push', { data: pushData({ ...NOTE, id: 'n4', kind: 'reply' }) });
  assert.equal(w.shown[2].title, 'Ann replied to you in Ann');
  assert.equal(w.shown[1].options.body, '');
  // Logging out clears the names (the next person here must not see them).
  await w.dispatch('message', { data: { type: 'names', names: null } });
  await w.dispatch('push', { data: pushData({ ...NOTE, id: 'n3' }) });
  assert.equal(w.shown[3].title, 'Someone mentioned you');
});

test('sw: a push without a readable payload still shows something (userVisibleOnly)', async () => {
  const w = loadWorker();
  await w.dispatch('push', { data: { json: () => { throw new SyntaxError('bad'); } } });
  await w.dispatch('push', {});
  assert.equal(w.shown.length, 2);
  assert.equal(w.shown[0].title, 'IntelliColab');
});

test('sw: a click focuses an open page and posts it the room to open', async () => {
  const posted = [];
  let focused = 0;
  const page = { focused: false, focus: async () => { focused++; }, postMessage: (m) => posted.push(m) };
  const w = loadWorker({ windows: [page] });
  await w.dispatch('push', { data: pushData(NOTE) });
  let closed = 0;
  const notification = { data: w.shown[0].options.data, close: () => { closed++; } };
  await w.dispatch('notificationclick', { notification });
  assert.equal(closed, 1);
  assert.equal(focused, 1);
  assert.deepEqual(plain(posted), [{ type: 'open-notification', href: '#/rooms/room-1?around=42&msg=msg-1', id: NOTE.id, room_id: 'room-1', message_id: 'msg-1', seq: 42 }]);
  assert.deepEqual(w.opened, []);
});

test('sw: a click with no page open opens one at the room URL', async () => {
  const w = loadWorker({ windows: [] });
  await w.dispatch('push', { data: pushData(NOTE) });
  await w.dispatch('notificationclick', { notification: { data: w.shown[0].options.data, close() {} } });
  assert.deepEqual(w.opened, ['/#/rooms/room-1?around=42&msg=msg-1']);
});

test('sw: its words are the page\'s (KIND_TEXT repeated in the classic script)', () => {
  for (const [kind, text] of Object.entries(KIND_TEXT)) assert.ok(SW_SOURCE.includes(`${kind}: '${text}'`), kind);
});

test('badge text: empty for none, the number, 99+ above 99', () => {
  assert.equal(badgeText(0), '');
  assert.equal(badgeText(undefined), '');
  assert.equal(badgeText(1), '1');
  assert.equal(badgeText(99), '99');
  assert.equal(badgeText(100), '99+');
});

test('relative time and mute times', () => {
  const now = Date.parse('2026-12-03T15:00:00Z');
  assert.equal(relativeTime('2026-12-03T14:59:30Z', now), 'just now');
  assert.equal(relativeTime('2026-12-03T14:55:00Z', now), '5 min ago');
  assert.equal(relativeTime('2026-12-03T12:00:00Z', now), '3 h ago');
  assert.equal(relativeTime('2026-12-01T15:00:00Z', now), '2 d ago');
  assert.equal(relativeTime('nonsense', now), '');
  assert.equal(muteUntil('1h', now), '2026-12-03T16:00:00.000Z');
  assert.equal(muteUntil('8h', now), '2026-12-03T23:00:00.000Z');
  assert.equal(muteUntil('forever', now), MUTE_FOREVER);
  assert.equal(muteUntil('off', now), null);
  assert.throws(() => muteUntil('2h', now));
  assert.deepEqual(muteState({ muted_until: null }, now), { muted: false });
  assert.deepEqual(muteState({ muted_until: '2026-12-03T14:00:00Z' }, now), { muted: false }, 'a past mute is over');
  assert.equal(muteState({ muted_until: MUTE_FOREVER }, now).forever, true);
  assert.equal(muteState({ muted_until: '2026-12-03T16:00:00Z' }, now).forever, false);
  assert.equal(describeRoomSetting({ level: 'none', muted_until: null }, now), 'Off');
  assert.equal(describeRoomSetting({ level: 'mentions', muted_until: MUTE_FOREVER }, now), 'Muted');
  assert.match(describeRoomSetting({ level: 'all', muted_until: '2026-12-03T16:00:00Z' }, now), /^Muted until /);
});

function fakeApi(answers = {}) {
  const calls = [];
  const fn = async (path, opts = {}) => {
    calls.push({ path, method: opts.method || 'GET', body: opts.body, query: opts.query });
    const a = answers[`${opts.method || 'GET'} ${path}`];
    if (a instanceof Error) throw a;
    return typeof a === 'function' ? a(opts) : a;
  };
  return { fn, calls };
}

function memStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), removeItem: (k) => m.delete(k), m };
}

test('count: GET, then frames; a slow GET answered after a frame does not undo it', async () => {
  let release;
  const slow = new Promise((r) => { release = r; });
  const { fn } = fakeApi({ 'GET /notifications/unread-count': () => slow });
  const n = new Notifications({ api: fn, storage: memStorage() });
  const counts = [];
  n.addEventListener('count', (e) => counts.push(e.detail.count));
  const pending = n.loadCount();
  n.handleFrame({ type: 'notifications', unread_count: 3 });
  release({ count: 1 });
  await pending;
  assert.equal(n.count, 3);
  assert.deepEqual(counts, [3]);
  n.handleFrame({ type: 'notifications' }); // malformed: ignored
  assert.equal(n.count, 3);
});

test('mark read: only unread ids are sent, the count follows; all', async () => {
  let serverCount = 2;
  const { fn, calls } = fakeApi({
    'POST /notifications/read': (opts) => { serverCount = opts.body.all ? 0 : serverCount - opts.body.ids.length; },
    'GET /notifications/unread-count': () => ({ count: serverCount }),
  });
  const n = new Notifications({ api: fn, storage: memStorage() });
  n.setCount(2);
  const items = [{ id: 'a', read_at: null }, { id: 'b', read_at: '2026-12-03T15:00:00Z' }];
  await n.markRead(items);
  assert.deepEqual(calls[0], { path: '/notifications/read', method: 'POST', body: { ids: ['a'] }, query: undefined });
  assert.equal(calls[1].path, '/notifications/unread-count', 'the count is asked again');
  assert.ok(items[0].read_at);
  assert.equal(n.count, 1);
  await n.markRead(items); // nothing unread: no call
  assert.equal(calls.length, 2);
  await n.markAllRead();
  assert.deepEqual(calls[2].body, { all: true });
  assert.equal(n.count, 0);
});

test('inbox pages: unread filter and cursor in the query', async () => {
  const { fn, calls } = fakeApi({ 'GET /notifications': { items: [], next_cursor: null } });
  const n = new Notifications({ api: fn, storage: memStorage() });
  await n.list({ unread: true, cursor: 'abc' });
  await n.list();
  assert.deepEqual(calls[0].query, { unread: 'true', cursor: 'abc', limit: 30 });
  assert.deepEqual(calls[1].query, { unread: undefined, cursor: undefined, limit: 30 });
});

test('push: subscribe with the VAPID key as bytes, POST the keys, remember the id; unsubscribe deletes it', async () => {
  const key = 'BAECAwQ'; // base64url of bytes 4,1,2,3,4
  assert.deepEqual([...base64UrlToBytes(key)], [4, 1, 2, 3, 4]);
  const { fn, calls } = fakeApi({
    'GET /notifications/push/vapid-public-key': { key },
    'POST /notifications/push/subscriptions': { id: 'sub-1' },
  });
  const storage = memStorage();
  const n = new Notifications({ api: fn, storage });
  let current = null;
  let subscribedWith = null;
  const sub = {
    endpoint: 'https://push.example.com/x',
    toJSON: () => ({ endpoint: 'https://push.example.com/x', expirationTime: null, keys: { p256dh: 'P', auth: 'A' } }),
    unsubscribe: async () => { current = null; return true; },
  };
  const pm = {
    getSubscription: async () => current,
    subscribe: async (opts) => { subscribedWith = opts; current = sub; return sub; },
  };
  assert.equal(await n.subscribePush(pm, 'me'), 'sub-1');
  assert.equal(subscribedWith.userVisibleOnly, true);
  assert.deepEqual([...subscribedWith.applicationServerKey], [4, 1, 2, 3, 4]);
  assert.deepEqual(calls[1].body, { endpoint: 'https://push.example.com/x', keys: { p256dh: 'P', auth: 'A' } });
  assert.deepEqual(JSON.parse(storage.getItem(PUSH_KEY)), { id: 'sub-1', endpoint: 'https://push.example.com/x', user_id: 'me' });
  assert.equal(n.pushOnFor('me', sub), true);
  assert.equal(n.pushOnFor('someone else', sub), false);
  await n.unsubscribePush(pm);
  assert.equal(calls[2].method, 'DELETE');
  assert.equal(calls[2].path, '/notifications/push/subscriptions/sub-1');
  assert.equal(current, null);
  assert.equal(storage.getItem(PUSH_KEY), null);
});

test('push: a subscription the server refuses is not kept', async () => {
  const refused = Object.assign(new Error('bad endpoint'), { status: 400 });
  const { fn } = fakeApi({ 'GET /notifications/push/vapid-public-key': { key: 'AQID' }, 'POST /notifications/push/subscriptions': refused });
  const n = new Notifications({ api: fn, storage: memStorage() });
  let unsubscribed = false;
  const sub = { endpoint: 'http://x', keys: { p256dh: 'P', auth: 'A' }, unsubscribe: async () => { unsubscribed = true; } };
  await assert.rejects(n.subscribePush({ getSubscription: async () => null, subscribe: async () => sub }, 'me'), /bad endpoint/);
  assert.ok(unsubscribed);
  assert.equal(n.storedPush, null);
  assert.deepEqual(subscriptionBody(sub), { endpoint: 'http://x', keys: { p256dh: 'P', auth: 'A' } });
});

test('where a notification opens: around the message, or the thread of a thread reply', async () => {
  const events = {
    41: { kind: 'message.created', seq: 42, message: { id: 'msg-1', seq: 42, thread_root_id: null } },
    9: { kind: 'message.created', seq: 10, message: { id: 'msg-2', seq: 10, thread_root_id: 'root-1' } },
  };
  const { fn, calls } = fakeApi({
    'GET /chat/rooms/room-1/events': (opts) => ({ items: events[opts.query.after] ? [events[opts.query.after]] : [], has_more: false }),
  });
  const n = new Notifications({ api: fn, storage: memStorage() });
  assert.equal(await n.resolveHref(NOTE), '#/rooms/room-1?around=42&msg=msg-1');
  assert.deepEqual(calls[0].query, { after: 41, limit: 1 });
  assert.equal(await n.resolveHref({ ...NOTE, message_id: 'msg-2', seq: 10 }), '#/rooms/room-1?thread=root-1&msg=msg-2');
  // The event log unreachable: the room around the message.
  const down = new Notifications({ api: async () => { throw new Error('503'); }, storage: memStorage() });
  assert.equal(await down.resolveHref(NOTE), '#/rooms/room-1?around=42&msg=msg-1');
});
