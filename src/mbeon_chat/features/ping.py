"""XEP-0199: XMPP Ping (to the server and, on their behalf, to accounts).

A ping to an account's bare JID is an iq the server handles for the account (RFC 6121 8.5.2.1.3): it is
answered while the account exists, and gets ``service-unavailable`` like any iq to an unknown account (8.5.1).
A ping to a full JID is the client's to answer; the router delivers it.
"""

from mbeon_chat.plugin.api import PluginAPI
from mbeon_chat.xmpp import ns
from mbeon_chat.xmpp.errors import StanzaCondition, StanzaError
from mbeon_chat.xmpp.stanza import Stanza


async def on_ping(iq: Stanza, origin: object) -> Stanza:
    return iq.result()


def setup(api: PluginAPI) -> None:
    async def on_account_ping(iq: Stanza, origin: object) -> Stanza:
        account = iq.to or iq.from_
        accounts = api.ctx.accounts
        if account is None or account.local is None or not await accounts.exists(account.local):
            raise StanzaError(StanzaCondition.SERVICE_UNAVAILABLE)
        return iq.result()

    api.add_feature(ns.PING)
    api.add_feature(ns.PING, target="account")
    api.on_iq("get", ns.PING, "ping", on_ping, target="host")
    api.on_iq("get", ns.PING, "ping", on_account_ping, target="account")
