"""Generate membership.json (SPEC §12.1-12.3) and receipts.json (§16.2): group events, the
authority rules over them, and receipt bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthmesh.protocol.canonical import CborValue, encode_canonical
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId
from hearthmesh.protocol.errors import MalformedMessage, TooLarge
from hearthmesh.protocol.identity import KeyPair, UserId
from hearthmesh.protocol.membership import (
    MAX_ADD_TARGETS,
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    encode_membership,
)
from hearthmesh.protocol.receipts import Receipt, ReceiptStatus, encode_receipt

from .cast import Cast
from .common import VECTORS_DIR, pin, refuse, write_vectors

__all__ = ["event", "generate"]


def _users(count: int) -> tuple[UserId, ...]:
    """`count` user ids of fixed bytes, none of the cast's."""
    return tuple(UserId(bytes([n + 1]) * 32) for n in range(count))


def event(c: Cast, user: KeyPair, device: KeyPair, seq: int, change: MembershipChange) -> Envelope:
    return c.seal(
        user,
        device,
        kind=Kind.MEMBERSHIP,
        room=c.group_room,
        seq=seq,
        body=encode_membership(change),
        content_type=MEMBERSHIP_CONTENT_TYPE,
        tick=seq * 1000 + (0 if user is c.alice else 500),
    )


def _membership(c: Cast, directory: Path) -> Path:
    alice, bob, carol = c.user(c.alice), c.user(c.bob), c.user(c.carol)
    create = MembershipChange(
        action=Action.CREATE, target=alice, nonce=c.group_nonce, open=False, name="hearth"
    )
    history = [
        event(c, c.alice, c.phone, 1, create),
        event(c, c.alice, c.phone, 2, MembershipChange(action=Action.ADD, target=bob)),
        event(c, c.alice, c.phone, 3, MembershipChange(action=Action.ADD, target=carol)),
        event(c, c.bob, c.laptop, 3, MembershipChange(action=Action.KICK, target=carol)),
        event(
            c,
            c.alice,
            c.phone,
            4,
            MembershipChange(action=Action.ROLE, target=bob, role=Role.ADMIN),
        ),
        event(c, c.carol, c.tablet, 5, MembershipChange(action=Action.LEAVE, target=carol)),
    ]
    wires = [e.wire.hex() for e in history]
    room = c.group_room.hex()
    # SPEC §12.1.1: one ADD naming several users
    both = MembershipChange(action=Action.ADD, target=bob, more=(carol,))
    many = MembershipChange(action=Action.ADD, target=bob, more=_users(MAX_ADD_TARGETS - 1))
    added = [
        history[0],
        event(c, c.alice, c.phone, 2, both),
        event(c, c.carol, c.tablet, 3, MembershipChange(action=Action.LEAVE, target=carol)),
        event(c, c.alice, c.phone, 4, both),
    ]
    added_wires = [e.wire.hex() for e in added]
    valid: list[dict[str, Any]] = [
        pin("membership_body", "CREATE of a closed group", hex=encode_membership(create).hex()),
        pin(
            "membership_body",
            "ROLE: make bob an admin",
            hex=encode_membership(
                MembershipChange(action=Action.ROLE, target=bob, role=Role.ADMIN)
            ).hex(),
        ),
        pin(
            "membership_fold",
            "in history order: bob's KICK before he is admin is ignored, carol leaves herself",
            room_hex=room,
            events_hex=wires,
        ),
        pin(
            "membership_fold",
            "the same events in reverse arrival order: the same state (§12.3)",
            room_hex=room,
            events_hex=wires[::-1],
        ),
        pin(
            "membership_fold",
            "shuffled arrival order: the same state (§12.3)",
            room_hex=room,
            events_hex=[wires[i] for i in (3, 5, 0, 4, 1, 2)],
        ),
        pin(
            "membership_fold",
            "no CREATE held: nothing applies yet",
            room_hex=room,
            events_hex=wires[1:3],
        ),
    ]
    for events, sender, change, note in (
        (
            2,
            bob,
            MembershipChange(action=Action.ADD, target=carol),
            "a member (not admin) ADDs: NOT_YET",
        ),
        (1, alice, MembershipChange(action=Action.ADD, target=bob), "an admin's ADD: ALLOWED"),
        (2, bob, MembershipChange(action=Action.LEAVE, target=alice), "LEAVE for another: NEVER"),
        (
            2,
            carol,
            MembershipChange(action=Action.JOIN, target=carol),
            "JOIN a closed group: NEVER",
        ),
        (0, bob, MembershipChange(action=Action.LEAVE, target=bob), "before the CREATE: NOT_YET"),
        (1, alice, create, "a second CREATE: NEVER"),
        (1, alice, both, "an admin's ADD of two non-members: ALLOWED (§12.1.1)"),
        (2, bob, both, "a member's ADD of several: NOT_YET"),
        (
            2,
            alice,
            MembershipChange(action=Action.ADD, target=carol, more=(bob,)),
            "an ADD of several naming one member already: NOT_YET, whole",
        ),
    ):
        valid.append(
            pin(
                "membership_ruling",
                note,
                room_hex=room,
                events_hex=wires[:events],
                sender_hex=sender.hex(),
                hex=encode_membership(change).hex(),
            )
        )
    valid += [  # §12.1.1, after the older cases so that their ids stand
        pin(
            "membership_body",
            "ADD naming bob and carol (§12.1.1)",
            hex=encode_membership(both).hex(),
        ),
        pin(
            "membership_body",
            "ADD naming 64 users: the most one event names (§12.1.1)",
            hex=encode_membership(many).hex(),
        ),
        pin(
            "membership_fold",
            "one ADD lets bob and carol in; carol leaves; the same ADD again names bob, a member: "
            "ignored whole, so carol stays out (§12.1.1)",
            room_hex=room,
            events_hex=added_wires,
        ),
        pin(
            "membership_fold",
            "the same events shuffled: the same state (§12.3)",
            room_hex=room,
            events_hex=[added_wires[i] for i in (3, 1, 2, 0)],
        ),
    ]
    body: list[CborValue] = [2, bob, 0, b"", 0, ""]
    invalid = [
        refuse(
            "membership_body",
            MalformedMessage,
            "action 12 (1-11 are §12.1 and §30.1)",
            hex=encode_canonical([12, *body[1:]]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "role 3 (0-2 are §30.2)",
            hex=encode_canonical([*body[:2], 3, *body[3:]]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "a target of 31 bytes",
            hex=encode_canonical([2, bob[:31], *body[2:]]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "open is 0 or 1",
            hex=encode_canonical([*body[:4], 2, ""]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "a name over 128 bytes",
            hex=encode_canonical([*body[:5], "n" * 129]).hex(),
        ),
        refuse(
            "membership_body",
            TooLarge,
            "a body over 512 bytes",
            hex=encode_canonical([*body[:3], bytes(500), 0, ""]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "an ADD naming 65 users (64 at most, §12.1.1)",
            hex=encode_canonical([*body, list(_users(MAX_ADD_TARGETS))]).hex(),
        ),
        refuse(
            "membership_body",
            TooLarge,
            "an ADD of 80 users: past the 2,688 bytes of §12.1.1",
            hex=encode_canonical([*body, list(_users(79))]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "an ADD naming bob twice",
            hex=encode_canonical([*body, [bob]]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "an empty list of more users",
            hex=encode_canonical([*body, []]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "a KICK naming more users: only an ADD does",
            hex=encode_canonical([5, *body[1:], [carol]]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "an ADD by invite naming more users: an invite admits one",
            hex=encode_canonical([*body[:3], bytes(16), 0, "", [carol]]).hex(),
        ),
    ]
    return write_vectors(
        "membership",
        spec="SPEC.md §12.1, §12.1.1, §12.2, §12.3",
        function="tools/vectors/codecs.py ops membership_body, membership_fold, membership_ruling",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )


def _receipts(directory: Path) -> Path:
    ids = [MessageId(bytes([n]) * 32) for n in range(1, 4)]
    valid = [
        pin(
            "receipt_body",
            "DELIVERED for one message",
            hex=encode_receipt(
                Receipt(status=ReceiptStatus.DELIVERED, message_ids=(ids[0],))
            ).hex(),
        ),
        pin(
            "receipt_body",
            "READ for three messages",
            hex=encode_receipt(Receipt(status=ReceiptStatus.READ, message_ids=tuple(ids))).hex(),
        ),
    ]
    invalid = [
        refuse(
            "receipt_body",
            MalformedMessage,
            "SENT is never carried",
            hex=encode_canonical([1, [ids[0]]]).hex(),
        ),
        refuse("receipt_body", MalformedMessage, "no ids", hex=encode_canonical([2, []]).hex()),
        refuse(
            "receipt_body",
            MalformedMessage,
            "an id twice",
            hex=encode_canonical([2, [ids[0], ids[0]]]).hex(),
        ),
        refuse(
            "receipt_body",
            MalformedMessage,
            "an id of 31 bytes",
            hex=encode_canonical([2, [ids[0][:31]]]).hex(),
        ),
        refuse(
            "receipt_body", MalformedMessage, "status 4", hex=encode_canonical([4, [ids[0]]]).hex()
        ),
        refuse(
            "receipt_body",
            TooLarge,
            "257 ids: past the byte bound of 256",
            hex=encode_canonical([3, [bytes(32)] * 257]).hex(),
        ),
    ]
    return write_vectors(
        "receipts",
        spec="SPEC.md §16.2",
        function="tools/vectors/codecs.py op receipt_body: decode_receipt",
        valid=valid,
        invalid=invalid,
        directory=directory,
    )


def generate(directory: Path = VECTORS_DIR) -> list[Path]:
    """Write the two files."""
    return [_membership(Cast(), directory), _receipts(directory)]
