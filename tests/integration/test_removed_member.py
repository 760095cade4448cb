"""A member removed while one of our sends waits (SPEC §27.9, §27.10.1): the send read the
room's members before the removal and seals after it, in history after the member's KICK, so
the removed member's devices must not hold the key it is encrypted with. Real nodes on
loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from hearthmesh.node.node import Node
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Envelope, decode_envelope
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import Action, MembershipChange
from hearthmesh.storage.async_store import AsyncStore

from .conftest import NodeFactory
from .test_devices import bodies, wait_until_readable
from .test_key_requests import until_messages

pytestmark = pytest.mark.integration


def _queued(store: AsyncStore, fn: Callable[..., object]) -> bool:
    """Is a write calling `fn` waiting for the store's writer? (Nothing public tells.)"""
    return any(getattr(write.call, "func", None) == fn for write in store._pending)


async def _shared_with(sender: Node, sent: Envelope) -> set[UserId]:
    """The users whose devices `sender` gave the key of the session `sent` is encrypted with."""
    session = e2ee.decode_encrypted_body(decode_envelope(sent.wire).body).session_id
    store = sender._store
    return set((await store.read(store.store.shared_devices, sent.room, session)).values())


async def _carol_opens(carol: Node, sent: Envelope) -> bool:
    """Would carol's device open `sent` as its wire is (the encrypted envelope)?"""
    crypto = carol._services.crypto
    opened = await carol._store.run(crypto.open, decode_envelope(sent.wire))
    return not isinstance(opened, e2ee.Hold)


async def test_a_member_removed_while_a_send_waits_for_its_shares_cannot_read_that_send(
    make_node: NodeFactory,
) -> None:
    """Alice's group has bob and carol, her session's key with both; dave was just added, so
    her next send shares the session with his device first (a store write), and the send
    after it waits in the room's queue behind that one. Alice removes carol meanwhile: the
    KICK is sealed while the first send's shares wait for the store's writer (held here),
    so both sends seal after it, later in history. Carol's device must hold no key of
    theirs. On main both were encrypted with the session carol holds (the members read
    before the KICK; the recipients alone read again at the seal): her device opened both."""
    entered, gate = threading.Event(), threading.Event()

    def hold() -> None:  # alice's store writer busy while the sends and the KICK queue
        entered.set()
        gate.wait(60)

    async with (
        asyncio.timeout(90),
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol") as carol,
        make_node("dave") as dave,
    ):
        for other in (bob, carol, dave):
            await other.connect(alice.listen_addrs[0])
        room = await alice.create_group("removal", [bob.user_id, carol.user_id])
        await alice.send(room, b"before the removal")
        await until_messages(carol, room, 1)
        await wait_until_readable(carol, room)  # carol's device holds the session's key
        await alice.add_member(room, dave.user_id)
        services, store = alice._services, alice._store
        outgoing = services.outgoing
        holding = asyncio.create_task(store.run_long(hold))
        await asyncio.to_thread(entered.wait, 10)
        # The KICK as `groups.kick` makes it, from its rule check on (queued first).
        kick = MembershipChange(action=Action.KICK, target=carol.user_id)
        removing = asyncio.create_task(outgoing.change_membership(room, kick))
        while not _queued(store, services.rooms.check_own):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0)
        first = asyncio.create_task(alice.send(room, b"shared with dave as carol left"))
        sender = outgoing._encryption
        assert sender is not None
        while not _queued(store, sender._start_and_share):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0)
        second = asyncio.create_task(alice.send(room, b"queued as carol left"))
        while len(sender._queues.get(room, ())) < 1:  # noqa: ASYNC110 - no event
            await asyncio.sleep(0)
        gate.set()
        await holding
        removed, sent = await removing, [await first, await second]
        assert all(removed.seq < each.seq for each in sent)  # both after the KICK
        for reader in (bob, dave):
            await until_messages(reader, room, 3 if reader is bob else 2)
            await wait_until_readable(reader, room)
            held = await bodies(reader, room)
            assert b"shared with dave as carol left" in held and b"queued as carol left" in held
        # Alice gave their sessions' keys to none of carol's devices, and carol's opens neither.
        assert [carol.user_id in await _shared_with(alice, each) for each in sent] == [False] * 2
        assert [await _carol_opens(carol, each) for each in sent] == [False, False]


async def test_a_send_encrypted_from_the_queue_before_our_kick_seals_before_it(
    make_node: NodeFactory,
) -> None:
    """The same group, but alice's first send (sharing with dave) is queued for the store's
    writer before the KICK's rule check. The second send, queued behind the first, is
    encrypted (for carol too) as the first finishes, and resumes to seal a step later; the
    KICK's check returns in that step. The send must seal before the KICK (carol may read
    what history holds before her removal), the KICK waiting for it. On main the KICK sealed
    in that step and the send after it, with the session carol holds: her device opened a
    message history holds after her removal."""
    entered, gate = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        gate.wait(60)

    async with (
        asyncio.timeout(90),
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol") as carol,
        make_node("dave") as dave,
    ):
        for other in (bob, carol, dave):
            await other.connect(alice.listen_addrs[0])
        room = await alice.create_group("removal", [bob.user_id, carol.user_id])
        await alice.send(room, b"before the removal")
        await until_messages(carol, room, 1)
        await wait_until_readable(carol, room)
        await alice.add_member(room, dave.user_id)
        services, store = alice._services, alice._store
        outgoing = services.outgoing
        sender = outgoing._encryption
        assert sender is not None
        holding = asyncio.create_task(store.run_long(hold))
        await asyncio.to_thread(entered.wait, 10)
        first = asyncio.create_task(alice.send(room, b"shared with dave before carol left"))
        while not _queued(store, sender._start_and_share):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0)
        second = asyncio.create_task(alice.send(room, b"queued as carol left"))
        while len(sender._queues.get(room, ())) < 1:  # noqa: ASYNC110 - no event
            await asyncio.sleep(0)
        kick = MembershipChange(action=Action.KICK, target=carol.user_id)
        removing = asyncio.create_task(outgoing.change_membership(room, kick))
        while not _queued(store, services.rooms.check_own):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0)
        gate.set()
        await holding
        removed, before, after = await removing, await first, await second
        assert before.seq < after.seq < removed.seq
        await until_messages(bob, room, 3)
        await wait_until_readable(bob, room)
        held = await bodies(bob, room)
        assert b"shared with dave before carol left" in held and b"queued as carol left" in held
