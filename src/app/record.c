/*
 * duplex record / duplex proxy — a WebSocket proxy for one session: a
 * dx_server route takes the client, a dx_client opens the upstream, and
 * messages are relayed both ways unchanged (text/binary, close codes).
 * record writes what happened as a probe scenario (scenario.h); both take
 * fault-injection flags.
 *
 * Threads: the dx_server runs on a thread of its own; its handlers only
 * copy each event and post it to the main loop (dx_loop_post), where the
 * upstream client, the fault queues and the recording live. The main loop
 * answers the client through the THREAD-SAFE dx_server_send/close.
 * Public headers only.
 */
#include "app.h"

#include <duplex/client.h>
#include <duplex/server.h>

#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 32
#define MAX_STEPS 100000
/* Client messages held until the upstream is open. */
#define PENDING_MAX_BYTES ((size_t)16 << 20)
/* When one side has closed: how long the other may take to answer the
 * close once the messages before it went, and how long an upstream still
 * connecting may take to open (the messages and the close wait for it). */
#define CLOSE_WAIT_MS 2000
#define OPEN_WAIT_MS 10000
/* A queue that needs longer than this (+ --latency + --jitter) to drain
 * after a close is not waited for: dropped, with a line on stderr. */
#define DRAIN_MAX_MS 60000

enum { RC_OK = 0, RC_FAIL = 1, RC_USAGE = 2 };

static const char *record_help =
    "usage: duplex record --listen HOST:PORT --upstream URL -o FILE [options]\n"
    "       duplex proxy  --listen HOST:PORT --upstream URL [options]\n"
    "\n"
    "A WebSocket proxy for one session: accepts a client on --listen (the\n"
    "upstream URL's path and /), opens --upstream, relays messages both\n"
    "ways, and exits when the session ends. record writes the session as a\n"
    "probe scenario (see duplex probe).\n"
    "\n"
    "  -l, --listen HOST:PORT  where to listen (PORT 0: a free one; the port\n"
    "                        is printed on stderr)\n"
    "  -u, --upstream URL    ws://... or wss://...\n"
    "  -o, --output FILE     the scenario (record)\n"
    "      --ignore FIELD    leave this JSON field out of expect_json\n"
    "                        (repeatable: ids and times that change)\n"
    "      --capture FIELD   capture this field of server messages and use\n"
    "                        ${FIELD} where the client sends its value later\n"
    "      --subprotocol P   accept subprotocol P from the client "
    "(repeatable,\n"
    "                        preference order) and offer the chosen one\n"
    "                        upstream\n"
    "      --insecure, --cacert FILE   upstream TLS\n"
    "Faults (counted and printed at exit):\n"
    "      --latency MS      delay every message by MS\n"
    "      --jitter MS       plus a random 0..MS\n"
    "      --throttle BYTES_PER_S  a link of this rate, each way: a message\n"
    "                        of N bytes arrives N/rate after the ones\n"
    "                        before it went through\n"
    "      --cut-after-messages N  after N relayed messages, cut both sides\n"
    "                        (client: close 1011; upstream: TCP dropped)\n"
    "      --cut-after SECONDS     the same after SECONDS\n"
    "      --half-open-after N     after N relayed messages, stop relaying\n"
    "                        (nothing is closed)\n"
    "      --drop-pongs      swallow pongs: pings from either side go\n"
    "                        unanswered (their keepalive sees a dead peer)\n"
    "  -h, --help            this text\n"
    "\n"
    "Exit status: 0 session relayed (and written), 1 upstream failure or the\n"
    "file could not be written, 2 usage.\n";

/* ---- events from the server thread -------------------------------------- */

typedef enum ev_type { EV_OPEN, EV_MESSAGE, EV_CLOSE } ev_type;

typedef struct ev {
  struct rec *r;
  ev_type type;
  uint64_t id;
  dx_opcode op;
  uint16_t code;
  size_t len;
  char **headers;  /* EV_OPEN: forwarded request headers, NULL-terminated */
  char proto[128]; /* EV_OPEN: the subprotocol chosen for the client */
  uint8_t data[];
} ev;

/* One recorded step. */
typedef struct rstep {
  char *line; /* the YAML, already formatted (may span lines) */
} rstep;

/* A delayed message (latency, jitter, throttle). */
typedef struct qmsg {
  struct qmsg *next;
  uint64_t due; /* dx_loop_now ms */
  dx_opcode op;
  size_t len;
  uint8_t data[];
} qmsg;

typedef struct pipe_q {
  qmsg *head, **tailp;
  uint64_t last_due;
  double link_free; /* --throttle: when the link is free again (ms) */
  dx_timer timer;
  bool upstream; /* direction: to the upstream, or to the client */
  /* The other side closed: this close goes once the queue has drained. */
  bool close_pending;
  uint16_t close_code;
  char close_reason[124];
  struct rec *r;
} pipe_q;

typedef struct rec {
  /* options */
  const char *listen_host;
  int listen_port;
  const char *upstream;
  const char *output;
  const char *ignore[MAX_LIST];
  size_t nignore;
  const char *capture[MAX_LIST];
  size_t ncapture;
  const char *cacert;
  const char *protos[MAX_LIST + 1]; /* --subprotocol, NULL-terminated */
  size_t nprotos;
  char chosen[128]; /* the client's subprotocol, offered upstream */
  bool insecure, proxy_only;
  unsigned latency, jitter;
  double throttle;
  unsigned long cut_after_messages, half_open_after;
  unsigned cut_after_ms;
  bool drop_pongs;
  /* runtime */
  dx_loop *loop;
  dx_server *srv;
  atomic_bool busy; /* a session is on: other clients get 503 */
  uint64_t client_id;
  bool client_open, up_open, up_started, up_closed, ended, cut, half_open;
  bool stopping;
  bool closing_client;
  /* the proxy closed the client: not recorded */ /* the server thread is
                                                     gone: posted events are
                                                     freed */
  dx_client *up;
  qmsg *pending_head, **pending_tailp; /* for the upstream before it opens */
  size_t pending_bytes;
  pipe_q to_up, to_client;
  dx_timer cut_timer, end_timer;
  dx_io sig_io;
  int status;
  /* recording */
  rstep *steps;
  size_t nsteps, cap;
  double last_client_ms;
  bool binary_seen; /* the next expect must skip a binary message */
  char *cap_value[MAX_LIST];
  /* fault counters */
  unsigned long relayed, delayed, throttled, dropped_half_open, cuts;
  unsigned long pings_unanswered; /* --drop-pongs */
  double delay_total_ms;
} rec;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("duplex record: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---- the recording ------------------------------------------------------ */

static void add_step(rec *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void add_step(rec *r, const char *fmt, ...) {
  if (r->proxy_only || r->nsteps >= MAX_STEPS) return;
  if (r->nsteps == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 64;
    rstep *s = realloc(r->steps, cap * sizeof *s);
    if (!s) return;
    r->steps = s;
    r->cap = cap;
  }
  va_list ap;
  va_start(ap, fmt);
  char *line = NULL;
  if (vasprintf(&line, fmt, ap) < 0) line = NULL;
  va_end(ap);
  if (line) r->steps[r->nsteps++].line = line;
}

/* A YAML double-quoted scalar: JSON string syntax, which YAML reads. */
static char *yaml_quote(const char *s, size_t len) {
  json_t *j = json_stringn(s, len);
  char *out = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
  json_decref(j);
  return out;
}

static bool ignored(const rec *r, const char *key) {
  for (size_t i = 0; i < r->nignore; i++)
    if (!strcmp(r->ignore[i], key)) return true;
  return false;
}

/* Drops ignored fields, and the fields captured from this message, at any
 * depth (fresh[i]: capture i was taken here). */
static void strip(rec *r, json_t *j, const bool *fresh) {
  if (json_is_object(j)) {
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(j, tmp, k, v) {
      bool cap = false;
      for (size_t i = 0; i < r->ncapture; i++)
        cap |= fresh[i] && !strcmp(r->capture[i], k);
      if (ignored(r, k) || cap)
        json_object_del(j, k);
      else
        strip(r, v, fresh);
    }
  } else if (json_is_array(j)) {
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) strip(r, v, fresh);
  }
}

/* The dotted path of the first field named key, into path. */
static bool find_path(json_t *j, const char *key, char *path, size_t n,
                      json_t **out) {
  if (json_is_object(j)) {
    json_t *v = json_object_get(j, key);
    if (v) {
      int w = snprintf(path, n, "%s", key);
      if (w < 0 || (size_t)w >= n) return false; /* path too long */
      *out = v;
      return true;
    }
    const char *k;
    json_object_foreach(j, k, v) {
      char sub[256];
      if (find_path(v, key, sub, sizeof sub, out)) {
        int w = snprintf(path, n, "%s.%s", k, sub);
        return w >= 0 && (size_t)w < n; /* a path too long is not used */
      }
    }
  } else if (json_is_array(j)) {
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
      char sub[256];
      if (find_path(v, key, sub, sizeof sub, out)) {
        int w = snprintf(path, n, "%zu.%s", i, sub);
        return w >= 0 && (size_t)w < n;
      }
    }
  }
  return false;
}

/* Client values equal to a captured one become ${FIELD}. */
static void substitute(rec *r, json_t *j) {
  if (json_is_object(j)) {
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
      if (json_is_string(v))
        for (size_t i = 0; i < r->ncapture; i++)
          if (r->cap_value[i] &&
              !strcmp(json_string_value(v), r->cap_value[i])) {
            char ref[140];
            snprintf(ref, sizeof ref, "${%s}", r->capture[i]);
            json_string_set(v, ref);
            break;
          }
      substitute(r, v);
    }
  } else if (json_is_array(j)) {
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
      if (json_is_string(v))
        for (size_t c = 0; c < r->ncapture; c++)
          if (r->cap_value[c] &&
              !strcmp(json_string_value(v), r->cap_value[c])) {
            char ref[140];
            snprintf(ref, sizeof ref, "${%s}", r->capture[c]);
            json_string_set(v, ref);
            break;
          }
      substitute(r, v);
    }
  }
}

static json_t *as_json(dx_opcode op, const uint8_t *data, size_t len) {
  if (op != DX_OP_TEXT) return NULL;
  json_t *j = json_loadb((const char *)data, len, 0, NULL);
  if (j && !json_is_object(j) && !json_is_array(j)) {
    json_decref(j);
    j = NULL;
  }
  return j;
}

static char *b64(const uint8_t *p, size_t n) {
  static const char t[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *o = malloc((n + 2) / 3 * 4 + 1), *q = o;
  if (!o) return NULL;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16 |
                 (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                 (i + 2 < n ? p[i + 2] : 0);
    *q++ = t[v >> 18 & 63];
    *q++ = t[v >> 12 & 63];
    *q++ = i + 1 < n ? t[v >> 6 & 63] : '=';
    *q++ = i + 2 < n ? t[v & 63] : '=';
  }
  *q = 0;
  return o;
}

static void record_client(rec *r, dx_opcode op, const uint8_t *data,
                          size_t len) {
  r->last_client_ms = now_ms();
  if (r->proxy_only) return;
  if (op == DX_OP_BINARY) {
    char *s = b64(data, len);
    if (s) add_step(r, "  - send_binary: %s\n", s);
    free(s);
    return;
  }
  json_t *j = as_json(op, data, len);
  if (j) {
    substitute(r, j);
    char *s = json_dumps(j, JSON_COMPACT);
    if (s) add_step(r, "  - send_json: %s\n", s);
    free(s);
    json_decref(j);
    return;
  }
  /* Plain text: captured values inside it become ${FIELD} too. */
  char *text = strndup((const char *)data, len);
  if (!text) return;
  for (size_t i = 0; i < r->ncapture; i++) {
    const char *v = r->cap_value[i];
    char *at = v && *v ? strstr(text, v) : NULL;
    if (!at) continue;
    char *t2 = NULL;
    if (asprintf(&t2, "%.*s${%s}%s", (int)(at - text), text, r->capture[i],
                 at + strlen(v)) >= 0) {
      free(text);
      text = t2;
    }
  }
  char *q = yaml_quote(text, strlen(text));
  if (q) add_step(r, "  - send: %s\n", q);
  free(q);
  free(text);
}

static void record_server(rec *r, dx_opcode op, const uint8_t *data,
                          size_t len) {
  if (r->proxy_only) return;
  double delay = now_ms() - r->last_client_ms;
  double timeout = delay * 2 / 1000 + 1;
  if (op == DX_OP_BINARY) {
    add_step(r,
             "  # a binary message from the server (%zu bytes): not "
             "checked\n",
             len);
    r->binary_seen = true;
    return;
  }
  char opts[1024];
  int k = snprintf(opts, sizeof opts, "    timeout: %.3fs\n", timeout);
  if (r->binary_seen)
    k += snprintf(opts + k, sizeof opts - (size_t)k,
                  "    skip_unrelated: true\n");
  r->binary_seen = false;
  json_t *j = as_json(op, data, len);
  if (!j) {
    char *q = yaml_quote((const char *)data, len);
    if (q) add_step(r, "  - expect: %s\n%s", q, opts);
    free(q);
    return;
  }
  char caps[1024] = "";
  int ck = 0;
  bool fresh[MAX_LIST] = {false};
  for (size_t i = 0; i < r->ncapture; i++) {
    char path[256];
    json_t *v;
    if (!find_path(j, r->capture[i], path, sizeof path, &v)) continue;
    /* The value captured before, seen again: checked as ${FIELD}. */
    if (r->cap_value[i] && json_is_string(v) &&
        !strcmp(json_string_value(v), r->cap_value[i]))
      continue;
    fresh[i] = true;
    ck += snprintf(caps + ck, sizeof caps - (size_t)ck, "%s%s: %s",
                   ck ? ", " : "", r->capture[i], path);
    free(r->cap_value[i]);
    r->cap_value[i] = json_is_string(v)
                          ? strdup(json_string_value(v))
                          : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
  }
  strip(r, j, fresh);
  substitute(r, j);
  char *s = json_dumps(j, JSON_COMPACT);
  if (s)
    add_step(r, "  - expect_json: %s\n%s%s%s%s", s, opts,
             ck ? "    capture: {" : "", caps, ck ? "}\n" : "");
  free(s);
  json_decref(j);
}

static int write_scenario(rec *r) {
  FILE *f = fopen(r->output, "w");
  if (!f) {
    say("cannot write %s: %s", r->output, strerror(errno));
    return -1;
  }
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char ts[32];
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  fprintf(f,
          "# Recorded by duplex record at %s (timeouts: the observed "
          "delay x 2 + 1 s).\n",
          ts);
  char *url = yaml_quote(r->upstream, strlen(r->upstream));
  fprintf(f, "steps:\n  - connect: %s\n", url ? url : "");
  free(url);
  if (r->chosen[0]) fprintf(f, "    subprotocol: %s\n", r->chosen);
  if (r->insecure) fputs("    insecure: true\n", f);
  if (r->cacert) {
    char *c = yaml_quote(r->cacert, strlen(r->cacert));
    fprintf(f, "    cacert: %s\n", c ? c : "");
    free(c);
  }
  for (size_t i = 0; i < r->nsteps; i++)
    fputs(r->steps[i].line, f);
  if (fclose(f)) {
    say("cannot write %s: %s", r->output, strerror(errno));
    return -1;
  }
  say("%zu steps written to %s", r->nsteps + 1, r->output);
  return 0;
}

/* ---- relaying with faults ------------------------------------------------ */

static void end_session(rec *r);
static void queue_drop(struct pipe_q *q, const char *why);
static void pending_drop(rec *r, const char *why);

static void deliver(rec *r, bool upstream, dx_opcode op, const uint8_t *data,
                    size_t len) {
  if (upstream) {
    int rc = r->up ? dx_client_send(r->up, op, data, len) : DX_ECLOSED;
    if (rc && rc != DX_ECLOSED) say("upstream send: %s", dx_strerror(rc));
  } else if (r->client_open) {
    dx_server_send(r->srv, r->client_id, op, data, len);
  }
}

static void cut(rec *r, const char *why) {
  if (r->cut) return;
  r->cut = true;
  r->cuts++;
  say("fault: cut (%s)", why);
  if (r->client_open)
    r->closing_client = true,
    dx_server_close(r->srv, r->client_id, DX_CLOSE_INTERNAL_ERROR,
                    "cut by duplex proxy");
  /* The upstream sees the TCP connection drop, without a close frame; what
   * was still queued for it is lost with the connection. */
  r->to_up.close_pending = r->to_client.close_pending = false;
  queue_drop(&r->to_up, "cut");
  pending_drop(r, "cut");
  dx_client_free(r->up);
  r->up = NULL;
  r->up_open = false;
  r->up_closed = true;
}

static void on_queue_timer(dx_timer *t);

static size_t queue_count(const qmsg *m) {
  size_t n = 0;
  for (; m; m = m->next)
    n++;
  return n;
}

/* Frees what waits in q (its receiver is gone, or out of time). */
static void queue_drop(pipe_q *q, const char *why) {
  size_t n = queue_count(q->head);
  for (qmsg *m = q->head, *nx; m; m = nx)
    nx = m->next, free(m);
  q->head = NULL;
  q->tailp = &q->head;
  dx_timer_stop(&q->timer);
  if (n)
    say("dropped %zu message%s queued for the %s (%s)", n, n == 1 ? "" : "s",
        q->upstream ? "upstream" : "client", why);
}

static void pending_drop(rec *r, const char *why) {
  size_t n = queue_count(r->pending_head);
  for (qmsg *m = r->pending_head, *nx; m; m = nx)
    nx = m->next, free(m);
  r->pending_head = NULL;
  r->pending_tailp = &r->pending_head;
  r->pending_bytes = 0;
  if (n)
    say("dropped %zu client message%s waiting for the upstream to open (%s)",
        n, n == 1 ? "" : "s", why);
}

/* The close in q's direction, the messages before it delivered. */
static void send_close(rec *r, pipe_q *q) {
  q->close_pending = false;
  if (q->upstream) {
    if (r->up && !r->up_closed && dx_client_state(r->up) == DX_OPEN)
      dx_client_close(r->up, q->close_code, q->close_reason);
  } else if (r->client_open) {
    r->closing_client = true;
    dx_server_close(r->srv, r->client_id, q->close_code, q->close_reason);
  }
}

static void queue_pump(pipe_q *q) {
  rec *r = q->r;
  uint64_t now = dx_loop_now(r->loop);
  while (q->head && q->head->due <= now) {
    qmsg *m = q->head;
    q->head = m->next;
    if (!q->head) q->tailp = &q->head;
    deliver(r, q->upstream, m->op, m->data, m->len);
    free(m);
  }
  if (q->head)
    dx_timer_start(r->loop, &q->timer, q->head->due - now, 0, on_queue_timer);
  else if (q->close_pending && !(q->upstream && r->up && !r->up_open &&
                                 !r->up_closed)) /* not while connecting */
    send_close(r, q);
}

/* One side closed: pass the close on in q's direction, after the messages
 * still queued (or, to the upstream, still waiting for it to open). */
static void close_after(pipe_q *q, uint16_t code, const char *reason) {
  q->close_pending = true;
  q->close_code = code;
  snprintf(q->close_reason, sizeof q->close_reason, "%s", reason ? reason : "");
  queue_pump(q);
}

static void on_queue_timer(dx_timer *t) {
  pipe_q *q = (pipe_q *)((char *)t - offsetof(pipe_q, timer));
  queue_pump(q);
}

/* Relays one message: counted, then subject to the faults. */
static void relay(rec *r, bool upstream, dx_opcode op, const uint8_t *data,
                  size_t len) {
  if (r->cut) return;
  if (r->half_open) {
    r->dropped_half_open++;
    return;
  }
  r->relayed++;
  pipe_q *q = upstream ? &r->to_up : &r->to_client;
  uint64_t now = dx_loop_now(r->loop);
  uint64_t due = now;
  if (r->latency || r->jitter) {
    unsigned d =
        r->latency + (r->jitter ? (unsigned)rand() % (r->jitter + 1) : 0);
    due += d;
    r->delayed++;
    r->delay_total_ms += d;
  }
  if (r->throttle > 0) {
    /* A link of this rate, one message after the other: a message has
     * arrived when its last byte has, len/rate after the link was free
     * for it. Kept in fractions of ms, so that small messages add up. */
    double start = q->link_free > (double)due ? q->link_free : (double)due;
    q->link_free = start + (double)len * 1000 / r->throttle;
    uint64_t done = (uint64_t)(q->link_free + 0.5);
    if (done > due) r->throttled++, due = done;
  }
  if (due < q->last_due) due = q->last_due; /* keep order */
  q->last_due = due;
  if (due <= now && !q->head) {
    deliver(r, upstream, op, data, len);
  } else {
    qmsg *m = malloc(sizeof *m + len);
    if (!m) return;
    m->next = NULL;
    m->due = due;
    m->op = op;
    m->len = len;
    memcpy(m->data, data, len);
    *q->tailp = m;
    q->tailp = &m->next;
    queue_pump(q);
  }
  if (r->cut_after_messages && r->relayed >= r->cut_after_messages) {
    char why[64];
    snprintf(why, sizeof why, "after %lu messages", r->relayed);
    queue_pump(q);
    cut(r, why);
    return;
  }
  if (r->half_open_after && r->relayed >= r->half_open_after && !r->half_open) {
    r->half_open = true;
    say("fault: half-open after %lu messages (no more relaying)", r->relayed);
  }
}

/* ---- the upstream ---------------------------------------------------------
 */

static void up_open(dx_client *c, void *ud) {
  (void)c;
  rec *r = ud;
  r->up_open = true;
  r->last_client_ms = now_ms();
  while (r->pending_head) {
    qmsg *m = r->pending_head;
    r->pending_head = m->next;
    relay(r, true, m->op, m->data, m->len);
    free(m);
  }
  r->pending_tailp = &r->pending_head;
  r->pending_bytes = 0;
  /* The client closed meanwhile: its close follows those messages. */
  if (r->to_up.close_pending) {
    queue_pump(&r->to_up);
    end_session(r); /* the end timer, now that the queue is known */
  }
}

static void up_message(dx_client *c, dx_opcode op, uint8_t *data, size_t len,
                       void *ud) {
  (void)c;
  rec *r = ud;
  if (r->cut) return;
  record_server(r, op, data, len);
  relay(r, false, op, data, len);
}

static void up_error(dx_client *c, const dx_client_error *e, void *ud) {
  (void)c;
  rec *r = ud;
  say("upstream: %s", e->message);
  if (!r->up_open) {
    r->status = RC_FAIL;
    r->up_closed = true;
    r->to_up.close_pending = false;
    pending_drop(r, "upstream failed");
    if (r->client_open)
      r->closing_client = true,
      dx_server_close(r->srv, r->client_id, DX_CLOSE_BAD_GATEWAY,
                      "upstream failed");
    end_session(r);
  }
}

static void up_close(dx_client *c, uint16_t code, const char *reason,
                     size_t len, bool clean, void *ud) {
  (void)c;
  (void)clean;
  rec *r = ud;
  r->up_open = false;
  r->up_closed = true;
  r->to_up.close_pending = false;
  queue_drop(&r->to_up, "the upstream closed");
  if (r->client_open && !r->cut) {
    char why[124];
    snprintf(why, sizeof why, "%.*s", (int)(len > 120 ? 120 : len), reason);
    uint16_t out = code == DX_CLOSE_ABNORMAL || code == DX_CLOSE_NO_STATUS
                       ? DX_CLOSE_BAD_GATEWAY
                       : code;
    /* After the messages still queued for the client. */
    close_after(&r->to_client, out, why);
  }
  end_session(r);
}

static void up_ping(dx_client *c, const uint8_t *data, size_t len, void *ud) {
  (void)c, (void)data, (void)len;
  rec *r = ud;
  if (r->drop_pongs) r->pings_unanswered++;
}

static void srv_ping(dx_conn *c, const uint8_t *data, size_t len, void *ud) {
  (void)c, (void)data, (void)len;
  rec *r = ud;
  if (r->drop_pongs) r->pings_unanswered++;
}

static void start_upstream(rec *r, char **headers) {
  dx_client_config cfg = {.url = r->upstream,
                          .headers = (const char *const *)headers,
                          .deflate = true,
                          .subprotocols = NULL,
                          .ca_file = r->cacert,
                          .insecure = r->insecure,
                          .ud = r,
                          .on_open = up_open,
                          .on_message = up_message,
                          .on_close = up_close,
                          .on_error = up_error,
                          .on_ping = up_ping,
                          .manual_pong = r->drop_pongs};
  const char *offer[2] = {r->chosen, NULL};
  if (r->chosen[0]) cfg.subprotocols = offer;
  r->up_started = true;
  r->up = dx_client_new(r->loop, &cfg);
  if (!r->up) {
    cfg.headers = NULL; /* a header dx_client refuses: without them */
    r->up = dx_client_new(r->loop, &cfg);
  }
  if (!r->up || dx_client_connect(r->up)) {
    say("cannot connect to %s", r->upstream);
    r->status = RC_FAIL;
    r->up_closed = true;
    r->closing_client = true,
    dx_server_close(r->srv, r->client_id, DX_CLOSE_BAD_GATEWAY,
                    "upstream failed");
  }
}

/* ---- events from the server thread, on the main loop -----------------------
 */

static void on_end_timer(dx_timer *t) {
  rec *r = (rec *)((char *)t - offsetof(rec, end_timer));
  pipe_q *qs[2] = {&r->to_up, &r->to_client};
  for (int i = 0; i < 2; i++) {
    if (qs[i]->close_pending)
      say("the close for the %s was not passed on (its queue did not drain "
          "in time)",
          qs[i]->upstream ? "upstream" : "client");
    queue_drop(qs[i], "the session ended before they went");
  }
  pending_drop(r, "the session ended before it opened");
  dx_loop_stop(r->loop);
}

/* What q still needs to drain (its last message is due then), in ms. */
static uint64_t drain_ms(const rec *r, const pipe_q *q) {
  uint64_t now = dx_loop_now(r->loop);
  return q->head && q->last_due > now ? q->last_due - now : 0;
}

/* One side has closed: the close goes the other way after that direction's
 * queue drained, then the other side answers it; both bounded by the end
 * timer. Both sides done: stop. */
static void end_session(rec *r) {
  if (r->client_open && !r->up_closed) return;
  if (r->ended) return;
  if (!r->client_open && r->up_closed) {
    r->ended = true;
    dx_timer_start(r->loop, &r->end_timer, 0, 0, on_end_timer);
    return;
  }
  pipe_q *q = r->client_open ? &r->to_client : &r->to_up;
  uint64_t drain = drain_ms(r, q),
           max = DRAIN_MAX_MS + (uint64_t)r->latency + r->jitter;
  if (drain > max) {
    say("the %s queue needs %llu ms to drain: waiting %llu ms at most",
        q->upstream ? "upstream" : "client", (unsigned long long)drain,
        (unsigned long long)max);
    drain = max;
  }
  uint64_t wait = drain + CLOSE_WAIT_MS;
  if (q->upstream && r->up && !r->up_open) wait += OPEN_WAIT_MS;
  dx_timer_start(r->loop, &r->end_timer, wait, 0, on_end_timer);
}

static void handle_ev(void *arg) {
  ev *e = arg;
  rec *r = e->r;
  if (r->stopping) { /* after the server thread ended: just free */
    for (char **h = e->headers; h && *h; h++)
      free(*h);
    free(e->headers);
    free(e);
    return;
  }
  switch (e->type) {
  case EV_OPEN:
    r->client_id = e->id;
    snprintf(r->chosen, sizeof r->chosen, "%s", e->proto);
    r->client_open = true;
    r->last_client_ms = now_ms();
    say("client connected; opening %s", r->upstream);
    start_upstream(r, e->headers);
    for (char **h = e->headers; h && *h; h++)
      free(*h);
    free(e->headers);
    break;
  case EV_MESSAGE:
    if (r->cut) break;
    record_client(r, e->op, e->data, e->len);
    if (r->up_open) {
      relay(r, true, e->op, e->data, e->len);
    } else if (!r->up_closed) {
      if (r->pending_bytes + e->len > PENDING_MAX_BYTES) {
        say("upstream not open yet: a message of %zu bytes dropped (%zu "
            "buffered, %zu at most)",
            e->len, r->pending_bytes, PENDING_MAX_BYTES);
        break;
      }
      qmsg *m = malloc(sizeof *m + e->len);
      if (!m) break;
      r->pending_bytes += e->len;
      m->next = NULL;
      m->op = e->op;
      m->len = e->len;
      memcpy(m->data, e->data, e->len);
      *r->pending_tailp = m;
      r->pending_tailp = &m->next;
    }
    break;
  case EV_CLOSE:
    r->client_open = false;
    if (!r->cut && !r->closing_client && e->code != DX_CLOSE_ABNORMAL &&
        e->code != DX_CLOSE_NO_STATUS)
      add_step(r, "  - close: %u\n", e->code);
    /* What was still on its way to the client is lost with it. */
    r->to_client.close_pending = false;
    queue_drop(&r->to_client, "the client closed");
    if (r->up && !r->up_closed) {
      uint16_t code =
          e->code == DX_CLOSE_ABNORMAL || e->code == DX_CLOSE_NO_STATUS
              ? DX_CLOSE_NORMAL
              : e->code;
      /* After the messages before it: queued (--latency, --throttle...) or
       * waiting for the upstream to open. */
      close_after(&r->to_up, code, (const char *)e->data);
    }
    end_session(r);
    break;
  }
  free(e);
}

static ev *new_ev(rec *r, ev_type t, dx_conn *c, size_t len) {
  ev *e = calloc(1, sizeof *e + len);
  if (!e) return NULL;
  e->r = r;
  e->type = t;
  e->id = dx_conn_id(c);
  e->len = len;
  return e;
}

static void post(rec *r, ev *e) {
  if (e && dx_loop_post(r->loop, handle_ev, e)) free(e);
}

/* Request headers worth passing on (auth, cookies, custom ones); the ones
 * the handshake writes itself stay behind. */
static bool forwardable(const dx_header *h) {
  static const char *const skip[] = {"host",
                                     "upgrade",
                                     "connection",
                                     "origin",
                                     "sec-websocket-",
                                     "content-length",
                                     "transfer-encoding",
                                     "user-agent",
                                     NULL};
  for (int i = 0; skip[i]; i++)
    if (h->name_len >= strlen(skip[i]) &&
        !strncasecmp(h->name, skip[i], strlen(skip[i])) &&
        (skip[i][strlen(skip[i]) - 1] == '-' || h->name_len == strlen(skip[i])))
      return false;
  return true;
}

static int srv_accept(dx_conn *c, const dx_upgrade_request *req, void *ud) {
  rec *r = ud;
  bool was = false;
  if (!atomic_compare_exchange_strong(&r->busy, &was, true))
    return 503; /* one session at a time */
  ev *e = new_ev(r, EV_OPEN, c, 0);
  if (!e) return 503;
  e->headers = calloc(req->num_headers + 1, sizeof *e->headers);
  size_t n = 0;
  for (size_t i = 0; e->headers && i < req->num_headers && n < MAX_LIST; i++)
    if (forwardable(&req->headers[i]) &&
        asprintf(&e->headers[n], "%.*s: %.*s", (int)req->headers[i].name_len,
                 req->headers[i].name, (int)req->headers[i].value_len,
                 req->headers[i].value) >= 0)
      n++;
  /* Posted from on_open; if the handshake breaks first, srv_close frees
   * it. */
  *(ev **)dx_conn_user(c) = e;
  return 0;
}

static void srv_open(dx_conn *c, void *ud) {
  rec *r = ud;
  ev **slot = dx_conn_user(c);
  const char *sp = dx_conn_subprotocol(c);
  if (*slot && sp) snprintf((*slot)->proto, sizeof(*slot)->proto, "%s", sp);
  post(r, *slot);
  *slot = NULL;
}

static void srv_message(dx_conn *c, dx_opcode op, uint8_t *data, size_t len,
                        void *ud) {
  rec *r = ud;
  ev *e = new_ev(r, EV_MESSAGE, c, len);
  if (!e) return;
  e->op = op;
  memcpy(e->data, data, len);
  post(r, e);
}

static void srv_close(dx_conn *c, uint16_t code, const char *reason, size_t len,
                      void *ud) {
  rec *r = ud;
  ev **slot = dx_conn_user(c);
  if (*slot) { /* the handshake failed after the accept hook */
    for (char **h = (*slot)->headers; h && *h; h++)
      free(*h);
    free((*slot)->headers);
    free(*slot);
    *slot = NULL;
    atomic_store(&r->busy, false);
    return;
  }
  if (len > 123) len = 123;
  ev *e = new_ev(r, EV_CLOSE, c, len + 1);
  if (!e) return;
  e->code = code;
  if (len) memcpy(e->data, reason, len);
  e->data[len] = 0;
  post(r, e);
}

static void *server_thread(void *arg) {
  dx_server_run(arg);
  return NULL;
}

static void on_signal(dx_io *io, unsigned events) {
  (void)events;
  rec *r = (rec *)((char *)io - offsetof(rec, sig_io));
  struct signalfd_siginfo si;
  while (read(io->fd, &si, sizeof si) == (ssize_t)sizeof si) {
    say("interrupted: ending the session");
    r->to_up.close_pending = r->to_client.close_pending = false;
    if (r->client_open)
      r->closing_client = true,
      dx_server_close(r->srv, r->client_id, DX_CLOSE_GOING_AWAY, NULL);
    if (r->up && dx_client_state(r->up) == DX_OPEN)
      dx_client_close(r->up, DX_CLOSE_GOING_AWAY, NULL);
    dx_timer_start(r->loop, &r->end_timer, 1000, 0, on_end_timer);
  }
}

/* ---- options ----------------------------------------------------------------
 */

/* All usage errors exit RC_USAGE (= APP_USAGE). */
#define usage_error(...) app_usage_error("record", __VA_ARGS__)

enum {
  O_IGNORE = 256,
  O_SUBPROTOCOL,
  O_CAPTURE,
  O_INSECURE,
  O_CACERT,
  O_LATENCY,
  O_JITTER,
  O_THROTTLE,
  O_CUT_MSGS,
  O_CUT_AFTER,
  O_HALF_OPEN,
  O_DROP_PONGS,
};

static int parse_options(rec *r, int argc, char **argv) {
  static const struct option opts[] = {
      {"listen", required_argument, NULL, 'l'},
      {"upstream", required_argument, NULL, 'u'},
      {"output", required_argument, NULL, 'o'},
      {"ignore", required_argument, NULL, O_IGNORE},
      {"subprotocol", required_argument, NULL, O_SUBPROTOCOL},
      {"capture", required_argument, NULL, O_CAPTURE},
      {"insecure", no_argument, NULL, O_INSECURE},
      {"cacert", required_argument, NULL, O_CACERT},
      {"latency", required_argument, NULL, O_LATENCY},
      {"jitter", required_argument, NULL, O_JITTER},
      {"throttle", required_argument, NULL, O_THROTTLE},
      {"cut-after-messages", required_argument, NULL, O_CUT_MSGS},
      {"cut-after", required_argument, NULL, O_CUT_AFTER},
      {"half-open-after", required_argument, NULL, O_HALF_OPEN},
      {"drop-pongs", no_argument, NULL, O_DROP_PONGS},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  unsigned long n;
  static char host[64];
  while ((ch = getopt_long(argc, argv, "l:u:o:h", opts, NULL)) != -1) {
    switch (ch) {
    case 'l': {
      const char *colon = strrchr(optarg, ':');
      if (!colon || (size_t)(colon - optarg) >= sizeof host ||
          !app_parse_ulong(colon + 1, 65535, &n))
        return usage_error("--listen '%s': expected HOST:PORT", optarg);
      memcpy(host, optarg, (size_t)(colon - optarg));
      host[colon - optarg] = 0;
      r->listen_host = host;
      r->listen_port = (int)n;
      break;
    }
    case 'u':
      if (strncmp(optarg, "ws://", 5) && strncmp(optarg, "wss://", 6))
        return usage_error("--upstream '%s': expected ws:// or wss://", optarg);
      r->upstream = optarg;
      break;
    case 'o':
      r->output = optarg;
      break;
    case O_IGNORE:
    case O_CAPTURE: {
      bool ig = ch == O_IGNORE;
      size_t *cnt = ig ? &r->nignore : &r->ncapture;
      if (*cnt == MAX_LIST)
        return usage_error("too many --%s", ig ? "ignore" : "capture");
      if (!ig && strspn(optarg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRST"
                                "UVWXYZ0123456789_") != strlen(optarg))
        return usage_error("--capture '%s': letters, digits and '_'", optarg);
      (ig ? r->ignore : r->capture)[(*cnt)++] = optarg;
      break;
    }
    case O_SUBPROTOCOL:
      if (r->nprotos == MAX_LIST) return usage_error("too many --subprotocol");
      r->protos[r->nprotos++] = optarg;
      break;
    case O_INSECURE:
      r->insecure = true;
      break;
    case O_CACERT:
      r->cacert = optarg;
      break;
    case O_LATENCY:
    case O_JITTER:
      if (!app_parse_ulong(optarg, 600000, &n))
        return usage_error("--%s '%s': expected milliseconds",
                           ch == O_LATENCY ? "latency" : "jitter", optarg);
      *(ch == O_LATENCY ? &r->latency : &r->jitter) = (unsigned)n;
      break;
    case O_THROTTLE:
      if (!app_parse_size(optarg, (size_t *)&n) || !n)
        return usage_error("--throttle '%s': expected bytes per second",
                           optarg);
      r->throttle = (double)n;
      break;
    case O_CUT_MSGS:
    case O_HALF_OPEN:
      if (!app_parse_ulong(optarg, 1000000000, &n) || !n)
        return usage_error("--%s '%s': expected a number > 0",
                           ch == O_CUT_MSGS ? "cut-after-messages"
                                            : "half-open-after",
                           optarg);
      *(ch == O_CUT_MSGS ? &r->cut_after_messages : &r->half_open_after) = n;
      break;
    case O_DROP_PONGS:
      r->drop_pongs = true;
      break;
    case O_CUT_AFTER:
      if (!app_parse_duration(optarg, &r->cut_after_ms) || !r->cut_after_ms)
        return usage_error("--cut-after '%s': expected seconds", optarg);
      break;
    case 'h':
      fputs(record_help, stdout);
      return -1;
    default:
      return usage_error("bad option");
    }
  }
  if (optind != argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (!r->listen_host) return usage_error("--listen is needed");
  if (!r->upstream) return usage_error("--upstream is needed");
  if (!r->output && !r->proxy_only) return usage_error("-o FILE is needed");
  return 0;
}

static void on_cut_timer(dx_timer *t) {
  rec *r = (rec *)((char *)t - offsetof(rec, cut_timer));
  if (r->client_open)
    cut(r, "after --cut-after");
  else
    dx_timer_start(r->loop, t, 50, 0, on_cut_timer); /* not yet open */
}

/* The path of the upstream URL ("/" when none). */
static void url_path(const char *url, char *out, size_t n) {
  const char *p = strstr(url, "://");
  p = p ? strchr(p + 3, '/') : NULL;
  snprintf(out, n, "%.*s", p ? (int)strcspn(p, "?#") : 1, p ? p : "/");
}

static int serve(rec *r) {
  dx_server_config cfg = {.host = r->listen_host,
                          .port = r->listen_port,
                          .threads = 1,
                          .ping_interval_ms = (unsigned)-1};
  r->srv = dx_server_new(&cfg);
  if (!r->srv) return RC_FAIL;
  char path[512];
  url_path(r->upstream, path, sizeof path);
  dx_route route = {.path = path,
                    .on_accept = srv_accept,
                    .on_open = srv_open,
                    .on_message = srv_message,
                    .on_close = srv_close,
                    .ud = r,
                    .deflate = true,
                    .subprotocols = r->nprotos ? r->protos : NULL,
                    .on_ping = srv_ping,
                    .manual_pong = r->drop_pongs,
                    .user_size = sizeof(ev *)};
  int rc = dx_server_route(r->srv, &route);
  if (!rc && strcmp(path, "/")) {
    route.path = "/";
    rc = dx_server_route(r->srv, &route);
  }
  if (!rc) rc = dx_server_start(r->srv);
  if (rc) {
    say("cannot listen on %s:%d: %s", r->listen_host, r->listen_port,
        *dx_server_error(r->srv) ? dx_server_error(r->srv) : dx_strerror(rc));
    dx_server_free(r->srv);
    return RC_FAIL;
  }
  pthread_t th;
  if (pthread_create(&th, NULL, server_thread, r->srv)) {
    dx_server_free(r->srv);
    return RC_FAIL;
  }
  say("listening on %s:%d, relaying to %s", r->listen_host,
      dx_server_port(r->srv), r->upstream);
  if (r->cut_after_ms)
    dx_timer_start(r->loop, &r->cut_timer, r->cut_after_ms, 0, on_cut_timer);
  dx_loop_run(r->loop);
  dx_server_shutdown(r->srv, 1000);
  pthread_join(th, NULL);
  r->stopping = true;
  dx_loop_run_once(r->loop, 0); /* events posted during the shutdown */
  dx_server_free(r->srv);
  return 0;
}

static void print_faults(const rec *r) {
  if (!r->latency && !r->jitter && !r->throttle && !r->cut_after_messages &&
      !r->cut_after_ms && !r->half_open_after && !r->drop_pongs)
    return;
  fprintf(stderr,
          "duplex record: faults: %lu messages relayed; delayed %lu (%.0f ms "
          "in all); throttled %lu; cuts %lu; dropped while half-open %lu; "
          "pings left unanswered %lu\n",
          r->relayed, r->delayed, r->delay_total_ms, r->throttled, r->cuts,
          r->dropped_half_open, r->pings_unanswered);
}

static int record_main(int argc, char **argv, bool proxy_only) {
  static rec r;
  memset(&r, 0, sizeof r);
  r.proxy_only = proxy_only;
  r.pending_tailp = &r.pending_head;
  r.to_up = (pipe_q){.tailp = &r.to_up.head, .upstream = true, .r = &r};
  r.to_client = (pipe_q){.tailp = &r.to_client.head, .r = &r};
  srand((unsigned)time(NULL));
  int rc = parse_options(&r, argc, argv);
  if (rc) return rc < 0 ? RC_OK : rc;
  r.loop = dx_loop_new(NULL);
  if (!r.loop) return RC_FAIL;
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, &old); /* before any thread */
  int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd >= 0 && dx_io_start(r.loop, &r.sig_io, sfd, DX_IO_READ, on_signal)) {
    close(sfd);
    sfd = -1;
  }
  int status = serve(&r);
  if (!status) status = r.status;
  dx_client_free(r.up);
  r.up = NULL;
  dx_timer_stop(&r.cut_timer);
  dx_timer_stop(&r.end_timer);
  dx_timer_stop(&r.to_up.timer);
  dx_timer_stop(&r.to_client.timer);
  dx_loop_run_once(r.loop, 0);
  if (sfd >= 0) {
    dx_io_stop(&r.sig_io);
    close(sfd);
  }
  /* Handlers already posted but never run. */
  dx_loop_free(r.loop);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  print_faults(&r);
  if (!proxy_only && (r.nsteps || r.up_started) && write_scenario(&r))
    status = RC_FAIL;
  for (qmsg *q = r.to_up.head, *n; q; q = n)
    n = q->next, free(q);
  for (qmsg *q = r.to_client.head, *n; q; q = n)
    n = q->next, free(q);
  for (qmsg *q = r.pending_head, *n; q; q = n)
    n = q->next, free(q);
  for (size_t i = 0; i < r.nsteps; i++)
    free(r.steps[i].line);
  free(r.steps);
  for (size_t i = 0; i < r.ncapture; i++)
    free(r.cap_value[i]);
  return status;
}

int app_record(int argc, char **argv);
int app_proxy(int argc, char **argv);

int app_record(int argc, char **argv) {
  return record_main(argc, argv, false);
}

int app_proxy(int argc, char **argv) {
  return record_main(argc, argv, true);
}
