"""A counselling group session over real TLS connections (XEP-0045), with slixmpp clients.

A counsellor creates a members-only room, invites three participants, they enter and chat; participants
see nicknames only, the counsellor sees real JIDs; kicks and bans take effect with their status codes;
history comes on entering; a restart keeps the room, its configuration and members.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError, PresenceError
from test_muc_kit import codes, muc_client, muc_overrides, service

from clients import disconnect
from harness import running_server

USERS = {
    "counsellor": "counsellor-secret-1",
    "ben": "ben-secret-22",
    "cara": "cara-secret-333",
    "dan": "dan-secret-4444",
    "eve": "eve-secret-55555",
}


def overrides() -> dict[str, object]:
    return muc_overrides(counsellors=["counsellor@localhost"])


async def test_a_counsellor_runs_a_members_only_group_session(tmp_path: Path) -> None:
    async with running_server(tmp_path, overrides(), USERS) as srv:
        room = f"tuesday@{service(srv)}"
        counsellor, c_seen = await muc_client(srv, "counsellor")
        ben, b_seen = await muc_client(srv, "ben")
        cara, _ = await muc_client(srv, "cara")
        dan, d_seen = await muc_client(srv, "dan")
        eve, _ = await muc_client(srv, "eve")
        muc = {c: c.plugin["xep_0045"] for c in (counsellor, ben, cara, dan, eve)}
        try:
            # Participants may not create rooms; the counsellor creates one, locked until configured.
            with pytest.raises(PresenceError) as refused:
                await muc[eve].join_muc_wait(JID(f"own@{service(srv)}"), "Eve", timeout=10)
            assert refused.value.presence["error"]["condition"] == "not-allowed"

            pres, _, _, _ = await muc[counsellor].join_muc_wait(JID(room), "Counsellor", timeout=10)
            assert {110, 201} <= codes(pres)
            assert (pres["muc"]["affiliation"], pres["muc"]["role"]) == ("owner", "moderator")
            with pytest.raises(PresenceError) as locked:
                await muc[ben].join_muc_wait(JID(room), "Ben", timeout=10)
            assert locked.value.presence["error"]["condition"] == "item-not-found"

            # A reserved room: the form shows the counselling defaults; the counsellor names the room.
            form = await muc[counsellor].get_room_config(room)
            values = form.get_values()
            assert values["muc#roomconfig_membersonly"] in (True, "1")
            assert values["muc#roomconfig_persistentroom"] in (True, "1")
            assert values["muc#roomconfig_publicroom"] in (False, "0")
            assert values["muc#roomconfig_whois"] == "moderators"
            form.get_fields()["muc#roomconfig_roomname"]["value"] = "Tuesday group"
            await muc[counsellor].set_room_config(room, form)

            # Mediated invitations make the invitees members.
            for user in (ben, cara, dan):
                muc[counsellor].invite(room, user.boundjid.bare, reason="Our Tuesday group")
            invite = await b_seen.message(lambda m: bool(m["muc"]["invite"]["from"]))
            assert invite["from"] == JID(room)
            assert invite["muc"]["invite"]["from"] == counsellor.boundjid.bare
            assert invite["muc"]["invite"]["reason"] == "Our Tuesday group"
            members = await muc[counsellor].get_affiliation_list(room, "member")
            assert {str(j) for j in members} == {"ben@localhost", "cara@localhost", "dan@localhost"}

            # An outsider cannot enter a members-only room.
            with pytest.raises(PresenceError) as outsider:
                await muc[eve].join_muc_wait(JID(room), "Eve", timeout=10)
            assert outsider.value.presence["error"]["condition"] == "registration-required"

            # The participants enter. They see nicknames only; the counsellor sees real JIDs.
            pres, _, occupants, _ = await muc[ben].join_muc_wait(JID(room), "Ben", timeout=10)
            assert 110 in codes(pres) and pres["muc"]["role"] == "participant"
            others = [(str(o["from"]), o["muc"]["jid"].full) for o in occupants if 110 not in codes(o)]
            assert others == [(f"{room}/Counsellor", "")]
            ben_seen_by_counsellor = await c_seen.presence(f"{room}/Ben")
            assert ben_seen_by_counsellor["muc"]["jid"] == ben.boundjid
            _, _, occupants, _ = await muc[cara].join_muc_wait(JID(room), "Cara", timeout=10)
            assert {o["muc"]["jid"].full for o in occupants if 110 not in codes(o)} == {""}
            await muc[dan].join_muc_wait(JID(room), "Dan", timeout=10)
            cara_seen_by_ben = await b_seen.presence(f"{room}/Cara")
            assert cara_seen_by_ben["muc"]["jid"].full == ""
            assert (await c_seen.presence(f"{room}/Dan"))["muc"]["jid"] == dan.boundjid

            # Nicknames taken by others are refused.
            with pytest.raises(PresenceError) as taken:
                await muc[cara].join_muc_wait(JID(room), "Ben", timeout=10)
            assert taken.value.presence["error"]["condition"] == "conflict"

            # They chat: everybody gets every message from the sender's room JID.
            ben.send_message(mto=JID(room), mbody="Hi everyone", mtype="groupchat")
            for seen in (c_seen, b_seen, d_seen):
                msg = await seen.message(lambda m: m["body"] == "Hi everyone")
                assert msg["from"] == JID(f"{room}/Ben") and msg["type"] == "groupchat"

            # A private message between occupants carries the room JIDs only.
            ben.send_message(mto=JID(f"{room}/Counsellor"), mbody="Can we talk later?", mtype="chat")
            private = await c_seen.message(lambda m: m["body"] == "Can we talk later?")
            assert private["from"] == JID(f"{room}/Ben") and private["type"] == "chat"

            # Participants cannot moderate.
            with pytest.raises(IqError) as not_moderator:
                await muc[ben].set_role(room, "Dan", "none")
            assert not_moderator.value.iq["error"]["condition"] == "forbidden"

            # Kick (307) and ban (301) take effect and are announced.
            await muc[counsellor].set_role(room, "Dan", "none", reason="Please take a break")
            kicked = await d_seen.presence(f"{room}/Dan", "unavailable")
            assert {110, 307} <= codes(kicked)
            assert kicked["muc"]["item"]["reason"] == "Please take a break"
            assert 307 in codes(await b_seen.presence(f"{room}/Dan", "unavailable"))

            await muc[counsellor].set_affiliation(room, "outcast", jid=cara.boundjid.bare, reason="Abuse")
            seen_ban = await b_seen.presence(f"{room}/Cara", "unavailable")
            assert 301 in codes(seen_ban) and seen_ban["muc"]["affiliation"] == "outcast"
            with pytest.raises(PresenceError) as banned:
                await muc[cara].join_muc_wait(JID(room), "Cara", timeout=10)
            assert banned.value.presence["error"]["condition"] == "forbidden"

            # History on entering: the kicked participant comes back and gets what was said, delayed.
            counsellor.send_message(mto=JID(room), mbody="Welcome back, Dan", mtype="groupchat")
            await b_seen.message(lambda m: m["body"] == "Welcome back, Dan")
            _, _, _, history = await muc[dan].join_muc_wait(JID(room), "Dan", maxstanzas=5, timeout=10)
            assert [m["body"] for m in history] == ["Hi everyone", "Welcome back, Dan"]
            assert history[0]["delay"]["from"] == JID(room)
            assert history[0]["from"] == JID(f"{room}/Ben")

            # Leaving by disconnecting is announced to the others.
            await disconnect(ben)
            gone = await c_seen.presence(f"{room}/Ben", "unavailable")
            assert gone["muc"]["role"] == "none"
        finally:
            await disconnect(counsellor, ben, cara, dan, eve)

    # A restart keeps the room, its configuration, members, bans and history.
    async with running_server(tmp_path, overrides(), USERS) as srv:
        counsellor, c_seen = await muc_client(srv, "counsellor")
        ben, _ = await muc_client(srv, "ben")
        cara, _ = await muc_client(srv, "cara")
        muc = {c: c.plugin["xep_0045"] for c in (counsellor, ben, cara)}
        try:
            pres, _, _, _ = await muc[counsellor].join_muc_wait(JID(room), "Counsellor", timeout=10)
            assert 201 not in codes(pres) and pres["muc"]["affiliation"] == "owner"
            values = (await muc[counsellor].get_room_config(room)).get_values()
            assert values["muc#roomconfig_roomname"] == "Tuesday group"
            assert values["muc#roomconfig_membersonly"] in (True, "1")
            members = await muc[counsellor].get_affiliation_list(room, "member")
            assert {str(j) for j in members} == {"ben@localhost", "dan@localhost"}
            assert [str(j) for j in await muc[counsellor].get_affiliation_list(room, "outcast")] == [
                "cara@localhost"
            ]
            _, _, _, history = await muc[ben].join_muc_wait(JID(room), "Ben", maxstanzas=1, timeout=10)
            assert [m["body"] for m in history] == ["Welcome back, Dan"]
            with pytest.raises(PresenceError) as banned:
                await muc[cara].join_muc_wait(JID(room), "Cara", timeout=10)
            assert banned.value.presence["error"]["condition"] == "forbidden"
        finally:
            await disconnect(counsellor, ben, cara)


async def test_only_moderators_see_who_is_behind_a_nickname(tmp_path: Path) -> None:
    async with running_server(tmp_path, overrides(), USERS) as srv:
        room = f"private@{service(srv)}"
        counsellor, c_seen = await muc_client(srv, "counsellor")
        ben, b_seen = await muc_client(srv, "ben")
        muc = {c: c.plugin["xep_0045"] for c in (counsellor, ben)}
        try:
            await muc[counsellor].join_muc_wait(JID(room), "Counsellor", timeout=10)
            await muc[counsellor].set_room_config(room, await muc[counsellor].get_room_config(room))
            await muc[counsellor].set_affiliation(room, "member", jid=ben.boundjid.bare)
            await muc[ben].join_muc_wait(JID(room), "Ben", timeout=10)
            # The member list and the occupants' real JIDs are for moderators.
            with pytest.raises(IqError) as refused:
                await muc[ben].get_affiliation_list(room, "member")
            assert refused.value.iq["error"]["condition"] == "forbidden"
            assert {str(j) for j in await muc[counsellor].get_affiliation_list(room, "member")} == {
                "ben@localhost"
            }
            # Granting moderator status reveals the real JIDs to the new moderator (presence refresh).
            await muc[counsellor].set_role(room, "Ben", "moderator")

            def ben_moderates(p: Any) -> bool:
                return str(p["from"]) == f"{room}/Ben" and p["muc"]["role"] == "moderator"

            assert 110 in codes(await b_seen.wait(ben_moderates))
            assert (await c_seen.wait(ben_moderates))["muc"]["jid"] == ben.boundjid
            roles = await muc[counsellor].get_roles_list(room, "moderator")
            assert sorted(roles) == ["Ben", "Counsellor"]
        finally:
            await disconnect(counsellor, ben)
