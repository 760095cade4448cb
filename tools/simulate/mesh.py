"""The node processes of a `hearthmesh simulate` run (SPEC §20.4): one `hearthmesh run` per
device, each with its own data dir, on loopback or each in its own network namespace.

A node in a namespace serves its client API on the namespace's own 127.0.0.1; the simulator
reaches it through a Unix socket (paths are not namespaced) whose every connection is a TCP
socket opened inside that namespace (a socket keeps the namespace it was created in).

State: each node's process, ports, identity and forwarder (`SimNode`); the namespaces
(`NetLab`, owned by the caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearthmesh.tools.client import ApiClient
from hearthmesh.tools.netlab import NetLab, in_netns
from hearthmesh.tools.node_process import HomeProcess, NodeProcessFailed, spawn_home
from hearthmesh.tools.simulate.delay_proxy import DelayProxy, Latency, unproxied_peers

__all__ = ["Mesh", "SimNode", "close_quietly"]

_NS_P2P_PORT = 4470
_NS_API_PORT = 8470
_NS_PROXY_PORT = 4471
_PORTS_FROM = 20000
_PORTS_TO = 32000
"""Loopback ports are taken from below the kernel's ephemeral range (32768-60999): a port
the kernel hands out for any other process's `bind(0)` or outgoing connection (the 100 nodes
of two runs started at once, say) can never be one a node is about to listen on."""


def _unused_ports(count: int) -> Iterator[int]:
    """`count` ports that nothing listens on now, in a block starting where this process's id
    points (two simulators at once take different blocks)."""
    span = _PORTS_TO - _PORTS_FROM
    start = _PORTS_FROM + (os.getpid() * 997) % span
    found = 0
    for offset in range(span):
        port = _PORTS_FROM + (start - _PORTS_FROM + offset) % span
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found += 1
        yield port
        if found == count:
            return


@dataclass
class SimNode:
    """One device's home node."""

    index: int
    user: int
    device: int
    """0: the user's primary (first) device; others are linked to it (SPEC §22)."""
    data_dir: Path
    host: str
    p2p_port: int
    api_port: int
    script: str
    ns: str | None = None
    unix: str | None = None
    process: HomeProcess | None = None
    user_text: str = ""
    addr: str = ""
    token: str = ""
    restarts: int = 0
    forwarder: asyncio.Server | None = field(default=None, repr=False)
    proxy: DelayProxy | None = field(default=None, repr=False)
    """With --latency: what peers dial instead of `p2p_port` (the address the node announces)."""

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.process.returncode is None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def client(self, timeout_s: float | None = None) -> ApiClient:
        """`timeout_s`: the bound of each call (None: ApiClient's own)."""
        if timeout_s is None:
            return ApiClient(self.url, self.token, unix=self.unix)
        return ApiClient(self.url, self.token, unix=self.unix, timeout_s=timeout_s)

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        async with self.client(timeout_s) as api:
            return await api.call(method, path, body)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _forward_into(ns: str, port: int, path: str) -> asyncio.Server:
    """A Unix socket at `path` whose connections reach 127.0.0.1:`port` inside `ns`."""
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with in_netns(ns):
            inside = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        inside.setblocking(False)
        try:
            await loop.sock_connect(inside, ("127.0.0.1", port))
        except OSError:
            inside.close()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(sock=inside)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_unix_server(handle, path=path)


class Mesh:
    """The nodes: start (creating and linking identities), kill -9, restart, stop."""

    def __init__(
        self,
        root: Path,
        sockets: Path,
        plan: list[tuple[int, int]],
        scripts: list[str],
        netlab: NetLab | None,
        latency: Latency | None = None,
        seed: int = 0,
        flags: tuple[str, ...] = (),
    ) -> None:
        """`plan`: (user, device) per node; `scripts`: the `hearthmesh` script per node;
        `latency`: a delay proxy in front of each node, node i's delays drawn from seed + i;
        `flags`: more `hearthmesh run` options for every node (`--log-level info`, say)."""
        self.netlab = netlab
        self.flags = flags
        self.nodes: list[SimNode] = []
        self.unproxied: set[tuple[int, tuple[str, int]]] = set()
        """(node, peer address) of each connection seen on a node's real port that did not
        come through its proxy (`watch_unproxied`)."""
        ports = _unused_ports((2 if latency is None else 3) * len(plan))
        for index, (user, device) in enumerate(plan):
            ns, host = (None, "127.0.0.1") if netlab is None else netlab.public_host(index + 1)
            self.nodes.append(
                SimNode(
                    index=index,
                    user=user,
                    device=device,
                    data_dir=root / f"node{index}",
                    host=host,
                    p2p_port=next(ports) if ns is None else _NS_P2P_PORT,
                    api_port=next(ports) if ns is None else _NS_API_PORT,
                    script=scripts[index],
                    ns=ns,
                    unix=None if ns is None else str(sockets / f"api{index}.sock"),
                )
            )
        for node in self.nodes:
            if latency is None:
                break
            port = next(ports) if node.ns is None else _NS_PROXY_PORT
            delay = latency.sampler(seed + node.index)
            upstream = (node.host, node.p2p_port)
            node.proxy = DelayProxy((node.host, port), upstream, delay, ns=node.ns)

    async def start(self) -> None:
        """Start every primary, then link and start the other devices."""
        await asyncio.gather(*(self._forwarder(n) for n in self.nodes))
        primaries = [n for n in self.nodes if n.device == 0]
        others = [n for n in self.nodes if n.device != 0]
        for node in primaries:
            if node.proxy is not None:
                await node.proxy.start()
        await _all(self._spawn(n) for n in primaries)
        for node in others:
            primary = next(p for p in primaries if p.user == node.user)
            await self._link(primary, node)
        for node in others:  # after the link, whose host listened on the proxy's port
            if node.proxy is not None:
                await node.proxy.start()
        await _all(self._spawn(n) for n in others)

    async def connect_all(self) -> None:
        """Dial every other node from each (home records are swapped in hello, SPEC §13.3)."""
        for node in self.nodes:
            async with node.client() as api:
                for other in self.nodes:
                    if other is not node:
                        await api.call("POST", "/v1/peers", {"address": other.addr})

    async def kill(self, node: SimNode) -> None:
        """kill -9."""
        if node.process is not None:
            await node.process.kill()

    async def restart(self, node: SimNode) -> None:
        await self._spawn(node)
        node.restarts += 1

    async def stop(self) -> None:
        """SIGTERM every node still up (cleanly), close the forwarders and proxies."""
        await asyncio.gather(*(n.process.terminate() for n in self.nodes if n.up and n.process))
        for node in self.nodes:
            if node.forwarder is not None:
                node.forwarder.close()
            if node.proxy is not None:
                node.proxy.close()

    async def watch_unproxied(self, every_s: float = 0.5) -> None:
        """Until cancelled, note each connection on a node's real port that its proxy did not
        make: a peer that learnt the real port and dialled past the delay."""
        while True:
            for node in self.nodes:
                if node.proxy is not None and node.up and node.process is not None:
                    pid, sources = node.process.process.pid, node.proxy.upstream_sources
                    for peer in unproxied_peers(pid, node.p2p_port, sources):
                        self.unproxied.add((node.index, peer))
            await asyncio.sleep(every_s)

    async def _forwarder(self, node: SimNode) -> None:
        if node.ns is not None and node.unix is not None:
            node.forwarder = await _forward_into(node.ns, node.api_port, node.unix)

    async def _spawn(self, node: SimNode) -> None:
        # Peers learn the proxy's address, never the real port: identify and the home record
        # give the announced addresses only (SPEC §10.3, §13).
        announce = () if node.proxy is None else ("--announce", self._proxy_addr(node))
        process = await spawn_home(
            node.data_dir,
            name=f"user{node.user}",
            api_port=node.api_port,
            listen_port=node.p2p_port,
            listen_host=node.host,
            netns=node.ns,
            script=node.script,
            log=node.data_dir.parent / f"node{node.index}.log",
            flags=(*announce, *self.flags),
        )
        node.process = process
        node.user_text, node.token = process.user_text, process.token
        node.addr = process.addr
        if node.proxy is not None:  # what the simulator dials too
            node.addr = f"{self._proxy_addr(node)}/p2p/{process.addr.rsplit('/p2p/', 1)[1]}"

    @staticmethod
    def _proxy_addr(node: SimNode) -> str:
        assert node.proxy is not None
        return f"/ip4/{node.host}/tcp/{node.proxy.listen[1]}"

    async def _link(self, primary: SimNode, node: SimNode) -> None:
        """`hearthmesh init --link` a new device of `primary`'s user (SPEC §22)."""
        offer = await primary.call("POST", "/v1/devices/link")
        prefix = ["ip", "netns", "exec", node.ns] if node.ns is not None else []
        # The link request gives the primary the addresses its host listens on, which the
        # user's home record then names: the proxy's, so no peer learns the real port. (The
        # link code names the primary's real port: this one dial of `init` goes past it.)
        listen = f"/ip4/{node.host}/tcp/{node.p2p_port}"
        if node.proxy is not None:
            listen = self._proxy_addr(node)
        args = ["init", "--data-dir", str(node.data_dir), "--link", offer["code"]]
        process = await asyncio.create_subprocess_exec(
            *prefix,
            node.script,
            *args,
            "--listen",
            listen,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise NodeProcessFailed(f"linking node {node.index} failed: {out.decode()[-400:]}")


async def _all(starts: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the starts together; when one fails the others are cancelled (a node cancelled
    while it starts is killed), so no node outlives a failed start unseen."""
    try:
        async with asyncio.TaskGroup() as group:
            for start in starts:
                group.create_task(start)
    except ExceptionGroup as failed:  # the first failure, as a caller of one start sees it
        raise failed.exceptions[0] from None


async def close_quietly(mesh: Mesh) -> None:
    """Stop the mesh whatever state it is in (a failed start, say)."""
    with contextlib.suppress(Exception):
        await mesh.stop()
    for node in mesh.nodes:
        if node.up and node.process is not None:
            await node.process.kill()
