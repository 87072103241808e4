"""Many idle WebSocket connections held by one `duplex serve`: N clients
upgrade (all must get a correct 101), the server's memory per connection is
printed, an extra client echoes while they are held, then every client
sends a close frame and must get close 1000 back followed by the server's
FIN, and the server's descriptor count must return to where it started.

A hand-written upgrade on asyncio streams (python-websockets costs too much
per connection for 10,000 in a few seconds). Connections are opened and
closed in bounded-concurrency waves.

usage: concurrency_client.py PORT SERVER_PID N
"""
import asyncio
import resource
import struct
import sys
import time

import hx

port, pid, N = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ck = hx.Checks("concurrency")
WAVE = 500          # connections in flight at once
STEP_TIMEOUT = 20.0  # for any one connect/upgrade or close
FD_SLACK = 4        # fds the server may legitimately keep beyond its start

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = hard
if soft < N + 100:
    print(f"concurrency: RLIMIT_NOFILE {soft} is too low for {N} connections")
    sys.exit(1)


async def upgrade():
    r, w = await asyncio.open_connection(hx.HOST, port)
    key, req = hx.upgrade_request("/echo")
    w.write(req)
    head = await r.readuntil(b"\r\n\r\n")
    st = hx.status_of(head)
    if st == 101 and hx.header(head, "Sec-WebSocket-Accept") != hx.accept_of(key):
        st = -101
    return r, w, st


async def read_frame(r):
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await r.readexactly(8))[0]
    if b1 & 0x80:
        raise ValueError("masked server frame")
    return b0 & 0x0F, await r.readexactly(n)


async def close_one(conn, stats):
    r, w = conn
    try:
        w.write(hx.close_frame(1000))
        while True:
            op, p = await read_frame(r)
            if op == 0x9:  # a server ping while held: fine, skip it
                stats["pings"] += 1
                continue
            break
        if op == 0x8 and p[:2] == b"\x03\xe8":
            stats["close_echoed"] += 1
        else:
            stats["bad_close"] += 1
        if await r.read(1) == b"":
            stats["eof"] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError):
        stats["errors"] += 1
    finally:
        w.close()


async def bounded(coros, limit):
    sem = asyncio.Semaphore(limit)

    async def run(c):
        async with sem:
            try:
                return await asyncio.wait_for(c, STEP_TIMEOUT)
            except (OSError, asyncio.TimeoutError,
                    asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                return e

    return await asyncio.gather(*(run(c) for c in coros))


async def main():
    fd0, rss0 = hx.fd_count(pid), hx.vm_rss_kib(pid)
    print(f"  info server start: {fd0} fds, VmRSS {rss0} KiB")

    t0 = time.monotonic()
    results = await bounded((upgrade() for _ in range(N)), WAVE)
    conns, statuses, errors = [], {}, []
    for res in results:
        if isinstance(res, tuple):
            r, w, st = res
            statuses[st] = statuses.get(st, 0) + 1
            if st == 101:
                conns.append((r, w))
            else:
                w.close()
        else:
            errors.append(repr(res))
    t_open = time.monotonic() - t0
    ck.ok(len(conns) == N,
          f"{len(conns)} of {N} upgrades got a correct 101 in {t_open:.1f}s",
          f"statuses {statuses}, {len(errors)} errors, e.g. {errors[:3]}")

    await asyncio.sleep(0.5)  # let the server settle before measuring
    fd1, rss1 = hx.fd_count(pid), hx.vm_rss_kib(pid)
    if not ck.ok(fd1 >= 0, "the server is still running"):
        return
    per = (rss1 - rss0) * 1024 / max(1, len(conns))
    print(f"  info server holding {len(conns)}: {fd1} fds, VmRSS {rss1} KiB, "
          f"{per:.0f} bytes per connection (sanitizer build: not asserted)")
    ck.ok(fd1 - fd0 >= len(conns),
          f"server holds one fd per connection ({fd1 - fd0} new fds)")

    # An ordinary client is still served while the crowd is held.
    try:
        r, w, st = await asyncio.wait_for(upgrade(), STEP_TIMEOUT)
        w.write(hx.frame(0x1, b"hello from 10001"))
        op, p = await asyncio.wait_for(read_frame(r), STEP_TIMEOUT)
        ck.ok(st == 101 and (op, p) == (0x1, b"hello from 10001"),
              f"an echo works while {len(conns)} are held", f"{st} {op} {p!r}")
        await close_one((r, w), {"pings": 0, "close_echoed": 0, "bad_close": 0,
                                 "eof": 0, "errors": 0})
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        ck.ok(False, f"an echo works while {len(conns)} are held", repr(e))

    t0 = time.monotonic()
    stats = {"pings": 0, "close_echoed": 0, "bad_close": 0, "eof": 0,
             "errors": 0}
    await bounded((close_one(c, stats) for c in conns), WAVE * 2)
    t_close = time.monotonic() - t0
    ck.ok(stats["close_echoed"] == N,
          f"{stats['close_echoed']} of {N} close frames echoed with 1000 "
          f"in {t_close:.1f}s", str(stats))
    ck.ok(stats["eof"] == N,
          f"{stats['eof']} of {N} connections then closed by the server (FIN)",
          str(stats))

    # The server closes its side once it reads our FIN: poll, bounded.
    t0 = time.monotonic()
    fd2 = hx.fd_count(pid)
    while fd2 > fd0 + FD_SLACK and time.monotonic() - t0 < 10:
        await asyncio.sleep(0.1)
        fd2 = hx.fd_count(pid)
    rss2 = hx.vm_rss_kib(pid)
    print(f"  info server after closing: {fd2} fds, VmRSS {rss2} KiB")
    ck.ok(0 <= fd2 <= fd0 + FD_SLACK,
          f"server fds back to {fd2} (started at {fd0}) "
          f"{time.monotonic() - t0:.1f}s after the last close")


asyncio.run(main())
ck.done()
