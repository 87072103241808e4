/**
 * The chat demo (chat.html): one room = one topic "chat:<room>".
 *
 * - History: the page subscribes with since=0, so it shows what the server
 *   still retains; after a network drop duplex.js resumes with since/epoch
 *   and the page shows what it missed, or a gap notice.
 * - Presence (duplex serve --presence): the server's member list
 *   (presence/join/leave) says who is here. Anonymous members have no name
 *   on the server (a member's name is its token's subject), so each page
 *   tells the room its name: it learns its own member id on every
 *   connection (it subscribes to a topic of its own, "chat:whoami:<tab>",
 *   where it is the only member, asks for that topic's presence, and
 *   unsubscribes), then publishes {"type": "here", "name", "member"} to the
 *   room, again whenever someone joins. When presence is off, the list is
 *   derived from "here" messages every page publishes every 20 s.
 * - Sending: a message is shown at once as pending, confirmed when the
 *   server echoes it back (matched by a per-message id); while offline it
 *   waits in duplex.js's queue.
 *
 * Stable hooks for tests: #status[data-state], #messages > li.msg[data-seq]
 * (.msg-name, .msg-time, .msg-text), li.gap-notice[data-reason],
 * li.system.resume, #presence > li.member[data-id] (.member-name),
 * #presence-count, window.chat = {client, topic}.
 *
 * Query parameters: ?room=lobby&name=Ada joins directly.
 */
import { Duplex } from './duplex.js';
import { h, bindStatus, clock, colorFor, initials } from './ui.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const CID = Math.random().toString(36).slice(2, 10); // this tab
const HERE_EVERY = 20000; // presence off: "here" period
const HERE_TTL = 50000; // presence off: forgotten after

const state = {
  name: '',
  room: '',
  topic: '',
  client: null,
  presenceMode: 'unknown', // 'server' | 'here'
  initial: true, // the first subscription's replay (its history gap is no loss)
  pending: new Map(), // mid -> <li>
  replay: null, // {li, upto, n}: the resume line being counted
  sent: 0,
  // presence on
  myId: null, // our member id on the current connection
  names: new Map(), // member id -> name, from "here" messages
  members: [], // the server's list, as last shown
  joining: new Map(), // member id -> timer: a join waiting for its name
  lastAnnounce: 0,
  // presence off
  here: new Map(), // cid -> {name, ts}
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

  const client = new Duplex();
  state.client = client;
  window.chat = { client, topic: state.topic };
  bindStatus(client, $('status'));

  client.on('subscribed', (e) => {
    if (e.topic !== state.topic) return;
    state.initial = !e.resumed;
    if (e.resumed) resumed(e);
    showPosition();
    if (state.presenceMode === 'here') sayHere();
  });
  client.on('presence', (p) => p.topic === state.topic && presence(p));
  client.on('open', () => {
    state.myId = null; // a new connection, a new member id
    if (state.presenceMode !== 'here') whoami();
  });
  client.on('error', (e) => console.warn('duplex:', e.code || '', e.message));

  client.subscribe(state.topic, onMessage, { since: 0, presence: true, onGap })
    .catch((e) => system(`Cannot join ${state.topic}: ${e.message}`, 'error'));

  $('text').disabled = false;
  $('send').disabled = false;
  $('text').focus();
}

// ---- messages --------------------------------------------------------------

function onMessage(data, msg) {
  showPosition();
  if (data && data.type === 'here') {
    const name = String(data.name || '?').slice(0, 32);
    if (data.cid) state.here.set(data.cid, { name, ts: Number(data.ts) || 0 });
    if (data.member != null) named(String(data.member), name);
    if (state.presenceMode === 'here') renderHere();
    return;
  }
  const m = data && typeof data === 'object' ? data : { text: JSON.stringify(data) };
  if (m.cid && m.name) state.here.set(m.cid, { name: String(m.name), ts: Number(m.ts) || Date.now() });
  const r = state.replay;
  if (r && msg.seq <= r.upto) {
    r.n++;
    r.li.dataset.missed = String(r.n);
    r.li.textContent = `↻ Reconnected — ${r.n} missed message${r.n === 1 ? '' : 's'} delivered`;
  }
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

/** After a resubscription: a line that counts the missed messages as the
 *  replay delivers them (the replay is the seqs up to the ack's). */
function resumed(e) {
  const li = h('li', { className: 'system resume', dataset: { missed: '0' } }, '↻ Reconnected');
  state.replay = { li, upto: e.seq, n: 0 };
  append(li);
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

// ---- presence ----------------------------------------------------------------

/** Learns our member id on this connection: alone on a topic of our own. */
async function whoami() {
  const c = state.client;
  const topic = `chat:whoami:${CID}`;
  try {
    await c.request({ op: 'subscribe', topic });
    const r = await c.request({ op: 'presence', topic });
    c.request({ op: 'unsubscribe', topic }).catch(() => {});
    const me = (r.members || [])[0];
    if (!me) return;
    state.myId = String(me.id);
    state.names.set(state.myId, state.name);
    renderMembers();
    announce(true);
  } catch (e) {
    // Presence off (unknown_op) or a dropped connection: nothing to learn.
  }
}

/** Tells the room our name (once per connection, and when someone joins). */
function announce(force) {
  const c = state.client;
  if (c.readyState !== Duplex.OPEN || state.myId === null) return;
  if (!force && Date.now() - state.lastAnnounce < 5000) return;
  state.lastAnnounce = Date.now();
  c.publish(state.topic, { type: 'here', cid: CID, member: state.myId, name: state.name, ts: Date.now() })
    .catch(() => {});
}

function label(m) {
  return m.name || state.names.get(String(m.id)) || `guest ${String(m.id).slice(-4)}`;
}

/** A "here" message named a member: show its name, and its join line. */
function named(id, name) {
  const had = state.names.get(id);
  state.names.set(id, name);
  const t = state.joining.get(id);
  if (t !== undefined) {
    clearTimeout(t);
    state.joining.delete(id);
    if (id !== state.myId) system(`${name} joined`);
  }
  if (had !== name && state.members.some((m) => String(m.id) === id)) renderMembers();
}

function presence(p) {
  if (!p.available) {
    if (state.presenceMode !== 'here') startHereMode();
    return;
  }
  state.presenceMode = 'server';
  $('presence-mode').textContent = 'server';
  const ch = p.change;
  const id = ch.member ? String(ch.member.id) : null;
  if (ch.type === 'join' && id !== state.myId && !state.members.some((m) => String(m.id) === id)) {
    if (ch.member.name) {
      system(`${ch.member.name} joined`);
    } else {
      // Its name comes in its "here" message; wait for it a little.
      clearTimeout(state.joining.get(id));
      state.joining.set(id, setTimeout(() => {
        state.joining.delete(id);
        if (id !== state.myId) system(`${label(ch.member)} joined`);
      }, 2500));
      // Someone new does not know our name yet.
      setTimeout(() => announce(false), 200 + Math.random() * 1000);
    }
  }
  if (ch.type === 'leave' && !p.members.some((m) => String(m.id) === id)) {
    const t = state.joining.get(id);
    if (t !== undefined) {
      clearTimeout(t);
      state.joining.delete(id);
    } else {
      system(`${label(ch.member)} left`);
    }
  }
  state.members = p.members;
  renderMembers();
}

function renderMembers(list) {
  if (!list) {
    list = state.members.map((m) => ({
      id: m.id,
      label: label(m),
      you: String(m.id) === state.myId || (m.name != null && m.name === state.name),
    }));
  }
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
  sayHere();
  setInterval(sayHere, HERE_EVERY);
  setInterval(renderHere, 5000);
  renderHere();
}

function sayHere() {
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
