// End to end, headless Chromium against `duplex serve --presence` (run by
// tests/scripts/browser_realtime.sh): a server restart as a chat user sees
// it. Ada is in the room and writes a message; the test asks the shell
// script to restart the server (SIGTERM, then a new one on the same port)
// by creating CTRL_DIR/restart.request, and waits for CTRL_DIR/restart.done.
// The page must have been closed with 1012 "restart", reconnect by itself
// (status back to "connected"), show the epoch gap notice (the server's
// history was reset: li.gap-notice[data-reason="epoch"], from 1 to 0 as the
// new stream is empty), show the new epoch, keep the conversation it had,
// list Ada in the presence list again, and deliver a message typed after
// the restart.
//
//   node realtime_restart.js PORT OUT_DIR CTRL_DIR
//
// Screenshot: OUT_DIR/chat-restart.png.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const L = require('./realtime_lib.js');

const [portArg, outDir, ctrlDir] = process.argv.slice(2);
const port = Number(portArg);
if (!port || !outDir || !ctrlDir) {
  console.error('usage: node realtime_restart.js PORT OUT_DIR CTRL_DIR');
  process.exit(2);
}
const NAME = 'browser_realtime/restart';
const base = `http://127.0.0.1:${port}`;
const TOPIC = 'chat:e2e';
L.watchdog(NAME, 32000);

const msgTexts = (p) => p.locator('#messages li.msg[data-seq] .msg-text').allTextContents();

async function main() {
  const t = L.tester(NAME);
  L.mkOut(outDir);
  const errors = [];
  let browser = null;
  try {
    browser = await L.launch();
    const a = await L.openPage(browser, `${base}/chat.html?room=e2e&name=Ada`, errors, 'A');
    await L.waitConnected(a);
    const BEFORE = 'Deploying now, back in a second.';
    await a.fill('#text', BEFORE);
    await a.press('#text', 'Enter');
    await a.waitForFunction((x) => Array.from(document.querySelectorAll('#messages li.msg[data-seq] .msg-text'),
      (e) => e.textContent).includes(x), BEFORE, { timeout: 5000 });
    const textsBefore = await msgTexts(a);
    const epochBefore = await a.locator('#epoch').textContent();
    const infoBefore = await L.topicInfo(base, TOPIC);
    t.check('before: the page shows the server\'s epoch', infoBefore && epochBefore === infoBefore.epoch,
      { page: epochBefore, server: infoBefore });
    await a.evaluate(() => {
      window.__e2e = { closes: [], statuses: [] };
      window.chat.client.on('close', (e) => window.__e2e.closes.push({ code: e.code, reason: e.reason }));
      window.chat.client.on('status', (s) => window.__e2e.statuses.push(s));
    });

    // The restart, done by the shell script (which checks the old server's
    // exit status and stderr).
    fs.writeFileSync(path.join(ctrlDir, 'restart.request'), '');
    const done = await L.until(() => fs.existsSync(path.join(ctrlDir, 'restart.done')), 15000);
    if (!t.check('the server was restarted on the same port', done)) throw new Error('no restart');

    const back = await L.waitConnected(a, 20000).then(() => true, () => false);
    t.check('the page reconnects by itself (status "connected" again)', back,
      await a.locator('#status').textContent());
    const ev = await a.evaluate(() => window.__e2e);
    t.check('it was closed with 1012 "restart"', ev.closes.length >= 1 && ev.closes[0].code === 1012 &&
      ev.closes[0].reason === 'restart', ev.closes);
    t.check('its status went reconnecting, then open', ev.statuses.includes('reconnecting') &&
      ev.statuses[ev.statuses.length - 1] === 'open', ev.statuses);

    const shown = await a.waitForFunction(() => document.querySelector('#messages li.gap-notice[data-reason="epoch"]'),
      null, { timeout: 10000 }).then(() => true, () => false);
    const notices = await a.locator('#messages li.gap-notice').evaluateAll((els) => els.map((e) => ({
      reason: e.dataset.reason, from: e.dataset.from, to: e.dataset.to, text: e.textContent })));
    t.check('the page shows the epoch gap notice', shown && notices.length === 1, notices);
    const g = notices[0] || {};
    t.check('it tells the user the server restarted and its history was reset',
      /server restarted and its history was reset/.test(g.text || ''), g.text);
    t.check('range 1..0: the new stream was empty when the page resumed', g.from === '1' && g.to === '0', g);
    const infoAfter = await L.topicInfo(base, TOPIC);
    const epochAfter = await a.locator('#epoch').textContent();
    t.check('the page shows the new epoch', infoAfter && epochAfter === infoAfter.epoch && epochAfter !== epochBefore,
      { before: epochBefore, page: epochAfter, server: infoAfter });
    const textsKept = await msgTexts(a);
    t.check('the conversation shown before the restart is still there',
      textsKept.slice(0, textsBefore.length).join('|') === textsBefore.join('|'),
      { before: textsBefore.length, now: textsKept.length });
    const pr = await L.waitPresence(a, ['Ada'], 5000);
    t.check('the presence list shows Ada (you) again', pr.members.length === 1 && pr.members[0].name === 'Ada' &&
      pr.members[0].you && pr.count === '1', pr);

    const AFTER = 'Back after the restart.';
    await a.fill('#text', AFTER);
    await a.locator('#send').click();
    const sent = await a.waitForFunction((x) => Array.from(document.querySelectorAll('#messages li.msg[data-seq] .msg-text'),
      (e) => e.textContent).includes(x) && !document.querySelector('#messages li.msg.pending'), AFTER, { timeout: 5000 })
      .then(() => true, () => false);
    t.check('a message typed after the restart is delivered', sent);
    const order = await a.evaluate((x) => {
      const items = Array.from(document.querySelectorAll('#messages li'));
      const gap = items.findIndex((li) => li.matches('.gap-notice'));
      const msg = items.findIndex((li) => li.matches('.msg[data-seq]') && li.querySelector('.msg-text').textContent === x);
      const seq = msg >= 0 ? Number(items[msg].dataset.seq) : null;
      return { gap, msg, seq };
    }, AFTER);
    const infoNow = await L.topicInfo(base, TOPIC);
    t.check('below the gap notice, with a seq of the new stream', order.gap >= 0 && order.msg > order.gap &&
      infoNow && order.seq === infoNow.seq, { order, server: infoNow });

    await a.evaluate(() => {
      const li = document.querySelector('#messages li.gap-notice');
      if (li) li.scrollIntoView({ block: 'center', behavior: 'instant' });
    });
    await L.shot(a, outDir, 'chat-restart.png');
    t.check('no script errors in the page', errors.length === 0, errors);
  } catch (e) {
    t.error(e);
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
  t.finish();
}

main();
