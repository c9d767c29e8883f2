"""XEP-0050: Ad-Hoc Commands, the registry through which any plugin offers commands.

Other plugins use the exported object (see docs/DEVELOPING.md, "Ad-hoc commands")::

    adhoc = api.plugin("adhoc")
    adhoc.add_command(api, "queue-status", "Queue status", handler, allowed=api.is_admin)

A command is recorded as a hook registration of the *calling* plugin (event ``adhoc/commands``), so the
plugin host removes it when that plugin unloads or reloads; nobody unregisters by hand. Commands live at
the server's domain (``jid=None``) or at a component's domain; a component passes its
``http://jabber.org/protocol/commands`` iqs and node disco queries to :meth:`AdHoc.handle_iq`.
"""

from __future__ import annotations

import inspect
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.forms import Form, FormError
from mbeon_chat.xmpp.jid import JID
from mbeon_chat.xmpp.stanza import Stanza

DEPENDS = ()
NODE = ns.COMMANDS
_CMD = "{" + ns.COMMANDS + "}"
_INFO = "{" + ns.DISCO_INFO + "}"
_ITEMS = "{" + ns.DISCO_ITEMS + "}"
COMMAND = _CMD + "command"
DISCO_INFO = _INFO + "query"
DISCO_ITEMS = _ITEMS + "query"
ACTIONS = ("execute", "next", "prev", "complete", "cancel")
STATUSES = ("executing", "completed", "canceled")
NOTE_TYPES = ("info", "warn", "error")
EVENT = "adhoc/commands"


@dataclass(frozen=True)
class Options:
    session_timeout: float = 600.0  # seconds a multi-step command may stay idle
    max_sessions: int = 1000

    def validate(self) -> None:
        if self.session_timeout <= 0:
            raise ValueError("session_timeout: must be positive")
        if self.max_sessions < 1:
            raise ValueError("max_sessions: must be at least 1")


# --- what handlers get and give -----------------------------------------------------------------------
@dataclass(frozen=True)
class Note:
    text: str
    type: str = "info"  # info | warn | error


@dataclass
class Request:
    """One step of a command, as the handler sees it."""

    from_: JID  # the requester's full JID
    to: JID  # where the command lives (the server's or a component's domain)
    node: str
    action: str  # execute | next | prev | complete | cancel ("execute" on a later step: the default action)
    form: dict[str, list[str]] | None  # submitted jabber:x:data fields, or None
    session: dict[str, Any]  # persists across the steps of this sessionid
    sessionid: str
    lang: str | None = None
    origin: Any = None  # the requester's Session when it is local

    @property
    def first_step(self) -> bool:
        return not self.session.get("_step")

    def value(self, var: str, default: str | None = None) -> str | None:
        """The first submitted value of ``var``."""
        values = (self.form or {}).get(var)
        return values[0] if values else default


@dataclass
class Response:
    status: str = "completed"  # executing | completed | canceled
    form: Form | Element | None = None
    notes: list[Note] = field(default_factory=list)
    actions: tuple[str, ...] = ("complete",)  # offered while executing; the first is the default

    @classmethod
    def done(cls, text: str | None = None, form: Form | None = None) -> Response:
        return cls("completed", form, [Note(text)] if text else [])

    @classmethod
    def ask(
        cls, form: Form, *, actions: tuple[str, ...] = ("complete",), note: str | None = None
    ) -> Response:
        return cls("executing", form, [Note(note)] if note else [], actions)

    @classmethod
    def fail(cls, text: str) -> Response:
        return cls("completed", None, [Note(text, "error")])

    @classmethod
    def canceled(cls, text: str | None = None) -> Response:
        return cls("canceled", None, [Note(text)] if text else [])


_Request = Request


class Command:
    """A registered command; callable only so that it can sit in a hook chain (it does nothing there)."""

    __slots__ = ("allowed", "handler", "jid", "name", "node", "plugin")

    def __init__(
        self,
        node: str,
        name: str,
        handler: Callable[..., Any],
        allowed: Callable[[JID], bool],
        jid: str,
        plugin: str,
    ) -> None:
        self.node, self.name, self.handler, self.allowed, self.jid, self.plugin = (
            node,
            name,
            handler,
            allowed,
            jid,
            plugin,
        )

    def __call__(self, *args: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"<Command {self.node!r} at {self.jid} by {self.plugin}>"


@dataclass
class _Session:
    node: str
    target: str
    owner: str  # full JID
    data: dict[str, Any]
    actions: tuple[str, ...] = ("complete",)
    last: float = field(default_factory=time.monotonic)


def _error(condition: StanzaCondition, text: str | None = None, specific: str | None = None) -> StanzaError:
    app = Element(_CMD + specific) if specific else None
    return StanzaError(condition, text, app_condition=app)


class AdHoc:
    """The object ``api.plugin("adhoc")`` returns."""

    NODE = NODE
    Form = Form
    Request = Request
    Response = Response
    Note = Note

    def __init__(self, api: PluginAPI, options: Options, sessions: dict[str, _Session] | None = None) -> None:
        self._api = api
        self._options = options
        self._sessions: dict[str, _Session] = sessions or {}
        self._retired = False

    def _live(self) -> AdHoc:
        """After a reload, an old object held by someone forwards to the running version."""
        if self._retired:
            current = self._api.ctx.exports.get("adhoc")
            if current is not None and current is not self:
                return current  # type: ignore[no-any-return]
        return self

    # --- the API for other plugins ------------------------------------------------------------------
    def add_command(
        self,
        api: PluginAPI,
        node: str,
        name: str,
        handler: Callable[[_Request], Any],
        *,
        allowed: Callable[[JID], bool],
        jid: str | JID | None = None,
    ) -> None:
        """Offer a command from the plugin that owns ``api`` (call it in that plugin's ``setup``).

        ``handler(request)`` (sync or async) returns a :class:`Response` (or a str: completed with that
        note). ``allowed(requester_jid)`` gates listing and every step (else ``forbidden``). ``jid``: the
        server's domain (None) or a component's domain. Removed automatically with the calling plugin.
        """
        if not isinstance(node, str) or not node or node == NODE:
            raise ValueError(f"ad-hoc command node must be a non-empty string other than {NODE}")
        if not callable(handler) or not callable(allowed):
            raise TypeError(f"ad-hoc command {node!r}: handler and allowed must be callables")
        target = self._api.domain if jid is None else str(jid)
        pending = [r.handler for r in api.reg.hooks if r.event == EVENT]
        live = [r.handler for r in self._api.hooks.handlers(EVENT) if r.owner != api.name]
        for other in [*live, *pending]:
            if getattr(other, "jid", None) == target and getattr(other, "node", None) == node:
                raise ValueError(
                    f"ad-hoc command {node!r} at {target} is already offered by plugin "
                    f"{getattr(other, 'plugin', '?')!r}"
                )
        api.on(EVENT, Command(node, name, handler, allowed, target, api.name))

    def commands(self, jid: str | JID | None = None, requester: JID | None = None) -> list[Command]:
        """The commands at ``jid`` (default: the server), only those ``requester`` may use if given."""
        target = self._api.domain if jid is None else str(jid)
        out = []
        for reg in self._api.hooks.handlers(EVENT):
            cmd = reg.handler
            if getattr(cmd, "jid", None) == target and (requester is None or self._allowed(cmd, requester)):
                out.append(cmd)
        return out  # type: ignore[return-value]

    def disco_items(self, jid: str | JID | None, requester: JID) -> list[Element]:
        """``<item jid node name/>`` for each command ``requester`` may see (a component's disco#items)."""
        return [
            Element(_ITEMS + "item", {"jid": c.jid, "node": c.node, "name": c.name})
            for c in self._live().commands(jid, requester)
        ]

    async def handle_iq(self, stanza: Stanza, origin: Any = None) -> Stanza | None:
        """Answer a command iq or a disco query for the commands node or a command node (result or error
        stanza, to send as is); None when the stanza is not for the ad-hoc machinery."""
        live = self._live()
        if live is not self:
            return await live.handle_iq(stanza, origin)
        payload = stanza.payload if stanza.kind == "iq" else None
        if payload is None or stanza.to is None or stanza.from_ is None:
            return None
        try:
            if payload.tag == COMMAND and stanza.type == "set":
                return await self._execute(stanza, payload, origin)
            if stanza.type == "get" and payload.tag in (DISCO_INFO, DISCO_ITEMS):
                return self._disco(stanza, payload)
        except StanzaError as error:
            return stanza.error_reply(error)
        return None

    # --- disco ---------------------------------------------------------------------------------------
    def _disco(self, stanza: Stanza, query: Element) -> Stanza | None:
        node = query.get("node")
        assert stanza.to is not None and stanza.from_ is not None
        target = str(stanza.to)
        if node == NODE:
            result = Element(query.tag, {"node": NODE})
            if query.tag == DISCO_ITEMS:
                result.children.extend(self.disco_items(target, stanza.from_))
            else:
                result.add(
                    _INFO + "identity",
                    {"category": "automation", "type": "command-list", "name": "Commands"},
                )
                result.add(_INFO + "feature", {"var": ns.COMMANDS})
            return stanza.result(result)
        cmd = self._find(target, node) if node else None
        if cmd is None:
            return None
        if not self._allowed(cmd, stanza.from_):
            raise _error(StanzaCondition.FORBIDDEN)
        result = Element(query.tag, {"node": cmd.node})
        if query.tag == DISCO_INFO:
            result.add(
                _INFO + "identity",
                {"category": "automation", "type": "command-node", "name": cmd.name},
            )
            result.add(_INFO + "feature", {"var": ns.COMMANDS})
            result.add(_INFO + "feature", {"var": ns.DATA_FORMS})
        return stanza.result(result)

    # --- execution -----------------------------------------------------------------------------------
    def _find(self, target: str, node: str) -> Command | None:
        for reg in self._api.hooks.handlers(EVENT):
            cmd = reg.handler
            if getattr(cmd, "jid", None) == target and getattr(cmd, "node", None) == node:
                return cmd  # type: ignore[return-value]
        return None

    def _allowed(self, cmd: Any, requester: JID) -> bool:
        try:
            return bool(cmd.allowed(requester))
        except Exception:
            self._api.log.exception("adhoc.allowed_failed", node=cmd.node, owner=cmd.plugin)
            return False

    async def _execute(self, stanza: Stanza, el: Element, origin: Any) -> Stanza:
        assert stanza.to is not None and stanza.from_ is not None
        requester, target = stanza.from_, str(stanza.to)
        node = el.get("node") or ""
        action = el.get("action") or "execute"
        sessionid = el.get("sessionid")
        if action not in ACTIONS:
            raise _error(StanzaCondition.BAD_REQUEST, f"unknown action {action!r}", "malformed-action")
        cmd = self._find(target, node)
        if cmd is None:
            raise _error(StanzaCondition.ITEM_NOT_FOUND, f"no command {node!r} here")
        if not self._allowed(cmd, requester):
            raise _error(StanzaCondition.FORBIDDEN, "you may not use this command")
        self._expire()
        if sessionid:
            session = self._sessions.get(sessionid)
            if (
                session is None
                or session.owner != str(requester)
                or session.node != node
                or session.target != target
            ):
                raise _error(StanzaCondition.BAD_REQUEST, "unknown or expired session", "bad-sessionid")
            if action == "execute":
                action = session.actions[0] if session.actions else "complete"
            elif action != "cancel" and action not in session.actions:
                raise _error(
                    StanzaCondition.BAD_REQUEST, f"action {action!r} is not offered now", "bad-action"
                )
        else:
            if action != "execute":
                raise _error(StanzaCondition.BAD_REQUEST, "start a command with execute", "bad-action")
            if len(self._sessions) >= self._options.max_sessions:
                raise _error(StanzaCondition.RESOURCE_CONSTRAINT, "too many open command sessions")
            sessionid = secrets.token_urlsafe(12)
            session = _Session(node, target, str(requester), {})
        try:
            submitted = Form.from_parent(el)
        except FormError as exc:
            raise _error(StanzaCondition.BAD_REQUEST, str(exc), "bad-payload") from None
        values = submitted.values() if submitted is not None and submitted.type == "submit" else None
        lang = stanza.el.get("{" + ns.XML + "}lang")
        request = Request(requester, stanza.to, node, action, values, session.data, sessionid, lang, origin)
        try:
            result = cmd.handler(request)
            if inspect.isawaitable(result):
                result = await result
            response = _response(result, action)
        except StanzaError:
            self._sessions.pop(sessionid, None)
            raise
        except Exception:
            self._sessions.pop(sessionid, None)
            self._api.log.exception("adhoc.command_failed", node=node, owner=cmd.plugin)
            raise _error(
                StanzaCondition.INTERNAL_SERVER_ERROR, "the command failed; the server log has details"
            ) from None
        session.data["_step"] = session.data.get("_step", 0) + 1
        reply = Element(COMMAND, {"node": node, "sessionid": sessionid, "status": response.status})
        if response.status == "executing":
            actions = tuple(a for a in response.actions if a in ("prev", "next", "complete")) or ("complete",)
            session.actions, session.last = actions, time.monotonic()
            self._sessions[sessionid] = session
            acts = reply.add(_CMD + "actions", {"execute": actions[0]})
            for a in ("prev", "next", "complete"):
                if a in actions:
                    acts.add(_CMD + a)
        else:
            self._sessions.pop(sessionid, None)
        for note in response.notes:
            reply.add(_CMD + "note", {"type": note.type}, note.text)
        if response.form is not None:
            reply.append(response.form.to_element() if isinstance(response.form, Form) else response.form)
        return stanza.result(reply)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self._options.session_timeout
        for sid in [s for s, sess in self._sessions.items() if sess.last < cutoff]:
            del self._sessions[sid]


def _response(result: Any, action: str) -> Response:
    """Whatever the handler returned, as a Response (duck-typed: it may come from another plugin version)."""
    if result is None:
        return Response("canceled" if action == "cancel" else "completed")
    if isinstance(result, str):
        return Response.done(result)
    if isinstance(result, Form):
        return Response("executing" if result.type == "form" else "completed", result)
    get = result.get if isinstance(result, dict) else lambda k, d=None: getattr(result, k, d)
    status = get("status", "completed")
    if status not in STATUSES:
        raise ValueError(f"ad-hoc response status must be one of {', '.join(STATUSES)}, not {status!r}")
    notes = []
    for n in get("notes", None) or []:
        if isinstance(n, str):
            notes.append(Note(n))
        elif isinstance(n, tuple):
            notes.append(Note(n[1], n[0]))
        else:
            notes.append(Note(n.text, n.type))
    for n in notes:
        if n.type not in NOTE_TYPES:
            raise ValueError(f"ad-hoc note type must be one of {', '.join(NOTE_TYPES)}, not {n.type!r}")
    form = get("form", None)
    if form is not None and not isinstance(form, Form | Element):
        form = form.to_element()  # a Form from another copy of the forms module
    return Response(status, form, notes, tuple(get("actions", None) or ("complete",)))


def setup(api: PluginAPI) -> None:
    state = api.restore(1)
    sessions = {sid: _Session(**s) for sid, s in state["sessions"].items()} if state else None
    adhoc = AdHoc(api, api.options, sessions)
    api.export(adhoc)
    api.add_feature(ns.COMMANDS)

    async def on_command(iq: Stanza, origin: Any) -> Stanza | None:
        return await adhoc.handle_iq(iq, origin)

    async def on_node_disco(iq: Stanza, origin: Any) -> bool | None:
        """Disco for the commands node and command nodes at the server (before the disco plugin)."""
        payload = iq.payload
        if iq.type != "get" or payload is None or payload.tag not in (DISCO_INFO, DISCO_ITEMS):
            return None
        node = payload.get("node")
        if not node or (node != NODE and adhoc._find(api.domain, node) is None):
            return None
        reply = await adhoc.handle_iq(iq, origin)
        if reply is None:
            return None
        await api.send(reply)
        return True

    api.on_iq("set", ns.COMMANDS, "command", on_command, target="host")
    api.on("iq/host", on_node_disco, priority=50)
    api.add_timer(60.0, adhoc._expire)

    def save() -> dict[str, Any]:
        sessions = {
            sid: {
                "node": s.node,
                "target": s.target,
                "owner": s.owner,
                "data": s.data,
                "actions": s.actions,
                "last": s.last,
            }
            for sid, s in adhoc._sessions.items()
        }
        return {"version": 1, "sessions": sessions}

    def retire() -> None:
        adhoc._retired = True

    api.on_save(save)
    api.on_unload(retire)
