/*
 * Frame headers and payload masking (RFC 6455 section 5.2 and 5.3).
 *
 * Masking is on the receive path of every server byte, so it runs a vector
 * (SSE2, baseline on x86-64) or a 64-bit word at a time. Loads and stores
 * go through unaligned intrinsics or memcpy: payloads start wherever the
 * frame header left them, and UBSan must stay quiet.
 */
#include <duplex/proto.h>

#include <assert.h>
#include <string.h>

/* DX_NO_SIMD forces the portable code, so tests can cover it on x86. */
#if defined(__SSE2__) && !defined(DX_NO_SIMD)
#define USE_SSE2 1
#include <emmintrin.h>
#else
#define USE_SSE2 0
#endif

/* The 4-byte key as it lines up with data that starts at key offset o,
 * repeated to 8 bytes. Built through memcpy, so it is right on either
 * endianness. */
static uint64_t key_word(const uint8_t mask[4], size_t o) {
  uint8_t k[8];
  for (size_t i = 0; i < 8; i++)
    k[i] = mask[(o + i) & 3];
  uint64_t w;
  memcpy(&w, k, 8);
  return w;
}

/* From this length on, aligning the stores pays for the bytewise head
 * (a store split across cache lines costs more than a few byte steps). */
#define MASK_ALIGN_MIN 64

size_t dx_mask(uint8_t *data, size_t len, const uint8_t mask[4],
               size_t offset) {
  size_t o = offset & 3;
  size_t next = (o + len) & 3;

  if (len >= MASK_ALIGN_MIN) {
    size_t head = (size_t)(-(uintptr_t)data) & 15;
    for (size_t i = 0; i < head; i++)
      data[i] ^= mask[(o + i) & 3];
    data += head;
    len -= head;
    o = (o + head) & 3;
#if USE_SSE2
    /* 16 is a multiple of 4: one rotated key serves every block. */
    __m128i k = _mm_set1_epi64x((long long)key_word(mask, o));
    for (; len >= 64; data += 64, len -= 64) {
      __m128i *q = (__m128i *)(void *)data;
      __m128i a = _mm_xor_si128(_mm_load_si128(q), k);
      __m128i b = _mm_xor_si128(_mm_load_si128(q + 1), k);
      __m128i c = _mm_xor_si128(_mm_load_si128(q + 2), k);
      __m128i d = _mm_xor_si128(_mm_load_si128(q + 3), k);
      _mm_store_si128(q, a);
      _mm_store_si128(q + 1, b);
      _mm_store_si128(q + 2, c);
      _mm_store_si128(q + 3, d);
    }
#endif
  }
  if (len >= 8) {
    /* Unaligned 64-bit words: cheap on current CPUs, and memcpy keeps
     * it defined behaviour. */
    uint64_t k8 = key_word(mask, o);
    for (; len >= 8; data += 8, len -= 8) {
      uint64_t w;
      memcpy(&w, data, 8);
      w ^= k8;
      memcpy(data, &w, 8);
    }
  }
  for (size_t i = 0; i < len; i++)
    data[i] ^= mask[(o + i) & 3];
  return next;
}

size_t dx_frame_header(uint8_t out[14], dx_opcode op, bool fin, bool rsv1,
                       uint64_t len, const uint8_t *mask) {
  /* RFC 6455 5.2: the 64-bit length's most significant bit must be 0. No
   * buffer in memory gets there; this is a caller bug, not peer input. */
  assert(len >> 63 == 0);
  size_t n = 0;
  uint8_t mbit = mask ? 0x80 : 0;
  out[n++] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (op & 0x0F));
  /* 5.2: the minimal length encoding is required of the sender. */
  if (len < 126) {
    out[n++] = (uint8_t)(mbit | len);
  } else if (len <= 0xFFFF) {
    out[n++] = mbit | 126;
    out[n++] = (uint8_t)(len >> 8);
    out[n++] = (uint8_t)len;
  } else {
    out[n++] = mbit | 127;
    for (int shift = 56; shift >= 0; shift -= 8)
      out[n++] = (uint8_t)(len >> shift);
  }
  if (mask) {
    memcpy(out + n, mask, 4);
    n += 4;
  }
  return n;
}
