"""A connection flood from one address against `duplex serve --max-per-ip 5`:
the first 5 WebSocket upgrades succeed, every further one gets 429 (with
Retry-After) and a closed connection, the 5 keep working, plain HTTP from
the same address is not counted, and closing some frees their places.

usage: per_ip.py PORT
"""
import sys
import time

import hx

port = int(sys.argv[1])
ck = hx.Checks("per_ip")
LIMIT = 5


def refused(name):
    s, st, head, rest = hx.ws_connect(port)
    ck.ok(st == 429, f"{name}: 429 ({st})", repr(head[:80]))
    ck.ok(hx.header(head, "Retry-After") is not None,
          f"{name}: Retry-After present")
    _, how, _ = hx.read_until_closed(s, 3.0)
    ck.ok(how in ("eof", "rst"), f"{name}: connection closed ({how})")
    s.close()


def echo(conn, i, payload):
    s, r = conn
    s.sendall(hx.frame(0x1, payload))
    try:
        op, p = r.message(3.0)
    except (OSError, EOFError, ValueError) as e:
        op, p = None, repr(e).encode()
    ck.ok((op, p) == (0x1, payload), f"held connection {i} echoes", repr(p[:40]))


def close(conn, i):
    s, r = conn
    s.sendall(hx.close_frame(1000))
    try:
        op, p = r.message(3.0)
    except (OSError, EOFError, ValueError) as e:
        op, p = None, repr(e).encode()
    ck.ok(op == 0x8 and p[:2] == b"\x03\xe8",
          f"held connection {i}: close 1000 echoed", repr(p[:20]))
    _, how, _ = hx.read_until_closed(s, 3.0)
    ck.ok(how == "eof", f"held connection {i}: server closed TCP after ({how})")
    s.close()


held = []
for i in range(LIMIT):
    s, st, head, rest = hx.ws_connect(port)
    ck.ok(st == 101, f"upgrade {i + 1} of {LIMIT}: 101 ({st})")
    held.append((s, hx.FrameReader(s, rest)))

for i in range(LIMIT, LIMIT + 5):
    refused(f"upgrade {i + 1}")

# Plain HTTP from the same address is not a WebSocket: not counted.
st, head, body, how = hx.http_exchange(
    port, b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    timeout=3.0)
ck.ok(st == 426, f"plain HTTP at the limit is answered, not 429 ({st})")

for i, c in enumerate(held):
    echo(c, i, f"held {i}".encode())

# Free two places; the server releases them when it sees our FIN after the
# closing handshake, so allow it a moment.
close(held.pop(0), 0)
close(held.pop(0), 1)
reopened = []
t0 = time.monotonic()
while len(reopened) < 2 and time.monotonic() - t0 < 2.0:
    s, st, head, rest = hx.ws_connect(port)
    if st == 101:
        reopened.append((s, hx.FrameReader(s, rest)))
    else:
        s.close()
        time.sleep(0.05)
ck.ok(len(reopened) == 2,
      f"two new upgrades accepted after closing two "
      f"({len(reopened)} within {time.monotonic() - t0:.2f}s)")
for i, c in enumerate(reopened):
    echo(c, f"new {i}", b"new")
held += reopened
refused("upgrade over the limit again")

for i, c in enumerate(held):
    close(c, f"final {i}")
ck.done()
