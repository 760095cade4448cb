"""Message actions (SPEC §31), sans-I/O: the bodies of EDIT, RECALL and REACTION, the wrapper of
replies and forwards, the recall rule, and the fold that turns a message and its actions into
the one view every device shows.

- EDIT (kind 2), EDIT_CONTENT_TYPE, CBOR [target id, text]: replaces the text of the sender's
  own earlier message (SPEC §31.2); every edit is kept, the latest (by HLC, then id) is shown.
- RECALL (kind 3), RECALL_CONTENT_TYPE, CBOR [target id]: the sender's tombstone (SPEC §31.1).
  Encrypted like every action (`ENCRYPTED_KINDS`): a relay sees a RECALL go by, never which
  message it recalls; the member homes that hold the target open it and purge.
- REACTION (kind 4), REACTION_CONTENT_TYPE, CBOR [target id, emoji, active]: one per user per
  emoji, the latest (by HLC, then id) wins, `active` 0 removes it (SPEC §31.3).
- A reply or a forward is a MESSAGE whose content is wrapped (ANNOTATED_CONTENT_TYPE, CBOR
  [content type, body, reply-to id or empty, forwarded 0/1]) around text or a media
  reference (SPEC §31.4).

The fold (`fold_actions`) is a pure function of a message's header and the set of actions
naming it: the order they arrive in does not change the result, so every device that holds the
same events shows the same view (SPEC §31.5). Owns no state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from .canonical import decode_canonical, encode_canonical
from .envelope import MAX_BODY_BYTES, Envelope, Kind, MessageId, RoomId
from .errors import (
    MalformedMessage,
    NotSender,
    RecallWindowClosed,
    RemoteProtocolError,
    WrongRoom,
)
from .hlc import Timestamp
from .identity import UserId

__all__ = [
    "ACTION_KINDS",
    "ANNOTATED_CONTENT_TYPE",
    "EDIT_CONTENT_TYPE",
    "MAX_EDIT_BYTES",
    "MAX_EMOJI_BYTES",
    "MAX_RECALL_WINDOW_MS",
    "REACTION_CONTENT_TYPE",
    "RECALL_CONTENT_TYPE",
    "Action",
    "ActionEvent",
    "Annotated",
    "Edit",
    "EditRecord",
    "MessageState",
    "Reaction",
    "Recall",
    "Status",
    "Target",
    "action_event",
    "check_action",
    "decode_action",
    "decode_annotated",
    "encode_annotated",
    "encode_edit",
    "encode_reaction",
    "encode_recall",
    "fold_actions",
    "target_of",
]

EDIT_CONTENT_TYPE: Final = "application/x-hearthmesh-edit"
RECALL_CONTENT_TYPE: Final = "application/x-hearthmesh-recall"
REACTION_CONTENT_TYPE: Final = "application/x-hearthmesh-reaction"
ANNOTATED_CONTENT_TYPE: Final = "application/x-hearthmesh-annotated"

MAX_RECALL_WINDOW_MS: Final = 48 * 3600 * 1000
"""How long after a message (by the two HLC wall times) its sender may recall it (SPEC §31.1).
One protocol constant, so every device folds a late recall alike; a home may refuse its own
user's recalls sooner (`recall_window_ms`)."""
MAX_EMOJI_BYTES: Final = 64
MAX_EDIT_BYTES: Final = 32 * 1024
_MAX_ACTION_BODY: Final = MAX_EDIT_BYTES + 64

ACTION_KINDS: Final = frozenset({Kind.EDIT, Kind.RECALL, Kind.REACTION})
"""Kinds that act on an earlier message of their room."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Edit:
    """The new text of the target (SPEC §31.2)."""

    target: MessageId
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Recall:
    """The sender withdraws the target (SPEC §31.1)."""

    target: MessageId


@dataclass(frozen=True, slots=True, kw_only=True)
class Reaction:
    """`user` sets (`active`) or removes one emoji on the target (SPEC §31.3)."""

    target: MessageId
    emoji: str
    active: bool = True


Action = Edit | Recall | Reaction

_CONTENT_TYPES: Final[dict[Kind, str]] = {
    Kind.EDIT: EDIT_CONTENT_TYPE,
    Kind.RECALL: RECALL_CONTENT_TYPE,
    Kind.REACTION: REACTION_CONTENT_TYPE,
}


def encode_edit(edit: Edit) -> bytes:
    """CBOR [target, text]. Raises MalformedMessage."""
    _check_edit(edit)
    return encode_canonical([edit.target, edit.text])


def encode_recall(recall: Recall) -> bytes:
    """CBOR [target]."""
    _check_id(recall.target)
    return encode_canonical([recall.target])


def encode_reaction(reaction: Reaction) -> bytes:
    """CBOR [target, emoji, active]. Raises MalformedMessage."""
    _check_reaction(reaction)
    return encode_canonical([reaction.target, reaction.emoji, int(reaction.active)])


def decode_action(kind: Kind, content_type: str, body: bytes) -> Action:
    """Parse the body of an EDIT, RECALL or REACTION. Raises MalformedMessage or TooLarge."""
    if _CONTENT_TYPES.get(kind) != content_type:
        raise MalformedMessage(f"{kind.name} content type must be {_CONTENT_TYPES.get(kind)}")
    match kind, decode_canonical(body, max_bytes=_MAX_ACTION_BODY):
        case Kind.EDIT, [bytes() as target, str() as text]:
            edit = Edit(target=MessageId(target), text=text)
            _check_edit(edit)
            return edit
        case Kind.RECALL, [bytes() as target]:
            _check_id(target)
            return Recall(target=MessageId(target))
        case Kind.REACTION, [bytes() as target, str() as emoji, int() as active] if active in (
            0,
            1,
        ):
            reaction = Reaction(target=MessageId(target), emoji=emoji, active=bool(active))
            _check_reaction(reaction)
            return reaction
    raise MalformedMessage(f"not a {kind.name} body")


def target_of(envelope: Envelope) -> MessageId | None:
    """The message a RECALL names, from its readable body (the opened view a member's home
    holds); None for any other envelope, a bad body, or ciphertext: RECALL is encrypted like
    every action, so a relay or a non-member reads no target (SPEC §27.3.1, §31.1)."""
    if envelope.kind is not Kind.RECALL:
        return None
    try:
        action = decode_action(envelope.kind, envelope.content_type, envelope.body)
    except RemoteProtocolError:
        return None
    return action.target


def _check_id(target: bytes) -> None:
    if len(target) != 32:
        raise MalformedMessage("a target message id is 32 bytes")


def _check_edit(edit: Edit) -> None:
    _check_id(edit.target)
    if not edit.text or len(edit.text.encode()) > MAX_EDIT_BYTES:
        raise MalformedMessage(f"an edit's text is 1..{MAX_EDIT_BYTES} bytes")


def _check_reaction(reaction: Reaction) -> None:
    _check_id(reaction.target)
    size = len(reaction.emoji.encode())
    if not 0 < size <= MAX_EMOJI_BYTES or not reaction.emoji.isprintable():
        raise MalformedMessage(f"a reaction is 1..{MAX_EMOJI_BYTES} bytes of printable text")


# --- replies and forwards ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Annotated:
    """A message's content with what it answers or where it came from (SPEC §31.4)."""

    content_type: str
    """The wrapped content's type: text/plain or a media reference."""
    body: bytes
    reply_to: MessageId | None = None
    forwarded: bool = False


def encode_annotated(annotated: Annotated) -> bytes:
    """CBOR [content type, body, reply-to or empty, forwarded]. Raises MalformedMessage."""
    if annotated.content_type == ANNOTATED_CONTENT_TYPE:
        raise MalformedMessage("an annotated message does not wrap another")
    reply_to = b"" if annotated.reply_to is None else annotated.reply_to
    if reply_to:
        _check_id(reply_to)
    return encode_canonical(
        [annotated.content_type, annotated.body, reply_to, int(annotated.forwarded)]
    )


def decode_annotated(body: bytes) -> Annotated:
    """Parse an annotated body. Raises MalformedMessage or TooLarge."""
    match decode_canonical(body, max_bytes=MAX_BODY_BYTES):
        case [str() as content_type, bytes() as inner, bytes() as reply_to, int() as forwarded] if (
            forwarded in (0, 1) and len(reply_to) in (0, 32)
        ) and content_type != ANNOTATED_CONTENT_TYPE:
            return Annotated(
                content_type=content_type,
                body=inner,
                reply_to=MessageId(reply_to) if reply_to else None,
                forwarded=bool(forwarded),
            )
    raise MalformedMessage("annotated body is [content type, body, reply-to, forwarded]")


# --- the recall rule and the fold ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The header of the message an action names: all the rules and the fold need."""

    message_id: MessageId
    room: RoomId
    sender_user: UserId
    hlc: Timestamp

    @classmethod
    def of(cls, envelope: Envelope) -> Target:
        return cls(
            message_id=envelope.message_id,
            room=envelope.room,
            sender_user=envelope.sender_user,
            hlc=envelope.hlc,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionEvent:
    """One stored action: its header and its decoded body."""

    message_id: MessageId
    room: RoomId
    sender_user: UserId
    hlc: Timestamp
    action: Action


def action_event(envelope: Envelope, content_type: str, body: bytes) -> ActionEvent:
    """The action an EDIT, RECALL or REACTION envelope carries, given its content in the clear.

    Raises MalformedMessage (or TooLarge) for a bad body or another kind."""
    if envelope.kind not in ACTION_KINDS:
        raise MalformedMessage(f"{envelope.kind.name} is not a message action")
    return ActionEvent(
        message_id=envelope.message_id,
        room=envelope.room,
        sender_user=envelope.sender_user,
        hlc=envelope.hlc,
        action=decode_action(envelope.kind, content_type, body),
    )


def check_action(event: ActionEvent, target: Target) -> None:
    """May `event` act on `target` (SPEC §31.1-31.3)? The one rule, used where an action is
    refused (the sender's API, every home that holds the target) and by the fold.

    Raises:
        WrongRoom: the target is a message of another room.
        NotSender: an edit or recall by someone other than the target's sender.
        RecallWindowClosed: a recall more than MAX_RECALL_WINDOW_MS after its target.
    """
    if event.room != target.room:
        raise WrongRoom("the target message is in another room")
    if isinstance(event.action, Edit | Recall) and event.sender_user != target.sender_user:
        raise NotSender("only its sender may edit or recall a message")
    if isinstance(event.action, Recall) and (
        event.hlc.wall_ms - target.hlc.wall_ms > MAX_RECALL_WINDOW_MS
    ):
        raise RecallWindowClosed("the recall window of this message has closed")


@dataclass(frozen=True, slots=True, kw_only=True)
class EditRecord:
    """One kept edit."""

    message_id: MessageId
    hlc: Timestamp
    text: str


class Status(Enum):
    """What the fold made of a message."""

    NORMAL = "normal"
    EDITED = "edited"
    RECALLED = "recalled"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageState:
    """What every device shows of one message (SPEC §31.5)."""

    status: Status = Status.NORMAL
    recalled_by: MessageId | None = None
    edits: tuple[EditRecord, ...] = ()
    """Oldest first; the last is the text shown."""
    reactions: dict[str, tuple[UserId, ...]] = field(default_factory=dict)
    """Emoji -> the users whose latest reaction with it is active, in byte order."""

    @property
    def is_deleted(self) -> bool:
        return self.status is Status.RECALLED

    @property
    def text(self) -> str | None:
        """The latest edit's text; None if never edited (show the original)."""
        return self.edits[-1].text if self.edits else None


def fold_actions(target: Target, events: Iterable[ActionEvent]) -> MessageState:
    """The state of `target` given every action held that names it, in any order.

    An action `check_action` refuses changes nothing. A recall hides the message whole (its
    edits and reactions too). Ties of equal HLC are broken by message id, so the result is a
    function of the set of events alone.
    """
    recalls: list[MessageId] = []
    edits: list[EditRecord] = []
    latest: dict[tuple[UserId, str], tuple[Timestamp, MessageId, bool]] = {}
    for event in events:
        if event.action.target != target.message_id:
            continue
        try:
            check_action(event, target)
        except RemoteProtocolError:
            continue
        match event.action:
            case Recall():
                recalls.append(event.message_id)
            case Edit(text=text):
                edits.append(EditRecord(message_id=event.message_id, hlc=event.hlc, text=text))
            case Reaction(emoji=emoji, active=active):
                key = (event.sender_user, emoji)
                mark = (event.hlc, event.message_id, active)
                if key not in latest or mark[:2] > latest[key][:2]:
                    latest[key] = mark
    if recalls:
        return MessageState(status=Status.RECALLED, recalled_by=min(recalls))
    unique = {edit.message_id: edit for edit in edits}
    ordered = tuple(sorted(unique.values(), key=lambda e: (e.hlc, e.message_id)))
    reactions: dict[str, list[UserId]] = {}
    for (user, emoji), (_, _, active) in latest.items():
        if active:
            reactions.setdefault(emoji, []).append(user)
    return MessageState(
        status=Status.EDITED if ordered else Status.NORMAL,
        edits=ordered,
        reactions={emoji: tuple(sorted(users)) for emoji, users in sorted(reactions.items())},
    )
