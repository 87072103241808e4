// A mock of `duplex serve`'s pub/sub side (docs/protocol.md), in Node with
// the `ws` package: for developing the demo pages and for testing
// web/duplex.js (tests/web/duplexjs_test.mjs). NOT part of the product: no
// JWT verification (a token's payload is read, not checked), no limits
// beyond the history.
//
// As a program:
//   node tests/web/mock_server.js [--port 8090] [--host 127.0.0.1] [--root web]
//        [--history 500] [--presence on|off] [--api-key KEY] [--heartbeat MS]
//   prints "listening on PORT"; POST /_mock/restart closes every WebSocket
//   with 1012 and starts new epochs; POST /_mock/drop cuts every
//   connection without a close frame.
//
// As a module: const { createMockServer } = require('./mock_server.js');
//   const m = await createMockServer({ port: 0, history: 10 });
//   m.port, m.publish(topic, data), m.dropAll(), m.restart({newEpoch}),
//   m.refuse(bool), m.frames (every client frame), m.close().
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { WebSocketServer } = require('ws');

const TOPIC_RE = /^[A-Za-z0-9_.:/-]{1,128}$/;
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.json': 'application/json', '.png': 'image/png',
  '.ico': 'image/x-icon', '.md': 'text/markdown; charset=utf-8',
};

function newEpoch() {
  return crypto.randomBytes(6).toString('base64url');
}

/**
 * @param {object} o
 * @param {number} [o.port]  0: a free port
 * @param {string} [o.host]
 * @param {string} [o.root]  static files
 * @param {number} [o.history]  messages retained per topic (1000)
 * @param {boolean} [o.presence]  (true)
 * @param {string} [o.apiKey]  require it on /api/
 * @param {boolean} [o.requireAuth]  refuse WebSockets without a credential
 * @param {number} [o.heartbeat]  announced in hello (25000)
 */
async function createMockServer(o = {}) {
  const opt = {
    port: o.port ?? 0, host: o.host ?? '127.0.0.1', root: o.root ?? null,
    history: o.history ?? 1000, presence: o.presence ?? true,
    apiKey: o.apiKey ?? null, requireAuth: !!o.requireAuth,
    heartbeat: o.heartbeat ?? 25000,
  };
  const topics = new Map(); // name -> {epoch, seq, history: [{seq, data}], subs: Set<conn>}
  const tickets = new Map(); // ticket -> {sub, name, exp}
  const conns = new Set();
  const m = {
    frames: [], // [{conn, frame}] every client frame, in order
    auths: [], // what each handshake presented
    refusing: false,
    dupReplay: 0, // replay this many messages <= since too (client must drop them)
    port: 0,
  };
  let connIds = 0;

  function topic(name) {
    let t = topics.get(name);
    if (!t) topics.set(name, (t = { epoch: newEpoch(), seq: 0, history: [], subs: new Set() }));
    return t;
  }

  function send(c, f) {
    if (c.ws.readyState === 1 && !c.frozen) c.ws.send(JSON.stringify(f));
  }

  function publish(name, data) {
    const t = topic(name);
    const seq = ++t.seq;
    t.history.push({ seq, data });
    while (t.history.length > (t.limit ?? opt.history)) t.history.shift();
    const frame = JSON.stringify({ op: 'message', topic: name, seq, data });
    for (const c of t.subs) if (c.ws.readyState === 1 && !c.frozen) c.ws.send(frame);
    return { topic: name, seq, epoch: t.epoch };
  }

  // Like duplex serve: the subject, or the connection's id when anonymous.
  function member(c) {
    return c.user && c.user.sub ? { id: c.user.sub, name: c.user.sub } : { id: c.id, name: null };
  }

  // Like duplex serve: to the other subscribers, never to the member's own
  // connection.
  function presenceEvent(name, c, op) {
    if (!opt.presence) return;
    const t = topic(name);
    for (const o2 of t.subs) if (o2 !== c) send(o2, { op, topic: name, member: member(c) });
  }

  function err(c, code, message, id) {
    const f = { op: 'error', code, message };
    if (id !== undefined) f.id = id;
    send(c, f);
  }

  function onFrame(c, raw, isBinary) {
    if (isBinary) return err(c, 'bad_request', 'binary messages are not part of duplex.v1');
    let f;
    try {
      f = JSON.parse(raw.toString());
    } catch (e) {
      return err(c, 'bad_json', 'not JSON');
    }
    if (!f || typeof f !== 'object' || Array.isArray(f)) return err(c, 'bad_json', 'not a JSON object');
    m.frames.push({ conn: c.id, frame: f });
    const id = f.id;
    const reply = (r) => send(c, id === undefined ? r : { ...r, id });
    if (typeof f.op !== 'string') return err(c, 'bad_request', 'no op', id);
    const needTopic = ['subscribe', 'unsubscribe', 'publish', 'presence'].includes(f.op);
    if (needTopic && (typeof f.topic !== 'string' || !TOPIC_RE.test(f.topic)))
      return err(c, 'bad_topic', 'topic must be 1-128 characters of [A-Za-z0-9_.:/-]', id);
    switch (f.op) {
      case 'subscribe': {
        if (f.since !== undefined && !(Number.isInteger(f.since) && f.since >= 0))
          return err(c, 'bad_request', 'since must be an integer >= 0', id);
        // Subscribing again replaces the subscription (no leave/join).
        const t = topic(f.topic);
        const fresh = !t.subs.has(c);
        t.subs.add(c);
        c.subs.add(f.topic);
        reply({ op: 'subscribed', topic: f.topic, seq: t.seq, epoch: t.epoch });
        if (f.since !== undefined) {
          const first = t.history.length ? t.history[0].seq : t.seq + 1;
          const mismatch = (f.epoch !== undefined && f.epoch !== t.epoch) || f.since > t.seq;
          let from = f.since;
          if (mismatch) {
            send(c, { op: 'gap', topic: f.topic, from: 1, to: first - 1, epoch: t.epoch, reason: 'epoch' });
            from = 0;
          } else if (f.since + 1 < first) {
            send(c, { op: 'gap', topic: f.topic, from: f.since + 1, to: first - 1, epoch: t.epoch, reason: 'history' });
          }
          for (const h of t.history) {
            if (h.seq > from - (mismatch ? 0 : m.dupReplay))
              send(c, { op: 'message', topic: f.topic, seq: h.seq, data: h.data });
          }
        }
        if (fresh) presenceEvent(f.topic, c, 'join');
        return;
      }
      case 'unsubscribe': {
        const t = topic(f.topic);
        if (!t.subs.has(c)) return err(c, 'not_subscribed', 'not subscribed to ' + f.topic, id);
        t.subs.delete(c);
        c.subs.delete(f.topic);
        reply({ op: 'unsubscribed', topic: f.topic });
        presenceEvent(f.topic, c, 'leave');
        return;
      }
      case 'publish': {
        if (!('data' in f)) return err(c, 'bad_request', 'publish needs data', id);
        const r = publish(f.topic, f.data);
        reply({ op: 'published', topic: f.topic, seq: r.seq });
        return;
      }
      case 'presence': {
        if (!opt.presence) return err(c, 'unknown_op', 'presence is off on this server', id);
        const t = topic(f.topic);
        reply({ op: 'presence', topic: f.topic, members: [...t.subs].map(member) });
        return;
      }
      case 'ping':
        return reply({ op: 'pong' });
      default:
        return err(c, 'unknown_op', 'unknown op ' + f.op, id);
    }
  }

  // ---- auth (read, not verified: this is a mock) ------------------------
  function credential(req) {
    const u = new URL(req.url, 'http://x');
    const proto = (req.headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
    const bearer = proto.find((p) => p.startsWith('bearer.'));
    const auth = /^Bearer (.+)$/i.exec(req.headers.authorization || '');
    const cookie = /(?:^|;\s*)token=([^;]+)/.exec(req.headers.cookie || '');
    const jwt = (auth && auth[1]) || (bearer && bearer.slice(7)) || (cookie && cookie[1]) ||
      u.searchParams.get('token');
    const via = auth ? 'header' : bearer ? 'subprotocol' : cookie ? 'cookie' : u.searchParams.get('token') ? 'query' : null;
    if (jwt) {
      try {
        const claims = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
        return { ok: true, via, token: jwt, user: { sub: String(claims.sub) } };
      } catch (e) {
        return { ok: false, via, token: jwt };
      }
    }
    const ticket = u.searchParams.get('ticket');
    if (ticket) {
      const tk = tickets.get(ticket);
      tickets.delete(ticket); // one use, whatever the outcome
      // Without requireAuth (auth off) a bad ticket is ignored, as by duplex serve.
      if (!tk || tk.exp < Date.now()) return { ok: !opt.requireAuth, via: 'ticket', user: null };
      return { ok: true, via: 'ticket', user: { sub: tk.sub } };
    }
    return { ok: !opt.requireAuth, via: null, user: null };
  }

  // ---- HTTP ------------------------------------------------------------
  const CODES = { 400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found',
                  405: 'method_not_allowed', 413: 'too_large', 503: 'unavailable' };
  function fail(res, status, message, extra, code) {
    json(res, status, { error: code || CODES[status] || 'internal', message }, extra);
  }

  function json(res, status, body, extra) {
    res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...extra });
    res.end(JSON.stringify(body));
  }

  function readBody(req) {
    return new Promise((resolve) => {
      const chunks = [];
      req.on('data', (d) => chunks.push(d));
      req.on('end', () => resolve(Buffer.concat(chunks).toString()));
    });
  }

  async function onRequest(req, res) {
    const u = new URL(req.url, 'http://x');
    if (u.pathname.startsWith('/api/')) {
      if (opt.apiKey && req.headers.authorization !== 'Bearer ' + opt.apiKey)
        return fail(res, 401, 'a valid API key is required (Authorization: Bearer)', { 'WWW-Authenticate': 'Bearer' });
      if (u.pathname === '/api/topics' && req.method === 'GET') {
        return json(res, 200, { topics: [...topics].map(([name, t]) =>
          ({ topic: name, seq: t.seq, epoch: t.epoch, subscribers: t.subs.size, retained: t.history.length })) });
      }
      if (req.method !== 'POST') return fail(res, 405, 'POST only', { Allow: 'POST' });
      let body;
      try {
        body = JSON.parse(await readBody(req));
      } catch (e) {
        body = undefined;
      }
      if (u.pathname === '/api/publish') {
        // Like duplex serve: bad_json, bad_topic, bad_request (no data).
        if (!body || typeof body !== 'object' || Array.isArray(body))
          return fail(res, 400, 'the body is one JSON object', null, 'bad_json');
        if (typeof body.topic !== 'string' || !TOPIC_RE.test(body.topic))
          return fail(res, 400, 'topic must be 1..128 characters of [A-Za-z0-9_.:/-]', null, 'bad_topic');
        if (!('data' in body)) return fail(res, 400, 'the body needs "data"');
        return json(res, 200, publish(body.topic, body.data));
      }
      if (u.pathname === '/api/ticket') {
        // Like duplex serve: with API keys, or open with auth off (a ticket
        // then only names the member); body keys sub and grants.
        if (!opt.apiKey && opt.requireAuth) return fail(res, 403, 'tickets need API keys (or auth off)');
        const bad = body && typeof body === 'object' && Object.keys(body).find((k) => k !== 'sub' && k !== 'grants');
        if (!body || bad || (body.sub !== undefined && typeof body.sub !== 'string'))
          return fail(res, 400, bad ? `unknown key "${bad}" (sub, grants)` : 'body: {"sub": string, "grants": {...}}');
        const ticket = 'tk_' + crypto.randomBytes(12).toString('base64url');
        tickets.set(ticket, { sub: body.sub || '', exp: Date.now() + 30000 });
        return json(res, 200, { ticket, expires_in: 30 });
      }
      return fail(res, 404, 'no such API');
    }
    if (u.pathname === '/healthz') return json(res, 200, { status: 'ok' });
    if (u.pathname === '/_mock/restart' && req.method === 'POST') {
      m.restart({ newEpoch: u.searchParams.get('epoch') !== 'keep' });
      return json(res, 200, { ok: true });
    }
    if (u.pathname === '/_mock/drop' && req.method === 'POST') {
      m.dropAll();
      return json(res, 200, { ok: true });
    }
    if (opt.root && req.method === 'GET') {
      const rel = decodeURIComponent(u.pathname).replace(/\/$/, '/index.html');
      const file = path.join(opt.root, path.normalize(rel).replace(/^(\.\.[/\\])+/, ''));
      if (file.startsWith(path.resolve(opt.root)) && fs.existsSync(file) && fs.statSync(file).isFile()) {
        res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream', 'Cache-Control': 'no-cache' });
        return fs.createReadStream(file).pipe(res);
      }
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
  }

  const server = http.createServer((req, res) => {
    onRequest(req, res).catch((e) => {
      res.writeHead(500);
      res.end(String(e));
    });
  });
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (protocols) => (protocols.has('duplex.v1') ? 'duplex.v1' : false),
  });
  server.on('upgrade', (req, socket, head) => {
    const u = new URL(req.url, 'http://x');
    const refuse = (status, text) => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    };
    if (u.pathname !== '/ws') return refuse(404, 'Not Found');
    if (m.refusing) return refuse(503, 'Service Unavailable');
    const cred = credential(req);
    m.auths.push({ via: cred.via, token: cred.token, user: cred.user, ok: cred.ok,
                   protocols: req.headers['sec-websocket-protocol'] || null });
    if (!cred.ok) return refuse(401, 'Unauthorized');
    wss.handleUpgrade(req, socket, head, (ws) => {
      const c = { ws, id: 'c-' + (++connIds).toString(16), user: cred.user, subs: new Set() };
      conns.add(c);
      send(c, { op: 'hello', version: 1, server: 'duplex-mock/0.1.0', heartbeat: opt.heartbeat });
      ws.on('message', (d, isBinary) => onFrame(c, d, isBinary));
      ws.on('close', () => {
        conns.delete(c);
        for (const name of c.subs) {
          const t = topics.get(name);
          if (t && t.subs.delete(c)) presenceEvent(name, c, 'leave');
        }
      });
      ws.on('error', () => {});
    });
  });

  m.publish = publish;
  m.topics = topics;
  m.connections = () => conns.size;
  /** Cuts every connection without a close frame (the client sees 1006). */
  m.dropAll = () => {
    for (const c of conns) c.ws.terminate();
  };
  /** Closes every connection with 1012 "restart"; newEpoch: forget every topic. */
  m.restart = ({ newEpoch: fresh = true, code = 1012 } = {}) => {
    for (const c of conns) c.ws.close(code, 'restart');
    if (fresh) topics.clear();
  };
  /** Every current connection goes silent: nothing read, nothing sent
   *  (a dead peer behind a NAT that forgot us). */
  m.freeze = () => {
    for (const c of conns) {
      c.frozen = true;
      c.ws._socket.pause();
    }
  };
  /** Retains at most n messages of `name` from now on (trims now). */
  m.setHistory = (name, n) => {
    const t = topic(name);
    t.limit = n;
    while (t.history.length > n) t.history.shift();
  };
  /** While true, upgrades are answered 503. */
  m.refuse = (on) => {
    m.refusing = !!on;
  };
  m.close = () => new Promise((resolve) => {
    for (const c of conns) c.ws.terminate();
    wss.close();
    server.close(() => resolve());
    server.closeAllConnections?.();
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opt.port, opt.host, resolve);
  });
  m.port = server.address().port;
  return m;
}

module.exports = { createMockServer };

if (require.main === module) {
  const args = process.argv.slice(2);
  const get = (name, dflt) => {
    const i = args.indexOf('--' + name);
    return i >= 0 ? args[i + 1] : dflt;
  };
  createMockServer({
    port: Number(get('port', 8090)), host: get('host', '127.0.0.1'),
    root: get('root', null), history: Number(get('history', 500)),
    presence: get('presence', 'on') !== 'off', apiKey: get('api-key', null),
    heartbeat: Number(get('heartbeat', 25000)),
  }).then((m) => {
    console.log(`listening on ${m.port}`);
    const stop = () => m.close().then(() => process.exit(0));
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  }, (e) => {
    console.error(`mock_server: ${e.message}`);
    process.exit(1);
  });
}
