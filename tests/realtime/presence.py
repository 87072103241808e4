"""Presence (docs/protocol.md section 7) on `duplex serve --presence`:
join events go to the other subscribers, the presence op lists every
member, unsubscribing or disconnecting sends a leave; with auth off, a
ticket names the member (docs 2); and on a server without --presence, the
op is refused with unknown_op.

usage: presence.py PORT_PRESENCE PORT_NO_PRESENCE
"""
import json
import re
import sys

import rtlib

port, port_off = int(sys.argv[1]), int(sys.argv[2])
ck = rtlib.Checks("presence")
T = "chat:1"


async def members(c, rid):
    r, topic_frames = await c.request({"op": "presence", "topic": T,
                                       "id": rid})
    return r, topic_frames


async def tickets_name_members():
    """docs 2, 11: with auth off and no API keys, /api/ticket is open and a
    ticket only names the member; a used or unknown one is ignored, never
    refused."""
    T2 = "chat:t"
    st, _, b = rtlib.http(port, "POST", "/api/ticket", {"sub": "zoe"})
    tk = json.loads(b).get("ticket", "") if st == 200 else ""
    ck.ok(st == 200 and tk, "auth off, no API keys: /api/ticket {sub: zoe} "
          "-> 200 {ticket}", f"{st} {b!r}")
    z = await rtlib.Client.open(port, query=f"?ticket={tk}")
    await z.request({"op": "subscribe", "topic": T2, "id": 1})
    r, _ = await z.request({"op": "presence", "topic": T2, "id": 2})
    ck.ok(r.get("members") == [{"id": "zoe", "name": "zoe"}],
          "auth off: the ticket's sub is the member {id: zoe, name: zoe}",
          f"{r}")
    again = await rtlib.Client.open(port, query=f"?ticket={tk}")
    await again.request({"op": "subscribe", "topic": T2, "id": 1})
    r, _ = await again.request({"op": "presence", "topic": T2, "id": 2})
    anon = [m for m in r.get("members", []) if m.get("id") != "zoe"]
    ck.ok(len(r.get("members", [])) == 2 and len(anon) == 1 and
          anon[0].get("name") is None and
          re.fullmatch(r"c-[0-9a-f]+", str(anon[0].get("id"))),
          "auth off: the same ticket again is ignored: served, anonymous",
          f"{r}")
    st, head = rtlib.upgrade_status(port, path="/ws?ticket=" + "A" * 43)
    ck.ok(st == 101, "auth off: an unknown ticket is ignored -> 101",
          f"{st} {head[:80]!r}")
    for x in (z, again):
        await x.close()


async def main():
    a = await rtlib.Client.open(port)
    b = await rtlib.Client.open(port)
    r, _ = await a.request({"op": "subscribe", "topic": T, "id": 1})
    ck.ok(r.get("op") == "subscribed", "a subscribes to chat:1")
    r, _ = await a.request({"op": "presence", "topic": T, "id": "pa"})
    ck.ok(r.get("op") == "presence" and r.get("id") == "pa" and
          r.get("topic") == T and len(r.get("members", [])) == 1,
          "presence with a alone: one member", f"{r}")
    a_member = (r.get("members") or [None])[0]
    ck.ok(isinstance(a_member, dict) and isinstance(a_member.get("id"), str)
          and re.fullmatch(r"c-[0-9a-f]+", a_member["id"]),
          "an anonymous member's id is c-<hex> (docs 7)", f"{a_member}")
    # docs 7: "name: the sub, or null for an anonymous connection".
    ck.ok(isinstance(a_member, dict) and "name" in a_member and
          a_member["name"] is None,
          "an anonymous member's name is null (docs 7)", f"{a_member}")

    r, _ = await b.request({"op": "subscribe", "topic": T, "id": 2})
    ck.ok(r.get("op") == "subscribed", "b subscribes to chat:1")
    got = await a.frames(1)
    join = got[0]
    ck.ok(join.get("op") == "join" and join.get("topic") == T and
          isinstance(join.get("member"), dict) and
          join["member"].get("id") not in (None, a_member.get("id")),
          "a sees b's join {op: join, topic, member: {id, name}}", f"{join}")
    b_id = join.get("member", {}).get("id")
    q = await b.quiet(0.3)
    ck.ok(not q, "b does not get a join for itself (docs 7: join and leave "
          "go to the other subscribers)", f"{q}")

    for who, c in (("a", a), ("b", b)):
        r, _ = await c.request({"op": "presence", "topic": T, "id": who})
        ids = sorted(m.get("id") for m in r.get("members", []))
        ck.ok(r.get("op") == "presence" and
              ids == sorted([a_member.get("id"), b_id]),
              f"presence asked by {who} lists both members", f"{r}")

    # A third one joins and leaves by disconnecting.
    c3 = await rtlib.Client.open(port)
    await c3.request({"op": "subscribe", "topic": T, "id": 3})
    ja = await a.frames(1)
    jb = await b.frames(1)
    c3_id = ja[0].get("member", {}).get("id")
    ck.ok(ja[0].get("op") == "join" and jb == ja,
          "a third member's join reaches both a and b", f"{ja} {jb}")
    q = await c3.quiet(0.3)
    ck.ok(not q, "the third member does not get its own join", f"{q}")
    await c3.close()
    la = await a.frames(1)
    lb = await b.frames(1)
    ck.ok(la[0].get("op") == "leave" and la[0].get("topic") == T and
          la[0].get("member", {}).get("id") == c3_id and lb == la,
          "disconnecting sends its leave to both", f"{la} {lb}")

    # b leaves by unsubscribing.
    r, _ = await b.request({"op": "unsubscribe", "topic": T, "id": 4})
    ck.ok(r == {"op": "unsubscribed", "topic": T, "id": 4}, "b unsubscribes")
    la = await a.frames(1)
    ck.ok(la[0].get("op") == "leave" and
          la[0].get("member", {}).get("id") == b_id,
          "a sees b's leave", f"{la}")
    r, _ = await a.request({"op": "presence", "topic": T, "id": "end"})
    ck.ok([m.get("id") for m in r.get("members", [])] == [a_member.get("id")],
          "presence lists a only now", f"{r}")
    ck.ok(not await b.quiet(0.3), "b gets nothing for the topic any more")

    # Messages and presence events share the topic's order.
    rtlib.Api(port).publish(T, "hi")
    got = await a.frames(1)
    ck.ok(rtlib.seqs(got) == [1], "messages still flow to a", f"{got}")

    await tickets_name_members()

    # Presence off.
    d = await rtlib.Client.open(port_off)
    await d.request({"op": "subscribe", "topic": T, "id": 1})
    e = await rtlib.Client.open(port_off)
    await e.request({"op": "subscribe", "topic": T, "id": 1})
    ck.ok(not await d.quiet(0.3),
          "without --presence: no join events")
    r, _ = await d.request({"op": "presence", "topic": T, "id": 9})
    ck.ok(r.get("op") == "error" and r.get("code") == "unknown_op" and
          r.get("id") == 9,
          "without --presence: the presence op -> unknown_op (docs 4, 7)",
          f"{r}")
    for x in (a, b, d, e):
        await x.close()
    ck.done()


rtlib.run(main)
