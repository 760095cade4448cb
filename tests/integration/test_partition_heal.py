"""A partition between two homes: the sender gives up the dead connection once a batch goes
unanswered, and delivers over a fresh one after the heal (SPEC §11.5.2), with real nodes in
network namespaces and nftables dropping their packets."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.tools.simulate.faults import PARTITION_TABLE, partition_rules
from tests.integration.netlab import NetLab, require_netlab, start_node

from .conftest import collect, wait_until

pytestmark = pytest.mark.integration


async def test_an_unanswered_batch_drops_the_dead_connection_and_the_heal_delivers(
    tmp_path: Path,
) -> None:
    require_netlab()
    with NetLab() as lab:
        alice_ns, alice_ip = lab.public_host(1)
        bob_ns, bob_ip = lab.public_host(2)
        async with asyncio.timeout(90), AsyncExitStack() as stack:
            bob = await start_node(stack, bob_ns, tmp_path / "bob")
            # The ack bound is the wait this test is about: 2 s, not the default 10 s of idle
            # time (a slow ack on a loaded machine only costs a retry, delivered once).
            alice = await start_node(
                stack, alice_ns, tmp_path / "alice", bob.listen_addrs[0], ack_timeout_ms=2_000
            )
            room = await alice.open_direct(bob.user_id)
            events = bob.events()
            await alice.send(room, b"before the partition")
            (first,) = await collect(events, MessageReceived, 1)
            assert bob.peer_id in alice.connected_peers()
            lab.nft(alice_ns, partition_rules([bob_ip]))
            lab.nft(bob_ns, partition_rules([alice_ip]))
            await alice.send(room, b"during the partition")
            # TCP alone would keep the connection for many minutes; its unanswered batch ends it.
            await wait_until(lambda: bob.peer_id not in alice.connected_peers(), poll_s=0.1)
            for ns in (alice_ns, bob_ns):
                lab.nft(ns, f"delete table inet {PARTITION_TABLE}\n")
            (second,) = await collect(events, MessageReceived, 1)
            bodies = [first.envelope.body, second.envelope.body]
            assert bodies == [b"before the partition", b"during the partition"]
