// End to end, headless Chromium against `duplex serve --presence` (run by
// tests/scripts/browser_realtime.sh):
//
// 1. Two users chat: Ada (page A) and Bob (page B) open
//    /chat.html?room=e2e&name=...; each sees the other in the presence list,
//    by name; Ada types a message and presses Enter, Bob types one and
//    clicks Send, then both send at once: both pages show the same messages
//    in the same order with the right names, none left pending.
// 2. Resume without loss: page A is loaded through a TCP proxy; the test
//    severs it (and checks the server and page B saw A go), publishes 20
//    messages through POST /api/publish while A is away, then lets A
//    reconnect: A shows each of the 20 exactly once, in order, with the seqs
//    the API assigned, says "20 missed messages delivered", no gap notice,
//    and shows the same message list as B.
//
//   node realtime_chat.js PORT OUT_DIR
//
// Screenshots: OUT_DIR/chat-a.png, chat-b.png, chat-resumed.png.
'use strict';

const L = require('./realtime_lib.js');

const [portArg, outDir] = process.argv.slice(2);
const port = Number(portArg);
if (!port || !outDir) {
  console.error('usage: node realtime_chat.js PORT OUT_DIR');
  process.exit(2);
}
const NAME = 'browser_realtime/chat';
const base = `http://127.0.0.1:${port}`;
const ROOM = 'e2e';
const TOPIC = `chat:${ROOM}`;
L.watchdog(NAME, 32000);

async function main() {
  const t = L.tester(NAME);
  L.mkOut(outDir);
  const errors = [];
  let browser = null;
  let proxy = null;
  try {
    browser = await L.launch();
    proxy = await L.startProxy(port);
    const viaProxy = `http://127.0.0.1:${proxy.port}`;

    // ---- 1. two users chat -------------------------------------------------
    const a = await L.openPage(browser, `${viaProxy}/chat.html?room=${ROOM}&name=Ada`, errors, 'A');
    await L.waitConnected(a);
    const b = await L.openPage(browser, `${base}/chat.html?room=${ROOM}&name=Bob`, errors, 'B');
    await L.waitConnected(b);
    t.check('both pages connected (status badge "connected")', true);

    for (const [p, who] of [[a, 'A'], [b, 'B']]) {
      const pr = await L.waitPresence(p, ['Ada', 'Bob']);
      const names = pr.members.map((m) => m.name).sort();
      t.check(`${who}: the presence list shows Ada and Bob by name`, names.join() === 'Ada,Bob', pr);
      t.check(`${who}: the member count says 2`, pr.count === '2', pr.count);
      const you = pr.members.filter((m) => m.you).map((m) => m.name);
      t.check(`${who}: "(you)" marks its own entry only`, you.join() === (who === 'A' ? 'Ada' : 'Bob'), pr);
      t.check(`${who}: two distinct member ids`, new Set(pr.members.map((m) => m.id)).size === 2, pr);
    }
    const joined = await a.waitForFunction(() => Array.from(document.querySelectorAll('#messages li.system'),
      (e) => e.textContent).includes('Bob joined'), null, { timeout: 5000 }).then(() => true, () => false);
    t.check('A: the page says "Bob joined"', joined,
      await a.locator('#messages li.system').allTextContents());

    // Ada types and presses Enter; once Bob sees it, he types and clicks Send.
    const M1 = 'Hi Bob, Ada here. Is the build green?';
    const M2 = 'Hi Ada! All green on my side.';
    await a.locator('#text').click();
    await a.keyboard.type(M1);
    await a.keyboard.press('Enter');
    await b.waitForFunction((x) => Array.from(document.querySelectorAll('#messages li.msg[data-seq] .msg-text'),
      (e) => e.textContent).includes(x), M1, { timeout: 5000 });
    await b.locator('#text').click();
    await b.keyboard.type(M2);
    await b.locator('#send').click();
    // Then both at once.
    const M3 = 'Ada: racing Bob';
    const M4 = 'Bob: racing Ada';
    await a.fill('#text', M3);
    await b.fill('#text', M4);
    await Promise.all([a.press('#text', 'Enter'), b.locator('#send').click()]);

    const settled = (p) => p.waitForFunction(() => document.querySelectorAll('#messages li.msg[data-seq]').length >= 4 &&
      !document.querySelector('#messages li.msg.pending'), null, { timeout: 8000 }).then(() => true, () => false);
    t.check('both pages show 4 confirmed messages, none pending', [await settled(a), await settled(b)].every(Boolean));
    const ma = await L.chatMessages(a);
    const mb = await L.chatMessages(b);
    const key = (m) => `${m.seq}|${m.name}|${m.text}`;
    t.check('A shows Ada\'s then Bob\'s message with the right names',
      ma.length >= 2 && ma[0].name === 'Ada' && ma[0].text === M1 && ma[1].name === 'Bob' && ma[1].text === M2, ma);
    t.check('the racing pair: each shown once, with its sender\'s name',
      ma.filter((m) => m.text === M3 && m.name === 'Ada').length === 1 &&
      ma.filter((m) => m.text === M4 && m.name === 'Bob').length === 1, ma);
    t.check('A and B show the same messages in the same order (seq, name, text)',
      ma.map(key).join('\n') === mb.map(key).join('\n'), { a: ma.map(key), b: mb.map(key) });
    t.check('seqs strictly increasing on the page',
      ma.every((m, i) => i === 0 || m.seq > ma[i - 1].seq), ma.map((m) => m.seq));
    t.check('own messages are marked as mine, the other\'s not',
      ma.every((m) => m.mine === (m.name === 'Ada')) && mb.every((m) => m.mine === (m.name === 'Bob')),
      { a: ma, b: mb });
    const failedA = await a.locator('#messages li.msg.failed').count();
    t.check('no message marked as failed', failedA === 0 && await b.locator('#messages li.msg.failed').count() === 0);
    await L.shot(a, outDir, 'chat-a.png');
    await L.shot(b, outDir, 'chat-b.png');

    // ---- 2. resume without loss --------------------------------------------
    const before = await L.topicInfo(base, TOPIC);
    t.check('the server counts 2 subscribers on the room before the cut', before && before.subscribers === 2, before);
    const cut = proxy.sever();
    t.check('the proxy carried A\'s WebSocket and severed it', cut >= 1, cut);
    const away = await a.waitForFunction(() => document.getElementById('status').dataset.state !== 'connected' &&
      window.chat.client.status !== 'open', null, { timeout: 5000 }).then(() => true, () => false);
    t.check('A: the status badge leaves "connected"', away, await a.locator('#status').textContent());
    const gone = await L.until(async () => {
      const i = await L.topicInfo(base, TOPIC);
      return i && i.subscribers === 1 ? i : null;
    }, 5000);
    t.check('the server dropped A\'s subscription (1 subscriber left)', !!gone, await L.topicInfo(base, TOPIC));
    const bAlone = await L.waitPresence(b, ['Bob'], 5000);
    t.check('B: the presence list shows Ada gone', bAlone.members.map((m) => m.name).join() === 'Bob' &&
      bAlone.count === '1', bAlone);
    const lastSeenA = (await L.chatMessages(a)).length;

    const seqs = [];
    const published = [];
    for (let i = 1; i <= 20; i++) {
      const text = `missed ${String(i).padStart(2, '0')}/20`;
      const r = await L.api(base, 'POST', '/api/publish', {
        topic: TOPIC,
        data: { type: 'msg', mid: `e2e-carol-${i}`, cid: 'e2e-carol', name: 'Carol', text, ts: Date.now() },
      });
      if (r.status === 200 && r.json) seqs.push(r.json.seq);
      published.push(text);
    }
    t.check('POST /api/publish accepted 20 messages with consecutive seqs',
      seqs.length === 20 && seqs.every((s, i) => i === 0 || s === seqs[i - 1] + 1), seqs);
    const stillAway = await a.evaluate(() => window.chat.client.status !== 'open');
    const aNow = await L.chatMessages(a);
    t.check('A was away while they were published (none shown yet)', stillAway && aNow.length === lastSeenA &&
      !aNow.some((m) => m.name === 'Carol'), { stillAway, aNow: aNow.length, lastSeenA });

    proxy.restore();
    const back = await a.waitForFunction(() => document.getElementById('status').dataset.state === 'connected' &&
      document.querySelectorAll('#messages li.msg[data-seq]').length >= 24, null, { timeout: 20000 })
      .then(() => true, () => false);
    t.check('A reconnects by itself and shows the missed messages', back, await a.locator('#status').textContent());
    await L.sleep(700); // room for a duplicate to show up, if any
    const ra = await L.chatMessages(a);
    const carol = ra.filter((m) => m.name === 'Carol');
    t.check('A shows each of the 20 exactly once, in publish order',
      carol.map((m) => m.text).join('|') === published.join('|'), carol.map((m) => m.text));
    t.check('with the seqs the API assigned', carol.map((m) => m.seq).join() === seqs.join(), carol.map((m) => m.seq));
    const allSeqs = ra.map((m) => m.seq);
    t.check('every data-seq on A unique and increasing',
      new Set(allSeqs).size === allSeqs.length && allSeqs.every((s, i) => i === 0 || s > allSeqs[i - 1]), allSeqs);
    const resume = await a.locator('#messages li.system.resume').evaluateAll((els) => els.map((e) => ({
      missed: e.dataset.missed, text: e.textContent })));
    t.check('A: one "reconnected" line counting 20 missed messages',
      resume.length === 1 && resume[0].missed === '20' && /20 missed messages delivered/.test(resume[0].text), resume);
    const gapsA = await a.locator('#messages li.gap-notice').count();
    t.check('A: no gap notice (nothing was lost)', gapsA === 0, gapsA);
    await b.waitForFunction(() => document.querySelectorAll('#messages li.msg[data-seq]').length >= 24, null, { timeout: 5000 })
      .catch(() => {});
    const rb = await L.chatMessages(b);
    t.check('A and B show the same messages in the same order after the resume',
      ra.map(key).join('\n') === rb.map(key).join('\n'), { a: ra.map(key), b: rb.map(key) });
    for (const [p, who] of [[a, 'A'], [b, 'B']]) {
      const pr = await L.waitPresence(p, ['Ada', 'Bob']);
      t.check(`${who}: the presence list shows Ada and Bob again`,
        pr.members.map((m) => m.name).sort().join() === 'Ada,Bob' && pr.count === '2', pr);
    }
    const after = await L.topicInfo(base, TOPIC);
    t.check('the server counts 2 subscribers again', after && after.subscribers === 2, after);
    // The shot: the "reconnected" line at the top, the replayed messages under it.
    await a.evaluate(() => {
      const li = document.querySelector('#messages li.system.resume');
      if (li) li.scrollIntoView({ block: 'start', behavior: 'instant' });
    });
    await L.shot(a, outDir, 'chat-resumed.png');
    t.check('no script errors in the pages', errors.length === 0, errors);
  } catch (e) {
    t.error(e);
  } finally {
    if (browser) await browser.close().catch(() => {});
    if (proxy) await proxy.close();
  }
  t.finish();
}

main();
