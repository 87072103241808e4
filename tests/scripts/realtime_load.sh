#!/bin/bash
# The duplex.v1 channel server under load (tests/realtime/):
#   order.py   4 concurrent publishers (2 HTTP API, 2 WebSocket) x 250
#              messages to one topic, 20 subscribers, --threads 4: every
#              subscriber sees seq 1..1000 with the same data per seq
#   fanout.js  1,000 subscribers (Node ws) on one topic, --threads 4,
#              1,000 messages: every subscriber gets all, in order
#   slow.py    --slow-consumer skip (bounded memory, a "dropped" gap,
#              resume with since), conflate (the latest value), drop (the
#              default: disconnected and counted)
# Servers on 127.0.0.1, SIGTERM -> exit 0, no sanitizer report.
#
# Usage: realtime_load.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -u
# shellcheck source=../realtime/rt_lib.sh
. "$2/tests/realtime/rt_lib.sh"
rt_init "$1" "$2" realtime_load

rt_start order --threads 4 --rate 0 --close-timeout 1s
# 1,000 connections: the open/close log lines are not needed.
rt_start fanout --threads 4 --rate 0 --quiet --close-timeout 1s
# The skip server's VmRSS is asserted: a small ASan quarantine, so that
# freed blocks do not count as the server's memory.
DX_START_ENV="ASAN_OPTIONS=$ASAN_OPTIONS:quarantine_size_mb=4" \
  rt_start skip --slow-consumer skip --history 20 --close-timeout 1s
# The same with a small --write-limit: the hard limit is below the 256 KiB
# where the server starts skipping.
DX_START_ENV="ASAN_OPTIONS=$ASAN_OPTIONS:quarantine_size_mb=4" \
  rt_start skip_small --slow-consumer skip --history 20 --write-limit 128KiB \
  --close-timeout 1s
rt_start conflate --slow-consumer conflate --close-timeout 1s
rt_start drop --close-timeout 1s

rt_py "ordering under concurrent publishers" order.py "${DX_PORT[order]}"
rt_node "fan-out: 1,000 subscribers x 1,000 messages" fanout.js \
  "${DX_PORT[fanout]}" 1000 1000
rt_py "slow consumer: skip" slow.py skip "${DX_PORT[skip]}" \
  "${DX_PID[skip]}" 20
rt_py "slow consumer: skip, --write-limit 128KiB" slow.py skip \
  "${DX_PORT[skip_small]}" "${DX_PID[skip_small]}" 20
rt_py "slow consumer: conflate" slow.py conflate "${DX_PORT[conflate]}"
rt_py "slow consumer: drop (default)" slow.py drop "${DX_PORT[drop]}"

dx_finish
