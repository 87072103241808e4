/*
 * scenario.h — the probe scenario file (duplex probe, written by duplex
 * record): a YAML document with a top-level `steps:` list. Each step is a
 * mapping whose kind is the one step key it holds (connect, send,
 * send_json, send_binary, expect, expect_match, expect_json, sleep, ping,
 * close); the other keys are that kind's options. Strings keep their
 * ${NAME} references: they are expanded when the step runs (captures
 * first, then the environment).
 */
#ifndef DX_APP_SCENARIO_H
#define DX_APP_SCENARIO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum step_kind {
  STEP_CONNECT,
  STEP_SEND,
  STEP_SEND_JSON,
  STEP_SEND_BINARY,
  STEP_EXPECT,
  STEP_EXPECT_MATCH,
  STEP_EXPECT_JSON,
  STEP_SLEEP,
  STEP_PING,
  STEP_CLOSE
} step_kind;

/* How send_binary's value is written. */
typedef enum bin_form { BIN_BASE64, BIN_HEX, BIN_FILE } bin_form;

#define STEP_MAX_HEADERS 32
#define STEP_MAX_CAPTURES 16
#define STEP_DEFAULT_TIMEOUT_MS 5000u

typedef struct step {
  step_kind kind;
  size_t line;  /* 1-based, in the scenario file */
  char *text;   /* connect URL, send/expect text, regex, binary value,
                   ping payload (NULL: none) */
  json_t *json; /* send_json value, expect_json subset */
  bin_form form;
  /* connect */
  char *headers[STEP_MAX_HEADERS]; /* "Name: value" */
  size_t nheaders;
  char *subprotocols[STEP_MAX_HEADERS];
  size_t nsubprotocols;
  char *cacert;
  bool insecure;
  /* expectations, ping, close, connect */
  unsigned timeout_ms;
  bool skip_unrelated;
  char *cap_name[STEP_MAX_CAPTURES];
  char *cap_path[STEP_MAX_CAPTURES]; /* "a.b.0.c"; "" or "." for all */
  size_t ncaptures;
  /* sleep, close */
  unsigned sleep_ms;
  unsigned close_code;
} step;

typedef struct scenario {
  char *path;
  step *steps;
  size_t nsteps;
} scenario;

/* Loads and checks path. Returns 0, or -1 with one line in err
 * ("FILE:LINE: reason"). sc is filled on success; scenario_free it. */
int scenario_load(const char *path, scenario *sc, char *err, size_t errlen);
void scenario_free(scenario *sc);

/* The step kind's key ("expect_json"). */
const char *step_kind_name(step_kind k);

#endif
