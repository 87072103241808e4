/*
 * dx_client: URL parsing and the backoff math (the internal helpers), then
 * the client on a real loop against peers in the same process: a refused
 * port, a raw socket that answers canned HTTP, and a dx_server echo route
 * on its own thread. Every loop run is bounded in time.
 */
#include "check.h"

#include "client/internal.h"
#include <duplex/client.h>
#include <duplex/server.h>

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- URLs ---------------------------------------------------------------- */

typedef struct url_case {
  const char *url;
  bool tls;
  const char *host;
  int port;
  const char *target;
  const char *authority;
} url_case;

static void test_url_valid(void) {
  static const url_case cases[] = {
      {"ws://example.com", false, "example.com", 80, "/", "example.com"},
      {"wss://example.com", true, "example.com", 443, "/", "example.com"},
      {"WS://Example.com:8080/chat?x=1&y", false, "Example.com", 8080,
       "/chat?x=1&y", "Example.com:8080"},
      {"ws://h?q=1", false, "h", 80, "/?q=1", "h"},
      {"ws://127.0.0.1:80/", false, "127.0.0.1", 80, "/", "127.0.0.1"},
      {"wss://10.0.0.1:443/a/b", true, "10.0.0.1", 443, "/a/b", "10.0.0.1"},
      {"wss://10.0.0.1:80/", true, "10.0.0.1", 80, "/", "10.0.0.1:80"},
      {"ws://[::1]/", false, "::1", 80, "/", "[::1]"},
      {"ws://[::1]:9001/x", false, "::1", 9001, "/x", "[::1]:9001"},
      {"wss://[2001:db8::1]", true, "2001:db8::1", 443, "/", "[2001:db8::1]"},
      {"ws://h:65535/", false, "h", 65535, "/", "h:65535"},
      {"ws://h/caf\xc3\xa9", false, "h", 80, "/caf%C3%A9", "h"},
      {"ws://my_host.local-1/", false, "my_host.local-1", 80, "/",
       "my_host.local-1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const url_case *k = &cases[i];
    char buf[512];
    dx__url u;
    int rc = dx__url_parse(k->url, &u, buf, sizeof buf);
    if (rc) fprintf(stderr, "    url: %s\n", k->url);
    CHECK_INT(rc, 0);
    CHECK_INT(u.tls, k->tls);
    CHECK_STR(u.host, k->host);
    CHECK_INT(u.port, k->port);
    CHECK_STR(u.target, k->target);
    CHECK_STR(u.authority, k->authority);
    CHECK_INT(u.ipv6, k->host[0] != 0 && strchr(k->host, ':') != NULL);
  }
}

static void test_url_invalid(void) {
  static const char *const bad[] = {
      "",
      "http://example.com/",
      "https://x/",
      "ftp://x",
      "ws:/x",
      "ws//x",
      "ws://",
      "ws:///path",
      "ws://:80/",
      "ws://h:/",
      "ws://h:0/",
      "ws://h:65536/",
      "ws://h:123456/",
      "ws://h:8a/",
      "ws://h:-1/",
      "ws://user@h/",
      "ws://user:pw@h/",
      "ws://h/#frag",
      "ws://h/a#",
      "ws://h/a b",
      "ws://h/a\tb",
      "ws://h/\x7f",
      "ws://h/\r\n",
      "ws://[::1/",
      "ws://[::1]x/",
      "ws://[]/",
      "ws://[not:v6::zz]/",
      "ws://[fe80::1%25eth0]/",
      "ws://h h/",
      "ws://h:80:81/",
      "ws://h%41/",
      "ws://[::1]:0/",
      "ws://ex ample.com/",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char buf[512];
    dx__url u;
    int rc = dx__url_parse(bad[i], &u, buf, sizeof buf);
    if (rc != DX_EINVAL) fprintf(stderr, "    url: %s\n", bad[i]);
    CHECK_INT(rc, DX_EINVAL);
  }
  /* A buffer too small is reported, never overrun. */
  char small[8];
  dx__url u;
  CHECK_INT(
      dx__url_parse("ws://example.com/long/path", &u, small, sizeof small),
      DX_ENOSPC);
  /* DX__URL_BUF is enough even when every path byte is escaped. */
  const char *worst = "ws://h/\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  size_t cap = DX__URL_BUF(worst);
  char *b = malloc(cap);
  CHECK_INT(dx__url_parse(worst, &u, b, cap), 0);
  free(b);
  /* dx_client_new says EINVAL for a bad URL. */
  dx_loop *loop = dx_loop_new(NULL);
  dx_client_config cfg = {.url = "http://x/"};
  errno = 0;
  CHECK(dx_client_new(loop, &cfg) == NULL);
  CHECK_INT(errno, EINVAL);
  const char *hdrs[] = {"Sec-WebSocket-Key: x", NULL};
  dx_client_config cfg2 = {.url = "ws://x/", .headers = hdrs};
  CHECK(dx_client_new(loop, &cfg2) == NULL);
  const char *hdrs2[] = {"X-Ok: yes", "Authorization: Bearer t", NULL};
  dx_client_config cfg3 = {.url = "ws://x/", .headers = hdrs2};
  dx_client *c = dx_client_new(loop, &cfg3);
  CHECK(c != NULL);
  CHECK_INT(dx_client_state(c), DX_CLOSED);
  CHECK_INT(dx_client_send(c, DX_OP_TEXT, "x", 1), DX_ECLOSED);
  dx_client_free(c);
  dx_loop_free(loop);
}

/* ---- backoff ------------------------------------------------------------- */

static void test_backoff_cap(void) {
  CHECK_INT(dx__backoff_cap(500, 30000, 1), 500);
  CHECK_INT(dx__backoff_cap(500, 30000, 2), 1000);
  CHECK_INT(dx__backoff_cap(500, 30000, 3), 2000);
  CHECK_INT(dx__backoff_cap(500, 30000, 6), 16000);
  CHECK_INT(dx__backoff_cap(500, 30000, 7), 30000);
  CHECK_INT(dx__backoff_cap(500, 30000, 8), 30000);
  /* No overflow however far the count goes. */
  CHECK_INT(dx__backoff_cap(500, 30000, 33), 30000);
  CHECK_INT(dx__backoff_cap(500, 30000, 1000000), 30000);
  CHECK_INT(dx__backoff_cap(3000000000u, 4000000000u, 2), 4000000000u);
  CHECK_INT(dx__backoff_cap(1, 0xffffffffu, 32), 0x80000000u);
  CHECK_INT(dx__backoff_cap(100, 50, 1), 50);
}

/* Full jitter: every draw in [0, cap], and the draws spread over the whole
 * range (uniform: mean near cap/2, both ends reached). */
static void test_backoff_jitter(void) {
  enum { DRAWS = 20000 };
  for (unsigned attempt = 1; attempt <= 8; attempt++) {
    unsigned cap = dx__backoff_cap(100, 5000, attempt);
    unsigned lo = cap, hi = 0;
    double sum = 0;
    unsigned below_quarter = 0;
    for (int i = 0; i < DRAWS; i++) {
      dx__backoff b = {.base_ms = 100,
                       .max_ms = 5000,
                       .stable_ms = 1000,
                       .attempt = attempt - 1};
      unsigned got_attempt, d;
      CHECK(dx__backoff_next(&b, dx__client_random(), &got_attempt, &d));
      CHECK_INT(got_attempt, attempt);
      CHECK(d <= cap);
      if (d < lo) lo = d;
      if (d > hi) hi = d;
      if (d < cap / 4) below_quarter++;
      sum += d;
    }
    double mean = sum / DRAWS;
    CHECK(lo <= cap / 50);
    CHECK(hi >= cap - cap / 50);
    CHECK(mean > cap * 0.46 && mean < cap * 0.54);
    CHECK(below_quarter > DRAWS * 0.22 && below_quarter < DRAWS * 0.28);
  }
  /* rnd maps onto [0, cap] inclusive. */
  dx__backoff b = {.base_ms = 10, .max_ms = 100};
  unsigned a, d;
  CHECK(dx__backoff_next(&b, 10, &a, &d));
  CHECK_INT(d, 10);
  CHECK(dx__backoff_next(&b, 21, &a, &d)); /* cap 20: 21 % 21 */
  CHECK_INT(d, 0);
}

static void test_backoff_limits_and_reset(void) {
  dx__backoff b = {
      .base_ms = 100, .max_ms = 1000, .max_attempts = 3, .stable_ms = 5000};
  unsigned a, d;
  CHECK(dx__backoff_next(&b, 0, &a, &d));
  CHECK(dx__backoff_next(&b, 0, &a, &d));
  CHECK(dx__backoff_next(&b, 0, &a, &d));
  CHECK_INT(a, 3);
  CHECK(!dx__backoff_next(&b, 0, &a, &d)); /* max_attempts */
  CHECK_INT(b.attempt, 3);
  /* Open briefly, lost again: the count goes on (a flapping server keeps
   * being backed off). */
  b.max_attempts = 0;
  dx__backoff_opened(&b, 1000);
  dx__backoff_lost(&b, 1000 + 4999);
  CHECK_INT(b.attempt, 3);
  CHECK(dx__backoff_next(&b, ~0ull, &a, &d));
  CHECK_INT(a, 4);
  CHECK(d <= 800);
  /* Open for stable_ms: the next attempt is the first again. */
  dx__backoff_opened(&b, 20000);
  dx__backoff_lost(&b, 25000);
  CHECK_INT(b.attempt, 0);
  CHECK(dx__backoff_next(&b, ~0ull, &a, &d));
  CHECK_INT(a, 1);
  CHECK(d <= 100);
  /* Lost without having opened: nothing resets. */
  dx__backoff_lost(&b, 99999);
  CHECK_INT(b.attempt, 1);
}

/* ---- the client on a loop ------------------------------------------------ */

typedef struct rec {
  dx_loop *loop;
  int opens, closes, errors, reconnects, messages, drains;
  int last_err, last_status;
  dx_ready_state state_in_error, state_in_close;
  uint16_t close_code;
  bool clean;
  bool in_connect; /* a handler must never run inside dx_client_connect */
  bool handler_in_connect;
  unsigned delays[16];
  unsigned attempts[16];
  char last_msg[256];
  char last_text[64];
  bool free_in_error, free_in_message, close_in_open;
  bool stop_on_close, stop_on_error_final;
  dx_client *c;
} rec;

static void note(rec *r) {
  if (r->in_connect) r->handler_in_connect = true;
}

static void h_open(dx_client *c, void *ud) {
  rec *r = ud;
  note(r);
  r->opens++;
  dx_client_send(c, DX_OP_TEXT, "hello", 5);
}

static void h_message(dx_client *c, dx_opcode op, uint8_t *data, size_t len,
                      void *ud) {
  rec *r = ud;
  note(r);
  r->messages++;
  if (op == DX_OP_TEXT && len < sizeof r->last_text) {
    memcpy(r->last_text, data, len);
    r->last_text[len] = 0;
  }
  if (r->free_in_message) {
    dx_client_free(c);
    r->c = NULL;
    dx_loop_stop(r->loop);
    return;
  }
  if (op == DX_OP_TEXT) dx_client_close(c, DX_CLOSE_NORMAL, "done");
}

static void h_close(dx_client *c, uint16_t code, const char *reason, size_t len,
                    bool clean, void *ud) {
  (void)reason, (void)len;
  rec *r = ud;
  note(r);
  r->closes++;
  r->close_code = code;
  r->clean = clean;
  r->state_in_close = dx_client_state(c);
  if (r->stop_on_close) dx_loop_stop(r->loop);
}

static void h_error(dx_client *c, const dx_client_error *e, void *ud) {
  rec *r = ud;
  note(r);
  r->errors++;
  r->last_err = e->err;
  r->last_status = e->http_status;
  snprintf(r->last_msg, sizeof r->last_msg, "%s", e->message);
  r->state_in_error = dx_client_state(c);
  if (r->free_in_error) {
    dx_client_free(c);
    r->c = NULL;
    dx_loop_stop(r->loop);
    return;
  }
  if (r->stop_on_error_final && dx_client_state(c) == DX_CLOSED)
    dx_loop_stop(r->loop);
}

static void h_reconnect(dx_client *c, unsigned attempt, unsigned delay,
                        void *ud) {
  (void)c;
  rec *r = ud;
  note(r);
  if (r->reconnects < 16) {
    r->attempts[r->reconnects] = attempt;
    r->delays[r->reconnects] = delay;
  }
  r->reconnects++;
}

static void h_drain(dx_client *c, void *ud) {
  rec *r = ud;
  r->drains++;
  CHECK_INT(dx_client_buffered(c), 0);
}

static dx_client_config base_cfg(const char *url, rec *r) {
  return (dx_client_config){.url = url,
                            .ud = r,
                            .on_open = h_open,
                            .on_message = h_message,
                            .on_close = h_close,
                            .on_error = h_error,
                            .on_reconnect = h_reconnect,
                            .on_drain = h_drain};
}

/* A port with nothing listening: bind, read the port, close. */
static int dead_port(void) {
  int fd = dx_tcp_listen("127.0.0.1", 0, false, 1);
  int port = dx_tcp_local_port(fd);
  close(fd);
  return port;
}

static void test_refused(void) {
  dx_loop *loop = dx_loop_new(NULL);
  rec r = {.loop = loop, .stop_on_error_final = true};
  char url[64];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/", dead_port());
  dx_client_config cfg = base_cfg(url, &r);
  dx_client *c = dx_client_new(loop, &cfg);
  r.in_connect = true;
  CHECK_INT(dx_client_connect(c), 0);
  CHECK_INT(dx_client_connect(c), DX_ESTATE);
  r.in_connect = false;
  CHECK_INT(dx_client_state(c), DX_CONNECTING);
  CHECK_INT(dx_client_send(c, DX_OP_TEXT, "x", 1), DX_ESTATE);
  for (int i = 0; i < 100 && r.errors == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK(!r.handler_in_connect);
  CHECK_INT(r.errors, 1);
  CHECK_INT(r.last_err, DX_ECONNREFUSED);
  CHECK_INT(r.state_in_error, DX_CLOSED);
  CHECK_INT(r.closes, 0); /* never opened: no on_close */
  CHECK(strstr(r.last_msg, "cannot connect to 127.0.0.1:") != NULL);
  CHECK(strstr(r.last_msg, "connection refused") != NULL);
  /* Connect again after a final failure is allowed. */
  CHECK_INT(dx_client_connect(c), 0);
  for (int i = 0; i < 100 && r.errors == 1; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r.errors, 2);
  dx_client_free(c);
  dx_loop_free(loop);
}

/* A name goes through the resolver thread; every address is tried. */
static void test_resolve_refused(void) {
  dx_loop *loop = dx_loop_new(NULL);
  rec r = {.loop = loop};
  char url[64];
  snprintf(url, sizeof url, "ws://localhost:%d/", dead_port());
  dx_client_config cfg = base_cfg(url, &r);
  dx_client *c = dx_client_new(loop, &cfg);
  CHECK_INT(dx_client_connect(c), 0);
  for (int i = 0; i < 200 && r.errors == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r.errors, 1);
  CHECK_INT(r.last_err, DX_ECONNREFUSED);
  CHECK(strstr(r.last_msg, "localhost:") != NULL);
  /* Freed while the lookup runs: the thread's answer is dropped, and the
   * job is freed by whoever finishes last (ASan checks both). */
  CHECK_INT(dx_client_connect(c), 0);
  dx_loop_run_once(loop, 0); /* the attempt starts: the thread is off */
  dx_client_free(c);
  for (int i = 0; i < 20; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r.errors, 1);
  /* A name that does not resolve (RFC 6761: .invalid never does). Where
   * the resolver hangs instead of failing, the connect deadline (which
   * covers DNS) answers: either way the loop was never blocked. */
  rec r2 = {.loop = loop};
  dx_client_config cfg2 = base_cfg("ws://no-such-host.invalid/", &r2);
  cfg2.connect_timeout_ms = 2000;
  c = dx_client_new(loop, &cfg2);
  CHECK_INT(dx_client_connect(c), 0);
  for (int i = 0; i < 200 && r2.errors == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r2.errors, 1);
  if (r2.last_err == DX_ERESOLVE)
    CHECK(strstr(r2.last_msg, "cannot resolve no-such-host.invalid") != NULL);
  else
    CHECK_INT(r2.last_err, DX_ETIMEDOUT);
  dx_client_free(c);
  dx_loop_free(loop);
}

static void test_reconnect_attempts(void) {
  dx_loop *loop = dx_loop_new(NULL);
  rec r = {.loop = loop};
  char url[64];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/", dead_port());
  dx_client_config cfg = base_cfg(url, &r);
  cfg.reconnect = true;
  cfg.backoff_base_ms = 10;
  cfg.backoff_max_ms = 40;
  cfg.max_attempts = 4;
  dx_client *c = dx_client_new(loop, &cfg);
  CHECK_INT(dx_client_connect(c), 0);
  for (int i = 0; i < 200 && r.state_in_error != DX_CLOSED; i++)
    dx_loop_run_once(loop, 50);
  /* The first attempt and four retries fail; retries 1..4 were scheduled
   * with delays under 10, 20, 40, 40 ms. */
  CHECK_INT(r.errors, 5);
  CHECK_INT(r.reconnects, 4);
  static const unsigned caps[] = {10, 20, 40, 40};
  for (int i = 0; i < 4; i++) {
    CHECK_INT(r.attempts[i], i + 1);
    CHECK(r.delays[i] <= caps[i]);
  }
  CHECK_INT(r.state_in_error, DX_CLOSED);
  CHECK_INT(dx_client_state(c), DX_CLOSED);

  /* dx_client_close while waiting cancels the reconnection quietly. */
  r = (rec){.loop = loop};
  cfg.max_attempts = 0;
  cfg.backoff_base_ms = 5000;
  dx_client *c2 = dx_client_new(loop, &cfg);
  CHECK_INT(dx_client_connect(c2), 0);
  for (int i = 0; i < 100 && r.reconnects == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r.reconnects, 1);
  CHECK_INT(dx_client_state(c2), DX_CONNECTING);
  CHECK_INT(dx_client_close(c2, DX_CLOSE_NORMAL, NULL), 0);
  CHECK_INT(dx_client_state(c2), DX_CLOSED);
  for (int i = 0; i < 5; i++)
    dx_loop_run_once(loop, 10);
  CHECK_INT(r.errors, 1);
  CHECK_INT(r.reconnects, 1);
  /* Freed inside on_error: the rest of the failure path must not touch
   * it (ASan). */
  r = (rec){.loop = loop, .free_in_error = true};
  dx_client *c3 = dx_client_new(loop, &cfg);
  r.c = c3;
  CHECK_INT(dx_client_connect(c3), 0);
  for (int i = 0; i < 100 && r.errors == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r.errors, 1);
  CHECK_INT(r.reconnects, 0);
  dx_client_free(c);
  dx_client_free(c2);
  dx_loop_free(loop);
}

/* ---- a raw peer with canned answers ---------------------------------- */

typedef struct raw_peer {
  dx_io lio;
  dx_io cio;
  const char *answer;
  bool accept_mute; /* answer 101, then never a byte */
  int accepted;
  char req[4096];
  size_t req_len;
} raw_peer;

static void raw_conn_io(dx_io *io, unsigned ev) {
  (void)ev;
  raw_peer *p = (raw_peer *)((char *)io - offsetof(raw_peer, cio));
  for (;;) {
    ssize_t n =
        read(io->fd, p->req + p->req_len, sizeof p->req - 1 - p->req_len);
    if (n <= 0) break;
    p->req_len += (size_t)n;
    p->req[p->req_len] = 0;
  }
  if (strstr(p->req, "\r\n\r\n") && p->accept_mute) {
    /* A valid 101, then silence: no pongs, no close frame. */
    const char *k = strstr(p->req, "Sec-WebSocket-Key: ");
    char acc[29], resp[256];
    if (!k || dx_ws_accept_key(k + 19, 24, acc)) return;
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
                     "websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     acc);
    ssize_t w = write(io->fd, resp, (size_t)n);
    (void)w;
    p->accept_mute = false;
    return;
  }
  if (strstr(p->req, "\r\n\r\n") && p->answer) {
    ssize_t w = write(io->fd, p->answer, strlen(p->answer));
    (void)w;
    p->answer = NULL;
    dx_io_stop(io);
    close(io->fd);
  }
}

static void raw_accept(dx_io *io, unsigned ev) {
  (void)ev;
  raw_peer *p = (raw_peer *)io;
  int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return;
  p->accepted++;
  p->req_len = 0;
  dx_io_start(io->loop, &p->cio, fd, DX_IO_READ, raw_conn_io);
}

static int raw_start(dx_loop *loop, raw_peer *p) {
  int fd = dx_tcp_listen("127.0.0.1", 0, false, 8);
  dx_io_start(loop, &p->lio, fd, DX_IO_READ, raw_accept);
  return dx_tcp_local_port(fd);
}

static void raw_stop(raw_peer *p) {
  dx_io_stop(&p->lio);
  close(p->lio.fd);
}

static void http_answer_case(const char *answer, int status, bool retries,
                             const char *want_msg) {
  dx_loop *loop = dx_loop_new(NULL);
  raw_peer peer = {.answer = answer};
  int port = raw_start(loop, &peer);
  rec r = {.loop = loop};
  char url[64];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/path?q=1", port);
  const char *hdrs[] = {"Authorization: Bearer abc", NULL};
  const char *protos[] = {"p1", "p2", NULL};
  dx_client_config cfg = base_cfg(url, &r);
  cfg.headers = hdrs;
  cfg.subprotocols = protos;
  cfg.origin = "http://o.example";
  cfg.reconnect = true;
  cfg.backoff_base_ms = 10000; /* the first retry is only scheduled */
  dx_client *c = dx_client_new(loop, &cfg);
  CHECK_INT(dx_client_connect(c), 0);
  for (int i = 0; i < 100 && r.errors == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r.errors, 1);
  CHECK_INT(r.last_status, status);
  CHECK_INT(r.last_err, DX_EHANDSHAKE);
  if (!strstr(r.last_msg, want_msg))
    fprintf(stderr, "    message: %s\n", r.last_msg);
  CHECK(strstr(r.last_msg, want_msg) != NULL);
  CHECK_INT(r.reconnects, retries ? 1 : 0);
  CHECK_INT(dx_client_state(c), retries ? DX_CONNECTING : DX_CLOSED);
  /* What was asked for. */
  CHECK(strstr(peer.req, "GET /path?q=1 HTTP/1.1\r\n") == peer.req);
  CHECK(strstr(peer.req, "\r\nAuthorization: Bearer abc\r\n") != NULL);
  CHECK(strstr(peer.req, "\r\nSec-WebSocket-Protocol: p1, p2\r\n") != NULL);
  CHECK(strstr(peer.req, "\r\nOrigin: http://o.example\r\n") != NULL);
  char host[64];
  snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", port);
  CHECK(strstr(peer.req, host) != NULL);
  dx_client_free(c);
  raw_stop(&peer);
  dx_loop_free(loop);
}

static void test_http_answers(void) {
  http_answer_case("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 403,
                   false, "server answered 403 Forbidden");
  http_answer_case("HTTP/1.1 301 Moved Permanently\r\nLocation: "
                   "ws://elsewhere/\r\nContent-Length: 0\r\n\r\n",
                   301, true,
                   "server answered 301 Moved Permanently (redirect to "
                   "ws://elsewhere/");
  /* 429 and 503 are worth retrying; 404 is not. */
  http_answer_case("HTTP/1.1 429 Too Many Requests\r\n\r\n", 429, true,
                   "429 Too Many Requests");
  http_answer_case("HTTP/1.1 503 Service Unavailable\r\n\r\n", 503, true,
                   "503");
  http_answer_case("HTTP/1.1 404 \r\n\r\n", 404, false,
                   "server answered 404 Not Found");
}

static void test_handshake_timeout(void) {
  dx_loop *loop = dx_loop_new(NULL);
  raw_peer peer = {0}; /* accepts, never answers */
  int port = raw_start(loop, &peer);
  rec r = {.loop = loop};
  char url[64];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/", port);
  dx_client_config cfg = base_cfg(url, &r);
  cfg.handshake_timeout_ms = 200;
  dx_client *c = dx_client_new(loop, &cfg);
  CHECK_INT(dx_client_connect(c), 0);
  uint64_t t0 = dx_loop_now(loop);
  for (int i = 0; i < 100 && r.errors == 0; i++)
    dx_loop_run_once(loop, 50);
  uint64_t took = dx_loop_now(loop) - t0;
  CHECK_INT(r.errors, 1);
  CHECK_INT(r.last_err, DX_ETIMEDOUT);
  CHECK(took >= 150 && took < 2000);
  CHECK(strstr(r.last_msg, "no WebSocket handshake") != NULL);
  dx_client_free(c);
  if (peer.cio.loop) {
    dx_io_stop(&peer.cio);
    close(peer.cio.fd);
  }
  raw_stop(&peer);
  dx_loop_free(loop);
}

/* A peer that accepts the upgrade and then goes silent: the keepalive
 * finds it dead; a closing handshake it never answers ends by the close
 * timeout, not clean. */
static void test_silent_peer(void) {
  for (int mode = 0; mode < 2; mode++) {
    dx_loop *loop = dx_loop_new(NULL);
    raw_peer peer = {.accept_mute = true};
    int port = raw_start(loop, &peer);
    rec r = {.loop = loop};
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/", port);
    dx_client_config cfg = base_cfg(url, &r);
    if (mode == 0)
      cfg.ping_interval_ms = 100;
    else
      cfg.close_timeout_ms = 200;
    dx_client *c = dx_client_new(loop, &cfg);
    CHECK_INT(dx_client_connect(c), 0);
    for (int i = 0; i < 100 && r.opens == 0; i++)
      dx_loop_run_once(loop, 50);
    CHECK_INT(r.opens, 1);
    uint64_t t0 = dx_loop_now(loop);
    if (mode == 1) CHECK_INT(dx_client_close(c, 1000, NULL), 0);
    if (mode == 1) CHECK_INT(dx_client_state(c), DX_CLOSING);
    for (int i = 0; i < 100 && r.closes == 0; i++)
      dx_loop_run_once(loop, 50);
    uint64_t took = dx_loop_now(loop) - t0;
    CHECK_INT(r.closes, 1);
    CHECK_INT(r.close_code, DX_CLOSE_ABNORMAL);
    CHECK(!r.clean);
    CHECK(took >= 150 && took < 2000);
    if (mode == 0) {
      CHECK_INT(r.errors, 1);
      CHECK_INT(r.last_err, DX_ETIMEDOUT);
      CHECK(strstr(r.last_msg, "no pong") != NULL);
    } else {
      CHECK_INT(r.errors, 0);
    }
    dx_client_free(c);
    if (peer.cio.loop) {
      dx_io_stop(&peer.cio);
      close(peer.cio.fd);
    }
    raw_stop(&peer);
    dx_loop_free(loop);
  }
}

/* ---- against dx_server --------------------------------------------------- */

static void echo_message(dx_conn *c, dx_opcode op, uint8_t *data, size_t len,
                         void *ud) {
  (void)ud;
  dx_conn_send(c, op, data, len);
}

static void *server_thread(void *arg) {
  return (void *)(intptr_t)dx_server_run(arg);
}

typedef struct server_box {
  dx_server *srv;
  pthread_t t;
  int port;
} server_box;

static bool server_up(server_box *b) {
  dx_server_config cfg = {.host = "127.0.0.1", .threads = 1};
  b->srv = dx_server_new(&cfg);
  static const char *const protos[] = {"chat.v2", "chat.v1", NULL};
  dx_route route = {.path = "/echo",
                    .on_message = echo_message,
                    .subprotocols = protos,
                    .deflate = true};
  if (!b->srv || dx_server_route(b->srv, &route) || dx_server_start(b->srv))
    return false;
  b->port = dx_server_port(b->srv);
  return pthread_create(&b->t, NULL, server_thread, b->srv) == 0;
}

static void test_against_server(void) {
  server_box b;
  CHECK(server_up(&b));
  dx_loop *loop = dx_loop_new(NULL);
  char url[64];
  snprintf(url, sizeof url, "ws://127.0.0.1:%d/echo", b.port);

  /* open, "hello" out and back, close 1000 from the client. */
  rec r = {.loop = loop, .stop_on_close = true};
  const char *protos[] = {"chat.v1", "chat.v2", NULL};
  dx_client_config cfg = base_cfg(url, &r);
  cfg.deflate = true;
  cfg.subprotocols = protos;
  dx_client *c = dx_client_new(loop, &cfg);
  CHECK_INT(dx_client_connect(c), 0);
  for (int i = 0; i < 200 && r.closes == 0; i++) {
    dx_loop_run_once(loop, 50);
    if (r.opens && r.closes == 0 && dx_client_state(c) == DX_OPEN) {
      CHECK_STR(dx_client_subprotocol(c), "chat.v2"); /* server's choice */
      CHECK(strstr(dx_client_extensions(c), "permessage-deflate") != NULL);
    }
  }
  CHECK_INT(r.opens, 1);
  CHECK_INT(r.messages, 1);
  CHECK_STR(r.last_text, "hello");
  CHECK_INT(r.closes, 1);
  CHECK_INT(r.close_code, DX_CLOSE_NORMAL);
  CHECK(r.clean);
  CHECK_INT(r.errors, 0);
  CHECK_INT(r.state_in_close, DX_CLOSED);
  CHECK_INT(dx_client_state(c), DX_CLOSED);
  CHECK(dx_client_subprotocol(c) == NULL);
  dx_client_free(c);

  /* Freed inside on_message, in the middle of the engine's events. */
  rec r2 = {.loop = loop, .free_in_message = true};
  dx_client_config cfg2 = base_cfg(url, &r2);
  c = dx_client_new(loop, &cfg2);
  r2.c = c;
  CHECK_INT(dx_client_connect(c), 0);
  for (int i = 0; i < 200 && r2.messages == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r2.messages, 1);
  CHECK(r2.c == NULL);
  for (int i = 0; i < 3; i++)
    dx_loop_run_once(loop, 10);
  CHECK_INT(r2.closes, 0); /* freed: no more events */

  /* Backpressure: 8 MiB at once fills the socket, on_drain follows. */
  rec r3 = {.loop = loop};
  dx_client_config cfg3 = base_cfg(url, &r3);
  cfg3.on_open = NULL;
  c = dx_client_new(loop, &cfg3);
  CHECK_INT(dx_client_connect(c), 0);
  for (int i = 0; i < 200 && dx_client_state(c) != DX_OPEN; i++)
    dx_loop_run_once(loop, 50);
  size_t big = 8u << 20;
  uint8_t *blob = calloc(1, big);
  CHECK_INT(dx_client_send(c, DX_OP_BINARY, blob, big), 0);
  free(blob);
  CHECK(dx_client_buffered(c) > big);
  for (int i = 0; i < 400 && r3.messages == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r3.messages, 1);
  CHECK_INT(r3.drains, 1);
  CHECK_INT(dx_client_buffered(c), 0);
  CHECK_INT(dx_client_close(c, 999, NULL), DX_ECLOSECODE);
  CHECK_INT(dx_client_close(c, 4000, "x"), 0);
  CHECK_INT(dx_client_send(c, DX_OP_TEXT, "x", 1), DX_ECLOSED);
  for (int i = 0; i < 200 && r3.closes == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r3.closes, 1);
  CHECK_INT(r3.close_code, 4000);
  dx_client_free(c);

  /* The server goes away: on_close 1001 (its shutdown code), then a
   * reconnection is scheduled. */
  rec r4 = {.loop = loop};
  dx_client_config cfg4 = base_cfg(url, &r4);
  cfg4.on_open = NULL;
  cfg4.reconnect = true;
  cfg4.backoff_base_ms = 20;
  cfg4.backoff_max_ms = 50;
  cfg4.max_attempts = 2;
  c = dx_client_new(loop, &cfg4);
  CHECK_INT(dx_client_connect(c), 0);
  for (int i = 0; i < 200 && dx_client_state(c) != DX_OPEN; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(dx_client_state(c), DX_OPEN);
  dx_server_shutdown(b.srv, 1000);
  for (int i = 0; i < 200 && r4.closes == 0; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r4.closes, 1);
  CHECK_INT(r4.close_code, DX_CLOSE_GOING_AWAY);
  CHECK(r4.clean);
  CHECK_INT(r4.state_in_close, DX_CONNECTING);
  for (int i = 0; i < 200 && dx_client_state(c) != DX_CLOSED; i++)
    dx_loop_run_once(loop, 50);
  CHECK_INT(r4.reconnects, 2);
  CHECK_INT(r4.errors, 2); /* two refused retries, then final */
  CHECK_INT(r4.last_err, DX_ECONNREFUSED);
  dx_client_free(c);
  dx_loop_free(loop);
  pthread_join(b.t, NULL);
  dx_server_free(b.srv);
}

int main(void) {
  RUN(test_url_valid);
  RUN(test_url_invalid);
  RUN(test_backoff_cap);
  RUN(test_backoff_jitter);
  RUN(test_backoff_limits_and_reset);
  RUN(test_refused);
  RUN(test_resolve_refused);
  RUN(test_reconnect_attempts);
  RUN(test_http_answers);
  RUN(test_handshake_timeout);
  RUN(test_silent_peer);
  RUN(test_against_server);
  return CHECK_DONE();
}
