"""Encrypted envelopes opened at a member's home, inside the arrival batch (SPEC §27.5, §27.7).

`Inbox` asks `open` before it appends an encrypted envelope: the answer is the envelope as the
home shows it (`e2ee.opened_view`: content in the clear, wire unchanged) with its plaintext
kept beside it, or the envelope as it came when no room key of its session is here yet (then
it is noted as held). A refusal (another device's session, a failed MAC, a replayed index)
raises, and the envelope is not stored. After a ROOM_KEY envelope is stored, `take_room_key`
takes our share in and opens what waited for that session; what opens late moves to the end
of the arrival log, so the client feed tells it then (SPEC §27.13.5).

State: none (the sessions, plaintexts and held notes are the store's); counts of what failed,
for the node's status. Runs inside store write batches on the event loop.
"""

from __future__ import annotations

import logging
from typing import Final

from hearthmesh.node.e2ee.device_crypto import DeviceCrypto
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.storage.api import Store

__all__ = ["MAX_OPENED_PER_KEY", "RoomOpener"]

log = logging.getLogger(__name__)

MAX_OPENED_PER_KEY: Final = 1000
"""Held envelopes one room key opens in its batch; the rest open as they are read again."""


class RoomOpener:
    """Opens encrypted envelopes for this device (see the module docstring)."""

    def __init__(self, crypto: DeviceCrypto) -> None:
        self._crypto = crypto
        self.refused = 0
        """Encrypted envelopes refused (mismatched session, failed MAC, replayed index)."""
        self.bad_room_keys = 0
        """ROOM_KEY shares for us that did not open or named another party."""

    def open(self, store: Store, envelope: Envelope, *, hold: bool = True) -> Envelope:
        """The envelope as this home shows it; call in the batch that appends it. One with no
        key here yet comes back as it was, noted as held when `hold` (it is being stored).

        Raises:
            RemoteProtocolError: KeyMismatch, Undecryptable, Replayed, MalformedMessage or
                UnsupportedVersion (SPEC §27.6, §27.7): store nothing.
        """
        try:
            opened = self._crypto.open(envelope)
        except RemoteProtocolError:
            self.refused += 1
            raise
        if isinstance(opened, e2ee.Hold):
            if hold:
                store.hold_encrypted(opened.session_id, envelope.message_id, envelope.room)
            return envelope
        return e2ee.opened_view(envelope, opened.content_type, opened.body)

    def take_room_key(self, store: Store, envelope: Envelope) -> tuple[bytes, list[Envelope]]:
        """Take our share of a stored ROOM_KEY in; its session id (b"" when none was taken)
        and the held envelopes it opened, as shown.

        A share that fails is logged and counted, never raised: the envelope is history
        (it carries other devices' shares) and is stored either way.
        """
        try:
            accepted = self._crypto.accept_room_key(envelope)
        except RemoteProtocolError as exc:
            self.bad_room_keys += 1
            log.info("room key %s not taken: %s", envelope.message_id.hex()[:12], exc)
            return b"", []
        if accepted is None:
            return b"", []
        return accepted.session_id, self.open_held(store, accepted.session_id)

    def open_held(self, store: Store, session_id: bytes) -> list[Envelope]:
        """Open what waited for `session_id`, now that its key is here; those opened."""
        opened: list[Envelope] = []
        for message_id, _ in store.held_encrypted(session_id, MAX_OPENED_PER_KEY):
            event = store.get_event(message_id)
            if event is None:
                store.unhold_encrypted(session_id, message_id)
                continue  # purged meanwhile
            try:
                shown = self.open(store, event.envelope)
            except RemoteProtocolError as exc:
                # held still: stored before a key could judge it, it is history now (one the
                # key here starts after is no refusal: `open` holds it, §27.11.2)
                log.info("held %s does not open: %s", message_id.hex()[:12], exc)
                continue
            if shown is not event.envelope:  # (its held note went as it opened) else still held
                opened.append(shown)
        opened.sort(key=lambda e: e.order_key)  # held by message id: into their senders' order
        if opened:  # clients are told of them now, as of messages that just came (§27.13.5)
            store.renumber_arrivals([e.message_id for e in opened])
        return opened
