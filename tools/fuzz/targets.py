"""The decoders a stranger's bytes reach, each as a fuzz target taking raw bytes.

A target passes an input when the decoder returns or raises the project's own decode error: a
`RemoteProtocolError` (a peer broke the spec, and its code goes back on the wire). Any other
exception is a crash. Decoders that take text get the input as UTF-8 (undecodable bytes
replaced), since the wire carries them inside a frame that is already text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final

from hearthmesh.protocol import (
    capabilities,
    client_api,
    content,
    delivery,
    envelope,
    fetch,
    gossip,
    hello,
    history_share,
    home_record,
    identity,
    invites,
    linking,
    media,
    membership,
    private,
    receipts,
    reconcile,
    sync,
    verification,
)
from hearthmesh.protocol.actions import decode_action, decode_annotated
from hearthmesh.protocol.e2ee import claim, forward, key_request, keys, megolm, room_key
from hearthmesh.protocol.errors import RemoteProtocolError
from hearthmesh.protocol.framing import FrameDecoder
from hearthmesh.protocol.hlc import decode_timestamp

__all__ = ["TARGETS", "check"]

_NOW_MS: Final = 1_700_000_000_000


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _frames(data: bytes) -> None:
    """Stream framing: feed in two pieces, take every frame."""
    decoder = FrameDecoder()
    decoder.feed(data[: len(data) // 2])
    decoder.feed(data[len(data) // 2 :])
    while decoder.next_frame() is not None:
        pass


def _actions(data: bytes) -> None:
    """Every action kind's body (the first byte picks the kind and the content type)."""
    if not data:
        return
    kind = envelope.Kind(2 + data[0] % 3)  # EDIT, RECALL, REACTION
    content_type = "application/x-encrypted" if data[0] & 0x80 else "text/plain"
    decode_action(kind, content_type, data[1:])


def _presence(data: bytes) -> None:
    gossip.decode_presence(envelope.decode_envelope(data), now_ms=_NOW_MS)


TARGETS: Final[dict[str, Callable[[bytes], object]]] = {
    "framing": _frames,
    "envelope": envelope.decode_envelope,
    "gossip": lambda d: gossip.decode_gossip(d, now_ms=_NOW_MS),
    "presence": _presence,
    "hello": hello.decode_hello,
    "delivery": delivery.decode_frame,
    "fetch_request": fetch.decode_request,
    "fetch_answer": fetch.decode_answer,
    "media_request": media.decode_request,
    "media_answer": media.decode_answer,
    "media_ref": content.decode_media,
    "sync": sync.decode_sync_frame,
    "reconcile": reconcile.decode_message,
    "history_request": history_share.decode_history_request,
    "home_record": home_record.decode_home_record,
    "certificate": identity.decode_certificate,
    "membership": membership.decode_membership,
    "private": private.decode_private,
    "receipt": receipts.decode_receipt,
    "typing": content.decode_typing,
    "contact": content.decode_contact,
    "profile": content.decode_profile,
    "actions": _actions,
    "annotated": decode_annotated,
    "join_request": invites.decode_join_request,
    "join_answer": invites.decode_join_answer,
    "verify": verification.decode_verify_frame,
    "caps_request": capabilities.decode_caps_request,
    "caps_answer": capabilities.decode_caps_answer,
    "link_request": linking.decode_link_request,
    "link_message": lambda d: linking.decode_link_message(d, sender="12D3KooWfuzz"),
    "link_answer": linking.decode_link_answer,
    "claim_request": claim.decode_claim_request,
    "claim_answer": claim.decode_claim_answer,
    "forward_request": forward.decode_forward_request,
    "forward_answer": forward.decode_forward_answer,
    "forwarded_key": forward.decode_forwarded_key,
    "key_request": key_request.decode_key_request,
    "key_bundle": keys.decode_key_bundle,
    "one_time_key": keys.decode_one_time_key,
    "encrypted_body": megolm.decode_encrypted_body,
    "plaintext": megolm.decode_plaintext,
    "room_key": room_key.decode_room_key,
    "room_key_shares": room_key.decode_room_key_shares,
    "timestamp": decode_timestamp,
    "client_frame": lambda d: client_api.decode_client_frame(_text(d)),
    "client_frame_bytes": client_api.decode_client_frame,
}


def check(name: str, data: bytes) -> None:
    """Run target `name` on `data`; a `RemoteProtocolError` is a pass, anything else raises."""
    with contextlib.suppress(RemoteProtocolError):
        TARGETS[name](data)
