"""Room-key shares grouped per user and judged at a home (SPEC §27.5.3, §20.7); the wire
cases are keys.json's `room_key_at_home`."""

from __future__ import annotations

from hearthmesh.protocol import e2ee
from hearthmesh.protocol.addressing import UNSEQUENCED
from hearthmesh.protocol.envelope import Envelope, Kind, RoomId, seal
from hearthmesh.protocol.errors import NotAddressed
from hearthmesh.protocol.hlc import Timestamp
from hearthmesh.protocol.identity import DeviceId, UserId, keypair_from_seed

DEVICE = keypair_from_seed(b"d" * 32)
ALICE, BOB, CAROL = (UserId(bytes([n]) * 32) for n in (1, 2, 3))
BUNDLE = e2ee.issue_key_bundle(DEVICE, identity_key=b"i" * 32, fallback_key=b"f" * 32, issued_ms=1)


def _share(n: int, user: UserId, size: int = 400) -> e2ee.AddressedShare:
    share = e2ee.Share(recipient=DeviceId(bytes([n]) * 32), olm_kind=1, ciphertext=b"c" * size)
    return e2ee.AddressedShare(user=user, share=share)


def _room_key(body: e2ee.RoomKeyShares, seq: int) -> Envelope:
    return seal(
        DEVICE,
        kind=Kind.ROOM_KEY,
        room=RoomId(b"r" * 32),
        sender_user=ALICE,
        seq=seq,
        hlc=Timestamp(wall_ms=1, counter=0),
        content_type=e2ee.ROOM_KEY_CONTENT_TYPE,
        body=e2ee.encode_room_key_shares(body),
    )


def test_shares_go_in_a_body_per_addressed_user_and_the_rest_together_first() -> None:
    shares = [_share(1, BOB), _share(2, CAROL), _share(3, BOB), _share(4, ALICE)]
    groups = e2ee.group_shares(BUNDLE, shares, {BOB, CAROL})
    assert [g.to for g in groups] == [None, BOB, CAROL]
    assert [[s.recipient[0] for s in g.shares.shares] for g in groups] == [[4], [1, 3], [2]]
    assert all(g.shares.sender_bundle == BUNDLE for g in groups)
    everyone = e2ee.group_shares(BUNDLE, shares, set())
    assert [g.to for g in everyone] == [None]  # the form before: one body for all
    assert len(everyone[0].shares.shares) == 4


def test_one_users_shares_are_chunked_under_the_body_limit() -> None:
    many = [_share(n, BOB, size=1000) for n in range(1, 9)]
    groups = e2ee.group_shares(BUNDLE, many, {BOB}, max_bytes=3000)
    assert len(groups) > 1 and all(g.to == BOB for g in groups)
    assert all(len(e2ee.encode_room_key_shares(g.shares)) <= 3000 for g in groups)
    assert sum(len(g.shares.shares) for g in groups) == 8


def test_an_addressed_key_is_for_the_homes_of_whose_devices_it_holds_shares_and_its_senders() -> (
    None
):
    body = e2ee.RoomKeyShares(sender_bundle=BUNDLE, shares=(_share(2, BOB).share,))
    addressed, sequenced = _room_key(body, UNSEQUENCED), _room_key(body, 9)
    bobs, carols = {DeviceId(b"\x02" * 32)}, {DeviceId(b"\x03" * 32)}
    assert e2ee.address_room_key_refusal(addressed, body, BOB, bobs) is None
    assert e2ee.address_room_key_refusal(addressed, body, ALICE, set()) is None  # the sender's
    refusal = e2ee.address_room_key_refusal(addressed, body, CAROL, carols)
    assert isinstance(refusal, NotAddressed)
    assert e2ee.address_room_key_refusal(sequenced, body, CAROL, carols) is None  # §20.7
    with_unknown = e2ee.RoomKeyShares(
        sender_bundle=BUNDLE, shares=(_share(2, BOB).share, _share(7, BOB).share)
    )
    assert e2ee.address_room_key_refusal(addressed, with_unknown, BOB, bobs) is None
