// One room: the header, and three parts around a small shared room state (room/state.js):
// the message list (room/messages.js: history, live messages, edit/delete, read markers),
// the composer (room/composer.js: send, reply, typing) and the members panel
// (room/members.js: invite, remove, roles, leave); v1.1: the thread panel (room/threads.js),
// the pins panel (room/pins.js), and opening the history around a message (`around`, from
// a search result or a pin; a thread reply opens its thread).
import { h, replace } from '../dom.js';
import { api } from '../api.js';
import { store } from '../store.js';
import { createRoomState, presenceDot } from './room/state.js';
import { mountMessages } from './room/messages.js';
import { mountComposer } from './room/composer.js';
import { mountMembers } from './room/members.js';
import { mountThreadPanel } from './room/threads.js';
import { mountPins } from './room/pins.js';
import { closeReactionPicker } from './room/reactions.js';
import { roomNotificationMenu } from './notifications.js';

/**
 * `target` (optional): `{around: seq, msg: id}` opens the history around that message and
 * highlights it; `{thread: rootId, msg: id}` opens the root's thread with the reply highlighted.
 */
export function mountRoom(pane, roomId, target = {}) {
  const state = createRoomState(roomId);
  store.activeRoomId = roomId;
  state.onDispose(() => { if (store.activeRoomId === roomId) store.activeRoomId = null; });

  // The parts call each other only through these callbacks, once all three exist.
  const messages = mountMessages(state, {
    onReply: (m) => composer.startReply(m),
    focusComposer: () => composer.focus(),
    onOpenThread: (m) => thread.open(m),
  });
  const thread = mountThreadPanel(state);
  const pins = mountPins(state, {
    onJump: (m) => {
      if (messages.has(m.id)) { pins.close({ quiet: true }); messages.highlight(m.id); } else location.hash = `#/rooms/${roomId}?around=${m.seq}&msg=${m.id}`;
    },
  });
  state.onDispose(() => closeReactionPicker());
  const composer = mountComposer(state, {
    onEditLast: () => messages.editLast(),
    onSent: () => messages.scrollToBottom(),
  });
  const members = mountMembers(state, { onRoleChange: () => messages.rerenderAll() });

  const title = h('h1', { class: 'room-title', tabindex: '-1', testid: 'room-title', text: state.room ? store.roomTitle(state.room) : 'Loading…' });
  const topic = h('p', { class: 'room-topic muted', testid: 'room-topic' });
  const header = h('header', { class: 'room-header' },
    h('a', { href: '#/rooms', class: 'back-link', 'aria-label': 'Back to chats', text: '←' }),
    h('div', { class: 'room-heading' }, title, topic),
    h('div', { class: 'room-header-actions' }, roomNotificationMenu(state), pins.button, members.button));
  const body = h('div', { class: 'room-body' },
    h('div', { class: 'conversation' }, ...messages.elements, ...composer.elements),
    members.panel, thread.panel, pins.panel);
  replace(pane, h('div', { class: 'room-view', testid: 'room-view', 'data-room-id': roomId }, header, body));

  state.on(store, 'removed', (e) => {
    if (e.detail.room_id !== roomId) return;
    if (location.hash.startsWith(`#/rooms/${roomId}`)) location.hash = '#/rooms';
  });
  state.on(store, 'rooms', () => {
    const r = store.rooms.get(roomId);
    if (r) { state.room = r; title.textContent = store.roomTitle(r); }
  });

  (async () => {
    try {
      if (!state.room) {
        const r = await api(`/chat/rooms/${roomId}`);
        state.room = store.upsertRoom(r, { fromList: true });
      }
      if (state.disposed) return;
      title.textContent = store.roomTitle(state.room);
      topic.textContent = state.room.topic || (state.room.kind === 'dm' ? 'Direct message' : '');
      if (state.room.kind === 'dm') {
        const peer = store.dmPeers.get(roomId);
        if (peer) replace(topic, presenceDot(peer), ' ', h('a', { href: `#/people/${peer}`, text: 'View profile' }));
      }
      const around = Number(target.around);
      await Promise.all([
        around > 0 ? messages.loadAround(around, target.msg) : messages.loadLatest(),
        members.load(),
      ]);
      if (state.disposed) return;
      await messages.loadSeen();
      if (target.thread && !state.disposed) await openThreadById(target.thread, target.msg);
    } catch (err) {
      if (state.disposed) return;
      replace(pane, h('div', { class: 'pane-page' },
        h('a', { href: '#/rooms', class: 'back-link', text: '← Chats' }),
        h('h1', { tabindex: '-1', text: err.status === 404 ? 'Room not found' : 'Could not open the room' }),
        h('p', { role: 'alert', text: err.humanMessage ? err.humanMessage() : String(err) })));
    }
  })();
  /** A thread reply from a search result: find its root (the thread's root has no route of its own). */
  async function openThreadById(rootId, focusId) {
    let root = null;
    // The root is a top-level message: look for it in the loaded history, else page back.
    for (let before = null, i = 0; i < 20 && !root; i++) {
      const page = await api(`/chat/rooms/${roomId}/messages`, { query: { limit: 100, before: before ?? undefined } });
      root = (page?.items || []).find((m) => m.id === rootId) || null;
      if (!page?.has_more || !page.items?.length) break;
      before = page.items[0].seq;
    }
    if (root && !state.disposed) thread.open(root, { focusId });
  }

  messages.updateHistoryStatus();
  messages.renderPendingAll();

  return () => state.dispose();
}
