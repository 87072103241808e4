/*
 * Fuzz the HTTP head parsers. The input is parsed as a request and as a
 * response, with default and with tight limits. Checks: a complete head is
 * no longer than the input, every output pointer lies inside it, a shorter
 * prefix of a complete head is incomplete (never a different verdict), and
 * the header helpers accept what the parser produced.
 */
#include <duplex/proto.h>

#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) ((c) ? (void)0 : abort())
#define MAXH 16

static void inside(const char *buf, int len, const char *p, size_t n) {
  REQUIRE(n == 0 || (p >= buf && p + n <= buf + len));
}

static void check_headers(const char *buf, int len, const dx_header *h,
                          size_t n) {
  REQUIRE(n <= MAXH);
  for (size_t i = 0; i < n; i++) {
    REQUIRE(h[i].name_len > 0);
    inside(buf, len, h[i].name, h[i].name_len);
    inside(buf, len, h[i].value, h[i].value_len);
    dx_http_list_has(h[i].value, h[i].value_len, "upgrade");
  }
  const dx_header *u = dx_http_header(h, n, "upgrade");
  REQUIRE(!u || (u >= h && u < h + n));
}

static void request(const char *buf, size_t size, const dx_http_limits *lim) {
  dx_header h[MAXH];
  dx_http_request req = {.headers = h, .num_headers = MAXH};
  int rc = dx_http_parse_request(buf, size, &req, lim);
  if (rc <= 0) return;
  REQUIRE((size_t)rc <= size);
  REQUIRE(req.version_minor == 0 || req.version_minor == 1);
  REQUIRE(req.method_len > 0 && req.target_len > 0);
  inside(buf, rc, req.method, req.method_len);
  inside(buf, rc, req.target, req.target_len);
  check_headers(buf, rc, h, req.num_headers);
  dx_http_request again = {.headers = h, .num_headers = MAXH};
  REQUIRE(dx_http_parse_request(buf, rc - 1, &again, lim) == DX_EAGAIN);
}

static void response(const char *buf, size_t size, const dx_http_limits *lim) {
  dx_header h[MAXH];
  dx_http_response resp = {.headers = h, .num_headers = MAXH};
  int rc = dx_http_parse_response(buf, size, &resp, lim);
  if (rc <= 0) return;
  REQUIRE((size_t)rc <= size);
  REQUIRE(resp.version_minor == 0 || resp.version_minor == 1);
  REQUIRE(resp.status >= 0 && resp.status <= 999);
  inside(buf, rc, resp.reason, resp.reason_len);
  check_headers(buf, rc, h, resp.num_headers);
  dx_http_response again = {.headers = h, .num_headers = MAXH};
  REQUIRE(dx_http_parse_response(buf, rc - 1, &again, lim) == DX_EAGAIN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size ? size : 1); /* exact size: ASan sees over-reads */
  memcpy(buf, data, size);
  const dx_http_limits tight = {.max_line = 64, .max_head = 256};
  request(buf, size, NULL);
  request(buf, size, &tight);
  response(buf, size, NULL);
  response(buf, size, &tight);
  free(buf);
  return 0;
}
