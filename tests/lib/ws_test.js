// Shared by the Node `ws` test clients (tests/interop/ws_client.js,
// tests/tls/wss_client.js) and, for the test data, tests/browser/echo.js:
//
//   within(ms, what, promise)  rejects "timed out waiting for WHAT" after ms
//   noise(n, seed)             n deterministic incompressible bytes (xorshift32)
//   bigText(n)                 text of exactly n UTF-8 bytes (1- to 4-byte
//                              sequences)
//   wsClient(stepMs)           open/inbox/closed/sendAsync/echo, every wait
//                              bounded by stepMs
//   runCases(cases, how)       runs [{name, fn}] in order, one "ok"/"not ok"
//                              line each, then exits 1 if any failed
'use strict';

function within(ms, what, promise) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

// Deterministic incompressible bytes (xorshift32).
function noise(n, seed = 0x9e3779b9) {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

// Text of exactly n UTF-8 bytes with 1-, 2-, 3- and 4-byte sequences.
function bigText(n) {
  const unit = 'duplex ü € 𝄞 ';
  const u = Buffer.byteLength(unit);
  return unit.repeat(Math.floor(n / u)) + 'x'.repeat(n % u);
}

// The `ws` helpers, every wait bounded by stepMs. (`ws` is required here,
// not at the top, so that echo.js needs only the data helpers.)
function wsClient(stepMs) {
  const WebSocket = require('ws');

  // Opens url; rejects on an error (a TLS verification error keeps its
  // .code) or a non-101 response (an Error with .status). The 101 response
  // is kept as ws.upgradeResponse (ws.extensions holds only the extension
  // names, the parameters are in the header).
  function open(url, protocols, options) {
    const ws = new WebSocket(url, protocols, options);
    ws.on('upgrade', (res) => { ws.upgradeResponse = res; });
    return within(stepMs, 'open', new Promise((resolve, reject) => {
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
      ws.once('unexpected-response', (req, res) => {
        reject(Object.assign(new Error(`HTTP ${res.statusCode}`),
                             { status: res.statusCode }));
        req.destroy();
      });
    }));
  }

  // A queue of received messages, so that none is lost between awaits. A
  // wait fails at once (with the close code) if the connection closes.
  function inbox(ws) {
    const queue = [];
    const waiters = [];
    let closedWith = null;
    ws.on('message', (data, isBinary) => {
      const m = { data, isBinary };
      if (waiters.length) waiters.shift().resolve(m);
      else queue.push(m);
    });
    ws.on('close', (code, reason) => {
      closedWith = new Error(`connection closed (code ${code} ` +
                             `"${reason}") while waiting for a message`);
      while (waiters.length) waiters.shift().reject(closedWith);
    });
    return () => within(stepMs, 'a message', new Promise((resolve, reject) => {
      if (queue.length) resolve(queue.shift());
      else if (closedWith) reject(closedWith);
      else waiters.push({ resolve, reject });
    }));
  }

  function closed(ws) {
    return within(stepMs, 'close', new Promise((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) resolve({ code: ws._closeCode });
      ws.once('close', (code, reason) =>
        resolve({ code, reason: reason.toString() }));
    }));
  }

  function sendAsync(ws, data, opts = {}) {
    return new Promise((resolve, reject) =>
      ws.send(data, opts, (err) => (err ? reject(err) : resolve())));
  }

  async function echo(ws, next, data, opts = {}) {
    await sendAsync(ws, data, opts);
    return next();
  }

  return { WebSocket, open, inbox, closed, sendAsync, echo };
}

// how: { prefix: the peer's name in each line ("ws"), summary: the name on
// the last line ("ws_client"), timed: append "(N ms)" to each ok line }.
async function runCases(cases, how) {
  let failed = 0;
  for (const { name, fn } of cases) {
    const t0 = Date.now();
    try {
      await fn();
      const ms = how.timed ? ` (${Date.now() - t0} ms)` : '';
      console.log(`ok - ${how.prefix}: ${name}${ms}`);
    } catch (e) {
      failed++;
      console.log(`not ok - ${how.prefix}: ${name}: ${e && e.stack ? e.stack : e}`);
    }
  }
  console.log(`${how.summary}: ${cases.length - failed}/${cases.length} passed`);
  process.exit(failed ? 1 : 0);
}

module.exports = { within, noise, bigText, wsClient, runCases };
