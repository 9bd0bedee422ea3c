// IntelliColab service worker: shows Web Push notifications and opens their room on click.
// Served at /sw.js, so its scope is the whole app. A classic script (module service workers
// are not everywhere yet), so it imports nothing: the few words it shares with the page
// (js/notifications.js KIND_TEXT and notificationHref) are repeated here, and the unit test
// (test/sw.test.mjs) runs this file against a fake `self` and checks them against the page's.
//
// The push payload is the Notification of API.md as JSON (the server sends one only while
// the person has no open connection). It names the actor and room by id only, and a service
// worker has no access token to ask: the page posts the names it knows (`{type: 'names'}`),
// merged into Cache Storage so they outlive this worker being stopped.
/* eslint-env serviceworker */

const NAMES_CACHE = 'intellicolab-names';
const NAMES_URL = '/__intellicolab/sw-names.json';
const KIND_TEXT = {
  mention: 'mentioned you',
  dm: 'sent you a message',
  reply: 'replied to you',
  message: 'wrote',
};

function notificationHref(n) {
  return `#/rooms/${encodeURIComponent(n.room_id)}?around=${encodeURIComponent(n.seq)}&msg=${encodeURIComponent(n.message_id)}`;
}

async function readNames() {
  try {
    const cache = await self.caches.open(NAMES_CACHE);
    const res = await cache.match(NAMES_URL);
    return res ? await res.json() : {};
  } catch {
    return {};
  }
}

/** Keep at most this many of each (the newest posted win): ~1000 × ~60 bytes = 60 kB. */
const NAMES_MAX = 1000;

function capped(map) {
  const entries = Object.entries(map || {});
  return Object.fromEntries(entries.slice(Math.max(0, entries.length - NAMES_MAX)));
}

/** Merge posted names into the stored ones (`null` forgets them all: logout). */
async function writeNames(names) {
  try {
    const cache = await self.caches.open(NAMES_CACHE);
    if (!names) {
      await cache.delete(NAMES_URL);
      return;
    }
    const old = await readNames();
    const merged = {
      users: capped({ ...old.users, ...names.users }),
      rooms: capped({ ...old.rooms, ...names.rooms }),
    };
    await cache.put(NAMES_URL, new Response(JSON.stringify(merged), { headers: { 'Content-Type': 'application/json' } }));
  } catch { /* no Cache Storage: titles fall back to generic words */ }
}

/** "Ann mentioned you in Design", "Ben sent you a message", "New notification". */
function notificationTitle(n, names = {}) {
  const actor = names.users?.[n.actor_id] || 'Someone';
  const room = names.rooms?.[n.room_id];
  const what = KIND_TEXT[n.kind];
  if (!what) return 'New notification';
  return n.kind !== 'dm' && room ? `${actor} ${what} in ${room}` : `${actor} ${what}`;
}

/** The `push` event: parse the Notification, show it (one per notification id: `tag`). */
async function onPush(event) {
  let n = null;
  try {
    n = event.data ? event.data.json() : null;
  } catch {
    n = null;
  }
  if (!n || typeof n !== 'object' || !n.id) {
    // Browsers require a visible notification for every push (userVisibleOnly).
    await self.registration.showNotification('IntelliColab', { body: 'You have a new notification.', tag: 'intellicolab' });
    return;
  }
  const names = await readNames();
  await self.registration.showNotification(notificationTitle(n, names), {
    body: n.preview || '',
    tag: n.id,
    icon: '/favicon.svg',
    timestamp: Date.parse(n.created_at) || undefined,
    data: { id: n.id, room_id: n.room_id, message_id: n.message_id, seq: n.seq, href: notificationHref(n) },
  });
}

/** `notificationclick`: focus an open page and tell it to open the room, or open one there. */
async function onNotificationClick(event) {
  event.notification.close();
  const data = event.notification.data || {};
  const href = data.href || '#/rooms';
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const open = windows.find((c) => c.focused) || windows[0];
  if (open) {
    await open.focus();
    open.postMessage({ type: 'open-notification', href, id: data.id || null, room_id: data.room_id, message_id: data.message_id, seq: data.seq });
    return;
  }
  await self.clients.openWindow(`/${href}`);
}

function onMessage(event) {
  const msg = event.data || {};
  if (msg.type === 'names') event.waitUntil(writeNames(msg.names || null));
}

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));
self.addEventListener('push', (event) => event.waitUntil(onPush(event)));
self.addEventListener('notificationclick', (event) => event.waitUntil(onNotificationClick(event)));
self.addEventListener('message', onMessage);
