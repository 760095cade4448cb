"""Message actions where they are stored (SPEC §31): refused before the store, indexed and
applied in the transaction that stores them, folded into views.

The rules are `protocol.actions` (`check_action`, `fold_actions`); this module reads what they
need from the store, inside the caller's store call. A home that cannot read an action's body
(ciphertext it holds no key for) stores it unchecked: every reader folds it by the same rule.
Owns no state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hearthmesh.node.e2ee.readable import content_of
from hearthmesh.protocol.actions import (
    ACTION_KINDS,
    ActionEvent,
    MessageState,
    Target,
    action_event,
    check_action,
    fold_actions,
    target_of,
)
from hearthmesh.protocol.envelope import Envelope, Kind, MessageId
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.storage.api import Store

__all__ = ["acts_on", "apply_recall", "index_opened", "read_action", "refusal", "states_of"]

log = logging.getLogger(__name__)


def read_action(envelope: Envelope) -> ActionEvent | None:
    """The action an envelope carries, if it is one and readable here.

    Raises:
        RemoteProtocolError: an action kind whose readable body is malformed.
    """
    if envelope.kind not in ACTION_KINDS:
        return None
    content = content_of(envelope)
    if content is None:
        return None
    return action_event(envelope, content.content_type, content.body)


def acts_on(envelope: Envelope) -> MessageId | None:
    """The message an action names, for the store's index; None for anything else, and for an
    action not opened here yet (`index_opened` indexes it once its room key comes)."""
    try:
        event = read_action(envelope)
    except RemoteProtocolError:
        return None
    return event.action.target if event is not None else target_of(envelope)


def refusal(store: Store, envelope: Envelope) -> RemoteProtocolError | None:
    """Why an arriving (or our own) action must not be stored: a malformed body, or a target
    held here that it may not act on (SPEC §31.1-31.3). None: store it."""
    try:
        event = read_action(envelope)
    except RemoteProtocolError as exc:
        return exc
    if event is None:
        return None
    held = store.get_event(event.action.target)
    if held is None:
        return None  # not here yet: a recall's tombstone waits for it, the fold decides
    try:
        check_action(event, Target.of(held.envelope))
    except RemoteProtocolError as exc:
        return exc
    return None


def apply_recall(store: Store, envelope: Envelope) -> None:
    """Withdraw the message a stored RECALL names (SPEC §31.1); runs in a store write batch."""
    target = target_of(envelope)
    if target is None:
        return
    if store.withdraw(target, envelope.message_id, envelope.sender_user):
        log.debug("recalled %s: body purged", target.hex()[:12])


def index_opened(store: Store, opened: Sequence[Envelope]) -> None:
    """Actions stored before they could be read, opened now that their room key came
    (SPEC §27.11): indexed by the message they name and a recall applied, as on arrival."""
    for envelope in opened:
        target = acts_on(envelope)
        if target is None:
            continue
        store.index_action(target, envelope.message_id)
        if envelope.kind is Kind.RECALL:
            apply_recall(store, envelope)


def states_of(store: Store, envelopes: Sequence[Envelope]) -> dict[MessageId, MessageState]:
    """The folded state of each message (SPEC §31.5), read in the caller's store call."""
    states = {}
    for envelope in envelopes:
        events = []
        for stored in store.actions_of(envelope.message_id):
            try:
                event = read_action(stored.envelope)
            except RemoteProtocolError:
                continue
            if event is not None:
                events.append(event)
        states[envelope.message_id] = fold_actions(Target.of(envelope), events)
    return states
