"""`/hearthmesh/caps/0` both ways (SPEC §20.5, §20.7): the levels this node advertises, the
levels each peer advertised, and which form of a revised event may reach a set of users.

State: `PeerLevels` owns what each peer answered, learnt once per connection and bounded;
`CapabilityServer` and `Revisions` own none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

from hearthmesh.node.p2p.errors import P2PError, StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.protocol.capabilities import (
    CAPS_PROTOCOL,
    Level,
    decode_caps_answer,
    decode_caps_request,
    encode_caps_answer,
    encode_caps_request,
    speak,
)
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.identity import UserId

__all__ = ["ASK_S", "MAX_PEERS_KNOWN", "OUR_LEVELS", "CapabilityServer", "PeerLevels", "Revisions"]

log = logging.getLogger(__name__)

OUR_LEVELS: Final = frozenset(
    {
        Level.CORE,
        Level.IM,
        Level.MULTI_DEVICE,
        Level.RELAY,
        Level.E2EE,
        Level.ADD_SEVERAL,
        Level.ADDRESSED_RECEIPTS,
    }
)
"""What this implementation does today: Megolm is on the message path (SPEC §27.10-27.13),
and it speaks both revisions of §20.7."""

ASK_S: Final = 10.0
"""How long an answer may take (dialling included) before the peer is taken to be older."""

MAX_PEERS_KNOWN: Final = 4096
"""Peers whose answer is kept; the oldest answer goes first (a stranger's is one entry)."""


class CapabilityServer:
    """Answers a capability request with `OUR_LEVELS` less those withheld (SPEC §20.7); a
    malformed request is charged."""

    def __init__(
        self,
        *,
        on_refused: Callable[[str, RemoteProtocolError], None],
        withheld: frozenset[Level] = frozenset(),
    ) -> None:
        self._on_refused = on_refused
        """Charges the peer's standing (SPEC §11.6)."""
        self._answer = encode_caps_answer(OUR_LEVELS - withheld)

    async def serve(self, stream: FrameStream) -> None:
        """Answer one request, then let the host close the stream."""
        request = await stream.read_request(self._on_refused)
        if request is None:
            return
        try:
            decode_caps_request(request)
        except RemoteProtocolError as exc:
            self._on_refused(stream.remote_peer, exc)
            return
        with contextlib.suppress(StreamClosed):  # the asker gave up
            await stream.write_frame(self._answer)


class PeerLevels:
    """What each peer advertised, asked on every new connection (a peer that upgraded or
    went back restarted, so it connects anew)."""

    def __init__(
        self, *, host: P2PHost, on_refused: Callable[[str, RemoteProtocolError], None]
    ) -> None:
        self._host = host
        self._on_refused = on_refused
        """Charges a malformed answer (SPEC §11.6)."""
        self._levels: OrderedDict[str, frozenset[Level]] = OrderedDict()

    async def learn(self, peer_id: str) -> None:
        """Ask `peer_id`. One that does not serve the protocol, or could not be asked in
        `ASK_S`, is kept as advertising nothing: older than every revision until it is asked
        again on its next connection (SPEC §20.5, §20.7), and not asked on every send."""
        self._levels.pop(peer_id, None)
        levels: frozenset[Level] = frozenset()
        try:
            async with asyncio.timeout(ASK_S):
                async with await self._host.open_stream(peer_id, CAPS_PROTOCOL) as stream:
                    await stream.write_frame(encode_caps_request())
                    levels = decode_caps_answer(await stream.read_frame())
        except (P2PError, TimeoutError) as exc:
            log.debug("no capability answer from %s: %r", peer_id[-8:], exc)
        except RemoteProtocolError as exc:
            self._on_refused(peer_id, exc)
        self.remember(peer_id, levels)

    def remember(self, peer_id: str, levels: frozenset[Level]) -> None:
        """Keep `peer_id`'s answer, dropping the oldest past `MAX_PEERS_KNOWN`."""
        self._levels[peer_id] = levels
        self._levels.move_to_end(peer_id)
        while len(self._levels) > MAX_PEERS_KNOWN:
            self._levels.popitem(last=False)

    def of(self, peer_id: str) -> frozenset[Level] | None:
        """What `peer_id` advertised on its latest connection; None: not known."""
        return self._levels.get(peer_id)


class Revisions:
    """Which form of a revised event may reach a set of users (SPEC §20.7): the revised one
    only when every home of theirs and of our own user's advertised it."""

    def __init__(
        self,
        *,
        levels: PeerLevels,
        user: UserId,
        homes_of: Callable[[UserId], tuple[str, ...]],
        siblings: Callable[[], frozenset[str]],
    ) -> None:
        self._levels = levels
        self._user = user
        self._homes_of = homes_of
        """Peer ids of a user's homes, as their newest record we hold says."""
        self._siblings = siblings

    async def speak(self, users: Iterable[UserId], level: Level) -> bool:
        """Do the homes of `users` (our own user's other homes included) all speak `level`?
        A home not asked yet is asked now (a home we just met was asked already); a user whose
        homes we do not know makes it no."""
        peers = set(self._siblings())
        for user in users:
            if user == self._user:
                continue
            homes = self._homes_of(user)
            if not homes:
                return False
            peers.update(homes)
        unknown = sorted(peer for peer in peers if self._levels.of(peer) is None)
        await asyncio.gather(*(self._levels.learn(peer) for peer in unknown))
        return speak((self._levels.of(peer) for peer in sorted(peers)), level)
