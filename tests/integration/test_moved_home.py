"""A user's home moved and took a new device (SPEC §13.5): a node holding the user's old record
receives an envelope from the new device (it defers it) or a key request from the new home,
walks the DHT for a newer record (the held one lists no such device, names no such home) and
then takes the envelope, or answers the request. Real libp2p hosts on 127.0.0.1: bob's node,
carol's node (the DHT peer that holds the new record), and alice's two homes as kits. Alice's
new home never says hello to bob (a kit that neither listens nor answers hellos), so what bob
knows of the move he knows from his walk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import vodozemac

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.node import Node
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.delivery import BatchItem
from hearthmesh.protocol.e2ee import KeyBundle
from hearthmesh.protocol.envelope import RoomId, decode_envelope
from hearthmesh.protocol.home_dht import home_record_key
from hearthmesh.protocol.home_record import encode_home_record, issue_home_record
from hearthmesh.protocol.identity import DeviceId, KeyPair, generate_keypair, issue_certificate
from hearthmesh.tools.hostile.forge import EnvelopeForge, Stranger
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import direct_room_with, node_config, wait_until

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Moved:
    """Alice's new device at her new home (a kit), and her old home."""

    device: Stranger
    new_home: HostilePeer
    old_home: HostilePeer
    room: RoomId


@asynccontextmanager
async def moved_home(
    bob: Node, carol: Node, bundle_of: Callable[[KeyPair], tuple[KeyBundle, ...]]
) -> AsyncIterator[Moved]:
    """bob holds alice's old record (her old home's hello) and a direct room with her; her
    new record (her old home and a new one, with a new device there; `bundle_of(new device
    key)` its bundles) is in the DHT at carol alone; bob knows carol, and alice's new home is
    connected to bob."""
    async with HostilePeer() as old_home:
        alice = old_home.stranger
        room, _ = await direct_room_with(bob, old_home)
        assert await old_home.announce_home(bob.peer_id)  # bob holds her record: this home
        await wait_until(lambda: bob.home_peers(alice.user_id) == (old_home.peer_id,))
        laptop = generate_keypair(old_home.rng)  # her new device, at her new home
        certificate = issue_certificate(
            alice.user, DeviceId(laptop.public), created_ms=old_home.now_ms()
        )
        device = Stranger(user=alice.user, device=laptop, certificate=certificate)
        async with HostilePeer(forge=EnvelopeForge(device), listens=False) as new_home:
            record = issue_home_record(
                alice.user,
                issued_ms=old_home.now_ms() + 1,
                homes=(old_home.peer_id, new_home.peer_id),  # a home, its device: one place
                addrs=(),
                devices=(alice.certificate, certificate),
                bundles=bundle_of(laptop),
            )
            # in the DHT at carol alone: she has no peer yet, so the put stays with her
            await carol._host.dht_put(home_record_key(alice.user_id), encode_home_record(record))
            await bob.connect(f"{carol.listen_addrs[0]}/p2p/{carol.peer_id}")
            await new_home.connect(f"{bob.listen_addrs[0]}/p2p/{bob.peer_id}")
            yield Moved(device=device, new_home=new_home, old_home=old_home, room=room)


def _no_bundles(_device: KeyPair) -> tuple[KeyBundle, ...]:
    return ()


def _a_bundle(device: KeyPair) -> tuple[KeyBundle, ...]:
    account = vodozemac.Account()
    account.generate_fallback_key()  # type: ignore[attr-defined]  # missing in the stub
    fallback = next(iter(account.fallback_key.values()))  # type: ignore[attr-defined]
    bundle = e2ee.issue_key_bundle(
        device,
        identity_key=bytes(account.curve25519_key.to_bytes()),
        fallback_key=bytes(fallback.to_bytes()),
        issued_ms=SystemClock().now_ms(),
    )
    return (bundle,)


async def test_an_envelope_from_a_device_of_a_moved_home_is_taken_after_a_walk(
    tmp_path: Path,
) -> None:
    async with (
        asyncio.timeout(60),
        Node(node_config(tmp_path / "bob")) as bob,
        Node(node_config(tmp_path / "carol")) as carol,
        moved_home(bob, carol, _no_bundles) as moved,
    ):
        alice, new_home = moved.device, moved.new_home
        walked = bob.home_lookups
        wire = new_home.forge.message(moved.room, "from my laptop", now_ms=new_home.now_ms()).wire
        items = [BatchItem(0, bob.user_id, wire)]
        first = await new_home.deliver(bob.peer_id, items, [alice.certificate_bytes])
        assert [outcome.split(":")[0] for outcome in first] == ["DEFERRED"]
        await wait_until(lambda: new_home.peer_id in bob.home_peers(alice.user_id))
        assert bob.home_lookups == walked + 1  # learnt by one walk, not by a hello
        again = await new_home.deliver(bob.peer_id, items, [alice.certificate_bytes])
        assert again == ["STORED"]


async def test_a_key_request_from_a_moved_home_is_answered_after_a_walk(tmp_path: Path) -> None:
    async with (
        asyncio.timeout(60),
        Node(node_config(tmp_path / "bob")) as bob,
        Node(node_config(tmp_path / "carol")) as carol,
        moved_home(bob, carol, _a_bundle) as moved,
    ):
        sent = await bob.send(moved.room, b"for alice")
        session = e2ee.decode_encrypted_body(decode_envelope(sent.wire).body).session_id
        walked = bob.home_lookups
        request = e2ee.KeyRequest(user=moved.device.user_id, sessions=((moved.room, session),))
        reply = await moved.new_home.request(
            bob.peer_id, e2ee.KEY_REQUEST_PROTOCOL, e2ee.encode_key_request(request)
        )
        assert reply.frame is not None, reply.outcome
        answer = e2ee.decode_forward_answer(reply.frame)
        assert isinstance(answer, e2ee.ForwardAnswer) and answer.messages  # the key, to her
        assert moved.new_home.peer_id in bob.home_peers(moved.device.user_id)
        assert bob.home_lookups == walked + 1
