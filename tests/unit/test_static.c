/*
 * http layer: static files. A temporary tree with a root, files around it
 * that must never be served, and symlinks of every kind; each request is a
 * raw head parsed with dx_http_parse_request and answered by
 * dx_static_serve.
 *
 *   TMP/secret                 "TOP SECRET" (outside the root)
 *   TMP/outdir/secret          outside, reached by root/dirlink
 *   TMP/root-evil/secret       outside, shares the root's name as a prefix
 *   TMP/root/                  the root
 *     index.html a.css app.js data.json img.png empty.txt .env .git/config
 *     sub/index.html  evil.example/  noindex/  fifo
 *     link-inside -> a.css               link-abs-inside -> TMP/root/a.css
 *     link-outside -> ../secret          link-outside-abs -> TMP/secret
 *     dirlink -> ../outdir               evil -> TMP/root-evil/secret
 *     sub/up -> ..   sub/escape -> ../../secret   loop -> loop
 */
#include <duplex/http.h>

#include "check.h"

#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET "TOP SECRET"

static char tmp[256], root[300];
static dx_static *st;

static void writef(const char *rel, const char *content) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tmp, rel);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t)strlen(content))
    abort();
  close(fd);
}

static void mkdirf(const char *rel) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tmp, rel);
  if (mkdir(path, 0755) != 0) abort();
}

static void linkf(const char *target, const char *rel) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tmp, rel);
  if (symlink(target, path) != 0) abort();
}

static void setup(void) {
  snprintf(tmp, sizeof tmp, "%s/dxstatic.XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(tmp)) abort();
  /* realpath: the absolute links below must name the root as it really
   * is, /tmp may itself be a link. */
  char *real = realpath(tmp, NULL);
  if (!real) abort();
  snprintf(tmp, sizeof tmp, "%s", real);
  free(real);
  snprintf(root, sizeof root, "%s/root", tmp);
  writef("secret", SECRET);
  mkdirf("outdir");
  writef("outdir/secret", SECRET);
  mkdirf("root-evil");
  writef("root-evil/secret", SECRET);
  mkdirf("root");
  writef("root/index.html", "<h1>home</h1>");
  writef("root/a.css", "body{}");
  writef("root/app.js", "console.log(1)");
  writef("root/data.json", "{\"a\":1}");
  writef("root/img.png", "\x89PNG\r\n\x1a\n");
  writef("root/empty.txt", "");
  writef("root/.env", "SECRET=1");
  mkdirf("root/.git");
  writef("root/.git/config", "[core]");
  mkdirf("root/.well-known");
  writef("root/.well-known/security.txt", "Contact: x");
  mkdirf("root/sub");
  writef("root/sub/index.html", "sub index");
  mkdirf("root/evil.example");
  mkdirf("root/noindex");
  char path[700];
  snprintf(path, sizeof path, "%s/fifo", root);
  if (mkfifo(path, 0644) != 0) abort();
  linkf("a.css", "root/link-inside");
  snprintf(path, sizeof path, "%s/a.css", root);
  linkf(path, "root/link-abs-inside");
  linkf("../secret", "root/link-outside");
  snprintf(path, sizeof path, "%s/secret", tmp);
  linkf(path, "root/link-outside-abs");
  linkf("../outdir", "root/dirlink");
  snprintf(path, sizeof path, "%s/root-evil/secret", tmp);
  linkf(path, "root/evil");
  linkf("..", "root/sub/up");
  linkf("../../secret", "root/sub/escape");
  linkf("loop", "root/loop");
}

static void teardown(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
}

/* ------------------------------------------------------------------------ */

static dx_static_result res;

/* Answers "METHOD target HTTP/1.1" with Host and the extra header lines,
 * through st (or the given server), with path NULL (taken from the target)
 * unless mount_path is set. Returns the status, or -1000 + the parse
 * error. */
static int serve_with(const dx_static *s, const char *method,
                      const char *target, const char *lines,
                      const char *mount_path) {
  char raw[2048];
  dx_header h[32];
  dx_http_request req = {.headers = h, .num_headers = 32};
  int n = snprintf(raw, sizeof raw, "%s %s HTTP/1.1\r\nHost: test\r\n%s\r\n",
                   method, target, lines ? lines : "");
  int rc = dx_http_parse_request(raw, (size_t)n, &req, NULL);
  if (rc != n) return -1000 + rc;
  dx_static_result_close(&res);
  return dx_static_serve(s, &req, mount_path,
                         mount_path ? strlen(mount_path) : 0, &res);
}

static int get(const char *target) {
  return serve_with(st, "GET", target, NULL, NULL);
}

/* The value of a header in res.head ("" when absent). */
static const char *header(const char *name) {
  static char val[512];
  char key[128];
  snprintf(key, sizeof key, "\r\n%s: ", name);
  const char *end = res.head + res.head_len;
  for (const char *p = res.head; p < end; p++) {
    size_t k = strlen(key);
    if ((size_t)(end - p) > k && memcmp(p, key, k) == 0) {
      const char *v = p + k, *e = v;
      while (e < end && *e != '\r')
        e++;
      snprintf(val, sizeof val, "%.*s", (int)(e - v), v);
      return val;
    }
  }
  val[0] = '\0';
  return val;
}

static bool head_has(const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i + n <= res.head_len; i++)
    if (memcmp(res.head + i, s, n) == 0) return true;
  return false;
}

/* The body: the file behind res.fd, or what follows the head's end. */
static const char *body(void) {
  static char buf[4096];
  buf[0] = '\0';
  if (res.fd >= 0) {
    ssize_t n = pread(res.fd, buf, sizeof buf - 1, (off_t)res.offset);
    if (n >= 0) buf[n] = '\0';
    return buf;
  }
  for (size_t i = 0; i + 4 <= res.head_len; i++)
    if (memcmp(res.head + i, "\r\n\r\n", 4) == 0) {
      snprintf(buf, sizeof buf, "%.*s", (int)(res.head_len - i - 4),
               res.head + i + 4);
      break;
    }
  return buf;
}

/* ------------------------------------------------------------------------ */

static void check_file(const char *target, const char *type,
                       const char *content, int *failed) {
  int status = get(target);
  char len[32];
  snprintf(len, sizeof len, "%zu", strlen(content));
  if (status != 200 || strcmp(header("Content-Type"), type) != 0 ||
      strcmp(header("Content-Length"), len) != 0 || res.fd < 0 ||
      res.length != strlen(content) || strcmp(body(), content) != 0) {
    fprintf(stderr, "    GET %s: %d fd=%d\n%.*s\n", target, status, res.fd,
            (int)res.head_len, res.head);
    *failed = 1;
  }
}

static void test_get_files(void) {
  int failed = 0;
  check_file("/", "text/html; charset=utf-8", "<h1>home</h1>", &failed);
  check_file("/index.html", "text/html; charset=utf-8", "<h1>home</h1>",
             &failed);
  check_file("/a.css", "text/css; charset=utf-8", "body{}", &failed);
  check_file("/app.js", "text/javascript; charset=utf-8", "console.log(1)",
             &failed);
  check_file("/data.json", "application/json", "{\"a\":1}", &failed);
  check_file("/img.png", "image/png", "\x89PNG\r\n\x1a\n", &failed);
  check_file("/sub/", "text/html; charset=utf-8", "sub index", &failed);
  check_file("/sub/index.html?v=3", "text/html; charset=utf-8", "sub index",
             &failed);
  check_file("/%61.css", "text/css; charset=utf-8", "body{}", &failed);
  check_file("/sub/../a.css", "text/css; charset=utf-8", "body{}", &failed);
  check_file("//sub//", "text/html; charset=utf-8", "sub index", &failed);
  check_file("/.well-known/security.txt", "text/plain; charset=utf-8",
             "Contact: x", &failed);
  check_file("http://test/a.css", "text/css; charset=utf-8", "body{}", &failed);
  CHECK(!failed);
  CHECK_INT(get("/a.css"), 200);
  CHECK_INT(res.offset, 0);
  CHECK_STR(header("X-Content-Type-Options"), "nosniff");
  CHECK_STR(header("Accept-Ranges"), "none");
  CHECK_STR(header("Cache-Control"), "no-cache");
  CHECK_STR(header("Server"), "duplex");
  CHECK_STR(header("Connection"), "keep-alive");
  CHECK(res.keep_alive);
  CHECK(strncmp(header("ETag"), "W/\"", 3) == 0);
  CHECK_INT(strlen(header("Last-Modified")), 29);
  CHECK(!head_has("Date:"));
  CHECK(memcmp(res.head, "HTTP/1.1 200 OK\r\n", 17) == 0);
  CHECK(memcmp(res.head + res.head_len - 4, "\r\n\r\n", 4) == 0);
  /* The fd is close-on-exec and read-only. */
  int fl = fcntl(res.fd, F_GETFD);
  CHECK(fl >= 0 && (fl & FD_CLOEXEC));
  CHECK_INT(fcntl(res.fd, F_GETFL) & (O_ACCMODE | O_NONBLOCK), O_RDONLY);
  dx_static_result_close(&res);
  CHECK_INT(res.fd, -1);
  dx_static_result_close(&res);
}

static void test_head(void) {
  CHECK_INT(serve_with(st, "HEAD", "/a.css", NULL, NULL), 200);
  CHECK_INT(res.fd, -1);
  CHECK_INT(res.length, 0);
  CHECK_STR(header("Content-Length"), "6");
  CHECK_STR(header("Content-Type"), "text/css; charset=utf-8");
  CHECK(memcmp(res.head + res.head_len - 4, "\r\n\r\n", 4) == 0);
  /* HEAD of an error: the head says how long the page is, no page. */
  CHECK_INT(serve_with(st, "HEAD", "/nope", NULL, NULL), 404);
  CHECK_INT(res.fd, -1);
  CHECK(memcmp(res.head + res.head_len - 4, "\r\n\r\n", 4) == 0);
  CHECK_STR(header("Content-Length"), "14");
}

static void test_empty_file(void) {
  CHECK_INT(get("/empty.txt"), 200);
  CHECK_INT(res.fd, -1);
  CHECK_INT(res.length, 0);
  CHECK_STR(header("Content-Length"), "0");
}

static void test_directories(void) {
  CHECK_INT(get("/sub"), 301);
  CHECK_STR(header("Location"), "/sub/");
  CHECK_INT(res.fd, -1);
  CHECK_INT(get("/sub?x=1&y"), 301);
  CHECK_STR(header("Location"), "/sub/?x=1&y");
  /* No scheme-relative redirect to another host. */
  CHECK_INT(get("//evil.example"), 301);
  CHECK_STR(header("Location"), "/evil.example/");
  CHECK_INT(get("/sub/up"), 301);
  CHECK_STR(header("Location"), "/sub/up/");
  /* No index, no listing. */
  CHECK_INT(get("/noindex/"), 404);
  CHECK_INT(res.fd, -1);
  /* A file is not a directory. */
  CHECK_INT(get("/a.css/"), 404);
  CHECK_INT(res.fd, -1);
  /* Under a mount: the Location is the client's path, not the file's. */
  CHECK_INT(serve_with(st, "GET", "/static/sub", NULL, "/sub"), 301);
  CHECK_STR(header("Location"), "/static/sub/");
  CHECK_INT(serve_with(st, "GET", "/static/a.css", NULL, "/a.css"), 200);
  CHECK_STR(body(), "body{}");
}

/* Never the outside file: an error status, no fd, no secret anywhere. */
static void test_traversal(void) {
  static const char *const attacks[] = {
      "/../secret",
      "/%2e%2e/secret",
      "/%2E%2E%2Fsecret",
      "/sub/../../secret",
      "/..%2fsecret",
      "/..%2Fsecret",
      "/a.css%00.txt",
      "/%00",
      "/link-outside",
      "/link-outside-abs",
      "/dirlink/secret",
      "/dirlink/",
      "/dirlink",
      "/sub/%5c..%5csecret",
      "/sub/\\..\\secret",
      "/evil",
      "/sub/escape",
      "/sub/up/../secret",
      "/sub/up/up/secret",
      "/sub/up/link-outside",
      "/./../secret",
      "/sub/./../.././secret",
      "/%2e%2e%2f%2e%2e%2fsecret",
      "/%252e%252e/secret",
      "/.%2e/secret",
      "/secret",
      "/../root-evil/secret",
      "/.env",
      "/.git/config",
      "/sub/../.env",
      "/%2eenv",
      "/loop",
      "/fifo",
      "/nope",
      "/nope/",
  };
  int failed = 0;
  for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) {
    int status = get(attacks[i]);
    bool ok = (status == 400 || status == 403 || status == 404) &&
              res.fd == -1 && !head_has(SECRET) && !head_has("SECRET=");
    if (!ok) {
      fprintf(stderr, "    GET %s: %d fd=%d\n", attacks[i], status, res.fd);
      failed = 1;
    }
  }
  CHECK(!failed);
  /* The documented choices. */
  CHECK_INT(get("/../secret"), 400);
  CHECK_INT(get("/a.css%00.txt"), 400);
  CHECK_INT(get("/..%2fsecret"), 400);
  CHECK_INT(get("/link-outside"), 404);
  CHECK_INT(res.err, -EXDEV);
  CHECK_INT(get("/dirlink/secret"), 404);
  CHECK_INT(get("/.env"), 404);
  CHECK_INT(get("/nope"), 404);
  CHECK_INT(res.err, -ENOENT);
  CHECK_INT(get("/loop"), 404);
  CHECK_INT(get("/fifo"), 404);
  CHECK_STR(header("Content-Type"), "text/plain; charset=utf-8");
  CHECK_STR(body(), "404 Not Found\n");
}

static void test_symlinks_inside(void) {
  CHECK_INT(get("/link-inside"), 200);
  CHECK_STR(body(), "body{}");
  CHECK_INT(get("/link-abs-inside"), 200);
  CHECK_STR(body(), "body{}");
  CHECK_INT(get("/sub/up/a.css"), 200);
  CHECK_STR(body(), "body{}");
  CHECK_INT(get("/sub/up/sub/up/app.js"), 200);
  CHECK_STR(body(), "console.log(1)");
  CHECK_INT(get("/sub/up/"), 200);
  CHECK_STR(body(), "<h1>home</h1>");
}

static void test_conditional(void) {
  char etag[128], lm[64], raw[256];
  CHECK_INT(get("/a.css"), 200);
  snprintf(etag, sizeof etag, "%s", header("ETag"));
  snprintf(lm, sizeof lm, "%s", header("Last-Modified"));
  CHECK(etag[0] && lm[0]);

  snprintf(raw, sizeof raw, "If-None-Match: %s\r\n", etag);
  CHECK_INT(serve_with(st, "GET", "/a.css", raw, NULL), 304);
  CHECK_INT(res.fd, -1);
  CHECK_INT(res.length, 0);
  CHECK_STR(header("ETag"), etag);
  CHECK_STR(header("Last-Modified"), lm);
  CHECK_STR(header("Cache-Control"), "no-cache");
  CHECK(!head_has("Content-Length"));
  CHECK(memcmp(res.head, "HTTP/1.1 304 Not Modified\r\n", 27) == 0);
  CHECK(memcmp(res.head + res.head_len - 4, "\r\n\r\n", 4) == 0);
  CHECK_INT(serve_with(st, "HEAD", "/a.css", raw, NULL), 304);

  /* Weak comparison: the strong form of the tag matches too; in a list. */
  snprintf(raw, sizeof raw, "If-None-Match: \"x\", %s, \"y\"\r\n", etag + 2);
  CHECK_INT(serve_with(st, "GET", "/a.css", raw, NULL), 304);
  snprintf(raw, sizeof raw, "If-None-Match: \"a,b\"\r\nIf-None-Match: %s\r\n",
           etag);
  CHECK_INT(serve_with(st, "GET", "/a.css", raw, NULL), 304);
  CHECK_INT(serve_with(st, "GET", "/a.css", "If-None-Match: *\r\n", NULL), 304);
  CHECK_INT(
      serve_with(st, "GET", "/a.css", "If-None-Match: \"other\"\r\n", NULL),
      200);
  CHECK(res.fd >= 0);
  CHECK_INT(serve_with(st, "GET", "/a.css", "If-None-Match: garbage\r\n", NULL),
            200);
  /* Another file's tag does not match. */
  CHECK_INT(serve_with(st, "GET", "/app.js", raw, NULL), 200);

  /* If-Modified-Since: at mtime, later: 304; earlier: 200. */
  snprintf(raw, sizeof raw, "If-Modified-Since: %s\r\n", lm);
  CHECK_INT(serve_with(st, "GET", "/a.css", raw, NULL), 304);
  time_t t;
  CHECK_INT(dx_http_date_parse(lm, strlen(lm), &t), 0);
  char d[30];
  CHECK_INT(dx_http_date(t + 3600, d), 29);
  snprintf(raw, sizeof raw, "If-Modified-Since: %s\r\n", d);
  CHECK_INT(serve_with(st, "GET", "/a.css", raw, NULL), 304);
  CHECK_INT(dx_http_date(t - 86400, d), 29);
  snprintf(raw, sizeof raw, "If-Modified-Since: %s\r\n", d);
  CHECK_INT(serve_with(st, "GET", "/a.css", raw, NULL), 200);
  CHECK(res.fd >= 0);
  CHECK_INT(
      serve_with(st, "GET", "/a.css", "If-Modified-Since: yesterday\r\n", NULL),
      200);
  /* If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2). */
  snprintf(raw, sizeof raw,
           "If-None-Match: \"other\"\r\nIf-Modified-Since: %s\r\n", lm);
  CHECK_INT(serve_with(st, "GET", "/a.css", raw, NULL), 200);
  /* Range is ignored: the whole file. */
  CHECK_INT(serve_with(st, "GET", "/a.css", "Range: bytes=0-1\r\n", NULL), 200);
  CHECK_STR(header("Content-Length"), "6");
  CHECK_INT(res.length, 6);

  /* A change of content changes the tag. */
  writef("root/a.css", "body{color:red}");
  CHECK_INT(get("/a.css"), 200);
  CHECK(strcmp(header("ETag"), etag) != 0);
  snprintf(raw, sizeof raw, "If-None-Match: %s\r\n", etag);
  CHECK_INT(serve_with(st, "GET", "/a.css", raw, NULL), 200);
  CHECK_STR(body(), "body{color:red}");
  writef("root/a.css", "body{}");
}

static void test_methods(void) {
  static const char *const methods[] = {"POST",    "PUT",   "DELETE",
                                        "OPTIONS", "PATCH", "get"};
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
    CHECK_INT(serve_with(st, methods[i], "/a.css", NULL, NULL), 405);
    CHECK_INT(res.fd, -1);
    CHECK_STR(header("Allow"), "GET, HEAD");
    CHECK_STR(body(), "405 Method Not Allowed\n");
  }
}

static void test_connection(void) {
  CHECK_INT(serve_with(st, "GET", "/a.css", "Connection: close\r\n", NULL),
            200);
  CHECK(!res.keep_alive);
  CHECK_STR(header("Connection"), "close");
  /* A body this layer does not read: never keep the connection. */
  CHECK_INT(serve_with(st, "GET", "/a.css", "Content-Length: 5\r\n", NULL),
            200);
  CHECK(!res.keep_alive);
  CHECK_INT(serve_with(st, "POST", "/a.css", "Content-Length: 5\r\n", NULL),
            405);
  CHECK(!res.keep_alive);
  CHECK_STR(header("Connection"), "close");
  /* Errors that are the client's path keep the connection. */
  CHECK_INT(get("/nope"), 404);
  CHECK(res.keep_alive);
  CHECK_INT(get("/%zz"), 400);
  CHECK(res.keep_alive);
  /* A request dx_http_request_check rejects: its status, and close. */
  CHECK_INT(serve_with(st, "GET", "/a.css",
                       "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n",
                       NULL),
            400);
  CHECK(!res.keep_alive);
  CHECK_INT(res.fd, -1);
  CHECK_STR(header("Connection"), "close");
  CHECK_INT(serve_with(st, "GET", "/a.css",
                       "Transfer-Encoding: gzip, chunked\r\n", NULL),
            501);
}

static void test_permission(void) {
  if (geteuid() == 0) {
    fprintf(stderr, "    (root: permission checks skipped)\n");
    return;
  }
  char path[600];
  snprintf(path, sizeof path, "%s/locked.txt", root);
  writef("root/locked.txt", "locked");
  chmod(path, 0);
  CHECK_INT(get("/locked.txt"), 403);
  CHECK_INT(res.fd, -1);
  CHECK_INT(res.err, -EACCES);
  chmod(path, 0644);
}

static time_t fixed_now(void *ud) {
  return *(time_t *)ud;
}

static size_t live_bytes;
static void *counting_realloc(void *ud, void *p, size_t old, size_t n) {
  (void)ud;
  live_bytes += n;
  live_bytes -= old;
  if (n == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, n);
}

static void test_config(void) {
  time_t now = 784111777;
  dx_static_config cfg = {.root = root,
                          .index = "app.js",
                          .max_age = 60,
                          .allow_hidden = true,
                          .extra_headers = "X-Frame-Options: DENY\r\n",
                          .now = fixed_now,
                          .now_ud = &now,
                          .alloc = {counting_realloc, NULL}};
  dx_static *s = dx_static_new(&cfg);
  CHECK(s != NULL);
  CHECK(live_bytes > 0);
  CHECK_INT(serve_with(s, "GET", "/", NULL, NULL), 200);
  CHECK_STR(body(), "console.log(1)");
  CHECK_STR(header("Cache-Control"), "public, max-age=60");
  CHECK_STR(header("Date"), "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK_STR(header("X-Frame-Options"), "DENY");
  CHECK_INT(serve_with(s, "GET", "/index.html", NULL, NULL), 200);
  CHECK_STR(header("Cache-Control"), "no-cache");
  CHECK_INT(serve_with(s, "GET", "/.env", NULL, NULL), 200);
  CHECK_STR(body(), "SECRET=1");
  CHECK_INT(serve_with(s, "GET", "/nope", NULL, NULL), 404);
  CHECK_STR(header("Date"), "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK_STR(header("X-Frame-Options"), "DENY");
  /* Outside stays outside, hidden files allowed or not. */
  CHECK_INT(serve_with(s, "GET", "/link-outside", NULL, NULL), 404);
  CHECK_INT(serve_with(s, "GET", "/sub/", NULL, NULL), 404); /* no app.js */
  dx_static_result_close(&res);
  dx_static_free(s);
  CHECK_INT(live_bytes, 0);
  dx_static_free(NULL);
}

static void test_new_errors(void) {
  char file[600];
  snprintf(file, sizeof file, "%s/a.css", root);
  struct {
    dx_static_config cfg;
    int err;
  } cases[] = {
      {{.root = NULL}, EINVAL},
      {{.root = ""}, EINVAL},
      {{.root = "/nonexistent/dx-static"}, ENOENT},
      {{.root = file}, ENOTDIR},
      {{.root = root, .index = "a/b"}, EINVAL},
      {{.root = root, .index = ""}, EINVAL},
      {{.root = root, .index = ".."}, EINVAL},
      {{.root = root, .extra_headers = "X: 1"}, EINVAL},
      {{.root = root, .extra_headers = "X: 1\r\n\r\n"}, EINVAL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    errno = 0;
    CHECK(dx_static_new(&cases[i].cfg) == NULL);
    CHECK_INT(errno, cases[i].err);
  }
  CHECK(dx_static_new(NULL) == NULL);
}

/* A root reached through a symlink, with an absolute link written through
 * the root's real path: still inside. */
static void test_root_via_link(void) {
  char lnk[600];
  snprintf(lnk, sizeof lnk, "%s/rootlink", tmp);
  CHECK_INT(symlink("root", lnk), 0);
  dx_static_config cfg = {.root = lnk};
  dx_static *s = dx_static_new(&cfg);
  CHECK(s != NULL);
  CHECK_INT(serve_with(s, "GET", "/link-abs-inside", NULL, NULL), 200);
  CHECK_STR(body(), "body{}");
  CHECK_INT(serve_with(s, "GET", "/link-outside-abs", NULL, NULL), 404);
  dx_static_result_close(&res);
  dx_static_free(s);
}

int main(void) {
  setup();
  res.fd = -1;
  dx_static_config cfg = {.root = root};
  st = dx_static_new(&cfg);
  if (!st) {
    perror("dx_static_new");
    return 1;
  }
  RUN(test_get_files);
  RUN(test_head);
  RUN(test_empty_file);
  RUN(test_directories);
  RUN(test_traversal);
  RUN(test_symlinks_inside);
  RUN(test_conditional);
  RUN(test_methods);
  RUN(test_connection);
  RUN(test_permission);
  RUN(test_config);
  RUN(test_new_errors);
  RUN(test_root_via_link);
  dx_static_result_close(&res);
  dx_static_free(st);
  teardown();
  return CHECK_DONE();
}
