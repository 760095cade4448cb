"""Message actions on arrival (SPEC §31) over a real store: a forged recall or edit of another
member's message, a malformed action and a reaction from a non-member are refused with their
codes and store nothing (an encrypted one judged on its plaintext, which is not kept); a recall
by the sender withdraws the body as it is stored, or once it opens when its room key comes."""

from __future__ import annotations

from hearthmesh.node.e2ee.room_opener import RoomOpener
from hearthmesh.node.rooms.message_actions import index_opened
from hearthmesh.protocol.actions import (
    EDIT_CONTENT_TYPE,
    REACTION_CONTENT_TYPE,
    RECALL_CONTENT_TYPE,
    Edit,
    Reaction,
    Recall,
    encode_edit,
    encode_reaction,
    encode_recall,
)
from hearthmesh.protocol.authority import DeferralPolicy
from hearthmesh.protocol.delivery import AckStatus
from hearthmesh.protocol.e2ee.megolm import ENCRYPTED_CONTENT_TYPE, encode_plaintext, opened_view
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId
from hearthmesh.protocol.errors import ErrorCode
from hearthmesh.protocol.identity import KeyPair
from hearthmesh.protocol.membership import Action
from hearthmesh.storage.api import Direction, Store
from hearthmesh.storage.store import KvStore

from .test_inbox import (
    ABSENT,
    ADMIN,
    GROUP,
    MEMBER,
    OURS,
    PEER,
    arrival,
    change,
    make_inbox,
    sealed,
    uid,
)
from .test_inbox import store as store


def _action(who: KeyPair, seq: int, kind: Kind, content_type: str, body: bytes) -> Envelope:
    return sealed(who, seq, kind=kind, body=body, wall_ms=10_000 + seq, content_type=content_type)


def _setup(store: KvStore) -> tuple[Envelope, list[MessageId]]:
    inbox = make_inbox()
    setup = [
        change(1, Action.CREATE, ADMIN),
        change(2, Action.ADD, OURS),
        change(3, Action.ADD, MEMBER),
    ]
    original = sealed(ADMIN, 4, body=b"the admin's words")
    outcome = inbox.accept(store, [arrival(e) for e in [*setup, original]], now_ms=0, peer=PEER)
    assert all(r.status is AckStatus.STORED for r in outcome.results)
    ids = [
        e.envelope.message_id for e in store.page_history(GROUP, direction=Direction.FORWARD).events
    ]
    return original, ids


def test_forged_recall_and_edit_of_anothers_message_are_refused_and_store_nothing(
    store: KvStore,
) -> None:
    original, before = _setup(store)
    target = original.message_id
    forged = [
        _action(MEMBER, 1, Kind.RECALL, RECALL_CONTENT_TYPE, encode_recall(Recall(target=target))),
        _action(
            MEMBER, 2, Kind.EDIT, EDIT_CONTENT_TYPE, encode_edit(Edit(target=target, text="mine"))
        ),
        _action(MEMBER, 3, Kind.REACTION, REACTION_CONTENT_TYPE, b"\x81\x01"),  # malformed
    ]
    outcome = make_inbox().accept(store, [arrival(e) for e in forged], now_ms=0, peer=PEER)
    assert [(r.status, r.code) for r in outcome.results] == [
        (AckStatus.REJECTED, ErrorCode.NOT_SENDER),
        (AckStatus.REJECTED, ErrorCode.NOT_SENDER),
        (AckStatus.REJECTED, ErrorCode.MALFORMED),
    ]
    after = [
        e.envelope.message_id for e in store.page_history(GROUP, direction=Direction.FORWARD).events
    ]
    assert after == before and store.actions_of(target) == []
    assert store.get_event(target) is not None and store.withdrawn_by(target) is None


def test_a_reaction_from_a_non_member_is_refused(store: KvStore) -> None:
    original, _ = _setup(store)
    reaction = encode_reaction(Reaction(target=original.message_id, emoji="👎"))
    stranger = _action(ABSENT, 1, Kind.REACTION, REACTION_CONTENT_TYPE, reaction)
    inbox = make_inbox(deferrals=DeferralPolicy(burst=2, per_s=1))
    results = []
    for _ in range(3):  # deferred while it might be a member soon (SPEC §12.5), then refused
        results += inbox.accept(store, [arrival(stranger)], now_ms=0, peer=PEER).results
    assert [(r.status, r.code) for r in results] == [
        (AckStatus.DEFERRED, ErrorCode.NOT_AUTHORIZED),
        (AckStatus.DEFERRED, ErrorCode.NOT_AUTHORIZED),
        (AckStatus.REJECTED, ErrorCode.NOT_AUTHORIZED),
    ]
    assert store.actions_of(original.message_id) == []


def test_the_senders_recall_withdraws_the_body_as_it_is_stored(store: KvStore) -> None:
    original, _ = _setup(store)
    target = original.message_id
    recall = _action(
        ADMIN, 5, Kind.RECALL, RECALL_CONTENT_TYPE, encode_recall(Recall(target=target))
    )
    outcome = make_inbox().accept(store, [arrival(recall)], now_ms=0, peer=PEER)
    assert outcome.results[0].status is AckStatus.STORED
    assert store.withdrawn_by(target) == uid(ADMIN)
    store.purge(now_ms=0, retention_ms=1)  # if the release progress was saved after the recall
    assert store.get_event(target) is None
    again = make_inbox().accept(store, [arrival(original)], now_ms=0, peer=PEER)
    assert again.results[0].status is AckStatus.DUPLICATE and store.get_event(target) is None


class _OpensTo(RoomOpener):
    """Stands in for the Megolm layer below the inbox: every encrypted envelope opens to
    `plain`, kept beside it as `RoomOpener.open` keeps it (SPEC §27.7)."""

    def __init__(self, content_type: str, plain: bytes) -> None:
        self._content_type, self._plain = content_type, plain

    def open(self, store: Store, envelope: Envelope, *, hold: bool = True) -> Envelope:
        store.put_plaintexts(
            [(envelope.message_id, encode_plaintext(self._content_type, self._plain))]
        )
        return opened_view(envelope, self._content_type, self._plain)


def test_an_encrypted_forged_edit_is_refused_on_its_plaintext_and_leaves_nothing(
    store: KvStore,
) -> None:
    original, before = _setup(store)
    edit = encode_edit(Edit(target=original.message_id, text="mine"))
    forged = _action(MEMBER, 1, Kind.EDIT, ENCRYPTED_CONTENT_TYPE, b"\x84\x00\x01")  # sealed
    inbox = make_inbox(opener=_OpensTo(EDIT_CONTENT_TYPE, edit))
    outcome = inbox.accept(store, [arrival(forged)], now_ms=0, peer=PEER)
    assert [(r.status, r.code) for r in outcome.results] == [
        (AckStatus.REJECTED, ErrorCode.NOT_SENDER)
    ]
    assert store.plaintext(forged.message_id) is None and store.get_event(forged.message_id) is None
    assert store.actions_of(original.message_id) == []
    after = [
        e.envelope.message_id for e in store.page_history(GROUP, direction=Direction.FORWARD).events
    ]
    assert after == before


def test_a_recall_that_opens_after_it_was_stored_is_indexed_and_applied(store: KvStore) -> None:
    original, _ = _setup(store)
    target = original.message_id
    body = encode_recall(Recall(target=target))
    held = _action(ADMIN, 5, Kind.RECALL, ENCRYPTED_CONTENT_TYPE, b"\x84\x00\x01")  # no key yet
    outcome = make_inbox().accept(store, [arrival(held)], now_ms=0, peer=PEER)
    assert outcome.results[0].status is AckStatus.STORED
    assert store.actions_of(target) == [] and store.withdrawn_by(target) is None  # unreadable
    index_opened(store, [opened_view(held, RECALL_CONTENT_TYPE, body)])  # its room key came
    assert [e.envelope.message_id for e in store.actions_of(target)] == [held.message_id]
    assert store.withdrawn_by(target) == uid(ADMIN)
    store.purge(now_ms=0, retention_ms=1)
    assert store.get_event(target) is None


def test_a_batch_with_a_recall_tells_no_log_entries(store: KvStore) -> None:
    """A recall may withdraw an event its own batch logged (SPEC §31.1): here our user's own
    words and their recall, from our other device (no release progress holds them), so the
    body goes at once. The log, not the batch's appends, says what a client feed shows
    (`StoreOutcome.logged` None)."""
    _setup(store)
    before = store.last_arrival()
    words = sealed(OURS, 1, body=b"said in haste", wall_ms=10_000)
    recall = _action(
        OURS, 2, Kind.RECALL, RECALL_CONTENT_TYPE, encode_recall(Recall(target=words.message_id))
    )
    outcome = make_inbox().accept(
        store, [arrival(words), arrival(recall)], now_ms=0, peer=PEER, log=True
    )
    assert [r.status for r in outcome.results] == [AckStatus.STORED] * 2
    assert outcome.logged is None
    logged = store.arrivals_after(before, limit=10).entries
    assert [e.event.envelope.message_id for e in logged] == [recall.message_id]  # withdrawn
