/**
 * duplex.js: the browser client for `duplex serve`'s pub/sub endpoint
 * (/ws, the duplex.v1 JSON protocol of docs/protocol.md).
 *
 * A dependency-free ES2020 module; no build step. It keeps one WebSocket
 * open, reconnects with exponential backoff and full jitter, resumes every
 * subscription after a reconnection without losing or repeating a message
 * (since/epoch, duplicates dropped, gaps reported), queues publishes while
 * offline, and matches replies to requests by "id".
 *
 * @example
 *   import { Duplex } from '/duplex.js';
 *   const c = new Duplex();                 // ws(s)://<this host>/ws
 *   c.on('status', (s) => console.log(s));  // connecting, open, reconnecting, closed
 *   await c.subscribe('news', (data, msg) => console.log(msg.seq, data));
 *   const seq = await c.publish('news', { title: 'hello' });
 *
 * @module duplex
 */

/** The subprotocol the client offers and the server selects. */
export const PROTOCOL = 'duplex.v1';

/** Topic names: 1 to 128 characters of [A-Za-z0-9_.:/-]. */
export const TOPIC_RE = /^[A-Za-z0-9_.:/-]{1,128}$/;

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/** Close code for "service restart": reconnect with a spread delay. */
const CLOSE_RESTART = 1012;
/** Close code we use when the heartbeat says the connection is dead. */
const CLOSE_HEARTBEAT = 4000;

/**
 * The delay before reconnection attempt `attempt` (1, 2, 3, ...):
 * exponential backoff with full jitter, a uniformly random integer in
 * [0, min(max, base * 2^(attempt-1))] milliseconds.
 *
 * @param {number} attempt  1 for the first retry
 * @param {number} base     ms, the cap of the first attempt
 * @param {number} max      ms, the largest cap
 * @param {() => number} [random]  uniform in [0, 1); Math.random by default
 * @returns {number} ms
 */
export function backoffDelay(attempt, base, max, random = Math.random) {
  const n = Math.min(Math.max(1, attempt), 60) - 1; // 2^59 * base is past any max
  const cap = Math.min(max, base * 2 ** n);
  return Math.min(cap, Math.floor(random() * (cap + 1)));
}

/**
 * An error from the server (an "error" frame) or from the client itself.
 * `code` is one of the protocol's error codes (bad_topic, forbidden, ...) or
 * one of the client's: "disconnected" (the connection dropped before the
 * reply: for a publish that was sent, the outcome is unknown; see `sent`),
 * "timeout", "dropped" (pushed out of a full publish queue), "queue_full",
 * "closed" (close() was called), "not_connected".
 */
export class DuplexError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {object} [extra]  merged into the error (frame, topic, sent)
   */
  constructor(code, message, extra) {
    super(message || code);
    this.name = 'DuplexError';
    /** @type {string} */
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

/**
 * @typedef {object} DuplexOptions
 * @property {string|(() => (string|null|Promise<string|null>))} [token]
 *   A JWT, sent as the second subprotocol value "bearer.<token>" (browsers
 *   cannot set an Authorization header on a WebSocket). A function is
 *   called before every connection attempt (to refresh a token).
 * @property {string|(() => (string|null|Promise<string|null>))} [ticket]
 *   A one-time ticket (POST /api/ticket), added as ?ticket=. Pass a
 *   function: each attempt needs a fresh ticket. If it throws, the attempt
 *   counts as failed and the client retries with backoff.
 * @property {{base?: number, max?: number, maxAttempts?: number}|false} [reconnect]
 *   Backoff in ms (500, 30000) and the number of failed attempts in a row
 *   before giving up (Infinity). false: never reconnect.
 * @property {number} [spread]  ms: after a close with 1012 (server
 *   restart), the reconnection waits a random time in [0, spread] (5000)
 * @property {number} [queueLimit]  publishes kept while offline (1000);
 *   0: reject publishes at once while offline
 * @property {'drop-oldest'|'reject'} [queuePolicy]  when the queue is
 *   full: push out the oldest (its promise rejects with code "dropped" and
 *   a "drop" event fires; the default), or reject the new publish with
 *   code "queue_full"
 * @property {number} [requestTimeout]  ms to wait for a reply (10000)
 * @property {number|boolean} [heartbeat]  true (default): use the hello's
 *   heartbeat; a number: that interval in ms; false: off. After `heartbeat`
 *   ms without input the client sends {"op":"ping"}; after twice that it
 *   drops the connection and reconnects.
 * @property {boolean} [autoConnect]  connect in the constructor (true)
 * @property {typeof WebSocket} [WebSocket]  a WebSocket implementation
 *   (for Node: the `ws` package); the global one by default
 * @property {() => number} [random]  uniform in [0, 1) for the jitter
 */

/**
 * @typedef {object} SubscribeOptions
 * @property {number} [since]  resume after this seq (0: the whole retained
 *   history); default: only live messages
 * @property {string} [epoch]  the epoch `since` belongs to
 * @property {boolean} [presence]  keep the topic's member list: a
 *   "presence" event fires with the list after every (re)subscription and
 *   every join/leave
 * @property {(gap: object) => void} [onGap]  called with each gap notice
 *   for this topic (the "gap" event fires too)
 */

/**
 * A duplex.v1 connection that survives disconnections.
 *
 * Events (`on(type, fn)`; listeners get the arguments shown):
 * - `status` (status, detail): "connecting" | "open" | "reconnecting" | "closed"
 * - `open` ({reconnected, protocol}): the WebSocket is open; subscriptions
 *   are being resumed and the queue flushed
 * - `hello` (frame): the server's hello
 * - `close` ({code, reason, wasClean, willReconnect})
 * - `reconnecting` (attempt, delay, {code, reason}): attempt 1, 2, ... in
 *   `delay` ms (`nextRetryAt` has the time)
 * - `giveup` (attempts): reconnect.maxAttempts reached; status is "closed"
 * - `error` (err): a DuplexError not tied to a request, a socket error, or
 *   an exception thrown by a handler
 * - `subscribed` ({topic, seq, epoch, since, resumed}): after every
 *   (re)subscription ack; since is what was asked (null: live only)
 * - `message` (msg): every delivered topic message {topic, seq, data, epoch}
 * - `gap` (gap): {topic, from, to, epoch, reason} (reason "skipped": a
 *   seq jump that no gap notice announced, detected by the client)
 * - `presence` ({topic, members, available, change}): members is an array
 *   of {id, name, count}; change is {type: "sync"|"join"|"leave", member}
 * - `join`, `leave` (member, topic)
 * - `drop` ({topic, data}): a queued publish pushed out of a full queue
 * - `frame` (frame): every frame received, before it is handled
 */
export class Duplex {
  /**
   * @param {string|DuplexOptions} [url]  ws:// or wss:// URL, or a path
   *   like "/ws" (resolved against the page); default: ws(s)://<host>/ws
   * @param {DuplexOptions} [options]
   */
  constructor(url, options) {
    if (url && typeof url === 'object') {
      options = url;
      url = undefined;
    }
    const o = options || {};
    const rc = o.reconnect === false ? null : (o.reconnect || {});
    /** The endpoint. */
    this.url = resolveUrl(url);
    this._opt = {
      token: o.token,
      ticket: o.ticket,
      reconnect: rc && {
        base: num(rc.base, 500),
        max: num(rc.max, 30000),
        maxAttempts: num(rc.maxAttempts, Infinity),
      },
      spread: num(o.spread, 5000),
      queueLimit: num(o.queueLimit, 1000),
      queuePolicy: o.queuePolicy === 'reject' ? 'reject' : 'drop-oldest',
      requestTimeout: num(o.requestTimeout, 10000),
      heartbeat: o.heartbeat === undefined ? true : o.heartbeat,
      WebSocket: o.WebSocket || globalThis.WebSocket,
      random: o.random || Math.random,
    };
    if (typeof this._opt.WebSocket !== 'function')
      throw new TypeError('duplex: no WebSocket implementation (pass options.WebSocket)');

    /** CONNECTING (0), OPEN (1), CLOSING (2) or CLOSED (3), like WebSocket. */
    this.readyState = CLOSED;
    /** "idle" | "connecting" | "open" | "reconnecting" | "closed". */
    this.status = 'idle';
    /** The last hello frame, or null. */
    this.hello = null;
    /** When status is "reconnecting": Date.now() of the next attempt. */
    this.nextRetryAt = 0;
    /** Counters, for display and tests. */
    this.stats = { messages: 0, duplicates: 0, gaps: 0, reconnects: 0, dropped: 0 };

    this._ws = null;
    this._listeners = new Map();
    /** @type {Map<string, Topic>} */
    this._topics = new Map();
    this._pending = new Map(); // id -> {op, topic, resolve, reject, timer}
    this._queue = []; // publishes waiting for a connection
    this._nextId = 1;
    this._attempt = 0; // failed attempts in a row
    this._everOpen = false;
    this._userClosed = false;
    this._retryTimer = null;
    this._hbTimer = null;
    this._lastRx = 0;
    this._gen = 0;
    this._onOnline = () => {
      if (this.status === 'reconnecting') this._retryNow();
    };
    if (o.autoConnect !== false) this.connect();
  }

  // ---- events ----------------------------------------------------------

  /**
   * Adds a listener. @param {string} type @param {Function} fn
   * @returns {this}
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return this;
  }

  /** Removes a listener. @param {string} type @param {Function} fn @returns {this} */
  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
    return this;
  }

  /** Adds a listener called at most once. @returns {this} */
  once(type, fn) {
    const wrap = (...args) => {
      this.off(type, wrap);
      fn(...args);
    };
    return this.on(type, wrap);
  }

  _emit(type, ...args) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's bug must not break the connection's bookkeeping.
        if (type !== 'error') this._emit('error', e);
        else setTimeout(() => { throw e; });
      }
    }
  }

  _setStatus(status, detail) {
    if (this.status === status && status !== 'reconnecting') return;
    this.status = status;
    this._emit('status', status, detail || {});
  }

  // ---- connection ------------------------------------------------------

  /**
   * Opens the connection (done by the constructor unless autoConnect is
   * false; again after close()). Does nothing when already connected or
   * connecting.
   */
  connect() {
    if (this._ws || this.status === 'connecting') return;
    this._userClosed = false;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (typeof window !== 'undefined' && window.addEventListener)
      window.addEventListener('online', this._onOnline);
    this._open();
  }

  /**
   * Closes the connection for good (until connect()). Queued and pending
   * requests reject with code "closed"; subscriptions are kept and resumed
   * by a later connect().
   * @param {number} [code]  1000 by default
   * @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    this._userClosed = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (typeof window !== 'undefined' && window.removeEventListener)
      window.removeEventListener('online', this._onOnline);
    const err = () => new DuplexError('closed', 'the connection was closed');
    for (const q of this._queue.splice(0)) q.reject(err());
    const ws = this._ws;
    if (ws && ws.readyState <= OPEN) {
      this.readyState = CLOSING;
      try {
        ws.close(code, reason);
      } catch (e) {
        ws.close();
      }
    } else if (!ws) {
      this.readyState = CLOSED;
      this._setStatus('closed', { code, reason });
    }
  }

  async _open() {
    const gen = ++this._gen; // a close()+connect() during the await below wins
    this.readyState = CONNECTING;
    this._setStatus('connecting');
    let url = this.url;
    const protocols = [PROTOCOL];
    try {
      const token = await callOrValue(this._opt.token);
      if (token) protocols.push('bearer.' + token);
      const ticket = await callOrValue(this._opt.ticket);
      if (ticket) url += (url.includes('?') ? '&' : '?') + 'ticket=' + encodeURIComponent(ticket);
    } catch (e) {
      if (this._userClosed || gen !== this._gen) return;
      this.readyState = CLOSED;
      this._emit('error', e);
      this._afterClose({ code: 1006, reason: 'credentials: ' + (e && e.message), wasClean: false });
      return;
    }
    if (this._userClosed || gen !== this._gen) return;
    let ws;
    try {
      ws = new this._opt.WebSocket(url, protocols);
    } catch (e) {
      // A bad URL or token (SyntaxError): retrying cannot help.
      this.readyState = CLOSED;
      this._emit('error', e);
      this._setStatus('closed', { code: 1006, reason: String(e && e.message) });
      return;
    }
    this._ws = ws;
    ws.onopen = () => ws === this._ws && this._handleOpen(ws);
    ws.onmessage = (ev) => ws === this._ws && this._handleData(ev.data);
    ws.onerror = () => {
      if (ws === this._ws)
        this._emit('error', new DuplexError('socket', 'WebSocket error on ' + this.url));
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._detach();
      this._afterClose({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
    };
  }

  _handleOpen(ws) {
    this.readyState = OPEN;
    this._lastRx = Date.now();
    const reconnected = this._everOpen;
    this._everOpen = true;
    if (reconnected) this.stats.reconnects++;
    this._setStatus('open');
    this._emit('open', { reconnected, protocol: ws.protocol });
    this._startHeartbeat(typeof this._opt.heartbeat === 'number' ? this._opt.heartbeat : 0);
    // Resume first, then flush: our own queued publishes then come back
    // to us as messages on the topics we are subscribed to.
    for (const t of this._topics.values()) this._sendSubscribe(t);
    for (const q of this._queue.splice(0)) this._sendPublish(q);
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    this.readyState = CLOSED;
    this._stopHeartbeat();
    if (ws) ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    for (const t of this._topics.values()) {
      t.acked = false;
      t.subId = null;
    }
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      this._pending.delete(id);
      if (p.op === 'unsubscribe') p.resolve(); // the server forgets us anyway
      else if (p.op !== 'subscribe')
        p.reject(new DuplexError(this._userClosed ? 'closed' : 'disconnected',
          p.op === 'publish'
            ? 'the connection dropped before the ack: the message may or may not have been published'
            : 'the connection dropped before the reply', { sent: true, topic: p.topic }));
    }
  }

  _afterClose({ code, reason, wasClean }) {
    const rc = this._opt.reconnect;
    const willReconnect = !this._userClosed && !!rc;
    this._emit('close', { code, reason, wasClean, willReconnect });
    if (!willReconnect) {
      this._setStatus('closed', { code, reason });
      return;
    }
    let delay;
    let attempt;
    if (code === CLOSE_RESTART) {
      // Everyone was closed at once; spread the herd over the window.
      this._attempt = 1;
      attempt = 1;
      delay = Math.floor(this._opt.random() * (this._opt.spread + 1));
    } else {
      attempt = ++this._attempt;
      if (attempt > rc.maxAttempts) {
        this._setStatus('closed', { code, reason });
        this._emit('giveup', attempt - 1);
        return;
      }
      delay = backoffDelay(attempt, rc.base, rc.max, this._opt.random);
    }
    this.nextRetryAt = Date.now() + delay;
    this._setStatus('reconnecting', { attempt, delay, code, reason });
    this._emit('reconnecting', attempt, delay, { code, reason });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      if (!this._userClosed) this._open();
    }, delay);
  }

  _retryNow() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._open();
  }

  /** Drops a dead connection at once (no waiting for a closing handshake). */
  _drop(reason) {
    const ws = this._ws;
    if (!ws) return;
    this._detach();
    try {
      ws.close(CLOSE_HEARTBEAT, reason);
    } catch (e) { /* already closing */ }
    this._afterClose({ code: 1006, reason, wasClean: false });
  }

  _startHeartbeat(ms) {
    this._stopHeartbeat();
    if (!ms || ms <= 0) return;
    this._hbMs = ms;
    this._hbTimer = setInterval(() => {
      const idle = Date.now() - this._lastRx;
      if (idle >= 2 * ms) this._drop('heartbeat timeout');
      else if (idle >= ms) this._send({ op: 'ping' });
    }, Math.max(50, ms / 4));
  }

  _stopHeartbeat() {
    clearInterval(this._hbTimer);
    this._hbTimer = null;
  }

  // ---- sending ---------------------------------------------------------

  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Sends a request and resolves with the reply frame (any op), rejecting
   * with a DuplexError on an "error" reply, a timeout or a disconnection.
   * The building block of the other methods; useful for ops this version
   * does not wrap.
   * @param {object} frame  {op, ...}; "id" is set here
   * @returns {Promise<object>}
   */
  request(frame) {
    if (this.readyState !== OPEN)
      return Promise.reject(new DuplexError('not_connected', 'not connected'));
    return new Promise((resolve, reject) => this._track(frame, resolve, reject));
  }

  _track(frame, resolve, reject) {
    const id = this._nextId++;
    frame.id = id;
    const p = { op: frame.op, topic: frame.topic, resolve, reject, timer: null };
    if (this._opt.requestTimeout > 0) {
      p.timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new DuplexError('timeout', `no reply to ${frame.op} within ${this._opt.requestTimeout} ms`, { topic: frame.topic }));
      }, this._opt.requestTimeout);
    }
    this._pending.set(id, p);
    this._send(frame);
    return id;
  }

  // ---- pub/sub ---------------------------------------------------------

  /**
   * Subscribes `handler` to `topic`. One wire subscription per topic, any
   * number of handlers. The subscription is resumed after every
   * reconnection with since/epoch: the handler sees every message once, in
   * order; what cannot be delivered is reported as a gap.
   *
   * @param {string} topic
   * @param {(data: any, msg: {topic: string, seq: number, data: any, epoch: string}) => void} [handler]
   * @param {SubscribeOptions} [options]  used when the topic is new
   * @returns {Promise<{topic: string, seq: number, epoch: string}>}
   *   resolves with the first "subscribed" ack; rejects on an error reply
   *   (bad_topic, forbidden, ...; the subscription is then forgotten)
   */
  subscribe(topic, handler, options) {
    if (!TOPIC_RE.test(topic))
      return Promise.reject(new DuplexError('bad_topic', `bad topic name: ${JSON.stringify(topic)}`, { topic }));
    const o = options || {};
    let t = this._topics.get(topic);
    if (!t) {
      t = {
        topic,
        handlers: new Set(),
        lastSeq: Number.isInteger(o.since) && o.since >= 0 ? o.since : null,
        epoch: typeof o.epoch === 'string' ? o.epoch : null,
        resync: false, // after a gap: accept the next seq without a hole check
        acked: false,
        ack: null,
        subId: null,
        waiters: [],
        onGap: o.onGap,
        presence: !!o.presence,
        members: new Map(), // id -> {id, name, count}
        presenceAvailable: null,
      };
      this._topics.set(topic, t);
      if (this.readyState === OPEN) this._sendSubscribe(t);
    }
    if (handler) t.handlers.add(handler);
    if (t.acked) return Promise.resolve({ topic, seq: t.ack.seq, epoch: t.ack.epoch });
    return new Promise((resolve, reject) => t.waiters.push({ resolve, reject }));
  }

  _sendSubscribe(t) {
    const frame = { op: 'subscribe', topic: t.topic };
    if (t.lastSeq !== null) {
      frame.since = t.lastSeq;
      if (t.epoch) frame.epoch = t.epoch;
    }
    t.askedSince = t.lastSeq;
    // Errors come through _onError (which forgets the topic); a timeout
    // fails the waiting subscribe() but keeps the topic for the next
    // connection.
    t.subId = this._track(frame, () => {}, (e) => {
      for (const w of t.waiters.splice(0)) w.reject(e);
    });
  }

  /**
   * Removes `handler` (or every handler) from `topic`; unsubscribes on
   * the wire when no handler is left.
   * @param {string} topic
   * @param {Function} [handler]
   * @returns {Promise<void>}
   */
  unsubscribe(topic, handler) {
    const t = this._topics.get(topic);
    if (!t) return Promise.resolve();
    if (handler) {
      t.handlers.delete(handler);
      if (t.handlers.size) return Promise.resolve();
    }
    this._topics.delete(topic);
    for (const w of t.waiters.splice(0))
      w.reject(new DuplexError('closed', 'unsubscribed before the ack', { topic }));
    if (this.readyState !== OPEN) return Promise.resolve();
    return this.request({ op: 'unsubscribe', topic }).then(() => {}, (e) => {
      if (e.code !== 'not_subscribed' && e.code !== 'disconnected') throw e;
    });
  }

  /**
   * Publishes `data` (any JSON value) to `topic`. While offline the
   * publish waits in a queue (queueLimit, queuePolicy) and is sent after
   * the next connection's resubscriptions.
   * @param {string} topic
   * @param {*} data
   * @returns {Promise<number>} the seq the server assigned. Rejects with a
   *   DuplexError: an error reply (forbidden, too_large, ...), "dropped" /
   *   "queue_full" (queue), "disconnected" (sent, but the connection
   *   dropped before the ack: it may or may not have been published),
   *   "timeout", "closed"
   */
  publish(topic, data) {
    if (!TOPIC_RE.test(topic))
      return Promise.reject(new DuplexError('bad_topic', `bad topic name: ${JSON.stringify(topic)}`, { topic }));
    return new Promise((resolve, reject) => {
      const q = { frame: { op: 'publish', topic, data: data === undefined ? null : data }, resolve, reject };
      if (this.readyState === OPEN) return this._sendPublish(q);
      if (this._userClosed)
        return reject(new DuplexError('closed', 'the connection was closed', { topic }));
      const limit = this._opt.queueLimit;
      if (this._queue.length >= limit) {
        if (this._opt.queuePolicy === 'reject' || limit <= 0)
          return reject(new DuplexError(limit <= 0 ? 'not_connected' : 'queue_full',
            limit <= 0 ? 'not connected' : `the publish queue is full (${limit})`, { topic }));
        const old = this._queue.shift();
        this.stats.dropped++;
        old.reject(new DuplexError('dropped', 'pushed out of the full publish queue', { topic: old.frame.topic }));
        this._emit('drop', { topic: old.frame.topic, data: old.frame.data });
      }
      this._queue.push(q);
    });
  }

  _sendPublish(q) {
    this._track(q.frame, (reply) => q.resolve(reply.seq), q.reject);
  }

  /** Failed connection attempts in a row (0 once the server said hello). @returns {number} */
  get attempt() {
    return this._attempt;
  }

  /** Publishes waiting for a connection. @returns {number} */
  get queued() {
    return this._queue.length;
  }

  /**
   * Who is subscribed to `topic` (presence must be on at the server).
   * @param {string} topic
   * @returns {Promise<Array<{id: string, name: (string|null)}>>}
   */
  presence(topic) {
    return this.request({ op: 'presence', topic }).then((r) => r.members || []);
  }

  /**
   * Round trip to the server. @returns {Promise<number>} ms
   */
  ping() {
    const t0 = Date.now();
    return this.request({ op: 'ping' }).then(() => Date.now() - t0);
  }

  /**
   * Where a topic's subscription stands, to persist and pass back as
   * subscribe(topic, fn, {since, epoch}) after a page reload.
   * @param {string} topic
   * @returns {{seq: (number|null), epoch: (string|null)}|null}
   */
  position(topic) {
    const t = this._topics.get(topic);
    return t ? { seq: t.lastSeq, epoch: t.epoch } : null;
  }

  /** The member list kept for a topic subscribed with {presence: true}. */
  members(topic) {
    const t = this._topics.get(topic);
    return t ? [...t.members.values()] : [];
  }

  // ---- receiving -------------------------------------------------------

  _handleData(raw) {
    this._lastRx = Date.now();
    if (typeof raw !== 'string') {
      this._emit('error', new DuplexError('bad_frame', 'binary frame ignored'));
      return;
    }
    let f;
    try {
      f = JSON.parse(raw);
    } catch (e) {
      this._emit('error', new DuplexError('bad_frame', 'frame is not JSON: ' + raw.slice(0, 80)));
      return;
    }
    if (!f || typeof f !== 'object' || typeof f.op !== 'string') return;
    this._emit('frame', f);
    switch (f.op) {
      case 'hello': return this._onHello(f);
      case 'message': return this._onMessage(f);
      case 'subscribed': return this._onSubscribed(f);
      case 'gap': return this._onGap(f);
      case 'join':
      case 'leave': return this._onPresenceEvent(f);
      case 'error': return this._onError(f);
      default: return this._settle(f);
    }
  }

  /** Resolves the request a reply answers. */
  _settle(f) {
    if (f.id === undefined) return null;
    const p = this._pending.get(f.id);
    if (!p) return null;
    this._pending.delete(f.id);
    clearTimeout(p.timer);
    p.resolve(f);
    return p;
  }

  _onHello(f) {
    this.hello = f;
    this._attempt = 0; // the server accepted us: backoff starts again
    const hb = this._opt.heartbeat;
    if (hb === true && Number.isFinite(f.heartbeat) && f.heartbeat > 0) this._startHeartbeat(f.heartbeat);
    this._emit('hello', f);
  }

  _onSubscribed(f) {
    this._settle(f);
    const t = this._topics.get(f.topic);
    if (!t) return;
    if (typeof f.epoch === 'string') {
      if (t.epoch && f.epoch !== t.epoch) {
        // A new stream: our position is void; the server sends an epoch gap
        // and the new epoch's history, which may start below our old seq.
        t.lastSeq = 0;
        t.resync = true;
      }
      t.epoch = f.epoch;
    }
    if (t.lastSeq === null && Number.isInteger(f.seq)) t.lastSeq = f.seq;
    const first = !t.ack;
    t.acked = true;
    t.ack = { seq: f.seq, epoch: f.epoch };
    for (const w of t.waiters.splice(0)) w.resolve({ topic: t.topic, seq: f.seq, epoch: f.epoch });
    this._emit('subscribed', { topic: t.topic, seq: f.seq, epoch: f.epoch, since: t.askedSince, resumed: !first });
    if (t.presence) this._syncPresence(t);
  }

  _onMessage(f) {
    const t = this._topics.get(f.topic);
    if (!t) return; // unsubscribed meanwhile
    const seq = f.seq;
    if (Number.isInteger(seq)) {
      if (t.lastSeq !== null && seq <= t.lastSeq) {
        this.stats.duplicates++;
        return;
      }
      if (t.lastSeq !== null && !t.resync && seq > t.lastSeq + 1) {
        this._deliverGap(t, { op: 'gap', topic: t.topic, from: t.lastSeq + 1, to: seq - 1, epoch: t.epoch, reason: 'skipped' });
      }
      t.lastSeq = seq;
      t.resync = false;
    }
    f.epoch = t.epoch;
    this.stats.messages++;
    for (const h of [...t.handlers]) {
      try {
        h(f.data, f);
      } catch (e) {
        this._emit('error', e);
      }
    }
    this._emit('message', f);
  }

  _onGap(f) {
    const t = this._topics.get(f.topic);
    if (!t) return;
    if (f.reason === 'epoch') {
      t.lastSeq = 0;
      if (typeof f.epoch === 'string') t.epoch = f.epoch;
    } else if (Number.isInteger(f.to) && t.lastSeq !== null && f.to > t.lastSeq) {
      t.lastSeq = f.to;
    }
    t.resync = true;
    this._deliverGap(t, f);
  }

  _deliverGap(t, gap) {
    this.stats.gaps++;
    if (t.onGap) {
      try {
        t.onGap(gap);
      } catch (e) {
        this._emit('error', e);
      }
    }
    this._emit('gap', gap);
  }

  _onError(f) {
    const err = new DuplexError(String(f.code || 'error'), f.message || String(f.code), { frame: f, topic: f.topic });
    const p = f.id !== undefined ? this._pending.get(f.id) : null;
    if (!p) {
      this._emit('error', err);
      return;
    }
    this._pending.delete(f.id);
    clearTimeout(p.timer);
    if (p.op === 'subscribe') {
      // The subscription failed: forget it (no resubscription) and tell
      // whoever waits for it.
      const t = this._topics.get(p.topic);
      if (t && t.subId === f.id) {
        this._topics.delete(p.topic);
        for (const w of t.waiters.splice(0)) w.reject(err);
        this._emit('error', err);
      }
      return;
    }
    p.reject(err);
  }

  // ---- presence --------------------------------------------------------

  _syncPresence(t) {
    this.request({ op: 'presence', topic: t.topic }).then((r) => {
      if (this._topics.get(t.topic) !== t) return;
      t.presenceAvailable = true;
      t.members.clear();
      for (const m of r.members || []) addMember(t.members, m);
      this._emitPresence(t, { type: 'sync', member: null });
    }, (e) => {
      if (e.code === 'disconnected' || e.code === 'not_connected') return;
      t.presenceAvailable = false;
      t.members.clear();
      this._emitPresence(t, { type: 'unavailable', member: null, error: e });
    });
  }

  _onPresenceEvent(f) {
    const t = this._topics.get(f.topic);
    const m = f.member || {};
    if (t && t.presence) {
      if (f.op === 'join') addMember(t.members, m);
      else removeMember(t.members, m);
    }
    this._emit(f.op, m, f.topic);
    if (t && t.presence) this._emitPresence(t, { type: f.op, member: m });
  }

  _emitPresence(t, change) {
    this._emit('presence', {
      topic: t.topic,
      members: [...t.members.values()],
      available: t.presenceAvailable !== false,
      change,
    });
  }
}

Duplex.CONNECTING = CONNECTING;
Duplex.OPEN = OPEN;
Duplex.CLOSING = CLOSING;
Duplex.CLOSED = CLOSED;

// ---- helpers -------------------------------------------------------------

function num(v, dflt) {
  return typeof v === 'number' && !Number.isNaN(v) ? v : dflt;
}

async function callOrValue(v) {
  return typeof v === 'function' ? v() : v;
}

function resolveUrl(url) {
  const loc = typeof location !== 'undefined' ? location : null;
  if (!url) {
    if (!loc) throw new TypeError('duplex: a URL is needed outside a browser');
    return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/ws';
  }
  if (/^wss?:\/\//i.test(url)) return url;
  if (!loc) throw new TypeError('duplex: a ws:// or wss:// URL is needed outside a browser');
  const u = new URL(url, loc.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

function addMember(map, m) {
  const id = String(m.id);
  const cur = map.get(id);
  if (cur) {
    cur.count++;
    if (m.name != null) cur.name = m.name;
  } else {
    map.set(id, { id, name: m.name == null ? null : m.name, count: 1 });
  }
}

function removeMember(map, m) {
  const id = String(m.id);
  const cur = map.get(id);
  if (!cur) return;
  if (--cur.count <= 0) map.delete(id);
}
