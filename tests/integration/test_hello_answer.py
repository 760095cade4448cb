"""The hello's answer comes after the asker's records were taken (SPEC §13.3)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from hearthmesh.node.identity.home_records import HomeRecords
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.capabilities import CAPS_PROTOCOL
from hearthmesh.protocol.hello import HELLO_LEVELS_PROTOCOL
from hearthmesh.tools.hostile.forge import new_stranger
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import UNFORGIVING, NodeFactory, node_and_kit, wait_until

pytestmark = pytest.mark.integration


async def test_an_asker_holding_the_answer_is_known_to_the_node(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The conformance suite's newcomer starts a verification with its user as soon as its
    hello is answered; a node that answered before it took the record refused it (404) when
    the taking was slow (under load). Here the taking is made slow on purpose."""
    take = HomeRecords.learn

    async def slow_take(self: HomeRecords, record: bytes, *, source: str = "record") -> None:
        await asyncio.sleep(0.3)
        await take(self, record, source=source)

    monkeypatch.setattr(HomeRecords, "learn", slow_take)
    async with asyncio.timeout(20), make_node() as node, HostilePeer() as newcomer:
        await newcomer.connect(node.listen_addrs[0])
        assert (await newcomer.announce_home(node.peer_id)).frame is not None  # answered
        assert node._services.directory.record(newcomer.user_id) is not None


async def test_a_forged_record_beside_the_askers_own_is_charged_and_still_answered(
    make_node: NodeFactory,
) -> None:
    """Taking the records before the answer must not let a bad one cost the asker its answer
    or the node anything: the forged record (another user's, its signature's last byte
    flipped) is refused and charged (SPEC §11.6), the asker's own is taken, and the answer
    comes."""
    async with asyncio.timeout(20), make_node() as node, HostilePeer() as asker:
        other = new_stranger(random.Random(7).randbytes, now_ms=asker.now_ms())
        record = other.home_record(peer_ids=(asker.peer_id,), addrs=(), now_ms=asker.now_ms())
        forged = record[:-1] + bytes([record[-1] ^ 1])
        await asker.connect(node.listen_addrs[0])
        assert (await asker.announce_home(node.peer_id, records=[forged])).frame is not None
        directory = node._services.directory
        assert directory.record(asker.user_id) is not None
        assert directory.record(other.user_id) is None
        assert node._services.standing.points(asker.peer_id) > 0


async def test_an_answer_to_our_hello_that_is_no_hello_is_charged(make_node: NodeFactory) -> None:
    """The asking side (SPEC §13.3, §11.6.1): bob greets the kit when it connects; the kit
    answers his hello/1 with a frame that is no hello: bob charges it a whole frame."""
    async with (
        asyncio.timeout(20),
        node_and_kit(make_node, "bob") as (bob, kit),
    ):
        asked: list[bytes] = []

        async def garbage(stream: FrameStream) -> None:
            asked.append(await stream.read_frame())
            await stream.write_frame(encode_canonical([9, "no hello"]))

        kit.host.set_stream_handler(HELLO_LEVELS_PROTOCOL, garbage)
        await kit.connect(bob.listen_addrs[0])
        await wait_until(lambda: bool(asked) and bob.peer_points(kit.peer_id) > 0)
        assert bob.peer_points(kit.peer_id) >= UNFORGIVING.frame_points


async def test_a_caps_answer_that_is_no_answer_is_charged_and_leaves_the_peer_at_core(
    make_node: NodeFactory,
) -> None:
    """The asking side of `/hearthmesh/caps/0` (SPEC §20.5, §11.6.1): the kit greets on hello/0
    only (an older release's), so bob asks it for its levels; its answer is no caps answer:
    charged as a whole frame, and the kit counts as `core` (no level)."""
    async with (
        asyncio.timeout(20),
        node_and_kit(make_node, "bob") as (bob, kit),
    ):
        kit.answer_hellos()

        async def garbage(stream: FrameStream) -> None:
            await stream.read_frame()
            await stream.write_frame(encode_canonical([9, "no levels"]))

        kit.host.set_stream_handler(CAPS_PROTOCOL, garbage)
        await kit.connect(bob.listen_addrs[0])
        # The kit's dial returns before bob's swarm has taken the connection in: asked
        # sooner, bob has no address of the kit to open the stream on.
        await wait_until(lambda: kit.peer_id in bob.connected_peers())
        levels = bob._services.peer_levels
        await levels.learn(kit.peer_id)
        assert (bob.peer_points(kit.peer_id), levels.of(kit.peer_id)) == (
            UNFORGIVING.frame_points,
            frozenset(),
        )
