"""mDNS on the LAN for `P2PHost` (SPEC §13.3), with no blocking call on the trio thread.

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`); runs on
the trio thread. py-libp2p 0.8.1's own mDNS (`new_host(enable_mDNS=True)`) builds its `Zeroconf`
on the thread that builds the host and registers from the trio thread by blocking calls:
zeroconf adopts the asyncio loop running on the constructing thread, so with trio a guest of
that loop (`trio_on_loop`) each call waited for the loop it blocked until zeroconf's timeout,
and with trio in a thread of its own the registration's probing stopped libp2p for ~1.6 s.
Here py-libp2p's `MDNSDiscovery` is built, registered and stopped on threads of their own
(`own_thread`): none runs an asyncio loop, so zeroconf runs its own, and trio keeps running.
Peers found are reported as before, on zeroconf's thread, by py-libp2p's `peerDiscovery`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio
from libp2p.abc import IHost
from libp2p.discovery.mdns.mdns import MDNSDiscovery, create_mdns_discovery

from hearthmesh.node.p2p.own_thread import own_thread

__all__ = ["announced_on_lan"]

log = logging.getLogger(__name__)

_CLEANUP_S: Final = 60.0
"""How often entries of peers no longer announced are dropped (py-libp2p's default)."""


@asynccontextmanager
async def announced_on_lan(host: IHost) -> AsyncIterator[None]:
    """Announce `host`'s listen addresses and browse for peers while inside (`host` listens)."""
    discovery = await own_thread(_started, host, name="mdns")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drop_stale, discovery)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    finally:
        # Unannounce, stop browsing and close zeroconf's sockets even when cancelled.
        with trio.CancelScope(shield=True):
            await own_thread(discovery.stop, name="mdns")


def _started(host: IHost) -> MDNSDiscovery:
    """Build (browsing starts) and register; what `MDNSDiscovery.start` does but its cleanup
    task, which `_drop_stale` runs."""
    discovery = create_mdns_discovery(host.get_network(), host=host)
    discovery.broadcaster.register()
    return discovery


async def _drop_stale(discovery: MDNSDiscovery) -> None:
    while True:
        await trio.sleep(_CLEANUP_S)
        try:  # a bookkeeping failure must not stop the host
            discovery.listener.cleanup_stale_entries(max_age=discovery.ttl * 2)
        except Exception:
            log.warning("dropping stale mDNS entries failed", exc_info=True)
