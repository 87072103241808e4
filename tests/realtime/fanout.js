// Fan-out across the server's loops: 1,000 subscribers on one topic of a
// `duplex serve --threads 4` server, 1,000 messages published: every
// subscriber receives all 1,000, in order, each exactly once, with its
// data (docs/protocol.md section 5: "Per topic and connection, seqs are
// strictly increasing; without a gap in between they are also
// consecutive"). Node's ws keeps 1,000 connections cheap.
//
// usage: node fanout.js PORT [SUBSCRIBERS] [MESSAGES]
'use strict';
const WebSocket = require('ws');

const port = Number(process.argv[2]);
const NSUB = Number(process.argv[3] || 1000);
const NMSG = Number(process.argv[4] || 1000);
const TOPIC = 'fan:out';
const url = `ws://127.0.0.1:${port}/ws`;
let passed = 0;
const failed = [];

function ok(cond, what, detail) {
  if (cond) {
    passed++;
    console.log(`  ok   ${what}`);
  } else {
    failed.push(what);
    console.log(`  FAIL ${what}${detail ? `: ${detail}` : ''}`);
  }
  return cond;
}

function done() {
  console.log(`fanout: ${passed} passed, ${failed.length} failed`);
  process.exit(failed.length || !passed ? 1 : 0);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// One subscriber: resolves once subscribed; then counts what arrives.
function subscriber(i) {
  return new Promise((resolve, reject) => {
    const s = { i, next: 1, got: 0, bad: [], closed: null, ws: null };
    const ws = new WebSocket(url, ['duplex.v1'], { perMessageDeflate: false });
    s.ws = ws;
    const timer = setTimeout(() => reject(new Error(`sub ${i}: no subscribed`)), 20000);
    ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', topic: TOPIC, id: i })));
    ws.on('message', (raw) => {
      const m = JSON.parse(raw);
      if (m.op === 'hello') return;
      if (m.op === 'subscribed') {
        clearTimeout(timer);
        if (m.seq !== 0) s.bad.push(`subscribed at seq ${m.seq}`);
        resolve(s);
        return;
      }
      if (m.op !== 'message' || m.topic !== TOPIC) {
        s.bad.push(`unexpected ${raw}`.slice(0, 120));
        return;
      }
      if (m.seq !== s.next || !m.data || m.data.i !== m.seq - 1)
        s.bad.push(`seq ${m.seq} (want ${s.next}) data ${JSON.stringify(m.data)}`);
      s.next = m.seq + 1;
      s.got++;
    });
    ws.on('close', (code) => {
      s.closed = code;
    });
    ws.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function publisher() {
  const ws = new WebSocket(url, ['duplex.v1'], { perMessageDeflate: false });
  await new Promise((res, rej) => {
    ws.on('open', res);
    ws.on('error', rej);
  });
  const acks = [];
  const allAcked = new Promise((res) => {
    ws.on('message', (raw) => {
      const m = JSON.parse(raw);
      if (m.op === 'hello') return;
      acks.push(m);
      if (acks.length === NMSG) res();
    });
  });
  for (let i = 0; i < NMSG; i++)
    ws.send(JSON.stringify({ op: 'publish', topic: TOPIC, data: { i }, id: i }));
  return { ws, acks, allAcked };
}

async function main() {
  const t0 = Date.now();
  const subs = [];
  // In batches: a burst of 1,000 SYNs could overflow the listen backlog.
  for (let b = 0; b < NSUB; b += 100) {
    const batch = [];
    for (let i = b; i < Math.min(NSUB, b + 100); i++) batch.push(subscriber(i));
    subs.push(...(await Promise.all(batch)));
  }
  const tSub = Date.now();
  ok(subs.length === NSUB, `${NSUB} subscribers connected and subscribed in ${tSub - t0} ms`);

  const pub = await publisher();
  const deadline = Date.now() + 45000;
  let ackDone = false;
  pub.allAcked.then(() => {
    ackDone = true;
  });
  while (Date.now() < deadline && (!ackDone || subs.some((s) => s.got < NMSG && s.closed === null)))
    await sleep(50);
  const tAll = Date.now();
  await sleep(300); // anything more would be a duplicate
  const acksOk =
    pub.acks.length === NMSG &&
    pub.acks.every((a, k) => a.op === 'published' && a.id === k && a.seq === k + 1);
  ok(acksOk, `the publisher's ${NMSG} pipelined publishes acked in order, seq 1..${NMSG}`,
     JSON.stringify(pub.acks.slice(0, 3)));
  const short = subs.filter((s) => s.got !== NMSG);
  const wrong = subs.filter((s) => s.bad.length);
  const closed = subs.filter((s) => s.closed !== null);
  ok(short.length === 0,
     `every subscriber received exactly ${NMSG} messages (${tAll - tSub} ms for ${NSUB * NMSG} deliveries)`,
     `${short.length} did not, e.g. ${short.slice(0, 5).map((s) => `#${s.i}: ${s.got}`).join(', ')}`);
  ok(wrong.length === 0, 'every subscriber got seq 1..N in order, each with its data, nothing else',
     `${wrong.length} wrong, e.g. #${wrong[0] && wrong[0].i}: ${wrong[0] && wrong[0].bad.slice(0, 3)}`);
  ok(closed.length === 0, 'no subscriber was disconnected',
     closed.slice(0, 5).map((s) => `#${s.i}: ${s.closed}`).join(', '));
  for (const s of subs) s.ws.close(1000);
  pub.ws.close(1000);
  await sleep(200);
  done();
}

main().catch((e) => {
  ok(false, 'fan-out run', e.stack || String(e));
  done();
});
