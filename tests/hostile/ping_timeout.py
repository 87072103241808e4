"""Dead peers against `duplex serve --ping-interval 1s --pong-timeout 1s`:
a raw client that upgrades and then never answers anything is pinged and
closed after ping interval + grace (~2 s), while a python-websockets client
(which answers pings by itself) on the same server stays open over the same
period and still echoes.

usage: ping_timeout.py PORT SERVER_LOG
"""
import asyncio
import sys
import threading
import time

import hx

try:
    import websockets
except ImportError:
    print("ping_timeout: python3-websockets is missing (use /usr/bin/python3)")
    sys.exit(1)

port, log_path = int(sys.argv[1]), sys.argv[2]
ck = hx.Checks("ping_timeout")
INTERVAL, GRACE = 1.0, 1.0
LOW, HIGH = 1.5, 4.0   # window for the close, seconds after the 101
HOLD = 5.0             # how long the good client stays connected


def deaf_client(res):
    s, st, head, rest = hx.ws_connect(port)
    res["status"] = st
    if st != 101:
        s.close()
        return
    t0 = time.monotonic()
    pings = []
    # Reads (so the close is seen) but never answers: a peer whose
    # application is wedged while its kernel still ACKs.
    r = hx.FrameReader(s, rest)
    how = "timeout"
    while time.monotonic() - t0 < HIGH + 3:
        try:
            fin, op, p = r.next(HIGH + 3 - (time.monotonic() - t0))
        except EOFError:
            how = "eof"
            break
        except ConnectionResetError:
            how = "rst"
            break
        except OSError:
            break
        if op == 0x9:
            pings.append(time.monotonic() - t0)
        elif op == 0x8:
            res["close_frame"] = p
    res.update(how=how, secs=time.monotonic() - t0, pings=pings)
    s.close()


async def good_client():
    uri = f"ws://127.0.0.1:{port}/echo"
    # ping_interval=None: only the server pings; the library answers them.
    async with websockets.connect(uri, ping_interval=None,
                                  open_timeout=5) as ws:
        await asyncio.sleep(HOLD)
        still_open = ws.open
        await ws.send("alive?")
        reply = await asyncio.wait_for(ws.recv(), 5)
        return still_open, reply


res = {}
t = threading.Thread(target=deaf_client, args=(res,))
t.start()
try:
    still_open, reply = asyncio.run(good_client())
    ck.ok(still_open, f"python-websockets client still open after {HOLD}s")
    ck.ok(reply == "alive?", f"python-websockets client echoed ({reply!r})")
except Exception as e:  # any failure of the good client is a test failure
    ck.ok(False, "python-websockets client stayed connected", repr(e))
t.join(HIGH + 5)

ck.ok(res.get("status") == 101, f"deaf client upgraded ({res.get('status')})")
pings = res.get("pings", [])
ck.ok(len(pings) >= 1, f"deaf client was pinged (at {pings})")
if pings:
    ck.ok(INTERVAL * 0.8 <= pings[0] <= INTERVAL * 2,
          f"first ping {pings[0]:.2f}s after the upgrade (interval {INTERVAL}s)")
ck.ok(res.get("how") in ("eof", "rst"),
      f"deaf client closed by the server ({res.get('how')})")
secs = res.get("secs", -1)
ck.ok(LOW <= secs <= HIGH,
      f"deaf client closed {secs:.2f}s after the upgrade "
      f"(window {LOW}-{HIGH}s for interval {INTERVAL}s + grace {GRACE}s)")
with open(log_path, errors="replace") as f:
    log = f.read()
ck.ok("no pong" in log, "the server logged the pong timeout")
ck.done()
