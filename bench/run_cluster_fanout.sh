#!/usr/bin/env bash
# Fan-out in-process versus through Redis, side by side in one run, and how
# far one node goes. See bench/README.md ("The Redis fan-out comparison")
# for what each figure means.
#
#   bench/run_cluster_fanout.sh      # everything, about 3 minutes
#
# Setups:
#   inproc  one `duplex serve` node (--threads 1), CONNS subscribers on one
#           topic, the publisher on the same node
#   redis   a redis-server started here and 2 nodes (--redis, --threads 1
#           each), CONNS/2 subscribers on each, the publisher on the first:
#           every publish goes through Redis (one Lua script) and comes back
#           to both nodes on their subscription
#   sweep   one in-process node with --threads 1, then --threads 2, at
#           increasing publish rates: the deliveries/s one node sustains
#
# Environment knobs (defaults in brackets):
#   SETUPS="inproc redis sweep"  what to measure
#   CONNS=10000              subscriber connections in all (lowered to fit
#                            ulimit -n)
#   LOW=2:20                 first phase, RATE:COUNT, a load both setups
#                            keep up with
#   HIGH=100:100             second phase (1,000,000 deliveries/s offered),
#                            more than either delivers here
#   SWEEP="20:40 50:100 100:200 200:400"   the sweep's phases
#   SWEEP_THREADS="1 2"      the --threads values of the sweep
#   PATH_PHASE=50:100        the path alone: one subscriber (redis: on the
#                            other node than the publisher), before the
#                            main run
#   PAD=0                    bytes of padding in each message's data
#   TIMEOUT=120              seconds one load-tool run may take at most
#   REDIS_SERVER=redis-server  the Redis binary (Debian: /usr/bin)
#   BUILD=build/release      CMake build directory (Release, no tests)
#
# Pinning (2 cores): the nodes and redis-server on core 0, the load tool on
# core 1, so both setups get the same single core for everything
# server-side and the load tool never sets the pace. The sweep's
# --threads 2 node runs on cores 0 and 1 (the load tool still on core 1).
# Everything binds 127.0.0.1 on free ports; every process this script
# starts is stopped when it exits, however it exits.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build/release}
SETUPS=${SETUPS:-inproc redis sweep}
CONNS=${CONNS:-10000}
LOW=${LOW:-2:20}
HIGH=${HIGH:-100:100}
SWEEP=${SWEEP:-20:40 50:100 100:200 200:400}
SWEEP_THREADS=${SWEEP_THREADS:-1 2}
PATH_PHASE=${PATH_PHASE:-50:100}
PAD=${PAD:-0}
TIMEOUT=${TIMEOUT:-120}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
SERVER_CPU=0
TOOL_CPU=1

FANOUT=$BUILD/bench/fanout
DUPLEX=$BUILD/src/app/duplex

TMP=$(mktemp -d /tmp/run_cluster_fanout.XXXXXX)
PIDS=()

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
trap_cleanup

# ---- build ------------------------------------------------------------------

build() {
  build_release fanout
  build_duplex "nothing to measure" || exit 1
}

# ---- processes --------------------------------------------------------------

# start_node port cpus log [extra args...] -> sets SPID
start_node() {
  local port=$1 cpus=$2 log=$3
  shift 3
  taskset -c "$cpus" "$DUPLEX" serve --port "$port" --host 127.0.0.1 \
    --quiet --rate 0 --no-deflate "$@" >"$log" 2>&1 &
  SPID=$!
  PIDS+=("$SPID")
  wait_listening "$SPID" "$port" "$log" "duplex serve" || { stop "$SPID"; return 1; }
}

# Waits until the node's /healthz answers 200 (Redis connected; 5 s).
healthy() { # port
  command -v curl >/dev/null || { sleep 1; return 0; }
  local i
  for ((i = 0; i < 50; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/healthz") == 200 ]] &&
      return 0
    sleep 0.1
  done
  say "   node on port $1 not healthy: $(curl -s "http://127.0.0.1:$1/healthz")"
  return 1
}

start_redis() { # -> sets RPID, RPORT
  RPORT=$("$FANOUT" --free-port)
  taskset -c $SERVER_CPU "$REDIS_SERVER" --port "$RPORT" --bind 127.0.0.1 \
    --save '' --appendonly no --dir "$TMP" --daemonize no \
    >"$TMP/redis.log" 2>&1 &
  RPID=$!
  PIDS+=("$RPID")
  wait_listening "$RPID" "$RPORT" "$TMP/redis.log" redis-server ||
    { stop "$RPID"; return 1; }
}

rcli() { redis-cli -h 127.0.0.1 -p "$RPORT" "$@"; }

# Runs the load tool on its core (run_waited: a signal to this script is
# handled at once).
tool() { run_waited taskset -c $TOOL_CPU "$FANOUT" "$@"; }

calc() { awk "BEGIN { $1 }"; }

# ---- measurements -----------------------------------------------------------

declare -A R # R[setup,figure] = value

# Parses the tool's result lines into R[$1,...]; $2: messages per phase
# are published once whatever the subscriber count.
collect() { # setup outfile
  local s=$1 line ph k
  while read -r line; do
    ph=$(field "$line" phase)
    if [[ $ph == 0 ]]; then
      R[$s,setup]=$(field "$line" setup_secs)
      R[$s,rss]=$(field "$line" rss_per_conn_b)
      continue
    fi
    k=p$ph
    local d pub cs scpu wall
    d=$(field "$line" deliveries) pub=$(field "$line" published)
    cs=$(field "$line" server_cpu_s) wall=$(field "$line" wall_s)
    R[$s,$k.rate]=$(field "$line" deliveries_per_s)
    R[$s,$k.p50]=$(calc "printf \"%.1f\", $(field "$line" p50_us) / 1000")
    R[$s,$k.p99]=$(calc "printf \"%.1f\", $(field "$line" p99_us) / 1000")
    if [[ $(field "$line" acks) != 0 ]]; then
      R[$s,$k.ack]="$(calc "printf \"%.2f/%.2f\", $(field "$line" ack_p50_us) / 1000, $(field "$line" ack_p99_us) / 1000")"
    fi
    scpu=$(field "$line" server_cpu)
    R[$s,$k.cpu]="$scpu($(field "$line" server_sys))/$(field "$line" fanout_cpu)"
    R[$s,$k.us]=$(calc "if ($d > 0 && $cs >= 0) printf \"%.2f\", $cs * 1e6 / $d")
    R[$s,$k.bad]="$(field "$line" missing)/$(field "$line" duplicate)/$(field "$line" out_of_order)/$(field "$line" lost_conns)"
    R[$s,$k.valid]=$(field "$line" valid)
    R[$s,$k.wall]=$wall
    local rc rin rout
    rc=$(field "$line" redis_cpu_s) rin=$(field "$line" redis_in_b) rout=$(field "$line" redis_out_b)
    if [[ -n $rc && $rc != -1* && $pub -gt 0 ]]; then
      R[$s,$k.rcpu]=$(calc "printf \"%.0f\", $rc * 1e6 / $pub")
      R[$s,$k.rcpupct]=$(calc "printf \"%.1f\", 100 * $rc / $wall")
      # less Redis's idle CPU (cron, the nodes' pings) over the phase
      [[ -n ${R[$s,idle]:-} ]] &&
        R[$s,$k.rcpunet]=$(calc "v = ($rc - ${R[$s,idle]} * $wall) * 1e6 / $pub; printf \"%.0f\", v < 0 ? 0 : v")
      R[$s,$k.rin]=$(calc "printf \"%.0f\", $rin / $pub")
      R[$s,$k.rout]=$(calc "printf \"%.0f\", $rout / $pub")
    fi
  done < <(grep '^result:' "$2")
}

# measure setup: the warm-up, then CONNS subscribers, LOW, HIGH.
measure_inproc() {
  local port pid
  port=$("$FANOUT" --free-port)
  start_node "$port" $SERVER_CPU "$TMP/inproc.log" --threads 1 || return 1
  pid=$SPID
  sleep 0.3
  if ! tool --port "$port" --conns 100 --phase 100:50 --settle 0 --drain 5 \
    --timeout 60 >/dev/null 2>"$TMP/warmup.err"; then
    say "   warm-up failed: $(tail -1 "$TMP/warmup.err")"
    stop "$pid"
    return 1
  fi
  # the path alone: one subscriber, PATH_PHASE
  tool --port "$port" --conns 1 --phase "$PATH_PHASE" --settle 0 --drain 5 \
    --timeout 60 >"$TMP/inproc1.out" 2>"$TMP/inproc1.err" &&
    collect inproc1 "$TMP/inproc1.out"
  sleep 0.5
  tool --port "$port" --conns "$CONNS" --phase "$LOW" --phase "$HIGH" \
    --pad "$PAD" --server-pid "$pid" --timeout "$TIMEOUT" \
    >"$TMP/inproc.out" 2>"$TMP/inproc.err" || say "   inproc: fanout failed"
  sed 's/^/   /' "$TMP/inproc.err" >&2
  collect inproc "$TMP/inproc.out"
  stop "$pid"
}

measure_redis() {
  if ! command -v "$REDIS_SERVER" >/dev/null || ! command -v redis-cli >/dev/null; then
    say "   $REDIS_SERVER or redis-cli missing: the Redis column stays empty"
    return 1
  fi
  start_redis || return 1
  R[redis,version]=$(rcli INFO server | tr -d '\r' | sed -n 's/^redis_version://p')
  local p1 p2 n1 n2
  p1=$("$FANOUT" --free-port) p2=$("$FANOUT" --free-port)
  start_node "$p1" $SERVER_CPU "$TMP/node1.log" --threads 1 \
    --redis "redis://127.0.0.1:$RPORT" || { stop "$RPID"; return 1; }
  n1=$SPID
  start_node "$p2" $SERVER_CPU "$TMP/node2.log" --threads 1 \
    --redis "redis://127.0.0.1:$RPORT" || { stop "$n1"; stop "$RPID"; return 1; }
  n2=$SPID
  if ! healthy "$p1" || ! healthy "$p2"; then
    stop "$n2"; stop "$n1"; stop "$RPID"; return 1
  fi
  if ! tool --port "$p1" --sub-port "$p1" --sub-port "$p2" --conns 100 \
    --phase 100:50 --settle 0 --drain 5 --timeout 60 \
    >/dev/null 2>"$TMP/warmup.err"; then
    say "   warm-up failed: $(tail -1 "$TMP/warmup.err")"
    stop "$n2"; stop "$n1"; stop "$RPID"
    return 1
  fi
  # the path alone: one subscriber on node 2, the publisher on node 1
  tool --port "$p1" --sub-port "$p2" --conns 1 --phase "$PATH_PHASE" \
    --settle 0 --drain 5 --timeout 60 >"$TMP/redis1.out" 2>"$TMP/redis1.err" &&
    collect redis1 "$TMP/redis1.out"
  # Redis's CPU with both nodes connected and nothing published: its cron
  # and the nodes' pings (one a second each), charged to no message.
  sleep 0.5
  local c0 c1
  c0=$(rcli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { print s }')
  sleep 2
  c1=$(rcli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { print s }')
  R[redis,idle]=$(calc "printf \"%.5f\", ($c1 - $c0) / 2")
  rcli CONFIG RESETSTAT >/dev/null
  tool --port "$p1" --sub-port "$p1" --sub-port "$p2" --conns "$CONNS" \
    --phase "$LOW" --phase "$HIGH" --pad "$PAD" --server-pid "$n1" \
    --server-pid "$n2" --redis-port "$RPORT" --timeout "$TIMEOUT" \
    >"$TMP/redis.out" 2>"$TMP/redis.err" || say "   redis: fanout failed"
  sed 's/^/   /' "$TMP/redis.err" >&2
  collect redis "$TMP/redis.out"
  # The publish script's own run time, as Redis measures it (no I/O)
  R[redis,script]=$(rcli INFO commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p')
  local m
  m=$(curl -s "http://127.0.0.1:$p1/metrics" 2>/dev/null |
    awk '/^duplex_redis_publish_failed_total/ { print $2 }')
  [[ -n $m ]] && R[redis,pubfail]=$m
  stop "$n2"; stop "$n1"; stop "$RPID"
  grep -h -i 'error\|redis' "$TMP/node1.log" "$TMP/node2.log" | grep -v listening |
    head -5 | sed 's/^/   node: /' >&2
}

measure_sweep() { # threads
  local t=$1 port pid cpus=$SERVER_CPU spec args=()
  ((t > 1)) && cpus=0-$((t - 1))
  port=$("$FANOUT" --free-port)
  start_node "$port" "$cpus" "$TMP/sweep$t.log" --threads "$t" || return 1
  pid=$SPID
  sleep 0.3
  tool --port "$port" --conns 100 --phase 100:50 --settle 0 --drain 5 \
    --timeout 60 >/dev/null 2>"$TMP/warmup.err"
  sleep 0.5
  for spec in $SWEEP; do args+=(--phase "$spec"); done
  tool --port "$port" --conns "$CONNS" "${args[@]}" --pad "$PAD" \
    --server-pid "$pid" --drain 5 --timeout "$TIMEOUT" \
    >"$TMP/sweep$t.out" 2>"$TMP/sweep$t.err" || say "   sweep $t: fanout failed"
  sed 's/^/   /' "$TMP/sweep$t.err" >&2
  collect "sweep$t" "$TMP/sweep$t.out"
  stop "$pid"
}

# ---- report -----------------------------------------------------------------

report() {
  local l h cpu
  l=$(label "$LOW") h=$(label "$HIGH")
  cpu=$(cpu_model)
  echo
  echo "Redis fan-out benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores ($cpu)," \
    "Linux $(uname -r), redis ${R[redis,version]:--}, load average at start $LOAD_START"
  echo "$CONNS subscribers on one topic: inproc = 1 node; redis = 2 nodes x $((CONNS / 2)), publisher on node 1"
  if [[ " $SETUPS " == *" inproc "* || " $SETUPS " == *" redis "* ]]; then
    printf '%-36s %12s %12s %12s\n' figure in-process "through Redis" redis/inproc
    local pl
    pl=$(label "$PATH_PHASE")
    local rows=("p1.p50|1 sub, $pl p50 ms" "p1.p99|1 sub, $pl p99 ms"
                "p1.ack|1 sub, $pl publish ack p50/p99 ms")
    local row key a b
    for row in "${rows[@]}"; do
      IFS='|' read -r key lab <<<"$row"
      a=${R[inproc1,$key]:-} b=${R[redis1,$key]:-}
      printf '%-36s %12s %12s\n' "$lab" "${a:--}" "${b:--}"
    done
    rows=("setup|subscribe $CONNS conns, s" "rss|nodes' RSS B/subscriber")
    local k lab
    for k in p1 p2; do
      [[ $k == p1 ]] && lab=$l || lab=$h
      rows+=("$k.rate|$lab deliveries/s" "$k.p50|$lab p50 ms" "$k.p99|$lab p99 ms"
             "$k.ack|$lab publish ack p50/p99 ms" "$k.cpu|$lab cpu% nodes(sys)/tool"
             "$k.us|$lab node CPU us/delivery" "$k.bad|$lab miss/dup/reord/cut"
             "$k.rcpu|$lab Redis CPU us/msg" "$k.rcpunet|$lab  less idle, us/msg"
             "$k.rcpupct|$lab Redis cpu%" "$k.rin|$lab Redis in B/msg"
             "$k.rout|$lab Redis out B/msg")
    done
    for row in "${rows[@]}"; do
      IFS='|' read -r key lab <<<"$row"
      a=${R[inproc,$key]:-} b=${R[redis,$key]:-}
      case $key in
        *.cpu | *.bad | *.ack | *.rcpu* | *.rin | *.rout)
          printf '%-36s %12s %12s\n' "$lab" "${a:--}" "${b:--}" ;;
        *) printf '%-36s %12s %12s %12s\n' "$lab" "${a:--}" "${b:--}" "$(ratio "$b" "$a")" ;;
      esac
    done
    printf '%-36s %12s %12s\n' "Redis idle cpu% (cron, node pings)" - \
      "$([[ -n ${R[redis,idle]:-} ]] && calc "printf \"%.2f\", ${R[redis,idle]} * 100" || echo -)"
    printf '%-36s %12s %12s\n' "publish script us/call (Redis's)" - "${R[redis,script]:--}"
    local bad=() s behind=() spec
    for s in inproc redis; do
      for k in p1 p2; do
        [[ -n ${R[$s,$k.valid]:-} && ${R[$s,$k.valid]} != 1 ]] && bad+=("$s/$k")
        [[ $k == p1 ]] && spec=$LOW || spec=$HIGH
        [[ -n ${R[$s,$k.rate]:-} ]] || continue
        calc "exit !(${R[$s,$k.rate]} < 0.95 * ${spec%%:*} * $CONNS)" &&
          behind+=("$s/$(label "$spec")")
      done
    done
    ((${#bad[@]})) &&
      echo "INVALID (messages missing, duplicated or reordered, subscribers cut, or not all published): ${bad[*]}"
    ((${#behind[@]})) &&
      echo "fell behind (delivered under 95% of the offered rate): ${behind[*]}"
    [[ -n ${R[redis,pubfail]:-} && ${R[redis,pubfail]} != 0 ]] &&
      echo "publishes Redis refused or that failed: ${R[redis,pubfail]}"
  fi
  local t spec i
  local -a specs
  read -r -a specs <<<"$SWEEP"
  for t in $SWEEP_THREADS; do
    [[ -n ${R[sweep$t,p1.rate]:-} ]] || continue
    echo
    echo "one node, in-process, --threads $t ($([[ $t == 1 ]] && echo "core $SERVER_CPU" || echo "cores 0-$((t - 1))"), load tool on core $TOOL_CPU), $CONNS subscribers:"
    printf '%-16s %12s %12s %10s %10s %16s %10s\n' phase offered/s deliveries/s p50_ms p99_ms "cpu% node(sys)" us/deliv
    for ((i = 0; i < ${#specs[@]}; i++)); do
      spec=${specs[i]}
      local k=p$((i + 1))
      [[ -n ${R[sweep$t,$k.rate]:-} ]] || continue
      printf '%-16s %12s %12s %10s %10s %16s %10s%s\n' "$(label "$spec")" \
        "$((${spec%%:*} * CONNS))" "${R[sweep$t,$k.rate]}" "${R[sweep$t,$k.p50]}" \
        "${R[sweep$t,$k.p99]}" "${R[sweep$t,$k.cpu]%/*}" "${R[sweep$t,$k.us]:--}" \
        "$([[ ${R[sweep$t,$k.valid]} == 1 ]] || echo "  INVALID ${R[sweep$t,$k.bad]}")"
    done
  done
  echo
  echo "deliveries/s: from the first publish to the last delivery; latency: publish"
  echo "write to subscriber read; publish ack: publish write to the \"published\""
  echo "reply (through Redis: the node's round trip to Redis). Redis figures per"
  echo "published message, from its INFO (CPU: used_cpu_user+sys; bytes:"
  echo "total_net_input/output_bytes). cpu%: 100 = one core busy."
}

# ---- main -------------------------------------------------------------------

main() {
  build
  if ! fd_fit "$CONNS"; then
    say "== ulimit -n is $(ulimit -n): $FD_FIT subscribers instead of $CONNS"
    CONNS=$FD_FIT
  fi
  CONNS=$((CONNS / 2 * 2)) # two nodes, the same share each
  command -v taskset >/dev/null || { say "taskset (util-linux) is missing"; exit 1; }
  LOAD_START=$(load_avg)
  say "== $CONNS subscribers; phases $(label "$LOW") then $(label "$HIGH")"
  local s t
  for s in $SETUPS; do
    case $s in
      inproc) say "== in-process, 1 node"; measure_inproc ;;
      redis) say "== through Redis, 2 nodes"; measure_redis ;;
      sweep)
        for t in $SWEEP_THREADS; do
          say "== sweep, one node, --threads $t"
          measure_sweep "$t"
        done ;;
      *) say "== unknown setup $s, skipped" ;;
    esac
  done
  report
}

main "$@"
