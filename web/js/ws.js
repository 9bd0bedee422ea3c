// Realtime client for GET /chat/ws: automatic reconnect with exponential backoff and jitter,
// `resume` from the last seen seq per room after every (re)connect, pending sends that are
// resent with the same client_msg_id until acknowledged, keep-alive pings.
//
// Events dispatched (all CustomEvent, payload in `detail`):
//   status   {state: 'connecting'|'open'|'closed'|'offline', attempt}
//   event    the server frame {type:'event', room_id, seq, event}
//   ack      {client_msg_id, message}
//   send-error {client_msg_id, code, message}
//   typing   {room_id, user_id}
//   read     {room_id, user_id, seq}            a member moved their read marker (v1.1)
//   presence {user_id, status, last_seen_at}    a subscribed user's presence (v1.1)
//   error    a server error frame without client_msg_id

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const PING_EVERY_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;
const CLOSE_SESSION_ENDED = 4001;

export class Realtime extends EventTarget {
  /**
   * @param {object} opts
   * @param {() => Promise<string|null>} opts.getToken  a valid access token
   * @param {() => Record<string, number>} opts.resumeState  room_id -> last seen seq
   */
  constructor({ getToken, resumeState }) {
    super();
    this.getToken = getToken;
    this.resumeState = resumeState;
    this.socket = null;
    this.state = 'closed';
    this.attempt = 0;
    this.stopped = true;
    this.pending = new Map(); // client_msg_id -> send frame, in insertion (send) order
    this._retryTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._holdUntil = 0;
    this._onOnline = () => { if (!this.stopped && this.state !== 'open') this._reconnectNow(); };
    this._onVisible = () => {
      // After a laptop sleep the socket may be dead without a close event: probe it.
      if (document.visibilityState === 'visible' && this.state === 'open') this._ping();
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this._onOnline);
    document.addEventListener('visibilitychange', this._onVisible);
    this._connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this._onOnline);
    document.removeEventListener('visibilitychange', this._onVisible);
    clearTimeout(this._retryTimer);
    this._stopPings();
    const s = this.socket;
    this.socket = null;
    if (s) { s.onclose = null; s.close(1000, 'logout'); }
    this.pending.clear();
    this._setState('closed');
  }

  _setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('status', { detail: { state, attempt: this.attempt } }));
  }

  async _connect() {
    if (this.stopped) return;
    clearTimeout(this._retryTimer);
    const wait = this._holdUntil - Date.now();
    if (wait > 0) { this._retryTimer = setTimeout(() => this._connect(), wait); return; }
    this._setState('connecting');
    let token;
    try {
      const force = this._forceRefresh || (this.attempt > 0 && this.attempt % 3 === 0);
      this._forceRefresh = false;
      token = await this.getToken(force);
    } catch {
      token = null;
    }
    if (this.stopped) return;
    if (!token) { this._scheduleReconnect(); return; }
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/chat/ws?access_token=${encodeURIComponent(token)}`;
    let socket;
    try {
      socket = new WebSocket(url);
    } catch {
      this._scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (socket !== this.socket) return;
      this.attempt = 0;
      this._setState('open');
      // Catch up first, then resend what was never acknowledged (same client_msg_id, so
      // the server answers with the stored message instead of storing it twice).
      this._raw({ type: 'resume', rooms: this.resumeState() });
      for (const frame of this.pending.values()) this._raw(frame);
      this._startPings();
    };
    socket.onmessage = (ev) => {
      if (socket !== this.socket) return;
      this._gotTraffic();
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      this._handle(frame);
    };
    socket.onclose = (ev) => {
      if (socket !== this.socket) return;
      // 4001: the access token expired or its session was ended — get a fresh token first
      // (a refused refresh logs out).
      if (ev.code === CLOSE_SESSION_ENDED) this._forceRefresh = true;
      this.socket = null;
      this._stopPings();
      if (this.stopped) return;
      this._setState(navigator.onLine === false ? 'offline' : 'closed');
      this._scheduleReconnect();
    };
    socket.onerror = () => { /* onclose follows */ };
  }

  _scheduleReconnect() {
    if (this.stopped) return;
    clearTimeout(this._retryTimer);
    // Full jitter: uniform in [0, min(max, base * 2^attempt)], at least 250 ms.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = Math.max(250, Math.random() * cap);
    this.attempt += 1;
    this.nextRetryAt = Date.now() + delay;
    this._retryTimer = setTimeout(() => this._connect(), delay);
  }

  _reconnectNow() {
    this.attempt = 0;
    clearTimeout(this._retryTimer);
    if (this.socket) return;
    this._connect();
  }

  _handle(frame) {
    switch (frame.type) {
      case 'event':
        this.dispatchEvent(new CustomEvent('event', { detail: frame }));
        break;
      case 'ack':
        this.pending.delete(frame.client_msg_id);
        this.dispatchEvent(new CustomEvent('ack', { detail: frame }));
        break;
      case 'error':
        if (frame.client_msg_id) {
          this.pending.delete(frame.client_msg_id);
          this.dispatchEvent(new CustomEvent('send-error', { detail: frame }));
        } else {
          this.dispatchEvent(new CustomEvent('error', { detail: frame }));
        }
        break;
      case 'typing':
      case 'read':
      case 'presence':
      case 'notifications': // v1.1: {unread_count}, the notifications service's badge
        this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
        break;
      case 'pong':
      case 'ready': // {rooms: {room_id: last_seq}} once subscribed; `resume` does the catching up
      default:
        break;
    }
  }

  _raw(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /** Queue a message; it is sent now if connected and resent on every reconnect until acked. */
  sendMessage({ room_id, body, client_msg_id, reply_to, thread_root_id, attachment_ids }) {
    const frame = { type: 'send', room_id, body, client_msg_id };
    if (reply_to) frame.reply_to = reply_to;
    if (thread_root_id) frame.thread_root_id = thread_root_id;
    if (attachment_ids?.length) frame.attachment_ids = attachment_ids;
    this.pending.set(client_msg_id, frame);
    this._raw(frame);
  }

  /** Forget a pending message (e.g. the user discarded a failed send). */
  dropPending(clientMsgId) { this.pending.delete(clientMsgId); }

  typing(roomId) { this._raw({ type: 'typing', room_id: roomId }); }

  /** Replace the set of users whose presence frames I get (≤ 200); false when not sent. */
  presenceSubscribe(userIds) { return this._raw({ type: 'presence.subscribe', user_ids: userIds }); }

  /** Tell the server I am idle (no input for a while, page hidden) or active again. */
  idle(idle) { return this._raw({ type: idle ? 'idle' : 'active' }); }

  /** Ask for events after the given seqs (used when a gap is detected). */
  resume(rooms) { this._raw({ type: 'resume', rooms }); }

  _startPings() {
    this._stopPings();
    this._pingTimer = setInterval(() => this._ping(), PING_EVERY_MS);
  }

  _stopPings() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = null;
    this._pongTimer = null;
  }

  _ping() {
    if (!this._raw({ type: 'ping' })) return;
    clearTimeout(this._pongTimer);
    this._pongTimer = setTimeout(() => {
      // No answer: the connection is dead (sleep, NAT timeout). Drop it and reconnect.
      this.drop();
    }, PONG_TIMEOUT_MS);
  }

  _gotTraffic() {
    clearTimeout(this._pongTimer);
    this._pongTimer = null;
  }

  /** Close the current socket as if the network dropped it; reconnects automatically. */
  drop() {
    const s = this.socket;
    if (!s) return;
    this.socket = null;
    this._stopPings();
    s.onclose = null;
    try { s.close(4000, 'client drop'); } catch { /* already closed */ }
    if (this.stopped) return;
    this._setState('closed');
    this._scheduleReconnect();
  }

  /**
   * Debug/test hook: drop the socket and stay offline for `ms` milliseconds (messages sent
   * meanwhile stay pending), then reconnect and resume.
   */
  simulateOffline(ms = 3000) {
    this._holdUntil = Date.now() + ms;
    this.drop();
    clearTimeout(this._retryTimer);
    this._setState('offline');
    this._retryTimer = setTimeout(() => { this.attempt = 0; this._connect(); }, ms);
  }

  /** Debug/test hook: end a simulated outage now. */
  reconnectNow() {
    this._holdUntil = 0;
    this._reconnectNow();
  }
}
