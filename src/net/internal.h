/*
 * Internal to net: the loop's layout and the seams between loop.c (the
 * iteration), timer.c (the heap) and pool.c (the allocator). Nothing here
 * is installed; names are dx__ (internal) per STYLE.md. Tests include it to
 * read counters.
 */
#ifndef DX_NET_INTERNAL_H
#define DX_NET_INTERNAL_H

#include <duplex/net.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <time.h>

/* CLOCK_MONOTONIC in ms (a vDSO call, no system call). COARSE would be
 * cheaper still but ticks at 1-4 ms, too coarse for ms timers. Floored, so
 * a wait of deadline - now ms never wakes before the deadline. */
static inline uint64_t dx__clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- pool.c ----------------------------------------------------------- */

#define DX__POOL_MIN_SHIFT 6  /* 64 B: room for the free-list link */
#define DX__POOL_MAX_SHIFT 16 /* 64 KiB */
#define DX__POOL_CLASSES (DX__POOL_MAX_SHIFT - DX__POOL_MIN_SHIFT + 1)

typedef struct dx__pool {
  void *free[DX__POOL_CLASSES];    /* intrusive lists: first word links */
  size_t cached[DX__POOL_CLASSES]; /* bytes on each list */
  size_t cap;                      /* per class */
} dx__pool;

void dx__pool_init(dx__pool *p, size_t cap);
/* Returns every cached block to the C library. */
void dx__pool_destroy(dx__pool *p);
/* The dx_allocator.realloc of dx_loop_allocator; ud is the dx__pool. */
void *dx__pool_realloc(void *ud, void *ptr, size_t old_size, size_t new_size);
/* The block size a request of n bytes gets, or 0 when n goes to malloc. */
size_t dx__pool_class_size(size_t n);
/* Bytes cached on the free list of the class serving n (tests). */
size_t dx__pool_cached(const dx__pool *p, size_t n);

/* ---- timer.c ---------------------------------------------------------- */

/* heap_index of a timer taken off the heap because it is due in the current
 * pass of dx__timers_run; dx_timer_stop resets it to 0 to cancel. */
#define DX__TIMER_DUE SIZE_MAX

typedef struct dx__timers {
  dx_timer **heap; /* heap[1..n]: heap_index is 1-based, 0 = unarmed */
  size_t n;
  dx_timer **due; /* scratch for dx__timers_run, as large as heap */
  size_t ndue;
  size_t cap; /* of both arrays, in entries (heap[0] unused) */
} dx__timers;

void dx__timers_destroy(dx__timers *ts);
/* Fires every timer due at loop->now. */
void dx__timers_run(dx_loop *loop);
/* The earliest deadline, or UINT64_MAX when no timer is armed. */
static inline uint64_t dx__timers_next(const dx__timers *ts) {
  return ts->n ? ts->heap[1]->deadline : UINT64_MAX;
}

/* ---- loop.c ----------------------------------------------------------- */

typedef struct dx__work {
  void (*fn)(void *arg);
  void *arg;
} dx__work;

/* A growable array of work items. */
typedef struct dx__works {
  dx__work *a;
  size_t n, cap;
} dx__works;

/* Enough for a busy server's batch; more events wait for the next call. */
#define DX__MAX_EVENTS 256

struct dx_loop {
  int epfd;
  bool in_iteration;
  bool post_pending;   /* the eventfd fired: swap the post queue */
  bool driven_outside; /* dx_loop_fd was called: timers go to timerfd */
  int internal;        /* loop-own watchers run in this dispatch */
  bool flush_removed;  /* a flush hook was removed: compact the list */
  uint64_t now;        /* ms, CLOCK_MONOTONIC */

  uint8_t *recv;
  size_t recv_size;

  dx__timers timers;
  dx_io timer_io;            /* the timerfd, only when driven from outside */
  uint64_t timerfd_deadline; /* armed deadline, UINT64_MAX: disarmed */

  dx__works flush;
  dx__works defer;
  dx__works post_run; /* loop-thread side of the post queue */
  dx__pool pool;

  /* Cross-thread: the post queue and the wake-up. */
  dx_io wake_io; /* the eventfd */
  pthread_mutex_t post_lock;
  dx__works post_in; /* guarded by post_lock */
  atomic_bool stop;
  atomic_size_t wakeups;

  struct epoll_event events[DX__MAX_EVENTS];
};

/* eventfd writes made by dx_loop_post (tests: a burst costs one). */
size_t dx__loop_wakeups(dx_loop *loop);

/* Called by timer.c when the earliest deadline may have changed outside an
 * iteration, so a loop driven from outside re-arms its timerfd. */
void dx__loop_timers_changed(dx_loop *loop);

#endif
