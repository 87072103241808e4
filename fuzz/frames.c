/*
 * Fuzz the frame engine. Input: 3 selector bytes, then wire bytes.
 *   byte 0: bit0 client role, bit1 permessage-deflate, bit2/3 server/client
 *           no_context_takeover, bit4 compress every message, bit5 no
 *           auto-pong
 *   byte 1: server (low 3 bits) and client (bits 4-6) window bits, 8 + n
 *   byte 2: chunking seed (0: the whole input at once)
 * 1. The wire bytes are fed in chunks; events and output are drained and
 *    checked against the contract in duplex/proto.h.
 * 2. Round trip: a client sends the same bytes as one message (text when
 *    valid UTF-8), then fragmented around a ping; a server must receive the
 *    same message, with and without deflate (decode(encode(m)) == m).
 */
#include <duplex/proto.h>

#include <stdlib.h>
#include <string.h>

#define REQUIRE(c) ((c) ? (void)0 : abort())

/* Reads every byte, so ASan checks that [p, p + n) is valid. */
static void touch(const uint8_t *p, size_t n) {
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < n; i++)
    sink ^= p[i];
  (void)sink;
}

/* Takes all queued output into a malloc'd copy (consuming in two steps to
 * exercise partial consumes). */
static uint8_t *take(dx_ws *ws, size_t *len) {
  const uint8_t *p;
  uint8_t *all = NULL;
  size_t n;
  *len = 0;
  while ((n = dx_ws_output(ws, &p)) > 0) {
    size_t k = n > 7 ? n / 2 : n;
    all = realloc(all, *len + k);
    memcpy(all + *len, p, k);
    *len += k;
    dx_ws_consume(ws, k);
  }
  REQUIRE(dx_ws_buffered(ws) == 0);
  return all;
}

static void drain(dx_ws *ws) {
  size_t n;
  uint8_t *p = take(ws, &n);
  touch(p, n);
  free(p);
}

static void check_event(const dx_ws_event *ev, size_t max) {
  REQUIRE(ev->type >= DX_EV_TEXT && ev->type <= DX_EV_CLOSE);
  REQUIRE(ev->len <= max && (ev->len == 0 || ev->data));
  touch(ev->data, ev->len);
  if (ev->type == DX_EV_TEXT || ev->type == DX_EV_CLOSE)
    REQUIRE(dx_utf8_valid(ev->data, ev->len));
  if (ev->type == DX_EV_CLOSE)
    REQUIRE(ev->close_code == DX_CLOSE_NO_STATUS ||
            dx_close_code_valid(ev->close_code));
}

static void parse(const dx_ws_config *cfg, const dx_pmd *pmd, uint8_t seed,
                  const uint8_t *data, size_t size) {
  dx_ws *ws = dx_ws_new(cfg);
  REQUIRE(ws && dx_ws_open(ws, pmd) == 0);
  uint32_t x = seed;
  uint8_t *buf = NULL;
  for (size_t off = 0; off < size;) {
    x = x * 1103515245u + 12345u;
    size_t n = seed ? 1 + (x >> 16) % (4u * seed) : size;
    if (n > size - off) n = size - off;
    buf = malloc(n); /* exact size: ASan catches any over-read */
    memcpy(buf, data + off, n);
    off += n;
    REQUIRE(dx_ws_feed(ws, buf, n) == 0);
    dx_ws_event ev;
    int rc;
    while ((rc = dx_ws_next(ws, &ev)) == 1)
      check_event(&ev, 1u << 20);
    drain(ws);
    if (rc != DX_EAGAIN) { /* fatal: sticky, and a close frame is queued */
      REQUIRE(dx_ws_error_close_code(rc) != 0);
      REQUIRE(dx_ws_next(ws, &ev) == rc);
      break;
    }
    free(buf); /* released at DX_EAGAIN: the engine must not touch it */
    buf = NULL;
  }
  drain(ws);
  dx_ws_free(ws);
  free(buf);
}

/* Client sends data (whole, or as two fragments around a ping); the server
 * must deliver exactly that message. */
static void round_trip(const dx_ws_config *ccfg, const dx_ws_config *scfg,
                       const dx_pmd *pmd, const uint8_t *data, size_t size,
                       size_t split) {
  dx_ws *c = dx_ws_new(ccfg), *s = dx_ws_new(scfg);
  REQUIRE(c && s && dx_ws_open(c, pmd) == 0 && dx_ws_open(s, pmd) == 0);
  dx_opcode op = dx_utf8_valid(data, size) ? DX_OP_TEXT : DX_OP_BINARY;
  if (split > size) {
    REQUIRE(dx_ws_send(c, op, data, size) == 0);
  } else {
    REQUIRE(dx_ws_send_fragment(c, op, data, split, false) == 0);
    REQUIRE(dx_ws_ping(c, "p", 1) == 0);
    REQUIRE(dx_ws_send_fragment(c, DX_OP_CONT, data + split, size - split,
                                true) == 0);
  }
  size_t n;
  uint8_t *wire = take(c, &n);
  REQUIRE(dx_ws_feed(s, wire, n) == 0);
  dx_ws_event ev;
  if (split <= size) {
    REQUIRE(dx_ws_next(s, &ev) == 1 && ev.type == DX_EV_PING && ev.len == 1);
  }
  REQUIRE(dx_ws_next(s, &ev) == 1);
  REQUIRE(ev.type == (op == DX_OP_TEXT ? DX_EV_TEXT : DX_EV_BINARY));
  REQUIRE(ev.len == size && (size == 0 || memcmp(ev.data, data, size) == 0));
  REQUIRE(dx_ws_next(s, &ev) == DX_EAGAIN);
  dx_ws_free(c);
  dx_ws_free(s);
  free(wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3 || size > (1u << 16)) return 0;
  uint8_t sel = data[0], bits = data[1], seed = data[2];
  data += 3, size -= 3;
  dx_pmd pmd = {.enabled = sel & 2,
                .server_no_context_takeover = sel & 4,
                .client_no_context_takeover = sel & 8,
                .server_max_window_bits = 8 + (bits & 7),
                .client_max_window_bits = 8 + ((bits >> 4) & 7)};
  dx_ws_config cfg = {.role = (sel & 1) ? DX_ROLE_CLIENT : DX_ROLE_SERVER,
                      .flags = (sel & 32) ? DX_WS_NO_AUTO_PONG : 0,
                      .max_message = 1u << 20,
                      .compress_min = (sel & 16) ? 1 : 0};
  parse(&cfg, &pmd, seed, data, size);

  dx_ws_config ccfg = cfg, scfg = cfg;
  ccfg.role = DX_ROLE_CLIENT;
  scfg.role = DX_ROLE_SERVER;
  size_t split = seed ? seed % (size + 2) : size + 1; /* > size: whole */
  round_trip(&ccfg, &scfg, NULL, data, size, split);
  round_trip(&ccfg, &scfg, &pmd, data, size, split);
  return 0;
}
