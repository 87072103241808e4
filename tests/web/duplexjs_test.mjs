// Tests of web/duplex.js's logic in Node, against the protocol mock
// (tests/web/mock_server.js) and the `ws` package as the WebSocket:
// resumption after a forced disconnection (every message exactly once,
// duplicates dropped), gap notices (history, epoch), the offline publish
// queue (flush, drop-oldest, reject), backoff bounds (full jitter, 1012
// spread, maxAttempts), request/response correlation, auth through the
// subprotocol and tickets, presence, heartbeat.
//
//   node tests/web/duplexjs_test.mjs      (tests/scripts/duplexjs.sh runs it)
//
// Prints "ok - ..." / "not ok - ..." lines; exits 1 if any check failed.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const { createMockServer } = require('./mock_server.js');
const { Duplex, DuplexError, backoffDelay } = await import(path.join(here, '../../web/duplex.js'));

let failed = 0;
let passed = 0;
function check(name, ok, detail) {
  if (ok) {
    passed++;
    console.log(`ok - ${name}`);
  } else {
    failed++;
    console.log(`not ok - ${name}${detail !== undefined ? ': ' + (typeof detail === 'string' ? detail : JSON.stringify(detail)) : ''}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(what, fn, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return true;
    await sleep(5);
  }
  throw new Error(`timed out waiting for ${what}`);
}
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

function client(m, opts = {}) {
  return new Duplex(`ws://127.0.0.1:${m.port}/ws`, {
    WebSocket, reconnect: { base: 20, max: 60 }, spread: 100, requestTimeout: 3000, ...opts,
  });
}

/** Cuts the connection and keeps the client out until `allow()` is called. */
async function disconnect(m, c) {
  m.refuse(true);
  m.dropAll();
  await waitFor('the client to notice the drop', () => c.readyState !== Duplex.OPEN);
  return () => m.refuse(false);
}

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

// ---------------------------------------------------------------------------
test('resume after a forced disconnection', async () => {
  const m = await createMockServer({});
  const c = client(m);
  try {
    const got = [];
    const ack = await c.subscribe('news', (data, msg) => got.push(msg.seq));
    check('subscribe resolves with the ack (seq 0, an epoch)', ack.seq === 0 && typeof ack.epoch === 'string', ack);
    for (const i of range(1, 5)) m.publish('news', { i });
    await waitFor('5 messages', () => got.length === 5);

    const allow = await disconnect(m, c);
    for (const i of range(6, 10)) m.publish('news', { i }); // missed while offline
    allow();
    await waitFor('the replay', () => got.length >= 10);
    for (const i of range(11, 12)) m.publish('news', { i });
    await waitFor('12 messages', () => got.length >= 12);
    await sleep(30);
    check('every message exactly once, in order, across the reconnection', same(got, range(1, 12)), got);
    const subs = m.frames.filter((f) => f.frame.op === 'subscribe').map((f) => f.frame);
    check('resubscribed with since=5 and the epoch of the ack',
      subs.length === 2 && subs[1].since === 5 && subs[1].epoch === ack.epoch, subs);
    check('stats: one reconnection, no duplicate', c.stats.reconnects === 1 && c.stats.duplicates === 0, c.stats);

    // A server that replays too much: the client drops seq <= last seen.
    m.dupReplay = 3;
    const allow2 = await disconnect(m, c);
    m.publish('news', { i: 13 });
    m.publish('news', { i: 14 });
    allow2();
    await waitFor('14 messages', () => got.length >= 14);
    await sleep(50);
    check('an overlapping replay is deduplicated', same(got, range(1, 14)) && c.stats.duplicates === 3,
      { got, stats: c.stats });
    check('position() reports the last seq and the epoch',
      same(c.position('news'), { seq: 14, epoch: ack.epoch }), c.position('news'));
  } finally {
    c.close();
    await m.close();
  }
});

// ---------------------------------------------------------------------------
test('gap notices: history and epoch', async () => {
  const m = await createMockServer({ history: 5 });
  const c = client(m);
  try {
    const got = [];
    const gaps = [];
    const onGapSeen = [];
    c.on('gap', (g) => gaps.push(g));
    const ack = await c.subscribe('t', (d, msg) => got.push(msg.seq), { onGap: (g) => onGapSeen.push(g) });
    for (const i of range(1, 3)) m.publish('t', i);
    await waitFor('3 messages', () => got.length === 3);

    const allow = await disconnect(m, c);
    for (const i of range(4, 20)) m.publish('t', i); // the history keeps 16..20
    allow();
    await waitFor('the replay', () => got.length >= 8);
    m.publish('t', 21);
    await waitFor('the live message', () => got.length >= 9);
    check('history gap surfaced once, 4..15, reason history',
      gaps.length === 1 && gaps[0].from === 4 && gaps[0].to === 15 && gaps[0].reason === 'history', gaps);
    check('the subscription\'s onGap saw the same notice', onGapSeen.length === 1 && onGapSeen[0] === gaps[0]);
    check('then the retained 16..20 and the live 21', same(got, [1, 2, 3, 16, 17, 18, 19, 20, 21]), got);

    // Server restart without persistence: 1012, new epoch, seqs from 1.
    const events = [];
    c.on('close', (e) => events.push(['close', e.code]));
    c.on('reconnecting', (attempt, delay) => events.push(['reconnecting', attempt, delay]));
    m.restart({ newEpoch: true });
    await waitFor('the resubscription', () => c.readyState === Duplex.OPEN && c.position('t').epoch !== ack.epoch);
    await waitFor('the epoch gap', () => gaps.length === 2);
    const rc = events.find((e) => e[0] === 'reconnecting');
    check('close 1012 reconnects once, within the spread window [0, 100] ms',
      events[0][0] === 'close' && events[0][1] === 1012 && rc && rc[1] === 1 && rc[2] >= 0 && rc[2] <= 100, events);
    check('epoch gap surfaced, with the new epoch',
      gaps[1].reason === 'epoch' && gaps[1].epoch === c.position('t').epoch, gaps[1]);
    m.publish('t', 'new-1');
    m.publish('t', 'new-2');
    await waitFor('the new stream', () => got.length >= 11);
    check('the new epoch\'s seqs 1, 2 are delivered (position reset)', same(got.slice(9), [1, 2]), got);
    const last = m.frames.filter((f) => f.frame.op === 'subscribe').pop().frame;
    check('the resubscription carried the old since and epoch', last.since === 21 && last.epoch === ack.epoch, last);
    check('no spurious "skipped" gap', gaps.every((g) => g.reason !== 'skipped'), gaps);
  } finally {
    c.close();
    await m.close();
  }
});

// ---------------------------------------------------------------------------
test('seq jump without a gap notice is reported as skipped', async () => {
  const m = await createMockServer({});
  const c = client(m);
  try {
    const gaps = [];
    const got = [];
    c.on('gap', (g) => gaps.push(g));
    await c.subscribe('s', (d, msg) => got.push(msg.seq));
    m.publish('s', 1);
    m.topics.get('s').seq += 3; // a buggy server skips 2..4
    m.publish('s', 5);
    await waitFor('2 messages', () => got.length === 2);
    check('skipped gap 2..4 reported', gaps.length === 1 && gaps[0].reason === 'skipped' &&
      gaps[0].from === 2 && gaps[0].to === 4, gaps);
  } finally {
    c.close();
    await m.close();
  }
});

// ---------------------------------------------------------------------------
test('publish queue', async () => {
  const m = await createMockServer({});
  const c = client(m);
  try {
    const got = [];
    await c.subscribe('q', (d) => got.push(d));
    const allow = await disconnect(m, c);
    const ps = ['a', 'b', 'c'].map((x) => c.publish('q', x));
    check('publishes wait in the queue while offline', c.queued === 3, c.queued);
    allow();
    const seqs = await Promise.all(ps);
    check('flushed after the reconnection, resolving with the acks\' seqs', same(seqs, [1, 2, 3]), seqs);
    await waitFor('the echoes', () => got.length === 3);
    check('subscribers got them in order', same(got, ['a', 'b', 'c']), got);
    const ops = m.frames.map((f) => f.frame.op);
    check('on the new connection the resubscription goes before the flush',
      ops.lastIndexOf('subscribe') < ops.indexOf('publish'), ops);
    check('the queue is empty', c.queued === 0);
  } finally {
    c.close();
    await m.close();
  }

  const m2 = await createMockServer({});
  const c2 = client(m2, { queueLimit: 2 });
  try {
    await waitFor('open', () => c2.readyState === Duplex.OPEN);
    const drops = [];
    c2.on('drop', (d) => drops.push(d.data));
    const allow = await disconnect(m2, c2);
    const res = ['a', 'b', 'c'].map((x) => c2.publish('q', x).then((s) => s, (e) => e));
    await sleep(10);
    allow();
    const out = await Promise.all(res);
    check('drop-oldest: the oldest rejects with "dropped", a drop event fires',
      out[0] instanceof DuplexError && out[0].code === 'dropped' && same(drops, ['a']), { out, drops });
    check('drop-oldest: the others are published', out[1] === 1 && out[2] === 2, out);
  } finally {
    c2.close();
    await m2.close();
  }

  const m3 = await createMockServer({});
  const c3 = client(m3, { queueLimit: 1, queuePolicy: 'reject' });
  try {
    await waitFor('open', () => c3.readyState === Duplex.OPEN);
    const allow = await disconnect(m3, c3);
    const a = c3.publish('q', 'a');
    const b = await c3.publish('q', 'b').then(() => null, (e) => e);
    check('reject policy: a publish past the limit rejects with "queue_full"', b && b.code === 'queue_full', b);
    allow();
    check('reject policy: the queued one is published', (await a) === 1);
    c3.close();
    const z = await c3.publish('q', 'z').then(() => null, (e) => e);
    check('after close(), publish rejects with "closed"', z && z.code === 'closed', z);
  } finally {
    c3.close();
    await m3.close();
  }
});

// ---------------------------------------------------------------------------
test('backoff with full jitter', async () => {
  check('backoffDelay: random 0 gives 0', backoffDelay(3, 500, 30000, () => 0) === 0);
  check('backoffDelay: random ~1 gives the cap', backoffDelay(3, 500, 30000, () => 0.9999999) === 2000);
  check('backoffDelay: the cap stops at max', backoffDelay(20, 500, 30000, () => 0.9999999) === 30000 &&
    backoffDelay(1e6, 500, 30000, () => 0.9999999) === 30000);
  let ok = true;
  const detail = [];
  for (let attempt = 1; attempt <= 9; attempt++) {
    const cap = Math.min(30000, 500 * 2 ** (attempt - 1));
    let sum = 0;
    let hi = 0;
    let lo = Infinity;
    const n = 4000;
    for (let i = 0; i < n; i++) {
      const d = backoffDelay(attempt, 500, 30000);
      if (!Number.isInteger(d) || d < 0 || d > cap) ok = false;
      sum += d;
      hi = Math.max(hi, d);
      lo = Math.min(lo, d);
    }
    const mean = sum / n;
    // Uniform on [0, cap]: mean cap/2 (sd of the mean ~ cap/220 here).
    if (Math.abs(mean - cap / 2) > cap * 0.05 || hi < cap * 0.95 || lo > cap * 0.05) ok = false;
    detail.push({ attempt, cap, mean: Math.round(mean), lo, hi });
  }
  check('backoffDelay: 4000 draws per attempt 1..9 are integers in [0, min(max, base*2^(n-1))], spread over it', ok, detail);

  // Live: the server refuses every upgrade.
  const m = await createMockServer({});
  m.refuse(true);
  const seen = [];
  let giveup = null;
  const c = client(m, { reconnect: { base: 40, max: 200, maxAttempts: 6 } });
  c.on('reconnecting', (attempt, delay) => seen.push({ attempt, delay, at: Date.now() }));
  c.on('giveup', (n) => { giveup = n; });
  try {
    await waitFor('giving up', () => giveup !== null, 8000);
    check('reconnecting(attempt, delay): attempts 1..6, each delay within [0, min(200, 40*2^(n-1))]',
      same(seen.map((s) => s.attempt), range(1, 6)) &&
      seen.every((s) => s.delay >= 0 && s.delay <= Math.min(200, 40 * 2 ** (s.attempt - 1))), seen);
    check('giveup after maxAttempts, status closed', giveup === 6 && c.status === 'closed', { giveup, status: c.status });
    const waited = seen.slice(1).every((s, i) => s.at - seen[i].at >= seen[i].delay - 2);
    check('each attempt waited its delay', waited, seen);
  } finally {
    c.close();
    await m.close();
  }

  // An accepted connection (hello) resets the attempt count.
  const m2 = await createMockServer({});
  const c2 = client(m2, { reconnect: { base: 10, max: 10 } });
  try {
    await waitFor('open', () => c2.hello !== null);
    const attempts = [];
    c2.on('reconnecting', (a) => attempts.push(a));
    for (let i = 0; i < 3; i++) {
      const before = c2.stats.reconnects;
      m2.dropAll();
      await waitFor('reconnected', () => c2.stats.reconnects === before + 1 && c2.hello && c2.readyState === Duplex.OPEN);
      await sleep(20);
    }
    check('after each accepted connection, the next drop is attempt 1 again', same(attempts, [1, 1, 1]), attempts);
  } finally {
    c2.close();
    await m2.close();
  }
});

// ---------------------------------------------------------------------------
test('requests, errors and auth', async () => {
  const apiKey = 'test-api-key-0123456789';
  const m = await createMockServer({ requireAuth: true, apiKey });
  const claims = Buffer.from(JSON.stringify({ sub: 'alice', name: 'Alice' })).toString('base64url');
  const token = `eyJhbGciOiJIUzI1NiJ9.${claims}.c2ln`;
  let opened = null;
  const c = client(m, { token });
  c.on('open', (e) => { opened = e; });
  try {
    await waitFor('hello', () => c.hello !== null);
    const a = m.auths[0];
    check('token sent as the subprotocol "bearer.<jwt>" after duplex.v1',
      a.via === 'subprotocol' && a.token === token &&
      same(a.protocols.split(',').map((x) => x.trim()), ['duplex.v1', `bearer.${token}`]), a);
    check('the server selected duplex.v1', opened && opened.protocol === 'duplex.v1', opened);
    check('hello received', c.hello.version === 1 && c.hello.heartbeat === 25000, c.hello);
    const rtt = await c.ping();
    check('ping() resolves with a round-trip time', typeof rtt === 'number' && rtt >= 0, rtt);
    const e1 = await c.request({ op: 'bogus' }).then(() => null, (e) => e);
    check('an error reply rejects the request with its code (unknown_op)',
      e1 instanceof DuplexError && e1.code === 'unknown_op' && e1.frame.id !== undefined, e1);
    const e2 = await c.subscribe('bad topic!', () => {}).then(() => null, (e) => e);
    check('a bad topic is refused before sending', e2 && e2.code === 'bad_topic' &&
      !m.frames.some((f) => f.frame.topic === 'bad topic!'), e2);
    const ids = m.frames.map((f) => f.frame.id);
    check('request ids are unique', new Set(ids).size === ids.length, ids);

    const got = [];
    await c.subscribe('u', (d) => got.push(d));
    m.publish('u', 1);
    await waitFor('1 message', () => got.length === 1);
    await c.unsubscribe('u');
    m.publish('u', 2);
    await sleep(50);
    check('unsubscribe: an unsubscribe frame, no message after it',
      got.length === 1 && m.frames.some((f) => f.frame.op === 'unsubscribe' && f.frame.topic === 'u'), got);
  } finally {
    c.close();
  }

  // Tickets: a fresh one for every attempt, through an async function.
  let minted = 0;
  const ticket = async () => {
    minted++;
    const r = await fetch(`http://127.0.0.1:${m.port}/api/ticket`, {
      method: 'POST', headers: { Authorization: `Bearer ${apiKey}` }, body: JSON.stringify({ sub: 'bob' }),
    });
    return (await r.json()).ticket;
  };
  const c2 = client(m, { ticket });
  try {
    await waitFor('hello', () => c2.hello !== null);
    m.dropAll();
    await waitFor('reconnected', () => c2.stats.reconnects === 1 && c2.hello && c2.readyState === Duplex.OPEN);
    const t = m.auths.filter((x) => x.via === 'ticket');
    check('ticket: a fresh one-time ticket per connection, accepted', minted === 2 && t.length === 2 &&
      t.every((x) => x.ok && x.user.sub === 'bob'), { minted, t });
  } finally {
    c2.close();
    await m.close();
  }
});

// ---------------------------------------------------------------------------
test('presence', async () => {
  const m = await createMockServer({});
  const mk = (sub) => {
    const claims = Buffer.from(JSON.stringify({ sub })).toString('base64url');
    return client(m, { token: `x.${claims}.y` });
  };
  const a = mk('ann');
  const b = mk('ben');
  try {
    let last = null;
    a.on('presence', (p) => { last = p; });
    await a.subscribe('room', () => {}, { presence: true });
    await waitFor('the first list', () => last && last.change.type === 'sync');
    check('after subscribing, the list has ourselves', same(last.members, [{ id: 'ann', name: 'ann', count: 1 }]), last);
    await b.subscribe('room', () => {});
    await waitFor('the join', () => last.members.length === 2);
    check('a join adds the member', last.change.type === 'join' && last.change.member.id === 'ben', last);
    b.close();
    await waitFor('the leave', () => last.members.length === 1);
    check('a leave removes it', last.change.type === 'leave' && same(a.members('room').map((x) => x.id), ['ann']), last);
    m.dropAll();
    await waitFor('the resync', () => a.stats.reconnects === 1 && last.change.type === 'sync');
    check('the list is fetched again after a reconnection', last.members.length === 1, last);
  } finally {
    a.close();
    b.close();
    await m.close();
  }

  const m2 = await createMockServer({ presence: false });
  const c = client(m2);
  try {
    let last = null;
    c.on('presence', (p) => { last = p; });
    await c.subscribe('room', () => {}, { presence: true });
    await waitFor('the answer', () => last !== null);
    check('presence off: a presence event with available=false', last.available === false && last.members.length === 0, last);
  } finally {
    c.close();
    await m2.close();
  }
});

// ---------------------------------------------------------------------------
test('heartbeat', async () => {
  const m = await createMockServer({ heartbeat: 80 });
  const c = client(m);
  try {
    const got = [];
    await c.subscribe('h', (d) => got.push(d));
    await sleep(250);
    check('an idle but live connection stays up (pings answered)', c.stats.reconnects === 0 &&
      m.frames.some((f) => f.frame.op === 'ping'), c.stats);
    const closes = [];
    c.on('close', (e) => closes.push(e));
    m.freeze(); // the peer goes silent
    await waitFor('the heartbeat to drop the connection', () => closes.length === 1, 2000);
    check('a silent connection is dropped after 2 x heartbeat', closes[0].reason === 'heartbeat timeout', closes);
    await waitFor('reconnected', () => c.stats.reconnects === 1 && c.readyState === Duplex.OPEN);
    m.publish('h', 'after');
    await waitFor('a message on the new connection', () => got.length === 1);
    check('and the subscription is resumed', same(got, ['after']), got);
  } finally {
    c.close();
    await m.close();
  }
});

// ---------------------------------------------------------------------------
const watchdog = setTimeout(() => {
  console.log('not ok - watchdog: still running after 60 s');
  process.exit(1);
}, 60000);
for (const t of tests) {
  console.log(`# ${t.name}`);
  try {
    await t.fn();
  } catch (e) {
    failed++;
    console.log(`not ok - ${t.name}: ${e && e.stack ? e.stack : e}`);
  }
}
clearTimeout(watchdog);
console.log(`# duplex.js: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
