"""The cases of the black-box suite (SPEC §20.2), one module per capability level (SPEC §20.5).

Each case is a coroutine that sends as our stranger and returns the node's answer as a short
outcome string (`"STORED"`, `"REJECTED:BAD_SIGNATURE"`, `"ERROR:NOT_FOUND"`, ...), compared
with the case's `expected`. State: none (a run's state is its `Session`).
"""

from __future__ import annotations

from typing import Final

from . import (
    charges,
    core,
    e2ee,
    held_keys,
    history_handoff,
    im,
    late_joiner,
    multi_device,
    owed_held,
    relay,
    revisions,
    sas_mac,
    social,
)
from .case import Case

__all__ = ["CASES", "Case"]

CASES: Final[tuple[Case, ...]] = (
    core.HELLO,
    core.DELIVER_AND_ACK,
    core.DUPLICATE,
    core.OUT_OF_ORDER_STORED,
    im.SHOWN_ONCE_IN_ORDER,
    core.GAP_FETCH,
    core.FAR_AHEAD_STORED,
    revisions.RECEIPT_NOT_ADDRESSED,
    revisions.ROOM_KEY_NOT_ADDRESSED,
    im.RECEIPT_BROADCAST_FORM,
    core.MESSAGE_UNSEQUENCED,
    im.GROUP_CREATED,
    im.GROUP_MEMBER_WRITES,
    im.GOSSIPED_INTO_THE_GROUP,
    im.GROUP_MEMBER_KICKS,
    revisions.GROUP_ADDED_SEVERAL,
    im.ADD_OF_TOO_MANY,
    im.GROUP_FORGED_CREATE,
    im.MEMBERSHIP_IN_A_DIRECT_ROOM,
    core.GAP_FETCH_OUTSIDE_THE_ROOM,
    core.RECORDS_TAKEN_WITH_THE_HELLO,
    multi_device.SYNC_FROM_A_STRANGER,
    im.MEDIA_UNKNOWN_DIGEST,
    im.MEDIA_FLOOD,
    core.MALFORMED_FRAME,
    core.MALFORMED_FLOOD,
    core.OVERSIZED_FRAME,
    core.FORGED_SIGNATURE,
    core.UNKNOWN_VERSION,
    core.UNKNOWN_KIND,
    core.OVERSIZED_BODY,
    core.CERTIFICATE_OF_ANOTHER_DEVICE,
    core.REPLAYED_BY_ANOTHER_PEER,
    relay.RELAY_FOR_ANOTHER_USER,
    relay.RELAY_STRANGERS_BOUND,
    e2ee.KEY_CLAIM,
    held_keys.KEY_REFUSED_NOT_LISTED_FOREVER,
    held_keys.KEY_REFUSED_THEN_SHARED,
    held_keys.KEY_ANSWERS_FORGED_THEN_RIGHT,
    history_handoff.HISTORY_ANSWERS_FORGED_THEN_RIGHT,
    e2ee.ENCRYPTED_WITH_AN_UNKNOWN_SESSION,
    e2ee.OWED_THEN_REQUESTED,
    owed_held.OLDER_THAN_THE_SESSION_HELD,
    e2ee.KEY_REQUEST_FROM_A_STRANGER,
    im.MEMBERSHIP_HISTORY_FOR_THE_ADDED,
    core.DROPPED_BATCH_SENT_AGAIN,
    core.GAP_ANSWER_FILTERED,
    late_joiner.LATE_JOINERS_RELEASE,
    e2ee.COMMITMENT_CHECKED,
    e2ee.BINDING_CHECKED,
    sas_mac.MAC_CHECKED,
    im.PRESENCE_FROM_CONTACTS_ONLY,
    social.PRESENCE_PUSHED_TO_CONTACTS,
    social.BLOCKED_USER_DROPPED,
    im.MEDIA_SERVED_TO_A_MEMBER,
    im.MEDIA_NAMED_BY_A_STRANGER,
    multi_device.SYNC_TO_A_LINKED_HOME,
    multi_device.SYNC_STARTED_BY_THE_NODE,
    relay.RELAY_FORWARDED_WHEN_THE_HOME_COMES,
    charges.KAD_PUSH_JUDGED,
    charges.SIGNALING_OFFER_JUDGED,
)
"""Every case, in the order they run (later ones use what earlier ones delivered; the
`held_keys` cases read the node's undecryptable count, so they come before any case that leaves
a session held there)."""
