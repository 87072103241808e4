/*
 * duplex/proto.h — the sans-I/O WebSocket engine (RFC 6455, RFC 7692).
 *
 * Bytes in, events out, bytes out. The engine never touches a socket, a
 * clock or a thread, and never calls user code: the caller feeds received
 * bytes with dx_ws_feed(), pulls events with dx_ws_next(), and takes the bytes
 * to send with dx_ws_output()/dx_ws_consume().
 *
 *   dx_ws *ws = dx_ws_new(&cfg);                // cfg must outlive ws
 *   ... handshake (dx_ws_server_handshake or dx_ws_client_handshake) ...
 *   dx_ws_feed(ws, buf, n);                     // buf borrowed, see below
 *   dx_ws_event ev;
 *   while ((rc = dx_ws_next(ws, &ev)) > 0) { use ev; }
 *   if (rc < 0 && rc != DX_EAGAIN) { protocol error: flush output, close }
 *   while ((n = dx_ws_output(ws, &p)) > 0) { k = write(fd, p, n); ...
 *                                            dx_ws_consume(ws, k); }
 *
 * Ownership. The buffer given to dx_ws_feed() is borrowed and MODIFIED in
 * place (payloads are unmasked where they lie) until dx_ws_next() returns
 * DX_EAGAIN; only then may the caller reuse it. Whatever belongs to an
 * unfinished frame is copied out by then. An event's data pointer is valid
 * until the next call on the same dx_ws. A message that arrives whole in one
 * dx_ws_feed() buffer is delivered in place, with no allocation and no copy.
 *
 * Thread safety: a dx_ws is used by one thread at a time; distinct dx_ws
 * objects are independent. Configs are read-only and may be shared.
 */
#ifndef DUPLEX_PROTO_H
#define DUPLEX_PROTO_H

#include <stdbool.h>
#include <duplex/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dx_role { DX_ROLE_SERVER = 0, DX_ROLE_CLIENT = 1 } dx_role;

/* The browser's WebSocket.readyState values. */
typedef enum dx_ready_state {
  DX_CONNECTING = 0,
  DX_OPEN = 1,
  DX_CLOSING = 2,
  DX_CLOSED = 3
} dx_ready_state;

typedef enum dx_opcode {
  DX_OP_CONT = 0x0,
  DX_OP_TEXT = 0x1,
  DX_OP_BINARY = 0x2,
  DX_OP_CLOSE = 0x8,
  DX_OP_PING = 0x9,
  DX_OP_PONG = 0xA
} dx_opcode;

/* Close status codes (RFC 6455 section 7.4.1, IANA registry). */
enum {
  DX_CLOSE_NORMAL = 1000,
  DX_CLOSE_GOING_AWAY = 1001,
  DX_CLOSE_PROTOCOL_ERROR = 1002,
  DX_CLOSE_UNSUPPORTED = 1003,
  DX_CLOSE_NO_STATUS = 1005,   /* never on the wire */
  DX_CLOSE_ABNORMAL = 1006,    /* never on the wire */
  DX_CLOSE_INVALID_DATA = 1007,
  DX_CLOSE_POLICY = 1008,
  DX_CLOSE_TOO_BIG = 1009,
  DX_CLOSE_MANDATORY_EXT = 1010,
  DX_CLOSE_INTERNAL_ERROR = 1011,
  DX_CLOSE_SERVICE_RESTART = 1012,
  DX_CLOSE_TRY_AGAIN_LATER = 1013,
  DX_CLOSE_BAD_GATEWAY = 1014
};

#define DX_DEFAULT_MAX_MESSAGE ((size_t)16 << 20)
#define DX_DEFAULT_COMPRESS_MIN 64

/*
 * permessage-deflate (RFC 7692). As a wish list (what this endpoint offers or
 * accepts) and as the negotiated result. Window bits are 8..15; 0 means 15.
 * The zero value means "disabled".
 */
typedef struct dx_pmd {
  bool enabled;
  bool server_no_context_takeover;
  bool client_no_context_takeover;
  uint8_t server_max_window_bits;
  uint8_t client_max_window_bits;
} dx_pmd;

/* Engine flags (dx_ws_config.flags). */
enum {
  /* Do not answer pings; the PING event is delivered and the caller sends
   * the pong with dx_ws_pong(). (By default pongs are queued automatically
   * and the PING event is still delivered, for observation.) */
  DX_WS_NO_AUTO_PONG = 1u << 0,
  /* Do not validate UTF-8 of outgoing text (the caller guarantees it). */
  DX_WS_TRUST_OUTGOING_TEXT = 1u << 1
};

/*
 * Engine configuration. The zero value is a server with sensible defaults.
 * The engine keeps a pointer to it: it must outlive every dx_ws made from it
 * and must not change while they live (one config may serve many engines).
 */
typedef struct dx_ws_config {
  dx_role role;
  unsigned flags;
  /* Largest payload of a single frame on the wire; 0 means no limit of its
   * own (max_message bounds memory either way). */
  size_t max_frame;
  /* Largest message, counted after decompression; 0 means
   * DX_DEFAULT_MAX_MESSAGE (16 MiB). Exceeding it closes with 1009 before
   * any allocation for the excess. */
  size_t max_message;
  /* Messages shorter than this are sent uncompressed even when
   * permessage-deflate is on; 0 means DX_DEFAULT_COMPRESS_MIN (64). */
  size_t compress_min;
  /* zlib level 1..9; 0 means 1 (fast: real-time traffic favours latency). */
  int compress_level;
  /* zlib memLevel 1..9; 0 means 8. */
  int compress_mem_level;
  dx_allocator alloc;
} dx_ws_config;

typedef struct dx_ws dx_ws;

/* Creates an engine in state CONNECTING (dx_ws_open() or a handshake call
 * moves it to OPEN). Returns NULL when out of memory. */
DX_API dx_ws *dx_ws_new(const dx_ws_config *cfg);

/* Frees the engine and everything it owns. dx_ws_free(NULL) does nothing. */
DX_API void dx_ws_free(dx_ws *ws);

/*
 * Embedding, for runtimes that keep the engine inside their own per-
 * connection allocation (one block instead of two): reserve dx_ws_sizeof()
 * bytes aligned to 8 (pointer alignment is enough), dx_ws_init() them
 * instead of dx_ws_new(), and dx_ws_cleanup() instead of dx_ws_free() (it
 * frees what the engine owns, not the block). cfg must outlive the engine, as for dx_ws_new().
 */
DX_API size_t dx_ws_sizeof(void);
DX_API void dx_ws_init(dx_ws *ws, const dx_ws_config *cfg);
DX_API void dx_ws_cleanup(dx_ws *ws);

/* Moves a CONNECTING engine to OPEN with the given negotiated compression
 * (NULL: none), for callers that did the HTTP handshake themselves.
 * Returns 0, DX_ESTATE when not CONNECTING, DX_EINVAL on bad parameters. */
DX_API int dx_ws_open(dx_ws *ws, const dx_pmd *pmd);

DX_API dx_ready_state dx_ws_state(const dx_ws *ws);
DX_API dx_role dx_ws_role(const dx_ws *ws);

/* The negotiated permessage-deflate parameters (enabled == false if none). */
DX_API dx_pmd dx_ws_pmd(const dx_ws *ws);

/* ------------------------------------------------------------------------ */
/* Input and events                                                         */

typedef enum dx_ws_event_type {
  DX_EV_TEXT = 1,   /* a whole text message, valid UTF-8 */
  DX_EV_BINARY = 2, /* a whole binary message */
  DX_EV_PING = 3,   /* payload of a ping (already answered unless
                       DX_WS_NO_AUTO_PONG) */
  DX_EV_PONG = 4,   /* payload of a pong */
  DX_EV_CLOSE = 5   /* the peer's close frame: code and reason */
} dx_ws_event_type;

typedef struct dx_ws_event {
  dx_ws_event_type type;
  /* Payload (for DX_EV_CLOSE the reason, not NUL-terminated). Valid until
   * the next call on the engine; writable, the caller may modify it. */
  uint8_t *data;
  size_t len;
  /* DX_EV_CLOSE: the code received, or DX_CLOSE_NO_STATUS (1005). */
  uint16_t close_code;
} dx_ws_event;

/*
 * Hands received bytes to the engine. The buffer is borrowed, and modified in
 * place, until dx_ws_next() returns DX_EAGAIN. Call dx_ws_next() until then
 * before the next dx_ws_feed().
 * Returns 0; DX_ESTATE when the previous input is not fully consumed yet.
 * Bytes fed after the closing handshake completed are ignored.
 */
DX_API int dx_ws_feed(dx_ws *ws, uint8_t *data, size_t len);

/*
 * Parses the next event from the input.
 * Returns 1 and fills *ev; DX_EAGAIN when all input is consumed (the
 * buffer is released); or a fatal error, after which the engine has queued
 * the close frame that reports it (take it with dx_ws_output) and ignores
 * further input:
 *   DX_EPROTO   protocol violation (close 1002)
 *   DX_EUTF8    invalid UTF-8 in text or close reason (close 1007)
 *   DX_EDEFLATE corrupt compressed data (close 1007)
 *   DX_ETOOBIG  frame or message past the limits (close 1009)
 *   DX_ENOMEM   allocation failed (close 1011)
 * dx_ws_next() keeps returning the same error afterwards.
 */
DX_API int dx_ws_next(dx_ws *ws, dx_ws_event *ev);

/* The close code the engine sends for an error from dx_ws_next(), or 0. */
DX_API uint16_t dx_ws_error_close_code(int err);

/* ------------------------------------------------------------------------ */
/* Output                                                                   */

/*
 * Queues a whole message (DX_OP_TEXT or DX_OP_BINARY), compressed when
 * permessage-deflate is on and len >= compress_min. Text must be valid UTF-8
 * (checked unless DX_WS_TRUST_OUTGOING_TEXT). The data is copied.
 * Returns 0; DX_ECLOSED after a close was sent; DX_ESTATE while CONNECTING
 * or in the middle of a fragmented send; DX_EUTF8; DX_EINVAL for another
 * opcode; DX_ENOMEM.
 */
DX_API int dx_ws_send(dx_ws *ws, dx_opcode op, const void *data, size_t len);

/*
 * Queues one fragment of a message: the first with DX_OP_TEXT/BINARY, the
 * rest with DX_OP_CONT; fin marks the last. Fragmented messages are sent
 * uncompressed. Control frames may be sent between fragments.
 * Returns as dx_ws_send(), plus DX_ESTATE for a fragment out of sequence.
 */
DX_API int dx_ws_send_fragment(dx_ws *ws, dx_opcode op, const void *data,
                               size_t len, bool fin);

/* Queues a ping or pong; payload at most 125 bytes (DX_EINVAL otherwise).
 * Returns 0, DX_ECLOSED, DX_ESTATE (CONNECTING), DX_EINVAL, DX_ENOMEM. */
DX_API int dx_ws_ping(dx_ws *ws, const void *data, size_t len);
DX_API int dx_ws_pong(dx_ws *ws, const void *data, size_t len);

/*
 * Starts the closing handshake: queues a close frame with code (0: no code
 * at all) and a UTF-8 reason (at most 123 bytes) and moves to CLOSING; the
 * state becomes CLOSED when the peer's close arrives. Closing after a close
 * was already sent does nothing and returns 0.
 * Returns 0; DX_ECLOSECODE for a code that may not be sent; DX_EINVAL for a
 * reason too long; DX_EUTF8; DX_ENOMEM.
 */
DX_API int dx_ws_close(dx_ws *ws, uint16_t code, const char *reason,
                       size_t len);

/* Bytes waiting to be sent: *out points at them, valid until the next call
 * on the engine. Returns their count (0: nothing to send). */
DX_API size_t dx_ws_output(dx_ws *ws, const uint8_t **out);

/* Marks n bytes of the output as sent (n <= what dx_ws_output returned). */
DX_API void dx_ws_consume(dx_ws *ws, size_t n);

/* Gives back the output buffer if it is drained. The engine keeps a small
 * drained buffer for the next message (no allocation per message); a
 * runtime calls this for connections that went quiet, so an idle
 * connection holds no buffer. */
DX_API void dx_ws_trim(dx_ws *ws);

/* Bytes queued and not yet consumed (the buffered amount). At most
 * 4 GiB - 1 are queued per engine: a send, ping, close or raw frame that
 * would pass that returns DX_ENOMEM. */
DX_API size_t dx_ws_buffered(const dx_ws *ws);

/*
 * Appends bytes that are already a complete WebSocket frame (for example a
 * broadcast framed once with dx_frame_header) to the output, in order with
 * everything else. Returns 0, DX_ECLOSED, DX_ESTATE, DX_ENOMEM.
 */
DX_API int dx_ws_send_raw(dx_ws *ws, const void *frame, size_t len);

/* ------------------------------------------------------------------------ */
/* Stateless helpers                                                        */

/* Writes a frame header into out (room for 14 bytes) and returns its length.
 * mask is NULL for unmasked (server) frames. */
DX_API size_t dx_frame_header(uint8_t out[14], dx_opcode op, bool fin,
                              bool rsv1, uint64_t len, const uint8_t *mask);

/* XORs data with the 4-byte mask starting at mask offset `offset` (0..3).
 * Word-at-a-time; returns the offset to continue with. */
DX_API size_t dx_mask(uint8_t *data, size_t len, const uint8_t mask[4],
                      size_t offset);

/* True when the whole buffer is valid UTF-8 (RFC 3629). */
DX_API bool dx_utf8_valid(const uint8_t *data, size_t len);

/* Incremental UTF-8 validation: *state starts at 0 and carries an
 * unfinished code point between calls. Returns false as soon as the bytes
 * seen so far cannot start valid UTF-8 (fail fast). At the end of a message
 * the text is valid only if *state is back to 0. */
DX_API bool dx_utf8_feed(uint32_t *state, const uint8_t *data, size_t len);

/* True for a close code that may appear in a close frame (RFC 6455 7.4). */
DX_API bool dx_close_code_valid(unsigned code);

/* ------------------------------------------------------------------------ */
/* HTTP heads (zero-copy; every pointer points into the caller's buffer)    */

typedef struct dx_header {
  const char *name;
  size_t name_len;
  const char *value; /* without leading/trailing whitespace */
  size_t value_len;
} dx_header;

typedef struct dx_http_request {
  const char *method;
  size_t method_len;
  const char *target;
  size_t target_len;
  int version_minor; /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
  dx_header *headers; /* in: array of num_headers entries; out: filled */
  size_t num_headers; /* in: capacity; out: count */
} dx_http_request;

typedef struct dx_http_response {
  int version_minor;
  int status;
  const char *reason;
  size_t reason_len;
  dx_header *headers; /* in: array of num_headers entries; out: filled */
  size_t num_headers; /* in: capacity; out: count */
} dx_http_response;

/* Limits for the head parsers; 0 means the default. */
typedef struct dx_http_limits {
  size_t max_line; /* request/status line and each header line: 8 KiB */
  size_t max_head; /* whole head including the blank line: 16 KiB */
} dx_http_limits;

/*
 * Parses an HTTP/1.x request head from buf. Strict: CRLF line ends (a bare
 * LF is rejected), no obs-fold, token characters in method and field names,
 * no whitespace before the colon, no control characters in values.
 * Returns the head length (> 0) when complete; DX_EAGAIN when more bytes are
 * needed; DX_EHTTP malformed (400); DX_EHDRSIZE a line or the head is past
 * the limit (431); DX_EHDRCOUNT more headers than req->num_headers (431).
 * lim may be NULL.
 */
DX_API int dx_http_parse_request(const char *buf, size_t len,
                                 dx_http_request *req,
                                 const dx_http_limits *lim);

/* The same for a response head ("HTTP/1.1 101 Switching Protocols"). */
DX_API int dx_http_parse_response(const char *buf, size_t len,
                                  dx_http_response *resp,
                                  const dx_http_limits *lim);

/* The reason phrase of a status ("Not Found"), or "" for an unknown one. */
DX_API const char *dx_http_status_text(int status);

/* The first header with this name (case-insensitive), or NULL. */
DX_API const dx_header *dx_http_header(const dx_header *headers, size_t n,
                                       const char *name);

/* True when the comma-separated list value contains token (case-insensitive,
 * optional whitespace around elements). */
DX_API bool dx_http_list_has(const char *value, size_t len, const char *token);

/* ------------------------------------------------------------------------ */
/* Handshake                                                                */

/* Computes Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)).
 * out gets 28 characters and a NUL. Returns 0 or DX_EINVAL. */
DX_API int dx_ws_accept_key(const char *key, size_t len, char out[29]);

/* What a server endpoint accepts. The zero value accepts plain WebSocket
 * with no subprotocol and no compression. */
typedef struct dx_ws_accept_policy {
  /* NULL-terminated list in the server's order of preference; the first one
   * the client also offered is chosen. NULL: none. */
  const char *const *subprotocols;
  /* Fail with 400 when no subprotocol is agreed (none offered, or none
   * matches); default: accept without one, as RFC 6455 allows. */
  bool require_subprotocol;
  /* permessage-deflate limits the server accepts (enabled == false: never
   * negotiate). server_no_context_takeover/client_no_context_takeover true
   * means the server demands them; window bits are the largest the server
   * will use for its own compressor. */
  dx_pmd deflate;
  /* Extra header lines for the 101 response, each ending in "\r\n". */
  const char *extra_headers;
} dx_ws_accept_policy;

/* Outcome of a handshake. */
typedef struct dx_ws_handshake {
  int status;              /* 101 on success, else the HTTP status sent */
  const char *subprotocol; /* chosen (points into policy or the offer
                              list kept by the engine), or NULL */
  dx_pmd pmd;              /* negotiated compression */
  const char *reason;      /* static text explaining a failure, or NULL */
} dx_ws_handshake;

/*
 * Server side. Validates an upgrade request (GET, HTTP/1.1, Host, Upgrade:
 * websocket, Connection: upgrade, a 16-byte base64 Sec-WebSocket-Key,
 * Sec-WebSocket-Version: 13), negotiates subprotocol and permessage-deflate,
 * queues the 101 response in the output and moves the engine to OPEN.
 * On failure queues an error response (400; 405 for a method other than GET;
 * 426 with "Sec-WebSocket-Version: 13" for another version) and moves the
 * engine to CLOSED: flush the output, then close the connection.
 * Returns 0; DX_EHANDSHAKE (details in *out); DX_ESTATE when not a
 * CONNECTING server engine; DX_EINVAL for malformed policy extra_headers;
 * DX_ENOMEM. out may be NULL.
 */
DX_API int dx_ws_server_handshake(dx_ws *ws, const dx_http_request *req,
                                  const dx_ws_accept_policy *policy,
                                  dx_ws_handshake *out);

/*
 * Queues a plain HTTP error response (for rejections decided by the caller:
 * 401, 403, 429, 503 ...) with optional extra header lines and a text body,
 * and moves a CONNECTING engine to CLOSED.
 * Returns 0, DX_ESTATE, DX_EINVAL (status outside 400..599), DX_ENOMEM.
 */
DX_API int dx_ws_reject(dx_ws *ws, int status, const char *extra_headers,
                        const char *body);

/* What a client offers. */
typedef struct dx_ws_client_options {
  const char *host;   /* Host header value ("example.com:8080"); required */
  const char *target; /* request target, "/" when NULL ("/chat?x=1") */
  const char *origin; /* NULL: no Origin header */
  const char *const *subprotocols; /* NULL-terminated offer, or NULL */
  dx_pmd deflate;     /* offer permessage-deflate when enabled */
  const char *extra_headers; /* lines ending in "\r\n" (Authorization...) */
} dx_ws_client_options;

/*
 * Client side, step 1: queues the upgrade request (with a fresh random
 * Sec-WebSocket-Key) in the output and remembers what was offered.
 * Returns 0; DX_EINVAL (no host, or a header value with CR/LF); DX_ESTATE;
 * DX_ENOMEM.
 */
DX_API int dx_ws_client_handshake(dx_ws *ws, const dx_ws_client_options *opt);

/*
 * Client side, step 2: validates the server's response head: status 101,
 * Upgrade/Connection, Sec-WebSocket-Accept matching the key, a subprotocol
 * and extensions only among those offered. Moves the engine to OPEN, or to
 * CLOSED on failure.
 * Returns 0; DX_EHANDSHAKE (out->status carries the HTTP status, and
 * out->reason the cause); DX_EEXTENSION for an extension response that was
 * not offered or is malformed; DX_ESTATE.
 */
DX_API int dx_ws_client_response(dx_ws *ws, const dx_http_response *resp,
                                 dx_ws_handshake *out);

#ifdef __cplusplus
}
#endif
#endif
