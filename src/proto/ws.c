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

static inline bool is_control(unsigned op) {
  return op & 0x8;
}

/* Short payloads dominate real-time traffic, and for them the setup of the
 * SIMD mask and UTF-8 routines costs more than the work. Below this size
 * one fused pass unmasks and checks for ASCII (the common case), and only
 * non-ASCII text goes to the full validator. */
#define SHORT_PAYLOAD 126

static inline bool ascii_acc(uint64_t acc) {
  return (acc & 0x8080808080808080ull) == 0;
}

/*
 * Short payloads (under 126 bytes): from 16 bytes on, 16-byte SSE2 steps
 * (the x86-64 baseline, as in mask.c) with the tail as one more step that
 * overlaps the last; below 16, or without SSE2, steps of 8, 4, 2 and 1
 * bytes. No byte loop, and after each step of 4 or more the key is back at
 * offset 0, so no key rotation. Each returns the OR of the bytes it passed
 * over, folded to 64 bits, for the caller's ASCII check. Loads and stores
 * through memcpy or unaligned intrinsics: payloads start wherever their
 * header left them.
 */
#if defined(__SSE2__) && defined(__x86_64__) && !defined(DX_NO_SIMD)
#define SHORT_SSE2 1
#include <emmintrin.h>
static inline uint64_t fold128(__m128i v) {
  return (uint64_t)_mm_cvtsi128_si64(_mm_or_si128(v, _mm_srli_si128(v, 8)));
}
#else
#define SHORT_SSE2 0
#endif

/* The 8/4/2/1-byte steps of n (< 16) bytes from src + i (i a multiple of
 * 8), the key (NULL: none) at offset 0 there; written to dst + i unless
 * dst is NULL (dst may equal src). */
static inline uint64_t short_tail(uint8_t *dst, const uint8_t *src, size_t i,
                                  size_t n, const uint8_t *key) {
  uint64_t acc = 0;
  if (n & 8) {
    uint64_t w, k = 0;
    memcpy(&w, src + i, 8);
    if (key) {
      memcpy(&k, key, 4);
      memcpy((uint8_t *)&k + 4, key, 4);
    }
    w ^= k;
    if (dst) memcpy(dst + i, &w, 8);
    acc |= w;
    i += 8;
  }
  if (n & 4) {
    uint32_t w, k = 0;
    memcpy(&w, src + i, 4);
    if (key) memcpy(&k, key, 4);
    w ^= k;
    if (dst) memcpy(dst + i, &w, 4);
    acc |= w;
    i += 4;
  }
  if (n & 2) {
    uint16_t w, k = 0;
    memcpy(&w, src + i, 2);
    if (key) memcpy(&k, key, 2);
    w ^= k;
    if (dst) memcpy(dst + i, &w, 2);
    acc |= w;
    i += 2;
  }
  if (n & 1) {
    uint8_t w = src[i] ^ (key ? key[i & 3] : 0); /* i & 3 is 0 or 2 */
    if (dst) dst[i] = w;
    acc |= w;
  }
  return acc;
}

/* Unmasks p in place from key offset 0; the OR of the unmasked bytes. */
static inline uint64_t short_unmask(uint8_t *p, size_t n, const uint8_t *key) {
#if SHORT_SSE2
  if (n >= 16) {
    /* The last 16 bytes are loaded and unmasked before any store, and
     * stored last: where they overlap the whole blocks, both hold the same
     * unmasked bytes, so the tail needs no 8/4/2/1 steps. */
    uint8_t kk[8];
    memcpy(kk, key, 4);
    memcpy(kk + 4, key, 4);
    int32_t k4, kt;
    memcpy(&k4, kk, 4);
    memcpy(&kt, kk + (n & 3), 4); /* the key at offset n - 16 */
    __m128i kv = _mm_set1_epi32(k4), av = _mm_setzero_si128();
    __m128i t = _mm_loadu_si128((const __m128i *)(const void *)(p + n - 16));
    t = _mm_xor_si128(t, _mm_set1_epi32(kt));
    for (size_t i = 0, blocks = n >> 4; blocks; blocks--, i += 16) {
      __m128i w = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
      w = _mm_xor_si128(w, kv);
      _mm_storeu_si128((__m128i *)(void *)(p + i), w);
      av = _mm_or_si128(av, w);
    }
    _mm_storeu_si128((__m128i *)(void *)(p + n - 16), t);
    return fold128(_mm_or_si128(av, t));
  }
  return short_tail(p, p, 0, n, key);
#else
  size_t i = 0;
  uint64_t acc = 0;
  for (size_t blocks = n >> 4; blocks; blocks--, i += 16)
    acc |= short_tail(p, p, i, 8, key) | short_tail(p, p, i + 8, 8, key);
  return acc | short_tail(p, p, i, n & 15, key);
#endif
}

/* Copies n bytes to dst (not overlapping src); the OR of the bytes. */
static inline uint64_t short_copy(uint8_t *dst, const uint8_t *src, size_t n) {
#if SHORT_SSE2
  if (n >= 16) {
    /* The tail as one 16-byte copy overlapping the last block. */
    __m128i t = _mm_loadu_si128((const __m128i *)(const void *)(src + n - 16));
    __m128i av = t;
    for (size_t i = 0, blocks = n >> 4; blocks; blocks--, i += 16) {
      __m128i w = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
      _mm_storeu_si128((__m128i *)(void *)(dst + i), w);
      av = _mm_or_si128(av, w);
    }
    _mm_storeu_si128((__m128i *)(void *)(dst + n - 16), t);
    return fold128(av);
  }
  return short_tail(dst, src, 0, n, NULL);
#else
  size_t i = 0;
  uint64_t acc = 0;
  for (size_t blocks = n >> 4; blocks; blocks--, i += 16)
    acc |=
        short_tail(dst, src, i, 8, NULL) | short_tail(dst, src, i + 8, 8, NULL);
  return acc | short_tail(dst, src, i, n & 15, NULL);
#endif
}

/* The OR of n bytes (the ASCII check of unmasked input). */
static inline uint64_t short_or(const uint8_t *p, size_t n) {
#if SHORT_SSE2
  if (n >= 16) {
    __m128i av = _mm_loadu_si128((const __m128i *)(const void *)(p + n - 16));
    for (size_t i = 0, blocks = n >> 4; blocks; blocks--, i += 16)
      av = _mm_or_si128(
          av, _mm_loadu_si128((const __m128i *)(const void *)(p + i)));
    return fold128(av);
  }
  return short_tail(NULL, p, 0, n, NULL);
#else
  size_t i = 0;
  uint64_t acc = 0;
  for (size_t blocks = n >> 4; blocks; blocks--, i += 16)
    acc |=
        short_tail(NULL, p, i, 8, NULL) | short_tail(NULL, p, i + 8, 8, NULL);
  return acc | short_tail(NULL, p, i, n & 15, NULL);
#endif
}

/* Unmasks p in place from key offset 0 (if key) and returns true when all
 * bytes are ASCII. */
static inline bool short_unmask_ascii(uint8_t *p, size_t n,
                                      const uint8_t *key) {
  return ascii_acc(key ? short_unmask(p, n, key) : short_or(p, n));
}

static bool text_valid(const uint8_t *p, size_t n) {
  if (n < SHORT_PAYLOAD && ascii_acc(short_or(p, n))) return true;
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

struct dx__ws_cold *dx__ws_cold(dx_ws *ws) {
  if (!ws->cold) {
    struct dx__ws_cold *k = dx__alloc(dx__ws_alloc(ws), sizeof *k);
    if (!k) return NULL;
    memset(k, 0, sizeof *k);
    ws->cold = k;
  }
  return ws->cold;
}

/* Gives the cold part back once nothing in it is live. Never while an
 * event may still point into it (held). */
static void cold_release(dx_ws *ws) {
  struct dx__ws_cold *k = ws->cold;
  if (!k || ws->held || k->msg.data || k->ctl_len || k->hdr_len || k->z ||
      k->hs)
    return;
  dx__free(dx__ws_alloc(ws), k, sizeof *k);
  ws->cold = NULL;
}

void dx__ws_set_pmd(dx_ws *ws, const dx_pmd *pmd) {
  bool on = pmd && pmd->enabled;
  ws->pmd_on = on;
  ws->pmd_sno = on && pmd->server_no_context_takeover;
  ws->pmd_cno = on && pmd->client_no_context_takeover;
  ws->pmd_sbits = on ? pmd->server_max_window_bits & 15 : 0;
  ws->pmd_cbits = on ? pmd->client_max_window_bits & 15 : 0;
}

int dx__ws_out_reserve(dx_ws *ws, size_t more) {
  if (ws->out_off > 0 && ws->out_cap - ws->out_len < more) {
    /* Compact before growing: consumed bytes at the front are dead. */
    memmove(ws->out, ws->out + ws->out_off, ws->out_len - ws->out_off);
    ws->out_len -= ws->out_off;
    ws->out_off = 0;
  }
  if (ws->out_cap - ws->out_len >= more) return 0;
  if (more > UINT32_MAX - ws->out_len) return DX_ENOMEM;
  size_t need = (size_t)ws->out_len + more;
  size_t cap = ws->out_cap ? ws->out_cap : 256;
  while (cap < need)
    cap *= 2;
  if (cap > UINT32_MAX) cap = UINT32_MAX;
  uint8_t *p = dx__realloc(dx__ws_alloc(ws), ws->out, ws->out_cap, cap);
  if (!p) return DX_ENOMEM;
  ws->out = p;
  ws->out_cap = (uint32_t)cap;
  return 0;
}

static void out_free(dx_ws *ws) {
  dx__free(dx__ws_alloc(ws), ws->out, ws->out_cap);
  ws->out = NULL;
  ws->out_len = ws->out_off = ws->out_cap = 0;
}

void dx_ws_init(dx_ws *ws, const dx_ws_config *cfg) {
  memset(ws, 0, sizeof *ws);
  ws->cfg = cfg;
  size_t lim = 125;
  if (max_message(ws) < lim) lim = max_message(ws);
  if (max_frame(ws) < lim) lim = max_frame(ws);
  ws->lane_max = (uint8_t)lim;
  ws->role = (uint8_t)cfg->role;
  ws->ready = DX_CONNECTING;
}

void dx_ws_cleanup(dx_ws *ws) {
  if (!ws) return;
  const dx_allocator *a = dx__ws_alloc(ws);
  struct dx__ws_cold *k = ws->cold;
  if (k) {
    dx__client_hs_free(ws);
    dx__pmd_free(k->z, ws->cfg);
    dx__buf_free(&k->msg, a);
    dx__free(a, k, sizeof *k);
    ws->cold = NULL;
  }
  out_free(ws);
  ws->pmd_on = false;
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
    dx__ws_set_pmd(ws, pmd);
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
  return (dx_pmd){.enabled = ws->pmd_on,
                  .server_no_context_takeover = ws->pmd_sno,
                  .client_no_context_takeover = ws->pmd_cno,
                  .server_max_window_bits = ws->pmd_sbits,
                  .client_max_window_bits = ws->pmd_cbits};
}

/* The compression streams, created at the first compressed message. */
static dx__pmd_state *pmd_state(dx_ws *ws) {
  struct dx__ws_cold *k = dx__ws_cold(ws);
  if (!k) return NULL;
  if (!k->z) {
    dx_pmd p = dx_ws_pmd(ws);
    k->z = dx__pmd_new(&p, ws->role, ws->cfg);
  }
  return k->z;
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
  int rc = dx__ws_out_reserve(ws, 14 + n);
  if (rc) return rc;
  uint8_t *dst = ws->out + ws->out_len;
  size_t h = dx_frame_header(dst, op, fin, rsv1, n, mask);
  if (n) memcpy(dst + h, p, n);
  if (mask) dx_mask(dst + h, n, mask, 0);
  ws->out_len += (uint32_t)(h + n);
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
  if (may_compress && ws->pmd_on && len >= min) {
    dx__pmd_state *z = pmd_state(ws);
    if (!z) return DX_ENOMEM;
    if (dx__pmd_can_compress(z)) {
      const uint8_t *zp;
      size_t zn;
      int rc = dx__pmd_deflate(z, data, len, &zp, &zn);
      if (rc) return rc;
      return dx__ws_write_frame(ws, op, true, true, zp, zn);
    }
  }
  return dx__ws_write_frame(ws, op, fin, false, data, len);
}

/* The general path of dx_ws_send: kept out of line so the fast path below
 * stays small (no spills, no frame set-up). */
__attribute__((noinline)) static int send_slow(dx_ws *ws, dx_opcode op,
                                               const void *data, size_t len) {
  int rc = check_can_send(ws);
  if (rc) return rc;
  if (op != DX_OP_TEXT && op != DX_OP_BINARY) return DX_EINVAL;
  if (ws->send_op) return DX_ESTATE;
  return send_data_frame(ws, op, data, len, true, true);
}

int dx_ws_send(dx_ws *ws, dx_opcode op, const void *data, size_t len) {
  /* Server frames of a 7-bit length, uncompressed: header and payload go
   * straight into the kept output buffer, the payload copied and checked
   * for ASCII in one pass. (OPEN implies no error and no close sent: both
   * leave OPEN.) */
  if (len < 126 && ws->role == DX_ROLE_SERVER && ws->ready == DX_OPEN &&
      !ws->send_op && (op == DX_OP_TEXT || op == DX_OP_BINARY) &&
      (!ws->pmd_on ||
       len < limit_or(ws->cfg->compress_min, DX_DEFAULT_COMPRESS_MIN))) {
    if (ws->out_cap - ws->out_len < 2 + len) {
      int rc = dx__ws_out_reserve(ws, 2 + len);
      if (rc) return rc;
    }
    uint8_t *dst = ws->out + ws->out_len;
    uint64_t acc = short_copy(dst + 2, data, len);
    if (op == DX_OP_TEXT && !ascii_acc(acc) &&
        !(ws->cfg->flags & DX_WS_TRUST_OUTGOING_TEXT) &&
        !dx_utf8_valid(dst + 2, len))
      return DX_EUTF8; /* not committed: out_len unchanged */
    dst[0] = (uint8_t)(0x80 | op);
    dst[1] = (uint8_t)len;
    ws->out_len += (uint32_t)(2 + len);
    return 0;
  }
  return send_slow(ws, op, data, len);
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
  if ((rc = dx__ws_out_reserve(ws, len))) return rc;
  if (len) memcpy(ws->out + ws->out_len, frame, len);
  ws->out_len += (uint32_t)len;
  return 0;
}

size_t dx_ws_output(dx_ws *ws, const uint8_t **out) {
  *out = ws->out ? ws->out + ws->out_off : NULL;
  return ws->out_len - ws->out_off;
}

/* A drained output buffer up to this size is kept for the next message:
 * allocating per message costs more than the message. dx_ws_trim() gives
 * it back once the connection goes quiet. */
#define KEEP_OUTPUT 4096

void dx_ws_consume(dx_ws *ws, size_t n) {
  size_t live = ws->out_len - ws->out_off;
  if (n < live) {
    ws->out_off += (uint32_t)n;
    return;
  }
  if (ws->out_cap > KEEP_OUTPUT) out_free(ws);
  ws->out_len = ws->out_off = 0;
}

void dx_ws_trim(dx_ws *ws) {
  if (ws->out && ws->out_len == ws->out_off) out_free(ws);
}

size_t dx_ws_buffered(const dx_ws *ws) {
  return ws->out_len - ws->out_off;
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
    if (rsv1 && !ws->pmd_on) return DX_EPROTO;
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
             len > max_message(ws) - (ws->opcode == DX_OP_CONT && ws->cold
                                          ? ws->cold->msg.len
                                          : 0)) {
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
  if (ws->pstate == DX__P_HEADER && avail >= 2) {
    size_t need = header_size(ws->in[0], ws->in[1]);
    if (avail >= need) {
      const uint8_t *h = ws->in;
      ws->in += need;
      int rc = parse_header(ws, h);
      return rc ? rc : 1;
    }
  }
  if (!avail) return 0;
  /* Split across feeds: collect it in the cold part. */
  struct dx__ws_cold *k = dx__ws_cold(ws);
  if (!k) return DX_ENOMEM;
  ws->pstate = DX__P_HDRPART;
  while (avail) {
    size_t need = k->hdr_len < 2 ? 2 : header_size(k->hdr[0], k->hdr[1]);
    if (k->hdr_len >= need) break;
    size_t take = need - k->hdr_len < avail ? need - k->hdr_len : avail;
    memcpy(k->hdr + k->hdr_len, ws->in, take);
    k->hdr_len += (uint8_t)take;
    ws->in += take;
    avail -= take;
  }
  if (k->hdr_len < 2 || k->hdr_len < header_size(k->hdr[0], k->hdr[1]))
    return 0;
  k->hdr_len = 0;
  ws->pstate = DX__P_HEADER;
  int rc = parse_header(ws, k->hdr);
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
  struct dx__ws_cold *k = ws->cold;
  if ((!k || k->ctl_len == 0) && avail >= n) {
    uint8_t *p = ws->in;
    ws->in += n;
    ws->remaining = 0;
    if (ws->role == DX_ROLE_SERVER) dx_mask(p, n, ws->mask, 0);
    ws->pstate = DX__P_HEADER;
    return deliver_control(ws, p, n, ev);
  }
  if (!k && !(k = dx__ws_cold(ws))) return DX_ENOMEM;
  size_t take = avail < n ? avail : n;
  memcpy(k->ctl + k->ctl_len, ws->in, take);
  if (ws->role == DX_ROLE_SERVER)
    ws->mask_off =
        (uint8_t)dx_mask(k->ctl + k->ctl_len, take, ws->mask, ws->mask_off);
  k->ctl_len += (uint8_t)take;
  ws->in += take;
  ws->remaining -= take;
  if (ws->remaining) return 0;
  ws->pstate = DX__P_HEADER;
  size_t len = k->ctl_len;
  k->ctl_len = 0;
  ws->held = 1; /* the event points into k->ctl */
  return deliver_control(ws, k->ctl, len, ev);
}

/* utf8: the validator state at the end of the message (0: complete). */
static int finish_message(dx_ws *ws, uint8_t *p, size_t n, dx_ws_event *ev,
                          uint32_t utf8) {
  if (ws->msg_op == DX_OP_TEXT && utf8 != 0) return DX_EUTF8;
  ev->type = ws->msg_op == DX_OP_TEXT ? DX_EV_TEXT : DX_EV_BINARY;
  ev->data = p;
  ev->len = n;
  ev->close_code = 0;
  ws->msg_op = 0;
  ws->msg_z = 0;
  return 1;
}

/* Appends a piece of a split or compressed message to cold->msg. */
static int append_piece(dx_ws *ws, uint8_t *p, size_t n, bool last) {
  struct dx__ws_cold *k = dx__ws_cold(ws);
  if (!k) return DX_ENOMEM;
  size_t before = k->msg.len;
  int rc;
  if (ws->msg_z) {
    rc = dx__pmd_inflate(k->z, p, n, last, &k->msg, max_message(ws));
    if (rc) return rc;
  } else {
    rc = dx__buf_append(&k->msg, dx__ws_alloc(ws), p, n);
    if (rc) return rc;
  }
  /* Validate as bytes arrive so an invalid text fails fast (6.1, 8.1). */
  if (ws->msg_op == DX_OP_TEXT && k->msg.len > before &&
      !dx_utf8_feed(&k->utf8, k->msg.data + before, k->msg.len - before))
    return DX_EUTF8;
  return 0;
}

static int payload_data(dx_ws *ws, dx_ws_event *ev) {
  if (ws->opcode != DX_OP_CONT) {
    ws->msg_op = ws->opcode;
    ws->msg_z = ws->rsv1;
    if (ws->cold) ws->cold->utf8 = 0;
    if (ws->msg_z && !pmd_state(ws)) return DX_ENOMEM;
    ws->opcode = DX_OP_CONT; /* later pieces of this frame continue it */
  }
  size_t avail = (size_t)(ws->in_end - ws->in);
  size_t n = avail < ws->remaining ? avail : (size_t)ws->remaining;
  uint8_t *p = ws->in;
  ws->in += n;
  ws->remaining -= n;
  bool last = ws->fin && ws->remaining == 0;
  /* Nothing assembled yet: a last piece is then the whole message, and
   * the validator starts from scratch. */
  bool assembling = ws->cold && ws->cold->msg.data;
  uint32_t utf8 = 0;
  if (n < SHORT_PAYLOAD && last && ws->mask_off == 0 && !ws->msg_z &&
      !assembling) {
    /* The common case: a short message whole in the input. */
    const uint8_t *key = ws->role == DX_ROLE_SERVER ? ws->mask : NULL;
    bool ascii = short_unmask_ascii(p, n, key);
    ws->pstate = DX__P_HEADER;
    if (ws->msg_op == DX_OP_TEXT && !ascii && !dx_utf8_feed(&utf8, p, n))
      return DX_EUTF8;
    return finish_message(ws, p, n, ev, utf8);
  }
  if (ws->role == DX_ROLE_SERVER)
    ws->mask_off = (uint8_t)dx_mask(p, n, ws->mask, ws->mask_off);
  if (last && !ws->msg_z && !assembling) {
    /* The whole message is here: deliver it where it lies. */
    ws->pstate = DX__P_HEADER;
    if (ws->msg_op == DX_OP_TEXT && !dx_utf8_feed(&utf8, p, n)) return DX_EUTF8;
    return finish_message(ws, p, n, ev, utf8);
  }
  int rc = append_piece(ws, p, n, last);
  if (rc) return rc;
  if (ws->remaining) return 0;
  ws->pstate = DX__P_HEADER;
  if (!ws->fin) return 0;
  struct dx__ws_cold *k = ws->cold;
  ws->held = 1; /* the event points into k->msg */
  return finish_message(ws, k->msg.data, k->msg.len, ev, k->utf8);
}

/* At the start of every call that is not the fast lane: what the last event
 * pointed into may go now. */
static inline void release(dx_ws *ws) {
  struct dx__ws_cold *k = ws->cold;
  if (!k) return;
  ws->held = 0;
  if (ws->msg_op == 0 && k->msg.data) dx__buf_free(&k->msg, dx__ws_alloc(ws));
  cold_release(ws);
}

static int step(dx_ws *ws, dx_ws_event *ev) {
  for (;;) {
    if (ws->pstate != DX__P_PAYLOAD) {
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

/* Non-ASCII text in the fast lane: the full validator. Out of line, and
 * reached by tail calls only, like every exit of the lane that is not
 * "delivered": the lane then needs no callee-saved registers at all. */
__attribute__((noinline)) static int fast_text(dx_ws *ws, const uint8_t *p,
                                               size_t n) {
  return dx_utf8_valid(p, n) ? 1 : fail(ws, DX_EUTF8);
}

__attribute__((noinline)) static int next_slow(dx_ws *ws, dx_ws_event *ev);

/*
 * The fast lane: a whole, unfragmented, uncompressed data frame with a 7-bit
 * length at the front of the input, and nothing else in flight. That is
 * nearly every message of real-time traffic; it is parsed and delivered
 * here without the general state machine. Anything else goes to the
 * general path (which also reports limits). Returns as dx_ws_next.
 */
__attribute__((noinline)) static int next_quiet(dx_ws *ws, dx_ws_event *ev) {
  uint8_t *in = ws->in;
  size_t avail = (size_t)(ws->in_end - in);
  if (avail < 2) return next_slow(ws, ev);
  unsigned b0 = in[0], b1 = in[1];
  /* 5.1: clients mask, servers do not. XOR-ing the expected mask bit away
   * leaves the 7-bit length, or 128+ when the bit is wrong. */
  unsigned masked = ws->role == DX_ROLE_SERVER ? 0x80u : 0u;
  size_t len = b1 ^ masked;
  /* FIN, no RSV bit, TEXT (0x81) or BINARY (0x82); a 7-bit length within
   * the limits (lane_max; the general path reports a limit). */
  if (b0 - 0x81u > 1u || len > ws->lane_max) return next_slow(ws, ev);
  size_t hl = 2 + (masked >> 5); /* + 4 key bytes when masked */
  if (avail < hl + len) return next_slow(ws, ev);
  uint8_t *p = in + hl;
  uint64_t acc = masked ? short_unmask(p, len, in + 2) : short_or(p, len);
  ws->in = p + len;
  ev->type = (dx_ws_event_type)(b0 & 0x0f); /* DX_EV_TEXT/BINARY = opcode */
  ev->data = p;
  ev->len = len;
  ev->close_code = 0;
  if (b0 == 0x81 && !ascii_acc(acc)) return fast_text(ws, p, len);
  return 1;
}

/* Everything but the fast lane, out of line so that dx_ws_next stays a
 * handful of instructions around it. */
__attribute__((noinline)) static int next_slow(dx_ws *ws, dx_ws_event *ev) {
  if (ws->err) return ws->err;
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

/* ws->st when the fast lane applies: OPEN, between frames, no message in
 * progress, nothing held (err implies CLOSED, so it is covered too). */
static inline uint32_t quiet_st(void) {
  union {
    uint32_t st;
    uint8_t b[4]; /* ready, pstate, msg_op, held */
  } q = {.b = {DX_OPEN, DX__P_HEADER, 0, 0}};
  return q.st;
}

/* Small enough to inline (LTO) into the caller's loop, whose last call of
 * every batch only finds the input used up. */
int dx_ws_next(dx_ws *ws, dx_ws_event *ev) {
  if (ws->st != quiet_st()) return next_slow(ws, ev);
  if (ws->in == ws->in_end) return DX_EAGAIN; /* (in == in_end is "none") */
  return next_quiet(ws, ev);
}
