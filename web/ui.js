/**
 * Small helpers shared by the demo pages (chat.js, dashboard.js): the
 * connection status badge and a few DOM and formatting helpers.
 * @module ui
 */

/**
 * Creates an element. @param {string} tag
 * @param {object} [props]  className, textContent, dataset, attributes
 * @param {...(Node|string)} children
 * @returns {HTMLElement}
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else if (k === 'className' || k === 'textContent') el[k] = v;
    else el.setAttribute(k, v);
  }
  for (const c of children) if (c != null) el.append(c);
  return el;
}

/**
 * Keeps a status badge in step with a Duplex client. The badge gets
 * data-state = connecting | connected | reconnecting | offline and a text
 * ("connected", "reconnecting in 3s", "offline"). Markup:
 *   <span id="status" class="status"><span class="dot"></span><span class="status-text"></span></span>
 * @param {import('./duplex.js').Duplex} client
 * @param {HTMLElement} el
 */
export function bindStatus(client, el) {
  const text = el.querySelector('.status-text') || el;
  let timer = null;
  const set = (state, label) => {
    el.dataset.state = state;
    text.textContent = label;
    el.title = state === 'connected' ? `connected to ${client.url}` : label;
  };
  const render = () => {
    clearInterval(timer);
    timer = null;
    const online = typeof navigator === 'undefined' || navigator.onLine !== false;
    switch (client.status) {
      case 'open':
        return set('connected', 'connected');
      case 'connecting':
      case 'idle':
        if (!online) return set('offline', 'offline');
        // An attempt after a failure or a drop is a reconnection to the user.
        return client.attempt > 0 ? set('reconnecting', 'reconnecting…') : set('connecting', 'connecting…');
      case 'reconnecting': {
        const tick = () => {
          const s = Math.max(0, Math.ceil((client.nextRetryAt - Date.now()) / 1000));
          if (!online) set('offline', 'offline');
          else set('reconnecting', s > 0 ? `reconnecting in ${s}s` : 'reconnecting…');
        };
        tick();
        timer = setInterval(tick, 250);
        return undefined;
      }
      default:
        return set('offline', 'offline');
    }
  };
  client.on('status', render);
  if (typeof window !== 'undefined') {
    window.addEventListener('online', render);
    window.addEventListener('offline', render);
  }
  render();
}

/** "14:05" for a time in ms. @param {number} ms @returns {string} */
export function clock(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/** A stable colour for a name. @param {string} s @returns {string} */
export function colorFor(s) {
  let x = 0;
  for (const ch of String(s)) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${x % 360} 55% 52%)`;
}

/** Up to two letters for an avatar. @param {string} name @returns {string} */
export function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/);
  const s = parts.length > 1 ? parts[0][0] + parts[1][0] : parts[0].slice(0, 2);
  return s || '?';
}
