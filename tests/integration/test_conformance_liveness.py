"""The black-box suite's liveness probe (tools/conformance/suite.py): one clean peer serves a
whole run, and still tells a node that went on answering from one that stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.hello import HELLO_PROTOCOL
from hearthmesh.tools.conformance.cases import Case
from hearthmesh.tools.conformance.session import Session
from hearthmesh.tools.conformance.suite import run_suite

from .api_helpers import home

pytestmark = pytest.mark.integration


async def test_the_one_prober_redials_and_asks_afresh_after_every_hostile_case(
    tmp_path: Path,
) -> None:
    """The first probe connects the prober. After a case in which the node hung up on every
    peer (the prober too), the prober finds it up (over the node's dial back, or its own);
    after a case in which the node stopped answering hellos, the same prober finds it down."""
    async with asyncio.timeout(60), home(tmp_path / "node") as h:

        async def nothing(session: Session) -> str:
            return "nothing"

        async def hang_up(session: Session) -> str:
            for peer in h.node.connected_peers():
                await h.node._host.disconnect(peer)
            return "hung-up"

        async def unanswered(stream: FrameStream) -> None:
            await stream.reset()

        async def go_silent(session: Session) -> str:
            h.node._host.set_stream_handler(HELLO_PROTOCOL, unanswered)
            return "silent"

        cases = tuple(
            Case(name=run.__name__, section="§20.2", expected=expected, run=run, hostile=True)
            for run, expected in ((nothing, "nothing"), (hang_up, "hung-up"), (go_silent, "silent"))
        )
        report = await run_suite(h.node.listen_addrs[0], cases=cases)
    assert [(r.name, r.got, r.target_up) for r in report.results] == [
        ("nothing", "nothing", True),
        ("hang_up", "hung-up", True),
        ("go_silent", "silent", False),
    ], report.as_json()
