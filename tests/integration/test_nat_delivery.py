"""Guaranteed delivery between two homes behind their own NATs, through a public node's circuit
relay (SPEC §10.7, §11), with real nodes in network namespaces."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from hearthmesh.node.events import MessageReceived
from tests.integration.netlab import NetLab, require_netlab
from tests.integration.netlab import start_node as start

from .conftest import acks_of, collect, wait_until

pytestmark = pytest.mark.integration


async def test_two_natted_homes_chat_through_a_public_relay_and_lose_nothing(
    tmp_path: Path,
) -> None:
    require_netlab()
    with NetLab() as lab:
        relay_ns, _ = lab.public_host(1)
        # Routers that pick a random port per connection: hole punching cannot make the
        # relayed connection under test direct (under load it sometimes did, SPEC §10.9).
        alice_ns, _ = lab.home_behind_nat(1, random_ports=True)
        bob_ns, _ = lab.home_behind_nat(2, random_ports=True)
        async with asyncio.timeout(30), AsyncExitStack() as stack:
            relay = await start(stack, relay_ns, tmp_path / "relay")
            # No WebRTC: it would upgrade the relayed connection under test (SPEC §10.11).
            alice, bob = [
                await start(stack, ns, tmp_path / name, relay.listen_addrs[0], webrtc=False)
                for ns, name in ((alice_ns, "alice"), (bob_ns, "bob"))
            ]
            # Each home learns it is private and reserves on the relay by itself.
            await wait_until(lambda: bob.relays() == [relay.peer_id], poll_s=0.1)
            assert bob.reachability == "private"
            assert any("/p2p-circuit/" in addr for addr in bob.listen_addrs)
            # Bob's record, re-issued with his circuit address, reaches alice through gossip.
            await wait_until(
                lambda: any("/p2p-circuit/" in a for a in alice.home_addresses(bob.user_id)),
                poll_s=0.1,
            )
            room = await alice.open_direct(bob.user_id)
            received = asyncio.create_task(collect(bob.events(), MessageReceived, 20))
            acked = alice.events()
            sent = [await alice.send(room, f"hello {i}".encode()) for i in range(20)]
            assert [e.envelope.message_id for e in await received] == [e.message_id for e in sent]
            assert {e.peer_id for e in await acks_of(acked, sent)} == {bob.peer_id}
            assert alice.peer_paths()[bob.peer_id] == [relay.peer_id]
            assert bob.peer_paths()[alice.peer_id] == [relay.peer_id]
            assert alice.peer_paths()[relay.peer_id] == ["direct"]
