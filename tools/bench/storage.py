"""`hearthmesh bench storage`: durable append rates, history page and conversation list latency,
and how late the event loop runs while sends append one at a time.

Every figure uses the real LMDB store with its durable settings (sync on commit), in a
temporary directory. Envelopes are built unsigned (a zero signature) because storage never
verifies: the figures measure storage, not Ed25519 (see `hearthmesh bench codec` for that).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.envelope import ENVELOPE_DOMAIN, Envelope, Kind, MessageId, RoomId
from hearthmesh.protocol.hlc import Timestamp, encode_timestamp
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.storage.api import AppendRequest, Cursor, Direction
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.keys import slot
from hearthmesh.storage.lmdb_store import LmdbStore

__all__ = ["run"]

BODY_BYTES: Final = 200
PAGE_EVENTS: Final = 50
CONVERSATION_PAGE_SIZE: Final = 20
_BUILD_BATCH: Final = 5_000
_WALL_BASE_MS: Final = 1_700_000_000_000


def _envelope(room: bytes, user: bytes, device: bytes, seq: int, wall_ms: int) -> Envelope:
    """An envelope exactly as `seal` lays it out, with a zero signature (never verified here)."""
    hlc = Timestamp(wall_ms, 0)
    signed = encode_canonical(
        [
            0,
            int(Kind.MESSAGE),
            room,
            user,
            device,
            seq,
            encode_timestamp(hlc),
            "text/plain",
            b"\x00" * BODY_BYTES,
        ]
    )
    signature = bytes(64)
    return Envelope(
        version=0,
        kind=Kind.MESSAGE,
        room=RoomId(room),
        sender_user=UserId(user),
        sender_device=DeviceId(device),
        seq=seq,
        hlc=hlc,
        content_type="text/plain",
        body=b"\x00" * BODY_BYTES,
        signature=signature,
        wire=b"\x8a" + signed[1:] + b"\x58\x40" + signature,
        message_id=MessageId(hashlib.sha256(ENVELOPE_DOMAIN + signed).digest()),
    )


def _requests(
    room: bytes, device: bytes, first_seq: int, count: int, *, outbox: bool = True
) -> list[AppendRequest]:
    """Appends as the send path makes them: each with one outbox entry (unless `outbox`)."""
    user = b"\x01" * 32
    return [
        AppendRequest(
            envelope=_envelope(room, user, device, seq, _WALL_BASE_MS + seq),
            outbox_to=(b"home-node",) if outbox else (),
        )
        for seq in range(first_seq, first_seq + count)
    ]


def _percentiles_ms(samples_s: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples_s, n=100, method="inclusive")
    return round(cuts[49] * 1000, 3), round(cuts[98] * 1000, 3)


def _timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def _single_rate(store: LmdbStore, count: int) -> float:
    requests = _requests(b"\x10" * 32, b"\x11" * 32, 1, count)
    started = time.perf_counter()
    for request in requests:
        store.append(request)
    return count / (time.perf_counter() - started)


def _grouped_rate(path: Path, count: int) -> tuple[float, int]:
    """Appends through AsyncStore, all in flight together: group commit does the batching."""
    requests = _requests(b"\x20" * 32, b"\x21" * 32, 1, count)

    async def main() -> tuple[float, int]:
        async with AsyncStore(LmdbStore(path)) as db:
            started = time.perf_counter()
            await asyncio.gather(*(db.append(request) for request in requests))
            return count / (time.perf_counter() - started), db.batches_committed

    return asyncio.run(main())


def _loop_lag(path: Path, count: int) -> dict[str, Any]:
    """Appends through AsyncStore one at a time, as single sends make them, while a 1 ms ticker
    measures how late the event loop answers: a commit's fsync held on the loop's thread shows
    as lateness (ARCHITECTURE §10); the append latency is what a client waits for `sent`."""
    requests = _requests(b"\x30" * 32, b"\x31" * 32, 1, count)

    async def main() -> tuple[list[float], list[float]]:
        late: list[float] = []
        appends: list[float] = []
        done = asyncio.Event()

        async def tick() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                late.append(time.perf_counter() - started - 0.001)

        async with AsyncStore(LmdbStore(path)) as db:
            ticker = asyncio.create_task(tick())
            for request in requests:
                started = time.perf_counter()
                await db.append(request)
                appends.append(time.perf_counter() - started)
            done.set()
            await ticker
        return late, appends

    late, appends = asyncio.run(main())
    late_p50, late_p99 = _percentiles_ms(late)
    append_p50, append_p99 = _percentiles_ms(appends)
    return {
        "appends_one_at_a_time": count,
        "append_p50_ms": append_p50,
        "append_p99_ms": append_p99,
        "loop_late_p50_ms": late_p50,
        "loop_late_p99_ms": late_p99,
        "loop_late_max_ms": round(max(late) * 1000, 3),
        "loop_ticks": len(late),
        "loop_ticks_late_over_2ms": sum(1 for lateness in late if lateness > 0.002),
    }


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for first in range(1, total + 1, size):
        yield first, min(size, total + 1 - first)


def _history_figures(store: LmdbStore, events: int, samples: int) -> dict[str, Any]:
    room, device = b"\x30" * 32, b"\x31" * 32
    started = time.perf_counter()
    for first, count in _chunks(events, _BUILD_BATCH):
        # A long-lived room's outbox entries were acked long ago: build it without any.
        store.append_many(_requests(room, device, first, count, outbox=False))
    built_s = time.perf_counter() - started
    latest = _timed(lambda: store.page_history(room, direction=Direction.BACKWARD), samples)
    rng = _Lcg(42)

    def random_page() -> object:
        seq = 1 + rng.next() % events
        cursor = Cursor(slot(encode_timestamp(Timestamp(_WALL_BASE_MS + seq, 0)), device, seq))
        return store.page_history(room, direction=Direction.BACKWARD, cursor=cursor)

    anywhere = _timed(random_page, samples)
    p50, p99 = _percentiles_ms(latest + anywhere)
    latest_p50, _ = _percentiles_ms(latest)
    return {
        "history_events": events,
        "history_build_s": round(built_s, 1),
        "history_build_appends_per_s": round(events / built_s),
        "history_page_p50_ms": p50,
        "history_page_p99_ms": p99,
        "history_latest_page_p50_ms": latest_p50,
    }


def _conversation_figures(store: LmdbStore, rooms: int, samples: int) -> dict[str, Any]:
    user = b"\x40" * 32
    for index in range(rooms):
        store.add_member(index.to_bytes(32, "big"), user, role=0, local=True, now_ms=index)
    requests = [
        AppendRequest(
            envelope=_envelope(
                index.to_bytes(32, "big"), user, b"\x41" * 32, 1, _WALL_BASE_MS + index * 7 % rooms
            )
        )
        for index in range(rooms)
    ]
    for first in range(0, rooms, _BUILD_BATCH):
        store.append_many(requests[first : first + _BUILD_BATCH])
    first_page = _timed(
        lambda: store.conversations(user, page_size=CONVERSATION_PAGE_SIZE, page_number=1),
        samples,
    )
    p50, p99 = _percentiles_ms(first_page)
    return {
        "conversations": rooms,
        "conversation_page_size": CONVERSATION_PAGE_SIZE,
        "conversation_list_p50_ms": p50,
        "conversation_list_p99_ms": p99,
    }


class _Lcg:
    """A tiny deterministic generator, so runs pick the same pages."""

    def __init__(self, seed: int) -> None:
        self._state = seed

    def next(self) -> int:
        self._state = (self._state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return self._state >> 16


def run(quick: bool) -> dict[str, Any]:
    """Measure and return the storage figures (sizes shrink with `quick`)."""
    single = 300 if quick else 2_000
    grouped = 5_000 if quick else 50_000
    events = 20_000 if quick else 1_000_000
    rooms = 500 if quick else 5_000
    samples = 200 if quick else 1_000
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as directory:
        root = Path(directory)
        grouped_rate, batches = _grouped_rate(root / "grouped", grouped)
        with LmdbStore(root / "main") as store:
            figures: dict[str, Any] = {
                "durable": True,
                "body_bytes": BODY_BYTES,
                "appends_single": single,
                "appends_per_s_single": round(_single_rate(store, single)),
                "appends_grouped": grouped,
                "appends_per_s_grouped": round(grouped_rate),
                "grouped_transactions": batches,
            }
            figures |= _loop_lag(root / "lag", single // 4)
            figures |= _history_figures(store, events, samples // 2)
            figures |= _conversation_figures(store, rooms, samples)
            figures["store_bytes"] = os.path.getsize(root / "main" / "data.mdb")
    return figures
