"""How verification flows and a user's trust look to clients (SPEC §29.5): `flow_view`, used by
the routes and the `verification` event, and `trust_view`. Owns no state.

A flow is shown as `{flow_id, state, initiator, peer_id, user_id, device_id, emoji, decimals,
verified, cancel_code}`; the emoji (seven `{symbol, name}`) and decimals appear once both keys
are known.
"""

from __future__ import annotations

from typing import Any

from hearthmesh.node.identity.verification import VerifyFlow
from hearthmesh.protocol.identity import DeviceId, UserId, device_id_text, user_id_text
from hearthmesh.protocol.verification import keys_changed
from hearthmesh.storage.api import Trust

__all__ = ["flow_view", "trust_view"]


def flow_view(flow: VerifyFlow) -> dict[str, Any]:
    """A flow as clients see it."""
    machine = flow.machine
    shown = machine.shown
    return {
        "flow_id": machine.flow.hex(),
        "state": machine.state.value,
        "initiator": machine.initiator,
        "peer_id": flow.peer,
        "user_id": None if machine.peer_user is None else user_id_text(UserId(machine.peer_user)),
        "device_id": (
            None if machine.peer_device is None else device_id_text(DeviceId(machine.peer_device))
        ),
        "emoji": (
            None
            if shown is None
            else [
                {"symbol": symbol, "name": name}
                for symbol, name in zip(shown.emoji_symbols, shown.emoji_names, strict=True)
            ]
        ),
        "decimals": None if shown is None else list(shown.decimals),
        "verified": machine.verified,
        "cancel_code": machine.cancel_code,
    }


def trust_view(
    user: UserId, trusted: dict[DeviceId, Trust], listed: tuple[DeviceId, ...]
) -> dict[str, Any]:
    """A user's device keys with their trust, and the warning of SPEC §29.5: the user has a
    verified device key and their newest record lists a key that is not verified, or no longer
    lists a verified one."""
    verified = {d for d, t in trusted.items() if t is Trust.VERIFIED}
    dropped = sorted(device_id_text(d) for d in verified - set(listed))
    return {
        "user_id": user_id_text(user),
        "devices": [{"device_id": device_id_text(d), "verified": d in verified} for d in listed],
        "verified_not_listed": dropped,
        "keys_changed": keys_changed(verified, listed),
    }
