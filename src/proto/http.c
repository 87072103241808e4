/*
 * HTTP/1.x head parsers (RFC 9112 sections 2-5), in the manner of
 * picohttpparser: stateless and zero-copy. Every call parses from the start
 * of the buffer, so the caller simply calls again with more bytes; outputs
 * point into the caller's buffer.
 *
 * Strict on purpose: these heads come from the network, and every leniency
 * (bare LF, obs-fold, whitespace before the colon) is a request-smuggling
 * vector when a proxy in front reads the same bytes differently
 * (RFC 9112 section 11.2).
 *
 * Never reads past buf + len: the tests place input against a PROT_NONE
 * guard page.
 */
#include "proto/internal.h"

#include <limits.h>

enum {
  C_TOKEN = 1,  /* tchar (RFC 9110 section 5.6.2) */
  C_VALUE = 2,  /* field-vchar, SP, HTAB (RFC 9110 section 5.5) */
  C_TARGET = 4, /* request-target: visible ASCII (RFC 9112 section 3.2) */
};

static const uint8_t cls[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, /* 00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 10 */
    2, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6, /* 20 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, /* 30 */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 40 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7, /* 50 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 60 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0, /* 70 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 80 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* 90 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* a0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* b0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* c0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* d0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* e0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, /* f0 */
};

#define DEFAULT_MAX_LINE ((size_t)8 << 10)
#define DEFAULT_MAX_HEAD ((size_t)16 << 10)

/* The parse position. `end` is clipped to max_head, so a head that never
 * ends is caught at the limit instead of asking for more forever. */
struct rd {
  const char *p;    /* start of the next line */
  const char *line; /* start of the current line */
  const char *end;
  size_t max_line;
};

static const char *skip(const char *p, const char *end, unsigned c) {
  while (p < end && (cls[(unsigned char)*p] & c))
    p++;
  return p;
}

#define ONES UINT64_C(0x0101010101010101)
#define HIGH UINT64_C(0x8080808080808080)

/* Field values dominate the bytes of a head (cookies, user agents), so they
 * are checked eight at a time. A word is all field-vchar when no byte is
 * below 0x20 (HTAB falls to the byte loop) and none is DEL; bytes >= 0x80
 * are obs-text, allowed. The bit tricks are exact as booleans. */
static const char *skip_value(const char *p, const char *end) {
  while (end - p >= 8) {
    uint64_t w, del;
    memcpy(&w, p, 8);
    del = w ^ (ONES * 0x7f);
    if (((w - ONES * 0x20) & ~w & HIGH) | ((del - ONES) & ~del & HIGH)) break;
    p += 8;
  }
  return skip(p, end, C_VALUE);
}

/* Where a scan stopped: past max_line is too large whether or not the line
 * is complete (so a slow sender cannot grow a line forever), at the end of
 * input more is needed, anything else is for the caller to judge. */
static int stopped(const struct rd *r, const char *q) {
  if ((size_t)(q - r->line) > r->max_line) return DX_EHDRSIZE;
  return q == r->end ? DX_EAGAIN : 0;
}

/* The current line must end at q with CRLF: a bare CR or LF is an error,
 * never a line end (RFC 9112 section 2.2). */
static int end_line(struct rd *r, const char *q) {
  int rc = stopped(r, q);
  if (rc) return rc;
  if (*q != '\r') return DX_EHTTP;
  if (q + 1 == r->end) return DX_EAGAIN;
  if (q[1] != '\n') return DX_EHTTP;
  r->p = r->line = q + 2;
  return 0;
}

/* "HTTP/1.0" or "HTTP/1.1" at q (RFC 9112 section 2.3: the name is
 * case-sensitive). A prefix that can still become one asks for more. */
static int version(const struct rd *r, const char *q, int *minor) {
  size_t avail = (size_t)(r->end - q);
  size_t n = avail < 7 ? avail : 7;
  if (memcmp(q, "HTTP/1.", n) != 0) return DX_EHTTP;
  if (avail < 8) return stopped(r, r->end);
  if (q[7] != '0' && q[7] != '1') return DX_EHTTP;
  *minor = q[7] - '0';
  return 0;
}

/* Tokens, a target and the version separated by exactly one SP
 * (RFC 9112 section 3). */
static int request_line(struct rd *r, dx_http_request *req) {
  const char *p = r->p, *q = skip(p, r->end, C_TOKEN);
  int rc = stopped(r, q);
  if (rc) return rc;
  if (q == p || *q != ' ') return DX_EHTTP;
  req->method = p;
  req->method_len = (size_t)(q - p);
  p = q + 1;
  q = skip(p, r->end, C_TARGET);
  if ((rc = stopped(r, q))) return rc;
  if (q == p || *q != ' ') return DX_EHTTP;
  req->target = p;
  req->target_len = (size_t)(q - p);
  p = q + 1;
  if ((rc = version(r, p, &req->version_minor))) return rc;
  return end_line(r, p + 8);
}

/* RFC 9112 section 4: version SP 3DIGIT SP reason. A missing SP before an
 * empty reason is tolerated: the reason carries no meaning (a client SHOULD
 * ignore it) and some servers leave the SP out. */
static int status_line(struct rd *r, dx_http_response *resp) {
  const char *p = r->p;
  int rc = version(r, p, &resp->version_minor), status = 0;
  if (rc) return rc;
  p += 8;
  for (int i = 0; i < 4; i++, p++) {
    if ((rc = stopped(r, p))) return rc;
    if (i == 0 ? *p != ' ' : (unsigned)(*p - '0') > 9) return DX_EHTTP;
    if (i > 0) status = status * 10 + (*p - '0');
  }
  if (status < 100 || status > 599) return DX_EHTTP;
  resp->status = status;
  if ((rc = stopped(r, p))) return rc;
  if (*p == ' ')
    p++;
  else if (*p != '\r')
    return DX_EHTTP;
  resp->reason = p;
  p = skip_value(p, r->end);
  resp->reason_len = (size_t)(p - resp->reason);
  return end_line(r, p);
}

/* One field line: token ":" OWS value OWS (RFC 9112 section 5). A line
 * starting with whitespace (obs-fold) or with whitespace before the colon
 * fails the token scan and is rejected, as section 5.1/5.2 allow. */
static int field_line(struct rd *r, dx_header *h) {
  const char *p = r->p, *q = skip(p, r->end, C_TOKEN), *v;
  int rc = stopped(r, q);
  if (rc) return rc;
  if (q == p || *q != ':') return DX_EHTTP;
  h->name = p;
  h->name_len = (size_t)(q - p);
  p = q + 1;
  while (p < r->end && (*p == ' ' || *p == '\t'))
    p++;
  q = skip_value(p, r->end);
  if ((rc = end_line(r, q))) return rc;
  v = q;
  while (v > p && (v[-1] == ' ' || v[-1] == '\t'))
    v--;
  h->value = p;
  h->value_len = (size_t)(v - p);
  return 0;
}

/* Field lines up to the empty line. The count is written back only on
 * success: on DX_EAGAIN the caller retries with the same capacity. */
static int fields(struct rd *r, dx_header *h, size_t *num) {
  for (size_t n = 0;; n++) {
    if (r->p == r->end) return DX_EAGAIN;
    if (*r->p == '\r') {
      int rc = end_line(r, r->p);
      if (rc == 0) *num = n;
      return rc;
    }
    if (n == *num) return DX_EHDRCOUNT;
    int rc = field_line(r, &h[n]);
    if (rc) return rc;
  }
}

static size_t max_head(const dx_http_limits *lim) {
  size_t m = lim && lim->max_head ? lim->max_head : DEFAULT_MAX_HEAD;
  return m < INT_MAX ? m : INT_MAX; /* the length is returned as an int */
}

static struct rd start(const char *buf, size_t len, const dx_http_limits *lim) {
  size_t clip = max_head(lim);
  struct rd r = {buf, buf, buf + (len < clip ? len : clip),
                 lim && lim->max_line ? lim->max_line : DEFAULT_MAX_LINE};
  return r;
}

/* Input cut at max_head that is still incomplete can only grow past it. */
static int finish(const struct rd *r, const char *buf, size_t len,
                  const dx_http_limits *lim, int rc) {
  if (rc == DX_EAGAIN && len >= max_head(lim)) return DX_EHDRSIZE;
  return rc ? rc : (int)(r->p - buf);
}

int dx_http_parse_request(const char *buf, size_t len, dx_http_request *req,
                          const dx_http_limits *lim) {
  if (len == 0) return DX_EAGAIN;
  struct rd r = start(buf, len, lim);
  /* RFC 9112 section 2.2: a server SHOULD ignore at least one empty line
   * (CRLF) received before the request-line. */
  while (r.p < r.end && *r.p == '\r') {
    if (r.p + 1 == r.end) return finish(&r, buf, len, lim, DX_EAGAIN);
    if (r.p[1] != '\n') return DX_EHTTP;
    r.p += 2;
  }
  r.line = r.p;
  size_t num = req->num_headers;
  int rc = request_line(&r, req);
  if (rc == 0) rc = fields(&r, req->headers, &num);
  if (rc == 0) req->num_headers = num;
  return finish(&r, buf, len, lim, rc);
}

int dx_http_parse_response(const char *buf, size_t len, dx_http_response *resp,
                           const dx_http_limits *lim) {
  if (len == 0) return DX_EAGAIN;
  struct rd r = start(buf, len, lim);
  size_t num = resp->num_headers;
  int rc = status_line(&r, resp);
  if (rc == 0) rc = fields(&r, resp->headers, &num);
  if (rc == 0) resp->num_headers = num;
  return finish(&r, buf, len, lim, rc);
}

/* Field names and the tokens of Connection/Upgrade are case-insensitive
 * (RFC 9110 sections 5.1, 7.6.1, 7.8); ASCII only, never the locale. */
static bool ascii_ieq(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if ((unsigned)(x - 'A') < 26) x |= 0x20;
    if ((unsigned)(y - 'A') < 26) y |= 0x20;
    if (x != y) return false;
  }
  return true;
}

const dx_header *dx_http_header(const dx_header *headers, size_t n,
                                const char *name) {
  size_t len = strlen(name);
  for (size_t i = 0; i < n; i++)
    if (headers[i].name_len == len && ascii_ieq(headers[i].name, name, len))
      return &headers[i];
  return NULL;
}

/* RFC 9110 section 5.6.1: #element lists, OWS around the commas, empty
 * elements ignored. */
bool dx_http_list_has(const char *value, size_t len, const char *token) {
  size_t tlen = strlen(token);
  for (size_t i = 0; i < len;) {
    size_t b = i, e;
    while (i < len && value[i] != ',')
      i++;
    e = i++;
    while (b < e && (value[b] == ' ' || value[b] == '\t'))
      b++;
    while (e > b && (value[e - 1] == ' ' || value[e - 1] == '\t'))
      e--;
    if (e - b == tlen && ascii_ieq(value + b, token, tlen)) return true;
  }
  return false;
}

/* RFC 9110 section 15: one table for the engine's rejections and the HTTP
 * layer's responses. */
const char *dx_http_status_text(int status) {
  static const struct {
    int status;
    const char *text;
  } tab[] = {
      {100, "Continue"},
      {101, "Switching Protocols"},
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {204, "No Content"},
      {206, "Partial Content"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {303, "See Other"},
      {304, "Not Modified"},
      {307, "Temporary Redirect"},
      {308, "Permanent Redirect"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {406, "Not Acceptable"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {410, "Gone"},
      {411, "Length Required"},
      {412, "Precondition Failed"},
      {413, "Content Too Large"},
      {414, "URI Too Long"},
      {415, "Unsupported Media Type"},
      {416, "Range Not Satisfiable"},
      {417, "Expectation Failed"},
      {421, "Misdirected Request"},
      {422, "Unprocessable Content"},
      {426, "Upgrade Required"},
      {428, "Precondition Required"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
      {505, "HTTP Version Not Supported"},
  };
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
    if (tab[i].status == status) return tab[i].text;
  return "";
}
