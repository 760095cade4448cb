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
    MalformedMessage,
    MembershipConflict,
    MembershipLimit,
    NotAuthorized,
    QuotaExceeded,
    RemoteProtocolError,
    RoleRequired,
)
from hearthmesh.protocol.identity import UserId
from hearthmesh.protocol.invite_record import (
    MAX_INVITE_TTL_MS,
    MAX_INVITES_PER_GROUP,
    encode_invite_nonce,
)
from hearthmesh.protocol.invites import (
    Invite,
    check_invite,
    decode_invite,
    encode_invite,
    invite_id,
    may_invite,
)
from hearthmesh.protocol.membership import (
    HISTORY_SHARED,
    MAX_GROUP_SIZE,
    MAX_SHARED_HISTORY,
    Action,
    MembershipChange,
    Role,
    RoomState,
    Ruling,
    decode_membership,
    encode_membership,
    refusal_of,
    ruling,
)
from hearthmesh.protocol.rooms import group_room_id

OWNER, ADMIN, MEMBER, OTHER = (UserId(bytes([i]) * 32) for i in (1, 2, 3, 4))
ROOM = group_room_id(OWNER, b"n" * 16)
NOW = 1_000_000


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
    return ruling(state, sender, change, at_ms=NOW), refusal_of(state, sender, change, at_ms=NOW)


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
        assert state.apply_change(sender, MembershipChange(action=action, target=target), at_ms=NOW)
    assert state.banned == {MEMBER, OTHER} and MEMBER not in state.members
    assert type(judge(state, OWNER, Action.ADD, MEMBER)[1]) is Banned
    open_state = state.copy()
    open_state.open = True
    assert type(judge(open_state, OTHER, Action.JOIN, OTHER)[1]) is Banned
    assert state.apply_change(
        ADMIN, MembershipChange(action=Action.UNBAN, target=MEMBER), at_ms=NOW
    )
    assert judge(state, OWNER, Action.ADD, MEMBER) == (Ruling.ALLOWED, None)


def test_a_full_group_takes_no_one_more() -> None:
    state = group()
    state.members.update({UserId(i.to_bytes(32, "big")): Role.MEMBER for i in range(1000, 2021)})
    assert len(state.members) == MAX_GROUP_SIZE
    assert type(judge(state, OWNER, Action.ADD, OTHER)[1]) is MembershipLimit
    state.apply_change(OWNER, MembershipChange(action=Action.KICK, target=MEMBER), at_ms=NOW)
    assert judge(state, OWNER, Action.ADD, OTHER) == (Ruling.ALLOWED, None)


def test_settings_apply_in_the_fold() -> None:
    state = group()
    for action, extra in [
        (Action.RENAME, {"name": "hearth"}),
        (Action.TOPIC, {"name": "tea"}),
        (Action.AVATAR, {"nonce": b"a" * 32}),
    ]:
        change = MembershipChange(action=action, target=ADMIN, **extra)  # type: ignore[arg-type]
        assert state.apply_change(ADMIN, change, at_ms=NOW)
    assert (state.name, state.topic, state.avatar) == ("hearth", "tea", b"a" * 32)
    assert not state.apply_change(
        MEMBER, MembershipChange(action=Action.TOPIC, target=MEMBER), at_ms=NOW
    )
    assert state.topic == "tea"


def invite(digest: bytes, *, expires_ms: int = NOW + 1000, max_uses: int = 2) -> MembershipChange:
    nonce = encode_invite_nonce(digest, expires_ms, max_uses)
    return MembershipChange(action=Action.INVITE, target=ADMIN, nonce=nonce)


def test_an_invite_is_folded_and_each_add_that_names_it_spends_a_use() -> None:
    state = group()
    digest = invite_id(b"s" * 16)
    assert state.apply_change(ADMIN, invite(digest), at_ms=NOW)
    held = state.invites[digest]
    assert (held.issuer, held.created_ms, held.uses, held.max_uses) == (ADMIN, NOW, 0, 2)
    assert check_invite(held, now_ms=NOW) is held
    for user in (OTHER, UserId(b"\x05" * 32)):
        add = MembershipChange(action=Action.ADD, target=user, nonce=digest)
        assert state.apply_change(OWNER, add, at_ms=NOW)
    assert state.invites[digest].uses == 2
    with pytest.raises(InviteExpired):  # spent: any admin's home folds the same count
        check_invite(state.invites[digest], now_ms=NOW)
    with pytest.raises(InviteExpired):
        check_invite(held, now_ms=NOW + 1000)
    with pytest.raises(InviteInvalid):
        check_invite(None, now_ms=NOW)


def test_a_revoked_invite_lets_no_one_in_and_only_admins_revoke() -> None:
    state = group()
    digest = invite_id(b"s" * 16)
    revoke = MembershipChange(action=Action.REVOKE, target=MEMBER, nonce=digest)
    assert state.apply_change(ADMIN, invite(digest), at_ms=NOW)
    assert judge(state, MEMBER, Action.REVOKE, MEMBER, nonce=digest)[0] is Ruling.NOT_YET
    assert not state.apply_change(MEMBER, revoke, at_ms=NOW)
    assert state.apply_change(OWNER, replace(revoke, target=OWNER), at_ms=NOW)
    with pytest.raises(InviteInvalid):
        check_invite(state.invites[digest], now_ms=NOW)
    again = judge(state, OWNER, Action.REVOKE, OWNER, nonce=digest)
    assert again[0] is Ruling.NOT_YET and type(again[1]) is MembershipConflict


def test_only_admins_invite_for_at_most_30_days_and_a_group_holds_a_bounded_number() -> None:
    may_invite(group(), ADMIN)
    with pytest.raises(RoleRequired):
        may_invite(group(), MEMBER)
    state = group()
    member_invite = replace(invite(b"m" * 16), target=MEMBER)
    assert judge(state, MEMBER, Action.INVITE, MEMBER, nonce=member_invite.nonce)[0] is (
        Ruling.NOT_YET
    )
    too_long = invite(b"l" * 16, expires_ms=NOW + MAX_INVITE_TTL_MS + 1)
    assert ruling(state, ADMIN, too_long, at_ms=NOW) is Ruling.NEVER
    past = invite(b"p" * 16, expires_ms=NOW)
    assert ruling(state, ADMIN, past, at_ms=NOW) is Ruling.NEVER
    for i in range(MAX_INVITES_PER_GROUP):
        assert state.apply_change(ADMIN, invite(bytes([i]) * 16), at_ms=NOW)
    full = refusal_of(state, ADMIN, invite(b"x" * 16), at_ms=NOW)
    assert type(full) is QuotaExceeded
    assert type(refusal_of(state, ADMIN, invite(bytes([0]) * 16), at_ms=NOW)) is (
        MembershipConflict
    )
    # an invite that can let no one in any more makes room: revoked, or expired by then
    revoke = MembershipChange(action=Action.REVOKE, target=ADMIN, nonce=bytes([0]) * 16)
    assert state.apply_change(ADMIN, revoke, at_ms=NOW)
    assert ruling(state, ADMIN, invite(b"x" * 16), at_ms=NOW) is Ruling.ALLOWED
    assert state.apply_change(ADMIN, invite(b"x" * 16), at_ms=NOW)
    later = invite(b"y" * 16, expires_ms=NOW + 5000)
    assert ruling(state, ADMIN, later, at_ms=NOW) is Ruling.NOT_YET
    assert ruling(state, ADMIN, later, at_ms=NOW + 1000) is Ruling.ALLOWED


def test_invite_revoke_history_and_add_bodies_have_their_shapes() -> None:
    good = [
        invite(b"d" * 16),
        MembershipChange(action=Action.REVOKE, target=ADMIN, nonce=b"d" * 16),
        MembershipChange(action=Action.ADD, target=OTHER, nonce=b"d" * 16),
        MembershipChange(action=Action.HISTORY, target=ADMIN, name="joined"),
        MembershipChange(action=Action.HISTORY, target=ADMIN, name="shared", nonce=b"\x00\x32"),
    ]
    for change in good:
        assert decode_membership(encode_membership(change)) == change
    bad = [
        replace(good[0], nonce=good[0].nonce[:-1]),  # a short INVITE
        replace(good[0], nonce=encode_invite_nonce(b"d" * 16, NOW, 0)),  # no use allowed
        replace(good[1], nonce=b"d" * 15),
        replace(good[2], nonce=b"d" * 8),
        replace(good[3], nonce=b"\x00\x01"),  # joined takes no count
        replace(good[4], nonce=(MAX_SHARED_HISTORY + 1).to_bytes(2, "big")),
        replace(good[4], nonce=b"\x00\x00"),
        replace(good[4], name="everything"),
    ]
    for change in bad:
        with pytest.raises(MalformedMessage):
            decode_membership(encode_membership(change))


def test_the_history_setting_is_an_admins_and_folds() -> None:
    state = group()
    shared = MembershipChange(
        action=Action.HISTORY, target=ADMIN, name=HISTORY_SHARED, nonce=b"\x00\x32"
    )
    assert not state.apply_change(MEMBER, replace(shared, target=MEMBER), at_ms=NOW)
    assert (state.history, state.history_limit) == ("joined", 0)
    assert state.apply_change(ADMIN, shared, at_ms=NOW)
    assert (state.history, state.history_limit) == ("shared", 50)
    assert state.copy().history_limit == 50


@given(st.text(max_size=200))
def test_any_text_is_an_invite_or_invalid_identifier(text: str) -> None:
    with contextlib.suppress(InvalidIdentifier):
        decode_invite(text)


def test_an_invite_round_trips_as_a_link_and_as_a_code() -> None:
    invite = Invite(room=ROOM, secret=b"k" * 16, addrs=("/ip4/10.0.0.1/tcp/1/p2p/12D3Koo",))
    link = encode_invite(invite)
    assert decode_invite(link) == invite
    assert decode_invite(link.removeprefix("hearthmesh:join/").upper()) == invite
