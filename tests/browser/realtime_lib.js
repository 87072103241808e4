// Shared by the end-to-end browser tests of the demo pages against the real
// channel server (tests/browser/realtime_*.js, run by
// tests/scripts/browser_realtime.sh): the Chromium launcher, TAP-style
// checks, page helpers, the HTTP API and a TCP proxy the tests can sever.
//
// Hooks used on the pages (documented in web/chat.js and web/dashboard.js):
// #status[data-state], #messages li.msg[data-seq] (.msg-name .msg-text),
// li.gap-notice[data-reason][data-from][data-to], li.system.resume[data-missed],
// #presence li.member[data-id] (.member-name), #presence-count,
// #chart-line[data-points], #cards .symbol[data-symbol], window.chat and
// window.dashboard.
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { chromium } = require('playwright-core');

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
  '--no-proxy-server']; // 127.0.0.1 only: never through a proxy

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** TAP-ish checks; `finish()` prints the verdict and exits 0/1. */
function tester(name) {
  let failed = 0;
  let n = 0;
  const t = {
    check(label, ok, detail) {
      n++;
      if (ok) console.log(`ok ${n} - ${name}: ${label}`);
      else {
        failed++;
        console.log(`not ok ${n} - ${name}: ${label}` +
          (detail !== undefined ? `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}` : ''));
      }
      return !!ok;
    },
    /** A fatal error: counts as a failed check. */
    error(e) {
      n++;
      failed++;
      console.log(`not ok ${n} - ${name}: ${e && e.stack ? e.stack : e}`);
    },
    get failed() { return failed; },
    finish() {
      console.log(`${name}: ${failed ? `FAILED (${failed} of ${n})` : `passed (${n} checks)`}`);
      process.exit(failed ? 1 : 0);
    },
  };
  return t;
}

/** Exits 1 if the test is still running after `ms` (the shell also bounds it). */
function watchdog(name, ms) {
  setTimeout(() => {
    console.log(`not ok - ${name}: watchdog: still running after ${ms / 1000} s`);
    process.exit(1);
  }, ms).unref();
}

async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, timeout: 30000, args: ARGS });
}

/**
 * A page in a context of its own (a separate user: its own storage), with
 * script errors collected in `errors`. Chromium logs every refused
 * WebSocket handshake as a console error; the tests cause some on purpose.
 */
async function openPage(browser, url, errors, label) {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => errors.push(`${label}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket connection to .* failed|ERR_CONNECTION_(REFUSED|RESET|CLOSED)/.test(m.text()))
      errors.push(`${label}: ${m.text()}`);
  });
  const res = await page.goto(url, { timeout: 15000 });
  if (!res || res.status() !== 200) throw new Error(`${url}: HTTP ${res ? res.status() : 'no response'}`);
  return page;
}

/** Waits until the page's status badge says "connected" (client status "open"). */
async function waitConnected(page, timeout = 10000) {
  await page.waitForFunction(() => document.getElementById('status').dataset.state === 'connected',
    null, { timeout });
}

/** Screenshot into outDir (the page brought to front: background tabs skip transitions). */
async function shot(page, outDir, name) {
  await page.bringToFront();
  await sleep(300);
  await page.screenshot({ path: path.join(outDir, name) });
}

/** The confirmed chat messages the page shows: [{seq, name, text, mine}]. */
function chatMessages(page) {
  return page.locator('#messages li.msg[data-seq]').evaluateAll((els) => els.map((e) => ({
    seq: Number(e.dataset.seq),
    name: e.querySelector('.msg-name').textContent,
    text: e.querySelector('.msg-text').textContent,
    mine: e.classList.contains('mine'),
  })));
}

/** The presence list as shown: [{id, name, you}] and the count pill. */
async function presenceList(page) {
  return page.evaluate(() => ({
    members: Array.from(document.querySelectorAll('#presence li.member'), (li) => ({
      id: li.dataset.id,
      name: li.querySelector('.member-name').textContent,
      you: !!li.querySelector('.you'),
    })),
    count: document.getElementById('presence-count').textContent,
  }));
}

/** Waits until the presence list shows exactly these names (any order). */
async function waitPresence(page, names, timeout = 10000) {
  const want = [...names].sort().join('\n');
  await page.waitForFunction((w) => Array.from(document.querySelectorAll('#presence li.member .member-name'),
    (e) => e.textContent).sort().join('\n') === w, want, { timeout }).catch(() => {});
  return presenceList(page);
}

async function api(base, method, p, body) {
  const r = await fetch(base + p, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
  return { status: r.status, json, text };
}

/** The /api/topics entry of `topic` (or null). */
async function topicInfo(base, topic) {
  const r = await api(base, 'GET', '/api/topics');
  return ((r.json && r.json.topics) || []).find((t) => t.topic === topic) || null;
}

/** Polls `fn` until it returns a truthy value or `timeout` ms pass. */
async function until(fn, timeout, every = 100) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v || Date.now() >= end) return v;
    await sleep(every);
  }
}

/**
 * A TCP proxy on 127.0.0.1 in front of the server: the page loads through
 * it, so its WebSocket goes through it too (the Origin and the Host are both
 * the proxy's, so the same-origin check passes). sever() destroys every
 * connection and refuses new ones (accepted, then reset) until restore().
 */
async function startProxy(targetPort) {
  const conns = new Set();
  let refusing = false;
  let accepted = 0;
  const server = net.createServer((client) => {
    if (refusing) {
      client.resetAndDestroy ? client.resetAndDestroy() : client.destroy();
      return;
    }
    accepted++;
    const up = net.connect(targetPort, '127.0.0.1');
    const pair = { client, up };
    conns.add(pair);
    const kill = () => {
      conns.delete(pair);
      client.destroy();
      up.destroy();
    };
    client.on('error', kill).on('close', kill);
    up.on('error', kill).on('close', kill);
    client.pipe(up);
    up.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    get open() { return conns.size; },
    get accepted() { return accepted; },
    sever() {
      refusing = true;
      const n = conns.size;
      for (const { client, up } of [...conns]) {
        client.resetAndDestroy ? client.resetAndDestroy() : client.destroy();
        up.destroy();
      }
      return n;
    },
    restore() { refusing = false; },
    close() {
      refusing = true;
      for (const { client, up } of [...conns]) { client.destroy(); up.destroy(); }
      return new Promise((r) => server.close(() => r()));
    },
  };
}

function mkOut(outDir) {
  fs.mkdirSync(outDir, { recursive: true });
}

module.exports = {
  sleep, tester, watchdog, launch, openPage, waitConnected, shot, chatMessages,
  presenceList, waitPresence, api, topicInfo, until, startProxy, mkOut,
};
