"""Contact events take effect where they are stored (SPEC §18), in the same transaction.

A friend request, acceptance or refusal that reaches one of our homes changes our user's
requests and contacts as it is stored, so nothing stored is ever left unapplied, even while no
client API runs; the client feed then only reads what it changed.
"""

from __future__ import annotations

import logging

from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.protocol.content import ContactAction, decode_contact
from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.identity import UserId
from hearthmesh.storage.api import FriendRequest, Profile, Store

__all__ = ["apply_contact_event"]

log = logging.getLogger(__name__)


def apply_contact_event(store: Store, own: UserId, envelope: Envelope, *, now_ms: int) -> bool:
    """Apply a just-stored contact event from another user; runs in the storing transaction.
    True if it made the two users contacts (our profile goes to them then, SPEC §32.1)."""
    content = content_of(envelope)
    if content is None:
        return False  # not readable here (SPEC §27.3)
    try:
        event = decode_contact(content.body)
    except RemoteProtocolError as exc:  # stored as sent; it changes nothing
        log.info("contact event %s ignored: %s", envelope.message_id.hex()[:16], exc)
        return False
    sender = envelope.sender_user
    if store.get_profile(sender) is None and (event.display_name or event.handle):
        # keep the name a contact event carries, unless a profile is already known
        store.put_profile(
            Profile(
                user=sender,
                handle=event.handle,
                display_name=event.display_name,
                avatar=None,
                bio="",
                updated_ms=0,  # a placeholder: any PROFILE of theirs is newer (SPEC §32.1)
            )
        )
    match event.action:
        case ContactAction.REQUEST:
            store.put_friend_request(
                FriendRequest(sender=sender, recipient=own, created_ms=now_ms, note=event.note)
            )
        case ContactAction.ACCEPT:
            return store.accept_friend_request(own, sender, now_ms=now_ms)
        case ContactAction.DECLINE:
            # a refusal of our request, or the sender withdrawing theirs
            store.delete_friend_request(own, sender)
            store.delete_friend_request(sender, own)
    return False
