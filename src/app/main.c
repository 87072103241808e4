/* duplex — the command-line tool: subcommand dispatch. */
#include "app.h"

#include <stdio.h>
#include <string.h>

int app_connect(int argc, char **argv); /* connect.c */
int app_probe(int argc, char **argv);   /* probe.c */
int app_record(int argc, char **argv);  /* record.c */
int app_proxy(int argc, char **argv);   /* record.c */
int app_bench(int argc, char **argv);   /* bench.c */

static void usage(FILE *f) {
  fputs("usage: duplex <command> [options]\n"
        "\n"
        "commands:\n"
        "  serve     serve static files and WebSocket endpoints on one port\n"
        "  connect   a WebSocket client: stdin lines out, messages to stdout\n"
        "  probe     run a scenario file against a server (checks, timings)\n"
        "  record    a WebSocket proxy that writes the session as a scenario\n"
        "  proxy     the same proxy with fault injection, without recording\n"
        "  bench     load-test a WebSocket server: latency and throughput\n"
        "  version   print the version\n"
        "\n"
        "Run 'duplex <command> --help' for a command's options.\n",
        f);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "serve") == 0) return app_serve(argc - 1, argv + 1);
  if (strcmp(cmd, "connect") == 0) return app_connect(argc - 1, argv + 1);
  if (strcmp(cmd, "probe") == 0) return app_probe(argc - 1, argv + 1);
  if (strcmp(cmd, "record") == 0) return app_record(argc - 1, argv + 1);
  if (strcmp(cmd, "proxy") == 0) return app_proxy(argc - 1, argv + 1);
  if (strcmp(cmd, "bench") == 0) return app_bench(argc - 1, argv + 1);
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("duplex %s\n", DX_VERSION_STRING);
    return 0;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
      strcmp(cmd, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "duplex: unknown command '%s'\n", cmd);
  usage(stderr);
  return 2;
}
