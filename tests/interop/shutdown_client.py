#!/usr/bin/python3
"""Graceful shutdown as a connected client sees it (python3-websockets).

    /usr/bin/python3 shutdown_client.py PORT

Connects to ws://127.0.0.1:PORT/echo, checks one echo, prints "open" and
waits (at most 20 s) for the server to close the connection; prints
"closed CODE" with the code of the server's close frame ("closed none" if
it sent none). The driver sends SIGTERM to the server after "open" and
expects "closed 1012" (duplex serve's default shutdown code: service restart).
"""
import asyncio
import sys

import websockets
from websockets.exceptions import ConnectionClosed


async def main(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/echo",
                                  ping_interval=None, open_timeout=10,
                                  close_timeout=10) as ws:
        await ws.send("before shutdown")
        assert await asyncio.wait_for(ws.recv(), 10) == "before shutdown"
        print("open", flush=True)
        try:
            await asyncio.wait_for(ws.recv(), 20)
            print("unexpected message", flush=True)
            return 1
        except ConnectionClosed as e:
            print(f"closed {e.rcvd.code if e.rcvd else 'none'}", flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]))))
