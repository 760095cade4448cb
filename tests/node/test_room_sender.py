"""RoomSender (SPEC §27.10) with real vodozemac and a real LMDB store: what a send owes the
members none of whose devices it knows."""

from __future__ import annotations

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
    user_key = keypair_from_seed(b"alice".ljust(32, b"u"))
    device_key = keypair_from_seed(b"alice".ljust(32, b"d"))
    looked_up: list[UserId] = []

    async def nowhere(user: UserId) -> bool:
        looked_up.append(user)
        return False

    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:
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
            find_record=nowhere,
            device=DeviceId(device_key.public),
            clock=clock,
            rotation=e2ee.Rotation(max_messages=100),
        )

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
