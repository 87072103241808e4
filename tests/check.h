/*
 * A one-header test harness. Each test file defines test functions and a
 * main() that runs them with RUN(); a failed check prints the expression, both
 * values and the location, marks the test failed and returns from it.
 * The process exits non-zero when any test failed; ctest reads that.
 */
#ifndef DX_TEST_CHECK_H
#define DX_TEST_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check__failed_tests, check__run_tests, check__cur_failed;

#define CHECK__FAIL(...)                                                       \
  do {                                                                         \
    fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__);                     \
    fprintf(stderr, __VA_ARGS__);                                              \
    fputc('\n', stderr);                                                       \
    check__cur_failed = 1;                                                     \
    return;                                                                    \
  } while (0)

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) CHECK__FAIL("%s", #cond);                                     \
  } while (0)

#define CHECK_INT(a, b)                                                        \
  do {                                                                         \
    long long check__a = (long long)(a), check__b = (long long)(b);            \
    if (check__a != check__b)                                                  \
      CHECK__FAIL("%s == %s: %lld != %lld", #a, #b, check__a, check__b);       \
  } while (0)

#define CHECK_STR(a, b)                                                        \
  do {                                                                         \
    const char *check__a = (a), *check__b = (b);                               \
    if (!check__a || !check__b || strcmp(check__a, check__b) != 0)             \
      CHECK__FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b,                        \
                  check__a ? check__a : "(null)",                              \
                  check__b ? check__b : "(null)");                             \
  } while (0)

static inline void check__hex(const char *label, const void *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p;
  fprintf(stderr, "    %s (%zu):", label, n);
  for (size_t i = 0; i < n && i < 64; i++) fprintf(stderr, " %02x", b[i]);
  fprintf(stderr, n > 64 ? " ...\n" : "\n");
}

/* Compares two byte ranges, printing both in hex on mismatch. */
#define CHECK_MEM(a, alen, b, blen)                                            \
  do {                                                                         \
    size_t check__al = (alen), check__bl = (blen);                             \
    if (check__al != check__bl ||                                              \
        (check__al && memcmp((a), (b), check__al) != 0)) {                     \
      check__hex(#a, (a), check__al);                                          \
      check__hex(#b, (b), check__bl);                                          \
      CHECK__FAIL("%s == %s", #a, #b);                                         \
    }                                                                          \
  } while (0)

#define RUN(fn)                                                                \
  do {                                                                         \
    check__cur_failed = 0;                                                     \
    check__run_tests++;                                                        \
    fn();                                                                      \
    if (check__cur_failed) {                                                   \
      check__failed_tests++;                                                   \
      fprintf(stderr, "not ok %s\n", #fn);                                     \
    } else {                                                                   \
      fprintf(stderr, "ok %s\n", #fn);                                         \
    }                                                                          \
  } while (0)

#define CHECK_DONE()                                                           \
  (fprintf(stderr, "%d passed, %d failed\n",                                   \
           check__run_tests - check__failed_tests, check__failed_tests),       \
   check__failed_tests ? 1 : 0)

#endif
