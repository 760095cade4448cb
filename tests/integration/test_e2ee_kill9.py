"""A sender killed with SIGKILL in the middle of a burst never reuses a Megolm index (SPEC §27.8):
the session's advance commits with the envelopes it encrypted, however many sends share that
commit, so the restarted node goes on past every index it used; the member opens every
message, before and after the kill (a reused index would be refused as Replayed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import vodozemac

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import Kind, RoomId, decode_envelope
from hearthmesh.storage.api import Direction
from hearthmesh.storage.lmdb_store import LmdbStore
from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.node_process import HomeProcess, spawn_home

BEFORE_KILL = 250
"""Sent pipelined before the kill: more than two Megolm sessions' worth (100 each)."""
AFTER_RESTART = 150


class _Frames:
    """The frames of one WebSocket client: message ids sent (by client id) and received."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.sent: dict[str, str] = {}
        self.received: set[str] = set()
        self.changed = asyncio.Event()

    async def read(self) -> None:
        async for message in self.ws:
            frame = json.loads(message.data)
            if frame["event"] == "message_sent":
                self.sent[frame["client_id"]] = frame["message_id"]
            elif frame["event"] == "message":
                self.received.add(frame["message_id"])
            self.changed.set()

    async def send(self, room: str, client_id: str) -> None:
        body = {"event": "send", "room_id": room, "message": client_id, "client_id": client_id}
        await self.ws.send_str(json.dumps(body))

    async def wait(self, done: Any) -> None:
        while not done():
            self.changed.clear()
            await self.changed.wait()


async def _burst(
    home: HomeProcess, room: str, tag: str, count: int, *, kill_after: int
) -> dict[str, str]:
    """Send `count` messages pipelined; once `kill_after` are sent, kill -9 the home (when
    `kill_after` < `count`). The client ids the home answered `message_sent`, with their ids."""
    async with ApiClient(home.api, home.token) as api, api.websocket() as ws:
        frames = _Frames(ws)
        reader = asyncio.create_task(frames.read())
        try:
            for i in range(count):
                await frames.send(room, f"{tag}{i}")
            await frames.wait(lambda: len(frames.sent) >= kill_after)
            if kill_after < count:
                await home.kill()
            return dict(frames.sent)
        finally:
            reader.cancel()


@pytest.mark.slow
async def test_a_sender_killed_mid_burst_never_reuses_a_megolm_index(tmp_path: Path) -> None:
    async with asyncio.timeout(300):  # three process starts and 400 sends on a loaded machine
        bob = await spawn_home(tmp_path / "bob", name="bob")
        alice = await spawn_home(tmp_path / "alice", name="alice")
        try:
            async with (
                ApiClient(alice.api, alice.token) as alice_api,
                ApiClient(bob.api, bob.token) as bob_api,
            ):
                await alice_api.call("POST", "/v1/peers", {"address": bob.addr})
                opened = await alice_api.call(
                    "POST", "/v1/conversation", {"recipient_id": bob.user_text}
                )
                await bob_api.call("POST", "/v1/conversation", {"recipient_id": alice.user_text})
                room = opened["room_id"]
                sent = await _burst(alice, room, "a", BEFORE_KILL, kill_after=BEFORE_KILL // 2)
                alice = await spawn_home(tmp_path / "alice", name="alice")
                async with ApiClient(alice.api, alice.token) as again:
                    await again.call("POST", "/v1/peers", {"address": bob.addr})
                    later = await _burst(alice, room, "b", AFTER_RESTART, kill_after=AFTER_RESTART)
                    # bob's home holds what alice's does: every envelope it committed
                    path = f"/v1/conversation/{room}/digest"
                    while (await again.call("GET", path))["digest"] != (  # noqa: ASYNC110 - no event
                        await bob_api.call("GET", path)
                    )["digest"]:
                        await asyncio.sleep(0.2)
        finally:
            for home in (alice, bob):
                await home.terminate()
        assert len(sent) >= BEFORE_KILL // 2 and len(later) == AFTER_RESTART
        store = LmdbStore(tmp_path / "alice" / "store")
        try:
            page = store.page_history(
                RoomId(bytes.fromhex(room)), direction=Direction.FORWARD, limit=1000
            )
        finally:
            store.close()
        stored = [e.envelope for e in page.events if e.envelope.kind is Kind.MESSAGE]
        assert {e.message_id.hex() for e in stored} >= set(sent.values()) | set(later.values())
        bob_store = LmdbStore(tmp_path / "bob" / "store")
        try:  # every message acked as sent opened at bob (a reused index is refused, Replayed)
            unopened = [m for m in stored if bob_store.plaintext(m.message_id) is None]
        finally:
            bob_store.close()
        assert unopened == []
        used = []
        for envelope in sorted(stored, key=lambda e: e.seq):
            body = e2ee.decode_encrypted_body(decode_envelope(envelope.wire).body)
            index = vodozemac.MegolmMessage.from_bytes(body.ciphertext).message_index()
            used.append((body.session_id, index))
        assert len(used) == len(set(used))  # no (session, index) twice
        # sealed in the order encrypted: a session's first message (after its ROOM_KEY)
        # comes before the others of its session, by sequence number
        for session in {session for session, _ in used}:
            indices = [index for s, index in used if s == session]
            assert indices == sorted(indices), indices
