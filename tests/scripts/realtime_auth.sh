#!/bin/bash
# Authentication of the duplex.v1 channel server (tests/realtime/auth.py):
# JWTs (HS256 and RS256, keys made here with openssl) from the header,
# cookie, query and bearer subprotocol; expired, not-yet-valid, badly
# signed, alg none and algorithm-confusion tokens refused with 401; topic
# grants ("grants", or its alias "topics"; both: 401); the HTTP API's keys;
# one-time tickets (403 with auth on and no API key). Servers on 127.0.0.1,
# SIGTERM -> exit 0, no sanitizer report.
#
# Usage: realtime_auth.sh BUILD_DIR SOURCE_DIR  (BUILD_DIR: the ASan build)
set -u
# shellcheck source=../realtime/rt_lib.sh
. "$2/tests/realtime/rt_lib.sh"
rt_init "$1" "$2" realtime_auth

keys="$DX_WORK/keys"
mkdir -p "$keys"
for k in priv other; do
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$keys/$k.pem" 2>/dev/null || dx_fail "openssl genpkey"
done
openssl pkey -in "$keys/priv.pem" -pubout -out "$keys/pub.pem" ||
  dx_fail "openssl pkey -pubout"
secret=$(openssl rand -hex 24) # 48 bytes
key="k1-$(openssl rand -hex 12)" # API keys are 16+ characters

rt_start hs --auth required --jwt-secret "$secret" --api-key "$key" --presence \
  --close-timeout 1s
rt_start rs --auth required --jwt-public-key "$keys/pub.pem" --api-key "$key" \
  --close-timeout 1s
rt_start nokeys --auth optional --jwt-secret "$secret" --close-timeout 1s

rt_py "auth" auth.py "${DX_PORT[hs]}" "${DX_PORT[rs]}" "$secret" \
  "$keys/priv.pem" "$keys/other.pem" "$keys/pub.pem" "$key" \
  "${DX_PORT[nokeys]}"

dx_finish
