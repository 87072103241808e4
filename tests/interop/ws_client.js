// Interop: the Node `ws` client (npm, pinned in package-lock.json) against
// `duplex serve --echo /echo`. Run by tests/scripts/interop_serve.sh:
//
//   node ws_client.js PORT SMALL_PORT ORIGIN_PORT
//
// PORT: default limits; SMALL_PORT: --max-message 1024; ORIGIN_PORT:
// --origin http://good.example. Prints one "ok"/"not ok" line per case and
// exits 1 if any case failed. Every wait is bounded.
'use strict';

const assert = require('node:assert/strict');
const WebSocket = require('ws');
const { within, noise, bigText, wsClient, runCases } =
  require('../lib/ws_test.js');

const [port, smallPort, originPort] = process.argv.slice(2).map(Number);
if (!port || !smallPort || !originPort) {
  console.error('usage: node ws_client.js PORT SMALL_PORT ORIGIN_PORT');
  process.exit(2);
}
const url = (p) => `ws://127.0.0.1:${p}/echo`;
const MiB = 1024 * 1024;
const STEP_MS = 20000; // any single wait
const client = wsClient(STEP_MS);
const { inbox, closed, echo } = client;

// The whole run must finish well inside the driver's budget.
setTimeout(() => {
  console.error('ws_client: watchdog: still running after 50 s');
  process.exit(1);
}, 50000).unref();

// Opens a connection (tests/lib/ws_test.js): rejects on an error or a
// non-101 response; the 101 response is kept as ws.upgradeResponse.
function open(p, opts = {}) {
  return client.open(url(p), opts.protocols || [], {
    perMessageDeflate: false,
    maxPayload: 32 * MiB,
    ...opts.ws,
  });
}

const cases = [];
const test = (name, fn) => cases.push({ name, fn });

test('text echo (UTF-8)', async () => {
  const ws = await open(port);
  const next = inbox(ws);
  const s = 'hello, duplex — ünïcødé 𝄞 ✓';
  const m = await echo(ws, next, s);
  assert.equal(m.isBinary, false);
  assert.equal(m.data.toString('utf8'), s);
  ws.close(1000); await closed(ws);
});

test('binary echo (all 256 byte values)', async () => {
  const ws = await open(port);
  const next = inbox(ws);
  const b = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const m = await echo(ws, next, b);
  assert.equal(m.isBinary, true);
  assert.deepEqual(m.data, b);
  ws.close(1000); await closed(ws);
});

test('empty text and empty binary messages are echoed with their type',
     async () => {
  const ws = await open(port);
  const next = inbox(ws);
  let m = await echo(ws, next, '');
  assert.equal(m.isBinary, false);
  assert.equal(m.data.length, 0);
  m = await echo(ws, next, Buffer.alloc(0));
  assert.equal(m.isBinary, true);
  assert.equal(m.data.length, 0);
  ws.close(1000); await closed(ws);
});

test('messages come back in order', async () => {
  const ws = await open(port);
  const next = inbox(ws);
  for (let i = 0; i < 50; i++) ws.send(`msg ${i}`);
  for (let i = 0; i < 50; i++)
    assert.equal((await next()).data.toString(), `msg ${i}`);
  ws.close(1000); await closed(ws);
});

for (const deflate of [false, true]) {
  const label = deflate ? ' (compressed)' : '';
  test(`fragmented text message from the client is echoed whole${label}`,
       async () => {
    const ws = await open(port, { ws: { perMessageDeflate: deflate } });
    const next = inbox(ws);
    ws.send('frag-one ', { fin: false, binary: false });
    ws.send('frag-two ', { fin: false, binary: false });
    ws.send('frag-three', { fin: true, binary: false });
    const m = await next();
    assert.equal(m.isBinary, false);
    assert.equal(m.data.toString(), 'frag-one frag-two frag-three');
    // A UTF-8 sequence split across fragments is valid (RFC 6455 8.1).
    const euro = Buffer.from('a€b', 'utf8'); // 61 e2 82 ac 62
    ws.send(euro.subarray(0, 2), { fin: false, binary: false });
    ws.send(euro.subarray(2, 3), { fin: false, binary: false });
    ws.send(euro.subarray(3), { fin: true, binary: false });
    const m2 = await next();
    assert.equal(m2.isBinary, false);
    assert.equal(m2.data.toString(), 'a€b');
    ws.close(1000); await closed(ws);
  });

  test(`fragmented binary message from the client is echoed whole${label}`,
       async () => {
    const ws = await open(port, { ws: { perMessageDeflate: deflate } });
    const next = inbox(ws);
    const b = noise(100000);
    const parts = [b.subarray(0, 1), b.subarray(1, 4096),
                   b.subarray(4096, 4096), b.subarray(4096)];
    parts.forEach((p, i) =>
      ws.send(p, { binary: true, fin: i === parts.length - 1 }));
    const m = await next();
    assert.equal(m.isBinary, true);
    assert.ok(m.data.equals(b), 'echoed bytes differ from the fragments sent');
    ws.close(1000); await closed(ws);
  });
}

// The server's default --max-message is 16 MiB: a message of exactly that
// size must be accepted and echoed, with and without compression.
for (const deflate of [false, true]) {
  const label = deflate ? ' (compressed)' : '';
  test(`16 MiB binary message is echoed${label}`, async () => {
    const ws = await open(port, { ws: { perMessageDeflate: deflate } });
    const next = inbox(ws);
    const b = noise(16 * MiB, deflate ? 7 : 11); // incompressible
    const m = await echo(ws, next, b);
    assert.equal(m.isBinary, true);
    assert.equal(m.data.length, b.length);
    assert.ok(m.data.equals(b), '16 MiB binary echo differs');
    ws.close(1000); await closed(ws);
  });

  test(`16 MiB text message is echoed${label}`, async () => {
    const ws = await open(port, { ws: { perMessageDeflate: deflate } });
    const next = inbox(ws);
    const s = bigText(16 * MiB);
    const n = Buffer.byteLength(s);
    assert.equal(n, 16 * MiB);
    const m = await echo(ws, next, s);
    assert.equal(m.isBinary, false);
    assert.equal(m.data.length, n);
    assert.ok(m.data.toString() === s, '16 MiB text echo differs');
    ws.close(1000); await closed(ws);
  });
}

test('permessage-deflate is negotiated and the server compresses its echo',
     async () => {
  const ws = await open(port, { ws: { perMessageDeflate: true } });
  const ext = ws.upgradeResponse.headers['sec-websocket-extensions'];
  console.log(`#   negotiated: Sec-WebSocket-Extensions: ${ext}`);
  assert.match(ext, /^permessage-deflate\b/);
  assert.equal(ws.extensions, 'permessage-deflate');
  const next = inbox(ws);
  const s = 'the quick brown fox jumps over the lazy dog. '.repeat(25000);
  // Three in a row: context takeover must keep both sides in step.
  for (let i = 0; i < 3; i++) {
    const before = ws._socket.bytesRead;
    const m = await echo(ws, next, s + i);
    const wire = ws._socket.bytesRead - before;
    assert.equal(m.data.toString(), s + i);
    assert.ok(wire < 64 * 1024,
              `echo of ${s.length} compressible bytes took ${wire} bytes ` +
              'on the wire: the server did not compress it');
  }
  const b = noise(300000, 3);
  const m = await echo(ws, next, b);
  assert.ok(m.data.equals(b));
  ws.close(1000); await closed(ws);
});

test('permessage-deflate with no context takeover and 10-bit windows',
     async () => {
  const ws = await open(port, { ws: { perMessageDeflate: {
    serverNoContextTakeover: true, clientNoContextTakeover: true,
    serverMaxWindowBits: 10, clientMaxWindowBits: 10 } } });
  const ext = ws.upgradeResponse.headers['sec-websocket-extensions'];
  console.log(`#   negotiated: Sec-WebSocket-Extensions: ${ext}`);
  // RFC 7692 7.1.1.1 and 7.1.2.1: accepting this offer means naming
  // server_no_context_takeover and a server window of at most 10 bits.
  assert.match(ext, /^permessage-deflate\b/);
  assert.match(ext, /;\s*server_no_context_takeover\b/);
  assert.match(ext, /;\s*server_max_window_bits=(9|10)\b/);
  const next = inbox(ws);
  for (let i = 0; i < 3; i++) {
    const s = `${i} ` + bigText(200000);
    const m = await echo(ws, next, s);
    assert.equal(m.data.toString(), s);
  }
  ws.close(1000); await closed(ws);
});

test('no subprotocol configured: none is selected', async () => {
  const ws = await open(port);
  assert.equal(ws.protocol, '');
  ws.close(1000); await closed(ws);
  // When the client asks for some, the 101 names none, and ws (which
  // requires one in that case) refuses the connection with its own error.
  const ws2 = new WebSocket(url(port), ['chat', 'superchat']);
  const res = new Promise((resolve) => ws2.once('upgrade', resolve));
  const err = new Promise((resolve) => ws2.once('error', resolve));
  const r = await within(STEP_MS, 'the upgrade response', res);
  assert.equal(r.statusCode, 101);
  assert.equal(r.headers['sec-websocket-protocol'], undefined);
  const e = await within(STEP_MS, 'the client\'s error', err);
  assert.match(e.message, /Server sent no subprotocol/);
});

test('ping from the client gets a pong with the same payload', async () => {
  const ws = await open(port);
  for (const payload of [Buffer.from('ping-123'), Buffer.alloc(0),
                         noise(125, 5)]) {
    const pong = within(STEP_MS, 'pong', new Promise((resolve) => {
      const on = (data) => {
        if (data.equals(payload)) { ws.off('pong', on); resolve(data); }
      };
      ws.on('pong', on);
    }));
    ws.ping(payload);
    assert.deepEqual(await pong, payload);
  }
  ws.close(1000); await closed(ws);
});

test('close handshake: the server echoes the client\'s close code',
     async () => {
  for (const [code, reason] of [[1000, 'bye'], [4000, 'app reason ✓'],
                                [3001, '']]) {
    const ws = await open(port);
    const c = closed(ws);
    ws.close(code, reason);
    const got = await c;
    assert.equal(got.code, code, `closed with ${code}, server answered ` +
                 `${got.code}`);
  }
});

test('message over --max-message closes with 1009', async () => {
  // At the limit it is echoed.
  let ws = await open(smallPort);
  const next = inbox(ws);
  const ok = noise(1024, 9);
  const m = await echo(ws, next, ok);
  assert.ok(m.data.equals(ok));
  let c = closed(ws);
  ws.send(noise(2000, 9));
  assert.equal((await c).code, 1009);
  // Compressed: 2000 bytes that deflate to a few; the limit applies after
  // decompression.
  ws = await open(smallPort, { ws: { perMessageDeflate: true } });
  assert.equal(ws.extensions, 'permessage-deflate');
  c = closed(ws);
  ws.send('a'.repeat(2000));
  assert.equal((await c).code, 1009);
  // Fragmented: no fragment is over the limit, the message is.
  ws = await open(smallPort);
  c = closed(ws);
  ws.send(noise(700), { fin: false, binary: true });
  ws.send(noise(700), { fin: false, binary: true });
  ws.send(noise(700), { fin: true, binary: true });
  assert.equal((await c).code, 1009);
});

test('--origin allow-list: 403 for another Origin, 101 for the listed one ' +
     'and for none', async () => {
  await assert.rejects(open(originPort, { ws: { origin: 'http://evil.example' } }),
                       (e) => e.status === 403);
  let ws = await open(originPort, { ws: { origin: 'http://good.example' } });
  ws.close(1000); await closed(ws);
  ws = await open(originPort); // ws sends no Origin unless told to
  ws.close(1000); await closed(ws);
});

runCases(cases, { prefix: 'ws', summary: 'ws_client', timed: true });
