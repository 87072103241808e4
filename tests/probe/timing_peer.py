#!/usr/bin/python3
"""Timing peers for the --throttle and --jitter checks of record_tool.sh.

  timing_peer.py server [--lifetime S]
      the upstream: binds 127.0.0.1 on a free port, prints the port first;
      binary message -> text "got LEN" (LEN: its size);
      text "big N"   -> a binary message of N random bytes;
      text "seq I T" -> text "seq I UP T2": UP the ms since T (the client's
                        time.monotonic(): one clock for the whole host),
                        T2 its own time.monotonic() when answering;
      and when a connection has ended, prints
      "session PATH: M1 M2 ...; close CODE" (the texts it received, a
      binary one as "binary:LEN", "seq I" as "seq:I", then the close code
      it got).
  timing_peer.py throttle URL SIZE
      prints "up MS" (SIZE bytes sent until "got SIZE" came back) and
      "down MS" ("big SIZE" sent until the SIZE bytes came).
  timing_peer.py order URL N GAP_MS
      sends "seq 0 T" .. "seq N-1 T", GAP_MS apart, while reading the
      answers; prints "order I0 I1 ..." (the answers' I, as they came),
      "up MIN MAX" and "down MIN MAX" (one-way delays, ms).
  timing_peer.py lastwords URL [--wait] [--binary N]
      sends "last-words" and closes with 1000 at once (right after the
      handshake); --wait: first "big 1" and its answer (the upstream is
      open), --binary N: first N random bytes.
A client exits 0, or 4 when the whole exchange took over 15 s.
"""
import argparse
import asyncio
import os
import sys
import time

import websockets


def mono_ms():
    return time.monotonic() * 1000


async def handler(ws, path):
    got = []

    async def answer(msg):  # the messages received before a close still count
        try:
            await ws.send(msg)
        except websockets.ConnectionClosed:
            pass

    try:
        async for msg in ws:
            got.append(f"binary:{len(msg)}" if isinstance(msg, bytes) else
                       ":".join(msg.split()[:2]) if msg.startswith("seq ") else
                       msg)
            if isinstance(msg, bytes):
                await answer(f"got {len(msg)}")
            elif msg.startswith("big "):
                await answer(os.urandom(int(msg.split()[1])))
            elif msg.startswith("seq "):
                _, i, t = msg.split()
                await answer(f"seq {i} {mono_ms() - float(t):.1f} {mono_ms()}")
    except websockets.ConnectionClosed:
        pass
    await ws.wait_closed()
    print(f"session {path}: {' '.join(got)}; close {ws.close_code}", flush=True)


async def server(lifetime):
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as srv:
        print(next(iter(srv.sockets)).getsockname()[1], flush=True)
        await asyncio.sleep(lifetime)


async def throttle(url, size):
    async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
        t = mono_ms()
        await ws.send(os.urandom(size))
        got = await ws.recv()
        assert got == f"got {size}", got
        print(f"up {mono_ms() - t:.0f}", flush=True)
        t = mono_ms()
        await ws.send(f"big {size}")
        got = await ws.recv()
        assert isinstance(got, bytes) and len(got) == size, len(got)
        print(f"down {mono_ms() - t:.0f}", flush=True)
        await ws.close(1000)


async def order(url, n, gap_ms):
    async with websockets.connect(url, ping_interval=None) as ws:

        async def send_all():
            for i in range(n):
                await ws.send(f"seq {i} {mono_ms()}")
                await asyncio.sleep(gap_ms / 1000)

        sender = asyncio.ensure_future(send_all())
        seen, up, down = [], [], []
        for _ in range(n):
            _, i, d_up, t = (await ws.recv()).split()
            down.append(mono_ms() - float(t))
            seen.append(i)
            up.append(float(d_up))
        await sender
        print("order", " ".join(seen))
        print(f"up {min(up):.0f} {max(up):.0f}")
        print(f"down {min(down):.0f} {max(down):.0f}", flush=True)
        await ws.close(1000)


async def lastwords(url, wait, binary):
    async with websockets.connect(url, ping_interval=None) as ws:
        if wait:
            await ws.send("big 1")
            got = await ws.recv()
            assert isinstance(got, bytes) and len(got) == 1, got
        if binary:
            await ws.send(os.urandom(binary))
        await ws.send("last-words")
        await ws.close(1000)
        print(f"closed {ws.close_code}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["server", "throttle", "order", "lastwords"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--lifetime", type=float, default=60)
    ap.add_argument("--wait", action="store_true")
    ap.add_argument("--binary", type=int, default=0)
    a = ap.parse_args()
    if a.mode == "server":
        asyncio.run(server(a.lifetime))
        return 0
    if a.mode == "throttle":
        coro = throttle(a.args[0], int(a.args[1]))
    elif a.mode == "order":
        coro = order(a.args[0], int(a.args[1]), float(a.args[2]))
    else:
        coro = lastwords(a.args[0], a.wait, a.binary)
    try:
        asyncio.run(asyncio.wait_for(coro, 15))
    except asyncio.TimeoutError:
        print("timeout", flush=True)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
