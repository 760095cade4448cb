"""The catalogue: one named attack per finding of issue #12, and a runner for all of them.

Each attack is a coroutine `attack(kit, target) -> Observation` run by a fresh `HostilePeer`
already connected to the target; it sends what a stranger can send and records every answer
(outcome strings of `peer.py`). The runner gives each attack its own identity (a ban earned by
one attack must not hide the next) and, after each, checks from a clean peer that the target
still answers: `Observation.target_up` says which attack took a node down.

Sizes come from `Scale`: `Scale()` is the issue's figures, `Scale.soak()` a run of seconds.

Not here: finding 3 (our own membership write) has no outside trigger, and finding 8 is the
client API, which a peer cannot reach. `grinded_relay_candidate` sees batches only while the
target has an away recipient to relay for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.protocol.delivery import DELIVER_PROTOCOL, BatchItem, encode_deliver
from hearthmesh.protocol.envelope import Envelope, RoomId
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.fetch import FETCH_PROTOCOL
from hearthmesh.protocol.framing import MAX_FRAME_BYTES
from hearthmesh.protocol.gossip import load_gossip, room_topic
from hearthmesh.protocol.hello import HELLO_PROTOCOL, Hello, encode_hello
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.linking import LINK_PROTOCOL
from hearthmesh.protocol.media import MEDIA_PROTOCOL, MediaFrameType, encode_request
from hearthmesh.protocol.membership import Action, Role
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.protocol.sync import SYNC_PROTOCOL

from .forge import certificate_of_other, new_stranger, random_room
from .peer import HostilePeer, code_name, grind_seed

__all__ = [
    "ATTACKS",
    "PROTOCOLS",
    "Attack",
    "Observation",
    "Scale",
    "Target",
    "probe",
    "run_attack",
    "run_catalogue",
]

PROTOCOLS: Final = (
    DELIVER_PROTOCOL,
    FETCH_PROTOCOL,
    MEDIA_PROTOCOL,
    SYNC_PROTOCOL,
    HELLO_PROTOCOL,
    LINK_PROTOCOL,
)
"""Every stream protocol a node serves."""
_BATCH: Final = 64
"""Envelopes per DELIVER frame in the floods (well under SPEC §11.2's 256)."""
_HELLO_RECORDS: Final = 8
"""Home records one hello may carry (protocol/hello.py)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scale:
    """How much each attack sends. The defaults are the figures of issue #12."""

    relay_envelopes: int = 330
    oversized_envelopes: int = 1_500
    membership_events: int = 2_300
    held_streams: int = 200
    held_frame_bytes: int = MAX_FRAME_BYTES
    """Frames declared this long; held one byte short of it."""
    hold_s: float = 5.0
    directory_records: int = 1_000
    rotations: int = 3
    grind_tries: int = 2_000
    relay_watch_s: float = 3.0
    rate_per_s: float = 500.0
    """Pace of the floods, in envelopes (or frames) per second."""

    @classmethod
    def soak(cls) -> Scale:
        """A run of seconds, to run beside a chat in a test."""
        return cls(
            relay_envelopes=128,
            oversized_envelopes=128,
            membership_events=256,
            held_streams=16,
            held_frame_bytes=256 * 1024,
            hold_s=0.5,
            directory_records=64,
            rotations=2,
            grind_tries=100,
            relay_watch_s=0.5,
            rate_per_s=1_000.0,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The victim node, and what a stranger could have learnt about it."""

    peer_id: str
    address: str
    """A multiaddr ending in `/p2p/<peer_id>`."""
    user: UserId
    contacts: tuple[UserId, ...] = ()
    """Users it talks with: their direct rooms with it follow from the two ids (SPEC §3.4)."""
    groups: tuple[RoomId, ...] = ()
    """Group ids seen on gossip topics."""
    media: tuple[bytes, ...] = ()
    """Digests of blobs it holds, seen in messages."""
    scale: Scale = field(default_factory=Scale)

    def direct_rooms(self) -> list[RoomId]:
        return [direct_room_id(self.user, contact) for contact in self.contacts]


@dataclass(slots=True, kw_only=True)
class Observation:
    """What one attack sent and what came back."""

    name: str
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    notes: dict[str, float | int | str] = field(default_factory=dict)
    seconds: float = 0.0
    target_up: bool | None = None
    """After the attack, the target answered a clean peer's hello (None: not checked)."""

    def note(self, outcomes: Sequence[str] | str) -> None:
        """Count one or more outcomes (and as many sends)."""
        batch = [outcomes] if isinstance(outcomes, str) else list(outcomes)
        self.sent += len(batch)
        self.outcomes.update(batch)

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "sent": self.sent,
            "outcomes": dict(self.outcomes),
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
            "target_up": self.target_up,
        }


Attack = Callable[[HostilePeer, Target], Awaitable[Observation]]


async def _deliver_in_batches(
    kit: HostilePeer, target: Target, seen: Observation, items: Sequence[BatchItem]
) -> None:
    """Deliver `items` in batches of _BATCH at the scale's rate (in envelopes per second)."""
    batches = [items[i : i + _BATCH] for i in range(0, len(items), _BATCH)]

    async def send(i: int) -> None:
        seen.note(await kit.deliver(target.peer_id, batches[i]))

    await kit.flood(target.scale.rate_per_s / _BATCH, len(batches), send)


@asynccontextmanager
async def _fresh(kit: HostilePeer, target: Target) -> AsyncIterator[HostilePeer]:
    """The same attacker under a new peer id, connected to the target: for an attack whose
    every step should be answered on its merits, not refused for the steps before it."""
    async with kit.rotated() as peer:
        await peer.connect(target.address)
        yield peer


def _rooms_of(target: Target) -> list[RoomId]:
    """Rooms a stranger can name: the target's direct rooms and the groups it was seen in."""
    return [*target.direct_rooms(), *target.groups]


# --- finding 1: one gossip message kills a running node ------------------------------------------


async def oversized_membership_gossip(kit: HostilePeer, target: Target) -> Observation:
    """A signed MEMBERSHIP envelope with a body past its limit, published on the topic of a
    room the target follows (the validator checks signatures only), then delivered too."""
    seen = Observation(name="oversized_membership_gossip")
    for room in _rooms_of(target)[:1]:
        topic = room_topic(room)
        seen.notes["meshed"] = int(await kit.join(topic, target.peer_id))
        envelope = kit.forge.oversized_membership(room, now_ms=kit.now_ms())
        seen.note(await kit.publish(topic, kit.gossip(envelope.wire)))
        other = kit.forge.oversized_membership(room, now_ms=kit.now_ms())
        seen.note(await kit.deliver_wires(target.peer_id, [other.wire], target.user))
    return seen


# --- finding 2: a stranger empties a direct conversation ----------------------------------------


async def stranger_leave_direct(kit: HostilePeer, target: Target) -> Observation:
    """A LEAVE of our own (and an ADD of ourselves) into the target's direct rooms, delivered
    to it: a direct room takes no membership events at all (issue #12)."""
    seen = Observation(name="stranger_leave_direct")
    for room in target.direct_rooms():
        now = kit.now_ms()
        leave = kit.forge.membership(room, Action.LEAVE, kit.user_id, now_ms=now)
        add = kit.forge.membership(room, Action.ADD, kit.user_id, now_ms=now)
        seen.note(await kit.deliver_wires(target.peer_id, [leave.wire, add.wire], target.user))
    return seen


# --- finding 4: relay storage is unbounded ------------------------------------------------------


async def relay_flood(kit: HostilePeer, target: Target) -> Observation:
    """Messages for random recipients: each is someone the target should relay for."""
    seen = Observation(name="relay_flood")
    body = "r" * 1000
    items = [
        BatchItem(
            0, kit.rng(32), kit.forge.message(random_room(kit.rng), body, now_ms=kit.now_ms()).wire
        )
        for _ in range(target.scale.relay_envelopes)
    ]
    await _deliver_in_batches(kit, target, seen, items)
    seen.notes["relayed"] = seen.outcomes["RELAYED"]
    return seen


# --- finding 5: memory and CPU ------------------------------------------------------------------


async def oversized_membership_flood(kit: HostilePeer, target: Target) -> Observation:
    """Oversized MEMBERSHIP envelopes in random rooms, for the target's user."""
    seen = Observation(name="oversized_membership_flood")
    items = [
        BatchItem(
            0,
            target.user,
            kit.forge.oversized_membership(random_room(kit.rng), now_ms=kit.now_ms()).wire,
        )
        for _ in range(target.scale.oversized_envelopes)
    ]
    await _deliver_in_batches(kit, target, seen, items)
    return seen


async def membership_pile(kit: HostilePeer, target: Target) -> Observation:
    """Well-formed MEMBERSHIP events piled into one room the target is in: each is kept and
    (today) re-folds the whole list. Notes the slowest batch's answer time."""
    seen = Observation(name="membership_pile")
    rooms = _rooms_of(target)
    if not rooms:
        return seen
    room = rooms[0]
    actions = (Action.JOIN, Action.LEAVE, Action.ADD, Action.ROLE)
    items = [
        BatchItem(
            0,
            target.user,
            kit.forge.membership(room, actions[i % 4], kit.user_id, now_ms=kit.now_ms()).wire,
        )
        for i in range(target.scale.membership_events)
    ]
    slowest = 0.0
    for start in range(0, len(items), 256):
        began = time.perf_counter()
        seen.note(await kit.deliver(target.peer_id, items[start : start + 256]))
        slowest = max(slowest, time.perf_counter() - began)
    seen.notes["slowest_batch_s"] = round(slowest, 3)
    return seen


async def stream_hold(kit: HostilePeer, target: Target) -> Observation:
    """Many deliver streams, each holding a frame one byte short of its declared length."""
    seen = Observation(name="stream_hold")
    size = target.scale.held_frame_bytes
    async with kit.hold_streams(
        target.peer_id,
        DELIVER_PROTOCOL,
        target.scale.held_streams,
        declared=size,
        sent=size - 1,
    ) as held:
        await asyncio.sleep(target.scale.hold_s)  # holding is the attack
        seen.notes["opened"] = held.opened
        seen.notes["still_open_after_hold"] = held.still_open()
        seen.note(["held"] * held.opened + ["refused"] * held.refused)
    return seen


async def partial_frames(kit: HostilePeer, target: Target) -> Observation:
    """On every protocol (each under a new peer id): a frame cut off by EOF, and a length
    past every limit."""
    seen = Observation(name="partial_frames")
    for protocol in PROTOCOLS:
        name = protocol.rsplit("/", 2)[-2]
        async with _fresh(kit, target) as peer:
            cut = await peer.partial_frame(target.peer_id, protocol, declared=100, sent=50)
            seen.note(f"{name}:cut:{cut.summary}")
            lying = await peer.request(target.peer_id, protocol, b"\xff\xff\xff\xff", framed=False)
            seen.note(f"{name}:huge-length:{lying.summary}")
    return seen


async def garbage_frames(kit: HostilePeer, target: Target) -> Observation:
    """A frame of random bytes, and an empty frame, on every protocol (each under a new
    peer id)."""
    seen = Observation(name="garbage_frames")
    for protocol in PROTOCOLS:
        name = protocol.rsplit("/", 2)[-2]
        async with _fresh(kit, target) as peer:
            for payload in (kit.rng(200), b""):
                reply = await peer.request(target.peer_id, protocol, payload)
                seen.note(f"{name}:{reply.summary}")
    return seen


async def directory_flood(kit: HostilePeer, target: Target) -> Observation:
    """Hellos carrying home records of fresh users: the directory keeps each one."""
    seen = Observation(name="directory_flood")
    total = target.scale.directory_records
    for _ in range(0, total, _HELLO_RECORDS):
        records = [
            new_stranger(kit.rng, now_ms=kit.now_ms()).home_record(
                peer_ids=(kit.peer_id,), addrs=(), now_ms=kit.now_ms()
            )
            for _ in range(_HELLO_RECORDS)
        ]
        hello = Hello(records=tuple(records), sent_ms=kit.now_ms())
        reply = await kit.request(target.peer_id, HELLO_PROTOCOL, encode_hello(hello))
        seen.note(reply.summary)
    return seen


async def identity_rotation(kit: HostilePeer, target: Target) -> Observation:
    """Bad frames until cut off (a ban), then again under a new peer id, `rotations` times:
    a ban keyed by peer id costs the attacker one key pair."""
    seen = Observation(name="identity_rotation")
    cut_off = 0
    for _ in range(target.scale.rotations + 1):
        async with _fresh(kit, target) as peer:
            for _ in range(20):
                outcome = await peer.deliver_raw(target.peer_id, b"\xa0")  # a map, not a frame
                seen.note(outcome)
                if outcome in ("refused", "closed"):
                    cut_off += 1
                    break
    seen.notes["cut_off"] = cut_off
    return seen


# --- finding 6: relay choice is Sybil-prone -----------------------------------------------------


async def grinded_relay_candidate(kit: HostilePeer, target: Target) -> Observation:
    """A peer id ground to sort first, posing as a relay: does the target hand it batches for
    other users? (Connected as long as `relay_watch_s`.)"""
    seen = Observation(name="grinded_relay_candidate")
    seed = await asyncio.to_thread(grind_seed, kit.rng, tries=target.scale.grind_tries)
    async with kit.rotated(seed=seed) as grinder:
        trap = grinder.trap_relays()
        await grinder.connect(target.address)
        seen.notes["peer_id"] = grinder.peer_id
        try:
            async with asyncio.timeout(target.scale.relay_watch_s):
                await trap.got_one.wait()
        except TimeoutError:
            pass
        seen.notes["batches_taken"] = trap.batches
        seen.notes["envelopes_taken"] = trap.envelopes
        seen.note("watched")
    return seen


# --- finding 7: media opens by digest -----------------------------------------------------------


async def media_by_digest(kit: HostilePeer, target: Target) -> Observation:
    """Become a home of our stranger (hello), DM the target a message naming the digest, then
    ask for the blob. Notes the bytes served: anything above 0 is a leak."""
    seen = Observation(name="media_by_digest")
    seen.note(f"hello:{(await kit.announce_home(target.peer_id)).outcome}")
    leaked = 0
    room = direct_room_id(kit.user_id, target.user)
    for digest in target.media:
        envelope = kit.forge.media_message(room, digest, now_ms=kit.now_ms())
        seen.note(await kit.deliver_wires(target.peer_id, [envelope.wire], target.user))
        reply = await kit.request(target.peer_id, MEDIA_PROTOCOL, encode_request(digest))
        seen.note(f"media:{_media_outcome(reply.frame) if reply.frame else reply.outcome}")
        if reply.frame is not None and reply.frame[1] == MediaFrameType.CHUNK:
            leaked += len(reply.frame)
    seen.notes["leaked_bytes"] = leaked
    return seen


def _media_outcome(frame: bytes) -> str:
    kind = frame[1] if len(frame) > 1 else -1  # CBOR array header, then the frame type
    if kind == MediaFrameType.ERROR and len(frame) > 2:
        return f"ERROR:{code_name(frame[2])}"
    return MediaFrameType(kind).name if kind in MediaFrameType._value2member_map_ else "garbled"


# --- forged, replayed, unknown, unauthorized ----------------------------------------------------


async def forged_envelopes(kit: HostilePeer, target: Target) -> Observation:
    """Each breaks one rule: a bad signature, another device's certificate, an impersonation,
    an unknown kind, an unknown version, a body one byte too long."""
    seen = Observation(name="forged_envelopes")
    room = direct_room_id(kit.user_id, target.user)
    now = kit.now_ms()
    forge = kit.forge
    for wire in (
        forge.bad_signature(room, now_ms=now),
        forge.unknown_kind(room, now_ms=now),
        forge.unknown_version(room, now_ms=now),
        forge.oversized_body(room, now_ms=now),
    ):
        seen.note(await kit.deliver_wires(target.peer_id, [wire], target.user))
    other = certificate_of_other(kit.rng, now_ms=now)
    mine = forge.message(room, "whose?", now_ms=now)
    seen.note(await kit.deliver(target.peer_id, [BatchItem(0, target.user, mine.wire)], [other]))
    for contact in target.contacts:
        certificate, wire = forge.impersonation(
            direct_room_id(contact, target.user), contact, now_ms=now
        )
        seen.note(
            await kit.deliver(target.peer_id, [BatchItem(0, target.user, wire)], [certificate])
        )
    return seen


async def replayed_envelopes(kit: HostilePeer, target: Target) -> Observation:
    """A valid message, then the very same bytes again (twice), and whatever we captured on
    the target's room topics, sent back to it."""
    seen = Observation(name="replayed_envelopes")
    room = direct_room_id(kit.user_id, target.user)
    envelope = kit.forge.message(room, "hello, stranger here", now_ms=kit.now_ms())
    for _ in range(3):
        seen.note(await kit.deliver_wires(target.peer_id, [envelope.wire], target.user))
    captured: list[Envelope | None] = []
    for topic_room in _rooms_of(target)[:1]:
        topic = room_topic(topic_room)
        await kit.join(topic, target.peer_id, mesh_s=1.0)
        await asyncio.sleep(0.5)  # let the room's traffic reach us
        captured = [_gossip_envelope(p) for p in kit.captured(topic)]
    wires = [e.wire for e in captured if e is not None][:16]
    if wires:
        seen.note(await kit.deliver_wires(target.peer_id, wires, target.user))
    seen.notes["captured"] = len(wires)
    return seen


def _gossip_envelope(payload: bytes) -> Envelope | None:
    try:
        return load_gossip(payload).envelope
    except HearthError:
        return None


async def unauthorized_membership(kit: HostilePeer, target: Target) -> Observation:
    """In every room we can name: ADD ourselves, KICK the target, make ourselves ADMIN, JOIN
    without an invite, and a second CREATE; none of it is ours to do."""
    seen = Observation(name="unauthorized_membership")
    for room in _rooms_of(target):
        now = kit.now_ms()
        forge = kit.forge
        wires = [
            forge.membership(room, Action.ADD, kit.user_id, now_ms=now).wire,
            forge.membership(room, Action.KICK, target.user, now_ms=now).wire,
            forge.membership(room, Action.ROLE, kit.user_id, now_ms=now, role=Role.ADMIN).wire,
            forge.membership(room, Action.JOIN, kit.user_id, now_ms=now).wire,
            forge.membership(room, Action.CREATE, kit.user_id, now_ms=now).wire,
        ]
        seen.note(await kit.deliver_wires(target.peer_id, wires, target.user))
    return seen


async def oversized_frame(kit: HostilePeer, target: Target) -> Observation:
    """One DELIVER frame over the 1 MiB frame limit (SPEC §7)."""
    seen = Observation(name="oversized_frame")
    wire = kit.forge.message(random_room(kit.rng), "x" * 60_000, now_ms=kit.now_ms()).wire
    items = [BatchItem(0, target.user, wire)] * 20
    frame = encode_deliver(1, [kit.stranger.certificate_bytes], items)
    seen.notes["frame_bytes"] = len(frame)
    seen.note(await kit.deliver_raw(target.peer_id, frame))
    return seen


ATTACKS: Final[tuple[Attack, ...]] = (
    forged_envelopes,
    replayed_envelopes,
    garbage_frames,
    partial_frames,
    oversized_frame,
    unauthorized_membership,
    stranger_leave_direct,
    relay_flood,
    oversized_membership_flood,
    membership_pile,
    stream_hold,
    directory_flood,
    identity_rotation,
    grinded_relay_candidate,
    media_by_digest,
    oversized_membership_gossip,
)
"""The whole catalogue, the node-killer last so the others are seen first."""


async def probe(prober: HostilePeer, target: Target) -> bool:
    """Does the target answer a clean peer's hello (a peer that sends nothing else)?"""
    try:
        await prober.connect(target.address)
    except P2PError:  # unreachable means down
        return False
    return (await prober.announce_home(target.peer_id)).frame is not None


async def run_attack(
    attack: Attack, target: Target, prober: HostilePeer | None = None
) -> Observation:
    """One attack by a fresh identity connected to the target; then a probe by `prober` (a
    clean peer of its own if None)."""
    began = time.perf_counter()
    async with HostilePeer() as kit:
        try:
            await kit.connect(target.address)
        except P2PError as exc:  # the target may be down already
            seen = Observation(name=attack.__name__)
            seen.note(f"connect-failed:{type(exc).__name__}")
        else:
            try:
                seen = await attack(kit, target)
            except HearthError as exc:  # the target cut a step short (a ban, a reset)
                seen = Observation(name=attack.__name__)
                seen.note(f"attack-cut-short:{type(exc).__name__}")
    seen.seconds = time.perf_counter() - began
    async with contextlib.AsyncExitStack() as stack:
        if prober is None:
            prober = await stack.enter_async_context(HostilePeer())
        seen.target_up = await probe(prober, target)
    return seen


async def run_catalogue(
    target: Target,
    attacks: Sequence[Attack] = ATTACKS,
    *,
    beside: Callable[[], Coroutine[object, None, object]] | None = None,
) -> list[Observation]:
    """Every attack in turn against `target`, each observed and followed by a probe; with
    `beside`, a call of it runs alongside each attack and the next attack waits for both (the
    soak test's chat: a fixed amount of traffic during every attack, however long they take)."""
    seen: list[Observation] = []
    async with HostilePeer() as prober:
        for attack in attacks:
            async with asyncio.TaskGroup() as group:
                if beside is not None:
                    group.create_task(beside())
                observed = group.create_task(run_attack(attack, target, prober))
            seen.append(observed.result())
    return seen
