"""Room fan-out under load: 20 occupants each send 50 messages at once; every occupant receives every
message exactly once, and each sender's messages in the order they were sent (XEP-0045 7.4).

The occupants are raw XMPP clients over real TLS sockets (``RawClient``: STARTTLS, PLAIN, bind), so the
time goes into the server's fan-out rather than into a client library's stanza handling.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

from test_muc_kit import muc_overrides, service
from test_stream_raw import RawClient

from harness import RunningServer, running_server
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element

OCCUPANTS = 20
MESSAGES = 50
MESSAGE = f"{{{ns.CLIENT}}}message"
SUBJECT = f"{{{ns.CLIENT}}}subject"
BODY = f"{{{ns.CLIENT}}}body"


async def login(srv: RunningServer, user: str) -> RawClient:
    client = await RawClient.open(srv)
    await client.login(user, srv.users[user], "load")
    return client


async def enter(client: RawClient, room: str, nick: str) -> list[Element]:
    """Send the join presence (no history) and read up to the subject, which ends entering."""
    client.send(
        f"<presence to='{room}/{nick}'><x xmlns='{ns.MUC}'><history maxstanzas='0'/></x></presence>".encode()
    )
    seen = []
    while True:
        el = await client.next(20)
        seen.append(el)
        if el.tag == MESSAGE and el.find(SUBJECT) is not None:
            return seen


def statuses(elements: list[Element]) -> set[str]:
    x, status = f"{{{ns.MUC_USER}}}x", f"{{{ns.MUC_USER}}}status"
    return {s.get("code") or "" for el in elements for u in el.findall(x) for s in u.findall(status)}


async def collect(client: RawClient, expected: int) -> list[tuple[str, str]]:
    got: list[tuple[str, str]] = []
    while len(got) < expected:
        el = await client.next(60)
        if el.tag == MESSAGE and el.get("type") == "groupchat" and (body := el.findtext(BODY)):
            got.append(((el.get("from") or "").rpartition("/")[2], body))
    return got


async def test_every_occupant_gets_every_message_once_in_send_order(tmp_path: Path) -> None:
    users = {f"user{i:02d}": f"password-{i:02d}-fanout" for i in range(OCCUPANTS)}
    options = muc_overrides(creators=["*"], default_members_only=False)
    async with running_server(tmp_path, options, users) as srv:
        room = f"busy@{service(srv)}"
        clients = list(await asyncio.gather(*(login(srv, u) for u in users)))
        names = list(users)
        owner = clients[0]
        try:
            created = await enter(owner, room, names[0])
            assert "201" in statuses(created)
            owner.send(
                f"<iq type='set' id='instant' to='{room}'><query xmlns='{ns.MUC_OWNER}'>"
                f"<x xmlns='{ns.DATA_FORMS}' type='submit'/></query></iq>".encode()
            )
            while (answer := await owner.next()).get("id") != "instant":
                pass
            assert answer.get("type") == "result"
            await asyncio.gather(*(enter(c, room, n) for c, n in zip(clients[1:], names[1:], strict=True)))

            expected = OCCUPANTS * MESSAGES
            readers = [asyncio.create_task(collect(c, expected)) for c in clients]
            started = time.monotonic()
            for n in range(MESSAGES):
                for c, name in zip(clients, names, strict=True):
                    c.send(
                        f"<message to='{room}' type='groupchat'><body>{name} #{n}</body></message>".encode()
                    )
            results = await asyncio.wait_for(asyncio.gather(*readers), 60)
            elapsed = time.monotonic() - started

            for name, got in zip(names, results, strict=True):
                assert len(got) == expected, name
                assert len(set(got)) == expected, f"{name} received duplicates"
                by_sender: dict[str, list[str]] = defaultdict(list)
                for sender, body in got:
                    by_sender[sender].append(body)
                assert sorted(by_sender) == names
                for sender, bodies in by_sender.items():
                    assert bodies == [f"{sender} #{n}" for n in range(MESSAGES)], f"{name} from {sender}"
            print(f"fan-out: {expected} messages to {OCCUPANTS} occupants in {elapsed:.2f} s")
        finally:
            for c in clients:
                c.close()
