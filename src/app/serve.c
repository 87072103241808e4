/* duplex serve — static files, WebSocket endpoints and the real-time
 * channel server (pub/sub, HTTP API, metrics) on one port. */
#include "app.h"
#include "config.h"
#include "realtime.h"

#include <duplex/http.h>
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
    "  --config FILE         read options from a YAML file (docs/config.md);\n"
    "                        flags given too override it\n"
    "  --port N              TCP port (default 8080; 0 picks a free one)\n"
    "  --host ADDR           address to bind (default: all, IPv6 + IPv4)\n"
    "  --root DIR            serve static files from DIR\n"
    "  --tls-cert FILE       serve https:// and wss:// with this PEM chain\n"
    "  --tls-key FILE        its private key (SIGHUP reloads both)\n"
    "                        repeat both in pairs, in order, for more host\n"
    "                        names: the client's SNI picks the certificate\n"
    "                        whose names match, the first is the default\n"
    "  --echo PATH           an echo WebSocket endpoint at PATH (repeatable)\n"
    "  --no-realtime         no /ws channel endpoint and no /api, /metrics\n"
    "  --threads N           event loops (default: one per core)\n"
    "\n"
    "channels (/ws, duplex.v1; docs/protocol.md):\n"
    "  --history N           messages kept per topic for resume (100)\n"
    "  --history-age DUR     and no older than this (no limit)\n"
    "  --rate MSGS_PER_S     per-connection message rate (100; 0: none)\n"
    "  --burst N             token bucket size (200)\n"
    "  --max-subscriptions N per connection (100)\n"
    "  --presence            member lists and join/leave events\n"
    "  --slow-consumer P     drop | skip | conflate (drop)\n"
    "  --redis URL           share topics with other nodes through Redis:\n"
    "                        redis://[[user]:password@]host[:port][/db]\n"
    "  --redis-prefix P      Redis key and channel prefix (dx:)\n"
    "  --node-id NAME        this node's name in Redis (host:pid:random)\n"
    "  --redis-ttl DUR       a topic's keys outlive its last publish or\n"
    "                        subscriber by this much (24h)\n"
    "\n"
    "auth and origins:\n"
    "  --auth MODE           required | optional | off (off)\n"
    "  --api-key KEY         HTTP API key (repeatable)\n"
    "  --jwt-secret SECRET   HS256 secret (32+ bytes)\n"
    "  --jwt-public-key FILE RS256 public key (PEM)\n"
    "  --origin ORIGIN       allow this Origin (repeatable; default: the\n"
    "                        channel endpoint takes same-origin pages only,\n"
    "                        echo endpoints any)\n"
    "\n"
    "behind load balancers:\n"
    "  --trust-proxy CIDR    believe X-Forwarded-For (and PROXY headers) from\n"
    "                        these proxies: 10.0.0.0/8, ::1/128, 192.0.2.7\n"
    "                        (repeatable; default: no one)\n"
    "  --proxy-protocol      trusted proxies send a PROXY protocol header\n"
    "                        (v1 or v2, HAProxy send-proxy); needs\n"
    "                        --trust-proxy\n"
    "\n"
    "limits and timers:\n"
    "  --max-message SIZE    largest message, after decompression (16MiB)\n"
    "  --max-connections N   WebSocket connections in all (unlimited)\n"
    "  --max-per-ip N        WebSocket connections per client IP (unlimited)\n"
    "  --no-deflate          do not negotiate permessage-deflate\n"
    "  --ping-interval DUR   server ping interval (25s; 0 disables)\n"
    "  --pong-timeout DUR    grace for the pong (20s)\n"
    "  --handshake-timeout DUR  accept to upgrade deadline (10s)\n"
    "  --idle-timeout DUR    close connections with no input (off)\n"
    "  --close-timeout DUR   closing handshake and shutdown grace (5s)\n"
    "  --write-limit SIZE    output hard limit per connection (1MiB)\n"
    "  --shutdown-code N     close code on shutdown (1012)\n"
    "  --log text|json       log format on stderr (text)\n"
    "  --quiet               no per-connection log lines\n"
    "  --print-port          print the bound port on stdout once listening\n";

typedef struct serve_opts {
  serve_config c;
  const char *echo[MAX_LIST + 1];
  int necho;
  const char *origins[MAX_LIST + 1];
  int norigins;
  const char *api_keys[MAX_LIST + 1];
  int nkeys;
  const char *proxies[MAX_LIST + 1];
  int nproxies;
  const char *certs[MAX_LIST], *tls_keys[MAX_LIST]; /* flags, in order */
  int ncerts, ntls_keys;
  dx_tls_cert sni[MAX_LIST];
  bool no_realtime;
  bool print_port;
} serve_opts;

/* The same grammar on every command line and in the config file. */
bool app_parse_size(const char *s, size_t *out) {
  return config_parse_size(s, out);
}

bool app_parse_duration(const char *s, unsigned *ms) {
  return config_parse_duration(s, ms);
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
  if (o->c.quiet && strcmp(r->event, "signal") != 0 &&
      strcmp(r->event, "listen") != 0)
    return;
  if (o->c.log == LOG_JSON)
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
  O_KEY,
  O_CONFIG,
  O_NORT,
  O_HISTORY,
  O_HAGE,
  O_RATE,
  O_BURST,
  O_MAXSUBS,
  O_PRESENCE,
  O_SLOW,
  O_AUTH,
  O_APIKEY,
  O_JWTSECRET,
  O_JWTKEY,
  O_SHUTCODE,
  O_REDIS,
  O_REDISPFX,
  O_NODEID,
  O_REDISTTL,
  O_TRUSTPROXY,
  O_PROXYPROTO
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
                                     {"config", 1, 0, O_CONFIG},
                                     {"no-realtime", 0, 0, O_NORT},
                                     {"history", 1, 0, O_HISTORY},
                                     {"history-age", 1, 0, O_HAGE},
                                     {"rate", 1, 0, O_RATE},
                                     {"burst", 1, 0, O_BURST},
                                     {"max-subscriptions", 1, 0, O_MAXSUBS},
                                     {"presence", 0, 0, O_PRESENCE},
                                     {"slow-consumer", 1, 0, O_SLOW},
                                     {"auth", 1, 0, O_AUTH},
                                     {"api-key", 1, 0, O_APIKEY},
                                     {"jwt-secret", 1, 0, O_JWTSECRET},
                                     {"jwt-public-key", 1, 0, O_JWTKEY},
                                     {"shutdown-code", 1, 0, O_SHUTCODE},
                                     {"redis", 1, 0, O_REDIS},
                                     {"redis-prefix", 1, 0, O_REDISPFX},
                                     {"node-id", 1, 0, O_NODEID},
                                     {"redis-ttl", 1, 0, O_REDISTTL},
                                     {"trust-proxy", 1, 0, O_TRUSTPROXY},
                                     {"proxy-protocol", 0, 0, O_PROXYPROTO},
                                     {0, 0, 0, 0}};

static bool parse_count(const char *v, long max, long *out) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || end == v || *end || n < 0 || n > max) return false;
  *out = n;
  return true;
}

/* --tls-cert/--tls-key into the config. One of each (or either alone) is
 * the single-pair form; several go in pairs, in order, the first being the
 * default and the others chosen by SNI, and replace the file's tls list.
 * Returns 0, or -1 after the usage message. */
static int tls_flags(serve_opts *o) {
  serve_config *c = &o->c;
  if (o->ncerts <= 1 && o->ntls_keys <= 1) {
    if (o->ncerts) {
      c->tls_cert = o->certs[0];
      c->tls_sni = NULL;
      c->tls_nsni = 0;
    }
    if (o->ntls_keys) c->tls_key = o->tls_keys[0];
    return 0;
  }
  if (o->ntls_keys && o->ntls_keys != o->ncerts) {
    fprintf(stderr,
            "duplex serve: %d --tls-cert but %d --tls-key: give them in "
            "pairs, in order (--tls-cert a.pem --tls-key a.key --tls-cert "
            "b.pem --tls-key b.key)\n",
            o->ncerts, o->ntls_keys);
    return -1;
  }
  c->tls_cert = o->certs[0];
  c->tls_key = o->ntls_keys ? o->tls_keys[0] : NULL;
  for (int i = 1; i < o->ncerts; i++)
    o->sni[i - 1] =
        (dx_tls_cert){o->certs[i], o->ntls_keys ? o->tls_keys[i] : NULL};
  c->tls_sni = o->sni;
  c->tls_nsni = (size_t)o->ncerts - 1;
  return 0;
}

/* One flag into the config. Returns 0 or an exit status. */
static int apply_flag(serve_opts *o, int ch, const char *v) {
  serve_config *c = &o->c;
  size_t sz;
  unsigned ms;
  long n;
  switch (ch) {
  case O_PORT:
    if (!parse_count(v, 65535, &n)) return bad("--port", v, "not a port");
    c->port = (int)n;
    break;
  case O_HOST:
    c->host = v;
    break;
  case O_ROOT:
    c->root = v;
    break;
  case O_REDIS:
    c->redis = v;
    break;
  case O_REDISPFX:
    c->redis_prefix = v;
    break;
  case O_NODEID:
    c->node_id = v;
    break;
  case O_CERT:
    if (o->ncerts == MAX_LIST) return bad("--tls-cert", v, "too many");
    o->certs[o->ncerts++] = v;
    break;
  case O_KEY:
    if (o->ntls_keys == MAX_LIST) return bad("--tls-key", v, "too many");
    o->tls_keys[o->ntls_keys++] = v;
    break;
  case O_ECHO:
    if (v[0] != '/') return bad("--echo", v, "a path starts with '/'");
    if (o->necho == MAX_LIST) return bad("--echo", v, "too many");
    o->echo[o->necho++] = v;
    c->echo = o->echo;
    break;
  case O_THREADS:
    if (!parse_count(v, 255, &n) || n < 1) return bad("--threads", v, "1..255");
    c->threads = (int)n;
    break;
  case O_MAXMSG:
    if (!config_parse_size(v, &sz) || !sz)
      return bad("--max-message", v, "not a size");
    c->max_message = sz;
    break;
  case O_MAXCONN:
  case O_MAXIP:
  case O_MAXSUBS:
  case O_HISTORY:
  case O_BURST:
    if (!parse_count(v, 1L << 30, &n))
      return bad("count option", v, "not a count");
    if (ch == O_MAXCONN)
      c->max_connections = (size_t)n;
    else if (ch == O_MAXIP)
      c->max_per_ip = (size_t)n;
    else if (ch == O_MAXSUBS)
      c->max_subscriptions = (size_t)n;
    else if (ch == O_HISTORY)
      c->history = (size_t)n;
    else
      c->burst = (unsigned)n;
    break;
  case O_RATE: {
    char *end;
    double r = strtod(v, &end);
    if (end == v || *end || !(r >= 0 && r < 1e9))
      return bad("--rate", v, "messages per second (0: no limit)");
    c->rate = r;
    break;
  }
  case O_ORIGIN:
    if (o->norigins == MAX_LIST) return bad("--origin", v, "too many");
    o->origins[o->norigins++] = v;
    c->origins = o->origins;
    break;
  case O_TRUSTPROXY: {
    dx_cidr net;
    const char *why = "";
    if (dx_cidr_parse(v, &net, &why)) return bad("--trust-proxy", v, why);
    if (o->nproxies == MAX_LIST) return bad("--trust-proxy", v, "too many");
    o->proxies[o->nproxies++] = v;
    c->trusted_proxies = o->proxies;
    break;
  }
  case O_PROXYPROTO:
    c->proxy_protocol = true;
    break;
  case O_APIKEY:
    if (o->nkeys == MAX_LIST) return bad("--api-key", v, "too many");
    o->api_keys[o->nkeys++] = v;
    c->auth.api_keys = o->api_keys;
    break;
  case O_JWTSECRET:
    c->auth.jwt_secret = v;
    break;
  case O_JWTKEY:
    c->auth.jwt_public_key = v;
    break;
  case O_AUTH:
    if (!strcmp(v, "required"))
      c->auth.mode = AUTH_REQUIRED;
    else if (!strcmp(v, "optional"))
      c->auth.mode = AUTH_OPTIONAL;
    else if (!strcmp(v, "off"))
      c->auth.mode = AUTH_OFF;
    else
      return bad("--auth", v, "required, optional or off");
    break;
  case O_SLOW:
    if (!strcmp(v, "drop"))
      c->slow_consumer = SLOW_DROP;
    else if (!strcmp(v, "skip"))
      c->slow_consumer = SLOW_SKIP;
    else if (!strcmp(v, "conflate"))
      c->slow_consumer = SLOW_CONFLATE;
    else
      return bad("--slow-consumer", v, "drop, skip or conflate");
    break;
  case O_PRESENCE:
    c->presence = true;
    break;
  case O_NODEFLATE:
    c->deflate = false;
    break;
  case O_NORT:
    o->no_realtime = true;
    break;
  case O_PING:
  case O_PONG:
  case O_HANDSHAKE:
  case O_IDLE:
  case O_CLOSE:
  case O_HAGE:
  case O_REDISTTL:
    if (!config_parse_duration(v, &ms) ||
        (!ms && ch != O_IDLE && ch != O_PING && ch != O_HAGE))
      return bad("duration option", v, "not a positive duration");
    if (ch == O_PING)
      c->ping_interval_ms = ms;
    else if (ch == O_PONG)
      c->pong_timeout_ms = ms;
    else if (ch == O_HANDSHAKE)
      c->handshake_timeout_ms = ms;
    else if (ch == O_IDLE)
      c->idle_timeout_ms = ms;
    else if (ch == O_CLOSE)
      c->close_timeout_ms = ms;
    else if (ch == O_REDISTTL)
      c->redis_ttl_ms = ms;
    else
      c->history_age_ms = ms;
    break;
  case O_WLIMIT:
    if (!config_parse_size(v, &sz) || sz < 1024)
      return bad("--write-limit", v, "a size of at least 1KiB");
    c->write_limit = sz;
    break;
  case O_SHUTCODE:
    if (!parse_count(v, 4999, &n) || !dx_close_code_valid((unsigned)n))
      return bad("--shutdown-code", v, "a close code that may be sent");
    c->shutdown_code = (uint16_t)n;
    break;
  case O_LOG:
    if (!strcmp(v, "json"))
      c->log = LOG_JSON;
    else if (!strcmp(v, "text"))
      c->log = LOG_TEXT;
    else
      return bad("--log", v, "text or json");
    break;
  case O_QUIET:
    c->quiet = true;
    break;
  case O_PRINTPORT:
    o->print_port = true;
    break;
  }
  return 0;
}

static int parse_args(int argc, char **argv, serve_opts *o) {
  config_defaults(&o->c);
  /* The file first, whatever its place on the line: flags override it. */
  for (int i = 1; i < argc; i++) {
    const char *path = NULL;
    if (!strcmp(argv[i], "--config") && i + 1 < argc)
      path = argv[i + 1];
    else if (!strncmp(argv[i], "--config=", 9))
      path = argv[i] + 9;
    if (!path) continue;
    char err[512];
    if (config_load(path, &o->c, err, sizeof err) != 0) {
      fprintf(stderr, "duplex serve: %s\n", err);
      return APP_USAGE;
    }
  }
  int ch;
  opterr = 0;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (ch == O_HELP || ch == 'h') {
      fputs(serve_help, stdout);
      return -1;
    }
    if (ch == O_CONFIG) continue;
    if (ch == '?' || ch == ':') {
      fprintf(stderr, "duplex serve: unknown or incomplete option '%s'\n%s",
              argv[optind - 1], serve_help);
      return APP_USAGE;
    }
    int rc = apply_flag(o, ch, optarg);
    if (rc) return rc;
  }
  if (optind < argc) {
    fprintf(stderr, "duplex serve: unexpected argument '%s'\n", argv[optind]);
    return APP_USAGE;
  }
  if (tls_flags(o)) return APP_USAGE;
  if (o->c.tls_key && !o->c.tls_cert) {
    fprintf(stderr, "duplex serve: --tls-key needs --tls-cert\n");
    return APP_USAGE;
  }
  if (o->c.proxy_protocol && !o->c.trusted_proxies) {
    fprintf(stderr,
            "duplex serve: --proxy-protocol (proxy_protocol) needs "
            "--trust-proxy CIDR (trusted_proxies): the addresses of the "
            "proxies that send the header\n");
    return APP_USAGE;
  }
  return 0;
}

static int add_echo_routes(dx_server *srv, serve_opts *o) {
  for (const char *const *e = o->c.echo; e && *e; e++) {
    dx_route r = {.path = *e,
                  .on_message = echo_message,
                  .deflate = o->c.deflate,
                  .origins = o->c.origins};
    int rc = dx_server_route(srv, &r);
    if (rc) {
      fprintf(stderr, "duplex serve: --echo %s: %s\n", *e,
              rc == DX_EINVAL ? "duplicate path" : dx_strerror(rc));
      return APP_USAGE;
    }
  }
  return 0;
}

static realtime *add_realtime(dx_server *srv, serve_opts *o, auth *a) {
  rt_config rc = {.history = o->c.history ? o->c.history : DX_PS_NO_HISTORY,
                  .history_ms = o->c.history_age_ms,
                  .presence = o->c.presence,
                  .max_subscriptions = o->c.max_subscriptions,
                  .rate = o->c.rate ? o->c.rate : 1e12,
                  .burst = o->c.rate ? o->c.burst : 1e12,
                  .slow = (rt_slow_policy)o->c.slow_consumer,
                  .origins = o->c.origins,
                  .auth = a,
                  .heartbeat_ms = o->c.ping_interval_ms,
                  .high_water = o->c.write_limit / 4,
                  .redis_url = o->c.redis,
                  .redis_prefix = o->c.redis_prefix,
                  .node_id = o->c.node_id,
                  .redis_ttl_ms = o->c.redis_ttl_ms};
  char err[256];
  realtime *rt = rt_new(srv, &rc, err, sizeof err);
  if (!rt) fprintf(stderr, "duplex serve: %s\n", err);
  return rt;
}

int app_serve(int argc, char **argv) {
  static serve_opts o; /* outlives the server: routes point into it */
  memset(&o, 0, sizeof o);
  int rc = parse_args(argc, argv, &o);
  if (rc) return rc < 0 ? APP_OK : rc;
  if (!o.c.root && !o.c.echo && o.no_realtime) {
    fprintf(stderr, "duplex serve: nothing to serve: give --root DIR, "
                    "--echo PATH, or drop --no-realtime\n");
    return APP_USAGE;
  }
  if (o.c.redis && o.no_realtime) {
    fprintf(stderr, "duplex serve: --redis shares the channels of /ws: it "
                    "cannot go with --no-realtime\n");
    return APP_USAGE;
  }
  char err[512];
  auth *a = NULL;
  if (!o.no_realtime) {
    /* Also with auth off: tickets then name presence members. */
    if (!(a = auth_new(&o.c.auth, err, sizeof err))) {
      fprintf(stderr, "duplex serve: auth: %s\n", err);
      return APP_USAGE;
    }
  }
  dx_server_config sc = {0};
  config_to_server(&o.c, &sc);
  sc.handle_signals = true;
  sc.shutdown_reason = sc.shutdown_code == 1012 ? "restart" : NULL;
  sc.log = on_log;
  sc.log_ud = &o;
  dx_server *srv = dx_server_new(&sc);
  if (!srv) {
    fprintf(stderr, "duplex serve: cannot serve --root %s: %s\n",
            o.c.root ? o.c.root : "", strerror(errno));
    auth_free(a);
    return APP_FAIL;
  }
  realtime *rt = NULL;
  if ((rc = add_echo_routes(srv, &o)) ||
      (!o.no_realtime && !(rt = add_realtime(srv, &o, a)))) {
    dx_server_free(srv);
    auth_free(a);
    return rc ? rc : APP_FAIL;
  }
  if ((rc = dx_server_start(srv)) != 0 || (rt && (rc = rt_start(rt)) != 0)) {
    if (*dx_server_error(srv))
      fprintf(stderr, "duplex serve: %s\n", dx_server_error(srv));
    else
      fprintf(stderr, "duplex serve: cannot listen on %s port %d: %s\n",
              o.c.host ? o.c.host : "*", o.c.port, dx_strerror(rc));
    dx_server_free(srv);
    rt_free(rt);
    auth_free(a);
    return APP_FAIL;
  }
  if (o.print_port) {
    printf("%d\n", dx_server_port(srv));
    fflush(stdout);
  }
  fprintf(stderr, "duplex serve: listening on %s://%s:%d/%s%s%s\n",
          o.c.tls_cert ? "https" : "http", o.c.host ? o.c.host : "localhost",
          dx_server_port(srv), rt ? " channels=/ws" : "",
          o.c.root ? " root=" : "", o.c.root ? o.c.root : "");
  rc = dx_server_run(srv);
  dx_server_free(srv);
  rt_free(rt);
  auth_free(a);
  config_free(&o.c);
  if (rc) {
    fprintf(stderr, "duplex serve: %s\n", dx_strerror(rc));
    return APP_FAIL;
  }
  fprintf(stderr, "duplex serve: stopped\n");
  return APP_OK;
}
