// Failed TLS handshakes against `duplex serve --tls-cert ...
// --handshake-timeout 2s`: N connections (default 200), 20 at a time, each
// of which gives up or misbehaves somewhere in the TLS or WebSocket
// handshake. Run by tests/scripts/tls_serve.sh, which then checks that the
// server's open file descriptors are back to where they started and that
// it still serves:
//
//   node abort_handshakes.js PORT CA_FILE [N]
//
// The kinds, in turn (every wait is bounded):
//   close      TCP connect, then close at once
//   reset      TCP connect, then RST
//   garbage    random non-TLS bytes, then wait for the server to close
//   header     a TLS record header announcing 16 KiB, 5 bytes of it, close
//   hello-rst  a real ClientHello, RST as soon as the server answers
//   hello-cut  half of a real ClientHello, then close
//   unknownca  the client does not trust our CA: it aborts with an alert
//   tls12-cut  TLS 1.2 handshake, RST after the first server flight
//   badrecord  a finished TLS handshake, then a corrupt record
//   upg-cut    a finished TLS handshake, half an upgrade request, RST
//   upg-rst    a full upgrade request, RST before reading the 101
//   silent     TCP connect, say nothing: the server's handshake timeout
//              must close it (we wait up to 6 s for its EOF)
//   tls-silent TLS handshake done, no request: the timeout again
// Prints a summary; exits 1 if a kind did not behave as expected (e.g. a
// silent connection the server never closed).
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const tls = require('node:tls');

const [portArg, caFile, nArg] = process.argv.slice(2);
const port = Number(portArg);
const N = Number(nArg || 200);
if (!port || !caFile) {
  console.error('usage: node abort_handshakes.js PORT CA_FILE [N]');
  process.exit(2);
}
const CA = fs.readFileSync(caFile);
const HOST = '127.0.0.1';

setTimeout(() => {
  console.error('abort_handshakes: watchdog: still running after 40 s');
  process.exit(1);
}, 40000).unref();

// Resolves when sock is closed by either side, or after ms with 'timeout'
// (then destroys it).
function ended(sock, ms) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (how) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      sock.destroy();
      resolve(how);
    };
    const t = setTimeout(() => finish('timeout'), ms);
    // Read (and drop) what the server sends, an alert say: a paused
    // stream would never see the EOF behind it.
    sock.on('data', () => {});
    sock.on('end', () => finish('eof'));
    sock.on('close', () => finish('closed'));
    sock.on('error', (e) => finish(e.code || 'error'));
  });
}

function rawConnect() {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, HOST, () => resolve(s));
    s.once('error', reject);
  });
}

// A TLS client over a raw socket we control; resolves with both once the
// raw socket is connected.
async function tlsOver(opts = {}) {
  const raw = await rawConnect();
  const t = tls.connect({ socket: raw, servername: 'localhost', ca: CA,
                          ...opts });
  t.on('error', () => {});
  return { raw, t };
}

// Captures a real ClientHello by letting a TLS client write into a socket
// that goes nowhere.
function clientHello() {
  return new Promise((resolve) => {
    const { Duplex } = require('node:stream');
    const sink = new Duplex({
      read() {},
      write(chunk, enc, cb) { resolve(Buffer.from(chunk)); cb(); },
    });
    const t = tls.connect({ socket: sink, servername: 'localhost', ca: CA });
    t.on('error', () => {});
    setTimeout(() => t.destroy(), 100);
  });
}

const upgrade = (partial) => {
  const req = `GET /echo HTTP/1.1\r\nHost: localhost:${port}\r\n` +
    'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n` +
    'Sec-WebSocket-Version: 13\r\n\r\n';
  return partial ? req.slice(0, 40) : req;
};

const secure = (t) => new Promise((resolve, reject) => {
  t.once('secureConnect', resolve);
  t.once('error', reject);
  setTimeout(() => reject(new Error('no TLS handshake in 5 s')), 5000);
});

let hello = null;
const kinds = {
  async close() {
    const s = await rawConnect();
    s.destroy();
    return 'ok';
  },
  async reset() {
    const s = await rawConnect();
    s.resetAndDestroy();
    return 'ok';
  },
  async garbage() {
    const s = await rawConnect();
    let b = crypto.randomBytes(1 + crypto.randomInt(600));
    b[0] = 0x01 + crypto.randomInt(0x14); // never a TLS record or a letter
    s.write(b);
    const how = await ended(s, 5000);
    return how === 'timeout' ? 'the server kept a garbage connection 5 s' : 'ok';
  },
  async header() {
    const s = await rawConnect();
    s.write(Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00, 1, 2, 3, 4, 5]));
    s.end();
    await ended(s, 5000);
    return 'ok';
  },
  async 'hello-rst'() {
    const s = await rawConnect();
    s.write(hello);
    await new Promise((resolve) => {
      s.once('data', resolve);
      s.once('close', resolve);
      setTimeout(resolve, 3000);
    });
    s.resetAndDestroy();
    return 'ok';
  },
  async 'hello-cut'() {
    const s = await rawConnect();
    s.end(hello.subarray(0, hello.length >> 1));
    await ended(s, 3000);
    return 'ok';
  },
  async unknownca() {
    const { t } = await tlsOver({ ca: [] , rejectUnauthorized: true });
    // Node rejects the certificate and closes.
    const how = await ended(t, 5000);
    return how === 'timeout' ? 'unknownca: still open after 5 s' : 'ok';
  },
  async 'tls12-cut'() {
    const { raw, t } = await tlsOver({ maxVersion: 'TLSv1.2' });
    await new Promise((resolve) => {
      raw.once('data', resolve);
      setTimeout(resolve, 3000);
    });
    raw.resetAndDestroy();
    t.destroy();
    return 'ok';
  },
  async badrecord() {
    const { raw, t } = await tlsOver();
    await secure(t);
    // An application-data record of 64 random bytes: it cannot decrypt.
    raw.write(Buffer.concat([Buffer.from([0x17, 0x03, 0x03, 0x00, 0x40]),
                             crypto.randomBytes(64)]));
    const how = await ended(raw, 5000);
    t.destroy();
    return how === 'timeout' ? 'badrecord: still open after 5 s' : 'ok';
  },
  async 'upg-cut'() {
    const { raw, t } = await tlsOver();
    await secure(t);
    t.write(upgrade(true));
    await new Promise((r) => setTimeout(r, 5));
    raw.resetAndDestroy();
    t.destroy();
    return 'ok';
  },
  async 'upg-rst'() {
    const { raw, t } = await tlsOver();
    await secure(t);
    // Reset once the request is handed to the socket (resetting inside
    // the same tick as the TLS write crashes Node 20).
    await new Promise((resolve) => t.write(upgrade(false), resolve));
    raw.resetAndDestroy();
    t.destroy();
    return 'ok';
  },
  async silent() {
    const s = await rawConnect();
    const how = await ended(s, 6000);
    return how === 'timeout' ? 'silent: not closed by the server in 6 s' : 'ok';
  },
  async 'tls-silent'() {
    const { raw, t } = await tlsOver();
    await secure(t);
    const how = await ended(raw, 6000);
    t.destroy();
    return how === 'timeout' ? 'tls-silent: not closed by the server in 6 s'
      : 'ok';
  },
};

async function main() {
  hello = await clientHello();
  if (hello[0] !== 0x16) throw new Error('could not capture a ClientHello');
  // DX_KINDS=a,b runs only those kinds (for debugging).
  const names = process.env.DX_KINDS ? process.env.DX_KINDS.split(',')
    : Object.keys(kinds);
  const counts = {};
  const problems = [];
  let next = 0;
  async function worker() {
    while (next < N) {
      const i = next++;
      const kind = names[i % names.length];
      let r;
      try {
        r = await kinds[kind]();
      } catch (e) {
        r = `${kind}: ${e.message}`;
      }
      counts[kind] = (counts[kind] || 0) + 1;
      if (r !== 'ok') problems.push(r);
    }
  }
  await Promise.all(Array.from({ length: 20 }, worker));
  console.log(`#   ${N} aborted handshakes: ${JSON.stringify(counts)}`);
  if (problems.length) {
    console.log(`not ok - abort_handshakes: ${problems.length} problems: ` +
                [...new Set(problems)].join(' | '));
    process.exit(1);
  }
  console.log(`ok - abort_handshakes: ${N} connections aborted in ` +
              `${names.length} ways; each one the server had to end, it ended`);
  process.exit(0);
}

main().catch((e) => {
  console.log(`not ok - abort_handshakes: ${e.stack || e}`);
  process.exit(1);
});
