"""Child of the kill -9 test: append forever, print `ack <id>` after each committed append.

Usage: python durability_child.py STORE_DIR RUN [--grouped] [--ack-before-commit] [--absent]

`--grouped` appends through AsyncStore (group commit, 8 producers); `--ack-before-commit` is the
deliberately broken variant: it prints the ack, waits, and only then commits, so a kill in
between loses an acknowledged record, which the test must detect. `--absent` owes each record
to `ABSENT`, a user whose home no record names, by a marker instead of an outbox entry (SPEC
§11.5.2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, keypair_from_seed
from hearthmesh.storage.api import AppendRequest
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.lmdb_store import LmdbStore

__all__ = ["ABSENT", "ROOM", "main"]

ROOM = RoomId(b"\x42" * 32)
ABSENT = b"\x09" * 32
_BROKEN_WINDOW_S = 0.05


def _envelope(run: int, seq: int) -> Envelope:
    key = keypair_from_seed((run + 1).to_bytes(32, "big"))
    return seal(
        key,
        kind=Kind.MESSAGE,
        room=ROOM,
        sender_user=UserId(b"\x07" * 32),
        seq=seq,
        hlc=Timestamp(1_000_000 * (run + 1) + seq, 0),
        content_type="text/plain",
        body=b"durable %d/%d " % (run, seq) + bytes(200),
    )


def _ack(envelope: Envelope) -> None:
    sys.stdout.write(f"ack {envelope.message_id.hex()}\n")
    sys.stdout.flush()


def _request(envelope: Envelope, absent: bool) -> AppendRequest:
    if absent:
        return AppendRequest(envelope=envelope, absent_to=(ABSENT,))
    return AppendRequest(envelope=envelope, outbox_to=(b"home",))


def _run_single(path: Path, run: int, broken: bool, absent: bool) -> None:
    store = LmdbStore(path)
    seq = 0
    while True:
        seq += 1
        envelope = _envelope(run, seq)
        if broken:
            _ack(envelope)
            time.sleep(_BROKEN_WINDOW_S)
        store.append(_request(envelope, absent))
        if not broken:
            _ack(envelope)


async def _run_grouped(path: Path, run: int, absent: bool) -> None:
    async with AsyncStore(LmdbStore(path)) as db:
        counter = iter(range(1, 1 << 62))

        async def producer() -> None:
            while True:
                envelope = _envelope(run, next(counter))
                await db.append(_request(envelope, absent))
                _ack(envelope)

        async with asyncio.TaskGroup() as tasks:
            for _ in range(8):
                tasks.create_task(producer())


def main() -> None:
    """Parse the arguments and append until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("run", type=int)
    parser.add_argument("--grouped", action="store_true")
    parser.add_argument("--ack-before-commit", action="store_true")
    parser.add_argument("--absent", action="store_true")
    args = parser.parse_args()
    if args.grouped:
        asyncio.run(_run_grouped(args.path, args.run, args.absent))
    else:
        _run_single(args.path, args.run, args.ack_before_commit, args.absent)


if __name__ == "__main__":
    main()
