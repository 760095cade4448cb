"""The release order of stored envelopes to the app (SPEC §8.2, §8.4): a machine; the node pumps.

`protocol.ordering.SenderSequencer` orders what it is offered; this machine adds what a home
node needs around it (SPEC §8.4: release by what is stored, not by what memory holds):

- a sender seen for the first time since start is `resume`d from the progress the pump read
  from the store (or the first number the rules give a new sender), with the highest number
  the store holds of it;
- while a sender's next number is at most the highest one known to be stored but not held in
  memory (stored before a restart, or offered past the reorder window), each release has the
  pump read the store from the next number on (`Step.read_from`) and feed what it finds to
  `offer_read_back`;
- `progress()` hands over how far each sender moved since the last call, for the pump to save
  with the batch that released them;
- history (SPEC §8.6: an envelope of a group from before our joining point) goes to the app as
  it is offered and moves its sender past its number (`SenderSequencer.skip_to`), releasing
  what waited behind; `pass_over` does the same for one a gap fetch brought and the pump did
  not store.

State owned here: per (room, device) sender, the next number due, the envelopes held back, the
highest number stored beyond memory, whose progress is unsaved, and the sender's user.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .addressing import UNSEQUENCED, is_sequenced
from .envelope import Envelope, RoomId
from .errors import SequenceOverflow
from .identity import DeviceId, UserId
from .ordering import REORDER_WINDOW, SenderSequencer

__all__ = ["Progress", "Sender", "SenderGap", "SenderReleases", "Step"]

Sender = tuple[RoomId, DeviceId]


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderGap:
    """Numbers `first..last` of `device` (of `user`) in `room` are missing; later ones wait."""

    room: RoomId
    device: DeviceId
    user: UserId
    first: int
    last: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """Everything of `device` in `room` before `next_seq` went to the app."""

    room: RoomId
    device: DeviceId
    next_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What one offer released, and whether the pump must read the store for more."""

    released: list[Envelope] = field(default_factory=list)
    """Envelopes the app may now see, in the sender's order."""
    read_from: int | None = None
    """Read the sender's stored envelopes from this number on and `offer_read_back` them."""


class SenderReleases:
    """Releases stored envelopes in per-sender order (SPEC §8.2) and says when to read back."""

    def __init__(self, *, window: int = REORDER_WINDOW) -> None:
        self._sequencer: SenderSequencer[Sender, Envelope] = SenderSequencer(window=window)
        self._users: dict[Sender, UserId] = {}
        """Whose device each sender is (a gap is fetched from that user's homes first); a
        sender listed here was resumed."""
        self._unsaved: set[Sender] = set()
        self._beyond: dict[Sender, int] = {}
        """The highest number of each sender stored but perhaps not held in memory (stored
        before a restart, or offered past the reorder window): the store is read back on each
        release until the sender's next number passes it (SPEC §8.4)."""

    def knows(self, sender: Sender) -> bool:
        """Was `sender` resumed since start (else the pump reads its progress first)?"""
        return sender in self._users

    def resume(self, sender: Sender, user: UserId, next_seq: int, *, last_stored: int) -> None:
        """Start `sender` at `next_seq` (its saved progress, or where a new sender starts).

        Args:
            last_stored: the highest number of `sender` the store holds (0 if none).
        """
        self._sequencer.resume(sender, next_seq)
        self._users[sender] = user
        if last_stored >= next_seq:
            self._beyond[sender] = last_stored

    def offer(self, envelope: Envelope, *, new: bool = True, history: bool = False) -> Step:
        """Take a stored envelope (`new`, or a duplicate of one stored) of a resumed sender.

        An unsequenced one (a RECEIPT, SPEC §8.5) goes to the app as it is stored, once: its
        sender need not be resumed, and nothing waits for it. One of `history` (it sorts
        before our joining point, SPEC §8.6) goes to the app as it is stored, once, and its
        sender is owed nothing up to its number: what waited behind those numbers follows.
        """
        if not is_sequenced(envelope):
            return Step(released=[envelope] if new else [])
        sender = (envelope.room, envelope.sender_device)
        if history:
            return self._pass(sender, envelope, new=new)
        released = self._offer(sender, envelope)
        if not released:
            return Step()
        self._unsaved.add(sender)
        return Step(released=released, read_from=self._read_from(sender))

    def pass_over(self, envelope: Envelope) -> Step:
        """A verified envelope of a resumed sender from before our joining point that is not
        stored here (a gap fetch brought it, SPEC §8.6): its number and every lower one are
        owed no more, and what waited behind them is released."""
        return self._pass((envelope.room, envelope.sender_device), envelope, new=False)

    def offer_read_back(self, sender: Sender, envelopes: Iterable[Envelope]) -> Step:
        """Take what the store holds of `sender` from `Step.read_from` on, in number order."""
        released: list[Envelope] = []
        for envelope in envelopes:
            released += self._offer(sender, envelope)
        if not released:
            return Step()  # the next number is not stored: read again on the next release
        return Step(released=released, read_from=self._read_from(sender))

    def progress(self) -> list[Progress]:
        """How far each sender moved since the last call (save it with the batch)."""
        moved = [
            Progress(room=room, device=device, next_seq=self._sequencer.next_seq((room, device)))
            for room, device in self._unsaved
        ]
        self._unsaved.clear()
        return moved

    def released_before(self, sender: Sender, seq: int) -> bool:
        """Did number `seq` of a resumed `sender` already go to the app? An unsequenced one
        went as it was stored (SPEC §8.5)."""
        return seq == UNSEQUENCED or self._sequencer.next_seq(sender) > seq

    def held(self) -> int:
        """Envelopes waiting for an earlier number of their sender."""
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

    def _pass(self, sender: Sender, envelope: Envelope, *, new: bool) -> Step:
        """Release a history envelope (if `new`) and owe its sender nothing up to its number."""
        seq = envelope.seq
        mine = [envelope] if new else []
        if seq < self._sequencer.next_seq(sender):
            return Step(released=mine)  # below where the sender stands: shown as it comes
        freed = self._sequencer.skip_to(sender, seq + 1)  # a held copy of it is among these
        self._unsaved.add(sender)
        released = [e for e in freed if e.seq < seq] + mine + [e for e in freed if e.seq >= seq]
        return Step(released=released, read_from=self._read_from(sender))

    def _read_from(self, sender: Sender) -> int | None:
        beyond = self._beyond.get(sender)
        if beyond is None:
            return None
        next_seq = self._sequencer.next_seq(sender)
        if next_seq > beyond:
            del self._beyond[sender]  # memory has caught up with the store
            return None
        return next_seq

    def _offer(self, sender: Sender, envelope: Envelope) -> list[Envelope]:
        try:
            return self._sequencer.offer(sender, envelope.seq, envelope)
        except SequenceOverflow:
            # stored anyway: read back once the sender's earlier ones arrive
            self._beyond[sender] = max(self._beyond.get(sender, 0), envelope.seq)
            return []
