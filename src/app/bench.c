/*
 * duplex bench — a WebSocket load generator: N connections spread over T
 * threads (one dx_loop each), closed loop (K messages in flight per
 * connection) or open loop (a fixed rate per connection), latency from a
 * log-linear histogram, per-second series, text/JSON/HTML results.
 *
 * Each connection is a dx_client: the client batches what is sent during a
 * loop turn into one write per connection (its flush hook), so a turn that
 * handles many replies costs one send(2) per connection. Requests are
 * matched to replies in order for an echo server (TCP keeps the order), or
 * by a JSON field's unique value (--correlate) for request/response APIs
 * that may answer out of order. Public headers only.
 */
#include "app.h"
#include "bench.h"

#include <duplex/client.h>

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 64
#define MAX_THREADS 256
#define RING_MIN 1024        /* outstanding requests per connection */
#define RATE_HIGH (4u << 20) /* open loop: skip sends above this backlog */
#define DRAIN_MS 1000        /* wait for late replies before counting lost */
#define CLOSE_MS 2000        /* closing handshakes at the end */
#define SNAP_NS 200000000ull /* threads publish a histogram snapshot */

static const char *bench_help =
    "usage: duplex bench [options] ws[s]://host[:port]/path\n"
    "\n"
    "Opens CONNECTIONS WebSocket connections and sends messages for DURATION,\n"
    "measuring the time from sending a message to receiving its reply.\n"
    "\n"
    "  -c, --connections N    connections (10)\n"
    "  -d, --duration DUR     how long to send (\"10s\", \"500ms\"; 10s)\n"
    "  -t, --threads N        threads, each with its own event loop and its\n"
    "                         share of the connections (1)\n"
    "      --size BYTES       message size (64; \"4k\", \"1MiB\")\n"
    "      --inflight K       closed loop: K messages in flight per\n"
    "                         connection, each reply sends the next (1)\n"
    "      --rate R           open loop: R messages/s per connection\n"
    "      --ramp-up DUR      open the connections progressively over DUR\n"
    "      --binary           binary messages (default: text)\n"
    "      --payload TEMPLATE text with {seq} {ts} {conn} substituted,\n"
    "                         padded with spaces to --size\n"
    "      --correlate FIELD  each request is a JSON object with FIELD set to\n"
    "                         a fresh unique string; the reply carrying the\n"
    "                         same FIELD value answers it (any order); other\n"
    "                         replies count as unmatched\n"
    "  -s, --subprotocol P    offer subprotocol P (repeatable)\n"
    "  -H, --header 'N: v'    extra request header (repeatable)\n"
    "      --cacert FILE      trust the CAs in FILE (PEM) for wss://\n"
    "  -k, --insecure         do not verify the server's certificate\n"
    "      --json FILE        write the results as JSON\n"
    "      --html FILE        write a self-contained HTML report\n"
    "  -q, --quiet            no progress lines\n"
    "  -h, --help             this text\n"
    "\n"
    "After DURATION, sending stops and replies are awaited for 1 s: sent =\n"
    "answered + lost. Ctrl-C ends the run early (results are still printed).\n"
    "\n"
    "Exit status: 0 done (at least one connection opened), 1 no connection\n"
    "could be opened or a file could not be written, 2 usage error.\n";

/* ---- options --------------------------------------------------------------
 */

enum { SEG_LIT, SEG_SEQ, SEG_TS, SEG_CONN };
typedef struct seg {
  int type;
  const char *p;
  size_t len;
} seg;

typedef struct bopts {
  const char *url;
  unsigned conns, threads, duration_ms, ramp_ms, inflight;
  double rate;
  size_t size;
  bool binary, quiet, insecure;
  const char *tmpl, *correlate, *json, *html, *cacert;
  const char *headers[MAX_LIST + 1];
  int nheaders;
  const char *protos[MAX_LIST + 1];
  int nprotos;
  /* the template, compiled (correlate: the part after the opening brace) */
  seg segs[64];
  int nsegs;
  char *field_json; /* "\"FIELD\":" */
  uint8_t *fixed;   /* the whole message when it never changes */
} bopts;

/* ---- per-thread state -----------------------------------------------------
 */

typedef struct slot {
  uint64_t seq, ts;
  bool live;
} slot;

struct bthr;

typedef struct bconn {
  struct bthr *t;
  dx_client *c;
  unsigned id; /* global */
  uint64_t start_ns;
  bool started, opened, done;
  slot *ring;
  uint64_t mask, head, tail, outstanding;
  double next_ns; /* open loop: when the next message is due */
} bconn;

typedef struct bthr {
  const bopts *o;
  unsigned idx;
  pthread_t tid;
  dx_loop *loop;
  dx_timer tick;
  bconn *conns;
  unsigned n, nstarted, nopen, ndone;
  uint64_t t0, end_ns, phase_end, send_end;
  enum { PH_RUN, PH_DRAIN, PH_CLOSE } phase;
  uint8_t *buf;
  size_t bufcap;
  /* results (owned by this thread until it ends) */
  uint64_t sent, received, matched, unmatched, lost, failed, opened, errors;
  bh lat, conn_h;
  bench_err errs[BENCH_ERR_KINDS];
  unsigned nerrs;
  uint64_t close_codes[BENCH_CLOSE_CODES];
  /* published for the progress line */
  _Atomic uint64_t p_sent, p_recv, p_errors, p_open;
  _Atomic bool finished;
  uint64_t *sec_sent, *sec_recv; /* per second of the run, nsec of them */
  unsigned nsec;
  uint64_t last_snap;
  pthread_mutex_t snap_mu;
  bh snap;
} bthr;

static atomic_bool interrupted;
static uint64_t run_start_ns;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000;
}

/* The second of the run `now` falls in; late replies count in the last. */
static unsigned sec_of(const bthr *t, uint64_t now) {
  uint64_t s = now > t->t0 ? (now - t->t0) / 1000000000ull : 0;
  return s < t->nsec ? (unsigned)s : t->nsec - 1;
}

/* ---- messages -------------------------------------------------------------
 */

static size_t put_u64(uint8_t *p, uint64_t v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
  memcpy(p, tmp, (size_t)n);
  return (size_t)n;
}

/* Renders request `seq` of connection `c` into t->buf; returns its length. */
static size_t render(bthr *t, const bconn *c, uint64_t seq) {
  const bopts *o = t->o;
  uint8_t *p = t->buf;
  if (o->correlate) {
    size_t fl = strlen(o->field_json);
    *p++ = '{';
    memcpy(p, o->field_json, fl);
    p += fl;
    *p++ = '"';
    p += put_u64(p, c->id);
    *p++ = '-';
    p += put_u64(p, seq);
    *p++ = '"';
    *p++ = ',';
  }
  for (int i = 0; i < o->nsegs; i++) {
    const seg *s = &o->segs[i];
    switch (s->type) {
    case SEG_LIT:
      memcpy(p, s->p, s->len);
      p += s->len;
      break;
    case SEG_SEQ:
      p += put_u64(p, seq);
      break;
    case SEG_TS:
      p += put_u64(p, wall_ms());
      break;
    case SEG_CONN:
      p += put_u64(p, c->id);
      break;
    }
  }
  size_t len = (size_t)(p - t->buf);
  if (len < o->size) {
    memset(p, ' ', o->size - len);
    len = o->size;
  }
  return len;
}

static void send_one(bconn *c, uint64_t now) {
  bthr *t = c->t;
  const bopts *o = t->o;
  uint64_t seq = c->head;
  const uint8_t *msg = o->fixed;
  size_t len = o->size;
  if (!msg) {
    len = render(t, c, seq);
    msg = t->buf;
  }
  int rc =
      dx_client_send(c->c, o->binary ? DX_OP_BINARY : DX_OP_TEXT, msg, len);
  if (rc) return; /* closing: on_close does the accounting */
  slot *s = &c->ring[seq & c->mask];
  if (s->live) { /* the ring is full: the oldest request is given up */
    s->live = false;
    c->outstanding--;
    t->lost++;
  }
  if (c->tail + c->mask + 1 <= seq) c->tail = seq - c->mask;
  *s = (slot){.seq = seq, .ts = now, .live = true};
  c->head++;
  c->outstanding++;
  t->sent++;
  t->sec_sent[sec_of(t, now)]++;
}

static void answered(bconn *c, slot *s, uint64_t now) {
  s->live = false;
  c->outstanding--;
  c->t->matched++;
  bh_add(&c->t->lat, now > s->ts ? now - s->ts : 0);
}

/* The request a reply answers: the oldest for an echo, the one named by the
 * FIELD value otherwise. NULL: unmatched. */
static slot *match(bconn *c, const uint8_t *data, size_t len) {
  const bopts *o = c->t->o;
  if (!o->correlate) {
    while (c->tail < c->head && !c->ring[c->tail & c->mask].live)
      c->tail++;
    if (c->tail == c->head) return NULL;
    return &c->ring[c->tail++ & c->mask];
  }
  json_t *j = json_loadb((const char *)data, len, 0, NULL);
  const char *v = json_string_value(json_object_get(j, o->correlate));
  unsigned id;
  unsigned long long seq;
  char extra;
  slot *s = NULL;
  if (v && sscanf(v, "%u-%llu%c", &id, &seq, &extra) == 2 && id == c->id) {
    s = &c->ring[seq & c->mask];
    if (!s->live || s->seq != seq) s = NULL;
  }
  json_decref(j);
  return s;
}

/* ---- client handlers ------------------------------------------------------
 */

static void on_open(dx_client *cl, void *ud) {
  (void)cl;
  bconn *c = ud;
  bthr *t = c->t;
  uint64_t now = now_ns();
  c->opened = true;
  t->opened++;
  t->nopen++;
  bh_add(&t->conn_h, now - c->start_ns);
  if (t->phase != PH_RUN) return;
  if (t->o->rate > 0) {
    c->next_ns = (double)now;
    return;
  }
  for (unsigned i = 0; i < t->o->inflight; i++)
    send_one(c, now);
}

static void on_message(dx_client *cl, dx_opcode op, uint8_t *data, size_t len,
                       void *ud) {
  (void)cl, (void)op;
  bconn *c = ud;
  bthr *t = c->t;
  uint64_t now = now_ns();
  t->received++;
  t->sec_recv[sec_of(t, now)]++;
  slot *s = match(c, data, len);
  if (!s) {
    t->unmatched++;
    return;
  }
  answered(c, s, now);
  if (t->o->rate <= 0 && t->phase == PH_RUN) send_one(c, now);
}

static void count_error(bthr *t, int err, int status) {
  t->errors++;
  for (unsigned i = 0; i < t->nerrs; i++)
    if (t->errs[i].err == err && t->errs[i].http_status == status) {
      t->errs[i].count++;
      return;
    }
  if (t->nerrs < BENCH_ERR_KINDS)
    t->errs[t->nerrs++] = (bench_err){err, status, 1};
}

static void conn_done(bconn *c) {
  bthr *t = c->t;
  if (c->done) return;
  c->done = true;
  t->ndone++;
  if (c->opened) t->nopen--;
  t->lost += c->outstanding; /* never answered now */
  c->outstanding = 0;
}

static void on_error(dx_client *cl, const dx_client_error *e, void *ud) {
  bconn *c = ud;
  count_error(c->t, e->err, e->http_status);
  if (!c->opened) c->t->failed++;
  if (dx_client_state(cl) == DX_CLOSED && !c->opened) conn_done(c);
}

static void on_close(dx_client *cl, uint16_t code, const char *reason,
                     size_t len, bool clean, void *ud) {
  (void)cl, (void)reason, (void)len, (void)clean;
  bconn *c = ud;
  if (code < BENCH_CLOSE_CODES) c->t->close_codes[code]++;
  conn_done(c);
}

/* ---- the thread's tick: ramp-up, open-loop sends, phases -------------------
 */

static void start_conn(bthr *t, bconn *c) {
  const bopts *o = t->o;
  dx_client_config cfg = {.url = o->url,
                          .headers = o->nheaders ? o->headers : NULL,
                          .subprotocols = o->nprotos ? o->protos : NULL,
                          .ca_file = o->cacert,
                          .insecure = o->insecure,
                          .max_message =
                              o->size > (16u << 20) ? o->size * 2 : 0,
                          .on_open = on_open,
                          .on_message = on_message,
                          .on_close = on_close,
                          .on_error = on_error,
                          .ud = c};
  c->started = true;
  t->nstarted++;
  c->start_ns = now_ns();
  c->c = dx_client_new(t->loop, &cfg);
  if (!c->c || dx_client_connect(c->c)) {
    count_error(t, c->c ? DX_ENOMEM : -errno, 0);
    t->failed++;
    conn_done(c);
  }
}

static void publish(bthr *t, uint64_t now) {
  atomic_store_explicit(&t->p_sent, t->sent, memory_order_relaxed);
  atomic_store_explicit(&t->p_recv, t->received, memory_order_relaxed);
  atomic_store_explicit(&t->p_errors, t->errors, memory_order_relaxed);
  atomic_store_explicit(&t->p_open, t->nopen, memory_order_relaxed);
  if (now - t->last_snap >= SNAP_NS) {
    t->last_snap = now;
    pthread_mutex_lock(&t->snap_mu);
    t->snap = t->lat;
    pthread_mutex_unlock(&t->snap_mu);
  }
}

static void tick_run(bthr *t, uint64_t now) {
  const bopts *o = t->o;
  for (unsigned k = t->nstarted; k < t->n; k++) {
    bconn *c = &t->conns[k];
    uint64_t due = t->t0 + (uint64_t)o->ramp_ms * 1000000ull * c->id /
                               (o->conns ? o->conns : 1);
    if (due > now) break;
    start_conn(t, c);
  }
  if (o->rate > 0) {
    double step = 1e9 / o->rate;
    for (unsigned k = 0; k < t->nstarted; k++) {
      bconn *c = &t->conns[k];
      if (!c->opened || c->done) continue;
      if (c->next_ns < (double)now - 1e9) c->next_ns = (double)now; /* behind */
      while (c->next_ns <= (double)now) {
        c->next_ns += step;
        if (dx_client_buffered(c->c) < RATE_HIGH) send_one(c, now);
      }
    }
  }
  bool all_gone = t->nstarted == t->n && t->ndone == t->n;
  if (now >= t->end_ns || atomic_load(&interrupted) || all_gone) {
    t->phase = PH_DRAIN;
    t->send_end = now;
    t->phase_end = now + DRAIN_MS * 1000000ull;
  }
}

static void tick_drain(bthr *t, uint64_t now) {
  uint64_t out = 0;
  for (unsigned k = 0; k < t->n; k++)
    out += t->conns[k].outstanding;
  if (out && now < t->phase_end) return;
  for (unsigned k = 0; k < t->n; k++) {
    bconn *c = &t->conns[k];
    t->lost += c->outstanding;
    c->outstanding = 0;
    if (c->done || !c->c) continue;
    if (c->opened) {
      dx_client_close(c->c, DX_CLOSE_NORMAL, "bench done");
    } else {
      dx_client_close(c->c, 0, NULL);  /* still connecting: abandon */
      count_error(t, DX_ETIMEDOUT, 0); /* not open by the end of the run */
      t->failed++;
      conn_done(c);
    }
  }
  t->nstarted = t->n; /* connections not yet started never will be */
  for (unsigned k = 0; k < t->n; k++)
    if (!t->conns[k].started) {
      t->conns[k].done = true;
      t->ndone++;
    }
  t->phase = PH_CLOSE;
  t->phase_end = now + CLOSE_MS * 1000000ull;
}

static void on_tick(dx_timer *tm) {
  bthr *t = (bthr *)((char *)tm - offsetof(bthr, tick));
  uint64_t now = now_ns();
  if (t->phase == PH_RUN) tick_run(t, now);
  if (t->phase == PH_DRAIN) tick_drain(t, now);
  if (t->phase == PH_CLOSE && (t->ndone == t->n || now >= t->phase_end)) {
    dx_timer_stop(&t->tick);
    dx_loop_stop(t->loop);
  }
  publish(t, now);
}

static void *thread_main(void *arg) {
  bthr *t = arg;
  t->t0 = run_start_ns;
  t->end_ns = t->t0 + (uint64_t)t->o->duration_ms * 1000000ull;
  dx_timer_start(t->loop, &t->tick, 0, t->o->rate > 0 ? 1 : 5, on_tick);
  dx_loop_run(t->loop);
  for (unsigned k = 0; k < t->n; k++)
    dx_client_free(t->conns[k].c);
  dx_loop_run_once(t->loop, 0); /* the deferred frees */
  publish(t, now_ns() + SNAP_NS);
  atomic_store(&t->finished, true);
  return NULL;
}

/* ---- progress and the per-second series ---------------------------------- */

typedef struct series {
  unsigned n, cap;
  uint64_t *sent, *recv;
  double *p99;
  uint64_t last_sent, last_recv;
  bh prev, cur;
} series;

static void gather(bthr *th, unsigned nt, bh *into, uint64_t *sent,
                   uint64_t *recv, uint64_t *errs, uint64_t *open) {
  memset(into, 0, sizeof *into);
  *sent = *recv = *errs = *open = 0;
  for (unsigned i = 0; i < nt; i++) {
    bthr *t = &th[i];
    *sent += atomic_load_explicit(&t->p_sent, memory_order_relaxed);
    *recv += atomic_load_explicit(&t->p_recv, memory_order_relaxed);
    *errs += atomic_load_explicit(&t->p_errors, memory_order_relaxed);
    *open += atomic_load_explicit(&t->p_open, memory_order_relaxed);
    pthread_mutex_lock(&t->snap_mu);
    bh_merge(into, &t->snap);
    pthread_mutex_unlock(&t->snap_mu);
  }
}

/* p99 of what arrived between two cumulative snapshots. */
static double interval_p99(const bh *prev, bh *cur, bh *tmp) {
  *tmp = *cur;
  tmp->count -= prev->count;
  for (unsigned i = 0; i < BH_BUCKETS; i++)
    tmp->n[i] -= prev->n[i];
  tmp->min = 0;
  if (tmp->count == 0) return 0;
  return bh_quantile(tmp, .99) / 1e6;
}

static void series_add(series *s, uint64_t sent, uint64_t recv, double p99) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 64;
    s->sent = realloc(s->sent, s->cap * sizeof *s->sent);
    s->recv = realloc(s->recv, s->cap * sizeof *s->recv);
    s->p99 = realloc(s->p99, s->cap * sizeof *s->p99);
    if (!s->sent || !s->recv || !s->p99) abort(); /* tool, not library */
  }
  s->sent[s->n] = sent - s->last_sent;
  s->recv[s->n] = recv - s->last_recv;
  s->p99[s->n] = p99;
  s->n++;
  s->last_sent = sent;
  s->last_recv = recv;
}

static series *progress(bthr *th, const bopts *o) {
  bool tty = isatty(1);
  static series s; /* large histograms: not on the stack */
  static bh tmp;
  memset(&s, 0, sizeof s);
  uint64_t next_sec = run_start_ns + 1000000000ull;
  uint64_t last_print_sent = 0, last_print_recv = 0;
  for (;;) {
    bool all = true;
    for (unsigned i = 0; i < o->threads; i++)
      all = all && atomic_load(&th[i].finished);
    if (all) break;
    usleep(tty ? 100000 : 50000);
    uint64_t now = now_ns();
    if (now < next_sec) continue;
    uint64_t sent, recv, errs, open;
    gather(th, o->threads, &s.cur, &sent, &recv, &errs, &open);
    double elapsed = (double)(now - run_start_ns) / 1e9;
    if (elapsed * 1000 <= o->duration_ms + 1)
      series_add(&s, sent, recv, interval_p99(&s.prev, &s.cur, &tmp));
    s.prev = s.cur;
    next_sec += 1000000000ull;
    if (o->quiet) continue;
    fprintf(stdout,
            "%s[%5.1fs] conns %llu | sent %llu/s recv %llu/s | p99 %.2f ms | "
            "errors %llu%s",
            tty ? "\r" : "", elapsed, (unsigned long long)open,
            (unsigned long long)(sent - last_print_sent),
            (unsigned long long)(recv - last_print_recv),
            bh_quantile(&s.cur, .99) / 1e6, (unsigned long long)errs,
            tty ? "   " : "\n");
    fflush(stdout);
    last_print_sent = sent;
    last_print_recv = recv;
  }
  if (tty && !o->quiet) fputc('\n', stdout);
  /* the last second ends with the threads: its replies are all in now */
  if (s.n < (o->duration_ms + 999) / 1000) {
    uint64_t sent, recv, errs, open;
    gather(th, o->threads, &s.cur, &sent, &recv, &errs, &open);
    series_add(&s, sent, recv, interval_p99(&s.prev, &s.cur, &tmp));
  }
  return &s;
}

/* ---- results --------------------------------------------------------------
 */

static void collect(bthr *th, const bopts *o, const series *s, bench_result *r,
                    double el) {
  memset(r, 0, sizeof *r);
  r->url = o->url;
  r->connections = o->conns;
  r->threads = o->threads;
  r->duration_ms = o->duration_ms;
  r->ramp_ms = o->ramp_ms;
  r->size = o->size;
  r->inflight = o->rate > 0 ? 0 : o->inflight;
  r->rate = o->rate;
  r->binary = o->binary;
  r->correlate = o->correlate;
  r->elapsed_s = el;
  r->attempted = o->conns;
  for (unsigned i = 0; i < o->threads; i++) {
    bthr *t = &th[i];
    r->opened += t->opened;
    r->failed += t->failed;
    r->sent += t->sent;
    r->received += t->received;
    r->matched += t->matched;
    r->unmatched += t->unmatched;
    r->lost += t->lost;
    r->errors += t->errors;
    bh_merge(&r->latency, &t->lat);
    bh_merge(&r->connect, &t->conn_h);
    for (unsigned c = 0; c < BENCH_CLOSE_CODES; c++)
      r->close_codes[c] += t->close_codes[c];
    for (unsigned e = 0; e < t->nerrs; e++) {
      unsigned j = 0;
      while (j < r->nerrs && (r->errs[j].err != t->errs[e].err ||
                              r->errs[j].http_status != t->errs[e].http_status))
        j++;
      if (j == r->nerrs && r->nerrs < BENCH_ERR_KINDS)
        r->errs[r->nerrs++] =
            (bench_err){t->errs[e].err, t->errs[e].http_status, 0};
      if (j < r->nerrs) r->errs[j].count += t->errs[e].count;
    }
  }
  /* the seconds actually run (fewer after Ctrl-C or when all failed) */
  unsigned n = (unsigned)(el + 0.999);
  if (n > th[0].nsec) n = th[0].nsec;
  if (n == 0) n = 1;
  r->nsec = n;
  r->sec_sent = calloc(n, sizeof *r->sec_sent);
  r->sec_recv = calloc(n, sizeof *r->sec_recv);
  r->sec_p99_ms = calloc(n, sizeof *r->sec_p99_ms);
  if (!r->sec_sent || !r->sec_recv || !r->sec_p99_ms) abort();
  for (unsigned i = 0; i < o->threads; i++)
    for (unsigned k = 0; k < n; k++) {
      r->sec_sent[k] += th[i].sec_sent[k];
      r->sec_recv[k] += th[i].sec_recv[k];
    }
  for (unsigned k = 0; k < n && k < s->n; k++)
    r->sec_p99_ms[k] = s->p99[k];
}

/* ---- option parsing -------------------------------------------------------
 */

static int usage_error(const char *fmt, const char *arg) {
  fputs("duplex bench: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs("\n(duplex bench --help for the options)\n", stderr);
  return APP_USAGE;
}

static bool parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi || *s == '-') return false;
  *out = (unsigned)v;
  return true;
}

static int compile_template(bopts *o) {
  const char *t = o->tmpl;
  if (o->correlate) {
    if (!t) t = "{\"seq\":{seq},\"ts\":{ts}}";
    while (*t == ' ' || *t == '\t' || *t == '\n')
      t++;
    if (*t != '{')
      return usage_error("--correlate needs a JSON object --payload: %s",
                         o->tmpl);
    t++;
    size_t fl = strlen(o->correlate);
    o->field_json = malloc(fl * 2 + 4);
    if (!o->field_json) return APP_FAIL;
    char *p = o->field_json;
    *p++ = '"';
    for (size_t i = 0; i < fl; i++) {
      if (o->correlate[i] == '"' || o->correlate[i] == '\\') *p++ = '\\';
      *p++ = o->correlate[i];
    }
    *p++ = '"';
    *p++ = ':';
    *p = 0;
  }
  if (!t) { /* a fixed message, built once */
    o->fixed = malloc(o->size ? o->size : 1);
    if (!o->fixed) return APP_FAIL;
    for (size_t i = 0; i < o->size; i++)
      o->fixed[i] = (uint8_t)('a' + i % 26);
    return 0;
  }
  static const struct {
    const char *name;
    int type;
  } keys[] = {{"{seq}", SEG_SEQ}, {"{ts}", SEG_TS}, {"{conn}", SEG_CONN}};
  const char *lit = t;
  while (*t) {
    int k = -1;
    for (int i = 0; i < 3; i++)
      if (strncmp(t, keys[i].name, strlen(keys[i].name)) == 0) k = i;
    if (k < 0) {
      t++;
      continue;
    }
    if (o->nsegs + 2 > (int)(sizeof o->segs / sizeof o->segs[0]))
      return usage_error("--payload: too many placeholders in %s", o->tmpl);
    if (t > lit) o->segs[o->nsegs++] = (seg){SEG_LIT, lit, (size_t)(t - lit)};
    o->segs[o->nsegs++] = (seg){keys[k].type, NULL, 0};
    t += strlen(keys[k].name);
    lit = t;
  }
  if (t > lit) o->segs[o->nsegs++] = (seg){SEG_LIT, lit, (size_t)(t - lit)};
  return 0;
}

static int parse_options(bopts *o, int argc, char **argv) {
  enum {
    O_SIZE = 256,
    O_RATE,
    O_INFLIGHT,
    O_RAMP,
    O_BINARY,
    O_PAYLOAD,
    O_JSON,
    O_HTML,
    O_CORRELATE,
    O_CACERT
  };
  static const struct option longs[] = {
      {"connections", required_argument, 0, 'c'},
      {"duration", required_argument, 0, 'd'},
      {"threads", required_argument, 0, 't'},
      {"size", required_argument, 0, O_SIZE},
      {"rate", required_argument, 0, O_RATE},
      {"inflight", required_argument, 0, O_INFLIGHT},
      {"ramp-up", required_argument, 0, O_RAMP},
      {"binary", no_argument, 0, O_BINARY},
      {"payload", required_argument, 0, O_PAYLOAD},
      {"subprotocol", required_argument, 0, 's'},
      {"header", required_argument, 0, 'H'},
      {"json", required_argument, 0, O_JSON},
      {"html", required_argument, 0, O_HTML},
      {"correlate", required_argument, 0, O_CORRELATE},
      {"cacert", required_argument, 0, O_CACERT},
      {"insecure", no_argument, 0, 'k'},
      {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  bool have_rate = false, have_inflight = false;
  int ch;
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":c:d:t:s:H:kqh", longs, NULL)) != -1) {
    switch (ch) {
    case 'c':
      if (!parse_uint(optarg, 1, 1000000, &o->conns))
        return usage_error("bad -c (connections): %s", optarg);
      break;
    case 'd':
      if (!app_parse_duration(optarg, &o->duration_ms) || !o->duration_ms)
        return usage_error("bad -d (duration): %s", optarg);
      break;
    case 't':
      if (!parse_uint(optarg, 1, MAX_THREADS, &o->threads))
        return usage_error("bad -t (threads, 1..256): %s", optarg);
      break;
    case O_SIZE:
      if (!app_parse_size(optarg, &o->size) || o->size > (256u << 20))
        return usage_error("bad --size: %s", optarg);
      break;
    case O_RATE: {
      char *end;
      o->rate = strtod(optarg, &end);
      if (end == optarg || *end || !(o->rate > 0) || o->rate > 1e7)
        return usage_error("bad --rate (messages/s per connection): %s",
                           optarg);
      have_rate = true;
      break;
    }
    case O_INFLIGHT:
      if (!parse_uint(optarg, 1, 65536, &o->inflight))
        return usage_error("bad --inflight (1..65536): %s", optarg);
      have_inflight = true;
      break;
    case O_RAMP:
      if (!app_parse_duration(optarg, &o->ramp_ms))
        return usage_error("bad --ramp-up: %s", optarg);
      break;
    case O_BINARY:
      o->binary = true;
      break;
    case O_PAYLOAD:
      o->tmpl = optarg;
      break;
    case 's':
      if (o->nprotos == MAX_LIST) return usage_error("too many %s", "-s");
      o->protos[o->nprotos++] = optarg;
      break;
    case 'H':
      if (o->nheaders == MAX_LIST) return usage_error("too many %s", "-H");
      if (!strchr(optarg, ':'))
        return usage_error("-H wants 'Name: value': %s", optarg);
      o->headers[o->nheaders++] = optarg;
      break;
    case O_JSON:
      o->json = optarg;
      break;
    case O_HTML:
      o->html = optarg;
      break;
    case O_CORRELATE:
      if (!*optarg) return usage_error("empty --correlate field%s", "");
      o->correlate = optarg;
      break;
    case O_CACERT:
      o->cacert = optarg;
      break;
    case 'k':
      o->insecure = true;
      break;
    case 'q':
      o->quiet = true;
      break;
    case 'h':
      fputs(bench_help, stdout);
      return -1;
    case ':':
      return usage_error("option %s needs a value", argv[optind - 1]);
    default:
      return usage_error("unknown option %s", argv[optind - 1]);
    }
  }
  if (have_rate && have_inflight)
    return usage_error("--rate and --inflight exclude each other%s", "");
  if (optind != argc - 1)
    return usage_error("%s", optind >= argc ? "a ws:// or wss:// URL is needed"
                                            : "one URL only");
  o->url = argv[optind];
  if (strncmp(o->url, "ws://", 5) && strncmp(o->url, "wss://", 6))
    return usage_error("not a ws:// or wss:// URL: %s", o->url);
  if (o->tmpl && !dx_utf8_valid((const uint8_t *)o->tmpl, strlen(o->tmpl)))
    return usage_error("--payload is not UTF-8%s", "");
  if (o->ramp_ms > o->duration_ms)
    return usage_error("--ramp-up longer than --duration%s", "");
  if (o->threads > o->conns) o->threads = o->conns;
  if (o->binary && o->correlate)
    return usage_error("--correlate sends JSON text: not with --binary%s", "");
  return compile_template(o);
}

/* ---- main -----------------------------------------------------------------
 */

static void on_signal(int sig) {
  (void)sig;
  atomic_store(&interrupted, true);
}

static int check_url(const bopts *o) {
  dx_loop *loop = dx_loop_new(NULL);
  if (!loop) return APP_FAIL;
  dx_client_config cfg = {.url = o->url,
                          .headers = o->nheaders ? o->headers : NULL};
  dx_client *c = dx_client_new(loop, &cfg);
  int rc = c ? 0 : errno == EINVAL ? APP_USAGE : APP_FAIL;
  dx_client_free(c);
  dx_loop_run_once(loop, 0);
  dx_loop_free(loop);
  if (rc == APP_USAGE)
    usage_error("bad URL or header (-H may not set Host, Upgrade, "
                "Connection, Origin, Sec-WebSocket-*): %s",
                o->url);
  return rc;
}

static int setup_threads(bthr *th, const bopts *o) {
  size_t ring = RING_MIN;
  while (ring < o->inflight * 2u)
    ring *= 2;
  size_t bufcap = o->size + (o->tmpl ? strlen(o->tmpl) * 8 : 0) +
                  (o->correlate ? strlen(o->correlate) * 2 : 0) + 128;
  for (unsigned i = 0; i < o->threads; i++) {
    bthr *t = &th[i];
    t->o = o;
    t->idx = i;
    pthread_mutex_init(&t->snap_mu, NULL);
    t->n = o->conns / o->threads + (i < o->conns % o->threads);
    t->conns = calloc(t->n, sizeof *t->conns);
    t->buf = malloc(bufcap);
    t->bufcap = bufcap;
    t->loop = dx_loop_new(NULL);
    t->nsec = (o->duration_ms + 999) / 1000;
    t->sec_sent = calloc(t->nsec, sizeof *t->sec_sent);
    t->sec_recv = calloc(t->nsec, sizeof *t->sec_recv);
    if (!t->conns || !t->buf || !t->loop || !t->sec_sent || !t->sec_recv)
      return APP_FAIL;
    for (unsigned k = 0; k < t->n; k++) {
      bconn *c = &t->conns[k];
      c->t = t;
      c->id = k * o->threads + i; /* round robin: ramp-up order */
      c->ring = calloc(ring, sizeof *c->ring);
      c->mask = ring - 1;
      if (!c->ring) return APP_FAIL;
    }
  }
  return 0;
}

static void free_threads(bthr *th, unsigned n) {
  for (unsigned i = 0; i < n; i++) {
    bthr *t = &th[i];
    for (unsigned k = 0; t->conns && k < t->n; k++)
      free(t->conns[k].ring);
    free(t->conns);
    free(t->buf);
    free(t->sec_sent);
    free(t->sec_recv);
    dx_loop_free(t->loop);
    pthread_mutex_destroy(&t->snap_mu);
  }
  free(th);
}

int app_bench(int argc, char **argv);

int app_bench(int argc, char **argv) {
  static bopts o;
  memset(&o, 0, sizeof o);
  o.conns = 10;
  o.threads = 1;
  o.duration_ms = 10000;
  o.size = 64;
  o.inflight = 1;
  int rc = parse_options(&o, argc, argv);
  if (rc) return rc < 0 ? APP_OK : rc;
  if ((rc = check_url(&o))) return rc;
  if (o.insecure)
    fputs("warning: --insecure: certificates are NOT verified\n", stderr);

  /* one descriptor per connection: take what the hard limit allows */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  bthr *th = calloc(o.threads, sizeof *th);
  if (!th || setup_threads(th, &o)) {
    fputs("duplex bench: out of memory\n", stderr);
    if (th) free_threads(th, o.threads);
    return APP_FAIL;
  }
  if (!o.quiet)
    printf("duplex bench: %s, %u connections, %u thread%s, %.1f s\n", o.url,
           o.conns, o.threads, o.threads == 1 ? "" : "s", o.duration_ms / 1e3);
  fflush(stdout);
  run_start_ns = now_ns();
  unsigned started = 0;
  for (; started < o.threads; started++)
    if (pthread_create(&th[started].tid, NULL, thread_main, &th[started]))
      break;
  if (started < o.threads) {
    atomic_store(&interrupted, true);
    for (unsigned i = started; i < o.threads; i++)
      atomic_store(&th[i].finished, true);
  }
  series *s = progress(th, &o);
  uint64_t send_end = run_start_ns;
  for (unsigned i = 0; i < started; i++) {
    pthread_join(th[i].tid, NULL);
    if (th[i].send_end > send_end) send_end = th[i].send_end;
  }
  double el = (double)(send_end - run_start_ns) / 1e9;

  static bench_result r;
  collect(th, &o, s, &r, el);
  bench_print_text(&r, stdout);
  fflush(stdout);
  int status = r.opened ? APP_OK : APP_FAIL;
  if (!r.opened) fputs("duplex bench: no connection could be opened\n", stderr);
  if (o.json && bench_write_json(&r, o.json)) {
    fprintf(stderr, "duplex bench: cannot write %s\n", o.json);
    status = APP_FAIL;
  }
  if (o.html && bench_write_html(&r, o.html)) {
    fprintf(stderr, "duplex bench: cannot write %s: %s\n", o.html,
            strerror(errno));
    status = APP_FAIL;
  }
  free(r.sec_sent);
  free(r.sec_recv);
  free(r.sec_p99_ms);
  free(s->sent);
  free(s->recv);
  free(s->p99);
  free_threads(th, o.threads);
  free(o.field_json);
  free(o.fixed);
  return status;
}
