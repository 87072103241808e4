#!/bin/bash
# Hostile clients against `duplex serve` (the ASan+UBSan build): oversized
# and malformed HTTP, path traversal out of --root, slowloris, peers that
# never answer pings, consumers that never read, a connection flood past
# --max-per-ip. The clients are raw-socket Python under tests/hostile/; each
# prints one line per assertion. Every server binds 127.0.0.1 on a free
# port, is stopped with SIGTERM at the end and must exit 0 with no
# sanitizer report in its stderr.
#
# Usage: hostile_serve.sh BUILD_DIR SOURCE_DIR
set -u
. "$2/tests/hostile/serve_lib.sh"
dx_init "$1" "$2" hostile_serve

# A static root with symlinks that point out of it, and a secret outside.
ROOT="$DX_WORK/root"
OUT="$DX_WORK/outside"
SECRET="duplex-secret-$$-$RANDOM"
mkdir -p "$ROOT" "$OUT"
echo "duplex-index-ok" >"$ROOT/index.html"
echo "$SECRET" >"$OUT/secret.txt"
ln -s ../outside/secret.txt "$ROOT/leak"
ln -s ../outside "$ROOT/leakdir"
ln -s ../root/../outside/secret.txt "$ROOT/inlink"
ln -s "$OUT/secret.txt" "$ROOT/abslink"

# One server per concern, so one limit does not mask another (a 1 s ping
# would otherwise close the slow reader before its write limit does) and a
# server wedged by one test does not fail the others.
dx_start http --root "$ROOT" --echo /echo --handshake-timeout 1s \
  --close-timeout 1s
dx_start loris --echo /echo --handshake-timeout 1s --close-timeout 1s
dx_start ping --echo /echo --ping-interval 1s --pong-timeout 1s \
  --close-timeout 1s
# The slow-reader test bounds the server's RSS: a small ASan quarantine
# keeps freed-but-quarantined blocks from counting as the server's memory
# (use-after-free is still caught within it).
DX_START_ENV="ASAN_OPTIONS=$ASAN_OPTIONS:quarantine_size_mb=16" \
  dx_start slow --echo /echo --write-limit 64KiB --close-timeout 1s
dx_start quota --echo /echo --max-per-ip 5 --close-timeout 1s

dx_run "malformed HTTP, limits, traversal" http_hostile.py \
  "${DX_PORT[http]}" "$SECRET"
dx_run "slowloris" slowloris.py "${DX_PORT[loris]}"
dx_run "ping timeout" ping_timeout.py "${DX_PORT[ping]}" "${DX_ERR[ping]}"
dx_run "slow reader" slow_reader.py "${DX_PORT[slow]}" "${DX_PID[slow]}" \
  "${DX_ERR[slow]}"
dx_run "per-IP limit" per_ip.py "${DX_PORT[quota]}"

dx_finish
