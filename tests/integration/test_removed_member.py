"""A member removed while one of our sends waits (SPEC §27.9, §27.10.1): a send sealed after
the member's KICK is in history after it, so the removed member's devices must not hold the
key it is encrypted with; a send encrypted before the KICK seals before it. Real nodes on
loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from hearthmesh.node.node import Node
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Envelope, RoomId, decode_envelope
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.membership import Action, MembershipChange

from .conftest import NodeFactory
from .test_devices import bodies, wait_until_readable
from .test_key_requests import until_messages

pytestmark = pytest.mark.integration


@dataclass(frozen=True, slots=True)
class _Group:
    alice: Node
    bob: Node
    carol: Node
    dave: Node
    room: RoomId
    writer_free: threading.Event
    """Set: alice's store writer, held from the start of the test's body, runs again."""

    def queued(self, fn: Callable[..., object]) -> bool:
        """Is a write calling `fn` waiting for alice's store writer? (Nothing public tells.)"""
        return any(getattr(w.call, "func", None) == fn for w in self.alice._store._pending)

    def queued_sends(self) -> int:
        """Alice's sends waiting in the room's queue (behind one preparing its session)."""
        sender = self.alice._services.outgoing._encryption
        assert sender is not None
        return len(sender._queues.get(self.room, ()))

    async def until_queued(self, fn: Callable[..., object]) -> None:
        while not self.queued(fn):  # noqa: ASYNC110 - a queue's content, no event
            await asyncio.sleep(0)

    async def until_a_send_queued(self) -> None:
        while not self.queued_sends():  # noqa: ASYNC110 - a queue's length, no event
            await asyncio.sleep(0)

    def kick_carol(self) -> asyncio.Task[Envelope]:
        """The KICK as `groups.kick` makes it, from its rule check on."""
        kick = MembershipChange(action=Action.KICK, target=self.carol.user_id)
        return asyncio.create_task(self.alice._services.outgoing.change_membership(self.room, kick))


@asynccontextmanager
async def _group_dave_just_added(make_node: NodeFactory) -> AsyncIterator[_Group]:
    """Alice's group with bob and carol, her session's key with both devices; dave just added,
    so her next send shares the session with his device first (a store write). Alice's store
    writer is held (by a write that waits) until `writer_free` is set."""
    entered, free = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        free.wait(60)

    async with (
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
        holding = asyncio.create_task(alice._store.run_long(hold))
        await asyncio.to_thread(entered.wait, 10)
        try:
            yield _Group(alice, bob, carol, dave, room, free)
        finally:
            free.set()
            await holding


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


async def _read_by(node: Node, room: RoomId, messages: int, *texts: bytes) -> None:
    await until_messages(node, room, messages)
    await wait_until_readable(node, room)
    held = await bodies(node, room)
    assert all(text in held for text in texts)


async def test_a_member_removed_while_a_send_waits_for_its_shares_cannot_read_that_send(
    make_node: NodeFactory,
) -> None:
    """Alice removes carol while her next send's shares (for dave's device) wait for the store's
    writer, and the send after it waits in the room's queue behind that one: the KICK's rule
    check was queued first, so it is sealed before either send resumes, and both seal after
    it, later in history. Carol's devices must hold no key of theirs. On main both were
    encrypted with the session carol holds (the members read before the KICK; the recipients
    alone read again at the seal): her device opened both."""
    async with asyncio.timeout(90), _group_dave_just_added(make_node) as group:
        alice, room = group.alice, group.room
        sender = alice._services.outgoing._encryption
        assert sender is not None
        removing = group.kick_carol()
        await group.until_queued(alice._services.rooms.check_own)
        first = asyncio.create_task(alice.send(room, b"shared with dave as carol left"))
        await group.until_queued(sender._start_and_share)
        second = asyncio.create_task(alice.send(room, b"queued as carol left"))
        await group.until_a_send_queued()
        group.writer_free.set()
        removed, sent = await removing, [await first, await second]
        assert all(removed.seq < each.seq for each in sent)  # both after the KICK
        texts = (b"shared with dave as carol left", b"queued as carol left")
        await _read_by(group.bob, room, 3, *texts)
        await _read_by(group.dave, room, 2, *texts)
        # Alice gave their sessions' keys to none of carol's devices, and carol's opens neither.
        assert [group.carol.user_id in await _shared_with(alice, e) for e in sent] == [False] * 2
        assert [await _carol_opens(group.carol, each) for each in sent] == [False, False]


async def test_a_send_encrypted_from_the_queue_before_our_kick_seals_before_it(
    make_node: NodeFactory,
) -> None:
    """The same, but alice's first send's shares are queued for the writer before the KICK's
    rule check. The second send, queued behind the first, is encrypted (for carol too) as the
    first finishes, and resumes to seal a step later; the KICK's check returns in that step.
    The send must seal before the KICK (carol may read what history holds before her
    removal), the KICK waiting for it. On main the KICK sealed in that step and the send
    after it, with the session carol holds: her device opened a message history holds after
    her removal."""
    async with asyncio.timeout(90), _group_dave_just_added(make_node) as group:
        alice, room = group.alice, group.room
        sender = alice._services.outgoing._encryption
        assert sender is not None
        first = asyncio.create_task(alice.send(room, b"shared with dave before carol left"))
        await group.until_queued(sender._start_and_share)
        second = asyncio.create_task(alice.send(room, b"queued as carol left"))
        await group.until_a_send_queued()
        removing = group.kick_carol()
        await group.until_queued(alice._services.rooms.check_own)
        group.writer_free.set()
        removed, before, after = await removing, await first, await second
        assert before.seq < after.seq < removed.seq
        texts = (b"shared with dave before carol left", b"queued as carol left")
        await _read_by(group.bob, room, 3, *texts)
