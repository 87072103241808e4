/*
 * http layer: request semantics (dx_http_request_check, targets, paths) and
 * the pure formatting helpers (status texts, content types, dates,
 * dx_http_reply_format). Requests are raw strings parsed with
 * dx_http_parse_request, placed against a PROT_NONE guard page so that any
 * read past the input crashes.
 */
#include <duplex/http.h>

#include "check.h"
#include "guard.h"

static dx_header hdrs[32];
static dx_http_request req;
static dx_http_info info;

/* Parses a raw head; returns 1000 + the parse error when it does not parse,
 * otherwise the result of dx_http_request_check. */
static int check_raw(const char *raw) {
  size_t n = strlen(raw);
  const char *p = guarded(raw, n);
  req.headers = hdrs;
  req.num_headers = sizeof hdrs / sizeof hdrs[0];
  int rc = dx_http_parse_request(p, n, &req, NULL);
  if (rc != (int)n) return 1000 + rc;
  return dx_http_request_check(&req, &info);
}

/* A GET / HTTP/1.1 with Host and the given extra header lines. */
static int check_hdrs(const char *lines) {
  char raw[2048];
  snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: example.com\r\n%s\r\n",
           lines);
  return check_raw(raw);
}

static int status_of(const char *lines) {
  int rc = check_hdrs(lines);
  return rc == 0 ? 0 : rc == DX_EHTTP ? info.status : rc;
}

#define CHECK_SPAN(ptr, len, str) CHECK_MEM((ptr), (len), (str), strlen(str))

/* ------------------------------------------------------------------------ */

static void test_keep_alive(void) {
  CHECK_INT(check_raw("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK(info.keep_alive);
  CHECK_INT(check_raw("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
            0);
  CHECK(!info.keep_alive);
  CHECK_INT(check_raw("GET / HTTP/1.1\r\nHost: h\r\n"
                      "Connection: keep-alive, Close\r\n\r\n"),
            0);
  CHECK(!info.keep_alive);
  /* Several Connection lines form one list. */
  CHECK_INT(check_raw("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo\r\n"
                      "Connection: close\r\n\r\n"),
            0);
  CHECK(!info.keep_alive);
  CHECK_INT(check_raw("GET / HTTP/1.0\r\n\r\n"), 0);
  CHECK(!info.keep_alive);
  CHECK_INT(check_raw("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 0);
  CHECK(info.keep_alive);
  CHECK_INT(
      check_raw("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), 0);
  CHECK(!info.keep_alive);
}

static void test_upgrade(void) {
  CHECK_INT(check_hdrs("Upgrade: websocket\r\nConnection: Upgrade\r\n"), 0);
  CHECK(info.is_upgrade);
  CHECK_INT(check_hdrs("Upgrade: websocket\r\n"
                       "Connection: keep-alive, upgrade\r\n"),
            0);
  CHECK(info.is_upgrade);
  CHECK_INT(check_hdrs("Upgrade: websocket\r\n"), 0);
  CHECK(!info.is_upgrade);
  CHECK_INT(check_hdrs("Connection: upgrade\r\n"), 0);
  CHECK(!info.is_upgrade);
  CHECK_INT(check_hdrs("Upgrade:\r\nConnection: upgrade\r\n"), 0);
  CHECK(!info.is_upgrade);
  /* RFC 9110 section 7.8: ignored in HTTP/1.0. */
  CHECK_INT(check_raw("GET / HTTP/1.0\r\nUpgrade: websocket\r\n"
                      "Connection: upgrade\r\n\r\n"),
            0);
  CHECK(!info.is_upgrade);
}

static void test_content_length(void) {
  CHECK_INT(check_hdrs(""), 0);
  CHECK(!info.has_content_length);
  CHECK_INT(info.content_length, 0);
  CHECK_INT(check_hdrs("Content-Length: 42\r\n"), 0);
  CHECK(info.has_content_length);
  CHECK_INT(info.content_length, 42);
  CHECK_INT(check_hdrs("Content-Length: 0\r\n"), 0);
  CHECK(info.has_content_length);
  CHECK_INT(check_hdrs("Content-Length: 007\r\n"), 0);
  CHECK_INT(info.content_length, 7);
  CHECK_INT(check_hdrs("Content-Length: 18446744073709551615\r\n"), 0);
  CHECK(info.content_length == UINT64_MAX);
  /* Identical duplicates, as lines or as a list, are one value. */
  CHECK_INT(check_hdrs("Content-Length: 5\r\nContent-Length: 5\r\n"), 0);
  CHECK_INT(info.content_length, 5);
  CHECK_INT(check_hdrs("Content-Length: 5, 5\r\n"), 0);
  CHECK_INT(info.content_length, 5);
  static const char *const bad[] = {
      "Content-Length: +5\r\n",
      "Content-Length: -5\r\n",
      "Content-Length: 5 5\r\n",
      "Content-Length: 5x\r\n",
      "Content-Length: 0x10\r\n",
      "Content-Length: 1e3\r\n",
      "Content-Length:\r\n",
      "Content-Length: 5,\r\n",
      "Content-Length: ,5\r\n",
      "Content-Length: 5, 6\r\n",
      "Content-Length: 18446744073709551616\r\n",
      "Content-Length: 99999999999999999999999\r\n",
      "Content-Length: 5\r\nContent-Length: 6\r\n",
      "Content-Length: 5\r\nContent-Length: 05x\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (status_of(bad[i]) != 400) fprintf(stderr, "    case: %s", bad[i]);
    CHECK_INT(status_of(bad[i]), 400);
    CHECK(info.reason != NULL);
  }
}

static void test_transfer_encoding(void) {
  CHECK_INT(check_hdrs("Transfer-Encoding: chunked\r\n"), 0);
  CHECK(info.chunked);
  CHECK(!info.has_content_length);
  CHECK_INT(check_hdrs("Transfer-Encoding: Chunked\r\n"), 0);
  CHECK(info.chunked);
  CHECK_INT(check_hdrs(""), 0);
  CHECK(!info.chunked);
  static const struct {
    const char *lines;
    int status;
  } cases[] = {
      /* RFC 9112 section 6.3: smuggling, reject. */
      {"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400},
      {"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", 400},
      {"Transfer-Encoding: gzip\r\n", 400},
      {"Transfer-Encoding: chunked, gzip\r\n", 400},
      {"Transfer-Encoding: chunked, chunked\r\n", 400},
      {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400},
      {"Transfer-Encoding:\r\n", 400},
      {"Transfer-Encoding: ,\r\n", 400},
      {"Transfer-Encoding: chunked;x=1\r\n", 400},
      {"Transfer-Encoding: identity\r\n", 400},
      /* A coding we do not implement before chunked: 501. */
      {"Transfer-Encoding: gzip, chunked\r\n", 501},
      {"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 501},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int st = status_of(cases[i].lines);
    if (st != cases[i].status) fprintf(stderr, "    case: %s", cases[i].lines);
    CHECK_INT(st, cases[i].status);
  }
  /* HTTP/1.0 with Transfer-Encoding: framing is faulty (6.1). */
  CHECK_INT(check_raw("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            DX_EHTTP);
  CHECK_INT(info.status, 400);
}

static void test_host(void) {
  CHECK_INT(check_raw("GET / HTTP/1.1\r\n\r\n"), DX_EHTTP);
  CHECK_INT(info.status, 400);
  CHECK_INT(check_raw("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            DX_EHTTP);
  CHECK_INT(info.status, 400);
  CHECK_INT(check_raw("GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n"),
            DX_EHTTP);
  /* HTTP/1.0 may go without. */
  CHECK_INT(check_raw("GET / HTTP/1.0\r\n\r\n"), 0);
  CHECK(info.host == NULL);
  CHECK_INT(check_raw("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
            DX_EHTTP);
  static const char *const good[] = {
      "example.com", "example.com:8080", "127.0.0.1:80", "[::1]",
      "[::1]:443",   "xn--bcher-kva.ch", "a_b.example",  "",
      "host:",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char raw[256];
    snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
    if (check_raw(raw) != 0) fprintf(stderr, "    host: %s\n", good[i]);
    CHECK_INT(check_raw(raw), 0);
    CHECK_SPAN(info.host, info.host_len, good[i]);
  }
  static const char *const bad[] = {
      "exa mple.com", "a/b",  "user@host", "host:80x",
      "host:123456",  "[::1", "[]",        "[::1]x",
      "a\\b",         "h%zz", "h:80:80",   "\"quoted\"",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char raw[256];
    snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
    if (check_raw(raw) != DX_EHTTP) fprintf(stderr, "    host: %s\n", bad[i]);
    CHECK_INT(check_raw(raw), DX_EHTTP);
    CHECK_INT(info.status, 400);
  }
}

static void test_expect_and_method(void) {
  CHECK_INT(check_raw("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                      "Expect: 100-continue\r\n\r\n"),
            0);
  CHECK(info.expect_continue);
  CHECK_INT(info.method, DX_HTTP_POST);
  CHECK_INT(check_raw("POST /p HTTP/1.0\r\nContent-Length: 3\r\n"
                      "Expect: 100-continue\r\n\r\n"),
            0);
  CHECK(!info.expect_continue);
  CHECK_INT(dx_http_method_of("GET", 3), DX_HTTP_GET);
  CHECK_INT(dx_http_method_of("HEAD", 4), DX_HTTP_HEAD);
  CHECK_INT(dx_http_method_of("OPTIONS", 7), DX_HTTP_OPTIONS);
  CHECK_INT(dx_http_method_of("PATCH", 5), DX_HTTP_PATCH);
  CHECK_INT(dx_http_method_of("get", 3), DX_HTTP_OTHER);
  CHECK_INT(dx_http_method_of("GETX", 4), DX_HTTP_OTHER);
  CHECK_INT(dx_http_method_of("GE", 2), DX_HTTP_OTHER);
  CHECK_INT(check_raw("get / HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK_INT(info.method, DX_HTTP_OTHER);
}

static void test_target(void) {
  CHECK_INT(check_raw("GET /a/b?x=1&y HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK_SPAN(info.target.path, info.target.path_len, "/a/b");
  CHECK_SPAN(info.target.query, info.target.query_len, "x=1&y");
  CHECK(info.target.authority == NULL);
  CHECK(!info.target.asterisk);
  CHECK_INT(check_raw("GET / HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK_SPAN(info.target.path, info.target.path_len, "/");
  CHECK(info.target.query == NULL);
  CHECK_INT(check_raw("GET /p? HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK(info.target.query != NULL);
  CHECK_INT(info.target.query_len, 0);
  /* Absolute form: the path is taken; the authority replaces Host. */
  CHECK_INT(check_raw("GET http://example.com:8080/x/y?q HTTP/1.1\r\n"
                      "Host: other\r\n\r\n"),
            0);
  CHECK_SPAN(info.target.path, info.target.path_len, "/x/y");
  CHECK_SPAN(info.target.query, info.target.query_len, "q");
  CHECK_SPAN(info.target.authority, info.target.authority_len,
             "example.com:8080");
  CHECK_SPAN(info.host, info.host_len, "example.com:8080");
  CHECK_INT(check_raw("GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK_SPAN(info.target.path, info.target.path_len, "/");
  CHECK_INT(check_raw("GET http://h?a=b HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK_SPAN(info.target.path, info.target.path_len, "/");
  CHECK_SPAN(info.target.query, info.target.query_len, "a=b");
  /* Asterisk form: OPTIONS only. */
  CHECK_INT(check_raw("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK(info.target.asterisk);
  CHECK_SPAN(info.target.path, info.target.path_len, "*");
  static const char *const bad[] = {
      "GET * HTTP/1.1",
      "HEAD * HTTP/1.1",
      "GET http://user@h/ HTTP/1.1",
      "GET http:///x HTTP/1.1",
      "GET http:// HTTP/1.1",
      "GET ftp://h/x HTTP/1.1",
      "GET ws://h/x HTTP/1.1",
      "CONNECT example.com:443 HTTP/1.1",
      "GET /a#frag HTTP/1.1",
      "GET a/b HTTP/1.1",
      "GET ?q HTTP/1.1",
      "GET http://h:bad/ HTTP/1.1",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char raw[256];
    snprintf(raw, sizeof raw, "%s\r\nHost: h\r\n\r\n", bad[i]);
    if (check_raw(raw) != DX_EHTTP) fprintf(stderr, "    target: %s\n", bad[i]);
    CHECK_INT(check_raw(raw), DX_EHTTP);
    CHECK_INT(info.status, 400);
  }
  /* The split alone, without the other checks. */
  dx_http_target t;
  CHECK_INT(check_raw("GET /x?y HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  CHECK_INT(dx_http_target_parse(&req, &t), 0);
  CHECK_SPAN(t.path, t.path_len, "/x");
}

/* dx_http_path_clean on a guarded copy; NULL expected means 400. */
static void path_case(const char *in, const char *want, int *failed) {
  char out[256];
  size_t n = strlen(in);
  int rc = dx_http_path_clean(guarded(in, n), n, out, sizeof out);
  bool ok =
      want ? rc == (int)strlen(want) && strcmp(out, want) == 0 : rc == DX_EHTTP;
  if (!ok) {
    fprintf(stderr, "    clean(\"%s\") = %d \"%s\", want %s\n", in, rc,
            rc > 0 ? out : "", want ? want : "400");
    *failed = 1;
  }
}

static void test_path_clean(void) {
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"/", "/"},
      {"/a/b", "/a/b"},
      {"/a/b/", "/a/b/"},
      {"//a///b", "/a/b"},
      {"/a/./b", "/a/b"},
      {"/./", "/"},
      {"/.", "/"},
      {"/a/b/..", "/a/"},
      {"/a/b/../", "/a/"},
      {"/a/b/.", "/a/b/"},
      {"/a/../b", "/b"},
      {"/a/..", "/"},
      {"/a%20b", "/a b"},
      {"/%41%62", "/Ab"},
      {"/%C3%A9", "/\xc3\xa9"},
      {"/a/%2e%2e/b", "/b"},
      {"/a/%2E/b", "/a/b"},
      {"/...", "/..."},
      {"/..a", "/..a"},
      {"/.hidden", "/.hidden"},
      {"/a%25b", "/a%b"},
      {"/a+b", "/a+b"},
      /* 400 */
      {"/..", NULL},
      {"/../x", NULL},
      {"/a/../../x", NULL},
      {"/%2e%2e/x", NULL},
      {"/%2E%2E%2Fsecret", NULL},
      {"/..%2fx", NULL},
      {"/a%2fb", NULL},
      {"/a%2Fb", NULL},
      {"/a%5cb", NULL},
      {"/a%5Cb", NULL},
      {"/a\\b", NULL},
      {"/a%00", NULL},
      {"/a.css%00.txt", NULL},
      {"/a%0a", NULL},
      {"/a%0D%0Ab", NULL},
      {"/a%7f", NULL},
      {"/a%", NULL},
      {"/a%4", NULL},
      {"/a%zz", NULL},
      {"/a%4g", NULL},
      {"/a%g4", NULL},
      {"a", NULL},
      {"", NULL},
      {"*", NULL},
  };
  int failed = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    path_case(cases[i].in, cases[i].out, &failed);
  CHECK(!failed);
  /* The output never needs more than len + 1 bytes, and less fails. */
  char out[16];
  CHECK_INT(dx_http_path_clean("/abc/def", 8, out, 9), 8);
  CHECK_STR(out, "/abc/def");
  CHECK_INT(dx_http_path_clean("/abc/def", 8, out, 8), DX_ENOSPC);
  CHECK_INT(dx_http_path_clean("/abc/", 5, out, 5), DX_ENOSPC);
  CHECK_INT(dx_http_path_clean("/", 1, out, 1), DX_ENOSPC);
  CHECK_INT(dx_http_path_clean("/%41", 4, out, 3), 2);
  CHECK_STR(out, "/A");
}

/* ------------------------------------------------------------------------ */
/* Formatting                                                               */

static void test_status_text(void) {
  CHECK_STR(dx_http_status_text(200), "OK");
  CHECK_STR(dx_http_status_text(304), "Not Modified");
  CHECK_STR(dx_http_status_text(404), "Not Found");
  CHECK_STR(dx_http_status_text(405), "Method Not Allowed");
  CHECK_STR(dx_http_status_text(501), "Not Implemented");
  CHECK_STR(dx_http_status_text(299), "");
  CHECK_STR(dx_http_status_text(-1), "");
}

static void test_mime(void) {
  static const struct {
    const char *name, *type;
  } cases[] = {
      {"index.html", "text/html; charset=utf-8"},
      {"/a/b/STYLE.CSS", "text/css; charset=utf-8"},
      {"app.js", "text/javascript; charset=utf-8"},
      {"mod.mjs", "text/javascript; charset=utf-8"},
      {"data.json", "application/json"},
      {"x.svg", "image/svg+xml"},
      {"x.png", "image/png"},
      {"x.jpg", "image/jpeg"},
      {"x.jpeg", "image/jpeg"},
      {"x.gif", "image/gif"},
      {"x.webp", "image/webp"},
      {"favicon.ico", "image/x-icon"},
      {"m.wasm", "application/wasm"},
      {"r.txt", "text/plain; charset=utf-8"},
      {"app.js.map", "application/json"},
      {"f.woff", "font/woff"},
      {"f.woff2", "font/woff2"},
      {"v.mp4", "video/mp4"},
      {"v.webm", "video/webm"},
      {"d.pdf", "application/pdf"},
      {"feed.xml", "application/xml"},
      {"noext", "application/octet-stream"},
      {"a.tar.unknown", "application/octet-stream"},
      {"dir.css/file", "application/octet-stream"},
      {".css", "text/css; charset=utf-8"},
      {"x.", "application/octet-stream"},
      {"", "application/octet-stream"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    CHECK_STR(dx_http_mime_type(cases[i].name, strlen(cases[i].name)),
              cases[i].type);
}

static void test_date(void) {
  char out[30];
  CHECK_INT(dx_http_date(784111777, out), 29);
  CHECK_STR(out, "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK_INT(dx_http_date(0, out), 29);
  CHECK_STR(out, "Thu, 01 Jan 1970 00:00:00 GMT");
  CHECK_INT(dx_http_date(-1, out), DX_EINVAL);
  time_t t = 0;
  static const char *const same[] = {
      "Sun, 06 Nov 1994 08:49:37 GMT",
      "Sunday, 06-Nov-94 08:49:37 GMT",
      "Sun Nov  6 08:49:37 1994",
  };
  for (size_t i = 0; i < 3; i++) {
    t = 0;
    CHECK_INT(dx_http_date_parse(guarded(same[i], strlen(same[i])),
                                 strlen(same[i]), &t),
              0);
    CHECK_INT(t, 784111777);
  }
  const char *leap = "Thu, 29 Feb 2024 23:59:59 GMT";
  CHECK_INT(dx_http_date_parse(leap, strlen(leap), &t), 0);
  CHECK_INT(t, 1709251199);
  const char *y2k = "Saturday, 01-Jan-00 00:00:00 GMT";
  CHECK_INT(dx_http_date_parse(y2k, strlen(y2k), &t), 0);
  CHECK_INT(t, 946684800);
  /* Round trip over a range of times. */
  for (time_t x = 0; x < (time_t)4102444800; x += 7777777) {
    CHECK_INT(dx_http_date(x, out), 29);
    CHECK_INT(dx_http_date_parse(out, 29, &t), 0);
    CHECK_INT(t, x);
  }
  static const char *const bad[] = {
      "",
      "Sun, 06 Nov 1994 08:49:37",
      "Sun, 06 Nov 1994 08:49:37 UTC",
      "Sun, 06 Nov 1994 08:49:37 GMTX",
      "Sun, 6 Nov 1994 08:49:37 GMT",
      "Sun, 30 Feb 1994 08:49:37 GMT",
      "Sun, 29 Feb 2023 08:49:37 GMT",
      "Sun, 00 Nov 1994 08:49:37 GMT",
      "Sun, 06 Nox 1994 08:49:37 GMT",
      "Sun, 06 Nov 1994 24:00:00 GMT",
      "Sun, 06 Nov 1994 08:60:00 GMT",
      "Xyz, 06 Nov 1994 08:49:37 GMT",
      "Sun, 06 Nov 19x4 08:49:37 GMT",
      "Sun Nov  6 08:49:37 94",
      "Sun Nov 32 08:49:37 1994",
      "Sun, 06-Nov-94 08:49:37 GMT",
      "Sunday, 06-Nov-1994 08:49:37 GMT",
      "1994-11-06T08:49:37Z",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t n = strlen(bad[i]);
    if (dx_http_date_parse(guarded(bad[i], n), n, &t) != DX_EINVAL)
      fprintf(stderr, "    date: %s\n", bad[i]);
    CHECK_INT(dx_http_date_parse(guarded(bad[i], n), n, &t), DX_EINVAL);
  }
}

static void test_reply_error_page(void) {
  char buf[512];
  dx_http_reply r = {.status = 404};
  int n = dx_http_reply_format(buf, sizeof buf, &r);
  const char *want = "HTTP/1.1 404 Not Found\r\n"
                     "Server: duplex\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: 14\r\n"
                     "Connection: close\r\n"
                     "\r\n"
                     "404 Not Found\n";
  CHECK_MEM(buf, (size_t)n, want, strlen(want));
  r.head_only = true;
  n = dx_http_reply_format(buf, sizeof buf, &r);
  CHECK_MEM(buf, (size_t)n, want, strlen(want) - 14);
}

static void test_reply_full(void) {
  char buf[512];
  dx_http_reply r = {.status = 200,
                     .body = "{\"ok\":true}",
                     .body_len = 11,
                     .content_type = "application/json",
                     .extra_headers = "X-A: 1\r\nX-B: 2\r\n",
                     .keep_alive = true,
                     .date = 784111777};
  int n = dx_http_reply_format(buf, sizeof buf, &r);
  const char *want = "HTTP/1.1 200 OK\r\n"
                     "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                     "Server: duplex\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: 11\r\n"
                     "Connection: keep-alive\r\n"
                     "X-A: 1\r\nX-B: 2\r\n"
                     "\r\n"
                     "{\"ok\":true}";
  CHECK_MEM(buf, (size_t)n, want, strlen(want));
  /* Every shorter buffer fails cleanly; the exact size works. */
  for (size_t cap = 0; cap < strlen(want); cap++)
    CHECK_INT(dx_http_reply_format(buf, cap, &r), DX_ENOSPC);
  CHECK_INT(dx_http_reply_format(buf, strlen(want), &r), (int)strlen(want));
  /* No body at all: Content-Length: 0 and no Content-Type. */
  dx_http_reply e = {.status = 200, .keep_alive = true};
  n = dx_http_reply_format(buf, sizeof buf, &e);
  want = "HTTP/1.1 200 OK\r\nServer: duplex\r\nContent-Length: 0\r\n"
         "Connection: keep-alive\r\n\r\n";
  CHECK_MEM(buf, (size_t)n, want, strlen(want));
  /* An explicitly empty error body. */
  dx_http_reply z = {.status = 500, .body = ""};
  n = dx_http_reply_format(buf, sizeof buf, &z);
  want = "HTTP/1.1 500 Internal Server Error\r\nServer: duplex\r\n"
         "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 0\r\n"
         "Connection: close\r\n\r\n";
  CHECK_MEM(buf, (size_t)n, want, strlen(want));
}

static void test_reply_bodiless(void) {
  char buf[256];
  static const int codes[] = {101, 204, 304};
  for (size_t i = 0; i < 3; i++) {
    dx_http_reply r = {.status = codes[i], .body = "xyz", .body_len = 3};
    int n = dx_http_reply_format(buf, sizeof buf, &r);
    CHECK(n > 0);
    buf[n] = '\0';
    CHECK(strstr(buf, "Content-Length") == NULL);
    CHECK(strstr(buf, "xyz") == NULL);
    CHECK(n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0);
  }
}

static void test_reply_invalid(void) {
  char buf[256];
  dx_http_reply r = {.status = 99};
  CHECK_INT(dx_http_reply_format(buf, sizeof buf, &r), DX_EINVAL);
  r.status = 600;
  CHECK_INT(dx_http_reply_format(buf, sizeof buf, &r), DX_EINVAL);
  static const char *const bad_extra[] = {
      "X-A: 1",         "X-A: 1\n",      "X-A: 1\r\nX-B: 2",
      "X-A: 1\r\n\r\n", "X-A: a\rb\r\n", "NoColon\r\n",
      ": v\r\n",        "X A: 1\r\n",    "X-A: 1\n\r\n",
  };
  r.status = 200;
  for (size_t i = 0; i < sizeof bad_extra / sizeof bad_extra[0]; i++) {
    r.extra_headers = bad_extra[i];
    CHECK_INT(dx_http_reply_format(buf, sizeof buf, &r), DX_EINVAL);
  }
  r.extra_headers = NULL;
  r.content_type = "text/html\r\nSet-Cookie: x=1";
  r.body = "x";
  r.body_len = 1;
  CHECK_INT(dx_http_reply_format(buf, sizeof buf, &r), DX_EINVAL);
}

int main(void) {
  RUN(test_keep_alive);
  RUN(test_upgrade);
  RUN(test_content_length);
  RUN(test_transfer_encoding);
  RUN(test_host);
  RUN(test_expect_and_method);
  RUN(test_target);
  RUN(test_path_clean);
  RUN(test_status_text);
  RUN(test_mime);
  RUN(test_date);
  RUN(test_reply_error_page);
  RUN(test_reply_full);
  RUN(test_reply_bodiless);
  RUN(test_reply_invalid);
  return CHECK_DONE();
}
