"""MAM queries (XEP-0313 4), the query form, archiving preferences (5) and archive metadata.

A query is an iq set to the user's own bare JID (or with no ``to``): results go to the querying resource
as ``<message><result queryid id><forwarded><delay/>original</forwarded></result></message>``, then the iq
result carries ``<fin complete><set>first/last/count</set></fin>``. Paging is RSM (XEP-0059) over the
stanza-ids, which sort in time order: ``after``/``before`` (empty ``before``: the last page), ``max``
(capped at ``max_page``), ``index``. A page also stops early once its messages reach ``page_bytes``, so a
page of large messages cannot overflow the client's write buffer (the page is then not complete).
"""

from __future__ import annotations

import datetime
from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.storage.stores.archive import (
    MODES,
    ArchivedMessage,
    ArchiveFilter,
    PageRequest,
    Prefs,
    UnknownId,
)
from mbeon_chat.stream.events import ElementParsed
from mbeon_chat.stream.parser import FramedParser
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.forms import Form, FormError
from mbeon_chat.xmpp.jid import JID, InvalidJID
from mbeon_chat.xmpp.stanza import MESSAGE, Stanza

from .archiving import STORAGE_ERRORS, unavailable

_M = "{" + ns.MAM + "}"
QUERY = _M + "query"
PREFS = _M + "prefs"
METADATA = _M + "metadata"
_RSM = "{" + ns.RSM + "}"
FORWARDED = "{" + ns.FORWARD + "}forwarded"
DELAY = "{" + ns.DELAY + "}delay"
EXTENDED = ns.MAM + "#extended"
_FIELDS = frozenset({"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"})


def bad_request(text: str) -> StanzaError:
    return StanzaError(StanzaCondition.BAD_REQUEST, text)


def stamp(ms: int) -> str:
    """XEP-0082 DateTime in UTC with milliseconds."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_stamp(value: str, var: str) -> int:
    try:
        moment = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise bad_request(f"{var}: not an XEP-0082 date and time: {value!r}") from None
    if moment.tzinfo is None:
        raise bad_request(f"{var}: the time needs a time zone (e.g. Z)")
    return int(moment.timestamp() * 1000)


def query_form() -> Element:
    form = Form("form", title="Message archive search")
    form.add_field("FORM_TYPE", "hidden", value=ns.MAM)
    form.add_field("with", "jid-single", label="With")
    form.add_field("start", "text-single", label="From (inclusive)")
    form.add_field("end", "text-single", label="Until (inclusive)")
    form.add_field("after-id", "text-single", label="After this message id")
    form.add_field("before-id", "text-single", label="Before this message id")
    form.add_field("ids", "text-multi", label="These message ids")
    query = Element(QUERY)
    query.append(form.to_element())
    return query


def parse_filter(query: Element) -> ArchiveFilter:
    try:
        form = Form.from_parent(query)
    except FormError as exc:
        raise bad_request(f"malformed data form: {exc}") from None
    if form is None:
        return ArchiveFilter()
    if form.type not in ("submit", "form"):
        raise bad_request("the query form must be of type submit")
    values = form.values()
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r}")
    if form.form_type not in (None, ns.MAM):
        raise bad_request(f"FORM_TYPE must be {ns.MAM}")
    kw: dict[str, Any] = {}
    if raw := form.get("with"):
        try:
            jid = JID.parse(raw)
        except InvalidJID:
            raise bad_request(f"with: {raw!r} is not a JID") from None
        kw["with_jid"] = str(jid.bare)
        kw["with_resource"] = jid.resource
    if raw := form.get("start"):
        kw["start_ms"] = parse_stamp(raw, "start")
    if raw := form.get("end"):
        kw["end_ms"] = parse_stamp(raw, "end")
    kw["after_id"] = form.get("after-id") or None
    kw["before_id"] = form.get("before-id") or None
    if "ids" in values:
        kw["ids"] = tuple(v.strip() for v in values["ids"] if v.strip())
    return ArchiveFilter(**kw)


def parse_rsm(query: Element, default_page: int, max_page: int) -> PageRequest:
    rsm = query.find(_RSM + "set")
    if rsm is None:
        return PageRequest(max=default_page)

    def number(name: str) -> int | None:
        text = rsm.findtext(_RSM + name)
        if text is None:
            return None
        try:
            value = int(text.strip())
        except ValueError:
            raise bad_request(f"RSM {name} must be a number") from None
        if value < 0:
            raise bad_request(f"RSM {name} must not be negative")
        return value

    size = number("max")
    before_el = rsm.find(_RSM + "before")
    return PageRequest(
        max=default_page if size is None else min(size, max_page),
        after=(rsm.findtext(_RSM + "after") or "").strip() or None,
        before=None if before_el is None else before_el.text.strip(),
        index=number("index"),
    )


def parse_stanza(payload: bytes) -> Element:
    parser = FramedParser(max_stanza_size=len(payload) + 1, max_depth=64)
    events = parser.receive_data(payload)
    if len(events) != 1 or not isinstance(events[0], ElementParsed):
        raise ValueError("not a stored stanza")
    return events[0].element


def result_message(to: JID, archive: str, queryid: str | None, msg: ArchivedMessage) -> Element:
    attrs = {"id": msg.id}
    if queryid is not None:
        attrs["queryid"] = queryid
    forwarded = Element(FORWARDED)
    forwarded.add(DELAY, {"stamp": stamp(msg.created_at)})
    forwarded.append(parse_stanza(msg.stanza))
    result = Element(_M + "result", attrs, [forwarded])
    return Element(MESSAGE, {"to": str(to), "from": archive, "id": msg.id}, [result])


def prefs_element(prefs: Prefs) -> Element:
    el = Element(PREFS, {"default": prefs.default})
    for name, jids in (("always", prefs.always), ("never", prefs.never)):
        group = el.add(_M + name)
        for jid in jids:
            group.add(_M + "jid", None, jid)
    return el


def parse_prefs(el: Element) -> Prefs:
    default = el.get("default")
    if default not in MODES:
        raise bad_request(f"prefs: default must be one of {', '.join(MODES)}")
    lists: dict[str, tuple[str, ...]] = {}
    for name in ("always", "never"):
        jids: list[str] = []
        for group in el.findall(_M + name):
            for item in group.findall(_M + "jid"):
                try:
                    jids.append(str(JID.parse(item.text.strip()).bare))
                except InvalidJID:
                    raise StanzaError(StanzaCondition.JID_MALFORMED, f"prefs: {item.text!r}") from None
        lists[name] = tuple(dict.fromkeys(jids))
    return Prefs(default, lists["always"], lists["never"])


class QueryService:
    def __init__(self, api: Any, options: Any, archive: Any) -> None:
        self.api = api
        self.options = options
        self.archive = archive

    def _owner(self, iq: Stanza) -> tuple[str, JID]:
        sender = iq.from_
        if sender is None or sender.local is None or sender.domain != self.api.domain:
            raise StanzaError(StanzaCondition.NOT_ALLOWED, "only local accounts have an archive here")
        if iq.to is not None and iq.to != sender.bare:
            raise StanzaError(StanzaCondition.NOT_ALLOWED, "you may only query your own archive")
        if self.archive is None:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE, "the archive is not configured")
        return sender.local, sender

    async def on_form(self, iq: Stanza, origin: Session | None) -> Element:
        self._owner(iq)
        return query_form()

    async def on_query(self, iq: Stanza, origin: Session | None) -> Element:
        owner, requester = self._owner(iq)
        query = iq.payload
        assert query is not None
        flt = parse_filter(query)
        page_req = parse_rsm(query, self.options.default_page, self.options.max_page)
        try:
            page = await self.archive.query(owner, flt, page_req)
        except UnknownId as exc:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND, f"no message {exc} in the archive") from None
        except STORAGE_ERRORS as exc:
            self.api.log.warning("mam.query_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
            raise unavailable() from None
        queryid = query.get("queryid")
        archive_jid = str(requester.bare)
        budget = self.options.page_bytes
        backward = page_req.before is not None
        kept: list[tuple[ArchivedMessage, Element]] = []
        # Over budget, keep the end the client pages from: the oldest going forward, the newest backward.
        for msg in reversed(page.messages) if backward else page.messages:
            try:
                el = result_message(requester, archive_jid, queryid, msg)
            except Exception:
                self.api.log.error("mam.unparsable_message", owner=owner, message_id=msg.id)
                continue
            budget -= len(msg.stanza) + 200
            if kept and budget < 0:
                break
            kept.append((msg, el))
        if backward:
            kept.reverse()
        for _, el in kept:
            if origin is not None:
                origin.send(el)
            else:
                await self.api.send(el)
        sent = [msg for msg, _ in kept]
        complete = page.complete and len(sent) == len(page.messages)
        # The index of the first item only on forward pages: slixmpp (1.8-1.10 at least) stops paging
        # backwards as soon as first index + page size == count, which holds for the last page.
        first_index = None if backward else page.first_index
        fin = Element(_M + "fin", {"complete": "true" if complete else "false"})
        rsm = fin.add(_RSM + "set")
        if sent:
            first_attrs = {"index": str(first_index)} if first_index is not None else None
            rsm.add(_RSM + "first", first_attrs, sent[0].id)
            rsm.add(_RSM + "last", None, sent[-1].id)
        rsm.add(_RSM + "count", None, str(page.count))
        return fin

    async def on_prefs_get(self, iq: Stanza, origin: Session | None) -> Element:
        owner, _ = self._owner(iq)
        try:
            prefs = await self.archive.get_prefs(owner, self.options.default)
        except STORAGE_ERRORS:
            raise unavailable() from None
        return prefs_element(prefs)

    async def on_prefs_set(self, iq: Stanza, origin: Session | None) -> Element:
        owner, _ = self._owner(iq)
        assert iq.payload is not None
        prefs = parse_prefs(iq.payload)
        try:
            await self.archive.set_prefs(owner, prefs)
        except STORAGE_ERRORS:
            raise unavailable() from None
        return prefs_element(prefs)

    async def on_metadata(self, iq: Stanza, origin: Session | None) -> Element:
        owner, _ = self._owner(iq)
        try:
            first, last = await self.archive.metadata(owner)
        except STORAGE_ERRORS:
            raise unavailable() from None
        el = Element(METADATA)
        if first is not None and last is not None:
            el.add(_M + "start", {"id": first.id, "timestamp": stamp(first.created_at)})
            el.add(_M + "end", {"id": last.id, "timestamp": stamp(last.created_at)})
        return el
