// The message list of a room: history with infinite scroll up (`before=`), live messages and
// edits in seq order, optimistic (pending) messages, edit/delete in place, read markers and
// keyboard navigation. v1.1: top-level messages only (thread replies move their root's
// "N replies" line), mentions highlighted, reactions, pins, "seen by" under the last message,
// and history around a message (a search result) with the newer part loaded on the way down.
import { h, clear, formatTime, formatDate, toast } from '../../dom.js';
import { api } from '../../api.js';
import { store } from '../../store.js';
import { nameEl, canModerate } from './state.js';
import { messageBody, mentionsMe } from './mentions.js';
import { reactionChips, openReactionPicker } from './reactions.js';
import { threadSummary } from './threads.js';
import { setPinned } from './pins.js';
import { attachmentList, pendingAttachments } from './attachments.js';

/** "Seen by" is shown in DMs and in rooms of at most this many members (more is noise). */
export const SEEN_BY_MAX_MEMBERS = 10;

const PAGE = 50;

/**
 * `onReply(message)` starts a reply in the composer; `focusComposer()` moves focus there.
 * Returns the elements to place, in order, and what the other parts and the view call.
 */
export function mountMessages(state, { onReply, focusComposer, onOpenThread }) {
  const { roomId, on } = state;
  const msgs = new Map(); // id -> Message
  const nodes = new Map(); // id or "p:<client_msg_id>" -> <li>
  let hasMore = false;
  let loadingOlder = false;
  let editing = null; // message id
  let highlighted = null; // id of the message a search result or pin pointed at
  let hasNewer = false; // history opened around a message: newer ones not loaded yet
  let loadingNewer = false;

  const historyStatus = h('li', { class: 'history-status', 'aria-hidden': 'false' });
  const list = h('ol', { class: 'message-list', testid: 'message-list', 'aria-label': 'Messages', tabindex: '0', 'aria-describedby': 'msg-kbd-hint' }, historyStatus);
  const seenEl = h('p', { class: 'seen-by muted small', testid: 'seen-by', 'aria-live': 'polite', hidden: true });
  const newerStatus = h('p', { class: 'history-status', hidden: true });
  const scroller = h('div', { class: 'message-scroller', testid: 'message-scroller' }, list, newerStatus, seenEl);
  const kbdHint = h('p', { id: 'msg-kbd-hint', class: 'visually-hidden', text: 'Use the up and down arrow keys to move between messages, Escape to return to the message box.' });
  const jumpBtn = h('button', { type: 'button', class: 'btn btn-small jump-latest', testid: 'jump-latest', hidden: true, text: 'New messages ↓' });

  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  const scrollToBottom = () => { scroller.scrollTop = scroller.scrollHeight; };

  // ----- rendering -----
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
    return m.sender_id === store.me?.id || state.myRole === 'owner' || state.myRole === 'admin';
  }

  function renderMessage(m) {
    const mine = m.sender_id === store.me?.id;
    const pinned = store.pinsOf(roomId).has(m.id);
    const li = h('li', {
      class: `message ${mine ? 'mine' : ''} ${m.deleted ? 'deleted' : ''} ${mentionsMe(m) ? 'mentions-me' : ''} ${pinned ? 'pinned' : ''} ${highlighted === m.id ? 'highlighted' : ''}`, testid: 'message', tabindex: '-1',
      'data-pinned': String(pinned), 'data-highlighted': highlighted === m.id ? 'true' : null,
      'data-message-id': m.id, 'data-seq': m.seq, 'data-client-msg-id': m.client_msg_id || null, 'data-state': 'sent',
      'data-sender-id': m.sender_id,
    });
    const meta = h('div', { class: 'message-meta' },
      nameEl(m.sender_id),
      h('time', { datetime: m.created_at, title: formatDate(m.created_at), text: formatTime(m.created_at) }),
      m.edited_at && !m.deleted ? h('span', { class: 'edited', title: formatDate(m.edited_at), text: '(edited)' }) : null,
      pinned ? h('span', { class: 'pin-mark', testid: 'pin-mark', title: 'Pinned', text: '📌 Pinned' }) : null);
    li.appendChild(meta);
    if (m.reply_to) li.appendChild(quote(m.reply_to));
    if (editing === m.id) {
      li.appendChild(editForm(m));
    } else {
      li.appendChild(m.deleted ? h('p', { class: 'message-body', testid: 'message-body', text: 'This message was deleted.' }) : messageBody(m));
      const files = attachmentList(state, m);
      if (files) li.appendChild(files);
    }
    const chips = m.deleted ? null : reactionChips(roomId, m);
    if (chips) li.appendChild(chips);
    const summary = threadSummary(m, (root) => onOpenThread(root));
    if (summary) li.appendChild(summary);
    if (!m.deleted && editing !== m.id) {
      const react = h('button', { type: 'button', class: 'btn-link', tabindex: '-1', testid: 'react-button', 'aria-label': 'Add a reaction', text: 'React' });
      react.addEventListener('click', () => openReactionPicker(roomId, m, react));
      const actions = h('div', { class: 'message-actions', role: 'group', 'aria-label': 'Message actions' },
        react,
        h('button', { type: 'button', class: 'btn-link', tabindex: '-1', testid: 'reply-button', on: { click: () => onReply(m) }, text: 'Reply' }),
        h('button', { type: 'button', class: 'btn-link', tabindex: '-1', testid: 'thread-button', on: { click: () => onOpenThread(m) }, text: 'Thread' }),
        canModerate(state) ? h('button', { type: 'button', class: 'btn-link', tabindex: '-1', testid: 'pin-button', on: { click: () => setPinned(roomId, m, !pinned) }, text: pinned ? 'Unpin' : 'Pin' }) : null,
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
    h('p', { class: 'message-body', testid: 'message-body', text: p.body }),
    pendingAttachments(p));
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
    store.seedMessage(m);
    // Thread replies live in the thread panel; here they only move their root's count.
    if (m.thread_root_id) { rerender(m.thread_root_id); return; }
    const prev = msgs.get(m.id);
    if (prev && !isNewer(m, prev)) {
      // The same version again may still bring a newer reply count (a root from the server).
      if (prev && m.reply_count !== undefined) rerender(m.id);
      return;
    }
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
    renderSeen();
  }

  function renderPendingAll() {
    const stick = atBottom();
    const pend = store.pendingFor(roomId);
    for (const [key, node] of [...nodes]) {
      if (key.startsWith('p:') && !pend.has(key.slice(2))) { node.remove(); nodes.delete(key); }
    }
    for (const p of pend.values()) {
      if (p.thread_root_id) continue; // shown in the thread panel
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
      historyStatus.appendChild(h('span', { class: 'muted small', text: state.room ? `This is the beginning of ${store.roomTitle(state.room)}.` : '' }));
    }
  }

  // ----- history -----
  async function loadLatest() {
    const page = await api(`/chat/rooms/${roomId}/messages`, { query: { limit: PAGE } });
    if (state.disposed) return;
    hasMore = !!page?.has_more;
    for (const m of page?.items || []) upsert(m, { stick: false });
    updateHistoryStatus();
    renderPendingAll();
    scrollToBottom();
    markRead();
  }

  /**
   * Open the history around `seq` (a search result, a pin): the messages up to it and the
   * ones after it, the one with `focusId` scrolled into view and highlighted. Newer ones are
   * loaded on the way down until the end is reached; live messages wait until then.
   */
  async function loadAround(seq, focusId) {
    const [older, newer] = await Promise.all([
      api(`/chat/rooms/${roomId}/messages`, { query: { before: seq + 1, limit: PAGE } }),
      api(`/chat/rooms/${roomId}/messages`, { query: { after: seq, limit: PAGE } }),
    ]);
    if (state.disposed) return;
    hasMore = !!older?.has_more;
    hasNewer = !!newer?.has_more;
    for (const m of [...(older?.items || []), ...(newer?.items || [])]) upsert(m, { stick: false });
    updateHistoryStatus();
    updateNewerStatus();
    if (!hasNewer) renderPendingAll();
    highlight(focusId);
  }

  function highlight(id) {
    const li = nodes.get(id);
    if (!li) { scrollToBottom(); return; }
    list.querySelectorAll('.message.highlighted').forEach((x) => { x.classList.remove('highlighted'); delete x.dataset.highlighted; });
    highlighted = id;
    li.classList.add('highlighted');
    li.dataset.highlighted = 'true';
    li.scrollIntoView({ block: 'center' });
    li.focus({ preventScroll: true });
  }

  async function loadNewer() {
    if (loadingNewer || !hasNewer) return;
    const newest = Math.max(...[...msgs.values()].map((m) => m.seq));
    if (!Number.isFinite(newest)) return;
    loadingNewer = true;
    updateNewerStatus();
    try {
      const page = await api(`/chat/rooms/${roomId}/messages`, { query: { after: newest, limit: PAGE } });
      if (state.disposed) return;
      hasNewer = !!page?.has_more;
      for (const m of page?.items || []) upsert(m, { stick: false });
      if (!hasNewer) renderPendingAll();
    } catch (err) {
      toast(err.humanMessage ? err.humanMessage() : 'Could not load newer messages.', 'error');
    } finally {
      loadingNewer = false;
      updateNewerStatus();
    }
  }

  function updateNewerStatus() {
    newerStatus.hidden = !hasNewer;
    clear(newerStatus);
    if (hasNewer) newerStatus.appendChild(h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'load-newer', on: { click: () => loadNewer() }, text: loadingNewer ? 'Loading…' : 'Load newer messages' }));
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
      if (state.disposed) return;
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
    if (atBottom() && hasNewer) loadNewer();
    if (atBottom()) { markRead(); jumpBtn.hidden = true; }
  });
  on(jumpBtn, 'click', () => { scrollToBottom(); jumpBtn.hidden = true; focusComposer(); });

  function markRead() {
    if (document.visibilityState !== 'visible' || !atBottom() || hasNewer) return;
    const r = store.rooms.get(roomId);
    const maxSeq = Math.max(r?.lastSeq || 0, ...[...msgs.values()].map((m) => m.seq));
    if (maxSeq > 0) store.markRead(roomId, maxSeq);
  }
  on(document, 'visibilitychange', () => markRead());

  // ----- live updates -----
  on(store, 'room-event', (e) => {
    if (e.detail.room_id !== roomId) return;
    const ev = e.detail.event;
    if (ev.message_id) { rerender(ev.message_id); return; } // reactions, pins
    if (!ev.message) return;
    // Opened around an older message: live ones join when the history reaches them.
    if (hasNewer && ev.kind === 'message.created' && !ev.message.thread_root_id) return;
    const wasAtBottom = atBottom();
    upsert(ev.message, { stick: wasAtBottom });
    if (ev.kind === 'message.created' && !ev.message.thread_root_id && !wasAtBottom && ev.message.sender_id !== store.me?.id) jumpBtn.hidden = false;
    if (ev.kind === 'message.created') markRead();
  });
  on(store, 'room-message', (e) => {
    if (e.detail.room_id === roomId && (!hasNewer || e.detail.message.thread_root_id)) upsert(e.detail.message);
  });
  on(store, 'pending', (e) => { if (e.detail.room_id === roomId && !hasNewer) renderPendingAll(); });

  // ----- seen by (v1.1) -----
  const seenShown = () => state.room && (state.room.kind === 'dm' || (state.room.member_count || 0) <= SEEN_BY_MAX_MEMBERS);
  function renderSeen() {
    if (!seenShown() || hasNewer) { seenEl.hidden = true; return; }
    const last = [...msgs.values()].reduce((a, m) => (!a || m.seq > a.seq ? m : a), null);
    const ids = last ? store.seenBy(roomId, last) : [];
    seenEl.hidden = !ids.length;
    seenEl.dataset.messageId = last?.id || '';
    seenEl.textContent = ids.length ? `Seen by ${ids.map((id) => store.nameOf(id)).join(', ')}` : '';
    for (const id of ids) if (!store.profileData.has(id)) store.profile(id).then(() => { if (seenEl.isConnected) renderSeenSoon(); }).catch(() => {});
  }
  let seenTimer = null;
  const renderSeenSoon = () => { clearTimeout(seenTimer); seenTimer = setTimeout(renderSeen, 50); };
  state.onDispose(() => clearTimeout(seenTimer));
  on(store, 'read', (e) => { if (e.detail.room_id === roomId) renderSeen(); });
  async function loadSeen() {
    if (!seenShown()) return;
    try { await store.loadReadMarkers(roomId); } catch { /* "seen by" is a nicety */ }
  }

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
  /** Draw a message again (its reactions, pin or thread line moved), keeping focus in it. */
  function rerender(id) {
    const m = msgs.get(id);
    const old = nodes.get(id);
    if (!m || !old) return;
    const focused = old.contains(document.activeElement) ? document.activeElement : null;
    const li = renderMessage(m);
    old.replaceWith(li);
    nodes.set(id, li);
    if (focused) {
      const same = focused === old ? li
        : li.querySelector(`[data-testid="${focused.dataset.testid}"]${focused.dataset.emoji ? `[data-emoji="${CSS.escape(focused.dataset.emoji)}"]` : ''}`);
      if (same) { if (same !== li) same.setAttribute('tabindex', '0'); same.focus({ preventScroll: true }); } else li.focus({ preventScroll: true });
    }
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
  /** Edit my latest message (Up in an empty composer); false when I have none here. */
  function editLast() {
    const mine = [...msgs.values()].filter((m) => m.sender_id === store.me?.id && !m.deleted).sort((a, b) => b.seq - a.seq)[0];
    if (!mine) return false;
    startEdit(mine.id);
    return true;
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
  const setActionsTabbable = (li, tabbable) => li?.querySelectorAll('.message-actions button, .reply-quote, .msg-ctl')
    .forEach((b) => b.setAttribute('tabindex', tabbable ? '0' : '-1'));
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
    else if (e.key === 'Escape') { e.preventDefault(); focusComposer(); return; }
    else return;
    e.preventDefault();
    items[i].focus();
    items[i].scrollIntoView({ block: 'nearest' });
    if (i === 0) loadOlder();
  });

  return {
    elements: [scroller, jumpBtn, kbdHint],
    loadLatest,
    loadAround,
    loadSeen,
    renderSeen,
    highlight,
    has: (id) => msgs.has(id),
    updateHistoryStatus,
    renderPendingAll,
    scrollToBottom,
    editLast,
    /** My role changed: Delete buttons come or go. */
    rerenderAll: () => [...msgs.keys()].forEach(rerender),
  };
}

/** Prefer the newer version of a message: tombstones win, then the later edit. */
function isNewer(a, b) {
  if (!!a.deleted !== !!b.deleted) return !!a.deleted;
  return (a.edited_at || '') > (b.edited_at || '');
}
