// Notifications in the page (v1.1): the bell with the unread badge and the inbox panel in
// the top bar, the per-room level/mute menu of the room header, the notification settings
// page (`#/settings/notifications`) with this browser's push opt-in, and the service worker
// (../../sw.js) wiring: its "open this room" messages and the names it titles pushes with.
// The logic (counts, calls, push subscription) is ../notifications.js, unit-tested.
import { h, replace, toast, announce, showFormErrors, clearFormErrors, field } from '../dom.js';
import { auth } from '../api.js';
import { store } from '../store.js';
import {
  notifications, badgeText, relativeTime, describeRoomSetting, muteState, muteUntil,
  KIND_TEXT, LEVELS, MUTES,
} from '../notifications.js';

const SVG = 'http://www.w3.org/2000/svg';
/** After this long without a change the names the worker titles pushes with are sent again. */
const NAMES_DEBOUNCE_MS = 1000;

const errorText = (err, fallback) => (err?.humanMessage ? err.humanMessage() : fallback);

function bellIcon() {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'bell-icon');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', 'M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z');
  svg.appendChild(path);
  return svg;
}

// ---------- the bell and the inbox ----------

/**
 * The bell button and the inbox panel, inserted into the top bar's nav before `beforeEl`.
 * Lives as long as the page; `startNotifications` / `stopNotifications` follow the login.
 */
export function mountBell(nav, beforeEl) {
  const badge = h('span', { class: 'bell-badge', testid: 'notif-badge', 'aria-hidden': 'true', hidden: true });
  const button = h('button', {
    type: 'button', class: 'btn btn-ghost bell', testid: 'notif-bell', 'aria-expanded': 'false',
    'aria-controls': 'inbox-panel', 'aria-label': 'Notifications', title: 'Notifications',
  }, bellIcon(), badge);
  nav.insertBefore(button, beforeEl);

  let unreadOnly = true;
  let cursor = null;
  let items = [];
  let loading = false;
  const heading = h('h2', { id: 'inbox-heading', tabindex: '-1', text: 'Notifications' });
  const filterUnread = h('button', { type: 'button', class: 'btn btn-small', testid: 'inbox-filter-unread', 'aria-pressed': 'true', text: 'Unread' });
  const filterAll = h('button', { type: 'button', class: 'btn btn-small', testid: 'inbox-filter-all', 'aria-pressed': 'false', text: 'All' });
  const markAll = h('button', { type: 'button', class: 'btn-link', testid: 'inbox-mark-all', text: 'Mark all read' });
  const list = h('ul', { class: 'inbox-list', testid: 'inbox-list', 'aria-labelledby': 'inbox-heading' });
  const status = h('p', { class: 'muted small', role: 'status', testid: 'inbox-status' });
  const more = h('button', { type: 'button', class: 'btn btn-small btn-block', testid: 'inbox-more', text: 'Load more', hidden: true });
  const panel = h('section', { id: 'inbox-panel', class: 'inbox-panel', testid: 'inbox-panel', 'aria-labelledby': 'inbox-heading', hidden: true },
    h('div', { class: 'inbox-head' }, heading,
      h('a', { href: '#/settings/notifications', class: 'btn-link', testid: 'inbox-settings', text: 'Settings', on: { click: () => close({ quiet: true }) } }),
      h('button', { type: 'button', class: 'btn-link', 'aria-label': 'Close notifications', text: 'Close', on: { click: () => close() } })),
    h('div', { class: 'inbox-tools', role: 'group', 'aria-label': 'Show' }, filterUnread, filterAll, markAll),
    status, list, more);
  document.body.appendChild(panel);

  const showCount = (count) => {
    const text = badgeText(count);
    badge.textContent = text;
    badge.hidden = !text;
    button.setAttribute('aria-label', count ? `Notifications, ${count} unread` : 'Notifications, none unread');
    button.dataset.count = String(count);
  };
  showCount(0);
  let shown = 0;
  notifications.addEventListener('count', (e) => {
    const { count } = e.detail;
    // Screen readers hear a new notification; the count going down (read) is not news.
    if (count > shown && notifications.known) announce(`${count} unread notification${count === 1 ? '' : 's'}`);
    shown = count;
    showCount(count);
  });

  function open() {
    panel.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    heading.focus();
    reload();
  }
  function close({ quiet = false } = {}) {
    if (panel.hidden) return;
    panel.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    if (!quiet) button.focus();
  }
  button.addEventListener('click', () => (panel.hidden ? open() : close()));
  panel.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { e.preventDefault(); close(); return; }
    // Up/Down move between the items (Tab reaches each as well).
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
    const all = [...list.querySelectorAll('.inbox-item')];
    const i = all.indexOf(document.activeElement);
    if (i < 0 && e.key === 'ArrowUp') return;
    e.preventDefault();
    all[Math.max(0, Math.min(all.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))]?.focus();
  });
  document.addEventListener('pointerdown', (e) => {
    if (!panel.hidden && !panel.contains(e.target) && !button.contains(e.target)) close({ quiet: true });
  });
  window.addEventListener('hashchange', () => close({ quiet: true }));

  const setFilter = (unread) => {
    unreadOnly = unread;
    filterUnread.setAttribute('aria-pressed', String(unread));
    filterAll.setAttribute('aria-pressed', String(!unread));
    reload();
  };
  filterUnread.addEventListener('click', () => setFilter(true));
  filterAll.addEventListener('click', () => setFilter(false));
  markAll.addEventListener('click', async () => {
    try {
      await notifications.markAllRead();
      announce('All notifications marked read.');
      reload();
    } catch (err) {
      toast(errorText(err, 'Could not mark the notifications read.'), 'error');
    }
  });
  more.addEventListener('click', () => load());

  let reloadTimer = null;
  notifications.addEventListener('changed', () => {
    if (panel.hidden) return;
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(reload, 300); // a burst of frames reloads once
  });

  function reload() {
    cursor = null;
    items = [];
    replace(list);
    load();
  }

  async function load() {
    if (loading) return;
    loading = true;
    status.textContent = 'Loading…';
    const filter = unreadOnly;
    try {
      const page = await notifications.list({ unread: filter, cursor });
      if (filter !== unreadOnly) return; // the filter changed meanwhile: that load wins
      const fresh = (page?.items || []).filter((n) => !items.some((x) => x.id === n.id));
      items.push(...fresh);
      cursor = page?.next_cursor || null;
      for (const n of fresh) list.appendChild(itemEl(n));
      more.hidden = !cursor;
      status.textContent = items.length ? '' : unreadOnly ? 'No unread notifications.' : 'No notifications yet.';
    } catch (err) {
      status.textContent = errorText(err, 'Could not load the notifications.');
    } finally {
      loading = false;
    }
  }

  function itemEl(n) {
    const actor = h('strong', { text: store.nameOf(n.actor_id, '…') });
    if (!store.profileData.has(n.actor_id)) {
      store.profile(n.actor_id).then((p) => { actor.textContent = p ? (p.display_name || p.username) : 'Someone'; }).catch(() => {});
    }
    const room = store.rooms.get(n.room_id);
    const where = n.kind !== 'dm' && room ? [' in ', h('span', { class: 'inbox-room', testid: 'inbox-room', text: store.roomTitle(room) })] : [];
    const item = h('button', {
      type: 'button', class: `inbox-item${n.read_at ? '' : ' unread'}`, testid: 'inbox-item',
      'data-id': n.id, 'data-kind': n.kind, 'data-unread': String(!n.read_at),
    },
    h('span', { class: 'inbox-line' }, actor, ` ${KIND_TEXT[n.kind] || 'notified you'}`, ...where,
      n.read_at ? null : h('span', { class: 'visually-hidden', text: ' (unread)' })),
    n.preview ? h('span', { class: 'inbox-preview', testid: 'inbox-preview', text: n.preview }) : null,
    h('time', { class: 'inbox-time', datetime: n.created_at, title: new Date(n.created_at).toLocaleString(), text: relativeTime(n.created_at) }));
    item.addEventListener('click', () => openNotification(n));
    return h('li', {}, item);
  }

  async function openNotification(n) {
    close({ quiet: true });
    location.hash = await notifications.resolveHref(n);
    try {
      await notifications.markRead([n]);
    } catch (err) {
      toast(errorText(err, 'Could not mark the notification read.'), 'error');
    }
  }
}

/** Start following the count (after login): the first GET, then the WebSocket's frames. */
export function startNotifications() {
  notifications.loadCount().catch(() => { /* the service may be down: the badge waits for a frame */ });
  worker.start();
}

export function stopNotifications() {
  notifications.setCount(0);
  worker.stop();
}

store.addEventListener('notifications', (e) => notifications.handleFrame(e.detail));
// After a reconnect a frame may have been missed while the socket was down.
let wasOpen = false;
store.addEventListener('status', (e) => {
  const open = e.detail.state === 'open';
  if (open && !wasOpen && auth.loggedIn) notifications.loadCount().catch(() => {});
  wasOpen = open;
});

// ---------- the room header's menu ----------

/** The room header's notifications menu: level (all / mentions / nothing) and mute. */
export function roomNotificationMenu(state) {
  const { roomId } = state;
  let setting = null;
  // On phones only the icon shows (the label stays for screen readers and the tooltip).
  const text = h('span', { class: 'notif-menu-label', text: 'Notifications' });
  const button = h('button', {
    type: 'button', class: 'btn btn-small btn-ghost notif-menu-button', testid: 'room-notif-button',
    'aria-haspopup': 'menu', 'aria-expanded': 'false', 'aria-controls': `room-notif-menu-${roomId}`,
  }, bellIcon(), ' ', text);
  const menu = h('ul', { id: `room-notif-menu-${roomId}`, class: 'notif-menu', role: 'menu', testid: 'room-notif-menu', 'aria-label': 'Room notifications', hidden: true });
  const wrap = h('div', { class: 'notif-menu-wrap' }, button, menu);

  const label = () => {
    const words = setting ? describeRoomSetting(setting) : 'Notifications';
    text.textContent = words;
    button.title = `Notifications for this room: ${words}`;
    button.setAttribute('aria-label', button.title);
    if (setting) {
      button.dataset.level = setting.level;
      button.dataset.muted = String(muteState(setting).muted);
    }
  };
  label();

  function items() {
    const muted = setting && muteState(setting).muted;
    const option = (attrs, text, act) => h('li', { role: attrs.role, tabindex: '-1', class: 'notif-menu-item', 'aria-checked': attrs.checked, testid: 'room-notif-option', 'data-value': attrs.value, text, on: { click: act } });
    return [
      ...LEVELS.map((l) => option({ role: 'menuitemradio', checked: String(setting?.level === l.value), value: l.value }, l.label, () => apply({ level: l.value }))),
      h('li', { role: 'separator' }),
      ...MUTES.map((m) => option({ role: 'menuitem', value: `mute-${m.value}` }, m.label, () => apply({ muted_until: muteUntil(m.value) }))),
      muted ? option({ role: 'menuitem', value: 'unmute' }, 'Unmute', () => apply({ muted_until: null })) : null,
    ].filter(Boolean);
  }

  async function apply(patch) {
    close();
    try {
      setting = await notifications.setRoomSetting(roomId, patch);
      label();
      announce(`Notifications for this room: ${describeRoomSetting(setting)}.`);
    } catch (err) {
      toast(errorText(err, 'Could not change the notifications for this room.'), 'error');
    }
  }

  function openMenu(focusLast = false) {
    replace(menu, items());
    menu.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    const all = [...menu.querySelectorAll('[tabindex]')];
    (focusLast ? all[all.length - 1] : all.find((x) => x.getAttribute('aria-checked') === 'true') || all[0])?.focus();
  }
  function close({ focus = true } = {}) {
    if (menu.hidden) return;
    menu.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    if (focus) button.focus();
  }
  button.addEventListener('click', () => (menu.hidden ? openMenu() : close()));
  button.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') { e.preventDefault(); openMenu(e.key === 'ArrowUp'); }
  });
  menu.addEventListener('keydown', (e) => {
    const all = [...menu.querySelectorAll('[tabindex]')];
    const i = all.indexOf(document.activeElement);
    const go = (j) => { e.preventDefault(); all[(j + all.length) % all.length]?.focus(); };
    if (e.key === 'ArrowDown') go(i + 1);
    else if (e.key === 'ArrowUp') go(i - 1);
    else if (e.key === 'Home') go(0);
    else if (e.key === 'End') go(all.length - 1);
    else if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); document.activeElement?.click(); }
    else if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); close(); }
    else if (e.key === 'Tab') close({ focus: false });
  });
  const outside = (e) => { if (!wrap.contains(e.target)) close({ focus: false }); };
  document.addEventListener('pointerdown', outside);
  state.onDispose(() => document.removeEventListener('pointerdown', outside));

  notifications.roomSetting(roomId).then((s) => {
    if (state.disposed) return;
    setting = s;
    label();
  }).catch(() => { /* the button still offers the choices; a change shows the error */ });

  return wrap;
}

// ---------- the service worker ----------

const worker = {
  namesTimer: null,
  supported() {
    return typeof navigator !== 'undefined' && 'serviceWorker' in navigator && typeof window.PushManager === 'function' && 'Notification' in window;
  },
  /** The registration, registering /sw.js (scope: the whole app) when there is none. */
  async registration() {
    const existing = await navigator.serviceWorker.getRegistration('/');
    if (existing) return existing;
    await navigator.serviceWorker.register('/sw.js', { scope: '/' });
    return navigator.serviceWorker.ready;
  },
  start() {
    if (!this.supported()) return;
    store.addEventListener('rooms', this.onRooms);
    this.postNames({ actors: true });
  },
  stop() {
    if (!this.supported()) return;
    store.removeEventListener('rooms', this.onRooms);
    clearTimeout(this.namesTimer);
    // The next person logging in here must get neither this account's pushes nor its names.
    // The access token is gone already: dropping the browser's subscription makes the push
    // service answer 404/410 to the server, which then deletes its copy (API.md).
    notifications.storedPush = null;
    navigator.serviceWorker.getRegistration('/').then(async (reg) => {
      if (!reg) return;
      reg.active?.postMessage({ type: 'names', names: null });
      const sub = await reg.pushManager.getSubscription();
      if (sub) await sub.unsubscribe();
    }).catch(() => {});
  },
  onRooms: () => {
    clearTimeout(worker.namesTimer);
    worker.namesTimer = setTimeout(() => worker.postNames(), NAMES_DEBOUNCE_MS);
  },
  /**
   * Room titles and people's names for the worker's notification titles (push on only); it
   * merges them into what it has. With `actors`, first the names of the people behind my
   * recent notifications (those likely to notify again; the page may not have shown them).
   */
  async postNames({ actors = false } = {}) {
    if (!notifications.storedPush || !auth.user) return;
    const reg = await navigator.serviceWorker.getRegistration('/').catch(() => null);
    if (!reg?.active) return;
    if (actors) {
      const recent = await notifications.list({ limit: 100 }).catch(() => null);
      const ids = new Set((recent?.items || []).map((n) => n.actor_id));
      await Promise.all([...ids].map((id) => store.profile(id).catch(() => null)));
    }
    const rooms = {};
    for (const r of store.rooms.values()) rooms[r.id] = store.roomTitle(r);
    const users = {};
    for (const [id, p] of store.profileData) if (p) users[id] = p.display_name || p.username;
    reg.active.postMessage({ type: 'names', names: { rooms, users } });
  },
};

// A click on a push notification while a page is open: the worker asks it to open the room.
if (typeof navigator !== 'undefined' && 'serviceWorker' in navigator) {
  navigator.serviceWorker.addEventListener('message', async (e) => {
    const msg = e.data || {};
    if (msg.type !== 'open-notification' || typeof msg.href !== 'string' || !msg.href.startsWith('#/rooms/')) return;
    if (!auth.loggedIn) { location.hash = msg.href; return; }
    // A thread reply opens its thread, as from the inbox.
    location.hash = msg.room_id && msg.message_id && Number(msg.seq) > 0 ? await notifications.resolveHref(msg) : msg.href;
    if (msg.id) notifications.markRead([{ id: msg.id, read_at: null }]).catch(() => {});
  });
  navigator.serviceWorker.startMessages?.();
}

// ---------- the settings page ----------

function deviceTimeZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch { return 'UTC'; }
}

/** `#/settings/notifications`: preferences, and browser notifications on this device. */
export function mountNotificationSettings(main) {
  let disposed = false;
  const form = h('form', { class: 'card', testid: 'notif-settings-form', novalidate: true, 'aria-labelledby': 'notif-prefs-h' },
    h('h2', { id: 'notif-prefs-h', text: 'Preferences' }),
    h('p', { class: 'loading', text: 'Loading…' }));
  const pushCard = h('section', { class: 'card', testid: 'push-card', 'aria-labelledby': 'push-h' });
  main.appendChild(h('div', { class: 'page' },
    h('h1', { tabindex: '-1', text: 'Notification settings' }),
    form, pushCard));

  const radio = (name, value, label, checked) => h('label', { class: 'radio' },
    h('input', { type: 'radio', name, value, checked, testid: `notif-${name}-${value}` }), ` ${label}`);
  const check = (name, label, checked, hint) => h('div', { class: 'field' },
    h('label', { class: 'radio' }, h('input', { type: 'checkbox', name, checked, testid: `notif-${name}` }), label),
    hint ? h('p', { class: 'hint', text: hint }) : null);

  function fill(p) {
    const zone = deviceTimeZone();
    // "UTC" is the service's default: offer this device's zone instead (saved on Save).
    const tz = p.timezone === 'UTC' && zone !== 'UTC' ? zone : p.timezone;
    const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
    replace(form,
      h('h2', { id: 'notif-prefs-h', text: 'Preferences' }),
      h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
      h('fieldset', { class: 'field' },
        h('legend', { text: 'Email for unread notifications' }),
        radio('email', 'off', 'Never', p.email === 'off'),
        radio('email', 'instant', 'Soon (after 5 minutes unread)', p.email === 'instant'),
        radio('email', 'daily', 'A daily digest at 08:00', p.email === 'daily')),
      check('web_push', 'Browser notifications when I am not connected', p.web_push, 'Each browser also has to be turned on below.'),
      check('previews', 'Show message previews in notifications and emails', p.previews),
      field({ label: 'Time zone', name: 'timezone', value: tz, testid: 'notif-timezone', hint: tz !== p.timezone ? `From this device (saved as ${p.timezone} until you save).` : 'For the daily digest, e.g. Europe/Paris.', attrs: { list: 'tz-list', autocomplete: 'off', spellcheck: 'false' } }),
      h('datalist', { id: 'tz-list' }, zones.map((z) => h('option', { value: z }))),
      h('button', { type: 'submit', class: 'btn btn-primary', testid: 'notif-settings-save', text: 'Save' }),
      h('p', { class: 'muted small', role: 'status', testid: 'notif-settings-status' }));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFormErrors(form);
    const data = new FormData(form);
    const body = {
      email: data.get('email') || 'instant',
      web_push: data.get('web_push') === 'on',
      previews: data.get('previews') === 'on',
      timezone: String(data.get('timezone') || '').trim(),
    };
    const btn = form.querySelector('button[type=submit]');
    btn.disabled = true;
    try {
      const saved = await notifications.savePreferences(body);
      if (disposed) return;
      fill(saved);
      form.querySelector('[data-testid="notif-settings-status"]').textContent = 'Saved.';
      toast('Notification settings saved.');
    } catch (err) {
      // A time zone the server does not know comes back as a 400 naming the field.
      showFormErrors(form, err);
    } finally {
      btn.disabled = false;
    }
  });

  notifications.preferences().then((p) => { if (!disposed) fill(p); }).catch((err) => {
    if (!disposed) replace(form, h('p', { role: 'alert', text: errorText(err, 'Could not load your notification settings.') }));
  });
  renderPush();

  async function renderPush(message = '') {
    const head = h('h2', { id: 'push-h', text: 'Browser notifications on this device' });
    const note = h('p', { class: 'muted small', role: 'status', testid: 'push-status', text: message });
    if (!worker.supported()) {
      replace(pushCard, head, h('p', { testid: 'push-state', 'data-state': 'unsupported', text: 'This browser cannot show notifications from IntelliColab.' }));
      return;
    }
    let on = false;
    try {
      const reg = await navigator.serviceWorker.getRegistration('/');
      const sub = reg ? await reg.pushManager.getSubscription() : null;
      on = notifications.pushOnFor(auth.user?.id, sub);
    } catch { on = false; }
    if (disposed) return;
    const blocked = Notification.permission === 'denied';
    const button = h('button', {
      type: 'button', class: on ? 'btn' : 'btn btn-primary', testid: 'push-toggle', disabled: blocked && !on,
      text: on ? 'Turn off on this device' : 'Turn on on this device',
    });
    button.addEventListener('click', () => (on ? turnOff() : turnOn()));
    replace(pushCard, head,
      h('p', { testid: 'push-state', 'data-state': on ? 'on' : 'off',
        text: on ? 'On: this browser shows a notification when you are not connected.'
          : blocked ? 'Notifications are blocked for this site in the browser\'s settings.'
            : 'Off on this device.' }),
      button, note);
  }

  async function turnOn() {
    try {
      const permission = await Notification.requestPermission();
      if (permission !== 'granted') { renderPush('The browser did not allow notifications.'); return; }
      const reg = await worker.registration();
      await notifications.subscribePush(reg.pushManager, auth.user?.id);
      await worker.postNames({ actors: true });
      if (!disposed) renderPush('Browser notifications are on.');
    } catch (err) {
      if (!disposed) renderPush(errorText(err, `Could not turn on notifications: ${err?.message || err}`));
    }
  }

  async function turnOff() {
    try {
      const reg = await navigator.serviceWorker.getRegistration('/');
      await notifications.unsubscribePush(reg?.pushManager);
      if (!disposed) renderPush('Browser notifications are off.');
    } catch (err) {
      if (!disposed) renderPush(errorText(err, 'Could not turn off notifications.'));
    }
  }

  return () => { disposed = true; };
}
