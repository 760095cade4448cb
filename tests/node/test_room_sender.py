"""RoomSender (SPEC §27.10) with real vodozemac and a real LMDB store: what a send owes the
members none of whose devices it knows."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Set
from dataclasses import dataclass
from pathlib import Path

import pytest

from hearthmesh.node.e2ee import room_sender
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto
from hearthmesh.node.e2ee.pickle_key import load_or_create_pickle_key
from hearthmesh.node.e2ee.room_sender import RECORD_WAIT_MEMBERS, Encryption, RoomSender
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.identity.home_lookup import HomeLookups
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.home_record import HomeRecord, issue_home_record
from hearthmesh.protocol.identity import DeviceId, UserId, issue_certificate, keypair_from_seed
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore
from hearthmesh.storage.lmdb_store import LmdbStore

from ..conftest import FakeClock, counter_rng
from .test_home_lookup import _Dht, _lookups, _Tasks

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
        alice = await _alice(store, tmp_path, clock, find_record=nowhere)
        sender = alice.sender

        async def send(members: set[UserId], text: bytes) -> Encryption:
            encryption = await sender.encrypt(ROOM, _now(members), "text/plain", text)
            await store.run(sender.persist, store.store, [encryption])
            return encryption

        first = await send({alice.user, CAROL}, b"0")
        await send({alice.user, CAROL}, b"1")
        failed = await sender.encrypt(
            ROOM, _now({alice.user, CAROL, DAVE}), "text/plain", b"2, unsent"
        )
        assert failed.newly_owed == (DAVE,)
        sender.abandon(failed)
        fourth = await send({alice.user, CAROL, DAVE}, b"3")
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
        alice = await _alice(store, tmp_path, clock, find_record=_nowhere)
        sender = alice.sender

        async def send(members: set[UserId], text: bytes, joined: set[UserId]) -> Encryption:
            encryption = sender.owe(
                await sender.encrypt(ROOM, _now(members), "text/plain", text), joined
            )
            await store.run(sender.persist, store.store, [encryption])
            return encryption

        await send({alice.user}, b"0", set())
        late = await send({alice.user}, b"1: carol joined as it waited", {CAROL})
        assert (late.index, late.newly_owed) == (1, (CAROL,))
        again = await send({alice.user, CAROL}, b"2", {CAROL})
        assert again.newly_owed == ()  # owed from 1 already
        dropped = sender.owe(
            await sender.encrypt(ROOM, _now({alice.user}), "text/plain", b"3"), {DAVE}
        )
        sender.abandon(dropped)
        await send({alice.user}, b"4", {DAVE})
        session = late.outbound.session_id
        assert await store.read(store.store.owed_users, ROOM, session) == {CAROL: 1, DAVE: 4}
        assert await store.read(store.store.first_index_given, ROOM, session, CAROL) == 1


async def test_a_first_send_waits_for_no_record_of_a_crowd_of_members_it_holds_none_of(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §27.10.1, §20.6: a first send to a group whose members' records alice mostly
    lacks (at scale, 974 of 1,024 with no home) asks for none of them and waits for no walk:
    each of them is owed the key from index 0, carol among them, and her record, learnt after
    (a hello), gets her device the key on the next send. Waiting on the few walks a crowd's
    lookups could start held each sender's first message 2-3.8 s before its stamp in the
    50-node runs, for records that never came; and the crowd's one walk under way (the
    outbox's probe, in a DHT that does not answer) is not joined either."""
    crowd = {UserId(bytes([n]) * 32) for n in range(RECORD_WAIT_MEMBERS)}
    dht = _Dht()
    dht.release = asyncio.Event()  # no walk ends while the send waits
    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:
        lookups = _lookups(dht, clock)
        alice = await _alice(store, tmp_path, clock, find_record=lookups.find)
        probe = asyncio.create_task(lookups.find_routine(min(crowd)))
        while not dht.asked:  # noqa: ASYNC110 - the fake DHT has no event for it
            await asyncio.sleep(0)
        carol_record = _carol_record(tmp_path / "carol-db", clock)
        members = {alice.user, carol_record.user, *crowd}  # one more than a send waits for
        walked = list(dht.asked)
        first = await alice.sender.encrypt(ROOM, _now(members), "text/plain", b"0")
        await store.run(alice.sender.persist, store.store, [first])
        assert dht.asked == walked == [min(crowd)]
        assert set(first.newly_owed) == members - {alice.user} and first.index == 0
        await store.run(alice.directory.learn_verified, store.store, carol_record)
        second = await alice.sender.encrypt(ROOM, _now(members), "text/plain", b"1")
        assert list(second.newly_shared.values()) == [carol_record.user]
        assert dht.asked == walked
        dht.release.set()
        await probe


async def test_a_send_waits_only_for_the_records_of_the_few_members_whose_lookup_can_walk(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §27.10.1: carol's record is found by a walk (her hello failed): alice's first send
    waits for it and shares with carol's device at once. The few members beside her that the
    DHT missed a moment ago (known nowhere, backing off) walk no more, and are owed the key;
    before, the send waited on every member it held no record of."""
    carol_record = _carol_record(tmp_path / "carol-db", clock)
    nowhere = {UserId(bytes([n]) * 32) for n in range(RECORD_WAIT_MEMBERS - 1)}
    dht = _Dht()
    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:

        async def walk(user: UserId) -> bool:  # a walk that finds a record learns it
            if not await dht.lookup(user):
                return False
            return await store.run(alice.directory.learn_verified, store.store, carol_record)

        lookups = HomeLookups(walk, spawn=_Tasks(), clock=clock, rng=counter_rng())
        alice = await _alice(store, tmp_path, clock, find_record=lookups.find)
        dht.homes.add(carol_record.user)
        for user in sorted(nowhere):  # the outbox's probes missed them
            assert not await lookups.find_routine(user)
        walked = len(dht.asked)
        members = {alice.user, carol_record.user, *nowhere}
        first = await alice.sender.encrypt(ROOM, _now(members), "text/plain", b"0")
        assert dht.asked[walked:] == [carol_record.user]
        assert list(first.newly_shared.values()) == [carol_record.user]
        assert set(first.newly_owed) == nowhere


async def test_a_member_whose_record_comes_while_the_shares_are_made_is_owed_from_there(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §27.10.1, §20.6: alice's first send to a room with carol finds no record of hers
    (the lookup misses), so no share goes to carol's device; carol's record is learnt (a
    hello) while the shares are made. Carol is owed the session from that send's index (0),
    and the next send gives her device the key at 1. On main she was neither: the members
    owed were read after the shares were made, from the records held then, so the key went
    to her device from index 1 and her home never opened the first message."""
    entered, gate = threading.Event(), threading.Event()

    def hold() -> None:  # the store's writer busy while the send prepares
        entered.set()
        gate.wait(30)

    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:
        alice = await _alice(store, tmp_path, clock, find_record=_nowhere)
        carol_record = _carol_record(tmp_path / "carol-db", clock)
        carol, members = carol_record.user, {alice.user, carol_record.user}
        holding = asyncio.create_task(store.run_long(hold))
        await asyncio.to_thread(entered.wait, 10)
        learning = asyncio.create_task(
            store.run(alice.directory.learn_verified, store.store, carol_record)
        )
        first_send = asyncio.create_task(
            alice.sender.encrypt(ROOM, _now(members), "text/plain", b"0")
        )
        # Until the send's shares wait behind the learning: written in that order once the
        # writer is free, the record comes while the shares are made. (No event tells.)
        while len(store._pending) < 2:  # noqa: ASYNC110 - a queue's length, no event
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(holding, learning)
        first = await first_send
        await store.run(alice.sender.persist, store.store, [first])
        second = await alice.sender.encrypt(ROOM, _now(members), "text/plain", b"1")
        await store.run(alice.sender.persist, store.store, [second])
        assert (first.index, first.newly_owed, first.newly_shared) == (0, (carol,), {})
        assert list(second.newly_shared.values()) == [carol] and second.index == 1
        session = first.outbound.session_id
        assert await store.read(store.store.first_index_given, ROOM, session, carol) == 0


async def test_a_share_that_would_reach_an_owed_member_whose_home_refuses_starts_a_new_session(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §27.11.3: alice's first two sends owe carol the session from 0 (no record of hers
    found). Once carol's record is learnt, the next send would give carol's device the key at
    index 2; when carol's homes have not advertised `owed-held` it starts a new session
    instead, whose key her device gets from 0, and the first session never goes to her device
    (it stays owed to her from 0, for her home's request). When they have, it goes on at 2."""
    for holds in (False, True):

        def owed_held(users: Set[UserId], holds: bool = holds) -> Set[UserId]:
            return users if holds else frozenset()

        async with AsyncStore(LmdbStore(tmp_path / f"db-{holds}")) as store:
            alice = await _alice(store, tmp_path, clock, find_record=_nowhere, owed_held=owed_held)
            carol_record = _carol_record(tmp_path / f"carol-db-{holds}", clock)
            carol = carol_record.user
            sent = await _sends_learning_carol_before_the_third(store, alice, carol_record, 3)
            first, third = sent[0].outbound.session_id, sent[2].outbound.session_id
            assert sent[1].outbound.session_id == first
            assert list(sent[2].newly_shared.values()) == [carol]
            assert await store.read(store.store.owed_users, ROOM, first) == {carol: 0}
            shared = await store.read(store.store.shared_devices, ROOM, first)
            if holds:
                assert (third, sent[2].index) == (first, 2)
                assert carol in shared.values()
            else:
                assert third != first and sent[2].index == 0
                assert carol not in shared.values()


async def test_an_owed_members_home_whose_levels_are_not_known_is_asked_before_a_rotation(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §27.11.3: as above, carol is owed the session from 0, and her record is learnt
    (as a lookup or gossip brings it) after the send would have asked her homes: her home's
    levels are not known when the third send would give her device the key at 2. Her homes
    are asked then; they advertise `owed-held`, so the send goes on in the session at no
    rotation's cost. On the parent commit the unknown levels counted as withheld, and the
    send rotated (2 of 3 bursts of 40 sends, records learnt meanwhile, in a mesh where every
    home advertised it)."""
    answered: set[UserId] = set()
    asked: list[Set[UserId]] = []

    def owed_held(users: Set[UserId]) -> Set[UserId]:
        return users & answered

    async def ask_levels(users: Set[UserId]) -> bool:
        asked.append(set(users))
        answered.update(users)
        return True

    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:
        alice = await _alice(
            store,
            tmp_path,
            clock,
            find_record=_nowhere,
            owed_held=owed_held,
            ask_levels=ask_levels,
        )
        carol_record = _carol_record(tmp_path / "carol-db", clock)
        carol = carol_record.user
        sent = await _sends_learning_carol_before_the_third(store, alice, carol_record, 4)
        assert {e.outbound.session_id for e in sent} == {sent[0].outbound.session_id}
        assert list(sent[2].newly_shared.values()) == [carol] and sent[2].index == 2
        assert asked == [{carol}], "asked once, where it would have rotated"


async def test_a_session_is_shared_ahead_within_its_bound_and_the_first_send_carries_no_key(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §27.10.3: with no send of alice's yet, her session's key goes to carol's and
    dave's devices ahead (index 0, no content), and her first message then carries no share;
    a room whose members list more devices than the bound is not shared ahead."""
    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:
        alice = await _alice(store, tmp_path, clock, find_record=_nowhere)
        sender = alice.sender
        members = {alice.user, *await _carol_and_dave(store, alice, tmp_path, clock)}
        monkeypatch.setattr(room_sender, "AHEAD_MAX_DEVICES", 1)
        assert not sender.wants_ahead(ROOM, members)
        assert await sender.share_ahead(ROOM, _now(members)) is None
        monkeypatch.undo()
        ahead = await sender.share_ahead(ROOM, _now(members))
        assert ahead is not None and ahead.keys_only and ahead.index == 0
        assert set(ahead.newly_shared.values()) == members - {alice.user}
        await store.run(sender.persist, store.store, [ahead])
        assert not sender.wants_ahead(ROOM, members)
        first = await sender.encrypt(ROOM, _now(members), "text/plain", b"0")
        assert (first.key_shares, first.newly_shared, first.index) == ((), {}, 0)
        assert first.outbound.session_id == ahead.outbound.session_id


async def test_after_a_leave_only_a_session_that_encrypted_is_started_again_ahead(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §27.10.3, §27.9: dave leaves. Alice's session of a room she sent in rotates ahead,
    its key for carol's device alone; in a room she never sent in, the session shared ahead is
    not started again (her first send rotates it), so a member that never sends pays no
    rotation per leave."""
    quiet = RoomId(b"q" * 32)
    async with AsyncStore(LmdbStore(tmp_path / "db")) as store:
        alice = await _alice(store, tmp_path, clock, find_record=_nowhere)
        sender = alice.sender
        carol, dave = await _carol_and_dave(store, alice, tmp_path, clock)
        members = {alice.user, carol, dave}
        for room in (ROOM, quiet):
            ahead = await sender.share_ahead(room, _now(members))
            assert ahead is not None
            await store.run(sender.persist, store.store, [ahead])
        sent = await sender.encrypt(ROOM, _now(members), "text/plain", b"0")
        await store.run(sender.persist, store.store, [sent])
        left = {alice.user, carol}
        assert not sender.wants_ahead(quiet, left)
        assert sender.wants_ahead(ROOM, left)
        rotated = await sender.share_ahead(ROOM, _now(left))
        assert rotated is not None
        assert rotated.outbound.session_id != sent.outbound.session_id
        assert set(rotated.newly_shared.values()) == {carol}


async def _carol_and_dave(
    store: AsyncStore, alice: _Alice, tmp_path: Path, clock: FakeClock
) -> tuple[UserId, UserId]:
    """Carol's and dave's records, one device each, learnt by alice."""
    users = []
    for name in ("carol", "dave"):
        record = _carol_record(tmp_path / f"{name}-db", clock, name)
        await store.run(alice.directory.learn_verified, store.store, record)
        users.append(record.user)
    return users[0], users[1]


def _carol_record(db: Path, clock: FakeClock, name: str = "carol") -> HomeRecord:
    """Carol's (or `name`'s) record listing her one device with its bundle (her store only
    makes it)."""
    carol_store = LmdbStore(db)
    try:
        return _device(name, carol_store, db.with_name(name), clock)[1]
    finally:
        carol_store.close()


async def _sends_learning_carol_before_the_third(
    store: AsyncStore, alice: _Alice, carol_record: HomeRecord, sends: int
) -> list[Encryption]:
    """Alice's `sends` sends to her and carol, each committed; carol's record is learnt
    before the third (so the first two owe her the session from 0)."""
    members = {alice.user, carol_record.user}
    sent = []
    for n in range(sends):
        if n == 2:
            await store.run(alice.directory.learn_verified, store.store, carol_record)
        encryption = await alice.sender.encrypt(ROOM, _now(members), "text/plain", b"%d" % n)
        await store.run(alice.sender.persist, store.store, [encryption])
        sent.append(encryption)
    return sent


def _now(members: set[UserId]) -> Callable[[], frozenset[UserId]]:
    """The room's members as `RoomSender.encrypt` reads them: these, whenever it reads."""
    return lambda: frozenset(members)


async def _nowhere(_: UserId) -> bool:
    return False


async def _none_due(_: Set[UserId]) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class _Alice:
    """Alice's room sender, her user and her home directory (her own record held)."""

    sender: RoomSender
    user: UserId
    directory: HomeDirectory


async def _alice(
    store: AsyncStore,
    tmp_path: Path,
    clock: FakeClock,
    *,
    find_record: Callable[[UserId], Awaitable[bool]],
    owed_held: Callable[[Set[UserId]], Set[UserId]] = lambda users: users,
    ask_levels: Callable[[Set[UserId]], Awaitable[bool]] | None = None,
) -> _Alice:
    """Alice's sender; `find_record` stands for the lookups of the records she lacks,
    `owed_held` for what the members' homes advertised (by default: all `owed-held`),
    `ask_levels` for asking the homes that never answered (by default: none is due)."""
    crypto, record = _device("alice", store.store, tmp_path / "alice", clock)
    directory = HomeDirectory(local_users={record.user})
    assert await store.run(directory.learn_verified, store.store, record)
    sender = RoomSender(
        crypto=crypto,
        store=store,
        directory=directory,
        find_record=find_record,
        device=record.bundles[0].device,
        clock=clock,
        rotation=e2ee.Rotation(max_messages=100),
        owed_held=owed_held,
        ask_levels=ask_levels or _none_due,
    )
    return _Alice(sender=sender, user=record.user, directory=directory)


def _device(
    name: str, store: Store, data_dir: Path, clock: FakeClock
) -> tuple[DeviceCrypto, HomeRecord]:
    """`name`'s only device, its crypto on `store`, and the record listing it with its bundle."""
    user_key = keypair_from_seed(name.encode().ljust(32, b"u"))
    device_key = keypair_from_seed(name.encode().ljust(32, b"d"))
    data_dir.mkdir(exist_ok=True)
    crypto = DeviceCrypto(
        store,
        pickle_key=load_or_create_pickle_key(data_dir),
        device_key=device_key,
        user=UserId(user_key.public),
    )
    record = issue_home_record(
        user_key,
        issued_ms=clock.now_ms(),
        homes=("home",),
        addrs=(),
        devices=(issue_certificate(user_key, DeviceId(device_key.public), created_ms=0),),
        bundles=(crypto.key_bundle(clock.now_ms()),),
    )
    return crypto, record
