/*
 * Timers: a binary min-heap of dx_timer pointers ordered by deadline. The
 * index lives in the timer (1-based, 0 = unarmed), so stop and re-arm are
 * O(log n) without a search: a server re-arms an idle timeout on every
 * message, and that must stay cheap.
 */
#include "internal.h"

#include <assert.h>
#include <stdlib.h>

static void place(dx_timer **h, size_t i, dx_timer *t) {
  h[i] = t;
  t->heap_index = i;
}

static void sift_up(dx_timer **h, size_t i) {
  dx_timer *t = h[i];
  while (i > 1 && t->deadline < h[i / 2]->deadline) {
    place(h, i, h[i / 2]);
    i /= 2;
  }
  place(h, i, t);
}

static void sift_down(dx_timer **h, size_t n, size_t i) {
  dx_timer *t = h[i];
  for (;;) {
    size_t c = 2 * i;
    if (c > n) break;
    if (c < n && h[c + 1]->deadline < h[c]->deadline) c++;
    if (h[c]->deadline >= t->deadline) break;
    place(h, i, h[c]);
    i = c;
  }
  place(h, i, t);
}

/* Restores the heap around slot i after its deadline changed. */
static void fix(dx__timers *ts, size_t i) {
  if (i > 1 && ts->heap[i]->deadline < ts->heap[i / 2]->deadline)
    sift_up(ts->heap, i);
  else
    sift_down(ts->heap, ts->n, i);
}

static void heap_insert(dx__timers *ts, dx_timer *t) {
  assert(ts->n + 1 < ts->cap);
  ts->heap[++ts->n] = t;
  sift_up(ts->heap, ts->n);
}

static void heap_remove(dx__timers *ts, dx_timer *t) {
  size_t i = t->heap_index;
  assert(i >= 1 && i <= ts->n && ts->heap[i] == t);
  dx_timer *last = ts->heap[ts->n--];
  t->heap_index = 0;
  if (last == t) return;
  place(ts->heap, i, last);
  fix(ts, i);
}

/* Grows both arrays to hold `need` entries. The scratch array is as large
 * as the heap, and room is kept for the timers taken off the heap by the
 * current pass, so dx__timers_run never allocates (a repeating timer goes
 * back on the heap there, and that must not fail). */
static int reserve(dx__timers *ts, size_t need) {
  if (need <= ts->cap) return 0;
  size_t cap = ts->cap ? ts->cap : 32;
  while (cap < need) {
    if (cap > SIZE_MAX / 2 / sizeof(dx_timer *)) return DX_ENOMEM;
    cap *= 2;
  }
  dx_timer **h = realloc(ts->heap, cap * sizeof *h);
  if (!h) return DX_ENOMEM;
  ts->heap = h;
  dx_timer **d = realloc(ts->due, cap * sizeof *d);
  if (!d) return DX_ENOMEM; /* heap stays larger: harmless */
  ts->due = d;
  ts->cap = cap;
  return 0;
}

static uint64_t add_sat(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

int dx_timer_start(dx_loop *loop, dx_timer *t, uint64_t after, uint64_t repeat,
                   dx_timer_cb cb) {
  dx__timers *ts = &loop->timers;
  bool here = t->heap_index != 0 && t->loop == loop;
  /* Already on this loop (heap or due): its slot is reserved already. */
  if (!here && reserve(ts, ts->n + ts->ndue + 2) < 0) return DX_ENOMEM;
  if (!here && t->heap_index != 0) dx_timer_stop(t); /* move loops */
  /* Outside an iteration the cached clock may be old (the loop slept, or
   * never ran): a timer must not come due early because of it. */
  if (!loop->in_iteration) loop->now = dx__clock_ms();
  t->deadline = add_sat(loop->now, after);
  t->repeat = repeat;
  t->cb = cb;
  t->loop = loop;
  if (here && t->heap_index != DX__TIMER_DUE)
    fix(ts, t->heap_index);
  else
    heap_insert(ts, t);
  dx__loop_timers_changed(loop);
  return 0;
}

void dx_timer_stop(dx_timer *t) {
  if (t->heap_index == 0) return;
  if (t->heap_index == DX__TIMER_DUE) {
    t->heap_index = 0; /* dx__timers_run skips it */
    return;
  }
  heap_remove(&t->loop->timers, t);
  dx__loop_timers_changed(t->loop);
}

bool dx_timer_active(const dx_timer *t) {
  return t->heap_index != 0;
}

/*
 * Two phases: first take every due timer off the heap, then call them.
 * Taking them first bounds the pass (a callback that re-arms with after = 0
 * waits for the next iteration instead of spinning here), and marking them
 * DUE lets an earlier callback cancel a later one with plain dx_timer_stop.
 * The due array is re-read on every step because a callback's
 * dx_timer_start may grow (move) it.
 */
void dx__timers_run(dx_loop *loop) {
  dx__timers *ts = &loop->timers;
  uint64_t now = loop->now;
  size_t k = 0;
  while (ts->n && ts->heap[1]->deadline <= now) {
    dx_timer *t = ts->heap[1];
    heap_remove(ts, t);
    t->heap_index = DX__TIMER_DUE;
    ts->due[k++] = t;
  }
  ts->ndue = k;
  for (size_t i = 0; i < k; i++) {
    dx_timer *t = ts->due[i];
    if (t->heap_index != DX__TIMER_DUE) continue; /* stopped or re-armed */
    if (t->repeat) {
      /* From the previous deadline, so the period does not drift; from
       * now when a whole period was missed, so there is no catch-up burst. */
      uint64_t next = add_sat(t->deadline, t->repeat);
      t->deadline = next > now ? next : add_sat(now, t->repeat);
      heap_insert(ts, t);
    } else {
      t->heap_index = 0;
    }
    t->cb(t);
  }
  ts->ndue = 0;
}

void dx__timers_destroy(dx__timers *ts) {
  free(ts->heap);
  free(ts->due);
  *ts = (dx__timers){0};
}
