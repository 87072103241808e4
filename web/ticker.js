#!/usr/bin/env node
/**
 * The dashboard's publisher: random-walk prices for a few symbols, POSTed
 * to duplex serve's HTTP API every 200-500 ms as one message on the topic
 * "ticker":
 *
 *   {"ts": 1718000000000, "quotes": [{"symbol": "DPX", "name": "Duplex Corp",
 *                                     "price": 101.25, "open": 100}, ...]}
 *
 * A Node 20 script without dependencies (global fetch). It lives in web/
 * next to the page it feeds; in a browser it does nothing.
 *
 *   node web/ticker.js [--url http://127.0.0.1:8080/api/publish] [--topic ticker]
 *                      [--count N] [--min-ms 200] [--max-ms 500] [--quiet]
 *
 * Env: DUPLEX_API_KEY (sent as "Authorization: Bearer ..." when set),
 * DUPLEX_URL (the default for --url). Runs until killed (SIGINT/SIGTERM:
 * exit 0), or until N messages were published (--count). While the server
 * is down it keeps trying at the same pace and says so once per outage.
 * Exit status: 0 done or stopped, 2 usage error.
 */
/* global process */
'use strict';

const SYMBOLS = [
  { symbol: 'DPX', name: 'Duplex Corp', price: 128.4, vol: 0.0018 },
  { symbol: 'EPL', name: 'Epoll Labs', price: 42.15, vol: 0.0026 },
  { symbol: 'TLS', name: 'Handshake Inc', price: 311.9, vol: 0.0012 },
  { symbol: 'ZLB', name: 'Deflate Ltd', price: 17.62, vol: 0.0035 },
  { symbol: 'WSK', name: 'Socket Systems', price: 76.05, vol: 0.0021 },
];

function usage(msg) {
  if (msg) console.error(`ticker: ${msg}`);
  console.error('usage: node web/ticker.js [--url URL] [--topic T] [--count N] [--min-ms MS] [--max-ms MS] [--quiet]');
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    url: process.env.DUPLEX_URL || 'http://127.0.0.1:8080/api/publish',
    topic: 'ticker', count: Infinity, minMs: 200, maxMs: 500, quiet: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    const int = (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) usage(`${a}: not a non-negative integer: ${v}`);
      return n;
    };
    if (a === '--url') o.url = val();
    else if (a === '--topic') o.topic = val();
    else if (a === '--count' || a === '-n') o.count = int(val());
    else if (a === '--min-ms') o.minMs = int(val());
    else if (a === '--max-ms') o.maxMs = int(val());
    else if (a === '--quiet' || a === '-q') o.quiet = true;
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown argument: ${a}`);
  }
  if (!/^[A-Za-z0-9_.:/-]{1,128}$/.test(o.topic)) usage(`bad topic: ${o.topic}`);
  if (o.maxMs < o.minMs) usage('--max-ms is below --min-ms');
  return o;
}

/** A step of a mean-reverting random walk (prices stay near their start). */
function step(s) {
  const shock = (Math.random() * 2 - 1) * s.vol * Math.sqrt(3); // sd = vol
  const pull = ((s.open - s.price) / s.open) * 0.01;
  s.price = Math.max(0.01, s.price * (1 + shock + pull));
  return Math.round(s.price * 100) / 100;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const headers = { 'Content-Type': 'application/json' };
  if (process.env.DUPLEX_API_KEY) headers.Authorization = `Bearer ${process.env.DUPLEX_API_KEY}`;
  const state = SYMBOLS.map((s) => ({ ...s, open: s.price }));
  let stopping = false;
  let wake = null;
  const stop = () => {
    stopping = true;
    if (wake) wake();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const sleep = (ms) => new Promise((r) => {
    const t = setTimeout(r, ms);
    wake = () => {
      clearTimeout(t);
      r();
    };
  });

  let sent = 0;
  let down = false;
  let lastError = null;
  if (!o.quiet) console.error(`ticker: publishing ${state.map((s) => s.symbol).join(' ')} to ${o.topic} at ${o.url}`);
  while (!stopping && sent < o.count) {
    const data = {
      ts: Date.now(),
      quotes: state.map((s) => ({ symbol: s.symbol, name: s.name, price: step(s), open: s.open })),
    };
    try {
      const r = await fetch(o.url, {
        method: 'POST', headers, body: JSON.stringify({ topic: o.topic, data }),
        signal: AbortSignal.timeout(5000),
      });
      const text = await r.text();
      if (!r.ok) {
        const why = r.status === 401
          ? '401 Unauthorized: set DUPLEX_API_KEY to one of the server\'s API keys'
          : `HTTP ${r.status}: ${text.trim().slice(0, 200)}`;
        if (why !== lastError) console.error(`ticker: ${why}`); // once, not every tick
        lastError = why;
      } else {
        lastError = null;
        sent++;
        if (down && !o.quiet) console.error('ticker: the server is back');
        down = false;
      }
    } catch (e) {
      if (!down) console.error(`ticker: cannot publish (${e.cause ? e.cause.code || e.cause.message : e.message}); retrying`);
      down = true;
    }
    if (sent >= o.count) break;
    await sleep(o.minMs + Math.random() * (o.maxMs - o.minMs));
  }
  if (!o.quiet) console.error(`ticker: ${sent} messages published`);
  process.exit(0);
}

if (typeof process !== 'undefined' && process.versions && process.versions.node) main();
