"""A peer's ERROR frame becomes the error its code names (protocol.errors.refusal)."""

from __future__ import annotations

from hearthmesh.protocol.errors import (
    ErrorCode,
    KeyMismatch,
    MediaTampered,
    RemoteProtocolError,
    SasMismatch,
    refusal,
)


def test_every_peer_fault_code_comes_back_as_its_own_class() -> None:
    for code, cls in (
        (ErrorCode.MEDIA_TAMPERED, MediaTampered),
        (ErrorCode.SAS_MISMATCH, SasMismatch),
        (ErrorCode.KEY_MISMATCH, KeyMismatch),
    ):
        error = refusal(code, "refused")
        assert type(error) is cls and str(error) == "refused"


def test_a_code_that_names_no_peer_fault_is_a_plain_remote_error() -> None:
    for code in (ErrorCode.STORAGE, ErrorCode.VERIFICATION_CANCELLED, 9_999):
        assert type(refusal(code, "x")) is RemoteProtocolError
