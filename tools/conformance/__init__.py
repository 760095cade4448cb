"""hearthmesh.tools.conformance: vectors, the black-box suite and the simulator (SPEC §20)."""

from __future__ import annotations

__all__: list[str] = []
