#!/bin/bash
# Browser over TLS: headless Chromium (Debian's /usr/bin/chromium, driven by
# playwright-core from npm) loads https://localhost:PORT/index.html from
# `duplex serve --tls-cert cert.pem --tls-key key.pem --root
# tests/browser/www --echo /echo` (certificates from tests/tls/make_certs.sh),
# and the page echoes a text, a binary (ArrayBuffer), a 1 MiB binary and a
# 1 MiB text message over wss://localhost:PORT/echo with permessage-deflate.
# tests/browser/echo.js (with "tls") checks what the page shows and the
# certificate Chromium got (it runs with --ignore-certificate-errors: the
# test CA is not in its store). Then SIGTERM: the server must exit 0 with
# the sanitizers quiet. Screenshot: BUILD_DIR/test-output/browser_tls.png.
#
# Usage: browser_tls.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail

build=$(cd "${1:?usage: browser_tls.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: browser_tls.sh BUILD_DIR SOURCE_DIR}" && pwd)
DX_BIN=$build/src/app/duplex
DX_NAME=browser_tls
# shellcheck source=../interop/server_lib.sh
source "$src/tests/interop/server_lib.sh"

# ---- prerequisites: missing ones fail the test, they never skip it -------
dx_require_browser # DX_BIN, node, chromium, playwright-core
command -v openssl >/dev/null || dx_fail "openssl is not installed (make deps)"

dx_tmp_init browser-tls
bash "$src/tests/tls/make_certs.sh" "$DX_TMP/certs" ||
  dx_fail "make_certs.sh failed"
dx_server_start MAIN --tls-cert "$DX_TMP/certs/cert.pem" \
  --tls-key "$DX_TMP/certs/key.pem" --echo /echo --root "$src/tests/browser/www"
echo "$DX_NAME: server on port $MAIN_PORT"

rc=0
timeout -k 5 55 node "$src/tests/browser/echo.js" "$MAIN_PORT" \
  "$build/test-output" tls || rc=$?
((rc == 124)) && echo "$DX_NAME: the browser run timed out"
[[ -s "$build/test-output/browser_tls.png" ]] || {
  echo "$DX_NAME: no screenshot in $build/test-output/browser_tls.png"
  rc=1
}

dx_server_stop MAIN # SIGTERM: exit 0 within a few seconds, sanitizers quiet
((rc == 0)) || dx_fail "browser checks failed (above)"
echo "$DX_NAME: all passed"
