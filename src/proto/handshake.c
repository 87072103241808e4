/*
 * The WebSocket opening handshake (RFC 6455 section 4), both roles.
 *
 * Responses and requests are written straight into the engine's output in
 * one piece: each writer runs twice, first to measure, then to copy, so a
 * failed allocation leaves the engine exactly as it was.
 */
#include "proto/internal.h"

#include <stdatomic.h>

#include <openssl/evp.h>
#include <stdio.h>

/* RFC 6455 section 1.3. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* What a client engine remembers between its request and the response.
 * When the server picks a subprotocol, dx_ws_handshake.subprotocol points
 * into `protos`, so the block then lives until dx_ws_free; otherwise it is
 * freed as soon as the engine leaves CONNECTING. */
struct dx__client_hs {
  size_t size; /* of this allocation, for the allocator */
  char accept[29];
  dx_pmd offer;
  size_t nprotos;
  char protos[]; /* the offered subprotocols, each NUL-terminated */
};

void dx__client_hs_free(dx_ws *ws) {
  if (!ws || !ws->cold || !ws->cold->hs) return;
  dx__free(dx__ws_alloc(ws), ws->cold->hs, ws->cold->hs->size);
  ws->cold->hs = NULL;
}

/* OpenSSL 3 looks the algorithm up in its provider store on every
 * EVP_DigestInit_ex(EVP_sha1()): about half a million instructions, more
 * than the rest of a handshake. Fetch it once and keep it (a race only
 * fetches twice; the loser frees its copy). */
static const EVP_MD *sha1_md(void) {
  static _Atomic(EVP_MD *) cached;
  EVP_MD *md = atomic_load_explicit(&cached, memory_order_acquire);
  if (md) return md;
  EVP_MD *fresh = EVP_MD_fetch(NULL, "SHA1", NULL);
  if (!fresh) return NULL;
  EVP_MD *expected = NULL;
  if (atomic_compare_exchange_strong(&cached, &expected, fresh)) return fresh;
  EVP_MD_free(fresh);
  return expected;
}

int dx_ws_accept_key(const char *key, size_t len, char out[29]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (!key || !out) return DX_EINVAL;
  const EVP_MD *sha1 = sha1_md();
  if (!sha1) return DX_ENOMEM;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx) return DX_ENOMEM;
  int ok = EVP_DigestInit_ex(ctx, sha1, NULL) &&
           EVP_DigestUpdate(ctx, key, len) &&
           EVP_DigestUpdate(ctx, ws_guid, sizeof ws_guid - 1) &&
           EVP_DigestFinal_ex(ctx, md, &md_len);
  EVP_MD_CTX_free(ctx);
  if (!ok || md_len != 20) return DX_ENOMEM;
  EVP_EncodeBlock((unsigned char *)out, md, 20);
  return 0;
}

/* ---- output ----------------------------------------------------------- */

/* Measures (dst == NULL) or copies. */
typedef struct sink {
  char *dst;
  size_t len;
} sink;

static void put(sink *s, const char *p, size_t n) {
  if (s->dst) memcpy(s->dst + s->len, p, n);
  s->len += n;
}

static void put_str(sink *s, const char *str) {
  put(s, str, strlen(str));
}

#define PUT_LIT(s, lit) put((s), (lit), sizeof(lit) - 1)

/* "Name: value\r\n", or nothing when value is NULL. */
static void put_field(sink *s, const char *name, const char *value) {
  if (!value) return;
  put_str(s, name);
  PUT_LIT(s, ": ");
  put_str(s, value);
  PUT_LIT(s, "\r\n");
}

typedef void writer(sink *s, const void *ctx);

static int queue(dx_ws *ws, writer *w, const void *ctx) {
  sink s = {NULL, 0};
  w(&s, ctx);
  int rc = dx__ws_out_reserve(ws, s.len);
  if (rc) return rc;
  size_t n = s.len;
  s.dst = (char *)ws->out + ws->out_len;
  s.len = 0;
  w(&s, ctx);
  ws->out_len += (uint32_t)n;
  return 0;
}

/* ---- validation of what callers put into heads --------------------------
 * Anything copied into a head must not be able to end a line or the head
 * early: that would let the value inject fields or a body. */

/* ASCII only, never the locale. */
static bool is_alnum(unsigned char c) {
  return (unsigned)(c - '0') < 10 || (unsigned)((c | 0x20) - 'a') < 26;
}

static bool is_tchar(unsigned char c) {
  return is_alnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (!is_tchar((unsigned char)*s)) return false;
  return true;
}

/* Field values have no control characters but HTAB (RFC 9110 section
 * 5.5); CR, LF and NUL in particular. */
static bool is_field_char(unsigned char c) {
  return c >= 0x20 ? c != 0x7f : c == '\t';
}

static bool value_ok(const char *s) {
  for (; *s; s++)
    if (!is_field_char((unsigned char)*s)) return false;
  return true;
}

/* Host and request-target: visible ASCII, at least one character. */
static bool visible_ok(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if ((unsigned)((unsigned char)*s - 0x21) > 0x7e - 0x21) return false;
  return true;
}

/* Extra header lines: each "token:value\r\n" with a clean value. */
static bool lines_ok(const char *s) {
  while (*s) {
    const char *colon = s;
    while (is_tchar((unsigned char)*colon))
      colon++;
    if (colon == s || *colon != ':') return false;
    const char *v = colon + 1;
    while (is_field_char((unsigned char)*v))
      v++;
    if (v[0] != '\r' || v[1] != '\n') return false;
    s = v + 2;
  }
  return true;
}

/* ---- header access ---------------------------------------------------- */

static const dx_header *next_header(const dx_header *all, size_t n,
                                    const dx_header *h, const char *name) {
  return dx_http_header(h + 1, (size_t)(all + n - (h + 1)), name);
}

/* The header when it appears exactly once, else NULL. */
static const dx_header *only(const dx_header *all, size_t n, const char *name) {
  const dx_header *h = dx_http_header(all, n, name);
  return h && !next_header(all, n, h, name) ? h : NULL;
}

/* A list-valued header may be split over several lines (RFC 9110
 * section 5.3), so every line counts. */
static bool any_has(const dx_header *all, size_t n, const char *name,
                    const char *token) {
  for (const dx_header *h = dx_http_header(all, n, name); h;
       h = next_header(all, n, h, name))
    if (dx_http_list_has(h->value, h->value_len, token)) return true;
  return false;
}

/* Subprotocol names compare exactly: RFC 6455 section 4.1 makes them
 * case-sensitive, unlike the other list tokens of the handshake. */
static bool offered(const dx_header *all, size_t n, const char *proto) {
  size_t plen = strlen(proto);
  for (const dx_header *h = dx_http_header(all, n, "Sec-WebSocket-Protocol"); h;
       h = next_header(all, n, h, "Sec-WebSocket-Protocol")) {
    const char *v = h->value, *end = v + h->value_len;
    while (v < end) {
      const char *e = memchr(v, ',', (size_t)(end - v)), *next;
      next = e ? e + 1 : end;
      if (!e) e = end;
      while (v < e && (*v == ' ' || *v == '\t'))
        v++;
      while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
      if ((size_t)(e - v) == plen && memcmp(v, proto, plen) == 0) return true;
      v = next;
    }
  }
  return false;
}

/* ---- server ----------------------------------------------------------- */

static const char *status_text(int status) {
  const char *t = dx_http_status_text(status);
  /* The reason phrase carries no meaning (RFC 9112 section 4). */
  return *t ? t : status < 500 ? "Client Error" : "Server Error";
}

/* An error response. The connection is closed after it: the engine has no
 * way to read another request (RFC 9112 section 9.6). */
struct error_resp {
  int status;
  const char *extra; /* header lines, or NULL */
  const char *body;  /* or NULL */
  const char *body_end;
};

static void write_error(sink *s, const void *ctx) {
  const struct error_resp *e = ctx;
  size_t blen = e->body ? (size_t)(e->body_end - e->body) : 0;
  char num[48];
  int n = snprintf(num, sizeof num, "HTTP/1.1 %d ", e->status);
  put(s, num, (size_t)n);
  put_str(s, status_text(e->status));
  /* RFC 9110 section 7.8: a 426 names the protocol to upgrade to, and a
   * sender of Upgrade lists it in Connection too. */
  put_str(s, e->status == 426
                 ? "\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n"
                 : "\r\nConnection: close\r\n");
  PUT_LIT(s, "Content-Type: text/plain\r\n");
  n = snprintf(num, sizeof num, "Content-Length: %zu\r\n", blen);
  put(s, num, (size_t)n);
  if (e->extra) put_str(s, e->extra);
  PUT_LIT(s, "\r\n");
  if (blen) put(s, e->body, blen);
}

static int queue_error(dx_ws *ws, const struct error_resp *e) {
  int rc = queue(ws, write_error, e);
  if (rc == 0) ws->ready = DX_CLOSED;
  return rc;
}

int dx_ws_reject(dx_ws *ws, int status, const char *extra_headers,
                 const char *body) {
  if (!ws) return DX_EINVAL;
  if (ws->role != DX_ROLE_SERVER || ws->ready != DX_CONNECTING)
    return DX_ESTATE;
  if (status < 400 || status > 599) return DX_EINVAL;
  if (extra_headers && !lines_ok(extra_headers)) return DX_EINVAL;
  struct error_resp e = {status, extra_headers, body,
                         body ? body + strlen(body) : NULL};
  return queue_error(ws, &e);
}

/* Why a request is refused: status, a one-line reason (also the body) and
 * the header lines the status calls for. */
struct refusal {
  int status;
  const char *reason;
  const char *extra;
};

static bool refuse(struct refusal *f, int status, const char *reason,
                   const char *extra) {
  *f = (struct refusal){status, reason, extra};
  return false;
}

static bool key_ok(const dx_header *k) {
  if (!k || k->value_len != 24 || memcmp(k->value + 22, "==", 2) != 0)
    return false;
  for (size_t i = 0; i < 22; i++) {
    unsigned char c = (unsigned char)k->value[i];
    if (!is_alnum(c) && c != '+' && c != '/') return false;
  }
  return true;
}

/* RFC 6455 section 4.2.1, in the order that gives the most useful answer:
 * the method and HTTP version first, then the upgrade itself, then the
 * WebSocket version before the key, so a client speaking an older draft
 * (hixie-76 has Key1/Key2 and no version) learns which version to use. */
static bool check_request(const dx_http_request *req, struct refusal *f) {
  const dx_header *h = req->headers;
  size_t n = req->num_headers;
  if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0)
    return refuse(f, 405, "a WebSocket handshake must use GET",
                  "Allow: GET\r\n");
  if (req->version_minor < 1)
    return refuse(f, 400, "a WebSocket handshake needs HTTP/1.1", NULL);
  if (!only(h, n, "Host"))
    return refuse(f, 400, "missing or duplicate Host header", NULL);
  if (!any_has(h, n, "Upgrade", "websocket"))
    return refuse(f, 400, "Upgrade header does not name websocket", NULL);
  if (!any_has(h, n, "Connection", "upgrade"))
    return refuse(f, 400, "Connection header does not name upgrade", NULL);
  /* RFC 6455 section 4.4: answer a version we do not speak with the one we
   * do. A missing version gets the same answer: it is an older draft, and
   * 426 tells it what to speak where a bare 400 would not. */
  const dx_header *v = only(h, n, "Sec-WebSocket-Version");
  if (!v || v->value_len != 2 || memcmp(v->value, "13", 2) != 0)
    return refuse(f, 426, "unsupported Sec-WebSocket-Version (13 expected)",
                  "Sec-WebSocket-Version: 13\r\n");
  if (!key_ok(only(h, n, "Sec-WebSocket-Key")))
    return refuse(f, 400, "missing or invalid Sec-WebSocket-Key", NULL);
  return true;
}

static const char *choose_subprotocol(const dx_http_request *req,
                                      const char *const *mine) {
  for (; mine && *mine; mine++)
    if (offered(req->headers, req->num_headers, *mine)) return *mine;
  return NULL;
}

struct upgrade_resp {
  char accept[29];
  const char *subprotocol;
  const char *extensions;
  const char *extra;
};

static void write_upgrade(sink *s, const void *ctx) {
  const struct upgrade_resp *u = ctx;
  PUT_LIT(s, "HTTP/1.1 101 Switching Protocols\r\n"
             "Upgrade: websocket\r\n"
             "Connection: Upgrade\r\n");
  put_field(s, "Sec-WebSocket-Accept", u->accept);
  put_field(s, "Sec-WebSocket-Protocol", u->subprotocol);
  put_field(s, "Sec-WebSocket-Extensions", u->extensions);
  if (u->extra) put_str(s, u->extra);
  PUT_LIT(s, "\r\n");
}

static int server_fail(dx_ws *ws, const struct refusal *f,
                       dx_ws_handshake *out) {
  char body[128];
  size_t rlen = strlen(f->reason);
  if (rlen >= sizeof body) rlen = sizeof body - 1;
  memcpy(body, f->reason, rlen);
  body[rlen] = '\n';
  struct error_resp e = {f->status, f->extra, body, body + rlen + 1};
  int rc = queue_error(ws, &e);
  if (rc) return rc;
  out->status = f->status;
  out->reason = f->reason;
  return DX_EHANDSHAKE;
}

/* Negotiates and queues the 101; on success the engine is OPEN. */
static int server_accept(dx_ws *ws, const dx_http_request *req,
                         const dx_ws_accept_policy *pol, const char *proto,
                         dx_ws_handshake *out) {
  const dx_header *key =
      dx_http_header(req->headers, req->num_headers, "Sec-WebSocket-Key");
  struct upgrade_resp u = {.subprotocol = proto, .extra = pol->extra_headers};
  dx_pmd pmd = {0};
  char ext[256];
  int rc = dx_ws_accept_key(key->value, key->value_len, u.accept);
  if (rc) return rc;
  if (pol->deflate.enabled &&
      dx__pmd_negotiate(req->headers, req->num_headers, &pol->deflate, &pmd)) {
    if (dx__pmd_format_response(&pmd, ext, sizeof ext) > 0)
      u.extensions = ext;
    else
      pmd = (dx_pmd){0};
  }
  if ((rc = queue(ws, write_upgrade, &u))) return rc;
  dx__ws_set_pmd(ws, &pmd);
  ws->ready = DX_OPEN;
  *out = (dx_ws_handshake){101, proto, pmd, NULL};
  return 0;
}

int dx_ws_server_handshake(dx_ws *ws, const dx_http_request *req,
                           const dx_ws_accept_policy *policy,
                           dx_ws_handshake *out) {
  static const dx_ws_accept_policy none;
  dx_ws_handshake ignored;
  struct refusal f;
  if (!ws || !req) return DX_EINVAL;
  if (ws->role != DX_ROLE_SERVER || ws->ready != DX_CONNECTING)
    return DX_ESTATE;
  if (!policy) policy = &none;
  if (!out) out = &ignored;
  *out = (dx_ws_handshake){0};
  if (policy->extra_headers && !lines_ok(policy->extra_headers))
    return DX_EINVAL;
  if (!check_request(req, &f)) return server_fail(ws, &f, out);
  const char *proto = choose_subprotocol(req, policy->subprotocols);
  /* "require" means a subprotocol must be agreed: a client that offers
   * none does not speak it either. */
  if (!proto && policy->require_subprotocol) {
    refuse(&f, 400, "no acceptable subprotocol", NULL);
    return server_fail(ws, &f, out);
  }
  return server_accept(ws, req, policy, proto, out);
}

/* ---- client ----------------------------------------------------------- */

static bool options_ok(const dx_ws_client_options *o) {
  if (!o->host || !visible_ok(o->host)) return false;
  if (o->target && !visible_ok(o->target)) return false;
  if (o->origin && !value_ok(o->origin)) return false;
  if (o->extra_headers && !lines_ok(o->extra_headers)) return false;
  for (const char *const *p = o->subprotocols; p && *p; p++)
    if (!is_token(*p)) return false; /* RFC 6455 section 4.1 item 10 */
  return true;
}

static struct dx__client_hs *hs_new(dx_ws *ws, const dx_ws_client_options *o) {
  size_t n = 0, bytes = 0;
  for (const char *const *p = o->subprotocols; p && *p; p++, n++)
    bytes += strlen(*p) + 1;
  size_t size = sizeof(struct dx__client_hs) + bytes;
  struct dx__client_hs *hs = dx__alloc(dx__ws_alloc(ws), size);
  if (!hs) return NULL;
  memset(hs, 0, sizeof *hs);
  hs->size = size;
  hs->offer = o->deflate;
  hs->nprotos = n;
  char *dst = hs->protos;
  for (const char *const *p = o->subprotocols; p && *p; p++) {
    size_t len = strlen(*p) + 1;
    memcpy(dst, *p, len);
    dst += len;
  }
  return hs;
}

struct upgrade_req {
  const dx_ws_client_options *o;
  const struct dx__client_hs *hs;
  char key[25];
  const char *extensions;
};

static void write_request(sink *s, const void *ctx) {
  const struct upgrade_req *r = ctx;
  PUT_LIT(s, "GET ");
  put_str(s, r->o->target ? r->o->target : "/");
  PUT_LIT(s, " HTTP/1.1\r\n");
  put_field(s, "Host", r->o->host);
  PUT_LIT(s, "Upgrade: websocket\r\nConnection: Upgrade\r\n");
  put_field(s, "Sec-WebSocket-Key", r->key);
  PUT_LIT(s, "Sec-WebSocket-Version: 13\r\n");
  put_field(s, "Origin", r->o->origin);
  if (r->hs->nprotos) {
    const char *p = r->hs->protos;
    PUT_LIT(s, "Sec-WebSocket-Protocol: ");
    for (size_t i = 0; i < r->hs->nprotos; i++, p += strlen(p) + 1) {
      if (i) PUT_LIT(s, ", ");
      put_str(s, p);
    }
    PUT_LIT(s, "\r\n");
  }
  put_field(s, "Sec-WebSocket-Extensions", r->extensions);
  if (r->o->extra_headers) put_str(s, r->o->extra_headers);
  PUT_LIT(s, "\r\n");
}

int dx_ws_client_handshake(dx_ws *ws, const dx_ws_client_options *opt) {
  struct upgrade_req r = {.o = opt};
  unsigned char nonce[16];
  char ext[256];
  if (!ws || !opt) return DX_EINVAL;
  if (ws->role != DX_ROLE_CLIENT || ws->ready != DX_CONNECTING ||
      (ws->cold && ws->cold->hs))
    return DX_ESTATE;
  if (!options_ok(opt)) return DX_EINVAL;
  if (opt->deflate.enabled) {
    if (dx__pmd_format_offer(&opt->deflate, ext, sizeof ext) == 0)
      return DX_EINVAL;
    r.extensions = ext;
  }
  /* RFC 6455 section 4.1: a fresh random 16-byte nonce per connection. */
  int rc = dx__random(nonce, sizeof nonce);
  if (rc) return rc;
  EVP_EncodeBlock((unsigned char *)r.key, nonce, sizeof nonce);
  struct dx__client_hs *hs = hs_new(ws, opt);
  if (!hs) return DX_ENOMEM;
  r.hs = hs;
  rc = dx_ws_accept_key(r.key, 24, hs->accept);
  if (rc == 0 && !dx__ws_cold(ws)) rc = DX_ENOMEM;
  if (rc == 0) rc = queue(ws, write_request, &r);
  if (rc) {
    dx__free(dx__ws_alloc(ws), hs, hs->size);
    return rc;
  }
  ws->cold->hs = hs;
  return 0;
}

/* The offered subprotocol equal to the server's choice, or NULL. */
static const char *find_offered(const struct dx__client_hs *hs,
                                const dx_header *h) {
  const char *p = hs->protos;
  for (size_t i = 0; i < hs->nprotos; i++, p += strlen(p) + 1)
    if (strlen(p) == h->value_len && memcmp(p, h->value, h->value_len) == 0)
      return p;
  return NULL;
}

/* RFC 6455 section 4.1, the client's checks of the server's response. */
static const char *check_response(const struct dx__client_hs *hs,
                                  const dx_http_response *resp,
                                  const char **proto) {
  const dx_header *h = resp->headers, *a, *p;
  size_t n = resp->num_headers;
  if (resp->status != 101) return "unexpected HTTP status";
  if (!any_has(h, n, "Upgrade", "websocket"))
    return "Upgrade header does not name websocket";
  if (!any_has(h, n, "Connection", "upgrade"))
    return "Connection header does not name upgrade";
  a = only(h, n, "Sec-WebSocket-Accept");
  if (!a || a->value_len != 28 || memcmp(a->value, hs->accept, 28) != 0)
    return "missing or wrong Sec-WebSocket-Accept";
  p = dx_http_header(h, n, "Sec-WebSocket-Protocol");
  if (!p) return NULL;
  if (p != only(h, n, "Sec-WebSocket-Protocol"))
    return "duplicate Sec-WebSocket-Protocol header";
  if (!(*proto = find_offered(hs, p)))
    return "server chose a subprotocol that was not offered";
  return NULL;
}

static int client_fail(dx_ws *ws, dx_ws_handshake *out, int rc,
                       const char *reason) {
  out->subprotocol = NULL;
  out->pmd = (dx_pmd){0};
  out->reason = reason;
  ws->ready = DX_CLOSED;
  dx__client_hs_free(ws);
  return rc;
}

int dx_ws_client_response(dx_ws *ws, const dx_http_response *resp,
                          dx_ws_handshake *out) {
  dx_ws_handshake ignored;
  if (!ws || !resp) return DX_EINVAL;
  if (ws->role != DX_ROLE_CLIENT || ws->ready != DX_CONNECTING || !ws->cold ||
      !ws->cold->hs)
    return DX_ESTATE;
  if (!out) out = &ignored;
  *out = (dx_ws_handshake){resp->status, NULL, {0}, NULL};
  const char *why = check_response(ws->cold->hs, resp, &out->subprotocol);
  if (why) return client_fail(ws, out, DX_EHANDSHAKE, why);
  if (dx__pmd_client_accept(resp->headers, resp->num_headers,
                            &ws->cold->hs->offer, &out->pmd) != 0)
    return client_fail(ws, out, DX_EEXTENSION, "extension negotiation failed");
  dx__ws_set_pmd(ws, &out->pmd);
  ws->ready = DX_OPEN;
  /* The chosen name points into the handshake block: keep it then. */
  if (!out->subprotocol) dx__client_hs_free(ws);
  return 0;
}
