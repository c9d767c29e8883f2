"""The bus frame format (mbeon_chat.cluster.bus): what every carrier moves."""

from __future__ import annotations

import pytest

from mbeon_chat.cluster.bus import (
    BROADCAST,
    BusError,
    BusMessage,
    Kind,
    PayloadParser,
    decode,
    encode,
    frame_length,
    stanza_payload,
)
from mbeon_chat.xmpp.element import Element


def test_a_frame_round_trips_with_header_and_payload() -> None:
    msg = BusMessage(Kind.DELIVER, "1", "0", {"to": "alice@localhost/phone"}, b"<message/>")
    frame = encode(msg)
    assert frame[:2] == b"MB" and frame_length(frame) == len(frame)
    assert decode(frame) == msg


def test_frames_are_found_in_a_byte_stream_split_anywhere() -> None:
    frames = [
        encode(BusMessage(Kind.SESSION, "0", BROADCAST, {"op": "ended", "jid": f"u{i}@x/r"}))
        for i in range(3)
    ]
    stream = b"".join(frames)
    assert frame_length(stream[:5]) is None  # the prefix is not complete yet
    offset, seen = 0, []
    while (total := frame_length(stream, offset)) is not None and offset + total <= len(stream):
        seen.append(decode(stream[offset : offset + total]))
        offset += total
    assert [m.header["jid"] for m in seen] == ["u0@x/r", "u1@x/r", "u2@x/r"]


def test_a_frame_with_another_magic_is_refused() -> None:
    with pytest.raises(BusError):
        frame_length(b"XX" + encode(BusMessage(Kind.HELLO, "0"))[2:])


def test_stanza_payloads_parse_back_to_the_same_element() -> None:
    el = Element("{jabber:client}message", {"to": "b@x/r", "type": "chat"})
    el.add("{jabber:client}body", None, "hi <there> & you")
    el.add("{urn:example}x", {"a": "1"})
    parser = PayloadParser()
    for _ in range(2):  # one parser per peer, reused frame after frame
        back = parser.parse(stanza_payload(el))
        assert back.to_string() == el.to_string()
