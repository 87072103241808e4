"""Shared by the python3-websockets test clients
(tests/interop/websockets_client.py, tests/tls/wss_client.py), imported
with tests/lib on sys.path:

    Client(step)           connect/recv/echo/close_code_after, every wait
                           bounded by step seconds
    noise(n, seed)         n deterministic random bytes
    big_text(n)            exactly n UTF-8 bytes
    cases()                (CASES, case): a list and a decorator that adds
                           (name, fn) to it
"""
import asyncio
import random

import websockets
from websockets.exceptions import ConnectionClosed

MiB = 1024 * 1024


def noise(n, seed):
    return random.Random(seed).randbytes(n)


def big_text(n):
    """Exactly n UTF-8 bytes with 1-, 2-, 3- and 4-byte sequences."""
    unit = "duplex ü € 𝄞 "
    u = len(unit.encode())
    return unit * (n // u) + "x" * (n % u)


class Client:
    def __init__(self, step):
        self.step = step

    def connect(self, url, **kw):
        kw.setdefault("compression", None)
        kw.setdefault("max_size", 32 * MiB)
        kw.setdefault("ping_interval", None)  # no pings of our own unless asked
        kw.setdefault("open_timeout", self.step)
        kw.setdefault("close_timeout", self.step)
        return websockets.connect(url, **kw)

    async def recv(self, ws):
        return await asyncio.wait_for(ws.recv(), self.step)

    async def echo(self, ws, data):
        await ws.send(data)
        return await self.recv(ws)

    async def close_code_after(self, ws):
        """Waits for the server to close; returns the code it sent."""
        try:
            m = await self.recv(ws)
            raise AssertionError(f"expected a close, got a message of {len(m)}")
        except ConnectionClosed as e:
            assert e.rcvd is not None, "connection closed without a close frame"
            return e.rcvd.code


def cases():
    registered = []

    def case(name):
        def add(fn):
            registered.append((name, fn))
            return fn
        return add
    return registered, case
