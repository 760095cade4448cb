"""The fuzz targets (`tools/fuzz`, run with atheris by hand, never in CI) over the protocol
vectors' byte strings, whole and cut short: each decoder returns or raises its own decode
error (`RemoteProtocolError`), nothing else. Crashes the fuzzing found stay here as inputs."""

from __future__ import annotations

import pytest

from hearthmesh.tools.fuzz.seeds import vector_bytes
from hearthmesh.tools.fuzz.targets import TARGETS, check

SEEDS = sorted(vector_bytes())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_decoder_meets_every_vector_whole_and_cut_short_with_its_own_error(name: str) -> None:
    for data in SEEDS:
        check(name, data)
        check(name, data[: len(data) // 2])
