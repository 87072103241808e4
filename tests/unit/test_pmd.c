/* permessage-deflate: negotiation (RFC 7692 7.1) and streams (7.2). */
#define ZLIB_CONST
#include "check.h"
#include "proto/internal.h"

#include <zlib.h>

/* ---- helpers ------------------------------------------------------------ */

#define EXT "Sec-WebSocket-Extensions"

static dx_header hdr(const char *name, const char *value) {
  dx_header h = {name, strlen(name), value, strlen(value)};
  return h;
}

/* Negotiates a single Sec-WebSocket-Extensions line. */
static bool neg1(const char *value, const dx_pmd *policy, dx_pmd *out) {
  dx_header h = hdr(EXT, value);
  return dx__pmd_negotiate(&h, 1, policy, out);
}

static int accept1(const char *value, const dx_pmd *offer, dx_pmd *out) {
  dx_header h = hdr(EXT, value);
  return dx__pmd_client_accept(&h, 1, offer, out);
}

static const dx_pmd on = {.enabled = true};

#define DUP_SNCT                                                               \
  "permessage-deflate; server_no_context_takeover; "                           \
  "server_no_context_takeover"

/* An allocator that counts live bytes, remembers the peak and can fail the
 * n-th allocation (failmalloc). */
typedef struct counter {
  size_t live, peak, calls;
  size_t fail_at; /* 1-based; 0: never */
} counter;

static void *count_realloc(void *ud, void *p, size_t old, size_t n) {
  counter *c = ud;
  if (n == 0) {
    free(p);
    c->live -= old;
    return NULL;
  }
  if (++c->calls == c->fail_at) return NULL;
  void *q = realloc(p, n);
  if (!q) return NULL;
  c->live = c->live - old + n;
  if (c->live > c->peak) c->peak = c->live;
  return q;
}

static dx_ws_config counted(counter *c) {
  dx_ws_config cfg = {0};
  cfg.alloc.realloc = count_realloc;
  cfg.alloc.ud = c;
  return cfg;
}

/* Inflates one whole message given as `parts` pieces, split at the offsets
 * in cut[] (ascending), the last with fin. */
static int inflate_cuts(dx__pmd_state *z, const uint8_t *in, size_t len,
                        const size_t *cut, size_t ncut, dx__buf *out,
                        size_t limit) {
  size_t at = 0;
  for (size_t i = 0; i < ncut; i++) {
    int rc = dx__pmd_inflate(z, in + at, cut[i] - at, false, out, limit);
    if (rc) return rc;
    at = cut[i];
  }
  return dx__pmd_inflate(z, in + at, len - at, true, out, limit);
}

static int inflate_whole(dx__pmd_state *z, const uint8_t *in, size_t len,
                         dx__buf *out, size_t limit) {
  return inflate_cuts(z, in, len, NULL, 0, out, limit);
}

static int inflate_bytewise(dx__pmd_state *z, const uint8_t *in, size_t len,
                            dx__buf *out, size_t limit) {
  for (size_t i = 0; i < len; i++) {
    int rc = dx__pmd_inflate(z, in + i, 1, false, out, limit);
    if (rc) return rc;
  }
  return dx__pmd_inflate(z, NULL, 0, true, out, limit);
}

/* A compressible but not trivial message. */
static void fill_text(uint8_t *p, size_t n, unsigned seed) {
  static const char *words[] = {"alpha ",   "beta ",     "gamma ", "delta ",
                                "epsilon ", "{\"seq\":", "42}, "};
  size_t at = 0;
  while (at < n) {
    seed = seed * 1103515245u + 12345u;
    const char *w = words[(seed >> 16) % 7];
    for (size_t i = 0; w[i] && at < n; i++)
      p[at++] = (uint8_t)w[i];
  }
}

static void fill_random(uint8_t *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    p[i] = (uint8_t)(seed >> 16);
  }
}

/* ---- negotiation: server ------------------------------------------------ */

static void test_negotiate_plain(void) {
  dx_pmd r;
  CHECK(neg1("permessage-deflate", &on, &r));
  CHECK(r.enabled);
  CHECK(!r.server_no_context_takeover && !r.client_no_context_takeover);
  CHECK_INT(r.server_max_window_bits, 0);
  CHECK_INT(r.client_max_window_bits, 0);
  char buf[128];
  CHECK_INT(dx__pmd_format_response(&r, buf, sizeof buf), 18);
  CHECK_STR(buf, "permessage-deflate");
}

static void test_negotiate_disabled_policy(void) {
  dx_pmd off = {0}, r;
  CHECK(!neg1("permessage-deflate", &off, &r));
  CHECK(!r.enabled);
  CHECK(!neg1("permessage-deflate", NULL, &r));
  dx_header h = hdr("Sec-WebSocket-Protocol", "permessage-deflate");
  CHECK(!dx__pmd_negotiate(&h, 1, &on, &r));
  CHECK(!dx__pmd_negotiate(NULL, 0, &on, &r));
}

static void test_negotiate_offer_params(void) {
  dx_pmd r;
  CHECK(neg1("permessage-deflate; server_no_context_takeover; "
             "client_no_context_takeover; server_max_window_bits=10; "
             "client_max_window_bits=12",
             &on, &r));
  CHECK(r.server_no_context_takeover && r.client_no_context_takeover);
  CHECK_INT(r.server_max_window_bits, 10);
  CHECK_INT(r.client_max_window_bits, 12);
  char buf[200];
  CHECK(dx__pmd_format_response(&r, buf, sizeof buf) > 0);
  CHECK_STR(buf, "permessage-deflate; server_no_context_takeover; "
                 "client_no_context_takeover; server_max_window_bits=10; "
                 "client_max_window_bits=12");
  /* Case-insensitive names, whitespace around the separators. */
  dx_header h = hdr("sec-websocket-extensions",
                    "PerMessage-Deflate ;\tServer_Max_Window_Bits = 9 ");
  CHECK(dx__pmd_negotiate(&h, 1, &on, &r));
  CHECK_INT(r.server_max_window_bits, 9);
}

static void test_negotiate_server_demands(void) {
  dx_pmd pol = {.enabled = true,
                .server_no_context_takeover = true,
                .client_no_context_takeover = true},
         r;
  CHECK(neg1("permessage-deflate", &pol, &r));
  CHECK(r.server_no_context_takeover && r.client_no_context_takeover);
  char buf[128];
  CHECK(dx__pmd_format_response(&r, buf, sizeof buf) > 0);
  CHECK_STR(buf, "permessage-deflate; server_no_context_takeover; "
                 "client_no_context_takeover");
}

static void test_negotiate_server_window(void) {
  dx_pmd pol = {.enabled = true}, r;
  /* The client's limit is echoed (7.1.2.1)... */
  CHECK(neg1("permessage-deflate; server_max_window_bits=10", &pol, &r));
  CHECK_INT(r.server_max_window_bits, 10);
  CHECK(neg1("permessage-deflate; server_max_window_bits=15", &pol, &r));
  CHECK_INT(r.server_max_window_bits, 15);
  /* ...or lowered to the policy's... */
  pol.server_max_window_bits = 9;
  CHECK(neg1("permessage-deflate; server_max_window_bits=10", &pol, &r));
  CHECK_INT(r.server_max_window_bits, 9);
  /* ...never raised to it. */
  pol.server_max_window_bits = 12;
  CHECK(neg1("permessage-deflate; server_max_window_bits=10", &pol, &r));
  CHECK_INT(r.server_max_window_bits, 10);
  /* Unasked, a smaller server window is announced anyway. */
  CHECK(neg1("permessage-deflate", &pol, &r));
  CHECK_INT(r.server_max_window_bits, 12);
  pol.server_max_window_bits = 15;
  CHECK(neg1("permessage-deflate", &pol, &r));
  CHECK_INT(r.server_max_window_bits, 0);
  /* 8 is accepted; the compressor then stays off (see can_compress). */
  CHECK(neg1("permessage-deflate; server_max_window_bits=8", &on, &r));
  CHECK_INT(r.server_max_window_bits, 8);
}

static void test_negotiate_client_window(void) {
  dx_pmd pol = {.enabled = true, .client_max_window_bits = 10}, r;
  /* Sent only when offered (7.1.2.2). */
  CHECK(neg1("permessage-deflate", &pol, &r));
  CHECK_INT(r.client_max_window_bits, 0);
  CHECK(neg1("permessage-deflate; client_max_window_bits", &pol, &r));
  CHECK_INT(r.client_max_window_bits, 10);
  CHECK(neg1("permessage-deflate; client_max_window_bits=12", &pol, &r));
  CHECK_INT(r.client_max_window_bits, 10);
  CHECK(neg1("permessage-deflate; client_max_window_bits=9", &pol, &r));
  CHECK_INT(r.client_max_window_bits, 9);
  /* No wish: the client's hint is echoed, a bare offer left alone. */
  CHECK(neg1("permessage-deflate; client_max_window_bits=12", &on, &r));
  CHECK_INT(r.client_max_window_bits, 12);
  CHECK(neg1("permessage-deflate; client_max_window_bits", &on, &r));
  CHECK_INT(r.client_max_window_bits, 0);
}

static void test_negotiate_quoted(void) {
  dx_pmd r;
  CHECK(neg1("permessage-deflate; server_max_window_bits=\"10\"", &on, &r));
  CHECK_INT(r.server_max_window_bits, 10);
  CHECK(neg1("permessage-deflate; client_max_window_bits=\"1\\1\"", &on, &r));
  CHECK_INT(r.client_max_window_bits, 11);
  /* Quoting does not make a non-token or a flag value acceptable. */
  CHECK(!neg1("permessage-deflate; server_max_window_bits=\"\"", &on, &r));
  CHECK(!neg1("permessage-deflate; server_max_window_bits=\" 10\"", &on, &r));
  CHECK(!neg1("permessage-deflate; server_no_context_takeover=\"\"", &on, &r));
  /* A quoted comma does not split the list. */
  CHECK(neg1("foo; bar=\"a, permessage-deflate; x\", permessage-deflate", &on,
             &r));
  CHECK_INT(r.server_max_window_bits, 0);
}

static void test_negotiate_decline_bad(void) {
  static const char *bad[] = {
      DUP_SNCT,
      "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
      "permessage-deflate; foo",
      "permessage-deflate; foo=1",
      "permessage-deflate; server_max_window_bits",
      "permessage-deflate; server_max_window_bits=7",
      "permessage-deflate; server_max_window_bits=16",
      "permessage-deflate; server_max_window_bits=08",
      "permessage-deflate; server_max_window_bits=1a",
      "permessage-deflate; server_max_window_bits=100",
      "permessage-deflate; client_max_window_bits=0",
      "permessage-deflate; client_max_window_bits=-9",
      "permessage-deflate; server_no_context_takeover=1",
      "permessage-deflate; client_no_context_takeover=true",
      /* syntax errors */
      "permessage-deflate; server_max_window_bits=",
      "permessage-deflate; =10",
      "permessage-deflate;",
      "permessage-deflate server_no_context_takeover",
      "permessage-deflate; server_max_window_bits=\"10",
      "permessage-deflate=1",
      "x-webkit-deflate-frame",
      "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    dx_pmd r;
    if (neg1(bad[i], &on, &r)) CHECK__FAIL("accepted: %s", bad[i]);
    CHECK(!r.enabled);
  }
}

static void test_negotiate_next_offer(void) {
  dx_pmd r;
  /* A declined offer gives way to the next one in the same line. */
  CHECK(neg1("permessage-deflate; foo, permessage-deflate; "
             "server_max_window_bits=11",
             &on, &r));
  CHECK_INT(r.server_max_window_bits, 11);
  CHECK(neg1("x-webkit-deflate-frame; max_window_bits=10, , "
             "permessage-deflate; server_max_window_bits=16, "
             "permessage-deflate; client_max_window_bits",
             &on, &r));
  CHECK_INT(r.server_max_window_bits, 0);
  /* The first acceptable offer wins. */
  CHECK(neg1("permessage-deflate; server_max_window_bits=12, "
             "permessage-deflate",
             &on, &r));
  CHECK_INT(r.server_max_window_bits, 12);
}

static void test_negotiate_header_lines(void) {
  dx_pmd r;
  dx_header h[] = {
      hdr("Host", "example.com"),
      hdr(EXT, "x-webkit-deflate-frame"),
      hdr("Sec-WebSocket-Protocol", "permessage-deflate"),
      hdr(EXT, "permessage-deflate; server_max_window_bits=\"1"), /* broken */
      hdr(EXT, "permessage-deflate; foo, permessage-deflate; "
               "client_no_context_takeover"),
  };
  CHECK(dx__pmd_negotiate(h, 5, &on, &r));
  CHECK(r.client_no_context_takeover);
  CHECK(!dx__pmd_negotiate(h, 4, &on, &r));
}

static void test_format_small_buffer(void) {
  dx_pmd r = {.enabled = true, .server_no_context_takeover = true};
  char buf[64];
  size_t n = dx__pmd_format_response(&r, buf, sizeof buf);
  CHECK_INT(n, strlen("permessage-deflate; server_no_context_takeover"));
  CHECK_INT(dx__pmd_format_response(&r, buf, n + 1), n);
  CHECK_INT(dx__pmd_format_response(&r, buf, n), 0);
  CHECK_STR(buf, "");
  CHECK_INT(dx__pmd_format_response(&r, NULL, 0), 0);
  CHECK_INT(dx__pmd_format_offer(&r, buf, 10), 0);
}

/* ---- negotiation: client ------------------------------------------------ */

static void test_format_offer(void) {
  char buf[200];
  CHECK(dx__pmd_format_offer(&on, buf, sizeof buf) > 0);
  CHECK_STR(buf, "permessage-deflate; client_max_window_bits");
  dx_pmd o = {true, true, true, 10, 12};
  CHECK(dx__pmd_format_offer(&o, buf, sizeof buf) > 0);
  CHECK_STR(buf, "permessage-deflate; server_no_context_takeover; "
                 "client_no_context_takeover; server_max_window_bits=10; "
                 "client_max_window_bits=12");
  /* What we offer, a server of ours accepts. */
  dx_pmd r;
  CHECK(neg1(buf, &on, &r));
  CHECK_INT(r.server_max_window_bits, 10);
  CHECK_INT(r.client_max_window_bits, 12);
}

static void test_client_accept_ok(void) {
  dx_pmd r;
  CHECK_INT(dx__pmd_client_accept(NULL, 0, &on, &r), 0);
  CHECK(!r.enabled);
  dx_header other = hdr("Upgrade", "websocket");
  CHECK_INT(dx__pmd_client_accept(&other, 1, &on, &r), 0);
  CHECK(!r.enabled);
  CHECK_INT(accept1("permessage-deflate", &on, &r), 0);
  CHECK(r.enabled && !r.server_no_context_takeover);
  /* Allowed unasked: the server restricts itself, or us. */
  CHECK_INT(accept1("permessage-deflate; server_no_context_takeover; "
                    "client_no_context_takeover; server_max_window_bits=12; "
                    "client_max_window_bits=\"10\"",
                    &on, &r),
            0);
  CHECK(r.server_no_context_takeover && r.client_no_context_takeover);
  CHECK_INT(r.server_max_window_bits, 12);
  CHECK_INT(r.client_max_window_bits, 10);
  /* A smaller server window than asked is fine. */
  dx_pmd o = {.enabled = true, .server_max_window_bits = 10};
  CHECK_INT(accept1("permessage-deflate; server_max_window_bits=10", &o, &r),
            0);
  CHECK_INT(r.server_max_window_bits, 10);
  CHECK_INT(accept1("permessage-deflate; server_max_window_bits=9", &o, &r), 0);
  CHECK_INT(r.server_max_window_bits, 9);
}

static void test_client_accept_own_hints(void) {
  dx_pmd o = {.enabled = true,
              .server_no_context_takeover = true,
              .client_no_context_takeover = true,
              .client_max_window_bits = 11},
         r;
  /* The server ignored our requests: it keeps its context (so must our
   * inflater), while our own hints still bind us. */
  CHECK_INT(accept1("permessage-deflate", &o, &r), 0);
  CHECK(!r.server_no_context_takeover);
  CHECK(r.client_no_context_takeover);
  CHECK_INT(r.client_max_window_bits, 11);
  CHECK_INT(accept1("permessage-deflate; client_max_window_bits=9", &o, &r), 0);
  CHECK_INT(r.client_max_window_bits, 9);
  CHECK_INT(accept1("permessage-deflate; client_max_window_bits=13", &o, &r),
            0);
  CHECK_INT(r.client_max_window_bits, 11);
}

static void test_client_accept_reject(void) {
  static const char *bad[] = {
      "x-webkit-deflate-frame",
      "permessage-deflate, permessage-deflate",
      "permessage-deflate, x-foo",
      DUP_SNCT,
      "permessage-deflate; foo",
      "permessage-deflate; client_max_window_bits",
      "permessage-deflate; client_max_window_bits=16",
      "permessage-deflate; server_max_window_bits=11",
      "permessage-deflate; server_max_window_bits",
      "permessage-deflate; server_no_context_takeover=1",
      "permessage-deflate; =",
      "permessage-deflate x",
  };
  dx_pmd o = {.enabled = true, .server_max_window_bits = 10}, r;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (accept1(bad[i], &o, &r) != DX_EEXTENSION)
      CHECK__FAIL("accepted: %s", bad[i]);
    CHECK(!r.enabled);
  }
  /* Two lines, one element each, are still two elements. */
  dx_header two[] = {hdr(EXT, "permessage-deflate"),
                     hdr(EXT, "permessage-deflate")};
  CHECK_INT(dx__pmd_client_accept(two, 2, &o, &r), DX_EEXTENSION);
  /* Nothing offered, something answered. */
  dx_pmd none = {0};
  CHECK_INT(accept1("permessage-deflate", &none, &r), DX_EEXTENSION);
  CHECK_INT(accept1("permessage-deflate", NULL, &r), DX_EEXTENSION);
}

/* ---- streams ------------------------------------------------------------ */

typedef struct pair {
  counter c;
  dx_ws_config cfg;
  dx__pmd_state *server, *client;
} pair;

static void pair_open(pair *p, const dx_pmd *agreed) {
  memset(p, 0, sizeof *p);
  p->cfg = counted(&p->c);
  p->server = dx__pmd_new(agreed, DX_ROLE_SERVER, &p->cfg);
  p->client = dx__pmd_new(agreed, DX_ROLE_CLIENT, &p->cfg);
}

static size_t pair_close(pair *p, dx__buf *b) {
  dx__buf_free(b, &p->cfg.alloc);
  dx__pmd_free(p->server, &p->cfg);
  dx__pmd_free(p->client, &p->cfg);
  return p->c.live;
}

static const uint8_t rfc_hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
static const uint8_t rfc_hello2[] = {0xf2, 0x00, 0x11, 0x00, 0x00};

static void test_rfc_deflate_hello(void) {
  /* RFC 7692 7.2.3.1 and 7.2.3.2: zlib reproduces both byte for byte. */
  pair p;
  dx__buf b = {0};
  pair_open(&p, &on);
  CHECK(p.server && p.client);
  const uint8_t *res;
  size_t n;
  CHECK_INT(dx__pmd_deflate(p.server, (const uint8_t *)"Hello", 5, &res, &n),
            0);
  CHECK_MEM(res, n, rfc_hello, sizeof rfc_hello);
  CHECK_INT(dx__pmd_deflate(p.server, (const uint8_t *)"Hello", 5, &res, &n),
            0);
  CHECK_MEM(res, n, rfc_hello2, sizeof rfc_hello2);
  CHECK_INT(pair_close(&p, &b), 0);
}

/* RFC 7692 7.2.3.x payloads that decode to "Hello". */
static const uint8_t rfc_stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                     0x65, 0x6c, 0x6c, 0x6f, 0x00};
static const uint8_t rfc_bfinal[] = {0xf3, 0x48, 0xcd, 0xc9,
                                     0xc9, 0x07, 0x00, 0x00};
static const uint8_t rfc_two_blocks[] = {0xf2, 0x48, 0x05, 0x00, 0x00,
                                         0x00, 0xff, 0xff, 0xca, 0xc9,
                                         0xc9, 0x07, 0x00};

typedef struct vec {
  const char *name;
  const uint8_t *msg[2]; /* one or two messages in one stream */
  size_t len[2];
  const char *want[2];
} vec;

#define V(a) a, sizeof a
static const vec rfc_vectors[] = {
    {"7.2.3.1", {rfc_hello}, {sizeof rfc_hello}, {"Hello"}},
    {"7.2.3.2",
     {rfc_hello, rfc_hello2},
     {sizeof rfc_hello, sizeof rfc_hello2},
     {"Hello", "Hello"}},
    {"7.2.3.3", {rfc_stored}, {sizeof rfc_stored}, {"Hello"}},
    {"7.2.3.4", {rfc_bfinal}, {sizeof rfc_bfinal}, {"Hello"}},
    /* The window survives a BFINAL block: the next message may refer to
     * it (our inflater keeps it; a peer need not rely on that). */
    {"7.2.3.4+ctx",
     {rfc_bfinal, rfc_hello2},
     {sizeof rfc_bfinal, sizeof rfc_hello2},
     {"Hello", "Hello"}},
    /* A BFINAL block with no trailing empty block (Z_FINISH output). */
    {"bfinal-bare",
     {rfc_bfinal, rfc_hello},
     {sizeof rfc_bfinal - 1, sizeof rfc_hello},
     {"Hello", "Hello"}},
    {"7.2.3.5", {rfc_two_blocks}, {sizeof rfc_two_blocks}, {"Hello"}},
    {"7.2.3.6", {(const uint8_t *)"\0", rfc_hello}, {1, 7}, {"", "Hello"}},
    /* An empty compressed payload leaves the stream untouched. */
    {"empty", {(const uint8_t *)"", rfc_hello}, {0, 7}, {"", "Hello"}},
};

/* mode: 0 whole, 1 byte by byte, 2+ split at (mode - 2). */
static int run_vector(const vec *v, size_t mode, size_t *split_max) {
  counter c = {0};
  dx_ws_config cfg = counted(&c);
  dx__pmd_state *z = dx__pmd_new(&on, DX_ROLE_CLIENT, &cfg);
  int bad = 0;
  *split_max = 0;
  for (int m = 0; m < 2 && v->want[m]; m++) {
    dx__buf out = {0};
    size_t len = v->len[m], cut = mode - 2;
    int rc = mode == 0    ? inflate_whole(z, v->msg[m], len, &out, 1000)
             : mode == 1  ? inflate_bytewise(z, v->msg[m], len, &out, 1000)
             : cut <= len ? inflate_cuts(z, v->msg[m], len, &cut, 1, &out, 1000)
                          : inflate_whole(z, v->msg[m], len, &out, 1000);
    if (len > *split_max) *split_max = len;
    size_t wl = strlen(v->want[m]);
    if (rc != 0 || out.len - out.off != wl ||
        (wl && memcmp(out.data + out.off, v->want[m], wl) != 0)) {
      fprintf(stderr, "    %s message %d mode %zu: rc %d\n", v->name, m, mode,
              rc);
      bad = 1;
    }
    dx__buf_free(&out, &cfg.alloc);
  }
  dx__pmd_free(z, &cfg);
  if (c.live != 0) bad = 1;
  return bad;
}

static void test_rfc_inflate_vectors(void) {
  for (size_t i = 0; i < sizeof rfc_vectors / sizeof rfc_vectors[0]; i++) {
    size_t max = 0;
    for (size_t mode = 0; mode < 2 + max + 1; mode++)
      CHECK_INT(run_vector(&rfc_vectors[i], mode, &max), 0);
  }
}

static void test_deflate_empty(void) {
  pair p;
  dx__buf b = {0};
  pair_open(&p, &on);
  const uint8_t *res;
  size_t n;
  static const char *msgs[] = {"", "Hello", "", "", "Hello", ""};
  for (size_t i = 0; i < 6; i++) {
    size_t len = strlen(msgs[i]);
    CHECK_INT(
        dx__pmd_deflate(p.server, (const uint8_t *)msgs[i], len, &res, &n), 0);
    if (len == 0) CHECK_MEM(res, n, "\0", 1);
    b.off = b.len;
    CHECK_INT(inflate_whole(p.client, res, n, &b, 100), 0);
    CHECK_MEM(b.data + b.off, b.len - b.off, msgs[i], len);
  }
  CHECK_INT(pair_close(&p, &b), 0);
}

/* Sends msgs[] one after another from `from` to `to`; returns the sizes
 * of the compressed payloads in sizes[]. */
static void round_trip(pair *p, bool from_server, const uint8_t *msg,
                       size_t len, int count, size_t *sizes, int *ok) {
  dx__pmd_state *tx = from_server ? p->server : p->client;
  dx__pmd_state *rx = from_server ? p->client : p->server;
  *ok = 1;
  for (int i = 0; i < count; i++) {
    const uint8_t *res;
    size_t n;
    dx__buf out = {0};
    if (dx__pmd_deflate(tx, msg, len, &res, &n) != 0) *ok = 0;
    sizes[i] = n;
    if (inflate_whole(rx, res, n, &out, len) != 0 || out.len != len ||
        memcmp(out.data, msg, len) != 0)
      *ok = 0;
    dx__buf_free(&out, &p->cfg.alloc);
  }
}

static void test_round_trip_context_takeover(void) {
  /* Random bytes: the only redundancy is the previous message. */
  uint8_t msg[3000];
  fill_random(msg, sizeof msg, 7);
  pair p;
  size_t sizes[4];
  int ok;
  pair_open(&p, &on);
  for (int dir = 0; dir < 2; dir++) {
    round_trip(&p, dir == 0, msg, sizeof msg, 4, sizes, &ok);
    CHECK(ok);
    /* The repeat is a back-reference to the previous message. */
    CHECK(sizes[1] < sizes[0] / 4);
    CHECK(sizes[0] > sizeof msg && sizes[1] < 64);
  }
  dx__buf b = {0};
  CHECK_INT(pair_close(&p, &b), 0);
}

static void test_round_trip_no_context_takeover(void) {
  uint8_t msg[3000];
  fill_random(msg, sizeof msg, 9);
  /* Server without takeover, client with: per direction, per role. */
  dx_pmd agreed = {.enabled = true, .server_no_context_takeover = true};
  pair p;
  size_t sizes[4];
  int ok;
  pair_open(&p, &agreed);
  round_trip(&p, true, msg, sizeof msg, 4, sizes, &ok);
  CHECK(ok);
  for (int i = 1; i < 4; i++)
    CHECK_INT(sizes[i], sizes[0]);
  round_trip(&p, false, msg, sizeof msg, 4, sizes, &ok);
  CHECK(ok);
  CHECK(sizes[1] < sizes[0] / 4);
  dx__buf b = {0};
  CHECK_INT(pair_close(&p, &b), 0);

  agreed = (dx_pmd){.enabled = true, .client_no_context_takeover = true};
  pair_open(&p, &agreed);
  round_trip(&p, false, msg, sizeof msg, 4, sizes, &ok);
  CHECK(ok);
  for (int i = 1; i < 4; i++)
    CHECK_INT(sizes[i], sizes[0]);
  round_trip(&p, true, msg, sizeof msg, 4, sizes, &ok);
  CHECK(ok && sizes[1] < sizes[0] / 4);
  CHECK_INT(pair_close(&p, &b), 0);
}

/* With no context takeover the inflater really forgets: a back-reference
 * to the previous message is corrupt data. */
static void test_no_context_takeover_inflater_resets(void) {
  counter c = {0};
  dx_ws_config cfg = counted(&c);
  dx_pmd agreed = {.enabled = true, .server_no_context_takeover = true};
  dx__pmd_state *z = dx__pmd_new(&agreed, DX_ROLE_CLIENT, &cfg);
  dx__buf out = {0};
  CHECK_INT(inflate_whole(z, rfc_hello, sizeof rfc_hello, &out, 100), 0);
  CHECK_INT(inflate_whole(z, rfc_hello2, sizeof rfc_hello2, &out, 100),
            DX_EDEFLATE);
  dx__buf_free(&out, &cfg.alloc);
  dx__pmd_free(z, &cfg);
  CHECK_INT(c.live, 0);
}

static void test_round_trip_split_and_large(void) {
  /* Incompressible data bigger than any initial buffer, inflated in
   * pieces of varying size, twice (the second time with history). */
  size_t len = 300000;
  uint8_t *msg = malloc(len);
  fill_random(msg, len / 2, 3);
  fill_text(msg + len / 2, len - len / 2, 5);
  pair p;
  pair_open(&p, &on);
  for (int round = 0; round < 2; round++) {
    const uint8_t *res;
    size_t n;
    CHECK_INT(dx__pmd_deflate(p.client, msg, len, &res, &n), 0);
    size_t cuts[] = {1, 2, 100, 5000, n / 2, n - 3, n - 1};
    dx__buf out = {0};
    CHECK_INT(inflate_cuts(p.server, res, n, cuts, 7, &out, len), 0);
    CHECK_MEM(out.data, out.len, msg, len);
    dx__buf_free(&out, &p.cfg.alloc);
  }
  free(msg);
  dx__buf b = {0};
  CHECK_INT(pair_close(&p, &b), 0);
}

/* A window of N bits means no back-reference farther than 2^N bytes: a raw
 * zlib inflater with that window must accept the output. */
static void test_window_bits_honoured(void) {
  uint8_t msg[4096];
  fill_random(msg, 2048, 11);
  memcpy(msg + 2048, msg, 2048); /* a repeat 2 KiB back */
  dx_pmd agreed = {.enabled = true, .server_max_window_bits = 9};
  pair p;
  pair_open(&p, &agreed);
  const uint8_t *res;
  size_t n;
  CHECK_INT(dx__pmd_deflate(p.server, msg, sizeof msg, &res, &n), 0);
  CHECK(n > 4000); /* the repeat was out of reach */
  z_stream s = {0};
  CHECK_INT(inflateInit2(&s, -9), Z_OK);
  uint8_t in[8192], out[8192];
  memcpy(in, res, n);
  memcpy(in + n, "\0\0\xff\xff", 4);
  s.next_in = in;
  s.avail_in = (uInt)(n + 4);
  s.next_out = out;
  s.avail_out = sizeof out;
  int zr = inflate(&s, Z_SYNC_FLUSH);
  inflateEnd(&s);
  CHECK_INT(zr, Z_OK);
  CHECK_MEM(out, sizeof out - s.avail_out, msg, sizeof msg);
  /* The client's side still uses 15 and finds the repeat. */
  CHECK_INT(dx__pmd_deflate(p.client, msg, sizeof msg, &res, &n), 0);
  CHECK(n < 2200);
  dx__buf b = {0};
  CHECK_INT(pair_close(&p, &b), 0);
}

static void test_can_compress(void) {
  counter c = {0};
  dx_ws_config cfg = counted(&c);
  dx_pmd a = {.enabled = true, .server_max_window_bits = 8};
  dx__pmd_state *s = dx__pmd_new(&a, DX_ROLE_SERVER, &cfg);
  dx__pmd_state *cl = dx__pmd_new(&a, DX_ROLE_CLIENT, &cfg);
  CHECK(!dx__pmd_can_compress(s));
  CHECK(dx__pmd_can_compress(cl));
  /* The client still inflates what a (non-zlib) server sends. */
  dx__buf out = {0};
  CHECK_INT(inflate_whole(cl, rfc_hello, sizeof rfc_hello, &out, 10), 0);
  dx__buf_free(&out, &cfg.alloc);
  dx__pmd_free(s, &cfg);
  dx__pmd_free(cl, &cfg);
  a = (dx_pmd){.enabled = true, .client_max_window_bits = 8};
  s = dx__pmd_new(&a, DX_ROLE_SERVER, &cfg);
  cl = dx__pmd_new(&a, DX_ROLE_CLIENT, &cfg);
  CHECK(dx__pmd_can_compress(s));
  CHECK(!dx__pmd_can_compress(cl));
  CHECK(!dx__pmd_can_compress(NULL));
  dx__pmd_free(s, &cfg);
  dx__pmd_free(cl, &cfg);
  dx__pmd_free(NULL, &cfg);
  CHECK_INT(c.live, 0);
}

static void test_inflate_limit_exact(void) {
  uint8_t msg[5000];
  fill_text(msg, sizeof msg, 1);
  pair p;
  pair_open(&p, &on);
  const uint8_t *res;
  size_t n;
  dx_pmd nct = {.enabled = true, .server_no_context_takeover = true};
  dx__pmd_free(p.server, &p.cfg);
  p.server = dx__pmd_new(&nct, DX_ROLE_SERVER, &p.cfg);
  CHECK_INT(dx__pmd_deflate(p.server, msg, sizeof msg, &res, &n), 0);
  dx__buf out = {0};
  /* The limit counts live bytes only: a consumed prefix does not count. */
  CHECK_INT(dx__buf_append(&out, &p.cfg.alloc, "xyz", 3), 0);
  out.off = 3;
  CHECK_INT(inflate_whole(p.client, res, n, &out, sizeof msg), 0);
  CHECK_MEM(out.data + out.off, out.len - out.off, msg, sizeof msg);
  dx__buf_free(&out, &p.cfg.alloc);
  CHECK_INT(inflate_whole(p.client, res, n, &out, sizeof msg - 1), DX_ETOOBIG);
  CHECK(out.len - out.off <= sizeof msg - 1);
  dx__buf_free(&out, &p.cfg.alloc);
  /* Across fragments, too. */
  dx__pmd_state *z = dx__pmd_new(&nct, DX_ROLE_CLIENT, &p.cfg);
  size_t cut = n / 2;
  CHECK_INT(inflate_cuts(z, res, n, &cut, 1, &out, 4000), DX_ETOOBIG);
  CHECK(out.len - out.off <= 4000);
  dx__pmd_free(z, &p.cfg);
  CHECK_INT(pair_close(&p, &out), 0);
}

static void test_inflate_bomb(void) {
  size_t len = (size_t)1 << 20, limit = (size_t)64 << 10;
  uint8_t *zeros = calloc(1, len);
  pair p;
  pair_open(&p, &on);
  const uint8_t *res;
  size_t n;
  CHECK_INT(dx__pmd_deflate(p.server, zeros, len, &res, &n), 0);
  CHECK(n < 8192);
  uint8_t *bomb = malloc(n);
  memcpy(bomb, res, n);
  dx__pmd_free(p.server, &p.cfg);
  p.server = NULL;
  free(zeros);
  for (int mode = 0; mode < 2; mode++) {
    counter c = {0};
    dx_ws_config cfg = counted(&c);
    dx__pmd_state *z = dx__pmd_new(&on, DX_ROLE_CLIENT, &cfg);
    dx__buf out = {0};
    int rc = mode ? inflate_bytewise(z, bomb, n, &out, limit)
                  : inflate_whole(z, bomb, n, &out, limit);
    CHECK_INT(rc, DX_ETOOBIG);
    CHECK(out.cap <= limit);
    /* The output buffer plus zlib's state and 32 KiB window, no more. */
    if (c.peak > limit + ((size_t)48 << 10))
      CHECK__FAIL("peak %zu for limit %zu", c.peak, limit);
    dx__buf_free(&out, &cfg.alloc);
    dx__pmd_free(z, &cfg);
    CHECK_INT(c.live, 0);
  }
  free(bomb);
  dx__buf b = {0};
  CHECK_INT(pair_close(&p, &b), 0);
}

static void test_inflate_corrupt(void) {
  static const uint8_t reserved_btype[] = {0xff, 0xff, 0xff};
  /* A fixed-Huffman match at distance 1 before any output. */
  static const uint8_t too_far[] = {0x02, 0x02, 0x00};
  /* Not stripped: the tail then starts a stored block that never ends. */
  static const uint8_t unstripped[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07,
                                       0x00, 0x00, 0x00, 0xff, 0xff};
  /* Cut short in the middle of a block. */
  static const uint8_t truncated[] = {0xf2, 0x48, 0xcd};
  /* Stored block whose NLEN does not match LEN. */
  static const uint8_t bad_nlen[] = {0x00, 0x05, 0x00, 0xfa, 0xfe,
                                     0x48, 0x65, 0x6c, 0x6c, 0x6f};
  const struct {
    const uint8_t *p;
    size_t n;
  } cases[] = {{V(reserved_btype)},
               {V(too_far)},
               {V(unstripped)},
               {V(truncated)},
               {V(bad_nlen)}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (int mode = 0; mode < 2; mode++) {
      counter c = {0};
      dx_ws_config cfg = counted(&c);
      dx__pmd_state *z = dx__pmd_new(&on, DX_ROLE_SERVER, &cfg);
      dx__buf out = {0};
      int rc = mode ? inflate_bytewise(z, cases[i].p, cases[i].n, &out, 100)
                    : inflate_whole(z, cases[i].p, cases[i].n, &out, 100);
      if (rc != DX_EDEFLATE) CHECK__FAIL("case %zu mode %d: %d", i, mode, rc);
      dx__buf_free(&out, &cfg.alloc);
      dx__pmd_free(z, &cfg);
      CHECK_INT(c.live, 0);
    }
  }
}

static void test_bytewise_equals_whole(void) {
  uint8_t msg[2000];
  fill_text(msg, sizeof msg, 21);
  pair p;
  pair_open(&p, &on);
  dx__pmd_state *z2 = dx__pmd_new(&on, DX_ROLE_CLIENT, &p.cfg);
  for (int i = 0; i < 3; i++) {
    const uint8_t *res;
    size_t n;
    msg[i] = 'A';
    CHECK_INT(dx__pmd_deflate(p.server, msg, sizeof msg, &res, &n), 0);
    dx__buf a = {0}, b = {0};
    CHECK_INT(inflate_whole(p.client, res, n, &a, sizeof msg), 0);
    CHECK_INT(inflate_bytewise(z2, res, n, &b, sizeof msg), 0);
    CHECK_MEM(a.data, a.len, msg, sizeof msg);
    CHECK_MEM(b.data, b.len, msg, sizeof msg);
    dx__buf_free(&a, &p.cfg.alloc);
    dx__buf_free(&b, &p.cfg.alloc);
  }
  dx__pmd_free(z2, &p.cfg);
  dx__buf b = {0};
  CHECK_INT(pair_close(&p, &b), 0);
}

static void test_compress_config(void) {
  uint8_t msg[20000];
  fill_text(msg, sizeof msg, 4);
  size_t sizes[2];
  for (int i = 0; i < 2; i++) {
    counter c = {0};
    dx_ws_config cfg = counted(&c);
    cfg.compress_level = i ? 9 : 0;
    cfg.compress_mem_level = i ? 9 : 0;
    dx__pmd_state *z = dx__pmd_new(&on, DX_ROLE_SERVER, &cfg);
    const uint8_t *res;
    CHECK_INT(dx__pmd_deflate(z, msg, sizeof msg, &res, &sizes[i]), 0);
    dx__pmd_free(z, &cfg);
    CHECK_INT(c.live, 0);
  }
  CHECK(sizes[1] < sizes[0]);
}

/* Fails each allocation in turn (new, deflate, inflate, the BFINAL
 * restart): every failure is reported as DX_ENOMEM and nothing leaks. */
static void test_failmalloc(void) {
  uint8_t msg[100000];
  fill_text(msg, sizeof msg, 13);
  for (size_t k = 1;; k++) {
    counter c = {.fail_at = k};
    dx_ws_config cfg = counted(&c);
    dx__pmd_state *s = dx__pmd_new(&on, DX_ROLE_SERVER, &cfg);
    dx__pmd_state *cl = dx__pmd_new(&on, DX_ROLE_CLIENT, &cfg);
    int rc = (!s || !cl) ? DX_ENOMEM : 0;
    const uint8_t *res;
    size_t n = 0;
    dx__buf out = {0};
    if (!rc) rc = dx__pmd_deflate(s, msg, sizeof msg, &res, &n);
    if (!rc) rc = inflate_whole(cl, res, n, &out, sizeof msg);
    if (!rc)
      rc = inflate_whole(cl, rfc_bfinal, sizeof rfc_bfinal, &out,
                         sizeof msg + 5);
    if (rc && rc != DX_ENOMEM) CHECK__FAIL("fail_at %zu: rc %d", k, rc);
    if (rc == 0) CHECK_INT(out.len, sizeof msg + 5);
    dx__buf_free(&out, &cfg.alloc);
    dx__pmd_free(s, &cfg);
    dx__pmd_free(cl, &cfg);
    CHECK_INT(c.live, 0);
    if (rc == 0) break;
    CHECK(k < 1000);
  }
}

int main(void) {
  RUN(test_negotiate_plain);
  RUN(test_negotiate_disabled_policy);
  RUN(test_negotiate_offer_params);
  RUN(test_negotiate_server_demands);
  RUN(test_negotiate_server_window);
  RUN(test_negotiate_client_window);
  RUN(test_negotiate_quoted);
  RUN(test_negotiate_decline_bad);
  RUN(test_negotiate_next_offer);
  RUN(test_negotiate_header_lines);
  RUN(test_format_small_buffer);
  RUN(test_format_offer);
  RUN(test_client_accept_ok);
  RUN(test_client_accept_own_hints);
  RUN(test_client_accept_reject);
  RUN(test_rfc_deflate_hello);
  RUN(test_rfc_inflate_vectors);
  RUN(test_deflate_empty);
  RUN(test_round_trip_context_takeover);
  RUN(test_round_trip_no_context_takeover);
  RUN(test_no_context_takeover_inflater_resets);
  RUN(test_round_trip_split_and_large);
  RUN(test_window_bits_honoured);
  RUN(test_can_compress);
  RUN(test_inflate_limit_exact);
  RUN(test_inflate_bomb);
  RUN(test_inflate_corrupt);
  RUN(test_bytewise_equals_whole);
  RUN(test_compress_config);
  RUN(test_failmalloc);
  return CHECK_DONE();
}
