/*
 * config.h — `duplex serve --config duplex.yaml`: the options of duplex serve
 * as one plain struct, filled with defaults and then from a YAML file whose
 * keys mirror the flags (docs/config.md lists every one).
 *
 *   struct serve_config cfg;
 *   config_defaults(&cfg);
 *   if (config_load("duplex.yaml", &cfg, err, sizeof err) != 0) {
 *     fprintf(stderr, "duplex serve: %s\n", err);   // "FILE:LINE: reason"
 *     return APP_USAGE;                              // exit status 2
 *   }
 *   ... apply the command-line flags on top (flags win) ...
 *   dx_server_config sc = {0};
 *   config_to_server(&cfg, &sc);
 *   auth *a = auth_new(&cfg.auth, err, sizeof err);
 *   ...
 *   config_free(&cfg);                  // after the server and auth are gone
 *
 * Strings and lists loaded from the file belong to cfg (freed by
 * config_free); a caller may point any field at its own memory (argv) when
 * applying flags. Lists are NULL-terminated; NULL means "not set".
 *
 * The file: one YAML mapping. Unknown keys (with a "did you mean"), duplicate
 * keys, wrong types (a list where a number goes) and bad values are errors
 * naming the file and line. A null value (`key:`, `~`) keeps the default.
 * Every scalar value may use ${NAME} for the environment variable NAME (an
 * unset one is an error; `$$` is a literal `$`), e.g. for secrets:
 *   auth: {jwt_secret: "${DUPLEX_JWT_SECRET}"}
 */
#ifndef DX_APP_CONFIG_H
#define DX_APP_CONFIG_H

#include "auth.h"

#include <duplex/server.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a subscriber that does not read fast enough gets (past the high
 * watermark, a quarter of write_limit). */
typedef enum slow_policy {
  SLOW_DROP = 0, /* keep queueing; closed (1008) at write_limit */
  SLOW_SKIP,     /* messages skipped, then a "gap" (reason dropped) */
  SLOW_CONFLATE  /* only the latest message per topic is kept */
} slow_policy;

typedef enum log_format { LOG_TEXT = 0, LOG_JSON } log_format;

/* Every option of duplex serve; the default after config_defaults() is
 * beside each field, with its YAML key (and flag) in docs/config.md. */
struct serve_config {
  /* Listening and static files. */
  int port;             /* 8080; 0 picks a free one */
  const char *host;     /* NULL: all addresses */
  const char *root;     /* NULL: no static files */
  int threads;          /* 0: one per core */
  const char *tls_cert; /* NULL: plain http/ws */
  const char *tls_key;
  const dx_tls_cert *tls_sni; /* more pairs, chosen by SNI; NULL: none */
  size_t tls_nsni;

  /* Endpoints. */
  const char *const *echo;    /* echo endpoint paths; NULL: none */
  const char *const *origins; /* allowed Origins; NULL: any */
  bool deflate;               /* true: negotiate permessage-deflate */

  /* Pub/sub. */
  size_t history;            /* 100 messages kept per topic; 0: none */
  unsigned history_age_ms;   /* 0: kept until pushed out by count */
  double rate;               /* 100 messages/s per connection; 0: no limit */
  unsigned burst;            /* 200: token bucket size */
  size_t max_subscriptions;  /* 100 per connection */
  slow_policy slow_consumer; /* SLOW_DROP */
  bool presence;             /* false */
  const char *redis;         /* Redis backplane URL; NULL: in-process */
  const char *redis_prefix;  /* its key prefix; NULL: "dx:" */
  const char *node_id;       /* this node's name in Redis; NULL: made up */
  unsigned redis_ttl_ms;     /* topic keys' idle lifetime; 0: 24 h */

  /* Load balancers in front (dx_server_config has the details). */
  const char *const *trusted_proxies; /* CIDRs; NULL: trust no one */
  bool proxy_protocol;                /* false */

  /* Limits. */
  size_t max_message;     /* 16 MiB (after decompression) */
  size_t max_connections; /* 0: unlimited */
  size_t max_per_ip;      /* 0: unlimited */
  size_t write_limit;     /* 1 MiB output hard limit per connection */

  /* Timers, in milliseconds. */
  unsigned ping_interval_ms;     /* 25 s; 0: never ping */
  unsigned pong_timeout_ms;      /* 20 s */
  unsigned handshake_timeout_ms; /* 10 s */
  unsigned idle_timeout_ms;      /* 0: off */
  unsigned close_timeout_ms;     /* 5 s */

  uint16_t shutdown_code; /* 1012 ("restart": clients reconnect) */
  log_format log;         /* LOG_TEXT */
  bool quiet;             /* false */

  /* Authentication (auth.h): mode off, leeway 30 s, ticket_ttl 30 s,
   * ticket_max 10000, default grants (NULL lists). */
  auth_config auth;

  void *mem; /* private: what config_load allocated */
};
typedef struct serve_config serve_config;

/* Fills every field with its default (frees nothing: call on a fresh or
 * freed struct). */
void config_defaults(serve_config *cfg);

/* Reads path over cfg (which holds defaults or earlier values): keys present
 * in the file replace fields, others stay. Returns 0, or -1 with one line in
 * err: "PATH:LINE: reason" (or "PATH: reason" when there is no line, such as
 * a missing file). On error cfg keeps what it had plus any values already
 * read; call config_free either way. */
int config_load(const char *path, serve_config *cfg, char *err, size_t errlen);

/* Frees what config_load allocated and resets cfg to its defaults. */
void config_free(serve_config *cfg);

/* Maps the server-level fields onto a dx_server_config (zero it first; the
 * log hook and handle_signals are the caller's): port, host, static_root,
 * threads, TLS, trusted proxies and PROXY protocol, limits, timers (ping 0 -> never), write_limit (hard; high a
 * quarter, low a sixteenth, as --write-limit) and shutdown_code. Pointers are
 * borrowed from cfg. */
void config_to_server(const serve_config *cfg, dx_server_config *out);

/* Parsers shared with the flags (same grammar in the file and on the
 * command line). Sizes: "16MiB", "64k", "1048576" (k/kb/kib, m/mb/mib,
 * g/gib; case-insensitive). Durations: "30s", "250ms", "2m", "1h", "5"
 * (seconds). Return false on a malformed or out-of-range value. */
bool config_parse_size(const char *s, size_t *out);
bool config_parse_duration(const char *s, unsigned *ms);

#endif
