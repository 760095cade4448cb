"""A user's home moved and took a new device (SPEC §13.5): a node holding the user's old record
receives an envelope from the new device, defers it, walks the DHT for a newer record (the
held one lists no such device) and then takes the envelope. Real libp2p hosts on 127.0.0.1:
bob's node, carol's node (the DHT peer that holds the new record), and alice's two homes as
kits. Alice's new home never says hello to bob (a kit that neither listens nor answers
hellos), so what bob knows of the move he knows from his walk."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.node.node import Node
from hearthmesh.protocol.delivery import BatchItem
from hearthmesh.protocol.home_dht import home_record_key
from hearthmesh.protocol.home_record import encode_home_record, issue_home_record
from hearthmesh.protocol.identity import DeviceId, generate_keypair, issue_certificate
from hearthmesh.tools.hostile.forge import EnvelopeForge, Stranger
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import direct_room_with, node_config, wait_until

pytestmark = pytest.mark.integration


async def test_an_envelope_from_a_device_of_a_moved_home_is_taken_after_a_walk(
    tmp_path: Path,
) -> None:
    async with (
        asyncio.timeout(60),
        Node(node_config(tmp_path / "bob")) as bob,
        Node(node_config(tmp_path / "carol")) as carol,
        HostilePeer() as old_home,
    ):
        alice = old_home.stranger
        room, _ = await direct_room_with(bob, old_home)
        assert await old_home.announce_home(bob.peer_id)  # bob holds her record: this home
        await wait_until(lambda: bob.home_peers(alice.user_id) == (old_home.peer_id,))

        laptop = generate_keypair(old_home.rng)  # her new device, at her new home
        certificate = issue_certificate(
            alice.user, DeviceId(laptop.public), created_ms=old_home.now_ms()
        )
        moved = Stranger(user=alice.user, device=laptop, certificate=certificate)
        async with HostilePeer(forge=EnvelopeForge(moved), listens=False) as new_home:
            record = issue_home_record(
                alice.user,
                issued_ms=old_home.now_ms() + 1,
                homes=(new_home.peer_id,),
                addrs=(),
                devices=(alice.certificate, certificate),
            )
            # in the DHT at carol alone: she has no peer yet, so the put stays with her
            await carol._host.dht_put(home_record_key(alice.user_id), encode_home_record(record))
            await bob.connect(f"{carol.listen_addrs[0]}/p2p/{carol.peer_id}")
            walked = bob.home_lookups

            await new_home.connect(f"{bob.listen_addrs[0]}/p2p/{bob.peer_id}")
            wire = new_home.forge.message(room, "from my laptop", now_ms=new_home.now_ms()).wire
            items = [BatchItem(0, bob.user_id, wire)]
            first = await new_home.deliver(bob.peer_id, items, [moved.certificate_bytes])
            assert [outcome.split(":")[0] for outcome in first] == ["DEFERRED"]
            await wait_until(lambda: bob.home_peers(alice.user_id) == (new_home.peer_id,))
            assert bob.home_lookups == walked + 1  # learnt by one walk, not by a hello
            again = await new_home.deliver(bob.peer_id, items, [moved.certificate_bytes])
            assert again == ["STORED"]
