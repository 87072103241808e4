/* duplex serve --config FILE (contract in config.h, options in
 * docs/config.md). libyaml's document API: the whole file is small, and
 * nodes carry the line numbers the errors need. */
#include "config.h"
#include "yamlfile.h"

#include <duplex/http.h>
#include <yaml.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define MAX_FILE (1 << 20) /* a config file is not a megabyte */
#define MAX_VALUE 65536    /* one value after ${VAR} expansion */

/* ---- defaults
 * ---------------------------------------------------------------- */

void config_defaults(serve_config *c) {
  memset(c, 0, sizeof *c);
  c->port = 8080;
  c->deflate = true;
  c->history = 100;
  c->rate = 100;
  c->burst = 200;
  c->max_subscriptions = 100;
  c->slow_consumer = SLOW_DROP;
  c->max_message = 16u << 20;
  c->write_limit = 1u << 20;
  c->ping_interval_ms = 25000;
  c->pong_timeout_ms = 20000;
  c->handshake_timeout_ms = 10000;
  c->close_timeout_ms = 5000;
  c->shutdown_code = 1012;
  c->log = LOG_TEXT;
  c->auth.mode = AUTH_OFF;
  c->auth.leeway = 30;
  c->auth.ticket_ttl = 30;
  c->auth.ticket_max = 10000;
}

/* Everything config_load allocates hangs off cfg->mem, so fields can be
 * plain `const char *` that a caller may also point at argv. */
typedef struct chunk {
  struct chunk *next;
} chunk;

static void *arena_alloc(serve_config *c, size_t n) {
  chunk *k = malloc(sizeof *k + n);
  if (!k) return NULL;
  k->next = c->mem;
  c->mem = k;
  return k + 1;
}

void config_free(serve_config *c) {
  chunk *k = c->mem;
  while (k) {
    chunk *next = k->next;
    free(k);
    k = next;
  }
  config_defaults(c);
}

void config_to_server(const serve_config *c, dx_server_config *o) {
  o->host = c->host;
  o->port = c->port;
  o->threads = c->threads;
  o->static_root = c->root;
  o->tls_cert = c->tls_cert;
  o->tls_key = c->tls_key;
  o->tls_sni_certs = c->tls_sni;
  o->tls_nsni_certs = c->tls_nsni;
  o->trusted_proxies = c->trusted_proxies;
  o->proxy_protocol = c->proxy_protocol;
  o->max_message = c->max_message;
  o->max_connections = c->max_connections;
  o->max_per_ip = c->max_per_ip;
  o->handshake_timeout_ms = c->handshake_timeout_ms;
  o->ping_interval_ms =
      c->ping_interval_ms ? c->ping_interval_ms : (unsigned)-1;
  o->pong_timeout_ms = c->pong_timeout_ms;
  o->idle_timeout_ms = c->idle_timeout_ms;
  o->close_timeout_ms = c->close_timeout_ms;
  /* As --write-limit: backpressure at a quarter, drain at a sixteenth. */
  o->write_hard = c->write_limit;
  o->write_high = c->write_limit / 4;
  o->write_low = c->write_limit / 16;
  o->shutdown_code = c->shutdown_code;
}

/* ---- value grammars
 * ---------------------------------------------------------- */

bool config_parse_size(const char *s, size_t *out) {
  if (!isdigit((unsigned char)*s)) return false;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno) return false;
  unsigned long long mul = 1;
  if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") ||
      !strcasecmp(end, "kib"))
    mul = 1024;
  else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") ||
           !strcasecmp(end, "mib"))
    mul = 1024 * 1024;
  else if (!strcasecmp(end, "g") || !strcasecmp(end, "gb") ||
           !strcasecmp(end, "gib"))
    mul = 1024ull * 1024 * 1024;
  else if (*end)
    return false;
  if (v > SIZE_MAX / mul) return false;
  *out = (size_t)(v * mul);
  return true;
}

/* A plain decimal: strtod alone would also take " 5", "-1", "0x10", "1e3",
 * "nan" and "inf". Returns the end of the number or NULL. */
static const char *decimal(const char *s, double *v) {
  size_t n = strspn(s, "0123456789.");
  if (n == 0) return NULL;
  char *end;
  errno = 0;
  *v = strtod(s, &end);
  if (errno || end != s + n || !isfinite(*v)) return NULL;
  return end;
}

bool config_parse_duration(const char *s, unsigned *ms) {
  double v;
  const char *end = decimal(s, &v);
  if (!end) return false;
  double mul;
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

/* ---- the schema
 * ---------------------------------------------------------------- */

typedef enum kind {
  K_MAP,     /* nested mapping: opt.sub */
  K_STR,     /* string */
  K_SECRET,  /* string of at least AUTH_MIN_SECRET bytes */
  K_STRS,    /* list of strings; [] is "not set" */
  K_PATHS,   /* list of paths starting with '/'; [] is "not set" */
  K_KEYS,    /* API keys: strings of 16+ characters; [] is "not set" */
  K_GRANTS,  /* topic patterns; [] is "none" */
  K_CIDRS,   /* networks (dx_cidr_parse); [] is "not set" */
  K_BOOL,    /* true/false/yes/no/on/off */
  K_INT,     /* int within [min, max] */
  K_THREADS, /* int within [1, 255] or "auto" (0) */
  K_COUNT,   /* size_t within [min, max] */
  K_UINT,    /* unsigned within [min, max] */
  K_NUMBER,  /* double within [min, max] */
  K_SIZE,    /* size_t bytes ("16MiB") of at least min */
  K_MS,      /* unsigned milliseconds ("25s") of at least min */
  K_SECS,    /* unsigned whole seconds ("30s") within [min, max] */
  K_CODE,    /* a close code a server may send */
  K_ENUM     /* one of opt.names; stored as int */
} kind;

typedef struct opt {
  const char *key;
  kind k;
  size_t off;
  double min, max;
  const struct opt *sub;    /* K_MAP */
  const char *const *names; /* K_ENUM */
} opt;

#define OFF(f) offsetof(serve_config, f)
#define END                                                                    \
  { NULL, K_STR, 0, 0, 0, NULL, NULL }

static const char *const MODES[] = {"off", "optional", "required", NULL};
static const char *const SLOW[] = {"drop", "skip", "conflate", NULL};
static const char *const LOGS[] = {"text", "json", NULL};

_Static_assert(sizeof(auth_mode) == sizeof(int) &&
                   sizeof(slow_policy) == sizeof(int) &&
                   sizeof(log_format) == sizeof(int),
               "K_ENUM stores an int");

static const opt TLS[] = {{"cert", K_STR, OFF(tls_cert), 0, 0, NULL, NULL},
                          {"key", K_STR, OFF(tls_key), 0, 0, NULL, NULL},
                          END};
static const opt ANON[] = {
    {"subscribe", K_GRANTS, OFF(auth.anonymous.subscribe), 0, 0, NULL, NULL},
    {"publish", K_GRANTS, OFF(auth.anonymous.publish), 0, 0, NULL, NULL},
    END};
static const opt TOKEN[] = {
    {"subscribe", K_GRANTS, OFF(auth.token.subscribe), 0, 0, NULL, NULL},
    {"publish", K_GRANTS, OFF(auth.token.publish), 0, 0, NULL, NULL},
    END};
static const opt AUTH[] = {
    {"mode", K_ENUM, OFF(auth.mode), 0, 0, NULL, MODES},
    {"api_keys", K_KEYS, OFF(auth.api_keys), 0, 0, NULL, NULL},
    {"jwt_secret", K_SECRET, OFF(auth.jwt_secret), 0, 0, NULL, NULL},
    {"jwt_public_key", K_STR, OFF(auth.jwt_public_key), 0, 0, NULL, NULL},
    {"audience", K_STR, OFF(auth.audience), 0, 0, NULL, NULL},
    {"issuer", K_STR, OFF(auth.issuer), 0, 0, NULL, NULL},
    {"leeway", K_SECS, OFF(auth.leeway), 0, 3600, NULL, NULL},
    {"ticket_ttl", K_SECS, OFF(auth.ticket_ttl), 1, 3600, NULL, NULL},
    {"ticket_max", K_COUNT, OFF(auth.ticket_max), 1, 1e6, NULL, NULL},
    {"anonymous", K_MAP, 0, 0, 0, ANON, NULL},
    {"token_grants", K_MAP, 0, 0, 0, TOKEN, NULL},
    END};
static const opt TOP[] = {
    {"port", K_INT, OFF(port), 0, 65535, NULL, NULL},
    {"host", K_STR, OFF(host), 0, 0, NULL, NULL},
    {"root", K_STR, OFF(root), 0, 0, NULL, NULL},
    {"threads", K_THREADS, OFF(threads), 0, 0, NULL, NULL},
    {"tls", K_MAP, 0, 0, 0, TLS, NULL},
    {"echo", K_PATHS, OFF(echo), 0, 0, NULL, NULL},
    {"origins", K_STRS, OFF(origins), 0, 0, NULL, NULL},
    {"deflate", K_BOOL, OFF(deflate), 0, 0, NULL, NULL},
    {"trusted_proxies", K_CIDRS, OFF(trusted_proxies), 0, 0, NULL, NULL},
    {"proxy_protocol", K_BOOL, OFF(proxy_protocol), 0, 0, NULL, NULL},
    {"history", K_COUNT, OFF(history), 0, 1e6, NULL, NULL},
    {"history_age", K_MS, OFF(history_age_ms), 0, 0, NULL, NULL},
    {"rate", K_NUMBER, OFF(rate), 0, 1e6, NULL, NULL},
    {"burst", K_UINT, OFF(burst), 1, 1e6, NULL, NULL},
    {"max_subscriptions", K_COUNT, OFF(max_subscriptions), 1, 1e6, NULL, NULL},
    {"slow_consumer", K_ENUM, OFF(slow_consumer), 0, 0, NULL, SLOW},
    {"presence", K_BOOL, OFF(presence), 0, 0, NULL, NULL},
    {"redis", K_STR, OFF(redis), 0, 0, NULL, NULL},
    {"redis_prefix", K_STR, OFF(redis_prefix), 0, 0, NULL, NULL},
    {"node_id", K_STR, OFF(node_id), 0, 0, NULL, NULL},
    {"redis_ttl", K_MS, OFF(redis_ttl_ms), 1, 0, NULL, NULL},
    {"max_message", K_SIZE, OFF(max_message), 1, 0, NULL, NULL},
    {"max_connections", K_COUNT, OFF(max_connections), 0, 1e9, NULL, NULL},
    {"max_per_ip", K_COUNT, OFF(max_per_ip), 0, 1e9, NULL, NULL},
    {"write_limit", K_SIZE, OFF(write_limit), 1024, 0, NULL, NULL},
    {"ping_interval", K_MS, OFF(ping_interval_ms), 0, 0, NULL, NULL},
    {"pong_timeout", K_MS, OFF(pong_timeout_ms), 1, 0, NULL, NULL},
    {"handshake_timeout", K_MS, OFF(handshake_timeout_ms), 1, 0, NULL, NULL},
    {"idle_timeout", K_MS, OFF(idle_timeout_ms), 0, 0, NULL, NULL},
    {"close_timeout", K_MS, OFF(close_timeout_ms), 1, 0, NULL, NULL},
    {"shutdown_code", K_CODE, OFF(shutdown_code), 0, 0, NULL, NULL},
    {"log", K_ENUM, OFF(log), 0, 0, NULL, LOGS},
    {"quiet", K_BOOL, OFF(quiet), 0, 0, NULL, NULL},
    {"auth", K_MAP, 0, 0, 0, AUTH, NULL},
    END};

/* ---- walking the document
 * ---------------------------------------------------------- */

typedef struct ctx {
  const char *path;
  yaml_document_t *doc;
  serve_config *cfg;
  char *err;
  size_t errlen;
  size_t tls_key_line; /* for "tls.key needs tls.cert" */
} ctx;

static size_t line_of(const yaml_node_t *n) {
  return n->start_mark.line + 1;
}

static int fail(ctx *c, const yaml_node_t *n, const char *fmt, ...) {
  int k = snprintf(c->err, c->errlen, "%s:%zu: ", c->path, line_of(n));
  va_list ap;
  va_start(ap, fmt);
  if (k >= 0 && (size_t)k < c->errlen)
    vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
  va_end(ap);
  return -1;
}

static const char *type_name(const yaml_node_t *n) {
  switch (n->type) {
  case YAML_SCALAR_NODE:
    return "a scalar";
  case YAML_SEQUENCE_NODE:
    return "a list";
  case YAML_MAPPING_NODE:
    return "a mapping";
  default:
    return "nothing";
  }
}

static const char *expects(kind k) {
  switch (k) {
  case K_MAP:
    return "a mapping";
  case K_STR:
  case K_SECRET:
  case K_ENUM:
    return "a string";
  case K_STRS:
  case K_PATHS:
  case K_KEYS:
  case K_GRANTS:
  case K_CIDRS:
    return "a list";
  case K_BOOL:
    return "true or false";
  case K_SIZE:
    return "a size";
  case K_MS:
  case K_SECS:
    return "a duration";
  default:
    return "a number";
  }
}

static bool is_null(const yaml_node_t *n) {
  if (n->type != YAML_SCALAR_NODE ||
      n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return false;
  const char *v = (const char *)n->data.scalar.value;
  return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
         !strcmp(v, "NULL");
}

static bool name_char(int ch, bool first) {
  return ch == '_' || isalpha(ch) || (!first && isdigit(ch));
}

/* Expands ${NAME} (and $$) in a scalar into cfg's arena. NULL on error
 * (reported). */
static char *expand(ctx *c, const yaml_node_t *n) {
  const char *s = (const char *)n->data.scalar.value;
  size_t len = n->data.scalar.length;
  if (memchr(s, 0, len)) {
    fail(c, n, "a NUL character in a value");
    return NULL;
  }
  char *buf = malloc(MAX_VALUE + 1);
  if (!buf) {
    fail(c, n, "out of memory");
    return NULL;
  }
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    const char *piece = s + i;
    size_t plen = 1;
    if (s[i] == '$' && i + 1 < len && s[i + 1] == '$') {
      i += 2;
    } else if (s[i] == '$' && i + 1 < len && s[i + 1] == '{') {
      size_t j = i + 2;
      while (j < len && name_char((unsigned char)s[j], j == i + 2))
        j++;
      if (j == i + 2 || j >= len || s[j] != '}') {
        free(buf);
        fail(c, n,
             "bad ${...}: write ${NAME} (letters, digits, '_'), or $$ "
             "for a '$'");
        return NULL;
      }
      char name[256];
      snprintf(name, sizeof name, "%.*s", (int)(j - i - 2), s + i + 2);
      piece = getenv(name);
      if (!piece) {
        free(buf);
        fail(c, n, "${%s}: environment variable not set", name);
        return NULL;
      }
      plen = strlen(piece);
      i = j + 1;
    } else {
      i++;
    }
    if (o + plen > MAX_VALUE) {
      free(buf);
      fail(c, n, "value longer than %d bytes", MAX_VALUE);
      return NULL;
    }
    memcpy(buf + o, piece, plen);
    o += plen;
  }
  char *out = arena_alloc(c->cfg, o + 1);
  if (out) {
    memcpy(out, buf, o);
    out[o] = 0;
  } else {
    fail(c, n, "out of memory");
  }
  free(buf);
  return out;
}

static bool parse_bool(const char *v, bool *out) {
  static const char *const yes[] = {"true", "yes", "on"};
  static const char *const no[] = {"false", "no", "off"};
  for (int i = 0; i < 3; i++) {
    if (!strcasecmp(v, yes[i])) return (*out = true);
    if (!strcasecmp(v, no[i])) return !(*out = false);
  }
  return false;
}

static bool parse_uint(const char *v, double min, double max,
                       unsigned long long *out) {
  if (!isdigit((unsigned char)*v)) return false;
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (errno || *end || (double)n < min || (double)n > max) return false;
  *out = n;
  return true;
}

static void *field(ctx *c, const opt *o) {
  return (char *)c->cfg + o->off;
}

static int set_list(ctx *c, const opt *o, const yaml_node_t *n) {
  if (n->type != YAML_SEQUENCE_NODE)
    return fail(c, n, "%s: expected a list, got %s", o->key, type_name(n));
  yaml_node_item_t *it = n->data.sequence.items.start;
  size_t count = (size_t)(n->data.sequence.items.top - it);
  if (o->k == K_GRANTS && count > AUTH_MAX_PATTERNS)
    return fail(c, n, "%s: more than %d patterns", o->key, AUTH_MAX_PATTERNS);
  const char **list = arena_alloc(c->cfg, (count + 1) * sizeof *list);
  if (!list) return fail(c, n, "out of memory");
  for (size_t i = 0; i < count; i++) {
    const yaml_node_t *item = yaml_document_get_node(c->doc, it[i]);
    if (item->type != YAML_SCALAR_NODE || is_null(item))
      return fail(c, item, "%s: each item is a string, not %s", o->key,
                  is_null(item) ? "null" : type_name(item));
    char *v = expand(c, item);
    if (!v) return -1;
    if (o->k == K_PATHS && v[0] != '/')
      return fail(c, item, "%s: '%s': a path starts with '/'", o->key, v);
    if (o->k == K_KEYS && strlen(v) < 16)
      return fail(c, item, "%s: an API key has at least 16 characters", o->key);
    if (o->k == K_GRANTS && !auth_pattern_valid(v))
      return fail(c, item,
                  "%s: '%s' is not a topic pattern (characters "
                  "[A-Za-z0-9_.:/-], one optional trailing '*')",
                  o->key, v);
    if (o->k == K_STRS && !*v)
      return fail(c, item, "%s: an empty string", o->key);
    dx_cidr net;
    const char *why = "";
    if (o->k == K_CIDRS && dx_cidr_parse(v, &net, &why))
      return fail(c, item, "%s: '%s': %s", o->key, v, why);
    list[i] = v;
  }
  list[count] = NULL;
  *(const char *const **)field(c, o) =
      count == 0 && o->k != K_GRANTS ? NULL : list;
  return 0;
}

static int walk(ctx *c, const yaml_node_t *map, const opt *table,
                const char *where);

static int set_scalar(ctx *c, const opt *o, const yaml_node_t *n) {
  char *v = expand(c, n);
  if (!v) return -1;
  unsigned long long u;
  size_t sz;
  unsigned ms;
  bool b;
  switch (o->k) {
  case K_STR:
  case K_SECRET:
    if (!*v) return fail(c, n, "%s: an empty string", o->key);
    if (o->k == K_SECRET && strlen(v) < AUTH_MIN_SECRET)
      return fail(c, n,
                  "%s: at least %d bytes (RFC 7518 3.2; openssl rand -hex 32)",
                  o->key, AUTH_MIN_SECRET);
    *(const char **)field(c, o) = v;
    return 0;
  case K_BOOL:
    if (!parse_bool(v, &b))
      return fail(c, n, "%s: '%s' is not true or false", o->key, v);
    *(bool *)field(c, o) = b;
    return 0;
  case K_INT:
  case K_UINT:
  case K_COUNT:
    if (!parse_uint(v, o->min, o->max, &u))
      return fail(c, n, "%s: '%s' is not a whole number in %.0f..%.0f", o->key,
                  v, o->min, o->max);
    if (o->k == K_INT)
      *(int *)field(c, o) = (int)u;
    else if (o->k == K_UINT)
      *(unsigned *)field(c, o) = (unsigned)u;
    else
      *(size_t *)field(c, o) = (size_t)u;
    return 0;
  case K_THREADS:
    if (!strcmp(v, "auto")) {
      *(int *)field(c, o) = 0;
      return 0;
    }
    if (!parse_uint(v, 1, 255, &u))
      return fail(c, n, "%s: '%s': 1..255 or auto", o->key, v);
    *(int *)field(c, o) = (int)u;
    return 0;
  case K_NUMBER: {
    double d;
    const char *end = decimal(v, &d);
    if (!end || *end || d < o->min || d > o->max)
      return fail(c, n, "%s: '%s' is not a number in %.0f..%.0f", o->key, v,
                  o->min, o->max);
    *(double *)field(c, o) = d;
    return 0;
  }
  case K_SIZE:
    if (!config_parse_size(v, &sz) || (double)sz < o->min)
      return fail(c, n,
                  "%s: '%s' is not a size of at least %.0f bytes (e.g. 64KiB, "
                  "16MiB)",
                  o->key, v, o->min);
    *(size_t *)field(c, o) = sz;
    return 0;
  case K_MS:
    if (!config_parse_duration(v, &ms) || (double)ms < o->min)
      return fail(c, n,
                  "%s: '%s' is not a %sduration (e.g. 250ms, 30s, 2m; a bare "
                  "number is seconds)",
                  o->key, v, o->min > 0 ? "positive " : "");
    *(unsigned *)field(c, o) = ms;
    return 0;
  case K_SECS:
    if (!config_parse_duration(v, &ms) || ms % 1000 || ms / 1000 < o->min ||
        ms / 1000 > o->max)
      return fail(c, n, "%s: '%s' is not whole seconds in %.0fs..%.0fs", o->key,
                  v, o->min, o->max);
    *(unsigned *)field(c, o) = ms / 1000;
    return 0;
  case K_CODE:
    /* 1005, 1006 and 1015 never go on the wire (RFC 6455 7.4.1). */
    if (!parse_uint(v, 1000, 4999, &u) || !dx_close_code_valid((unsigned)u))
      return fail(c, n,
                  "%s: '%s' is not a close code a server may send (1000, "
                  "1001, 1011-1014, 3000-4999 ...)",
                  o->key, v);
    *(uint16_t *)field(c, o) = (uint16_t)u;
    return 0;
  case K_ENUM:
    for (int i = 0; o->names[i]; i++) {
      if (!strcmp(v, o->names[i])) {
        *(int *)field(c, o) = i;
        return 0;
      }
    }
    {
      char alts[128] = "";
      for (int i = 0; o->names[i]; i++)
        snprintf(alts + strlen(alts), sizeof alts - strlen(alts), "%s%s",
                 i ? (o->names[i + 1] ? ", " : " or ") : "", o->names[i]);
      return fail(c, n, "%s: '%s': %s", o->key, v, alts);
    }
  default:
    return fail(c, n, "%s: internal error", o->key);
  }
}

/* tls: as a list of {cert, key} mappings: the first pair is the default,
 * the others are chosen by the client's SNI server name. */
static int set_tls_list(ctx *c, const yaml_node_t *n) {
  yaml_node_item_t *it = n->data.sequence.items.start;
  size_t count = (size_t)(n->data.sequence.items.top - it);
  if (!count) return fail(c, n, "tls: an empty list (one {cert, key} a pair)");
  dx_tls_cert *more = NULL;
  if (count > 1 && !(more = arena_alloc(c->cfg, (count - 1) * sizeof *more)))
    return fail(c, n, "out of memory");
  const char *cert = NULL, *key = NULL;
  for (size_t i = 0; i < count; i++) {
    const yaml_node_t *item = yaml_document_get_node(c->doc, it[i]);
    if (item->type != YAML_MAPPING_NODE)
      return fail(c, item, "tls: each item is a mapping {cert, key}, not %s",
                  is_null(item) ? "null" : type_name(item));
    c->cfg->tls_cert = c->cfg->tls_key = NULL;
    if (walk(c, item, TLS, "tls")) return -1;
    if (!c->cfg->tls_cert)
      return fail(c, item, "tls: item %zu needs cert", i + 1);
    if (i == 0) {
      cert = c->cfg->tls_cert;
      key = c->cfg->tls_key;
    } else {
      more[i - 1] = (dx_tls_cert){c->cfg->tls_cert, c->cfg->tls_key};
    }
  }
  c->cfg->tls_cert = cert;
  c->cfg->tls_key = key;
  c->cfg->tls_sni = more;
  c->cfg->tls_nsni = count - 1;
  c->tls_key_line = 0; /* every item was checked */
  return 0;
}

static int set_value(ctx *c, const opt *o, const yaml_node_t *n) {
  if (is_null(n)) return 0; /* keeps the default */
  switch (o->k) {
  case K_MAP:
    if (o->sub == TLS && n->type == YAML_SEQUENCE_NODE)
      return set_tls_list(c, n);
    if (n->type != YAML_MAPPING_NODE)
      return fail(c, n, "%s: expected a mapping, got %s", o->key, type_name(n));
    return walk(c, n, o->sub, o->key);
  case K_STRS:
  case K_PATHS:
  case K_KEYS:
  case K_GRANTS:
  case K_CIDRS:
    return set_list(c, o, n);
  default:
    if (n->type != YAML_SCALAR_NODE)
      return fail(c, n, "%s: expected %s, got %s", o->key, expects(o->k),
                  type_name(n));
    if (o->off == OFF(tls_key)) c->tls_key_line = line_of(n);
    return set_scalar(c, o, n);
  }
}

/* Edit distance, for "did you mean". Keys are short. */
static size_t distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 40 || lb > 40) return 99;
  size_t row[41];
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      if (up + 1 < best) best = up + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

static int unknown_key(ctx *c, const yaml_node_t *k, const opt *table,
                       const char *where) {
  const char *key = (const char *)k->data.scalar.value;
  const char *best = NULL;
  size_t bd = 3;
  for (const opt *o = table; o->key; o++) {
    size_t d = distance(key, o->key);
    if (d < bd) bd = d, best = o->key;
  }
  char in[64] = "";
  if (where) snprintf(in, sizeof in, " in %s", where);
  if (best)
    return fail(c, k, "unknown key '%s'%s (did you mean '%s'?)", key, in, best);
  char all[512] = "";
  for (const opt *o = table; o->key; o++)
    snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s",
             o == table ? "" : ", ", o->key);
  return fail(c, k, "unknown key '%s'%s (known: %s)", key, in, all);
}

static int walk(ctx *c, const yaml_node_t *map, const opt *table,
                const char *where) {
  yaml_node_pair_t *p0 = map->data.mapping.pairs.start;
  yaml_node_pair_t *top = map->data.mapping.pairs.top;
  for (yaml_node_pair_t *p = p0; p < top; p++) {
    const yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
    const yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
    if (k->type != YAML_SCALAR_NODE)
      return fail(c, k, "a key is a plain name, not %s", type_name(k));
    const char *key = (const char *)k->data.scalar.value;
    for (yaml_node_pair_t *q = p0; q < p; q++) {
      const yaml_node_t *qk = yaml_document_get_node(c->doc, q->key);
      if (qk->type == YAML_SCALAR_NODE &&
          !strcmp((const char *)qk->data.scalar.value, key))
        return fail(c, k, "duplicate key '%s' (first at line %zu)", key,
                    line_of(qk));
    }
    const opt *o = table;
    while (o->key && strcmp(o->key, key))
      o++;
    if (!o->key) return unknown_key(c, k, table, where);
    if (set_value(c, o, v)) return -1;
  }
  return 0;
}

/* ---- loading ----------------------------------------------------------------
 */

int config_load(const char *path, serve_config *cfg, char *err, size_t errlen) {
  ctx c = {.path = path, .cfg = cfg, .err = err, .errlen = errlen};
  yaml_document_t doc;
  if (app_yaml_load(path, MAX_FILE, &doc, err, errlen)) return -1;
  c.doc = &doc;
  int rc = -1;
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (root && !is_null(root)) { /* an empty file: all defaults */
    if (root->type != YAML_MAPPING_NODE) {
      fail(&c, root, "the file is a mapping of options (key: value), not %s",
           type_name(root));
      goto done;
    }
    if (walk(&c, root, TOP, NULL)) goto done;
    if (c.tls_key_line && !cfg->tls_cert) {
      snprintf(err, errlen, "%s:%zu: tls: key needs cert", path,
               c.tls_key_line);
      goto done;
    }
  }
  rc = 0;
done:
  yaml_document_delete(&doc);
  return rc;
}
