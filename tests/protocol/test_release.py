"""The release order machine (protocol/release.py, SPEC §8.2, §8.4), driven synchronously by
`Pump`: the node's loop (node/delivery/release_order.py) over a dict standing in for the
store's per-sender index."""

from __future__ import annotations

from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import DeviceId, UserId, keypair_from_seed
from hearthmesh.protocol.ordering import REORDER_WINDOW
from hearthmesh.protocol.release import Progress, Sender, SenderGap, SenderReleases

KEY = keypair_from_seed(b"\x05" * 32)
USER = UserId(KEY.public)
DEVICE = DeviceId(KEY.public)
ROOM = RoomId(b"\x0e" * 32)
SENDER: Sender = (ROOM, DEVICE)
READ_RANGE = 256
"""Numbers one read-back covers, like the store's `MAX_SENDER_RANGE`."""


def envelope(seq: int, room: RoomId = ROOM) -> Envelope:
    return seal(
        KEY,
        kind=Kind.MESSAGE,
        room=room,
        sender_user=USER,
        seq=seq,
        hlc=Timestamp(wall_ms=1_000 + seq, counter=0),
        content_type="text/plain",
        body=b"x",
    )


class Pump:
    """Stores each envelope, then offers it, reading back whatever the machine asks for."""

    def __init__(self, machine: SenderReleases | None = None) -> None:
        self.machine = machine or SenderReleases()
        self.stored: dict[int, Envelope] = {}
        self.reads: list[int] = []

    def arrive(self, seq: int, *, resume_at: int = 1) -> list[int]:
        item = self.stored.setdefault(seq, envelope(seq))
        if not self.machine.knows(SENDER):
            self.machine.resume(SENDER, USER, resume_at)
        step = self.machine.offer(item)
        released = step.released
        while step.read_from is not None:
            self.reads.append(step.read_from)
            first = step.read_from
            found = [self.stored[s] for s in sorted(self.stored) if first <= s < first + READ_RANGE]
            step = self.machine.offer_read_back(SENDER, found)
            released += step.released
        return [e.seq for e in released]


def test_in_order_each_is_released_once_and_only_the_first_release_reads_back() -> None:
    pump = Pump()
    assert pump.arrive(1) == [1]
    assert pump.reads == [2]  # resumed: the store may hold more than memory; it holds none
    assert pump.arrive(2) == [2]
    assert pump.arrive(2) == []  # a duplicate changes nothing
    assert pump.reads == [2]


def test_an_early_one_waits_for_the_gap_which_is_named_with_its_user() -> None:
    pump = Pump()
    assert pump.arrive(1) == [1]
    assert pump.arrive(4) == []
    assert pump.machine.held() == 1
    assert pump.machine.gaps() == [SenderGap(room=ROOM, device=DEVICE, user=USER, first=2, last=3)]
    assert pump.arrive(3) == []
    assert pump.arrive(2) == [2, 3, 4]
    assert pump.machine.gaps() == [] and pump.machine.held() == 0


def test_after_a_restart_what_is_stored_beyond_is_read_back_in_order() -> None:
    before = Pump()
    before.arrive(1)
    before.arrive(3)
    before.arrive(4)
    assert before.machine.progress() == [Progress(room=ROOM, device=DEVICE, next_seq=2)]
    after = Pump()  # memory forgot 3 and 4; the store did not
    after.stored = before.stored
    assert after.arrive(2, resume_at=2) == [2, 3, 4]
    assert after.reads == [3, 5]  # the second read found nothing: no more reads after it
    assert after.arrive(5) == [5]
    assert after.reads == [3, 5]


def test_progress_is_handed_over_once_per_move() -> None:
    pump = Pump()
    assert pump.machine.progress() == []
    pump.arrive(1)
    pump.arrive(2)
    assert pump.machine.progress() == [Progress(room=ROOM, device=DEVICE, next_seq=3)]
    assert pump.machine.progress() == []
    pump.arrive(4)  # held: nothing moved
    assert pump.machine.progress() == []


def test_resuming_skips_what_was_released_before_a_restart() -> None:
    pump = Pump()
    assert pump.arrive(3, resume_at=5) == []  # released already before the restart
    assert pump.arrive(5) == [5]


def test_one_past_the_window_is_not_held_but_read_back_when_its_turn_comes() -> None:
    pump = Pump()
    far = REORDER_WINDOW + 1
    assert pump.arrive(far) == []
    assert pump.machine.held() == 0
    released: list[int] = []
    for seq in range(1, far):
        released += pump.arrive(seq)
    assert released == list(range(1, far + 1))
