"""SAS verification (SPEC §29), driven synchronously: two machines, or a man in the middle."""

from __future__ import annotations

import pytest
import vodozemac

from hearthmesh.protocol.errors import (
    ErrorCode,
    LocalProtocolError,
    MalformedMessage,
    SasMismatch,
    VerificationCancelled,
)
from hearthmesh.protocol.verification import (
    EMOJI,
    Accept,
    KeyShare,
    Mac,
    SasVerification,
    VerifyState,
    decode_verify_frame,
    encode_verify_frame,
)

FLOW = b"f" * 16
ALICE = (b"A" * 32, b"a" * 32)
BOB = (b"B" * 32, b"b" * 32)


def _pair(flow: bytes = FLOW) -> tuple[SasVerification, SasVerification]:
    a = SasVerification(
        sas=vodozemac.Sas(), flow=flow, user=ALICE[0], device=ALICE[1], initiator=True
    )
    b = SasVerification(sas=vodozemac.Sas(), flow=flow, user=BOB[0], device=BOB[1], initiator=False)
    return a, b


def drive(a: SasVerification, b: SasVerification) -> None:
    """Pass frames both ways until neither side has anything to send."""
    while True:
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not to_b and not to_a:
            return
        for frame in to_b:
            b.receive(frame)
        for frame in to_a:
            a.receive(frame)


def test_both_sides_show_the_same_seven_emoji_and_decimals_then_verify() -> None:
    a, b = _pair()
    drive(a, b)
    assert a.state is b.state is VerifyState.SHOWING
    assert a.shown is not None and a.shown == b.shown
    assert len(a.shown.emoji) == 7 and all(0 <= i < len(EMOJI) == 64 for i in a.shown.emoji)
    assert all(1000 <= d <= 9191 for d in a.shown.decimals)
    assert (a.peer_user, a.peer_device) == BOB and (b.peer_user, b.peer_device) == ALICE
    a.confirm()
    drive(a, b)
    assert (a.state, a.verified) == (VerifyState.CONFIRMED, False)  # bob has not confirmed
    b.confirm()
    drive(a, b)
    assert a.verified and b.verified


def test_a_man_in_the_middle_gives_different_strings_and_his_relayed_mac_fails() -> None:
    a, b = _pair()
    # mallory answers alice as the responder and starts with bob as the initiator, relaying
    # each side's identity keys, with her own SAS keys on both sides
    to_alice = SasVerification(
        sas=vodozemac.Sas(), flow=FLOW, user=BOB[0], device=BOB[1], initiator=False
    )
    to_bob = SasVerification(
        sas=vodozemac.Sas(), flow=FLOW, user=ALICE[0], device=ALICE[1], initiator=True
    )
    drive(a, to_alice)
    drive(to_bob, b)
    assert a.shown is not None and b.shown is not None
    assert a.shown != b.shown  # the users see different strings: they cancel
    # if the users confirmed anyway, a MAC relayed across is refused and the flow cancelled
    a.confirm()
    [alice_mac] = a.data_to_send()
    with pytest.raises(SasMismatch) as refused:
        b.receive(alice_mac)
    assert refused.value.code == ErrorCode.SAS_MISMATCH
    assert b.state is VerifyState.CANCELLED and not b.verified
    [cancel] = b.data_to_send()
    assert decode_verify_frame(cancel).code == ErrorCode.SAS_MISMATCH  # type: ignore[union-attr]


def test_a_key_that_does_not_match_the_commitment_is_sas_mismatch() -> None:
    a, b = _pair()
    a.receive(_only(b, a.data_to_send()))  # START -> ACCEPT
    b.receive(_only(a, []))  # alice's KEY
    [bob_key] = b.data_to_send()
    swapped = encode_verify_frame(KeyShare(flow=FLOW, key=vodozemac.Sas().public_key.to_bytes()))
    assert swapped != bob_key
    with pytest.raises(SasMismatch):
        a.receive(swapped)
    assert a.state is VerifyState.CANCELLED and a.shown is None


def _only(receiver: SasVerification, frames: list[bytes]) -> bytes:
    """Feed `frames` to `receiver` and return the one frame it answers... or the sender's
    one pending frame when `frames` is empty."""
    for frame in frames:
        receiver.receive(frame)
    [answer] = receiver.data_to_send()
    return answer


def test_cancel_from_either_side_ends_the_flow_with_its_code() -> None:
    a, b = _pair()
    drive(a, b)
    b.cancel(ErrorCode.VERIFICATION_CANCELLED, "user said no")
    [cancel] = b.data_to_send()
    with pytest.raises(VerificationCancelled):
        a.receive(cancel)
    assert a.state is VerifyState.CANCELLED and a.cancel_code == ErrorCode.VERIFICATION_CANCELLED
    with pytest.raises(LocalProtocolError):
        a.confirm()
    with pytest.raises(MalformedMessage):
        a.receive(cancel)  # nothing after the end


def test_frames_out_of_order_or_of_another_flow_cancel_the_flow() -> None:
    a, _ = _pair()
    [start] = a.data_to_send()
    with pytest.raises(MalformedMessage):
        a.receive(encode_verify_frame(Mac(flow=FLOW, mac="x")))  # before any key
    assert a.state is VerifyState.CANCELLED
    other = encode_verify_frame(
        Accept(flow=b"g" * 16, user=BOB[0], device=BOB[1], commitment=bytes(32))
    )
    _, b2 = _pair()
    b2.receive(start)
    with pytest.raises(MalformedMessage):
        b2.receive(other)
    assert b2.state is VerifyState.CANCELLED
