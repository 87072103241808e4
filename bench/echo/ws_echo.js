// ws_echo — a Node `ws` echo server, the comparison peer for
// bench/run_echo.sh. Plain `ws` as its users run it: one process (one
// JavaScript thread), no permessage-deflate, text echoed as text and
// binary as binary. ws validates UTF-8 (Node's native buffer.isUtf8 for
// 24 bytes and more) and unmasks in JavaScript: the optional bufferutil and
// utf-8-validate add-ons are not installed, as with a plain `npm install ws`.
//
// Usage: node ws_echo.js PORT    (binds 127.0.0.1; SIGINT/SIGTERM exit 0)
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node ws_echo.js PORT');
  process.exit(2);
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
wss.on('listening', () => {
  console.error(`ws_echo: listening on 127.0.0.1:${wss.address().port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
