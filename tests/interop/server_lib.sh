# Sourced by the interop and browser drivers (tests/scripts/*.sh): starts
# `duplex serve` on 127.0.0.1 and a free port, and stops it with SIGTERM,
# checking that it shut down gracefully and that the sanitizers were quiet.
#
#   dx_tmp_init NAME          a private temp dir in $DX_TMP, removed on exit
#   dx_server_start VAR ARGS  starts `duplex serve ARGS`; sets VAR_PORT,
#                             VAR_PID and VAR_ERR (its stderr file)
#   dx_server_stop VAR        SIGTERM; fails unless it exits 0 within 6 s
#                             and its stderr has no sanitizer report
#   dx_fail MSG               prints MSG and exits 1
#   dx_require_browser        fails (never skips) unless DX_BIN, node,
#                             /usr/bin/chromium and playwright-core are there
#
# The caller sets DX_BIN (the duplex binary) and DX_NAME (for messages).
# Every server started here is killed (SIGKILL, by pid) on exit if it is
# still running, so a failing test never leaves one behind.

DX_SERVER_PIDS=()
DX_SANITIZER_RE='ERROR: AddressSanitizer|runtime error|LeakSanitizer|ERROR: UndefinedBehaviorSanitizer'

dx_fail() {
  echo "$DX_NAME: FAIL: $*" >&2
  exit 1
}

dx_cleanup() {
  local pid
  for pid in "${DX_SERVER_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  [[ -n "${DX_TMP:-}" && -d "$DX_TMP" ]] && rm -rf "$DX_TMP"
  return 0
}

dx_require_browser() {
  [[ -x "$DX_BIN" ]] || dx_fail "no $DX_BIN (build the tools: -DDX_TOOLS=ON)"
  command -v node >/dev/null || dx_fail "node is not installed (make deps)"
  [[ -x /usr/bin/chromium ]] || dx_fail "no /usr/bin/chromium (make deps)"
  (cd "${BASH_SOURCE[0]%/*}/../browser" &&
    node -e 'require.resolve("playwright-core")' 2>/dev/null) ||
    dx_fail "the npm package playwright-core is missing: run 'make deps-npm'"
}

dx_tmp_init() {
  DX_TMP=$(mktemp -d "${TMPDIR:-/tmp}/duplex-$1.XXXXXX")
  trap dx_cleanup EXIT
}

# dx_server_start VAR ARGS...
dx_server_start() {
  local var=$1
  shift
  local out=$DX_TMP/$var.port err=$DX_TMP/$var.stderr
  # DX_SERVE_VERBOSE=1: keep the per-connection log lines (for tests that
  # read them).
  local quiet=(--quiet)
  [[ "${DX_SERVE_VERBOSE:-}" == 1 ]] && quiet=()
  # ASAN_OPTIONS: report leaks at exit (the default on Linux, made explicit)
  # and make any report fatal with a recognisable exit code.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=86} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$DX_BIN" serve --port 0 --print-port --host 127.0.0.1 "${quiet[@]}" "$@" \
    >"$out" 2>"$err" &
  local pid=$!
  DX_SERVER_PIDS+=("$pid")
  local port="" i
  for ((i = 0; i < 100; i++)); do
    port=$(head -n1 "$out" 2>/dev/null || true)
    [[ "$port" =~ ^[0-9]+$ ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! [[ "$port" =~ ^[0-9]+$ ]]; then
    cat "$err" >&2
    dx_fail "duplex serve $* did not print its port within 10 s"
  fi
  printf -v "${var}_PORT" '%s' "$port"
  printf -v "${var}_PID" '%s' "$pid"
  printf -v "${var}_ERR" '%s' "$err"
}

# dx_server_stop VAR: graceful shutdown on SIGTERM, exit status 0, and no
# sanitizer report in its stderr.
dx_server_stop() {
  local var=$1
  local pidv=${var}_PID errv=${var}_ERR
  local pid=${!pidv} err=${!errv} i rc
  kill -0 "$pid" 2>/dev/null || {
    cat "$err" >&2
    dx_fail "server $var died before SIGTERM"
  }
  kill -TERM "$pid"
  # With every client answering the close at once, a graceful shutdown takes
  # milliseconds; 6 s leaves room for a slow machine.
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    cat "$err" >&2
    dx_fail "server $var still running 6 s after SIGTERM"
  fi
  rc=0
  wait "$pid" || rc=$?
  if grep -Eq "$DX_SANITIZER_RE" "$err"; then
    cat "$err" >&2
    dx_fail "server $var: sanitizer report in its stderr (above)"
  fi
  if ((rc != 0)); then
    cat "$err" >&2
    dx_fail "server $var exited $rc after SIGTERM (expected 0)"
  fi
  echo "$DX_NAME: server $var stopped gracefully (exit 0, sanitizers quiet)"
}
