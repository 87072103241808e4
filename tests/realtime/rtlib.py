"""Helpers for the duplex.v1 channel tests (tests/scripts/realtime_*.sh):
a JSON client over python3-websockets, the HTTP API, raw upgrades (to see
the status and headers of a refused or accepted handshake), JWTs made by
hand (HS256 with hmac, RS256 with `openssl dgst`), and /metrics parsing.

Every check prints one line (hx.Checks, shared with tests/hostile); any
failure makes the script exit 1.
"""
import asyncio
import base64
import hashlib
import hmac
import http.client as httpc
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "hostile"))
import hx  # noqa: E402  (Checks, frames, vm_rss_kib)
import websockets  # noqa: E402

HOST = "127.0.0.1"
Checks = hx.Checks


# ---- HTTP API ---------------------------------------------------------------

def http(port, method, path, body=None, headers=None, timeout=10.0):
    """One request on a fresh connection. Returns (status, headers as a
    dict with lower-case names, body bytes)."""
    c = httpc.HTTPConnection(HOST, port, timeout=timeout)
    try:
        h = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


class Api:
    """A keep-alive connection to the HTTP API (one per thread)."""

    def __init__(self, port, key=None, timeout=10.0):
        self.port, self.key = port, key
        self.c = httpc.HTTPConnection(HOST, port, timeout=timeout)

    def request(self, method, path, body=None):
        h = {"Content-Type": "application/json"}
        if self.key:
            h["Authorization"] = f"Bearer {self.key}"
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        data = r.read()
        return r.status, data

    def publish(self, topic, data):
        """Returns the parsed answer ({"topic", "seq", "epoch"}); raises on a
        status other than 200."""
        st, body = self.request("POST", "/api/publish",
                                {"topic": topic, "data": data})
        if st != 200:
            raise RuntimeError(f"/api/publish {topic}: {st} {body[:200]!r}")
        return json.loads(body)

    def close(self):
        self.c.close()


def metrics(port):
    """GET /metrics. Returns (status, text)."""
    st, _, body = http(port, "GET", "/metrics")
    return st, body.decode("utf-8", "replace")


METRIC_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^{}]*\})? '
    r'(-?[0-9.]+(?:[eE][-+]?[0-9]+)?|[-+]Inf|NaN)$')


def parse_metrics(text):
    """Prometheus text format. Returns (samples, bad lines): samples maps
    'name{labels}' (exactly as written) to a float."""
    samples, bad = {}, []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        if not m:
            bad.append(line)
            continue
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples, bad


def metric(port, key):
    _, text = metrics(port)
    return parse_metrics(text)[0].get(key)


# ---- raw upgrades ------------------------------------------------------------

def raw_upgrade(port, path="/ws", headers=(), host=None, timeout=5.0):
    """Sends an upgrade request with extra header lines [(name, value)].
    Returns (status, head text, socket): the caller closes the socket."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1",
             f"Host: {host or f'{HOST}:{port}'}",
             "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in headers]
    s = socket.create_connection((HOST, port), timeout=timeout)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head, _ = hx.read_head(s)
    st = hx.status_of(head)
    if st == 101 and hx.header(head, "Sec-WebSocket-Accept") != hx.accept_of(key):
        st = -101
    return st, head.decode("latin-1"), s


def upgrade_status(port, path="/ws", headers=(), host=None):
    """The status of an upgrade (101, 401, 403 ...) and the response head;
    the connection is closed."""
    st, head, s = raw_upgrade(port, path, headers, host)
    s.close()
    return st, head


# ---- JWTs --------------------------------------------------------------------

def b64u(b):
    if isinstance(b, str):
        b = b.encode()
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt_part(obj):
    return b64u(json.dumps(obj, separators=(",", ":")))


def jwt_hs256(claims, secret, header=None):
    h = jwt_part(header or {"alg": "HS256", "typ": "JWT"})
    p = jwt_part(claims)
    key = secret.encode() if isinstance(secret, str) else secret
    sig = hmac.new(key, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64u(sig)}"


def jwt_rs256(claims, private_key_pem_path, header=None):
    h = jwt_part(header or {"alg": "RS256", "typ": "JWT"})
    p = jwt_part(claims)
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", private_key_pem_path],
        input=f"{h}.{p}".encode(), capture_output=True, check=True).stdout
    return f"{h}.{p}.{b64u(sig)}"


def jwt_none(claims):
    return f"{jwt_part({'alg': 'none', 'typ': 'JWT'})}.{jwt_part(claims)}."


# ---- the duplex.v1 client ------------------------------------------------------

class Closed(Exception):
    pass


class Client:
    """One /ws connection speaking duplex.v1 (websockets, asyncio)."""

    def __init__(self, ws):
        self.ws = ws
        self.hello = None

    @classmethod
    async def open(cls, port, path="/ws", query="", hello=True, **kw):
        kw.setdefault("subprotocols", ["duplex.v1"])
        kw.setdefault("open_timeout", 10)
        kw.setdefault("max_size", 64 << 20)
        uri = f"ws://{HOST}:{port}{path}{query}"
        ws = await websockets.connect(uri, **kw)
        c = cls(ws)
        if hello:
            c.hello = await c.recv()
            if c.hello.get("op") != "hello":
                raise RuntimeError(f"first frame is not hello: {c.hello}")
        return c

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, (str, bytes))
                           else json.dumps(obj))

    async def recv(self, timeout=5.0):
        """The next frame as a dict; raises asyncio.TimeoutError or Closed
        (with the close code and reason)."""
        try:
            m = await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as e:
            raise Closed(e.rcvd.code if e.rcvd else 1006,
                         e.rcvd.reason if e.rcvd else "") from None
        return json.loads(m)

    async def request(self, obj, timeout=5.0, skip=("message", "join",
                                                     "leave", "gap")):
        """Sends obj and returns the first reply that is not a topic frame
        (the ack or error); topic frames met on the way are returned too.
        Returns (reply, [skipped frames])."""
        await self.send(obj)
        skipped = []
        deadline = time.monotonic() + timeout
        while True:
            m = await self.recv(max(0.01, deadline - time.monotonic()))
            if m.get("op") in skip:
                skipped.append(m)
                continue
            return m, skipped

    async def frames(self, n, timeout=5.0):
        """Exactly the next n frames (raises on timeout)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            out.append(await self.recv(max(0.01, deadline - time.monotonic())))
        return out

    async def quiet(self, secs=0.3):
        """The frames that arrive within secs (normally none)."""
        out = []
        deadline = time.monotonic() + secs
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(await self.recv(left))
            except asyncio.TimeoutError:
                return out

    async def ping_ok(self, id_="alive", timeout=5.0):
        """True when {"op":"ping"} is answered by its pong (topic frames
        before it are ignored)."""
        try:
            r, _ = await self.request({"op": "ping", "id": id_}, timeout)
        except (Closed, asyncio.TimeoutError):
            return False
        return r == {"op": "pong", "id": id_}

    async def close(self):
        await self.ws.close()


class Raw:
    """A raw /ws client (no permessage-deflate): for a reader that stops
    reading (rcvbuf: a small receive window, so that the server's own queue
    is what fills), or requests sent in one write."""

    def __init__(self, port, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        key = hx.ws_key()
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head, rest = hx.read_head(s)
        if hx.status_of(head) != 101:
            raise RuntimeError(f"upgrade: {head[:80]!r}")
        self.s = s
        self.r = hx.FrameReader(s, rest)

    def send(self, obj):
        self.s.sendall(hx.frame(0x1, json.dumps(obj).encode()))

    def send_all(self, objs):
        """Several requests in one write."""
        self.s.sendall(b"".join(hx.frame(0x1, json.dumps(o).encode())
                                for o in objs))

    def next(self, timeout=5.0):
        """The next JSON frame; ('close', code) for a close frame."""
        op, p = self.r.message(timeout)
        if op == 0x8:
            return ("close", struct.unpack("!H", p[:2])[0] if len(p) >= 2
                    else 1005)
        return json.loads(p)

    def until_quiet(self, quiet=1.0, cap=30.0):
        """Frames until none arrives for `quiet` seconds. Returns (frames,
        how): how is 'quiet', 'eof', 'rst' or ('close', code)."""
        out = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < cap:
            try:
                f = self.next(quiet)
            except socket.timeout:
                return out, "quiet"
            except EOFError:
                return out, "eof"
            except (ConnectionResetError, BrokenPipeError):
                return out, "rst"
            if isinstance(f, tuple):
                return out, f
            out.append(f)
        return out, "cap"


def seqs(frames, topic=None):
    return [f["seq"] for f in frames if f.get("op") == "message" and
            (topic is None or f.get("topic") == topic)]


def run(main):
    """asyncio.run with the exit status of Checks."""
    asyncio.run(main())
