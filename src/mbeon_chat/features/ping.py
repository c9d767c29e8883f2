"""XEP-0199: XMPP Ping (to the server and, on their behalf, to accounts)."""

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.stanza import Stanza


async def on_ping(iq: Stanza, origin: object) -> Stanza:
    return iq.result()


def setup(api: PluginAPI) -> None:
    api.add_feature(ns.PING)
    api.on_iq("get", ns.PING, "ping", on_ping, target="host")
