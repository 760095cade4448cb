"""The newest envelopes a service keeps in memory by message id, bounded by count and by bytes,
so what names them next (an ack, a receipt, a receipt's frame) need not read and decode them
back from the store: our own recent sends (`SentInHand`) and the messages our clients were
shown (`ReceiptService`). A peer's large messages keep fewer, never more than `max_bytes`.

State owned here: the envelopes, oldest first, and their bytes; each instance is its owner's
and is used on the event loop's thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

from hearthmesh.protocol.envelope import Envelope, MessageId

__all__ = ["IN_HAND_BYTES", "IN_HAND_KEPT", "EnvelopesInHand"]

IN_HAND_KEPT: Final = 2048
"""Envelopes kept at most (what names them usually comes seconds after)..."""
IN_HAND_BYTES: Final = 4 * 1024 * 1024
"""...and their bytes (wire and shown body) at most: 64 KB messages keep fewer."""


class EnvelopesInHand:
    """The newest envelopes kept, oldest dropped first past either bound."""

    def __init__(self, *, kept: int = IN_HAND_KEPT, max_bytes: int = IN_HAND_BYTES) -> None:
        self._kept = kept
        self._max_bytes = max_bytes
        self._envelopes: OrderedDict[bytes, Envelope] = OrderedDict()
        self.size_bytes = 0
        """Bytes of the envelopes held (wire and shown body)."""

    @property
    def envelopes(self) -> Mapping[bytes, Envelope]:
        """By message id, oldest first; read it, never change it."""
        return self._envelopes

    def keep(self, envelope: Envelope) -> None:
        """Keep `envelope` as the newest (once, however often it is kept)."""
        self.drop(envelope.message_id)
        self._envelopes[envelope.message_id] = envelope
        self.size_bytes += _size(envelope)
        while len(self._envelopes) > self._kept or self.size_bytes > self._max_bytes:
            _, oldest = self._envelopes.popitem(last=False)
            self.size_bytes -= _size(oldest)

    def drop(self, message_id: MessageId) -> None:
        """No longer keep `message_id` (recalled: its body is purged)."""
        dropped = self._envelopes.pop(message_id, None)
        if dropped is not None:
            self.size_bytes -= _size(dropped)


def _size(envelope: Envelope) -> int:
    return len(envelope.wire) + len(envelope.body)
