"""Circuit relay v2 (SPEC §10.7) with real hosts in network namespaces: two homes, each behind
its own NAT router, reach each other through a public relay."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from tests.integration.netlab import NetLab, in_netns, require_netlab

pytestmark = pytest.mark.integration

ECHO = "/hearthmesh/test-echo/1"


async def echo(stream: FrameStream) -> None:
    async for frame in stream:
        await stream.write_frame(frame)


async def start(
    stack: AsyncExitStack, ns: str, n: int, listen: str = "/ip4/0.0.0.0/tcp/4470"
) -> P2PHost:
    # No WebRTC: it would upgrade the relayed connection under test (SPEC §10.11).
    config = HostConfig(identity_seed=bytes([n]) * 32, listen_addrs=[listen], webrtc=False)
    with in_netns(ns):
        return await stack.enter_async_context(P2PHost(config))


async def test_two_homes_behind_nats_talk_through_a_public_relay() -> None:
    require_netlab()
    with NetLab() as lab:
        relay_ns, relay_ip = lab.public_host(1)
        alice_ns, _ = lab.home_behind_nat(1)
        bob_ns, _ = lab.home_behind_nat(2)
        async with asyncio.timeout(14), AsyncExitStack() as stack:
            relay = await start(stack, relay_ns, 1)
            alice, bob = await start(stack, alice_ns, 2), await start(stack, bob_ns, 3)
            bob.set_stream_handler(ECHO, echo)
            for home in (alice, bob):
                assert await home.connect(relay.listen_addrs[0]) == relay.peer_id
            while not (relays := await bob.reserve_relays()):  # noqa: ASYNC110 - identify
                await asyncio.sleep(0.2)
            assert relays == [relay.peer_id]
            circuit = f"/ip4/{relay_ip}/tcp/4470/p2p/{relay.peer_id}/p2p-circuit/p2p/{bob.peer_id}"
            assert bob.listen_addrs[0] == circuit
            assert await alice.connect(circuit) == bob.peer_id
            assert alice.peer_paths()[bob.peer_id] == [relay.peer_id]
            async with await alice.open_stream(bob.peer_id, ECHO) as stream:
                await stream.write_frames([b"through", b"the relay"])
                assert [await stream.read_frame() for _ in range(2)] == [b"through", b"the relay"]


async def test_a_relay_reached_over_quic_gives_a_quic_circuit_address_others_dial() -> None:
    require_netlab()
    quic = "/ip4/0.0.0.0/udp/4470/quic-v1"
    with NetLab() as lab:
        relay_ns, relay_ip = lab.public_host(1)
        alice_ns, _ = lab.home_behind_nat(1)
        bob_ns, _ = lab.home_behind_nat(2)
        async with asyncio.timeout(30), AsyncExitStack() as stack:
            relay = await start(stack, relay_ns, 1, quic)
            alice, bob = await start(stack, alice_ns, 2, quic), await start(stack, bob_ns, 3, quic)
            bob.set_stream_handler(ECHO, echo)
            assert await bob.connect(relay.listen_addrs[0]) == relay.peer_id
            while not await bob.reserve_relays():  # noqa: ASYNC110 - identify
                await asyncio.sleep(0.2)
            # The circuit runs over QUIC, so its address names the relay's QUIC port (SPEC
            # §10.15): alice, not connected to the relay yet, reaches bob by it alone.
            relay_addr = f"/ip4/{relay_ip}/udp/4470/quic-v1/p2p/{relay.peer_id}"
            circuit = f"{relay_addr}/p2p-circuit/p2p/{bob.peer_id}"
            assert bob.listen_addrs[0] == circuit
            assert relay.peer_id not in alice.connected_peers()
            assert await alice.connect(circuit) == bob.peer_id
            assert alice.peer_paths()[bob.peer_id] == [relay.peer_id]
            async with await alice.open_stream(bob.peer_id, ECHO) as stream:
                await stream.write_frames([b"over quic", b"through the relay"])
                got = [await stream.read_frame() for _ in range(2)]
                assert got == [b"over quic", b"through the relay"]
