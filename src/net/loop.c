/*
 * The event loop: one epoll set per thread, edge-triggered, with the
 * dx_io pointer in epoll_data so dispatch is a load, not a lookup.
 *
 * An iteration (the order net.h documents):
 *
 *   epoll_wait -> I/O callbacks -> due timers -> posted work
 *              -> flush hooks -> deferred calls
 *
 * Why this order: I/O first so a message that arrived is handled before a
 * timeout that raced it; flush after everything that can produce output,
 * so each connection is written once per iteration; deferred calls last,
 * so memory closed by any callback stays valid until no callback of this
 * iteration can touch it (the uSockets/libuv rule).
 */
#include "internal.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define DEFAULT_RECV_BUFFER ((size_t)512 * 1024)
#define DEFAULT_POOL_CAP ((size_t)1024 * 1024)

/* ---- growable work arrays ---------------------------------------------- */

static int works_push(dx__works *w, void (*fn)(void *), void *arg) {
  if (w->n == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 16;
    if (cap > SIZE_MAX / sizeof(dx__work)) return DX_ENOMEM;
    dx__work *a = realloc(w->a, cap * sizeof *a);
    if (!a) return DX_ENOMEM;
    w->a = a;
    w->cap = cap;
  }
  w->a[w->n++] = (dx__work){fn, arg};
  return 0;
}

static void works_free(dx__works *w) {
  free(w->a);
  *w = (dx__works){0};
}

/* ---- I/O watchers ------------------------------------------------------ */

static uint32_t to_epoll(unsigned events) {
  uint32_t e = EPOLLET;
  if (events & DX_IO_READ) e |= EPOLLIN;
  if (events & DX_IO_WRITE) e |= EPOLLOUT;
  return e;
}

int dx_io_start(dx_loop *loop, dx_io *io, int fd, unsigned events,
                dx_io_cb cb) {
  struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
  io->fd = fd;
  io->events = events;
  io->cb = cb;
  io->loop = NULL;
  if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
  io->loop = loop;
  return 0;
}

int dx_io_modify(dx_io *io, unsigned events) {
  if (!io->loop) return DX_EINVAL;
  if (events == io->events) return 0;
  struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
  if (epoll_ctl(io->loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0) return -errno;
  io->events = events;
  return 0;
}

void dx_io_set_cb(dx_io *io, dx_io_cb cb) {
  io->cb = cb;
}

/* io->loop == NULL is the "stopped" mark dispatch checks, rather than
 * fd = -1: the caller still needs io->fd to close it. Errors from DEL are
 * ignored: the fd may already be closed, which removed it from the set. */
void dx_io_stop(dx_io *io) {
  if (!io->loop) return;
  struct epoll_event ev = {0}; /* kernels before 2.6.9 wanted non-NULL */
  epoll_ctl(io->loop->epfd, EPOLL_CTL_DEL, io->fd, &ev);
  io->loop = NULL;
}

static unsigned from_epoll(uint32_t e, unsigned requested) {
  /* Linux's EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP are 1, 4, 8, 16, and
   * DX_IO_READ/WRITE/ERROR/HUP 1, 2, 4, 8: one shift maps the last three.
   * (Other values take the portable branch, folded away at compile time.) */
  unsigned ev;
  if (EPOLLIN == 1 && EPOLLOUT == 4 && EPOLLERR == 8 && EPOLLHUP == 16) {
    ev = (e & 1u) | ((e >> 1) & 0xeu);
  } else {
    ev = (e & EPOLLIN ? DX_IO_READ : 0u) | (e & EPOLLOUT ? DX_IO_WRITE : 0u) |
         (e & EPOLLERR ? DX_IO_ERROR : 0u) | (e & EPOLLHUP ? DX_IO_HUP : 0u);
  }
  /* A callback modified earlier in this batch does not want the rest.
   * Errors are reported where the callback looks: its read or write fails
   * with the real errno (or reads EOF) and it closes on its usual path. */
  unsigned err = ev & (DX_IO_ERROR | DX_IO_HUP);
  return (ev & requested & 3u) | err | (err ? requested & 3u : 0u);
}

/* Returns the callbacks run, not counting the loop's own watchers (their
 * callbacks count themselves in loop->internal, so the common path does
 * not compare every watcher against them). */
static int dispatch(dx_loop *loop, int n) {
  int handled = 0;
  loop->internal = 0;
  for (int i = 0; i < n; i++) {
    dx_io *io = loop->events[i].data.ptr;
    /* Stopped by an earlier callback of this batch (its memory is still
     * valid: frees are deferred), or moved to another loop. */
    if (io->loop != loop) continue;
    unsigned ev = from_epoll(loop->events[i].events, io->events);
    if (!ev) continue;
    handled++;
    io->cb(io, ev);
  }
  return handled - loop->internal;
}

/* ---- cross-thread wake-up and posted work ------------------------------- */

/*
 * The eventfd is edge-triggered and never read. Linux wakes epoll on every
 * eventfd write, and with EPOLLET each wake re-queues the item once it has
 * been reported, so a write after epoll_wait reported the previous one
 * always yields a new event. Not reading saves a system call per wake-up;
 * the counter would need 2^64 writes to saturate.
 *
 * Why no wake-up is lost: a post writes after its item is in the queue,
 * and the loop swaps the queue only after epoll reported the eventfd. If
 * the write lands before the report, the swap that follows sees the item;
 * if after, it produces another event and another swap.
 */
static void wake(dx_loop *loop) {
  uint64_t one = 1;
  while (write(loop->wake_io.fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

static void on_wake(dx_io *io, unsigned events) {
  (void)events;
  io->loop->post_pending = true;
  io->loop->internal++;
}

int dx_loop_post(dx_loop *loop, void (*fn)(void *arg), void *arg) {
  pthread_mutex_lock(&loop->post_lock);
  bool first = loop->post_in.n == 0;
  int r = works_push(&loop->post_in, fn, arg);
  pthread_mutex_unlock(&loop->post_lock);
  if (r < 0) return r;
  /* Only the post that makes the queue non-empty writes: later ones ride
   * on its wake-up, since the loop swaps out the whole queue at once. */
  if (first) {
    atomic_fetch_add_explicit(&loop->wakeups, 1, memory_order_relaxed);
    wake(loop);
  }
  return 0;
}

/* Swaps the queue for the loop's (empty) array under the lock and runs the
 * items without it, so producers never wait on a running item. Work posted
 * by the items lands in the new queue and runs next iteration. */
static void run_posted(dx_loop *loop) {
  loop->post_pending = false;
  pthread_mutex_lock(&loop->post_lock);
  dx__works run = loop->post_in;
  loop->post_in = loop->post_run;
  pthread_mutex_unlock(&loop->post_lock);
  for (size_t i = 0; i < run.n; i++)
    run.a[i].fn(run.a[i].arg);
  run.n = 0;
  loop->post_run = run;
}

void dx_loop_stop(dx_loop *loop) {
  atomic_store(&loop->stop, true);
  wake(loop);
}

size_t dx__loop_wakeups(dx_loop *loop) {
  return atomic_load_explicit(&loop->wakeups, memory_order_relaxed);
}

/* ---- end-of-iteration hooks --------------------------------------------- */

int dx_loop_on_flush(dx_loop *loop, void (*fn)(void *arg), void *arg) {
  for (size_t i = 0; i < loop->flush.n; i++) {
    if (loop->flush.a[i].arg == arg) {
      loop->flush.a[i].fn = fn; /* NULL: removed at the end of run_flush */
      if (!fn) loop->flush_removed = true;
      return 0;
    }
  }
  return fn ? works_push(&loop->flush, fn, arg) : 0;
}

/* Indexes (not pointers) because a hook may register another and move the
 * array; a hook removed mid-pass is skipped and compacted after it. */
static void run_flush(dx_loop *loop) {
  dx__works *f = &loop->flush;
  for (size_t i = 0; i < f->n; i++) {
    dx__work w = f->a[i];
    if (w.fn) w.fn(w.arg);
  }
  /* Compacting is rare work (a hook was removed): not every iteration. */
  if (!loop->flush_removed) return;
  loop->flush_removed = false;
  size_t k = 0;
  for (size_t i = 0; i < f->n; i++)
    if (f->a[i].fn) f->a[k++] = f->a[i];
  f->n = k;
}

int dx_loop_defer(dx_loop *loop, void (*fn)(void *arg), void *arg) {
  return works_push(&loop->defer, fn, arg);
}

static void run_deferred(dx_loop *loop) {
  for (size_t i = 0; i < loop->defer.n; i++) {
    dx__work w = loop->defer.a[i];
    w.fn(w.arg);
  }
  loop->defer.n = 0;
}

/* ---- driven from outside: timers on a timerfd --------------------------- */

/* One timerfd_settime only when the earliest deadline changed. Absolute
 * time on the same clock as loop->now, so no drift between the two. */
static void sync_timerfd(dx_loop *loop) {
  uint64_t next = dx__timers_next(&loop->timers);
  if (next == loop->timerfd_deadline) return;
  struct itimerspec its = {0};
  if (next != UINT64_MAX) {
    its.it_value.tv_sec = (time_t)(next / 1000);
    its.it_value.tv_nsec = (long)(next % 1000) * 1000000;
    if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
      its.it_value.tv_nsec = 1; /* zero would disarm */
  }
  if (timerfd_settime(loop->timer_io.fd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
    loop->timerfd_deadline = next;
}

static void on_timerfd(dx_io *io, unsigned events) {
  /* Nothing to read (edge-triggered, as the eventfd): waking up was the
   * point, and the timer phase of this iteration runs what is due. */
  (void)events;
  io->loop->internal++;
}

void dx__loop_timers_changed(dx_loop *loop) {
  if (loop->driven_outside && !loop->in_iteration) sync_timerfd(loop);
}

int dx_loop_fd(dx_loop *loop) {
  if (!loop->driven_outside) {
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd >= 0 &&
        dx_io_start(loop, &loop->timer_io, tfd, DX_IO_READ, on_timerfd) < 0) {
      close(tfd);
      tfd = -1;
    }
    /* On failure timers only fire when the host calls run_once anyway;
     * the next dx_loop_fd call tries again. */
    if (tfd >= 0) {
      loop->driven_outside = true;
      loop->timerfd_deadline = UINT64_MAX;
      sync_timerfd(loop);
    }
  }
  return loop->epfd;
}

/* ---- the iteration ------------------------------------------------------ */

static int wait_timeout(dx_loop *loop, int timeout_ms) {
  if (loop->defer.n) return 0;
  uint64_t next = dx__timers_next(&loop->timers);
  if (next == UINT64_MAX) return timeout_ms;
  loop->now = dx__clock_ms();
  /* now is floored to the ms, so deadline - now already rounds up. */
  uint64_t d = next > loop->now ? next - loop->now : 0;
  if (d > INT_MAX) d = INT_MAX;
  if (timeout_ms < 0 || (uint64_t)timeout_ms > d) timeout_ms = (int)d;
  return timeout_ms;
}

int dx_loop_run_once(dx_loop *loop, int timeout_ms) {
  assert(!loop->in_iteration); /* not re-entrant */
  int n = epoll_wait(loop->epfd, loop->events, DX__MAX_EVENTS,
                     wait_timeout(loop, timeout_ms));
  if (n < 0) {
    if (errno != EINTR) return -errno;
    n = 0; /* a signal: still run what is due */
  }
  loop->in_iteration = true;
  loop->now = dx__clock_ms();
  int handled = dispatch(loop, n);
  dx__timers_run(loop);
  if (loop->post_pending) run_posted(loop);
  run_flush(loop);
  run_deferred(loop);
  loop->in_iteration = false;
  if (loop->driven_outside) sync_timerfd(loop);
  return handled;
}

/* The stop flag is cleared when run returns (libuv's way), not when it
 * starts: a stop from another thread racing with the start is not lost. */
int dx_loop_run(dx_loop *loop) {
  int r;
  do {
    r = dx_loop_run_once(loop, -1);
    /* A plain load first: the locked exchange only when a stop is seen. */
  } while (r >= 0 &&
           !(atomic_load_explicit(&loop->stop, memory_order_acquire) &&
             atomic_exchange(&loop->stop, false)));
  return r < 0 ? r : 0;
}

/* ---- life cycle --------------------------------------------------------- */

dx_loop *dx_loop_new(const dx_loop_config *cfg) {
  size_t rb = cfg && cfg->recv_buffer ? cfg->recv_buffer : DEFAULT_RECV_BUFFER;
  size_t cap = cfg && cfg->pool_cap ? cfg->pool_cap : DEFAULT_POOL_CAP;
  size_t rb_alloc = (rb + 63) & ~(size_t)63; /* aligned_alloc wants k*64 */
  if (rb_alloc < rb) {
    errno = ENOMEM;
    return NULL;
  }
  dx_loop *loop = calloc(1, sizeof *loop);
  if (!loop) return NULL;
  loop->epfd = -1;
  loop->wake_io.fd = -1;
  loop->timer_io.fd = -1;
  dx__pool_init(&loop->pool, cap);
  int err = pthread_mutex_init(&loop->post_lock, NULL);
  if (err) {
    free(loop);
    errno = err;
    return NULL;
  }
  /* 64-byte aligned so the unmasking loop can run whole vectors. */
  loop->recv = aligned_alloc(64, rb_alloc);
  loop->recv_size = rb;
  if (!loop->recv) goto fail;
  loop->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (loop->epfd < 0) goto fail;
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) goto fail;
  int r = dx_io_start(loop, &loop->wake_io, efd, DX_IO_READ, on_wake);
  if (r < 0) {
    close(efd);
    errno = -r;
    goto fail;
  }
  atomic_init(&loop->stop, false);
  atomic_init(&loop->wakeups, 0);
  loop->timerfd_deadline = UINT64_MAX;
  loop->now = dx__clock_ms();
  return loop;
fail:
  err = errno;
  if (loop->epfd >= 0) close(loop->epfd);
  free(loop->recv);
  pthread_mutex_destroy(&loop->post_lock);
  free(loop);
  errno = err;
  return NULL;
}

void dx_loop_free(dx_loop *loop) {
  if (!loop) return;
  assert(!loop->in_iteration);
  run_deferred(loop); /* they free memory: dropping them would leak */
  if (loop->timer_io.fd >= 0) close(loop->timer_io.fd);
  close(loop->wake_io.fd);
  close(loop->epfd);
  pthread_mutex_destroy(&loop->post_lock);
  works_free(&loop->post_in);
  works_free(&loop->post_run);
  works_free(&loop->flush);
  works_free(&loop->defer);
  dx__timers_destroy(&loop->timers);
  dx__pool_destroy(&loop->pool);
  free(loop->recv);
  free(loop);
}

/* ---- accessors ---------------------------------------------------------- */

uint64_t dx_loop_now(const dx_loop *loop) {
  return loop->now;
}

uint8_t *dx_loop_recv_buffer(dx_loop *loop, size_t *size) {
  if (size) *size = loop->recv_size;
  return loop->recv;
}

dx_allocator dx_loop_allocator(dx_loop *loop) {
  return (dx_allocator){dx__pool_realloc, &loop->pool};
}
