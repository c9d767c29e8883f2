"""``mbeon-chat``: serve | check-config | migrate | user add/remove/passwd/list/export | keys | reload |
plugins | status."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence
from typing import Any

from mbeon_chat.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "config/mbeon-chat.toml"


def _config_path(args: argparse.Namespace) -> str | None:
    path: str | None = args.config or os.environ.get("MBEON_CONFIG")
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    return path


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _fail(message: str, code: int = 1) -> int:
    print(f"mbeon-chat: {message}", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    from mbeon_chat.app import App
    from mbeon_chat.plugin.host import PluginError
    from mbeon_chat.storage.crypto import KeyringError
    from mbeon_chat.storage.migrate import SchemaOutOfDate

    config = _load(args)
    if config.server.workers > 1:
        from mbeon_chat.cluster.workers import serve_workers

        return serve_workers(config, _config_path(args))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = App(config, _config_path(args))
    try:
        asyncio.run(app.run())
    except (SchemaOutOfDate, PluginError, KeyringError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot start: {exc}. Is another server already listening on these ports?")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    from mbeon_chat.plugin.host import PluginError, PluginHost

    # Validate plugin options too, without starting anything.
    try:
        asyncio.run(_check_plugins(config))
    except PluginError as exc:
        return _fail(str(exc))
    print(f"configuration OK: domain {config.server.domain}, {len(config.plugins.enabled)} plugins")
    _ = PluginHost
    return 0


async def _check_plugins(config: Config) -> None:
    from mbeon_chat.core.context import ServerContext
    from mbeon_chat.core.hooks import HookBus
    from mbeon_chat.core.router import Router
    from mbeon_chat.core.session import SessionRegistry
    from mbeon_chat.plugin.host import PluginHost

    registry = SessionRegistry()
    hooks = HookBus()
    ctx = ServerContext(
        config.server.domain, config, Router(config.server.domain, registry, hooks), registry, hooks
    )
    host = PluginHost(ctx, [config.path(d) for d in config.plugins.site_dirs])
    host.check(config.plugins.enabled)


def cmd_migrate(args: argparse.Namespace) -> int:
    from mbeon_chat.storage import migrate

    config = _load(args)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    for url in config.storage_urls[:1]:
        print(f"migrating {_safe_url(url)} ...")
        asyncio.run(migrate.upgrade(url, progress=lambda line: print(f"  {line}", flush=True)))
    print("schema is up to date")
    return 0


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


async def _with_accounts(config: Config, fn: Any) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    from mbeon_chat.core.accounts import Accounts
    from mbeon_chat.storage.api import open_storage
    from mbeon_chat.storage.crypto import Keyring, KeyringError, keyring_from_config

    try:
        keyring = keyring_from_config(config, create_default=False)
    except KeyringError:  # removing an account shreds its keys, which needs no master key
        keyring = Keyring([], source="no master key")
    storage = await open_storage(config.storage_urls, keyring=keyring, domain=config.server.domain)
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        return await fn(Accounts(storage.accounts, pool, config.auth.scram_iterations), storage)
    finally:
        pool.shutdown()
        await storage.close()


def _username(config: Config, raw: str) -> str:
    from mbeon_chat.xmpp.jid import JID, InvalidJID

    text = raw if "@" in raw else f"{raw}@{config.server.domain}"
    try:
        jid = JID.parse(text)
    except InvalidJID as exc:
        raise ConfigError(f"invalid user name {raw!r}: {exc}") from None
    if jid.local is None or jid.resource is not None or jid.domain != config.server.domain:
        raise ConfigError(
            f"invalid user name {raw!r}: give a name like alice or alice@{config.server.domain}"
        )
    return jid.local


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif os.environ.get("MBEON_PASSWORD"):
        password = os.environ["MBEON_PASSWORD"]
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the passwords do not match; nothing changed")
    if len(password) < 8:
        raise ConfigError("the password is too short (8 characters at least); nothing changed")
    return password


def cmd_user(args: argparse.Namespace) -> int:
    from mbeon_chat.core.accounts import AccountError
    from mbeon_chat.storage.api import AlreadyExists, NotFound, SchemaOutOfDate

    config = _load(args)
    action = args.action
    config.data_dir.mkdir(parents=True, exist_ok=True)  # no database yet: "run migrate", not a trace
    try:
        if action == "list":
            names = asyncio.run(_with_accounts(config, lambda acc, st: st.accounts.list()))
            for name in names:
                print(f"{name}@{config.server.domain}")
            return 0
        username = _username(config, args.name)
        if action == "export":
            from mbeon_chat.cli_keys import cmd_user_export

            return cmd_user_export(args, config, username)
        if action == "add":
            password = _password(args)
            asyncio.run(_with_accounts(config, lambda acc, st: acc.create(username, password)))
            print(f"created {username}@{config.server.domain}")
        elif action == "passwd":
            password = _password(args)
            asyncio.run(_with_accounts(config, lambda acc, st: acc.set_password(username, password)))
            print(f"password changed for {username}@{config.server.domain}")
        elif action == "remove":
            removed = asyncio.run(_with_accounts(config, lambda acc, st: acc.delete(username)))
            if not removed:
                return _fail(f"no user {username}@{config.server.domain}; see `mbeon-chat user list`")
            print(
                f"removed {username}@{config.server.domain} with its roster, offline messages and archive; "
                f"its conversation keys are destroyed, so its history is unreadable everywhere"
            )
    except AlreadyExists:
        return _fail(
            f"user {args.name} already exists; "
            f"use `mbeon-chat user passwd {args.name}` to change the password"
        )
    except NotFound:
        return _fail(f"no user {args.name}; create it with `mbeon-chat user add {args.name}`")
    except (AccountError, SchemaOutOfDate) as exc:
        return _fail(str(exc))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from mbeon_chat.cli_keys import cmd_keys as run

    config = _load(args)
    return run(args, config)


def cmd_reload(args: argparse.Namespace) -> int:
    from mbeon_chat.admin import send_admin_command

    config = _load(args)
    command = {"op": "reload", "plugin": args.plugin}
    return send_admin_command(config, command)


def cmd_plugins(args: argparse.Namespace) -> int:
    from mbeon_chat.admin import send_admin_command

    config = _load(args)
    if args.action == "list":
        return send_admin_command(config, {"op": "plugins"})
    return send_admin_command(config, {"op": args.action, "plugin": args.name})


def cmd_status(args: argparse.Namespace) -> int:
    from mbeon_chat.admin import send_admin_command

    return send_admin_command(_load(args), {"op": "status"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbeon-chat", description="XMPP server for online counselling")
    parser.add_argument("-c", "--config", help=f"config file (default: $MBEON_CONFIG or {DEFAULT_CONFIG})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the server").set_defaults(fn=cmd_serve)
    sub.add_parser("check-config", help="validate the configuration").set_defaults(fn=cmd_check_config)
    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(fn=cmd_migrate)
    user = sub.add_parser("user", help="manage accounts")
    user.set_defaults(fn=cmd_user)
    user_sub = user.add_subparsers(dest="action", required=True)
    for action in ("add", "passwd"):
        p = user_sub.add_parser(action)
        p.add_argument("name")
        p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    user_sub.add_parser("remove").add_argument("name")
    user_sub.add_parser("list")
    from mbeon_chat.cli_keys import add_parsers

    add_parsers(sub, user_sub)
    sub.choices["keys"].set_defaults(fn=cmd_keys)
    reload = sub.add_parser(
        "reload", help="reload the config file and changed plugins in the running server (like SIGHUP)"
    )
    reload.add_argument("--plugin", metavar="NAME", help="reload only this plugin (and what depends on it)")
    reload.set_defaults(fn=cmd_reload)
    plugins = sub.add_parser("plugins", help="list, load or unload plugins in the running server")
    plugins.set_defaults(fn=cmd_plugins)
    plugins_sub = plugins.add_subparsers(dest="action", required=True)
    plugins_sub.add_parser("list", help="every plugin found, loaded or not")
    plugins_sub.add_parser("load", help="load a plugin now (until restart or a config change)").add_argument(
        "name"
    )
    plugins_sub.add_parser(
        "unload", help="unload a plugin now (refused while others depend on it)"
    ).add_argument("name")
    sub.add_parser("status", help="show the running server's status").set_defaults(fn=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
        return code
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
