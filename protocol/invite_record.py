"""An invite as a group's fold holds it (SPEC §30.3). Owns no state.

An admin issues an invite as a MEMBERSHIP event (INVITE, SPEC §30.1) whose `nonce` packs the
secret's digest, the expiry and the use count allowed; an ADD made by an invite names its digest
in its own `nonce`, and a REVOKE names it too. So every member's home folds the same record of
each invite (§12.3): the uses are the ADDs that named it, and any admin's home judges a join the
same way. `check_invite` is the one rule over such a record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Final

from .errors import InviteExpired, InviteInvalid, MalformedMessage
from .identity import UserId

__all__ = [
    "INVITE_ID_BYTES",
    "INVITE_NONCE_BYTES",
    "MAX_INVITES_PER_GROUP",
    "MAX_INVITE_TTL_MS",
    "MAX_INVITE_USES",
    "InviteRecord",
    "check_invite",
    "decode_invite_nonce",
    "encode_invite_nonce",
    "invite_id",
    "usable",
]

INVITE_ID_BYTES: Final = 16
MAX_INVITE_TTL_MS: Final = 30 * 86_400_000
"""The longest an invite may stay valid, from its INVITE's time."""
MAX_INVITES_PER_GROUP: Final = 32
"""Usable invites a group's fold holds; a 33rd INVITE waits until one is revoked, spent or
expired (SPEC §30.3.1)."""
MAX_INVITE_USES: Final = 1024
"""A group's size (SPEC §30.2): no invite needs more uses."""
INVITE_NONCE_BYTES: Final = INVITE_ID_BYTES + 8 + 2
"""An INVITE's nonce: digest, expires_ms (u64 big-endian), max_uses (u16 big-endian)."""


def invite_id(secret: bytes) -> bytes:
    """The digest a group holds instead of the secret: a copy of a store lets no one join."""
    return hashlib.sha256(b"hearthmesh/invite/v0\x00" + secret).digest()[:INVITE_ID_BYTES]


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteRecord:
    """An invite as folded from its group's events (never its secret)."""

    invite_id: bytes
    issuer: UserId
    created_ms: int
    """The wall time of its INVITE event."""
    expires_ms: int
    max_uses: int
    uses: int = 0
    """ADDs that named it, in history order after it."""
    revoked: bool = False

    def spent(self) -> InviteRecord:
        return replace(self, uses=self.uses + 1)

    def revoke(self) -> InviteRecord:
        return replace(self, revoked=True)


def encode_invite_nonce(digest: bytes, expires_ms: int, max_uses: int) -> bytes:
    """An INVITE's `nonce`: digest || expires_ms (8 bytes) || max_uses (2 bytes), big-endian."""
    return digest + expires_ms.to_bytes(8, "big") + max_uses.to_bytes(2, "big")


def decode_invite_nonce(nonce: bytes) -> tuple[bytes, int, int]:
    """(digest, expires_ms, max_uses) of an INVITE's `nonce`.

    Raises:
        MalformedMessage: not 26 bytes, or a use count outside 1..MAX_INVITE_USES.
    """
    if len(nonce) != INVITE_NONCE_BYTES:
        raise MalformedMessage(f"an INVITE's nonce is {INVITE_NONCE_BYTES} bytes")
    digest = nonce[:INVITE_ID_BYTES]
    expires_ms = int.from_bytes(nonce[INVITE_ID_BYTES : INVITE_ID_BYTES + 8], "big")
    max_uses = int.from_bytes(nonce[INVITE_ID_BYTES + 8 :], "big")
    if not 1 <= max_uses <= MAX_INVITE_USES:
        raise MalformedMessage(f"an invite allows 1 to {MAX_INVITE_USES} uses")
    return digest, expires_ms, max_uses


def usable(record: InviteRecord, *, now_ms: int) -> bool:
    """Whether the invite can still let someone in at `now_ms`."""
    return not record.revoked and now_ms < record.expires_ms and record.uses < record.max_uses


def check_invite(record: InviteRecord | None, *, now_ms: int) -> InviteRecord:
    """The record if it lets one more user in now (SPEC §30.3.3).

    Raises:
        InviteInvalid: no such invite in this group's fold (forged or unknown), or revoked.
        InviteExpired: past its expiry, or every use spent.
    """
    if record is None:
        raise InviteInvalid("no such invite for this group")
    if record.revoked:
        raise InviteInvalid("the invite was revoked")
    if now_ms >= record.expires_ms:
        raise InviteExpired("the invite has expired")
    if record.uses >= record.max_uses:
        raise InviteExpired("the invite's uses are spent")
    return record
