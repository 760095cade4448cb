"""CLI commands for messages and conversations (SPEC §31.8): `send --file` / `--reply-to`,
`recall`, `edit`, `react`, `forward`, `delete`, `conversations`, `read` and `history`, all
through the client API like the web client."""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from hearthmesh.tools.client import ApiClient

__all__ = ["MESSAGE_COMMANDS", "add_message_parsers", "send_message"]

_MEDIA_KINDS: Final = ("image", "video", "audio")


def add_message_parsers(
    commands: Any, client: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    """Add the subcommands; `client` adds the API connection flags to each."""
    recall = client(commands.add_parser("recall", help="unsend one of your messages"))
    recall.add_argument("message_id")
    edit = client(commands.add_parser("edit", help="replace the text of one of your messages"))
    edit.add_argument("message_id")
    edit.add_argument("text")
    react = client(commands.add_parser("react", help="react to a message with an emoji"))
    react.add_argument("message_id")
    react.add_argument("emoji")
    react.add_argument("--remove", action="store_true", help="take the reaction back")
    forward = client(commands.add_parser("forward", help="forward a message to a conversation"))
    forward.add_argument("message_id")
    forward.add_argument("--room", required=True, help="conversation id (64 hex digits)")
    delete = client(commands.add_parser("delete", help="delete a message for yourself"))
    delete.add_argument("message_id")
    conversations = client(commands.add_parser("conversations", help="list conversations"))
    conversations.add_argument("--page", type=int, default=1, help="page number (1)")
    conversations.add_argument("--json", action="store_true", help="print the raw JSON")
    read = client(commands.add_parser("read", help="mark a conversation read"))
    read.add_argument("room", help="conversation id (64 hex digits)")
    history = client(commands.add_parser("history", help="show a conversation's messages"))
    history.add_argument("room", help="conversation id (64 hex digits)")
    history.add_argument("--limit", type=int, default=50, help="messages (1..100, 50)")
    history.add_argument("--cursor", help="next_cursor of the previous page")
    history.add_argument("--json", action="store_true", help="print the raw JSON")


async def send_message(client: ApiClient, args: Any, room: str) -> dict[str, Any]:
    """The `send` command's body: text, or a file (uploaded first), maybe a reply."""
    body: dict[str, Any] = {"message": args.text or "", "client_id": "cli"}
    if args.file is not None:
        path = Path(args.file)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        media = await client.upload(await asyncio.to_thread(path.read_bytes), content_type)
        major = content_type.split("/", 1)[0]
        body["type"] = major if major in _MEDIA_KINDS else "file"
        body["media"] = media
    if args.reply_to is not None:
        body["reply_to"] = args.reply_to
    sent: dict[str, Any] = await client.call("POST", f"/v1/conversation/{room}/messages", body)
    return sent


async def _action(client: ApiClient, args: Any) -> int:
    path = f"/v1/messages/{args.message_id}"
    match args.command:
        case "recall":
            await client.call("POST", f"{path}/recall")
        case "edit":
            await client.call("POST", f"{path}/edit", {"message": args.text})
        case "react":
            await client.call(
                "POST", f"{path}/reactions", {"emoji": args.emoji, "active": not args.remove}
            )
        case "forward":
            done = await client.call("POST", f"{path}/forward", {"room_id": args.room})
            print(f"forwarded as {done['action_id']}")
            return 0
        case "delete":
            await client.call("DELETE", path)
    print(f"{args.command}: {args.message_id} done")
    return 0


async def _conversations(client: ApiClient, args: Any) -> int:
    page = await client.call("GET", "/v1/conversation", params={"page_number": str(args.page)})
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    for row in page["conversations"]:
        latest = row["LatestMessage"] or {}
        unread = f" ({row['unread']} unread)" if row.get("unread") else ""
        print(f"{row['id']}  {row['RecipientName']}{unread}: {_text(latest)}")
    if page["has_more"]:
        print(f"... more: --page {args.page + 1}")
    return 0


async def _read(client: ApiClient, args: Any) -> int:
    done = await client.call("POST", f"/v1/conversation/{args.room}/read")
    print(f"read up to {done['read']}")
    return 0


async def _history(client: ApiClient, args: Any) -> int:
    params = {"limit": str(args.limit)}
    if args.cursor:
        params["cursor"] = args.cursor
    page = await client.call("GET", f"/v1/conversation/{args.room}/details", params=params)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    for message in page["messages"]:
        quote = message.get("quote")
        if quote:
            print(f"    > {_text(quote)}")
        reactions = " ".join(f"{e}{len(u)}" for e, u in message.get("reactions", {}).items())
        edited = " (edited)" if message.get("edited") else ""
        print(
            f"{message['message_id'][:12]} [{message['sender_id'][:12]}] "
            f"{_text(message)}{edited} {reactions}".rstrip()
        )
    if page["next_cursor"]:
        print(f"... older: --cursor {page['next_cursor']}")
    return 0


def _text(message: dict[str, Any]) -> str:
    if message.get("is_deleted"):
        return "(recalled)"
    return str(message.get("message", f"({message.get('type', '?')})"))


MESSAGE_COMMANDS: Final[dict[str, Callable[[ApiClient, Any], Awaitable[int]]]] = {
    "recall": _action,
    "edit": _action,
    "react": _action,
    "forward": _action,
    "delete": _action,
    "conversations": _conversations,
    "read": _read,
    "history": _history,
}
