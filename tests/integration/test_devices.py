"""Linked devices (SPEC §22): pairing, and every message on every home of the user."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.config import NodeConfig
from hearthmesh.node.events import MessageReceived
from hearthmesh.node.identity.linking import LinkedDevice, link_new_device
from hearthmesh.node.node import Node
from hearthmesh.protocol.delivery import ProtocolErrorFrame, decode_frame
from hearthmesh.protocol.e2ee import ENCRYPTED_CONTENT_TYPE
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import ErrorCode, NotAuthorized
from hearthmesh.protocol.home_record import decode_home_record
from hearthmesh.protocol.identity import DeviceId
from hearthmesh.protocol.linking import LINK_PROTOCOL, Readdress, encode_link_code, encode_readdress
from hearthmesh.tools.simulate.delay_proxy import DelayProxy

from .conftest import (
    NodeFactory,
    collect,
    free_port,
    node_config,
    wait_until,
)

pytestmark = pytest.mark.integration


def _local_addr() -> str:
    return f"/ip4/127.0.0.1/tcp/{free_port()}"


async def link_device(primary: Node, path: Path) -> tuple[NodeConfig, LinkedDevice]:
    """Link a new device (data directory `path`) to `primary`'s user; its config and result."""
    config = node_config(path, listen_addrs=(_local_addr(),))
    linked = await link_new_device(
        config.data_dir,
        encode_link_code(primary.create_link_code()),
        now_ms=SystemClock().now_ms,
        rng=secrets.token_bytes,
        listen_addrs=config.listen_addrs,
    )
    return config, linked


async def test_a_pairing_code_names_the_announced_address_and_links_through_it(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """A primary reached only through a forward (here the simulator's delay proxy, no delay)
    announces the forward's address; its pairing code names that, so the new device dials it
    (SPEC §22.2), not the listen port a proxy or a NAT hides."""
    port = free_port()
    proxy = DelayProxy(("127.0.0.1", 0), ("127.0.0.1", port), lambda: 0.0)
    await proxy.start()
    announced = f"/ip4/127.0.0.1/tcp/{proxy.port}"
    try:
        async with (
            asyncio.timeout(30),
            make_node(
                "alice", listen_addrs=(f"/ip4/127.0.0.1/tcp/{port}",), announce_addrs=(announced,)
            ) as alice,
        ):
            code = alice.create_link_code()
            assert code.address == f"{announced}/p2p/{alice.peer_id}"
            _, linked = await link_device(alice, tmp_path / "alice-laptop")
            assert linked.user == alice.user_id
            assert proxy.accepted >= 1  # the link's dial went through the forward
    finally:
        proxy.close()


async def history_ids(node: Node, room: RoomId) -> list[bytes]:
    page = await node.history(room, limit=1000)
    return [e.envelope.message_id for e in page.events]


async def test_linked_device_gets_every_message_of_its_user(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
        laptop_config, linked = await link_device(alice, tmp_path / "alice-laptop")
        assert linked.user == alice.user_id
        assert linked.peer_id in decode_home_record(alice.home_record()).homes
        async with Node(laptop_config) as laptop:
            assert laptop.user_id == alice.user_id
            assert laptop.keyring.device_id != alice.keyring.device_id
            await laptop.connect(alice.listen_addrs[0])
            await bob.connect(alice.listen_addrs[0])  # bob learns both of alice's homes
            room = await bob.open_direct(alice.user_id)
            on_laptop = asyncio.create_task(collect(laptop.events(), MessageReceived, 3))
            sent = [await bob.send(room, f"to both {i}".encode()) for i in range(3)]
            assert [e.envelope.message_id for e in await on_laptop] == [e.message_id for e in sent]
            # alice answers from the laptop: bob and alice's phone node both get it
            on_bob = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
            on_phone = asyncio.create_task(collect(alice.events(), MessageReceived, 1))
            reply = await laptop.send(room, b"from my laptop")
            assert (await on_bob)[0].envelope.message_id == reply.message_id
            assert (await on_phone)[0].envelope.message_id == reply.message_id
            assert await history_ids(alice, room) == await history_ids(laptop, room)
            assert await history_ids(bob, room) == await history_ids(laptop, room)


async def test_a_direct_room_a_linked_device_shows_is_one_it_can_send_in(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """Issue 13's race. The room is opened after the laptop's first sync, so only alice's own
    message brings it to the laptop (the next sync is a minute away); that message names no
    partner, so the laptop holds it only once it learnt the room from alice's home."""
    async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
        await bob.connect(alice.listen_addrs[0])
        config, _ = await link_device(alice, tmp_path / "laptop")
        async with Node(config) as laptop:
            await laptop.connect(alice.listen_addrs[0])
            await bob.learn_home_record(alice.home_record())
            room = await alice.open_direct(bob.user_id)
            first = await alice.send(room, b"from the phone")
            while await laptop.get_event(first.message_id) is None:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.02)
            assert room in await laptop.rooms()  # shown, and at once a room it can send in:
            assert await laptop.members(room) == {alice.user_id, bob.user_id}
            sent = await laptop.send(room, b"from the laptop")
            # Bob holds it (his first MessageReceived may be the phone's message, still arriving)
            while await bob.get_event(sent.message_id) is None:  # noqa: ASYNC110 - no event
                await asyncio.sleep(0.02)


async def test_a_pairing_code_works_once(make_node: NodeFactory, tmp_path: Path) -> None:
    async with asyncio.timeout(20), make_node("alice") as alice:
        code = encode_link_code(alice.create_link_code())
        clock = SystemClock().now_ms
        await link_new_device(tmp_path / "one", code, now_ms=clock, rng=secrets.token_bytes)
        with pytest.raises(NotAuthorized):
            await link_new_device(tmp_path / "two", code, now_ms=clock, rng=secrets.token_bytes)
        assert len(decode_home_record(alice.home_record()).homes) == 2


async def test_a_revoked_device_gets_nothing_new_and_is_not_believed(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
        code = encode_link_code(alice.create_link_code())
        linked = await link_new_device(
            tmp_path / "old-phone", code, now_ms=SystemClock().now_ms, rng=secrets.token_bytes
        )
        async with Node(node_config(tmp_path / "old-phone")) as old_phone:
            await old_phone.connect(alice.listen_addrs[0])
            await bob.connect(alice.listen_addrs[0])
            room = await bob.open_direct(alice.user_id)
            await alice.revoke_device(DeviceId(linked.device))
            assert linked.peer_id not in decode_home_record(alice.home_record()).homes
            await bob.learn_home_record(alice.home_record())
            on_alice = asyncio.create_task(collect(alice.events(), MessageReceived, 1))
            fresh = await bob.send(room, b"after the revocation")
            assert (await on_alice)[0].envelope.message_id == fresh.message_id
            assert await old_phone.open_direct(bob.user_id) == room
            answered = len(old_phone.delivery_round_trips_ms)
            stale = await old_phone.send(room, b"from a revoked device")
            # a negative check: both homes it sends to (bob's, alice's) answered its batch
            await wait_until(lambda: len(old_phone.delivery_round_trips_ms) >= answered + 2)
            assert await old_phone.get_event(fresh.message_id) is None
            assert await bob.get_event(stale.message_id) is None


@pytest.mark.slow
async def test_a_device_linked_late_gets_the_whole_history(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with (
        asyncio.timeout(40),
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol") as carol,
    ):
        for other in (bob, carol):
            await other.connect(alice.listen_addrs[0])
        direct = await alice.open_direct(bob.user_id)
        assert await bob.open_direct(alice.user_id) == direct
        group = await alice.create_group("three", [bob.user_id, carol.user_id])
        for i in range(20):
            await alice.send(direct, f"a{i}".encode())
            await bob.send(direct, f"b{i}".encode())
        await wait_until_digests_agree([alice, bob], direct, 40)
        for member in (bob, carol):
            await wait_until_members(member, group, 3)
            await member.send(group, b"hello group")
        # the CREATE, one ADD of both (SPEC §12.1.1) and the two messages
        await wait_until_digests_agree([alice, bob, carol], group, 4)

        laptop_config, _ = await link_device(alice, tmp_path / "alice-laptop")
        async with Node(laptop_config) as laptop:
            await laptop.connect(alice.listen_addrs[0])  # connecting to a sibling syncs
            await wait_until_digests_agree([alice, laptop], direct, 40)
            await wait_until_digests_agree([alice, laptop], group, 4)
            assert await laptop.members(group) == await alice.members(group)
            # its siblings forward the room keys of that history (SPEC §27.12): it reads it all
            for room in (direct, group):
                await wait_until_readable(laptop, room)
                assert await bodies(laptop, room) == await bodies(alice, room)
            assert laptop.key_forwarding_taken > 0


async def bodies(node: Node, room: RoomId) -> list[bytes]:
    return [e.envelope.body for e in (await node.history(room, limit=1000)).events]


async def wait_until_readable(node: Node, room: RoomId) -> None:
    """Poll until no event of `room` on `node` is still ciphertext (SPEC §27.11)."""
    while True:
        page = await node.history(room, limit=1000)
        if all(e.envelope.content_type != ENCRYPTED_CONTENT_TYPE for e in page.events):
            return
        await asyncio.sleep(0.05)


async def wait_until_digests_agree(nodes: list[Node], room: RoomId, count: int) -> None:
    """Poll until the nodes of each user hold one history of `room` (one digest, SPEC §21,
    §22.5) and every node shows the same `count` events, messages and membership: a user's
    homes hold alike the ROOM_KEYs addressed to that user (§27.5.3), another user's do not."""

    async def digests() -> set[tuple[bytes, tuple[bytes, int]]]:
        return {(n.user_id, await n.history_digest(room)) for n in nodes}

    while True:
        # What is shown is read between two reads of the digests that agree: read before or
        # after them alone, it could count an event the nodes had not all stored yet.
        before = await digests()
        shown = {tuple(await history_ids(n, room)) for n in nodes}
        if (
            len(before) == len({n.user_id for n in nodes})
            and len(shown) == 1
            and len(next(iter(shown))) == count
            and await digests() == before
        ):
            return
        await asyncio.sleep(0.05)


async def wait_until_members(node: Node, room: RoomId, count: int) -> None:
    while len(await node.members(room)) != count:  # noqa: ASYNC110 - store state has no event
        await asyncio.sleep(0.05)


class SkewedClock:
    """The system clock, `skew_ms` off: a device whose clock is wrong (or a test's clock that
    `advance` moves on, where a wait would be for time alone to pass)."""

    def __init__(self, skew_ms: int) -> None:
        self._skew_ms = skew_ms

    def now_ms(self) -> int:
        return SystemClock().now_ms() + self._skew_ms

    def advance(self, ms: int) -> None:
        self._skew_ms += ms


@pytest.mark.parametrize("skew_ms", [300_000, -300_000])
async def test_a_device_five_minutes_off_is_corrected_by_its_home(
    make_node: NodeFactory, tmp_path: Path, skew_ms: int
) -> None:
    async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
        await bob.connect(alice.listen_addrs[0])
        room = await alice.open_direct(bob.user_id)
        config, _ = await link_device(alice, tmp_path / "skewed-laptop")
        async with Node(config, clock=SkewedClock(skew_ms)) as laptop:
            await laptop.connect(alice.listen_addrs[0])
            assert abs(laptop.clock_offset_ms + skew_ms) < 1_000
            await bob.learn_home_record(alice.home_record())
            await alice.send(room, b"before")
            # bob too: else "before" may reach him after the collector starts, and come first
            await wait_until_digests_agree([alice, bob, laptop], room, 1)
            on_bob = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
            sent = await laptop.send(room, b"from the skewed laptop")
            assert (await on_bob)[0].envelope.message_id == sent.message_id
            # alice answers what she has seen: her clock then passes the laptop's stamp, which
            # is corrected only to within a second (the check above), so "after" comes after
            await wait_until_digests_agree([alice, laptop], room, 2)
            await alice.send(room, b"after")
            await wait_until_digests_agree([alice, bob, laptop], room, 3)
            page = await bob.history(room, limit=10)
            assert [e.envelope.body for e in page.events] == [
                b"before",
                b"from the skewed laptop",
                b"after",
            ]


async def test_a_stamp_beyond_the_drift_bound_is_deferred_and_nothing_else_changes(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with asyncio.timeout(30), make_node("bob") as bob, make_node("carol") as carol:
        config = node_config(tmp_path / "fast", listen_addrs=(_local_addr(),))
        async with Node(config, clock=SkewedClock(300_000)) as fast:  # nobody corrects it
            await fast.connect(bob.listen_addrs[0])
            await carol.connect(bob.listen_addrs[0])
            answered = len(fast.delivery_round_trips_ms)
            skewed = await fast.send(await fast.open_direct(bob.user_id), b"from the future")
            room = await carol.open_direct(bob.user_id)
            on_bob = asyncio.create_task(collect(bob.events(), MessageReceived, 1))
            fine = await carol.send(room, b"on time")
            assert (await on_bob)[0].envelope.message_id == fine.message_id
            # a negative check: bob's home answered the skewed batch (and deferred it)
            await wait_until(lambda: len(fast.delivery_round_trips_ms) > answered)
            assert await bob.get_event(skewed.message_id) is None
            assert fast.outbox_delivered == 0


@pytest.mark.slow
async def test_three_devices_two_friends_skew_churn_and_a_late_link_converge(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """Issue 6's scenario: alice on three devices (one 5 min fast, one 5 min slow, one linked
    late), bob and carol; devices go offline and come back; everyone sends at once; at the
    end every device of every member holds the same history of every room."""

    async def link(name: str) -> NodeConfig:
        return (await link_device(alice, tmp_path / name))[0]

    async with (
        asyncio.timeout(60),
        make_node("alice") as alice,
        make_node("bob") as bob,
        make_node("carol") as carol,
    ):
        fast_config, slow_config = await link("fast"), await link("slow")
        for friend in (bob, carol):
            await friend.connect(alice.listen_addrs[0])
        direct = await alice.open_direct(bob.user_id)
        assert await bob.open_direct(alice.user_id) == direct
        group = await alice.create_group("all", [bob.user_id, carol.user_id])
        async with Node(fast_config, clock=SkewedClock(300_000)) as fast:
            await fast.connect(alice.listen_addrs[0])
            async with Node(slow_config, clock=SkewedClock(-300_000)) as slow:
                await slow.connect(alice.listen_addrs[0])
                for friend in (bob, carol):
                    await friend.learn_home_record(alice.home_record())
                for device in (fast, slow):  # the rooms came with sync (and the outbox)
                    await wait_until_members(device, direct, 2)
                    await wait_until_members(device, group, 3)
                await wait_until_members(carol, group, 3)
                senders = [(alice, direct), (fast, direct), (slow, direct), (bob, direct)]
                senders += [(alice, group), (fast, group), (bob, group), (carol, group)]
                await asyncio.gather(
                    *(n.send(r, f"burst {i}".encode()) for n, r in senders for i in range(5))
                )
            # slow is away now; the others keep talking
            await asyncio.gather(*(n.send(direct, b"while slow is away") for n in (alice, bob)))
            await carol.send(group, b"while slow is away")
            async with Node(slow_config, clock=SkewedClock(-300_000)) as slow:
                await slow.connect(alice.listen_addrs[0])  # back: sync repairs what it missed
                late = await link("late")
                async with Node(late) as latecomer:
                    await latecomer.connect(alice.listen_addrs[0])
                    devices = [alice, fast, slow, latecomer]
                    await wait_until_digests_agree([*devices, bob], direct, 22)
                    await wait_until_digests_agree([*devices, bob, carol], group, 23)


async def test_a_restart_under_a_clock_that_went_back_stamps_after_earlier_events(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with asyncio.timeout(20), make_node("bob") as bob:
        config = node_config(tmp_path / "alice")
        async with Node(config) as alice:
            room = await alice.open_direct(bob.user_id)
            before = await alice.send(room, b"before the restart")
        async with Node(config, clock=SkewedClock(-600_000)) as alice:
            after = await alice.send(room, b"after the restart, clock 10 min back")
        assert after.hlc > before.hlc
        assert after.seq == before.seq + 1


@asynccontextmanager
async def alice_on_two_devices_and_bob(
    make_node: NodeFactory, tmp_path: Path
) -> AsyncIterator[tuple[Node, Node, Node, RoomId]]:
    """alice (primary), her linked laptop and bob, all connected; bob's direct room with her."""
    async with make_node("alice") as alice, make_node("bob") as bob:
        config, _ = await link_device(alice, tmp_path / "laptop")
        async with Node(config) as laptop:
            await laptop.connect(alice.listen_addrs[0])
            await bob.connect(alice.listen_addrs[0])
            yield alice, laptop, bob, await bob.open_direct(alice.user_id)


@pytest.mark.slow
async def test_deleting_a_conversation_reaches_every_device_of_the_user(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with (
        asyncio.timeout(30),
        alice_on_two_devices_and_bob(make_node, tmp_path) as (alice, laptop, bob, room),
    ):
        await bob.send(room, b"hi alice")
        await wait_until_digests_agree([alice, laptop], room, 1)
        assert room in await listed(laptop)
        assert await alice.delete_conversation(room)
        assert room not in await listed(alice)
        await wait_until_not_listed(laptop, room)
        assert room in await alice.rooms()  # membership and history stay
        await bob.send(room, b"are you there?")  # a later event lists it again
        await wait_until_digests_agree([alice, laptop], room, 2)
        assert room in await listed(alice) and room in await listed(laptop)
        assert (await laptop.history_digest(room)) == (await alice.history_digest(room))


async def listed(node: Node) -> list[RoomId]:
    page = await node.store.run(node.store.store.conversations, node.user_id, page_size=50)
    return [item.room for item in page.items]


async def wait_until_not_listed(node: Node, room: RoomId) -> None:
    while room in await listed(node):  # noqa: ASYNC110 - store state has no event
        await asyncio.sleep(0.05)


async def test_a_linked_home_may_give_only_its_own_devices_key_bundle(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    """SPEC §10.10: a sibling's readdress carrying another device's key bundle is refused
    NOT_AUTHORIZED; the record keeps the bundles it had. (Our own homes are never charged or
    banned, SPEC §11.6, so the refusal alone is the answer.)"""
    async with asyncio.timeout(30), make_node("alice") as alice:
        config, _ = await link_device(alice, tmp_path / "laptop")
        async with Node(config) as laptop, make_node("bob") as bob:
            await laptop.connect(alice.listen_addrs[0])
            await wait_until(lambda: len(decode_home_record(alice.home_record()).bundles) == 2)
            before = decode_home_record(alice.home_record()).bundles
            foreign = decode_home_record(bob.home_record()).bundles[0]
            async with await laptop._host.open_stream(alice.peer_id, LINK_PROTOCOL) as stream:
                await stream.write_frame(encode_readdress(Readdress(addrs=(), bundle=foreign)))
                answer = decode_frame(await stream.read_frame())
            assert isinstance(answer, ProtocolErrorFrame)
            assert answer.code == ErrorCode.NOT_AUTHORIZED
            assert decode_home_record(alice.home_record()).bundles == before
