"""What a hostile peer can make a home share ahead (SPEC §27.10.3), over the wire: a member
that churns its home record, each time a new device in place of the last, costs the home its
bucket's rounds (each a look at the room's members, its turn of seals and the devices lacking
the key; the first after a send rotates the session and shares it) and then waits on the
refill, not a round each (7 rounds for 6 churns without the bucket); a stranger's record makes
no room due; the state kept is one watched room. A real home on 127.0.0.1; the hostile kit's
hellos carry the records.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.node import Node
from hearthmesh.protocol.e2ee import AheadPolicy
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.hello import HELLO_PROTOCOL, Hello, encode_hello
from hearthmesh.protocol.home_record import encode_home_record, issue_home_record
from hearthmesh.protocol.identity import DeviceId, generate_keypair, issue_certificate
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import node_config, wait_until
from .test_moved_home import _a_bundle

pytestmark = pytest.mark.integration

CHURNED = AheadPolicy(quiet_ms=100, max_wait_ms=1_000, spread_ms=0, burst=2, refill_ms=600_000)
"""Quick to settle, and a bucket the test never sees refilled: 2 rounds, then none."""
ROUNDS = 6


async def _new_device(kit: HostilePeer, alice: Node, issued_ms: int) -> DeviceId:
    """The kit's user's record, at `issued_ms`, listing a new device (with a bundle) alone, in
    a hello to alice; returns the device once alice holds the record."""
    member = kit.stranger
    device = generate_keypair(kit.rng)
    certificate = issue_certificate(member.user, DeviceId(device.public), created_ms=issued_ms)
    record = issue_home_record(
        member.user,
        issued_ms=issued_ms,
        homes=(kit.peer_id,),
        addrs=tuple(kit.host.listen_addrs),
        devices=(certificate,),
        bundles=_a_bundle(device),
    )
    hello = Hello(records=(encode_home_record(record),), sent_ms=kit.now_ms())
    assert (await kit.request(alice.peer_id, HELLO_PROTOCOL, encode_hello(hello))).frame
    directory = alice._services.directory
    await wait_until(lambda: directory.devices(member.user_id) == frozenset({certificate.device}))
    return certificate.device


def _waits(alice: Node, room: RoomId) -> bool:
    """No change of `room` waits to go ahead soon: shared, or held by the bucket."""
    due = alice.key_ahead.due_ms(room)
    return due is None or due - SystemClock().now_ms() > 60_000


async def test_a_member_churning_its_devices_costs_the_bucket_not_a_share_each(
    tmp_path: Path,
) -> None:
    async with (
        asyncio.timeout(60),
        Node(node_config(tmp_path / "alice", key_ahead=CHURNED)) as alice,
        HostilePeer() as kit,
    ):
        await kit.connect(f"{alice.listen_addrs[0]}/p2p/{alice.peer_id}")
        issued_ms = kit.now_ms()
        await _new_device(kit, alice, issued_ms)
        room = await alice.create_group("churned", [kit.user_id])
        await wait_until(lambda: alice.key_ahead.shares >= 1)  # its device has our key
        await alice.send(room, b"sent")  # the session encrypted: a device gone rotates it
        for n in range(1, ROUNDS + 1):
            await _new_device(kit, alice, issued_ms + n)  # the last device gone, a new one
            await wait_until(lambda: _waits(alice, room))
        assert alice.key_ahead.rounds == CHURNED.burst  # the formation's and one churn's
        assert alice.key_ahead.shares <= CHURNED.burst
        assert alice.key_ahead.watched == 1
        assert alice.failure is None


async def test_a_strangers_record_makes_no_room_due(tmp_path: Path) -> None:
    async with (
        asyncio.timeout(60),
        Node(node_config(tmp_path / "alice", key_ahead=CHURNED)) as alice,
        HostilePeer() as member,
        HostilePeer() as stranger,
    ):
        for kit in (member, stranger):
            await kit.connect(f"{alice.listen_addrs[0]}/p2p/{alice.peer_id}")
        await _new_device(member, alice, member.now_ms())
        room = await alice.create_group("watched", [member.user_id])
        await wait_until(lambda: alice.key_ahead.shares >= 1 and _waits(alice, room))
        rounds = alice.key_ahead.rounds
        await _new_device(stranger, alice, stranger.now_ms())  # kept: alice holds it now
        assert alice.key_ahead.due_ms(room) is None  # made nothing due, as it was kept
        assert alice.key_ahead.rounds == rounds
