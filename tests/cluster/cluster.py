"""Several `duplex serve --redis` nodes behind HAProxy (issue 7): what
every client received, with Redis and the nodes and the balancer failing.

usage: cluster.py BUILD_DIR WORK_DIR [--dev-single]

Cluster A: redis-server with AOF (appendfsync always), nodes n1 n2 n3,
HAProxy in front (round robin, /healthz checks every 500 ms).
  1 spread    12 clients through HAProxy land on several nodes; 200
              messages per topic on 3 topics, published concurrently with
              the WebSocket op on n1 and POST /api/publish on n2: every
              client gets seq 1..200 of each topic exactly once, in order,
              the same data as acked, so one order per topic everywhere
  2 move      a client leaves n1 at (seq, epoch), 30 messages later it
              resumes on n2 and gets exactly those 30, then live ones; a
              client that missed history+20 gets gap (history) then the
              retained history
  3 redis     redis-server stopped: every node's /healthz is 503
              degraded, publishes fail with `unavailable` (WebSocket and
              HTTP), connections stay open; redis restarted: every node
              200 again, the seqs go on in the same epoch, and the still
              connected subscribers got every acked message once, no gap
  5 kill      the node holding the most of 9 clients is SIGKILLed while
              the two others publish: exactly its clients come back through
              HAProxy with since/epoch, nothing lost or repeated, no gap
  6 haproxy   HAProxy restarted while the survivors publish: every
              client drops, reconnects once, resumes; nothing lost or
              repeated, no gap
Cluster B: redis-server without persistence, nodes m1 m2 (direct).
  4 data loss redis-server restarted empty: live subscribers get gap
              (epoch) with the new epoch, range 1..0, then the new
              messages from seq 1, no duplicate; a client resuming with
              the old epoch gets the same gap and the new history

--dev-single: no Redis; one plain node stands for n1 n2 n3 (HAProxy has it
three times), and only the scenarios one node can pass run (2 and 6, 1
without the spread check): a check of the harness itself. It always exits
1 (a partial run is not a pass).
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
DEV = "--dev-single" in sys.argv[3:]
BIN = os.path.join(BUILD, "src", "app", "duplex")
ck = rtlib.Checks("cluster_redis")
HISTORY = 100  # the default --history


def head(label):
    print(f"-- {label}", flush=True)


def msg(topic, seq, data):
    return {"op": "message", "topic": topic, "seq": seq, "data": data}


async def frames(c, n, timeout):
    """Up to n frames within timeout: (frames, None) or (what came, the
    error: a timeout or a close)."""
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n:
            out.append(await c.recv(max(0.01, deadline - time.monotonic())))
    except Exception as e:
        return out, f"after {len(out)} of {n} frames: {e!r}"
    return out, None


async def landed(nodes, n, timeout=3.0):
    """{node: duplex_websockets} once they add up to n (connections closed
    by the previous scenario may take a moment to leave the gauge)."""
    def counts():
        return {x.name: int(x.gauge("duplex_websockets") or 0) for x in nodes}
    await cl.until(lambda: sum(counts().values()) == n, timeout, 0.1)
    return counts()


# ---- scenario 1 ------------------------------------------------------------------

async def spread(ctx):
    head("1. spread: clients over the nodes, one order per topic everywhere")
    n1, n2, n3, hp = ctx["n1"], ctx["n2"], ctx["n3"], ctx["hp"]
    topics = ["spread:a", "spread:b", "spread:c"]
    subs = await cl.start_subscribers("spread-", 12, lambda a: hp.port, topics)
    counts = await landed([n1] if DEV else [n1, n2, n3], 12)
    if DEV:
        print(f"  (dev: spread not checked; duplex_websockets {counts})")
    else:
        ck.ok(sum(counts.values()) == 12 and
              len([k for k, v in counts.items() if v]) >= 2,
              "12 clients through HAProxy landed on more than one node "
              f"(duplex_websockets per node: {counts})")
    ledger = cl.Ledger(topics)
    pubs = [await cl.WsPub("ws@n1", n1.port).open(),
            cl.HttpPub("http@n2", n2.port)]
    M = 200
    t0 = time.monotonic()
    await cl.publish_mixed(ledger, pubs, topics, M, "spread")
    dt = time.monotonic() - t0
    ck.ok(not ledger.problems and all(
        sorted(ledger.acked[t]) == list(range(1, M + 1)) for t in topics),
        f"{M} x {len(topics)} publishes (WebSocket on n1, HTTP on n2, "
        f"concurrently, {dt:.1f}s): acked seqs are 1..{M} per topic, each "
        "once", f"{ledger.problems[:5]} " + str(
            {t: cl.compact(sorted(ledger.acked[t])) for t in topics}))
    want = {t: (M, None) for t in topics}
    ok = await cl.wait_caught_up(subs, want, 20)
    ck.ok(ok, "every subscriber reached seq 200 on every topic within 20s",
          str(cl.lagging(subs, want)[:4]))
    await asyncio.sleep(0.3)  # anything extra (a duplicate) shows up
    cl.check_clients(ck, "spread", subs, ledger.acked)
    ck.ok(all(s.connects == 1 and not s.errors for s in subs),
          "spread: no client was disconnected or got an error",
          str([(s.name, s.connects, s.errors[:2]) for s in subs
               if s.connects != 1 or s.errors]))
    await cl.stop_all(subs)
    for p in pubs:
        await p.close()


# ---- scenario 2 ------------------------------------------------------------------

async def move(ctx):
    head("2. move: resume on another node with since/epoch")
    n1, n2, n3 = ctx["n1"], ctx["n2"], ctx["n3"]
    T = "move:a"
    http3 = cl.HttpPub("http@n3", n3.port)
    ws3 = await cl.WsPub("ws@n3", n3.port).open()
    ledger = cl.Ledger([T, "move:b"])

    c = await rtlib.Client.open(n1.port)
    r, before = await c.request({"op": "subscribe", "topic": T, "id": 1})
    ck.ok(r.get("op") == "subscribed" and r.get("seq") == 0 and
          isinstance(r.get("epoch"), str) and not before,
          "move: subscribed on n1 to a new topic: seq 0 and an epoch",
          f"{r} {before}")
    E = r.get("epoch")
    for i in range(10):
        await ledger.publish(http3, T, {"i": i, "via": "http@n3"})
    got, err = await frames(c, 10, 10)
    ck.ok(got == [msg(T, s, ledger.acked[T].get(s)) for s in range(1, 11)]
          and sorted(ledger.acked[T]) == list(range(1, 11)),
          "move: 10 messages published on n3 reach the client on n1 as seq "
          "1..10", f"{err} {got[:3]}... acks {sorted(ledger.acked[T])}")
    await c.close()

    K = 30
    for i in range(10, 10 + K):
        await ledger.publish(ws3, T, {"i": i, "via": "ws@n3"})
    c2 = await rtlib.Client.open(n2.port)
    r, before = await c2.request({"op": "subscribe", "topic": T, "since": 10,
                                  "epoch": E, "id": 2})
    ck.ok(r == {"op": "subscribed", "topic": T, "seq": 10 + K, "epoch": E,
                "id": 2} and not before,
          f"move: resubscribed on n2 with since=10 and the epoch: subscribed "
          f"seq {10 + K}, the same epoch, nothing before it", f"{r} {before}")
    replay, err = await frames(c2, K, 10)
    ck.ok(replay == [msg(T, s, ledger.acked[T].get(s))
                     for s in range(11, 11 + K)],
          f"move: the replay is exactly the {K} missed messages 11..{10 + K}",
          f"{err} {rtlib.seqs(replay)} {replay[:2]}")
    http1 = cl.HttpPub("http@n1", n1.port)
    for i in range(10 + K, 15 + K):
        await ledger.publish(http1, T, {"i": i, "via": "http@n1"})
    live, err = await frames(c2, 5, 10)
    extra = await c2.quiet(0.5)
    ck.ok(live == [msg(T, s, ledger.acked[T].get(s))
                   for s in range(11 + K, 16 + K)] and not extra,
          f"move: then the live ones {11 + K}..{15 + K} (published on n1), no "
          "gap, nothing else", f"{err} {live[:2]} extra {extra[:3]}")
    await c2.close()

    # Past the history: gap (history), then the retained messages.
    T2 = "move:b"
    c3 = await rtlib.Client.open(n2.port)
    r, _ = await c3.request({"op": "subscribe", "topic": T2, "id": 3})
    E2 = r.get("epoch")
    for i in range(5):
        await ledger.publish(http1, T2, {"i": i})
    got, err = await frames(c3, 5, 10)
    ck.ok(got == [msg(T2, s, ledger.acked[T2].get(s)) for s in range(1, 6)],
          "move: a second client on n2 gets seq 1..5 (published on n1)",
          f"{err} {got}")
    await c3.close()
    N = HISTORY + 20
    for i in range(5, 5 + N):
        await ledger.publish(http1, T2, {"i": i})
    cur = 5 + N
    ck.ok(sorted(ledger.acked[T2]) == list(range(1, cur + 1))
          and not ledger.problems,
          f"move: {N} (history + 20) more published on n1: seq 6..{cur}",
          f"{ledger.problems[:3]}")
    c4 = await rtlib.Client.open(n3.port)
    r, before = await c4.request({"op": "subscribe", "topic": T2, "since": 5,
                                  "epoch": E2, "id": 4})
    ck.ok(r == {"op": "subscribed", "topic": T2, "seq": cur, "epoch": E2,
                "id": 4} and not before,
          f"move: resubscribed on n3 with since=5: subscribed seq {cur}, same "
          "epoch", f"{r} {before}")
    try:
        g = await c4.recv(5)
    except Exception as e:
        g = {"error": repr(e)}
    if g.get("op") == "gap" and isinstance(g.get("to"), int):
        replay, err = await frames(c4, max(0, cur - g["to"]), 10)
    else:  # no gap: what came is the first of the replay
        replay, err = await frames(c4, cur - 5 - 1, 10)
        replay = [g] + replay
    extra = await c4.quiet(0.4)
    # What n3 says it retains (the client is subscribed there now).
    retained = None
    try:
        st, _, body = rtlib.http(n3.port, "GET", "/api/topics")
        for tp in json.loads(body).get("topics", []):
            if tp.get("topic") == T2:
                retained = tp.get("retained")
    except Exception as e:
        print(f"  (GET /api/topics on n3: {e!r})")
    first = cur - (retained if isinstance(retained, int) else HISTORY) + 1
    ck.ok(isinstance(retained, int) and retained >= HISTORY,
          f"move: GET /api/topics on n3 lists {T2} with retained >= {HISTORY}",
          f"retained={retained}")
    ck.ok(g == {"op": "gap", "topic": T2, "from": 6, "to": first - 1,
                "epoch": E2, "reason": "history"},
          f"move: then gap (history) from 6 to {first - 1} (the first "
          f"retained seq is {first})", f"{g}")
    ck.ok(replay == [msg(T2, s, ledger.acked[T2].get(s))
                     for s in range(first, cur + 1)] and not extra,
          f"move: then the retained {first}..{cur}, in order, nothing else",
          f"{err} {cl.compact(rtlib.seqs(replay))} extra {extra[:2]}")
    await ledger.publish(ws3, T2, {"i": "live"})
    live, err = await frames(c4, 1, 5)
    ck.ok(live == [msg(T2, cur + 1, {"i": "live"})],
          f"move: then live seq {cur + 1} (published on n3)", f"{err} {live}")
    await c4.close()
    for p in (ws3, http1, http3):
        await p.close()


# ---- scenario 3 ------------------------------------------------------------------

def health_all(nodes, want_status, want_body):
    """True when every node answers /healthz with want_status and a JSON
    body whose "status" is want_body."""
    for n in nodes:
        st, body = n.healthz(1.0)
        if st != want_status or not isinstance(body, dict) or \
                body.get("status") != want_body:
            return False
    return True


async def redis_restart(ctx):
    head("3. redis-server stopped and restarted (AOF): nothing lost")
    redis, hp = ctx["redis"], ctx["hp"]
    nodes = [ctx["n1"], ctx["n2"], ctx["n3"]]
    n1, n2 = nodes[0], nodes[1]
    ck.ok(health_all(nodes, 200, "ok"),
          "redis: every node's /healthz is 200 status ok before the fault",
          str([n.healthz() for n in nodes]))
    topics = ["redis:a", "redis:b"]
    subs = await cl.start_subscribers("redis-", 6, lambda a: hp.port, topics)
    ledger = cl.Ledger(topics)
    pubs = [await cl.WsPub("ws@n1", n1.port).open(),
            cl.HttpPub("http@n2", n2.port)]
    await cl.publish_mixed(ledger, pubs, topics, 50, "before")
    ok = await cl.wait_caught_up(subs, {t: (50, None) for t in topics}, 15)
    ck.ok(ok and not ledger.problems, "redis: 50 per topic published and "
          "received before the fault", f"{ledger.problems[:3]}")
    epoch_before = {t: set(ledger.epochs[t]) for t in topics}

    rc = await redis.stop()
    ck.ok(rc == 0, f"redis: redis-server stopped with SIGTERM (exit {rc})")
    t0 = time.monotonic()
    ok = await cl.until(lambda: health_all(nodes, 503, "degraded"), 5, 0.1)
    ck.ok(ok, f"redis: every node's /healthz is 503 status degraded within "
          f"5s (took {time.monotonic() - t0:.1f}s)",
          str([n.healthz() for n in nodes]))
    t0 = time.monotonic()
    try:
        r = await pubs[0].publish("redis:a", {"unacked": "ws"}, timeout=3)
    except Exception as e:
        r = {"exception": repr(e)}
    dt = time.monotonic() - t0
    ck.ok(r.get("op") == "error" and r.get("code") == "unavailable" and dt < 3,
          f"redis: a WebSocket publish on n1 is answered error unavailable "
          f"({dt:.2f}s)", f"{r}")
    t0 = time.monotonic()
    try:
        r = await pubs[1].publish("redis:b", {"unacked": "http"})
    except Exception as e:
        r = {"exception": repr(e)}
    dt = time.monotonic() - t0
    ck.ok(r.get("status") == 503 and r.get("code") == "unavailable" and
          dt < 3, f"redis: POST /api/publish on n2 is answered 503 "
          f"{{\"error\":\"unavailable\"}} ({dt:.2f}s)", f"{r}")
    await asyncio.sleep(1.0)  # a few reconnection attempts
    for i, s in enumerate(subs):
        await s.ping(f"outage-{i}")
    await cl.until(lambda: all(f"outage-{i}" in s.pongs
                               for i, s in enumerate(subs)), 3)
    ck.ok(all(s.connects == 1 and s.connected() and f"outage-{i}" in s.pongs
              for i, s in enumerate(subs)),
          "redis: during the outage every subscriber is still connected and "
          "its ping is answered", str([(s.name, s.connects, s.connected())
                                       for s in subs]))

    await redis.start()
    t0 = time.monotonic()
    ok = await cl.until(lambda: health_all(nodes, 200, "ok"), 15, 0.1)
    ck.ok(ok, f"redis: restarted on the same port and dir; every node's "
          f"/healthz is 200 again within 15s (took {time.monotonic() - t0:.1f}s)",
          str([n.healthz() for n in nodes]))
    await cl.publish_mixed(ledger, pubs, topics, 50, "after", start=50)
    ck.ok(not ledger.problems and all(
        sorted(ledger.acked[t]) == list(range(1, 101)) for t in topics) and
        all(ledger.epochs[t] == epoch_before[t] for t in topics),
        "redis: 50 more per topic after the restart: acked seq 51..100, the "
        "same epoch (nothing was lost)", f"{ledger.problems[:3]} "
        f"{ {t: (cl.compact(sorted(ledger.acked[t])), ledger.epochs[t]) for t in topics} }")
    want = {t: (ledger.top(t), None) for t in topics}
    ok = await cl.wait_caught_up(subs, want, 15)
    ck.ok(ok, "redis: every subscriber reached the last acked seq",
          str(cl.lagging(subs, want)[:4]))
    await asyncio.sleep(0.3)
    cl.check_clients(ck, "redis", subs, ledger.acked)
    ck.ok(all(s.connects == 1 for s in subs),
          "redis: no subscriber was ever disconnected",
          str([(s.name, s.connects, s.drops) for s in subs]))
    await cl.stop_all(subs)
    for p in pubs:
        await p.close()


# ---- scenarios 5 and 6: faults under continuous publishing ----------------------

async def under_fault(label, subs, pubs, topics, per_topic, fault):
    """Publishes per_topic messages per topic through pubs (paced), runs
    fault() once a third is acked, waits for every subscriber to catch up.
    Returns the ledger."""
    ledger = cl.Ledger(topics)
    task = asyncio.create_task(cl.publish_mixed(ledger, pubs, topics,
                                                per_topic, label, pace=0.01))
    total = per_topic * len(topics)
    await cl.until(lambda: ledger.count >= total // 3 or task.done(), 20)
    await fault()
    await asyncio.wait_for(task, 60)
    ck.ok(not ledger.problems and all(
        sorted(ledger.acked[t]) == list(range(1, per_topic + 1))
        for t in topics),
        f"{label}: {per_topic} per topic published through the survivors "
        f"during the fault: acked seq 1..{per_topic}, each once",
        f"{ledger.problems[:3]}")
    want = {t: (ledger.top(t), None) for t in topics}
    ok = await cl.wait_caught_up(subs, want, 20)
    ck.ok(ok, f"{label}: every subscriber reached the last acked seq within "
          "20s", str(cl.lagging(subs, want)[:4]))
    await asyncio.sleep(0.3)
    return ledger


async def kill_node(ctx):
    head("5. a node SIGKILLed: its clients resume through HAProxy")
    nodes, hp = [ctx["n1"], ctx["n2"], ctx["n3"]], ctx["hp"]
    ok = await hp.wait_up(["n1", "n2", "n3"], 10)
    ck.ok(ok, "kill: HAProxy sees n1 n2 n3 UP", str(hp.status()))
    topics = ["kill:a", "kill:b"]
    subs = await cl.start_subscribers("kill-", 9, lambda a: hp.port, topics)
    counts = await landed(nodes, 9)
    # The victim: the node with the most clients (round robin right after
    # the servers came back UP does not always use all three).
    victim = max(nodes, key=lambda n: counts[n.name])
    alive = [n for n in nodes if n is not victim]
    on = counts[victim.name]
    ck.ok(sum(counts.values()) == 9 and on >= 1,
          f"kill: 9 clients through HAProxy, {on} of them on "
          f"{victim.name}, the node to kill (duplex_websockets per node "
          f"{counts})",
          f"haproxy {hp.status()}, sessions {hp.status('scur')}; failed "
          f"attempts {[f for x in subs for f in x.failed_attempts][:4]}")
    pubs = [await cl.WsPub(f"ws@{alive[0].name}", alive[0].port).open(),
            cl.HttpPub(f"http@{alive[1].name}", alive[1].port)]

    async def fault():
        rc = await victim.kill()
        ck.ok(rc == -signal.SIGKILL, f"kill: {victim.name} SIGKILLed "
              f"(status {rc}) while publishing through "
              f"{alive[0].name} and {alive[1].name}")
    ledger = await under_fault("kill", subs, pubs, topics, 150, fault)
    ctx["alive"], ctx["killed"] = alive, victim
    moved = [s for s in subs if s.connects > 1]
    ck.ok(len(moved) == on and all(s.connects == 2 for s in moved),
          f"kill: exactly the {on} clients of {victim.name} reconnected, once "
          "each", str([(s.name, s.connects) for s in subs]))
    cl.check_clients(ck, "kill", subs, ledger.acked)
    await cl.stop_all(subs)
    for p in pubs:
        await p.close()


async def restart_haproxy(ctx):
    head("6. HAProxy restarted: every client drops, reconnects, resumes")
    hp = ctx["hp"]
    n1, n2 = ctx.get("alive", [ctx["n1"], ctx["n2"]])
    alive = ["n1"] if DEV else [n1.name, n2.name]
    ok = await hp.wait_up(alive, 10)
    ck.ok(ok, f"haproxy: HAProxy sees {' '.join(alive)} UP", str(hp.status()))
    topics = ["proxy:a", "proxy:b"]
    subs = await cl.start_subscribers("proxy-", 8, lambda a: hp.port, topics)
    pubs = [await cl.WsPub(f"ws@{n1.name}", n1.port).open(),
            cl.HttpPub(f"http@{n2.name}", n2.port)]

    async def fault():
        rc = await hp.stop()
        ck.ok(rc is not None, f"haproxy: stopped (status {rc})")
        await asyncio.sleep(0.3)
        await hp.start()
    ledger = await under_fault("haproxy", subs, pubs, topics, 150, fault)
    ck.ok(all(s.connects == 2 for s in subs),
          "haproxy: every client was dropped and reconnected once",
          str([(s.name, s.connects) for s in subs]))
    cl.check_clients(ck, "haproxy", subs, ledger.acked)
    await cl.stop_all(subs)
    for p in pubs:
        await p.close()


# ---- scenario 4 ------------------------------------------------------------------

async def data_loss(redis, m1, m2):
    head("4. redis-server restarted without its data: gap (epoch)")
    nodes = [m1, m2]
    ok = await cl.until(lambda: health_all(nodes, 200, "ok"), 10, 0.1)
    ck.ok(ok, "loss: m1 m2 (on a redis-server without persistence) report "
          "healthy", str([n.healthz() for n in nodes]))
    topics = ["loss:a", "loss:b"]
    ports = [m1.port, m2.port]
    subs = []
    for i in range(4):
        subs += await cl.start_subscribers(
            f"loss-{i}-", 1, lambda a, p=ports[i % 2]: p, topics)
    old = cl.Ledger(topics)
    pubs = [await cl.WsPub("ws@m1", m1.port).open(),
            cl.HttpPub("http@m2", m2.port)]
    await cl.publish_mixed(old, pubs, topics, 30, "old")
    E1 = {t: next(iter(old.epochs[t]), None) for t in topics}
    ok = await cl.wait_caught_up(subs, {t: (30, None) for t in topics}, 15)
    ck.ok(ok and not old.problems and all(len(old.epochs[t]) == 1
                                          for t in topics),
          "loss: 30 per topic published (m1 WebSocket, m2 HTTP) and received "
          f"in one epoch per topic {E1}", f"{old.problems[:3]} {old.epochs}")

    rc = await redis.stop()
    ck.ok(rc == 0, f"loss: redis-server stopped (exit {rc})")
    ok = await cl.until(lambda: health_all(nodes, 503, "degraded"), 5, 0.1)
    ck.ok(ok, "loss: both nodes report 503 degraded",
          str([n.healthz() for n in nodes]))
    await redis.start()
    t0 = time.monotonic()
    ok = await cl.until(lambda: health_all(nodes, 200, "ok"), 15, 0.1)
    ck.ok(ok, f"loss: redis-server back, empty: both nodes 200 again "
          f"({time.monotonic() - t0:.1f}s)", str([n.healthz() for n in nodes]))

    new = cl.Ledger(topics)
    await cl.publish_mixed(new, pubs, topics, 20, "new")
    E2 = {t: next(iter(new.epochs[t]), None) for t in topics}
    ck.ok(not new.problems and all(
        sorted(new.acked[t]) == list(range(1, 21)) and
        len(new.epochs[t]) == 1 and E2[t] != E1[t] for t in topics),
        f"loss: 20 per topic published after the loss: acked seq 1..20 in "
        f"a new epoch {E2}", f"{new.problems[:3]} "
        f"{ {t: (cl.compact(sorted(new.acked[t])), new.epochs[t]) for t in topics} }")
    want = {t: (20, E2[t]) for t in topics}
    ok = await cl.wait_caught_up(subs, want, 15)
    ck.ok(ok, "loss: every subscriber reached seq 20 of the new epoch",
          str(cl.lagging(subs, want)[:4]))
    await asyncio.sleep(0.3)

    bad = []
    for s in subs:
        for t in topics:
            st = cl.analyse(s.log[t])
            old_got = st.got.get(E1[t], {})
            new_got = st.got.get(E2[t], {})
            problems = list(st.violations[:3])
            if st.gaps != [(1, 0, E2[t], "epoch")]:
                problems.append(f"gaps {st.gaps}, expected exactly "
                                f"[(1, 0, {E2[t]!r}, 'epoch')]")
            if {q: d[0] for q, d in old_got.items()} != old.acked[t] or \
                    any(len(d) > 1 for d in old_got.values()):
                problems.append(f"old epoch: got {cl.compact(sorted(old_got))}")
            if {q: d[0] for q, d in new_got.items()} != new.acked[t] or \
                    any(len(d) > 1 for d in new_got.values()):
                problems.append(f"new epoch: got {cl.compact(sorted(new_got))}")
            order = [x for x in st.order]
            exp = [(E1[t], q) for q in range(1, 31)] + \
                  [(E2[t], q) for q in range(1, 21)]
            if order != exp:
                problems.append(f"arrival order differs: {order[:3]}...")
            if s.connects != 1:
                problems.append(f"connects={s.connects}")
            bad += [f"{s.name} {t}: {p}" for p in problems]
    ck.ok(not bad, "loss: every live subscriber got old 1..30, then exactly "
          "one gap (epoch) 1..0 with the new epoch, then new 1..20 (data as "
          "acked), no duplicate, never disconnected",
          "\n    " + "\n    ".join(bad[:12]))

    # A client that comes back with the old epoch.
    T = topics[0]
    c = await rtlib.Client.open(m2.port)
    r, before = await c.request({"op": "subscribe", "topic": T, "since": 30,
                                 "epoch": E1[T], "id": 9})
    ck.ok(r == {"op": "subscribed", "topic": T, "seq": 20, "epoch": E2[T],
                "id": 9} and not before,
          "loss: a client resuming with since=30 and the old epoch: "
          "subscribed seq 20 in the new epoch", f"{r} {before}")
    got, err = await frames(c, 21, 10)
    extra = await c.quiet(0.4)
    ck.ok(got == [{"op": "gap", "topic": T, "from": 1, "to": 0,
                   "epoch": E2[T], "reason": "epoch"}] +
          [msg(T, q, new.acked[T].get(q)) for q in range(1, 21)]
          and not extra,
          "loss: then gap (epoch) 1..0 and the new epoch's history 1..20",
          f"{err} {got[:2]} {cl.compact(rtlib.seqs(got))} extra {extra[:2]}")
    await c.close()
    await cl.stop_all(subs)
    for p in pubs:
        await p.close()


# ---- main ----------------------------------------------------------------------

async def stop_node(n):
    try:
        rc = await n.stop()
    except cl.Fatal as e:
        rc = str(e)
    rep = n.sanitizer_report()
    ck.ok(rc == 0 and not rep, f"node {n.name}: exits 0 on SIGTERM, no "
          "sanitizer report", f"exit {rc}: {rep[:5]}\n{cl.tail(n.err, 40)}")


async def scenario(name, coro):
    """Runs one scenario; an exception is a failed check (with its
    traceback), and the following scenarios still run."""
    t0 = time.monotonic()
    try:
        await coro
    except Exception as e:
        import traceback
        traceback.print_exc()
        ck.ok(False, f"{name}: ran to the end", repr(e))
    print(f"-- {name}: {time.monotonic() - t0:.1f}s", flush=True)


async def main():
    if DEV:
        node = cl.Node(WORK, "n1", BIN, None)
        await node.start()
        ctx = {"n1": node, "n2": node, "n3": node}
        hp = cl.Haproxy(WORK, [(k, node.port) for k in ("n1", "n2", "n3")])
        await hp.start()
        ctx["hp"] = hp
        await scenario("spread", spread(ctx))
        await scenario("move", move(ctx))
        await scenario("haproxy", restart_haproxy(ctx))
        await hp.stop()
        await stop_node(node)
        print("dev run: scenarios 3, 4, 5 and the spread check did not run")
        ck.ok(False, "dev run (--dev-single) is not a pass")
        return

    # Cluster A
    redis = cl.Redis(WORK, "redis-a", persistent=True)
    await redis.start()
    print(f"redis-a: port {redis.port} (AOF, appendfsync always)")
    nodes = [cl.Node(WORK, f"n{i}", BIN, redis.url()) for i in (1, 2, 3)]
    for n in nodes:
        await n.start()
        print(f"node {n.name}: port {n.port} --redis {redis.url()}")
    ok = await cl.until(lambda: health_all(nodes, 200, "ok"), 10, 0.1)
    ck.ok(ok, "n1 n2 n3 report /healthz 200 status ok (connected to Redis)",
          str([n.healthz() for n in nodes]))
    hp = cl.Haproxy(WORK, [(n.name, n.port) for n in nodes])
    await hp.start()
    ok = await hp.wait_up(["n1", "n2", "n3"], 10)
    print(f"haproxy: port {hp.port}")
    ck.ok(ok, "HAProxy health checks (/healthz) see n1 n2 n3 UP",
          str(hp.status()))
    ctx = {"redis": redis, "hp": hp, "n1": nodes[0], "n2": nodes[1],
           "n3": nodes[2]}
    await scenario("spread", spread(ctx))
    await scenario("move", move(ctx))
    await scenario("redis", redis_restart(ctx))
    await scenario("kill", kill_node(ctx))
    await scenario("haproxy", restart_haproxy(ctx))
    await hp.stop()
    for n in nodes:
        if n.alive():
            await stop_node(n)
        else:
            rep = n.sanitizer_report()
            ck.ok(not rep, f"node {n.name} (SIGKILLed): no sanitizer report "
                  "before", str(rep[:5]))
    await redis.stop()

    # Cluster B
    redis_b = cl.Redis(WORK, "redis-b", persistent=False)
    await redis_b.start()
    print(f"redis-b: port {redis_b.port} (no persistence)")
    m = [cl.Node(WORK, f"m{i}", BIN, redis_b.url(2)) for i in (1, 2)]
    for n in m:
        await n.start()
        print(f"node {n.name}: port {n.port} --redis {redis_b.url(2)}")
    await scenario("loss", data_loss(redis_b, m[0], m[1]))
    for n in m:
        await stop_node(n)
    await redis_b.stop()


async def amain():
    try:
        await main()
    except cl.Fatal as e:
        ck.ok(False, "the cluster started", str(e))
    ck.done()


if __name__ == "__main__":
    asyncio.run(amain())
