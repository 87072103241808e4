/*
 * dx_utf8_valid / dx_utf8_feed against an obviously-correct reference.
 *
 * The reference does not decode by rules; it enumerates. A byte string is a
 * valid UTF-8 sequence iff it is the encoding of a Unicode scalar value
 * (U+0000..U+D7FF, U+E000..U+10FFFF, RFC 3629 section 3), and a valid
 * prefix iff some scalar value's encoding starts with it. We encode every
 * scalar value with the 4-line encoder below and remember every prefix, so
 * the only rules in the reference are the ones in RFC 3629's table.
 *
 * Fail fast (RFC 6455 section 8.1): for every string, feeding it byte by
 * byte must return false exactly at the first byte after which no valid
 * continuation exists, and any split into two feeds must agree.
 */
#include <duplex/proto.h>

#include "check.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- the reference ---------------------------------------------------- */

static size_t ref_encode(uint32_t cp, uint8_t out[4]) {
  if (cp < 0x80) {
    out[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (uint8_t)(0xC0 | cp >> 6);
    out[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (uint8_t)(0xE0 | cp >> 12);
    out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (uint8_t)(0xF0 | cp >> 18);
  out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
  out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
  out[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

static bool is_scalar(uint32_t cp) {
  return cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
}

/* Bitmaps of every prefix (proper or whole) of length 1, 2, 3 of every
 * scalar value's encoding, and of the whole encodings of length 1..3.
 * 4-byte encodings are checked by re-encoding (see ref_complete). */
static uint8_t *pre[4], *full[4];

static void bit_set(uint8_t *m, uint32_t i) {
  m[i >> 3] |= (uint8_t)(1u << (i & 7));
}
static bool bit_get(const uint8_t *m, uint32_t i) {
  return m[i >> 3] >> (i & 7) & 1;
}

static uint32_t key_of(const uint8_t *s, size_t n) {
  uint32_t k = 0;
  for (size_t i = 0; i < n; i++)
    k = k << 8 | s[i];
  return k;
}

static void ref_init(void) {
  if (pre[1]) return;
  for (int n = 1; n <= 3; n++) {
    pre[n] = calloc((size_t)1 << (8 * n - 3), 1);
    full[n] = calloc((size_t)1 << (8 * n - 3), 1);
  }
  for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
    if (!is_scalar(cp)) continue;
    uint8_t e[4];
    size_t n = ref_encode(cp, e);
    for (size_t k = 1; k <= n && k <= 3; k++)
      bit_set(pre[k], key_of(e, k));
    if (n <= 3) bit_set(full[n], key_of(e, n));
  }
}

static bool ref_prefix(const uint8_t *s, size_t n) {
  return n <= 3 && bit_get(pre[n], key_of(s, n));
}

/* Whole encoding of one scalar value? For 4 bytes: the only candidate is
 * the value made of the payload bits; it must re-encode to the same bytes. */
static bool ref_complete(const uint8_t *s, size_t n) {
  if (n <= 3) return bit_get(full[n], key_of(s, n));
  uint32_t cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                (uint32_t)(s[2] & 0x3F) << 6 | (uint32_t)(s[3] & 0x3F);
  uint8_t e[4];
  return is_scalar(cp) && ref_encode(cp, e) == 4 && memcmp(e, s, 4) == 0;
}

/* Index of the first byte after which no continuation can be valid, or len
 * if the whole string is a valid prefix; *complete tells whether it also
 * ends on a code point boundary. */
static size_t ref_fail_at(const uint8_t *s, size_t len, bool *complete) {
  size_t i = 0;
  while (i < len) {
    size_t k = 1;
    for (;;) {
      if (ref_complete(s + i, k)) break;
      if (k == 4 || !ref_prefix(s + i, k)) return i + k - 1;
      if (i + k == len) {
        *complete = false;
        return len;
      }
      k++;
    }
    i += k;
  }
  *complete = true;
  return len;
}

/* ---- checks against the reference ------------------------------------- */

/* Feeds s whole, byte by byte, and split at every point (two feeds, then
 * three feeds around every pair of points for short strings), and compares
 * with the reference. Returns 0 or the failing stage, for the message. */
static int check_string(const uint8_t *s, size_t len) {
  bool complete;
  size_t fail = ref_fail_at(s, len, &complete);
  bool valid = fail == len && complete;

  if (dx_utf8_valid(s, len) != valid) return 1;

  uint32_t st = 0;
  bool ok = dx_utf8_feed(&st, s, len);
  if (ok != (fail == len)) return 2;
  if (ok && (st == 0) != complete) return 3;

  /* Byte by byte: true up to fail, false at fail, and false after. */
  st = 0;
  for (size_t i = 0; i < len; i++) {
    ok = dx_utf8_feed(&st, s + i, 1);
    if (ok != (i < fail)) return 4;
  }
  if (fail == len && (st == 0) != complete) return 5;

  /* Two feeds: the first fails iff it contains the failing byte. */
  for (size_t cut = 0; cut <= len; cut++) {
    st = 0;
    bool a = dx_utf8_feed(&st, s, cut);
    if (a != (fail >= cut)) return 6;
    bool b = dx_utf8_feed(&st, s + cut, len - cut);
    if (b != (fail == len)) return 7;
    if (b && (st == 0) != complete) return 8;
  }
  return 0;
}

#define CHECK_STRING(s, n)                                                     \
  do {                                                                         \
    int check_rc = check_string((s), (n));                                     \
    if (check_rc) {                                                            \
      check__hex("input", (s), (n));                                           \
      CHECK__FAIL("check_string stage %d", check_rc);                          \
    }                                                                          \
  } while (0)

/* ---- named vectors ---------------------------------------------------- */

typedef struct vec {
  const char *name;
  const char *bytes;
  size_t len;
  int fail_at; /* index of the first impossible byte; -1 valid; -2 a valid
                  prefix truncated at the end */
} vec;

#define V(name, s, f)                                                          \
  { name, s, sizeof(s) - 1, f }

/* Boundaries of RFC 3629's table, overlongs, surrogates, and the classics
 * of Markus Kuhn's UTF-8-test.txt (sections 1-5). */
static const vec vectors[] = {
    V("empty", "", -1),
    V("U+0000", "\x00", -1),
    V("U+007F", "\x7f", -1),
    V("U+0080", "\xc2\x80", -1),
    V("U+07FF", "\xdf\xbf", -1),
    V("U+0800", "\xe0\xa0\x80", -1),
    V("U+D7FF", "\xed\x9f\xbf", -1),
    V("U+E000", "\xee\x80\x80", -1),
    V("U+FFFD", "\xef\xbf\xbd", -1),
    V("U+FFFE noncharacter is valid", "\xef\xbf\xbe", -1),
    V("U+FFFF", "\xef\xbf\xbf", -1),
    V("U+10000", "\xf0\x90\x80\x80", -1),
    V("U+FFFFF", "\xf3\xbf\xbf\xbf", -1),
    V("U+100000", "\xf4\x80\x80\x80", -1),
    V("U+10FFFF", "\xf4\x8f\xbf\xbf", -1),
    V("U+110000", "\xf4\x90\x80\x80", 1),
    V("U+13FFFF", "\xf4\xbf\xbf\xbf", 1),
    V("F5 lead (U+140000)", "\xf5\x80\x80\x80", 0),
    V("kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", -1),
    V("Hello-µ@ßöäüàá-UTF-8!!",
      "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
      -1),
    /* overlongs */
    V("overlong '/' 2 bytes", "\xc0\xaf", 0),
    V("overlong '/' 3 bytes", "\xe0\x80\xaf", 1),
    V("overlong '/' 4 bytes", "\xf0\x80\x80\xaf", 1),
    V("overlong '/' 5 bytes", "\xf8\x80\x80\x80\xaf", 0),
    V("overlong '/' 6 bytes", "\xfc\x80\x80\x80\x80\xaf", 0),
    V("max overlong 2 bytes U+007F", "\xc1\xbf", 0),
    V("max overlong 3 bytes U+07FF", "\xe0\x9f\xbf", 1),
    V("max overlong 4 bytes U+FFFF", "\xf0\x8f\xbf\xbf", 1),
    V("overlong NUL 2", "\xc0\x80", 0),
    V("overlong NUL 3", "\xe0\x80\x80", 1),
    V("overlong NUL 4", "\xf0\x80\x80\x80", 1),
    /* surrogates: every edge */
    V("U+D800", "\xed\xa0\x80", 1),
    V("U+DB7F", "\xed\xad\xbf", 1),
    V("U+DB80", "\xed\xae\x80", 1),
    V("U+DBFF", "\xed\xaf\xbf", 1),
    V("U+DC00", "\xed\xb0\x80", 1),
    V("U+DF80", "\xed\xbe\x80", 1),
    V("U+DFFF", "\xed\xbf\xbf", 1),
    V("U+D800 U+DC00 pair", "\xed\xa0\x80\xed\xb0\x80", 1),
    V("U+DBFF U+DFFF pair", "\xed\xaf\xbf\xed\xbf\xbf", 1),
    V("CESU-8 U+10000", "\xed\xa0\x80\xed\xb0\x80", 1),
    V("ED A0 prefix", "\xed\xa0", 1),
    V("ED 9F prefix", "\xed\x9f", -2),
    /* the fail-fast examples of the brief */
    V("E0 80", "\xe0\x80", 1),
    V("F4 90", "\xf4\x90", 1),
    V("F0 8F", "\xf0\x8f", 1),
    V("F0 90", "\xf0\x90", -2),
    V("F4 8F", "\xf4\x8f", -2),
    /* bytes that never appear */
    V("C0", "\xc0", 0),
    V("C1", "\xc1", 0),
    V("F5", "\xf5", 0),
    V("F8", "\xf8", 0),
    V("FE", "\xfe", 0),
    V("FF", "\xff", 0),
    V("FE FE FF FF", "\xfe\xfe\xff\xff", 0),
    V("ASCII then FF", "abcdefghijklmnopqrstuvwxyz\xff", 26),
    /* continuation bytes out of place */
    V("lone 80", "\x80", 0),
    V("lone BF", "\xbf", 0),
    V("80 BF", "\x80\xbf", 0),
    V("80 BF 80 BF", "\x80\xbf\x80\xbf", 0),
    V("ASCII then lone 80", "a\x80", 1),
    V("one extra continuation", "\xc2\x80\x80", 2),
    V("two extra continuations", "\xe2\x82\xac\x80\x80", 3),
    /* lonely start characters */
    V("C2 space", "\xc2\x20", 1),
    V("E1 space", "\xe1\x20", 1),
    V("E1 80 space", "\xe1\x80\x20", 2),
    V("F1 space", "\xf1\x20", 1),
    V("F1 80 80 space", "\xf1\x80\x80\x20", 3),
    V("DF then lead", "\xdf\xc2\x80", 1),
    /* truncated at the end (Kuhn 3.3): valid prefixes, not valid text */
    V("truncated 2 (C2)", "\xc2", -2),
    V("truncated 3 (E0)", "\xe0", -2),
    V("truncated 3 (E0 A0)", "\xe0\xa0", -2),
    V("truncated 3 (EF BF)", "\xef\xbf", -2),
    V("truncated 4 (F0 90 80)", "\xf0\x90\x80", -2),
    V("truncated 4 (F4 8F BF)", "\xf4\x8f\xbf", -2),
    V("truncated 4 (F3 BF)", "\xf3\xbf", -2),
    V("ASCII then truncated", "hello \xe2\x82", -2),
    /* Kuhn 3.4: concatenation of incomplete sequences */
    V("C0 E0 80 F0 80 80", "\xc0\xe0\x80\xf0\x80\x80", 0),
    V("DF EF BF", "\xdf\xef\xbf", 1),
    V("euro sign", "\xe2\x82\xac", -1),
    V("emoji", "\xf0\x9f\x98\x80", -1),
    V("mixed", "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z", -1),
};

static void test_vectors(void) {
  ref_init();
  for (size_t v = 0; v < sizeof vectors / sizeof vectors[0]; v++) {
    const vec *t = &vectors[v];
    const uint8_t *s = (const uint8_t *)t->bytes;
    bool complete;
    size_t fail = ref_fail_at(s, t->len, &complete);
    long ref = fail < t->len ? (long)fail : complete ? -1 : -2;
    if (ref != t->fail_at) {
      fprintf(stderr, "  vector \"%s\": reference says %ld\n", t->name, ref);
      CHECK_INT(ref, t->fail_at);
    }
    CHECK_INT(dx_utf8_valid(s, t->len), t->fail_at == -1);
    int rc = check_string(s, t->len);
    if (rc) fprintf(stderr, "  vector \"%s\"\n", t->name);
    CHECK_INT(rc, 0);
  }
}

/* Every Kuhn 3.2.x "lonely start character" followed by a space, and every
 * continuation byte alone, as one long string each (3.1.9, 3.2.1-3.2.5). */
static void test_kuhn_series(void) {
  uint8_t buf[512];
  size_t n = 0;
  for (int b = 0x80; b <= 0xBF; b++)
    buf[n++] = (uint8_t)b;
  CHECK(!dx_utf8_valid(buf, n));
  CHECK_STRING(buf, n);
  for (int b = 0xC0; b <= 0xFF; b++) {
    uint8_t two[2] = {(uint8_t)b, ' '};
    CHECK(!dx_utf8_valid(two, 2));
    CHECK_STRING(two, 2);
  }
}

/* All 1-, 2- and 3-byte strings; each through check_string (which covers
 * fail-fast byte by byte and every split). */
static void test_exhaustive_short(void) {
  ref_init();
  uint8_t s[3];
  for (uint32_t x = 0; x < 256; x++) {
    s[0] = (uint8_t)x;
    CHECK_STRING(s, 1);
  }
  for (uint32_t x = 0; x < 1u << 16; x++) {
    s[0] = (uint8_t)(x >> 8);
    s[1] = (uint8_t)x;
    CHECK_STRING(s, 2);
  }
  size_t nvalid = 0;
  for (uint32_t x = 0; x < 1u << 24; x++) {
    s[0] = (uint8_t)(x >> 16);
    s[1] = (uint8_t)(x >> 8);
    s[2] = (uint8_t)x;
    bool complete;
    size_t fail = ref_fail_at(s, 3, &complete);
    bool valid = fail == 3 && complete;
    nvalid += valid;
    if (dx_utf8_valid(s, 3) != valid) {
      check__hex("input", s, 3);
      CHECK__FAIL("dx_utf8_valid != reference");
    }
    /* Byte by byte only: the splits of 3 bytes are the same feeds. */
    uint32_t st = 0;
    for (size_t i = 0; i < 3; i++) {
      if (dx_utf8_feed(&st, s + i, 1) != (i < fail)) {
        check__hex("input", s, 3);
        CHECK__FAIL("fail-fast position: reference says %zu", fail);
      }
    }
  }
  /* Cross-check of the reference itself: 3-byte valid strings are
   * sequences of 1..3 code points, counted from RFC 3629's table:
   * 1-byte 128, 2-byte 1920, 3-byte 63488 (65536 - 2048 surrogates). */
  size_t c1 = 128, c2 = 1920, c3 = 0x10000 - 0x800 - 0x800;
  CHECK_INT(nvalid, c1 * c1 * c1 + 2 * c1 * c2 + c3);
}

/* Every scalar value whole, in 4-byte context, and every 4-byte string
 * that starts with a valid 3-byte prefix of a 4-byte sequence with any
 * last byte (the region where F0/F4 limits and the last continuation byte
 * interact). */
static void test_all_scalars(void) {
  ref_init();
  uint8_t e[8];
  for (uint32_t cp = 0; cp <= 0x10FFFF + 0x100; cp++) {
    size_t n = ref_encode(cp, e);
    CHECK_INT(dx_utf8_valid(e, n), is_scalar(cp));
    if (cp > 0x10FFFF) continue;
    /* Fail-fast position for the 4-byte range, byte by byte. */
    bool complete;
    size_t fail = ref_fail_at(e, n, &complete);
    uint32_t st = 0;
    for (size_t i = 0; i < n; i++)
      CHECK_INT(dx_utf8_feed(&st, e + i, 1), i < fail);
  }
  for (uint32_t x = 0xF00000; x < 0xF80000; x++) {
    e[0] = (uint8_t)(x >> 16);
    e[1] = (uint8_t)(x >> 8);
    e[2] = (uint8_t)x;
    if (!ref_prefix(e, 3)) continue;
    for (int b = 0; b < 256; b++) {
      e[3] = (uint8_t)b;
      bool complete;
      size_t fail = ref_fail_at(e, 4, &complete);
      CHECK_INT(dx_utf8_valid(e, 4), fail == 4 && complete);
      uint32_t st = 0;
      CHECK_INT(dx_utf8_feed(&st, e, 3), true);
      CHECK_INT(dx_utf8_feed(&st, e + 3, 1), fail == 4);
    }
  }
}

/* A fixed-seed generator so failures reproduce. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

/* Random strings biased towards what breaks validators: encodings of random
 * scalar values (and of surrogates and values past U+10FFFF), truncated or
 * not, ASCII runs, stray continuation bytes, boundary lead bytes. */
static size_t gen(uint8_t *s, size_t cap) {
  static const uint8_t edge[] = {
      0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
      0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFE, 0xFF};
  size_t n = 0, want = 4 + rnd() % (cap - 8);
  bool clean = rnd() % 3 == 0; /* some strings without deliberate damage */
  while (n < want) {
    uint32_t r = rnd() % 16;
    uint8_t e[4];
    if (r < 5) {
      size_t run = 1 + rnd() % 40;
      for (size_t i = 0; i < run && n < cap - 4; i++)
        s[n++] = (uint8_t)(0x20 + rnd() % 0x5F);
    } else if (r < 11 || clean) {
      uint32_t cp;
      do
        cp = rnd() % 0x110000;
      while (clean && !is_scalar(cp));
      size_t k = ref_encode(cp, e);
      memcpy(s + n, e, k);
      n += k;
    } else if (r < 13) {
      uint32_t cp =
          rnd() % 2 ? 0xD800 + rnd() % 0x800 : 0x110000 + rnd() % 0x1000;
      size_t k = ref_encode(cp, e);
      memcpy(s + n, e, k);
      n += k - rnd() % 2 * (k - 1); /* sometimes only the lead */
    } else if (r < 15) {
      s[n++] = edge[rnd() % sizeof edge];
    } else {
      s[n++] = (uint8_t)rnd();
    }
  }
  return n;
}

static void test_random(void) {
  ref_init();
  uint8_t s[160];
  size_t nvalid = 0;
  for (int iter = 0; iter < 100000; iter++) {
    size_t n = gen(s, iter % 16 ? 24 : sizeof s);
    CHECK_STRING(s, n);
    nvalid += dx_utf8_valid(s, n);
  }
  /* The generator must produce both kinds, or the test proves little. */
  CHECK(nvalid > 10000);
  CHECK(nvalid < 90000);
}

/* The ASCII fast path steps 64, 16 and 8 bytes at a time: put one
 * non-ASCII event at every position of ASCII runs around those sizes, and
 * make sure both a valid sequence and an error are found there. */
static void test_ascii_blocks(void) {
  ref_init();
  static const struct {
    const char *s;
    size_t n;
  } ins[] = {{"\xc3\xa9", 2},     {"\xf0\x9f\x98\x80", 4},         {"\x80", 1},
             {"\xed\xa0\x80", 3}, {"\xe2\x82", 2} /* truncated */, {"\xff", 1}};
  uint8_t s[300];
  for (size_t len = 0; len <= 200; len++) {
    for (size_t at = 0; at <= len; at++) {
      for (size_t k = 0; k < sizeof ins / sizeof ins[0]; k++) {
        memset(s, 'a', len);
        memcpy(s + at, ins[k].s, ins[k].n);
        size_t n = len + ins[k].n;
        memset(s + at + ins[k].n, 'b', len - at);
        bool complete;
        size_t fail = ref_fail_at(s, n, &complete);
        CHECK_INT(dx_utf8_valid(s, n), fail == n && complete);
        uint32_t st = 0;
        CHECK_INT(dx_utf8_feed(&st, s, n), fail == n);
        if (len < 70 && at % 7 == 0) CHECK_STRING(s, n);
      }
    }
  }
}

/* Input that ends right before a PROT_NONE page: any read past the end
 * (a word or vector load too many) crashes. */
static void test_guard_page(void) {
  long pg = sysconf(_SC_PAGESIZE);
  uint8_t *m = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(m != MAP_FAILED);
  CHECK(mprotect(m + pg, (size_t)pg, PROT_NONE) == 0);
  uint8_t *end = m + pg;
  for (size_t len = 0; len <= 200; len++) {
    uint8_t *p = end - len;
    memset(p, 'x', len);
    CHECK(dx_utf8_valid(p, len));
    if (len >= 2) {
      memcpy(end - 2, "\xc3\xa9", 2);
      CHECK(dx_utf8_valid(p, len));
      end[-1] = 0xC3;
      end[-2] = 0xC3; /* C3 C3: fails at the last byte */
      CHECK(!dx_utf8_valid(p, len));
      end[-2] = 'x'; /* x C3: truncated, a valid prefix */
      CHECK(!dx_utf8_valid(p, len));
      uint32_t st = 0;
      CHECK(dx_utf8_feed(&st, p, len));
      CHECK(st != 0);
    }
  }
  munmap(m, (size_t)pg * 2);
}

/* After a failure the state stays failed, and garbage states are refused
 * rather than used as shift counts. */
static void test_state(void) {
  uint32_t st = 0;
  CHECK(dx_utf8_feed(&st, (const uint8_t *)"\xe2", 1));
  CHECK(st != 0);
  CHECK(dx_utf8_feed(&st, (const uint8_t *)"\x82", 1));
  CHECK(dx_utf8_feed(&st, (const uint8_t *)"\xac", 1));
  CHECK_INT(st, 0);
  CHECK(dx_utf8_feed(&st, (const uint8_t *)"", 0));
  CHECK(!dx_utf8_feed(&st, (const uint8_t *)"\xff", 1));
  CHECK(!dx_utf8_feed(&st, (const uint8_t *)"abc", 3));
  CHECK(!dx_utf8_feed(&st, (const uint8_t *)"", 0));
  uint32_t bad[] = {1, 5, 7, 49, 54, 63, 64, 1000, UINT32_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    st = bad[i];
    CHECK(!dx_utf8_feed(&st, (const uint8_t *)"abc", 3));
  }
}

int main(void) {
  RUN(test_vectors);
  RUN(test_kuhn_series);
  RUN(test_state);
  RUN(test_exhaustive_short);
  RUN(test_all_scalars);
  RUN(test_random);
  RUN(test_ascii_blocks);
  RUN(test_guard_page);
  for (int n = 1; n <= 3; n++) {
    free(pre[n]);
    free(full[n]);
  }
  return CHECK_DONE();
}
