"""What an envelope opened after it was stored sets off (SPEC §27.11).

An envelope whose room key came after it was stored as ciphertext, so its arrival could not
act on what it says: it indexed no action, credited no receipt, applied no profile. When the
key comes (a ROOM_KEY, a forward from one of our homes, an answered key request, §27.13) the
envelopes it opens get that now, in the write batch that opened them, as on arrival.

Owns no state.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

from hearthmesh.node.rooms.message_actions import index_opened
from hearthmesh.node.rooms.receipt_credit import credit_receipt
from hearthmesh.node.social.profile_events import apply_profile
from hearthmesh.protocol.envelope import Envelope, Kind
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import Store

__all__ = ["react_to_opened"]


def react_to_opened(
    store: Store, opened: Sequence[Envelope], *, users: Set[UserId], now_ms: int
) -> None:
    """Apply to each just-opened envelope what its arrival left undone, for our `users`."""
    index_opened(store, opened)  # actions: indexed by the message they name, a recall applied
    for envelope in opened:
        if envelope.kind is Kind.RECEIPT:
            for user in users:
                credit_receipt(store, user, envelope, now_ms=now_ms)
        elif envelope.kind is Kind.PROFILE:
            for user in users:
                apply_profile(store, user, envelope)
