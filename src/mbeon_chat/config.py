"""Configuration: frozen dataclasses per section, loaded from TOML (and ``MBEON_*`` env overrides).

Unknown keys are errors naming the key path (``limits.max_stanza_sise: unknown key``). Every option says
whether a reload applies it live or it needs a restart (``field(metadata={"live": False})``); ``diff()``
lists the changed keys with that flag so a reload can report exactly what it applied.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem; the message starts with the key path."""


def live(default: Any, **kw: Any) -> Any:
    return field(default=default, metadata={"live": True, **kw})


def restart(default: Any, **kw: Any) -> Any:
    return field(default=default, metadata={"live": False, **kw})


_LISTENER = "listener opened/closed; sessions stay connected"


def live_factory(factory: Any) -> Any:
    return field(default_factory=factory, metadata={"live": True})


@dataclass(frozen=True)
class ServerSection:
    domain: str = restart("localhost")
    admins: tuple[str, ...] = live((), note="immediately")
    name: str = live("mbeon-chat", note="immediately")
    data_dir: str = restart("var")
    #: Worker processes serving the same listeners (SO_REUSEPORT); they route to each other's sessions over
    #: a local bus (mbeon_chat.cluster). 1: a single process.
    workers: int = restart(1)


@dataclass(frozen=True)
class LogSection:
    level: str = live("info", note="immediately")
    format: str = live("json", note="immediately")  # json | console


@dataclass(frozen=True)
class TlsSection:
    #: empty: a self-signed certificate is generated under data_dir
    cert: str = live("", note="new connections; open ones keep their TLS session")
    key: str = live("", note="new connections; open ones keep their TLS session")
    require_starttls: bool = live(True, note="new connections")


@dataclass(frozen=True)
class ListenersSection:
    starttls: tuple[str, ...] = live(("127.0.0.1:5222",), note=_LISTENER)
    direct_tls: tuple[str, ...] = live(("127.0.0.1:5223",), note=_LISTENER)
    http: tuple[str, ...] = live(("127.0.0.1:5280",), note=_LISTENER)
    http_tls: bool = live(False)  # https/wss on the http listener, with the client certificate (tls.cert)
    #: Own address(es) for /metrics (plus /healthz, /readyz); empty: /metrics on the http listener, answered
    #: to loopback clients only.
    metrics: tuple[str, ...] = live(())
    admin_socket: str = restart("")  # empty: <data_dir>/admin.sock


@dataclass(frozen=True)
class LimitsSection:
    max_stanza_size: int = live(262144, note="new connections")
    max_depth: int = live(32, note="new connections")
    auth_timeout: float = live(30.0, note="new connections")
    max_resources: int = live(10, note="next resource binding")
    write_buffer: int = live(1048576, note="new connections")
    inbound_queue: int = live(256, note="new connections")


@dataclass(frozen=True)
class AuthSection:
    mechanisms: tuple[str, ...] = live(("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"), note="new connections")
    scram_iterations: int = live(4096, note="passwords set from now on")
    allow_registration: bool = live(False, note="new connections")
    resource_conflict: str = live("replace", note="next resource binding")  # replace | refuse | rename
    max_attempts: int = live(3, note="new connections")
    failure_delay: float = live(1.0)  # added per recent failure from one address
    failure_delay_max: float = live(10.0)


@dataclass(frozen=True)
class StorageSection:
    url: tuple[str, ...] = restart(("sqlite+aiosqlite:///{data_dir}/mbeon-chat.db",))
    master_key_file: str = restart("")
    master_key_env: str = restart("MBEON_MASTER_KEY")


@dataclass(frozen=True)
class WebSocketSection:
    path: str = restart("/xmpp-websocket")
    allowed_origins: tuple[str, ...] = live(())  # empty: same-origin and non-browser clients only
    ping_interval: float = live(30.0)  # seconds between server pings; at most 50 (below proxy idle timeouts)
    public_url: str = live("")  # empty: derived from the request's Host (XEP-0156, web client)
    #: Count plain-http WebSocket sessions as TLS (PLAIN offered, wss:// announced): only when every request
    #: reaches the http listener through a TLS-terminating reverse proxy.
    trust_proxy_tls: bool = live(False)

    def validate(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError("path: must start with '/'")
        if not 1 <= self.ping_interval <= 50:
            raise ValueError("ping_interval: must be between 1 and 50 seconds")
        for i, origin in enumerate(self.allowed_origins):
            if origin != "null" and ("://" not in origin or origin.endswith("/")):
                raise ValueError(f"allowed_origins[{i}]: must look like https://host[:port] (or null)")


@dataclass(frozen=True)
class WebSection:
    #: Serve the counsellor web client (converse.js, installed by scripts/setup-web.sh) at /chat/.
    chat: bool = live(True)
    #: Where converse.js's dist/ lies; empty: web/node_modules/converse.js/dist in the source tree.
    converse_dir: str = live("")


@dataclass(frozen=True)
class PluginsSection:
    enabled: tuple[str, ...] = live(
        (
            "ping",
            "disco",
            "version",
            "roster",
            "presence",
            "offline",
            "register",
            "time",
            "adhoc",
            "admin_commands",
            "muc",
            "counselling",
            "mam",
            "caps",
            "carbons",
            "blocking",
            "pep",
            "vcard",
            "stream_management",
            "csi",
        ),
        note="plugins loaded/unloaded",
    )
    site_dirs: tuple[str, ...] = restart(("plugins",))
    #: Reload when a plugin file or the config file changes (needs the watchfiles package).
    watch: bool = live(False, note="immediately")
    options: dict[str, Any] = live_factory(dict)


@dataclass(frozen=True)
class Config:
    server: ServerSection = field(default_factory=ServerSection)
    log: LogSection = field(default_factory=LogSection)
    tls: TlsSection = field(default_factory=TlsSection)
    listeners: ListenersSection = field(default_factory=ListenersSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    auth: AuthSection = field(default_factory=AuthSection)
    storage: StorageSection = field(default_factory=StorageSection)
    websocket: WebSocketSection = field(default_factory=WebSocketSection)
    web: WebSection = field(default_factory=WebSection)
    plugins: PluginsSection = field(default_factory=PluginsSection)
    #: Where the file was read from (relative paths are resolved against its parent's parent).
    base_dir: str = field(default=".", metadata={"live": True, "internal": True})

    def path(self, value: str) -> Path:
        p = Path(value.replace("{data_dir}", self.server.data_dir))
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def data_dir(self) -> Path:
        return self.path(self.server.data_dir)

    @property
    def storage_urls(self) -> list[str]:
        out = []
        for url in self.storage.url:
            if url.startswith("sqlite") and ":///" in url:
                scheme, path = url.split(":///", 1)
                url = f"{scheme}:///{self.path(path)}"
            out.append(url)
        return out


# --- building dataclasses from plain data ---------------------------------------------------------
def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value")
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: must be a list")
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return tuple(_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a table")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: must be a table")
        return build_options(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: must be a string")
        return value
    return value


def build_options(cls: Any, data: dict[str, Any], path: str) -> Any:
    """Build the dataclass ``cls`` from ``data``; unknown keys and wrong types name their key path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{path}.{key}: unknown key" if path else f"{key}: unknown key")
        kwargs[key] = _coerce(value, hints[key], f"{path}.{key}" if path else key)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{path}.{exc}" if path else str(exc)) from None
    return obj


def _validate(config: Config) -> None:
    if not 1 <= config.server.workers <= 64:
        raise ConfigError("server.workers: must be between 1 and 64")
    if config.auth.resource_conflict not in ("replace", "refuse", "rename"):
        raise ConfigError("auth.resource_conflict: must be one of replace, refuse, rename")
    if config.auth.scram_iterations < 4096:
        raise ConfigError("auth.scram_iterations: must be at least 4096")
    for i, mech in enumerate(config.auth.mechanisms):
        if mech not in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"):
            raise ConfigError(f"auth.mechanisms[{i}]: unknown mechanism {mech!r}")
    if config.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("log.level: must be one of debug, info, warning, error")
    if not 1024 <= config.limits.max_stanza_size <= 16 * 1048576:
        raise ConfigError("limits.max_stanza_size: must be between 1024 and 16777216")
    if not 4 <= config.limits.max_depth <= 1000:
        raise ConfigError("limits.max_depth: must be between 4 and 1000")
    for name in ("starttls", "direct_tls", "http", "metrics"):
        for i, addr in enumerate(getattr(config.listeners, name)):
            try:
                parse_address(addr)
            except ValueError as exc:
                raise ConfigError(f"listeners.{name}[{i}]: {exc}") from None
    if not config.storage.url:
        raise ConfigError("storage.url: at least one database URL is needed")


def parse_address(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{addr!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a TOML file (missing file: all defaults). Raises :class:`ConfigError`."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: {exc}") from None
        base = p.resolve().parent.parent if p.resolve().parent.name == "config" else p.resolve().parent
    env_url = os.environ.get("MBEON_STORAGE_URL")
    if env_url:
        data.setdefault("storage", {})["url"] = env_url.split(",")
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    plugins = data.get("plugins")
    if isinstance(plugins, dict):
        # [plugins.<name>] tables hold each plugin's options (validated by the plugin host).
        known = {f.name for f in dataclasses.fields(PluginsSection)}
        options = dict(plugins.get("options", {}))
        for key in [k for k, v in plugins.items() if k not in known and isinstance(v, dict)]:
            options[key] = plugins.pop(key)
        plugins["options"] = options
    config: Config = build_options(Config, data, "")
    config = dataclasses.replace(config, base_dir=str(base))
    _validate(config)
    return config


def how_applied(key: str) -> str | None:
    """How a reload applies the live option ``key`` ("new connections", ...), from the field metadata."""
    section, _, name = key.partition(".")
    if section == "plugins" and name not in {f.name for f in dataclasses.fields(PluginsSection)}:
        return "plugin reloaded with the new options"
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    cls = typing.get_type_hints(Config).get(section) if section in sections else None
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    for sub in dataclasses.fields(cls):
        if sub.name == name:
            note = sub.metadata.get("note")
            return str(note) if note else None
    return None


def diff(old: Config, new: Config) -> list[tuple[str, bool]]:
    """The changed keys as (key path, applies live)."""
    changes: list[tuple[str, bool]] = []
    for section in dataclasses.fields(Config):
        if section.metadata.get("internal"):
            continue
        a, b = getattr(old, section.name), getattr(new, section.name)
        for f in dataclasses.fields(a):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if va != vb:
                if section.name == "plugins" and f.name == "options":
                    for key in sorted(set(va) | set(vb)):
                        if va.get(key) != vb.get(key):
                            changes.append((f"plugins.{key}", True))
                    continue
                changes.append((f"{section.name}.{f.name}", bool(f.metadata.get("live", True))))
    return changes
