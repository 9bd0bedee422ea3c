// The state the parts of a room view (messages, composer, members) share, and the one
// helper they all render with. Everything else stays inside the part that owns it.
import { h } from '../../dom.js';
import { store } from '../../store.js';

/**
 * The room being shown: its id, the store's room object once known, my role in it (set by
 * the members part; the messages part offers Delete by it), whether the view is gone, and
 * the listeners to remove when it goes.
 */
export function createRoomState(roomId) {
  const cleanups = [];
  const panels = new Map(); // name -> close()
  return {
    roomId,
    room: store.rooms.get(roomId) || null,
    myRole: 'member',
    /** The room's members `[{user_id, role}]`, kept by the members part (mentions use it). */
    members: [],
    disposed: false,
    /** Side panels (members, thread, pins) share the space: opening one closes the others. */
    registerPanel(name, close) { panels.set(name, close); },
    panelOpening(name) { for (const [n, close] of panels) if (n !== name) close({ quiet: true }); },
    /** addEventListener, removed when the view goes. */
    on(target, type, fn) {
      target.addEventListener(type, fn);
      cleanups.push(() => target.removeEventListener(type, fn));
    },
    onDispose(fn) { cleanups.push(fn); },
    dispose() {
      this.disposed = true;
      cleanups.forEach((fn) => fn());
    },
  };
}

/** A person's name, filled in when their profile arrives. */
export function nameEl(userId) {
  const el = h('span', { class: 'sender', 'data-user-id': userId, text: store.nameOf(userId, '…') });
  if (!store.profileData.has(userId) && userId !== store.me?.id) {
    store.profile(userId).then((p) => { el.textContent = p ? (p.display_name || p.username) : 'Unknown user'; }).catch(() => {});
  }
  return el;
}

/** A presence dot, kept current by the app (store 'presence' events update every dot of a user). */
export function presenceDot(userId) {
  const status = store.presenceOf(userId);
  return h('span', { class: 'presence-dot', 'data-presence-user': userId, 'data-status': status, testid: 'presence-dot', role: 'img', 'aria-label': status, title: status });
}

/** Whether I may pin and unpin here (owner or admin). */
export const canModerate = (state) => state.myRole === 'owner' || state.myRole === 'admin';
