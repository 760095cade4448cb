"""Generate groups.json (SPEC §30): roles, the group's settings, invites and history setting in
the fold, the rulings of §30.2, invite links, join requests and answers, and the invite check of
§30.3 over a folded group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearthmesh.protocol.canonical import encode_canonical
from hearthmesh.protocol.envelope import Kind, MessageId
from hearthmesh.protocol.errors import (
    InvalidIdentifier,
    InviteExpired,
    InviteInvalid,
    MalformedMessage,
)
from hearthmesh.protocol.history_share import HistoryRequest, encode_history_request
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.invite_record import MAX_INVITE_TTL_MS, encode_invite_nonce
from hearthmesh.protocol.invites import (
    INVITE_LINK_PREFIX,
    Invite,
    JoinRequest,
    encode_invite,
    encode_join_answer,
    encode_join_request,
    invite_id,
)
from hearthmesh.protocol.membership import (
    MEMBERSHIP_CONTENT_TYPE,
    Action,
    MembershipChange,
    Role,
    encode_membership,
)

from .cast import NOW_MS, Cast
from .common import VECTORS_DIR, fixed_seed, pin, refuse, write_vectors
from .gen_membership import event

__all__ = ["generate"]

_SECRET = fixed_seed("invite-secret")[:16]
_INVITE_EXPIRES_MS = NOW_MS + 86_400_000


def _invite_nonce(expires_ms: int = _INVITE_EXPIRES_MS) -> bytes:
    return encode_invite_nonce(invite_id(_SECRET), expires_ms, 2)


def _roles(c: Cast) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    alice, bob, carol = c.user(c.alice), c.user(c.bob), c.user(c.carol)
    dave = UserId(fixed_seed("dave"))
    avatar = fixed_seed("group-avatar")
    changes = [
        (
            c.alice,
            c.phone,
            MembershipChange(
                action=Action.CREATE, target=alice, nonce=c.group_nonce, name="hearth"
            ),
        ),
        (c.alice, c.phone, MembershipChange(action=Action.ADD, target=bob)),
        (c.alice, c.phone, MembershipChange(action=Action.ADD, target=carol)),
        (c.alice, c.phone, MembershipChange(action=Action.ROLE, target=bob, role=Role.ADMIN)),
        (c.bob, c.laptop, MembershipChange(action=Action.BAN, target=carol)),
        (c.bob, c.laptop, MembershipChange(action=Action.RENAME, target=bob, name="hearth & home")),
        (
            c.alice,
            c.phone,
            MembershipChange(action=Action.TOPIC, target=alice, name="where we meet"),
        ),
        (c.alice, c.phone, MembershipChange(action=Action.AVATAR, target=alice, nonce=avatar)),
        # §30.3: bob's invite, honoured by alice's home (any admin's); §30.6: history shared
        (
            c.bob,
            c.laptop,
            MembershipChange(action=Action.INVITE, target=bob, nonce=_invite_nonce()),
        ),
        (
            c.alice,
            c.phone,
            MembershipChange(action=Action.ADD, target=dave, nonce=invite_id(_SECRET)),
        ),
        (
            c.alice,
            c.phone,
            MembershipChange(
                action=Action.HISTORY, target=alice, name="shared", nonce=(50).to_bytes(2, "big")
            ),
        ),
    ]
    history = [
        event(c, user, device, n + 1, change) for n, (user, device, change) in enumerate(changes)
    ]
    wires = [e.wire.hex() for e in history]
    room = c.group_room.hex()
    valid = [
        pin("membership_body", "BAN carol", hex=encode_membership(changes[4][2]).hex()),
        pin(
            "membership_body", "AVATAR: a media digest", hex=encode_membership(changes[7][2]).hex()
        ),
        pin(
            "membership_body",
            "INVITE: digest, expiry, uses",
            hex=encode_membership(changes[8][2]).hex(),
        ),
        pin("membership_body", "an ADD by invite", hex=encode_membership(changes[9][2]).hex()),
        pin("membership_body", "HISTORY shared, 50", hex=encode_membership(changes[10][2]).hex()),
        pin(
            "membership_fold",
            "the creator owns; bob, made admin, bans carol and renames; alice sets topic, avatar",
            room_hex=room,
            events_hex=wires[:8],
        ),
        pin(
            "membership_fold",
            "bob invites, alice adds dave by it, alice shares the last 50 messages (§30.3, §30.6)",
            room_hex=room,
            events_hex=wires,
        ),
        pin(
            "membership_fold",
            "the same events in reverse arrival order: the same state (§12.3)",
            room_hex=room,
            events_hex=wires[::-1],
        ),
    ]
    rulings = [
        (
            2,
            bob,
            MembershipChange(action=Action.ROLE, target=bob, role=Role.ADMIN),
            "a member promotes himself: NOT_YET",
        ),
        (
            2,
            bob,
            MembershipChange(action=Action.KICK, target=alice),
            "a member kicks the owner: NOT_YET",
        ),
        (
            4,
            bob,
            MembershipChange(action=Action.KICK, target=alice),
            "an admin kicks the owner: NOT_YET",
        ),
        (
            4,
            bob,
            MembershipChange(action=Action.ROLE, target=carol, role=Role.ADMIN),
            "an admin promotes a member: ALLOWED",
        ),
        (
            4,
            bob,
            MembershipChange(action=Action.ROLE, target=carol, role=Role.OWNER),
            "an admin makes an owner: NOT_YET",
        ),
        (
            4,
            alice,
            MembershipChange(action=Action.ROLE, target=bob, role=Role.MEMBER),
            "the owner demotes an admin: ALLOWED",
        ),
        (
            4,
            alice,
            MembershipChange(action=Action.ROLE, target=bob, role=Role.ADMIN),
            "a role held already: NOT_YET",
        ),
        (
            5,
            alice,
            MembershipChange(action=Action.ADD, target=carol),
            "an ADD of a banned user: NOT_YET",
        ),
        (
            5,
            alice,
            MembershipChange(action=Action.UNBAN, target=carol),
            "the owner unbans: ALLOWED",
        ),
        (
            3,
            carol,
            MembershipChange(action=Action.RENAME, target=carol, name="mine"),
            "a member renames: NOT_YET",
        ),
        (
            4,
            bob,
            MembershipChange(action=Action.RENAME, target=alice, name="x"),
            "a setting in another's name: NEVER",
        ),
        (
            4,
            carol,
            MembershipChange(action=Action.INVITE, target=carol, nonce=_invite_nonce()),
            "a member invites: NOT_YET",
        ),
        (
            4,
            bob,
            MembershipChange(
                action=Action.INVITE,
                target=bob,
                nonce=_invite_nonce(NOW_MS + MAX_INVITE_TTL_MS + 1),
            ),
            "an invite lasting past 30 days from its event: NEVER",
        ),
        (
            9,
            bob,
            MembershipChange(action=Action.INVITE, target=bob, nonce=_invite_nonce()),
            "an invite of a digest held: NOT_YET",
        ),
        (
            10,
            bob,
            MembershipChange(action=Action.REVOKE, target=bob, nonce=invite_id(_SECRET)),
            "an admin revokes an invite: ALLOWED",
        ),
    ]
    for events, sender, change, note in rulings:
        valid.append(
            pin(
                "membership_ruling",
                note,
                room_hex=room,
                events_hex=wires[:events],
                sender_hex=sender.hex(),
                hex=encode_membership(change).hex(),
                at_ms=NOW_MS,
            )
        )
    invalid = [
        refuse(
            "membership_body",
            MalformedMessage,
            "an AVATAR digest of 5 bytes",
            hex=encode_canonical([int(Action.AVATAR), alice, 0, bytes(5), 0, ""]).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "an INVITE allowing no use",
            hex=encode_canonical(
                [int(Action.INVITE), alice, 0, encode_invite_nonce(bytes(16), NOW_MS, 0), 0, ""]
            ).hex(),
        ),
        refuse(
            "membership_body",
            MalformedMessage,
            "a HISTORY sharing 257 messages",
            hex=encode_canonical(
                [int(Action.HISTORY), alice, 0, (257).to_bytes(2, "big"), 0, "shared"]
            ).hex(),
        ),
    ]
    more = [
        event(
            c,
            c.bob,
            c.laptop,
            20,
            MembershipChange(action=Action.REVOKE, target=bob, nonce=invite_id(_SECRET)),
        ),
        event(
            c,
            c.bob,
            c.laptop,
            21,
            MembershipChange(
                action=Action.ADD, target=UserId(fixed_seed("erin")), nonce=invite_id(_SECRET)
            ),
        ),
    ]
    return valid, invalid, [*wires, *(e.wire.hex() for e in more)]


def _invites(c: Cast, wires: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`wires`: the group of `_roles`, then bob's REVOKE of the invite, then bob's ADD of erin
    by it (made while the REVOKE had not reached his home: a use counted all the same)."""
    secret = _SECRET
    addr = f"/ip4/192.0.2.7/tcp/4001/p2p/{c.node_peer_id}"
    link = encode_invite(Invite(room=c.group_room, secret=secret, addrs=(addr,)))
    code = link.removeprefix(INVITE_LINK_PREFIX)
    room = c.group_room.hex()
    digest = invite_id(secret).hex()
    folded, revoked = wires[:11], wires[:12]
    request = JoinRequest(room=c.group_room, secret=secret, home_record=b"\xa0")
    add = MessageId(fixed_seed("the-add"))
    valid = [
        pin("invite_link", "a link with one admin home", text=link),
        pin("invite_link", "the same invite as a bare code", text=code),
        pin(
            "join_request",
            "a join request (the record is checked apart)",
            hex=encode_join_request(request).hex(),
        ),
        pin("join_answer", "the ADD that let the joiner in", hex=encode_join_answer(add).hex()),
        pin(
            "history_request",
            "a new member asks for the history the group shares (§30.6)",
            hex=encode_history_request(
                HistoryRequest(room=c.group_room, user=UserId(fixed_seed("dave")))
            ).hex(),
        ),
        pin(
            "join_answer", "a refusal: INVITE_EXPIRED", hex=encode_canonical([3, 61, "spent"]).hex()
        ),
        pin(
            "invite_check",
            "one use of two left, before the expiry: any admin's home folds the same",
            room_hex=room,
            events_hex=folded,
            invite_id_hex=digest,
            now_ms=NOW_MS + 20_000,
        ),
    ]
    invalid = [
        refuse("invite_link", InvalidIdentifier, "not base32", text=INVITE_LINK_PREFIX + "!!"),
        refuse(
            "invite_link",
            InvalidIdentifier,
            "an address without /p2p/",
            text=encode_invite(
                Invite(room=c.group_room, secret=secret, addrs=("/ip4/192.0.2.7/tcp/1",))
            ),
        ),
        refuse(
            "history_request",
            MalformedMessage,
            "a user id of 8 bytes",
            hex=encode_canonical([1, c.group_room, bytes(8)]).hex(),
        ),
        refuse(
            "join_request",
            MalformedMessage,
            "a secret of 8 bytes",
            hex=encode_canonical([1, c.group_room, secret[:8], b""]).hex(),
        ),
        refuse(
            "invite_check",
            InviteInvalid,
            "no invite of that digest in the group",
            room_hex=room,
            events_hex=folded,
            invite_id_hex=invite_id(bytes(16)).hex(),
            now_ms=NOW_MS + 20_000,
        ),
        refuse(
            "invite_check",
            InviteInvalid,
            "revoked",
            room_hex=room,
            events_hex=revoked,
            invite_id_hex=digest,
            now_ms=NOW_MS + 30_000,
        ),
        refuse(
            "invite_check",
            InviteExpired,
            "at its expiry",
            room_hex=room,
            events_hex=folded,
            invite_id_hex=digest,
            now_ms=_INVITE_EXPIRES_MS,
        ),
        refuse(
            "invite_check",
            InviteExpired,
            "every use spent (concurrent ADDs by it: both count)",
            room_hex=room,
            events_hex=[*folded, wires[12]],
            invite_id_hex=digest,
            now_ms=NOW_MS + 30_000,
        ),
    ]
    return valid, invalid


def _joiner(c: Cast) -> list[dict[str, Any]]:
    """§8.6: carol, ADDed by bob after alice's unshared 4, is owed none of alice's numbers up to
    4 but what she holds; alice's 5 and 6, after the ADD, are owed in order."""
    alice, bob, carol = c.user(c.alice), c.user(c.bob), c.user(c.carol)
    changes = [
        MembershipChange(action=Action.CREATE, target=alice, nonce=c.group_nonce, name="hearth"),
        MembershipChange(action=Action.ADD, target=bob),
        MembershipChange(action=Action.ROLE, target=bob, role=Role.ADMIN),
    ]
    a1, a2, a3 = (event(c, c.alice, c.phone, n, change) for n, change in enumerate(changes, 1))
    add = c.seal(  # bob's ADD of carol sorts after alice's 4
        c.bob,
        c.laptop,
        kind=Kind.MEMBERSHIP,
        room=c.group_room,
        seq=1,
        body=encode_membership(MembershipChange(action=Action.ADD, target=carol)),
        content_type=MEMBERSHIP_CONTENT_TYPE,
        tick=4_500,
    )
    a4, a5, a6 = (
        c.group_message(n, body=f"message {n}".encode(), tick=n * 1000) for n in (4, 5, 6)
    )
    held = {
        "room_hex": c.group_room.hex(),
        "events_hex": [e.wire.hex() for e in (a1, a2, a3, add)],
        "user_hex": carol.hex(),
    }
    welcome = [[e.wire.hex(), "stored"] for e in (a1, a2, a3)]
    after = [[e.wire.hex(), "stored"] for e in (a5, a6)]
    return [
        pin(
            "joiner_release",
            "the welcome goes to the app as it comes; 5 and 6 wait behind 4, which is fetched",
            **held,
            arrivals=welcome + after,
        ),
        pin(
            "joiner_release",
            "the fetched 4 sorts before carol's ADD: passed over, not stored; 5 and 6 follow",
            **held,
            arrivals=[*welcome, *after, [a4.wire.hex(), "fetched"]],
        ),
        pin(
            "joiner_release",
            "the welcome comes after 5 (its order is the queue's): nothing waits, none is owed",
            **held,
            arrivals=[after[0], *welcome, after[1]],
        ),
    ]


def generate(directory: Path = VECTORS_DIR) -> Path:
    c = Cast()
    role_valid, role_invalid, wires = _roles(c)
    invite_valid, invite_invalid = _invites(c, wires)
    return write_vectors(
        "groups",
        spec="SPEC.md §30.1-30.4, §30.6, §8.6",
        function="tools/vectors/codecs.py ops membership_body, membership_fold, membership_ruling, "
        "invite_link, join_request, join_answer, invite_check, history_request, joiner_release",
        valid=role_valid + invite_valid + _joiner(c),
        invalid=role_invalid + invite_invalid,
        directory=directory,
    )
