# shellcheck shell=bash
# Shared by tests/scripts/realtime_*.sh (sourced, not a test itself): the
# server handling of tests/hostile/serve_lib.sh (127.0.0.1, free ports,
# SIGTERM -> exit 0, sanitizer reports in stderr fail the test), plus:
#
#   rt_init BUILD_DIR SOURCE_DIR NAME  -> dx_init, and checks node + ws
#   rt_start KEY [serve options...]    -> dx_start, remembering the options
#   rt_restart KEY                     -> SIGTERM (exit 0 checked), then the
#                                         same options on the same port
#   rt_py LABEL SCRIPT ARGS...         -> tests/realtime/SCRIPT, bounded
#   rt_node LABEL SCRIPT ARGS...       -> the same with node
#   dx_finish                          -> stops servers, checks, exits 0/1

# shellcheck source=../hostile/serve_lib.sh
. "$2/tests/hostile/serve_lib.sh"
declare -A RT_ARGS

rt_init() {
  dx_init "$@"
  RT_DIR="$DX_SRC/tests/realtime"
  if ! command -v node >/dev/null; then
    echo "FAIL: node is not installed (make deps)" >&2
    exit 1
  fi
  if ! (cd "$DX_SRC" && node -e 'require.resolve("ws")' 2>/dev/null); then
    echo "FAIL: the npm package ws is missing: run 'make deps-npm'" >&2
    exit 1
  fi
  # Keep ASan's quarantine small: memory bounds are asserted on VmRSS.
  export ASAN_OPTIONS="$ASAN_OPTIONS:quarantine_size_mb=16"
}

rt_start() {
  local key=$1
  shift
  RT_ARGS[$key]=$(printf '%q ' "$@")
  dx_start "$key" "$@"
}

# Stops KEY like dx_finish would (exit status and sanitizers checked), then
# starts it again with the same options on the same port: a restart as
# clients see it.
rt_restart() {
  local key=$1 port=${DX_PORT[$1]}
  dx_stop "$key"
  local -a args
  eval "args=(${RT_ARGS[$key]})"
  # Keep the old stderr (dx_start truncates it); remove the old port file,
  # or dx_start could read it before the new server's shell truncates it.
  mv "${DX_ERR[$key]}" "${DX_ERR[$key]}.before-restart"
  rm -f "$DX_WORK/$key.port"
  dx_start "$key" "${args[@]}" --port "$port"
  [[ ${DX_PORT[$key]} == "$port" ]] ||
    dx_fail "server $key came back on port ${DX_PORT[$key]}, not $port"
}

rt_run() {
  local label=$1
  shift
  echo "== $label"
  local t0=$SECONDS rc=0
  timeout -k 5 "${RT_TIMEOUT:-60}" "$@" || rc=$?
  ((rc == 124)) && echo "$label: timed out after ${RT_TIMEOUT:-60}s"
  ((rc == 0)) || dx_fail "$label"
  echo "== $label: $((SECONDS - t0))s"
}

rt_py() {
  local label=$1 script=$2
  shift 2
  rt_run "$label" "$DX_PY" "$RT_DIR/$script" "$@"
}

rt_node() {
  local label=$1 script=$2
  shift 2
  rt_run "$label" node "$RT_DIR/$script" "$@"
}
