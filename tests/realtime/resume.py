"""Subscribe and resume semantics (docs/protocol.md section 6): `since`,
`epoch`, gap notices, and no duplicate or hole while messages are being
published during a replay.

usage: resume.py PORT PORT_HISTORY5
  PORT            duplex serve (default --history 100)
  PORT_HISTORY5   duplex serve --history 5
"""
import json
import sys
import threading

import rtlib

port, port5 = int(sys.argv[1]), int(sys.argv[2])
ck = rtlib.Checks("resume")


def msg(topic, seq, data):
    return {"op": "message", "topic": topic, "seq": seq, "data": data}


async def subscribe(c, topic, rid, **resume):
    """Sends subscribe; returns (the reply, topic frames that came before it:
    there must be none, `subscribed` comes first)."""
    return await c.request(dict(op="subscribe", topic=topic, id=rid, **resume))


async def since_within_history():
    api = rtlib.Api(port)
    T = "resume:a"
    pubs = [api.publish(T, {"n": i}) for i in range(1, 11)]
    E = pubs[0]["epoch"]
    ck.ok([p["seq"] for p in pubs] == list(range(1, 11)) and
          all(p["epoch"] == E and p["topic"] == T for p in pubs),
          "HTTP publish x10: seq 1..10, one epoch")

    # since=4: subscribed (current seq and epoch), then exactly 5..10, then
    # live ones, nothing twice.
    c = await rtlib.Client.open(port)
    r, before = await subscribe(c, T, 1, since=4)
    ck.ok(r == {"op": "subscribed", "topic": T, "seq": 10, "epoch": E, "id": 1}
          and not before,
          "since=4: 'subscribed' first, with the current seq 10 and the epoch",
          f"{r} after {before}")
    replay = await c.frames(6)
    ck.ok(replay == [msg(T, s, {"n": s}) for s in range(5, 11)],
          "since=4: the replay is exactly seq 5..10 in order, data intact",
          f"{replay}")
    api.publish(T, {"n": 11})
    api.publish(T, {"n": 12})
    live = await c.frames(2)
    extra = await c.quiet(0.4)
    ck.ok(live == [msg(T, 11, {"n": 11}), msg(T, 12, {"n": 12})] and not extra,
          "since=4: then live 11, 12 and nothing else (no duplicate)",
          f"{live} {extra}")

    # since=0: the whole retained history.
    c2 = await rtlib.Client.open(port)
    r, before = await subscribe(c2, T, "s0", since=0)
    got = await c2.frames(12)
    extra = await c2.quiet(0.3)
    ck.ok(r["op"] == "subscribed" and r["seq"] == 12 and r["id"] == "s0"
          and not before and rtlib.seqs(got) == list(range(1, 13))
          and not extra,
          "since=0: subscribed seq 12, then all retained 1..12",
          f"{r} {rtlib.seqs(got)} {extra}")

    # No since: live only.
    c3 = await rtlib.Client.open(port)
    r, before = await subscribe(c3, T, 3)
    quiet = await c3.quiet(0.4)
    ck.ok(r == {"op": "subscribed", "topic": T, "seq": 12, "epoch": E, "id": 3}
          and not before and not quiet,
          "no since: subscribed seq 12, no replay", f"{r} {quiet}")
    api.publish(T, {"n": 13})
    got = await c3.frames(1)
    ck.ok(got == [msg(T, 13, {"n": 13})] and not await c3.quiet(0.3),
          "no since: the next live message (13) only")
    for x in (c, c2):
        got = await x.frames(1)
        ck.ok(rtlib.seqs(got) == [13], "earlier subscribers get 13 once")

    # since == current seq, right epoch: nothing to replay.
    c4 = await rtlib.Client.open(port)
    r, _ = await subscribe(c4, T, 4, since=13, epoch=E)
    ck.ok(r["seq"] == 13 and r["epoch"] == E and not await c4.quiet(0.3),
          "since=13 (current), right epoch: no replay, no gap")

    # A wrong epoch: gap reason "epoch" first, then the retained history.
    c5 = await rtlib.Client.open(port)
    r, before = await subscribe(c5, T, 5, since=4, epoch="not-the-epoch")
    got = await c5.frames(14)
    gap = got[0]
    ck.ok(r == {"op": "subscribed", "topic": T, "seq": 13, "epoch": E, "id": 5}
          and not before, "wrong epoch: subscribed with the current epoch")
    ck.ok(gap == {"op": "gap", "topic": T, "from": 1, "to": 0, "epoch": E,
                  "reason": "epoch"},
          "wrong epoch: gap {reason: epoch, from: 1, to: 0 (history "
          "complete)} before anything else", f"{gap}")
    ck.ok(rtlib.seqs(got[1:]) == list(range(1, 14)) and
          not await c5.quiet(0.3),
          "wrong epoch: then the whole retained history 1..13, not 5..13",
          f"{rtlib.seqs(got[1:])}")

    # since > current seq (a stale client without its epoch, or with it).
    for rid, kw in (("stale", {"since": 99}),
                    ("stale-e", {"since": 99, "epoch": E})):
        c6 = await rtlib.Client.open(port)
        r, before = await subscribe(c6, T, rid, **kw)
        got = await c6.frames(14)
        ck.ok(r["op"] == "subscribed" and r["seq"] == 13 and not before and
              got[0] == {"op": "gap", "topic": T, "from": 1, "to": 0,
                         "epoch": E, "reason": "epoch"} and
              rtlib.seqs(got[1:]) == list(range(1, 14)),
              f"since=99 > seq 13 ({'with' if 'epoch' in kw else 'without'}"
              " epoch): epoch gap, then 1..13", f"{r} {got[:2]}")
        await c6.close()
    for x in (c, c2, c3, c4, c5):
        await x.close()
    api.close()


async def replay_races_live_publishes():
    """Subscribes with since while another thread publishes: the client
    must see every seq after since exactly once, in order."""
    T = "resume:race"
    api = rtlib.Api(port)
    for i in range(1, 21):
        api.publish(T, i)
    api.close()
    bad = []
    for rnd in range(8):
        start = 20 + rnd * 40  # the topic's seq when this round starts
        since = start - 15
        stop = threading.Event()

        def publisher():
            a = rtlib.Api(port)
            for i in range(40):
                a.publish(T, start + i + 1)
            a.close()
            stop.set()

        c = await rtlib.Client.open(port)
        th = threading.Thread(target=publisher)
        th.start()
        r, before = await subscribe(c, T, rnd, since=since)
        got = []
        while not got or got[-1] < start + 40:
            f = await c.recv(5.0)
            if f.get("op") != "message":
                bad.append(("frame", rnd, f))
                break
            if f["data"] != f["seq"]:
                bad.append(("data", rnd, f))
            got.append(f["seq"])
        th.join(10)
        got += rtlib.seqs(await c.quiet(0.2))
        if before or got != list(range(since + 1, start + 41)):
            bad.append(("seqs", rnd, since, r.get("seq"), got[:5], got[-5:],
                        len(got)))
        await c.close()
    ck.ok(not bad, "8 x subscribe(since) racing 40 publishes each: every "
          "seq after since exactly once, in order", f"{bad[:3]}")


async def history_gaps():
    api = rtlib.Api(port5)
    T = "resume:h5"
    pubs = [api.publish(T, {"n": i}) for i in range(1, 11)]
    E = pubs[-1]["epoch"]
    st, _, body = rtlib.http(port5, "GET", "/api/topics")
    listed = [t for t in json.loads(body)["topics"] if t["topic"] == T]
    ck.ok(st == 200 and listed and listed[0]["retained"] == 5 and
          listed[0]["seq"] == 10,
          "--history 5: /api/topics says 5 retained of seq 10", f"{listed}")

    c = await rtlib.Client.open(port5)
    r, before = await subscribe(c, T, 1, since=1)
    got = await c.frames(6)
    ck.ok(r == {"op": "subscribed", "topic": T, "seq": 10, "epoch": E, "id": 1}
          and not before, "--history 5, since=1: subscribed seq 10")
    ck.ok(got[0] == {"op": "gap", "topic": T, "from": 2, "to": 5, "epoch": E,
                     "reason": "history"},
          "--history 5, since=1: gap {reason: history, from: 2, to: 5} first",
          f"{got[0]}")
    ck.ok(got[1:] == [msg(T, s, {"n": s}) for s in range(6, 11)] and
          not await c.quiet(0.3),
          "--history 5, since=1: then exactly 6..10", f"{got[1:]}")

    c2 = await rtlib.Client.open(port5)
    r, _ = await subscribe(c2, T, 2, since=0)
    got = await c2.frames(6)
    ck.ok(got[0] == {"op": "gap", "topic": T, "from": 1, "to": 5, "epoch": E,
                     "reason": "history"} and
          rtlib.seqs(got[1:]) == list(range(6, 11)),
          "--history 5, since=0: gap history 1..5, then 6..10", f"{got}")

    c3 = await rtlib.Client.open(port5)
    r, _ = await subscribe(c3, T, 3, since=7, epoch="an-old-epoch")
    got = await c3.frames(6)
    ck.ok(got[0] == {"op": "gap", "topic": T, "from": 1, "to": 5, "epoch": E,
                     "reason": "epoch"} and
          rtlib.seqs(got[1:]) == list(range(6, 11)),
          "--history 5, wrong epoch: gap {reason: epoch, from: 1, to: 5}, "
          "then the retained 6..10 (not 8..10)", f"{got}")

    c4 = await rtlib.Client.open(port5)
    r, _ = await subscribe(c4, T, 4, since=7, epoch=E)
    got = await c4.frames(3)
    ck.ok(rtlib.seqs(got) == [8, 9, 10] and not await c4.quiet(0.3),
          "--history 5, since=7 within history: 8..10, no gap", f"{got}")
    for x in (c, c2, c3, c4):
        await x.close()
    api.close()


async def main():
    await since_within_history()
    await replay_races_live_publishes()
    await history_gaps()
    ck.done()


rtlib.run(main)
