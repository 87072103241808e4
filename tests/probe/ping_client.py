"""A client that pings through the proxy and says whether the pong came.

usage: ping_client.py URL   prints "pong" or "no pong", then closes 1000.
"""
import asyncio
import sys

import websockets


async def main(url):
    async with websockets.connect(url, ping_interval=None) as ws:
        waiter = await ws.ping(b"are-you-there")
        try:
            await asyncio.wait_for(waiter, 1.5)
            print("pong", flush=True)
        except asyncio.TimeoutError:
            print("no pong", flush=True)
        await ws.close(1000)


asyncio.run(main(sys.argv[1]))
