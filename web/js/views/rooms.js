// The chat layout: the room list sidebar plus a main pane (a room, discover, or new room).
import { h, replace, field, showFormErrors, clearFormErrors, debounce, formatTime, toast, avatar } from '../dom.js';
import { api } from '../api.js';
import { store, fetchAll } from '../store.js';
import { mountRoom } from './room.js';
import { mountSearch } from './room/search.js';
import { presenceDot } from './room/state.js';
import { attachmentSummary } from '../files.js';

/**
 * Mount the chat layout. `pane` is 'empty' | 'room' | 'discover' | 'new'.
 * Returns a cleanup function.
 */
export function mountChat(main, { pane = 'empty', roomId = null, target = {}, query = '' } = {}) {
  const cleanups = [];
  const list = h('ul', { class: 'room-list', testid: 'room-list', 'aria-label': 'Your rooms' });
  const sidebar = h('aside', { class: 'sidebar', 'aria-label': 'Rooms' },
    h('div', { class: 'sidebar-head' },
      h('h2', { text: 'Chats' }),
      h('div', { class: 'sidebar-actions' },
        h('a', { href: '#/new-room', class: 'btn btn-small', testid: 'new-room-button', text: 'New room' }),
        h('a', { href: '#/discover', class: 'btn btn-small btn-ghost', testid: 'discover-button', text: 'Discover' }))),
    searchBox(pane === 'search' ? query : ''),
    list);
  const paneEl = h('section', { class: 'room-pane' });
  const layout = h('div', { class: `chat-layout ${pane === 'empty' ? '' : 'has-pane'}` }, sidebar, paneEl);
  main.appendChild(layout);

  const renderList = () => {
    const rooms = store.visibleRooms();
    if (!store.roomsLoaded) { replace(list, h('li', { class: 'muted pad', text: 'Loading rooms…' })); return; }
    if (!rooms.length) {
      replace(list, h('li', { class: 'empty-state' },
        h('p', { text: 'No rooms yet.' }),
        h('p', {}, h('a', { href: '#/new-room', text: 'Create a room' }), ', ', h('a', { href: '#/discover', text: 'discover public rooms' }), ' or find ', h('a', { href: '#/people', text: 'people' }), ' to message.')));
      return;
    }
    const focusedId = document.activeElement?.closest?.('[data-room-id]')?.dataset.roomId;
    replace(list, rooms.map((r) => roomItem(r, r.id === roomId)));
    store.watchPresence('dms', rooms.filter((r) => r.kind === 'dm').map((r) => store.dmPeers.get(r.id)).filter(Boolean));
    if (focusedId) list.querySelector(`[data-room-id="${CSS.escape(focusedId)}"]`)?.focus();
  };
  renderList();
  const onRooms = () => renderList();
  store.addEventListener('rooms', onRooms);
  cleanups.push(() => store.removeEventListener('rooms', onRooms));

  // Arrow keys move between rooms in the list.
  list.addEventListener('keydown', (e) => {
    if (!['ArrowDown', 'ArrowUp', 'Home', 'End'].includes(e.key)) return;
    const links = [...list.querySelectorAll('a[data-room-id]')];
    const i = links.indexOf(document.activeElement);
    if (i < 0) return;
    e.preventDefault();
    const next = e.key === 'ArrowDown' ? Math.min(links.length - 1, i + 1)
      : e.key === 'ArrowUp' ? Math.max(0, i - 1)
        : e.key === 'Home' ? 0 : links.length - 1;
    links[next].focus();
  });

  if (pane === 'room') cleanups.push(mountRoom(paneEl, roomId, target));
  else if (pane === 'search') cleanups.push(mountSearch(paneEl, query));
  else if (pane === 'discover') cleanups.push(mountDiscover(paneEl));
  else if (pane === 'new') mountNewRoom(paneEl);
  else {
    paneEl.appendChild(h('div', { class: 'pane-empty' },
      h('h1', { tabindex: '-1', class: 'visually-hidden', text: 'Chats' }),
      h('p', { class: 'muted', text: 'Pick a room on the left, or start something new.' })));
  }
  return () => cleanups.forEach((fn) => fn && fn());
}

function roomItem(room, active) {
  const title = store.roomTitle(room);
  const last = room.last_message;
  let preview = 'No messages yet';
  if (last) {
    const who = last.sender_id === store.me?.id ? 'You' : store.nameOf(last.sender_id, '');
    preview = last.deleted ? 'Message deleted' : `${who ? `${who}: ` : ''}${attachmentSummary(last)}`;
  }
  const unread = room.unread_count || 0;
  const peerId = room.kind === 'dm' ? store.dmPeers.get(room.id) : null;
  const label = `${title}${room.kind === 'dm' ? ' (direct message)' : ''}${unread ? `, ${unread} unread` : ''}`;
  return h('li', {},
    h('a', {
      href: `#/rooms/${room.id}`, class: `room-item ${active ? 'active' : ''} ${unread ? 'has-unread' : ''}`,
      testid: 'room-item', 'data-room-id': room.id, 'data-room-kind': room.kind, 'aria-current': active ? 'page' : null,
      'aria-label': label,
    },
    room.kind === 'dm'
      ? h('span', { class: 'avatar-with-dot' }, avatar(store.profileData.get(peerId) || { display_name: title }, 'sm'), peerId ? presenceDot(peerId) : null)
      : h('span', { class: 'avatar avatar-sm room-glyph', 'aria-hidden': 'true' }, room.visibility === 'private' ? lockIcon() : '#'),
    h('span', { class: 'room-item-main' },
      h('span', { class: 'room-item-top' },
        h('span', { class: 'room-name', testid: 'room-name', text: title }),
        last ? h('time', { class: 'room-time', datetime: last.created_at, text: formatTime(last.created_at) }) : null),
      h('span', { class: 'room-item-bottom' },
        h('span', { class: 'room-preview', testid: 'room-preview', text: preview }),
        unread ? h('span', { class: 'badge', testid: 'unread-count', 'aria-hidden': 'true', text: unread > 99 ? '99+' : String(unread) }) : null))));
}

/** The message search box of the sidebar: Enter opens the results in the pane. */
function searchBox(value) {
  const input = h('input', { type: 'search', id: 'sidebar-search', name: 'q', testid: 'sidebar-search', placeholder: 'Search messages', autocomplete: 'off', maxlength: '200' });
  input.value = value;
  const form = h('form', { class: 'sidebar-search', role: 'search', 'aria-label': 'Search messages' },
    h('label', { for: 'sidebar-search', class: 'visually-hidden', text: 'Search messages' }), input);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = input.value.trim();
    if (q) location.hash = `#/search?q=${encodeURIComponent(q)}`;
  });
  return form;
}

function lockIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('focusable', 'false');
  const p = document.createElementNS(ns, 'path');
  p.setAttribute('d', 'M4 7V5a4 4 0 1 1 8 0v2h1a1 1 0 0 1 1 1v6a1 1 0 0 1-1 1H3a1 1 0 0 1-1-1V8a1 1 0 0 1 1-1h1zm2 0h4V5a2 2 0 1 0-4 0v2z');
  svg.appendChild(p);
  return svg;
}

function mountDiscover(pane) {
  const results = h('ul', { class: 'card-list', testid: 'discover-list', 'aria-label': 'Public rooms' });
  const status = h('p', { class: 'muted', role: 'status' });
  const input = h('input', { type: 'search', id: 'discover-q', testid: 'discover-search', placeholder: 'Search public rooms', autocomplete: 'off', 'data-autofocus': '' });
  let controller = null;
  const load = async () => {
    controller?.abort();
    controller = new AbortController();
    status.textContent = 'Searching…';
    try {
      const page = await api('/chat/rooms/discover', { query: { q: input.value.trim(), limit: 50 }, signal: controller.signal });
      const items = page?.items || [];
      status.textContent = items.length ? `${items.length} room${items.length === 1 ? '' : 's'}` : 'No public rooms match.';
      replace(results, items.map((r) => {
        const member = store.rooms.has(r.id);
        const btn = member
          ? h('a', { href: `#/rooms/${r.id}`, class: 'btn btn-small', text: 'Open' })
          : h('button', { type: 'button', class: 'btn btn-small btn-primary', testid: 'join-button', text: 'Join' });
        if (!member) {
          btn.addEventListener('click', async () => {
            btn.disabled = true;
            try {
              await store.joinRoom(r.id);
              toast(`Joined ${r.name}.`);
              location.hash = `#/rooms/${r.id}`;
            } catch (err) {
              btn.disabled = false;
              toast(err.humanMessage ? err.humanMessage() : String(err), 'error');
            }
          });
        }
        return h('li', { class: 'card-row', testid: 'discover-item', 'data-room-id': r.id },
          h('div', { class: 'card-row-main' },
            h('strong', { text: `# ${r.name}` }),
            r.topic ? h('p', { class: 'muted', text: r.topic }) : null,
            h('p', { class: 'muted small', text: `${r.member_count ?? '?'} member${r.member_count === 1 ? '' : 's'}` })),
          btn);
      }));
    } catch (err) {
      if (err.name === 'AbortError') return;
      status.textContent = err.humanMessage ? err.humanMessage() : 'Could not load rooms.';
    }
  };
  const debounced = debounce(load, 250);
  input.addEventListener('input', debounced);
  pane.appendChild(h('div', { class: 'pane-page' },
    h('a', { href: '#/rooms', class: 'back-link', text: '← Chats' }),
    h('h1', { tabindex: '-1', text: 'Discover public rooms' }),
    h('div', { class: 'field' }, h('label', { for: 'discover-q', text: 'Search rooms' }), input),
    status, results));
  load();
  return () => { debounced.cancel(); controller?.abort(); };
}

function mountNewRoom(pane) {
  const form = h('form', { class: 'card', testid: 'create-room-form', novalidate: true },
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    field({ label: 'Room name', name: 'name', required: true, testid: 'room-name-input', attrs: { 'data-autofocus': '', maxlength: '100' } }),
    field({ label: 'Topic (optional)', name: 'topic', testid: 'room-topic-input', attrs: { maxlength: '500' } }),
    h('fieldset', { class: 'field' },
      h('legend', { text: 'Who can find and join it?' }),
      h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'visibility', value: 'public', checked: true, testid: 'room-visibility-public' }), ' Public — anyone can discover and join'),
      h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'visibility', value: 'private', testid: 'room-visibility-private' }), ' Private — members are invited')),
    h('button', { type: 'submit', class: 'btn btn-primary', testid: 'create-room-submit', text: 'Create room' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const data = Object.fromEntries(new FormData(form));
    if (!data.name?.trim()) {
      showFormErrors(form, { errors: [{ field: 'name', message: 'Give the room a name.' }], humanMessage: () => 'The room needs a name.' });
      return;
    }
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      const room = await store.createRoom({ name: data.name.trim(), visibility: data.visibility || 'public', topic: data.topic?.trim() });
      toast(`Room ${room.name} created.`);
      location.hash = `#/rooms/${room.id}`;
    } catch (err) {
      showFormErrors(form, err);
      btn.disabled = false;
    }
  });
  pane.appendChild(h('div', { class: 'pane-page' },
    h('a', { href: '#/rooms', class: 'back-link', text: '← Chats' }),
    h('h1', { tabindex: '-1', text: 'New room' }),
    form));
}

export { fetchAll };
