#!/bin/bash
# TLS: `duplex connect wss://...` against a Node https + ws server
# (tests/client/ws_server.js --tls) and a python3-websockets server with an
# ssl context (tests/client/py_server.py --tls), using a test CA made by
# tests/tls/make_certs.sh. Messages, deflate and a 200 kB round trip over
# TLS with --cacert; certificate failures with a clear one-line message
# and exit 1 (untrusted CA, wrong host, expired, self-signed); --insecure
# connects anyway and prints its warning; plain and TLS ports mixed up.
#
# Usage: client_tls.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail
. "${2:?usage: client_tls.sh BUILD_DIR SOURCE_DIR}/tests/client/lib.sh"
cl_init client_tls "$1" "$2"
command -v openssl >/dev/null || cl_die "the openssl CLI is missing (make deps)"

certs=$CL_TMP/certs
bash "$CL_SRC/tests/tls/make_certs.sh" "$certs" >/dev/null ||
  cl_die "tests/tls/make_certs.sh failed"
ca=$certs/ca.pem

NODE_SERVER=$CL_SRC/tests/client/ws_server.js
PY_SERVER=$CL_SRC/tests/client/py_server.py
cl_server GOOD node "$NODE_SERVER" --tls "$certs" cert.pem --lifetime 120
cl_server OTHER node "$NODE_SERVER" --tls "$certs" other.pem --lifetime 120
cl_server EXPIRED node "$NODE_SERVER" --tls "$certs" expired.pem --lifetime 120
cl_server SELF node "$NODE_SERVER" --tls "$certs" self.pem --lifetime 120
cl_server PLAIN node "$NODE_SERVER" --lifetime 120
cl_server PY "$PY" "$PY_SERVER" --tls "$certs" cert.pem --lifetime 120

printf 'one\ntwo\n' >"$CL_TMP/lines.txt"
head -c 200000 /dev/zero | tr '\0' 'b' >"$CL_TMP/big.txt"
echo >>"$CL_TMP/big.txt"
insecure_warning="warning: --insecure: the server's certificate is NOT verified; anyone on the path can read and change this connection"

# ---- working connections ------------------------------------------------------
for S in GOOD PY; do
  port=${S}_PORT
  port=${!port}
  # By name (SNI + DNS SAN) and by address (IP SAN).
  for host in localhost 127.0.0.1; do
    cl_run "$S.$host" 0 "$CL_TMP/lines.txt" --cacert "$ca" --count 2 -v \
      "wss://$host:$port/echo" && cl_out "$S.$host" $'one\ntwo' &&
      cl_err_has "$S.$host" "connected to wss://$host:$port/echo"
  done
  cl_run "$S.eof" 0 "$CL_TMP/lines.txt" --cacert "$ca" "wss://localhost:$port/echo"
  cl_log_has "$S" "^close /echo 1000 "
  cl_run "$S.echo" 0 - --cacert "$ca" --echo "wss://localhost:$port/echo-check?n=6"
  cl_log_has "$S" "^echo-check ok 6$"
  if cl_run "$S.deflate" 0 "$CL_TMP/big.txt" --cacert "$ca" --count 1 -v \
    "wss://localhost:$port/deflate"; then
    cmp -s "$CL_TMP/big.txt" "$CL_TMP/$S.deflate.out" ||
      cl_fail "$S.deflate" "the 200 kB message did not come back intact"
    cl_err_has "$S.deflate" "extensions: permessage-deflate"
  fi
  cl_run "$S.close4001" 4 - --cacert "$ca" --keep-open \
    "wss://localhost:$port/close4001" &&
    cl_err_has "$S.close4001" 'code 4001, reason "bye"'
  cl_run "$S.403" 1 - --cacert "$ca" "wss://localhost:$port/403" &&
    cl_err_has "$S.403" "^duplex connect: server answered 403 Forbidden$"
done

# ---- certificate failures: exit 1, one clear line ---------------------------------
# cert_fail CASE PORT_VAR REGEX ARGS...
cert_fail() {
  local name=$1 portv=${2}_PORT re=$3
  shift 3
  if cl_run "$name" 1 - "$@" "wss://localhost:${!portv}/echo"; then
    cl_err_has "$name" "^duplex connect: TLS handshake with localhost:${!portv} failed: certificate verify failed: $re"
    [[ $(wc -l <"$CL_TMP/$name.err") -eq 1 ]] ||
      cl_fail "$name" "more than one line on stderr"
    cl_out "$name" ""
  fi
}
cert_fail untrusted GOOD "unable to get local issuer certificate"
cert_fail wrong-host OTHER "hostname mismatch" --cacert "$ca"
cert_fail expired EXPIRED "certificate has expired" --cacert "$ca"
cert_fail self-signed SELF "self-signed certificate" --cacert "$ca"
# The IP SAN is checked too: other.pem has none.
cl_run wrong-ip 1 - --cacert "$ca" "wss://127.0.0.1:$OTHER_PORT/echo" &&
  cl_err_has wrong-ip "certificate verify failed"

# --insecure connects to any of them, and says so first.
for S in SELF EXPIRED OTHER; do
  port=${S}_PORT
  if cl_run "insecure.$S" 0 "$CL_TMP/lines.txt" --insecure --count 2 \
    "wss://localhost:${!port}/echo"; then
    cl_out "insecure.$S" $'one\ntwo'
    [[ "$(head -n1 "$CL_TMP/insecure.$S.err")" == "$insecure_warning" ]] ||
      cl_fail "insecure.$S" "no --insecure warning first on stderr"
  fi
done

# A CA file that cannot be read: no connection, no retry.
cl_run bad-cacert 1 - --cacert "$CL_TMP/missing.pem" --reconnect \
  "wss://localhost:$GOOD_PORT/echo" &&
  cl_err_has bad-cacert "TLS setup failed: cannot read CA file .*missing.pem"

# Ports mixed up.
cl_run wss-to-plain 1 - --cacert "$ca" "wss://localhost:$PLAIN_PORT/echo" &&
  cl_err_has wss-to-plain "TLS handshake with localhost:$PLAIN_PORT failed: .*plain HTTP"
cl_run ws-to-tls 1 - "ws://localhost:$GOOD_PORT/echo" &&
  cl_err_has ws-to-tls "^duplex connect: localhost:$GOOD_PORT closed the connection without answering the upgrade \(a TLS port\? try wss://\)$"

cl_finish
