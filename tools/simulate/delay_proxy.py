"""The TCP delay proxy of `hearthmesh simulate --latency` (SPEC §20.4): this kernel has no
netem, so each node gets a listener that forwards every connection to the node's real listen
port and holds every chunk `delay` seconds in each direction, in order. The node announces the
proxy's address (`hearthmesh run --announce`), so peers dial the proxy: one hop, one delay each
way.

What a direction holds is bounded: once `HOLD_BYTES` wait, it stops reading, and TCP's window
slows the sender (a reader that stops cannot make the proxy hold more than `MAX_HELD_BYTES`).

State: the listener, its connections and what each direction holds (`DelayProxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hearthmesh.protocol.errors import HearthError
from hearthmesh.tools.netlab import in_netns

__all__ = [
    "HOLD_BYTES",
    "MAX_HELD_BYTES",
    "DelayProxy",
    "Latency",
    "LatencySpecError",
    "parse_latency",
    "unproxied_peers",
]

CHUNK = 65536
HOLD_BYTES = 256 * 1024
"""What one direction keeps waiting out its delay before it stops reading."""
MAX_HELD_BYTES = 2 * (HOLD_BYTES + 2 * CHUNK + 64 * 1024)
"""One connection, both directions: the held chunks, one more read, and a transport's write
buffer up to asyncio's high-water mark (64 KiB) plus the chunk written over it."""


class LatencySpecError(HearthError):
    """A --latency value that does not parse."""


@dataclass(frozen=True, slots=True)
class Latency:
    """One-way delay per hop: `delay_s`, plus or minus up to `jitter_s` (uniform)."""

    delay_s: float
    jitter_s: float = 0.0

    def sampler(self, seed: int) -> Callable[[], float]:
        rng = random.Random(seed)
        low, high = max(0.0, self.delay_s - self.jitter_s), self.delay_s + self.jitter_s
        return (lambda: self.delay_s) if self.jitter_s == 0 else (lambda: rng.uniform(low, high))


_LATENCY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:(?:±|\+-|\+/-)\s*(\d+(?:\.\d+)?))?\s*$")


def parse_latency(text: str) -> Latency:
    """`MS` or `MS±JITTER` (also `MS+-JITTER`), milliseconds."""
    match = _LATENCY.match(text)
    if match is None:
        raise LatencySpecError(f"--latency {text!r}: MS or MS±JITTER in milliseconds")
    delay, jitter = float(match[1]), float(match[2] or 0)
    if jitter > delay:
        raise LatencySpecError(f"--latency {text!r}: the jitter exceeds the delay")
    return Latency(delay / 1000, jitter / 1000)


class _Direction:
    """One direction of one connection: each chunk read is written `delay()` s later, never
    before the chunk read ahead of it (order kept under jitter)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay: Callable[[], float],
        source: asyncio.WriteTransport,
    ) -> None:
        """`source`: the transport `reader` reads, aborted when the far side is gone."""
        self._reader = reader
        self._writer = writer
        self._source = source
        self._delay = delay
        self._chunks: deque[tuple[float, bytes]] = deque()
        self._queued = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._ended = False

    def held(self) -> int:
        """Bytes read and not yet handed to the kernel."""
        transport = self._writer.transport
        buffered = 0 if transport.is_closing() else transport.get_write_buffer_size()
        return self._queued + buffered

    async def run(self) -> None:
        """Until the source ends and all it sent was written; then half-close the far side
        (its peer still sends until it closes too)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read())
            group.create_task(self._write())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        try:
            while data := await self._reader.read(CHUNK):
                last = max(loop.time() + self._delay(), last)
                self._chunks.append((last, data))
                self._queued += len(data)
                self._arrived.set()
                while self._queued >= HOLD_BYTES:  # a slow reader on the far side: wait
                    self._room.clear()
                    await self._room.wait()
        except OSError:
            pass  # a reset ends this side as an EOF would: what was read is still delivered
        finally:
            self._ended = True
            self._arrived.set()

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._chunks:
                if self._ended:
                    if self._writer.can_write_eof():
                        with contextlib.suppress(OSError):
                            self._writer.write_eof()
                    return
                self._arrived.clear()
                await self._arrived.wait()
            at, data = self._chunks[0]
            await asyncio.sleep(max(0.0, at - loop.time()))
            self._chunks.popleft()
            self._queued -= len(data)
            self._room.set()
            try:
                self._writer.write(data)
                await self._writer.drain()
            except OSError:  # the far side is gone: so is the near one
                self._chunks.clear()
                self._queued = 0
                self._source.abort()
                return


class DelayProxy:
    """A listener on `listen` whose every connection reaches `upstream` with each chunk
    delayed; in namespace `ns` when given (a socket keeps the namespace it was made in)."""

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        delay: Callable[[], float],
        *,
        ns: str | None = None,
    ) -> None:
        self.listen = listen
        self.upstream = upstream
        self._delay = delay
        self._ns = ns
        self._server: asyncio.Server | None = None
        self._directions: set[_Direction] = set()
        self.upstream_sources: set[tuple[str, int]] = set()
        """The (address, port) each live upstream connection comes from: what the node sees
        a proxied dial come from."""
        self.accepted = 0

    async def start(self) -> None:
        with in_netns(self._ns) if self._ns else contextlib.nullcontext():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.listen)
        self._server = await asyncio.start_server(self._handle, sock=sock, limit=CHUNK)

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the kernel's pick for 0)."""
        assert self._server is not None, "started"
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def held(self) -> int:
        """Bytes the proxy holds now, over every connection."""
        return sum(d.held() for d in self._directions)

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, tuple[str, int]]:
        with in_netns(self._ns) if self._ns else contextlib.nullcontext():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self.upstream[0], 0))  # the source known before the node sees it
            source = sock.getsockname()
            self.upstream_sources.add(source)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, self.upstream)
            reader, writer = await asyncio.open_connection(sock=sock, limit=CHUNK)
        except BaseException:
            self.upstream_sources.discard(sock.getsockname())
            sock.close()
            raise
        return reader, writer, source

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer, source = await self._dial()
        except OSError:  # the node is down: the dialler sees a reset, as near a refusal as can be
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        there = _Direction(reader, up_writer, self._delay, writer.transport)
        back = _Direction(up_reader, writer, self._delay, up_writer.transport)
        self._directions |= {there, back}
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(there.run())
                group.create_task(back.run())
        finally:
            self._directions -= {there, back}
            self.upstream_sources.discard(source)
            for side in (writer, up_writer):
                side.close()


def _tcp4(hexed: str) -> tuple[str, int]:
    address, port = hexed.split(":")
    return socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)


def unproxied_peers(pid: int, port: int, proxied: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """Connections process `pid` holds established on its listen `port` that did not come
    through its proxy (whose upstream sources are `proxied`): a peer that dialled the real
    port. Read from /proc/PID/net/tcp, which shows the process's own network namespace."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:  # the process is gone
        return set()
    found: set[tuple[str, int]] = set()
    for line in lines:
        fields = line.split()
        local, remote, state = _tcp4(fields[1]), _tcp4(fields[2]), fields[3]
        if state == "01" and local[1] == port and remote not in proxied:  # 01: ESTABLISHED
            found.add(remote)
    return found
