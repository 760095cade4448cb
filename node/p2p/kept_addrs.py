"""Our advertised addresses, as libp2p hands them out, kept while they stay the same (SPEC §14.3).

Part of the libp2p bridge (ARCHITECTURE §5, tests/test_layering.py `BRIDGE_MODULES`). py-libp2p
0.8.1 asks `BasicHost.get_addrs()` each time it attaches our signed peer record to an RPC
(`env_to_send_in_RPC`: every gossip message a node publishes or forwards, every heartbeat's
control messages, every kad RPC), and each call reads the listeners' socket names, parses them
into multiaddrs and appends `/p2p/<id>` to each anew, though the answer only changes with the
host's addresses factory's: 5.4 % of a 25-node mesh node's busy samples in a scale run (SPEC
§20.6). `keep_addrs` puts a method in its place on the host instance that answers the list it
computed last while the factory's kept answer (`kept()`, an object that is replaced whenever the
addresses change) is the one it was computed with, and asks libp2p otherwise.

State: per host, the last answer and the kept answer it was computed with; touched only by the
host's trio thread.
"""

from __future__ import annotations

from collections.abc import Callable

import multiaddr  # type: ignore[import-untyped]
from libp2p.abc import IHost

__all__ = ["keep_addrs"]


def keep_addrs(host: IHost, kept: Callable[[], object | None]) -> None:
    """Answer `host.get_addrs()` from the last answer while `kept()` is what it was then.

    `kept()` returns None while the addresses are not settled (nothing is kept then), and
    otherwise an object that stands for the factory's answer: the same object, the same
    addresses."""
    compute = host.get_addrs
    last: list[tuple[object, list[multiaddr.Multiaddr]]] = []

    def get_addrs() -> list[multiaddr.Multiaddr]:
        now = kept()
        if now is not None and last and last[0][0] is now:
            return list(last[0][1])
        addrs = compute()
        settled = kept()  # the factory's own call may have settled them
        last[:] = [] if settled is None else [(settled, list(addrs))]
        return addrs

    host.get_addrs = get_addrs  # type: ignore[method-assign]
