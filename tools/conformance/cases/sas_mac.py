"""The MAC check of a verification (SPEC §29.3.3), level `e2ee`: with the client API the suite
is the node's user too (§29.5), so it confirms the string its own side derived as well, and
answers the node's MAC with a wrong one, then, in a second flow, with the right one.
State: none.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Final

import vodozemac

from hearthmesh.node.p2p.frame_stream import FrameStream
from hearthmesh.protocol.capabilities import Level
from hearthmesh.protocol.errors import HearthError
from hearthmesh.protocol.identity import DeviceId, device_id_text, user_id_text
from hearthmesh.protocol.verification import (
    VERIFY_PROTOCOL,
    Cancel,
    Mac,
    SasShown,
    SasVerification,
    decode_verify_frame,
    encode_verify_frame,
)
from hearthmesh.tools.hostile.peer import code_name

from ..session import Session
from .case import Case
from .shared import greet_node

__all__ = ["MAC_CHECKED"]


async def _mac_checked(s: Session) -> str:
    """§29.3.3: the node's user starts verifying our stranger's device; once both sides show
    the same string (compared here: the node's, over the API, with ours) the node's user
    confirms and the node sends its MAC. Our MAC over another key must be cancelled
    `SAS_MISMATCH` and leave our device unverified; the right one ends the flow with DONE and
    our device verified."""
    assert s.api is not None
    await greet_node(s.kit, s.peer_id)  # the node's newest record of us names this peer
    wrong = await _flow_with_our_mac(s, right=False)
    right = await _flow_with_our_mac(s, right=True)
    return f"WRONG:{wrong},RIGHT:{right}"


async def _flow_with_our_mac(s: Session, *, right: bool) -> str:
    """One flow the node's user starts with ours, answered by our own machine as the
    responder (`SasVerification`), our MAC the right one or not. The frame the node sent
    after our MAC, then whether the node's user is shown our device as verified."""
    assert s.api is not None
    loop = asyncio.get_running_loop()
    shown: asyncio.Future[SasShown | str] = loop.create_future()
    confirmed = asyncio.Event()
    ended: asyncio.Future[str] = loop.create_future()

    async def respond(stream: FrameStream) -> None:
        try:
            ended.set_result(await _respond(s, stream, shown, confirmed, right=right))
        except HearthError as exc:
            ended.set_result(f"broken:{type(exc).__name__}")
        finally:
            if not shown.done():
                shown.set_result("no-string")

    s.kit.host.set_stream_handler(VERIFY_PROTOCOL, respond)
    body = {"user_id": user_id_text(s.kit.user_id), "peer_id": s.kit.peer_id}
    flow = (await s.api.call("POST", "/v1/verifications", body))["flow_id"]
    try:
        async with asyncio.timeout(s.wait_s):
            ours = await shown
            if isinstance(ours, str):
                return ours
            if not await _node_shows(s, flow, ours):
                await s.api.call("POST", f"/v1/verifications/{flow}/cancel")
                return "strings-differ"
            await s.api.call("POST", f"/v1/verifications/{flow}/confirm")
            confirmed.set()
            after = await ended
            while True:  # the node has judged our MAC once its flow ended: poll the API
                state = (await s.api.call("GET", f"/v1/verifications/{flow}"))["state"]
                if state not in ("showing", "confirmed"):
                    break
                await asyncio.sleep(0.05)
            trusted = await _verified(s)
            while after == "DONE" and not trusted:  # recorded once the flow is done (§29.4.2)
                await asyncio.sleep(0.05)
                trusted = await _verified(s)
    except TimeoutError:
        return "timed-out"
    return f"{after},{'verified' if trusted else 'unverified'}"


async def _respond(
    s: Session,
    stream: FrameStream,
    shown: asyncio.Future[SasShown | str],
    confirmed: asyncio.Event,
    *,
    right: bool,
) -> str:
    """The responder's side: ACCEPT, KEY, the string shown (`shown`); once the node's user
    confirmed, the node's MAC checked, then ours (`right`, or one over a key we do not hold);
    the frame the node answers with, `CANCEL:<code>` or its type (`DONE`)."""
    machine = SasVerification.respond_to(
        await stream.read_frame(),
        sas=vodozemac.Sas(),
        user=s.kit.stranger.user.public,
        device=s.kit.stranger.device.public,
    )
    for frame in machine.data_to_send():  # ACCEPT
        await stream.write_frame(frame)
    machine.receive(await stream.read_frame())  # the node's KEY
    for frame in machine.data_to_send():  # ours
        await stream.write_frame(frame)
    if machine.shown is None:
        return "no-string"
    shown.set_result(machine.shown)
    await confirmed.wait()
    machine.receive(await stream.read_frame())  # the node's MAC: SasMismatch if it fails
    if right:
        machine.confirm()  # our MAC, then DONE, the node's MAC being good
        frames = machine.data_to_send()
    else:
        forged = base64.b64encode(s.kit.rng(32)).decode().rstrip("=")
        frames = [encode_verify_frame(Mac(flow=machine.flow, mac=forged))]
    for frame in frames:
        await stream.write_frame(frame)
    answer = decode_verify_frame(await stream.read_frame())
    if isinstance(answer, Cancel):
        return f"CANCEL:{code_name(answer.code)}"
    return type(answer).__name__.upper()  # DONE


async def _node_shows(s: Session, flow: str, ours: SasShown) -> bool:
    """Does the node show its user the string we show ours (§29.3.2)?"""
    assert s.api is not None
    view = await s.api.call("GET", f"/v1/verifications/{flow}")
    while view["emoji"] is None:  # the node has our KEY, but may not have shown it yet
        await asyncio.sleep(0.05)
        view = await s.api.call("GET", f"/v1/verifications/{flow}")
    names = [emoji["name"] for emoji in view["emoji"]]
    return names == list(ours.emoji_names) and view["decimals"] == list(ours.decimals)


async def _verified(s: Session) -> bool:
    """Is our device verified, as the node's user is shown our user's trust (§29.5)?"""
    assert s.api is not None
    trust = await s.api.call("GET", f"/v1/users/{user_id_text(s.kit.user_id)}/trust")
    ours = device_id_text(DeviceId(s.kit.stranger.device.public))
    return any(d["device_id"] == ours and d["verified"] for d in trust["devices"])


MAC_CHECKED: Final = Case(
    name="mac_checked",
    section="§29.3.3",
    expected="WRONG:CANCEL:SAS_MISMATCH,unverified,RIGHT:DONE,verified",
    run=_mac_checked,
    needs_api=True,
    level=Level.E2EE,
)
