"""A zygote: one process that imports the node once, then forks each node process that the
test suite or `hearthmesh simulate` (SPEC §20.4) starts.

An exec'd `hearthmesh run` spends ~0.85 s of CPU importing hearthmesh, libp2p, aiohttp and
vodozemac before it does anything of its own. Forked from a process that has them imported,
a node starts on its own work alone. Each child is still a real OS process: its own pid
(kill -9 kills it and nothing else), its own stdin, stdout and stderr (the caller's pipe or
file, passed over SCM_RIGHTS), argv, environment, working directory and, if asked, network
namespace; its exit code comes back as `asyncio.subprocess.Process` gives it (-9 after
kill -9). `hearthmesh run` as people start it is unchanged: only callers that `enable()` the
zygote (tests/conftest.py, the simulator) get their nodes this way.

Fork safety: the zygote imports, then forks before any thread, event loop or LMDB environment
exists in it (it checks that it has one thread); CPython re-seeds `random` in a fork's child
and the node draws its keys from `os.urandom`; logging has no handlers until the child's own
main sets them up. The children share the zygote's str hash seed (PYTHONHASHSEED is read at
interpreter start): nothing of ours depends on it differing between nodes.

State: in the caller, each `Zygote`'s process and control socket, and the one that `enable`
makes shared by the process's node starts; in the zygote, the status channel of each child it
forked.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import importlib
import io
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from hearthmesh.protocol.errors import HearthError

__all__ = [
    "PRELOAD",
    "ForkedProcess",
    "Zygote",
    "ZygoteFailed",
    "cpu_s",
    "enable",
    "shared",
    "shutdown",
]

PRELOAD: Final = (
    "hearthmesh.tools.cli",
    "hearthmesh.tools.home",
    "hearthmesh.tools.node_process",
    "hearthmesh.tools.settings",
)
"""What a node process imports before it serves (`hearthmesh run`, the bare node process)."""

_MAX_REQUEST_BYTES: Final = 1 << 20
_FDS_PER_REQUEST: Final = 4  # status channel, stdin, stdout, stderr
_CLONE_NEWNET: Final = 0x40000000


class ZygoteFailed(HearthError):
    """The zygote could not start a process (it is gone, or the fork failed)."""


# ---- the caller's side ---------------------------------------------------------------------


class ForkedProcess:
    """A child of the zygote, with the part of `asyncio.subprocess.Process` our callers use:
    `pid`, `returncode`, `stdout` (a StreamReader when piped), `kill`, `terminate`, `wait`."""

    def __init__(
        self, pid: int, channel: socket.socket, stdout: asyncio.StreamReader | None
    ) -> None:
        self.pid = pid
        self.stdout = stdout
        self._channel = channel  # the zygote writes the exit code here, then closes it
        self._pending = b""
        self._returncode: int | None = None
        self._waiting = asyncio.Lock()

    @property
    def returncode(self) -> int | None:
        """The exit code (-N: killed by signal N), or None while it runs."""
        if self._returncode is None:
            with contextlib.suppress(BlockingIOError):
                self._take(self._channel.recv(64))
        return self._returncode

    def send_signal(self, signum: int) -> None:
        # A child the zygote has reaped has said so on the channel first: its pid is not
        # signalled after it could have been reused.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    async def wait(self) -> int:
        """Wait until the process has ended; its exit code."""
        async with self._waiting:  # one watcher of the channel at a time
            while (code := self.returncode) is None:
                await _readable(self._channel)
        self._channel.close()
        return code

    def _take(self, data: bytes) -> None:
        if not data:  # the zygote is gone (killing what it had, `_end`): no code will come
            self._returncode = -signal.SIGKILL
        self._pending += data
        if b"\n" in self._pending:
            self._returncode = int(self._pending.split(b"\n", 1)[0])


async def _readable(channel: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(channel.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(channel.fileno())


class Zygote:
    """A zygote process, started on the first `start` (the imports of `preload` then run in
    it once) and stopped by `close`."""

    def __init__(self, preload: Sequence[str] = PRELOAD) -> None:
        self._preload = tuple(preload)
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._lock = threading.Lock()  # one request at a time on the control socket

    def _running(self) -> socket.socket:
        if self._control is not None and self._process is not None:
            if self._process.poll() is None:
                return self._control
            self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            # our sys.path, so that it imports what we would (wherever we run from)
            path = json.dumps(sys.path)
            command = [sys.executable, "-m", "hearthmesh.tools.zygote", str(theirs.fileno()), path]
            self._process = subprocess.Popen(
                [*command, *self._preload],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        self._control = ours
        return ours

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def close(self) -> None:
        """Stop the zygote, if it runs (it kills any child still up), and reap it: the CPU it
        and its children used then counts in this process's RUSAGE_CHILDREN."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            self._process.wait()
            self._process = None

    def cpu_s(self) -> float:
        """CPU seconds of the zygote and the children it has reaped so far (0 if it does not
        run): theirs reach this process's RUSAGE_CHILDREN only when the zygote ends."""
        if self._process is None:
            return 0.0
        try:
            with open(f"/proc/{self._process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), counted after the command
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    async def start(
        self,
        entry: str,
        argv: Sequence[str],
        *,
        stdout_pipe: bool = True,
        stderr: int | None = None,
        env: Mapping[str, str] | None = None,
        netns: str | None = None,
    ) -> ForkedProcess:
        """Fork a process that runs `entry` ("module:function", called with no arguments;
        what it returns or raises is its exit, as a console script's) with `sys.argv` =
        `argv`, in our working directory.

        Args:
            stdout_pipe: give the child a pipe for stdout, read through
                `ForkedProcess.stdout` (else it writes to ours).
            stderr: the file descriptor the child writes stderr to (else ours).
            env: the child's environment (else ours).
            netns: the network namespace the child runs in (`ip netns add` made it).

        Raises:
            ZygoteFailed: the zygote is gone or could not fork.
        """
        loop = asyncio.get_running_loop()
        mine, theirs = socket.socketpair()
        read_end, write_end = os.pipe() if stdout_pipe else (-1, 1)
        request = {
            "entry": entry,
            "argv": list(argv),
            "env": dict(os.environ if env is None else env),
            "cwd": os.getcwd(),
            "netns": netns,
        }
        stdin = os.open(os.devnull, os.O_RDONLY)  # a node reads no input
        # stdout and stderr, when not given, are our process's descriptors, as a child
        # exec'd by `subprocess` inherits them (not sys.stdout: pytest's capture replaces it)
        fds = [theirs.fileno(), stdin, write_end, 2 if stderr is None else stderr]
        try:
            with self._lock:
                socket.send_fds(self._running(), [json.dumps(request).encode()], fds)
        except OSError as exc:
            mine.close()
            if stdout_pipe:
                os.close(read_end)
            raise ZygoteFailed(f"the zygote is gone: {exc}") from exc
        finally:
            theirs.close()
            os.close(stdin)
            if stdout_pipe:
                os.close(write_end)
        reader: asyncio.StreamReader | None = None
        transport: asyncio.BaseTransport | None = None
        try:
            if stdout_pipe:
                reader = asyncio.StreamReader(loop=loop)
                pipe = os.fdopen(read_end, "rb", buffering=0)
                protocol = asyncio.StreamReaderProtocol(reader)
                transport, _ = await loop.connect_read_pipe(lambda: protocol, pipe)
            mine.setblocking(False)
            line = b""
            while not line.endswith(b"\n"):
                data = await loop.sock_recv(mine, 64)
                if not data:
                    raise ZygoteFailed("the zygote did not fork the process")
                line += data
        except BaseException:  # cancelled while it starts: no orphan is left behind
            _kill_unawaited(mine)
            if transport is not None:
                transport.close()
            raise
        pid_text, _, rest = line.partition(b"\n")
        process = ForkedProcess(int(pid_text), mine, reader)
        if rest:
            process._take(rest)
        return process


def _kill_unawaited(channel: socket.socket) -> None:
    """Kill the child whose pid the zygote is about to send on `channel` (it forks at once)."""
    with contextlib.suppress(OSError, ValueError), channel:
        channel.setblocking(True)
        channel.settimeout(10)
        pid = int(channel.recv(64).split(b"\n", 1)[0])
        os.kill(pid, signal.SIGKILL)


_shared: Zygote | None = None
"""The zygote of this process's node starts (`enable`)."""


def enable(preload: Sequence[str] = PRELOAD) -> None:
    """From now on this process's node starts fork from one zygote (started on first use)."""
    global _shared
    if _shared is None:
        _shared = Zygote(preload)


def shared() -> Zygote | None:
    """The zygote `enable` made (None: this process execs its nodes)."""
    return _shared


def cpu_s() -> float:
    """`Zygote.cpu_s` of the shared zygote (0 if not enabled)."""
    return 0.0 if _shared is None else _shared.cpu_s()


def shutdown() -> None:
    """Close the shared zygote (a later `start` starts it again)."""
    if _shared is not None:
        _shared.close()


atexit.register(shutdown)


# ---- the zygote's side ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    entry: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    netns: str | None
    stdio: tuple[int, int, int]


def _serve(control: socket.socket) -> _Request | None:
    """Fork a child per request until the control socket closes (then kill and reap what is
    left and return None). Returns in a forked child, with the request it is to run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C: it closes control
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    channels: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is not control:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
                continue
            message, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST_BYTES, _FDS_PER_REQUEST)
            if not message:
                _end(channels)
                return None
            channel = socket.socket(fileno=fds[0])
            try:
                pid = os.fork()
            except OSError:
                channel.close()  # the caller reads EOF: ZygoteFailed
            else:
                if pid == 0:  # the child: leave the zygote's loop for the request
                    signal.set_wakeup_fd(-1)
                    selector.close()
                    for fd in (wake_read, wake_write):
                        os.close(fd)
                    for owned in (control, channel, *channels.values()):
                        owned.close()
                    return _request(message, (fds[1], fds[2], fds[3]))
                channels[pid] = channel
                try:
                    channel.sendall(b"%d\n" % pid)
                except OSError:  # the caller gave up on it already: nobody owns the child
                    os.kill(pid, signal.SIGKILL)
            for fd in fds[1:]:
                os.close(fd)
        _reap(channels, block=False)


def _reap(channels: dict[int, socket.socket], *, block: bool) -> None:
    """Tell each ended child's caller its exit code."""
    while channels:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        channel = channels.pop(pid, None)
        if channel is not None:
            with contextlib.suppress(OSError):  # a caller that stopped listening
                channel.sendall(b"%d\n" % os.waitstatus_to_exitcode(status))
            channel.close()


def _end(channels: dict[int, socket.socket]) -> None:
    """The caller is gone: no child outlives it (as one killed with its launcher would not
    be reaped by anyone that cares)."""
    for pid in channels:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap(channels, block=True)


def _request(message: bytes, stdio: tuple[int, int, int]) -> _Request:
    fields = json.loads(message)
    return _Request(
        entry=fields["entry"],
        argv=fields["argv"],
        env=fields["env"],
        cwd=fields["cwd"],
        netns=fields["netns"],
        stdio=stdio,
    )


def _become(request: _Request) -> None:
    """Turn the fresh child into the process the request describes."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(request.stdio):
        if fd != target:
            os.dup2(fd, target)
    for fd in set(request.stdio) - {0, 1, 2}:
        os.close(fd)
    if request.netns is not None:
        import ctypes  # only here: the zygote's children in a namespace need it

        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/var/run/netns/{request.netns}") as namespace:
            if libc.setns(namespace.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {request.netns} failed")
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    sys.argv = list(request.argv)
    # The streams are the zygote's objects on the new descriptors; PYTHONUNBUFFERED was read
    # when the zygote started, so honour the child's own here (line by line, as `-u` nearly).
    if request.env.get("PYTHONUNBUFFERED") and isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    gc.enable()


def main() -> None:
    """Entry point: `python -m hearthmesh.tools.zygote CONTROL_FD SYS_PATH_JSON MODULE...`."""
    control = socket.socket(fileno=int(sys.argv[1]))
    sys.path[:] = json.loads(sys.argv[2])
    for name in sys.argv[3:]:
        importlib.import_module(name)
    if threading.active_count() != 1:  # a thread would not survive the fork: fail loudly
        raise SystemExit(f"zygote: {threading.active_count()} threads after the imports")
    gc.collect()
    gc.freeze()  # what the imports built is never scanned again, in the zygote or a child
    gc.disable()  # nor is it touched (copy-on-write) by a collection before the fork
    request = _serve(control)
    if request is None:
        sys.exit(0)
    _become(request)
    module, _, function = request.entry.partition(":")
    sys.exit(getattr(importlib.import_module(module), function)())


if __name__ == "__main__":
    main()
