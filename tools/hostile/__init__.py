"""The hostile-peer kit (issue #12): a stranger that sends anything, and a catalogue of attacks.

`HostilePeer` (peer.py) is a libp2p host with its own self-made identity; `forge.py` makes the
valid and broken envelopes it sends; `megolm_sender.py` makes it an E2EE sender whose session a
target holds, answering the target's key requests as scripted; `catalogue.py` names one attack
per finding of issue #12 and runs them all against a target. Used by the soak test,
`hearthmesh bench hostile` and (issue #18) the conformance suite.
"""

from __future__ import annotations

from .catalogue import ATTACKS, Attack, Observation, Scale, Target, probe, run_attack, run_catalogue
from .forge import EnvelopeForge, Stranger, new_stranger
from .megolm_sender import AskedLog, MegolmSender, Script
from .peer import HostilePeer, Reply, grind_seed

__all__ = [
    "ATTACKS",
    "AskedLog",
    "Attack",
    "EnvelopeForge",
    "HostilePeer",
    "MegolmSender",
    "Observation",
    "Reply",
    "Scale",
    "Script",
    "Stranger",
    "Target",
    "grind_seed",
    "new_stranger",
    "probe",
    "run_attack",
    "run_catalogue",
]
