/*
 * A guard page for parser tests: guarded() copies n bytes so that they end
 * exactly where a PROT_NONE page begins, so any read past the input crashes
 * (under ASan or not). One mapping per test program, made on first use and
 * reused by every call: each copy overwrites the last one, so a pointer it
 * returned is good until the next call. Aborts if n is over three pages.
 */
#ifndef DX_TEST_GUARD_H
#define DX_TEST_GUARD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static inline const void *guarded(const void *p, size_t n) {
  static uint8_t *guard_base;
  static size_t page;
  if (!guard_base) {
    page = (size_t)sysconf(_SC_PAGESIZE);
    guard_base = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guard_base == MAP_FAILED) abort();
    if (mprotect(guard_base + 3 * page, page, PROT_NONE) != 0) abort();
  }
  if (n > 3 * page) abort();
  uint8_t *q = guard_base + 3 * page - n;
  memcpy(q, p, n);
  return q;
}

#endif
