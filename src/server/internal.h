/* Internal to server/: the server, its loops and connections. */
#ifndef DX_SERVER_INTERNAL_H
#define DX_SERVER_INTERNAL_H

#include <duplex/net.h>
#include <duplex/server.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct dx__sloop dx__sloop;

typedef struct dx__route {
  dx_route r;
  char *path;
  dx_ws_config ws_cfg;        /* template; each loop has its own copy */
  dx_ws_accept_policy policy; /* likewise */
  atomic_size_t count;        /* open connections on the route */
} dx__route;

typedef struct dx__http_route {
  char *path;
  dx_http_handler handler;
  void *ud;
} dx__http_route;

/* Per-loop counters: written by the owning loop only, read by any thread
 * with relaxed loads (a snapshot may be a little stale, never torn). */
typedef struct dx__counters {
  _Atomic uint64_t v[sizeof(dx_server_stats) / sizeof(uint64_t)];
} dx__counters;

#define DX__STAT(sl, field)                                                    \
  (sl)->stats.v[offsetof(dx_server_stats, field) / sizeof(uint64_t)]
/* One writer per counter (the owning loop), so a relaxed load and store is
 * enough: no locked read-modify-write on the hot path. */
#define DX__INC(sl, field, n)                                                  \
  atomic_store_explicit(                                                       \
      &DX__STAT(sl, field),                                                    \
      atomic_load_explicit(&DX__STAT(sl, field), memory_order_relaxed) + (n),  \
      memory_order_relaxed)
#define DX__DEC(sl, field) DX__INC(sl, field, (uint64_t)-1)

enum dx__phase {
  DX__HTTP = 0, /* reading a request head */
  DX__RESPOND,  /* writing an HTTP response (head, then file body) */
  DX__WS,       /* WebSocket */
  DX__LINGER    /* our side is done: FIN sent, draining until EOF */
};

struct dx_conn {
  dx_io io;
  dx__sloop *sl;
  dx_conn *prev, *next; /* every connection of the loop */
  dx_conn *dirty_next;  /* pending flush this iteration */
  dx__route *route;
  dx_ws *ws;
  struct dx_tls *tls;      /* NULL for plain TCP */
  const char *subprotocol; /* chosen, owned by the route policy */
  uint8_t *head;           /* unparsed request bytes, only while partial */
  uint32_t head_len, head_cap;
  uint8_t *out; /* HTTP response head (not WebSocket output) */
  uint32_t out_len, out_off;
  int file_fd;
  uint32_t slot;
  uint32_t user_room;
  uint32_t need;
      /* bytes of head + body awaited; 0: just a head */ /* bytes reserved for
                                                            user data before the
                                                            engine */
  uint64_t file_off, file_left;
  uint64_t id;
  /* Milliseconds since the loop started. */
  uint32_t t_start; /* accept, or end of the last HTTP response */
  uint32_t t_ping;  /* ping sent, awaiting pong */
  uint32_t t_next_ping;
  uint32_t t_last_in;
  uint32_t t_stall;    /* output stuck since; 0: not stuck */
  uint32_t t_close;    /* closing started */
  uint16_t close_code; /* for on_close */
  uint8_t phase;
  uint8_t family;
  uint8_t addr[16];
  bool dirty : 1;
  bool keep_alive : 1;
  bool opened : 1; /* on_open ran; on_close is owed */
  bool pinging : 1;
  bool high : 1; /* above the high watermark */
  bool dead : 1;
  bool counted_ip : 1;
  bool read_paused : 1;
  bool first_request : 1;
  bool deflate_charged : 1;
  bool fresh : 1; /* upgraded; trim the output once the 101 is out */
  bool awaiting : 1; /* a deferred HTTP answer (dx_http_defer) is owed */
  bool proxy_wait : 1; /* PROXY protocol on: the header is not read yet */
  /* user data follows, aligned */
  _Alignas(16) unsigned char user[];
};

struct dx__sloop {
  dx_server *srv;
  int index;
  dx_loop *loop;
  pthread_t thread;
  int listen_fd;
  dx_io listen_io;
  dx_io shutdown_io;
  dx_io signal_io;
  dx_allocator alloc;
  /* Per route: the engine config with THIS loop's allocator. Engines keep
   * a pointer to their config and the pool is loop-local, so a config must
   * never be shared between loops. */
  dx_ws_config *ws_cfgs;
  dx_timer sweep;
  dx_conn *conns;
  dx_conn *dirty;
  size_t nconns;
  /* id -> connection: slot index plus a generation, so a stale id from
   * another thread never reaches a reused slot. */
  dx_conn **slots;
  uint32_t *gens;
  uint32_t *free_slots;
  uint32_t nslots, nfree;
  uint64_t t0; /* dx_loop_now at creation */
  bool stopping;
  uint64_t stop_deadline;
  dx__counters stats;
};

struct dx_server {
  dx_server_config cfg;
  dx__route *routes;
  size_t nroutes;
  dx__http_route *http;
  size_t nhttp;
  void *static_files; /* dx_static *, when static_root is set */
  dx__sloop *loops;
  int nloops;
  int port;
  bool started;
  atomic_bool shutting_down;
  unsigned shutdown_timeout;
  int shutdown_efd;
  atomic_int loops_running;
  atomic_size_t websockets;
  atomic_size_t deflate_used; /* bytes charged against deflate_budget */
  struct dx_tls_ctx *tls_ctx; /* current; replaced on reload */
  pthread_mutex_t tls_lock;   /* guards tls_ctx swaps against new conns */
  char error[256];            /* why dx_server_start failed */
  /* trusted proxies (forwarded.c) */
  struct dx_cidr *trusted;
  size_t ntrusted;
  /* per-IP WebSocket counts */
  pthread_mutex_t ip_lock;
  struct dx__ipcount *ips;
  size_t ip_cap, ip_used;
};

/* conn.c */
void dx__conn_accept(dx__sloop *sl, int fd, const struct sockaddr_storage *ss);
void dx__conn_flush_all(void *sl);
void dx__conn_sweep(dx__sloop *sl);
void dx__conn_shutdown_all(dx__sloop *sl);
void dx__conn_destroy(dx_conn *c);
uint32_t dx__sl_now(const dx__sloop *sl);
void dx__conn_mark_dirty(dx_conn *c);

/* forwarded.c: client addresses behind trusted proxies */
struct dx_http_request;
int dx__forwarded_init(dx_server *srv);
void dx__forwarded_free(dx_server *srv);
/* PROXY protocol phase: 1 when the header is done (read on), 0 when waiting
 * for more bytes or the connection was closed. */
int dx__proxy_read(dx_conn *c);
/* X-Forwarded-For of a request: true when c's address was replaced by the
 * client's (the previous one saved in hop, for dx__forwarded_restore after
 * the request). */
bool dx__forwarded_apply(dx_conn *c, const struct dx_http_request *req,
                         uint8_t hop[16]);
void dx__forwarded_restore(dx_conn *c, const uint8_t hop[16]);

/* server.c */
struct dx_tls *dx__server_tls_new(dx_server *srv);
dx_conn *dx__sl_lookup(dx__sloop *sl, uint64_t id);
int dx__sl_register(dx__sloop *sl, dx_conn *c);
void dx__sl_unregister(dx__sloop *sl, dx_conn *c);
bool dx__ip_acquire(dx_server *srv, const dx_conn *c);
void dx__ip_release(dx_server *srv, const dx_conn *c);
void dx__log(dx_server *srv, const char *event, const dx_conn *c,
             const char *path, int status, int code, const char *detail);

/* Answers a request deferred with dx_http_defer (loop thread). */
void dx__conn_http_reply(dx_conn *c, int status, const char *content_type,
                         const void *body, size_t len,
                         const char *extra_headers);

#endif
