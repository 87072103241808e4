#!/bin/bash
# duplex bench: against `duplex serve --echo` and Node `ws` servers
# (tests/bench_tool/server.js): the counts add up (sent = answered + lost,
# no errors, nothing lost on a healthy server), a server that answers after
# 50 ms gives p50 in [50, 70] ms, --correlate matches replies that come out
# of order, a server that drops a message gives lost > 0, --rate holds its
# rate, the JSON has the documented keys, the
# HTML report renders in headless Chromium with its charts drawn (screenshot
# BUILD_DIR/test-output/bench_report.png), and the exit statuses (2 usage,
# 1 cannot connect), and wss:// with --cacert, --insecure, or neither (exit 1).
#
# Usage: bench_tool.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail

build=$(cd "${1:?usage: bench_tool.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: bench_tool.sh BUILD_DIR SOURCE_DIR}" && pwd)
DX_BIN=$build/src/app/duplex
DX_NAME=bench_tool
# shellcheck source=../interop/server_lib.sh
source "$src/tests/interop/server_lib.sh"

[[ -x "$DX_BIN" ]] || dx_fail "no $DX_BIN (build the tools: -DDX_TOOLS=ON)"
command -v node >/dev/null || dx_fail "node is not installed (make deps)"
command -v python3 >/dev/null || dx_fail "python3 is not installed"
[[ -x /usr/bin/chromium ]] || dx_fail "no /usr/bin/chromium (make deps)"
node -e "require('$src/node_modules/ws'); require('$src/node_modules/playwright-core')" \
  2>/dev/null || dx_fail "npm packages ws/playwright-core missing: make deps-npm"

dx_tmp_init bench_tool
mkdir -p "$build/test-output"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=86}
fails=0
ok() { echo "ok - $*"; }
bad() {
  echo "not ok - $*"
  fails=$((fails + 1))
}

# node_start VAR ARGS: a tests/bench_tool/server.js; sets VAR_PORT, VAR_PID.
node_start() {
  local var=$1 out=$DX_TMP/$1.port i port=""
  shift
  node "$src/tests/bench_tool/server.js" "$@" >"$out" 2>"$DX_TMP/$var.err" &
  local pid=$!
  DX_SERVER_PIDS+=("$pid")
  for ((i = 0; i < 100; i++)); do
    port=$(head -n1 "$out" 2>/dev/null || true)
    [[ "$port" =~ ^[0-9]+$ ]] && break
    sleep 0.1
  done
  [[ "$port" =~ ^[0-9]+$ ]] || dx_fail "node server.js $* did not start"
  printf -v "${var}_PORT" '%s' "$port"
  printf -v "${var}_PID" '%s' "$pid"
}

# bench NAME ARGS: runs duplex bench with --json $DX_TMP/NAME.json; the
# exit status in BENCH_RC, stdout in $DX_TMP/NAME.out.
bench() {
  local name=$1
  shift
  BENCH_RC=0
  timeout -k 5 60 "$DX_BIN" bench --json "$DX_TMP/$name.json" "$@" \
    >"$DX_TMP/$name.out" 2>"$DX_TMP/$name.err" || BENCH_RC=$?
  if grep -Eq "$DX_SANITIZER_RE" "$DX_TMP/$name.err"; then
    cat "$DX_TMP/$name.err"
    bad "$name: sanitizer report"
  fi
  if ((BENCH_RC != 0)); then
    cat "$DX_TMP/$name.out" "$DX_TMP/$name.err"
    bad "$name: duplex bench exited $BENCH_RC"
    return 1
  fi
}

# jcheck NAME 'python expression over j (the JSON), m (j["messages"])'
jcheck() {
  local name=$1 expr=$2 why
  if why=$(python3 - "$DX_TMP/$name.json" "$expr" <<'PY' 2>&1
import json, sys
j = json.load(open(sys.argv[1]))
m = j["messages"]; lat = j["latency_ms"]
ok = eval(sys.argv[2])
if not ok:
    print("messages", m, "latency p50", lat["p50"], "errors", j["errors"],
          "close", j["close_codes"])
    sys.exit(1)
PY
  ); then
    ok "$name: $expr"
  else
    echo "$why"
    bad "$name: $expr"
  fi
}

HEALTHY='m["sent"] > 0 and m["sent"] == m["matched"] + m["lost"] and m["lost"] == 0 and m["received"] == m["sent"] and m["unmatched"] == 0 and j["errors"]["total"] == 0'

# ---- usage errors: exit 2 --------------------------------------------------
usage_case() {
  local rc=0
  "$DX_BIN" bench "$@" >/dev/null 2>&1 || rc=$?
  if ((rc == 2)); then ok "usage: bench $* -> 2"; else bad "usage: bench $* -> $rc (want 2)"; fi
}
usage_case
usage_case http://127.0.0.1:1/x -d 1s
usage_case ws://127.0.0.1:1/ -c 0
usage_case ws://127.0.0.1:1/ --rate 10 --inflight 2
usage_case ws://127.0.0.1:1/ --bogus
usage_case ws://127.0.0.1:1/ -d 1s --correlate id --payload 'not json'
usage_case ws://127.0.0.1:1/ -H 'Upgrade: h2c'
usage_case ws://127.0.0.1:1/ --payload $'\xff'
rc=0
"$DX_BIN" bench --help >"$DX_TMP/help.out" 2>&1 || rc=$?
((rc == 0)) && grep -q -- '--correlate FIELD' "$DX_TMP/help.out" && ok "--help" || bad "--help ($rc)"

# ---- cannot connect: exit 1 --------------------------------------------------
closed=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rc=0
timeout 30 "$DX_BIN" bench "ws://127.0.0.1:$closed/" -c 2 -d 2s --json "$DX_TMP/refused.json" \
  >"$DX_TMP/refused.out" 2>&1 || rc=$?
if ((rc == 1)); then ok "refused: exit 1"; else cat "$DX_TMP/refused.out"; bad "refused: exit $rc (want 1)"; fi
jcheck refused 'j["connections"]["opened"] == 0 and j["connections"]["failed"] == 2 and j["errors"]["by_kind"].get("ECONNREFUSED") == 2'

# ---- duplex serve --echo ------------------------------------------------------
dx_server_start DX --echo /echo
URL=ws://127.0.0.1:$DX_PORT/echo
if bench dx "$URL" -c 4 -d 2s -H 'X-Bench: 1' --html "$DX_TMP/report.html"; then
  jcheck dx "$HEALTHY"
  jcheck dx 'j["close_codes"] == {"1000": 4} and j["connections"]["opened"] == 4'
  jcheck dx 'all(k in j for k in ("config","elapsed_s","connections","connect_ms","messages","latency_ms","errors","close_codes","series"))'
  jcheck dx 'all(k in lat for k in ("p50","p90","p99","p99_9","max","min","mean","count","histogram")) and lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]'
  jcheck dx 'sum(b[2] for b in lat["histogram"]) == lat["count"] == m["matched"]'
  jcheck dx 'all(k in j["connect_ms"] for k in ("p50","p99")) and len(j["series"]) >= 1 and all(k in m for k in ("sent_per_s","received_per_s","lost","unmatched"))'
  grep -q '^\[  1.0s\] conns 4 | sent [0-9]*/s recv [0-9]*/s | p99 [0-9.]* ms | errors 0$' "$DX_TMP/dx.out" &&
    ok "dx: plain progress lines when stdout is not a TTY" || { cat "$DX_TMP/dx.out"; bad "dx: progress lines"; }
  grep -q 'latency      p50 .* p90 .* p99 .* p99.9 .* max ' "$DX_TMP/dx.out" && ok "dx: latency summary" || bad "dx: latency summary"
  # The report in Chromium: charts present and drawn, nothing fetched.
  if timeout -k 5 60 node "$src/tests/bench_tool/render.js" "$DX_TMP/report.html" \
    "$build/test-output/bench_report.png"; then
    ok "html report renders"
  else
    bad "html report renders"
  fi
  cp "$DX_TMP/report.html" "$build/test-output/bench_report.html"
fi
if bench dx_mt "$URL" -c 6 -t 2 -d 2s --binary --size 1000 --inflight 4 --ramp-up 500ms; then
  jcheck dx_mt "$HEALTHY"
  jcheck dx_mt 'j["config"]["threads"] == 2 and j["config"]["inflight"] == 4 and j["close_codes"] == {"1000": 6}'
fi
if bench dx_rate "$URL" -c 2 -d 2s --rate 100 --payload '{"seq":{seq},"ts":{ts},"conn":{conn}}' --size 200; then
  jcheck dx_rate "$HEALTHY"
  jcheck dx_rate '340 <= m["sent"] <= 410 and j["config"]["mode"] == "rate"'
fi
dx_server_stop DX

# ---- wss:// against duplex serve with the test CA ---------------------------
certs=$DX_TMP/certs
bash "$src/tests/tls/make_certs.sh" "$certs" >/dev/null 2>&1 || dx_fail "make_certs.sh failed"
dx_server_start TLS --echo /echo --tls-cert "$certs/cert.pem" --tls-key "$certs/key.pem"
WSS=wss://localhost:$TLS_PORT/echo
if bench tls "$WSS" -c 2 -d 1s --cacert "$certs/ca.pem"; then
  jcheck tls "$HEALTHY"
fi
if bench tls_k "$WSS" -c 2 -d 1s --insecure; then
  jcheck tls_k "$HEALTHY"
fi
rc=0
"$DX_BIN" bench "$WSS" -c 2 -d 3s --json "$DX_TMP/tls_bad.json" >/dev/null 2>&1 || rc=$?
((rc == 1)) && ok "wss without the CA: exit 1" || bad "wss without the CA: exit $rc (want 1)"
# (a handshake still running when the run ends counts as ETIMEDOUT)
jcheck tls_bad '"ETLS" in j["errors"]["by_kind"] and j["errors"]["total"] == 2 and j["connections"]["opened"] == 0 and j["connections"]["failed"] == 2'
dx_server_stop TLS

# ---- Node ws servers -------------------------------------------------------
node_start NE echo
if bench node_echo "ws://127.0.0.1:$NE_PORT/" -c 4 -d 2s --inflight 2 -s chat.v1; then
  jcheck node_echo "$HEALTHY"
fi
node_start ND delay 50
if bench node_delay "ws://127.0.0.1:$ND_PORT/" -c 4 -d 2s; then
  jcheck node_delay "$HEALTHY"
  jcheck node_delay '50 <= lat["p50"] <= 70 and lat["min"] >= 49'
fi
node_start NC correlate
if bench node_corr "ws://127.0.0.1:$NC_PORT/" -c 3 -d 2s --inflight 8 --correlate id; then
  jcheck node_corr 'm["sent"] > 100 and m["sent"] == m["matched"] + m["lost"] and m["lost"] == 0 and j["errors"]["total"] == 0'
  jcheck node_corr 'm["unmatched"] == 3 and m["received"] == m["matched"] + 3'
  jcheck node_corr 'lat["p50"] <= 25 and lat["max"] >= 10'
fi
# An echo server answers with the request itself: the field matches too.
node_start NE2 echo
if bench node_corr_echo "ws://127.0.0.1:$NE2_PORT/" -c 2 -d 1s --correlate req --payload '{"a":[1,2],"seq":{seq}}' --size 300; then
  jcheck node_corr_echo "$HEALTHY"
fi
# A server that never answers the 5th message: with one in flight, each
# connection stalls there, and the drain period counts it lost.
node_start NL drop 5
if bench node_lost "ws://127.0.0.1:$NL_PORT/" -c 3 -d 1s; then
  jcheck node_lost 'm["sent"] == 15 and m["matched"] == 12 and m["lost"] == 3 and m["received"] == 12 and j["errors"]["total"] == 0'
fi
for v in NE ND NC NE2 NL; do
  pidv=${v}_PID
  kill -TERM "${!pidv}" 2>/dev/null
done
for v in NE ND NC NE2 NL; do
  pidv=${v}_PID
  timeout 5 tail --pid="${!pidv}" -f /dev/null
done

((fails == 0)) || dx_fail "$fails check(s) failed (above)"
echo "$DX_NAME: all passed"
