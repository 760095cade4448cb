"""One scripted case of the black-box suite (SPEC §20.2). State: none."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hearthmesh.protocol.capabilities import Level

from ..session import Session

__all__ = ["Case"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One scripted case: `run` returns the node's answer, which must equal `expected`; a
    `hostile` case runs under a fresh peer id and is followed by a liveness probe."""

    name: str
    section: str
    expected: str
    run: Callable[[Session], Awaitable[str]]
    hostile: bool = False
    needs_api: bool = False
    level: Level = Level.CORE
    """The capability level whose sections the case tests (SPEC §20.5)."""
