"""Encryption at rest, end to end: after a conversation over real connections a raw dump of the database
(the SQLite files, ``mysqldump``, ``pg_dump``) contains none of the message texts; erasing an account
leaves nothing decryptable behind; rotating the master key keeps history readable; a user's data can be
exported."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, select

from backends import (  # noqa: F401  (fixtures are found by name in this namespace)
    backend_name,
    backend_url,
    database_factory,
    migrated_database,
)
from clients import Client, connect, disconnect
from harness import RunningServer, running_server
from mbeon_chat import cli, cli_keys
from mbeon_chat.storage.api import open_storage
from mbeon_chat.storage.crypto import ConversationCrypto, keyring_from_config, parse_keys
from mbeon_chat.storage.schema import offline_messages
from mbeon_chat.storage.schema_mam import mam_messages
from mbeon_chat.storage.stores.archive import ArchiveFilter, PageRequest

PLUGINS = ["ping", "disco", "roster", "offline", "mam"]
SECRETS = [
    "Ich fühle mich seit Wochen allein",
    "Thank you for telling me, that takes courage",
    "Can we talk again tomorrow at five?",
]
OFFLINE_SECRET = "A note for Carol while she is away"


def overrides(tmp_path: Path) -> dict[str, Any]:
    return {"plugins": {"enabled": PLUGINS}, "server": {"data_dir": str(tmp_path / "var")}}


async def converse(srv: RunningServer) -> tuple[Client, Client]:
    alice = await connect(srv, "alice", send_presence=False, get_roster=False)
    bob = await connect(srv, "bob", send_presence=False, get_roster=False)
    for i, text in enumerate(SECRETS):
        sender, receiver = (alice, bob) if i % 2 == 0 else (bob, alice)
        sender.send_message(mto=str(receiver.boundjid), mbody=text, mtype="chat")
        assert (await receiver.next_message())["body"] == text
    alice.send_message(mto=srv.jid("carol"), mbody=OFFLINE_SECRET, mtype="chat")  # carol is offline
    await alice.plugin["xep_0199"].ping(srv.domain)
    return alice, bob


def dump(backend: str, url: str, data_dir: Path) -> bytes:
    parsed = make_url(url)
    if backend == "sqlite":
        db = Path(parsed.database or "")
        return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    if backend == "mariadb":
        tool = shutil.which("mariadb-dump") or shutil.which("mysqldump")
        if tool is None:
            pytest.skip("no mysqldump")
        cmd = [
            tool,
            "-h",
            parsed.host or "127.0.0.1",
            "-P",
            str(parsed.port or 3306),
            "-u",
            parsed.username or "root",
        ]
        return subprocess.run([*cmd, parsed.database or ""], check=True, capture_output=True).stdout
    tool = shutil.which("pg_dump")
    if tool is None:
        pytest.skip("no pg_dump")
    cmd = [
        tool,
        "-h",
        parsed.host or "127.0.0.1",
        "-p",
        str(parsed.port or 5432),
        "-U",
        parsed.username or "postgres",
    ]
    return subprocess.run([*cmd, parsed.database or ""], check=True, capture_output=True).stdout


def leaks(raw: bytes, texts: list[str]) -> list[str]:
    """Texts found in ``raw`` as UTF-8, or in hex (pg_dump writes bytea as hex), or escaped by a dump."""
    lowered_hex = raw.lower()
    found = []
    for text in texts:
        encoded = text.encode()
        if encoded in raw or encoded.hex().encode() in lowered_hex or text.split()[-1].encode() in raw:
            found.append(text)
    return found


async def test_a_raw_database_dump_contains_no_message_text(
    tmp_path: Path,
    backend_url: str,  # noqa: F811
    backend_name: str,  # noqa: F811
) -> None:
    async with running_server(tmp_path, overrides(tmp_path), storage_url=backend_url) as srv:
        alice, bob = await converse(srv)
        await disconnect(alice, bob)
        archive = srv.app.storage.archive
        readable = [m.stanza for m in (await archive.query("bob", ArchiveFilter(), PageRequest())).messages]
        assert all(
            any(s.encode() in m for m in readable) for s in SECRETS
        )  # stored, and readable with the key
    raw = await asyncio.to_thread(dump, backend_name, backend_url, tmp_path / "var")

    assert b"bob@localhost" in raw  # the rows are in the dump (their metadata is not encrypted) ...
    assert leaks(raw, [*SECRETS, OFFLINE_SECRET]) == []  # ... their text is


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "mbeon-chat.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[storage]\nurl = ["{url}"]\n'
        f"[plugins]\nenabled = {json.dumps(PLUGINS)}\n"
    )
    return path


async def test_erasing_an_account_leaves_nothing_anyone_can_decrypt(tmp_path: Path, capsys: Any) -> None:
    async with running_server(tmp_path, overrides(tmp_path)) as srv:
        alice, bob = await converse(srv)
        await disconnect(alice, bob)
        url = srv.app.config.storage_urls[0]
        database = srv.app.storage.database
        async with database.transaction("test.backup", readonly=True) as conn:  # a stolen copy of the rows
            backup = [(r.id, r.key_id, bytes(r.payload)) for r in await conn.execute(select(mam_messages))]
            offline_backup = [
                bytes(p) for p in (await conn.scalars(select(offline_messages.c.payload))).all()
            ]
        assert len(backup) == 2 * (len(SECRETS) + 1)  # both copies, carol's message included

        config_path = write_config(tmp_path, url)
        code = await asyncio.to_thread(cli.main, ["-c", str(config_path), "user", "remove", "alice"])
        assert code == 0 and "history is unreadable" in capsys.readouterr().out

        # Bob's copies are gone from his archive at once, even in the server that cached the keys.
        assert (await srv.app.storage.archive.query("bob", ArchiveFilter(), PageRequest())).count == 0
        # With the master key and the database, the backed-up rows and offline message cannot be opened.
        config = srv.app.config
        crypto = ConversationCrypto(database, keyring_from_config(config))
        for message_id, _key_id, payload in backup:
            assert await crypto.open(payload, b"mam|" + message_id.encode()) is None
        for payload in offline_backup:
            assert await crypto.open(payload, b"offline|carol") is None
        async with database.transaction("test.rest", readonly=True) as conn:
            assert (await conn.scalars(select(mam_messages.c.id))).all() == []


async def test_key_rotation_keeps_history_readable_and_retires_the_old_key(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_keys, "_REFRESH_WAIT_S", 0.1)
    async with running_server(tmp_path, overrides(tmp_path)) as srv:
        alice, bob = await converse(srv)
        await disconnect(alice, bob)
        url = srv.app.config.storage_urls[0]
        key_file = tmp_path / "var" / "master.key"
        old_id = parse_keys(key_file.read_text(), "old")[0].id
        config_path = write_config(tmp_path, url)
        new_key = tmp_path / "new.key"

        assert (
            await asyncio.to_thread(
                cli.main, ["-c", str(config_path), "keys", "generate", "--out", str(new_key)]
            )
            == 0
        )
        new_id = parse_keys(new_key.read_text(), "new")[0].id
        code = await asyncio.to_thread(
            cli.main,
            ["-c", str(config_path), "keys", "rotate", "--new-key-file", str(new_key), "--batch", "1"],
        )
        out = capsys.readouterr().out
        assert code == 0, out
        assert "re-wrapped 2/2 data keys" in out and f"wrapped by {new_id}" in out
        assert [k.id for k in parse_keys(key_file.read_text(), "rotated")] == [new_id, old_id]

        # The running server still reads everything (it re-reads the key file when it meets the new key).
        assert (await srv.app.storage.archive.query("alice", ArchiveFilter(), PageRequest())).count == 4
        assert await asyncio.to_thread(cli.main, ["-c", str(config_path), "keys", "prune"]) == 0
        assert "removed " + old_id in capsys.readouterr().out
        assert [k.id for k in parse_keys(key_file.read_text(), "pruned")] == [new_id]
        assert await asyncio.to_thread(cli.main, ["-c", str(config_path), "keys", "status"]) == 0
        assert f"{new_id}  primary (wraps new data keys), wraps 2 data keys" in capsys.readouterr().out

    # A fresh process with only the new key reads the whole history, offline message included.
    storage = await open_storage(url, keyring=keyring_from_config(srv.app.config), domain=srv.domain)
    try:
        bodies = [
            m.stanza for m in (await storage.archive.query("bob", ArchiveFilter(), PageRequest())).messages
        ]
        assert all(any(s.encode() in b for b in bodies) for s in SECRETS)
        assert OFFLINE_SECRET.encode() in (await storage.offline.fetch("carol"))[0][1]
    finally:
        await storage.close()


async def test_user_export_writes_roster_and_decrypted_archive_as_json(tmp_path: Path, capsys: Any) -> None:
    async with running_server(tmp_path, overrides(tmp_path)) as srv:
        alice, bob = await converse(srv)
        await alice.update_roster(srv.jid("bob"), name="Bob", groups=["Counsellors"])
        await disconnect(alice, bob)
        config_path = write_config(tmp_path, srv.app.config.storage_urls[0])
        out_file = tmp_path / "alice.json"

        code = await asyncio.to_thread(
            cli.main, ["-c", str(config_path), "user", "export", "alice", "--out", str(out_file)]
        )

    assert code == 0
    data = json.loads(out_file.read_text())
    assert data["jid"] == srv.jid("alice")
    assert [m["body"] for m in data["archive"]] == [*SECRETS, OFFLINE_SECRET]
    assert [m["direction"] for m in data["archive"]] == ["sent", "received", "sent", "sent"]
    assert data["archive"][-1]["with"] == srv.jid("carol")
    assert data["roster"]["items"][0] | {"groups": ["Counsellors"]} == data["roster"]["items"][0]
    assert data["roster"]["items"][0]["jid"] == srv.jid("bob")
    assert (out_file.stat().st_mode & 0o777) == 0o600
