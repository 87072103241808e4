/*
 * duplex probe — runs a scenario file (scenario.h) against a WebSocket
 * server and reports each step: text (default), JSON (--json), JUnit XML
 * (--junit FILE). With --every it runs again and again, logs one line per
 * run and serves Prometheus metrics (--metrics-port) from a dx_server on
 * its own thread. Public headers only.
 */
#include "app.h"
#include "probe_run.h"
#include "scenario.h"

#include <duplex/net.h>
#include <duplex/server.h>

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Exit statuses (README.md, --help). */
enum { PR_OK = 0, PR_FAILED = 1, PR_ERROR = 2 };

static const char *probe_help =
    "usage: duplex probe [options] SCENARIO.yaml\n"
    "\n"
    "Runs the steps of a scenario file against a WebSocket server and\n"
    "reports each one with its timing (see README.md, 'duplex probe').\n"
    "\n"
    "      --json            results as JSON on stdout\n"
    "      --junit FILE      also write JUnit XML (one testcase per step)\n"
    "  -q, --quiet           no report on stdout, only the exit status\n"
    "      --every DUR       monitor: run every DUR (\"30s\") until SIGINT/\n"
    "                        SIGTERM, one log line per run\n"
    "      --runs N          with --every: stop after N runs\n"
    "      --metrics-port N  with --every: Prometheus metrics on\n"
    "                        http://127.0.0.1:N/metrics\n"
    "      --fail-threshold N  with --every: alert after N consecutive\n"
    "                        failed runs (1)\n"
    "  -h, --help            this text\n"
    "\n"
    "Exit status:\n"
    "  0  every step passed (monitor: stopped by a signal or --runs)\n"
    "  1  a check failed; a connection that cannot be made counts as a\n"
    "     failed check (of its connect step)\n"
    "  2  the scenario could not run: usage, unreadable or invalid file\n"
    "     (FILE:LINE: reason), metrics port busy\n";

typedef struct popts {
  const char *file;
  const char *junit;
  bool json, quiet;
  unsigned every_ms;
  unsigned long runs;
  int metrics_port;
  unsigned long threshold;
} popts;

/* ---- reports --------------------------------------------------------------
 */

static const char *status_name(step_status s) {
  return s == STEP_PASSED ? "pass" : s == STEP_FAILED ? "fail" : "skip";
}

static void print_text(const scenario *sc, const probe_result *res) {
  for (size_t i = 0; i < sc->nsteps; i++) {
    const step_result *s = &res->steps[i];
    if (s->status == STEP_SKIPPED) {
      printf("skip %2zu  line %-4zu %s\n", i + 1, sc->steps[i].line,
             s->label[0] ? s->label : step_kind_name(sc->steps[i].kind));
      continue;
    }
    printf("%s %2zu  line %-4zu %s  (%.1f ms",
           s->status == STEP_PASSED ? "ok  " : "FAIL", i + 1, sc->steps[i].line,
           s->label, s->duration_ms);
    if (s->dns_ms >= 0) printf("; dns %.1f ms", s->dns_ms);
    if (s->tcp_ms >= 0) printf("; tcp %.1f ms", s->tcp_ms);
    if (s->tls_ms >= 0) printf("; tls %.1f ms", s->tls_ms);
    if (s->upgrade_ms >= 0) printf("; handshake %.1f ms", s->upgrade_ms);
    if (s->open_ms >= 0) printf("; open %.1f ms in all", s->open_ms);
    if (s->response_ms >= 0) printf("; response %.1f ms", s->response_ms);
    printf(")%s%s\n", s->detail[0] ? ": " : "", s->detail);
  }
  size_t passed = 0;
  for (size_t i = 0; i < sc->nsteps; i++)
    passed += res->steps[i].status == STEP_PASSED;
  printf("%s: %zu/%zu steps passed in %.1f ms\n", res->ok ? "PASS" : "FAIL",
         passed, sc->nsteps, res->duration_ms);
}

static void ms_field(json_t *o, const char *key, double v) {
  if (v >= 0) json_object_set_new(o, key, json_real(v));
}

static json_t *result_json(const scenario *sc, const probe_result *res) {
  json_t *steps = json_array();
  for (size_t i = 0; i < sc->nsteps; i++) {
    const step_result *s = &res->steps[i];
    json_t *o = json_object();
    json_object_set_new(o, "step", json_integer((json_int_t)i + 1));
    json_object_set_new(o, "line", json_integer((json_int_t)sc->steps[i].line));
    json_object_set_new(o, "kind",
                        json_string(step_kind_name(sc->steps[i].kind)));
    json_object_set_new(o, "name",
                        json_string(s->label[0]
                                        ? s->label
                                        : step_kind_name(sc->steps[i].kind)));
    json_object_set_new(o, "status", json_string(status_name(s->status)));
    if (s->status != STEP_SKIPPED) {
      ms_field(o, "start_ms", s->start_ms);
      ms_field(o, "duration_ms", s->duration_ms);
      ms_field(o, "dns_ms", s->dns_ms);
      ms_field(o, "open_ms", s->open_ms);
      ms_field(o, "tcp_ms", s->tcp_ms);
      ms_field(o, "tls_ms", s->tls_ms);
      ms_field(o, "handshake_ms", s->upgrade_ms);
      ms_field(o, "response_ms", s->response_ms);
      json_object_set_new(o, "detail", json_string(s->detail));
    }
    json_array_append_new(steps, o);
  }
  json_t *top = json_object();
  json_object_set_new(top, "scenario", json_string(sc->path));
  json_object_set_new(top, "ok", json_boolean(res->ok));
  json_object_set_new(top, "duration_ms", json_real(res->duration_ms));
  json_object_set_new(top, "steps", steps);
  return top;
}

static void xml_escape(FILE *f, const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '<')
      fputs("&lt;", f);
    else if (ch == '>')
      fputs("&gt;", f);
    else if (ch == '&')
      fputs("&amp;", f);
    else if (ch == '"')
      fputs("&quot;", f);
    else if (ch < 0x20 && ch != '\t' && ch != '\n')
      fputc(' ', f); /* not allowed in XML 1.0 */
    else
      fputc(ch, f);
  }
}

static int write_junit(const char *path, const scenario *sc,
                       const probe_result *res) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  size_t failures = 0, skipped = 0;
  for (size_t i = 0; i < sc->nsteps; i++) {
    failures += res->steps[i].status == STEP_FAILED;
    skipped += res->steps[i].status == STEP_SKIPPED;
  }
  fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n", f);
  fputs("  <testsuite name=\"", f);
  xml_escape(f, sc->path);
  fprintf(f,
          "\" tests=\"%zu\" failures=\"%zu\" errors=\"0\" skipped=\"%zu\" "
          "time=\"%.3f\">\n",
          sc->nsteps, failures, skipped, res->duration_ms / 1000);
  for (size_t i = 0; i < sc->nsteps; i++) {
    const step_result *s = &res->steps[i];
    char name[300];
    snprintf(name, sizeof name, "%02zu %s", i + 1,
             s->label[0] ? s->label : step_kind_name(sc->steps[i].kind));
    fputs("    <testcase classname=\"duplex.probe\" name=\"", f);
    xml_escape(f, name);
    fprintf(f, "\" time=\"%.3f\"", s->duration_ms / 1000);
    if (s->status == STEP_PASSED) {
      fputs("/>\n", f);
      continue;
    }
    fputs(">\n", f);
    if (s->status == STEP_SKIPPED) {
      fputs("      <skipped message=\"an earlier step failed\"/>\n", f);
    } else {
      fprintf(f, "      <failure type=\"%s\" message=\"",
              step_kind_name(sc->steps[i].kind));
      xml_escape(f, s->detail);
      fprintf(f, "\">%s:%zu: ", sc->path, sc->steps[i].line);
      xml_escape(f, s->detail);
      fputs("</failure>\n", f);
    }
    fputs("    </testcase>\n", f);
  }
  fputs("  </testsuite>\n</testsuites>\n", f);
  if (fclose(f) != 0 || rename(tmp, path) != 0) {
    remove(tmp);
    return -1;
  }
  return 0;
}

/* ---- monitor mode: metrics --------------------------------------------------
 */

typedef struct metrics {
  pthread_mutex_t lock;
  char *text; /* the exposition body, replaced after every run */
} metrics;

static void on_metrics(dx_http_exchange *x, const dx_http_view *req, void *ud) {
  metrics *m = ud;
  if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
    dx_http_respond(x, 405, "text/plain", "GET only\n", 9, "Allow: GET\r\n");
    return;
  }
  pthread_mutex_lock(&m->lock);
  const char *t = m->text ? m->text : "# no run yet\n";
  dx_http_respond(x, 200, "text/plain; version=0.0.4; charset=utf-8", t,
                  strlen(t), NULL);
  pthread_mutex_unlock(&m->lock);
}

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k =
        vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->p && b->n + (size_t)k < b->cap) {
      b->n += (size_t)k;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 4096;
    while (cap < b->n + (size_t)k + 1)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return;
    b->p = p;
    b->cap = cap;
  }
}

typedef struct mon_state {
  unsigned long runs, failures, consecutive;
  bool alerting;
} mon_state;

static void publish(metrics *m, const scenario *sc, const probe_result *res,
                    const mon_state *st) {
  sbuf b = {0};
  sb_printf(&b,
            "# HELP duplex_probe_up 1 when the last run could connect.\n"
            "# TYPE duplex_probe_up gauge\nduplex_probe_up %d\n",
            res->connected);
  sb_printf(&b,
            "# HELP duplex_probe_success 1 when every step of the last "
            "run passed.\n# TYPE duplex_probe_success gauge\n"
            "duplex_probe_success %d\n",
            res->ok);
  sb_printf(&b,
            "# HELP duplex_probe_duration_seconds Wall time of the last "
            "run.\n# TYPE duplex_probe_duration_seconds gauge\n"
            "duplex_probe_duration_seconds %.6f\n",
            res->duration_ms / 1000);
  sb_printf(&b, "# HELP duplex_probe_step_duration_seconds Wall time of each "
                "step of the last run (skipped steps: absent).\n"
                "# TYPE duplex_probe_step_duration_seconds gauge\n");
  for (size_t i = 0; i < sc->nsteps; i++)
    if (res->steps[i].status != STEP_SKIPPED)
      sb_printf(&b,
                "duplex_probe_step_duration_seconds{step=\"%zu\",kind=\"%s\","
                "line=\"%zu\"} %.6f\n",
                i + 1, step_kind_name(sc->steps[i].kind), sc->steps[i].line,
                res->steps[i].duration_ms / 1000);
  sb_printf(&b, "# HELP duplex_probe_step_success 1 passed, 0 failed or "
                "skipped, per step of the last run.\n"
                "# TYPE duplex_probe_step_success gauge\n");
  for (size_t i = 0; i < sc->nsteps; i++)
    sb_printf(&b,
              "duplex_probe_step_success{step=\"%zu\",kind=\"%s\",line=\"%zu\"}"
              " %d\n",
              i + 1, step_kind_name(sc->steps[i].kind), sc->steps[i].line,
              res->steps[i].status == STEP_PASSED);
  sb_printf(&b,
            "# HELP duplex_probe_consecutive_failures Failed runs in a "
            "row.\n# TYPE duplex_probe_consecutive_failures gauge\n"
            "duplex_probe_consecutive_failures %lu\n",
            st->consecutive);
  sb_printf(&b,
            "# HELP duplex_probe_alerting 1 after --fail-threshold "
            "failed runs in a row.\n# TYPE duplex_probe_alerting gauge\n"
            "duplex_probe_alerting %d\n",
            st->alerting);
  sb_printf(&b,
            "# TYPE duplex_probe_runs_total counter\n"
            "duplex_probe_runs_total %lu\n"
            "# TYPE duplex_probe_failures_total counter\n"
            "duplex_probe_failures_total %lu\n",
            st->runs, st->failures);
  sb_printf(&b,
            "# TYPE duplex_probe_last_run_timestamp_seconds gauge\n"
            "duplex_probe_last_run_timestamp_seconds %lld\n",
            (long long)time(NULL));
  pthread_mutex_lock(&m->lock);
  free(m->text);
  m->text = b.p;
  pthread_mutex_unlock(&m->lock);
}

static void *server_thread(void *arg) {
  dx_server_run(arg);
  return NULL;
}

static void log_line(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...) {
  char ts[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  printf("%s ", ts);
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

static void log_run(const scenario *sc, const probe_result *res, mon_state *st,
                    unsigned long threshold) {
  st->runs++;
  if (res->ok) {
    log_line("run %lu: ok, %zu steps in %.1f ms", st->runs, sc->nsteps,
             res->duration_ms);
    if (st->alerting)
      log_line("RECOVERED after %lu failed runs", st->consecutive);
    st->consecutive = 0;
    st->alerting = false;
    return;
  }
  st->failures++;
  st->consecutive++;
  size_t i = res->failed_step;
  log_line("run %lu: FAIL at step %zu (%s, line %zu): %s; %lu in a row",
           st->runs, i + 1, step_kind_name(sc->steps[i].kind),
           sc->steps[i].line, res->steps[i].detail, st->consecutive);
  if (!st->alerting && st->consecutive >= threshold) {
    st->alerting = true;
    log_line("ALERT: %lu consecutive failed runs (threshold %lu)",
             st->consecutive, threshold);
  }
}

/* Waits up to ms for SIGINT/SIGTERM (blocked). true: a signal came. */
static bool wait_signal(const sigset_t *set, unsigned ms) {
  struct timespec ts = {.tv_sec = ms / 1000,
                        .tv_nsec = (long)(ms % 1000) * 1000000};
  for (;;) {
    int sig = sigtimedwait(set, NULL, &ts);
    if (sig > 0) return true;
    if (errno != EINTR) return false;
  }
}

static int monitor(const popts *o, const scenario *sc, dx_loop *loop) {
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  /* Before any thread: the server and resolver threads inherit the mask,
   * so the signals wait for sigtimedwait. */
  pthread_sigmask(SIG_BLOCK, &set, &old);
  metrics m = {.text = NULL};
  pthread_mutex_init(&m.lock, NULL);
  dx_server *srv = NULL;
  pthread_t th;
  int status = PR_OK;
  if (o->metrics_port) {
    dx_server_config cfg = {
        .host = "127.0.0.1", .port = o->metrics_port, .threads = 1};
    srv = dx_server_new(&cfg);
    int rc = srv ? dx_server_http(srv, "/metrics", on_metrics, &m) : DX_ENOMEM;
    if (!rc) rc = dx_server_start(srv);
    if (rc) {
      fprintf(stderr, "duplex probe: metrics on 127.0.0.1:%d: %s\n",
              o->metrics_port,
              srv && *dx_server_error(srv) ? dx_server_error(srv)
                                           : dx_strerror(rc));
      dx_server_free(srv);
      status = PR_ERROR;
      goto out;
    }
    if (pthread_create(&th, NULL, server_thread, srv)) {
      fprintf(stderr, "duplex probe: cannot start the metrics thread\n");
      dx_server_free(srv);
      status = PR_ERROR;
      goto out;
    }
    log_line("metrics on http://127.0.0.1:%d/metrics", dx_server_port(srv));
  }
  mon_state st = {0};
  unsigned long threshold = o->threshold ? o->threshold : 1;
  for (;;) {
    probe_result res;
    if (probe_run(loop, sc, &res)) {
      fprintf(stderr, "duplex probe: out of memory\n");
      status = PR_ERROR;
      break;
    }
    log_run(sc, &res, &st, threshold);
    if (o->junit && write_junit(o->junit, sc, &res))
      fprintf(stderr, "duplex probe: cannot write %s\n", o->junit);
    if (srv) publish(&m, sc, &res, &st);
    probe_result_free(&res);
    if (o->runs && st.runs >= o->runs) break;
    if (wait_signal(&set, o->every_ms)) {
      log_line("stopping");
      break;
    }
  }
  if (srv) {
    dx_server_shutdown(srv, 1000);
    pthread_join(th, NULL);
    dx_server_free(srv);
  }
out:
  free(m.text);
  pthread_mutex_destroy(&m.lock);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return status;
}

/* ---- options ---------------------------------------------------------- */

/* All usage errors exit PR_ERROR (= APP_USAGE). */
#define usage_error(...) app_usage_error("probe", __VA_ARGS__)

enum { O_JSON = 256, O_JUNIT, O_EVERY, O_RUNS, O_PORT, O_THRESHOLD };

static int parse_options(popts *o, int argc, char **argv) {
  static const struct option opts[] = {
      {"json", no_argument, NULL, O_JSON},
      {"junit", required_argument, NULL, O_JUNIT},
      {"quiet", no_argument, NULL, 'q'},
      {"every", required_argument, NULL, O_EVERY},
      {"runs", required_argument, NULL, O_RUNS},
      {"metrics-port", required_argument, NULL, O_PORT},
      {"fail-threshold", required_argument, NULL, O_THRESHOLD},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  unsigned long n;
  while ((ch = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
    switch (ch) {
    case O_JSON:
      o->json = true;
      break;
    case O_JUNIT:
      o->junit = optarg;
      break;
    case 'q':
      o->quiet = true;
      break;
    case O_EVERY:
      if (!app_parse_duration(optarg, &o->every_ms) || !o->every_ms)
        return usage_error("--every '%s': expected a duration > 0", optarg);
      break;
    case O_RUNS:
      if (!app_parse_ulong(optarg, 1000000000, &o->runs) || !o->runs)
        return usage_error("--runs '%s': expected a number > 0", optarg);
      break;
    case O_PORT:
      if (!app_parse_ulong(optarg, 65535, &n) || !n)
        return usage_error("--metrics-port '%s': expected 1..65535", optarg);
      o->metrics_port = (int)n;
      break;
    case O_THRESHOLD:
      if (!app_parse_ulong(optarg, 1000000, &o->threshold) || !o->threshold)
        return usage_error("--fail-threshold '%s': expected a number > 0",
                           optarg);
      break;
    case 'h':
      fputs(probe_help, stdout);
      return -1;
    default:
      return usage_error("bad option");
    }
  }
  if (optind != argc - 1)
    return usage_error(optind == argc ? "a scenario file is needed"
                                      : "one scenario file only");
  if (!o->every_ms && (o->metrics_port || o->runs || o->threshold))
    return usage_error("--metrics-port, --runs and --fail-threshold go with "
                       "--every");
  o->file = argv[optind];
  return 0;
}

int app_probe(int argc, char **argv);

int app_probe(int argc, char **argv) {
  popts o = {0};
  int rc = parse_options(&o, argc, argv);
  if (rc) return rc < 0 ? PR_OK : rc;
  scenario sc;
  char err[1024];
  if (scenario_load(o.file, &sc, err, sizeof err)) {
    fprintf(stderr, "duplex probe: %s\n", err);
    return PR_ERROR;
  }
  dx_loop *loop = dx_loop_new(NULL);
  if (!loop) {
    fprintf(stderr, "duplex probe: cannot create the event loop: %s\n",
            strerror(errno));
    scenario_free(&sc);
    return PR_ERROR;
  }
  int status;
  if (o.every_ms) {
    status = monitor(&o, &sc, loop);
  } else {
    probe_result res;
    if (probe_run(loop, &sc, &res)) {
      fprintf(stderr, "duplex probe: out of memory\n");
      status = PR_ERROR;
    } else {
      status = res.ok ? PR_OK : PR_FAILED;
      if (o.json) {
        json_t *j = result_json(&sc, &res);
        char *s = json_dumps(j, JSON_INDENT(2));
        if (s) puts(s);
        free(s);
        json_decref(j);
      } else if (!o.quiet) {
        print_text(&sc, &res);
      }
      if (o.junit && write_junit(o.junit, &sc, &res)) {
        fprintf(stderr, "duplex probe: cannot write %s: %s\n", o.junit,
                strerror(errno));
        status = PR_ERROR;
      }
      probe_result_free(&res);
    }
  }
  dx_loop_free(loop);
  scenario_free(&sc);
  fflush(stdout);
  return status;
}
