"""Resume across a server restart: the "nothing lost" contract across
reconnects (docs/protocol.md sections 6 and 9). Two phases, the server is
restarted (SIGTERM, then the same options on the same port) in between:

  restart.py before PORT STATE_FILE
      publishes 3 messages, subscribes with since=0, writes what a client
      keeps (epoch, last seq) to STATE_FILE, prints "ready", then waits
      for the shutdown: it must be a close 1012 "restart".
  restart.py after PORT STATE_FILE
      resumes with the old epoch: the new stream's epoch differs, and the
      client gets a gap with reason "epoch" first, then everything of the
      new stream, whatever its old `since` was.
"""
import json
import sys

import rtlib

mode, port, state = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ck = rtlib.Checks(f"restart-{mode}")
T = "resume:restart"


async def before():
    api = rtlib.Api(port)
    pubs = [api.publish(T, {"n": i}) for i in (1, 2, 3)]
    api.close()
    c = await rtlib.Client.open(port)
    r, _ = await c.request({"op": "subscribe", "topic": T, "since": 0,
                            "id": 1})
    got = await c.frames(3)
    ck.ok(r["seq"] == 3 and rtlib.seqs(got) == [1, 2, 3],
          "before: subscribed since=0, got 1..3")
    with open(state, "w") as f:
        json.dump({"epoch": r["epoch"], "seq": 3}, f)
    ck.ok(r["epoch"] == pubs[0]["epoch"], "before: the epoch kept")
    print("ready", flush=True)
    try:
        extra = await c.quiet(20.0)
        ck.ok(False, "the server closed the connection on SIGTERM",
              f"still open after 20 s ({extra})")
    except rtlib.Closed as e:
        code, reason = e.args
        ck.ok(code == 1012 and reason == "restart",
              "shutdown: close 1012 \"restart\" (docs section 9)",
              f"{code} {reason!r}")
    ck.done()


async def after():
    with open(state) as f:
        old = json.load(f)
    api = rtlib.Api(port)
    pubs = [api.publish(T, {"after": i}) for i in (1, 2)]
    api.close()
    E2 = pubs[0]["epoch"]
    ck.ok([p["seq"] for p in pubs] == [1, 2],
          "after the restart: a new stream, seqs start again at 1",
          f"{pubs}")
    ck.ok(E2 != old["epoch"], "after the restart: a new epoch",
          f"{E2} == {old['epoch']}")
    # The three ways a client comes back: with its old epoch and a since
    # beyond the new seq, with its old epoch and a since that would look
    # valid without it, and without the epoch at all.
    for rid, since, epoch in (("old-epoch", 3, old["epoch"]),
                              ("old-epoch-low", 1, old["epoch"]),
                              ("no-epoch", 3, None)):
        c = await rtlib.Client.open(port)
        req = {"op": "subscribe", "topic": T, "since": since, "id": rid}
        if epoch:
            req["epoch"] = epoch
        r, before = await c.request(req)
        got = await c.frames(3)
        extra = await c.quiet(0.3)
        ck.ok(r == {"op": "subscribed", "topic": T, "seq": 2, "epoch": E2,
                    "id": rid} and not before,
              f"resume ({rid}, since={since}): subscribed with the new epoch",
              f"{r}")
        ck.ok(got[0] == {"op": "gap", "topic": T, "from": 1, "to": 0,
                         "epoch": E2, "reason": "epoch"},
              f"resume ({rid}): gap reason epoch first", f"{got[0]}")
        ck.ok(got[1:] == [{"op": "message", "topic": T, "seq": s,
                           "data": {"after": s}} for s in (1, 2)]
              and not extra,
              f"resume ({rid}): then all of the new stream, 1..2",
              f"{got[1:]} {extra}")
        await c.close()
    ck.done()


rtlib.run(before if mode == "before" else after)
