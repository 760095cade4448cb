"""Meeting peers (SPEC §13.4): a burst of peers that came to us is one delayed DHT put, not one
per peer; the layers around `Meeting` are fakes (its own rule is the subject)."""

from __future__ import annotations

from typing import cast

from hearthmesh.node.delivery.outbox import OutboxWorker
from hearthmesh.node.identity.home_records import HomeRecords
from hearthmesh.node.mesh.hello import HelloService
from hearthmesh.node.mesh.meeting import FIRST_PUBLISH_DELAY_S, Meeting
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.supervisor import Supervisor, Work


class Fakes:
    """Hello, outbox, host, records and supervisor, recording what Meeting asks of them."""

    def __init__(self) -> None:
        self.greeted: list[str] = []
        self.revived: list[str] = []
        self.peers: list[str] = []
        self.published = False
        self.spawned: list[str] = []

    async def hello(self, peer_id: str) -> None:
        self.greeted.append(peer_id)

    def revive(self, peer_id: str) -> None:
        self.revived.append(peer_id)

    def connected_peers(self) -> list[str]:
        return list(self.peers)

    def spawn(self, work: Work, name: str) -> None:
        work.close()  # the delayed put itself waits 10-30 s: only that it was started counts
        self.spawned.append(name)

    def meeting(self) -> Meeting:
        return Meeting(
            hello=cast(HelloService, self),
            outbox=cast(OutboxWorker, self),
            host=cast(P2PHost, self),
            records=cast(HomeRecords, self),
            supervisor=cast(Supervisor, self),
        )


async def test_a_burst_of_peers_that_came_to_us_is_one_delayed_publish() -> None:
    fakes = Fakes()
    meeting = fakes.meeting()
    burst = [f"peer-{n}" for n in range(9)]  # a group of nine joins at once
    for peer in burst:
        fakes.peers.append(peer)
        await meeting.meet(peer)
    assert fakes.greeted == burst  # each met once
    # revived at the connection (its record held) and after the hello (a record it told)
    assert fakes.revived == [peer for peer in burst for _ in range(2)]
    assert fakes.spawned == ["publish-home"]
    assert FIRST_PUBLISH_DELAY_S == (10.0, 30.0)


async def test_once_published_a_new_first_peer_publishes_nothing() -> None:
    fakes = Fakes()
    fakes.published = True
    fakes.peers = ["peer-0"]
    await fakes.meeting().meet("peer-0")
    assert fakes.greeted == ["peer-0"] and fakes.spawned == []
