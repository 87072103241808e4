// A scripted client for tests/scripts/record_tool.sh: talks to
// tests/probe/server.js through `duplex record` and prints one line per
// event ("recv ...", "close CODE REASON"); exits 0 when the script ran to
// its end, 3 when the connection closed before, 4 on a timeout
// (CLIENT_TIMEOUT_MS, default 10 s).
//
//   node record_client.js URL
'use strict';

const WebSocket = require('ws');

// CLIENT_PROTOCOL: a subprotocol to offer.
const protocols = process.env.CLIENT_PROTOCOL ? [process.env.CLIENT_PROTOCOL] : [];
const ws = new WebSocket(process.argv[2], protocols,
                         { headers: { 'X-Token': 'rec-token' } });
const log = (line) => process.stdout.write(line + '\n');
setTimeout(() => { log('timeout'); process.exit(4); },
           Number(process.env.CLIENT_TIMEOUT_MS || 10000)).unref();

let session = null;
let step = 0;
let done = false;
const script = [
  () => ws.send('ping'),                                   // -> pong
  () => ws.send(JSON.stringify({ op: 'hello' })),          // -> welcome
  () => ws.send(JSON.stringify({ op: 'auth', session })),  // -> authed
  () => ws.send(Buffer.from([0, 1, 254, 255])),            // -> same bytes
  () => ws.send('delay 150'),                              // -> late
  () => { done = true; ws.close(1000, 'bye'); },
];
ws.on('open', () => { log(`open proto=${ws.protocol || '-'}`); script[step++](); });
ws.on('message', (data, isBinary) => {
  const text = isBinary ? 'binary ' + Buffer.from(data).toString('hex') : data.toString();
  log(`recv ${text}`);
  if (!isBinary && text.startsWith('{')) {
    const j = JSON.parse(text);
    if (j.session) session = j.session;
  }
  if (step < script.length) script[step++]();
});
ws.on('close', (code, reason) => {
  log(`close ${code} ${reason}`);
  process.exit(done ? 0 : 3);
});
ws.on('error', (e) => log(`error ${e.message}`));
