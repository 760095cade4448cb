"""`free_port` (tools/node_process.py): a port a node binds a moment later is none the kernel
hands an outgoing connection meanwhile."""

from __future__ import annotations

import socket

from hearthmesh.tools.node_process import free_port


def _ephemeral() -> range:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        low, high = map(int, ports.read().split())
    return range(low, high + 1)


def test_a_free_port_is_none_an_outgoing_connection_may_take() -> None:
    ephemeral = _ephemeral()
    ports = [free_port() for _ in range(50)]
    assert not [port for port in ports if port in ephemeral]
    assert len(set(ports)) > 40  # spread: callers in other processes seldom pick the same
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", ports[0]))  # and free
