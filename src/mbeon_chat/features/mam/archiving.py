"""Archiving one-to-one messages before they are routed, and stamping XEP-0359 stanza-ids.

The handler runs early on ``message/bare`` and ``message/full`` (priority ``PRIORITY``): it removes any
``<stanza-id/>`` claiming to be by one of our JIDs (only we may set those), stores the sender's and the
recipient's copies in one transaction, and only then lets the chain go on to deliver. The recipient's
copy is announced with ``<stanza-id xmlns='urn:xmpp:sid:0' by='recipient@domain' id='...'/>``: the MAM
id of the message in their archive. When the archive cannot be written the message is refused with a
``resource-constraint`` (wait) error (``on_storage_failure = "reject"``) or delivered unarchived
(``"deliver"``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from mbeon_chat.core.session import Session
from mbeon_chat.storage.crypto import KeyUnavailable
from mbeon_chat.storage.ids import new_id
from mbeon_chat.storage.stores.archive import ArchiveWrite
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.stanza import BODY, Stanza

PRIORITY = 500  # above delivery (-1000) and ordinary plugins; plugins that drop messages go higher
STANZA_ID = "{" + ns.SID + "}stanza-id"
HINTS = "urn:xmpp:hints"
_NO_STORE = frozenset({f"{{{HINTS}}}no-store", f"{{{HINTS}}}no-permanent-store"})
_STORE = f"{{{HINTS}}}store"
_RECENT = 4096

#: What a database outage looks like from here (driver errors, timeouts, keys we cannot unwrap).
STORAGE_ERRORS = (SQLAlchemyError, OSError, TimeoutError, KeyUnavailable)


def worth_archiving(stanza: Stanza) -> bool:
    """XEP-0313 6.1 and XEP-0334: chat/normal messages with a body (or a ``<store/>`` hint), unless
    hinted ``no-store``/``no-permanent-store``."""
    if stanza.type not in ("chat", "normal"):
        return False
    has_body = False
    for child in stanza.el.elements():
        tag = child.tag
        if tag in _NO_STORE:
            return False
        if tag in (BODY, _STORE):
            has_body = True
    return has_body


def unavailable() -> StanzaError:
    return StanzaError(
        StanzaCondition.RESOURCE_CONSTRAINT,
        "the message archive is unavailable, so the message was not sent; try again later",
        error_type="wait",
    )


class Archiver:
    def __init__(self, api: Any, options: Any, archive: Any) -> None:
        self.api = api
        self.options = options
        self.archive = archive
        self.domain: str = api.domain
        # Ids stamped during the current routing of a stanza: message/full re-fires message/bare for an
        # unknown resource, and the second pass must not archive again nor strip our own stanza-id.
        self._recent: OrderedDict[str, None] = OrderedDict()

    async def on_message(self, stanza: Stanza, origin: Session | None) -> bool:
        to, sender = stanza.to, stanza.from_
        if to is None:
            return False
        el = stanza.el
        if self._stamped_by_us(el, str(to.bare)):
            return False
        self._strip_ours(el)
        if sender is None or self.archive is None or not worth_archiving(stanza):
            return False
        local_sender = sender.domain == self.domain and sender.local is not None
        message_id = new_id()
        write = ArchiveWrite(
            id=message_id,
            sender=str(sender.bare),
            recipient=str(to.bare),
            stanza=el.to_string().encode(),
            sender_owner=sender.local if local_sender else None,
            recipient_owner=to.local,
            sender_resource=sender.resource,
            recipient_resource=to.resource,
        )
        try:
            owners = await self.archive.archive(write, self.options.default)
        except STORAGE_ERRORS as exc:
            self.api.log.warning("mam.archive_failed", stanza_id=stanza.id, error=_describe(exc))
            if self.options.on_storage_failure == "deliver":
                return False
            raise unavailable() from None
        if owners is not None and to.local in owners:
            el.add(STANZA_ID, {"by": str(to.bare), "id": message_id})
            self._recent[message_id] = None
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        return False

    def _stamped_by_us(self, el: Element, by: str) -> bool:
        for child in el.findall(STANZA_ID):
            if child.get("by") == by and child.get("id") in self._recent:
                return True
        return False

    def _strip_ours(self, el: Element) -> None:
        """XEP-0359 3.1: a stanza-id claiming to be by us, arriving from outside, is removed."""
        for child in el.findall(STANZA_ID):
            by = child.get("by") or ""
            if by.rpartition("@")[2].split("/", 1)[0] == self.domain:
                el.remove(child)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
