/*
 * Request semantics on top of the zero-copy head parser: which requests we
 * refuse before routing (RFC 9112 sections 3.2, 6, 9.3), how the target
 * splits, and how a path becomes safe to resolve as a file.
 *
 * Everything here is about framing and smuggling: when two HTTP agents (a
 * proxy in front, us behind) could read the same bytes as different
 * requests, we refuse and close rather than guess.
 */
#include "http/internal.h"

#include <string.h>

bool dx__ascii_ieq(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if ((unsigned)x - 'A' < 26u) x |= 0x20;
    if ((unsigned)y - 'A' < 26u) y |= 0x20;
    if (x != y) return false;
  }
  return true;
}

static bool name_is(const dx_header *h, const char *name) {
  size_t n = strlen(name);
  return h->name_len == n && dx__ascii_ieq(h->name, name, n);
}

/* A field may be sent as several lines that form one list (RFC 9110
 * section 5.3), so every line counts, not just the first. */
bool dx__headers_list_has(const dx_http_request *req, const char *name,
                          const char *token) {
  for (size_t i = 0; i < req->num_headers; i++) {
    const dx_header *h = &req->headers[i];
    if (name_is(h, name) && dx_http_list_has(h->value, h->value_len, token))
      return true;
  }
  return false;
}

dx_http_method dx_http_method_of(const char *method, size_t len) {
  static const struct {
    const char *name;
    dx_http_method m;
  } tab[] = {{"GET", DX_HTTP_GET},       {"HEAD", DX_HTTP_HEAD},
             {"POST", DX_HTTP_POST},     {"PUT", DX_HTTP_PUT},
             {"DELETE", DX_HTTP_DELETE}, {"OPTIONS", DX_HTTP_OPTIONS},
             {"PATCH", DX_HTTP_PATCH},   {"CONNECT", DX_HTTP_CONNECT},
             {"TRACE", DX_HTTP_TRACE}};
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
    if (strlen(tab[i].name) == len && memcmp(tab[i].name, method, len) == 0)
      return tab[i].m;
  return DX_HTTP_OTHER;
}

/* ------------------------------------------------------------------------ */
/* Target                                                                   */

static bool is_hex(unsigned char c) {
  return dx__is_digit(c) || (unsigned)(c | 0x20) - 'a' < 6u;
}

static unsigned hex_val(unsigned char c) {
  return dx__is_digit(c) ? (unsigned)c - '0' : (unsigned)(c | 0x20) - 'a' + 10;
}

/* reg-name and IP-literal characters (RFC 3986 section 3.2.2):
 * unreserved, sub-delims and '%' of a pct-encoded triplet; ':' only
 * inside brackets. */
static bool host_char(unsigned char c, bool in_brackets) {
  if (dx__is_alpha(c) || dx__is_digit(c)) return true;
  if (c == ':') return in_brackets;
  return c != 0 && strchr("-._~!$&'()*+,;=%", c) != NULL;
}

/* host [ ":" port ] (RFC 9110 section 7.2). Empty is valid: a client
 * sends an empty Host when the target has no authority. */
static bool valid_host(const char *h, size_t n) {
  size_t i = 0;
  bool br = n > 0 && h[0] == '[';
  if (br) i = 1;
  for (; i < n; i++) {
    unsigned char c = (unsigned char)h[i];
    if (br && c == ']') break;
    if (!br && c == ':') break;
    if (!host_char(c, br)) return false;
    if (c == '%' && (i + 2 >= n || !is_hex((unsigned char)h[i + 1]) ||
                     !is_hex((unsigned char)h[i + 2])))
      return false;
  }
  if (br) {
    if (i == n || i == 1) return false; /* no ']' or "[]" */
    i++;
  }
  if (i == n) return true;
  if (h[i] != ':' || n - i - 1 > 5) return false;
  for (i++; i < n; i++)
    if (!dx__is_digit((unsigned char)h[i])) return false;
  return true;
}

static const char root_path[] = "/";

/* p is at '/', '?' or end. The path of an absolute-form target may be
 * empty; it means "/" (RFC 9112 section 3.2.2). */
static void split_path(const char *p, const char *end, dx_http_target *t) {
  const char *q = memchr(p, '?', (size_t)(end - p));
  const char *pe = q ? q : end;
  if (pe == p) {
    t->path = root_path;
    t->path_len = 1;
  } else {
    t->path = p;
    t->path_len = (size_t)(pe - p);
  }
  if (q) {
    t->query = q + 1;
    t->query_len = (size_t)(end - q - 1);
  }
}

static size_t scheme_len(const char *s, size_t n) {
  if (n >= 7 && dx__ascii_ieq(s, "http://", 7)) return 7;
  if (n >= 8 && dx__ascii_ieq(s, "https://", 8)) return 8;
  return 0;
}

int dx_http_target_parse(const dx_http_request *req, dx_http_target *t) {
  const char *s = req->target;
  size_t n = req->target_len;
  memset(t, 0, sizeof *t);
  /* A fragment is never part of a request target (RFC 9112 section 3.2);
   * one here means a broken or hostile client. */
  if (n == 0 || memchr(s, '#', n)) return DX_EHTTP;
  if (s[0] == '/') {
    split_path(s, s + n, t);
    return 0;
  }
  if (n == 1 && s[0] == '*') {
    if (dx_http_method_of(req->method, req->method_len) != DX_HTTP_OPTIONS)
      return DX_EHTTP;
    t->path = s;
    t->path_len = 1;
    t->asterisk = true;
    return 0;
  }
  size_t sl = scheme_len(s, n);
  if (sl == 0) return DX_EHTTP; /* authority form or garbage */
  const char *a = s + sl, *end = s + n, *e = a;
  while (e < end && *e != '/' && *e != '?')
    e++;
  /* Userinfo in an http(s) URI is deprecated and a phishing vector
   * (RFC 9110 section 4.2.4): an error. */
  if (e == a || memchr(a, '@', (size_t)(e - a)) ||
      !valid_host(a, (size_t)(e - a)))
    return DX_EHTTP;
  t->authority = a;
  t->authority_len = (size_t)(e - a);
  split_path(e, end, t);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Path                                                                     */

/* Decodes one segment (up to a raw '/' or the end) at in[*i] into out[*o].
 * Decoded '/' would make one segment two, and '\' is a separator to some
 * other systems a request may pass through: both refused, as are NUL and
 * other controls, which no sane file name contains. */
static int decode_segment(const char *in, size_t len, size_t *i, char *out,
                          size_t *o, size_t cap) {
  while (*i < len && in[*i] != '/') {
    unsigned char c = (unsigned char)in[*i];
    if (c == '%') {
      if (len - *i < 3 || !is_hex((unsigned char)in[*i + 1]) ||
          !is_hex((unsigned char)in[*i + 2]))
        return DX_EHTTP;
      c = (unsigned char)(hex_val((unsigned char)in[*i + 1]) << 4 |
                          hex_val((unsigned char)in[*i + 2]));
      if (c == '/') return DX_EHTTP;
      *i += 3;
    } else {
      (*i)++;
    }
    if (c < 0x20 || c == 0x7f || c == '\\') return DX_EHTTP;
    if (*o + 1 >= cap) return DX_ENOSPC; /* keep room for the NUL */
    out[(*o)++] = (char)c;
  }
  return 0;
}

/* RFC 3986 section 5.2.4, on decoded segments, except that ".." above the
 * root is an error: a client that asks for it is probing, and clamping
 * would make "/../x" and "/x" the same resource. */
int dx_http_path_clean(const char *in, size_t len, char *out, size_t cap) {
  if (len == 0 || in[0] != '/') return DX_EHTTP;
  if (cap < 2) return DX_ENOSPC;
  size_t i = 1, o = 1;
  bool more;
  out[0] = '/';
  do {
    size_t s = o; /* out[s - 1] == '/' */
    int rc = decode_segment(in, len, &i, out, &o, cap);
    if (rc) return rc;
    more = i < len;
    size_t n = o - s;
    if (n == 1 && out[s] == '.') {
      o = s;
    } else if (n == 2 && out[s] == '.' && out[s + 1] == '.') {
      if (s == 1) return DX_EHTTP;
      for (o = s - 1; out[o - 1] != '/'; o--) {
      }
    } else if (n > 0 && more) {
      if (o + 1 >= cap) return DX_ENOSPC;
      out[o++] = '/';
    }
    if (more) i++;
  } while (more);
  out[o] = '\0';
  return (int)o;
}

/* ------------------------------------------------------------------------ */
/* Framing                                                                  */

static int fail(dx_http_info *info, int status, const char *reason) {
  info->status = status;
  info->reason = reason;
  return DX_EHTTP;
}

/* 1*DIGIT, or a list of identical values ("5, 5"), which RFC 9110 section
 * 8.6 lets a recipient accept because some intermediaries merge
 * duplicates. No sign, no inner space, no overflow: any leniency here is
 * a disagreement with the next hop about where the body ends. */
static bool content_length(const char *v, size_t n, bool *seen, uint64_t *out) {
  size_t i = 0;
  for (;;) {
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
      i++;
    size_t b = i;
    uint64_t x = 0;
    for (; i < n && dx__is_digit((unsigned char)v[i]); i++) {
      unsigned d = (unsigned)(v[i] - '0');
      if (x > (UINT64_MAX - d) / 10) return false;
      x = x * 10 + d;
    }
    if (i == b) return false;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
      i++;
    if (*seen && x != *out) return false;
    *seen = true;
    *out = x;
    if (i == n) return true;
    if (v[i++] != ',') return false;
  }
}

/* Transfer-Encoding as one list over all its lines. Counts codings and
 * chunked ones, and remembers whether the last one is chunked. */
struct te {
  size_t codings, chunked;
  bool last_chunked, present;
};

static void te_scan(const char *v, size_t n, struct te *te) {
  te->present = true;
  for (size_t i = 0; i <= n;) {
    size_t b = i, e;
    while (i < n && v[i] != ',')
      i++;
    e = i++;
    while (b < e && (v[b] == ' ' || v[b] == '\t'))
      b++;
    while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e == b) continue; /* empty list elements are ignored (5.6.1) */
    te->codings++;
    te->last_chunked = e - b == 7 && dx__ascii_ieq(v + b, "chunked", 7);
    te->chunked += te->last_chunked;
  }
}

/* RFC 9112 sections 6.1 and 6.3. */
static int check_te(const dx_http_request *req, const struct te *te,
                    dx_http_info *info) {
  if (info->has_content_length)
    return fail(info, 400, "both Transfer-Encoding and Content-Length");
  if (req->version_minor == 0)
    return fail(info, 400, "Transfer-Encoding in HTTP/1.0");
  if (te->codings == 0) return fail(info, 400, "empty Transfer-Encoding");
  if (!te->last_chunked)
    return fail(info, 400, "Transfer-Encoding does not end in chunked");
  if (te->chunked > 1) return fail(info, 400, "chunked applied twice");
  if (te->codings > 1)
    return fail(info, 501, "transfer coding not implemented");
  info->chunked = true;
  return 0;
}

static int check_headers(const dx_http_request *req, dx_http_info *info,
                         struct te *te) {
  const dx_header *host = NULL;
  for (size_t i = 0; i < req->num_headers; i++) {
    const dx_header *h = &req->headers[i];
    if (name_is(h, "Host")) {
      if (host) return fail(info, 400, "more than one Host");
      host = h;
    } else if (name_is(h, "Content-Length")) {
      if (!content_length(h->value, h->value_len, &info->has_content_length,
                          &info->content_length))
        return fail(info, 400, "invalid Content-Length");
    } else if (name_is(h, "Transfer-Encoding")) {
      te_scan(h->value, h->value_len, te);
    }
  }
  if (!host && req->version_minor >= 1) return fail(info, 400, "missing Host");
  if (host && !valid_host(host->value, host->value_len))
    return fail(info, 400, "invalid Host");
  if (host) {
    info->host = host->value;
    info->host_len = host->value_len;
  }
  return 0;
}

int dx_http_request_check(const dx_http_request *req, dx_http_info *info) {
  struct te te = {0};
  int rc;
  memset(info, 0, sizeof *info);
  info->method = dx_http_method_of(req->method, req->method_len);
  if ((rc = check_headers(req, info, &te))) return rc;
  if (te.present && (rc = check_te(req, &te, info))) return rc;
  if (dx_http_target_parse(req, &info->target))
    return fail(info, 400, "invalid request target");
  if (info->target.authority) {
    info->host = info->target.authority;
    info->host_len = info->target.authority_len;
  }
  if (req->version_minor >= 1)
    info->keep_alive = !dx__headers_list_has(req, "Connection", "close");
  else
    info->keep_alive = dx__headers_list_has(req, "Connection", "keep-alive") &&
                       !dx__headers_list_has(req, "Connection", "close");
  const dx_header *up =
      dx_http_header(req->headers, req->num_headers, "Upgrade");
  info->is_upgrade = req->version_minor >= 1 && up && up->value_len > 0 &&
                     dx__headers_list_has(req, "Connection", "upgrade");
  info->expect_continue = req->version_minor >= 1 &&
                          dx__headers_list_has(req, "Expect", "100-continue");
  return 0;
}
