#!/usr/bin/env bash
# Pub/sub fan-out side by side, in one run: duplex serve (/ws, duplex.v1),
# a Node ws broadcast server (two ways of sending), and Socket.IO.
# See bench/README.md ("The fan-out comparison") for what each figure means.
#
#   bench/run_fanout.sh          # everything, 3 to 4 minutes
#
# Environment knobs (defaults in brackets):
#   SERVERS="duplex ws ws-frame sio"  which servers to measure
#   CONNS=10000              subscriber connections (lowered to fit ulimit -n)
#   LOW=2:20                 first phase, RATE:COUNT: 20 messages at 2/s, a
#                            load every server here keeps up with
#   HIGH=100:100             second phase: 100 messages at 100/s (1,000,000
#                            deliveries/s offered), more than any server
#                            here can deliver on this machine
#   PAD=0                    bytes of padding in each message's data
#   TIMEOUT=150              seconds a server's run may take at most
#   BUILD=build/release      CMake build directory (Release, no tests)
#
# Servers run pinned to core 0, the load tool to core 1; everything binds
# 127.0.0.1 on free ports; every process this script starts is stopped
# when it exits, however it exits.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build/release}
SERVERS=${SERVERS:-duplex ws ws-frame sio}
CONNS=${CONNS:-10000}
LOW=${LOW:-2:20}
HIGH=${HIGH:-100:100}
PAD=${PAD:-0}
TIMEOUT=${TIMEOUT:-150}
SERVER_CPU=0
TOOL_CPU=1

FANOUT=$BUILD/bench/fanout
DUPLEX=$BUILD/src/app/duplex
NODE_DIR=$ROOT/bench/fanout

TMP=$(mktemp -d /tmp/run_fanout.XXXXXX)
PIDS=()

say() { printf '%s\n' "$*" >&2; }

# Stops a process: the signal, then SIGKILL after 3 s. An overloaded Node
# server runs its SIGTERM handler only when its event loop gets to it,
# which can take minutes.
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

cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
  local p keep=()
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# ---- build ------------------------------------------------------------------

build() {
  say "== building (Release) in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDX_TESTS=OFF \
    >"$TMP/cmake.log" 2>&1 || { cat "$TMP/cmake.log" >&2; exit 1; }
  cmake --build "$BUILD" --parallel 2 --target fanout \
    >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log" >&2; exit 1; }
  if [[ " $SERVERS " == *" duplex "* ]] &&
     ! cmake --build "$BUILD" --parallel 2 --target duplex_cli \
       >"$TMP/build-duplex.log" 2>&1; then
    say "   duplex did not build: its column stays empty (log below)"
    tail -15 "$TMP/build-duplex.log" >&2
  fi
  if [[ " $SERVERS " == *" ws"* || " $SERVERS " == *" sio "* ]]; then
    if ! command -v node >/dev/null; then
      say "   node is missing: ws and Socket.IO skipped"
    elif [[ ! -d $NODE_DIR/node_modules/ws || ! -d $NODE_DIR/node_modules/socket.io ]]; then
      (cd "$NODE_DIR" && npm ci --no-audit --no-fund >&2) ||
        say "   npm ci failed: ws and Socket.IO skipped"
    fi
  fi
}

available() {
  case $1 in
    duplex) [[ -x $DUPLEX ]] ;;
    ws | ws-frame) command -v node >/dev/null && [[ -d $NODE_DIR/node_modules/ws ]] ;;
    sio) command -v node >/dev/null && [[ -d $NODE_DIR/node_modules/socket.io ]] ;;
    *) return 1 ;;
  esac
}

server_cmd() { # name port -> the command line, one word per line
  case $1 in
    duplex) printf '%s\n' "$DUPLEX" serve --port "$2" --host 127.0.0.1 \
              --threads 1 --quiet --rate 0 --no-deflate ;;
    ws) printf '%s\n' node "$NODE_DIR/ws_broadcast.js" "$2" send ;;
    ws-frame) printf '%s\n' node "$NODE_DIR/ws_broadcast.js" "$2" frame ;;
    sio) printf '%s\n' node "$NODE_DIR/sio_broadcast.js" "$2" ;;
  esac
}

proto_of() { [[ $1 == sio ]] && echo sio || echo duplex; }

# ---- processes --------------------------------------------------------------

# True once something listens on 127.0.0.1:port (read from /proc/net/tcp,
# so no probe connection disturbs the server).
listening() {
  grep -q " 0100007F:$(printf %04X "$1") 00000000:0000 0A " /proc/net/tcp
}

# start_server name port log -> sets SPID
start_server() {
  local name=$1 port=$2 log=$3
  local -a cmd
  mapfile -t cmd < <(server_cmd "$name" "$port")
  taskset -c $SERVER_CPU "${cmd[@]}" >"$log" 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
  local i
  for ((i = 0; i < 100; i++)); do
    listening "$port" && return 0
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
  done
  say "   $name did not start listening on port $port:"
  tail -5 "$log" >&2
  stop_server "$SPID"
  return 1
}

stop_server() { # pid
  stop_pid "$1" TERM
  forget_pid "$1"
}

field() { # "result: k=v ..." key
  local kv
  for kv in $1; do
    [[ $kv == "$2="* ]] && { printf '%s\n' "${kv#*=}"; return; }
  done
}

# Runs the load tool on its core against $port with $proto. In the
# background and waited for, so that a signal to this script is handled
# at once (bash runs traps only between foreground commands) and the
# cleanup stops the tool too.
tool() {
  taskset -c $TOOL_CPU "$FANOUT" --port "$port" --proto "$proto" "$@" &
  local tpid=$! rc
  PIDS+=("$tpid")
  wait "$tpid"
  rc=$?
  forget_pid "$tpid"
  return $rc
}

# ---- measurements -----------------------------------------------------------

declare -A R # R[server,figure] = value

# One server: a warm-up run (100 subscribers, 50 messages: code paths, JIT
# and allocator pools that are no per-connection cost), then the measured
# run: CONNS subscribers, the LOW phase, the HIGH phase.
measure() {
  local s=$1 port spid out proto line ph
  port=$("$FANOUT" --free-port)
  start_server "$s" "$port" "$TMP/$s.log" || return 1
  spid=$SPID
  proto=$(proto_of "$s")
  sleep 0.5
  if ! tool --conns 100 --phase 100:50 --settle 0 --drain 5 --timeout 60 \
       >/dev/null 2>"$TMP/warmup.err"; then
    say "   $s: warm-up failed: $(tail -1 "$TMP/warmup.err")"
    stop_server "$spid"
    return 1
  fi
  sleep 0.5
  tool --conns "$CONNS" --phase "$LOW" --phase "$HIGH" --pad "$PAD" \
    --server-pid "$spid" --timeout "$TIMEOUT" >"$TMP/$s.out" 2>"$TMP/$s.err"
  local rc=$?
  out=$(cat "$TMP/$s.out")
  sed 's/^/   /' "$TMP/$s.err" >&2
  ((rc == 0)) || say "   $s: fanout failed (exit $rc)"
  while read -r line; do
    ph=$(field "$line" phase)
    case $ph in
      0)
        R[$s,setup]=$(field "$line" setup_secs)
        R[$s,rss]=$(field "$line" rss_per_conn_b) ;;
      1 | 2)
        local k=p$ph scpu
        R[$s,$k.rate]=$(field "$line" deliveries_per_s)
        R[$s,$k.p50]=$(awk -v v="$(field "$line" p50_us)" 'BEGIN { printf "%.1f", v / 1000 }')
        R[$s,$k.p99]=$(awk -v v="$(field "$line" p99_us)" 'BEGIN { printf "%.1f", v / 1000 }')
        scpu=$(field "$line" server_cpu)
        R[$s,$k.cpu]="$scpu($(field "$line" server_sys))/$(field "$line" fanout_cpu)"
        # deliveries per second of server CPU (user + kernel, over the
        # whole phase: publishing and draining)
        R[$s,$k.eff]=$(awk -v d="$(field "$line" deliveries)" \
          -v c="$(field "$line" server_cpu_s)" \
          'BEGIN { if (c > 0) printf "%.0f", d / c }')
        R[$s,$k.bad]="$(field "$line" missing)/$(field "$line" duplicate)/$(field "$line" out_of_order)/$(field "$line" lost_conns)"
        R[$s,$k.valid]=$(field "$line" valid) ;;
    esac
  done < <(grep '^result:' <<<"$out")
  stop_server "$spid"
  grep -h 'disconnections' "$TMP/$s.log" | sed 's/^/   /' >&2
}

# ---- report -----------------------------------------------------------------

ratio() { # a b -> a/b with two decimals, or n/a
  [[ -n $1 && -n $2 ]] || { printf 'n/a'; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}

label() { # RATE:COUNT -> "RATE/s xCOUNT"
  printf '%s/s x%s' "${1%%:*}" "${1#*:}"
}

report() {
  local l h
  l=$(label "$LOW") h=$(label "$HIGH")
  local -a rows=(
    "setup|subscribe ${CONNS} conns, s"
    "rss|server RSS B/subscriber"
  )
  local k lab
  for k in p1 p2; do
    [[ $k == p1 ]] && lab=$l || lab=$h
    rows+=("$k.rate|$lab deliveries/s"
           "$k.p50|$lab p50 ms"
           "$k.p99|$lab p99 ms"
           "$k.cpu|$lab cpu% srv(sys)/tool"
           "$k.eff|$lab deliveries/cpu-s"
           "$k.bad|$lab miss/dup/reord/cut")
  done
  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
  echo
  echo "fan-out benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores ($cpu)," \
       "Linux $(uname -r), load average at start $LOAD_START"
  printf '%-36s %10s %10s %10s %10s %10s %10s %10s\n' figure duplex ws ws-frame \
    socket.io duplex/ws dx/wsframe dx/sio
  local row key d w f i
  for row in "${rows[@]}"; do
    IFS='|' read -r key lab <<<"$row"
    d=${R[duplex,$key]:-} w=${R[ws,$key]:-} f=${R[ws-frame,$key]:-} i=${R[sio,$key]:-}
    if [[ $key == *.cpu || $key == *.bad ]]; then
      printf '%-36s %10s %10s %10s %10s\n' "$lab" "${d:--}" "${w:--}" "${f:--}" "${i:--}"
    else
      printf '%-36s %10s %10s %10s %10s %10s %10s %10s\n' "$lab" "${d:--}" \
        "${w:--}" "${f:--}" "${i:--}" "$(ratio "$d" "$w")" "$(ratio "$d" "$f")" \
        "$(ratio "$d" "$i")"
    fi
  done
  local bad=() s
  for s in duplex ws ws-frame sio; do
    for k in p1 p2; do
      [[ -n ${R[$s,$k.valid]:-} && ${R[$s,$k.valid]} != 1 ]] && bad+=("$s/$k")
    done
  done
  ((${#bad[@]})) &&
    echo "INVALID (messages missing, duplicated or reordered, subscribers cut, or not all published): ${bad[*]}"
  # A server that kept up delivers at least the offered rate (N x R; a
  # little more, since the count runs from the first publish, not from
  # one period before it).
  local behind=() spec
  for s in duplex ws ws-frame sio; do
    for k in p1 p2; do
      [[ $k == p1 ]] && spec=$LOW || spec=$HIGH
      [[ -n ${R[$s,$k.rate]:-} ]] || continue
      awk -v d="${R[$s,$k.rate]}" -v r="${spec%%:*}" -v n="$CONNS" \
        'BEGIN { exit !(d < 0.95 * r * n) }' && behind+=("$s/$(label "$spec")")
    done
  done
  ((${#behind[@]})) &&
    echo "fell behind (delivered under 95% of the offered rate): ${behind[*]}"
  echo "miss/dup/reord/cut: deliveries missing, duplicated, out of order;"
  echo "subscribers the server disconnected. All 0 for a valid run."
  echo "deliveries/s and deliveries/cpu-s: higher is better (ratio > 1 favours"
  echo "duplex); setup time, memory and latency: lower is better (ratio < 1"
  echo "favours duplex). cpu%: server (its kernel part) / load tool, 100 = one"
  echo "core busy. $h offers $(awk -v r="${HIGH%%:*}" -v n="$CONNS" \
    'BEGIN { printf "%.0f", r * n }') deliveries/s: a server"
  echo "slower than that falls behind, and its latency is its backlog."
}

# ---- main -------------------------------------------------------------------

main() {
  build
  local want=$((CONNS + 256)) hard
  ulimit -n 65536 2>/dev/null || {
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] || ulimit -n "$hard"
  }
  if (($(ulimit -n) < want)); then
    say "== ulimit -n is $(ulimit -n): $(($(ulimit -n) - 256)) subscribers instead of $CONNS"
    CONNS=$(($(ulimit -n) - 256))
  fi
  local s active=()
  for s in $SERVERS; do
    if available "$s"; then active+=("$s"); else say "== $s: not available, skipped"; fi
  done
  ((${#active[@]})) || { say "nothing to measure"; exit 1; }
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  say "== $CONNS subscribers; phases $(label "$LOW") then $(label "$HIGH")"
  for s in "${active[@]}"; do
    say "== $s"
    measure "$s"
  done
  report
}

main "$@"
