// ws_broadcast — a Node `ws` pub/sub server, the comparison peer for
// bench/run_fanout.sh. It does the job duplex serve does on /ws, in the
// way a typical ws application does it: one process (one JavaScript
// thread), no permessage-deflate, a Map from topic to a Set of sockets.
//
//   {"op":"subscribe","topic":T}  adds the socket to T's set and answers
//                                 {"op":"subscribed","topic":T,"seq":S}
//   {"op":"publish","topic":T,"data":D}
//                                 S = ++seq[T]; sends
//                                 {"op":"message","topic":T,"seq":S,"data":D}
//                                 to every subscriber of T, then answers the
//                                 publisher {"op":"published","topic":T,"seq":S}
//
// The message is serialized once (JSON.stringify, then one Buffer) and sent
// to each subscriber in one of two ways, chosen by the second argument:
//
//   send   (default) ws.send(buffer) per subscriber: what ws's README and
//          most applications do. ws builds a 2-byte frame header per socket
//          and writes header + the shared payload (cork/uncork: one writev).
//   frame  the whole frame is built once with WebSocket.Sender.frame() and
//          handed to each socket's sender (ws._sender.sendFrame), as the
//          ws maintainers suggest for broadcasts (websockets/ws#617) and as
//          Socket.IO 4.7+ does. Uses an undocumented member; valid only
//          without permessage-deflate, which is off here.
//
// Usage: node ws_broadcast.js PORT [send|frame]
//        (binds 127.0.0.1, any path; SIGINT/SIGTERM exit 0)
'use strict';
const WebSocket = require('ws');
const { WebSocketServer } = WebSocket;

const port = Number(process.argv[2]);
const mode = process.argv[3] || 'send';
if (!Number.isInteger(port) || port < 0 || port > 65535 ||
    (mode !== 'send' && mode !== 'frame')) {
  console.error('usage: node ws_broadcast.js PORT [send|frame]');
  process.exit(2);
}

const topics = new Map(); // topic -> { seq, subs: Set<WebSocket> }

function topicOf(name) {
  let t = topics.get(name);
  if (!t) {
    t = { seq: 0, subs: new Set() };
    topics.set(name, t);
  }
  return t;
}

function broadcast(t, msg) {
  const payload = Buffer.from(JSON.stringify(msg));
  if (mode === 'frame') {
    const frame = WebSocket.Sender.frame(payload, {
      fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false,
    });
    for (const ws of t.subs) {
      if (ws.readyState === WebSocket.OPEN) ws._sender.sendFrame(frame);
    }
  } else {
    for (const ws of t.subs) {
      if (ws.readyState === WebSocket.OPEN) ws.send(payload, { binary: false });
    }
  }
}

function onMessage(ws, subs, raw) {
  let req;
  try {
    req = JSON.parse(raw);
  } catch {
    ws.send('{"op":"error","code":"bad_json"}');
    return;
  }
  if (typeof req !== 'object' || req === null || typeof req.topic !== 'string') {
    ws.send('{"op":"error","code":"bad_request"}');
    return;
  }
  const t = topicOf(req.topic);
  if (req.op === 'subscribe') {
    t.subs.add(ws);
    subs.add(t);
    ws.send(JSON.stringify({ op: 'subscribed', topic: req.topic, seq: t.seq }));
  } else if (req.op === 'publish') {
    const seq = ++t.seq;
    broadcast(t, { op: 'message', topic: req.topic, seq, data: req.data });
    ws.send(JSON.stringify({ op: 'published', topic: req.topic, seq }));
  } else {
    ws.send('{"op":"error","code":"unknown_op"}');
  }
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  clientTracking: false, // the topic sets are the only registry needed
});
wss.on('connection', (ws) => {
  const subs = new Set(); // topics of this socket, to leave them on close
  ws.on('message', (data, isBinary) => {
    if (isBinary) ws.send('{"op":"error","code":"bad_request"}');
    else onMessage(ws, subs, data.toString());
  });
  ws.on('close', () => {
    for (const t of subs) t.subs.delete(ws);
  });
  ws.on('error', () => {});
});
wss.on('listening', () => {
  console.error(`ws_broadcast (${mode}): listening on 127.0.0.1:${wss.address().port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
