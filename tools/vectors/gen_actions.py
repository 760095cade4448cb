"""Generate actions.json (SPEC §31): EDIT, RECALL and REACTION bodies, the reply/forward
wrapper, the rule of who may act on a message, and folds of a message's actions in several
arrival orders."""

from __future__ import annotations

from pathlib import Path

from hearthmesh.protocol.actions import (
    EDIT_CONTENT_TYPE,
    MAX_RECALL_WINDOW_MS,
    REACTION_CONTENT_TYPE,
    RECALL_CONTENT_TYPE,
    Annotated,
    Edit,
    Reaction,
    Recall,
    encode_annotated,
    encode_edit,
    encode_reaction,
    encode_recall,
)
from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.content import TEXT_CONTENT_TYPE
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId
from hearthmesh.protocol.errors import (
    MalformedMessage,
    NotSender,
    RecallWindowClosed,
    TooLarge,
    WrongRoom,
)

from .cast import Cast
from .common import VECTORS_DIR, pin, refuse, write_vectors

__all__ = ["generate"]


def generate(directory: Path = VECTORS_DIR) -> Path:
    """Write actions.json."""
    cast = Cast()
    target = cast.seal(
        cast.alice, cast.phone, kind=Kind.MESSAGE, room=cast.group_room, seq=1,
        body=b"see you at 8", content_type=TEXT_CONTENT_TYPE,
    )  # fmt: skip
    tid = target.message_id

    def act(
        who: str, seq: int, kind: Kind, body: bytes, *, tick: int = 0, room: bytes = b""
    ) -> Envelope:
        user, device = {"alice": (cast.alice, cast.phone), "bob": (cast.bob, cast.laptop),
                        "carol": (cast.carol, cast.tablet)}[who]  # fmt: skip
        ctype = {Kind.EDIT: EDIT_CONTENT_TYPE, Kind.RECALL: RECALL_CONTENT_TYPE}.get(
            kind, REACTION_CONTENT_TYPE
        )
        return cast.seal(
            user, device, kind=kind, room=room or cast.group_room,  # type: ignore[arg-type]
            seq=seq, body=body, content_type=ctype, tick=tick,
        )  # fmt: skip

    edit = act("alice", 2, Kind.EDIT, encode_edit(Edit(target=tid, text="see you at 9")), tick=10)
    edit2 = act("alice", 3, Kind.EDIT, encode_edit(Edit(target=tid, text="at 9:30")), tick=20)
    like_b = act("bob", 1, Kind.REACTION, encode_reaction(Reaction(target=tid, emoji="👍")), tick=5)
    like_c = act(
        "carol", 1, Kind.REACTION, encode_reaction(Reaction(target=tid, emoji="👍")), tick=6
    )
    unlike_b = act(
        "bob", 2, Kind.REACTION, encode_reaction(Reaction(target=tid, emoji="👍", active=False)),
        tick=30,
    )  # fmt: skip
    recall = act("alice", 4, Kind.RECALL, encode_recall(Recall(target=tid)), tick=40)
    forged_recall = act("bob", 3, Kind.RECALL, encode_recall(Recall(target=tid)), tick=41)
    forged_edit = act("carol", 2, Kind.EDIT, encode_edit(Edit(target=tid, text="mine")), tick=42)
    late = act(
        "alice", 5, Kind.RECALL, encode_recall(Recall(target=tid)), tick=MAX_RECALL_WINDOW_MS + 1
    )
    elsewhere = act(
        "alice", 1, Kind.RECALL, encode_recall(Recall(target=tid)), room=cast.direct_room
    )
    h = target.wire.hex()
    valid = [
        pin("action_body", "an edit", kind=2, content_type=EDIT_CONTENT_TYPE,
            hex=encode_edit(Edit(target=tid, text="see you at 9")).hex()),
        pin("action_body", "a recall names only the message id", kind=3,
            content_type=RECALL_CONTENT_TYPE, hex=encode_recall(Recall(target=tid)).hex()),
        pin("action_body", "a reaction removed", kind=4, content_type=REACTION_CONTENT_TYPE,
            hex=encode_reaction(Reaction(target=tid, emoji="❤️", active=False)).hex()),
        pin("annotated_body", "a reply", hex=encode_annotated(
            Annotated(content_type=TEXT_CONTENT_TYPE, body=b"ok", reply_to=tid)).hex()),
        pin("annotated_body", "a forward", hex=encode_annotated(
            Annotated(content_type=TEXT_CONTENT_TYPE, body=b"fwd", forwarded=True)).hex()),
        pin("action_check", "the sender recalls", target_hex=h, action_hex=recall.wire.hex()),
        pin("action_check", "anyone in the room reacts", target_hex=h,
            action_hex=like_c.wire.hex()),
        pin("action_fold", "edits (latest shown) and reactions (one per user per emoji, latest "
            "wins), forged edits and recalls ignored", target_hex=h, actions_hex=[
                e.wire.hex() for e in (edit2, like_b, forged_recall, edit, unlike_b, like_c,
                                       forged_edit)]),
        pin("action_fold", "the same events in another order", target_hex=h, actions_hex=[
            e.wire.hex() for e in (forged_edit, like_c, unlike_b, edit, forged_recall, like_b,
                                   edit2)]),
        pin("action_fold", "a recall hides everything", target_hex=h, actions_hex=[
            e.wire.hex() for e in (edit, recall, like_b, edit2)]),
    ]  # fmt: skip
    invalid = [
        refuse("action_check", NotSender, "a recall by another member", target_hex=h,
               action_hex=forged_recall.wire.hex()),
        refuse("action_check", NotSender, "an edit by another member", target_hex=h,
               action_hex=forged_edit.wire.hex()),
        refuse("action_check", RecallWindowClosed, "a recall past MAX_RECALL_WINDOW_MS",
               target_hex=h, action_hex=late.wire.hex()),
        refuse("action_check", WrongRoom, "a recall sent in another room", target_hex=h,
               action_hex=elsewhere.wire.hex()),
        refuse("action_body", MalformedMessage, "a reaction's active is 0 or 1", kind=4,
               content_type=REACTION_CONTENT_TYPE,
               hex=encode_canonical([tid, "👍", 2]).hex()),
        refuse("action_body", MalformedMessage, "an empty edit", kind=2,
               content_type=EDIT_CONTENT_TYPE, hex=encode_canonical([tid, ""]).hex()),
        refuse("action_body", MalformedMessage, "a recall of a 31-byte id", kind=3,
               content_type=RECALL_CONTENT_TYPE, hex=encode_canonical([tid[:31]]).hex()),
        refuse("action_body", MalformedMessage, "a recall body under an edit's content type",
               kind=3, content_type=EDIT_CONTENT_TYPE,
               hex=encode_recall(Recall(target=tid)).hex()),
        refuse("action_body", TooLarge, "an edit past its byte bound", kind=2,
               content_type=EDIT_CONTENT_TYPE, hex=encode_canonical([tid, "x" * 40_000]).hex()),
        refuse("annotated_body", MalformedMessage, "an annotated body wraps no other",
               hex=encode_canonical(["application/x-hearthmesh-annotated", b"", b"", 0]).hex()),
    ]  # fmt: skip
    assert MessageId(tid) == target.message_id
    return write_vectors(
        "actions",
        spec="SPEC.md §31.1-31.5",
        function="tools/vectors/codecs.py ops action_body, annotated_body, action_check, "
        "action_fold",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )
