"""Slowloris against `duplex serve --handshake-timeout 1s`: clients that
trickle a request head one byte every 200 ms (and one that sends nothing)
are closed at the handshake deadline, which counts from accept and is not
extended by the bytes that keep arriving. Meanwhile a normal client is
served.

usage: slowloris.py PORT
"""
import select
import sys
import threading
import time

import hx

port = int(sys.argv[1])
ck = hx.Checks("slowloris")
DEADLINE = 1.0        # --handshake-timeout
LOW, HIGH = 0.8, 3.0  # accepted window for the close, seconds after connect
GIVE_UP = 8.0

# Never completes: the header line keeps growing, a byte at a time.
TRICKLE = (b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"X-Slow: " + b"z" * 200)


def trickler(result, interval, payload):
    s = hx.connect(port)
    t0 = time.monotonic()
    sent, got, how = 0, b"", "timeout"
    try:
        while time.monotonic() - t0 < GIVE_UP:
            if payload and sent < len(payload):
                try:
                    s.send(payload[sent:sent + 1])
                    sent += 1
                except (BrokenPipeError, ConnectionResetError):
                    how = "rst"
                    break
            r, _, _ = select.select([s], [], [], interval)
            if r:
                try:
                    d = s.recv(4096)
                except ConnectionResetError:
                    how = "rst"
                    break
                if not d:
                    how = "eof"
                    break
                got += d
    finally:
        result.update(secs=time.monotonic() - t0, sent=sent, got=got, how=how)
        s.close()


results = [dict() for _ in range(4)]
threads = [threading.Thread(target=trickler, args=(results[i], 0.2, TRICKLE))
           for i in range(3)]
threads.append(threading.Thread(target=trickler,
                                args=(results[3], 0.2, b"")))  # silent
for t in threads:
    t.start()

# While they trickle, an honest client gets its upgrade and echo.
time.sleep(0.3)
ok, why = hx.echo_ok(port)
ck.ok(ok, "an honest client is served while slowloris clients trickle", why)

for t in threads:
    t.join(GIVE_UP + 2)

for i, r in enumerate(results):
    name = f"trickler {i}" if i < 3 else "silent client"
    secs = r.get("secs", -1)
    ck.ok(r.get("how") in ("eof", "rst"),
          f"{name}: closed by the server ({r.get('how')})")
    ck.ok(LOW <= secs <= HIGH,
          f"{name}: closed {secs:.2f}s after connect (window {LOW}-{HIGH}s, "
          f"deadline {DEADLINE}s)")
    if i < 3:
        # Bytes kept arriving right up to the close: the deadline is
        # absolute, not an idle timer that each byte resets.
        ck.ok(r.get("sent", 0) >= 4,
              f"{name}: kept trickling until closed ({r.get('sent')} bytes)")
    got = r.get("got", b"")
    st = hx.status_of(got) if got else None
    ck.ok(not got or (st is not None and 400 <= st < 500),
          f"{name}: no success response (got {got[:40]!r})")

ok, why = hx.echo_ok(port)
ck.ok(ok, "the server still serves after the slowloris clients", why)
ck.done()
