"""Bound client sessions and the registry that finds them by JID."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, Protocol

from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.errors import StreamCondition
from mbeon_chat.xmpp.jid import JID


class Connection(Protocol):
    """What the core needs from a transport adapter (TCP or WebSocket)."""

    conn_id: str
    transport_name: str
    remote: str

    def write_element(self, el: Element) -> None: ...

    def close_stream(self, condition: StreamCondition | None = None, text: str | None = None) -> None: ...


class Session:
    """One bound resource: its connection, presence state and per-plugin data."""

    __slots__ = ("available", "bare", "conn", "data", "directed", "interested", "jid", "presence", "priority")

    def __init__(self, conn: Connection, jid: JID) -> None:
        self.conn = conn
        self.jid = jid
        self.bare = jid.bare
        self.available = False
        self.priority = 0
        self.presence: Element | None = None
        self.interested = False  # requested the roster (RFC 6121 2.1.6)
        self.directed: set[JID] = set()
        self.data: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Session {self.jid} {self.conn.conn_id}>"

    def send(self, el: Element) -> None:
        self.conn.write_element(el)

    def close(self, condition: StreamCondition | None = None, text: str | None = None) -> None:
        self.conn.close_stream(condition, text)


class SessionDirectory(Protocol):
    """Sessions bound elsewhere (other worker processes or servers; see mbeon_chat.cluster)."""

    def get(self, full: JID) -> Session | None: ...

    def resources(self, bare: JID) -> list[Session]: ...

    def available(self, bare: JID) -> list[Session]: ...


class ConflictPolicy(StrEnum):
    REPLACE = "replace"  # the older session is closed with <conflict/> (RFC 6120 7.7.2.2, Prosody's default)
    REFUSE = "refuse"  # the new bind fails with <conflict/>
    RENAME = "rename"  # the new session gets a server-generated resource


class ResourceConflict(Exception):
    pass


class TooManyResources(ResourceConflict):
    """The account has its maximum of bound resources (RFC 6120 7.6.2.1: <resource-constraint/>)."""


class SessionRegistry:
    def __init__(self, conflict: ConflictPolicy = ConflictPolicy.REPLACE, max_resources: int = 10) -> None:
        self.conflict = conflict
        self.max_resources = max_resources
        self._by_bare: dict[JID, dict[str, Session]] = {}
        #: full JID -> session: routing to a full JID is one lookup, without building the bare JID
        self._by_full: dict[JID, Session] = {}
        self._count = 0
        #: Sessions of the other nodes, consulted after this node's own (None: a single node).
        self.remote: SessionDirectory | None = None

    def bind(self, conn: Connection, bare: JID, resource: str | None) -> tuple[Session, Session | None]:
        """Bind a resource; returns the new session and the one it displaced (already unregistered)."""
        resources = self._by_bare.get(bare)
        displaced: Session | None = None
        if resource is not None and resources is not None and resource in resources:
            if self.conflict is ConflictPolicy.REFUSE:
                raise ResourceConflict(resource)
            if self.conflict is ConflictPolicy.RENAME:
                resource = None
            else:
                displaced = resources[resource]
                self.unbind(displaced)
                resources = self._by_bare.get(bare)
        if resources is not None and len(resources) >= self.max_resources:
            raise TooManyResources("too many resources")
        if resource is None:
            resource = secrets.token_hex(6)
        session = Session(conn, bare.with_resource(resource))
        self._by_bare.setdefault(bare, {})[session.jid.resource or ""] = session
        self._by_full[session.jid] = session
        self._count += 1
        return session, displaced

    def unbind(self, session: Session) -> bool:
        resources = self._by_bare.get(session.bare)
        if not resources or resources.get(session.jid.resource or "") is not session:
            return False
        del resources[session.jid.resource or ""]
        self._by_full.pop(session.jid, None)
        if not resources:
            del self._by_bare[session.bare]
        self._count -= 1
        return True

    def get(self, full: JID) -> Session | None:
        if full.resource is None:
            return None
        session = self._by_full.get(full)
        if session is None and self.remote is not None:
            return self.remote.get(full)
        return session

    def get_local(self, full: JID) -> Session | None:
        """A session bound on this node only."""
        return self._by_full.get(full) if full.resource is not None else None

    def resources(self, bare: JID) -> list[Session]:
        resources = self._by_bare.get(bare)
        found = list(resources.values()) if resources else []
        if self.remote is not None:
            found += self.remote.resources(bare)
        return found

    def available(self, bare: JID) -> list[Session]:
        resources = self._by_bare.get(bare)
        found = [s for s in resources.values() if s.available] if resources else []
        if self.remote is not None:
            found += self.remote.available(bare)
        return found

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Session]:
        for resources in list(self._by_bare.values()):
            yield from list(resources.values())
