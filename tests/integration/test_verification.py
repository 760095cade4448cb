"""SAS verification between real nodes on 127.0.0.1, driven through the client API (SPEC §29)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.node.api.verify_routes import trust_view
from hearthmesh.node.events import DeviceKeysChanged
from hearthmesh.node.node import Node
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.errors import ErrorCode
from hearthmesh.protocol.identity import DeviceId, UserId, device_id_text
from hearthmesh.protocol.verification import (
    VERIFY_PROTOCOL,
    Cancel,
    Start,
    VerifyState,
    decode_verify_frame,
    encode_verify_frame,
)
from hearthmesh.storage.api import Trust
from hearthmesh.tools.cli import main

from .api_helpers import TOKEN, Home, home, link
from .conftest import NodeFactory, collect, wait_until, wait_until_async
from .test_devices import link_device

pytestmark = pytest.mark.integration


async def _flows(h: Home) -> list[dict[str, Any]]:
    answer: dict[str, Any] = await h.client.call("GET", "/v1/verifications")
    flows: list[dict[str, Any]] = answer["verifications"]
    return flows


async def _cli(tmp_path: Path, h: Home, *argv: str) -> str:
    """Run `hearthmesh ARGV` against `h`'s API (in a thread: it runs its own loop)."""
    token = tmp_path / "cli-token"
    token.write_text(TOKEN, encoding="ascii")
    api = h.url.removeprefix("http://")
    out = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out):
            return main([*argv, "--data-dir", str(tmp_path / "cli"), "--api", api,
                         "--token-file", str(token)])  # fmt: skip

    assert await asyncio.to_thread(run) == 0
    return out.getvalue()


def _shown(h: Home, flow_id: str) -> bool:
    return h.node.verification.flow(bytes.fromhex(flow_id)).machine.shown is not None


async def _flow(h: Home, flow_id: str) -> dict[str, Any]:
    view: dict[str, Any] = await h.client.call("GET", f"/v1/verifications/{flow_id}")
    return view


async def test_two_users_see_the_same_emoji_confirm_and_trust_each_other(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(25), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice, bob = (await a.status())["user_id"], (await b.status())["user_id"]
        before = await a.client.call("GET", f"/v1/users/{bob}/trust")
        assert before["keys_changed"] is False
        assert [d["verified"] for d in before["devices"]] == [False]
        assert (await a.client.call("GET", "/v1/trust"))["users"] == []  # no one verified yet
        async with a.socket() as a_ws, b.socket() as b_ws:
            started = await a.client.call("POST", "/v1/verifications", {"user_id": bob})
            flow_id = started["flow_id"]
            await wait_until(lambda: bool(b.node.verification.flows()))
            await wait_until(lambda: _shown(a, flow_id) and _shown(b, flow_id))
            view_a, view_b = await _flow(a, flow_id), await _flow(b, flow_id)
            shown_a, shown_b = view_a["emoji"], view_b["emoji"]
            assert len(shown_a) == 7 and shown_a == shown_b
            assert view_a["decimals"] == view_b["decimals"] and len(view_a["decimals"]) == 3
            assert (view_a["user_id"], view_b["user_id"]) == (bob, alice)
            assert (await _flows(b))[0]["initiator"] is False
            await a.client.call("POST", f"/v1/verifications/{flow_id}/confirm")
            await b.client.call("POST", f"/v1/verifications/{flow_id}/confirm")
            a_event = await a_ws.next("device_verified")
            b_event = await b_ws.next("device_verified")
        assert (a_event["user_id"], b_event["user_id"]) == (bob, alice)
        assert (await _flow(a, flow_id))["verified"] is True
        assert (await _flow(b, flow_id))["verified"] is True
        trust_a = await a.client.call("GET", f"/v1/users/{bob}/trust")
        trust_b = await b.client.call("GET", f"/v1/users/{alice}/trust")
        assert [d["verified"] for d in trust_a["devices"]] == [True]
        assert [d["verified"] for d in trust_b["devices"]] == [True]
        assert trust_a["keys_changed"] is False and trust_b["keys_changed"] is False
        assert trust_a["devices"][0]["device_id"] == a_event["device_id"]
        # the whole list's trust in one request: the users with a verified key
        assert (await a.client.call("GET", "/v1/trust"))["users"] == [trust_a]
        assert (await b.client.call("GET", "/v1/trust"))["users"] == [trust_b]
        # the CLI shows the same through the API
        shown = await _cli(tmp_path, a, "verify", "show", flow_id)
        assert "done" in shown and all(e["name"] in shown for e in shown_a)
        assert "verified" in await _cli(tmp_path, a, "verify", "trust", bob)
        listed = await _cli(tmp_path, a, "verify", "trust")  # every verified user
        assert listed.startswith("1 users with a verified device") and bob in listed


async def test_clients_follow_a_flow_live_from_the_request_to_its_end(tmp_path: Path) -> None:
    """SPEC §29.5.2: the responder's clients hear of the request and see the emoji without
    asking; both sides' clients see the end with its code."""
    async with asyncio.timeout(25), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice, bob = (await a.status())["user_id"], (await b.status())["user_id"]
        async with a.socket() as a_ws, b.socket() as b_ws:
            started = await a.client.call("POST", "/v1/verifications", {"user_id": bob})
            flow_id = started["flow_id"]

            def this_flow(state: str | None = None) -> Any:
                return lambda f: f["flow_id"] == flow_id and state in (None, f["state"])

            request = await b_ws.next("verification", this_flow())
            assert request["initiator"] is False and request["user_id"] == alice
            shown_b = await b_ws.next("verification", this_flow("showing"))
            shown_a = await a_ws.next("verification", this_flow("showing"))
            assert shown_b["emoji"] == shown_a["emoji"] and len(shown_a["emoji"]) == 7
            assert shown_b["decimals"] == shown_a["decimals"]
            await b.client.call("POST", f"/v1/verifications/{flow_id}/cancel")
            ended_b = await b_ws.next("verification", this_flow("cancelled"))
            ended_a = await a_ws.next("verification", this_flow("cancelled"))
        assert ended_a["cancel_code"] == ended_b["cancel_code"] == ErrorCode.VERIFICATION_CANCELLED
        assert ended_a["verified"] is False and ended_b["verified"] is False


async def test_a_cancelled_flow_trusts_nothing_and_a_stranger_is_refused(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(25), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        bob = (await b.status())["user_id"]
        started = await a.client.call("POST", "/v1/verifications", {"user_id": bob})
        flow_id = started["flow_id"]
        await wait_until(lambda: bool(b.node.verification.flows()))
        await b.client.call("POST", f"/v1/verifications/{flow_id}/cancel")
        await wait_until(
            lambda: (
                a.node.verification.flow(bytes.fromhex(flow_id)).machine.state
                is VerifyState.CANCELLED
            )
        )
        assert (await _flow(a, flow_id))["cancel_code"] == 42
        trust = await a.client.call("GET", f"/v1/users/{bob}/trust")
        assert [d["verified"] for d in trust["devices"]] == [False]
        # a START naming a device that no record places on the asking peer: CANCEL with
        # NOT_AUTHORIZED, charged, and no flow is held for it
        mallory = P2PHost(HostConfig(identity_seed=os.urandom(32)))
        async with mallory:
            await mallory.connect(b.node.listen_addrs[0])
            stream = await mallory.open_stream(b.node.peer_id, VERIFY_PROTOCOL)
            bob_device = b.node.verification.flows()[0].machine  # to name a real device
            assert bob_device.peer_device is not None
            await stream.write_frame(
                encode_verify_frame(
                    Start(flow=b"x" * 16, user=b"u" * 32, device=bob_device.peer_device)
                )
            )
            answer = decode_verify_frame(await stream.read_frame())
        assert isinstance(answer, Cancel) and answer.code == ErrorCode.NOT_AUTHORIZED
        assert len(b.node.verification.flows()) == 1


async def test_two_devices_of_one_user_verify_each_other(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with asyncio.timeout(30), make_node("alice") as phone:
        config, _ = await link_device(phone, tmp_path / "laptop")
        async with Node(config) as laptop:
            await laptop.connect(phone.listen_addrs[0])
            flow = await phone.verification.start(phone.user_id)  # her other home: the laptop
            assert flow.peer == laptop.peer_id
            flow_id = flow.machine.flow
            await wait_until(lambda: bool(laptop.verification.flows()))
            other = laptop.verification.flow(flow_id)
            await wait_until(
                lambda: flow.machine.shown is not None and other.machine.shown is not None
            )
            assert flow.machine.shown == other.machine.shown
            await phone.verification.confirm(flow_id)
            await laptop.verification.confirm(flow_id)
            alice = phone.user_id

            async def trusted(node: Node) -> int:  # written after the flow ends: wait for it
                return len(await node.store.read(node.store.store.trusted_devices, alice))

            await wait_until_async(lambda: trusted(phone), 1)
            await wait_until_async(lambda: trusted(laptop), 1)
            assert flow.machine.verified and other.machine.verified
            phone_trust = await phone.store.read(phone.store.store.trusted_devices, alice)
            laptop_trust = await laptop.store.read(laptop.store.store.trusted_devices, alice)
        assert phone_trust == {laptop.keyring.device_id: Trust.VERIFIED}
        assert laptop_trust == {phone.keyring.device_id: Trust.VERIFIED}


def test_keys_changed_warns_of_a_new_or_dropped_key_of_a_verified_user() -> None:
    user = UserId(b"U" * 32)
    old, new = DeviceId(b"o" * 32), DeviceId(b"n" * 32)
    assert trust_view(user, {}, (old,))["keys_changed"] is False  # nothing verified: no warning
    assert trust_view(user, {old: Trust.VERIFIED}, (old,))["keys_changed"] is False
    added = trust_view(user, {old: Trust.VERIFIED}, (old, new))
    assert added["keys_changed"] is True
    assert [d["verified"] for d in added["devices"]] == [True, False]
    replaced = trust_view(user, {old: Trust.VERIFIED}, (new,))
    assert replaced["keys_changed"] is True and replaced["verified_not_listed"] == [
        device_id_text(old)
    ]


async def _verify(a: Node, b: Node, user: UserId) -> None:
    """`a` verifies `user`'s device on `b`; both confirm; returns once both stored the trust."""
    flow = await a.verification.start(user)
    await wait_until(lambda: bool(b.verification.flows()))
    other = b.verification.flow(flow.machine.flow)
    await wait_until(lambda: None not in (flow.machine.shown, other.machine.shown))
    await a.verification.confirm(flow.machine.flow)
    await b.verification.confirm(flow.machine.flow)

    async def trusted() -> int:
        return len(await a.store.read(a.store.store.trusted_devices, user))

    await wait_until_async(trusted, 1)


async def test_a_verified_contact_linking_a_new_device_raises_the_warning(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    async with asyncio.timeout(40), make_node("alice") as alice, make_node("bob") as bob:
        await alice.connect(bob.listen_addrs[0])
        await _verify(alice, bob, bob.user_id)
        warned = asyncio.create_task(collect(alice.events(), DeviceKeysChanged, 1))
        config, _ = await link_device(bob, tmp_path / "bob-laptop")
        async with Node(config) as laptop:
            await laptop.connect(bob.listen_addrs[0])
            [warning] = await warned
        assert warning.user == bob.user_id
        assert set(warning.devices) == {bob.keyring.device_id, laptop.keyring.device_id}
