#!/bin/bash
# duplex record / duplex proxy: a scripted Node ws client
# (tests/probe/record_client.js) talks through the recorder to
# tests/probe/server.js (all on 127.0.0.1, free ports). The client sees
# every answer (text, JSON, binary) and a clean close; the recorded
# scenario (send/send_json/send_binary, expect/expect_json with captures)
# replays green with `duplex probe` against the same server and red
# (exit 1) against a server that answers differently (--variant B).
# --ignore leaves a field out; faults: --cut-after-messages is seen by the
# client (close 1011 before its script ends) and counted at exit;
# --latency delays (counted) without changing what is relayed.
#
# Usage: record_tool.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail
. "${2:?usage: record_tool.sh BUILD_DIR SOURCE_DIR}/tests/client/lib.sh"
cl_init record_tool "$1" "$2"

cl_server A node "$CL_SRC/tests/probe/server.js" --lifetime 120
cl_server B node "$CL_SRC/tests/probe/server.js" --variant B --lifetime 120
echo "$CL_NAME: server A on $A_PORT, server B (answers differently) on $B_PORT"
CLIENT=$CL_SRC/tests/probe/record_client.js

# rec_start NAME ARGS...: duplex ARGS in the background (record or proxy on
# a free port); sets REC_PID, REC_PORT.
rec_start() {
  local name=$1 i
  shift
  "$DX_BIN" "$@" --listen 127.0.0.1:0 >"$CL_TMP/$name.rout" 2>"$CL_TMP/$name.rerr" &
  REC_PID=$!
  CL_PIDS+=("$REC_PID")
  REC_PORT=""
  for ((i = 0; i < 100; i++)); do
    REC_PORT=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$CL_TMP/$name.rerr" 2>/dev/null | grep -o '[0-9]*$')
    [[ -n "$REC_PORT" ]] && return 0
    kill -0 "$REC_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$CL_TMP/$name.rerr"
  cl_fail "$name" "the recorder did not start"
  return 1
}

# rec_wait NAME WANT_RC: the recorder exits by itself within 15 s.
rec_wait() {
  local name=$1 want=$2 i rc
  for ((i = 0; i < 150; i++)); do
    kill -0 "$REC_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$REC_PID" 2>/dev/null; then
    kill -KILL "$REC_PID"
    cl_fail "$name" "the recorder did not exit after the session"
    return 1
  fi
  wait "$REC_PID"
  rc=$?
  if grep -Eq "$CL_SANITIZER_RE" "$CL_TMP/$name.rerr"; then
    cat "$CL_TMP/$name.rerr"
    cl_fail "$name" "sanitizer report (above)"
    return 1
  fi
  if ((rc != want)); then
    cat "$CL_TMP/$name.rerr"
    cl_fail "$name" "recorder exit status $rc, expected $want"
    return 1
  fi
  echo "ok - $name: recorder exit $rc"
}

# client NAME WANT_RC: the scripted client through the recorder.
client() {
  local name=$1 want=$2 rc=0
  timeout -k 5 30 node "$CLIENT" "ws://127.0.0.1:$REC_PORT/app" \
    >"$CL_TMP/$name.cout" 2>&1 || rc=$?
  if ((rc != want)); then
    cat "$CL_TMP/$name.cout"
    cl_fail "$name" "client exit status $rc, expected $want"
    return 1
  fi
  echo "ok - $name: client exit $rc"
}

has() { # has NAME FILE REGEX
  grep -Eq -- "$3" "$2" && return 0
  echo "   $2: $(head -c 3000 "$2")"
  cl_fail "$1" "no line matches /$3/"
  return 1
}

# ---- record, then replay -------------------------------------------------
SCN=$CL_TMP/session.yaml
if rec_start rec record --upstream "ws://127.0.0.1:$A_PORT/app" -o "$SCN" \
  --capture session --subprotocol other --subprotocol chat.v1; then
  CLIENT_PROTOCOL=chat.v1 client rec.client 0
  rec_wait rec 0
  out=$CL_TMP/rec.client.cout
  has rec.client "$out" '^recv pong$'
  has rec.client "$out" '^recv \{"op":"authed","session":"s-[0-9a-f]+","ok":true\}$'
  has rec.client "$out" '^recv binary 0001feff$'
  has rec.client "$out" '^close 1000 '
  has rec.client "$out" '^open proto=chat\.v1$'
  cl_log_has A '^open /app proto=chat\.v1 auth=rec-token$' # headers, subprotocol passed on
  cl_log_has A '^close 1000$' # the client's close, passed on
  has rec.file "$SCN" '^  - connect: "ws://127\.0\.0\.1:[0-9]+/app"$'
  has rec.file "$SCN" '^    subprotocol: chat\.v1$'
  has rec.file "$SCN" '^  - send: "ping"$'
  has rec.file "$SCN" '^  - expect: "pong"$'
  has rec.file "$SCN" '^    capture: \{session: session\}$'
  has rec.file "$SCN" '^  - send_json: \{"op":"auth","session":"\$\{session\}"\}$'
  has rec.file "$SCN" '^  - send_binary: AAH\+/w==$'
  has rec.file "$SCN" '^    timeout: 1\.[0-9]+s$'
  has rec.file "$SCN" '^  - close: 1000$'

  rc=0
  timeout -k 5 60 "$DX_BIN" probe "$SCN" >"$CL_TMP/replay.out" 2>&1 || rc=$?
  if ((rc == 0)); then
    echo "ok - replay against the same server: exit 0"
  else
    cat "$CL_TMP/replay.out"
    cl_fail replay "exit status $rc against the same server"
  fi
  sed "s/127\.0\.0\.1:$A_PORT/127.0.0.1:$B_PORT/" "$SCN" >"$CL_TMP/session-b.yaml"
  rc=0
  timeout -k 5 60 "$DX_BIN" probe "$CL_TMP/session-b.yaml" >"$CL_TMP/replay-b.out" 2>&1 || rc=$?
  if ((rc == 1)) && grep -Eq '^FAIL +3 .*expect pong .*got "PONG"' "$CL_TMP/replay-b.out"; then
    echo "ok - replay against a server that answers differently: exit 1"
  else
    cat "$CL_TMP/replay-b.out"
    cl_fail replay-b "exit status $rc against server B (expected 1, step 3)"
  fi
fi

# ---- --ignore, --latency (record) -----------------------------------------
SCN2=$CL_TMP/latency.yaml
if rec_start latency record --upstream "ws://127.0.0.1:$A_PORT/app" \
  -o "$SCN2" --capture session --ignore items --latency 100; then
  start=$(date +%s%N)
  client latency.client 0
  ms=$((($(date +%s%N) - start) / 1000000))
  rec_wait latency 0
  # 5 round trips of 2 x 100 ms, plus the 150 ms delay.
  ((ms >= 1000)) || cl_fail latency "the session took $ms ms, expected >= 1000"
  has latency "$CL_TMP/latency.rerr" 'faults: 10 messages relayed; delayed 10 \(1000 ms in all\)'
  if grep -q items "$SCN2"; then cl_fail ignore "--ignore items: still in $SCN2"; fi
  has ignore "$SCN2" '^  - expect_json: \{"op":"welcome","server":\{"name":"duplex-test","v":1\}\}$'
  has latency "$SCN2" '^    timeout: 1\.[2-9][0-9]*s$' # 2 x (>= 100 ms) + 1 s
fi

# ---- fault: --cut-after-messages (proxy) ------------------------------------
if rec_start cut proxy --upstream "ws://127.0.0.1:$A_PORT/app" \
  --cut-after-messages 3; then
  client cut.client 3 # closed before its script ended
  rec_wait cut 0
  has cut.client "$CL_TMP/cut.client.cout" '^close 1011 cut by duplex proxy$'
  has cut.client "$CL_TMP/cut.client.cout" '^recv pong$'
  if grep -q '^recv .*authed' "$CL_TMP/cut.client.cout"; then
    cl_fail cut.client "a message after the cut reached the client"
  fi
  has cut "$CL_TMP/cut.rerr" 'fault: cut \(after 3 messages\)'
  has cut "$CL_TMP/cut.rerr" 'faults: 3 messages relayed; .*cuts 1'
  cl_log_has A '^close 1006$' # the upstream saw the TCP connection drop
fi

# ---- faults: --cut-after (time), --half-open-after ---------------------------
# With 100 ms each way the script needs over a second: cut at 500 ms.
if rec_start cutt proxy --upstream "ws://127.0.0.1:$A_PORT/app" \
  --latency 100 --cut-after 500ms; then
  client cutt.client 3
  rec_wait cutt 0
  has cutt.client "$CL_TMP/cutt.client.cout" '^close 1011 cut by duplex proxy$'
  has cutt "$CL_TMP/cutt.rerr" 'fault: cut \(after --cut-after\)'
fi
# After 2 messages (ping, pong) nothing more: the client waits for its
# welcome in vain (timeout: exit 4); nothing was closed by the proxy.
if rec_start half proxy --upstream "ws://127.0.0.1:$A_PORT/app" \
  --half-open-after 2; then
  CLIENT_TIMEOUT_MS=1500 client half.client 4
  rec_wait half 0
  has half.client "$CL_TMP/half.client.cout" '^recv pong$'
  if grep -Eq '^(recv \{|close)' "$CL_TMP/half.client.cout"; then
    cl_fail half.client "relayed or closed after --half-open-after"
  fi
  has half "$CL_TMP/half.rerr" 'faults: 2 messages relayed; .*dropped while half-open 1'
fi

# ---- faults: --drop-pongs ------------------------------------------------------
# A ping through the proxy is answered without the fault and left
# unanswered with it (the peer's keepalive then sees a dead connection).
ping_through() { # NAME WANT [flags...]
  local name=$1 want=$2
  shift 2
  if rec_start "$name" proxy --upstream "ws://127.0.0.1:$A_PORT/app" "$@"; then
    timeout -k 5 20 /usr/bin/python3 "$CL_SRC/tests/probe/ping_client.py" \
      "ws://127.0.0.1:$REC_PORT/app" >"$CL_TMP/$name.pout" 2>&1
    rec_wait "$name" 0
    has "$name" "$CL_TMP/$name.pout" "^$want\$"
  fi
}
ping_through pong.ctl pong
ping_through dropp "no pong" --drop-pongs
has dropp "$CL_TMP/dropp.rerr" 'pings left unanswered 1'

# ---- faults: --throttle, --latency + --jitter (proxy) -------------------------
# tests/probe/timing_peer.py on both ends (one host: one monotonic clock).
cl_server T "$PY" "$CL_SRC/tests/probe/timing_peer.py" server --lifetime 120
PEER=$CL_SRC/tests/probe/timing_peer.py

# timed NAME MODE ARGS... -- PROXY_FLAGS...: the timing client through a
# proxy (its output in NAME.pout); fails when either end fails.
timed() {
  local name=$1 mode=$2 args=() rc=0
  shift 2
  while [[ $# -gt 0 && $1 != -- ]]; do args+=("$1") && shift; done
  shift
  rec_start "$name" proxy --upstream "ws://127.0.0.1:$T_PORT/t" "$@" || return 1
  timeout -k 5 30 "$PY" "$PEER" "$mode" "ws://127.0.0.1:$REC_PORT/t" "${args[@]}" \
    >"$CL_TMP/$name.pout" 2>&1 || rc=$?
  rec_wait "$name" 0 || return 1
  if ((rc)); then
    cat "$CL_TMP/$name.pout"
    cl_fail "$name" "timing client exit status $rc"
    return 1
  fi
}
# val NAME KEY [FIELD]: field FIELD (default 2) of NAME.pout's line KEY.
val() { awk -v k="$2" -v f="${3:-2}" '$1 == k { print $f }' "$CL_TMP/$1.pout"; }
# within NAME WHAT VALUE LO HI: LO <= VALUE <= HI (integers, ms).
within() {
  if [[ "$3" =~ ^[0-9]+$ ]] && (($4 <= $3 && $3 <= $5)); then
    echo "ok - $1: $2 $3 ms (in $4..$5)"
  else
    cl_fail "$1" "$2: '$3' ms, expected $4..$5 ($(tr '\n' ';' <"$CL_TMP/$1.pout"))"
  fi
}

# --throttle: a message of SIZE bytes is seen SIZE/RATE (1.5 s) after it
# was sent, in each direction (not just the ones queued behind it), and not
# absurdly later; without the flag it is much faster.
SIZE=150000 RATE=100000
if timed thr throttle $SIZE -- --throttle $RATE; then
  within thr "up $SIZE bytes" "$(val thr up)" 1450 2800
  within thr "down $SIZE bytes" "$(val thr down)" 1450 2800
  # the two big messages; the small ones ("got N", "big N") pass at once
  has thr "$CL_TMP/thr.rerr" 'faults: 4 messages relayed; .*; throttled 2;'
fi
if timed thr.ctl throttle $SIZE --; then
  within thr.ctl "up $SIZE bytes, no --throttle" "$(val thr.ctl up)" 0 749
  within thr.ctl "down $SIZE bytes, no --throttle" "$(val thr.ctl down)" 0 749
fi

# --jitter: 20 messages each way, 80 ms apart, delayed 100 ms + 0..400 ms:
# every one-way delay in 100..500 ms (+ slack), spread out (max - min >=
# 150 ms: fails 3 times in 100000 by chance; under 150 ms with --latency
# alone), and in the order sent (80 ms apart with up to 400 ms of jitter,
# a proxy that does not keep the order reorders them).
SEQ=$(seq -s ' ' 0 19)
jitter_check() { # NAME WANT_SPREAD(wide|narrow)
  local name=$1 dir lo hi
  if [[ "$(val "$name" order 0)" == "order $SEQ" ]]; then
    echo "ok - $name: 20 messages in the order sent"
  else
    cl_fail "$name" "reordered: $(val "$name" order 0)"
  fi
  for dir in up down; do
    lo=$(val "$name" $dir 2) hi=$(val "$name" $dir 3)
    within "$name" "$dir: shortest delay" "$lo" 95 900
    within "$name" "$dir: longest delay" "$hi" 95 900
    [[ "$lo$hi" =~ ^[0-9]+$ ]] || continue
    if [[ $2 == wide ]]; then
      within "$name" "$dir: spread of the delays" $((hi - lo)) 150 900
    else
      within "$name" "$dir: spread of the delays" $((hi - lo)) 0 149
    fi
  done
}
if timed jit order 20 80 -- --latency 100 --jitter 400; then
  jitter_check jit wide
  has jit "$CL_TMP/jit.rerr" 'faults: 40 messages relayed; delayed 40 '
fi
if timed jit.ctl order 20 80 -- --latency 100; then
  jitter_check jit.ctl narrow
fi

# ---- a close waits for the messages before it ------------------------------
# The client sends "last-words" and closes with 1000 at once; the upstream
# (timing_peer.py, one session log line per path) gets the message, then
# 1000: whether the message waits in a delay queue (--latency, --throttle:
# the close waits for it, in order) or for the upstream connection to open
# (sent right after the client's handshake: buffered, then the close).
lastwords() { # NAME PATH WANT CLIENT_ARGS... -- PROXY_FLAGS...
  local name=$1 path=$2 want=$3 args=() rc=0 i got
  shift 3
  while [[ $# -gt 0 && $1 != -- ]]; do args+=("$1") && shift; done
  shift
  rec_start "$name" proxy --upstream "ws://127.0.0.1:$T_PORT/$path" "$@" || return 1
  timeout -k 5 30 "$PY" "$PEER" lastwords "ws://127.0.0.1:$REC_PORT/$path" \
    "${args[@]}" >"$CL_TMP/$name.pout" 2>&1 || rc=$?
  rec_wait "$name" 0
  if ((rc)); then
    cat "$CL_TMP/$name.pout"
    cl_fail "$name" "lastwords client exit status $rc"
  fi
  for ((i = 0; i < 50; i++)); do # the session line within 5 s
    grep -q "^session /$path: " "$T_LOG" && break
    sleep 0.1
  done
  got=$(grep "^session /$path: " "$T_LOG")
  if [[ "$got" == "session /$path: $want; close 1000" ]]; then
    echo "ok - $name: the upstream got '$want', then close 1000"
  else
    cl_fail "$name" "the upstream got '${got:-nothing}', expected '$want; close 1000'"
  fi
}
lastwords lw.now lw0 'last-words' --                 # no fault: not yet open
lastwords lw.lat lw1 'big 1 last-words' --wait -- --latency 300
lastwords lw.latnow lw2 'last-words' -- --latency 300
lastwords lw.thr lw3 'binary:150000 last-words' --binary 150000 -- \
  --throttle 100000                                    # 1.5 s to drain

# ---- usage ---------------------------------------------------------------
rc=0
"$DX_BIN" record --listen 127.0.0.1:0 --upstream "ws://127.0.0.1:$A_PORT/" \
  >/dev/null 2>"$CL_TMP/usage.err" || rc=$?
((rc == 2)) && grep -q -- '-o FILE is needed' "$CL_TMP/usage.err" &&
  echo "ok - usage: exit 2" || cl_fail usage "exit $rc: $(cat "$CL_TMP/usage.err")"

cl_finish
