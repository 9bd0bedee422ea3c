// A small in-memory stand-in for the IntelliColab gateway, following /work/shared/API.md
// (contract v1.1: mentions, threads, reactions, pins, read receipts, presence, search,
// notifications: inbox, count frames, room levels, preferences, push subscriptions; files)
// closely enough to develop and test the web client without the Rust services.
// It also serves web/ with the gateway's Content-Security-Policy, so CSP violations show up.
//
//   node mock-server.mjs            # listens on 127.0.0.1:8090 (PORT=..., TOKEN_TTL=seconds)
//
// Not used by the real e2e run (which targets BASE_URL of the real system) unless
// MOCK=1 is given to run.sh.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const WEB_ROOT = path.resolve(process.env.WEB_ROOT || path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
const PORT = Number(process.env.PORT || 8090);
const TOKEN_TTL = Number(process.env.TOKEN_TTL || 900);
const CSP = "default-src 'self'; connect-src 'self'; img-src 'self' https: data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png', '.json': 'application/json' };

const uuid = () => crypto.randomUUID();
const now = () => new Date().toISOString();
const users = new Map(); // id -> {id, username, email, password, display_name, bio, avatar_url, created_at}
const sessions = new Map(); // sid -> {id, user_id, created_at, last_used_at, user_agent, ip, refresh, used:Set, active}
const access = new Map(); // token -> {user_id, sid, exp}
const follows = new Set(); // "a>b"
const blocks = new Set(); // "a>b" a blocks b
const rooms = new Map(); // id -> {room, members: Map(user_id -> {role, joined_at}), events: [], messages: Map(id->msg), reads: Map(user->seq), reactions: Map(msg id -> Map(emoji -> Set(user))), pins: Set(msg id), dmKey}
const sockets = new Set();
const files = new Map(); // id -> {owner, bytes: Buffer, file: File, rooms: Set(room id)}

class Problem extends Error {
  constructor(status, code, detail, errors) { super(detail); this.status = status; this.code = code; this.detail = detail; this.errors = errors; }
}

function profile(u) {
  return {
    id: u.id, username: u.username, display_name: u.display_name, bio: u.bio, avatar_url: u.avatar_url, created_at: u.created_at,
    followers_count: [...follows].filter((f) => f.endsWith(`>${u.id}`)).length,
    following_count: [...follows].filter((f) => f.startsWith(`${u.id}>`)).length,
  };
}
const authUser = (u) => ({ id: u.id, username: u.username, email: u.email, display_name: u.display_name, created_at: u.created_at });
const blocked = (a, b) => blocks.has(`${a}>${b}`) || blocks.has(`${b}>${a}`);

function issue(user, sid, ua, ip) {
  let s = sessions.get(sid);
  if (!s) {
    s = { id: sid, user_id: user.id, created_at: now(), last_used_at: now(), user_agent: ua, ip, used: new Set(), active: true };
    sessions.set(sid, s);
  }
  const refresh = crypto.randomBytes(32).toString('base64url');
  if (s.refresh) s.used.add(s.refresh);
  s.refresh = refresh;
  s.last_used_at = now();
  const token = crypto.randomBytes(24).toString('base64url');
  access.set(token, { user_id: user.id, sid, exp: Date.now() + TOKEN_TTL * 1000 });
  return { access_token: token, refresh_token: refresh, token_type: 'Bearer', expires_in: TOKEN_TTL, user: authUser(user) };
}

function whoami(req, url) {
  const h = req.headers.authorization || '';
  const token = h.startsWith('Bearer ') ? h.slice(7) : url.searchParams.get('access_token');
  const a = token && access.get(token);
  if (!a || a.exp < Date.now() || !sessions.get(a.sid)?.active) throw new Problem(401, 'invalid_token', 'The access token is missing, invalid or expired.');
  return { user: users.get(a.user_id), sid: a.sid };
}

function page(items, url) {
  const limit = Math.min(100, Number(url.searchParams.get('limit') || 50));
  const start = Number(url.searchParams.get('cursor') || 0);
  const slice = items.slice(start, start + limit);
  return { items: slice, next_cursor: start + limit < items.length ? String(start + limit) : null };
}

// ---------- chat helpers ----------
function roomView(r, forUser) {
  const out = { ...r.room, member_count: r.members.size, last_seq: r.events.length };
  if (forUser) {
    const read = r.reads.get(forUser) || 0;
    const msgs = [...r.messages.values()];
    out.unread_count = msgs.filter((m) => m.seq > read && m.sender_id !== forUser && !m.deleted).length;
    out.last_message = msgs.sort((a, b) => b.seq - a.seq)[0] || null;
  }
  return out;
}
/** A message as a user sees it (v1.1 fields; `me` in reactions only for HTTP answers). */
function msgView(r, m, forUser) {
  const reactions = [...(r.reactions.get(m.id) || new Map())].filter(([, set]) => set.size).map(([emoji, set]) => {
    const out = { emoji, count: set.size };
    if (forUser) out.me = set.has(forUser);
    return out;
  });
  return { ...m, reactions, pinned: r.pins.has(m.id) };
}
function addEvent(r, kind, payload) {
  const ev = { room_id: r.room.id, seq: r.events.length + 1, kind, created_at: now(), ...payload };
  r.events.push(ev);
  if (ev.message) ev.message = msgView(r, ev.message);
  const frame = JSON.stringify({ type: 'event', room_id: r.room.id, seq: ev.seq, event: ev });
  for (const s of sockets) {
    if (r.members.has(s.userId) || (kind === 'member.removed' || kind === 'member.left') && payload.user_id === s.userId) {
      if (s.dropEvents) continue;
      s.send(frame);
    }
  }
  return ev;
}
function createRoom({ name, visibility, topic = '', kind = 'channel' }, owner) {
  const id = uuid();
  const r = { room: { id, kind, name, topic, visibility, owner_id: owner.id, created_at: now() }, members: new Map(), events: [], messages: new Map(), reads: new Map(), reactions: new Map(), pins: new Set() };
  rooms.set(id, r);
  r.members.set(owner.id, { role: 'owner', joined_at: now() });
  addEvent(r, 'member.joined', { user_id: owner.id });
  return r;
}
function getRoom(id, user, { member = true } = {}) {
  const r = rooms.get(id);
  if (!r) throw new Problem(404, 'not_found', 'Room not found.');
  if (member && !r.members.has(user.id)) {
    if (r.room.visibility === 'private') throw new Problem(404, 'not_found', 'Room not found.');
    throw new Problem(403, 'not_a_member', 'You are not a member of this room.');
  }
  return r;
}
function mentionsOf(r, sender, body) {
  const out = new Set();
  const role = r.members.get(sender.id)?.role;
  for (const m of body.matchAll(/(^|[^\p{L}\p{N}_.@])@([\p{L}\p{N}_.]+)/gu)) {
    const name = m[2].replace(/\.+$/, '').toLowerCase();
    if (name === 'room' && (role === 'owner' || role === 'admin')) for (const id of r.members.keys()) out.add(id);
    for (const u of users.values()) if (u.username === name && r.members.has(u.id)) out.add(u.id);
  }
  out.delete(sender.id);
  return [...out];
}
function postMessage(r, user, { body, client_msg_id, reply_to, thread_root_id, attachment_ids }) {
  const ids = Array.isArray(attachment_ids) ? attachment_ids : [];
  if (ids.length > 10) throw new Problem(400, 'invalid_attachment', 'A message carries at most 10 attachments.');
  if (new Set(ids).size !== ids.length) throw new Problem(400, 'invalid_attachment', 'An attachment is listed twice.');
  const attachments = ids.map((id) => {
    const f = files.get(id);
    if (!f || f.owner !== user.id) throw new Problem(400, 'invalid_attachment', `Not an upload of yours: ${id}`);
    return f;
  });
  const text = String(body ?? '').trim();
  if ((!text && !attachments.length) || [...text].length > 4000) throw new Problem(400, 'validation_failed', 'A message needs 1 to 4000 characters.', [{ field: 'body', message: 'must be 1–4000 characters' }]);
  if (client_msg_id) {
    const dup = [...r.messages.values()].find((m) => m.sender_id === user.id && m.client_msg_id === client_msg_id);
    if (dup) return { message: msgView(r, dup, user.id), created: false };
  }
  let root = null;
  if (thread_root_id) {
    root = r.messages.get(thread_root_id);
    if (!root || root.thread_root_id) throw new Problem(400, 'invalid_thread', 'thread_root_id must be a top-level message of this room.');
  }
  const m = { id: uuid(), room_id: r.room.id, seq: r.events.length + 1, sender_id: user.id, body: text, client_msg_id: client_msg_id || null, reply_to: reply_to || null, created_at: now(), edited_at: null, deleted: false,
    mentions: mentionsOf(r, user, text), thread_root_id: root ? root.id : null, reply_count: 0, last_reply_at: null,
    attachments: attachments.map((f) => f.file) };
  for (const f of attachments) f.rooms.add(r.room.id);
  r.messages.set(m.id, m);
  if (root) { root.reply_count += 1; root.last_reply_at = m.created_at; }
  addEvent(r, 'message.created', { message: m });
  notifyMessage(r, m);
  return { message: msgView(r, m, user.id), created: true };
}

// ---------- routes ----------
const routes = [];
const route = (method, pattern, fn) => routes.push({ method, re: new RegExp(`^${pattern.replace(/:(\w+)/g, '(?<$1>[^/]+)')}$`), fn });

route('POST', '/auth/register', ({ body, req }) => {
  const username = String(body.username || '').toLowerCase();
  const errors = [];
  if (!/^[a-z0-9_.]{3,32}$/.test(username)) errors.push({ field: 'username', message: 'must be 3–32 characters of a-z, 0-9, _ and .' });
  if (!/^[^@\s]+@[^@\s]+$/.test(body.email || '')) errors.push({ field: 'email', message: 'must be an email address' });
  if (!body.password || body.password.length < 8) errors.push({ field: 'password', message: 'must be at least 8 characters' });
  else if (['password', 'password1', '12345678'].includes(body.password)) errors.push({ field: 'password', message: 'is too common' });
  if (errors.length) throw new Problem(400, 'validation_failed', 'Some fields are invalid.', errors);
  for (const u of users.values()) {
    if (u.username === username) throw new Problem(409, 'username_taken', 'That username is taken.');
    if (u.email.toLowerCase() === body.email.toLowerCase()) throw new Problem(409, 'email_taken', 'That email is already registered.');
  }
  const u = { id: uuid(), username, email: body.email, password: body.password, display_name: body.display_name || username, bio: '', avatar_url: '', created_at: now() };
  users.set(u.id, u);
  // Registration and login hand out a device token, as auth does (refresh does not).
  return [201, { ...issue(u, uuid(), req.headers['user-agent'], req.socket.remoteAddress), device_token: crypto.randomBytes(32).toString('base64url') }];
});
route('POST', '/auth/login', ({ body, req }) => {
  const l = String(body.login || '').toLowerCase();
  const u = [...users.values()].find((x) => x.username === l || x.email.toLowerCase() === l);
  if (!u || u.password !== body.password) throw new Problem(401, 'invalid_credentials', 'Wrong username/email or password.');
  return [200, { ...issue(u, uuid(), req.headers['user-agent'], req.socket.remoteAddress), device_token: crypto.randomBytes(32).toString('base64url') }];
});
route('POST', '/auth/refresh', ({ body }) => {
  const t = body.refresh_token;
  for (const s of sessions.values()) {
    if (s.refresh === t && s.active) return [200, issue(users.get(s.user_id), s.id)];
    if (s.used.has(t)) { endSession(s); throw new Problem(401, 'refresh_token_reused', 'This refresh token was already used; the session has been ended.'); }
  }
  throw new Problem(401, 'invalid_token', 'Unknown refresh token.');
});
// Ending a session closes its sockets with 4001, as the chat service does.
function endSession(s) {
  s.active = false;
  for (const ws of sockets) if (ws.sid === s.id) ws.close(4001, 'session revoked');
}
route('POST', '/auth/logout', ({ me }) => { endSession(sessions.get(me.sid)); return [204]; });
route('POST', '/auth/logout-all', ({ me }) => { for (const s of sessions.values()) if (s.user_id === me.user.id) endSession(s); return [204]; });
route('GET', '/auth/me', ({ me }) => [200, authUser(me.user)]);
route('GET', '/auth/sessions', ({ me }) => [200, { items: [...sessions.values()].filter((s) => s.user_id === me.user.id && s.active).map((s) => ({ id: s.id, created_at: s.created_at, last_used_at: s.last_used_at, user_agent: s.user_agent, ip: s.ip, current: s.id === me.sid })) }]);
route('DELETE', '/auth/sessions/:id', ({ me, p }) => { const s = sessions.get(p.id); if (!s || s.user_id !== me.user.id) throw new Problem(404, 'not_found', 'No such session.'); endSession(s); return [204]; });

route('GET', '/users/me', ({ me }) => [200, profile(me.user)]);
route('PATCH', '/users/me', ({ me, body }) => {
  if (body.bio !== undefined && body.bio.length > 500) throw new Problem(400, 'validation_failed', 'Bio is too long.', [{ field: 'bio', message: 'at most 500 characters' }]);
  if (body.avatar_url && !/^https:\/\//.test(body.avatar_url)) throw new Problem(400, 'validation_failed', 'Avatar URL must be https.', [{ field: 'avatar_url', message: 'must be an https URL' }]);
  for (const k of ['display_name', 'bio', 'avatar_url']) if (body[k] !== undefined) me.user[k] = body[k];
  return [200, profile(me.user)];
});
route('GET', '/users/search', ({ me, url }) => {
  const q = (url.searchParams.get('q') || '').toLowerCase();
  const items = [...users.values()].filter((u) => !blocks.has(`${u.id}>${me.user.id}`) && (u.username.includes(q) || u.display_name.toLowerCase().includes(q))).map(profile);
  return [200, page(items, url)];
});
route('GET', '/users/suggested', ({ me, url }) => [200, page([...users.values()].filter((u) => u.id !== me.user.id && !blocked(u.id, me.user.id) && !follows.has(`${me.user.id}>${u.id}`)).map(profile), url)]);
route('GET', '/users/me/friends', ({ me, url }) => [200, page([...users.values()].filter((u) => follows.has(`${me.user.id}>${u.id}`) && follows.has(`${u.id}>${me.user.id}`)).map(profile), url)]);
route('GET', '/users/me/blocks', ({ me, url }) => [200, page([...users.values()].filter((u) => blocks.has(`${me.user.id}>${u.id}`)).map(profile), url)]);
route('PUT', '/users/me/following/:id', ({ me, p }) => {
  if (p.id === me.user.id) throw new Problem(400, 'validation_failed', 'You cannot follow yourself.');
  if (!users.has(p.id)) throw new Problem(404, 'not_found', 'No such user.');
  if (blocked(me.user.id, p.id)) throw new Problem(403, 'blocked', 'You cannot follow this user.');
  follows.add(`${me.user.id}>${p.id}`); return [204];
});
route('DELETE', '/users/me/following/:id', ({ me, p }) => { follows.delete(`${me.user.id}>${p.id}`); return [204]; });
route('PUT', '/users/me/blocks/:id', ({ me, p }) => { blocks.add(`${me.user.id}>${p.id}`); follows.delete(`${me.user.id}>${p.id}`); follows.delete(`${p.id}>${me.user.id}`); return [204]; });
route('DELETE', '/users/me/blocks/:id', ({ me, p }) => { blocks.delete(`${me.user.id}>${p.id}`); return [204]; });
route('GET', '/users/:id/followers', ({ p, url }) => [200, page([...users.values()].filter((u) => follows.has(`${u.id}>${p.id}`)).map(profile), url)]);
route('GET', '/users/:id/following', ({ p, url }) => [200, page([...users.values()].filter((u) => follows.has(`${p.id}>${u.id}`)).map(profile), url)]);
route('GET', '/users/:id', ({ me, p }) => {
  const u = users.get(p.id);
  if (!u || blocks.has(`${u.id}>${me.user.id}`)) throw new Problem(404, 'not_found', 'No such user.');
  const a = me.user.id; const b = u.id;
  return [200, { ...profile(u), relationship: { following: follows.has(`${a}>${b}`), followed_by: follows.has(`${b}>${a}`), friends: follows.has(`${a}>${b}`) && follows.has(`${b}>${a}`), blocking: blocks.has(`${a}>${b}`) } }];
});

route('POST', '/chat/rooms', ({ me, body }) => {
  if (!String(body.name || '').trim()) throw new Problem(400, 'validation_failed', 'A room needs a name.', [{ field: 'name', message: 'is required' }]);
  if (!['public', 'private'].includes(body.visibility)) throw new Problem(400, 'validation_failed', 'Visibility must be public or private.', [{ field: 'visibility', message: 'must be public or private' }]);
  return [201, roomView(createRoom(body, me.user))];
});
route('GET', '/chat/rooms', ({ me, url }) => [200, page([...rooms.values()].filter((r) => r.members.has(me.user.id)).map((r) => roomView(r, me.user.id)), url)]);
route('GET', '/chat/rooms/discover', ({ url }) => {
  const q = (url.searchParams.get('q') || '').toLowerCase();
  return [200, page([...rooms.values()].filter((r) => r.room.kind === 'channel' && r.room.visibility === 'public' && r.room.name.toLowerCase().includes(q)).map((r) => roomView(r)), url)];
});
route('GET', '/chat/rooms/:id', ({ me, p }) => {
  const r = getRoom(p.id, me.user, { member: false });
  if (r.room.visibility === 'private' && !r.members.has(me.user.id)) throw new Problem(404, 'not_found', 'Room not found.');
  return [200, roomView(r)];
});
route('POST', '/chat/rooms/:id/join', ({ me, p }) => {
  const r = getRoom(p.id, me.user, { member: false });
  if (r.room.visibility !== 'public') throw new Problem(404, 'not_found', 'Room not found.');
  if (!r.members.has(me.user.id)) { r.members.set(me.user.id, { role: 'member', joined_at: now() }); addEvent(r, 'member.joined', { user_id: me.user.id }); }
  return [200, roomView(r)];
});
route('POST', '/chat/rooms/:id/leave', ({ me, p }) => { const r = getRoom(p.id, me.user); addEvent(r, 'member.left', { user_id: me.user.id }); r.members.delete(me.user.id); return [204]; });
route('GET', '/chat/rooms/:id/members', ({ me, p, url }) => [200, page([...getRoom(p.id, me.user).members].map(([user_id, m]) => ({ user_id, ...m })), url)]);
route('POST', '/chat/rooms/:id/members', ({ me, p, body }) => {
  const r = getRoom(p.id, me.user);
  if (!['owner', 'admin'].includes(r.members.get(me.user.id).role)) throw new Problem(403, 'forbidden', 'Only owners and admins can invite.');
  if (blocks.has(`${body.user_id}>${me.user.id}`)) throw new Problem(403, 'blocked', 'This person cannot be invited.');
  if (!users.has(body.user_id)) throw new Problem(404, 'not_found', 'No such user.');
  if (!r.members.has(body.user_id)) { r.members.set(body.user_id, { role: 'member', joined_at: now() }); addEvent(r, 'member.joined', { user_id: body.user_id }); }
  return [201, { user_id: body.user_id, role: 'member' }];
});
route('DELETE', '/chat/rooms/:id/members/:uid', ({ me, p }) => {
  const r = getRoom(p.id, me.user);
  if (!['owner', 'admin'].includes(r.members.get(me.user.id).role)) throw new Problem(403, 'forbidden', 'Only owners and admins can remove members.');
  if (r.members.has(p.uid)) { addEvent(r, 'member.removed', { user_id: p.uid }); r.members.delete(p.uid); }
  return [204];
});
route('PATCH', '/chat/rooms/:id/members/:uid', ({ me, p, body }) => {
  const r = getRoom(p.id, me.user);
  if (r.room.kind === 'dm' || r.members.get(me.user.id).role !== 'owner') throw new Problem(403, 'forbidden', 'Only the owner may change roles.');
  if (!['admin', 'member'].includes(body.role)) throw new Problem(400, 'validation_failed', 'Invalid role.', [{ field: 'role', message: 'must be "admin" or "member"' }]);
  const m = r.members.get(p.uid);
  if (!m) throw new Problem(404, 'member_not_found', 'No such member.');
  if (m.role !== body.role) { m.role = body.role; addEvent(r, 'member.role_changed', { user_id: p.uid, role: body.role }); }
  return [204];
});
route('POST', '/chat/dms', ({ me, body }) => {
  const other = users.get(body.user_id);
  if (!other) throw new Problem(404, 'not_found', 'No such user.');
  if (blocked(me.user.id, other.id)) throw new Problem(403, 'blocked', 'You cannot message this person.');
  const key = [me.user.id, other.id].sort().join(':');
  let r = [...rooms.values()].find((x) => x.dmKey === key);
  if (r) return [200, roomView(r)];
  r = createRoom({ name: '', visibility: 'private', kind: 'dm' }, me.user);
  r.dmKey = key;
  r.members.set(other.id, { role: 'member', joined_at: now() });
  addEvent(r, 'member.joined', { user_id: other.id });
  return [201, roomView(r)];
});
route('POST', '/chat/rooms/:id/messages', ({ me, p, body }) => { const { message, created } = postMessage(getRoom(p.id, me.user), me.user, body); return [created ? 201 : 200, message]; });
route('GET', '/chat/rooms/:id/messages', ({ me, p, url }) => {
  const r = getRoom(p.id, me.user);
  const before = url.searchParams.get('before'); const after = url.searchParams.get('after');
  const limit = Math.min(100, Number(url.searchParams.get('limit') || 50));
  let all = [...r.messages.values()].filter((m) => !m.thread_root_id).sort((a, b) => a.seq - b.seq).map((m) => msgView(r, m, me.user.id));
  if (after) { all = all.filter((m) => m.seq > Number(after)); return [200, { items: all.slice(0, limit), has_more: all.length > limit }]; }
  if (before) all = all.filter((m) => m.seq < Number(before));
  return [200, { items: all.slice(-limit), has_more: all.length > limit }];
});
route('PATCH', '/chat/rooms/:id/messages/:mid', ({ me, p, body }) => {
  const r = getRoom(p.id, me.user); const m = r.messages.get(p.mid);
  if (!m || m.deleted) throw new Problem(404, 'not_found', 'No such message.');
  if (m.sender_id !== me.user.id) throw new Problem(403, 'forbidden', 'You can only edit your own messages.');
  const text = String(body.body || '').trim();
  if (!text) throw new Problem(400, 'validation_failed', 'A message cannot be empty.', [{ field: 'body', message: 'must not be empty' }]);
  m.body = text; m.edited_at = now(); m.mentions = mentionsOf(r, me.user, text);
  addEvent(r, 'message.updated', { message: { ...m } });
  return [200, msgView(r, m, me.user.id)];
});
route('DELETE', '/chat/rooms/:id/messages/:mid', ({ me, p }) => {
  const r = getRoom(p.id, me.user); const m = r.messages.get(p.mid);
  if (!m) throw new Problem(404, 'not_found', 'No such message.');
  if (m.sender_id !== me.user.id && !['owner', 'admin'].includes(r.members.get(me.user.id).role)) throw new Problem(403, 'forbidden', 'Not allowed.');
  m.deleted = true; m.body = ''; m.edited_at = now(); m.attachments = [];
  addEvent(r, 'message.deleted', { message: { ...m } });
  return [204];
});
route('POST', '/chat/rooms/:id/read', ({ me, p, body }) => {
  const r = getRoom(p.id, me.user);
  const seq = Math.min(r.events.length, Number(body.seq) || 0);
  if (seq > (r.reads.get(me.user.id) || 0)) {
    r.reads.set(me.user.id, seq);
    r.readAt = { ...(r.readAt || {}), [me.user.id]: now() };
    readNotes(me.user.id, (n) => n.room_id === r.room.id && n.seq <= seq);
    const frame = JSON.stringify({ type: 'read', room_id: r.room.id, user_id: me.user.id, seq });
    for (const s of sockets) if (s.userId !== me.user.id && r.members.has(s.userId)) s.send(frame);
  }
  return [204];
});
route('GET', '/chat/rooms/:id/events', ({ me, p, url }) => {
  const r = getRoom(p.id, me.user); const after = Number(url.searchParams.get('after') || 0); const limit = Math.min(100, Number(url.searchParams.get('limit') || 50));
  const items = r.events.filter((e) => e.seq > after);
  return [200, { items: items.slice(0, limit), has_more: items.length > limit }];
});

// ---------- chat v1.1 ----------
route('GET', '/chat/rooms/:id/threads/:root/messages', ({ me, p, url }) => {
  const r = getRoom(p.id, me.user);
  const root = r.messages.get(p.root);
  if (!root || root.thread_root_id) throw new Problem(404, 'not_found', 'No such thread.');
  const after = Number(url.searchParams.get('after') || 0); const limit = Math.min(100, Number(url.searchParams.get('limit') || 50));
  const all = [...r.messages.values()].filter((m) => m.thread_root_id === root.id && m.seq > after).sort((a, b) => a.seq - b.seq);
  return [200, { items: all.slice(0, limit).map((m) => msgView(r, m, me.user.id)), has_more: all.length > limit }];
});
const EMOJI_RE = /^(:[a-z0-9_+-]{1,32}:|[^\p{L}\p{N}\s]{1,8})$/u;
function reactionRoute(add) {
  return ({ me, p }) => {
    const r = getRoom(p.id, me.user);
    const m = r.messages.get(p.mid);
    if (!m || m.deleted) throw new Problem(404, 'not_found', 'No such message.');
    const emoji = decodeURIComponent(p.emoji);
    if (!EMOJI_RE.test(emoji)) throw new Problem(400, 'invalid_emoji', 'That is not an emoji or a :shortcode:.');
    if (!r.reactions.has(m.id)) r.reactions.set(m.id, new Map());
    const map = r.reactions.get(m.id);
    const set = map.get(emoji) || new Set();
    if (add && !set.has(me.user.id)) {
      if (!map.has(emoji) && [...map.values()].filter((x) => x.size).length >= 20) throw new Problem(400, 'too_many_reactions', 'At most 20 different reactions per message.');
      set.add(me.user.id); map.set(emoji, set);
      addEvent(r, 'reaction.added', { message_id: m.id, emoji, user_id: me.user.id });
    } else if (!add && set.has(me.user.id)) {
      set.delete(me.user.id);
      if (!set.size) map.delete(emoji);
      addEvent(r, 'reaction.removed', { message_id: m.id, emoji, user_id: me.user.id });
    }
    return [204];
  };
}
route('PUT', '/chat/rooms/:id/messages/:mid/reactions/:emoji', reactionRoute(true));
route('DELETE', '/chat/rooms/:id/messages/:mid/reactions/:emoji', reactionRoute(false));
route('GET', '/chat/rooms/:id/messages/:mid/reactions', ({ me, p }) => {
  const r = getRoom(p.id, me.user);
  if (!r.messages.has(p.mid)) throw new Problem(404, 'not_found', 'No such message.');
  return [200, { items: [...(r.reactions.get(p.mid) || new Map())].map(([emoji, set]) => ({ emoji, count: set.size, user_ids: [...set] })) }];
});
function pinRoute(pin) {
  return ({ me, p }) => {
    const r = getRoom(p.id, me.user);
    if (!['owner', 'admin'].includes(r.members.get(me.user.id).role)) throw new Problem(403, 'forbidden', 'Only owners and admins can pin.');
    const m = r.messages.get(p.mid);
    if (!m) throw new Problem(404, 'not_found', 'No such message.');
    if (pin && !r.pins.has(m.id)) {
      if (r.pins.size >= 50) throw new Problem(409, 'too_many_pins', 'At most 50 pins per room.');
      r.pins.add(m.id);
      addEvent(r, 'message.pinned', { message_id: m.id, user_id: me.user.id });
    } else if (!pin && r.pins.has(m.id)) {
      r.pins.delete(m.id);
      addEvent(r, 'message.unpinned', { message_id: m.id, user_id: me.user.id });
    }
    return [204];
  };
}
route('PUT', '/chat/rooms/:id/pins/:mid', pinRoute(true));
route('DELETE', '/chat/rooms/:id/pins/:mid', pinRoute(false));
route('GET', '/chat/rooms/:id/pins', ({ me, p }) => {
  const r = getRoom(p.id, me.user);
  return [200, { items: [...r.pins].map((id) => msgView(r, r.messages.get(id), me.user.id)) }];
});
route('GET', '/chat/rooms/:id/read-markers', ({ me, p }) => {
  const r = getRoom(p.id, me.user);
  return [200, { items: [...r.reads].map(([user_id, seq]) => ({ user_id, seq, updated_at: r.readAt?.[user_id] || now() })) }];
});
// Search: every word of q (or "quoted phrase") must start a word of the body, case- and
// accent-insensitively; highlights in Unicode scalar values.
const fold = (t) => t.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase();
route('GET', '/chat/search', ({ me, url }) => {
  const q = (url.searchParams.get('q') || '').trim();
  if (!q || [...q].length > 200) throw new Problem(400, 'validation_failed', 'q must be 1 to 200 characters.', [{ field: 'q', message: 'must be 1–200 characters' }]);
  const terms = [...q.matchAll(/"([^"]+)"|(\S+)/g)].map((m) => fold(m[1] || m[2]));
  const roomFilter = url.searchParams.get('room_id');
  const hits = [];
  for (const r of rooms.values()) {
    if (!r.members.has(me.user.id) || (roomFilter && r.room.id !== roomFilter)) continue;
    for (const m of r.messages.values()) {
      if (m.deleted) continue;
      const chars = Array.from(m.body);
      const folded = chars.map((c) => fold(c)); // per code point, so offsets stay in code points
      const text = folded.join('');
      const highlights = [];
      let all = true;
      for (const t of terms) {
        let found = false;
        for (let i = 0; i < folded.length; i++) {
          const atWordStart = i === 0 || !/[\p{L}\p{N}]/u.test(chars[i - 1]);
          if (!atWordStart) continue;
          let j = i; let acc = '';
          while (j < folded.length && acc.length < t.length) acc += folded[j++];
          if (acc === t) { highlights.push({ start: i, end: j }); found = true; }
        }
        if (!found) { all = false; break; }
      }
      if (all && text) hits.push({ message: msgView(r, m, me.user.id), room_id: r.room.id, highlights: highlights.sort((a, b) => a.start - b.start) });
    }
  }
  hits.sort((a, b) => b.highlights.length - a.highlights.length || (b.message.created_at > a.message.created_at ? 1 : -1));
  return [200, page(hits, url)];
});
// Presence: online while a socket of the user is open and active, idle when all open ones
// are idle, offline OFFLINE_MS after the last one closed.
const OFFLINE_MS = Number(process.env.PRESENCE_OFFLINE_MS || 30_000);
const lastSeen = new Map(); // user id -> ISO time
const shownStatus = new Map(); // user id -> last status sent
const offlineTimers = new Map();
function presenceOf(userId) {
  const open = [...sockets].filter((s) => s.userId === userId);
  if (open.length) return open.some((s) => !s.idle) ? 'online' : 'idle';
  return offlineTimers.has(userId) ? (shownStatus.get(userId) || 'offline') : 'offline';
}
function presenceItem(userId) { return { user_id: userId, status: presenceOf(userId), last_seen_at: lastSeen.get(userId) || null }; }
function presenceChanged(userId) {
  lastSeen.set(userId, now());
  const status = presenceOf(userId);
  if (shownStatus.get(userId) === status) return;
  shownStatus.set(userId, status);
  const frame = JSON.stringify({ type: 'presence', ...presenceItem(userId) });
  for (const s of sockets) if (s.watch?.has(userId)) s.send(frame);
}
route('GET', '/chat/presence', ({ url }) => {
  const ids = (url.searchParams.get('user_ids') || '').split(',').filter(Boolean);
  if (ids.length > 200) throw new Problem(400, 'validation_failed', 'At most 200 user ids.', [{ field: 'user_ids', message: 'at most 200' }]);
  return [200, { items: ids.map(presenceItem) }];
});

// ---------- notifications (v1.1) ----------
const notes = []; // newest last: {id, user, kind, room_id, message_id, seq, actor_id, preview, created_at, read_at}
const roomLevels = new Map(); // "user:room" -> {level, muted_until}
const prefs = new Map(); // user -> {email, web_push, previews, timezone}
const pushSubs = new Map(); // id -> {user, endpoint}
const VAPID = crypto.createECDH('prime256v1');
VAPID.generateKeys();
const b64u = (buf) => Buffer.from(buf).toString('base64url');
const prefsOf = (uid) => prefs.get(uid) || { email: 'instant', web_push: true, previews: true, timezone: 'UTC' };
function levelOf(uid, r) {
  return roomLevels.get(`${uid}:${r.room.id}`) || { level: r.room.kind === 'dm' ? 'all' : 'mentions', muted_until: null };
}
function sendCount(uid) {
  const frame = JSON.stringify({ type: 'notifications', unread_count: notes.filter((n) => n.user === uid && !n.read_at).length });
  for (const s of sockets) if (s.userId === uid) s.send(frame);
}
function notifyMessage(r, m) {
  const parent = m.reply_to ? r.messages.get(m.reply_to) : m.thread_root_id ? r.messages.get(m.thread_root_id) : null;
  for (const uid of r.members.keys()) {
    if (uid === m.sender_id || blocks.has(`${uid}>${m.sender_id}`)) continue;
    const { level, muted_until } = levelOf(uid, r);
    if (level === 'none' || (muted_until && Date.parse(muted_until) > Date.now())) continue;
    const kind = r.room.kind === 'dm' ? 'dm' : m.mentions.includes(uid) ? 'mention' : parent?.sender_id === uid ? 'reply' : level === 'all' ? 'message' : null;
    if (!kind) continue;
    notes.push({ id: uuid(), user: uid, kind, room_id: r.room.id, message_id: m.id, seq: m.seq, actor_id: m.sender_id,
      preview: prefsOf(uid).previews ? [...m.body].slice(0, 140).join('') : '', created_at: now(), read_at: null });
    sendCount(uid);
  }
}
function readNotes(uid, pred) {
  let n = 0;
  for (const x of notes) if (x.user === uid && !x.read_at && pred(x)) { x.read_at = now(); n++; }
  if (n) sendCount(uid);
}
const noteView = ({ user, ...n }) => n;
route('GET', '/notifications', ({ me, url }) => {
  const unread = url.searchParams.get('unread') === 'true';
  return [200, page(notes.filter((n) => n.user === me.user.id && (!unread || !n.read_at)).reverse().map(noteView), url)];
});
route('GET', '/notifications/unread-count', ({ me }) => [200, { count: notes.filter((n) => n.user === me.user.id && !n.read_at).length }]);
route('POST', '/notifications/read', ({ me, body }) => {
  if (body.all === true) readNotes(me.user.id, () => true);
  else if (Array.isArray(body.ids)) readNotes(me.user.id, (n) => body.ids.includes(n.id));
  else throw new Problem(400, 'validation_failed', 'Send ids or all.', [{ field: 'ids', message: 'send either {"ids": [...]} or {"all": true}' }]);
  return [204];
});
route('GET', '/notifications/preferences', ({ me }) => [200, prefsOf(me.user.id)]);
route('PUT', '/notifications/preferences', ({ me, body }) => {
  const zones = new Set(['UTC', ...Intl.supportedValuesOf('timeZone')]);
  if (body.timezone !== undefined && !zones.has(body.timezone)) throw new Problem(400, 'validation_failed', 'Invalid preferences.', [{ field: 'timezone', message: 'must be an IANA time zone name' }]);
  const next = { ...prefsOf(me.user.id) };
  for (const k of ['email', 'web_push', 'previews', 'timezone']) if (body[k] !== undefined) next[k] = body[k];
  prefs.set(me.user.id, next);
  return [200, next];
});
route('GET', '/notifications/rooms/:id', ({ me, p }) => [200, { room_id: p.id, ...levelOf(me.user.id, getRoom(p.id, me.user)) }]);
route('PUT', '/notifications/rooms/:id', ({ me, p, body }) => {
  const r = getRoom(p.id, me.user);
  if (body.level !== undefined && !['all', 'mentions', 'none'].includes(body.level)) throw new Problem(400, 'validation_failed', 'Invalid level.', [{ field: 'level', message: 'must be all, mentions or none' }]);
  const next = { ...levelOf(me.user.id, r) };
  if (body.level !== undefined) next.level = body.level;
  if (body.muted_until !== undefined) next.muted_until = body.muted_until === null ? null : new Date(body.muted_until).toISOString();
  roomLevels.set(`${me.user.id}:${r.room.id}`, next);
  return [200, { room_id: p.id, ...next }];
});
route('GET', '/notifications/push/vapid-public-key', () => [200, { key: b64u(VAPID.getPublicKey()) }]);
route('POST', '/notifications/push/subscriptions', ({ me, body }) => {
  if (!/^https:\/\//.test(body.endpoint || '')) throw new Problem(400, 'validation_failed', 'Invalid subscription.', [{ field: 'endpoint', message: 'must be an https URL of a public push service' }]);
  const existing = [...pushSubs].find(([, v]) => v.endpoint === body.endpoint);
  const id = existing ? existing[0] : uuid();
  pushSubs.set(id, { user: me.user.id, endpoint: body.endpoint });
  return [201, { id }];
});
route('DELETE', '/notifications/push/subscriptions/:id', ({ me, p }) => {
  if (pushSubs.get(p.id)?.user !== me.user.id) throw new Problem(404, 'subscription_not_found', 'No such push subscription.');
  pushSubs.delete(p.id);
  return [204];
});

// ---------- server ----------
function send(res, status, body, headers = {}) {
  const h = { 'X-Request-Id': uuid(), ...headers };
  if (body === undefined) { res.writeHead(status, h); res.end(); return; }
  const isProblem = status >= 400;
  res.writeHead(status, { ...h, 'Content-Type': isProblem ? 'application/problem+json' : 'application/json' });
  res.end(JSON.stringify(body));
}

// ---------- files (v1.1): raw uploads, bytes for the uploader and the members of rooms where attached ----------
const IMAGE_TYPES = { png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp' };
async function filesRoute(req, res, url) {
  const me = whoami(req, url);
  const p = url.pathname;
  if (req.method === 'POST' && p === '/files') {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const bytes = Buffer.concat(chunks);
    const filename = url.searchParams.get('filename') || 'upload';
    if (bytes.length > 25 * 1024 * 1024) throw new Problem(413, 'payload_too_large', 'The file is too large.');
    const png = bytes.length > 24 && bytes.readUInt32BE(12) === 0x49484452; // "IHDR"
    const ext = filename.split('.').pop().toLowerCase();
    const type = png ? 'image/png' : IMAGE_TYPES[ext] || (bytes.includes(0) ? 'application/octet-stream' : 'text/plain');
    const image = type.startsWith('image/');
    const id = uuid();
    const file = { id, filename, content_type: type, size: bytes.length, sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
      width: png ? bytes.readUInt32BE(16) : null, height: png ? bytes.readUInt32BE(20) : null, created_at: now(),
      url: `/files/${id}`, thumbnail_url: image ? `/files/${id}/thumbnail` : null };
    files.set(id, { owner: me.user.id, bytes, file, rooms: new Set() });
    send(res, 201, file);
    return;
  }
  const m = p.match(/^\/files\/([^/]+)(\/thumbnail)?$/);
  const f = m && files.get(m[1]);
  const allowed = f && (f.owner === me.user.id || [...f.rooms].some((rid) => rooms.get(rid)?.members.has(me.user.id)));
  if (req.method !== 'GET' || !allowed) throw new Problem(404, 'file_not_found', 'No such file.');
  const image = f.file.content_type.startsWith('image/');
  res.writeHead(200, { 'Content-Type': f.file.content_type, 'Content-Length': f.bytes.length, 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'private',
    ...(image ? {} : { 'Content-Disposition': `attachment; filename="${f.file.filename.replace(/"/g, '')}"` }) });
  res.end(f.bytes);
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, `http://${req.headers.host}`);
  const p = url.pathname;
  if (/^\/files(\/|$)/.test(p)) {
    try { await filesRoute(req, res, url); } catch (e) {
      if (!(e instanceof Problem)) { console.error(e); e = new Problem(500, 'internal', 'Internal error.'); }
      send(res, e.status, { type: 'about:blank', title: http.STATUS_CODES[e.status], status: e.status, detail: e.detail, code: e.code });
    }
    return;
  }
  if (req.method === 'GET' && !/^\/(auth|users|chat|notifications)(\/|$)/.test(p)) {
    const file = path.join(WEB_ROOT, p === '/' ? 'index.html' : path.normalize(p));
    if (!file.startsWith(WEB_ROOT) || file.includes(`${path.sep}e2e${path.sep}`) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) { res.writeHead(404); res.end('not found'); return; }
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream', 'Content-Security-Policy': CSP, 'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff' });
    fs.createReadStream(file).pipe(res);
    return;
  }
  let raw = '';
  for await (const chunk of req) raw += chunk;
  try {
    const r = routes.find((x) => x.method === req.method && x.re.test(p));
    if (!r) throw new Problem(404, 'not_found', `No route for ${req.method} ${p}.`);
    let body = {};
    if (raw) { try { body = JSON.parse(raw); } catch { throw new Problem(400, 'malformed_json', 'The body is not valid JSON.'); } }
    const isPublic = ['/auth/register', '/auth/login', '/auth/refresh'].includes(p);
    const me = isPublic ? null : whoami(req, url);
    const [status, out] = await r.fn({ req, url, body, me, p: p.match(r.re).groups || {} });
    send(res, status, out);
  } catch (e) {
    if (!(e instanceof Problem)) { console.error(e); e = new Problem(500, 'internal', 'Internal error.'); }
    send(res, e.status, { type: 'about:blank', title: http.STATUS_CODES[e.status], status: e.status, detail: e.detail, code: e.code, ...(e.errors ? { errors: e.errors } : {}) });
  }
});

const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, `http://${req.headers.host}`);
  if (url.pathname !== '/chat/ws') { socket.destroy(); return; }
  let me;
  try { me = whoami(req, url); } catch { socket.write('HTTP/1.1 401 Unauthorized\r\n\r\n'); socket.destroy(); return; }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.userId = me.user.id;
    ws.sid = me.sid;
    sockets.add(ws);
    ws.send(JSON.stringify({ type: 'ready', rooms: Object.fromEntries([...rooms.values()].filter((r) => r.members.has(me.user.id)).map((r) => [r.room.id, r.events.length])) }));
    clearTimeout(offlineTimers.get(me.user.id));
    offlineTimers.delete(me.user.id);
    presenceChanged(me.user.id);
    ws.on('close', () => {
      sockets.delete(ws);
      const uid = me.user.id;
      if ([...sockets].some((s) => s.userId === uid)) { presenceChanged(uid); return; }
      // A quick reconnect shows no offline blip.
      clearTimeout(offlineTimers.get(uid));
      offlineTimers.set(uid, setTimeout(() => { offlineTimers.delete(uid); presenceChanged(uid); }, OFFLINE_MS));
    });
    ws.on('message', (data) => {
      let f;
      try { f = JSON.parse(String(data)); } catch { ws.send(JSON.stringify({ type: 'error', code: 'malformed', message: 'Malformed frame.' })); return; }
      try {
        if (f.type === 'ping') ws.send(JSON.stringify({ type: 'pong' }));
        else if (f.type === 'send') {
          const r = getRoom(f.room_id, me.user);
          const { message } = postMessage(r, me.user, f);
          ws.send(JSON.stringify({ type: 'ack', client_msg_id: f.client_msg_id, message }));
        } else if (f.type === 'resume') {
          for (const [rid, seq] of Object.entries(f.rooms || {})) {
            const r = rooms.get(rid);
            if (!r || !r.members.has(me.user.id)) continue;
            for (const ev of r.events.filter((e) => e.seq > Number(seq))) ws.send(JSON.stringify({ type: 'event', room_id: rid, seq: ev.seq, event: ev }));
          }
        } else if (f.type === 'typing') {
          const r = getRoom(f.room_id, me.user);
          for (const s of sockets) if (s !== ws && s.userId !== me.user.id && r.members.has(s.userId)) s.send(JSON.stringify({ type: 'typing', room_id: f.room_id, user_id: me.user.id }));
        } else if (f.type === 'presence.subscribe') {
          const ids = Array.isArray(f.user_ids) ? f.user_ids.slice(0, 200) : [];
          ws.watch = new Set(ids);
          for (const id of ids) ws.send(JSON.stringify({ type: 'presence', ...presenceItem(id) }));
        } else if (f.type === 'idle' || f.type === 'active') {
          ws.idle = f.type === 'idle';
          presenceChanged(me.user.id);
        } else ws.send(JSON.stringify({ type: 'error', code: 'unknown_type', message: 'Unknown frame type.' }));
      } catch (e) {
        ws.send(JSON.stringify({ type: 'error', client_msg_id: f.client_msg_id, code: e.code || 'internal', message: e.detail || 'Error.' }));
      }
    });
  });
});

server.listen(PORT, '127.0.0.1', () => console.log(`mock IntelliColab on http://127.0.0.1:${PORT}/ (web root ${WEB_ROOT}, token ttl ${TOKEN_TTL}s)`));
