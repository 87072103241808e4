#!/bin/bash
# duplex.js: the browser library's logic (web/duplex.js) tested in Node
# against a mock of the duplex.v1 protocol (tests/web/mock_server.js, Node
# `ws`): resumption with since/epoch after a forced disconnection (every
# message exactly once), gap notices, the offline publish queue, backoff
# with full jitter, 1012 spread, request ids, auth, presence, heartbeat.
# Servers listen on 127.0.0.1 and free ports; bounded by a 90 s timeout.
#
# Usage: duplexjs.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR is not used)
set -uo pipefail

src=$(cd "${2:?usage: duplexjs.sh BUILD_DIR SOURCE_DIR}" && pwd)
fail() {
  echo "duplexjs: FAIL: $*" >&2
  exit 1
}

# Missing prerequisites fail the test, they never skip it.
command -v node >/dev/null || fail "node is not installed (make deps)"
(cd "$src/tests/web" && node -e 'require.resolve("ws")' 2>/dev/null) ||
  fail "the npm package ws is missing: run 'make deps-npm'"

rc=0
# web/duplex.js is an ES module in a folder without a package.json: Node
# finds out by parsing it, and says so once; that notice is not a problem.
timeout -k 5 90 node --disable-warning=MODULE_TYPELESS_PACKAGE_JSON \
  "$src/tests/web/duplexjs_test.mjs" || rc=$?
((rc == 124)) && echo "duplexjs: timed out"
((rc == 0)) || fail "duplex.js checks failed (above)"
echo "duplexjs: all passed"
