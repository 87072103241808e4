"""Hostile HTTP against `duplex serve --root ROOT --echo /echo`: oversized
heads, malformed framing, wrong methods on the WebSocket endpoint and path
traversal out of the static root. Each must end in a clean 4xx and, where
the request cannot be trusted, a closed connection.

usage: http_hostile.py PORT SECRET_MARKER
  ROOT holds index.html ("duplex-index-ok"), a symlink 'leak' to a file
  outside the root and a symlink 'leakdir' to the directory holding it; that
  file contains SECRET_MARKER, which must never come back; 'inlink' is a
  symlink to ../root/../outside/secret.txt (in and out again) and
  'abslink' an absolute symlink to the secret file.
"""
import sys

import hx

port = int(sys.argv[1])
secret = sys.argv[2].encode()
ck = hx.Checks("http_hostile")
H = b"Host: 127.0.0.1\r\n"


def expect(name, raw, statuses, closed=True, extra=None):
    st, head, body, how = hx.http_exchange(port, raw, timeout=3.0)
    ck.ok(st in statuses, f"{name}: status {st} in {sorted(statuses)}",
          repr(head[:120]))
    if closed:
        # 'timeout' would mean the server kept a connection it should not
        # trust any more.
        ck.ok(how in ("eof", "rst"), f"{name}: connection closed ({how})")
    if extra:
        extra(st, head, body)
    return st, head, body


def no_secret(name):
    def check(st, head, body):
        ck.ok(st != 200, f"{name}: not 200")
        ck.ok(secret not in body and b"root:x:0:0" not in body,
              f"{name}: no outside content in the body")
    return check


print("-- oversized heads")
big_line = b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 20480 + b"\r\n\r\n"
expect("20 KiB header line", big_line, {431})
many = b"GET / HTTP/1.1\r\n" + H + b"".join(
    b"X-H%03d: %s\r\n" % (i, b"v" * 90) for i in range(200)) + b"\r\n"
ck.ok(len(many) > 20000, f"200 small headers are {len(many)} bytes (> 20000)")
expect("200 small headers", many, {431})
# Over the 8 KiB line limit the request line is refused by the head parser
# (431, as for any over-long line); a target that fits the line but not the
# server's 2 KiB path buffer is 414.
expect("9 KiB request line", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H +
       b"\r\n", {431})
expect("3 KiB request target", b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n" + H +
       b"\r\n", {414})
# A head that never ends (no CRLFCRLF) past the 16 KiB head limit, sent in
# small lines so no single line is too long.
endless = b"GET / HTTP/1.1\r\n" + H + b"".join(
    b"X-%02d: %s\r\n" % (i, b"w" * 200) for i in range(90))
expect("head over 16 KiB without an end", endless, {431})

print("-- malformed HTTP")
expect("bare LF line ends", b"GET / HTTP/1.1\n" + b"Host: 127.0.0.1\n\n",
       {400})
expect("bare LF in one header", b"GET / HTTP/1.1\r\n" + H +
       b"X-A: 1\nX-B: 2\r\n\r\n", {400})
expect("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n two\r\n\r\n",
       {400})
expect("missing Host", b"GET / HTTP/1.1\r\n\r\n", {400})
expect("two Host headers", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", {400})
expect("Content-Length + Transfer-Encoding",
       b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400})
expect("missing Host on an upgrade",
       b"GET /echo HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
       b"Sec-WebSocket-Version: 13\r\n\r\n", {400})
expect("space before the colon", b"GET / HTTP/1.1\r\n" + H +
       b"X-A : 1\r\n\r\n", {400})
expect("garbage instead of a request", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"
       b"\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", {400})

print("-- handshake errors")
_, up = hx.upgrade_request("/echo", method="POST")
expect("POST upgrade to /echo", up, {405},
       extra=lambda st, h, b: ck.ok(hx.header(h, "Allow") == "GET",
                                    "POST upgrade: Allow: GET",
                                    repr(hx.header(h, "Allow"))))
# A plain (non-upgrade) request to the WebSocket path: 426 naming the
# protocol (RFC 6455 4.2.2); this one may keep the connection.
expect("plain POST to /echo", b"POST /echo HTTP/1.1\r\n" + H +
       b"Content-Length: 0\r\nConnection: close\r\n\r\n", {426},
       extra=lambda st, h, b: ck.ok(
           (hx.header(h, "Upgrade") or "").lower() == "websocket",
           "plain POST: 426 says Upgrade: websocket"))
_, bad_ver = hx.upgrade_request("/echo")
bad_ver = bad_ver.replace(b"Sec-WebSocket-Version: 13",
                          b"Sec-WebSocket-Version: 8")
expect("Sec-WebSocket-Version 8", bad_ver, {426},
       extra=lambda st, h, b: ck.ok(
           hx.header(h, "Sec-WebSocket-Version") == "13",
           "version 8: the 426 names version 13"))
_, no_key = hx.upgrade_request("/echo")
no_key = b"\r\n".join(l for l in no_key.split(b"\r\n")
                      if not l.startswith(b"Sec-WebSocket-Key"))
expect("upgrade without a key", no_key, {400})

print("-- path traversal against --root")
st, head, body = expect("control: /index.html", b"GET /index.html HTTP/1.1\r\n"
                        + H + b"Connection: close\r\n\r\n", {200})
ck.ok(b"duplex-index-ok" in body, "control: index.html content served")
for target in [b"/../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd",
               b"/%2E%2E%2Fetc%2Fpasswd", b"/..%2f..%2fetc/passwd",
               b"/a%00.html", b"/index.html%00.txt", b"/..", b"/./../etc/passwd",
               b"/x/../../etc/passwd", b"/%2e%2e%5c%2e%2e%5cetc%5cpasswd",
               b"/..\\..\\etc\\passwd", b"/../outside/secret.txt",
               b"/%2e%2e/outside/secret.txt", b"//etc/passwd"]:
    expect(f"GET {target.decode()}", b"GET " + target + b" HTTP/1.1\r\n" + H +
           b"Connection: close\r\n\r\n", {400, 403, 404},
           extra=no_secret(f"GET {target.decode()}"))
# Absolute-form target with a traversal in its path.
expect("absolute-form traversal", b"GET http://127.0.0.1/../etc/passwd "
       b"HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", {400, 403, 404},
       extra=no_secret("absolute-form traversal"))



def still_answers(when):
    expect(f"{when}: /index.html", b"GET /index.html HTTP/1.1\r\n" + H +
           b"Connection: close\r\n\r\n", {200})
    ok, why = hx.echo_ok(port, timeout=3.0)
    ck.ok(ok, f"{when}: echo on /echo works", why)


still_answers("after the traversals")

# Symlinks last: a link whose target leaves the root must not be followed
# out of it (and must not wedge the loop that resolves it).
print("-- symlinks leaving the root")
for target in [b"/abslink", b"/leak", b"/leakdir/secret.txt",
               b"/leakdir/../leakdir/secret.txt", b"/inlink"]:
    expect(f"GET {target.decode()}", b"GET " + target + b" HTTP/1.1\r\n" + H +
           b"Connection: close\r\n\r\n", {400, 403, 404},
           extra=no_secret(f"GET {target.decode()}"))
still_answers("after the symlinks")
ck.done()
