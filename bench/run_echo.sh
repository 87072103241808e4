#!/usr/bin/env bash
# Echo servers side by side, in one run: duplex, libwebsockets, Node ws.
# See bench/README.md for what each figure means.
#
#   bench/run_echo.sh            # everything, 2 to 4 minutes
#
# Environment knobs (defaults in brackets):
#   SERVERS="duplex lws ws"  which servers to measure
#   WARMUP=1 DURATION=5      seconds per throughput measurement
#   REPEAT=1                 runs per throughput figure; the best is kept
#   IDLE_CONNS=10000         idle connections for the memory figure
#   CG_MESSAGES=20000        messages for the instruction count (0 skips it)
#   CG_NODE=1                also count Node's instructions (~1.5 minutes)
#   BUILD=build/release      CMake build directory (Release, no tests)
#   RT=0                     1: run servers and load generator SCHED_FIFO
#                            (chrt -f 10) during the throughput runs, so
#                            other load cannot delay their wake-ups. Only
#                            on a machine you own: it takes the two cores
#                            from everything else while it measures.
#
# Servers run pinned to core 0, the load generator to core 1; everything
# binds 127.0.0.1 on free ports; every process this script starts is
# stopped when it exits, however it exits.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build/release}
SERVERS=${SERVERS:-duplex lws ws}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-5}
REPEAT=${REPEAT:-1}
IDLE_CONNS=${IDLE_CONNS:-10000}
CG_MESSAGES=${CG_MESSAGES:-20000}
CG_NODE=${CG_NODE:-1}
RT=${RT:-0}
SERVER_CPU=0
LOADGEN_CPU=1

LOADGEN=$BUILD/bench/echo_loadgen
LWS=$BUILD/bench/echo_lws
DUPLEX=$BUILD/src/app/duplex
WS_JS=$ROOT/bench/echo/ws_echo.js

TMP=$(mktemp -d /tmp/run_echo.XXXXXX)
PIDS=()

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# Not lib.sh's cleanup: every process is signalled at once, then waited for
# (no SIGKILL).
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null
  done
  rm -rf "$TMP"
}
trap_cleanup

# ---- build ------------------------------------------------------------------

build() {
  build_release echo_loadgen echo_lws
  if [[ " $SERVERS " == *" duplex "* ]]; then
    build_duplex "its column stays empty"
  fi
  if [[ " $SERVERS " == *" ws "* ]]; then
    node_deps "$ROOT/bench/echo" ws ws
  fi
}

available() {
  case $1 in
    duplex) [[ -x $DUPLEX ]] ;;
    lws) [[ -x $LWS ]] ;;
    ws) command -v node >/dev/null && [[ -d $ROOT/bench/echo/node_modules/ws ]] ;;
  esac
}

server_cmd() { # name port -> the command line, one word per line
  case $1 in
    # --no-realtime: an echo server only, like the other two (the channel
    # routes would reserve their per-connection state in every connection).
    duplex) printf '%s\n' "$DUPLEX" serve --echo /echo --no-realtime --port "$2" \
              --threads 1 --quiet --host 127.0.0.1 ;;
    lws) printf '%s\n' "$LWS" "$2" ;;
    ws) printf '%s\n' node "$WS_JS" "$2" ;;
  esac
}

# ---- processes --------------------------------------------------------------

# start_server name port log [wrapper words...] -> sets SPID
start_server() {
  local name=$1 port=$2 log=$3
  shift 3
  local -a cmd
  mapfile -t cmd < <(server_cmd "$name" "$port")
  taskset -c $SERVER_CPU "$@" "${cmd[@]}" >"$log" 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
  wait_listening "$SPID" "$port" "$log" "$name" "${WAIT_LISTEN:-10}" && return 0
  stop_server "$SPID" TERM
  return 1
}

stop_server() { # pid [signal]
  kill -"${2:-INT}" "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  forget_pid "$1"
}

loadgen() { # args... ; prints the "result:" line, or nothing on failure
  local out
  out=$("${PRIO[@]}" taskset -c $LOADGEN_CPU "$LOADGEN" "$@" 2>"$TMP/loadgen.err")
  local rc=$?
  if ((rc != 0)); then
    say "   loadgen failed: $(tail -1 "$TMP/loadgen.err")"
    return 1
  fi
  grep '^result:' <<<"$out"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# ---- measurements -----------------------------------------------------------

declare -A R # R[server,figure] = value
PRIO=()      # scheduling prefix for the throughput runs (RT=1)

SCENARIOS=(
  "c100k1|--conns 100 --size 32 --inflight 1|100 conn x 32 B, 1 in flight"
  "c100k16|--conns 100 --size 32 --inflight 16|100 conn x 32 B, 16 in flight"
  "c10big|--conns 10 --size 16384 --inflight 1|10 conn x 16 KiB, 1 in flight"
)

throughput() {
  say "== throughput and latency (${WARMUP}s warm-up + ${DURATION}s each)"
  declare -A port pid
  local s sc key args label res best bestrate rate scpu r
  PRIO=()
  if [[ $RT == 1 ]]; then
    if chrt -f 10 true 2>/dev/null; then PRIO=(chrt -f 10); else say "   RT=1: chrt not permitted, normal priority"; fi
  fi
  for s in "${ACTIVE[@]}"; do
    port[$s]=$("$LOADGEN" --free-port)
    if start_server "$s" "${port[$s]}" "$TMP/$s.log" "${PRIO[@]}"; then
      pid[$s]=$SPID
    fi
  done
  # Scenario-major order: the servers take turns, so a burst of noise from
  # a neighbour on this shared machine does not land all on one of them.
  for sc in "${SCENARIOS[@]}"; do
    IFS='|' read -r key args label <<<"$sc"
    for s in "${ACTIVE[@]}"; do
      [[ -n ${pid[$s]:-} ]] || continue
      say "   $s: $label"
      best='' bestrate=-1
      for ((r = 0; r < REPEAT; r++)); do
        # shellcheck disable=SC2086
        res=$(loadgen --port "${port[$s]}" $args --warmup "$WARMUP" \
                --duration "$DURATION" --server-pid "${pid[$s]}") || continue
        rate=$(field "$res" msgs_per_s)
        ((rate > bestrate)) && { best=$res; bestrate=$rate; }
      done
      [[ -n $best ]] || continue
      R[$s,$key.rate]=$bestrate
      R[$s,$key.p50]=$(field "$best" p50_us)
      R[$s,$key.p99]=$(field "$best" p99_us)
      scpu=$(field "$best" server_cpu)
      R[$s,$key.cpu]="$scpu/$(field "$best" loadgen_cpu)"
      ((scpu > 0)) && R[$s,$key.eff]=$((bestrate * 100 / scpu))
    done
  done
  for s in "${ACTIVE[@]}"; do
    [[ -n ${pid[$s]:-} ]] && stop_server "${pid[$s]}"
  done
  PRIO=()
}

idle_memory() {
  say "== memory: $IDLE_CONNS idle connections"
  local s port spid lpid rss0 rss1 i
  for s in "${ACTIVE[@]}"; do
    port=$("$LOADGEN" --free-port)
    start_server "$s" "$port" "$TMP/$s-idle.log" || continue
    spid=$SPID
    sleep 0.5
    # Warm up first: the first handshakes and echoes touch code pages
    # (libcrypto's SHA-1 alone is over a megabyte) that are no per-
    # connection cost; without this every server is charged for them.
    "$LOADGEN" --port "$port" --conns 100 --size 32 --inflight 1 \
      --messages 1000 >/dev/null 2>&1 || true
    sleep 0.5
    rss0=$(rss_kb "$spid")
    taskset -c $LOADGEN_CPU "$LOADGEN" --port "$port" --conns "$IDLE_CONNS" \
      --idle >"$TMP/idle.out" 2>"$TMP/loadgen.err" &
    lpid=$!
    PIDS+=("$lpid")
    for ((i = 0; i < 1200; i++)); do
      grep -q '^ready' "$TMP/idle.out" && break
      kill -0 "$lpid" 2>/dev/null || break
      sleep 0.1
    done
    if grep -q '^ready' "$TMP/idle.out"; then
      sleep 1 # let the server finish its bookkeeping (and Node its GC)
      rss1=$(rss_kb "$spid")
      R[$s,idle]=$(((rss1 - rss0) * 1024 / IDLE_CONNS))
      say "   $s: VmRSS ${rss0} kB -> ${rss1} kB"
    else
      say "   $s: idle connections failed: $(tail -1 "$TMP/loadgen.err")"
    fi
    stop_server "$lpid" TERM
    stop_server "$spid"
  done
}

# Total Ir of one server run under callgrind while the load generator
# sends $2 messages (0: only connect, handshake, close). Sets IR (not a
# $(...) subshell: the server must stay in this shell's PIDS for the trap).
callgrind_ir() { # server messages
  local s=$1 m=$2 port out
  IR=
  port=$("$LOADGEN" --free-port)
  out=$TMP/callgrind.$s.$m
  WAIT_LISTEN=300 start_server "$s" "$port" "$TMP/$s-cg.log" \
    valgrind --tool=callgrind --collect-atstart=yes \
    --callgrind-out-file="$out" || return 1
  local spid=$SPID
  loadgen --port "$port" --conns 10 --size 32 --inflight 1 --messages "$m" \
    >/dev/null || { stop_server "$spid"; return 1; }
  stop_server "$spid" # SIGINT: the server exits cleanly, callgrind writes
  IR=$(awk '/^summary:/ {print $2}' "$out" 2>/dev/null)
  [[ -n $IR ]]
}

instructions() {
  ((CG_MESSAGES > 0)) || return 0
  command -v valgrind >/dev/null || { say "== valgrind missing: no Ir/msg"; return 0; }
  say "== instructions per message (callgrind, 10 conn x 32 B, $CG_MESSAGES messages)"
  local s base run
  for s in "${ACTIVE[@]}"; do
    if [[ $s == ws && $CG_NODE != 1 ]]; then continue; fi
    callgrind_ir "$s" 0 || { say "   $s: baseline run failed"; continue; }
    base=$IR
    callgrind_ir "$s" "$CG_MESSAGES" || { say "   $s: counted run failed"; continue; }
    run=$IR
    R[$s,ir]=$(((run - base) / CG_MESSAGES))
    say "   $s: Ir $base (baseline) -> $run: ${R[$s,ir]} per message"
  done
}

# ---- report -----------------------------------------------------------------

report() {
  local -a rows=(
    "c100k1.rate|100x32B k=1    msg/s"
    "c100k1.p50|100x32B k=1    p50 us"
    "c100k1.p99|100x32B k=1    p99 us"
    "c100k1.cpu|100x32B k=1    cpu% srv/lg"
    "c100k1.eff|100x32B k=1    msg/cpu-s"
    "c100k16.rate|100x32B k=16   msg/s"
    "c100k16.p50|100x32B k=16   p50 us"
    "c100k16.p99|100x32B k=16   p99 us"
    "c100k16.cpu|100x32B k=16   cpu% srv/lg"
    "c100k16.eff|100x32B k=16   msg/cpu-s"
    "c10big.rate|10x16KiB k=1   msg/s"
    "c10big.p50|10x16KiB k=1   p50 us"
    "c10big.p99|10x16KiB k=1   p99 us"
    "c10big.cpu|10x16KiB k=1   cpu% srv/lg"
    "c10big.eff|10x16KiB k=1   msg/cpu-s"
    "idle|idle RSS B/conn (${IDLE_CONNS})"
    "ir|Ir/msg (callgrind)"
  )
  local row key label d l w s
  echo
  local cpu load
  cpu=$(cpu_model)
  load=$LOAD_START
  echo "echo benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores ($cpu)," \
       "Linux $(uname -r), load average at start $load$([[ $RT == 1 ]] && echo ', RT=1')"
  printf '%-30s %12s %12s %12s %12s %12s\n' figure duplex libwebsockets ws \
    duplex/ws duplex/lws
  for row in "${rows[@]}"; do
    IFS='|' read -r key label <<<"$row"
    d=${R[duplex,$key]:-} l=${R[lws,$key]:-} w=${R[ws,$key]:-}
    if [[ $key == *.cpu ]]; then
      printf '%-30s %12s %12s %12s %12s %12s\n' "$label" "${d:--}" "${l:--}" \
        "${w:--}" "" ""
    else
      printf '%-30s %12s %12s %12s %12s %12s\n' "$label" "${d:--}" "${l:--}" \
        "${w:--}" "$(ratio "$d" "$w")" "$(ratio "$d" "$l")"
    fi
  done
  local busy=() v
  for key in c100k1 c100k16 c10big; do
    for s in duplex lws ws; do
      v=${R[$s,$key.cpu]:-}
      [[ -n $v && ${v#*/} -ge 90 ]] && busy+=("$s/$key")
    done
  done
  ((${#busy[@]})) &&
    echo "note: load generator at >= 90% CPU (it may have limited msg/s): ${busy[*]}"
  echo "msg/s: higher is better (ratio > 1 favours duplex); latency, memory and"
  echo "Ir/msg: lower is better (ratio < 1 favours duplex). cpu% srv/lg: server"
  echo "and load generator CPU during the measurement (100 = one core busy);"
  echo "msg/cpu-s: messages per second of server CPU (user + kernel), higher is"
  echo "better and less sensitive to other load on the machine than msg/s."
}

# ---- main -------------------------------------------------------------------

main() {
  build
  if ! fd_fit "$IDLE_CONNS"; then
    say "== ulimit -n is $(ulimit -n): idle test lowered to $FD_FIT connections"
    IDLE_CONNS=$FD_FIT
  fi
  ACTIVE=()
  local s
  for s in $SERVERS; do
    if available "$s"; then ACTIVE+=("$s"); else say "== $s: not available, skipped"; fi
  done
  ((${#ACTIVE[@]})) || { say "nothing to measure"; exit 1; }
  LOAD_START=$(load_avg)
  throughput
  idle_memory
  instructions
  report
}

main "$@"
