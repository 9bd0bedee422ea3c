// Unit tests of the store's chat v1.1 logic, under node with fakes (no browser):
// reaction counts from events (idempotent per user, `me` computed from user_id, kept across
// copies without `me`), thread reply counts, pins, read markers → "seen by", the presence
// map and subscription (capped, sent again after a reconnect), search highlight slicing by
// code point (astral characters), mention segments and the autocomplete query.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  Store, Reactions, ThreadCounts, applyPinEvent, seenBy, highlightSegments, mentionSegments,
  mentionQuery, mentionCandidates, epochMs, PRESENCE_MAX,
} from '../js/store.js';

const ME = 'me';
const ROOM = 'r1';

/** A realtime fake: records frames; `open` says whether the socket is up. */
class FakeRealtime extends EventTarget {
  constructor() { super(); this.frames = []; this.open = true; }
  presenceSubscribe(ids) { if (!this.open) return false; this.frames.push({ type: 'presence.subscribe', user_ids: ids }); return true; }
  idle(idle) { if (!this.open) return false; this.frames.push({ type: idle ? 'idle' : 'active' }); return true; }
}

function setup({ api = async () => ({ items: [] }) } = {}) {
  const calls = [];
  const quiet = () => {};
  const store = new Store({
    api: async (path, opts) => { calls.push({ path, query: opts?.query, method: opts?.method || 'GET' }); return api(path, opts); },
    auth: { user: { id: ME, username: 'me' } },
    announce: quiet,
    toast: quiet,
    pageVisible: () => true,
    Realtime: null,
  });
  const room = store.upsertRoom({ id: ROOM, kind: 'channel', name: 'General', last_seq: 0, member_count: 3 }, { fromList: true });
  return { store, room, calls };
}

const msg = (id, seq, extra = {}) => ({ id, room_id: ROOM, seq, sender_id: 'bob', body: `m${seq}`, created_at: new Date(seq * 1000).toISOString(), ...extra });
const frame = (seq, event) => ({ type: 'event', room_id: ROOM, seq, event: { room_id: ROOM, seq, created_at: new Date(seq * 1000).toISOString(), ...event } });

async function settle() {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

test('reactions: counts from events, me from user_id, a second add by the same user counts once', () => {
  const r = new Reactions(ME);
  r.seed({ id: 'm1', reactions: [{ emoji: '👍', count: 2, me: false }] });
  assert.deepEqual(r.list('m1'), [{ emoji: '👍', count: 2, me: false }]);
  assert.equal(r.apply({ kind: 'reaction.added', message_id: 'm1', emoji: '👍', user_id: ME }), true);
  assert.deepEqual(r.list('m1'), [{ emoji: '👍', count: 3, me: true }]);
  // The event of my own toggle, already applied locally: no second count.
  assert.equal(r.apply({ kind: 'reaction.added', message_id: 'm1', emoji: '👍', user_id: ME }), false);
  assert.equal(r.list('m1')[0].count, 3);
  r.apply({ kind: 'reaction.added', message_id: 'm1', emoji: ':tada:', user_id: 'carol' });
  r.apply({ kind: 'reaction.added', message_id: 'm1', emoji: ':tada:', user_id: 'carol' });
  assert.deepEqual(r.list('m1')[1], { emoji: ':tada:', count: 1, me: false });
  // Removal: once per user; the chip goes at zero.
  assert.equal(r.apply({ kind: 'reaction.removed', message_id: 'm1', emoji: ':tada:', user_id: 'carol' }), true);
  assert.equal(r.apply({ kind: 'reaction.removed', message_id: 'm1', emoji: ':tada:', user_id: 'carol' }), false);
  assert.deepEqual(r.list('m1').map((x) => x.emoji), ['👍']);
  r.apply({ kind: 'reaction.removed', message_id: 'm1', emoji: '👍', user_id: ME });
  assert.deepEqual(r.list('m1'), [{ emoji: '👍', count: 2, me: false }]);
  // Added again after a removal counts again.
  assert.equal(r.apply({ kind: 'reaction.added', message_id: 'm1', emoji: '👍', user_id: ME }), true);
  assert.deepEqual(r.list('m1'), [{ emoji: '👍', count: 3, me: true }]);
});

test('reactions: a copy without `me` (a WebSocket event\'s message) keeps what was known about me', () => {
  const r = new Reactions(ME);
  r.seed({ id: 'm1', reactions: [{ emoji: '❤️', count: 1, me: true }] });
  r.seed({ id: 'm1', reactions: [{ emoji: '❤️', count: 2 }, { emoji: '👀', count: 1 }] });
  assert.deepEqual(r.list('m1'), [{ emoji: '❤️', count: 2, me: true }, { emoji: '👀', count: 1, me: false }]);
  // An HTTP copy is the truth for me.
  r.seed({ id: 'm1', reactions: [{ emoji: '❤️', count: 1, me: false }] });
  assert.deepEqual(r.list('m1'), [{ emoji: '❤️', count: 1, me: false }]);
  assert.deepEqual(r.list('unknown'), []);
});

test('reaction events through the store: applied once per seq, redelivery ignored, a room-event for the view', async () => {
  const { store } = setup();
  store.seedMessage(msg('m1', 1, { reactions: [] }));
  const seen = [];
  store.addEventListener('room-event', (e) => seen.push(e.detail.event.kind));
  const add = frame(1, { kind: 'reaction.added', message_id: 'm1', emoji: '👍', user_id: 'bob' });
  store.handleFrame(add);
  store.handleFrame(add); // at-least-once delivery
  store.handleFrame(frame(2, { kind: 'reaction.added', message_id: 'm1', emoji: '👍', user_id: ME }));
  await settle();
  assert.deepEqual(store.reactions.list('m1'), [{ emoji: '👍', count: 2, me: true }]);
  assert.deepEqual(seen, ['reaction.added', 'reaction.added']);
  assert.equal(store.rooms.get(ROOM).unread_count, 0, 'reactions are not unread messages');
});

test('toggleReaction: PUT when not mine, DELETE when mine, the emoji URL-encoded, the later event a no-op', async () => {
  const { store, calls } = setup({ api: async () => undefined });
  store.seedMessage(msg('m1', 1, { reactions: [{ emoji: '👍', count: 1, me: false }] }));
  assert.equal(await store.toggleReaction(ROOM, 'm1', '👍'), true);
  assert.deepEqual(calls.at(-1), { path: `/chat/rooms/${ROOM}/messages/m1/reactions/%F0%9F%91%8D`, query: undefined, method: 'PUT' });
  assert.deepEqual(store.reactions.list('m1'), [{ emoji: '👍', count: 2, me: true }]);
  store.handleFrame(frame(1, { kind: 'reaction.added', message_id: 'm1', emoji: '👍', user_id: ME }));
  assert.equal(store.reactions.list('m1')[0].count, 2, 'my own event does not count twice');
  assert.equal(await store.toggleReaction(ROOM, 'm1', '👍'), false);
  assert.equal(calls.at(-1).method, 'DELETE');
  assert.deepEqual(store.reactions.list('m1'), [{ emoji: '👍', count: 1, me: false }]);
  await store.toggleReaction(ROOM, 'm1', ':+1:');
  assert.equal(calls.at(-1).path, `/chat/rooms/${ROOM}/messages/m1/reactions/%3A%2B1%3A`);
});

test('thread counts: seeded from the root, one per new reply, last reply time moves; an older copy does not roll back', async () => {
  const t = new ThreadCounts();
  t.seed({ id: 'root', reply_count: 2, last_reply_at: '2026-01-01T00:00:02Z' });
  assert.deepEqual(t.get('root'), { reply_count: 2, last_reply_at: Date.parse('2026-01-01T00:00:02Z') });
  assert.equal(t.reply({ id: 'r3', thread_root_id: 'root', created_at: '2026-01-01T00:00:05Z' }), true);
  assert.equal(t.reply({ id: 'r3', thread_root_id: 'root', created_at: '2026-01-01T00:00:05Z' }), false);
  assert.deepEqual(t.get('root'), { reply_count: 3, last_reply_at: Date.parse('2026-01-01T00:00:05Z') });
  t.seed({ id: 'root', reply_count: 2, last_reply_at: '2026-01-01T00:00:02Z' }); // a stale copy
  assert.equal(t.get('root').reply_count, 3);
  assert.equal(t.reply({ id: 'x', thread_root_id: null }), false);
  assert.deepEqual(t.get('nothing'), { reply_count: 0, last_reply_at: null });
  // last_reply_at as epoch milliseconds too.
  assert.equal(epochMs('1767225600000'), 1767225600000);
  assert.equal(epochMs(null), null);

  // Through the store: a thread reply event moves the root's count once.
  const { store } = setup();
  store.seedMessage(msg('root', 1, { reply_count: 0, last_reply_at: null }));
  const reply = frame(1, { kind: 'message.created', message: msg('r1', 1, { thread_root_id: 'root' }) });
  store.handleFrame(reply);
  store.handleFrame(reply);
  assert.equal(store.threads.get('root').reply_count, 1);
});

test('pins: events add and remove once; the store follows message.pinned / message.unpinned', () => {
  const set = new Set();
  assert.equal(applyPinEvent(set, { kind: 'message.pinned', message_id: 'm1' }), true);
  assert.equal(applyPinEvent(set, { kind: 'message.pinned', message_id: 'm1' }), false);
  assert.equal(applyPinEvent(set, { kind: 'message.unpinned', message_id: 'm2' }), false);
  assert.deepEqual([...set], ['m1']);
  const { store } = setup();
  store.seedMessage(msg('m0', 1, { pinned: true }));
  store.handleFrame(frame(1, { kind: 'message.pinned', message_id: 'm1', user_id: 'bob' }));
  store.handleFrame(frame(2, { kind: 'message.unpinned', message_id: 'm0', user_id: 'bob' }));
  assert.deepEqual([...store.pinsOf(ROOM)], ['m1']);
});

test('read markers → seen by: loaded, moved by read frames (forward only), not me nor the sender', async () => {
  const { store } = setup({ api: async () => ({ items: [{ user_id: 'bob', seq: 5 }, { user_id: 'carol', seq: 3 }, { user_id: ME, seq: 9 }] }) });
  const reads = [];
  store.addEventListener('read', (e) => reads.push(e.detail));
  store.handleRead({ type: 'read', room_id: ROOM, user_id: 'carol', seq: 7 }); // before the list arrives
  await store.loadReadMarkers(ROOM);
  const last = { id: 'm7', seq: 7, sender_id: 'dave' };
  assert.deepEqual(store.seenBy(ROOM, last), ['carol'], 'the newer frame is kept over the older list');
  store.handleRead({ type: 'read', room_id: ROOM, user_id: 'bob', seq: 8 });
  assert.deepEqual(store.seenBy(ROOM, last).sort(), ['bob', 'carol']);
  store.handleRead({ type: 'read', room_id: ROOM, user_id: 'bob', seq: 2 }); // backwards: ignored
  assert.deepEqual(store.seenBy(ROOM, last).sort(), ['bob', 'carol']);
  assert.deepEqual(store.seenBy(ROOM, { id: 'm8', seq: 8, sender_id: 'bob' }), [], 'not the sender');
  assert.equal(reads.filter((r) => r.user_id === 'bob').length, 1);
  assert.deepEqual(seenBy(undefined, last, ME), []);
});

test('presence: the map follows frames; the subscription is the union of watched ids, capped, sent again after a reconnect', async () => {
  const { store, calls } = setup({ api: async (path, { query }) => ({ items: query.user_ids.split(',').map((id) => ({ user_id: id, status: id === 'bob' ? 'online' : 'offline', last_seen_at: null })) }) });
  const rt = new FakeRealtime();
  store.rt = rt;
  store.connection = 'open';
  assert.equal(store.presenceOf('bob'), 'offline', 'unknown is shown as offline');
  store.watchPresence('members', ['bob', 'carol', ME]);
  store.watchPresence('dms', ['bob', 'dave']);
  assert.deepEqual(rt.frames.at(-1), { type: 'presence.subscribe', user_ids: ['bob', 'carol', 'dave'] }, 'me excluded, duplicates once');
  await settle();
  assert.equal(store.presenceOf('bob'), 'online', 'fetched with GET /chat/presence');
  assert.ok(calls.some((c) => c.path === '/chat/presence'));
  const changes = [];
  store.addEventListener('presence', (e) => changes.push(e.detail));
  store.handlePresence({ type: 'presence', user_id: 'bob', status: 'idle', last_seen_at: 'x' });
  store.handlePresence({ type: 'presence', user_id: 'bob', status: 'idle', last_seen_at: 'x' });
  assert.deepEqual(changes, [{ user_id: 'bob', status: 'idle' }]);
  // The same set is not sent again; a changed one is.
  const before = rt.frames.length;
  store.watchPresence('dms', ['dave', 'bob']);
  assert.equal(rt.frames.length, before);
  store.watchPresence('members', []);
  assert.deepEqual([...rt.frames.at(-1).user_ids].sort(), ['bob', 'dave']);
  // At most PRESENCE_MAX ids.
  store.watchPresence('big', Array.from({ length: 300 }, (_, i) => `u${i}`));
  assert.equal(rt.frames.at(-1).user_ids.length, PRESENCE_MAX);
  // A reconnect: the new connection has no subscription, so it is sent again.
  const count = rt.frames.length;
  store._presenceSent = '';
  store.sendPresenceSubscription();
  assert.equal(rt.frames.length, count + 1);
  // Idle and active frames, once per change.
  store.setIdle(true);
  store.setIdle(true);
  store.noteActivity();
  assert.deepEqual(rt.frames.slice(-2), [{ type: 'idle' }, { type: 'active' }]);
  clearTimeout(store._idleTimer);
});

test('search highlights are sliced by code point: astral characters before and inside a match', () => {
  const body = '🎉✨ zebrafish 𝒳 party 🐟!';
  // Code points: 🎉=0 ✨=1 ' '=2 zebrafish=3..11 ' '=12 𝒳=13 ' '=14 party=15..19 ' '=20 🐟=21 !=22
  const segs = highlightSegments(body, [{ start: 15, end: 20 }, { start: 3, end: 12 }, { start: 21, end: 22 }]);
  assert.deepEqual(segs, [
    { text: '🎉✨ ', hit: false },
    { text: 'zebrafish', hit: true },
    { text: ' 𝒳 ', hit: false },
    { text: 'party', hit: true },
    { text: ' ', hit: false },
    { text: '🐟', hit: true },
    { text: '!', hit: false },
  ]);
  assert.equal(segs.map((s) => s.text).join(''), body, 'nothing lost, no half surrogate');
  // Overlapping and out-of-range ranges are tolerated.
  assert.deepEqual(highlightSegments('ab😀cd', [{ start: 1, end: 3 }, { start: 2, end: 9 }]), [{ text: 'a', hit: false }, { text: 'b😀', hit: true }, { text: 'cd', hit: true }]);
  assert.deepEqual(highlightSegments('abc', []), [{ text: 'abc', hit: false }]);
});

test('mentions: the resolved @usernames and @room become segments, the rest stays text', () => {
  const names = { b: 'bob', c: 'carol' };
  // An admin's @room: 'e' (not named in the body) is mentioned through it.
  const segs = mentionSegments('Hi @Bob. and @room, mail@bob.com, @dave and @carol!', ['b', 'c', 'e'], (id) => names[id]);
  assert.deepEqual(segs.filter((s) => s.mention).map((s) => [s.text, s.mention]), [['@Bob', 'b'], ['@room', 'room'], ['@carol', 'c']]);
  assert.equal(segs.map((s) => s.text).join(''), 'Hi @Bob. and @room, mail@bob.com, @dave and @carol!');
  assert.deepEqual(mentionSegments('@room hi', [], () => null), [{ text: '@room hi', mention: null }], '@room unresolved (not an admin) stays text');
  assert.deepEqual(mentionSegments('@bob @room', ['b'], (id) => names[id]).map((x) => x.mention), ['b', null],
    "a member's @room adds no mentions beyond the named ones: plain text");
  assert.deepEqual(mentionSegments('@room hi', ['b', 'c'], (id) => names[id]).map((x) => x.mention), ['room', null], "an admin's @room mentions everyone");
  // Autocomplete: the @word at the caret.
  assert.deepEqual(mentionQuery('hello @bo', 9), { start: 6, query: 'bo' });
  assert.deepEqual(mentionQuery('@', 1), { start: 0, query: '' });
  assert.equal(mentionQuery('mail@bo', 7), null, 'not in the middle of a word');
  assert.equal(mentionQuery('@bob done', 9), null);
  const members = [{ id: 'b', username: 'bob', display_name: 'Robert' }, { id: 'c', username: 'carol', display_name: 'Bo Carol' }, { id: ME, username: 'bobby_me' }];
  assert.deepEqual(mentionCandidates(members, 'bo', ME).map((m) => m.username), ['bob', 'carol'], 'username first, then display name; never me');
  assert.deepEqual(mentionCandidates(members, 'rob', ME).map((m) => m.username), ['bob']);
});
