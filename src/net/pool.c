/*
 * The loop's allocator: power-of-two size classes from 64 B to 64 KiB,
 * each with an intrusive free list (the first word of a free block links
 * to the next). A connection's output or partial-frame buffer is taken and
 * given back many times a second; the list turns that into a pointer pop.
 *
 * Blocks are always allocated at their class size, so a resize inside the
 * class returns the same pointer, and the old_size the caller passes back
 * is enough to find the class: no header before the block.
 *
 * Under ASan, bytes past the requested size and whole cached blocks are
 * poisoned, so recycling does not hide overflows or use-after-free.
 */
#include "internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define DX__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DX__ASAN 1
#endif
#endif

#ifdef DX__ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define MIN_SIZE ((size_t)1 << DX__POOL_MIN_SHIFT)
#define MAX_SIZE ((size_t)1 << DX__POOL_MAX_SHIFT)

/* n in [1, MAX_SIZE] -> class index: ceil(log2(n)) - MIN_SHIFT, at least 0. */
static unsigned class_of(size_t n) {
  assert(n >= 1 && n <= MAX_SIZE);
  if (n <= MIN_SIZE) return 0;
  unsigned bits = (unsigned)(64 - __builtin_clzll((unsigned long long)n - 1));
  return bits - DX__POOL_MIN_SHIFT;
}

static size_t class_bytes(unsigned c) {
  return MIN_SIZE << c;
}

/* Makes [0, n) addressable and [n, size) not (ASan only). */
static void shape(void *b, size_t n, size_t size) {
  UNPOISON(b, n);
  POISON((char *)b + n, size - n);
}

static void *pool_alloc(dx__pool *p, size_t n) {
  if (n > MAX_SIZE) return malloc(n);
  unsigned c = class_of(n);
  size_t size = class_bytes(c);
  void *b = p->free[c];
  if (b) {
    p->free[c] = *(void **)b;
    p->cached[c] -= size;
  } else if (!(b = malloc(size))) {
    return NULL;
  }
  shape(b, n, size);
  return b;
}

static void pool_free(dx__pool *p, void *b, size_t n) {
  if (n > MAX_SIZE) {
    free(b);
    return;
  }
  unsigned c = class_of(n);
  size_t size = class_bytes(c);
  if (p->cached[c] + size > p->cap) {
    UNPOISON(b, size);
    free(b);
    return;
  }
  UNPOISON(b, sizeof(void *));
  *(void **)b = p->free[c];
  POISON((char *)b + sizeof(void *), size - sizeof(void *));
  p->free[c] = b;
  p->cached[c] += size;
}

void *dx__pool_realloc(void *ud, void *ptr, size_t old_size, size_t new_size) {
  dx__pool *p = ud;
  if (!ptr) return new_size ? pool_alloc(p, new_size) : NULL;
  assert(old_size > 0); /* a live block was allocated with a size */
  if (!new_size) {
    pool_free(p, ptr, old_size);
    return NULL;
  }
  bool old_small = old_size <= MAX_SIZE, new_small = new_size <= MAX_SIZE;
  if (old_small && new_small && class_of(old_size) == class_of(new_size)) {
    shape(ptr, new_size, class_bytes(class_of(new_size)));
    return ptr;
  }
  if (!old_small && !new_small) return realloc(ptr, new_size);
  void *q = pool_alloc(p, new_size);
  if (!q) return NULL; /* realloc semantics: the old block stays valid */
  memcpy(q, ptr, old_size < new_size ? old_size : new_size);
  pool_free(p, ptr, old_size);
  return q;
}

void dx__pool_init(dx__pool *p, size_t cap) {
  *p = (dx__pool){.cap = cap};
}

void dx__pool_destroy(dx__pool *p) {
  for (unsigned c = 0; c < DX__POOL_CLASSES; c++) {
    void *b = p->free[c];
    while (b) {
      void *next = *(void **)b;
      UNPOISON(b, class_bytes(c));
      free(b);
      b = next;
    }
    p->free[c] = NULL;
    p->cached[c] = 0;
  }
}

size_t dx__pool_class_size(size_t n) {
  return n && n <= MAX_SIZE ? class_bytes(class_of(n)) : 0;
}

size_t dx__pool_cached(const dx__pool *p, size_t n) {
  return n && n <= MAX_SIZE ? p->cached[class_of(n)] : 0;
}
