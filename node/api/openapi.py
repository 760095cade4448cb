"""The OpenAPI 3.1 document of the client API, written as data and served at /openapi.json.

Kept beside the routes by hand rather than generated from handlers: aiohttp has no schema
layer, and a test checks that every route of `http_routes.ROUTES` appears here.
"""

from __future__ import annotations

from typing import Any, Final

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
_USER_ID: Final = {"type": "string", "pattern": "^u[a-z2-7]{52}$", "description": "SPEC §3.2"}
_HEX_ID: Final = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


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


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_UID: Final = _query("uid", _USER_ID, "the seed's uid: must name this node's user if given")
_ROOM: Final = _path("id", _HEX_ID)


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


def _body(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


_STR: Final = {"type": "string"}
_PATHS: Final[dict[str, dict[str, Any]]] = {
    "/openapi.json": {"get": _op("this document")},
    "/v1/node/status": {
        "get": _op(
            "peer id, listen addresses, user id, connected peers, unreachable homes, version"
        )
    },
    "/v1/peers": {"post": _op("dial a peer and swap home records", body=_body(address=_STR))},
    "/v1/conversation": {
        "get": _op(
            "the seed's conversation list: conversations (RecipientName, "
            "RecipientProfilePic, LatestMessage), page_size, page_number",
            params=(
                _UID,
                _query("page_size", {"type": "integer", "minimum": 1, "maximum": 100}, "1..100"),
                _query("page_number", {"type": "integer", "minimum": 1}, "1-based"),
            ),
        ),
        "post": _op("open a direct conversation", ok=201, body=_body(recipient_id=_USER_ID)),
        "delete": _op(
            "remove a conversation from the list",
            params=(_UID, _query("id", _HEX_ID, "conversation id", required=True)),
        ),
    },
    "/v1/conversation/{id}/details": {
        "get": _op(
            "messages of a conversation, newest page first, paged by cursor",
            params=(
                _ROOM,
                _UID,
                _query("cursor", _STR, "next_cursor of the previous page"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "1..100"),
            ),
        )
    },
    "/v1/conversation/{id}/messages": {
        "post": _op(
            "send a message (the WebSocket send, over HTTP)",
            ok=201,
            params=(_ROOM,),
            body=_body(message=_STR, type=_STR, client_id=_STR, media=_OBJECT),
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
        "post": _op("a one-time pairing code for a new device (primary only)", ok=201)
    },
    "/v1/devices/{device_id}": {
        "delete": _op(
            "revoke a device (primary only): it receives nothing new",
            params=({"name": "device_id", "in": "path", "required": True, "schema": _STR},),
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
        "post": _op("send a friend request", ok=202, body=_body(user_id=_USER_ID, note=_STR)),
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
        "get": _op("the seed's get_all_group"),
        "post": _op(
            "create a group",
            ok=201,
            body=_body(
                name=_STR,
                members={"type": "array", "items": _USER_ID},
                open={"type": "boolean"},
            ),
        ),
    },
    "/v1/groups/{id}/members": {
        "post": _op("add a member (admins)", params=(_ROOM,), body=_body(user_id=_USER_ID))
    },
    "/v1/groups/{id}/join": {"post": _op("join an open group", params=(_ROOM,))},
    "/v1/groups/{id}/leave": {"post": _op("leave a group", params=(_ROOM,))},
    "/v1/profile": {
        "get": _op("this user's profile"),
        "put": _op(
            "change this user's profile",
            body=_body(display_name=_STR, handle=_STR, bio=_STR, profile_pic=_HEX_ID),
        ),
    },
    "/v1/users/{user_id}": {
        "get": _op("a user's profile and presence", params=(_path("user_id", _USER_ID),))
    },
    "/v1/media": {
        "post": {
            **_op("upload a blob (raw body, its Content-Type)", ok=201),
            "requestBody": {"required": True, "content": {"*/*": {"schema": {}}}},
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
            "register a webhook / UnifiedPush or Web Push endpoint",
            ok=201,
            body=_body(kind=_STR, endpoint=_STR, keys=_body(p256dh=_STR, auth=_STR)),
        ),
    },
    "/v1/push/subscriptions/{id}": {
        "delete": _op("forget a push endpoint", params=(_path("id", _STR),))
    },
    "/v1/ws": {
        "get": _op(
            "WebSocket upgrade: JSON event frames (SPEC §15.4); ?cursor= resumes",
            ok=101,
            params=(_query("cursor", _STR, "cursor of the last event seen"),),
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
            "`Authorization: Bearer <DATA_DIR/api-token>`.",
        },
        "servers": [{"url": "http://127.0.0.1:8470"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR},
        },
        "security": [{"bearer": []}],
        "paths": _PATHS,
    }
