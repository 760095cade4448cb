"""Generate protocol/vectors/bodies.json: the bodies of TYPING (SPEC §17.1), contact events
(§18.1), PRIVATE (§22.6) and PROFILE (§32.1) envelopes."""

from __future__ import annotations

from pathlib import Path

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.content import (
    ContactAction,
    ContactEvent,
    MediaRef,
    ProfileCard,
    encode_contact,
    encode_media,
    encode_profile,
    encode_typing,
)
from hearthmesh.protocol.envelope import MessageId, RoomId
from hearthmesh.protocol.errors import MalformedMessage, TooLarge
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.media_seal import MediaSeal
from hearthmesh.protocol.private import (
    encode_block_changed,
    encode_conversation_deleted,
    encode_message_hidden,
)

from .cast import Cast
from .common import VECTORS_DIR, fixed_seed, pin, refuse, write_vectors

__all__ = ["generate"]


def generate(directory: Path = VECTORS_DIR) -> Path:
    """One body of each form, and the ones a decoder refuses."""
    c = Cast()
    room, message = RoomId(fixed_seed("bodies-room")), MessageId(fixed_seed("bodies-message"))
    bob = UserId(c.bob.public)
    seal = MediaSeal(
        key=fixed_seed("bodies-picture-key"),
        nonce=fixed_seed("bodies-picture-nonce")[:12],
        plain_digest=fixed_seed("bodies-picture-plain"),
    )
    picture = MediaRef(
        type="image",
        digest=fixed_seed("bodies-picture"),
        content_type="image/png",
        size=2048,
        seal=seal,
    )
    card = ProfileCard(handle="alice", display_name="Alice", bio="hello", picture=picture)
    request = ContactEvent(
        action=ContactAction.REQUEST, note="hi, it's alice", display_name="Alice", handle="alice"
    )
    valid = [
        pin("typing_body", "typing", hex=encode_typing(True).hex()),
        pin("typing_body", "stopped typing", hex=encode_typing(False).hex()),
        pin("contact_body", "a friend request with a note", hex=encode_contact(request).hex()),
        pin(
            "contact_body",
            "its acceptance",
            hex=encode_contact(ContactEvent(action=ContactAction.ACCEPT)).hex(),
        ),
        pin("private_body", "a conversation deleted", hex=encode_conversation_deleted(room).hex()),
        pin("private_body", "bob blocked", hex=encode_block_changed(bob, blocked=True).hex()),
        pin("private_body", "a message hidden", hex=encode_message_hidden(room, message).hex()),
        pin(
            "profile_body",
            "a profile with a sealed picture (§28.2)",
            hex=encode_profile(card).hex(),
        ),
        pin("profile_body", "an empty profile", hex=encode_profile(ProfileCard()).hex()),
    ]
    video = MediaRef(type="video", digest=picture.digest, content_type="video/mp4", size=1)
    invalid = [
        refuse(
            "typing_body", MalformedMessage, "active is 0 or 1", hex=encode_canonical([2]).hex()
        ),
        refuse("typing_body", MalformedMessage, "no element", hex=encode_canonical([]).hex()),
        refuse(
            "contact_body",
            MalformedMessage,
            "action 4",
            hex=encode_canonical([4, "", "", ""]).hex(),
        ),
        refuse(
            "contact_body",
            MalformedMessage,
            "a display name past its bound",
            hex=encode_canonical([1, "", "n" * 600, ""]).hex(),
        ),
        refuse(
            "private_body",
            MalformedMessage,
            "a room of 31 bytes",
            hex=encode_canonical([1, bytes(room)[:31]]).hex(),
        ),
        refuse(
            "private_body",
            MalformedMessage,
            "blocked is 0 or 1",
            hex=encode_canonical([2, bytes(bob), 2]).hex(),
        ),
        refuse(
            "private_body",
            MalformedMessage,
            "action 4",
            hex=encode_canonical([4, bytes(room)]).hex(),
        ),
        refuse(
            "private_body",
            TooLarge,
            "past 256 bytes",
            hex=encode_canonical([1, bytes(300)]).hex(),
        ),
        refuse(
            "profile_body",
            MalformedMessage,
            "a picture that is a video",
            hex=encode_canonical(["", "", "", encode_media(video)]).hex(),
        ),
        refuse(
            "profile_body",
            MalformedMessage,
            "a handle with a NUL",
            hex=encode_canonical(["a\x00b", "", "", b""]).hex(),
        ),
        refuse(
            "profile_body",
            MalformedMessage,
            "a bio past 4,096 bytes",
            hex=encode_canonical(["", "", "b" * 4097, b""]).hex(),
        ),
    ]
    return write_vectors(
        "bodies",
        spec="SPEC.md §17.1, §18.1, §22.6, §32.1",
        function="tools/vectors/codecs.py ops typing_body, contact_body, private_body, "
        "profile_body",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
