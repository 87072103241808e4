#!/bin/bash
# Interop: `duplex serve --echo /echo` against real peers that users run:
#   - the Node `ws` client (npm, package-lock.json): tests/interop/ws_client.js
#   - python3-websockets (Debian, /usr/bin/python3):
#     tests/interop/websockets_client.py
#   - a raw TCP peer (Node net) that breaks the protocol on purpose and
#     makes bad upgrade requests: tests/interop/raw_protocol.js
# Echo of text/binary/empty/fragmented/16 MiB messages, permessage-deflate,
# subprotocols, ping/pong, the closing handshake, the close codes of
# protocol errors (1002, 1007, 1009), HTTP 426/400, the --origin list; and
# a graceful shutdown on SIGTERM (a connected client gets 1012 "restart", the server
# exits 0 with the sanitizers quiet).
#
# Three servers, all on 127.0.0.1 and a free port:
#   MAIN    --echo /echo --root tests/browser/www   (default limits)
#   SMALL   --echo /echo --max-message 1024
#   ORIGIN  --echo /echo --origin http://good.example
#
# Usage: interop_serve.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail

build=$(cd "${1:?usage: interop_serve.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: interop_serve.sh BUILD_DIR SOURCE_DIR}" && pwd)
DX_BIN=$build/src/app/duplex
DX_NAME=interop_serve
PY=/usr/bin/python3 # Debian's: it has python3-websockets (a pyenv one may not)
# shellcheck source=../interop/server_lib.sh
source "$src/tests/interop/server_lib.sh"

# ---- prerequisites: missing ones fail the test, they never skip it -------
[[ -x "$DX_BIN" ]] || dx_fail "no $DX_BIN (build the tools: -DDX_TOOLS=ON)"
command -v node >/dev/null || dx_fail "node is not installed (make deps)"
(cd "$src/tests/interop" && node -e 'require.resolve("ws")' 2>/dev/null) ||
  dx_fail "the npm package ws is missing: run 'make deps-npm' (npm ci)"
"$PY" -c 'import websockets' 2>/dev/null ||
  dx_fail "$PY cannot import websockets: install python3-websockets (make deps)"

dx_tmp_init interop
dx_server_start MAIN --echo /echo --root "$src/tests/browser/www"
dx_server_start SMALL --echo /echo --max-message 1024
dx_server_start ORIGIN --echo /echo --origin http://good.example
echo "$DX_NAME: servers on ports MAIN=$MAIN_PORT SMALL=$SMALL_PORT ORIGIN=$ORIGIN_PORT"

failed=()
# run NAME CMD...: runs a peer with a time limit, its output shown as is.
run() {
  local name=$1 rc=0
  shift
  echo "== $name"
  timeout -k 5 55 "$@" || rc=$?
  if ((rc != 0)); then
    ((rc == 124)) && echo "$DX_NAME: $name timed out"
    failed+=("$name")
  fi
}

run "Node ws client" node "$src/tests/interop/ws_client.js" \
  "$MAIN_PORT" "$SMALL_PORT" "$ORIGIN_PORT"
run "python3-websockets client" "$PY" "$src/tests/interop/websockets_client.py" \
  "$MAIN_PORT" "$SMALL_PORT" "$ORIGIN_PORT"
run "raw protocol peer" node "$src/tests/interop/raw_protocol.js" \
  "$MAIN_PORT" "$SMALL_PORT"

# ---- graceful shutdown with a client connected ---------------------------
echo "== graceful shutdown"
shut_out=$DX_TMP/shutdown.out
timeout -k 5 30 "$PY" "$src/tests/interop/shutdown_client.py" "$MAIN_PORT" \
  >"$shut_out" 2>&1 &
shut_pid=$!
for ((i = 0; i < 100; i++)); do
  grep -q '^open$' "$shut_out" && break
  kill -0 "$shut_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q '^open$' "$shut_out" || {
  cat "$shut_out" >&2
  dx_fail "the shutdown client did not connect"
}
dx_server_stop MAIN # SIGTERM: exit 0 within a few seconds, sanitizers quiet
shut_rc=0
wait "$shut_pid" || shut_rc=$?
if ((shut_rc == 0)) && grep -q '^closed 1012$' "$shut_out"; then
  echo "ok - shutdown: the connected client got close 1012 (service restart), the server exited 0"
else
  cat "$shut_out"
  echo "not ok - shutdown: expected the connected client to get close 1012"
  failed+=("graceful shutdown")
fi
dx_server_stop SMALL
dx_server_stop ORIGIN

if ((${#failed[@]})); then
  printf '%s: FAIL: %s\n' "$DX_NAME" "$(IFS=,; echo "${failed[*]}")" >&2
  exit 1
fi
echo "$DX_NAME: all passed"
