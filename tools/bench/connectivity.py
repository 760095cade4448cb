"""`hearthmesh bench connectivity`: two homes behind NATs, a public relay between (SPEC §10.7,
§10.9), in network namespaces (`hearthmesh.tools.netlab`, needs root).

Each round builds the topology afresh and starts both homes cold (relay already up):
- `first_message_ms`: from the homes' start to alice's first message being acked by bob's home
  (AutoNAT verdict, relay reservation, home record spread, relayed dial, delivery);
- behind NATs that keep a connection's source port, whether the homes went direct by hole
  punching within `PUNCH_DEADLINE_S` (`hole_punch.tcp`), and then, with the relay stopped,
  `direct_p50_ms` (send to stored ack);
- behind NATs that pick random ports, the punch fails and `relayed_p50_ms` is measured;
- behind NATs that pick random ports for TCP but keep UDP ports, the punch fails and WebRTC
  takes over (SPEC §10.11) within `PUNCH_DEADLINE_S` (`hole_punch.webrtc`), and then, with the
  relay stopped, `webrtc_p50_ms`;
- behind NATs that shift each UDP port to another one, the same for every destination, and
  pick random TCP ports (`stun`), with a STUN server that the homes' WebRTC asks (SPEC
  §10.16): whether WebRTC connects (`hole_punch.webrtc_via_stun`) and `webrtc_via_stun_p50_ms`;
- QUIC alone (`quic`: relay and homes listen on QUIC only, WebRTC off, NATs that keep source
  ports, SPEC §10.15): the first message through the relay over QUIC, whether DCUtR's punch
  over QUIC goes direct (`hole_punch.quic`), the relayed p50 over QUIC (`quic.relayed_p50_ms`)
  and, from behind the NAT to the relay's own user, the direct p50 over QUIC
  (`quic.direct_p50_ms`; TCP's counterpart is `direct_p50_ms`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.events import DeliveredToHome
from hearthmesh.node.node import Node
from hearthmesh.protocol.envelope import RoomId
from hearthmesh.tools.bench.stats import percentile
from hearthmesh.tools.netlab import NetLab, netlab_unavailable, start_in_netns
from hearthmesh.tools.stun import STUN_PORT, StunServer

__all__ = ["run"]

PUNCH_DEADLINE_S: Final = 15.0
"""Up to 3 punches (DCUtR tries again every 2 s), each up to 2 s of plain dials and 3 s of punch."""
ROUND_TIMEOUT_S: Final = 60.0
_BODY = b"x" * 200
NOT_MEASURED: Final = {
    "quic_direct_after_punch": "py-libp2p 0.8.1 dials QUIC from a new socket on an ephemeral "
    "port (transport/quic/connection.py, connect: bind((addr, 0))), not from the listen port "
    "DCUtR tells the peer to expect, so no NAT maps a QUIC punch as predicted (SPEC §10.15)",
}
NATS: Final = ("kept", "random", "tcp_random", "stun", "quic")
"""Per round, homes behind NATs that keep source ports, pick random ones, pick random ones for
TCP alone, or shift UDP ports (with a STUN server) (`NetLab.home_behind_nat`); `quic`: NATs
that keep source ports, QUIC alone."""
TCP_LISTEN: Final = ("/ip4/0.0.0.0/tcp/4470",)
QUIC_LISTEN: Final = ("/ip4/0.0.0.0/udp/4470/quic-v1",)


@dataclass
class _Upgrades:
    """WebRTC upgrades of one kind of round: tried, connected, and the send-to-ack times over
    them once the relay is gone."""

    tried: int = 0
    connected: int = 0
    ms: list[float] = field(default_factory=list)

    def record(self, connected: bool, times: list[float]) -> None:
        self.tried += 1
        self.connected += int(connected)
        self.ms += times


@dataclass
class _Figures:
    first_message_ms: list[float] = field(default_factory=list)
    relayed_ms: list[float] = field(default_factory=list)
    direct_ms: list[float] = field(default_factory=list)
    punch_tried: int = 0
    punch_direct: int = 0
    random_nat_tried: int = 0
    random_nat_direct: int = 0
    webrtc: _Upgrades = field(default_factory=_Upgrades)
    """Behind NATs that pick random TCP ports and keep UDP ones."""
    quic_first_message_ms: list[float] = field(default_factory=list)
    quic_relayed_ms: list[float] = field(default_factory=list)
    quic_direct_ms: list[float] = field(default_factory=list)
    quic_punch_tried: int = 0
    quic_punch_direct: int = 0
    webrtc_via_stun: _Upgrades = field(default_factory=_Upgrades)
    """Behind NATs that shift UDP ports, with a STUN server."""


def _config(
    path: Path, *bootstrap: str, quic: bool = False, stun: tuple[str, ...] = ()
) -> NodeConfig:
    return NodeConfig(
        data_dir=path,
        listen_addrs=QUIC_LISTEN if quic else TCP_LISTEN,
        bootstrap=bootstrap,
        autonat_confirmations=1,
        retry_poll_ms=50,
        webrtc=not quic,  # QUIC alone: WebRTC (UDP too) would take the path under test
        stun_servers=stun,
    )


async def _acked(node: Node, room: RoomId, count: int) -> list[float]:
    """Send `count` messages one at a time; each one's send-to-stored-ack time in ms."""
    times = []
    events = node.events()
    for _ in range(count):
        started = time.perf_counter()
        sent = await node.send(room, _BODY)
        async for event in events:
            if isinstance(event, DeliveredToHome) and event.message_id == sent.message_id:
                break
        times.append((time.perf_counter() - started) * 1000)
    return times


async def _until(predicate: Callable[[], bool], deadline_s: float) -> bool:
    """Poll `predicate` until it holds (True) or `deadline_s` passes (False)."""
    try:
        async with asyncio.timeout(deadline_s):
            while not predicate():  # noqa: ASYNC110 - peer paths have no event
                await asyncio.sleep(0.05)
    except TimeoutError:
        return False
    return True


async def _round(tmp: Path, figures: _Figures, *, nat: str, samples: int) -> None:
    random_ports, random_tcp_ports = nat == "random", nat == "tcp_random"
    quic, shifted = nat == "quic", nat == "stun"
    with NetLab() as lab:
        relay_ns, _ = lab.public_host(1)
        alice_ns, bob_ns = (
            lab.home_behind_nat(
                number,
                random_ports=random_ports,
                random_tcp_ports=random_tcp_ports,
                shifted_udp_ports=shifted,
            )[0]
            for number in (1, 2)
        )
        async with asyncio.timeout(ROUND_TIMEOUT_S), AsyncExitStack() as stack:
            stun: tuple[str, ...] = ()
            if shifted:
                stun_ns, stun_ip = lab.public_host(2)
                stack.callback((await StunServer.serve_in(stun_ns, stun_ip)).close)
                stun = (f"stun:{stun_ip}:{STUN_PORT}",)
            relay_stack = await stack.enter_async_context(AsyncExitStack())
            relay = await start_in_netns(relay_stack, relay_ns, _config(tmp / "relay", quic=quic))
            started = time.perf_counter()
            homes = [
                await start_in_netns(
                    stack, ns, _config(tmp / name, relay.listen_addrs[0], quic=quic, stun=stun)
                )
                for ns, name in ((alice_ns, "alice"), (bob_ns, "bob"))
            ]
            alice, bob = homes
            # Alice knows bob's user id (a contact) but not yet where his home is.
            room = await alice.open_direct(bob.user_id)
            await _acked(alice, room, 1)
            first_ms = (time.perf_counter() - started) * 1000

            def direct() -> bool:
                return "direct" in alice.peer_paths().get(bob.peer_id, [])

            if quic:
                figures.quic_first_message_ms.append(first_ms)
                await _quic_paths(figures, alice, bob, relay, room, samples, direct)
                return
            figures.first_message_ms.append(first_ms)

            if random_tcp_ports or shifted:  # the punch fails; WebRTC after it (SPEC §10.11)
                connected = await _until(
                    lambda: "webrtc" in alice.peer_paths().get(bob.peer_id, []), PUNCH_DEADLINE_S
                )
                times: list[float] = []
                if connected:
                    await relay_stack.aclose()
                    await _acked(alice, room, 3)
                    times = await _acked(alice, room, samples)
                upgrades = figures.webrtc_via_stun if shifted else figures.webrtc
                upgrades.record(connected, times)
                return
            went_direct = await _until(direct, PUNCH_DEADLINE_S)
            if random_ports:
                figures.random_nat_tried += 1
                figures.random_nat_direct += int(went_direct)
                if not went_direct:
                    figures.relayed_ms += await _acked(alice, room, samples)
                return
            figures.punch_tried += 1
            figures.punch_direct += int(went_direct)
            if went_direct:
                await relay_stack.aclose()  # the relayed leg goes: delivery moves to direct
                await _acked(alice, room, 3)  # warm-up: a new stream on the direct connection
                figures.direct_ms += await _acked(alice, room, samples)


async def _quic_paths(
    figures: _Figures,
    alice: Node,
    bob: Node,
    relay: Node,
    room: RoomId,
    samples: int,
    direct: Callable[[], bool],
) -> None:
    """QUIC alone: wait out DCUtR's punch over QUIC, measure the path it left (relayed, or
    direct if it ever went), then alice's direct QUIC path to the relay's own user."""

    def punches(kind: str) -> int:
        return sum(getattr(home.hole_punches(), kind).get("quic", 0) for home in (alice, bob))

    await _until(lambda: punches("tried") >= 1, PUNCH_DEADLINE_S)
    await _until(direct, 1.0)  # a punch that succeeded shows its connection just after
    figures.quic_punch_tried += punches("tried")
    figures.quic_punch_direct += punches("direct")
    await _acked(alice, room, 3)  # warm-up: a stream on whichever path is there now
    if direct():
        figures.quic_direct_ms += await _acked(alice, room, samples)
    else:
        figures.quic_relayed_ms += await _acked(alice, room, samples)
    to_relay = await alice.open_direct(relay.user_id)  # over alice's own QUIC connection
    await _acked(alice, to_relay, 3)
    figures.quic_direct_ms += await _acked(alice, to_relay, samples)


async def _measure(quick: bool) -> dict[str, Any]:
    rounds, samples = (1, 20) if quick else (3, 50)
    figures = _Figures()
    with tempfile.TemporaryDirectory(prefix="hearthmesh-bench-") as tmp:
        for index in range(rounds):
            for nat in NATS:
                await _round(Path(tmp) / f"{nat}{index}", figures, nat=nat, samples=samples)

    def p50(values: list[float]) -> float | None:
        return round(percentile(values, 50), 2) if values else None

    return {
        "rounds": rounds,
        "samples_per_round": samples,
        "first_message_ms": {
            "p50": p50(figures.first_message_ms),
            "max": round(max(figures.first_message_ms), 1),
            "all": [round(v, 1) for v in figures.first_message_ms],
        },
        "relayed_p50_ms": p50(figures.relayed_ms),
        "direct_p50_ms": p50(figures.direct_ms),
        "webrtc_p50_ms": p50(figures.webrtc.ms),
        "hole_punch_success": {
            "tcp": {"tried": figures.punch_tried, "direct": figures.punch_direct},
            "tcp_random_port_nat": {
                "tried": figures.random_nat_tried,
                "direct": figures.random_nat_direct,
            },
            "webrtc": {"tried": figures.webrtc.tried, "direct": figures.webrtc.connected},
            "quic": {"tried": figures.quic_punch_tried, "direct": figures.quic_punch_direct},
            "webrtc_via_stun": {
                "tried": figures.webrtc_via_stun.tried,
                "direct": figures.webrtc_via_stun.connected,
            },
        },
        "webrtc_via_stun_p50_ms": p50(figures.webrtc_via_stun.ms),
        "quic": {
            "first_message_ms": p50(figures.quic_first_message_ms),
            "relayed_p50_ms": p50(figures.quic_relayed_ms),
            "direct_p50_ms": p50(figures.quic_direct_ms),
        },
        "not_measured": NOT_MEASURED,
    }


def run(quick: bool) -> dict[str, Any]:
    """Run the rounds (a few seconds each); without namespaces, say why and measure nothing."""
    reason = netlab_unavailable()
    if reason is not None:
        return {"skipped": reason}
    return asyncio.run(_measure(quick))
