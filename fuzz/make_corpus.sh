#!/bin/bash
# Writes the seed corpus: fuzz/corpus/<target>/<name>. Small, valid inputs
# the fuzzer mutates from; rerun after editing (the files are committed).
# frames inputs start with 3 selector bytes (see fuzz/frames.c):
#   byte 0  bit0 client, bit1 deflate, bit2/3 no_context_takeover, bit4
#           compress all, bit5 no auto-pong;  byte 1 window bits;
#   byte 2  chunking seed (0: whole input at once)
set -euo pipefail
cd "$(dirname "$0")"
rm -rf corpus
mkdir -p corpus/frames corpus/http corpus/handshake corpus/proxy

f() { printf "$2" >"corpus/frames/$1"; }
# Frames a client receives (unmasked, RFC 6455 5.7) ...
f client-hello '\x01\x77\x00\x81\x05Hello'
f client-hello-split '\x01\x77\x01\x01\x03Hel\x80\x02lo'
f client-ping-pong '\x01\x77\x03\x89\x05Hello\x8a\x05Hello'
f client-binary-256 "\\x01\\x77\\x05\\x82\\x7e\\x01\\x00$(printf 'x%.0s' {1..256})"
f client-close '\x01\x77\x00\x88\x02\x03\xe8'
# ... RFC 7692 7.2.3.1/7.2.3.2: "Hello" compressed, twice with context takeover
f client-deflate-hello '\x03\x77\x00\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00'
f client-deflate-twice '\x13\x77\x02\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00\xc1\x05\xf2\x00\x11\x00\x00'
f client-deflate-frag '\x03\x77\x00\x41\x03\xf2\x48\xcd\x80\x04\xc9\xc9\x07\x00'
# ... edge cases the fuzzer found: an empty compressed first fragment, and
# an empty compressed text message (nothing to inflate: no buffer at all)
f client-deflate-empty-first '\x03\x77\x00\x41\x00\x80\x07\xf2\x48\xcd\xc9\xc9\x07\x00'
f client-deflate-empty '\x03\x77\x00\xc1\x00'
# ... and frames a server receives (masked: RFC 6455 5.7, or a zero mask)
f server-hello '\x00\x77\x00\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58'
f server-hello-bytes '\x00\x77\x01\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58'
f server-ping '\x00\x77\x00\x89\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58'
f server-close '\x00\x77\x00\x88\x82\x00\x00\x00\x00\x03\xe8'
f server-close-reason '\x00\x77\x00\x88\x86\x00\x00\x00\x00\x03\xe9bye!'
f server-frag-ping '\x20\x77\x00\x01\x83\x00\x00\x00\x00Hel\x89\x80\x00\x00\x00\x00\x80\x82\x00\x00\x00\x00lo'
f server-deflate-hello '\x02\x77\x00\xc1\x87\x00\x00\x00\x00\xf2\x48\xcd\xc9\xc9\x07\x00'
f server-deflate-nct '\x0e\x00\x00\xc1\x87\x00\x00\x00\x00\xf2\x48\xcd\xc9\xc9\x07\x00'
f server-utf8 '\x00\x77\x00\x81\x8b\x00\x00\x00\x00\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5'

req_base='GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\n'
resp_base='HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n'
for t in http handshake; do
  d=corpus/$t
  printf "$req_base\\r\\n" >"$d/request"
  printf "${req_base}Sec-WebSocket-Protocol: chat, superchat\\r\\n\\r\\n" >"$d/request-protocols"
  printf "${req_base}Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\\r\\n\\r\\n" >"$d/request-deflate"
  printf "${req_base}Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; client_max_window_bits=12; server_no_context_takeover, permessage-deflate\\r\\n\\r\\n" >"$d/request-deflate-params"
  printf "$resp_base\\r\\n" >"$d/response"
  printf "${resp_base}Sec-WebSocket-Protocol: chat\\r\\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\\r\\n\\r\\n" >"$d/response-deflate"
  printf 'HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n' >"$d/response-426"
done
printf 'GET /index.html?x=1 HTTP/1.0\r\nHost: a\r\nAccept: */*\r\nX-Empty:\r\n\r\n' >corpus/http/request-10
printf 'POST /publish HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello' >corpus/http/request-body
# PROXY protocol headers (haproxy's proxy-protocol.txt), addresses, XFF lists
p() { printf "$2" >"corpus/proxy/$1"; }
p v1-tcp4 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n'
p v1-tcp6 'PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n'
p v1-unknown 'PROXY UNKNOWN\r\n'
p v2-inet '\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x02\xdc\x04\x01\xbb'
p v2-local '\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00'
p v2-inet6-tlv '\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x2b\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02\x12\x34\x00\x50\x04\x00\x04\0\0\0\0'
p xff '198.51.100.1, 10.0.0.2,[2001:db8::1]:443, 1.2.3.4:80'
p cidr '10.0.0.0/8'
p cidr6 '2001:db8::/32'
echo "corpus: $(find corpus -type f | wc -l) files in fuzz/corpus/"
