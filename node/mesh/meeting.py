"""What meeting a peer on a new connection does (SPEC §13.3): the hello, then what a new peer
makes worth doing: deliveries that waited for it are revived (at once if its record is held,
else once the hello told one), on our first peer (mDNS, or one
that dialled us) our home record is published a little later, once the DHT has a member. (The
levels the hello tells go to `PeerLevels`, which keeps what the peer told before until then,
SPEC §20.7.1.)

State: none of its own (`HomeRecords.published` says whether the record went out).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Final

from hearthmesh.node.delivery.outbox import OutboxWorker
from hearthmesh.node.identity.home_records import HomeRecords
from hearthmesh.node.mesh.hello import HelloService
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.supervisor import Supervisor

__all__ = ["FIRST_PUBLISH_DELAY_S", "Meeting"]

FIRST_PUBLISH_DELAY_S: Final = (10.0, 30.0)
"""Seconds after a first peer that did not come by `connect` before we publish our record."""


class Meeting:
    """Meets each peer once per connection (called by `Greetings`)."""

    def __init__(
        self,
        *,
        hello: HelloService,
        outbox: OutboxWorker,
        host: P2PHost,
        records: HomeRecords,
        supervisor: Supervisor,
    ) -> None:
        self._hello = hello
        self._outbox = outbox
        self._host = host
        self._records = records
        self._supervisor = supervisor

    async def meet(self, peer_id: str) -> None:
        # A home we were waiting for may have come back: one whose record we hold goes at
        # once, not after its hello (5-30 s at a 50-home group's formation, SPEC §20.6);
        # one the hello tells a record of, after it.
        self._outbox.revive(peer_id)
        await self._hello.hello(peer_id)
        self._outbox.revive(peer_id)
        if not self._records.published and self._host.connected_peers() == [peer_id]:
            # Later and spread out, so a burst of new peers is not a burst of DHT puts.
            self._supervisor.spawn(self._publish_after(FIRST_PUBLISH_DELAY_S), "publish-home")

    async def _publish_after(self, delay_s: tuple[float, float]) -> None:
        await asyncio.sleep(secrets.SystemRandom().uniform(*delay_s))
        if not self._records.published:
            await self._records.publish()
