"""What an admin's home shares with a new member, and who may ask (SPEC §30.6)."""

from __future__ import annotations

import pytest
import vodozemac

from hearthmesh.protocol.e2ee import MAX_FORWARDED_KEYS, encrypt_content
from hearthmesh.protocol.e2ee.megolm import ENCRYPTED_CONTENT_TYPE
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.errors import HistoryNotShared
from hearthmesh.protocol.history_share import (
    check_history_request,
    choose_history,
    megolm_position,
)
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, keypair_from_seed
from hearthmesh.protocol.membership import Role, RoomState

ALICE, MALLORY = keypair_from_seed(b"a" * 32), keypair_from_seed(b"m" * 32)
ROOM = RoomId(b"r" * 32)
MEMBERS = frozenset({UserId(ALICE.public)})


def _sent(session: vodozemac.GroupSession, n: int, *, by: object = ALICE) -> Envelope:
    body, _ = encrypt_content(session, "text/plain", f"m{n}".encode())
    key = ALICE if by is ALICE else MALLORY
    return seal(
        key,
        kind=Kind.MESSAGE,
        room=ROOM,
        sender_user=UserId(key.public),
        seq=n + 1,
        hlc=Timestamp(wall_ms=1000 + n, counter=0),
        content_type=ENCRYPTED_CONTENT_TYPE,
        body=body,
    )


def _session(envelope: Envelope) -> bytes:
    position = megolm_position(envelope)
    assert position is not None
    return position[0]


def test_the_last_n_messages_of_members_with_each_sessions_lowest_index() -> None:
    first, second = vodozemac.GroupSession(), vodozemac.GroupSession()
    sent = [_sent(first, n) for n in range(4)] + [_sent(second, n) for n in range(4, 6)]
    stranger = _sent(vodozemac.GroupSession(), 6, by=MALLORY)
    newest_first = [stranger, *reversed(sent)]
    shared = choose_history(newest_first, limit=3, members=MEMBERS)
    assert shared.messages == tuple(e.message_id for e in sent[3:])  # oldest first
    assert shared.from_index == {_session(sent[3]): 3, _session(sent[4]): 0}


def test_one_answer_carries_at_most_64_sessions() -> None:
    sent = [_sent(vodozemac.GroupSession(), n) for n in range(MAX_FORWARDED_KEYS + 5)]
    shared = choose_history(reversed(sent), limit=256, members=MEMBERS)
    assert len(shared.messages) == len(shared.from_index) == MAX_FORWARDED_KEYS
    assert shared.messages[-1] == sent[-1].message_id


def test_only_a_member_of_a_sharing_group_may_ask() -> None:
    user = UserId(ALICE.public)
    state = RoomState(room=ROOM, created=True, members={user: Role.MEMBER})
    with pytest.raises(HistoryNotShared):
        check_history_request(state, user)  # `joined`, the default
    state.history, state.history_limit = "shared", 20
    assert check_history_request(state, user) == 20
    with pytest.raises(HistoryNotShared):
        check_history_request(state, UserId(MALLORY.public))
    with pytest.raises(HistoryNotShared):
        check_history_request(None, user)
