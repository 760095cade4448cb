"""Our own recent sends in hand, as our homes show them, for the receipts that name them.

A RECEIPT that reaches this home names our user's messages, nearly always ones this home sent
moments before. Its refusal and its credit (node/rooms/receipt_credit.py) read each named
message, and decoding each stored envelope (and its stored plaintext) was the largest part of
a receipt's staging, which since receipts ride behind the next commit (SPEC §16.3.3) lands on
our next send (MEASUREMENTS §3.3). The store is still read for every named id, so whether it is
held, recalled or purged is decided exactly as before; only the decode of an envelope held here
with the same stored bytes is spared (`Store.get_events`). So a stale entry costs nothing but
memory: it is never taken for what the store no longer holds.

State owned here: the newest `IN_HAND_KEPT` (and `IN_HAND_BYTES`) receiptable envelopes our
sends committed, oldest first. `Outgoing` adds each once its commit is durable, a recall (ours
or our other device's) drops its target, and the `Inbox` reads them, all on the event loop's
thread.
"""

from __future__ import annotations

from hearthmesh.node.delivery.envelopes_in_hand import EnvelopesInHand
from hearthmesh.protocol.envelope import Envelope, MessageId
from hearthmesh.protocol.receipts import is_receiptable

__all__ = ["SentInHand"]


class SentInHand(EnvelopesInHand):
    """The envelopes of our newest sends that receipts may name, as our homes show them."""

    def sent(self, envelope: Envelope) -> None:
        """Our send of `envelope` (as our homes show it) is committed: keep it if a receipt
        may name it (SPEC §16.2)."""
        if is_receiptable(envelope):
            self.keep(envelope)

    def recalled(self, message_id: MessageId) -> None:
        """`message_id` was recalled: its body is purged here, so it is not kept in memory."""
        self.drop(message_id)
