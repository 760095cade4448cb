"""Message actions in the store (SPEC §31): the index, recall tombstones and what a purge
removes (the body, its plaintext, its held mark), delete for me."""

from __future__ import annotations

import pytest

from hearthmesh.protocol.actions import RECALL_CONTENT_TYPE, Recall, encode_recall
from hearthmesh.protocol.e2ee.megolm import (
    ENCRYPTED_CONTENT_TYPE,
    MEGOLM_V1,
    EncryptedBody,
    encode_encrypted_body,
    encode_plaintext,
)
from hearthmesh.protocol.envelope import Envelope, Kind
from hearthmesh.storage.api import AppendRequest, AppendResult, Direction
from hearthmesh.storage.store import KvStore

from .helpers import PEER, ROOM_A, USER_A, USER_B, make_envelope

OTHER_PEER = b"12D3KooWStorageTestPeer2"


def _recall(target: bytes, *, user: bytes = USER_A, seq: int = 2) -> AppendRequest:
    envelope = make_envelope(
        seq=seq,
        wall_ms=2_000,
        kind=Kind.RECALL,
        user=user,
        content_type=RECALL_CONTENT_TYPE,
        body=encode_recall(Recall(target=target)),  # type: ignore[arg-type]
    )
    return AppendRequest(envelope=envelope, acts_on=target)


def test_a_recall_purges_the_body_and_a_later_copy_is_never_stored(store: KvStore) -> None:
    original = make_envelope(body=b"secret")
    assert store.append(AppendRequest(envelope=original)) is AppendResult.STORED
    recall = _recall(original.message_id)
    assert store.append(recall) is AppendResult.STORED
    assert [e.envelope for e in store.actions_of(original.message_id)] == [recall.envelope]
    assert store.withdraw(original.message_id, recall.envelope.message_id, USER_A)
    assert store.get_event(original.message_id) is None
    page = store.page_history(ROOM_A, direction=Direction.FORWARD, limit=10)
    assert all(b"secret" not in e.envelope.wire for e in page.events)
    # sync, a gap fetch or a retry brings it again: as good as stored, never stored
    assert store.append(AppendRequest(envelope=original)) is AppendResult.DUPLICATE
    assert store.get_event(original.message_id) is None
    assert store.withdrawn_by(original.message_id) == USER_A


def test_a_body_still_to_be_delivered_stays_until_its_last_ack(store: KvStore) -> None:
    """The last ack removes it at once: the purge pass may be a minute away, and until then
    a recalled message would still be held here (SPEC §31.1)."""
    original = make_envelope(body=b"secret")
    store.append(AppendRequest(envelope=original, outbox_to=(PEER, OTHER_PEER)))
    store.append(_recall(original.message_id))
    assert not store.withdraw(original.message_id, b"\x01" * 32, USER_A)
    assert store.get_event(original.message_id) is not None  # the away homes still need it
    store.purge(now_ms=3_000, retention_ms=10**12)
    assert store.get_event(original.message_id) is not None
    assert store.ack(PEER, original.message_id)
    assert store.get_event(original.message_id) is not None  # one home still to go
    assert store.ack_many(OTHER_PEER, [original.message_id]) == 1
    assert store.get_event(original.message_id) is None
    assert store.purge(now_ms=3_000, retention_ms=10**12).events == 0
    assert store.withdrawn_by(original.message_id) == USER_A


def test_an_ack_purges_only_recalled_bodies(store: KvStore) -> None:
    kept = make_envelope(body=b"keep me")
    store.append(AppendRequest(envelope=kept, outbox_to=(PEER,)))
    assert store.ack(PEER, kept.message_id)
    assert store.get_event(kept.message_id) is not None


def test_a_recall_by_someone_else_purges_nothing(store: KvStore) -> None:
    original = make_envelope(body=b"mine")
    store.append(AppendRequest(envelope=original))
    assert not store.withdraw(original.message_id, b"\x01" * 32, USER_B)
    assert store.get_event(original.message_id) is not None
    assert store.append(AppendRequest(envelope=make_envelope(body=b"x", seq=3))) is (
        AppendResult.STORED
    )


def test_hidden_messages_are_per_user(store: KvStore) -> None:
    original = make_envelope()
    store.append(AppendRequest(envelope=original))
    assert store.hide_message(USER_A, original.message_id)
    assert not store.hide_message(USER_A, original.message_id)
    assert store.hidden_messages(USER_A, [original.message_id]) == {original.message_id}
    assert store.hidden_messages(USER_B, [original.message_id]) == set()


def test_a_message_arriving_after_its_recall_is_purged_by_the_next_pass(store: KvStore) -> None:
    original = make_envelope(body=b"secret")
    assert not store.withdraw(original.message_id, b"\x01" * 32, USER_A)  # not here yet
    assert store.append(AppendRequest(envelope=original)) is AppendResult.STORED
    assert store.purge(now_ms=3_000, retention_ms=10**12).events == 1
    assert store.get_event(original.message_id) is None
    assert store.append(AppendRequest(envelope=original)) is AppendResult.DUPLICATE


def _encrypted(seq: int, session_id: bytes) -> Envelope:
    body = EncryptedBody(algorithm=MEGOLM_V1, session_id=session_id, ciphertext=b"\x03" * 40)
    return make_envelope(
        seq=seq, content_type=ENCRYPTED_CONTENT_TYPE, body=encode_encrypted_body(body)
    )


def test_a_recalled_body_leaves_no_plaintext_and_no_held_mark_at_rest(store: KvStore) -> None:
    session = b"\x07" * 32
    opened, held = _encrypted(1, session), _encrypted(2, session)
    store.append_many([AppendRequest(envelope=opened), AppendRequest(envelope=held)])
    store.put_plaintexts([(opened.message_id, encode_plaintext("text/plain", b"secret"))])
    store.hold_encrypted(session, held.message_id, ROOM_A)  # its room key has not come yet
    for seq, target in ((3, opened), (4, held)):
        store.append(_recall(target.message_id, seq=seq))
        assert store.withdraw(target.message_id, b"\x01" * 32, USER_A)
    assert store.plaintext(opened.message_id) is None
    assert store.held_encrypted(session, 10) == []
    assert store.get_event(opened.message_id) is None and store.get_event(held.message_id) is None
    # a copy that comes again opens again (its index claim is ours) and is never stored: its
    # plaintext is not kept either
    for index, target in enumerate((opened, held)):
        plaintext = encode_plaintext("text/plain", b"secret")
        store.keep_opened(session, index, target.message_id, plaintext)
        assert store.plaintext(target.message_id) is None


@pytest.mark.parametrize("forged_first", [True, False])
def test_a_forged_recall_before_the_message_does_not_stop_its_senders_purge(
    store: KvStore, forged_first: bool
) -> None:
    original = make_envelope(body=b"secret")
    forged, own = _recall(original.message_id, user=USER_B, seq=3), _recall(original.message_id)
    for recall in (forged, own) if forged_first else (own, forged):  # before the message came
        assert store.append(recall) is AppendResult.STORED
        assert not store.withdraw(
            original.message_id, recall.envelope.message_id, recall.envelope.sender_user
        )
    assert store.append(AppendRequest(envelope=original)) is AppendResult.STORED
    assert store.purge(now_ms=3_000, retention_ms=10**12).events == 1
    assert store.get_event(original.message_id) is None
    assert store.withdrawn_by(original.message_id) == USER_A
