"""xmpp/forms.py (XEP-0004): build, serialise, parse back; result tables; errors."""

from __future__ import annotations

import pytest

from mbeon_chat.stream.parser import StreamParser
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.forms import Form, FormError, X


def roundtrip(el: Element) -> Element:
    """Serialise and parse again, as the wire would."""
    parser = StreamParser()
    header = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    items = parser.receive_data((header + el.to_string("jabber:client")).encode())
    return next(i for i in items if hasattr(i, "element")).element


def test_a_form_survives_the_wire() -> None:
    form = Form("form", "Reload", "Pick one\nor all")
    form.add_field(
        "plugin", "list-single", label="Plugin", value="", options=[("All", ""), "ping"], required=True
    )
    form.add_field("dry", "boolean", value=False)
    form.add_field("notes", "text-multi", value=["a", "b"])
    form.add_field("FORM_TYPE", "hidden", value="urn:example")
    back = Form.parse(roundtrip(form.to_element()))
    assert back.type == "form" and back.title == "Reload" and back.instructions == "Pick one\nor all"
    plugin = back.get_field("plugin")
    assert plugin is not None and plugin.required and plugin.options == [("All", ""), (None, "ping")]
    assert back.get("dry") == "0" and back.get_bool("dry") is False
    assert back.values()["notes"] == ["a", "b"] and back.form_type == "urn:example"


def test_a_result_table() -> None:
    form = Form("result", "Plugins").set_reported(("name", "Plugin"), "state")
    form.add_item({"name": "ping", "state": "loaded"}).add_item({"name": "muc", "state": "not loaded"})
    back = Form.parse(roundtrip(form.to_element()))
    assert [f.var for f in back.reported] == ["name", "state"] and back.reported[0].label == "Plugin"
    assert [[f.value for f in row] for row in back.items] == [["ping", "loaded"], ["muc", "not loaded"]]


def test_submitted_values_and_errors() -> None:
    el = Element(X, {"type": "submit"})
    el.add("{jabber:x:data}field", {"var": "plugin"}).add("{jabber:x:data}value", None, "ping")
    parent = Element("{http://jabber.org/protocol/commands}command", None, [el])
    submitted = Form.from_parent(parent)
    assert submitted is not None and submitted.values() == {"plugin": ["ping"]} and submitted.get("x") is None
    assert Form.from_parent(Element("{http://jabber.org/protocol/commands}command")) is None
    with pytest.raises(FormError):
        Form.parse(Element(X, {"type": "bogus"}))
    with pytest.raises(FormError):
        Form().add_field("x", "text-wide")
