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

/* What only the HTTP phase needs (request bytes, the response, a file
 * body), and the TLS state. Allocated at accept; freed at the 101 unless
 * the connection is TLS, so a plain idle WebSocket carries none of it. */
struct dx__conn_x {
  struct dx_tls *tls; /* NULL for plain TCP */
  uint8_t *head;      /* unparsed request bytes, only while partial */
  uint32_t head_len, head_cap;
  uint8_t *out; /* HTTP response head (not WebSocket output) */
  uint32_t out_len, out_off;
  uint32_t need; /* bytes of head + body awaited; 0: just a head */
  int file_fd;
  uint64_t file_off, file_left;
  bool keep_alive;
  bool first_request;
};

/*
 * One per connection, followed in the same block by the engine (at
 * (dx_ws *)(c + 1), once a WebSocket) and then the routes' user data.
 * Every byte here is paid by every idle connection: 88 bytes on LP64,
 * with the 80-byte engine one 176-byte malloc chunk. The id is derived
 * (loop, gen, slot); connections are found through the loop's slot table,
 * not a list; times are 32-bit ms since the loop started (+1, 0: unset).
 */
struct dx_conn {
  dx_io io;
  dx__sloop *sl;
  struct dx__conn_x *x; /* HTTP phase and TLS; NULL otherwise */
  uint32_t slot;
  uint32_t gen; /* of the slot, part of the id */
  /* HTTP: accept, or end of the last response (deadlines). Closing (WS
   * close or linger): when it started. 0 in an open WebSocket. */
  uint32_t t_mark;
  uint32_t t_ping; /* last ping sent (or the open): the next is due an
                      interval later; while pinging, the pong deadline runs */
  uint32_t t_last_in;
  uint32_t t_stall;    /* output stuck since; 0: not stuck */
  uint16_t close_code; /* for on_close */
  uint16_t route;      /* index in srv->routes, once a WebSocket */
  uint8_t subproto;    /* 1 + index of the chosen subprotocol; 0: none */
  uint8_t addr[16];
  uint8_t phase : 2; /* enum dx__phase */
  bool dirty : 1;
  bool opened : 1; /* on_open ran; on_close is owed */
  bool pinging : 1;
  bool high : 1; /* above the high watermark */
  bool dead : 1;
  bool counted_ip : 1;
  bool read_paused : 1;
  bool deflate_charged : 1;
  bool fresh : 1;      /* upgraded; trim the output once the 101 is out */
  bool is_ws : 1;      /* the engine after the block is initialised */
  bool zombie : 1;     /* dead, and its deferred free could not be queued */
  bool awaiting : 1;   /* a deferred HTTP answer (dx_http_defer) is owed */
  bool proxy_wait : 1; /* PROXY protocol on: the header is not read yet */
};

/* The slot table: pages of slot entries, each either a connection pointer
 * or, when free, (gen << 32 | next free slot + 1 << 1 | 1). Pages, not one
 * array, so it grows without copying and never much past what is used. */
#define DX__SLOT_PAGE_SHIFT 10
#define DX__SLOT_PAGE ((uint32_t)1 << DX__SLOT_PAGE_SHIFT)

static inline dx_conn *dx__slot_conn(uint64_t e) {
  return (e & 1) ? NULL : (dx_conn *)(uintptr_t)e;
}

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
  dx__route *routes; /* srv->routes, one load closer */
  size_t nconns;
  /* id -> connection: slot index plus a generation, so a stale id from
   * another thread never reaches a reused slot. A slot is released only
   * when its connection is freed (after the iteration), so slot indexes
   * stay valid for the whole iteration. */
  uint64_t **slot_pages; /* 64-bit entries on every platform */
  uint32_t npages;
  uint32_t free_head; /* slot + 1 of the first free slot; 0: none */
  /* Connections to flush this iteration, as slot indexes (a stack); room
   * for every slot, so marking one dirty never fails. */
  uint32_t *dirty;
  uint32_t ndirty;
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
void dx__conn_free_zombies(dx__sloop *sl);
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
uint32_t dx__sl_nslots(const dx__sloop *sl);
static inline dx_conn *dx__sl_slot(const dx__sloop *sl, uint32_t slot) {
  return dx__slot_conn(
      sl->slot_pages[slot >> DX__SLOT_PAGE_SHIFT][slot & (DX__SLOT_PAGE - 1)]);
}
bool dx__ip_acquire(dx_server *srv, const dx_conn *c);
void dx__ip_release(dx_server *srv, const dx_conn *c);
void dx__log(dx_server *srv, const char *event, const dx_conn *c,
             const char *path, int status, int code, const char *detail);

/* Answers a request deferred with dx_http_defer (loop thread). */
void dx__conn_http_reply(dx_conn *c, int status, const char *content_type,
                         const void *body, size_t len,
                         const char *extra_headers);

#endif
