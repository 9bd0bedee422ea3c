// Threads (v1.1): "N replies · last reply <time>" under a thread root in the main timeline,
// and the thread panel: the root, its replies (`GET …/threads/{root_id}/messages`, then live
// `message.*` events whose message has this thread_root_id), pending replies, and its own
// message box sending with `thread_root_id`. Reply counts live in the store
// (`store.threads`), moved by every new reply, so the root's line updates live.
import { h, replace, clear, toast, formatTime, formatDate } from '../../dom.js';
import { api } from '../../api.js';
import { store } from '../../store.js';
import { nameEl } from './state.js';
import { messageBody, attachMentionAutocomplete, memberProfiles, mentionsMe } from './mentions.js';
import { attachmentList } from './attachments.js';
import { reactionChips, openReactionPicker } from './reactions.js';

/** The summary button under a root, or null when it has no replies. */
export function threadSummary(m, onOpen) {
  const { reply_count: count, last_reply_at: last } = store.threads.get(m.id);
  if (!count) return null;
  const lastIso = last ? new Date(last).toISOString() : null;
  return h('button', {
    type: 'button', class: 'thread-summary msg-ctl', tabindex: '-1', testid: 'thread-summary', 'data-count': count,
    'aria-label': `${count} ${count === 1 ? 'reply' : 'replies'}${lastIso ? `, last reply ${formatDate(lastIso)}` : ''}. Open thread`,
    on: { click: () => onOpen(m) },
  },
  h('span', { class: 'thread-count', text: `${count} ${count === 1 ? 'reply' : 'replies'}` }),
  lastIso ? h('span', { class: 'muted', text: ` · last reply ${formatTime(lastIso)}` }) : null);
}

/**
 * The thread panel of a room. `open(root, {focusId})` shows a root's thread (focusId: a reply
 * to scroll to and highlight); `close()`. Returns the panel element too.
 */
export function mountThreadPanel(state) {
  const { roomId, on } = state;
  let root = null;
  const replies = new Map(); // id -> Message
  const nodes = new Map(); // id or p:<client_msg_id> -> li
  let loadToken = 0;

  const heading = h('h2', { tabindex: '-1', text: 'Thread' });
  const closeBtn = h('button', { type: 'button', class: 'btn-link', testid: 'thread-close', 'aria-label': 'Close thread', text: 'Close', on: { click: () => close() } });
  const rootBox = h('div', { class: 'thread-root', testid: 'thread-root' });
  const list = h('ol', { class: 'thread-list', testid: 'thread-list', 'aria-label': 'Replies' });
  const status = h('p', { class: 'muted small', role: 'status', testid: 'thread-status' });
  const input = h('textarea', { id: 'thread-input', class: 'composer-input', testid: 'thread-input', rows: '1', maxlength: '4000', placeholder: 'Reply in thread…' });
  const mentionList = attachMentionAutocomplete(input, () => memberProfiles(state));
  const form = h('form', { class: 'composer thread-composer', testid: 'thread-composer', 'aria-label': 'Reply in thread' },
    mentionList,
    h('div', { class: 'composer-row' },
      h('label', { for: 'thread-input', class: 'visually-hidden', text: 'Reply' }),
      input,
      h('button', { type: 'submit', class: 'btn btn-primary', testid: 'thread-send', text: 'Reply' })));
  const panel = h('aside', { id: 'thread-panel', class: 'side-panel thread-panel', testid: 'thread-panel', 'aria-labelledby': 'thread-heading', hidden: true },
    h('div', { class: 'members-head' }, heading, closeBtn),
    rootBox, status, list, form);
  heading.id = 'thread-heading';
  state.registerPanel('thread', ({ quiet } = {}) => close({ quiet }));

  function renderItem(m) {
    const li = h('li', { class: `thread-message ${mentionsMe(m) ? 'mentions-me' : ''} ${m.deleted ? 'deleted' : ''}`, testid: 'thread-message', tabindex: '-1', 'data-message-id': m.id, 'data-seq': m.seq, 'data-state': 'sent' },
      h('div', { class: 'message-meta' }, nameEl(m.sender_id), h('time', { datetime: m.created_at, title: formatDate(m.created_at), text: formatTime(m.created_at) }),
        m.edited_at && !m.deleted ? h('span', { class: 'edited', text: '(edited)' }) : null),
      m.deleted ? h('p', { class: 'message-body', testid: 'message-body', text: 'This message was deleted.' }) : messageBody(m),
      attachmentList(state, m),
      reactionChips(roomId, m));
    // The panel's list is short: every control is in the tab order (the main list's are
    // only while their message has focus).
    li.querySelectorAll('.msg-ctl').forEach((b) => b.setAttribute('tabindex', '0'));
    if (!m.deleted) {
      const react = h('button', { type: 'button', class: 'btn-link', testid: 'react-button', 'aria-label': 'Add a reaction', text: 'React' });
      react.addEventListener('click', () => openReactionPicker(roomId, m, react));
      li.appendChild(h('div', { class: 'message-actions always' }, react));
    }
    return li;
  }

  function renderRoot() {
    if (!root) { clear(rootBox); return; }
    const item = renderItem(root);
    item.classList.add('is-root');
    replace(rootBox, item);
  }

  /** Show a reply (`seed`: a copy from the server, whose reactions the store takes). */
  function upsert(m, seed = true) {
    if (!root || m.thread_root_id !== root.id) return;
    if (seed) store.seedMessage(m);
    replies.set(m.id, m);
    const li = renderItem(m);
    const old = nodes.get(m.id);
    if (old) old.replaceWith(li);
    else {
      let before = null;
      for (const node of list.children) {
        if ((node.dataset.seq && Number(node.dataset.seq) > m.seq) || node.dataset.state !== 'sent') { before = node; break; }
      }
      list.insertBefore(li, before);
    }
    nodes.set(m.id, li);
    if (m.client_msg_id && nodes.has(`p:${m.client_msg_id}`)) { nodes.get(`p:${m.client_msg_id}`).remove(); nodes.delete(`p:${m.client_msg_id}`); }
    status.textContent = `${replies.size} ${replies.size === 1 ? 'reply' : 'replies'}`;
  }

  function renderPending() {
    if (!root) return;
    const pend = [...store.pendingFor(roomId).values()].filter((p) => p.thread_root_id === root.id);
    const keep = new Set(pend.map((p) => `p:${p.client_msg_id}`));
    for (const [key, node] of [...nodes]) if (key.startsWith('p:') && !keep.has(key)) { node.remove(); nodes.delete(key); }
    for (const p of pend) {
      if ([...replies.values()].some((m) => m.client_msg_id === p.client_msg_id && m.sender_id === p.sender_id)) continue;
      const li = h('li', { class: `thread-message pending ${p.state === 'failed' ? 'failed' : ''}`, testid: 'thread-message', 'data-state': p.state },
        h('div', { class: 'message-meta' }, nameEl(p.sender_id), h('span', { class: 'pending-label', text: p.state === 'failed' ? `Not sent: ${p.error || 'error'}` : 'Sending…' })),
        h('p', { class: 'message-body', testid: 'message-body', text: p.body }));
      const key = `p:${p.client_msg_id}`;
      if (nodes.has(key)) nodes.get(key).replaceWith(li); else list.appendChild(li);
      nodes.set(key, li);
    }
  }

  async function open(m, { focusId = null } = {}) {
    state.panelOpening('thread');
    root = m;
    replies.clear();
    nodes.clear();
    clear(list);
    panel.hidden = false;
    panel.dataset.rootId = m.id;
    renderRoot();
    status.textContent = 'Loading replies…';
    const token = ++loadToken;
    if (!focusId) heading.focus();
    try {
      let after = 0;
      for (let i = 0; i < 20; i++) {
        const page = await api(`/chat/rooms/${roomId}/threads/${m.id}/messages`, { query: { after, limit: 100 } });
        if (token !== loadToken) return;
        for (const r of page?.items || []) { upsert(r); after = Math.max(after, r.seq); }
        if (!page?.has_more) break;
      }
      if (!replies.size) status.textContent = 'No replies yet.';
      renderPending();
      if (focusId && nodes.has(focusId)) {
        const li = nodes.get(focusId);
        li.classList.add('highlighted');
        li.dataset.highlighted = 'true';
        li.scrollIntoView({ block: 'center' });
        li.focus();
      } else {
        list.lastElementChild?.scrollIntoView({ block: 'nearest' });
      }
    } catch (err) {
      if (token === loadToken) status.textContent = err.humanMessage ? err.humanMessage() : 'Could not load the thread.';
    }
  }

  function close({ quiet = false } = {}) {
    if (panel.hidden) return;
    loadToken++;
    panel.hidden = true;
    const id = root?.id;
    root = null;
    delete panel.dataset.rootId;
    if (!quiet && id) document.querySelector(`.message-list [data-message-id="${CSS.escape(id)}"]`)?.focus();
  }

  function send() {
    const text = input.value.trim();
    if (!text || !root) return;
    if ([...text].length > 4000) { toast('Messages can be at most 4000 characters.', 'error'); return; }
    store.sendMessage(roomId, text, null, root.id);
    input.value = '';
    input.focus();
  }
  form.addEventListener('submit', (e) => { e.preventDefault(); send(); });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  panel.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !e.defaultPrevented && !e.target.closest('.reaction-picker')) { e.preventDefault(); close(); }
  });

  on(store, 'room-event', (e) => {
    if (e.detail.room_id !== roomId || !root) return;
    const ev = e.detail.event;
    if (ev.message?.id === root.id) { root = ev.message; store.seedMessage(root); renderRoot(); return; }
    if (ev.message) { upsert(ev.message); return; }
    if (ev.message_id === root.id) renderRoot();
    else if (ev.message_id && replies.has(ev.message_id)) upsert(replies.get(ev.message_id), false);
  });
  on(store, 'room-message', (e) => { if (e.detail.room_id === roomId && e.detail.message.thread_root_id) upsert(e.detail.message); });
  on(store, 'pending', (e) => { if (e.detail.room_id === roomId) renderPending(); });

  return { panel, open, close, get rootId() { return root?.id || null; } };
}
