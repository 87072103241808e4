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

/* DX__P_HDRPART: a frame header split across feeds is being collected in
 * cold->hdr (a state of its own so the fast lane's one-word check sees it). */
enum dx__pstate {
  DX__P_HEADER = 0,
  DX__P_HDRPART = 1,
  DX__P_PAYLOAD = 2,
  DX__P_DEAD = 3
};

/* What an engine needs only now and then: a message split across frames or
 * feeds, a control frame or frame header split across feeds, compression,
 * the client handshake. Allocated on first need and freed once nothing in
 * it is live, so an idle connection carries only the hot part below. */
struct dx__ws_cold {
  dx__buf msg; /* message assembly, only while one is split */
  dx__pmd_state *z;
  struct dx__client_hs *hs;
  uint32_t utf8; /* incremental validator state of a split text message */
  uint8_t hdr_len;
  uint8_t hdr[14]; /* frame header bytes collected (DX__P_HDRPART) */
  uint8_t ctl_len;
  uint8_t ctl[125]; /* control payload being collected */
};

/* The hot part: what every frame touches, and all an idle connection costs
 * (80 bytes on LP64; the server embeds it in its connection block). */
struct dx_ws {
  const dx_ws_config *cfg;
  /* borrowed input: [in, in_end) */
  uint8_t *in;
  uint8_t *in_end;
  uint64_t remaining; /* payload bytes left in the current frame */
  /* queued output: [out + out_off, out + out_len). 32-bit: at most 4 GiB
   * queued per engine (more is DX_ENOMEM), which keeps idle engines small. */
  uint8_t *out;
  uint32_t out_len, out_off, out_cap;
  /* The fast lane's precondition is one 32-bit compare of these four
   * (dx__ws_quiet): OPEN, between frames, no fragmented message in
   * progress, nothing delivered from cold memory awaiting release. */
  union {
    uint32_t st;
    struct {
      uint8_t ready; /* dx_ready_state */
      uint8_t pstate;
      uint8_t msg_op; /* TEXT/BINARY of the message in progress, or 0 */
      uint8_t held;   /* the last event pointed into cold memory */
    };
  };
  struct dx__ws_cold *cold;
  uint8_t mask[4];
  int err; /* sticky fatal error */
  uint8_t role;
  uint8_t opcode; /* current frame */
  uint8_t mask_off;
  uint8_t send_op; /* fragmented send in progress: its opcode, or 0 */
  bool fin : 1;
  bool rsv1 : 1;
  bool msg_z : 1; /* the message in progress is compressed */
  bool close_sent : 1;
  bool close_rcvd : 1;
  /* Negotiated permessage-deflate (dx_ws_pmd), packed: the window bits
   * are 0 or 8..15. */
  bool pmd_on : 1;
  bool pmd_sno : 1; /* server_no_context_takeover */
  bool pmd_cno : 1; /* client_no_context_takeover */
  uint8_t pmd_sbits : 4;
  uint8_t pmd_cbits : 4;
  /* The largest payload the fast lane takes: 125 or less if max_message or
   * max_frame are lower (read once: the config must not change). */
  uint8_t lane_max;
};

static inline const dx_allocator *dx__ws_alloc(const dx_ws *ws) {
  return &ws->cfg->alloc;
}

/* The cold part, allocated (zeroed) on first use. NULL: out of memory. */
struct dx__ws_cold *dx__ws_cold(dx_ws *ws);

/* Records the negotiated compression (window bits already checked). */
void dx__ws_set_pmd(dx_ws *ws, const dx_pmd *pmd);

/* Makes room for n more output bytes. Returns 0 or DX_ENOMEM (also past
 * the 4 GiB cap). */
int dx__ws_out_reserve(dx_ws *ws, size_t n);

/* Appends an unmasked/masked frame per role to the output. */
int dx__ws_write_frame(dx_ws *ws, dx_opcode op, bool fin, bool rsv1,
                       const uint8_t *p, size_t n);

/* Fills buf with n random bytes from OpenSSL. Returns 0 or DX_ENOMEM. */
int dx__random(void *buf, size_t n);

/* handshake.c: frees the client handshake state (NULL-safe). */
void dx__client_hs_free(dx_ws *ws);

#endif
