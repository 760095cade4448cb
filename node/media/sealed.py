"""Sealed blobs in the store (SPEC §28): what a home does with its own clients' media.

An upload is sealed here, on the uploader's home, before anything is written, so the store, the
media files and every peer that fetches the blob hold ciphertext only; a download opens the
blob with the seal kept in its metadata. Both run on the store's threads (`run_long`, `read`):
AES-GCM over 16 MiB is too long for the event loop. Owns no state.
"""

from __future__ import annotations

import secrets

from hearthmesh.protocol.errors import UnreadableItem
from hearthmesh.protocol.media_seal import TAG_BYTES, open_media, seal_media
from hearthmesh.storage.api import MediaInfo, Store

__all__ = ["plain_size", "put_sealed", "read_opened"]


def put_sealed(store: Store, plaintext: bytes, *, content_type: str, now_ms: int) -> MediaInfo:
    """Seal `plaintext` under a fresh key and store the ciphertext with its seal."""
    ciphertext, seal = seal_media(plaintext, secrets.token_bytes)
    return store.put_media(ciphertext, content_type=content_type, now_ms=now_ms, seal=seal)


def read_opened(store: Store, digest: bytes) -> tuple[MediaInfo, bytes] | None:
    """A held blob's metadata and plaintext (opened when sealed); None if not held.

    Raises:
        MediaTampered: the blob does not open under its seal (nothing of it is returned).
        UnreadableItem: the metadata is here but its file is damaged or gone.
    """
    info = store.media_info(digest)
    data = None if info is None else store.read_media(digest)
    if info is None or data is None:
        return None
    return info, data if info.seal is None else open_media(data, info.seal)


def plain_size(info: MediaInfo) -> int:
    """Bytes a client gets for this blob: the ciphertext's less the GCM tag when sealed."""
    if info.seal is None:
        return info.size
    if info.size < TAG_BYTES:
        where = f"media/{info.digest.hex()}"
        raise UnreadableItem(f"sealed {where} is shorter than its tag", item=where)
    return info.size - TAG_BYTES
