// HTTP client for the IntelliColab API: JSON fetch wrapper, problem+json errors and the
// access/refresh token life cycle (refresh before expiry, rotation, reuse => logout).

const REFRESH_KEY = 'intellicolab.refresh_token';
/**
 * Device tokens (OWASP "device cookies"), one per account that logged in here:
 * `{ [user_id]: { token, logins: [username, email], at } }`. A login presenting the
 * account's token is not slowed down by someone else guessing that account's password.
 */
const DEVICE_KEY = 'intellicolab.device_tokens';
/** Accounts remembered per browser; the least recently used is forgotten beyond this. */
const DEVICE_MAX_ACCOUNTS = 10;
const REFRESH_LOCK = 'intellicolab-refresh';
/** Refresh this many seconds before the access token expires. */
const REFRESH_MARGIN_S = 60;

export class ApiError extends Error {
  constructor({ status = 0, code = null, title = null, detail = null, errors = [], retryAfter = null, network = false } = {}) {
    super(detail || title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.title = title;
    this.detail = detail;
    this.errors = Array.isArray(errors) ? errors : [];
    this.retryAfter = retryAfter;
    this.network = network;
  }

  /** A sentence a person can act on. */
  humanMessage() {
    if (this.network) return 'Could not reach the server. Check your connection and try again.';
    if (this.status === 429) {
      const wait = this.retryAfter ? ` Please wait ${this.retryAfter} second${this.retryAfter === '1' ? '' : 's'}.` : ' Please wait a moment.';
      return `${this.detail || 'Too many requests.'}${wait}`;
    }
    let msg = this.detail || this.title;
    if (!msg) {
      msg = {
        400: 'The request was not valid.',
        401: 'You need to log in again.',
        403: 'You are not allowed to do that.',
        404: 'Not found.',
        409: 'That conflicts with existing data.',
        413: 'That is too large.',
        503: 'The service is temporarily unavailable. Try again shortly.',
      }[this.status] || `Something went wrong (HTTP ${this.status}).`;
    }
    if (this.errors.length && !this.detail) {
      msg += ' ' + this.errors.map((e) => `${e.field}: ${e.message}`).join('; ');
    }
    return msg;
  }
}

class Auth extends EventTarget {
  constructor() {
    super();
    this.accessToken = null;
    this.expiresAt = 0; // ms epoch
    this.user = null;
    this._refreshTimer = null;
    this._refreshing = null;
  }

  get loggedIn() { return !!this.accessToken; }

  get storedRefreshToken() {
    try { return localStorage.getItem(REFRESH_KEY); } catch { return null; }
  }

  _storeRefresh(token) {
    try {
      if (token) localStorage.setItem(REFRESH_KEY, token);
      else localStorage.removeItem(REFRESH_KEY);
    } catch { /* storage disabled: the session lasts as long as the page */ }
  }

  /** Take a TokenResponse: keep the access token in memory, the refresh token in storage. */
  accept(tokens) {
    const first = !this.accessToken;
    this.accessToken = tokens.access_token;
    this.lifetime = (Number(tokens.expires_in) || 900) * 1000;
    this.expiresAt = Date.now() + this.lifetime;
    if (tokens.refresh_token) this._storeRefresh(tokens.refresh_token);
    if (tokens.user) this.user = tokens.user;
    if (tokens.user) rememberDevice(tokens.user, tokens.device_token);
    this._schedule();
    this.dispatchEvent(new CustomEvent(first ? 'login' : 'refreshed', { detail: { user: this.user } }));
  }

  _schedule() {
    clearTimeout(this._refreshTimer);
    const lifetime = this.expiresAt - Date.now();
    // Refresh a minute early, or at 80% of the lifetime for short-lived tokens.
    const delay = Math.max(1000, lifetime > 2 * REFRESH_MARGIN_S * 1000 ? lifetime - REFRESH_MARGIN_S * 1000 : lifetime * 0.8);
    this._refreshTimer = setTimeout(() => {
      this.refresh().catch(() => { /* refresh() already logged out on a definitive failure */ });
    }, delay);
  }

  /** True when the access token is missing or about to expire. */
  get stale() {
    return !this.accessToken || Date.now() > this.expiresAt - Math.min(10_000, this.lifetime * 0.2);
  }

  /**
   * Exchange the stored refresh token for new tokens. Single-flight within the page and,
   * where Web Locks exist, across tabs (so two tabs never present the same rotated token).
   */
  refresh() {
    if (this._refreshing) return this._refreshing;
    const run = async () => {
      const token = this.storedRefreshToken; // read inside the lock: another tab may have rotated it
      if (!token) throw this._endSession('no_refresh_token');
      let res;
      try {
        res = await fetch('/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ refresh_token: token }),
          credentials: 'same-origin',
        });
      } catch {
        // Network trouble: keep the session, try again soon.
        clearTimeout(this._refreshTimer);
        this._refreshTimer = setTimeout(() => this.refresh().catch(() => {}), 5000);
        throw new ApiError({ network: true });
      }
      if (res.ok) {
        this.accept(await res.json());
        return this.accessToken;
      }
      const err = await toApiError(res);
      if (res.status === 401 || res.status === 400 || res.status === 403) {
        throw this._endSession(err.code || 'refresh_failed', err);
      }
      // 429/5xx: transient, retry later but report the failure to the caller.
      clearTimeout(this._refreshTimer);
      this._refreshTimer = setTimeout(() => this.refresh().catch(() => {}), 10_000);
      throw err;
    };
    const locked = navigator.locks?.request
      ? () => navigator.locks.request(REFRESH_LOCK, run)
      : run;
    this._refreshing = locked().finally(() => { this._refreshing = null; });
    return this._refreshing;
  }

  _endSession(reason, err) {
    this.clear();
    this.dispatchEvent(new CustomEvent('logout', { detail: { reason } }));
    return err || new ApiError({ status: 401, code: reason, detail: 'Your session has ended. Please log in again.' });
  }

  clear() {
    clearTimeout(this._refreshTimer);
    this.accessToken = null;
    this.expiresAt = 0;
    this.user = null;
    this._storeRefresh(null);
  }

  /** A valid access token, refreshing first if it is about to expire. */
  async token() {
    if (this.stale && this.storedRefreshToken) await this.refresh();
    return this.accessToken;
  }

  async logout() {
    const token = this.accessToken;
    if (token) {
      try {
        await fetch('/auth/logout', { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
      } catch { /* logging out locally is what matters */ }
    }
    this._endSession('logout');
  }
}

export const auth = new Auth();

async function toApiError(res) {
  let body = null;
  try {
    const text = await res.text();
    body = text ? JSON.parse(text) : null;
  } catch { body = null; }
  return new ApiError({
    status: res.status,
    code: body?.code ?? null,
    title: body?.title ?? null,
    detail: body?.detail ?? null,
    errors: body?.errors ?? [],
    retryAfter: res.headers.get('Retry-After'),
  });
}

/**
 * Call the API. `path` is same-origin ("/chat/rooms"). Options: method, body (JSON),
 * query (object), auth (default true). Resolves with the parsed JSON (or null for 204).
 */
export async function api(path, { method = 'GET', body, query, auth: withAuth = true, signal } = {}) {
  let url = path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') qs.set(k, v);
    const s = qs.toString();
    if (s) url += (url.includes('?') ? '&' : '?') + s;
  }
  const attempt = async () => {
    const headers = { Accept: 'application/json, application/problem+json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (withAuth) {
      const token = await auth.token();
      if (!token) throw new ApiError({ status: 401, code: 'not_logged_in', detail: 'Please log in.' });
      headers.Authorization = `Bearer ${token}`;
    }
    try {
      return await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
    } catch (e) {
      if (e?.name === 'AbortError') throw e;
      throw new ApiError({ network: true });
    }
  };
  let res = await attempt();
  if (res.status === 401 && withAuth && auth.storedRefreshToken) {
    // The access token was rejected (expired, or its session was ended): refresh once and retry.
    await auth.refresh();
    res = await attempt();
  }
  if (!res.ok) {
    const err = await toApiError(res);
    if (res.status === 401 && withAuth) auth._endSession(err.code || 'unauthorized', err);
    throw err;
  }
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

function readDevices() {
  try {
    const all = JSON.parse(localStorage.getItem(DEVICE_KEY) || '{}');
    return all && typeof all === 'object' && !Array.isArray(all) ? all : {};
  } catch { return {}; }
}

function writeDevices(all) {
  try { localStorage.setItem(DEVICE_KEY, JSON.stringify(all)); } catch { /* storage disabled: logins just are not fast-tracked */ }
}

const loginKey = (s) => String(s || '').trim().toLowerCase();

/** The stored device token of the account `login` (a username or an email) names, if any. */
export function deviceTokenFor(login) {
  const key = loginKey(login);
  if (!key) return null;
  for (const entry of Object.values(readDevices())) {
    if (entry?.token && Array.isArray(entry.logins) && entry.logins.includes(key)) return entry.token;
  }
  return null;
}

/**
 * Keep the account's device token (a new one replaces the one presented: the server
 * deleted that), and the account's current username and email, so a login by either
 * finds it — also after an email change, which the next refresh's `user` brings.
 */
export function rememberDevice(user, token) {
  if (!user?.id) return;
  const all = readDevices();
  const entry = all[user.id];
  if (!token && !entry) return;
  all[user.id] = {
    token: token || entry.token,
    logins: [loginKey(user.username), loginKey(user.email)].filter(Boolean),
    at: Date.now(),
  };
  const ids = Object.keys(all).sort((a, b) => (all[b].at || 0) - (all[a].at || 0));
  for (const id of ids.slice(DEVICE_MAX_ACCOUNTS)) delete all[id];
  writeDevices(all);
}

export async function register({ username, email, password, display_name }) {
  const body = { username, email, password };
  if (display_name) body.display_name = display_name;
  const tokens = await api('/auth/register', { method: 'POST', body, auth: false });
  auth.accept(tokens);
  return tokens.user;
}

export async function login({ login: who, password }) {
  const body = { login: who, password };
  // An unknown or expired device token is ignored by the server (the ordinary limits apply),
  // so there is nothing to forget on failure; a success brings a fresh one.
  const device = deviceTokenFor(who);
  if (device) body.device_token = device;
  const tokens = await api('/auth/login', { method: 'POST', body, auth: false });
  // Two-factor on (API.md v1.1): no tokens yet; `loginMfa` finishes with a code.
  if (tokens?.mfa_required) return { mfa: { token: tokens.mfa_token, methods: tokens.methods || [] } };
  auth.accept(tokens);
  if (!auth.user) auth.user = await api('/auth/me');
  return auth.user;
}

/** POST /auth/login/mfa: `{code}` (authenticator app) or `{recovery_code}`. */
export async function loginMfa({ mfa_token, code, recovery_code }) {
  const body = recovery_code ? { mfa_token, recovery_code } : { mfa_token, code };
  const tokens = await api('/auth/login/mfa', { method: 'POST', body, auth: false });
  auth.accept(tokens);
  if (!auth.user) auth.user = await api('/auth/me');
  return auth.user;
}

/** On page load: resume the session from the stored refresh token, if any. */
export async function restoreSession() {
  if (!auth.storedRefreshToken) return false;
  try {
    await auth.refresh();
    if (!auth.user) auth.user = await api('/auth/me');
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.network) throw e;
    return false;
  }
}

/** POST /auth/email: mails a confirmation link to `email`; the address changes once it is opened. */
export async function requestEmailChange({ email, current_password }) {
  await api('/auth/email', { method: 'POST', body: { email, current_password } });
}

/** POST /auth/email/verify/confirm (no login needed: the link may be opened anywhere). */
export async function confirmEmail(token) {
  await api('/auth/email/verify/confirm', { method: 'POST', body: { token }, auth: false });
}

/** POST /auth/password-reset/request: 202 whether or not the address has an account. */
export async function requestPasswordReset(email) {
  await api('/auth/password-reset/request', { method: 'POST', body: { email }, auth: false });
}

/** POST /auth/password-reset/confirm: sets the password and ends every session of the account. */
export async function confirmPasswordReset({ token, new_password }) {
  await api('/auth/password-reset/confirm', { method: 'POST', body: { token, new_password }, auth: false });
}
