#!/usr/bin/env python3
"""SNI with several certificates, for tests/scripts/tls_serve.sh:

    sni_check.py PORT PID LOG DIR

The server at PORT (process PID, stderr in LOG) runs with
    --tls-cert DIR/a.pem --tls-key DIR/a.key --tls-cert DIR/b.pem ...
where a.pem is for a.test and b.pem for *.b.test (both self-signed, so
DIR/ca.pem, the two concatenated, is the trust store). DIR/b2.pem and
DIR/b2.key are a new certificate for *.b.test with another serial.

Checks which certificate each server name gets (a.test -> A, x.b.test ->
B, X.B.TEST -> B, no SNI -> A, unknown.test -> A, b.test -> A: a wildcard
is one whole label), a wss echo verified against each name, then SIGHUP
with b.pem/b.key replaced by b2: x.b.test gets the new serial while a
connection opened before keeps echoing; then a second SIGHUP with b.key
not matching b.pem is logged and changes nothing. Prints "ok - ..." per check and
exits 1 if any failed. Standard library only.
"""
import base64
import os
import shutil
import signal
import socket
import ssl
import sys
import time

PORT, PID, LOG, DIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
failed = []


def check(name, cond, detail=""):
    print(("ok - " if cond else "not ok - ") + name + ("" if cond else ": " + detail))
    if not cond:
        failed.append(name)


def serial_of_pem(path):
    from subprocess import check_output
    out = check_output(["openssl", "x509", "-in", path, "-noout", "-serial"])
    return int(out.decode().strip().split("=", 1)[1], 16)


def serial_of_der(der):
    """The serial of a DER certificate, parsed by openssl (no third-party
    modules here)."""
    from subprocess import run
    out = run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
              input=der, capture_output=True, check=True).stdout
    return int(out.decode().strip().split("=", 1)[1], 16)


def connect(name, verify=True):
    """A TLS socket to the server with SNI name (None: no SNI)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(os.path.join(DIR, "ca.pem"))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=name)


def served_serial(name):
    with connect(name, verify=False) as s:
        return serial_of_der(s.getpeercert(binary_form=True))


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError("connection closed")
        b += chunk
    return b


def ws_open(name):
    s = connect(name)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /echo HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (name, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += recv_exact(s, 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError("no 101: %r" % head[:40])
    return s


def ws_echo(s, text):
    data = text.encode()
    assert len(data) < 126
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(data)]) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
    h = recv_exact(s, 2)
    if h[0] != 0x81 or h[1] >= 126:
        raise RuntimeError("unexpected frame header %r" % h)
    return recv_exact(s, h[1]).decode()


def sighup_log(size):
    """Sends SIGHUP; what the server logged past byte `size` of LOG once a
    reload line ("reloaded" or "TLS:") is there (10 s at most)."""
    os.kill(PID, signal.SIGHUP)
    line = ""
    for _ in range(100):
        with open(LOG, "rb") as f:
            f.seek(size)
            line = f.read().decode(errors="replace")
        if "reloaded" in line or "TLS:" in line:
            break
        time.sleep(0.1)
    return line


serial_a = serial_of_pem(os.path.join(DIR, "a.pem"))
serial_b = serial_of_pem(os.path.join(DIR, "b.pem"))
serial_b2 = serial_of_pem(os.path.join(DIR, "b2.pem"))

for name, want, label in [("a.test", serial_a, "A"), ("x.b.test", serial_b, "B"),
                          ("X.B.Test", serial_b, "B"), (None, serial_a, "A"),
                          ("unknown.test", serial_a, "A"),
                          ("b.test", serial_a, "A"), ("y.x.b.test", serial_a, "A")]:
    try:
        got = served_serial(name)
        check("SNI %s gets certificate %s" % (name or "(none)", label), got == want,
              "serial %x, want %x" % (got, want))
    except Exception as e:  # noqa: BLE001 (any failure is a failed check)
        check("SNI %s gets certificate %s" % (name or "(none)", label), False, repr(e))

for name in ["a.test", "x.b.test"]:
    try:
        with ws_open(name) as s:
            got = ws_echo(s, "hello " + name)
        check("wss echo verified as %s" % name, got == "hello " + name, got)
    except Exception as e:  # noqa: BLE001
        check("wss echo verified as %s" % name, False, repr(e))

# SIGHUP with the second certificate replaced, a connection open across it.
try:
    old = ws_open("x.b.test")
    before = ws_echo(old, "before")
    size = os.path.getsize(LOG)
    shutil.copy(os.path.join(DIR, "b2.key"), os.path.join(DIR, "b.key"))
    shutil.copy(os.path.join(DIR, "b2.pem"), os.path.join(DIR, "b.pem"))
    line = sighup_log(size)
    check("SIGHUP: the server logs the reload", "TLS certificate reloaded" in line, line)
    got = served_serial("x.b.test")
    check("after SIGHUP x.b.test gets the new certificate (serial %x)" % serial_b2,
          got == serial_b2, "serial %x" % got)
    got = served_serial("a.test")
    check("after SIGHUP a.test still gets certificate A", got == serial_a, "%x" % got)
    after = ws_echo(old, "after")
    check("a wss connection opened before SIGHUP still echoes",
          before == "before" and after == "after", "%r %r" % (before, after))
    old.close()
    with ws_open("x.b.test") as s:
        got = ws_echo(s, "new")
    check("a new wss echo verified as x.b.test after SIGHUP", got == "new", got)
except Exception as e:  # noqa: BLE001
    check("SIGHUP reload of the SNI certificates", False, repr(e))

# All or nothing: a second pair whose key does not match fails the reload,
# which is logged in one line naming the file, and the old set stays.
try:
    size = os.path.getsize(LOG)
    shutil.copy(os.path.join(DIR, "a.key"), os.path.join(DIR, "b.key"))
    line = sighup_log(size)
    bad = [ln for ln in line.splitlines() if "TLS:" in ln]
    check("SIGHUP with a mismatched second key: one line naming the file",
          len(bad) == 1 and "b.key does not match" in bad[0] and
          "reloaded" not in line, line)
    check("and the old set stays (x.b.test: serial %x)" % serial_b2,
          served_serial("x.b.test") == serial_b2)
    check("and a.test still gets certificate A", served_serial("a.test") == serial_a)
except Exception as e:  # noqa: BLE001
    check("a failed SIGHUP reload keeps the old set", False, repr(e))

sys.exit(1 if failed else 0)
