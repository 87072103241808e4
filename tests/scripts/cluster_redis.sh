#!/bin/bash
# Several `duplex serve --redis` nodes behind HAProxy (issue 7), with a real
# redis-server (Debian) and HAProxy (Debian) on loopback ports, and
# python3-websockets clients that record every frame they receive
# (tests/cluster/cluster.py, one line per assertion):
#   1 spread     clients land on several nodes; publishes on any node reach
#                every subscriber once, one order (seq -> data) per topic
#   2 move       resume on another node with since/epoch: exactly what was
#                missed; past the history, gap (history) then the rest
#   3 redis      redis-server stopped (AOF) and restarted: /healthz 503
#                degraded then 200, publishes fail with `unavailable`,
#                connected subscribers lose nothing, no gap
#   4 data loss  redis-server without persistence restarted: gap (epoch)
#                with the new epoch, then seqs from 1
#   5 kill       a node SIGKILLed: its clients resume through HAProxy
#   6 haproxy    HAProxy restarted: every client resumes
# then tests/cluster/views.py: presence and /api/topics over both nodes,
# join/leave across nodes, a SIGKILLed node's entries expire, both views
# answer `unavailable` while Redis is down.
# Every process binds 127.0.0.1; the nodes must exit 0 on SIGTERM with no
# sanitizer report. Whatever happens, the exit trap kills (by pid) every
# process the test started (WORK/pids/*).
#
# Usage: cluster_redis.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: ASan build)
set -u
# shellcheck source=../hostile/serve_lib.sh
. "$2/tests/hostile/serve_lib.sh"
dx_init "$1" "$2" cluster_redis

for tool in /usr/bin/redis-server /usr/sbin/haproxy; do
  if [[ ! -x $tool ]]; then
    echo "FAIL: $tool is not installed (make deps: redis-server, haproxy)" >&2
    exit 1
  fi
done

cluster_cleanup() {
  local f pid
  for f in "$DX_WORK"/pids/* "$DX_WORK"/views/pids/*; do
    [[ -f $f ]] || continue
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] && kill -KILL "$pid" 2>/dev/null
  done
  dx_cleanup
}
trap cluster_cleanup EXIT

# Runs one Python suite (NAME, its file, its work dir) under a time limit;
# on failure, shows the tail of each process's stderr.
run_suite() {
  local name=$1 py=$2 work=$3 rc=0 t0=$SECONDS f
  mkdir -p "$work"
  timeout -k 5 "${CLUSTER_TIMEOUT:-170}" "$DX_PY" "$py" "$DX_BUILD" "$work" ||
    rc=$?
  ((rc == 124)) && dx_fail "$name: timed out after ${CLUSTER_TIMEOUT:-170}s"
  ((rc == 0)) || dx_fail "$name (exit $rc)"
  if ((rc != 0)); then
    for f in "$work"/*.err; do
      [[ -s $f ]] || continue
      echo "---- tail of $(basename "$f")"
      tail -n 15 "$f"
    done
  fi
  echo "== $name: $((SECONDS - t0))s"
}

echo "== cluster: redis-server, 3 + 2 nodes, HAProxy"
run_suite cluster "$DX_SRC/tests/cluster/cluster.py" "$DX_WORK"
echo "== views: presence and topic counts across 2 nodes, a dead node expires"
run_suite views "$DX_SRC/tests/cluster/views.py" "$DX_WORK/views"
dx_finish
