"""Ordering under concurrent publishers (docs/protocol.md sections 5 and
6): 4 publishers (2 over the HTTP API, 2 over WebSocket) x 250 messages to
one topic, while 20 subscribers spread over the server's loops receive.
Every subscriber must see exactly seq 1..1000, and the same data for each
seq as every other subscriber; every publisher's messages keep its order
and the seqs its acks reported.

usage: order.py PORT   (duplex serve --threads 4 --rate 0)
"""
import asyncio
import sys
import time

import rtlib

port = int(sys.argv[1])
ck = rtlib.Checks("order")
T = "order:one"
SUBS, PER_PUB = 20, 250
TOTAL = 4 * PER_PUB


def http_publisher(name):
    api = rtlib.Api(port)
    acks = []
    for i in range(PER_PUB):
        acks.append((api.publish(T, {"p": name, "i": i})["seq"], i))
    api.close()
    return acks


async def ws_publisher(name):
    c = await rtlib.Client.open(port)
    # Pipelined: every request sent at once, the acks come in order.
    for i in range(PER_PUB):
        await c.send({"op": "publish", "topic": T, "data": {"p": name, "i": i},
                      "id": i})
    acks = []
    while len(acks) < PER_PUB:
        r = await c.recv(20.0)
        if r.get("op") != "published":
            raise RuntimeError(f"{name}: {r}")
        acks.append((r["seq"], r["id"]))
    await c.close()
    return acks


async def subscriber(c):
    got = []
    while len(got) < TOTAL:
        f = await c.recv(30.0)
        got.append(f)
    got += await c.quiet(0.3)
    return got


async def main():
    subs = []
    for i in range(SUBS):
        c = await rtlib.Client.open(port)
        r, _ = await c.request({"op": "subscribe", "topic": T, "id": i})
        if r.get("op") != "subscribed" or r.get("seq") != 0:
            ck.ok(False, f"subscriber {i} subscribed at seq 0", f"{r}")
        subs.append(c)
    t0 = time.monotonic()
    readers = [asyncio.create_task(subscriber(c)) for c in subs]
    pubs = await asyncio.gather(
        asyncio.to_thread(http_publisher, "h1"),
        asyncio.to_thread(http_publisher, "h2"),
        ws_publisher("w1"), ws_publisher("w2"))
    results = await asyncio.gather(*readers)
    secs = time.monotonic() - t0
    print(f"  info {TOTAL} messages x {SUBS} subscribers in {secs:.1f}s")

    ref = None
    bad = []
    for i, got in enumerate(results):
        sq = [f.get("seq") for f in got]
        if any(f.get("op") != "message" or f.get("topic") != T for f in got):
            bad.append((i, "not a message", [f for f in got
                                             if f.get("op") != "message"][:2]))
        if sq != list(range(1, TOTAL + 1)):
            bad.append((i, "seqs", len(sq), sq[:3], sq[-3:]))
        data = {f.get("seq"): f.get("data") for f in got}
        if ref is None:
            ref = data
        elif data != ref:
            diff = [s for s in ref if ref[s] != data.get(s)][:3]
            bad.append((i, "data differs at seqs", diff))
    ck.ok(not bad, f"each of {SUBS} subscribers: exactly seq 1..{TOTAL}, "
          "strictly increasing, the same data per seq as the others",
          f"{bad[:4]}")

    ref = ref or {}
    order = [ref[s]["p"] for s in sorted(ref) if isinstance(ref[s], dict)]
    switches = sum(1 for a, b in zip(order, order[1:]) if a != b)
    print(f"  info the publishers interleave: {switches} changes of "
          "publisher along the seqs")
    published = sorted((d["p"], d["i"]) for d in ref.values()
                       if isinstance(d, dict))
    want = sorted((p, i) for p in ("h1", "h2", "w1", "w2")
                  for i in range(PER_PUB))
    ck.ok(published == want, "every published message delivered exactly once")
    for name, acks in zip(("h1", "h2", "w1", "w2"), pubs):
        seqs = [s for s, _ in acks]
        ok_order = seqs == sorted(seqs) and [i for _, i in acks] == list(
            range(PER_PUB))
        ok_map = all(ref.get(s) == {"p": name, "i": i} for s, i in acks)
        ck.ok(ok_order and ok_map,
              f"publisher {name}: its acks' seqs increase in send order and "
              "each seq carries its data", f"{acks[:5]}")
    for c in subs:
        await c.close()
    ck.done()


rtlib.run(main)
