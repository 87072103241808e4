// A Node `ws` server for the duplex probe/record tests
// (tests/scripts/probe_tool.sh, record_tool.sh). Binds 127.0.0.1 only,
// prints its port on the first stdout line, then one log line per event;
// exits by itself after --lifetime seconds (default 60).
//
//   node server.js [--port N] [--variant A|B] [--lifetime S]
//
// Every path behaves the same:
//   text "ping"            -> "pong" (variant B: "PONG")
//   JSON {"op":"hello"}    -> {"op":"welcome","session":"s-<random>",
//                              "server":{"name":"duplex-test","v":1},
//                              "items":[1,2,3]}   (B: "v":2)
//   JSON {"op":"auth","session":S} -> {"op":"authed","session":S,"ok":true}
//   JSON {"op":"noise","n":N} -> N {"op":"tick","i":i} messages, then
//                              {"op":"done"}
//   text "delay MS"        -> "late" after MS milliseconds
//   text "close CODE"      -> closes with CODE
//   binary                 -> the same bytes back
//   anything else          -> echoed (text)
'use strict';

const WebSocket = require('ws');

const args = process.argv.slice(2);
const opt = { port: 0, variant: 'A', lifetime: 60 };
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') opt.port = Number(args[++i]);
  else if (args[i] === '--variant') opt.variant = args[++i];
  else if (args[i] === '--lifetime') opt.lifetime = Number(args[++i]);
  else {
    console.error(`server.js: unknown argument ${args[i]}`);
    process.exit(2);
  }
}
setTimeout(() => process.exit(0), opt.lifetime * 1000).unref();
const log = (line) => process.stdout.write(line + '\n');
const B = opt.variant === 'B';

const wss = new WebSocket.Server({ host: '127.0.0.1', port: opt.port });
wss.on('listening', () => log(String(wss.address().port)));
wss.on('connection', (ws, req) => {
  log(`open ${req.url} proto=${ws.protocol || '-'} auth=${req.headers['x-token'] || '-'}`);
  ws.on('close', (code) => log(`close ${code}`));
  ws.on('message', (data, isBinary) => {
    if (isBinary) return ws.send(data, { binary: true });
    const text = data.toString();
    log(`msg ${text}`);
    if (text === 'ping') return ws.send(B ? 'PONG' : 'pong');
    let m = text.match(/^delay (\d+)$/);
    if (m) return setTimeout(() => ws.send('late'), Number(m[1]));
    m = text.match(/^close (\d+)$/);
    if (m) return ws.close(Number(m[1]), 'asked');
    let j = null;
    try { j = JSON.parse(text); } catch (e) { /* not JSON */ }
    if (j && j.op === 'hello') {
      const session = 's-' + Math.random().toString(16).slice(2, 10);
      return ws.send(JSON.stringify({ op: 'welcome', session,
        server: { name: 'duplex-test', v: B ? 2 : 1 }, items: [1, 2, 3] }));
    }
    if (j && j.op === 'auth')
      return ws.send(JSON.stringify({ op: 'authed', session: j.session, ok: true }));
    if (j && j.op === 'noise') {
      for (let i = 0; i < j.n; i++) ws.send(JSON.stringify({ op: 'tick', i }));
      return ws.send(JSON.stringify({ op: 'done' }));
    }
    ws.send(text);
  });
});
