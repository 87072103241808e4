"""Slow consumers against `duplex serve --write-limit 64KiB`: clients that
upgrade, then keep sending 64 KiB echo requests without ever reading the
replies. The server must drop each of them (the client's send is reset)
once its unsent output passes the limit; the clients reconnect and do it
again until each pushed 64 MiB, and the server's memory must not follow
what they push (nor grow with the number of drops). Other clients must
still be served.

usage: slow_reader.py PORT SERVER_PID SERVER_LOG
"""
import os
import socket
import sys
import threading
import time

import hx

port, pid, log_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ck = hx.Checks("slow_reader")
CLIENTS = 4
MSG = 64 * 1024
SESSION_CAP = 128 << 20  # one connection never dropped by now: a failure
WORKER_TOTAL = 64 << 20  # each worker reconnects until it pushed this much
TIME_CAP = 25.0          # per worker
RSS_GROWTH_MAX = 64 << 10  # KiB, while the workers push 4 x 64 MiB

# One masked frame reused for every message: the server cannot tell.
FRAME = hx.frame(0x2, os.urandom(MSG))


def session():
    """One slow reader: upgrade, push until the server drops us. Returns
    (status, pushed, how)."""
    try:
        # A small receive window, so the kernel absorbs little of the echo
        # and the server's own queue is what fills.
        s, st, head, rest = hx.ws_connect(port, rcvbuf=4096)
    except OSError as e:
        return None, 0, f"connect: {e!r}"
    if st != 101:
        s.close()
        return st, 0, "refused"
    s.settimeout(5.0)
    pushed, how = 0, "cap"
    try:
        while pushed < SESSION_CAP:
            s.sendall(FRAME)
            pushed += len(FRAME)
    except (BrokenPipeError, ConnectionResetError):
        how = "rst"
    except socket.timeout:
        # The server stopped reading without closing.
        how = "send-timeout"
    if how != "rst":
        # Not reset while sending: a FIN may be waiting behind the echoes
        # we never read; drain to see how the connection ended.
        _, h, _ = hx.read_until_closed(s, 5.0)
        how += "-then-" + h
    s.close()
    return st, pushed, how


def worker(res):
    t0 = time.monotonic()
    res.update(sessions=0, dropped=0, pushed=0, bad=[])
    while res["pushed"] < WORKER_TOTAL and time.monotonic() - t0 < TIME_CAP:
        st, pushed, how = session()
        res["sessions"] += 1
        res["pushed"] += pushed
        if st == 101 and how == "rst":
            res["dropped"] += 1
        else:
            res["bad"].append((st, pushed >> 10, how))
            if len(res["bad"]) > 3:
                break
    res["secs"] = time.monotonic() - t0


rss0 = hx.vm_rss_kib(pid)
peak = [rss0]
stop = threading.Event()


def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], hx.vm_rss_kib(pid))
        time.sleep(0.02)


sampler = threading.Thread(target=sample)
sampler.start()
results = [dict() for _ in range(CLIENTS)]
threads = [threading.Thread(target=worker, args=(r,)) for r in results]
for t in threads:
    t.start()
for t in threads:
    t.join(TIME_CAP + 30)
time.sleep(0.3)
stop.set()
sampler.join()
rss1 = hx.vm_rss_kib(pid)

total = drops = 0
for i, r in enumerate(results):
    total += r.get("pushed", 0)
    drops += r.get("dropped", 0)
    ck.ok(r.get("sessions", 0) > 0 and not r.get("bad"),
          f"slow reader {i}: each of {r.get('sessions')} connections was "
          f"dropped by the server (reset while pushing); "
          f"{r.get('pushed', 0) >> 20} MiB pushed in {r.get('secs', -1):.1f}s",
          f"not dropped: {r.get('bad')} (status, KiB pushed, how)")
    ck.ok(r.get("pushed", 0) >= WORKER_TOTAL,
          f"slow reader {i}: pushed its {WORKER_TOTAL >> 20} MiB in time")
growth = peak[0] - rss0
print(f"  info server VmRSS {rss0} KiB before, peak {peak[0]} KiB, "
      f"{rss1} KiB after; clients pushed {total >> 20} MiB over {drops} "
      f"dropped connections")
ck.ok(rss1 > 0, "the server is still running")
ck.ok(growth < RSS_GROWTH_MAX,
      f"server RSS growth {growth} KiB < {RSS_GROWTH_MAX} KiB "
      f"(clients pushed {total >> 20} MiB)")
with open(log_path, errors="replace") as f:
    log = f.read()
slow = log.count("output hard limit exceeded")
ck.ok(slow >= drops > 0,
      f"server logged {slow} drops for the output limit (>= {drops})")
ok, why = hx.echo_ok(port)
ck.ok(ok, "a normal client is still served", why)
ck.done()
