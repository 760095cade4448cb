"""`HostilePeer`: a libp2p host with its own identity that sends whatever it is told to.

The attacker of issue #12: a fresh peer id and a self-made user (`forge.Stranger`), related to
nobody. It can open a stream on any protocol and write any frame or raw bytes (a lying length,
a partial frame), deliver batches of any envelopes to any recipient (SPEC §11), publish on any
gossip topic (SPEC §14), flood at a given rate, hold streams open, pose as a relay that swallows
what it is given, and come back under a new peer id. Every call reports what the target
answered as short outcome strings (`"STORED"`, `"REJECTED:BAD_SIGNATURE"`, `"ERROR:TOO_LARGE"`,
`"closed"`, `"refused"`, `"no-answer"`), never raising for what the target did.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final

from hearthmesh.node.clock import SystemClock
from hearthmesh.node.p2p.dht import KAD_PROTOCOL
from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.gossip import Subscription
from hearthmesh.node.p2p.host import HostConfig, P2PHost, peer_id_from_seed
from hearthmesh.protocol.canonical import decode_canonical
from hearthmesh.protocol.delivery import (
    DELIVER_PROTOCOL,
    UNPARSED_ID,
    Ack,
    AckStatus,
    BatchItem,
    Deliver,
    DeliveryResult,
    ProtocolErrorFrame,
    decode_frame,
    encode_ack,
    encode_deliver,
    sign_ack,
)
from hearthmesh.protocol.e2ee import KeyBundle
from hearthmesh.protocol.envelope import MessageId, load_envelope
from hearthmesh.protocol.errors import ErrorCode, HearthError, LocalProtocolError
from hearthmesh.protocol.gossip import SIGNALS_PROTOCOL, encode_gossip
from hearthmesh.protocol.hello import HELLO_PROTOCOL, Hello, encode_hello
from hearthmesh.protocol.identity import Rng, UserId, keypair_from_seed

from .forge import EnvelopeForge, Stranger, new_stranger

__all__ = [
    "ANSWER_S",
    "KIT_MAX_FRAME_BYTES",
    "DeliveryTrap",
    "HeldStreams",
    "HostilePeer",
    "Reply",
    "SignalTrap",
    "code_name",
    "grind_seed",
    "result_outcome",
]

ANSWER_S: Final = 3.0
"""How long the kit waits for an answer before it notes "no-answer"."""
KIT_MAX_FRAME_BYTES: Final = 16 << 20
"""The kit's own frame limit: far above any node's, so it can send what they must refuse."""
_SEED_BYTES: Final = 32
_HEADER: Final = struct.Struct(">I")


def code_name(code: int) -> str:
    """The SPEC §9 name of a wire code (its number if unknown)."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def result_outcome(result: DeliveryResult) -> str:
    """An ack's answer for one item: its status, with the code when refused or deferred."""
    if result.status in (AckStatus.REJECTED, AckStatus.DEFERRED):
        return f"{result.status.name}:{code_name(result.code)}"
    return result.status.name


@dataclass(frozen=True, slots=True)
class Reply:
    """What a target did with one request: an outcome and the frame it answered, if any."""

    outcome: str
    frame: bytes | None = None

    @property
    def summary(self) -> str:
        """The outcome, with the code when the answer is an error frame: `[type, code,
        text]`, the shape of every protocol's ERROR frame (SPEC §11.1, §25.2, ...)."""
        if self.frame is None:
            return self.outcome
        try:
            value = decode_canonical(self.frame, max_bytes=len(self.frame))
        except HearthError:
            return "answered:garbled"
        match value:
            case [int(), int() as code, str()]:
                return f"ERROR:{code_name(code)}"
        return "answered"


@dataclass(slots=True)
class HeldStreams:
    """Streams held open, each inside a frame it will never finish."""

    streams: list[FrameStream] = field(default_factory=list)
    refused: int = 0
    """Streams the target would not open, or cut while we wrote the partial frame."""

    @property
    def opened(self) -> int:
        return len(self.streams)

    def still_open(self) -> int:
        """Streams not closed by either side as far as our host knows."""
        return sum(not s.closed for s in self.streams)


@dataclass(slots=True)
class DeliveryTrap:
    """Posing as a home or a relay: every batch delivered to us is answered with one status
    and kept (`wires`), so a case can read what the target sent."""

    batches: int = 0
    envelopes: int = 0
    recipients: set[bytes] = field(default_factory=set)
    wires: list[bytes] = field(default_factory=list)
    got_one: asyncio.Event = field(default_factory=asyncio.Event)
    """Set as each batch comes, kept or dropped: a waiter clears it and looks again."""
    status: AckStatus = AckStatus.STORED
    """What each envelope delivered is answered; a case may change it between batches (a
    deliver stream stays open, so a new trap would not see them)."""
    drop: int = 0
    """Batches still to drop: read, never acked, their stream reset (a peer that fails)."""
    dropped: list[bytes] = field(default_factory=list)
    """The envelopes of the batches dropped."""


@dataclass
class SignalTrap:
    """Posing as a contact's home: every push on `/hearthmesh/signals/0` to us, as it came
    (SPEC §32.4.1)."""

    frames: list[bytes] = field(default_factory=list)
    got_one: asyncio.Event = field(default_factory=asyncio.Event)


def grind_seed(rng: Rng, *, tries: int) -> bytes:
    """The identity seed, of `tries` random ones, whose peer id sorts first: the peer a node
    that picks relays in peer-id order picks (issue #12 finding 6)."""
    if tries < 1:
        raise LocalProtocolError("grinding needs at least one try")
    seeds = (rng(_SEED_BYTES) for _ in range(tries))
    return min(seeds, key=peer_id_from_seed)


class HostilePeer:
    """One attacker: `async with HostilePeer() as kit:`; `rotated()` gives the next identity."""

    def __init__(
        self,
        *,
        seed: bytes | None = None,
        forge: EnvelopeForge | None = None,
        rng: Rng = os.urandom,
        answer_s: float = ANSWER_S,
        dial_from: str | None = None,
        listens: bool = True,
    ) -> None:
        """`listens=False`: the kit cannot be dialled, so its target never dials it back."""
        self.rng = rng
        self.clock = SystemClock()
        self.seed = seed if seed is not None else rng(_SEED_BYTES)
        self.forge = forge or EnvelopeForge(new_stranger(rng, now_ms=self.clock.now_ms()))
        """Seals as our stranger, with its own sequence numbers per room."""
        self.answer_s = answer_s
        self.host = P2PHost(
            HostConfig(
                identity_seed=self.seed,
                max_frame_bytes=KIT_MAX_FRAME_BYTES,
                dial_from=dial_from,
                listen_addrs=["/ip4/127.0.0.1/tcp/0"] if listens else [],
            )
        )
        self.dial_from = dial_from
        """The IP address this attacker's dials leave from (None: the system's choice)."""
        self.peer_id = self.host.peer_id
        self._node_key = keypair_from_seed(self.seed)
        self._batch_ids = itertools.count(1)
        self._deliver: dict[str, FrameStream] = {}
        self._topics: dict[str, Subscription] = {}
        self.hellos_answered = 0
        """The target's hellos `answer_hellos` answered: how often it greeted us."""

    @property
    def stranger(self) -> Stranger:
        return self.forge.stranger

    @property
    def user_id(self) -> UserId:
        return self.stranger.user_id

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def rotated(self, *, new_user: bool = False, seed: bytes | None = None) -> HostilePeer:
        """The same attacker under a new peer id (so with a clean standing at the target);
        with `new_user` under a new user identity as well. Enter it like this one."""
        forge = None if new_user else self.forge
        return HostilePeer(
            seed=seed, forge=forge, rng=self.rng, answer_s=self.answer_s, dial_from=self.dial_from
        )

    # ---- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> HostilePeer:
        await self.host.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for stream in self._deliver.values():
            await stream.reset()
        for subscription in self._topics.values():
            with contextlib.suppress(HearthError):
                await subscription.unsubscribe()
        await self.host.aclose()

    async def connect(self, address: str) -> str:
        """Dial a target (`.../p2p/<id>`); returns its peer id. Raises DialFailed."""
        return await self.host.connect(address)

    # ---- streams ------------------------------------------------------------------------------

    async def request(
        self, peer: str, protocol: str, payload: bytes, *, framed: bool = True
    ) -> Reply:
        """Open a stream, write `payload` (as one frame, or raw bytes), read one answer."""
        try:
            stream = await self.host.open_stream(peer, protocol)
        except P2PError:
            return Reply("refused")
        try:
            await (stream.write_frame(payload) if framed else stream.write_bytes(payload))
            return await self._answer(stream)
        except P2PError:
            return Reply("closed")
        finally:
            await stream.reset()

    async def partial_frame(self, peer: str, protocol: str, *, declared: int, sent: int) -> Reply:
        """Declare a frame of `declared` bytes, send `sent` of them, then close our side."""
        try:
            stream = await self.host.open_stream(peer, protocol)
        except P2PError:
            return Reply("refused")
        try:
            await stream.write_bytes(_HEADER.pack(declared) + b"\x00" * sent)
            await stream.close()
            return await self._answer(stream)
        except P2PError:
            return Reply("closed")
        finally:
            await stream.reset()

    async def push_kad(self, peer: str, request: bytes) -> Reply:
        """Open a kad stream, write `request` as it is (a varint-framed kad message, or any
        bytes) and report what came back: "answered" with its bytes, "closed" when the
        target ended or reset the stream unanswered (SPEC §13.4.1)."""
        try:
            stream = await self.host.open_stream(peer, KAD_PROTOCOL)
        except P2PError:
            return Reply("refused")
        try:
            await stream.write_bytes(request)
            async with asyncio.timeout(self.answer_s):
                answer = await stream.read_bytes()
            return Reply("answered", answer) if answer else Reply("closed")
        except TimeoutError:
            return Reply("no-answer")
        except P2PError:
            return Reply("closed")
        finally:
            await stream.reset()

    async def _answer(self, stream: FrameStream) -> Reply:
        try:
            async with asyncio.timeout(self.answer_s):
                return Reply("answered", await stream.read_frame())
        except TimeoutError:
            return Reply("no-answer")
        except HearthError:
            return Reply("closed")

    @asynccontextmanager
    async def hold_streams(
        self, peer: str, protocol: str, count: int, *, declared: int, sent: int
    ) -> AsyncIterator[HeldStreams]:
        """Open `count` streams, each declaring a frame of `declared` bytes and sending `sent`
        of them; they stay open inside the `async with` and are reset after it."""
        held = HeldStreams()
        try:
            for _ in range(count):
                try:
                    stream = await self.host.open_stream(peer, protocol)
                except P2PError:
                    held.refused += 1
                    continue
                try:
                    await stream.write_bytes(_HEADER.pack(declared) + b"\x00" * sent)
                except P2PError:
                    held.refused += 1
                    await stream.reset()
                    continue
                held.streams.append(stream)
            yield held
        finally:
            for stream in held.streams:
                await stream.reset()

    # ---- delivery (SPEC §11) ------------------------------------------------------------------

    async def deliver(
        self,
        peer: str,
        items: Sequence[BatchItem],
        certificates: Sequence[bytes] | None = None,
    ) -> list[str]:
        """Send one DELIVER batch on our (reused) deliver stream to `peer`; one outcome per
        item. `certificates` defaults to our device's, index 0."""
        own = [self.stranger.certificate_bytes]
        certs = list(certificates) if certificates is not None else own
        frame = encode_deliver(next(self._batch_ids), certs, list(items))
        whole = await self._deliver_frame(peer, frame)
        if isinstance(whole, Ack):
            return [result_outcome(r) for r in whole.results]
        return [whole] * len(items)

    async def deliver_wires(self, peer: str, wires: Sequence[bytes], recipient: bytes) -> list[str]:
        """Deliver envelopes signed by our device to `recipient` (SPEC §11.2)."""
        return await self.deliver(peer, [BatchItem(0, recipient, w) for w in wires])

    async def deliver_raw(self, peer: str, frame: bytes) -> str:
        """Send any bytes as one frame of the deliver stream; the outcome of the whole frame."""
        whole = await self._deliver_frame(peer, frame)
        return "ACK" if isinstance(whole, Ack) else whole

    async def _deliver_frame(self, peer: str, frame: bytes) -> Ack | str:
        stream = self._deliver.get(peer)
        try:
            if stream is None or stream.closed:
                stream = await self.host.open_stream(peer, DELIVER_PROTOCOL)
                self._deliver[peer] = stream
        except P2PError:
            return "refused"
        try:
            await stream.write_frame(frame)
            reply = await self._answer(stream)
        except P2PError:
            reply = Reply("closed")
        if reply.frame is None:
            await self._drop(peer)
            return reply.outcome
        try:
            answer = decode_frame(reply.frame)
        except HearthError:
            await self._drop(peer)
            return "garbled"
        if isinstance(answer, ProtocolErrorFrame):
            await self._drop(peer)
            return f"ERROR:{code_name(answer.code)}"
        if isinstance(answer, Ack):
            return answer
        await self._drop(peer)
        return "garbled"

    async def _drop(self, peer: str) -> None:
        stream = self._deliver.pop(peer, None)
        if stream is not None:
            await stream.reset()

    def trap_relays(self) -> DeliveryTrap:
        """Serve the deliver protocol as a relay that answers RELAYED and passes nothing on."""
        return self.catch_deliveries(AckStatus.RELAYED)

    def catch_deliveries(self, status: AckStatus, *, drop: int = 0) -> DeliveryTrap:
        """Serve the deliver protocol: each envelope delivered to us answered `status` (the
        trap's, which a case may change) and kept in the trap, after the first `drop` batches,
        which are dropped unanswered."""
        trap = DeliveryTrap(status=status, drop=drop)

        async def serve(stream: FrameStream) -> None:
            async for data in stream:
                frame = decode_frame(data)
                if not isinstance(frame, Deliver):
                    return
                if trap.drop > 0:
                    trap.drop -= 1
                    trap.dropped.extend(item.wire for item in frame.items)
                    trap.got_one.set()
                    await stream.reset()
                    return
                trap.batches += 1
                trap.envelopes += len(frame.items)
                trap.recipients.update(item.recipient for item in frame.items)
                trap.wires.extend(item.wire for item in frame.items)
                trap.got_one.set()
                results = tuple(
                    DeliveryResult(message_id=_message_id(item.wire), status=trap.status)
                    for item in frame.items
                )
                await stream.write_frame(
                    encode_ack(sign_ack(self._node_key, frame.batch_id, results))
                )

        self.host.set_stream_handler(DELIVER_PROTOCOL, serve)
        return trap

    def catch_signals(self) -> SignalTrap:
        """Serve the signals protocol: each push's one frame kept in the trap, nothing
        answered (SPEC §32.4.1)."""
        trap = SignalTrap()

        async def serve(stream: FrameStream) -> None:
            trap.frames.append(await stream.read_frame())
            trap.got_one.set()

        self.host.set_stream_handler(SIGNALS_PROTOCOL, serve)
        return trap

    # ---- hello (SPEC §13.3) -------------------------------------------------------------------

    async def announce_home(
        self, peer: str, *, records: Sequence[bytes] = (), bundles: tuple[KeyBundle, ...] = ()
    ) -> Reply:
        """A hello carrying our user's home record (naming this peer as its home, with our
        device's `bundles`), plus any other `records`: afterwards the target takes us for our
        stranger's home node."""
        hello = Hello(records=(self._home_record(bundles), *records), sent_ms=self.now_ms())
        return await self.request(peer, HELLO_PROTOCOL, encode_hello(hello))

    def answer_hellos(self, *, bundles: tuple[KeyBundle, ...] = ()) -> None:
        """Answer a target's hello with our user's home record (listing our device's
        `bundles`), as a node does; unlike a node, we never greet the target ourselves (only
        its greeting of us runs)."""

        async def serve(stream: FrameStream) -> None:
            await stream.read_frame()
            self.hellos_answered += 1
            answer = Hello(records=(self._home_record(bundles),), sent_ms=self.now_ms())
            await stream.write_frame(encode_hello(answer))

        self.host.set_stream_handler(HELLO_PROTOCOL, serve)

    def _home_record(self, bundles: tuple[KeyBundle, ...] = ()) -> bytes:
        """Our stranger's signed home record, naming this peer as its home."""
        return self.stranger.home_record(
            peer_ids=(self.peer_id,),
            addrs=tuple(self.host.listen_addrs),
            now_ms=self.now_ms(),
            bundles=bundles,
        )

    # ---- gossip (SPEC §14) --------------------------------------------------------------------

    async def join(self, topic: str, peer: str, *, mesh_s: float = 5.0) -> bool:
        """Subscribe to `topic` and wait (up to `mesh_s`) for `peer` in our mesh of it."""
        if topic not in self._topics:
            self._topics[topic] = await self.host.subscribe(topic)
        try:
            async with asyncio.timeout(mesh_s):
                await self.host.wait_for_mesh_peer(topic, peer)
        except TimeoutError:
            return False
        return True

    def captured(self, topic: str) -> list[bytes]:
        """Payloads others published on a topic we joined, since the last call (for replay)."""
        subscription = self._topics.get(topic)
        found: list[bytes] = []
        while subscription is not None and (message := subscription.get_nowait()) is not None:
            found.append(message.data)
        return found

    async def publish(self, topic: str, payload: bytes) -> str:
        """Publish raw `payload` on `topic`: "published", or "refused" if our host cannot."""
        try:
            await self.host.publish(topic, payload)
        except HearthError:
            return "refused"
        return "published"

    def gossip(self, wire: bytes, certificate: bytes | None = None) -> bytes:
        """A room-topic payload [certificate, envelope] (SPEC §14.1), our certificate by default."""
        return encode_gossip(certificate or self.stranger.certificate_bytes, wire)

    # ---- pacing -------------------------------------------------------------------------------

    @staticmethod
    async def flood(
        rate_per_s: float, count: int, send: Callable[[int], Awaitable[bool | None]]
    ) -> float:
        """Call `send(i)` for i in 0..count-1 at `rate_per_s`, stopping early if it returns
        False; returns the seconds it took (a slow target or kit makes it longer, never
        shorter)."""
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if await send(i) is False:
                break
        return time.perf_counter() - start


def _message_id(wire: bytes) -> MessageId:
    try:
        return load_envelope(wire).message_id
    except HearthError:
        return UNPARSED_ID
