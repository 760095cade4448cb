"""Which of our listen addresses a peer elsewhere can dial (SPEC §10.6).

A node that listens on `0.0.0.0` (every interface, the default of `hearthmesh run`) must not
put `0.0.0.0` (nor `127.0.0.1`) in its home record: a peer would dial its own machine. This
module expands an unspecified address into one address per IPv4 interface other than loopback,
says which IP a connection comes from (`remote_ip`) and whether only this machine can dial a
list of addresses (`loopback_only`). It owns no state.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import psutil  # type: ignore[import-untyped]

__all__ = ["dialable_addrs", "expand_unspecified", "interface_ipv4s", "loopback_only", "remote_ip"]

_ANY_IPV4 = "/ip4/0.0.0.0/"


def interface_ipv4s() -> list[str]:
    """This machine's IPv4 interface addresses (read from the OS each call), loopback only if
    there is no other: a peer that dials our loopback address reaches itself."""
    found = {
        address.address
        for addresses in psutil.net_if_addrs().values()
        for address in addresses
        if address.family == socket.AF_INET
    }
    outside = sorted(ip for ip in found if not ipaddress.ip_address(ip).is_loopback)
    return outside or sorted(found)


def dialable_addrs(addrs: Sequence[str]) -> list[str]:
    """`addrs` with each `0.0.0.0` expanded per interface; the interfaces are read only when
    one needs expanding. libp2p asks for our addresses on every gossipsub publish and identify
    (its signed peer record), and the OS read costs ~65 µs: a node on 127.0.0.1, as in the
    tests and `simulate`, read them 43 times per start, connect, send and stop."""
    if not any(addr.startswith(_ANY_IPV4) for addr in addrs):
        return list(addrs)
    return expand_unspecified(addrs, interface_ipv4s())


def expand_unspecified(addrs: Sequence[str], ips: Iterable[str]) -> list[str]:
    """Each `/ip4/0.0.0.0/...` multiaddr of `addrs` replaced by one per address in `ips`.

    Args:
        addrs: multiaddrs as libp2p reports them after listening (ports resolved).
        ips: the interface addresses, in the order they should be offered.

    Returns:
        The addresses in their order, each unspecified one expanded in place, no duplicates.
    """
    ips = list(ips)
    expanded: list[str] = []
    for addr in addrs:
        if addr.startswith(_ANY_IPV4):
            rest = addr[len(_ANY_IPV4) :]
            candidates = [f"/ip4/{ip}/{rest}" for ip in ips]
        else:
            candidates = [addr]
        expanded += [c for c in candidates if c not in expanded]
    return expanded


def loopback_only(addrs: Sequence[str]) -> bool:
    """There is an address in `addrs` and every one is at a loopback IP (`/ip4/127.x` or
    `/ip6/::1`): only this machine can dial them."""
    for addr in addrs:
        parts = addr.split("/")
        if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
            return False  # a name (`/dns4/...`): not known to be this machine
        try:
            if not ipaddress.ip_address(parts[2]).is_loopback:
                return False
        except ValueError:
            return False
    return bool(addrs)


def remote_ip(conn: Any) -> str | None:
    """The IP address at the other end of a libp2p connection (`INetConn`), if its transport
    tells (a relayed circuit may not)."""
    try:
        address = conn.muxed_conn.get_remote_address()
    except Exception:  # a transport without addresses
        return None
    return str(address[0]) if address else None
