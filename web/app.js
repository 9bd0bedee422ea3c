// IntelliColab web client — entry point: session bootstrap, hash router, top bar.
import { api, auth, restoreSession } from './js/api.js';
import { store } from './js/store.js';
import { h, clear, toast } from './js/dom.js';
import { mountLogin, mountRegister } from './js/views/auth.js';
import { mountChat } from './js/views/rooms.js';
import { mountPeople, mountProfile, mountFollowList, mountMe } from './js/views/people.js';
import { mountSessions } from './js/views/sessions.js';
import { mountConfirmEmail, mountResetPassword, mountForgotPassword } from './js/views/account.js';
import { mountBell, startNotifications, stopNotifications, mountNotificationSettings } from './js/views/notifications.js';
import { mountSecurity, refreshVerifyBanner } from './js/views/security.js';

const main = document.getElementById('main');
const nav = document.getElementById('main-nav');
const connEl = document.getElementById('conn-status');
let cleanup = null;
let logoutNotice = null;
let lastRoute = null;

const PUBLIC_ROUTES = new Set(['login', 'register']);
/** Pages of mailed links: they work logged in or out (the mail may be opened anywhere). */
const OPEN_ROUTES = new Set(['confirm-email', 'verify-email', 'reset', 'forgot-password']);

/** `#/name/arg?query`: the mailed links carry their token in the query (`#/reset?token=…`). */
function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const parts = (q < 0 ? raw : raw.slice(0, q)).split('/').filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || '', args: parts.slice(1), query: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
}

/**
 * Take the token out of the address bar once read (history, screenshots and the Referer of
 * a later navigation should not carry it); replaceState does not fire hashchange.
 */
function takeToken(name, query) {
  const token = query.get('token');
  if (token) history.replaceState(history.state, '', `#/${name}`);
  return token;
}

function render() {
  const { name, args, query } = parseRoute();
  if (!auth.loggedIn && !PUBLIC_ROUTES.has(name) && !OPEN_ROUTES.has(name)) {
    if (location.hash !== '#/login') { location.replace('#/login'); return; }
  }
  if (auth.loggedIn && (PUBLIC_ROUTES.has(name) || name === '')) { location.replace('#/rooms'); return; }

  const key = `${name}/${args.join('/')}?${query}`;
  if (key === lastRoute && cleanup) return;
  lastRoute = key;
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } }
  cleanup = null;
  clear(main);
  document.body.dataset.route = name || 'home';
  refreshVerifyBanner();

  let result;
  switch (name) {
    case 'login': result = mountLogin(main, { notice: logoutNotice }); logoutNotice = null; break;
    case 'register': result = mountRegister(main); break;
    case 'rooms': result = args[0]
      ? mountChat(main, { pane: 'room', roomId: args[0], target: { around: query.get('around'), msg: query.get('msg'), thread: query.get('thread') } })
      : mountChat(main, { pane: 'empty' }); break;
    case 'search': result = mountChat(main, { pane: 'search', query: query.get('q') || '' }); break;
    case 'discover': result = mountChat(main, { pane: 'discover' }); break;
    case 'new-room': result = mountChat(main, { pane: 'new' }); break;
    case 'people':
      if (args[0] && (args[1] === 'followers' || args[1] === 'following')) result = mountFollowList(main, args[0], args[1]);
      else if (args[0]) result = mountProfile(main, args[0]);
      else result = mountPeople(main);
      break;
    case 'me': result = mountMe(main); break;
    case 'sessions': result = mountSessions(main); break;
    case 'settings': // v1.1: only notification settings so far
      if (args[0] !== 'notifications') { location.replace('#/settings/notifications'); return; }
      result = mountNotificationSettings(main);
      break;
    case 'security': result = mountSecurity(main); break;
    // The email change's link and the verification link (API.md v1.1) confirm the same way.
    case 'confirm-email':
    case 'verify-email': result = mountConfirmEmail(main, { token: takeToken(name, query) }); break;
    case 'reset': result = mountResetPassword(main, { token: takeToken(name, query) }); break;
    case 'forgot-password': result = mountForgotPassword(main); break;
    default:
      main.appendChild(h('div', { class: 'page' },
        h('h1', { tabindex: '-1', text: 'Page not found' }),
        h('p', {}, h('a', { href: '#/rooms', text: 'Go to your chats' }))));
  }
  cleanup = typeof result === 'function' ? result : null;

  for (const a of nav.querySelectorAll('a[data-nav]')) {
    const active = a.dataset.nav === name || (a.dataset.nav === 'rooms' && (name === 'discover' || name === 'new-room' || name === 'search'));
    if (active) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const heading = main.querySelector('h1');
  document.title = heading && heading.textContent && !heading.classList.contains('visually-hidden')
    ? `${heading.textContent} · IntelliColab` : 'IntelliColab';
  moveFocus();
}

/** After navigation: focus the view's preferred control, or its heading. */
function moveFocus() {
  const target = main.querySelector('[data-autofocus]') || main.querySelector('h1') || main;
  // On small screens avoid popping the keyboard for the composer: focus the heading instead.
  const narrow = window.matchMedia('(max-width: 700px)').matches;
  const el = narrow && target.matches('textarea, input') && target.id === 'composer-input' ? (main.querySelector('h1') || target) : target;
  requestAnimationFrame(() => el.focus({ preventScroll: false }));
}

function setConnection(state) {
  connEl.dataset.state = state;
  const text = { open: 'Live', connecting: 'Connecting…', closed: 'Reconnecting…', offline: 'Offline' }[state] || state;
  connEl.querySelector('.conn-text').textContent = text;
  connEl.title = state === 'open' ? 'Connected: messages arrive live' : 'Not connected: messages will be sent when the connection is back';
}

function showShell(loggedIn) {
  nav.hidden = !loggedIn;
  connEl.hidden = !loggedIn;
}

async function onLoggedIn() {
  showShell(true);
  try {
    if (!auth.user) auth.user = await api('/auth/me');
    await store.start();
    startNotifications();
    store.noteActivity();
  } catch (err) {
    toast(err.humanMessage ? err.humanMessage() : 'Could not load your rooms.', 'error');
  }
  lastRoute = null;
  render();
}

auth.addEventListener('login', () => { onLoggedIn(); });
auth.addEventListener('logout', (e) => {
  store.stop();
  stopNotifications();
  showShell(false);
  refreshVerifyBanner();
  const reason = e.detail?.reason;
  logoutNotice = reason === 'logout' ? 'You have logged out.'
    : reason === 'refresh_token_reused' ? 'Your session was ended for your security. Please log in again.'
      : reason === 'password_reset' ? 'Your password was changed and every session ended. Log in with your new password.'
      : reason === 'account_deleted' ? 'Your account was deleted.'
      : 'Your session has ended. Please log in again.';
  lastRoute = null;
  if (location.hash === '#/login') render(); else location.hash = '#/login';
});

store.addEventListener('status', (e) => setConnection(e.detail.state));
store.addEventListener('rooms', () => {
  const unread = [...store.rooms.values()].reduce((n, r) => n + (r.unread_count || 0), 0);
  document.title = document.title.replace(/^\(\d+\) /, '');
  if (unread) document.title = `(${unread}) ${document.title}`;
});

// Presence dots anywhere on the page follow the store (v1.1).
store.addEventListener('presence', (e) => {
  const { user_id: id, status } = e.detail;
  for (const dot of document.querySelectorAll(`[data-presence-user="${CSS.escape(id)}"]`)) {
    dot.dataset.status = status;
    dot.setAttribute('aria-label', status);
    dot.title = status;
  }
});

// Idle after 5 minutes without input or while the page is hidden; active again on input.
let lastActivityNote = 0;
const noteActivity = () => {
  if (!auth.loggedIn) return;
  const t = Date.now();
  if (t - lastActivityNote < 1000 && !store.idle) return; // at most once a second
  lastActivityNote = t;
  store.noteActivity();
};
for (const type of ['keydown', 'pointerdown', 'pointermove', 'wheel', 'touchstart', 'focus']) {
  window.addEventListener(type, noteActivity, { passive: true, capture: true });
}
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'hidden') store.setIdle(true); else noteActivity();
});

document.getElementById('logout-button').addEventListener('click', () => auth.logout());
// v1.1: the notifications bell and inbox, before Log out.
mountBell(nav, document.getElementById('logout-button'));
// The skip link must not change the hash (that is the router's).
document.querySelector('.skip-link').addEventListener('click', (e) => {
  e.preventDefault();
  (main.querySelector('h1') || main).focus();
});
window.addEventListener('hashchange', render);
// Logged out in another tab: follow suit here.
window.addEventListener('storage', (e) => {
  if (e.key === 'intellicolab.refresh_token' && !e.newValue && auth.loggedIn) auth._endSession('logout');
});

// Debug and test hooks (used by the end-to-end tests; harmless for people).
window.intellicolab = {
  store,
  auth,
  get ws() { return store.rt; },
  dropConnection: () => store.rt?.drop(),
  simulateOffline: (ms) => store.rt?.simulateOffline(ms),
  reconnectNow: () => store.rt?.reconnectNow(),
  /** Test hook: behave as after 5 minutes without input (idle) or on input again. */
  setIdle: (idle) => (idle ? store.setIdle(true) : store.noteActivity()),
};

(async function boot() {
  document.getElementById('boot-loading')?.remove();
  showShell(false);
  try {
    const restored = await restoreSession();
    if (!restored) render();
    // When restored, the "login" event already started the app.
  } catch {
    main.appendChild(h('div', { class: 'page' },
      h('h1', { tabindex: '-1', text: 'Cannot reach IntelliColab' }),
      h('p', { role: 'alert', text: 'The server did not answer. Check your connection; this page retries when you reload it.' }),
      h('button', { type: 'button', class: 'btn btn-primary', on: { click: () => location.reload() }, text: 'Retry' })));
  }
})();
