// sio_broadcast — a Socket.IO pub/sub server, the comparison peer for
// bench/run_fanout.sh: rooms do the topic bookkeeping, as Socket.IO
// applications usually do. One process, WebSocket transport only (no
// long-polling, no HTTP upgrade dance), no permessage-deflate (the
// engine.io default), the default in-memory adapter. Socket.IO 4.7+ builds
// a broadcast's WebSocket frame once and hands it to every socket.
//
// Events (Socket.IO encoding "42[name,arg]"; the bench speaks it directly):
//   "subscribe" topic          joins room topic, emits "subscribed" topic
//   "publish" {topic, data}    S = ++seq[topic];
//                              io.to(topic).emit("message", {topic, seq: S, data});
//                              emits "published" {topic, seq: S} to the sender
//
// Heartbeat: the default 25 s interval, but 60 s (not the default 20 s) for
// the pong to come back. Past 20 s, an overloaded server (one publish is a
// synchronous loop over every subscriber, and the 100/s phase keeps it
// busy for tens of seconds on a busy machine) closes subscribers whose
// pong sits unread in its own socket buffer ("ping timeout", close 1005 on
// the wire), and the run measures that instead of the fan-out.
// Disconnections for any other reason than the load tool leaving ("transport
// close") are counted by reason and printed on exit.
//
// Usage: node sio_broadcast.js PORT   (binds 127.0.0.1; SIGINT/SIGTERM exit 0)
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('usage: node sio_broadcast.js PORT');
  process.exit(2);
}

const seqs = new Map(); // topic -> last seq
const io = new Server({
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
  pingInterval: 25000,
  pingTimeout: 60000,
});
const disconnects = new Map(); // reason -> count
io.on('connection', (socket) => {
  socket.on('disconnect', (reason) => {
    if (reason !== 'transport close')
      disconnects.set(reason, (disconnects.get(reason) || 0) + 1);
  });
  socket.on('subscribe', (topic) => {
    if (typeof topic !== 'string') return;
    socket.join(topic);
    socket.emit('subscribed', topic);
  });
  socket.on('publish', (req) => {
    if (!req || typeof req.topic !== 'string') return;
    const seq = (seqs.get(req.topic) || 0) + 1;
    seqs.set(req.topic, seq);
    io.to(req.topic).emit('message', { topic: req.topic, seq, data: req.data });
    socket.emit('published', { topic: req.topic, seq });
  });
});
const httpServer = http.createServer();
io.attach(httpServer);
httpServer.listen(port, '127.0.0.1', () => {
  console.error(`sio_broadcast: listening on 127.0.0.1:${httpServer.address().port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (disconnects.size)
      console.error('sio_broadcast: disconnections:', Object.fromEntries(disconnects));
    process.exit(0);
  });
}
