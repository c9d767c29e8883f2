from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbeon_chat.xmpp.jid import JID, InvalidJID, jid_from_str


@pytest.mark.parametrize(
    ("raw", "local", "domain", "resource"),
    [
        ("example.com", None, "example.com", None),
        ("user@example.com", "user", "example.com", None),
        ("user@example.com/res", "user", "example.com", "res"),
        ("example.com/res", None, "example.com", "res"),
        ("a@b/c/d", "a", "b", "c/d"),
        ("a@b/c@d", "a", "b", "c@d"),
        ("User@Example.COM", "user", "example.com", None),
        ("User@Example.COM/Res", "user", "example.com", "Res"),
        ("Ä@x", "ä", "x", None),
        ("ÄÖÜ@MÜNCHEN.de", "äöü", "münchen.de", None),
        ("ﬁ@x", "fi", "x", None),  # NFKC compatibility mapping
        ("user@example.com.", "user", "example.com", None),
        ("user@example.com./r", "user", "example.com", "r"),
        (
            "a@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d",
            "a",
            "example.com",
            None,
        ),  # fullwidth, incl. label separator
        ("a@example。com", "a", "example.com", None),
        ("a@xn--mnchen-3ya.de", "a", "münchen.de", None),
        ("a@[::1]", "a", "[::1]", None),
        ("a@[0:0:0:0:0:0:0:1]/r", "a", "[::1]", "r"),
        ("a@[2001:DB8::1]", "a", "[2001:db8::1]", None),
        ("127.0.0.1", None, "127.0.0.1", None),
        ("a@127.0.0.1/r", "a", "127.0.0.1", "r"),
        ("a@localhost", "a", "localhost", None),
        ("a@conference.my-host_1.example", "a", "conference.my-host_1.example", None),
        ("a@b/res with spaces", "a", "b", "res with spaces"),
        ("a@b/\uff46\uff55\uff4c\uff4c", "a", "b", "full"),
        ("a@b/Caps\u00a0Space", "a", "b", "Caps Space"),
        ("a@b/🙂", "a", "b", "🙂"),
        ("a.b-c_d+e!#$%*=?^`{|}~@x", "a.b-c_d+e!#$%*=?^`{|}~", "x", None),
        ("x" * 1023 + "@x", "x" * 1023, "x", None),
    ],
)
def test_parse_valid(raw: str, local: str | None, domain: str, resource: str | None) -> None:
    jid = JID.parse(raw)
    assert (jid.local, jid.domain, jid.resource) == (local, domain, resource)
    assert jid_from_str(raw) == jid
    assert JID.parse(str(jid)) == jid


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "@",
        "/",
        "@example.com",  # empty localpart
        "user@",  # empty domain
        "user@/res",
        "/res",
        "user@example.com/",  # empty resource
        "example.com/",
        "a@b@c",  # domain "b@c"
        "a b@c",
        "a\tb@c",
        "a@b c",
        "a@b\x00",
        "a\x00@b",
        "a@b/r\x00",
        "a@b/r\x7f",
        "a@b/r\u0085",
        'a"b@c',
        "a&b@c",
        "a'b@c",
        "a:b@c",
        "a<b@c",
        "a>b@c",
        "a\uff20b@c",  # fullwidth @ folds to a forbidden '@'
        "a\u200bb@c",  # format character
        "a\u3000b@c",  # ideographic space
        "x" * 1024 + "@x",  # 1024-byte localpart
        "ä" * 512 + "@x",  # 1024 bytes in UTF-8
        "a@" + "b" * 64,  # label too long
        "a@" + ".".join(["b" * 63] * 17),  # domain > 1023 bytes
        "a@b/" + "r" * 1024,
        "a@b/" + "é" * 512,
        "a@..",
        "a@b..c",
        "a@.b",
        "a@example.com..",
        "a@-b.com",
        "a@b-.com",
        "a@b!.com",
        "a@[::1",
        "a@[nope]",
        "a@[fe80::1%eth0]",
        "a@1.2.3.256",
        "a@1.2.3",
        "a@01.2.3.4",
        "a@xn--zz-@@",
        "a@xn--abc",  # decodes to ASCII: not a valid A-label
        "x" * 20000,
    ],
)
def test_parse_invalid(raw: str) -> None:
    with pytest.raises(InvalidJID):
        JID.parse(raw)
    with pytest.raises(InvalidJID):
        jid_from_str(raw)
    # exceptions are not cached: the second call raises again
    with pytest.raises(InvalidJID):
        jid_from_str(raw)


def test_invalid_jid_is_value_error() -> None:
    assert issubclass(InvalidJID, ValueError)


def test_bare_and_resource_helpers() -> None:
    full = JID.parse("User@Example.com/Phone")
    bare = full.bare
    assert bare == JID("user", "example.com", None)
    assert bare.is_bare and not full.is_bare
    assert bare.bare is bare
    assert str(bare) == "user@example.com"
    assert str(full) == "user@example.com/Phone"
    assert bare.with_resource("\uff52") == JID("user", "example.com", "r")
    assert str(JID.parse("example.com").with_resource("x/y")) == "example.com/x/y"
    with pytest.raises(InvalidJID):
        bare.with_resource("")
    with pytest.raises(InvalidJID):
        bare.with_resource("a\nb")


def test_jid_is_hashable_and_frozen() -> None:
    a = JID.parse("a@b/c")
    assert {a, jid_from_str("A@B/c")} == {a}
    with pytest.raises(AttributeError):
        a.local = "x"  # type: ignore[misc]


def test_cached_parser_returns_same_object() -> None:
    assert jid_from_str("cache@example.com/r") is jid_from_str("cache@example.com/r")


def test_non_str_rejected() -> None:
    with pytest.raises(InvalidJID):
        JID.parse(b"a@b")  # type: ignore[arg-type]


_LOCAL_CHARS = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"),
    blacklist_characters="\"&'/:<>@",
)
_LABEL = st.one_of(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_-]{0,20}[A-Za-z0-9])?", fullmatch=True),
    st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd")), min_size=1, max_size=10),
)
_DOMAIN = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
_RESOURCE = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30)


@st.composite
def _jid_strings(draw: st.DrawFn) -> str:
    s = draw(_DOMAIN)
    if draw(st.booleans()):
        s = draw(st.text(_LOCAL_CHARS, min_size=1, max_size=30)) + "@" + s
    if draw(st.booleans()):
        s = s + "/" + draw(_RESOURCE)
    return s


@settings(max_examples=500)
@given(_jid_strings())
def test_roundtrip_generated(raw: str) -> None:
    try:
        jid = JID.parse(raw)
    except InvalidJID:
        # a few generated characters fold into forbidden ones; those must stay rejected
        return
    text = str(jid)
    again = JID.parse(text)
    assert again == jid
    assert str(again) == text


@settings(max_examples=500)
@given(st.text(max_size=60))
def test_arbitrary_text_only_raises_invalid_jid_and_is_idempotent(raw: str) -> None:
    try:
        jid = JID.parse(raw)
    except InvalidJID:
        return
    assert JID.parse(str(jid)) == jid


@pytest.mark.parametrize("raw", ["Straße@Bücher.example/Ünïcödé", "ΑΒΓ@ελλάδα.gr/x", "用户@例子.测试/资源"])
def test_unicode_roundtrip_examples(raw: str) -> None:
    jid = JID.parse(raw)
    assert JID.parse(str(jid)) == jid
    assert str(JID.parse(str(jid))) == str(jid)


def test_casefold_is_full_folding() -> None:
    assert JID.parse("Straße@x").local == "strasse"
