"""Our user's room content encrypted for every member device (SPEC §27.5, §27.6, §27.9).

`Outgoing` asks `RoomSender.encrypt` before it seals a user's content. The answer holds the
encrypted body and, first, the shares that carry the room's Megolm session key over Olm to
member devices that lack it, each with its device's user (`Outgoing` groups them into ROOM_KEY
bodies, per user where the revision `addressed-room-keys` allows, SPEC §27.5.3): every device
the members' home records list with a key bundle (our own user's other devices included). A
new session starts when the room has none, when `needs_rotation` says so, or when a device
that had the key left the room (a member removed or a device revoked), or when the key would
reach a device of a member the session owes whose homes have not all advertised `owed-held`
(SPEC §27.11.3). `persist` writes the
session's advance and whom its key went to in the batch that commits the envelopes
(SPEC §27.8); `abandon` takes back what a failed commit never sent.

State: per room, our outbound session unpickled, with its age, message count and the devices
its key went to (each with its user) and the members it owes its key to (SPEC §27.10.1). The
store keeps the same (`e2ee.outbound`, `e2ee.shared`, `e2ee.owed`); this copy spares an
unpickle per send. The sends queued behind one that is starting or sharing a room's session.
Event loop only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass, field, replace
from typing import Final

import vodozemac

from hearthmesh.node.clock import Clock
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto, Recipient
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["Encryption", "RoomSender"]

log = logging.getLogger(__name__)

MAX_READY_SESSIONS: Final = 16
"""Sessions a rotation starts and shares ahead, per room, when more sends are queued than its
session may encrypt: a burst then pays one commit for its rotations, not one each."""

RECORD_LOOKUP_S: Final = 3.0
"""How long a send waits for the home records (and so the key bundles) of members we hold
none of: once per member per session, so a member whose record is nowhere costs one wait."""

RECORD_WAIT_MEMBERS: Final = 4
"""A send waits for records only when it holds none of at most this many members (and then
only for those whose lookup walks now: `find_record` answers the others at once, a miss
backing off or no turn or budget left): a few is a member whose hello failed, whose record a
walk brings in time for its share. More is a crowd, at scale a group's
members with no home (974 of 1,024 in the 50-node runs): waiting on the few walks drawn from it
(the burst, a turn, walks under way) held each sender's first message 2-3.8 s before its stamp
for records that never came (SPEC §20.6). A crowd is not waited for and owed the key instead;
its real members' key requests ask for their records live (SPEC §27.10.1)."""

AHEAD_MAX_DEVICES: Final = 64
"""A room's session is shared ahead of our next send (`share_ahead`) only while its members
list at most this many devices: a member that never sends pays that many shares a session at
most, and nothing in a larger room, whose first send shares as before (SPEC §27.10.3)."""


@dataclass(slots=True)
class _Outbound:
    """Our outbound session in one room, as this node holds it in memory."""

    session: vodozemac.GroupSession
    session_id: bytes
    created_ms: int
    messages: int
    shared: dict[DeviceId, UserId] = field(default_factory=dict)
    looked_up: set[UserId] = field(default_factory=set)
    """Members whose home record this session's sends looked up (once each)."""
    owed: dict[UserId, int] = field(default_factory=dict)
    """Members this session encrypted for while we knew none of their devices, each with the
    first index it did (SPEC §27.10.1): a key request from them is answered from there."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Encryption:
    """One piece of content encrypted, for `Outgoing` to seal and commit."""

    room: RoomId
    body: bytes
    """The encrypted body (SPEC §27.6)."""
    plaintext: bytes
    """[content type, body] as it was encrypted: what our own view keeps (SPEC §27.7)."""
    key_shares: tuple[e2ee.AddressedShare, ...]
    """Shares of the session's key that must be committed (and sent) before the envelope."""
    sender_bundle: e2ee.KeyBundle | None
    """Our key bundle, the head of every ROOM_KEY body (SPEC §27.5.1); None with no shares."""
    newly_shared: dict[DeviceId, UserId]
    outbound: _Outbound
    members: frozenset[UserId]
    """The room's members as read where it was encrypted: the session's key is with their
    devices (or owed to them), and with no removed member's (SPEC §27.9, §27.10.1)."""
    newly_owed: tuple[UserId, ...] = ()
    """Members this envelope is the session's first for while we know none of their devices,
    or that joined while its send waited (`owe`)."""
    index: int = 0
    """The session's message index this envelope was encrypted at: the newly shared devices
    got the session's key there, and the newly owed members are owed it from there."""
    keys_only: bool = False
    """The shares alone, ahead of our next send (`share_ahead`): no content, no envelope."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _KeyWork:
    """What preparing a session gives the send that first uses it: the shares of its key
    for the member devices that lacked it (with our bundle), those devices, and the members
    none of whose devices we knew, owed the key from this send on (SPEC §27.10.1)."""

    key_shares: tuple[e2ee.AddressedShare, ...] = ()
    sender_bundle: e2ee.KeyBundle | None = None
    newly: dict[DeviceId, UserId] = field(default_factory=dict)
    owed: tuple[UserId, ...] = ()


_NO_KEY_WORK: Final = _KeyWork()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ready:
    """A session started and shared ahead, for the sends queued in a burst: not used yet."""

    outbound: _Outbound
    work: _KeyWork


@dataclass(frozen=True, slots=True, kw_only=True)
class _Queued:
    """A send waiting while another starts or shares the room's session."""

    members: Callable[[], frozenset[UserId]]
    content_type: str
    body: bytes
    future: asyncio.Future[Encryption | _Turn]


class _Turn:
    """Said to a queued send that must prepare the room's session itself."""


_YOUR_TURN: Final = _Turn()


def _encrypt(
    room: RoomId,
    outbound: _Outbound,
    members: frozenset[UserId],
    content_type: str,
    body: bytes,
    work: _KeyWork = _NO_KEY_WORK,
) -> Encryption:
    """Encrypt one send's content; the key's shares (and the devices they reach) and the
    members it is owed to from here go with it, or, if it cannot be encrypted, those devices
    are taken as lacking the key again and those members as owed nothing."""
    newly, owed = work.newly, work.owed
    index = outbound.session.message_index  # where its ROOM_KEY bodies start, if any
    for user in owed:
        outbound.owed[user] = index
    plaintext = e2ee.encode_plaintext(content_type, body)
    try:
        encrypted, _ = e2ee.encrypt_plaintext(outbound.session, plaintext)
    except HearthError:
        for device in newly:
            outbound.shared.pop(device, None)  # its ROOM_KEY bodies never go out
        for user in owed:
            del outbound.owed[user]
        raise
    outbound.messages += 1
    return Encryption(
        room=room,
        body=encrypted,
        plaintext=plaintext,
        key_shares=work.key_shares,
        sender_bundle=work.sender_bundle,
        newly_shared=newly,
        outbound=outbound,
        members=members,
        newly_owed=owed,
        index=index,
    )


def _unshare(outbound: _Outbound, work: _KeyWork) -> None:
    """The devices a preparation shared with, taken as lacking the key again: its shares
    were never sent."""
    for device in work.newly:
        outbound.shared.pop(device, None)


def _with_users(
    shares: Sequence[e2ee.Share], devices: dict[DeviceId, tuple[UserId, e2ee.KeyBundle]]
) -> tuple[e2ee.AddressedShare, ...]:
    """Each share with the user whose record lists its device (the homes it goes to)."""
    return tuple(
        e2ee.AddressedShare(user=devices[share.recipient][0], share=share) for share in shares
    )


def _new_outbound(now_ms: int, *, looked_up: Set[UserId] = frozenset()) -> _Outbound:
    session = vodozemac.GroupSession()
    return _Outbound(
        session=session,
        session_id=e2ee.session_id_bytes(session.session_id),
        created_ms=now_ms,
        messages=0,
        looked_up=set(looked_up),
    )


class RoomSender:
    """Encrypts our user's content per room (see the module docstring)."""

    def __init__(
        self,
        *,
        crypto: DeviceCrypto,
        store: AsyncStore,
        directory: HomeDirectory,
        find_record: Callable[[UserId], Awaitable[bool]],
        device: DeviceId,
        clock: Clock,
        rotation: e2ee.Rotation,
        owed_held: Callable[[Set[UserId]], Set[UserId]],
        ask_levels: Callable[[Set[UserId]], Awaitable[bool]],
    ) -> None:
        """`find_record(user)` looks a member's record up (True once found; False at once
        when no walk may start, `HomeLookups.find`).
        `owed_held(users)`: those of `users` whose homes all advertised `owed-held`
        (`Revisions.advertised`, from answers already in hand). `ask_levels(users)`: ask
        those of their homes that never answered (`Revisions.ask_due`), True if it asked any;
        awaited only where a session would otherwise rotate for an owed member's home whose
        levels are not known (SPEC §27.11.3)."""
        self._crypto = crypto
        self._store = store
        self._directory = directory
        self._find_record = find_record
        self._device = device
        self._clock = clock
        self._rotation = rotation
        self._owed_held = owed_held
        self._ask_levels = ask_levels
        self._rooms: dict[RoomId, _Outbound] = {}
        self._queues: dict[RoomId, collections.deque[_Queued]] = {}
        """Per room a send is starting or sharing a session in: the sends waiting for it."""
        self._preparing: set[RoomId] = set()
        """Rooms where a send is starting or sharing a session (it serves the queue after)."""
        self._unresumed: dict[RoomId, int] = {}
        """Per room, queued sends woken with their encryption that have not resumed yet: new
        sends queue behind them, so every send seals in the order it was encrypted."""
        self._ready: dict[RoomId, collections.deque[_Ready]] = {}
        """Per room, sessions started and shared ahead (at most `MAX_READY_SESSIONS`)."""
        self._held: dict[RoomId, int] = {}
        """Per room, our membership changes about to seal (`hold_queue`): its queue waits."""
        self._resumes: dict[RoomId, asyncio.Event] = {}
        """Per room, set once every send woken with its encryption has resumed."""

    async def encrypt(
        self,
        room: RoomId,
        members: Callable[[], frozenset[UserId]],
        content_type: str,
        body: bytes,
    ) -> Encryption:
        """Encrypt (content type, body) for the member devices of `room`.

        `members` reads the room's members as they are now; it is read where the content is
        encrypted (after any wait), so the session's key is with the devices of the members
        read there and with no removed member's: a member removed while the send waited (a
        session being started or shared, its queue) is not given this envelope's key, and
        the session rotates if it had it (SPEC §27.9, §27.10.1). What it raises, `encrypt`
        raises (NotAuthorized: our user was removed meanwhile).

        A send that finds the room's session ready (in memory, within its limits, its key with
        every member device) encrypts at once, without awaiting. One that must start a session,
        look records up or share the key does it while the room's later sends queue; it then
        encrypts the queued ones up to the next that needs such work (which takes its turn), so
        each queued send wakes once, encrypted, and they reach the store together. (Behind a
        lock, they each woke in a loop iteration of their own and took a commit each.)

        Raises:
            LocalProtocolError: the content does not fit one envelope once encrypted.
            StorageError: a new session or an Olm session could not be stored.
        """
        queue = self._queues.get(room)
        if queue is None and self._unresumed.get(room):
            # Sends encrypted for the queue have not sealed yet: going first, this one could
            # seal a message of a session before that session's ROOM_KEY.
            queue = self._queues[room] = collections.deque()
        if queue is not None:
            queued = _Queued(
                members=members,
                content_type=content_type,
                body=body,
                future=asyncio.get_running_loop().create_future(),
            )
            queue.append(queued)
            try:
                served = await queued.future
            except asyncio.CancelledError:
                future = queued.future
                if future.done() and not future.cancelled():
                    served = future.result()
                    if isinstance(served, Encryption):
                        self.abandon(served)  # its ROOM_KEY bodies, if any, never go out
                        self._resumed(room)
                    else:
                        self._preparing.discard(room)
                        self._serve_queue(room)  # hand the turn on
                raise
            if isinstance(served, Encryption):
                self._resumed(room)
                return served
        else:
            ready = self._encrypt_ready(room, members(), content_type, body)
            if ready is not None:
                return ready
            self._queues[room] = collections.deque()
            self._preparing.add(room)
        try:
            outbound, work, read, now = await self._prepared(room, members)
            return self.owe(_encrypt(room, outbound, read, content_type, body, work), now - read)
        finally:
            self._preparing.discard(room)
            self._serve_queue(room)

    async def _prepared(
        self, room: RoomId, members: Callable[[], frozenset[UserId]]
    ) -> tuple[_Outbound, _KeyWork, frozenset[UserId], frozenset[UserId]]:
        """The room's session prepared for the members read, with those members and the
        members read again once it is ready. A member removed while it was prepared (its
        shares made, its records looked up) has it prepared again, for the members then: the
        shares made for that member's devices are dropped unsent, and a session whose key
        they held already rotates (SPEC §27.9). A member added meanwhile (in the second set,
        not the first) is to be owed the session from the envelope's index (`owe`)."""
        read = members()
        while True:
            outbound, work = await self._prepare(room, read)
            try:
                now = members()
            except HearthError:
                _unshare(outbound, work)
                raise
            if read <= now:
                return outbound, work, read, now
            _unshare(outbound, work)  # never sent: the next preparation shares afresh
            read = now

    def wants_ahead(self, room: RoomId, members: Set[UserId]) -> bool:
        """Would `share_ahead` share now? Only while no send of the room is at work (it
        shares itself), the members list 1 to `AHEAD_MAX_DEVICES` devices, and some lack the
        key of the session our next send would use: none held yet, a device that joined or
        was linked since, or (for a session we sent with) a rotation due, a leaver's among
        them. A session that never encrypted rotates at our first send, as before: a member
        that never sends does not start a session again at every leave (SPEC §27.10.3)."""
        if room in self._queues or room in self._held or self._unresumed.get(room):
            return False
        devices = self._member_devices(members)
        if not 0 < len(devices) <= AHEAD_MAX_DEVICES:
            return False
        outbound = self._rooms.get(room)
        if outbound is None:
            return True  # a session kept in the store is read and judged by `share_ahead`
        if self._rotates(outbound, members, devices):
            return outbound.messages > 0
        return any(device not in outbound.shared for device in devices)

    async def share_ahead(
        self, room: RoomId, members: Callable[[], frozenset[UserId]]
    ) -> Encryption | None:
        """The shares of the room's session (started or rotated first if it must be) for the
        member devices that lack its key, ahead of our next send, which then carries none and
        goes on the room's gossip like any later one: a first message was read only once its
        key's direct copy came, one delivery per member home (SPEC §27.10.3). `Outgoing` seals
        and commits them (`keys_only`); None when `wants_ahead` says no, or there is nothing
        to share. Sends meanwhile queue behind it as behind a send's preparation."""
        if room not in self._rooms:
            kept = await self._store.read_inline(self._kept, self._store.store, room)
            if kept is not None and room not in self._rooms:
                self._rooms[room] = kept
        if not self.wants_ahead(room, members()):
            return None
        self._queues[room] = collections.deque()
        self._preparing.add(room)
        try:
            outbound, work, read, _ = await self._prepared(room, members)
        finally:
            self._preparing.discard(room)
            self._serve_queue(room)
        if not work.key_shares:
            _unshare(outbound, work)  # nothing goes out: a later send shares with them
            return None
        # Whom the session owes is noted by the send that encrypts for them (their index).
        return Encryption(
            room=room,
            body=b"",
            plaintext=b"",
            key_shares=work.key_shares,
            sender_bundle=work.sender_bundle,
            newly_shared=work.newly,
            outbound=outbound,
            members=read,
            index=outbound.session.message_index,
            keys_only=True,
        )

    def may_share(self, room: RoomId, members: Set[UserId]) -> bool:
        """Might the next send in `room` carry shares of a session's key (a session to start,
        a device that lacks the key, a session started ahead, sends queued)? `Outgoing` asks
        the homes which form the shares may take only then (SPEC §27.5.3): a send with a
        ready session must not wait on a member's home."""
        outbound = self._rooms.get(room)
        return (
            outbound is None
            or room in self._queues
            or bool(self._ready.get(room))
            or self._needs_work(outbound, members)
        )

    def _resumed(self, room: RoomId) -> None:
        """A queued send woke with its encryption (and seals it now): once all have, the
        sends queued behind them are served."""
        left = self._unresumed[room] - 1
        if left:
            self._unresumed[room] = left
            return
        del self._unresumed[room]
        resumed = self._resumes.pop(room, None)
        if resumed is not None:
            resumed.set()
        if room in self._queues and room not in self._preparing:
            self._serve_queue(room)

    async def hold_queue(self, room: RoomId) -> None:
        """Hold the room's queue of sends for a membership change of ours about to seal:
        returns once every send encrypted from the queue has sealed, and no queued send is
        encrypted until `release_queue`. Call `release_queue` once the change is sealed, with
        no await between this returning and the seal: a send encrypted for the members before
        the change (a member it removes among them) then seals before it, never after
        (SPEC §27.9, §27.10.1)."""
        self._held[room] = self._held.get(room, 0) + 1
        try:
            while self._unresumed.get(room):
                await self._resumes.setdefault(room, asyncio.Event()).wait()
        except BaseException:
            self.release_queue(room)
            raise

    def release_queue(self, room: RoomId) -> None:
        """End a `hold_queue`: the sends queued meanwhile are served (for the members now)."""
        left = self._held[room] - 1
        if left:
            self._held[room] = left
            return
        del self._held[room]
        if room in self._queues and room not in self._preparing and not self._unresumed.get(room):
            self._serve_queue(room)

    def _serve_queue(self, room: RoomId) -> None:
        """Encrypt the room's queued sends in order, up to the first that needs work first:
        that one is woken to do it, the rest stay queued behind it; none while the queue is
        held for a membership change of ours (`hold_queue`)."""
        if room in self._held:
            return  # `release_queue` serves it
        queue = self._queues[room]
        while queue:
            queued = queue.popleft()
            if queued.future.done():  # its sender gave up
                continue
            try:  # the members as they are now, not when it queued
                encryption = self._encrypt_ready(
                    room, queued.members(), queued.content_type, queued.body
                )
            except HearthError as exc:
                queued.future.set_exception(exc)
                continue
            if encryption is None:
                self._preparing.add(room)
                queued.future.set_result(_YOUR_TURN)
                return
            queued.future.set_result(encryption)
            self._unresumed[room] = self._unresumed.get(room, 0) + 1
        del self._queues[room]

    def _encrypt_ready(
        self, room: RoomId, members: frozenset[UserId], content_type: str, body: bytes
    ) -> Encryption | None:
        """Encrypt with the room's session, or with the next session started ahead when the
        room's needs work (its ROOM_KEY bodies go with this send); None if neither will do."""
        outbound = self._rooms.get(room)
        if outbound is not None and not self._needs_work(outbound, members):
            return _encrypt(room, outbound, members, content_type, body)
        ready = self._ready.get(room)
        while ready:
            spare = ready.popleft()
            if not self._needs_work(spare.outbound, members):  # else stale: dropped
                self._rooms[room] = spare.outbound
                return _encrypt(room, spare.outbound, members, content_type, body, spare.work)
        self._ready.pop(room, None)
        return None

    def _needs_work(self, outbound: _Outbound, members: Set[UserId]) -> bool:
        """Must a send rotate, look a record up, share the key or note a member it owes the
        key to before it encrypts?"""
        devices = self._member_devices(members)
        return (
            self._rotates(outbound, members, devices)
            or bool(members - outbound.looked_up - self._directory.known(members))
            or any(device not in outbound.shared for device in devices)
            or bool(self._unowed(outbound, members))
        )

    async def _prepare(self, room: RoomId, members: Set[UserId]) -> tuple[_Outbound, _KeyWork]:
        """The room's session ready to encrypt (started anew if it must be), with what its
        first send carries (`_KeyWork`); a new session and the Olm sessions the shares advanced
        are stored in one write batch."""
        outbound = self._rooms.get(room)
        if outbound is None:
            outbound = await self._store.read_inline(self._kept, self._store.store, room)
        devices = self._member_devices(members)
        now_ms = self._clock.now_ms()
        fresh = outbound is None or self._rotates(outbound, members, devices)
        if outbound is None or fresh:
            outbound = _new_outbound(now_ms)
        unknown = members - outbound.looked_up - self._directory.known(members)
        if unknown:  # once per session: a member whose record is away stays unshared
            outbound.looked_up |= unknown
            if await self._records_came(unknown):
                devices = self._member_devices(members)
        missing = {d: devices[d] for d in devices if d not in outbound.shared}
        owed_receiving = self._owed_receiving(outbound, missing)
        if (
            not fresh
            and self._owes_a_home_that_refuses(owed_receiving)
            and await self._ask_levels(owed_receiving)
        ):
            # A record learnt after the send asked the members' homes (a lookup, gossip): its
            # homes' levels are not known yet, and a home that does advertise `owed-held`
            # would cost a rotation for nothing (2 of 3 bursts while records came, SPEC
            # §27.11.3). Asked now; records may have come meanwhile.
            devices = self._member_devices(members)
            missing = {d: devices[d] for d in devices if d not in outbound.shared}
            owed_receiving = self._owed_receiving(outbound, missing)
        if not fresh and self._owes_a_home_that_refuses(owed_receiving):
            # The share would reach an owed member's home of a release that refuses what is
            # older than the session it holds: a new session keeps the owed ones held there
            # (SPEC §27.11.3). The old one stays kept, with whom it owes, for their requests.
            outbound = _new_outbound(now_ms, looked_up=outbound.looked_up)
            fresh = True
            missing = dict(devices)
        # Owed from the records the shares are made from: a record learnt while they are made
        # (a hello) must not leave its member neither given the key nor owed it (SPEC §27.10.1).
        owed = self._unowed(outbound, members)
        spares = [
            _new_outbound(now_ms, looked_up=outbound.looked_up)
            for _ in range(self._spares_wanted(room, outbound))
        ]
        spares_owed = self._unowed(spares[0], members) if spares else ()  # each owes none yet
        key_shares: tuple[e2ee.AddressedShare, ...] = ()
        bundle: e2ee.KeyBundle | None = None
        if fresh or missing or spares:
            every = [Recipient(bundle=bundle) for _, bundle in devices.values()]
            starts = [
                (outbound, [Recipient(bundle=bundle) for _, bundle in missing.values()], fresh),
                *((spare, every, True) for spare in spares),
            ]
            ours, shares = await self._store.run(self._start_and_share, room, starts, now_ms=now_ms)
            bundle = ours
            key_shares = _with_users(shares[0], devices)
            everyone = {device: user for device, (user, _) in devices.items()}
            ready = self._ready.setdefault(room, collections.deque())
            for spare, spare_shares in zip(spares, shares[1:], strict=True):
                spare.shared.update(everyone)
                spare.owed.update(dict.fromkeys(spares_owed, 0))  # its first send owes them
                work = _KeyWork(
                    key_shares=_with_users(spare_shares, devices),
                    sender_bundle=ours,
                    newly=dict(everyone),
                    owed=spares_owed,
                )
                ready.append(_Ready(outbound=spare, work=work))
        self._rooms[room] = outbound  # a new session only once it is stored
        # taken as sent at once, so a send meanwhile does not share again; `abandon` takes
        # them back if the commit fails
        newly = {device: user for device, (user, _) in missing.items()}
        outbound.shared.update(newly)
        return outbound, _KeyWork(
            key_shares=key_shares, sender_bundle=bundle, newly=newly, owed=owed
        )

    async def _records_came(self, unknown: Set[UserId]) -> bool:
        """When the `unknown` members are few (`RECORD_WAIT_MEMBERS`), wait (at most
        `RECORD_LOOKUP_S`) for their lookups, which answer at once when they cannot walk now;
        did it ask? The others' homes are probed by the outbox, and what the session owes
        them their key requests get (SPEC §27.10.1). A crowd is not asked at all: counted
        alone, its few walks under way or due made it look few."""
        if len(unknown) > RECORD_WAIT_MEMBERS:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RECORD_LOOKUP_S):
                await asyncio.gather(*(self._find_record(user) for user in unknown))
        return True

    def _owes_a_home_that_refuses(self, owed_receiving: set[UserId]) -> bool:
        """Would a share reach a member the session owes (`_owed_receiving`) whose homes have
        not all advertised `owed-held` (SPEC §27.11.3)?"""
        return bool(owed_receiving) and e2ee.owes_a_home_that_refuses(
            receiving=owed_receiving, owed=owed_receiving, holding=self._owed_held(owed_receiving)
        )

    @staticmethod
    def _owed_receiving(
        outbound: _Outbound, missing: dict[DeviceId, tuple[UserId, e2ee.KeyBundle]]
    ) -> set[UserId]:
        """The members `outbound` owes whom sharing with the `missing` devices would reach."""
        return {user for user, _ in missing.values()} & outbound.owed.keys()

    def _spares_wanted(self, room: RoomId, outbound: _Outbound) -> int:
        """How many more sessions the room's queued sends will need past `outbound` (which
        encrypts the preparing send too), up to `MAX_READY_SESSIONS` in all."""
        per_session = self._rotation.max_messages
        left = per_session - outbound.messages - 1
        queued = len(self._queues.get(room, ()))
        held = len(self._ready.get(room, ()))
        wanted = -(-(queued - left) // per_session) if queued > left else 0
        return max(0, min(wanted, MAX_READY_SESSIONS) - held)

    def _start_and_share(
        self,
        room: RoomId,
        starts: list[tuple[_Outbound, list[Recipient], bool]],
        *,
        now_ms: int,
    ) -> tuple[e2ee.KeyBundle, list[list[e2ee.Share]]]:
        """Store each new session, then share each session's key with its recipients: one
        call of a store write batch, so a rotation (and the sessions started ahead with it)
        costs one commit. Our bundle, and the shares per session, in order."""
        shares = []
        for outbound, recipients, fresh in starts:
            if fresh:
                self._crypto.keep_new_outbound(room, outbound.session, now_ms=now_ms)
            shares.append(
                self._crypto.share_each(room, outbound.session, recipients) if recipients else []
            )
        return self._crypto.key_bundle(now_ms), shares

    def persist(self, store: Store, encryptions: Sequence[Encryption]) -> None:
        """Store each session's advance (pickled once, however many of `encryptions` it
        made) and whom its key went to; call it in the write batch that commits their
        envelopes (SPEC §27.8). The pickle is taken now, so it is at or past every index
        handed out so far."""
        latest: dict[int, Encryption] = {}
        for encryption in encryptions:
            latest[id(encryption.outbound)] = encryption  # its session's last, in order
            if encryption.newly_shared:
                store.mark_shared(
                    encryption.room,
                    encryption.outbound.session_id,
                    encryption.newly_shared,
                    encryption.index,
                )
            if encryption.newly_owed:
                store.mark_owed(
                    encryption.room,
                    encryption.outbound.session_id,
                    encryption.newly_owed,
                    encryption.index,
                )
        for encryption in latest.values():
            outbound = encryption.outbound
            self._crypto.save_outbound(
                encryption.room,
                outbound.session,
                created_ms=outbound.created_ms,
                messages=outbound.messages,
            )

    def owe(self, encryption: Encryption, joined: Set[UserId]) -> Encryption:
        """`encryption` with the members that joined the room while its send waited (read at
        the send's start, its seal's sequence number and HLC coming after their addition) owed
        the session from its index, as members none of whose devices it knew are (SPEC
        §27.10.1): its shares went to the devices of the members read, so a key request from
        theirs is answered from there, not from the index their devices are given later.
        Call it with no await between it and the seal; a member owed from earlier stays so."""
        outbound = encryption.outbound
        if joined <= encryption.members:
            return encryption
        late = tuple(sorted(user for user in joined if user not in outbound.owed))
        for user in late:
            outbound.owed[user] = encryption.index
        return replace(
            encryption,
            members=encryption.members.union(joined),
            newly_owed=(*encryption.newly_owed, *late),
        )

    def abandon(self, encryption: Encryption) -> None:
        """The commit failed: the ROOM_KEY bodies never went out, so share again next time
        (and the envelope neither: the members it owed the key to are owed it from the next)."""
        for device in encryption.newly_shared:
            encryption.outbound.shared.pop(device, None)
        for user in encryption.newly_owed:
            encryption.outbound.owed.pop(user, None)

    def _member_devices(
        self, members: Set[UserId]
    ) -> dict[DeviceId, tuple[UserId, e2ee.KeyBundle]]:
        """Every device with a key bundle that the members' newest records list, but ours."""
        devices: dict[DeviceId, tuple[UserId, e2ee.KeyBundle]] = {}
        for user in members:
            record = self._directory.record(user)
            if record is None:
                continue
            for bundle in record.bundles:
                if bundle.device != self._device:
                    devices[bundle.device] = (user, bundle)
        return devices

    def _unowed(self, outbound: _Outbound, members: Set[UserId]) -> tuple[UserId, ...]:
        """Members none of whose devices we know (no record of theirs held, or one that lists
        no key bundle) that `outbound` does not owe its key to yet: a send encrypts for them
        all the same, and what it owes them a key request gets (SPEC §27.10.1, §27.13.1). Our
        own user's record lists this device, so it is never owed."""
        unknown = []
        for user in members:
            if user in outbound.owed:
                continue
            record = self._directory.record(user)
            if record is None or not record.bundles:
                unknown.append(user)
        return tuple(sorted(unknown))

    def _kept(self, store: Store, room: RoomId) -> _Outbound | None:
        kept = self._crypto.kept_outbound(room)
        if kept is None:
            return None
        session, record = kept
        session_id = e2ee.session_id_bytes(session.session_id)
        return _Outbound(
            session=session,
            session_id=session_id,
            created_ms=record.created_ms,
            messages=record.messages,
            shared=dict(store.shared_devices(room, session_id)),
            owed=store.owed_users(room, session_id),
        )

    def _rotates(
        self,
        outbound: _Outbound,
        members: Set[UserId],
        devices: dict[DeviceId, tuple[UserId, e2ee.KeyBundle]],
    ) -> bool:
        return e2ee.needs_rotation(
            created_ms=outbound.created_ms,
            messages=outbound.messages,
            now_ms=self._clock.now_ms(),
            member_removed_since=self._someone_left(outbound, members, devices),
            limits=self._rotation,
        )

    def _someone_left(
        self,
        outbound: _Outbound,
        members: Set[UserId],
        devices: dict[DeviceId, tuple[UserId, e2ee.KeyBundle]],
    ) -> bool:
        """Did a device that had the key leave: its user is no member now, or the user's
        record (when we hold it) lists it no more (revoked)?"""
        for device, user in outbound.shared.items():
            if user not in members:
                return True
            if device not in devices and self._directory.lists_device(user, device) is False:
                return True
        return False
