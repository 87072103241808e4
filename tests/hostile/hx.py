"""Helpers for the hostile-client tests: raw sockets, a hand-written
WebSocket upgrade and frame codec, and a tiny check/report harness.

Raw sockets on purpose: a real client library would refuse to misbehave
(trickle bytes, ignore pings, stop reading), which is exactly what these
tests need to do. Every check prints one line; any failure makes the
process exit 1 at the end (see Checks.done).
"""
import base64
import hashlib
import os
import socket
import struct
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOST = "127.0.0.1"


class Checks:
    """Counts outcomes; every assertion is printed, failures are kept."""

    def __init__(self, name):
        self.name = name
        self.failed = []
        self.passed = 0

    def ok(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print(f"  ok   {what}", flush=True)
        else:
            self.failed.append(what)
            print(f"  FAIL {what}" + (f": {detail}" if detail else ""),
                  flush=True)
        return cond

    def done(self):
        print(f"{self.name}: {self.passed} passed, {len(self.failed)} failed",
              flush=True)
        sys.exit(1 if self.failed or self.passed == 0 else 0)


def connect(port, timeout=5.0, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect, so the advertised window stays small.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((HOST, port))
    return s


def read_head(s, limit=65536):
    """Reads up to the end of an HTTP response head. Returns (head, rest)
    or (data, None) when the peer closed first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            d = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            return buf, None
        if not d:
            return buf, None
        buf += d
        if len(buf) > limit:
            return buf, None
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def status_of(head):
    try:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ", 2)
        if not parts[0].startswith("HTTP/1."):
            return None
        return int(parts[1])
    except (IndexError, ValueError):
        return None


def header(head, name):
    for line in head.split(b"\r\n")[1:]:
        k, sep, v = line.partition(b":")
        if sep and k.strip().lower() == name.lower().encode():
            return v.strip().decode("latin-1")
    return None


def read_until_closed(s, timeout):
    """Reads until EOF or RST. Returns (data, how, seconds) with how one of
    'eof', 'rst', 'timeout'."""
    t0 = time.monotonic()
    data = b""
    while True:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            return data, "timeout", time.monotonic() - t0
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            return data, "timeout", time.monotonic() - t0
        except (ConnectionResetError, BrokenPipeError):
            return data, "rst", time.monotonic() - t0
        if not d:
            return data, "eof", time.monotonic() - t0
        data += d


def http_exchange(port, raw, timeout=5.0):
    """Sends raw bytes (ignoring a send that fails because the server
    already answered and closed), then reads everything until the server
    closes. Returns (status, head, body, how)."""
    s = connect(port, timeout)
    try:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, how, _ = read_until_closed(s, timeout)
    finally:
        s.close()
    if b"\r\n\r\n" in data:
        i = data.index(b"\r\n\r\n") + 4
        head, body = data[:i], data[i:]
    else:
        head, body = data, b""
    return status_of(head), head, body, how


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_of(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def upgrade_request(path="/echo", key=None, method="GET", extra=""):
    key = key or ws_key()
    return key, (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n").encode()


def ws_connect(port, path="/echo", timeout=5.0, rcvbuf=None):
    """Upgrades a raw socket. Returns (sock, status, head, rest): status 101
    means open (and the accept key was right), anything else the refusal."""
    s = connect(port, timeout, rcvbuf)
    key, req = upgrade_request(path)
    s.sendall(req)
    head, rest = read_head(s)
    st = status_of(head)
    if st == 101 and header(head, "Sec-WebSocket-Accept") != accept_of(key):
        st = -101  # a 101 with a wrong accept key is a failure too
    return s, st, head, rest


def frame(opcode, payload=b"", fin=True, mask=True):
    """A client frame (masked unless told otherwise)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + mask_bytes(payload, key)


def mask_bytes(payload, key):
    if not payload:
        return b""
    # XOR as one big integer: fast enough for megabytes in pure Python.
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(
        n, "big")


def close_frame(code=1000, reason=b""):
    return frame(0x8, struct.pack("!H", code) + reason)


class FrameReader:
    """Parses server frames (unmasked) from a socket; keeps leftovers."""

    def __init__(self, sock, buf=b""):
        self.s = sock
        self.buf = buf or b""

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("frame read timed out")
            self.s.settimeout(left)
            d = self.s.recv(65536)
            if not d:
                raise EOFError("peer closed")
            self.buf += d

    def next(self, timeout=5.0):
        """Returns (fin, opcode, payload); raises EOFError, socket.timeout,
        ConnectionResetError or ValueError (a masked server frame)."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            raise ValueError("server frame is masked")
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n, deadline)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def message(self, timeout=5.0):
        """The next data message (pings and pongs skipped). Returns
        (opcode, payload)."""
        deadline = time.monotonic() + timeout
        while True:
            fin, op, p = self.next(max(0.01, deadline - time.monotonic()))
            if op in (0x9, 0xA):
                continue
            return op, p


def echo_ok(port, payload=b"still serving", timeout=5.0):
    """Opens a fresh connection, echoes one text message, closes cleanly.
    Returns (True, '') or (False, why)."""
    try:
        s, st, head, rest = ws_connect(port, timeout=timeout)
    except OSError as e:
        return False, f"connect: {e!r}"
    try:
        if st != 101:
            return False, f"upgrade status {st}: {head[:80]!r}"
        s.sendall(frame(0x1, payload))
        r = FrameReader(s, rest)
        op, p = r.message(timeout)
        if (op, p) != (0x1, payload):
            return False, f"echo got op={op} {p[:40]!r}"
        s.sendall(close_frame(1000))
        op, p = r.message(timeout)
        if op != 0x8:
            return False, f"expected close, got op={op}"
        return True, ""
    except (OSError, EOFError, ValueError) as e:
        return False, f"echo: {e!r}"
    finally:
        s.close()


def vm_rss_kib(pid):
    """The process's resident set in KiB; -1 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def fd_count(pid):
    """Open descriptors of the process; -1 when it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1
