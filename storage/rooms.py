"""Rooms, members in both directions, and the per-user conversation list (`_txn` helpers).

A local member's conversation list is two tables written together: `conversations.latest`
(user | room -> latest hlc) and `conversations.by_activity` (user | hlc | room), so the first
page of 5,000 conversations is a short reverse scan, not a sort.
"""

from __future__ import annotations

from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.protocol.hlc import Timestamp, decode_timestamp, encode_timestamp
from hearthmesh.protocol.identity import UserId

from .api import ConversationPage, ConversationSummary, Member
from .history import latest_event_txn
from .keys import (
    ID_BYTES,
    Table,
    activity_key,
    check_id,
    conversation_key,
    decode_activity_key,
    member_key,
    prefix_end,
)
from .kv import KvTxn
from .records import corrupt, decode_member, encode_member

__all__ = [
    "MAX_PAGE_SIZE",
    "add_member_txn",
    "bump_conversation_txn",
    "conversations_txn",
    "delete_conversation_txn",
    "local_members_txn",
    "members_txn",
    "open_conversation_txn",
    "remove_member_txn",
    "rooms_of_txn",
]

MAX_PAGE_SIZE = 1000


def bump_conversation_txn(txn: KvTxn, user: bytes, room: bytes, hlc: bytes) -> None:
    """List `room` for `user` with activity `hlc` unless it already shows later activity."""
    key = conversation_key(user, room)
    old = txn.get(Table.CONVERSATIONS, key)
    if old is not None:
        if old >= hlc:
            return
        # written with the conversation's row, so no read to learn whether it is there
        txn.discard(Table.ACTIVITY, activity_key(user, old, room))
    txn.put(Table.CONVERSATIONS, key, hlc)
    txn.put(Table.ACTIVITY, activity_key(user, hlc, room), b"")


def add_member_txn(
    txn: KvTxn, room: bytes, user: bytes, *, role: int, local: bool, now_ms: int
) -> None:
    """Write the member in both directions (and the local index); list it for a local user."""
    check_id(room, "room")
    check_id(user, "user")
    key = member_key(room, user)
    txn.put(Table.MEMBERS, key, encode_member(role, now_ms, local))
    txn.put(Table.ROOMS_BY_USER, member_key(user, room), b"")
    if local:
        txn.put(Table.LOCAL_MEMBERS, key, b"")
        if txn.get(Table.CONVERSATIONS, conversation_key(user, room)) is None:
            bump_conversation_txn(txn, user, room, encode_timestamp(Timestamp(now_ms, 0)))
    else:
        txn.delete(Table.LOCAL_MEMBERS, key)


def remove_member_txn(txn: KvTxn, room: bytes, user: bytes) -> bool:
    """Remove both directions; the conversation stays in the user's list."""
    key = member_key(room, user)
    txn.delete(Table.LOCAL_MEMBERS, key)
    txn.delete(Table.ROOMS_BY_USER, member_key(user, room))
    return txn.delete(Table.MEMBERS, key)


def members_txn(txn: KvTxn, room: bytes) -> list[Member]:
    """Members of `room` by user id."""
    return [decode_member(k, v) for k, v in txn.scan(Table.MEMBERS, room, prefix_end(room))]


def rooms_of_txn(txn: KvTxn, user: bytes) -> list[RoomId]:
    """Rooms `user` belongs to, by room id."""
    return [RoomId(k[ID_BYTES:]) for k, _ in txn.scan(Table.ROOMS_BY_USER, user, prefix_end(user))]


def open_conversation_txn(txn: KvTxn, user: bytes, room: bytes, *, now_ms: int) -> None:
    """List `room` for `user` if it is not listed."""
    check_id(room, "room")
    check_id(user, "user")
    if txn.get(Table.CONVERSATIONS, conversation_key(user, room)) is None:
        bump_conversation_txn(txn, user, room, encode_timestamp(Timestamp(now_ms, 0)))


def delete_conversation_txn(txn: KvTxn, user: bytes, room: bytes) -> bool:
    """Unlist `room` for `user`."""
    key = conversation_key(user, room)
    old = txn.get(Table.CONVERSATIONS, key)
    if old is None:
        return False
    txn.delete(Table.CONVERSATIONS, key)
    txn.delete(Table.ACTIVITY, activity_key(user, old, room))
    return True


def conversations_txn(
    txn: KvTxn, user: bytes, *, page_size: int, page_number: int
) -> ConversationPage:
    """A page of `user`'s conversations, latest activity first; `page_number` is 1-based."""
    if not 1 <= page_size <= MAX_PAGE_SIZE or page_number < 1:
        raise LocalProtocolError(
            f"page_size must be 1..{MAX_PAGE_SIZE} and page_number >= 1, "
            f"got {page_size} and {page_number}"
        )
    skip = (page_number - 1) * page_size
    rows: list[tuple[bytes, bytes]] = []
    for index, (key, _) in enumerate(
        txn.scan(Table.ACTIVITY, user, prefix_end(user), reverse=True)
    ):
        if index < skip:
            continue
        if len(rows) == page_size + 1:
            break
        rows.append(decode_activity_key(key))
    items = []
    for hlc, room in rows[:page_size]:
        if len(room) != ID_BYTES:
            raise corrupt(Table.ACTIVITY, activity_key(user, hlc, room), "bad key length")
        items.append(
            ConversationSummary(
                room=RoomId(room),
                latest_activity=decode_timestamp(hlc),
                latest=latest_event_txn(txn, room),
            )
        )
    return ConversationPage(
        items=tuple(items),
        page_number=page_number,
        page_size=page_size,
        has_more=len(rows) > page_size,
    )


def local_members_txn(txn: KvTxn, room: bytes) -> list[UserId]:
    """Users hosted here who are members of `room`."""
    return [UserId(k[ID_BYTES:]) for k, _ in txn.scan(Table.LOCAL_MEMBERS, room, prefix_end(room))]
