"""Profiles take effect where they are stored (SPEC §32.1), in the same transaction.

A PROFILE envelope that reaches one of our homes replaces what we show for its sender, if the
sender may show us one: our own user (from another device), a contact, or a member of a group
our user is in. A stranger's profile (a message request's sender, say) is stored as sent and
changes nothing. The newest profile by its sender's clock wins. Owns no state.
"""

from __future__ import annotations

import logging

from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.protocol.content import PROFILE_CONTENT_TYPE, decode_profile
from hearthmesh.protocol.envelope import Envelope
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.storage.api import Profile, Store

__all__ = ["apply_profile", "may_show_profile"]

log = logging.getLogger(__name__)


def may_show_profile(store: Store, own: UserId, envelope: Envelope) -> bool:
    """May the envelope's sender set the profile our user sees? The arrival rules have made
    sure the sender is a member of the envelope's room; a room other than the direct one is a
    group (SPEC §32.1)."""
    sender = envelope.sender_user
    if sender == own or store.is_contact(own, sender):
        return True
    return envelope.room != direct_room_id(own, sender) and any(
        member.user == own for member in store.members(envelope.room)
    )


def apply_profile(store: Store, own: UserId, envelope: Envelope) -> None:
    """Apply a just-stored PROFILE envelope; runs in the storing transaction."""
    content = content_of(envelope)
    if content is None or content.content_type != PROFILE_CONTENT_TYPE:
        return  # not readable here (SPEC §27.3), or not a profile this revision knows
    if not may_show_profile(store, own, envelope):
        log.info("profile from %s not shown: not a contact", envelope.sender_user.hex()[:12])
        return
    try:
        card = decode_profile(content.body)
    except RemoteProtocolError as exc:  # stored as sent; it changes nothing
        log.info("profile %s ignored: %s", envelope.message_id.hex()[:16], exc)
        return
    written_ms = envelope.hlc.wall_ms
    held = store.get_profile(envelope.sender_user)
    if held is not None and held.updated_ms >= written_ms:
        return  # an older profile overtaken by a newer one
    store.put_profile(
        Profile(
            user=envelope.sender_user,
            handle=card.handle,
            display_name=card.display_name,
            avatar=None if card.picture is None else card.picture.digest,
            bio=card.bio,
            updated_ms=written_ms,
        )
    )
