#!/usr/bin/python3
"""A python3-websockets server for tests/scripts/probe_tool.sh.

Binds 127.0.0.1 on a free port (or --port N), prints the port first, logs
one line per event and exits after --lifetime seconds (default 60).
Text "close CODE" closes with CODE; "greet" answers "hello from python";
everything else is echoed with its type.
"""
import argparse
import asyncio
import sys

import websockets


async def handler(ws, *_):
    try:
        async for msg in ws:
            if isinstance(msg, str) and msg.startswith("close "):
                await ws.close(int(msg.split()[1]), "asked")
                return
            if msg == "greet":
                await ws.send("hello from python")
                continue
            await ws.send(msg)
    except websockets.ConnectionClosed:
        pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--lifetime", type=float, default=60)
    a = ap.parse_args()
    async with websockets.serve(handler, "127.0.0.1", a.port) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.sleep(a.lifetime)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
