"""The incremental stream parsers: chunking independence, the restricted XML profile, limits, framing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbeon_chat.stream.events import ElementParsed, ParserEvent, StreamFooter, StreamHeader
from mbeon_chat.stream.parser import FramedParser, StreamParser
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.errors import StreamCondition, StreamError

HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='localhost' version='1.0' xml:lang='en'>"
)
STANZAS = [
    b"<message to='bob@localhost' type='chat' id='m1'>"
    b"<body>hello &amp; &lt;welcome&gt; \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80</body></message>",
    b"\n  ",
    b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    b"<presence><show>away</show><status>out &#x263A; &#65;</status></presence>",
    b"<message xmlns:x='urn:example:x'><x:data a='1' x:b='2'>t<![CDATA[<raw>]]>u</x:data></message>",
    b"<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
    b"<item jid='a@b' name='&quot;A&apos;'/></query></iq>",
]
FOOTER = b"</stream:stream>"


def describe(events: list[ParserEvent]) -> list[tuple[str, object]]:
    """Events in a comparable form: elements serialised, headers as their attributes."""
    out: list[tuple[str, object]] = []
    for event in events:
        if isinstance(event, ElementParsed):
            out.append(("element", (event.element.to_string(ns.CLIENT), event.size)))
        elif isinstance(event, StreamHeader):
            out.append(("header", (sorted(event.attrs.items()), event.default_ns, event.stream_ns)))
        else:
            out.append(("footer", None))
    return out


def parse_in_chunks(data: bytes, cuts: list[int], parser: StreamParser | None = None) -> list[ParserEvent]:
    parser = parser or StreamParser()
    events: list[ParserEvent] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += parser.receive_data(data[start:cut])
        start = cut
    return events


def error_of(
    data: bytes, parser: StreamParser | FramedParser | None = None, chunk: int = 0
) -> StreamCondition:
    parser = parser or StreamParser()
    with pytest.raises(StreamError) as exc:
        if chunk:
            for i in range(0, len(data), chunk):
                parser.receive_data(data[i : i + chunk])
        else:
            parser.receive_data(data)
    return exc.value.condition


# --- chunking ---------------------------------------------------------------------------------------
def test_a_whole_stream_parses_into_header_stanzas_and_footer() -> None:
    events = StreamParser().receive_data(HEADER + b"".join(STANZAS) + FOOTER)
    kinds = [type(e) for e in events]
    assert kinds == [StreamHeader] + [ElementParsed] * 5 + [StreamFooter]
    header = events[0]
    assert isinstance(header, StreamHeader)
    assert header.default_ns == ns.CLIENT
    assert header.attrs["to"] == "localhost"
    assert header.attrs[f"{{{ns.XML}}}lang"] == "en"
    body = events[1].element.find("{jabber:client}body")
    assert body is not None
    assert body.text == "hello & <welcome> \u00e9\u20ac\U0001f600"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_chunking_of_the_same_bytes_gives_the_same_events(data: st.DataObject) -> None:
    stanzas = data.draw(st.lists(st.sampled_from(STANZAS), min_size=0, max_size=8))
    stream = HEADER + b"".join(stanzas) + data.draw(st.sampled_from([FOOTER, b""]))
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=40))
    whole = describe(StreamParser().receive_data(stream))
    assert describe(parse_in_chunks(stream, cuts)) == whole


@settings(max_examples=100, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40), cut=st.integers(0, 400))
def test_arbitrary_text_survives_any_split(text: str, cut: int) -> None:
    from mbeon_chat.xmpp.element import escape_text

    stanza = b"<message><body>" + escape_text(text).encode() + b"</body></message>"
    stream = HEADER + stanza
    events = parse_in_chunks(stream, [min(cut, len(stream))])
    body = events[-1].element.find("{jabber:client}body")
    assert body is not None
    assert body.text == text


def test_one_byte_at_a_time_equals_all_at_once() -> None:
    stream = HEADER + b"".join(STANZAS) + FOOTER
    assert describe(parse_in_chunks(stream, list(range(len(stream))))) == describe(
        StreamParser().receive_data(stream)
    )


# --- the restricted XML profile (RFC 6120 11.1) -----------------------------------------------------
BILLION_LAUGHS = (
    b'<?xml version="1.0"?>'
    b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>&lol3;"
)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(b"<!DOCTYPE stream>" + HEADER, id="doctype"),
        pytest.param(HEADER + b"<!-- a comment -->", id="comment-at-stream-level"),
        pytest.param(HEADER + b"<message><!-- hidden --><body>x</body></message>", id="comment-in-stanza"),
        pytest.param(HEADER + b"<?php echo 1; ?>", id="processing-instruction"),
        pytest.param(HEADER + b"<message><?pi data?></message>", id="pi-in-stanza"),
        pytest.param(HEADER + b"<message><body>&nbsp;</body></message>", id="undefined-entity"),
        pytest.param(HEADER + b"<message a='&foo;'/>", id="undefined-entity-in-attribute"),
    ],
)
def test_restricted_xml_is_refused(data: bytes) -> None:
    assert error_of(data) is StreamCondition.RESTRICTED_XML


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_billion_laughs_is_refused_in_any_chunking(chunk: int) -> None:
    assert error_of(BILLION_LAUGHS, chunk=chunk) is StreamCondition.RESTRICTED_XML


def test_predefined_and_character_entities_are_fine() -> None:
    events = StreamParser().receive_data(
        HEADER + b"<message><body>&lt;&gt;&amp;&apos;&quot;&#65;&#x42;</body></message>"
    )
    body = events[-1].element.find("{jabber:client}body")
    assert body is not None and body.text == "<>&'\"AB"


# --- limits -----------------------------------------------------------------------------------------
def test_an_oversize_stanza_is_a_policy_violation() -> None:
    parser = StreamParser(max_stanza_size=1024)
    parser.receive_data(HEADER)
    big = b"<message><body>" + b"x" * 2000 + b"</body></message>"
    assert error_of(big, parser) is StreamCondition.POLICY_VIOLATION


def test_an_oversize_stanza_that_never_ends_is_caught_while_it_streams_in() -> None:
    parser = StreamParser(max_stanza_size=1024)
    parser.receive_data(HEADER + b"<message><body>")
    with pytest.raises(StreamError) as exc:
        for _ in range(100):
            parser.receive_data(b"y" * 100)  # no closing tag ever arrives
    assert exc.value.condition is StreamCondition.POLICY_VIOLATION


def test_many_small_stanzas_do_not_add_up_to_a_violation() -> None:
    parser = StreamParser(max_stanza_size=1024)
    parser.receive_data(HEADER)
    stanza = b"<message><body>" + b"z" * 500 + b"</body></message>"
    for _ in range(50):
        events = parser.receive_data(stanza)
        assert len(events) == 1


def test_deep_nesting_is_a_policy_violation() -> None:
    parser = StreamParser(max_depth=8)
    parser.receive_data(HEADER)
    assert error_of(b"<message>" + b"<a>" * 20, parser) is StreamCondition.POLICY_VIOLATION


def test_nesting_within_the_limit_is_fine() -> None:
    parser = StreamParser(max_depth=8)
    parser.receive_data(HEADER)
    events = parser.receive_data(b"<message>" + b"<a>" * 5 + b"</a>" * 5 + b"</message>")
    assert len(events) == 1


# --- well-formedness --------------------------------------------------------------------------------
def test_text_at_stream_level_is_not_well_formed() -> None:
    parser = StreamParser()
    parser.receive_data(HEADER)
    assert error_of(b"hello<message/>", parser) is StreamCondition.NOT_WELL_FORMED


def test_whitespace_at_stream_level_is_a_keepalive() -> None:
    parser = StreamParser()
    parser.receive_data(HEADER)
    assert parser.receive_data(b" \n\t ") == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(HEADER + b"<message><body></message>", id="mismatched-tag"),
        pytest.param(HEADER + b"<message a='1' a='2'/>", id="duplicate-attribute"),
        pytest.param(HEADER + b"<message><<</message>", id="garbage"),
        pytest.param(HEADER + b"<message><body>\xc3\x28</body></message>", id="invalid-utf8"),
    ],
)
def test_malformed_xml_is_not_well_formed(data: bytes) -> None:
    assert error_of(data) in (StreamCondition.NOT_WELL_FORMED, StreamCondition.UNSUPPORTED_ENCODING)


def test_an_unbound_prefix_is_bad_namespace_prefix() -> None:
    assert error_of(HEADER + b"<foo:message/>") is StreamCondition.BAD_NAMESPACE_PREFIX


def test_a_wrong_stream_namespace_is_invalid_namespace() -> None:
    data = b"<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>"
    assert error_of(data) is StreamCondition.INVALID_NAMESPACE


def test_data_after_the_footer_is_not_well_formed() -> None:
    parser = StreamParser()
    parser.receive_data(HEADER + FOOTER)
    assert parser.receive_data(b"  ") == []
    assert error_of(b"<message/>", parser) is StreamCondition.NOT_WELL_FORMED


def test_the_stream_element_is_emptied_after_each_stanza() -> None:
    parser = StreamParser()
    parser.receive_data(HEADER)
    for _ in range(5):
        parser.receive_data(b"<message><body>x</body></message>")
    assert parser._stack[0].children == []


# --- RFC 7395 framing (WebSocket) -------------------------------------------------------------------
OPEN = b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
CLOSE = b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"


def test_websocket_open_stanza_and_close_messages() -> None:
    parser = FramedParser()
    header = parser.receive_data(OPEN)
    assert len(header) == 1 and isinstance(header[0], StreamHeader)
    assert header[0].attrs["to"] == "localhost"
    assert header[0].stream_ns == ns.FRAMING
    assert header[0].default_ns == ns.CLIENT
    (msg,) = parser.receive_data(b"<message xmlns='jabber:client' to='a@b'><body>hi</body></message>")
    assert isinstance(msg, ElementParsed)
    assert msg.element.tag == "{jabber:client}message"
    assert msg.element.findtext("{jabber:client}body") == "hi"
    assert parser.receive_data(CLOSE) == [StreamFooter()]


def test_websocket_messages_are_independent_documents() -> None:
    parser = FramedParser()
    parser.receive_data(OPEN)
    a = parser.receive_data(b"<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>")
    b = parser.receive_data(b"<presence xmlns='jabber:client'/>")
    assert [e.element.local for e in a + b] == ["iq", "presence"]


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<message xmlns='jabber:client'><body>", StreamCondition.NOT_WELL_FORMED),
        (
            b"<message xmlns='jabber:client'/><message xmlns='jabber:client'/>",
            StreamCondition.NOT_WELL_FORMED,
        ),
        (b"hello", StreamCondition.NOT_WELL_FORMED),
        (b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>", StreamCondition.INVALID_XML),
        (b"<!DOCTYPE x><message xmlns='jabber:client'/>", StreamCondition.RESTRICTED_XML),
        (b"<message xmlns='jabber:client'><!-- c --></message>", StreamCondition.RESTRICTED_XML),
        (b"<message xmlns='jabber:client'>&ent;</message>", StreamCondition.RESTRICTED_XML),
        (
            b"<message xmlns='jabber:client'><body>" + b"x" * 3000 + b"</body></message>",
            StreamCondition.POLICY_VIOLATION,
        ),
        (
            b"<message xmlns='jabber:client'>" + b"<a>" * 40 + b"</a>" * 40 + b"</message>",
            StreamCondition.POLICY_VIOLATION,
        ),
    ],
    ids=[
        "incomplete",
        "two-elements",
        "text",
        "stream-element",
        "doctype",
        "comment",
        "entity",
        "oversize",
        "deep",
    ],
)
def test_websocket_framing_errors(data: bytes, condition: StreamCondition) -> None:
    parser = FramedParser(max_stanza_size=2048, max_depth=16)
    parser.receive_data(OPEN)
    assert error_of(data, parser) is condition
