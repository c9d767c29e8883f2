"""XEP-0115: Entity Capabilities, as far as the server needs them: what each local session supports.

A client advertises ``<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='...' ver='...'/>`` in
its presence. The server asks the session itself (disco#info on ``node#ver``, from the account's bare JID)
the first time it meets a ``ver``, checks the answer against the hash (section 5.1, with XEP-0128
extended forms), and caches verified answers by ``ver`` (bounded); an answer that does not match is used
for that session only. PEP uses it to send notifications only to resources that asked for them with
``<node>+notify`` features (XEP-0163 section 4).

Exported (``api.plugin("caps")``): ``advertised(session)``, ``features(session)`` and ``interests(session)``.
Hook fired: ``caps/changed`` (session, previous features or None) once a session's features are known or
change.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections import OrderedDict
from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.forms import Form, FormError
from mbeon_chat.xmpp.stanza import IQ, Stanza

DEPENDS = ()

C = f"{{{ns.CAPS}}}c"
INFO = f"{{{ns.DISCO_INFO}}}query"
IDENTITY = f"{{{ns.DISCO_INFO}}}identity"
FEATURE = f"{{{ns.DISCO_INFO}}}feature"
FORM = f"{{{ns.DATA_FORMS}}}x"
XML_LANG = f"{{{ns.XML}}}lang"
HASHES = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}
CACHE_SIZE = 4096  # verified ver strings kept
MAX_PENDING = 4096  # unanswered disco#info queries remembered
# Keys in Session.data (plain values: they survive a reload of this plugin).
VER, KNOWN = "caps.ver", "caps.features"


def verification_string(info: Element) -> str:
    """The string that is hashed into ``ver`` (XEP-0115 5.1)."""
    identities = sorted(
        "/".join(i.get(key) or "" for key in ("category", "type", XML_LANG, "name"))
        for i in info.findall(IDENTITY)
    )
    features = sorted(f.get("var") or "" for f in info.findall(FEATURE))
    out = [s + "<" for s in identities] + [s + "<" for s in features]
    forms: list[tuple[str, list[str]]] = []
    for el in info.findall(FORM):
        try:
            form = Form.parse(el)
        except FormError:
            continue
        form_type = form.form_type
        if form_type is None:
            continue
        parts = [form_type + "<"]
        for field in sorted(
            (f for f in form.fields if f.var and f.var != "FORM_TYPE"), key=lambda f: f.var or ""
        ):
            parts.append(f"{field.var}<")
            parts.extend(v + "<" for v in sorted(field.values))
        forms.append((form_type, parts))
    for _, parts in sorted(forms):
        out.extend(parts)
    return "".join(out)


def verifies(info: Element, hash_name: str, ver: str) -> bool:
    algorithm = HASHES.get(hash_name.lower())
    if algorithm is None:
        return False
    digest = hashlib.new(algorithm, verification_string(info).encode()).digest()
    return base64.b64encode(digest).decode() == ver


class Caps:
    def __init__(self, api: PluginAPI) -> None:
        self.api = api
        self.verified: OrderedDict[str, frozenset[str]] = OrderedDict()
        self.pending: OrderedDict[str, tuple[Session, str, str]] = (
            OrderedDict()
        )  # iq id -> (session, ver, hash)

    # --- what other plugins ask ----------------------------------------------------------------------
    def advertised(self, session: Session) -> bool:
        """Whether the session's last presence carried caps."""
        return VER in session.data

    def features(self, session: Session) -> frozenset[str] | None:
        """The session's disco features, or None while unknown (or without caps)."""
        known: frozenset[str] | None = session.data.get(KNOWN)
        return known

    def interests(self, session: Session) -> frozenset[str] | None:
        """The nodes the session wants PEP notifications of (``+notify``); None: it advertised no caps."""
        if not self.advertised(session):
            return None
        return frozenset(f[: -len("+notify")] for f in self.features(session) or () if f.endswith("+notify"))

    # --- presence from a local client ----------------------------------------------------------------
    async def on_presence(self, stanza: Stanza, origin: Session | None) -> bool:
        if origin is None or stanza.type != "available":
            return False
        c = stanza.el.find(C)
        ver, hash_name, node = (
            (c.get("ver"), c.get("hash"), c.get("node")) if c is not None else (None, None, None)
        )
        if not ver or not hash_name or not node:  # no caps (or legacy caps without a hash): unfiltered
            origin.data.pop(VER, None)
            await self._set(origin, None)
            return False
        if origin.data.get(VER) == ver:
            return False
        origin.data[VER] = ver
        known = self.verified.get(ver)
        if known is not None:
            self.verified.move_to_end(ver)
            await self._set(origin, known)
            return False
        origin.data.pop(KNOWN, None)  # unknown until the client answers
        iq_id = "caps-" + secrets.token_hex(8)
        self.pending[iq_id] = (origin, ver, hash_name)
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)
        query = Element(INFO, {"node": f"{node}#{ver}"})
        attrs = {"type": "get", "id": iq_id, "from": str(origin.bare), "to": str(origin.jid)}
        await self.api.send(Element(IQ, attrs, [query]))
        return False

    async def on_response(self, stanza: Stanza, origin: Session | None) -> bool:
        entry = self.pending.pop(stanza.id or "", None)
        if entry is None:
            return False
        session, ver, hash_name = entry
        info = stanza.el.find(INFO)
        if stanza.type != "result" or info is None or session.data.get(VER) != ver:
            return True
        features = frozenset(f.get("var") or "" for f in info.findall(FEATURE)) - {""}
        if verifies(info, hash_name, ver):
            self.verified[ver] = features
            while len(self.verified) > CACHE_SIZE:
                self.verified.popitem(last=False)
        await self._set(session, features)
        return True

    async def _set(self, session: Session, features: frozenset[str] | None) -> None:
        previous = session.data.get(KNOWN)
        if features is None:
            session.data.pop(KNOWN, None)
        else:
            session.data[KNOWN] = features
        if features is not None and features != previous:
            await self.api.hooks.fire("caps/changed", session, previous)

    def snapshot(self) -> dict[str, Any]:
        return {"version": 1, "verified": [[ver, sorted(f)] for ver, f in self.verified.items()]}

    def restore(self, state: dict[str, Any] | None) -> None:
        for ver, features in (state or {}).get("verified", []):
            self.verified[ver] = frozenset(features)


def setup(api: PluginAPI) -> None:
    caps = Caps(api)
    caps.restore(api.restore(1))
    api.export(caps)
    api.on_save(caps.snapshot)
    api.on("presence/self", caps.on_presence, priority=200)
    api.on("iq/account-response", caps.on_response, priority=100)
