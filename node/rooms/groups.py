"""Running a group and joining one by invite (SPEC §30): the pump of `protocol.invites`.

Our user's changes (kick, ban, roles, name, topic, avatar, invites, the history setting) go
through `Outgoing.change_membership`, which checks them against the fold first (SPEC §12.6); the
rules are `protocol.membership`'s. An invite is an INVITE event holding its digest (never its
secret), so every member's home folds the same record of it (SPEC §30.3). `serve` answers
`/hearthmesh/join/0`: it checks the invite against the fold and issues an ADD naming it (its
use, counted by every home's fold), whose welcome queues the group's membership history for the
joiner (SPEC §12.7). A peer asking faster than `JOINS_PER_S` is refused RATE_LIMITED; every
refusal is charged to the peer (SPEC §11.6).

State: the per-peer rate buckets, and the lock that admits one joiner at a time (the invites
are the fold's).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable
from contextlib import aclosing
from typing import Final

from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.outgoing import Outgoing
from hearthmesh.node.events import MembershipChanged, NodeEvent
from hearthmesh.node.identity.home_records import HomeRecords
from hearthmesh.node.mesh.answers import read_answer
from hearthmesh.node.mesh.greetings import Greetings
from hearthmesh.node.p2p.errors import StreamClosed
from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.node.p2p.host import P2PHost
from hearthmesh.node.rate_limit import RateLimiter
from hearthmesh.node.rooms.history_handoff import HistoryFetch
from hearthmesh.node.rooms.registry import RoomRegistry
from hearthmesh.node.subscribers import EventHub
from hearthmesh.protocol import invites
from hearthmesh.protocol.delivery import encode_error
from hearthmesh.protocol.envelope import Envelope, MessageId, RoomId
from hearthmesh.protocol.errors import (
    HearthError,
    MalformedMessage,
    NotFound,
    RemoteProtocolError,
    store_failed,
)
from hearthmesh.protocol.home_record import decode_home_record, verify_home_record
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.invite_record import encode_invite_nonce
from hearthmesh.protocol.membership import (
    AVATAR_DIGEST_BYTES,
    HISTORY_JOINED,
    HISTORY_SHARED,
    MAX_SHARED_HISTORY,
    Action,
    MembershipChange,
    Role,
    RoomState,
)
from hearthmesh.storage.async_store import AsyncStore

__all__ = [
    "DEFAULT_INVITE_TTL_MS",
    "HISTORY_TIMEOUT_S",
    "JOINS_BURST",
    "JOINS_PER_S",
    "GroupService",
]

log = logging.getLogger(__name__)

JOINS_PER_S: Final = 1
JOINS_BURST: Final = 8
"""Join requests one peer may make: a few retries, then one a second. Each costs a home record
verification and, when valid, a store write: this bounds what a stranger makes us do."""
DEFAULT_INVITE_TTL_MS: Final = 7 * 86_400_000
HISTORY_TIMEOUT_S: Final = 10.0
"""How long a join waits for the shared history's keys before it returns without them."""


class GroupService:
    """Our user's part in groups beyond create, add, join and leave (SPEC §30)."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        rooms: RoomRegistry,
        outgoing: Outgoing,
        records: HomeRecords,
        own_record: Callable[[], bytes],
        addrs: Callable[[], tuple[str, ...]],
        addresses_of: Callable[[UserId], tuple[str, ...]],
        history: HistoryFetch,
        host: P2PHost,
        greetings: Greetings,
        events: EventHub,
        clock: Clock,
        user: UserId,
        on_refused: Callable[[str, RemoteProtocolError], None],
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._outgoing = outgoing
        self._records = records
        self._own_record = own_record
        self._addrs = addrs
        self._addresses_of = addresses_of
        """The addresses (with /p2p/) of another user's homes, from their record."""
        self._admitting = asyncio.Lock()
        self._history = history
        self._host = host
        self._greetings = greetings
        self._events = events
        self._clock = clock
        self._user = user
        self._limits = RateLimiter(JOINS_PER_S, JOINS_BURST, clock)
        self._on_refused = on_refused
        """Charges the peer's standing (SPEC §11.6)."""
        self.refused = 0
        """Join requests answered with an ERROR frame (for tests and status)."""

    # --- running a group ----------------------------------------------------------------------

    async def state(self, room: RoomId) -> RoomState:
        """The group's folded state. Raises NotFound for a room that is not a group here."""
        state = await self._store.run(self._rooms.state, self._store.store, room)
        if state is None or state.direct:
            raise NotFound("no such group here")
        return state

    async def kick(self, room: RoomId, user: UserId) -> Envelope:
        return await self._change(room, MembershipChange(action=Action.KICK, target=user))

    async def ban(self, room: RoomId, user: UserId) -> Envelope:
        """Remove `user` (if a member) and refuse them every way back in until `unban`."""
        return await self._change(room, MembershipChange(action=Action.BAN, target=user))

    async def unban(self, room: RoomId, user: UserId) -> Envelope:
        return await self._change(room, MembershipChange(action=Action.UNBAN, target=user))

    async def set_role(self, room: RoomId, user: UserId, role: Role) -> Envelope:
        """Promote or demote a member (SPEC §30.2: only above both roles)."""
        change = MembershipChange(action=Action.ROLE, target=user, role=role)
        return await self._change(room, change)

    async def rename(self, room: RoomId, name: str) -> Envelope:
        change = MembershipChange(action=Action.RENAME, target=self._user, name=name)
        return await self._change(room, change)

    async def set_topic(self, room: RoomId, topic: str) -> Envelope:
        change = MembershipChange(action=Action.TOPIC, target=self._user, name=topic)
        return await self._change(room, change)

    async def set_avatar(self, room: RoomId, digest: bytes) -> Envelope:
        """The group's picture: a media digest (SPEC §25), or b"" for none."""
        if len(digest) not in (0, AVATAR_DIGEST_BYTES):
            raise MalformedMessage("an avatar is a media digest of 32 bytes")
        change = MembershipChange(action=Action.AVATAR, target=self._user, nonce=digest)
        return await self._change(room, change)

    async def set_history(self, room: RoomId, visibility: str, limit: int = 0) -> Envelope:
        """What a new member is given (SPEC §30.6): `joined` (nothing before their ADD) or
        `shared` (the last `limit` messages, 1 to MAX_SHARED_HISTORY).

        Raises:
            MalformedMessage: another visibility, or a limit out of range.
        """
        nonce = limit.to_bytes(2, "big") if visibility == HISTORY_SHARED and limit > 0 else b""
        if visibility not in (HISTORY_JOINED, HISTORY_SHARED) or (
            visibility == HISTORY_SHARED and not 1 <= limit <= MAX_SHARED_HISTORY
        ):
            raise MalformedMessage(
                f"history is joined, or shared with a limit of 1 to {MAX_SHARED_HISTORY}"
            )
        change = MembershipChange(
            action=Action.HISTORY, target=self._user, name=visibility, nonce=nonce
        )
        return await self._change(room, change)

    async def _change(self, room: RoomId, change: MembershipChange) -> Envelope:
        await self.state(room)  # NotFound before a rule's error for a room we do not know
        return await self._outgoing.change_membership(room, change)

    # --- invites ------------------------------------------------------------------------------

    async def create_invite(
        self, room: RoomId, *, ttl_ms: int = DEFAULT_INVITE_TTL_MS, max_uses: int = 1
    ) -> tuple[str, invites.InviteRecord]:
        """Issue an invite to `room` as an INVITE event every member's home folds (SPEC §30.3);
        returns its link (shown once: the group holds only its digest) and its record.

        Raises:
            NotFound / RoleRequired: not a group here, or we are not an admin of it.
            QuotaExceeded: the group holds MAX_INVITES_PER_GROUP usable invites.
        """
        state = await self.state(room)
        invites.may_invite(state, self._user)
        secret = secrets.token_bytes(invites.INVITE_SECRET_BYTES)
        digest = invites.invite_id(secret)
        nonce = encode_invite_nonce(digest, self._clock.now_ms() + ttl_ms, max_uses)
        await self._change(
            room, MembershipChange(action=Action.INVITE, target=self._user, nonce=nonce)
        )
        record = (await self.state(room)).invites[digest]
        invite = invites.Invite(room=room, secret=secret, addrs=self._invite_addrs(state))
        return invites.encode_invite(invite), record

    def _invite_addrs(self, state: RoomState) -> tuple[str, ...]:
        """Ours first, then the other admins' homes, one address of each in turn: a joiner
        gets in through any of them (SPEC §30.3.2)."""
        admins = sorted(
            (u for u, role in state.members.items() if role >= Role.ADMIN and u != self._user),
            key=lambda u: (-state.rank(u), u),
        )
        lists = [self._addrs(), *(self._addresses_of(u) for u in admins)]
        chosen: list[str] = []
        for turn in itertools.zip_longest(*lists):
            for addr in turn:
                if addr and "/p2p/" in addr and addr not in chosen:
                    chosen.append(addr)
        return tuple(chosen[: invites.MAX_INVITE_ADDRS])

    async def held_invites(self, room: RoomId) -> list[invites.InviteRecord]:
        """The group's invites, as its events fold here (an admin's view)."""
        state = await self.state(room)
        invites.may_invite(state, self._user)
        return sorted(state.invites.values(), key=lambda r: (r.created_ms, r.invite_id))

    async def revoke_invite(self, room: RoomId, invite_id: bytes) -> None:
        """Refuse every later join by this invite, at every admin's home (a REVOKE event).

        Raises:
            NotFound: the group holds no invite of that digest.
            MembershipConflict: revoked already.
        """
        state = await self.state(room)
        invites.may_invite(state, self._user)
        if invite_id not in state.invites:
            raise NotFound("no such invite in this group")
        change = MembershipChange(action=Action.REVOKE, target=self._user, nonce=invite_id)
        await self._change(room, change)

    # --- joining ------------------------------------------------------------------------------

    async def join_by_invite(self, text: str) -> RoomId:
        """Join the group an invite names, through the first of its admin homes that answers;
        returns once the ADD's membership history is folded here (we are a member) and, when
        the group shares history (SPEC §30.6), its keys are taken. The caller applies a
        timeout.

        Raises:
            InvalidIdentifier: the text is not an invite.
            InviteInvalid / InviteExpired / Banned / ...: the admin's home refused (its code).
            HearthError: no home of the invite could be reached.
        """
        invite = invites.decode_invite(text)
        request = invites.JoinRequest(
            room=invite.room, secret=invite.secret, home_record=self._own_record()
        )
        # subscribed before asking: the ADD may be folded here before the answer arrives
        async with aclosing(self._events.subscribe()) as events:
            peer, add = await self._ask_any(invite.addrs, request)
            if not await self._is_member(invite.room):
                async for event in events:
                    if _admits(event, invite.room, self._user):
                        break
        try:
            async with asyncio.timeout(HISTORY_TIMEOUT_S):
                await self._history.after_join(peer, invite.room, add)
        except (HearthError, TimeoutError) as exc:  # we are in: the history is what is missing
            log.warning("no history from %s for %s: %s", peer[-8:], invite.room.hex()[:12], exc)
        return invite.room

    async def _is_member(self, room: RoomId) -> bool:
        state = await self._store.run(self._rooms.state, self._store.store, room)
        return state is not None and state.is_member(self._user)

    async def _ask_any(
        self, addrs: tuple[str, ...], request: invites.JoinRequest
    ) -> tuple[str, MessageId]:
        """The peer that let us in and the ADD it made."""
        unreachable: HearthError = NotFound("the invite names no home")
        for addr in addrs:
            try:
                peer = await self._host.connect(addr, retry_now=True)
                await self._greetings.wait(peer)
            except HearthError as exc:  # the next admin home may answer
                if store_failed(exc):  # the store failed: the node fail-stops
                    raise
                log.info("invite home %s unreachable: %s", addr, exc)
                unreachable = exc
                continue
            return peer, await self._ask(peer, request)  # an answer, even a refusal, is final
        raise unreachable

    async def _ask(self, peer: str, request: invites.JoinRequest) -> MessageId:
        async with await self._host.open_stream(peer, invites.JOIN_PROTOCOL) as stream:
            await stream.write_frame(invites.encode_join_request(request))
            frame = await stream.read_frame()
        return read_answer(  # SPEC §30.4
            frame,
            invites.decode_join_answer,
            peer=peer,
            charge=self._on_refused,
            refused_as="join refused",
        )

    # --- serving joins ------------------------------------------------------------------------

    async def serve(self, stream: FrameStream) -> None:
        """Answer one join request, then let the host close the stream."""
        data = await stream.read_request(self._refuse)
        if data is None:
            return
        try:
            self._limits.require(stream.remote_peer, "join requests")
            add = await self._admit(stream.remote_peer, invites.decode_join_request(data))
            answer = invites.encode_join_answer(add.message_id)
        except RemoteProtocolError as exc:
            self._refuse(stream.remote_peer, exc)
            answer = encode_error(exc)
        try:
            await stream.write_frame(answer)
        except StreamClosed:  # the joiner gave up: the ADD stands, its welcome is queued
            log.info("join stream to %s closed before the answer", stream.remote_peer)

    async def _admit(self, peer: str, request: invites.JoinRequest) -> Envelope:
        """Check the joiner and the invite as the group's fold holds it, and issue the ADD
        that names the invite: that ADD is its use, at every home that folds it (SPEC §30.4)."""
        now_ms = self._clock.now_ms()
        record = decode_home_record(request.home_record)
        verify_home_record(record, now_ms=now_ms)
        joiner = invites.check_joiner(record, peer)
        key = invites.invite_id(request.secret)
        # one admission at a time here: each sees the use the one before it folded
        async with self._admitting:
            state = await self._store.run(self._rooms.state, self._store.store, request.room)
            held = None if state is None or state.direct else state.invites.get(key)
            invites.check_invite(held, now_ms=now_ms)
            await self._records.learn(request.home_record)  # where the welcome goes
            change = MembershipChange(action=Action.ADD, target=joiner, nonce=key)
            return await self._outgoing.change_membership(request.room, change, welcome=(joiner,))

    def _refuse(self, peer: str, error: RemoteProtocolError) -> None:
        self.refused += 1
        self._on_refused(peer, error)
        log.debug("join from %s refused: %s (code %d)", peer[-8:], error, error.code)


def _admits(event: NodeEvent, room: RoomId, user: UserId) -> bool:
    return isinstance(event, MembershipChanged) and event.room == room and user in event.members
