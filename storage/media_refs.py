"""Which rooms reference a media blob: the index a node checks before serving one (SPEC §25.3).

Written in the append transaction of every MESSAGE that carries a media reference, however it
arrived (sent here, delivered, synced, gossiped), so "may this peer see the blob?" is a prefix
scan on the digest plus the member lists of those few rooms, never a scan of history.
"""

from __future__ import annotations

from typing import Final

from hearthmesh.protocol.content import MEDIA_CONTENT_TYPE, media_ref_of
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.identity import UserId

from .api import MediaReference
from .directory import setting_key
from .history import stored_event
from .keys import ID_BYTES, KEY_END, Table, media_ref_key, pack_u64, prefix_end, unpack_u64
from .kv import KvTxn

__all__ = [
    "MEDIA_REFS_FILLED_SETTING",
    "fill_media_refs_txn",
    "media_references_txn",
    "note_media_txn",
]

MEDIA_REFS_FILLED_SETTING: Final = "storage.media_refs_filled"
"""Set once the history written before the index existed has been indexed."""


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


def fill_media_refs_txn(txn: KvTxn) -> int:
    """Index the media references of events stored before the index existed, once per store.

    Returns how many events referencing media were indexed.
    """
    done = setting_key(MEDIA_REFS_FILLED_SETTING)
    if txn.get(Table.SETTINGS, done) is not None:
        return 0
    marker = MEDIA_CONTENT_TYPE.encode()
    media = [  # the content type's bytes sit in the wire: only those events are parsed
        stored_event(key, value).envelope
        for key, value in txn.scan(Table.HISTORY, b"", KEY_END)
        if marker in value
    ]
    indexed = 0
    for envelope in media:  # written after the scan: never mutate under a cursor
        if media_ref_of(envelope) is not None:
            note_media_txn(txn, envelope)
            indexed += 1
    txn.put(Table.SETTINGS, done, b"1")
    return indexed
