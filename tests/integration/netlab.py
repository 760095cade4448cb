"""The namespace lab for tests (`hearthmesh.tools.netlab`): skip where it cannot run, and start
nodes in it with the tests' fast settings."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.node import Node
from hearthmesh.tools.netlab import NetLab, in_netns, netlab_unavailable, start_in_netns

from .conftest import node_config

__all__ = ["NetLab", "in_netns", "require_netlab", "start_node"]


def require_netlab() -> None:
    """Skip the calling test unless namespaces, veth pairs and nftables are usable here."""
    reason = netlab_unavailable()
    if reason is not None:
        pytest.skip(reason)


UNILATERAL_DIAL_MS = 500
"""The plain dial before each hole punch (2 s by default, SPEC §10.9): a NAT drops its SYNs
unanswered, and every punch in the lab waited the 2 s out; a lab's links answer in a
millisecond. The punch's own dials keep their bound (`DIRECT_DIAL_TIMEOUT_S`)."""


async def start_node(
    stack: AsyncExitStack, ns: str, path: Path, *bootstrap: str, **overrides: Any
) -> Node:
    """A node in namespace `ns` listening on every interface (TCP 4470), stopped with `stack`;
    one AutoNAT verdict decides its reachability (a lab has few servers). The plain dial
    before each hole punch gets `UNILATERAL_DIAL_MS`."""
    settings: dict[str, Any] = {
        "listen_addrs": ("/ip4/0.0.0.0/tcp/4470",),
        "autonat_confirmations": 1,
        "unilateral_dial_ms": UNILATERAL_DIAL_MS,
        **overrides,
    }
    return await start_in_netns(stack, ns, node_config(path, bootstrap=bootstrap, **settings))
