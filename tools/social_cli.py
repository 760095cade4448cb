"""`hearthmesh friends` and `hearthmesh profile`: friends, blocks and profiles over the client
API (SPEC §18, §32). Exit codes as in tools/client.py."""

from __future__ import annotations

import asyncio
import mimetypes
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from hearthmesh.tools.client import ApiClient

__all__ = ["FRIEND_ACTIONS", "friends", "profile"]

FRIEND_ACTIONS: Final = (
    "list",
    "requests",
    "add",
    "accept",
    "decline",
    "block",
    "unblock",
    "blocked",
    "invite",
)
_EXIT_USAGE: Final = 2


async def friends(client: ApiClient, args: Any) -> int:
    """List, add (by id or `hearthmesh:` link), answer, block and unblock; show our invite."""
    action = args.action or "list"
    if action in ("list", "requests", "blocked"):
        path, key = {
            "list": ("/v1/friends", "friends"),
            "requests": ("/v1/friends/requests", "requests"),
            "blocked": ("/v1/friends/blocked", "blocked"),
        }[action]
        people = (await client.call("GET", path))[key]
        for person in people:
            online = "online" if person.get("online") else "offline"
            note = f"  {person['note']}" if "note" in person else ""
            print(f"{person['user_id']}  {person['display_name'] or '-'}  ({online}){note}")
        if not people and action == "list":
            print("no friends yet: `hearthmesh friends add USER_ID|LINK`")
        return 0
    if action == "invite":
        from hearthmesh.tools.client import show_qr

        invite = await client.call("GET", "/v1/friends/invite")
        show_qr(invite["link"], getattr(args, "png", None))
        print(invite["link"])
        return 0
    if not args.user:
        print(f"friends {action} needs a USER_ID", file=sys.stderr)
        return _EXIT_USAGE
    if action == "add":
        target = "link" if args.user.startswith("hearthmesh:") else "user_id"
        await client.call("POST", "/v1/friends/requests", {target: args.user, "note": args.note})
        print(f"friend request sent to {args.user}")
    elif action in ("block", "unblock"):
        method = "PUT" if action == "block" else "DELETE"
        await client.call(method, f"/v1/friends/blocked/{args.user}")
        print(f"{action}ed {args.user}")
    else:
        await client.call("POST", f"/v1/friends/requests/{args.user}/{action}")
        print(f"{action}ed {args.user}")
    return 0


async def profile(client: ApiClient, args: Any) -> int:
    """`profile show [USER_ID]` or `profile set --name --handle --bio --picture FILE`."""
    if args.action == "set":
        update: dict[str, Any] = {
            name: value
            for name, value in (
                ("display_name", args.name),
                ("handle", args.handle),
                ("bio", args.bio),
            )
            if value is not None
        }
        if args.picture:
            path = Path(args.picture)
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            data = await asyncio.to_thread(path.read_bytes)
            uploaded = await client.upload(data, content_type)
            update["profile_pic"] = uploaded["digest"]
        if not update:
            print("profile set needs --name, --handle, --bio or --picture", file=sys.stderr)
            return _EXIT_USAGE
        shown = await client.call("PUT", "/v1/profile", update)
    else:
        path_ = f"/v1/users/{args.user}" if args.user else "/v1/profile"
        shown = await client.call("GET", path_)
    for field in ("user_id", "display_name", "handle", "bio", "profile_pic"):
        print(f"{field}: {shown.get(field) or '-'}")
    return 0
