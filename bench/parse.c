/*
 * bench_parse — the server's receive path through the public engine API:
 * masked client-to-server text frames -> dx_ws_feed -> dx_ws_next (unmask
 * in place, incremental UTF-8 validation, in-place delivery).
 *
 * The engine unmasks in the caller's buffer, so every round needs a fresh
 * copy of the wire bytes. We time copy + parse, time the copy alone, and
 * print both plus their difference, so the reader sees the physical
 * reference (memcpy of the same bytes, same run) next to the engine.
 * dx_mask and dx_utf8_valid are also timed alone over the same payloads.
 *
 * Every figure is payload bytes per second (MB = 1e6 bytes): the time to
 * get through one batch, divided into the text it carries. Each number is
 * the best of RUNS runs of at least the given seconds each, to keep
 * scheduler and frequency noise out of the comparison.
 *
 * Usage: bench_parse [seconds-per-run]   (default 0.2)
 */
#include <duplex/proto.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A batch fills about one loop receive buffer (DESIGN.md: one per loop),
 * so it stays in L2/L3 like a real read() would. */
#define BATCH_BYTES (512u << 10)
#define RUNS 5

static double min_seconds = 0.2;
static volatile size_t sink; /* keeps results alive past the optimiser */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
  fprintf(stderr, "bench_parse: %s\n", what);
  exit(1);
}

/* xorshift64: fixed seed, the same bytes every run. */
static uint64_t rng = 0x9E3779B97F4A7C15u;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

/* Chat/JSON-like text: mostly ASCII words, with a 2-, 3- or 4-byte
 * character about every 40 bytes. Exactly n bytes, valid UTF-8. */
static void fill_text(uint8_t *p, size_t n) {
  static const char *const multi[] = {"\xc3\xa9", "\xc3\xbc", "\xe2\x82\xac",
                                      "\xe4\xb8\xad", "\xf0\x9f\x98\x80"};
  size_t i = 0;
  while (i < n) {
    uint32_t r = rnd() % 40;
    if (r == 0) {
      const char *m = multi[rnd() % 5];
      size_t k = strlen(m);
      if (i + k > n) continue;
      memcpy(p + i, m, k);
      i += k;
    } else {
      p[i++] = r < 7 ? ' ' : (uint8_t)('a' + r % 26);
    }
  }
  if (!dx_utf8_valid(p, n)) die("generated text is not valid UTF-8");
}

/* The same size in text that is mostly 3-byte (CJK), for the DFA path. */
static void fill_cjk(uint8_t *p, size_t n) {
  size_t i = 0;
  while (i + 3 <= n) {
    uint32_t cp = 0x4E00 + rnd() % 0x5000;
    p[i++] = (uint8_t)(0xE0 | cp >> 12);
    p[i++] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    p[i++] = (uint8_t)(0x80 | (cp & 0x3F));
  }
  while (i < n)
    p[i++] = ' ';
}

typedef struct batch {
  size_t msg_size;
  size_t count;  /* messages in the batch */
  uint8_t *wire; /* count masked frames */
  size_t wire_len;
  uint8_t *feed;    /* the engine's working copy */
  uint8_t *text;    /* count payloads, plain, back to back */
  uint8_t *scratch; /* a copy of text for dx_mask to scramble */
  uint8_t keys[4];  /* a mask key for the component runs */
  dx_ws *ws;
} batch;

static void batch_init(batch *b, size_t msg_size, dx_ws *ws) {
  size_t frame_max = msg_size + 14;
  b->msg_size = msg_size;
  b->count = BATCH_BYTES / frame_max ? BATCH_BYTES / frame_max : 1;
  b->wire = malloc(b->count * frame_max);
  b->feed = malloc(b->count * frame_max);
  b->text = malloc(b->count * msg_size);
  b->scratch = malloc(b->count * msg_size);
  if (!b->wire || !b->feed || !b->text || !b->scratch) die("out of memory");
  b->wire_len = 0;
  for (size_t i = 0; i < b->count; i++) {
    uint8_t *t = b->text + i * msg_size;
    fill_text(t, msg_size);
    /* A fresh key per frame, as RFC 6455 5.3 requires of clients. */
    uint8_t key[4] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd(),
                      (uint8_t)rnd()};
    uint8_t *f = b->wire + b->wire_len;
    size_t h = dx_frame_header(f, DX_OP_TEXT, true, false, msg_size, key);
    memcpy(f + h, t, msg_size);
    dx_mask(f + h, msg_size, key, 0);
    b->wire_len += h + msg_size;
  }
  memcpy(b->scratch, b->text, b->count * msg_size);
  for (int i = 0; i < 4; i++)
    b->keys[i] = (uint8_t)rnd();
  b->ws = ws;
}

static void batch_free(batch *b) {
  free(b->wire);
  free(b->feed);
  free(b->text);
  free(b->scratch);
}

/* ---- the timed bodies: one batch each ------------------------------- */

static void run_copy(batch *b) {
  memcpy(b->feed, b->wire, b->wire_len);
  sink += b->feed[b->wire_len - 1];
}

static void run_parse(batch *b) {
  memcpy(b->feed, b->wire, b->wire_len);
  if (dx_ws_feed(b->ws, b->feed, b->wire_len) != 0) die("dx_ws_feed failed");
  dx_ws_event ev;
  size_t bytes = 0, msgs = 0;
  int rc;
  while ((rc = dx_ws_next(b->ws, &ev)) > 0) {
    bytes += ev.len;
    msgs++;
  }
  if (rc != DX_EAGAIN) die(dx_strerror(rc));
  if (msgs != b->count || bytes != b->count * b->msg_size)
    die("the engine delivered something else than was sent");
  sink += bytes;
}

/* dx_mask over every payload, one call per message as the engine does.
 * It scrambles its own copy, so the text stays valid for run_utf8. */
static void run_mask(batch *b) {
  size_t off = 0;
  for (size_t i = 0; i < b->count; i++)
    off += dx_mask(b->scratch + i * b->msg_size, b->msg_size, b->keys, 0);
  sink += off;
}

static void run_utf8(batch *b) {
  size_t ok = 0;
  for (size_t i = 0; i < b->count; i++)
    ok += dx_utf8_valid(b->text + i * b->msg_size, b->msg_size);
  if (ok != b->count) die("dx_utf8_valid rejected valid text");
  sink += ok;
}

/* Best-of-RUNS time for one batch, each run looping for min_seconds. */
static double time_per_batch(void (*fn)(batch *), batch *b) {
  double best = 1e30;
  fn(b); /* warm caches and the branch predictor */
  for (int r = 0; r < RUNS; r++) {
    size_t iters = 0;
    double t0 = now(), t;
    do {
      fn(b);
      iters++;
    } while ((t = now() - t0) < min_seconds);
    if (t / (double)iters < best) best = t / (double)iters;
  }
  return best;
}

static double mbps(const batch *b, double seconds) {
  return (double)(b->count * b->msg_size) / seconds / 1e6;
}

static const char *size_name(size_t n) {
  static char buf[32];
  if (n >= 1024)
    snprintf(buf, sizeof buf, "%zu KiB", n >> 10);
  else
    snprintf(buf, sizeof buf, "%zu B", n);
  return buf;
}

int main(int argc, char **argv) {
  if (argc > 1) min_seconds = atof(argv[1]);
  if (!(min_seconds > 0)) die("usage: bench_parse [seconds-per-run]");

  static const size_t sizes[] = {16, 1024, 65536};
  dx_ws_config cfg = {0}; /* server: expects masked frames */
  dx_ws *ws = dx_ws_new(&cfg);
  if (!ws || dx_ws_open(ws, NULL) != 0) die("cannot create the engine");

  printf("duplex %s  bench_parse: masked text frames, server engine\n",
         DX_VERSION_STRING);
  printf("payload MB/s (1e6 B/s); batch ~%u KiB of frames; best of %d x "
         "%.2fs\n\n",
         BATCH_BYTES >> 10, RUNS, min_seconds);
  printf("%-8s %8s | %10s %12s %12s %10s | %10s %10s\n", "message", "msgs",
         "memcpy", "copy+parse", "parse only", "Mmsg/s", "dx_mask",
         "utf8_valid");
  printf("%.*s\n", 98,
         "-----------------------------------------------------------------"
         "-----------------------------------------------------------------");
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    batch b;
    batch_init(&b, sizes[i], ws);
    double t_copy = time_per_batch(run_copy, &b);
    double t_parse = time_per_batch(run_parse, &b);
    double t_mask = time_per_batch(run_mask, &b);
    double t_utf8 = time_per_batch(run_utf8, &b);
    double t_only = t_parse - t_copy;
    printf("%-8s %8zu | %10.0f %12.0f %12.0f %10.2f | %10.0f %10.0f\n",
           size_name(sizes[i]), b.count, mbps(&b, t_copy), mbps(&b, t_parse),
           t_only > 0 ? mbps(&b, t_only) : 0.0, (double)b.count / t_parse / 1e6,
           mbps(&b, t_mask), mbps(&b, t_utf8));
    batch_free(&b);
  }
  printf("\nmemcpy: copy of the wire bytes alone (the physical reference);\n"
         "copy+parse: that copy + dx_ws_feed + dx_ws_next until EAGAIN;\n"
         "parse only: the difference; dx_mask, utf8_valid: one call per\n"
         "payload, alone.\n");

  /* The validator's non-ASCII path: same sizes, mostly 3-byte text. */
  printf("\ndx_utf8_valid by content, payload MB/s:\n");
  printf("%-8s %12s %12s %12s\n", "message", "ASCII", "ASCII-heavy", "CJK");
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    batch b;
    batch_init(&b, sizes[i], ws);
    double mixed = mbps(&b, time_per_batch(run_utf8, &b));
    memset(b.text, 'a', b.count * b.msg_size);
    double ascii = mbps(&b, time_per_batch(run_utf8, &b));
    for (size_t m = 0; m < b.count; m++)
      fill_cjk(b.text + m * b.msg_size, b.msg_size);
    double cjk = mbps(&b, time_per_batch(run_utf8, &b));
    printf("%-8s %12.0f %12.0f %12.0f\n", size_name(sizes[i]), ascii, mixed,
           cjk);
    batch_free(&b);
  }
  dx_ws_free(ws);
  return 0;
}
