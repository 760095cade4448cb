"""UPnP port mapping for `P2PHost`: where the LAN's router is an Internet Gateway Device that
offers it, it forwards our listen ports to us and the node becomes publicly dialable
(SPEC §10.12).

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`); its objects
live on the trio thread. State owned: the gateway found and the mappings we hold (port,
protocol), removed when the host stops; the addresses they give us are reported to asyncio,
where `P2PHost` puts them first among its direct addresses.

Over miniupnpc, as py-libp2p 0.8.1's `libp2p.discovery.upnp.UpnpManager`, which we do not use:
it runs miniupnpc's blocking calls on trio's worker threads, which are cached process-wide and
so not in the network namespace of the host that asks (a node started in a namespace, as the
tests and benchmarks do, would look for the gateway on another network). Each call here runs on
a thread of its own, started from the trio thread, whose namespace it shares (`own_thread`). Like
`UpnpManager`, a gateway whose external address is not public (a double NAT) is not used.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import miniupnpc  # type: ignore[import-not-found]
import trio

from hearthmesh.node.p2p.own_thread import own_thread

__all__ = ["UPNP_TIMEOUT_S", "UpnpLayer", "mappings_for"]

log = logging.getLogger(__name__)

UPNP_TIMEOUT_S: Final = 10.0
"""Bound on finding the gateway and mapping the ports, and on removing them at stop."""

MappedAddrsReport = Callable[[list[str]], None]
"""Told (on the trio thread) the multiaddrs (without `/p2p/`) our mappings make us reachable at."""


def mappings_for(listen_addrs: list[str]) -> list[tuple[int, str]]:
    """(port, "TCP" or "UDP") for each IPv4 TCP and QUIC listen address not on loopback, once
    each."""
    wanted: list[tuple[int, str]] = []
    for addr in listen_addrs:
        parts = addr.split("/")
        if len(parts) < 5 or parts[1] != "ip4" or "p2p-circuit" in parts:
            continue
        if parts[2].startswith("127."):  # the gateway forwards to our LAN address
            continue
        if parts[3] == "tcp" and (len(parts) == 5 or parts[5] == "p2p"):
            mapping = (int(parts[4]), "TCP")
        elif parts[3] == "udp" and len(parts) > 5 and parts[5] == "quic-v1":
            mapping = (int(parts[4]), "UDP")
        else:
            continue
        if mapping not in wanted:
            wanted.append(mapping)
    return wanted


def _multiaddr(external_ip: str, port: int, protocol: str) -> str:
    return (
        f"/ip4/{external_ip}/tcp/{port}"
        if protocol == "TCP"
        else (f"/ip4/{external_ip}/udp/{port}/quic-v1")
    )


class _Gateway:
    """The LAN's Internet Gateway Device, through miniupnpc (blocking: call in `own_thread`)."""

    def __init__(self) -> None:
        self._upnp: Any = miniupnpc.UPnP()
        self._upnp.discoverdelay = 1000  # ms of SSDP listening

    def discover(self) -> str | None:
        """The gateway's public external address, or None if none serves us."""
        if self._upnp.discover() <= 0:
            return None
        self._upnp.selectigd()
        external = str(self._upnp.externalipaddress() or "")
        try:
            return external if ipaddress.ip_address(external).is_global else None
        except ValueError:
            return None

    def add(self, port: int, protocol: str) -> bool:
        lan = self._upnp.lanaddr
        return bool(self._upnp.addportmapping(port, protocol, lan, port, "hearthmesh", ""))

    def remove(self, port: int, protocol: str) -> bool:
        return bool(self._upnp.deleteportmapping(port, protocol))


class UpnpLayer:
    """Maps our listen ports on the LAN's gateway while running (trio thread only)."""

    def __init__(self, report: MappedAddrsReport) -> None:
        self._report = report
        self._gateway: _Gateway | None = None
        self._mapped: list[tuple[int, str]] = []

    @asynccontextmanager
    async def running(self, listen_addrs: Callable[[], list[str]]) -> AsyncIterator[None]:
        """Map the ports of `listen_addrs()` in the background; remove the mappings at exit."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._map, listen_addrs)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(UPNP_TIMEOUT_S):
            await self._unmap()

    async def _map(self, listen_addrs: Callable[[], list[str]]) -> None:
        gateway = _Gateway()
        mapped: list[str] = []
        with trio.move_on_after(UPNP_TIMEOUT_S):
            try:
                external_ip = await own_thread(gateway.discover, name="upnp")
                if external_ip is None:
                    log.info("UPnP: no gateway with a public address offers port mapping here")
                    return
                self._gateway = gateway
                for port, protocol in mappings_for(listen_addrs()):
                    if await own_thread(gateway.add, port, protocol, name="upnp"):
                        self._mapped.append((port, protocol))
                        mapped.append(_multiaddr(external_ip, port, protocol))
            except Exception as exc:  # miniupnpc raises on a refusal: we stay as we were
                log.info("UPnP: port mapping failed: %r", exc)
        if mapped:
            log.info("UPnP: the gateway forwards %s to us", ", ".join(mapped))
            self._report(mapped)

    async def _unmap(self) -> None:
        gateway, mapped = self._gateway, self._mapped
        self._mapped = []
        if gateway is None:
            return
        for port, protocol in mapped:
            try:
                await own_thread(gateway.remove, port, protocol, name="upnp")
            except Exception as exc:
                log.info("UPnP: removing the mapping of %s/%d failed: %r", protocol, port, exc)
