"""Value encodings of the stored records, and decoding that names the key that failed.

Structured records are canonical CBOR arrays (protocol.canonical); hot fixed-width values are
struct-packed. A value that fails to decode raises `UnreadableItem` naming the sub-database and
key, so one bad record is reported precisely and the rest of the store stays readable.
"""

from __future__ import annotations

import logging
import struct
from typing import Final

from hearthmesh.protocol.canonical import CborValue, decode_canonical, encode_canonical
from hearthmesh.protocol.envelope import Envelope, MessageId, RoomId, read_stored_envelope
from hearthmesh.protocol.errors import HearthError, MalformedMessage, UnreadableItem
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.protocol.media_seal import seal_from_cbor, seal_to_cbor

from .api import (
    ClientRecord,
    DeliveryStatus,
    DeviceRecord,
    FriendRequest,
    MediaInfo,
    Member,
    Profile,
    PushSubscription,
    RelayUsage,
)
from .keys import ID_BYTES, Table, pack_u64, unpack_u64

__all__ = [
    "corrupt",
    "decode_client",
    "decode_device",
    "decode_envelope_at",
    "decode_friend_request",
    "decode_media",
    "decode_member",
    "decode_outbox_value",
    "decode_profile",
    "decode_push",
    "decode_relay_holder",
    "decode_relay_message",
    "decode_relay_share",
    "decode_relay_usage",
    "decode_status",
    "decode_u64_at",
    "encode_client",
    "encode_device",
    "encode_friend_request",
    "encode_media",
    "encode_member",
    "encode_outbox_value",
    "encode_profile",
    "encode_push",
    "encode_relay_holder",
    "encode_relay_message",
    "encode_relay_share",
    "encode_relay_usage",
    "encode_status",
    "log_u64_rebuilt",
]

_MAX_RECORD_BYTES: Final = 1 << 20
_STATUS: Final = struct.Struct(">BQ")
_OUTBOX: Final = struct.Struct(">IB")
_USAGE: Final = struct.Struct(">QQQ")
_SHARE: Final = struct.Struct(">QQ")


def corrupt(table: Table, key: bytes, detail: str) -> UnreadableItem:
    """The error for a stored value that does not decode: that row alone is unreadable."""
    table_name = table.value.decode()
    return UnreadableItem(
        f"undecodable value in {table_name} at key {key.hex()}: {detail}",
        item=f"{table_name}/{key.hex()}",
    )


def log_u64_rebuilt(
    log: logging.Logger, table: Table, key: bytes, data: bytes | None, source: Table, value: object
) -> None:
    """Log, as a WARNING, a derived u64 row that did not decode (or was gone: `data` None),
    rewritten as `value` from `source` (SPEC §11.8.7: rebuilt, not contained); once, since it
    is whole after."""
    log.warning(
        "damaged row %s/%s (%s) rebuilt from %s: %s",
        table.value.decode(),
        key.hex(),
        "missing" if data is None else f"{len(data)} bytes, not a u64",
        source.value.decode(),
        value,
    )


def decode_u64_at(table: Table, key: bytes, data: bytes) -> int:
    """A stored u64; one of another length is that row unreadable, not a `struct.error` that
    a handler would take for bad input and charge to the peer whose message met it."""
    if len(data) != 8:
        raise corrupt(table, key, f"{len(data)} bytes, not a u64")
    return unpack_u64(data)


def _load(table: Table, key: bytes, data: bytes) -> list[CborValue]:
    try:
        value = decode_canonical(data, max_bytes=_MAX_RECORD_BYTES)
    except HearthError as exc:
        raise corrupt(table, key, str(exc)) from None
    if not isinstance(value, list):
        raise corrupt(table, key, "not a record")
    return value


def decode_envelope_at(table: Table, key: bytes, data: bytes) -> Envelope:
    """Load a stored envelope (no signature check: we verified it before storing it)."""
    try:
        return read_stored_envelope(data)
    except HearthError as exc:
        raise corrupt(table, key, str(exc)) from None


def encode_member(role: int, joined_ms: int, local: bool) -> bytes:
    """[role, joined_ms, local 0/1]."""
    return encode_canonical([role, joined_ms, int(local)])


def decode_member(key: bytes, data: bytes) -> Member:
    """A `rooms.members` record; `key` is room | user."""
    match _load(Table.MEMBERS, key, data):
        case [int() as role, int() as joined_ms, 0 | 1 as local]:
            return Member(
                room=RoomId(key[:ID_BYTES]),
                user=UserId(key[ID_BYTES:]),
                role=role,
                joined_ms=joined_ms,
                local=bool(local),
            )
    raise corrupt(Table.MEMBERS, key, "not a member record")


def encode_profile(profile: Profile) -> bytes:
    """[handle, display_name, avatar | null, bio, updated_ms]."""
    return encode_canonical(
        [profile.handle, profile.display_name, profile.avatar, profile.bio, profile.updated_ms]
    )


def decode_profile(key: bytes, data: bytes) -> Profile:
    """A `users.profiles` record; `key` is the user id."""
    match _load(Table.PROFILES, key, data):
        case [
            str() as handle,
            str() as display_name,
            (bytes() | None) as avatar,
            str() as bio,
            int() as updated_ms,
        ]:
            return Profile(
                user=UserId(key),
                handle=handle,
                display_name=display_name,
                avatar=avatar,
                bio=bio,
                updated_ms=updated_ms,
            )
    raise corrupt(Table.PROFILES, key, "not a profile record")


def encode_friend_request(request: FriendRequest) -> bytes:
    """[created_ms, note]."""
    return encode_canonical([request.created_ms, request.note])


def decode_friend_request(key: bytes, data: bytes) -> FriendRequest:
    """A `contacts.requests` record; `key` is recipient | sender."""
    match _load(Table.FRIEND_REQUESTS, key, data):
        case [int() as created_ms, str() as note]:
            return FriendRequest(
                sender=UserId(key[ID_BYTES:]),
                recipient=UserId(key[:ID_BYTES]),
                created_ms=created_ms,
                note=note,
            )
    raise corrupt(Table.FRIEND_REQUESTS, key, "not a friend request record")


def encode_device(record: DeviceRecord) -> bytes:
    """[certificate, e2ee identity key, added_ms, revoked_ms | null]."""
    return encode_canonical(
        [record.certificate, record.e2ee_identity_key, record.added_ms, record.revoked_ms]
    )


def decode_device(key: bytes, data: bytes) -> DeviceRecord:
    """A `devices.records` record; `key` is user | device."""
    match _load(Table.DEVICES, key, data):
        case [
            bytes() as certificate,
            bytes() as e2ee_key,
            int() as added_ms,
            (int() | None) as revoked_ms,
        ]:
            return DeviceRecord(
                user=UserId(key[:ID_BYTES]),
                device=DeviceId(key[ID_BYTES:]),
                certificate=certificate,
                e2ee_identity_key=e2ee_key,
                added_ms=added_ms,
                revoked_ms=revoked_ms,
            )
    raise corrupt(Table.DEVICES, key, "not a device record")


def encode_push(subscription: PushSubscription) -> bytes:
    """[data, created_ms]."""
    return encode_canonical([subscription.data, subscription.created_ms])


def decode_push(key: bytes, data: bytes) -> PushSubscription:
    """A `push.subscriptions` record; `key` is user | subscription id."""
    match _load(Table.PUSH, key, data):
        case [bytes() as payload, int() as created_ms]:
            return PushSubscription(
                user=UserId(key[:ID_BYTES]),
                subscription_id=key[ID_BYTES:],
                data=payload,
                created_ms=created_ms,
            )
    raise corrupt(Table.PUSH, key, "not a push subscription record")


def encode_client(record: ClientRecord) -> bytes:
    """[secret_sha256, name, created_ms]."""
    return encode_canonical([record.secret_sha256, record.name, record.created_ms])


def decode_client(key: bytes, data: bytes) -> ClientRecord:
    """A `clients.credentials` record; `key` is the client id."""
    match _load(Table.CLIENTS, key, data):
        case [bytes() as secret_sha256, str() as name, int() as created_ms]:
            return ClientRecord(
                client_id=key, secret_sha256=secret_sha256, name=name, created_ms=created_ms
            )
    raise corrupt(Table.CLIENTS, key, "not a client record")


def encode_media(info: MediaInfo) -> bytes:
    """[size, content_type, created_ms] and, for a sealed blob, its seal (SPEC §28)."""
    fields: list[CborValue] = [info.size, info.content_type, info.created_ms]
    if info.seal is not None:
        fields.append(seal_to_cbor(info.seal))
    return encode_canonical(fields)


def decode_media(key: bytes, data: bytes) -> MediaInfo:
    """A `media.blobs` record; `key` is the digest."""
    match _load(Table.MEDIA, key, data):
        case [int() as size, str() as content_type, int() as created_ms, *rest] if len(rest) <= 1:
            try:
                seal = seal_from_cbor(rest[0]) if rest else None
            except MalformedMessage:
                raise corrupt(Table.MEDIA, key, "not a media seal") from None
            return MediaInfo(
                digest=key, size=size, content_type=content_type, created_ms=created_ms, seal=seal
            )
    raise corrupt(Table.MEDIA, key, "not a media record")


def encode_status(status: DeliveryStatus, updated_ms: int) -> bytes:
    """status u8 | updated_ms u64."""
    return _STATUS.pack(status, updated_ms)


def decode_status(key: bytes, data: bytes) -> tuple[DeliveryStatus, int]:
    """(status, updated_ms) of a `status.receipts` value."""
    try:
        status, updated_ms = _STATUS.unpack(data)
        return DeliveryStatus(status), int(updated_ms)
    except (struct.error, ValueError) as exc:
        raise corrupt(Table.STATUS, key, str(exc)) from None


def encode_outbox_value(attempts: int, error: str | None) -> bytes:
    """attempts u32 | has_error u8 | error utf-8."""
    text = b"" if error is None else error.encode("utf-8")
    return _OUTBOX.pack(attempts, error is not None) + text


def decode_outbox_value(key: bytes, data: bytes) -> tuple[int, str | None]:
    """(attempts, last error) of an `outbox.queue` value."""
    try:
        attempts, has_error = _OUTBOX.unpack_from(data)
        text = data[_OUTBOX.size :].decode("utf-8")
    except (struct.error, UnicodeDecodeError) as exc:
        raise corrupt(Table.OUTBOX_QUEUE, key, str(exc)) from None
    return int(attempts), (text if has_error else None)


def encode_relay_message(expires_ms: int, message_id: bytes, wire: bytes) -> bytes:
    """expires_ms u64 | message id | wire."""
    return pack_u64(expires_ms) + message_id + wire


def decode_relay_message(key: bytes, data: bytes) -> tuple[int, MessageId, bytes]:
    """(expires_ms, message id, wire) of a `relay.messages` value."""
    if len(data) < 8 + ID_BYTES:
        raise corrupt(Table.RELAY_MESSAGES, key, "too short")
    (expires_ms,) = struct.unpack_from(">Q", data)
    return int(expires_ms), MessageId(data[8 : 8 + ID_BYTES]), data[8 + ID_BYTES :]


def encode_relay_usage(usage: RelayUsage, next_arrival: int) -> bytes:
    """count u64 | bytes u64 | next arrival u64."""
    return _USAGE.pack(usage.count, usage.bytes, next_arrival)


def decode_relay_usage(key: bytes, data: bytes | None) -> tuple[RelayUsage, int]:
    """(usage, next arrival) of a `relay.usage` value; absent means empty."""
    if data is None:
        return RelayUsage(count=0, bytes=0), 0
    try:
        count, size, arrival = _USAGE.unpack(data)
    except struct.error as exc:
        raise corrupt(Table.RELAY_USAGE, key, str(exc)) from None
    return RelayUsage(count=count, bytes=size), int(arrival)


def encode_relay_share(usage: RelayUsage) -> bytes:
    """count u64 | bytes u64 (a sender's, a peer's or a class's share of the relay inbox)."""
    return _SHARE.pack(usage.count, usage.bytes)


def decode_relay_share(table: Table, key: bytes, data: bytes | None) -> RelayUsage:
    """Inverse of `encode_relay_share`; absent means nothing held."""
    if data is None:
        return RelayUsage(count=0, bytes=0)
    try:
        count, size = _SHARE.unpack(data)
    except struct.error as exc:
        raise corrupt(table, key, str(exc)) from None
    return RelayUsage(count=count, bytes=size)


def encode_relay_holder(known: bool, sender: bytes, peer: bytes) -> bytes:
    """known u8 | sender user | peer."""
    return bytes([known]) + sender + peer


def decode_relay_holder(key: bytes, data: bytes) -> tuple[bool, bytes, bytes]:
    """(known, sender user, peer) of a `relay.holders` value."""
    if len(data) < 2 + ID_BYTES or data[0] > 1:
        raise corrupt(Table.RELAY_HOLDERS, key, "not known | sender | peer")
    return bool(data[0]), data[1 : 1 + ID_BYTES], data[1 + ID_BYTES :]
