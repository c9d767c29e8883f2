"""Office hours: an automatic, multilingual reply to messages for counsellors outside their hours.

A message (chat or normal, with a body) to a configured counsellor's bare or full JID while the service is
closed gets one automatic reply per sender and counsellor per closed period; the message itself is
delivered (or stored offline) as usual. Hours are local to ``timezone`` (DST-aware, zoneinfo)::

    [plugins.office_hours]
    counsellors = ["anna@beratung.example", "ben@beratung.example"]
    timezone = "Europe/Berlin"
    hours = ["mon-fri 09:00-17:00", "sat 10:00-13:00"]    # overnight ranges like "fri 22:00-02:00" work
    closed_dates = ["2025-12-24", "2025-12-25"]            # whole days closed
    default_language = "de"
    mark = true                                       # prefix + <auto-reply xmlns="urn:mbeon:auto-reply"/>

    [plugins.office_hours.replies]
    de = "Die Beratung ist gerade nicht besetzt. Wir sind Mo-Fr 9-17 Uhr und Sa 10-13 Uhr da."
    en = "Our counsellors are not available right now: Mon-Fri 9:00-17:00, Sat 10:00-13:00 (Berlin time)."

The reply language follows the message's ``xml:lang`` (then its body's), matched exactly or by the
primary subtag (``de-AT`` -> ``de``), else ``default_language``. Messages that carry the auto-reply marker,
come from a counsellor, or come from a server or component address get no reply (no loops).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.jid import JID, InvalidJID
from mbeon_chat.xmpp.stanza import BODY, Stanza, make_message

DEPENDS = ()
MARK_NS = "urn:mbeon:auto-reply"
MARK = "{" + MARK_NS + "}auto-reply"
LANG = "{" + ns.XML + "}lang"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(
    r"^\s*([a-z]{3}(?:\s*-\s*[a-z]{3})?(?:\s*,\s*[a-z]{3}(?:\s*-\s*[a-z]{3})?)*)\s+"
    r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$"
)
HORIZON_DAYS = 14


def parse_hours(spec: str) -> list[tuple[int, int, int]]:
    """``"mon-fri 09:00-17:00"`` -> [(weekday, start_minute, end_minute), ...]; end <= start: overnight."""
    m = _RANGE.match(spec.lower())
    if m is None:
        raise ValueError(f"{spec!r} is not like 'mon-fri 09:00-17:00'")
    days: list[int] = []
    for part in m.group(1).split(","):
        first, _, last = (p.strip() for p in part.partition("-"))
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"{spec!r}: days are {', '.join(DAYS)}")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.extend(DAYS.index(DAYS[(a + i) % 7]) for i in range((b - a) % 7 + 1))
    h1, m1, h2, m2 = (int(g) for g in m.groups()[1:])
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ValueError(f"{spec!r}: times are 00:00..24:00")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    return [(d, start, end) for d in days]


class Schedule:
    """Opening intervals in one time zone; answers "open now?" and "when does this closed period end?"."""

    def __init__(self, hours: tuple[str, ...], timezone: str, closed_dates: tuple[str, ...] = ()) -> None:
        self.zone = ZoneInfo(timezone)
        self.ranges = [r for spec in hours for r in parse_hours(spec)]
        self.closed = {dt.date.fromisoformat(d) for d in closed_dates}

    def _intervals(self, now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
        today = now.astimezone(self.zone).date()
        out = []
        for offset in range(-1, HORIZON_DAYS + 1):
            day = today + dt.timedelta(days=offset)
            if day in self.closed:
                continue
            for weekday, start, end in self.ranges:
                if day.weekday() != weekday:
                    continue
                begin = dt.datetime.combine(day, dt.time(), self.zone) + dt.timedelta(minutes=start)
                length = (end - start) if end > start else (end + 24 * 60 - start)
                out.append((begin, begin + dt.timedelta(minutes=length)))
        return out

    def is_open(self, now: dt.datetime) -> bool:
        return any(a <= now < b for a, b in self._intervals(now))

    def closed_period(self, now: dt.datetime) -> str:
        """An id for the closed period ``now`` is in: when it ends (or the local date if nothing opens)."""
        upcoming = [a for a, _ in self._intervals(now) if a > now]
        if upcoming:
            return min(upcoming).isoformat()
        return "day:" + now.astimezone(self.zone).date().isoformat()


def _default_prefixes() -> dict[str, str]:
    return {"en": "[Automatic reply] ", "de": "[Automatische Antwort] "}


@dataclass(frozen=True)
class Options:
    counsellors: tuple[str, ...] = ()
    timezone: str = "UTC"
    hours: tuple[str, ...] = ("mon-fri 09:00-17:00",)
    closed_dates: tuple[str, ...] = ()
    default_language: str = "en"
    replies: dict[str, str] = field(
        default_factory=lambda: {
            "en": "Our counsellors are not available right now. Please write again during "
            "office hours; your message has been passed on."
        }
    )
    mark: bool = True
    mark_prefix: dict[str, str] = field(default_factory=_default_prefixes)

    def validate(self) -> None:
        for i, c in enumerate(self.counsellors):
            try:
                jid = JID.parse(c)
            except InvalidJID as exc:
                raise ValueError(f"counsellors[{i}]: {exc}") from None
            if jid.local is None or jid.resource is not None:
                raise ValueError(f"counsellors[{i}]: must be a bare JID like anna@example.org")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone: unknown time zone {self.timezone!r} (use e.g. Europe/Berlin)"
            ) from None
        for i, spec in enumerate(self.hours):
            try:
                parse_hours(spec)
            except ValueError as exc:
                raise ValueError(f"hours[{i}]: {exc}") from None
        for i, d in enumerate(self.closed_dates):
            try:
                dt.date.fromisoformat(d)
            except ValueError:
                raise ValueError(f"closed_dates[{i}]: {d!r} is not a date like 2025-12-24") from None
        for name, table in (("replies", self.replies), ("mark_prefix", self.mark_prefix)):
            for lang, text in table.items():
                if not isinstance(text, str):
                    raise ValueError(f"{name}.{lang}: must be a string")
        if self.default_language not in self.replies:
            raise ValueError(f"replies: needs a text for default_language {self.default_language!r}")


def pick_language(wanted: str | None, available: dict[str, str], default: str) -> str:
    if wanted:
        wanted = wanted.lower()
        lowered = {k.lower(): k for k in available}
        if wanted in lowered:
            return lowered[wanted]
        primary = wanted.split("-")[0]
        if primary in lowered:
            return lowered[primary]
    return default


def setup(api: PluginAPI) -> None:
    opts: Options = api.options
    schedule = Schedule(opts.hours, opts.timezone, opts.closed_dates)
    counsellors = frozenset(str(JID.parse(c)) for c in opts.counsellors)
    state = api.restore(1)
    replied: dict[tuple[str, str], str] = (
        {tuple(k.split(" ", 1)): v for k, v in state["replied"].items()} if state else {}
    )  # type: ignore[misc]
    stats = {"replies": state["replies"] if state else 0}

    def clock() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def on_message(stanza: Stanza, origin: Any) -> None:
        to, sender = stanza.to, stanza.from_
        if to is None or sender is None or stanza.type not in ("chat", "normal"):
            return
        counsellor = str(to.bare)
        if counsellor not in counsellors or sender.local is None or str(sender.bare) in counsellors:
            return
        el = stanza.el
        body = el.find(BODY)
        if body is None or el.find(MARK) is not None:
            return
        now = clock()
        if schedule.is_open(now):
            return
        period = schedule.closed_period(now)
        key = (str(sender.bare), counsellor)
        if replied.get(key) == period:
            return
        replied[key] = period
        lang = pick_language(el.get(LANG) or body.get(LANG), opts.replies, opts.default_language)
        text = opts.replies[lang]
        if opts.mark:
            text = opts.mark_prefix.get(lang, opts.mark_prefix.get("en", "")) + text
        reply = make_message(sender, text, "chat" if stanza.type == "chat" else "normal", to.bare)
        reply.attrs[LANG] = lang
        if opts.mark:
            reply.append(Element(MARK))
        thread = el.find("{" + ns.CLIENT + "}thread")
        if thread is not None:
            reply.append(thread.copy())
        stats["replies"] += 1
        api.log.info("office_hours.replied", counsellor=counsellor, sender=str(sender.bare), lang=lang)
        await api.send(reply)

    def prune() -> None:
        """Forget senders whose closed period is over."""
        now = clock()
        current = schedule.closed_period(now) if not schedule.is_open(now) else None
        for key in [k for k, v in replied.items() if v != current]:
            del replied[key]

    api.on("message/bare", on_message, priority=10)
    api.on("message/full", on_message, priority=10)
    api.add_timer(3600.0, prune)
    api.on_save(
        lambda: {
            "version": 1,
            "replied": {f"{a} {b}": v for (a, b), v in replied.items()},
            "replies": stats["replies"],
        }
    )
    api.export({"schedule": schedule, "stats": stats, "replied": replied})
