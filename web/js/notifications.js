// Notifications (v1.1, API.md "Notifications"): the unread count, the inbox pages, marking
// read, per-room levels and mutes, preferences, and the browser push subscription. Plain
// classes and functions without DOM so node can test them (`new Notifications(env)` takes
// `api` and the storage it uses); `notifications` is the page's instance. The views are in
// views/notifications.js, the service worker is ../sw.js.
import { api } from './api.js';

/** The badge shows at most this; more is "99+" (a wider badge would push the nav around). */
export const BADGE_MAX = 99;
/** One inbox page: what fits a phone screen about twice; the server allows up to 100. */
export const INBOX_PAGE = 30;
/** "Until I unmute": the service takes any RFC 3339 time; this one never comes. */
export const MUTE_FOREVER = '9999-12-31T23:59:59Z';
/** A mute this far ahead is shown as "until you unmute" (no one mutes for 50 years). */
const FOREVER_AFTER_MS = 50 * 365 * 24 * 3600 * 1000;
/** Where the page remembers this browser's push subscription (its id is needed to delete it). */
export const PUSH_KEY = 'intellicolab.push_subscription';

export const LEVELS = [
  { value: 'all', label: 'All messages' },
  { value: 'mentions', label: 'Mentions and replies' },
  { value: 'none', label: 'Nothing' },
];

export const MUTES = [
  { value: '1h', label: 'Mute for 1 hour', ms: 3600 * 1000 },
  { value: '8h', label: 'Mute for 8 hours', ms: 8 * 3600 * 1000 },
  { value: 'forever', label: 'Mute until I unmute', ms: null },
];

/** What a notification says happened (the inbox and the service worker use the same words). */
export const KIND_TEXT = {
  mention: 'mentioned you',
  dm: 'sent you a message',
  reply: 'replied to you',
  message: 'wrote',
};

/** "3", or "99+" above BADGE_MAX; "" for none (the badge is hidden). */
export function badgeText(count) {
  const n = Number(count) || 0;
  if (n <= 0) return '';
  return n > BADGE_MAX ? `${BADGE_MAX}+` : String(n);
}

/** "just now", "5 min ago", "3 h ago", "2 d ago", then the date. */
export function relativeTime(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 7 * 86400) return `${Math.floor(s / 86400)} d ago`;
  return new Date(t).toLocaleDateString([], { month: 'short', day: 'numeric', year: 'numeric' });
}

/** The `muted_until` to send for a MUTES choice (`null` unmutes). */
export function muteUntil(choice, now = Date.now()) {
  if (choice === null || choice === 'off') return null;
  const m = MUTES.find((x) => x.value === choice);
  if (!m) throw new Error(`unknown mute choice ${choice}`);
  return m.ms === null ? MUTE_FOREVER : new Date(now + m.ms).toISOString();
}

/** Whether a room setting is muted now; `forever` when it is "until I unmute". */
export function muteState(setting, now = Date.now()) {
  const t = setting?.muted_until ? Date.parse(setting.muted_until) : NaN;
  if (Number.isNaN(t) || t <= now) return { muted: false };
  return { muted: true, forever: t - now > FOREVER_AFTER_MS, until: t };
}

/** The room menu button's words: "Muted until 18:30", "Muted", or the level. */
export function describeRoomSetting(setting, now = Date.now()) {
  const m = muteState(setting, now);
  if (m.muted) {
    if (m.forever) return 'Muted';
    const d = new Date(m.until);
    const sameDay = d.toDateString() === new Date(now).toDateString();
    const at = sameDay
      ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : d.toLocaleString([], { weekday: 'short', hour: '2-digit', minute: '2-digit' });
    return `Muted until ${at}`;
  }
  return { all: 'All messages', mentions: 'Mentions', none: 'Off' }[setting?.level] || 'Notifications';
}

/** The route that opens a notification's message in its room (the search results' path). */
export function notificationHref(n) {
  return `#/rooms/${encodeURIComponent(n.room_id)}?around=${encodeURIComponent(n.seq)}&msg=${encodeURIComponent(n.message_id)}`;
}

/** base64url (the VAPID key) → bytes, for `applicationServerKey`. */
export function base64UrlToBytes(s) {
  const b64 = String(s).replace(/-/g, '+').replace(/_/g, '/');
  const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
  const bin = atob(padded);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The body of `POST /notifications/push/subscriptions` from a `PushSubscription`. */
export function subscriptionBody(sub) {
  const json = typeof sub.toJSON === 'function' ? sub.toJSON() : sub;
  return { endpoint: json.endpoint, keys: { p256dh: json.keys?.p256dh, auth: json.keys?.auth } };
}

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), removeItem: (k) => m.delete(k) };
}

function pageStorage() {
  try { return globalThis.localStorage || memoryStorage(); } catch { return memoryStorage(); }
}

/**
 * The unread count and the calls the views make. Events: `count` ({count}) whenever the
 * count changes (the first GET, the chat WebSocket's `notifications` frames, marking read),
 * `changed` when the inbox's contents may have (a frame arrived, something was read).
 */
export class Notifications extends EventTarget {
  constructor(env = {}) {
    super();
    this.env = { api, storage: null, ...env };
    this.storage = this.env.storage || pageStorage();
    this.count = 0;
    this.known = false;
    this._countAsked = 0;
  }

  api(path, options) { return this.env.api(path, options); }

  setCount(count) {
    const n = Math.max(0, Number(count) || 0);
    const changed = n !== this.count || !this.known;
    this.count = n;
    this.known = true;
    if (changed) this.dispatchEvent(new CustomEvent('count', { detail: { count: n } }));
  }

  /** `GET /notifications/unread-count`; a later frame wins over an answer that left before it. */
  async loadCount() {
    const asked = ++this._countAsked;
    const { count } = await this.api('/notifications/unread-count');
    if (asked === this._countAsked) this.setCount(count);
    return this.count;
  }

  /** A `{"type": "notifications", "unread_count"}` frame from the chat WebSocket. */
  handleFrame(frame) {
    if (typeof frame?.unread_count !== 'number') return;
    this._countAsked++; // an answer to an older GET must not undo this
    this.setCount(frame.unread_count);
    this.dispatchEvent(new CustomEvent('changed'));
  }

  /** One page, newest first: `{items, next_cursor}`. */
  list({ unread = false, cursor = null, limit = INBOX_PAGE } = {}) {
    return this.api('/notifications', { query: { unread: unread ? 'true' : undefined, cursor: cursor || undefined, limit } });
  }

  /**
   * Mark these read, then ask the count again: the frame that follows may be missed (socket
   * down), and nothing says whether another device read some of them first.
   */
  async markRead(items) {
    const unread = items.filter((n) => !n.read_at);
    if (!unread.length) return;
    await this.api('/notifications/read', { method: 'POST', body: { ids: unread.map((n) => n.id) } });
    const at = new Date().toISOString();
    for (const n of unread) n.read_at = at;
    this.dispatchEvent(new CustomEvent('changed'));
    await this.loadCount();
  }

  async markAllRead() {
    await this.api('/notifications/read', { method: 'POST', body: { all: true } });
    this.setCount(0);
    this.dispatchEvent(new CustomEvent('changed'));
  }

  /**
   * Where a notification opens: its room around the message, or — for a reply inside a
   * thread, which the timeline does not show — the thread with the reply. A Notification
   * does not say which; the message's `message.created` event (`seq`) does.
   */
  async resolveHref(n) {
    try {
      const page = await this.api(`/chat/rooms/${encodeURIComponent(n.room_id)}/events`, { query: { after: n.seq - 1, limit: 1 } });
      const m = page?.items?.[0]?.message;
      if (m && m.id === n.message_id && m.thread_root_id) {
        return `#/rooms/${encodeURIComponent(n.room_id)}?thread=${encodeURIComponent(m.thread_root_id)}&msg=${encodeURIComponent(n.message_id)}`;
      }
    } catch { /* the room around the message is still the right place to look */ }
    return notificationHref(n);
  }

  roomSetting(roomId) { return this.api(`/notifications/rooms/${encodeURIComponent(roomId)}`); }

  /** `patch`: `{level}`, `{muted_until}` (null unmutes) or both. */
  setRoomSetting(roomId, patch) {
    return this.api(`/notifications/rooms/${encodeURIComponent(roomId)}`, { method: 'PUT', body: patch });
  }

  preferences() { return this.api('/notifications/preferences'); }

  savePreferences(prefs) { return this.api('/notifications/preferences', { method: 'PUT', body: prefs }); }

  // ---------- browser push ----------

  /** `{id, endpoint, user_id}` of this browser's subscription as the server knows it, or null. */
  get storedPush() {
    try { return JSON.parse(this.storage.getItem(PUSH_KEY) || 'null'); } catch { return null; }
  }

  set storedPush(v) {
    try {
      if (v) this.storage.setItem(PUSH_KEY, JSON.stringify(v)); else this.storage.removeItem(PUSH_KEY);
    } catch { /* storage disabled: the subscription is not remembered */ }
  }

  /**
   * Subscribe this browser: `pushManager` is the service worker registration's (or a fake),
   * `userId` whose it is. Reuses an existing browser subscription; the server answers the
   * same id for the same endpoint.
   */
  async subscribePush(pushManager, userId) {
    const { key } = await this.api('/notifications/push/vapid-public-key');
    let sub = await pushManager.getSubscription();
    if (sub && !sameKey(sub.options?.applicationServerKey, key)) {
      // Subscribed with another server key (the server's key changed): start again.
      await sub.unsubscribe().catch(() => {});
      sub = null;
    }
    sub ||= await pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: base64UrlToBytes(key) });
    const body = subscriptionBody(sub);
    try {
      const { id } = await this.api('/notifications/push/subscriptions', { method: 'POST', body });
      this.storedPush = { id, endpoint: body.endpoint, user_id: userId };
      return id;
    } catch (err) {
      await sub.unsubscribe().catch(() => {}); // not registered with the server: do not keep it
      throw err;
    }
  }

  /** Delete the server's copy (when logged in) and the browser's subscription. */
  async unsubscribePush(pushManager) {
    const stored = this.storedPush;
    if (stored?.id) {
      try {
        await this.api(`/notifications/push/subscriptions/${encodeURIComponent(stored.id)}`, { method: 'DELETE' });
      } catch (err) {
        if (err?.status !== 404) throw err; // already gone: fine
      }
    }
    this.storedPush = null;
    const sub = await pushManager?.getSubscription();
    if (sub) await sub.unsubscribe();
  }

  /** Whether this browser is subscribed for `userId` (as far as the page knows). */
  pushOnFor(userId, sub) {
    const stored = this.storedPush;
    return !!(stored && sub && stored.user_id === userId && stored.endpoint === sub.endpoint);
  }
}

function sameKey(buf, keyB64) {
  if (!buf) return true; // unknown: keep the subscription
  const a = new Uint8Array(buf);
  const b = base64UrlToBytes(keyB64);
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export const notifications = new Notifications();
