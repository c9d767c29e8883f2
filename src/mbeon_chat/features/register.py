"""XEP-0077: In-Band Registration: new accounts before login, password change and cancellation after.

Creating accounts is off unless ``auth.allow_registration = true``; only then does the stream offer the
register feature and pass ``jabber:iq:register`` iqs to us before authentication (over TLS when TLS is
required). Registrations are limited per client address. After login, an account can change its password
(an iq set with username and password) or remove itself (``<remove/>``): the account is deleted with its
data, the request is answered, then every session of the account is closed with ``<not-authorized/>``
(XEP-0077 3.2).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from mbeon_chat.core.accounts import AccountError
from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.storage.api import AlreadyExists
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError, StreamCondition
from mbeon_chat.xmpp.jid import JID, InvalidJID
from mbeon_chat.xmpp.stanza import IQ, Stanza

DEPENDS = ()

_R = "{" + ns.REGISTER + "}"
QUERY = _R + "query"


@dataclass(frozen=True)
class Options:
    min_password_length: int = 8
    #: at most this many accounts created from one address per ``registration_window`` seconds
    registrations_per_address: int = 3
    registration_window: float = 3600.0
    instructions: str = "Choose a user name and a password (8 characters at least)."
    allow_password_change: bool = True
    allow_remove: bool = True

    def validate(self) -> None:
        if self.min_password_length < 1:
            raise ValueError("min_password_length: must be at least 1")
        if self.registrations_per_address < 1:
            raise ValueError("registrations_per_address: must be at least 1")
        if self.registration_window <= 0:
            raise ValueError("registration_window: must be positive")


class RateLimit:
    """At most ``limit`` events per ``window`` seconds for each key (a sliding window)."""

    def __init__(self, limit: int, window: float, clock: Any = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self.clock()
        times = self._seen.setdefault(key, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        if len(self._seen) > 50_000:
            self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] <= self.window}
        return True


def _fields(query: Element) -> tuple[str | None, str | None]:
    username = query.findtext(_R + "username")
    password = query.findtext(_R + "password")
    return (username.strip() if username else None), (password or None)


def _iq(iq_id: str | None, type_: str, *children: Element) -> Element:
    el = Element(IQ, {"type": type_}, list(children) or None)
    if iq_id is not None:
        el.attrs["id"] = iq_id
    return el


class Register:
    def __init__(self, api: PluginAPI, options: Options) -> None:
        self.api = api
        self.options = options
        self.limit = RateLimit(options.registrations_per_address, options.registration_window)
        state = api.restore(1)
        if state is not None:
            self.limit._seen = {k: deque(v) for k, v in state.get("seen", {}).items()}

    def snapshot(self) -> dict[str, Any]:
        return {"version": 1, "seen": {k: list(v) for k, v in self.limit._seen.items() if v}}

    # --- before authentication ---------------------------------------------------------------------
    async def preauth_iq(self, el: Element, conn: Any) -> Element:
        """Answer a pre-auth ``jabber:iq:register`` iq (the stream machine let it through)."""
        iq_id = el.get("id")
        query = el.first_child()
        try:
            if query is None or query.tag != QUERY:
                raise StanzaError(StanzaCondition.BAD_REQUEST)
            if el.get("type") == "get":
                return _iq(iq_id, "result", self._form())
            if el.get("type") != "set":
                raise StanzaError(StanzaCondition.BAD_REQUEST, "iq type must be get or set")
            if query.find(_R + "remove") is not None:
                raise StanzaError(StanzaCondition.NOT_ALLOWED, "log in to remove an account")
            domain = getattr(getattr(conn, "machine", None), "domain", self.api.domain)
            await self._create(query, getattr(conn, "remote", "?"), domain)
            return _iq(iq_id, "result")
        except StanzaError as error:
            reply = _iq(iq_id, "error")
            if query is not None:
                reply.append(query)
            reply.append(error.to_element())
            return reply

    def _form(self) -> Element:
        query = Element(QUERY)
        query.add(_R + "instructions", None, self.options.instructions)
        query.add(_R + "username")
        query.add(_R + "password")
        return query

    async def _create(self, query: Element, remote: str, domain: str) -> None:
        username, password = _fields(query)
        if not username or not password:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "a user name and a password are required")
        username = self._username(username, domain)
        self._check_password(password)
        accounts = self.api.ctx.accounts
        if await accounts.exists(username):
            raise StanzaError(StanzaCondition.CONFLICT, "that user name is taken")
        if not self.limit.allow(remote):
            self.api.log.warning("register.rate_limited", remote=remote)
            text = "too many registrations from your address; try again later"
            raise StanzaError(StanzaCondition.POLICY_VIOLATION, text, "wait")
        try:
            await accounts.create(username, password)
        except AlreadyExists:  # registered by someone else just now
            raise StanzaError(StanzaCondition.CONFLICT, "that user name is taken") from None
        except AccountError as exc:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, str(exc)) from None
        self.api.log.info("register.created", username=username, remote=remote)

    def _username(self, raw: str, domain: str) -> str:
        """The normalised localpart (RFC 7622), or not-acceptable."""
        try:
            if "@" in raw or "/" in raw:
                raise InvalidJID(raw)
            local = JID.parse(f"{raw}@{domain}").local
        except InvalidJID:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, "that user name is not allowed") from None
        assert local is not None
        return local

    def _check_password(self, password: str) -> None:
        if len(password) < self.options.min_password_length:
            raise StanzaError(
                StanzaCondition.NOT_ACCEPTABLE,
                f"the password is too short ({self.options.min_password_length} characters at least)",
            )

    # --- after authentication ----------------------------------------------------------------------
    async def on_get(self, iq: Stanza, origin: Session | None) -> Element:
        owner = self._own_account(iq, origin)
        query = Element(QUERY)
        query.add(_R + "registered")
        query.add(_R + "username", None, owner.local)
        query.add(_R + "password")
        return query

    async def on_set(self, iq: Stanza, origin: Session | None) -> Stanza | None:
        owner = self._own_account(iq, origin)
        assert owner.local is not None and origin is not None
        query = iq.payload
        assert query is not None
        if query.find(_R + "remove") is not None:
            await self._remove(iq, origin, owner.local)
            return None  # answered before the streams close
        if not self.options.allow_password_change:
            raise StanzaError(StanzaCondition.NOT_ALLOWED, "password changes are disabled")
        username, password = _fields(query)
        if not username or not password:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "username and password are required")
        if self._username(username, owner.domain) != owner.local:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "the username is not yours")
        self._check_password(password)
        try:
            await self.api.ctx.accounts.set_password(owner.local, password)
        except AccountError as exc:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, str(exc)) from None
        self.api.log.info("register.password_changed", username=owner.local)
        return iq.result()

    async def _remove(self, iq: Stanza, origin: Session, username: str) -> None:
        if not self.options.allow_remove:
            raise StanzaError(StanzaCondition.NOT_ALLOWED, "accounts cannot be removed here")
        await self.api.ctx.accounts.delete(username)
        self.api.log.info("register.removed", username=username)
        origin.send(iq.result().el)
        for session in self.api.sessions.resources(origin.bare):
            session.close(StreamCondition.NOT_AUTHORIZED, "the account was removed")

    def _own_account(self, iq: Stanza, origin: Session | None) -> JID:
        """Only the account itself (iq to the server, to its own bare JID, or without 'to')."""
        if origin is None or iq.from_ is None:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        if iq.to is not None and iq.to.local is not None and iq.to.bare != origin.bare:
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        return origin.bare


def setup(api: PluginAPI) -> None:
    options: Options = api.options
    register = Register(api, options)
    api.on_save(register.snapshot)
    api.add_feature(ns.REGISTER)
    api.on_iq("get", ns.REGISTER, "query", register.on_get, target="both")
    api.on_iq("set", ns.REGISTER, "query", register.on_set, target="both")

    def activate() -> None:
        api.ctx.preauth_iq = register.preauth_iq

    def unload() -> None:
        if api.ctx.preauth_iq == register.preauth_iq:
            api.ctx.preauth_iq = None

    api.on_activate(activate)
    api.on_unload(unload)
