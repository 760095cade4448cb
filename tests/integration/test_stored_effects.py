"""Receipts and contact events take effect in the transaction that stores them: on real nodes
with no client API running, and across the devices of one user (SPEC §16.3, §18, §22)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.node.node import Node
from hearthmesh.protocol.content import (
    CONTACT_CONTENT_TYPE,
    ContactAction,
    ContactEvent,
    encode_contact,
)
from hearthmesh.protocol.envelope import Kind, MessageId, RoomId
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.receipts import (
    RECEIPT_CONTENT_TYPE,
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from hearthmesh.storage.api import DeliveryStatus

from .conftest import NodeFactory, wait_until_async
from .test_devices import (
    alice_on_two_devices_and_bob,
    wait_until_digests_agree,
    wait_until_members,
)

pytestmark = pytest.mark.integration


async def _status(node: Node, message_id: bytes, user: bytes) -> DeliveryStatus | None:
    records = await node.store.read(node.store.store.statuses, message_id)
    return next((r.status for r in records if r.recipient == user), None)


async def _read(node: Node, room: RoomId, message_id: MessageId, sender: UserId) -> None:
    """`node`'s user reads `sender`'s message: a READ receipt to the homes of `sender` only
    (SPEC §16.2.3)."""
    body = encode_receipt(Receipt(status=ReceiptStatus.READ, message_ids=(message_id,)))
    await node.send(
        room, body, kind=Kind.RECEIPT, content_type=RECEIPT_CONTENT_TYPE, to=frozenset({sender})
    )


async def test_a_receipt_raises_the_status_as_it_is_stored_with_no_api(
    make_node: NodeFactory,
) -> None:
    async with asyncio.timeout(20), make_node("alice") as alice, make_node("bob") as bob:
        await bob.connect(alice.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        sent = await alice.send(room, b"hello bob")
        await wait_until_digests_agree([alice, bob], room, 1)
        await _read(bob, room, sent.message_id, alice.user_id)

        async def read_by_bob() -> int:
            return int(await _status(alice, sent.message_id, bob.user_id) == DeliveryStatus.READ)

        await wait_until_async(read_by_bob, 1)


async def test_a_receipt_alone_is_taken_in_with_the_homes_next_commit(
    make_node: NodeFactory,
) -> None:
    """Receipts alone that reach a home wait to share its next commit, a send's, staged after
    it (SPEC §16.3.3). With the wait at an hour, nothing credits bob's receipt until alice's
    home commits again; her send's commit does, so the status is READ as soon as her send
    returns. Any other commit of alice's home (a peer's home record, an ack's settle) takes it
    in too: a round where one did before the receipt was seen waiting is tried again, and a
    receipt never seen waiting in any round fails."""
    async with (
        asyncio.timeout(40),
        make_node("alice", receipt_wait_ms=3_600_000) as alice,
        make_node("bob") as bob,
    ):
        await bob.connect(alice.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        await alice.send(room, b"hello bob")
        await wait_until_digests_agree([alice, bob], room, 1)
        await bob.send(room, b"hello alice")  # his room key goes with it, not with the receipt
        await wait_until_digests_agree([alice, bob], room, 2)
        for round_ in range(ROUNDS):
            sent = await alice.send(room, b"read me %d" % round_)
            await wait_until_digests_agree([alice, bob], room, 3 + 2 * round_)
            await _read(bob, room, sent.message_id, alice.user_id)
            if not await _seen_waiting(alice, sent.message_id, bob.user_id):
                continue  # credited by another commit before it was seen waiting
            await alice.send(room, b"and another %d" % round_)
            assert await _status(alice, sent.message_id, bob.user_id) == DeliveryStatus.READ
            return
        pytest.fail(f"bob's receipt was never seen waiting for alice's next commit in {ROUNDS}")


ROUNDS = 5


async def _seen_waiting(home: Node, message_id: MessageId, reader: UserId) -> bool:
    """Whether the reader's receipt is seen waiting behind, uncredited, before any commit
    credits it."""
    while True:
        if home.store.waiting_behind >= 1:
            return await _status(home, message_id, reader) is None
        if await _status(home, message_id, reader) is not None:
            return False
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_a_read_on_one_device_is_read_on_the_others(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with (
        asyncio.timeout(30),
        alice_on_two_devices_and_bob(make_node, tmp_path) as (alice, laptop, bob, room),
    ):
        message = await bob.send(room, b"read me anywhere")
        await wait_until_digests_agree([alice, laptop], room, 1)
        # the open race of #13: the laptop learns the direct room's members by sync
        await wait_until_members(laptop, room, 2)
        read = Receipt(status=ReceiptStatus.READ, message_ids=(message.message_id,))
        await laptop.send(
            room,
            encode_receipt(read),
            kind=Kind.RECEIPT,
            content_type=RECEIPT_CONTENT_TYPE,
            to=frozenset({bob.user_id}),  # and our own other homes: alice's phone (§16.2.3)
        )

        async def read_on_alice() -> int:
            status = await _status(alice, message.message_id, alice.user_id)
            return int(status == DeliveryStatus.READ)

        await wait_until_async(read_on_alice, 1)


async def test_a_friend_request_is_recorded_as_it_is_stored_with_no_api(
    make_node: NodeFactory,
) -> None:
    async with asyncio.timeout(20), make_node("alice") as alice, make_node("bob") as bob:
        await alice.connect(bob.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        request = ContactEvent(action=ContactAction.REQUEST, note="hi", display_name="Alice")
        await alice.send(room, encode_contact(request), content_type=CONTACT_CONTENT_TYPE)

        async def requested() -> int:
            held = await bob.store.read(bob.store.store.friend_requests, bob.user_id)
            return int([(r.sender, r.note) for r in held] == [(alice.user_id, "hi")])

        await wait_until_async(requested, 1)
        profile = await bob.store.read(bob.store.store.get_profile, alice.user_id)
        assert profile is not None and profile.display_name == "Alice"
