/*
 * The probe scenario parser (scenario.h): libyaml's document API, errors
 * as FILE:LINE: reason from the node marks, like config.c.
 */
#include "scenario.h"
#include "yamlfile.h"
#include "app.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#define MAX_FILE (4 << 20)

typedef struct pctx {
  const char *path;
  yaml_document_t *doc;
  char *err;
  size_t errlen;
} pctx;

static const char *const KIND_NAMES[] = {[STEP_CONNECT] = "connect",
                                         [STEP_SEND] = "send",
                                         [STEP_SEND_JSON] = "send_json",
                                         [STEP_SEND_BINARY] = "send_binary",
                                         [STEP_EXPECT] = "expect",
                                         [STEP_EXPECT_MATCH] = "expect_match",
                                         [STEP_EXPECT_JSON] = "expect_json",
                                         [STEP_SLEEP] = "sleep",
                                         [STEP_PING] = "ping",
                                         [STEP_CLOSE] = "close"};
#define NKINDS (sizeof KIND_NAMES / sizeof KIND_NAMES[0])

const char *step_kind_name(step_kind k) {
  return (size_t)k < NKINDS ? KIND_NAMES[k] : "?";
}

static size_t line_of(const yaml_node_t *n) {
  return n->start_mark.line + 1;
}

static int fail(pctx *c, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(pctx *c, const yaml_node_t *n, const char *fmt, ...) {
  int k = snprintf(c->err, c->errlen, "%s:%zu: ", c->path, line_of(n));
  va_list ap;
  va_start(ap, fmt);
  if (k >= 0 && (size_t)k < c->errlen)
    vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
  va_end(ap);
  return -1;
}

static yaml_node_t *node(pctx *c, int id) {
  return yaml_document_get_node(c->doc, id);
}

static const char *scalar(const yaml_node_t *n) {
  return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value
                                     : NULL;
}

static bool is_plain(const yaml_node_t *n) {
  return n->type == YAML_SCALAR_NODE &&
         n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static bool is_null(const yaml_node_t *n) {
  if (!is_plain(n)) return false;
  const char *s = scalar(n);
  return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
         !strcmp(s, "NULL");
}

/* YAML 1.2 core schema for plain scalars; quoted ones stay strings. */
static json_t *scalar_json(const yaml_node_t *n) {
  const char *s = scalar(n);
  if (!is_plain(n)) return json_string(s);
  if (is_null(n)) return json_null();
  if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
    return json_true();
  if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
    return json_false();
  char *end;
  errno = 0;
  long long i = strtoll(s, &end, 10);
  if (!*end && end != s && !errno && strspn(s, "+-0123456789") == strlen(s))
    return json_integer(i);
  double d = strtod(s, &end);
  if (!*end && end != s && strspn(s, "+-0123456789.eE") == strlen(s))
    return json_real(d);
  return json_string(s);
}

static json_t *to_json(pctx *c, const yaml_node_t *n, int depth) {
  if (depth > 64) {
    fail(c, n, "nested too deeply");
    return NULL;
  }
  if (n->type == YAML_SCALAR_NODE) {
    json_t *j = scalar_json(n);
    if (!j) fail(c, n, "not valid UTF-8 text");
    return j;
  }
  if (n->type == YAML_SEQUENCE_NODE) {
    json_t *a = json_array();
    for (yaml_node_item_t *it = n->data.sequence.items.start;
         it < n->data.sequence.items.top; it++) {
      json_t *v = to_json(c, node(c, *it), depth + 1);
      if (!v) {
        json_decref(a);
        return NULL;
      }
      json_array_append_new(a, v);
    }
    return a;
  }
  if (n->type == YAML_MAPPING_NODE) {
    json_t *o = json_object();
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
         p < n->data.mapping.pairs.top; p++) {
      yaml_node_t *k = node(c, p->key);
      if (!scalar(k)) {
        fail(c, k, "a JSON key must be a string");
        json_decref(o);
        return NULL;
      }
      json_t *v = to_json(c, node(c, p->value), depth + 1);
      if (!v) {
        json_decref(o);
        return NULL;
      }
      json_object_set_new(o, scalar(k), v);
    }
    return o;
  }
  fail(c, n, "empty value");
  return NULL;
}

static int want_string(pctx *c, const yaml_node_t *n, const char *what,
                       char **out) {
  if (n->type != YAML_SCALAR_NODE || is_null(n))
    return fail(c, n, "%s: expected a string", what);
  free(*out);
  *out = strdup(scalar(n));
  return *out ? 0 : fail(c, n, "out of memory");
}

static int want_bool(pctx *c, const yaml_node_t *n, const char *what,
                     bool *out) {
  json_t *j = n->type == YAML_SCALAR_NODE ? scalar_json(n) : NULL;
  bool ok = j && json_is_boolean(j);
  if (ok) *out = json_is_true(j);
  json_decref(j);
  return ok ? 0 : fail(c, n, "%s: expected true or false", what);
}

static int want_duration(pctx *c, const yaml_node_t *n, const char *what,
                         unsigned *ms) {
  const char *s = scalar(n);
  if (!s || !app_parse_duration(s, ms))
    return fail(c, n, "%s: expected a duration (5, 1.5s, 300ms)", what);
  return 0;
}

static int set_headers(pctx *c, step *st, const yaml_node_t *n) {
  if (n->type != YAML_MAPPING_NODE)
    return fail(c, n, "headers: expected a mapping (Name: value)");
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
       p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
    if (!scalar(k) || !*scalar(k) || !scalar(v))
      return fail(c, k, "headers: expected 'Name: value' strings");
    if (st->nheaders == STEP_MAX_HEADERS)
      return fail(c, k, "headers: at most %d", STEP_MAX_HEADERS);
    size_t len = strlen(scalar(k)) + strlen(scalar(v)) + 3;
    char *h = malloc(len);
    if (!h) return fail(c, k, "out of memory");
    snprintf(h, len, "%s: %s", scalar(k), scalar(v));
    st->headers[st->nheaders++] = h;
  }
  return 0;
}

static int set_subprotocols(pctx *c, step *st, const yaml_node_t *n) {
  if (n->type == YAML_SCALAR_NODE)
    return want_string(c, n, "subprotocol",
                       &st->subprotocols[st->nsubprotocols++]);
  if (n->type != YAML_SEQUENCE_NODE)
    return fail(c, n, "subprotocol: expected a string or a list");
  for (yaml_node_item_t *it = n->data.sequence.items.start;
       it < n->data.sequence.items.top; it++) {
    if (st->nsubprotocols == STEP_MAX_HEADERS)
      return fail(c, n, "subprotocol: at most %d", STEP_MAX_HEADERS);
    if (want_string(c, node(c, *it), "subprotocol",
                    &st->subprotocols[st->nsubprotocols++]))
      return -1;
  }
  return 0;
}

static int set_captures(pctx *c, step *st, const yaml_node_t *n) {
  if (n->type != YAML_MAPPING_NODE)
    return fail(c, n, "capture: expected a mapping (name: json.path)");
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
       p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
    if (!scalar(k) || !*scalar(k) ||
        strspn(scalar(k), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "0123456789_") != strlen(scalar(k)))
      return fail(c, k, "capture: a name is letters, digits and '_'");
    if (st->ncaptures == STEP_MAX_CAPTURES)
      return fail(c, k, "capture: at most %d", STEP_MAX_CAPTURES);
    size_t i = st->ncaptures++;
    if (want_string(c, k, "capture", &st->cap_name[i])) return -1;
    if (is_null(v)) {
      st->cap_path[i] = strdup("");
      if (!st->cap_path[i]) return fail(c, v, "out of memory");
    } else if (want_string(c, v, "capture path", &st->cap_path[i])) {
      return -1;
    }
  }
  return 0;
}

static int set_binary(pctx *c, step *st, const yaml_node_t *n) {
  if (n->type == YAML_SCALAR_NODE) {
    st->form = BIN_BASE64;
    return want_string(c, n, "send_binary", &st->text);
  }
  if (n->type != YAML_MAPPING_NODE ||
      n->data.mapping.pairs.top - n->data.mapping.pairs.start != 1)
    return fail(c, n,
                "send_binary: expected base64 text, or one of "
                "{base64: ..}, {hex: ..}, {file: ..}");
  yaml_node_pair_t *p = n->data.mapping.pairs.start;
  const char *k = scalar(node(c, p->key));
  if (k && !strcmp(k, "base64"))
    st->form = BIN_BASE64;
  else if (k && !strcmp(k, "hex"))
    st->form = BIN_HEX;
  else if (k && !strcmp(k, "file"))
    st->form = BIN_FILE;
  else
    return fail(c, node(c, p->key),
                "send_binary: expected base64, hex or file");
  return want_string(c, node(c, p->value), k, &st->text);
}

/* The step's own value (the kind key's). */
static int set_value(pctx *c, step *st, const yaml_node_t *v) {
  const char *name = step_kind_name(st->kind);
  switch (st->kind) {
  case STEP_CONNECT:
  case STEP_SEND:
  case STEP_EXPECT:
  case STEP_EXPECT_MATCH:
    return want_string(c, v, name, &st->text);
  case STEP_SEND_JSON:
  case STEP_EXPECT_JSON:
    st->json = to_json(c, v, 0);
    return st->json ? 0 : -1;
  case STEP_SEND_BINARY:
    return set_binary(c, st, v);
  case STEP_SLEEP:
    return want_duration(c, v, "sleep", &st->sleep_ms);
  case STEP_PING:
    return is_null(v) ? 0 : want_string(c, v, "ping", &st->text);
  case STEP_CLOSE: {
    if (is_null(v)) {
      st->close_code = 1000;
      return 0;
    }
    const char *s = scalar(v);
    char *end;
    unsigned long code = s ? strtoul(s, &end, 10) : 0;
    if (!s || end == s || *end || code < 1000 || code > 4999)
      return fail(c, v, "close: expected a close code (1000..4999)");
    st->close_code = (unsigned)code;
    return 0;
  }
  }
  return fail(c, v, "unknown step");
}

static bool is_expect(step_kind k) {
  return k == STEP_EXPECT || k == STEP_EXPECT_MATCH || k == STEP_EXPECT_JSON;
}

/* An option beside the kind key; which ones a kind takes. */
static int set_option(pctx *c, step *st, const yaml_node_t *k,
                      const yaml_node_t *v) {
  const char *key = scalar(k);
  step_kind kd = st->kind;
  bool timed = kd == STEP_CONNECT || is_expect(kd) || kd == STEP_PING ||
               kd == STEP_CLOSE;
  if (!strcmp(key, "timeout") && timed)
    return want_duration(c, v, "timeout", &st->timeout_ms);
  if (kd == STEP_CONNECT) {
    if (!strcmp(key, "headers")) return set_headers(c, st, v);
    if (!strcmp(key, "subprotocol") || !strcmp(key, "subprotocols"))
      return set_subprotocols(c, st, v);
    if (!strcmp(key, "insecure")) return want_bool(c, v, key, &st->insecure);
    if (!strcmp(key, "cacert")) return want_string(c, v, key, &st->cacert);
  }
  if (is_expect(kd)) {
    if (!strcmp(key, "skip_unrelated"))
      return want_bool(c, v, key, &st->skip_unrelated);
    if (!strcmp(key, "capture") && kd != STEP_EXPECT_MATCH)
      return set_captures(c, st, v);
  }
  return fail(c, k, "'%s' is not an option of a %s step", key,
              step_kind_name(kd));
}

static int parse_step(pctx *c, const yaml_node_t *n, step *st) {
  st->line = line_of(n);
  st->timeout_ms = STEP_DEFAULT_TIMEOUT_MS;
  if (n->type != YAML_MAPPING_NODE)
    return fail(c, n, "a step is a mapping (send: hello), not a %s",
                n->type == YAML_SEQUENCE_NODE ? "list" : "scalar");
  const yaml_node_t *kind_key = NULL, *kind_val = NULL;
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
       p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node(c, p->key);
    if (!scalar(k)) return fail(c, k, "a key must be a string");
    for (size_t i = 0; i < NKINDS; i++) {
      if (strcmp(scalar(k), KIND_NAMES[i])) continue;
      if (kind_key)
        return fail(c, k, "one step per list item: '%s' and '%s'",
                    scalar(kind_key), scalar(k));
      kind_key = k;
      kind_val = node(c, p->value);
      st->kind = (step_kind)i;
    }
  }
  if (!kind_key)
    return fail(c, n,
                "no step kind (connect, send, send_json, send_binary, "
                "expect, expect_match, expect_json, sleep, ping, "
                "close)");
  if (set_value(c, st, kind_val)) return -1;
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
       p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node(c, p->key);
    if (k == kind_key) continue;
    for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++)
      if (!strcmp(scalar(node(c, q->key)), scalar(k)))
        return fail(c, k, "'%s' given twice", scalar(k));
    if (set_option(c, st, k, node(c, p->value))) return -1;
  }
  return 0;
}

static int parse_root(pctx *c, const yaml_node_t *root, scenario *sc) {
  if (root->type != YAML_MAPPING_NODE)
    return fail(c, root, "the file is a mapping with a 'steps:' list");
  const yaml_node_t *steps = NULL;
  for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
       p < root->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node(c, p->key);
    const char *key = scalar(k);
    if (key && !strcmp(key, "steps"))
      steps = node(c, p->value);
    else if (!key || (strcmp(key, "name") && strcmp(key, "description")))
      return fail(c, k,
                  "unknown top-level key '%s' (steps, name, "
                  "description)",
                  key ? key : "?");
  }
  if (!steps) return fail(c, root, "no 'steps:' list");
  if (steps->type != YAML_SEQUENCE_NODE)
    return fail(c, steps, "'steps:' must be a list");
  size_t n = (size_t)(steps->data.sequence.items.top -
                      steps->data.sequence.items.start);
  if (!n) return fail(c, steps, "'steps:' is empty");
  sc->steps = calloc(n, sizeof *sc->steps);
  if (!sc->steps) return fail(c, steps, "out of memory");
  for (size_t i = 0; i < n; i++) {
    sc->nsteps = i + 1;
    if (parse_step(c, node(c, steps->data.sequence.items.start[i]),
                   &sc->steps[i]))
      return -1;
  }
  if (sc->steps[0].kind != STEP_CONNECT && sc->steps[0].kind != STEP_SLEEP)
    return fail(c, node(c, steps->data.sequence.items.start[0]),
                "the first step must be 'connect:'");
  return 0;
}

int scenario_load(const char *path, scenario *sc, char *err, size_t errlen) {
  memset(sc, 0, sizeof *sc);
  pctx c = {.path = path, .err = err, .errlen = errlen};
  yaml_document_t doc;
  if (app_yaml_load(path, MAX_FILE, &doc, err, errlen)) return -1;
  c.doc = &doc;
  int rc = -1;
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (!root)
    snprintf(err, errlen, "%s:1: empty file: expected a 'steps:' list", path);
  else
    rc = parse_root(&c, root, sc);
  yaml_document_delete(&doc);
  if (rc == 0) sc->path = strdup(path);
  if (rc == 0 && !sc->path) {
    snprintf(err, errlen, "%s: out of memory", path);
    rc = -1;
  }
  if (rc) scenario_free(sc);
  return rc;
}

void scenario_free(scenario *sc) {
  for (size_t i = 0; i < sc->nsteps; i++) {
    step *st = &sc->steps[i];
    free(st->text);
    json_decref(st->json);
    for (size_t j = 0; j < st->nheaders; j++)
      free(st->headers[j]);
    for (size_t j = 0; j < st->nsubprotocols; j++)
      free(st->subprotocols[j]);
    free(st->cacert);
    for (size_t j = 0; j < st->ncaptures; j++) {
      free(st->cap_name[j]);
      free(st->cap_path[j]);
    }
  }
  free(sc->steps);
  free(sc->path);
  memset(sc, 0, sizeof *sc);
}
