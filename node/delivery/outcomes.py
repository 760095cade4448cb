"""The flow of store outcomes: from the writers of a store batch to whatever reacts to it.

`Receiver` (what arrives) and `Outgoing` (our own membership changes) publish each committed
batch's `StoreOutcome` here; they never call the services above them. The node subscribes its
reactions (node/after_store.py) once everything is built.

State: the subscriber list, owned here.
"""

from __future__ import annotations

from collections.abc import Callable

from hearthmesh.node.delivery.inbox import StoreOutcome

__all__ = ["StoreOutcomes"]

Reaction = Callable[[StoreOutcome], None]


class StoreOutcomes:
    """The one flow of store outcomes from their writers to the reactions (synchronous)."""

    def __init__(self) -> None:
        self._reactions: list[Reaction] = []

    def subscribe(self, reaction: Reaction) -> None:
        """Call `reaction` with every outcome published from now on, in publication order."""
        self._reactions.append(reaction)

    def publish(self, outcome: StoreOutcome) -> None:
        """A store write batch committed and did `outcome`."""
        for reaction in self._reactions:
            reaction(outcome)
