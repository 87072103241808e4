/*
 * dx_mask against a byte-by-byte reference (RFC 6455 section 5.3:
 * transformed-octet-i = original-octet-i XOR masking-key-octet-(i MOD 4)),
 * and dx_frame_header against the examples of RFC 6455 section 5.7.
 */
#include <duplex/proto.h>

#include "check.h"

#include <sys/mman.h>
#include <unistd.h>

static size_t ref_mask(uint8_t *p, size_t n, const uint8_t k[4], size_t off) {
  for (size_t i = 0; i < n; i++)
    p[i] ^= k[(off + i) % 4];
  return (off + n) % 4;
}

static uint64_t rng_state = 0x2545F4914F6CDD1Du;
static uint8_t rnd8(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint8_t)(rng_state >> 32);
}

/* Every length 0..300, every key offset 0..3, every start alignment 0..15
 * (the head/vector/word/tail split moves with all three). Canary bytes
 * around the range must be left alone. */
static void test_mask_vs_reference(void) {
  enum { MAXLEN = 300, PAD = 32 };
  static uint8_t orig[MAXLEN + 2 * PAD + 16];
  static _Alignas(64) uint8_t got[sizeof orig], want[sizeof orig];
  for (size_t len = 0; len <= MAXLEN; len++) {
    for (size_t off = 0; off < 4; off++) {
      for (size_t align = 0; align < 16; align++) {
        uint8_t key[4] = {rnd8(), rnd8(), rnd8(), rnd8()};
        for (size_t i = 0; i < sizeof orig; i++)
          orig[i] = rnd8();
        memcpy(got, orig, sizeof orig);
        memcpy(want, orig, sizeof orig);
        size_t r = dx_mask(got + PAD + align, len, key, off);
        size_t rr = ref_mask(want + PAD + align, len, key, off);
        CHECK_INT(r, rr);
        if (memcmp(got, want, sizeof orig) != 0) {
          fprintf(stderr, "  len %zu off %zu align %zu\n", len, off, align);
          CHECK_MEM(got, sizeof orig, want, sizeof orig);
        }
      }
    }
  }
}

/* Masking in pieces, carrying the returned offset, equals masking whole;
 * and masking twice restores the data. */
static void test_mask_chained(void) {
  uint8_t orig[1000], a[1000], b[1000];
  const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  for (size_t i = 0; i < sizeof orig; i++)
    orig[i] = rnd8();
  memcpy(b, orig, sizeof b);
  CHECK_INT(dx_mask(b, sizeof b, key, 0), 0);
  for (int iter = 0; iter < 2000; iter++) {
    memcpy(a, orig, sizeof a);
    size_t pos = 0, off = 0;
    while (pos < sizeof a) {
      size_t n = rnd8() % 70;
      if (n > sizeof a - pos) n = sizeof a - pos;
      off = dx_mask(a + pos, n, key, off);
      pos += n;
    }
    CHECK_INT(off, 0);
    CHECK_MEM(a, sizeof a, b, sizeof b);
  }
  CHECK_INT(dx_mask(b, sizeof b, key, 0), 0);
  CHECK_MEM(b, sizeof b, orig, sizeof orig);
}

/* Data that ends right before a PROT_NONE page: no load or store past the
 * end, whatever the length and alignment. */
static void test_mask_guard_page(void) {
  long pg = sysconf(_SC_PAGESIZE);
  uint8_t *m = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(m != MAP_FAILED);
  CHECK(mprotect(m + pg, (size_t)pg, PROT_NONE) == 0);
  const uint8_t key[4] = {1, 2, 3, 4};
  for (size_t len = 0; len <= 300; len++) {
    uint8_t *p = m + pg - len;
    memset(p, 0, len);
    CHECK_INT(dx_mask(p, len, key, 1), (1 + len) & 3);
    for (size_t i = 0; i < len; i++)
      CHECK_INT(p[i], key[(1 + i) & 3]);
  }
  munmap(m, (size_t)pg * 2);
}

/* RFC 6455 section 5.7. */
static void test_rfc_examples(void) {
  uint8_t h[14];
  size_t n;

  /* A single-frame unmasked text message: 0x81 0x05 "Hello". */
  n = dx_frame_header(h, DX_OP_TEXT, true, false, 5, NULL);
  CHECK_MEM(h, n, "\x81\x05", 2);

  /* A single-frame masked text message. */
  const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  n = dx_frame_header(h, DX_OP_TEXT, true, false, 5, key);
  CHECK_MEM(h, n, "\x81\x85\x37\xfa\x21\x3d", 6);
  uint8_t hello[5];
  memcpy(hello, "Hello", 5);
  CHECK_INT(dx_mask(hello, 5, key, 0), 1);
  CHECK_MEM(hello, 5, "\x7f\x9f\x4d\x51\x58", 5);

  /* A fragmented unmasked text message: "Hel" then "lo". */
  n = dx_frame_header(h, DX_OP_TEXT, false, false, 3, NULL);
  CHECK_MEM(h, n, "\x01\x03", 2);
  n = dx_frame_header(h, DX_OP_CONT, true, false, 2, NULL);
  CHECK_MEM(h, n, "\x80\x02", 2);

  /* Unmasked ping and masked pong, "Hello" each. */
  n = dx_frame_header(h, DX_OP_PING, true, false, 5, NULL);
  CHECK_MEM(h, n, "\x89\x05", 2);
  n = dx_frame_header(h, DX_OP_PONG, true, false, 5, key);
  CHECK_MEM(h, n, "\x8a\x85\x37\xfa\x21\x3d", 6);

  /* 256 bytes binary in a single unmasked frame. */
  n = dx_frame_header(h, DX_OP_BINARY, true, false, 256, NULL);
  CHECK_MEM(h, n, "\x82\x7E\x01\x00", 4);

  /* 64 KiB binary in a single unmasked frame. */
  n = dx_frame_header(h, DX_OP_BINARY, true, false, 65536, NULL);
  CHECK_MEM(h, n, "\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10);
}

/* The length encoding switches at 126 and 65536 (RFC 6455 5.2: the minimal
 * number of bytes must be used), with and without a mask, and RSV1. */
static void test_header_lengths(void) {
  uint8_t h[14];
  const uint8_t key[4] = {0xde, 0xad, 0xbe, 0xef};
  size_t n;

  n = dx_frame_header(h, DX_OP_BINARY, true, false, 0, NULL);
  CHECK_MEM(h, n, "\x82\x00", 2);
  n = dx_frame_header(h, DX_OP_BINARY, true, false, 125, NULL);
  CHECK_MEM(h, n, "\x82\x7d", 2);
  n = dx_frame_header(h, DX_OP_BINARY, true, false, 126, NULL);
  CHECK_MEM(h, n, "\x82\x7e\x00\x7e", 4);
  n = dx_frame_header(h, DX_OP_BINARY, true, false, 65535, NULL);
  CHECK_MEM(h, n, "\x82\x7e\xff\xff", 4);
  n = dx_frame_header(h, DX_OP_BINARY, true, false, 0x0102030405060708u, NULL);
  CHECK_MEM(h, n, "\x82\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10);
  n = dx_frame_header(h, DX_OP_BINARY, true, false, INT64_MAX, key);
  CHECK_MEM(h, n, "\x82\xff\x7f\xff\xff\xff\xff\xff\xff\xff\xde\xad\xbe\xef",
            14);
  n = dx_frame_header(h, DX_OP_TEXT, true, true, 126, key);
  CHECK_MEM(h, n, "\xc1\xfe\x00\x7e\xde\xad\xbe\xef", 8);
  n = dx_frame_header(h, DX_OP_TEXT, false, true, 0, key);
  CHECK_MEM(h, n, "\x41\x80\xde\xad\xbe\xef", 6);
  n = dx_frame_header(h, DX_OP_CLOSE, true, false, 2, NULL);
  CHECK_MEM(h, n, "\x88\x02", 2);
}

int main(void) {
  RUN(test_mask_vs_reference);
  RUN(test_mask_chained);
  RUN(test_mask_guard_page);
  RUN(test_rfc_examples);
  RUN(test_header_lengths);
  return CHECK_DONE();
}
