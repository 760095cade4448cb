"""Bodies of user content and small control envelopes (SPEC §17, §18), sans-I/O.

- text messages: `text/plain`, UTF-8;
- media references: MEDIA_CONTENT_TYPE, CBOR [type, sha-256, media type, size, caption, seal]
  (the seal opens the encrypted blob, SPEC §28; bodies written before it have no seal); the
  blob itself travels by reference, never inside an envelope (SPEC §7.2);
- typing indicators: TYPING envelopes, CBOR [active], never stored (SPEC §17);
- contact (friend request) events: MESSAGE envelopes in the direct room of the two users with
  CONTACT_CONTENT_TYPE, CBOR [action, note, display name, handle] (SPEC §18);
- profiles: PROFILE envelopes with PROFILE_CONTENT_TYPE, CBOR [handle, display name, bio,
  picture] where the picture is a media body (or empty): a picture is media (SPEC §32.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .actions import ANNOTATED_CONTENT_TYPE, decode_annotated
from .canonical import CborValue, decode_canonical, encode_canonical
from .envelope import Envelope, Kind
from .errors import MalformedMessage, RemoteProtocolError
from .media_seal import MediaSeal, seal_from_cbor, seal_to_cbor, sealed_size
from .media_type import check_media_type

__all__ = [
    "CONTACT_CONTENT_TYPE",
    "MAX_NOTE_BYTES",
    "MEDIA_CONTENT_TYPE",
    "PROFILE_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "TYPING_CONTENT_TYPE",
    "ContactAction",
    "ContactEvent",
    "MediaRef",
    "ProfileCard",
    "decode_contact",
    "decode_media",
    "decode_profile",
    "decode_typing",
    "encode_contact",
    "encode_media",
    "encode_profile",
    "encode_typing",
    "is_contact_event",
    "is_user_content",
    "media_ref_of",
]

TEXT_CONTENT_TYPE: Final = "text/plain"
MEDIA_CONTENT_TYPE: Final = "application/x-hearthmesh-media"
TYPING_CONTENT_TYPE: Final = "application/x-hearthmesh-typing"
CONTACT_CONTENT_TYPE: Final = "application/x-hearthmesh-contact"
PROFILE_CONTENT_TYPE: Final = "application/x-hearthmesh-profile"
MAX_NOTE_BYTES: Final = 1024
_MAX_NAME_BYTES: Final = 256
_MEDIA_TYPES: Final = frozenset({"image", "video", "audio", "file"})


def is_user_content(envelope: Envelope) -> bool:
    """A message clients show as a chat bubble (not a receipt, membership or contact event)."""
    if envelope.kind is Kind.MESSAGE:
        return envelope.content_type in (
            TEXT_CONTENT_TYPE,
            MEDIA_CONTENT_TYPE,
            ANNOTATED_CONTENT_TYPE,
        )
    return envelope.kind in (Kind.EDIT, Kind.RECALL, Kind.REACTION)


def is_contact_event(envelope: Envelope) -> bool:
    """A friend request, acceptance or refusal (SPEC §18)."""
    return envelope.kind is Kind.MESSAGE and envelope.content_type == CONTACT_CONTENT_TYPE


def encode_typing(active: bool) -> bytes:
    """CBOR [active (0/1)]."""
    return encode_canonical([int(active)])


def decode_typing(body: bytes) -> bool:
    """Parse a TYPING body. Raises MalformedMessage."""
    match decode_canonical(body, max_bytes=8):
        case [int() as active] if active in (0, 1):
            return bool(active)
    raise MalformedMessage("typing body is [active]")


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaRef:
    """A media message: where the blob is (its digest) and what it is."""

    type: str
    """image, video, audio or file."""
    digest: bytes
    """SHA-256 of the blob as stored and served: the ciphertext when sealed (SPEC §28.2)."""
    content_type: str
    size: int
    """Bytes of the plaintext (what clients get)."""
    caption: str = ""
    seal: MediaSeal | None = None
    """What opens the blob; None only in bodies written before media were encrypted."""

    @property
    def blob_size(self) -> int:
        """Bytes of the blob a node fetches and serves: the ciphertext's when sealed."""
        return self.size if self.seal is None else sealed_size(self.size)


def encode_media(media: MediaRef) -> bytes:
    """CBOR [type, digest, content type, size, caption, seal] (no seal: the first five).

    Raises MalformedMessage."""
    _check_media(media)
    fields: list[CborValue] = [
        media.type,
        media.digest,
        media.content_type,
        media.size,
        media.caption,
    ]
    if media.seal is not None:
        fields.append(seal_to_cbor(media.seal))
    return encode_canonical(fields)


def decode_media(body: bytes) -> MediaRef:
    """Parse a media body. Raises MalformedMessage (or TooLarge)."""
    match decode_canonical(body, max_bytes=4096):
        case [
            str() as type_,
            bytes() as digest,
            str() as content_type,
            int() as size,
            str() as caption,
            *rest,
        ] if len(rest) <= 1:
            media = MediaRef(
                type=type_,
                digest=digest,
                content_type=content_type,
                size=size,
                caption=caption,
                seal=seal_from_cbor(rest[0]) if rest else None,
            )
            _check_media(media)
            return media
    raise MalformedMessage("media body is [type, digest, content type, size, caption, seal]")


def media_ref_of(envelope: Envelope) -> MediaRef | None:
    """The media reference a stored MESSAGE carries (also inside a reply or forward, SPEC §31.4),
    or a PROFILE's picture (SPEC §32.1); None for anything else or a bad body."""
    try:
        if envelope.kind is Kind.MESSAGE:
            content_type, body = envelope.content_type, envelope.body
            if content_type == ANNOTATED_CONTENT_TYPE:  # a media reply or forward (SPEC §31.4)
                annotated = decode_annotated(body)
                content_type, body = annotated.content_type, annotated.body
            return decode_media(body) if content_type == MEDIA_CONTENT_TYPE else None
        if envelope.kind is Kind.PROFILE and envelope.content_type == PROFILE_CONTENT_TYPE:
            return decode_profile(envelope.body).picture
    except RemoteProtocolError:
        return None  # shown as a broken message; there is nothing to fetch
    return None


def _check_media(media: MediaRef) -> None:
    if media.type not in _MEDIA_TYPES:
        raise MalformedMessage(f"media type must be one of {sorted(_MEDIA_TYPES)}")
    if len(media.digest) != 32 or media.size < 0:
        raise MalformedMessage("media digest is 32 bytes, size >= 0")
    check_media_type(media.content_type, "media content type")  # enters a header later
    if len(media.caption.encode()) > 2048:
        raise MalformedMessage("media caption is at most 2048 bytes")


class ContactAction(IntEnum):
    """What a contact event does (SPEC §18.1). Values are never renumbered."""

    REQUEST = 1
    ACCEPT = 2
    DECLINE = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactEvent:
    """The body of a contact event: a friend request or the answer to one."""

    action: ContactAction
    note: str = ""
    display_name: str = ""
    """The sender's display name, so the other side can name them before any profile sync."""
    handle: str = ""


def encode_contact(event: ContactEvent) -> bytes:
    """CBOR [action, note, display name, handle]. Raises MalformedMessage."""
    _check_contact(event)
    return encode_canonical([int(event.action), event.note, event.display_name, event.handle])


def decode_contact(body: bytes) -> ContactEvent:
    """Parse a contact body. Raises MalformedMessage (or TooLarge)."""
    match decode_canonical(body, max_bytes=MAX_NOTE_BYTES + 2 * _MAX_NAME_BYTES + 32):
        case [int() as action, str() as note, str() as name, str() as handle] if (
            action in ContactAction._value2member_map_
        ):
            event = ContactEvent(
                action=ContactAction(action), note=note, display_name=name, handle=handle
            )
            _check_contact(event)
            return event
    raise MalformedMessage("contact body is [action, note, display name, handle]")


def _check_contact(event: ContactEvent) -> None:
    if len(event.note.encode()) > MAX_NOTE_BYTES:
        raise MalformedMessage(f"a friend request note is at most {MAX_NOTE_BYTES} bytes")
    if max(len(event.display_name.encode()), len(event.handle.encode())) > _MAX_NAME_BYTES:
        raise MalformedMessage(f"names are at most {_MAX_NAME_BYTES} bytes")


_MAX_HANDLE_BYTES: Final = 256
_MAX_DISPLAY_NAME_BYTES: Final = 512
_MAX_BIO_BYTES: Final = 4096
_MAX_PICTURE_BYTES: Final = 4096
_MAX_PROFILE_BYTES: Final = 9216
"""Bounds of a PROFILE body: the API's 64-character handle, 128-character name and
1,024-character bio in UTF-8, and one media body (SPEC §32.1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileCard:
    """What a user tells contacts and co-members about themselves (SPEC §32.1)."""

    handle: str = ""
    display_name: str = ""
    bio: str = ""
    picture: MediaRef | None = None
    """An image uploaded on the user's home; its seal travels here so others can open it."""


def encode_profile(card: ProfileCard) -> bytes:
    """CBOR [handle, display name, bio, picture (a media body, or empty)]. Raises
    MalformedMessage."""
    picture = b"" if card.picture is None else encode_media(card.picture)
    _check_profile(card, picture)
    return encode_canonical([card.handle, card.display_name, card.bio, picture])


def decode_profile(body: bytes) -> ProfileCard:
    """Parse a PROFILE body. Raises MalformedMessage (or TooLarge)."""
    match decode_canonical(body, max_bytes=_MAX_PROFILE_BYTES):
        case [str() as handle, str() as name, str() as bio, bytes() as picture]:
            card = ProfileCard(
                handle=handle,
                display_name=name,
                bio=bio,
                picture=decode_media(picture) if picture else None,
            )
            _check_profile(card, picture)
            return card
    raise MalformedMessage("profile body is [handle, display name, bio, picture]")


def _check_profile(card: ProfileCard, picture: bytes) -> None:
    if len(card.handle.encode()) > _MAX_HANDLE_BYTES or "\x00" in card.handle:
        raise MalformedMessage(f"a handle is at most {_MAX_HANDLE_BYTES} bytes, without NUL")
    if len(card.display_name.encode()) > _MAX_DISPLAY_NAME_BYTES:
        raise MalformedMessage(f"a display name is at most {_MAX_DISPLAY_NAME_BYTES} bytes")
    if len(card.bio.encode()) > _MAX_BIO_BYTES:
        raise MalformedMessage(f"a bio is at most {_MAX_BIO_BYTES} bytes")
    if len(picture) > _MAX_PICTURE_BYTES:
        raise MalformedMessage(f"a picture reference is at most {_MAX_PICTURE_BYTES} bytes")
    if card.picture is not None and card.picture.type != "image":
        raise MalformedMessage("a profile picture is an image")
