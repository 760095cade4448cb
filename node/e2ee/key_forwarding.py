"""Room keys forwarded between our user's own devices over `/hearthmesh/key-forward/0`
(SPEC §27.12).

A device that holds envelopes it cannot open (linked after they were sent, or missed by a
sender's share) asks its sibling homes for the keys of those sessions; `KeyForwardServer`
answers a sibling only, Olm-encrypted to the key bundle our record lists for that sibling's
device, with every asked session it holds exported at the first index it holds. `KeyForwarding`
is the asking side: every `interval_ms` while something is held, it asks each connected
sibling, takes in what verifies, and opens what waited. State: the server's per-peer rate
buckets; counts of keys taken in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto
from hearthmesh.node.e2ee.room_opener import RoomOpener
from hearthmesh.node.identity.own_homes import OwnHomes
from hearthmesh.node.p2p.errors import P2PError, StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.node.rooms.message_actions import index_opened
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.delivery import ProtocolErrorFrame
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import (
    HearthError,
    KeyMismatch,
    NotAuthorized,
    NotFound,
    RemoteProtocolError,
    refusal,
)
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["FORWARDS_BURST", "FORWARDS_PER_S", "KeyForwardServer", "KeyForwarding"]

log = logging.getLogger(__name__)

FORWARDS_PER_S: Final = 1
FORWARDS_BURST: Final = 4
"""Requests one sibling may make: a few pages of 64 sessions at once, then one a second."""
ASK_TIMEOUT_S: Final = 10.0


class KeyForwardServer:
    """Answers our sibling homes' requests for room keys."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        crypto: DeviceCrypto,
        homes: OwnHomes,
        clock: Clock,
        on_refused: Callable[[str, RemoteProtocolError], None],
    ) -> None:
        self._store = store
        self._crypto = crypto
        self._homes = homes
        self._limits = RateLimiter(FORWARDS_PER_S, FORWARDS_BURST, clock)
        self._on_refused = on_refused
        self.refused = 0

    async def serve(self, stream: FrameStream) -> None:
        """Answer one request, then let the host close the stream."""
        peer = stream.remote_peer
        request = await stream.read_request(self._refuse)
        if request is None:
            return
        try:
            if not self._homes.is_sibling(peer):
                raise NotAuthorized("room keys go to this user's own homes only")
            recipient = self._homes.sibling_bundle(peer)
            if recipient is None:
                raise NotFound("our record lists no key bundle of that home's device")
            self._limits.require(peer, "key forwarding")
            sessions = e2ee.decode_forward_request(request)
            messages = await self._store.run(self._crypto.forward, sessions, recipient)
            answer = e2ee.encode_forward_answer(
                e2ee.ForwardAnswer(sender_bundle=self._homes.own_bundle, messages=tuple(messages))
            )
        except RemoteProtocolError as exc:
            self._refuse(peer, exc)
            answer = e2ee.encode_claim_error(exc)
        try:
            await stream.write_frame(answer)
        except StreamClosed:
            log.info("key forward stream to %s closed before the answer", peer[-8:])

    def _refuse(self, peer: str, error: RemoteProtocolError) -> None:
        self.refused += 1
        self._on_refused(peer, error)
        log.debug("key forward to %s refused: %s (code %d)", peer[-8:], error, error.code)


class KeyForwarding:
    """Asks our sibling homes for the keys of what we hold unopened."""

    def __init__(
        self,
        *,
        host: P2PHost,
        store: AsyncStore,
        crypto: DeviceCrypto,
        opener: RoomOpener,
        homes: OwnHomes,
        interval_ms: int,
    ) -> None:
        self._host = host
        self._store = store
        self._crypto = crypto
        self._opener = opener
        self._homes = homes
        self._interval_s = interval_ms / 1000
        self.keys_taken = 0
        """Room keys our siblings forwarded that we did not hold."""

    async def run(self) -> None:
        """Ask while something is held, every interval, until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            held = await self._store.read(self._store.store.held_sessions, e2ee.MAX_FORWARDED_KEYS)
            if held:
                await self.ask_siblings(held)

    async def ask_siblings(self, sessions: list[tuple[RoomId, bytes]]) -> int:
        """Ask each connected sibling for `sessions`; how many keys were newly taken in."""
        taken = 0
        connected = set(self._host.connected_peers())
        for peer in sorted(self._homes.sibling_peers() & connected):
            try:
                async with asyncio.timeout(ASK_TIMEOUT_S):
                    taken += await self._ask(peer, sessions)
            except (HearthError, P2PError, TimeoutError) as exc:
                log.info("asking %s for room keys failed: %s", peer[-8:], exc)
        self.keys_taken += taken
        return taken

    async def _ask(self, peer: str, sessions: list[tuple[RoomId, bytes]]) -> int:
        async with await self._host.open_stream(peer, e2ee.KEY_FORWARD_PROTOCOL) as stream:
            await stream.write_frame(e2ee.encode_forward_request(sessions))
            answer = e2ee.decode_forward_answer(await stream.read_frame())
        if isinstance(answer, ProtocolErrorFrame):
            raise refusal(answer.code, f"key forwarding refused: {answer.message}")
        listed = self._homes.sibling_bundle(peer)
        if listed is None or answer.sender_bundle != listed:
            raise KeyMismatch("a forwarder's bundle is not the one our record lists")
        return await self._store.run(self._take, self._store.store, answer)

    def _take(self, store: Store, answer: e2ee.ForwardAnswer) -> int:
        keys = self._crypto.accept_forwarded(answer.sender_bundle, answer.messages)
        for key in keys:
            index_opened(store, self._opener.open_held(store, key.session_id))
        return len(keys)
