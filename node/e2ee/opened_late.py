"""What an envelope opened after it was stored sets off (SPEC §27.11).

An envelope whose room key came after it was stored as ciphertext, so its arrival could not
act on what it says: it indexed no action and no media blob, credited no receipt, applied no
profile or contact event (a friend request sent before its sender knew a device of ours). When the
key comes (a ROOM_KEY, a forward from one of our homes, an answered key request, §27.13) the
envelopes it opens get that now, in the write batch that opened them, as on arrival. Those the
release order already passed (they went by the app as ciphertext, unseen) are told to it then,
as `MessageReceived`, in their senders' order (SPEC §27.13.5); the release order tells of the
others as it reaches them.

Owns no state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from typing import TYPE_CHECKING

from hearthmesh.node.delivery.release_order import ReleaseOrder
from hearthmesh.node.delivery.slow_arrivals import SlowArrivals
from hearthmesh.node.events import MessageReceived, NodeEvent
from hearthmesh.node.rooms.contact_events import apply_contact_event
from hearthmesh.node.rooms.message_actions import index_opened
from hearthmesh.node.rooms.receipt_credit import credit_receipt
from hearthmesh.node.social.profile_events import apply_profile
from hearthmesh.protocol.arrival import reaches_the_app
from hearthmesh.protocol.content import is_contact_event
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import Store

if TYPE_CHECKING:  # the inbox imports this module: the type only, no cycle at run time
    from hearthmesh.node.delivery.inbox import StoreOutcome

__all__ = ["LateNews", "react_to_opened"]


class LateNews:
    """Tells the app of envelopes a forward, a key request or a history handoff opened (SPEC
    §27.13.5): those the release order passed while they were ciphertext; and tells the node's
    reactions to a store batch (`StoreOutcomes`, as the inbox's batches do) what their opening
    set off: a contact made, whose user gets our profile at once (SPEC §32.1), released
    envelopes whose media is fetched. The release order is the inbox's (shared, not copied);
    this holds no state of its own."""

    def __init__(
        self,
        *,
        release: ReleaseOrder,
        emit: Callable[[NodeEvent], None],
        publish: Callable[[StoreOutcome], None],
        slow: SlowArrivals | None = None,
    ) -> None:
        """`slow`: where the messages opened late are noted (the receiver's)."""
        self._release = release
        self._emit = emit
        self._publish = publish
        self._slow = slow

    def passed(self, store: Store, opened: Sequence[Envelope]) -> list[Envelope]:
        """Of `opened` (in sender order), those released before they opened; in the write
        batch that opened them, which reads the release progress."""
        return [e for e in opened if self._release.was_released(store, e)]

    def tell(self, outcome: StoreOutcome) -> None:
        """Announce what the batch that opened them did, once it committed."""
        if self._slow is not None and outcome.released:
            self._slow.note(outcome.released, "key")
        for envelope in outcome.released:
            if reaches_the_app(envelope):
                self._emit(MessageReceived(envelope=envelope))
        self._publish(outcome)


def react_to_opened(
    store: Store, opened: Sequence[Envelope], *, users: Set[UserId], now_ms: int
) -> set[RoomId]:
    """Apply to each just-opened envelope what its arrival left undone, for our `users`; the
    rooms whose contact events made us contacts (our profile goes to them, SPEC §32.1)."""
    index_opened(store, opened)  # actions: indexed by the message they name, a recall applied
    store.index_media(opened)  # a blob referenced: served to members, fetched (SPEC §25.4)
    contacts_made: set[RoomId] = set()
    for envelope in opened:
        if envelope.kind is Kind.RECEIPT:
            for user in users:
                credit_receipt(store, user, envelope, now_ms=now_ms)
        elif envelope.kind is Kind.PROFILE:
            for user in users:
                apply_profile(store, user, envelope)
        elif is_contact_event(envelope) and envelope.sender_user not in users:
            for user in users:
                if apply_contact_event(store, user, envelope, now_ms=now_ms):
                    contacts_made.add(envelope.room)
    return contacts_made
