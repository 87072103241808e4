# Sourced by tests/scripts/client_*.sh: run `duplex connect` (the ASan
# build) against test servers and check exit status, stdout, stderr and the
# servers' logs. Every wait is bounded; every server is killed (by pid) on
# exit; a missing prerequisite fails the test, it never skips it.
#
#   cl_init NAME BUILD_DIR SOURCE_DIR
#   cl_server VAR CMD...        starts a server that prints its port first;
#                               sets VAR_PORT, VAR_PID, VAR_LOG
#   cl_run CASE WANT_RC INPUT ARGS...   duplex connect ARGS < INPUT
#                               (INPUT: a file, or - for /dev/null); output
#                               in $CL_TMP/CASE.out and CASE.err
#   cl_out CASE TEXT            stdout is exactly TEXT
#   cl_err_has CASE REGEX       stderr matches (grep -E)
#   cl_log_has VAR REGEX        the server's log matches within 5 s
#   cl_finish                   prints the summary, exits 1 on failure

CL_FAILED=()
CL_PIDS=()
CL_SANITIZER_RE='ERROR: AddressSanitizer|runtime error|LeakSanitizer|ERROR: UndefinedBehaviorSanitizer'
CL_CASE_RC=0
PY=/usr/bin/python3 # Debian's: it has python3-websockets

cl_cleanup() {
  local pid
  for pid in "${CL_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  [[ -n "${CL_TMP:-}" && -d "$CL_TMP" && -z "${CL_KEEP:-}" ]] && rm -rf "$CL_TMP"
  return 0
}

cl_die() {
  echo "$CL_NAME: FAIL: $*" >&2
  exit 1
}

cl_init() {
  CL_NAME=$1
  CL_BUILD=$(cd "$2" && pwd) || cl_die "no build dir $2"
  CL_SRC=$(cd "$3" && pwd) || cl_die "no source dir $3"
  DX_BIN=$CL_BUILD/src/app/duplex
  [[ -x "$DX_BIN" ]] || cl_die "no $DX_BIN (build the tools: -DDX_TOOLS=ON)"
  command -v node >/dev/null || cl_die "node is not installed (make deps)"
  (cd "$CL_SRC/tests/client" && node -e 'require.resolve("ws")' 2>/dev/null) ||
    cl_die "the npm package ws is missing: run 'make deps-npm' (npm ci)"
  "$PY" -c 'import websockets' 2>/dev/null ||
    cl_die "$PY cannot import websockets: install python3-websockets"
  CL_TMP=$(mktemp -d "${TMPDIR:-/tmp}/duplex-$CL_NAME.XXXXXX")
  trap cl_cleanup EXIT
  # Leaks are reported at exit and make the run fail with a known status.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=86}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
}

cl_fail() {
  echo "not ok - $1: $2"
  CL_FAILED+=("$1")
}

# cl_server VAR CMD...
cl_server() {
  local var=$1
  shift
  local log=$CL_TMP/$var.log
  "$@" >"$log" 2>"$CL_TMP/$var.stderr" &
  local pid=$! port="" i
  CL_PIDS+=("$pid")
  disown "$pid" # killed by pid at the end: no "Killed" job notices
  for ((i = 0; i < 100; i++)); do
    port=$(head -n1 "$log" 2>/dev/null || true)
    [[ "$port" =~ ^[0-9]+$ ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! [[ "$port" =~ ^[0-9]+$ ]]; then
    cat "$CL_TMP/$var.stderr" >&2
    cl_die "server $var ($*) did not print its port within 10 s"
  fi
  printf -v "${var}_PORT" '%s' "$port"
  printf -v "${var}_PID" '%s' "$pid"
  printf -v "${var}_LOG" '%s' "$log"
}

# A port nothing listens on (bound, then released).
cl_dead_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# cl_verdict CASE WANT_RC RC WHAT [STDOUT_BYTES]: judges a tool run whose
# output is in CL_TMP/CASE.out and CASE.err (sets CL_CASE_RC=RC): a
# sanitizer report, or an exit status other than WANT_RC, fails the case
# (WHAT names the command; STDOUT_BYTES of stdout are shown, default 500).
cl_verdict() {
  local name=$1 want=$2 rc=$3 what=$4 keep=${5:-500}
  local out=$CL_TMP/$name.out err=$CL_TMP/$name.err
  CL_CASE_RC=$rc
  if grep -Eq "$CL_SANITIZER_RE" "$err"; then
    cat "$err"
    cl_fail "$name" "sanitizer report (above)"
    return 1
  fi
  if ((rc != want)); then
    echo "   stderr: $(head -c 2000 "$err")"
    echo "   stdout: $(head -c "$keep" "$out")"
    cl_fail "$name" "exit status $rc, expected $want ($what)"
    return 1
  fi
  echo "ok - $name (exit $rc)"
}

# cl_run CASE WANT_RC INPUT ARGS...
cl_run() {
  local name=$1 want=$2 input=$3
  shift 3
  [[ "$input" == - ]] && input=/dev/null
  local rc=0
  timeout -k 5 40 "$DX_BIN" connect "$@" <"$input" >"$CL_TMP/$name.out" \
    2>"$CL_TMP/$name.err" || rc=$?
  cl_verdict "$name" "$want" "$rc" "duplex connect $*"
}

cl_out() {
  local name=$1 want=$2
  if [[ "$(cat "$CL_TMP/$name.out")" != "$want" ]]; then
    echo "   stdout: $(head -c 500 "$CL_TMP/$name.out")"
    cl_fail "$name" "stdout is not '$want'"
    return 1
  fi
}

cl_err_has() {
  local name=$1 re=$2
  if ! grep -Eq -- "$re" "$CL_TMP/$name.err"; then
    echo "   stderr: $(head -c 2000 "$CL_TMP/$name.err")"
    cl_fail "$name" "stderr does not match /$re/"
    return 1
  fi
}

cl_log_has() {
  local var=$1 re=$2 i logv=${1}_LOG
  for ((i = 0; i < 50; i++)); do
    grep -Eq -- "$re" "${!logv}" && return 0
    sleep 0.1
  done
  echo "   $var log: $(tail -n 20 "${!logv}")"
  cl_fail "$var log" "no line matches /$re/"
  return 1
}

cl_finish() {
  if ((${#CL_FAILED[@]})); then
    echo "$CL_NAME: FAILED: ${CL_FAILED[*]}"
    exit 1
  fi
  echo "$CL_NAME: all passed"
  exit 0
}
