"""``mbeon-chat keys generate|status|rotate|prune`` and ``mbeon-chat user export`` (wired up in cli.py).

Master key rotation, online, with a key file (``storage.master_key_file``)::

    mbeon-chat keys generate --out /etc/mbeon-chat/master-2026.key
    mbeon-chat keys rotate --new-key-file /etc/mbeon-chat/master-2026.key
    mbeon-chat keys prune          # once every server runs with the new key (or after restarting them)

``rotate`` first puts the new key at the top of the configured key file (the old keys stay below it,
readable), so running servers pick it up by themselves; then it re-wraps every data key in batches with
progress output; it can be interrupted and run again. With the key in an environment variable, set it to
``new,old`` on every server, restart them, and run ``mbeon-chat keys rotate``; then drop ``old``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from mbeon_chat.config import Config

_REFRESH_WAIT_S = 11.0  # servers re-read the key file at most every 10 s


def _fail(message: str, code: int = 1) -> int:
    print(f"mbeon-chat: {message}", file=sys.stderr)
    return code


def _keyring(config: Config) -> Any:
    from mbeon_chat.storage.crypto import keyring_from_config

    return keyring_from_config(config, create_default=False)


async def _open(config: Config, keyring: Any) -> Any:
    from mbeon_chat.storage.api import open_storage

    return await open_storage(config.storage_urls, keyring=keyring, domain=config.server.domain)


def cmd_keys(args: argparse.Namespace, config: Config) -> int:
    from mbeon_chat.storage.crypto import KeyringError

    try:
        if args.action == "generate":
            return _generate(args)
        if args.action == "status":
            return asyncio.run(_status(config))
        if args.action == "rotate":
            return asyncio.run(_rotate(args, config))
        return asyncio.run(_prune(config))
    except KeyringError as exc:
        return _fail(str(exc))


def _generate(args: argparse.Namespace) -> int:
    from mbeon_chat.storage.crypto import MasterKey, write_key_file

    key = MasterKey.generate()
    if not args.out:
        print(key.encode())
        print(f"# master key id {key.id}", file=sys.stderr)
        return 0
    try:
        write_key_file(Path(args.out), [key])
    except FileExistsError:
        return _fail(f"{args.out} exists; it is never overwritten (it may hold the key to your data)")
    print(f"wrote master key {key.id} to {args.out} (mode 0600)")
    print(
        f"use it: `mbeon-chat keys rotate --new-key-file {args.out}`, or point storage.master_key_file at it"
    )
    return 0


async def _status(config: Config) -> int:
    ring = _keyring(config)
    storage = await _open(config, ring)
    try:
        usage = await storage.crypto.master_key_usage()
    finally:
        await storage.close()
    print(f"keyring: {ring.source}")
    held = {key.id for key in ring.keys}
    for i, key in enumerate(ring.keys):
        role = "primary (wraps new data keys)" if i == 0 else "read only"
        print(f"  {key.id}  {role}, wraps {usage.get(key.id, 0)} data keys")
    missing = {k: n for k, n in usage.items() if k not in held}
    for key_id, n in sorted(missing.items()):
        print(f"  {key_id}  NOT IN THE KEYRING, wraps {n} data keys: their messages cannot be read")
    return 1 if missing else 0


def _load_new_key(args: argparse.Namespace) -> Any:
    from mbeon_chat.storage.crypto import KeyringError, parse_keys

    if args.new_key_file:
        try:
            return parse_keys(Path(args.new_key_file).read_text(), args.new_key_file)[0]
        except OSError as exc:
            raise KeyringError(f"{args.new_key_file}: {exc.strerror or exc}") from None
    if args.new_key_env:
        value = os.environ.get(args.new_key_env, "")
        return parse_keys(value, f"${args.new_key_env}")[0]
    return None


async def _rotate(args: argparse.Namespace, config: Config) -> int:
    from mbeon_chat.storage.crypto import Keyring, write_key_file

    ring = _keyring(config)
    target = _load_new_key(args) or ring.primary
    held = [key.id for key in ring.keys]
    file_updated = False
    if target.id not in held or held[0] != target.id:
        if ring.path is not None:
            keys = [target, *[k for k in ring.keys if k.id != target.id]]
            write_key_file(ring.path, keys, replace=True)
            file_updated = True
            print(f"{ring.path}: master key {target.id} is now the primary; the old keys stay for reading")
        elif not args.servers_stopped:
            old = ",".join(key.encode()[:6] + "..." for key in ring.keys)
            return _fail(
                f"the servers read their master keys from {ring.source}, which this command cannot change: "
                f"set it to the new key followed by the old ones (<new>,{old}) on every server, restart "
                f"them, "
                f"then run `mbeon-chat keys rotate` without --new-key-*; or, with every server stopped, "
                f"pass --servers-stopped"
            )
    work_ring = Keyring([target, *[k for k in ring.keys if k.id != target.id]], source=ring.source)
    storage = await _open(config, work_ring)
    try:
        crypto = storage.crypto

        def progress(done: int, total: int) -> None:
            print(f"  re-wrapped {done}/{total} data keys", flush=True)

        print(f"re-wrapping data keys under master key {target.id} ...", flush=True)
        report = await crypto.rotate(target, batch=args.batch, progress=progress)
        if file_updated:
            print(
                f"waiting {_REFRESH_WAIT_S:.0f} s for running servers to switch to the new key ...",
                flush=True,
            )
            await asyncio.sleep(_REFRESH_WAIT_S)
            late = await crypto.rotate(target, batch=args.batch, progress=progress)
            report.rewrapped += late.rewrapped
            report.unreadable = late.unreadable
        usage = await crypto.master_key_usage()
    finally:
        await storage.close()
    for key_id, n in sorted(report.unreadable.items()):
        print(
            f"warning: {n} data keys are wrapped by master key {key_id}, which is not in the keyring",
            file=sys.stderr,
        )
    print(f"done: {report.rewrapped} data keys re-wrapped; {usage.get(target.id, 0)} wrapped by {target.id}")
    if report.unreadable:
        return 1
    if ring.path is not None:
        print("remove the old keys once every server uses the new one: `mbeon-chat keys prune`")
    elif args.servers_stopped:
        print(f"now set {ring.source} to the new key only and start the servers")
    else:
        print(f"now set {ring.source} to the new key only on every server and restart them")
    return 0


async def _prune(config: Config) -> int:
    from mbeon_chat.storage.crypto import write_key_file

    ring = _keyring(config)
    if ring.path is None:
        return _fail(f"the keyring comes from {ring.source}: remove old keys from it by hand")
    storage = await _open(config, ring)
    try:
        usage = await storage.crypto.master_key_usage()
    finally:
        await storage.close()
    keys = ring.keys
    keep = [keys[0]] + [k for k in keys[1:] if usage.get(k.id, 0) > 0]
    for key in keys[1:]:
        if key in keep:
            print(f"kept {key.id}: still wraps {usage[key.id]} data keys (run `mbeon-chat keys rotate`)")
        else:
            print(f"removed {key.id} from {ring.path}")
    if len(keep) != len(keys):
        write_key_file(ring.path, keep, replace=True)
        print("destroy every other copy of the removed keys (backups too): that also makes old database")
        print("backups unreadable, including data erased since they were taken")
    else:
        print("nothing to remove")
    return 0


# --- user export ----------------------------------------------------------------------------------
def cmd_user_export(args: argparse.Namespace, config: Config, username: str) -> int:
    from mbeon_chat.storage.crypto import KeyringError

    try:
        data = asyncio.run(export_user(config, username))
    except KeyringError as exc:
        return _fail(str(exc))
    if data is None:
        return _fail(f"no user {username}@{config.server.domain}; see `mbeon-chat user list`")
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if args.out and args.out != "-":
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(
            f"wrote {len(data['archive'])} archived messages of {data['jid']} to {args.out}", file=sys.stderr
        )
    else:
        sys.stdout.write(text)
    return 0


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat().replace("+00:00", "Z")


async def export_user(config: Config, username: str) -> dict[str, Any] | None:
    """Everything stored about ``username`` (decrypted), as plain JSON data; None if no such account."""
    from mbeon_chat.features.mam.query import parse_stanza
    from mbeon_chat.xmpp.stanza import BODY

    def body_of(stanza: bytes) -> str | None:
        try:
            return parse_stanza(stanza).findtext(BODY)
        except Exception:
            return None

    storage = await _open(config, _keyring(config))
    try:
        record = await storage.accounts.get(username)
        if record is None:
            return None
        version, items = await storage.roster.get_roster(username)
        prefs = await storage.archive.get_prefs(username)
        archived = await storage.archive.export(username)
        offline = await storage.offline.fetch(username)
    finally:
        await storage.close()
    return {
        "jid": f"{username}@{config.server.domain}",
        "exported_at": _iso(int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)),
        "account": {"created_at": _iso(record.created_at)},
        "roster": {
            "version": version,
            "items": [
                {
                    "jid": item.contact,
                    "name": item.name,
                    "subscription": item.subscription,
                    "groups": list(item.groups),
                    "pending_out": item.ask_out,
                    "pending_in": item.pending_in,
                    "approved": item.approved,
                    "in_roster": item.in_roster,
                }
                for item in items
            ],
        },
        "archive_preferences": {
            "default": prefs.default,
            "always": list(prefs.always),
            "never": list(prefs.never),
        },
        "archive": [
            {
                "id": msg.id,
                "timestamp": _iso(msg.created_at),
                "direction": "sent" if msg.outgoing else "received",
                "with": msg.with_jid + (f"/{msg.with_resource}" if msg.with_resource else ""),
                "body": body_of(msg.stanza),
                "stanza": msg.stanza.decode("utf-8", "replace"),
            }
            for msg in archived
        ],
        "offline_messages": [
            {"id": message_id, "body": body_of(payload), "stanza": payload.decode("utf-8", "replace")}
            for message_id, payload in offline
        ],
    }


def add_parsers(sub: Any, user_sub: Any) -> None:
    """The ``keys`` command and ``user export`` (cli.build_parser calls this)."""
    keys = sub.add_parser(
        "keys", help="master keys of the encryption at rest: generate, status, rotate, prune"
    )
    keys_sub = keys.add_subparsers(dest="action", required=True)
    gen = keys_sub.add_parser("generate", help="make a new master key")
    gen.add_argument(
        "--out", metavar="FILE", help="write it here (mode 0600, never overwrites); default: stdout"
    )
    keys_sub.add_parser("status", help="the keyring and how many data keys each master key wraps")
    rotate = keys_sub.add_parser(
        "rotate", help="re-wrap every data key under a new master key (no re-encryption)"
    )
    new = rotate.add_mutually_exclusive_group()
    new.add_argument("--new-key-file", metavar="FILE", help="the new master key (from `keys generate --out`)")
    new.add_argument("--new-key-env", metavar="VAR", help="the new master key from this environment variable")
    rotate.add_argument("--batch", type=int, default=500, help="data keys per transaction (default 500)")
    rotate.add_argument(
        "--servers-stopped",
        action="store_true",
        help="with keys from an environment variable: no server runs",
    )
    keys_sub.add_parser("prune", help="remove master keys that wrap no data key from the key file")
    export = user_sub.add_parser("export", help="a user's data (roster, archive decrypted) as JSON")
    export.add_argument("name")
    export.add_argument("--out", metavar="FILE", help="write to FILE (mode 0600) instead of stdout")


__all__ = ["add_parsers", "cmd_keys", "cmd_user_export", "export_user"]
