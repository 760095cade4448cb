"""A push on `/hearthmesh/signals/0` (SPEC §32.4.1): what it carries and whom it is taken from.

One frame per stream, nothing answered: the gossip payload `[certificate, envelope]` of §14.1
holding a PRESENCE or TYPING envelope, both checked here (the payload, then the body of its
kind). Who may push is a contact our user has not blocked (`check_signal_sender`); whether the
sender is either is the caller's to look up. State: none.
"""

from __future__ import annotations

from dataclasses import dataclass

from .certificate_cache import VerifiedCertificates
from .content import decode_typing
from .envelope import Kind
from .errors import MalformedMessage, NotAContact
from .gossip import GossipItem, Presence, decode_gossip, decode_presence

__all__ = ["Signal", "check_signal_sender", "decode_signal"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """A verified push: the payload, and its body decoded by its kind (one of the two set)."""

    item: GossipItem
    presence: Presence | None = None
    typing: bool | None = None
    """TYPING's `active`."""


def decode_signal(
    data: bytes, *, now_ms: int, certificates: VerifiedCertificates | None = None
) -> Signal:
    """Parse and verify a push: the payload (§14.1), then a PRESENCE body (§14.2, its record
    the sender's own) or a TYPING body (§17.1); any other kind is `MALFORMED`.

    Raises:
        RemoteProtocolError subclasses: TooLarge, MalformedMessage, BadSignature,
        BadCertificate, NotAuthorized.
    """
    item = decode_gossip(data, now_ms=now_ms, certificates=certificates)
    match item.envelope.kind:
        case Kind.PRESENCE:
            return Signal(item=item, presence=decode_presence(item.envelope, now_ms=now_ms))
        case Kind.TYPING:
            return Signal(item=item, typing=decode_typing(item.envelope.body))
    raise MalformedMessage("a signal is a PRESENCE or TYPING envelope")


def check_signal_sender(*, contact: bool, blocked: bool) -> None:
    """A push is taken from a contact our user has not blocked.

    Raises:
        NotAContact: anyone else (not charged: a former contact still believes it is one).
    """
    if blocked or not contact:
        raise NotAContact("presence and typing are taken from contacts only")
