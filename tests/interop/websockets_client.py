#!/usr/bin/python3
"""Interop: the python3-websockets client (Debian's package, 10.x) against
`duplex serve --echo /echo`. Run by tests/scripts/interop_serve.sh with
Debian's /usr/bin/python3 (the one that has the package):

    /usr/bin/python3 websockets_client.py PORT SMALL_PORT ORIGIN_PORT

PORT: default limits; SMALL_PORT: --max-message 1024; ORIGIN_PORT:
--origin http://good.example. Prints one "ok"/"not ok" line per case and
exits 1 if any case failed. Every wait is bounded.
"""
import asyncio
import os
import sys
import time
import traceback

from websockets.exceptions import InvalidStatusCode
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory, PerMessageDeflate)
from websockets.legacy.client import WebSocketClientProtocol

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
from ws_test import MiB, Client, big_text, cases, noise  # noqa: E402

STEP = 20.0  # seconds, any single wait

port, small_port, origin_port = (int(a) for a in sys.argv[1:4])
client = Client(STEP)
recv, echo, close_code_after = client.recv, client.echo, client.close_code_after


def url(p):
    return f"ws://127.0.0.1:{p}/echo"


class CountingProtocol(WebSocketClientProtocol):
    """Counts the bytes received on the wire (to see compression)."""
    bytes_in = 0

    def data_received(self, data):
        self.bytes_in += len(data)
        super().data_received(data)


def connect(p, **kw):
    kw.setdefault("create_protocol", CountingProtocol)
    return client.connect(url(p), **kw)


CASES, case = cases()


@case("text echo (UTF-8)")
async def _():
    async with connect(port) as ws:
        s = "hello, duplex — ünïcødé 𝄞 ✓"
        m = await echo(ws, s)
        assert isinstance(m, str) and m == s, repr(m)


@case("binary echo (all 256 byte values)")
async def _():
    async with connect(port) as ws:
        b = bytes(range(256))
        m = await echo(ws, b)
        assert isinstance(m, bytes) and m == b


@case("empty text and empty binary messages are echoed with their type")
async def _():
    async with connect(port) as ws:
        assert await echo(ws, "") == ""
        assert await echo(ws, b"") == b""


for deflate in (False, True):
    label = " (compressed)" if deflate else ""
    comp = "deflate" if deflate else None

    @case(f"fragmented text message (iterable) is echoed whole{label}")
    async def _(comp=comp):
        async with connect(port, compression=comp) as ws:
            m = await echo(ws, ["frag-one ", "frag-two ", "", "frag-three ✓"])
            assert m == "frag-one frag-two frag-three ✓", repr(m)

    @case(f"fragmented binary message (async iterable) is echoed whole{label}")
    async def _(comp=comp):
        b = noise(100000, 1)

        async def parts():
            for lo, hi in ((0, 1), (1, 4096), (4096, 4096), (4096, len(b))):
                yield b[lo:hi]
                await asyncio.sleep(0)
        async with connect(port, compression=comp) as ws:
            m = await echo(ws, parts())
            assert m == b, "echoed bytes differ from the fragments sent"

    # The default --max-message is 16 MiB: that size must be echoed.
    @case(f"16 MiB binary message is echoed{label}")
    async def _(comp=comp):
        async with connect(port, compression=comp) as ws:
            b = noise(16 * MiB, 2)
            m = await echo(ws, b)
            assert len(m) == len(b) and m == b, "16 MiB binary echo differs"

    @case(f"16 MiB text message is echoed{label}")
    async def _(comp=comp):
        async with connect(port, compression=comp) as ws:
            s = big_text(16 * MiB)
            assert len(s.encode()) == 16 * MiB
            m = await echo(ws, s)
            assert isinstance(m, str) and m == s, "16 MiB text echo differs"


@case("permessage-deflate is negotiated and the server compresses its echo")
async def _():
    async with connect(port, compression="deflate") as ws:
        ext = ws.response_headers.get("Sec-WebSocket-Extensions")
        print(f"#   negotiated: Sec-WebSocket-Extensions: {ext}")
        assert ext and ext.split(";")[0].strip() == "permessage-deflate", ext
        assert len(ws.extensions) == 1
        assert isinstance(ws.extensions[0], PerMessageDeflate)
        s = "the quick brown fox jumps over the lazy dog. " * 25000
        for i in range(3):  # context takeover keeps both sides in step
            before = ws.bytes_in
            m = await echo(ws, s + str(i))
            wire = ws.bytes_in - before
            assert m == s + str(i)
            assert wire < 64 * 1024, (
                f"echo of {len(s)} compressible bytes took {wire} bytes on "
                "the wire: the server did not compress it")
        b = noise(300000, 3)
        assert await echo(ws, b) == b


@case("permessage-deflate with no context takeover and 10-bit windows")
async def _():
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True,
        server_max_window_bits=10, client_max_window_bits=10)
    async with connect(port, extensions=[factory]) as ws:
        ext = ws.response_headers.get("Sec-WebSocket-Extensions")
        print(f"#   negotiated: Sec-WebSocket-Extensions: {ext}")
        params = [p.strip() for p in ext.split(";")]
        assert params[0] == "permessage-deflate", ext
        assert "server_no_context_takeover" in params, ext
        assert any(p in ("server_max_window_bits=9", "server_max_window_bits=10")
                   for p in params), ext
        for i in range(3):
            s = f"{i} " + big_text(200000)
            assert await echo(ws, s) == s


@case("no subprotocol configured: none is selected")
async def _():
    async with connect(port) as ws:
        assert ws.subprotocol is None
    async with connect(port, subprotocols=["chat", "superchat"]) as ws:
        assert ws.subprotocol is None, ws.subprotocol
        assert "Sec-WebSocket-Protocol" not in ws.response_headers
        assert await echo(ws, "still works") == "still works"


@case("ping from the client gets a pong with the same payload")
async def _():
    async with connect(port) as ws:
        # websockets resolves the waiter only for a pong carrying the same
        # payload as the ping.
        for payload in (b"ping-123", b"", noise(125, 5)):
            waiter = await ws.ping(payload)
            await asyncio.wait_for(waiter, STEP)


@case("close handshake: the server echoes the client's close code")
async def _():
    for code, reason in ((1000, "bye"), (4000, "app reason ✓"), (3001, "")):
        async with connect(port) as ws:
            await asyncio.wait_for(ws.close(code=code, reason=reason), STEP)
            assert ws.close_code == code, (
                f"closed with {code}, server answered {ws.close_code}")


@case("message over --max-message closes with 1009")
async def _():
    async with connect(small_port) as ws:
        ok = noise(1024, 9)
        assert await echo(ws, ok) == ok  # at the limit: echoed
        await ws.send(noise(2000, 9))
        code = await close_code_after(ws)
        assert code == 1009, code
    # Compressed: 2000 bytes that deflate to a few; the limit applies after
    # decompression.
    async with connect(small_port, compression="deflate") as ws:
        assert ws.extensions, "permessage-deflate not negotiated"
        await ws.send("a" * 2000)
        code = await close_code_after(ws)
        assert code == 1009, code
    # Fragmented: no fragment is over the limit, the message is.
    async with connect(small_port) as ws:
        await ws.send([noise(700, 1), noise(700, 2), noise(700, 3)])
        code = await close_code_after(ws)
        assert code == 1009, code


@case("--origin allow-list: 403 for another Origin, 101 for the listed one "
      "and for none")
async def _():
    try:
        async with connect(origin_port, origin="http://evil.example"):
            raise AssertionError("connected with Origin: http://evil.example")
    except InvalidStatusCode as e:
        assert e.status_code == 403, e.status_code
    async with connect(origin_port, origin="http://good.example") as ws:
        assert await echo(ws, "good") == "good"
    async with connect(origin_port) as ws:  # no Origin header by default
        assert await echo(ws, "none") == "none"


async def main():
    failed = 0
    for name, fn in CASES:
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(fn(), 30)
            print(f"ok - websockets: {name} "
                  f"({(time.monotonic() - t0) * 1000:.0f} ms)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            detail = "".join(traceback.format_exception_only(type(e), e))
            print(f"not ok - websockets: {name}: {detail.strip()}", flush=True)
    print(f"websockets_client: {len(CASES) - failed}/{len(CASES)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(asyncio.wait_for(main(), 55)))
