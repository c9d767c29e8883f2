"""XEP-0163: Personal Eventing Protocol, a small PubSub service (XEP-0060) on every account's bare JID.

What clients rely on (OMEMO device lists and bundles, XEP-0084 avatars, XEP-0402 bookmarks, nicknames):

- *publish* (owner only) auto-creates the node; ``publish-options`` (7.1.5) set the new node's
  configuration, and on an existing node must match it, or the publish fails with ``conflict`` +
  ``<precondition-not-met/>``. Items keep their id (one is made up if missing); only the newest
  ``pubsub#max_items`` are kept (``max`` = the ``max_items`` option).
- *items* (6.5): all, ``max_items`` newest, or by id, for whoever the access model lets in: ``presence``
  (default: the owner and contacts with a subscription to the owner's presence), ``open`` (anyone) or
  ``whitelist`` (the owner only). *retract* (7.2), *create* (8.1), and as owner *configure* (8.2) and
  *delete* (8.4).
- Node configuration: ``pubsub#access_model``, ``persist_items``, ``max_items``,
  ``send_last_published_item`` (never | on_sub | on_sub_and_presence), ``deliver_notifications``,
  ``deliver_payloads``, ``notify_retract``, ``notify_delete``, ``title``. Other fields are ignored.
- Notifications (``headline`` messages from the owner's bare JID) go to the owner's available resources
  and, unless the node is ``whitelist``, to the available resources of contacts subscribed to the
  owner's presence. A resource that advertised XEP-0115 caps gets only nodes it listed as
  ``<node>+notify`` (4.3: the ``caps`` plugin); one without caps gets every node.
- The last item of each node goes to a resource when it sends initial presence (for the owner and the
  contacts it is subscribed to), when its caps add a ``+notify``, and to a contact when the owner
  approves its presence subscription.

Not offered: explicit subscriptions (``feature-not-implemented``), affiliations and whitelist
management, collection nodes, purge, result set paging, node access through directed presence.
"""

from __future__ import annotations

import datetime
import functools
import secrets
from dataclasses import dataclass
from typing import Any

from mbeon_chat.core.session import Session
from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.storage.schema_client import NAME_LENGTH
from mbeon_chat.storage.stores.client import NodeRecord, PepItem, SqlPepStore
from mbeon_chat.stream.events import ElementParsed
from mbeon_chat.stream.parser import FramedParser
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.forms import Form, FormError
from mbeon_chat.xmpp.jid import JID, jid_from_str
from mbeon_chat.xmpp.stanza import MESSAGE, Stanza

DEPENDS = ("roster",)

PUBSUB = ns.PUBSUB
OWNER, EVENT, ERRORS = PUBSUB + "#owner", PUBSUB + "#event", PUBSUB + "#errors"
NODE_CONFIG, PUBLISH_OPTIONS = PUBSUB + "#node_config", PUBSUB + "#publish-options"
DELAY = f"{{{ns.DELAY}}}delay"
ACCESS_MODELS = ("presence", "open", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
FEATURES = [PUBSUB] + [
    f"{PUBSUB}#{f}"
    for f in (
        "publish", "publish-options", "retrieve-items", "retract-items", "item-ids", "auto-create",
        "create-nodes", "delete-nodes", "config-node", "persistent-items", "last-published",
        "presence-notifications", "auto-subscribe", "filtered-notifications", "access-presence",
        "access-open", "access-whitelist",
    )
]  # fmt: skip
# Configuration keys, their form fields and types ("bool", "int" for max_items, "text", or the choices).
FIELDS: dict[str, tuple[str, Any]] = {
    "access_model": ("list-single", ACCESS_MODELS),
    "persist_items": ("boolean", "bool"),
    "max_items": ("text-single", "int"),
    "send_last_published_item": ("list-single", SEND_LAST),
    "deliver_notifications": ("boolean", "bool"),
    "deliver_payloads": ("boolean", "bool"),
    "notify_retract": ("boolean", "bool"),
    "notify_delete": ("boolean", "bool"),
    "title": ("text-single", "text"),
}


@dataclass(frozen=True)
class Options:
    default_access_model: str = "presence"
    max_items: int = 256  # what pubsub#max_items "max" means, and the highest value allowed
    max_nodes: int = 1000  # per account
    max_item_bytes: int = 262144  # serialised payload of one item
    #: Advertise urn:xmpp:bookmarks:1#compat: clients (Conversations, Gajim) then keep bookmarks in XEP-0402
    #: PEP items. There is no XEP-0049 private storage here, so no second copy to keep in step.
    bookmarks_compat: bool = True

    def validate(self) -> None:
        if self.default_access_model not in ACCESS_MODELS:
            raise ValueError(f"default_access_model: must be one of {', '.join(ACCESS_MODELS)}")
        for name in ("max_items", "max_nodes", "max_item_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")


def error(condition: StanzaCondition, pubsub_condition: str | None = None, **attrs: str) -> StanzaError:
    app = Element(f"{{{ERRORS}}}{pubsub_condition}", attrs or None) if pubsub_condition else None
    return StanzaError(condition, app_condition=app)


def parse_element(payload: bytes) -> Element:
    events = FramedParser(max_stanza_size=len(payload) + 1, max_depth=64).receive_data(payload)
    if len(events) != 1 or not isinstance(events[0], ElementParsed):
        raise ValueError("not a stored item")
    return events[0].element


def stamp(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Pep:
    def __init__(self, api: PluginAPI, options: Options) -> None:
        self.api = api
        self.options = options
        self.defaults: dict[str, Any] = {
            "access_model": options.default_access_model,
            "persist_items": True,
            "max_items": 1,
            "send_last_published_item": "on_sub_and_presence",
            "deliver_notifications": True,
            "deliver_payloads": True,
            "notify_retract": True,
            "notify_delete": True,
            "title": "",
        }

    @functools.cached_property
    def store(self) -> SqlPepStore:
        return SqlPepStore(self.api.storage.database)  # not in setup: check-config has no storage

    @property
    def roster(self) -> Any:
        return self.api.plugin("roster")

    # --- configuration ---------------------------------------------------------------------------------
    def config_of(self, record: NodeRecord) -> dict[str, Any]:
        return {**self.defaults, **record.config}

    def parse_config(self, form: Form | None, failure: StanzaError) -> dict[str, Any]:
        """The configuration a submitted form asks for (known fields only); ``failure`` for bad values."""
        config: dict[str, Any] = {}
        for field in form.fields if form is not None else ():
            key = (field.var or "").removeprefix("pubsub#")
            if key not in FIELDS or not field.var or not field.var.startswith("pubsub#"):
                continue
            kind, value = FIELDS[key][1], field.value or ""
            if kind == "bool" and value in ("1", "true", "0", "false"):
                config[key] = value in ("1", "true")
            elif kind == "int" and (value == "max" or value.isdigit()):
                config[key] = self.options.max_items if value == "max" else int(value)
                if not 1 <= config[key] <= self.options.max_items:
                    raise failure
            elif kind == "text" or (isinstance(kind, tuple) and value in kind):
                config[key] = value
            else:
                raise failure
        return config

    def config_form(self, node: str, config: dict[str, Any]) -> Element:
        form = Form("form").add_field("FORM_TYPE", "hidden", value=NODE_CONFIG)
        for key, (field_type, kind) in FIELDS.items():
            value = config[key]
            value = bool(value) if kind == "bool" else str(value)
            form.add_field(
                "pubsub#" + key, field_type, value=value, options=kind if isinstance(kind, tuple) else ()
            )
        return Element(f"{{{OWNER}}}configure", {"node": node}, [form.to_element()])

    # --- who may see what ------------------------------------------------------------------------------
    async def allowed(self, requester: JID, owner: JID, config: dict[str, Any]) -> bool:
        if requester.bare == owner or config["access_model"] == "open":
            return True
        if config["access_model"] == "presence" and owner.local is not None:
            return bool(await self.roster.is_subscribed(owner.local, str(requester.bare)))
        return False

    async def check_access(self, requester: JID, owner: JID, config: dict[str, Any]) -> None:
        if await self.allowed(requester, owner, config):
            return
        if config["access_model"] == "presence":
            raise error(StanzaCondition.NOT_AUTHORIZED, "presence-subscription-required")
        raise error(StanzaCondition.NOT_ALLOWED, "closed-node")

    def wants(self, session: Session, node: str) -> bool:
        """XEP-0163 4.3: a resource with caps gets the nodes it listed with +notify; one without gets all."""
        caps = self.api.plugin("caps")
        interests = caps.interests(session) if caps is not None else None
        return interests is None or node in interests

    async def recipients(self, owner: JID, node: str, config: dict[str, Any]) -> list[Session]:
        sessions = list(self.api.sessions.available(owner))
        if config["access_model"] != "whitelist" and owner.local is not None:
            for contact in await self.roster.subscribers(owner.local):
                jid = jid_from_str(contact)
                if jid.domain == self.api.domain:
                    sessions.extend(self.api.sessions.available(jid))
        return [s for s in sessions if self.wants(s, node)]

    # --- notifications ---------------------------------------------------------------------------------
    async def notify(
        self,
        owner: JID,
        config: dict[str, Any],
        event: Element,
        sessions: list[Session],
        published_at: int = 0,
    ) -> None:
        """Send ``event`` (``<items/>`` or ``<delete/>``) to each session; ``published_at``: a last item
        sent later, stamped with XEP-0203 delay."""
        if not config["deliver_notifications"]:
            return
        children: list[Element | str] = [Element(f"{{{EVENT}}}event", None, [event])]
        if published_at:
            children.append(Element(DELAY, {"from": str(owner), "stamp": stamp(published_at)}))
        for session in sessions:
            attrs = {
                "from": str(owner),
                "to": str(session.jid),
                "type": "headline",
                "id": secrets.token_hex(8),
            }
            await self.api.send(Element(MESSAGE, attrs, children))

    def event_items(self, node: str, config: dict[str, Any], item: PepItem) -> Element:
        el = Element(f"{{{EVENT}}}item", {"id": item.item_id})
        if config["deliver_payloads"]:
            el.append(parse_element(item.payload))
        return Element(f"{{{EVENT}}}items", {"node": node}, [el])

    async def send_last_items(
        self, session: Session, owners: list[str], *, when: str, nodes: frozenset[str] | None = None
    ) -> None:
        """The newest item of each node of ``owners`` the session may and wants to see (``when``:
        ``presence`` or ``sub``, matched against send_last_published_item)."""
        modes = ("on_sub_and_presence",) if when == "presence" else ("on_sub", "on_sub_and_presence")
        access: dict[str, bool] = {}
        for record, item in await self.store.last_items(owners):
            config = self.config_of(record)
            if config["send_last_published_item"] not in modes or not self.wants(session, record.node):
                continue
            if nodes is not None and record.node not in nodes:
                continue
            owner = JID(record.username, self.api.domain, None)
            key = f"{record.username}/{config['access_model']}"
            if key not in access:
                access[key] = await self.allowed(session.jid, owner, config)
            if access[key]:
                event = self.event_items(record.node, config, item)
                await self.notify(owner, config, event, [session], item.published_at)

    async def watched(self, session: Session) -> list[str]:
        """The accounts whose PEP nodes the session's user follows: itself and the local contacts whose
        presence it receives."""
        username = session.bare.local
        assert username is not None
        owners = [username]
        for item in await self.roster.all_items(username):
            contact = jid_from_str(item.contact)
            if item.subscription in ("to", "both") and contact.domain == self.api.domain and contact.local:
                owners.append(contact.local)
        return owners

    async def on_initial(self, session: Session) -> None:
        await self.send_last_items(session, await self.watched(session), when="presence")

    async def on_caps_changed(self, session: Session, previous: frozenset[str] | None) -> None:
        caps = self.api.plugin("caps")
        if not session.available or caps is None:
            return  # initial presence follows, and sends what the session wants
        new = (caps.interests(session) or frozenset()) - {f.removesuffix("+notify") for f in previous or ()}
        if new:
            await self.send_last_items(session, await self.watched(session), when="presence", nodes=new)

    async def on_subscribed(self, stanza: Stanza, origin: Session | None) -> bool:
        """An owner approved a contact's presence subscription: the contact gets the last items."""
        owner, contact = stanza.from_, stanza.to
        if stanza.type != "subscribed" or owner is None or contact is None or owner.bare == contact.bare:
            return False
        if owner.local is not None and owner.domain == self.api.domain:
            for session in self.api.sessions.available(contact.bare):
                await self.send_last_items(session, [owner.local], when="sub")
        return False

    # --- requests --------------------------------------------------------------------------------------
    def _own(self, iq: Stanza, origin: Session | None) -> JID:
        if origin is None or origin.bare.local is None or (iq.to is not None and iq.to.bare != origin.bare):
            raise StanzaError(StanzaCondition.FORBIDDEN, "only the owner may change its PEP nodes")
        return origin.bare

    async def _node(self, owner: JID, el: Element) -> tuple[str, NodeRecord]:
        node = el.get("node")
        if not node:
            raise error(StanzaCondition.BAD_REQUEST, "nodeid-required")
        assert owner.local is not None
        record = await self.store.get_node(owner.local, node)
        if record is None:
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        return node, record

    async def on_pubsub(self, iq: Stanza, origin: Session | None) -> Element | None:
        assert iq.payload is not None
        children = list(iq.payload.elements())
        action = children[0] if children else None
        name = action.local if action is not None else ""
        handler = {
            ("set", "publish"): self.publish,
            ("set", "retract"): self.retract,
            ("set", "create"): self.create,
            ("get", "items"): self.items,
        }.get((iq.type, name))
        if action is None or handler is None:
            raise error(StanzaCondition.FEATURE_NOT_IMPLEMENTED, "unsupported", feature=name or "unknown")
        return await handler(iq, origin, action, iq.payload)

    async def publish(self, iq: Stanza, origin: Session | None, action: Element, pubsub: Element) -> None:
        owner = self._own(iq, origin)
        assert owner.local is not None
        node = action.get("node")
        if not node:
            raise error(StanzaCondition.BAD_REQUEST, "nodeid-required")
        items = action.findall(f"{{{PUBSUB}}}item")
        if len(items) != 1:
            raise error(StanzaCondition.BAD_REQUEST, "item-required" if not items else "invalid-payload")
        payloads = list(items[0].elements())
        if len(payloads) != 1:
            raise error(
                StanzaCondition.BAD_REQUEST, "payload-required" if not payloads else "invalid-payload"
            )
        item_id = items[0].get("id") or secrets.token_hex(8)
        if len(node) > NAME_LENGTH or len(item_id) > NAME_LENGTH:
            raise StanzaError(
                StanzaCondition.NOT_ACCEPTABLE, f"node names and item ids: at most {NAME_LENGTH} characters"
            )
        data = payloads[0].to_string().encode()
        if len(data) > self.options.max_item_bytes:
            raise error(StanzaCondition.NOT_ACCEPTABLE, "payload-too-big")
        options_el = pubsub.find(f"{{{PUBSUB}}}publish-options")
        precondition = error(StanzaCondition.CONFLICT, "precondition-not-met")
        requested = self.parse_config(
            Form.from_parent(options_el) if options_el is not None else None, precondition
        )
        record = await self.store.get_node(owner.local, node)
        if record is not None:
            config = self.config_of(record)
            if any(config[key] != value for key, value in requested.items()):
                raise precondition
        else:
            if await self.store.count_nodes(owner.local) >= self.options.max_nodes:
                raise StanzaError(StanzaCondition.RESOURCE_CONSTRAINT, "too many PEP nodes")
            config = {**self.defaults, **requested}
        persist = config["persist_items"]
        await self.store.publish(
            owner.local, node, config, item_id, data if persist else None, config["max_items"]
        )
        result = Element(f"{{{PUBSUB}}}pubsub")
        result.add(f"{{{PUBSUB}}}publish", {"node": node}).add(f"{{{PUBSUB}}}item", {"id": item_id})
        await self.api.send(iq.result(result).el)
        item = PepItem(item_id, data, 0)
        await self.notify(
            owner, config, self.event_items(node, config, item), await self.recipients(owner, node, config)
        )
        return None

    async def retract(self, iq: Stanza, origin: Session | None, action: Element, pubsub: Element) -> None:
        owner = self._own(iq, origin)
        assert owner.local is not None
        node, record = await self._node(owner, action)
        ids = [i.get("id") for i in action.findall(f"{{{PUBSUB}}}item")]
        if len(ids) != 1 or not ids[0]:
            raise error(StanzaCondition.BAD_REQUEST, "item-required")
        if not await self.store.retract(owner.local, node, ids[0]):
            raise StanzaError(StanzaCondition.ITEM_NOT_FOUND)
        await self.api.send(iq.result().el)
        config = self.config_of(record)
        notify = action.get("notify")
        if notify in ("1", "true") or (notify is None and config["notify_retract"]):
            event = Element(
                f"{{{EVENT}}}items", {"node": node}, [Element(f"{{{EVENT}}}retract", {"id": ids[0]})]
            )
            await self.notify(owner, config, event, await self.recipients(owner, node, config))
        return None

    async def create(self, iq: Stanza, origin: Session | None, action: Element, pubsub: Element) -> Element:
        owner = self._own(iq, origin)
        assert owner.local is not None
        node = action.get("node")
        if not node:
            raise error(StanzaCondition.NOT_ACCEPTABLE, "nodeid-required")  # no instant nodes in PEP
        if len(node) > NAME_LENGTH:
            raise StanzaError(StanzaCondition.NOT_ACCEPTABLE, f"node names: at most {NAME_LENGTH} characters")
        configure = pubsub.find(f"{{{PUBSUB}}}configure")
        requested = self.parse_config(
            Form.from_parent(configure) if configure is not None else None,
            StanzaError(StanzaCondition.NOT_ACCEPTABLE, "unsupported configuration value"),
        )
        if await self.store.get_node(owner.local, node) is not None:
            raise StanzaError(StanzaCondition.CONFLICT)
        if await self.store.count_nodes(owner.local) >= self.options.max_nodes:
            raise StanzaError(StanzaCondition.RESOURCE_CONSTRAINT, "too many PEP nodes")
        config = {**self.defaults, **requested}
        await self.store.put_node(owner.local, node, config, config["max_items"])
        return Element(f"{{{PUBSUB}}}pubsub", None, [Element(f"{{{PUBSUB}}}create", {"node": node})])

    async def items(self, iq: Stanza, origin: Session | None, action: Element, pubsub: Element) -> Element:
        owner = iq.to.bare if iq.to is not None else iq.from_.bare if iq.from_ is not None else None
        if owner is None or owner.local is None or iq.from_ is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST)
        if not await self.api.ctx.accounts.exists(owner.local):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        node, record = await self._node(owner, action)
        config = self.config_of(record)
        await self.check_access(iq.from_, owner, config)
        ids = [i for i in (el.get("id") for el in action.findall(f"{{{PUBSUB}}}item")) if i]
        raw_max = action.get("max_items")
        if raw_max is not None and not raw_max.isdigit():
            raise StanzaError(StanzaCondition.BAD_REQUEST, "max_items must be a number")
        last = int(raw_max) if raw_max is not None else None
        stored = await self.store.items(owner.local, node, last=last, ids=ids or None)
        result = Element(f"{{{PUBSUB}}}items", {"node": node})
        for item in stored:
            result.append(Element(f"{{{PUBSUB}}}item", {"id": item.item_id}, [parse_element(item.payload)]))
        return Element(f"{{{PUBSUB}}}pubsub", None, [result])

    async def on_owner(self, iq: Stanza, origin: Session | None) -> Element | Stanza | None:
        owner = self._own(iq, origin)
        assert iq.payload is not None and owner.local is not None
        action = iq.payload.first_child()
        if action is None or (iq.type, action.local) not in (
            ("get", "configure"),
            ("set", "configure"),
            ("set", "delete"),
        ):
            raise error(StanzaCondition.FEATURE_NOT_IMPLEMENTED, "unsupported", feature="config-node")
        node, record = await self._node(owner, action)
        config = self.config_of(record)
        if iq.type == "get":
            return Element(f"{{{OWNER}}}pubsub", None, [self.config_form(node, config)])
        if action.local == "delete":
            sessions = await self.recipients(owner, node, config)
            await self.store.delete_node(owner.local, node)
            await self.api.send(iq.result().el)
            if config["notify_delete"]:
                await self.notify(owner, config, Element(f"{{{EVENT}}}delete", {"node": node}), sessions)
            return None
        try:
            form = Form.from_parent(action)
        except FormError:
            form = None
        if form is None:
            raise StanzaError(StanzaCondition.BAD_REQUEST, "a configure request carries a data form")
        if form.type != "cancel":
            invalid = StanzaError(StanzaCondition.NOT_ACCEPTABLE, "unsupported configuration value")
            new = {**config, **self.parse_config(form, invalid)}
            keep = new["max_items"] if new["persist_items"] else None
            await self.store.put_node(owner.local, node, new, keep)
        return iq.result()


def setup(api: PluginAPI) -> None:
    options: Options = api.options or Options()
    pep = Pep(api, options)
    api.export(pep)
    api.add_identity("pubsub", "pep", target="account")
    for var in FEATURES:
        api.add_feature(var, target="account")
    if options.bookmarks_compat:
        api.add_feature("urn:xmpp:bookmarks:1#compat", target="account")
    api.on_iq("get", PUBSUB, "pubsub", pep.on_pubsub, target="account")
    api.on_iq("set", PUBSUB, "pubsub", pep.on_pubsub, target="account")
    api.on_iq("get", OWNER, "pubsub", pep.on_owner, target="account")
    api.on_iq("set", OWNER, "pubsub", pep.on_owner, target="account")
    api.on("presence/initial", pep.on_initial)
    api.on("caps/changed", pep.on_caps_changed)
    api.on("presence/bare", pep.on_subscribed, priority=10)
