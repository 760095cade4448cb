"""Presence and typing between contacts, on direct streams (SPEC §32.4).

Gossip reaches whoever subscribes to a topic, so presence (online, offline, last seen) and
typing never go on it: each is one frame on a `/hearthmesh/signals/0` stream to each home of
each contact who should see it. The frame is the gossip payload `[certificate, envelope]`
(SPEC §14.1) of a PRESENCE or TYPING envelope; nothing is answered, so a refused push tells
its sender nothing. A push is taken only from a contact our user has not blocked; one from
anyone else is dropped (`NotAContact`). Our user's visibility setting decides whether we send
any. State owned: the per-peer rate buckets of inbound pushes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Set
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.events import NodeEvent, TypingChanged
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.node.social.privacy import Privacy, Visibility
from hearthmesh.protocol.certificate_cache import VerifiedCertificates
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import HearthError, NotAContact, RemoteProtocolError
from hearthmesh.protocol.gossip import SIGNALS_PROTOCOL
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.protocol.signals import Signal, check_signal_sender, decode_signal
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["ContactSignals"]

log = logging.getLogger(__name__)

PUSHES_PER_S: Final = 5
PUSHES_BURST: Final = 20
"""Pushes one peer may make: a user's presence and typing in a few rooms, then a few a second."""
SEND_TIMEOUT_S: Final = 3.0
"""One push to one home: a contact whose home does not answer is skipped until the next."""


class ContactSignals:
    """Sends our presence and typing to contacts and takes theirs."""

    def __init__(
        self,
        *,
        host: P2PHost,
        store: AsyncStore,
        directory: HomeDirectory,
        privacy: Privacy,
        user: UserId,
        clock: Clock,
        certificates: VerifiedCertificates,
        members: Callable[[RoomId], Awaitable[Set[UserId]]],
        emit: Callable[[NodeEvent], None],
        on_refused: Callable[[str, RemoteProtocolError], None],
    ) -> None:
        self._host = host
        self._store = store
        self._directory = directory
        self._privacy = privacy
        self._user = user
        self._clock = clock
        self._certificates = certificates
        """The event loop's cache, shared with the receiver and presence."""
        self._members = members
        self._emit = emit
        self._on_refused = on_refused
        self._limits = RateLimiter(PUSHES_PER_S, PUSHES_BURST, clock)
        self._presence: Callable[[Signal], Awaitable[None]] = _take_nothing
        self.dropped = 0
        """Pushes not taken: not from a contact, blocked, malformed (for tests and status)."""
        self.pushed = 0
        """Pushes sent to a home (for tests and status)."""

    def on_presence(self, take: Callable[[Signal], Awaitable[None]]) -> None:
        """Hand a contact's verified presence to `take` (the presence service)."""
        self._presence = take

    async def contacts(self) -> list[UserId]:
        """Who sees our presence now: our contacts not blocked, or no one (SPEC §32.4)."""
        if self._privacy.visibility is Visibility.NOBODY:
            return []
        store = self._store
        held = await store.read(store.store.contacts, self._user)
        return [c.contact for c in held if not self._privacy.blocks(c.contact)]

    async def send(self, payload: bytes, users: Iterable[UserId]) -> None:
        """Push `payload` to every home of each of `users` that we know, at once."""
        homes = {
            home
            for user in users
            if (record := self._directory.record(user)) is not None
            for home in record.homes
        }
        if homes:
            await asyncio.gather(*(self._push(home, payload) for home in homes))

    async def typing(self, room: RoomId, payload: bytes) -> None:
        """Our typing in `room`, to its members who are our contacts (SPEC §32.4)."""
        members = await self._members(room)
        await self.send(payload, [u for u in await self.contacts() if u in members])

    async def _push(self, home: str, payload: bytes) -> None:
        self.pushed += 1
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                async with await self._host.open_stream(home, SIGNALS_PROTOCOL) as stream:
                    await stream.write_frame(payload)
        except (P2PError, HearthError, TimeoutError) as exc:
            log.debug("signal to %s not sent: %s", home[-8:], exc)

    async def serve(self, stream: FrameStream) -> None:
        """Take one push; nothing is answered, whatever it was."""
        data = await stream.read_request(self._refuse)
        if data is None:
            return
        peer = stream.remote_peer
        try:
            self._limits.require(peer, "presence and typing pushes")
            signal = decode_signal(
                data, now_ms=self._clock.now_ms(), certificates=self._certificates
            )
            await self._take(signal)
        except NotAContact as exc:  # not charged: a former contact still thinks it is one
            self.dropped += 1
            log.debug("signal from %s dropped: %s", peer[-8:], exc)
        except RemoteProtocolError as exc:
            self._refuse(peer, exc)

    async def _take(self, signal: Signal) -> None:
        envelope = signal.item.envelope
        sender = envelope.sender_user
        store = self._store
        blocked = self._privacy.blocks(sender)
        contact = not blocked and await store.read(store.store.is_contact, self._user, sender)
        check_signal_sender(contact=contact, blocked=blocked)
        if signal.presence is not None:
            await self._presence(signal)
        elif signal.typing is not None:
            room = envelope.room
            # our direct room with a contact counts before either side wrote in it
            if room == direct_room_id(self._user, sender) or sender in await self._members(room):
                self._emit(TypingChanged(room=room, user=sender, active=signal.typing))

    def _refuse(self, peer: str, error: RemoteProtocolError) -> None:
        self.dropped += 1
        self._on_refused(peer, error)
        log.debug("signal from %s refused: %s (code %d)", peer[-8:], error, error.code)


async def _take_nothing(_: Signal) -> None:
    """The presence hook until `on_presence` sets one."""
