// Pins (v1.1): the pins panel (`GET …/pins`, refreshed on `message.pinned` /
// `message.unpinned` events while open) and pinning itself (`PUT` / `DELETE …/pins/{id}`,
// owners and admins; the message menu offers it). Which messages are pinned lives in the
// store (`store.pinsOf(room)`), so the pin marks in the timeline follow the events too.
import { h, replace, toast, formatTime } from '../../dom.js';
import { api } from '../../api.js';
import { store } from '../../store.js';
import { nameEl, canModerate } from './state.js';

export async function setPinned(roomId, m, pinned) {
  try {
    await api(`/chat/rooms/${roomId}/pins/${m.id}`, { method: pinned ? 'PUT' : 'DELETE' });
    toast(pinned ? 'Message pinned.' : 'Message unpinned.');
  } catch (err) {
    toast(err.humanMessage ? err.humanMessage() : 'Could not change the pin.', 'error');
  }
}

/**
 * `onJump(message)` shows a pinned message in the timeline. Returns the header button and
 * the panel.
 */
export function mountPins(state, { onJump }) {
  const { roomId, on } = state;
  let items = [];
  const button = h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'pins-toggle', 'aria-expanded': 'false', 'aria-controls': 'pins-panel', text: 'Pins' });
  const heading = h('h2', { id: 'pins-heading', tabindex: '-1', text: 'Pinned messages' });
  const list = h('ul', { class: 'pins-list', testid: 'pins-list', 'aria-labelledby': 'pins-heading' });
  const status = h('p', { class: 'muted small', role: 'status', testid: 'pins-status' });
  const panel = h('aside', { id: 'pins-panel', class: 'side-panel pins-panel', testid: 'pins-panel', 'aria-labelledby': 'pins-heading', hidden: true },
    h('div', { class: 'members-head' }, heading,
      h('button', { type: 'button', class: 'btn-link', 'aria-label': 'Close pinned messages', text: 'Close', on: { click: () => close() } })),
    status, list);

  function close({ quiet = false } = {}) {
    if (panel.hidden) return;
    panel.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    if (!quiet) button.focus();
  }
  state.registerPanel('pins', close);
  button.addEventListener('click', () => {
    if (!panel.hidden) { close(); return; }
    state.panelOpening('pins');
    panel.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    heading.focus();
    load();
  });
  panel.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !e.defaultPrevented) { e.preventDefault(); close(); } });

  async function load() {
    status.textContent = 'Loading…';
    try {
      const page = await api(`/chat/rooms/${roomId}/pins`);
      if (state.disposed) return;
      items = page?.items || [];
      const pins = store.pinsOf(roomId);
      pins.clear();
      for (const m of items) pins.add(m.id);
      render();
    } catch (err) {
      status.textContent = err.humanMessage ? err.humanMessage() : 'Could not load the pins.';
    }
  }

  function render() {
    status.textContent = items.length ? `${items.length} pinned` : 'Nothing is pinned here yet.';
    replace(list, items.map((m) => h('li', { class: 'pin-item', testid: 'pin-item', 'data-message-id': m.id },
      h('div', { class: 'message-meta' }, nameEl(m.sender_id), h('time', { datetime: m.created_at, text: formatTime(m.created_at) })),
      h('p', { class: 'pin-body', testid: 'pin-body', text: m.deleted ? 'This message was deleted.' : m.body }),
      h('div', { class: 'pin-actions' },
        h('button', { type: 'button', class: 'btn-link', testid: 'pin-jump', text: 'Show in chat', on: { click: () => onJump(m) } }),
        canModerate(state) ? h('button', { type: 'button', class: 'btn-link', testid: 'pin-remove', text: 'Unpin', on: { click: () => setPinned(roomId, m, false) } }) : null))));
  }

  on(store, 'room-event', (e) => {
    const k = e.detail.event.kind;
    if (e.detail.room_id === roomId && (k === 'message.pinned' || k === 'message.unpinned') && !panel.hidden) load();
  });

  return { button, panel, close };
}
