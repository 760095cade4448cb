"""`/hearthmesh/caps/0` both ways (SPEC §20.5, §20.7): the levels this node advertises, the
levels each peer advertised, and which form of a revised event may reach a set of users.

State: `PeerLevels` owns the book of what each peer told (`LevelsBook`: its levels, its hello
awaited, when an unreachable peer was last tried), the waits on those hellos and the slots of
background asks; `CapabilityServer` and `Revisions` own none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.p2p.errors import P2PError, ProtocolNotSpoken, StreamClosed
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
from hearthmesh.protocol.e2ee.ahead import DEFAULT_AHEAD
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.levels_book import MAX_PEERS_KNOWN, RETRY_MS, LevelsBook, Step

__all__ = [
    "ASK_S",
    "MAX_PEERS_KNOWN",
    "OUR_LEVELS",
    "RETRY_MS",
    "CapabilityServer",
    "PeerLevels",
    "Revisions",
]

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
        Level.ADDRESSED_ROOM_KEYS,
        Level.OWED_HELD,
    }
)
"""What this implementation does today: Megolm is on the message path (SPEC §27.10-27.13),
it speaks every revision of §20.7, and it holds what is older than a session it holds
(SPEC §27.11.2-27.11.3)."""

ASK_S: Final = 10.0
"""How long an answer may take (dialling included, or the wait for a hello on its way)
before the peer is taken to be unreachable for `RETRY_MS`."""


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
        self.levels: Final = OUR_LEVELS - withheld
        """What we advertise, here and in our hello (SPEC §13.3)."""
        self._answer = encode_caps_answer(self.levels)

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
    """What each peer advertised, told in its hello on each connection (so a peer of this
    release is never asked), asked of a peer greeted on hello/0 before a send that depends on
    it, and kept while it is away and across its reconnections until its hello replaces it
    (SPEC §20.7.1)."""

    def __init__(
        self,
        *,
        host: P2PHost,
        clock: Clock,
        on_refused: Callable[[str, RemoteProtocolError], None],
        reach: Callable[[str, tuple[str, ...]], Awaitable[bool]],
        ask_s: float = ASK_S,
        background_asks: int = DEFAULT_AHEAD.asks_at_once,
    ) -> None:
        self._host = host
        self._ask_s = ask_s
        """How long an answer may take (`ASK_S` by default, the node setting
        `capability_ask_ms`)."""
        self._clock = clock
        self._reach = reach
        """Dials a peer from the addresses of its home record (`PeerLinks.reach`)."""
        self._on_refused = on_refused
        """Charges a malformed answer (SPEC §11.6)."""
        self._book = LevelsBook()
        self._hello_ended: dict[str, asyncio.Event] = {}
        """Peers whose hello on this connection an ask waits for (set, and dropped, when it
        ends either way or the peer goes)."""
        self._asking: dict[str, asyncio.Event] = {}
        """Peers asked now: a send meanwhile waits for that answer instead of asking again (a
        burst of sends would otherwise open a stream each, past the peer's slots)."""
        self._background = asyncio.Semaphore(background_asks)
        """Slots of background asks (`AheadPolicy.asks_at_once`); a user's action takes none."""
        self.asked = 0
        """Caps streams we opened (the status's `capability_asks`)."""
        self.hellos = 0
        """Asks that waited for the peer's hello on its way instead."""
        self.unanswered = 0
        """Asks (or waits for a hello) with no answer in `ask_s`: unreachable, failed, late."""

    async def learn(
        self, peer_id: str, addresses: tuple[str, ...] = (), *, background: bool = False
    ) -> None:
        """Ask `peer_id`, or wait for the answer to a question already on its way, or for its
        hello on this connection if that is on its way (it tells the levels of a peer of this
        release, so no stream of ours is opened); not
        connected, it is dialled first from `addresses` (its home record's). A peer
        that answers it does not serve the protocol is at `core` (SPEC §20.5), as is one
        whose answer is malformed (charged); one that could not be reached, whose stream failed
        otherwise (a negotiation timed out on a loaded peer) or that did not answer in
        `ASK_S` keeps what it answered before, if anything. `background`: for work no user
        waits on, it waits for one of `background_asks` slots first; a user's ask of the same
        peer meanwhile asks at once, and this one takes its answer."""
        if background:
            async with self._background:
                if self.due(peer_id) or peer_id in self._asking:
                    await self._learn(peer_id, addresses)
            return
        await self._learn(peer_id, addresses)

    async def _learn(self, peer_id: str, addresses: tuple[str, ...]) -> None:
        asked = self._asking.get(peer_id)
        if asked is not None:
            await asked.wait()
            return
        asked = self._asking[peer_id] = asyncio.Event()
        try:
            await self._ask(peer_id, addresses)
        finally:
            del self._asking[peer_id]
            asked.set()

    async def _ask(self, peer_id: str, addresses: tuple[str, ...]) -> None:
        try:
            async with asyncio.timeout(self._ask_s):
                # A home behind a NAT is reached through its record's circuit addresses, which
                # libp2p's own dial (the stream open's) never tries: the first send to it
                # waited out ASK_S before it was sealed.
                dialled = bool(addresses) and peer_id not in self._host.connected_peers()
                if dialled:
                    await self._reach(peer_id, addresses)
                # After our own dial its hello is asked too, but on a loaded home it answers
                # late (it takes our records first, §13.3): a caps stream answered more asks
                # within `ask_s` at a 50-home group's formation (SPEC §20.6, §20.7.1).
                if not dialled and await self._told_in_hello(peer_id):
                    return
                self.asked += 1
                # Not lazily: the homes asked are of a release before hello/1, and their `na`
                # must be told from a failed stream (SPEC §10.1, §20.7).
                async with await self._host.open_stream(peer_id, CAPS_PROTOCOL) as stream:
                    levels = decode_caps_answer(await stream.write_then_read(encode_caps_request()))
        except ProtocolNotSpoken:  # it answered it has no such protocol
            self.remember(peer_id, frozenset())
        except (P2PError, TimeoutError) as exc:
            log.debug("no capability answer from %s: %r", peer_id[-8:], exc)
            self.unanswered += 1
            self._book.missed(peer_id, self._clock.now_ms())
        except RemoteProtocolError as exc:
            self._on_refused(peer_id, exc)
            self.remember(peer_id, frozenset())
        else:
            self.remember(peer_id, levels)

    async def _told_in_hello(self, peer_id: str) -> bool:
        """Wait for `peer_id`'s hello on this connection if it is on its way; did it (or an
        answer meanwhile) tell the levels? Not after a hello/0 or a failed hello: then asked."""
        if self._book.step(peer_id, self._clock.now_ms()) is Step.AWAIT_HELLO:
            self.hellos += 1
            await self._hello_ended.setdefault(peer_id, asyncio.Event()).wait()
        return self._book.of(peer_id) is not None

    def connected(self, peer_id: str) -> None:
        """`peer_id` connected anew: its hello is awaited (what it told before stands until
        that hello replaces it)."""
        self._book.connected(peer_id)

    def disconnected(self, peer_id: str) -> None:
        """`peer_id`'s last connection closed: no hello of it is on its way."""
        self._book.disconnected(peer_id)
        self._end_wait(peer_id)

    def remember(self, peer_id: str, levels: frozenset[Level]) -> None:
        """Keep what `peer_id` told (a caps answer, its hello/1 either way), replacing what it
        told before; the oldest peer goes past `MAX_PEERS_KNOWN`."""
        self._book.told(peer_id, levels)
        self._end_wait(peer_id)

    def greeted_older(self, peer_id: str) -> None:
        """`peer_id` was greeted on hello/0 (a release before hello/1): what it told before is
        dropped, and it is asked before the next send that depends on it (at once, a try that
        failed lately notwithstanding)."""
        self._book.greeted_older(peer_id)
        self._end_wait(peer_id)

    def hello_failed(self, peer_id: str) -> None:
        """Our hello to `peer_id` failed: an ask waiting for it asks instead."""
        self._book.hello_failed(peer_id)
        self._end_wait(peer_id)

    def _end_wait(self, peer_id: str) -> None:
        ended = self._hello_ended.pop(peer_id, None)
        if ended is not None:
            ended.set()

    def of(self, peer_id: str) -> frozenset[Level] | None:
        """What `peer_id` told last; None: it never told any."""
        return self._book.of(peer_id)

    def due(self, peer_id: str) -> bool:
        """Is `peer_id` worth asking (or its hello awaiting) before a send: never told, and not
        tried in the last `RETRY_MS` (an unreachable home must not stall every send)?"""
        return self._book.step(peer_id, self._clock.now_ms()) in (Step.AWAIT_HELLO, Step.ASK)


class Revisions:
    """Which form of a revised event may reach a set of users (SPEC §20.7): the revised one
    only when every home of theirs and of our own user's that ever answered advertised it."""

    def __init__(
        self,
        *,
        levels: PeerLevels,
        user: UserId,
        homes_of: Callable[[UserId], tuple[str, ...]],
        addresses_of: Callable[[UserId], tuple[str, ...]],
        siblings: Callable[[], frozenset[str]],
    ) -> None:
        self._levels = levels
        self._user = user
        self._homes_of = homes_of
        """Peer ids of a user's homes, as their newest record we hold says."""
        self._addresses_of = addresses_of
        """The addresses of a user's homes, as their newest record we hold lists them."""
        self._siblings = siblings

    async def speak(self, users: Iterable[UserId], level: Level) -> bool:
        """Do the homes of `users` (our own user's other homes included) all speak `level`?
        A home that has not answered since its latest connection is asked now. One that still
        has not, or a user whose record we hold none of, is not counted: nothing reaches an
        unreachable home before it connects, and then it is asked (SPEC §20.7)."""
        asked = set(users) or {self._user}  # our own user's homes: the siblings alone
        return asked <= await self.speakers(asked, level)

    async def speakers(
        self, users: Iterable[UserId], level: Level, *, background: bool = False
    ) -> frozenset[UserId]:
        """Those of `users` whose homes, with our own user's other homes, all speak `level`:
        the users an event of that revision, addressed to one user at a time, may reach in its
        revised form (SPEC §20.7, §27.5.3). Asks as `speak` does, every due home at once
        (`background`: a few at a time, `PeerLevels.learn`); awaits nothing when none is due."""
        siblings = set(self._siblings())
        homes = {user: self._homes_of_user(user) for user in users}
        await self._ask_due(homes, siblings, background=background)
        if not self._speak(siblings, level):
            return frozenset()
        return frozenset(user for user, theirs in homes.items() if self._speak(theirs, level))

    async def ask_due(self, users: Iterable[UserId]) -> bool:
        """Ask every due home of `users` (never answered since its latest connection, and not
        tried in the last `RETRY_MS`), all at once; True if any was asked. For a check that
        reads the answers in hand (`advertised`) where a record came after the send asked
        (SPEC §27.11.3); awaits nothing when none is due."""
        return await self._ask_due({user: self._homes_of_user(user) for user in users}, set())

    async def _ask_due(
        self,
        homes: dict[UserId, tuple[str, ...]],
        siblings: set[str],
        *,
        background: bool = False,
    ) -> bool:
        user_of = {peer: user for user, theirs in homes.items() for peer in theirs}
        user_of.update((peer, self._user) for peer in siblings)
        due = sorted(peer for peer in user_of if self._levels.due(peer))
        if due:
            addresses = {user: self._addresses_of(user) for user in {user_of[p] for p in due}}
            await asyncio.gather(
                *(
                    self._levels.learn(peer, addresses[user_of[peer]], background=background)
                    for peer in due
                )
            )
        return bool(due)

    def _homes_of_user(self, user: UserId) -> tuple[str, ...]:
        """Peer ids of `user`'s homes; our own user's other homes are the siblings."""
        return () if user == self._user else self._homes_of(user)

    def advertised(self, users: Iterable[UserId], level: Level) -> frozenset[UserId]:
        """Those of `users` every home of whose (as their newest record we hold lists them)
        advertised `level` in its latest answer or hello. Asks nothing and awaits nothing: a
        home that has not answered yet counts as one that does not advertise it, the safe side
        of a level a sender may skip a precaution for (`owed-held`, SPEC §27.11.3)."""
        held = {user: self._homes_of(user) for user in users}
        return frozenset(
            user
            for user, homes in held.items()
            if homes and all(level in (self._levels.of(peer) or ()) for peer in homes)
        )

    def _speak(self, peers: Iterable[str], level: Level) -> bool:
        answers = (self._levels.of(peer) for peer in peers)
        return speak((levels for levels in answers if levels is not None), level)
