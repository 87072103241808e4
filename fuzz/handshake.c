/*
 * Fuzz the opening handshake. The input is parsed as a request and answered
 * by fresh server engines under two policies (subprotocols, deflate); and
 * parsed as a response and given to a client engine, whose own random key is
 * patched into Sec-WebSocket-Accept so that the checks past it are reached.
 * Invariants: success means OPEN and a well-formed 101 whose choices are
 * among the offers; failure means CLOSED and an error status.
 */
#include <duplex/proto.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define REQUIRE(c) ((c) ? (void)0 : abort())
#define MAXH 16

static const char *const protos[] = {"chat", "superchat", NULL};

static bool offered(const char *p) {
  for (size_t i = 0; p && protos[i]; i++)
    if (strcmp(p, protos[i]) == 0) return true;
  return p == NULL;
}

static void server(const dx_http_request *req, const dx_ws_accept_policy *pol) {
  dx_ws_config cfg = {.role = DX_ROLE_SERVER};
  dx_ws *ws = dx_ws_new(&cfg);
  REQUIRE(ws);
  dx_ws_handshake hs;
  int rc = dx_ws_server_handshake(ws, req, pol, &hs);
  const uint8_t *out;
  size_t n = dx_ws_output(ws, &out);
  dx_header h[MAXH];
  dx_http_response resp = {.headers = h, .num_headers = MAXH};
  REQUIRE(dx_http_parse_response((const char *)out, n, &resp, NULL) > 0);
  REQUIRE(resp.status == hs.status);
  if (rc == 0) {
    REQUIRE(dx_ws_state(ws) == DX_OPEN && hs.status == 101);
    REQUIRE(offered(hs.subprotocol));
    REQUIRE(!hs.pmd.enabled || pol->deflate.enabled);
    REQUIRE(!hs.pmd.enabled || !pol->deflate.server_no_context_takeover ||
            hs.pmd.server_no_context_takeover); /* demanded by the policy */
  } else {
    REQUIRE(rc == DX_EHANDSHAKE && dx_ws_state(ws) == DX_CLOSED);
    REQUIRE(hs.status >= 400 && hs.status <= 599);
  }
  dx_ws_free(ws);
}

static void client(dx_http_response *resp) {
  dx_ws_config cfg = {.role = DX_ROLE_CLIENT};
  dx_ws_client_options opt = {.host = "example.com",
                              .target = "/chat",
                              .subprotocols = protos,
                              .deflate = {.enabled = true}};
  dx_ws *ws = dx_ws_new(&cfg);
  REQUIRE(ws && dx_ws_client_handshake(ws, &opt) == 0);
  const uint8_t *out;
  size_t n = dx_ws_output(ws, &out);
  dx_header rh[MAXH];
  dx_http_request req = {.headers = rh, .num_headers = MAXH};
  REQUIRE(dx_http_parse_request((const char *)out, n, &req, NULL) == (int)n);
  const dx_header *key =
      dx_http_header(rh, req.num_headers, "Sec-WebSocket-Key");
  char accept[29];
  REQUIRE(key && dx_ws_accept_key(key->value, key->value_len, accept) == 0);
  for (size_t i = 0; i < resp->num_headers; i++)
    if (resp->headers[i].name_len == 20 &&
        strncasecmp(resp->headers[i].name, "Sec-WebSocket-Accept", 20) == 0)
      resp->headers[i].value = accept, resp->headers[i].value_len = 28;
  dx_ws_consume(ws, n);
  dx_ws_handshake hs;
  int rc = dx_ws_client_response(ws, resp, &hs);
  if (rc == 0) {
    REQUIRE(dx_ws_state(ws) == DX_OPEN && offered(hs.subprotocol));
  } else {
    REQUIRE(rc == DX_EHANDSHAKE || rc == DX_EEXTENSION);
    REQUIRE(dx_ws_state(ws) == DX_CLOSED);
  }
  dx_ws_free(ws);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size ? size : 1);
  memcpy(buf, data, size);
  dx_header h[MAXH];
  dx_http_request req = {.headers = h, .num_headers = MAXH};
  if (dx_http_parse_request(buf, size, &req, NULL) > 0) {
    dx_ws_accept_policy pol = {.subprotocols = protos,
                               .deflate = {.enabled = true}};
    server(&req, &pol);
    pol.require_subprotocol = true;
    pol.deflate = (dx_pmd){.enabled = true,
                           .server_no_context_takeover = true,
                           .client_no_context_takeover = true,
                           .server_max_window_bits = 10,
                           .client_max_window_bits = 9};
    server(&req, &pol);
  }
  dx_http_response resp = {.headers = h, .num_headers = MAXH};
  if (dx_http_parse_response(buf, size, &resp, NULL) > 0) client(&resp);
  free(buf);
  return 0;
}
