/* ws:// and wss:// URLs (RFC 6455 section 3) for the client. */
#include "client/internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <strings.h>

typedef struct out_buf {
  char *p;
  size_t len, cap;
  bool full;
} out_buf;

/* Appends n bytes (no terminator). */
static void append(out_buf *o, const char *s, size_t n) {
  if (o->full || o->len + n + 1 > o->cap) {
    o->full = true;
    return;
  }
  memcpy(o->p + o->len, s, n);
  o->len += n;
}

/* Terminates the string that started at `start`; returns it ("" if full). */
static const char *finish(out_buf *o, size_t start) {
  append(o, "", 1);
  return o->full ? "" : o->p + start;
}

static const char *put(out_buf *o, const char *s, size_t n) {
  size_t start = o->len;
  append(o, s, n);
  return finish(o, start);
}

/* Registered names: unreserved characters only (RFC 3986 3.2.2); percent
 * escapes and sub-delims are legal there but no DNS name uses them. */
static bool host_char(unsigned char c) {
  return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static int parse_port(const char *p, size_t n, int *port) {
  if (n == 0 || n > 5) return DX_EINVAL;
  int v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)p[i])) return DX_EINVAL;
    v = v * 10 + (p[i] - '0');
  }
  if (v < 1 || v > 65535) return DX_EINVAL;
  *port = v;
  return 0;
}

/* The host part of the authority [a, end): sets host/ipv6/port. */
static int parse_authority(const char *a, const char *end, dx__url *u,
                           out_buf *o) {
  const char *h = a, *hend, *colon;
  if (*a == '[') {
    const char *close = memchr(a, ']', (size_t)(end - a));
    if (!close) return DX_EINVAL;
    h = a + 1;
    hend = close;
    char tmp[INET6_ADDRSTRLEN];
    unsigned char bin[16];
    size_t n = (size_t)(hend - h);
    if (n == 0 || n >= sizeof tmp) return DX_EINVAL;
    memcpy(tmp, h, n);
    tmp[n] = 0;
    /* No zone identifiers ("%25eth0"): inet_pton rejects them too. */
    if (inet_pton(AF_INET6, tmp, bin) != 1) return DX_EINVAL;
    u->ipv6 = true;
    colon = close + 1 < end ? close + 1 : NULL;
    if (colon && *colon != ':') return DX_EINVAL;
  } else {
    colon = memchr(a, ':', (size_t)(end - a));
    hend = colon ? colon : end;
    if (hend == h) return DX_EINVAL;
    for (const char *p = h; p < hend; p++)
      if (!host_char((unsigned char)*p)) return DX_EINVAL;
  }
  if (colon && parse_port(colon + 1, (size_t)(end - colon - 1), &u->port))
    return DX_EINVAL;
  u->host = put(o, h, (size_t)(hend - h));
  return 0;
}

/* Path and query: visible ASCII kept, bytes >= 0x80 percent-encoded. */
static int parse_target(const char *p, dx__url *u, out_buf *o) {
  static const char hex[] = "0123456789ABCDEF";
  size_t start = o->len;
  if (*p != '/') append(o, "/", 1); /* "ws://h?x" -> "/?x" */
  for (; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '#' || c <= 0x20 || c == 0x7f) return DX_EINVAL;
    if (c >= 0x80) {
      char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
      append(o, esc, 3);
    } else {
      append(o, p, 1);
    }
  }
  u->target = finish(o, start);
  return o->full ? DX_ENOSPC : 0;
}

static int parse(const char *url, dx__url *u, out_buf *o) {
  const char *p;
  if (strncasecmp(url, "ws://", 5) == 0) {
    p = url + 5;
  } else if (strncasecmp(url, "wss://", 6) == 0) {
    p = url + 6;
    u->tls = true;
  } else {
    return DX_EINVAL;
  }
  u->port = u->tls ? 443 : 80;
  const char *end = p + strcspn(p, "/?#");
  if (memchr(p, '@', (size_t)(end - p))) return DX_EINVAL;
  int rc = parse_authority(p, end, u, o);
  if (rc) return rc;
  rc = parse_target(end, u, o);
  if (rc) return rc;
  char auth[300];
  int n;
  bool dflt = u->port == (u->tls ? 443 : 80);
  if (u->ipv6)
    n = dflt ? snprintf(auth, sizeof auth, "[%s]", u->host)
             : snprintf(auth, sizeof auth, "[%s]:%d", u->host, u->port);
  else
    n = dflt ? snprintf(auth, sizeof auth, "%s", u->host)
             : snprintf(auth, sizeof auth, "%s:%d", u->host, u->port);
  if (n < 0 || (size_t)n >= sizeof auth) return DX_EINVAL; /* absurd name */
  u->authority = put(o, auth, (size_t)n);
  return o->full ? DX_ENOSPC : 0;
}

int dx__url_parse(const char *url, dx__url *out, char *buf, size_t cap) {
  if (!url || !out || !buf) return DX_EINVAL;
  *out = (dx__url){0};
  out_buf o = {.p = buf, .cap = cap};
  int rc = parse(url, out, &o);
  if (rc) *out = (dx__url){0};
  return rc;
}
