// Opens a `duplex bench --html` report in headless Chromium (playwright-core,
// /usr/bin/chromium), checks the charts are there and drawn, and saves a
// screenshot. Usage: node render.js REPORT.html SCREENSHOT.png
'use strict';
const path = require('path');
const { chromium } = require(path.join(__dirname, '../../node_modules/playwright-core'));

(async () => {
  const [report, shot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true, timeout: 30000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
           '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-proxy-server'],
  });
  let failed = 0;
  const check = (ok, name) => { console.log(`${ok ? 'ok' : 'not ok'} - ${name}`); if (!ok) failed++; };
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const requests = [];
    page.on('request', (r) => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
    await page.goto('file://' + path.resolve(report));
    for (const id of ['latency-chart', 'histogram-chart', 'throughput-chart', 'p99-chart']) {
      const info = await page.evaluate((id) => {
        const svg = document.getElementById(id);
        if (!svg) return null;
        const paths = [...svg.querySelectorAll('path')].map((p) => p.getAttribute('d') || '');
        const box = svg.getBoundingClientRect();
        return { paths, w: box.width, h: box.height };
      }, id);
      check(info !== null, `#${id} is an SVG element`);
      if (!info) continue;
      check(info.paths.length > 0 && info.paths.every((d) => /^M[\d.]+ [\d.]+ ?[LhvZ]/.test(d) && d.length > 20),
            `#${id} has non-empty paths (${info.paths.length})`);
      check(info.w > 300 && info.h > 100, `#${id} is laid out (${Math.round(info.w)}x${Math.round(info.h)})`);
    }
    const rows = await page.$$eval('#summary tr', (r) => r.length);
    check(rows >= 8, `summary table has ${rows} rows`);
    check(requests.length === 0, `self-contained (external requests: ${requests.join(' ') || 'none'})`);
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${shot}`);
  } catch (e) {
    check(false, `browser: ${e.message}`);
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
})();
