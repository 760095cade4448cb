"""Fail-stop and restart (SPEC §11.8.5, §11.8.6): a node whose libp2p run ends unasked says
so, acks nothing more and stops; `hearthmesh run` starts it again, and what it acked before
the fault is delivered then."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from pathlib import Path

import pytest

from hearthmesh.node.api import ApiServer
from hearthmesh.node.events import MessageReceived
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.protocol.errors import ErrorCode, StorageError
from hearthmesh.protocol.identity import UserId, user_id_text
from hearthmesh.storage.api import Direction
from hearthmesh.tools.client import ApiRefused
from hearthmesh.tools.home import init_node, serve_restarting
from hearthmesh.tools.restarts import RestartPolicy
from hearthmesh.tools.settings import HomeSettings

from .api_helpers import home, open_conversation
from .conftest import collect, free_port, node_config
from .test_mesh import _open_files

pytestmark = pytest.mark.integration

OTHER = user_id_text(UserId(bytes(range(32))))


def end_the_libp2p_run(node: Node) -> None:
    """What session 13's escaped pubsub error did: a task of the node's trio run raises, and
    trio ends the whole run. The task is started through the bridge as libp2p's own are;
    nothing of the node is replaced or patched."""
    bridge = node._host._bridge

    async def escaped() -> None:
        raise RuntimeError("a libp2p task's error escaped")

    bridge.run_sync_soon(bridge.spawn, escaped)


@pytest.mark.parametrize("on_loop", [False, True], ids=["trio-thread", "trio-on-loop"])
async def test_a_node_whose_libp2p_run_ends_says_so_refuses_sends_and_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, on_loop: bool
) -> None:
    async with asyncio.timeout(30):
        async with home(tmp_path / "warm-up", trio_on_loop=on_loop):  # pools a process keeps
            pass
        threads, files = set(threading.enumerate()), _open_files()
        async with home(tmp_path / "a", trio_on_loop=on_loop) as a:
            room = await open_conversation(a, OTHER)
            path = f"/v1/conversation/{room}/messages"
            acked = await a.client.call("POST", path, {"message": "acked before"})
            with caplog.at_level(logging.WARNING):
                end_the_libp2p_run(a.node)
                failure = await a.node.wait_failed()
            assert "a libp2p task's error escaped" in str(failure)
            assert a.node.failure is failure
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert [r.name for r in errors] == ["hearthmesh.node.node"], errors
            assert "delivers nothing until it is started again" in errors[0].getMessage()
            status = await a.status()
            assert status["state"] == "failed"
            assert "a libp2p task's error escaped" in status["failure"]
            assert status["user_id"] and "connected_peers" in status  # the fields it had
            with pytest.raises(ApiRefused) as refused:
                await a.client.call("POST", path, {"message": "not acked"})
            assert refused.value.status == 503
            assert refused.value.error_code == ErrorCode.NODE_FAILED
        # What was acked is on disk, and the restarted node still owes its delivery.
        async with Node(node_config(tmp_path / "a")) as again:
            page = await again.history(RoomId(bytes.fromhex(room)), direction=Direction.FORWARD)
            assert [e.envelope.message_id.hex() for e in page.events][-1:] == [acked["message_id"]]
        assert [t.name for t in threading.enumerate() if t not in threads] == []
        assert _open_files() - files == Counter()
        assert asyncio.all_tasks() == {asyncio.current_task()}


class _Run:
    """`hearthmesh run`'s serving loop in this process, with each node it starts."""

    def __init__(self, tmp_path: Path, policy: RestartPolicy) -> None:
        self.data_dir = tmp_path / "alice"
        init_node(self.data_dir, "alice", force=False)
        self.settings = HomeSettings(
            data_dir=self.data_dir,
            api="127.0.0.1:0",
            listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"],  # one port: a peer redials it
            mdns=False,
            upnp=False,
            webrtc=False,
            name="alice",
        )
        self.policy = policy
        self.stop = asyncio.Event()
        self.nodes: asyncio.Queue[Node] = asyncio.Queue()

    def started(self, node: Node, _api: ApiServer) -> None:
        self.nodes.put_nowait(node)

    async def serve(self) -> int:
        return await serve_restarting(self.settings, self.started, self.stop, self.policy)


async def test_hearthmesh_run_restarts_a_failed_node_which_delivers_what_it_acked(
    tmp_path: Path,
) -> None:
    run = _Run(tmp_path, RestartPolicy(first_wait_s=0.1))
    async with asyncio.timeout(60), asyncio.TaskGroup() as group:
        serving = group.create_task(run.serve())
        alice = await run.nodes.get()
        async with Node(node_config(tmp_path / "bob")) as bob:
            bob_id = bob.user_id
            await alice.connect(bob.listen_addrs[0])  # each learns the other's home record
        room = await alice.open_direct(bob_id)
        sent = await alice.send(room, b"acked while bob is away")  # durable: in alice's outbox
        end_the_libp2p_run(alice)
        restarted = await run.nodes.get()
        assert alice.failure is not None and restarted.failure is None
        async with Node(node_config(tmp_path / "bob")) as bob:
            arriving = asyncio.create_task(
                collect(
                    bob.events(),
                    MessageReceived,
                    1,
                    lambda e: e.envelope.message_id == sent.message_id,
                )
            )
            await bob.connect(restarted.listen_addrs[0])
            [received] = await arriving
            assert received.envelope.message_id == sent.message_id
        run.stop.set()
        assert await serving == 0


async def test_hearthmesh_run_gives_up_when_faults_repeat(tmp_path: Path) -> None:
    run = _Run(tmp_path, RestartPolicy(first_wait_s=0.05, give_up_faults=2))
    async with asyncio.timeout(60), asyncio.TaskGroup() as group:
        serving = group.create_task(run.serve())
        for _ in range(2):
            node = await run.nodes.get()
            end_the_libp2p_run(node)
        assert await serving == 1
        assert run.nodes.empty()  # no third start


async def test_hearthmesh_run_gives_up_when_a_restart_fails_on_the_store(tmp_path: Path) -> None:
    """Starting again cannot cure a store that does not open: the run ends (`run_node` prints
    the error and exits 1, as for a first start that fails so)."""
    run = _Run(tmp_path, RestartPolicy(first_wait_s=2))
    async with asyncio.timeout(30):
        serving = asyncio.create_task(run.serve())  # not in a group: its error is the subject
        node = await run.nodes.get()
        end_the_libp2p_run(node)
        await node.wait_failed()
        await node.stop()  # returns once the fail-stop closed the store
        (run.data_dir / "store" / "data.mdb").write_bytes(b"not an LMDB file" * 512)
        with pytest.raises(StorageError, match="cannot open store"):
            await serving
        assert run.nodes.empty()


async def test_a_stop_during_the_wait_before_a_restart_ends_the_run(tmp_path: Path) -> None:
    """The wait is 10 minutes here; the run ends within the test's bound all the same."""
    run = _Run(tmp_path, RestartPolicy(first_wait_s=600))
    async with asyncio.timeout(30), asyncio.TaskGroup() as group:
        serving = group.create_task(run.serve())
        node = await run.nodes.get()
        end_the_libp2p_run(node)
        await node.wait_failed()
        await asyncio.sleep(0)  # the loop goes on to its wait
        run.stop.set()
        assert await serving == 0
        assert run.nodes.empty()
