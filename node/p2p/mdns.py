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
    """Browse for peers and announce `host`'s listen addresses while inside (`host` listens).

    The announcement is registered in the background: zeroconf's probing (~1.6 s here) runs
    while the node serves its protocols, so peers find it once it speaks them. Registered
    before the host's start returned, a peer dialled a node that did not speak hello yet and
    said hello twice (test_mesh's mDNS hello test failed in 3 of 59 runs; 40 of 40 pass now).
    """
    discovery = await own_thread(_browsing, host, name="mdns")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_register, discovery)
            nursery.start_soon(_drop_stale, discovery)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()  # the registration, shielded, still ends first
    finally:
        # Unannounce, stop browsing and close zeroconf's sockets even when cancelled.
        with trio.CancelScope(shield=True):
            await own_thread(discovery.stop, name="mdns")


def _browsing(host: IHost) -> MDNSDiscovery:
    """py-libp2p's mDNS, browsing from its construction; `MDNSDiscovery.start` is not called:
    `_register` and `_drop_stale` do what it does."""
    return create_mdns_discovery(host.get_network(), host=host)


async def _register(discovery: MDNSDiscovery) -> None:
    # Shielded: stopping waits for the registration rather than unregistering beside it
    # (py-libp2p's `register` logs its own failures and never raises).
    with trio.CancelScope(shield=True):
        await own_thread(discovery.broadcaster.register, name="mdns")


async def _drop_stale(discovery: MDNSDiscovery) -> None:
    while True:
        await trio.sleep(_CLEANUP_S)
        try:  # a bookkeeping failure must not stop the host
            discovery.listener.cleanup_stale_entries(max_age=discovery.ttl * 2)
        except Exception:
            log.warning("dropping stale mDNS entries failed", exc_info=True)
