// End to end, headless Chromium against `duplex serve`, with web/ticker.js
// publishing to it through POST /api/publish (both started by
// tests/scripts/browser_realtime.sh): /dashboard.html connects, shows a card
// per symbol the ticker publishes with a price, draws the chart, and the
// chart moves: #chart-line[data-points] and the tick count grow over ~2 s,
// the page's last seq keeps up with the server's, no gap notice.
//
//   node realtime_dashboard.js PORT OUT_DIR
//
// Screenshot: OUT_DIR/dashboard.png.
'use strict';

const L = require('./realtime_lib.js');

const [portArg, outDir] = process.argv.slice(2);
const port = Number(portArg);
if (!port || !outDir) {
  console.error('usage: node realtime_dashboard.js PORT OUT_DIR');
  process.exit(2);
}
const NAME = 'browser_realtime/dashboard';
const base = `http://127.0.0.1:${port}`;
// What web/ticker.js publishes.
const SYMBOLS = ['DPX', 'EPL', 'TLS', 'WSK', 'ZLB'];
L.watchdog(NAME, 18000);

async function main() {
  const t = L.tester(NAME);
  L.mkOut(outDir);
  const errors = [];
  let browser = null;
  try {
    browser = await L.launch();
    const d = await L.openPage(browser, `${base}/dashboard.html`, errors, 'dashboard');
    await L.waitConnected(d);
    t.check('the dashboard connects', true);
    const filled = await d.waitForFunction((n) => document.querySelectorAll('#cards .symbol[data-symbol]').length >= n &&
      Number(document.getElementById('chart-line').dataset.points) >= 2, SYMBOLS.length, { timeout: 10000 })
      .then(() => true, () => false);
    t.check('ticks arrive: cards and a chart line', filled);
    const cards = await d.locator('#cards .symbol').evaluateAll((els) => els.map((e) => ({
      symbol: e.dataset.symbol, price: e.querySelector('.sym-price').textContent })));
    t.check('a card per symbol, in order', cards.map((c) => c.symbol).join() === SYMBOLS.join(), cards);
    t.check('each card shows a price', cards.every((c) => /^\d{1,3}(,\d{3})*\.\d{2}$/.test(c.price)), cards);
    const title = await d.locator('#chart-symbol').textContent();
    t.check('the chart shows the first symbol', /^DPX · Duplex Corp$/.test(title), title);

    const read = () => d.evaluate(() => ({
      points: Number(document.getElementById('chart-line').dataset.points),
      d: document.getElementById('chart-line').getAttribute('d'),
      count: Number(document.getElementById('stat-count').textContent),
      seq: Number(document.getElementById('stat-seq').textContent),
      price: document.getElementById('chart-price').textContent,
    }));
    const p1 = await read();
    await L.sleep(2000);
    const p2 = await read();
    // The ticker publishes every 100-200 ms: ~10-20 ticks in 2 s.
    t.check('the chart moves: data-points grows by 5+ in 2 s', p2.points >= p1.points + 5, { p1: p1.points, p2: p2.points });
    t.check('the line is redrawn', p2.d !== p1.d && /^M[\d.]+ [\d.]+(L[\d.]+ [\d.]+)+$/.test(p2.d), p2.d.slice(0, 80));
    t.check('the tick counter grows', p2.count > p1.count, { p1: p1.count, p2: p2.count });
    const info = await L.topicInfo(base, 'ticker');
    t.check('the page\'s last seq keeps up with the server\'s', info && p2.seq >= 1 && info.seq - p2.seq <= 3,
      { page: p2.seq, server: info });
    t.check('every tick since seq 1 received once (count == last seq)', p2.count === p2.seq, p2);
    const gaps = await d.locator('#gaps li.gap-notice').count();
    t.check('no gap notice', gaps === 0, gaps);
    await L.shot(d, outDir, 'dashboard.png');
    t.check('no script errors in the page', errors.length === 0, errors);
  } catch (e) {
    t.error(e);
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
  t.finish();
}

main();
