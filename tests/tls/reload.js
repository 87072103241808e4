// TLS certificate reload on SIGHUP without dropping connections, against
// `duplex serve --tls-cert LIVE/cert.pem --tls-key LIVE/key.pem --echo
// /echo`. Run by tests/scripts/tls_serve.sh:
//
//   node reload.js CONFIG_JSON
//
// CONFIG_JSON: {"port", "pid", "log" (the server's stderr), "ca" (ca.pem),
// "live" (the directory the server loads from), "one": {"cert", "key",
// "encKey" (key encrypted with a passphrase), "fp"} (what it starts with), "two": {...} (a second
// certificate for localhost from the same CA, with its own key)}.
//
//  1. A connects and sees certificate one.
//  2. LIVE gets certificate two + its key; SIGHUP; the server logs the
//     reload. A still echoes; a new connection B sees certificate two.
//  3. LIVE/cert.pem becomes garbage; SIGHUP: the server logs why it kept
//     the old one; C still sees two; A and B still echo.
//  4. LIVE gets certificate one with key two (a mismatch), then with key
//     one encrypted; SIGHUP each time: logged, D and D2 still see two.
//  5. LIVE gets one + key one again; SIGHUP: E sees one (a failed reload
//     does not stop later ones). A..E all close cleanly.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const WebSocket = require('ws');

const cfg = JSON.parse(process.argv[2] || '{}');
if (!cfg.port || !cfg.pid || !cfg.live) {
  console.error('usage: node reload.js CONFIG_JSON');
  process.exit(2);
}
const CA = fs.readFileSync(cfg.ca);
const STEP_MS = 10000;

setTimeout(() => {
  console.error('reload: watchdog: still running after 40 s');
  process.exit(1);
}, 40000).unref();

function within(ms, what, promise) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

function open() {
  const ws = new WebSocket(`wss://localhost:${cfg.port}/echo`,
                           { ca: CA, perMessageDeflate: false });
  const queue = [];
  const waiters = [];
  let closedWith = null;
  ws.on('message', (data) => {
    if (waiters.length) waiters.shift().resolve(data);
    else queue.push(data);
  });
  ws.on('close', (code) => {
    closedWith = new Error(`connection closed (code ${code})`);
    while (waiters.length) waiters.shift().reject(closedWith);
  });
  ws.next = () => within(STEP_MS, 'a message', new Promise((resolve, reject) => {
    if (queue.length) resolve(queue.shift());
    else if (closedWith) reject(closedWith);
    else waiters.push({ resolve, reject });
  }));
  ws.echo = async (data) => {
    ws.send(data);
    return ws.next();
  };
  return within(STEP_MS, 'open', new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  }));
}

const peer = (ws) => ws._socket.getPeerCertificate();
const fp = (ws) => peer(ws).fingerprint256;

async function stillEchoes(ws, name) {
  const s = `${name} still here ${Date.now()}`;
  assert.equal((await ws.echo(s)).toString(), s, `${name} echo differs`);
  const b = Buffer.alloc(200000, name.charCodeAt(0));
  assert.ok((await ws.echo(b)).equals(b), `${name} 200 KB echo differs`);
}

const readLog = () => fs.readFileSync(cfg.log, 'utf8');
const sighupLines = () => readLog().split('\n')
  .filter((l) => /\bsignal\b.*\bcode=1\b/.test(l));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Sends SIGHUP and waits for the server to log its outcome; returns the
// new log line.
async function hup() {
  const before = sighupLines().length;
  process.kill(cfg.pid, 'SIGHUP');
  for (let t = 0; t < STEP_MS; t += 50) {
    const lines = sighupLines();
    if (lines.length > before) return lines[lines.length - 1];
    await sleep(50);
  }
  throw new Error('the server logged nothing for SIGHUP within 10 s');
}

function install(certFile, keyFile) {
  fs.copyFileSync(certFile, path.join(cfg.live, 'cert.pem'));
  fs.copyFileSync(keyFile, path.join(cfg.live, 'key.pem'));
}

let failed = 0;
function ok(cond, what, detail = '') {
  if (cond) console.log(`ok - reload: ${what}`);
  else { failed++; console.log(`not ok - reload: ${what}${detail ? ': ' + detail : ''}`); }
  return cond;
}

async function main() {
  const conns = {};
  try {
    conns.A = await open();
    ok(fp(conns.A) === cfg.one.fp, 'A sees certificate one',
       `${peer(conns.A).serialNumber} ${fp(conns.A)}`);
    await stillEchoes(conns.A, 'A');

    install(cfg.two.cert, cfg.two.key);
    let line = await hup();
    ok(/TLS certificate reloaded/.test(line), 'SIGHUP with certificate two: ' +
       'the server logs "TLS certificate reloaded"', line);
    await stillEchoes(conns.A, 'A');
    ok(true, 'A (opened before the reload) still echoes');
    conns.B = await open();
    ok(fp(conns.B) === cfg.two.fp && peer(conns.B).serialNumber === cfg.two.serial,
       `a new connection B sees certificate two (serial ${cfg.two.serial})`,
       `serial ${peer(conns.B).serialNumber}`);
    await stillEchoes(conns.B, 'B');

    fs.writeFileSync(path.join(cfg.live, 'cert.pem'),
                     'this is not a certificate\n');
    line = await hup();
    console.log(`#   ${line}`);
    ok(!/TLS certificate reloaded/.test(line) &&
       /cert\.pem/.test(line) && /certificate/.test(line),
       'SIGHUP with a garbage cert.pem: the server logs an error naming ' +
       'the file', line);
    const C = conns.C = await open();
    ok(fp(C) === cfg.two.fp, 'after the failed reload, a new connection C ' +
       'still gets certificate two', peer(C).serialNumber);
    await stillEchoes(conns.A, 'A');
    await stillEchoes(conns.B, 'B');
    await stillEchoes(C, 'C');
    ok(true, 'A, B, C echo after the failed reload');

    install(cfg.one.cert, cfg.two.key);
    line = await hup();
    console.log(`#   ${line}`);
    ok(/does not match/.test(line), 'SIGHUP with a key that does not match ' +
       'the certificate: the server logs "does not match"', line);
    conns.D = await open();
    ok(fp(conns.D) === cfg.two.fp, 'a new connection D still gets ' +
       'certificate two', peer(conns.D).serialNumber);

    install(cfg.one.cert, cfg.one.encKey);
    line = await hup();
    console.log(`#   ${line}`);
    ok(/encrypted/.test(line), 'SIGHUP with an encrypted key: the server ' +
       'logs that it is encrypted (and does not prompt)', line);
    conns.D2 = await open();
    ok(fp(conns.D2) === cfg.two.fp, 'a new connection still gets ' +
       'certificate two', peer(conns.D2).serialNumber);

    install(cfg.one.cert, cfg.one.key);
    line = await hup();
    ok(/TLS certificate reloaded/.test(line),
       'SIGHUP with a valid pair after failures: reloaded', line);
    conns.E = await open();
    ok(fp(conns.E) === cfg.one.fp, 'a new connection E gets certificate one',
       peer(conns.E).serialNumber);
    for (const [name, ws] of Object.entries(conns)) await stillEchoes(ws, name);
    ok(true, 'A..E all echo at the end');
    for (const [name, ws] of Object.entries(conns)) {
      ws.close(1000);
      const code = await within(STEP_MS, 'close', new Promise((r) =>
        ws.once('close', (c) => r(c))));
      ok(code === 1000, `${name} closes with 1000`, String(code));
    }
  } catch (e) {
    failed++;
    console.log(`not ok - reload: ${e && e.stack ? e.stack : e}`);
  }
  console.log(`reload: ${failed ? 'FAILED' : 'passed'}`);
  process.exit(failed ? 1 : 0);
}

main();
