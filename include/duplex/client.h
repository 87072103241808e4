/*
 * duplex/client.h — a WebSocket client on a dx_loop, shaped like the
 * browser's WebSocket (readyState; open/message/close/error events) plus
 * what browsers leave to the application: reconnection with exponential
 * backoff and full jitter, connect and handshake timeouts.
 *
 *   dx_loop *loop = dx_loop_new(NULL);
 *   dx_client_config cfg = {.url = "wss://example.com/chat",
 *                           .on_message = on_msg};
 *   dx_client *c = dx_client_new(loop, &cfg);
 *   dx_client_connect(c);
 *   dx_loop_run(loop);
 *
 * Every function is LOOP-THREAD ONLY. Handlers run on the loop thread; a
 * handler may call any dx_client_* function, including dx_client_free (the
 * memory is released after the loop iteration). No handler ever runs inside
 * a dx_client_* call: dx_client_connect starts from the loop, so even a
 * connect refused at once is reported by on_error from the loop.
 *
 * Writes are batched: dx_client_send queues the frame and the loop's flush
 * hook (one per connected client) writes everything queued at the end of
 * the iteration, one send(2) per client and iteration. What the socket does
 * not take waits for EPOLLOUT; dx_client_buffered counts it.
 *
 * Events, in order, for one connection: on_open; on_message/on_pong ...;
 * then on_close exactly once (after on_error when it broke). An attempt
 * that fails before opening gives on_error only. Inside on_error and
 * on_close, dx_client_state() tells what follows: CONNECTING when a
 * reconnection is scheduled (on_reconnect comes next), CLOSED when it is
 * final (CLOSING inside the on_error that precedes an on_close).
 */
#ifndef DUPLEX_CLIENT_H
#define DUPLEX_CLIENT_H

#include <duplex/common.h>
#include <duplex/net.h>
#include <duplex/proto.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dx_client dx_client;

/* Why a connection attempt or connection failed (dx_client_error). */
typedef struct dx_client_error {
  int err;           /* DX_ERESOLVE, DX_ECONNREFUSED, DX_ETIMEDOUT, DX_ETLS,
                        DX_EHANDSHAKE, DX_EPROTO, -errno ... */
  int http_status;   /* the server's status when not 101 (redirects
                        included), else 0 */
  const char *message; /* one line for people; valid during the call */
} dx_client_error;

typedef struct dx_client_config {
  const char *url; /* ws://host[:port]/path?query or wss://...; IPv6 as
                      [::1]; copied */
  /* Extra request headers, "Name: value" each, NULL-terminated (copied).
   * Host, Upgrade, Connection, Origin and Sec-WebSocket-* are written by
   * the handshake (use origin/subprotocols/deflate): dx_client_new rejects
   * them (EINVAL), as it rejects a header without a name or with CR/LF. */
  const char *const *headers;
  const char *origin;                 /* NULL: none */
  const char *const *subprotocols;    /* offered, NULL-terminated */
  bool deflate;                       /* offer permessage-deflate */
  size_t max_message;                 /* 0: 16 MiB */

  /* TLS (wss://): the system trust store, unless ca_file; insecure turns
   * verification off entirely. The URL's host is sent in SNI (unless an IP
   * literal) and checked against the certificate; ALPN offers http/1.1. A
   * CA file that cannot be loaded fails every attempt (no reconnection). */
  const char *ca_file;
  bool insecure;

  unsigned connect_timeout_ms;   /* TCP (+ DNS); 0: 10 s */
  unsigned handshake_timeout_ms; /* TLS + HTTP upgrade; 0: 10 s */
  /* After dx_client_close (or the server's close frame), how long to wait
   * for the closing handshake and the server's TCP close before dropping
   * the connection (RFC 6455 7.1.1: the server closes TCP first); 0: 5 s. */
  unsigned close_timeout_ms;
  /* Keepalive: a ping every this many ms while OPEN; when nothing at all
   * (pong or data) arrived by the next one, the connection is considered
   * lost (on_error DX_ETIMEDOUT, on_close 1006, reconnection). 0: off. */
  unsigned ping_interval_ms;

  /* Reconnection after a connection is lost or closed by the server (a
   * 1001 on restart, say), or an attempt fails. Not after a close the
   * application asked for (dx_client_close), nor after a 4xx answer other
   * than 408/429. Delay for attempt n (1-based): a uniformly random value
   * in [0, min(max, base * 2^(n-1))] ("full jitter"), from RAND_bytes. */
  bool reconnect;
  unsigned backoff_base_ms; /* 0: 500 ms */
  unsigned backoff_max_ms;  /* 0: 30 s */
  unsigned max_attempts;    /* consecutive failed attempts; 0: unlimited */
  unsigned stable_ms;       /* open this long resets the attempt count;
                               0: 10 s */

  void (*on_open)(dx_client *c, void *ud);
  /* data valid during the call. */
  void (*on_message)(dx_client *c, dx_opcode op, uint8_t *data, size_t len,
                     void *ud);
  /* The connection ended: code/reason from the close frame, 1006 when it
   * ended without one. was_clean: the closing handshake completed. */
  void (*on_close)(dx_client *c, uint16_t code, const char *reason,
                   size_t len, bool was_clean, void *ud);
  /* An attempt failed, or the connection broke (followed by on_close if it
   * had opened). */
  void (*on_error)(dx_client *c, const dx_client_error *e, void *ud);
  /* A reconnection is scheduled: attempt number and the chosen delay. */
  void (*on_reconnect)(dx_client *c, unsigned attempt, unsigned delay_ms,
                       void *ud);
  void (*on_pong)(dx_client *c, const uint8_t *data, size_t len, void *ud);
  /* A ping arrived (already answered unless manual_pong). */
  void (*on_ping)(dx_client *c, const uint8_t *data, size_t len, void *ud);
  /* Do not answer pings (proxies and fault injection: the peer's keepalive
   * then sees a dead connection). Default: answered by the engine. */
  bool manual_pong;
  /* The socket was full (a write could not complete at once) and the
   * backlog has now been written: dx_client_buffered() is 0 again. Like
   * Node's 'drain': a producer pauses while buffered is high and resumes
   * here. */
  void (*on_drain)(dx_client *c, void *ud);
  void *ud;
} dx_client_config;

/* Creates a client (not connected). cfg is copied (strings too).
 * Returns NULL on ENOMEM or a bad URL (errno EINVAL). */
DX_API dx_client *dx_client_new(dx_loop *loop, const dx_client_config *cfg);

/* Starts connecting (resolve without blocking the loop, TCP, TLS, upgrade),
 * from the next loop iteration. Host names are resolved by getaddrinfo on
 * a short-lived detached thread; IP literals are used directly. Each
 * address is tried in order until one connects. A non-101 answer fails the
 * attempt with http_status set (redirects are reported, not followed).
 * Returns 0, DX_ESTATE (already connecting/open/closing), DX_ENOMEM. */
DX_API int dx_client_connect(dx_client *c);

/* readyState: CONNECTING, OPEN, CLOSING, CLOSED (also while waiting for a
 * reconnection: CONNECTING). */
DX_API dx_ready_state dx_client_state(const dx_client *c);

/* Queue a message (DX_OP_TEXT or DX_OP_BINARY; the data is copied), a ping,
 * or start the closing handshake (code 0: none; a reason needs a code).
 * Returns 0, DX_ESTATE (still connecting), DX_ECLOSED (closing or closed),
 * DX_EUTF8, DX_EINVAL (other opcode, reason over 123 bytes, ping payload
 * over 125), DX_ECLOSECODE, DX_ENOMEM.
 * dx_client_close also cancels reconnection for good (until the next
 * dx_client_connect). While OPEN it sends the close frame and the state
 * becomes CLOSING; on_close follows when the handshake ends (or after
 * close_timeout_ms). Before the connection opened (resolving, connecting,
 * handshaking, waiting to reconnect) it abandons the attempt quietly: the
 * state is CLOSED at once and no handler runs. */
DX_API int dx_client_send(dx_client *c, dx_opcode op, const void *data,
                          size_t len);
DX_API int dx_client_ping(dx_client *c, const void *data, size_t len);
DX_API int dx_client_close(dx_client *c, uint16_t code, const char *reason);

/* Bytes queued and not yet written to the socket. */
DX_API size_t dx_client_buffered(const dx_client *c);

/* The subprotocol the server chose, or NULL; the negotiated extensions
 * ("permessage-deflate; ..."), or "". Valid while OPEN. */
DX_API const char *dx_client_subprotocol(const dx_client *c);
DX_API const char *dx_client_extensions(const dx_client *c);

/* How long each phase of the current (or last) attempt took, in
 * milliseconds; -1 for a phase not reached (tls_ms is -1 for ws://, dns_ms
 * 0 for an IP literal). */
typedef struct dx_client_timings {
  double dns_ms;       /* name resolution */
  double connect_ms;   /* TCP connect */
  double tls_ms;       /* TLS handshake */
  double handshake_ms; /* the HTTP upgrade, to the 101 */
} dx_client_timings;
DX_API void dx_client_timings_get(const dx_client *c, dx_client_timings *out);

/* Frees the client (closing the socket without a handshake if open).
 * NULL-safe; safe inside handlers. */
DX_API void dx_client_free(dx_client *c);

#ifdef __cplusplus
}
#endif
#endif
