/*
 * Response formatting. Pure functions into caller buffers: no allocation,
 * no clock (the caller passes the Date), so the server decides where the
 * bytes go and when.
 */
#include "http/internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

void dx__out_mem(dx__out *o, const void *p, size_t n) {
  if (o->overflow || o->cap - o->len < n) {
    o->overflow = true;
    return;
  }
  if (n) memcpy(o->p + o->len, p, n);
  o->len += n;
}

void dx__out_str(dx__out *o, const char *s) {
  dx__out_mem(o, s, strlen(s));
}

void dx__out_fmt(dx__out *o, const char *fmt, ...) {
  va_list ap;
  if (o->overflow) return;
  size_t room = o->cap - o->len;
  va_start(ap, fmt);
  int n = vsnprintf(o->p + o->len, room, fmt, ap);
  va_end(ap);
  /* vsnprintf needs room for its NUL, which is not part of the output. */
  if (n < 0 || (size_t)n >= room)
    o->overflow = true;
  else
    o->len += (size_t)n;
}

/* Each line "Name: value\r\n": a token, a colon, then no CR or LF but the
 * final CRLF. Anything else could end the head early or smuggle a header
 * into someone else's response. */
bool dx__header_lines_ok(const char *s) {
  while (*s) {
    const char *p = s;
    while (*p && *p != ':' && *p > ' ' && *p < 0x7f)
      p++;
    if (p == s || *p != ':') return false;
    while (*p && *p != '\r' && *p != '\n')
      p++;
    if (p[0] != '\r' || p[1] != '\n') return false;
    s = p + 2;
  }
  return true;
}

static bool no_crlf(const char *s) {
  return strpbrk(s, "\r\n") == NULL;
}

/* 1xx, 204 and 304 never have a body, and the length they would state is
 * not theirs to state (RFC 9110 sections 8.6 and 15.4.5). */
static bool bodiless(int status) {
  return status < 200 || status == 204 || status == 304;
}

int dx_http_reply_format(char *buf, size_t cap, const dx_http_reply *r) {
  if (r->status < 100 || r->status > 599) return DX_EINVAL;
  if ((r->content_type && !no_crlf(r->content_type)) ||
      (r->extra_headers && !dx__header_lines_ok(r->extra_headers)))
    return DX_EINVAL;
  dx__out o = {buf, 0, cap < INT_MAX ? cap : INT_MAX, false};
  char page[64];
  const void *body = r->body;
  size_t blen = r->body_len;
  if (!body && r->status >= 400) {
    int n = snprintf(page, sizeof page, "%d %s\n", r->status,
                     dx_http_status_text(r->status));
    body = page;
    blen = (size_t)n;
  }
  const char *text = dx_http_status_text(r->status);
  dx__out_fmt(&o, "HTTP/1.1 %d %s\r\n", r->status, text);
  char date[30];
  if (r->date && dx_http_date(r->date, date) > 0)
    dx__out_fmt(&o, "Date: %s\r\n", date);
  dx__out_str(&o, "Server: duplex\r\n");
  if (!bodiless(r->status)) {
    if (body)
      dx__out_fmt(&o, "Content-Type: %s\r\n",
                  r->content_type ? r->content_type
                                  : "text/plain; charset=utf-8");
    dx__out_fmt(&o, "Content-Length: %zu\r\n", body ? blen : 0);
  }
  dx__out_str(&o, r->keep_alive ? "Connection: keep-alive\r\n"
                                : "Connection: close\r\n");
  if (r->extra_headers) dx__out_str(&o, r->extra_headers);
  dx__out_str(&o, "\r\n");
  if (body && !r->head_only && !bodiless(r->status))
    dx__out_mem(&o, body, blen);
  return o.overflow ? DX_ENOSPC : (int)o.len;
}
