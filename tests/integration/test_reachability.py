"""AutoNAT (SPEC §10.6) with real hosts in network namespaces: public hosts learn they are
public; a home behind a NAT router, and a host whose firewall drops inbound connections, learn
they are private (py-libp2p's own dial-back would have told both "public")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from hearthmesh.node.p2p.autonat import Reachability
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from tests.integration.netlab import NetLab, in_netns, require_netlab

pytestmark = pytest.mark.integration


@asynccontextmanager
async def host_in(stack: AsyncExitStack, ns: str, n: int) -> AsyncIterator[P2PHost]:
    config = HostConfig(
        identity_seed=bytes([n]) * 32,
        listen_addrs=["/ip4/0.0.0.0/tcp/4470"],
        autonat_confirmations=2,
    )
    with in_netns(ns):
        host = await stack.enter_async_context(P2PHost(config))
    yield host


async def wait_verdict(host: P2PHost) -> Reachability:
    while (verdict := await host.check_reachability()) is Reachability.UNKNOWN:  # noqa: ASYNC110
        await asyncio.sleep(0.2)  # no event: identify has not yet told who serves AutoNAT
    return verdict


async def test_autonat_tells_public_from_nat_and_firewall() -> None:
    require_netlab()
    with NetLab() as lab:
        names = [lab.public_host(1), lab.public_host(2), lab.public_host(3)]
        nat_ns, nat_ip = lab.home_behind_nat(1)
        wall_ns, _ = lab.firewalled_host(50)
        async with asyncio.timeout(14), AsyncExitStack() as stack:
            pubs = []
            for n, (ns, _) in enumerate(names, start=1):
                async with host_in(stack, ns, n) as host:
                    pubs.append(host)
            async with host_in(stack, nat_ns, 11) as home, host_in(stack, wall_ns, 12) as wall:
                assert home.listen_addrs[0].startswith(f"/ip4/{nat_ip}/tcp/4470/")
                for a in (pubs[1], pubs[2], home, wall):
                    assert await a.connect(pubs[0].listen_addrs[0]) == pubs[0].peer_id
                for a in (pubs[2], home, wall):
                    await a.connect(pubs[1].listen_addrs[0])
                verdicts = await asyncio.gather(*(wait_verdict(h) for h in (*pubs, home, wall)))
                public, private = Reachability.PUBLIC, Reachability.PRIVATE
                assert verdicts == [public, public, public, private, private]
                assert home.reachability is private and pubs[0].reachability is public
