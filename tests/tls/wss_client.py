#!/usr/bin/python3
"""TLS: the python3-websockets client (Debian's package, 10.x) and a raw
ssl socket against `duplex serve --tls-cert ... --tls-key ...`. Run by
tests/scripts/tls_serve.sh with Debian's /usr/bin/python3:

    /usr/bin/python3 wss_client.py CERT_DIR MAIN SMALL SLOW SLOW_PID SLOW_LOG

MAIN: --echo /echo (default limits); SMALL: --max-message 1024; SLOW:
--write-limit 64KiB (SLOW_PID/SLOW_LOG: its pid and stderr file). Every
server uses CERT_DIR/cert.pem; the client trusts only CERT_DIR/ca.pem.
Prints one "ok"/"not ok" line per case and exits 1 if any case failed.
Every wait is bounded.
"""
import asyncio
import os
import socket
import ssl
import sys
import threading
import time
import traceback

from websockets.extensions.permessage_deflate import PerMessageDeflate

sys.dont_write_bytecode = True  # keep the source tree clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "hostile"))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import hx  # noqa: E402  (raw frames and the upgrade request)
from ws_test import MiB, Client, big_text, cases, noise  # noqa: E402

STEP = 15.0  # seconds, any single wait

certs = sys.argv[1]
main_port, small_port, slow_port, slow_pid = (int(a) for a in sys.argv[2:6])
slow_log = sys.argv[6]
CA = os.path.join(certs, "ca.pem")
client = Client(STEP)
recv, echo, close_code_after = client.recv, client.echo, client.close_code_after


def ssl_ctx(tls12=False):
    ctx = ssl.create_default_context(cafile=CA)  # verifies host + chain
    if tls12:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(p, tls12=False, **kw):
    return client.connect(f"wss://localhost:{p}/echo", ssl=ssl_ctx(tls12),
                          **kw)


def tls_version(ws):
    return ws.transport.get_extra_info("ssl_object").version()


CASES, case = cases()


@case("wss echo: text, binary, 1 MiB binary, 1 MiB text (TLS 1.3)")
async def _():
    async with connect(main_port) as ws:
        assert tls_version(ws) == "TLSv1.3", tls_version(ws)
        s = "hello over TLS — ünïcødé 𝄞 ✓"
        m = await echo(ws, s)
        assert isinstance(m, str) and m == s, repr(m)
        b = bytes(range(256))
        m = await echo(ws, b)
        assert isinstance(m, bytes) and m == b
        big = noise(MiB, 1)
        assert await echo(ws, big) == big, "1 MiB binary echo differs"
        bt = big_text(MiB)
        assert await echo(ws, bt) == bt, "1 MiB text echo differs"


@case("wss echo compressed: permessage-deflate negotiated, 1 MiB text")
async def _():
    async with connect(main_port, compression="deflate") as ws:
        assert any(isinstance(e, PerMessageDeflate) for e in ws.extensions), \
            f"extensions: {ws.extensions}"
        bt = big_text(MiB)
        assert await echo(ws, bt) == bt
        b = noise(200000, 2)
        assert await echo(ws, b) == b


@case("close codes are echoed over wss (1000, 4001, 3001)")
async def _():
    # The server echoes the code (RFC 6455 5.5.1), not necessarily the
    # reason.
    for code in (1000, 4001, 3001):
        ws = await connect(main_port)
        await asyncio.wait_for(ws.close(code, "bye bye"), STEP)
        assert ws.close_rcvd is not None, "no close frame from the server"
        assert ws.close_rcvd.code == code, ws.close_rcvd


@case("TLS 1.2 forced on the client: echo works, TLSv1.2 negotiated")
async def _():
    async with connect(main_port, tls12=True) as ws:
        assert tls_version(ws) == "TLSv1.2", tls_version(ws)
        assert await echo(ws, "tls12") == "tls12"
        big = noise(MiB, 3)
        assert await echo(ws, big) == big


@case("over --max-message 1024 over wss: closed with 1009")
async def _():
    async with connect(small_port) as ws:
        ok = noise(1024, 4)
        assert await echo(ws, ok) == ok
        await ws.send(noise(1025, 5))
        code = await close_code_after(ws)
        assert code == 1009, f"closed with {code}"


@case("over --max-message 1024 over wss, compressed: closed with 1009")
async def _():
    async with connect(small_port, compression="deflate") as ws:
        await ws.send(b"a" * 65536)
        code = await close_code_after(ws)
        assert code == 1009, f"closed with {code}"


def vm_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def slow_session(push_cap):
    """A TLS client that upgrades, then pushes 64 KiB echo requests without
    reading. Returns (how, pushed): how is 'rst' when the server dropped it
    while we were pushing."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(STEP)
    raw.connect(("127.0.0.1", slow_port))
    s = ssl_ctx().wrap_socket(raw, server_hostname="localhost")
    key, req = hx.upgrade_request()
    s.sendall(req)
    head, _ = hx.read_head(s)
    assert hx.status_of(head) == 101, head[:80]
    frame = hx.frame(0x2, os.urandom(64 * 1024))
    pushed, how = 0, "cap"
    s.settimeout(5.0)
    try:
        while pushed < push_cap:
            s.sendall(frame)
            pushed += len(frame)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as e:
        how = "rst"
        if isinstance(e, ssl.SSLError) and "EOF" not in str(e) and \
                "reset" not in str(e).lower():
            how = f"ssl error {e}"
    except socket.timeout:
        how = "send-timeout"
    try:
        s.close()
    except OSError:
        pass
    return how, pushed


@case("slow readers over wss (--write-limit 64KiB): each dropped, "
      "memory bounded")
async def _():
    # Three clients reconnect and push until each pushed 32 MiB; the server
    # must drop every connection and its memory must not follow.
    rss0 = vm_rss_kib(slow_pid)
    peak = [rss0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], vm_rss_kib(slow_pid))
            time.sleep(0.02)

    def worker():
        pushed, hows, t0 = 0, [], time.monotonic()
        while pushed < 32 * MiB and time.monotonic() - t0 < 12:
            how, n = slow_session(64 * MiB)
            pushed += n
            hows.append(how)
            if how != "rst":
                break
        return pushed, hows

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        results = await asyncio.gather(*(asyncio.to_thread(worker)
                                         for _ in range(3)))
    finally:
        stop.set()
        sampler.join()
    rss1 = vm_rss_kib(slow_pid)
    sessions = sum(len(h) for _, h in results)
    print(f"#   slow readers: {sessions} connections, "
          f"{sum(p for p, _ in results) >> 20} MiB pushed; server VmRSS "
          f"{rss0} KiB before, peak {peak[0]}, {rss1} after")
    bad = [h for _, h in results if any(x != "rst" for x in h)]
    assert not bad, f"not every slow reader was dropped: {bad}"
    assert all(p >= 32 * MiB for p, _ in results), \
        f"a worker could not push 32 MiB in time: {results}"
    assert peak[0] - rss0 < 48 * 1024, \
        f"server RSS grew {peak[0] - rss0} KiB"
    for _ in range(50):
        with open(slow_log, errors="replace") as f:
            logged = f.read().count("output hard limit exceeded")
        if logged >= sessions:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the server logged {logged} drops for the "
                             f"output hard limit, expected {sessions}")
    async with connect(slow_port) as ws:  # a normal client is still served
        assert await echo(ws, "still here") == "still here"


async def main():
    failed = 0
    for name, fn in CASES:
        try:
            await asyncio.wait_for(fn(), 30)
            print(f"ok - python websockets: {name}", flush=True)
        except Exception as e:  # noqa: BLE001 (report every failure)
            failed += 1
            print(f"not ok - python websockets: {name}: {e!r}", flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
    print(f"wss_client.py: {len(CASES) - failed}/{len(CASES)} passed")
    return 1 if failed else 0


sys.exit(asyncio.run(main()))
