"""Users, profiles, contacts, friend requests, devices, push, sync state, settings (`_txn`)."""

from __future__ import annotations

from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.protocol.identity import UserId

from .api import (
    Contact,
    DeviceRecord,
    FriendRequest,
    MediaInfo,
    Profile,
    PushSubscription,
)
from .keys import (
    ID_BYTES,
    Table,
    check_id,
    contact_key,
    device_key,
    handle_key,
    pack_u64,
    prefix_end,
    push_key,
    release_key,
    sync_key,
    unpack_u64,
)
from .kv import KvTxn
from .records import (
    corrupt,
    decode_device,
    decode_friend_request,
    decode_media,
    decode_profile,
    decode_push,
    encode_device,
    encode_friend_request,
    encode_media,
    encode_profile,
    encode_push,
)

__all__ = [
    "accept_friend_request_txn",
    "add_contact_txn",
    "contacts_txn",
    "delete_friend_request_txn",
    "device_owner_txn",
    "devices_txn",
    "find_handle_txn",
    "friend_requests_sent_txn",
    "friend_requests_txn",
    "get_profile_txn",
    "media_info_txn",
    "push_subscriptions_txn",
    "put_device_txn",
    "put_friend_request_txn",
    "put_media_txn",
    "put_profile_txn",
    "put_push_txn",
    "release_progress_key",
    "setting_key",
    "sync_state_key",
]


def setting_key(name: str) -> bytes:
    """Settings are keyed by their utf-8 name."""
    if not name or len(name) > 200:
        raise LocalProtocolError(f"setting name must be 1..200 characters: {name!r}")
    return name.encode("utf-8")


def put_profile_txn(txn: KvTxn, profile: Profile) -> None:
    """Replace a profile and move its handle index entry."""
    check_id(profile.user, "user")
    if "\x00" in profile.handle:
        raise LocalProtocolError("a handle never contains NUL")
    old = txn.get(Table.PROFILES, profile.user)
    if old is not None:
        txn.delete(
            Table.HANDLES, handle_key(decode_profile(profile.user, old).handle, profile.user)
        )
    txn.put(Table.PROFILES, profile.user, encode_profile(profile))
    txn.put(Table.HANDLES, handle_key(profile.handle, profile.user), b"")


def get_profile_txn(txn: KvTxn, user: bytes) -> Profile | None:
    """The profile of `user`."""
    value = txn.get(Table.PROFILES, user)
    return None if value is None else decode_profile(user, value)


def find_handle_txn(txn: KvTxn, handle: str) -> list[UserId]:
    """Users carrying `handle`."""
    prefix = handle.encode("utf-8") + b"\x00"
    return [
        UserId(k[len(prefix) :]) for k, _ in txn.scan(Table.HANDLES, prefix, prefix_end(prefix))
    ]


def add_contact_txn(txn: KvTxn, owner: bytes, contact: bytes, now_ms: int) -> None:
    """Put `contact` on `owner`'s list (keeps the first added time)."""
    check_id(owner, "owner")
    check_id(contact, "contact")
    txn.insert(Table.CONTACTS, contact_key(owner, contact), pack_u64(now_ms))


def contacts_txn(txn: KvTxn, owner: bytes) -> list[Contact]:
    """`owner`'s contacts."""
    contacts = []
    for key, value in txn.scan(Table.CONTACTS, owner, prefix_end(owner)):
        if len(value) != 8:
            raise corrupt(Table.CONTACTS, key, "added time is not 8 bytes")
        contacts.append(
            Contact(owner=UserId(owner), contact=UserId(key[ID_BYTES:]), added_ms=unpack_u64(value))
        )
    return contacts


def put_friend_request_txn(txn: KvTxn, request: FriendRequest) -> bool:
    """Record a pending request; False if one is pending already."""
    check_id(request.sender, "sender")
    check_id(request.recipient, "recipient")
    if not txn.insert(
        Table.FRIEND_REQUESTS,
        contact_key(request.recipient, request.sender),
        encode_friend_request(request),
    ):
        return False
    txn.put(Table.FRIEND_REQUESTS_SENT, contact_key(request.sender, request.recipient), b"")
    return True


def friend_requests_txn(txn: KvTxn, recipient: bytes) -> list[FriendRequest]:
    """Requests pending for `recipient`."""
    return [
        decode_friend_request(k, v)
        for k, v in txn.scan(Table.FRIEND_REQUESTS, recipient, prefix_end(recipient))
    ]


def friend_requests_sent_txn(txn: KvTxn, sender: bytes) -> list[FriendRequest]:
    """Requests `sender` made that are still pending, by recipient id."""
    requests = []
    for key, _ in txn.scan(Table.FRIEND_REQUESTS_SENT, sender, prefix_end(sender)):
        at = contact_key(key[ID_BYTES:], sender)
        value = txn.get(Table.FRIEND_REQUESTS, at)
        if value is None:
            raise corrupt(Table.FRIEND_REQUESTS_SENT, key, "points at a missing request")
        requests.append(decode_friend_request(at, value))
    return requests


def delete_friend_request_txn(txn: KvTxn, sender: bytes, recipient: bytes) -> bool:
    """Drop a pending request and its reverse index; False if there was none."""
    txn.delete(Table.FRIEND_REQUESTS_SENT, contact_key(sender, recipient))
    return txn.delete(Table.FRIEND_REQUESTS, contact_key(recipient, sender))


def accept_friend_request_txn(txn: KvTxn, sender: bytes, recipient: bytes, now_ms: int) -> bool:
    """Drop the request and make the two users contacts both ways."""
    if not delete_friend_request_txn(txn, sender, recipient):
        return False
    add_contact_txn(txn, recipient, sender, now_ms)
    add_contact_txn(txn, sender, recipient, now_ms)
    return True


def put_device_txn(txn: KvTxn, record: DeviceRecord) -> None:
    """Store a device and its owner index."""
    check_id(record.user, "user")
    check_id(record.device, "device")
    owner = txn.get(Table.DEVICE_OWNERS, record.device)
    if owner is not None and owner != record.user:
        raise LocalProtocolError(f"device {record.device.hex()} already belongs to another user")
    txn.put(Table.DEVICES, device_key(record.user, record.device), encode_device(record))
    txn.put(Table.DEVICE_OWNERS, record.device, record.user)


def devices_txn(txn: KvTxn, user: bytes) -> list[DeviceRecord]:
    """A user's devices."""
    return [decode_device(k, v) for k, v in txn.scan(Table.DEVICES, user, prefix_end(user))]


def device_owner_txn(txn: KvTxn, device: bytes) -> UserId | None:
    """Who a stored device belongs to."""
    owner = txn.get(Table.DEVICE_OWNERS, device)
    return None if owner is None else UserId(owner)


def push_subscriptions_txn(txn: KvTxn, user: bytes) -> list[PushSubscription]:
    """A user's push subscriptions."""
    return [decode_push(k, v) for k, v in txn.scan(Table.PUSH, user, prefix_end(user))]


def put_push_txn(txn: KvTxn, subscription: PushSubscription) -> None:
    """Store a push subscription."""
    check_id(subscription.user, "user")
    if not subscription.subscription_id:
        raise LocalProtocolError("a push subscription needs an id")
    txn.put(
        Table.PUSH,
        push_key(subscription.user, subscription.subscription_id),
        encode_push(subscription),
    )


def sync_state_key(peer: bytes, room: bytes) -> bytes:
    """Checked key of a sync state."""
    check_id(room, "room")
    return sync_key(peer, room)


def release_progress_key(room: bytes, device: bytes) -> bytes:
    """Checked key of a sender device's release progress in a room."""
    check_id(room, "room")
    check_id(device, "device")
    return release_key(room, device)


def put_media_txn(txn: KvTxn, info: MediaInfo) -> MediaInfo:
    """Record blob metadata unless present; returns what is stored."""
    old = txn.get(Table.MEDIA, info.digest)
    if old is not None:
        return decode_media(info.digest, old)
    txn.put(Table.MEDIA, info.digest, encode_media(info))
    return info


def media_info_txn(txn: KvTxn, digest: bytes) -> MediaInfo | None:
    """Metadata of a blob."""
    value = txn.get(Table.MEDIA, digest)
    return None if value is None else decode_media(digest, value)
