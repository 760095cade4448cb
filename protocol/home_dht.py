"""Home records in the kad-dht (ARCHITECTURE §9; SPEC §13): the key and the record rules.

A user's signed home record is stored under `/home/<user id, base64url without padding>`.
Every DHT node checks a value before it stores or returns one (`validate_home_record`) and,
between several valid values for one key, keeps the newest (`select_home_record`). Both are
pure: the node layer closes `validate_home_record` over its clock and hands the pair to the
libp2p host as the validator of the `home` namespace, the only namespace our DHT accepts.

Why base64url and not hex: py-libp2p 0.8.1 uses the key bytes as the FIND_NODE target of every
put and get, and its servers reset FIND_NODE for a key longer than 50 bytes that is not a
multihash (kad_dht.py, "FIND_NODE key is not a valid PeerId"). `/home/` + 64 hex digits is 70
bytes, so multi-hop lookups failed (7 of 10 gets across a 6-host chain); 6 + 43 = 49 bytes
passes (10 of 10).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from .errors import (
    BadCertificate,
    ClockSkew,
    InvalidIdentifier,
    MalformedMessage,
    NotAuthorized,
    RemoteProtocolError,
)
from .home_record import HomeRecord, decode_home_record, verify_home_record
from .identity import KEY_BYTES, UserId

__all__ = [
    "HOME_DHT_NAMESPACE",
    "MAX_FIND_NODE_KEY_BYTES",
    "charged_when_pushed",
    "home_record_key",
    "select_home_record",
    "validate_home_record",
]

HOME_DHT_NAMESPACE: Final = "home"
"""The DHT key namespace of home records: keys are `/home/<43 base64url characters>`."""
_PREFIX: Final = f"/{HOME_DHT_NAMESPACE}/"
MAX_FIND_NODE_KEY_BYTES: Final = 50
"""py-libp2p servers refuse longer non-multihash FIND_NODE targets; our keys must fit."""


def home_record_key(user: UserId) -> str:
    """The DHT key of `user`'s home record: `/home/` + the 32-byte user id in base64url
    (RFC 4648 §5) without padding: 49 bytes, under `MAX_FIND_NODE_KEY_BYTES`.

    Raises:
        InvalidIdentifier: `user` is not 32 bytes.
    """
    if len(user) != KEY_BYTES:
        raise InvalidIdentifier(f"a user id is {KEY_BYTES} bytes, got {len(user)}")
    return _PREFIX + _b64(bytes(user))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _user_of_key(key: str) -> UserId:
    text = key.removeprefix(_PREFIX)
    if key.startswith(_PREFIX) and len(text) == 43 and text.isascii():
        try:
            raw = base64.urlsafe_b64decode(text + "=")
        except (binascii.Error, ValueError):
            raw = b""
        # Exactly the form home_record_key produces: one spelling per user, so one DHT slot.
        if len(raw) == KEY_BYTES and _b64(raw) == text:
            return UserId(raw)
    raise InvalidIdentifier(f"not a home record key: {key[:80]!r}")


def validate_home_record(key: str, value: bytes, *, now_ms: int) -> HomeRecord:
    """Accept `value` under `key` only if it is a valid home record of the user the key names.

    Args:
        key: The DHT key, `/home/<user id hex>`.
        value: The encoded home record.
        now_ms: The caller's clock (a record issued beyond the allowed drift is refused).

    Returns:
        The decoded, verified record.

    Raises:
        InvalidIdentifier: `key` is not a home record key.
        TooLarge: `value` is larger than a home record may be.
        MalformedMessage: `value` is not a home record.
        BadSignature: not signed by its user, or issued too far in the future.
        BadCertificate: a device certificate fails or belongs to another user.
        NotAuthorized: the record is valid but belongs to another user than `key` names.
    """
    user = _user_of_key(key)
    record = decode_home_record(value)
    verify_home_record(record, now_ms=now_ms)
    if record.user != user:
        raise NotAuthorized("home record stored under another user's key")
    return record


def _rank(key: str, value: bytes) -> tuple[int, bytes] | None:
    try:
        record = decode_home_record(value)
    except RemoteProtocolError:
        return None
    if _PREFIX + _b64(bytes(record.user)) != key:
        return None
    return record.issued_ms, value


def select_home_record(key: str, values: list[bytes]) -> int:
    """The index of the best of `values` for `key`: the newest `issued_ms` wins.

    The values are expected to have passed `validate_home_record` already (the DHT validates
    before it selects); one that does not decode or names another user never wins. Equal
    `issued_ms` is settled by the larger encoding, so every node picks the same record; on equal
    bytes the first index wins.

    Raises:
        MalformedMessage: no value is a home record for `key`.
    """
    best_index, best_rank = -1, None
    for index, value in enumerate(values):
        rank = _rank(key, value)
        if rank is not None and (best_rank is None or rank > best_rank):
            best_index, best_rank = index, rank
    if best_rank is None:
        raise MalformedMessage(f"no home record for {key[:80]!r} among {len(values)} values")
    return best_index


def charged_when_pushed(error: RemoteProtocolError) -> bool:
    """Whether refusing a record a peer pushed to us (a kad PUT_VALUE) charges that peer
    (SPEC §13.4.1): yes for what no honest pusher sends (bytes that are no record, a forged
    signature or certificate, a key that is not the record's user's); no for what an honest
    pusher's clock may have let through: a certificate past its expiry by ours, or a time
    ahead of ours (`ClockSkew`). An older record than the one held is not refused here at all:
    it loses `select_home_record` and is not stored."""
    if isinstance(error, BadCertificate):
        return not error.expired
    return not isinstance(error, ClockSkew)
