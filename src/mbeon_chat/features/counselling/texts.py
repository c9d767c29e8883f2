"""What the service says: chat messages with a human-readable body and a machine-readable payload.

Every message carries one element in ``urn:mbeon:counselling:0`` so a counselling client can follow
the state without parsing text; any other XMPP client shows the body.
"""

from __future__ import annotations

from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import make_message

from .state import OfferState, RequestState, SessionState, short_id

NS = "urn:mbeon:counselling:0"

CLIENT_HELP = (
    "Write anything to ask for help; you will be told your place in the queue. "
    "Commands: 'status', 'cancel' (leave the queue), 'close' (end your session)."
)
COUNSELLOR_HELP = (
    "Counsellor commands: 'accept <id>', 'decline <id>', 'close [<session>]', "
    "'transfer <session> <counsellor-jid>', 'queue', 'sessions', 'team', 'help'. "
    "Ids may be shortened to their last 8 characters."
)


def _tag(name: str) -> str:
    return f"{{{NS}}}{name}"


def _message(service: JID, to: str, body: str, payload: Element | None = None) -> Element:
    msg = make_message(to, body, "chat", service)
    if payload is not None:
        msg.append(payload)
    return msg


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no counsellor covers this language and topic yet)"
    if seconds <= 0:
        return "a counsellor should be with you shortly"
    minutes = max(1, round(seconds / 60))
    return f"about {minutes} minute{'s' if minutes != 1 else ''}"


def queued(service: JID, r: RequestState, position: int, wait: float | None, first: bool) -> Element:
    if first:
        body = (
            f"Your request {r.short} ({r.topic}, {r.language}) is in the queue at position {position}. "
            f"Expected wait: {_minutes(wait)}. Send 'cancel' to withdraw it."
        )
    else:
        body = f"Your request {r.short}: you are now at position {position}. Expected wait: {_minutes(wait)}."
    attrs = {
        "id": r.id,
        "state": "waiting",
        "position": str(position),
        "topic": r.topic,
        "language": r.language,
    }
    if wait is not None:
        attrs["wait"] = str(int(wait))
    return _message(service, r.client, body, Element(_tag("request"), attrs))


def offer(service: JID, o: OfferState, r: RequestState, timeout: float) -> Element:
    if o.transfer_from is None:
        body = (
            f"New request {r.short}: topic {r.topic}, language {r.language}"
            + (f', first message: "{r.first_message}"' if r.first_message else "")
            + f". Reply 'accept {r.short}' or 'decline {r.short}' within {int(timeout)} s."
        )
    else:
        body = (
            f"{o.transfer_from} asks you to take over session {short_id(o.session_id or '')} "
            f"(request {r.short}, topic {r.topic}, language {r.language}). "
            f"Reply 'accept {r.short}' or 'decline {r.short}' within {int(timeout)} s."
        )
    attrs = {
        "request": r.id,
        "topic": r.topic,
        "language": r.language,
        "kind": "transfer" if o.transfer_from else "request",
        "expires": str(int(o.expires_at)),
    }
    if o.transfer_from:
        attrs["from"] = o.transfer_from
        attrs["session"] = o.session_id or ""
    payload = Element(_tag("offer"), attrs)
    if r.first_message:
        payload.add(_tag("first-message"), None, r.first_message)
    return _message(service, o.counsellor, body, payload)


def _session_payload(s: SessionState, r: RequestState, state: str = "active") -> Element:
    return Element(
        _tag("session"),
        {
            "id": s.id,
            "request": r.id,
            "client": s.client,
            "counsellor": s.counsellor,
            "topic": r.topic,
            "language": r.language,
            "state": state,
        },
    )


def started_to_client(service: JID, s: SessionState, r: RequestState, transferred: bool = False) -> Element:
    if transferred:
        body = f"Your conversation (session {s.short}) continues with {s.counsellor}. Write to them directly."
    else:
        body = f"{s.counsellor} is here for you now (session {s.short}). Write to them directly."
    return _message(service, s.client, body, _session_payload(s, r))


def started_to_counsellor(
    service: JID, s: SessionState, r: RequestState, transferred: bool = False
) -> Element:
    verb = "is now yours" if transferred else "started"
    body = f"Session {s.short} {verb}: talk to {s.client} (topic {r.topic}, language {r.language})."
    if r.first_message:
        body += f' First message: "{r.first_message}"'
    return _message(service, s.counsellor, body, _session_payload(s, r))


def closed(service: JID, to: str, s: SessionState, r: RequestState, by: str, reason: str) -> Element:
    if reason == "counsellor-offline":
        text = f"Session {s.short} ended: {s.counsellor} went offline."
    else:
        text = f"Session {s.short} was closed by {by}. Thank you for talking with us."
    payload = _session_payload(s, r, "closed")
    payload.attrs["by"] = by
    payload.attrs["reason"] = reason
    return _message(service, to, text, payload)


def requeued(service: JID, r: RequestState, counsellor: str, position: int) -> Element:
    body = (
        f"{counsellor} is no longer reachable. Your request {r.short} is back at the head of the queue "
        f"(position {position}); the next free counsellor will take over."
    )
    attrs = {"id": r.id, "state": "waiting", "position": str(position), "requeued": "true"}
    return _message(service, r.client, body, Element(_tag("request"), attrs))


def notice(service: JID, to: str, body: str, payload: Element | None = None) -> Element:
    return _message(service, to, body, payload)


def event(name: str, **attrs: str) -> Element:
    return Element(_tag(name), attrs)
