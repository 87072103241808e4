#!/bin/bash
# Interop: `duplex connect` (and through it dx_client) against servers users
# run: a Node `ws` server (tests/client/ws_server.js) and a
# python3-websockets server (tests/client/py_server.py), both on 127.0.0.1
# and free ports. Text and binary both ways, --count, --echo (same types
# back), permessage-deflate negotiated, the server's choice among two
# subprotocols, close codes both ways (4001 from the server -> exit 4; end
# of stdin -> the client closes 1000 and the server sees it), non-101
# answers (403, 301) -> exit 1, connection refused -> exit 1, --timeout ->
# exit 5, a protocol error -> exit 3, and reconnection: the Node server is
# killed and restarted on the same port while `duplex connect --reconnect`
# runs; the attempts are printed with jittered delays within the backoff
# caps, and the client then receives the new server's message.
#
# Usage: client_interop.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail
. "${2:?usage: client_interop.sh BUILD_DIR SOURCE_DIR}/tests/client/lib.sh"
cl_init client_interop "$1" "$2"

NODE_SERVER=$CL_SRC/tests/client/ws_server.js
PY_SERVER=$CL_SRC/tests/client/py_server.py
cl_server N node "$NODE_SERVER" --lifetime 120
cl_server P "$PY" "$PY_SERVER" --lifetime 120
echo "$CL_NAME: Node ws on $N_PORT, python3-websockets on $P_PORT"
nws=ws://127.0.0.1:$N_PORT
pws=ws://127.0.0.1:$P_PORT

printf 'one\ntwo\n\nlast line without newline' >"$CL_TMP/lines.txt"
want_lines=$'one\ntwo\n\nlast line without newline'
head -c 200000 /dev/zero | tr '\0' 'a' >"$CL_TMP/big.txt"
echo >>"$CL_TMP/big.txt"

# ---- both servers ---------------------------------------------------------
for S in N P; do
  base=$([[ $S == N ]] && echo "$nws" || echo "$pws")

  # Text out from stdin, echoed back. With --count the end of stdin does
  # not close: the four replies are awaited (a server may drop replies
  # once our close arrived, as python3-websockets does).
  cl_run "$S.text" 0 "$CL_TMP/lines.txt" --count 4 "$base/echo" &&
    cl_out "$S.text" "$want_lines"
  # Without: the end of stdin closes with 1000, and the server sees it.
  cl_run "$S.eof" 0 "$CL_TMP/lines.txt" "$base/echo"
  cl_log_has "$S" "^close /echo 1000 "

  # Binary from the server: hex lines by default, raw bytes on request.
  cl_run "$S.binary-hex" 0 - --count 1 "$base/binary" &&
    cl_out "$S.binary-hex" "0001feff"
  if cl_run "$S.binary-raw" 0 - --count 1 --binary raw "$base/binary"; then
    got=$(od -An -tx1 "$CL_TMP/$S.binary-raw.out" | tr -d ' \n')
    [[ "$got" == 0001feff ]] || cl_fail "$S.binary-raw" "raw bytes: $got"
  fi

  # --echo: text and binary come back with their type (the server checks).
  cl_run "$S.echo" 0 - --echo "$base/echo-check?n=8"
  cl_log_has "$S" "^echo-check ok 8$"

  # permessage-deflate: required by the server, negotiated, 200 kB round
  # trip; refused (400) without the offer.
  if cl_run "$S.deflate" 0 "$CL_TMP/big.txt" -v --count 1 "$base/deflate"; then
    cmp -s "$CL_TMP/big.txt" "$CL_TMP/$S.deflate.out" ||
      cl_fail "$S.deflate" "the 200 kB message did not come back intact"
    cl_err_has "$S.deflate" "extensions: permessage-deflate"
  fi
  cl_log_has "$S" "^deflate permessage-deflate"
  cl_run "$S.no-deflate" 1 - --no-deflate "$base/deflate" &&
    cl_err_has "$S.no-deflate" "server answered 400"

  # Subprotocols: the server picks the second offered.
  if cl_run "$S.proto" 0 - -v -s p1 -s p2 --count 1 "$base/proto"; then
    cl_out "$S.proto" "protocol p2"
    cl_err_has "$S.proto" "subprotocol: p2"
  fi
  cl_log_has "$S" "^open /proto proto=p2 "

  # The server closes with 4001 "bye": exit 4, the code on stderr.
  if cl_run "$S.close4001" 4 - --keep-open "$base/close4001"; then
    cl_out "$S.close4001" "hi"
    cl_err_has "$S.close4001" 'code 4001, reason "bye"'
  fi

  # Non-101 answers: exit 1 with the status in one line.
  if cl_run "$S.403" 1 - "$base/403"; then
    cl_err_has "$S.403" "^duplex connect: server answered 403 Forbidden$"
    [[ $(wc -l <"$CL_TMP/$S.403.err") -eq 1 ]] ||
      cl_fail "$S.403" "more than one line on stderr"
  fi
  cl_run "$S.301" 1 - "$base/301" &&
    cl_err_has "$S.301" "server answered 301 Moved Permanently \(redirect to ws://127.0.0.1:1/elsewhere, not followed\)"
done

# ---- Node only ------------------------------------------------------------
cl_run N.count 0 - --count 3 "$nws/send?n=5" &&
  cl_out N.count $'msg 1\nmsg 2\nmsg 3'
cl_run N.close1000 0 - --keep-open "$nws/close1000" && cl_out N.close1000 "bye"
cl_run N.bad-utf8 3 - --keep-open "$nws/bad-utf8" &&
  cl_err_has N.bad-utf8 "protocol error from 127.0.0.1:$N_PORT: invalid UTF-8"
cl_log_has N "^close /bad-utf8 1007 "
if cl_run N.headers 0 - --count 1 --json -H 'X-Test: abc' \
  -H 'Authorization: Bearer t0k' --origin http://o.example "$nws/headers"; then
  "$PY" - "$CL_TMP/N.headers.out" <<'EOF' || cl_fail N.headers "headers not sent or not pretty-printed JSON (above)"
import json, sys
text = open(sys.argv[1]).read()
h = json.loads(text)
assert h["x-test"] == "abc", h
assert h["authorization"] == "Bearer t0k", h
assert h["origin"] == "http://o.example", h
assert text.count("\n") > 5 and '\n  "x-test": "abc"' in text, text
EOF
fi
if cl_run N.timeout 5 - --count 1 --timeout 1 "$nws/silent"; then
  cl_err_has N.timeout "^duplex connect: timed out after 1 s$"
fi
# Keepalive pings are answered (the server's pongs show with -v).
cl_run N.ping 5 - -v --ping-interval 100ms --count 1 --timeout 1 \
  "$nws/silent" && cl_err_has N.ping "pong \(0 bytes\)"
cl_run N.localhost 0 "$CL_TMP/lines.txt" "ws://localhost:$N_PORT/echo" &&
  cl_out N.localhost "$want_lines"

# ---- no server at all -------------------------------------------------------
dead=$(cl_dead_port)
if cl_run refused 1 - "ws://127.0.0.1:$dead/"; then
  cl_out refused ""
  [[ "$(cat "$CL_TMP/refused.err")" == "duplex connect: cannot connect to 127.0.0.1:$dead: connection refused" ]] ||
    cl_fail refused "stderr: $(cat "$CL_TMP/refused.err")"
fi
cl_run usage-url 2 - http://127.0.0.1/ && cl_err_has usage-url "invalid URL"
cl_run usage-none 2 - && cl_err_has usage-none "a URL is needed"
cl_run usage-header 2 - -H 'Sec-WebSocket-Key: x' "$nws/echo" &&
  cl_err_has usage-header "invalid header"
cl_run help 0 - --help && grep -q "Exit status" "$CL_TMP/help.out" ||
  cl_fail help "no exit statuses in --help"

# ---- reconnection -------------------------------------------------------------
# Server A answers "hello from A", is killed; the client retries (100 ms
# base, 400 ms cap) while nothing listens; server B starts on the same port
# and says "hello from B"; --count 2 then ends the run with status 0.
cl_server A node "$NODE_SERVER" --tag A --lifetime 60
port=$A_PORT
out=$CL_TMP/reconnect.out err=$CL_TMP/reconnect.err
timeout -k 5 40 "$DX_BIN" connect --reconnect --reconnect-base 100ms \
  --reconnect-max 400ms --count 2 "ws://127.0.0.1:$port/greet" \
  </dev/null >"$out" 2>"$err" &
client=$!
CL_PIDS+=("$client")
for ((i = 0; i < 100; i++)); do
  grep -q "hello from A" "$out" && break
  sleep 0.1
done
grep -q "hello from A" "$out" || cl_fail reconnect "no message from server A"
kill -KILL "$A_PID"
for ((i = 0; i < 100; i++)); do
  (($(grep -c "reconnect attempt" "$err") >= 5)) && break
  sleep 0.1
done
cl_server B node "$NODE_SERVER" --port "$port" --tag B --lifetime 60
rc=0
wait "$client" || rc=$?
if ((rc != 0)); then
  echo "   stderr: $(cat "$err")"
  cl_fail reconnect "exit status $rc, expected 0"
elif grep -Eq "$CL_SANITIZER_RE" "$err"; then
  cat "$err"
  cl_fail reconnect "sanitizer report (above)"
elif [[ "$(cat "$out")" != $'hello from A\nhello from B' ]]; then
  cl_fail reconnect "stdout: $(cat "$out")"
else
  # "...; reconnect attempt N in D ms": N counts up from 1 and D stays
  # within min(400, 100 * 2^(N-1)); the delays are not all alike.
  if "$PY" - "$err" <<'EOF'; then
import re, sys
lines = open(sys.argv[1]).read().splitlines()
tries = [(int(a), int(d)) for a, d in
         (re.search(r"reconnect attempt (\d+) in (\d+) ms", l).groups()
          for l in lines if "reconnect attempt" in l)]
print("   attempts (n, delay ms):", tries)
assert len(tries) >= 5, "fewer than 5 attempts"
assert [n for n, _ in tries] == list(range(1, len(tries) + 1)), "numbering"
for n, d in tries:
    assert 0 <= d <= min(400, 100 * 2 ** (n - 1)), f"attempt {n}: {d} ms"
assert len({d for _, d in tries}) > 1, "no jitter"
assert any("connection refused; reconnect attempt" in l for l in lines)
assert any("reconnected to" in l for l in lines)
EOF
    echo "ok - reconnect"
  else
    echo "   stderr: $(cat "$err")"
    cl_fail reconnect "attempts not as configured (above)"
  fi
fi

cl_finish
