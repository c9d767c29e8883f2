"""A small XML element tree for stanzas, and its serialiser.

Tags and attribute names use Clark notation (``{namespace}local``). Children are elements or text
(mixed content is kept in order), so a stanza routed through the server keeps its content exactly.
Serialisation writes namespace declarations only where the namespace changes, so a stanza sent into a
``jabber:client`` stream carries no redundant ``xmlns``.
"""

from __future__ import annotations

from collections.abc import Iterator

from mbeon_chat.xmpp import ns

_XML_PREFIX = "{" + ns.XML + "}"


def escape_text(s: str) -> str:
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if "\r" in s:  # a raw CR would reach the recipient as LF (XML 1.0 2.11 end-of-line handling)
        s = s.replace("\r", "&#13;")
    return s


def escape_attr(s: str) -> str:
    s = escape_text(s)
    if '"' in s:
        s = s.replace('"', "&quot;")
    if "\n" in s or "\t" in s:
        s = s.replace("\n", "&#10;").replace("\t", "&#9;")
    return s


#: Serialiser caches (bounded): tag -> (namespace, local); attribute value -> escaped text. Stanzas repeat
#: the same few tags and addresses, so most lookups hit.
_SPLITS: dict[str, tuple[str, str]] = {}
_ESCAPED_ATTRS: dict[str, str] = {}
_CACHE_MAX = 4096


def _split_cached(tag: str) -> tuple[str, str]:
    parts = _SPLITS.get(tag)
    if parts is None:
        parts = split_tag(tag)
        if len(_SPLITS) >= _CACHE_MAX:
            _SPLITS.clear()
        _SPLITS[tag] = parts
    return parts


def _escape_attr_cached(s: str) -> str:
    escaped = _ESCAPED_ATTRS.get(s)
    if escaped is None:
        escaped = escape_attr(s)
        if len(s) <= 256:
            if len(_ESCAPED_ATTRS) >= _CACHE_MAX:
                _ESCAPED_ATTRS.clear()
            _ESCAPED_ATTRS[s] = escaped
    return escaped


def split_tag(tag: str) -> tuple[str, str]:
    """``{ns}local`` -> (ns, local); a tag without namespace gives ("", local)."""
    if tag[0] == "{":
        end = tag.index("}")
        return tag[1:end], tag[end + 1 :]
    return "", tag


class Element:
    """An XML element: tag, attributes, and ordered children (elements or text)."""

    __slots__ = ("attrs", "children", "tag")

    def __init__(
        self,
        tag: str,
        attrs: dict[str, str] | None = None,
        children: list[Element | str] | None = None,
    ) -> None:
        self.tag = tag
        self.attrs = attrs if attrs is not None else {}
        self.children = children if children is not None else []

    def __repr__(self) -> str:
        return f"<Element {self.tag} {self.attrs}>"

    @property
    def ns(self) -> str:
        return split_tag(self.tag)[0]

    @property
    def local(self) -> str:
        return split_tag(self.tag)[1]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attrs.get(name, default)

    def set(self, name: str, value: str | None) -> None:
        if value is None:
            self.attrs.pop(name, None)
        else:
            self.attrs[name] = value

    @property
    def text(self) -> str:
        """The concatenated direct text children."""
        parts = [c for c in self.children if isinstance(c, str)]
        return parts[0] if len(parts) == 1 else "".join(parts)

    @text.setter
    def text(self, value: str | None) -> None:
        self.children = [c for c in self.children if not isinstance(c, str)]
        if value:
            self.children.insert(0, value)

    def elements(self) -> Iterator[Element]:
        for child in self.children:
            if not isinstance(child, str):
                yield child

    def find(self, tag: str) -> Element | None:
        for child in self.children:
            if not isinstance(child, str) and child.tag == tag:
                return child
        return None

    def findall(self, tag: str) -> list[Element]:
        return [c for c in self.children if not isinstance(c, str) and c.tag == tag]

    def findtext(self, tag: str) -> str | None:
        child = self.find(tag)
        return None if child is None else child.text

    def first_child(self) -> Element | None:
        for child in self.children:
            if not isinstance(child, str):
                return child
        return None

    def append(self, child: Element | str) -> None:
        self.children.append(child)

    def remove(self, child: Element) -> None:
        self.children.remove(child)

    def add(self, tag: str, attrs: dict[str, str] | None = None, text: str | None = None) -> Element:
        """Create, append and return a child element."""
        child = Element(tag, attrs, [text] if text else None)
        self.children.append(child)
        return child

    def copy(self) -> Element:
        """A deep copy (text children are immutable and shared)."""
        return Element(
            self.tag,
            dict(self.attrs),
            [c if isinstance(c, str) else c.copy() for c in self.children],
        )

    def to_string(self, default_ns: str = "", prefixes: dict[str, str] | None = None) -> str:
        """Serialise, assuming the parent's default namespace is ``default_ns``."""
        out: list[str] = []
        _write(self, out, default_ns, prefixes or {})
        return "".join(out)

    def __bytes__(self) -> bytes:
        return self.to_string().encode()


def E(tag: str, attrs: dict[str, str] | None = None, *children: Element | str) -> Element:
    """Build an element tree inline: ``E("{jabber:client}message", {"to": t}, E(BODY, None, "hi"))``."""
    return Element(tag, attrs, list(children) if children else None)


def _write(el: Element, out: list[str], default_ns: str, prefixes: dict[str, str]) -> None:
    el_ns, local = _split_cached(el.tag)
    decl = ""
    prefix = prefixes.get(el_ns) if el_ns != default_ns else None
    if prefix is not None:
        name = prefix + ":" + local
    else:
        name = local
        if el_ns != default_ns:
            decl = ' xmlns="' + escape_attr(el_ns) + '"'
            default_ns = el_ns
    out.append("<" + name + decl)
    if el.attrs:
        extra_prefixes: dict[str, str] | None = None
        for key, value in el.attrs.items():
            if key[0] == "{":
                if key.startswith(_XML_PREFIX):
                    key = "xml:" + key[len(_XML_PREFIX) :]
                else:
                    a_ns, a_local = split_tag(key)
                    if extra_prefixes is None:
                        extra_prefixes = {}
                    p = prefixes.get(a_ns) or extra_prefixes.get(a_ns)
                    if p is None:
                        # a prefix not in scope yet, or it would rebind one an earlier attribute uses
                        used = {*prefixes.values(), *extra_prefixes.values()}
                        n = len(extra_prefixes)
                        while f"ns{n}" in used:
                            n += 1
                        p = f"ns{n}"
                        extra_prefixes[a_ns] = p
                        out.append(" xmlns:" + p + '="' + escape_attr(a_ns) + '"')
                    key = p + ":" + a_local
            out.append(" " + key + '="' + _escape_attr_cached(value) + '"')
        if extra_prefixes:
            prefixes = {**prefixes, **extra_prefixes}
    if not el.children:
        out.append("/>")
        return
    out.append(">")
    for child in el.children:
        if isinstance(child, str):
            out.append(escape_text(child))
        else:
            _write(child, out, default_ns, prefixes)
    out.append("</" + name + ">")
