/*
 * The event loop: timers, posted work from other threads, stop, the order
 * of an iteration (I/O, timers, posted, flush, deferred), I/O watchers and
 * driving the loop from outside through dx_loop_fd. Callbacks are counted;
 * ctest's timeout catches a loop that never wakes.
 */
#include <duplex/net.h>

#include "check.h"
#include "net/internal.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* Runs iterations until *flag or 5 s pass. */
static void run_until(dx_loop *loop, const int *flag) {
  uint64_t end = now_ms() + 5000;
  while (!*flag && now_ms() < end)
    dx_loop_run_once(loop, 100);
}

/* ---- timers ------------------------------------------------------------- */

typedef struct tt {
  dx_timer t; /* first: the callback casts back */
  int id;
  int fired;
  uint64_t at;
} tt;

static int order[64], norder;

static void record(dx_timer *t) {
  tt *x = (tt *)t;
  x->fired++;
  x->at = dx_loop_now(t->loop);
  order[norder++] = x->id;
}

static void test_timer_order(void) {
  dx_loop *loop = dx_loop_new(NULL);
  CHECK(loop);
  tt t[5] = {{.id = 30}, {.id = 10}, {.id = 50}, {.id = 0}, {.id = 20}};
  norder = 0;
  uint64_t start = dx_loop_now(loop);
  for (int i = 0; i < 5; i++) {
    CHECK_INT(dx_timer_start(loop, &t[i].t, (uint64_t)t[i].id, 0, record), 0);
    CHECK(dx_timer_active(&t[i].t));
  }
  while (norder < 5 && now_ms() < start + 5000)
    dx_loop_run_once(loop, -1);
  CHECK_INT(norder, 5);
  int want[] = {0, 10, 20, 30, 50};
  for (int i = 0; i < 5; i++)
    CHECK_INT(order[i], want[i]);
  for (int i = 0; i < 5; i++) {
    CHECK_INT(t[i].fired, 1);
    CHECK(!dx_timer_active(&t[i].t));
    /* Never early: the cached clock at firing is past the deadline. */
    CHECK(t[i].at >= start + (uint64_t)t[i].id);
  }
  dx_loop_free(loop);
}

/* Many timers, some stopped: all due at once, they fire sorted. */
static uint64_t last_deadline;
static int sorted_ok, nfired;
static void check_sorted(dx_timer *t) {
  if (t->deadline < last_deadline) sorted_ok = 0;
  last_deadline = t->deadline;
  nfired++;
}

static void test_timer_heap(void) {
  dx_loop *loop = dx_loop_new(NULL);
  enum { N = 2000 };
  static dx_timer t[N];
  memset(t, 0, sizeof t);
  uint32_t x = 7;
  int stopped = 0;
  for (int i = 0; i < N; i++) {
    x = x * 1103515245u + 12345u;
    CHECK_INT(dx_timer_start(loop, &t[i], (x >> 8) % 40, 0, check_sorted), 0);
  }
  for (int i = 0; i < N; i += 3) {
    dx_timer_stop(&t[i]);
    stopped++;
  }
  for (int i = 1; i < N; i += 7) { /* re-arm some: moves in the heap */
    x = x * 1103515245u + 12345u;
    dx_timer_start(loop, &t[i], (x >> 8) % 40, 0, check_sorted);
    if (i % 3 == 0) stopped--;
  }
  sorted_ok = 1;
  last_deadline = 0;
  nfired = 0;
  sleep_ms(60);
  dx_loop_run_once(loop, 0);
  CHECK(sorted_ok);
  CHECK_INT(nfired, N - stopped);
  CHECK_INT(loop->timers.n, 0);
  dx_loop_free(loop);
}

static int repeat_count;
static void on_repeat(dx_timer *t) {
  CHECK(dx_timer_active(t)); /* a repeating timer is armed in its cb */
  if (++repeat_count == 5) dx_timer_stop(t);
}

static void test_timer_repeat(void) {
  dx_loop *loop = dx_loop_new(NULL);
  dx_timer t = {0};
  repeat_count = 0;
  uint64_t start = now_ms();
  CHECK_INT(dx_timer_start(loop, &t, 5, 5, on_repeat), 0);
  while (dx_timer_active(&t) && now_ms() < start + 5000)
    dx_loop_run_once(loop, -1);
  CHECK_INT(repeat_count, 5);
  CHECK(now_ms() - start >= 25);
  CHECK(!dx_timer_active(&t));
  dx_loop_run_once(loop, 20);
  CHECK_INT(repeat_count, 5);
  dx_loop_free(loop);
}

static void test_timer_stop_restart(void) {
  dx_loop *loop = dx_loop_new(NULL);
  tt a = {.id = 1};
  norder = 0;
  dx_timer_stop(&a.t); /* zeroed: a no-op */
  CHECK_INT(dx_timer_start(loop, &a.t, 10, 0, record), 0);
  dx_timer_stop(&a.t);
  dx_timer_stop(&a.t);
  CHECK(!dx_timer_active(&a.t));
  dx_loop_run_once(loop, 30);
  CHECK_INT(a.fired, 0);
  /* Re-arming an armed timer moves its deadline, in both directions. */
  CHECK_INT(dx_timer_start(loop, &a.t, 5, 0, record), 0);
  CHECK_INT(dx_timer_start(loop, &a.t, 1000, 0, record), 0);
  dx_loop_run_once(loop, 30);
  CHECK_INT(a.fired, 0);
  CHECK_INT(loop->timers.n, 1);
  CHECK_INT(dx_timer_start(loop, &a.t, 1, 0, record), 0);
  CHECK_INT(loop->timers.n, 1);
  run_until(loop, &a.fired);
  CHECK_INT(a.fired, 1);
  /* Restart after firing. */
  CHECK_INT(dx_timer_start(loop, &a.t, 1, 0, record), 0);
  a.fired = 0;
  run_until(loop, &a.fired);
  CHECK_INT(a.fired, 1);
  dx_loop_free(loop);
}

/* Two timers due in the same pass; whichever runs first stops the other. */
static tt pair[2];
static void stop_other(dx_timer *t) {
  record(t);
  dx_timer_stop(&pair[((tt *)t)->id == 0 ? 1 : 0].t);
}

static void test_timer_stopped_in_callback(void) {
  dx_loop *loop = dx_loop_new(NULL);
  memset(pair, 0, sizeof pair);
  pair[1].id = 1;
  norder = 0;
  dx_timer_start(loop, &pair[0].t, 1, 0, stop_other);
  dx_timer_start(loop, &pair[1].t, 2, 0, stop_other);
  sleep_ms(10);
  dx_loop_run_once(loop, 0);
  CHECK_INT(pair[0].fired + pair[1].fired, 1);
  CHECK_INT(pair[0].fired, 1); /* deadline order */
  CHECK(!dx_timer_active(&pair[1].t));
  dx_loop_run_once(loop, 10);
  CHECK_INT(pair[1].fired, 0);
  dx_loop_free(loop);
}

/* A timer that re-arms itself with after = 0 fires once per iteration. */
static int spin_count;
static void spin(dx_timer *t) {
  spin_count++;
  dx_timer_start(t->loop, t, 0, 0, spin);
}

static void test_timer_rearm_zero_does_not_spin(void) {
  dx_loop *loop = dx_loop_new(NULL);
  dx_timer t = {0};
  spin_count = 0;
  dx_timer_start(loop, &t, 0, 0, spin);
  dx_loop_run_once(loop, 0);
  CHECK_INT(spin_count, 1);
  dx_loop_run_once(loop, 0);
  CHECK_INT(spin_count, 2);
  dx_timer_stop(&t);
  dx_loop_free(loop);
}

/* ---- posted work -------------------------------------------------------- */

enum { THREADS = 4, POSTS = 10000 };

static struct {
  dx_loop *loop;
  int next[THREADS]; /* the seq expected from each thread */
  int ran;
  int out_of_order;
  int failed;
} P;

static void on_post(void *arg) {
  uintptr_t v = (uintptr_t)arg;
  int th = (int)(v >> 20), seq = (int)(v & 0xfffff);
  if (seq != P.next[th]) P.out_of_order++;
  P.next[th] = seq + 1;
  P.ran++;
}

static void *poster(void *arg) {
  uintptr_t th = (uintptr_t)arg;
  for (uintptr_t i = 0; i < POSTS; i++)
    if (dx_loop_post(P.loop, on_post, (void *)(th << 20 | i)) != 0)
      P.failed = 1;
  return NULL;
}

static void test_post_threads(void) {
  memset(&P, 0, sizeof P);
  P.loop = dx_loop_new(NULL);
  pthread_t th[THREADS];
  for (uintptr_t i = 0; i < THREADS; i++)
    pthread_create(&th[i], NULL, poster, (void *)i);
  uint64_t end = now_ms() + 20000;
  while (P.ran < THREADS * POSTS && now_ms() < end)
    dx_loop_run_once(P.loop, 100);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  dx_loop_run_once(P.loop, 0);
  CHECK_INT(P.failed, 0);
  CHECK_INT(P.ran, THREADS * POSTS);
  CHECK_INT(P.out_of_order, 0);
  for (int i = 0; i < THREADS; i++)
    CHECK_INT(P.next[i], POSTS);
  size_t w = dx__loop_wakeups(P.loop);
  fprintf(stderr, "    %d posts, %zu eventfd writes\n", THREADS * POSTS, w);
  CHECK(w >= 1);
  CHECK(w < THREADS * POSTS / 4);
  dx_loop_free(P.loop);
}

/* The loop busy elsewhere: a whole burst costs exactly one wake-up. */
static void test_post_burst_one_wakeup(void) {
  memset(&P, 0, sizeof P);
  P.loop = dx_loop_new(NULL);
  pthread_t th[THREADS];
  for (uintptr_t i = 0; i < THREADS; i++)
    pthread_create(&th[i], NULL, poster, (void *)i);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  CHECK_INT(dx__loop_wakeups(P.loop), 1);
  CHECK_INT(dx_loop_run_once(P.loop, 1000), 0); /* no watcher callback */
  CHECK_INT(P.ran, THREADS * POSTS);
  CHECK_INT(P.out_of_order, 0);
  /* The next post wakes again. */
  dx_loop_post(P.loop, on_post, (void *)(uintptr_t)POSTS);
  CHECK_INT(dx__loop_wakeups(P.loop), 2);
  dx_loop_run_once(P.loop, 1000);
  CHECK_INT(P.ran, THREADS * POSTS + 1);
  dx_loop_free(P.loop);
}

/* Work posted by posted work runs in the next iteration. */
static int chain_n;
static void chain(void *arg) {
  chain_n++;
  if (chain_n < 3) dx_loop_post(arg, chain, arg);
}

static void test_post_from_post(void) {
  dx_loop *loop = dx_loop_new(NULL);
  chain_n = 0;
  dx_loop_post(loop, chain, loop);
  dx_loop_run_once(loop, 1000);
  CHECK_INT(chain_n, 1);
  dx_loop_run_once(loop, 1000);
  CHECK_INT(chain_n, 2);
  dx_loop_run_once(loop, 1000);
  CHECK_INT(chain_n, 3);
  dx_loop_free(loop); /* nothing pending */
}

/* Posted work not run is dropped by dx_loop_free (ASan: no leak). */
static void test_post_dropped(void) {
  dx_loop *loop = dx_loop_new(NULL);
  for (int i = 0; i < 100; i++)
    dx_loop_post(loop, on_post, NULL);
  dx_loop_free(loop);
}

/* ---- stop -----------------------------------------------------------------
 */

static void *stopper(void *arg) {
  sleep_ms(30);
  dx_loop_stop(arg);
  return NULL;
}

static void test_stop_from_thread(void) {
  dx_loop *loop = dx_loop_new(NULL);
  pthread_t th;
  uint64_t start = now_ms();
  pthread_create(&th, NULL, stopper, loop);
  CHECK_INT(dx_loop_run(loop), 0); /* blocks in epoll_wait(-1) until woken */
  pthread_join(th, NULL);
  CHECK(now_ms() - start >= 25);
  /* Stop before run: the next run returns after one iteration ... */
  dx_loop_stop(loop);
  CHECK_INT(dx_loop_run(loop), 0);
  /* ... and the flag was cleared: this one runs until stopped again. */
  pthread_create(&th, NULL, stopper, loop);
  start = now_ms();
  CHECK_INT(dx_loop_run(loop), 0);
  pthread_join(th, NULL);
  CHECK(now_ms() - start >= 25);
  dx_loop_free(loop);
}

static void stop_self(dx_timer *t) {
  dx_loop_stop(t->loop);
}

static void test_stop_from_callback(void) {
  dx_loop *loop = dx_loop_new(NULL);
  dx_timer t = {0};
  dx_timer_start(loop, &t, 5, 5, stop_self);
  CHECK_INT(dx_loop_run(loop), 0);
  dx_loop_free(loop);
}

/* ---- iteration order: I/O, timers, posted, flush, deferred ----------------
 */

static char trail[32];
static size_t ntrail;
static void mark(char c) {
  if (ntrail + 1 < sizeof trail) trail[ntrail++] = c, trail[ntrail] = 0;
}
static void mark_deferred2(void *arg) {
  (void)arg;
  mark('E');
}
static void mark_deferred(void *arg) {
  mark('D');
  dx_loop_defer(arg, mark_deferred2, NULL); /* same pass */
}
static void mark_flush(void *arg) {
  (void)arg;
  mark('F');
}
static void mark_flush2(void *arg) {
  (void)arg;
  mark('G');
}
static void mark_post(void *arg) {
  (void)arg;
  mark('P');
}
static void mark_timer(dx_timer *t) {
  mark('T');
  dx_loop_defer(t->loop, mark_deferred, t->loop);
}
static void mark_io(dx_io *io, unsigned ev) {
  (void)ev;
  char c;
  while (read(io->fd, &c, 1) == 1) {
  }
  mark('I');
}

static void test_iteration_order(void) {
  dx_loop *loop = dx_loop_new(NULL);
  int sv[2];
  CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  dx_io io = {0};
  CHECK_INT(dx_io_start(loop, &io, sv[0], DX_IO_READ, mark_io), 0);
  dx_timer t = {0};
  CHECK_INT(dx_timer_start(loop, &t, 0, 0, mark_timer), 0);
  CHECK_INT(dx_loop_post(loop, mark_post, NULL), 0);
  CHECK_INT(dx_loop_on_flush(loop, mark_flush, &t), 0);
  CHECK_INT(write(sv[1], "x", 1), 1);
  ntrail = 0;
  CHECK_INT(dx_loop_run_once(loop, 1000), 1); /* one watcher callback */
  CHECK_STR(trail, "ITPFDE");
  /* Flush hooks: one per owner, replaced by the same arg, removed by NULL,
   * in registration order. */
  CHECK_INT(dx_loop_on_flush(loop, mark_flush2, &io), 0);
  ntrail = 0;
  trail[0] = 0;
  dx_loop_run_once(loop, 0);
  CHECK_STR(trail, "FG");
  CHECK_INT(dx_loop_on_flush(loop, mark_flush2, &t), 0);
  ntrail = 0;
  dx_loop_run_once(loop, 0);
  CHECK_STR(trail, "GG");
  CHECK_INT(dx_loop_on_flush(loop, NULL, &t), 0);
  CHECK_INT(dx_loop_on_flush(loop, NULL, &t), 0);
  ntrail = 0;
  dx_loop_run_once(loop, 0);
  CHECK_STR(trail, "G");
  /* Deferred outside an iteration: the next one does not sleep, and runs
   * it at its end. */
  dx_loop_defer(loop, mark_deferred, loop);
  ntrail = 0;
  uint64_t start = now_ms();
  dx_loop_run_once(loop, 2000);
  CHECK(now_ms() - start < 1000);
  CHECK_STR(trail, "GDE");
  dx_io_stop(&io);
  close(sv[0]);
  close(sv[1]);
  dx_loop_free(loop);
}

/* Deferred calls pending at dx_loop_free are run (they free memory). */
static void test_free_runs_deferred(void) {
  dx_loop *loop = dx_loop_new(NULL);
  void *p = malloc(100);
  dx_loop_defer(loop, free, p);
  dx_loop_free(loop); /* ASan: no leak */
}

/* ---- I/O watchers ----------------------------------------------------------
 */

static int io_calls;
static unsigned io_last;
static void count_io(dx_io *io, unsigned ev) {
  (void)io;
  io_calls++;
  io_last = ev;
}

static void test_io_read_write(void) {
  dx_loop *loop = dx_loop_new(NULL);
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
  dx_io io = {0};
  io_calls = 0;
  CHECK_INT(dx_io_start(loop, &io, sv[0], DX_IO_READ, count_io), 0);
  CHECK_INT(dx_io_start(loop, &(dx_io){0}, sv[0], DX_IO_READ, count_io),
            -EEXIST);
  CHECK_INT(dx_loop_run_once(loop, 0), 0);
  CHECK_INT(io_calls, 0);
  CHECK_INT(write(sv[1], "ab", 2), 2);
  CHECK_INT(dx_loop_run_once(loop, 1000), 1);
  CHECK_INT(io_calls, 1);
  CHECK_INT(io_last, DX_IO_READ);
  /* Edge-triggered: unread data does not report again ... */
  CHECK_INT(dx_loop_run_once(loop, 0), 0);
  CHECK_INT(io_calls, 1);
  /* ... new data does. */
  CHECK_INT(write(sv[1], "c", 1), 1);
  dx_loop_run_once(loop, 1000);
  CHECK_INT(io_calls, 2);
  /* Modify to WRITE: a writable socket reports at once. Same set: no-op. */
  CHECK_INT(dx_io_modify(&io, DX_IO_READ | DX_IO_WRITE), 0);
  CHECK_INT(dx_io_modify(&io, DX_IO_READ | DX_IO_WRITE), 0);
  dx_loop_run_once(loop, 1000);
  CHECK_INT(io_calls, 3);
  CHECK(io_last & DX_IO_WRITE);
  /* Peer closes: HUP comes with READ, so a reader meets the EOF. */
  CHECK_INT(dx_io_modify(&io, DX_IO_READ), 0);
  close(sv[1]);
  dx_loop_run_once(loop, 1000);
  CHECK_INT(io_calls, 4);
  CHECK(io_last & DX_IO_READ);
  CHECK(io_last & DX_IO_HUP);
  CHECK(!(io_last & DX_IO_WRITE));
  /* Stop: no more callbacks, fd kept for the caller, twice is fine. */
  dx_io_stop(&io);
  dx_io_stop(&io);
  CHECK_INT(io.fd, sv[0]);
  CHECK_INT(dx_io_modify(&io, DX_IO_WRITE), DX_EINVAL);
  dx_loop_run_once(loop, 10);
  CHECK_INT(io_calls, 4);
  close(sv[0]);
  dx_loop_free(loop);
}

/* Two readable watchers in one batch; the first called stops the other. */
static dx_io pair_io[2];
static int pair_calls[2];
static void stop_other_io(dx_io *io, unsigned ev) {
  (void)ev;
  int me = io == &pair_io[1];
  pair_calls[me]++;
  dx_io_stop(&pair_io[!me]);
}

static void test_io_stopped_in_batch(void) {
  dx_loop *loop = dx_loop_new(NULL);
  int a[2], b[2];
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a);
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b);
  memset(pair_io, 0, sizeof pair_io);
  pair_calls[0] = pair_calls[1] = 0;
  dx_io_start(loop, &pair_io[0], a[0], DX_IO_READ, stop_other_io);
  dx_io_start(loop, &pair_io[1], b[0], DX_IO_READ, stop_other_io);
  CHECK_INT(write(a[1], "x", 1), 1);
  CHECK_INT(write(b[1], "y", 1), 1);
  /* Both events are in the same epoll_wait batch. */
  CHECK_INT(dx_loop_run_once(loop, 1000), 1);
  CHECK_INT(pair_calls[0] + pair_calls[1], 1);
  dx_loop_run_once(loop, 10);
  CHECK_INT(pair_calls[0] + pair_calls[1], 1);
  for (int i = 0; i < 2; i++) {
    dx_io_stop(&pair_io[i]);
    close(a[i]);
    close(b[i]);
  }
  dx_loop_free(loop);
}

/* A pipe works the same; more ready fds than one batch holds all get served
 * across iterations. */
static void drain_io(dx_io *io, unsigned ev) {
  (void)ev;
  char buf[16];
  while (read(io->fd, buf, sizeof buf) > 0) {
  }
  io_calls++;
}

static void test_io_many(void) {
  dx_loop *loop = dx_loop_new(NULL);
  enum { N = DX__MAX_EVENTS + 44 };
  static int fds[N][2];
  static dx_io ios[N];
  memset(ios, 0, sizeof ios);
  io_calls = 0;
  for (int i = 0; i < N; i++) {
    CHECK_INT(pipe2(fds[i], O_NONBLOCK), 0);
    CHECK_INT(dx_io_start(loop, &ios[i], fds[i][0], DX_IO_READ, drain_io), 0);
    CHECK_INT(write(fds[i][1], "z", 1), 1);
  }
  CHECK_INT(dx_loop_run_once(loop, 1000), DX__MAX_EVENTS);
  CHECK_INT(dx_loop_run_once(loop, 1000), N - DX__MAX_EVENTS);
  CHECK_INT(io_calls, N);
  for (int i = 0; i < N; i++) {
    dx_io_stop(&ios[i]);
    close(fds[i][0]);
    close(fds[i][1]);
  }
  dx_loop_free(loop);
}

/* ---- driven from outside --------------------------------------------------
 */

static int poll_fd(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, timeout_ms);
}

static int fired_flag;
static void set_flag(dx_timer *t) {
  (void)t;
  fired_flag = 1;
}
static void set_flag_post(void *arg) {
  (void)arg;
  fired_flag = 1;
}

static void test_loop_fd(void) {
  dx_loop *loop = dx_loop_new(NULL);
  int fd = dx_loop_fd(loop);
  CHECK(fd >= 0);
  CHECK_INT(dx_loop_fd(loop), fd);
  CHECK_INT(poll_fd(fd, 0), 0);
  /* Posted work makes it readable. */
  fired_flag = 0;
  dx_loop_post(loop, set_flag_post, NULL);
  CHECK_INT(poll_fd(fd, 1000), 1);
  dx_loop_run_once(loop, 0);
  CHECK_INT(fired_flag, 1);
  CHECK_INT(poll_fd(fd, 0), 0);
  /* A timer makes it readable when due, not before. */
  dx_timer t = {0};
  fired_flag = 0;
  uint64_t start = now_ms();
  CHECK_INT(dx_timer_start(loop, &t, 30, 0, set_flag), 0);
  CHECK_INT(poll_fd(fd, 0), 0);
  CHECK_INT(poll_fd(fd, 2000), 1);
  CHECK(now_ms() - start >= 29);
  CHECK(now_ms() - start < 1000);
  dx_loop_run_once(loop, 0);
  CHECK_INT(fired_flag, 1);
  CHECK_INT(poll_fd(fd, 0), 0);
  /* A stopped timer does not wake it; a re-armed one wakes at its new
   * deadline. */
  dx_timer_start(loop, &t, 20, 0, set_flag);
  dx_timer_stop(&t);
  CHECK_INT(poll_fd(fd, 60), 0);
  dx_timer_start(loop, &t, 500, 0, set_flag);
  dx_timer_start(loop, &t, 10, 0, set_flag);
  start = now_ms();
  CHECK_INT(poll_fd(fd, 2000), 1);
  CHECK(now_ms() - start < 400);
  fired_flag = 0;
  dx_loop_run_once(loop, 0);
  CHECK_INT(fired_flag, 1);
  /* A socket. */
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
  dx_io io = {0};
  io_calls = 0;
  dx_io_start(loop, &io, sv[0], DX_IO_READ, count_io);
  CHECK_INT(poll_fd(fd, 0), 0);
  CHECK_INT(write(sv[1], "x", 1), 1);
  CHECK_INT(poll_fd(fd, 1000), 1);
  CHECK_INT(dx_loop_run_once(loop, 0), 1);
  CHECK_INT(io_calls, 1);
  dx_io_stop(&io);
  close(sv[0]);
  close(sv[1]);
  dx_loop_free(loop);
}

/* ---- misc -------------------------------------------------------------------
 */

static void test_recv_buffer_and_clock(void) {
  dx_loop *loop = dx_loop_new(NULL);
  size_t n = 0;
  uint8_t *b = dx_loop_recv_buffer(loop, &n);
  CHECK_INT(n, 512 * 1024);
  CHECK_INT((uintptr_t)b % 64, 0);
  memset(b, 1, n);
  dx_loop_free(loop);
  dx_loop_config cfg = {.recv_buffer = 1000};
  loop = dx_loop_new(&cfg);
  b = dx_loop_recv_buffer(loop, &n);
  CHECK_INT(n, 1000);
  memset(b, 1, n);
  uint64_t t0 = dx_loop_now(loop);
  CHECK(t0 > 0);
  dx_loop_run_once(loop, 20);
  CHECK(dx_loop_now(loop) >= t0 + 19);
  dx_loop_free(loop);
  dx_loop_free(NULL);
}

int main(void) {
  RUN(test_timer_order);
  RUN(test_timer_heap);
  RUN(test_timer_repeat);
  RUN(test_timer_stop_restart);
  RUN(test_timer_stopped_in_callback);
  RUN(test_timer_rearm_zero_does_not_spin);
  RUN(test_post_threads);
  RUN(test_post_burst_one_wakeup);
  RUN(test_post_from_post);
  RUN(test_post_dropped);
  RUN(test_stop_from_thread);
  RUN(test_stop_from_callback);
  RUN(test_iteration_order);
  RUN(test_free_runs_deferred);
  RUN(test_io_read_write);
  RUN(test_io_stopped_in_batch);
  RUN(test_io_many);
  RUN(test_loop_fd);
  RUN(test_recv_buffer_and_clock);
  return CHECK_DONE();
}
