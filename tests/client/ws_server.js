// A Node `ws` server for `duplex connect` tests (tests/scripts/client_*.sh).
// Binds 127.0.0.1 only, prints its port on the first stdout line, then one
// log line per event ("open /echo proto=- ext=-", "close /echo 1000 ''",
// ...), and exits by itself after LIFETIME seconds (default 60).
//
//   node ws_server.js [--port N] [--tag T] [--tls DIR CERT] [--lifetime S]
//
// Paths (the query sets n, the number of messages):
//   /echo          echoes every message with its type
//   /send?n=N      sends N text messages "msg 1".."msg N" on open
//   /greet         sends "hello from TAG" on open (the reconnection test)
//   /binary        sends the binary message 00 01 fe ff on open
//   /echo-check?n=N  sends N messages, text and binary in turn, checks each
//                  comes back with the same type and bytes, logs
//                  "echo-check ok N" (or "echo-check FAIL ..."), closes 1000
//   /deflate       requires permessage-deflate (400 without the offer),
//                  logs "deflate <Sec-WebSocket-Extensions>", echoes
//   /proto         picks the SECOND subprotocol offered, sends "protocol P"
//   /close4001     sends "hi", then closes with 4001 "bye"
//   /close1000     sends "bye", then closes with 1000
//   /bad-utf8      sends a text frame with invalid UTF-8 (client: 1007)
//   /headers       sends the request headers as one JSON text message
//   /silent        accepts and says nothing
//   /403 /301      non-101 answers
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');
const WebSocket = require('ws');

const args = process.argv.slice(2);
const opt = { port: 0, tag: 'A', tls: null, lifetime: 60 };
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') opt.port = Number(args[++i]);
  else if (args[i] === '--tag') opt.tag = args[++i];
  else if (args[i] === '--tls') opt.tls = { dir: args[++i], cert: args[++i] };
  else if (args[i] === '--lifetime') opt.lifetime = Number(args[++i]);
  else {
    console.error(`ws_server: unknown argument ${args[i]}`);
    process.exit(2);
  }
}
setTimeout(() => process.exit(0), opt.lifetime * 1000).unref();

const log = (line) => process.stdout.write(line + '\n');

const plain = new WebSocket.Server({ noServer: true, perMessageDeflate: false });
const deflate = new WebSocket.Server({ noServer: true, perMessageDeflate: true });
const second = new WebSocket.Server({
  noServer: true,
  handleProtocols: (protocols) => [...protocols][1] || false,
});

function reply(socket, status, text, extra = '') {
  socket.end(`HTTP/1.1 ${status} ${text}\r\n${extra}Content-Length: 0\r\n` +
             'Connection: close\r\n\r\n');
}

const server = opt.tls
  ? https.createServer({
      cert: fs.readFileSync(path.join(opt.tls.dir, opt.tls.cert)),
      key: fs.readFileSync(path.join(opt.tls.dir, 'key.pem')),
    })
  : http.createServer();
server.on('request', (req, res) => res.writeHead(404).end());
server.on('tlsClientError', (err) => log(`tls-error ${err.code || err.message}`));

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (p === '/403') return reply(socket, 403, 'Forbidden');
  if (p === '/301')
    return reply(socket, 301, 'Moved Permanently', 'Location: ws://127.0.0.1:1/elsewhere\r\n');
  let wss = plain;
  if (p === '/deflate') {
    const offer = req.headers['sec-websocket-extensions'] || '';
    if (!offer.includes('permessage-deflate')) {
      log('deflate refused: no offer');
      return reply(socket, 400, 'Bad Request');
    }
    wss = deflate;
  } else if (p === '/proto') {
    wss = second;
  }
  wss.handleUpgrade(req, socket, head, (ws, req2) => {
    connection(ws, req2, url);
  });
});

// The extensions header of our 101 is not kept by ws; rebuild it from the
// negotiated parameters.
function extensions(ws) {
  const pmd = ws._extensions && ws._extensions['permessage-deflate'];
  if (!pmd) return '-';
  const params = pmd.params || {};
  return ['permessage-deflate', ...Object.entries(params).map(([k, v]) =>
    (v === true ? k : `${k}=${v}`))].join('; ');
}

function connection(ws, req, url) {
  const p = url.pathname;
  const n = Number(url.searchParams.get('n') || '3');
  log(`open ${p} proto=${ws.protocol || '-'} ext=${extensions(ws)}`);
  ws.on('close', (code, reason) => log(`close ${p} ${code} '${reason}'`));
  ws.on('error', (e) => log(`error ${p} ${e.message}`));
  switch (p) {
    case '/echo':
      ws.on('message', (m, binary) => {
        log(`message ${p} ${binary ? 'binary' : 'text'} ${m.length}`);
        ws.send(m, { binary });
      });
      break;
    case '/deflate':
      log(`deflate ${extensions(ws)}`);
      ws.on('message', (m, binary) => {
        log(`message ${p} ${binary ? 'binary' : 'text'} ${m.length}`);
        ws.send(m, { binary });
      });
      break;
    case '/send':
      for (let i = 1; i <= n; i++) ws.send(`msg ${i}`);
      break;
    case '/greet':
      ws.send(`hello from ${opt.tag}`);
      break;
    case '/binary':
      ws.send(Buffer.from([0x00, 0x01, 0xfe, 0xff]), { binary: true });
      break;
    case '/echo-check':
      echoCheck(ws, n);
      break;
    case '/proto':
      ws.send(`protocol ${ws.protocol || '-'}`);
      break;
    case '/close4001':
      ws.send('hi');
      ws.close(4001, 'bye');
      break;
    case '/close1000':
      ws.send('bye');
      ws.close(1000, 'done');
      break;
    case '/bad-utf8':
      // A masked-free server text frame whose payload is not UTF-8.
      ws._socket.write(Buffer.from([0x81, 0x02, 0xc3, 0x28]));
      break;
    case '/headers':
      ws.send(JSON.stringify(req.headers));
      break;
    case '/silent':
      break;
    default:
      ws.close(1008, 'no such path');
  }
}

function echoCheck(ws, n) {
  const sent = [];
  for (let i = 0; i < n; i++) {
    const binary = i % 2 === 1;
    const data = binary ? Buffer.from([i, 0xff, 0x00, i]) : Buffer.from(`text ${i} \u00e9`);
    sent.push({ binary, data });
    ws.send(data, { binary });
  }
  let got = 0;
  ws.on('message', (m, binary) => {
    const want = sent[got++];
    if (!want || want.binary !== binary || !want.data.equals(Buffer.from(m))) {
      log(`echo-check FAIL message ${got}: binary=${binary} ${Buffer.from(m).toString('hex')}`);
      ws.close(1011, 'mismatch');
      return;
    }
    if (got === n) {
      log(`echo-check ok ${n}`);
      ws.close(1000, 'checked');
    }
  });
}

server.listen(opt.port, '127.0.0.1', () => log(String(server.address().port)));
