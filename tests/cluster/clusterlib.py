"""Helpers for the multi-node tests (tests/scripts/cluster_redis.sh): the
processes (redis-server, `duplex serve --redis` nodes, HAProxy), a
reconnecting duplex.v1 subscriber that records every frame it gets,
publishers (the WebSocket op and the HTTP API) that keep the acknowledged
(seq -> data) of every topic, and the checker of what a client received.

The invariant checked for every client and topic (docs/protocol.md
section 6): from its first `subscribed` on, every seq of the current epoch
is either delivered exactly once or inside exactly one `gap`, in order;
a resume with since/epoch continues exactly where the client was.

Every process binds 127.0.0.1; each pid is written to WORK/pids/NAME so
that the shell's exit trap can kill what a killed test left behind.
"""
import asyncio
import csv
import http.client as httpc
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "realtime"))
import rtlib  # noqa: E402  (Client, Api, http, parse_metrics, Checks)
import websockets  # noqa: E402

HOST = "127.0.0.1"
REDIS_SERVER = "/usr/bin/redis-server"
HAPROXY = "/usr/sbin/haproxy"
SANITIZER = ("ERROR: AddressSanitizer", "runtime error", "LeakSanitizer")


class Fatal(Exception):
    """The harness cannot go on (a process did not start ...)."""


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return ""


async def until(cond, timeout, step=0.05):
    """Polls cond() (sync) until it is true; returns it (falsy: timed out)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        await asyncio.sleep(step)


# ---- processes -------------------------------------------------------------

class Proc:
    """One child process, its pid file and its stdout/stderr files."""

    def __init__(self, work, name, argv):
        self.work, self.name, self.argv = work, name, list(argv)
        self.out = os.path.join(work, f"{name}.out")
        self.err = os.path.join(work, f"{name}.err")
        self.pidfile = os.path.join(work, "pids", name)
        self.p = None
        self.starts = 0

    def spawn(self):
        self.starts += 1
        mode = "wb" if self.starts == 1 else "ab"
        with open(self.out, mode) as o, open(self.err, mode) as e:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                      stdout=o, stderr=e)
        os.makedirs(os.path.dirname(self.pidfile), exist_ok=True)
        with open(self.pidfile, "w") as f:
            f.write(f"{self.p.pid}\n")

    def alive(self):
        return self.p is not None and self.p.poll() is None

    async def wait_exit(self, timeout):
        """The exit status, or None if still running after timeout."""
        await until(lambda: self.p.poll() is not None, timeout)
        rc = self.p.poll()
        if rc is not None:
            try:
                os.unlink(self.pidfile)
            except OSError:
                pass
        return rc

    async def signal(self, sig, timeout=15.0):
        """Sends sig (by pid) and waits for the exit; SIGKILL after timeout.
        Returns the exit status (negative: killed by that signal)."""
        if not self.alive():
            return self.p.poll() if self.p else None
        self.p.send_signal(sig)
        rc = await self.wait_exit(timeout)
        if rc is None:
            self.p.kill()
            rc = await self.wait_exit(5)
            raise Fatal(f"{self.name} did not exit within {timeout}s of "
                        f"signal {sig}")
        return rc


class Redis(Proc):
    """redis-server on a fixed port and directory, so a restart comes back
    where the nodes look for it. persistent: AOF with fsync always (every
    acknowledged write survives a SIGTERM); otherwise no persistence at
    all (a restart is a Redis that lost everything)."""

    def __init__(self, work, name, persistent):
        self.port = free_port()
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.persistent = persistent
        argv = [REDIS_SERVER, "--bind", HOST, "--port", str(self.port),
                "--dir", self.dir, "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if persistent else "no",
                "--appendfsync", "always", "--loglevel", "warning"]
        super().__init__(work, name, argv)

    def url(self, db=None):
        return f"redis://{HOST}:{self.port}" + (f"/{db}" if db is not None
                                                  else "")

    def command(self, *args, timeout=2.0):
        """One command in RESP; returns the first reply line (or None)."""
        req = f"*{len(args)}\r\n" + "".join(
            f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        try:
            with socket.create_connection((HOST, self.port), timeout) as s:
                s.sendall(req.encode())
                buf = b""
                while b"\r\n" not in buf:
                    d = s.recv(4096)
                    if not d:
                        break
                    buf += d
                return buf.split(b"\r\n", 1)[0].decode("latin-1")
        except OSError:
            return None

    async def start(self, timeout=10.0):
        if not self.persistent:
            # Belt and braces: nothing on disk to load.
            for f in os.listdir(self.dir):
                p = os.path.join(self.dir, f)
                if os.path.isfile(p):
                    os.unlink(p)
        self.spawn()
        ok = await until(lambda: not self.alive() or
                         self.command("PING") == "+PONG", timeout, 0.05)
        if not self.alive() or not ok:
            raise Fatal(f"redis-server {self.name} did not start on port "
                        f"{self.port}:\n{tail(self.out)}\n{tail(self.err)}")

    async def stop(self):
        """SIGTERM (redis fsyncs the AOF and exits 0)."""
        return await self.signal(signal.SIGTERM, 10.0)


class Node(Proc):
    """`duplex serve --redis URL` on a free port (NAME is the test's and
    HAProxy's name for it)."""

    def __init__(self, work, name, binary, redis_url, extra=()):
        argv = [binary, "serve", "--port", "0", "--print-port",
                "--host", HOST, "--quiet", "--close-timeout", "1s",
                "--rate", "0"]
        if redis_url:
            argv += ["--redis", redis_url]
        argv += list(extra)
        super().__init__(work, name, argv)
        self.port = None

    async def start(self, timeout=15.0):
        self.spawn()

        def port():
            try:
                with open(self.out) as f:
                    line = f.readline().strip()
                return int(line) if line else None
            except (OSError, ValueError):
                return None
        await until(lambda: port() or not self.alive(), timeout)
        self.port = port()
        if not self.port:
            raise Fatal(f"node {self.name} did not start ({' '.join(self.argv)}):"
                        f"\n{tail(self.err)}")

    def sanitizer_report(self):
        t = tail(self.err, 100000)
        return [ln for ln in t.splitlines() if any(s in ln for s in SANITIZER)]

    async def stop(self):
        """SIGTERM; the node must exit 0 within 15 s."""
        return await self.signal(signal.SIGTERM, 15.0)

    async def kill(self):
        return await self.signal(signal.SIGKILL, 5.0)

    def healthz(self, timeout=2.0):
        """(status, parsed JSON body or the raw bytes); (None, error)."""
        try:
            st, _, body = rtlib.http(self.port, "GET", "/healthz",
                                     timeout=timeout)
        except OSError as e:
            return None, repr(e)
        try:
            return st, json.loads(body)
        except ValueError:
            return st, body

    def gauge(self, name):
        try:
            st, text = rtlib.metrics(self.port)
        except OSError:
            return None
        return rtlib.parse_metrics(text)[0].get(name) if st == 200 else None


HAPROXY_CFG = """\
global
    maxconn 2000
    stats socket {sock} mode 600 level admin

defaults
    mode http
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 5s
    timeout tunnel 1h

frontend fe
    bind {host}:{port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 500ms fastinter 500ms downinter 500ms rise 2 fall 2
{servers}
"""


class Haproxy(Proc):
    """HAProxy in front of the nodes: round robin, /healthz checks every
    500 ms, WebSocket tunnels kept for 1 h. Runs in the foreground (-db) as
    the current user; the admin socket tells which servers are UP."""

    def __init__(self, work, servers):
        """servers: [(name, port)]."""
        self.port = free_port()
        self.sock = os.path.join(work, "haproxy.sock")
        self.cfg = os.path.join(work, "haproxy.cfg")
        servers = "\n".join(f"    server {name} {HOST}:{port} check"
                            for name, port in servers)
        with open(self.cfg, "w") as f:
            f.write(HAPROXY_CFG.format(sock=self.sock, host=HOST,
                                       port=self.port, servers=servers))
        super().__init__(work, "haproxy", [HAPROXY, "-db", "-f", self.cfg])

    def status(self, field="status"):
        """{server name: status ('UP', 'DOWN', 'DOWN 1/2' ...)} (or another
        field of `show stat`: "scur" is the current sessions); {} when the
        socket does not answer."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(self.sock)
                s.sendall(b"show stat\n")
                buf = b""
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    buf += d
        except OSError:
            return {}
        text = buf.decode("utf-8", "replace").lstrip("# ")
        out = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == "nodes" and \
                    row.get("svname") not in ("FRONTEND", "BACKEND"):
                out[row["svname"]] = row.get(field, "")
        return out

    async def start(self, timeout=10.0):
        try:
            os.unlink(self.sock)
        except OSError:
            pass
        self.spawn()

        def listening():
            try:
                socket.create_connection((HOST, self.port), 0.5).close()
                return True
            except OSError:
                return False
        ok = await until(lambda: not self.alive() or
                         (listening() and self.status()), timeout)
        if not self.alive() or not ok:
            raise Fatal(f"haproxy did not start on port {self.port}:\n"
                        f"{tail(self.err)}")

    async def wait_up(self, names, timeout=10.0):
        """True once every server in names is UP (and the others not)."""
        def ok():
            st = self.status()
            return st and all(st.get(n) == "UP" for n in names)
        return bool(await until(ok, timeout, 0.1))

    async def stop(self):
        return await self.signal(signal.SIGTERM, 10.0)


# ---- clients -----------------------------------------------------------------

def backoff(attempt):
    """Full jitter, short: this is a test on loopback."""
    return random.uniform(0.02, min(1.0, 0.1 * 2 ** min(attempt, 4)))


class Subscriber:
    """A duplex.v1 client that subscribes to `topics`, and on every
    reconnection (port_of(attempt) gives the port to try) resubscribes with
    since = the last seq it has and the epoch it has. It records everything:
    self.log[topic] is a list of events
        ("req", conn, since, epoch)       a subscribe it sent
        ("sub", conn, seq, epoch)         subscribed
        ("msg", conn, seq, data)          message
        ("gap", conn, from, to, epoch, reason)
    (conn: 1 for the first connection, 2 for the second ...)."""

    def __init__(self, name, port_of, topics):
        self.name = name
        self.port_of = port_of
        self.topics = list(topics)
        self.last = {t: None for t in self.topics}
        self.epoch = {t: None for t in self.topics}
        self.log = {t: [] for t in self.topics}
        self.connects = 0
        self.failed_attempts = []
        self.drops = []
        self.errors = []
        self.other = []
        self.pongs = set()
        self.port = None
        self.ready = asyncio.Event()
        self._stop = False
        self._client = None
        self._task = None

    def start(self):
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self):
        attempt = 0
        while not self._stop:
            port = self.port_of(attempt)
            try:
                c = await rtlib.Client.open(port, open_timeout=3,
                                            close_timeout=1)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # refused, 503 from the proxy, timeout
                attempt += 1
                self.failed_attempts.append(f"{port}: {e!r}")
                await asyncio.sleep(backoff(attempt))
                continue
            self.connects += 1
            conn = self.connects
            self._client, self.port, attempt = c, port, 0
            pending = set(self.topics)
            self.ready.clear()
            try:
                for t in self.topics:
                    req = {"op": "subscribe", "topic": t, "id": f"s{conn}:{t}"}
                    if self.last[t] is not None:
                        req["since"] = self.last[t]
                        if self.epoch[t] is not None:
                            req["epoch"] = self.epoch[t]
                    self.log[t].append(("req", conn, req.get("since"),
                                        req.get("epoch")))
                    await c.send(req)
                while True:
                    self._frame(conn, await c.recv(3600), pending)
            except asyncio.CancelledError:
                raise
            except (rtlib.Closed, OSError, websockets.ConnectionClosed,
                    asyncio.TimeoutError) as e:
                self.drops.append((conn, repr(e)))
            finally:
                self._client = None
            if not self._stop:
                attempt = 1
                await asyncio.sleep(backoff(attempt))

    def _frame(self, conn, f, pending):
        op, t = f.get("op"), f.get("topic")
        if op in ("subscribed", "message", "gap") and t not in self.log:
            self.other.append(f)
            return
        if op == "subscribed":
            self.log[t].append(("sub", conn, f.get("seq"), f.get("epoch")))
            if self.last[t] is None:
                self.last[t], self.epoch[t] = f.get("seq"), f.get("epoch")
            pending.discard(t)
            if not pending:
                self.ready.set()
        elif op == "message":
            s = f.get("seq")
            self.log[t].append(("msg", conn, s, f.get("data")))
            if isinstance(s, int) and (self.last[t] is None or s > self.last[t]):
                self.last[t] = s
        elif op == "gap":
            self.log[t].append(("gap", conn, f.get("from"), f.get("to"),
                                f.get("epoch"), f.get("reason")))
            if f.get("reason") == "epoch":
                self.epoch[t], self.last[t] = f.get("epoch"), f.get("to")
            else:
                if f.get("epoch"):
                    self.epoch[t] = f["epoch"]
                if isinstance(f.get("to"), int):
                    self.last[t] = max(self.last[t] or 0, f["to"])
        elif op == "pong":
            self.pongs.add(f.get("id"))
        elif op == "error":
            self.errors.append(f)
        else:
            self.other.append(f)

    def connected(self):
        return self._client is not None

    async def ping(self, id_):
        """Sends {"op":"ping"}; the pong shows up in self.pongs."""
        if self._client is None:
            return False
        try:
            await self._client.send({"op": "ping", "id": id_})
            return True
        except Exception:
            return False

    def caught_up(self, want):
        """want: {topic: (seq, epoch or None)}."""
        return all(self.last[t] is not None and self.last[t] >= s and
                   (e is None or self.epoch[t] == e)
                   for t, (s, e) in want.items())

    async def stop(self):
        self._stop = True
        c = self._client
        if c is not None:
            try:
                await asyncio.wait_for(c.close(), 2)
            except Exception:
                pass
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass


async def start_subscribers(prefix, n, port_of, topics, timeout=15.0):
    """n subscribers, each subscribed to every topic (subscribed received)
    before this returns. Raises Fatal when they are not."""
    subs = [Subscriber(f"{prefix}{i}", port_of, topics).start()
            for i in range(n)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(s.ready.wait() for s in subs)), timeout)
    except asyncio.TimeoutError:
        bad = [f"{s.name}: connects={s.connects} "
               f"failed={s.failed_attempts[-2:]} errors={s.errors[:2]}"
               for s in subs if not s.ready.is_set()]
        raise Fatal(f"{prefix}: subscribers not subscribed within "
                    f"{timeout}s: {bad}") from None
    return subs


async def stop_all(subs):
    await asyncio.gather(*(s.stop() for s in subs))


class WsPub:
    """Publishes with the WebSocket `publish` op on one node; one request
    at a time, the reply matched by id."""

    def __init__(self, name, port):
        self.name, self.port = name, port
        self.c = None
        self.n = 0

    async def open(self):
        self.c = await rtlib.Client.open(self.port, open_timeout=5,
                                         close_timeout=1)
        return self

    async def publish(self, topic, data, timeout=5.0):
        """The reply: {"op":"published","seq":..} or {"op":"error",..}."""
        self.n += 1
        rid = f"{self.name}-{self.n}"
        await self.c.send({"op": "publish", "topic": topic, "data": data,
                           "id": rid})
        deadline = time.monotonic() + timeout
        while True:
            f = await self.c.recv(max(0.01, deadline - time.monotonic()))
            if f.get("id") == rid:
                return f

    async def close(self):
        if self.c:
            try:
                await asyncio.wait_for(self.c.close(), 2)
            except Exception:
                pass


class HttpPub:
    """Publishes with POST /api/publish on one node (keep-alive, in a
    thread so that the subscribers' loop keeps reading). A connection idle
    for more than 0.5 s is replaced before use; one the node closed anyway
    (found when sending, so the node never saw the request) is replaced and
    the request sent again; a failure after the request was sent is
    reported, never retried (the publish may have happened)."""

    def __init__(self, name, port):
        self.name, self.port = name, port
        self.c = None
        self.used = 0.0

    async def open(self):
        return self

    def _post(self, topic, data):
        body = json.dumps({"topic": topic, "data": data})
        hdrs = {"Content-Type": "application/json"}
        if self.c is not None and time.monotonic() - self.used > 0.5:
            self.c.close()  # idle: the node may be closing it right now
            self.c = None
        for attempt in (1, 2):
            fresh = self.c is None
            if fresh:
                self.c = httpc.HTTPConnection(HOST, self.port, timeout=5)
            try:
                self.c.request("POST", "/api/publish", body, hdrs)
            except OSError:
                self.c.close()
                self.c = None
                if fresh or attempt == 2:
                    raise
                continue
            try:
                r = self.c.getresponse()
                raw = r.read()
                self.used = time.monotonic()
            except (OSError, httpc.HTTPException):
                self.c.close()
                self.c = None
                raise
            if r.getheader("Connection", "").lower() == "close":
                self.c.close()
                self.c = None
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, raw

    async def publish(self, topic, data, timeout=5.0):
        """The reply in the shape of the WebSocket one: published (with the
        epoch the API gives) or error (with the HTTP status)."""
        st, body = await asyncio.to_thread(self._post, topic, data)
        if st == 200 and isinstance(body, dict):
            return {"op": "published", "topic": body.get("topic"),
                    "seq": body.get("seq"), "epoch": body.get("epoch")}
        code = body.get("error") if isinstance(body, dict) else None
        return {"op": "error", "code": code, "status": st, "body": body}

    async def close(self):
        if self.c:
            self.c.close()


class Ledger:
    """The acknowledged publishes: acked[topic][seq] = data, plus every
    anomaly (a seq acknowledged twice, an error reply)."""

    def __init__(self, topics):
        self.acked = {t: {} for t in topics}
        self.epochs = {t: set() for t in topics}
        self.problems = []
        self.count = 0

    async def publish(self, pub, topic, data):
        try:
            r = await pub.publish(topic, data)
        except Exception as e:
            self.problems.append(f"{pub.name} {topic} {data}: {e!r}")
            return None
        if r.get("op") != "published" or not isinstance(r.get("seq"), int):
            self.problems.append(f"{pub.name} {topic} {data}: {r}")
            return r
        s = r["seq"]
        if s in self.acked[topic]:
            self.problems.append(f"{topic}: seq {s} acknowledged twice "
                                 f"({self.acked[topic][s]} and {data})")
        self.acked[topic][s] = data
        if r.get("epoch"):
            self.epochs[topic].add(r["epoch"])
        self.count += 1
        return r

    def top(self, topic):
        return max(self.acked[topic], default=0)


async def publish_mixed(ledger, pubs, topics, per_topic, tag, pace=0.0,
                        start=0):
    """Publishes per_topic messages on every topic: message i of each topic
    goes through pubs[i % len(pubs)]; the publishers run concurrently, so
    that their publishes interleave. data = {"tag", "t", "i", "via"}."""
    async def one(k, pub):
        for i in range(start, start + per_topic):
            if i % len(pubs) != k:
                continue
            for t in topics:
                await ledger.publish(pub, t, {"tag": tag, "t": t, "i": i,
                                              "via": pub.name})
                if pace:
                    await asyncio.sleep(pace)
    await asyncio.gather(*(one(k, p) for k, p in enumerate(pubs)))


# ---- the checker ---------------------------------------------------------------

class Stream:
    """What one client made of one topic (see analyse)."""

    def __init__(self):
        self.pos = None       # the last seq accounted for
        self.epoch = None     # the current epoch
        self.got = {}         # epoch -> {seq: [data, ...]}
        self.order = []       # (epoch, seq) in arrival order
        self.gaps = []        # (from, to, epoch, reason)
        self.violations = []
        self.connections = set()


def analyse(events):
    """Walks one client's events for one topic and checks the invariant:
    from the first `subscribed` on, each seq of the current epoch is
    delivered exactly once or covered by exactly one gap, in order; a
    resume (since, epoch) continues at since; a change of epoch comes as a
    `gap` (reason epoch) whose range starts at 1."""
    st = Stream()
    req_since = None
    need_epoch_gap = False
    for ev in events:
        kind, conn = ev[0], ev[1]
        st.connections.add(conn)
        if kind == "req":
            req_since = ev[2]
            if req_since is not None and req_since != st.pos:
                st.violations.append(
                    f"conn {conn}: resubscribed with since={req_since}, "
                    f"but the stream was at {st.pos} (client bug)")
        elif kind == "sub":
            seq, ep = ev[2], ev[3]
            if not isinstance(seq, int) or not isinstance(ep, str):
                st.violations.append(f"conn {conn}: subscribed without an "
                                     f"integer seq and an epoch: {ev}")
                continue
            if st.pos is None:
                if req_since is not None:
                    st.pos = req_since
                    need_epoch_gap = seq < req_since
                else:
                    st.pos = seq
                st.epoch = ep
            elif req_since is None:
                st.violations.append(f"conn {conn}: resubscribed without since")
                st.pos, st.epoch = seq, ep
            elif ep != st.epoch or seq < st.pos:
                need_epoch_gap = True   # the epoch gap must come next
        elif kind == "msg":
            s = ev[2]
            if need_epoch_gap:
                st.violations.append(f"conn {conn}: message seq {s} where a "
                                     "gap (epoch) was due first")
                need_epoch_gap = False
            if st.pos is None:
                st.violations.append(f"conn {conn}: message seq {s} before "
                                     "any subscribed")
            elif not isinstance(s, int):
                st.violations.append(f"conn {conn}: message without seq")
                continue
            elif s <= st.pos:
                st.violations.append(f"conn {conn}: seq {s} after {st.pos}: "
                                     "duplicate or out of order")
            elif s != st.pos + 1:
                st.violations.append(f"conn {conn}: seqs {st.pos + 1}..{s - 1}"
                                     " neither delivered nor in a gap")
            if st.pos is not None:
                st.pos = max(st.pos, s)
            st.got.setdefault(st.epoch, {}).setdefault(s, []).append(ev[3])
            st.order.append((st.epoch, s))
        elif kind == "gap":
            fr, to, ep, reason = ev[2], ev[3], ev[4], ev[5]
            st.gaps.append((fr, to, ep, reason))
            if not isinstance(fr, int) or not isinstance(to, int):
                st.violations.append(f"conn {conn}: gap without integer "
                                     f"from/to: {ev}")
                continue
            if reason == "epoch":
                if not isinstance(ep, str) or ep == st.epoch:
                    st.violations.append(f"conn {conn}: gap (epoch) without a "
                                         f"new epoch: {ev} (had {st.epoch})")
                if fr != 1 or to < 0:
                    st.violations.append(f"conn {conn}: gap (epoch) range "
                                         f"{fr}..{to}: must start at 1")
                st.epoch, st.pos = ep, to
                need_epoch_gap = False
            else:
                if need_epoch_gap:
                    st.violations.append(f"conn {conn}: gap ({reason}) where "
                                         "a gap (epoch) was due")
                    need_epoch_gap = False
                if st.pos is None or fr != st.pos + 1 or to < fr:
                    st.violations.append(f"conn {conn}: gap ({reason}) "
                                         f"{fr}..{to} after seq {st.pos}")
                if reason not in ("history", "dropped"):
                    st.violations.append(f"conn {conn}: gap reason {reason!r}")
                if ep and st.epoch and ep != st.epoch:
                    st.violations.append(f"conn {conn}: gap ({reason}) "
                                         f"changes the epoch to {ep}")
                st.pos = to if st.pos is None else max(st.pos, to)
    if need_epoch_gap:
        st.violations.append("the epoch changed but no gap (epoch) came")
    return st


def check_clients(ck, label, subs, expected, gaps_ok=None, epoch=None):
    """For every subscriber and topic: the invariant holds (analyse), the
    gaps are exactly gaps_ok(sub, topic) (default: none), and what was
    received in `epoch` (default: the stream's current epoch) is exactly
    expected[topic] ({seq: data}: every acknowledged message, each once,
    in seq order, with its data). Returns {topic: [Stream per sub]}."""
    bad_inv, bad_gap, bad_data = [], [], []
    streams = {}
    for s in subs:
        for t in s.topics:
            st = analyse(s.log[t])
            streams.setdefault(t, []).append(st)
            for v in st.violations[:5]:
                bad_inv.append(f"{s.name} {t}: {v}")
            want_gaps = gaps_ok(s, t) if gaps_ok else []
            if st.gaps != want_gaps:
                bad_gap.append(f"{s.name} {t}: gaps {st.gaps}, expected "
                               f"{want_gaps}")
            ep = epoch if epoch is not None else st.epoch
            got = st.got.get(ep, {})
            want = expected[t]
            missing = sorted(set(want) - set(got))
            extra = sorted(set(got) - set(want))
            dups = sorted(q for q, d in got.items() if len(d) > 1)
            wrong = sorted(q for q, d in got.items()
                           if q in want and d[0] != want[q])
            if missing or extra or dups or wrong:
                bad_data.append(
                    f"{s.name} {t}: missing {compact(missing)}, unacked or "
                    f"unexpected {compact(extra)}, duplicated {compact(dups)}"
                    f", wrong data {compact(wrong)}")
    n = sum(len(s.topics) for s in subs)
    ck.ok(not bad_inv, f"{label}: {len(subs)} clients, {n} streams: every seq"
          " delivered once or in one gap, in order; resumes continue at "
          "since", "\n    " + "\n    ".join(bad_inv[:12]))
    ck.ok(not bad_gap, f"{label}: gap notices exactly where expected "
          f"({'none' if not gaps_ok else 'see scenario'})",
          "\n    " + "\n    ".join(bad_gap[:12]))
    sizes = {t: len(v) for t, v in expected.items()}
    ck.ok(not bad_data, f"{label}: every client got every acknowledged "
          f"message exactly once with its data (seq -> data the same on "
          f"every client and as acked; per topic {sizes})",
          "\n    " + "\n    ".join(bad_data[:12]))
    return streams


def compact(seqs):
    """[1,2,3,7] -> '1..3,7' (at most 8 runs)."""
    if not seqs:
        return "none"
    runs, a, b = [], seqs[0], seqs[0]
    for q in seqs[1:]:
        if q == b + 1:
            b = q
            continue
        runs.append((a, b))
        a = b = q
    runs.append((a, b))
    txt = ",".join(f"{x}..{y}" if x != y else f"{x}" for x, y in runs[:8])
    return txt + (f",... ({len(seqs)} in all)" if len(runs) > 8 else "")


async def wait_caught_up(subs, want, timeout):
    """True once every subscriber has every want[topic] = (seq, epoch)."""
    return bool(await until(lambda: all(s.caught_up(
        {t: want[t] for t in s.topics if t in want}) for s in subs),
        timeout, 0.05))


def lagging(subs, want):
    return [f"{s.name}: {dict(s.last)} connected={s.connected()} "
            f"connects={s.connects} drops={s.drops[-1:]} "
            f"failed={s.failed_attempts[-1:]}"
            for s in subs if not s.caught_up(
                {t: want[t] for t in s.topics if t in want})]
