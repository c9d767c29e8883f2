"""XMPP addresses (JIDs) per RFC 7622, with a practical approximation of PRECIS.

Pure module: no I/O. ``JID.parse`` splits and normalises a string; ``jid_from_str`` is the same
parser behind an LRU cache for the hot path (exceptions are never cached: a bad string raises
``InvalidJID`` on every call).

Normalisation:

* localpart: NFKC + casefold (approximates the UsernameCaseMapped profile); forbids
  ``"&'/:<>@``, whitespace, control/format/private-use/unassigned code points; 1..1023 bytes.
* domainpart: one trailing dot stripped, NFKC + casefold, IDNA label separators mapped to
  ``.``, A-labels (``xn--``) converted to U-labels; labels of 1..63 letters/marks/digits plus
  ``-`` and ``_`` (no leading/trailing ``-``); IPv4 and bracketed IPv6 literals accepted and
  written in canonical form; 1..1023 bytes.
* resourcepart: NFKC, non-ASCII spaces mapped to U+0020 (OpaqueString, no case folding);
  no control characters; 1..1023 bytes.

Pure-ASCII parts skip ``unicodedata`` entirely (NFKC is the identity there and casefold equals
``str.lower``).
"""

from __future__ import annotations

import functools
import ipaddress
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["JID", "InvalidJID", "jid_from_str"]

MAX_PART_BYTES = 1023
MAX_LABEL_CHARS = 63
# Cheap guard against pathological inputs before any normalisation work is done.
_MAX_INPUT_CHARS = 4 * (3 * MAX_PART_BYTES + 2)

_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
_ASCII_LOCAL_OK = frozenset(chr(c) for c in range(0x21, 0x7F)) - _LOCAL_FORBIDDEN
_ASCII_RESOURCE_OK = frozenset(chr(c) for c in range(0x20, 0x7F))
_ASCII_LABEL_OK = frozenset(string.ascii_lowercase + string.digits + "-_")
_LABEL_SEPARATORS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_BAD_IDENTIFIER_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_BAD_RESOURCE_CATEGORIES = frozenset({"Cc", "Cs"})
_GOOD_LABEL_CATEGORY_PREFIXES = ("L", "M", "N")


class InvalidJID(ValueError):
    """The string is not a valid JID."""


def _fold(s: str, what: str) -> str:
    """NFKC + casefold, iterated to a fixed point so that normalisation is idempotent."""
    for _ in range(4):
        n = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", s).casefold())
        if n == s:
            return n
        s = n
    raise InvalidJID(f"{what} does not normalise stably")


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8"))


def _prep_local(s: str) -> str:
    if not s:
        raise InvalidJID("empty localpart")
    if s.isascii():
        s = s.lower()
        if not _ASCII_LOCAL_OK.issuperset(s):
            raise InvalidJID("forbidden character in localpart")
    else:
        s = _fold(s, "localpart")
        for ch in s:
            if ch in _LOCAL_FORBIDDEN or unicodedata.category(ch) in _BAD_IDENTIFIER_CATEGORIES:
                raise InvalidJID(f"forbidden character {ch!r} in localpart")
        if not s:
            raise InvalidJID("empty localpart")
    if _utf8_len(s) > MAX_PART_BYTES:
        raise InvalidJID("localpart too long")
    return s


def _prep_resource(s: str) -> str:
    if not s:
        raise InvalidJID("empty resourcepart")
    if s.isascii():
        if not _ASCII_RESOURCE_OK.issuperset(s):
            raise InvalidJID("control character in resourcepart")
    else:
        chars: list[str] = []
        for ch in unicodedata.normalize("NFKC", s):
            cat = unicodedata.category(ch)
            if cat in _BAD_RESOURCE_CATEGORIES:
                raise InvalidJID(f"forbidden character {ch!r} in resourcepart")
            chars.append(" " if cat == "Zs" else ch)
        s = "".join(chars)
    if _utf8_len(s) > MAX_PART_BYTES:
        raise InvalidJID("resourcepart too long")
    return s


def _from_alabel(label: str) -> str:
    """Convert an ``xn--`` A-label to its (folded) U-label."""
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidJID("domain label too long")
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError) as exc:
        raise InvalidJID(f"invalid A-label {label!r}") from exc
    if decoded.isascii():
        raise InvalidJID(f"invalid A-label {label!r}")
    return _fold(decoded, "domainpart")


def _check_label(label: str) -> None:
    if not label:
        raise InvalidJID("empty domain label")
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidJID("domain label too long")
    if label[0] == "-" or label[-1] == "-":
        raise InvalidJID("domain label starts or ends with '-'")
    if label.isascii():
        if not _ASCII_LABEL_OK.issuperset(label):
            raise InvalidJID(f"forbidden character in domain label {label!r}")
        return
    if unicodedata.category(label[0]).startswith("M"):
        raise InvalidJID("domain label starts with a combining mark")
    for ch in label:
        if ch not in "-_" and not unicodedata.category(ch).startswith(_GOOD_LABEL_CATEGORY_PREFIXES):
            raise InvalidJID(f"forbidden character {ch!r} in domainpart")


def _prep_ipv6(d: str) -> str:
    if not d.endswith("]"):
        raise InvalidJID("unterminated IPv6 literal")
    try:
        addr = ipaddress.IPv6Address(d[1:-1])
    except ValueError as exc:
        raise InvalidJID(f"invalid IPv6 literal {d!r}") from exc
    if addr.scope_id is not None:
        raise InvalidJID("scoped IPv6 literal not allowed")
    return f"[{addr.compressed}]"


def _prep_domain(s: str) -> str:
    d = s.lower() if s.isascii() else _fold(s, "domainpart").translate(_LABEL_SEPARATORS)
    if d.endswith("."):
        d = d[:-1]
    if not d:
        raise InvalidJID("empty domainpart")
    if d[0] == "[":
        return _prep_ipv6(d)
    labels = d.split(".")
    if "xn--" in d:
        labels = [_from_alabel(lb) if lb.startswith("xn--") else lb for lb in labels]
        d = ".".join(labels)
    for label in labels:
        _check_label(label)
    if all(lb.isascii() and lb.isdigit() for lb in labels):
        try:
            d = str(ipaddress.IPv4Address(d))
        except ValueError as exc:
            raise InvalidJID(f"invalid IPv4 literal {d!r}") from exc
    if _utf8_len(d) > MAX_PART_BYTES:
        raise InvalidJID("domainpart too long")
    return d


@dataclass(frozen=True, slots=True)
class JID:
    """A normalised JID. Construct with ``JID.parse``/``jid_from_str``; the fields are trusted."""

    local: str | None
    domain: str
    resource: str | None
    # The string form and the hash, computed on first use: a JID is read far more often than it is made
    # (every routed stanza hashes its target and writes its sender). Not part of equality or of repr.
    _str: str | None = field(default=None, init=False, repr=False, compare=False)
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, s: str) -> JID:
        """Parse and normalise ``s`` (RFC 7622 §3.1 splitting); raises ``InvalidJID``."""
        if not isinstance(s, str):
            raise InvalidJID(f"JID must be a str, not {type(s).__name__}")
        if len(s) > _MAX_INPUT_CHARS:
            raise InvalidJID("JID too long")
        head, slash, res = s.partition("/")
        resource = _prep_resource(res) if slash else None
        local_raw, at, domain_raw = head.partition("@")
        if at:
            local: str | None = _prep_local(local_raw)
        else:
            local, domain_raw = None, head
        return cls(local, _prep_domain(domain_raw), resource)

    @property
    def bare(self) -> JID:
        """This JID without its resource (``self`` if already bare)."""
        return self if self.resource is None else JID(self.local, self.domain, None)

    def with_resource(self, r: str) -> JID:
        """This JID with resource ``r`` (normalised; raises ``InvalidJID``)."""
        return JID(self.local, self.domain, _prep_resource(r))

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    def __str__(self) -> str:
        s = self._str
        if s is None:
            s = self.domain if self.local is None else f"{self.local}@{self.domain}"
            if self.resource is not None:
                s = f"{s}/{self.resource}"
            object.__setattr__(self, "_str", s)
        return s

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash((self.local, self.domain, self.resource))
            object.__setattr__(self, "_hash", h)
        return h


# functools.lru_cache never caches exceptions, so invalid input raises InvalidJID on every call.
_jid_cache = functools.lru_cache(maxsize=8192)(JID.parse)
jid_from_str: Callable[[str], JID] = _jid_cache
"""Cached ``JID.parse`` for the hot path."""
