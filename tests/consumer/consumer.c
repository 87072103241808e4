/*
 * A program outside the duplex tree, built against an installed duplex (see
 * tests/scripts/install_consumer.sh): proves the headers, the libraries,
 * duplex.pc and the CMake package are usable as a user would use them.
 * Prints "consumer ok: <version> <accept key> <message>" and exits 0, or
 * names what went wrong and exits 1.
 */
#include <duplex/proto.h>

#include <stdio.h>
#include <string.h>

static int fail(const char *what, int rc) {
  fprintf(stderr, "consumer: %s: %d (%s)\n", what, rc, dx_strerror(rc));
  return 1;
}

int main(void) {
  /* RFC 6455 section 1.3. */
  static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
  static const char want[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
  char accept[29];
  int rc = dx_ws_accept_key(key, strlen(key), accept);
  if (rc != 0) return fail("dx_ws_accept_key", rc);
  if (strcmp(accept, want) != 0) {
    fprintf(stderr, "consumer: accept key %s, want %s\n", accept, want);
    return 1;
  }

  /* RFC 6455 section 5.7: a masked "Hello" from a client. */
  uint8_t frame[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                     0x7f, 0x9f, 0x4d, 0x51, 0x58};
  dx_ws_config cfg = {.role = DX_ROLE_SERVER};
  dx_ws *ws = dx_ws_new(&cfg);
  if (!ws) return fail("dx_ws_new", DX_ENOMEM);
  dx_ws_event ev;
  if ((rc = dx_ws_open(ws, NULL)) != 0 ||
      (rc = dx_ws_feed(ws, frame, sizeof frame)) != 0 ||
      (rc = dx_ws_next(ws, &ev)) != 1) {
    dx_ws_free(ws);
    return fail("open/feed/next", rc);
  }
  if (ev.type != DX_EV_TEXT || ev.len != 5 || memcmp(ev.data, "Hello", 5)) {
    fprintf(stderr, "consumer: wrong event type %d len %zu\n", (int)ev.type,
            ev.len);
    dx_ws_free(ws);
    return 1;
  }
  printf("consumer ok: %s %s %.*s\n", DX_VERSION_STRING, accept, (int)ev.len,
         (const char *)ev.data);
  dx_ws_free(ws);
  return 0;
}
