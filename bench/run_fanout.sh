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

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
trap_cleanup

# ---- build ------------------------------------------------------------------

build() {
  build_release fanout
  if [[ " $SERVERS " == *" duplex "* ]]; then
    build_duplex "its column stays empty"
  fi
  if [[ " $SERVERS " == *" ws"* || " $SERVERS " == *" sio "* ]]; then
    node_deps "$NODE_DIR" "ws and Socket.IO" ws socket.io
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

# start_server name port log -> sets SPID
start_server() {
  local name=$1 port=$2 log=$3
  local -a cmd
  mapfile -t cmd < <(server_cmd "$name" "$port")
  taskset -c $SERVER_CPU "${cmd[@]}" >"$log" 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
  wait_listening "$SPID" "$port" "$log" "$name" && return 0
  stop "$SPID"
  return 1
}

# Runs the load tool on its core against $port with $proto (run_waited:
# a signal to this script is handled at once, the cleanup stops the tool).
tool() {
  run_waited taskset -c $TOOL_CPU "$FANOUT" --port "$port" --proto "$proto" "$@"
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
    stop "$spid"
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
  stop "$spid"
  grep -h 'disconnections' "$TMP/$s.log" | sed 's/^/   /' >&2
}

# ---- report -----------------------------------------------------------------

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
  cpu=$(cpu_model)
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
  if ! fd_fit "$CONNS"; then
    say "== ulimit -n is $(ulimit -n): $FD_FIT subscribers instead of $CONNS"
    CONNS=$FD_FIT
  fi
  local s active=()
  for s in $SERVERS; do
    if available "$s"; then active+=("$s"); else say "== $s: not available, skipped"; fi
  done
  ((${#active[@]})) || { say "nothing to measure"; exit 1; }
  LOAD_START=$(load_avg)
  say "== $CONNS subscribers; phases $(label "$LOW") then $(label "$HIGH")"
  for s in "${active[@]}"; do
    say "== $s"
    measure "$s"
  done
  report
}

main "$@"
