"""Authentication on /ws and the HTTP API (docs/protocol.md sections 2 and
11, src/app/auth.h): JWTs (HS256, RS256) from every token source, every
way a token can be bad, topic grants, API keys, one-time tickets.

JWTs are made here by hand (hmac for HS256, `openssl dgst -sign` for
RS256), so bad ones (alg none, wrong key, tampered) are easy to make.

usage: auth.py PORT_HS PORT_RS SECRET PRIV_PEM OTHER_PRIV_PEM PUB_PEM KEY
               PORT_NOKEYS
  PORT_HS      --auth required --jwt-secret SECRET --api-key KEY --presence
  PORT_RS      --auth required --jwt-public-key PUB_PEM --api-key KEY
  PORT_NOKEYS  --auth optional --jwt-secret SECRET (no API key)
"""
import json
import sys
import time

import rtlib

port_hs, port_rs, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
priv, other_priv, pub_pem = sys.argv[4], sys.argv[5], sys.argv[6]
API_KEY, port_nokeys = sys.argv[7], int(sys.argv[8])
ck = rtlib.Checks("auth")
NOW = int(time.time())


def claims(**kw):
    c = {"sub": "alice", "exp": NOW + 600, "iat": NOW - 5}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def hs(**kw):
    return rtlib.jwt_hs256(claims(**kw), secret)


def up(p, headers=(), path="/ws"):
    return rtlib.upgrade_status(p, path=path, headers=headers)


def bearer(tok):
    return [("Authorization", f"Bearer {tok}")]


REFUSED = {}  # port -> handshakes refused with 401/403 so far


def check_status(p, headers, want, what, path="/ws"):
    st, head = up(p, headers, path)
    if st in (401, 403):
        REFUSED[p] = REFUSED.get(p, 0) + 1
    ck.ok(st == want, f"{what} -> {want}", f"{st} {head[:120]!r}")
    return st, head


async def sources():
    good = hs()
    st, head = check_status(port_hs, [], 401, "no credential")
    ck.ok("www-authenticate: bearer" in head.lower(),
          "  ... with WWW-Authenticate: Bearer", head)
    check_status(port_hs, bearer(good), 101,
                 "valid HS256 in Authorization: Bearer")
    check_status(port_hs, [("Cookie", f"token={good}")], 101,
                 "the same token as cookie token=")
    check_status(port_hs, [("Cookie", f"theme=dark; token={good}; x=1")], 101,
                 "the token cookie among others")
    check_status(port_hs, [], 101, "the same token as ?token=",
                 path=f"/ws?token={good}")
    st, head = check_status(
        port_hs, [("Sec-WebSocket-Protocol", f"duplex.v1, bearer.{good}")],
        101, "the token as Sec-WebSocket-Protocol: duplex.v1, bearer.<jwt>")
    sel = [ln.split(":", 1)[1].strip() for ln in head.split("\r\n")
           if ln.lower().startswith("sec-websocket-protocol:")]
    ck.ok(sel == ["duplex.v1"], "  ... the server selects duplex.v1", f"{sel}")
    ck.ok(good not in head and good.split(".")[2] not in head,
          "  ... and never echoes the token", head)
    # A real client library with the bearer subprotocol: it would fail the
    # connection if the server selected something it did not offer.
    c = await rtlib.Client.open(port_hs,
                                subprotocols=["duplex.v1", f"bearer.{good}"])
    ck.ok(c.ws.subprotocol == "duplex.v1" and await c.ping_ok(),
          "python3-websockets with [duplex.v1, bearer.<jwt>]: open, served")
    await c.close()
    c = await rtlib.Client.open(port_hs,
                                extra_headers={"Authorization":
                                               f"Bearer {good}"})
    ck.ok(await c.ping_ok(), "python3-websockets with the header: served")
    await c.close()


async def bad_tokens():
    wrong_secret = "x" * 48
    cases = [
        ("expired (exp an hour ago)", hs(exp=NOW - 3600)),
        ("nbf an hour in the future", hs(nbf=NOW + 3600)),
        ("iat an hour in the future", hs(iat=NOW + 3600)),
        ("no exp", hs(exp=None)),
        ("signed with another secret",
         rtlib.jwt_hs256(claims(), wrong_secret)),
        ("payload changed after signing",
         ".".join([hs().split(".")[0], rtlib.jwt_part(claims(sub="root")),
                   hs().split(".")[2]])),
        ("signature stripped", hs().rsplit(".", 1)[0] + "."),
        ("alg none", rtlib.jwt_none(claims())),
        ("alg None (case)", rtlib.jwt_hs256(claims(), secret,
                                            {"alg": "None"})),
        ("alg HS384", rtlib.jwt_hs256(claims(), secret, {"alg": "HS384"})),
        ("crit header", rtlib.jwt_hs256(claims(), secret,
                                        {"alg": "HS256", "crit": ["exp"]})),
        ("an aud no server asked for", hs(aud="someone-else")),
        ("not a JWT", "abc"),
        ("two parts", "a.b"),
        ("RS256 on a server with only a secret", rtlib.jwt_rs256(claims(),
                                                                 priv)),
    ]
    for what, tok in cases:
        check_status(port_hs, bearer(tok), 401, f"HS256 server: {what}")
    # The first credential present is the one checked.
    check_status(port_hs, bearer(hs(exp=NOW - 3600)) +
                 [("Cookie", f"token={hs()}")], 401,
                 "a bad header token is not skipped for a good cookie")
    # Grants nothing at all: 403.
    check_status(port_hs, bearer(hs(topics={"subscribe": [],
                                            "publish": []})), 403,
                 "a valid token granting nothing")
    # docs 2: the claim is "grants", "topics" an alias; both is ambiguous.
    g = {"subscribe": ["*"], "publish": ["*"]}
    st, head = check_status(port_hs, bearer(hs(grants=g, topics=g)), 401,
                            "a token with both \"grants\" and \"topics\"")
    ck.ok("www-authenticate: bearer" in head.lower(),
          "  ... with WWW-Authenticate: Bearer", head)


async def rs256():
    check_status(port_rs, bearer(rtlib.jwt_rs256(claims(), priv)), 101,
                 "RS256 server: a valid RS256 token")
    check_status(port_rs, [("Sec-WebSocket-Protocol",
                            "duplex.v1, bearer." +
                            rtlib.jwt_rs256(claims(), priv))], 101,
                 "RS256 server: RS256 via the bearer subprotocol")
    check_status(port_rs, bearer(rtlib.jwt_rs256(claims(), other_priv)), 401,
                 "RS256 server: signed by another key")
    check_status(port_rs, bearer(rtlib.jwt_rs256(claims(exp=NOW - 3600),
                                                 priv)), 401,
                 "RS256 server: expired")
    check_status(port_rs, bearer(hs()), 401,
                 "RS256 server (no secret): an HS256 token")
    with open(pub_pem, "rb") as f:
        pem = f.read()
    check_status(port_rs, bearer(rtlib.jwt_hs256(claims(), pem)), 401,
                 "RS256 server: HS256 keyed with the public key (alg "
                 "confusion)")
    check_status(port_rs, bearer(rtlib.jwt_none(claims())), 401,
                 "RS256 server: alg none")


async def grants():
    tok = hs(sub="reader", topics={"subscribe": ["news", "chat:*"],
                                   "publish": []})
    c = await rtlib.Client.open(port_hs, extra_headers={
        "Authorization": f"Bearer {tok}"})
    r, _ = await c.request({"op": "subscribe", "topic": "news", "id": 1})
    ck.ok(r.get("op") == "subscribed",
          "grants subscribe [news]: subscribe news -> subscribed", f"{r}")
    r, _ = await c.request({"op": "subscribe", "topic": "chat:42", "id": 2})
    ck.ok(r.get("op") == "subscribed",
          "grants subscribe [chat:*]: chat:42 -> subscribed", f"{r}")
    for t in ("other", "newsroom", "chat"):
        r, _ = await c.request({"op": "subscribe", "topic": t, "id": t})
        ck.ok(r.get("op") == "error" and r.get("code") == "forbidden" and
              r.get("id") == t, f"grants: subscribe {t} -> forbidden", f"{r}")
    r, _ = await c.request({"op": "publish", "topic": "news", "data": 1,
                            "id": 3})
    ck.ok(r.get("op") == "error" and r.get("code") == "forbidden",
          "grants publish []: publish news -> forbidden", f"{r}")
    ck.ok(await c.ping_ok(), "  ... and the connection stays open")
    await c.close()

    # docs section 2 names the claim "grants" (same shape as a ticket's):
    # an issuer following the docs must get the restriction it asked for.
    tok = hs(sub="reader2", grants={"subscribe": ["news"], "publish": []})
    c = await rtlib.Client.open(port_hs, extra_headers={
        "Authorization": f"Bearer {tok}"})
    r, _ = await c.request({"op": "subscribe", "topic": "other", "id": 1})
    ck.ok(r.get("code") == "forbidden",
          "a token with the documented \"grants\" claim {subscribe: [news]}: "
          "subscribe other -> forbidden (docs 2)", f"{r}")
    r, _ = await c.request({"op": "publish", "topic": "news", "data": 1,
                            "id": 2})
    ck.ok(r.get("code") == "forbidden",
          "  ... and publish news -> forbidden", f"{r}")
    await c.close()

    # Presence members are the token's sub, as id and name; a "name"
    # claim is not used (docs 7).
    tok = hs(sub="alice", name="Alice")
    a = await rtlib.Client.open(port_hs, extra_headers={
        "Authorization": f"Bearer {tok}"})
    await a.request({"op": "subscribe", "topic": "room", "id": 1})
    r, _ = await a.request({"op": "presence", "topic": "room", "id": 2})
    ck.ok(r.get("members") == [{"id": "alice", "name": "alice"}],
          "presence: the member is {id: sub, name: sub}, the name claim "
          "unused (docs 7)", f"{r}")
    await a.close()


async def http_api():
    body = {"topic": "api:news", "data": {"h": 1}}
    for what, hdrs in (("no key", {}),
                       ("a wrong key",
                        {"Authorization": f"Bearer {API_KEY[:-1]}X"}),
                       ("the key without Bearer", {"Authorization": API_KEY}),
                       ("a key prefix",
                        {"Authorization": f"Bearer {API_KEY[:-1]}"}),
                       ("the key plus a byte",
                        {"Authorization": f"Bearer {API_KEY}0"})):
        st, h, b = rtlib.http(port_hs, "POST", "/api/publish", body, hdrs)
        ck.ok(st == 401 and h.get("www-authenticate", "").lower() == "bearer",
              f"/api/publish with {what} -> 401, WWW-Authenticate: Bearer",
              f"{st} {h} {b!r}")
    st, _, b = rtlib.http(port_hs, "POST", "/api/publish", body,
                          {"Authorization": f"Bearer {API_KEY}"})
    ck.ok(st == 200 and json.loads(b).get("seq") == 1,
          "/api/publish with the right key -> 200, seq 1", f"{st} {b!r}")
    st, _, _ = rtlib.http(port_hs, "GET", "/api/topics")
    ck.ok(st == 401, "/api/topics without key -> 401", f"{st}")
    st, _, _ = rtlib.http(port_hs, "GET", "/api/topics", None,
                          {"Authorization": f"Bearer {API_KEY}"})
    ck.ok(st == 200, "/api/topics with the key -> 200", f"{st}")
    st, _, b = rtlib.http(port_hs, "GET", "/healthz")
    ck.ok(st == 200, "/healthz needs no key", f"{st}")


async def tickets():
    key = {"Authorization": f"Bearer {API_KEY}"}
    st, _, b = rtlib.http(port_hs, "POST", "/api/ticket", {"sub": "bob"})
    ck.ok(st == 401, "/api/ticket without key -> 401", f"{st} {b!r}")
    st, _, b = rtlib.http(port_hs, "POST", "/api/ticket", {"sub": "bob"}, key)
    t = json.loads(b) if st == 200 else {}
    ck.ok(st == 200 and isinstance(t.get("ticket"), str) and
          len(t["ticket"]) >= 32 and t.get("expires_in", 0) > 0,
          "/api/ticket with the key -> {ticket, expires_in}", f"{st} {b!r}")
    tk = t.get("ticket", "")
    check_status(port_hs, [], 101, "?ticket= (first use)",
                 path=f"/ws?ticket={tk}")
    check_status(port_hs, [], 401, "?ticket= again (second use)",
                 path=f"/ws?ticket={tk}")
    check_status(port_hs, [], 401, "?ticket= unknown",
                 path="/ws?ticket=" + "A" * 43)

    # A ticket with grants, used by a real client.
    st, _, b = rtlib.http(port_hs, "POST", "/api/ticket",
                          {"sub": "carol", "grants": {"subscribe": ["news"],
                                                      "publish": []}}, key)
    tk = json.loads(b).get("ticket", "") if st == 200 else ""
    c = await rtlib.Client.open(port_hs, query=f"?ticket={tk}")
    r, _ = await c.request({"op": "subscribe", "topic": "news", "id": 1})
    ck.ok(r.get("op") == "subscribed", "ticket grants: subscribe news", f"{r}")
    r, _ = await c.request({"op": "subscribe", "topic": "other", "id": 2})
    ck.ok(r.get("code") == "forbidden",
          "ticket grants: subscribe other -> forbidden", f"{r}")
    await c.close()

    # docs 11: the body has "sub" and "grants" only; any other key is a
    # typo that must not pass silently.
    for what, body in (("{sub, name} (an unknown key)",
                        {"sub": "dave", "name": "Dave"}),
                       ("not JSON", "{"),
                       ("a bad grant pattern",
                        {"sub": "x", "grants": {"subscribe": ["a*b"]}})):
        st, _, b = rtlib.http(port_hs, "POST", "/api/ticket", body, key)
        try:
            e = json.loads(b)
        except ValueError:
            e = {}
        ck.ok(st == 400 and e.get("error") == "bad_request",
              f"/api/ticket {what} -> 400 {{\"error\": \"bad_request\"}}",
              f"{st} {b!r}")

    # docs 2, 11: auth on and no API keys: nobody may mint tickets.
    for body in ({"sub": "eve"}, {"sub": "eve", "name": "Eve"}):
        st, _, b = rtlib.http(port_nokeys, "POST", "/api/ticket", body)
        try:
            e = json.loads(b)
        except ValueError:
            e = {}
        ck.ok(st == 403 and e.get("error") == "forbidden",
              f"auth on, no API keys: /api/ticket {json.dumps(body)} -> 403 "
              "{\"error\": \"forbidden\"}", f"{st} {b!r}")

    key = 'duplex_rejections_total{reason="auth"}'
    for p in (port_hs, port_rs):
        m = rtlib.metric(p, key)
        ck.ok(m == REFUSED.get(p), f"every refused handshake is counted: {key}"
              f" = {m} (refused: {REFUSED.get(p)})")


async def main():
    await sources()
    await bad_tokens()
    await rs256()
    await grants()
    await http_api()
    await tickets()
    ck.done()


rtlib.run(main)
