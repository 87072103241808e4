#!/bin/bash
# The duplex.v1 channel server (`duplex serve`, /ws and the HTTP API)
# against docs/protocol.md, with python3-websockets clients
# (tests/realtime/*.py, one line per assertion):
#   resume.py       since/epoch semantics, gap notices (history, epoch), no
#                   duplicate or hole when a replay races live publishes
#   restart.py      resume across a restart on the same port: close 1012
#                   "restart", a new epoch, the epoch gap for old clients
#   errors.py       acks with ids, every error code, limits (depth, size,
#                   --max-subscriptions); the connection survives each
#   ratelimit.py    --rate/--burst: rate_limited errors, counted; a flood
#                   is closed with 1008
#   presence.py     --presence join/leave/presence; off: unknown_op
#   metrics.py      /metrics parses and moves, per-topic series bounded,
#                   /healthz, /api/topics, HTTP API errors
#   origin_quota.py same-origin default (403 + a log line), --origin,
#                   --max-per-ip (429), --max-connections (503)
# Every server binds 127.0.0.1 on a free port, is stopped with SIGTERM and
# must exit 0 with no sanitizer report in its stderr.
#
# Usage: realtime_protocol.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: ASan build)
set -u
# shellcheck source=../realtime/rt_lib.sh
. "$2/tests/realtime/rt_lib.sh"
rt_init "$1" "$2" realtime_protocol

rt_start main --close-timeout 1s
rt_start h5 --history 5 --close-timeout 1s
rt_start restart --close-timeout 1s
rt_start subs3 --max-subscriptions 3 --close-timeout 1s
rt_start rate --rate 10 --burst 10 --close-timeout 1s
rt_start presence --presence --close-timeout 1s
rt_start metrics --close-timeout 1s
rt_start origin --origin http://good.example --close-timeout 1s
rt_start perip --max-per-ip 3 --close-timeout 1s
rt_start maxconn --max-connections 5 --close-timeout 1s

rt_py "subscribe/since/epoch semantics" resume.py \
  "${DX_PORT[main]}" "${DX_PORT[h5]}"

# ---- restart: a client connected across a SIGTERM, then a resume --------
echo "== resume across a restart"
state="$DX_WORK/restart.state"
before_out="$DX_WORK/restart-before.out"
timeout -k 5 40 "$DX_PY" "$RT_DIR/restart.py" before "${DX_PORT[restart]}" \
  "$state" >"$before_out" 2>&1 &
before_pid=$!
for ((i = 0; i < 100; i++)); do
  grep -q '^ready$' "$before_out" && break
  kill -0 "$before_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q '^ready$' "$before_out" || dx_fail "restart: the client did not get ready"
rt_restart restart
wait "$before_pid" || dx_fail "restart: before the restart"
cat "$before_out"
rt_py "resume after the restart" restart.py after "${DX_PORT[restart]}" \
  "$state"

rt_py "acks and errors" errors.py "${DX_PORT[main]}" "${DX_PORT[subs3]}"
rt_py "rate limits" ratelimit.py "${DX_PORT[rate]}"
rt_py "presence" presence.py "${DX_PORT[presence]}" "${DX_PORT[main]}"
rt_py "metrics, healthz, topics" metrics.py "${DX_PORT[metrics]}"
rt_py "origins and quotas" origin_quota.py "${DX_PORT[main]}" \
  "${DX_ERR[main]}" "${DX_PORT[origin]}" "${DX_PORT[perip]}" \
  "${DX_PORT[maxconn]}"

dx_finish
