// Mentions (v1.1): message bodies with the server-resolved `@username` / `@room` mentions
// highlighted (a mention of me stands out), and the `@` autocomplete of room members in a
// message box (a combobox: arrows move, Enter or Tab picks, Escape closes).
import { h, replace } from '../../dom.js';
import { store, mentionSegments, mentionQuery, mentionCandidates } from '../../store.js';

/**
 * The body of a message as a `<p>`: text, with each mention the server resolved (its user id
 * is in `mentions`) as a highlighted span. Profiles of mentioned users not known yet are
 * fetched, and the body is redrawn when they arrive.
 */
export function messageBody(m, attrs = {}) {
  const p = h('p', { class: 'message-body', testid: 'message-body', ...attrs });
  const fill = () => {
    const me = store.me?.id;
    const segs = mentionSegments(m.body, m.mentions, (id) => (id === me ? store.me?.username : store.profileData.get(id)?.username));
    replace(p, segs.map((s) => {
      if (!s.mention) return s.text;
      const mine = s.mention === me || (s.mention === 'room' && (m.mentions || []).includes(me));
      const who = s.mention === 'room' ? 'everyone in the room' : store.nameOf(s.mention, s.text);
      return h('span', { class: `mention ${mine ? 'mention-me' : ''}`, testid: 'mention', 'data-user-id': s.mention, title: `Mentions ${who}`, text: s.text });
    }));
  };
  fill();
  const unknown = (m.mentions || []).filter((id) => id !== store.me?.id && !store.profileData.has(id));
  if (unknown.length) Promise.all(unknown.map((id) => store.profile(id).catch(() => null))).then(() => { if (p.isConnected) fill(); });
  return p;
}

/** Whether a message mentions me (directly or by @room). */
export const mentionsMe = (m) => !!store.me?.id && (m.mentions || []).includes(store.me.id) && m.sender_id !== store.me.id;

let acSeq = 0;

/**
 * `@` autocomplete on a textarea: `members()` gives the room's members as profiles
 * `{id, username, display_name}`. Call before the box's own keydown handler is added, so that
 * Enter/Tab/Escape pick or close here first. Returns the listbox element to place.
 */
export function attachMentionAutocomplete(input, members) {
  const id = `mention-list-${++acSeq}`;
  const listbox = h('ul', { id, class: 'mention-list', role: 'listbox', testid: 'mention-list', 'aria-label': 'People to mention', hidden: true });
  input.setAttribute('role', 'combobox');
  input.setAttribute('aria-autocomplete', 'list');
  input.setAttribute('aria-controls', id);
  input.setAttribute('aria-expanded', 'false');
  let items = [];
  let active = 0;
  let query = null;

  function close() {
    listbox.hidden = true;
    items = [];
    query = null;
    input.setAttribute('aria-expanded', 'false');
    input.removeAttribute('aria-activedescendant');
  }

  function render() {
    replace(listbox, items.map((p, i) => h('li', {
      id: `${id}-${i}`, role: 'option', class: 'mention-option', testid: 'mention-option', 'data-username': p.username,
      'aria-selected': String(i === active),
      on: { mousedown: (e) => { e.preventDefault(); pick(i); } },
    }, h('strong', { text: p.display_name || p.username }), ' ', h('span', { class: 'muted', text: `@${p.username}` }))));
    input.setAttribute('aria-activedescendant', `${id}-${active}`);
  }

  function update() {
    query = mentionQuery(input.value, input.selectionStart ?? input.value.length);
    if (!query) { close(); return; }
    items = mentionCandidates(members(), query.query, store.me?.id);
    if (!items.length) { close(); return; }
    active = Math.min(active, items.length - 1);
    listbox.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    render();
  }

  function pick(i) {
    const p = items[i];
    if (!p || !query) return;
    const caret = input.selectionStart ?? input.value.length;
    const insert = `@${p.username} `;
    input.value = input.value.slice(0, query.start) + insert + input.value.slice(caret);
    const at = query.start + insert.length;
    input.setSelectionRange(at, at);
    close();
    input.dispatchEvent(new Event('input', { bubbles: true }));
    input.focus();
  }

  input.addEventListener('input', () => { active = 0; update(); });
  input.addEventListener('click', update);
  // Closed a moment after focus leaves (a click on an option lands first), unless focus
  // came back meanwhile: sending re-focuses the box, and a list opened by typing right
  // after must stay open.
  input.addEventListener('blur', () => setTimeout(() => { if (document.activeElement !== input) close(); }, 150));
  input.addEventListener('keydown', (e) => {
    if (listbox.hidden || !items.length) return;
    let handled = true;
    if (e.key === 'ArrowDown') { active = (active + 1) % items.length; render(); }
    else if (e.key === 'ArrowUp') { active = (active - 1 + items.length) % items.length; render(); }
    else if ((e.key === 'Enter' && !e.shiftKey) || e.key === 'Tab') pick(active);
    else if (e.key === 'Escape') close();
    else handled = false;
    if (handled) { e.preventDefault(); e.stopImmediatePropagation(); }
  });
  return listbox;
}

/** The members of a room as profiles (those known), for the autocomplete. */
export function memberProfiles(state) {
  return state.members.map((m) => {
    if (m.user_id === store.me?.id) return { id: m.user_id, username: store.me.username, display_name: store.me.display_name };
    const p = store.profileData.get(m.user_id);
    return p ? { id: m.user_id, username: p.username, display_name: p.display_name } : null;
  }).filter(Boolean);
}
