// The page side of tests/browser/echo.js (and tls.js): opens a WebSocket to
// /echo on the server that served this page (wss:// from an https://
// page), round-trips a text, a binary (ArrayBuffer), a 1 MiB binary and a
// 1 MiB text message, closes with 1000, and writes what it received into
// the page. It does not judge: the test compares the
// page with the values it expects.
'use strict';

const show = (id, v) => { document.getElementById(id).textContent = String(v); };

// The messages (the test knows the same values).
const TEXT = 'hello from Chromium — ünïcødé 𝄞 ✓';
const BINARY = Uint8Array.from({ length: 256 }, (_, i) => 255 - i);
const MiB = 1024 * 1024;

function xorshift(n, seed) {
  const b = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

function bigText(n) { // exactly n UTF-8 bytes
  const unit = 'duplex ü € 𝄞 ';
  const u = new TextEncoder().encode(unit).length;
  return unit.repeat(Math.floor(n / u)) + 'x'.repeat(n % u);
}

function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');

async function run() {
  // wss:// when the page came over https:// (tests/browser/tls.js).
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const url = scheme + location.host + '/echo';
  show('url', url);
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  const queue = [];
  const waiters = [];
  let closed = null;
  ws.onmessage = (e) => (waiters.length ? waiters.shift().resolve(e.data)
                                        : queue.push(e.data));
  const closing = new Promise((resolve) => {
    ws.onclose = (e) => {
      closed = e;
      show('close', `code=${e.code} wasClean=${e.wasClean}`);
      while (waiters.length) waiters.shift().reject(
        new Error(`closed with ${e.code} while waiting for a message`));
      resolve(e);
    };
  });
  const next = () => new Promise((resolve, reject) => {
    if (queue.length) resolve(queue.shift());
    else if (closed) reject(new Error(`closed with ${closed.code}`));
    else waiters.push({ resolve, reject });
  });

  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error('WebSocket error before open'));
  });
  show('status', 'open');
  show('binaryType', ws.binaryType);
  show('extensions', ws.extensions);
  show('protocol', ws.protocol === '' ? '(none)' : ws.protocol);

  ws.send(TEXT);
  const t = await next();
  show('textType', typeof t);
  show('text', t);

  ws.send(BINARY.buffer);
  const b = await next();
  show('binaryKind', Object.prototype.toString.call(b).slice(8, -1));
  show('binary', hex(new Uint8Array(b)));

  ws.send(xorshift(MiB, 0x12345678));
  const bb = await next();
  const bu = new Uint8Array(bb);
  show('bigBinary', `${bu.length} bytes fnv1a=${fnv1a(bu)}`);

  ws.send(bigText(MiB));
  const bt = await next();
  const tu = new TextEncoder().encode(bt);
  show('bigText', `${typeof bt} ${tu.length} bytes fnv1a=${fnv1a(tu)}`);

  ws.close(1000, 'done');
  await closing;
  show('status', 'done');
}

run().catch((e) => {
  show('error', e && e.message ? e.message : e);
  show('status', 'error');
});
