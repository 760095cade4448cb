"""Per-sender sequence numbers on both ends (SPEC §8): the store side of the release order.

Outgoing numbers come from the store's per-(room, device) index (`Store.last_seq`). A RECEIPT
takes no number (SPEC §8.5): it goes to the app as it is stored.
Incoming: `protocol.release.SenderReleases` decides what goes to the app and when the store
must be read back (SPEC §8.4); this pump reads each sender's saved progress on first sight,
and the highest number stored, reads back what the machine asks for, and saves the progress
with the batch, so a restart neither repeats nor skips what the app was given. State owned
here: none beyond the machine's. What a late joiner is not owed (SPEC §8.6) the inbox tells it:
`history` to `offer`, and `pass_over` for a fetched envelope it did not store.
"""

from __future__ import annotations

from hearthmesh.protocol.addressing import is_sequenced
from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.release import SenderGap, SenderReleases, Step
from hearthmesh.storage.api import MAX_SENDER_RANGE, Store

__all__ = ["ReleaseOrder", "SenderGap"]


class ReleaseOrder:
    """Releases stored envelopes to the app in per-sender order; persists progress."""

    def __init__(self) -> None:
        self._machine = SenderReleases()

    def offer(
        self,
        store: Store,
        envelope: Envelope,
        *,
        first_seq_if_new: int,
        new: bool = True,
        history: bool = False,
    ) -> list[Envelope]:
        """Take a stored envelope (`new`, or a duplicate of one stored); return what may now
        go to the app, in order.

        Args:
            first_seq_if_new: where a sender never seen before starts (1 in a direct room; the
                first number the guaranteed path brought in a group joined later).
            history: it sorts before our joining point (SPEC §8.6): shown as it is stored,
                and nothing of its sender up to its number is waited for.
        """
        self._resume(store, envelope, first_seq_if_new)
        step = self._machine.offer(envelope, new=new, history=history)
        return self._read_back(store, envelope, step)

    def pass_over(self, store: Store, envelope: Envelope) -> list[Envelope]:
        """A verified envelope from before our joining point, not stored (a gap fetch brought
        it, SPEC §8.6): nothing of its sender up to its number is owed; return what that
        releases, in order."""
        self._resume(store, envelope, envelope.seq + 1)
        return self._read_back(store, envelope, self._machine.pass_over(envelope))

    def _resume(self, store: Store, envelope: Envelope, first_seq_if_new: int) -> None:
        room, device = sender = (envelope.room, envelope.sender_device)
        if is_sequenced(envelope) and not self._machine.knows(sender):
            saved = store.release_progress(room, device)
            start = saved if saved is not None else first_seq_if_new
            last = store.last_seq(room, device)  # what a restart may have left unreleased
            self._machine.resume(sender, envelope.sender_user, start, last_stored=last)

    def _read_back(self, store: Store, envelope: Envelope, step: Step) -> list[Envelope]:
        """Follow the machine's read-backs of the sender's stored envelopes (SPEC §8.4)."""
        room, device = sender = (envelope.room, envelope.sender_device)
        released = step.released
        while step.read_from is not None:
            first = step.read_from
            events = store.sender_events(room, device, first, first + MAX_SENDER_RANGE - 1)
            step = self._machine.offer_read_back(sender, (event.envelope for event in events))
            released += step.released
        return released

    def was_released(self, store: Store, envelope: Envelope) -> bool:
        """Did the envelope already go to the app (so something shown late must be told)?"""
        room, device = sender = (envelope.room, envelope.sender_device)
        if self._machine.knows(sender) or not is_sequenced(envelope):
            return self._machine.released_before(sender, envelope.seq)
        saved = store.release_progress(room, device)
        return saved is not None and saved > envelope.seq

    def save(self, store: Store) -> None:
        """Persist how far each sender was released: once per batch, not per envelope."""
        for moved in self._machine.progress():
            store.set_release_progress(moved.room, moved.device, moved.next_seq)

    def held(self) -> int:
        return self._machine.held()

    def gaps(self) -> list[SenderGap]:
        """The first missing range of every sender whose later envelopes wait (SPEC §8, §26)."""
        return self._machine.gaps()
