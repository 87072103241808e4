/*
 * The frame and message engine (RFC 6455 sections 5-7, RFC 7692 framing).
 *
 * Every vector is a named byte array that is fed whole, byte by byte and
 * split at every position; all three must give the same transcript: the
 * events, the error, and the frames the engine answers with.
 */
#include "check.h"
#include "proto/internal.h"

#include <stdarg.h>

/* ---- a counting, optionally failing allocator ------------------------- */

typedef struct counting {
  size_t live, peak, allocs;
  long fail_at; /* fail the n-th allocation (1-based); 0: never */
} counting;

static void *count_realloc(void *ud, void *p, size_t old, size_t n) {
  counting *c = ud;
  if (n == 0) {
    free(p);
    c->live -= old;
    return NULL;
  }
  c->allocs++;
  if (c->fail_at && (long)c->allocs == c->fail_at) return NULL;
  void *q = realloc(p, n);
  if (!q) return NULL;
  c->live += n - old;
  if (c->live > c->peak) c->peak = c->live;
  return q;
}

/* ---- transcripts ------------------------------------------------------- */

typedef struct tr {
  char s[8192];
  size_t n;
} tr;

static void tr_add(tr *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(t->s + t->n, sizeof t->s - t->n, fmt, ap);
  va_end(ap);
  if (k > 0) t->n += (size_t)k < sizeof t->s - t->n ? (size_t)k : 0;
}

static uint32_t fnv(const uint8_t *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static void tr_payload(tr *t, const uint8_t *p, size_t n) {
  if (n <= 40) {
    for (size_t i = 0; i < n; i++)
      tr_add(t, (p[i] >= 32 && p[i] < 127) ? "%c" : "\\x%02x", p[i]);
  } else {
    tr_add(t, "<%zu bytes %08x>", n, fnv(p, n));
  }
}

static const char *ev_name(int type) {
  static const char *names[] = {"?", "TEXT", "BINARY", "PING", "PONG", "CLOSE"};
  return names[type];
}

/* Decodes frames the engine wrote (masked or not) into the transcript. */
static void tr_output(tr *t, dx_ws *ws) {
  const uint8_t *o;
  size_t n = dx_ws_output(ws, &o);
  size_t i = 0;
  while (i + 2 <= n) {
    uint8_t b0 = o[i], b1 = o[i + 1];
    uint64_t len = b1 & 0x7f;
    size_t h = 2;
    if (len == 126) {
      len = (uint64_t)o[i + 2] << 8 | o[i + 3];
      h = 4;
    } else if (len == 127) {
      len = 0;
      for (int k = 0; k < 8; k++) len = len << 8 | o[i + 2 + k];
      h = 10;
    }
    uint8_t mask[4] = {0};
    if (b1 & 0x80) {
      memcpy(mask, o + i + h, 4);
      h += 4;
    }
    uint8_t *pl = malloc(len + 1);
    for (size_t k = 0; k < len; k++) pl[k] = o[i + h + k] ^ mask[k & 3];
    tr_add(t, "|OUT%s:%x:", (b1 & 0x80) ? "m" : "", b0);
    tr_payload(t, pl, len);
    free(pl);
    i += h + len;
  }
  if (i != n) tr_add(t, "|OUT:trailing %zu", n - i);
  dx_ws_consume(ws, n);
}

typedef struct vec_opts {
  dx_role role;
  dx_pmd pmd;
  unsigned flags;
  size_t max_message, max_frame;
} vec_opts;

/* Feeds `in` split at the given chunk boundaries and returns the
 * transcript: events, final status, state and output. */
static void run(const vec_opts *o, const uint8_t *in, size_t len,
                const size_t *cuts, size_t ncuts, tr *t) {
  dx_ws_config cfg = {.role = o->role, .flags = o->flags,
                      .max_message = o->max_message,
                      .max_frame = o->max_frame};
  dx_ws *ws = dx_ws_new(&cfg);
  dx_ws_open(ws, &o->pmd);
  uint8_t *copy = malloc(len + 1);
  memcpy(copy, in, len);
  memset(t, 0, sizeof *t);
  size_t pos = 0;
  int rc = DX_EAGAIN;
  for (size_t c = 0; c <= ncuts && rc == DX_EAGAIN; c++) {
    size_t end = c < ncuts ? cuts[c] : len;
    dx_ws_feed(ws, copy + pos, end - pos);
    dx_ws_event ev;
    while ((rc = dx_ws_next(ws, &ev)) == 1) {
      tr_add(t, "%s:", ev_name(ev.type));
      if (ev.type == DX_EV_CLOSE) tr_add(t, "%u:", ev.close_code);
      tr_payload(t, ev.data, ev.len);
      tr_add(t, "|");
    }
    pos = end;
  }
  tr_add(t, "rc=%s|state=%d", rc == DX_EAGAIN ? "again" : dx_errname(rc),
         dx_ws_state(ws));
  tr_output(t, ws);
  dx_ws_free(ws);
  free(copy);
}

/* Runs whole, byte by byte and at every split point; all must agree with
 * `want`. */
static int check_vector(const char *name, const vec_opts *o, const void *in,
                        size_t len, const char *want) {
  tr t;
  run(o, in, len, NULL, 0, &t);
  if (strcmp(t.s, want) != 0) {
    fprintf(stderr, "  %s whole:\n    got  %s\n    want %s\n", name, t.s, want);
    return 0;
  }
  size_t *cuts = malloc((len + 1) * sizeof *cuts);
  for (size_t i = 0; i < len; i++) cuts[i] = i + 1;
  run(o, in, len, cuts, len ? len - 1 : 0, &t);
  if (strcmp(t.s, want) != 0) {
    fprintf(stderr, "  %s bytewise:\n    got  %s\n    want %s\n", name, t.s,
            want);
    free(cuts);
    return 0;
  }
  size_t step = len > 2048 ? len / 512 : 1;
  for (size_t k = 1; k < len; k += step) {
    size_t cut = k;
    run(o, in, len, &cut, 1, &t);
    if (strcmp(t.s, want) != 0) {
      fprintf(stderr, "  %s split at %zu:\n    got  %s\n    want %s\n", name, k,
              t.s, want);
      free(cuts);
      return 0;
    }
  }
  free(cuts);
  return 1;
}

#define VEC(o, bytes, want)                                                    \
  CHECK(check_vector(#bytes, (o), (bytes), sizeof(bytes) - 1, (want)))

static const vec_opts SERVER = {.role = DX_ROLE_SERVER};
static const vec_opts CLIENT = {.role = DX_ROLE_CLIENT};

/* ---- RFC 6455 section 5.7 examples ------------------------------------ */

static const char rfc_unmasked_hello[] = "\x81\x05Hello";
static const char rfc_masked_hello[] =
    "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
static const char rfc_fragmented[] = "\x01\x03Hel\x80\x02lo";
static const char rfc_ping[] = "\x89\x05Hello";
static const char rfc_masked_pong[] =
    "\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";

static void test_rfc6455_examples(void) {
  VEC(&CLIENT, rfc_unmasked_hello, "TEXT:Hello|rc=again|state=1");
  VEC(&SERVER, rfc_masked_hello, "TEXT:Hello|rc=again|state=1");
  VEC(&CLIENT, rfc_fragmented, "TEXT:Hello|rc=again|state=1");
  /* The client answers the ping with a masked pong carrying "Hello". */
  VEC(&CLIENT, rfc_ping, "PING:Hello|rc=again|state=1|OUTm:8a:Hello");
  VEC(&SERVER, rfc_masked_pong, "PONG:Hello|rc=again|state=1");
}

static void test_rfc6455_lengths(void) {
  /* 256 bytes binary in one unmasked frame: 82 7E 01 00. */
  uint8_t f[4 + 256];
  memcpy(f, "\x82\x7e\x01\x00", 4);
  for (int i = 0; i < 256; i++) f[4 + i] = (uint8_t)i;
  tr t;
  run(&CLIENT, f, sizeof f, NULL, 0, &t);
  tr want = {0};
  tr_add(&want, "BINARY:");
  tr_payload(&want, f + 4, 256);
  tr_add(&want, "|rc=again|state=1");
  CHECK_STR(t.s, want.s);
  CHECK(check_vector("256", &CLIENT, f, sizeof f, want.s));

  /* 64 KiB binary: 82 7F 00 00 00 00 00 01 00 00. */
  size_t n = 65536;
  uint8_t *g = malloc(10 + n);
  memcpy(g, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
  for (size_t i = 0; i < n; i++) g[10 + i] = (uint8_t)(i * 7);
  memset(&want, 0, sizeof want);
  tr_add(&want, "BINARY:");
  tr_payload(&want, g + 10, n);
  tr_add(&want, "|rc=again|state=1");
  int ok = check_vector("64k", &CLIENT, g, 10 + n, want.s);
  free(g);
  CHECK(ok);
}

/* ---- framing rules ----------------------------------------------------- */

static void test_reserved_bits_and_opcodes(void) {
  const char *fail = "rc=EPROTO|state=3|OUTm:88:\\x03\\xea";
  VEC(&CLIENT, "\xa1\x00", fail);     /* RSV2 */
  VEC(&CLIENT, "\x91\x00", fail);     /* RSV3 */
  VEC(&CLIENT, "\xc1\x00", fail);     /* RSV1 without permessage-deflate */
  VEC(&CLIENT, "\x83\x00", fail);     /* opcode 3 */
  VEC(&CLIENT, "\x87\x00", fail);     /* opcode 7 */
  VEC(&CLIENT, "\x8b\x00", fail);     /* opcode 0xB */
  VEC(&CLIENT, "\x8f\x00", fail);     /* opcode 0xF */
  /* A good frame before the bad one is still delivered. */
  VEC(&CLIENT, "\x81\x02hi\x83\x00", "TEXT:hi|rc=EPROTO|state=3|OUTm:88:\\x03\\xea");
}

static void test_masking_rules(void) {
  /* A server requires masked frames; a client rejects them (5.1). */
  VEC(&SERVER, "\x81\x02hi", "rc=EPROTO|state=3|OUT:88:\\x03\\xea");
  VEC(&CLIENT, rfc_masked_hello, "rc=EPROTO|state=3|OUTm:88:\\x03\\xea");
}

static void test_control_frame_rules(void) {
  const char *fail = "rc=EPROTO|state=3|OUTm:88:\\x03\\xea";
  VEC(&CLIENT, "\x09\x00", fail); /* fragmented ping */
  /* 126-byte ping */
  uint8_t big[4 + 126] = {0x89, 126, 0, 126};
  memset(big + 4, 'x', 126);
  CHECK(check_vector("ping126", &CLIENT, big, sizeof big, fail));
  /* 125-byte ping is fine and echoed. */
  uint8_t ok[2 + 125] = {0x89, 125};
  memset(ok + 2, 'y', 125);
  tr want = {0};
  tr_add(&want, "PING:");
  tr_payload(&want, ok + 2, 125);
  tr_add(&want, "|rc=again|state=1|OUTm:8a:");
  tr_payload(&want, ok + 2, 125);
  CHECK(check_vector("ping125", &CLIENT, ok, sizeof ok, want.s));
  /* Control frames between fragments of a message (5.4). */
  VEC(&CLIENT, "\x01\x03Hel\x89\x01p\x8a\x01q\x80\x02lo",
      "PING:p|PONG:q|TEXT:Hello|rc=again|state=1|OUTm:8a:p");
}

static void test_fragmentation_rules(void) {
  const char *fail = "rc=EPROTO|state=3|OUTm:88:\\x03\\xea";
  VEC(&CLIENT, "\x80\x02lo", fail);             /* continuation first */
  VEC(&CLIENT, "\x01\x03Hel\x81\x02lo", fail);  /* new message mid-way */
  VEC(&CLIENT, "\x02\x01" "a\x00\x01" "b\x80\x01" "c",
      "BINARY:abc|rc=again|state=1");
  /* Empty fragments and empty messages. */
  VEC(&CLIENT, "\x01\x00\x00\x00\x80\x00", "TEXT:|rc=again|state=1");
  VEC(&CLIENT, "\x82\x00\x81\x00", "BINARY:|TEXT:|rc=again|state=1");
}

static void test_length_encoding(void) {
  /* 64-bit length with the most significant bit set (5.2). */
  VEC(&CLIENT, "\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x01",
      "rc=EPROTO|state=3|OUTm:88:\\x03\\xea");
  /* 16-bit length form for a short payload is accepted. */
  VEC(&CLIENT, "\x82\x7e\x00\x02zz", "BINARY:zz|rc=again|state=1");
}

/* ---- UTF-8 ------------------------------------------------------------- */

static void test_utf8_text(void) {
  const char *bad = "rc=EUTF8|state=3|OUTm:88:\\x03\\xef";
  VEC(&CLIENT, "\x81\x02\xc0\xaf", bad);             /* overlong */
  VEC(&CLIENT, "\x81\x03\xed\xa0\x80", bad);         /* surrogate */
  VEC(&CLIENT, "\x81\x04\xf4\x90\x80\x80", bad);     /* > U+10FFFF */
  VEC(&CLIENT, "\x81\x02\xce\xba\x81\x01\xce", "TEXT:\\xce\\xba|" "rc=EUTF8|state=3|OUTm:88:\\x03\\xef");
  /* A code point split across fragments is fine... */
  VEC(&CLIENT, "\x01\x01\xce\x80\x01\xba", "TEXT:\\xce\\xba|rc=again|state=1");
  /* ...and an impossible byte fails at once, before the message ends. */
  VEC(&CLIENT, "\x01\x02" "a\xff", bad);
  /* Binary messages are not validated. */
  VEC(&CLIENT, "\x82\x01\xff", "BINARY:\\xff|rc=again|state=1");
}

/* ---- close ------------------------------------------------------------- */

static void close_frame(uint8_t *f, unsigned code) {
  f[0] = 0x88;
  f[1] = 2;
  f[2] = (uint8_t)(code >> 8);
  f[3] = (uint8_t)code;
}

static void test_close_codes(void) {
  static const unsigned valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                   1010, 1011, 1012, 1013, 1014, 3000, 3999,
                                   4000, 4999};
  static const unsigned invalid[] = {0,    1,    999,  1004, 1005, 1006,
                                     1015, 1016, 1100, 2000, 2999, 5000,
                                     6000, 65535};
  for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
    uint8_t f[4];
    close_frame(f, valid[i]);
    tr want = {0};
    tr_add(&want, "CLOSE:%u:|rc=again|state=3|OUTm:88:", valid[i]);
    uint8_t echo[2] = {f[2], f[3]};
    tr_payload(&want, echo, 2);
    CHECK(check_vector("valid close", &CLIENT, f, 4, want.s));
    CHECK(dx_close_code_valid(valid[i]));
  }
  for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
    uint8_t f[4];
    close_frame(f, invalid[i]);
    CHECK(check_vector("invalid close", &CLIENT, f, 4,
                       "rc=EPROTO|state=3|OUTm:88:\\x03\\xea"));
    CHECK(!dx_close_code_valid(invalid[i]));
  }
}

static void test_close_payloads(void) {
  /* Empty close: echoed empty, code reported as 1005. */
  VEC(&CLIENT, "\x88\x00", "CLOSE:1005:|rc=again|state=3|OUTm:88:");
  /* A one-byte close payload is a protocol error. */
  VEC(&CLIENT, "\x88\x01\x03", "rc=EPROTO|state=3|OUTm:88:\\x03\\xea");
  /* The reason must be UTF-8. */
  VEC(&CLIENT, "\x88\x04\x03\xe8\xff\xfe", "rc=EUTF8|state=3|OUTm:88:\\x03\\xef");
  VEC(&CLIENT, "\x88\x05\x03\xe8" "bye",
      "CLOSE:1000:bye|rc=again|state=3|OUTm:88:\\x03\\xe8");
  /* Nothing after a close is read. */
  VEC(&CLIENT, "\x88\x00\x81\x02hi\xff\xff", "CLOSE:1005:|rc=again|state=3|OUTm:88:");
}

static void test_close_handshake_states(void) {
  dx_ws_config cfg = {.role = DX_ROLE_SERVER};
  dx_ws *ws = dx_ws_new(&cfg);
  CHECK_INT(dx_ws_state(ws), DX_CONNECTING);
  CHECK_INT(dx_ws_send(ws, DX_OP_TEXT, "x", 1), DX_ESTATE);
  CHECK_INT(dx_ws_open(ws, NULL), 0);
  CHECK_INT(dx_ws_state(ws), DX_OPEN);
  CHECK_INT(dx_ws_close(ws, 1005, NULL, 0), DX_ECLOSECODE);
  CHECK_INT(dx_ws_close(ws, 1000, "\xff", 1), DX_EUTF8);
  char longr[124];
  memset(longr, 'a', sizeof longr);
  CHECK_INT(dx_ws_close(ws, 1000, longr, 124), DX_EINVAL);
  CHECK_INT(dx_ws_close(ws, 4001, "done", 4), 0);
  CHECK_INT(dx_ws_state(ws), DX_CLOSING);
  CHECK_INT(dx_ws_send(ws, DX_OP_TEXT, "x", 1), DX_ECLOSED);
  CHECK_INT(dx_ws_ping(ws, "x", 1), DX_ECLOSED);
  const uint8_t *o;
  size_t n = dx_ws_output(ws, &o);
  CHECK_MEM(o, n, "\x88\x06\x0f\xa1" "done", 8);
  dx_ws_consume(ws, n);
  /* Data still arrives while closing; then the peer's close ends it. */
  uint8_t in[] = "\x81\x82\0\0\0\0hi\x88\x82\0\0\0\0\x0f\xa1";
  dx_ws_feed(ws, in, sizeof in - 1);
  dx_ws_event ev;
  CHECK_INT(dx_ws_next(ws, &ev), 1);
  CHECK_INT(ev.type, DX_EV_TEXT);
  CHECK_INT(dx_ws_next(ws, &ev), 1);
  CHECK_INT(ev.type, DX_EV_CLOSE);
  CHECK_INT(ev.close_code, 4001);
  CHECK_INT(dx_ws_state(ws), DX_CLOSED);
  CHECK_INT(dx_ws_output(ws, &o), 0); /* no second close frame */
  CHECK_INT(dx_ws_next(ws, &ev), DX_EAGAIN);
  dx_ws_free(ws);
}

static void test_ping_policy(void) {
  vec_opts o = CLIENT;
  o.flags = DX_WS_NO_AUTO_PONG;
  VEC(&o, rfc_ping, "PING:Hello|rc=again|state=1");
}

/* ---- limits ------------------------------------------------------------ */

static void test_limits(void) {
  vec_opts o = CLIENT;
  o.max_message = 4;
  VEC(&o, "\x82\x04" "abcd", "BINARY:abcd|rc=again|state=1");
  VEC(&o, "\x82\x05" "abcde", "rc=ETOOBIG|state=3|OUTm:88:\\x03\\xf1");
  /* Across fragments: the third fragment would pass the limit. */
  VEC(&o, "\x02\x02" "ab\x00\x02" "cd\x80\x01" "e",
      "rc=ETOOBIG|state=3|OUTm:88:\\x03\\xf1");
  o.max_message = 0;
  o.max_frame = 3;
  VEC(&o, "\x02\x03" "abc\x80\x03" "def", "BINARY:abcdef|rc=again|state=1");
  VEC(&o, "\x82\x04" "abcd", "rc=ETOOBIG|state=3|OUTm:88:\\x03\\xf1");
}

static void test_limit_before_allocation(void) {
  /* A header announcing 1 GiB is refused with no allocation for it. */
  counting c = {0};
  dx_ws_config cfg = {.role = DX_ROLE_CLIENT,
                      .alloc = {count_realloc, &c}};
  dx_ws *ws = dx_ws_new(&cfg);
  dx_ws_open(ws, NULL);
  uint8_t in[] = "\x82\x7f\x00\x00\x00\x00\x40\x00\x00\x00zzzz";
  dx_ws_feed(ws, in, sizeof in - 1);
  dx_ws_event ev;
  CHECK_INT(dx_ws_next(ws, &ev), DX_ETOOBIG);
  CHECK(c.peak < 4096);
  dx_ws_free(ws);
  CHECK_INT(c.live, 0);
}

static void test_no_allocation_when_whole(void) {
  counting c = {0};
  dx_ws_config cfg = {.role = DX_ROLE_SERVER, .alloc = {count_realloc, &c}};
  dx_ws *ws = dx_ws_new(&cfg);
  dx_ws_open(ws, NULL);
  size_t before = c.allocs;
  uint8_t in[200];
  size_t n = 0;
  for (int i = 0; i < 10; i++) {
    static const uint8_t key[4] = {1, 2, 3, 4};
    n += dx_frame_header(in + n, DX_OP_TEXT, true, false, 5, key);
    memcpy(in + n, "hello", 5);
    dx_mask(in + n, 5, key, 0);
    n += 5;
  }
  dx_ws_feed(ws, in, n);
  dx_ws_event ev;
  int msgs = 0;
  while (dx_ws_next(ws, &ev) == 1) {
    CHECK(ev.data >= in && ev.data < in + n); /* in place */
    CHECK_MEM(ev.data, ev.len, "hello", 5);
    msgs++;
  }
  CHECK_INT(msgs, 10);
  CHECK_INT(c.allocs, before);
  dx_ws_free(ws);
}

/* ---- round trips between a client and a server engine ----------------- */

static int pump(dx_ws *from, dx_ws *to, tr *t) {
  const uint8_t *o;
  size_t n = dx_ws_output(from, &o);
  uint8_t *copy = malloc(n + 1);
  memcpy(copy, o, n);
  dx_ws_consume(from, n);
  dx_ws_feed(to, copy, n);
  dx_ws_event ev;
  int rc;
  while ((rc = dx_ws_next(to, &ev)) == 1) {
    tr_add(t, "%s:", ev_name(ev.type));
    if (ev.type == DX_EV_CLOSE) tr_add(t, "%u:", ev.close_code);
    tr_payload(t, ev.data, ev.len);
    tr_add(t, "|");
  }
  free(copy);
  return rc;
}

static void round_trip(const dx_pmd *pmd, size_t size, size_t compress_min) {
  dx_ws_config ccfg = {.role = DX_ROLE_CLIENT, .compress_min = compress_min};
  dx_ws_config scfg = {.role = DX_ROLE_SERVER, .compress_min = compress_min};
  dx_ws *c = dx_ws_new(&ccfg), *s = dx_ws_new(&scfg);
  dx_ws_open(c, pmd);
  dx_ws_open(s, pmd);
  uint8_t *m = malloc(size + 1);
  for (size_t i = 0; i < size; i++) m[i] = (uint8_t)('a' + (i * 31 + i / 7) % 26);
  tr want = {0}, got = {0};
  for (int k = 0; k < 3; k++) {
    tr_add(&want, "TEXT:");
    tr_payload(&want, m, size);
    tr_add(&want, "|BINARY:");
    tr_payload(&want, m, size);
    tr_add(&want, "|");
    if (dx_ws_send(c, DX_OP_TEXT, m, size) || dx_ws_send(c, DX_OP_BINARY, m, size))
      CHECK__FAIL("send failed");
  }
  if (pump(c, s, &got) != DX_EAGAIN) CHECK__FAIL("client->server failed");
  if (strcmp(got.s, want.s)) CHECK__FAIL("c->s size %zu: %s", size, got.s);
  memset(&got, 0, sizeof got);
  for (int k = 0; k < 3; k++)
    if (dx_ws_send(s, DX_OP_TEXT, m, size) || dx_ws_send(s, DX_OP_BINARY, m, size))
      CHECK__FAIL("send failed");
  if (pump(s, c, &got) != DX_EAGAIN) CHECK__FAIL("server->client failed");
  if (strcmp(got.s, want.s)) CHECK__FAIL("s->c size %zu: %s", size, got.s);
  /* Closing handshake. */
  memset(&got, 0, sizeof got);
  dx_ws_close(c, 1000, "bye", 3);
  pump(c, s, &got);
  pump(s, c, &got);
  CHECK_STR(got.s, "CLOSE:1000:bye|CLOSE:1000:|");
  CHECK_INT(dx_ws_state(c), DX_CLOSED);
  CHECK_INT(dx_ws_state(s), DX_CLOSED);
  dx_ws_free(c);
  dx_ws_free(s);
  free(m);
}

static void test_round_trips(void) {
  static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 1 << 20};
  dx_pmd off = {0};
  dx_pmd on = {.enabled = true};
  dx_pmd nct = {.enabled = true, .server_no_context_takeover = true,
                .client_no_context_takeover = true,
                .server_max_window_bits = 10, .client_max_window_bits = 9};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    round_trip(&off, sizes[i], 0);
    round_trip(&on, sizes[i], 1);
    round_trip(&nct, sizes[i], 1);
    if (check__cur_failed) return;
  }
}

/* The short-payload paths (fast lane unmasking, the server's copying send)
 * work in 16/8/4/2/1-byte steps with an overlapping 16-byte tail: every
 * length up to 125, and a non-ASCII byte at every position of each. */
static int one_frame(dx_ws *from, dx_ws *to, dx_opcode op, const uint8_t *m,
                     size_t n, dx_ws_event *ev) {
  int rc = dx_ws_send(from, op, m, n);
  if (rc) return rc;
  const uint8_t *o;
  size_t len = dx_ws_output(from, &o);
  static uint8_t buf[256];
  memcpy(buf, o, len); /* the receiver unmasks in place */
  dx_ws_consume(from, len);
  dx_ws_feed(to, buf, len);
  rc = dx_ws_next(to, ev);
  if (rc == 1 && (ev->len != n || (n && memcmp(ev->data, m, n))))
    return -9999;
  return rc;
}

static void test_short_payloads(void) {
  dx_ws_config ccfg = {.role = DX_ROLE_CLIENT};
  dx_ws_config scfg = {.role = DX_ROLE_SERVER};
  uint8_t m[125];
  dx_ws_event ev;
  for (size_t n = 0; n <= 125; n++) {
    for (size_t i = 0; i < n; i++) m[i] = (uint8_t)(' ' + (i * 7 + n) % 90);
    dx_ws *c = dx_ws_new(&ccfg), *s = dx_ws_new(&scfg);
    dx_ws_open(c, NULL);
    dx_ws_open(s, NULL);
    /* Binary with every byte value class, both ways. */
    uint8_t b[125];
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(i * 97 + n * 13);
    if (one_frame(c, s, DX_OP_BINARY, b, n, &ev) != 1 ||
        one_frame(s, c, DX_OP_BINARY, b, n, &ev) != 1 ||
        one_frame(c, s, DX_OP_TEXT, m, n, &ev) != 1 ||
        one_frame(s, c, DX_OP_TEXT, m, n, &ev) != 1)
      CHECK__FAIL("length %zu", n);
    for (size_t j = 0; j < n; j++) {
      /* A lone continuation byte at j: invalid, whichever step holds it. */
      uint8_t bad[125];
      memcpy(bad, m, n);
      bad[j] = 0x80;
      if (dx_ws_send(s, DX_OP_TEXT, bad, n) != DX_EUTF8 ||
          dx_ws_buffered(s) != 0)
        CHECK__FAIL("server sent invalid text, length %zu at %zu", n, j);
      /* Valid two-byte UTF-8 at j: delivered exactly. */
      if (j + 1 < n) {
        uint8_t good[125];
        memcpy(good, m, n);
        good[j] = 0xc3;
        good[j + 1] = 0xa9;
        if (one_frame(c, s, DX_OP_TEXT, good, n, &ev) != 1 ||
            one_frame(s, c, DX_OP_TEXT, good, n, &ev) != 1)
          CHECK__FAIL("valid text, length %zu at %zu", n, j);
      }
    }
    /* Last: invalid text from the client fails the server's engine. */
    if (n) {
      uint8_t bad[125];
      memcpy(bad, m, n);
      bad[n - 1] = 0xff;
      CHECK_INT(one_frame(c, s, DX_OP_BINARY, bad, n, &ev), 1);
      dx_ws_config trust = {.role = DX_ROLE_CLIENT,
                            .flags = DX_WS_TRUST_OUTGOING_TEXT};
      dx_ws *t = dx_ws_new(&trust);
      dx_ws_open(t, NULL);
      CHECK_INT(one_frame(t, s, DX_OP_TEXT, bad, n, &ev), DX_EUTF8);
      dx_ws_free(t);
    }
    dx_ws_free(c);
    dx_ws_free(s);
    if (check__cur_failed) return;
  }
}

static void test_fragmented_send(void) {
  dx_ws_config ccfg = {.role = DX_ROLE_CLIENT};
  dx_ws_config scfg = {.role = DX_ROLE_SERVER};
  dx_ws *c = dx_ws_new(&ccfg), *s = dx_ws_new(&scfg);
  dx_ws_open(c, NULL);
  dx_ws_open(s, NULL);
  CHECK_INT(dx_ws_send_fragment(c, DX_OP_CONT, "x", 1, true), DX_ESTATE);
  CHECK_INT(dx_ws_send_fragment(c, DX_OP_TEXT, "\xce", 1, false), 0);
  CHECK_INT(dx_ws_send(c, DX_OP_TEXT, "x", 1), DX_ESTATE);
  CHECK_INT(dx_ws_ping(c, "p", 1), 0);
  CHECK_INT(dx_ws_send_fragment(c, DX_OP_CONT, "\xba", 1, true), 0);
  tr got = {0};
  CHECK_INT(pump(c, s, &got), DX_EAGAIN);
  CHECK_STR(got.s, "PING:p|TEXT:\\xce\\xba|");
  dx_ws_free(c);
  dx_ws_free(s);
}

/* ---- RFC 7692 section 7.2.3 -------------------------------------------- */

static void test_rfc7692_examples(void) {
  vec_opts o = CLIENT;
  o.pmd.enabled = true;
  /* 7.2.3.1: "Hello" compressed in one frame. */
  VEC(&o, "\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00", "TEXT:Hello|rc=again|state=1");
  /* 7.2.3.1: the same message in two fragments. */
  VEC(&o, "\x41\x03\xf2\x48\xcd\x80\x04\xc9\xc9\x07\x00",
      "TEXT:Hello|rc=again|state=1");
  /* 7.2.3.2: two messages sharing the LZ77 window. */
  VEC(&o, "\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00\xc1\x05\xf2\x00\x11\x00\x00",
      "TEXT:Hello|TEXT:Hello|rc=again|state=1");
  /* 7.2.3.3: a stored (uncompressed) DEFLATE block. */
  VEC(&o, "\xc1\x0b\x00\x05\x00\xfa\xff\x48\x65\x6c\x6c\x6f\x00",
      "TEXT:Hello|rc=again|state=1");
  /* RSV1 on a continuation frame is a protocol error (RFC 7692 6). */
  VEC(&o, "\x41\x03\xf2\x48\xcd\xc0\x04\xc9\xc9\x07\x00",
      "rc=EPROTO|state=3|OUTm:88:\\x03\\xea");
  /* Garbage compressed data closes with 1007. */
  VEC(&o, "\xc1\x02\xff\xff", "rc=EDEFLATE|state=3|OUTm:88:\\x03\\xef");

  /* Sending: a server compresses "Hello" to exactly the RFC's frame. */
  dx_ws_config cfg = {.role = DX_ROLE_SERVER, .compress_min = 1};
  dx_ws *ws = dx_ws_new(&cfg);
  dx_pmd on = {.enabled = true};
  dx_ws_open(ws, &on);
  CHECK_INT(dx_ws_send(ws, DX_OP_TEXT, "Hello", 5), 0);
  const uint8_t *out;
  size_t n = dx_ws_output(ws, &out);
  CHECK_MEM(out, n, "\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00", 9);
  dx_ws_consume(ws, n);
  CHECK_INT(dx_ws_send(ws, DX_OP_TEXT, "Hello", 5), 0);
  n = dx_ws_output(ws, &out);
  CHECK_MEM(out, n, "\xc1\x05\xf2\x00\x11\x00\x00", 7);
  dx_ws_free(ws);
}

static void test_deflate_bomb(void) {
  /* 1 MiB of zeros compresses to ~1 KiB; with a 64 KiB limit the engine
   * must close with 1009 and never hold much more than the limit. */
  dx_ws_config scfg = {.role = DX_ROLE_SERVER, .compress_min = 1};
  dx_ws *s = dx_ws_new(&scfg);
  dx_pmd on = {.enabled = true};
  dx_ws_open(s, &on);
  size_t big = 1 << 20;
  uint8_t *zeros = calloc(1, big);
  CHECK_INT(dx_ws_send(s, DX_OP_BINARY, zeros, big), 0);
  free(zeros);
  const uint8_t *o;
  size_t n = dx_ws_output(s, &o);
  CHECK(n < 8192);
  uint8_t *copy = malloc(n);
  memcpy(copy, o, n);
  dx_ws_free(s);

  counting c = {0};
  dx_ws_config ccfg = {.role = DX_ROLE_CLIENT, .max_message = 65536,
                       .alloc = {count_realloc, &c}};
  dx_ws *cl = dx_ws_new(&ccfg);
  dx_ws_open(cl, &on);
  dx_ws_feed(cl, copy, n);
  dx_ws_event ev;
  CHECK_INT(dx_ws_next(cl, &ev), DX_ETOOBIG);
  /* zlib's inflate state (~7 KiB + 32 KiB window) plus at most the limit. */
  CHECK(c.peak < 65536 + 64 * 1024);
  n = dx_ws_output(cl, &o);
  CHECK(n >= 4 && o[0] == 0x88);
  dx_ws_free(cl);
  CHECK_INT(c.live, 0);
  free(copy);
}

/* ---- every allocation failure is handled ------------------------------ */

static int scenario(counting *c) {
  dx_ws_config ccfg = {.role = DX_ROLE_CLIENT, .compress_min = 1,
                       .alloc = {count_realloc, c}};
  dx_ws_config scfg = ccfg;
  scfg.role = DX_ROLE_SERVER;
  dx_ws *cl = dx_ws_new(&ccfg);
  dx_ws *sv = dx_ws_new(&scfg);
  int rc = DX_ENOMEM;
  if (!cl || !sv) goto done;
  dx_pmd on = {.enabled = true};
  dx_ws_open(cl, &on);
  dx_ws_open(sv, &on);
  char msg[300];
  memset(msg, 'q', sizeof msg);
  if ((rc = dx_ws_send(cl, DX_OP_TEXT, msg, sizeof msg))) goto done;
  if ((rc = dx_ws_send_fragment(cl, DX_OP_BINARY, msg, 10, false))) goto done;
  if ((rc = dx_ws_ping(cl, "p", 1))) goto done;
  if ((rc = dx_ws_send_fragment(cl, DX_OP_CONT, msg, 10, true))) goto done;
  if ((rc = dx_ws_close(cl, 1000, NULL, 0))) goto done;
  const uint8_t *o;
  size_t n = dx_ws_output(cl, &o);
  uint8_t *copy = malloc(n);
  memcpy(copy, o, n);
  /* Feed in two halves so the split paths allocate too. */
  dx_ws_event ev;
  dx_ws_feed(sv, copy, n / 2);
  while ((rc = dx_ws_next(sv, &ev)) == 1) {}
  if (rc == DX_EAGAIN) {
    dx_ws_feed(sv, copy + n / 2, n - n / 2);
    while ((rc = dx_ws_next(sv, &ev)) == 1) {}
  }
  free(copy);
  if (rc == DX_EAGAIN) rc = 0;
done:
  dx_ws_free(cl);
  dx_ws_free(sv);
  return rc;
}

static void test_failmalloc(void) {
  counting probe = {0};
  CHECK_INT(scenario(&probe), 0);
  size_t total = probe.allocs;
  CHECK(total > 3);
  for (size_t i = 1; i <= total; i++) {
    counting c = {.fail_at = (long)i};
    int rc = scenario(&c);
    if (rc != 0 && rc != DX_ENOMEM)
      CHECK__FAIL("allocation %zu: %s", i, dx_errname(rc));
    CHECK_INT(c.live, 0);
  }
}

int main(void) {
  RUN(test_rfc6455_examples);
  RUN(test_rfc6455_lengths);
  RUN(test_reserved_bits_and_opcodes);
  RUN(test_masking_rules);
  RUN(test_control_frame_rules);
  RUN(test_fragmentation_rules);
  RUN(test_length_encoding);
  RUN(test_utf8_text);
  RUN(test_close_codes);
  RUN(test_close_payloads);
  RUN(test_close_handshake_states);
  RUN(test_ping_policy);
  RUN(test_limits);
  RUN(test_limit_before_allocation);
  RUN(test_no_allocation_when_whole);
  RUN(test_round_trips);
  RUN(test_short_payloads);
  RUN(test_fragmented_send);
  RUN(test_rfc7692_examples);
  RUN(test_deflate_bomb);
  RUN(test_failmalloc);
  return CHECK_DONE();
}
