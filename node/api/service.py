"""`ApiService`: what the HTTP routes and WebSocket sessions do to a `Node`, and what the node's
events become for clients (SPEC §15-§19).

Durable events (message, receipt, membership, contact) reach clients through the feed, which
tails the store's arrival log in number order (feed.py, frames.py; SPEC §15.4.3). One pump
reads `Node.events(logged=True)`: the log entries a commit made (`Logged`, built only while it
asks) go to the feed, which publishes them as they are, with no read of the log; an event the
node reports stored that no told entry names is handed over with its envelope (rendered from
that copy) and wakes it; ephemeral ones (presence, typing, verification flows as they move,
SPEC §29.5.2) become frames at once, with no cursor. A message for our user that arrives while
no client is connected becomes a push notification (SPEC §19).

State: the connected client sessions, the feed, the receipts and push dispatcher it was built
with, and who is typing where (`_typing`); all on the asyncio loop, touched by the API's
handlers and the one pump over `Node.events()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, Final, Protocol

from aiohttp import web

from hearthmesh.node.api.actions import MessageActions, annotate
from hearthmesh.node.api.config import ApiConfig
from hearthmesh.node.api.feed import Feed, dumps
from hearthmesh.node.api.frames import FrameRenderer
from hearthmesh.node.api.push import PushDispatcher, load_vapid_key
from hearthmesh.node.api.receipts import ReceiptService, statuses_of, unread_count
from hearthmesh.node.api.verify_views import flow_view
from hearthmesh.node.api.views import (
    ROLE_NAMES,
    direct_recipient_view,
    encode_cursor,
    group_recipient_view,
    hlc_view,
    latest_message_view,
    profile_view,
)
from hearthmesh.node.clock import Clock
from hearthmesh.node.delivery.outgoing import WrittenTimes
from hearthmesh.node.delivery.seal_order import SealTurn
from hearthmesh.node.events import (
    DeviceKeysChanged,
    DeviceVerified,
    Logged,
    MembershipChanged,
    MessageReceived,
    NodeEvent,
    PresenceChanged,
    TypingChanged,
    VerificationChanged,
)
from hearthmesh.node.media.sealed import plain_size
from hearthmesh.node.node import Node
from hearthmesh.node.rooms.message_actions import states_of
from hearthmesh.node.supervisor import Supervisor
from hearthmesh.protocol.actions import ANNOTATED_CONTENT_TYPE, Annotated, target_of
from hearthmesh.protocol.client_api import MessageCommand, Send
from hearthmesh.protocol.content import (
    CONTACT_CONTENT_TYPE,
    MEDIA_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    ContactAction,
    ContactEvent,
    MediaRef,
    encode_contact,
    encode_media,
    is_user_content,
)
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId
from hearthmesh.protocol.errors import (
    MalformedMessage,
    NotAuthorized,
    NotFound,
    StorageError,
    WrongRoom,
)
from hearthmesh.protocol.identity import UserId, device_id_text, user_id_text
from hearthmesh.protocol.membership import Role
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.protocol.typing_ttl import TypingTimers
from hearthmesh.storage.api import Cursor, Direction, FeedEntry, FriendRequest, Profile, Store

__all__ = ["SERVICE_KEY", "ApiService", "ClientSession", "SendWitness"]

log = logging.getLogger(__name__)

_LATEST_SCAN: Final = 200
"""Events looked at, newest first, to find a conversation's latest user message."""
MAX_PEOPLE_SHOWN: Final = 256
"""Members whose profiles a conversation's page names; the rest go by user id."""
MAX_UNREAD_COUNTED: Final = 50
"""A conversation's unread count looks this far back: the list shows "50+" beyond it."""


class SendWitness(Protocol):
    """Who sent a message and hears first that it is durable ("sent"), before any client
    gets its `message` frame (SPEC §15.4)."""

    def message_sent(self, client_id: str, envelope: Envelope) -> None: ...


class ClientSession:
    """One connected WebSocket client: a bounded queue that its writer task drains."""

    def __init__(self, ws: web.WebSocketResponse, *, max_queued: int) -> None:
        self.ws = ws
        self._queue: deque[str] = deque()
        self._max = max_queued
        self._wake = asyncio.Event()
        self.too_slow = False
        self._held: list[str] | None = []
        """Live frames that arrive while the connection's replay is read; None once open."""

    def open(self, first: list[str]) -> None:
        """Queue `first` (ready, replay), then the live frames held meanwhile; go live."""
        held, self._held = self._held or [], None
        for text in first + held:
            self.put(text)

    def message_sent(self, client_id: str, envelope: Envelope) -> None:
        """Our send is durable: `message_sent` (a `SendWitness`)."""
        self.put(
            dumps(
                {
                    "event": "message_sent",
                    "client_id": client_id,
                    "message_id": envelope.message_id.hex(),
                    "room_id": envelope.room.hex(),
                    "hlc": hlc_view(envelope.hlc),
                }
            )
        )

    def put(self, text: str) -> None:
        """Queue a frame; a client this far behind is cut off (it resumes by cursor)."""
        if self._held is not None:
            self._held.append(text)
            return
        if self.too_slow:
            return
        if len(self._queue) >= self._max:
            self.too_slow = True
            self._wake.set()
            return
        self._queue.append(text)
        self._wake.set()

    async def write_loop(self) -> None:
        """Send queued frames in order until the client is gone or too slow."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                text = self._queue.popleft()
                try:
                    await self.ws.send_str(text)
                except UnicodeEncodeError:  # nothing was written: drop the frame, keep the client
                    log.error(
                        "dropped a frame with a lone surrogate (a decoder let it in): %.80r", text
                    )
            if self.too_slow:
                await self.ws.close(code=1013, message=b"too slow; reconnect with your cursor")
                return


class ApiService:
    """The client API's state: feed, sessions, receipts, push; and its operations."""

    def __init__(self, node: Node, config: ApiConfig, clock: Clock) -> None:
        self.node = node
        self.config = config
        self.clock = clock
        self.sessions: set[ClientSession] = set()
        self.receipts = ReceiptService(node, clock, on_stored=self._told)
        self.actions = MessageActions(node, config, clock)
        self.frames = FrameRenderer(node, self.receipts, self.actions, self._on_message)
        self.feed = Feed(
            node.store,
            render=self.frames.render,
            publish=self._publish,
            replay_limit=config.feed_size,
        )
        self.push: PushDispatcher | None = None
        self.api_url = ""
        self._typing = TypingTimers(config.typing_ttl_ms)
        self._typing_changed = asyncio.Event()

    @property
    def own(self) -> UserId:
        return self.node.user_id

    async def start(self, supervisor: Supervisor) -> None:
        """Start the event pump, the receipt flusher and the push workers, each kept running
        by `supervisor` (SPEC §11.8): what one client or event breaks ends none of them."""
        store = self.node.store
        vapid = await store.run(load_vapid_key, store)
        self.push = PushDispatcher(store=store, user=self.own, vapid=vapid, clock=self.clock)
        await self.feed.start()
        supervisor.keep(self._pump, "api-pump")
        # The pump's first step subscribes to the node's events; let it run before any
        # client can act, so no event falls between start and subscription.
        await asyncio.sleep(0)
        supervisor.keep(self.feed.run, "api-feed")
        supervisor.keep(self._end_lapsed_typing, "api-typing")
        supervisor.keep(self.receipts.run, "api-receipts")
        supervisor.keep(self.push.run, "api-push")

    # --- frames to clients ------------------------------------------------------------------

    def broadcast(self, frame: dict[str, Any]) -> None:
        """Send an ephemeral frame (no cursor, not replayed) to every connected client."""
        self._publish(dumps(frame))

    def _publish(self, text: str) -> None:
        for session in self.sessions:
            session.put(text)

    def _told(self, entries: list[FeedEntry]) -> None:
        """A commit of ours the feed was not part of (a receipt, a contact event) made these log
        entries: they ride the tail's next pass (a client acking each arrival would else wake it
        twice), which then needs no read of the log for them."""
        self.feed.tell(entries, wake=False)

    async def _pump(self) -> None:
        async for event in self.node.events(logged=True):
            self._on_event(event)

    def _on_event(self, event: NodeEvent) -> None:
        match event:
            case Logged(entries=entries):
                self.feed.tell(entries)
            case MessageReceived(envelope=envelope):
                self.feed.arrived(envelope)
            case MembershipChanged():
                self.feed.wake()
            case PresenceChanged(user=user, online=online, last_seen_ms=last_seen):
                self.broadcast(
                    {
                        "event": "presence",
                        "user_id": user_id_text(user),
                        "online": online,
                        "last_seen_ms": last_seen,
                    }
                )
            case TypingChanged(room=room, user=user, active=active):
                self._typing.update(room, user, active, self.clock.now_ms())
                self._typing_changed.set()
                self._typing_frame(room, user, active)
            case DeviceKeysChanged(user=user, devices=devices):
                self.broadcast(
                    {
                        "event": "device_keys_changed",
                        "user_id": user_id_text(user),
                        "device_ids": [device_id_text(d) for d in devices],
                    }
                )
            case DeviceVerified(user=user, device=device):
                self.broadcast(
                    {
                        "event": "device_verified",
                        "user_id": user_id_text(user),
                        "device_id": device_id_text(device),
                    }
                )
            case VerificationChanged(flow=flow_id):
                with contextlib.suppress(NotFound):  # pushed out by newer flows since
                    flow = self.node.verification.flow(flow_id)
                    self.broadcast({"event": "verification", **flow_view(flow)})

    def _typing_frame(self, room: RoomId, user: UserId, active: bool) -> None:
        self.broadcast(
            {
                "event": "typing",
                "room_id": room.hex(),
                "user_id": user_id_text(user),
                "active": active,
            }
        )

    async def _end_lapsed_typing(self) -> None:
        """Tell clients `active: false` for indicators not refreshed in time (SPEC §17)."""
        while True:
            self._typing_changed.clear()
            deadline = self._typing.timer_ms()
            delay = None if deadline is None else max(0, deadline - self.clock.now_ms()) / 1000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._typing_changed.wait()
            for room, user in self._typing.handle_timer(self.clock.now_ms()):
                self._typing_frame(room, user, False)

    def _on_message(self, envelope: Envelope) -> None:
        """Another user's message reached the feed: push it if no client is connected; a
        recall withdraws what is still pending of its message (SPEC §31.1)."""
        target = target_of(envelope)
        if target is not None and self.push is not None:
            self.push.withdraw(target.hex())
            return
        if not self.sessions and self.push is not None:
            self.push.notify_nowait(
                {
                    "event": "message",
                    "room_id": envelope.room.hex(),
                    "message_id": envelope.message_id.hex(),
                    "sender_id": user_id_text(envelope.sender_user),
                    "sent_ms": envelope.hlc.wall_ms,
                }
            )

    # --- operations -------------------------------------------------------------------------

    async def create_conversation(self, user: UserId) -> dict[str, Any]:
        self.node.social.require_unblocked(user)
        room = await self.node.open_direct(user)
        await self.node.social.accept_request(room)  # ours: never a message request
        return {"room_id": room.hex(), "recipient_id": user_id_text(user)}

    async def send(self, command: Send, *, witness: SendWitness | None = None) -> Envelope:
        """Store and send a client's message; returns once durable here ("sent").

        The `witness` (the sending session) hears of it first, then every client gets its
        `message` frame. Its place among our sends of the room is taken on entry, before any
        await (a media send's seal read), so sends seal in the order of the calls (SPEC §15.4.5).
        """
        with self.node.take_turn(command.room_id) as turn:
            return await self._send(command, witness, turn)

    async def _send(self, command: Send, witness: SendWitness | None, turn: SealTurn) -> Envelope:
        if command.media is None:
            body = command.message.encode()
            content_type = TEXT_CONTENT_TYPE
        else:
            # A blob uploaded here is sealed: its seal goes inside the message (SPEC §28.2).
            info = await self.node.store.read(
                self.node.store.store.media_info, command.media.digest
            )
            seal = None if info is None else info.seal
            body = encode_media(
                MediaRef(
                    type=command.type,
                    digest=command.media.digest,
                    content_type=command.media.content_type,
                    size=command.media.size if info is None else plain_size(info),
                    caption=command.message,
                    seal=seal,
                )
            )
            content_type = MEDIA_CONTENT_TYPE
        if command.reply_to is not None:  # SPEC §31.4: the reply names what it answers
            await self._reply_target(command.room_id, command.reply_to)
            annotated = Annotated(content_type=content_type, body=body, reply_to=command.reply_to)
            body, content_type = annotate(annotated), ANNOTATED_CONTENT_TYPE
        written = None
        if command.written_ms is not None and command.sent_ms is not None:
            written = WrittenTimes(
                written_ms=command.written_ms,
                sent_ms=command.sent_ms,
                received_ms=self.clock.now_ms(),
            )
        told: list[FeedEntry] = []
        try:
            envelope = await self.node.send(
                command.room_id,
                body,
                content_type=content_type,
                on_sealed=lambda sealed: self._sealed(sealed, command.client_id),
                on_stored=told.extend,
                written=written,
                turn=turn,
            )
        except NotAuthorized:
            await self.require_room(command.room_id)  # a room unknown here is NOT_FOUND
            raise
        # Our user's other clients see it too (multi-device on one node), through the feed; its
        # client_id was noted as it was sealed, so even a render before this line names it.
        if witness is not None:
            witness.message_sent(command.client_id, envelope)
        await self._publish_now(told)
        return envelope

    async def perform_action(self, command: MessageCommand) -> dict[str, Any]:
        """A client's message action (`MessageActions.perform`), shown at once to our user's
        clients on this node, as a send is: the feed publishes it now, not at its next poll
        (`feed._POLL_S`, 2 s later), from the entries its commit made, not read back."""
        told: list[FeedEntry] = []
        answer = await self.actions.perform(command, on_stored=told.extend)
        await self._publish_now(told)
        return answer

    async def _publish_now(self, told: Sequence[FeedEntry] = ()) -> None:
        """What is new goes to our user's clients now, not at the feed's next poll; `told`:
        the entries this task's commit just made (`Feed.catch_up`)."""
        with contextlib.suppress(StorageError):  # closing: clients read it by cursor later
            await self.feed.catch_up(told)

    async def _reply_target(self, room: RoomId, message_id: MessageId) -> None:
        """A reply answers a message of its own room (SPEC §31.4). Raises NotFound, WrongRoom."""
        original = await self.node.get_event(message_id)
        if original is None or not is_user_content(original):
            raise NotFound(f"no message {message_id.hex()[:16]} to reply to")
        if original.room != room:
            raise WrongRoom("a reply answers a message of its own conversation")

    def _sealed(self, envelope: Envelope, client_id: str) -> None:
        """A client's message is sealed, about to be stored: its echo will name `client_id`,
        and the feed renders it from this copy. Held before the commit, since sends committed
        in one group are all published by the first of them to resume."""
        self.frames.note_client_id(envelope.message_id, client_id)
        self.feed.hold(envelope)

    async def require_room(self, room: RoomId) -> None:
        """Raises NotFound unless our user is in `room`."""
        if self.own not in await self.node.members(room):
            raise NotFound(f"no conversation {room.hex()[:16]} for this user")

    def require_self(self, uid: UserId | None) -> None:
        """The seed's `uid` parameter must name this node's user when given."""
        if uid is not None and uid != self.own:
            raise NotFound("that user does not live on this node")

    async def room_summary(self, room: RoomId) -> dict[str, Any]:
        """Id, type, name, members of a room (groups: the seed's group row)."""
        state = await self.node.room_state(room)
        roles = state.members if state else {}
        members = sorted(roles)
        others = [m for m in members if m != self.own]
        direct = len(members) == 2 and direct_room_id(members[0], members[1]) == room
        summary: dict[str, Any] = {
            "id": room.hex(),
            "type": "direct" if direct else "group",
            "members": [user_id_text(m) for m in members],
            # Who may add members and change the group (SPEC §12.1); the web client shows roles.
            "admins": [user_id_text(m) for m in members if roles[m] >= Role.ADMIN],
        }
        if direct:
            profile = await self.node.store.read(self.node.store.store.get_profile, others[0])
            summary.update(direct_recipient_view(others[0], profile))
        else:
            summary["name"] = state.name if state else ""
            summary["open"] = state.open if state else False
            # SPEC §30.5: the group's settings and our role in it
            summary["topic"] = state.topic if state else ""
            summary["avatar"] = state.avatar.hex() if state and state.avatar else None
            # SPEC §30.6: what a new member is given
            summary["history"] = state.history if state else "joined"
            summary["history_limit"] = state.history_limit if state else 0
            own_role = roles.get(self.own)
            summary["my_role"] = None if own_role is None else ROLE_NAMES[own_role]
            summary.update(group_recipient_view(summary["name"]))
        return summary

    async def conversations(
        self, page_size: int, page_number: int, requests: str = "include"
    ) -> dict[str, Any]:
        """A page of the conversation list. `requests` (SPEC §32.5): `exclude` leaves message
        requests out, `only` lists them alone, `include` both; a filtered page may be short."""
        store = self.node.store
        page = await store.read(
            store.store.conversations, self.own, page_size=page_size, page_number=page_number
        )
        items = []
        for summary in page.items:
            request = await store.read(self.node.social.is_request, store.store, summary.room)
            if (requests == "exclude" and request) or (requests == "only" and not request):
                continue
            row = await self.room_summary(summary.room)
            row["request"] = request
            latest = await store.read(_latest_content, store.store, summary.room)
            states = {} if latest is None else await store.read(states_of, store.store, [latest])
            row.update(
                latest_message_view(latest, states.get(latest.message_id) if latest else None)
            )
            row["latest_activity_ms"] = summary.latest_activity.wall_ms
            row["unread"] = await self._unread(summary.room)
            items.append(row)
        return {
            "conversations": items,
            "page_size": page.page_size,
            "page_number": page.page_number,
            "has_more": page.has_more,
        }

    async def _unread(self, room: RoomId) -> int:
        """Unread messages of `room`, counted among its newest `MAX_UNREAD_COUNTED` events."""
        page = await self.node.history(room, limit=MAX_UNREAD_COUNTED)
        envelopes = [e.envelope for e in page.events if _is_message(e.envelope)]
        store = self.node.store
        return await store.read(unread_count, store.store, self.own, envelopes)

    async def details(self, room: RoomId, cursor: Cursor | None, limit: int) -> dict[str, Any]:
        """A page of a conversation's messages (newest page first, oldest first within)."""
        await self.require_room(room)
        page = await self.node.history(room, limit=limit, cursor=cursor)
        envelopes = [e.envelope for e in page.events if is_user_content(e.envelope)]
        members = await self.node.members(room)
        store = self.node.store
        statuses = await store.read(statuses_of, store.store, self.own, envelopes, members)
        messages = await self.actions.page(page.events, statuses)
        people = await store.read(_profiles, store.store, sorted(members)[:MAX_PEOPLE_SHOWN])
        return {
            "id": room.hex(),
            "messages": messages,
            "next_cursor": encode_cursor(page.next),
            # members' names and pictures as their profiles say (SPEC §32.1)
            "people": [profile_view(user, profile) for user, profile in people],
        }

    async def groups(self) -> list[dict[str, Any]]:
        """The seed's get_all_group: every group our user is in."""
        out = []
        for room in await self.node.rooms():
            summary = await self.room_summary(room)
            if summary["type"] == "group":
                out.append(summary)
        return out

    async def profile(self, user: UserId) -> dict[str, Any]:
        store = self.node.store
        profile = await store.read(store.store.get_profile, user)
        view = profile_view(user, profile)
        presence = self.node.presence(user)
        if user == self.own:
            view["online"] = True
        elif presence is not None:
            view["online"] = presence.online
            view["last_seen_ms"] = presence.last_seen_ms
        else:
            view["online"] = False
        return view

    async def friends(self) -> list[dict[str, Any]]:
        store = self.node.store
        contacts = await store.read(store.store.contacts, self.own)
        return [await self.profile(contact.contact) for contact in contacts]

    async def friend_request(self, user: UserId, note: str) -> dict[str, Any]:
        if user == self.own:
            raise MalformedMessage("a friend request to oneself")
        self.node.social.require_unblocked(user)
        store = self.node.store
        room = await self.node.open_direct(user)
        await self.node.social.accept_request(room)
        request = FriendRequest(
            sender=self.own, recipient=user, created_ms=self.clock.now_ms(), note=note
        )
        await store.run(store.store.put_friend_request, request)
        envelope = await self._contact(room, ContactAction.REQUEST, note)
        return {"room_id": room.hex(), "message_id": envelope.message_id.hex()}

    async def answer_friend_request(self, user: UserId, *, accept: bool) -> None:
        """Accept or decline a pending request from `user`. Raises NotFound."""
        store = self.node.store
        if accept:
            done = await store.run(
                store.store.accept_friend_request, user, self.own, now_ms=self.clock.now_ms()
            )
        else:
            done = await store.run(store.store.delete_friend_request, user, self.own)
        if not done:
            raise NotFound(f"no friend request from {user_id_text(user)}")
        room = await self.node.open_direct(user)
        await self._contact(room, ContactAction.ACCEPT if accept else ContactAction.DECLINE, "")
        if accept:
            await self.node.social.share_with(room)  # a new contact sees our profile (§32.1)

    async def cancel_friend_request(self, user: UserId) -> None:
        """Withdraw our pending request to `user`: a DECLINE tells their node. Raises NotFound."""
        store = self.node.store
        if not await store.run(store.store.delete_friend_request, self.own, user):
            raise NotFound(f"no pending friend request to {user_id_text(user)}")
        room = await self.node.open_direct(user)
        await self._contact(room, ContactAction.DECLINE, "")

    async def _contact(self, room: RoomId, action: ContactAction, note: str) -> Envelope:
        store = self.node.store
        own = await store.read(store.store.get_profile, self.own)
        event = ContactEvent(
            action=action,
            note=note,
            display_name=own.display_name if own else "",
            handle=own.handle if own else "",
        )
        # our own contact events show no frame (frames.py): their entries ride the next pass
        return await self.node.send(
            room, encode_contact(event), content_type=CONTACT_CONTENT_TYPE, on_stored=self._told
        )


def _is_message(envelope: Envelope) -> bool:
    """A chat bubble: user content, but not an edit, reaction or recall (SPEC §31), which
    change a message and are neither its latest nor unread of their own."""
    return envelope.kind is Kind.MESSAGE and is_user_content(envelope)


def _profiles(store: Store, users: list[UserId]) -> list[tuple[UserId, Profile | None]]:
    return [(user, store.get_profile(user)) for user in users]


def _latest_content(store: Store, room: bytes) -> Envelope | None:
    page = store.page_history(room, direction=Direction.BACKWARD, limit=_LATEST_SCAN)
    for stored in reversed(page.events):
        if _is_message(stored.envelope):
            return stored.envelope
    return None


SERVICE_KEY: Final = web.AppKey("service", ApiService)
"""Where the aiohttp application keeps its `ApiService`."""
