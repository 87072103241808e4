/*
 * dx_loop_allocator: size classes, recycling, realloc across classes, big
 * blocks and the per-class cap. Run under ASan, the pool's poisoning also
 * makes any byte touched past a requested size, or in a cached block, fail.
 */
#include <duplex/net.h>

#include "check.h"
#include "net/internal.h"

static void *ra(dx_allocator *a, void *p, size_t old, size_t n) {
  return a->realloc(a->ud, p, old, n);
}

static void fill(void *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    ((uint8_t *)p)[i] = (uint8_t)(seed + i * 7);
}

static int same(const void *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (((const uint8_t *)p)[i] != (uint8_t)(seed + i * 7)) return 0;
  return 1;
}

static void test_class_sizes(void) {
  CHECK_INT(dx__pool_class_size(1), 64);
  CHECK_INT(dx__pool_class_size(64), 64);
  CHECK_INT(dx__pool_class_size(65), 128);
  CHECK_INT(dx__pool_class_size(1000), 1024);
  CHECK_INT(dx__pool_class_size(1024), 1024);
  CHECK_INT(dx__pool_class_size(65536), 65536);
  CHECK_INT(dx__pool_class_size(65537), 0);
  CHECK_INT(dx__pool_class_size(0), 0);
}

/* Every size from 1 to 64 KiB + a bit: allocate, fill, read back, free. */
static void test_round_trip(void) {
  dx_loop *loop = dx_loop_new(NULL);
  CHECK(loop);
  dx_allocator a = dx_loop_allocator(loop);
  size_t sizes[] = {1,   7,    63,   64,    65,    127,   128,   129,
                    255, 4096, 4097, 65535, 65536, 65537, 200000};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    uint8_t *p = ra(&a, NULL, 0, sizes[i]);
    CHECK(p);
    CHECK_INT((uintptr_t)p % 16, 0);
    fill(p, sizes[i], (unsigned)i);
    CHECK(same(p, sizes[i], (unsigned)i));
    CHECK(ra(&a, p, sizes[i], 0) == NULL);
  }
  CHECK(ra(&a, NULL, 0, 0) == NULL);
  dx_loop_free(loop);
}

static void test_recycling(void) {
  dx_loop *loop = dx_loop_new(NULL);
  dx_allocator a = dx_loop_allocator(loop);
  void *p = ra(&a, NULL, 0, 100);
  ra(&a, p, 100, 0);
  CHECK_INT(dx__pool_cached(&loop->pool, 100), 128);
  /* Any size of the same class gets the block back, LIFO. */
  void *q = ra(&a, NULL, 0, 120);
  CHECK(q == p);
  CHECK_INT(dx__pool_cached(&loop->pool, 100), 0);
  void *r = ra(&a, NULL, 0, 70);
  CHECK(r != q);
  ra(&a, r, 70, 0);
  ra(&a, q, 120, 0);
  CHECK(ra(&a, NULL, 0, 128) == q);
  CHECK(ra(&a, NULL, 0, 128) == r);
  ra(&a, q, 128, 0);
  ra(&a, r, 128, 0);
  dx_loop_free(loop);
}

static void test_realloc(void) {
  dx_loop *loop = dx_loop_new(NULL);
  dx_allocator a = dx_loop_allocator(loop);
  uint8_t *p = ra(&a, NULL, 0, 10);
  fill(p, 10, 3);
  /* Inside the class: same pointer, content kept. */
  CHECK(ra(&a, p, 10, 64) == p);
  fill(p, 64, 3);
  /* Grows across every class and into malloc territory. */
  size_t old = 64;
  for (size_t n = 100; n <= 300000; n = n * 3 / 2) {
    uint8_t *q = ra(&a, p, old, n);
    CHECK(q);
    CHECK(same(q, old, 3));
    fill(q, n, 3);
    p = q;
    old = n;
  }
  /* Big to big is the C library's realloc; big to small moves back. */
  uint8_t *q = ra(&a, p, old, 100000);
  CHECK(q && same(q, 100000, 3));
  p = ra(&a, q, 100000, 200);
  CHECK(p && same(p, 200, 3));
  /* Shrink across classes keeps the prefix. */
  q = ra(&a, p, 200, 50);
  CHECK(q && same(q, 50, 3));
  ra(&a, q, 50, 0);
  dx_loop_free(loop);
}

static void test_big_blocks(void) {
  dx_loop *loop = dx_loop_new(NULL);
  dx_allocator a = dx_loop_allocator(loop);
  void *p = ra(&a, NULL, 0, 1 << 20);
  CHECK(p);
  memset(p, 0xab, 1 << 20);
  ra(&a, p, 1 << 20, 0);
  /* Not cached: nothing for any class. */
  for (size_t n = 64; n <= 65536; n *= 2)
    CHECK_INT(dx__pool_cached(&loop->pool, n), 0);
  dx_loop_free(loop);
}

static void test_cap(void) {
  dx_loop_config cfg = {.pool_cap = 4096};
  dx_loop *loop = dx_loop_new(&cfg);
  dx_allocator a = dx_loop_allocator(loop);
  void *b[100];
  for (int i = 0; i < 100; i++)
    b[i] = ra(&a, NULL, 0, 1024);
  for (int i = 0; i < 100; i++)
    ra(&a, b[i], 1024, 0);
  CHECK_INT(dx__pool_cached(&loop->pool, 1024), 4096); /* 4 blocks kept */
  for (int i = 0; i < 100; i++)
    b[i] = ra(&a, NULL, 0, 40000);
  for (int i = 0; i < 100; i++)
    ra(&a, b[i], 40000, 0);
  CHECK_INT(dx__pool_cached(&loop->pool, 40000), 0); /* 64 KiB > cap */
  CHECK_INT(dx__pool_cached(&loop->pool, 100), 0);
  /* Default cap: 1 MiB per class. */
  dx_loop *l2 = dx_loop_new(NULL);
  dx_allocator a2 = dx_loop_allocator(l2);
  for (int i = 0; i < 100; i++)
    b[i] = ra(&a2, NULL, 0, 65536);
  for (int i = 0; i < 100; i++)
    ra(&a2, b[i], 65536, 0);
  CHECK_INT(dx__pool_cached(&l2->pool, 65536), 1 << 20);
  dx_loop_free(l2);
  dx_loop_free(loop); /* ASan's leak check: cached blocks are freed */
}

/* Allocate and free in a churn pattern; the content of each live block must
 * survive the others being recycled around it. */
static void test_churn(void) {
  dx_loop *loop = dx_loop_new(NULL);
  dx_allocator a = dx_loop_allocator(loop);
  enum { N = 64 };
  void *p[N] = {0};
  size_t sz[N] = {0};
  uint32_t x = 12345;
  for (int round = 0; round < 20000; round++) {
    x = x * 1103515245u + 12345u;
    int i = (int)(x >> 16) % N;
    size_t n = 1 + (x >> 8) % 9000;
    if (p[i]) {
      CHECK(same(p[i], sz[i], (unsigned)i));
      if (x & 1) {
        ra(&a, p[i], sz[i], 0);
        p[i] = NULL;
        continue;
      }
      void *q = ra(&a, p[i], sz[i], n);
      CHECK(q);
      CHECK(same(q, sz[i] < n ? sz[i] : n, (unsigned)i));
      p[i] = q;
    } else {
      p[i] = ra(&a, NULL, 0, n);
      CHECK(p[i]);
    }
    sz[i] = n;
    fill(p[i], n, (unsigned)i);
  }
  for (int i = 0; i < N; i++)
    if (p[i]) ra(&a, p[i], sz[i], 0);
  dx_loop_free(loop);
}

#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN 1
#endif
#endif

#ifdef ASAN
#include <sys/wait.h>
#include <unistd.h>

/* Runs touch(p) in a child: ASan must kill it. */
static int dies(void (*touch)(dx_allocator *)) {
  pid_t pid = fork();
  if (pid == 0) {
    dx_loop *loop = dx_loop_new(NULL);
    dx_allocator a = dx_loop_allocator(loop);
    freopen("/dev/null", "w", stderr); /* the expected report */
    touch(&a);
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void touch_cached(dx_allocator *a) {
  volatile uint8_t *p = ra(a, NULL, 0, 256);
  ra(a, (void *)p, 256, 0);
  p[100] = 1;
}

static void touch_past_size(dx_allocator *a) {
  volatile uint8_t *p = ra(a, NULL, 0, 100);
  p[100] = 1; /* inside the 128-byte block, past the 100 asked for */
}

static void touch_after_shrink(dx_allocator *a) {
  volatile uint8_t *p = ra(a, NULL, 0, 120);
  p = ra(a, (void *)p, 120, 65); /* same class, same block */
  p[70] = 1;
}

static void touch_ok(dx_allocator *a) {
  volatile uint8_t *p = ra(a, NULL, 0, 100);
  p[99] = 1;
  p = ra(a, (void *)p, 100, 128);
  p[127] = 1;
}

static void test_asan_poison(void) {
  CHECK(!dies(touch_ok)); /* the control: dies() is not always true */
  CHECK(dies(touch_cached));
  CHECK(dies(touch_past_size));
  CHECK(dies(touch_after_shrink));
}
#endif

int main(void) {
  RUN(test_class_sizes);
  RUN(test_round_trip);
  RUN(test_recycling);
  RUN(test_realloc);
  RUN(test_big_blocks);
  RUN(test_cap);
  RUN(test_churn);
#ifdef ASAN
  RUN(test_asan_poison);
#endif
  return CHECK_DONE();
}
