"""Our own recent sends in hand, as our homes show them, for the receipts that name them.

A RECEIPT that reaches this home names our user's messages, nearly always ones this home sent
moments before. Its refusal and its credit (node/rooms/receipt_credit.py) read each named
message, and decoding each stored envelope (and its stored plaintext) was the largest part of
a receipt's staging, which since receipts ride behind the next commit (SPEC §16.3.3) lands on
our next send (MEASUREMENTS §3.3). The store is still read for every named id, so whether it is
held, recalled or purged is decided exactly as before; only the decode of an envelope held here
with the same stored bytes is spared (`Store.get_events`). So a stale entry costs nothing but
memory: it is never taken for what the store no longer holds.

State owned here: the newest SENT_KEPT (and SENT_BYTES) receiptable envelopes our sends
committed, oldest first. `Outgoing` adds each once its commit is durable, a recall (ours or
our other device's) drops its target, and the `Inbox` reads them, all on the event loop's
thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

from hearthmesh.protocol.envelope import Envelope, MessageId
from hearthmesh.protocol.receipts import is_receiptable

__all__ = ["SENT_BYTES", "SENT_KEPT", "SentInHand"]

SENT_KEPT: Final = 2048
"""Our sends kept in hand at most (a receipt usually names what was sent seconds before)..."""
SENT_BYTES: Final = 4 * 1024 * 1024
"""...and their bytes (wire and shown body) at most: 64 KB messages keep fewer."""


class SentInHand:
    """The envelopes of our newest sends that receipts may name, as our homes show them."""

    def __init__(self, *, kept: int = SENT_KEPT, max_bytes: int = SENT_BYTES) -> None:
        self._kept = kept
        self._max_bytes = max_bytes
        self._envelopes: OrderedDict[bytes, Envelope] = OrderedDict()
        self.size_bytes = 0
        """Bytes of the envelopes held (wire and shown body)."""

    @property
    def envelopes(self) -> Mapping[bytes, Envelope]:
        """By message id, oldest first; read it, never change it."""
        return self._envelopes

    def sent(self, envelope: Envelope) -> None:
        """Our send of `envelope` (as our homes show it) is committed: keep it if a receipt
        may name it (SPEC §16.2)."""
        if not is_receiptable(envelope) or envelope.message_id in self._envelopes:
            return
        self._envelopes[envelope.message_id] = envelope
        self.size_bytes += _size(envelope)
        while len(self._envelopes) > self._kept or self.size_bytes > self._max_bytes:
            _, oldest = self._envelopes.popitem(last=False)
            self.size_bytes -= _size(oldest)

    def recalled(self, message_id: MessageId) -> None:
        """`message_id` was recalled: its body is purged here, so it is not kept in memory."""
        dropped = self._envelopes.pop(message_id, None)
        if dropped is not None:
            self.size_bytes -= _size(dropped)


def _size(envelope: Envelope) -> int:
    return len(envelope.wire) + len(envelope.body)
