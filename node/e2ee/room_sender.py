"""Our user's room content encrypted for every member device (SPEC §27.5, §27.6, §27.9).

`Outgoing` asks `RoomSender.encrypt` before it seals a user's content. The answer holds the
encrypted body and, first, the ROOM_KEY bodies that carry the room's Megolm session key over
Olm to member devices that lack it: every device the members' home records list with a key
bundle (our own user's other devices included). A new session starts when the room has none,
when `needs_rotation` says so, or when a device that had the key left the room (a member
removed or a device revoked). `persist` writes the session's advance and whom its key went to
in the batch that commits the envelopes (SPEC §27.8); `abandon` takes back what a failed commit
never sent.

State: per room, our outbound session unpickled, with its age, message count and the devices
its key went to (each with its user). The store keeps the same (`e2ee.outbound`,
`e2ee.shared`); this copy spares an unpickle per send. Event loop only; one share at a time
per room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Set
from dataclasses import dataclass, field
from typing import Final

import vodozemac

from hearthmesh.node.clock import Clock
from hearthmesh.node.e2ee.device_crypto import DeviceCrypto, Recipient
from hearthmesh.node.identity.home_directory import HomeDirectory
from hearthmesh.protocol import e2ee
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.storage.api import Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["Encryption", "RoomSender"]

log = logging.getLogger(__name__)

RECORD_LOOKUP_S: Final = 3.0
"""How long a send waits for the home records (and so the key bundles) of members we hold
none of: once per member per session, so a member whose record is nowhere costs one wait."""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Encryption:
    """One piece of content encrypted, for `Outgoing` to seal and commit."""

    room: RoomId
    body: bytes
    """The encrypted body (SPEC §27.6)."""
    key_bodies: tuple[bytes, ...]
    """ROOM_KEY bodies that must be committed (and sent) before the envelope."""
    newly_shared: dict[DeviceId, UserId]
    outbound: _Outbound
    shared_at: int = 0
    """The message index the newly shared devices got the session's key at."""


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
    ) -> None:
        self._crypto = crypto
        self._store = store
        self._directory = directory
        self._find_record = find_record
        self._device = device
        self._clock = clock
        self._rotation = rotation
        self._rooms: dict[RoomId, _Outbound] = {}
        self._locks: dict[RoomId, asyncio.Lock] = {}

    async def encrypt(
        self, room: RoomId, members: Set[UserId], content_type: str, body: bytes
    ) -> Encryption:
        """Encrypt (content type, body) for the member devices of `room`.

        Raises:
            LocalProtocolError: the content does not fit one envelope once encrypted.
            StorageError: a new session or an Olm session could not be stored.
        """
        lock = self._locks.setdefault(room, asyncio.Lock())
        async with lock:
            devices = self._member_devices(members)
            outbound = await self._outbound(room, members, devices)
            unknown = members - outbound.looked_up - self._directory.known(members)
            if unknown:  # once per session: a member whose record is away stays unshared
                outbound.looked_up |= unknown
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RECORD_LOOKUP_S):
                        await asyncio.gather(*(self._find_record(user) for user in unknown))
                devices = self._member_devices(members)
            missing = {d: devices[d] for d in devices if d not in outbound.shared}
            key_bodies: tuple[bytes, ...] = ()
            shared_at = 0
            if missing:
                shared_at = outbound.session.message_index
                recipients = [Recipient(bundle=bundle) for _, bundle in missing.values()]
                shares = await self._store.run(
                    self._crypto.share,
                    room,
                    outbound.session,
                    recipients,
                    now_ms=self._clock.now_ms(),
                )
                key_bodies = tuple(e2ee.encode_room_key_shares(s) for s in shares)
                # taken as sent at once, so a send meanwhile does not share again; `abandon`
                # takes them back if the commit fails
                newly = {device: user for device, (user, _) in missing.items()}
                outbound.shared.update(newly)
            else:
                newly = {}
            encrypted, _ = e2ee.encrypt_content(outbound.session, content_type, body)
            outbound.messages += 1
        return Encryption(
            room=room,
            body=encrypted,
            key_bodies=key_bodies,
            newly_shared=newly,
            outbound=outbound,
            shared_at=shared_at,
        )

    def persist(self, store: Store, encryption: Encryption) -> None:
        """Store the session's advance and whom its key went to; call it in the write batch
        that commits the envelopes (SPEC §27.8). The pickle is taken now, so it is at or past
        every index handed out so far."""
        outbound = encryption.outbound
        self._crypto.save_outbound(
            encryption.room,
            outbound.session,
            created_ms=outbound.created_ms,
            messages=outbound.messages,
        )
        if encryption.newly_shared:
            store.mark_shared(
                encryption.room,
                outbound.session_id,
                encryption.newly_shared,
                encryption.shared_at,
            )

    def abandon(self, encryption: Encryption) -> None:
        """The commit failed: the ROOM_KEY bodies never went out, so share again next time."""
        for device in encryption.newly_shared:
            encryption.outbound.shared.pop(device, None)

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

    async def _outbound(
        self,
        room: RoomId,
        members: Set[UserId],
        devices: dict[DeviceId, tuple[UserId, e2ee.KeyBundle]],
    ) -> _Outbound:
        outbound = self._rooms.get(room)
        if outbound is None:
            outbound = await self._store.read_inline(self._kept, self._store.store, room)
        now_ms = self._clock.now_ms()
        if outbound is None or e2ee.needs_rotation(
            created_ms=outbound.created_ms,
            messages=outbound.messages,
            now_ms=now_ms,
            member_removed_since=self._someone_left(outbound, members, devices),
            limits=self._rotation,
        ):
            session, record = await self._store.run(self._crypto.new_outbound, room, now_ms=now_ms)
            outbound = _Outbound(
                session=session,
                session_id=e2ee.session_id_bytes(session.session_id),
                created_ms=record.created_ms,
                messages=0,
            )
        self._rooms[room] = outbound
        return outbound

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
