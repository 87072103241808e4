#!/usr/bin/python3
"""WebSocket clients through a load balancer (tests/scripts/deploy_balancers.sh),
with python3-websockets (Debian's, 10.x) and Debian's /usr/bin/python3:

    balancer_client.py echo PORT N
        N connections to ws://127.0.0.1:PORT/echo, each echoes a text and a
        binary message and closes with 1000.
    balancer_client.py open PORT SRC,XFF [SRC,XFF ...]
        one connection per argument, from source address SRC, with that
        X-Forwarded-For header (none when XFF is empty), all held open
        together; prints "accepted N rejected M" (rejections must be 429)
        and closes them.
    balancer_client.py proxy-untrusted PORT SRC
        a raw TCP peer from SRC that sends a PROXY v1 header and then an
        upgrade request: prints "closed" if the server hung up without an
        answer, or the first line it answered.

Every wait is bounded; exit status 1 on any unexpected error.
"""
import asyncio
import socket
import sys

import websockets
from websockets.exceptions import InvalidStatusCode

STEP = 10.0


async def echo(port, n):
    for i in range(n):
        async with websockets.connect(f"ws://127.0.0.1:{port}/echo",
                                      open_timeout=STEP,
                                      close_timeout=STEP) as ws:
            await ws.send(f"hello {i}")
            got = await asyncio.wait_for(ws.recv(), STEP)
            assert got == f"hello {i}", got
            await ws.send(bytes([i, 0, 255]))
            got = await asyncio.wait_for(ws.recv(), STEP)
            assert got == bytes([i, 0, 255]), got
    print(f"echo: {n} connections echoed text and binary")


async def hold(port, pairs):
    conns, accepted, rejected = [], 0, 0
    try:
        for pair in pairs:
            src, v = pair.split(",", 1)
            headers = {"X-Forwarded-For": v} if v else {}
            try:
                ws = await websockets.connect(
                    f"ws://127.0.0.1:{port}/echo", extra_headers=headers,
                    local_addr=(src, 0), open_timeout=STEP,
                    close_timeout=STEP)
                await ws.send("x")
                assert await asyncio.wait_for(ws.recv(), STEP) == "x"
                conns.append(ws)
                accepted += 1
            except InvalidStatusCode as e:
                if e.status_code != 429:
                    raise
                rejected += 1
    finally:
        for ws in conns:
            await ws.close()
    print(f"accepted {accepted} rejected {rejected}")


def raw(port, src, data):
    s = socket.socket()
    s.settimeout(STEP)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(data)
    try:
        got = s.recv(4096)
    except ConnectionResetError:  # closed with our bytes unread: a RST
        got = b""
    print("closed" if not got else got.split(b"\r\n")[0].decode())


UPGRADE = (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def main():
    cmd, port = sys.argv[1], int(sys.argv[2])
    if cmd == "echo":
        asyncio.run(echo(port, int(sys.argv[3])))
    elif cmd == "open":
        asyncio.run(hold(port, sys.argv[3:]))
    elif cmd == "proxy-untrusted":
        raw(port, sys.argv[3],
            b"PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\n" + UPGRADE)
    elif cmd == "no-proxy":
        raw(port, "127.0.0.1", UPGRADE)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
