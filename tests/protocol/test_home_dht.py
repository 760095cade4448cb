"""Home record DHT rules (protocol/home_dht.py): key form, validation, newest-wins selection."""

from __future__ import annotations

import base64
import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.protocol.errors import (
    BadCertificate,
    BadSignature,
    ClockSkew,
    InvalidIdentifier,
    MalformedMessage,
    NotAuthorized,
    RemoteProtocolError,
    TooLarge,
)
from hearthmesh.protocol.hlc import MAX_DRIFT_MS
from hearthmesh.protocol.home_dht import (
    HOME_DHT_NAMESPACE,
    MAX_FIND_NODE_KEY_BYTES,
    home_record_key,
    select_home_record,
    validate_home_record,
)
from hearthmesh.protocol.home_record import (
    MAX_HOME_RECORD_BYTES,
    HomeRecord,
    encode_home_record,
    issue_home_record,
)
from hearthmesh.protocol.identity import (
    DeviceId,
    KeyPair,
    UserId,
    issue_certificate,
    keypair_from_seed,
)

NOW_MS = 1_700_000_000_000
USER, DEVICE, OTHER = (keypair_from_seed(bytes([i]) * 32) for i in (1, 2, 3))
KEY = home_record_key(UserId(USER.public))


def record(
    user: KeyPair = USER,
    *,
    issued_ms: int = NOW_MS,
    homes: tuple[str, ...] = ("12D3KooWHome",),
    cert_user: KeyPair | None = None,
) -> HomeRecord:
    cert = issue_certificate(cert_user or user, DeviceId(DEVICE.public), created_ms=NOW_MS - 1)
    return issue_home_record(
        user,
        issued_ms=issued_ms,
        homes=homes,
        addrs=(f"/ip4/127.0.0.1/tcp/4470/p2p/{homes[0]}",),
        devices=(cert,),
    )


def encoded(user: KeyPair = USER, **kwargs: object) -> bytes:
    return encode_home_record(record(user, **kwargs))  # type: ignore[arg-type]


# ---- key ----------------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_key_is_the_home_namespace_and_the_user_id_in_unpadded_base64url() -> None:
    assert HOME_DHT_NAMESPACE == "home"
    assert "/home/" + b64(USER.public) == KEY
    assert len(KEY.encode()) == len("/home/") + 43 <= MAX_FIND_NODE_KEY_BYTES
    assert home_record_key(UserId(OTHER.public)) != KEY
    assert home_record_key(UserId(b"\xff" * 32)) == "/home/" + "_" * 42 + "8"


def test_key_of_a_wrong_length_user_id_is_refused() -> None:
    with pytest.raises(InvalidIdentifier):
        home_record_key(UserId(b"\x01" * 31))


# ---- validate -----------------------------------------------------------------------------------


def test_valid_record_under_its_own_key_is_accepted() -> None:
    got = validate_home_record(KEY, encoded(), now_ms=NOW_MS)
    assert got == record()


@pytest.mark.parametrize(
    "key",
    [
        "/home/" + b64(USER.public) + "=",  # one spelling per user: no padding
        "/home/" + base64.b64encode(b"\xff" * 32).rstrip(b"=").decode(),  # not url-safe
        "/home/" + "_" * 42 + "_",  # non-zero trailing bits: another spelling of 0xff...
        "/home/" + b64(USER.public)[:-1],
        "/home/" + b64(USER.public) + "A",
        "/home/" + b64(USER.public)[:-1] + "é",
        "/home/" + USER.public.hex(),
        "/pk/" + b64(USER.public),
        "home/" + b64(USER.public),
        b64(USER.public),
        "",
    ],
)
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidIdentifier):
        validate_home_record(key, encoded(), now_ms=NOW_MS)


def test_a_valid_record_under_another_users_key_is_refused() -> None:
    with pytest.raises(NotAuthorized):
        validate_home_record(home_record_key(UserId(OTHER.public)), encoded(), now_ms=NOW_MS)


def test_forged_record_is_refused() -> None:
    honest = record()
    forged = dataclasses.replace(honest, homes=("12D3KooWMallory",))
    with pytest.raises(BadSignature):
        validate_home_record(KEY, encode_home_record(forged), now_ms=NOW_MS)


def test_record_signed_by_someone_else_for_this_user_is_refused() -> None:
    impostor = dataclasses.replace(record(OTHER), user=UserId(USER.public))
    with pytest.raises(BadSignature):
        validate_home_record(KEY, encode_home_record(impostor), now_ms=NOW_MS)


def test_foreign_device_certificate_is_refused() -> None:
    with pytest.raises(BadCertificate):
        validate_home_record(KEY, encoded(cert_user=OTHER), now_ms=NOW_MS)


def test_issue_time_may_lead_the_clock_by_max_drift_and_no_more() -> None:
    validate_home_record(KEY, encoded(issued_ms=NOW_MS + MAX_DRIFT_MS), now_ms=NOW_MS)
    with pytest.raises(ClockSkew):
        validate_home_record(KEY, encoded(issued_ms=NOW_MS + MAX_DRIFT_MS + 1), now_ms=NOW_MS)


@pytest.mark.parametrize("value", [b"", b"\x00", b"not cbor at all", b"\x80"])
def test_malformed_values_are_refused(value: bytes) -> None:
    with pytest.raises(MalformedMessage):
        validate_home_record(KEY, value, now_ms=NOW_MS)


def test_oversized_value_is_refused() -> None:
    with pytest.raises(TooLarge):
        validate_home_record(KEY, b"\x00" * (MAX_HOME_RECORD_BYTES + 1), now_ms=NOW_MS)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_remote_protocol_errors(value: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        validate_home_record(KEY, value, now_ms=NOW_MS)


# ---- select -------------------------------------------------------------------------------------


def test_newest_issued_ms_wins_in_any_position() -> None:
    old, mid, new = (encoded(issued_ms=NOW_MS + d) for d in (0, 1, 2))
    assert select_home_record(KEY, [old, mid, new]) == 2
    assert select_home_record(KEY, [new, old, mid]) == 0
    assert select_home_record(KEY, [mid, new, old]) == 1
    assert select_home_record(KEY, [old]) == 0


def test_equal_issue_times_pick_the_same_record_whatever_the_order() -> None:
    a = encoded(homes=("12D3KooWAlpha",))
    b = encoded(homes=("12D3KooWBeta",))
    winner = max(a, b)
    assert [a, b][select_home_record(KEY, [a, b])] == winner
    assert [b, a][select_home_record(KEY, [b, a])] == winner
    assert select_home_record(KEY, [a, a]) == 0


def test_values_that_are_not_records_for_the_key_never_win() -> None:
    mine = encoded()
    others = encoded(OTHER, issued_ms=NOW_MS + 10)
    assert select_home_record(KEY, [b"junk", others, mine]) == 2
    with pytest.raises(MalformedMessage):
        select_home_record(KEY, [b"junk", others])
    with pytest.raises(MalformedMessage):
        select_home_record(KEY, [])
