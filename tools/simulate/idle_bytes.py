"""Where an idle node's bytes go, by cause (SPEC §20.6): the gossip copies of the messages it
took in (at rest, the presence topic's home records), its IHAVEs, the rest of what it wrote per
protocol, and what the kernel counted beyond all payloads (noise's and yamux's framing, yamux
pings). Arithmetic on a scale run's idle phase, nothing measured anew: what it says is which
term of bytes = records x copies x size (+ IHAVEs + framing) grows with the mesh.

State: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MESSAGE", "by_cause"]

MESSAGE = "/meshsub/1.1.0 message"
"""The wire counts' key of gossip RPCs that carry a message (a forward, an IWANT's answer)."""
_IHAVE = "/meshsub/1.1.0 ihave"
_GOSSIP = "/meshsub/1.1.0"


def by_cause(idle: Mapping[str, Any]) -> dict[str, float]:
    """An idle phase's bytes sent a second per node (mean) by cause; {} without wire counts.
    `copies_a_message`: gossip copies sent per message taken in (about the topic's mean mesh
    less one, the peer it came from); `framing_and_pings`: TCP bytes less every payload."""
    wire = idle.get("wire", {})
    sent: Mapping[str, float] = wire.get("bytes_per_node_per_s", {})
    writes: Mapping[str, float] = wire.get("writes_per_node_per_s", {})
    kinds: Mapping[str, Mapping[str, float]] = wire.get("gossip_by_topic_per_node_per_s", {})
    if not sent or not kinds:
        return {}
    taken_in = sum(kind["messages"] for kind in kinds.values())
    payload = sum(size for protocol, size in sent.items() if " " not in protocol)
    copies, ihaves = sent.get(MESSAGE, 0), sent.get(_IHAVE, 0)
    return {
        "messages_taken_in": round(taken_in, 3),
        "copies_a_message": round(writes.get(MESSAGE, 0) / taken_in, 2) if taken_in else 0.0,
        "bytes_a_copy": round(copies / writes[MESSAGE]) if writes.get(MESSAGE) else 0,
        "copies": round(copies),
        "ihaves": round(ihaves),
        "other_gossip": round(sent.get(_GOSSIP, 0) - copies - ihaves),
        "other_protocols": round(payload - sent.get(_GOSSIP, 0)),
        "framing_and_pings": round(1024 * idle["sent_kib_per_s"]["mean"] - payload),
    }
