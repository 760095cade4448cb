"""Homes behind symmetric NATs (SPEC §10.16): routers that map every outbound TCP connection and
UDP flow to a random port defeat both DCUtR's punch (§10.9) and WebRTC (§10.11); the homes stay
on the relayed path, which carries guaranteed delivery, and `hearthmesh status` says so. Real
nodes in network namespaces; `hearthmesh status` as a user runs it."""

from __future__ import annotations

import asyncio
import re
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from hearthmesh.node.api import ApiConfig, ApiServer
from hearthmesh.node.node import Node
from hearthmesh.tools.node_process import hearthmesh_script
from tests.integration.netlab import NetLab, require_netlab
from tests.integration.test_hole_punch import chat, natted_pair
from tests.integration.test_stun import FAILING_UPGRADE_MS

from .conftest import wait_until

pytestmark = pytest.mark.integration

TOKEN = "symmetric-nat-test-token-0123"


async def status_text(node: Node, token_file: Path) -> str:
    """What `hearthmesh status` prints for `node` (its API on this namespace's loopback)."""
    async with ApiServer(node, ApiConfig(token=TOKEN, port=0)) as api:
        where = ("--api", api.url.removeprefix("http://"), "--token-file", str(token_file))
        shown = await asyncio.to_thread(
            subprocess.run,
            [hearthmesh_script(), "status", *where],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


@pytest.mark.slow
async def test_homes_behind_symmetric_nats_stay_relayed_deliver_and_status_says_why(
    tmp_path: Path,
) -> None:
    require_netlab()
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN)
    with NetLab() as lab:
        async with asyncio.timeout(120), AsyncExitStack() as stack:
            relay, alice, bob = await natted_pair(
                stack,
                lab,
                tmp_path,
                random_ports=True,
                webrtc_upgrade_timeout_ms=FAILING_UPGRADE_MS,
            )
            await chat(alice, bob)
            # The lower peer id offers WebRTC once the punch failed (SPEC §10.11); it counts
            # both kinds of upgrade. Each try ends within its bound (3 s, 5 s): wait for both.
            offerer, other = sorted((alice, bob), key=lambda home: home.peer_id)
            await wait_until(
                lambda: all(offerer.hole_punches().tried.get(t) for t in ("tcp", "webrtc")),
                poll_s=0.2,
            )
            for home in (alice, bob):
                assert home.hole_punches().direct == {}
                assert home.reachability == "private"
            # Relayed: a loaded machine may have closed the circuit's connection a moment
            # (its ping went unanswered) and the next send dials it again.
            await wait_until(lambda: offerer.peer_paths().get(other.peer_id) == [relay.peer_id])
            await chat(alice, bob)  # still delivered, every message acked, on the relayed path
            await chat(bob, alice)
            shown = status_text(offerer, token_file)
            lines = (await shown).splitlines()
            assert f"reachable: private (relays: {relay.peer_id})" in lines
            assert f"  {other.peer_id}: relayed via {relay.peer_id}" in lines
            for transport in ("tcp", "webrtc"):  # tries may go on meanwhile (SPEC §10.11)
                upgrades = rf"upgrades:  {transport}: 0 of [1-9][0-9]* relayed connections went"
                assert any(re.fullmatch(upgrades + " direct", line) for line in lines), lines
