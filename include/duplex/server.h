/*
 * duplex/server.h — a WebSocket + HTTP server on N event loops.
 *
 *   dx_server_config cfg = {.port = 8080, .static_root = "web"};
 *   dx_server *srv = dx_server_new(&cfg);
 *   dx_route route = {.path = "/echo", .on_message = echo};
 *   dx_server_route(srv, &route);
 *   dx_server_run(srv);             // until SIGINT/SIGTERM or shutdown
 *   dx_server_free(srv);
 *
 * Threads: dx_server_run() runs loop 0 on the calling thread and loops
 * 1..N-1 on threads of its own; each loop has its own SO_REUSEPORT listener
 * and owns the connections it accepted. Handlers run on the loop that owns
 * the connection. Every dx_conn_* function is LOOP-THREAD ONLY (call it from
 * a handler of that connection or of another connection on the same loop).
 * From any other thread use the THREAD-SAFE dx_server_send/close, which post
 * to the owning loop by connection id.
 *
 * Defaults (the zero value of every field) are listed beside each field and
 * in the README.
 */
#ifndef DUPLEX_SERVER_H
#define DUPLEX_SERVER_H

#include <duplex/common.h>
#include <duplex/proto.h>
#include <duplex/tls.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dx_server dx_server;
typedef struct dx_conn dx_conn;

/* What an accept hook sees of the upgrade request. Pointers are valid
 * during the call only. */
typedef struct dx_upgrade_request {
  const char *path; /* decoded path, NUL-terminated */
  const char *query; /* raw query without '?', NUL-terminated ("" if none) */
  const dx_header *headers;
  size_t num_headers;
  const char *peer; /* "127.0.0.1" or "::1" */
  const char *origin; /* NULL if absent */
} dx_upgrade_request;

typedef struct dx_route {
  const char *path; /* exact path, e.g. "/echo" (copied) */
  /* Accept hook, before the upgrade: 0 accepts; an HTTP status (401, 403,
   * 429 ...) rejects. c is not open yet: the hook may fill dx_conn_user(c)
   * (zeroed) and read dx_conn_id/dx_conn_peer, nothing else. NULL: accept. */
  int (*on_accept)(dx_conn *c, const dx_upgrade_request *req,
                   void *route_ud);
  void (*on_open)(dx_conn *c, void *route_ud);
  /* data is valid during the call only (it lies in the loop's buffer). */
  void (*on_message)(dx_conn *c, dx_opcode op, uint8_t *data, size_t len,
                     void *route_ud);
  /* Called once per opened connection, and once for a connection the
   * accept hook let through whose handshake then failed: code 1006 when it
   * ended without a close frame. After it returns the connection is gone. */
  void (*on_close)(dx_conn *c, uint16_t code, const char *reason, size_t len,
                   void *route_ud);
  /* The buffered amount fell below the low watermark after being above the
   * high one (backpressure released). */
  void (*on_drain)(dx_conn *c, void *route_ud);
  /* A ping arrived (already answered unless manual_pong). */
  void (*on_ping)(dx_conn *c, const uint8_t *data, size_t len,
                  void *route_ud);
  void *ud;
  /* Policy. */
  const char *const *subprotocols; /* server preference order, NULL-term. */
  /* Allowed Origin values ("https://example.com"); NULL: any. A request
   * whose Origin is not listed gets 403 before the upgrade. Requests with
   * no Origin (non-browser clients) are allowed. */
  const char *const *origins;
  bool deflate;        /* negotiate permessage-deflate */
  size_t max_message;  /* 0: the server's max_message */
  size_t max_connections; /* on this route; 0: unlimited. Over: 503 */
  size_t user_size;    /* bytes of per-connection user data (dx_conn_user) */
  /* Do not answer pings (proxies and fault injection). Default: the
   * engine answers each with a pong carrying the same payload. */
  bool manual_pong;
} dx_route;

/* A log record; the server calls cfg.log for connection events. */
typedef struct dx_log_record {
  const char *event;  /* "open", "close", "reject", "http", "error" ... */
  uint64_t conn;      /* connection id, 0 if none */
  const char *peer;   /* may be NULL */
  const char *path;   /* may be NULL */
  int status;         /* HTTP status or 0 */
  int code;           /* close code or 0 */
  const char *detail; /* a reason, may be NULL */
} dx_log_record;

typedef struct dx_server_stats {
  uint64_t connections;      /* open now (WebSocket + HTTP) */
  uint64_t websockets;       /* open WebSocket connections now */
  uint64_t accepted;         /* total accepted TCP connections */
  uint64_t messages_in, messages_out;
  uint64_t bytes_in, bytes_out;
  uint64_t http_requests;
  uint64_t rejected_origin, rejected_quota, rejected_auth, rejected_http;
  uint64_t closed_slow;      /* closed for passing the output hard limit */
  uint64_t closed_ping;      /* closed for not answering pings */
  uint64_t closed_handshake_timeout;
  uint64_t protocol_errors;
  /* Accept-to-101 latency (TLS included), a cumulative-friendly histogram:
   * handshake_le[i] counts handshakes that took <= DX_HANDSHAKE_BUCKETS_MS[i]
   * milliseconds (and more than the bucket before); the last bucket is
   * everything slower. */
  uint64_t handshake_le[12];
  uint64_t handshake_ms_sum;
} dx_server_stats;

/* Upper bounds (ms) of the handshake latency buckets; the last is +Inf. */
#define DX_HANDSHAKE_BUCKETS_MS                                                \
  {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 0}

typedef struct dx_server_config {
  const char *host;   /* NULL/"": all addresses, IPv6 + IPv4 */
  int port;           /* 0: pick a free one (see dx_server_port) */
  int threads;        /* 0: one per online core */
  const char *static_root; /* NULL: no static files */

  /* TLS: PEM certificate (chain allowed, leaf first) and key files. When
   * set, every connection is https:// / wss:// (TLS 1.2 and 1.3). */
  const char *tls_cert;
  const char *tls_key;
  /* More certificates for other host names, chosen by the client's SNI
   * (dx_tls_ctx_config.sni_certs says how); tls_cert stays the default
   * for no SNI or an unknown name. Read at dx_server_start and on every
   * reload: the array and its strings must outlive the server. */
  const dx_tls_cert *tls_sni_certs;
  size_t tls_nsni_certs;

  size_t max_message;      /* 0: 16 MiB (after decompression) */
  size_t max_connections;  /* whole server; 0: unlimited. Over: 503 */
  size_t max_per_ip;       /* WebSocket connections per client IP;
                              0: unlimited. Over: 429 */

  size_t max_header_line;  /* 0: 8 KiB, then 431 */
  size_t max_head;         /* 0: 16 KiB, then 431 */
  size_t max_headers;      /* 0: 100, then 431 */

  unsigned handshake_timeout_ms; /* from accept to the 101; 0: 10 s */
  unsigned ping_interval_ms;     /* 0: 25 s; (unsigned)-1: never ping */
  unsigned pong_timeout_ms;      /* grace for the pong; 0: 20 s */
  unsigned idle_timeout_ms;      /* no input at all; 0: off */
  unsigned close_timeout_ms;     /* closing handshake; 0: 5 s */
  unsigned http_idle_ms;         /* keep-alive HTTP idle; 0: 30 s */

  size_t write_low;    /* drain when buffered falls below; 0: 64 KiB */
  size_t write_high;   /* soft limit (backpressure on); 0: 256 KiB */
  size_t write_hard;   /* close 1008 past this; 0: 1 MiB */
  unsigned write_stall_ms; /* close 1008 when nothing drains; 0: 10 s */

  /* Memory all permessage-deflate streams may claim, counted at the worst
   * case per connection (about 300 KiB with 15-bit windows); past it, new
   * connections are accepted without compression. 0: 256 MiB. */
  size_t deflate_budget;

  uint16_t shutdown_code; /* close code on shutdown; 0: 1001 */
  const char *shutdown_reason; /* its reason; NULL: "server shutting down" */
  size_t max_body;        /* HTTP request body for HTTP routes; 0: 1 MiB */
  bool handle_signals;    /* SIGINT/SIGTERM → graceful shutdown; SIGHUP →
                             reload the TLS certificates and keys (without
                             TLS it is logged and ignored) */

  /* Load balancers in front. The client address (per-IP quota, accept
   * hook and HTTP route peer, dx_conn_peer, logs) is the TCP peer unless
   * that peer is one of these networks: CIDR strings ("10.0.0.0/8",
   * "::1/128", or one address "127.0.0.1"), NULL-terminated, read by
   * dx_server_start (a bad one: DX_EINVAL, dx_server_error says which).
   * From a trusted peer, X-Forwarded-For is walked right to left past
   * trusted addresses (dx_http_forwarded_for in duplex/http.h); from
   * anyone else it is ignored. NULL: trust no one. */
  const char *const *trusted_proxies;
  /* PROXY protocol (v1 and v2) on accepted connections, before TLS/HTTP.
   * A trusted peer must send a valid header (else the connection is
   * closed); its source address becomes the peer (LOCAL, UNKNOWN: the
   * socket's address stays), and X-Forwarded-For is then judged from it.
   * An untrusted peer may connect without one (direct clients); if it
   * sends one, the connection is closed without an answer and logged,
   * never believed. Needs trusted_proxies. false: no PROXY protocol. */
  bool proxy_protocol;

  void (*log)(void *ud, const dx_log_record *rec); /* NULL: silent */
  void *log_ud;
} dx_server_config;

/* Creates a server (nothing is bound yet). cfg is copied. NULL on ENOMEM
 * or a bad static_root (errno set). */
DX_API dx_server *dx_server_new(const dx_server_config *cfg);

/* Adds a WebSocket route before dx_server_start. The struct is copied;
 * the pointers in it (subprotocols, origins, ud) must outlive the server.
 * Returns 0, DX_EINVAL (no path, a duplicate, more than 254 subprotocols,
 * or more than 65535 routes), DX_ESTATE (running), DX_ENOMEM. */
DX_API int dx_server_route(dx_server *srv, const dx_route *route);

/* Binds the listeners (one per loop) and prepares the loops.
 * Returns 0 or -errno (EADDRINUSE ...). */
DX_API int dx_server_start(dx_server *srv);

/* Why dx_server_start (or dx_server_reload_tls) failed, one line; "" if
 * it did not. */
DX_API const char *dx_server_error(const dx_server *srv);

/* Loads tls_cert/tls_key and every SNI certificate again (after a
 * renewal): all of them or, if one fails, none. New connections use the
 * new certificate; open ones keep theirs. On failure the old one stays.
 * THREAD-SAFE. Returns 0, DX_ETLS (see dx_server_error), DX_ESTATE (no
 * TLS configured). */
DX_API int dx_server_reload_tls(dx_server *srv);

/* The bound port (after dx_server_start). */
DX_API int dx_server_port(const dx_server *srv);

/* Runs the loops until shutdown completes (starts first if needed).
 * Returns 0 after a graceful shutdown, or -errno. */
DX_API int dx_server_run(dx_server *srv);

/* Begins a graceful shutdown: stop accepting, close every WebSocket with
 * the shutdown code, wait for the closing handshakes up to timeout_ms
 * (0: close_timeout_ms), then dx_server_run returns. THREAD-SAFE and
 * async-signal-safe. */
DX_API void dx_server_shutdown(dx_server *srv, unsigned timeout_ms);

/* Frees a stopped server. dx_server_free(NULL) does nothing. */
DX_API void dx_server_free(dx_server *srv);

/* A snapshot of the counters (summed over loops). THREAD-SAFE. */
DX_API void dx_server_stats_get(const dx_server *srv, dx_server_stats *out);

/* THREAD-SAFE: sends a message to connection id (copied, posted to its
 * loop). Returns 0, DX_ENOMEM, DX_EINVAL (bad id). A connection that is gone
 * by the time the work runs is skipped silently. */
DX_API int dx_server_send(dx_server *srv, uint64_t id, dx_opcode op,
                          const void *data, size_t len);
/* THREAD-SAFE: starts closing connection id. */
DX_API int dx_server_close(dx_server *srv, uint64_t id, uint16_t code,
                           const char *reason);

/* ---- HTTP routes ------------------------------------------------------------ */

/* One HTTP request to an HTTP route; valid during the handler only. */
typedef struct dx_http_exchange dx_http_exchange;

typedef struct dx_http_view {
  const char *method;  /* "GET", "POST" ... NUL-terminated */
  const char *path;    /* decoded, NUL-terminated */
  const char *query;   /* raw, without '?', "" if none */
  const dx_header *headers;
  size_t num_headers;
  const char *peer;
  const uint8_t *body; /* Content-Length bytes (bounded by max_body) */
  size_t body_len;
} dx_http_view;

typedef void (*dx_http_handler)(dx_http_exchange *x, const dx_http_view *req,
                                void *ud);

/* Routes requests for an exact path to handler (any method; the handler
 * answers 405 itself). Runs on the connection's loop. Bodies need a
 * Content-Length (411 otherwise), at most max_body (413). A WebSocket route
 * on the same path takes upgrade requests; this one the rest.
 * Before dx_server_start. Returns 0, DX_EINVAL (duplicate), DX_ESTATE,
 * DX_ENOMEM. */
DX_API int dx_server_http(dx_server *srv, const char *path,
                          dx_http_handler handler, void *ud);

/* Answers the request (once; later calls return DX_ESTATE). extra_headers
 * are lines ending in "\r\n". A handler that does not answer gets 500.
 * Returns 0, DX_ESTATE, DX_EINVAL (bad status or header injection),
 * DX_ENOMEM. */
DX_API int dx_http_respond(dx_http_exchange *x, int status,
                           const char *content_type, const void *body,
                           size_t len, const char *extra_headers);

/*
 * Answers later: for a handler whose answer comes from elsewhere (another
 * thread, a backend). Returns a token for dx_server_http_reply (never 0),
 * or 0 when x was answered already. Until the reply, the connection reads
 * no further request (pipelined ones wait); a reply that does not come
 * within the write stall timeout (write_stall_ms) closes the connection.
 */
DX_API uint64_t dx_http_defer(dx_http_exchange *x);

/* THREAD-SAFE: answers a deferred request (arguments as dx_http_respond,
 * copied). Returns 0, DX_EINVAL (bad token), DX_ENOMEM. A connection that
 * is gone by then is skipped silently. */
DX_API int dx_server_http_reply(dx_server *srv, uint64_t token, int status,
                                const char *content_type, const void *body,
                                size_t len, const char *extra_headers);

/* ---- loops ------------------------------------------------------------------ */

DX_API int dx_server_loop_count(const dx_server *srv);
/* THREAD-SAFE: runs fn(arg) on loop `index` (0..count-1). 0, DX_EINVAL,
 * DX_ENOMEM. */
DX_API int dx_server_post(dx_server *srv, int index, void (*fn)(void *),
                          void *arg);
/* The loop that owns the connection. */
DX_API int dx_conn_loop(const dx_conn *c);

/* ---- connections (loop-thread only) -------------------------------------- */

/* Queues a message; written at the end of the loop iteration.
 * Returns 0, DX_ECLOSED, DX_EUTF8 (invalid text), DX_ENOMEM. */
DX_API int dx_conn_send(dx_conn *c, dx_opcode op, const void *data,
                        size_t len);
/* Queues bytes that are already one or more complete server frames (a
 * broadcast framed once for every subscriber, dx_frame_header). Same
 * limits and returns as dx_conn_send. */
DX_API int dx_conn_send_frame(dx_conn *c, const void *frame, size_t len);
DX_API int dx_conn_ping(dx_conn *c, const void *data, size_t len);
/* Starts the closing handshake (code 0: no code). */
DX_API int dx_conn_close(dx_conn *c, uint16_t code, const char *reason);
DX_API size_t dx_conn_buffered(const dx_conn *c);
/* Writes what is queued now instead of at the end of the loop turn (for a
 * burst, such as a replay, that would otherwise pile up). Returns the
 * buffered amount left; 0 after a failure (the connection is then closed). */
DX_API size_t dx_conn_flush(dx_conn *c);
/* Asks for on_drain once the buffered amount is at or below the low
 * watermark, even if it never passed the high one (for an application that
 * holds messages back on its own). */
DX_API void dx_conn_want_drain(dx_conn *c);
DX_API void *dx_conn_user(dx_conn *c);
DX_API uint64_t dx_conn_id(const dx_conn *c);
DX_API const char *dx_conn_peer(const dx_conn *c); /* "127.0.0.1" */
DX_API const char *dx_conn_subprotocol(const dx_conn *c); /* or NULL */
DX_API dx_server *dx_conn_server(const dx_conn *c);

#ifdef __cplusplus
}
#endif
#endif
