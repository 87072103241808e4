# shellcheck shell=bash
# Helpers shared by bench/run_echo.sh, bench/run_fanout.sh and
# bench/run_cluster_fanout.sh. Sourced, never run; it defines functions
# only (no traps, no variables) until a script calls them.
#
# Globals the functions expect the script to set before calling them:
#   ROOT   the source tree                      (build_release)
#   BUILD  the CMake build directory            (build_release, build_duplex)
#   TMP    a scratch directory, removed at exit (cleanup, build_*)
#   PIDS   array of the pids this script started and has not stopped yet;
#          whatever is in it when the script exits is stopped (cleanup)
#
# Functions:
#   say WORDS...           prints a line on stderr
#   stop_pid PID [SIG]     sends SIG (TERM), SIGKILL after 3 s if still
#                          alive, then reaps it. An overloaded Node server
#                          runs its SIGTERM handler only when its event loop
#                          gets to it, which can take minutes.
#   forget_pid PID         takes PID out of PIDS
#   stop PID               stop_pid PID TERM, then forget_pid PID
#   cleanup                stop_pid on every pid in PIDS, last started first,
#                          then removes TMP. A script may define its own
#                          cleanup after sourcing this file.
#   trap_cleanup           cleanup on EXIT; INT and TERM exit 130 (so that
#                          cleanup runs)
#   run_waited CMD...      runs CMD in the background, in PIDS, and waits
#                          for it; returns its status. A signal to the
#                          script is handled at once (bash runs traps only
#                          between foreground commands) and the cleanup
#                          stops CMD too.
#   listening PORT         true once something listens on 127.0.0.1:PORT,
#                          read from /proc/net/tcp, so that no probe
#                          connection disturbs the server (or its counts)
#   wait_listening PID PORT LOG NAME [SECS]
#                          waits up to SECS (10) for PORT to be listened on,
#                          giving up early if PID exits; on failure says so
#                          with LOG's last lines and returns 1
#   build_release TARGET...
#                          configures BUILD (Release, DX_TESTS=OFF) and builds
#                          TARGETs; on failure prints the log and exits 1
#   build_duplex WHY       builds duplex_cli in BUILD; on failure says
#                          "duplex did not build: WHY" with the log's tail
#                          and returns 1
#   node_deps DIR WHAT MODULE...
#                          npm ci in DIR unless every MODULE is in
#                          DIR/node_modules; says "WHAT skipped" when node
#                          is missing or npm ci fails
#   fd_fit N               raises ulimit -n to 65536, else to the hard
#                          limit; sets FD_FIT to the connections that fit
#                          (ulimit -n less 256 for everything else) and is
#                          true when N <= FD_FIT
#   field LINE KEY         the value of KEY in "result: k=v ..."
#   ratio A B              A/B with two decimals, or n/a (either empty, B 0)
#   label RATE:COUNT       "RATE/s xCOUNT"
#   cpu_model              the CPU's model name (/proc/cpuinfo)
#   load_avg               the 1, 5 and 15 minute load averages (/proc/loadavg)

say() { printf '%s\n' "$*" >&2; }

# ---- processes --------------------------------------------------------------

stop_pid() { # pid [signal]
  local i
  kill -"${2:-TERM}" "$1" 2>/dev/null
  for ((i = 0; i < 30; i++)); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

forget_pid() {
  local p keep=()
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

stop() { # pid
  stop_pid "$1" TERM
  forget_pid "$1"
}

cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  rm -rf "$TMP"
}

trap_cleanup() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

run_waited() { # command...
  "$@" &
  local pid=$! rc
  PIDS+=("$pid")
  wait "$pid"
  rc=$?
  forget_pid "$pid"
  return $rc
}

listening() { # port
  grep -q " 0100007F:$(printf %04X "$1") 00000000:0000 0A " /proc/net/tcp
}

wait_listening() { # pid port log name [seconds]
  local limit=$((${5:-10} * 10)) i
  for ((i = 0; i < limit; i++)); do
    listening "$2" && return 0
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  say "   $4 did not start listening on port $2:"
  tail -5 "$3" >&2
  return 1
}

# ---- build ------------------------------------------------------------------

build_release() { # target...
  say "== building (Release) in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDX_TESTS=OFF \
    >"$TMP/cmake.log" 2>&1 || { cat "$TMP/cmake.log" >&2; exit 1; }
  cmake --build "$BUILD" --parallel 2 --target "$@" \
    >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log" >&2; exit 1; }
}

build_duplex() { # why
  cmake --build "$BUILD" --parallel 2 --target duplex_cli \
    >"$TMP/build-duplex.log" 2>&1 && return 0
  say "   duplex did not build: $1 (log below)"
  tail -15 "$TMP/build-duplex.log" >&2
  return 1
}

node_deps() { # dir what module...
  local dir=$1 what=$2 m
  shift 2
  if ! command -v node >/dev/null; then
    say "   node is missing: $what skipped"
    return
  fi
  for m in "$@"; do
    if [[ ! -d $dir/node_modules/$m ]]; then
      (cd "$dir" && npm ci --no-audit --no-fund >&2) ||
        say "   npm ci failed: $what skipped"
      return
    fi
  done
}

fd_fit() { # n
  local hard
  ulimit -n 65536 2>/dev/null || {
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] || ulimit -n "$hard"
  }
  FD_FIT=$(($(ulimit -n) - 256))
  ((FD_FIT >= $1))
}

# ---- figures ----------------------------------------------------------------

field() { # "result: k=v ..." key
  local kv
  for kv in $1; do
    [[ $kv == "$2="* ]] && { printf '%s\n' "${kv#*=}"; return; }
  done
}

ratio() { # a b -> a/b with two decimals, or n/a
  [[ -n $1 && -n $2 ]] || { printf 'n/a'; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}

label() { printf '%s/s x%s' "${1%%:*}" "${1#*:}"; }

cpu_model() { grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'; }

load_avg() { cut -d' ' -f1-3 /proc/loadavg; }
