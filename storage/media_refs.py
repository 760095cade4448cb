"""Which rooms reference a media blob: the index a node checks before serving one (SPEC §25.3).

Written in the append transaction of every MESSAGE that carries a media reference, however it
arrived (sent here, delivered, synced, gossiped), so "may this peer see the blob?" is a prefix
scan on the digest plus the member lists of those few rooms, never a scan of history.
"""

from __future__ import annotations

from hearthmesh.protocol.content import media_ref_of
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.identity import UserId

from .api import MediaReference
from .keys import ID_BYTES, Table, media_ref_key, pack_u64, prefix_end, unpack_u64
from .kv import KvTxn

__all__ = ["media_references_txn", "note_media_txn"]


def note_media_txn(txn: KvTxn, envelope: Envelope) -> None:
    """Index the blob `envelope` references, if any (a no-op for every other event)."""
    media = media_ref_of(envelope)
    if media is not None:
        key = media_ref_key(media.digest, envelope.room, envelope.sender_user)
        txn.put(Table.MEDIA_REFS, key, pack_u64(media.size) + media.content_type.encode())


def media_references_txn(txn: KvTxn, digest: bytes) -> list[MediaReference]:
    """Every (room, sender, declared size and content type) that references `digest`."""
    found = []
    for key, value in txn.scan(Table.MEDIA_REFS, digest, prefix_end(digest)):
        found.append(
            MediaReference(
                room=RoomId(key[ID_BYTES : 2 * ID_BYTES]),
                sender=UserId(key[2 * ID_BYTES :]),
                size=unpack_u64(value[:8]),
                content_type=value[8:].decode(errors="replace"),
            )
        )
    return found
