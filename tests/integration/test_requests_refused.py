"""Every stream protocol a node serves, asked by a stranger with bytes that are no request:
refused with its specific outcome and charged as a whole frame (SPEC §11.6.1, §11.8.2)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from hearthmesh.protocol.capabilities import CAPS_PROTOCOL
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL
from hearthmesh.protocol.e2ee.claim import KEYS_PROTOCOL
from hearthmesh.protocol.e2ee.forward import KEY_FORWARD_PROTOCOL
from hearthmesh.protocol.e2ee.key_request import KEY_REQUEST_PROTOCOL
from hearthmesh.protocol.fetch import FETCH_PROTOCOL
from hearthmesh.protocol.gossip import SIGNALS_PROTOCOL
from hearthmesh.protocol.hello import HELLO_LEVELS_PROTOCOL, HELLO_PROTOCOL
from hearthmesh.protocol.history_share import HISTORY_PROTOCOL
from hearthmesh.protocol.invites import JOIN_PROTOCOL
from hearthmesh.protocol.linking import LINK_PROTOCOL
from hearthmesh.protocol.media import MEDIA_PROTOCOL
from hearthmesh.protocol.standing import StandingPolicy
from hearthmesh.protocol.sync import SYNC_PROTOCOL
from hearthmesh.protocol.verification import VERIFY_PROTOCOL
from hearthmesh.tools.hostile.peer import HostilePeer

from .conftest import NodeFactory, wait_until

pytestmark = pytest.mark.integration

REFUSED: dict[str, str] = {
    DELIVER_PROTOCOL: "ERROR:MALFORMED",
    FETCH_PROTOCOL: "ERROR:MALFORMED",
    MEDIA_PROTOCOL: "ERROR:MALFORMED",
    KEYS_PROTOCOL: "ERROR:MALFORMED",
    KEY_REQUEST_PROTOCOL: "ERROR:MALFORMED",
    JOIN_PROTOCOL: "ERROR:MALFORMED",
    HISTORY_PROTOCOL: "ERROR:MALFORMED",
    LINK_PROTOCOL: "ERROR:MALFORMED",
    # who may ask is checked before what is asked: a stranger learns nothing more
    SYNC_PROTOCOL: "ERROR:NOT_AUTHORIZED",
    KEY_FORWARD_PROTOCOL: "ERROR:NOT_AUTHORIZED",
    # no ERROR frame in these protocols: the stream just ends
    HELLO_PROTOCOL: "closed",
    HELLO_LEVELS_PROTOCOL: "closed",
    CAPS_PROTOCOL: "closed",
    SIGNALS_PROTOCOL: "closed",
    VERIFY_PROTOCOL: "closed",
}
"""What each protocol answers a frame that is no request (one that is not CBOR)."""


async def test_every_served_protocol_refuses_bytes_that_are_no_request_and_charges_them(
    make_node: NodeFactory,
) -> None:
    """One stranger, one frame of garbage per protocol bob serves (the list is checked against
    what his host serves, so a protocol added later must join it): each is refused as
    `REFUSED` says and costs the stranger a whole frame's points, and bob still answers."""
    standing = StandingPolicy(forgive_ms=3_600_000, ban_points=10_000)  # neither forgive nor ban
    async with (
        asyncio.timeout(120),
        make_node("bob", standing=standing) as bob,
        HostilePeer() as kit,
    ):
        served = {p for p in bob._host._handlers if p.startswith("/hearthmesh/")}
        assert served == set(REFUSED)
        peer = await kit.connect(bob.listen_addrs[0])
        seen: dict[str, tuple[str, int]] = {}
        for protocol in REFUSED:
            before = bob.peer_points(kit.peer_id)
            reply = await kit.request(peer, protocol, b"\xff\x00 no request")
            with contextlib.suppress(TimeoutError):  # a charge not made shows in `seen`
                async with asyncio.timeout(5):
                    await wait_until(lambda: bob.peer_points(kit.peer_id) > before)  # noqa: B023
            seen[protocol] = (reply.summary, bob.peer_points(kit.peer_id) - before)
        frame = standing.frame_points
        assert seen == {protocol: (summary, frame) for protocol, summary in REFUSED.items()}
        assert (await kit.announce_home(peer)).frame is not None  # and bob still answers
