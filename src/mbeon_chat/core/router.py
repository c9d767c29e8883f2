"""Stanza routing for one domain (RFC 6120 10, RFC 6121 8).

The router classifies a stanza by its target (the host, a local account's bare or full JID, a component,
or a remote domain) and fires ``<kind>/host``, ``<kind>/bare`` or ``<kind>/full`` on the hook bus. Plugins
add handlers with higher priorities; the delivery rules of RFC 6121 8.5 are the default handlers here.
A handler that raises :class:`StanzaError` gets its error reply sent; any other exception becomes
``internal-server-error`` plus a log line, and the session survives.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from mbeon_chat.core.hooks import HookBus
from mbeon_chat.core.session import Session, SessionRegistry
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import Stanza

log = structlog.get_logger("mbeon_chat.router")

IqHandler = Callable[[Stanza, "Session | None"], Awaitable["Stanza | Element | None"]]
SERVICE_UNAVAILABLE = StanzaCondition.SERVICE_UNAVAILABLE
#: (kind, target) -> hook event name, built once instead of formatting a string per stanza
_EVENTS = {(k, t): f"{k}/{t}" for k in ("message", "presence", "iq") for t in ("host", "bare", "full")}


class Component(Protocol):
    async def handle(self, stanza: Stanza, origin: Session | None) -> None: ...


class RouterMetrics(Protocol):
    def routed(self, kind: str, seconds: float) -> None: ...


class Router:
    def __init__(self, domain: str, registry: SessionRegistry, hooks: HookBus) -> None:
        self.domain = domain
        self.host_jid = JID(None, domain, None)
        self.registry = registry
        self.hooks = hooks
        #: (target, type, payload tag) -> handler; target is "host" or "account".
        self.iq_handlers: dict[tuple[str, str, str], IqHandler] = {}
        self.components: dict[str, Component] = {}
        #: Set by a cluster node (mbeon_chat.cluster): takes a stanza for a component homed on another node
        #: and returns True when it sent it there.
        self.forward: Callable[[Stanza, Session | None], bool] | None = None
        self.metrics: RouterMetrics | None = None
        for kind in ("message", "presence", "iq"):
            for target in ("host", "bare", "full"):
                handler = getattr(self, f"_default_{kind}_{target}", None)
                if handler is not None:
                    hooks.add(f"{kind}/{target}", handler, priority=-1000, owner="core")

    # --- entry points --------------------------------------------------------------------------------
    async def route(self, stanza: Stanza, origin: Session | None = None) -> None:
        started = time.perf_counter()
        try:
            await self._route(stanza, origin)
        except StanzaError as error:
            await self.reply_error(stanza, error)
        except Exception:
            log.exception("stanza.handler_failed", kind=stanza.kind, stanza_id=stanza.id)
            await self.reply_error(stanza, StanzaError(StanzaCondition.INTERNAL_SERVER_ERROR))
        if self.metrics is not None:
            self.metrics.routed(stanza.kind, time.perf_counter() - started)

    async def reply_error(self, stanza: Stanza, error: StanzaError) -> None:
        """Send the error reply for ``stanza``; never answer an error with an error (RFC 6120 8.3.1)."""
        if stanza.type == "error" or stanza.from_ is None:
            return
        if stanza.kind == "iq" and stanza.type == "result":
            return
        reply = stanza.error_reply(error)
        if reply.from_ is None:
            # RFC 6120 10.3 and 8.1.2.1: a stanza without 'to' is handled for the sender's account, so its
            # error comes from the account's bare JID; a malformed 'to' (removed) is the server's own answer.
            own = stanza.to is None and error.condition is not StanzaCondition.JID_MALFORMED
            reply.set_from(stanza.from_.bare if own else self.host_jid)
        try:
            await self._route(reply, None)
        except Exception:
            log.exception("stanza.error_reply_failed", kind=stanza.kind)

    def deliver(self, session: Session, el: Element) -> None:
        session.send(el)

    # --- classification ----------------------------------------------------------------------------
    async def _route(self, stanza: Stanza, origin: Session | None) -> None:
        to = stanza.to
        kind = stanza.kind
        if to is None:
            sender = stanza.from_
            if kind == "presence":
                await self.hooks.fire("presence/self", stanza, origin)
                return
            if sender is None:
                return
            # RFC 6120 10.3: no 'to' means the sender's own account (bare JID).
            to = sender.bare
            if kind == "iq":
                await self._dispatch_iq("account", stanza, origin, to)
                return
            stanza.set_to(to)  # 10.3.1: a message is handled as if addressed to the bare JID
        if to.domain == self.domain:
            if to.local is None:
                if to.resource is not None and kind != "iq":
                    if kind == "presence":
                        return  # no such service here: ignored, like presence to the domain itself
                    raise StanzaError(SERVICE_UNAVAILABLE)
                target = "host"
            elif to.resource is None:
                target = "bare"
            else:
                target = "full"
            handled = self.hooks.dispatch(_EVENTS[kind, target], stanza, origin)
            if not isinstance(handled, bool):
                await handled
            return
        component = self.components.get(to.domain)
        if component is not None:
            if self.forward is not None and self.forward(stanza, origin):
                return
            await component.handle(stanza, origin)
            return
        if kind == "presence":
            return
        raise StanzaError(StanzaCondition.REMOTE_SERVER_NOT_FOUND, "server-to-server is not offered")

    async def _dispatch_iq(self, target: str, stanza: Stanza, origin: Session | None, to: JID | None) -> None:
        if stanza.type not in ("get", "set"):
            await self.hooks.fire(f"iq/{target}-response", stanza, origin)
            return
        payload = stanza.payload
        if payload is None or sum(1 for _ in stanza.el.elements()) != 1:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "an iq get/set carries exactly one child")
        handler = self.iq_handlers.get((target, stanza.type, payload.tag))
        if handler is None:
            raise StanzaError(SERVICE_UNAVAILABLE)
        result = await handler(stanza, origin)
        if result is None:
            return
        if isinstance(result, Element):
            result = stanza.result(result)
        if result.to is not None:
            await self._route(result, None)

    # --- default handlers (RFC 6121 8.5) -----------------------------------------------------------
    async def _default_iq_host(self, stanza: Stanza, origin: Session | None) -> bool:
        await self._dispatch_iq("host", stanza, origin, stanza.to)
        return True

    async def _default_iq_bare(self, stanza: Stanza, origin: Session | None) -> bool:
        await self._dispatch_iq("account", stanza, origin, stanza.to)
        return True

    async def _default_iq_full(self, stanza: Stanza, origin: Session | None) -> bool:
        session = self.registry.get(stanza.to) if stanza.to else None
        if session is not None:
            session.send(stanza.el)
        elif stanza.type in ("get", "set"):
            raise StanzaError(SERVICE_UNAVAILABLE)
        return True

    async def _default_message_host(self, stanza: Stanza, origin: Session | None) -> bool:
        return True  # nothing on the host reads messages unless a plugin does

    def _default_message_full(self, stanza: Stanza, origin: Session | None) -> bool | Awaitable[bool]:
        # Synchronous on the common path (the resource is online); the rest is a coroutine (see HookBus).
        session = self.registry.get(stanza.to) if stanza.to else None
        if session is not None:
            session.send(stanza.el)
            return True
        return self._message_full_unknown(stanza, origin)

    async def _message_full_unknown(self, stanza: Stanza, origin: Session | None) -> bool:
        """RFC 6121 8.5.3.2.1: no available resource with that full JID."""
        type_ = stanza.type
        if type_ == "chat":  # handled as if addressed to the bare JID: another resource, offline storage
            await self.hooks.fire("message/bare", stanza, origin)
        elif type_ == "headline" or type_ == "error":
            pass  # silently ignored
        else:  # normal (and unknown types, RFC 6121 5.2.2) and groupchat: an error to the sender
            raise StanzaError(SERVICE_UNAVAILABLE)
        return True

    async def _default_message_bare(self, stanza: Stanza, origin: Session | None) -> bool:
        to = stanza.to
        assert to is not None
        # RFC 6121 8.5.2.1.1 and 8.5.2.2.1: groupchat is never delivered to an account, errors are ignored
        if stanza.type == "groupchat":
            raise StanzaError(SERVICE_UNAVAILABLE)
        if stanza.type == "error":
            return True
        targets = self.message_targets(to.bare, stanza.type)
        if targets:
            el = stanza.el
            for session in targets:
                session.send(el)
            return True
        if stanza.type == "headline":
            return True
        if await self.hooks.fire("message/offline", stanza, origin):
            return True
        raise StanzaError(SERVICE_UNAVAILABLE)

    def message_targets(self, bare: JID, message_type: str) -> list[Session]:
        """RFC 6121 8.5.2.1.1: the available resources with the highest non-negative priority."""
        best: list[Session] = []
        top = 0
        headline = message_type == "headline"
        for session in self.registry.available(bare):
            p = session.priority
            if p < 0:
                continue
            if headline or p == top:
                best.append(session)
            elif p > top:
                top = p
                best = [session]
        return best

    async def _default_presence_full(self, stanza: Stanza, origin: Session | None) -> bool:
        session = self.registry.get(stanza.to) if stanza.to else None
        if session is not None:
            session.send(stanza.el)
        return True

    async def _default_presence_bare(self, stanza: Stanza, origin: Session | None) -> bool:
        to = stanza.to
        assert to is not None
        for session in self.registry.available(to.bare):
            session.send(stanza.el)
        return True

    async def _default_presence_host(self, stanza: Stanza, origin: Session | None) -> bool:
        return True
