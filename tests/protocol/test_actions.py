"""Message actions (SPEC §31): bodies, the recall rule, and the fold every device agrees on."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hearthmesh.protocol.actions import (
    ANNOTATED_CONTENT_TYPE,
    EDIT_CONTENT_TYPE,
    MAX_RECALL_WINDOW_MS,
    REACTION_CONTENT_TYPE,
    RECALL_CONTENT_TYPE,
    ActionEvent,
    Annotated,
    Edit,
    Reaction,
    Recall,
    Status,
    Target,
    action_event,
    check_action,
    decode_action,
    decode_annotated,
    encode_annotated,
    encode_edit,
    encode_reaction,
    encode_recall,
    fold_actions,
    target_of,
)
from hearthmesh.protocol.content import TEXT_CONTENT_TYPE
from hearthmesh.protocol.e2ee.megolm import ENCRYPTED_CONTENT_TYPE
from hearthmesh.protocol.e2ee.policy import encrypts
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId, RoomId, seal
from hearthmesh.protocol.errors import (
    MalformedMessage,
    NotSender,
    RecallWindowClosed,
    RemoteProtocolError,
    WrongRoom,
)
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import UserId, keypair_from_seed
from tests.conftest import examples

ALICE = keypair_from_seed(b"\x01" * 32)
BOB = keypair_from_seed(b"\x02" * 32)
ROOM = RoomId(b"\x07" * 32)
T0 = 1_700_000_000_000
USERS = [UserId(bytes([n]) * 32) for n in (1, 2, 3)]
TARGET = Target(
    message_id=MessageId(b"\x09" * 32), room=ROOM, sender_user=USERS[0], hlc=Timestamp(T0, 0)
)


def _env(key: object, kind: Kind, content_type: str, body: bytes, *, wall_ms: int = T0) -> Envelope:
    assert hasattr(key, "public")
    return seal(
        key,  # type: ignore[arg-type]
        kind=kind,
        room=ROOM,
        sender_user=UserId(key.public),
        seq=1,
        hlc=Timestamp(wall_ms, 0),
        content_type=content_type,
        body=body,
    )


def test_bodies_round_trip_and_bad_ones_are_refused() -> None:
    target = MessageId(b"\x05" * 32)
    for kind, ctype, action, body in (
        (Kind.EDIT, EDIT_CONTENT_TYPE, Edit(target=target, text="fixed"), None),
        (Kind.RECALL, RECALL_CONTENT_TYPE, Recall(target=target), None),
        (Kind.REACTION, REACTION_CONTENT_TYPE, Reaction(target=target, emoji="👍"), None),
    ):
        encoded = body or {
            Kind.EDIT: encode_edit,
            Kind.RECALL: encode_recall,
            Kind.REACTION: encode_reaction,
        }[kind](action)  # type: ignore[operator]
        assert decode_action(kind, ctype, encoded) == action
    for bad in (
        lambda: encode_edit(Edit(target=target, text="")),
        lambda: encode_reaction(Reaction(target=target, emoji="")),
        lambda: encode_reaction(Reaction(target=target, emoji="x" * 65)),
        lambda: encode_recall(Recall(target=MessageId(b"\x01" * 31))),
        lambda: decode_action(Kind.EDIT, RECALL_CONTENT_TYPE, encode_recall(Recall(target=target))),
        lambda: decode_action(Kind.REACTION, REACTION_CONTENT_TYPE, b"\x83\x40\x61a\x02"),
    ):
        with pytest.raises(MalformedMessage):
            bad()


def test_annotated_wraps_a_reply_or_a_forward() -> None:
    reply = Annotated(content_type=TEXT_CONTENT_TYPE, body=b"yes", reply_to=MessageId(b"\x03" * 32))
    assert decode_annotated(encode_annotated(reply)) == reply
    forward = Annotated(content_type=TEXT_CONTENT_TYPE, body=b"fwd", forwarded=True)
    assert decode_annotated(encode_annotated(forward)) == forward
    with pytest.raises(MalformedMessage):
        encode_annotated(Annotated(content_type=ANNOTATED_CONTENT_TYPE, body=b""))


@given(st.binary(max_size=300), st.sampled_from([Kind.EDIT, Kind.RECALL, Kind.REACTION]))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes, kind: Kind) -> None:
    ctype = {Kind.EDIT: EDIT_CONTENT_TYPE, Kind.RECALL: RECALL_CONTENT_TYPE}.get(
        kind, REACTION_CONTENT_TYPE
    )
    with contextlib.suppress(RemoteProtocolError):
        decode_action(kind, ctype, data)
    with contextlib.suppress(RemoteProtocolError):
        decode_annotated(data)


def test_a_recall_is_encrypted_and_names_its_target_only_once_opened() -> None:
    original = _env(ALICE, Kind.MESSAGE, TEXT_CONTENT_TYPE, b"oops")
    recall = _env(
        ALICE, Kind.RECALL, RECALL_CONTENT_TYPE, encode_recall(Recall(target=original.message_id))
    )
    assert all(encrypts(kind) for kind in (Kind.RECALL, Kind.EDIT, Kind.REACTION))
    assert target_of(recall) == original.message_id  # the opened view a member's home holds
    sealed = _env(ALICE, Kind.RECALL, ENCRYPTED_CONTENT_TYPE, b"\x84\x00\x01")
    assert target_of(sealed) is None  # a relay reads no target: only the RECALL kind
    assert target_of(original) is None


def test_only_the_sender_edits_or_recalls_within_the_window() -> None:
    original = _env(ALICE, Kind.MESSAGE, TEXT_CONTENT_TYPE, b"oops")
    target = Target.of(original)
    recall_body = encode_recall(Recall(target=original.message_id))
    own = action_event(
        _env(ALICE, Kind.RECALL, RECALL_CONTENT_TYPE, recall_body), RECALL_CONTENT_TYPE, recall_body
    )
    check_action(own, target)
    forged = action_event(
        _env(BOB, Kind.RECALL, RECALL_CONTENT_TYPE, recall_body), RECALL_CONTENT_TYPE, recall_body
    )
    with pytest.raises(NotSender):
        check_action(forged, target)
    late = _env(
        ALICE, Kind.RECALL, RECALL_CONTENT_TYPE, recall_body, wall_ms=T0 + MAX_RECALL_WINDOW_MS + 1
    )
    with pytest.raises(RecallWindowClosed):
        check_action(action_event(late, RECALL_CONTENT_TYPE, recall_body), target)
    reaction_body = encode_reaction(Reaction(target=original.message_id, emoji="🎉"))
    bobs = _env(BOB, Kind.REACTION, REACTION_CONTENT_TYPE, reaction_body)
    check_action(action_event(bobs, REACTION_CONTENT_TYPE, reaction_body), target)  # anyone reacts
    elsewhere = Target(
        message_id=target.message_id,
        room=RoomId(b"\x08" * 32),
        sender_user=target.sender_user,
        hlc=target.hlc,
    )
    with pytest.raises(WrongRoom):
        check_action(own, elsewhere)


def _event(n: int, user: int, wall: int, action: Edit | Recall | Reaction) -> ActionEvent:
    return ActionEvent(
        message_id=MessageId(n.to_bytes(32, "big")),
        room=ROOM,
        sender_user=USERS[user],
        hlc=Timestamp(T0 + wall, 0),
        action=action,
    )


_ACTIONS = st.one_of(
    st.builds(lambda t: Edit(target=TARGET.message_id, text=t), st.sampled_from(["a", "b", "c"])),
    st.just(Recall(target=TARGET.message_id)),
    st.builds(
        lambda e, a: Reaction(target=TARGET.message_id, emoji=e, active=a),
        st.sampled_from(["👍", "❤️", "😂"]),
        st.booleans(),
    ),
)
_EVENTS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 50), _ACTIONS), max_size=14).map(
    lambda items: [_event(i + 1, u, w, a) for i, (u, w, a) in enumerate(items)]
)


@settings(max_examples=examples(300))
@given(_EVENTS, st.randoms(use_true_random=False), st.integers(0, 14))
def test_any_interleaving_converges_to_the_same_view_on_every_device(
    events: list[ActionEvent], rnd: object, split: int
) -> None:
    """SPEC §31.5: three devices take the same edits, reactions and recalls in different
    orders (one gets a part first, then the rest, twice over): every view is the same."""
    assert hasattr(rnd, "shuffle")
    views = []
    for _ in range(3):
        order = list(events)
        rnd.shuffle(order)
        early = fold_actions(TARGET, order[:split])  # a device away for the rest
        assert early.status is not Status.RECALLED or any(
            isinstance(e.action, Recall) for e in order[:split]
        )
        views.append(fold_actions(TARGET, order + order[:split]))  # duplicates change nothing
    assert views[0] == views[1] == views[2]
    view = views[0]
    valid_recall = any(isinstance(e.action, Recall) and e.sender_user == USERS[0] for e in events)
    assert view.is_deleted == valid_recall
    if valid_recall:
        assert view.text is None and not view.reactions and not view.edits
        return
    own_edits = [e for e in events if isinstance(e.action, Edit) and e.sender_user == USERS[0]]
    assert len(view.edits) == len(own_edits)  # every edit is kept; others' are ignored
    if own_edits:
        latest = max(own_edits, key=lambda e: (e.hlc, e.message_id))
        assert isinstance(latest.action, Edit) and view.text == latest.action.text
    for emoji, users in view.reactions.items():
        assert len(set(users)) == len(users)  # one per user per emoji
        for user in users:
            mine = [
                e
                for e in events
                if isinstance(e.action, Reaction)
                and e.sender_user == user
                and e.action.emoji == emoji
            ]
            latest_reaction = max(mine, key=lambda e: (e.hlc, e.message_id))
            assert isinstance(latest_reaction.action, Reaction) and latest_reaction.action.active
