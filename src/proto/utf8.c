/*
 * UTF-8 validation: RFC 3629 section 4 (the byte syntax), which RFC 6455
 * section 8.1 requires of text messages and close reasons, failing the
 * connection as soon as invalid data is seen.
 *
 * Two parts:
 *  - an ASCII skip that looks at 16 or 64 bytes per step, because real text
 *    protocols (JSON, chat) are mostly ASCII and ASCII is valid whatever
 *    comes before or after it, as long as we are between code points;
 *  - a DFA for everything else. Its states are exactly the "valid prefix"
 *    classes of RFC 3629's grammar, so it rejects at the first byte after
 *    which no continuation can be valid (fail fast, also across calls).
 *
 * The DFA is shift-based: the state is a bit offset, and the table holds,
 * for each input byte, one 64-bit row with every state's successor packed
 * in 6-bit fields. A step is `st = row[b] >> st & 63`: the load depends only
 * on the input byte, so the loop-carried chain is one shift and one AND,
 * instead of the load-after-load chain of a 2-D table.
 */
#include <duplex/proto.h>

#include <string.h>

/* DX_NO_SIMD forces the portable code, so tests can cover it on x86. */
#if defined(__SSE2__) && !defined(DX_NO_SIMD)
#define USE_SSE2 1
#include <emmintrin.h>
#else
#define USE_SSE2 0
#endif

/* States as bit offsets into a row. ACCEPT is 0 so that *state == 0 means
 * "at a code point boundary" (proto.h); every state above REJECT is the
 * middle of a sequence, which lets the inner loop test `st > REJECT`. */
enum {
  ACCEPT = 0,
  REJECT = 6,
  CONT1 = 12,    /* one continuation byte (80..BF) left */
  CONT2 = 18,    /* two left, the next unrestricted */
  CONT3 = 24,    /* three left (after F1..F3) */
  AFTER_E0 = 30, /* next in A0..BF: below is overlong (< U+0800) */
  AFTER_ED = 36, /* next in 80..9F: above is a surrogate (U+D800..DFFF) */
  AFTER_F0 = 42, /* next in 90..BF: below is overlong (< U+10000) */
  AFTER_F4 = 48  /* next in 80..8F: above is past U+10FFFF */
};

/* One row: the successor of each state. REJECT absorbs, so a caller that
 * keeps feeding after a failure keeps getting false. */
#define ROW(acc, c1, c2, c3, e0, ed, f0, f4)                                   \
  ((uint64_t)(acc) << ACCEPT | (uint64_t)REJECT << REJECT |                    \
   (uint64_t)(c1) << CONT1 | (uint64_t)(c2) << CONT2 |                         \
   (uint64_t)(c3) << CONT3 | (uint64_t)(e0) << AFTER_E0 |                      \
   (uint64_t)(ed) << AFTER_ED | (uint64_t)(f0) << AFTER_F0 |                   \
   (uint64_t)(f4) << AFTER_F4)

#define R_ASCII                                                                \
  ROW(ACCEPT, REJECT, REJECT, REJECT, REJECT, REJECT, REJECT, REJECT)
#define R_80_8F ROW(REJECT, ACCEPT, CONT1, CONT2, REJECT, CONT1, REJECT, CONT2)
#define R_90_9F ROW(REJECT, ACCEPT, CONT1, CONT2, REJECT, CONT1, CONT2, REJECT)
#define R_A0_BF ROW(REJECT, ACCEPT, CONT1, CONT2, CONT1, REJECT, CONT2, REJECT)
#define R_LEAD(s) ROW(s, REJECT, REJECT, REJECT, REJECT, REJECT, REJECT, REJECT)
/* C0 C1 (only overlong 2-byte forms) and F5..FF (past U+10FFFF, or not a
 * UTF-8 byte at all): RFC 3629 section 1 says they never appear. */
#define R_NEVER R_LEAD(REJECT)

#define ROW_OF(b)                                                              \
  ((b) < 0x80    ? R_ASCII                                                     \
   : (b) < 0x90  ? R_80_8F                                                     \
   : (b) < 0xA0  ? R_90_9F                                                     \
   : (b) < 0xC0  ? R_A0_BF                                                     \
   : (b) < 0xC2  ? R_NEVER                                                     \
   : (b) < 0xE0  ? R_LEAD(CONT1)                                               \
   : (b) == 0xE0 ? R_LEAD(AFTER_E0)                                            \
   : (b) == 0xED ? R_LEAD(AFTER_ED)                                            \
   : (b) < 0xF0  ? R_LEAD(CONT2)                                               \
   : (b) == 0xF0 ? R_LEAD(AFTER_F0)                                            \
   : (b) < 0xF4  ? R_LEAD(CONT3)                                               \
   : (b) == 0xF4 ? R_LEAD(AFTER_F4)                                            \
                 : R_NEVER)

/* Built at compile time from the grammar above, so the table cannot drift
 * from its description. */
#define R4(b) ROW_OF(b), ROW_OF((b) + 1), ROW_OF((b) + 2), ROW_OF((b) + 3)
#define R16(b) R4(b), R4((b) + 4), R4((b) + 8), R4((b) + 12)
#define R64(b) R16(b), R16((b) + 16), R16((b) + 32), R16((b) + 48)

static const uint64_t utf8_dfa[256] = {R64(0x00), R64(0x40), R64(0x80),
                                       R64(0xC0)};

/* One DFA step. Only the low 6 bits of st are meaningful between steps:
 * `& 63` on the shift count is free (x86 and AArch64 shifts mask it), so
 * the dependency chain is a single shift per byte; callers reduce st with
 * `& 63` before comparing it. */
static inline uint64_t step(uint64_t st, uint8_t b) {
  return utf8_dfa[b] >> (st & 63);
}

#define HIGH_BITS 0x8080808080808080u

static inline uint64_t load64(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

static inline uint32_t load32(const uint8_t *p) {
  uint32_t w;
  memcpy(&w, p, 4);
  return w;
}

/* True when [p, p + n) is all ASCII. Short inputs are covered by two
 * overlapping loads instead of a byte loop; nothing outside [p, p + n) is
 * read, because the engine validates in place in the caller's buffer,
 * which may end at a page boundary. */
static bool all_ascii_short(const uint8_t *p, size_t n) {
  if (n >= 8) return ((load64(p) | load64(p + n - 8)) & HIGH_BITS) == 0;
  if (n >= 4) return ((load32(p) | load32(p + n - 4)) & 0x80808080u) == 0;
  uint8_t any = 0;
  for (size_t i = 0; i < n; i++)
    any |= p[i];
  return any < 0x80;
}

#if USE_SSE2
static inline unsigned high_mask16(const uint8_t *p) {
  return (unsigned)_mm_movemask_epi8(
      _mm_loadu_si128((const __m128i *)(const void *)p));
}

/* Skips ASCII while at least 16 bytes remain: returns the first non-ASCII
 * byte, or a point less than 16 bytes before end with only ASCII before
 * it. 64 bytes per step while nothing is found (one movemask for four
 * loads keeps the loop at load throughput). */
static const uint8_t *skip_ascii(const uint8_t *p, const uint8_t *end) {
  while (end - p >= 64) {
    __m128i a = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(p + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(p + 48));
    __m128i any = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
    if (_mm_movemask_epi8(any)) break;
    p += 64;
  }
  while (end - p >= 16) {
    unsigned m = high_mask16(p);
    if (m) return p + __builtin_ctz(m);
    p += 16;
  }
  return p;
}
#else
/* The portable version of the same, a 64-bit word at a time. */
static const uint8_t *skip_ascii(const uint8_t *p, const uint8_t *end) {
  while (end - p >= 16) {
    if ((load64(p) | load64(p + 8)) & HIGH_BITS) break;
    p += 16;
  }
  if (end - p >= 16) {
    while (*p < 0x80)
      p++;
  }
  return p;
}
#endif

/* Non-ASCII text is checked in runs of this many bytes: long enough to
 * amortise the one REJECT test and the ASCII re-check per run, short
 * enough that a failure is reported (and the rest of a large buffer
 * skipped) soon after the offending byte. */
#define RUN_LEN 16

/* Runs the DFA over [p, p + n) with no branch per byte: REJECT absorbs,
 * so one check at the end of the run sees a failure anywhere in it. */
static inline uint64_t run_dfa(uint64_t st, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    st = step(st, p[i]);
  return st & 63;
}

/* The same over a fixed RUN_LEN bytes, unrolled: the loop bookkeeping
 * otherwise costs more than the one shift per byte on the critical path. */
static inline uint64_t run_dfa_block(uint64_t st, const uint8_t *p) {
#if defined(__clang__)
#pragma unroll
#elif defined(__GNUC__)
#pragma GCC unroll 16
#endif
  for (size_t i = 0; i < RUN_LEN; i++)
    st = step(st, p[i]);
  return st & 63;
}

bool dx_utf8_feed(uint32_t *state, const uint8_t *data, size_t len) {
  uint64_t st = *state;
  const uint8_t *p = data, *end = len ? data + len : data; /* NULL + 0 is UB */

  /* Anything that is not one of our states (a caller's uninitialised
   * variable) is refused rather than trusted. */
  if (st > AFTER_F4 || st % 6 != 0 || st == REJECT) goto fail;

  while (end - p >= RUN_LEN) {
    if (st == ACCEPT) {
      /* Between code points ASCII needs no state machine at all. */
      p = skip_ascii(p, end);
      if (end - p < RUN_LEN) break;
    }
    st = run_dfa_block(st, p);
    if (st == REJECT) goto fail;
    p += RUN_LEN;
  }
  size_t n = (size_t)(end - p);
  if (st != ACCEPT || !all_ascii_short(p, n)) {
    st = run_dfa(st, p, n);
    if (st == REJECT) goto fail;
  }
  *state = (uint32_t)st;
  return true;

fail:
  *state = REJECT;
  return false;
}

bool dx_utf8_valid(const uint8_t *data, size_t len) {
  uint32_t st = 0;
  return dx_utf8_feed(&st, data, len) && st == 0;
}
