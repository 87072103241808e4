// TLS: the Node `ws` client (npm, pinned in package-lock.json) against
// `duplex serve --tls-cert ... --tls-key ...`. Run by
// tests/scripts/tls_serve.sh:
//
//   node wss_client.js CONFIG_JSON
//
// CONFIG_JSON: {"certs": DIR (make_certs.sh output), "ports": {"main",
// "small", "plain", "other", "expired", "self"}, "logs": {same keys: the
// servers' stderr files}, "fp": {"cert", "other", "expired", "self": the
// SHA-256 fingerprints "AB:CD:..." of those files}}.
//   main     --tls-cert cert.pem --echo /echo --root DIR
//   small    --tls-cert cert.pem --echo /echo --max-message 1024
//   plain    --echo /echo (no TLS)
//   other/expired/self  --tls-cert other.pem / expired.pem / self.pem
// Prints one "ok"/"not ok" line per case; exits 1 if any case failed.
// Every wait is bounded.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { within, noise, bigText, wsClient, runCases } =
  require('../lib/ws_test.js');

const cfg = JSON.parse(process.argv[2] || '{}');
if (!cfg.certs || !cfg.ports || !cfg.fp) {
  console.error('usage: node wss_client.js CONFIG_JSON');
  process.exit(2);
}
const CA = fs.readFileSync(path.join(cfg.certs, 'ca.pem'));
const MiB = 1024 * 1024;
const STEP_MS = 15000;
const client = wsClient(STEP_MS);
const { inbox, closed, echo } = client;

setTimeout(() => {
  console.error('wss_client: watchdog: still running after 45 s');
  process.exit(1);
}, 45000).unref();

// Opens wss://HOST:PORT/echo trusting only the test CA. Rejects with the
// client's error (a TLS verification error keeps its .code).
function open(port, opts = {}) {
  const host = opts.host || 'localhost';
  const scheme = opts.scheme || 'wss';
  return client.open(`${scheme}://${host}:${port}/echo`, [], {
    ca: CA,
    perMessageDeflate: false,
    maxPayload: 32 * MiB,
    ...opts.ws,
  });
}

// The connection error a client gets: resolves with the error (fails if
// the connection opened).
async function openFails(port, opts) {
  let ws;
  try {
    ws = await open(port, opts);
  } catch (e) {
    return e;
  }
  ws.terminate();
  throw new Error('the connection opened; expected the client to refuse it');
}

const log = (key) => fs.readFileSync(cfg.logs[key], 'utf8');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls a server log for a pattern (log lines are written asynchronously
// to the client's view of the close).
async function logShows(key, re, ms = 5000) {
  for (let t = 0; t < ms; t += 50) {
    if (re.test(log(key))) return true;
    await sleep(50);
  }
  return false;
}

const cases = [];
const test = (name, fn) => cases.push({ name, fn });
const P = cfg.ports;

// ---- echo over wss ------------------------------------------------------

test('wss echo: text, binary, 1 MiB binary, 1 MiB text, TLS 1.3 by default',
     async () => {
  const ws = await open(P.main);
  const next = inbox(ws);
  const sock = ws._socket;
  assert.equal(sock.encrypted, true);
  assert.equal(sock.authorized, true, String(sock.authorizationError));
  assert.equal(sock.getProtocol(), 'TLSv1.3');
  assert.equal(sock.getPeerCertificate().fingerprint256, cfg.fp.cert,
               'the server did not present cert.pem');
  const s = 'hello over TLS — ünïcødé 𝄞 ✓';
  let m = await echo(ws, next, s);
  assert.equal(m.isBinary, false);
  assert.equal(m.data.toString('utf8'), s);
  const b = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  m = await echo(ws, next, b);
  assert.equal(m.isBinary, true);
  assert.deepEqual(m.data, b);
  const big = noise(MiB);
  m = await echo(ws, next, big);
  assert.equal(m.isBinary, true);
  assert.ok(m.data.equals(big), '1 MiB binary echo differs');
  const bt = bigText(MiB);
  m = await echo(ws, next, bt);
  assert.equal(m.isBinary, false);
  assert.equal(m.data.length, MiB);
  assert.ok(m.data.toString('utf8') === bt, '1 MiB text echo differs');
  ws.close(4321, 'bye');
  const c = await closed(ws);
  assert.equal(c.code, 4321, 'the server did not echo close code 4321');
});

test('wss echo with permessage-deflate: negotiated, 1 MiB round trip',
     async () => {
  const ws = await open(P.main, { ws: { perMessageDeflate: true } });
  const next = inbox(ws);
  assert.match(ws.extensions, /permessage-deflate/,
               `extensions: "${ws.extensions}"`);
  assert.match(ws.upgradeResponse.headers['sec-websocket-extensions'] || '',
               /^permessage-deflate/);
  let received = 0;
  ws._socket.on('data', (d) => { received += d.length; });
  const bt = bigText(MiB);
  const m = await echo(ws, next, bt);
  assert.equal(m.data.toString('utf8'), bt);
  // Compressed on the wire: the 1 MiB echo arrived in far fewer bytes.
  assert.ok(received < MiB / 4, `received ${received} bytes for 1 MiB`);
  const b = noise(300000, 7);
  const m2 = await echo(ws, next, b);
  assert.ok(m2.isBinary && m2.data.equals(b), 'binary echo differs');
  ws.close(1000);
  assert.equal((await closed(ws)).code, 1000);
});

test('wss with TLS 1.2 forced on the client (minVersion/maxVersion)',
     async () => {
  const ws = await open(P.main, {
    ws: { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } });
  const next = inbox(ws);
  assert.equal(ws._socket.getProtocol(), 'TLSv1.2');
  assert.equal(ws._socket.getPeerCertificate().fingerprint256, cfg.fp.cert);
  const m = await echo(ws, next, 'tls 1.2');
  assert.equal(m.data.toString(), 'tls 1.2');
  const big = noise(MiB, 3);
  const m2 = await echo(ws, next, big);
  assert.ok(m2.data.equals(big), '1 MiB echo over TLS 1.2 differs');
  ws.close(1000);
  assert.equal((await closed(ws)).code, 1000);
});

test('wss://127.0.0.1: the certificate\'s IP SAN is accepted',
     async () => {
  const ws = await open(P.main, { host: '127.0.0.1' });
  const next = inbox(ws);
  assert.equal((await echo(ws, next, 'ip')).data.toString(), 'ip');
  ws.close(1000);
  await closed(ws);
});

// ---- limits over TLS ------------------------------------------------------

test('over --max-message 1024 over wss: closed with 1009', async () => {
  const ws = await open(P.small);
  const next = inbox(ws);
  const ok = noise(1024, 11);
  const m = await echo(ws, next, ok);
  assert.ok(m.data.equals(ok), 'a message of exactly 1024 bytes is echoed');
  ws.send(noise(2000, 12));
  const c = await closed(ws);
  assert.equal(c.code, 1009, `closed with ${c.code} "${c.reason}"`);
});

test('over --max-message 1024 over wss, compressed: closed with 1009',
     async () => {
  const ws = await open(P.small, { ws: { perMessageDeflate: true } });
  assert.match(ws.extensions, /permessage-deflate/);
  // 64 KiB of one byte deflates to a few hundred bytes: the limit applies
  // after decompression.
  ws.send(Buffer.alloc(65536, 0x61));
  const c = await closed(ws);
  assert.equal(c.code, 1009, `closed with ${c.code} "${c.reason}"`);
});

// ---- the wrong protocol on either side ------------------------------------

test('plain HTTP to the TLS port: the server closes, logs it, survives',
     async () => {
  const got = await within(STEP_MS, 'the server to close', new Promise(
    (resolve, reject) => {
      const s = net.connect(P.main, '127.0.0.1');
      let data = Buffer.alloc(0);
      s.on('connect', () => s.write(
        `GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:${P.main}\r\n\r\n`));
      s.on('data', (d) => { data = Buffer.concat([data, d]); });
      s.on('error', (e) => resolve({ data, how: e.code }));
      s.on('close', () => resolve({ data, how: 'closed' }));
      setTimeout(() => { s.destroy(); reject(new Error('not closed')); },
                 STEP_MS - 1000);
    }));
  assert.ok(!got.data.toString('latin1').startsWith('HTTP/1.1 200'),
            'a plaintext request was answered with a file');
  assert.ok(await logShows('main', /plain HTTP to a TLS port/),
            'the server log does not say "plain HTTP to a TLS port"');
  const ws = await open(P.main);
  const next = inbox(ws);
  assert.equal((await echo(ws, next, 'after')).data.toString(), 'after');
  ws.close(1000);
  await closed(ws);
});

test('wss:// to a plain ws:// port: the client fails, the server survives',
     async () => {
  const e = await openFails(P.plain);
  console.log(`#   client error: ${e.code || ''} ${e.message}`);
  assert.match(`${e.code} ${e.message}`,
               /SSL|TLS|wrong version|ECONNRESET|socket hang up/i);
  // The server saw a ClientHello where a request line belongs: 400.
  assert.ok(await logShows('plain', /reject .*status=400/),
            'the plain server did not log a 400 for the TLS client');
  const ws = await open(P.plain, { scheme: 'ws' });
  const next = inbox(ws);
  assert.equal((await echo(ws, next, 'plain')).data.toString(), 'plain');
  ws.close(1000);
  await closed(ws);
});

// ---- the server presents exactly the configured certificate ---------------

// Each server is checked twice: the client refuses the certificate with
// the expected error, and (without verification) the certificate it
// received is the configured file.
const wrong = [
  ['other', 'other.pem (other.example) for localhost: hostname mismatch',
   'ERR_TLS_CERT_ALTNAME_INVALID', /Hostname\/IP does not match certificate's altnames/],
  ['expired', 'expired.pem: certificate has expired',
   'CERT_HAS_EXPIRED', /certificate has expired/],
  ['self', 'self.pem: self-signed certificate refused',
   'DEPTH_ZERO_SELF_SIGNED_CERT', /self[- ]signed certificate/],
];
for (const [key, label, code, re] of wrong) {
  test(`wrong certificate ${label}`, async () => {
    const e = await openFails(P[key]);
    console.log(`#   client error: ${e.code} ${e.message}`);
    assert.equal(e.code, code);
    assert.match(e.message, re);
    const ws = await open(P[key], { ws: { rejectUnauthorized: false } });
    const next = inbox(ws);
    assert.equal(ws._socket.getPeerCertificate().fingerprint256, cfg.fp[key],
                 `the server did not present ${key}.pem`);
    assert.equal((await echo(ws, next, 'x')).data.toString(), 'x');
    ws.close(1000);
    await closed(ws);
  });
}

test('other.pem is otherwise valid: accepted for servername other.example',
     async () => {
  const ws = await open(P.other, { ws: { servername: 'other.example' } });
  const next = inbox(ws);
  assert.equal(ws._socket.authorized, true);
  assert.equal((await echo(ws, next, 'ok')).data.toString(), 'ok');
  ws.close(1000);
  await closed(ws);
});

runCases(cases, { prefix: 'node ws', summary: 'wss_client' });
