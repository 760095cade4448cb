"""Our advertised addresses kept while they stay the same (node/p2p/kept_addrs.py), on a real
host listening on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.peerstore import env_to_send_in_RPC

from hearthmesh.node.p2p.host import HostConfig, P2PHost

pytestmark = pytest.mark.integration

MAPPED = "/ip4/203.0.113.7/tcp/4001"


async def test_the_addresses_are_read_once_and_again_when_a_port_mapping_changes_them() -> None:
    async with asyncio.timeout(10), P2PHost(HostConfig(identity_seed=b"\x01" * 32)) as a:
        listening = list(a.listen_addrs)  # before the mapping below adds one

        async def addresses() -> tuple[list[list[str]], int, list[str], list[str], list[str]]:
            host = a._require_host()
            asked: list[int] = []
            transport = host.get_transport_addrs

            def counted() -> list[object]:
                asked.append(1)
                return list(transport())

            host.get_transport_addrs = counted  # type: ignore[method-assign]
            host.get_addrs()
            before = len(asked)
            # As pubsub asks: for each gossip message a node sends, and its heartbeats.
            answers = [[str(x) for x in host.get_addrs()] for _ in range(20)]
            record, _ = env_to_send_in_RPC(host)
            kept_asks = len(asked) - before
            a._report_mapped([MAPPED])
            mapped = [str(x) for x in host.get_addrs()]
            mapped_record, _ = env_to_send_in_RPC(host)
            signed = consume_envelope(record, "libp2p-peer-record")[1]
            signed_mapped = consume_envelope(mapped_record, "libp2p-peer-record")[1]
            return (
                answers,
                kept_asks,
                mapped,
                [str(x) for x in signed.addrs],
                [str(x) for x in signed_mapped.addrs],
            )

        answers, kept_asks, mapped, recorded, recorded_mapped = await a._bridge.run(addresses)
        assert answers == [listening] * 20
        assert kept_asks == 0  # not one read of the sockets while nothing changed
        assert mapped == [f"{MAPPED}/p2p/{a.peer_id}", *listening]
        assert recorded == listening  # the signed peer record pubsub attaches says the same
        assert recorded_mapped == mapped
