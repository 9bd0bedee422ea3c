// Message search (v1.1): `GET /chat/search?q=` over the rooms I am in, results with the room,
// the sender and the body with the matched words highlighted (the `highlights` ranges count
// Unicode scalar values: store.highlightSegments slices by code point). Choosing a result
// opens its room around that message (`#/rooms/<id>?around=<seq>&msg=<id>`), or a thread
// reply's thread. Arrow keys move between results.
import { h, replace, debounce, formatDate } from '../../dom.js';
import { api } from '../../api.js';
import { store, highlightSegments } from '../../store.js';
import { nameEl } from './state.js';

/** Long bodies are cut to this many characters around the first match. */
const SNIPPET_CHARS = 240;

export function resultLink(r) {
  const m = r.message;
  const roomId = r.room_id || m.room_id;
  return m.thread_root_id
    ? `#/rooms/${roomId}?thread=${m.thread_root_id}&msg=${m.id}`
    : `#/rooms/${roomId}?around=${m.seq}&msg=${m.id}`;
}

/** The body as text and `<mark>` parts, cut around the first highlight when long. */
export function snippet(body, highlights) {
  const chars = Array.from(body || '');
  let from = 0;
  let ranges = highlights || [];
  if (chars.length > SNIPPET_CHARS) {
    const first = Math.min(...ranges.map((x) => x.start), chars.length);
    from = Math.max(0, Math.min(first - 60, chars.length - SNIPPET_CHARS));
    ranges = ranges.map((x) => ({ start: x.start - from, end: x.end - from }));
  }
  const text = chars.slice(from, from + SNIPPET_CHARS).join('');
  const parts = highlightSegments(text, ranges).map((s) => (s.hit ? h('mark', { testid: 'search-hit', text: s.text }) : s.text));
  return [from > 0 ? '…' : '', ...parts, from + SNIPPET_CHARS < chars.length ? '…' : ''];
}

export function mountSearch(pane, initial = '') {
  const input = h('input', { type: 'search', id: 'message-search-q', name: 'q', testid: 'message-search-input', placeholder: 'Search messages', autocomplete: 'off', 'data-autofocus': '', maxlength: '200' });
  input.value = initial;
  const status = h('p', { class: 'muted', role: 'status', testid: 'message-search-status' });
  const results = h('ul', { class: 'card-list search-results', testid: 'message-search-results', 'aria-label': 'Search results' });
  const more = h('div', {});
  let controller = null;
  let cursor = null;

  async function run({ append = false } = {}) {
    const q = input.value.trim();
    controller?.abort();
    if (!q) { status.textContent = 'Type words to find in your rooms.'; replace(results); replace(more); return; }
    if (!append) history.replaceState(history.state, '', `#/search?q=${encodeURIComponent(q)}`);
    controller = new AbortController();
    status.textContent = 'Searching…';
    try {
      const page = await api('/chat/search', { query: { q, limit: 20, cursor: append ? cursor : undefined }, signal: controller.signal });
      const items = page?.items || [];
      cursor = page?.next_cursor || null;
      const rows = items.map(row);
      if (append) results.append(...rows); else replace(results, rows);
      const n = results.children.length;
      status.textContent = n ? `${n}${cursor ? '+' : ''} message${n === 1 ? '' : 's'} found` : 'No messages match.';
      replace(more, cursor ? h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'message-search-more', text: 'More results', on: { click: () => run({ append: true }) } }) : null);
    } catch (err) {
      if (err.name === 'AbortError') return;
      status.textContent = err.humanMessage ? err.humanMessage() : 'Could not search.';
    }
  }

  function row(r) {
    const m = r.message;
    const room = store.rooms.get(r.room_id || m.room_id);
    return h('li', { class: 'card-row search-result', testid: 'message-search-result', 'data-message-id': m.id },
      h('a', { href: resultLink(r), class: 'search-result-link', testid: 'message-search-link' },
        h('span', { class: 'search-result-meta muted small' },
          h('strong', { text: room ? store.roomTitle(room) : 'A room' }), ' · ', nameEl(m.sender_id), ' · ',
          h('time', { datetime: m.created_at, text: formatDate(m.created_at) }),
          m.thread_root_id ? ' · in a thread' : ''),
        h('span', { class: 'search-snippet', testid: 'message-search-snippet' }, snippet(m.body, r.highlights))));
  }

  const debounced = debounce(() => run(), 300);
  input.addEventListener('input', debounced);
  const form = h('form', { class: 'field', role: 'search', on: { submit: (e) => { e.preventDefault(); debounced.cancel(); run(); } } },
    h('label', { for: 'message-search-q', text: 'Search messages' }), input);
  results.addEventListener('keydown', (e) => {
    if (!['ArrowDown', 'ArrowUp', 'Home', 'End'].includes(e.key)) return;
    const links = [...results.querySelectorAll('a')];
    const i = links.indexOf(document.activeElement);
    if (i < 0) return;
    e.preventDefault();
    const next = e.key === 'ArrowDown' ? Math.min(links.length - 1, i + 1) : e.key === 'ArrowUp' ? Math.max(0, i - 1) : e.key === 'Home' ? 0 : links.length - 1;
    links[next].focus();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown') { const first = results.querySelector('a'); if (first) { e.preventDefault(); first.focus(); } }
  });
  pane.appendChild(h('div', { class: 'pane-page', testid: 'message-search-page' },
    h('a', { href: '#/rooms', class: 'back-link', text: '← Chats' }),
    h('h1', { tabindex: '-1', text: 'Search messages' }),
    form, status, results, more));
  run();
  return () => { debounced.cancel(); controller?.abort(); };
}
