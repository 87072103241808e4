#!/usr/bin/env python3
"""Cluster-wide views over Redis (issue 7): presence and topic counts from
every node, join/leave events across nodes, a dead node's entries expiring,
and both views failing cleanly while Redis is away.

usage: views.py BUILD_DIR WORK_DIR

Two `duplex serve --redis --presence` nodes (n1, n2) and a redis-server
without persistence, all on 127.0.0.1. One line per check.
"""
import asyncio
import json
import os
import signal
import sys
import time

import clusterlib as cl
from clusterlib import rtlib

BUILD, WORK = sys.argv[1], sys.argv[2]
BIN = os.path.join(BUILD, "src", "app", "duplex")
ck = rtlib.Checks("cluster_views")
TOPIC = "room:1"
VIEW_TTL = 15  # seconds a dead node's entries live on (src/pubsub/redis.c)


async def presence(c, topic=TOPIC, ident="p"):
    r, _ = await c.request({"op": "presence", "topic": topic, "id": ident})
    return r


def ids(reply):
    return sorted(m["id"] for m in reply.get("members", []))


def topics(node):
    st, _, body = rtlib.http(node.port, "GET", "/api/topics", timeout=5)
    try:
        return st, json.loads(body)
    except ValueError:
        return st, body


def topic_entry(node, name=TOPIC):
    st, j = topics(node)
    if st != 200:
        return st, None
    for t in j.get("topics", []):
        if t["topic"] == name:
            return st, t
    return st, {}


async def poll(fn, want, timeout, step=0.2):
    """Calls fn() (maybe a coroutine) until it returns want; the last
    value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if asyncio.iscoroutine(v):
            v = await v
        if v == want or time.monotonic() > deadline:
            return v
        await asyncio.sleep(step)


async def main():
    redis = cl.Redis(WORK, "redis", persistent=False)
    await redis.start()
    n1 = cl.Node(WORK, "n1", BIN, redis.url(),
                 ["--presence", "--node-id", "n1", "--redis-ttl", "4s"])
    n2 = cl.Node(WORK, "n2", BIN, redis.url(),
                 ["--presence", "--node-id", "n2", "--redis-ttl", "4s"])
    for n in (n1, n2):
        await n.start()
    ok = await cl.until(lambda: all(n.healthz()[0] == 200 for n in (n1, n2)),
                        10, 0.1)
    ck.ok(ok, "n1 and n2 connected to Redis")
    await key_ttl(n1, redis)

    a = await rtlib.Client.open(n1.port)
    b = await rtlib.Client.open(n2.port)
    r, _ = await a.request({"op": "subscribe", "topic": TOPIC, "id": 1})
    ck.ok(r.get("op") == "subscribed", "a (on n1) subscribed", str(r))
    r, _ = await b.request({"op": "subscribe", "topic": TOPIC, "id": 2})
    ck.ok(r.get("op") == "subscribed", "b (on n2) subscribed", str(r))
    me_b = None
    try:
        j = await a.recv(5)
        me_b = j.get("member", {}).get("id")
        ck.ok(j.get("op") == "join" and me_b and me_b.endswith("@n2"),
              "a (n1) gets the join of b (n2), a member id unique in the "
              "cluster", str(j))
    except asyncio.TimeoutError:
        ck.ok(False, "a (n1) gets the join of b (n2)", "nothing within 5s")
    both = await poll(lambda: _ids(a), 2, 3)
    ck.ok(both == 2, "presence on n1 lists the members of both nodes",
          str(await presence(a)))
    r = await presence(b)
    ck.ok(len(ids(r)) == 2 and me_b in ids(r),
          "presence on n2 lists the same two members", str(r))

    ent = await poll(lambda: _count(n1), (2, 2), 5)
    ck.ok(ent == (2, 2), "/api/topics on n1: 2 subscribers on 2 nodes",
          str(topic_entry(n1)))
    st, t = topic_entry(n2)
    ck.ok(st == 200 and t.get("local_subscribers") == 1 and
          t.get("subscribers") == 2,
          "/api/topics on n2: 2 in all, 1 of them local", str(t))

    r, _ = await b.request({"op": "unsubscribe", "topic": TOPIC, "id": 3})
    try:
        j = await a.recv(5)
        ck.ok(j.get("op") == "leave" and j["member"]["id"] == me_b,
              "a (n1) gets the leave of b (n2)", str(j))
    except asyncio.TimeoutError:
        ck.ok(False, "a (n1) gets the leave of b (n2)", "nothing within 5s")
    one = await poll(lambda: _ids(a), 1, 3)
    ck.ok(one == 1, "presence on n1 no longer lists b", str(one))

    # A node dies: no leave is ever sent, its entries expire.
    c = await rtlib.Client.open(n2.port)
    r, _ = await c.request({"op": "subscribe", "topic": TOPIC, "id": 4})
    got = await a.recv(5)
    ck.ok(got.get("op") == "join", "a gets the join of c (n2)", str(got))
    two = await poll(lambda: _ids(a), 2, 3)
    ck.ok(two == 2, "presence lists a and c", str(two))
    await n2.kill()
    t0 = time.monotonic()
    one = await poll(lambda: _ids(a), 1, VIEW_TTL + 6, 0.5)
    dt = time.monotonic() - t0
    ck.ok(one == 1, f"n2 SIGKILLed: its member is gone from presence on n1 "
          f"within {VIEW_TTL}s + refresh ({dt:.1f}s)", str(one))
    ent = await poll(lambda: _count(n1), (1, 1), 5)
    ck.ok(ent == (1, 1), "and /api/topics counts 1 subscriber on 1 node",
          str(topic_entry(n1)))

    # Redis stuck (SIGSTOP): no answer comes; the node gives up after its
    # command timeout (3 s), says so, and comes back when Redis does.
    r, _ = await a.request({"op": "subscribe", "topic": "stuck:t", "id": 8})
    ck.ok(r.get("op") == "subscribed", "a subscribed to stuck:t", str(r))
    os.kill(redis.p.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    r, _ = await a.request({"op": "publish", "topic": "stuck:t",
                            "data": "maybe", "id": 9}, timeout=10)
    dt = time.monotonic() - t0
    ck.ok(r.get("code") == "unavailable" and dt < 6,
          f"Redis stopped (SIGSTOP): a publish is answered unavailable after "
          f"the command timeout ({dt:.1f}s)", str(r))
    st = await poll(lambda: n1.healthz()[0], 503, 5)
    ck.ok(st == 503, "and /healthz says 503 degraded", str(n1.healthz()))
    os.kill(redis.p.pid, signal.SIGCONT)
    st = await poll(lambda: n1.healthz()[0], 200, 15)
    ck.ok(st == 200, "Redis continued: /healthz 200 again", str(n1.healthz()))
    r, seen = await a.request({"op": "publish", "topic": "stuck:t",
                               "data": "after", "id": 10})
    ck.ok(r.get("op") == "published", "a publish after it is acknowledged",
          str(r))
    got = [m for m in seen if m.get("op") == "message"]
    while not any(m.get("data") == "after" for m in got):
        try:
            m = await a.recv(5)
        except asyncio.TimeoutError:
            break
        if m.get("op") in ("message", "gap"):
            got.append(m)
    seqs = [m.get("seq") for m in got if m.get("op") == "message"]
    datas = [m.get("data") for m in got if m.get("op") == "message"]
    # The unanswered publish may have run once Redis woke up (documented:
    # "unavailable" means not acknowledged, not "not published").
    ok = bool(seqs) and datas in (["after"], ["maybe", "after"]) and \
        seqs == list(range(seqs[0], seqs[0] + len(seqs))) and \
        r.get("seq") == seqs[-1] and all(m.get("op") != "gap" for m in got)
    ck.ok(ok, "the subscriber got 'after' with the acknowledged seq, no gap, "
          "no duplicate (and 'maybe' just before it, if Redis ran it)",
          str(got))

    # Redis away: the views fail cleanly, nothing hangs.
    await redis.stop()
    await cl.until(lambda: n1.healthz()[0] == 503, 10, 0.1)
    r = await presence(a)
    ck.ok(r.get("op") == "error" and r.get("code") == "unavailable",
          "presence while Redis is down: error unavailable", str(r))
    st, j = topics(n1)
    ck.ok(st == 503 and isinstance(j, dict) and j.get("error") == "unavailable",
          "/api/topics while Redis is down: 503 unavailable", str((st, j)))
    ck.ok(await a.ping_ok(), "a is still connected")

    await a.close()
    await c.close()
    await b.close()
    rc = await n1.stop()
    ck.ok(rc == 0 and not n1.sanitizer_report(),
          "n1 exits 0 on SIGTERM, no sanitizer report",
          str(n1.sanitizer_report()[:5]))
    ck.ok(not n2.sanitizer_report(), "n2: no sanitizer report before the kill",
          str(n2.sanitizer_report()[:5]))


async def key_ttl(n1, redis):
    """A topic's keys outlive --redis-ttl only while something keeps them:
    a subscribed topic without publishes keeps its stream (same epoch, no
    gap); a topic nobody subscribes to is gone after the ttl."""
    s = await rtlib.Client.open(n1.port)
    r, _ = await s.request({"op": "subscribe", "topic": "idle:t", "id": 1})
    r1, _ = await s.request({"op": "publish", "topic": "idle:t", "data": 1,
                             "id": 2})
    r2, _ = await s.request({"op": "publish", "topic": "gone:t", "data": 1,
                             "id": 3})
    ck.ok(r.get("op") == "subscribed" and r1.get("seq") == 1 and
          r2.get("seq") == 1, "ttl: idle:t (subscribed) and gone:t (not) "
          "have seq 1", str((r, r1, r2)))
    await asyncio.sleep(7)  # well past the 4 s ttl
    ck.ok(redis.command("EXISTS", "dx:t:gone:t") == ":0",
          "ttl: gone:t's keys expired 4 s after its publish",
          redis.command("PTTL", "dx:t:gone:t"))
    ck.ok(redis.command("EXISTS", "dx:t:idle:t") == ":1",
          "ttl: idle:t's keys are renewed while it has a subscriber",
          redis.command("PTTL", "dx:t:idle:t"))
    r3, seen = await s.request({"op": "publish", "topic": "idle:t",
                                "data": 2, "id": 4})
    msgs = [m for m in seen if m.get("op") in ("message", "gap")]
    while not any(m.get("seq") == 2 for m in msgs):
        try:
            msgs.append(await s.recv(5))
        except asyncio.TimeoutError:
            break
    ck.ok(r3.get("seq") == 2 and
          [(m["op"], m.get("seq")) for m in msgs
           if m.get("seq") != 1] == [("message", 2)],
          "ttl: idle:t goes on at seq 2 in the same epoch, no gap",
          str((r3, msgs)))
    await s.close()


async def _ids(client):
    return len(ids(await presence(client)))


def _count(node):
    st, t = topic_entry(node)
    return (t.get("subscribers"), t.get("nodes")) if t else (st, None)


async def amain():
    try:
        await main()
    except (cl.Fatal, rtlib.Closed, asyncio.TimeoutError) as e:
        ck.ok(False, "ran to the end", repr(e))
    ck.done()


if __name__ == "__main__":
    asyncio.run(amain())
