/* Errors, allocation, buffers and randomness shared by the engine. */
#include "proto/internal.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

const char *dx_strerror(int err) {
  switch (err) {
#define DX__ERR_MSG(name, value, msg)                                          \
  case value:                                                                  \
    return msg;
    DX_ERRNO_MAP(DX__ERR_MSG)
#undef DX__ERR_MSG
  }
  if (err < 0 && err > -4000) return strerror(-err);
  return "unknown error";
}

const char *dx_errname(int err) {
  switch (err) {
#define DX__ERR_NAME(name, value, msg)                                         \
  case value:                                                                  \
    return #name;
    DX_ERRNO_MAP(DX__ERR_NAME)
#undef DX__ERR_NAME
  }
  return "UNKNOWN";
}

void *dx__realloc(const dx_allocator *a, void *p, size_t old, size_t n) {
  if (a && a->realloc) return a->realloc(a->ud, p, old, n);
  if (n == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, n);
}

int dx__buf_reserve(dx__buf *b, const dx_allocator *a, size_t more) {
  if (b->off > 0 && b->cap - b->len < more) {
    /* Compact before growing: consumed bytes at the front are dead. */
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  if (b->cap - b->len >= more) return 0;
  if (more > SIZE_MAX - b->len) return DX_ETOOBIG;
  size_t need = b->len + more;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  uint8_t *p = dx__realloc(a, b->data, b->cap, cap);
  if (!p) return DX_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int dx__buf_append(dx__buf *b, const dx_allocator *a, const void *p,
                   size_t n) {
  int rc = dx__buf_reserve(b, a, n);
  if (rc) return rc;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void dx__buf_free(dx__buf *b, const dx_allocator *a) {
  dx__free(a, b->data, b->cap);
  memset(b, 0, sizeof *b);
}

/* RAND_bytes per call is a lock and a DRBG step; masks are drawn per frame,
 * so take them from a small pool refilled in bulk. Thread-local: engines
 * on different threads never share it. */
int dx__random(void *buf, size_t n) {
  static _Thread_local uint8_t pool[256];
  static _Thread_local size_t avail;
  if (n > sizeof pool) return RAND_bytes(buf, (int)n) == 1 ? 0 : DX_ENOMEM;
  if (avail < n) {
    if (RAND_bytes(pool, sizeof pool) != 1) return DX_ENOMEM;
    avail = sizeof pool;
  }
  memcpy(buf, pool + sizeof pool - avail, n);
  /* Never hand out the same bytes twice. */
  memset(pool + sizeof pool - avail, 0, n);
  avail -= n;
  return 0;
}
