# shellcheck shell=bash
# Shared by tests/scripts/hostile_serve.sh and concurrency_serve.sh (sourced,
# not a test itself): start `duplex serve` instances on 127.0.0.1 with free
# ports, run Python clients against them, then stop every server with
# SIGTERM and check that it exits 0 with no sanitizer report.
#
#   dx_init BUILD_DIR SOURCE_DIR NAME
#   dx_start KEY [serve options...]   -> DX_PORT[KEY], DX_PID[KEY], DX_ERR[KEY]
#                                        (DX_START_ENV="VAR=v ...": its env)
#   dx_run LABEL SCRIPT ARGS...       -> runs tests/hostile/SCRIPT, bounded
#   dx_finish                         -> stops servers, checks, exits 0/1

declare -A DX_PORT DX_PID DX_ERR
DX_FAILED=()
DX_PY=/usr/bin/python3 # Debian's, with python3-websockets

dx_fail() {
  echo "FAIL: $*" >&2
  DX_FAILED+=("$*")
}

dx_cleanup() {
  local k
  for k in "${!DX_PID[@]}"; do
    kill -KILL "${DX_PID[$k]}" 2>/dev/null
  done
  [[ -n "${DX_WORK:-}" && -d "$DX_WORK" ]] && rm -rf "$DX_WORK"
}

dx_init() {
  DX_BUILD=$1
  DX_SRC=$2
  DX_NAME=$3
  DX_BIN="$DX_BUILD/src/app/duplex"
  DX_HOSTILE="$DX_SRC/tests/hostile"
  if [[ ! -x "$DX_BIN" ]]; then
    echo "FAIL: $DX_BIN not built" >&2
    exit 1
  fi
  if ! "$DX_PY" -c 'import websockets' 2>/dev/null; then
    echo "FAIL: $DX_PY with python3-websockets is required" >&2
    exit 1
  fi
  DX_WORK=$(mktemp -d "/tmp/duplex-$DX_NAME.XXXXXX")
  trap dx_cleanup EXIT
  trap 'exit 130' INT TERM
  # Leaks are part of the verdict (LeakSanitizer runs at exit).
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
  export PYTHONDONTWRITEBYTECODE=1 # keep the source tree clean
}

dx_start() {
  local key=$1
  shift
  local out="$DX_WORK/$key.port" err="$DX_WORK/$key.err"
  # shellcheck disable=SC2086 # DX_START_ENV is a list of VAR=value words
  env ${DX_START_ENV:-} "$DX_BIN" serve --port 0 --print-port \
    --host 127.0.0.1 "$@" >"$out" 2>"$err" &
  DX_PID[$key]=$!
  DX_ERR[$key]=$err
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ -s "$out" ]]; then
      DX_PORT[$key]=$(head -n1 "$out")
      echo "server $key: pid ${DX_PID[$key]} port ${DX_PORT[$key]} ($*)"
      return 0
    fi
    if ! kill -0 "${DX_PID[$key]}" 2>/dev/null; then break; fi
    sleep 0.1
  done
  dx_fail "server $key did not start ($*)"
  cat "$err" >&2
  dx_finish
}

dx_run() {
  local label=$1 script=$2
  shift 2
  echo "== $label"
  local t0=$SECONDS
  if ! timeout -k 5 "${DX_RUN_TIMEOUT:-90}" "$DX_PY" "$DX_HOSTILE/$script" "$@"; then
    dx_fail "$label"
  fi
  echo "== $label: $((SECONDS - t0))s"
}

# SIGTERM, then up to 15 s for the graceful shutdown (close timeout
# included); exit status 0 expected.
dx_stop() {
  local key=$1 pid=${DX_PID[$1]} i rc
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    dx_fail "server $key did not stop within 15s of SIGTERM"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid"
  rc=$?
  unset "DX_PID[$key]"
  [[ $rc -eq 0 ]] || dx_fail "server $key exited $rc after SIGTERM"
  if grep -Eq 'ERROR: AddressSanitizer|runtime error|LeakSanitizer' \
    "${DX_ERR[$key]}"; then
    dx_fail "server $key: sanitizer report"
    grep -E -A30 'ERROR: AddressSanitizer|runtime error|LeakSanitizer' \
      "${DX_ERR[$key]}" | head -60 >&2
  fi
}

dx_finish() {
  local k
  for k in "${!DX_PID[@]}"; do
    dx_stop "$k"
  done
  if ((${#DX_FAILED[@]})); then
    echo "$DX_NAME: ${#DX_FAILED[@]} failure(s):" >&2
    printf '  - %s\n' "${DX_FAILED[@]}" >&2
    exit 1
  fi
  echo "$DX_NAME: all passed"
  exit 0
}
