"""Pairing codes and link messages of SPEC §22."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.errors import (
    InvalidIdentifier,
    MalformedMessage,
    NotAuthorized,
    RemoteProtocolError,
)
from hearthmesh.protocol.linking import (
    MAX_HOME_ADDRS,
    LinkAnswer,
    LinkRequest,
    Readdress,
    check_link_proof,
    decode_link_answer,
    decode_link_code,
    decode_link_message,
    decode_link_request,
    encode_link_answer,
    encode_link_code,
    encode_link_request,
    encode_readdress,
    link_proof,
    new_link_code,
    short_code,
)

ADDRESS = "/ip4/127.0.0.1/tcp/4470/p2p/12D3KooWExample"
PEER = "12D3KooWExample"


def test_code_round_trips_and_expires_after_ttl() -> None:
    offer = new_link_code(lambda n: b"\x07" * n, address=ADDRESS, now_ms=1000, ttl_ms=500)
    decoded = decode_link_code(encode_link_code(offer))
    assert decoded == offer
    assert decoded.expires_ms == 1500
    assert len(short_code(offer)) == 8


@pytest.mark.parametrize("text", ["", "hmlink0-", "hmlink0-!!!!", "hmlink1-aaaa", "x" * 2000])
def test_damaged_codes_are_invalid(text: str) -> None:
    with pytest.raises(InvalidIdentifier):
        decode_link_code(text)


def test_proof_binds_the_secret_and_both_keys() -> None:
    secret, device, node = b"s" * 16, b"d" * 32, b"n" * 32
    request = LinkRequest(
        device=device,
        node_key=node,
        addrs=(ADDRESS,),
        proof=link_proof(secret, device=device, node_key=node),
    )
    check_link_proof(secret, request)
    assert decode_link_request(encode_link_request(request)) == request
    with pytest.raises(NotAuthorized):
        check_link_proof(b"t" * 16, request)
    swapped = LinkRequest(device=b"e" * 32, node_key=node, addrs=(), proof=request.proof)
    with pytest.raises(NotAuthorized):
        check_link_proof(secret, swapped)


def test_a_readdress_gives_only_the_senders_own_addresses_and_at_most_eight() -> None:
    """SPEC §10.10: a linked home cannot list addresses of another node in its user's record."""
    own = Readdress(addrs=(f"/ip4/10.16.0.1/tcp/4470/p2p/R/p2p-circuit/p2p/{PEER}",))
    assert decode_link_message(encode_readdress(own), sender=PEER) == own
    with pytest.raises(NotAuthorized):
        decode_link_message(encode_readdress(own), sender="12D3KooWOther")
    many = Readdress(addrs=tuple(f"/ip4/10.0.0.{i}/tcp/1/p2p/{PEER}" for i in range(9)))
    assert len(many.addrs) > MAX_HOME_ADDRS
    with pytest.raises(MalformedMessage):
        decode_link_message(encode_readdress(many), sender=PEER)
    request = LinkRequest(device=b"d" * 32, node_key=b"n" * 32, addrs=(), proof=b"p" * 32)
    assert decode_link_message(encode_link_request(request), sender=PEER) == request


def test_answer_round_trips() -> None:
    answer = LinkAnswer(certificate=b"c", home_record=b"h")
    assert decode_link_answer(encode_link_answer(answer)) == answer


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_link_request(data)
    with contextlib.suppress(RemoteProtocolError):
        decode_link_answer(data)


@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_invalid_identifier(text: str) -> None:
    with contextlib.suppress(InvalidIdentifier):
        decode_link_code(text)
