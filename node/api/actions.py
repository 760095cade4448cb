"""Message actions for clients (SPEC §31): recall, edit, react, forward, delete for me, and the
views that fold them (a page of a conversation, one message, a reply's quote).

Each action is checked here against the message it names before anything is sealed, by the
rule every home applies on arrival (`protocol.actions.check_action`), so a refused action
answers its code and stores nothing. Actions go out through `Node.send` (`Outgoing`), like any
message of our user. Owns no state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from hearthmesh.node.api.config import ApiConfig
from hearthmesh.node.api.views import STATUS_NAMES, hlc_view, message_view, recalled_view
from hearthmesh.node.clock import Clock
from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.node.node import Node
from hearthmesh.node.rooms.message_actions import acts_on, states_of
from hearthmesh.protocol.actions import (
    ANNOTATED_CONTENT_TYPE,
    EDIT_CONTENT_TYPE,
    REACTION_CONTENT_TYPE,
    RECALL_CONTENT_TYPE,
    ActionEvent,
    Annotated,
    Edit,
    MessageState,
    Reaction,
    Recall,
    Target,
    check_action,
    decode_annotated,
    encode_annotated,
    encode_edit,
    encode_reaction,
    encode_recall,
    target_of,
)
from hearthmesh.protocol.client_api import (
    DeleteForMe,
    EditMessage,
    ForwardMessage,
    MessageCommand,
    ReactToMessage,
    RecallMessage,
)
from hearthmesh.protocol.content import MEDIA_CONTENT_TYPE, TEXT_CONTENT_TYPE, is_user_content
from hearthmesh.protocol.envelope import MAX_BODY_BYTES, Envelope, Kind, MessageId, RoomId
from hearthmesh.protocol.errors import (
    MalformedMessage,
    MessageRecalled,
    NotFound,
    NotSender,
    RecallWindowClosed,
    TooLarge,
)
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, user_id_text
from hearthmesh.storage.api import OnStored, Store, StoredEvent

__all__ = ["MessageActions", "annotate"]

_QUOTE_CHARS: Final = 200
"""Of a replied-to message's text, what a quote carries."""


class MessageActions:
    """What clients do to messages, and the folded views of messages."""

    def __init__(self, node: Node, config: ApiConfig, clock: Clock) -> None:
        self._node = node
        self._config = config
        self._clock = clock

    @property
    def _own(self) -> UserId:
        return self._node.user_id

    async def perform(
        self, command: MessageCommand, on_stored: OnStored | None = None
    ) -> dict[str, Any]:
        """Do a client's action; the answer names the message and the action's envelope.
        `on_stored`: the action's arrival-log entries once committed (`Node.send`).

        Raises:
            NotFound: no such message in a conversation of our user.
            NotSender: an edit or recall of someone else's message (SPEC §31.1).
            RecallWindowClosed: a recall after `recall_window_ms`.
            MessageRecalled: an edit, reaction or forward of a recalled message.
        """
        target = await self._target(command.message_id)
        answer: dict[str, Any] = {"message_id": target.message_id.hex()}
        match command:
            case RecallMessage():
                envelope = await self._recall(target, on_stored)
            case EditMessage(message=text):
                edit = Edit(target=target.message_id, text=text)
                self._check(target, edit)
                await self._not_recalled(target)
                envelope = await self._send(target, encode_edit(edit), Kind.EDIT, on_stored)
            case ReactToMessage(emoji=emoji, active=active):
                reaction = Reaction(target=target.message_id, emoji=emoji, active=active)
                self._check(target, reaction)
                await self._not_recalled(target)
                body = encode_reaction(reaction)
                envelope = await self._send(target, body, Kind.REACTION, on_stored)
            case ForwardMessage(room_id=room):
                await self._not_recalled(target)
                envelope = await self._forward(target, room, on_stored)
            case DeleteForMe():
                await self._node.delete_for_me(target.room, target.message_id)
                return answer | {"deleted_for_me": True}
        return answer | {"action_id": envelope.message_id.hex(), "room_id": envelope.room.hex()}

    async def _target(self, message_id: MessageId) -> Envelope:
        envelope = await self._node.get_event(message_id)
        if envelope is None or not is_user_content(envelope) or envelope.kind is not Kind.MESSAGE:
            raise NotFound(f"no message {message_id.hex()[:16]} here")
        if self._own not in await self._node.members(envelope.room):
            raise NotFound(f"no message {message_id.hex()[:16]} in a conversation of ours")
        return envelope

    def _check(self, target: Envelope, action: Edit | Recall | Reaction) -> None:
        event = ActionEvent(
            message_id=MessageId(b"\x00" * 32),
            room=target.room,
            sender_user=self._own,
            hlc=Timestamp(self._clock.now_ms(), 0),
            action=action,
        )
        check_action(event, Target.of(target))

    async def _not_recalled(self, target: Envelope) -> None:
        store = self._node.store
        if await store.read(store.store.withdrawn_by, target.message_id) == target.sender_user:
            raise MessageRecalled("that message was recalled")

    async def _recall(self, target: Envelope, on_stored: OnStored | None) -> Envelope:
        if target.sender_user != self._own:
            raise NotSender("only its sender may recall a message")
        if self._clock.now_ms() - target.hlc.wall_ms > self._config.recall_window_ms:
            raise RecallWindowClosed(
                f"messages can be recalled for {self._config.recall_window_ms // 60_000} minutes"
            )
        await self._not_recalled(target)
        recall = Recall(target=target.message_id)
        self._check(target, recall)
        return await self._send(target, encode_recall(recall), Kind.RECALL, on_stored)

    async def _forward(
        self, target: Envelope, room: RoomId, on_stored: OnStored | None
    ) -> Envelope:
        content = content_of(target)
        if content is None:
            raise NotFound("that message cannot be read here")
        content_type, body = content.content_type, content.body
        if content_type == ANNOTATED_CONTENT_TYPE:
            inner = decode_annotated(body)  # forward what it says, not what it answered
            content_type, body = inner.content_type, inner.body
        if content_type not in (TEXT_CONTENT_TYPE, MEDIA_CONTENT_TYPE):
            raise MalformedMessage("only text and media are forwarded")
        wrapped = annotate(Annotated(content_type=content_type, body=body, forwarded=True))
        return await self._node.send(
            room, wrapped, content_type=ANNOTATED_CONTENT_TYPE, on_stored=on_stored
        )

    async def _send(
        self, target: Envelope, body: bytes, kind: Kind, on_stored: OnStored | None
    ) -> Envelope:
        """Send an action on `target`, in its room."""
        content_type = {
            Kind.EDIT: EDIT_CONTENT_TYPE,
            Kind.RECALL: RECALL_CONTENT_TYPE,
            Kind.REACTION: REACTION_CONTENT_TYPE,
        }[kind]
        return await self._node.send(
            target.room,
            body,
            content_type=content_type,
            kind=kind,
            acts_on=target.message_id,
            on_stored=on_stored,
        )

    # --- views ------------------------------------------------------------------------------

    async def message(self, message_id: MessageId) -> dict[str, Any]:
        """One message as clients see it, folded (a reply's quote, SPEC §31.4).

        Raises:
            NotFound: not here, or not in a conversation of our user.
        """
        envelope = await self._target(message_id)
        store = self._node.store
        views = await store.read(_folded_views, store.store, self._own, [envelope])
        if not views:
            raise NotFound(f"no message {message_id.hex()[:16]} here")
        return views[0]

    async def page(
        self,
        events: tuple[StoredEvent, ...],
        statuses: Mapping[MessageId, tuple[int, dict[str, int]]],
    ) -> list[dict[str, Any]]:
        """The messages of a history page, folded, without what our user deleted for
        themselves, with receipt statuses and reply quotes."""
        store = self._node.store
        envelopes = [e.envelope for e in events if is_user_content(e.envelope)]
        views = await store.read(_folded_views, store.store, self._own, envelopes)
        for view in views:
            if view["is_deleted"]:
                continue
            known = statuses.get(MessageId(bytes.fromhex(view["message_id"])))
            if known is not None:
                aggregate, per_member = known
                view["status"] = STATUS_NAMES[aggregate]
                view["statuses"] = {u: STATUS_NAMES[s] for u, s in per_member.items()}
        return views

    async def update_frame(self, envelope: Envelope) -> dict[str, Any]:
        """The frame a stored action becomes: `message_updated` with the message it names as
        it is now (rendered from the store, live or replayed alike); {} if not held."""
        name = target_of(envelope)
        store = self._node.store
        if name is None:
            view = await store.read(_action_target_views, store.store, self._own, envelope)
            return {"event": "message_updated", **view} if view else {}
        held = await self._node.get_event(name)
        if held is None:  # purged here already
            return {
                "event": "message_updated",
                **recalled_view(_header_view(envelope, name), envelope.message_id),
            }
        folded = await store.read(_folded_views, store.store, self._own, [held])
        return {"event": "message_updated", **folded[0]} if folded else {}


def annotate(annotated: Annotated) -> bytes:
    """The body of a reply or forward. Raises TooLarge past the body limit (SPEC §7)."""
    body = encode_annotated(annotated)
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(f"a reply or forward is at most {MAX_BODY_BYTES} bytes with its wrapping")
    return body


def _header_view(action: Envelope, target: MessageId) -> dict[str, Any]:
    """What is left of a purged message: its id and sender, in its recall's place."""
    return {
        "message_id": target.hex(),
        "room_id": action.room.hex(),
        "sender_id": user_id_text(action.sender_user),
        "hlc": hlc_view(action.hlc),
        "sent_ms": action.hlc.wall_ms,
        "is_deleted": False,
    }


def _action_target_views(store: Store, own: UserId, action: Envelope) -> dict[str, Any]:
    """The view of the message an EDIT or REACTION names, if held (reads only)."""
    target = acts_on(action)
    held = None if target is None else store.get_event(target)
    if held is None:
        return {}
    views = _folded_views(store, own, [held.envelope])
    return views[0] if views else {}


def _folded_views(store: Store, own: UserId, envelopes: list[Envelope]) -> list[dict[str, Any]]:
    """Views of `envelopes` (reads only): folded, hidden ones left out, recalled ones as
    placeholders (a RECALL whose message was purged here stands in for it), replies quoted."""
    hidden = store.hidden_messages(own, [e.message_id for e in envelopes])
    messages = [e for e in envelopes if e.kind is Kind.MESSAGE]
    states = states_of(store, messages)
    held = {e.message_id for e in messages}
    views: list[dict[str, Any]] = []
    for envelope in envelopes:
        if envelope.message_id in hidden:
            continue
        if envelope.kind is Kind.RECALL:
            target = target_of(envelope)
            if target is None or target in held or target in hidden:
                continue
            if store.get_event(target) is None and store.withdrawn_by(target) == (
                envelope.sender_user
            ):
                views.append(recalled_view(_header_view(envelope, target), envelope.message_id))
            continue
        if envelope.kind is not Kind.MESSAGE:
            continue  # edits and reactions are folded into their messages
        view = message_view(envelope, states.get(envelope.message_id))
        reply_to = view.get("reply_to")
        if reply_to is not None and not view["is_deleted"]:
            view["quote"] = _quote(store, MessageId(bytes.fromhex(reply_to)))
        views.append(view)
    return views


def _quote(store: Store, message_id: MessageId) -> dict[str, Any]:
    """What a reply shows of the message it answers, even long after it scrolled away."""
    held = store.get_event(message_id)
    if held is None:
        recalled = store.withdrawn_by(message_id) is not None
        return {"message_id": message_id.hex(), "is_deleted": recalled, "found": False}
    state: MessageState = states_of(store, [held.envelope])[held.envelope.message_id]
    view = message_view(held.envelope, state)
    keys = ("message_id", "sender_id", "type", "is_deleted")
    quote: dict[str, Any] = {key: view[key] for key in keys if key in view}
    quote["found"] = True
    if "message" in view:
        quote["message"] = view["message"][:_QUOTE_CHARS]
    return quote
