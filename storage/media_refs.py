"""Which rooms reference a media blob: the index a node checks before serving one (SPEC §25.3).

Written in the append transaction of every MESSAGE that carries a media reference, however it
arrived (sent here, delivered, synced, gossiped), so "may this peer see the blob?" is a prefix
scan on the digest plus the member lists of those few rooms, never a scan of history. Each
message has its own entry, removed with the message when retention purges it: a reference only
purged events made no longer lets anyone fetch the blob.
"""

from __future__ import annotations

from typing import Final

from hearthmesh.protocol.content import MEDIA_CONTENT_TYPE, PROFILE_CONTENT_TYPE, media_ref_of
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.identity import UserId

from .api import MediaReference
from .directory import setting_key
from .history import stored_event
from .keys import (
    ID_BYTES,
    KEY_END,
    Table,
    media_ref_key,
    pack_seal,
    pack_u64,
    prefix_end,
    unpack_seal,
    unpack_u64,
)
from .kv import KvTxn
from .records import corrupt

__all__ = [
    "MEDIA_REFS_FILLED_SETTING",
    "fill_media_refs_txn",
    "forget_media_txn",
    "media_references_txn",
    "note_media_txn",
]

MEDIA_REFS_FILLED_SETTING: Final = "storage.media_refs_with_seals"
"""Set once the history written before this index (one entry per message) has been indexed."""

_EARLIER_SETTINGS: Final = ("storage.media_refs_filled", "storage.media_refs_by_message")
"""Markers of earlier forms of the index, dropped with the entries they describe."""

_MEDIA_MARKERS: Final = (MEDIA_CONTENT_TYPE.encode(), PROFILE_CONTENT_TYPE.encode())
"""The content types' bytes sit in the wire: only events holding one need parsing (a media
message, or a profile whose picture is media, SPEC §32.1)."""


def _may_reference(value: bytes) -> bool:
    return any(marker in value for marker in _MEDIA_MARKERS)


def note_media_txn(txn: KvTxn, envelope: Envelope) -> None:
    """Index the blob `envelope` references, if any (a no-op for every other event)."""
    media = media_ref_of(envelope)
    if media is not None:
        seal = b"" if media.seal is None else pack_seal(media.seal)
        value = pack_u64(media.blob_size) + bytes([len(seal)]) + seal + media.content_type.encode()
        txn.put(Table.MEDIA_REFS, _entry_key(media.digest, envelope), value)


def forget_media_txn(txn: KvTxn, key: bytes, value: bytes) -> None:
    """The history entry `key` → `value` is going: drop its media reference, if it has one."""
    if not _may_reference(value):
        return
    envelope = stored_event(txn, key, value).envelope
    media = media_ref_of(envelope)
    if media is not None:
        txn.delete(Table.MEDIA_REFS, _entry_key(media.digest, envelope))


def _entry_key(digest: bytes, envelope: Envelope) -> bytes:
    return media_ref_key(digest, envelope.room, envelope.sender_user, envelope.message_id)


def media_references_txn(txn: KvTxn, digest: bytes) -> list[MediaReference]:
    """Every (room, sender) whose stored messages reference `digest`, once each, with the blob
    size, content type and seal the first of them declared."""
    found: dict[bytes, MediaReference] = {}
    for key, value in txn.scan(Table.MEDIA_REFS, digest, prefix_end(digest)):
        room_and_sender = key[ID_BYTES : 3 * ID_BYTES]
        if room_and_sender not in found:
            if len(value) < 9:  # size and seal length: our damage, not the message's
                raise corrupt(Table.MEDIA_REFS, key, f"{len(value)} bytes, no size and seal length")
            seal_end = 9 + value[8]
            found[room_and_sender] = MediaReference(
                room=RoomId(room_and_sender[:ID_BYTES]),
                sender=UserId(room_and_sender[ID_BYTES:]),
                size=unpack_u64(value[:8]),
                content_type=value[seal_end:].decode(errors="replace"),
                seal=unpack_seal(value[9:seal_end]) if seal_end > 9 else None,
            )
    return list(found.values())


def fill_media_refs_txn(txn: KvTxn) -> int:
    """Index the media references of events stored before this index existed, once per store;
    entries of an earlier form of the index (one per room and sender) are replaced.

    Returns how many events referencing media were indexed.
    """
    done = setting_key(MEDIA_REFS_FILLED_SETTING)
    if txn.get(Table.SETTINGS, done) is not None:
        return 0
    earlier = [key for key, _ in txn.scan(Table.MEDIA_REFS, b"", KEY_END)]
    for key in earlier:  # after the scan: never mutate under a cursor
        txn.delete(Table.MEDIA_REFS, key)
    for name in _EARLIER_SETTINGS:
        txn.delete(Table.SETTINGS, setting_key(name))
    media = [
        stored_event(txn, key, value).envelope
        for key, value in txn.scan(Table.HISTORY, b"", KEY_END)
        if _may_reference(value)
    ]
    indexed = 0
    for envelope in media:  # written after the scan: never mutate under a cursor
        if media_ref_of(envelope) is not None:
            note_media_txn(txn, envelope)
            indexed += 1
    txn.put(Table.SETTINGS, done, b"1")
    return indexed
