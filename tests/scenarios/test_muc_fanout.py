"""Room fan-out under load: 20 occupants each send 50 messages at once; every occupant receives every
message exactly once, and each sender's messages in the order they were sent (XEP-0045 7.4)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from slixmpp import JID
from test_muc_kit import muc_overrides, owner_submit, service

from clients import Client, connect, disconnect
from harness import running_server

OCCUPANTS = 20
MESSAGES = 50


async def test_every_occupant_gets_every_message_once_in_send_order(tmp_path: Path) -> None:
    users = {f"user{i:02d}": f"password-{i:02d}-fanout" for i in range(OCCUPANTS)}
    options = muc_overrides(creators=["*"], default_members_only=False)
    async with running_server(tmp_path, options, users) as srv:
        room = f"busy@{service(srv)}"
        clients: list[Client] = list(
            await asyncio.gather(*(connect(srv, u, plugins=("xep_0045",)) for u in users))
        )
        received: dict[str, list[tuple[str, str]]] = defaultdict(list)
        complete = asyncio.Event()
        expected = OCCUPANTS * MESSAGES
        done: set[str] = set()

        def collector(name: str) -> Any:
            def on_message(msg: Any) -> None:
                if msg["type"] == "groupchat" and msg["body"]:
                    got = received[name]
                    got.append((msg["from"].resource, msg["body"]))
                    if len(got) >= expected:
                        done.add(name)
                        if len(done) == OCCUPANTS:
                            complete.set()

            return on_message

        try:
            owner, *others = clients
            await owner.plugin["xep_0045"].join_muc_wait(JID(room), "user00", maxstanzas=0, timeout=10)
            await owner_submit(owner, room)  # an instant room
            await asyncio.gather(
                *(
                    c.plugin["xep_0045"].join_muc_wait(JID(room), c.boundjid.user, maxstanzas=0, timeout=20)
                    for c in others
                )
            )
            for c in clients:
                c.add_event_handler("groupchat_message", collector(c.boundjid.user))

            started = time.monotonic()
            for n in range(MESSAGES):
                for c in clients:
                    c.send_message(mto=room, mbody=f"{c.boundjid.user} #{n}", mtype="groupchat")
            await asyncio.wait_for(complete.wait(), 60)
            elapsed = time.monotonic() - started

            for name, got in received.items():
                assert len(got) == expected, name
                assert len(set(got)) == expected, f"{name} received duplicates"
                by_sender: dict[str, list[str]] = defaultdict(list)
                for sender, body in got:
                    by_sender[sender].append(body)
                assert sorted(by_sender) == sorted(users)
                for sender, bodies in by_sender.items():
                    assert bodies == [f"{sender} #{n}" for n in range(MESSAGES)], f"{name} from {sender}"
            print(f"fan-out: {expected} messages to {OCCUPANTS} occupants in {elapsed:.2f} s")
        finally:
            await disconnect(*clients)
