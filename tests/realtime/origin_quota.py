"""Origins and connection quotas on /ws (docs/protocol.md sections 1 and
10, `duplex serve --help`).

usage: origin_quota.py PORT_DEFAULT STDERR_DEFAULT PORT_ORIGIN PORT_PER_IP3
                       PORT_MAXCONN5
  PORT_DEFAULT   no --origin: same-origin pages only (the log is checked)
  PORT_ORIGIN    --origin http://good.example
  PORT_PER_IP3   --max-per-ip 3
  PORT_MAXCONN5  --max-connections 5
"""
import sys
import time

import rtlib

port, errlog, port_o = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
port_ip, port_max = int(sys.argv[4]), int(sys.argv[5])
ck = rtlib.Checks("origin_quota")
ORIGIN_KEY = 'duplex_rejections_total{reason="origin"}'


def status(p, origin=None, host=None):
    hdrs = [("Origin", origin)] if origin is not None else []
    return rtlib.upgrade_status(p, headers=hdrs, host=host)


async def origins():
    m0 = rtlib.metric(port, ORIGIN_KEY)
    host = f"127.0.0.1:{port}"
    st, head = status(port, "http://evil.example")
    ck.ok(st == 403, "default (same-origin): Origin http://evil.example with "
          f"Host {host} -> 403 before the upgrade", f"{st} {head[:80]!r}")
    time.sleep(0.2)
    with open(errlog, errors="replace") as f:
        log = f.read()
    ck.ok("http://evil.example" in log and "--origin" in log,
          "  ... and stderr says which Origin was refused and how to allow "
          "it", log[-300:])
    ck.ok(rtlib.metric(port, ORIGIN_KEY) == m0 + 1,
          f"  ... counted in {ORIGIN_KEY}")
    st, _ = status(port, f"http://{host}")
    ck.ok(st == 101, f"default: Origin http://{host} (the Host) -> 101",
          f"{st}")
    st, _ = status(port, f"http://localhost:{port}", host=f"localhost:{port}")
    ck.ok(st == 101, "default: Origin matching another Host spelling "
          "(localhost) -> 101", f"{st}")
    st, _ = status(port)
    ck.ok(st == 101, "default: no Origin (not a browser) -> 101", f"{st}")
    for o in (f"http://127.0.0.1:{port + 1}", f"http://{host}.evil.example",
              "null", f"http://evil.example/{host}"):
        st, _ = status(port, o)
        ck.ok(st == 403, f"default: Origin {o} -> 403", f"{st}")

    # With --origin, only the listed one.
    st, _ = status(port_o, "http://good.example")
    ck.ok(st == 101, "--origin http://good.example: that Origin -> 101",
          f"{st}")
    for o in ("http://evil.example", f"http://127.0.0.1:{port_o}",
              "https://good.example", "http://good.example.evil.example"):
        st, _ = status(port_o, o)
        ck.ok(st == 403, f"--origin http://good.example: Origin {o} -> 403",
              f"{st}")
    st, _ = status(port_o)
    ck.ok(st == 101, "--origin list: no Origin -> 101", f"{st}")


async def quota(p, limit, over_status, flag):
    held = []
    for i in range(limit):
        c = await rtlib.Client.open(p)
        held.append(c)
    ck.ok(all([await c.ping_ok() for c in held]),
          f"{flag}: {limit} connections open and served")
    st, head = status(p)
    ck.ok(st == over_status,
          f"{flag}: connection {limit + 1} -> {over_status}",
          f"{st} {head[:80]!r}")
    st, _, _ = rtlib.http(p, "GET", "/healthz")
    ck.ok(st == 200, f"{flag}: plain HTTP (/healthz) is not counted", f"{st}")
    await held.pop().close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        st, _ = status(p)
        if st == 101:
            break
        time.sleep(0.05)
    ck.ok(st == 101, f"{flag}: after one closes, a new one -> 101", f"{st}")
    for c in held:
        await c.close()


async def main():
    await origins()
    await quota(port_ip, 3, 429, "--max-per-ip 3")
    await quota(port_max, 5, 503, "--max-connections 5")
    ck.done()


rtlib.run(main)
