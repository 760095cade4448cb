"""Roles, bans and group settings in the membership fold, and the invite rules (SPEC §30)."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.errors import (
    Banned,
    InvalidIdentifier,
    InviteExpired,
    InviteInvalid,
    MembershipConflict,
    MembershipLimit,
    NotAuthorized,
    QuotaExceeded,
    RemoteProtocolError,
    RoleRequired,
)
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.invites import (
    MAX_INVITES_PER_GROUP,
    Invite,
    InviteRecord,
    check_invite,
    decode_invite,
    encode_invite,
    invite_id,
    keep_invite,
    may_invite,
    revoke,
    spend,
)
from hearthmesh.protocol.membership import (
    MAX_GROUP_SIZE,
    Action,
    MembershipChange,
    Role,
    RoomState,
    Ruling,
    refusal_of,
    ruling,
)
from hearthmesh.protocol.rooms import group_room_id

OWNER, ADMIN, MEMBER, OTHER = (UserId(bytes([i]) * 32) for i in (1, 2, 3, 4))
ROOM = group_room_id(OWNER, b"n" * 16)


def group() -> RoomState:
    """A created group: OWNER owns it, ADMIN is an admin, MEMBER a member."""
    return RoomState(
        room=ROOM,
        created=True,
        members={OWNER: Role.OWNER, ADMIN: Role.ADMIN, MEMBER: Role.MEMBER},
    )


def judge(
    state: RoomState, sender: UserId, action: Action, target: UserId, **extra: object
) -> tuple[Ruling, RemoteProtocolError | None]:
    change = MembershipChange(action=action, target=target, **extra)  # type: ignore[arg-type]
    return ruling(state, sender, change), refusal_of(state, sender, change)


def test_roles_decide_who_may_kick_ban_promote_and_rename() -> None:
    state = group()
    allowed = [
        (ADMIN, Action.KICK, MEMBER, {}),
        (OWNER, Action.KICK, ADMIN, {}),
        (ADMIN, Action.BAN, OTHER, {}),  # a ban before they ever joined
        (ADMIN, Action.ROLE, MEMBER, {"role": Role.ADMIN}),
        (OWNER, Action.ROLE, ADMIN, {"role": Role.MEMBER}),
        (OWNER, Action.ROLE, MEMBER, {"role": Role.OWNER}),
        (ADMIN, Action.RENAME, ADMIN, {"name": "new"}),
        (ADMIN, Action.TOPIC, ADMIN, {"name": "topic"}),
        (OWNER, Action.AVATAR, OWNER, {"nonce": b"d" * 32}),
    ]
    for sender, action, target, extra in allowed:
        assert judge(state, sender, action, target, **extra) == (Ruling.ALLOWED, None)  # type: ignore[arg-type]
    refused = [
        (MEMBER, Action.KICK, ADMIN, {}, RoleRequired),
        (MEMBER, Action.ROLE, MEMBER, {"role": Role.ADMIN}, RoleRequired),  # self-promotion
        (ADMIN, Action.KICK, OWNER, {}, RoleRequired),
        (ADMIN, Action.BAN, OWNER, {}, RoleRequired),
        (ADMIN, Action.ROLE, MEMBER, {"role": Role.OWNER}, RoleRequired),
        (ADMIN, Action.ROLE, ADMIN, {"role": Role.MEMBER}, RoleRequired),  # not above himself
        (MEMBER, Action.RENAME, MEMBER, {"name": "mine"}, RoleRequired),
        (OWNER, Action.ROLE, ADMIN, {"role": Role.ADMIN}, MembershipConflict),
        (OWNER, Action.KICK, OTHER, {}, MembershipConflict),
        (OWNER, Action.ADD, MEMBER, {}, MembershipConflict),
    ]
    for sender, action, target, extra, error in refused:
        verdict, reason = judge(state, sender, action, target, **extra)  # type: ignore[arg-type]
        assert verdict is Ruling.NOT_YET, (action, extra)
        assert type(reason) is error, (action, extra, reason)
    # a setting in someone else's name can never be right
    verdict, reason = judge(state, ADMIN, Action.RENAME, OWNER, name="x")
    assert verdict is Ruling.NEVER and type(reason) is NotAuthorized


def test_a_banned_user_is_added_by_no_one_until_unbanned() -> None:
    state = group()
    for sender, action, target in [(ADMIN, Action.BAN, MEMBER), (OWNER, Action.BAN, OTHER)]:
        assert state.apply_change(sender, MembershipChange(action=action, target=target))
    assert state.banned == {MEMBER, OTHER} and MEMBER not in state.members
    assert type(judge(state, OWNER, Action.ADD, MEMBER)[1]) is Banned
    open_state = state.copy()
    open_state.open = True
    assert type(judge(open_state, OTHER, Action.JOIN, OTHER)[1]) is Banned
    assert state.apply_change(ADMIN, MembershipChange(action=Action.UNBAN, target=MEMBER))
    assert judge(state, OWNER, Action.ADD, MEMBER) == (Ruling.ALLOWED, None)


def test_a_full_group_takes_no_one_more() -> None:
    state = group()
    state.members.update({UserId(i.to_bytes(32, "big")): Role.MEMBER for i in range(1000, 2021)})
    assert len(state.members) == MAX_GROUP_SIZE
    assert type(judge(state, OWNER, Action.ADD, OTHER)[1]) is MembershipLimit
    state.apply_change(OWNER, MembershipChange(action=Action.KICK, target=MEMBER))
    assert judge(state, OWNER, Action.ADD, OTHER) == (Ruling.ALLOWED, None)


def test_settings_apply_in_the_fold() -> None:
    state = group()
    for action, extra in [
        (Action.RENAME, {"name": "hearth"}),
        (Action.TOPIC, {"name": "tea"}),
        (Action.AVATAR, {"nonce": b"a" * 32}),
    ]:
        change = MembershipChange(action=action, target=ADMIN, **extra)  # type: ignore[arg-type]
        assert state.apply_change(ADMIN, change)
    assert (state.name, state.topic, state.avatar) == ("hearth", "tea", b"a" * 32)
    assert not state.apply_change(MEMBER, MembershipChange(action=Action.TOPIC, target=MEMBER))
    assert state.topic == "tea"


def record(**changes: object) -> InviteRecord:
    base = InviteRecord(
        invite_id=invite_id(b"s" * 16),
        room=ROOM,
        issuer=OWNER,
        created_ms=0,
        expires_ms=1000,
        max_uses=2,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_an_invite_lets_in_until_expired_spent_or_revoked() -> None:
    held = record()
    assert check_invite(held, now_ms=999) is held
    with pytest.raises(InviteExpired):
        check_invite(held, now_ms=1000)
    with pytest.raises(InviteExpired):
        check_invite(spend(spend(held)), now_ms=0)
    with pytest.raises(InviteInvalid):
        check_invite(revoke(held), now_ms=0)
    with pytest.raises(InviteInvalid):
        check_invite(None, now_ms=0)


def test_only_admins_invite_and_a_group_holds_a_bounded_number() -> None:
    may_invite(group(), ADMIN)
    with pytest.raises(RoleRequired):
        may_invite(group(), MEMBER)
    held = [record(invite_id=bytes([i]) * 16) for i in range(MAX_INVITES_PER_GROUP)]
    with pytest.raises(QuotaExceeded):
        keep_invite(held, record(), now_ms=0)
    # those that can let no one in any more make room
    held[0] = revoke(held[0])
    assert len(keep_invite(held, record(), now_ms=0)) == MAX_INVITES_PER_GROUP


@given(st.text(max_size=200))
def test_any_text_is_an_invite_or_invalid_identifier(text: str) -> None:
    with contextlib.suppress(InvalidIdentifier):
        decode_invite(text)


def test_an_invite_round_trips_as_a_link_and_as_a_code() -> None:
    invite = Invite(room=ROOM, secret=b"k" * 16, addrs=("/ip4/10.0.0.1/tcp/1/p2p/12D3Koo",))
    link = encode_invite(invite)
    assert decode_invite(link) == invite
    assert decode_invite(link.removeprefix("hearthmesh:join/").upper()) == invite
