// Browser: headless Chromium (the Debian package, /usr/bin/chromium),
// driven by playwright-core, loads tests/browser/www/index.html from
// `duplex serve --root`, whose script (www/echo.js) echoes messages over
// ws://HOST/echo and writes what it received into the page. This checks the
// page against the values sent. Run by tests/scripts/browser_echo.sh, and
// with "tls" by tests/scripts/browser_tls.sh (the page is then loaded from
// https://localhost:PORT/ of a `duplex serve --tls-cert` and must use
// wss://; Chromium runs with --ignore-certificate-errors, so the test
// checks the certificate it got: subject localhost, issuer "duplex test
// CA"):
//
//   node echo.js PORT OUT_DIR [tls]
//
// Saves OUT_DIR/browser_echo.png (browser_tls.png with tls), also when a
// check fails. Exits 1 if any check failed.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
// The 1 MiB messages' expected bytes, as www/echo.js makes them.
const { noise: xorshift, bigText } = require('../lib/ws_test.js');

const [portArg, outDir, mode] = process.argv.slice(2);
const port = Number(portArg);
if (!port || !outDir || (mode && mode !== 'tls')) {
  console.error('usage: node echo.js PORT OUT_DIR [tls]');
  process.exit(2);
}
const TLS = mode === 'tls';
const NAME = TLS ? 'browser_tls' : 'browser_echo';
// The certificate covers localhost (make_certs.sh): use the name over TLS.
const ORIGIN = TLS ? `https://localhost:${port}` : `http://127.0.0.1:${port}`;
const WS_URL = TLS ? `wss://localhost:${port}/echo` : `ws://127.0.0.1:${port}/echo`;
const CHROMIUM = '/usr/bin/chromium';
const MiB = 1024 * 1024;

let browserContext = null;
setTimeout(() => {
  console.error(`${NAME}: watchdog: still running after 50 s`);
  process.exit(1);
}, 50000).unref();

// The values the page sends (kept in step with www/echo.js).
const TEXT = 'hello from Chromium — ünïcødé 𝄞 ✓';
const BINARY = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i));

function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'duplex-chromium-'));
  let failed = 0;
  const check = (name, ok, detail = '') => {
    if (ok) console.log(`ok - browser: ${name}`);
    else { failed++; console.log(`not ok - browser: ${name}${detail ? ': ' + detail : ''}`); }
  };
  try {
    // A fresh profile (launchPersistentContext's user data dir: playwright
    // refuses --user-data-dir in args).
    browserContext = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30000,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
             '--no-first-run', '--disable-background-networking',
             '--disable-component-update', '--disable-sync',
             '--no-proxy-server', // 127.0.0.1 only: never via a proxy
             // The test CA is not in the browser's store; the
             // certificate is checked below instead.
             ...(TLS ? ['--ignore-certificate-errors'] : [])],
    });
    const page = browserContext.pages()[0] || await browserContext.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(m.text());
    });

    const res = await page.goto(`${ORIGIN}/index.html`, { timeout: 15000 });
    check('index.html served from --root with 200',
          res && res.status() === 200, res ? `status ${res.status()}` : 'no response');
    check('index.html has Content-Type text/html',
          res && /^text\/html\b/.test(res.headers()['content-type'] || ''),
          res && res.headers()['content-type']);
    if (TLS) {
      const sec = res ? await res.securityDetails() : null;
      console.log(`#   TLS: ${JSON.stringify(sec)}`);
      check('the page came over TLS 1.2+ with our certificate ' +
            '(subject localhost, issuer "duplex test CA")',
            sec && /^TLS 1\.[23]$/.test(sec.protocol) &&
            sec.subjectName === 'localhost' &&
            sec.issuer === 'duplex test CA', JSON.stringify(sec));
    }

    try {
      await page.waitForFunction(() => {
        const s = document.getElementById('status').textContent;
        return s === 'done' || s === 'error';
      }, null, { timeout: 30000 });
    } catch (e) {
      // Fall through: the checks below report what the page got to.
    }
    const got = await page.evaluate(() => Object.fromEntries(
      Array.from(document.querySelectorAll('dd[id]'), (e) => [e.id, e.textContent])));
    await page.screenshot({ path: path.join(outDir, `${NAME}.png`),
                            fullPage: true });
    console.log(`#   page: ${JSON.stringify(got)}`);

    check('the page finished without an error',
          got.status === 'done' && got.error === '',
          `status=${got.status} error=${got.error}`);
    check('no script errors in the page', pageErrors.length === 0,
          pageErrors.join(' | '));
    check(`WebSocket URL is ${WS_URL}`, got.url === WS_URL, got.url);
    check('binaryType is arraybuffer', got.binaryType === 'arraybuffer',
          got.binaryType);
    check('negotiated extensions contain permessage-deflate',
          /(^|,\s*)permessage-deflate\b/.test(got.extensions), got.extensions);
    check('no subprotocol selected', got.protocol === '(none)', got.protocol);
    check('text message echoed exactly, as a string',
          got.text === TEXT && got.textType === 'string',
          `${got.textType} ${JSON.stringify(got.text)}`);
    check('binary message echoed exactly, as an ArrayBuffer',
          got.binary === BINARY.toString('hex') && got.binaryKind === 'ArrayBuffer',
          `${got.binaryKind} ${got.binary}`);
    const bigB = `${MiB} bytes fnv1a=${fnv1a(xorshift(MiB, 0x12345678))}`;
    check('1 MiB binary message echoed exactly', got.bigBinary === bigB,
          `got "${got.bigBinary}", expected "${bigB}"`);
    const bigT = `string ${MiB} bytes fnv1a=${fnv1a(Buffer.from(bigText(MiB)))}`;
    check('1 MiB text message echoed exactly', got.bigText === bigT,
          `got "${got.bigText}", expected "${bigT}"`);
    check('clean close, the server echoed 1000',
          got.close === 'code=1000 wasClean=true', got.close);
  } catch (e) {
    failed++;
    console.log(`not ok - browser: ${e && e.stack ? e.stack : e}`);
  } finally {
    if (browserContext) await browserContext.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(`${NAME}: ${failed ? 'FAILED' : 'passed'}; screenshot ` +
              path.join(outDir, `${NAME}.png`));
  process.exit(failed ? 1 : 0);
}

main();
