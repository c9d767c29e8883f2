"""XEP-0313: Message Archive Management for one-to-one messages, with XEP-0359 stanza-ids.

Every chat/normal message with a body between local accounts (or from a component to a local account) is
written to the sender's and the recipient's archives *before* it is routed, encrypted at rest with the
conversation's data key (``storage/crypto.py``); a client that was offline, or whose connection silently
died, gets everything it missed with a MAM query. Users choose what is archived with XEP-0313
preferences (``default`` always | never | roster, plus always/never lists).

Retention: with ``retention_days > 0`` a timer (every ``purge_interval`` seconds) deletes older messages
and destroys the data keys of conversations left with nothing sealed under them. Erasure of accounts is
storage-level (``mbeon-chat user remove`` and XEP-0077 cancellation alike): see ``stores/archive.py``.

Slices: ``archiving`` (the message hook, stanza-ids), ``query`` (queries, form, preferences, metadata).

    [plugins.mam]
    default = "always"          # for users who set no preferences
    retention_days = 365        # 0: keep forever
    on_storage_failure = "reject"   # or "deliver": route messages unarchived while the database is down
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns

from .archiving import PRIORITY, Archiver
from .query import EXTENDED, QueryService

DEPENDS = ()


@dataclass(frozen=True)
class Options:
    default: str = "always"  # always | never | roster: for users without preferences
    retention_days: float = 0.0  # 0: keep forever
    purge_interval: float = 3600.0  # seconds between retention runs
    key_grace: float = 300.0  # seconds a new data key is kept even if nothing is sealed with it yet
    default_page: int = 50
    max_page: int = 250
    page_bytes: int = 262144  # a result page stops early past this many bytes of messages
    on_storage_failure: str = "reject"  # reject | deliver

    def validate(self) -> None:
        if self.default not in ("always", "never", "roster"):
            raise ValueError("default: must be always, never or roster")
        if self.retention_days < 0:
            raise ValueError("retention_days: must not be negative (0 keeps messages forever)")
        if self.purge_interval <= 0:
            raise ValueError("purge_interval: must be positive")
        if self.key_grace < 0:
            raise ValueError("key_grace: must not be negative")
        if not 1 <= self.default_page <= self.max_page <= 1000:
            raise ValueError("default_page: need 1 <= default_page <= max_page <= 1000")
        if self.page_bytes < 1024:
            raise ValueError("page_bytes: must be at least 1024")
        if self.on_storage_failure not in ("reject", "deliver"):
            raise ValueError("on_storage_failure: must be reject or deliver")


class Retention:
    def __init__(self, api: PluginAPI, options: Options, archive: object) -> None:
        self.api = api
        self.options = options
        self.archive = archive

    async def run(self) -> dict[str, int]:
        """One retention pass: old messages, then orphaned rows, then keys that seal nothing."""
        archive = self.archive
        if archive is None:
            return {}
        purged = 0
        if self.options.retention_days > 0:
            cutoff = int((time.time() - self.options.retention_days * 86400) * 1000)
            purged = await archive.purge_older_than(cutoff)  # type: ignore[attr-defined]
        orphans = await archive.purge_orphans()  # type: ignore[attr-defined]
        keys = await archive.destroy_unused_keys(int(self.options.key_grace * 1000))  # type: ignore[attr-defined]
        if purged or orphans or keys:
            self.api.log.info("mam.retention", purged=purged, orphans=orphans, keys_destroyed=keys)
        return {"purged": purged, "orphans": orphans, "keys_destroyed": keys}


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    archive = getattr(api.storage, "archive", None)
    archiver = Archiver(api, options, archive)
    queries = QueryService(api, options, archive)
    retention = Retention(api, options, archive)
    api.export(retention)
    for var in (ns.MAM, EXTENDED, ns.SID):
        api.add_feature(var, target="account")
    api.on("message/bare", archiver.on_message, priority=PRIORITY)
    api.on("message/full", archiver.on_message, priority=PRIORITY)
    api.on_iq("get", ns.MAM, "query", queries.on_form, target="account")
    api.on_iq("set", ns.MAM, "query", queries.on_query, target="account")
    api.on_iq("get", ns.MAM, "prefs", queries.on_prefs_get, target="account")
    api.on_iq("set", ns.MAM, "prefs", queries.on_prefs_set, target="account")
    api.on_iq("get", ns.MAM, "metadata", queries.on_metadata, target="account")
    api.add_timer(options.purge_interval, retention.run)
