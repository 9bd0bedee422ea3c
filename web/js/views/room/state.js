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
  return {
    roomId,
    room: store.rooms.get(roomId) || null,
    myRole: 'member',
    disposed: false,
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
