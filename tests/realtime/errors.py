"""Acks and errors of duplex.v1 (docs/protocol.md sections 4, 5 and 8):
every request gets its reply with its id; every bad request gets the
documented error code, and neither the connection nor the server suffers
for it (a ping is answered after each).

usage: errors.py PORT PORT_MAXSUBS3
  PORT           duplex serve (defaults)
  PORT_MAXSUBS3  duplex serve --max-subscriptions 3
"""
import asyncio
import json
import sys
import time

import rtlib

port, port_subs = int(sys.argv[1]), int(sys.argv[2])
ck = rtlib.Checks("errors")


NO_ID = object()


async def expect_error(c, req, code, what, rid=None, timeout=5.0):
    """Sends req (a dict, a str or bytes); the reply must be the error code
    with the request's id (or none), and the connection must still answer
    a ping."""
    t0 = time.monotonic()
    try:
        r, _ = await c.request(req, timeout)
    except (rtlib.Closed, asyncio.TimeoutError) as e:
        ck.ok(False, what, f"no reply: {e!r}")
        return None
    secs = time.monotonic() - t0
    if rid is NO_ID:
        want_id = None
    else:
        want_id = rid if rid is not None else (
            req.get("id") if isinstance(req, dict) else None)
    ok = (r.get("op") == "error" and r.get("code") == code and
          isinstance(r.get("message"), str) and r.get("id") == want_id)
    ck.ok(ok, what, f"got {r}")
    ck.ok(await c.ping_ok(f"after-{code}"),
          "  ... and the connection still answers a ping")
    return secs


async def acks(c):
    r, _ = await c.request({"op": "publish", "topic": "e:acks",
                            "data": {"x": 1}, "id": "p1"})
    ck.ok(r == {"op": "published", "topic": "e:acks", "seq": 1, "id": "p1"},
          "publish with id \"p1\": {op: published, topic, seq: 1, id: \"p1\"}",
          f"{r}")
    r, _ = await c.request({"op": "publish", "topic": "e:acks", "data": None,
                            "id": 42})
    ck.ok(r == {"op": "published", "topic": "e:acks", "seq": 2, "id": 42},
          "publish data null (a value) with id 42: published seq 2, id 42",
          f"{r}")
    r, _ = await c.request({"op": "publish", "topic": "e:acks", "data": [1]})
    ck.ok(r == {"op": "published", "topic": "e:acks", "seq": 3},
          "publish without id: published without id", f"{r}")
    r, _ = await c.request({"op": "ping", "id": 5})
    ck.ok(r == {"op": "pong", "id": 5}, "ping id 5 -> pong id 5", f"{r}")
    r, _ = await c.request({"op": "ping", "id": "abc"})
    ck.ok(r == {"op": "pong", "id": "abc"}, "ping id \"abc\" -> pong", f"{r}")
    r, _ = await c.request({"op": "ping"})
    ck.ok(r == {"op": "pong"}, "ping without id -> pong without id", f"{r}")
    r, _ = await c.request({"op": "ping", "id": 6, "future_field": [1, 2]})
    ck.ok(r == {"op": "pong", "id": 6}, "unknown fields are ignored", f"{r}")

    # Replies come in request order, each with its id.
    for i in range(20):
        await c.send({"op": "ping", "id": i})
    got = await c.frames(20)
    ck.ok(got == [{"op": "pong", "id": i} for i in range(20)],
          "20 pipelined pings: 20 pongs in request order")

    r, _ = await c.request({"op": "subscribe", "topic": "e:unsub", "id": 1})
    r, _ = await c.request({"op": "unsubscribe", "topic": "e:unsub", "id": 2})
    ck.ok(r == {"op": "unsubscribed", "topic": "e:unsub", "id": 2},
          "unsubscribe: unsubscribed with id", f"{r}")
    rtlib.Api(port).publish("e:unsub", "after")
    ck.ok(not await c.quiet(0.4), "no message for the topic after "
          "unsubscribed")


async def errors(c):
    await expect_error(c, '{"op":"ping",', "bad_json",
                       "malformed JSON -> bad_json (no id)")
    await expect_error(c, "not json at all", "bad_json",
                       "text that is not JSON -> bad_json")
    # docs section 8: "bad_json: the message is not valid JSON, or not a
    # JSON object (no id can be echoed)".
    for text in ("[1,2]", "42", '"ping"', "null", "true"):
        await expect_error(c, text, "bad_json",
                           f"not an object ({text}) -> bad_json (docs 8)")
    await expect_error(c, {}, "bad_request", "{} (no op) -> bad_request")
    await expect_error(c, {"op": 5, "id": 9}, "bad_request",
                       "op not a string -> bad_request, id echoed")
    await expect_error(c, {"id": "x"}, "bad_request",
                       "no op -> bad_request, id echoed")
    await expect_error(c, {"op": "frobnicate", "id": 4}, "unknown_op",
                       "unknown op -> unknown_op, id echoed")

    bad_topics = ["", "has space", "x" * 129, "caf\u00e9", "a*", "a?b",
                  "new\nline", 5, None, ["news"]]
    for op in ("subscribe", "publish", "unsubscribe", "presence"):
        for t in bad_topics:
            req = {"op": op, "topic": t, "data": 1, "id": f"{op}-bad"}
            await expect_error(c, req, "bad_topic",
                               f"{op} topic {json.dumps(t)[:24]} -> bad_topic")
    await expect_error(c, {"op": "subscribe", "id": 7}, "bad_topic",
                       "subscribe without topic -> bad_topic")
    r, _ = await c.request({"op": "subscribe", "topic": "x" * 128, "id": 8})
    ck.ok(r.get("op") == "subscribed", "a 128-character topic is valid",
          f"{r}")
    r, _ = await c.request({"op": "subscribe",
                            "topic": "A-Za-z0-9_.:/-ok", "id": 8})
    ck.ok(r.get("op") == "subscribed", "every allowed character: valid",
          f"{r}")

    await expect_error(c, {"op": "unsubscribe", "topic": "e:never", "id": 3},
                       "not_subscribed",
                       "unsubscribe from a topic not subscribed -> "
                       "not_subscribed")
    await expect_error(c, {"op": "publish", "topic": "e:t", "id": 10},
                       "bad_request", "publish without data -> bad_request")
    for since in (-1, "4", 1.5, True, [4]):
        await expect_error(c, {"op": "subscribe", "topic": "e:since",
                               "since": since, "id": 11}, "bad_request",
                           f"subscribe since={json.dumps(since)} -> "
                           "bad_request")
    await expect_error(c, {"op": "subscribe", "topic": "e:since", "since": 1,
                           "epoch": 12, "id": 12}, "bad_request",
                       "subscribe epoch not a string -> bad_request")

    await expect_error(c, b'{"op":"ping","id":1}', "bad_request",
                       "a binary frame (even holding a valid request) -> "
                       "bad_request")

    for name, text in (("arrays", "[" * 100 + "]" * 100),
                       ("objects", '{"op":"publish","topic":"e:d","data":' +
                        '{"a":' * 100 + "1" + "}" * 100 + "}")):
        secs = await expect_error(c, text, "bad_json",
                                  f"JSON nested 100 deep ({name}) -> bad_json")
        ck.ok(secs is not None and secs < 1.0,
              f"  ... answered quickly ({secs}s)")
    ok_deep = {"op": "publish", "topic": "e:d", "id": "deep"}
    d = 1
    for _ in range(20):
        d = {"a": d}
    ok_deep["data"] = d
    r, _ = await c.request(ok_deep)
    ck.ok(r.get("op") == "published", "JSON nested 21 deep is accepted", f"{r}")

    big = {"op": "publish", "topic": "e:big", "data": "x" * (65 << 10),
           "id": "big"}
    await expect_error(c, big, "too_large",
                       "a 65 KiB JSON message (> 64 KiB) -> too_large "
                       "(not parsed: no id)", rid=NO_ID)
    fits = {"op": "publish", "topic": "e:big", "data": "y" * (60 << 10),
            "id": "fits"}
    r, _ = await c.request(fits)
    ck.ok(r == {"op": "published", "topic": "e:big", "seq": 1, "id": "fits"},
          "a 60 KiB publish is accepted", f"{r}")

    # docs section 4: "Subscribing again to a topic the connection is
    # already subscribed to is not an error: it replaces the subscription,
    # with the same answer as a first subscribe (with since: a replay)";
    # a live message still comes once.
    api = rtlib.Api(port)
    for i in (1, 2, 3):
        api.publish("e:again", i)
    r, _ = await c.request({"op": "subscribe", "topic": "e:again", "id": "a1"})
    r2, _ = await c.request({"op": "subscribe", "topic": "e:again",
                             "since": 1, "id": "a2"})
    ck.ok(r2.get("op") == "subscribed" and r2.get("seq") == 3,
          "subscribing again to a subscribed topic: subscribed again "
          "(docs 4)", f"{r2}")
    replay = await c.quiet(0.3)
    api.publish("e:again", 4)
    live = await c.quiet(0.4)
    if r2.get("op") == "subscribed":
        ck.ok(rtlib.seqs(replay) == [2, 3],
              "  ... with since=1 it replays 2..3", f"{replay}")
    ck.ok(rtlib.seqs(live) == [4], "  ... and a live message comes once",
          f"{live}")
    api.close()


async def max_subscriptions():
    c = await rtlib.Client.open(port_subs)
    for i in range(3):
        r, _ = await c.request({"op": "subscribe", "topic": f"s:{i}",
                                "id": i})
        ck.ok(r.get("op") == "subscribed",
              f"--max-subscriptions 3: subscription {i + 1} accepted")
    await expect_error(c, {"op": "subscribe", "topic": "s:3", "id": "4th"},
                       "too_many_subscriptions",
                       "--max-subscriptions 3: the 4th -> "
                       "too_many_subscriptions")
    r, _ = await c.request({"op": "subscribe", "topic": "s:1", "since": 0,
                            "id": "again"})
    ck.ok(r.get("op") == "subscribed" and r.get("id") == "again",
          "--max-subscriptions 3: subscribing again to one of the 3 replaces "
          "it (docs 4), not refused", f"{r}")
    r, _ = await c.request({"op": "unsubscribe", "topic": "s:0", "id": 5})
    r, _ = await c.request({"op": "subscribe", "topic": "s:3", "id": 6})
    ck.ok(r.get("op") == "subscribed",
          "after an unsubscribe there is room again", f"{r}")
    await c.close()


async def main():
    c = await rtlib.Client.open(port)
    ck.ok(c.hello.get("op") == "hello" and c.hello.get("version") == 1 and
          isinstance(c.hello.get("heartbeat"), int),
          "the first frame is hello, version 1, with a heartbeat",
          f"{c.hello}")
    ck.ok(c.ws.subprotocol == "duplex.v1", "the server selects duplex.v1")
    await acks(c)
    await errors(c)
    await c.close()
    await max_subscriptions()
    # The server is still fine: a new connection, /healthz.
    c = await rtlib.Client.open(port)
    ck.ok(await c.ping_ok(), "a new connection is served after all that")
    await c.close()
    st, _, body = rtlib.http(port, "GET", "/healthz")
    ck.ok(st == 200, "/healthz still 200")
    ck.done()


rtlib.run(main)
