"""Encrypted media (SPEC §28) between real nodes on 127.0.0.1: what is on disk and on the wire
is ciphertext; only a member's home opens it for its clients; a tampered blob is refused."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import ErrorCode, MediaTampered
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.media import MEDIA_PROTOCOL, DigestMismatch, answer_frames
from hearthmesh.protocol.media_seal import TAG_BYTES, open_media, seal_media
from hearthmesh.storage.api import MediaReference

from .api_helpers import home, link
from .conftest import wait_until
from .test_media import _download, _send_image

pytestmark = pytest.mark.integration


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    """Every file under `root` (LMDB environment, media blobs, logs) that holds `needle`."""
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_an_image_canary_is_ciphertext_everywhere_and_plain_only_through_bobs_api(
    tmp_path: Path,
) -> None:
    canary = b"canary:" + os.urandom(24).hex().encode()
    image = b"\x89PNG\r\n\x1a\n" + os.urandom(40_000) + canary + os.urandom(9_000)
    async with (
        asyncio.timeout(25),
        home(tmp_path / "a") as a,
        home(tmp_path / "b") as b,
        home(tmp_path / "c") as c,
    ):
        await link(a, b)
        await link(c, a)  # carol's node meets alice's, but carol is in no room of hers
        media = await _send_image(a, b, image)
        assert media["size"] == len(image)
        status, body, _ = await _download(b, media["digest"])
        assert (status, body) == (200, image)  # bob's home opened it for bob's client
        # both homes hold the blob, addressed by the ciphertext's digest, and nothing else
        digest = bytes.fromhex(media["digest"])
        for node in (a, b):
            info = await node.node.store.run(node.node.store.store.media_info, digest)
            assert info is not None and info.seal is not None
            assert info.size == len(image) + TAG_BYTES
            ciphertext = await node.node.store.run(node.node.store.store.read_media, digest)
            assert ciphertext is not None and hashlib.sha256(ciphertext).digest() == digest
            assert canary not in ciphertext and open_media(ciphertext, info.seal) == image
        assert await c.node.store.run(c.node.store.store.media_info, digest) is None
    # after the nodes closed: no file of any node holds the canary, byte for byte
    for name in ("a", "b", "c"):
        assert _files_holding(tmp_path / name, canary) == []


async def test_a_flipped_ciphertext_byte_is_refused_with_media_tampered(tmp_path: Path) -> None:
    image = os.urandom(70_000)
    ciphertext, seal = seal_media(image, os.urandom)
    flipped = bytearray(ciphertext)
    flipped[1234] ^= 0x01
    served: list[bytes] = []

    async def source(stream: FrameStream) -> None:
        await stream.read_frame()
        blob = bytes(flipped) if not served else ciphertext
        served.append(blob)
        await stream.write_frames(answer_frames(blob))

    async with (
        asyncio.timeout(15),
        home(tmp_path / "b") as b,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        mallory.set_stream_handler(MEDIA_PROTOCOL, source)
        await mallory.connect(b.node.listen_addrs[0])
        await wait_until(lambda: mallory.peer_id in b.node.connected_peers())
        # the message names the flipped blob's digest with the original seal: the digest
        # matches, the GCM tag does not
        tampered = hashlib.sha256(bytes(flipped)).digest()
        reference = MediaReference(
            room=RoomId(bytes(32)),
            sender=UserId(bytes(32)),
            size=len(ciphertext),
            content_type="image/png",
            seal=seal,
        )
        with pytest.raises(MediaTampered) as refused:
            await b.node.media.fetch_from(mallory.peer_id, tampered, reference)
        assert refused.value.code == ErrorCode.MEDIA_TAMPERED and int(refused.value.code) == 40
        assert await b.node.store.run(b.node.store.store.media_info, tampered) is None
        assert b.node.media.shunned(mallory.peer_id, tampered)
        # bytes that do not hash to the digest asked for: caught by the address, unopened
        with pytest.raises(DigestMismatch) as mismatch:
            await b.node.media.fetch_from(
                mallory.peer_id, hashlib.sha256(b"other").digest(), reference
            )
        assert mismatch.value.code == ErrorCode.MALFORMED
        assert b.node.media.fetched == 0
