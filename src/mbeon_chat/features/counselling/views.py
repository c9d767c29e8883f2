"""The team view (queue, sessions, colleagues' availability) and a client's status, as plain rows.

``table`` gives (columns, rows) for "queue", "sessions" or "team"; ``as_text`` renders them for the
message interface and ``as_form`` as a XEP-0004 result table for ad-hoc commands.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mbeon_chat.xmpp.forms import Form

from .state import short_id

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

Columns = list[tuple[str, str]]
Rows = list[dict[str, str]]

TITLES = {"queue": "Waiting requests", "sessions": "Running sessions", "team": "Counsellors"}


def _ago(ms: int) -> str:
    seconds = max(0, int(time.time() - ms / 1000))
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def table(lc: Lifecycle, name: str) -> tuple[Columns, Rows]:
    state = lc.state
    if name == "queue":
        positions = lc.positions()
        cols = [("position", "#"), ("id", "Request"), ("topic", "Topic"), ("language", "Language")]
        cols += [("waiting", "Waiting"), ("offered_to", "Offered to")]
        rows = []
        for rid, position in sorted(positions.items(), key=lambda kv: kv[1]):
            r = state.requests[rid]
            offer = state.offers.get(rid)
            rows.append(
                {
                    "position": str(position),
                    "id": r.id,
                    "topic": r.topic,
                    "language": r.language,
                    "waiting": _ago(r.requeued_at or r.created_at),
                    "offered_to": offer.counsellor if offer else "",
                }
            )
        return cols, rows
    if name == "sessions":
        cols = [("id", "Session"), ("client", "Client"), ("counsellor", "Counsellor"), ("topic", "Topic")]
        cols += [("since", "Since"), ("note", "Note")]
        rows = []
        for s in sorted(state.sessions.values(), key=lambda s: s.started_at):
            req = state.requests.get(s.request_id)
            offer = state.offers.get(s.request_id)
            note = "counsellor offline" if s.id in state.grace else ""
            if offer is not None:
                note = f"transfer to {offer.counsellor} pending"
            rows.append(
                {
                    "id": s.id,
                    "client": s.client,
                    "counsellor": s.counsellor,
                    "topic": req.topic if req else "",
                    "since": _ago(s.started_at),
                    "note": note,
                }
            )
        return cols, rows
    cols = [("jid", "Counsellor"), ("status", "Status"), ("load", "Sessions"), ("capacity", "Capacity")]
    cols += [("languages", "Languages"), ("topics", "Topics")]
    rows = []
    for c in lc.views():
        online, _ = lc.availability(c.jid)
        status = "available" if c.available else "busy/away" if online else "offline"
        rows.append(
            {
                "jid": c.jid,
                "status": status,
                "load": str(len(state.sessions_of(c.jid))),
                "capacity": str(c.capacity),
                "languages": " ".join(sorted(c.languages)),
                "topics": " ".join(sorted(c.topics)) or "all",
            }
        )
    return cols, rows


def as_text(name: str, data: tuple[Columns, Rows]) -> str:
    cols, rows = data
    if not rows:
        return f"{TITLES[name]}: none."
    lines = [f"{TITLES[name]} ({len(rows)}):"]
    for row in rows:
        parts = []
        for var, label in cols:
            value = row.get(var, "")
            if var == "id":
                value = short_id(value)
            if value:
                parts.append(f"{label}: {value}" if var not in ("position", "jid") else value)
        lines.append(" - " + ", ".join(parts))
    return "\n".join(lines)


def as_form(name: str, data: tuple[Columns, Rows]) -> Form:
    cols, rows = data
    form = Form("result", title=TITLES[name])
    form.set_reported(*cols)
    for row in rows:
        form.add_item({var: row.get(var, "") for var, _ in cols})
    return form


def client_status(lc: Lifecycle, client: str) -> str:
    r = lc.state.open_request_of(client)
    if r is None:
        return "You have no open request. Write anything to ask for help."
    if r.state == "active" and r.session_id in lc.state.sessions:
        s = lc.state.sessions[r.session_id]
        return f"You are in session {s.short} with {s.counsellor}. Write to them directly; 'close' ends it."
    position = lc.positions().get(r.id, 0)
    return f"Your request {r.short} is at position {position} in the queue. 'cancel' withdraws it."
