"""protocol/e2ee (SPEC §27): key bundles, room keys, shares, encrypted bodies, the arrival
decision, and the pinned vectors of protocol/vectors/e2ee.json."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from importlib import resources
from typing import Any

import pytest
import vodozemac

from hearthmesh.protocol import e2ee, errors
from hearthmesh.protocol.e2ee import (
    EncryptedBody,
    OlmKind,
    RoomKey,
    RoomKeyShares,
    Share,
)
from hearthmesh.protocol.envelope import MAX_BODY_BYTES, MessageId, RoomId
from hearthmesh.protocol.errors import (
    BadSignature,
    KeyMismatch,
    MalformedMessage,
    Replayed,
    Undecryptable,
)
from hearthmesh.protocol.identity import DeviceId, UserId, keypair_from_seed

VECTORS: dict[str, Any] = json.loads(
    resources.files("hearthmesh.protocol").joinpath("vectors/e2ee.json").read_text()
)
_DEVICE = keypair_from_seed(b"d" * 32)
_BUNDLE = e2ee.issue_key_bundle(
    _DEVICE, identity_key=b"c" * 32, fallback_key=b"f" * 32, issued_ms=1
)
_ROOM = RoomId(b"r" * 32)


def _inbound(session_key_hex: str) -> vodozemac.InboundGroupSession:
    text = base64.b64encode(bytes.fromhex(session_key_hex)).decode().rstrip("=")
    return vodozemac.InboundGroupSession(vodozemac.SessionKey(text))


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: f"tc{c['id']}")
def test_vectors_valid(case: dict[str, Any]) -> None:
    if case["op"] == "key_bundle":
        bundle = e2ee.issue_key_bundle(
            keypair_from_seed(bytes.fromhex(case["device_seed"])),
            identity_key=bytes.fromhex(case["identity_key"]),
            fallback_key=bytes.fromhex(case["fallback_key"]),
            issued_ms=case["issued_ms"],
        )
        assert e2ee.encode_key_bundle(bundle).hex() == case["expect_hex"]
        decoded = e2ee.decode_key_bundle(bytes.fromhex(case["expect_hex"]))
        e2ee.verify_key_bundle(decoded)
        assert decoded == bundle
    elif case["op"] == "room_key":
        key = e2ee.decode_room_key(bytes.fromhex(case["expect_hex"]))
        assert key.session_key.hex() == case["session_key"]
        assert e2ee.encode_room_key(key).hex() == case["expect_hex"]
    else:
        body = e2ee.decode_encrypted_body(bytes.fromhex(case["body_hex"]))
        opened = e2ee.open_encrypted(_inbound(case["session_key"]), body)
        assert (opened.index, opened.content_type, opened.body.hex()) == (
            case["expect_index"],
            case["expect_content_type"],
            case["expect_body_hex"],
        )


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: f"tc{c['id']}")
def test_vectors_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(getattr(errors, case["error"])):
        if case["op"] == "key_bundle":
            e2ee.verify_key_bundle(e2ee.decode_key_bundle(bytes.fromhex(case["bundle_hex"])))
        else:
            body = e2ee.decode_encrypted_body(bytes.fromhex(case["body_hex"]))
            e2ee.open_encrypted(_inbound(case["session_key"]), body)


def test_a_one_time_key_is_signed_and_a_swapped_key_fails() -> None:
    key = e2ee.issue_one_time_key(_DEVICE, b"k" * 32)
    decoded = e2ee.decode_one_time_key(e2ee.encode_one_time_key(key))
    e2ee.verify_one_time_key(decoded)
    swapped = e2ee.OneTimeKey(device=key.device, key=b"x" * 32, signature=key.signature)
    with pytest.raises(BadSignature):
        e2ee.verify_one_time_key(swapped)


def _room_key(**changes: Any) -> RoomKey:
    fields: dict[str, Any] = {
        "room": _ROOM,
        "session_id": b"s" * 32,
        "session_key": b"k" * 229,
        "first_index": 0,
        "sender_user": UserId(b"u" * 32),
        "sender_device": DeviceId(_DEVICE.public),
        "sender_curve": b"c" * 32,
        "recipient_device": DeviceId(b"v" * 32),
        "recipient_curve": b"w" * 32,
    }
    fields.update(changes)
    return RoomKey(**fields)


_CHANNEL: dict[str, Any] = {
    "room": _ROOM,
    "sender_user": UserId(b"u" * 32),
    "sender_device": DeviceId(_DEVICE.public),
    "sender_curve": b"c" * 32,
    "recipient_device": DeviceId(b"v" * 32),
    "recipient_curve": b"w" * 32,
}


def test_a_room_key_matching_its_channel_passes() -> None:
    key = e2ee.decode_room_key(e2ee.encode_room_key(_room_key()))
    e2ee.check_room_key(key, **_CHANNEL)


@pytest.mark.parametrize(
    "field",
    ["room", "sender_user", "sender_device", "sender_curve", "recipient_device", "recipient_curve"],
)
def test_a_room_key_naming_another_party_is_a_key_mismatch(field: str) -> None:
    key = _room_key(**{field: b"z" * 32})
    with pytest.raises(KeyMismatch):
        e2ee.check_room_key(key, **_CHANNEL)


def _share(n: int) -> Share:
    return Share(
        recipient=DeviceId(n.to_bytes(32, "big")), olm_kind=OlmKind.PRE_KEY, ciphertext=b"o" * 560
    )


def test_shares_for_many_devices_are_chunked_under_the_body_limit() -> None:
    bodies = e2ee.chunk_shares(_BUNDLE, [_share(n) for n in range(300)])
    assert len(bodies) > 1
    recipients: list[DeviceId] = []
    for body in bodies:
        encoded = e2ee.encode_room_key_shares(body)
        assert len(encoded) <= MAX_BODY_BYTES
        decoded = e2ee.decode_room_key_shares(encoded)
        recipients.extend(share.recipient for share in decoded.shares)
    assert recipients == [_share(n).recipient for n in range(300)]


def test_a_recipient_twice_in_one_body_is_malformed() -> None:
    body = RoomKeyShares(sender_bundle=_BUNDLE, shares=(_share(1), _share(1)))
    with pytest.raises(MalformedMessage):
        e2ee.decode_room_key_shares(e2ee.encode_room_key_shares(body))


def test_olm_delivers_a_room_key_and_megolm_round_trips() -> None:
    """The whole exchange with real vodozemac: claim, Olm, room key check, Megolm."""
    alice, bob = vodozemac.Account(), vodozemac.Account()
    bob.generate_one_time_keys(1)
    one_time = next(iter(bob.one_time_keys.values()))
    outbound = vodozemac.GroupSession()
    room_key = _room_key(
        session_id=e2ee.session_id_bytes(outbound.session_id),
        session_key=base64.b64decode(outbound.session_key.to_base64() + "=="),
        sender_curve=alice.curve25519_key.to_bytes(),
        recipient_curve=bob.curve25519_key.to_bytes(),
    )
    olm = alice.create_outbound_session(bob.curve25519_key, one_time)
    kind, ciphertext = olm.encrypt(e2ee.encode_room_key(room_key)).to_parts()
    shares = e2ee.decode_room_key_shares(
        e2ee.encode_room_key_shares(
            RoomKeyShares(
                sender_bundle=e2ee.issue_key_bundle(
                    _DEVICE,
                    identity_key=alice.curve25519_key.to_bytes(),
                    fallback_key=b"f" * 32,
                    issued_ms=1,
                ),
                shares=(
                    Share(recipient=DeviceId(b"v" * 32), olm_kind=kind, ciphertext=ciphertext),
                ),
            )
        )
    )
    share = shares.for_device(DeviceId(b"v" * 32))
    assert share is not None and share.olm_kind == OlmKind.PRE_KEY
    message = vodozemac.AnyOlmMessage.from_parts(share.olm_kind, share.ciphertext).to_pre_key()
    assert message is not None
    _, plaintext = bob.create_inbound_session(
        vodozemac.Curve25519PublicKey.from_bytes(shares.sender_curve), message
    )
    received = e2ee.decode_room_key(plaintext)
    e2ee.check_room_key(
        received,
        **{
            **_CHANNEL,
            "sender_curve": shares.sender_curve,
            "recipient_curve": bob.curve25519_key.to_bytes(),
        },
    )
    text = base64.b64encode(received.session_key).decode().rstrip("=")
    inbound = vodozemac.InboundGroupSession(vodozemac.SessionKey(text))
    body, index = e2ee.encrypt_content(outbound, "text/plain", b"canary")
    opened = e2ee.open_encrypted(inbound, e2ee.decode_encrypted_body(body))
    assert (opened.index, opened.content_type, opened.body) == (index, "text/plain", b"canary")
    assert opened.plaintext == e2ee.encode_plaintext("text/plain", b"canary")  # what is kept


def test_a_key_exported_at_index_i_does_not_open_earlier_messages() -> None:
    outbound = vodozemac.GroupSession()
    first_key = outbound.session_key
    bodies = [e2ee.encrypt_content(outbound, "text/plain", b"m%d" % n)[0] for n in range(3)]
    stolen = vodozemac.InboundGroupSession(first_key).export_at(2)
    assert stolen is not None
    later = vodozemac.InboundGroupSession.import_session(stolen)
    assert e2ee.open_encrypted(later, e2ee.decode_encrypted_body(bodies[2])).body == b"m2"
    for early in bodies[:2]:
        with pytest.raises(Undecryptable):
            e2ee.open_encrypted(later, e2ee.decode_encrypted_body(early))


def test_an_earlier_message_its_sender_signed_is_told_from_a_broken_one() -> None:
    """SPEC §27.11.2, §27.6.2: a message whose index precedes the session's first known one,
    signed by the session's key, is its sender's (a key from an earlier index opens it); the
    same message with a byte changed (its MAC, its ciphertext or its signature), or one our
    session opens or fails on at a known index, is not."""
    outbound = vodozemac.GroupSession()
    bodies = [e2ee.encrypt_content(outbound, "text/plain", b"m%d" % n)[0] for n in range(3)]
    later = vodozemac.InboundGroupSession(outbound.session_key)  # from index 3
    other = vodozemac.GroupSession()
    forged = e2ee.decode_encrypted_body(e2ee.encrypt_content(other, "text/plain", b"x")[0])
    early = e2ee.decode_encrypted_body(bodies[0])
    assert e2ee.signed_before_known(later, early)
    assert not e2ee.signed_before_known(later, forged)  # index 0, another session's signature
    for at in (5, len(early.ciphertext) - 70, len(early.ciphertext) - 1):
        broken = bytearray(early.ciphertext)
        broken[at] ^= 1
        changed = dataclasses.replace(early, ciphertext=bytes(broken))
        assert not e2ee.signed_before_known(later, changed)
    assert not e2ee.signed_before_known(later, dataclasses.replace(early, ciphertext=b"x"))
    whole = vodozemac.InboundGroupSession(vodozemac.GroupSession().session_key)
    assert not e2ee.signed_before_known(whole, early)  # index 0 is known: not "before"


def test_unknown_session_holds_and_another_devices_session_is_a_mismatch() -> None:
    body = EncryptedBody(algorithm=e2ee.MEGOLM_V1, session_id=b"s" * 32, ciphertext=b"x")
    sender = DeviceId(b"a" * 32)
    assert e2ee.plan_open(body, sender_device=sender, session_owner=None) == e2ee.Hold(b"s" * 32)
    assert e2ee.plan_open(body, sender_device=sender, session_owner=sender) == e2ee.Decrypt(
        b"s" * 32
    )
    with pytest.raises(KeyMismatch):
        e2ee.plan_open(body, sender_device=sender, session_owner=DeviceId(b"b" * 32))


def test_a_replayed_index_is_refused_and_the_same_message_is_idempotent() -> None:
    first, other = MessageId(b"1" * 32), MessageId(b"2" * 32)
    assert e2ee.check_replay(None, first) is True
    assert e2ee.check_replay(first, first) is False
    with pytest.raises(Replayed):
        e2ee.check_replay(first, other)


def test_an_encrypted_body_inside_an_encrypted_body_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        e2ee.decode_plaintext(e2ee.encode_plaintext(e2ee.ENCRYPTED_CONTENT_TYPE, b"x"))


@pytest.mark.parametrize(
    ("created_ms", "messages", "now_ms", "removed", "rotate"),
    [
        (0, 0, 1000, False, False),
        (0, 99, 1000, False, False),
        (0, 100, 1000, False, True),
        (0, 0, 7 * 24 * 3600 * 1000 - 1, False, False),
        (0, 0, 7 * 24 * 3600 * 1000, False, True),
        (0, 0, 1000, True, True),
    ],
)
def test_rotation_after_a_removal_100_messages_or_a_week(
    created_ms: int, messages: int, now_ms: int, removed: bool, rotate: bool
) -> None:
    assert (
        e2ee.needs_rotation(
            created_ms=created_ms, messages=messages, now_ms=now_ms, member_removed_since=removed
        )
        is rotate
    )


def test_a_claim_answer_holds_keys_signed_by_the_device_asked_for() -> None:
    device = DeviceId(_DEVICE.public)
    assert e2ee.decode_claim_request(e2ee.encode_claim_request(device)) == device
    bundle = e2ee.issue_key_bundle(
        _DEVICE, identity_key=b"i" * 32, fallback_key=b"f" * 32, issued_ms=1
    )
    key = e2ee.issue_one_time_key(_DEVICE, b"k" * 32)
    answer = e2ee.decode_claim_answer(
        e2ee.encode_claim_answer(
            e2ee.ClaimAnswer(
                bundle=e2ee.encode_key_bundle(bundle), one_time_key=e2ee.encode_one_time_key(key)
            )
        )
    )
    assert isinstance(answer, e2ee.ClaimAnswer)
    assert e2ee.check_claim_answer(answer, device) == (bundle, key)
    with pytest.raises(KeyMismatch):
        e2ee.check_claim_answer(answer, DeviceId(b"o" * 32))
    other = keypair_from_seed(b"o" * 32)
    swapped = e2ee.ClaimAnswer(
        bundle=e2ee.encode_key_bundle(bundle),
        one_time_key=e2ee.encode_one_time_key(
            e2ee.OneTimeKey(device=device, key=b"x" * 32, signature=other.sign(b"x"))
        ),
    )
    with pytest.raises(BadSignature):
        e2ee.check_claim_answer(swapped, device)


def test_a_key_request_names_its_user_and_1_to_64_sessions() -> None:
    """SPEC §27.13.1: [1, user, [[room, session], ...]] round-trips; no session, 65, a short
    id or another shape is MALFORMED."""
    user, room = UserId(b"u" * 32), RoomId(b"r" * 32)
    sessions = tuple((room, bytes([i]) * 32) for i in range(3))
    request = e2ee.KeyRequest(user=user, sessions=sessions)
    assert e2ee.decode_key_request(e2ee.encode_key_request(request)) == request
    for bad in (
        e2ee.KeyRequest(user=user, sessions=()),
        e2ee.KeyRequest(user=user, sessions=((room, b"s" * 32),) * 65),
        e2ee.KeyRequest(user=user, sessions=((room, b"s" * 31),)),
        e2ee.KeyRequest(user=UserId(b"u" * 31), sessions=sessions),
    ):
        with pytest.raises(MalformedMessage):
            e2ee.decode_key_request(e2ee.encode_key_request(bad))
    with pytest.raises(MalformedMessage):  # a key-forward request is not a key request
        e2ee.decode_key_request(e2ee.encode_forward_request(list(sessions)))


def _schedule(spreads: list[float], ask_ms: int, *, first_ms: int = 2_000) -> list[int]:
    """The times of a session's requests, seen held at 0, each request lasting `ask_ms` (a
    timeout, when its sender is silent): the first spread places the first ask, each later
    one the wait after a request's end."""
    schedule = e2ee.KeyRequestSchedule.seen(0, interval_ms=first_ms, spread=spreads[0])
    times: list[int] = []
    for spread in [*spreads[1:], 0.0]:
        assert schedule.next_ms is not None
        times.append(schedule.next_ms)
        schedule.asked()
        assert not schedule.due(10**12), "not asked again while a request is out"
        schedule.ended(times[-1] + ask_ms, spread=spread)
    return times


def test_key_requests_back_off_doubling_to_ten_minutes() -> None:
    """SPEC §27.13.3: with no spread, the interval, then twice as long each time, never past
    10 minutes; with the most spread, each wait is at least half of that."""
    for spread, share in ((0.0, 1.0), (0.999_999, 0.5)):
        waits = [
            e2ee.next_key_request_ms(n, 1_000, first_ms=2_000, spread=spread) - 1_000
            for n in range(1, 12)
        ]
        assert waits[:4] == [int(w * share) + (share < 1) for w in (2_000, 4_000, 8_000, 16_000)]
        cap = e2ee.KEY_REQUEST_MAX_BACKOFF_MS
        assert max(waits) == waits[-1] == int(cap * share) + (share < 1) <= cap
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError):
            e2ee.next_key_request_ms(1, 0, first_ms=2_000, spread=bad)


def test_key_request_first_ask_waits_one_to_two_intervals() -> None:
    """SPEC §27.13.3: the first ask waits at least the interval (the ROOM_KEY may be a moment
    behind), at most twice it, placed by the spread."""
    firsts = [e2ee.next_key_request_ms(0, 500, first_ms=2_000, spread=s / 10) for s in range(10)]
    assert firsts == [2_500 + 200 * s for s in range(10)]


def test_a_request_that_ended_is_asked_again_its_backoff_after_the_end() -> None:
    """SPEC §27.13.3, #18: each wait counts from the end of the request before, with a spread
    drawn for it. Counted from the start, a 2 s backoff had long passed when a request to a
    silent sender timed out at 10 s, and the session was due again at once."""
    schedule = e2ee.KeyRequestSchedule.seen(0, interval_ms=2_000, spread=0.0)
    assert not schedule.due(1_999) and schedule.due(2_000)
    schedule.asked()
    assert schedule.count == 0 and not schedule.due(12_000)
    schedule.ended(12_000, spread=0.0)  # timed out
    assert schedule.count == 1 and not schedule.due(13_999) and schedule.due(14_000)
    spread = e2ee.KeyRequestSchedule.seen(0, interval_ms=2_000, spread=0.0)
    spread.asked()
    spread.ended(12_000, spread=0.999)  # the same end, with the most spread
    assert not spread.due(13_000) and spread.due(13_001)
    for n in range(2, e2ee.KEY_REQUEST_ATTEMPTS + 1):
        schedule.asked()
        assert not schedule.undecryptable  # counted as it ends, not as it goes
        schedule.ended(100_000, spread=0.0)
        assert schedule.undecryptable == (n >= e2ee.KEY_REQUEST_ATTEMPTS)
        assert schedule.next_ms == 100_000 + 2_000 * 2 ** (n - 1)


def test_the_asker_sleeps_to_the_earliest_ask_still_to_come() -> None:
    """SPEC §27.13.3: the next round is the earliest next ask after now; a session due now (a
    round left it waiting for a request to end) or being asked sets no time, since a
    request's end wakes the asker; none of either: no time at all (it waits for a hold)."""
    seen = [e2ee.KeyRequestSchedule.seen(0, interval_ms=1_000, spread=s) for s in (0.5, 0.25)]
    assert [s.next_ms for s in seen] == [1_500, 1_250]
    assert e2ee.next_round_ms(seen, 0) == 1_250
    assert e2ee.next_round_ms(seen, 1_249) == 1_250
    assert e2ee.next_round_ms(seen, 1_250) == 1_500  # due now: waits for its sender's end
    seen[1].asked()
    assert e2ee.next_round_ms(seen, 0) == 1_500  # being asked: no time until it ends
    seen[1].ended(1_300, spread=0.0)
    assert e2ee.next_round_ms(seen, 1_300) == 1_500
    seen[0].asked()
    assert e2ee.next_round_ms(seen, 1_600) == 2_300
    seen[1].asked()
    assert e2ee.next_round_ms(seen, 2_300) is None
    assert e2ee.next_round_ms([], 0) is None


def test_a_sibling_that_forwards_nothing_is_asked_with_backoff_and_again_at_a_new_hold() -> None:
    """SPEC §27.12.1: a sibling first seen is due at once; one that forwarded keys is asked
    again an interval on; one that forwarded none, after the interval doubling per such ask (up
    to the key requests' longest wait); a hold written makes every sibling due again; homes no
    longer our user's are forgotten."""
    asks = e2ee.SiblingAsks(1_000)
    assert asks.due(["a", "b"], 0) == ["a", "b"]
    asks.asked("a", 0, taken=2, spread=0.0)
    nexts = []
    now = 0
    for _ in range(5):
        asks.asked("b", now, taken=0, spread=0.0)
        now = asks.next_ms(["b"], now) or 0
        nexts.append(now)
    assert nexts == [1_000, 3_000, 7_000, 15_000, 31_000]
    assert asks.due(["a", "b"], 1_000) == ["a"]
    assert asks.next_ms(["a", "b"], 1_000) == 31_000
    for _ in range(20):
        asks.asked("b", now, taken=0, spread=0.0)
    assert asks.next_ms(["b"], now) == now + e2ee.KEY_REQUEST_MAX_BACKOFF_MS
    asks.held_more()
    assert asks.due(["a", "b"], now) == ["a", "b"]
    asks.asked("b", now, taken=0, spread=0.0)
    assert asks.next_ms(["b"], now) == now + 1_000  # the backoff starts over
    asks.keep(frozenset({"a"}))
    assert asks.due(["b"], now) == ["b"]  # forgotten: due at once if it comes back


def test_a_not_listed_refusal_is_not_counted_four_times_then_is() -> None:
    """SPEC §27.13.3: a NOT_LISTED refusal leaves the count where it was and waits the interval
    doubling per such refusal (the counted backoff untouched); past
    KEY_REQUEST_NOT_LISTED_DEFERRALS of them each counts, so a sender that says it forever is
    asked 4 times more before the session counts undecryptable, the fifth counted request at
    most 32 intervals and 8 ask bounds after it was seen held."""
    schedule = e2ee.KeyRequestSchedule.seen(0, interval_ms=1_000, spread=0.0)
    schedule.asked()
    schedule.ended(1_000, spread=0.0)  # one counted: the next waits 1 s
    now = 2_000
    for n in range(1, e2ee.KEY_REQUEST_NOT_LISTED_DEFERRALS + 1):
        schedule.asked()
        schedule.refused_not_listed(now, spread=0.0)
        assert (schedule.count, schedule.not_listed) == (1, n)
        now += 1_000 * 2 ** (n - 1)
        assert schedule.next_ms == now
    for n in range(2, e2ee.KEY_REQUEST_ATTEMPTS + 1):
        schedule.asked()
        schedule.refused_not_listed(now, spread=0.0)  # counted now, with the counted backoff
        assert schedule.undecryptable == (n >= e2ee.KEY_REQUEST_ATTEMPTS)
        now += 1_000 * 2 ** (n - 1)
        assert schedule.count == n and schedule.next_ms == now
    assert e2ee.last_counted_request_ms(2_000, 10_000, not_listed=4) == 144_000
    assert e2ee.last_counted_request_ms(2_000, 10_000, not_listed=9) == 144_000
    rng = random.Random(53)
    for ask_ms in (0, 10_000):
        for _ in range(300):
            refusals = set(rng.sample(range(9), 4))
            last = _requests_until_counted(refusals, rng, ask_ms)
            assert last <= e2ee.last_counted_request_ms(2_000, ask_ms, not_listed=4)


def test_a_fifth_counted_ask_refused_not_listed_never_shows_undecryptable() -> None:
    """SPEC §27.13.3: four requests end counted (timed out), then the fifth that would count is
    refused NOT_LISTED, and the one after it times out. The session is undecryptable from the
    end of its fifth counted request on, and never before: counted as they went, the fifth
    showed it undecryptable while it was out and not once refused (the node's count 1 -> 0),
    then again at the next ask."""
    schedule = e2ee.KeyRequestSchedule.seen(0, interval_ms=1_000, spread=0.0)
    shown: list[bool] = []
    outcomes = ["timeout"] * 4 + ["not_listed", "timeout", "timeout"]
    for outcome in outcomes:
        assert schedule.next_ms is not None
        now = schedule.next_ms
        schedule.asked()
        shown.append(schedule.undecryptable)  # while the request is out
        if outcome == "not_listed":
            schedule.refused_not_listed(now + 10, spread=0.0)
        else:
            schedule.ended(now + 10, spread=0.0)
        shown.append(schedule.undecryptable)  # once it ended
    assert shown == [False] * 11 + [True] * 3
    assert (schedule.count, schedule.not_listed) == (6, 1)


def _requests_until_counted(refused: set[int], rng: random.Random, ask_ms: int) -> int:
    """When the KEY_REQUEST_ATTEMPTS-th counted request goes, seen held at 0, each request
    lasting `ask_ms` and those numbered in `refused` refused NOT_LISTED, spreads at random."""
    schedule = e2ee.KeyRequestSchedule.seen(0, interval_ms=2_000, spread=rng.random())
    for n in range(100):
        assert schedule.next_ms is not None
        start = schedule.next_ms
        schedule.asked()
        if n in refused:
            schedule.refused_not_listed(start + ask_ms, spread=rng.random())
        else:
            schedule.ended(start + ask_ms, spread=rng.random())
        if schedule.undecryptable:
            return start
    raise AssertionError("never counted five")


def test_the_last_counted_request_is_bounded_whatever_the_spreads_and_timeouts() -> None:
    """SPEC §27.13.3: the KEY_REQUEST_ATTEMPTS-th request goes at most 17 intervals and 4 ask
    bounds (74 s by default) after the session is seen held, whatever the spreads, whether
    the requests are answered at once or time out; at least 8.5 intervals and 4 ask bounds."""
    bound = e2ee.last_counted_request_ms(2_000, 10_000)
    assert bound == 74_000
    rng = random.Random(27)
    for ask_ms in (0, 10_000):
        assert _schedule([0.0] * 5, ask_ms) == [
            2_000 + t + n * ask_ms for n, t in enumerate((0, 2_000, 6_000, 14_000, 30_000))
        ]
        for _ in range(1_000):
            last = _schedule([rng.random() for _ in range(e2ee.KEY_REQUEST_ATTEMPTS)], ask_ms)[-1]
            assert 17_000 + 4 * ask_ms < last <= bound - (10_000 - ask_ms) * 4


def test_homes_that_see_a_session_together_ask_its_sender_apart() -> None:
    """SPEC §27.13.3, #18: 50 homes see the group creator's session held at the same moment
    and its creator, loaded, lets every request time out (10 s). With no spread all 50 ask in
    the same millisecond every time; with waits counted from each request's start, the 2 to 8
    s backoffs ended inside the timeout and the 50 asked again together for 4 asks. With a
    spread drawn per wait counted from the end, no 2 s window holds more than two thirds of
    them from the fourth ask on, nor more than half from the KEY_REQUEST_ATTEMPTS-th."""
    rng = random.Random(18)
    asks = e2ee.KEY_REQUEST_ATTEMPTS + 2
    homes = [_schedule([rng.random() for _ in range(asks)], 10_000) for _ in range(50)]
    assert len({tuple(_schedule([0.0] * asks, 10_000)) for _ in homes}) == 1
    for ask in range(asks):
        times = sorted(home[ask] for home in homes)
        assert times[-1] - times[0] >= 800
        busiest = max(sum(1 for t in times if start <= t < start + 2_000) for start in times)
        if ask >= 3:
            assert busiest <= len(homes) * 2 // 3, (ask, busiest)
        if ask >= e2ee.KEY_REQUEST_ATTEMPTS - 1:
            assert busiest <= len(homes) // 2, (ask, busiest)


def test_a_requested_key_must_be_the_answering_devices_session() -> None:
    """SPEC §27.13.2: with `owner`, a forwarded key of another device's session is a
    KEY_MISMATCH (a member cannot pass another's session off as the sender's)."""
    me, sender, other = DeviceId(b"m" * 32), DeviceId(b"s" * 32), DeviceId(b"o" * 32)
    key = e2ee.ForwardedKey(
        room=RoomId(b"r" * 32),
        session_id=b"i" * 32,
        exported_key=b"k" * 100,
        first_index=0,
        sender_device=other,
        recipient_device=me,
    )
    e2ee.check_forwarded_key(key, recipient=me)
    with pytest.raises(KeyMismatch):
        e2ee.check_forwarded_key(key, recipient=me, owner=sender)
