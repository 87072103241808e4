/* A WebSocket echo server with duplex in ~30 lines.
 *   cc echo.c $(pkg-config --cflags --libs duplex) -o echo && ./echo 9001
 * then: duplex connect ws://127.0.0.1:9001/echo  (or any WebSocket client) */
#include <duplex/server.h>
#include <stdio.h>
#include <stdlib.h>

static void on_message(dx_conn *c, dx_opcode op, uint8_t *data, size_t len,
                       void *ud) {
  (void)ud;
  dx_conn_send(c, op, data, len); /* copied; written at the end of the turn */
}

int main(int argc, char **argv) {
  dx_server_config cfg = {.port = argc > 1 ? atoi(argv[1]) : 9001,
                          .threads = 1,
                          .handle_signals = true}; /* Ctrl-C: graceful */
  dx_server *srv = dx_server_new(&cfg);
  dx_route echo = {.path = "/echo", .on_message = on_message, .deflate = true};
  if (!srv || dx_server_route(srv, &echo) != 0) return 1;
  int rc = dx_server_start(srv);
  if (rc != 0) {
    fprintf(stderr, "echo: %s\n", dx_strerror(rc));
    return 1;
  }
  printf("listening on ws://127.0.0.1:%d/echo\n", dx_server_port(srv));
  fflush(stdout);
  rc = dx_server_run(srv);
  dx_server_free(srv);
  return rc == 0 ? 0 : 1;
}
