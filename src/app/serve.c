/* duplex serve — static files and WebSocket endpoints on one port. */
#include "app.h"

#include <duplex/server.h>

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LIST 64

static const char *serve_help =
    "usage: duplex serve [options]\n"
    "\n"
    "  --port N              TCP port (default 8080; 0 picks a free one)\n"
    "  --host ADDR           address to bind (default: all, IPv6 + IPv4)\n"
    "  --root DIR            serve static files from DIR\n"
    "  --tls-cert FILE       serve https:// and wss:// with this PEM chain\n"
    "  --tls-key FILE        its private key (SIGHUP reloads both)\n"
    "  --echo PATH           an echo WebSocket endpoint at PATH (repeatable)\n"
    "  --threads N           event loops (default: one per core)\n"
    "  --max-message SIZE    largest message, after decompression (16MiB)\n"
    "  --max-connections N   WebSocket connections in all (unlimited)\n"
    "  --max-per-ip N        WebSocket connections per client IP (unlimited)\n"
    "  --origin ORIGIN       allow this Origin (repeatable; default: any)\n"
    "  --no-deflate          do not negotiate permessage-deflate\n"
    "  --ping-interval DUR   server ping interval (25s; 0 disables)\n"
    "  --pong-timeout DUR    grace for the pong (20s)\n"
    "  --handshake-timeout DUR  accept to upgrade deadline (10s)\n"
    "  --idle-timeout DUR    close connections with no input (off)\n"
    "  --close-timeout DUR   closing handshake and shutdown grace (5s)\n"
    "  --write-limit SIZE    output hard limit per connection (1MiB)\n"
    "  --log text|json       log format on stderr (text)\n"
    "  --quiet               no per-connection log lines\n"
    "  --print-port          print the bound port on stdout once listening\n";

typedef struct serve_opts {
  dx_server_config cfg;
  const char *echo[MAX_LIST];
  int necho;
  const char *origins[MAX_LIST + 1];
  int norigins;
  bool no_deflate;
  bool json;
  bool quiet;
  bool print_port;
} serve_opts;

bool app_parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *s == '-') return false;
  unsigned long long mul = 1;
  if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") ||
      !strcasecmp(end, "kib"))
    mul = 1024;
  else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") ||
           !strcasecmp(end, "mib"))
    mul = 1024 * 1024;
  else if (!strcasecmp(end, "g") || !strcasecmp(end, "gib"))
    mul = 1024ull * 1024 * 1024;
  else if (*end)
    return false;
  if (v > SIZE_MAX / mul) return false;
  *out = (size_t)(v * mul);
  return true;
}

bool app_parse_duration(const char *s, unsigned *ms) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || v < 0) return false;
  double mul = 1000;
  if (!strcmp(end, "ms"))
    mul = 1;
  else if (!strcmp(end, "s") || !*end)
    mul = 1000;
  else if (!strcmp(end, "m"))
    mul = 60000;
  else if (!strcmp(end, "h"))
    mul = 3600000;
  else
    return false;
  double r = v * mul;
  if (r > 4e9) return false;
  *ms = (unsigned)r;
  return true;
}

static void log_text(const dx_log_record *r) {
  char ts[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  char line[1024];
  int n = snprintf(line, sizeof line, "%s %s", ts, r->event);
  if (r->conn)
    n += snprintf(line + n, sizeof line - (size_t)n, " conn=%llx",
                  (unsigned long long)r->conn);
  if (r->peer)
    n += snprintf(line + n, sizeof line - (size_t)n, " peer=%s", r->peer);
  if (r->path)
    n += snprintf(line + n, sizeof line - (size_t)n, " path=%s", r->path);
  if (r->status)
    n += snprintf(line + n, sizeof line - (size_t)n, " status=%d", r->status);
  if (r->code)
    n += snprintf(line + n, sizeof line - (size_t)n, " code=%d", r->code);
  if (r->detail && (size_t)n < sizeof line)
    snprintf(line + n, sizeof line - (size_t)n, " (%s)", r->detail);
  fprintf(stderr, "%s\n", line);
}

static void json_str(char *out, size_t cap, const char *s) {
  size_t n = 0;
  out[n++] = '"';
  for (; *s && n + 8 < cap; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      out[n++] = '\\';
      out[n++] = (char)ch;
    } else if (ch < 0x20) {
      n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
    } else {
      out[n++] = (char)ch;
    }
  }
  out[n++] = '"';
  out[n] = 0;
}

static void log_json(const dx_log_record *r) {
  char ts[32], a[320], b[320], d[320];
  struct timespec tsp;
  clock_gettime(CLOCK_REALTIME, &tsp);
  struct tm tm;
  gmtime_r(&tsp.tv_sec, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  json_str(a, sizeof a, r->peer ? r->peer : "");
  json_str(b, sizeof b, r->path ? r->path : "");
  json_str(d, sizeof d, r->detail ? r->detail : "");
  fprintf(stderr,
          "{\"ts\":\"%s.%03ldZ\",\"event\":\"%s\",\"conn\":\"%llx\","
          "\"peer\":%s,\"path\":%s,\"status\":%d,\"code\":%d,\"detail\":%s}\n",
          ts, tsp.tv_nsec / 1000000, r->event, (unsigned long long)r->conn, a,
          b, r->status, r->code, d);
}

static void on_log(void *ud, const dx_log_record *r) {
  const serve_opts *o = ud;
  if (o->quiet && strcmp(r->event, "signal") != 0 &&
      strcmp(r->event, "listen") != 0)
    return;
  if (o->json)
    log_json(r);
  else
    log_text(r);
}

static void echo_message(dx_conn *c, dx_opcode op, uint8_t *data, size_t len,
                         void *ud) {
  (void)ud;
  dx_conn_send(c, op, data, len);
}

static int bad(const char *opt, const char *val, const char *why) {
  fprintf(stderr, "duplex serve: %s '%s': %s\n", opt, val, why);
  return APP_USAGE;
}

static int parse_args(int argc, char **argv, serve_opts *o) {
  enum {
    O_PORT = 256,
    O_HOST,
    O_ROOT,
    O_ECHO,
    O_THREADS,
    O_MAXMSG,
    O_MAXCONN,
    O_MAXIP,
    O_ORIGIN,
    O_NODEFLATE,
    O_PING,
    O_PONG,
    O_HANDSHAKE,
    O_IDLE,
    O_CLOSE,
    O_WLIMIT,
    O_LOG,
    O_QUIET,
    O_PRINTPORT,
    O_HELP,
    O_CERT,
    O_KEY
  };
  static const struct option opts[] = {{"port", 1, 0, O_PORT},
                                       {"host", 1, 0, O_HOST},
                                       {"root", 1, 0, O_ROOT},
                                       {"echo", 1, 0, O_ECHO},
                                       {"threads", 1, 0, O_THREADS},
                                       {"max-message", 1, 0, O_MAXMSG},
                                       {"max-connections", 1, 0, O_MAXCONN},
                                       {"max-per-ip", 1, 0, O_MAXIP},
                                       {"origin", 1, 0, O_ORIGIN},
                                       {"no-deflate", 0, 0, O_NODEFLATE},
                                       {"ping-interval", 1, 0, O_PING},
                                       {"pong-timeout", 1, 0, O_PONG},
                                       {"handshake-timeout", 1, 0, O_HANDSHAKE},
                                       {"idle-timeout", 1, 0, O_IDLE},
                                       {"close-timeout", 1, 0, O_CLOSE},
                                       {"write-limit", 1, 0, O_WLIMIT},
                                       {"log", 1, 0, O_LOG},
                                       {"quiet", 0, 0, O_QUIET},
                                       {"print-port", 0, 0, O_PRINTPORT},
                                       {"help", 0, 0, O_HELP},
                                       {"tls-cert", 1, 0, O_CERT},
                                       {"tls-key", 1, 0, O_KEY},
                                       {0, 0, 0, 0}};
  dx_server_config *c = &o->cfg;
  c->port = 8080;
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    const char *v = optarg;
    size_t sz;
    unsigned ms;
    char *end;
    long n;
    switch (ch) {
    case O_PORT:
      n = strtol(v, &end, 10);
      if (*end || n < 0 || n > 65535) return bad("--port", v, "not a port");
      c->port = (int)n;
      break;
    case O_HOST:
      c->host = v;
      break;
    case O_ROOT:
      c->static_root = v;
      break;
    case O_CERT:
      c->tls_cert = v;
      break;
    case O_KEY:
      c->tls_key = v;
      break;
    case O_ECHO:
      if (v[0] != '/') return bad("--echo", v, "a path starts with '/'");
      if (o->necho == MAX_LIST) return bad("--echo", v, "too many");
      o->echo[o->necho++] = v;
      break;
    case O_THREADS:
      n = strtol(v, &end, 10);
      if (*end || n < 1 || n > 255) return bad("--threads", v, "1..255");
      c->threads = (int)n;
      break;
    case O_MAXMSG:
      if (!app_parse_size(v, &sz) || !sz)
        return bad("--max-message", v, "not a size");
      c->max_message = sz;
      break;
    case O_MAXCONN:
    case O_MAXIP:
      n = strtol(v, &end, 10);
      if (*end || n < 0)
        return bad(ch == O_MAXCONN ? "--max-connections" : "--max-per-ip", v,
                   "not a count");
      if (ch == O_MAXCONN)
        c->max_connections = (size_t)n;
      else
        c->max_per_ip = (size_t)n;
      break;
    case O_ORIGIN:
      if (o->norigins == MAX_LIST) return bad("--origin", v, "too many");
      o->origins[o->norigins++] = v;
      break;
    case O_NODEFLATE:
      o->no_deflate = true;
      break;
    case O_PING:
      if (!app_parse_duration(v, &ms))
        return bad("--ping-interval", v, "not a duration");
      c->ping_interval_ms = ms ? ms : (unsigned)-1;
      break;
    case O_PONG:
    case O_HANDSHAKE:
    case O_IDLE:
    case O_CLOSE:
      if (!app_parse_duration(v, &ms) || (!ms && ch != O_IDLE))
        return bad("timeout", v, "not a positive duration");
      if (ch == O_PONG)
        c->pong_timeout_ms = ms;
      else if (ch == O_HANDSHAKE)
        c->handshake_timeout_ms = ms;
      else if (ch == O_IDLE)
        c->idle_timeout_ms = ms;
      else
        c->close_timeout_ms = ms;
      break;
    case O_WLIMIT:
      if (!app_parse_size(v, &sz) || sz < 1024)
        return bad("--write-limit", v, "a size of at least 1KiB");
      c->write_hard = sz;
      if (c->write_high == 0 || c->write_high > sz / 2) c->write_high = sz / 4;
      if (c->write_low == 0 || c->write_low > sz / 4) c->write_low = sz / 16;
      break;
    case O_LOG:
      if (!strcmp(v, "json"))
        o->json = true;
      else if (strcmp(v, "text"))
        return bad("--log", v, "text or json");
      break;
    case O_QUIET:
      o->quiet = true;
      break;
    case O_PRINTPORT:
      o->print_port = true;
      break;
    case O_HELP:
    case 'h':
      fputs(serve_help, stdout);
      return -1;
    default:
      fprintf(stderr, "duplex serve: unknown or incomplete option '%s'\n%s",
              argv[optind - 1], serve_help);
      return APP_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "duplex serve: unexpected argument '%s'\n", argv[optind]);
    return APP_USAGE;
  }
  if (c->tls_key && !c->tls_cert) {
    fprintf(stderr, "duplex serve: --tls-key needs --tls-cert\n");
    return APP_USAGE;
  }
  if (!c->static_root && o->necho == 0) {
    fprintf(stderr, "duplex serve: nothing to serve: give --root DIR and/or "
                    "--echo PATH\n");
    return APP_USAGE;
  }
  return 0;
}

int app_serve(int argc, char **argv) {
  static serve_opts o; /* outlives the server: routes point into it */
  memset(&o, 0, sizeof o);
  int rc = parse_args(argc, argv, &o);
  if (rc) return rc < 0 ? APP_OK : rc;
  o.cfg.handle_signals = true;
  o.cfg.log = on_log;
  o.cfg.log_ud = &o;
  dx_server *srv = dx_server_new(&o.cfg);
  if (!srv) {
    fprintf(stderr, "duplex serve: cannot serve --root %s: %s\n",
            o.cfg.static_root ? o.cfg.static_root : "", strerror(errno));
    return APP_FAIL;
  }
  for (int i = 0; i < o.necho; i++) {
    dx_route r = {.path = o.echo[i],
                  .on_message = echo_message,
                  .deflate = !o.no_deflate,
                  .origins = o.norigins ? o.origins : NULL};
    if ((rc = dx_server_route(srv, &r)) != 0) {
      fprintf(stderr, "duplex serve: --echo %s: %s\n", o.echo[i],
              rc == DX_EINVAL ? "duplicate path" : dx_strerror(rc));
      dx_server_free(srv);
      return APP_USAGE;
    }
  }
  if ((rc = dx_server_start(srv)) != 0) {
    if (*dx_server_error(srv))
      fprintf(stderr, "duplex serve: %s\n", dx_server_error(srv));
    else
      fprintf(stderr, "duplex serve: cannot listen on %s port %d: %s\n",
              o.cfg.host ? o.cfg.host : "*", o.cfg.port, dx_strerror(rc));
    dx_server_free(srv);
    return APP_FAIL;
  }
  if (o.print_port) {
    printf("%d\n", dx_server_port(srv));
    fflush(stdout);
  }
  fprintf(stderr, "duplex serve: listening on %s://%s:%d/%s%s\n",
          o.cfg.tls_cert ? "https" : "http",
          o.cfg.host ? o.cfg.host : "localhost", dx_server_port(srv),
          o.cfg.static_root ? " root=" : "",
          o.cfg.static_root ? o.cfg.static_root : "");
  rc = dx_server_run(srv);
  dx_server_free(srv);
  if (rc) {
    fprintf(stderr, "duplex serve: %s\n", dx_strerror(rc));
    return APP_FAIL;
  }
  fprintf(stderr, "duplex serve: stopped\n");
  return APP_OK;
}
