"""`node/p2p/addresses.py`: an unspecified listen address becomes one per interface; whether
only this machine can dial a list of addresses."""

from __future__ import annotations

import psutil  # type: ignore[import-untyped]
import pytest

from hearthmesh.node.p2p.addresses import (
    dialable_addrs,
    expand_unspecified,
    interface_ipv4s,
    loopback_only,
)

PEER = "/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"


def test_any_address_is_expanded_per_interface_in_order_and_others_kept() -> None:
    addrs = [f"/ip4/0.0.0.0/tcp/4470{PEER}", f"/ip4/0.0.0.0/udp/4470/quic-v1{PEER}"]
    addrs.append(f"/ip4/203.0.113.9/tcp/1{PEER}")
    assert expand_unspecified(addrs, ["192.168.1.5", "127.0.0.1"]) == [
        f"/ip4/192.168.1.5/tcp/4470{PEER}",
        f"/ip4/127.0.0.1/tcp/4470{PEER}",
        f"/ip4/192.168.1.5/udp/4470/quic-v1{PEER}",
        f"/ip4/127.0.0.1/udp/4470/quic-v1{PEER}",
        f"/ip4/203.0.113.9/tcp/1{PEER}",
    ]


def test_duplicates_are_dropped() -> None:
    addr = f"/ip4/127.0.0.1/tcp/1{PEER}"
    assert expand_unspecified([addr, f"/ip4/0.0.0.0/tcp/1{PEER}"], ["127.0.0.1"]) == [addr]


def test_interface_addresses_leave_loopback_out_where_there_is_another() -> None:
    ips = interface_ipv4s()
    assert ips and (all(not ip.startswith("127.") for ip in ips) or ips == ["127.0.0.1"])


def test_interfaces_are_read_only_when_an_address_needs_expanding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []
    real = psutil.net_if_addrs

    def counted() -> object:
        reads.append(1)
        return real()

    monkeypatch.setattr(psutil, "net_if_addrs", counted)
    specified = [f"/ip4/127.0.0.1/tcp/1{PEER}", f"/ip4/203.0.113.9/tcp/2{PEER}"]
    assert dialable_addrs(specified) == specified
    assert reads == []  # libp2p asks on every publish: no OS read for nothing
    unspecified = [f"/ip4/0.0.0.0/tcp/1{PEER}"]
    assert dialable_addrs(unspecified) == expand_unspecified(unspecified, interface_ipv4s())
    assert len(reads) == 2


def test_only_loopback_addresses_are_loopback_only() -> None:
    assert loopback_only([f"/ip4/127.0.0.1/tcp/1{PEER}", "/ip4/127.3.0.1/udp/2/quic-v1"])
    assert loopback_only(["/ip6/::1/tcp/1"])
    assert not loopback_only([f"/ip4/127.0.0.1/tcp/1{PEER}", "/ip4/192.0.2.1/tcp/1"])
    assert not loopback_only(["/dns4/localhost/tcp/1"])  # a name: not known to be here
    assert not loopback_only([])  # nothing to dial is no reason to skip a round
