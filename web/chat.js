/**
 * The chat demo (chat.html): one room = one topic "chat:<room>".
 *
 * - History: the page subscribes with since=0, so it shows what the server
 *   still retains; after a network drop duplex.js resumes with since/epoch
 *   and the page shows what it missed, or a gap notice.
 * - Presence: the server's presence ops (join/leave/presence). To give
 *   members a name the page mints a one-time ticket for its name
 *   (POST /api/ticket {"sub": name}) before each connection; when the API
 *   refuses (API keys configured), it connects anonymously. When presence
 *   is off on the server, the list is derived from "here" messages each
 *   page publishes every 20 s.
 * - Sending: a message is shown at once as pending, confirmed when the
 *   server echoes it back (matched by a per-message id); while offline it
 *   waits in duplex.js's queue.
 *
 * Stable hooks for tests: #status[data-state], #messages > li.msg[data-seq]
 * (.msg-name, .msg-time, .msg-text), li.gap-notice[data-reason],
 * li.system.resume, #presence > li.member[data-id], #presence-count,
 * window.chat = {client, topic}.
 *
 * Query parameters: ?room=lobby&name=Ada joins directly.
 */
import { Duplex } from './duplex.js';
import { h, bindStatus, clock, colorFor, initials } from './ui.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const CID = Math.random().toString(36).slice(2, 10); // this tab
const HERE_EVERY = 20000;
const HERE_TTL = 50000;

const state = {
  name: '',
  room: '',
  topic: '',
  client: null,
  ticketMode: 'try', // 'try': mint tickets; 'off': the API refused, anonymous
  presenceMode: 'unknown', // 'server' | 'here'
  initial: true, // the first subscription's replay (its history gap is no loss)
  pending: new Map(), // mid -> <li>
  here: new Map(), // cid -> {name, ts}  (presence off)
  members: new Set(), // ids shown, for join/leave lines
  sent: 0,
};

// ---- joining ---------------------------------------------------------------

function init() {
  const stored = localStorage.getItem('duplex.chat.name') || '';
  $('name').value = params.get('name') || stored;
  $('room').value = params.get('room') || 'lobby';
  $('join').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $('name').value.trim();
    const room = $('room').value.trim();
    if (!name || !/^[A-Za-z0-9_.:/-]{1,64}$/.test(room)) return;
    localStorage.setItem('duplex.chat.name', name);
    if (state.client) {
      // Another room: start from a clean page.
      location.search = new URLSearchParams({ room, name }).toString();
      return;
    }
    start(name, room);
  });
  $('change').addEventListener('click', () => {
    $('join-overlay').classList.remove('hidden');
    $('name').focus();
  });
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    send();
  });
  if (params.get('room') && (params.get('name') || stored)) start($('name').value.trim(), $('room').value.trim());
}

function start(name, room) {
  state.name = name;
  state.room = room;
  state.topic = `chat:${room}`;
  $('join-overlay').classList.add('hidden');
  $('room-name').textContent = `# ${room}`;
  $('room-topic').textContent = state.topic;
  $('me').textContent = name;
  document.title = `#${room} · duplex chat`;
  history.replaceState(null, '', `?${new URLSearchParams({ room })}`);

  const client = new Duplex({ ticket: mintTicket });
  state.client = client;
  window.chat = { client, topic: state.topic };
  bindStatus(client, $('status'));

  client.on('subscribed', (e) => {
    if (e.topic !== state.topic) return;
    state.initial = !e.resumed;
    if (e.resumed) resumed(e);
    showPosition();
    if (state.presenceMode === 'here') announce();
  });
  client.on('presence', (p) => p.topic === state.topic && presence(p));
  client.on('error', (e) => console.warn('duplex:', e.code || '', e.message));

  client.subscribe(state.topic, onMessage, { since: 0, presence: true, onGap })
    .catch((e) => system(`Cannot join ${state.topic}: ${e.message}`, 'error'));

  $('text').disabled = false;
  $('send').disabled = false;
  $('text').focus();
}

/** A fresh one-time ticket per connection attempt, or null (anonymous). */
async function mintTicket() {
  if (state.ticketMode === 'off') return null;
  const r = await fetch('/api/ticket', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ sub: state.name }),
  });
  if ([401, 403, 404, 405].includes(r.status)) {
    state.ticketMode = 'off';
    return null;
  }
  if (!r.ok) throw new Error(`POST /api/ticket: HTTP ${r.status}`); // retried with backoff
  const body = await r.json();
  return body.ticket || null;
}

// ---- messages --------------------------------------------------------------

function onMessage(data, msg) {
  showPosition();
  if (data && data.type === 'here') {
    if (data.cid) state.here.set(data.cid, { name: String(data.name || '?'), ts: Number(data.ts) || 0 });
    if (state.presenceMode === 'here') renderHere();
    return;
  }
  const m = data && typeof data === 'object' ? data : { text: JSON.stringify(data) };
  if (m.cid && m.name) state.here.set(m.cid, { name: String(m.name), ts: Number(m.ts) || Date.now() });
  const pending = m.mid && state.pending.get(m.mid);
  if (pending) {
    pending.remove();
    state.pending.delete(m.mid);
  }
  append(messageItem(m, msg.seq, m.cid === CID));
}

function messageItem(m, seq, mine) {
  const name = String(m.name || 'anonymous');
  const ts = Number(m.ts) || Date.now();
  const text = typeof m.text === 'string' ? m.text : JSON.stringify(m);
  return h('li', { className: `msg${mine ? ' mine' : ''}`, dataset: seq ? { seq: String(seq) } : {} },
    h('div', { className: 'avatar', style: `background:${colorFor(name)}`, 'aria-hidden': 'true' }, initials(name)),
    h('div', {},
      h('div', { className: 'msg-head' },
        h('span', { className: 'msg-name' }, name),
        h('time', { className: 'msg-time', datetime: new Date(ts).toISOString(), title: new Date(ts).toLocaleString() }, clock(ts))),
      h('div', { className: 'msg-text' }, text)));
}

/** Adds a line above the pending messages, keeping the view at the bottom. */
function append(li) {
  const list = $('messages');
  const hint = $('empty-hint');
  if (hint && (li.classList.contains('msg'))) hint.remove();
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const firstPending = list.querySelector('li.pending');
  list.insertBefore(li, li.classList.contains('pending') ? null : firstPending);
  if (atBottom || li.classList.contains('mine')) list.scrollTop = list.scrollHeight;
}

function system(text, kind = '') {
  append(h('li', { className: `system ${kind}` }, text));
}

function send() {
  const input = $('text');
  const text = input.value.trim();
  if (!text) return;
  input.value = '';
  const c = state.client;
  const mid = `${CID}-${++state.sent}`;
  const data = { type: 'msg', mid, cid: CID, name: state.name, text, ts: Date.now() };
  const li = messageItem(data, 0, true);
  li.classList.add('pending');
  li.dataset.mid = mid;
  const note = h('div', { className: 'msg-state' }, c.readyState === Duplex.OPEN ? 'sending…' : 'queued — will send when back online');
  li.lastChild.append(note);
  state.pending.set(mid, li);
  append(li);
  c.publish(state.topic, data).catch((e) => {
    if (!state.pending.has(mid)) return; // its echo arrived after all
    li.classList.add('failed');
    note.textContent = e.code === 'disconnected'
      ? 'not confirmed: the connection dropped while sending'
      : `not sent (${e.code}: ${e.message})`;
  });
}

// ---- gaps and resumption -----------------------------------------------

function onGap(g) {
  showPosition();
  const n = g.to >= g.from ? g.to - g.from + 1 : 0;
  if (g.reason === 'history' && state.initial) {
    if (!document.querySelector('.history-start'))
      $('messages').prepend(h('li', { className: 'system history-start' }, 'Older messages are no longer kept by the server.'));
    return;
  }
  let text;
  if (g.reason === 'epoch') text = 'The server restarted and its history was reset: some messages were lost while you were away.';
  else if (g.reason === 'dropped') text = `Some messages were lost: the connection fell behind (${n} message${n === 1 ? '' : 's'}).`;
  else text = `Some messages were lost while you were away (${n} message${n === 1 ? '' : 's'}).`;
  append(h('li', { className: 'gap-notice', dataset: { reason: g.reason, from: String(g.from), to: String(g.to) } }, text));
}

function resumed(e) {
  const missed = e.since !== null && e.epoch === state.client.position(e.topic).epoch ? e.seq - e.since : 0;
  append(h('li', { className: 'system resume', dataset: { missed: String(Math.max(0, missed)) } },
    missed > 0 ? `↻ Reconnected — ${missed} message${missed === 1 ? ' was' : 's were'} sent while you were away` : '↻ Reconnected'));
  for (const li of state.pending.values()) {
    const note = li.querySelector('.msg-state');
    if (note && !li.classList.contains('failed')) note.textContent = 'sending…';
  }
}

function showPosition() {
  const p = state.client && state.client.position(state.topic);
  if (!p) return;
  $('last-seq').textContent = p.seq === null ? '–' : String(p.seq);
  $('epoch').textContent = p.epoch || '–';
}

// ---- presence --------------------------------------------------------------

function presence(p) {
  if (!p.available) {
    if (state.presenceMode !== 'here') startHereMode();
    return;
  }
  state.presenceMode = 'server';
  $('presence-mode').textContent = state.ticketMode === 'off' ? 'server (anonymous)' : 'server';
  const list = p.members.map((m) => ({
    id: m.id,
    label: m.name || `guest ${String(m.id).slice(-4)}`,
    you: state.ticketMode !== 'off' && m.id === state.name,
  }));
  if (p.change.type === 'join' && !state.members.has(p.change.member.id))
    system(`${p.change.member.name || 'a guest'} joined`);
  if (p.change.type === 'leave' && !list.some((m) => m.id === p.change.member.id))
    system(`${p.change.member.name || 'a guest'} left`);
  state.members = new Set(list.map((m) => m.id));
  renderMembers(list);
}

function renderMembers(list) {
  list.sort((a, b) => (b.you - a.you) || a.label.localeCompare(b.label));
  $('presence').replaceChildren(...list.map((m) =>
    h('li', { className: 'member', dataset: { id: String(m.id) } },
      h('span', { className: 'avatar', style: `background:${colorFor(m.label)}`, 'aria-hidden': 'true' }, initials(m.label)),
      h('span', { className: 'member-name' }, m.label),
      m.you ? h('span', { className: 'you' }, '(you)') : null)));
  $('presence-count').textContent = String(list.length);
}

/** Presence is off on the server: every page says "here" every 20 s. */
function startHereMode() {
  state.presenceMode = 'here';
  $('presence-mode').textContent = 'derived ("here" messages)';
  announce();
  setInterval(announce, HERE_EVERY);
  setInterval(renderHere, 5000);
  renderHere();
}

function announce() {
  const c = state.client;
  if (c.readyState !== Duplex.OPEN) return;
  c.publish(state.topic, { type: 'here', cid: CID, name: state.name, ts: Date.now() }).catch(() => {});
}

function renderHere() {
  const now = Date.now();
  state.here.set(CID, { name: state.name, ts: now });
  const list = [];
  for (const [cid, v] of state.here) {
    if (now - v.ts > HERE_TTL) state.here.delete(cid);
    else list.push({ id: cid, label: v.name, you: cid === CID });
  }
  renderMembers(list);
}

init();
