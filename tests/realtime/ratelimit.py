"""Per-connection rate limits (docs/protocol.md sections 8 and 10) on a
server started with --rate 10 --burst 10: a burst past the bucket gets
rate_limited errors (counted in /metrics) and the connection recovers; a
client that keeps flooding is closed with 1008.

usage: ratelimit.py PORT
"""
import asyncio
import sys

import rtlib

port = int(sys.argv[1])
ck = rtlib.Checks("ratelimit")
KEY = 'duplex_rejections_total{reason="rate_limited"}'


async def main():
    m0 = rtlib.metric(port, KEY)
    ck.ok(m0 == 0, f"/metrics has {KEY} (0 at start)", f"{m0}")

    # 20 requests in one write: the bucket holds 10.
    c = rtlib.Raw(port)
    c.next()  # hello
    c.send_all([{"op": "ping", "id": i} for i in range(20)])
    got = [c.next() for _ in range(20)]
    pongs = [f["id"] for f in got if f.get("op") == "pong"]
    limited = [f for f in got if f.get("op") == "error" and
               f.get("code") == "rate_limited"]
    ck.ok(len(pongs) == 10 and len(limited) == 10,
          f"20 requests at once with --burst 10: {len(pongs)} answered, "
          f"{len(limited)} rate_limited", f"{got}")
    ck.ok(pongs == list(range(len(pongs))),
          "the first ones (in order) are the ones served", f"{pongs}")
    await asyncio.sleep(1.2)
    c.send({"op": "ping", "id": "later"})
    r = c.next()
    ck.ok(r == {"op": "pong", "id": "later"},
          "a second later (10/s refilled) the connection is served again",
          f"{r}")

    # The 50-at-once burst of the issue: some are refused, the server counts
    # them. (40 refusals in a row may also count as flooding: whether this
    # connection survives is not asserted.)
    c2 = rtlib.Raw(port)
    c2.next()
    c2.send_all([{"op": "ping", "id": i} for i in range(50)])
    seen, _ = c2.until_quiet(1.0)
    n_limited = sum(1 for f in seen if f.get("code") == "rate_limited")
    n_pong = sum(1 for f in seen if f.get("op") == "pong")
    ck.ok(n_limited >= 1 and n_pong == 10,
          f"50 at once: {n_pong} served, {n_limited} rate_limited errors")
    c2.s.close()

    # A client that keeps flooding is closed with 1008.
    c3 = await rtlib.Client.open(port)
    flood_closed = None
    try:
        for i in range(2000):
            await c3.send({"op": "publish", "topic": "flood", "data": i})
            if i % 50 == 0:
                await asyncio.sleep(0)
        await c3.quiet(5.0)
    except rtlib.Closed as e:
        flood_closed = e.args
    except Exception as e:  # the send side may see the close first
        flood_closed = ("send", repr(e))
    if flood_closed and flood_closed[0] == "send":
        try:
            await c3.quiet(5.0)
        except rtlib.Closed as e:
            flood_closed = e.args
    code = c3.ws.close_code
    ck.ok(code == 1008, "a flooding client is closed with 1008 (policy)",
          f"close code {code}, {flood_closed}")

    m1 = rtlib.metric(port, KEY)
    ck.ok(m1 is not None and m1 >= len(limited) + n_limited,
          f"/metrics counts the refusals: {KEY} = {m1} "
          f"(>= {len(limited) + n_limited} errors seen)")
    # Other clients are not affected.
    c4 = await rtlib.Client.open(port)
    ck.ok(await c4.ping_ok(), "a fresh connection is served")
    c.send({"op": "ping", "id": "still"})
    ck.ok(c.next() == {"op": "pong", "id": "still"},
          "the first client is still served")
    c.s.close()
    await c4.close()
    ck.done()


rtlib.run(main)
