"""AutoNAT (SPEC §10.6): while a node's reachability is unknown, a server that has answered is
asked again only when enough verdicts could be held to decide; a busy node whose dial-back
connects but handshakes slowly is not told private; a request's dial-backs end with the
asker's wait; a node only this machine can dial runs no rounds by itself."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import multiaddr  # type: ignore[import-untyped]
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.host.basic_host import BasicHost
from libp2p.peer.id import ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from hearthmesh.node.p2p import autonat
from hearthmesh.node.p2p.addresses import loopback_only
from hearthmesh.node.p2p.autonat import Reachability, worth_asking
from hearthmesh.node.p2p.host import peer_id_from_seed
from hearthmesh.node.p2p.periodic_jobs import PeriodicJobs
from tests.integration.conftest import wait_until
from tests.node.test_libp2p_host import config, hosts, seed

A, B, C = (ID.from_base58(peer_id_from_seed(seed(n))) for n in (1, 2, 3))


def test_too_few_servers_to_decide_are_not_asked_again() -> None:
    assert worth_asking([A], answered={A: True}, confirmations=3) == []
    assert worth_asking([A, B], answered={A: True}, confirmations=3) == [B]
    assert worth_asking([B], answered={A: True, C: False}, confirmations=3) == [B]


def test_every_server_is_asked_once_verdicts_enough_to_decide_could_be_held() -> None:
    assert worth_asking([A, B], answered={A: True}, confirmations=2) == [A, B]
    assert worth_asking([A, B], answered={A: True, C: False}, confirmations=3) == [A, B]
    assert worth_asking([], answered={}, confirmations=3) == []


async def test_a_node_on_loopback_alone_runs_no_rounds_by_itself_one_elsewhere_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """a advertises 127.0.0.1 only: however many rounds' waits pass, it asks no server (only
    this machine could dial it back), yet `check_reachability` still asks. c, which advertises
    an address elsewhere, runs its rounds: b refuses it (not at the IP the request came from),
    so c is private. Fails with the loopback rule undone (a's rounds run, a turns public)."""
    monkeypatch.setattr(autonat, "UNKNOWN_RETRY_S", 0.05)
    monkeypatch.setattr(autonat, "IDENTIFY_GRACE_S", 0.05)
    skipped = 0  # round waits that ended in the loopback rule's skip: only a's do

    def counted(addrs: Sequence[str]) -> bool:
        nonlocal skipped
        skipped += (only := loopback_only(addrs))
        return only

    monkeypatch.setattr(autonat, "loopback_only", counted)
    elsewhere = {"announce_addrs": ["/ip4/192.0.2.1/tcp/4001"], "autonat_confirmations": 1}
    async with (
        asyncio.timeout(20),
        hosts(
            config(1, autonat_confirmations=1),
            config(2, autonat_checks=False),
            config(3, **elsewhere),
        ) as (a, b, c),
    ):
        await a.connect(b.listen_addrs[0])
        await c.connect(b.listen_addrs[0])
        await wait_until(lambda: c.reachability is Reachability.PRIVATE)
        # Ten of a's round waits have passed, each a round before the rule (or one ran).
        await wait_until(lambda: skipped >= 10 or a.wire()["periodic"]["autonat_round"]["runs"])
        assert a.wire()["periodic"]["autonat_round"]["runs"] == 0
        assert a.reachability is Reachability.UNKNOWN
        assert await a.check_reachability() is Reachability.PUBLIC


async def test_a_node_with_one_server_is_dialled_back_once_not_every_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With rounds 0.1 s apart while unknown: a, connected to b alone, is dialled back by b
    once (before, once a round); when c connects two verdicts can decide (confirmations 2),
    so that round asks b again and c, and a is public."""
    monkeypatch.setattr(autonat, "UNKNOWN_RETRY_S", 0.05)
    monkeypatch.setattr(autonat, "IDENTIFY_GRACE_S", 0.05)
    dial_backs: Counter[tuple[str, str]] = Counter()
    dial = autonat._FreshDialBack._try_dial

    async def counted(
        self: autonat._FreshDialBack, peer_id: ID, addrs: list[bytes]
    ) -> bytes | None:
        dial_backs[str(self.host.get_id()), str(peer_id)] += 1
        return await dial(self, peer_id, addrs)

    monkeypatch.setattr(autonat._FreshDialBack, "_try_dial", counted)
    quiet = {"autonat_checks": False}  # b and c ask a nothing: only a's rounds are counted
    async with (
        asyncio.timeout(20),
        hosts(
            config(1, autonat_confirmations=2, autonat_loopback=True),
            config(2, **quiet),
            config(3, **quiet),
        ) as (
            a,
            b,
            c,
        ),
    ):
        await a.connect(b.listen_addrs[0])
        await wait_until(lambda: dial_backs[b.peer_id, a.peer_id] == 1)
        rounds = a.wire()["periodic"]["autonat_round"]["runs"]
        await wait_until(lambda: a.wire()["periodic"]["autonat_round"]["runs"] >= rounds + 10)
        assert dial_backs[b.peer_id, a.peer_id] == 1
        assert a.reachability is Reachability.UNKNOWN
        await a.connect(c.listen_addrs[0])
        await wait_until(lambda: a.reachability is Reachability.PUBLIC)
        assert dial_backs[c.peer_id, a.peer_id] == 1
        assert dial_backs[b.peer_id, a.peer_id] == 2


def slow_handshakes_of(peer: str, delay_s: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """`peer` answers each inbound Noise handshake `delay_s` late, as a node whose CPU is busy
    (50 nodes on 2 cores) does; the other hosts in this process answer at once."""
    secure_inbound = NoiseTransport.secure_inbound

    async def slow(self: NoiseTransport, conn: IRawConnection) -> ISecureConn:
        if str(self.local_peer) == peer:
            await trio.sleep(delay_s)
        return await secure_inbound(self, conn)

    monkeypatch.setattr(NoiseTransport, "secure_inbound", slow)


async def test_a_dial_back_that_connects_but_handshakes_slowly_is_not_a_private_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """a's handshake answers 2 s late; a dial-back's connect has 1 s. Before: the one bound
    covered connect and handshake, b's dial-back timed out, and a was told private (in a
    50-node run, 12 homes reserved relays and put circuit addresses in their records). Now
    the handshake has its own bound (`HANDSHAKE_TIMEOUT_S`), and a is public."""
    monkeypatch.setattr(autonat, "DIAL_BACK_TIMEOUT_S", 1.0)
    quiet = {"autonat_checks": False, "autonat_confirmations": 1}
    async with asyncio.timeout(30), hosts(config(10, **quiet), config(11, **quiet)) as (a, b):
        slow_handshakes_of(a.peer_id, 2.0, monkeypatch)
        await a.connect(b.listen_addrs[0])
        while (now := await a.check_reachability()) is Reachability.UNKNOWN:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # identify has not yet told that b serves AutoNAT
        assert now is Reachability.PUBLIC


async def test_a_dial_back_whose_handshake_outlasts_the_query_gives_no_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """a's handshake answers 2 s late, past the handshake's bound (1 s here): b leaves the
    request unanswered, and a, which has no verdict, stays unknown (not private)."""
    monkeypatch.setattr(autonat, "HANDSHAKE_TIMEOUT_S", 1.0)
    outcomes: list[str] = []
    dial = autonat._FreshDialBack._try_dial

    async def noted(self: autonat._FreshDialBack, peer_id: ID, addrs: list[bytes]) -> bytes | None:
        try:
            answer = await dial(self, peer_id, addrs)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append("ok" if answer is not None else "unreachable")
        return answer

    monkeypatch.setattr(autonat._FreshDialBack, "_try_dial", noted)
    quiet = {"autonat_checks": False, "autonat_confirmations": 1}
    async with asyncio.timeout(30), hosts(config(12, **quiet), config(13, **quiet)) as (a, b):
        slow_handshakes_of(a.peer_id, 2.0, monkeypatch)
        await a.connect(b.listen_addrs[0])
        while not outcomes:  # the first rounds may find b's protocols not yet told
            assert await a.check_reachability() is Reachability.UNKNOWN
            await asyncio.sleep(0.1)
        assert outcomes == ["_SlowHandshake"]
        assert await a.check_reachability() is Reachability.UNKNOWN
        assert outcomes == ["_SlowHandshake"] * 2


def test_a_dial_back_ends_when_the_asker_stops_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile asker lists many addresses at its own IP, each of which accepts the connect
    and never handshakes: the server tries them only while the asker still waits for its
    answer (`QUERY_TIMEOUT_S`, 1.5 s here, with 1 s a handshake), not 1 s for each of the five,
    and leaves the request unanswered."""
    monkeypatch.setattr(autonat, "HANDSHAKE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(autonat, "QUERY_TIMEOUT_S", 1.5)
    accepted: list[trio.SocketStream] = []

    async def main() -> None:
        listeners = [(await trio.open_tcp_listeners(0, host="127.0.0.1"))[0] for _ in range(5)]
        addrs = [
            multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{listener.socket.getsockname()[1]}")
            for listener in listeners
        ]
        host = new_host()
        assert isinstance(host, BasicHost)
        server = autonat._FreshDialBack(host, jobs=PeriodicJobs(), confirmations=1)
        asker = ID.from_base58(peer_id_from_seed(seed(14)))
        async with trio.open_nursery() as nursery:
            for listener in listeners:  # accept, then say nothing
                nursery.start_soon(trio.serve_listeners, _keep(accepted), [listener])
            with pytest.raises(autonat._AskerGone):
                await server._try_dial(asker, [a.to_bytes() for a in addrs])
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert 1 <= len(accepted) <= 2  # tried while the asker waited; 5 without the bound


def _keep(
    accepted: list[trio.SocketStream],
) -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def handle(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    return handle
