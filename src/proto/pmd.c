/*
 * permessage-deflate (RFC 7692): negotiation of the extension parameters
 * (section 7.1) and the per-direction zlib streams (section 7.2).
 */
#define ZLIB_CONST
#include "proto/internal.h"

#include <limits.h>
#include <stdio.h>
#include <zlib.h>

/* ======================================================================== */
/* Negotiation                                                              */

/* The parameters of RFC 7692 section 7.1, one bit each to catch duplicates
 * (section 7.1: an offer or response with a duplicate parameter is invalid). */
enum {
  P_SNCT = 1u << 0, /* server_no_context_takeover */
  P_CNCT = 1u << 1, /* client_no_context_takeover */
  P_SMWB = 1u << 2, /* server_max_window_bits */
  P_CMWB = 1u << 3  /* client_max_window_bits */
};

/* One element of a Sec-WebSocket-Extensions list (RFC 6455 section 9.1). */
typedef struct ext_elem {
  const char *name;
  size_t name_len;
  unsigned seen; /* P_* bits present */
  bool bad;      /* unknown, duplicate or invalid parameter */
  uint8_t smwb;  /* 8..15 */
  uint8_t cmwb;  /* 8..15, or 0 when given without a value */
} ext_elem;

/* A parameter value. Only our window bits ("8".."15") matter, so two
 * characters are kept; anything longer is invalid for every parameter. */
typedef struct ext_val {
  bool present;
  bool invalid; /* too long, or not a token after unquoting */
  size_t len;
  char s[2];
} ext_val;

typedef struct cursor {
  const char *p;
  const char *end;
} cursor;

static bool is_tchar(unsigned char c) {
  /* RFC 7230 section 3.2.6 tchar. */
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
      (c >= '0' && c <= '9'))
    return true;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool ascii_ieq(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  if (alen != blen) return false;
  for (size_t i = 0; i < alen; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
    if (x != y) return false;
  }
  return true;
}

static void skip_ows(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
    c->p++;
}

static bool take_token(cursor *c, const char **tok, size_t *len) {
  const char *start = c->p;
  while (c->p < c->end && is_tchar((unsigned char)*c->p))
    c->p++;
  *tok = start;
  *len = (size_t)(c->p - start);
  return *len > 0;
}

static void val_push(ext_val *v, char ch) {
  if (!is_tchar((unsigned char)ch) || v->len == sizeof v->s)
    v->invalid = true;
  else
    v->s[v->len++] = ch;
}

/* quoted-string (RFC 7230 section 3.2.6). RFC 6455 section 9.1 requires the
 * unquoted value to be a token, so "10" and 10 mean the same. */
static bool take_quoted(cursor *c, ext_val *v) {
  c->p++; /* opening DQUOTE */
  while (c->p < c->end) {
    unsigned char ch = (unsigned char)*c->p++;
    if (ch == '"') {
      if (v->len == 0) v->invalid = true;
      return true;
    }
    if (ch == '\\') {
      if (c->p == c->end) return false;
      ch = (unsigned char)*c->p++;
    }
    if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return false;
    val_push(v, (char)ch);
  }
  return false; /* unterminated */
}

static bool take_value(cursor *c, ext_val *v) {
  v->present = true;
  if (c->p < c->end && *c->p == '"') return take_quoted(c, v);
  const char *tok;
  size_t len;
  if (!take_token(c, &tok, &len)) return false;
  for (size_t i = 0; i < len; i++)
    val_push(v, tok[i]);
  return true;
}

/* Window bits: "a decimal integer value without leading zeroes between 8
 * to 15, inclusive" (RFC 7692 sections 7.1.2.1 and 7.1.2.2). 0: invalid. */
static uint8_t parse_bits(const ext_val *v) {
  if (!v->present || v->invalid) return 0;
  if (v->len == 1 && (v->s[0] == '8' || v->s[0] == '9'))
    return (uint8_t)(v->s[0] - '0');
  if (v->len == 2 && v->s[0] == '1' && v->s[1] >= '0' && v->s[1] <= '5')
    return (uint8_t)(10 + v->s[1] - '0');
  return 0;
}

static unsigned param_id(const char *n, size_t len) {
  if (ascii_ieq(n, len, "server_no_context_takeover")) return P_SNCT;
  if (ascii_ieq(n, len, "client_no_context_takeover")) return P_CNCT;
  if (ascii_ieq(n, len, "server_max_window_bits")) return P_SMWB;
  if (ascii_ieq(n, len, "client_max_window_bits")) return P_CMWB;
  return 0;
}

/* Records one parameter. Only meaningful when the element turns out to be
 * permessage-deflate; other extensions' parameters are parsed, then ignored. */
static void apply_param(ext_elem *e, const char *n, size_t len,
                        const ext_val *v) {
  unsigned id = param_id(n, len);
  if (id == 0 || (e->seen & id)) {
    e->bad = true;
    return;
  }
  e->seen |= id;
  if (id == P_SNCT || id == P_CNCT) {
    if (v->present) e->bad = true; /* these have no value (7.1.1) */
  } else if (id == P_SMWB) {
    e->smwb = parse_bits(v); /* the value is mandatory (7.1.2.1) */
    if (!e->smwb) e->bad = true;
  } else if (v->present) {
    e->cmwb = parse_bits(v); /* optional in an offer (7.1.2.2) */
    if (!e->cmwb) e->bad = true;
  }
}

static bool parse_param(cursor *c, ext_elem *e) {
  const char *name;
  size_t len;
  ext_val v = {0};
  if (!take_token(c, &name, &len)) return false;
  skip_ows(c);
  if (c->p < c->end && *c->p == '=') {
    c->p++;
    skip_ows(c);
    if (!take_value(c, &v)) return false;
  }
  apply_param(e, name, len, &v);
  return true;
}

/*
 * The next element of an extension list:
 *   extension = extension-token *( ";" extension-param )
 * Returns 1 with *e filled, 0 at the end of the list, -1 on a syntax error
 * (after which the rest of the list cannot be delimited reliably).
 * Empty list elements are skipped (RFC 7230 section 7).
 */
static int parse_element(cursor *c, ext_elem *e) {
  memset(e, 0, sizeof *e);
  for (;;) {
    skip_ows(c);
    if (c->p == c->end) return 0;
    if (*c->p != ',') break;
    c->p++;
  }
  if (!take_token(c, &e->name, &e->name_len)) return -1;
  for (;;) {
    skip_ows(c);
    if (c->p == c->end) return 1;
    if (*c->p == ',') {
      c->p++;
      return 1;
    }
    if (*c->p != ';') return -1;
    c->p++;
    skip_ows(c);
    if (!parse_param(c, e)) return -1;
  }
}

static bool is_pmd(const ext_elem *e) {
  return ascii_ieq(e->name, e->name_len, "permessage-deflate");
}

static bool is_ext_header(const dx_header *h) {
  return ascii_ieq(h->name, h->name_len, "sec-websocket-extensions");
}

/* Window bits from a caller's dx_pmd: 0 stays "unset", the rest is forced
 * into the 8..15 range the RFC allows. */
static uint8_t norm_bits(uint8_t b) {
  if (b == 0) return 0;
  return b < 8 ? 8 : b > 15 ? 15 : b;
}

static uint8_t min_bits(uint8_t a, uint8_t b) {
  return a < b ? a : b;
}

/* Builds the agreed parameters for an acceptable offer. Every well-formed
 * offer is acceptable: the policy only ever tightens what the client asked. */
static void accept_offer(const dx_pmd *pol, const ext_elem *e, dx_pmd *out) {
  uint8_t own = norm_bits(pol->server_max_window_bits);
  uint8_t wish = norm_bits(pol->client_max_window_bits);
  memset(out, 0, sizeof *out);
  out->enabled = true;
  /* 7.1.1.1: accepting an offer with server_no_context_takeover means
   * echoing it. 7.1.1.2: the client's own no_context_takeover is a hint;
   * echoing it lets our inflater drop its window between messages. */
  out->server_no_context_takeover =
      pol->server_no_context_takeover || (e->seen & P_SNCT);
  out->client_no_context_takeover =
      pol->client_no_context_takeover || (e->seen & P_CNCT);
  /* 7.1.2.1: an offered value must be echoed with the same or a smaller
   * one; unasked, the server may still announce its own smaller window.
   * 0 here means "not in the response" (a window of 15). */
  if (e->seen & P_SMWB)
    out->server_max_window_bits = own ? min_bits(own, e->smwb) : e->smwb;
  else if (own && own < 15)
    out->server_max_window_bits = own;
  /* 7.1.2.2: client_max_window_bits may only appear in a response when the
   * offer had it, and then no larger than the offered value. */
  if (e->seen & P_CMWB) {
    if (wish && e->cmwb)
      out->client_max_window_bits = min_bits(wish, e->cmwb);
    else
      out->client_max_window_bits = wish ? wish : e->cmwb;
  }
}

bool dx__pmd_negotiate(const dx_header *headers, size_t n, const dx_pmd *policy,
                       dx_pmd *out) {
  memset(out, 0, sizeof *out);
  if (!policy || !policy->enabled) return false;
  for (size_t i = 0; i < n; i++) {
    if (!is_ext_header(&headers[i])) continue;
    cursor c = {headers[i].value, headers[i].value + headers[i].value_len};
    ext_elem e;
    /* Offers are in the client's order of preference (RFC 6455 9.1); a bad
     * one is declined and the next considered. A syntax error ends this
     * header line only: later lines are separate lists. */
    while (parse_element(&c, &e) > 0) {
      if (!is_pmd(&e) || e.bad) continue;
      accept_offer(policy, &e, out);
      return true;
    }
  }
  return false;
}

/* Appends to a fixed buffer, remembering overflow. */
typedef struct sbuf {
  char *p;
  size_t cap;
  size_t len;
  bool over;
} sbuf;

static void put(sbuf *b, const char *s, unsigned bits) {
  size_t room = b->len < b->cap ? b->cap - b->len : 0;
  if (b->over || room == 0) {
    b->over = true;
    return;
  }
  int n = bits ? snprintf(b->p + b->len, room, "; %s=%u", s, bits)
               : snprintf(b->p + b->len, room, "%s", s);
  if (n < 0 || (size_t)n >= room)
    b->over = true;
  else
    b->len += (size_t)n;
}

static size_t finish(sbuf *b) {
  if (!b->over) return b->len;
  if (b->cap) b->p[0] = '\0';
  return 0;
}

size_t dx__pmd_format_response(const dx_pmd *p, char *out, size_t cap) {
  sbuf b = {out, cap, 0, false};
  put(&b, "permessage-deflate", 0);
  if (p->server_no_context_takeover) put(&b, "; server_no_context_takeover", 0);
  if (p->client_no_context_takeover) put(&b, "; client_no_context_takeover", 0);
  if (p->server_max_window_bits)
    put(&b, "server_max_window_bits", norm_bits(p->server_max_window_bits));
  if (p->client_max_window_bits)
    put(&b, "client_max_window_bits", norm_bits(p->client_max_window_bits));
  return finish(&b);
}

size_t dx__pmd_format_offer(const dx_pmd *offer, char *out, size_t cap) {
  sbuf b = {out, cap, 0, false};
  put(&b, "permessage-deflate", 0);
  if (offer->server_no_context_takeover)
    put(&b, "; server_no_context_takeover", 0);
  if (offer->client_no_context_takeover)
    put(&b, "; client_no_context_takeover", 0);
  if (offer->server_max_window_bits)
    put(&b, "server_max_window_bits", norm_bits(offer->server_max_window_bits));
  /* Always offered: it only tells the server we understand the parameter
   * in a response (7.1.2.2), and some servers insist on limiting us. */
  if (offer->client_max_window_bits)
    put(&b, "client_max_window_bits", norm_bits(offer->client_max_window_bits));
  else
    put(&b, "; client_max_window_bits", 0);
  return finish(&b);
}

/* Collects the single element of the server's response across all
 * Sec-WebSocket-Extensions lines. Returns the element count (0 or 1) or
 * DX_EEXTENSION. */
static int response_element(const dx_header *headers, size_t n, ext_elem *got) {
  int count = 0, r;
  ext_elem e;
  for (size_t i = 0; i < n; i++) {
    if (!is_ext_header(&headers[i])) continue;
    cursor c = {headers[i].value, headers[i].value + headers[i].value_len};
    while ((r = parse_element(&c, &e)) > 0) {
      /* We offered one extension, once: anything more was never offered
       * (RFC 6455 section 9.1). */
      if (++count > 1) return DX_EEXTENSION;
      *got = e;
    }
    if (r < 0) return DX_EEXTENSION;
  }
  return count;
}

/* Checks a response element against our offer (RFC 7692 section 7.1). */
static bool response_ok(const ext_elem *e, const dx_pmd *offer) {
  if (!is_pmd(e) || e->bad) return false;
  /* 7.1.2.2: in a response the parameter needs a value. */
  if ((e->seen & P_CMWB) && !e->cmwb) return false;
  /* 7.1.2.1: the server may not use a larger window than we asked for. */
  uint8_t asked = norm_bits(offer->server_max_window_bits);
  if ((e->seen & P_SMWB) && asked && e->smwb > asked) return false;
  return true;
}

int dx__pmd_client_accept(const dx_header *headers, size_t n,
                          const dx_pmd *offer, dx_pmd *out) {
  ext_elem e;
  memset(out, 0, sizeof *out);
  int rc = response_element(headers, n, &e);
  if (rc <= 0) return rc;
  if (!offer || !offer->enabled || !response_ok(&e, offer))
    return DX_EEXTENSION;
  out->enabled = true;
  /* Only the server's word counts for its own context: if it ignored our
   * request, it keeps its window and so must our inflater. */
  out->server_no_context_takeover = (e.seen & P_SNCT) != 0;
  /* Our own hint binds us even when not echoed (7.1.1.2). */
  out->client_no_context_takeover =
      offer->client_no_context_takeover || (e.seen & P_CNCT);
  out->server_max_window_bits = e.smwb;
  uint8_t hint = norm_bits(offer->client_max_window_bits);
  if (e.cmwb)
    out->client_max_window_bits = hint ? min_bits(hint, e.cmwb) : e.cmwb;
  else
    out->client_max_window_bits = hint;
  return 0;
}

/* ======================================================================== */
/* Streams                                                                  */

/* The compressed form of an empty message: an empty stored block with
 * BFINAL 0 minus its 0x00 0x00 0xff 0xff (RFC 7692 section 7.2.3.6). */
static const uint8_t empty_block[1] = {0x00};
static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};

/* zlib counts in uInt; larger buffers go through in pieces. */
#define CHUNK_MAX ((size_t)1 << 30)
/* A scratch buffer larger than this is not kept between messages. */
#define SCRATCH_KEEP ((size_t)64 << 10)
#define OUT_MIN ((size_t)1024)
#define WINDOW_MAX ((size_t)1 << 15)

struct dx__pmd_state {
  const dx_allocator *a;
  z_stream def;
  z_stream inf;
  bool def_ready;
  bool inf_ready;
  bool own_nct;  /* reset our compressor after each message */
  bool peer_nct; /* reset our decompressor after each message */
  bool msg_in;   /* payload bytes were fed for the current message */
  bool fresh;    /* inflater restarted after BFINAL, nothing consumed since */
  uint8_t own_bits;
  int level;
  int mem_level;
  uint8_t *scratch;
  size_t scratch_cap;
};

/* zlib knows only the pointer when freeing, while dx_allocator wants the
 * size back: keep it in a header that preserves malloc alignment. */
typedef union zhdr {
  max_align_t align;
  size_t size;
} zhdr;

static voidpf zalloc_hook(voidpf opaque, uInt items, uInt size) {
  if (size && items > (SIZE_MAX - sizeof(zhdr)) / size) return Z_NULL;
  size_t n = (size_t)items * size + sizeof(zhdr);
  zhdr *h = dx__alloc(opaque, n);
  if (!h) return Z_NULL;
  h->size = n;
  return h + 1;
}

static void zfree_hook(voidpf opaque, voidpf p) {
  if (!p) return;
  zhdr *h = (zhdr *)p - 1;
  dx__free(opaque, h, h->size);
}

static int clamp_int(int v, int dflt, int lo, int hi) {
  if (v == 0) return dflt;
  return v < lo ? lo : v > hi ? hi : v;
}

dx__pmd_state *dx__pmd_new(const dx_pmd *p, dx_role role,
                           const dx_ws_config *cfg) {
  dx__pmd_state *z = dx__alloc(&cfg->alloc, sizeof *z);
  if (!z) return NULL;
  memset(z, 0, sizeof *z);
  z->a = &cfg->alloc;
  /* A server compresses under the server_* parameters and decompresses
   * what the client compressed under the client_* ones (7.1.1, 7.1.2). */
  bool server = role == DX_ROLE_SERVER;
  z->own_nct =
      server ? p->server_no_context_takeover : p->client_no_context_takeover;
  z->peer_nct =
      server ? p->client_no_context_takeover : p->server_no_context_takeover;
  uint8_t bits =
      norm_bits(server ? p->server_max_window_bits : p->client_max_window_bits);
  z->own_bits = bits ? bits : 15;
  z->level = clamp_int(cfg->compress_level, 1, 1, 9);
  z->mem_level = clamp_int(cfg->compress_mem_level, 8, 1, 9);
  return z;
}

void dx__pmd_free(dx__pmd_state *z, const dx_ws_config *cfg) {
  (void)cfg; /* z remembers the allocator it was made with */
  if (!z) return;
  if (z->def_ready) deflateEnd(&z->def);
  if (z->inf_ready) inflateEnd(&z->inf);
  dx__free(z->a, z->scratch, z->scratch_cap);
  dx__free(z->a, z, sizeof *z);
}

bool dx__pmd_can_compress(const dx__pmd_state *z) {
  /* zlib's raw deflate refuses windowBits 8 and would silently use 9, past
   * what the peer allowed; uncompressed messages are always legal. */
  return z && z->own_bits >= 9;
}

static void z_hooks(z_stream *s, const dx_allocator *a) {
  memset(s, 0, sizeof *s);
  s->zalloc = zalloc_hook;
  s->zfree = zfree_hook;
  s->opaque = (voidpf)a;
}

static int zerr(int zr) {
  return zr == Z_MEM_ERROR ? DX_ENOMEM : DX_EINVAL;
}

/* ---- inflate ------------------------------------------------------------ */

static int inflate_ready(dx__pmd_state *z) {
  if (z->inf_ready) return 0;
  z_hooks(&z->inf, z->a);
  /* The largest window decodes anything a peer with a smaller one sends,
   * so the negotiated client/server window never matters here. */
  int zr = inflateInit2(&z->inf, -15);
  if (zr != Z_OK) return zerr(zr);
  z->inf_ready = true;
  return 0;
}

/* Makes room in out without growing it past `limit` live bytes: compacts
 * first, then doubles, so a deflate bomb costs at most ~limit. */
static int out_grow(dx__buf *b, const dx_allocator *a, size_t limit) {
  if (b->off > 0) {
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
    return 0;
  }
  size_t cap = b->cap < OUT_MIN        ? OUT_MIN
               : b->cap > SIZE_MAX / 2 ? SIZE_MAX
                                       : b->cap * 2;
  if (cap > limit) cap = limit; /* live == len < limit <= cap here */
  uint8_t *p = dx__realloc(a, b->data, b->cap, cap);
  if (!p) return DX_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

/* Points the inflater's output at free space in out, or, once the message
 * has reached the limit, at a one-byte probe: any byte landing there means
 * the message is too big, and nothing was allocated for it. */
static int out_window(dx__pmd_state *z, dx__buf *out, size_t limit,
                      uint8_t *probe) {
  size_t live = out->len - out->off;
  if (live >= limit) {
    z->inf.next_out = probe;
    z->inf.avail_out = 1;
    return 0;
  }
  if (out->len == out->cap) {
    int rc = out_grow(out, z->a, limit);
    if (rc) return rc;
  }
  size_t room = out->cap - out->len;
  if (room > limit - live) room = limit - live;
  if (room > UINT_MAX) room = UINT_MAX;
  z->inf.next_out = out->data + out->len;
  z->inf.avail_out = (uInt)room;
  return 0;
}

/* After a block with BFINAL set the zlib stream is over, but the message
 * may go on: RFC 7692 7.2.3.4 follows such a block with an empty stored
 * block. Restart the stream, keeping the window, since later data may
 * still refer back to it. */
static int inflate_restart(dx__pmd_state *z) {
  uInt n = 0;
  uint8_t *dict = dx__alloc(z->a, WINDOW_MAX);
  if (!dict) return DX_ENOMEM;
  inflateGetDictionary(&z->inf, dict, &n);
  inflateReset(&z->inf);
  if (n) inflateSetDictionary(&z->inf, dict, n);
  dx__free(z->a, dict, WINDOW_MAX);
  z->fresh = true;
  return 0;
}

/* One inflate() call through out_window. Returns 1 to go on, 0 when this
 * input is done (or inflate stopped at a block boundary), or an error. */
static int inflate_step(dx__pmd_state *z, int flush, dx__buf *out,
                        size_t limit) {
  z_stream *s = &z->inf;
  uint8_t probe;
  int rc = out_window(z, out, limit, &probe);
  if (rc) return rc;
  bool probing = s->next_out == &probe;
  uInt in_before = s->avail_in, room = s->avail_out;
  int zr = inflate(s, flush);
  if (s->avail_in != in_before) z->fresh = false;
  if (probing && s->avail_out == 0) return DX_ETOOBIG;
  if (!probing) out->len += room - s->avail_out;
  if (zr == Z_STREAM_END) {
    rc = inflate_restart(z);
    return rc ? rc : s->avail_in > 0;
  }
  if (zr == Z_MEM_ERROR) return DX_ENOMEM;
  if (zr != Z_OK && zr != Z_BUF_ERROR) return DX_EDEFLATE;
  /* Output full: there may be more pending even with no input left. */
  return s->avail_out == 0;
}

static int inflate_feed(dx__pmd_state *z, const uint8_t *in, size_t len,
                        int flush, dx__buf *out, size_t limit) {
  int rc;
  do {
    size_t n = len < CHUNK_MAX ? len : CHUNK_MAX;
    z->inf.next_in = in;
    z->inf.avail_in = (uInt)n;
    in += n;
    len -= n;
    while ((rc = inflate_step(z, flush, out, limit)) > 0) {
    }
    if (rc < 0) return rc;
  } while (len > 0);
  return 0;
}

/* Ends a message: RFC 7692 section 7.2.2 appends 0x00 0x00 0xff 0xff,
 * which completes the empty stored block a sender's flush left, so the
 * inflater must then sit exactly on a block boundary with no input left.
 * Z_BLOCK makes it stop there and say so in data_type (bit 128). */
static int inflate_finish(dx__pmd_state *z, dx__buf *out, size_t limit) {
  int rc = 0;
  /* An empty payload carries no block at all, and a message that ended in
   * a BFINAL block with nothing after it left a fresh stream: in both cases
   * the tail would only start a stored block that never ends. */
  if (z->msg_in && !z->fresh) {
    rc = inflate_feed(z, tail, sizeof tail, Z_BLOCK, out, limit);
    if (rc == 0 && !z->fresh &&
        (z->inf.avail_in != 0 || !(z->inf.data_type & 128)))
      rc = DX_EDEFLATE;
  }
  z->msg_in = false;
  z->fresh = false;
  /* 7.1.1: without context takeover each message starts a new window. */
  if (rc == 0 && z->peer_nct && z->inf_ready) inflateReset(&z->inf);
  return rc;
}

int dx__pmd_inflate(dx__pmd_state *z, const uint8_t *in, size_t len, bool fin,
                    dx__buf *out, size_t limit) {
  int rc;
  if (len > 0) {
    if ((rc = inflate_ready(z)) != 0) return rc;
    z->msg_in = true;
    rc = inflate_feed(z, in, len, Z_SYNC_FLUSH, out, limit);
    if (rc) return rc;
  }
  return fin ? inflate_finish(z, out, limit) : 0;
}

/* ---- deflate ------------------------------------------------------------ */

static int deflate_ready(dx__pmd_state *z) {
  if (z->def_ready) return 0;
  z_hooks(&z->def, z->a);
  int zr = deflateInit2(&z->def, z->level, Z_DEFLATED, -(int)z->own_bits,
                        z->mem_level, Z_DEFAULT_STRATEGY);
  if (zr != Z_OK) return zerr(zr);
  z->def_ready = true;
  return 0;
}

/* Ensures `more` free bytes after `used` in the scratch buffer. */
static int scratch_reserve(dx__pmd_state *z, size_t used, size_t more) {
  if (z->scratch_cap - used >= more) return 0;
  if (more > SIZE_MAX - used) return DX_ENOMEM;
  size_t cap = z->scratch_cap > SIZE_MAX / 2 ? SIZE_MAX : z->scratch_cap * 2;
  if (cap < used + more) cap = used + more;
  uint8_t *p = dx__realloc(z->a, z->scratch, z->scratch_cap, cap);
  if (!p) return DX_ENOMEM;
  z->scratch = p;
  z->scratch_cap = cap;
  return 0;
}

/* Runs deflate over the whole message into scratch; returns the bytes
 * written or an error. Z_SYNC_FLUSH at the end is what RFC 7692 7.2.1
 * asks for: the data ends with an empty stored block, 00 00 ff ff. */
static int deflate_all(dx__pmd_state *z, const uint8_t *in, size_t len,
                       size_t *used) {
  z_stream *s = &z->def;
  int rc;
  *used = 0;
  do {
    size_t n = len < CHUNK_MAX ? len : CHUNK_MAX;
    s->next_in = in;
    s->avail_in = (uInt)n;
    in += n;
    len -= n;
    int flush = len ? Z_NO_FLUSH : Z_SYNC_FLUSH;
    do {
      /* More than 6 bytes free, or zlib may repeat flush markers. */
      if ((rc = scratch_reserve(z, *used, 64)) != 0) return rc;
      size_t room = z->scratch_cap - *used;
      s->next_out = z->scratch + *used;
      s->avail_out = (uInt)(room < UINT_MAX ? room : UINT_MAX);
      uInt before = s->avail_out;
      int zr = deflate(s, flush);
      if (zr != Z_OK && zr != Z_BUF_ERROR) return zerr(zr);
      *used += before - s->avail_out;
    } while (s->avail_in > 0 || s->avail_out == 0);
  } while (len > 0);
  return 0;
}

int dx__pmd_deflate(dx__pmd_state *z, const uint8_t *in, size_t len,
                    const uint8_t **res, size_t *res_len) {
  if (len == 0) {
    /* zlib emits nothing for a repeated empty flush; the RFC's answer is
     * one empty stored block (7.2.3.6), valid in any stream state. */
    *res = empty_block;
    *res_len = sizeof empty_block;
    return 0;
  }
  int rc = deflate_ready(z);
  if (rc) return rc;
  size_t bound = deflateBound(&z->def, len > CHUNK_MAX ? CHUNK_MAX : len);
  if (z->scratch_cap > SCRATCH_KEEP && bound < SCRATCH_KEEP) {
    /* One big message must not pin its buffer for the connection's life. */
    dx__free(z->a, z->scratch, z->scratch_cap);
    z->scratch = NULL;
    z->scratch_cap = 0;
  }
  size_t used;
  if ((rc = scratch_reserve(z, 0, bound + 16)) != 0) return rc;
  if ((rc = deflate_all(z, in, len, &used)) != 0) {
    /* A fresh window never refers to anything the peer lacks, so a reset
     * keeps the stream usable even after a partial message. */
    deflateReset(&z->def);
    return rc;
  }
  if (used < sizeof tail || memcmp(z->scratch + used - 4, tail, 4) != 0)
    return DX_EINVAL; /* cannot happen after Z_SYNC_FLUSH */
  if (z->own_nct) deflateReset(&z->def);
  *res = z->scratch;
  *res_len = used - sizeof tail;
  return 0;
}
