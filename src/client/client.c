/*
 * dx_client: one WebSocket client connection on a dx_loop, with
 * reconnection. The life of one attempt:
 *
 *   RESOLVING   getaddrinfo on a short-lived detached thread (IP literals
 *               skip it); the answer comes back through dx_loop_post
 *   CONNECTING  non-blocking connect to each address in turn
 *   HANDSHAKE   TLS (wss) and the HTTP upgrade, under one deadline
 *   OPEN        frames both ways
 *   CLOSING     closing handshake, bounded by close_timeout_ms; then the
 *               client waits for the server to close TCP (RFC 6455 7.1.1)
 *   WAIT        a reconnection is scheduled (full-jitter backoff)
 *
 * Writes are batched as in the server: a send queues bytes in the engine and
 * marks the client dirty; the loop's flush hook (one per connected client,
 * keyed by the client pointer) then writes everything queued in one go.
 * What the kernel does not take waits for EPOLLOUT (edge-triggered), and
 * on_drain reports when that backlog is gone.
 *
 * User handlers never run from the flush hook: a failure found while
 * writing is reported from a zero-delay timer, so a handler that sends on
 * another client is still flushed in the same iteration. Every handler call
 * is followed by a generation check: a handler may free the client, close
 * it or start it again, and the code after the call must not touch the old
 * connection.
 */
#include "client/internal.h"

#include <duplex/client.h>
#include <duplex/http.h>
#include <duplex/tls.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 10000u
#define DEFAULT_CLOSE_TIMEOUT_MS 5000u
#define DEFAULT_BACKOFF_BASE_MS 500u
#define DEFAULT_BACKOFF_MAX_MS 30000u
#define DEFAULT_STABLE_MS 10000u
#define MAX_RESPONSE_HEAD (16u << 10)
#define MAX_RESPONSE_HEADERS 64
#define MSG_MAX 512

typedef enum phase {
  PH_IDLE = 0, /* not connected, nothing scheduled (CLOSED) */
  PH_RESOLVING,
  PH_CONNECTING,
  PH_HANDSHAKE,
  PH_OPEN,
  PH_CLOSING,
  PH_WAIT
} phase;

typedef struct resolve_job resolve_job;

struct dx_client {
  dx_io io; /* io.fd is the socket while there is one */
  /* Phase marks of the current attempt, microseconds on CLOCK_MONOTONIC
   * (0: not reached): start, resolved, connected, TLS done, open. */
  uint64_t mark[5];
  dx_loop *loop;
  dx_client_config cfg; /* string pointers below are our copies */
  dx__url url;
  char *url_buf;
  char *extra_headers; /* "Name: value\r\n" lines */
  char *origin, *ca_file;
  char **protos;      /* NULL-terminated copies */
  char hostport[300]; /* "host:port", "[::1]:port", for messages */
  dx_ws_config ws_cfg;

  phase ph;
  dx_ready_state state;
  unsigned gen; /* bumped whenever the current attempt ends */
  bool io_on, hooked, dirty, blocked, shut_wr, user_closed, permanent;
  bool pinging, freed;

  /* Current attempt. */
  resolve_job *job;
  struct sockaddr_storage *addrs;
  socklen_t *addr_lens;
  size_t naddrs, addr_i;
  int last_err; /* of the last address tried */
  char last_addr[DX_ADDRSTRLEN];
  dx_ws *ws;
  dx_tls_ctx *tls_ctx; /* made at the first wss attempt, then kept */
  dx_tls *tls;
  char *head; /* response head bytes while incomplete */
  size_t head_len;
  const char *subprotocol; /* one of protos */
  char extensions[256];
  uint16_t close_code;
  bool close_seen;
  char close_reason[124];
  size_t close_reason_len;

  /* A failure found while writing, reported from t_kick. */
  int kick_err;
  char kick_msg[MSG_MAX];

  dx_timer t_phase; /* connect, handshake, close deadline or reconnect */
  dx_timer t_ping;
  dx_timer t_kick;
  dx__backoff backoff;
};

#define CLIENT_OF(field, ptr)                                                  \
  ((dx_client *)((char *)(ptr)-offsetof(dx_client, field)))

static void start_attempt(dx_client *c);
static void fail_attempt(dx_client *c, int err, int status, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));
static void fail_conn(dx_client *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void end_conn(dx_client *c, uint16_t code, bool clean);
static void flush_hook(void *arg);
static void try_connect(dx_client *c);
static void on_ping_timer(dx_timer *t);
static void maybe_shutdown(dx_client *c);

enum { M_START, M_RESOLVED, M_CONNECTED, M_TLS, M_OPEN };

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void mark(dx_client *c, int m) {
  if (!c->mark[m]) c->mark[m] = now_us();
}

static double span(const dx_client *c, int a, int b) {
  return c->mark[a] && c->mark[b] ? (double)(c->mark[b] - c->mark[a]) / 1000.0
                                  : -1;
}

void dx_client_timings_get(const dx_client *c, dx_client_timings *out) {
  out->dns_ms = span(c, M_START, M_RESOLVED);
  out->connect_ms = span(c, M_RESOLVED, M_CONNECTED);
  out->tls_ms = span(c, M_CONNECTED, M_TLS);
  out->handshake_ms = span(c, c->mark[M_TLS] ? M_TLS : M_CONNECTED, M_OPEN);
}

static void mark_dirty(dx_client *c) {
  c->dirty = true;
}

static bool alive(const dx_client *c, unsigned gen) {
  return !c->freed && c->gen == gen;
}

/* ---- the resolver thread ----------------------------------------------- */

/* Shared between the loop and a resolver thread; freed by whichever of
 * them drops the last reference (under mu). A job whose client went away
 * is cancelled: its answer is thrown away. A job posted to a loop that is
 * freed before running it leaks its addrinfo (dx_loop_free drops posted
 * work); freeing the loop while a lookup is in flight is rare and bounded. */
struct resolve_job {
  pthread_mutex_t mu;
  int refs;
  bool cancelled;
  dx_loop *loop;
  dx_client *client;
  int gai_err;
  int sys_errno;
  struct addrinfo *res;
  char port[8];
  char host[];
};

static void job_unref_locked(resolve_job *j, bool *freed) {
  *freed = --j->refs == 0;
}

static void job_unref(resolve_job *j) {
  bool last;
  pthread_mutex_lock(&j->mu);
  job_unref_locked(j, &last);
  pthread_mutex_unlock(&j->mu);
  if (!last) return;
  if (j->res) freeaddrinfo(j->res);
  pthread_mutex_destroy(&j->mu);
  free(j);
}

static void job_cancel(dx_client *c) {
  if (!c->job) return;
  pthread_mutex_lock(&c->job->mu);
  c->job->cancelled = true;
  pthread_mutex_unlock(&c->job->mu);
  job_unref(c->job);
  c->job = NULL;
}

static void resolved(void *arg);

static void *resolve_thread(void *arg) {
  resolve_job *j = arg;
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_protocol = IPPROTO_TCP,
                           .ai_flags = AI_NUMERICSERV};
  j->gai_err = getaddrinfo(j->host, j->port, &hints, &j->res);
  if (j->gai_err == EAI_SYSTEM) j->sys_errno = errno;
  pthread_mutex_lock(&j->mu);
  /* The posted call inherits this thread's reference. When posting fails
   * the client finds out through its connect timeout. */
  bool posted = !j->cancelled && dx_loop_post(j->loop, resolved, j) == 0;
  pthread_mutex_unlock(&j->mu);
  if (!posted) job_unref(j);
  return NULL;
}

static int resolve_start(dx_client *c) {
  size_t hl = strlen(c->url.host);
  resolve_job *j = calloc(1, sizeof *j + hl + 1);
  if (!j) return DX_ENOMEM;
  pthread_mutex_init(&j->mu, NULL);
  j->refs = 2; /* the thread and the client */
  j->loop = c->loop;
  j->client = c;
  snprintf(j->port, sizeof j->port, "%d", c->url.port);
  memcpy(j->host, c->url.host, hl + 1);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  /* The thread must not take the application's signals (a signalfd in the
   * loop needs them blocked everywhere): it starts with all blocked. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  int rc = pthread_create(&t, &attr, resolve_thread, j);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc) {
    pthread_mutex_destroy(&j->mu);
    free(j);
    return -rc;
  }
  c->job = j;
  return 0;
}

static int take_addresses(dx_client *c, const struct addrinfo *res) {
  size_t n = 0;
  for (const struct addrinfo *a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET || a->ai_family == AF_INET6) n++;
  if (!n) return DX_ERESOLVE;
  c->addrs = calloc(n, sizeof *c->addrs);
  c->addr_lens = calloc(n, sizeof *c->addr_lens);
  if (!c->addrs || !c->addr_lens) return DX_ENOMEM;
  for (const struct addrinfo *a = res; a; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    memcpy(&c->addrs[c->naddrs], a->ai_addr, a->ai_addrlen);
    c->addr_lens[c->naddrs++] = a->ai_addrlen;
  }
  return 0;
}

static void resolved(void *arg) {
  resolve_job *j = arg;
  dx_client *c = j->cancelled ? NULL : j->client;
  if (c && c->job == j && c->ph == PH_RESOLVING) {
    c->job = NULL;
    int rc = j->gai_err ? DX_ERESOLVE : take_addresses(c, j->res);
    if (rc == DX_ERESOLVE) {
      const char *why = !j->gai_err                ? "no IPv4 or IPv6 address"
                        : j->gai_err == EAI_SYSTEM ? strerror(j->sys_errno)
                                                   : gai_strerror(j->gai_err);
      fail_attempt(c, DX_ERESOLVE, 0, "cannot resolve %s: %s", c->url.host,
                   why);
    } else if (rc) {
      fail_attempt(c, rc, 0, "cannot connect to %s: %s", c->hostport,
                   dx_strerror(rc));
    } else {
      mark(c, M_RESOLVED);
      try_connect(c);
    }
    job_unref(j); /* the client's reference */
  }
  job_unref(j); /* the thread's */
}

/* ---- tearing an attempt down ------------------------------------------- */

static void free_addresses(dx_client *c) {
  free(c->addrs);
  free(c->addr_lens);
  c->addrs = NULL;
  c->addr_lens = NULL;
  c->naddrs = c->addr_i = 0;
}

static void close_socket(dx_client *c) {
  if (!c->io_on) return;
  dx_io_stop(&c->io);
  close(c->io.fd);
  c->io_on = false;
}

/* Ends the current attempt without any event. Bumps the generation, so code
 * that called a handler can tell its connection is gone. */
static void teardown(dx_client *c) {
  c->gen++;
  job_cancel(c);
  close_socket(c);
  if (c->hooked) dx_loop_on_flush(c->loop, NULL, c);
  c->hooked = c->dirty = c->blocked = c->shut_wr = c->pinging = false;
  dx_ws_free(c->ws);
  c->ws = NULL;
  dx_tls_free(c->tls);
  c->tls = NULL;
  free(c->head);
  c->head = NULL;
  c->head_len = 0;
  free_addresses(c);
  dx_timer_stop(&c->t_phase);
  dx_timer_stop(&c->t_ping);
  dx_timer_stop(&c->t_kick);
  c->subprotocol = NULL;
  c->extensions[0] = 0;
}

/* ---- reconnection ------------------------------------------------------- */

static void on_reconnect_timer(dx_timer *t) {
  dx_client *c = CLIENT_OF(t_phase, t);
  if (c->ph == PH_WAIT) start_attempt(c);
}

/* Decides what follows the end of an attempt or a connection: a scheduled
 * reconnection (state CONNECTING, phase WAIT) or nothing (CLOSED). Done
 * before the handlers run, so they see the state that will hold. */
static bool plan_next(dx_client *c, int status, unsigned *attempt,
                      unsigned *delay) {
  bool no_retry = status >= 400 && status < 500 && status != 408 &&
                  status != 429; /* the server will say the same again */
  if (c->cfg.reconnect && !c->user_closed && !c->permanent && !no_retry &&
      dx__backoff_next(&c->backoff, dx__client_random(), attempt, delay)) {
    c->ph = PH_WAIT;
    c->state = DX_CONNECTING;
    return true;
  }
  c->ph = PH_IDLE;
  c->state = DX_CLOSED;
  return false;
}

/* After the handlers: arm the timer and tell the application. */
static void schedule(dx_client *c, unsigned gen, unsigned attempt,
                     unsigned delay) {
  if (!alive(c, gen) || c->ph != PH_WAIT) return;
  if (dx_timer_start(c->loop, &c->t_phase, delay, 0, on_reconnect_timer)) {
    c->ph = PH_IDLE;
    c->state = DX_CLOSED;
    return;
  }
  if (c->cfg.on_reconnect) c->cfg.on_reconnect(c, attempt, delay, c->cfg.ud);
}

static void emit_error(dx_client *c, int err, int status, const char *msg) {
  dx_client_error e = {.err = err, .http_status = status, .message = msg};
  if (c->cfg.on_error) c->cfg.on_error(c, &e, c->cfg.ud);
}

/* An attempt failed before the connection opened: on_error, then maybe a
 * reconnection. */
static void fail_attempt(dx_client *c, int err, int status, const char *fmt,
                         ...) {
  char msg[MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  teardown(c);
  unsigned attempt = 0, delay = 0, gen = c->gen;
  bool again = plan_next(c, status, &attempt, &delay);
  emit_error(c, err, status, msg);
  if (again) schedule(c, gen, attempt, delay);
}

/* The connection ended (it had opened): on_close, then maybe a
 * reconnection. */
static void end_conn(dx_client *c, uint16_t code, bool clean) {
  char reason[sizeof c->close_reason];
  size_t rlen = c->close_reason_len;
  memcpy(reason, c->close_reason, sizeof reason);
  teardown(c);
  dx__backoff_lost(&c->backoff, dx_loop_now(c->loop));
  unsigned attempt = 0, delay = 0, gen = c->gen;
  bool again = plan_next(c, 0, &attempt, &delay);
  if (c->cfg.on_close) c->cfg.on_close(c, code, reason, rlen, clean, c->cfg.ud);
  if (again) schedule(c, gen, attempt, delay);
}

/* An open connection broke: on_error, then on_close (1006). */
static void fail_conn(dx_client *c, int err, const char *fmt, ...) {
  char msg[MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* Inside on_error the state is CLOSING (on_close follows, and says
   * whether a reconnection comes); the connection is torn down after. */
  unsigned gen = c->gen;
  c->state = DX_CLOSING;
  emit_error(c, err, 0, msg);
  if (!alive(c, gen)) return;
  c->close_reason_len = 0;
  c->close_reason[0] = 0;
  end_conn(c, DX_CLOSE_ABNORMAL, false);
}

/* ---- writing ------------------------------------------------------------ */

static int send_bytes(dx_client *c, const uint8_t *p, size_t n, size_t *sent) {
  *sent = 0;
  while (*sent < n) {
    ssize_t k = send(c->io.fd, p + *sent, n - *sent, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 1 : -errno;
    }
    *sent += (size_t)k;
  }
  return 0;
}

/* Writes what is queued. Returns 0 (all written), 1 (the socket is full),
 * or a negative error. */
static int write_out(dx_client *c) {
  const uint8_t *p;
  size_t n, sent;
  int rc;
  if (c->tls) {
    while ((n = dx_ws_output(c->ws, &p)) > 0) {
      if ((rc = dx_tls_write(c->tls, p, n))) return rc;
      dx_ws_consume(c->ws, n);
    }
    while ((n = dx_tls_output(c->tls, &p)) > 0) {
      rc = send_bytes(c, p, n, &sent);
      dx_tls_consume(c->tls, sent);
      if (rc) return rc;
    }
    return 0;
  }
  while ((n = dx_ws_output(c->ws, &p)) > 0) {
    rc = send_bytes(c, p, n, &sent);
    dx_ws_consume(c->ws, sent);
    if (rc) return rc;
  }
  return 0;
}

static void on_kick(dx_timer *t) {
  dx_client *c = CLIENT_OF(t_kick, t);
  if (c->ph == PH_OPEN || c->ph == PH_CLOSING)
    fail_conn(c, c->kick_err, "%s", c->kick_msg);
  else
    fail_attempt(c, c->kick_err, 0, "%s", c->kick_msg);
}

/* Reports a failure from a zero-delay timer: from the flush hook, where no
 * handler may run (see the top of the file), and from the start of an
 * attempt. */
static void report_later(dx_client *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report_later(dx_client *c, int err, const char *fmt, ...) {
  if (dx_timer_active(&c->t_kick)) return;
  c->kick_err = err;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->kick_msg, sizeof c->kick_msg, fmt, ap);
  va_end(ap);
  close_socket(c); /* nothing more to read or write */
  /* Without memory for a timer, the phase deadline notices instead. */
  (void)dx_timer_start(c->loop, &c->t_kick, 0, 0, on_kick);
}

/* After the closing handshake completed and our close frame left, half-close
 * so a server waiting for our EOF (some do) finishes promptly. */
static void maybe_shutdown(dx_client *c) {
  if (c->ph != PH_CLOSING || c->shut_wr || !c->ws || !c->io_on ||
      dx_ws_state(c->ws) != DX_CLOSED || dx_client_buffered(c))
    return;
  if (c->tls) {
    dx_tls_shutdown(c->tls);
    size_t sent;
    const uint8_t *p;
    size_t n = dx_tls_output(c->tls, &p);
    if (n && send_bytes(c, p, n, &sent) == 0) dx_tls_consume(c->tls, sent);
  }
  c->shut_wr = true;
  shutdown(c->io.fd, SHUT_WR);
}

static void flush_now(dx_client *c) {
  if (!c->io_on || c->blocked || !c->ws) return;
  int rc = write_out(c);
  if (rc == 1)
    c->blocked = true;
  else if (rc < 0)
    report_later(c, rc, "connection to %s lost: %s", c->hostport,
                 dx_strerror(rc));
  else
    maybe_shutdown(c);
}

static void flush_hook(void *arg) {
  dx_client *c = arg;
  if (!c->dirty) return;
  c->dirty = false;
  flush_now(c);
}

/* EPOLLOUT after a full socket: write the backlog, then tell the
 * application once it is gone. */
static void on_writable(dx_client *c) {
  if (!c->blocked) return;
  c->blocked = false;
  unsigned gen = c->gen;
  flush_now(c);
  if (!alive(c, gen) || c->blocked || !c->io_on) return;
  if (dx_client_buffered(c) == 0 && c->cfg.on_drain)
    c->cfg.on_drain(c, c->cfg.ud);
}

/* ---- connecting --------------------------------------------------------- */

static void on_phase_timeout(dx_timer *t) {
  dx_client *c = CLIENT_OF(t_phase, t);
  double secs;
  switch (c->ph) {
  case PH_RESOLVING:
  case PH_CONNECTING:
    secs = c->cfg.connect_timeout_ms / 1000.0;
    return fail_attempt(c, DX_ETIMEDOUT, 0,
                        "cannot connect to %s: timed out after %g s",
                        c->hostport, secs);
  case PH_HANDSHAKE:
    secs = c->cfg.handshake_timeout_ms / 1000.0;
    return fail_attempt(c, DX_ETIMEDOUT, 0,
                        "no WebSocket handshake from %s within %g s",
                        c->hostport, secs);
  case PH_CLOSING:
    /* The peer did not finish the closing handshake (or close TCP) in
     * time: drop the connection. Clean when both close frames passed. */
    return end_conn(c, c->close_seen ? c->close_code : DX_CLOSE_ABNORMAL,
                    c->ws && dx_ws_state(c->ws) == DX_CLOSED);
  default:
    return;
  }
}

static void on_io(dx_io *io, unsigned events);

static void connected(dx_client *c);

/* Starts a connect to the next address; fails the attempt when none is
 * left. */
static void try_connect(dx_client *c) {
  c->ph = PH_CONNECTING;
  if (!dx_timer_active(&c->t_phase) &&
      dx_timer_start(c->loop, &c->t_phase, c->cfg.connect_timeout_ms, 0,
                     on_phase_timeout))
    return fail_attempt(c, DX_ENOMEM, 0, "out of memory");
  while (c->addr_i < c->naddrs) {
    size_t i = c->addr_i++;
    dx_addr_format(&c->addrs[i], c->last_addr, sizeof c->last_addr);
    int fd = dx_tcp_connect((struct sockaddr *)&c->addrs[i], c->addr_lens[i]);
    if (fd < 0) {
      c->last_err = fd;
      continue;
    }
    int rc = dx_io_start(c->loop, &c->io, fd, DX_IO_READ | DX_IO_WRITE, on_io);
    if (rc) {
      close(fd);
      c->last_err = rc;
      continue;
    }
    c->io_on = true;
    return;
  }
  /* Name the address too when the host was a name. */
  char via[DX_ADDRSTRLEN + 4] = "";
  if (strcmp(c->last_addr, c->url.host) != 0)
    snprintf(via, sizeof via, " (%s)", c->last_addr);
  int err = c->last_err == -ECONNREFUSED ? DX_ECONNREFUSED : c->last_err;
  fail_attempt(c, err, 0, "cannot connect to %s%s: %s", c->hostport, via,
               dx_strerror(err));
}

static void on_connect_result(dx_client *c) {
  int rc = dx_tcp_connect_result(c->io.fd);
  if (rc == 0) return connected(c);
  close_socket(c);
  c->last_err = rc;
  try_connect(c);
}

static int start_tls(dx_client *c) {
  if (!c->tls_ctx) {
    char err[256] = "";
    dx_tls_ctx_config tc = {
        .ca_file = c->ca_file, .insecure = c->cfg.insecure, .alpn = "http/1.1"};
    c->tls_ctx = dx_tls_ctx_new(&tc, err, sizeof err);
    if (!c->tls_ctx) {
      c->permanent = true; /* a bad CA file will not get better */
      fail_attempt(c, DX_ETLS, 0, "TLS setup failed: %s", err);
      return DX_ETLS;
    }
  }
  c->tls = dx_tls_new(c->tls_ctx, c->url.host);
  if (!c->tls) {
    fail_attempt(c, DX_ENOMEM, 0, "out of memory");
    return DX_ENOMEM;
  }
  return 0;
}

static void connected(dx_client *c) {
  mark(c, M_CONNECTED);
  dx_timer_stop(&c->t_phase);
  free_addresses(c);
  c->ph = PH_HANDSHAKE;
  if (dx_timer_start(c->loop, &c->t_phase, c->cfg.handshake_timeout_ms, 0,
                     on_phase_timeout))
    return fail_attempt(c, DX_ENOMEM, 0, "out of memory");
  c->ws = dx_ws_new(&c->ws_cfg);
  if (!c->ws) return fail_attempt(c, DX_ENOMEM, 0, "out of memory");
  dx_ws_client_options o = {.host = c->url.authority,
                            .target = c->url.target,
                            .origin = c->origin,
                            .subprotocols = (const char *const *)c->protos,
                            .deflate = {.enabled = c->cfg.deflate},
                            .extra_headers = c->extra_headers};
  int rc = dx_ws_client_handshake(c->ws, &o);
  if (rc) {
    c->permanent = rc == DX_EINVAL;
    return fail_attempt(c, rc, 0, "cannot start the handshake: %s",
                        dx_strerror(rc));
  }
  if (c->url.tls && start_tls(c)) return;
  if (dx_loop_on_flush(c->loop, flush_hook, c))
    return fail_attempt(c, DX_ENOMEM, 0, "out of memory");
  c->hooked = true;
  mark_dirty(c);
}

static void start_attempt(dx_client *c) {
  teardown(c);
  memset(c->mark, 0, sizeof c->mark);
  mark(c, M_START);
  c->state = DX_CONNECTING;
  c->close_seen = false;
  c->close_code = 0;
  c->close_reason_len = 0;
  c->close_reason[0] = 0;
  c->last_err = DX_ECONNREFUSED;
  c->last_addr[0] = 0;
  struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
  struct sockaddr_in s4 = {.sin_family = AF_INET};
  const void *lit = NULL;
  socklen_t len = 0;
  if (inet_pton(AF_INET, c->url.host, &s4.sin_addr) == 1) {
    s4.sin_port = htons((uint16_t)c->url.port);
    lit = &s4;
    len = sizeof s4;
  } else if (c->url.ipv6 && inet_pton(AF_INET6, c->url.host, &s6.sin6_addr)) {
    s6.sin6_port = htons((uint16_t)c->url.port);
    lit = &s6;
    len = sizeof s6;
  }
  if (lit) {
    /* An IP literal: no lookup, no thread. */
    mark(c, M_RESOLVED);
    c->addrs = calloc(1, sizeof *c->addrs);
    c->addr_lens = calloc(1, sizeof *c->addr_lens);
    if (!c->addrs || !c->addr_lens)
      return report_later(c, DX_ENOMEM, "out of memory");
    memcpy(c->addrs, lit, len);
    c->addr_lens[0] = len;
    c->naddrs = 1;
    return try_connect(c);
  }
  c->ph = PH_RESOLVING;
  int rc = resolve_start(c);
  if (rc == 0)
    rc = dx_timer_start(c->loop, &c->t_phase, c->cfg.connect_timeout_ms, 0,
                        on_phase_timeout);
  if (rc)
    report_later(c, rc, "cannot resolve %s: %s", c->url.host, dx_strerror(rc));
}

/* ---- the upgrade response ----------------------------------------------- */

static void on_ws_input(dx_client *c, uint8_t *p, size_t n);

/* Copies the negotiated extension header for dx_client_extensions. */
static void keep_extensions(dx_client *c, const dx_http_response *r) {
  const dx_header *h =
      dx_http_header(r->headers, r->num_headers, "Sec-WebSocket-Extensions");
  size_t n = h ? h->value_len : 0;
  if (n >= sizeof c->extensions) n = sizeof c->extensions - 1;
  if (n) memcpy(c->extensions, h->value, n);
  c->extensions[n] = 0;
}

static void non_101(dx_client *c, const dx_http_response *r) {
  char reason[80];
  int rl = (int)(r->reason_len < 60 ? r->reason_len : 60);
  if (rl)
    snprintf(reason, sizeof reason, "%.*s", rl, r->reason);
  else
    snprintf(reason, sizeof reason, "%s", dx_http_status_text(r->status));
  const dx_header *loc = dx_http_header(r->headers, r->num_headers, "Location");
  if (r->status >= 300 && r->status < 400 && loc)
    return fail_attempt(c, DX_EHANDSHAKE, r->status,
                        "server answered %d %s (redirect to %.*s, not "
                        "followed)",
                        r->status, reason,
                        (int)(loc->value_len < 200 ? loc->value_len : 200),
                        loc->value);
  fail_attempt(c, DX_EHANDSHAKE, r->status, "server answered %d %s", r->status,
               reason);
}

static void opened(dx_client *c, const dx_http_response *r,
                   const dx_ws_handshake *hs, uint8_t *rest, size_t rest_len) {
  keep_extensions(c, r);
  c->subprotocol = NULL;
  for (char **p = c->protos; hs->subprotocol && p && *p; p++)
    if (strcmp(*p, hs->subprotocol) == 0) c->subprotocol = *p;
  mark(c, M_OPEN);
  dx_timer_stop(&c->t_phase);
  c->ph = PH_OPEN;
  c->state = DX_OPEN;
  dx__backoff_opened(&c->backoff, dx_loop_now(c->loop));
  if (c->cfg.ping_interval_ms)
    dx_timer_start(c->loop, &c->t_ping, c->cfg.ping_interval_ms,
                   c->cfg.ping_interval_ms, on_ping_timer);
  unsigned gen = c->gen;
  if (c->cfg.on_open) c->cfg.on_open(c, c->cfg.ud);
  if (alive(c, gen) && rest_len) on_ws_input(c, rest, rest_len);
}

/* Parses the response head once complete; the head buffer is ours, so the
 * bytes after it (frames sent right behind the 101) are fed from there. */
static void on_head_input(dx_client *c, const uint8_t *p, size_t n) {
  if (c->head_len + n > MAX_RESPONSE_HEAD)
    return fail_attempt(c, DX_EHANDSHAKE, 0,
                        "the server's HTTP response head is too large");
  char *h = realloc(c->head, c->head_len + n);
  if (!h) return fail_attempt(c, DX_ENOMEM, 0, "out of memory");
  memcpy(h + c->head_len, p, n);
  c->head = h;
  c->head_len += n;
  /* A TLS record (alert 0x15, handshake 0x16) never starts an HTTP
   * response: say what is wrong rather than "malformed". */
  if (!c->url.tls && (h[0] == 0x15 || h[0] == 0x16))
    return fail_attempt(c, DX_EHANDSHAKE, 0,
                        "%s answered in TLS: is it a wss:// port?",
                        c->hostport);
  dx_header hdrs[MAX_RESPONSE_HEADERS];
  dx_http_response r = {.headers = hdrs, .num_headers = MAX_RESPONSE_HEADERS};
  int rc = dx_http_parse_response(c->head, c->head_len, &r, NULL);
  if (rc == DX_EAGAIN) return;
  if (rc < 0)
    return fail_attempt(c, DX_EHANDSHAKE, 0,
                        "malformed HTTP response from %s: %s", c->hostport,
                        dx_strerror(rc));
  if (r.status != 101) return non_101(c, &r);
  dx_ws_handshake hs;
  int hrc = dx_ws_client_response(c->ws, &r, &hs);
  if (hrc)
    return fail_attempt(c, hrc, 0, "handshake with %s failed: %s", c->hostport,
                        hs.reason ? hs.reason : dx_strerror(hrc));
  /* Own the buffer across the handlers (they may tear the attempt down). */
  char *head = c->head;
  size_t total = c->head_len;
  c->head = NULL;
  c->head_len = 0;
  opened(c, &r, &hs, (uint8_t *)head + rc, total - (size_t)rc);
  free(head);
}

/* ---- frames ------------------------------------------------------------- */

static void closing(dx_client *c) {
  if (c->ph != PH_OPEN) return;
  c->ph = PH_CLOSING;
  c->state = DX_CLOSING;
  dx_timer_start(c->loop, &c->t_phase, c->cfg.close_timeout_ms, 0,
                 on_phase_timeout);
}

static void on_close_frame(dx_client *c, const dx_ws_event *ev) {
  /* RFC 6455 7.1.5: the code and reason of the first close frame received.
   * The engine has queued its answer; the server closes TCP next. */
  c->close_seen = true;
  c->close_code = ev->close_code;
  size_t n = ev->len < sizeof c->close_reason - 1 ? ev->len
                                                  : sizeof c->close_reason - 1;
  memcpy(c->close_reason, ev->data, n);
  c->close_reason[n] = 0;
  c->close_reason_len = n;
  closing(c);
}

static void on_ws_input(dx_client *c, uint8_t *p, size_t n) {
  unsigned gen = c->gen;
  c->pinging = false; /* any input shows the peer is alive */
  dx_ws_feed(c->ws, p, n);
  dx_ws_event ev;
  int rc;
  while ((rc = dx_ws_next(c->ws, &ev)) == 1) {
    switch (ev.type) {
    case DX_EV_TEXT:
    case DX_EV_BINARY:
      if (c->cfg.on_message)
        c->cfg.on_message(c, ev.type == DX_EV_TEXT ? DX_OP_TEXT : DX_OP_BINARY,
                          ev.data, ev.len, c->cfg.ud);
      break;
    case DX_EV_PONG:
      if (c->cfg.on_pong) c->cfg.on_pong(c, ev.data, ev.len, c->cfg.ud);
      break;
    case DX_EV_CLOSE:
      on_close_frame(c, &ev);
      break;
    case DX_EV_PING: /* answered by the engine unless manual_pong */
      if (c->cfg.on_ping) c->cfg.on_ping(c, ev.data, ev.len, c->cfg.ud);
      break;
    }
    if (!alive(c, gen)) return;
  }
  if (rc != DX_EAGAIN) {
    /* Send the close frame the engine queued for the error, as far as the
     * socket takes it now, then drop the connection (RFC 6455 7.1.7). */
    if (c->io_on && !c->blocked) (void)write_out(c);
    return fail_conn(c, rc, "protocol error from %s: %s", c->hostport,
                     dx_strerror(rc));
  }
  if (dx_client_buffered(c))
    mark_dirty(c);
  else
    maybe_shutdown(c);
}

static void on_ping_timer(dx_timer *t) {
  dx_client *c = CLIENT_OF(t_ping, t);
  if (c->ph != PH_OPEN) return;
  if (c->pinging)
    return fail_conn(c, DX_ETIMEDOUT, "no pong from %s within %g s",
                     c->hostport, c->cfg.ping_interval_ms / 1000.0);
  c->pinging = true;
  if (dx_ws_ping(c->ws, NULL, 0) == 0) mark_dirty(c);
}

/* ---- reading ------------------------------------------------------------ */

static void on_eof(dx_client *c, int err) {
  switch (c->ph) {
  case PH_HANDSHAKE:
    if (c->tls && !dx_tls_handshake_done(c->tls))
      return fail_attempt(
          c, DX_ETLS, 0, "TLS handshake with %s failed: %s", c->hostport,
          err ? dx_strerror(err) : "the server closed the connection");
    if (err)
      return fail_attempt(c, err, 0,
                          "connection to %s lost during the "
                          "handshake: %s",
                          c->hostport, dx_strerror(err));
    if (!c->url.tls && c->head_len == 0)
      return fail_attempt(c, DX_EHANDSHAKE, 0,
                          "%s closed the connection without answering the "
                          "upgrade (a TLS port? try wss://)",
                          c->hostport);
    return fail_attempt(c, DX_EHANDSHAKE, 0,
                        "%s closed the connection during the handshake",
                        c->hostport);
  case PH_OPEN:
    if (err)
      return fail_conn(c, err, "connection to %s lost: %s", c->hostport,
                       dx_strerror(err));
    return fail_conn(c, DX_ECLOSED,
                     "connection to %s closed without a close frame",
                     c->hostport);
  case PH_CLOSING:
    /* Clean when both close frames passed (RFC 6455 7.1.4, "wasClean"). */
    return end_conn(c, c->close_seen ? c->close_code : DX_CLOSE_ABNORMAL,
                    c->close_seen && dx_ws_state(c->ws) == DX_CLOSED);
  default:
    return;
  }
}

static void on_plain(dx_client *c, uint8_t *p, size_t n) {
  if (c->ph == PH_HANDSHAKE)
    on_head_input(c, p, n);
  else if (c->ph == PH_OPEN || c->ph == PH_CLOSING)
    on_ws_input(c, p, n);
}

static void on_cipher(dx_client *c, uint8_t *buf, size_t n, size_t cap) {
  unsigned gen = c->gen;
  if (dx_tls_feed(c->tls, buf, n))
    return fail_attempt(c, DX_ENOMEM, 0, "out of memory");
  for (;;) {
    int k = dx_tls_read(c->tls, buf, cap);
    if (k > 0) {
      on_plain(c, buf, (size_t)k);
      if (!alive(c, gen)) return;
      continue;
    }
    if (k == DX_ECLOSED) return on_eof(c, 0);
    if (k < 0) {
      /* The output may hold an alert telling the server why: send it. */
      const uint8_t *alert;
      size_t sent, an = dx_tls_output(c->tls, &alert);
      if (an && c->io_on) (void)send_bytes(c, alert, an, &sent);
      char why[256];
      snprintf(why, sizeof why, "%s",
               k == DX_ETLS ? dx_tls_error(c->tls) : dx_strerror(k));
      if (c->ph == PH_HANDSHAKE)
        return fail_attempt(c, DX_ETLS, 0, "TLS handshake with %s failed: %s",
                            c->hostport, why);
      return fail_conn(c, DX_ETLS, "TLS error on %s: %s", c->hostport, why);
    }
    break;
  }
  if (dx_tls_handshake_done(c->tls)) mark(c, M_TLS);
  /* The handshake (or a key update) may want to answer. */
  const uint8_t *out;
  if (dx_tls_output(c->tls, &out)) mark_dirty(c);
}

static void on_readable(dx_client *c) {
  size_t cap;
  uint8_t *buf = dx_loop_recv_buffer(c->loop, &cap);
  unsigned gen = c->gen;
  while (alive(c, gen) && c->io_on) {
    ssize_t n = recv(c->io.fd, buf, cap, 0);
    if (n > 0) {
      if (c->tls)
        on_cipher(c, buf, (size_t)n, cap);
      else
        on_plain(c, buf, (size_t)n);
      if ((size_t)n < cap) return; /* drained; epoll (ET) tells us more */
      continue;
    }
    if (n == 0) return on_eof(c, 0);
    if (errno == EINTR) continue;
    if (errno != EAGAIN) on_eof(c, -errno);
    return;
  }
}

static void on_io(dx_io *io, unsigned events) {
  dx_client *c = (dx_client *)io;
  unsigned gen = c->gen;
  if (c->ph == PH_CONNECTING) {
    /* Connected (now HANDSHAKE), on to the next address, or failed. */
    on_connect_result(c);
    if (!alive(c, gen) || c->ph != PH_HANDSHAKE) return;
  }
  if (events & (DX_IO_READ | DX_IO_HUP | DX_IO_ERROR)) on_readable(c);
  if (alive(c, gen) && (events & DX_IO_WRITE)) on_writable(c);
}

/* ---- the public calls --------------------------------------------------- */

static void release(void *arg) {
  dx_client *c = arg;
  dx_tls_ctx_unref(c->tls_ctx);
  for (char **p = c->protos; p && *p; p++)
    free(*p);
  free(c->protos);
  free(c->url_buf);
  free((char *)c->cfg.url);
  free(c->extra_headers);
  free(c->origin);
  free(c->ca_file);
  free(c);
}

static bool header_reserved(const char *name, size_t n) {
  static const char *const owned[] = {"Host", "Upgrade", "Connection", "Origin",
                                      NULL};
  if (n >= 14 && strncasecmp(name, "Sec-WebSocket-", 14) == 0) return true;
  for (const char *const *o = owned; *o; o++)
    if (strlen(*o) == n && strncasecmp(name, *o, n) == 0) return true;
  return false;
}

/* "Name: value" strings -> "Name: value\r\n" lines. The engine checks the
 * characters again; here: a name, a colon, no line breaks, and none of the
 * headers the handshake writes itself. */
static int copy_headers(dx_client *c, const char *const *hs) {
  size_t total = 1;
  for (const char *const *h = hs; h && *h; h++) {
    const char *colon = strchr(*h, ':');
    if (!colon || colon == *h || strpbrk(*h, "\r\n") ||
        header_reserved(*h, (size_t)(colon - *h)))
      return DX_EINVAL;
    for (const char *p = *h; p < colon; p++)
      if (*p <= ' ' || *p >= 0x7f) return DX_EINVAL;
    total += strlen(*h) + 2;
  }
  if (total == 1) return 0;
  char *out = malloc(total), *w = out;
  if (!out) return DX_ENOMEM;
  for (const char *const *h = hs; *h; h++)
    w += sprintf(w, "%s\r\n", *h);
  c->extra_headers = out;
  return 0;
}

static int copy_strings(dx_client *c, const dx_client_config *cfg) {
  size_t n = 0;
  for (const char *const *p = cfg->subprotocols; p && *p; p++)
    n++;
  if (n) {
    c->protos = calloc(n + 1, sizeof *c->protos);
    if (!c->protos) return DX_ENOMEM;
    for (size_t i = 0; i < n; i++)
      if (!(c->protos[i] = strdup(cfg->subprotocols[i]))) return DX_ENOMEM;
  }
  if (cfg->origin && !(c->origin = strdup(cfg->origin))) return DX_ENOMEM;
  if (cfg->ca_file && !(c->ca_file = strdup(cfg->ca_file))) return DX_ENOMEM;
  return copy_headers(c, cfg->headers);
}

static unsigned or_default(unsigned v, unsigned d) {
  return v ? v : d;
}

dx_client *dx_client_new(dx_loop *loop, const dx_client_config *cfg) {
  if (!loop || !cfg || !cfg->url) {
    errno = EINVAL;
    return NULL;
  }
  dx_client *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->loop = loop;
  c->cfg = *cfg;
  c->cfg.url = strdup(cfg->url);
  c->url_buf = malloc(DX__URL_BUF(cfg->url));
  int rc = !c->cfg.url || !c->url_buf ? DX_ENOMEM : 0;
  if (!rc)
    rc = dx__url_parse(cfg->url, &c->url, c->url_buf, DX__URL_BUF(cfg->url));
  if (!rc) rc = copy_strings(c, cfg);
  if (rc) {
    release(c);
    errno = rc == DX_ENOMEM ? ENOMEM : EINVAL;
    return NULL;
  }
  c->cfg.headers = NULL;
  c->cfg.origin = c->origin;
  c->cfg.ca_file = c->ca_file;
  c->cfg.subprotocols = (const char *const *)c->protos;
  c->cfg.connect_timeout_ms =
      or_default(cfg->connect_timeout_ms, DEFAULT_TIMEOUT_MS);
  c->cfg.handshake_timeout_ms =
      or_default(cfg->handshake_timeout_ms, DEFAULT_TIMEOUT_MS);
  c->cfg.close_timeout_ms =
      or_default(cfg->close_timeout_ms, DEFAULT_CLOSE_TIMEOUT_MS);
  c->backoff = (dx__backoff){
      .base_ms = or_default(cfg->backoff_base_ms, DEFAULT_BACKOFF_BASE_MS),
      .max_ms = or_default(cfg->backoff_max_ms, DEFAULT_BACKOFF_MAX_MS),
      .max_attempts = cfg->max_attempts,
      .stable_ms = or_default(cfg->stable_ms, DEFAULT_STABLE_MS)};
  if (c->backoff.max_ms < c->backoff.base_ms)
    c->backoff.max_ms = c->backoff.base_ms;
  c->ws_cfg = (dx_ws_config){.role = DX_ROLE_CLIENT,
                             .flags = cfg->manual_pong ? DX_WS_NO_AUTO_PONG : 0,
                             .max_message = cfg->max_message,
                             .alloc = dx_loop_allocator(loop)};
  snprintf(c->hostport, sizeof c->hostport, c->url.ipv6 ? "[%s]:%d" : "%s:%d",
           c->url.host, c->url.port);
  c->state = DX_CLOSED;
  return c;
}

int dx_client_connect(dx_client *c) {
  if (c->freed) return DX_ECLOSED;
  if (c->ph != PH_IDLE) return DX_ESTATE;
  /* Starts from the loop, so no handler runs inside this call (a refused
   * connect to a local port fails at once). */
  int rc = dx_timer_start(c->loop, &c->t_phase, 0, 0, on_reconnect_timer);
  if (rc) return rc;
  c->user_closed = c->permanent = false;
  c->backoff.attempt = 0;
  c->ph = PH_WAIT;
  c->state = DX_CONNECTING;
  return 0;
}

dx_ready_state dx_client_state(const dx_client *c) {
  return c->state;
}

static int can_send(const dx_client *c) {
  if (c->freed) return DX_ECLOSED;
  if (c->state == DX_CONNECTING) return DX_ESTATE;
  return c->state == DX_OPEN && c->ws ? 0 : DX_ECLOSED;
}

int dx_client_send(dx_client *c, dx_opcode op, const void *data, size_t len) {
  int rc = can_send(c);
  if (rc) return rc;
  if (op != DX_OP_TEXT && op != DX_OP_BINARY) return DX_EINVAL;
  rc = dx_ws_send(c->ws, op, data, len);
  if (!rc) mark_dirty(c);
  return rc;
}

int dx_client_ping(dx_client *c, const void *data, size_t len) {
  int rc = can_send(c);
  if (rc) return rc;
  rc = dx_ws_ping(c->ws, data, len);
  if (!rc) mark_dirty(c);
  return rc;
}

int dx_client_close(dx_client *c, uint16_t code, const char *reason) {
  if (c->freed) return DX_ECLOSED;
  size_t rlen = reason ? strlen(reason) : 0;
  if (code && !dx_close_code_valid(code)) return DX_ECLOSECODE;
  if (rlen > 123 || (rlen && !code)) return DX_EINVAL;
  if (rlen && !dx_utf8_valid((const uint8_t *)reason, rlen)) return DX_EUTF8;
  switch (c->ph) {
  case PH_IDLE:
  case PH_CLOSING:
    c->user_closed = true;
    return 0;
  case PH_OPEN: {
    int rc = dx_ws_close(c->ws, code, reason, rlen);
    if (rc) return rc;
    c->user_closed = true;
    closing(c);
    mark_dirty(c);
    return 0;
  }
  default:
    /* Not open yet (or waiting to reconnect): give up quietly. */
    c->user_closed = true;
    teardown(c);
    c->ph = PH_IDLE;
    c->state = DX_CLOSED;
    return 0;
  }
}

size_t dx_client_buffered(const dx_client *c) {
  size_t n = c->ws ? dx_ws_buffered(c->ws) : 0;
  const uint8_t *p;
  if (c->tls) n += dx_tls_output(c->tls, &p);
  return n;
}

const char *dx_client_subprotocol(const dx_client *c) {
  return c->state == DX_OPEN || c->state == DX_CLOSING ? c->subprotocol : NULL;
}

const char *dx_client_extensions(const dx_client *c) {
  return c->state == DX_OPEN || c->state == DX_CLOSING ? c->extensions : "";
}

void dx_client_free(dx_client *c) {
  if (!c || c->freed) return;
  teardown(c);
  c->freed = true;
  c->state = DX_CLOSED;
  /* After the iteration: a handler up the stack may still look at c. On
   * ENOMEM leak it rather than free it under that handler. */
  (void)dx_loop_defer(c->loop, release, c);
}
