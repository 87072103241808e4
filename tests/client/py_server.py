#!/usr/bin/python3
"""A python3-websockets server (Debian's package, 10.x, legacy asyncio API)
for `duplex connect` tests (tests/scripts/client_*.sh). Run it with Debian's
/usr/bin/python3:

    /usr/bin/python3 py_server.py [--tls DIR CERT] [--lifetime S]

Binds 127.0.0.1 on a free port, prints the port on the first stdout line,
then one log line per event, and exits by itself after S seconds (60).

Paths:
  /echo            echoes every message with its type
  /binary          sends the binary message 00 01 fe ff
  /echo-check?n=N  sends N messages, text and binary in turn, checks they
                   come back alike, logs "echo-check ok N", closes 1000
  /deflate         requires permessage-deflate (400 without the offer),
                   logs "deflate <Sec-WebSocket-Extensions>", echoes
  /proto           picks the SECOND subprotocol offered, sends "protocol P"
  /close4001       sends "hi", then closes with 4001 "bye"
  /403 /301        non-101 answers
"""
import asyncio
import http
import ssl
import sys
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.exceptions import ConnectionClosed


def log(line):
    print(line, flush=True)


async def process_request(path, headers):
    p = urlsplit(path).path
    if p == "/403":
        return http.HTTPStatus.FORBIDDEN, [], b"forbidden\n"
    if p == "/301":
        return (http.HTTPStatus.MOVED_PERMANENTLY,
                [("Location", "ws://127.0.0.1:1/elsewhere")], b"")
    if p == "/deflate" and "permessage-deflate" not in headers.get(
            "Sec-WebSocket-Extensions", ""):
        log("deflate refused: no offer")
        return http.HTTPStatus.BAD_REQUEST, [], b"permessage-deflate needed\n"
    return None


def select_second(client_protocols, server_protocols):
    return client_protocols[1] if len(client_protocols) > 1 else None


async def echo(ws, p):
    async for m in ws:
        kind = "binary" if isinstance(m, bytes) else "text"
        log(f"message {p} {kind} {len(m)}")
        await ws.send(m)


async def echo_check(ws, n):
    sent = []
    for i in range(n):
        m = bytes([i, 0xff, 0, i]) if i % 2 else f"text {i} \u00e9"
        sent.append(m)
        await ws.send(m)
    for i in range(n):
        got = await asyncio.wait_for(ws.recv(), 20)
        if type(got) is not type(sent[i]) or got != sent[i]:
            log(f"echo-check FAIL message {i + 1}: {got!r}")
            await ws.close(1011, "mismatch")
            return
    log(f"echo-check ok {n}")
    await ws.close(1000, "checked")


async def handler(ws, path):
    parts = urlsplit(path)
    p = parts.path
    n = int(parse_qs(parts.query).get("n", ["3"])[0])
    ext = ws.response_headers.get("Sec-WebSocket-Extensions", "-")
    log(f"open {p} proto={ws.subprotocol or '-'} ext={ext}")
    try:
        if p == "/echo":
            await echo(ws, p)
        elif p == "/deflate":
            log(f"deflate {ext}")
            await echo(ws, p)
        elif p == "/binary":
            await ws.send(b"\x00\x01\xfe\xff")
            await ws.wait_closed()
        elif p == "/echo-check":
            await echo_check(ws, n)
        elif p == "/proto":
            await ws.send(f"protocol {ws.subprotocol or '-'}")
            await ws.wait_closed()
        elif p == "/close4001":
            await ws.send("hi")
            await ws.close(4001, "bye")
        else:
            await ws.close(1008, "no such path")
    except ConnectionClosed:
        pass
    log(f"close {p} {ws.close_code} '{ws.close_reason or ''}'")


async def main():
    args = sys.argv[1:]
    ctx = None
    lifetime = 60.0
    while args:
        a = args.pop(0)
        if a == "--tls":
            d, cert = args.pop(0), args.pop(0)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(f"{d}/{cert}", f"{d}/key.pem")
        elif a == "--lifetime":
            lifetime = float(args.pop(0))
        else:
            sys.exit(f"py_server: unknown argument {a}")
    async with websockets.serve(
            handler, "127.0.0.1", 0, ssl=ctx,
            process_request=process_request,
            subprotocols=["p1", "p2", "p3"],
            select_subprotocol=select_second,
            compression="deflate") as server:
        log(str(server.sockets[0].getsockname()[1]))
        await asyncio.sleep(lifetime)


if __name__ == "__main__":
    asyncio.run(main())
