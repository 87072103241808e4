/*
 * The server API from C: a server runs on its own thread; a blocking test
 * client (the engine over a socket) drives it. Covers what the script tests
 * cannot reach from outside: sends posted from another thread, handler
 * order and arguments, shutdown from another thread.
 */
#include "check.h"

#include <duplex/server.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_ullong last_id;
static atomic_int opens, closes, messages;
static atomic_int last_close_code;

static void on_open(dx_conn *c, void *ud) {
  (void)ud;
  *(int *)dx_conn_user(c) = 42;
  atomic_store(&last_id, dx_conn_id(c));
  atomic_fetch_add(&opens, 1);
}

static void on_message(dx_conn *c, dx_opcode op, uint8_t *data, size_t len,
                       void *ud) {
  (void)ud;
  atomic_fetch_add(&messages, 1);
  if (*(int *)dx_conn_user(c) != 42) return; /* user data survives */
  dx_conn_send(c, op, data, len);
}

static void on_close(dx_conn *c, uint16_t code, const char *reason, size_t len,
                     void *ud) {
  (void)c, (void)reason, (void)len, (void)ud;
  atomic_store(&last_close_code, code);
  atomic_fetch_add(&closes, 1);
}

static void *run_server(void *arg) {
  return (void *)(intptr_t)dx_server_run(arg);
}

/* A blocking client: connect, handshake, then send/receive with the engine. */
typedef struct client {
  int fd;
  dx_ws_config cfg;
  dx_ws *ws;
  uint8_t buf[65536];
} client;

static int flush_out(client *cl) {
  const uint8_t *p;
  size_t n;
  while ((n = dx_ws_output(cl->ws, &p)) > 0) {
    ssize_t k = write(cl->fd, p, n);
    if (k <= 0) return -1;
    dx_ws_consume(cl->ws, (size_t)k);
  }
  return 0;
}

static dx_pmd last_pmd;

static int client_open(client *cl, int port) {
  cl->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (connect(cl->fd, (struct sockaddr *)&sa, sizeof sa)) return -1;
  cl->cfg = (dx_ws_config){.role = DX_ROLE_CLIENT};
  cl->ws = dx_ws_new(&cl->cfg);
  dx_ws_client_options o = {
      .host = "127.0.0.1", .target = "/t", .deflate = {.enabled = true}};
  if (dx_ws_client_handshake(cl->ws, &o) || flush_out(cl)) return -1;
  size_t have = 0;
  for (;;) {
    ssize_t k = read(cl->fd, cl->buf + have, sizeof cl->buf - have);
    if (k <= 0) return -1;
    have += (size_t)k;
    dx_header h[32];
    dx_http_response r = {.headers = h, .num_headers = 32};
    int n = dx_http_parse_response((char *)cl->buf, have, &r, NULL);
    if (n == DX_EAGAIN) continue;
    if (n < 0) return -1;
    dx_ws_handshake hs;
    if (dx_ws_client_response(cl->ws, &r, &hs)) return -1;
    last_pmd = hs.pmd;
    return have == (size_t)n ? 0 : -1;
  }
}

/* Waits up to 5 s for the next event. Returns 1 with *ev, or <= 0. */
static int client_next(client *cl, dx_ws_event *ev) {
  for (;;) {
    int rc = dx_ws_next(cl->ws, ev);
    if (rc != DX_EAGAIN) return rc;
    struct pollfd p = {.fd = cl->fd, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1) return 0;
    ssize_t k = read(cl->fd, cl->buf, sizeof cl->buf);
    if (k <= 0) return -1;
    dx_ws_feed(cl->ws, cl->buf, (size_t)k);
  }
}

static void client_free(client *cl) {
  close(cl->fd);
  dx_ws_free(cl->ws);
}

static void test_server_api(void) {
  dx_server_config cfg = {.host = "127.0.0.1", .threads = 2};
  dx_server *srv = dx_server_new(&cfg);
  CHECK(srv != NULL);
  dx_route r = {.path = "/t",
                .on_open = on_open,
                .on_message = on_message,
                .on_close = on_close,
                .user_size = sizeof(int)};
  CHECK_INT(dx_server_route(srv, &r), 0);
  CHECK_INT(dx_server_route(srv, &r), DX_EINVAL); /* duplicate path */
  dx_route bad = {.path = "nope"};
  CHECK_INT(dx_server_route(srv, &bad), DX_EINVAL);
  CHECK_INT(dx_server_start(srv), 0);
  int port = dx_server_port(srv);
  CHECK(port > 0);
  pthread_t th;
  pthread_create(&th, NULL, run_server, srv);

  client cl;
  CHECK_INT(client_open(&cl, port), 0);
  dx_ws_event ev;
  /* Echo through the handler (which also checks its user data). */
  CHECK_INT(dx_ws_send(cl.ws, DX_OP_TEXT, "hi", 2), 0);
  CHECK_INT(flush_out(&cl), 0);
  CHECK_INT(client_next(&cl, &ev), 1);
  CHECK_MEM(ev.data, ev.len, "hi", 2);
  CHECK_INT(atomic_load(&opens), 1);

  /* A send posted from this (non-loop) thread by connection id. */
  uint64_t id = atomic_load(&last_id);
  CHECK_INT(dx_server_send(srv, id, DX_OP_BINARY, "posted", 6), 0);
  CHECK_INT(client_next(&cl, &ev), 1);
  CHECK_INT(ev.type, DX_EV_BINARY);
  CHECK_MEM(ev.data, ev.len, "posted", 6);
  /* A stale or foreign id is ignored, not misdelivered. */
  CHECK_INT(dx_server_send(srv, id ^ (1ull << 24), DX_OP_TEXT, "x", 1), 0);
  CHECK_INT(dx_server_send(srv, 200ull << 56, DX_OP_TEXT, "x", 1), DX_EINVAL);

  /* Stats count what happened. */
  dx_server_stats st;
  dx_server_stats_get(srv, &st);
  CHECK_INT(st.websockets, 1);
  uint64_t hs = 0;
  for (int i = 0; i < 12; i++)
    hs += st.handshake_le[i];
  CHECK_INT(hs, 1); /* the handshake latency histogram counted it */
  CHECK(st.messages_in >= 1 && st.messages_out >= 2);

  /* The client closes: on_close sees its code, the echo comes back. */
  CHECK_INT(dx_ws_close(cl.ws, 4321, "done", 4), 0);
  CHECK_INT(flush_out(&cl), 0);
  CHECK_INT(client_next(&cl, &ev), 1);
  CHECK_INT(ev.type, DX_EV_CLOSE);
  CHECK_INT(ev.close_code, 4321);
  client_free(&cl);
  for (int i = 0; i < 100 && atomic_load(&closes) == 0; i++)
    usleep(10000);
  CHECK_INT(atomic_load(&last_close_code), 4321);

  /* Shutdown from another thread: open clients get 1001, run returns 0. */
  client c2;
  CHECK_INT(client_open(&c2, port), 0);
  dx_server_shutdown(srv, 2000);
  CHECK_INT(client_next(&c2, &ev), 1);
  CHECK_INT(ev.type, DX_EV_CLOSE);
  CHECK_INT(ev.close_code, 1001);
  CHECK_INT(flush_out(&c2), 0); /* our echo completes the handshake */
  void *ret;
  pthread_join(th, &ret);
  CHECK_INT((intptr_t)ret, 0);
  client_free(&c2);
  CHECK_INT(atomic_load(&closes), 2);
  dx_server_free(srv);
}

/* Past the compression budget, connections are accepted uncompressed. */
static void test_deflate_budget(void) {
  dx_server_config cfg = {.host = "127.0.0.1",
                          .threads = 1,
                          .deflate_budget = 400 << 10}; /* one connection */
  dx_server *srv = dx_server_new(&cfg);
  dx_route r = {.path = "/t",
                .on_message = on_message,
                .deflate = true,
                .user_size = sizeof(int)};
  CHECK_INT(dx_server_route(srv, &r), 0);
  CHECK_INT(dx_server_start(srv), 0);
  pthread_t th;
  pthread_create(&th, NULL, run_server, srv);
  client a, b, c;
  CHECK_INT(client_open(&a, dx_server_port(srv)), 0);
  CHECK(last_pmd.enabled);
  CHECK_INT(client_open(&b, dx_server_port(srv)), 0);
  CHECK(!last_pmd.enabled);
  client_free(&a); /* its share comes back */
  usleep(200000);
  CHECK_INT(client_open(&c, dx_server_port(srv)), 0);
  CHECK(last_pmd.enabled);
  client_free(&b);
  client_free(&c);
  dx_server_shutdown(srv, 500);
  pthread_join(th, NULL);
  dx_server_free(srv);
}

/* ---- HTTP routes -------------------------------------------------------- */

static void api_echo(dx_http_exchange *x, const dx_http_view *v, void *ud) {
  (void)ud;
  if (strcmp(v->method, "POST") != 0) {
    dx_http_respond(x, 405, "text/plain", "no\n", 3, "Allow: POST\r\n");
    return;
  }
  char extra[128];
  snprintf(extra, sizeof extra, "X-Query: %s\r\n", v->query);
  dx_http_respond(x, 200, "application/octet-stream", v->body, v->body_len,
                  extra);
}

static void api_silent(dx_http_exchange *x, const dx_http_view *v, void *ud) {
  (void)x, (void)v, (void)ud; /* forgets to answer: the server says 500 */
}

/* Sends raw request bytes in the given pieces, returns what came back
 * until the server closed or 2 s passed. */
static size_t http_exchange(int port, const char *const *pieces, char *out,
                            size_t cap) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) return 0;
  for (; *pieces; pieces++) {
    if (write(fd, *pieces, strlen(*pieces)) < 0) break;
    usleep(20000);
  }
  shutdown(fd, SHUT_WR);
  size_t n = 0;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  while (n + 1 < cap && poll(&p, 1, 2000) == 1) {
    ssize_t k = read(fd, out + n, cap - 1 - n);
    if (k <= 0) break;
    n += (size_t)k;
  }
  out[n] = 0;
  close(fd);
  return n;
}

static void test_http_routes(void) {
  dx_server_config cfg = {.host = "127.0.0.1", .threads = 1, .max_body = 64};
  dx_server *srv = dx_server_new(&cfg);
  CHECK_INT(dx_server_http(srv, "/api/echo", api_echo, NULL), 0);
  CHECK_INT(dx_server_http(srv, "/api/echo", api_echo, NULL), DX_EINVAL);
  CHECK_INT(dx_server_http(srv, "/api/silent", api_silent, NULL), 0);
  CHECK_INT(dx_server_start(srv), 0);
  int port = dx_server_port(srv);
  pthread_t th;
  pthread_create(&th, NULL, run_server, srv);
  char buf[4096];
  /* A body split across writes, then a pipelined GET on the same
   * connection. */
  const char *a[] = {"POST /api/echo?x=1 HTTP/1.1\r\nHost: h\r\n"
                     "Content-Length: 11\r\n\r\nhello",
                     " world",
                     "GET /api/echo HTTP/1.1\r\nHost: h\r\n"
                     "Connection: close\r\n\r\n",
                     NULL};
  http_exchange(port, a, buf, sizeof buf);
  CHECK(strstr(buf, "HTTP/1.1 200") == buf);
  CHECK(strstr(buf, "X-Query: x=1\r\n") != NULL);
  CHECK(strstr(buf, "\r\n\r\nhello world") != NULL);
  CHECK(strstr(buf, "HTTP/1.1 405") != NULL);
  const char *big[] = {"POST /api/echo HTTP/1.1\r\nHost: h\r\n"
                       "Content-Length: 65\r\n\r\n",
                       NULL};
  http_exchange(port, big, buf, sizeof buf);
  CHECK(strstr(buf, "HTTP/1.1 413") == buf);
  const char *chunked[] = {"POST /api/echo HTTP/1.1\r\nHost: h\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                           NULL};
  http_exchange(port, chunked, buf, sizeof buf);
  CHECK(strstr(buf, "HTTP/1.1 411") == buf);
  const char *silent[] = {"GET /api/silent HTTP/1.1\r\nHost: h\r\n\r\n", NULL};
  http_exchange(port, silent, buf, sizeof buf);
  CHECK(strstr(buf, "HTTP/1.1 500") == buf);
  /* Paths without a route still take no body. */
  const char *other[] = {"POST /nope HTTP/1.1\r\nHost: h\r\n"
                         "Content-Length: 2\r\n\r\nhi",
                         NULL};
  http_exchange(port, other, buf, sizeof buf);
  CHECK(strstr(buf, "HTTP/1.1 413") == buf);
  dx_server_shutdown(srv, 500);
  pthread_join(th, NULL);
  dx_server_free(srv);
}

int main(void) {
  RUN(test_http_routes);
  RUN(test_server_api);
  RUN(test_deflate_budget);
  return CHECK_DONE();
}
