"""A participant on aioxmpp's MUC client in a counsellor's room (slixmpp): history, chat both ways,
nicknames only, and being kicked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aioxmpp
import aioxmpp.connector
import aioxmpp.muc
import pytest
from slixmpp import JID
from test_muc_kit import muc_client, muc_overrides, owner_submit, service

from clients import disconnect
from harness import RunningServer, running_server

USERS = {"counsellor": "counsellor-secret-1", "ben": "ben-secret-22"}


def aioxmpp_client(srv: RunningServer, user: str) -> aioxmpp.PresenceManagedClient:
    return aioxmpp.PresenceManagedClient(
        aioxmpp.JID.fromstr(srv.jid(user)),
        aioxmpp.make_security_layer(srv.users[user], no_verify=True),
        override_peer=[("127.0.0.1", srv.starttls_port, aioxmpp.connector.STARTTLSConnector())],
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_an_aioxmpp_participant_chats_and_is_kicked(tmp_path: Path) -> None:
    options = muc_overrides(counsellors=["counsellor@localhost"])
    async with running_server(tmp_path, options, USERS) as srv:
        room = f"thursday@{service(srv)}"
        counsellor, c_seen = await muc_client(srv, "counsellor")
        muc = counsellor.plugin["xep_0045"]
        ben = aioxmpp_client(srv, "ben")
        try:
            await muc.join_muc_wait(JID(room), "Counsellor", timeout=10)
            await owner_submit(counsellor, room)
            await muc.set_affiliation(room, "member", jid="ben@localhost")
            counsellor.send_message(mto=JID(room), mbody="Welcome, everyone", mtype="groupchat")
            await c_seen.message(lambda m: m["body"] == "Welcome, everyone")

            messages: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()
            exited: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            async with ben.connected():
                client = ben.summon(aioxmpp.MUCClient)
                history = aioxmpp.muc.xso.History(maxstanzas=10)
                aroom, joined = client.join(
                    aioxmpp.JID.fromstr(room), "Ben", history=history, autorejoin=False
                )
                aroom.on_message.connect(lambda msg, member, source, **kw: messages.put_nowait((msg, member)))
                aroom.on_exit.connect(lambda **kw: None if exited.done() else exited.set_result(kw))
                await asyncio.wait_for(joined, 10)

                # History first, with the sender's nickname.
                msg, member = await asyncio.wait_for(messages.get(), 10)
                assert msg.body.any() == "Welcome, everyone"
                assert msg.from_ == aioxmpp.JID.fromstr(f"{room}/Counsellor")
                # Ben sees nicknames, not addresses.
                others = [m for m in aroom.members if m is not aroom.me]
                assert [(m.nick, m.direct_jid) for m in others] == [("Counsellor", None)]
                assert aroom.me.affiliation == "member" and aroom.me.role == "participant"

                # Chat both ways.
                counsellor.send_message(mto=JID(room), mbody="How was your week?", mtype="groupchat")
                msg, member = await asyncio.wait_for(messages.get(), 10)
                assert msg.body.any() == "How was your week?" and member.nick == "Counsellor"
                reply = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT)
                reply.body[None] = "Quite good"
                await aroom.send_message(reply)
                got = await c_seen.message(lambda m: m["body"] == "Quite good")
                assert got["from"] == JID(f"{room}/Ben")
                seen_by_counsellor = await c_seen.presence(f"{room}/Ben")
                assert seen_by_counsellor["muc"]["jid"].bare == "ben@localhost"

                # Being kicked ends the stay, with the reason.
                await muc.set_role(room, "Ben", "none", reason="Time out")
                info = await asyncio.wait_for(exited, 10)
                assert info["muc_leave_mode"] == aioxmpp.muc.LeaveMode.KICKED
                assert info["muc_reason"] == "Time out"
        finally:
            await disconnect(counsellor)
