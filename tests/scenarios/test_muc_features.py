"""XEP-0045 features beyond the basic session, over real connections (slixmpp): instant rooms, nick
changes, subjects, discovery, configuration errors, destruction, passwords, moderated rooms and voice
requests, several sessions sharing a nickname, declines, and a plugin reload with people in the room."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError, PresenceError
from test_muc_kit import codes, muc_client, muc_overrides, owner_submit, service

from clients import disconnect
from harness import RunningServer, running_server

MUC_USER = "http://jabber.org/protocol/muc#user"
USERS = {"anna": "anna-secret-1", "ben": "ben-secret-22", "cara": "cara-secret-333"}
OPEN = {"creators": ["*"], "default_members_only": False}


def field(name: str, value: str) -> str:
    return f"<field var='{name}'><value>{value}</value></field>"


def form(*fields: str) -> str:
    return "<x xmlns='jabber:x:data' type='submit'>" + "".join(fields) + "</x>"


async def create(srv: RunningServer, client: Any, room: str, nick: str, *fields: str) -> Any:
    pres, _, _, _ = await client.plugin["xep_0045"].join_muc_wait(JID(room), nick, timeout=10)
    await owner_submit(client, room, form(*fields))
    return pres


async def test_instant_room_nick_change_subject_and_discovery(tmp_path: Path) -> None:
    async with running_server(tmp_path, muc_overrides(**OPEN), USERS) as srv:
        room = f"open@{service(srv)}"
        anna, a_seen = await muc_client(srv, "anna")
        ben, b_seen = await muc_client(srv, "ben")
        try:
            pres = await create(
                srv,
                anna,
                room,
                "Anna",
                field("muc#roomconfig_publicroom", "1"),
                field("muc#roomconfig_roomname", "Open"),
            )
            assert 201 in codes(pres)
            await ben.plugin["xep_0045"].join_muc_wait(JID(room), "Ben", timeout=10)

            # Nickname change: unavailable with 303 and the new nick, then presence under the new nick.
            ben.send_presence(pto=f"{room}/Benjamin")
            old = await a_seen.presence(f"{room}/Ben", "unavailable")
            assert 303 in codes(old) and old["muc"]["item_nick"] == "Benjamin"
            mine = await b_seen.presence(f"{room}/Ben", "unavailable")
            assert {110, 303} <= codes(mine)
            await a_seen.presence(f"{room}/Benjamin")
            assert 110 in codes(await b_seen.presence(f"{room}/Benjamin"))
            ben.send_presence(pto=f"{room}/Anna")  # taken
            assert (await b_seen.wait(lambda p: p["type"] == "error"))["error"]["condition"] == "conflict"

            # Subject: moderators may change it, participants may not (by default).
            ben.plugin["xep_0045"].set_subject(room, "Ben's topic")
            refused = await b_seen.message(lambda m: m["type"] == "error")
            assert refused["error"]["condition"] == "forbidden"
            anna.plugin["xep_0045"].set_subject(room, "Sleep and school")
            subject = await b_seen.message(lambda m: m["subject"] == "Sleep and school")
            assert subject["from"] == JID(f"{room}/Anna")

            # Discovery: the service, the room (features and room info), the occupants.
            disco = anna.plugin["xep_0030"]
            info = await disco.get_info(jid=JID(service(srv)), timeout=10)
            assert ("conference", "text", "Group sessions", None) in [
                tuple(i) for i in info["disco_info"]["identities"]
            ] or any(i[0] == "conference" for i in info["disco_info"]["identities"])
            assert "http://jabber.org/protocol/muc" in info["disco_info"]["features"]
            items = await disco.get_items(jid=JID(service(srv)), timeout=10)
            assert [(str(i[0]), i[2]) for i in items["disco_items"]["items"]] == [(room, "Open")]
            info = await disco.get_info(jid=JID(room), timeout=10)
            features = set(info["disco_info"]["features"])
            assert {
                "muc_open",
                "muc_semianonymous",
                "muc_persistent",
                "muc_public",
                "muc_unsecured",
            } <= features
            assert "muc_unmoderated" in features
            roominfo = info["disco_info"]["form"].get_values()
            assert roominfo["muc#roominfo_occupants"] == "2"
            assert roominfo["muc#roominfo_subject"] == "Sleep and school"
            occupants = await disco.get_items(jid=JID(room), timeout=10)
            assert sorted(str(i[0]) for i in occupants["disco_items"]["items"]) == [
                f"{room}/Anna",
                f"{room}/Benjamin",
            ]

            # An unknown configuration field is a bad request and changes nothing.
            with pytest.raises(IqError) as bad:
                await owner_submit(anna, room, form(field("muc#roomconfig_colour", "blue")))
            assert bad.value.iq["error"]["condition"] == "bad-request"
            with pytest.raises(IqError) as not_owner:
                await owner_submit(ben, room, form(field("muc#roomconfig_roomname", "Mine")))
            assert not_owner.value.iq["error"]["condition"] == "forbidden"

            # A configuration change is announced with status 104 (and 172 when JIDs become visible).
            await owner_submit(anna, room, form(field("muc#roomconfig_whois", "anyone")))
            notice = await b_seen.message(lambda m: 104 in codes(m))
            assert 172 in codes(notice) and notice["from"] == JID(room)

            # Destruction: every occupant learns the reason and the alternate venue.
            await anna.plugin["xep_0045"].destroy(room, reason="Moving on", altroom=f"next@{service(srv)}")
            gone = await b_seen.presence(f"{room}/Benjamin", "unavailable")
            destroy = gone.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy")
            assert destroy is not None and destroy.get("jid") == f"next@{service(srv)}"
            assert destroy.findtext(f"{{{MUC_USER}}}reason") == "Moving on"
            with pytest.raises(IqError) as missing:
                await disco.get_info(jid=JID(room), timeout=10)
            assert missing.value.iq["error"]["condition"] == "item-not-found"
        finally:
            await disconnect(anna, ben)


async def test_password_rooms_and_room_size(tmp_path: Path) -> None:
    async with running_server(tmp_path, muc_overrides(**OPEN), USERS) as srv:
        room = f"secret@{service(srv)}"
        anna, _ = await muc_client(srv, "anna")
        ben, _ = await muc_client(srv, "ben")
        cara, _ = await muc_client(srv, "cara")
        try:
            await create(
                srv,
                anna,
                room,
                "Anna",
                field("muc#roomconfig_passwordprotectedroom", "1"),
                field("muc#roomconfig_roomsecret", "open sesame"),
                field("muc#roomconfig_maxusers", "2"),
            )
            info = await anna.plugin["xep_0030"].get_info(jid=JID(room), timeout=10)
            assert "muc_passwordprotected" in info["disco_info"]["features"]
            for password in (None, "wrong"):
                with pytest.raises(PresenceError) as refused:
                    await ben.plugin["xep_0045"].join_muc_wait(
                        JID(room), "Ben", password=password, timeout=10
                    )
                assert refused.value.presence["error"]["condition"] == "not-authorized"
            await ben.plugin["xep_0045"].join_muc_wait(JID(room), "Ben", password="open sesame", timeout=10)
            with pytest.raises(PresenceError) as full:
                await cara.plugin["xep_0045"].join_muc_wait(
                    JID(room), "Cara", password="open sesame", timeout=10
                )
            assert full.value.presence["error"]["condition"] == "service-unavailable"
        finally:
            await disconnect(anna, ben, cara)


async def test_visitors_ask_for_voice_and_a_moderator_grants_it(tmp_path: Path) -> None:
    async with running_server(tmp_path, muc_overrides(**OPEN), USERS) as srv:
        room = f"moderated@{service(srv)}"
        anna, a_seen = await muc_client(srv, "anna")
        ben, b_seen = await muc_client(srv, "ben")
        try:
            await create(srv, anna, room, "Anna", field("muc#roomconfig_moderatedroom", "1"))
            pres, _, _, _ = await ben.plugin["xep_0045"].join_muc_wait(JID(room), "Ben", timeout=10)
            assert pres["muc"]["role"] == "visitor"

            ben.send_message(mto=JID(room), mbody="Can I say something?", mtype="groupchat")
            refused = await b_seen.message(lambda m: m["type"] == "error")
            assert refused["error"]["condition"] == "forbidden"

            ben.plugin["xep_0045"].request_voice(room, "participant")
            request = await a_seen.message(lambda m: m.xml.find("{jabber:x:data}x") is not None)
            values = request["form"].get_values()
            assert values["muc#role"] == "participant" and str(values["muc#jid"]) == "ben@localhost"

            approval = anna.make_message(mto=room)
            approval.xml.append(
                ET.fromstring(
                    "<x xmlns='jabber:x:data' type='submit'>"
                    "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>"
                    "<field var='muc#role'><value>participant</value></field>"
                    "<field var='muc#roomnick'><value>Ben</value></field>"
                    "<field var='muc#request_allow'><value>true</value></field></x>"
                )
            )
            approval.send()
            voiced = await b_seen.wait(lambda p: p.name == "presence" and p["muc"]["role"] == "participant")
            assert 110 in codes(voiced)
            ben.send_message(mto=JID(room), mbody="Thank you", mtype="groupchat")
            assert (await a_seen.message(lambda m: m["body"] == "Thank you"))["from"] == JID(f"{room}/Ben")

            # Leaving with unavailable presence, with a status text for the others.
            ben.plugin["xep_0045"].leave_muc(JID(room), "Ben", "Good night")
            left = await a_seen.presence(f"{room}/Ben", "unavailable")
            assert left["status"] == "Good night" and left["muc"]["role"] == "none"
            assert 110 in codes(await b_seen.presence(f"{room}/Ben", "unavailable"))
        finally:
            await disconnect(anna, ben)


async def test_sessions_of_one_user_share_a_nickname(tmp_path: Path) -> None:
    async with running_server(tmp_path, muc_overrides(**OPEN), USERS) as srv:
        room = f"shared@{service(srv)}"
        anna, a_seen = await muc_client(srv, "anna")
        phone, p_seen = await muc_client(srv, "ben", "phone")
        laptop, l_seen = await muc_client(srv, "ben", "laptop")
        try:
            await create(srv, anna, room, "Anna")
            await phone.plugin["xep_0045"].join_muc_wait(JID(room), "Ben", timeout=10)
            await a_seen.presence(f"{room}/Ben")
            pres, _, occupants, _ = await laptop.plugin["xep_0045"].join_muc_wait(
                JID(room), "Ben", timeout=10
            )
            assert 110 in codes(pres)
            assert sorted(str(o["from"]) for o in occupants) == [f"{room}/Anna", f"{room}/Ben"]

            anna.send_message(mto=JID(room), mbody="Both of you?", mtype="groupchat")
            for seen in (p_seen, l_seen):
                await seen.message(lambda m: m["body"] == "Both of you?")

            # One session leaving is private; the last one leaving is the occupant leaving.
            await disconnect(phone)
            anna.send_message(mto=JID(room), mbody="Still there?", mtype="groupchat")
            await l_seen.message(lambda m: m["body"] == "Still there?")
            assert not a_seen.has_presence_from(f"{room}/Ben")
            await disconnect(laptop)
            await a_seen.presence(f"{room}/Ben", "unavailable")
        finally:
            await disconnect(anna, phone, laptop)


async def test_a_declined_invitation_reaches_the_inviter(tmp_path: Path) -> None:
    async with running_server(tmp_path, muc_overrides(**OPEN), USERS) as srv:
        room = f"invite@{service(srv)}"
        anna, a_seen = await muc_client(srv, "anna")
        ben, b_seen = await muc_client(srv, "ben")
        try:
            await create(srv, anna, room, "Anna")
            anna.plugin["xep_0045"].invite(room, "ben@localhost", reason="Join us")
            await b_seen.message(lambda m: m["muc"]["invite"]["reason"] == "Join us")
            ben.plugin["xep_0045"].decline(room, "anna@localhost", reason="Not today")
            declined = await a_seen.message(
                lambda m: m.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}decline") is not None
            )
            assert declined["from"] == JID(room)
            assert declined["muc"]["decline"]["from"] == JID("ben@localhost")
            assert declined["muc"]["decline"]["reason"] == "Not today"
        finally:
            await disconnect(anna, ben)


async def test_a_plugin_reload_keeps_everybody_in_their_rooms(tmp_path: Path) -> None:
    async with running_server(tmp_path, muc_overrides(**OPEN), USERS) as srv:
        room = f"steady@{service(srv)}"
        anna, a_seen = await muc_client(srv, "anna")
        ben, _ = await muc_client(srv, "ben")
        cara, _ = await muc_client(srv, "cara")
        try:
            await create(srv, anna, room, "Anna")
            await ben.plugin["xep_0045"].join_muc_wait(JID(room), "Ben", timeout=10)
            ben.send_message(mto=JID(room), mbody="before the reload", mtype="groupchat")
            await a_seen.message(lambda m: m["body"] == "before the reload")

            report = await srv.app.reload(plugin="muc")
            assert report.ok, report.error

            ben.send_message(mto=JID(room), mbody="after the reload", mtype="groupchat")
            assert (await a_seen.message(lambda m: m["body"] == "after the reload"))["from"] == JID(
                f"{room}/Ben"
            )
            _, _, occupants, history = await cara.plugin["xep_0045"].join_muc_wait(
                JID(room), "Cara", timeout=10
            )
            assert {str(o["from"]) for o in occupants} == {f"{room}/Anna", f"{room}/Ben", f"{room}/Cara"}
            assert [m["body"] for m in history] == ["before the reload", "after the reload"]
            await disconnect(ben)
            await a_seen.presence(f"{room}/Ben", "unavailable")
        finally:
            await disconnect(anna, ben, cara)
