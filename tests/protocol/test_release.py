"""The release order machine (protocol/release.py, SPEC §8.2, §8.4), driven synchronously by
`Pump`: the node's loop (node/delivery/release_order.py) over a dict standing in for the
store's per-sender index."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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

    def __init__(self, *, window: int = REORDER_WINDOW, read_range: int = READ_RANGE) -> None:
        self.machine = SenderReleases(window=window)
        self.read_range = read_range
        self.stored: dict[int, Envelope] = {}
        self.reads: list[int] = []

    def restarted(self, *, window: int = REORDER_WINDOW) -> Pump:
        """A new machine over the same store: memory forgot what it held."""
        pump = Pump(window=window, read_range=self.read_range)
        pump.stored = self.stored
        return pump

    def arrive(self, seq: int, *, resume_at: int = 1) -> list[int]:
        item = self.stored.setdefault(seq, envelope(seq))
        if not self.machine.knows(SENDER):
            last = max(self.stored)
            self.machine.resume(SENDER, USER, resume_at, last_stored=last)
        step = self.machine.offer(item)
        released = list(step.released)
        while step.read_from is not None:
            self.reads.append(step.read_from)
            first, last = step.read_from, step.read_from + self.read_range - 1
            found = [self.stored[s] for s in sorted(self.stored) if first <= s <= last]
            step = self.machine.offer_read_back(SENDER, found)
            released += step.released
        return [e.seq for e in released]


def test_in_order_each_is_released_once_with_no_read_back() -> None:
    pump = Pump()
    assert pump.arrive(1) == [1]
    assert pump.arrive(2) == [2]
    assert pump.arrive(2) == []  # a duplicate changes nothing
    assert pump.reads == []  # nothing was stored beyond what memory held


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
    after = before.restarted()  # memory forgot 3 and 4; the store did not
    assert after.arrive(2, resume_at=2) == [2, 3, 4]
    assert after.reads == [3]  # one read: then memory has caught up with the store
    assert after.arrive(5) == [5]
    assert after.reads == [3]


def test_one_held_far_ahead_before_a_restart_follows_however_the_gap_is_filled() -> None:
    before = Pump(read_range=4)
    before.arrive(1)
    assert before.arrive(10) == []  # held in memory, which a restart forgets
    after = before.restarted()
    released: list[int] = []
    for seq in range(2, 10):  # each read-back of 4 numbers finds nothing until 6..9
        released += after.arrive(seq, resume_at=2)
    assert released == list(range(2, 11))


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


@given(
    order=st.permutations(list(range(1, 13))),
    repeats=st.lists(st.integers(1, 12), max_size=6),
    restarts=st.sets(st.integers(0, 18)),
    window=st.integers(1, 6),
    read_range=st.integers(1, 5),
)
def test_any_arrival_order_with_restarts_releases_each_once_in_order(
    order: list[int], repeats: list[int], restarts: set[int], window: int, read_range: int
) -> None:
    """SPEC §8.2, §8.4 against a model: whatever the order, the duplicates, the restarts (each
    forgets memory and resumes from the saved progress), the window and the read-back range,
    the app gets 1..12 once each, in order, by the time every number is stored."""
    arrivals = order + repeats
    pump = Pump(window=window, read_range=read_range)
    saved, released = 1, []
    for index, seq in enumerate(arrivals):
        if index in restarts:
            pump = pump.restarted(window=window)
        released += pump.arrive(seq, resume_at=saved)
        for moved in pump.machine.progress():
            saved = moved.next_seq
    assert released == list(range(1, 13))


def history(pump: Pump, seq: int) -> list[int]:
    """Store and offer an envelope from before our joining point (SPEC §8.6)."""
    new = seq not in pump.stored
    item = pump.stored.setdefault(seq, envelope(seq))
    if not pump.machine.knows(SENDER):
        pump.machine.resume(SENDER, USER, seq + 1, last_stored=max(pump.stored))
    return [e.seq for e in pump.machine.offer(item, new=new, history=True).released]


def test_history_is_released_as_it_is_stored_and_no_number_up_to_it_is_owed() -> None:
    """A joiner's welcome brings a sender's 1 and 5 (membership events), the shared window its
    3: each goes to the app once, as it comes; its 2 and 4 (unshared) are never waited for, nor
    named as a gap; 6, the first after the ADD, is released at once."""
    pump = Pump()
    assert history(pump, 1) == [1]
    assert history(pump, 5) == [5]
    assert history(pump, 3) == [3]
    assert history(pump, 3) == []  # a duplicate changes nothing
    assert pump.machine.gaps() == []
    assert pump.arrive(6) == [6]
    assert pump.machine.progress() == [Progress(room=ROOM, device=DEVICE, next_seq=7)]


def test_history_past_where_a_sender_stood_frees_what_waited_behind_it() -> None:
    """A rejoin: the release stood at 3 when we left; our new ADD's welcome brings 9 (history)
    while 10, sent after the ADD, waits behind the gap 3..8 it made: 9 is released, then 10,
    and nothing of 3..8 is owed any more."""
    pump = Pump()
    assert pump.arrive(1) == [1]
    assert pump.arrive(2) == [2]
    assert pump.arrive(10) == []
    assert pump.machine.gaps() == [SenderGap(room=ROOM, device=DEVICE, user=USER, first=3, last=9)]
    assert history(pump, 9) == [9, 10]
    assert pump.machine.gaps() == [] and pump.machine.held() == 0
    assert pump.arrive(11) == [11]


def test_a_fetched_number_from_before_the_joining_point_is_passed_over_not_released() -> None:
    """SPEC §8.6: the gap fetch brings 4, from before our ADD: it is not stored nor shown, but
    it proves nothing up to 4 is owed, so 5 goes to the app."""
    pump = Pump()
    history(pump, 3)
    assert pump.arrive(5) == []
    step = pump.machine.pass_over(envelope(4))
    assert [e.seq for e in step.released] == [5]
    assert pump.machine.gaps() == []
    assert pump.machine.released_before(SENDER, 4)
