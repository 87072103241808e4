/*
 * The probe runner (probe_run.h): one dx_client, one step at a time, driven
 * by the client's events and two timers. Messages that arrive are queued
 * in an inbox; expectations consume it in order, so a reply that lands
 * before its expect step starts is not lost.
 */
#include "probe_run.h"

#include <duplex/client.h>

#include <netdb.h>
#include <regex.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define CLOSE_GRACE_MS 3000u /* the closing handshake after the last step */
#define MAX_VARS 64

typedef struct inmsg {
  struct inmsg *next;
  dx_opcode op;
  double at;
  size_t len;
  uint8_t data[]; /* NUL-terminated too */
} inmsg;

typedef struct runner {
  dx_loop *loop;
  dx_client *client;
  const scenario *sc;
  probe_result *res;
  size_t cur;
  bool in_step;   /* cur is running */
  bool finishing; /* the last close is under way */
  inmsg *head, **tailp;
  dx_timer step_timer, next_timer, grace_timer;
  double t0, step_t0, last_sent;
  bool open, closed;
  unsigned close_code;
  char close_reason[128];
  /* expectation state */
  regex_t re;
  bool re_ok;
  json_t *want;
  char *want_text;
  size_t skipped;
  char seen[200]; /* the last unrelated message, for the failure line */
  /* captures */
  char *var_name[MAX_VARS], *var_value[MAX_VARS];
  size_t nvars;
} runner;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void start_step(runner *r);
static void finish(runner *r);

/* ---- variables -------------------------------------------------------- */

static const char *lookup(const runner *r, const char *name) {
  for (size_t i = r->nvars; i-- > 0;)
    if (!strcmp(r->var_name[i], name)) return r->var_value[i];
  return getenv(name);
}

static void set_var(runner *r, const char *name, const char *value) {
  for (size_t i = 0; i < r->nvars; i++)
    if (!strcmp(r->var_name[i], name)) {
      char *v = strdup(value);
      if (!v) return;
      free(r->var_value[i]);
      r->var_value[i] = v;
      return;
    }
  if (r->nvars == MAX_VARS) return;
  r->var_name[r->nvars] = strdup(name);
  r->var_value[r->nvars] = strdup(value);
  if (r->var_name[r->nvars] && r->var_value[r->nvars])
    r->nvars++;
  else {
    free(r->var_name[r->nvars]);
    free(r->var_value[r->nvars]);
  }
}

/* Expands ${NAME} (captures first, then the environment). Returns a new
 * string, or NULL with err set (an undefined variable, no memory). */
static char *expand(const runner *r, const char *in, char *err, size_t n) {
  size_t cap = strlen(in) + 64, len = 0;
  char *out = malloc(cap);
  if (!out) goto nomem;
  for (const char *p = in; *p;) {
    const char *val = NULL;
    size_t vlen = 1, skip = 1;
    const char *end = p[0] == '$' && p[1] == '{' ? strchr(p + 2, '}') : NULL;
    if (end) {
      char name[128];
      size_t nl = (size_t)(end - p - 2);
      if (nl == 0 || nl >= sizeof name) {
        snprintf(err, n, "bad variable reference '%.*s'", (int)(end - p + 1),
                 p);
        free(out);
        return NULL;
      }
      memcpy(name, p + 2, nl);
      name[nl] = 0;
      val = lookup(r, name);
      if (!val) {
        snprintf(err, n,
                 "undefined variable ${%s} (not captured, not in "
                 "the environment)",
                 name);
        free(out);
        return NULL;
      }
      vlen = strlen(val);
      skip = nl + 3;
    } else {
      val = p;
    }
    if (len + vlen + 1 > cap) {
      while (len + vlen + 1 > cap)
        cap *= 2;
      char *o = realloc(out, cap);
      if (!o) goto nomem;
      out = o;
    }
    memcpy(out + len, val, vlen);
    len += vlen;
    p += skip;
  }
  out[len] = 0;
  return out;
nomem:
  free(out);
  snprintf(err, n, "out of memory");
  return NULL;
}

/* A deep copy of j with every string value expanded. */
static json_t *expand_json(const runner *r, json_t *j, char *err, size_t n) {
  if (json_is_string(j)) {
    char *s = expand(r, json_string_value(j), err, n);
    json_t *o = s ? json_string(s) : NULL;
    free(s);
    return o;
  }
  if (json_is_array(j)) {
    json_t *a = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
      json_t *e = expand_json(r, v, err, n);
      if (!e) {
        json_decref(a);
        return NULL;
      }
      json_array_append_new(a, e);
    }
    return a;
  }
  if (json_is_object(j)) {
    json_t *o = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
      json_t *e = expand_json(r, v, err, n);
      if (!e) {
        json_decref(o);
        return NULL;
      }
      json_object_set_new(o, k, e);
    }
    return o;
  }
  return json_incref(j);
}

/* ---- matching ---------------------------------------------------------- */

static bool json_same(json_t *a, json_t *b) {
  if (json_is_number(a) && json_is_number(b))
    return json_number_value(a) == json_number_value(b);
  if (json_is_array(a) && json_is_array(b)) {
    if (json_array_size(a) != json_array_size(b)) return false;
    for (size_t i = 0; i < json_array_size(a); i++)
      if (!json_same(json_array_get(a, i), json_array_get(b, i))) return false;
    return true;
  }
  if (json_is_object(a) && json_is_object(b)) {
    if (json_object_size(a) != json_object_size(b)) return false;
    const char *k;
    json_t *v;
    json_object_foreach(a, k, v) {
      json_t *w = json_object_get(b, k);
      if (!w || !json_same(v, w)) return false;
    }
    return true;
  }
  return json_equal(a, b);
}

/* Every key of want is in got with a matching value (objects recursively;
 * arrays and scalars equal). */
static bool json_subset(json_t *want, json_t *got) {
  if (!json_is_object(want)) return json_same(want, got);
  if (!json_is_object(got)) return false;
  const char *k;
  json_t *v;
  json_object_foreach(want, k, v) {
    json_t *g = json_object_get(got, k);
    if (!g || !json_subset(v, g)) return false;
  }
  return true;
}

/* Follows "a.b.0.c" into j; "" or "." is j itself. */
static json_t *json_at(json_t *j, const char *path) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  char *save = NULL;
  for (char *part = strtok_r(buf, ".", &save); part && j;
       part = strtok_r(NULL, ".", &save)) {
    if (json_is_array(j)) {
      char *end;
      unsigned long i = strtoul(part, &end, 10);
      j = *end || end == part ? NULL : json_array_get(j, i);
    } else {
      j = json_object_get(j, part);
    }
  }
  return j;
}

/* ---- results ------------------------------------------------------------ */

static step_result *cur_res(runner *r) {
  return &r->res->steps[r->cur];
}

static void clear_expect(runner *r) {
  if (r->re_ok) regfree(&r->re);
  r->re_ok = false;
  json_decref(r->want);
  r->want = NULL;
  free(r->want_text);
  r->want_text = NULL;
}

static void on_next(dx_timer *t) {
  runner *r = (runner *)((char *)t - offsetof(runner, next_timer));
  if (r->cur < r->sc->nsteps)
    start_step(r);
  else
    finish(r);
}

static void step_end(runner *r, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void step_end(runner *r, bool ok, const char *fmt, ...) {
  if (!r->in_step) return;
  step_result *s = cur_res(r);
  s->status = ok ? STEP_PASSED : STEP_FAILED;
  s->duration_ms = now_ms() - r->step_t0;
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->detail, sizeof s->detail, fmt, ap);
    va_end(ap);
  }
  r->in_step = false;
  dx_timer_stop(&r->step_timer);
  clear_expect(r);
  if (!ok) {
    r->res->ok = false;
    r->res->failed_step = r->cur;
    r->cur = r->sc->nsteps;
    finish(r);
    return;
  }
  r->cur++;
  /* From the loop, not from inside a client handler. */
  dx_timer_start(r->loop, &r->next_timer, 0, 0, on_next);
}

static void describe(char *out, size_t n, const inmsg *m) {
  if (m->op == DX_OP_TEXT) {
    snprintf(out, n, "\"%.*s\"%s", (int)(m->len > 150 ? 150 : m->len),
             (const char *)m->data, m->len > 150 ? "..." : "");
    return;
  }
  int k = snprintf(out, n, "binary %zu bytes:", m->len);
  for (size_t i = 0; i < m->len && i < 32 && k > 0 && (size_t)k + 3 < n; i++)
    k += snprintf(out + k, n - (size_t)k, " %02x", m->data[i]);
}

/* ---- client events ---------------------------------------------------- */

static void try_expect(runner *r);
static void on_step_timeout(dx_timer *t);

static void on_open(dx_client *c, void *ud) {
  (void)c;
  runner *r = ud;
  r->open = true;
  r->last_sent = now_ms();
  if (r->in_step && r->sc->steps[r->cur].kind == STEP_CONNECT) {
    step_result *s = cur_res(r);
    s->open_ms = r->last_sent - r->step_t0;
    dx_client_timings t;
    dx_client_timings_get(c, &t);
    s->dns_ms = t.dns_ms >= 0 ? t.dns_ms : s->dns_ms;
    s->tcp_ms = t.connect_ms;
    s->tls_ms = t.tls_ms;
    s->upgrade_ms = t.handshake_ms;
    const char *sp = dx_client_subprotocol(c);
    const char *ext = dx_client_extensions(c);
    step_end(r, true, "open (subprotocol: %s; extensions: %s)",
             sp ? sp : "none", *ext ? ext : "none");
  }
}

static void on_message(dx_client *c, dx_opcode op, uint8_t *data, size_t len,
                       void *ud) {
  (void)c;
  runner *r = ud;
  if (r->finishing) return;
  inmsg *m = malloc(sizeof *m + len + 1);
  if (!m) return;
  m->next = NULL;
  m->op = op;
  m->at = now_ms();
  m->len = len;
  memcpy(m->data, data, len);
  m->data[len] = 0;
  *r->tailp = m;
  r->tailp = &m->next;
  if (r->in_step) try_expect(r);
}

static void on_pong(dx_client *c, const uint8_t *data, size_t len, void *ud) {
  (void)c;
  (void)data;
  runner *r = ud;
  if (!r->in_step || r->sc->steps[r->cur].kind != STEP_PING) return;
  double t = now_ms();
  cur_res(r)->response_ms = t - r->last_sent;
  step_end(r, true, "pong (%zu bytes)", len);
}

static void on_error(dx_client *c, const dx_client_error *e, void *ud) {
  (void)c;
  runner *r = ud;
  if (r->in_step && r->sc->steps[r->cur].kind == STEP_CONNECT)
    step_end(r, false, "%s", e->message);
  else if (!r->open)
    snprintf(r->close_reason, sizeof r->close_reason, "%s", e->message);
}

static void on_close(dx_client *c, uint16_t code, const char *reason,
                     size_t len, bool clean, void *ud) {
  (void)c;
  runner *r = ud;
  r->open = false;
  r->closed = true;
  r->close_code = code;
  snprintf(r->close_reason, sizeof r->close_reason, "%.*s",
           (int)(len > 120 ? 120 : len), reason);
  if (r->finishing) {
    dx_loop_stop(r->loop);
    return;
  }
  if (!r->in_step) return;
  step_kind k = r->sc->steps[r->cur].kind;
  if (k == STEP_CLOSE) {
    if (clean)
      step_end(r, true, "closed by the peer with code %u%s%s", code,
               len ? ", reason " : "", r->close_reason);
    else
      step_end(r, false, "no closing handshake (code %u)", code);
  } else if (k == STEP_PING) {
    step_end(r, false, "connection closed (code %u) before the pong", code);
  } else if (k == STEP_EXPECT || k == STEP_EXPECT_MATCH ||
             k == STEP_EXPECT_JSON) {
    try_expect(r); /* what is queued may still match */
  }
}

/* ---- steps ---------------------------------------------------------- */

static bool matches(runner *r, const step *st, const inmsg *m, json_t **doc) {
  *doc = NULL;
  if (m->op != DX_OP_TEXT) return false;
  const char *text = (const char *)m->data;
  switch (st->kind) {
  case STEP_EXPECT:
    if (strlen(text) != m->len || strcmp(text, r->want_text)) return false;
    if (st->ncaptures) *doc = json_loadb(text, m->len, 0, NULL);
    return true;
  case STEP_EXPECT_MATCH:
    return strlen(text) == m->len && regexec(&r->re, text, 0, NULL, 0) == 0;
  case STEP_EXPECT_JSON:
    *doc = json_loadb(text, m->len, JSON_DECODE_ANY, NULL);
    if (*doc && json_subset(r->want, *doc)) return true;
    json_decref(*doc);
    *doc = NULL;
    return false;
  default:
    return false;
  }
}

/* Stores the step's captures from the matched message. */
static bool capture(runner *r, const step *st, const inmsg *m, json_t *doc) {
  for (size_t i = 0; i < st->ncaptures; i++) {
    const char *path = st->cap_path[i];
    if (!doc) {
      if (*path && strcmp(path, ".")) {
        step_end(r, false, "capture %s: the message is not JSON",
                 st->cap_name[i]);
        return false;
      }
      set_var(r, st->cap_name[i], (const char *)m->data);
      continue;
    }
    json_t *v = json_at(doc, path);
    if (!v) {
      step_end(r, false, "capture %s: no '%s' in the message", st->cap_name[i],
               path);
      return false;
    }
    if (json_is_string(v)) {
      set_var(r, st->cap_name[i], json_string_value(v));
    } else {
      char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
      if (s) set_var(r, st->cap_name[i], s);
      free(s);
    }
  }
  return true;
}

static void try_expect(runner *r) {
  const step *st = &r->sc->steps[r->cur];
  if (st->kind != STEP_EXPECT && st->kind != STEP_EXPECT_MATCH &&
      st->kind != STEP_EXPECT_JSON)
    return;
  while (r->head) {
    inmsg *m = r->head;
    r->head = m->next;
    if (!r->head) r->tailp = &r->head;
    json_t *doc;
    bool ok = matches(r, st, m, &doc);
    if (ok) {
      cur_res(r)->response_ms = m->at - r->last_sent;
      if (m->at > r->last_sent) r->last_sent = m->at;
      char what[200];
      describe(what, sizeof what, m);
      bool cap = capture(r, st, m, doc);
      json_decref(doc);
      free(m);
      if (cap)
        step_end(r, true, "got %s%s", what,
                 r->skipped ? " (after unrelated messages)" : "");
      return;
    }
    describe(r->seen, sizeof r->seen, m);
    free(m);
    r->skipped++;
    if (!st->skip_unrelated) {
      step_end(r, false, "got %s", r->seen);
      return;
    }
  }
  if (r->closed && !r->open)
    step_end(r, false, "connection closed (code %u%s%s) while waiting",
             r->close_code, *r->close_reason ? ", " : "", r->close_reason);
}

static void on_step_timeout(dx_timer *t) {
  runner *r = (runner *)((char *)t - offsetof(runner, step_timer));
  const step *st = &r->sc->steps[r->cur];
  if (st->kind == STEP_SLEEP) {
    step_end(r, true, NULL);
    return;
  }
  if (st->kind == STEP_CONNECT && r->client) {
    dx_client_close(r->client, 0, NULL); /* abandons the attempt */
  }
  if (r->skipped)
    step_end(r, false, "timed out after %g s (%zu unrelated, last %s)",
             st->timeout_ms / 1000.0, r->skipped, r->seen);
  else
    step_end(r, false, "timed out after %g s", st->timeout_ms / 1000.0);
}

static int b64val(int ch) {
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9') return ch - '0' + 52;
  if (ch == '+' || ch == '-') return 62;
  if (ch == '/' || ch == '_') return 63;
  return -1;
}

/* Decodes base64 or hex (whitespace ignored) into out (len(in) bytes at
 * most). Returns the length, or -1. */
static long decode(const char *in, bin_form form, uint8_t *out) {
  long n = 0;
  unsigned acc = 0;
  int bits = 0;
  for (const char *p = in; *p; p++) {
    if (strchr(" \t\r\n", *p)) continue;
    if (form == BIN_BASE64 && *p == '=') break;
    int v;
    if (form == BIN_HEX) {
      const char *hx = "0123456789abcdef";
      char lc = (char)(*p >= 'A' && *p <= 'F' ? *p + 32 : *p);
      const char *q = lc ? strchr(hx, lc) : NULL;
      if (!q) return -1;
      v = (int)(q - hx);
      acc = (acc << 4) | (unsigned)v;
      bits += 4;
    } else {
      if ((v = b64val(*p)) < 0) return -1;
      acc = (acc << 6) | (unsigned)v;
      bits += 6;
    }
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (form == BIN_HEX && bits) return -1;
  return n;
}

static void send_binary(runner *r, const step *st, const char *value) {
  uint8_t *buf = NULL;
  long n;
  if (st->form == BIN_FILE) {
    FILE *f = fopen(value, "rb");
    if (!f) return step_end(r, false, "%s: %s", value, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
      len += got;
      if (len == cap) {
        uint8_t *b = len < (16u << 20) ? realloc(buf, cap *= 2) : NULL;
        if (!b) free(buf);
        buf = b;
      }
    }
    fclose(f);
    if (!buf) return step_end(r, false, "%s: too large", value);
    n = (long)len;
  } else {
    buf = malloc(strlen(value) + 1);
    if (!buf) return step_end(r, false, "out of memory");
    n = decode(value, st->form, buf);
    if (n < 0) {
      free(buf);
      return step_end(r, false, "send_binary: not valid %s",
                      st->form == BIN_HEX ? "hex" : "base64");
    }
  }
  int rc = dx_client_send(r->client, DX_OP_BINARY, buf, (size_t)n);
  free(buf);
  r->last_sent = now_ms();
  if (rc) return step_end(r, false, "cannot send: %s", dx_strerror(rc));
  step_end(r, true, "%ld bytes", n);
}

/* A blocking lookup of the URL's host, for the DNS timing only. */
static double dns_time(const char *url) {
  const char *h = strstr(url, "://");
  if (!h) return -1;
  h += 3;
  char host[256];
  size_t n = strcspn(h, ":/?#");
  if (*h == '[' || n == 0 || n >= sizeof host) return 0; /* IPv6 literal */
  memcpy(host, h, n);
  host[n] = 0;
  if (strspn(host, "0123456789.") == n) return 0; /* IPv4 literal */
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
  double t = now_ms();
  int rc = getaddrinfo(host, NULL, &hints, &ai);
  double d = now_ms() - t;
  if (ai) freeaddrinfo(ai);
  return rc ? -1 : d;
}

static void client_events(dx_client_config *cfg, runner *r);

static void do_connect(runner *r, const step *st, const char *url) {
  char err[300];
  char *hdr[STEP_MAX_HEADERS + 1] = {0}, *sp[STEP_MAX_HEADERS + 1] = {0};
  char *cacert = NULL;
  bool ok = true;
  for (size_t i = 0; ok && i < st->nheaders; i++)
    ok = (hdr[i] = expand(r, st->headers[i], err, sizeof err)) != NULL;
  for (size_t i = 0; ok && i < st->nsubprotocols; i++)
    ok = (sp[i] = expand(r, st->subprotocols[i], err, sizeof err)) != NULL;
  if (ok && st->cacert)
    ok = (cacert = expand(r, st->cacert, err, sizeof err)) != NULL;
  if (ok) {
    if (r->client) dx_client_free(r->client);
    r->client = NULL;
    r->open = r->closed = false;
    dx_client_config cfg = {
        .url = url,
        .headers = st->nheaders ? (const char *const *)hdr : NULL,
        .subprotocols = st->nsubprotocols ? (const char *const *)sp : NULL,
        .deflate = true,
        .ca_file = cacert,
        .insecure = st->insecure,
        .connect_timeout_ms = st->timeout_ms,
        .handshake_timeout_ms = st->timeout_ms};
    client_events(&cfg, r);
    cur_res(r)->dns_ms = dns_time(url);
    r->step_t0 = now_ms();
    r->client = dx_client_new(r->loop, &cfg);
    int rc = r->client ? dx_client_connect(r->client) : DX_EINVAL;
    if (!r->client)
      snprintf(err, sizeof err, "invalid URL or header (%s)", url);
    else if (rc)
      snprintf(err, sizeof err, "%s", dx_strerror(rc));
    ok = rc == 0;
  }
  for (size_t i = 0; i < STEP_MAX_HEADERS; i++) {
    free(hdr[i]);
    free(sp[i]);
  }
  free(cacert);
  if (!ok) {
    step_end(r, false, "%s", err);
    return;
  }
  dx_timer_start(r->loop, &r->step_timer, st->timeout_ms, 0, on_step_timeout);
}

static void send_text(runner *r, const char *text) {
  int rc = dx_client_send(r->client, DX_OP_TEXT, text, strlen(text));
  r->last_sent = now_ms();
  if (rc) return step_end(r, false, "cannot send: %s", dx_strerror(rc));
  step_end(r, true, "%zu bytes", strlen(text));
}

static void label(runner *r, const step *st) {
  step_result *s = cur_res(r);
  const char *name = step_kind_name(st->kind);
  if (st->text)
    snprintf(s->label, sizeof s->label, "%s %.150s", name, st->text);
  else if (st->json) {
    char *j = json_dumps(st->json, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(s->label, sizeof s->label, "%s %.150s", name, j ? j : "");
    free(j);
  } else if (st->kind == STEP_SLEEP)
    snprintf(s->label, sizeof s->label, "sleep %gs", st->sleep_ms / 1000.0);
  else if (st->kind == STEP_CLOSE)
    snprintf(s->label, sizeof s->label, "close %u", st->close_code);
  else
    snprintf(s->label, sizeof s->label, "%s", name);
}

static bool need_open(runner *r) {
  if (r->client && r->open) return true;
  if (r->closed)
    step_end(r, false, "not connected (closed with code %u)", r->close_code);
  else
    step_end(r, false, "not connected (no connect step before)");
  return false;
}

static void start_expect(runner *r, const step *st, char *text) {
  char err[300];
  r->skipped = 0;
  r->seen[0] = 0;
  if (st->kind == STEP_EXPECT_JSON) {
    r->want = expand_json(r, st->json, err, sizeof err);
    if (!r->want) return step_end(r, false, "%s", err);
  } else if (st->kind == STEP_EXPECT_MATCH) {
    int rc = regcomp(&r->re, text, REG_EXTENDED | REG_NOSUB);
    if (rc) {
      regerror(rc, &r->re, err, sizeof err);
      return step_end(r, false, "bad regex: %s", err);
    }
    r->re_ok = true;
  } else {
    r->want_text = strdup(text);
    if (!r->want_text) return step_end(r, false, "out of memory");
  }
  if (!r->head && !r->open) return (void)need_open(r);
  dx_timer_start(r->loop, &r->step_timer, st->timeout_ms, 0, on_step_timeout);
  try_expect(r);
}

static void run_step(runner *r, const step *st, char *text) {
  switch (st->kind) {
  case STEP_CONNECT:
    return do_connect(r, st, text);
  case STEP_SEND:
    if (need_open(r)) send_text(r, text);
    return;
  case STEP_SEND_JSON: {
    if (!need_open(r)) return;
    char err[300];
    json_t *j = expand_json(r, st->json, err, sizeof err);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!s) return step_end(r, false, "%s", j ? "out of memory" : err);
    send_text(r, s);
    free(s);
    return;
  }
  case STEP_SEND_BINARY:
    if (need_open(r)) send_binary(r, st, text);
    return;
  case STEP_EXPECT:
  case STEP_EXPECT_MATCH:
  case STEP_EXPECT_JSON:
    return start_expect(r, st, text);
  case STEP_SLEEP:
    dx_timer_start(r->loop, &r->step_timer, st->sleep_ms, 0, on_step_timeout);
    return;
  case STEP_PING: {
    if (!need_open(r)) return;
    const char *p = text ? text : "";
    int rc = dx_client_ping(r->client, p, strlen(p));
    r->last_sent = now_ms();
    if (rc) return step_end(r, false, "cannot ping: %s", dx_strerror(rc));
    dx_timer_start(r->loop, &r->step_timer, st->timeout_ms, 0, on_step_timeout);
    return;
  }
  case STEP_CLOSE: {
    if (!need_open(r)) return;
    int rc = dx_client_close(r->client, (uint16_t)st->close_code, NULL);
    if (rc) return step_end(r, false, "cannot close: %s", dx_strerror(rc));
    dx_timer_start(r->loop, &r->step_timer, st->timeout_ms, 0, on_step_timeout);
    return;
  }
  }
}

static void start_step(runner *r) {
  const step *st = &r->sc->steps[r->cur];
  step_result *s = cur_res(r);
  r->in_step = true;
  r->step_t0 = now_ms();
  s->start_ms = r->step_t0 - r->t0;
  char *text = NULL;
  if (st->text) {
    char err[300];
    text = expand(r, st->text, err, sizeof err);
    if (!text) return step_end(r, false, "%s", err);
    if (st->kind != STEP_SEND_BINARY)
      snprintf(s->label, sizeof s->label, "%s %.150s", step_kind_name(st->kind),
               text);
  }
  run_step(r, st, text);
  free(text);
}

/* ---- the run ------------------------------------------------------------ */

static void on_grace(dx_timer *t) {
  runner *r = (runner *)((char *)t - offsetof(runner, grace_timer));
  dx_loop_stop(r->loop);
}

/* After the last step (or the first failure): close the connection
 * normally if it is open, then stop the loop. */
static void finish(runner *r) {
  if (r->finishing) return;
  r->finishing = true;
  dx_timer_stop(&r->step_timer);
  dx_timer_stop(&r->next_timer);
  if (r->client && dx_client_state(r->client) == DX_OPEN &&
      dx_client_close(r->client, DX_CLOSE_NORMAL, NULL) == 0) {
    dx_timer_start(r->loop, &r->grace_timer, CLOSE_GRACE_MS, 0, on_grace);
    return;
  }
  if (r->client && dx_client_state(r->client) == DX_CLOSING) {
    dx_timer_start(r->loop, &r->grace_timer, CLOSE_GRACE_MS, 0, on_grace);
    return;
  }
  dx_loop_stop(r->loop);
}

static void client_events(dx_client_config *cfg, runner *r) {
  cfg->ud = r;
  cfg->on_open = on_open;
  cfg->on_message = on_message;
  cfg->on_close = on_close;
  cfg->on_error = on_error;
  cfg->on_pong = on_pong;
}

int probe_run(dx_loop *loop, const scenario *sc, probe_result *res) {
  memset(res, 0, sizeof *res);
  res->steps = calloc(sc->nsteps, sizeof *res->steps);
  if (!res->steps) return -1;
  for (size_t i = 0; i < sc->nsteps; i++)
    res->steps[i].tcp_ms = res->steps[i].tls_ms = res->steps[i].upgrade_ms =
        res->steps[i].dns_ms = res->steps[i].open_ms =
            res->steps[i].response_ms = -1;
  res->ok = true;
  runner *r = calloc(1, sizeof *r);
  if (!r) return -1;
  r->loop = loop;
  r->sc = sc;
  r->res = res;
  r->tailp = &r->head;
  r->t0 = now_ms();
  for (r->cur = 0; r->cur < sc->nsteps; r->cur++)
    label(r, &sc->steps[r->cur]);
  r->cur = 0;
  dx_timer_start(loop, &r->next_timer, 0, 0, on_next);
  dx_loop_run(loop);
  res->duration_ms = now_ms() - r->t0;
  for (size_t i = 0; i < sc->nsteps; i++)
    if (sc->steps[i].kind == STEP_CONNECT &&
        res->steps[i].status == STEP_PASSED)
      res->connected = true;
  dx_timer_stop(&r->step_timer);
  dx_timer_stop(&r->next_timer);
  dx_timer_stop(&r->grace_timer);
  dx_client_free(r->client);
  dx_loop_run_once(loop, 0); /* the client's deferred free */
  clear_expect(r);
  while (r->head) {
    inmsg *m = r->head;
    r->head = m->next;
    free(m);
  }
  for (size_t i = 0; i < r->nvars; i++) {
    free(r->var_name[i]);
    free(r->var_value[i]);
  }
  free(r);
  return 0;
}

void probe_result_free(probe_result *res) {
  free(res->steps);
  res->steps = NULL;
}
