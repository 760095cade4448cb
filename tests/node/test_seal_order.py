"""Our sends of a room seal in the order they were accepted (SPEC §15.4): `SealOrder`'s turns,
alone and on a real node."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from hearthmesh.node.delivery.seal_order import SealOrder
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from tests.integration.conftest import node_config

ROOM = RoomId(bytes(32))


async def test_a_turn_given_up_early_lets_no_later_send_pass_an_earlier_one() -> None:
    order = SealOrder()
    first, second, third = (order.take(ROOM) for _ in range(3))
    other_room = order.take(RoomId(bytes([1]) * 32))
    await other_room.wait()  # another room's sends are not ordered with these
    await first.wait()
    waiting = asyncio.create_task(third.wait())
    second.release()  # cancelled before its seal: `third` still waits for `first`
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not waiting.done()
    first.release()
    await waiting
    third.release()
    other_room.release()
    await asyncio.sleep(0)
    assert len(order) == 0  # nothing pending: no room's entry is kept


async def test_a_turns_block_releases_it_however_it_ends() -> None:
    """Whoever takes a turn holds it in a `with` block: a send that fails before its seal
    still lets the room's next send through."""
    order = SealOrder()
    with contextlib.suppress(LookupError), order.take(ROOM):
        raise LookupError("the send failed before its seal")
    with order.take(ROOM) as after:
        await asyncio.wait_for(after.wait(), 1)
    assert len(order) == 0


async def test_a_release_leaves_no_callback_on_the_loop() -> None:
    """A room's entry goes as its last turn is released, in that step: no callback is left
    ready on the loop, so the send's commit that follows finds it idle and commits at once
    (`AsyncStore._commits_at_once`, ARCHITECTURE §10)."""
    order = SealOrder()
    turn = order.take(ROOM)
    await turn.wait()
    ready = asyncio.get_running_loop()._ready  # type: ignore[attr-defined]  # asyncio's queue
    queued = len(ready)
    turn.release()
    assert len(order) == 0
    assert len(ready) == queued


async def test_node_sends_seal_in_the_order_of_their_turns(tmp_path: Path) -> None:
    """The send that took the later turn runs first; it seals after the earlier one, with a
    higher sequence number and a later HLC."""
    async with asyncio.timeout(10), Node(node_config(tmp_path / "a")) as node:
        room = await node.open_direct(UserId(bytes(range(32))))
        await node.send(room, b"warm")  # its sequence number is loaded, its session ready
        with node.take_turn(room) as first, node.take_turn(room) as second:
            later = asyncio.create_task(node.send(room, b"1", turn=second))
            await asyncio.sleep(0)  # it runs up to its turn (or, unordered, through its seal)
            earlier = await node.send(room, b"0", turn=first)
            sent = await later
        assert (earlier.seq, earlier.hlc) < (sent.seq, sent.hlc)


async def test_a_receipt_is_not_held_behind_a_send_of_its_room_waiting_for_its_turn(
    tmp_path: Path,
) -> None:
    """SPEC §15.4.5: a RECEIPT seals as soon as it is ready, while a send of its room accepted
    before it (holding its turn, as a media send reading its blob's seal does) has not sealed;
    a message sent meanwhile still waits for that send."""
    other = UserId(bytes(range(32)))
    async with asyncio.timeout(10), Node(node_config(tmp_path / "a")) as node:
        room = await node.open_direct(other)
        warm = await node.send(room, b"warm")
        with node.take_turn(room):  # a send accepted, not sealed yet
            message = asyncio.create_task(node.send(room, b"after"))
            receipt = await node.send(
                room,
                encode_receipt(Receipt(status=ReceiptStatus.READ, message_ids=(warm.message_id,))),
                kind=Kind.RECEIPT,
                content_type=RECEIPT_CONTENT_TYPE,
                to=frozenset({other}),
            )
            assert not message.done()  # held behind the send ahead of it
        sent = await message
        assert receipt.hlc < sent.hlc
