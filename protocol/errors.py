"""The one error hierarchy of hearthmesh, with the stable wire codes of SPEC §9.

`LocalProtocolError` means our caller broke the spec (a bug on this side); `RemoteProtocolError`
means a peer did, and its `code` is what goes back on the wire. Storage and node errors derive
from `HearthError` too, so nothing we raise is a bare `ValueError`. A `StorageError` is the store
failing (fatal to the node); its subclass `UnreadableItem` is one item that cannot be read while
the store works (contained where it is met).
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar, TypeGuard

__all__ = [
    "BadCertificate",
    "BadSignature",
    "Banned",
    "Blocked",
    "Busy",
    "ClockSkew",
    "DamagedBlob",
    "ErrorCode",
    "FrameTimeout",
    "HearthError",
    "HistoryNotShared",
    "InvalidIdentifier",
    "InviteExpired",
    "InviteInvalid",
    "KeyMismatch",
    "KeyRequestDenied",
    "LocalProtocolError",
    "MalformedMessage",
    "MediaTampered",
    "MembershipConflict",
    "MembershipLimit",
    "MessageRecalled",
    "NodeFailed",
    "NotAContact",
    "NotAddressed",
    "NotAuthorized",
    "NotFound",
    "NotListed",
    "NotSender",
    "ProtocolError",
    "QuotaExceeded",
    "RateLimited",
    "RecallWindowClosed",
    "RemoteProtocolError",
    "Replayed",
    "RoleRequired",
    "SasMismatch",
    "SequenceOverflow",
    "StorageError",
    "TooLarge",
    "TooManyStreams",
    "Undecryptable",
    "UnknownKind",
    "UnreadableItem",
    "UnsupportedVersion",
    "VerificationCancelled",
    "WrongRoom",
    "error_for_code",
    "refusal",
    "store_failed",
]


class ErrorCode(IntEnum):
    """Wire error codes (SPEC §9). Values are never renumbered or reused."""

    PROTOCOL = 1
    MALFORMED = 2
    CLOCK_SKEW = 3
    BAD_SIGNATURE = 4
    TOO_LARGE = 5
    UNSUPPORTED_VERSION = 6
    UNKNOWN_KIND = 7
    INVALID_IDENTIFIER = 8
    BAD_CERTIFICATE = 9
    NOT_AUTHORIZED = 10
    QUOTA_EXCEEDED = 11
    RATE_LIMITED = 12
    SEQUENCE_OVERFLOW = 13
    NOT_FOUND = 14
    MEMBERSHIP_LIMIT = 15
    NOT_ADDRESSED = 16
    # 25-29: the peer edge (SPEC §10.4)
    TOO_MANY_STREAMS = 25
    FRAME_TIMEOUT = 26
    BUSY = 27
    MEDIA_TAMPERED = 40
    SAS_MISMATCH = 41
    VERIFICATION_CANCELLED = 42
    # 50-59: end-to-end encryption of messages (SPEC §27); 40-49 are media and SAS (§28, §29)
    UNDECRYPTABLE = 50
    KEY_MISMATCH = 51
    REPLAYED = 52
    NOT_LISTED = 53
    # 60-64: groups, invites and roles (SPEC §30)
    INVITE_INVALID = 60
    INVITE_EXPIRED = 61
    BANNED = 62
    ROLE_REQUIRED = 63
    MEMBERSHIP_CONFLICT = 64
    # 65-69: message actions (SPEC §31)
    NOT_SENDER = 65
    RECALL_WINDOW_CLOSED = 66
    WRONG_ROOM = 67
    MESSAGE_RECALLED = 68
    # 70-74: profiles, friends and privacy (SPEC §32)
    BLOCKED = 70
    NOT_A_CONTACT = 71
    # 75-79: room-key requests between users (SPEC §27.13)
    KEY_REQUEST_DENIED = 75
    # 76-79: groups' history for new members (SPEC §30.6)
    HISTORY_NOT_SHARED = 76
    STORAGE = 100
    NODE_FAILED = 101
    UNREADABLE = 102


class HearthError(Exception):
    """Base of every error this project raises."""

    code: ClassVar[ErrorCode] = ErrorCode.PROTOCOL


class ProtocolError(HearthError):
    """A rule of SPEC.md was broken."""


class LocalProtocolError(ProtocolError):
    """We (our caller) broke the spec: a bug on this side, never sent as a peer's fault."""


class RemoteProtocolError(ProtocolError):
    """A peer broke the spec; `code` goes back on the wire."""


class MalformedMessage(RemoteProtocolError):
    """Bytes that do not decode to a well-formed structure (SPEC §6)."""

    code = ErrorCode.MALFORMED


class ClockSkew(RemoteProtocolError):
    """A remote HLC stamp is further ahead of our clock than MAX_DRIFT_MS (SPEC §4.3)."""

    code = ErrorCode.CLOCK_SKEW


class BadSignature(RemoteProtocolError):
    """A signature does not verify under the claimed key (SPEC §5.4)."""

    code = ErrorCode.BAD_SIGNATURE


class TooLarge(RemoteProtocolError):
    """Input longer than a size limit of SPEC §7, rejected before it is parsed."""

    code = ErrorCode.TOO_LARGE


class UnsupportedVersion(RemoteProtocolError):
    """A protocol version this implementation does not speak (SPEC §5.1)."""

    code = ErrorCode.UNSUPPORTED_VERSION


class UnknownKind(RemoteProtocolError):
    """An envelope kind missing from the table of SPEC §5.2."""

    code = ErrorCode.UNKNOWN_KIND


class InvalidIdentifier(RemoteProtocolError):
    """A user, device or room id whose encoding is wrong (SPEC §3)."""

    code = ErrorCode.INVALID_IDENTIFIER


class BadCertificate(RemoteProtocolError):
    """A device certificate that is forged, expired or not yet valid (SPEC §3.3)."""

    code = ErrorCode.BAD_CERTIFICATE

    def __init__(self, message: str = "", *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired
        """Past its expiry by our clock, and nothing else found wrong: it was good when it
        was issued, so a peer that pushes a record carrying it may be honest (SPEC §13.4.1)."""


class NotAuthorized(RemoteProtocolError):
    """The sender may not do this: not a member, a revoked device, a wrong token."""

    code = ErrorCode.NOT_AUTHORIZED


class NotFound(RemoteProtocolError):
    """The named room, message, user or subscription is not known here (SPEC §15)."""

    code = ErrorCode.NOT_FOUND


class NotAddressed(RemoteProtocolError):
    """An envelope that reached a home it is not addressed to: a RECEIPT at the home of a user
    whose messages it does not name, or one on gossip (SPEC §16.2.3)."""

    code = ErrorCode.NOT_ADDRESSED


class QuotaExceeded(RemoteProtocolError):
    """A relay quota (count or bytes per recipient) would be exceeded (SPEC §9)."""

    code = ErrorCode.QUOTA_EXCEEDED


class RateLimited(RemoteProtocolError):
    """Too many requests from one peer or client in the current window."""

    code = ErrorCode.RATE_LIMITED


class SequenceOverflow(RemoteProtocolError):
    """A sender ran further ahead of its contiguous sequence than the reorder window (SPEC §8)."""

    code = ErrorCode.SEQUENCE_OVERFLOW


class MembershipLimit(RemoteProtocolError):
    """A room, or one sender in it, holds as many MEMBERSHIP events as its bound (SPEC §12.4)."""

    code = ErrorCode.MEMBERSHIP_LIMIT


class InviteInvalid(NotAuthorized):
    """An invite that is forged, unknown here, revoked, or for another group (SPEC §30.3)."""

    code = ErrorCode.INVITE_INVALID


class InviteExpired(NotAuthorized):
    """An invite past its expiry or with its uses spent (SPEC §30.3)."""

    code = ErrorCode.INVITE_EXPIRED


class Banned(NotAuthorized):
    """The user is banned from the group: no ADD, JOIN or invite lets them in (SPEC §30.2)."""

    code = ErrorCode.BANNED


class RoleRequired(NotAuthorized):
    """The change needs a higher role than the sender holds (SPEC §30.2)."""

    code = ErrorCode.ROLE_REQUIRED


class MembershipConflict(NotAuthorized):
    """The change does not fit the group's state now: a member added again, a non-member
    kicked, a role given that is held already (SPEC §30.2)."""

    code = ErrorCode.MEMBERSHIP_CONFLICT


class TooManyStreams(RemoteProtocolError):
    """A peer opened more inbound streams than its cap (SPEC §10.4)."""

    code = ErrorCode.TOO_MANY_STREAMS


class FrameTimeout(RemoteProtocolError):
    """A peer began a frame and did not complete it within the read timeout (SPEC §10.4)."""

    code = ErrorCode.FRAME_TIMEOUT


class Busy(RemoteProtocolError):
    """A limit over all peers together is reached; no one peer's fault (SPEC §10.4)."""

    code = ErrorCode.BUSY


class Undecryptable(RemoteProtocolError):
    """A ciphertext that fails its MAC or signature, or a key that does not open it (SPEC §27)."""

    code = ErrorCode.UNDECRYPTABLE


class KeyMismatch(RemoteProtocolError):
    """E2EE keys that do not belong together: a room key whose sender or recipient keys differ
    from the Olm channel's, or a Megolm session used by a device that did not share it (SPEC §27).
    """

    code = ErrorCode.KEY_MISMATCH


class Replayed(RemoteProtocolError):
    """A Megolm (session, index) already opened for another message (SPEC §27.6)."""

    code = ErrorCode.REPLAYED


class MediaTampered(RemoteProtocolError):
    """A media blob whose AES-GCM tag or plaintext hash does not verify (SPEC §28.3)."""

    code = ErrorCode.MEDIA_TAMPERED


class SasMismatch(RemoteProtocolError):
    """A SAS commitment or MAC that does not verify: someone swapped a key (SPEC §29.3)."""

    code = ErrorCode.SAS_MISMATCH


class VerificationCancelled(HearthError):
    """A verification flow was cancelled by a user or ended by the peer (SPEC §29.3); no breach."""

    code = ErrorCode.VERIFICATION_CANCELLED


class NotSender(RemoteProtocolError):
    """An edit or recall of a message someone else sent (SPEC §31.1, §31.2)."""

    code = ErrorCode.NOT_SENDER


class RecallWindowClosed(RemoteProtocolError):
    """A recall later than the recall window after its message (SPEC §31.1)."""

    code = ErrorCode.RECALL_WINDOW_CLOSED


class WrongRoom(RemoteProtocolError):
    """An action naming a message of another room (SPEC §31)."""

    code = ErrorCode.WRONG_ROOM


class MessageRecalled(RemoteProtocolError):
    """An edit, reaction or reply asked for on a message that was recalled (SPEC §31.1)."""

    code = ErrorCode.MESSAGE_RECALLED


class Blocked(RemoteProtocolError):
    """Our user's client asked to reach a user it blocked (SPEC §32.3). Never sent to the
    blocked user: what they send is acked as stored and dropped."""

    code = ErrorCode.BLOCKED


class NotAContact(RemoteProtocolError):
    """Presence or typing pushed by a user who is not our user's contact (SPEC §32.4): dropped
    unanswered, so it tells its sender nothing."""

    code = ErrorCode.NOT_A_CONTACT


class NotListed(RemoteProtocolError):
    """A room-key request from a home that the named user's newest record, as the answerer
    holds or finds it, does not list with a key bundle: not yet (a device linked since the
    answerer last heard) or no more (revoked) (SPEC §27.13.1). An asker does not count it as
    one of its attempts, a bounded number of times (§27.13.3)."""

    code = ErrorCode.NOT_LISTED


class KeyRequestDenied(RemoteProtocolError):
    """A room-key request naming a user who is not a member of an asked room now, from a home
    that user's record lists (SPEC §27.13.1); or a history request from a home its user's record
    does not list (§30.6)."""

    code = ErrorCode.KEY_REQUEST_DENIED


class HistoryNotShared(RemoteProtocolError):
    """A history request for a group that shares none with new members, from a non-member, or
    an answer from a home that is not an admin's (SPEC §30.6)."""

    code = ErrorCode.HISTORY_NOT_SHARED


class StorageError(HearthError):
    """The store failed: an I/O error, a full map, a closed environment, a store it cannot
    open. The node's fatal fault (SPEC §11.8.5); the message names the path. A plain
    `StorageError` is this kind; `UnreadableItem` is the one kind that is not fatal."""

    code = ErrorCode.STORAGE


class UnreadableItem(StorageError):
    """One stored item cannot be read (a media blob that no longer matches its address, a row
    that does not decode) while the store works: contained where it is met (SPEC §11.8.7),
    never the node's fatal fault, since a peer who asks for it again and again would otherwise
    restart the node each time. `item` names the key or path, for the one log line."""

    code = ErrorCode.UNREADABLE

    def __init__(self, message: str, *, item: str) -> None:
        super().__init__(message)
        self.item = item


class DamagedBlob(UnreadableItem):
    """A media blob whose bytes no longer match its sha-256 address, or whose file is gone
    while its metadata is here: the bytes are wrong for certain (not an I/O error that may
    pass), so a good copy from a home that holds one may replace them (SPEC §11.8.7)."""

    def __init__(self, message: str, *, item: str, digest: bytes) -> None:
        super().__init__(message, item=item)
        self.digest = digest


def store_failed(exc: BaseException) -> TypeGuard[StorageError]:
    """Whether `exc` says the store failed: a `StorageError` that is not one `UnreadableItem`.
    A broad `except HearthError` re-raises such an error, so the node fail-stops (SPEC §11.8.5)
    instead of logging it and going on with a store that acks nothing."""
    return isinstance(exc, StorageError) and not isinstance(exc, UnreadableItem)


class NodeFailed(HearthError):
    """The node failed and stopped itself (SPEC §11.8.5): its libp2p run ended unasked or its
    store failed. It takes nothing more until it is started again; the cause is chained."""

    code = ErrorCode.NODE_FAILED


_REMOTE_BY_CODE: dict[int, type[HearthError]] = {
    cls.code: cls
    for cls in (
        MalformedMessage,
        ClockSkew,
        BadSignature,
        TooLarge,
        UnsupportedVersion,
        UnknownKind,
        InvalidIdentifier,
        BadCertificate,
        NotAuthorized,
        NotFound,
        NotAddressed,
        QuotaExceeded,
        RateLimited,
        SequenceOverflow,
        MembershipLimit,
        InviteInvalid,
        InviteExpired,
        Banned,
        RoleRequired,
        MembershipConflict,
        TooManyStreams,
        FrameTimeout,
        Busy,
        MediaTampered,
        SasMismatch,
        Undecryptable,
        KeyMismatch,
        Replayed,
        NotListed,
        NotSender,
        RecallWindowClosed,
        WrongRoom,
        MessageRecalled,
        Blocked,
        NotAContact,
        KeyRequestDenied,
        HistoryNotShared,
    )
}


def error_for_code(code: int) -> type[HearthError]:
    """The error class a wire code stands for; unknown codes map to `RemoteProtocolError`."""
    return _REMOTE_BY_CODE.get(code, RemoteProtocolError)


def refusal(code: int, message: str) -> RemoteProtocolError:
    """The error a peer's ERROR frame stands for, to raise on our side: its code's class, or
    `RemoteProtocolError` for a code that names no peer fault."""
    error = error_for_code(code)
    return (error if issubclass(error, RemoteProtocolError) else RemoteProtocolError)(message)
