"""The black-box suite (SPEC §20.2): scripted cases against a running node, over the wire only.

`run_suite(address)` dials the node at `address` as a stranger (a `HostilePeer` of issue #12,
with a fresh user), learns the node's user from its hello answer, and runs every case of
`CASES` in order: each sends what SPEC says a peer may send (or must not) and compares the
node's answer with the one SPEC requires. After each hostile case a clean peer checks that
the node still answers a hello: one prober for the run, which redials when its connection is
gone (a fresh peer per case cost ~60 ms of CPU each, 18 times a run). Another implementation
is tested by pointing this at it. The node is tested by the capability levels it advertises
on `/hearthmesh/caps/0` (SPEC §20.5; `core` when it does not serve it), or by the levels the
caller names: a case of another level is not run and is listed under `not_advertised`, never
counted as passed.

State owned here: one run's report; the run's state is its `Session` (session.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hearthmesh.node.p2p.errors import P2PError
from hearthmesh.protocol.capabilities import (
    CAPS_PROTOCOL,
    Level,
    decode_caps_answer,
    encode_caps_request,
)
from hearthmesh.protocol.errors import HearthError
from hearthmesh.tools.client import ApiClient, ApiRefused
from hearthmesh.tools.hostile.catalogue import Target, probe
from hearthmesh.tools.hostile.peer import HostilePeer

from .cases import CASES, Case
from .session import DELIVERY_WAIT_S, Session

__all__ = ["BASELINE", "CaseResult", "SuiteReport", "advertised_levels", "run_suite"]

BASELINE: Final = Path(__file__).with_name("baseline.jsonl")
"""Our own node's results over the wire and the API, one JSON line per case without timings
(`CaseResult.as_baseline`): what another implementation's run compares with, kept equal to a
fresh run by tests/integration/test_conformance.py."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseResult:
    name: str
    section: str
    expected: str
    got: str
    target_up: bool | None
    """After a hostile case: the node still answered a clean peer's hello."""
    seconds: float
    level: str = str(Level.CORE)

    @property
    def passed(self) -> bool:
        return self.got == self.expected and self.target_up is not False

    def as_json(self) -> dict[str, object]:
        return {**self.as_baseline(), "seconds": round(self.seconds, 3)}

    def as_baseline(self) -> dict[str, object]:
        """The result without its timing: a line of the committed baseline (BASELINE)."""
        return {
            "case": self.name,
            "section": self.section,
            "level": self.level,
            "passed": self.passed,
            "expected": self.expected,
            "got": self.got,
            "target_up": self.target_up,
        }


@dataclass(slots=True, kw_only=True)
class SuiteReport:
    target: str
    seed: int
    """Replays the run's random choices (`run_suite`)."""
    stranger: str = ""
    """The hex user id the run delivered as (what to look up in the node's logs)."""
    results: list[CaseResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Cases not run: they need the client API and none was given."""
    advertised: list[str] | None = None
    """The levels the node advertised (None: it does not serve `/hearthmesh/caps/0`)."""
    tested: list[str] = field(default_factory=list)
    """The levels whose cases ran."""
    not_advertised: list[str] = field(default_factory=list)
    """Cases not run: their level was not tested."""

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def as_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "seed": self.seed,
            "stranger": self.stranger,
            "passed": self.passed,
            "cases": len(self.results),
            "failed": [r.name for r in self.results if not r.passed],
            "skipped": self.skipped,
            "levels": {
                "advertised": self.advertised,
                "tested": self.tested,
                "passed": [level for level in self.tested if self._level_passed(level)],
            },
            "not_advertised": self.not_advertised,
            "results": [r.as_json() for r in self.results],
        }

    def _level_passed(self, level: str) -> bool:
        ran = [r for r in self.results if r.level == level]
        return bool(ran) and all(r.passed for r in ran)


async def _still_up(session: Session, prober: HostilePeer) -> bool:
    """A clean peer's hello is answered (SPEC §13.3): the node survived the case. Unanswered
    over the prober's kept connection, it is asked again over a fresh one: the node may have
    closed the old one and the prober not yet seen it, which a fresh peer never met."""
    target = Target(peer_id=session.peer_id, address=session.address, user=session.user)
    if await probe(prober, target):
        return True
    with contextlib.suppress(P2PError):
        await prober.host.disconnect(session.peer_id)
    return await probe(prober, target)


async def _run_case(case: Case, session: Session) -> str:
    """A hostile case runs as the same user under a fresh peer id: the charges one case
    earns (SPEC §11.6) must not hide the answer to the next."""
    try:
        if not case.hostile:
            return await case.run(session)
        async with session.kit.rotated() as fresh:
            await fresh.connect(session.address)
            return await case.run(
                Session(
                    kit=fresh,
                    address=session.address,
                    peer_id=session.peer_id,
                    user=session.user,
                    delivered=session.delivered,
                    group=session.group,
                    api=session.api,
                    wait_s=session.wait_s,
                )
            )
    except (HearthError, IndexError) as exc:  # cut off, or an earlier case left nothing
        # An API refusal names its status and code, so a rare one is told apart in a report.
        detail = f":{exc.status}:{exc.error_code}" if isinstance(exc, ApiRefused) else ""
        return f"cut-short:{type(exc).__name__}{detail}"


async def advertised_levels(session: Session) -> frozenset[Level] | None:
    """The levels the node answers on `/hearthmesh/caps/0` (None: no such protocol there)."""
    answer = await session.ask(CAPS_PROTOCOL, encode_caps_request(), decode_caps_answer)
    return None if isinstance(answer, str) else answer


async def run_suite(
    address: str,
    *,
    api: ApiClient | None = None,
    cases: tuple[Case, ...] = CASES,
    levels: frozenset[Level] | None = None,
    seed: int | None = None,
    wait_s: float = DELIVERY_WAIT_S,
) -> SuiteReport:
    """Every case against the node at `address` (a multiaddr ending in /p2p/<peer id>), and
    its client API when `api` is given, of `levels` (default: those the node advertises).

    Every random choice of the run (the strangers' keys, rooms, nonces, digests) comes from
    `seed` (a fresh one when None; the report names it): the same seed against a fresh node
    replays the same cases. `wait_s` bounds each case's wait for what it checks the node
    sends or shows (`Session.wait_s`)."""
    if seed is None:
        seed = int.from_bytes(os.urandom(4))
    report = SuiteReport(target=address, seed=seed)
    async with HostilePeer(rng=random.Random(seed).randbytes) as kit, HostilePeer() as prober:
        report.stranger = bytes(kit.user_id).hex()
        try:
            peer_id = await kit.connect(address)
        except P2PError as exc:
            report.results.append(
                CaseResult(
                    name="connect",
                    section="§10",
                    expected="connected",
                    got=f"failed:{type(exc).__name__}",
                    target_up=False,
                    seconds=0.0,
                )
            )
            return report
        session = Session(kit=kit, address=address, peer_id=peer_id, api=api, wait_s=wait_s)
        advertised = await advertised_levels(session)
        report.advertised = None if advertised is None else sorted(advertised)
        tested = levels or advertised or frozenset({Level.CORE})
        report.tested = sorted(tested)
        for case in cases:
            if case.level not in tested:
                report.not_advertised.append(case.name)
                continue
            if case.needs_api and api is None:
                report.skipped.append(case.name)
                continue
            began = time.perf_counter()
            got = await _run_case(case, session)
            up = await _still_up(session, prober) if case.hostile else None
            report.results.append(
                CaseResult(
                    name=case.name,
                    section=case.section,
                    expected=case.expected,
                    got=got,
                    target_up=up,
                    seconds=time.perf_counter() - began,
                    level=case.level,
                )
            )
    return report
