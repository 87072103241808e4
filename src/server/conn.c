/*
 * Connections: reading into the loop's buffer, the HTTP phase (static files,
 * errors, the upgrade), the WebSocket phase, batched writes, coarse
 * timeouts, and closing.
 *
 * Writes are batched: handlers queue output and mark the connection dirty;
 * the loop's flush hook then makes one write per connection per iteration
 * (redis and uSockets do the same: a syscall per batch, not per message).
 */
#include "server/internal.h"

#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <duplex/http.h>
#include <duplex/tls.h>

#define PARTIAL_HEAD_MIN 1024

uint32_t dx__sl_now(const dx__sloop *sl) {
  /* +1 so that 0 can mean "unset" in the t_* fields. */
  return (uint32_t)(dx_loop_now(sl->loop) - sl->t0) + 1;
}

static const dx_server_config *cfg_of(const dx_conn *c) {
  return &c->sl->srv->cfg;
}

/* The engine sits right after the connection in its block (accept). */
static inline dx_ws *ws_of(const dx_conn *c) {
  return (dx_ws *)(c + 1);
}

static inline struct dx_tls *conn_tls(const dx_conn *c) {
  return c->x ? c->x->tls : NULL;
}

static inline dx__route *route_of(const dx_conn *c) {
  return &c->sl->routes[c->route];
}

/* The user data follows the engine, 16-aligned. */
static size_t user_offset(void) {
  return (sizeof(dx_conn) + dx_ws_sizeof() + 15) & ~(size_t)15;
}

void dx__conn_mark_dirty(dx_conn *c) {
  if (c->dirty || c->dead) return;
  c->dirty = true;
  /* Room for every slot (add_slot_page): this cannot overflow. */
  c->sl->dirty[c->sl->ndirty++] = c->slot;
}

static void release_deflate(dx_conn *c);

/* ---- lifetime ---------------------------------------------------------------
 */

static void conn_free(void *arg) {
  dx_conn *c = arg;
  /* The slot goes only now, so no slot index of this iteration (the dirty
   * stack) can reach another connection. */
  dx__sl_unregister(c->sl, c);
  free(c->x);
  free(c);
}

void dx__conn_free_zombies(dx__sloop *sl) {
  for (uint32_t i = 0; i < dx__sl_nslots(sl); i++) {
    dx_conn *c = dx__sl_slot(sl, i);
    if (c && c->zombie) conn_free(c);
  }
}

static void release_head(dx_conn *c) {
  free(c->x->head);
  c->x->head = NULL;
  c->x->head_len = c->x->head_cap = 0;
}

/* Everything the HTTP phase and TLS hold but the struct itself, which may
 * still be read until the connection is freed. */
static void release_x(dx_conn *c) {
  struct dx__conn_x *x = c->x;
  if (!x) return;
  if (x->file_fd >= 0) close(x->file_fd);
  x->file_fd = -1;
  dx_tls_free(x->tls);
  x->tls = NULL;
  release_head(c);
  free(x->out);
  x->out = NULL;
  x->out_len = x->out_off = 0;
}

void dx__conn_destroy(dx_conn *c) {
  if (c->dead) return;
  dx__sloop *sl = c->sl;
  dx_server *srv = sl->srv;
  c->dead = true;
  if (c->opened) {
    c->opened = false;
    uint16_t code = c->close_code ? c->close_code : DX_CLOSE_ABNORMAL;
    if (route_of(c)->r.on_close)
      route_of(c)->r.on_close(c, code, NULL, 0, route_of(c)->r.ud);
    dx__log(srv, "close", c, route_of(c)->path, 0, code, NULL);
  }
  if (c->is_ws) {
    atomic_fetch_sub(&route_of(c)->count, 1);
    atomic_fetch_sub(&srv->websockets, 1);
    DX__DEC(sl, websockets);
  }
  if (c->counted_ip) dx__ip_release(srv, c);
  if (c->deflate_charged) release_deflate(c);
  dx_io_stop(&c->io);
  close(c->io.fd);
  if (c->is_ws) dx_ws_cleanup(ws_of(c));
  release_x(c);
  sl->nconns--;
  DX__DEC(sl, connections);
  /* Freed after the iteration: the dirty stack or an epoll batch may still
   * point at it (libuv/uSockets: close completes on the next turn). If
   * even that cannot be queued, the next sweep frees it. */
  if (dx_loop_defer(sl->loop, conn_free, c)) c->zombie = true;
}

static size_t tls_pending(const dx_conn *c);

/* ---- small helpers ------------------------------------------------------ */

static void set_peer(dx_conn *c, const struct sockaddr_storage *ss) {
  memset(c->addr, 0, 16);
  if (ss->ss_family == AF_INET) {
    /* Store IPv4 as IPv4-mapped IPv6 so quotas see one address space. */
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
    c->addr[10] = c->addr[11] = 0xff;
    memcpy(c->addr + 12, &s4->sin_addr, 4);
  } else {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    memcpy(c->addr, &s6->sin6_addr, 16);
  }
}

const char *dx_conn_peer(const dx_conn *c) {
  static _Thread_local char buf[46];
  dx_ip ip;
  memcpy(ip.b, c->addr, 16);
  return dx_ip_format(&ip, buf);
}

void *dx_conn_user(dx_conn *c) {
  return (char *)c + user_offset();
}
uint64_t dx_conn_id(const dx_conn *c) {
  return (uint64_t)c->sl->index << 56 | (uint64_t)c->gen << 24 | c->slot;
}
dx_server *dx_conn_server(const dx_conn *c) {
  return c->sl->srv;
}
size_t dx_conn_buffered(const dx_conn *c) {
  if (c->is_ws) return dx_ws_buffered(ws_of(c)) + tls_pending(c);
  return c->x ? c->x->out_len - c->x->out_off + tls_pending(c) : 0;
}

/* ---- HTTP responses --------------------------------------------------------
 */

/* Room for n more response bytes at c->x->out + c->x->out_len; NULL: out
 * of memory. */
static uint8_t *out_reserve(dx_conn *c, size_t n) {
  uint8_t *o = realloc(c->x->out, c->x->out_len + n);
  if (!o) return NULL;
  c->x->out = o;
  return o + c->x->out_len;
}

/* Commits n bytes written at out_reserve's pointer. */
static void out_commit(dx_conn *c, size_t n) {
  c->x->out_len += (uint32_t)n;
  c->phase = DX__RESPOND;
  dx__conn_mark_dirty(c);
}

static int queue_out(dx_conn *c, const char *p, size_t n) {
  uint8_t *o = out_reserve(c, n);
  if (!o) return DX_ENOMEM;
  memcpy(o, p, n);
  out_commit(c, n);
  return 0;
}

/* A complete small response; keep_alive false closes after it. */
static void respond(dx_conn *c, int status, const char *extra, const char *body,
                    bool keep_alive) {
  char buf[2048];
  size_t blen = body ? strlen(body) : 0;
  int n = snprintf(buf, sizeof buf,
                   "HTTP/1.1 %d %s\r\nServer: duplex\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\nConnection: %s\r\n%s\r\n%s",
                   status, dx_http_status_text(status), blen,
                   keep_alive ? "keep-alive" : "close", extra ? extra : "",
                   body ? body : "");
  if (n < 0 || (size_t)n >= sizeof buf) n = 0;
  c->x->keep_alive = keep_alive;
  if (queue_out(c, buf, (size_t)n)) dx__conn_destroy(c);
}

static void reject(dx_conn *c, int status, const char *path, const char *detail,
                   const char *extra) {
  dx__log(c->sl->srv, "reject", c, path, status, 0, detail);
  char body[256];
  snprintf(body, sizeof body, "%d %s: %s\n", status,
           dx_http_status_text(status), detail);
  respond(c, status, extra, body, false);
}

/* ---- the upgrade ------------------------------------------------------------
 */

static bool origin_allowed(const dx__route *r, const dx_header *h) {
  if (!r->r.origins || !h) return true;
  for (const char *const *o = r->r.origins; *o; o++)
    if (strlen(*o) == h->value_len &&
        strncasecmp(*o, h->value, h->value_len) == 0)
      return true;
  return false;
}

static inline void feed_ws(dx_conn *c, uint8_t *p, size_t n);
static void on_io(dx_io *io, unsigned events);
static void on_io_ws(dx_io *io, unsigned events);

/* Worst-case zlib memory of one connection: deflate (windowBits 15,
 * memLevel 8) is 2^17 + 2^17 bytes plus its state, inflate a 32 KiB window
 * plus ~7 KiB (zlib's documented formulas). */
#define DEFLATE_COST ((size_t)300 << 10)

static bool charge_deflate(dx_conn *c) {
  dx_server *srv = c->sl->srv;
  size_t used = atomic_fetch_add(&srv->deflate_used, DEFLATE_COST);
  if (used + DEFLATE_COST > srv->cfg.deflate_budget) {
    atomic_fetch_sub(&srv->deflate_used, DEFLATE_COST);
    return false;
  }
  c->deflate_charged = true;
  return true;
}

static void release_deflate(dx_conn *c) {
  atomic_fetch_sub(&c->sl->srv->deflate_used, DEFLATE_COST);
  c->deflate_charged = false;
}

typedef struct req_ctx {
  const dx_http_request *req;
  dx_http_info info;
  char path[2048]; /* decoded, cleaned */
  char query[2048];
} req_ctx;

static void count_handshake(dx_conn *c) {
  static const unsigned bounds[] = DX_HANDSHAKE_BUCKETS_MS;
  uint32_t ms = dx__sl_now(c->sl) - c->t_mark;
  size_t i = 0;
  while (i < 11 && ms > bounds[i])
    i++;
  DX__INC(c->sl, handshake_le[i], 1);
  DX__INC(c->sl, handshake_ms_sum, ms);
}

/* 1 + the index of the chosen subprotocol in the route's list; 0: none. */
static uint8_t subproto_index(const dx__route *r, const char *chosen) {
  if (!chosen) return 0;
  uint8_t i = 0;
  for (const char *const *p = r->r.subprotocols; p && *p; p++, i++)
    if (*p == chosen || strcmp(*p, chosen) == 0) return (uint8_t)(i + 1);
  return 0;
}

static void upgrade(dx_conn *c, dx__route *r, const req_ctx *rq, uint8_t *rest,
                    size_t rest_len) {
  const dx_http_request *req = rq->req;
  dx_server *srv = c->sl->srv;
  const dx_header *origin =
      dx_http_header(req->headers, req->num_headers, "Origin");
  if (!origin_allowed(r, origin)) {
    DX__INC(c->sl, rejected_origin, 1);
    char d[160];
    snprintf(d, sizeof d, "origin %.*s not allowed",
             origin ? (int)(origin->value_len > 100 ? 100 : origin->value_len)
                    : 0,
             origin ? origin->value : "");
    return reject(c, 403, r->path, d, NULL);
  }
  if ((srv->cfg.max_connections &&
       atomic_load(&srv->websockets) >= srv->cfg.max_connections) ||
      (r->r.max_connections &&
       atomic_load(&r->count) >= r->r.max_connections)) {
    DX__INC(c->sl, rejected_quota, 1);
    return reject(c, 503, r->path, "connection limit reached",
                  "Retry-After: 5\r\n");
  }
  if (!dx__ip_acquire(srv, c)) {
    DX__INC(c->sl, rejected_quota, 1);
    return reject(c, 429, r->path, "too many connections from this address",
                  "Retry-After: 5\r\n");
  }
  c->counted_ip = srv->cfg.max_per_ip != 0;
  if (r->r.on_accept) {
    dx_upgrade_request ur = {.path = rq->path,
                             .query = rq->query,
                             .headers = req->headers,
                             .num_headers = req->num_headers,
                             .peer = dx_conn_peer(c)};
    char ob[512] = "";
    if (origin) {
      snprintf(ob, sizeof ob, "%.*s", (int)origin->value_len, origin->value);
      ur.origin = ob;
    }
    int st = r->r.on_accept(c, &ur, r->r.ud);
    if (st) {
      DX__INC(c->sl, rejected_auth, 1);
      /* RFC 9110 11.6.1: a 401 names the scheme it wants. */
      return reject(c, st >= 400 && st < 600 ? st : 403, r->path,
                    "rejected by the endpoint",
                    st == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL);
    }
  }
  /* The engine lives in the connection's own block (see dx__conn_accept). */
  c->route = (uint16_t)(r - srv->routes);
  c->is_ws = true;
  dx_ws_init(ws_of(c), &c->sl->ws_cfgs[c->route]);
  c->fresh = true;
  atomic_fetch_add(&r->count, 1);
  atomic_fetch_add(&srv->websockets, 1);
  DX__INC(c->sl, websockets, 1);
  dx_ws_accept_policy policy = r->policy;
  if (policy.deflate.enabled && !charge_deflate(c))
    policy.deflate.enabled = false;
  dx_ws_handshake hs;
  int hrc = dx_ws_server_handshake(ws_of(c), req, &policy, &hs);
  if (c->deflate_charged && (hrc || !hs.pmd.enabled)) release_deflate(c);
  if (hrc != 0 && r->r.on_accept && r->r.on_close) {
    /* The accept hook may have filled the user data: let the route release
     * it, as for every connection the hook let through. */
    r->r.on_close(c, DX_CLOSE_ABNORMAL, "handshake failed", 16, r->r.ud);
  }
  if (hrc != 0) {
    DX__INC(c->sl, rejected_http, 1);
    dx__log(srv, "reject", c, r->path, hs.status, 0, hs.reason);
    c->phase = DX__WS; /* the engine holds the error response; then close */
    dx__conn_mark_dirty(c);
    return;
  }
  c->phase = DX__WS;
  c->opened = true;
  count_handshake(c);
  c->subproto = subproto_index(r, hs.subprotocol);
  uint32_t now = dx__sl_now(c->sl);
  c->t_last_in = now;
  c->t_ping = now; /* the first ping is due an interval after the open */
  c->t_mark = 0;
  if (!conn_tls(c)) {
    /* The HTTP phase is over: a plain WebSocket keeps none of it. (The
     * request bytes were detached by feed_http; rest points into them or
     * into the loop's buffer, not into x.) */
    release_x(c);
    free(c->x);
    c->x = NULL;
    dx_io_set_cb(&c->io, on_io_ws);
  }
  dx__conn_mark_dirty(c);
  dx__log(srv, "open", c, r->path, 101, 0, hs.subprotocol);
  if (r->r.on_open) r->r.on_open(c, r->r.ud);
  if (!c->dead && rest_len) feed_ws(c, rest, rest_len);
}

/* ---- the HTTP phase ---------------------------------------------------------
 */

static dx__route *find_route(dx_server *srv, const char *path) {
  for (size_t i = 0; i < srv->nroutes; i++)
    if (strcmp(srv->routes[i].path, path) == 0) return &srv->routes[i];
  return NULL;
}

static void serve_file(dx_conn *c, const req_ctx *rq) {
  static _Thread_local dx_static_result res;
  dx_static_serve(c->sl->srv->static_files, rq->req, NULL, 0, &res);
  c->x->keep_alive = res.keep_alive;
  if (queue_out(c, res.head, res.head_len)) {
    dx_static_result_close(&res);
    return dx__conn_destroy(c);
  }
  c->x->file_fd = res.fd;
  c->x->file_off = res.offset;
  c->x->file_left = res.fd >= 0 ? res.length : 0;
  res.fd = -1;
  dx_static_result_close(&res);
  dx__log(c->sl->srv, "http", c, rq->path, res.status, 0, NULL);
}

/* ---- HTTP routes ----------------------------------------------------------
 */

struct dx_http_exchange {
  dx_conn *c;
  bool keep_alive;
  bool answered;
};

int dx_http_respond(dx_http_exchange *x, int status, const char *content_type,
                    const void *body, size_t len, const char *extra_headers) {
  if (x->answered) return DX_ESTATE;
  dx_http_reply r = {.status = status,
                     .content_type = content_type,
                     .body = body,
                     .body_len = len,
                     .extra_headers = extra_headers,
                     .keep_alive = x->keep_alive};
  /* Formatted straight into the connection's output: no staging copy. */
  size_t cap = 512 + len + (extra_headers ? strlen(extra_headers) : 0);
  uint8_t *dst = out_reserve(x->c, cap);
  if (!dst) return DX_ENOMEM;
  int n = dx_http_reply_format((char *)dst, cap, &r);
  if (n < 0) return n;
  x->answered = true;
  x->c->x->keep_alive = x->keep_alive && status < 500;
  out_commit(x->c, (size_t)n);
  return 0;
}

uint64_t dx_http_defer(dx_http_exchange *x) {
  if (x->answered) return 0;
  dx_conn *c = x->c;
  x->answered = true;
  c->x->keep_alive = x->keep_alive;
  c->awaiting = true;
  /* Like a response being written: pipelined bytes wait in c->x->head. */
  c->phase = DX__RESPOND;
  c->t_stall = 0;
  return dx_conn_id(c);
}

void dx__conn_http_reply(dx_conn *c, int status, const char *content_type,
                         const void *body, size_t len,
                         const char *extra_headers) {
  if (!c->awaiting) return;
  c->awaiting = false;
  dx_http_exchange x = {.c = c, .keep_alive = c->x->keep_alive};
  if (dx_http_respond(&x, status, content_type, body, len, extra_headers) < 0)
    dx__conn_destroy(c);
}

static void call_http_route(dx_conn *c, const dx__http_route *h,
                            const req_ctx *rq, const uint8_t *body,
                            size_t body_len) {
  char method[16];
  const dx_http_request *req = rq->req;
  size_t ml =
      req->method_len < sizeof method - 1 ? req->method_len : sizeof method - 1;
  memcpy(method, req->method, ml);
  method[ml] = 0;
  dx_http_view v = {.method = method,
                    .path = rq->path,
                    .query = rq->query,
                    .headers = req->headers,
                    .num_headers = req->num_headers,
                    .peer = dx_conn_peer(c),
                    .body = body,
                    .body_len = body_len};
  dx_http_exchange x = {.c = c, .keep_alive = rq->info.keep_alive};
  h->handler(&x, &v, h->ud);
  if (c->dead) return;
  if (!x.answered) {
    static const char msg[] = "500 Internal Server Error: no answer\n";
    dx_http_respond(&x, 500, "text/plain; charset=utf-8", msg, sizeof msg - 1,
                    NULL);
  }
  dx__log(c->sl->srv, "http", c, rq->path, 0, 0, method);
}

static const dx__http_route *find_http_route(dx_server *srv, const char *p) {
  for (size_t i = 0; i < srv->nhttp; i++)
    if (strcmp(srv->http[i].path, p) == 0) return &srv->http[i];
  return NULL;
}

/* Handles one request (head checked, body complete); rest is what followed
 * it on the connection. */
static void handle_request(dx_conn *c, req_ctx *rq, const uint8_t *body,
                           size_t body_len, uint8_t *rest, size_t rest_len) {
  dx_server *srv = c->sl->srv;
  DX__INC(c->sl, http_requests, 1);
  dx__route *r = find_route(srv, rq->path);
  if (r && rq->info.is_upgrade) return upgrade(c, r, rq, rest, rest_len);
  bool keep = rq->info.keep_alive;
  const dx__http_route *h = find_http_route(srv, rq->path);
  if (h) {
    call_http_route(c, h, rq, body, body_len);
  } else if (body_len || rq->info.chunked) {
    return reject(c, 413, rq->path, "this path takes no request body", NULL);
  } else if (r) {
    /* RFC 6455 4.2.2: tell a plain HTTP client how to get the upgrade. */
    respond(c, 426,
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\n",
            "426 Upgrade Required: this is a WebSocket endpoint\n", keep);
  } else if (srv->static_files) {
    serve_file(c, rq);
  } else {
    respond(c, 404, NULL, "404 Not Found\n", keep);
  }
  /* Pipelined bytes wait until this response is written. */
  if (!c->dead && rest_len) {
    uint8_t *hb = malloc(rest_len);
    if (!hb) return dx__conn_destroy(c);
    memcpy(hb, rest, rest_len);
    c->x->head = hb;
    c->x->head_len = c->x->head_cap = (uint32_t)rest_len;
  }
}

/* Checks the head; fills rq's path and query. Returns 0 or a status. */
static int check_head(dx_conn *c, req_ctx *rq) {
  if (dx_http_request_check(rq->req, &rq->info)) return rq->info.status;
  const dx_http_target *t = &rq->info.target;
  int pl = dx_http_path_clean(t->path, t->path_len, rq->path, sizeof rq->path);
  if (pl < 0 || t->query_len >= sizeof rq->query)
    return pl == DX_ENOSPC || pl >= 0 ? 414 : 400;
  memcpy(rq->query, t->query ? t->query : "", t->query_len);
  rq->query[t->query_len] = 0;
  if (rq->info.chunked && find_http_route(c->sl->srv, rq->path)) return 411;
  if (rq->info.content_length > cfg_of(c)->max_body) return 413;
  return 0;
}

static int parse_status(int rc) {
  return rc == DX_EHTTP ? 400 : 431;
}

/* Keeps bytes of an unfinished request (head or body) in c->x->head. */
static int stash(dx_conn *c, const uint8_t *p, size_t n) {
  if (p == c->x->head) return 0;
  size_t cap = n > PARTIAL_HEAD_MIN ? n : PARTIAL_HEAD_MIN;
  uint8_t *h = malloc(cap);
  if (!h) return DX_ENOMEM;
  memcpy(h, p, n);
  c->x->head = h;
  c->x->head_len = (uint32_t)n;
  c->x->head_cap = (uint32_t)cap;
  return 0;
}

/* Parses what is buffered (p/n), waiting for the rest of a head or body. */
static void feed_http(dx_conn *c, uint8_t *p, size_t n) {
  const dx_server_config *cfg = cfg_of(c);
  dx_header hdrs[256];
  size_t cap = cfg->max_headers < 256 ? cfg->max_headers : 256;
  dx_http_request req = {.headers = hdrs, .num_headers = cap};
  dx_http_limits lim = {.max_line = cfg->max_header_line,
                        .max_head = cfg->max_head};
  int rc = dx_http_parse_request((const char *)p, n, &req, &lim);
  if (rc == DX_EAGAIN) {
    if (stash(c, p, n)) dx__conn_destroy(c);
    return;
  }
  if (rc < 0) {
    DX__INC(c->sl, rejected_http, 1);
    int st = parse_status(rc);
    return reject(c, st, NULL,
                  st == 431 ? "request header fields too large"
                            : "malformed request",
                  NULL);
  }
  static _Thread_local req_ctx rq;
  rq.req = &req;
  int st = check_head(c, &rq);
  if (st) {
    DX__INC(c->sl, rejected_http, 1);
    return reject(c, st, NULL, rq.info.reason ? rq.info.reason : "bad request",
                  NULL);
  }
  size_t body = (size_t)rq.info.content_length;
  if (n - (size_t)rc < body) {
    /* The body is not all here: keep head and body until it is. */
    c->x->need = (uint32_t)((size_t)rc + body);
    if (stash(c, p, n)) dx__conn_destroy(c);
    return;
  }
  c->x->need = 0;
  uint8_t *owned = p == c->x->head ? c->x->head : NULL;
  if (owned) {
    c->x->head = NULL;
    c->x->head_len = c->x->head_cap = 0;
  }
  uint8_t hop[16];
  bool fwd = dx__forwarded_apply(c, &req, hop);
  handle_request(c, &rq, p + rc, body, p + rc + body, n - (size_t)rc - body);
  if (fwd) dx__forwarded_restore(c, hop);
  free(owned);
}

static void on_http_data(dx_conn *c, uint8_t *p, size_t n) {
  if (c->phase == DX__RESPOND || c->x->head) {
    /* Append to the partial head (or pipelined bytes held during a
     * response), bounded by the head limit. */
    size_t max = c->x->need ? c->x->need : cfg_of(c)->max_head + 4096;
    if (c->x->head_len + n > max && c->phase == DX__RESPOND) {
      /* Enough pipelined requests are waiting: keep these bytes (at most
       * one read past the limit) and stop reading until the response is
       * written. */
      c->read_paused = true;
    } else if (c->x->head_len + n > max) {
      DX__INC(c->sl, rejected_http, 1);
      return reject(c, 431, NULL, "request header fields too large", NULL);
    }
    if (c->x->head_len + n > c->x->head_cap) {
      size_t ncap = c->x->head_cap ? c->x->head_cap : PARTIAL_HEAD_MIN;
      while (ncap < c->x->head_len + n)
        ncap *= 2;
      uint8_t *h = realloc(c->x->head, ncap);
      if (!h) return dx__conn_destroy(c);
      c->x->head = h;
      c->x->head_cap = (uint32_t)ncap;
    }
    memcpy(c->x->head + c->x->head_len, p, n);
    c->x->head_len += (uint32_t)n;
    if (c->phase == DX__RESPOND) return;
    return feed_http(c, c->x->head, c->x->head_len);
  }
  feed_http(c, p, n);
}

/* ---- the WebSocket phase
 * ------------------------------------------------------- */

static void ws_event(dx_conn *c, const dx_ws_event *ev) {
  dx__route *r = route_of(c);
  switch (ev->type) {
  case DX_EV_TEXT:
  case DX_EV_BINARY:
    DX__INC(c->sl, messages_in, 1);
    if (r->r.on_message)
      r->r.on_message(c, ev->type == DX_EV_TEXT ? DX_OP_TEXT : DX_OP_BINARY,
                      ev->data, ev->len, r->r.ud);
    break;
  case DX_EV_PONG:
    c->pinging = false;
    break;
  case DX_EV_PING: /* the engine queued the pong, unless manual_pong */
    if (r->r.on_ping) r->r.on_ping(c, ev->data, ev->len, r->r.ud);
    break;
  case DX_EV_CLOSE:
    c->close_code = ev->close_code;
    if (c->opened && r->r.on_close) {
      c->opened = false;
      r->r.on_close(c, ev->close_code, (const char *)ev->data, ev->len,
                    r->r.ud);
      dx__log(c->sl->srv, "close", c, r->path, 0, ev->close_code, "by peer");
    }
    break;
  }
}

/* Inlined: on the hot path it is one call level less (on_readable_ws). */
__attribute__((always_inline)) static inline void
feed_ws(dx_conn *c, uint8_t *p, size_t n) {
  dx_ws *ws = ws_of(c);
  c->t_last_in = dx__sl_now(c->sl);
  dx_ws_feed(ws, p, n);
  dx_ws_event ev;
  int rc;
  while ((rc = dx_ws_next(ws, &ev)) == 1) {
    if (ev.type == DX_EV_TEXT || ev.type == DX_EV_BINARY) {
      /* Messages, the common case, without the call into ws_event. The
       * event types TEXT and BINARY equal their opcodes (proto.h). */
      dx__route *r = route_of(c);
      DX__INC(c->sl, messages_in, 1);
      if (r->r.on_message)
        r->r.on_message(c, (dx_opcode)ev.type, ev.data, ev.len, r->r.ud);
    } else {
      ws_event(c, &ev);
    }
    if (c->dead) return;
  }
  if (rc != DX_EAGAIN) {
    DX__INC(c->sl, protocol_errors, 1);
    c->close_code = dx_ws_error_close_code(rc);
    dx__log(c->sl->srv, "error", c, route_of(c)->path, 0, c->close_code,
            dx_strerror(rc));
  }
  if (!c->dirty && (dx_ws_buffered(ws) || dx_ws_state(ws) == DX_CLOSED))
    dx__conn_mark_dirty(c);
}

/* ---- the socket, plain or TLS
 * ------------------------------------------------- TLS is a filter
 * (net/tls.c): plaintext goes in, ciphertext comes out of a buffer, and the
 * same write path sends it. */

/* Writes pending ciphertext. Returns 0 (all written or EAGAIN), -1 error. */
static int flush_tls(dx_conn *c) {
  const uint8_t *p;
  size_t n;
  while ((n = dx_tls_output(conn_tls(c), &p)) > 0) {
    ssize_t k = write(c->io.fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : -1;
    }
    DX__INC(c->sl, bytes_out, (uint64_t)k);
    dx_tls_consume(conn_tls(c), (size_t)k);
    if ((size_t)k < n) return 0;
  }
  return 0;
}

/* Sends bytes: straight to the socket, or through TLS (which takes them
 * all). Returns bytes taken (may be short on EAGAIN), or -1. */
static ssize_t sock_send(dx_conn *c, const uint8_t *p, size_t n) {
  if (conn_tls(c)) {
    if (dx_tls_write(conn_tls(c), p, n) < 0) return -1;
    return flush_tls(c) < 0 ? -1 : (ssize_t)n;
  }
  for (;;) {
    ssize_t k = write(c->io.fd, p, n);
    if (k >= 0) {
      DX__INC(c->sl, bytes_out, (uint64_t)k);
      return k;
    }
    if (errno == EINTR) continue;
    return errno == EAGAIN ? 0 : -1;
  }
}

static size_t tls_pending(const dx_conn *c) {
  const uint8_t *p;
  return conn_tls(c) ? dx_tls_output(conn_tls(c), &p) : 0;
}

/* ---- reading
 * ------------------------------------------------------------------ */

static void start_linger(dx_conn *c);
static void on_cipher(dx_conn *c, uint8_t *buf, size_t n, size_t cap);
static int write_ws(dx_conn *c);
static inline int write_plain(dx_conn *c);
static int write_http_body(dx_conn *c);

static void dispatch(dx_conn *c, uint8_t *buf, size_t n) {
  if (c->phase == DX__WS) {
    feed_ws(c, buf, n);
    /* Replies pile up while a fast peer keeps us reading: past the high
     * watermark write them now, so a peer that reads keeps up and one that
     * does not reaches the hard limit (dx_conn_send drops it) instead of
     * growing the queue for a whole read burst. */
    if (!c->dead &&
        dx_ws_buffered(ws_of(c)) + tls_pending(c) > cfg_of(c)->write_high &&
        write_ws(c) < 0)
      dx__conn_destroy(c);
  } else if (c->phase != DX__LINGER) {
    on_http_data(c, buf, n);
  }
}

/* Feeds ciphertext and dispatches all plaintext it yields. */
static void on_cipher(dx_conn *c, uint8_t *buf, size_t n, size_t cap) {
  if (dx_tls_feed(conn_tls(c), buf, n)) return dx__conn_destroy(c);
  for (;;) {
    int k = dx_tls_read(conn_tls(c), buf, cap);
    if (k > 0) {
      dispatch(c, buf, (size_t)k);
      if (c->dead || c->read_paused) return;
      continue;
    }
    if (k == 0) break;
    if (k == DX_ETLS) {
      DX__INC(c->sl, rejected_http, 1);
      dx__log(c->sl->srv, "tls", c, NULL, 0, 0, dx_tls_error(conn_tls(c)));
      (void)flush_tls(c); /* the alert, if any */
    }
    return dx__conn_destroy(c);
  }
  if (tls_pending(c)) dx__conn_mark_dirty(c); /* handshake records */
}

static void after_ws_write(dx_conn *c);

/*
 * A plain WebSocket (no TLS, HTTP phase over): read, handle, and write what
 * that produced right away, one write for the whole read. The connection
 * counts as dirty meanwhile, so sends from its own handlers only queue
 * instead of putting it on the flush stack for a second visit. The flush
 * pass still serves output queued by anyone else later in the iteration.
 */
static void on_readable_ws(dx_conn *c) {
  size_t cap;
  uint8_t *buf = dx_loop_recv_buffer(c->sl->loop, &cap);
  dx_ws *ws = ws_of(c);
  bool was_dirty = c->dirty;
  c->dirty = true;
  for (;;) {
    ssize_t n = read(c->io.fd, buf, cap);
    if (n > 0) {
      DX__INC(c->sl, bytes_in, (uint64_t)n);
      feed_ws(c, buf, (size_t)n);
      if (c->dead) return;
      /* See dispatch: past the high watermark, write before reading on. */
      if (dx_ws_buffered(ws) > cfg_of(c)->write_high && write_ws(c) < 0)
        return dx__conn_destroy(c);
      if ((size_t)n < cap) break; /* drained; epoll (ET) will tell us */
      continue;
    }
    if (n == 0) return dx__conn_destroy(c); /* EOF */
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return dx__conn_destroy(c);
    break;
  }
  c->dirty = was_dirty;
  if (write_plain(c) < 0) return dx__conn_destroy(c);
  /* after_ws_write's own early exit, without the call. */
  if (dx_ws_buffered(ws) || c->t_stall || c->fresh || c->high ||
      dx_ws_state(ws) != DX_OPEN)
    after_ws_write(c);
}

static void on_readable(dx_conn *c) {
  if (c->phase == DX__WS && !c->x && !c->read_paused) return on_readable_ws(c);
  size_t cap;
  uint8_t *buf = dx_loop_recv_buffer(c->sl->loop, &cap);
  for (;;) {
    if (c->dead || c->read_paused) return;
    if (c->proxy_wait && !dx__proxy_read(c)) return;
    ssize_t n = read(c->io.fd, buf, cap);
    if (n > 0) {
      DX__INC(c->sl, bytes_in, (uint64_t)n);
      if (conn_tls(c))
        on_cipher(c, buf, (size_t)n, cap);
      else
        dispatch(c, buf, (size_t)n);
      if ((size_t)n < cap) return; /* drained; epoll (ET) will tell us */
      continue;
    }
    if (n == 0) {
      /* EOF: the peer is gone or finished its half. */
      return dx__conn_destroy(c);
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) dx__conn_destroy(c);
    return;
  }
}

/* ---- writing
 * ------------------------------------------------------------------- */

static void start_linger(dx_conn *c) {
  /* Half-close and keep reading until EOF, so unread input does not turn
   * our close into a RST that could destroy the close frame in flight. */
  if (c->phase == DX__LINGER) return;
  c->phase = DX__LINGER;
  dx_io_set_cb(&c->io, on_io); /* data now is only drained (dispatch) */
  c->t_mark = dx__sl_now(c->sl);
  if (conn_tls(c)) {
    dx_tls_shutdown(conn_tls(c));
    (void)flush_tls(c);
  }
  shutdown(c->io.fd, SHUT_WR);
}

/* Plain TCP. The engine's output is one contiguous run: one write takes it
 * all, or as much as the kernel will, and then there is nothing to loop
 * for until the socket is writable again. Returns 0, or -1 to close. */
__attribute__((always_inline)) static inline int write_plain(dx_conn *c) {
  const uint8_t *p;
  size_t n = dx_ws_output(ws_of(c), &p);
  if (!n) return 0;
  ssize_t k;
  while ((k = write(c->io.fd, p, n)) < 0)
    if (errno != EINTR) return errno == EAGAIN ? 0 : -1;
  DX__INC(c->sl, bytes_out, (uint64_t)k);
  dx_ws_consume(ws_of(c), (size_t)k);
  return 0;
}

static int write_ws(dx_conn *c) {
  const uint8_t *p;
  size_t n;
  if (!conn_tls(c)) return write_plain(c);
  if (flush_tls(c) < 0) return -1;
  while ((n = dx_ws_output(ws_of(c), &p)) > 0) {
    if (tls_pending(c)) return 0; /* the kernel is full: wait */
    ssize_t k = sock_send(c, p, n);
    if (k < 0) return -1;
    dx_ws_consume(ws_of(c), (size_t)k);
    if ((size_t)k < n) return 0;
  }
  return 0;
}

static void after_ws_write(dx_conn *c) {
  size_t b = dx_ws_buffered(ws_of(c)) + tls_pending(c);
  if (b == 0 && c->fresh) {
    /* The 101 is out; most connections then sit idle: keep no buffer. */
    c->fresh = false;
    dx_ws_trim(ws_of(c));
  }
  if (b == 0 && !c->high && !c->t_stall && dx_ws_state(ws_of(c)) == DX_OPEN)
    return; /* the common case: everything written */
  const dx_server_config *cfg = cfg_of(c);
  if (b > cfg->write_high) c->high = true;
  if (b == 0)
    c->t_stall = 0;
  else if (!c->t_stall)
    c->t_stall = dx__sl_now(c->sl);
  if (c->high && b <= cfg->write_low) {
    c->high = false;
    if (route_of(c)->r.on_drain) route_of(c)->r.on_drain(c, route_of(c)->r.ud);
    if (c->dead) return;
  }
  if (b == 0 && dx_ws_state(ws_of(c)) == DX_CLOSED) start_linger(c);
}

static void response_done(dx_conn *c) {
  c->t_stall = 0;
  free(c->x->out);
  c->x->out = NULL;
  c->x->out_len = c->x->out_off = 0;
  if (!c->x->keep_alive) return start_linger(c);
  c->phase = DX__HTTP;
  c->t_mark = dx__sl_now(c->sl);
  c->x->first_request = false;
  if (c->x->head) {
    /* Pipelined requests that arrived during the response. */
    uint8_t *h = c->x->head;
    size_t n = c->x->head_len;
    c->x->head = NULL;
    c->x->head_len = c->x->head_cap = 0;
    on_http_data(c, h, n);
    free(h);
  }
  if (!c->dead && c->read_paused) {
    c->read_paused = false;
    if (conn_tls(c)) {
      /* Requests may already be decrypted inside the TLS buffer, where
       * epoll cannot see them: process them before reading the socket. */
      size_t cap;
      uint8_t *buf = dx_loop_recv_buffer(c->sl->loop, &cap);
      on_cipher(c, buf, 0, cap);
    }
    if (!c->dead && !c->read_paused) on_readable(c);
  }
}

/* File body over TLS: no sendfile; read a chunk at a time while the TLS
 * output is small, so memory stays bounded. */
static int send_file_tls(dx_conn *c) {
  size_t cap;
  uint8_t *buf = dx_loop_recv_buffer(c->sl->loop, &cap);
  if (cap > 65536) cap = 65536;
  while (c->x->file_left && tls_pending(c) == 0) {
    size_t want = c->x->file_left < cap ? (size_t)c->x->file_left : cap;
    ssize_t k = pread(c->x->file_fd, buf, want, (off_t)c->x->file_off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1; /* error, or the file shrank under us */
    if (sock_send(c, buf, (size_t)k) < 0) return -1;
    c->x->file_off += (uint64_t)k;
    c->x->file_left -= (uint64_t)k;
  }
  return 0;
}

static int send_file_plain(dx_conn *c) {
  while (c->x->file_left) {
    off_t off = (off_t)c->x->file_off;
    size_t chunk = c->x->file_left > (1u << 30) ? (1u << 30) : c->x->file_left;
    ssize_t k = sendfile(c->io.fd, c->x->file_fd, &off, chunk);
    if (k < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : -1;
    }
    if (k == 0) return -1; /* the file shrank under us */
    DX__INC(c->sl, bytes_out, (uint64_t)k);
    c->x->file_off = (uint64_t)off;
    c->x->file_left -= (uint64_t)k;
  }
  return 0;
}

static int write_http(dx_conn *c) {
  uint64_t before =
      c->x->file_left + (c->x->out_len - c->x->out_off) + tls_pending(c);
  int rc = write_http_body(c);
  /* The stall timer measures time without progress, not response time. */
  if (c->x->file_left + (c->x->out_len - c->x->out_off) + tls_pending(c) <
      before)
    c->t_stall = 0;
  return rc;
}

static int write_http_body(dx_conn *c) {
  if (conn_tls(c) && flush_tls(c) < 0) return -1;
  if (c->awaiting) return 0; /* the answer is not there yet */
  while (c->x->out_off < c->x->out_len) {
    ssize_t k =
        sock_send(c, c->x->out + c->x->out_off, c->x->out_len - c->x->out_off);
    if (k < 0) return -1;
    if (k == 0) return 0;
    c->x->out_off += (uint32_t)k;
  }
  if ((conn_tls(c) ? send_file_tls(c) : send_file_plain(c)) < 0) return -1;
  if (c->x->file_left || tls_pending(c)) return 0; /* more when writable */
  if (c->x->file_fd >= 0) {
    close(c->x->file_fd);
    c->x->file_fd = -1;
  }
  response_done(c);
  return 0;
}

static void flush_conn(dx_conn *c) {
  if (c->dead) return;
  if (c->phase == DX__WS) {
    if (write_ws(c) < 0) return dx__conn_destroy(c);
    return after_ws_write(c);
  }
  if (c->phase == DX__RESPOND) {
    if (write_http(c) < 0) dx__conn_destroy(c);
  } else if (conn_tls(c) && flush_tls(c) < 0) {
    dx__conn_destroy(c);
  }
}

void dx__conn_flush_all(void *arg) {
  dx__sloop *sl = arg;
  /* A stack: a connection marked again while flushing goes back on it
   * after being popped, so it never holds more than one entry per slot. */
  while (sl->ndirty) {
    dx_conn *c = dx__sl_slot(sl, sl->dirty[--sl->ndirty]);
    if (!c) continue; /* a zombie the sweep freed (out of memory only) */
    c->dirty = false;
    flush_conn(c);
  }
}

static void on_io(dx_io *io, unsigned events) {
  dx_conn *c = (dx_conn *)io;
  if (events & (DX_IO_READ | DX_IO_HUP | DX_IO_ERROR)) on_readable(c);
  /* Writable: a flush helps only if output was left behind. A WebSocket
   * with output left has t_stall set (after_ws_write), which saves
   * computing what is buffered on every edge. */
  if ((events & DX_IO_WRITE) && !c->dirty && !c->dead &&
      (c->phase == DX__WS ? c->t_stall != 0
                          : c->phase == DX__RESPOND || dx_conn_buffered(c)))
    dx__conn_mark_dirty(c);
}

/* The callback of a plain WebSocket in the open or closing state (set at
 * the 101, replaced by on_io at the linger): no phase or TLS to test. */
static void on_io_ws(dx_io *io, unsigned events) {
  dx_conn *c = (dx_conn *)io;
  /* The read ends with a write, which also serves a writable edge that
   * came with it; a writable edge alone matters only if output was left
   * behind, which t_stall marks (after_ws_write). */
  if (events & (DX_IO_READ | DX_IO_HUP | DX_IO_ERROR)) return on_readable_ws(c);
  if (c->t_stall) dx__conn_mark_dirty(c);
}

/* ---- accept
 * ---------------------------------------------------------------------- */

void dx__conn_accept(dx__sloop *sl, int fd, const struct sockaddr_storage *ss) {
  size_t usz = 0;
  for (size_t i = 0; i < sl->srv->nroutes; i++)
    if (sl->srv->routes[i].r.user_size > usz)
      usz = sl->srv->routes[i].r.user_size;
  /* One block: the connection, the engine, then the routes' user data,
   * so an idle WebSocket costs one allocation; the HTTP phase has its own,
   * given back at the 101. */
  size_t size = usz ? user_offset() + usz : sizeof(dx_conn) + dx_ws_sizeof();
  dx_conn *c = calloc(1, size);
  struct dx__conn_x *x = calloc(1, sizeof *x);
  if (!c || !x) goto fail;
  /* TCP_NODELAY is inherited from the listener (net/tcp.c). */
  c->sl = sl;
  c->x = x;
  x->file_fd = -1;
  x->first_request = true;
  c->proxy_wait = sl->srv->cfg.proxy_protocol;
  set_peer(c, ss);
  if (dx__sl_register(sl, c)) goto fail;
  if (dx_io_start(sl->loop, &c->io, fd, DX_IO_READ | DX_IO_WRITE, on_io)) {
    dx__sl_unregister(sl, c);
    goto fail;
  }
  if (sl->srv->tls_ctx && !(x->tls = dx__server_tls_new(sl->srv))) {
    dx_io_stop(&c->io);
    dx__sl_unregister(sl, c);
    goto fail;
  }
  c->t_mark = dx__sl_now(sl);
  sl->nconns++;
  DX__INC(sl, connections, 1);
  DX__INC(sl, accepted, 1);
  if (sl->stopping) return dx__conn_destroy(c);
  /* Data often arrives with the connection (TCP_DEFER_ACCEPT-like): try
   * now rather than waiting for another epoll round. */
  return on_readable(c);
fail:
  close(fd);
  free(x);
  free(c);
}

/* A consumer too slow for its queue is dropped, reported as 1008 (policy):
 * a close frame queued behind a backlog the peer is not reading would never
 * arrive, so the TCP connection is simply closed. */
static void drop_slow(dx_conn *c) {
  DX__INC(c->sl, closed_slow, 1);
  c->close_code = DX_CLOSE_POLICY;
  dx__log(c->sl->srv, "slow", c, route_of(c)->path, 0, 1008,
          "output hard limit exceeded");
  dx__conn_destroy(c);
}

/* ---- public connection calls
 * ---------------------------------------------------- */

int dx_conn_send(dx_conn *c, dx_opcode op, const void *data, size_t len) {
  if (c->dead || !c->is_ws) return DX_ECLOSED;
  if (dx_ws_buffered(ws_of(c)) > cfg_of(c)->write_hard) {
    /* Queueing more behind a backlog past the hard limit would grow memory
     * without bound: drop the consumer. (A single message larger than the
     * limit is fine on a queue that keeps draining.) */
    drop_slow(c);
    return DX_ECLOSED;
  }
  int rc = dx_ws_send(ws_of(c), op, data, len);
  if (rc) return rc;
  DX__INC(c->sl, messages_out, 1);
  dx__conn_mark_dirty(c);
  return 0;
}

int dx_conn_send_frame(dx_conn *c, const void *frame, size_t len) {
  if (c->dead || !c->is_ws) return DX_ECLOSED;
  if (dx_ws_buffered(ws_of(c)) > cfg_of(c)->write_hard) {
    drop_slow(c);
    return DX_ECLOSED;
  }
  int rc = dx_ws_send_raw(ws_of(c), frame, len);
  if (rc) return rc;
  DX__INC(c->sl, messages_out, 1);
  dx__conn_mark_dirty(c);
  return 0;
}

int dx_conn_loop(const dx_conn *c) {
  return c->sl->index;
}

size_t dx_conn_flush(dx_conn *c) {
  if (c->dead || !c->is_ws) return 0;
  if (write_ws(c) < 0) {
    dx__conn_destroy(c);
    return 0;
  }
  return dx_conn_buffered(c);
}

void dx_conn_want_drain(dx_conn *c) {
  if (c->dead || !c->is_ws) return;
  c->high = true;
  dx__conn_mark_dirty(c); /* the next flush checks the watermark */
}

int dx_conn_ping(dx_conn *c, const void *data, size_t len) {
  if (c->dead || !c->is_ws) return DX_ECLOSED;
  int rc = dx_ws_ping(ws_of(c), data, len);
  if (!rc) dx__conn_mark_dirty(c);
  return rc;
}

int dx_conn_close(dx_conn *c, uint16_t code, const char *reason) {
  if (c->dead || !c->is_ws) return DX_ECLOSED;
  int rc = dx_ws_close(ws_of(c), code, reason, reason ? strlen(reason) : 0);
  if (rc) return rc;
  if (!c->t_mark) c->t_mark = dx__sl_now(c->sl);
  if (!c->close_code) c->close_code = code;
  dx__conn_mark_dirty(c);
  return 0;
}

const char *dx_conn_subprotocol(const dx_conn *c) {
  return c->subproto ? route_of(c)->r.subprotocols[c->subproto - 1] : NULL;
}

/* ---- timeouts
 * ---------------------------------------------------------------------- */

static bool expired(uint32_t now, uint32_t since, unsigned ms) {
  return since && now - since >= ms;
}

static void sweep_ws(dx_conn *c, uint32_t now, const dx_server_config *cfg) {
  if (c->t_mark && expired(now, c->t_mark, cfg->close_timeout_ms))
    return dx__conn_destroy(c);
  if (c->t_stall && expired(now, c->t_stall, cfg->write_stall_ms)) {
    DX__INC(c->sl, closed_slow, 1);
    c->close_code = DX_CLOSE_POLICY;
    return dx__conn_destroy(c);
  }
  if (dx_ws_state(ws_of(c)) != DX_OPEN) return;
  /* Quiet since the last tick: give back the kept output buffer. */
  if (!c->dirty) dx_ws_trim(ws_of(c));
  if (c->pinging && expired(now, c->t_ping, cfg->pong_timeout_ms)) {
    /* A peer that cannot answer a ping in time is presumed dead. */
    DX__INC(c->sl, closed_ping, 1);
    dx__log(c->sl->srv, "timeout", c, route_of(c)->path, 0, 1006, "no pong");
    return dx__conn_destroy(c);
  }
  if (cfg->ping_interval_ms != (unsigned)-1 && !c->pinging &&
      now - c->t_ping >= cfg->ping_interval_ms) {
    c->pinging = true;
    c->t_ping = now;
    dx_conn_ping(c, NULL, 0);
  }
  if (cfg->idle_timeout_ms && expired(now, c->t_last_in, cfg->idle_timeout_ms))
    dx_conn_close(c, DX_CLOSE_GOING_AWAY, "idle timeout");
}

void dx__conn_sweep(dx__sloop *sl) {
  const dx_server_config *cfg = &sl->srv->cfg;
  uint32_t now = dx__sl_now(sl);
  for (uint32_t i = 0; i < dx__sl_nslots(sl); i++) {
    dx_conn *c = dx__sl_slot(sl, i);
    if (c && c->zombie) {
      conn_free(c);
      continue;
    }
    if (!c || c->dead) continue;
    switch (c->phase) {
    case DX__HTTP:
      /* An absolute deadline from accept: trickled bytes do not extend it
       * (slowloris). Later keep-alive requests get the idle timeout. */
      if (c->x->first_request
              ? expired(now, c->t_mark, cfg->handshake_timeout_ms)
              : expired(now, c->t_mark, cfg->http_idle_ms)) {
        if (c->x->first_request) {
          DX__INC(sl, closed_handshake_timeout, 1);
          dx__log(sl->srv, "timeout", c, NULL, 408, 0, "handshake timeout");
        }
        dx__conn_destroy(c);
      }
      break;
    case DX__RESPOND:
      if (!c->t_stall) c->t_stall = now;
      if (expired(now, c->t_stall, cfg->write_stall_ms)) dx__conn_destroy(c);
      break;
    case DX__WS:
      sweep_ws(c, now, cfg);
      break;
    case DX__LINGER:
      if (expired(now, c->t_mark, cfg->close_timeout_ms)) dx__conn_destroy(c);
      break;
    }
  }
}

void dx__conn_shutdown_all(dx__sloop *sl) {
  const dx_server_config *cfg = &sl->srv->cfg;
  bool final = sl->stopping && dx_loop_now(sl->loop) >= sl->stop_deadline;
  for (uint32_t i = 0; i < dx__sl_nslots(sl); i++) {
    dx_conn *c = dx__sl_slot(sl, i);
    if (!c || c->dead) continue;
    if (final || c->phase != DX__WS) {
      dx__conn_destroy(c);
      continue;
    }
    dx_conn_close(c, cfg->shutdown_code,
                  cfg->shutdown_reason ? cfg->shutdown_reason
                                       : "server shutting down");
  }
}
