// Application state shared by the views: the signed-in user, my rooms (with unread counts,
// last message and the last applied event seq), pending (optimistic) messages, a profile
// cache, my block list, and the realtime connection. Views listen to its events:
//   rooms        the room list changed
//   room-event   {room_id, event}  an event was applied (deduplicated, in seq order)
//   pending      {room_id}         the pending messages of a room changed
//   typing       {room_id, user_id}
//   status       {state}           realtime connection state
//   removed      {room_id}         I left / was removed from a room
//   read         {room_id, user_id, seq}   a member moved their read marker (v1.1)
//   presence     {user_id, status}         a watched user's presence changed (v1.1)
//
// Nothing here touches `window` or `document` when the module is imported, and everything
// the store reaches outside itself (HTTP, the signed-in user, the WebSocket, the page's
// visibility, announcements) comes through `env`: the unit tests in web/test/ run the
// store under node with fakes (`new Store({ api, auth, ... })`).

import { api, auth } from './api.js';
import { Realtime } from './ws.js';
import { announce, toast } from './dom.js';

export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((n) => n.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** Fetch every page of a cursor-paginated list (bounded). */
export function fetchAll(path, query = {}, maxPages = 20) {
  return fetchPages(api, path, query, maxPages);
}

async function fetchPages(call, path, query, maxPages) {
  const items = [];
  let cursor = null;
  for (let i = 0; i < maxPages; i++) {
    const page = await call(path, { query: { ...query, limit: 100, cursor } });
    items.push(...(page?.items || []));
    cursor = page?.next_cursor;
    if (!cursor) break;
  }
  return items;
}

/** Names and avatars of others are fetched again after this long. */
const PROFILE_TTL_MS = 5 * 60 * 1000;
/** A message still unacknowledged this long while the socket is down goes over HTTP. */
const HTTP_FALLBACK_MS = 8000;
const ROOM_LIST_REFRESH_MS = 60_000;
/** A failed gap fill is tried again after 1 s, doubling up to 30 s, until it succeeds. */
const FILL_RETRY_FIRST_MS = 1000;
const FILL_RETRY_MAX_MS = 30_000;
/** Without input this long (or with the page hidden) I show as idle to others (v1.1). */
const IDLE_AFTER_MS = 5 * 60 * 1000;
/** The server takes at most this many ids in a presence subscription. */
export const PRESENCE_MAX = 200;
/** An id whose presence a GET did not tell is not asked for again sooner than this. */
const PRESENCE_ASK_AGAIN_MS = 30_000;

/** What the store uses from the page; `new Store(env)` replaces any of it. */
const browserEnv = {
  api,
  auth,
  Realtime,
  announce,
  toast,
  pageVisible: () => document.visibilityState === 'visible',
};

export class Store extends EventTarget {
  constructor(env = {}) {
    super();
    this.env = { ...browserEnv, ...env };
    this.reset();
  }

  reset() {
    this.rooms = new Map();
    this.roomsLoaded = false;
    this.activeRoomId = null;
    this.profiles = new Map(); // id -> Promise<Profile|null>
    this.profileData = new Map(); // id -> Profile (resolved)
    this.profileAt = new Map(); // id -> when it was fetched (ms)
    this.dmPeers = new Map(); // room id -> peer user id
    this.blocked = new Set();
    this.pending = new Map(); // room id -> Map(client_msg_id -> pending message)
    this.reactions = new Reactions(() => this.me?.id);
    this.threads = new ThreadCounts();
    this.pins = new Map(); // room id -> Set(message id)
    this.readMarkers = new Map(); // room id -> Map(user id -> seq)
    this.presence = new Map(); // user id -> {status, last_seen_at}
    this.presenceWatch = new Map(); // key (a view part) -> [user ids]
    this._presenceSent = '';
    this._presenceAsked = new Map(); // user id -> when GET /chat/presence last asked for it
    this.idle = false;
    clearTimeout(this._idleTimer);
    this.connection = 'closed';
    if (this.rt) this.rt.stop();
    clearInterval(this._pollTimer);
    this._wasOpen = false;
    this.rt = null;
    this._reloadTimer = null;
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  get me() { return this.env.auth.user; }

  api(path, options) { return this.env.api(path, options); }

  fetchAll(path, query = {}, maxPages = 20) { return fetchPages(this.env.api, path, query, maxPages); }

  // ---------- start / stop ----------

  async start() {
    await Promise.all([this.loadRooms(), this.loadBlocks()]);
    const { auth } = this.env;
    this.rt = new this.env.Realtime({
      // After repeated failures to connect, the token itself may be the problem (its
      // session ended elsewhere): refresh it; a refused refresh logs out.
      getToken: (force) => (force ? auth.refresh() : auth.token()),
      resumeState: () => {
        const state = {};
        for (const r of this.rooms.values()) state[r.id] = r.lastSeq || 0;
        return state;
      },
    });
    this.rt.addEventListener('status', (e) => {
      const prev = this.connection;
      this.connection = e.detail.state;
      this.emit('status', e.detail);
      // A reconnect after an outage: the room list (unread counts) may be stale too.
      if (e.detail.state === 'open' && prev !== 'open' && this._wasOpen) this.scheduleRoomReload();
      if (e.detail.state === 'open') {
        this._wasOpen = true;
        // A new connection starts with no subscription and active: say both again.
        this._presenceSent = '';
        this.sendPresenceSubscription();
        if (this.idle) this.rt.idle(true);
      }
    });
    this.rt.addEventListener('read', (e) => this.handleRead(e.detail));
    this.rt.addEventListener('presence', (e) => this.handlePresence(e.detail));
    this.rt.addEventListener('notifications', (e) => this.emit('notifications', e.detail));
    this.rt.addEventListener('event', (e) => this.handleFrame(e.detail));
    this.rt.addEventListener('ack', (e) => this.handleAck(e.detail));
    this.rt.addEventListener('send-error', (e) => this.handleSendError(e.detail));
    this.rt.addEventListener('typing', (e) => {
      if (e.detail.user_id !== this.me?.id) this.emit('typing', e.detail);
    });
    this.rt.addEventListener('error', (e) => {
      // Not (or no longer) a member of a room I resumed: the room list will drop it.
      if (e.detail.code === 'not_member') this.scheduleRoomReload();
      else console.warn('realtime error frame', e.detail);
    });
    this.rt.start();
    // A safety net for anything the socket did not bring (and for counters changed on
    // another device): refresh the room list now and then while the page is visible.
    this._pollTimer = setInterval(() => {
      if (this.env.pageVisible()) this.scheduleRoomReload();
    }, ROOM_LIST_REFRESH_MS);
  }

  stop() { this.reset(); }

  // ---------- rooms ----------

  async loadRooms() {
    const startedAt = Date.now();
    const items = await this.fetchAll('/chat/rooms');
    const seen = new Set();
    for (const r of items) {
      seen.add(r.id);
      this.upsertRoom(r, { fromList: true });
    }
    // Rooms I am no longer in (left elsewhere, removed while offline) go; rooms added while
    // the list was on its way (created or joined just now) stay.
    for (const [id, room] of [...this.rooms]) {
      if (!seen.has(id) && room.addedAt < startedAt) {
        this.rooms.delete(id);
        this.emit('removed', { room_id: id });
      }
    }
    this.roomsLoaded = true;
    this.emit('rooms');
    this.resolveDmPeers();
  }

  scheduleRoomReload() {
    clearTimeout(this._reloadTimer);
    this._reloadTimer = setTimeout(() => this.loadRooms().catch(() => {}), 300);
  }

  upsertRoom(r, { fromList = false } = {}) {
    const existing = this.rooms.get(r.id);
    if (existing) {
      // The applied-event mark (lastSeq) only moves as events are applied, so that no event
      // is skipped. The counters events move (unread count, last message, member count) are
      // taken from a snapshot only when it was taken at that mark. Ahead of it (events still
      // on their way) the events will update them: keep ours and catch up. Behind it (the
      // list left the server before events we have applied since) it is older than ours.
      const lastSeq = existing.lastSeq || 0;
      const snapshotSeq = r.last_seq || 0;
      const counters = {
        unread_count: existing.unread_count,
        last_message: existing.last_message,
        member_count: existing.member_count,
      };
      Object.assign(existing, r);
      existing.lastSeq = lastSeq;
      if (snapshotSeq !== lastSeq) {
        Object.assign(existing, counters);
        existing.last_seq = Math.max(lastSeq, snapshotSeq);
      }
      if (snapshotSeq > lastSeq && fromList) setTimeout(() => this.catchUp(existing, snapshotSeq), 1500);
      return existing;
    }
    const room = { unread_count: 0, last_message: null, ...r, lastSeq: r.last_seq || 0, buffer: new Map(), filling: false, fillRetryMs: 0, addedAt: Date.now() };
    this.rooms.set(r.id, room);
    return room;
  }

  /** Rooms to show in the list: newest activity first, DMs with blocked people hidden. */
  visibleRooms() {
    return [...this.rooms.values()]
      // A DM is listed once its other member is known (its title is their name), and not
      // at all when I block them.
      .filter((r) => r.kind !== 'dm' || (this.dmPeers.has(r.id) && !this.blocked.has(this.dmPeers.get(r.id))))
      .sort((a, b) => (activity(b) > activity(a) ? 1 : activity(b) < activity(a) ? -1 : 0));
  }

  async resolveDmPeers() {
    const todo = [...this.rooms.values()].filter((r) => r.kind === 'dm' && !this.dmPeers.has(r.id));
    await Promise.all(todo.map(async (r) => {
      try {
        const members = await this.fetchAll(`/chat/rooms/${r.id}/members`, {}, 1);
        const peer = members.find((m) => m.user_id !== this.me?.id) || members[0];
        this.dmPeers.set(r.id, peer ? peer.user_id : null);
        if (peer) await this.profile(peer.user_id).catch(() => null);
      } catch {
        this.dmPeers.set(r.id, null); // show it unnamed rather than not at all
      }
    }));
    if (todo.length) this.emit('rooms');
  }

  roomTitle(room) {
    if (!room) return '';
    if (room.kind === 'dm') {
      const peer = this.profileData.get(this.dmPeers.get(room.id));
      return peer ? (peer.display_name || peer.username) : (room.name || 'Direct message');
    }
    return room.name || 'Untitled room';
  }

  async createRoom({ name, visibility, topic }) {
    const body = { name, visibility };
    if (topic) body.topic = topic;
    const room = await this.api('/chat/rooms', { method: 'POST', body });
    this.upsertRoom(room, { fromList: true });
    this.emit('rooms');
    return room;
  }

  async joinRoom(id) {
    const room = await this.api(`/chat/rooms/${id}/join`, { method: 'POST' });
    this.upsertRoom(room, { fromList: true });
    this.emit('rooms');
    return room;
  }

  async leaveRoom(id) {
    await this.api(`/chat/rooms/${id}/leave`, { method: 'POST' });
    this.forgetRoom(id);
  }

  forgetRoom(id) {
    this.rooms.get(id)?.buffer.clear();
    this.rooms.delete(id);
    this.pending.delete(id);
    this.emit('rooms');
    this.emit('removed', { room_id: id });
  }

  async openDm(userId) {
    const room = await this.api('/chat/dms', { method: 'POST', body: { user_id: userId } });
    this.upsertRoom(room, { fromList: true });
    this.dmPeers.set(room.id, userId);
    this.emit('rooms');
    return room;
  }

  // ---------- profiles & blocks ----------

  profile(id, { fresh = false } = {}) {
    if (!id) return Promise.resolve(null);
    const age = Date.now() - (this.profileAt.get(id) || 0);
    if (!fresh && this.profiles.has(id) && age < PROFILE_TTL_MS) return this.profiles.get(id);
    this.profileAt.set(id, Date.now());
    const p = this.api(`/users/${id}`).then((profile) => {
      this.profileData.set(id, profile);
      return profile;
    }).catch((e) => {
      if (e.status === 404) return null; // hidden from me (blocked) or gone: remembered as such
      this.profiles.delete(id); // other failures: allow a retry
      this.profileAt.delete(id);
      throw e;
    });
    this.profiles.set(id, p);
    return p;
  }

  /** A display name now if known (else the fallback) — and fetch it for next time. */
  nameOf(id, fallback = 'Someone') {
    if (id && id === this.me?.id) return this.me.display_name || this.me.username || 'You';
    const p = this.profileData.get(id);
    if (Date.now() - (this.profileAt.get(id) || 0) >= PROFILE_TTL_MS) this.profile(id).catch(() => {});
    if (p) return p.display_name || p.username;
    return fallback;
  }

  rememberProfile(profile) {
    if (!profile?.id) return;
    this.profileData.set(profile.id, { ...(this.profileData.get(profile.id) || {}), ...profile });
    this.profiles.set(profile.id, Promise.resolve(this.profileData.get(profile.id)));
    this.profileAt.set(profile.id, Date.now());
  }

  async loadBlocks() {
    try {
      const items = await this.fetchAll('/users/me/blocks');
      this.blocked = new Set(items.map((p) => p.id));
    } catch { /* not fatal */ }
  }

  setBlocked(userId, blocked) {
    if (blocked) this.blocked.add(userId); else this.blocked.delete(userId);
    this.emit('rooms');
    const active = this.rooms.get(this.activeRoomId);
    if (blocked && active?.kind === 'dm' && this.dmPeers.get(active.id) === userId) {
      this.emit('removed', { room_id: active.id, hidden: true });
    }
  }

  // ---------- events ----------

  handleFrame(frame) {
    const event = frame.event || frame;
    const roomId = frame.room_id || event.room_id;
    const seq = Number(frame.seq ?? event.seq);
    const room = this.rooms.get(roomId);
    if (!room) {
      // A room I was just added to (invite, DM from someone): load the list again.
      this.scheduleRoomReload();
      return;
    }
    if (!(seq > room.lastSeq)) return; // already applied: at-least-once delivery
    if (seq > room.lastSeq + 1) {
      room.buffer.set(seq, event);
      this.fillGap(room);
      return;
    }
    this.apply(room, event, seq);
    // Applying can forget the room (I left or was removed): what follows is not mine to see.
    while (this.rooms.get(roomId) === room && room.buffer.has(room.lastSeq + 1)) {
      const next = room.lastSeq + 1;
      const ev = room.buffer.get(next);
      room.buffer.delete(next);
      this.apply(room, ev, next);
    }
    for (const s of room.buffer.keys()) if (s <= room.lastSeq) room.buffer.delete(s);
  }

  /** Fetch missed events over HTTP until `target` (if the socket did not bring them). */
  catchUp(room, target) {
    if (this.rooms.get(room.id) !== room || room.lastSeq >= target) return;
    this.fillGap(room, target);
  }

  /**
   * Fetch the events after the applied mark until nothing is held back behind a gap and
   * `target` is reached. One fill per room at a time: frames that arrive meanwhile are held
   * in the buffer, and the running fill goes on while it is not empty. A fill that failed
   * for a passing reason (network, 5xx, 429) is tried again with back-off: in a quiet room
   * no further frame would start another, and the held-back events would stay unshown.
   * Refused (no longer a member): the room list is reloaded, which drops the room.
   */
  async fillGap(room, target = 0) {
    if (room.filling) return;
    room.filling = true;
    const mine = () => this.rooms.get(room.id) === room;
    let retry = false;
    try {
      for (let i = 0; i < 50 && mine() && (room.buffer.size || room.lastSeq < target); i++) {
        const page = await this.api(`/chat/rooms/${room.id}/events`, { query: { after: room.lastSeq, limit: 100 } });
        for (const ev of page?.items || []) {
          if (!mine()) break; // forgotten while the page was on its way, or by one of its events
          this.handleFrame({ room_id: room.id, seq: ev.seq, event: ev });
        }
        if (!page?.has_more) break;
      }
      room.fillRetryMs = 0;
    } catch (e) {
      console.warn('could not fill event gap', e);
      retry = !!(e.network || e.status >= 500 || e.status === 429 || !e.status);
      if (!retry) this.scheduleRoomReload();
    } finally {
      room.filling = false;
    }
    if (retry && mine()) {
      room.fillRetryMs = Math.min(room.fillRetryMs ? room.fillRetryMs * 2 : FILL_RETRY_FIRST_MS, FILL_RETRY_MAX_MS);
      setTimeout(() => { if (mine()) this.fillGap(room, target); }, room.fillRetryMs);
    }
  }

  apply(room, event, seq) {
    room.lastSeq = seq;
    room.last_seq = Math.max(room.last_seq || 0, seq);
    const me = this.me?.id;
    const msg = event.message;
    switch (event.kind) {
      case 'message.created': {
        if (msg.thread_root_id) this.threads.reply(msg);
        room.last_message = msg;
        if (msg.sender_id === me) {
          this.clearPending(room.id, msg.client_msg_id);
        } else {
          const watching = this.activeRoomId === room.id && this.env.pageVisible();
          if (!watching) room.unread_count = (room.unread_count || 0) + 1;
          if (this.activeRoomId === room.id) {
            this.env.announce(`${this.nameOf(msg.sender_id)}: ${msg.body}`);
          }
        }
        break;
      }
      case 'message.updated':
      case 'message.deleted':
        if (room.last_message?.id === msg?.id) room.last_message = msg;
        break;
      case 'reaction.added':
      case 'reaction.removed':
        this.reactions.apply(event);
        break;
      case 'message.pinned':
      case 'message.unpinned':
        applyPinEvent(this.pinsOf(room.id), event);
        break;
      case 'member.joined':
        room.member_count = (room.member_count || 0) + 1;
        break;
      case 'member.left':
      case 'member.removed':
        room.member_count = Math.max(0, (room.member_count || 1) - 1);
        if (event.user_id === me) {
          if (event.kind === 'member.removed') this.env.toast(`You were removed from ${this.roomTitle(room)}.`, 'info');
          this.forgetRoom(room.id);
          return;
        }
        break;
      default:
        break;
    }
    this.emit('room-event', { room_id: room.id, event });
    this.emit('rooms');
  }

  // ---------- sending ----------

  pendingFor(roomId) {
    if (!this.pending.has(roomId)) this.pending.set(roomId, new Map());
    return this.pending.get(roomId);
  }

  /**
   * Send a message; `threadRootId` puts it in that message's thread (v1.1); `attachments`:
   * uploaded `File`s (files v1.1), sent as `attachment_ids`.
   */
  sendMessage(roomId, body, replyTo, threadRootId, attachments = []) {
    const clientMsgId = uuid();
    const p = {
      client_msg_id: clientMsgId, room_id: roomId, body, reply_to: replyTo || null,
      thread_root_id: threadRootId || null, attachments,
      sender_id: this.me?.id, created_at: new Date().toISOString(), state: 'pending',
    };
    this.pendingFor(roomId).set(clientMsgId, p);
    this.emit('pending', { room_id: roomId });
    this.rt?.sendMessage(sendFrame(p));
    this.scheduleHttpFallback(roomId, clientMsgId);
    return p;
  }

  /**
   * If a message is still pending after a while and the socket is down, post it over HTTP
   * with the same client_msg_id: the server stores it once whichever way arrives first.
   */
  scheduleHttpFallback(roomId, clientMsgId, delay = HTTP_FALLBACK_MS) {
    setTimeout(async () => {
      const p = this.pending.get(roomId)?.get(clientMsgId);
      if (!p || p.state !== 'pending' || !this.rt) return;
      if (this.rt.state === 'open') { this.scheduleHttpFallback(roomId, clientMsgId, delay); return; }
      try {
        const body = { body: p.body, client_msg_id: clientMsgId };
        if (p.reply_to) body.reply_to = p.reply_to;
        if (p.thread_root_id) body.thread_root_id = p.thread_root_id;
        if (p.attachments?.length) body.attachment_ids = p.attachments.map((f) => f.id);
        const message = await this.api(`/chat/rooms/${roomId}/messages`, { method: 'POST', body });
        this.rt?.dropPending(clientMsgId);
        this.handleAck({ client_msg_id: clientMsgId, message });
      } catch (e) {
        if (e.network || e.status >= 500 || e.status === 429) {
          this.scheduleHttpFallback(roomId, clientMsgId, Math.min(delay * 2, 60_000));
        } else if (e.status) {
          this.rt?.dropPending(clientMsgId);
          this.handleSendError({ client_msg_id: clientMsgId, code: e.code, message: e.humanMessage() });
        }
      }
    }, delay);
  }

  retryPending(roomId, clientMsgId) {
    const p = this.pendingFor(roomId).get(clientMsgId);
    if (!p) return;
    p.state = 'pending';
    p.error = null;
    this.emit('pending', { room_id: roomId });
    this.rt?.sendMessage(sendFrame(p));
    this.scheduleHttpFallback(roomId, clientMsgId);
  }

  discardPending(roomId, clientMsgId) {
    this.rt?.dropPending(clientMsgId);
    this.clearPending(roomId, clientMsgId);
  }

  clearPending(roomId, clientMsgId) {
    if (!clientMsgId) return;
    const map = this.pending.get(roomId);
    if (map?.delete(clientMsgId)) this.emit('pending', { room_id: roomId });
  }

  handleAck({ client_msg_id: cid, message }) {
    if (!message) return;
    this.clearPending(message.room_id, cid);
    // The event (same seq) also arrives; the view upserts by id, so showing it now is safe.
    this.emit('room-message', { room_id: message.room_id, message });
  }

  handleSendError({ client_msg_id: cid, code, message, retry_after_ms: retryAfter }) {
    for (const [roomId, map] of this.pending) {
      const p = map.get(cid);
      if (p && code === 'rate_limited') {
        // Sent too fast: still pending, sent again (same client_msg_id) after the wait.
        setTimeout(() => this.retryPending(roomId, cid), Math.min(Math.max(Number(retryAfter) || 1000, 200), 30_000));
      } else if (p) {
        p.state = 'failed';
        p.error = message || code || 'Not sent';
        this.emit('pending', { room_id: roomId });
        this.env.toast(`Message not sent: ${p.error}`, 'error');
      }
    }
  }

  // ---------- read markers ----------

  markRead(roomId, seq) {
    const room = this.rooms.get(roomId);
    if (!room || !seq) return;
    const changed = room.unread_count !== 0;
    room.unread_count = 0;
    if (changed) this.emit('rooms');
    if (seq <= (room.readSeq || 0)) return;
    room.readSeq = seq;
    clearTimeout(room.readTimer);
    room.readTimer = setTimeout(() => {
      this.api(`/chat/rooms/${roomId}/read`, { method: 'POST', body: { seq: room.readSeq } }).catch(() => {});
    }, 400);
  }

  // ---------- v1.1: reactions, pins, read receipts, presence ----------

  /** The pinned message ids of a room (seeded from messages and GET …/pins, moved by events). */
  pinsOf(roomId) {
    if (!this.pins.has(roomId)) this.pins.set(roomId, new Set());
    return this.pins.get(roomId);
  }

  /** Take what an HTTP copy of a message says about its reactions, thread and pin. */
  seedMessage(m) {
    if (!m?.id) return m;
    this.reactions.seed(m);
    if (!m.thread_root_id) this.threads.seed(m);
    if (m.pinned !== undefined && m.room_id) {
      if (m.pinned) this.pinsOf(m.room_id).add(m.id); else this.pinsOf(m.room_id).delete(m.id);
    }
    return m;
  }

  /** Toggle my reaction: PUT or DELETE, applied here at once (the event that follows is a no-op). */
  async toggleReaction(roomId, messageId, emoji) {
    const me = this.me?.id;
    const mine = this.reactions.list(messageId).some((r) => r.emoji === emoji && r.me);
    const path = `/chat/rooms/${roomId}/messages/${messageId}/reactions/${encodeURIComponent(emoji)}`;
    await this.api(path, { method: mine ? 'DELETE' : 'PUT' });
    const changed = this.reactions.apply({ kind: mine ? 'reaction.removed' : 'reaction.added', message_id: messageId, emoji, user_id: me });
    if (changed) this.emit('room-event', { room_id: roomId, event: { kind: mine ? 'reaction.removed' : 'reaction.added', message_id: messageId, emoji, user_id: me, local: true } });
    return !mine;
  }

  async loadReadMarkers(roomId) {
    const page = await this.api(`/chat/rooms/${roomId}/read-markers`);
    const map = new Map();
    for (const m of page?.items || []) map.set(m.user_id, Number(m.seq) || 0);
    // Frames that arrived while the list was on its way may be newer: keep the larger.
    for (const [u, seq] of this.readMarkers.get(roomId) || []) map.set(u, Math.max(seq, map.get(u) || 0));
    this.readMarkers.set(roomId, map);
    this.emit('read', { room_id: roomId });
  }

  handleRead({ room_id: roomId, user_id: userId, seq }) {
    if (!roomId || !userId) return;
    if (!this.readMarkers.has(roomId)) this.readMarkers.set(roomId, new Map());
    const map = this.readMarkers.get(roomId);
    if ((map.get(userId) || 0) >= Number(seq)) return; // markers only move forward
    map.set(userId, Number(seq));
    this.emit('read', { room_id: roomId, user_id: userId, seq: Number(seq) });
  }

  /** Who (other than me and the sender) has read up to `message`. */
  seenBy(roomId, message) {
    return seenBy(this.readMarkers.get(roomId), message, this.me?.id);
  }

  handlePresence({ user_id: userId, status, last_seen_at: lastSeen }) {
    if (!userId || !status) return;
    const prev = this.presence.get(userId);
    if (prev?.status === status && prev?.last_seen_at === lastSeen) return;
    this.presence.set(userId, { status, last_seen_at: lastSeen ?? null });
    this.emit('presence', { user_id: userId, status });
  }

  presenceOf(userId) {
    return this.presence.get(userId)?.status || 'offline';
  }

  /**
   * The users a part of the page shows (`key`: 'members', 'dms', …). The union (at most
   * PRESENCE_MAX, the server's limit) is the subscription; it is sent when it changes and
   * after every reconnect, and the statuses not known yet are fetched over HTTP.
   */
  watchPresence(key, ids) {
    if (ids?.length) this.presenceWatch.set(key, [...new Set(ids)]); else this.presenceWatch.delete(key);
    const all = this.watchedUsers();
    this.sendPresenceSubscription();
    // Asked once per PRESENCE_ASK_AGAIN_MS at most: the room list calls this on every change.
    const t = Date.now();
    const unknown = all.filter((id) => !this.presence.has(id) && !(t - (this._presenceAsked.get(id) || 0) < PRESENCE_ASK_AGAIN_MS));
    for (const id of unknown) this._presenceAsked.set(id, t);
    if (unknown.length) {
      this.api('/chat/presence', { query: { user_ids: unknown.join(',') } })
        .then((page) => { for (const p of page?.items || []) this.handlePresence(p); })
        .catch(() => { /* the frames will tell */ });
    }
  }

  watchedUsers() {
    return [...new Set([...this.presenceWatch.values()].flat())].filter((id) => id && id !== this.me?.id).slice(0, PRESENCE_MAX);
  }

  sendPresenceSubscription() {
    const ids = this.watchedUsers();
    const key = [...ids].sort().join(',');
    if (!this.rt || this.connection !== 'open' || key === this._presenceSent) return;
    if (this.rt.presenceSubscribe(ids)) this._presenceSent = key;
  }

  /** Input happened: active now, idle after IDLE_AFTER_MS without any. */
  noteActivity() {
    if (this.idle && this.env.pageVisible()) this.setIdle(false);
    clearTimeout(this._idleTimer);
    this._idleTimer = setTimeout(() => this.setIdle(true), IDLE_AFTER_MS);
  }

  setIdle(idle) {
    if (this.idle === idle) return;
    this.idle = idle;
    this.rt?.idle(idle);
  }
}

function activity(room) {
  return room.last_message?.created_at || room.created_at || '';
}

/** The WebSocket `send` frame of a pending message. */
export function sendFrame(p) {
  const frame = { room_id: p.room_id, body: p.body, client_msg_id: p.client_msg_id };
  if (p.reply_to) frame.reply_to = p.reply_to;
  if (p.thread_root_id) frame.thread_root_id = p.thread_root_id;
  if (p.attachments?.length) frame.attachment_ids = p.attachments.map((f) => f.id);
  return frame;
}

// ---------- v1.1 state kept outside the views (pure: unit-tested under node) ----------

/**
 * Reaction counts per message. An HTTP copy of a message seeds them (`{emoji, count, me}`,
 * `me` for the caller); `reaction.added` / `reaction.removed` events move them. Events carry
 * no `me`: it is mine when the event's user_id is mine. Applying is idempotent per user: the
 * users known to have reacted (from events, and me from `me`) are remembered, so a second
 * `added` from the same user (my own toggle applied at once, then its event) counts once.
 */
export class Reactions {
  constructor(meId) {
    this.meId = typeof meId === 'function' ? meId : () => meId;
    this.byMessage = new Map(); // message id -> Map(emoji -> {count, users:Set, absent:Set})
  }

  seed(message) {
    if (!Array.isArray(message?.reactions)) return;
    const me = this.meId();
    const prev = this.byMessage.get(message.id);
    const next = new Map();
    for (const r of message.reactions) {
      if (!r?.emoji || !(r.count > 0)) continue;
      const old = prev?.get(r.emoji);
      const users = new Set();
      const absent = new Set();
      // WebSocket copies have no `me`: keep what was known about me.
      const mine = r.me === undefined ? old?.users.has(me) : r.me;
      if (mine) users.add(me); else if (r.me === false) absent.add(me);
      next.set(r.emoji, { count: r.count, users, absent });
    }
    this.byMessage.set(message.id, next);
  }

  /** Apply a reaction event; true when something changed. */
  apply({ kind, message_id: messageId, emoji, user_id: userId }) {
    if (!messageId || !emoji || !userId) return false;
    if (!this.byMessage.has(messageId)) this.byMessage.set(messageId, new Map());
    const map = this.byMessage.get(messageId);
    let r = map.get(emoji);
    if (kind === 'reaction.added') {
      if (r?.users.has(userId)) return false;
      if (!r) { r = { count: 0, users: new Set(), absent: new Set() }; map.set(emoji, r); }
      r.users.add(userId);
      r.absent.delete(userId);
      r.count += 1;
      return true;
    }
    if (kind === 'reaction.removed') {
      if (!r || r.absent.has(userId)) return false;
      r.users.delete(userId);
      r.absent.add(userId);
      r.count = Math.max(0, r.count - 1);
      if (r.count === 0) map.delete(emoji);
      return true;
    }
    return false;
  }

  /** `[{emoji, count, me}]` in first-reacted order. */
  list(messageId) {
    const me = this.meId();
    return [...(this.byMessage.get(messageId)?.entries() || [])]
      .filter(([, r]) => r.count > 0)
      .map(([emoji, r]) => ({ emoji, count: r.count, me: r.users.has(me) }));
  }
}

/**
 * Reply counts and last-reply times of thread roots: seeded from the root's HTTP copy,
 * moved by each new reply (`message.created` with thread_root_id) once per reply id.
 */
export class ThreadCounts {
  constructor() { this.roots = new Map(); } // root id -> {count, last, ids:Set}

  seed(root) {
    if (!root?.id || root.reply_count === undefined) return;
    const prev = this.roots.get(root.id);
    // A copy older than the replies already counted does not roll the count back.
    if (prev && prev.count > (root.reply_count || 0)) return;
    this.roots.set(root.id, { count: root.reply_count || 0, last: epochMs(root.last_reply_at), ids: prev?.ids || new Set() });
  }

  /** A new reply; true when it was not counted yet. */
  reply(msg) {
    const rootId = msg?.thread_root_id;
    if (!rootId) return false;
    if (!this.roots.has(rootId)) this.roots.set(rootId, { count: 0, last: null, ids: new Set() });
    const t = this.roots.get(rootId);
    if (t.ids.has(msg.id)) return false;
    t.ids.add(msg.id);
    t.count += 1;
    const at = epochMs(msg.created_at);
    if (at && (!t.last || at > t.last)) t.last = at;
    return true;
  }

  get(rootId) {
    const t = this.roots.get(rootId);
    return t ? { reply_count: t.count, last_reply_at: t.last } : { reply_count: 0, last_reply_at: null };
  }
}

/** `last_reply_at` may come as RFC 3339 or as epoch milliseconds: milliseconds, or null. */
export function epochMs(value) {
  if (value === null || value === undefined || value === '') return null;
  if (typeof value === 'number') return value;
  if (/^\d+$/.test(String(value))) return Number(value);
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t;
}

/** Apply `message.pinned` / `message.unpinned` to a room's set of pinned ids; true if it changed. */
export function applyPinEvent(pinned, { kind, message_id: id }) {
  if (!id) return false;
  if (kind === 'message.pinned' && !pinned.has(id)) { pinned.add(id); return true; }
  if (kind === 'message.unpinned' && pinned.has(id)) { pinned.delete(id); return true; }
  return false;
}

/** The users whose read marker is at or past `message` — not me, not its sender. */
export function seenBy(markers, message, meId) {
  if (!markers || !message) return [];
  return [...markers].filter(([u, seq]) => seq >= message.seq && u !== meId && u !== message.sender_id).map(([u]) => u);
}

/**
 * Split a body into `[{text, hit}]` by search highlight ranges, given in Unicode scalar
 * values (code points): slicing the UTF-16 string would cut astral characters (emoji) in two.
 */
export function highlightSegments(body, highlights = []) {
  const chars = Array.from(body || '');
  const ranges = [...highlights]
    .map((r) => ({ start: Math.max(0, r.start | 0), end: Math.min(chars.length, r.end | 0) }))
    .filter((r) => r.end > r.start)
    .sort((a, b) => a.start - b.start);
  const out = [];
  let at = 0;
  for (const r of ranges) {
    const start = Math.max(r.start, at); // overlapping ranges merge
    if (r.end <= start) continue;
    if (start > at) out.push({ text: chars.slice(at, start).join(''), hit: false });
    out.push({ text: chars.slice(start, r.end).join(''), hit: true });
    at = r.end;
  }
  if (at < chars.length) out.push({ text: chars.slice(at).join(''), hit: false });
  return out;
}

const MENTION_RE = /(^|[^\p{L}\p{N}_.@])@([\p{L}\p{N}_.]+)/gu;

/**
 * Split a body into `[{text, mention}]`: `mention` is the user id of an `@username` that the
 * server resolved (its id is in the message's `mentions`; `usernameOf(id)` gives the
 * username when known), or 'room' for `@room` when the server resolved it — which shows as
 * mentions beyond the users named in the body (a member's `@room` is left plain text by the
 * server and adds none). Anything else stays text, as the server left it.
 */
export function mentionSegments(body, mentions = [], usernameOf = () => null) {
  const text = body || '';
  if (!mentions?.length) return [{ text, mention: null }];
  const byName = new Map();
  for (const id of mentions) {
    const name = usernameOf(id);
    if (name) byName.set(String(name).toLowerCase(), id);
  }
  const tokens = [...text.matchAll(MENTION_RE)].map((m) => {
    const name = m[2].replace(/\.+$/, ''); // a sentence's full stop is not part of the name
    return { start: m.index + m[1].length, name, lower: name.toLowerCase() };
  });
  const named = new Set(tokens.map((t) => byName.get(t.lower)).filter(Boolean));
  const roomResolved = mentions.some((id) => !named.has(id));
  const out = [];
  let at = 0;
  for (const t of tokens) {
    const id = byName.get(t.lower) || (t.lower === 'room' && roomResolved ? 'room' : null);
    if (!id) continue;
    if (t.start > at) out.push({ text: text.slice(at, t.start), mention: null });
    out.push({ text: `@${t.name}`, mention: id });
    at = t.start + 1 + t.name.length;
  }
  if (at < text.length) out.push({ text: text.slice(at), mention: null });
  return out;
}

/**
 * The `@word` being typed at the caret, for autocomplete: `{start, query}` (start: index of
 * the `@`), or null when the caret is not in one.
 */
export function mentionQuery(text, caret) {
  const before = text.slice(0, caret);
  const m = before.match(/(^|[^\p{L}\p{N}_.@])@([\p{L}\p{N}_.]{0,32})$/u);
  if (!m) return null;
  return { start: caret - m[2].length - 1, query: m[2] };
}

/** Members matching an autocomplete query (username or display name prefix), best first. */
export function mentionCandidates(members, query, meId, limit = 8) {
  const q = (query || '').toLowerCase();
  const scored = [];
  for (const m of members) {
    if (m.id === meId) continue;
    const u = (m.username || '').toLowerCase();
    const d = (m.display_name || '').toLowerCase();
    const rank = u.startsWith(q) ? 0 : d.startsWith(q) || d.split(/\s+/).some((w) => w.startsWith(q)) ? 1 : u.includes(q) ? 2 : -1;
    if (rank >= 0 && m.username) scored.push({ m, rank });
  }
  return scored.sort((a, b) => a.rank - b.rank || a.m.username.localeCompare(b.m.username)).slice(0, limit).map((x) => x.m);
}

export const store = new Store();
