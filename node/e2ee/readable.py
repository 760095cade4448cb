"""The one way node/ reads a stored envelope's content: (content type, body) in the clear.

Once a body is encrypted (SPEC §27.6) the envelope carries ciphertext; what a member's home
opened is kept beside it. Every reader of a user's content (views, receipts, contacts, media
references) goes through `content_of`, never `envelope.body`. Owns no state.
"""

from __future__ import annotations

from dataclasses import dataclass

from hearthmesh.protocol.e2ee.megolm import ENCRYPTED_CONTENT_TYPE
from hearthmesh.protocol.envelope import Envelope

__all__ = ["Content", "content_of"]


@dataclass(frozen=True, slots=True)
class Content:
    """An envelope's content as its sender wrote it."""

    content_type: str
    body: bytes


def content_of(envelope: Envelope) -> Content | None:
    """The envelope's content in the clear, or None while it cannot be opened here."""
    if envelope.content_type == ENCRYPTED_CONTENT_TYPE:
        return None
    return Content(envelope.content_type, envelope.body)
