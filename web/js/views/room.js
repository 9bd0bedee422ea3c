// One room: the header, and three parts around a small shared room state (room/state.js):
// the message list (room/messages.js: history, live messages, edit/delete, read markers),
// the composer (room/composer.js: send, reply, typing) and the members panel
// (room/members.js: invite, remove, roles, leave).
import { h, replace } from '../dom.js';
import { api } from '../api.js';
import { store } from '../store.js';
import { createRoomState } from './room/state.js';
import { mountMessages } from './room/messages.js';
import { mountComposer } from './room/composer.js';
import { mountMembers } from './room/members.js';

export function mountRoom(pane, roomId) {
  const state = createRoomState(roomId);
  store.activeRoomId = roomId;
  state.onDispose(() => { if (store.activeRoomId === roomId) store.activeRoomId = null; });

  // The parts call each other only through these callbacks, once all three exist.
  const messages = mountMessages(state, {
    onReply: (m) => composer.startReply(m),
    focusComposer: () => composer.focus(),
  });
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
    members.button);
  const body = h('div', { class: 'room-body' },
    h('div', { class: 'conversation' }, ...messages.elements, ...composer.elements),
    members.panel);
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
        if (peer) replace(topic, h('a', { href: `#/people/${peer}`, text: 'View profile' }));
      }
      await Promise.all([messages.loadLatest(), members.load()]);
    } catch (err) {
      if (state.disposed) return;
      replace(pane, h('div', { class: 'pane-page' },
        h('a', { href: '#/rooms', class: 'back-link', text: '← Chats' }),
        h('h1', { tabindex: '-1', text: err.status === 404 ? 'Room not found' : 'Could not open the room' }),
        h('p', { role: 'alert', text: err.humanMessage ? err.humanMessage() : String(err) })));
    }
  })();
  messages.updateHistoryStatus();
  messages.renderPendingAll();

  return () => state.dispose();
}
