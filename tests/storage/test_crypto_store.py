"""The e2ee state tables (SPEC §27.8) on both engines: pickles round-trip, the first inbound
session of an id wins, a Megolm index opens one message, a one-time key is handed out once,
and an outbound session's advance commits with the batch that wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearthmesh.protocol.e2ee.megolm import (
    ENCRYPTED_CONTENT_TYPE,
    MEGOLM_V1,
    EncryptedBody,
    encode_encrypted_body,
    encode_plaintext,
)
from hearthmesh.protocol.envelope import MessageId, RoomId
from hearthmesh.protocol.errors import LocalProtocolError
from hearthmesh.protocol.identity import DeviceId, UserId
from hearthmesh.storage.api import AppendRequest, AppendResult, InboundSession, OutboundSession
from hearthmesh.storage.keys import Table, crypto_pair_key
from hearthmesh.storage.store import KvStore
from tests.storage.conftest import open_store
from tests.storage.helpers import make_envelope

ROOM = RoomId(b"r" * 32)
SESSION = b"s" * 32


def test_account_and_olm_sessions_round_trip(store: KvStore) -> None:
    assert store.crypto_account() is None
    store.set_crypto_account(b"pickle-1")
    store.set_crypto_account(b"pickle-2")
    assert store.crypto_account() == b"pickle-2"
    peer, other = b"p" * 32, b"q" * 32
    store.put_olm_session(peer, b"b-session", b"olm-b")
    store.put_olm_session(peer, b"a-session", b"olm-a")
    store.put_olm_session(other, b"c-session", b"olm-c")
    store.put_olm_session(peer, b"b-session", b"olm-b2")
    assert store.olm_sessions(peer) == [(b"a-session", b"olm-a"), (b"b-session", b"olm-b2")]


def test_outbound_session_keeps_its_age_and_count(store: KvStore) -> None:
    assert store.outbound_session(ROOM) is None
    session = OutboundSession(created_ms=1_700_000_000_000, messages=7, pickle=b"megolm")
    store.put_outbound_session(ROOM, session)
    assert store.outbound_session(ROOM) == session


def test_the_first_inbound_session_of_an_id_wins(store: KvStore) -> None:
    first = InboundSession(owner=DeviceId(b"a" * 32), pickle=b"first")
    assert store.put_inbound_session(ROOM, SESSION, first)
    assert not store.put_inbound_session(
        ROOM, SESSION, InboundSession(owner=DeviceId(b"m" * 32), pickle=b"usurper")
    )
    assert store.inbound_session(ROOM, SESSION) == first
    assert store.inbound_session(RoomId(b"o" * 32), SESSION) is None


def test_a_megolm_index_opens_one_message(store: KvStore) -> None:
    first, replay = MessageId(b"1" * 32), MessageId(b"2" * 32)
    assert store.keep_opened(SESSION, 5, first, b"first") is None
    assert store.keep_opened(SESSION, 5, first, b"first") == first  # the same, opened again
    assert store.keep_opened(SESSION, 5, replay, b"replay") == first
    assert store.plaintext(first) == b"first"
    assert store.plaintext(replay) is None  # a refused claim keeps nothing
    assert store.keep_opened(SESSION, 6, replay, b"other") is None
    assert store.plaintext(replay) == b"other"


def test_a_message_opened_again_after_its_plaintext_went_is_shown_opened(
    store: KvStore,
) -> None:
    """A retention purge (or a refusal after opening) takes the plaintext and leaves the index
    claim. The same message stored again (a sibling's sync brings it back) opens again: its
    plaintext is kept again, or history showed it as ciphertext and left it out of the
    conversation while the feed showed the opened copy it had in hand (SPEC §27.7)."""
    body = EncryptedBody(algorithm=MEGOLM_V1, session_id=SESSION, ciphertext=b"\x03" * 40)
    message = make_envelope(content_type=ENCRYPTED_CONTENT_TYPE, body=encode_encrypted_body(body))
    plaintext = encode_plaintext("text/plain", b"hello")
    assert store.append(AppendRequest(envelope=message)) is AppendResult.STORED
    assert store.keep_opened(SESSION, 5, message.message_id, plaintext) is None
    assert store.purge(now_ms=3_000, retention_ms=1_000).events == 1
    assert store.plaintext(message.message_id) is None
    assert store.append(AppendRequest(envelope=message)) is AppendResult.STORED
    assert store.keep_opened(SESSION, 5, message.message_id, plaintext) == message.message_id
    event = store.get_event(message.message_id)
    assert event is not None and event.envelope.content_type == "text/plain"
    assert event.envelope.body == b"hello"
    store.forget_plaintext(message.message_id)  # the inbox's refusal of an opened envelope
    store.keep_opened(SESSION, 5, message.message_id, plaintext)
    assert store.plaintext(message.message_id) == plaintext


def test_a_copy_that_opens_again_writes_nothing(tmp_path: Path) -> None:
    """A message that comes twice (gossip and the guaranteed path) opens twice; the second
    finds its claim and its plaintext and stages no write, so its batch costs no commit."""
    store = open_store("lmdb", tmp_path)
    try:
        message = MessageId(b"1" * 32)
        assert store.keep_opened(SESSION, 5, message, b"plain") is None
        outcomes, staged = store.stage_batch(
            [lambda: store.keep_opened(SESSION, 5, message, b"plain")]
        )
        assert outcomes[0].value == message
        assert not staged
    finally:
        store.close()


def test_a_held_message_that_opens_is_held_no_more_whichever_path_opened_it(
    store: KvStore,
) -> None:
    """A room key opens at most 1,000 held messages in its batch; one left over opens later,
    when a copy of it comes again through the inbox. Opening is what ends the wait, so its
    held note goes then too: it stayed, listed as waiting for a key that is here (and asked
    for by key requests) for good."""
    room, other = RoomId(b"r" * 32), b"o" * 32
    left_over, still_waiting = MessageId(b"1" * 32), MessageId(b"2" * 32)
    store.hold_encrypted(SESSION, left_over, room)
    store.hold_encrypted(SESSION, still_waiting, room)
    store.hold_encrypted(other, left_over, room)  # (another session's note of the same id)
    assert store.keep_opened(SESSION, 5, left_over, b"plain") is None
    assert store.held_encrypted(SESSION, 10) == [(still_waiting, room)]
    assert store.held_encrypted(other, 10) == [(left_over, room)]
    store.hold_encrypted(SESSION, left_over, room)  # a note left by an earlier version
    assert store.keep_opened(SESSION, 5, left_over, b"plain") == left_over  # opened again
    assert store.held_encrypted(SESSION, 10) == [(still_waiting, room)]
    assert store.keep_opened(SESSION, 5, still_waiting, b"replay") == left_over  # refused
    assert store.held_encrypted(SESSION, 10) == [(still_waiting, room)]


def test_plaintexts_are_kept_together(store: KvStore) -> None:
    ids = [MessageId(bytes([i]) * 32) for i in range(3)]
    store.put_plaintexts([(m, m[:1]) for m in ids])
    assert [store.plaintext(m) for m in ids] == [m[:1] for m in ids]


def test_a_one_time_key_is_handed_out_once(store: KvStore) -> None:
    assert store.hand_out_one_time_key(b"k" * 32)
    assert not store.hand_out_one_time_key(b"k" * 32)
    with pytest.raises(LocalProtocolError):
        store.hand_out_one_time_key(b"short")


def test_an_outbound_advance_is_undone_with_its_failed_batch_call(store: KvStore) -> None:
    before = OutboundSession(created_ms=1, messages=1, pickle=b"index-1")
    store.put_outbound_session(ROOM, before)

    def advance_then_fail() -> None:
        store.put_outbound_session(ROOM, OutboundSession(created_ms=1, messages=2, pickle=b"i2"))
        raise LocalProtocolError("the envelope's append failed")

    outcomes = store.run_batch([advance_then_fail])
    assert isinstance(outcomes[0].error, LocalProtocolError)
    assert store.outbound_session(ROOM) == before


def test_crypto_state_survives_reopening(tmp_path: Path) -> None:
    store = open_store("lmdb", tmp_path)
    store.set_crypto_account(b"acct")
    store.put_outbound_session(ROOM, OutboundSession(created_ms=2, messages=3, pickle=b"m"))
    store.close()
    reopened = open_store("lmdb", tmp_path)
    try:
        assert reopened.crypto_account() == b"acct"
        assert reopened.outbound_session(ROOM) == OutboundSession(
            created_ms=2, messages=3, pickle=b"m"
        )
    finally:
        reopened.close()


def test_forgetting_handed_out_marks_keeps_the_pool(store: KvStore) -> None:
    for key in (b"a" * 32, b"b" * 32, b"c" * 32):
        assert store.hand_out_one_time_key(key)
    assert store.forget_handed_out(frozenset({b"b" * 32})) == 2
    assert not store.hand_out_one_time_key(b"b" * 32)
    assert store.hand_out_one_time_key(b"a" * 32)


def test_the_lowest_index_a_users_devices_were_given_a_session_at_is_kept(
    store: KvStore,
) -> None:
    """SPEC §27.13.1: per user, the lowest index its devices got the key at; a row from
    before indices were kept counts as 0; a user never given it has none."""
    room, session = RoomId(b"r" * 32), b"s" * 32
    bob, carol = UserId(b"b" * 32), UserId(b"c" * 32)
    store.mark_shared(room, session, {DeviceId(b"1" * 32): bob}, 3)
    store.mark_shared(room, session, {DeviceId(b"2" * 32): bob}, 1)
    store.mark_shared(room, session, {DeviceId(b"3" * 32): carol}, 7)
    assert store.first_index_given(room, session, bob) == 1
    assert store.first_index_given(room, session, carol) == 7
    assert store.first_index_given(room, session, UserId(b"d" * 32)) is None
    assert store.shared_devices(room, session) == {
        DeviceId(b"1" * 32): bob,
        DeviceId(b"2" * 32): bob,
        DeviceId(b"3" * 32): carol,
    }
    legacy = crypto_pair_key(room, session) + b"4" * 32
    store._engine.write(lambda txn: txn.put(Table.E2EE_SHARED, legacy, carol))
    assert store.first_index_given(room, session, carol) == 0


def test_a_session_owed_to_a_user_is_given_from_the_first_index_owed(store: KvStore) -> None:
    """SPEC §27.10.1, §27.13.1: a member encrypted for before we knew any of its devices is
    owed the session from the first index it was sent; a later note moves it no later, and a
    device's share at a lower index still counts."""
    room, session = RoomId(b"r" * 32), b"s" * 32
    dave, erin = UserId(b"d" * 32), UserId(b"e" * 32)
    store.mark_owed(room, session, [dave, erin], 4)
    store.mark_owed(room, session, [dave], 9)
    assert store.first_index_given(room, session, dave) == 4
    assert store.owed_users(room, session) == {dave: 4, erin: 4}
    store.mark_shared(room, session, {DeviceId(b"1" * 32): erin}, 2)
    assert store.first_index_given(room, session, erin) == 2
    assert store.first_index_given(room, session, UserId(b"f" * 32)) is None
    assert store.owed_users(RoomId(b"q" * 32), session) == {}
