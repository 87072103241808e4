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
 *
 * Cost of an idle-to-busy iteration: one epoll_wait plus whatever the
 * callbacks do. Timers, posted work, flush hooks and deferred calls need no
 * system call and, once their arrays have grown, no allocation.
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
  /* dx_loop_allocator: bytes of free blocks kept per size class; 0 means
   * 1 MiB (so at most 11 MiB cached over the 11 classes). */
  size_t pool_cap;
} dx_loop_config;

/* Returns NULL (errno set) when epoll/eventfd cannot be created or memory is
 * short. cfg may be NULL. */
DX_API dx_loop *dx_loop_new(const dx_loop_config *cfg);

/* Frees the loop. Watchers and timers still registered are forgotten, not
 * called. Posted work not yet run is dropped; deferred calls still pending
 * are run (they free memory). The caller closes its own fds. Blocks still
 * out from dx_loop_allocator must have been freed before.
 * dx_loop_free(NULL) is a no-op. Not from inside a callback. */
DX_API void dx_loop_free(dx_loop *loop);

/* Runs until dx_loop_stop(). Returns 0, or a negative errno from epoll. */
DX_API int dx_loop_run(dx_loop *loop);

/* Runs one iteration, waiting at most timeout_ms (-1: until an event or
 * the next timer; never waits when deferred calls are pending). Returns the
 * number of watcher callbacks run, or -errno from epoll_wait (EINTR counts
 * as an empty wait, not an error). Not from inside a callback. */
DX_API int dx_loop_run_once(dx_loop *loop, int timeout_ms);

/* Makes dx_loop_run() return after the current iteration (waking it if it
 * sleeps). Called while no dx_loop_run() is active, it makes the next one
 * return after its first iteration. THREAD-SAFE. */
DX_API void dx_loop_stop(dx_loop *loop);

/* The epoll descriptor, readable when the loop has work: lets another event
 * loop drive this one (poll it, then call dx_loop_run_once(loop, 0)).
 * The first call switches the loop to being driven from outside: from then
 * on, timers are also armed on a timerfd inside the epoll set (one
 * timerfd_settime when the earliest deadline changes), so the descriptor
 * becomes readable when a timer is due too. Deferred calls made outside an
 * iteration wait for the next one. */
DX_API int dx_loop_fd(dx_loop *loop);

/* Milliseconds on CLOCK_MONOTONIC, cached at the start of each iteration. */
DX_API uint64_t dx_loop_now(const dx_loop *loop);

/* The loop's shared receive buffer (64-byte aligned): its contents are
 * valid for the current callback only. */
DX_API uint8_t *dx_loop_recv_buffer(dx_loop *loop, size_t *size);

/* ---- I/O watchers -------------------------------------------------------- */

typedef struct dx_io dx_io;
/* events: DX_IO_READ | DX_IO_WRITE, plus DX_IO_ERROR/DX_IO_HUP on output.
 * With ERROR or HUP the requested READ/WRITE bits are set too, so a
 * callback that only reads or writes meets the error (or EOF) there. */
typedef void (*dx_io_cb)(dx_io *io, unsigned events);
enum { DX_IO_READ = 1, DX_IO_WRITE = 2, DX_IO_ERROR = 4, DX_IO_HUP = 8 };

/* Embed in your own struct; the loop never allocates one. The fields are
 * the loop's (read them, do not write them). */
struct dx_io {
  int fd;
  unsigned events; /* currently requested */
  dx_io_cb cb;
  dx_loop *loop;
};

/* Registers fd for events (edge-triggered: read or write until EAGAIN
 * before waiting again). io must not be active. Returns 0, -EEXIST (fd is
 * already registered on this loop), -EBADF, -ENOMEM, -ENOSPC (epoll limit),
 * -EPERM (fd type epoll cannot watch, e.g. a regular file). */
DX_API int dx_io_start(dx_loop *loop, dx_io *io, int fd, unsigned events,
                       dx_io_cb cb);
/* Changes the requested events; a no-op when unchanged. Readiness that
 * already holds is reported again after the change. 0, DX_EINVAL (io not
 * active), or -errno from epoll_ctl. */
DX_API int dx_io_modify(dx_io *io, unsigned events);
/* Replaces the callback; events not yet dispatched go to the new one. For
 * handlers that change with the state of what they watch, without the two
 * system calls of a stop and a start. */
DX_API void dx_io_set_cb(dx_io *io, dx_io_cb cb);
/* Unregisters; safe to call twice and on a zeroed io. Does not close the fd
 * (io->fd keeps its value so the caller can close it): stop, then close,
 * never the other way round, or the fd number may already belong to a new
 * socket whose registration the stop would remove. From then on io gets
 * no callback, not even for events already collected in this iteration:
 * the memory holding io must stay valid until the iteration ends, so free
 * it through dx_loop_defer. A watcher stopped and started again in the same
 * iteration may see one stale event; non-blocking I/O shrugs it off. */
DX_API void dx_io_stop(dx_io *io);

/* ---- timers -------------------------------------------------------------- */

typedef struct dx_timer dx_timer;
typedef void (*dx_timer_cb)(dx_timer *t);

/* Embed in your own struct, zeroed before first use. A min-heap orders
 * them; the fields are the loop's. Deadlines are in dx_loop_now()
 * milliseconds; timers due in the same iteration fire in deadline order
 * (equal deadlines in unspecified order), and a timer started by a callback
 * fires at the earliest in the next iteration, so a timer that re-arms
 * itself with after = 0 cannot starve I/O. */
struct dx_timer {
  uint64_t deadline;
  dx_timer_cb cb;
  uint64_t repeat;   /* ms; 0 for one-shot */
  size_t heap_index; /* 0: not armed */
  dx_loop *loop;
};

/* Arms (or re-arms) t to fire `after` ms from now, then every `repeat` ms
 * if repeat > 0 (counted from the previous deadline, so a repeating timer
 * does not drift; if the loop fell behind by a whole period, from now). A
 * timer armed on another loop is moved. Returns 0 or DX_ENOMEM (t is then
 * left as it was). */
DX_API int dx_timer_start(dx_loop *loop, dx_timer *t, uint64_t after,
                          uint64_t repeat, dx_timer_cb cb);
/* Disarms t; a no-op when it is not armed. A timer stopped by another
 * timer's callback does not fire, even when it was due in this iteration. */
DX_API void dx_timer_stop(dx_timer *t);
/* True while armed: between dx_timer_start and its firing (one-shot) or
 * dx_timer_stop. Inside its own callback, a one-shot timer is inactive and
 * a repeating one active. */
DX_API bool dx_timer_active(const dx_timer *t);

/* ---- work from other threads --------------------------------------------- */

/* Queues fn(arg) to run on the loop's thread at its next iteration and wakes
 * it (eventfd). THREAD-SAFE. Returns 0, DX_ENOMEM. Work is run in posting
 * order (so in order per posting thread), work posted by posted work runs
 * in the next iteration. The queue is unbounded in count; it is an array
 * swapped with the loop's under a mutex, so posting allocates only when the
 * array must grow, and only the post that makes it non-empty writes the
 * eventfd: a burst of posts costs one wake-up. */
DX_API int dx_loop_post(dx_loop *loop, void (*fn)(void *arg), void *arg);

/* ---- end-of-iteration hooks ---------------------------------------------- */

/* A flush hook runs once per iteration after I/O, timers and posted work:
 * where batched writes happen. One hook per owner, the owner being `arg`
 * (the server registers one per loop): calling again with the same arg
 * replaces its fn, fn NULL removes it. Hooks run in registration order.
 * Returns 0 or DX_ENOMEM. */
DX_API int dx_loop_on_flush(dx_loop *loop, void (*fn)(void *arg), void *arg);

/* Queues fn(arg) to run at the end of the current iteration, after the flush
 * hooks: for freeing objects closed inside callbacks. In queueing order; a
 * deferred call may defer more, which run in the same pass. Outside an
 * iteration: at the end of the next one. Returns 0, DX_ENOMEM. */
DX_API int dx_loop_defer(dx_loop *loop, void (*fn)(void *arg), void *arg);

/* ---- buffer pool --------------------------------------------------------- */

/* An allocator for engines on this loop: small blocks (<= 64 KiB, by power
 * of two size class from 64 B) are recycled through per-class free lists,
 * so hot-path buffers cost no malloc; larger blocks go to the C library.
 * A resize within the same class returns the same pointer. Loop-thread
 * only. The pool keeps at most cfg->pool_cap bytes of free blocks per
 * class; the rest go back to the C library. Blocks are 16-byte aligned. */
DX_API dx_allocator dx_loop_allocator(dx_loop *loop);

/* ---- TCP ----------------------------------------------------------------- */

/* Creates a non-blocking, close-on-exec listening socket bound to host:port
 * with SO_REUSEADDR (host NULL or "" for all IPv6+IPv4 addresses via a
 * dual-stack socket, or 0.0.0.0 where IPv6 is missing; otherwise a numeric
 * literal: "0.0.0.0", "127.0.0.1", "::1" ..., and an IPv6 literal listens
 * on IPv6 only, so "::" and "0.0.0.0" can be bound side by side). reuseport
 * sets SO_REUSEPORT so several loops can each own a listener on the same
 * port. port 0 picks a free one (read it back with dx_tcp_local_port).
 * backlog <= 0 means SOMAXCONN. The listener has TCP_NODELAY, which Linux
 * copies to accepted sockets (accept them with accept4(SOCK_NONBLOCK |
 * SOCK_CLOEXEC): O_NONBLOCK is not inherited). Returns the fd, DX_EINVAL
 * (port out of range, host not a numeric address) or -errno
 * (-EADDRINUSE ...). */
DX_API int dx_tcp_listen(const char *host, int port, bool reuseport,
                         int backlog);

/* The local port of a bound socket, or -errno. */
DX_API int dx_tcp_local_port(int fd);

/* Starts a non-blocking connect to a numeric address (no DNS), on a
 * close-on-exec socket with TCP_NODELAY. Returns the fd (connect in
 * progress: wait for writability, then check dx_tcp_connect_result),
 * DX_EINVAL (not AF_INET/AF_INET6) or -errno (-ECONNREFUSED, -ENETUNREACH
 * ... when the failure is immediate). */
DX_API int dx_tcp_connect(const struct sockaddr *addr, socklen_t len);
/* 0 when the connect on fd succeeded, the -errno it failed with
 * (-ECONNREFUSED, -ETIMEDOUT ...), or -errno from getsockopt. */
DX_API int dx_tcp_connect_result(int fd);

/* Room for any address dx_addr_format writes, NUL included. */
#define DX_ADDRSTRLEN 46

/* Formats a peer address as "1.2.3.4" or "::1" (no port); an IPv4-mapped
 * IPv6 address (from a dual-stack listener) as plain IPv4. Writes "" when
 * cap is too small or the family is not AF_INET/AF_INET6. */
DX_API void dx_addr_format(const struct sockaddr_storage *ss, char *out,
                           size_t cap);

#ifdef __cplusplus
}
#endif
#endif
