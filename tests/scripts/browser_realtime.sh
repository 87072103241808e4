#!/bin/bash
# Browser, end to end: the demo pages (web/chat.html, web/dashboard.html on
# web/duplex.js) in headless Chromium (Debian's /usr/bin/chromium, driven by
# playwright-core) against the real channel server, `duplex serve --root
# web --presence`, asserting what the pages show:
#   tests/browser/realtime_chat.js       two users chat (messages in the same
#                                        order on both pages, names, presence);
#                                        a page cut off by a TCP proxy misses
#                                        20 messages published through
#                                        POST /api/publish and shows each
#                                        exactly once, in order, when back
#   tests/browser/realtime_restart.js    SIGTERM + a new server on the same
#                                        port: the page reconnects by itself
#                                        and shows the epoch gap notice
#   tests/browser/realtime_dashboard.js  with web/ticker.js publishing, the
#                                        dashboard shows the symbols and its
#                                        chart moves
# Every server binds 127.0.0.1, must exit 0 on SIGTERM (the restart's first
# server included) with no sanitizer report in its stderr.
# Screenshots: BUILD_DIR/test-output/chat-a.png, chat-b.png,
# chat-resumed.png, chat-restart.png, dashboard.png.
#
# Usage: browser_realtime.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail

build=$(cd "${1:?usage: browser_realtime.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: browser_realtime.sh BUILD_DIR SOURCE_DIR}" && pwd)
DX_BIN=$build/src/app/duplex
DX_NAME=browser_realtime
# shellcheck source=../interop/server_lib.sh
source "$src/tests/interop/server_lib.sh"

# ---- prerequisites: missing ones fail the test, they never skip it -------
dx_require_browser # DX_BIN, node, chromium, playwright-core

out=$build/test-output
mkdir -p "$out"
rm -f "$out"/{chat-a,chat-b,chat-resumed,chat-restart,dashboard}.png

dx_tmp_init browser-realtime
# Whatever happens, stop what we started (by pid): the node drivers (their
# Chromium goes with them), the ticker, then the servers (dx_cleanup).
BG_PIDS=()
rt_cleanup() {
  local pid
  for pid in "${BG_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
  done
  sleep 0.2
  for pid in "${BG_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  dx_cleanup
}
trap rt_cleanup EXIT
trap 'exit 130' INT TERM

SERVE_ARGS=(--root "$src/web" --presence --close-timeout 1s)
dx_server_start MAIN "${SERVE_ARGS[@]}"
echo "$DX_NAME: server on port $MAIN_PORT"
t_start=$SECONDS
failures=()

# run LABEL SECONDS node-script args...: bounded, its verdict recorded.
run() {
  local label=$1 secs=$2 rc=0
  shift 2
  echo "== $label"
  timeout -k 5 "$secs" node "$@" || rc=$?
  ((rc == 124)) && echo "$DX_NAME: $label timed out after ${secs}s"
  ((rc == 0)) || failures+=("$label")
}

# ---- 1, 2: chat between two pages, resume after a cut ----------------------
run "chat and resume" 35 "$src/tests/browser/realtime_chat.js" \
  "$MAIN_PORT" "$out"

# ---- 3: restart on the same port ---------------------------------------
echo "== restart"
ctrl=$DX_TMP/ctrl
mkdir -p "$ctrl"
timeout -k 5 35 node "$src/tests/browser/realtime_restart.js" "$MAIN_PORT" \
  "$out" "$ctrl" &
node_pid=$!
BG_PIDS+=("$node_pid")
for ((i = 0; i < 200; i++)); do # 20 s for the page to get ready
  [[ -e $ctrl/restart.request ]] && break
  kill -0 "$node_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -e $ctrl/restart.request ]]; then
  # SIGTERM: exit 0 and quiet sanitizers checked (dx_fail exits otherwise).
  dx_server_stop MAIN
  dx_server_start MAIN2 "${SERVE_ARGS[@]}" --port "$MAIN_PORT"
  [[ $MAIN2_PORT == "$MAIN_PORT" ]] ||
    dx_fail "the new server listens on $MAIN2_PORT, not $MAIN_PORT"
  echo "$DX_NAME: restarted on port $MAIN2_PORT"
  touch "$ctrl/restart.done"
else
  echo "$DX_NAME: the restart test did not get ready"
fi
rc=0
wait "$node_pid" || rc=$?
((rc == 124)) && echo "$DX_NAME: restart timed out"
((rc == 0)) || failures+=("restart")
[[ -n ${MAIN2_PORT:-} ]] || dx_fail "no restart happened (above)"

# ---- 4: the dashboard with the ticker publishing ---------------------------
node "$src/web/ticker.js" --url "http://127.0.0.1:$MAIN2_PORT/api/publish" \
  --min-ms 100 --max-ms 200 --quiet &
ticker_pid=$!
BG_PIDS+=("$ticker_pid")
run "dashboard" 20 "$src/tests/browser/realtime_dashboard.js" \
  "$MAIN2_PORT" "$out"
kill -TERM "$ticker_pid" 2>/dev/null
rc=0
wait "$ticker_pid" || rc=$?
((rc == 0)) || failures+=("ticker exited $rc on SIGTERM")

dx_server_stop MAIN2 # SIGTERM: exit 0 within a few seconds, sanitizers quiet
echo "$DX_NAME: $((SECONDS - t_start))s; screenshots in $out"
if ((${#failures[@]})); then
  dx_fail "failed: ${failures[*]} (above)"
fi
echo "$DX_NAME: all passed"
