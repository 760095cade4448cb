"""The zygote (tools/zygote.py): the processes it forks are processes of their own, with the
argv, environment, working directory, stdout and stderr the caller gave, their exit codes and
their deaths by kill -9 as an exec'd child's; none outlives the zygote's close. One zygote
serves the processes that connect to it too: none of a caller's children outlives its
connection, and each caller counts the CPU of its own children alone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearthmesh.tools.zygote import ADDRESS_ENV, Connected, Zygote
from tests.integration.conftest import wait_until

CHILD = "tests.tools.zygote_child:main"


@pytest.fixture
def forks() -> Iterator[Zygote]:
    zygote = Zygote(preload=("tests.tools.zygote_child",))
    yield zygote
    zygote.close()


def _children(zygote: Zygote) -> list[str]:
    return Path(f"/proc/{zygote.pid}/task/{zygote.pid}/children").read_text().split()


def _sharing(tmp_path: Path, preload: str) -> tuple[str, Zygote]:
    """A zygote that serves the processes that connect to the address too (`zygote.share`)."""
    address = str(tmp_path / "z")
    listen = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listen.bind(address)
    listen.listen()
    return address, Zygote(preload=(preload,), listen=listen)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_each_child_is_a_process_of_its_own_with_what_it_was_given(
    forks: Zygote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with asyncio.timeout(30):
        monkeypatch.chdir(tmp_path)
        facts = []
        for n in range(2):
            with (tmp_path / f"err{n}").open("wb") as err:
                env = {**os.environ, "ZYGOTE_TEST": f"child {n}"}
                child = await forks.start(
                    CHILD, [f"prog{n}", "facts"], env=env, stderr=err.fileno()
                )
            assert child.stdout is not None
            facts.append(json.loads(await child.stdout.read()))
            assert await child.wait() == 0 and child.returncode == 0
            assert facts[n]["pid"] == child.pid
            assert (tmp_path / f"err{n}").read_text() == "to stderr\n"
        assert facts[0]["pid"] != facts[1]["pid"]
        assert facts[0]["ppid"] == facts[1]["ppid"] == forks.pid != os.getpid()
        assert [f["argv"] for f in facts] == [["prog0", "facts"], ["prog1", "facts"]]
        assert [f["env"] for f in facts] == ["child 0", "child 1"]
        assert {f["cwd"] for f in facts} == {str(tmp_path)}
        assert facts[0]["random"] != facts[1]["random"]  # re-seeded in each child
        assert facts[0]["threads"] == 1
        assert [f["main_thread_id"] for f in facts] == [f["pid"] for f in facts]


async def test_kill_9_ends_that_child_alone_and_exit_codes_come_back(forks: Zygote) -> None:
    async with asyncio.timeout(30):
        sleeper = await forks.start(CHILD, ["zygote_child", "sleep"])
        other = await forks.start(CHILD, ["zygote_child", "sleep"])
        assert sleeper.stdout is not None and other.stdout is not None
        assert await sleeper.stdout.readline() == b"up\n" == await other.stdout.readline()
        os.kill(sleeper.pid, signal.SIGKILL)  # as a test's kill -9 does: the pid alone
        assert await sleeper.wait() == -signal.SIGKILL
        assert not _alive(sleeper.pid) and other.returncode is None and _alive(other.pid)
        other.terminate()
        assert await other.wait() == -signal.SIGTERM
        exits = await forks.start(CHILD, ["zygote_child", "exit", "3"])
        assert await exits.wait() == 3


async def test_a_child_exits_as_sys_exit_does_without_freeing_what_it_built(
    forks: Zygote, tmp_path: Path
) -> None:
    """Its buffered output, non-daemon threads, atexit functions and exit code (or message)
    are a process's; what is left is not freed (tools/zygote.py `_exit_without_teardown`: the
    teardown of the zygote's heap cost each node process ~90 ms of CPU)."""
    async with asyncio.timeout(30):
        for code, status, message in (("3", 3, ""), ("no store", 1, "no store\n")):
            with (tmp_path / f"err{code}").open("wb") as err:
                child = await forks.start(CHILD, ["zygote_child", "end", code], stderr=err.fileno())
            assert child.stdout is not None
            assert await child.stdout.read() == b"unflushed thread ended\natexit ran\n"
            assert await child.wait() == status
            assert (tmp_path / f"err{code}").read_text() == message


async def test_closing_the_zygote_kills_the_children_it_still_has(forks: Zygote) -> None:
    async with asyncio.timeout(30):
        sleeper = await forks.start(CHILD, ["zygote_child", "sleep"])
        assert sleeper.stdout is not None and await sleeper.stdout.readline() == b"up\n"
        forks.close()
        assert await sleeper.wait() == -signal.SIGKILL
        assert not _alive(sleeper.pid)


async def test_a_start_cancelled_before_the_pid_came_back_leaves_no_child(forks: Zygote) -> None:
    async with asyncio.timeout(30):
        first = await forks.start(CHILD, ["zygote_child", "exit", "0"])  # the zygote is up
        assert await first.wait() == 0
        starting = asyncio.ensure_future(forks.start(CHILD, ["zygote_child", "sleep"]))
        await asyncio.sleep(0)  # sent; now waiting for the pid
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        later = await forks.start(CHILD, ["zygote_child", "exit", "0"])  # forked after it
        assert await later.wait() == 0
        await wait_until(lambda: not _children(forks))  # killed, then reaped by the zygote


async def test_a_caller_gone_before_its_pid_is_sent_takes_neither_the_zygote_nor_a_child_along(
    forks: Zygote,
) -> None:
    async with asyncio.timeout(30):
        first = await forks.start(CHILD, ["zygote_child", "exit", "0"])  # the zygote is up
        assert await first.wait() == 0
        mine, theirs = socket.socketpair()
        mine.close()  # gone before the zygote answers
        request: dict[str, object] = {"entry": CHILD, "argv": ["zygote_child", "sleep"]}
        request |= {"env": dict(os.environ), "cwd": os.getcwd(), "netns": None}
        null = os.open(os.devnull, os.O_RDWR)
        with theirs:
            fds = [theirs.fileno(), null, null, 2]
            socket.send_fds(forks._running(), [json.dumps(request).encode()], fds)
        os.close(null)
        later = await forks.start(CHILD, ["zygote_child", "exit", "4"])  # still serving
        assert await later.wait() == 4
        await wait_until(lambda: not _children(forks))  # the orphan was killed and reaped


async def test_a_shared_zygote_forks_for_each_caller_and_a_closed_connection_takes_its_own_along(
    tmp_path: Path,
) -> None:
    address, owner = _sharing(tmp_path, "tests.tools.zygote_child")
    other = Connected(address)
    try:
        async with asyncio.timeout(30):
            mine = await owner.start(CHILD, ["zygote_child", "sleep"])
            theirs = [await other.start(CHILD, ["zygote_child", "sleep"]) for _ in range(2)]
            for child in (mine, *theirs):
                assert child.stdout is not None and await child.stdout.readline() == b"up\n"
            assert sorted(_children(owner)) == sorted(str(c.pid) for c in (mine, *theirs))
            spins = await other.start(CHILD, ["zygote_child", "spin", "0.3"])
            assert await spins.wait() == 0
            assert other.cpu_s() >= 0.3 > owner.children_cpu_s()  # each counts its own
            other.close()
            assert [await child.wait() for child in theirs] == [-signal.SIGKILL] * 2
            assert mine.returncode is None and _alive(mine.pid)  # the owner's stays up
            exits = await owner.start(CHILD, ["zygote_child", "exit", "5"])  # still serving
            assert await exits.wait() == 5
    finally:
        other.close()
        owner.close()
    assert not _alive(mine.pid)


EXECNET_LINE = "import sys;exec(eval(sys.stdin.readline()))"
"""What execnet's popen gateway runs with `-c` (tests/xdist_zygote.py stands in for it)."""
LAUNCHER = Path(__file__).parents[1] / "xdist_zygote.py"


async def test_the_worker_launcher_runs_the_code_in_a_fork_on_its_pipes_and_dies_with_it(
    tmp_path: Path,
) -> None:
    address, owner = _sharing(tmp_path, "tests.xdist_zygote")
    owner._running()
    env = {**os.environ, ADDRESS_ENV: address}
    code = "import os, sys\nprint(os.getpid(), os.getppid(), sys.stdin.readline().upper(), end='')"

    async def launch(source: str) -> asyncio.subprocess.Process:
        launcher = await asyncio.create_subprocess_exec(
            sys.executable, str(LAUNCHER), "-u", "-c", EXECNET_LINE, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert launcher.stdin is not None
        launcher.stdin.write(f"{source!r}\nhello\n".encode())
        await launcher.stdin.drain()
        return launcher

    try:
        async with asyncio.timeout(30):
            echoes = await launch(code + "\nsys.exit(3)")
            out, _ = await echoes.communicate()
            pid, ppid, text = out.decode().split()
            assert (int(ppid), text) == (owner.pid, "HELLO") and int(pid) != echoes.pid
            assert echoes.returncode == 3
            sleeps = await launch(code + "\nsys.stdout.flush()\nimport time\ntime.sleep(60)")
            assert sleeps.stdout is not None
            pid, ppid, text = (await sleeps.stdout.readline()).decode().split()
            assert int(ppid) == owner.pid and _alive(int(pid))
            sleeps.kill()  # as execnet kills a worker it gave up on
            await sleeps.wait()
            await wait_until(lambda: not _children(owner))  # the fork went with it
    finally:
        owner.close()
