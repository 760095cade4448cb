"""The OpenAPI 3.1 document of the client API, written as data and served at /openapi.json.

Kept beside the routes by hand rather than generated from handlers: aiohttp has no schema
layer, and a test checks that every route of `http_routes.ROUTES` appears here. It states what
the server accepts (SPEC §15.6): required fields, the patterns the decoders enforce, bounds; and
schemathesis checks it against a running API in the test suite
(tests/node/test_api_schemathesis.py). String bounds are in characters, as JSON Schema counts;
the server's are UTF-8 bytes, equal for ASCII (the descriptions say so).
"""

from __future__ import annotations

from typing import Any, Final

from hearthmesh.node.api.paired_clients import MAX_CLIENT_NAME_CHARS
from hearthmesh.node.api.views import CURSOR_PATTERN
from hearthmesh.protocol.actions import MAX_EDIT_BYTES, MAX_EMOJI_BYTES
from hearthmesh.protocol.client_api import MAX_CLIENT_ID_CHARS, MAX_GROUP_MEMBERS, MAX_PAGE_NUMBER
from hearthmesh.protocol.content import MAX_NOTE_BYTES
from hearthmesh.protocol.envelope import MAX_BODY_BYTES
from hearthmesh.protocol.friend_link import MAX_FRIEND_LINK_CHARS
from hearthmesh.protocol.invites import MAX_INVITE_CODE_CHARS, MAX_INVITE_TTL_MS
from hearthmesh.protocol.media import MAX_MEDIA_BYTES
from hearthmesh.protocol.media_type import MAX_MEDIA_TYPE_CHARS
from hearthmesh.protocol.membership import (
    MAX_ADD_TARGETS,
    MAX_GROUP_NAME_BYTES,
    MAX_GROUP_SIZE,
    MAX_SHARED_HISTORY,
)

__all__ = ["openapi_document"]

_ERROR: Final = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "name", "message"],
            "properties": {
                "code": {"type": "integer", "description": "SPEC §9 error code"},
                "name": {"type": "string"},
                "message": {"type": "string"},
            },
        }
    },
}
_OBJECT: Final = {"type": "object"}
# 32 bytes in 52 base32 characters leave 4 spare bits, which must be zero: the last character
# is then `a` or `q` (SPEC §3.2, one text per id).
_USER_ID: Final = {"type": "string", "pattern": "^u[a-z2-7]{51}[aq]$", "description": "SPEC §3.2"}
_DEVICE_ID: Final = {"type": "string", "pattern": "^d[a-z2-7]{51}[aq]$", "description": "SPEC §3.2"}
_HEX_ID: Final = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_SUBSCRIPTION_ID: Final = {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}
_CURSOR: Final = {"type": "string", "pattern": CURSOR_PATTERN, "description": "next_cursor"}
_MEDIA_TYPE: Final = {
    "type": "string",
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$",
    "maxLength": MAX_MEDIA_TYPE_CHARS,
    "description": "RFC 6838 type/subtype (parameters are accepted too)",
}


def _text(max_bytes: int, min_length: int = 0) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": min_length,
        "maxLength": max_bytes,
        "description": f"valid Unicode (no lone surrogate) of at most {max_bytes} UTF-8 bytes",
    }


def _query(
    name: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _count(high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": high}


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_UID: Final = _query("uid", _USER_ID, "the seed's uid: must name this node's user if given")
_ROOM: Final = _path("id", _HEX_ID)
_GROUP_ERRORS: Final = (400, 401, 403, 404, 409, 413, 429)
"""403: a role or a ban refuses it; 409: it does not fit the group's state (SPEC §30.2)."""
_FLOW_ID: Final = _path("flow_id", {"type": "string", "pattern": "^[0-9a-f]{32}$"})


def _op(
    summary: str,
    *,
    ok: int = 200,
    params: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 404, 413, 429),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": list(params),
        "responses": {
            str(ok): {
                "description": "success",
                "content": {"application/json": {"schema": _OBJECT}},
            },
            **{
                str(code): {
                    "description": "error",
                    "content": {"application/json": {"schema": _ERROR}},
                }
                for code in errors
            },
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _body(*required: str, **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


_MEDIA_FIELDS: Final = _body(
    "digest",
    "content_type",
    "size",
    digest=_HEX_ID,
    content_type=_MEDIA_TYPE,
    size={"type": "integer", "minimum": 0, "maximum": MAX_MEDIA_BYTES},
)
_CLIENT_ID: Final = _text(MAX_CLIENT_ID_CHARS, min_length=1)
_TIME_MS: Final = {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}
_SEND_EXTRAS: Final[dict[str, dict[str, Any]]] = {
    "reply_to": {**_HEX_ID, "description": "the message this one answers (SPEC §31.4)"},
    "written_ms": {**_TIME_MS, "description": "when written, client clock (SPEC §31.6)"},
    "sent_ms": {**_TIME_MS, "description": "when sent, client clock; needed by written_ms"},
}
_MESSAGE_ID: Final = _path("message_id", _HEX_ID)
_SEND: Final = {
    "oneOf": [
        _body(
            "message",
            message=_text(MAX_BODY_BYTES),
            type={"type": "string", "enum": ["text"]},
            client_id=_CLIENT_ID,
            media={"type": "null"},
            **_SEND_EXTRAS,
        ),
        _body(
            "message",
            "type",
            "media",
            message=_text(MAX_BODY_BYTES),
            type={"type": "string", "enum": ["image", "video", "audio", "file"]},
            client_id=_CLIENT_ID,
            media=_MEDIA_FIELDS,
            **_SEND_EXTRAS,
        ),
    ]
}
_PUSH: Final = {
    "oneOf": [
        _body(
            "endpoint",
            kind={"type": "string", "enum": ["webhook"]},
            endpoint={"type": "string", "pattern": "^https?://", "maxLength": 2048},
        ),
        _body(
            "kind",
            "endpoint",
            "keys",
            kind={"type": "string", "enum": ["webpush"]},
            endpoint={"type": "string", "pattern": "^https?://", "maxLength": 2048},
            keys={
                **_body(
                    "p256dh",
                    "auth",
                    p256dh={"type": "string", "description": "a P-256 point, base64url"},
                    auth={"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
                ),
            },
        ),
    ]
}


_STR: Final = {"type": "string"}
_PATHS: Final[dict[str, dict[str, Any]]] = {
    "/openapi.json": {"get": _op("this document")},
    "/v1/node/status": {
        "get": _op(
            "state (running, or failed with its failure: SPEC §11.8.5), "
            "peer id, listen addresses, user id, connected peers, reachability (public, "
            "private, unknown), relays we hold reservations on, each peer's paths (direct, "
            "webrtc or relay peer ids), hole punches per transport, unreachable homes, "
            "undecryptable (held messages whose key was asked for in vain, SPEC §27.13), "
            "slow arrivals and ended outages (SPEC §20.6), deferred rows due again "
            "(SPEC §11.5.1), capability asks (SPEC §20.7.1), standing (charges by protocol, "
            "bans and prefix bans since start, SPEC §11.6.7), version"
        )
    },
    "/v1/peers": {
        "post": _op(
            "dial a peer and swap home records; 404 if no peer answers there",
            body=_body(
                "address",
                address={
                    "type": "string",
                    "pattern": "^/.*/p2p/[1-9A-HJ-NP-Za-km-z]+$",
                    "maxLength": 1024,
                    "description": "a multiaddr ending in /p2p/<peer id>",
                },
            ),
        )
    },
    "/v1/conversation": {
        "get": _op(
            "the seed's conversation list: conversations (RecipientName, "
            "RecipientProfilePic, LatestMessage, members, admins, unread), page_size, page_number",
            params=(
                _UID,
                _query("page_size", {"type": "integer", "minimum": 1, "maximum": 100}, "1..100"),
                _query(
                    "page_number",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_NUMBER},
                    "1-based",
                ),
                _query(
                    "requests",
                    {
                        "type": "string",
                        "enum": ["include", "exclude", "only"],
                        "default": "include",
                    },
                    "message requests (SPEC §32.5): listed with the rest, left out, or alone",
                ),
            ),
        ),
        "post": _op(
            "open a direct conversation",
            ok=201,
            body=_body("recipient_id", recipient_id=_USER_ID),
        ),
        "delete": _op(
            "remove a conversation from the list",
            params=(_UID, _query("id", _HEX_ID, "conversation id", required=True)),
        ),
    },
    "/v1/conversation/{id}/details": {
        "get": _op(
            "messages of a conversation, newest page first, paged by cursor; people: the "
            "members' profiles (SPEC §32.1)",
            params=(
                _ROOM,
                _UID,
                _query("cursor", _CURSOR, "next_cursor of the previous page"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "1..100"),
            ),
        )
    },
    "/v1/conversation/{id}/messages": {
        "post": _op(
            "send a message (the WebSocket send, over HTTP)",
            ok=201,
            params=(_ROOM,),
            body=_SEND,
        )
    },
    "/v1/conversation/{id}/digest": {
        "get": _op(
            "SHA-256 over the conversation's ordered event ids: compare two devices",
            params=(_ROOM,),
        )
    },
    "/v1/devices": {"get": _op("this user's devices and the node each lives on")},
    "/v1/devices/link": {
        "post": _op(
            "a one-time link code for a new device (primary only): code, short_code, "
            "expires_ms, and qr (the code as an SVG data URI)",
            ok=201,
        )
    },
    "/v1/devices/{device_id}": {
        "delete": _op(
            "revoke a device (primary only): it receives nothing new",
            params=(_path("device_id", _DEVICE_ID),),
        )
    },
    "/v1/friends": {"get": _op("contacts with profile and presence", params=(_UID,))},
    "/v1/friends/requests": {
        "get": _op(
            "pending friend requests to this user (incoming) or from it (outgoing)",
            params=(
                _query(
                    "direction",
                    {"type": "string", "enum": ["incoming", "outgoing"], "default": "incoming"},
                    "which pending requests to list",
                ),
            ),
        ),
        "post": _op(
            "send a friend request, to a user id or a hearthmesh: friend link (SPEC §32.2)",
            ok=202,
            body=_body(
                user_id=_USER_ID, link=_text(MAX_FRIEND_LINK_CHARS), note=_text(MAX_NOTE_BYTES)
            ),
        ),
    },
    "/v1/friends/invite": {"get": _op("our hearthmesh: friend link and its QR code (SPEC §32.2)")},
    "/v1/friends/blocked": {"get": _op("the users our user blocked (SPEC §32.3)")},
    "/v1/friends/blocked/{user_id}": {
        "put": _op(
            "block a user on every home of ours: what they send is dropped (SPEC §32.3)",
            params=(_path("user_id", _USER_ID),),
        ),
        "delete": _op("unblock a user", params=(_path("user_id", _USER_ID),)),
    },
    "/v1/privacy": {
        "get": _op("who sees our presence, last seen and typing (SPEC §32.4)"),
        "put": _op(
            "set who sees our presence, last seen and typing",
            body=_body("presence", presence={"type": "string", "enum": ["contacts", "nobody"]}),
        ),
    },
    "/v1/conversation/{id}/accept": {
        "post": _op("accept a message request (SPEC §32.5)", params=(_ROOM,))
    },
    "/v1/friends/requests/{user_id}/accept": {
        "post": _op("accept a request", params=(_path("user_id", _USER_ID),))
    },
    "/v1/friends/requests/{user_id}/decline": {
        "post": _op("decline a request", params=(_path("user_id", _USER_ID),))
    },
    "/v1/friends/requests/{user_id}": {
        "delete": _op("withdraw our pending request", params=(_path("user_id", _USER_ID),))
    },
    "/v1/groups": {
        "get": _op("the seed's get_all_group: id, type, name, open, members, admins"),
        "post": _op(
            "create a group",
            ok=201,
            body=_body(
                "name",
                name=_text(MAX_GROUP_NAME_BYTES),
                members={
                    "type": "array",
                    "items": _USER_ID,
                    "maxItems": MAX_GROUP_MEMBERS,
                    "uniqueItems": True,
                },
                open={"type": "boolean"},
            ),
        ),
    },
    "/v1/groups/{id}/join": {
        "post": _op("join an open group", params=(_ROOM,), errors=_GROUP_ERRORS)
    },
    "/v1/groups/join": {
        "post": _op(
            "join a group by an invite link or code (SPEC §30.5)",
            body=_body("link", link=_text(MAX_INVITE_CODE_CHARS, min_length=1)),
            errors=(*_GROUP_ERRORS, 504),
        )
    },
    "/v1/groups/{id}": {
        "patch": _op(
            "change the group's name, topic, avatar or history for new members (admins; "
            "SPEC §30.5, §30.6)",
            params=(_ROOM,),
            body={
                **_body(
                    name=_text(MAX_GROUP_NAME_BYTES),
                    topic=_text(MAX_GROUP_NAME_BYTES),
                    avatar={"anyOf": [_HEX_ID, {"type": "null"}], "description": "null: none"},
                    history={"enum": ["joined", "shared"]},
                    history_limit=_count(MAX_SHARED_HISTORY),
                ),
                "minProperties": 1,
                "dependentRequired": {"history_limit": ["history"]},
            },
            errors=_GROUP_ERRORS,
        )
    },
    "/v1/groups/{id}/members": {
        "get": _op(
            "members with their roles, owners first, and who is banned (SPEC §30.5)",
            params=(
                _ROOM,
                _query("page_size", _count(MAX_GROUP_SIZE), "members per page (100)"),
                _query("page_number", _count(MAX_PAGE_NUMBER), "from 1"),
            ),
        ),
        "post": _op(
            "add a member, or up to 64 by one MEMBERSHIP event (admins; SPEC §12.1.1)",
            params=(_ROOM,),
            body={
                **_body(
                    user_id=_USER_ID,
                    user_ids={
                        "type": "array",
                        "items": _USER_ID,
                        "minItems": 1,
                        "maxItems": MAX_ADD_TARGETS,
                        "uniqueItems": True,
                    },
                ),
                "oneOf": [{"required": ["user_id"]}, {"required": ["user_ids"]}],
            },
            errors=_GROUP_ERRORS,
        ),
    },
    **{
        f"/v1/groups/{{id}}/{action}": {
            "post": _op(
                f"{action} a user (admins; SPEC §30.2)",
                params=(_ROOM,),
                body=_body("user_id", user_id=_USER_ID),
                errors=_GROUP_ERRORS,
            )
        }
        for action in ("kick", "ban", "unban")
    },
    "/v1/groups/{id}/role": {
        "post": _op(
            "promote or demote a member (SPEC §30.2)",
            params=(_ROOM,),
            body=_body(
                "user_id",
                "role",
                user_id=_USER_ID,
                role={"type": "string", "enum": ["member", "admin", "owner"]},
            ),
            errors=_GROUP_ERRORS,
        )
    },
    "/v1/groups/{id}/invites": {
        "get": _op("the group's invites, as its events fold (admins)", params=(_ROOM,)),
        "post": _op(
            "issue an invite: link, code and QR, shown once (admins; SPEC §30.3)",
            ok=201,
            params=(_ROOM,),
            body=_body(
                ttl_s=_count(MAX_INVITE_TTL_MS // 1000),
                max_uses=_count(MAX_GROUP_SIZE),
            ),
            errors=_GROUP_ERRORS,
        ),
    },
    "/v1/groups/{id}/invites/{invite_id}": {
        "delete": _op(
            "revoke an invite (admins)",
            params=(_ROOM, _path("invite_id", {"type": "string", "pattern": "^[0-9a-f]{32}$"})),
        )
    },
    "/v1/groups/{id}/leave": {"post": _op("leave a group", params=(_ROOM,), errors=_GROUP_ERRORS)},
    "/v1/profile": {
        "get": _op("this user's profile"),
        "put": _op(
            "change this user's profile",
            body=_body(
                display_name=_text(128),
                handle={**_text(64), "pattern": "^[^\\u0000]*$"},
                bio=_text(1024),
                profile_pic={"anyOf": [_HEX_ID, {"type": "null"}], "description": "null: keep"},
            ),
        ),
    },
    "/v1/users/{user_id}": {
        "get": _op("a user's profile and presence", params=(_path("user_id", _USER_ID),))
    },
    "/v1/media": {
        "post": {
            **_op("upload a blob (raw body, its Content-Type)", ok=201),
            "requestBody": {
                "required": True,
                "description": f"the blob, 1..{MAX_MEDIA_BYTES} bytes; Content-Type is kept",
                "content": {
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary", "minLength": 1}
                    }
                },
            },
        }
    },
    "/v1/media/{digest}": {
        "get": _op(
            "download a blob (fetched from the sender's home if needed)",
            params=(_path("digest", _HEX_ID),),
            errors=(400, 401, 403, 404, 429, 504),
        )
    },
    "/v1/push/vapid": {"get": _op("the VAPID applicationServerKey (RFC 8292)")},
    "/v1/push/subscriptions": {
        "get": _op("this user's push endpoints"),
        "post": _op(
            "register a webhook / UnifiedPush or Web Push endpoint (409: 32 are kept already)",
            ok=201,
            errors=(400, 401, 403, 404, 409, 413, 429),
            body=_PUSH,
        ),
    },
    "/v1/push/subscriptions/{id}": {
        "delete": _op("forget a push endpoint", params=(_path("id", _SUBSCRIPTION_ID),))
    },
    "/v1/pair": {
        "post": {
            **_op(
                "redeem a one-time pairing code for a session cookie (SPEC §15.7); no token",
                ok=201,
                errors=(400, 401, 403, 409, 413, 429),
                body=_body(
                    "code",
                    code=_text(64, min_length=1),
                    name=_text(MAX_CLIENT_NAME_CHARS),
                ),
            ),
            "security": [],
        }
    },
    "/v1/session": {"get": _op("who this client is, and its CSRF token (SPEC §15.7)")},
    "/v1/clients": {"get": _op("the paired browser clients")},
    "/v1/clients/pair": {"post": _op("a one-time pairing code and its URL", ok=201)},
    "/v1/clients/{client_id}": {
        "delete": _op(
            "revoke a paired client: its session ends at once",
            params=(_path("client_id", {"type": "string", "pattern": "^[0-9a-f]{32}$"}),),
        )
    },
    "/v1/verifications": {
        "get": _op("the SAS verification flows held here (SPEC §29.5)"),
        "post": _op(
            "start verifying a user's device (default: their first home; SPEC §29.5)",
            ok=201,
            errors=(400, 401, 403, 404, 413, 429, 504),
            body=_body(
                "user_id",
                user_id=_USER_ID,
                peer_id={"type": "string", "minLength": 1, "maxLength": 128},
            ),
        ),
    },
    "/v1/verifications/{flow_id}": {
        "get": _op("a verification: state, emoji and decimals", params=(_FLOW_ID,))
    },
    "/v1/verifications/{flow_id}/confirm": {
        "post": _op(
            "our user sees the same emoji on both devices: send our MAC",
            params=(_FLOW_ID,),
        )
    },
    "/v1/verifications/{flow_id}/cancel": {
        "post": _op("the emoji differ, or give up: cancel the flow", params=(_FLOW_ID,))
    },
    "/v1/trust": {"get": _op("the trust of every user with a verified device key (SPEC §29.5)")},
    "/v1/users/{user_id}/trust": {
        "get": _op(
            "a user's device keys, which are verified, and keys_changed (SPEC §29.5)",
            params=(_path("user_id", _USER_ID),),
        )
    },
    # --- message actions (SPEC §31.8) ---
    "/v1/messages/{message_id}": {
        "get": _op(
            "one message as clients see it: folded edits, reactions, recall; a reply's quote",
            params=(_MESSAGE_ID,),
        ),
        "delete": _op(
            "delete for me: hidden on every device of our user, not from anyone else",
            params=(_MESSAGE_ID,),
        ),
    },
    "/v1/messages/{message_id}/recall": {
        "post": _op(
            "recall (unsend) our own message within the recall window; 400 NOT_SENDER (65) "
            "for another's, RECALL_WINDOW_CLOSED (66) after the window",
            ok=201,
            params=(_MESSAGE_ID,),
        )
    },
    "/v1/messages/{message_id}/edit": {
        "post": _op(
            "replace the text of our own message (every edit is kept)",
            ok=201,
            params=(_MESSAGE_ID,),
            body=_body("message", message=_text(MAX_EDIT_BYTES, min_length=1)),
        )
    },
    "/v1/messages/{message_id}/reactions": {
        "post": _op(
            "set (or, active false, remove) our reaction with one emoji",
            ok=201,
            params=(_MESSAGE_ID,),
            body=_body(
                "emoji",
                emoji={
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_EMOJI_BYTES,
                    "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
                    "description": f"printable text of at most {MAX_EMOJI_BYTES} UTF-8 bytes",
                },
                active={"type": "boolean"},
            ),
        )
    },
    "/v1/messages/{message_id}/forward": {
        "post": _op(
            "send a copy of the message's content to a conversation, marked forwarded",
            ok=201,
            params=(_MESSAGE_ID,),
            body=_body("room_id", room_id=_HEX_ID),
        )
    },
    "/v1/conversation/{id}/read": {
        "post": _op(
            "mark the conversation read: a read receipt for its newest message of another user",
            params=(_ROOM,),
        )
    },
    "/v1/ws": {
        "get": _op(
            "WebSocket upgrade: JSON event frames (SPEC §15.4); ?cursor= resumes",
            ok=101,
            params=(_query("cursor", _STR, "cursor of the last event seen"),),
            errors=(400, 401, 403, 404, 426, 429),
        )
    },
}


def openapi_document(version: str) -> dict[str, Any]:
    """The whole document; `version` is the package version."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hearthmesh home node client API",
            "version": version,
            "description": "See SPEC.md §15-§19. Every request needs "
            "`Authorization: Bearer <DATA_DIR/api-token>` or a paired browser's session "
            "cookie (with `X-CSRF-Token` on requests that change state, §15.7).",
        },
        "servers": [{"url": "http://127.0.0.1:8470"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR},
        },
        "security": [{"bearer": []}],
        "paths": _PATHS,
    }
