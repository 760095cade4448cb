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

Shared: a zygote can also serve other processes (`share`: its owner listens on a Unix socket
and passes it over). A pytest run under xdist starts one in the controller and each worker
connects to it (`enable(address=...)`): the node is imported once a run, not once a worker
(~0.85 s of CPU each). The zygote imports on its first request, so a run that starts no node
pays nothing. Each connection's children die when it closes, as a zygote's do when its owner
closes; each child's CPU comes back with its exit code to the caller that started it.

Fork safety: the zygote imports, then forks before any thread, event loop or LMDB environment
exists in it (it checks that it has one thread); CPython re-seeds `random` in a fork's child
and the node draws its keys from `os.urandom`; logging has no handlers until the child's own
main sets them up. The children share the zygote's str hash seed (PYTHONHASHSEED is read at
interpreter start): nothing of ours depends on it differing between nodes. A child ends as
`sys.exit` ends a process but skips the interpreter's teardown of the heap it shares with the
zygote (`_exit_without_teardown`: ~90 ms of CPU a node process).

State: in the caller, each `Zygote`'s process (or connection) and control socket, the CPU
its ended children reported, and the one that `enable` makes shared by the process's node
starts; in the zygote, the status channel and the caller of each child it forked.
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
from typing import Final, NoReturn

from hearthmesh.protocol.errors import HearthError

__all__ = [
    "ADDRESS_ENV",
    "PRELOAD",
    "ForkedProcess",
    "Zygote",
    "ZygoteFailed",
    "cpu_s",
    "enable",
    "share",
    "shared",
    "shutdown",
]

PRELOAD: Final = (
    "hearthmesh.tools.cli",
    "hearthmesh.tools.home",
    "hearthmesh.tools.node_process",
    "hearthmesh.tools.settings",
    # what `hearthmesh run` imports after these, lazily: its client API (aiohttp) and the
    # other commands' parsers (~0.1 s of CPU in each forked home, not once in the zygote)
    "hearthmesh.node.api.server",
    "hearthmesh.node.api.service",
    "hearthmesh.tools.message_cli",
    "hearthmesh.tools.conformance.cli",
    "hearthmesh.tools.simulate.cli",
)
"""What a node process imports before it serves (`hearthmesh run`, the bare node process)."""

ADDRESS_ENV: Final = "HEARTHMESH_ZYGOTE_ADDRESS"
"""Where a shared zygote listens (`share` sets it for the processes started after it)."""

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
        self.cpu_s = 0.0
        """The CPU seconds it used, user and system (its children's too), once it ended."""

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
        if b"\n" in self._pending:  # "CODE CPU_S\n"
            code, cpu = self._pending.split(b"\n", 1)[0].split()
            self.cpu_s = float(cpu)
            self._returncode = int(code)


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
    it once, before its first fork) and stopped by `close`; with `listen` (a bound, listening
    Unix SEQPACKET socket, which it takes over) it also serves the processes that connect
    there (`Connected`)."""

    def __init__(
        self, preload: Sequence[str] = PRELOAD, *, listen: socket.socket | None = None
    ) -> None:
        self._preload = tuple(preload)
        self._listen = listen
        self._is_shared = listen is not None  # then each caller counts its children's CPU
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._lock = threading.Lock()  # one request at a time on the control socket
        self._children: list[ForkedProcess] = []  # not yet reported ended
        self._children_cpu_s = 0.0

    def _running(self) -> socket.socket:
        if self._control is not None and self._process is not None:
            if self._process.poll() is None:
                return self._control
            self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listen, self._listen = self._listen, None  # the zygote's alone from now on
        with theirs:
            # our sys.path, so that it imports what we would (wherever we run from)
            path = json.dumps(sys.path)
            fds = (theirs.fileno(),) if listen is None else (theirs.fileno(), listen.fileno())
            command = [sys.executable, "-m", "hearthmesh.tools.zygote", path, *map(str, fds)]
            self._process = subprocess.Popen(
                [*command, "--", *self._preload],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=fds,
            )
        if listen is not None:
            listen.close()
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
        """CPU seconds of the zygote (0 if it does not run) and of the children it has reaped
        so far: theirs reach this process's RUSAGE_CHILDREN only when the zygote ends. A
        zygote that serves others counts the children this process started alone (the
        others count theirs)."""
        if self._process is None:
            return 0.0
        try:
            with open(f"/proc/{self._process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), counted after the command
        if not self._is_shared:
            return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        own = sum(int(f) for f in fields[11:13]) / os.sysconf("SC_CLK_TCK")
        return own + self.children_cpu_s()

    def children_cpu_s(self) -> float:
        """CPU seconds of the children this process started that have ended (each reports
        its own when the zygote reaps it)."""
        for child in list(self._children):
            if child.returncode is not None:
                self._children_cpu_s += child.cpu_s
                self._children.remove(child)
        return self._children_cpu_s

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
        stdin = os.open(os.devnull, os.O_RDONLY)  # a node reads no input
        # stdout and stderr, when not given, are our process's descriptors, as a child
        # exec'd by `subprocess` inherits them (not sys.stdout: pytest's capture replaces it)
        stdio = (stdin, write_end, 2 if stderr is None else stderr)
        try:
            self._send(entry, argv, theirs, stdio, env=env, netns=netns)
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
        if self._is_shared:
            self._children.append(process)
        return process

    def run(self, entry: str, argv: Sequence[str]) -> int:
        """Fork a process that runs `entry` as `start` does, on this process's own stdin,
        stdout and stderr, and wait for it to end (blocking): its exit code. For a launcher
        that stands in for the process it asks for (tests/xdist_zygote.py); it hands its
        stdin and stdout over, so that only the child holds them and the other end sees
        their EOF when the child ends.

        Raises:
            ZygoteFailed: the zygote is gone or could not fork.
        """
        mine, theirs = socket.socketpair()
        with mine:
            try:
                with theirs:
                    self._send(entry, argv, theirs, (0, 1, 2))
            except OSError as exc:
                raise ZygoteFailed(f"the zygote is gone: {exc}") from exc
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1):
                os.dup2(null, fd)
            os.close(null)
            line = b""  # "PID\n", at times with the exit line after it
            while b"\n" not in line:
                if not (data := mine.recv(64)):
                    raise ZygoteFailed("the zygote did not fork the process")
                line += data
            pid_text, _, rest = line.partition(b"\n")
            process = ForkedProcess(int(pid_text), mine, None)
            if rest:
                process._take(rest)
            while (code := process.returncode) is None:  # a blocking socket: recv waits
                pass
            return code

    def _send(
        self,
        entry: str,
        argv: Sequence[str],
        channel: socket.socket,
        stdio: tuple[int, int, int],
        *,
        env: Mapping[str, str] | None = None,
        netns: str | None = None,
    ) -> None:
        """Ask the zygote for a child with our working directory; `channel` gets its pid,
        then its exit code and CPU."""
        request = {
            "entry": entry,
            "argv": list(argv),
            "env": dict(os.environ if env is None else env),
            "cwd": os.getcwd(),
            "netns": netns,
        }
        with self._lock:
            socket.send_fds(
                self._running(), [json.dumps(request).encode()], [channel.fileno(), *stdio]
            )


class Connected(Zygote):
    """A zygote another process owns and `share`s, reached at `address` (its `pid` is not
    known here): the connection is made on the first `start`; `close` ends it, and the
    zygote kills the children this process started that still run."""

    def __init__(self, address: str) -> None:
        super().__init__(())
        self._address = address
        self._is_shared = True

    def _running(self) -> socket.socket:
        if self._control is None:
            control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                control.connect(self._address)
            except OSError:
                control.close()
                raise
            self._control = control
        return self._control

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    def cpu_s(self) -> float:
        """CPU seconds of the children this process started that have ended (the zygote's
        own are its owner's)."""
        return self.children_cpu_s()


def _kill_unawaited(channel: socket.socket) -> None:
    """Kill the child whose pid the zygote is about to send on `channel` (it forks at once)."""
    with contextlib.suppress(OSError, ValueError), channel:
        channel.setblocking(True)
        channel.settimeout(10)
        pid = int(channel.recv(64).split(b"\n", 1)[0])
        os.kill(pid, signal.SIGKILL)


_shared: Zygote | None = None
"""The zygote of this process's node starts (`enable`)."""


def enable(preload: Sequence[str] = PRELOAD, *, address: str | None = None) -> None:
    """From now on this process's node starts fork from one zygote: its own (started on
    first use), or the one another process `share`s at `address`."""
    global _shared
    if _shared is None:
        _shared = Zygote(preload) if address is None else Connected(address)


def share(address: str, preload: Sequence[str] = PRELOAD) -> None:
    """Start this process's zygote now, serving too the processes that connect to `address`
    (a path, not yet in use; `ADDRESS_ENV` names it in our environment, for the processes we
    start after this). It imports on its first request; `shutdown` stops it and its
    children, everyone's."""
    global _shared
    if _shared is not None:
        raise ZygoteFailed("this process's zygote is made already")
    listen = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        listen.bind(address)  # bound before any connects: no process can come too early
        listen.listen()
    except OSError:
        listen.close()
        raise
    _shared = Zygote(preload, listen=listen)
    _shared._running()
    os.environ[ADDRESS_ENV] = address


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


@dataclass(frozen=True, slots=True)
class _Child:
    channel: socket.socket  # its status: the pid, then "CODE CPU_S" when it ended
    caller: socket.socket  # the control socket or connection that asked for it


def _serve(
    control: socket.socket, listen: socket.socket | None, preload: Sequence[str]
) -> _Request | None:
    """Fork a child per request, from the control socket or a connection made to `listen`,
    until the control socket closes (then kill and reap every child and return None); a
    connection that closes takes its children along. `preload` is imported before the first
    fork. Returns in a forked child, with the request it is to run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C: it closes control
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: dict[int, _Child] = {}
    callers = [control]
    selector = selectors.DefaultSelector()
    for source in (control, wake_read) if listen is None else (control, wake_read, listen):
        selector.register(source, selectors.EVENT_READ)
    loaded = False
    while True:
        for key, _ in selector.select():
            caller = key.fileobj
            if caller is listen:
                connection, _ = listen.accept()
                callers.append(connection)
                selector.register(connection, selectors.EVENT_READ)
                continue
            if not isinstance(caller, socket.socket):  # the wake-up pipe: a child ended
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
                continue
            try:
                message, fds, _, _ = socket.recv_fds(caller, _MAX_REQUEST_BYTES, _FDS_PER_REQUEST)
            except OSError:
                message, fds = b"", []
            if not message and caller is control:
                _end(children)
                return None
            if not message:  # a connection closed: its children go with it
                selector.unregister(caller)
                callers.remove(caller)
                caller.close()
                for pid in [pid for pid, child in children.items() if child.caller is caller]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)  # reaped with the others, below
                continue
            if not loaded:
                _preload(preload)
                loaded = True
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
                    owned = [*callers, channel, *(child.channel for child in children.values())]
                    for sock in owned if listen is None else [*owned, listen]:
                        sock.close()
                    return _request(message, (fds[1], fds[2], fds[3]))
                children[pid] = _Child(channel, caller)
                try:
                    channel.sendall(b"%d\n" % pid)
                except OSError:  # the caller gave up on it already: nobody owns the child
                    os.kill(pid, signal.SIGKILL)
            for fd in fds[1:]:
                os.close(fd)
        _reap(children, block=False)


def _preload(names: Sequence[str]) -> None:
    for name in names:
        importlib.import_module(name)
    if threading.active_count() != 1:  # a thread would not survive the fork: fail loudly
        raise SystemExit(f"zygote: {threading.active_count()} threads after the imports")
    gc.collect()
    gc.freeze()  # what the imports built is never scanned again, in the zygote or a child
    gc.disable()  # nor is it touched (copy-on-write) by a collection before the fork


def _reap(children: dict[int, _Child], *, block: bool) -> None:
    """Tell each ended child's caller its exit code and the CPU it used."""
    while children:
        try:
            pid, status, usage = os.wait4(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        child = children.pop(pid, None)
        if child is not None:
            code, cpu_s = os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
            with contextlib.suppress(OSError):  # a caller that stopped listening
                child.channel.sendall(b"%d %.3f\n" % (code, cpu_s))
            child.channel.close()


def _end(children: dict[int, _Child]) -> None:
    """The owner is gone: no child outlives it (as one killed with its launcher would not
    be reaped by anyone that cares)."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap(children, block=True)


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
    # CPython 3.11 keeps the zygote's thread id as the main thread's `native_id` after a
    # fork: whatever maps /proc/self/task to thread names (tools/bench/node_cost.py) would
    # find no main thread.
    vars(threading.main_thread())["_native_id"] = threading.get_native_id()
    gc.enable()


def main() -> None:
    """Entry point: `python -m hearthmesh.tools.zygote SYS_PATH_JSON CONTROL_FD [LISTEN_FD]
    -- MODULE...`."""
    args = sys.argv[1:]
    split = args.index("--")
    sys.path[:] = json.loads(args[0])
    control, *listen = (socket.socket(fileno=int(fd)) for fd in args[1:split])
    request = _serve(control, listen[0] if listen else None, args[split + 1 :])
    if request is None:
        sys.exit(0)
    _become(request)
    module, _, function = request.entry.partition(":")
    try:
        code = getattr(importlib.import_module(module), function)()
    except SystemExit as exc:
        code = exc.code
    _exit_without_teardown(code)


def _exit_without_teardown(code: object) -> NoReturn:
    """End a child as `sys.exit(code)` ends a process, less the interpreter's teardown.

    A child holds the zygote's whole heap (every import, copy-on-write); tearing its modules
    and objects down touched all of it, and cost a node process ~90 ms of CPU after its node
    had stopped: more than its whole start (40-60 ms). Kept, in the order
    `Py_FinalizeEx` runs them: the wait for non-daemon threads, the atexit functions (logging
    flushes and closes its handlers), the flush of stdout and stderr. Skipped: freeing what is
    left, which no one reads (what must reach a disk is closed by its owner before: a node's
    store at its stop; an error escaping the entry still takes the interpreter's own way).
    """
    status = 0 if code is None else code if isinstance(code, int) else 1
    if not isinstance(code, int | None):
        print(code, file=sys.stderr)  # as the interpreter reports sys.exit("text")
    threading._shutdown()  # type: ignore[attr-defined]  # joins them as Py_FinalizeEx does
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe, as at a normal exit
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
