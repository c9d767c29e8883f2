"""MAM (XEP-0313) with aioxmpp: aioxmpp 0.13 has RSM and forwarding but no MAM client, so the query, result
and fin elements are declared here as XSOs and the client pages through its archive with raw iqs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aioxmpp
import aioxmpp.connector
import aioxmpp.misc
import aioxmpp.rsm.xso as rsm
import aioxmpp.xso as xso

from clients import connect, disconnect
from harness import RunningServer, running_server

NS = "urn:xmpp:mam:2"


@aioxmpp.IQ.as_payload_class
class Query(xso.XSO):  # type: ignore[misc]
    TAG = (NS, "query")
    queryid = xso.Attr("queryid", default=None)
    rsm = xso.Child([rsm.ResultSetMetadata])


@aioxmpp.IQ.as_payload_class
class Fin(xso.XSO):  # type: ignore[misc]
    TAG = (NS, "fin")
    complete = xso.Attr("complete", type_=xso.Bool(), default=False)
    rsm = xso.Child([rsm.ResultSetMetadata])


class Result(xso.XSO):  # type: ignore[misc]
    TAG = (NS, "result")
    queryid = xso.Attr("queryid", default=None)
    id_ = xso.Attr("id")
    forwarded = xso.Child([aioxmpp.misc.Forwarded])


aioxmpp.Message.xep0313_result = xso.Child([Result])


async def page_through(srv: RunningServer, user: str, page: int) -> tuple[list[str], list[str]]:
    """The bodies of ``user``'s archive paging forwards, then backwards from the last page."""
    client = aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(srv.jid(user)),
        aioxmpp.make_security_layer(srv.users[user], no_verify=True),
        override_peer=[("127.0.0.1", srv.starttls_port, aioxmpp.connector.STARTTLSConnector())],
    )
    results: dict[str, list[Any]] = {}

    def on_message(msg: aioxmpp.Message) -> None:
        result = msg.xep0313_result
        if result is not None and msg.from_ == client.local_jid.bare():
            results.setdefault(result.queryid, []).append(result)

    client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher).register_callback(
        aioxmpp.MessageType.NORMAL, None, on_message
    )

    async def query(qid: str, request: rsm.ResultSetMetadata) -> tuple[list[str], Fin]:
        iq = aioxmpp.IQ(type_=aioxmpp.IQType.SET, payload=Query())
        iq.payload.queryid = qid
        iq.payload.rsm = request
        fin = await client.send(iq)
        bodies = [r.forwarded.stanza.body.any() for r in results.pop(qid, [])]
        return bodies, fin

    forward: list[str] = []
    backward: list[str] = []
    async with client.connected():
        request = rsm.ResultSetMetadata.limit(page)
        for n in range(100):
            bodies, fin = await query(f"f{n}", request)
            forward += bodies
            assert fin.rsm.count == str(len(forward)) or fin.rsm.count is not None
            if fin.complete:
                break
            request = fin.rsm.next_page(page)
        request = rsm.ResultSetMetadata.last_page(page)
        for n in range(100):
            bodies, fin = await query(f"b{n}", request)
            backward = bodies + backward
            if fin.complete:
                break
            request = fin.rsm.previous_page(page)
    return forward, backward


async def test_aioxmpp_pages_through_the_archive_both_ways(tmp_path: Path) -> None:
    overrides = {"plugins": {"enabled": ["ping", "disco", "roster", "offline", "mam"]}}
    async with running_server(tmp_path, overrides) as srv:
        alice = await connect(srv, "alice", send_presence=False, get_roster=False)
        bob = await connect(srv, "bob", send_presence=False, get_roster=False)
        try:
            bodies = [f"line {i}" for i in range(25)]
            for body in bodies:
                alice.send_message(mto=str(bob.boundjid), mbody=body, mtype="chat")
            for _ in bodies:
                await asyncio.wait_for(bob.next_message(), 10)
        finally:
            await disconnect(alice, bob)
        forward, backward = await page_through(srv, "bob", page=10)
        assert forward == bodies
        assert backward == bodies
