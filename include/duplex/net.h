/*
 * duplex/net.h — the runtime: one epoll event loop per thread, timers,
 * TCP helpers, a cross-thread work queue and a per-loop buffer pool.
 *
 * A dx_loop is owned by the thread that runs it. Every function here is
 * loop-thread only, except those marked THREAD-SAFE.
 *
 * One iteration: wait for events (epoll_wait, timeout = next timer), run I/O
 * callbacks, run expired timers, run posted work, run the "flush" hooks
 * (where the server writes batched output: one write per connection per
 * iteration), then run deferred frees (objects closed during the iteration
 * are freed only after it, so no callback sees freed memory).
 */
#ifndef DUPLEX_NET_H
#define DUPLEX_NET_H

#include <duplex/common.h>
#include <stdbool.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dx_loop dx_loop;

typedef struct dx_loop_config {
  /* Size of the shared receive buffer; 0 means 512 KiB. */
  size_t recv_buffer;
} dx_loop_config;

/* Returns NULL (errno set) when epoll/eventfd cannot be created or memory is
 * short. cfg may be NULL. */
DX_API dx_loop *dx_loop_new(const dx_loop_config *cfg);

/* Frees the loop. Watchers and timers still registered are forgotten, not
 * called. Posted work not yet run is dropped. dx_loop_free(NULL) is a no-op. */
DX_API void dx_loop_free(dx_loop *loop);

/* Runs until dx_loop_stop(). Returns 0, or a negative errno from epoll. */
DX_API int dx_loop_run(dx_loop *loop);

/* Runs one iteration, waiting at most timeout_ms (-1: until an event or
 * the next timer). Returns the number of I/O events handled, or -errno. */
DX_API int dx_loop_run_once(dx_loop *loop, int timeout_ms);

/* Makes dx_loop_run() return after the current iteration. THREAD-SAFE. */
DX_API void dx_loop_stop(dx_loop *loop);

/* The epoll descriptor, readable when the loop has work: lets another event
 * loop drive this one (poll it, then call dx_loop_run_once(loop, 0)). */
DX_API int dx_loop_fd(const dx_loop *loop);

/* Milliseconds on CLOCK_MONOTONIC, cached at the start of each iteration. */
DX_API uint64_t dx_loop_now(const dx_loop *loop);

/* The loop's shared receive buffer: valid for the current callback only. */
DX_API uint8_t *dx_loop_recv_buffer(dx_loop *loop, size_t *size);

/* ---- I/O watchers ------------------------------------------------------- */

typedef struct dx_io dx_io;
/* events: DX_IO_READ | DX_IO_WRITE, plus DX_IO_ERROR/DX_IO_HUP on output. */
typedef void (*dx_io_cb)(dx_io *io, unsigned events);
enum { DX_IO_READ = 1, DX_IO_WRITE = 2, DX_IO_ERROR = 4, DX_IO_HUP = 8 };

/* Embed in your own struct; the loop never allocates one. */
struct dx_io {
  int fd;
  unsigned events; /* currently requested */
  dx_io_cb cb;
  dx_loop *loop;
};

/* Registers fd for events (edge-triggered). Returns 0 or -errno. */
DX_API int dx_io_start(dx_loop *loop, dx_io *io, int fd, unsigned events,
                       dx_io_cb cb);
/* Changes the requested events; a no-op when unchanged. 0 or -errno. */
DX_API int dx_io_modify(dx_io *io, unsigned events);
/* Unregisters; safe to call twice. Does not close the fd. */
DX_API void dx_io_stop(dx_io *io);

/* ---- timers -------------------------------------------------------------- */

typedef struct dx_timer dx_timer;
typedef void (*dx_timer_cb)(dx_timer *t);

/* Embed in your own struct. A min-heap orders them; the fields are the
 * loop's. */
struct dx_timer {
  uint64_t deadline;
  dx_timer_cb cb;
  uint64_t repeat;   /* ms; 0 for one-shot */
  size_t heap_index; /* 0: not armed */
  dx_loop *loop;
};

/* Arms (or re-arms) t to fire after `after` ms, then every `repeat` ms if
 * repeat > 0. Returns 0 or DX_ENOMEM. */
DX_API int dx_timer_start(dx_loop *loop, dx_timer *t, uint64_t after,
                          uint64_t repeat, dx_timer_cb cb);
DX_API void dx_timer_stop(dx_timer *t);
DX_API bool dx_timer_active(const dx_timer *t);

/* ---- work from other threads ----------------------------------------------- */

/* Queues fn(arg) to run on the loop's thread at its next iteration and wakes
 * it (eventfd). THREAD-SAFE. Returns 0, DX_ENOMEM. Work is run in posting
 * order; the queue is unbounded in count but each item is one small
 * allocation owned by the loop until run. */
DX_API int dx_loop_post(dx_loop *loop, void (*fn)(void *arg), void *arg);

/* ---- end-of-iteration hooks ----------------------------------------------- */

/* A flush hook runs once per iteration after I/O, timers and posted work:
 * where batched writes happen. One hook per owner (the server registers
 * one per loop). */
DX_API void dx_loop_on_flush(dx_loop *loop, void (*fn)(void *arg), void *arg);

/* Queues fn(arg) to run at the end of the current iteration, after the flush
 * hook: for freeing objects closed inside callbacks. Returns 0, DX_ENOMEM. */
DX_API int dx_loop_defer(dx_loop *loop, void (*fn)(void *arg), void *arg);

/* ---- buffer pool ----------------------------------------------------------- */

/* An allocator for engines on this loop: small blocks (<= 64 KiB, by power
 * of two size class) are recycled through per-class free lists, so hot-path
 * buffers cost no malloc; larger blocks go to the C library. Loop-thread
 * only. The pool keeps at most `cap` bytes of free blocks per class. */
DX_API dx_allocator dx_loop_allocator(dx_loop *loop);

/* ---- TCP --------------------------------------------------------------------- */

/* Creates a non-blocking listening socket bound to host:port (host NULL or
 * "" for all IPv6+IPv4 addresses via a dual-stack socket; "0.0.0.0",
 * "127.0.0.1", "::1" ... literals). reuseport sets SO_REUSEPORT so several
 * loops can each own a listener on the same port. port 0 picks a free one
 * (read it back with dx_tcp_local_port). Returns the fd or -errno. */
DX_API int dx_tcp_listen(const char *host, int port, bool reuseport,
                         int backlog);

/* The local port of a bound socket, or -errno. */
DX_API int dx_tcp_local_port(int fd);

/* Starts a non-blocking connect to a numeric address (no DNS).
 * Returns the fd (connect in progress: wait for writability, then check
 * dx_tcp_connect_result) or -errno. */
DX_API int dx_tcp_connect(const struct sockaddr *addr, socklen_t len);
DX_API int dx_tcp_connect_result(int fd);

/* Formats a peer address as "1.2.3.4" or "::1" (no port). */
DX_API void dx_addr_format(const struct sockaddr_storage *ss, char *out,
                           size_t cap);

#ifdef __cplusplus
}
#endif
#endif
