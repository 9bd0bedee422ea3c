// The members panel of a room: the member list with roles, and for owners/admins remove,
// make/remove admin (owners) and invite; leave the room.
import { h, replace, clear, toast, debounce } from '../../dom.js';
import { api } from '../../api.js';
import { store, fetchAll } from '../../store.js';
import { nameEl, presenceDot } from './state.js';

/**
 * Keeps `state.myRole` current; `onRoleChange()` runs when it changed.
 * Returns the toggle button and the panel to place, and `load()` for the first load.
 */
export function mountMembers(state, { onRoleChange }) {
  const { roomId, on } = state;
  let members = [];

  const button = h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'members-toggle', 'aria-expanded': 'false', 'aria-controls': 'members-panel', text: 'Members' });
  const panel = h('aside', { id: 'members-panel', class: 'members-panel side-panel', testid: 'members-panel', 'aria-label': 'Members', hidden: true });

  state.registerPanel('members', ({ quiet } = {}) => {
    if (panel.hidden) return;
    panel.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    if (!quiet) button.focus();
  });
  state.onDispose(() => store.watchPresence('members', []));
  panel.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !e.defaultPrevented && !e.target.closest('input')) { e.preventDefault(); panel.hidden = true; button.setAttribute('aria-expanded', 'false'); button.focus(); }
  });
  button.addEventListener('click', () => {
    const open = panel.hidden;
    if (open) state.panelOpening('members');
    panel.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    if (open) { render(); panel.querySelector('h2')?.focus(); }
  });

  // Someone joined, left or was removed: the list (and maybe my role) changed.
  on(store, 'room-event', (e) => {
    const ev = e.detail.event;
    if (e.detail.room_id === roomId && !ev.message && ev.kind?.startsWith('member.')) load();
  });

  async function load() {
    try {
      members = await fetchAll(`/chat/rooms/${roomId}/members`, {}, 10);
    } catch { return; }
    if (state.disposed) return;
    state.members = members;
    // Names for mentions (autocomplete and highlighting), presence for the dots.
    for (const m of members) if (m.user_id !== store.me?.id) store.profile(m.user_id).catch(() => {});
    store.watchPresence('members', members.map((m) => m.user_id));
    const mine = members.find((m) => m.user_id === store.me?.id);
    const oldRole = state.myRole;
    state.myRole = mine?.role || 'member';
    button.textContent = `Members (${members.length})`;
    if (oldRole !== state.myRole) onRoleChange();
    if (!panel.hidden) render();
  }

  function render() {
    const manage = state.myRole === 'owner' || state.myRole === 'admin';
    const isDm = state.room?.kind === 'dm';
    const closeBtn = h('button', { type: 'button', class: 'btn-link', 'aria-label': 'Close members panel', text: 'Close', on: { click: () => { panel.hidden = true; button.setAttribute('aria-expanded', 'false'); button.focus(); } } });
    const memberList = h('ul', { class: 'member-list', testid: 'member-list' },
      members.map((m) => memberItem(m, { manage, isDm })));
    const invite = manage && !isDm ? inviteForm() : null;
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
    replace(panel,
      h('div', { class: 'members-head' }, h('h2', { tabindex: '-1', text: `Members (${members.length})` }), closeBtn),
      invite, memberList, leave);
  }

  function memberItem(m, { manage, isDm }) {
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
        await load();
      } catch (err) {
        kick.disabled = false;
        toast(err.humanMessage ? err.humanMessage() : 'Could not remove the member.', 'error');
      }
    });
    // Owners promote members to admins and back (PATCH …/members/{id} {role}).
    const roleBtn = state.myRole === 'owner' && !isDm && m.user_id !== store.me?.id && m.role !== 'owner'
      ? h('button', { type: 'button', class: 'btn btn-small btn-ghost', testid: 'role-button', 'data-user-id': m.user_id, text: m.role === 'admin' ? 'Remove admin' : 'Make admin' })
      : null;
    roleBtn?.addEventListener('click', async () => {
      roleBtn.disabled = true;
      const role = m.role === 'admin' ? 'member' : 'admin';
      try {
        await api(`/chat/rooms/${roomId}/members/${m.user_id}`, { method: 'PATCH', body: { role } });
        toast(`${name.textContent} is now ${role === 'admin' ? 'an admin' : 'a member'}.`);
        await load();
        panel.querySelector(`[data-testid="role-button"][data-user-id="${CSS.escape(m.user_id)}"]`)?.focus();
      } catch (err) {
        roleBtn.disabled = false;
        toast(err.humanMessage ? err.humanMessage() : 'Could not change the role.', 'error');
      }
    });
    return h('li', { class: 'member-item', testid: 'member-item', 'data-user-id': m.user_id, 'data-role': m.role },
      presenceDot(m.user_id),
      h('a', { href: `#/people/${m.user_id}`, class: 'member-name' }, name),
      m.role !== 'member' ? h('span', { class: 'role-badge', text: m.role }) : null,
      roleBtn, kick);
  }

  function inviteForm() {
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
              await load();
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
    return h('div', { class: 'invite' },
      h('label', { for: 'invite-q', text: 'Invite someone' }), q, results);
  }

  return { button, panel, load };
}
