"""AutoNAT v1 for `P2PHost`: answer peers' dial-back requests, and learn whether this node is
publicly reachable (SPEC §10.6).

Part of the libp2p bridge (ARCHITECTURE §5; tests/test_layering.py `BRIDGE_MODULES`); its objects
live on the trio thread. State owned: libp2p's `AutoNATService` (the verdicts of servers about
us, one per server) and the current `Reachability`, reported to asyncio when it changes.

Upstream fault fixed here (py-libp2p 0.8.1, host/autonat/autonat.py `_try_dial`): the server
"dials back" with `host.connect`, which returns at once when a connection to the peer exists,
and one always does, since the request came on it. Every requester is told OK, so every node
believes itself public. `_FreshDialBack` dials a new raw connection and completes the security
handshake on it (proving the peer id at that address), then closes it without registering it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Final

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p.abc import IHost, IMuxedConn, INetStream
from libp2p.host.autonat.autonat import AUTONAT_PROTOCOL_ID, AutoNATService, AutoNATStatus
from libp2p.host.basic_host import BasicHost
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID

from hearthmesh.node.p2p.addresses import loopback_only
from hearthmesh.node.p2p.circuit_relay import is_relayed
from hearthmesh.node.p2p.periodic_jobs import AUTONAT_ROUND, DIAL_BACK, PeriodicJobs

__all__ = [
    "AUTONAT_PROTOCOL",
    "AutoNatLayer",
    "Reachability",
    "ReachabilityReport",
    "worth_asking",
]

log = logging.getLogger(__name__)

AUTONAT_PROTOCOL: Final = str(AUTONAT_PROTOCOL_ID)
DIAL_BACK_TIMEOUT_S: Final = 5.0
"""How long a server's connect to one address of a requester may take before it calls that
address unreachable (a NAT or a firewall drops the connect, so it times out)."""
QUERY_TIMEOUT_S: Final = 10.0
"""How long we wait for one server's verdict (it may try several of our addresses)."""
HANDSHAKE_TIMEOUT_S: Final = QUERY_TIMEOUT_S
"""How long a server's security handshake on a dial-back may take once the connect succeeded.
Past it the requester has stopped waiting (`QUERY_TIMEOUT_S`), so no verdict is given."""
UNKNOWN_RETRY_S: Final = 5.0
"""Time between rounds while no verdict is in (few servers connected yet)."""
IDENTIFY_GRACE_S: Final = 0.5
MAX_SERVERS_PER_ROUND: Final = 8
"""Servers asked per round; more would only repeat what the first ones said."""


class Reachability(StrEnum):
    """Whether peers elsewhere can dial this node (AutoNAT's verdict)."""

    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


ReachabilityReport = Callable[[Reachability], None]
"""Told (on the trio thread) the new reachability each time it changes."""

_FROM_LIBP2P: Final = {
    AutoNATStatus.UNKNOWN: Reachability.UNKNOWN,
    AutoNATStatus.PUBLIC: Reachability.PUBLIC,
    AutoNATStatus.PRIVATE: Reachability.PRIVATE,
}


class _SlowHandshake(Exception):
    """A dial-back connected but its handshake did not end in time: the requester is reachable
    there and slow (its CPU is busy), which says nothing of a NAT, so it gets no verdict."""


class _AskerGone(Exception):
    """The asker's wait for the answer (`QUERY_TIMEOUT_S`) is over: no address is tried past it,
    however many it listed, and the request is left unanswered."""


class _FreshDialBack(AutoNATService):
    """`AutoNATService` whose dial-back opens a new connection (see the module docstring), each
    served request a run of the periodic job `DIAL_BACK`."""

    def __init__(self, host: BasicHost, *, jobs: PeriodicJobs, confirmations: int) -> None:
        self._jobs = jobs
        super().__init__(host, serve=True, confirmations=confirmations)

    async def handle_stream(self, stream: INetStream) -> None:
        with self._jobs.running(DIAL_BACK):
            await super().handle_stream(stream)

    async def _try_dial(self, peer_id: ID, addrs: list[bytes]) -> bytes | None:
        network = self.host.get_network()
        if not isinstance(network, Swarm):
            return None
        answer, slow = None, False
        # All of a request, not each address, within the asker's wait: one that lists many
        # addresses at its IP, each taking the connect and never handshaking, held a dial-back
        # 15 s an address.
        with trio.move_on_after(QUERY_TIMEOUT_S) as asked:
            answer, slow = await self._first_to_answer(network, peer_id, addrs)
        if asked.cancelled_caught:
            raise _AskerGone(f"{peer_id}: asked {QUERY_TIMEOUT_S:g} s ago")
        if answer is None and slow:  # raised, the request is left unanswered: no verdict
            raise _SlowHandshake(f"{peer_id}: connected, handshake too slow")
        return answer

    async def _first_to_answer(
        self, network: Swarm, peer_id: ID, addrs: list[bytes]
    ) -> tuple[bytes | None, bool]:
        """The first of `addrs` where `peer_id` handshook, if any; and whether any connected
        there but handshook too slowly."""
        slow = False
        for raw in addrs:
            addr = multiaddr.Multiaddr(raw)
            transport = network.transport_manager.transport_for_dialing(addr)
            if transport is None:
                continue
            try:
                with trio.fail_after(DIAL_BACK_TIMEOUT_S):
                    conn = await transport.dial(addr)
            except Exception as exc:  # any failure means: not reachable at this address
                log.debug("AutoNAT dial-back to %s at %s failed: %r", peer_id, addr, exc)
                continue
            try:
                # Bounded apart from the connect: a busy requester (50 nodes on 2 cores) took
                # over 5 s to answer its handshake, and was told private (SPEC §10.6).
                with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                    if not isinstance(conn, IMuxedConn):  # QUIC authenticates in dial
                        # Noise proves the peer id at this address. No muxer: a whole
                        # second connection would make the peer trim one of its two, maybe
                        # the one in use (max_connections_per_peer=1).
                        secured = await network.upgrader.upgrade_security(conn, True, peer_id)
                        await secured.close()
            except trio.TooSlowError:
                log.debug("AutoNAT dial-back to %s at %s: handshake too slow", peer_id, addr)
                slow = True
                continue
            except Exception as exc:  # another listener, or the handshake failed
                log.debug("AutoNAT dial-back to %s at %s failed: %r", peer_id, addr, exc)
                continue
            finally:
                await conn.close()
            return raw, slow
        return None, slow


class AutoNatLayer:
    """Serves AutoNAT and runs the reachability checks of one host (trio thread only)."""

    def __init__(
        self,
        *,
        report: ReachabilityReport,
        advertised: Callable[[], list[str]],
        confirmations: int,
        interval_s: float,
        jobs: PeriodicJobs,
        periodic: bool = True,
        loopback: bool = False,
    ) -> None:
        """Args:
        report: told each change of reachability.
        advertised: the addresses we ask servers to dial (expanded, never `0.0.0.0`).
        confirmations: agreeing verdicts needed to call us public or private.
        interval_s: time between two rounds of checks.
        jobs: counts and meters the rounds and the dial-backs served (SPEC §20.6).
        periodic: run rounds of checks by ourselves; else only `check_once` asks.
        loopback: run them even while every address in `advertised` is loopback.
        """
        self._report = report
        self._advertised = advertised
        self._confirmations = confirmations
        self._interval_s = interval_s
        self._periodic = periodic
        self._loopback = loopback
        self._jobs = jobs
        self._service: _FreshDialBack | None = None
        self._wake = trio.Event()
        self._ask_all = False
        self.reachability = Reachability.UNKNOWN

    def build(self, host: IHost) -> None:
        """Install the AutoNAT server on `host` (before it listens)."""
        if not isinstance(host, BasicHost):
            raise TypeError("AutoNAT needs a BasicHost")
        self._service = _FreshDialBack(host, jobs=self._jobs, confirmations=self._confirmations)

    def peer_connected(self) -> None:
        """A new peer may be a server we have not asked: check soon while we know nothing."""
        if self.reachability is Reachability.UNKNOWN:
            self._wake.set()

    def addresses_changed(self) -> None:
        """We have a new address to be dialled at (a port mapping, SPEC §10.12): check soon,
        whatever we knew, with every server (their verdicts were about the old addresses)."""
        self._ask_all = True
        self._wake.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the periodic checks (if `periodic`) for the lifetime of the block."""
        async with trio.open_nursery() as nursery:
            if self._periodic:
                nursery.start_soon(self._check_forever)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()

    async def _check_forever(self) -> None:
        while True:
            wait_s = self._interval_s
            if self.reachability is Reachability.UNKNOWN:
                wait_s = min(wait_s, UNKNOWN_RETRY_S)
            with trio.move_on_after(wait_s):
                await self._wake.wait()
            if not self._loopback and loopback_only(self._advertised()):
                # Only this machine can dial us: a verdict would say nothing of peers
                # elsewhere, and each dial-back costs both ends a Noise handshake (SPEC §10.6).
                self._wake = trio.Event()
                continue
            # Identify (which tells us who serves AutoNAT) follows a new connection closely.
            await trio.sleep(IDENTIFY_GRACE_S)
            self._wake = trio.Event()
            with self._jobs.running(AUTONAT_ROUND):
                ask_all, self._ask_all = self._ask_all, False
                await self._round(ask_all=ask_all or self.reachability is not Reachability.UNKNOWN)

    async def check_once(self) -> Reachability:
        """Ask the connected AutoNAT servers (direct connections only) to dial us back."""
        return await self._round(ask_all=True)

    async def _round(self, *, ask_all: bool) -> Reachability:
        """Ask the connected servers, or while unknown (not `ask_all`) those `worth_asking`."""
        service = self._service
        if service is None:
            return self.reachability
        servers = _servers(service.host)
        if not ask_all:
            servers = worth_asking(servers, service.dial_results, self._confirmations)
        if not servers:
            return self.reachability
        addrs = [multiaddr.Multiaddr(a).to_bytes() for a in self._advertised()]

        async def ask(server: ID) -> None:
            try:
                await service.query_server(server, addrs, timeout=QUERY_TIMEOUT_S)
            except Exception as exc:  # a server that cannot answer gives no verdict
                log.debug("AutoNAT query to %s failed: %r", server, exc)
            # A refusal (no listed address at the IP the server sees) stays "not reachable", as
            # py-libp2p holds it: a home behind a NAT lists only private addresses (SPEC §10.6).

        async with trio.open_nursery() as nursery:  # a dial-back may take DIAL_BACK_TIMEOUT_S
            for server in servers[:MAX_SERVERS_PER_ROUND]:
                nursery.start_soon(ask, server)
        service.update_status()
        now = _FROM_LIBP2P.get(service.get_status(), Reachability.UNKNOWN)
        if now != self.reachability:
            held = service.dial_results.values()
            log.info("reachability %s: %d servers dialled us back, %d did not", now, *_split(held))
            self.reachability = now
            self._report(now)
        return now


def worth_asking(servers: list[ID], answered: Collection[ID], confirmations: int) -> list[ID]:
    """The servers a round while unknown asks (SPEC §10.6): all of them once the verdicts
    held and to come could number `confirmations`, else only those with no verdict yet. A
    verdict is kept per server, so asking one that answered again changes nothing while too
    few servers are known to decide: a home with one or two peers dialled back by each of them
    every 5 s, a new connection and security handshake on both ends each time."""
    if len({*servers, *answered}) >= confirmations:
        return servers
    return [server for server in servers if server not in answered]


def _split(verdicts: Collection[bool]) -> tuple[int, int]:
    ok = sum(verdicts)
    return ok, len(verdicts) - ok


def _servers(host: IHost) -> list[ID]:
    """Connected peers that speak AutoNAT over a direct connection (a server refuses requests
    that come through a relay)."""
    network = host.get_network()
    peerstore = host.get_peerstore()
    servers = []
    for peer, conns in network.get_connections_map().items():
        try:
            protocols = peerstore.get_protocols(peer)
        except Exception:  # identify has not finished: not known to serve yet
            continue
        if AUTONAT_PROTOCOL not in protocols:
            continue
        if all(is_relayed(conn) for conn in conns):
            continue
        servers.append(peer)
    return servers
