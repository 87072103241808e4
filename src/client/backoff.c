/*
 * Reconnection backoff: exponential with "full jitter" (the delay is uniform
 * between zero and the exponential cap), which spreads a crowd of clients
 * that lost the same server far better than a fixed or "equal" jitter
 * (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).
 */
#include "client/internal.h"

#include <openssl/rand.h>
#include <time.h>

unsigned dx__backoff_cap(unsigned base_ms, unsigned max_ms, unsigned attempt) {
  if (attempt == 0) attempt = 1;
  unsigned shift = attempt - 1;
  /* base << shift overflows well before shift 32; compare first. */
  if (shift >= 32 || base_ms > (max_ms >> shift)) return max_ms;
  unsigned v = base_ms << shift;
  return v < max_ms ? v : max_ms;
}

bool dx__backoff_next(dx__backoff *b, uint64_t rnd, unsigned *attempt,
                      unsigned *delay_ms) {
  if (b->max_attempts && b->attempt >= b->max_attempts) return false;
  b->attempt++;
  uint64_t cap = dx__backoff_cap(b->base_ms, b->max_ms, b->attempt);
  /* Modulo bias is below 2^-31 for a 32-bit cap over 64 random bits. */
  *delay_ms = (unsigned)(rnd % (cap + 1));
  *attempt = b->attempt;
  return true;
}

void dx__backoff_opened(dx__backoff *b, uint64_t now) {
  b->opened_at = now ? now : 1;
}

void dx__backoff_lost(dx__backoff *b, uint64_t now) {
  if (b->opened_at && now - b->opened_at >= b->stable_ms) b->attempt = 0;
  b->opened_at = 0;
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

uint64_t dx__client_random(void) {
  uint64_t v;
  if (RAND_bytes((unsigned char *)&v, sizeof v) == 1) return v;
  static _Thread_local uint64_t state;
  if (!state) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    state = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
            (uint64_t)(uintptr_t)&ts;
  }
  return splitmix64(&state);
}
