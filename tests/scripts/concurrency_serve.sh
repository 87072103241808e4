#!/bin/bash
# 10,000 concurrent idle WebSocket connections on loopback held by ONE
# `duplex serve` (the sanitizer build): all upgraded, memory per connection
# printed, an echo still served while they are held, all closed with a
# closing handshake each, the server's fds back to their start, then a
# SIGTERM that must end in exit 0 with no sanitizer report.
# See tests/hostile/concurrency_client.py. Budget: about 90 s.
#
# Usage: concurrency_serve.sh BUILD_DIR SOURCE_DIR [N]
set -u
. "$2/tests/hostile/serve_lib.sh"
dx_init "$1" "$2" concurrency_serve
N=${3:-10000}

# Each side holds N sockets. 65536 where the hard limit allows; the client
# and the server inherit it. Too low a limit is a failure, never a skip.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < N + 200)); then
  echo "FAIL: open-file limit $(ulimit -n) (hard $(ulimit -Hn)) is below" \
    "the $N connections this test holds" >&2
  exit 1
fi
echo "open-file limit: $(ulimit -n)"

dx_start crowd --echo /echo --quiet --close-timeout 2s
DX_RUN_TIMEOUT=80 dx_run "$N idle connections" concurrency_client.py \
  "${DX_PORT[crowd]}" "${DX_PID[crowd]}" "$N"
dx_finish
