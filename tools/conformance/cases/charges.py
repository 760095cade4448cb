"""The cases that see a hostile input charged (SPEC §11.6.7): points are not on the wire, but a
node's status counts its charges by the protocol they came on, so the suite reads the count
before and after what it sends. Level `core`; each needs the client API. State: none.

A charge reaches the count before the node answers or ends the stream it came on, so the count
read after the kit saw that answer holds every charge of what it sent (a free input's too).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Final

from hearthmesh.node.p2p.dht import KAD_PROTOCOL
from hearthmesh.node.p2p.kad_requests import encode_put_value
from hearthmesh.node.p2p.webrtc import SIGNALING_PROTOCOL
from hearthmesh.protocol.home_dht import home_record_key
from hearthmesh.protocol.home_record import decode_home_record, encode_home_record

from ..session import Session
from .case import Case

__all__ = ["KAD_PUSH_JUDGED", "SIGNALING_OFFER_JUDGED"]

POLL_S: Final = 0.05
"""How often a case reads the node's status while it waits for a charge to be counted."""


async def charged(s: Session, protocol: str) -> int:
    """The node's count of charges on `protocol` (`/v1/node/status`, SPEC §11.6.7)."""
    assert s.api is not None
    status = await s.api.call("GET", "/v1/node/status")
    counts = status.get("standing", {}).get("charged_by_protocol", {})
    return int(counts.get(protocol, 0))


async def _moved(s: Session, protocol: str, before: int) -> str:
    """`+N`: how far the count on `protocol` moved from `before`, read at once (a free input)
    and then, while it has not moved, every POLL_S for `s.wait_s` (a charge on its way)."""
    count = await charged(s, protocol)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(s.wait_s):
            while count == before:
                await asyncio.sleep(POLL_S)
                count = await charged(s, protocol)
    return f"+{count - before}"


async def _kad_push(s: Session) -> str:
    """§13.4.1: our stranger pushes its own record in a kad PUT_VALUE (taken: answered, free),
    then the same record with a signature that is not its user's (refused: the stream ends,
    and the node counts one charge on kad)."""
    kit = s.kit
    key = home_record_key(kit.user_id)
    ours = kit.stranger.home_record(
        peer_ids=(kit.peer_id,), addrs=tuple(kit.host.listen_addrs), now_ms=kit.now_ms()
    )
    forged = encode_home_record(dataclasses.replace(decode_home_record(ours), signature=bytes(64)))
    before = await charged(s, KAD_PROTOCOL)
    valid = await kit.push_kad(s.peer_id, encode_put_value(key, ours))
    valid_moved = await charged(s, KAD_PROTOCOL) - before
    before += valid_moved
    refused = await kit.push_kad(s.peer_id, encode_put_value(key, forged))
    refused_moved = await _moved(s, KAD_PROTOCOL, before)
    return f"VALID:{valid.outcome}:+{valid_moved},FORGED:{refused.outcome}:{refused_moved}"


async def _signaling_offer(s: Session) -> str:
    """§10.11: bytes that are no signaling message where the offer is due end the upgrade,
    and the node counts one charge on the signaling protocol."""
    before = await charged(s, SIGNALING_PROTOCOL)
    garbage = b"\x01\x0f"  # a length of 1, then a byte that is no protobuf field
    reply = await s.kit.request(s.peer_id, SIGNALING_PROTOCOL, garbage, framed=False)
    return f"GARBLED:{reply.outcome}:{await _moved(s, SIGNALING_PROTOCOL, before)}"


KAD_PUSH_JUDGED: Final = Case(
    name="kad_push_judged",
    section="§13.4.1, §11.6.7",
    expected="VALID:answered:+0,FORGED:closed:+1",
    run=_kad_push,
    hostile=True,
    needs_api=True,
)

SIGNALING_OFFER_JUDGED: Final = Case(
    name="signaling_offer_judged",
    section="§10.11, §11.6.7",
    expected="GARBLED:closed:+1",
    run=_signaling_offer,
    hostile=True,
    needs_api=True,
)
