// Reactions (v1.1): the chips under a message (emoji and count, highlighted when I reacted;
// a click toggles mine; hover or focus shows who reacted) and the picker (common emoji, or a
// `:shortcode:` typed in). Counts live in the store (`store.reactions`), moved by
// `reaction.added` / `reaction.removed` events; views redraw the message on those events.
import { h, toast } from '../../dom.js';
import { api } from '../../api.js';
import { store } from '../../store.js';

export const COMMON_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀'];
const SHORTCODE = /^:[a-z0-9_+-]{1,32}:$/;
/** Who reacted is fetched again after this long (it is shown on hover, often repeatedly). */
const WHO_TTL_MS = 5000;

const whoCache = new Map(); // message id -> {at, promise}

function whoReacted(roomId, messageId) {
  const hit = whoCache.get(messageId);
  if (hit && Date.now() - hit.at < WHO_TTL_MS) return hit.promise;
  const promise = api(`/chat/rooms/${roomId}/messages/${messageId}/reactions`).then((r) => r?.items || []);
  promise.catch(() => whoCache.delete(messageId));
  whoCache.set(messageId, { at: Date.now(), promise });
  return promise;
}

async function toggle(roomId, messageId, emoji) {
  whoCache.delete(messageId);
  try {
    await store.toggleReaction(roomId, messageId, emoji);
  } catch (err) {
    toast(err.humanMessage ? err.humanMessage() : 'Could not react.', 'error');
  }
}

/** The chips of a message (and nothing when it has no reactions). */
export function reactionChips(roomId, m) {
  const list = store.reactions.list(m.id);
  if (!list.length) return null;
  return h('div', { class: 'reactions', testid: 'reactions', role: 'group', 'aria-label': 'Reactions' },
    list.map((r) => chip(roomId, m, r)));
}

function chip(roomId, m, r) {
  const label = `${r.emoji} ${r.count}${r.me ? ', you reacted' : ''}. ${r.me ? 'Remove your reaction' : 'React with this too'}`;
  const tip = h('span', { class: 'reaction-who', role: 'tooltip', testid: 'reaction-who', hidden: true });
  const btn = h('button', {
    type: 'button', class: `reaction-chip msg-ctl ${r.me ? 'me' : ''}`, tabindex: '-1', testid: 'reaction-chip',
    'data-emoji': r.emoji, 'data-count': r.count, 'aria-pressed': String(r.me), 'aria-label': label,
    on: { click: () => toggle(roomId, m.id, r.emoji) },
  }, h('span', { class: 'reaction-emoji', text: r.emoji }), h('span', { class: 'reaction-count', text: String(r.count) }));
  const wrap = h('span', { class: 'reaction-wrap' }, btn, tip);
  const show = async () => {
    tip.hidden = false;
    tip.textContent = '…';
    try {
      const items = await whoReacted(roomId, m.id);
      const mine = items.find((x) => x.emoji === r.emoji);
      const names = (mine?.user_ids || []).map((id) => store.nameOf(id, 'someone'));
      // Names not known yet come with their profiles: ask, then say it again.
      const missing = (mine?.user_ids || []).filter((id) => id !== store.me?.id && !store.profileData.has(id));
      if (missing.length) {
        await Promise.all(missing.map((id) => store.profile(id).catch(() => null)));
        names.splice(0, names.length, ...(mine.user_ids.map((id) => store.nameOf(id, 'someone'))));
      }
      tip.textContent = names.length ? `${names.join(', ')} reacted with ${r.emoji}` : `Reacted with ${r.emoji}`;
    } catch {
      tip.textContent = `${r.count} reacted with ${r.emoji}`;
    }
  };
  const hide = () => { tip.hidden = true; };
  btn.addEventListener('mouseenter', show);
  btn.addEventListener('focus', show);
  btn.addEventListener('mouseleave', hide);
  btn.addEventListener('blur', hide);
  const tipId = `who-${m.id}-${[...r.emoji].map((c) => c.codePointAt(0).toString(16)).join('-')}`;
  tip.id = tipId;
  btn.setAttribute('aria-describedby', tipId);
  return wrap;
}

let openPicker = null;

/**
 * Open the reaction picker for a message, next to `anchor` (the React button): the common
 * emoji (arrow keys move between them) and a `:shortcode:` field. Escape closes it and
 * returns focus to the anchor.
 */
export function openReactionPicker(roomId, m, anchor) {
  closeReactionPicker();
  const choose = async (emoji) => {
    closeReactionPicker({ focus: true });
    await toggle(roomId, m.id, emoji);
  };
  const buttons = COMMON_EMOJI.map((e) => h('button', {
    type: 'button', class: 'picker-emoji', testid: 'picker-emoji', 'data-emoji': e, 'aria-label': `React with ${e}`, text: e,
    on: { click: () => choose(e) },
  }));
  const input = h('input', { type: 'text', class: 'picker-input', testid: 'picker-shortcode', placeholder: ':shortcode: or emoji', 'aria-label': 'Reaction shortcode or emoji', maxlength: '34', autocomplete: 'off' });
  const error = h('p', { class: 'picker-error', role: 'alert', hidden: true });
  const form = h('form', { class: 'picker-form' }, input, h('button', { type: 'submit', class: 'btn btn-small', testid: 'picker-submit', text: 'Add' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const v = input.value.trim();
    // One emoji (one grapheme, not letters) or a :shortcode:; the server has the last word.
    const oneEmoji = v && !/[\p{L}\p{N}\s]/u.test(v) && [...v].length <= 8;
    if (!SHORTCODE.test(v) && !oneEmoji) {
      error.textContent = 'Type one emoji, or a shortcode like :tada:';
      error.hidden = false;
      input.focus();
      return;
    }
    choose(v);
  });
  const picker = h('div', { class: 'reaction-picker', testid: 'reaction-picker', role: 'dialog', 'aria-label': 'Add a reaction' },
    h('div', { class: 'picker-grid', role: 'group', 'aria-label': 'Common reactions' }, buttons), form, error);
  picker.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); closeReactionPicker({ focus: true }); return; }
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { e.preventDefault(); buttons[(i + 1) % buttons.length].focus(); }
    if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { e.preventDefault(); buttons[(i - 1 + buttons.length) % buttons.length].focus(); }
  });
  const host = anchor.closest('li') || anchor.parentElement;
  host.appendChild(picker);
  const onOutside = (e) => { if (!picker.contains(e.target) && e.target !== anchor) closeReactionPicker(); };
  setTimeout(() => document.addEventListener('mousedown', onOutside), 0);
  openPicker = { picker, anchor, onOutside };
  buttons[0].focus();
}

export function closeReactionPicker({ focus = false } = {}) {
  if (!openPicker) return;
  const { picker, anchor, onOutside } = openPicker;
  openPicker = null;
  document.removeEventListener('mousedown', onOutside);
  picker.remove();
  if (focus && anchor.isConnected) anchor.focus();
}
