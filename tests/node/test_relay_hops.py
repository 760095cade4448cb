"""Hand-offs to relays go as one hop per relay for many recipients (SPEC §11.2.3, §11.7)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from hearthmesh.node.delivery.peer_link import DeliveryFailed
from hearthmesh.node.delivery.relay_hops import HandOff, RelayHops
from hearthmesh.protocol.delivery import Ack, AckStatus, BatchItem, DeliveryResult
from hearthmesh.protocol.envelope import MessageId
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.outbox import BATCH_ENTRIES

CERT_A, CERT_B = b"certificate a", b"certificate b"


class _Relays:
    """Relays that take a batch (or refuse, when listed in `down`), recording each."""

    def __init__(self, *names: str) -> None:
        self.names = list(names)
        self.down: set[str] = set()
        self.batches: list[tuple[str, list[bytes], list[BatchItem]]] = []

    async def choose(self, homes: tuple[str, ...]) -> list[str]:
        return [name for name in self.names if name not in homes]

    async def deliver(self, relay: str, certificates: list[bytes], items: list[BatchItem]) -> Ack:
        await asyncio.sleep(0)  # a round trip: hand-offs made meanwhile wait for the next hop
        if relay in self.down:
            raise DeliveryFailed(f"{relay} is down")
        self.batches.append((relay, certificates, items))
        results = tuple(
            DeliveryResult(message_id=MessageId(item.wire[:32]), status=AckStatus.RELAYED)
            for item in items
        )
        return Ack(batch_id=1, node_key=b"", results=results, signature=b"")


def _hand_off(n: int, certificate: bytes, homes: tuple[str, ...] = ()) -> HandOff:
    """Member n's batch of one envelope, sent by the device `certificate` names."""
    recipient = UserId(n.to_bytes(32, "big"))
    return HandOff(recipient, homes, [certificate], [BatchItem(0, recipient, b"envelope")])


@contextlib.asynccontextmanager
async def _running(relays: _Relays) -> AsyncIterator[RelayHops]:
    """RelayHops whose hops run in a task group that ends once they all did."""
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:

        def spawn(work: Coroutine[Any, Any, None]) -> None:
            group.create_task(work)

        yield RelayHops(deliver=relays.deliver, choose=relays.choose, spawn=spawn)


async def _hop(relays: _Relays, hand_offs: list[HandOff]) -> RelayHops:
    async with _running(relays) as hops:
        for hand_off in hand_offs:  # as the outbox's batches for absent members come out
            hops.hand_off(hand_off)
    return hops


async def test_a_message_to_many_absent_members_is_one_hop_per_relay_not_one_per_member() -> None:
    relays = _Relays("relay")
    members = 3 * BATCH_ENTRIES // 2
    hops = await _hop(relays, [_hand_off(n, CERT_A if n % 2 else CERT_B) for n in range(members)])
    assert [len(items) for _, _, items in relays.batches] == [
        BATCH_ENTRIES,
        members - BATCH_ENTRIES,
    ]
    assert (hops.hops, hops.items) == (2, members)
    for _, certificates, items in relays.batches:  # each certificate once, items point at it
        assert sorted(certificates) == [CERT_A, CERT_B]
        sent = [item.recipient for item in items]
        assert all(
            certificates[item.certificate] == (CERT_A if item.recipient[-1] % 2 else CERT_B)
            for item in items
        )
        assert sent == sorted(sent)  # in the order they were handed off
    carried = [item.recipient for _, _, items in relays.batches for item in items]
    assert carried == [UserId(n.to_bytes(32, "big")) for n in range(members)]


async def test_a_failed_relay_passes_the_hop_on_and_a_home_is_never_its_own_relay() -> None:
    relays = _Relays("home", "dead", "relay")
    relays.down.add("dead")
    await _hop(relays, [_hand_off(1, CERT_A, homes=("home",)), _hand_off(2, CERT_A, ("home",))])
    assert [(relay, len(items)) for relay, _, items in relays.batches] == [("relay", 2)]


async def test_hand_offs_made_during_a_hop_go_together_in_the_next() -> None:
    relays = _Relays("relay")
    async with _running(relays) as hops:
        hops.hand_off(_hand_off(0, CERT_A))
        await asyncio.sleep(0)  # the first hop is under way
        for n in range(1, 6):
            hops.hand_off(_hand_off(n, CERT_A))
    assert [len(items) for _, _, items in relays.batches] == [1, 5]
