// The demo pages (web/) in headless Chromium against the protocol mock
// (tests/web/mock_server.js) and web/ticker.js: a development check that
// drives the pages through a session, checks what they show and saves
// screenshots to look at. (The end-to-end tests against `duplex serve`
// itself live under tests/browser/.)
//
//   node tests/web/pages_mock.js OUT_DIR
//
// Story: the landing page; the dashboard fills from the ticker; two chat
// users (Alice, Bob) talk and see each other in the presence list; the
// network drops (the mock refuses reconnections for a while), Carol writes
// 3 messages, then 30 more that fall out of a 5-message history; the pages
// show "reconnecting in Ns", then the resumed messages and a gap notice; a
// message Alice typed while offline is delivered after the reconnection.
// Exits 1 if a check failed.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { chromium } = require('playwright-core');
const { createMockServer } = require('./mock_server.js');

const outDir = process.argv[2];
if (!outDir) {
  console.error('usage: node pages_mock.js OUT_DIR');
  process.exit(2);
}
const root = path.resolve(__dirname, '../../web');
setTimeout(() => {
  console.log('not ok - watchdog: still running after 90 s');
  process.exit(1);
}, 90000).unref();

let failed = 0;
const check = (name, ok, detail) => {
  if (ok) console.log(`ok - ${name}`);
  else {
    failed++;
    console.log(`not ok - ${name}${detail !== undefined ? ': ' + JSON.stringify(detail) : ''}`);
  }
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const m = await createMockServer({ root, history: 500 });
  const base = `http://127.0.0.1:${m.port}`;
  const ticker = spawn(process.execPath, [path.join(root, 'ticker.js'), '--url', `${base}/api/publish`,
    '--min-ms', '150', '--max-ms', '300', '--quiet'], { stdio: ['ignore', 'inherit', 'inherit'] });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'duplex-pages-'));
  let ctx = null;
  const errors = [];
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      viewport: { width: 1280, height: 800 },
      timeout: 30000,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--disable-background-networking', '--disable-component-update', '--disable-sync',
             '--no-proxy-server'],
    });
    const open = async (url) => {
      const p = await ctx.newPage();
      p.on('pageerror', (e) => errors.push(`${url}: ${e.message}`));
      p.on('console', (msg) => {
        // Chromium logs each refused handshake; this story refuses some.
        if (msg.type() === 'error' && !/WebSocket connection to .* failed/.test(msg.text()))
          errors.push(`${url}: ${msg.text()}`);
      });
      await p.goto(base + url);
      return p;
    };
    // In front: a background tab does not run CSS transitions.
    const shot = async (p, name) => {
      await p.bringToFront();
      await sleep(400);
      await p.screenshot({ path: path.join(outDir, name) });
    };

    // ---- landing ----
    const home = await open('/');
    check('index: links to both demos', await home.locator('#demo-chat[href="chat.html"]').count() === 1 &&
      await home.locator('#demo-dashboard[href="dashboard.html"]').count() === 1);
    await shot(home, 'index.png');
    await home.emulateMedia({ colorScheme: 'dark' });
    await shot(home, 'index-dark.png');

    // ---- dashboard ----
    const dash = await open('/dashboard.html');
    await dash.waitForFunction(() => Number(document.getElementById('chart-line').dataset.points) >= 12, null, { timeout: 15000 });
    const cards = await dash.locator('#cards .symbol').count();
    check('dashboard: a card per symbol', cards === 5, cards);
    check('dashboard: connected', await dash.getAttribute('#status', 'data-state') === 'connected');
    const p1 = Number(await dash.getAttribute('#chart-line', 'data-points'));
    await sleep(1200);
    const p2 = Number(await dash.getAttribute('#chart-line', 'data-points'));
    check('dashboard: the chart moves', p2 > p1, { p1, p2 });
    await shot(dash, 'dashboard.png');

    // ---- chat ----
    const join = await open('/chat.html');
    await shot(join, 'chat-join.png');
    await join.close();
    const alice = await open('/chat.html?room=lobby&name=Alice');
    const bob = await open('/chat.html?room=lobby&name=Bob');
    for (const p of [alice, bob]) {
      await p.waitForFunction(() => document.getElementById('status').dataset.state === 'connected', null, { timeout: 10000 });
    }
    await alice.waitForFunction(() => document.querySelectorAll('#presence li.member').length === 2, null, { timeout: 5000 });
    const names = await alice.locator('#presence .member-name').allTextContents();
    check('chat: presence lists both members by name', names.sort().join() === 'Alice,Bob', names);
    const say = async (p, text) => {
      await p.fill('#text', text);
      await p.press('#text', 'Enter');
    };
    await say(alice, 'Hi Bob! Is the build green?');
    await sleep(150);
    await say(bob, 'Morning Alice — all green, 412 tests passed.');
    await sleep(150);
    await say(alice, 'Great. Trying the dashboard next.');
    await bob.waitForFunction(() => document.querySelectorAll('#messages li.msg[data-seq]').length === 3, null, { timeout: 5000 });
    const bobSees = await bob.locator('#messages li.msg .msg-text').allTextContents();
    check('chat: both see the 3 messages in order', bobSees.length === 3 && bobSees[0].startsWith('Hi Bob'), bobSees);
    await shot(alice, 'chat.png');

    // ---- the network drops ----
    m.refuse(true);
    m.dropAll();
    await alice.waitForFunction(() => /reconnecting/.test(document.getElementById('status').dataset.state), null, { timeout: 5000 });
    await dash.waitForFunction(() => document.getElementById('status').dataset.state !== 'connected', null, { timeout: 5000 });
    for (const t of ['Anyone around?', 'I pushed the fix for the close handshake.', 'Ping me when you are back.'])
      m.publish('chat:lobby', { type: 'msg', mid: `carol-${t.length}`, cid: 'carol', name: 'Carol', text: t, ts: Date.now() });
    await say(alice, 'Typed while offline: this one waits in the queue');
    const pendingState = await alice.locator('#messages li.msg.pending .msg-state').textContent();
    check('chat: a message typed offline is shown as queued', /queued/.test(pendingState), pendingState);
    const counting = await alice.waitForFunction(() => /^reconnecting in \d+s$/.test(document.getElementById('status').textContent),
      null, { timeout: 10000 }).then(() => true, () => false);
    check('chat: the badge counts down ("reconnecting in Ns")', counting, await alice.locator('#status').textContent());
    await shot(alice, 'chat-reconnecting.png');

    m.refuse(false);
    await alice.waitForFunction(() => document.getElementById('status').dataset.state === 'connected' &&
      !document.querySelector('#messages li.pending'), null, { timeout: 40000 });
    await sleep(300);
    let texts = await alice.locator('#messages li.msg[data-seq] .msg-text').allTextContents();
    check('chat: the missed messages are resumed, the offline one delivered after them',
      texts.slice(-4).join('|') === ['Anyone around?', 'I pushed the fix for the close handshake.',
        'Ping me when you are back.', 'Typed while offline: this one waits in the queue'].join('|'), texts);
    const resume = await alice.locator('#messages li.system.resume').last().getAttribute('data-missed');
    check('chat: a "reconnected, catching up" line counts the 3 missed', resume === '3', resume);

    // Everyone away again (Bob for good); 30 messages, of which the
    // history keeps 5.
    await bob.close();
    m.refuse(true);
    m.dropAll();
    await alice.waitForFunction(() => document.getElementById('status').dataset.state !== 'connected', null, { timeout: 5000 });
    for (let i = 1; i <= 30; i++)
      m.publish('chat:lobby', { type: 'msg', mid: `bulk-${i}`, cid: 'carol', name: 'Carol', text: `status update ${i}/30`, ts: Date.now() });
    m.setHistory('chat:lobby', 5);
    m.refuse(false);
    await alice.waitForFunction(() => document.querySelector('#messages li.gap-notice'), null, { timeout: 40000 });
    await alice.waitForFunction(() => document.getElementById('status').dataset.state === 'connected', null, { timeout: 5000 });
    await sleep(300);
    const gap = await alice.locator('#messages li.gap-notice').first();
    check('chat: the gap notice says messages were lost', /lost while you were away \(25 messages\)/.test(await gap.textContent()),
      await gap.textContent());
    texts = await alice.locator('#messages li.msg[data-seq] .msg-text').allTextContents();
    check('chat: then the 5 retained ones', texts.slice(-5).join('|') ===
      [26, 27, 28, 29, 30].map((i) => `status update ${i}/30`).join('|'), texts.slice(-6));
    const seqs = (await alice.locator('#messages li.msg[data-seq]').evaluateAll((els) => els.map((e) => Number(e.dataset.seq))));
    check('chat: seqs strictly increasing, no duplicate', seqs.every((s, i) => i === 0 || s > seqs[i - 1]), seqs);
    await alice.evaluate(() => { const l = document.getElementById('messages'); l.scrollTop = l.scrollHeight; });
    await shot(alice, 'chat-resumed.png');
    await alice.emulateMedia({ colorScheme: 'dark' });
    await shot(alice, 'chat-dark.png');

    await dash.waitForFunction(() => document.getElementById('status').dataset.state === 'connected', null, { timeout: 40000 });
    await sleep(1500);
    await shot(dash, 'dashboard-resumed.png');
    await dash.emulateMedia({ colorScheme: 'dark' });
    await shot(dash, 'dashboard-dark.png');

    // ---- server restart: 1012, new epoch ----
    m.restart({ newEpoch: true });
    await dash.waitForFunction(() => document.querySelector('#gaps li.gap-notice[data-reason="epoch"]'), null, { timeout: 15000 });
    check('dashboard: the restart (new epoch) shows a notice', true);
    await sleep(1500);
    await dash.emulateMedia({ colorScheme: 'light' });
    await shot(dash, 'dashboard-restart.png');

    check('no script errors in the pages', errors.length === 0, errors);
  } catch (e) {
    failed++;
    console.log(`not ok - ${e && e.stack ? e.stack : e}`);
  } finally {
    ticker.kill('SIGTERM');
    if (ctx) await ctx.close().catch(() => {});
    await m.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(`pages: ${failed ? 'FAILED' : 'passed'}; screenshots in ${outDir}`);
  process.exit(failed ? 1 : 0);
}

main();
