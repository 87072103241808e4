#!/bin/bash
# duplex probe: scenario files (tests/probe/*.yaml and small ones written
# here) against a Node `ws` server (tests/probe/server.js) and a
# python3-websockets server (tests/probe/py_server.py), both on 127.0.0.1
# and free ports. Every step kind passes (exit 0); each check fails when it
# should (exit 1, the failed step named, later ones skipped); a connection
# refused is a failed check (1); wss:// with cacert:, insecure:, and an
# untrusted certificate (1); bad files and usage exit 2 with FILE:LINE;
# --json parses; the JUnit file parses (python3 xml.etree) and its counts
# match; monitor mode (--every 1s --metrics-port) serves metrics that go
# from success 1 to 0 once the server is stopped, and alerts after
# --fail-threshold failed runs.
#
# Usage: probe_tool.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail
. "${2:?usage: probe_tool.sh BUILD_DIR SOURCE_DIR}/tests/client/lib.sh"
cl_init probe_tool "$1" "$2"

cl_server N node "$CL_SRC/tests/probe/server.js" --lifetime 120
cl_server P "$PY" "$CL_SRC/tests/probe/py_server.py" --lifetime 120
echo "$CL_NAME: Node ws on $N_PORT, python3-websockets on $P_PORT"
export TOKEN=secret-token

# pr_run CASE WANT_RC PORT ARGS...: duplex probe ARGS with PORT exported.
pr_run() {
  local name=$1 want=$2 port=$3
  shift 3
  local rc=0
  PORT=$port timeout -k 5 60 "$DX_BIN" probe "$@" >"$CL_TMP/$name.out" \
    2>"$CL_TMP/$name.err" || rc=$?
  cl_verdict "$name" "$want" "$rc" "duplex probe $*" 3000
}

# pr_out_has CASE REGEX: stdout matches.
pr_out_has() {
  if ! grep -Eq -- "$2" "$CL_TMP/$1.out"; then
    echo "   stdout: $(head -c 3000 "$CL_TMP/$1.out")"
    cl_fail "$1" "stdout does not match /$2/"
    return 1
  fi
}

# sc NAME: writes stdin to $CL_TMP/NAME.yaml
sc() { cat >"$CL_TMP/$1.yaml"; }

# ---- passing --------------------------------------------------------------
pr_run pass 0 "$N_PORT" "$CL_SRC/tests/probe/pass.yaml" &&
  pr_out_has pass '^PASS: 18/18 steps passed' &&
  pr_out_has pass '^ok +1 .*connect ws://127\.0\.0\.1:[0-9]+/probe .*tcp [0-9.]+ ms; handshake [0-9.]+ ms; open [0-9.]+ ms in all.*subprotocol: chat\.v1' &&
  pr_out_has pass '^ok +15 .*expect_match .*response 2[0-9][0-9]\.[0-9] ms'
cl_log_has N '^open /probe proto=chat\.v1 auth=secret-token$'
cl_log_has N '^msg \{"op":"auth","session":"s-[0-9a-f]+"\}$' # a capture
cl_log_has N '^close 4001$'
pr_run python 0 "$P_PORT" "$CL_SRC/tests/probe/python.yaml" &&
  pr_out_has python '^PASS: 7/7'

# --json: one document, every step with its status and timing.
if pr_run json 0 "$N_PORT" --json "$CL_SRC/tests/probe/pass.yaml"; then
  "$PY" - "$CL_TMP/json.out" <<'EOF' || cl_fail json "JSON report"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True and len(d["steps"]) == 18, d
assert all(s["status"] == "pass" for s in d["steps"])
assert d["steps"][0]["kind"] == "connect" and d["steps"][0]["open_ms"] >= 0
assert d["steps"][14]["response_ms"] >= 190, d["steps"][14]
EOF
fi

# ---- failing checks: exit 1, the failed step named, the rest skipped -----
head='steps:
  - connect: ws://127.0.0.1:${PORT}/f'
sc expect <<EOF
$head
  - send: ping
  - expect: PONG
  - send: never
EOF
pr_run f.expect 1 "$N_PORT" "$CL_TMP/expect.yaml" &&
  pr_out_has f.expect '^FAIL +3 +line 4 +expect PONG .*got "pong"' &&
  pr_out_has f.expect '^skip +4 ' && pr_out_has f.expect '^FAIL: 2/4'
sc match <<EOF
$head
  - send: ping
  - expect_match: "^p[aeiu]ng$"
EOF
pr_run f.match 1 "$N_PORT" "$CL_TMP/match.yaml" &&
  pr_out_has f.match '^FAIL +3 .*got "pong"'
sc json <<EOF
$head
  - send_json: {op: hello}
  - expect_json: {op: welcome, server: {v: 2}}
EOF
pr_run f.json 1 "$N_PORT" "$CL_TMP/json.yaml" && pr_out_has f.json '^FAIL +3 '
sc jsonarr <<EOF
$head
  - send_json: {op: hello}
  - expect_json: {items: [1, 2]}
EOF
pr_run f.json-array 1 "$N_PORT" "$CL_TMP/jsonarr.yaml"
sc timeout <<EOF
$head
  - send: delay 2000
  - expect: late
    timeout: 300ms
EOF
pr_run f.timeout 1 "$N_PORT" "$CL_TMP/timeout.yaml" &&
  pr_out_has f.timeout '^FAIL +3 .*timed out after 0\.3 s'
sc skip <<EOF
$head
  - send_json: {op: noise, n: 3}
  - expect_json: {op: nothing}
    skip_unrelated: true
    timeout: 300ms
EOF
pr_run f.skip-timeout 1 "$N_PORT" "$CL_TMP/skip.yaml" &&
  pr_out_has f.skip-timeout 'timed out after 0\.3 s \(4 unrelated'
sc closed <<EOF
$head
  - send: close 4002
  - expect: anything
EOF
pr_run f.closed 1 "$N_PORT" "$CL_TMP/closed.yaml" &&
  pr_out_has f.closed 'connection closed \(code 4002, asked\)'
sc capture <<EOF
$head
  - send_json: {op: hello}
  - expect_json: {op: welcome}
    capture: {x: no.such.field}
EOF
pr_run f.capture 1 "$N_PORT" "$CL_TMP/capture.yaml" &&
  pr_out_has f.capture "capture x: no 'no.such.field'"
sc undefined <<EOF
$head
  - send: "\${NOT_SET_ANYWHERE_42}"
EOF
pr_run f.undefined 1 "$N_PORT" "$CL_TMP/undefined.yaml" &&
  pr_out_has f.undefined 'undefined variable \$\{NOT_SET_ANYWHERE_42\}'
sc badb64 <<EOF
$head
  - send_binary: "not base64!"
EOF
pr_run f.base64 1 "$N_PORT" "$CL_TMP/badb64.yaml"
sc closecode <<EOF
$head
  - close: 4003
EOF
pr_run closecode 0 "$P_PORT" "$CL_TMP/closecode.yaml" # python echoes 4003
DEAD=$(cl_dead_port)
pr_run f.refused 1 "$DEAD" "$CL_TMP/expect.yaml" &&
  pr_out_has f.refused '^FAIL +1 .*connect .*refused'

# ---- wss:// (tests/tls/make_certs.sh, tests/client/ws_server.js --tls) ----
certs=$CL_TMP/certs
bash "$CL_SRC/tests/tls/make_certs.sh" "$certs" >/dev/null ||
  cl_die "tests/tls/make_certs.sh failed"
cl_server T node "$CL_SRC/tests/client/ws_server.js" --tls "$certs" cert.pem --lifetime 120
export CA=$certs/ca.pem
tls_scn() { # tls_scn NAME OPTION-LINE
  printf 'steps:\n  - connect: wss://localhost:${PORT}/echo\n%s\n  - send: over tls\n  - expect: over tls\n' "$2" >"$CL_TMP/$1.yaml"
}
tls_scn tls-ca '    cacert: "${CA}"'
pr_run tls.cacert 0 "$T_PORT" "$CL_TMP/tls-ca.yaml" &&
  pr_out_has tls.cacert '^ok +1 .*connect wss://localhost:[0-9]+/echo .*dns [0-9.]+ ms; tcp [0-9.]+ ms; tls [0-9.]+ ms; handshake [0-9.]+ ms'
tls_scn tls-none '    timeout: 3s'
pr_run tls.untrusted 1 "$T_PORT" "$CL_TMP/tls-none.yaml" &&
  pr_out_has tls.untrusted '^FAIL +1 .*connect .*(certificate|TLS)'
tls_scn tls-insecure '    insecure: true'
pr_run tls.insecure 0 "$T_PORT" "$CL_TMP/tls-insecure.yaml"

# ---- cannot run: exit 2 ------------------------------------------------------
printf 'steps:\n  - connect: ws://x/\n  - send: [unclosed\n' >"$CL_TMP/syntax.yaml"
pr_run e.syntax 2 "$N_PORT" "$CL_TMP/syntax.yaml" &&
  cl_err_has e.syntax "syntax\.yaml:[34]: YAML: "
sc unknown <<EOF
$head
  - send: a
    timeout: 1s
EOF
pr_run e.option 2 "$N_PORT" "$CL_TMP/unknown.yaml" &&
  cl_err_has e.option "unknown\.yaml:4: 'timeout' is not an option of a send step"
sc nokind <<EOF
$head
  - sned: a
EOF
pr_run e.kind 2 "$N_PORT" "$CL_TMP/nokind.yaml" &&
  cl_err_has e.kind "nokind\.yaml:3: no step kind"
sc two <<EOF
$head
  - send: a
    expect: b
EOF
pr_run e.two 2 "$N_PORT" "$CL_TMP/two.yaml" &&
  cl_err_has e.two "two\.yaml:4: one step per list item"
printf 'name: x\n' >"$CL_TMP/nosteps.yaml"
pr_run e.nosteps 2 "$N_PORT" "$CL_TMP/nosteps.yaml" &&
  cl_err_has e.nosteps "nosteps\.yaml:1: no 'steps:' list"
pr_run e.missing 2 "$N_PORT" "$CL_TMP/does-not-exist.yaml" &&
  cl_err_has e.missing "does-not-exist\.yaml: No such file"
pr_run e.usage 2 "$N_PORT"
pr_run e.usage-runs 2 "$N_PORT" --runs 3 "$CL_TMP/expect.yaml"

# ---- JUnit -----------------------------------------------------------------
pr_run junit 1 "$N_PORT" --junit "$CL_TMP/junit.xml" "$CL_TMP/expect.yaml" &&
  "$PY" - "$CL_TMP/junit.xml" <<'EOF' || cl_fail junit "JUnit XML"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root.find("testsuite")
cases = suite.findall("testcase")
fails = [c for c in cases if c.find("failure") is not None]
skips = [c for c in cases if c.find("skipped") is not None]
assert int(suite.get("tests")) == len(cases) == 4, suite.attrib
assert int(suite.get("failures")) == len(fails) == 1, suite.attrib
assert int(suite.get("skipped")) == len(skips) == 1, suite.attrib
assert 'got "pong"' in fails[0].find("failure").get("message")
EOF
pr_run junit-pass 0 "$N_PORT" -q --junit "$CL_TMP/junit2.xml" \
  "$CL_SRC/tests/probe/pass.yaml" &&
  "$PY" -c 'import sys, xml.etree.ElementTree as ET; s = ET.parse(sys.argv[1]).getroot().find("testsuite"); assert s.get("tests") == "18" and s.get("failures") == "0", s.attrib' "$CL_TMP/junit2.xml" ||
  cl_fail junit-pass "JUnit XML (all passing)"

# ---- monitor mode ------------------------------------------------------------
cl_server M "$PY" "$CL_SRC/tests/probe/py_server.py" --lifetime 120
MPORT=$(cl_dead_port)
PORT=$M_PORT "$DX_BIN" probe --every 1s --metrics-port "$MPORT" \
  --fail-threshold 2 "$CL_SRC/tests/probe/python.yaml" \
  >"$CL_TMP/mon.out" 2>"$CL_TMP/mon.err" &
MON_PID=$!
CL_PIDS+=("$MON_PID")
# metric NAME: its value, or "" (the endpoint unreachable).
metric() {
  "$PY" - "$MPORT" "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=2).read().decode()
for line in body.splitlines():
    if line.split(" ")[0] == sys.argv[2]:
        print(line.split(" ")[1])
EOF
}
# wait_metric NAME VALUE: within 10 s.
wait_metric() {
  local i
  for ((i = 0; i < 100; i++)); do
    [[ "$(metric "$1")" == "$2" ]] && return 0
    sleep 0.1
  done
  echo "   metrics: $(metric "$1"); log: $(tail -n 5 "$CL_TMP/mon.out")"
  cl_fail monitor "$1 did not become $2"
  return 1
}
if wait_metric duplex_probe_success 1; then
  echo "ok - monitor: success 1"
  wait_metric duplex_probe_up 1
  wait_metric duplex_probe_alerting 0
  [[ -n "$(metric 'duplex_probe_step_duration_seconds{step="1",kind="connect",line="3"}')" ]] ||
    cl_fail monitor "no per-step duration gauge"
  kill "$M_PID"
  wait_metric duplex_probe_success 0 && echo "ok - monitor: success 0 after the server stopped"
  wait_metric duplex_probe_up 0
  wait_metric duplex_probe_alerting 1 && echo "ok - monitor: alerting after 2 failures"
  c=$(metric duplex_probe_consecutive_failures)
  ((${c:-0} >= 2)) || cl_fail monitor "consecutive failures $c"
fi
kill -TERM "$MON_PID" 2>/dev/null
for ((i = 0; i < 50; i++)); do kill -0 "$MON_PID" 2>/dev/null || break; sleep 0.1; done
wait "$MON_PID"
rc=$?
((rc == 0)) || cl_fail monitor "exit status $rc after SIGTERM"
grep -Eq "$CL_SANITIZER_RE" "$CL_TMP/mon.err" && { cat "$CL_TMP/mon.err"; cl_fail monitor "sanitizer report"; }
grep -Eq ' run [0-9]+: ok, 7 steps' "$CL_TMP/mon.out" || cl_fail monitor "no ok run line"
grep -Eq ' run [0-9]+: FAIL at step 1 \(connect, line 3\)' "$CL_TMP/mon.out" || cl_fail monitor "no FAIL run line"
grep -Eq ' ALERT: 2 consecutive failed runs \(threshold 2\)' "$CL_TMP/mon.out" || cl_fail monitor "no ALERT line"

# --runs: bounded monitor, exits 0 by itself.
pr_run runs 0 "$P_PORT" --every 100ms --runs 2 "$CL_SRC/tests/probe/python.yaml" &&
  pr_out_has runs ' run 2: ok'

cl_finish
