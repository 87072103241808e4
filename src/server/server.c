/*
 * The server: configuration, routes, one loop per thread with its own
 * SO_REUSEPORT listener, connection ids, per-IP quotas, graceful shutdown.
 * Connection I/O lives in conn.c.
 */
#include "server/internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <duplex/http.h>
#include <duplex/tls.h>

static unsigned or_default(unsigned v, unsigned d) {
  return v ? v : d;
}
static size_t or_default_size(size_t v, size_t d) {
  return v ? v : d;
}

static void apply_defaults(dx_server_config *c) {
  c->max_message = or_default_size(c->max_message, DX_DEFAULT_MAX_MESSAGE);
  c->max_header_line = or_default_size(c->max_header_line, 8 << 10);
  c->max_head = or_default_size(c->max_head, 16 << 10);
  c->max_headers = or_default_size(c->max_headers, 100);
  c->handshake_timeout_ms = or_default(c->handshake_timeout_ms, 10000);
  c->ping_interval_ms = or_default(c->ping_interval_ms, 25000);
  c->pong_timeout_ms = or_default(c->pong_timeout_ms, 20000);
  c->close_timeout_ms = or_default(c->close_timeout_ms, 5000);
  c->http_idle_ms = or_default(c->http_idle_ms, 30000);
  c->write_low = or_default_size(c->write_low, 64 << 10);
  c->write_high = or_default_size(c->write_high, 256 << 10);
  c->write_hard = or_default_size(c->write_hard, 1 << 20);
  c->write_stall_ms = or_default(c->write_stall_ms, 10000);
  c->max_body = or_default_size(c->max_body, (size_t)1 << 20);
  c->deflate_budget = or_default_size(c->deflate_budget, (size_t)256 << 20);
  if (!c->shutdown_code) c->shutdown_code = DX_CLOSE_GOING_AWAY;
  if (c->threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = n > 0 ? (int)n : 1;
  }
  if (c->threads > 255) c->threads = 255;
}

dx_server *dx_server_new(const dx_server_config *cfg) {
  dx_server *srv = calloc(1, sizeof *srv);
  if (!srv) return NULL;
  srv->cfg = *cfg;
  apply_defaults(&srv->cfg);
  srv->shutdown_efd = -1;
  pthread_mutex_init(&srv->ip_lock, NULL);
  pthread_mutex_init(&srv->tls_lock, NULL);
  if (cfg->static_root) {
    dx_static_config sc = {.root = cfg->static_root};
    srv->static_files = dx_static_new(&sc);
    if (!srv->static_files) {
      int e = errno;
      dx_server_free(srv);
      errno = e;
      return NULL;
    }
  }
  return srv;
}

int dx_server_route(dx_server *srv, const dx_route *route) {
  if (srv->started) return DX_ESTATE;
  if (!route || !route->path || route->path[0] != '/') return DX_EINVAL;
  for (size_t i = 0; i < srv->nroutes; i++)
    if (strcmp(srv->routes[i].path, route->path) == 0) return DX_EINVAL;
  /* A connection keeps its route and subprotocol as small indexes. */
  size_t np = 0;
  for (const char *const *p = route->subprotocols; p && *p; p++)
    np++;
  if (np > 254 || srv->nroutes >= 65535) return DX_EINVAL;
  dx__route *r = realloc(srv->routes, (srv->nroutes + 1) * sizeof *r);
  if (!r) return DX_ENOMEM;
  srv->routes = r;
  dx__route *nr = &r[srv->nroutes];
  memset(nr, 0, sizeof *nr);
  nr->r = *route;
  if (!(nr->path = strdup(route->path))) return DX_ENOMEM;
  nr->r.path = nr->path;
  nr->ws_cfg.role = DX_ROLE_SERVER;
  nr->ws_cfg.max_message =
      route->max_message ? route->max_message : srv->cfg.max_message;
  if (route->manual_pong) nr->ws_cfg.flags |= DX_WS_NO_AUTO_PONG;
  nr->policy.subprotocols = route->subprotocols;
  nr->policy.deflate.enabled = route->deflate;
  srv->nroutes++;
  return 0;
}

int dx_server_http(dx_server *srv, const char *path, dx_http_handler handler,
                   void *ud) {
  if (srv->started) return DX_ESTATE;
  if (!path || path[0] != '/' || !handler) return DX_EINVAL;
  for (size_t i = 0; i < srv->nhttp; i++)
    if (strcmp(srv->http[i].path, path) == 0) return DX_EINVAL;
  dx__http_route *h = realloc(srv->http, (srv->nhttp + 1) * sizeof *h);
  if (!h) return DX_ENOMEM;
  srv->http = h;
  char *copy = strdup(path);
  if (!copy) return DX_ENOMEM;
  h[srv->nhttp++] = (dx__http_route){copy, handler, ud};
  return 0;
}

int dx_server_loop_count(const dx_server *srv) {
  return srv->started ? srv->nloops : srv->cfg.threads;
}

int dx_server_post(dx_server *srv, int index, void (*fn)(void *), void *arg) {
  if (!srv->started || index < 0 || index >= srv->nloops) return DX_EINVAL;
  return dx_loop_post(srv->loops[index].loop, fn, arg);
}

/* ---- connection ids ------------------------------------------------------ */

/* id = loop (8 bits) | generation (32 bits) | slot (24 bits). */
static int add_slot_page(dx__sloop *sl) {
  uint32_t base = sl->npages << DX__SLOT_PAGE_SHIFT;
  if (base + DX__SLOT_PAGE > (1u << 24)) return DX_ENOMEM;
  uint64_t **dir = realloc(sl->slot_pages, (sl->npages + 1) * sizeof *dir);
  if (!dir) return DX_ENOMEM;
  sl->slot_pages = dir;
  uint32_t *dirty =
      realloc(sl->dirty, (size_t)(base + DX__SLOT_PAGE) * sizeof *dirty);
  if (!dirty) return DX_ENOMEM;
  sl->dirty = dirty;
  uint64_t *page = malloc(DX__SLOT_PAGE * sizeof *page);
  if (!page) return DX_ENOMEM;
  /* Free entries chained in index order, generation 1. */
  for (uint32_t i = 0; i < DX__SLOT_PAGE; i++) {
    uint32_t next = i + 1 < DX__SLOT_PAGE ? base + i + 2 : sl->free_head;
    page[i] = (uint64_t)1 << 32 | (uint64_t)next << 1 | 1;
  }
  sl->free_head = base + 1;
  dir[sl->npages++] = page;
  return 0;
}

static uint64_t *slot_entry(dx__sloop *sl, uint32_t slot) {
  return &sl->slot_pages[slot >> DX__SLOT_PAGE_SHIFT]
                        [slot & (DX__SLOT_PAGE - 1)];
}

int dx__sl_register(dx__sloop *sl, dx_conn *c) {
  if (!sl->free_head) {
    int rc = add_slot_page(sl);
    if (rc) return rc;
  }
  uint32_t slot = sl->free_head - 1;
  uint64_t *e = slot_entry(sl, slot);
  sl->free_head = (uint32_t)(*e & 0xffffffffu) >> 1;
  c->gen = (uint32_t)(*e >> 32);
  c->slot = slot;
  *e = (uint64_t)(uintptr_t)c;
  return 0;
}

void dx__sl_unregister(dx__sloop *sl, dx_conn *c) {
  uint64_t *e = slot_entry(sl, c->slot);
  *e = (uint64_t)(c->gen + 1) << 32 | (uint64_t)sl->free_head << 1 | 1;
  sl->free_head = c->slot + 1;
}

uint32_t dx__sl_nslots(const dx__sloop *sl) {
  return sl->npages << DX__SLOT_PAGE_SHIFT;
}

dx_conn *dx__sl_lookup(dx__sloop *sl, uint64_t id) {
  uint32_t slot = id & 0xffffff;
  uint32_t gen = (uint32_t)(id >> 24);
  if (slot >= dx__sl_nslots(sl)) return NULL;
  dx_conn *c = dx__sl_slot(sl, slot);
  return c && c->gen == gen && !c->dead ? c : NULL;
}

/* ---- per-IP quota ----------------------------------------------------------
 */

struct dx__ipcount {
  uint8_t addr[16];
  uint32_t count; /* 0: empty slot; entries are never removed, only zeroed
                     (tombstone-free linear probing keeps lookups simple) */
  bool used;
};

static size_t ip_hash(const uint8_t *a) {
  uint64_t h = 1469598103934665603ull;
  for (int i = 0; i < 16; i++)
    h = (h ^ a[i]) * 1099511628211ull;
  return (size_t)h;
}

static struct dx__ipcount *ip_find(dx_server *srv, const uint8_t *a) {
  if (srv->ip_used * 2 >= srv->ip_cap) {
    size_t ncap = srv->ip_cap ? srv->ip_cap * 2 : 256;
    struct dx__ipcount *n = calloc(ncap, sizeof *n), *old = srv->ips;
    if (!n) return NULL;
    size_t oldcap = srv->ip_cap;
    srv->ips = n;
    srv->ip_cap = ncap;
    srv->ip_used = 0;
    for (size_t i = 0; i < oldcap; i++) {
      if (!old[i].used || !old[i].count) continue;
      struct dx__ipcount *e = ip_find(srv, old[i].addr);
      e->count = old[i].count;
    }
    free(old);
  }
  size_t i = ip_hash(a) & (srv->ip_cap - 1);
  while (srv->ips[i].used && memcmp(srv->ips[i].addr, a, 16) != 0)
    i = (i + 1) & (srv->ip_cap - 1);
  if (!srv->ips[i].used) {
    srv->ips[i].used = true;
    memcpy(srv->ips[i].addr, a, 16);
    srv->ip_used++;
  }
  return &srv->ips[i];
}

bool dx__ip_acquire(dx_server *srv, const dx_conn *c) {
  if (!srv->cfg.max_per_ip) return true;
  pthread_mutex_lock(&srv->ip_lock);
  struct dx__ipcount *e = ip_find(srv, c->addr);
  bool ok = e && e->count < srv->cfg.max_per_ip;
  if (ok) e->count++;
  pthread_mutex_unlock(&srv->ip_lock);
  return ok;
}

void dx__ip_release(dx_server *srv, const dx_conn *c) {
  pthread_mutex_lock(&srv->ip_lock);
  struct dx__ipcount *e = ip_find(srv, c->addr);
  if (e && e->count) e->count--;
  pthread_mutex_unlock(&srv->ip_lock);
}

/* ---- logging ------------------------------------------------------------- */

void dx__log(dx_server *srv, const char *event, const dx_conn *c,
             const char *path, int status, int code, const char *detail) {
  if (!srv->cfg.log) return;
  dx_log_record r = {.event = event,
                     .conn = c ? dx_conn_id(c) : 0,
                     .peer = c ? dx_conn_peer(c) : NULL,
                     .path = path,
                     .status = status,
                     .code = code,
                     .detail = detail};
  srv->cfg.log(srv->cfg.log_ud, &r);
}

/* ---- loops ------------------------------------------------------------------
 */

static void on_listen(dx_io *io, unsigned events) {
  (void)events;
  dx__sloop *sl = (dx__sloop *)((char *)io - offsetof(dx__sloop, listen_io));
  for (int i = 0; i < 256; i++) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = accept4(io->fd, (struct sockaddr *)&ss, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      /* EMFILE/ENFILE: leave the rest in the backlog; the next readiness
       * edge or sweep tick retries (uSockets does the same). */
      return;
    }
    dx__conn_accept(sl, fd, &ss);
  }
}

static void begin_stop(dx__sloop *sl) {
  if (sl->stopping) return;
  sl->stopping = true;
  dx_server *srv = sl->srv;
  unsigned t =
      srv->shutdown_timeout ? srv->shutdown_timeout : srv->cfg.close_timeout_ms;
  sl->stop_deadline = dx_loop_now(sl->loop) + t;
  if (sl->listen_fd >= 0) {
    dx_io_stop(&sl->listen_io);
    close(sl->listen_fd);
    sl->listen_fd = -1;
  }
  dx_io_stop(&sl->shutdown_io);
  dx__conn_shutdown_all(sl);
}

static void on_shutdown_event(dx_io *io, unsigned events) {
  (void)events;
  begin_stop((dx__sloop *)((char *)io - offsetof(dx__sloop, shutdown_io)));
}

static void on_signal(dx_io *io, unsigned events) {
  (void)events;
  dx__sloop *sl = (dx__sloop *)((char *)io - offsetof(dx__sloop, signal_io));
  struct signalfd_siginfo si;
  while (read(io->fd, &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGHUP && !sl->srv->cfg.tls_cert) {
      dx__log(sl->srv, "signal", NULL, NULL, 0, SIGHUP,
              "nothing to reload (no TLS)");
      continue;
    }
    if (si.ssi_signo == SIGHUP) {
      int rc = dx_server_reload_tls(sl->srv);
      dx__log(sl->srv, "signal", NULL, NULL, 0, SIGHUP,
              rc ? sl->srv->error : "TLS certificate reloaded");
      continue;
    }
    dx__log(sl->srv, "signal", NULL, NULL, 0, (int)si.ssi_signo,
            "graceful shutdown");
    dx_server_shutdown(sl->srv, 0);
  }
}

static void on_sweep(dx_timer *t) {
  dx__sloop *sl = (dx__sloop *)((char *)t - offsetof(dx__sloop, sweep));
  dx__conn_sweep(sl);
  if (sl->stopping &&
      (sl->nconns == 0 || dx_loop_now(sl->loop) >= sl->stop_deadline)) {
    dx__conn_shutdown_all(sl); /* destroys whatever is left */
    dx_loop_stop(sl->loop);
  }
}

static unsigned sweep_interval(const dx_server_config *c) {
  /* Coarse timeouts (uSockets): one pass over the loop's connections per
   * tick instead of a timer per connection. A quarter of the shortest
   * timeout keeps each within 25% of its value. */
  unsigned m = c->handshake_timeout_ms;
  unsigned v[] = {c->ping_interval_ms, c->pong_timeout_ms, c->close_timeout_ms,
                  c->write_stall_ms,   c->idle_timeout_ms, c->http_idle_ms};
  for (size_t i = 0; i < sizeof v / sizeof *v; i++)
    if (v[i] && v[i] < m) m = v[i];
  m /= 4;
  if (m < 10) m = 10;
  if (m > 1000) m = 1000;
  return m;
}

static int loop_init(dx_server *srv, dx__sloop *sl, int index) {
  sl->srv = srv;
  sl->index = index;
  sl->listen_fd = -1;
  if (!(sl->loop = dx_loop_new(NULL))) return -errno;
  sl->alloc = dx_loop_allocator(sl->loop);
  sl->routes = srv->routes;
  sl->ws_cfgs = calloc(srv->nroutes ? srv->nroutes : 1, sizeof *sl->ws_cfgs);
  if (!sl->ws_cfgs) return DX_ENOMEM;
  for (size_t i = 0; i < srv->nroutes; i++) {
    sl->ws_cfgs[i] = srv->routes[i].ws_cfg;
    sl->ws_cfgs[i].alloc = sl->alloc;
  }
  sl->t0 = dx_loop_now(sl->loop);
  int fd = dx_tcp_listen(srv->cfg.host, srv->port, true, 4096);
  if (fd < 0) return fd;
  sl->listen_fd = fd;
  if (index == 0) srv->port = dx_tcp_local_port(fd);
  int rc = dx_io_start(sl->loop, &sl->listen_io, fd, DX_IO_READ, on_listen);
  if (rc) return rc;
  rc = dx_io_start(sl->loop, &sl->shutdown_io, srv->shutdown_efd, DX_IO_READ,
                   on_shutdown_event);
  if (rc) return rc;
  dx_loop_on_flush(sl->loop, dx__conn_flush_all, sl);
  unsigned tick = sweep_interval(&srv->cfg);
  return dx_timer_start(sl->loop, &sl->sweep, tick, tick, on_sweep);
}

/* ---- TLS -------------------------------------------------------------- */

static dx_tls_ctx *load_tls(dx_server *srv) {
  dx_tls_ctx_config tc = {.server = true,
                          .cert_file = srv->cfg.tls_cert,
                          .key_file = srv->cfg.tls_key,
                          .sni_certs = srv->cfg.tls_sni_certs,
                          .nsni_certs = srv->cfg.tls_nsni_certs,
                          .alpn = "http/1.1"};
  char err[200];
  dx_tls_ctx *ctx = dx_tls_ctx_new(&tc, err, sizeof err);
  if (!ctx) snprintf(srv->error, sizeof srv->error, "TLS: %s", err);
  return ctx;
}

int dx_server_reload_tls(dx_server *srv) {
  if (!srv->cfg.tls_cert) return DX_ESTATE;
  dx_tls_ctx *ctx = load_tls(srv);
  if (!ctx) return DX_ETLS;
  pthread_mutex_lock(&srv->tls_lock);
  dx_tls_ctx *old = srv->tls_ctx;
  srv->tls_ctx = ctx;
  pthread_mutex_unlock(&srv->tls_lock);
  dx_tls_ctx_unref(old); /* open connections hold their own references */
  return 0;
}

dx_tls *dx__server_tls_new(dx_server *srv) {
  pthread_mutex_lock(&srv->tls_lock);
  dx_tls *t = dx_tls_new(srv->tls_ctx, NULL);
  pthread_mutex_unlock(&srv->tls_lock);
  return t;
}

const char *dx_server_error(const dx_server *srv) {
  return srv->error;
}

int dx_server_start(dx_server *srv) {
  if (srv->started) return 0;
  if ((srv->cfg.tls_cert != NULL) != (srv->cfg.tls_key != NULL) &&
      !srv->cfg.tls_cert) {
    snprintf(srv->error, sizeof srv->error, "TLS: a key needs a certificate");
    return DX_EINVAL;
  }
  if (srv->cfg.tls_nsni_certs && !srv->cfg.tls_cert) {
    snprintf(srv->error, sizeof srv->error,
             "TLS: SNI certificates need a default certificate (tls_cert)");
    return DX_EINVAL;
  }
  if (srv->cfg.tls_cert && !srv->tls_ctx && !(srv->tls_ctx = load_tls(srv)))
    return DX_ETLS;
  if (!srv->trusted) {
    int frc = dx__forwarded_init(srv);
    if (frc) return frc;
  }
  srv->port = srv->cfg.port;
  srv->shutdown_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (srv->shutdown_efd < 0) return -errno;
  srv->nloops = srv->cfg.threads;
  srv->loops = calloc((size_t)srv->nloops, sizeof *srv->loops);
  if (!srv->loops) return DX_ENOMEM;
  for (int i = 0; i < srv->nloops; i++) {
    int rc = loop_init(srv, &srv->loops[i], i);
    if (rc) return rc;
  }
  srv->started = true;
  return 0;
}

int dx_server_port(const dx_server *srv) {
  return srv->port;
}

static void *loop_thread(void *arg) {
  dx__sloop *sl = arg;
  dx_loop_run(sl->loop);
  return NULL;
}

int dx_server_run(dx_server *srv) {
  int rc = dx_server_start(srv);
  if (rc) return rc;
  sigset_t set, old;
  int sfd = -1;
  if (srv->cfg.handle_signals) {
    /* Block before spawning threads so they inherit the mask and only the
     * signalfd on loop 0 sees SIGINT/SIGTERM. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    /* SIGHUP also without TLS: a reload (systemctl reload) must never be
     * the default action, which is to exit. */
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd >= 0)
      dx_io_start(srv->loops[0].loop, &srv->loops[0].signal_io, sfd, DX_IO_READ,
                  on_signal);
  }
  int started = 1;
  for (int i = 1; i < srv->nloops; i++) {
    if (pthread_create(&srv->loops[i].thread, NULL, loop_thread,
                       &srv->loops[i]) != 0)
      break;
    started++;
  }
  rc = dx_loop_run(srv->loops[0].loop);
  if (started < srv->nloops) dx_server_shutdown(srv, 0);
  for (int i = 1; i < started; i++)
    pthread_join(srv->loops[i].thread, NULL);
  if (sfd >= 0) {
    dx_io_stop(&srv->loops[0].signal_io);
    close(sfd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  return rc < 0 ? rc : 0;
}

void dx_server_shutdown(dx_server *srv, unsigned timeout_ms) {
  if (atomic_exchange(&srv->shutting_down, true)) return;
  srv->shutdown_timeout = timeout_ms;
  uint64_t one = 1;
  /* Every loop watches this eventfd (edge-triggered, never read), so one
   * write wakes them all; write(2) is async-signal-safe. */
  if (srv->shutdown_efd >= 0) {
    ssize_t w = write(srv->shutdown_efd, &one, sizeof one);
    (void)w;
  }
}

void dx_server_free(dx_server *srv) {
  if (!srv) return;
  for (int i = 0; i < srv->nloops; i++) {
    dx__sloop *sl = &srv->loops[i];
    if (!sl->loop) continue;
    for (uint32_t k = 0; k < dx__sl_nslots(sl); k++) {
      dx_conn *c = dx__sl_slot(sl, k);
      if (c && !c->dead) dx__conn_destroy(c);
    }
    dx_loop_run_once(sl->loop, 0); /* run deferred frees */
    dx__conn_free_zombies(sl);
    if (sl->listen_fd >= 0) close(sl->listen_fd);
    dx_loop_free(sl->loop);
    free(sl->ws_cfgs);
    for (uint32_t k = 0; k < sl->npages; k++)
      free(sl->slot_pages[k]);
    free(sl->slot_pages);
    free(sl->dirty);
  }
  free(srv->loops);
  for (size_t i = 0; i < srv->nroutes; i++)
    free(srv->routes[i].path);
  for (size_t i = 0; i < srv->nhttp; i++)
    free(srv->http[i].path);
  free(srv->http);
  free(srv->routes);
  if (srv->static_files) dx_static_free(srv->static_files);
  if (srv->shutdown_efd >= 0) close(srv->shutdown_efd);
  dx_tls_ctx_unref(srv->tls_ctx);
  pthread_mutex_destroy(&srv->tls_lock);
  free(srv->ips);
  dx__forwarded_free(srv);
  pthread_mutex_destroy(&srv->ip_lock);
  free(srv);
}

void dx_server_stats_get(const dx_server *srv, dx_server_stats *out) {
  memset(out, 0, sizeof *out);
  uint64_t *o = (uint64_t *)out;
  for (int i = 0; i < srv->nloops; i++)
    for (size_t k = 0; k < sizeof *out / sizeof(uint64_t); k++)
      o[k] +=
          atomic_load_explicit(&srv->loops[i].stats.v[k], memory_order_relaxed);
}

/* ---- cross-thread sends ----------------------------------------------------
 */

typedef struct posted {
  dx__sloop *sl;
  uint64_t id;
  int kind; /* 0 send, 1 close, 2 deferred HTTP reply */
  dx_opcode op;
  uint16_t code;
  size_t len;
  uint8_t data[];
} posted;

static void run_posted(void *arg) {
  posted *p = arg;
  dx_conn *c = dx__sl_lookup(p->sl, p->id);
  if (c && !c->dead) {
    if (p->kind == 0) {
      dx_conn_send(c, p->op, p->data, p->len);
    } else if (p->kind == 1) {
      dx_conn_close(c, p->code, (const char *)p->data);
    } else { /* an HTTP reply: content type, extra headers, then the body */
      const char *ct = (const char *)p->data;
      const char *extra = ct + strlen(ct) + 1;
      const uint8_t *body = (const uint8_t *)extra + strlen(extra) + 1;
      size_t blen = p->len - (size_t)(body - p->data);
      dx__conn_http_reply(c, p->code, *ct ? ct : NULL, body, blen,
                          *extra ? extra : NULL);
    }
  }
  free(p);
}

/* A block for len bytes of data (and a NUL after them), for post_submit;
 * *rc says why when NULL. */
static posted *post_new(dx_server *srv, uint64_t id, int kind, dx_opcode op,
                        uint16_t code, size_t len, int *rc) {
  unsigned li = (unsigned)(id >> 56);
  *rc = DX_EINVAL;
  if (!srv->started || li >= (unsigned)srv->nloops) return NULL;
  *rc = DX_ENOMEM;
  posted *p = malloc(sizeof *p + len + 1);
  if (!p) return NULL;
  *p = (posted){.sl = &srv->loops[li],
                .id = id,
                .kind = kind,
                .op = op,
                .code = code,
                .len = len};
  p->data[len] = 0;
  return p;
}

static int post_submit(posted *p) {
  int rc = dx_loop_post(p->sl->loop, run_posted, p);
  if (rc) free(p);
  return rc;
}

static int post(dx_server *srv, uint64_t id, int kind, dx_opcode op,
                uint16_t code, const void *data, size_t len) {
  int rc;
  posted *p = post_new(srv, id, kind, op, code, len, &rc);
  if (!p) return rc;
  if (len) memcpy(p->data, data, len);
  return post_submit(p);
}

int dx_server_send(dx_server *srv, uint64_t id, dx_opcode op, const void *data,
                   size_t len) {
  return post(srv, id, 0, op, 0, data, len);
}

int dx_server_http_reply(dx_server *srv, uint64_t token, int status,
                         const char *content_type, const void *body,
                         size_t len, const char *extra_headers) {
  if (status < 100 || status > 999 || (len && !body)) return DX_EINVAL;
  size_t cl = content_type ? strlen(content_type) : 0;
  size_t el = extra_headers ? strlen(extra_headers) : 0;
  if (len > SIZE_MAX - cl - el - 3 - sizeof(posted)) return DX_ENOMEM;
  /* Laid out in the posted block itself: one allocation and copy. */
  int rc;
  posted *p =
      post_new(srv, token, 2, 0, (uint16_t)status, cl + el + 2 + len, &rc);
  if (!p) return rc;
  uint8_t *buf = p->data;
  memcpy(buf, content_type ? content_type : "", cl + 1);
  memcpy(buf + cl + 1, extra_headers ? extra_headers : "", el + 1);
  if (len) memcpy(buf + cl + el + 2, body, len);
  return post_submit(p);
}

int dx_server_close(dx_server *srv, uint64_t id, uint16_t code,
                    const char *reason) {
  return post(srv, id, 1, 0, code, reason, reason ? strlen(reason) : 0);
}
