"""RFC 6120 section 11: XML usage. UTF-8 only (11.6), the restricted XML profile (11.1), namespaces (11.2)."""

from __future__ import annotations

import pytest
from conformance_kit import HEADER, STREAMS, Client

from harness import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_declared_encoding_other_than_utf8_gets_unsupported_encoding(srv: RunningServer) -> None:
    """11.6 / 4.9.3.22: the XML declaration names ISO-8859-1: <unsupported-encoding/>, after a header."""
    client = await Client.connect(srv)
    client.send(HEADER.replace("version='1.0'?>", "version='1.0' encoding='ISO-8859-1'?>", 1))
    assert await client.stream_error() == "unsupported-encoding"
    assert len(client.headers) == 1


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-16-le", "utf-32"])
async def test_a_stream_in_utf16_or_utf32_gets_unsupported_encoding(
    srv: RunningServer, encoding: str
) -> None:
    """11.6: a stream encoded in UTF-16 (with or without a byte order mark) or UTF-32 is refused."""
    client = await Client.connect(srv)
    client.send(HEADER.encode(encoding))
    assert await client.stream_error() == "unsupported-encoding"


async def test_utf8_declared_in_any_case_is_fine(srv: RunningServer) -> None:
    client = await Client.connect(srv)
    features = await client.open(HEADER.replace("version='1.0'?>", "version='1.0' encoding='utf-8'?>", 1))
    assert features.tag == STREAMS + "features"
    client.close()


@pytest.mark.parametrize(
    "xml",
    [
        "<!-- a comment -->",  # 11.1: comments
        "<?target data?>",  # processing instructions
        "<message><body>&unknown;</body></message>",  # entity references other than the predefined five
    ],
)
async def test_the_restricted_xml_profile(srv: RunningServer, xml: str) -> None:
    """11.1 / 4.9.3.18: comments, processing instructions, DTDs, entity references: <restricted-xml/>."""
    client = await Client.bound(srv)
    client.send(xml)
    assert await client.stream_error() == "restricted-xml"


async def test_an_undeclared_prefix_gets_bad_namespace_prefix(srv: RunningServer) -> None:
    """4.9.3.2: a prefix without a namespace declaration."""
    client = await Client.bound(srv)
    client.send("<message to='bob@localhost'><x:body>hi</x:body></message>")
    assert await client.stream_error() == "bad-namespace-prefix"
