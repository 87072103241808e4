#!/bin/bash
# Browser: headless Chromium (Debian's /usr/bin/chromium, driven by
# playwright-core from npm) loads tests/browser/www/index.html from
# `duplex serve --root`, and the page echoes a text, a binary (ArrayBuffer),
# a 1 MiB binary and a 1 MiB text message over ws://HOST/echo with
# permessage-deflate (tests/browser/echo.js checks what the page shows).
# Then SIGTERM: the server must exit 0 with the sanitizers quiet.
# Screenshot: BUILD_DIR/test-output/browser_echo.png.
#
# Usage: browser_echo.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail

build=$(cd "${1:?usage: browser_echo.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: browser_echo.sh BUILD_DIR SOURCE_DIR}" && pwd)
DX_BIN=$build/src/app/duplex
DX_NAME=browser_echo
# shellcheck source=../interop/server_lib.sh
source "$src/tests/interop/server_lib.sh"

# ---- prerequisites: missing ones fail the test, they never skip it -------
dx_require_browser # DX_BIN, node, chromium, playwright-core

dx_tmp_init browser
dx_server_start MAIN --echo /echo --root "$src/tests/browser/www"
echo "$DX_NAME: server on port $MAIN_PORT"

rc=0
timeout -k 5 55 node "$src/tests/browser/echo.js" "$MAIN_PORT" \
  "$build/test-output" || rc=$?
((rc == 124)) && echo "$DX_NAME: the browser run timed out"

dx_server_stop MAIN # SIGTERM: exit 0 within a few seconds, sanitizers quiet
((rc == 0)) || dx_fail "browser checks failed (above)"
echo "$DX_NAME: all passed"
