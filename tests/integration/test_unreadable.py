"""One unreadable stored item (SPEC §11.8.7): contained where it is met, never a fail-stop.

A media blob whose file no longer matches its sha-256 address is ours to fix, not a fault of
the peer that asks for it, and not a reason to stop: were it the node's fatal fault, a peer
asking for it five times would end `hearthmesh run` for good.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from hearthmesh.node.events import MessageReceived
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import ErrorCode
from hearthmesh.protocol.media import MediaRefused
from hearthmesh.storage.api import MediaReference

from .api_helpers import home, link
from .conftest import collect
from .test_media import _download, _send_image

pytestmark = pytest.mark.integration


async def test_a_damaged_blob_is_refused_as_unreadable_and_the_node_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hearthmesh")
    image = os.urandom(4096)
    async with (
        asyncio.timeout(30),
        home(tmp_path / "a") as a,
        home(tmp_path / "b") as b,
    ):
        await link(a, b)
        media = await _send_image(a, b, image)
        assert (await _download(b, media["digest"]))[0] == 200  # served while intact
        digest = bytes.fromhex(media["digest"])
        info = await a.node.store.run(a.node.store.store.media_info, digest)
        assert info is not None
        # damage alice's blob on disk: same length, other bytes
        [blob] = [p for p in (tmp_path / "a").rglob(digest.hex()) if p.is_file()]
        blob.write_bytes(bytes(len(blob.read_bytes())))
        failed = asyncio.ensure_future(a.node.wait_failed())
        reference = MediaReference(
            room=RoomId(bytes(32)), sender=a.node.user_id, size=info.size, content_type="image/png"
        )
        for _ in range(2):  # a second ask is met the same way
            with pytest.raises(MediaRefused) as refused:
                await b.node.media.fetch_from(a.node.peer_id, digest, reference)
            assert refused.value.refusal_code == ErrorCode.UNREADABLE
            assert str(tmp_path) not in str(refused.value)  # no local path goes to a peer
        status, body, _ = await _download(a, media["digest"])  # alice's own client asks
        assert (status, json.loads(body)["error"]["code"]) == (500, ErrorCode.UNREADABLE)
        assert a.node.unreadable_items == 3  # two fetches and the API request (`report_fault`)
        assert a.node.failure is None and not failed.done()
        assert a.node.peer_points(b.node.peer_id) == 0  # the fault is ours, not bob's
        logged = [
            r
            for r in caplog.records
            if r.name == "hearthmesh.node.supervisor" and r.levelno >= logging.ERROR
        ]
        assert len(logged) == 1 and str(blob) in logged[0].getMessage()  # once, with its path
        # other traffic still flows: a message from alice reaches bob
        arriving = asyncio.create_task(collect(b.node.events(), MessageReceived, 1))
        await asyncio.sleep(0)
        room = await a.node.open_direct(b.node.user_id)
        sent = await a.node.send(room, b"still here")
        [received] = await arriving
        assert received.envelope.message_id == sent.message_id
        assert a.node.failure is None and not failed.done()
        failed.cancel()
