/*
 * Internal to proto: the engine's layout, growable buffers and the seams
 * between ws.c (frames), pmd.c (permessage-deflate) and handshake.c.
 * Nothing here is installed; names are dx__ (internal) per STYLE.md.
 */
#ifndef DX_PROTO_INTERNAL_H
#define DX_PROTO_INTERNAL_H

#include <duplex/proto.h>
#include <string.h>

/* ---- allocation through the configured allocator ---------------------- */

void *dx__realloc(const dx_allocator *a, void *p, size_t old, size_t new_size);
static inline void *dx__alloc(const dx_allocator *a, size_t n) {
  return dx__realloc(a, NULL, 0, n);
}
static inline void dx__free(const dx_allocator *a, void *p, size_t n) {
  if (p) dx__realloc(a, p, n, 0);
}

/* A growable byte buffer. Bytes [off, len) are live; off lets the output
 * side consume from the front without memmove on every write. */
typedef struct dx__buf {
  uint8_t *data;
  size_t len;
  size_t cap;
  size_t off;
} dx__buf;

/* Makes room for `more` bytes after len, growing geometrically; compacts
 * consumed bytes first. Returns 0, DX_ENOMEM, or DX_ETOOBIG on overflow. */
int dx__buf_reserve(dx__buf *b, const dx_allocator *a, size_t more);
int dx__buf_append(dx__buf *b, const dx_allocator *a, const void *p, size_t n);
void dx__buf_free(dx__buf *b, const dx_allocator *a);

/* ---- permessage-deflate (pmd.c) -------------------------------------- */

/* Negotiation. Parameter names and rules: RFC 7692 sections 7.1.1-7.1.2. */

/* Server: scans every Sec-WebSocket-Extensions header for a
 * permessage-deflate offer acceptable under `policy` (the first acceptable
 * offer wins; malformed offers, unknown or duplicate parameters and bad
 * values are declined, not fatal). Returns true and fills *out when one is
 * accepted. */
bool dx__pmd_negotiate(const dx_header *headers, size_t n,
                       const dx_pmd *policy, dx_pmd *out);

/* Server: the response element for the negotiated parameters
 * ("permessage-deflate; server_no_context_takeover; ..."). Returns its
 * length, or 0 if cap is too small. NUL-terminated. */
size_t dx__pmd_format_response(const dx_pmd *p, char *out, size_t cap);

/* Client: the offer for `offer` (client_max_window_bits is always offered,
 * without a value when offer->client_max_window_bits is 0). */
size_t dx__pmd_format_offer(const dx_pmd *offer, char *out, size_t cap);

/* Client: validates the server's Sec-WebSocket-Extensions against what was
 * offered. No extension header: *out disabled, returns 0. Returns 0 or
 * DX_EEXTENSION (unknown extension, parameter not allowed by the offer,
 * malformed or duplicate parameter). */
int dx__pmd_client_accept(const dx_header *headers, size_t n,
                          const dx_pmd *offer, dx_pmd *out);

/* Streams. Created lazily at the first compressed message. */
typedef struct dx__pmd_state dx__pmd_state;

dx__pmd_state *dx__pmd_new(const dx_pmd *p, dx_role role,
                           const dx_ws_config *cfg);
void dx__pmd_free(dx__pmd_state *z, const dx_ws_config *cfg);

/* Decompresses the next piece of a compressed message and appends it to out,
 * never letting out->len exceed `limit` (DX_ETOOBIG before allocating more).
 * With fin, appends the 0x00 0x00 0xff 0xff tail (RFC 7692 7.2.2) and ends
 * the message, resetting the window when the peer uses no context takeover.
 * Returns 0, DX_ETOOBIG, DX_EDEFLATE, DX_ENOMEM. */
int dx__pmd_inflate(dx__pmd_state *z, const uint8_t *in, size_t len,
                    bool fin, dx__buf *out, size_t limit);

/* Compresses a whole message; *res points at the compressed payload without
 * the trailing 0x00 0x00 0xff 0xff, valid until the next call on z.
 * Returns 0 and sets *res_len, or DX_ENOMEM. */
int dx__pmd_deflate(dx__pmd_state *z, const uint8_t *in, size_t len,
                    const uint8_t **res, size_t *res_len);

/* True when this side may compress (its negotiated window is >= 9: zlib's
 * raw deflate cannot honour 8, and sending uncompressed is always legal). */
bool dx__pmd_can_compress(const dx__pmd_state *z);

/* ---- the engine ------------------------------------------------------- */

struct dx__client_hs; /* handshake.c: key and offers, freed at OPEN */

enum dx__pstate { DX__P_HEADER = 0, DX__P_PAYLOAD = 1, DX__P_DEAD = 2 };

struct dx_ws {
  const dx_ws_config *cfg;
  /* borrowed input: [in, in_end) */
  uint8_t *in;
  uint8_t *in_end;
  uint64_t remaining; /* payload bytes left in the current frame */
  uint32_t utf8;      /* incremental validator state of the text message */
  int err;            /* sticky fatal error */
  uint8_t ready;      /* dx_ready_state */
  uint8_t role;
  uint8_t pstate;
  uint8_t hdr_len;    /* header bytes collected in hdr */
  uint8_t hdr[14];
  uint8_t opcode;     /* current frame */
  uint8_t fin;
  uint8_t rsv1;
  uint8_t mask_off;
  uint8_t mask[4];
  uint8_t msg_op;     /* TEXT/BINARY of the message in progress, or 0 */
  uint8_t msg_z;      /* the message in progress is compressed */
  uint8_t send_op;    /* fragmented send in progress: its opcode, or 0 */
  uint8_t close_sent;
  uint8_t close_rcvd;
  uint8_t ctl_len;
  uint8_t *ctl;       /* control payload being collected (125 bytes) */
  dx__buf msg;        /* message assembly, only while one is split */
  dx__buf out;        /* queued output */
  dx__pmd_state *z;
  struct dx__client_hs *hs;
  dx_pmd pmd;
};

static inline const dx_allocator *dx__ws_alloc(const dx_ws *ws) {
  return &ws->cfg->alloc;
}

/* Appends an unmasked/masked frame per role to the output. */
int dx__ws_write_frame(dx_ws *ws, dx_opcode op, bool fin, bool rsv1,
                       const uint8_t *p, size_t n);

/* Fills buf with n random bytes from OpenSSL. Returns 0 or DX_ENOMEM. */
int dx__random(void *buf, size_t n);

/* handshake.c: frees the client handshake state (NULL-safe). */
void dx__client_hs_free(dx_ws *ws);

#endif
