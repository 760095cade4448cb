"""What cases of several levels use: a receipt of ours, a newcomer.
State: none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.protocol.identity import DeviceId, device_id_text, user_id_text
from hearthmesh.protocol.receipts import (
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from hearthmesh.tools.hostile.peer import DeliveryTrap, HostilePeer

from ..session import Session

__all__ = ["greet_node", "newcomer_home", "read_of_ours", "wait_record_taken"]


def read_of_ours(s: Session) -> bytes:
    """A READ receipt body naming the first message we delivered."""
    return encode_receipt(
        Receipt(status=ReceiptStatus.READ, message_ids=(s.delivered[0].message_id,))
    )


@contextlib.asynccontextmanager
async def newcomer_home(
    s: Session, *, drop: int = 0, greet: bool = True
) -> AsyncIterator[tuple[HostilePeer, DeliveryTrap]]:
    """Another stranger with a home of its own, known to the node by its hello (taken, as
    `wait_record_taken` sees it, when an API was given; unless not `greet`: then by the
    `greet_node` the case makes) and with no history there: what the node delivers to it
    lands in the trap (the first `drop` batches dropped unacked). Drawn from the run's rng,
    so a seed replays it."""
    async with s.kit.rotated(new_user=True, seed=s.kit.rng(32)) as newcomer:
        await newcomer.connect(s.address)
        trap = newcomer.catch_deliveries(AckStatus.STORED, drop=drop)
        if greet:
            await greet_node(newcomer, s.peer_id)
            await wait_record_taken(s, newcomer)
        yield newcomer, trap


async def greet_node(home: HostilePeer, peer: str) -> None:
    """`home`'s hello with its user's record (SPEC §13.3). Raises LocalProtocolError unanswered."""
    reply = await home.announce_home(peer)
    if reply.frame is None:
        raise LocalProtocolError(f"the newcomer's hello: {reply.outcome}")


async def wait_record_taken(s: Session, home: HostilePeer) -> None:
    """Until the node's user is shown `home`'s device among its user's listed keys (`GET
    /v1/users/{id}/trust`, SPEC §29.5): the node took the record `home`'s hello carried. A
    node may answer a hello before it takes the hello's records (SPEC §13.3 orders nothing;
    ours does), and a case that then has the node's user reach that user at once was cut
    short: a verification's start refused 404 `NOT_FOUND` (no home of that user) in 6 of 48
    runs of binding_checked's broken-node test beside a `make test`. Waits `s.wait_s` at
    most, and not at all without an API."""
    if s.api is None:
        return
    user = user_id_text(home.user_id)
    device = device_id_text(DeviceId(home.stranger.device.public))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(s.wait_s):
            while True:
                trust = await s.api.call("GET", f"/v1/users/{user}/trust")
                if any(d["device_id"] == device for d in trust["devices"]):
                    return
                await asyncio.sleep(0.02)  # a record taken is told to no one: poll the API
