"""Per-sender sequence numbers on both ends (SPEC §8).

Outgoing numbers come from the store's per-(room, device) index (`Store.last_seq`).
Incoming: envelopes are released to the app in each sender's order through
`protocol.ordering.SenderSequencer`; how far each sender was released is kept in the store
(`Store.release_progress`), so a restart neither repeats nor skips what the app was given.
"""

from __future__ import annotations

from dataclasses import dataclass

from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.errors import SequenceOverflow
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.ordering import SenderSequencer
from hearthmesh.storage.api import MAX_SENDER_RANGE, Store

__all__ = ["ReleaseOrder", "SenderGap"]

Sender = tuple[RoomId, DeviceId]


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderGap:
    """Numbers `first..last` of `device` (of `user`) in `room` are missing; later ones wait."""

    room: RoomId
    device: DeviceId
    user: UserId
    first: int
    last: int


class ReleaseOrder:
    """Releases stored envelopes to the app in per-sender order; persists progress."""

    def __init__(self) -> None:
        self._sequencer: SenderSequencer[Sender, Envelope] = SenderSequencer()
        self._known: set[Sender] = set()
        self._unsaved: set[Sender] = set()
        self._unsure: set[Sender] = set()
        """Senders that may have envelopes stored beyond what memory holds: resumed after a
        restart, or with one refused past the window. The rest need no read-back."""
        self._users: dict[Sender, UserId] = {}
        """Whose device each sender is: a gap is fetched from that user's homes first."""

    def offer(self, store: Store, envelope: Envelope, *, first_seq_if_new: int) -> list[Envelope]:
        """Take a stored envelope (new, or a duplicate of one stored); return what may now go
        to the app, in order.

        Envelopes held back live in memory, and a restart forgets them; so when a sender
        resumed from the store (or with one past the reorder window) moves on, the ones it
        stored beyond are read back and released too, until a read finds none.

        Args:
            first_seq_if_new: where a sender never seen before starts (1 in a direct room; the
                first number the guaranteed path brought in a group joined later).
        """
        sender = (envelope.room, envelope.sender_device)
        if sender not in self._known:
            stored = store.release_progress(envelope.room, envelope.sender_device)
            start = stored if stored is not None else first_seq_if_new
            self._sequencer.resume(sender, start)
            self._known.add(sender)
            self._unsure.add(sender)
            self._users[sender] = envelope.sender_user
        released = self._offer(sender, envelope)
        if not released:
            return released
        if sender in self._unsure:
            while more := self._stored_beyond(store, sender):
                released += more
            self._unsure.discard(sender)
        self._unsaved.add(sender)
        return released

    def _offer(self, sender: Sender, envelope: Envelope) -> list[Envelope]:
        try:
            return self._sequencer.offer(sender, envelope.seq, envelope)
        except SequenceOverflow:
            self._unsure.add(sender)
            return []  # stored anyway; read back once the sender's earlier ones arrive

    def _stored_beyond(self, store: Store, sender: Sender) -> list[Envelope]:
        room, device = sender
        first = self._sequencer.next_seq(sender)
        released: list[Envelope] = []
        for event in store.sender_events(room, device, first, first + MAX_SENDER_RANGE - 1):
            released += self._offer(sender, event.envelope)
        return released

    def save(self, store: Store) -> None:
        """Persist how far each sender was released: once per batch, not per envelope."""
        for room, device in self._unsaved:
            next_seq = self._sequencer.next_seq((room, device))
            store.set_release_progress(room, device, next_seq)
        self._unsaved.clear()

    def held(self) -> int:
        return self._sequencer.held()

    def gaps(self) -> list[SenderGap]:
        """The first missing range of every sender whose later envelopes wait (SPEC §8, §26)."""
        found: dict[Sender, SenderGap] = {}
        for gap in self._sequencer.gaps():
            room, device = gap.sender
            if gap.sender not in found:
                found[gap.sender] = SenderGap(
                    room=room,
                    device=device,
                    user=self._users[gap.sender],
                    first=gap.first,
                    last=gap.last,
                )
        return list(found.values())
