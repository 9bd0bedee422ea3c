// The composer of a room: the message box (Enter sends, Shift+Enter adds a line, Up in an
// empty box edits my last message), replies, attachments (./attachments.js) and typing
// notices, sent and shown.
import { h, replace, clear, toast } from '../../dom.js';
import { store } from '../../store.js';
import { nameEl } from './state.js';
import { attachMentionAutocomplete, memberProfiles } from './mentions.js';
import { mountAttachmentPicker } from './attachments.js';

const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 6000;

/**
 * `onEditLast()` starts editing my last message (false when there is none); `onSent()`
 * runs after a message was handed to the store.
 * Returns the elements to place, in order, and what the other parts call.
 */
export function mountComposer(state, { onEditLast, onSent }) {
  const { roomId, on } = state;
  let replyTo = null; // Message

  const typingEl = h('p', { class: 'typing-indicator', testid: 'typing-indicator', 'aria-live': 'polite' });
  const replyBar = h('div', { class: 'reply-bar', testid: 'reply-bar', hidden: true });
  const input = h('textarea', { id: 'composer-input', class: 'composer-input', testid: 'composer-input', rows: '1', placeholder: 'Write a message…', maxlength: '4000', 'data-autofocus': '', 'aria-describedby': 'composer-hint' });
  // `@` autocomplete first: its Enter/Tab/Escape must win over sending and cancelling.
  const mentionList = attachMentionAutocomplete(input, () => memberProfiles(state));
  const sendBtn = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'send-button', text: 'Send' });
  const composer = h('form', { class: 'composer', testid: 'composer', 'aria-label': 'Send a message' });
  const attach = mountAttachmentPicker(state, { form: composer, input });
  composer.append(...[
    replyBar,
    mentionList,
    attach.tray,
    h('div', { class: 'composer-row' },
      h('label', { for: 'composer-input', class: 'visually-hidden', text: 'Message' }),
      attach.button, attach.fileInput, input, sendBtn),
    h('p', { id: 'composer-hint', class: 'visually-hidden', text: 'Enter sends, Shift+Enter adds a new line, Up arrow edits your last message. Type @ to mention a member. Drop or paste files to attach them.' })]);

  // ----- typing: shown -----
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
  // Whoever sent a message has stopped typing it.
  on(store, 'room-event', (e) => {
    const ev = e.detail.event;
    if (e.detail.room_id === roomId && ev.kind === 'message.created' && ev.message) clearTypist(ev.message.sender_id);
  });
  state.onDispose(() => typists.forEach((t) => clearTimeout(t)));

  // ----- typing: sent -----
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
  state.onDispose(() => clearTimeout(typingTimer));
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

  // ----- replies and sending -----
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
    const { draft } = attach;
    if (draft.busy) { toast('Wait for the uploads to finish.', 'info'); return; }
    const files = draft.files;
    if (!text && !files.length) return;
    if ([...text].length > 4000) { toast('Messages can be at most 4000 characters.', 'error'); return; }
    store.sendMessage(roomId, text, replyTo?.id, null, files);
    draft.clear();
    input.value = '';
    autosize();
    cancelReply();
    clearTimeout(typingTimer);
    typingTimer = null;
    onSent();
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
      if (onEditLast()) e.preventDefault();
    }
  });

  return {
    elements: [typingEl, composer],
    startReply,
    focus: () => input.focus(),
  };
}
