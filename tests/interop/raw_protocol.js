// Interop: what a broken or hostile peer sees. A raw TCP socket (Node's net
// module, no WebSocket library) does the HTTP upgrade by hand, then sends
// frames that break RFC 6455 on purpose and reads the server's close frame.
// Also the HTTP answers to requests that are not a valid upgrade. Run by
// tests/scripts/interop_serve.sh:
//
//   node raw_protocol.js PORT SMALL_PORT
//
// PORT: default limits; SMALL_PORT: --max-message 1024. Prints one
// "ok"/"not ok" line per case and exits 1 if any case failed.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');

const [port, smallPort] = process.argv.slice(2).map(Number);
if (!port || !smallPort) {
  console.error('usage: node raw_protocol.js PORT SMALL_PORT');
  process.exit(2);
}
const STEP_MS = 5000;

setTimeout(() => {
  console.error('raw_protocol: watchdog: still running after 40 s');
  process.exit(1);
}, 40000).unref();

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

// A connection that buffers everything it receives; read helpers consume
// from the buffer and wait (bounded) for more.
class Peer {
  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.ended = false;
    this.wake = null;
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.poke(); });
    sock.on('end', () => { this.ended = true; this.poke(); });
    sock.on('close', () => { this.ended = true; this.poke(); });
    sock.on('error', () => { this.ended = true; this.poke(); });
  }

  poke() { if (this.wake) { const w = this.wake; this.wake = null; w(); } }

  // Waits until pred() returns non-undefined; returns its value.
  async until(what, pred, ms = STEP_MS) {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = pred();
      if (v !== undefined) return v;
      if (this.ended) throw new Error(`connection ended while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => { clearTimeout(t); resolve(); };
      });
    }
  }

  async readHead() {
    const end = await this.until('the HTTP response head', () => {
      const i = this.buf.indexOf('\r\n\r\n');
      return i < 0 ? undefined : i;
    });
    const head = this.buf.subarray(0, end).toString('latin1');
    this.buf = this.buf.subarray(end + 4);
    const [statusLine, ...lines] = head.split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine);
    assert.ok(m, `bad status line: ${statusLine}`);
    const headers = {};
    for (const line of lines) {
      const i = line.indexOf(':');
      const k = line.slice(0, i).trim().toLowerCase();
      const v = line.slice(i + 1).trim();
      headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
    }
    return { status: Number(m[1]), headers, head };
  }

  // Next frame from the server: {fin, rsv, opcode, masked, payload}.
  readFrame() {
    return this.until('a frame', () => {
      const b = this.buf;
      if (b.length < 2) return undefined;
      let len = b[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return undefined;
        len = b.readUInt16BE(2); off = 4;
      } else if (len === 127) {
        if (b.length < 10) return undefined;
        len = Number(b.readBigUInt64BE(2)); off = 10;
      }
      const masked = (b[1] & 0x80) !== 0;
      if (masked) off += 4;
      if (b.length < off + len) return undefined;
      const f = { fin: (b[0] & 0x80) !== 0, rsv: (b[0] >> 4) & 7,
                  opcode: b[0] & 0x0f, masked,
                  payload: Buffer.from(b.subarray(off, off + len)) };
      this.buf = b.subarray(off + len);
      return f;
    });
  }

  // Resolves when the server closes the TCP connection.
  async waitEnd(ms = STEP_MS) {
    await new Promise((resolve, reject) => {
      if (this.ended) return resolve();
      const t = setTimeout(() => reject(new Error(
        'the server did not close the TCP connection')), ms);
      const check = () => { if (this.ended) { clearTimeout(t); resolve(); } };
      this.sock.on('end', check);
      this.sock.on('close', check);
    });
  }

  write(b) { if (!this.ended) this.sock.write(b); }
  destroy() { this.sock.destroy(); }
}

function connect(p) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port: p });
    const t = setTimeout(() => { sock.destroy(); reject(new Error('connect timed out')); }, STEP_MS);
    sock.once('connect', () => { clearTimeout(t); resolve(new Peer(sock)); });
    sock.once('error', (e) => { clearTimeout(t); reject(e); });
  });
}

// Sends a request head (lines without the final CRLF CRLF) and reads the
// response head.
async function request(p, lines) {
  const peer = await connect(p);
  peer.write(lines.join('\r\n') + '\r\n\r\n');
  const res = await peer.readHead();
  return { peer, ...res };
}

function upgradeLines(key, extra = []) {
  return ['GET /echo HTTP/1.1', `Host: 127.0.0.1`, 'Upgrade: websocket',
          'Connection: Upgrade', `Sec-WebSocket-Key: ${key}`,
          'Sec-WebSocket-Version: 13', ...extra];
}

// A completed upgrade with no extension: no RSV bit has a meaning.
async function upgrade(p, extra = []) {
  const key = crypto.randomBytes(16).toString('base64');
  const r = await request(p, upgradeLines(key, extra));
  assert.equal(r.status, 101, r.head);
  const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
  assert.equal(r.headers['sec-websocket-accept'], accept);
  assert.equal(r.headers['sec-websocket-extensions'], undefined);
  return r;
}

// One frame as a client would send it; options break the rules.
function frame(opcode, payload = Buffer.alloc(0),
               { fin = true, rsv = 0, mask = true, len64 = null } = {}) {
  payload = Buffer.from(payload);
  const n = payload.length;
  const parts = [Buffer.from([(fin ? 0x80 : 0) | (rsv << 4) | opcode])];
  const m = mask ? 0x80 : 0;
  if (len64 !== null) {
    const h = Buffer.alloc(9); h[0] = m | 127; h.writeBigUInt64BE(len64, 1);
    parts.push(h);
  } else if (n < 126) {
    parts.push(Buffer.from([m | n]));
  } else if (n < 65536) {
    const h = Buffer.alloc(3); h[0] = m | 126; h.writeUInt16BE(n, 1); parts.push(h);
  } else {
    const h = Buffer.alloc(9); h[0] = m | 127; h.writeBigUInt64BE(BigInt(n), 1);
    parts.push(h);
  }
  if (mask) {
    const key = crypto.randomBytes(4);
    const body = Buffer.alloc(n);
    for (let i = 0; i < n; i++) body[i] = payload[i] ^ key[i & 3];
    parts.push(key, body);
  } else {
    parts.push(payload);
  }
  return Buffer.concat(parts);
}

const closePayload = (code, reason = Buffer.alloc(0)) => {
  const b = Buffer.alloc(2); b.writeUInt16BE(code); return Buffer.concat([b, Buffer.from(reason)]);
};

const TEXT = 0x1, BIN = 0x2, CONT = 0x0, CLOSE = 0x8, PING = 0x9;

const cases = [];
const test = (name, fn) => cases.push({ name, fn });

// Sends `bytes` after the upgrade and expects the server's first frame to be
// a close with `code`; then answers the close and expects the TCP close.
function protocolError(name, code, bytes, p = port) {
  test(`${name} -> close ${code}`, async () => {
    const { peer } = await upgrade(p);
    try {
      for (const b of [].concat(bytes)) peer.write(b);
      const f = await peer.readFrame();
      assert.equal(f.opcode, CLOSE,
                   `expected a close frame first, got opcode ${f.opcode}`);
      assert.equal(f.masked, false, 'a server frame must not be masked');
      assert.equal(f.fin, true);
      assert.ok(f.payload.length >= 2, 'close frame without a code');
      const got = f.payload.readUInt16BE(0);
      assert.equal(got, code, `close code ${got}, expected ${code}`);
      new TextDecoder('utf-8', { fatal: true }).decode(f.payload.subarray(2));
      peer.write(frame(CLOSE, closePayload(code)));
      await peer.waitEnd();
    } finally {
      peer.destroy();
    }
  });
}

// ---- the raw path works (control case) ----------------------------------

test('raw client: masked text frame is echoed unmasked, close is answered',
     async () => {
  const { peer } = await upgrade(port);
  try {
    peer.write(frame(TEXT, 'hello raw'));
    let f = await peer.readFrame();
    assert.deepEqual([f.opcode, f.fin, f.masked, f.rsv], [TEXT, true, false, 0]);
    assert.equal(f.payload.toString(), 'hello raw');
    peer.write(frame(CLOSE, closePayload(1000, 'done')));
    f = await peer.readFrame();
    assert.equal(f.opcode, CLOSE);
    assert.equal(f.payload.readUInt16BE(0), 1000);
    await peer.waitEnd();
  } finally {
    peer.destroy();
  }
});

// ---- protocol errors -----------------------------------------------------

protocolError('unmasked frame from the client', 1002,
              frame(TEXT, 'hello', { mask: false }));
protocolError('invalid UTF-8 in a text frame', 1007,
              frame(TEXT, Buffer.from([0x68, 0x69, 0xff, 0x21])));
protocolError('invalid UTF-8 across fragments', 1007,
              [frame(TEXT, Buffer.from([0x61, 0xe2, 0x82]), { fin: false }),
               frame(CONT, Buffer.from([0x28, 0x62]))]);
// Fail fast (RFC 6455 8.1): the first fragment is already invalid, and the
// rest of the message never comes.
protocolError('invalid UTF-8 in the first fragment, message unfinished', 1007,
              frame(TEXT, Buffer.from([0x61, 0xc0, 0xaf]), { fin: false }));
protocolError('reserved data opcode 0x3', 1002, frame(0x3, 'x'));
protocolError('reserved control opcode 0xB', 1002, frame(0xb, 'x'));
protocolError('RSV1 set without a negotiated extension', 1002,
              frame(TEXT, 'x', { rsv: 4 }));
protocolError('fragmented ping', 1002, frame(PING, 'abc', { fin: false }));
protocolError('ping with a 126-byte payload', 1002,
              frame(PING, Buffer.alloc(126, 0x61)));
protocolError('continuation frame with no message started', 1002,
              frame(CONT, 'x'));
protocolError('new text frame inside a fragmented message', 1002,
              [frame(TEXT, 'a', { fin: false }), frame(TEXT, 'b')]);
protocolError('64-bit length with the top bit set', 1002,
              frame(BIN, Buffer.alloc(0), { len64: 1n << 63n }));
for (const bad of [999, 1004, 1005, 1006, 1015, 5000]) {
  protocolError(`close with invalid code ${bad}`, 1002,
                frame(CLOSE, closePayload(bad)));
}
protocolError('close with a 1-byte payload', 1002,
              frame(CLOSE, Buffer.from([0x03])));
protocolError('close reason that is not UTF-8', 1007,
              frame(CLOSE, closePayload(1000, Buffer.from([0xff, 0xfe]))));
protocolError('2000-byte message over --max-message 1024', 1009,
              frame(BIN, Buffer.alloc(2000, 1)), smallPort);
protocolError('fragmented message over --max-message 1024', 1009,
              [frame(BIN, Buffer.alloc(700), { fin: false }),
               frame(CONT, Buffer.alloc(700), { fin: false }),
               frame(CONT, Buffer.alloc(700))], smallPort);

// ---- HTTP answers before the upgrade -----------------------------------

test('plain HTTP GET of the endpoint gets 426 with Sec-WebSocket-Version: 13',
     async () => {
  const r = await request(port, ['GET /echo HTTP/1.1', 'Host: 127.0.0.1',
                                 'Connection: close']);
  r.peer.destroy();
  assert.equal(r.status, 426, r.head);
  assert.equal(r.headers['sec-websocket-version'], '13', r.head);
});

test('unsupported Sec-WebSocket-Version gets 426 naming version 13',
     async () => {
  const key = crypto.randomBytes(16).toString('base64');
  const lines = upgradeLines(key).map((l) =>
    l.startsWith('Sec-WebSocket-Version') ? 'Sec-WebSocket-Version: 8' : l);
  const r = await request(port, lines);
  r.peer.destroy();
  assert.equal(r.status, 426, r.head);
  assert.equal(r.headers['sec-websocket-version'], '13', r.head);
});

test('upgrade without Sec-WebSocket-Key gets 400', async () => {
  const lines = upgradeLines('x').filter((l) => !l.startsWith('Sec-WebSocket-Key'));
  const r = await request(port, lines);
  r.peer.destroy();
  assert.equal(r.status, 400, r.head);
});

test('upgrade with a key that is not 16 base64 bytes gets 400', async () => {
  const r = await request(port, upgradeLines('c2hvcnQ='));
  r.peer.destroy();
  assert.equal(r.status, 400, r.head);
});

test('a subprotocol offer is answered with none (none configured)',
     async () => {
  const r = await upgrade(port, ['Sec-WebSocket-Protocol: chat, superchat']);
  r.peer.destroy();
  assert.equal(r.headers['sec-websocket-protocol'], undefined, r.head);
});

(async () => {
  let failed = 0;
  for (const { name, fn } of cases) {
    try {
      await fn();
      console.log(`ok - raw: ${name}`);
    } catch (e) {
      failed++;
      console.log(`not ok - raw: ${name}: ${e && e.message ? e.message : e}`);
    }
  }
  console.log(`raw_protocol: ${cases.length - failed}/${cases.length} passed`);
  process.exit(failed ? 1 : 0);
})();
