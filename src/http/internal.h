/*
 * Internals shared by the http layer's files. Nothing here is installed;
 * names are dx__ (internal) per STYLE.md.
 */
#ifndef DX_HTTP_INTERNAL_H
#define DX_HTTP_INTERNAL_H

#include <duplex/http.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

/* Appends to a fixed buffer; remembers overflow instead of failing at each
 * call, so a head is written as a straight sequence and checked once. */
typedef struct dx__out {
  char *p;
  size_t len, cap;
  bool overflow;
} dx__out;

void dx__out_mem(dx__out *o, const void *p, size_t n);
void dx__out_str(dx__out *o, const char *s);
void dx__out_fmt(dx__out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ASCII classes; never the locale (isdigit() may accept more). */
static inline bool dx__is_digit(unsigned char c) {
  return (unsigned)c - '0' < 10u;
}
static inline bool dx__is_alpha(unsigned char c) {
  return (unsigned)(c | 0x20) - 'a' < 26u;
}

/* ASCII case-insensitive comparison of n bytes; never the locale. */
bool dx__ascii_ieq(const char *a, const char *b, size_t n);

/* True for header lines that are all "Name: value\r\n" with no stray CR or
 * LF (so a caller's string cannot inject a header or end the head). */
bool dx__header_lines_ok(const char *lines);

/* The "Connection"-style token check over every line of a header. */
bool dx__headers_list_has(const dx_http_request *req, const char *name,
                          const char *token);

#endif
