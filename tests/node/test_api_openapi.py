"""The OpenAPI document's id patterns match exactly what the decoders accept (SPEC §15.1.1):
issue #12 found a user-id pattern that admitted ids the server refused."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hearthmesh.node.api.openapi import openapi_document
from hearthmesh.protocol.errors import InvalidIdentifier
from hearthmesh.protocol.identity import (
    DeviceId,
    UserId,
    decode_device_id,
    decode_user_id,
    device_id_text,
    user_id_text,
)

PATHS: dict[str, Any] = openapi_document("test")["paths"]
USER_PATTERN = re.compile(PATHS["/v1/users/{user_id}"]["get"]["parameters"][0]["schema"]["pattern"])
DEVICE_PATTERN = re.compile(
    PATHS["/v1/devices/{device_id}"]["delete"]["parameters"][0]["schema"]["pattern"]
)


def _accepts(decode: Any, text: str) -> bool:
    try:
        decode(text)
    except InvalidIdentifier:
        return False
    return True


@given(st.from_regex(r"\A[ud][a-z2-7]{52}\Z") | st.text(max_size=60))
def test_id_patterns_admit_exactly_the_ids_the_server_decodes(text: str) -> None:
    assert bool(USER_PATTERN.fullmatch(text)) == _accepts(decode_user_id, text)
    assert bool(DEVICE_PATTERN.fullmatch(text)) == _accepts(decode_device_id, text)


@given(st.binary(min_size=32, max_size=32))
def test_every_real_id_matches(raw: bytes) -> None:
    assert USER_PATTERN.fullmatch(user_id_text(UserId(raw)))
    assert DEVICE_PATTERN.fullmatch(device_id_text(DeviceId(raw)))
