"""The LMDB store against a plain-Python model (Hypothesis `RuleBasedStateMachine`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.hlc import encode_timestamp
from hearthmesh.storage.api import AppendRequest, AppendResult, Cursor, Direction
from hearthmesh.storage.lmdb_store import LmdbStore
from tests.conftest import examples

from .helpers import ROOM_A, ROOM_B, USER_A, make_envelope

ROOMS = (ROOM_A, ROOM_B)
DESTINATIONS = (b"d1", b"dest-2")
RETENTION_MS = 100

_OrderKey = tuple[bytes, bytes, int]


def _order(env: Envelope) -> _OrderKey:
    return (encode_timestamp(env.hlc), env.sender_device, env.seq)


class StoreMachine(RuleBasedStateMachine):
    """Appends, duplicates, pages, outbox take/ack/reschedule, conversation deletes, purge."""

    stored = Bundle("stored")

    def __init__(self) -> None:
        super().__init__()
        # Where tmp_path is (tests/conftest.py: a tmpfs when there is one), not /tmp: on disk
        # each of the ~800 steps' commits waited for its fsync.
        root = os.environ.get("PYTEST_DEBUG_TEMPROOT")
        self.directory = Path(tempfile.mkdtemp(prefix="hearthmesh-stateful-", dir=root))
        self.store = LmdbStore(self.directory / "db", map_size=128 * 1024)
        self.now_ms = 0
        self.events: dict[bytes, Envelope] = {}
        self.slots: dict[tuple[bytes, _OrderKey], bytes] = {}
        self.outbox: dict[tuple[bytes, bytes], tuple[int, int, str | None]] = {}
        self.conversations: dict[bytes, bytes] = {}
        for room in ROOMS:
            self.store.add_member(room, USER_A, role=0, local=True, now_ms=0)
            self.conversations[room] = encode_timestamp(make_envelope(wall_ms=0).hlc)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(
        target=stored,
        room=st.sampled_from(ROOMS),
        device=st.integers(1, 3),
        seq=st.integers(1, 4),
        wall=st.integers(0, 400),
        body=st.binary(max_size=3),
        destinations=st.lists(st.sampled_from(DESTINATIONS), unique=True, max_size=2),
        delay=st.integers(0, 50),
    )
    def append(
        self,
        room: bytes,
        device: int,
        seq: int,
        wall: int,
        body: bytes,
        destinations: list[bytes],
        delay: int,
    ) -> Envelope:
        env = make_envelope(room, seq=seq, wall_ms=wall, device_index=device, body=body)
        request = AppendRequest(
            envelope=env, outbox_to=tuple(destinations), next_attempt_ms=self.now_ms + delay
        )
        result = self.store.append(request)
        self._expect_append(request, result)
        return env

    @rule(env=stored, destination=st.sampled_from(DESTINATIONS))
    def append_again(self, env: Envelope, destination: bytes) -> None:
        request = AppendRequest(envelope=env, outbox_to=(destination,), next_attempt_ms=self.now_ms)
        self._expect_append(request, self.store.append(request))

    def _expect_append(self, request: AppendRequest, result: AppendResult) -> None:
        env = request.envelope
        slot = (env.room, _order(env))
        if env.message_id in self.events:
            assert result is AppendResult.DUPLICATE
        elif slot in self.slots:
            assert result is AppendResult.CONFLICT
        else:
            assert result is AppendResult.STORED
            self.events[env.message_id] = env
            self.slots[slot] = env.message_id
            for destination in request.outbox_to:
                self.outbox[(destination, env.message_id)] = (request.next_attempt_ms, 0, None)
            hlc = encode_timestamp(env.hlc)
            if env.room not in self.conversations or self.conversations[env.room] < hlc:
                self.conversations[env.room] = hlc

    @rule(
        room=st.sampled_from(ROOMS),
        direction=st.sampled_from(Direction),
        limit=st.integers(1, 7),
    )
    def walk_pages(self, room: bytes, direction: Direction, limit: int) -> None:
        pages: list[list[bytes]] = []
        cursor: Cursor | None = None
        while True:
            page = self.store.page_history(room, direction=direction, cursor=cursor, limit=limit)
            assert 0 < len(page.events) <= limit or (not pages and not page.events)
            pages.append([e.envelope.message_id for e in page.events])
            if page.next is None:
                break
            cursor = page.next
        if direction is Direction.BACKWARD:
            pages.reverse()
        expected = sorted((e for e in self.events.values() if e.room == room), key=_order)
        assert [m for p in pages for m in p] == [e.message_id for e in expected]

    @rule(advance=st.integers(0, 60), limit=st.integers(1, 4), lease=st.integers(0, 30))
    def take_due(self, advance: int, limit: int, lease: int) -> None:
        self.now_ms += advance
        taken = self.store.take_due(now_ms=self.now_ms, limit=limit, lease_ms=lease)
        due = sorted(
            (entry for entry in self.outbox.items() if entry[1][0] <= self.now_ms),
            key=lambda item: (item[1][0], bytes([len(item[0][0])]) + item[0][0], item[0][1]),
        )[:limit]
        assert [(e.destination, e.message_id, e.attempts, e.last_error) for e in taken] == [
            (dest, mid, attempts + 1, error) for (dest, mid), (_, attempts, error) in due
        ]
        for (dest, mid), (_, attempts, error) in due:
            self.outbox[(dest, mid)] = (self.now_ms + lease, attempts + 1, error)
            assert self.events[mid].wire == next(e.wire for e in taken if e.message_id == mid)

    @rule(env=stored, destination=st.sampled_from(DESTINATIONS))
    def ack(self, env: Envelope, destination: bytes) -> None:
        expected = self.outbox.pop((destination, env.message_id), None) is not None
        assert self.store.ack(destination, env.message_id) is expected

    @rule(
        env=stored,
        destination=st.sampled_from(DESTINATIONS),
        later=st.integers(0, 100),
        error=st.none() | st.text(max_size=5),
    )
    def reschedule(self, env: Envelope, destination: bytes, later: int, error: str | None) -> None:
        key = (destination, env.message_id)
        found = self.store.reschedule(
            destination, env.message_id, next_attempt_ms=self.now_ms + later, error=error
        )
        assert found is (key in self.outbox)
        if found:
            self.outbox[key] = (self.now_ms + later, self.outbox[key][1], error)

    @rule(room=st.sampled_from(ROOMS))
    def delete_conversation(self, room: bytes) -> None:
        expected = self.conversations.pop(room, None) is not None
        assert self.store.delete_conversation(USER_A, room) is expected

    @rule(advance=st.integers(0, 200))
    def purge(self, advance: int) -> None:
        self.now_ms += advance
        report = self.store.purge(now_ms=self.now_ms, retention_ms=RETENTION_MS)
        pending = {mid for (_, mid) in self.outbox}
        old = [e for e in self.events.values() if e.hlc.wall_ms < self.now_ms - RETENTION_MS]
        doomed = [e for e in old if e.message_id not in pending]
        assert (report.events, report.kept_for_outbox) == (len(doomed), len(old) - len(doomed))
        for env in doomed:
            del self.events[env.message_id]
            del self.slots[(env.room, _order(env))]

    @invariant()
    def conversation_list_matches(self) -> None:
        page = self.store.conversations(USER_A, page_size=10)
        expected = sorted(self.conversations.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        assert [(c.room, encode_timestamp(c.latest_activity)) for c in page.items] == expected
        for summary in page.items:
            in_room = [e for e in self.events.values() if e.room == summary.room]
            latest = max(in_room, key=_order).message_id if in_room else None
            got = summary.latest.envelope.message_id if summary.latest else None
            assert got == latest

    @invariant()
    def every_event_is_found_by_id(self) -> None:
        for mid, env in self.events.items():
            stored = self.store.get_event(mid)
            assert stored is not None and stored.envelope.wire == env.wire


StoreMachine.TestCase.settings = settings(
    max_examples=examples(100), stateful_step_count=40, deadline=None
)
TestStoreAgainstModel = StoreMachine.TestCase
