"""What cases of several levels use: a receipt of ours, a newcomer, the node's key bundle.
State: none.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.delivery import AckStatus, ProtocolErrorFrame
from hearthmesh.protocol.errors import HearthError, LocalProtocolError
from hearthmesh.protocol.receipts import (
    Receipt,
    ReceiptStatus,
    encode_receipt,
)
from hearthmesh.tools.hostile.peer import DeliveryTrap, HostilePeer

from ..session import Session, outcome

__all__ = ["greet_node", "newcomer_home", "node_bundle", "read_of_ours"]


def read_of_ours(s: Session) -> bytes:
    """A READ receipt body naming the first message we delivered."""
    return encode_receipt(
        Receipt(status=ReceiptStatus.READ, message_ids=(s.delivered[0].message_id,))
    )


@contextlib.asynccontextmanager
async def newcomer_home(
    s: Session, *, drop: int = 0, greet: bool = True
) -> AsyncIterator[tuple[HostilePeer, DeliveryTrap]]:
    """Another stranger with a home of its own, known to the node by its hello (unless not
    `greet`: then by the `greet_node` the case makes) and with no history there: what the
    node delivers to it lands in the trap (the first `drop` batches dropped unacked). Drawn
    from the run's rng, so a seed replays it."""
    async with s.kit.rotated(new_user=True, seed=s.kit.rng(32)) as newcomer:
        await newcomer.connect(s.address)
        trap = newcomer.catch_deliveries(AckStatus.STORED, drop=drop)
        if greet:
            await greet_node(newcomer, s.peer_id)
        yield newcomer, trap


async def greet_node(home: HostilePeer, peer: str) -> None:
    """`home`'s hello with its user's record (SPEC §13.3). Raises LocalProtocolError unanswered."""
    reply = await home.announce_home(peer)
    if reply.frame is None:
        raise LocalProtocolError(f"the newcomer's hello: {reply.outcome}")


async def node_bundle(s: Session) -> e2ee.KeyBundle | str:
    """The key bundle of the node's device, claimed (SPEC §27.2.2): what a sender encrypts its
    room keys to over Olm. Else what failed, as an outcome string."""
    if s.device is None:
        return "no-device-in-the-record"
    claimed = await s.ask(
        e2ee.KEYS_PROTOCOL, e2ee.encode_claim_request(s.device), e2ee.decode_claim_answer
    )
    if isinstance(claimed, str | ProtocolErrorFrame):
        return f"claim:{outcome(claimed)}"
    try:
        return e2ee.decode_key_bundle(claimed.bundle)
    except HearthError as exc:
        return f"claim:invalid:{type(exc).__name__}"
