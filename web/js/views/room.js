// One room: message history (infinite scroll up), live updates, optimistic sending,
// edit/delete/reply, typing indicator, read markers and the members panel.
import { h, replace, clear, formatTime, formatDate, toast, debounce, avatar } from '../dom.js';
import { api } from '../api.js';
import { store, fetchAll } from '../store.js';

const PAGE = 50;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 6000;

export function mountRoom(pane, roomId) {
  const cleanups = [];
  const on = (target, type, fn) => { target.addEventListener(type, fn); cleanups.push(() => target.removeEventListener(type, fn)); };
  store.activeRoomId = roomId;
  cleanups.push(() => { if (store.activeRoomId === roomId) store.activeRoomId = null; });

  let room = store.rooms.get(roomId) || null;
  const msgs = new Map(); // id -> Message
  const nodes = new Map(); // id or "p:<client_msg_id>" -> <li>
  let hasMore = false;
  let loadingOlder = false;
  let myRole = 'member';
  let members = [];
  let replyTo = null; // Message
  let editing = null; // message id
  let disposed = false;

  // ----- skeleton -----
  const title = h('h1', { class: 'room-title', tabindex: '-1', testid: 'room-title', text: room ? store.roomTitle(room) : 'Loading…' });
  const topic = h('p', { class: 'room-topic muted', testid: 'room-topic' });
  const membersBtn = h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'members-toggle', 'aria-expanded': 'false', 'aria-controls': 'members-panel', text: 'Members' });
  const header = h('header', { class: 'room-header' },
    h('a', { href: '#/rooms', class: 'back-link', 'aria-label': 'Back to chats', text: '←' }),
    h('div', { class: 'room-heading' }, title, topic),
    membersBtn);

  const historyStatus = h('li', { class: 'history-status', 'aria-hidden': 'false' });
  const list = h('ol', { class: 'message-list', testid: 'message-list', 'aria-label': 'Messages', tabindex: '0', 'aria-describedby': 'msg-kbd-hint' }, historyStatus);
  const scroller = h('div', { class: 'message-scroller', testid: 'message-scroller' }, list);
  const kbdHint = h('p', { id: 'msg-kbd-hint', class: 'visually-hidden', text: 'Use the up and down arrow keys to move between messages, Escape to return to the message box.' });
  const typingEl = h('p', { class: 'typing-indicator', testid: 'typing-indicator', 'aria-live': 'polite' });
  const replyBar = h('div', { class: 'reply-bar', testid: 'reply-bar', hidden: true });
  const input = h('textarea', { id: 'composer-input', class: 'composer-input', testid: 'composer-input', rows: '1', placeholder: 'Write a message…', maxlength: '4000', 'data-autofocus': '', 'aria-describedby': 'composer-hint' });
  const sendBtn = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'send-button', text: 'Send' });
  const composer = h('form', { class: 'composer', testid: 'composer', 'aria-label': 'Send a message' },
    replyBar,
    h('div', { class: 'composer-row' },
      h('label', { for: 'composer-input', class: 'visually-hidden', text: 'Message' }),
      input, sendBtn),
    h('p', { id: 'composer-hint', class: 'visually-hidden', text: 'Enter sends, Shift+Enter adds a new line, Up arrow edits your last message.' }));
  const membersPanel = h('aside', { id: 'members-panel', class: 'members-panel', testid: 'members-panel', 'aria-label': 'Members', hidden: true });
  const jumpBtn = h('button', { type: 'button', class: 'btn btn-small jump-latest', testid: 'jump-latest', hidden: true, text: 'New messages ↓' });
  const body = h('div', { class: 'room-body' },
    h('div', { class: 'conversation' }, scroller, jumpBtn, kbdHint, typingEl, composer),
    membersPanel);
  replace(pane, h('div', { class: 'room-view', testid: 'room-view', 'data-room-id': roomId }, header, body));

  // ----- rendering -----
  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  const scrollToBottom = () => { scroller.scrollTop = scroller.scrollHeight; };

  function nameEl(userId) {
    const el = h('span', { class: 'sender', 'data-user-id': userId, text: store.nameOf(userId, '…') });
    if (!store.profileData.has(userId) && userId !== store.me?.id) {
      store.profile(userId).then((p) => { el.textContent = p ? (p.display_name || p.username) : 'Unknown user'; }).catch(() => {});
    }
    return el;
  }

  function quote(replyId) {
    const orig = msgs.get(replyId);
    const text = orig ? (orig.deleted ? 'Message deleted' : orig.body) : 'an earlier message';
    return h('a', { href: '#', class: 'reply-quote', tabindex: '-1', 'data-reply-to': replyId, on: { click: (e) => { e.preventDefault(); focusMessage(replyId); } } },
      h('span', { class: 'reply-quote-label', text: '↪ ' }),
      orig ? nameEl(orig.sender_id) : null,
      orig ? ': ' : '',
      h('span', { class: 'reply-quote-text', text: text.length > 120 ? `${text.slice(0, 120)}…` : text }));
  }

  function canDelete(m) {
    return m.sender_id === store.me?.id || myRole === 'owner' || myRole === 'admin';
  }

  function renderMessage(m) {
    const mine = m.sender_id === store.me?.id;
    const li = h('li', {
      class: `message ${mine ? 'mine' : ''} ${m.deleted ? 'deleted' : ''}`, testid: 'message', tabindex: '-1',
      'data-message-id': m.id, 'data-seq': m.seq, 'data-client-msg-id': m.client_msg_id || null, 'data-state': 'sent',
      'data-sender-id': m.sender_id,
    });
    const meta = h('div', { class: 'message-meta' },
      nameEl(m.sender_id),
      h('time', { datetime: m.created_at, title: formatDate(m.created_at), text: formatTime(m.created_at) }),
      m.edited_at && !m.deleted ? h('span', { class: 'edited', title: formatDate(m.edited_at), text: '(edited)' }) : null);
    li.appendChild(meta);
    if (m.reply_to) li.appendChild(quote(m.reply_to));
    if (editing === m.id) {
      li.appendChild(editForm(m));
    } else {
      li.appendChild(h('p', { class: 'message-body', testid: 'message-body', text: m.deleted ? 'This message was deleted.' : m.body }));
    }
    if (!m.deleted && editing !== m.id) {
      const actions = h('div', { class: 'message-actions', role: 'group', 'aria-label': 'Message actions' },
        h('button', { type: 'button', class: 'btn-link', tabindex: '-1', testid: 'reply-button', on: { click: () => startReply(m) }, text: 'Reply' }),
        mine ? h('button', { type: 'button', class: 'btn-link', tabindex: '-1', testid: 'edit-button', on: { click: () => startEdit(m.id) }, text: 'Edit' }) : null,
        canDelete(m) ? h('button', { type: 'button', class: 'btn-link danger', tabindex: '-1', testid: 'delete-button', on: { click: () => deleteMessage(m) }, text: 'Delete' }) : null);
      li.appendChild(actions);
    }
    return li;
  }

  function renderPending(p) {
    const li = h('li', {
      class: `message mine pending ${p.state === 'failed' ? 'failed' : ''}`, testid: 'message', tabindex: '-1',
      'data-client-msg-id': p.client_msg_id, 'data-state': p.state, 'data-sender-id': p.sender_id,
    },
    h('div', { class: 'message-meta' },
      nameEl(p.sender_id),
      h('span', { class: 'pending-label', text: p.state === 'failed' ? `Not sent: ${p.error || 'error'}` : 'Sending…' })),
    p.reply_to ? quote(p.reply_to) : null,
    h('p', { class: 'message-body', testid: 'message-body', text: p.body }));
    if (p.state === 'failed') {
      li.appendChild(h('div', { class: 'message-actions always' },
        h('button', { type: 'button', class: 'btn-link', testid: 'retry-button', on: { click: () => store.retryPending(roomId, p.client_msg_id) }, text: 'Retry' }),
        h('button', { type: 'button', class: 'btn-link danger', on: { click: () => store.discardPending(roomId, p.client_msg_id) }, text: 'Discard' })));
    }
    return li;
  }

  /** Insert or update one confirmed message, keeping seq order. */
  function upsert(m, { stick = atBottom() } = {}) {
    if (!m || m.room_id !== roomId) return;
    const prev = msgs.get(m.id);
    if (prev && !isNewer(m, prev)) return;
    msgs.set(m.id, m);
    const hadFocus = nodes.get(m.id)?.contains(document.activeElement);
    const li = renderMessage(m);
    const old = nodes.get(m.id);
    if (old) {
      old.replaceWith(li);
    } else {
      // Before the first message with a greater seq, else before the pending ones, else at the end.
      let before = null;
      for (const node of list.children) {
        if (node.dataset.seq && Number(node.dataset.seq) > m.seq) { before = node; break; }
        if (node.dataset.state === 'pending' || node.dataset.state === 'failed') { before = node; break; }
      }
      list.insertBefore(li, before);
    }
    nodes.set(m.id, li);
    // The acknowledged version replaces the optimistic one.
    if (m.client_msg_id && nodes.has(`p:${m.client_msg_id}`)) {
      nodes.get(`p:${m.client_msg_id}`).remove();
      nodes.delete(`p:${m.client_msg_id}`);
    }
    if (hadFocus) li.focus();
    // Replies quoting this message show its new text.
    list.querySelectorAll(`.reply-quote[data-reply-to="${CSS.escape(m.id)}"]`).forEach((q) => q.replaceWith(quote(m.id)));
    if (stick) scrollToBottom();
  }

  function renderPendingAll() {
    const stick = atBottom();
    const pend = store.pendingFor(roomId);
    for (const [key, node] of [...nodes]) {
      if (key.startsWith('p:') && !pend.has(key.slice(2))) { node.remove(); nodes.delete(key); }
    }
    for (const p of pend.values()) {
      // Already confirmed (ack raced the event): don't show it twice.
      if ([...msgs.values()].some((m) => m.client_msg_id === p.client_msg_id && m.sender_id === p.sender_id)) {
        store.clearPending(roomId, p.client_msg_id);
        continue;
      }
      const key = `p:${p.client_msg_id}`;
      const li = renderPending(p);
      if (nodes.has(key)) nodes.get(key).replaceWith(li); else list.appendChild(li);
      nodes.set(key, li);
    }
    if (stick) scrollToBottom();
  }

  function updateHistoryStatus() {
    clear(historyStatus);
    if (hasMore) {
      historyStatus.appendChild(h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'load-older', on: { click: () => loadOlder() }, text: loadingOlder ? 'Loading…' : 'Load older messages' }));
    } else {
      historyStatus.appendChild(h('span', { class: 'muted small', text: room ? `This is the beginning of ${store.roomTitle(room)}.` : '' }));
    }
  }

  // ----- history -----
  async function loadLatest() {
    const page = await api(`/chat/rooms/${roomId}/messages`, { query: { limit: PAGE } });
    if (disposed) return;
    hasMore = !!page?.has_more;
    for (const m of page?.items || []) upsert(m, { stick: false });
    updateHistoryStatus();
    renderPendingAll();
    scrollToBottom();
    markRead();
  }

  async function loadOlder() {
    if (loadingOlder || !hasMore) return;
    const oldest = Math.min(...[...msgs.values()].map((m) => m.seq));
    if (!Number.isFinite(oldest)) return;
    loadingOlder = true;
    updateHistoryStatus();
    const prevHeight = scroller.scrollHeight;
    const prevTop = scroller.scrollTop;
    try {
      const page = await api(`/chat/rooms/${roomId}/messages`, { query: { before: oldest, limit: PAGE } });
      if (disposed) return;
      hasMore = !!page?.has_more;
      for (const m of page?.items || []) upsert(m, { stick: false });
      // Keep the view where it was: the content grew above it.
      scroller.scrollTop = prevTop + (scroller.scrollHeight - prevHeight);
    } catch (err) {
      toast(err.humanMessage ? err.humanMessage() : 'Could not load older messages.', 'error');
    } finally {
      loadingOlder = false;
      updateHistoryStatus();
    }
  }

  on(scroller, 'scroll', () => {
    if (scroller.scrollTop < 120) loadOlder();
    if (atBottom()) { markRead(); jumpBtn.hidden = true; }
  });
  on(jumpBtn, 'click', () => { scrollToBottom(); jumpBtn.hidden = true; input.focus(); });

  function markRead() {
    if (document.visibilityState !== 'visible' || !atBottom()) return;
    const r = store.rooms.get(roomId);
    const maxSeq = Math.max(r?.lastSeq || 0, ...[...msgs.values()].map((m) => m.seq));
    if (maxSeq > 0) store.markRead(roomId, maxSeq);
  }
  on(document, 'visibilitychange', () => markRead());

  // ----- live updates -----
  on(store, 'room-event', (e) => {
    if (e.detail.room_id !== roomId) return;
    const ev = e.detail.event;
    if (ev.message) {
      const wasAtBottom = atBottom();
      upsert(ev.message, { stick: wasAtBottom });
      if (ev.kind === 'message.created' && !wasAtBottom && ev.message.sender_id !== store.me?.id) jumpBtn.hidden = false;
      if (ev.kind === 'message.created') {
        clearTypist(ev.message.sender_id);
        markRead();
      }
    } else if (ev.kind?.startsWith('member.')) {
      loadMembers();
    }
  });
  on(store, 'room-message', (e) => { if (e.detail.room_id === roomId) upsert(e.detail.message); });
  on(store, 'pending', (e) => { if (e.detail.room_id === roomId) renderPendingAll(); });
  on(store, 'removed', (e) => {
    if (e.detail.room_id !== roomId) return;
    if (location.hash.startsWith(`#/rooms/${roomId}`)) location.hash = '#/rooms';
  });
  on(store, 'rooms', () => {
    const r = store.rooms.get(roomId);
    if (r) { room = r; title.textContent = store.roomTitle(r); }
  });

  // ----- typing -----
  const typists = new Map(); // user id -> timeout
  function renderTyping() {
    const names = [...typists.keys()].map((id) => store.nameOf(id));
    typingEl.textContent = names.length === 0 ? ''
      : names.length === 1 ? `${names[0]} is typing…`
        : names.length === 2 ? `${names[0]} and ${names[1]} are typing…`
          : 'Several people are typing…';
  }
  function clearTypist(id) {
    clearTimeout(typists.get(id));
    if (typists.delete(id)) renderTyping();
  }
  on(store, 'typing', (e) => {
    if (e.detail.room_id !== roomId) return;
    const id = e.detail.user_id;
    clearTimeout(typists.get(id));
    typists.set(id, setTimeout(() => clearTypist(id), TYPING_SHOW_MS));
    renderTyping();
  });
  cleanups.push(() => typists.forEach((t) => clearTimeout(t)));
  // Leading and trailing throttle: the server drops typing notices that come faster than its
  // own throttle, so a notice is never sent sooner than TYPING_SEND_EVERY_MS after the last
  // one; input in between is reported when that interval is over (if the text is still there).
  let lastTypingSent = -Infinity;
  let typingTimer = null;
  function sendTyping() {
    typingTimer = null;
    if (!input.value.trim()) return;
    lastTypingSent = Date.now();
    store.rt?.typing(roomId);
  }
  cleanups.push(() => clearTimeout(typingTimer));
  on(input, 'input', () => {
    autosize();
    if (!input.value.trim() || typingTimer) return;
    const wait = lastTypingSent + TYPING_SEND_EVERY_MS - Date.now();
    if (wait <= 0) sendTyping();
    else typingTimer = setTimeout(sendTyping, wait);
  });
  function autosize() {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  }

  // ----- composer -----
  function startReply(m) {
    replyTo = m;
    replace(replyBar,
      h('span', { class: 'reply-bar-text' }, 'Replying to ', nameEl(m.sender_id), ': ', h('q', { text: m.body.length > 80 ? `${m.body.slice(0, 80)}…` : m.body })),
      h('button', { type: 'button', class: 'btn-link', testid: 'cancel-reply', 'aria-label': 'Cancel reply', on: { click: cancelReply }, text: 'Cancel' }));
    replyBar.hidden = false;
    input.focus();
  }
  function cancelReply() {
    replyTo = null;
    replyBar.hidden = true;
    clear(replyBar);
  }

  function send() {
    const text = input.value.trim();
    if (!text) return;
    if ([...text].length > 4000) { toast('Messages can be at most 4000 characters.', 'error'); return; }
    store.sendMessage(roomId, text, replyTo?.id);
    input.value = '';
    autosize();
    cancelReply();
    clearTimeout(typingTimer);
    typingTimer = null;
    scrollToBottom();
    input.focus();
  }
  on(composer, 'submit', (e) => { e.preventDefault(); send(); });
  on(input, 'keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === 'Escape' && replyTo) {
      cancelReply();
    } else if (e.key === 'ArrowUp' && !input.value) {
      const mine = [...msgs.values()].filter((m) => m.sender_id === store.me?.id && !m.deleted).sort((a, b) => b.seq - a.seq)[0];
      if (mine) { e.preventDefault(); startEdit(mine.id); }
    }
  });

  // ----- edit / delete -----
  function editForm(m) {
    const ta = h('textarea', { class: 'edit-input', testid: 'edit-input', 'aria-label': 'Edit message', rows: '2', maxlength: '4000' });
    ta.value = m.body;
    const form = h('form', { class: 'edit-form', testid: 'edit-form' },
      ta,
      h('div', { class: 'edit-actions' },
        h('button', { type: 'submit', class: 'btn btn-small btn-primary', testid: 'edit-save', text: 'Save' }),
        h('button', { type: 'button', class: 'btn btn-small btn-ghost', on: { click: () => stopEdit(m.id) }, text: 'Cancel' })));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const text = ta.value.trim();
      if (!text) { toast('A message cannot be empty — delete it instead.', 'error'); return; }
      if (text === m.body) { stopEdit(m.id); return; }
      form.querySelectorAll('button, textarea').forEach((el) => { el.disabled = true; });
      try {
        const updated = await api(`/chat/rooms/${roomId}/messages/${m.id}`, { method: 'PATCH', body: { body: text } });
        editing = null;
        upsert(updated);
        rerender(m.id);
        nodes.get(m.id)?.focus();
      } catch (err) {
        toast(err.humanMessage ? err.humanMessage() : 'Could not edit the message.', 'error');
        form.querySelectorAll('button, textarea').forEach((el) => { el.disabled = false; });
      }
    });
    ta.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') { e.preventDefault(); stopEdit(m.id); }
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
    });
    setTimeout(() => { ta.focus(); ta.setSelectionRange(ta.value.length, ta.value.length); }, 0);
    return form;
  }
  function rerender(id) {
    const m = msgs.get(id);
    const old = nodes.get(id);
    if (!m || !old) return;
    const li = renderMessage(m);
    old.replaceWith(li);
    nodes.set(id, li);
  }
  function startEdit(id) {
    const prev = editing;
    editing = id;
    if (prev) rerender(prev);
    rerender(id);
  }
  function stopEdit(id) {
    editing = null;
    rerender(id);
    nodes.get(id)?.focus();
  }
  async function deleteMessage(m) {
    if (!window.confirm('Delete this message? This cannot be undone.')) return;
    try {
      await api(`/chat/rooms/${roomId}/messages/${m.id}`, { method: 'DELETE' });
      upsert({ ...m, deleted: true, body: '', edited_at: new Date().toISOString() });
      toast('Message deleted.');
    } catch (err) {
      toast(err.humanMessage ? err.humanMessage() : 'Could not delete the message.', 'error');
    }
  }

  // ----- keyboard navigation in the message list -----
  // The list is one tab stop; a message's action buttons join the tab order only while
  // that message (or one of its buttons) has focus.
  const setActionsTabbable = (li, on) => li?.querySelectorAll('.message-actions button, .reply-quote')
    .forEach((b) => b.setAttribute('tabindex', on ? '0' : '-1'));
  on(list, 'focusin', (e) => setActionsTabbable(e.target.closest('li.message'), true));
  on(list, 'focusout', (e) => {
    const li = e.target.closest('li.message');
    if (li && !li.contains(e.relatedTarget)) setActionsTabbable(li, false);
  });
  function focusMessage(id) {
    const li = nodes.get(id);
    if (li) { li.focus(); li.scrollIntoView({ block: 'nearest' }); } else toast('That message is not loaded.', 'info');
  }
  on(list, 'keydown', (e) => {
    if (e.target.closest('textarea, input')) return;
    const items = [...list.querySelectorAll('li.message')];
    if (!items.length) return;
    const current = e.target.closest('li.message');
    let i = current ? items.indexOf(current) : items.length;
    if (e.key === 'ArrowUp') i = Math.max(0, i - 1);
    else if (e.key === 'ArrowDown') i = Math.min(items.length - 1, i + 1);
    else if (e.key === 'Home') i = 0;
    else if (e.key === 'End') i = items.length - 1;
    else if (e.key === 'Escape') { e.preventDefault(); input.focus(); return; }
    else return;
    e.preventDefault();
    items[i].focus();
    items[i].scrollIntoView({ block: 'nearest' });
    if (i === 0) loadOlder();
  });

  // ----- members panel -----
  membersBtn.addEventListener('click', () => {
    const open = membersPanel.hidden;
    membersPanel.hidden = !open;
    membersBtn.setAttribute('aria-expanded', String(open));
    if (open) { renderMembers(); membersPanel.querySelector('h2')?.focus(); }
  });

  async function loadMembers() {
    try {
      members = await fetchAll(`/chat/rooms/${roomId}/members`, {}, 10);
    } catch { return; }
    if (disposed) return;
    const mine = members.find((m) => m.user_id === store.me?.id);
    const oldRole = myRole;
    myRole = mine?.role || 'member';
    membersBtn.textContent = `Members (${members.length})`;
    if (oldRole !== myRole) [...msgs.keys()].forEach(rerender);
    if (!membersPanel.hidden) renderMembers();
  }

  function renderMembers() {
    const manage = myRole === 'owner' || myRole === 'admin';
    const isDm = room?.kind === 'dm';
    const closeBtn = h('button', { type: 'button', class: 'btn-link', 'aria-label': 'Close members panel', text: 'Close', on: { click: () => { membersPanel.hidden = true; membersBtn.setAttribute('aria-expanded', 'false'); membersBtn.focus(); } } });
    const memberList = h('ul', { class: 'member-list', testid: 'member-list' },
      members.map((m) => {
        const name = nameEl(m.user_id);
        const kick = manage && m.user_id !== store.me?.id && m.role !== 'owner' && !isDm
          ? h('button', { type: 'button', class: 'btn btn-small btn-danger', testid: 'kick-button', 'data-user-id': m.user_id, text: 'Remove' })
          : null;
        kick?.addEventListener('click', async () => {
          if (!window.confirm(`Remove ${name.textContent} from this room?`)) return;
          kick.disabled = true;
          try {
            await api(`/chat/rooms/${roomId}/members/${m.user_id}`, { method: 'DELETE' });
            toast(`${name.textContent} was removed.`);
            await loadMembers();
          } catch (err) {
            kick.disabled = false;
            toast(err.humanMessage ? err.humanMessage() : 'Could not remove the member.', 'error');
          }
        });
        // Owners promote members to admins and back (PATCH …/members/{id} {role}).
        const roleBtn = myRole === 'owner' && !isDm && m.user_id !== store.me?.id && m.role !== 'owner'
          ? h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'role-button', 'data-user-id': m.user_id, text: m.role === 'admin' ? 'Remove admin' : 'Make admin' })
          : null;
        roleBtn?.addEventListener('click', async () => {
          roleBtn.disabled = true;
          const role = m.role === 'admin' ? 'member' : 'admin';
          try {
            await api(`/chat/rooms/${roomId}/members/${m.user_id}`, { method: 'PATCH', body: { role } });
            toast(`${name.textContent} is now ${role === 'admin' ? 'an admin' : 'a member'}.`);
            await loadMembers();
            membersPanel.querySelector(`[data-testid="role-button"][data-user-id="${CSS.escape(m.user_id)}"]`)?.focus();
          } catch (err) {
            roleBtn.disabled = false;
            toast(err.humanMessage ? err.humanMessage() : 'Could not change the role.', 'error');
          }
        });
        return h('li', { class: 'member-item', testid: 'member-item', 'data-user-id': m.user_id, 'data-role': m.role },
          h('a', { href: `#/people/${m.user_id}`, class: 'member-name' }, name),
          m.role !== 'member' ? h('span', { class: 'role-badge', text: m.role }) : null,
          roleBtn, kick);
      }));
    let invite = null;
    if (manage && !isDm) {
      const results = h('ul', { class: 'invite-results', testid: 'invite-results', 'aria-label': 'People to invite' });
      const q = h('input', { type: 'search', id: 'invite-q', testid: 'invite-search', autocomplete: 'off', placeholder: 'Search people' });
      const search = debounce(async () => {
        const text = q.value.trim();
        if (!text) { clear(results); return; }
        try {
          const page = await api('/users/search', { query: { q: text, limit: 8 } });
          const present = new Set(members.map((m) => m.user_id));
          replace(results, (page?.items || []).filter((p) => !present.has(p.id)).map((p) => {
            store.rememberProfile(p);
            const btn = h('button', { type: 'button', class: 'btn btn-small', testid: 'invite-button', 'data-user-id': p.id, text: 'Invite' });
            btn.addEventListener('click', async () => {
              btn.disabled = true;
              try {
                await api(`/chat/rooms/${roomId}/members`, { method: 'POST', body: { user_id: p.id } });
                toast(`${p.display_name || p.username} was added.`);
                q.value = '';
                clear(results);
                await loadMembers();
                q.focus();
              } catch (err) {
                btn.disabled = false;
                toast(err.humanMessage ? err.humanMessage() : 'Could not invite.', 'error');
              }
            });
            return h('li', { class: 'invite-item', testid: 'invite-item' },
              h('span', {}, h('strong', { text: p.display_name || p.username }), ' ', h('span', { class: 'muted', text: `@${p.username}` })), btn);
          }));
          if (!results.children.length) results.appendChild(h('li', { class: 'muted', text: 'Nobody new found.' }));
        } catch (err) {
          replace(results, h('li', { class: 'muted', text: err.humanMessage ? err.humanMessage() : 'Search failed.' }));
        }
      }, 200);
      q.addEventListener('input', search);
      invite = h('div', { class: 'invite' },
        h('label', { for: 'invite-q', text: 'Invite someone' }), q, results);
    }
    const leave = isDm ? null : h('button', { type: 'button', class: 'btn btn-danger btn-block', testid: 'leave-room', text: 'Leave room' });
    leave?.addEventListener('click', async () => {
      if (!window.confirm('Leave this room?')) return;
      try {
        await store.leaveRoom(roomId);
        toast('You left the room.');
        location.hash = '#/rooms';
      } catch (err) {
        toast(err.humanMessage ? err.humanMessage() : 'Could not leave the room.', 'error');
      }
    });
    replace(membersPanel,
      h('div', { class: 'members-head' }, h('h2', { tabindex: '-1', text: `Members (${members.length})` }), closeBtn),
      invite, memberList, leave);
  }

  // ----- start -----
  (async () => {
    try {
      if (!room) {
        const r = await api(`/chat/rooms/${roomId}`);
        room = store.upsertRoom(r, { fromList: true });
      }
      if (disposed) return;
      title.textContent = store.roomTitle(room);
      topic.textContent = room.topic || (room.kind === 'dm' ? 'Direct message' : '');
      if (room.kind === 'dm') {
        const peer = store.dmPeers.get(roomId);
        if (peer) replace(topic, h('a', { href: `#/people/${peer}`, text: 'View profile' }));
      }
      await Promise.all([loadLatest(), loadMembers()]);
    } catch (err) {
      if (disposed) return;
      replace(pane, h('div', { class: 'pane-page' },
        h('a', { href: '#/rooms', class: 'back-link', text: '← Chats' }),
        h('h1', { tabindex: '-1', text: err.status === 404 ? 'Room not found' : 'Could not open the room' }),
        h('p', { role: 'alert', text: err.humanMessage ? err.humanMessage() : String(err) })));
    }
  })();
  updateHistoryStatus();
  renderPendingAll();

  return () => {
    disposed = true;
    cleanups.forEach((fn) => fn());
  };
}

/** Prefer the newer version of a message: tombstones win, then the later edit. */
function isNewer(a, b) {
  if (!!a.deleted !== !!b.deleted) return !!a.deleted;
  return (a.edited_at || '') > (b.edited_at || '');
}
