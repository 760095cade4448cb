"""Media reach the other side (SPEC §25): real nodes on 127.0.0.1, driven through the API."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.node.media.fetch import PeerShunned
from hearthmesh.node.media.server import REQUESTS_BURST as MEDIA_REQUESTS_BURST
from hearthmesh.node.media.server import REQUESTS_PER_S as MEDIA_REQUESTS_PER_S
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.content import MEDIA_CONTENT_TYPE, MediaRef, encode_media
from hearthmesh.protocol.delivery import ProtocolErrorFrame
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import ErrorCode, TooLarge
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.media import (
    MAX_CHUNK_BYTES,
    MEDIA_PROTOCOL,
    DigestMismatch,
    MediaRefused,
    answer_frames,
    decode_answer,
    encode_request,
)
from hearthmesh.storage.api import MediaReference
from tests.conftest import FakeClock

from .api_helpers import TOKEN, Home, home, link, open_conversation
from .conftest import CATALOGUE_STANDING, collect, node_config, wait_until

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _upload(h: Home, data: bytes, content_type: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.post(h.url + "/v1/media", data=data, headers={"Content-Type": content_type}) as r,
    ):
        assert r.status == 201
        media: dict[str, Any] = await r.json()
        return media


async def _download(h: Home, digest: str) -> tuple[int, bytes, str]:
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.get(h.url + f"/v1/media/{digest}") as response,
    ):
        return response.status, await response.read(), response.content_type


async def _send_image(alice: Home, bob: Home, data: bytes) -> dict[str, Any]:
    """Alice uploads `data` and sends it to bob; returns the media object once bob's client
    has the message (the blob itself may still be on its way)."""
    bob_user = (await bob.status())["user_id"]
    room = await open_conversation(alice, bob_user)
    media = await _upload(alice, data, "image/png")
    async with bob.socket() as bob_ws:
        await alice.client.call(
            "POST",
            f"/v1/conversation/{room}/messages",
            {"message": "look", "type": "image", "media": media},
        )
        received = await bob_ws.next("message")
    assert received["media"]["digest"] == media["digest"]
    return media


async def _ask(host: P2PHost, peer: str, request: bytes) -> tuple[Any, FrameStream]:
    stream = await host.open_stream(peer, MEDIA_PROTOCOL)
    await stream.write_frame(request)
    return decode_answer(await stream.read_frame()), stream


async def test_an_image_reaches_bobs_node_and_no_one_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hearthmesh.node.media.fetch")
    image = os.urandom(5 * MAX_CHUNK_BYTES + 1234)  # over 1 MiB: six chunks
    async with (
        asyncio.timeout(20),
        home(tmp_path / "a", standing=CATALOGUE_STANDING) as a,
        home(tmp_path / "b") as b,
        home(tmp_path / "c") as c,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        await link(a, b)
        await link(c, a)  # carol's node is known to alice's, but carol is in no room of hers
        media = await _send_image(a, b, image)
        status, body, content_type = await _download(b, media["digest"])  # waits if needed
        assert (status, content_type) == (200, "image/png")
        assert len(body) == len(image) and media["size"] == len(image)
        assert body == image
        assert b.node.media.fetched == 1
        assert any("bytes fetched from" in r.getMessage() for r in caplog.records)
        # carol's node asks alice's directly: refused, and it stores nothing
        digest = bytes.fromhex(media["digest"])
        reference = MediaReference(
            room=RoomId(bytes(32)), sender=a.node.user_id, size=len(image), content_type="x"
        )
        with pytest.raises(MediaRefused) as refused:
            await c.node.media.fetch_from(a.node.peer_id, digest, reference)
        assert refused.value.refusal_code == ErrorCode.NOT_AUTHORIZED
        assert await c.node.store.run(c.node.store.store.media_info, digest) is None
        status, _, _ = await _download(c, media["digest"])
        assert status == 404  # no message of carol's names it: nothing to fetch
        # a stranger's requests: unknown digest, oversized and malformed frames get a code
        await mallory.connect(a.node.listen_addrs[0])
        for request, code in (
            (encode_request(digest), ErrorCode.NOT_AUTHORIZED),
            (encode_request(hashlib.sha256(b"nothing").digest()), ErrorCode.NOT_FOUND),
            (encode_canonical([1, b"\x00" * 1000]), ErrorCode.TOO_LARGE),
            (encode_canonical([7, digest]), ErrorCode.MALFORMED),
            (b"\xff garbage", ErrorCode.MALFORMED),
        ):
            answer, stream = await _ask(mallory, a.node.peer_id, request)
            assert answer == ProtocolErrorFrame(code=code, message=answer.message)
            with pytest.raises(StreamClosed):  # the server closes after its answer
                await stream.read_frame()
            await stream.close()
        # alice's node is unharmed: bob still reads the image, alice still serves her own
        assert (await _download(a, media["digest"]))[1] == image


async def test_a_stranger_naming_a_digest_opens_nothing(tmp_path: Path) -> None:
    """Issue #12 finding 7: carol, a stranger to alice, DMs her a media message naming the
    digest of the image alice sent bob; alice's node stores it, yet it serves carol nothing.
    Only a room where alice herself sent the blob opens it, to that room's members."""
    image = os.urandom(1000)
    async with (
        asyncio.timeout(20),
        home(tmp_path / "a", standing=CATALOGUE_STANDING) as a,
        home(tmp_path / "b") as b,
        home(tmp_path / "c") as c,
    ):
        await link(a, b)
        await link(c, a)
        media = await _send_image(a, b, image)
        digest = bytes.fromhex(media["digest"])
        reference = MediaReference(
            room=await c.node.open_direct(a.node.user_id),
            sender=c.node.user_id,
            size=len(image),
            content_type="image/png",
        )
        arriving = asyncio.create_task(collect(a.node.events(), MessageReceived, 1))
        body = encode_media(
            MediaRef(type="image", digest=digest, content_type="image/png", size=len(image))
        )
        named = await c.node.send(reference.room, body, content_type=MEDIA_CONTENT_TYPE)
        [stored] = await arriving  # alice's node holds carol's reference now
        assert stored.envelope.message_id == named.message_id
        with pytest.raises(MediaRefused) as refused:
            await c.node.media.fetch_from(a.node.peer_id, digest, reference)
        assert refused.value.refusal_code == ErrorCode.NOT_AUTHORIZED
        assert await c.node.store.run(c.node.store.store.media_info, digest) is None
        # bob, in the room where alice sent it, still gets it from alice's node
        status, data, _ = await _download(b, media["digest"])
        assert (status, data) == (200, image)


async def test_bad_bytes_are_discarded_and_the_liar_is_not_asked_again(tmp_path: Path) -> None:
    image = os.urandom(3 * MAX_CHUNK_BYTES)
    digest = hashlib.sha256(image).digest()
    asked: list[bytes] = []

    async def liar(stream: FrameStream) -> None:
        asked.append(await stream.read_frame())
        lie = bytes(len(image)) if len(asked) == 1 else image + b"more"
        await stream.write_frames(answer_frames(lie))

    async with (
        asyncio.timeout(15),
        home(tmp_path / "b") as b,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        mallory.set_stream_handler(MEDIA_PROTOCOL, liar)
        await mallory.connect(b.node.listen_addrs[0])
        # b asks back over mallory's connection: wait until b's side has it too
        await wait_until(lambda: mallory.peer_id in b.node.connected_peers())
        reference = MediaReference(
            room=RoomId(bytes(32)), sender=UserId(bytes(32)), size=len(image), content_type="x"
        )
        with pytest.raises(DigestMismatch):
            await b.node.media.fetch_from(mallory.peer_id, digest, reference)
        assert await b.node.store.run(b.node.store.store.media_info, digest) is None
        assert b.node.media.shunned(mallory.peer_id, digest)
        lied_once = b.node.peer_points(mallory.peer_id)
        assert lied_once > 0, "an answer that cannot be right is charged (SPEC §25.4.2)"
        with pytest.raises(PeerShunned):
            await b.node.media.fetch_from(mallory.peer_id, digest, reference)
        assert len(asked) == 1  # not asked again for that digest
        # more bytes than declared: refused once the declared size is passed, nothing kept
        other = hashlib.sha256(image + b"more").digest()
        with pytest.raises(TooLarge):
            await b.node.media.fetch_from(mallory.peer_id, other, reference)
        assert await b.node.store.run(b.node.store.store.media_info, other) is None
        assert b.node.media.fetched == 0
        assert b.node.peer_points(mallory.peer_id) > lied_once, "and so is this one"


async def test_bobs_api_answers_504_while_alices_home_is_away_then_fetches(tmp_path: Path) -> None:
    image = os.urandom(4096)
    async with asyncio.timeout(25), home(tmp_path / "b", api={"media_fetch_wait_s": 1.0}) as b:
        b_addr = (await b.status())["listen_addrs"][0]
        async with home(tmp_path / "a") as a:
            await link(a, b)
            media = await _send_image(a, b, image)
            assert (await _download(b, media["digest"]))[:2] == (200, image)
        digest = bytes.fromhex(media["digest"])
        await b.node.store.run(b.node.store.store.delete_media, digest)  # as if never fetched
        status, body, _ = await _download(b, media["digest"])
        assert status == 504, body
        async with home(tmp_path / "a", bootstrap=(b_addr,)):
            status, body, _ = await _download(b, media["digest"])
            while status == 504:  # alice's new address reaches bob with her hello
                status, body, _ = await _download(b, media["digest"])
            assert (status, body) == (200, image)


async def test_media_never_runs_as_a_page_on_the_api_origin(tmp_path: Path) -> None:
    async with (
        asyncio.timeout(15),
        home(tmp_path / "a") as a,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        for content_type, attachment in (("text/html", True), ("image/svg+xml", False)):
            body = f"<script>alert('{content_type}')</script>".encode()  # one blob per type
            media = await _upload(a, body, content_type)
            async with http.get(a.url + f"/v1/media/{media['digest']}") as response:
                assert response.status == 200
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Content-Security-Policy"] == "sandbox"
                assert ("attachment" in response.headers.get("Content-Disposition", "")) is (
                    attachment
                )


async def test_a_peer_asking_faster_than_its_limit_is_refused_with_rate_limited(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SPEC §25.3.3: past its burst a peer's media requests get RATE_LIMITED, not served, and
    a refill lets one more through. Alice's clock moves only when the test says (on the wall
    clock, a loaded machine can ask slower than the refill of 2 a second)."""
    async with (
        asyncio.timeout(30),
        Node(node_config(tmp_path / "alice", standing=CATALOGUE_STANDING), clock=clock) as alice,
        P2PHost(HostConfig(identity_seed=os.urandom(32))) as mallory,
    ):
        await mallory.connect(alice.listen_addrs[0])
        request = encode_request(hashlib.sha256(b"nothing").digest())

        async def ask() -> int:
            answer, stream = await _ask(mallory, alice.peer_id, request)
            await stream.close()
            assert isinstance(answer, ProtocolErrorFrame)
            return answer.code

        codes = [await ask() for _ in range(MEDIA_REQUESTS_BURST)]
        assert set(codes) == {ErrorCode.NOT_FOUND}  # the burst is answered
        assert await ask() == ErrorCode.RATE_LIMITED
        clock.advance(1000 // MEDIA_REQUESTS_PER_S)  # one request's worth of refill
        assert await ask() == ErrorCode.NOT_FOUND
        assert await ask() == ErrorCode.RATE_LIMITED
        assert mallory.peer_id in alice.connected_peers()  # refused, not banned
