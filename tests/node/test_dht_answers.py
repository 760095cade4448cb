"""Hostile kad answers to our GET_VALUE (node/p2p/dht.py, SPEC §11.6.1, §13.5): real hosts on
127.0.0.1, the hostile one a plain `P2PHost` serving kad with raw bytes of its choosing."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from libp2p.abc import INetStream
from libp2p.kad_dht.common import PROTOCOL_ID
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_uvarint, encode_varint_prefixed, read_varint_prefixed_bytes
from multiaddr import Multiaddr  # type: ignore[import-untyped]

from hearthmesh.node.node import Node
from hearthmesh.node.p2p import dht
from hearthmesh.node.p2p.host import HostConfig, P2PHost, peer_id_from_seed
from hearthmesh.protocol.errors import ErrorCode, RemoteProtocolError
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.standing import StandingPolicy
from tests.integration.conftest import node_config
from tests.node.test_libp2p_dht import ALICE, ALICE_KEY, BOB_KEY, NOW_MS, dht_config, home_record

pytestmark = pytest.mark.integration

Refusal = tuple[str, ErrorCode, bool]

STRANGER = peer_id_from_seed(b"\x77" * 32)
"""A peer the hostile answers name as closer: nobody runs it."""
STRANGER_ADDR = Multiaddr("/ip4/127.0.0.1/tcp/9")


def _named(addrs: list[bytes]) -> Message.Peer:
    return Message.Peer(id=ID.from_base58(STRANGER).to_bytes(), addrs=addrs)


def _framed(message: Message) -> bytes:
    return encode_varint_prefixed(message.SerializeToString())


ANSWERS = {
    "bytes that are no kad message": encode_varint_prefixed(b"\x0fgarbage"),
    "a length that never ends": b"\xff" * 11,
    "a length over the bound": encode_uvarint(dht.MAX_ANSWER_BYTES + 1) + b"\0" * 64,
    "a FIND_NODE answer naming a closer peer": _framed(
        Message(
            type=Message.MessageType.FIND_NODE,
            closerPeers=[_named([STRANGER_ADDR.to_bytes()])],
        )
    ),
    "a closer peer whose address is no address": _framed(
        Message(
            type=Message.MessageType.GET_VALUE,
            closerPeers=[_named([STRANGER_ADDR.to_bytes(), b"\xff\x00junk"])],
        )
    ),
}
CODES = {
    "bytes that are no kad message": ErrorCode.MALFORMED,
    "a length that never ends": ErrorCode.MALFORMED,
    "a length over the bound": ErrorCode.TOO_LARGE,
    "a FIND_NODE answer naming a closer peer": ErrorCode.MALFORMED,
    "a closer peer whose address is no address": ErrorCode.MALFORMED,
}


async def serve_kad(host: P2PHost, answer: bytes | None) -> None:
    """`host` (its DHT off) answers each kad request with `answer`, raw, or with nothing
    (None: it reads on until the asker closes)."""

    async def handler(stream: INetStream) -> None:
        await read_varint_prefixed_bytes(stream)
        if answer is None:
            while await stream.read():
                pass
            return
        await stream.write(answer)
        await stream.close()

    async def install() -> None:
        assert host._host is not None
        host._host.set_stream_handler(PROTOCOL_ID, handler)

    await host._bridge.run(install)


@asynccontextmanager
async def victim_with(*answers: bytes | None) -> AsyncIterator[tuple[P2PHost, list[Refusal]]]:
    """A DHT host connected to one hostile kad server per answer, and the refusals it
    reports (`P2PHost.set_refusal_handler`, which the node gives its `PeerStanding`)."""
    refusals: list[Refusal] = []

    def refused(
        peer: str, error: RemoteProtocolError, *, protocol: str, whole_frame: bool = True
    ) -> None:
        refusals.append((peer, error.code, whole_frame))

    async with AsyncExitStack() as stack:
        victim = await stack.enter_async_context(P2PHost(dht_config(1)))
        victim.set_refusal_handler(refused)
        for n, answer in enumerate(answers):
            host = P2PHost(HostConfig(identity_seed=bytes([50 + n]) * 32))
            await serve_kad(await stack.enter_async_context(host), answer)
            await victim.connect(host.listen_addrs[0])
        yield victim, refusals


async def _learnt(victim: P2PHost, peer: str) -> bool:
    async def read() -> bool:
        assert victim._host is not None
        return dht._has_addrs(victim._host, ID.from_base58(peer))

    return await victim._bridge.run(read)


async def _charged(refusals: list[Refusal], count: int) -> None:
    while len(refusals) < count:  # noqa: ASYNC110 (the report is a call, not an event)
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("case", list(ANSWERS))
async def test_a_kad_answer_that_cannot_be_right_is_charged_and_nothing_of_it_is_kept(
    case: str,
) -> None:
    """An answer to our GET_VALUE that no honest server sends costs its sender a whole
    frame's points with its code, and is taken as holding nothing: the closer peer it names
    is not learnt. The honest peer asked beside it still gives the record."""
    record = home_record(ALICE, NOW_MS)
    async with asyncio.timeout(20), P2PHost(dht_config(2)) as honest:
        await honest.dht_put(ALICE_KEY, record)  # no peer yet: held by the honest one alone
        async with victim_with(ANSWERS[case]) as (victim, refusals):
            (hostile,) = (p for p in victim.connected_peers() if p != honest.peer_id)
            await victim.connect(honest.listen_addrs[0])
            assert await victim.dht_get(ALICE_KEY) == record
            await _charged(refusals, 1)
            assert refusals == [(hostile, CODES[case], True)]
            assert not await _learnt(victim, STRANGER)


async def test_a_silent_kad_peer_counts_as_holding_nothing_and_is_not_charged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer that does not answer within `ASK_TIMEOUT_S` is not charged: a loaded honest
    peer does the same. (Checked after a peer with garbage, asked beside it, was charged
    twice: the silent one's timeouts came before the second charge.)"""
    monkeypatch.setattr(dht, "ASK_TIMEOUT_S", 0.5)
    garbage = ANSWERS["bytes that are no kad message"]
    async with asyncio.timeout(20), victim_with(None, garbage) as (victim, refusals):
        # Asked until the garbage was charged twice: on a loaded machine its answer, too, can
        # miss the 0.5 s and count as silence. Each get returns after both peers' turns.
        for key in itertools.islice(itertools.cycle((ALICE_KEY, BOB_KEY)), 12):
            assert await victim.dht_get(key) is None
            if len(refusals) >= 2:
                break
        await _charged(refusals, 2)
        assert len({peer for peer, _, _ in refusals}) == 1
        assert {code for _, code, _ in refusals} == {ErrorCode.MALFORMED}
        silent = peer_id_from_seed(bytes([50]) * 32)
        assert silent not in {peer for peer, _, _ in refusals}


async def test_an_answer_naming_more_closer_peers_than_a_bucket_holds_gives_only_a_bucket() -> None:
    """An honest server names at most `CLOSER_TAKEN` (kad's bucket size) closer peers; the
    rest of an answer naming more is not learnt, so one answer cannot fill the peerstore."""
    named = [peer_id_from_seed(bytes([100 + n]) * 32) for n in range(3 * dht.CLOSER_TAKEN)]
    answer = _framed(
        Message(
            type=Message.MessageType.GET_VALUE,
            closerPeers=[
                Message.Peer(id=ID.from_base58(p).to_bytes(), addrs=[STRANGER_ADDR.to_bytes()])
                for p in named
            ],
        )
    )
    async with asyncio.timeout(20), victim_with(answer) as (victim, refusals):
        assert await victim.dht_get(ALICE_KEY) is None
        learnt = [peer for peer in named if await _learnt(victim, peer)]
    assert learnt == named[: dht.CLOSER_TAKEN]
    assert refusals == []


async def test_a_nodes_kad_charge_reaches_its_peer_standing(tmp_path: Path) -> None:
    """SPEC §11.6.1, §13.5, node level: a node looking a user's home up asks a hostile peer
    whose kad answer is no kad message; the charge reaches the node's `PeerStanding`, a whole
    frame's points, as every refused stream's does (the host's refusal handler), and the
    lookup finds nothing. Only the host was tested before: a node that did not hand the host
    its standing (or a DHT layer without the host's handler) would charge no one."""
    async with (
        asyncio.timeout(20),
        Node(node_config(tmp_path / "victim")) as victim,
        P2PHost(HostConfig(identity_seed=b"\x33" * 32)) as hostile,
    ):
        await serve_kad(hostile, ANSWERS["bytes that are no kad message"])
        await victim._host.connect(hostile.listen_addrs[0])
        assert not await victim.find_home(UserId(b"u" * 32))
        while victim.peer_points(hostile.peer_id) == 0:  # noqa: ASYNC110 - a call, no event
            await asyncio.sleep(0.02)
        assert victim.peer_points(hostile.peer_id) == StandingPolicy().frame_points
