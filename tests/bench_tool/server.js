// Node `ws` servers for tests/scripts/bench_tool.sh. Prints its port on the
// first line of stdout, runs until SIGTERM.
//   node server.js echo         echo every message at once
//   node server.js delay MS     echo every message after MS milliseconds
//   node server.js drop N       echo, except the Nth message of each
//                               connection, which is never answered
//   node server.js correlate    parse {"id":X,...}; answer {"id":X,"ok":true}
//                               after a random 0..20 ms delay (so replies
//                               overtake each other), and send one
//                               {"id":"nobody"} per connection (unmatched)
'use strict';
const path = require('path');
const { WebSocketServer } = require(path.join(__dirname, '../../node_modules/ws'));

const mode = process.argv[2] || 'echo';
const delay = Number(process.argv[3] || 0);
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
wss.on('listening', () => console.log(wss.address().port));
wss.on('connection', (ws) => {
  let first = true, count = 0;
  ws.on('message', (data, isBinary) => {
    if (mode === 'echo') return ws.send(data, { binary: isBinary });
    if (mode === 'drop') return ++count === delay ? undefined : ws.send(data, { binary: isBinary });
    if (mode === 'delay') return setTimeout(() => ws.send(data, { binary: isBinary }), delay);
    let req;
    try { req = JSON.parse(data.toString()); } catch { return ws.close(1007); }
    if (first) { first = false; ws.send(JSON.stringify({ id: 'nobody' })); }
    setTimeout(() => {
      if (ws.readyState === 1) ws.send(JSON.stringify({ id: req.id, ok: true, seq: req.seq }));
    }, Math.floor(Math.random() * 20));
  });
});
process.on('SIGTERM', () => { for (const c of wss.clients) c.terminate(); wss.close(() => process.exit(0)); });
