"""A bare home node in its own process, for kill -9 tests and multi-process benchmarks; and
`spawn_home`, a whole home node (node + client API) as a person runs it (`hearthmesh run`).

`python -m hearthmesh.tools.node_process --data-dir D --port P [--connect ADDR] [--report]
[--listen MULTIADDR]` prints one JSON line (peer id, user id, address) once the node is up,
then serves until killed or until SIGTERM, which stops it cleanly. With `--report` it also
prints a JSON line `{"received": <message id hex>, "at_ns": <wall clock>}` for every message
it takes in. With `HEARTHMESH_COST_FILE` set, it measures windows of its own cost between two
signals (`tools/bench/cost_probe.py`). `HEARTHMESH_TRIO_ON_LOOP` sets `NodeConfig.trio_on_loop`,
and `HEARTHMESH_UVLOOP` the process's event loop (`tools/event_loop.py`), as they do for
`hearthmesh run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Protocol

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.protocol.errors import HearthError
from hearthmesh.tools import zygote
from hearthmesh.tools.bench.cost_probe import serve_windows, store_counters, trio_thread_of
from hearthmesh.tools.event_loop import run_node_loop
from hearthmesh.tools.process_gc import freeze_startup_objects, tune_collector
from hearthmesh.tools.settings import env_setting

__all__ = [
    "HomeProcess",
    "NodeProcess",
    "NodeProcessFailed",
    "free_port",
    "hearthmesh_script",
    "main",
    "serve",
    "spawn_home",
    "spawn_node",
]


async def _report(node: Node) -> None:
    async for event in node.events():
        if isinstance(event, MessageReceived):
            line = {"received": event.envelope.message_id.hex(), "at_ns": time.time_ns()}
            print(json.dumps(line), flush=True)


async def serve(
    data_dir: Path,
    port: int,
    connect: list[str],
    *,
    report: bool = False,
    listen: str | None = None,
) -> None:
    """Run one node until SIGTERM (listening on `listen` if given, else 127.0.0.1:`port`)."""
    config = NodeConfig(
        data_dir=data_dir,
        listen_addrs=(listen or f"/ip4/127.0.0.1/tcp/{port}",),
        presence_interval_ms=300,
        presence_ttl_ms=1500,
        retry_poll_ms=50,
        trio_on_loop=env_setting("trio_on_loop"),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with (
        Node(config) as node,
        serve_windows(partial(store_counters, node), trio_thread_of(node)),
    ):
        for address in connect:
            await node.connect(address)
        freeze_startup_objects()
        line = {
            "peer_id": node.peer_id,
            "user_id": node.user_id.hex(),
            "addr": node.listen_addrs[0],
        }
        print(json.dumps(line), flush=True)
        async with asyncio.TaskGroup() as group:
            reporter = group.create_task(_report(node)) if report else None
            await stop.wait()
            if reporter is not None:
                reporter.cancel()


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _fixed_ports() -> range:
    """Ports the kernel never gives an outgoing connection: those below its ephemeral range
    (Linux's default 32768-60999), or above it where the range starts low."""
    try:
        low, high = map(int, _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32_768, 60_999
    return range(10_000, low) if low > 20_000 else range(high + 1, 65_536) or range(low, high)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing holds right now, for a node to listen on a moment
    later. Not one from `bind(0)`: that is a port of the ephemeral range, which any outgoing
    connection on the machine may take before the node binds it (a whole suite under load
    failed so: "address already in use" at a node process's start); a random one outside it
    is taken only by another caller picking the same one."""
    ports, pick = _fixed_ports(), random.SystemRandom()  # the OS's: not a forked twin's sequence
    while True:
        port = pick.choice(ports)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class NodeProcessFailed(HearthError):
    """The node process ended before it said it was up."""


class ChildProcess(Protocol):
    """What we use of a node's process: exec'd (`asyncio.subprocess.Process`) or forked from
    the zygote (`zygote.ForkedProcess`, when the caller enabled it)."""

    pid: int
    stdout: asyncio.StreamReader | None

    @property
    def returncode(self) -> int | None: ...

    def kill(self) -> None: ...

    def terminate(self) -> None: ...

    async def wait(self) -> int: ...


class _Child:
    """A child process that can be killed (SIGKILL) or stopped cleanly (SIGTERM)."""

    def __init__(self, process: ChildProcess) -> None:
        self.process = process

    async def kill(self) -> None:
        """SIGKILL (once: a process already ended is left alone)."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()

    async def terminate(self) -> int:
        """SIGTERM and the exit code (a process already ended is left alone: its code)."""
        if self.process.returncode is None:
            self.process.terminate()
        return await self.process.wait()


class NodeProcess(_Child):
    """A node in a child process (hearthmesh.tools.node_process)."""

    def __init__(self, process: ChildProcess, info: dict[str, str]) -> None:
        super().__init__(process)
        self.peer_id = info["peer_id"]
        self.user_id = bytes.fromhex(info["user_id"])
        self.addr = info["addr"]

    async def reports(self) -> AsyncIterator[tuple[bytes, int]]:
        """(message id, wall-clock ns) for each message the node took in (`--report`)."""
        if self.process.stdout is None:
            return
        async for line in self.process.stdout:
            report = json.loads(line)
            yield bytes.fromhex(report["received"]), int(report["at_ns"])


async def spawn_node(
    data_dir: Path,
    port: int,
    connect: tuple[str, ...] = (),
    *,
    report: bool = False,
    listen: str | None = None,
    netns: str | None = None,
) -> NodeProcess:
    """Start a node process and wait for its ready line.

    Args:
        listen: the multiaddr to listen on instead of 127.0.0.1:`port`.
        netns: run the process in this network namespace (`ip netns exec`, needs root).
    """
    args = ["-m", "hearthmesh.tools.node_process", "--data-dir", str(data_dir)]
    args += ["--port", str(port), *[a for addr in connect for a in ("--connect", addr)]]
    if report:
        args.append("--report")
    if listen is not None:
        args += ["--listen", listen]
    process: ChildProcess
    if (forks := zygote.shared()) is not None:
        entry = "hearthmesh.tools.node_process:main"
        process = await forks.start(entry, [__file__, *args[2:]], netns=netns)
    else:
        # `ip netns exec` execs the command in place: the child's pid stays the node's.
        prefix = ["ip", "netns", "exec", netns] if netns is not None else []
        process = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, *args, stdout=asyncio.subprocess.PIPE
        )
    line = await process.stdout.readline() if process.stdout is not None else b""
    if not line:
        raise NodeProcessFailed(f"node process exited with {await process.wait()}")
    return NodeProcess(process, json.loads(line))


class HomeProcess(_Child):
    """A `hearthmesh run` process: a home node with its client API."""

    def __init__(self, process: ChildProcess, facts: dict[str, str]) -> None:
        super().__init__(process)
        self.user_text = facts["user id"]
        self.addr = facts["listening"]
        self.api = facts["api"]
        self.token = facts["token"]


def hearthmesh_script(venv_bin: Path | None = None) -> str:
    """The `hearthmesh` console script of this interpreter's venv (or of `venv_bin`)."""
    return str((venv_bin or Path(sys.executable).parent) / "hearthmesh")


async def spawn_home(
    data_dir: Path,
    *,
    name: str = "",
    api_port: int = 0,
    listen_port: int = 0,
    listen_host: str = "127.0.0.1",
    bootstrap: tuple[str, ...] = (),
    flags: tuple[str, ...] = (),
    netns: str | None = None,
    script: str | None = None,
    log: Path | None = None,
) -> HomeProcess:
    """Start `hearthmesh run` (creating the identity on first use) with any further `flags`;
    wait until its API is up.

    Args:
        listen_host: the IPv4 address libp2p listens on (the API stays on 127.0.0.1).
        netns: run it in this network namespace (`ip netns exec` execs in place, so the
            child's pid is the node's: kill -9 reaches it).
        script: another `hearthmesh` console script (another version, `simulate --upgrade`).
        log: append the process's stderr to this file (else it is ours).
    """
    args = ["run", "--data-dir", str(data_dir), "--api", f"127.0.0.1:{api_port}", "--no-mdns"]
    args += ["--listen", f"/ip4/{listen_host}/tcp/{listen_port}", "--name", name]
    if bootstrap:
        args += ["--bootstrap", *bootstrap]
    args += flags
    program = script or hearthmesh_script()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process: ChildProcess
    with contextlib.ExitStack() as files:
        stderr = None if log is None else files.enter_context(log.open("ab"))
        forks = zygote.shared() if program == hearthmesh_script() else None  # not another version
        if forks is not None:
            process = await forks.start(
                "hearthmesh.tools.cli:main",
                [program, *args],
                stderr=None if stderr is None else stderr.fileno(),
                env=env,
                netns=netns,
            )
        else:
            prefix = ["ip", "netns", "exec", netns] if netns is not None else []
            process = await asyncio.create_subprocess_exec(
                *prefix, program, *args, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
            )
    try:
        facts = await _home_facts(process)
    except BaseException:  # cancelled while it starts: no orphan is left behind
        if process.returncode is None:
            process.kill()
        raise
    facts["token"] = (data_dir / "api-token").read_text().strip()
    return HomeProcess(process, facts)


async def _home_facts(process: ChildProcess) -> dict[str, str]:
    """What `hearthmesh run` prints once its API is up: user id, listen address, API URL."""
    facts: dict[str, str] = {}
    while process.stdout is not None and "api" not in facts:
        line = (await process.stdout.readline()).decode()
        if not line:
            raise NodeProcessFailed(f"home node process exited with {await process.wait()}")
        key, _, value = line.strip().partition(":")
        if key in ("user id", "listening"):
            facts[key] = value.split()[0]
        elif key == "API":
            facts["api"] = value.split()[0]
    return facts


def main() -> None:
    """Entry point: `python -m hearthmesh.tools.node_process`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connect", action="append", default=[])
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--listen", help="a multiaddr to listen on instead of --port")
    args = parser.parse_args()
    tune_collector()
    run_node_loop(
        serve(args.data_dir, args.port, args.connect, report=args.report, listen=args.listen),
        uvloop=env_setting("uvloop"),
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
