/* duplex bench — shared between bench.c (the load generator) and
 * bench_report.c (histograms, text/JSON/HTML results). Public headers only. */
#ifndef DX_APP_BENCH_H
#define DX_APP_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Log-linear histogram of nanoseconds: values below 2^BH_SUB_BITS are exact,
 * above that each power of two is split into 2^BH_SUB_BITS sub-buckets, so
 * a bucket's midpoint is within 2^-(BH_SUB_BITS+1) (0.4%) of any value in
 * it. Fixed size, no allocation: cheap to copy for progress snapshots. */
#define BH_SUB_BITS 7
#define BH_SUB (1u << BH_SUB_BITS)
#define BH_BUCKETS ((64 - BH_SUB_BITS + 1) * BH_SUB)

typedef struct bh {
  uint64_t n[BH_BUCKETS];
  uint64_t count, min, max;
  double sum;
} bh;

void bh_add(bh *h, uint64_t v);
void bh_merge(bh *into, const bh *from);
/* The value at quantile q (0..1), in ns; 0 when empty. The exact max for
 * q >= 1. */
double bh_quantile(const bh *h, double q);
/* Bucket i's range [lo, hi). */
void bh_bucket_range(unsigned i, uint64_t *lo, uint64_t *hi);

#define BENCH_CLOSE_CODES 5000
#define BENCH_ERR_KINDS 32

typedef struct bench_err {
  int err;         /* dx error or -errno */
  int http_status; /* non-101 answers */
  uint64_t count;
} bench_err;

/* Everything a run measured, merged over threads. */
typedef struct bench_result {
  /* configuration, for the report */
  const char *url;
  unsigned connections, threads, duration_ms, ramp_ms;
  size_t size;
  unsigned inflight;
  double rate; /* per connection; 0: closed loop */
  bool binary;
  const char *correlate; /* NULL: echo */
  /* outcome */
  double elapsed_s; /* sending period, seconds */
  uint64_t attempted, opened, failed;
  uint64_t sent, received, matched, unmatched, lost;
  bh latency, connect;
  bench_err errs[BENCH_ERR_KINDS];
  unsigned nerrs;
  uint64_t errors; /* total */
  uint64_t close_codes[BENCH_CLOSE_CODES];
  /* per-second series over the run */
  unsigned nsec;
  uint64_t *sec_sent, *sec_recv;
  double *sec_p99_ms; /* 0 where no reply arrived that second */
} bench_result;

void bench_print_text(const bench_result *r, FILE *f);
int bench_write_json(const bench_result *r, const char *path);
int bench_write_html(const bench_result *r, const char *path);
/* "ECONNREFUSED" / "HTTP 404" ... */
void bench_err_name(const bench_err *e, char *out, size_t cap);

#endif
