"""RoomSender (SPEC §27.10) with real vodozemac and a real LMDB store: what a send owes the
members none of whose devices it knows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from hearthmesh.node.e2ee.device_crypto import DeviceCrypto
from hearthmesh.node.e2ee.pickle_key import load_or_create_pickle_key
from hearthmesh.node.e2ee.room_sender import Encryption, RoomSender
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.home_record import issue_home_record
from hearthmesh.protocol.identity import DeviceId, UserId, issue_certificate, keypair_from_seed
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.lmdb_store import LmdbStore

from ..conftest import FakeClock

ROOM = RoomId(b"r" * 32)
CAROL, DAVE = UserId(b"c" * 32), UserId(b"d" * 32)


async def test_members_sent_to_before_any_device_was_known_are_owed_from_their_first_index(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §27.10.1: carol's record is nowhere, so alice's session owes carol its key from
    the first message (index 0); dave, a member from the fourth send on, from index 3, not
    from the third send, whose commit failed (abandoned: never sent), nor from 0. Alice's own
    user, whose record lists her sending device, is owed nothing. Each record is looked up
    once per session, and the owed rows are the session's, in the store."""
    looked_up: list[UserId] = []

    async def nowhere(user: UserId) -> bool:
        looked_up.append(user)
        return False

    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:
        sender, alice = await _alices_sender(store, tmp_path, clock, find_record=nowhere)

        async def send(members: set[UserId], text: bytes) -> Encryption:
            encryption = await sender.encrypt(ROOM, members, "text/plain", text)
            await store.run(sender.persist, store.store, [encryption])
            return encryption

        first = await send({alice, CAROL}, b"0")
        await send({alice, CAROL}, b"1")
        failed = await sender.encrypt(ROOM, {alice, CAROL, DAVE}, "text/plain", b"2, unsent")
        assert failed.newly_owed == (DAVE,)
        sender.abandon(failed)
        fourth = await send({alice, CAROL, DAVE}, b"3")
        assert (first.newly_owed, fourth.newly_owed) == ((CAROL,), (DAVE,))
        session = first.outbound.session_id
        assert fourth.outbound.session_id == session
        owed = await store.read(store.store.owed_users, ROOM, session)
        assert owed == {CAROL: 0, DAVE: 3}
        assert await store.read(store.store.first_index_given, ROOM, session, DAVE) == 3
        assert looked_up == [CAROL, DAVE]


async def test_members_that_joined_while_a_send_waited_are_owed_from_its_index(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §27.10.1, §20.6: a send encrypted for the members it read (alice) seals after carol
    joined: `owe` makes carol owed the session from that send's index (1), in the store with
    the send's commit, and a later send leaves it there; a member owed from earlier keeps its
    index, and an abandoned send's late member is owed nothing (the next send owes it)."""
    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:
        sender, alice = await _alices_sender(store, tmp_path, clock, find_record=_nowhere)

        async def send(members: set[UserId], text: bytes, joined: set[UserId]) -> Encryption:
            encryption = sender.owe(
                await sender.encrypt(ROOM, members, "text/plain", text), joined
            )
            await store.run(sender.persist, store.store, [encryption])
            return encryption

        await send({alice}, b"0", set())
        late = await send({alice}, b"1: carol joined as it waited", {CAROL})
        assert (late.index, late.newly_owed) == (1, (CAROL,))
        again = await send({alice, CAROL}, b"2", {CAROL})
        assert again.newly_owed == ()  # owed from 1 already
        dropped = sender.owe(await sender.encrypt(ROOM, {alice}, "text/plain", b"3"), {DAVE})
        sender.abandon(dropped)
        await send({alice}, b"4", {DAVE})
        session = late.outbound.session_id
        assert await store.read(store.store.owed_users, ROOM, session) == {CAROL: 1, DAVE: 4}
        assert await store.read(store.store.first_index_given, ROOM, session, CAROL) == 1


async def _nowhere(_: UserId) -> bool:
    return False


async def _alices_sender(
    store: AsyncStore,
    tmp_path: Path,
    clock: FakeClock,
    *,
    find_record: Callable[[UserId], Awaitable[bool]],
) -> tuple[RoomSender, UserId]:
    """Alice's room sender with her own record held; `find_record` finds no other."""
    user_key = keypair_from_seed(b"alice".ljust(32, b"u"))
    device_key = keypair_from_seed(b"alice".ljust(32, b"d"))
    crypto = DeviceCrypto(
        store.store,
        pickle_key=load_or_create_pickle_key(tmp_path),
        device_key=device_key,
        user=UserId(user_key.public),
    )
    alice = UserId(user_key.public)
    directory = HomeDirectory(local_users={alice})
    own_record = issue_home_record(
        user_key,
        issued_ms=clock.now_ms(),
        homes=("home",),
        addrs=(),
        devices=(issue_certificate(user_key, DeviceId(device_key.public), created_ms=0),),
        bundles=(crypto.key_bundle(clock.now_ms()),),
    )
    assert await store.run(directory.learn_verified, store.store, own_record)
    sender = RoomSender(
        crypto=crypto,
        store=store,
        directory=directory,
        find_record=find_record,
        device=DeviceId(device_key.public),
        clock=clock,
        rotation=e2ee.Rotation(max_messages=100),
    )
    return sender, alice
