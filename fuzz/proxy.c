/*
 * Fuzz what a proxy or a client says about the client's address: the
 * PROXY protocol parser, X-Forwarded-For, addresses and networks. Checks:
 * a header is no longer than the input nor than the protocol allows, every
 * shorter prefix of it is incomplete, bytes after it change nothing; a
 * parsed address formats and parses back to itself; a network contains
 * its own address; an XFF list gives the same client as one line or two.
 */
#include <duplex/http.h>

#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) ((c) ? (void)0 : abort())

static void proxy(const uint8_t *buf, size_t size) {
  dx_proxy_header h, again;
  int rc = dx_proxy_parse(buf, size, &h, NULL);
  REQUIRE(rc == 0 || rc == DX_EAGAIN || rc == DX_EPROXY || rc > 0);
  if (rc <= 0) return;
  REQUIRE((size_t)rc <= size && rc <= DX_PROXY_V2_MAX);
  REQUIRE(h.version == 1 ? rc <= DX_PROXY_V1_MAX : h.version == 2);
  for (int k = 0; k < rc; k++)
    REQUIRE(dx_proxy_parse(buf, (size_t)k, &again, NULL) == DX_EAGAIN);
  REQUIRE(dx_proxy_parse(buf, (size_t)rc, &again, NULL) == rc);
  REQUIRE(memcmp(&h, &again, sizeof h) == 0);
}

static void address(const char *s, size_t n) {
  dx_ip ip, back;
  char text[46];
  if (dx_ip_parse(s, n, &ip) == 0) {
    dx_ip_format(&ip, text);
    REQUIRE(dx_ip_parse(text, strlen(text), &back) == 0);
    REQUIRE(memcmp(&ip, &back, sizeof ip) == 0);
  }
  dx_cidr net;
  const char *why = NULL;
  if (dx_cidr_parse(s, &net, &why) == 0) {
    REQUIRE(net.bits <= 128 && dx_cidr_match(&net, 1, &net.ip));
  } else {
    REQUIRE(why != NULL);
  }
}

/* One line, or the same list as two lines split at its first comma: the
 * same client (several lines are one list). */
static void xff(const char *s, size_t n) {
  dx_cidr t[2];
  dx_cidr_parse("10.0.0.0/8", &t[0], NULL);
  dx_cidr_parse("2001:db8::/32", &t[1], NULL);
  dx_ip start, one, two;
  dx_ip_parse("10.0.0.1", 8, &start);
  one = two = start;
  dx_header h[2] = {{"X-Forwarded-For", 15, s, n}};
  int r1 = dx_http_forwarded_for(h, 1, t, 2, &one);
  REQUIRE(r1 == 1 || memcmp(&one, &start, sizeof one) == 0);
  const char *comma = memchr(s, ',', n);
  if (!comma) return;
  size_t a = (size_t)(comma - s);
  h[0].value_len = a;
  h[1] = (dx_header){"x-forwarded-for", 15, comma + 1, n - a - 1};
  int r2 = dx_http_forwarded_for(h, 2, t, 2, &two);
  REQUIRE(r1 == r2 && memcmp(&one, &two, sizeof one) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *buf = malloc(size ? size : 1); /* exact size: ASan sees over-reads */
  memcpy(buf, data, size);
  proxy(buf, size);
  xff((const char *)buf, size);
  char *str = malloc(size + 1);
  memcpy(str, data, size);
  str[size] = 0;
  address(str, size);
  free(str);
  free(buf);
  return 0;
}
