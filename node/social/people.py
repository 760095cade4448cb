"""Our user's side of profiles, blocking and message requests (SPEC §32): what the API, the CLI
and an embedding app call.

A profile change is stored, then sent as one PROFILE envelope into each room where someone may
see it: the direct rooms of our contacts and every group our user is in (through `Outgoing`,
where user content is sealed and encrypted). A new contact gets it too (`share_with`). A block
is kept by `Privacy` and told to our user's other homes as a PRIVATE change (SPEC §22.6).
State owned: none (`Privacy` and the store own it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hearthmesh.node.delivery.outgoing import Outgoing
from hearthmesh.node.media.sealed import plain_size
from hearthmesh.node.social.privacy import Privacy, Visibility, accept_request, is_accepted
from hearthmesh.protocol.content import PROFILE_CONTENT_TYPE, MediaRef, ProfileCard, encode_profile
from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.errors import Blocked, MalformedMessage, NotFound
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.private import (
    PRIVATE_CONTENT_TYPE,
    encode_block_changed,
    self_room_id,
)
from hearthmesh.protocol.rooms import direct_room_id
from hearthmesh.storage.api import Profile, Store
from hearthmesh.storage.async_store import AsyncStore

__all__ = ["ProfileUpdate", "Social", "direct_partner_of"]

log = logging.getLogger(__name__)

ProfileUpdate = dict[str, str | MediaRef | None]
"""Fields to change: handle, display_name, bio (str) and picture (a MediaRef, or None to clear)."""


class Social:
    """Profiles, blocks and message requests of our user."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        privacy: Privacy,
        outgoing: Outgoing,
        user: UserId,
        now_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._privacy = privacy
        self._outgoing = outgoing
        self._user = user
        self._now_ms = now_ms

    @property
    def privacy(self) -> Privacy:
        return self._privacy

    # --- profiles (SPEC §32.1) -------------------------------------------------------------

    async def set_profile(self, update: ProfileUpdate) -> Profile:
        """Change our user's profile and send it where it may be seen; returns it."""
        store = self._store
        held = await store.read(store.store.get_profile, self._user)
        picture = update.get("picture", await self._held_picture(held))
        profile = Profile(
            user=self._user,
            handle=_text(update, "handle", held.handle if held else ""),
            display_name=_text(update, "display_name", held.display_name if held else ""),
            avatar=picture.digest if isinstance(picture, MediaRef) else None,
            bio=_text(update, "bio", held.bio if held else ""),
            updated_ms=self._now_ms(),
        )
        body = encode_profile(_card(profile, picture if isinstance(picture, MediaRef) else None))
        await store.run(store.store.put_profile, profile)
        for room in await store.read(self._audience, store.store):
            await self._outgoing.send(room, body, PROFILE_CONTENT_TYPE, Kind.PROFILE)
        return profile

    async def share_with(self, room: RoomId) -> None:
        """Send our profile into `room` (a new contact's direct room, a group just joined)."""
        store = self._store
        held = await store.read(store.store.get_profile, self._user)
        if held is None:
            return  # nothing set: the contact event named us already
        body = encode_profile(_card(held, await self._held_picture(held)))
        await self._outgoing.send(room, body, PROFILE_CONTENT_TYPE, Kind.PROFILE)

    async def _held_picture(self, held: Profile | None) -> MediaRef | None:
        if held is None or held.avatar is None:
            return None
        return await self.picture(held.avatar)

    async def picture(self, digest: bytes) -> MediaRef:
        """The reference, with its seal (SPEC §28.2), of an image uploaded here.

        Raises:
            NotFound: no blob of that digest here.
            MalformedMessage: it is not an image.
        """
        info = await self._store.read(self._store.store.media_info, digest)
        if info is None:
            raise NotFound(f"no media {digest.hex()[:16]} uploaded here")
        if not info.content_type.startswith("image/"):
            raise MalformedMessage("a profile picture is an image")
        return MediaRef(
            type="image",
            digest=digest,
            content_type=info.content_type,
            size=plain_size(info),
            seal=info.seal,
        )

    def _audience(self, store: Store) -> list[RoomId]:
        """Our rooms where the profile may be seen: contacts' direct rooms and groups."""
        rooms = []
        for room in store.rooms_of(self._user):
            if room == self_room_id(self._user):
                continue
            partner = direct_partner_of(store, self._user, room)
            if partner is None or (
                store.is_contact(self._user, partner) and not self._privacy.blocks(partner)
            ):
                rooms.append(room)
        return rooms

    # --- blocking (SPEC §32.3) -------------------------------------------------------------

    async def block(self, user: UserId, *, blocked: bool = True) -> bool:
        """Block (or unblock) `user` on every home of our user; False if nothing changed."""
        store = self._store
        changed = await store.run(self._privacy.set_blocked, store.store, user, blocked=blocked)
        if changed:
            body = encode_block_changed(user, blocked=blocked)
            room = self_room_id(self._user)
            await self._outgoing.send(room, body, PRIVATE_CONTENT_TYPE, Kind.PRIVATE)
        return changed

    def require_unblocked(self, user: UserId) -> None:
        """Raises Blocked if our user blocked `user` (they are unblocked first)."""
        if self._privacy.blocks(user):
            raise Blocked("this user is blocked: unblock them first")

    async def set_visibility(self, visibility: Visibility) -> None:
        """Who sees our presence and typing from now on (SPEC §32.4)."""
        await self._store.run(self._privacy.set_visibility, self._store.store, visibility)

    # --- message requests (SPEC §32.5) -----------------------------------------------------

    async def accept_request(self, room: RoomId) -> None:
        """Move a message request into the conversation list (also: a conversation we start)."""
        await self._store.run(accept_request, self._store.store, room)

    def is_request(self, store: Store, room: RoomId) -> bool:
        """A direct conversation with someone who is neither a contact nor accepted by our
        user; read in a store transaction."""
        partner = direct_partner_of(store, self._user, room)
        return (
            partner is not None
            and not store.is_contact(self._user, partner)
            and not is_accepted(store, room)
        )


def direct_partner_of(store: Store, user: UserId, room: RoomId) -> UserId | None:
    """The other member of `room` if it is `user`'s direct room with them, else None."""
    members = store.members(room)
    if len(members) != 2:
        return None
    other = next((m.user for m in members if m.user != user), None)
    if other is None or direct_room_id(user, other) != room:
        return None
    return other


def _text(update: ProfileUpdate, name: str, default: str) -> str:
    value = update.get(name)
    return value if isinstance(value, str) else default


def _card(profile: Profile, picture: MediaRef | None) -> ProfileCard:
    return ProfileCard(
        handle=profile.handle, display_name=profile.display_name, bio=profile.bio, picture=picture
    )
