"""The element serialiser: namespaces written only where they change, escaping, round trip via the parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbeon_chat.stream.events import ElementParsed
from mbeon_chat.stream.framing import TcpFraming, WebSocketFraming
from mbeon_chat.stream.parser import FramedParser, StreamParser
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import E, Element
from mbeon_chat.xmpp.errors import StreamCondition, StreamError

HEADER = (
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
C = "{jabber:client}"


def reparse(el: Element) -> Element:
    """Serialise into a jabber:client stream the way the server writes it, and parse it back."""
    data = TcpFraming().element(el)
    events = StreamParser().receive_data(HEADER + data)
    assert len(events) == 2 and isinstance(events[1], ElementParsed), data
    return events[1].element


def shape(el: Element) -> tuple[object, ...]:
    """A comparable form; adjacent text children are merged as XML does."""
    children: list[object] = []
    for child in el.children:
        if isinstance(child, str):
            if children and isinstance(children[-1], str):
                children[-1] += child
            elif child:
                children.append(child)
        else:
            children.append(shape(child))
    return (el.tag, sorted(el.attrs.items()), children)


# --- namespaces ---------------------------------------------------------------------------------------
def test_jabber_client_stanzas_carry_no_redundant_xmlns() -> None:
    msg = E(C + "message", {"to": "bob@localhost"}, E(C + "body", None, "hi"))
    assert msg.to_string(ns.CLIENT) == '<message to="bob@localhost"><body>hi</body></message>'


def test_a_child_namespace_is_declared_once_where_it_changes() -> None:
    iq = E(C + "iq", {"type": "get"}, E("{urn:xmpp:ping}ping"))
    assert iq.to_string(ns.CLIENT) == '<iq type="get"><ping xmlns="urn:xmpp:ping"/></iq>'
    query = E("{jabber:iq:roster}query", None, E("{jabber:iq:roster}item", {"jid": "a@b"}))
    text = E(C + "iq", None, query).to_string(ns.CLIENT)
    assert text.count("xmlns=") == 1


def test_returning_to_the_outer_namespace_redeclares_it() -> None:
    el = E(C + "message", None, E("{urn:x}x", None, E(C + "body", None, "b")))
    assert (
        el.to_string(ns.CLIENT)
        == '<message><x xmlns="urn:x"><body xmlns="jabber:client">b</body></x></message>'
    )


def test_an_element_without_namespace_undeclares_the_default() -> None:
    assert E(C + "message", None, E("plain")).to_string(ns.CLIENT) == '<message><plain xmlns=""/></message>'


def test_stream_elements_use_the_stream_prefix() -> None:
    err = StreamError(StreamCondition.NOT_WELL_FORMED).to_element()
    assert TcpFraming().element(err) == (
        b'<stream:error><not-well-formed xmlns="urn:ietf:params:xml:ns:xmpp-streams"/></stream:error>'
    )


def test_websocket_framing_declares_the_stream_prefix_on_the_element() -> None:
    err = StreamError(StreamCondition.POLICY_VIOLATION, "too big").to_element()
    data = WebSocketFraming().element(err)
    (event,) = FramedParser().receive_data(data)
    assert isinstance(event, ElementParsed)
    assert event.element.tag == f"{{{ns.STREAMS}}}error"
    assert event.element.find(f"{{{ns.STREAM_ERRORS}}}policy-violation") is not None


def test_websocket_stanzas_declare_jabber_client() -> None:
    data = WebSocketFraming().element(E(C + "presence"))
    assert data == b'<presence xmlns="jabber:client"/>'


def test_namespaced_attributes_get_a_declared_prefix() -> None:
    el = E(C + "message", {"{urn:a}one": "1", "{urn:b}two": "2", "{urn:a}three": "3"})
    back = reparse(el)
    assert back.attrs == el.attrs


def test_a_child_with_a_new_attribute_namespace_does_not_rebind_an_inherited_prefix() -> None:
    child = E(C + "a", {"{urn:a}x": "1", "{urn:b}y": "2"})
    el = E(C + "message", {"{urn:a}x": "0"}, child)
    assert shape(reparse(el)) == shape(el)


def test_xml_lang_is_written_with_the_xml_prefix() -> None:
    el = E(C + "message", {f"{{{ns.XML}}}lang": "de"})
    assert el.to_string(ns.CLIENT) == '<message xml:lang="de"/>'
    assert reparse(el).attrs == el.attrs


# --- escaping -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "a & b",
        "<tag>",
        "]]>",
        "quote \" and ' apostrophe",
        "tab\tnew\nline",
        "cr\r\nlf",
        "\u00e9\u20ac\U0001f600",
    ],
)
def test_text_round_trips(text: str) -> None:
    el = E(C + "message", None, E(C + "body", None, text))
    assert reparse(el).findtext(C + "body") == text


@pytest.mark.parametrize("value", ['"', "'", "&", "<>", "a\tb\nc\rd", "  spaces  "])
def test_attribute_values_round_trip(value: str) -> None:
    el = E(C + "message", {"id": value})
    assert reparse(el).get("id") == value


# --- property: any tree survives serialise + parse ----------------------------------------------------
_NAMESPACES = st.sampled_from(["jabber:client", "urn:xmpp:ping", "urn:x:a", "urn:x:b", ""])
_LOCAL = st.sampled_from(["a", "b", "body", "x-y", "item.1", "q_2", "ping"])
_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t\n\r"),
    min_size=1,
    max_size=20,
).filter(lambda s: "\ufffe" not in s and "\uffff" not in s)
_ATTR_NAMES = st.one_of(
    _LOCAL, st.builds(lambda n, loc: f"{{{n}}}{loc}", st.sampled_from(["urn:x:a", "urn:y"]), _LOCAL)
)


def _tag(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}" if namespace else local


@st.composite
def _elements(draw: st.DrawFn, depth: int = 0) -> Element:
    tag = _tag(draw(_NAMESPACES), draw(_LOCAL))
    attrs = draw(st.dictionaries(_ATTR_NAMES, _TEXT, max_size=3))
    children: list[Element | str] = []
    if depth < 3:
        for _ in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                children.append(draw(_TEXT))
            else:
                children.append(draw(_elements(depth + 1)))
    return Element(tag, attrs, children)


@settings(max_examples=150, deadline=None)
@given(payload=_elements())
def test_any_element_tree_round_trips_through_the_parser(payload: Element) -> None:
    el = E(C + "message", {"to": "a@b"}, payload)
    assert shape(reparse(el)) == shape(el)


@settings(max_examples=100, deadline=None)
@given(payload=_elements())
def test_any_element_tree_round_trips_over_websocket_framing(payload: Element) -> None:
    el = E(C + "iq", {"type": "set"}, payload)
    (event,) = FramedParser().receive_data(WebSocketFraming().element(el))
    assert isinstance(event, ElementParsed)
    assert shape(event.element) == shape(el)


def test_copy_is_deep() -> None:
    el = E(C + "message", {"a": "1"}, E(C + "body", None, "x"))
    dup = el.copy()
    dup.attrs["a"] = "2"
    body = dup.find(C + "body")
    assert body is not None
    body.text = "y"
    assert el.get("a") == "1"
    assert el.findtext(C + "body") == "x"
