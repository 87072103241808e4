/* HTTP/1.x head parsers: valid heads field by field, every malformed case,
 * every split point, limits, header counts and a guard page. */
#include <duplex/proto.h>

#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

#define LIT(s) (s), (sizeof(s) - 1)

static dx_header hdrs[64];

static int req_parse(const char *s, size_t n, dx_http_request *req, size_t cap,
                     const dx_http_limits *lim) {
  memset(req, 0, sizeof *req);
  req->headers = hdrs;
  req->num_headers = cap;
  return dx_http_parse_request(s, n, req, lim);
}

static int resp_parse(const char *s, size_t n, dx_http_response *resp,
                      size_t cap, const dx_http_limits *lim) {
  memset(resp, 0, sizeof *resp);
  resp->headers = hdrs;
  resp->num_headers = cap;
  return dx_http_parse_response(s, n, resp, lim);
}

static bool span_is(const char *p, size_t n, const char *want) {
  return n == strlen(want) && memcmp(p, want, n) == 0;
}

#define CHECK_SPAN(p, n, want)                                                 \
  do {                                                                         \
    if (!span_is((p), (n), (want)))                                            \
      CHECK__FAIL("%s == \"%s\": got \"%.*s\"", #p, (want), (int)(n), (p));    \
  } while (0)

/* ---- vectors ----------------------------------------------------------- */

typedef struct vec {
  const char *s;
  size_t len;
} vec;

#define V(s)                                                                   \
  { (s), sizeof(s) - 1 }

static const vec good_requests[] = {
    V("GET /chat?x=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade:  websocket \r\n"
      "X-Empty:\r\nX-Tab:\tv a\tl\t\r\n\r\n"),
    V("GET / HTTP/1.0\r\n\r\n"),
    V("\r\n\r\nOPTIONS * HTTP/1.1\r\nA:b\r\n\r\n"),
    V("M-S.E!A#R$C%H&'*+^_`|~ /x HTTP/1.1\r\nX-Obs: caf\xc3\xa9\r\n\r\n"),
};

static const vec good_responses[] = {
    V("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Accept: "
      "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
    V("HTTP/1.0 404 Not Found\r\n\r\n"),
    V("HTTP/1.1 200 \r\n\r\n"),
    V("HTTP/1.1 599\r\nX: y\r\n\r\n"),
};

static const vec bad_requests[] = {
    V("GET / HTTP/1.1\n\n"),                            /* bare LF */
    V("GET / HTTP/1.1\r\nHost: a\n\r\n"),               /* bare LF */
    V("GET / HTTP/1.1\r\nHost: a\r\n\n"),               /* bare LF, end */
    V("\nGET / HTTP/1.1\r\n\r\n"),                      /* bare LF, lead */
    V("GET / HTTP/1.1\rX\r\n\r\n"),                     /* bare CR */
    V("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"),          /* bare CR */
    V("GET / HTTP/1.1\r\n\r\r\n"),                      /* bare CR, end */
    V("\r\rGET / HTTP/1.1\r\n\r\n"),                    /* bare CR, lead */
    V("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"),  /* obs-fold */
    V("GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n"), /* obs-fold */
    V("GET / HTTP/1.1\r\n Host: a\r\n\r\n"),            /* leading SP */
    V("GET / HTTP/1.1\r\nHost : a\r\n\r\n"),            /* SP before colon */
    V("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"),           /* HTAB before colon */
    V("GET / HTTP/1.1\r\nHo st: a\r\n\r\n"),            /* SP in name */
    V("GET / HTTP/1.1\r\n: a\r\n\r\n"),                 /* empty name */
    V("GET / HTTP/1.1\r\nHost a\r\n\r\n"),              /* no colon */
    V("GET / HTTP/1.1\r\nH\"ost: a\r\n\r\n"),           /* not a token */
    V("GET / HTTP/1.1\r\n\x80X: a\r\n\r\n"),            /* not a token */
    V("GET / HTTP/1.1\r\nX: a\x01 b\r\n\r\n"),          /* CTL in value */
    V("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n"),            /* DEL in value */
    V("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"),             /* NUL in value */
    V("GET / HTTP/1.1\r\nX: 0123456789\x1f\r\n\r\n"),   /* CTL after 8 */
    V("G(T / HTTP/1.1\r\n\r\n"),                        /* method not a token */
    V(" / HTTP/1.1\r\n\r\n"),                           /* empty method */
    V("GET  / HTTP/1.1\r\n\r\n"),                       /* double SP */
    V("GET / HTTP/1.1 \r\n\r\n"),                       /* trailing SP */
    V("GET /a b HTTP/1.1\r\n\r\n"),                     /* SP in target */
    V("GET /\x01 HTTP/1.1\r\n\r\n"),                    /* CTL in target */
    V("GET /\xc3\xa9 HTTP/1.1\r\n\r\n"),                /* non-ASCII target */
    V("GET / HTTP/2.0\r\n\r\n"),                        /* version */
    V("GET / HTTP/1.2\r\n\r\n"),
    V("GET / HTTP/1.10\r\n\r\n"),
    V("GET / HTTP/1\r\n\r\n"),
    V("GET / http/1.1\r\n\r\n"),
    V("GET /\r\n\r\n"), /* HTTP/0.9 */
    V("GET\r\n\r\n"),
};

static const vec bad_responses[] = {
    V("HTTP/1.1 10 OK\r\n\r\n"),
    V("HTTP/1.1 1011 OK\r\n\r\n"),
    V("HTTP/1.1 1a1 OK\r\n\r\n"),
    V("HTTP/1.1 099 Low\r\n\r\n"),
    V("HTTP/1.1 600 High\r\n\r\n"),
    V("HTTP/2 101 x\r\n\r\n"),
    V("HTTP/1.2 101 x\r\n\r\n"),
    V("http/1.1 101 x\r\n\r\n"),
    V("HTTP/1.1  101 x\r\n\r\n"),
    V("HTTP/1.1 101x\r\n\r\n"),
    V("HTTP/1.1 101 OK\n\r\n"),
    V("HTTP/1.1 101 O\x01K\r\n\r\n"),
    V("HTTP/1.1 101 OK\r\nUpgrade: websocket\n\r\n"),
    V("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n folded\r\n\r\n"),
    V("HTTP/1.1 101 OK\r\nUpgrade : websocket\r\n\r\n"),
    V("\r\nHTTP/1.1 101 OK\r\n\r\n"), /* only requests skip empty lines */
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- valid heads ------------------------------------------------------- */

static void test_request_fields(void) {
  const vec *v = &good_requests[0];
  dx_http_request req;
  CHECK_INT(req_parse(v->s, v->len, &req, 64, NULL), v->len);
  CHECK_SPAN(req.method, req.method_len, "GET");
  CHECK_SPAN(req.target, req.target_len, "/chat?x=1");
  CHECK_INT(req.version_minor, 1);
  CHECK_INT(req.num_headers, 4);
  CHECK(req.headers == hdrs);
  CHECK_SPAN(hdrs[0].name, hdrs[0].name_len, "Host");
  CHECK_SPAN(hdrs[0].value, hdrs[0].value_len, "example.com");
  CHECK_SPAN(hdrs[1].name, hdrs[1].name_len, "Upgrade");
  CHECK_SPAN(hdrs[1].value, hdrs[1].value_len, "websocket");
  CHECK_SPAN(hdrs[2].name, hdrs[2].name_len, "X-Empty");
  CHECK_INT(hdrs[2].value_len, 0);
  CHECK_SPAN(hdrs[3].value, hdrs[3].value_len, "v a\tl");
  /* Zero-copy: everything points into the input. */
  CHECK(req.method == v->s);
  CHECK(hdrs[3].value > v->s && hdrs[3].value < v->s + v->len);
}

static void test_request_variants(void) {
  dx_http_request req;
  CHECK_INT(req_parse(good_requests[1].s, good_requests[1].len, &req, 64, NULL),
            good_requests[1].len);
  CHECK_INT(req.version_minor, 0);
  CHECK_INT(req.num_headers, 0);
  /* RFC 9112 section 2.2: empty lines before the request line are skipped
   * and counted in the head length. */
  const vec *v = &good_requests[2];
  CHECK_INT(req_parse(v->s, v->len, &req, 64, NULL), v->len);
  CHECK(req.method == v->s + 4);
  CHECK_SPAN(req.method, req.method_len, "OPTIONS");
  CHECK_SPAN(req.target, req.target_len, "*");
  CHECK_SPAN(hdrs[0].value, hdrs[0].value_len, "b");
  v = &good_requests[3];
  CHECK_INT(req_parse(v->s, v->len, &req, 64, NULL), v->len);
  CHECK_SPAN(req.method, req.method_len, "M-S.E!A#R$C%H&'*+^_`|~");
  CHECK_SPAN(hdrs[0].value, hdrs[0].value_len, "caf\xc3\xa9");
  /* Bytes after the head (a body, the next frame) are not consumed. */
  static const char more[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\n\x81\x05hello";
  CHECK_INT(req_parse(LIT(more), &req, 64, NULL), sizeof more - 1 - 7);
}

static void test_response_fields(void) {
  const vec *v = &good_responses[0];
  dx_http_response resp;
  CHECK_INT(resp_parse(v->s, v->len, &resp, 64, NULL), v->len);
  CHECK_INT(resp.version_minor, 1);
  CHECK_INT(resp.status, 101);
  CHECK_SPAN(resp.reason, resp.reason_len, "Switching Protocols");
  CHECK_INT(resp.num_headers, 3);
  CHECK_SPAN(hdrs[2].name, hdrs[2].name_len, "Sec-WebSocket-Accept");
  CHECK_SPAN(hdrs[2].value, hdrs[2].value_len, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  v = &good_responses[1];
  CHECK_INT(resp_parse(v->s, v->len, &resp, 64, NULL), v->len);
  CHECK_INT(resp.version_minor, 0);
  CHECK_INT(resp.status, 404);
  CHECK_SPAN(resp.reason, resp.reason_len, "Not Found");
  v = &good_responses[2];
  CHECK_INT(resp_parse(v->s, v->len, &resp, 64, NULL), v->len);
  CHECK_INT(resp.status, 200);
  CHECK_INT(resp.reason_len, 0);
  v = &good_responses[3];
  CHECK_INT(resp_parse(v->s, v->len, &resp, 64, NULL), v->len);
  CHECK_INT(resp.status, 599);
  CHECK_INT(resp.reason_len, 0);
  CHECK_INT(resp.num_headers, 1);
}

/* ---- malformed --------------------------------------------------------- */

static void test_request_malformed(void) {
  dx_http_request req;
  for (size_t i = 0; i < COUNT(bad_requests); i++) {
    const vec *v = &bad_requests[i];
    int rc = req_parse(v->s, v->len, &req, 64, NULL);
    if (rc != DX_EHTTP) CHECK__FAIL("bad_requests[%zu]: %d", i, rc);
    /* No prefix parses: each asks for more or is already malformed. */
    for (size_t n = 0; n < v->len; n++) {
      rc = req_parse(v->s, n, &req, 64, NULL);
      if (rc != DX_EAGAIN && rc != DX_EHTTP)
        CHECK__FAIL("bad_requests[%zu] prefix %zu: %d", i, n, rc);
    }
  }
}

static void test_response_malformed(void) {
  dx_http_response resp;
  for (size_t i = 0; i < COUNT(bad_responses); i++) {
    const vec *v = &bad_responses[i];
    int rc = resp_parse(v->s, v->len, &resp, 64, NULL);
    if (rc != DX_EHTTP) CHECK__FAIL("bad_responses[%zu]: %d", i, rc);
    for (size_t n = 0; n < v->len; n++) {
      rc = resp_parse(v->s, n, &resp, 64, NULL);
      if (rc != DX_EAGAIN && rc != DX_EHTTP)
        CHECK__FAIL("bad_responses[%zu] prefix %zu: %d", i, n, rc);
    }
  }
}

/* ---- every split point -------------------------------------------------- */

/* One struct for all prefixes, as a caller reading a socket would use it:
 * DX_EAGAIN must leave the header capacity alone. */
static void test_every_split(void) {
  dx_http_request req = {.headers = hdrs, .num_headers = 64};
  dx_http_response resp = {.headers = hdrs, .num_headers = 64};
  for (size_t i = 0; i < COUNT(good_requests); i++) {
    const vec *v = &good_requests[i];
    for (size_t n = 0; n < v->len; n++)
      if (dx_http_parse_request(v->s, n, &req, NULL) != DX_EAGAIN)
        CHECK__FAIL("good_requests[%zu] prefix %zu", i, n);
    CHECK_INT(req.num_headers, 64);
    CHECK_INT(dx_http_parse_request(v->s, v->len, &req, NULL), v->len);
    req.num_headers = 64;
  }
  for (size_t i = 0; i < COUNT(good_responses); i++) {
    const vec *v = &good_responses[i];
    for (size_t n = 0; n < v->len; n++)
      if (dx_http_parse_response(v->s, n, &resp, NULL) != DX_EAGAIN)
        CHECK__FAIL("good_responses[%zu] prefix %zu", i, n);
    CHECK_INT(resp.num_headers, 64);
    CHECK_INT(dx_http_parse_response(v->s, v->len, &resp, NULL), v->len);
    resp.num_headers = 64;
  }
}

/* ---- limits ------------------------------------------------------------ */

/* "GET /aaa... HTTP/1.1\r\n\r\n" with a request line of exactly `line`
 * bytes (CRLF excluded). */
static size_t long_target(char *buf, size_t line) {
  size_t t = line - strlen("GET  HTTP/1.1");
  memcpy(buf, "GET /", 5);
  memset(buf + 5, 'a', t - 1);
  memcpy(buf + 4 + t, " HTTP/1.1\r\n\r\n", 13);
  return line + 4;
}

static void test_line_limit(void) {
  static char buf[32 << 10];
  dx_http_request req;
  size_t n = long_target(buf, 8192);
  CHECK_INT(req_parse(buf, n, &req, 64, NULL), n);
  n = long_target(buf, 8193);
  CHECK_INT(req_parse(buf, n, &req, 64, NULL), DX_EHDRSIZE);
  /* Incomplete: the line is already too long, do not wait for its end. */
  long_target(buf, 20000);
  CHECK_INT(req_parse(buf, 8193, &req, 64, NULL), DX_EHDRSIZE);
  CHECK_INT(req_parse(buf, 8192, &req, 64, NULL), DX_EAGAIN);
  /* A header line, complete and incomplete. */
  n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nX: ");
  memset(buf + n, 'v', 9000);
  CHECK_INT(req_parse(buf, n + 9000, &req, 64, NULL), DX_EHDRSIZE);
  memcpy(buf + n + 9000, "\r\n\r\n", 4);
  CHECK_INT(req_parse(buf, n + 9004, &req, 64, NULL), DX_EHDRSIZE);
  /* Custom limits, and the same in a response. */
  dx_http_limits lim = {.max_line = 16};
  CHECK_INT(req_parse(LIT("GET / HTTP/1.1\r\nX: 0123456789abcd\r\n\r\n"), &req,
                      64, &lim),
            DX_EHDRSIZE);
  CHECK_INT(req_parse(LIT("GET / HTTP/1.1\r\nX: 0123456789abc\r\n\r\n"), &req,
                      64, &lim),
            36);
  dx_http_response resp;
  CHECK_INT(resp_parse(LIT("HTTP/1.1 200 OK, and a long reason\r\n\r\n"), &resp,
                       64, &lim),
            DX_EHDRSIZE);
}

static void test_head_limit(void) {
  static char buf[32 << 10];
  dx_http_request req;
  /* 20 KiB of header lines and no blank line: too large, not "more". */
  size_t n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");
  for (int i = 0; i < 20; i++) {
    n += (size_t)sprintf(buf + n, "X-%02d: ", i);
    memset(buf + n, 'v', 1000);
    n += 1000;
    n += (size_t)sprintf(buf + n, "\r\n");
  }
  CHECK_INT(req_parse(buf, n, &req, 64, NULL), DX_EHDRSIZE);
  for (size_t k = 0; k <= n; k += 97) {
    int rc = req_parse(buf, k, &req, 64, NULL);
    CHECK_INT(rc, k < (16 << 10) ? DX_EAGAIN : DX_EHDRSIZE);
  }
  /* Endless empty lines before the request line are bounded too. */
  for (size_t i = 0; i < sizeof buf; i += 2)
    memcpy(buf + i, "\r\n", 2);
  CHECK_INT(req_parse(buf, sizeof buf, &req, 64, NULL), DX_EHDRSIZE);
  /* Exactly max_head is fine, one more byte is not. */
  dx_http_limits lim = {.max_head = 32};
  static const char head[] = "GET / HTTP/1.1\r\nX: 0123456789\r\n\r\n";
  CHECK_INT(sizeof head - 1, 32 + 1);
  CHECK_INT(
      req_parse(LIT("GET / HTTP/1.1\r\nX: 012345678\r\n\r\n"), &req, 64, &lim),
      32);
  CHECK_INT(req_parse(LIT(head), &req, 64, &lim), DX_EHDRSIZE);
  CHECK_INT(req_parse(head, 32, &req, 64, &lim), DX_EHDRSIZE);
  CHECK_INT(req_parse(head, 31, &req, 64, &lim), DX_EAGAIN);
  dx_http_response resp;
  CHECK_INT(resp_parse(LIT("HTTP/1.1 200 OK\r\nX: 0123456789abcd\r\n\r\n"),
                       &resp, 64, &lim),
            DX_EHDRSIZE);
}

static void test_header_count(void) {
  static const char three[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
  dx_http_request req;
  CHECK_INT(req_parse(LIT(three), &req, 3, NULL), sizeof three - 1);
  CHECK_INT(req.num_headers, 3);
  CHECK_INT(req_parse(LIT(three), &req, 2, NULL), DX_EHDRCOUNT);
  /* Known as soon as the third field line starts. */
  CHECK_INT(req_parse(three, 29, &req, 2, NULL), DX_EHDRCOUNT);
  CHECK_INT(req_parse(three, 28, &req, 2, NULL), DX_EAGAIN);
  CHECK_INT(req_parse(LIT(three), &req, 0, NULL), DX_EHDRCOUNT);
  req = (dx_http_request){0};
  CHECK_INT(dx_http_parse_request(LIT("GET / HTTP/1.1\r\n\r\n"), &req, NULL),
            18);
  CHECK_INT(req.num_headers, 0);
  dx_http_response resp;
  CHECK_INT(resp_parse(LIT("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"), &resp, 1,
                       NULL),
            DX_EHDRCOUNT);
}

/* ---- guard page ---------------------------------------------------------- */

/* Every prefix of every vector ends right before a PROT_NONE page: a read
 * past the input faults. The full input must give the same answer as
 * anywhere else. */
static void parse_against(char *page_end, const vec *v, bool response) {
  dx_http_request req;
  dx_http_response resp;
  for (size_t n = 0; n <= v->len; n++) {
    char *p = page_end - n;
    memcpy(p, v->s, n);
    int rc = response ? resp_parse(p, n, &resp, 64, NULL)
                      : req_parse(p, n, &req, 64, NULL);
    int want = response ? resp_parse(v->s, n, &resp, 64, NULL)
                        : req_parse(v->s, n, &req, 64, NULL);
    if (rc != want) CHECK__FAIL("\"%.*s\" prefix %zu", 20, v->s, n);
  }
}

static void test_guard_page(void) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char *map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(map != MAP_FAILED);
  CHECK_INT(mprotect(map + page, page, PROT_NONE), 0);
  char *end = map + page;
  for (size_t i = 0; i < COUNT(good_requests); i++)
    parse_against(end, &good_requests[i], false);
  for (size_t i = 0; i < COUNT(bad_requests); i++)
    parse_against(end, &bad_requests[i], false);
  for (size_t i = 0; i < COUNT(good_responses); i++)
    parse_against(end, &good_responses[i], true);
  for (size_t i = 0; i < COUNT(bad_responses); i++)
    parse_against(end, &bad_responses[i], true);
  munmap(map, 2 * page);
}

/* ---- lookups ----------------------------------------------------------- */

static void test_header_lookup(void) {
  static const char s[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Twice: 1\r\n"
                          "x-twice: 2\r\n\r\n";
  dx_http_request req;
  CHECK(req_parse(LIT(s), &req, 64, NULL) > 0);
  const dx_header *h = dx_http_header(req.headers, req.num_headers, "X-TWICE");
  CHECK(h == &hdrs[1]);
  CHECK(dx_http_header(req.headers, req.num_headers, "host") == &hdrs[0]);
  CHECK(dx_http_header(req.headers, req.num_headers, "Hos") == NULL);
  CHECK(dx_http_header(req.headers, req.num_headers, "Hostx") == NULL);
  CHECK(dx_http_header(NULL, 0, "Host") == NULL);
}

static void test_list_has(void) {
  CHECK(dx_http_list_has(LIT("keep-alive, Upgrade"), "upgrade"));
  CHECK(dx_http_list_has(LIT("Upgrade"), "upgrade"));
  CHECK(dx_http_list_has(LIT(" ,\t, UPGRADE\t,"), "upgrade"));
  CHECK(dx_http_list_has(LIT("a,b,c"), "c"));
  CHECK(dx_http_list_has(LIT("a,b,c"), "a"));
  CHECK(!dx_http_list_has(LIT("keep-alive"), "upgrade"));
  CHECK(!dx_http_list_has(LIT("upgrades, xupgrade"), "upgrade"));
  CHECK(!dx_http_list_has(LIT("upgr ade"), "upgrade"));
  CHECK(!dx_http_list_has(LIT(""), "upgrade"));
  CHECK(!dx_http_list_has(LIT(",,"), "upgrade"));
  CHECK(!dx_http_list_has(NULL, 0, "upgrade"));
  /* Only the given length counts. */
  CHECK(!dx_http_list_has("a, upgrade", 3, "upgrade"));
}

int main(void) {
  RUN(test_request_fields);
  RUN(test_request_variants);
  RUN(test_response_fields);
  RUN(test_request_malformed);
  RUN(test_response_malformed);
  RUN(test_every_split);
  RUN(test_line_limit);
  RUN(test_head_limit);
  RUN(test_header_count);
  RUN(test_guard_page);
  RUN(test_header_lookup);
  RUN(test_list_has);
  return CHECK_DONE();
}
