/*
 * The frame and message layer of the engine (RFC 6455 sections 5-7).
 *
 * Input is parsed in place: payloads are unmasked where they lie in the
 * caller's buffer, and a message that is whole in that buffer is delivered
 * as a pointer into it. Only a message split across frames or feeds, a
 * compressed message, or a control frame split across feeds is copied, into
 * buffers that exist only while such a thing is in flight.
 */
#include "proto/internal.h"

enum {
  RELEASE_MSG = 1, /* the last event pointed into ws->msg */
  RELEASE_CTL = 2  /* ... into ws->ctl */
};

static inline bool is_control(unsigned op) {
  return op & 0x8;
}

/* Short payloads dominate real-time traffic, and for them the setup of the
 * SIMD mask and UTF-8 routines costs more than the work. Below this size
 * one fused pass unmasks and checks for ASCII (the common case), and only
 * non-ASCII text goes to the full validator. */
#define SHORT_PAYLOAD 126

static inline uint64_t ascii_bits(uint64_t w) {
  return w & 0x8080808080808080ull;
}

/* Unmasks p in place from key offset 0 (if key) and returns true when all
 * bytes are ASCII. */
static inline bool short_unmask_ascii(uint8_t *p, size_t n,
                                      const uint8_t *key) {
  uint64_t k = 0, acc = 0;
  if (key) {
    uint32_t k32;
    memcpy(&k32, key, 4);
    k = (uint64_t)k32 << 32 | k32;
  }
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    uint64_t w0, w1;
    memcpy(&w0, p + i, 8);
    memcpy(&w1, p + i + 8, 8);
    w0 ^= k;
    w1 ^= k;
    memcpy(p + i, &w0, 8);
    memcpy(p + i + 8, &w1, 8);
    acc |= w0 | w1;
  }
  if (i + 8 <= n) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    w ^= k;
    memcpy(p + i, &w, 8);
    acc |= w;
    i += 8;
  }
  for (; i < n; i++) {
    if (key) p[i] ^= key[i & 3];
    acc |= p[i];
  }
  return ascii_bits(acc) == 0;
}

static bool text_valid(const uint8_t *p, size_t n) {
  if (n < SHORT_PAYLOAD && short_unmask_ascii((uint8_t *)p, n, NULL))
    return true;
  return dx_utf8_valid(p, n);
}

static size_t limit_or(size_t v, size_t dflt) {
  return v ? v : dflt;
}

/* Limits live in the shared config, not in every engine: an idle
 * connection should cost as little as possible. */
static inline size_t max_message(const dx_ws *ws) {
  return limit_or(ws->cfg->max_message, DX_DEFAULT_MAX_MESSAGE);
}

/* No frame limit by default: the message limit already bounds memory
 * (before allocation when uncompressed, after inflation when compressed),
 * and a compressed frame may legitimately be larger than its message. */
static inline size_t max_frame(const dx_ws *ws) {
  return limit_or(ws->cfg->max_frame, SIZE_MAX);
}

size_t dx_ws_sizeof(void) {
  return (sizeof(dx_ws) + 15) & ~(size_t)15;
}

void dx_ws_init(dx_ws *ws, const dx_ws_config *cfg) {
  memset(ws, 0, sizeof *ws);
  ws->cfg = cfg;
  ws->role = (uint8_t)cfg->role;
  ws->ready = DX_CONNECTING;
}

void dx_ws_cleanup(dx_ws *ws) {
  if (!ws) return;
  const dx_allocator *a = dx__ws_alloc(ws);
  dx__client_hs_free(ws);
  dx__pmd_free(ws->z, ws->cfg);
  dx__buf_free(&ws->msg, a);
  dx__buf_free(&ws->out, a);
  dx__free(a, ws->ctl, 125);
  ws->z = NULL;
  ws->ctl = NULL;
}

dx_ws *dx_ws_new(const dx_ws_config *cfg) {
  dx_ws *ws = dx__alloc(&cfg->alloc, sizeof *ws);
  if (ws) dx_ws_init(ws, cfg);
  return ws;
}

void dx_ws_free(dx_ws *ws) {
  if (!ws) return;
  dx_ws_cleanup(ws);
  dx__free(dx__ws_alloc(ws), ws, sizeof *ws);
}

static bool window_ok(uint8_t bits) {
  return bits == 0 || (bits >= 8 && bits <= 15);
}

int dx_ws_open(dx_ws *ws, const dx_pmd *pmd) {
  if (ws->ready != DX_CONNECTING) return DX_ESTATE;
  if (pmd && pmd->enabled) {
    if (!window_ok(pmd->server_max_window_bits) ||
        !window_ok(pmd->client_max_window_bits))
      return DX_EINVAL;
    ws->pmd = *pmd;
  }
  ws->ready = DX_OPEN;
  return 0;
}

dx_ready_state dx_ws_state(const dx_ws *ws) {
  return (dx_ready_state)ws->ready;
}
dx_role dx_ws_role(const dx_ws *ws) {
  return (dx_role)ws->role;
}
dx_pmd dx_ws_pmd(const dx_ws *ws) {
  return ws->pmd;
}

bool dx_close_code_valid(unsigned code) {
  /* RFC 6455 7.4.1-7.4.2 and the IANA registry: 1004-1006 and 1015 are
   * reserved and never sent; 1016-2999 are unassigned protocol codes;
   * 3000-4999 belong to libraries and applications. */
  if (code >= 3000 && code <= 4999) return true;
  if (code < 1000 || code > 1014) return false;
  return code != 1004 && code != 1005 && code != 1006;
}

uint16_t dx_ws_error_close_code(int err) {
  switch (err) {
  case DX_EPROTO:
    return DX_CLOSE_PROTOCOL_ERROR;
  case DX_EUTF8:
  case DX_EDEFLATE:
    return DX_CLOSE_INVALID_DATA;
  case DX_ETOOBIG:
    return DX_CLOSE_TOO_BIG;
  case DX_ENOMEM:
    return DX_CLOSE_INTERNAL_ERROR;
  default:
    return 0;
  }
}

/* ---- output ------------------------------------------------------------ */

int dx__ws_write_frame(dx_ws *ws, dx_opcode op, bool fin, bool rsv1,
                       const uint8_t *p, size_t n) {
  uint8_t key[4];
  const uint8_t *mask = NULL;
  if (ws->role == DX_ROLE_CLIENT) {
    /* RFC 6455 5.3: a fresh, unpredictable key for every frame. */
    if (dx__random(key, sizeof key)) return DX_ENOMEM;
    mask = key;
  }
  if (n > SIZE_MAX - 14) return DX_ENOMEM;
  int rc = dx__buf_reserve(&ws->out, dx__ws_alloc(ws), 14 + n);
  if (rc) return rc == DX_ETOOBIG ? DX_ENOMEM : rc;
  uint8_t *dst = ws->out.data + ws->out.len;
  size_t h = dx_frame_header(dst, op, fin, rsv1, n, mask);
  if (n) memcpy(dst + h, p, n);
  if (mask) dx_mask(dst + h, n, mask, 0);
  ws->out.len += h + n;
  return 0;
}

static int check_can_send(const dx_ws *ws) {
  if (ws->ready == DX_CONNECTING) return DX_ESTATE;
  if (ws->close_sent || ws->err || ws->ready == DX_CLOSED) return DX_ECLOSED;
  return 0;
}

static int send_data_frame(dx_ws *ws, dx_opcode op, const void *data,
                           size_t len, bool fin, bool may_compress) {
  if (op == DX_OP_TEXT && !(ws->cfg->flags & DX_WS_TRUST_OUTGOING_TEXT)) {
    /* A fragment may end inside a code point; only whole messages can be
     * checked with the stateless validator. */
    if (fin && !text_valid(data, len)) return DX_EUTF8;
  }
  size_t min = limit_or(ws->cfg->compress_min, DX_DEFAULT_COMPRESS_MIN);
  if (may_compress && ws->pmd.enabled && len >= min) {
    if (!ws->z && !(ws->z = dx__pmd_new(&ws->pmd, ws->role, ws->cfg)))
      return DX_ENOMEM;
    if (dx__pmd_can_compress(ws->z)) {
      const uint8_t *zp;
      size_t zn;
      int rc = dx__pmd_deflate(ws->z, data, len, &zp, &zn);
      if (rc) return rc;
      return dx__ws_write_frame(ws, op, true, true, zp, zn);
    }
  }
  return dx__ws_write_frame(ws, op, fin, false, data, len);
}

/* Server frames of a 7-bit length, uncompressed: header and payload go
 * straight into the kept output buffer. */
static inline int send_short_server(dx_ws *ws, dx_opcode op, const void *data,
                                    size_t len) {
  if (ws->out.cap - ws->out.len < 2 + len) {
    int rc = dx__buf_reserve(&ws->out, dx__ws_alloc(ws), 2 + len);
    if (rc) return rc == DX_ETOOBIG ? DX_ENOMEM : rc;
  }
  uint8_t *dst = ws->out.data + ws->out.len;
  dst[0] = (uint8_t)(0x80 | op);
  dst[1] = (uint8_t)len;
  if (len) memcpy(dst + 2, data, len);
  if (op == DX_OP_TEXT && !(ws->cfg->flags & DX_WS_TRUST_OUTGOING_TEXT) &&
      !short_unmask_ascii(dst + 2, len, NULL) && !dx_utf8_valid(dst + 2, len))
    return DX_EUTF8; /* not committed: out.len unchanged */
  ws->out.len += 2 + len;
  return 0;
}

int dx_ws_send(dx_ws *ws, dx_opcode op, const void *data, size_t len) {
  if (len < 126 && ws->role == DX_ROLE_SERVER && ws->ready == DX_OPEN &&
      !ws->close_sent && !ws->err && !ws->send_op &&
      (op == DX_OP_TEXT || op == DX_OP_BINARY) &&
      (!ws->pmd.enabled ||
       len < limit_or(ws->cfg->compress_min, DX_DEFAULT_COMPRESS_MIN)))
    return send_short_server(ws, op, data, len);
  int rc = check_can_send(ws);
  if (rc) return rc;
  if (op != DX_OP_TEXT && op != DX_OP_BINARY) return DX_EINVAL;
  if (ws->send_op) return DX_ESTATE;
  return send_data_frame(ws, op, data, len, true, true);
}

int dx_ws_send_fragment(dx_ws *ws, dx_opcode op, const void *data, size_t len,
                        bool fin) {
  int rc = check_can_send(ws);
  if (rc) return rc;
  if (op == DX_OP_CONT) {
    if (!ws->send_op) return DX_ESTATE;
  } else if (op == DX_OP_TEXT || op == DX_OP_BINARY) {
    if (ws->send_op) return DX_ESTATE;
  } else {
    return DX_EINVAL;
  }
  /* Fragments go out uncompressed and unchecked: a fragment may end inside
   * a code point, and the receiver validates the whole message anyway. */
  rc = dx__ws_write_frame(ws, op, fin, false, data, len);
  if (rc) return rc;
  ws->send_op = fin ? 0 : (op == DX_OP_CONT ? ws->send_op : (uint8_t)op);
  return 0;
}

static int send_control(dx_ws *ws, dx_opcode op, const void *data, size_t len) {
  int rc = check_can_send(ws);
  if (rc) return rc;
  if (len > 125) return DX_EINVAL;
  return dx__ws_write_frame(ws, op, true, false, data, len);
}

int dx_ws_ping(dx_ws *ws, const void *data, size_t len) {
  return send_control(ws, DX_OP_PING, data, len);
}

int dx_ws_pong(dx_ws *ws, const void *data, size_t len) {
  return send_control(ws, DX_OP_PONG, data, len);
}

static int queue_close(dx_ws *ws, uint16_t code, const void *reason,
                       size_t len) {
  uint8_t p[125];
  size_t n = 0;
  if (code) {
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    if (len) memcpy(p + 2, reason, len);
    n = 2 + len;
  }
  int rc = dx__ws_write_frame(ws, DX_OP_CLOSE, true, false, p, n);
  if (rc) return rc;
  ws->close_sent = 1;
  return 0;
}

int dx_ws_close(dx_ws *ws, uint16_t code, const char *reason, size_t len) {
  if (ws->ready == DX_CONNECTING) return DX_ESTATE;
  if (ws->close_sent || ws->err) return 0;
  if (code == 0 && len) return DX_EINVAL;
  if (code && !dx_close_code_valid(code)) return DX_ECLOSECODE;
  if (len > 123) return DX_EINVAL;
  if (!dx_utf8_valid((const uint8_t *)reason, len)) return DX_EUTF8;
  int rc = queue_close(ws, code, reason, len);
  if (rc) return rc;
  ws->ready = ws->close_rcvd ? DX_CLOSED : DX_CLOSING;
  return 0;
}

int dx_ws_send_raw(dx_ws *ws, const void *frame, size_t len) {
  int rc = check_can_send(ws);
  if (rc) return rc;
  return dx__buf_append(&ws->out, dx__ws_alloc(ws), frame, len);
}

size_t dx_ws_output(dx_ws *ws, const uint8_t **out) {
  *out = ws->out.data ? ws->out.data + ws->out.off : NULL;
  return ws->out.len - ws->out.off;
}

/* A drained output buffer up to this size is kept for the next message:
 * allocating per message costs more than the message. dx_ws_trim() gives
 * it back once the connection goes quiet. */
#define KEEP_OUTPUT 4096

void dx_ws_consume(dx_ws *ws, size_t n) {
  size_t live = ws->out.len - ws->out.off;
  ws->out.off += n < live ? n : live;
  if (ws->out.off == ws->out.len) {
    if (ws->out.cap > KEEP_OUTPUT) dx__buf_free(&ws->out, dx__ws_alloc(ws));
    ws->out.len = ws->out.off = 0;
  }
}

void dx_ws_trim(dx_ws *ws) {
  if (ws->out.data && ws->out.len == ws->out.off)
    dx__buf_free(&ws->out, dx__ws_alloc(ws));
}

size_t dx_ws_buffered(const dx_ws *ws) {
  return ws->out.len - ws->out.off;
}

/* ---- input ------------------------------------------------------------- */

int dx_ws_feed(dx_ws *ws, uint8_t *data, size_t len) {
  if (ws->in != ws->in_end) return DX_ESTATE;
  if (ws->err || ws->close_rcvd) return 0; /* ignored: nothing to parse */
  ws->in = data;
  ws->in_end = data + len;
  return 0;
}

/* Fails the connection (RFC 6455 7.1.7): queue the close that reports the
 * error, drop the input, and stay failed. */
static int fail(dx_ws *ws, int err) {
  uint16_t code = dx_ws_error_close_code(err);
  if (!ws->close_sent && code && ws->ready != DX_CONNECTING)
    (void)queue_close(ws, code, NULL, 0);
  ws->err = err;
  ws->pstate = DX__P_DEAD;
  ws->ready = DX_CLOSED;
  ws->in = ws->in_end;
  return err;
}

static size_t header_size(uint8_t b0, uint8_t b1) {
  (void)b0;
  size_t n = 2 + ((b1 & 0x80) ? 4 : 0);
  uint8_t len7 = b1 & 0x7f;
  return n + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
}

static int check_opcode(dx_ws *ws, uint8_t b0) {
  unsigned op = b0 & 0x0f;
  bool fin = b0 & 0x80, rsv1 = b0 & 0x40;
  if (b0 & 0x30) return DX_EPROTO; /* RSV2/RSV3: no extension uses them */
  if ((op >= 3 && op <= 7) || op >= 0xb) return DX_EPROTO;
  if (is_control(op)) {
    /* 5.5: control frames are never fragmented; RFC 7692 6: RSV1 only on
     * the first frame of a data message. */
    if (!fin || rsv1) return DX_EPROTO;
    return 0;
  }
  if (op == DX_OP_CONT) {
    if (!ws->msg_op || rsv1) return DX_EPROTO;
  } else {
    if (ws->msg_op) return DX_EPROTO; /* 5.4: no interleaved messages */
    if (rsv1 && !ws->pmd.enabled) return DX_EPROTO;
  }
  return 0;
}

static int parse_header(dx_ws *ws, const uint8_t *h) {
  int rc = check_opcode(ws, h[0]);
  if (rc) return rc;
  bool masked = h[1] & 0x80;
  /* 5.1: clients mask every frame, servers never do. */
  if (masked != (ws->role == DX_ROLE_SERVER)) return DX_EPROTO;
  uint64_t len = h[1] & 0x7f;
  const uint8_t *p = h + 2;
  if (len == 126) {
    len = (uint64_t)p[0] << 8 | p[1];
    p += 2;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; i++)
      len = len << 8 | p[i];
    p += 8;
    if (len >> 63) return DX_EPROTO; /* 5.2: the top bit must be 0 */
  }
  ws->opcode = h[0] & 0x0f;
  ws->fin = (h[0] & 0x80) != 0;
  ws->rsv1 = (h[0] & 0x40) != 0;
  if (is_control(ws->opcode)) {
    if (len > 125) return DX_EPROTO;
  } else if (len > max_frame(ws)) {
    return DX_ETOOBIG;
  } else if (!ws->msg_z && !(ws->opcode != DX_OP_CONT && ws->rsv1) &&
             len > max_message(ws) -
                       (ws->opcode == DX_OP_CONT ? ws->msg.len : 0)) {
    /* Uncompressed: the limit is known before a byte of payload arrives. */
    return DX_ETOOBIG;
  }
  if (masked) memcpy(ws->mask, p, 4);
  ws->mask_off = 0;
  ws->remaining = len;
  return 0;
}

/* Collects a frame header; reads it straight from the input when whole.
 * Returns 1 when parsed, 0 when more input is needed, or an error. */
static int state_header(dx_ws *ws) {
  size_t avail = (size_t)(ws->in_end - ws->in);
  if (ws->hdr_len == 0 && avail >= 2) {
    size_t need = header_size(ws->in[0], ws->in[1]);
    if (avail >= need) {
      const uint8_t *h = ws->in;
      ws->in += need;
      int rc = parse_header(ws, h);
      return rc ? rc : 1;
    }
  }
  while (avail) {
    size_t need = ws->hdr_len < 2 ? 2 : header_size(ws->hdr[0], ws->hdr[1]);
    if (ws->hdr_len >= need) break;
    size_t take = need - ws->hdr_len < avail ? need - ws->hdr_len : avail;
    memcpy(ws->hdr + ws->hdr_len, ws->in, take);
    ws->hdr_len += (uint8_t)take;
    ws->in += take;
    avail -= take;
  }
  if (ws->hdr_len < 2 || ws->hdr_len < header_size(ws->hdr[0], ws->hdr[1]))
    return 0;
  ws->hdr_len = 0;
  int rc = parse_header(ws, ws->hdr);
  return rc ? rc : 1;
}

static int deliver_control(dx_ws *ws, uint8_t *p, size_t n, dx_ws_event *ev) {
  ev->data = p;
  ev->len = n;
  ev->close_code = 0;
  if (ws->opcode == DX_OP_PING) {
    ev->type = DX_EV_PING;
    /* 5.5.2: answer with the same payload, unless closing already. */
    if (!(ws->cfg->flags & DX_WS_NO_AUTO_PONG) && !ws->close_sent) {
      int rc = dx__ws_write_frame(ws, DX_OP_PONG, true, false, p, n);
      if (rc) return rc;
    }
    return 1;
  }
  if (ws->opcode == DX_OP_PONG) {
    ev->type = DX_EV_PONG;
    return 1;
  }
  /* Close (5.5.1, 7.1.5, 7.4). */
  uint16_t code = DX_CLOSE_NO_STATUS;
  if (n == 1) return DX_EPROTO;
  if (n >= 2) {
    code = (uint16_t)(p[0] << 8 | p[1]);
    if (!dx_close_code_valid(code)) return DX_EPROTO;
    if (!dx_utf8_valid(p + 2, n - 2)) return DX_EUTF8;
  }
  ws->close_rcvd = 1;
  if (!ws->close_sent) {
    /* Echo the code (7.1.5: "typically echos the status code"). */
    int rc = queue_close(ws, code == DX_CLOSE_NO_STATUS ? 0 : code, NULL, 0);
    if (rc) return rc;
  }
  ws->ready = DX_CLOSED;
  ws->in = ws->in_end; /* nothing after a close is data (5.5.1) */
  ev->type = DX_EV_CLOSE;
  ev->close_code = code;
  ev->data = n >= 2 ? p + 2 : p;
  ev->len = n >= 2 ? n - 2 : 0;
  return 1;
}

static int payload_control(dx_ws *ws, dx_ws_event *ev) {
  size_t avail = (size_t)(ws->in_end - ws->in);
  size_t n = (size_t)ws->remaining;
  if (ws->ctl_len == 0 && avail >= n) {
    uint8_t *p = ws->in;
    ws->in += n;
    ws->remaining = 0;
    if (ws->role == DX_ROLE_SERVER) dx_mask(p, n, ws->mask, 0);
    ws->pstate = DX__P_HEADER;
    return deliver_control(ws, p, n, ev);
  }
  if (!ws->ctl && !(ws->ctl = dx__alloc(dx__ws_alloc(ws), 125)))
    return DX_ENOMEM;
  size_t take = avail < n ? avail : n;
  memcpy(ws->ctl + ws->ctl_len, ws->in, take);
  if (ws->role == DX_ROLE_SERVER)
    ws->mask_off =
        (uint8_t)dx_mask(ws->ctl + ws->ctl_len, take, ws->mask, ws->mask_off);
  ws->ctl_len += (uint8_t)take;
  ws->in += take;
  ws->remaining -= take;
  if (ws->remaining) return 0;
  ws->pstate = DX__P_HEADER;
  size_t len = ws->ctl_len;
  ws->ctl_len = 0;
  return deliver_control(ws, ws->ctl, len, ev);
}

static int finish_message(dx_ws *ws, uint8_t *p, size_t n, dx_ws_event *ev) {
  if (ws->msg_op == DX_OP_TEXT && ws->utf8 != 0) return DX_EUTF8;
  ev->type = ws->msg_op == DX_OP_TEXT ? DX_EV_TEXT : DX_EV_BINARY;
  ev->data = p;
  ev->len = n;
  ev->close_code = 0;
  ws->msg_op = 0;
  ws->msg_z = 0;
  ws->utf8 = 0;
  return 1;
}

/* Appends a piece of a split or compressed message to ws->msg. */
static int append_piece(dx_ws *ws, uint8_t *p, size_t n, bool last) {
  size_t before = ws->msg.len;
  int rc;
  if (ws->msg_z) {
    rc = dx__pmd_inflate(ws->z, p, n, last, &ws->msg, max_message(ws));
    if (rc) return rc;
  } else {
    rc = dx__buf_append(&ws->msg, dx__ws_alloc(ws), p, n);
    if (rc) return rc;
  }
  /* Validate as bytes arrive so an invalid text fails fast (6.1, 8.1). */
  if (ws->msg_op == DX_OP_TEXT && ws->msg.len > before &&
      !dx_utf8_feed(&ws->utf8, ws->msg.data + before, ws->msg.len - before))
    return DX_EUTF8;
  return 0;
}

static int payload_data(dx_ws *ws, dx_ws_event *ev) {
  if (ws->opcode != DX_OP_CONT) {
    ws->msg_op = ws->opcode;
    ws->msg_z = ws->rsv1;
    ws->utf8 = 0;
    if (ws->msg_z && !ws->z &&
        !(ws->z = dx__pmd_new(&ws->pmd, ws->role, ws->cfg)))
      return DX_ENOMEM;
    ws->opcode = DX_OP_CONT; /* later pieces of this frame continue it */
  }
  size_t avail = (size_t)(ws->in_end - ws->in);
  size_t n = avail < ws->remaining ? avail : (size_t)ws->remaining;
  uint8_t *p = ws->in;
  ws->in += n;
  ws->remaining -= n;
  bool last = ws->fin && ws->remaining == 0;
  if (n < SHORT_PAYLOAD && last && ws->mask_off == 0 && !ws->msg_z &&
      ws->msg.data == NULL) {
    /* The common case: a short message whole in the input. */
    const uint8_t *key = ws->role == DX_ROLE_SERVER ? ws->mask : NULL;
    bool ascii = short_unmask_ascii(p, n, key);
    ws->pstate = DX__P_HEADER;
    if (ws->msg_op == DX_OP_TEXT && !ascii && !dx_utf8_feed(&ws->utf8, p, n))
      return DX_EUTF8;
    return finish_message(ws, p, n, ev);
  }
  if (ws->role == DX_ROLE_SERVER)
    ws->mask_off = (uint8_t)dx_mask(p, n, ws->mask, ws->mask_off);
  if (last && !ws->msg_z && ws->msg.len == 0 && ws->msg.data == NULL) {
    /* The whole message is here: deliver it where it lies. */
    ws->pstate = DX__P_HEADER;
    if (ws->msg_op == DX_OP_TEXT && !dx_utf8_feed(&ws->utf8, p, n))
      return DX_EUTF8;
    return finish_message(ws, p, n, ev);
  }
  int rc = append_piece(ws, p, n, last);
  if (rc) return rc;
  if (ws->remaining) return 0;
  ws->pstate = DX__P_HEADER;
  if (!ws->fin) return 0;
  return finish_message(ws, ws->msg.data, ws->msg.len, ev);
}

static inline void release(dx_ws *ws) {
  if (!ws->msg.data && !ws->ctl) return;
  const dx_allocator *a = dx__ws_alloc(ws);
  if (ws->msg_op == 0 && ws->msg.data) dx__buf_free(&ws->msg, a);
  if (ws->ctl_len == 0 && ws->ctl) {
    dx__free(a, ws->ctl, 125);
    ws->ctl = NULL;
  }
}

static int step(dx_ws *ws, dx_ws_event *ev) {
  for (;;) {
    if (ws->pstate == DX__P_HEADER) {
      int rc = state_header(ws);
      if (rc <= 0) return rc;
      ws->pstate = DX__P_PAYLOAD;
    }
    if (ws->remaining && ws->in == ws->in_end) return 0;
    int rc =
        is_control(ws->opcode) ? payload_control(ws, ev) : payload_data(ws, ev);
    if (rc) return rc;
    if (ws->in == ws->in_end && ws->pstate == DX__P_PAYLOAD) return 0;
  }
}

/*
 * The fast lane: a whole, unfragmented, uncompressed data frame with a 7-bit
 * length at the front of the input, and nothing else in flight. That is
 * nearly every message of real-time traffic; it is parsed and delivered
 * here without the general state machine. Returns 1 (event), 0 (not this
 * case: take the general path) or a negative error.
 */
static inline int fast_lane(dx_ws *ws, dx_ws_event *ev) {
  size_t avail = (size_t)(ws->in_end - ws->in);
  if (avail < 2) return 0;
  uint8_t b0 = ws->in[0], b1 = ws->in[1];
  unsigned op = b0 & 0x0f;
  if ((b0 & 0xf0) != 0x80 || (op != DX_OP_TEXT && op != DX_OP_BINARY)) return 0;
  bool masked = b1 & 0x80;
  size_t len = b1 & 0x7f;
  if (len >= 126 || masked != (ws->role == DX_ROLE_SERVER)) return 0;
  size_t hl = masked ? 6 : 2;
  if (avail < hl + len || len > max_message(ws) || len > max_frame(ws))
    return 0; /* the general path reports the limit */
  uint8_t *p = ws->in + hl;
  bool ascii = short_unmask_ascii(p, len, masked ? ws->in + 2 : NULL);
  ws->in += hl + len;
  if (op == DX_OP_TEXT && !ascii && !dx_utf8_valid(p, len)) return DX_EUTF8;
  ev->type = op == DX_OP_TEXT ? DX_EV_TEXT : DX_EV_BINARY;
  ev->data = p;
  ev->len = len;
  ev->close_code = 0;
  return 1;
}

int dx_ws_next(dx_ws *ws, dx_ws_event *ev) {
  if (ws->err) return ws->err;
  if (ws->pstate == DX__P_HEADER && ws->hdr_len == 0 && !ws->msg_op &&
      !ws->msg.data && !ws->ctl && ws->ready == DX_OPEN) {
    if (ws->in == ws->in_end) {
      ws->in = ws->in_end = NULL;
      return DX_EAGAIN;
    }
    int rc = fast_lane(ws, ev);
    if (rc) return rc < 0 ? fail(ws, rc) : 1;
  }
  release(ws);
  if (ws->ready == DX_CONNECTING) return DX_ESTATE;
  if (ws->close_rcvd || ws->ready == DX_CLOSED) {
    ws->in = ws->in_end = NULL;
    return DX_EAGAIN;
  }
  int rc = step(ws, ev);
  if (rc < 0) return fail(ws, rc);
  if (rc > 0) return 1;
  ws->in = ws->in_end = NULL;
  return DX_EAGAIN;
}
