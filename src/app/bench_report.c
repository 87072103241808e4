/* duplex bench — histograms and the results: text, JSON (jansson), and one
 * self-contained HTML page with inline SVG charts. Public headers only. */
#include "bench.h"

#include <duplex/common.h>

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- a little math: the tool links no libm --------------------------------
 */

static double m_ln(double x) { /* x > 0 */
  int e = 0;
  while (x >= 2) {
    x /= 2;
    e++;
  }
  while (x < 1) {
    x *= 2;
    e--;
  }
  double y = (x - 1) / (x + 1), y2 = y * y, term = y, sum = 0;
  for (int k = 1; k < 40; k += 2) {
    sum += term / k;
    term *= y2;
  }
  return 2 * sum + e * 0.69314718055994531;
}

static double m_exp(double x) {
  int n = (int)(x / 0.69314718055994531);
  double r = x - n * 0.69314718055994531, term = 1, sum = 1;
  for (int k = 1; k < 30; k++) {
    term *= r / k;
    sum += term;
  }
  for (; n > 0; n--)
    sum *= 2;
  for (; n < 0; n++)
    sum /= 2;
  return sum;
}

#define LN10 2.302585092994046
static double m_pow10(double x) {
  return m_exp(x * LN10);
}
static double m_log10(double x) {
  return m_ln(x) / LN10;
}

/* ---- histogram ----------------------------------------------------------- */

static unsigned bh_index(uint64_t v) {
  if (v < BH_SUB) return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= BH_SUB_BITS */
  unsigned sub = (unsigned)(v >> (e - BH_SUB_BITS)) & (BH_SUB - 1);
  return (e - BH_SUB_BITS + 1) * BH_SUB + sub;
}

void bh_bucket_range(unsigned i, uint64_t *lo, uint64_t *hi) {
  if (i < BH_SUB) {
    *lo = i;
    *hi = i + 1;
    return;
  }
  unsigned e = i / BH_SUB + BH_SUB_BITS - 1, sub = i % BH_SUB;
  uint64_t step = (uint64_t)1 << (e - BH_SUB_BITS);
  *lo = ((uint64_t)1 << e) + sub * step;
  *hi = *lo + step;
}

void bh_add(bh *h, uint64_t v) {
  h->n[bh_index(v)]++;
  if (h->count == 0 || v < h->min) h->min = v;
  if (v > h->max) h->max = v;
  h->count++;
  h->sum += (double)v;
}

void bh_merge(bh *into, const bh *from) {
  if (from->count == 0) return;
  for (unsigned i = 0; i < BH_BUCKETS; i++)
    into->n[i] += from->n[i];
  if (into->count == 0 || from->min < into->min) into->min = from->min;
  if (from->max > into->max) into->max = from->max;
  into->count += from->count;
  into->sum += from->sum;
}

double bh_quantile(const bh *h, double q) {
  if (h->count == 0) return 0;
  if (q >= 1) return (double)h->max;
  double wq = q * (double)h->count;
  uint64_t want = (uint64_t)wq, seen = 0;
  if ((double)want < wq) want++;
  if (want == 0) want = 1;
  for (unsigned i = 0; i < BH_BUCKETS; i++) {
    if ((seen += h->n[i]) >= want) {
      uint64_t lo, hi;
      bh_bucket_range(i, &lo, &hi);
      double mid = ((double)lo + (double)(hi - 1)) / 2;
      /* the midpoint never beats the extremes actually seen */
      if (mid > (double)h->max) mid = (double)h->max;
      if (mid < (double)h->min) mid = (double)h->min;
      return mid;
    }
  }
  return (double)h->max;
}

/* ---- text ------------------------------------------------------------------
 */

void bench_err_name(const bench_err *e, char *out, size_t cap) {
  if (e->http_status)
    snprintf(out, cap, "HTTP %d", e->http_status);
  else
    snprintf(out, cap, "%s",
             e->err < -4000 || e->err > -200 ? dx_errname(e->err)
                                             : dx_strerror(e->err));
}

static double ms(double ns) {
  return ns / 1e6;
}

void bench_print_text(const bench_result *r, FILE *f) {
  double el = r->elapsed_s > 0 ? r->elapsed_s : 1;
  fprintf(f,
          "\n%s: %u connections, %u thread%s, %.1f s, %zu-byte %s "
          "messages, %s\n",
          r->url, r->connections, r->threads, r->threads == 1 ? "" : "s", el,
          r->size, r->binary ? "binary" : "text",
          r->correlate ? "correlated request/response" : "echo");
  fprintf(f, "  connections  %llu opened, %llu failed (of %llu)\n",
          (unsigned long long)r->opened, (unsigned long long)r->failed,
          (unsigned long long)r->attempted);
  fprintf(f,
          "  open time    p50 %.2f ms  p99 %.2f ms  (TCP + TLS + "
          "upgrade)\n",
          ms(bh_quantile(&r->connect, .5)), ms(bh_quantile(&r->connect, .99)));
  fprintf(f, "  messages     sent %llu (%.0f/s)  received %llu (%.0f/s)\n",
          (unsigned long long)r->sent, (double)r->sent / el,
          (unsigned long long)r->received, (double)r->received / el);
  fprintf(f,
          "  accounting   sent %llu = answered %llu + lost %llu;  "
          "unmatched replies %llu\n",
          (unsigned long long)r->sent, (unsigned long long)r->matched,
          (unsigned long long)r->lost, (unsigned long long)r->unmatched);
  const bh *h = &r->latency;
  fprintf(f,
          "  latency      p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  "
          "max %.3f ms  (mean %.3f, n=%llu)\n",
          ms(bh_quantile(h, .5)), ms(bh_quantile(h, .9)),
          ms(bh_quantile(h, .99)), ms(bh_quantile(h, .999)), ms((double)h->max),
          h->count ? ms(h->sum / (double)h->count) : 0.0,
          (unsigned long long)h->count);
  fprintf(f, "  errors       %llu", (unsigned long long)r->errors);
  for (unsigned i = 0; i < r->nerrs; i++) {
    char name[64];
    bench_err_name(&r->errs[i], name, sizeof name);
    fprintf(f, "%s%s %llu", i ? ", " : ": ", name,
            (unsigned long long)r->errs[i].count);
  }
  fputs("\n  close codes ", f);
  bool any = false;
  for (unsigned c = 0; c < BENCH_CLOSE_CODES; c++)
    if (r->close_codes[c]) {
      fprintf(f, " %u x%llu", c, (unsigned long long)r->close_codes[c]);
      any = true;
    }
  fputs(any ? "\n" : " none\n", f);
}

/* ---- JSON ------------------------------------------------------------------
 */

static json_t *pct_obj(const bh *h) {
  return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "count",
                   (json_int_t)h->count, "min", ms((double)h->min), "mean",
                   h->count ? ms(h->sum / (double)h->count) : 0.0, "p50",
                   ms(bh_quantile(h, .5)), "p90", ms(bh_quantile(h, .9)), "p99",
                   ms(bh_quantile(h, .99)), "p99_9", ms(bh_quantile(h, .999)),
                   "max", ms((double)h->max));
}

int bench_write_json(const bench_result *r, const char *path) {
  double el = r->elapsed_s > 0 ? r->elapsed_s : 1;
  json_t *root = json_object();
  json_object_set_new(
      root, "config",
      json_pack("{s:s,s:I,s:I,s:f,s:f,s:I,s:s,s:I,s:f,s:b,s:o}", "url", r->url,
                "connections", (json_int_t)r->connections, "threads",
                (json_int_t)r->threads, "duration_s", r->duration_ms / 1e3,
                "ramp_up_s", r->ramp_ms / 1e3, "size", (json_int_t)r->size,
                "mode", r->rate > 0 ? "rate" : "closed", "inflight",
                (json_int_t)r->inflight, "rate", r->rate, "binary", r->binary,
                "correlate",
                r->correlate ? json_string(r->correlate) : json_null()));
  json_object_set_new(root, "elapsed_s", json_real(el));
  json_object_set_new(root, "connections",
                      json_pack("{s:I,s:I,s:I}", "attempted",
                                (json_int_t)r->attempted, "opened",
                                (json_int_t)r->opened, "failed",
                                (json_int_t)r->failed));
  json_object_set_new(root, "connect_ms", pct_obj(&r->connect));
  json_object_set_new(
      root, "messages",
      json_pack("{s:I,s:I,s:I,s:I,s:I,s:f,s:f}", "sent", (json_int_t)r->sent,
                "received", (json_int_t)r->received, "matched",
                (json_int_t)r->matched, "lost", (json_int_t)r->lost,
                "unmatched", (json_int_t)r->unmatched, "sent_per_s",
                (double)r->sent / el, "received_per_s",
                (double)r->received / el));
  json_t *lat = pct_obj(&r->latency);
  json_t *hist = json_array();
  for (unsigned i = 0; i < BH_BUCKETS; i++)
    if (r->latency.n[i]) {
      uint64_t lo, hi;
      bh_bucket_range(i, &lo, &hi);
      json_array_append_new(hist,
                            json_pack("[f,f,I]", ms((double)lo), ms((double)hi),
                                      (json_int_t)r->latency.n[i]));
    }
  json_object_set_new(lat, "histogram", hist);
  json_object_set_new(root, "latency_ms", lat);
  json_t *kinds = json_object();
  for (unsigned i = 0; i < r->nerrs; i++) {
    char name[64];
    bench_err_name(&r->errs[i], name, sizeof name);
    json_object_set_new(kinds, name,
                        json_integer((json_int_t)r->errs[i].count));
  }
  json_object_set_new(
      root, "errors",
      json_pack("{s:I,s:o}", "total", (json_int_t)r->errors, "by_kind", kinds));
  json_t *codes = json_object();
  for (unsigned c = 0; c < BENCH_CLOSE_CODES; c++)
    if (r->close_codes[c]) {
      char k[8];
      snprintf(k, sizeof k, "%u", c);
      json_object_set_new(codes, k,
                          json_integer((json_int_t)r->close_codes[c]));
    }
  json_object_set_new(root, "close_codes", codes);
  json_t *series = json_array();
  for (unsigned s = 0; s < r->nsec; s++)
    json_array_append_new(series,
                          json_pack("{s:I,s:I,s:I,s:f}", "t", (json_int_t)s + 1,
                                    "sent", (json_int_t)r->sec_sent[s],
                                    "received", (json_int_t)r->sec_recv[s],
                                    "p99_ms", r->sec_p99_ms[s]));
  json_object_set_new(root, "series", series);
  int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
  json_decref(root);
  return rc;
}

/* ---- HTML ------------------------------------------------------------------
 */

static void html_esc(FILE *f, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '<':
      fputs("&lt;", f);
      break;
    case '>':
      fputs("&gt;", f);
      break;
    case '&':
      fputs("&amp;", f);
      break;
    case '"':
      fputs("&quot;", f);
      break;
    default:
      fputc(*s, f);
    }
  }
}

/* A "nice" axis maximum: 1, 2, 2.5 or 5 times a power of ten. */
static double nice_max(double v) {
  if (v <= 0) return 1;
  double p = 1;
  while (p * 10 <= v)
    p *= 10;
  while (p > v)
    p /= 10;
  const double m[] = {1, 2, 2.5, 5, 10};
  for (int i = 0; i < 5; i++)
    if (m[i] * p >= v) return m[i] * p;
  return 10 * p;
}

#define CW 720.0 /* chart plot area */
#define CH 260.0
#define CL 64.0 /* left margin */
#define CT 16.0

static void svg_open(FILE *f, const char *id, const char *title) {
  fprintf(f,
          "<figure><figcaption>%s</figcaption>\n"
          "<svg id=\"%s\" class=\"chart\" viewBox=\"0 0 %.0f %.0f\" "
          "xmlns=\"http://www.w3.org/2000/svg\" role=\"img\">\n",
          title, id, CL + CW + 24, CT + CH + 48);
}

static void svg_yaxis(FILE *f, double ymax, const char *unit) {
  for (int i = 0; i <= 4; i++) {
    double y = CT + CH - CH * i / 4;
    fprintf(f,
            "<line class=\"grid\" x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" "
            "y2=\"%.1f\"/><text class=\"tick\" x=\"%.0f\" y=\"%.1f\" "
            "text-anchor=\"end\">%g%s</text>\n",
            CL, CL + CW, y, y, CL - 8, y + 4, ymax * i / 4, i == 4 ? unit : "");
  }
}

/* The percentile curve: x is -log10(1 - q) (50% .. 99.99%), the usual way
 * to show tails; y the latency. */
static void svg_latency(FILE *f, const bench_result *r) {
  const bh *h = &r->latency;
  svg_open(f, "latency-chart", "Latency by percentile");
  double ymax = nice_max(ms((double)h->max) * 1.05);
  svg_yaxis(f, ymax, " ms");
  const double xmax = 4; /* 99.99% */
  const char *lab[] = {"0%", "90%", "99%", "99.9%", "99.99%"};
  for (int i = 0; i <= 4; i++) {
    double x = CL + CW * i / xmax;
    fprintf(f,
            "<text class=\"tick\" x=\"%.1f\" y=\"%.0f\" "
            "text-anchor=\"middle\">%s</text>\n",
            x, CT + CH + 20, lab[i]);
  }
  fputs("<path class=\"line lat\" d=\"", f);
  for (int i = 0; i <= 400; i++) {
    double xv = xmax * i / 400, q = 1 - m_pow10(-xv);
    double y = ms(bh_quantile(h, q));
    fprintf(f, "%s%.1f %.1f", i ? " L" : "M", CL + CW * xv / xmax,
            CT + CH - CH * (y / ymax));
  }
  fputs("\"/>\n", f);
  const double qs[] = {.5, .9, .99, .999};
  const char *qn[] = {"p50", "p90", "p99", "p99.9"};
  for (int i = 0; i < 4; i++) {
    double xv = -m_log10(1 - qs[i]), y = ms(bh_quantile(h, qs[i]));
    double px = CL + CW * xv / xmax, py = CT + CH - CH * (y / ymax);
    fprintf(f,
            "<circle class=\"dot\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\"/>"
            "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\">%s %.2f ms</text>\n",
            px, py, px + 6, py - 8, qn[i], y);
  }
  fprintf(f,
          "<text class=\"axis\" x=\"%.0f\" y=\"%.0f\" "
          "text-anchor=\"middle\">percentile</text></svg></figure>\n",
          CL + CW / 2, CT + CH + 42);
}

/* The latency distribution: the histogram's buckets regrouped into at most
 * 60 bars on a log scale of latency between min and max. */
static void svg_histogram(FILE *f, const bench_result *r) {
  const bh *h = &r->latency;
  svg_open(f, "histogram-chart", "Latency distribution");
  enum { NB = 60 };
  double bins[NB] = {0}, lo = h->min > 0 ? (double)h->min : 1,
         hi = (double)h->max + 1;
  if (hi <= lo * 1.01) hi = lo * 1.01;
  double llo = m_ln(lo), lhi = m_ln(hi), peak = 0;
  for (unsigned i = 0; i < BH_BUCKETS; i++)
    if (h->n[i]) {
      uint64_t a, b;
      bh_bucket_range(i, &a, &b);
      double mid = ((double)a + (double)b) / 2;
      if (mid < lo) mid = lo;
      int k = (int)((m_ln(mid) - llo) / (lhi - llo) * NB);
      if (k < 0) k = 0;
      if (k >= NB) k = NB - 1;
      bins[k] += (double)h->n[i];
    }
  for (int k = 0; k < NB; k++)
    if (bins[k] > peak) peak = bins[k];
  double ymax = nice_max(peak ? peak : 1);
  svg_yaxis(f, ymax, "");
  fputs("<path class=\"bars\" d=\"", f);
  double bw = CW / NB;
  for (int k = 0; k < NB; k++) {
    double bh_ = CH * bins[k] / ymax;
    if (bins[k] > 0 && bh_ < 1) bh_ = 1;
    fprintf(f, "M%.1f %.1f h%.1f v%.1f h%.1f Z ", CL + k * bw + 1, CT + CH,
            bw - 2, -bh_, -(bw - 2));
  }
  fputs("\"/>\n", f);
  for (int i = 0; i <= 4; i++) {
    double v = m_exp(llo + (lhi - llo) * i / 4);
    fprintf(f,
            "<text class=\"tick\" x=\"%.1f\" y=\"%.0f\" "
            "text-anchor=\"middle\">%.3g ms</text>\n",
            CL + CW * i / 4, CT + CH + 20, ms(v));
  }
  fprintf(f,
          "<text class=\"axis\" x=\"%.0f\" y=\"%.0f\" "
          "text-anchor=\"middle\">latency (log scale), replies per "
          "bin</text></svg></figure>\n",
          CL + CW / 2, CT + CH + 42);
}

static void svg_series(FILE *f, const uint64_t *v, unsigned n, double ymax,
                       const char *cls) {
  fprintf(f, "<path class=\"line %s\" d=\"", cls);
  for (unsigned s = 0; s < n; s++) {
    /* each second drawn across its own slot */
    double y = CT + CH - CH * ((double)v[s] / ymax);
    fprintf(f, "%s%.1f %.1f L%.1f %.1f", s ? " L" : "M", CL + CW * s / n, y,
            CL + CW * (s + 1) / n, y);
  }
  fputs("\"/>\n", f);
}

static void svg_throughput(FILE *f, const bench_result *r) {
  svg_open(f, "throughput-chart", "Throughput over time (messages per second)");
  double peak = 1;
  for (unsigned s = 0; s < r->nsec; s++) {
    if ((double)r->sec_sent[s] > peak) peak = (double)r->sec_sent[s];
    if ((double)r->sec_recv[s] > peak) peak = (double)r->sec_recv[s];
  }
  double ymax = nice_max(peak * 1.05);
  svg_yaxis(f, ymax, "/s");
  if (r->nsec > 0) {
    svg_series(f, r->sec_sent, r->nsec, ymax, "sent");
    svg_series(f, r->sec_recv, r->nsec, ymax, "recv");
  }
  unsigned step = r->nsec > 12 ? (r->nsec + 11) / 12 : 1;
  for (unsigned s = 0; s < r->nsec; s += step)
    fprintf(f,
            "<text class=\"tick\" x=\"%.1f\" y=\"%.0f\" "
            "text-anchor=\"middle\">%us</text>\n",
            CL + CW * (s + 0.5) / r->nsec, CT + CH + 20, s + 1);
  fprintf(f,
          "<g class=\"legend\"><rect class=\"sent\" x=\"%.0f\" y=\"%.0f\" "
          "width=\"14\" height=\"4\"/><text x=\"%.0f\" y=\"%.0f\">sent"
          "</text><rect class=\"recv\" x=\"%.0f\" y=\"%.0f\" width=\"14\" "
          "height=\"4\"/><text x=\"%.0f\" y=\"%.0f\">received</text></g>"
          "</svg></figure>\n",
          CL + CW - 170, CT + 4, CL + CW - 150, CT + 10, CL + CW - 90, CT + 4,
          CL + CW - 70, CT + 10);
}

/* p99 of the replies received in each second: where the tail moved. */
static void svg_p99(FILE *f, const bench_result *r) {
  svg_open(f, "p99-chart", "p99 latency per second");
  double peak = 0;
  for (unsigned s = 0; s < r->nsec; s++)
    if (r->sec_p99_ms[s] > peak) peak = r->sec_p99_ms[s];
  double ymax = nice_max(peak > 0 ? peak * 1.05 : 1);
  svg_yaxis(f, ymax, " ms");
  fputs("<path class=\"line p99\" d=\"", f);
  for (unsigned s = 0; s < r->nsec; s++) {
    double y = CT + CH - CH * (r->sec_p99_ms[s] / ymax);
    fprintf(f, "%s%.1f %.1f L%.1f %.1f", s ? " L" : "M", CL + CW * s / r->nsec,
            y, CL + CW * (s + 1) / r->nsec, y);
  }
  fputs("\"/>\n", f);
  unsigned step = r->nsec > 12 ? (r->nsec + 11) / 12 : 1;
  for (unsigned s = 0; s < r->nsec; s += step)
    fprintf(f,
            "<text class=\"tick\" x=\"%.1f\" y=\"%.0f\" "
            "text-anchor=\"middle\">%us</text>\n",
            CL + CW * (s + 0.5) / r->nsec, CT + CH + 20, s + 1);
  fputs("</svg></figure>\n", f);
}

static const char *css =
    "*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-"
    "system,'Segoe UI',Roboto,sans-serif;background:#0f172a;color:#e2e8f0}"
    "main{max-width:1000px;margin:0 auto;padding:32px 24px}"
    "h1{font-size:26px;margin:0 0 4px}h1 span{color:#38bdf8}"
    ".sub{color:#94a3b8;margin:0 0 24px;word-break:break-all}"
    ".cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr"
    "));gap:12px;margin-bottom:24px}.card{background:#1e293b;border-radius:"
    "12px;padding:14px 16px;border:1px solid #334155}.card b{display:block;"
    "font-size:24px;color:#f8fafc}.card small{color:#94a3b8;text-transform:"
    "uppercase;letter-spacing:.06em;font-size:11px}.card.bad b{color:#f87171}"
    "figure{margin:0 0 24px;background:#1e293b;border-radius:12px;padding:16px;"
    "border:1px solid #334155}figcaption{font-weight:600;margin-bottom:8px}"
    "svg.chart{width:100%;height:auto}.grid{stroke:#334155;stroke-width:1}"
    ".tick{fill:#94a3b8;font-size:12px}.axis{fill:#cbd5e1;font-size:12px}"
    ".line{fill:none;stroke-width:2.5;stroke-linejoin:round}.lat{stroke:#"
    "38bdf8}"
    ".line.sent{stroke:#a78bfa}.line.p99{stroke:#fbbf24}"
    ".line.sent{stroke:#a78bfa}.line.recv{stroke:#34d399;stroke-dasharray:6 4}"
    "rect.sent{fill:#a78bfa}rect.recv{fill:#34d399}.legend text{fill:#cbd5e1;"
    "font-size:12px}.bars{fill:#38bdf8;opacity:.85}.dot{fill:#f472b6}"
    ".lbl{fill:#f9a8d4;font-size:12px}table{width:100%;border-collapse:"
    "collapse;background:#1e293b;border-radius:12px;overflow:hidden}"
    "td,th{padding:8px 14px;border-bottom:1px solid #334155;text-align:left}"
    "th{color:#94a3b8;font-weight:500;width:40%}td{font-variant-numeric:"
    "tabular-nums}footer{color:#64748b;font-size:12px;margin-top:16px}";

static void card(FILE *f, const char *label, const char *val, bool bad) {
  fprintf(f, "<div class=\"card%s\"><small>%s</small><b>%s</b></div>\n",
          bad ? " bad" : "", label, val);
}

static void row(FILE *f, const char *k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void row(FILE *f, const char *k, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(f, "<tr><th>%s</th><td>", k);
  html_esc(f, buf);
  fputs("</td></tr>\n", f);
}

int bench_write_html(const bench_result *r, const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  double el = r->elapsed_s > 0 ? r->elapsed_s : 1;
  const bh *h = &r->latency;
  fprintf(f,
          "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8"
          "\"><meta name=\"viewport\" content=\"width=device-width\">"
          "<title>duplex bench report</title><style>%s</style></head>"
          "<body><main>\n<h1><span>duplex</span> bench</h1><p class=\"sub\">",
          css);
  html_esc(f, r->url);
  fprintf(f,
          " &middot; %u connections &middot; %u thread%s &middot; %.1f s "
          "&middot; %zu-byte %s &middot; %s</p>\n<div class=\"cards\">\n",
          r->connections, r->threads, r->threads == 1 ? "" : "s", el, r->size,
          r->binary ? "binary" : "text",
          r->correlate ? "request/response" : "echo");
  char v[64];
  snprintf(v, sizeof v, "%.0f", (double)r->received / el);
  card(f, "received msgs/s", v, false);
  snprintf(v, sizeof v, "%.2f ms", ms(bh_quantile(h, .5)));
  card(f, "latency p50", v, false);
  snprintf(v, sizeof v, "%.2f ms", ms(bh_quantile(h, .99)));
  card(f, "latency p99", v, false);
  snprintf(v, sizeof v, "%llu", (unsigned long long)r->errors);
  card(f, "errors", v, r->errors > 0);
  snprintf(v, sizeof v, "%llu", (unsigned long long)r->lost);
  card(f, "lost", v, r->lost > 0);
  fputs("</div>\n", f);
  svg_latency(f, r);
  svg_histogram(f, r);
  svg_throughput(f, r);
  if (r->nsec > 0) svg_p99(f, r);
  fputs("<table id=\"summary\">\n", f);
  row(f, "Connections", "%llu opened, %llu failed (of %llu)",
      (unsigned long long)r->opened, (unsigned long long)r->failed,
      (unsigned long long)r->attempted);
  row(f, "Open time (TCP + TLS + upgrade)", "p50 %.2f ms, p99 %.2f ms",
      ms(bh_quantile(&r->connect, .5)), ms(bh_quantile(&r->connect, .99)));
  row(f, "Messages sent", "%llu (%.0f/s)", (unsigned long long)r->sent,
      (double)r->sent / el);
  row(f, "Messages received", "%llu (%.0f/s)", (unsigned long long)r->received,
      (double)r->received / el);
  row(f, "Accounting", "sent %llu = answered %llu + lost %llu; unmatched %llu",
      (unsigned long long)r->sent, (unsigned long long)r->matched,
      (unsigned long long)r->lost, (unsigned long long)r->unmatched);
  row(f, "Latency", "p50 %.3f, p90 %.3f, p99 %.3f, p99.9 %.3f, max %.3f ms",
      ms(bh_quantile(h, .5)), ms(bh_quantile(h, .9)), ms(bh_quantile(h, .99)),
      ms(bh_quantile(h, .999)), ms((double)h->max));
  char eb[400] = "none";
  size_t o = 0;
  for (unsigned i = 0; i < r->nerrs && o < sizeof eb - 80; i++) {
    char name[64];
    bench_err_name(&r->errs[i], name, sizeof name);
    o += (size_t)snprintf(eb + o, sizeof eb - o, "%s%s: %llu", i ? ", " : "",
                          name, (unsigned long long)r->errs[i].count);
  }
  row(f, "Errors", "%llu (%s)", (unsigned long long)r->errors, eb);
  char cb[400] = "none";
  o = 0;
  for (unsigned c = 0; c < BENCH_CLOSE_CODES && o < sizeof cb - 40; c++)
    if (r->close_codes[c])
      o += (size_t)snprintf(cb + o, sizeof cb - o, "%s%u x%llu", o ? ", " : "",
                            c, (unsigned long long)r->close_codes[c]);
  row(f, "Close codes", "%s", cb);
  fprintf(f,
          "</table>\n<footer>Generated by duplex %s bench. Latencies from "
          "a log-linear histogram (%u sub-buckets per power of two).</footer>"
          "\n</main></body></html>\n",
          DX_VERSION_STRING, BH_SUB);
  return fclose(f) == 0 ? 0 : -1;
}
