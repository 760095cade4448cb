"""What a stored event becomes for clients (SPEC §15.4.3): the frames of one feed entry.

An event's side effects (a receipt credits statuses, a contact event records the request or the
contact) were applied in the transaction that stored it (node/rooms/receipt_credit.py,
node/rooms/contact_events.py), so rendering only reads: the live tail and a replay render an entry
from the same state, and a client that resumes sees what it would have seen live.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from hearthmesh.node.api.actions import MessageActions
from hearthmesh.node.api.receipts import ReceiptService, StatusChange
from hearthmesh.node.api.views import STATUS_NAMES, membership_view, message_view, profile_view
from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.node.node import Node
from hearthmesh.protocol.actions import ACTION_KINDS
from hearthmesh.protocol.content import (
    ContactAction,
    ContactEvent,
    decode_contact,
    is_contact_event,
    is_user_content,
)
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId
from hearthmesh.protocol.identity import UserId, device_id_text, user_id_text
from hearthmesh.protocol.receipts import ReceiptStatus, decode_receipt
from hearthmesh.storage.api import FeedEntry, Store

__all__ = ["FrameRenderer", "receipt_frame"]

_CLIENT_IDS: Final = 4096
"""Client ids of our own recent sends kept for their echo (SPEC §15.4.4); oldest go first."""


class FrameRenderer:
    """Renders feed entries; a `live` message for us also goes to push (when no client is on)."""

    def __init__(
        self,
        node: Node,
        receipts: ReceiptService,
        actions: MessageActions,
        on_message: Callable[[Envelope], None],
    ) -> None:
        self._node = node
        self._receipts = receipts
        self._actions = actions
        self._on_message = on_message
        self._client_ids: OrderedDict[MessageId, str] = OrderedDict()

    def note_client_id(self, message_id: MessageId, client_id: str) -> None:
        """Our client sent this message: its echo to our other clients names `client_id`."""
        self._client_ids[message_id] = client_id
        if len(self._client_ids) > _CLIENT_IDS:
            self._client_ids.popitem(last=False)

    async def render(self, entry: FeedEntry, live: bool) -> list[dict[str, Any]]:
        """The client frames of one stored event (none for bookkeeping kinds)."""
        envelope = entry.event.envelope
        own = envelope.sender_user == self._node.user_id
        if envelope.kind is Kind.MEMBERSHIP:
            store = self._node.store
            members = await store.read_inline(store.store.members, envelope.room)
            return [{"event": "membership", **membership_view(envelope, members)}]
        if envelope.kind is Kind.RECEIPT and own:
            return _own_read(envelope)
        if envelope.kind is Kind.RECEIPT or is_contact_event(envelope):
            # our own contact events were made by our clients: nothing to tell
            return [] if own else await self._other(envelope)
        if envelope.kind is Kind.PROFILE and not own:
            return await self._profile(envelope)
        if not is_user_content(envelope):
            return []  # our profiles, home records, private bookkeeping
        if envelope.kind in ACTION_KINDS:  # SPEC §31: the message it names, as it is now
            if live and not own:
                self._on_message(envelope)  # a recall withdraws a pending push
            frame = await self._actions.update_frame(envelope)
            return [frame] if frame else []
        frame = {"event": "message", **message_view(envelope)}
        client_id = self._client_ids.pop(envelope.message_id, None)
        if client_id is not None:
            frame["client_id"] = client_id
        self._receipts.shown(envelope)  # acks (others') and receipts (ours) name it next
        if live and not own:
            self._on_message(envelope)
        return [frame]

    async def _profile(self, envelope: Envelope) -> list[dict[str, Any]]:
        """`profile` when this envelope is the profile now shown for its sender (SPEC §32.1):
        one from a stranger, or overtaken by a newer one, tells clients nothing."""
        store = self._node.store
        held = await store.read_inline(store.store.get_profile, envelope.sender_user)
        if held is None or held.updated_ms != envelope.hlc.wall_ms:
            return []
        return [{"event": "profile", **profile_view(envelope.sender_user, held)}]

    async def _other(self, envelope: Envelope) -> list[dict[str, Any]]:
        if envelope.kind is Kind.RECEIPT:  # credited as it was stored, or as it opened
            return [receipt_frame(change) for change in await self._receipts.changes(envelope)]
        event = decode_contact(envelope.body)  # applied as stored (node/rooms/contact_events.py)
        store = self._node.store
        frame = await store.read_inline(
            _contact_frame, store.store, self._node.user_id, envelope.sender_user, event
        )
        return [] if frame is None else [frame]


def _own_read(envelope: Envelope) -> list[dict[str, Any]]:
    """`read`: a client of our user, here or on another of its devices, read these messages;
    every client takes them off its unread count (SPEC §15.4.1). A delivered receipt of ours
    tells our clients nothing."""
    content = content_of(envelope)
    if content is None:
        return []  # no room key yet: told when it opens (SPEC §27.13.5)
    receipt = decode_receipt(content.body)
    if receipt.status is not ReceiptStatus.READ:
        return []
    return [
        {
            "event": "read",
            "room_id": envelope.room.hex(),
            "message_ids": [message_id.hex() for message_id in receipt.message_ids],
            "device_id": device_id_text(envelope.sender_device),
        }
    ]


def receipt_frame(change: StatusChange) -> dict[str, Any]:
    return {
        "event": "receipt",
        "room_id": change.room.hex(),
        "message_id": change.message_id.hex(),
        "user_id": user_id_text(change.recipient),
        "status": STATUS_NAMES[change.status],
        "aggregate": STATUS_NAMES[change.aggregate],
    }


def _contact_frame(
    store: Store, own: UserId, sender: UserId, event: ContactEvent
) -> dict[str, Any] | None:
    """Render a contact event from `sender` (SPEC §18)."""
    frame: dict[str, Any] = {"user_id": user_id_text(sender), "display_name": event.display_name}
    match event.action:
        case ContactAction.REQUEST:
            return frame | {"event": "friend_request", "note": event.note}
        case ContactAction.ACCEPT:
            if not any(c.contact == sender for c in store.contacts(own)):
                return None  # an answer to no request of ours
            return frame | {"event": "friend_accepted"}
        case ContactAction.DECLINE:
            return frame | {"event": "friend_declined"}
    return None
