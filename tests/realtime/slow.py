"""Slow consumers (`--slow-consumer`, docs/protocol.md sections 5 and 10):
a subscriber stops reading (a raw socket with a small receive window)
while the HTTP API publishes tens of MB to its topic.

  skip      the server's memory stays bounded; when the client reads
            again it gets what was queued, and "dropped" gaps for what was
            skipped (one each time its queue drained, so maybe several):
            every seq is delivered once or inside exactly one gap, in seq
            order; a resubscribe with since gets what is still in the
            history (if that replay is cut for the output limits, the rest
            is a "dropped" gap and the client resubscribes again)
  conflate  when the client reads again, the latest value arrives; the
            replaced ones are inside "dropped" gaps, as for skip
  drop      (the default) the connection is closed (1008, or 1006 when
            the close frame cannot be written), and counted in
            duplex_dropped_connections_total{reason="slow_consumer"}

usage: slow.py skip PORT PID HISTORY
       slow.py conflate PORT
       slow.py drop PORT
"""
import sys
import threading
import time

import rtlib
from rtlib import hx

mode, port = sys.argv[1], int(sys.argv[2])
ck = rtlib.Checks(f"slow-{mode}")
PAD = "x" * (50 << 10)  # 50 KiB per message


def subscribe_raw(topic):
    c = rtlib.Raw(port, rcvbuf=4096)
    hello = c.next()
    c.send({"op": "subscribe", "topic": topic, "id": 1})
    r = c.next()
    if hello.get("op") != "hello" or r.get("op") != "subscribed":
        raise RuntimeError(f"{hello} {r}")
    return c


def publish_many(topic, n, secs_cap=8.0, at=None, fn=None):
    """n messages of 50 KiB via the HTTP API (stops early at secs_cap, so a
    paused reader is not also cut by the server's write-stall timer); calls
    fn() after message `at`. Returns the number published."""
    api = rtlib.Api(port)
    t0 = time.monotonic()
    k = 0
    for k in range(1, n + 1):
        api.publish(topic, {"n": k, "pad": PAD})
        if k == at:
            fn()
        if time.monotonic() - t0 > secs_cap:
            break
    api.close()
    return k


def accounted(frames, topic, n):
    """docs 10: every seq 1..n is delivered once, in order, or inside
    exactly one "dropped" gap; gaps and messages interleave in seq order.
    Returns None when that holds, else what breaks it (short: no data)."""
    nxt = 1
    for f in frames:
        if f.get("topic") != topic:
            continue
        if f.get("op") == "message":
            if f.get("seq") != nxt:
                return f"message seq {f.get('seq')} where {nxt} was due"
            nxt += 1
        elif f.get("op") == "gap":
            to = f.get("to")
            if (f.get("reason") != "dropped" or f.get("from") != nxt or
                    not isinstance(to, int) or to < nxt):
                return f"gap {f} where from={nxt} was due"
            nxt = to + 1
    return None if nxt == n + 1 else f"seqs 1..{nxt - 1} accounted of 1..{n}"


def skip():
    pid, history = int(sys.argv[3]), int(sys.argv[4])
    T = "slow:skip"
    c = subscribe_raw(T)
    # Warm up (the first allocations of a topic, the HTTP path), then
    # measure from there.
    rtlib.Api(port).publish("slow:warm", {"pad": PAD})
    rss0 = hx.vm_rss_kib(pid)
    peak = [rss0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], hx.vm_rss_kib(pid))
            time.sleep(0.01)

    th = threading.Thread(target=sample)
    th.start()
    # After 5 MiB, allocator caches and ASan's quarantine are warm: a
    # bounded server does not grow after that.
    warm = []
    n = publish_many(T, 640, at=100, fn=lambda: warm.append(peak[0]))
    time.sleep(0.3)
    stop.set()
    th.join()
    growth = (peak[0] - rss0) >> 10
    late = (peak[0] - warm[0]) >> 10 if warm else 0
    pushed = n * len(PAD) >> 20
    print(f"  info published {n} x 50 KiB = {pushed} MiB; server VmRSS "
          f"{rss0 >> 10} MiB before, {warm and warm[0] >> 10} MiB after 5 "
          f"MiB, peak {peak[0] >> 10} MiB")
    ck.ok(n >= 300, f"{pushed} MiB published to a paused subscriber")
    ck.ok(growth < 16, f"the server's memory stays bounded: +{growth} MiB "
          f"while {pushed} MiB went to a reader that does not read")
    ck.ok(warm and late < 4,
          f"  ... and flat after the first 5 MiB: +{late} MiB while "
          f"{pushed - 5} MiB more were published")

    frames, how = c.until_quiet(1.5)
    sq = rtlib.seqs(frames)
    gaps = [f for f in frames if f.get("op") == "gap"]
    ck.ok(how == "quiet", "the paused subscriber was not disconnected",
          f"{how}")
    ck.ok(sq and sq[0] == 1 and gaps and len(sq) < n,
          f"reading again: what was queued first (from seq 1), and "
          f"{len(gaps)} \"dropped\" gap(s) for the {n - len(sq)} skipped",
          f"{sq[:3]} .. {sq[-3:]}, gaps {gaps[:3]}")
    bad = accounted(frames, T, n)
    ck.ok(bad is None, f"every seq 1..{n} is delivered once, in order, or "
          "inside exactly one dropped gap; nothing after seq " + str(n), bad)
    last = sq[-1] if sq else 0
    if how != "quiet":
        return  # disconnected: already a failure, nothing more to resume
    # Resume: unsubscribe, then subscribe with since = the last seq held.
    try:
        c.send({"op": "unsubscribe", "topic": T, "id": 2})
        c.send({"op": "subscribe", "topic": T, "since": last, "id": 3})
        frames, how = c.until_quiet(1.0)
    except OSError as e:
        frames, how = [], repr(e)
    ops = [f.get("op") for f in frames]
    r = frames[1] if len(frames) > 1 else {}
    first = n - history + 1
    start = max(first, last + 1)
    lost = ["gap"] if last + 1 < first else []
    ck.ok(ops[:2 + len(lost)] == ["unsubscribed", "subscribed"] + lost and
          r.get("seq") == n,
          "unsubscribe + subscribe since=<last>: unsubscribed, subscribed "
          f"(seq {n})" + (", gap" if lost else ""), f"{ops[:4]} {r}")
    if lost:
        g = frames[2] if len(frames) > 2 else {}
        ck.ok(g.get("reason") == "history" and g.get("from") == last + 1 and
              g.get("to") == first - 1,
              f"  ... gap {{reason: history, from: {last + 1}, "
              f"to: {first - 1}}}", f"{g}")
    # A replay past the soft output limit is cut: the rest is a "dropped"
    # gap, and the client subscribes again with since (docs 4, 10).
    got, cuts = rtlib.seqs(frames), 0
    while cuts <= history and how == "quiet":
        cut = [f for f in frames
               if f.get("op") == "gap" and f.get("reason") == "dropped"]
        if not cut:
            break
        cuts += 1
        ok = (cut[-1].get("from") == (got[-1] + 1 if got else start) and
              cut[-1].get("to") == n)
        if not ok:
            ck.ok(False, "a cut replay's gap covers the rest", f"{cut}")
            break
        c.send({"op": "subscribe", "topic": T,
                "since": cut[-1]["from"] - 1, "id": 4 + cuts})
        frames, how = c.until_quiet(0.5)
        got += rtlib.seqs(frames)
    ck.ok(got == list(range(start, n + 1)),
          f"  ... then the retained messages {start}..{n}, once each, in "
          f"order (the replay was cut {cuts} time(s))",
          f"{got[:3]}..{got[-3:]} ({len(got)})")
    c.s.close()
    m = rtlib.metric(port, "duplex_slow_skipped_total")
    ck.ok(m is not None and m >= n - len(sq),
          f"duplex_slow_skipped_total counts the skipped ({m})")


def conflate():
    T = "slow:tick"
    c = subscribe_raw(T)
    n = publish_many(T, 200)  # 10 MiB
    frames, how = c.until_quiet(1.5)
    msgs = [f for f in frames if f.get("op") == "message"]
    sq = rtlib.seqs(msgs)
    ck.ok(how == "quiet", "the paused subscriber was not disconnected",
          f"{how}")
    ck.ok(sq and sq[-1] == n and msgs[-1]["data"]["n"] == n,
          f"reading again: the last message is the latest value (seq {n})",
          f"{sq[-3:]}")
    ck.ok(sq == sorted(set(sq)) and len(sq) < n,
          f"seqs strictly increase; {n - len(sq)} older values were "
          "conflated away", f"{len(sq)} of {n}")
    # docs 5: "without a gap in between they are also consecutive".
    jumps = [(a, b) for a, b in zip(sq, sq[1:]) if b != a + 1]
    gaps = [f for f in frames if f.get("op") == "gap"]
    ck.ok(not jumps or len(gaps) >= len(jumps),
          "a jump in seqs is announced by a gap notice (docs 5, 6)",
          f"jumps {jumps[:3]}, gaps {gaps[:3]}")
    bad = accounted(frames, T, n)
    ck.ok(bad is None, f"every seq 1..{n} is delivered once, in order, or "
          "inside exactly one dropped gap (the replaced values)", bad)
    c.s.close()
    m = rtlib.metric(port, "duplex_slow_conflated_total")
    ck.ok(m is not None and m > 0, f"duplex_slow_conflated_total = {m}")


def drop():
    T = "slow:drop"
    key = 'duplex_dropped_connections_total{reason="slow_consumer"}'
    m0 = rtlib.metric(port, key)
    c = subscribe_raw(T)
    healthy = subscribe_raw(T)
    got_healthy = []

    def read_healthy():
        while len(got_healthy) < 100:
            try:
                f = healthy.next(10.0)
            except (OSError, EOFError):
                return
            if isinstance(f, tuple):
                return
            got_healthy.append(f)

    th = threading.Thread(target=read_healthy)
    th.start()
    n = publish_many(T, 100)  # 5 MiB
    th.join(20)
    frames, how = c.until_quiet(2.0, cap=20)
    sq = rtlib.seqs(frames)
    ended = how in ("eof", "rst") or how == ("close", 1008)
    ck.ok(ended, "the slow subscriber is disconnected (close 1008, or the "
          "connection reset: 1006 to a browser)", f"{how}, {len(sq)} messages")
    ck.ok(sq == list(range(1, len(sq) + 1)) and len(sq) < n,
          f"  ... after the {len(sq)} messages queued before the limit, in "
          "order")
    ck.ok(rtlib.seqs(got_healthy) == list(range(1, n + 1)),
          f"a subscriber that reads got all {n} messages in order",
          f"{len(got_healthy)}")
    m1 = rtlib.metric(port, key)
    ck.ok(m1 == m0 + 1, f"{key} +1", f"{m0} -> {m1}")
    c.s.close()
    healthy.s.close()


{"skip": skip, "conflate": conflate, "drop": drop}[mode]()
ck.done()
