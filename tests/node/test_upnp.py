"""Which listen ports a node asks its gateway to forward (node/p2p/upnp.py, SPEC §10.12)."""

from __future__ import annotations

from hearthmesh.node.p2p.upnp import mappings_for


def test_each_tcp_and_quic_port_is_mapped_once_and_loopback_circuits_and_ipv6_are_not() -> None:
    assert mappings_for(
        [
            "/ip4/0.0.0.0/tcp/4470",
            "/ip4/192.168.1.2/tcp/4470/p2p/12D3KooWA",
            "/ip4/0.0.0.0/udp/4470/quic-v1",
            "/ip4/127.0.0.1/tcp/4471",
            "/ip6/::/tcp/4472",
            "/ip4/45.16.0.1/tcp/4470/p2p/R/p2p-circuit/p2p/12D3KooWA",
            "/ip4/0.0.0.0/udp/4473",
        ]
    ) == [(4470, "TCP"), (4470, "UDP")]
