/* The opening handshake (RFC 6455 section 4): the server's checks and
 * answers, the client's request and checks, and the two roles talking to
 * each other. */
#include "proto/internal.h"

#include "check.h"

#define LIT(s) (s), (sizeof(s) - 1)

static const dx_ws_config server_cfg = {.role = DX_ROLE_SERVER};
static const dx_ws_config client_cfg = {.role = DX_ROLE_CLIENT};

/* The engine's output as a string, consumed. */
static char out_buf[8192];

static size_t take(dx_ws *ws) {
  const uint8_t *p;
  size_t n = dx_ws_output(ws, &p);
  if (n >= sizeof out_buf) n = sizeof out_buf - 1;
  if (n) memcpy(out_buf, p, n);
  out_buf[n] = 0;
  dx_ws_consume(ws, n);
  return n;
}

static dx_header req_h[32], resp_h[32];

static int parse_req(const char *s, size_t n, dx_http_request *req) {
  *req = (dx_http_request){.headers = req_h, .num_headers = 32};
  return dx_http_parse_request(s, n, req, NULL);
}

static int parse_resp(const char *s, size_t n, dx_http_response *resp) {
  *resp = (dx_http_response){.headers = resp_h, .num_headers = 32};
  return dx_http_parse_response(s, n, resp, NULL);
}

static bool has_value(const dx_header *h, size_t n, const char *name,
                      const char *value) {
  const dx_header *f = dx_http_header(h, n, name);
  return f && f->value_len == strlen(value) &&
         memcmp(f->value, value, f->value_len) == 0;
}

/* A server engine handshaking one request; returns the handshake's rc and
 * leaves the response in out_buf. */
static int serve(const char *request, const dx_ws_accept_policy *pol,
                 dx_ws_handshake *out, dx_ready_state *state) {
  dx_http_request req;
  int rc = parse_req(request, strlen(request), &req);
  if (rc <= 0) return 9999;
  dx_ws *ws = dx_ws_new(&server_cfg);
  rc = dx_ws_server_handshake(ws, &req, pol, out);
  take(ws);
  if (state) *state = dx_ws_state(ws);
  dx_ws_free(ws);
  return rc;
}

#define RFC_REQUEST                                                            \
  "GET /chat HTTP/1.1\r\n"                                                     \
  "Host: server.example.com\r\n"                                               \
  "Upgrade: websocket\r\n"                                                     \
  "Connection: Upgrade\r\n"                                                    \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                            \
  "Origin: http://example.com\r\n"                                             \
  "Sec-WebSocket-Protocol: chat, superchat\r\n"                                \
  "Sec-WebSocket-Version: 13\r\n\r\n"

/* A valid request with the given extra lines (before the empty line). */
#define REQUEST_WITH(lines)                                                    \
  "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"                        \
  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"                       \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" lines "\r\n"

static void test_accept_key(void) {
  char out[29];
  CHECK_INT(dx_ws_accept_key(LIT("dGhlIHNhbXBsZSBub25jZQ=="), out), 0);
  CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  CHECK_INT(dx_ws_accept_key(NULL, 0, out), DX_EINVAL);
}

/* RFC 6455 section 1.3, byte for byte. */
static void test_server_rfc_example(void) {
  static const char *const protos[] = {"chat", NULL};
  dx_ws_accept_policy pol = {.subprotocols = protos};
  dx_ws_handshake out;
  dx_ready_state st;
  CHECK_INT(serve(RFC_REQUEST, &pol, &out, &st), 0);
  CHECK_STR(out_buf, "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                     "Sec-WebSocket-Protocol: chat\r\n\r\n");
  CHECK_INT(out.status, 101);
  CHECK(out.subprotocol == protos[0]);
  CHECK(!out.pmd.enabled);
  CHECK(out.reason == NULL);
  CHECK_INT(st, DX_OPEN);
  /* No policy at all: no subprotocol, no out. */
  CHECK_INT(serve(RFC_REQUEST, NULL, NULL, &st), 0);
  CHECK(strstr(out_buf, "Sec-WebSocket-Protocol") == NULL);
  CHECK_INT(st, DX_OPEN);
}

typedef struct failure {
  const char *request;
  int status;
  const char *field; /* a header the answer must carry, "Name: value" */
} failure;

static const failure failures[] = {
    {"POST / HTTP/1.1\r\nHost: h\r\n\r\n", 405, "Allow: GET"},
    {"get / HTTP/1.1\r\nHost: h\r\n\r\n", 405, "Allow: GET"},
    {"GET / HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\n"
     "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
     400, NULL},
    {"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Version: 13\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
     400, NULL},
    {REQUEST_WITH("Host: h2\r\n"), 400, NULL},
    {"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Version: 13\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
     400, NULL},
    {"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
     "Sec-WebSocket-Version: 13\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
     400, NULL},
    {"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
     "Sec-WebSocket-Version: 13\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
     400, NULL},
    {"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
     "Connection: keep-alive\r\nSec-WebSocket-Version: 13\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
     400, NULL},
    {"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
     "Connection: Upgrade\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
     426, "Sec-WebSocket-Version: 13"},
    {"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
     "Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
     426, "Sec-WebSocket-Version: 13"},
    {REQUEST_WITH("Sec-WebSocket-Version: 13\r\n"), 426,
     "Sec-WebSocket-Version: 13"},
    {"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
     "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
     400, NULL},
    {REQUEST_WITH("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), 400,
     NULL},
};

/* Keys that are not base64 of 16 bytes. */
static const char *const bad_keys[] = {
    "dGhlIHNhbXBsZSBub25jZQ=",    "dGhlIHNhbXBsZSBub25jZQ===",
    "dGhlIHNhbXBsZSBub25jZQ",     "dGhlIHNhbXBsZSBub25jZQAA",
    "dGhlIHNhbXBsZSBub25j*Q==",   "dGhlIHNhbXBsZSBub25jZ=Q=",
    "dGhlIHNhbXBsZSBub25jZQ==AA", "",
};

/* The answer is a well-formed error response that closes the connection
 * and names the reason in its body. */
static void check_error_response(int status, const char *reason,
                                 const char *field) {
  dx_http_response resp;
  int n = parse_resp(out_buf, strlen(out_buf), &resp);
  CHECK(n > 0);
  CHECK_INT(resp.status, status);
  const dx_header *conn =
      dx_http_header(resp_h, resp.num_headers, "Connection");
  CHECK(conn && dx_http_list_has(conn->value, conn->value_len, "close"));
  /* RFC 9110 section 7.8: a 426 says what to upgrade to. */
  if (status == 426) {
    CHECK(dx_http_list_has(conn->value, conn->value_len, "upgrade"));
    CHECK(has_value(resp_h, resp.num_headers, "Upgrade", "websocket"));
  }
  CHECK(has_value(resp_h, resp.num_headers, "Content-Type", "text/plain"));
  char len[24];
  snprintf(len, sizeof len, "%zu", strlen(out_buf + n));
  CHECK(has_value(resp_h, resp.num_headers, "Content-Length", len));
  CHECK(strncmp(out_buf + n, reason, strlen(reason)) == 0);
  CHECK_STR(out_buf + n + strlen(reason), "\n");
  if (field) CHECK(strstr(out_buf, field) != NULL);
}

static void test_server_failures(void) {
  for (size_t i = 0; i < sizeof failures / sizeof failures[0]; i++) {
    dx_ws_handshake out;
    dx_ready_state st;
    int rc = serve(failures[i].request, NULL, &out, &st);
    if (rc != DX_EHANDSHAKE || out.status != failures[i].status)
      CHECK__FAIL("failures[%zu]: rc %d status %d", i, rc, out.status);
    CHECK_INT(st, DX_CLOSED);
    CHECK(out.reason != NULL);
    CHECK(out.subprotocol == NULL);
    check_error_response(failures[i].status, out.reason, failures[i].field);
    if (check__cur_failed) CHECK__FAIL("failures[%zu]", i);
  }
  for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
    char req[512];
    snprintf(req, sizeof req,
             "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Key: %s\r\n\r\n",
             bad_keys[i]);
    dx_ws_handshake out;
    CHECK_INT(serve(req, NULL, &out, NULL), DX_EHANDSHAKE);
    CHECK_INT(out.status, 400);
  }
  /* out may be NULL on failure too. */
  CHECK_INT(serve(failures[0].request, NULL, NULL, NULL), DX_EHANDSHAKE);
}

static void test_server_state(void) {
  dx_http_request req;
  CHECK(parse_req(LIT(RFC_REQUEST), &req) > 0);
  dx_ws *c = dx_ws_new(&client_cfg);
  CHECK_INT(dx_ws_server_handshake(c, &req, NULL, NULL), DX_ESTATE);
  CHECK_INT(dx_ws_buffered(c), 0);
  dx_ws_free(c);
  dx_ws *s = dx_ws_new(&server_cfg);
  CHECK_INT(dx_ws_server_handshake(s, &req, NULL, NULL), 0);
  CHECK_INT(dx_ws_server_handshake(s, &req, NULL, NULL), DX_ESTATE);
  dx_ws_free(s);
  s = dx_ws_new(&server_cfg);
  CHECK_INT(dx_ws_open(s, NULL), 0);
  CHECK_INT(dx_ws_server_handshake(s, &req, NULL, NULL), DX_ESTATE);
  dx_ws_free(s);
}

static void test_subprotocol_choice(void) {
  static const char req[] = REQUEST_WITH("Sec-WebSocket-Protocol: b, a\r\n"
                                         "Sec-WebSocket-Protocol:c\r\n");
  static const char *const c_first[] = {"c", "a", NULL};
  static const char *const a_first[] = {"x", "a", "b", NULL};
  static const char *const cased[] = {"A", "B", "C", NULL};
  static const char *const none[] = {NULL};
  dx_ws_accept_policy pol = {.subprotocols = c_first};
  dx_ws_handshake out;
  /* The server's order decides, across all the client's header lines. */
  CHECK_INT(serve(req, &pol, &out, NULL), 0);
  CHECK(out.subprotocol == c_first[0]);
  CHECK(strstr(out_buf, "\r\nSec-WebSocket-Protocol: c\r\n") != NULL);
  pol.subprotocols = a_first;
  CHECK_INT(serve(req, &pol, &out, NULL), 0);
  CHECK(out.subprotocol == a_first[1]);
  /* Names are case-sensitive: no match, and by default no subprotocol. */
  pol.subprotocols = cased;
  CHECK_INT(serve(req, &pol, &out, NULL), 0);
  CHECK(out.subprotocol == NULL);
  CHECK(strstr(out_buf, "Sec-WebSocket-Protocol") == NULL);
  pol.subprotocols = none;
  CHECK_INT(serve(req, &pol, &out, NULL), 0);
  CHECK(out.subprotocol == NULL);
  /* Required: no match and no offer both fail with 400. */
  pol =
      (dx_ws_accept_policy){.subprotocols = cased, .require_subprotocol = true};
  CHECK_INT(serve(req, &pol, &out, NULL), DX_EHANDSHAKE);
  CHECK_INT(out.status, 400);
  pol.subprotocols = c_first;
  CHECK_INT(serve(REQUEST_WITH(""), &pol, &out, NULL), DX_EHANDSHAKE);
  CHECK_INT(out.status, 400);
  CHECK_INT(serve(req, &pol, &out, NULL), 0);
}

static void test_upgrade_tokens(void) {
  static const char *const ok[] = {
      "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
      "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, websocket\r\n"
      "Connection: keep-alive\r\nConnection: UPGRADE\r\n"
      "Sec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      "\r\nGET /x?y HTTP/1.1\r\nhost: h\r\nupgrade: websocket\r\n"
      "connection: upgrade\r\nsec-websocket-version: 13\r\n"
      "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    dx_ready_state st;
    if (serve(ok[i], NULL, NULL, &st) != 0 || st != DX_OPEN)
      CHECK__FAIL("ok[%zu]", i);
    CHECK(strstr(out_buf, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != NULL);
  }
}

static void test_server_deflate(void) {
  static const char req[] =
      REQUEST_WITH("Sec-WebSocket-Extensions: permessage-deflate; "
                   "client_max_window_bits\r\n");
  dx_ws_accept_policy pol = {.deflate = {.enabled = true}};
  dx_ws_handshake out;
  CHECK_INT(serve(req, &pol, &out, NULL), 0);
  CHECK(out.pmd.enabled);
  CHECK(strstr(out_buf, "\r\nSec-WebSocket-Extensions: permessage-deflate") !=
        NULL);
  /* Not enabled by the policy: not negotiated. */
  CHECK_INT(serve(req, NULL, &out, NULL), 0);
  CHECK(!out.pmd.enabled);
  CHECK(strstr(out_buf, "Sec-WebSocket-Extensions") == NULL);
  /* Not offered. */
  CHECK_INT(serve(REQUEST_WITH(""), &pol, &out, NULL), 0);
  CHECK(!out.pmd.enabled);
  CHECK(strstr(out_buf, "Sec-WebSocket-Extensions") == NULL);
}

static void test_server_extra_headers(void) {
  dx_ws_accept_policy pol = {.extra_headers = "X-Server: duplex\r\n"};
  CHECK_INT(serve(REQUEST_WITH(""), &pol, NULL, NULL), 0);
  CHECK(strstr(out_buf, "\r\nX-Server: duplex\r\n\r\n") != NULL);
  static const char *const bad[] = {
      "X-Server: duplex", "X: a\nY: b\r\n", "X: a\r\n\r\nbody", "\r\n",
      "X a\r\n",          "X: a\rY: b\r\n", "X: \x01\r\n"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    dx_ready_state st;
    pol.extra_headers = bad[i];
    CHECK_INT(serve(REQUEST_WITH(""), &pol, NULL, &st), DX_EINVAL);
    CHECK_INT(st, DX_CONNECTING);
    CHECK_STR(out_buf, "");
  }
}

static void test_reject(void) {
  dx_ws *ws = dx_ws_new(&server_cfg);
  CHECK_INT(dx_ws_reject(ws, 399, NULL, NULL), DX_EINVAL);
  CHECK_INT(dx_ws_reject(ws, 600, NULL, NULL), DX_EINVAL);
  CHECK_INT(dx_ws_reject(ws, 403, "X: a\nb\r\n", NULL), DX_EINVAL);
  CHECK_INT(dx_ws_state(ws), DX_CONNECTING);
  CHECK_INT(dx_ws_reject(ws, 403, "X-Why: policy\r\n", "go away"), 0);
  CHECK_INT(dx_ws_state(ws), DX_CLOSED);
  take(ws);
  CHECK_STR(out_buf, "HTTP/1.1 403 Forbidden\r\n"
                     "Connection: close\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: 7\r\n"
                     "X-Why: policy\r\n"
                     "\r\n"
                     "go away");
  CHECK_INT(dx_ws_reject(ws, 403, NULL, NULL), DX_ESTATE);
  dx_ws_free(ws);
  static const struct {
    int status;
    const char *line;
  } phrases[] = {
      {401, "HTTP/1.1 401 Unauthorized\r\n"},
      {404, "HTTP/1.1 404 Not Found\r\n"},
      {408, "HTTP/1.1 408 Request Timeout\r\n"},
      {429, "HTTP/1.1 429 Too Many Requests\r\n"},
      {431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"},
      {503, "HTTP/1.1 503 Service Unavailable\r\n"},
      {499, "HTTP/1.1 499 Client Error\r\n"},
      {599, "HTTP/1.1 599 Server Error\r\n"},
  };
  for (size_t i = 0; i < sizeof phrases / sizeof phrases[0]; i++) {
    ws = dx_ws_new(&server_cfg);
    CHECK_INT(dx_ws_reject(ws, phrases[i].status, NULL, NULL), 0);
    take(ws);
    dx_ws_free(ws);
    CHECK(strncmp(out_buf, phrases[i].line, strlen(phrases[i].line)) == 0);
    CHECK(strstr(out_buf, "\r\nContent-Length: 0\r\n\r\n") != NULL);
  }
  ws = dx_ws_new(&client_cfg);
  CHECK_INT(dx_ws_reject(ws, 400, NULL, NULL), DX_ESTATE);
  dx_ws_free(ws);
}

/* ---- client ------------------------------------------------------------ */

static void test_client_request(void) {
  static const char *const protos[] = {"chat", "superchat", NULL};
  dx_ws_client_options opt = {.host = "example.com:8080",
                              .target = "/chat?room=1",
                              .origin = "https://example.com",
                              .subprotocols = protos,
                              .extra_headers = "Authorization: Bearer x\r\n"};
  dx_ws *ws = dx_ws_new(&client_cfg);
  CHECK_INT(dx_ws_client_handshake(ws, &opt), 0);
  CHECK_INT(dx_ws_state(ws), DX_CONNECTING);
  size_t n = take(ws);
  dx_http_request req;
  CHECK_INT(parse_req(out_buf, n, &req), n);
  CHECK(req.method_len == 3 && memcmp(req.method, "GET", 3) == 0);
  CHECK(req.target_len == 12 && memcmp(req.target, "/chat?room=1", 12) == 0);
  CHECK_INT(req.version_minor, 1);
  size_t k = req.num_headers;
  CHECK(has_value(req_h, k, "Host", "example.com:8080"));
  CHECK(has_value(req_h, k, "Upgrade", "websocket"));
  CHECK(has_value(req_h, k, "Connection", "Upgrade"));
  CHECK(has_value(req_h, k, "Sec-WebSocket-Version", "13"));
  CHECK(has_value(req_h, k, "Origin", "https://example.com"));
  CHECK(has_value(req_h, k, "Sec-WebSocket-Protocol", "chat, superchat"));
  CHECK(has_value(req_h, k, "Authorization", "Bearer x"));
  CHECK(dx_http_header(req_h, k, "Sec-WebSocket-Extensions") == NULL);
  /* The request passes the server's own checks, key included. */
  dx_ws *s = dx_ws_new(&server_cfg);
  CHECK_INT(dx_ws_server_handshake(s, &req, NULL, NULL), 0);
  dx_ws_free(s);
  /* Defaults: target "/", no Origin, no protocols; a fresh key each time. */
  const dx_header *key = dx_http_header(req_h, k, "Sec-WebSocket-Key");
  char key1[25];
  memcpy(key1, key->value, 24);
  key1[24] = 0;
  dx_ws *ws2 = dx_ws_new(&client_cfg);
  CHECK_INT(dx_ws_client_handshake(ws2, &(dx_ws_client_options){.host = "h"}),
            0);
  n = take(ws2);
  CHECK_INT(parse_req(out_buf, n, &req), n);
  CHECK(req.target_len == 1 && req.target[0] == '/');
  CHECK(dx_http_header(req_h, req.num_headers, "Origin") == NULL);
  CHECK(dx_http_header(req_h, req.num_headers, "Sec-WebSocket-Protocol") ==
        NULL);
  CHECK(!has_value(req_h, req.num_headers, "Sec-WebSocket-Key", key1));
  dx_ws_free(ws2);
  dx_ws_free(ws);
}

static void test_client_injection(void) {
  static const char *const crlf_proto[] = {"chat\r\nX: y", NULL};
  static const char *const space_proto[] = {"a b", NULL};
  static const char *const comma_proto[] = {"a,b", NULL};
  static const char *const empty_proto[] = {"", NULL};
  const dx_ws_client_options bad[] = {
      {.host = NULL},
      {.host = ""},
      {.host = "h\r\nX-Injected: 1"},
      {.host = "h", .target = "/a b"},
      {.host = "h", .target = "/\r\nX: 1"},
      {.host = "h", .target = ""},
      {.host = "h", .origin = "https://x\nX: 1"},
      {.host = "h", .subprotocols = crlf_proto},
      {.host = "h", .subprotocols = space_proto},
      {.host = "h", .subprotocols = comma_proto},
      {.host = "h", .subprotocols = empty_proto},
      {.host = "h", .extra_headers = "X: 1"},
      {.host = "h", .extra_headers = "X: 1\r\n\r\nGET / HTTP/1.1\r\n"},
      {.host = "h", .extra_headers = "X: 1\nY: 2\r\n"},
      {.host = "h", .extra_headers = "X: 1\rY: 2\r\n"},
  };
  dx_ws *ws = dx_ws_new(&client_cfg);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (dx_ws_client_handshake(ws, &bad[i]) != DX_EINVAL)
      CHECK__FAIL("bad[%zu]", i);
    CHECK_INT(dx_ws_buffered(ws), 0);
    CHECK(ws->cold == NULL || ws->cold->hs == NULL);
    CHECK_INT(dx_ws_state(ws), DX_CONNECTING);
  }
  /* Nothing stuck: a good call still works. */
  CHECK_INT(dx_ws_client_handshake(ws, &(dx_ws_client_options){.host = "h"}),
            0);
  dx_ws_free(ws);
}

static void test_client_state(void) {
  dx_ws_client_options opt = {.host = "h"};
  dx_http_response resp;
  CHECK(parse_resp(LIT("HTTP/1.1 101 OK\r\n\r\n"), &resp) > 0);
  dx_ws *s = dx_ws_new(&server_cfg);
  CHECK_INT(dx_ws_client_handshake(s, &opt), DX_ESTATE);
  CHECK_INT(dx_ws_client_response(s, &resp, NULL), DX_ESTATE);
  dx_ws_free(s);
  dx_ws *c = dx_ws_new(&client_cfg);
  CHECK_INT(dx_ws_client_response(c, &resp, NULL), DX_ESTATE);
  CHECK_INT(dx_ws_client_handshake(c, &opt), 0);
  CHECK_INT(dx_ws_client_handshake(c, &opt), DX_ESTATE);
  dx_ws_free(c);
}

/* ---- the two roles together -------------------------------------------- */

/* Runs client -> server -> client. Returns the client's rc. */
static int handshake_pair(const dx_ws_client_options *opt,
                          const dx_ws_accept_policy *pol, dx_ws **c_out,
                          dx_ws **s_out, dx_ws_handshake *sh,
                          dx_ws_handshake *ch) {
  dx_ws *c = dx_ws_new(&client_cfg), *s = dx_ws_new(&server_cfg);
  dx_http_request req;
  dx_http_response resp;
  int rc = dx_ws_client_handshake(c, opt);
  size_t n = take(c);
  if (rc == 0 && parse_req(out_buf, n, &req) != (int)n) rc = 9999;
  if (rc == 0) rc = dx_ws_server_handshake(s, &req, pol, sh);
  n = take(s);
  if (rc == 0 && parse_resp(out_buf, n, &resp) != (int)n) rc = 9999;
  if (rc == 0) rc = dx_ws_client_response(c, &resp, ch);
  *c_out = c;
  *s_out = s;
  return rc;
}

static void test_pair_plain(void) {
  dx_ws *c, *s;
  dx_ws_handshake sh, ch;
  CHECK_INT(handshake_pair(&(dx_ws_client_options){.host = "h"}, NULL, &c, &s,
                           &sh, &ch),
            0);
  CHECK_INT(dx_ws_state(c), DX_OPEN);
  CHECK_INT(dx_ws_state(s), DX_OPEN);
  CHECK_INT(ch.status, 101);
  CHECK(ch.subprotocol == NULL && sh.subprotocol == NULL);
  CHECK(!ch.pmd.enabled && !sh.pmd.enabled);
  CHECK(c->cold == NULL || c->cold->hs == NULL); /* nothing left to keep */
  /* And the engines talk. */
  CHECK_INT(dx_ws_send(c, DX_OP_TEXT, "hi", 2), 0);
  size_t n = take(c);
  CHECK_INT(n, 2 + 4 + 2);
  CHECK_INT(dx_ws_feed(s, (uint8_t *)out_buf, n), 0);
  dx_ws_event ev;
  CHECK_INT(dx_ws_next(s, &ev), 1);
  CHECK_INT(ev.type, DX_EV_TEXT);
  CHECK_MEM(ev.data, ev.len, "hi", 2);
  dx_ws_free(c);
  dx_ws_free(s);
}

static void test_pair_subprotocols(void) {
  char mine[2][8] = {"b", "a"};
  const char *offer[] = {mine[0], mine[1], NULL};
  static const char *const server[] = {"a", "b", NULL};
  dx_ws_accept_policy pol = {.subprotocols = server};
  dx_ws *c, *s;
  dx_ws_handshake sh, ch;
  CHECK_INT(handshake_pair(
                &(dx_ws_client_options){.host = "h", .subprotocols = offer},
                &pol, &c, &s, &sh, &ch),
            0);
  CHECK(sh.subprotocol == server[0]);
  /* The client's answer is the engine's own copy, valid while it lives. */
  memset(mine, 'x', sizeof mine);
  CHECK_STR(ch.subprotocol, "a");
  CHECK(ch.subprotocol != offer[1]);
  CHECK_INT(dx_ws_state(c), DX_OPEN);
  CHECK_INT(dx_ws_send(c, DX_OP_BINARY, "x", 1), 0);
  CHECK_STR(ch.subprotocol, "a");
  dx_ws_free(c);
  dx_ws_free(s);
}

static void test_pair_deflate(void) {
  dx_ws_client_options opt = {.host = "h", .deflate = {.enabled = true}};
  dx_ws_accept_policy pol = {
      .deflate = {.enabled = true, .server_no_context_takeover = true}};
  dx_ws *c, *s;
  dx_ws_handshake sh, ch;
  CHECK_INT(handshake_pair(&opt, &pol, &c, &s, &sh, &ch), 0);
  CHECK(sh.pmd.enabled && ch.pmd.enabled);
  CHECK(dx_ws_pmd(c).enabled && dx_ws_pmd(s).enabled);
  CHECK(dx_ws_pmd(c).server_no_context_takeover);
  CHECK(dx_ws_pmd(s).server_no_context_takeover);
  dx_ws_free(c);
  dx_ws_free(s);
  /* Offered but the server declines: plain. */
  CHECK_INT(handshake_pair(&opt, NULL, &c, &s, &sh, &ch), 0);
  CHECK(!dx_ws_pmd(c).enabled && !dx_ws_pmd(s).enabled);
  dx_ws_free(c);
  dx_ws_free(s);
}

/* A client engine that has sent its request; *accept gets the value the
 * server must answer with. */
static dx_ws *client_sent(const dx_ws_client_options *opt, char accept[29]) {
  dx_ws *c = dx_ws_new(&client_cfg);
  dx_http_request req;
  if (dx_ws_client_handshake(c, opt) != 0) return c;
  size_t n = take(c);
  parse_req(out_buf, n, &req);
  const dx_header *k =
      dx_http_header(req_h, req.num_headers, "Sec-WebSocket-Key");
  dx_ws_accept_key(k->value, k->value_len, accept);
  return c;
}

static int respond(const dx_ws_client_options *opt, const char *fmt,
                   dx_ws_handshake *out, dx_ws **c_out) {
  char accept[29] = "", buf[1024];
  dx_ws *c = client_sent(opt, accept);
  int n = snprintf(buf, sizeof buf, fmt, accept);
  dx_http_response resp;
  int rc = parse_resp(buf, (size_t)n, &resp) == n
               ? dx_ws_client_response(c, &resp, out)
               : 9999;
  if (c_out)
    *c_out = c;
  else
    dx_ws_free(c);
  return rc;
}

#define RESPONSE_WITH(lines)                                                   \
  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"                 \
  "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n" lines "\r\n"

static void test_client_checks(void) {
  static const char *const protos[] = {"chat", NULL};
  dx_ws_client_options plain = {.host = "h"};
  dx_ws_client_options chat = {.host = "h", .subprotocols = protos};
  dx_ws_handshake out;
  dx_ws *c;
  CHECK_INT(respond(&chat, RESPONSE_WITH("Sec-WebSocket-Protocol: chat\r\n"),
                    &out, NULL),
            0);
  CHECK_INT(respond(&plain,
                    "HTTP/1.1 101 x\r\nupgrade: WebSocket\r\n"
                    "connection: keep-alive, upgrade\r\n"
                    "sec-websocket-accept: %s\r\n\r\n",
                    &out, NULL),
            0);
  /* Not 101: the status is reported. */
  CHECK_INT(
      respond(&plain, "HTTP/1.1 403 Forbidden\r\nX: %s\r\n\r\n", &out, &c),
      DX_EHANDSHAKE);
  CHECK_INT(out.status, 403);
  CHECK_STR(out.reason, "unexpected HTTP status");
  CHECK_INT(dx_ws_state(c), DX_CLOSED);
  CHECK(c->cold == NULL || c->cold->hs == NULL);
  CHECK_INT(dx_ws_client_response(c, NULL, NULL), DX_EINVAL);
  dx_http_response resp;
  CHECK(parse_resp(LIT("HTTP/1.1 101 OK\r\n\r\n"), &resp) > 0);
  CHECK_INT(dx_ws_client_response(c, &resp, NULL), DX_ESTATE);
  dx_ws_free(c);
  static const char *const bad[] = {
      "HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX: %s\r\n\r\n",
      "HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "X: %s\r\n\r\n",
      RESPONSE_WITH("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
      "HTTP/1.1 101 x\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: %s\r\n\r\n",
      "HTTP/1.1 101 x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: %s\r\n\r\n",
      "HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: close\r\n"
      "Sec-WebSocket-Accept: %s\r\n\r\n",
      RESPONSE_WITH("Sec-WebSocket-Protocol: chat\r\n"), /* not offered */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (respond(&plain, bad[i], &out, &c) != DX_EHANDSHAKE)
      CHECK__FAIL("bad[%zu]", i);
    CHECK_INT(out.status, 101);
    CHECK(out.reason != NULL);
    CHECK_INT(dx_ws_state(c), DX_CLOSED);
    dx_ws_free(c);
  }
  /* Protocols: one of ours, exactly, on one line. */
  static const char *const bad_proto[] = {
      RESPONSE_WITH("Sec-WebSocket-Protocol: Chat\r\n"),
      RESPONSE_WITH("Sec-WebSocket-Protocol: superchat\r\n"),
      RESPONSE_WITH("Sec-WebSocket-Protocol: chat, chat\r\n"),
      RESPONSE_WITH("Sec-WebSocket-Protocol: chat\r\n"
                    "Sec-WebSocket-Protocol: chat\r\n"),
      RESPONSE_WITH("Sec-WebSocket-Protocol:\r\n"),
  };
  for (size_t i = 0; i < sizeof bad_proto / sizeof bad_proto[0]; i++)
    if (respond(&chat, bad_proto[i], &out, NULL) != DX_EHANDSHAKE)
      CHECK__FAIL("bad_proto[%zu]", i);
}

static void test_client_extensions(void) {
  dx_ws_client_options plain = {.host = "h"};
  dx_ws_client_options z = {.host = "h", .deflate = {.enabled = true}};
  dx_ws_handshake out;
  dx_ws *c;
  /* An extension that was not offered fails the connection. */
  CHECK_INT(
      respond(&plain,
              RESPONSE_WITH("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
              &out, &c),
      DX_EEXTENSION);
  CHECK_INT(dx_ws_state(c), DX_CLOSED);
  CHECK(!out.pmd.enabled);
  dx_ws_free(c);
  CHECK_INT(respond(&z, RESPONSE_WITH("Sec-WebSocket-Extensions: x-foo\r\n"),
                    &out, NULL),
            DX_EEXTENSION);
  CHECK_INT(
      respond(&z,
              RESPONSE_WITH("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
              &out, &c),
      0);
  CHECK(out.pmd.enabled);
  CHECK(dx_ws_pmd(c).enabled);
  dx_ws_free(c);
}

/* ---- allocation failures ------------------------------------------------- */

static struct {
  long countdown; /* fail the allocation that brings it to 0 */
  long live;      /* bytes outstanding */
  bool failed;
} fm;

static void *fail_realloc(void *ud, void *p, size_t old, size_t n) {
  (void)ud;
  if (n > old && fm.countdown > 0 && --fm.countdown == 0) {
    fm.failed = true;
    return NULL;
  }
  void *q = n ? realloc(p, n) : (free(p), NULL);
  if (n && !q) return NULL;
  fm.live += (long)n - (long)old;
  return q;
}

/* Each step that fails with DX_ENOMEM must leave the engine as it was, so
 * repeating it succeeds. */
static void failmalloc_pair(long at) {
  static const dx_ws_config cc = {.role = DX_ROLE_CLIENT,
                                  .alloc = {fail_realloc, NULL}};
  static const dx_ws_config sc = {.role = DX_ROLE_SERVER,
                                  .alloc = {fail_realloc, NULL}};
  static const char *const protos[] = {"a", NULL};
  dx_ws_client_options opt = {.host = "h", .subprotocols = protos};
  dx_ws_accept_policy pol = {.subprotocols = protos};
  dx_ws *c = dx_ws_new(&cc), *s = dx_ws_new(&sc);
  dx_http_request req;
  dx_http_response resp;
  fm.countdown = at;
  int rc;
  while ((rc = dx_ws_client_handshake(c, &opt)) == DX_ENOMEM) {
    CHECK(c->cold == NULL || c->cold->hs == NULL);
    CHECK_INT(dx_ws_buffered(c), 0);
  }
  CHECK_INT(rc, 0);
  size_t n = take(c);
  CHECK_INT(parse_req(out_buf, n, &req), n);
  while ((rc = dx_ws_server_handshake(s, &req, &pol, NULL)) == DX_ENOMEM) {
    CHECK_INT(dx_ws_state(s), DX_CONNECTING);
    CHECK_INT(dx_ws_buffered(s), 0);
  }
  CHECK_INT(rc, 0);
  n = take(s);
  CHECK_INT(parse_resp(out_buf, n, &resp), n);
  CHECK_INT(dx_ws_client_response(c, &resp, NULL), 0);
  fm.countdown = 0;
  dx_ws_free(c);
  dx_ws_free(s);
}

static void test_failmalloc(void) {
  long at = 1;
  for (;; at++) {
    fm.failed = false;
    fm.live = 0;
    failmalloc_pair(at);
    if (check__cur_failed) CHECK__FAIL("allocation %ld", at);
    CHECK_INT(fm.live, 0);
    if (!fm.failed) break;
  }
  /* At least the client's state and both outputs were failed once. */
  CHECK(at > 3);
}

int main(void) {
  RUN(test_accept_key);
  RUN(test_server_rfc_example);
  RUN(test_server_failures);
  RUN(test_server_state);
  RUN(test_subprotocol_choice);
  RUN(test_upgrade_tokens);
  RUN(test_server_deflate);
  RUN(test_server_extra_headers);
  RUN(test_reject);
  RUN(test_client_request);
  RUN(test_client_injection);
  RUN(test_client_state);
  RUN(test_pair_plain);
  RUN(test_pair_subprotocols);
  RUN(test_pair_deflate);
  RUN(test_client_checks);
  RUN(test_client_extensions);
  RUN(test_failmalloc);
  return CHECK_DONE();
}
