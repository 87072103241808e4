// One wss:// echo (text and 100 KB binary) trusting only the test CA, for
// the "does it still serve" checks of tests/scripts/tls_serve.sh:
//
//   node echo_once.js PORT CA_FILE
//
// Prints "ok - ..." and exits 0, or prints why and exits 1 (10 s bound).
'use strict';

const fs = require('node:fs');
const crypto = require('node:crypto');
const WebSocket = require('ws');

const [port, caFile] = process.argv.slice(2);
const fail = (why) => { console.log(`not ok - wss echo on ${port}: ${why}`); process.exit(1); };
setTimeout(() => fail('timed out after 10 s'), 10000).unref();

const ws = new WebSocket(`wss://localhost:${port}/echo`,
                         { ca: fs.readFileSync(caFile), perMessageDeflate: false });
const sent = ['still serving', crypto.randomBytes(100000)];
const got = [];
ws.on('error', (e) => fail(`${e.code || ''} ${e.message}`));
ws.on('open', () => sent.forEach((m) => ws.send(m)));
ws.on('message', (data) => {
  got.push(data);
  if (got.length < sent.length) return;
  if (got[0].toString() !== sent[0] || !got[1].equals(sent[1]))
    fail('the echo differs from what was sent');
  ws.close(1000);
});
ws.on('close', (code) => {
  if (code !== 1000 || got.length !== sent.length) fail(`closed with ${code}`);
  console.log(`ok - wss echo on ${port}: text and 100 KB binary, close 1000`);
  process.exit(0);
});
