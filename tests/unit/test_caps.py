"""XEP-0115 verification strings and hashes (features/caps.py), with the XEP's own examples."""

from __future__ import annotations

from mbeon_chat.features.caps import verification_string, verifies
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.element import Element
from mbeon_chat.xmpp.forms import Form

INFO = f"{{{ns.DISCO_INFO}}}"
FEATURES = (ns.CAPS, ns.DISCO_INFO, ns.DISCO_ITEMS, ns.MUC)


def info(identities: list[dict[str, str]], *extra: Element) -> Element:
    query = Element(INFO + "query")
    for attrs in identities:
        query.add(INFO + "identity", attrs)
    for var in reversed(FEATURES):  # order does not matter
        query.add(INFO + "feature", {"var": var})
    for el in extra:
        query.append(el)
    return query


def test_the_simple_example_of_section_5_2() -> None:
    query = info([{"category": "client", "type": "pc", "name": "Exodus 0.9.1"}])

    assert verification_string(query) == (
        "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
        "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
    )
    assert verifies(query, "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu0=")
    assert not verifies(query, "sha-1", "QgayPKawpkPSDYmwT/WM94uAlu1=")
    assert not verifies(query, "md4", "QgayPKawpkPSDYmwT/WM94uAlu0=")


def test_the_complex_example_of_section_5_3_with_an_extended_form() -> None:
    lang = f"{{{ns.XML}}}lang"
    software = (
        Form("result")
        .add_field("FORM_TYPE", "hidden", value="urn:xmpp:dataforms:softwareinfo")
        .add_field("ip_version", "text-multi", value=["ipv6", "ipv4"])
        .add_field("software_version", value="0.11")
        .add_field("os", value="Mac")
        .add_field("os_version", value="10.5.1")
        .add_field("software", value="Psi")
    )
    query = info(
        [
            {"category": "client", "type": "pc", "name": "Ψ 0.11", lang: "el"},
            {"category": "client", "type": "pc", "name": "Psi 0.11", lang: "en"},
        ],
        software.to_element(),
    )

    assert verifies(query, "sha-1", "q07IKJEyjvHSyhy//CH0CxmKi8w=")
