/*
 * probe_run.h — runs a probe scenario (scenario.h) once on a dx_loop and
 * keeps one result per step. Used by duplex probe (probe.c).
 */
#ifndef DX_APP_PROBE_RUN_H
#define DX_APP_PROBE_RUN_H

#include "scenario.h"

#include <duplex/net.h>

typedef enum step_status {
  STEP_SKIPPED = 0,
  STEP_PASSED,
  STEP_FAILED
} step_status;

typedef struct step_result {
  step_status status;
  double start_ms;    /* since the run started */
  double duration_ms; /* the step's wall time */
  /* connect: the phases dx_client measured (dx_client_timings_get):
   * dns_ms, tcp_ms, tls_ms (wss only), upgrade_ms; open_ms is
   * dx_client_connect to on_open in all; -1 when not measured (dns_ms
   * falls back to a lookup of the host made just before connecting).
   * expectations and ping: response_ms is the time from the last thing
   * sent (or the connection opening) to the matching message or pong. */
  double dns_ms, open_ms, response_ms;
  /* connect: the client's own phase timings (-1: not reached). */
  double tcp_ms, tls_ms, upgrade_ms;
  char label[200];  /* the step, short: "expect \"pong\"" */
  char detail[600]; /* why it failed, or what it saw */
} step_result;

typedef struct probe_result {
  bool ok;        /* every step passed */
  bool connected; /* a connect step opened */
  double duration_ms;
  size_t failed_step; /* index of the failed step when !ok */
  step_result *steps; /* sc->nsteps entries */
} probe_result;

/* Runs sc on loop (which must not be running). res->steps is allocated
 * (free with probe_result_free). Returns 0, or -1 when out of memory. */
int probe_run(dx_loop *loop, const scenario *sc, probe_result *res);
void probe_result_free(probe_result *res);

#endif
