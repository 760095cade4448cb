"""UPnP (SPEC §10.12): a home behind a router that is a UPnP gateway (miniupnpd in the router's
namespace) has its listen port forwarded, puts the mapped address first, is found public by
AutoNAT, and is dialled there directly by a stranger; its stop removes the mapping."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from hearthmesh.tools.netlab import PUBLIC_NET
from tests.integration.netlab import NetLab, require_netlab, start_node

from .conftest import wait_until

pytestmark = pytest.mark.integration


def forwarded_ports(router_ns: str) -> str:
    """The rules miniupnpd holds in the router's NAT (one per mapping)."""
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            router_ns,
            "nft",
            "list",
            "chain",
            "inet",
            "nat",
            "prerouting_miniupnpd",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout


async def test_a_home_behind_a_upnp_gateway_is_forwarded_its_port_and_is_public(
    tmp_path: Path,
) -> None:
    require_netlab()
    if shutil.which("miniupnpd") is None:
        pytest.skip("miniupnpd is not installed (make netlab installs it)")
    with NetLab() as lab:
        public_ns, _ = lab.public_host(1)
        stranger_ns, _ = lab.public_host(2)
        home_ns, _ = lab.home_behind_nat(1, upnp=True)
        mapped = f"/ip4/{PUBLIC_NET}.101/tcp/4470/"
        async with asyncio.timeout(60), AsyncExitStack() as stack:  # ~5 s on a quiet machine
            public = await start_node(stack, public_ns, tmp_path / "public")
            async with AsyncExitStack() as home_stack:
                home = await start_node(
                    home_stack, home_ns, tmp_path / "home", public.listen_addrs[0], upnp=True
                )
                await wait_until(lambda: home.listen_addrs[0].startswith(mapped), poll_s=0.1)
                assert "dport 4470" in forwarded_ports(f"{lab.prefix}rtr1")
                await wait_until(lambda: home.reachability == "public", poll_s=0.1)
                # It may have reserved on the relay while private: the direct address leads now.
                await wait_until(lambda: home.listen_addrs[0].startswith(mapped))

                stranger = await start_node(stack, stranger_ns, tmp_path / "stranger")
                assert await stranger.connect(home.listen_addrs[0]) == home.peer_id
                assert stranger.peer_paths()[home.peer_id] == ["direct"]
            assert "dport 4470" not in forwarded_ports(f"{lab.prefix}rtr1")
