"""/metrics, /healthz and /api/topics (docs/protocol.md section 11): the
Prometheus text parses, counters move with the traffic, per-topic series
are bounded, the topic listing is right.

usage: metrics.py PORT   (a server of its own: counters are compared
                          exactly)
"""
import json
import sys

import rtlib

port = int(sys.argv[1])
ck = rtlib.Checks("metrics")

PUB = "duplex_published_total"
RX = "duplex_messages_received_total"
TX = "duplex_messages_sent_total"
BADJSON = 'duplex_rejections_total{reason="bad_json"}'
UNKNOWN = 'duplex_rejections_total{reason="unknown_op"}'
SUBS = "duplex_subscriptions"
WS = "duplex_websockets"


def scrape(what):
    st, text = rtlib.metrics(port)
    samples, bad = rtlib.parse_metrics(text)
    ck.ok(st == 200 and samples and not bad,
          f"/metrics ({what}): 200, every sample line is "
          "'name{labels} value'", f"{st} bad lines: {bad[:5]}")
    return samples, text


async def main():
    st, hdrs, body = rtlib.http(port, "GET", "/healthz")
    ck.ok(st == 200 and json.loads(body) == {"status": "ok"},
          "/healthz: 200 {\"status\":\"ok\"}", f"{st} {body!r}")
    ck.ok(hdrs.get("content-type", "").startswith("application/json"),
          "/healthz is application/json", f"{hdrs}")

    st, hdrs, _ = rtlib.http(port, "GET", "/metrics")
    ck.ok(hdrs.get("content-type", "").startswith("text/plain") and
          "version=0.0.4" in hdrs.get("content-type", ""),
          "/metrics Content-Type: text/plain; version=0.0.4", f"{hdrs}")
    m0, text = scrape("at start")
    for name in (PUB, RX, TX, BADJSON, SUBS, WS, "duplex_topics",
                 'duplex_rejections_total{reason="rate_limited"}',
                 'duplex_dropped_connections_total{reason="slow_consumer"}',
                 "duplex_topics_unlisted"):
        ck.ok(name in m0, f"/metrics has {name}")
    # Every sample belongs to a family with a TYPE line.
    typed = {ln.split()[2] for ln in text.splitlines()
             if ln.startswith("# TYPE ")}
    untyped = sorted({k.split("{")[0] for k in m0} -
                     {t for t in typed} -
                     {t + s for t in typed for s in ("_bucket", "_sum",
                                                     "_count")})
    ck.ok(not untyped, "every metric family has a # TYPE line", f"{untyped}")

    # Traffic: 2 subscribers, 3 WebSocket publishes, 2 HTTP publishes, one
    # bad JSON, one unknown op.
    s1 = await rtlib.Client.open(port)
    s2 = await rtlib.Client.open(port)
    for s in (s1, s2):
        await s.request({"op": "subscribe", "topic": "m:live", "id": 1})
    m1, _ = scrape("two subscribers")
    ck.ok(m1[SUBS] - m0[SUBS] == 2 and m1[WS] - m0[WS] == 2,
          "duplex_subscriptions and duplex_websockets follow the clients",
          f"{m0[SUBS]}->{m1[SUBS]} {m0[WS]}->{m1[WS]}")
    p = await rtlib.Client.open(port)
    for i in range(3):
        await p.request({"op": "publish", "topic": "m:live", "data": i,
                         "id": i})
    api = rtlib.Api(port)
    api.publish("m:live", "h1")
    api.publish("m:live", "h2")
    await p.request("{oops")
    await p.request({"op": "nope"})
    for s in (s1, s2):
        got = await s.frames(5)
        ck.ok(rtlib.seqs(got) == [1, 2, 3, 4, 5], "a subscriber got 1..5")
    m2, _ = scrape("after traffic")
    ck.ok(m2[PUB] - m1[PUB] == 5, f"{PUB} +5 (3 WebSocket + 2 HTTP)",
          f"{m1[PUB]} -> {m2[PUB]}")
    ck.ok(m2[RX] - m1[RX] >= 5, f"{RX} +5 or more (the publisher's frames)",
          f"{m1[RX]} -> {m2[RX]}")
    ck.ok(m2[TX] - m1[TX] >= 10 + 5,
          f"{TX} moved by the deliveries (2 x 5) and the replies",
          f"{m1[TX]} -> {m2[TX]}")
    ck.ok(m2[BADJSON] - m1[BADJSON] == 1 and m2[UNKNOWN] - m1[UNKNOWN] == 1,
          "rejections bad_json +1 and unknown_op +1")
    ck.ok(m2["duplex_bytes_sent_total"] > m1["duplex_bytes_sent_total"],
          "duplex_bytes_sent_total moved")

    # /api/topics
    st, _, body = rtlib.http(port, "GET", "/api/topics")
    topics = {t["topic"]: t for t in json.loads(body).get("topics", [])}
    t = topics.get("m:live", {})
    ck.ok(st == 200 and t.get("seq") == 5 and t.get("subscribers") == 2 and
          t.get("retained") == 5 and isinstance(t.get("epoch"), str),
          "/api/topics: m:live with seq 5, 2 subscribers, 5 retained",
          f"{st} {t}")
    # docs 11: errors are {"error": code, "message": text}, 405 included.
    for method, path, allow in (("POST", "/api/topics", "GET"),
                                ("GET", "/api/publish", "POST"),
                                ("GET", "/api/ticket", "POST")):
        st, hdrs, b = rtlib.http(port, method, path,
                                 body="{}" if method == "POST" else None)
        try:
            e = json.loads(b)
        except ValueError:
            e = {}
        ck.ok(st == 405 and allow in hdrs.get("allow", "") and
              e.get("error") == "method_not_allowed" and
              isinstance(e.get("message"), str),
              f"{method} {path}: 405 with Allow: {allow}, body "
              "{\"error\": \"method_not_allowed\", ...}",
              f"{st} {hdrs} {b!r}")
    # docs 11: a body that is not a JSON object is bad_json, a bad topic
    # bad_topic, no data bad_request.
    for body, code in (("{", "bad_json"), ("[]", "bad_json"),
                       ('{"topic":"m:x"}', "bad_request"),
                       ('{"data":1}', "bad_topic"),
                       ('{"topic":"bad topic","data":1}', "bad_topic")):
        st, _, b = rtlib.http(port, "POST", "/api/publish", body=body,
                              headers={"Content-Type": "application/json"})
        ck.ok(st == 400, f"POST /api/publish {body}: 400", f"{st} {b}")
        try:
            e = json.loads(b)
        except ValueError:
            e = {}
        ck.ok(e.get("error") == code and isinstance(e.get("message"), str),
              f"  ... body {{\"error\": \"{code}\", \"message\": ...}} "
              "(docs 11)", f"{b!r}")

    # 60 more topics: the per-topic series stay bounded.
    for i in range(60):
        api.publish(f"m:many:{i}", i)
    api.close()
    m3, text = scrape("after 60 topics")
    lines = [ln for ln in text.splitlines()
             if ln.startswith("duplex_topic_subscribers{")]
    seq_lines = [ln for ln in text.splitlines()
                 if ln.startswith("duplex_topic_seq{")]
    ck.ok(m3["duplex_topics"] >= 61, "duplex_topics counts them all",
          f"{m3['duplex_topics']}")
    ck.ok(len(lines) <= 50 and len(seq_lines) <= 50,
          f"at most 50 duplex_topic_subscribers lines ({len(lines)}) and "
          f"duplex_topic_seq lines ({len(seq_lines)})")
    ck.ok(m3["duplex_topics_unlisted"] >= 10 and
          len(lines) + m3["duplex_topics_unlisted"] == m3["duplex_topics"],
          f"duplex_topics_unlisted {m3['duplex_topics_unlisted']} >= 10, "
          "listed + unlisted = duplex_topics")
    for x in (s1, s2, p):
        await x.close()
    ck.done()


rtlib.run(main)
