"""The subscription state table (RFC 6121 Appendix A) keeps both sides of a subscription consistent.

Pure: no server. The user's state and the contact's state mirror each other ("to" on one side is "from"
on the other, a pending-out request is the other side's pending-in). Any stanza the user's server routes
must move the contact's state to the mirror of the user's new state.
"""

from __future__ import annotations

import pytest

from mbeon_chat.features import roster

STATES = ["none", "none+out", "none+in", "none+out+in", "to", "to+in", "from", "from+out", "both"]
KINDS = ["subscribe", "subscribed", "unsubscribe", "unsubscribed"]


def mirror(state: str) -> str:
    sub, *flags = state.split("+")
    sub = {"to": "from", "from": "to"}.get(sub, sub)
    return sub + ("+out" if "in" in flags else "") + ("+in" if "out" in flags else "")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("state", STATES)
def test_a_routed_subscription_stanza_leaves_both_sides_mirrored(state: str, kind: str) -> None:
    after = roster.OUTBOUND[kind].get(state, state)
    routed = kind in ("subscribe", "unsubscribe") or after != state  # presence.py's routing rule
    if routed:
        contact = mirror(state)
        assert roster.INBOUND[kind].get(contact, contact) == mirror(after)


def test_every_table_entry_is_a_defined_state() -> None:
    for table in (roster.OUTBOUND, roster.INBOUND):
        for transitions in table.values():
            assert set(transitions) <= set(STATES)
            assert set(transitions.values()) <= set(STATES)
    assert set(roster.PRE_APPROVABLE.values()) <= set(STATES)


@pytest.mark.parametrize("state", STATES)
def test_state_of_reads_what_the_store_holds(state: str) -> None:
    sub = state.split("+")[0]
    item = roster.RosterItem(
        contact="x@example.org", subscription=sub, ask_out="out" in state, pending_in="+in" in state
    )
    assert roster.state_of(item) == state
    shown = roster.item_element(item).attrs
    assert shown["subscription"] == sub
    assert shown.get("ask") == ("subscribe" if "out" in state else None)  # pending-in is never shown
