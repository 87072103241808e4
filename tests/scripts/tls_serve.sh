#!/bin/bash
# TLS: `duplex serve --tls-cert cert.pem --tls-key key.pem` (https:// and
# wss:// on one port) against real peers: curl, openssl s_client, the Node
# `ws` client and python3-websockets (Debian's /usr/bin/python3).
#
#   https    static files over curl --cacert (content, Content-Type, a 3 MiB
#            file, 404, keep-alive, TLS 1.2), a chain file (--tls-cert
#            chain.pem: the server sends leaf + CA); openssl s_client
#            -tls1_2 works, -tls1_1/-tls1 are refused by the server (alert
#            protocol version), a client KeyUpdate is answered, a TLS 1.2
#            renegotiation refused; a slow download that keeps draining
#            (16 MiB at 800 KB/s) is not cut; 750 requests pipelined during
#            a 16 MiB response are all answered (tests/tls/https_pipeline.py)
#   startup  a missing file, a non-PEM file, a key that does not match, an
#            encrypted key: exit 1 with a clear message; cert+key in one
#            file (both.pem) without --tls-key works
#   wss      echo from Node ws and python websockets (text, binary, 1 MiB,
#            compressed, close codes, TLS 1.2 forced): tests/tls/wss_client.*
#   limits   --max-message 1024 closes 1009 over wss; a non-reading client
#            is dropped at --write-limit 64KiB with the memory bounded
#   wrong    plain HTTP to the TLS port is closed and logged; wss:// to a
#            plain port fails on the client, the server survives
#   certs    other.pem / expired.pem / self.pem: Node refuses each with the
#            right error, and sees exactly the configured certificate
#   reload   SIGHUP swaps the certificate without dropping connections;
#            a garbage file, a key mismatch or an encrypted key is logged
#            and the old certificate kept (tests/tls/reload.js)
#   sni      several --tls-cert/--tls-key pairs (a.test, *.b.test): each
#            SNI name gets its certificate, no SNI or an unknown name the
#            first; wss echo verified as each name; SIGHUP with the second
#            replaced serves the new one without dropping an open
#            connection, a bad second key on SIGHUP keeps the old set
#            (tests/tls/sni_check.py); a bad pair at startup, uneven
#            flags, and the config file's tls list
#   aborts   200 handshakes aborted or garbled in 13 ways
#            (tests/tls/abort_handshakes.js): the server's fd count comes
#            back to where it started, and it still serves
# Every server then gets SIGTERM: exit 0, sanitizers quiet.
#
# Usage: tls_serve.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -uo pipefail

build=$(cd "${1:?usage: tls_serve.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: tls_serve.sh BUILD_DIR SOURCE_DIR}" && pwd)
DX_BIN=$build/src/app/duplex
DX_NAME=tls_serve
PY=/usr/bin/python3 # Debian's: it has python3-websockets (a pyenv one may not)
# shellcheck source=../interop/server_lib.sh
source "$src/tests/interop/server_lib.sh"

# ---- prerequisites: missing ones fail the test, they never skip it -------
[[ -x "$DX_BIN" ]] || dx_fail "no $DX_BIN (build the tools: -DDX_TOOLS=ON)"
for tool in node curl openssl; do
  command -v "$tool" >/dev/null || dx_fail "$tool is not installed (make deps)"
done
(cd "$src/tests/tls" && node -e 'require.resolve("ws")' 2>/dev/null) ||
  dx_fail "the npm package ws is missing: run 'make deps-npm' (npm ci)"
"$PY" -c 'import websockets' 2>/dev/null ||
  dx_fail "$PY cannot import websockets: install python3-websockets (make deps)"
export PYTHONDONTWRITEBYTECODE=1 # keep the source tree clean

dx_tmp_init tls
certs=$DX_TMP/certs
bash "$src/tests/tls/make_certs.sh" "$certs" || dx_fail "make_certs.sh failed"

# Like dx_server_start, without --quiet: some checks read the server log.
tls_server_start() { DX_SERVE_VERBOSE=1 dx_server_start "$@"; }

# Static files: an HTML page, a stylesheet and 3 MiB of noise (the file
# body over TLS goes through read-and-encrypt chunks, not sendfile).
www=$DX_TMP/www
mkdir -p "$www"
cp "$src/tests/browser/www/index.html" "$www/index.html"
printf 'body { color: #123; }\n' >"$www/style.css"
head -c $((3 * 1024 * 1024)) /dev/urandom >"$www/data.bin"
head -c $((16 * 1024 * 1024)) /dev/zero >"$www/big.bin"

# The reload server loads from a directory of its own, so the files can be
# replaced under it. Certificate two: same CA, a key of its own, serial
# 0x2B2B2B2B (certificate one's is 1000).
live=$DX_TMP/live
mkdir -p "$live"
cp "$certs/cert.pem" "$certs/key.pem" "$live/"
cat >"$DX_TMP/two.cnf" <<'EOF'
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
EOF
{
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$DX_TMP/two.key" &&
    openssl req -new -key "$DX_TMP/two.key" -subj /CN=localhost \
      -out "$DX_TMP/two.csr" &&
    openssl x509 -req -in "$DX_TMP/two.csr" -CA "$certs/ca.pem" \
      -CAkey "$certs/ca.key" -set_serial 0x2B2B2B2B -days 5 \
      -extfile "$DX_TMP/two.cnf" -extensions leaf -out "$DX_TMP/two.pem"
} 2>"$DX_TMP/two.err" || {
  cat "$DX_TMP/two.err" >&2
  dx_fail "could not make the second certificate"
}

tls=(--tls-key "$certs/key.pem")
tls_server_start MAIN --tls-cert "$certs/cert.pem" "${tls[@]}" --root "$www" \
  --echo /echo
tls_server_start CHAIN --tls-cert "$certs/chain.pem" "${tls[@]}" --root "$www"
tls_server_start SMALL --tls-cert "$certs/cert.pem" "${tls[@]}" --echo /echo \
  --max-message 1024
# A small ASan quarantine, so freed blocks do not count as the slow-reader
# server's memory (its RSS is bounded by the test).
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=86}:quarantine_size_mb=16 \
  tls_server_start SLOW --tls-cert "$certs/cert.pem" "${tls[@]}" --echo /echo \
  --write-limit 64KiB
tls_server_start PLAIN --echo /echo
tls_server_start OTHER --tls-cert "$certs/other.pem" "${tls[@]}" --echo /echo
tls_server_start EXPIRED --tls-cert "$certs/expired.pem" "${tls[@]}" \
  --echo /echo
tls_server_start SELF --tls-cert "$certs/self.pem" "${tls[@]}" --echo /echo
tls_server_start RELOAD --tls-cert "$live/cert.pem" --tls-key "$live/key.pem" \
  --echo /echo
tls_server_start ABUSE --tls-cert "$certs/cert.pem" "${tls[@]}" --echo /echo \
  --root "$www" --handshake-timeout 2s
echo "$DX_NAME: servers MAIN=$MAIN_PORT CHAIN=$CHAIN_PORT SMALL=$SMALL_PORT" \
  "SLOW=$SLOW_PORT PLAIN=$PLAIN_PORT OTHER=$OTHER_PORT" \
  "EXPIRED=$EXPIRED_PORT SELF=$SELF_PORT RELOAD=$RELOAD_PORT" \
  "ABUSE=$ABUSE_PORT"

failed=()
check() { # check NAME CONDITION-STATUS [DETAIL]
  if (($2 == 0)); then
    echo "ok - $1"
  else
    echo "not ok - $1${3:+: $3}"
    failed+=("$1")
  fi
}
run() { # run NAME CMD...: a peer program with a time limit
  local name=$1 rc=0
  shift
  echo "== $name"
  timeout -k 5 50 "$@" || rc=$?
  if ((rc != 0)); then
    ((rc == 124)) && echo "$DX_NAME: $name timed out"
    failed+=("$name")
  fi
}
fingerprint() {
  openssl x509 -in "$1" -noout -fingerprint -sha256 | sed 's/^.*=//'
}

# ---- https: curl and openssl s_client ------------------------------------
# A slow download in the background (16 MiB at 800 KB/s, about 20 s, while
# the rest runs): a response that keeps draining must not be cut by the
# write-stall timeout (10 s, "close when nothing drains").
curl -sS --max-time 40 --cacert "$certs/ca.pem" --limit-rate 800K \
  -o "$DX_TMP/slow.out" -w '%{http_code} %{size_download} %{time_total}' \
  "https://localhost:$MAIN_PORT/big.bin" >"$DX_TMP/slow.res" \
  2>"$DX_TMP/slow.err" &
dl_pid=$!
DX_SERVER_PIDS+=("$dl_pid") # killed on exit if the test stops early

echo "== https (curl, openssl s_client)"
curl_get() { # curl_get PORT PATH OUT [curl options]: prints code and type
  local port=$1 path=$2 out=$3
  shift 3
  curl -sS --max-time 10 --cacert "$certs/ca.pem" "$@" -o "$out" \
    -w '%{http_code} %{content_type} %{ssl_verify_result}' \
    "https://localhost:$port$path" 2>"$DX_TMP/curl.err" ||
    echo "curl-failed $(cat "$DX_TMP/curl.err")"
}
r=$(curl_get "$MAIN_PORT" /index.html "$DX_TMP/index.out")
[[ $r == "200 text/html; charset=utf-8 0" ]] && cmp -s "$www/index.html" \
  "$DX_TMP/index.out"
check "https: curl --cacert gets index.html, text/html, verified" $? "$r"
r=$(curl_get "$MAIN_PORT" /style.css "$DX_TMP/style.out")
[[ $r == "200 text/css; charset=utf-8 0" ]] && cmp -s "$www/style.css" \
  "$DX_TMP/style.out"
check "https: style.css with text/css" $? "$r"
r=$(curl_get "$MAIN_PORT" /data.bin "$DX_TMP/data.out")
[[ $r == "200 application/octet-stream 0" ]] && cmp -s "$www/data.bin" \
  "$DX_TMP/data.out"
check "https: a 3 MiB file arrives intact (application/octet-stream)" $? "$r"
r=$(curl_get "$MAIN_PORT" /missing.txt /dev/null)
[[ $r == "404 "* ]]
check "https: a missing file is 404" $? "$r"
r=$(curl -sS --max-time 10 --cacert "$certs/ca.pem" -o /dev/null -o /dev/null \
  -w '%{http_code}:%{num_connects} ' "https://localhost:$MAIN_PORT/index.html" \
  "https://localhost:$MAIN_PORT/style.css" 2>&1)
[[ $r == "200:1 200:0 " ]]
check "https: keep-alive (two requests, one TLS connection)" $? "$r"
r=$(curl -sS --max-time 10 --cacert "$certs/ca.pem" --tlsv1.2 --tls-max 1.2 \
  -o /dev/null -v "https://localhost:$MAIN_PORT/index.html" 2>&1)
grep -q 'SSL connection using TLSv1.2' <<<"$r" && grep -q '< HTTP/1.1 200' <<<"$r"
check "https: curl with TLS 1.2 only" $? "$(grep -m1 'SSL connection' <<<"$r")"
r=$(curl_get "$CHAIN_PORT" /index.html "$DX_TMP/chain.out")
[[ $r == "200 text/html; charset=utf-8 0" ]] && cmp -s "$www/index.html" \
  "$DX_TMP/chain.out"
check "https with --tls-cert chain.pem: curl --cacert works" $? "$r"
sclient() { # sclient PORT [options]: s_client output, stdin closed
  timeout 10 openssl s_client -connect "127.0.0.1:$1" -servername localhost \
    "${@:2}" </dev/null 2>&1
}
n=$(sclient "$CHAIN_PORT" -showcerts | grep -c 'BEGIN CERTIFICATE')
m=$(sclient "$MAIN_PORT" -showcerts | grep -c 'BEGIN CERTIFICATE')
((n == 2 && m == 1))
check "the chain server sends 2 certificates, the plain cert.pem one 1" $? \
  "chain: $n, cert.pem: $m"
r=$(printf 'GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
  timeout 10 openssl s_client -connect "127.0.0.1:$MAIN_PORT" -servername \
    localhost -tls1_2 -CAfile "$certs/ca.pem" -verify_return_error \
    -verify_hostname localhost -ign_eof 2>&1)
# ("New, TLSv1.x, Cipher is ..." is printed once the handshake is done;
# the session's "Protocol :" line may wait for a TLS 1.3 ticket.)
grep -q '^New, TLSv1.2, Cipher is' <<<"$r" && grep -q 'Verify return code: 0 (ok)' \
  <<<"$r" && grep -q '^HTTP/1.1 200 OK' <<<"$r"
check "openssl s_client -tls1_2: verified, TLSv1.2, GET answered 200" $? \
  "$(grep -E '^New|Verify return|^HTTP' <<<"$r" | tr '\n' ' ')"
r=$(sclient "$MAIN_PORT" -CAfile "$certs/ca.pem" -verify_return_error)
grep -q '^New, TLSv1.3, Cipher is' <<<"$r" &&
  grep -q 'Verify return code: 0 (ok)' <<<"$r"
check "openssl s_client (default): TLSv1.3, verified" $? \
  "$(grep -E '^New|Verify return' <<<"$r" | tr '\n' ' ')"
# OpenSSL 3 refuses TLS 1.1 on the client below security level 0: lower it
# so that the refusal seen is the server's (alert 70, protocol version).
for v in tls1_1 tls1; do
  r=$(sclient "$MAIN_PORT" "-$v" -cipher 'DEFAULT@SECLEVEL=0')
  rc=$?
  ((rc != 0)) && grep -q 'alert protocol version' <<<"$r"
  check "openssl s_client -$v is refused by the server (alert protocol version)" \
    $? "rc=$rc $(grep -m1 -E 'error|Protocol' <<<"$r")"
done
grep -q 'unsupported protocol' "$MAIN_ERR"
check "the server logs the refused old protocol (unsupported protocol)" $?
# TLS 1.3 KeyUpdate from the client ("K"): the server answers it and the
# connection goes on. TLS 1.2 renegotiation ("R"): refused, no crash.
r=$( (sleep 0.5; printf 'K\n'; sleep 0.5
  printf 'GET /style.css HTTP/1.1\r\nHost: localhost\r\n\r\n'; sleep 1) |
  timeout 10 openssl s_client -connect "127.0.0.1:$MAIN_PORT" -servername \
    localhost -CAfile "$certs/ca.pem" 2>&1)
grep -q '^KEYUPDATE' <<<"$r" && grep -q '^HTTP/1.1 200 OK' <<<"$r" &&
  grep -q 'color: #123' <<<"$r"
check "TLS 1.3 KeyUpdate from the client, then a request: answered" $? \
  "$(grep -E '^KEYUPDATE|^HTTP|error' <<<"$r" | tr '\n' ' ')"
r=$( (sleep 0.5; printf 'R\n'; sleep 0.5
  printf 'GET /style.css HTTP/1.1\r\nHost: localhost\r\n\r\n'; sleep 1) |
  timeout 10 openssl s_client -tls1_2 -connect "127.0.0.1:$MAIN_PORT" \
    -servername localhost -CAfile "$certs/ca.pem" 2>&1)
grep -q 'no renegotiation' <<<"$r" && kill -0 "$MAIN_PID"
check "TLS 1.2 renegotiation is refused (no_renegotiation), the server lives" \
  $? "$(grep -E '^RENEG|error|alert' <<<"$r" | tr '\n' ' ')"
rc=0
curl -sS --max-time 10 -o /dev/null "http://127.0.0.1:$MAIN_PORT/index.html" \
  2>"$DX_TMP/curl.err" || rc=$?
((rc != 0)) && grep -q 'plain HTTP to a TLS port' "$MAIN_ERR"
check "plain http:// to the TLS port: curl fails, server logs 'plain HTTP to a TLS port'" \
  $? "curl rc=$rc $(cat "$DX_TMP/curl.err")"

run "https pipelining during a large response" "$PY" \
  "$src/tests/tls/https_pipeline.py" "$MAIN_PORT" "$certs/ca.pem"

# ---- startup: what a bad configuration says --------------------------------
echo "== startup with bad TLS files"
openssl pkey -in "$certs/key.pem" -aes256 -passout pass:secret \
  -out "$DX_TMP/key.enc.pem" 2>/dev/null || dx_fail "cannot encrypt key.pem"
# start_fails NAME PATTERN ARGS...: duplex serve must exit 1 at once (stdin
# closed: it must never prompt) and say PATTERN on stderr.
start_fails() {
  local name=$1 re=$2 rc=0 out
  shift 2
  out=$(timeout 10 "$DX_BIN" serve --port 0 --host 127.0.0.1 --echo /echo \
    "$@" </dev/null 2>&1 >/dev/null) || rc=$?
  ((rc == 1)) && grep -Eq "$re" <<<"$out"
  check "startup fails clearly: $name" $? "exit $rc: $out"
}
start_fails "a missing certificate file" 'missing\.pem.*No such file' \
  --tls-cert "$DX_TMP/missing.pem" --tls-key "$certs/key.pem"
start_fails "a file that is not PEM" 'style\.css.*(no PEM|PEM)' \
  --tls-cert "$www/style.css" --tls-key "$certs/key.pem"
start_fails "a key that does not match" 'does not match' \
  --tls-cert "$certs/cert.pem" --tls-key "$DX_TMP/two.key"
start_fails "an encrypted key (no prompt)" 'encrypted' \
  --tls-cert "$certs/cert.pem" --tls-key "$DX_TMP/key.enc.pem"
rc=0
out=$(timeout 10 "$DX_BIN" serve --port 0 --echo /echo --tls-key \
  "$certs/key.pem" </dev/null 2>&1 >/dev/null) || rc=$?
((rc == 2)) && grep -q 'needs --tls-cert' <<<"$out"
check "startup: --tls-key without --tls-cert is a usage error (exit 2)" $? \
  "exit $rc: $out"
# Certificate and key in one file (both.pem), no --tls-key.
tls_server_start BOTH --tls-cert "$certs/both.pem" --root "$www"
r=$(curl_get "$BOTH_PORT" /style.css /dev/null)
[[ $r == "200 text/css; charset=utf-8 0" ]]
check "--tls-cert both.pem (key in the same file) without --tls-key serves" \
  $? "$r"

# ---- wss: Node ws and python websockets ----------------------------------
node_cfg=$(printf '{"certs":"%s","ports":{"main":%s,"small":%s,"plain":%s,"other":%s,"expired":%s,"self":%s},"logs":{"main":"%s","plain":"%s"},"fp":{"cert":"%s","other":"%s","expired":"%s","self":"%s"}}' \
  "$certs" "$MAIN_PORT" "$SMALL_PORT" "$PLAIN_PORT" "$OTHER_PORT" \
  "$EXPIRED_PORT" "$SELF_PORT" "$MAIN_ERR" "$PLAIN_ERR" \
  "$(fingerprint "$certs/cert.pem")" "$(fingerprint "$certs/other.pem")" \
  "$(fingerprint "$certs/expired.pem")" "$(fingerprint "$certs/self.pem")")
run "Node ws over TLS" node "$src/tests/tls/wss_client.js" "$node_cfg"
run "python3-websockets over TLS" "$PY" "$src/tests/tls/wss_client.py" \
  "$certs" "$MAIN_PORT" "$SMALL_PORT" "$SLOW_PORT" "$SLOW_PID" "$SLOW_ERR"

# ---- SIGHUP reload --------------------------------------------------------
serial_two=$(openssl x509 -in "$DX_TMP/two.pem" -noout -serial | sed 's/^serial=//')
reload_cfg=$(printf '{"port":%s,"pid":%s,"log":"%s","ca":"%s","live":"%s","one":{"cert":"%s","key":"%s","encKey":"%s","fp":"%s"},"two":{"cert":"%s","key":"%s","fp":"%s","serial":"%s"}}' \
  "$RELOAD_PORT" "$RELOAD_PID" "$RELOAD_ERR" "$certs/ca.pem" "$live" \
  "$certs/cert.pem" "$certs/key.pem" "$DX_TMP/key.enc.pem" \
  "$(fingerprint "$certs/cert.pem")" \
  "$DX_TMP/two.pem" "$DX_TMP/two.key" "$(fingerprint "$DX_TMP/two.pem")" \
  "$serial_two")
run "SIGHUP certificate reload" node "$src/tests/tls/reload.js" "$reload_cfg"

# ---- SNI: several certificates -----------------------------------------------
echo "== SNI with several certificates"
sni=$DX_TMP/sni
mkdir -p "$sni"
selfsigned() { # selfsigned NAME SERIAL SUBJECT [SAN]
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$sni/$1.key" -out "$sni/$1.pem" -days 2 -set_serial "$2" \
    -subj "$3" ${4:+-addext "subjectAltName=$4"} 2>>"$sni/gen.err"
}
{
  selfsigned a 0xA1 /CN=a.test DNS:a.test &&
    selfsigned b 0xB1 /CN=wildcard DNS:*.b.test &&
    selfsigned b2 0xB2 /CN=wildcard DNS:*.b.test &&
    selfsigned noname 0xC1 /O=nameless
} || {
  cat "$sni/gen.err" >&2
  dx_fail "could not make the SNI certificates"
}
cat "$sni/a.pem" "$sni/b.pem" "$sni/b2.pem" >"$sni/ca.pem"
cp "$sni/b.pem" "$sni/b1.pem" # b.pem/b.key are replaced by the reload
cp "$sni/b.key" "$sni/b1.key"
tls_server_start SNI --tls-cert "$sni/a.pem" --tls-key "$sni/a.key" \
  --tls-cert "$sni/b.pem" --tls-key "$sni/b.key" --echo /echo
run "SNI picks the certificate; SIGHUP reloads every pair" "$PY" \
  "$src/tests/tls/sni_check.py" "$SNI_PORT" "$SNI_PID" "$SNI_ERR" "$sni"

start_fails "SNI: a second key that does not match its certificate" \
  'a\.key does not match certificate .*b1\.pem' \
  --tls-cert "$sni/a.pem" --tls-key "$sni/a.key" \
  --tls-cert "$sni/b1.pem" --tls-key "$sni/a.key"
start_fails "SNI: an unreadable second certificate" \
  'missing\.pem.*No such file' --tls-cert "$sni/a.pem" --tls-key \
  "$sni/a.key" --tls-cert "$sni/missing.pem" --tls-key "$sni/b1.key"
start_fails "SNI: a second certificate without names" \
  'noname\.pem has no DNS name' --tls-cert "$sni/a.pem" --tls-key \
  "$sni/a.key" --tls-cert "$sni/noname.pem" --tls-key "$sni/noname.key"
rc=0
out=$(timeout 10 "$DX_BIN" serve --port 0 --echo /echo --tls-cert \
  "$sni/a.pem" --tls-key "$sni/a.key" --tls-cert "$sni/b1.pem" \
  </dev/null 2>&1 >/dev/null) || rc=$?
((rc == 2)) && grep -q 'in pairs' <<<"$out"
check "SNI: two --tls-cert with one --tls-key is a usage error (exit 2)" $? \
  "exit $rc: $out"
# The config file's list form (the first pair is the default).
cat >"$sni/duplex.yaml" <<EOF
tls:
  - {cert: $sni/a.pem, key: $sni/a.key}
  - cert: $sni/b1.pem
    key: $sni/b1.key
echo: [/echo]
EOF
tls_server_start SNICONF --config "$sni/duplex.yaml"
sni_serial() { # sni_serial PORT [NAME]: the serial of the certificate served
  local name=(-noservername)
  [[ -n ${2:-} ]] && name=(-servername "$2")
  timeout 10 openssl s_client -connect "127.0.0.1:$1" "${name[@]}" \
    </dev/null 2>/dev/null | openssl x509 -noout -serial
}
r="$(sni_serial "$SNICONF_PORT" x.b.test) $(sni_serial "$SNICONF_PORT" a.test)"
r+=" $(sni_serial "$SNICONF_PORT" other.test) $(sni_serial "$SNICONF_PORT")"
[[ $r == "serial=B1 serial=A1 serial=A1 serial=A1" ]]
check "config tls list: s_client x.b.test gets B; a.test, other.test, no SNI A" \
  $? "$r"

# ---- aborted handshakes free everything ------------------------------------
echo "== aborted handshakes"
fds() { find "/proc/$ABUSE_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# settle PORT FD0: waits up to 10 s for the fd count to come back to FD0.
settle() {
  local i n
  for ((i = 0; i < 100; i++)); do
    n=$(fds)
    ((n == $1)) && break
    sleep 0.1
  done
  echo "$n"
}
# Warm up first (the first https request and wss upgrade may set things up
# that stay), then take the baseline.
curl_get "$ABUSE_PORT" /index.html /dev/null >/dev/null
timeout 15 node "$src/tests/tls/echo_once.js" "$ABUSE_PORT" "$certs/ca.pem" \
  >/dev/null
sleep 0.3
fd0=$(fds)
run "200 aborted handshakes" node "$src/tests/tls/abort_handshakes.js" \
  "$ABUSE_PORT" "$certs/ca.pem" 200
fd1=$(settle "$fd0")
((fd1 == fd0))
check "after 200 failed handshakes the server's fd count is back to $fd0" $? \
  "$fd1 open ($(find "/proc/$ABUSE_PID/fd" -mindepth 1 -lname 'socket:*' \
    2>/dev/null | wc -l) sockets)"
kill -0 "$ABUSE_PID" 2>/dev/null
check "the server is still running" $?
timeout 15 node "$src/tests/tls/echo_once.js" "$ABUSE_PORT" "$certs/ca.pem"
check "it still serves wss" $?
r=$(curl_get "$ABUSE_PORT" /index.html /dev/null)
[[ $r == "200 "* ]]
check "it still serves https" $? "$r"
fd2=$(settle "$fd0")
((fd2 == fd0))
check "and the fd count is $fd0 again after serving" $? "$fd2"
echo "#   server log: $(grep -c ' tls ' "$ABUSE_ERR") TLS failures logged"

# ---- the slow download, started at the beginning ---------------------------
rc=0
wait "$dl_pid" || rc=$?
read -r code size secs <"$DX_TMP/slow.res"
((rc == 0)) && [[ "$code $size" == "200 $((16 * 1024 * 1024))" ]] &&
  cmp -s "$www/big.bin" "$DX_TMP/slow.out"
check "https: a slow download (16 MiB at 800 KB/s) that keeps draining is not cut" \
  $? "curl rc=$rc: status $code, $size bytes in $secs s: $(cat "$DX_TMP/slow.err")"

# ---- graceful shutdown of every server -------------------------------------
# (dx_server_stop exits on the first server that fails: list the failures
# so far first.)
((${#failed[@]})) &&
  printf '%s: failed so far: %s\n' "$DX_NAME" "$(IFS=,; echo "${failed[*]}")"
for s in MAIN CHAIN SMALL SLOW PLAIN OTHER EXPIRED SELF RELOAD ABUSE BOTH \
  SNI SNICONF; do
  dx_server_stop "$s"
done

if ((${#failed[@]})); then
  printf '%s: FAIL: %s\n' "$DX_NAME" "$(IFS=,; echo "${failed[*]}")" >&2
  exit 1
fi
echo "$DX_NAME: all passed"
