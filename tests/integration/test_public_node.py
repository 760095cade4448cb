"""`hearthmesh run --public` (SPEC §10.14): a real `hearthmesh run --public` process on a public
address in a network namespace is the bootstrap and relay of two homes behind NATs; it
announces its public address, holds no reservation of its own, and `hearthmesh status` says
so."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from hearthmesh.node.node import Node
from hearthmesh.tools.cli import _build_parser
from hearthmesh.tools.home import node_config
from hearthmesh.tools.node_process import HomeProcess, hearthmesh_script, spawn_home
from hearthmesh.tools.settings import resolve_settings
from tests.integration.netlab import NetLab, in_netns, require_netlab, start_node
from tests.integration.test_hole_punch import chat

from .conftest import wait_until

pytestmark = pytest.mark.integration


async def status_of(home: HomeProcess, ns: str, data_dir: Path) -> dict[str, object]:
    """`hearthmesh status --json` run in the home's namespace (its API is on that loopback)."""
    api = ("--api", home.api.removeprefix("http://"), "--data-dir", str(data_dir))
    shown = await asyncio.to_thread(
        subprocess.run,
        ["ip", "netns", "exec", ns, hearthmesh_script(), "status", "--json", *api],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    status: dict[str, object] = json.loads(shown.stdout)
    return status


@pytest.mark.slow
async def test_a_public_node_relays_for_natted_homes_and_reserves_nothing_itself(
    tmp_path: Path,
) -> None:
    require_netlab()
    with NetLab() as lab:
        relay_ns, relay_ip = lab.public_host(1)
        alice_ns, _ = lab.home_behind_nat(1, random_ports=True)
        bob_ns, _ = lab.home_behind_nat(2, random_ports=True)
        relay_dir = tmp_path / "relay"
        relay = await spawn_home(
            relay_dir,
            name="relay",
            listen_host="0.0.0.0",
            listen_port=4470,
            flags=("--public", "--public-address", relay_ip),
            netns=relay_ns,
        )
        try:
            async with asyncio.timeout(90), AsyncExitStack() as stack:
                # Its public address, not an interface's (they are the same here, but the
                # announce comes from --public-address, SPEC §10.14).
                assert relay.addr.startswith(f"/ip4/{relay_ip}/tcp/4470/p2p/")
                alice = await start_node(stack, alice_ns, tmp_path / "alice", relay.addr)
                bob = await start_node(stack, bob_ns, tmp_path / "bob", relay.addr)
                relay_peer = relay.addr.rsplit("/p2p/", 1)[1]
                await wait_until(lambda: bob.relays() == [relay_peer], poll_s=0.1)
                await wait_until(
                    lambda: any(relay_peer in a for a in alice.home_addresses(bob.user_id)),
                    poll_s=0.1,
                )
                await chat(alice, bob)  # random-port NATs: it stays relayed (SPEC §10.9)
                assert alice.peer_paths()[bob.peer_id] == [relay_peer]
                status = await status_of(relay, relay_ns, relay_dir)
                assert status["relays"] == []
                assert status["listen_addrs"] == [
                    f"/ip4/{relay_ip}/tcp/4470/p2p/{relay_peer}",
                ]
                paths = status["peer_paths"]
                assert isinstance(paths, dict)
                assert paths[alice.peer_id] == ["direct"] and paths[bob.peer_id] == ["direct"]
        finally:
            assert await relay.terminate() == 0


async def test_run_public_listens_on_tcp_and_quic_and_prints_the_public_address_to_give_others(
    tmp_path: Path,
) -> None:
    """The profile's own listen addresses (no --listen), and --public-address announced, in a
    namespace whose interface holds another address (a cloud VM behind 1:1 NAT)."""
    require_netlab()
    with NetLab() as lab:
        ns, interface_ip = lab.public_host(1)
        run = ["run", "--public", "--public-address", "203.0.113.7", "--api", "127.0.0.1:0"]
        process = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, hearthmesh_script(), *run, "--data-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            lines: list[str] = []
            async with asyncio.timeout(60):
                while not lines or not lines[-1].startswith("press Ctrl-C"):
                    assert process.stdout is not None
                    line = (await process.stdout.readline()).decode()
                    assert line, f"hearthmesh run ended: {lines}"
                    lines.append(line.strip())
        finally:
            process.terminate()
            assert await process.wait() == 0
        peer = next(line.split()[-1] for line in lines if line.startswith("peer id:"))
        listening = [line.split()[-1] for line in lines if line.startswith("listening:")]
        assert f"/ip4/{interface_ip}/tcp/4470/p2p/{peer}" in listening
        assert f"/ip4/{interface_ip}/udp/4470/quic-v1/p2p/{peer}" in listening
        announced = [line.split()[-1] for line in lines if line.startswith("announced:")]
        assert announced == [
            f"/ip4/203.0.113.7/tcp/4470/p2p/{peer}",
            f"/ip4/203.0.113.7/udp/4470/quic-v1/p2p/{peer}",
        ]
        assert any("give others an announced address" in line for line in lines)


async def test_a_public_node_that_autonat_finds_private_still_reserves_no_relay(
    tmp_path: Path,
) -> None:
    """`--public` sets relay_reservations 0 "whatever AutoNAT says": behind a firewall that
    drops inbound connections a plain home reserves on the relay, the public node does not."""
    require_netlab()
    with NetLab() as lab:
        async with asyncio.timeout(60), AsyncExitStack() as stack:
            relay_ns, _ = lab.public_host(1)
            public_ns, _ = lab.firewalled_host(2)
            home_ns, _ = lab.firewalled_host(3)
            relay = await start_node(stack, relay_ns, tmp_path / "relay")
            argv = ["run", "--public", "--data-dir", str(tmp_path / "public")]
            settings = resolve_settings(_build_parser().parse_args(argv), env={})
            config = dataclasses.replace(
                node_config(settings), bootstrap=(relay.listen_addrs[0],), autonat_confirmations=1
            )
            with in_netns(public_ns):
                public = await stack.enter_async_context(Node(config))
            home = await start_node(stack, home_ns, tmp_path / "home", relay.listen_addrs[0])
            await wait_until(lambda: public.reachability == "private", poll_s=0.1)
            await wait_until(lambda: home.relays() == [relay.peer_id], poll_s=0.1)
            # The home, found private as the public node was, has reserved by now.
            assert public.relays() == []
            assert not any("/p2p-circuit/" in address for address in public.listen_addrs)
