"""`hearthmesh group ...` (SPEC §30.5): create, invite, join, members, run and leave groups;
`invites` and `revoke` list and revoke the group's invites, `history` sets what a new member is
given (SPEC §30.6: `joined`, or `shared` with `--limit` messages).

Group ids are the 64 hex digits `group list` shows; users are user ids (SPEC §3.2).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from hearthmesh.tools.client import ApiClient

__all__ = ["GROUP_ACTIONS", "run_group"]

_EXIT_USAGE: Final = 2
_ROLE_OF: Final = {"promote": "admin", "demote": "member"}
GROUP_ACTIONS: Final = {
    "list": (),
    "create": ("NAME",),
    "invite": ("GROUP",),
    "invites": ("GROUP",),
    "revoke": ("GROUP", "INVITE_ID"),
    "history": ("GROUP", "joined|shared"),
    "join": ("LINK",),
    "members": ("GROUP",),
    "kick": ("GROUP", "USER_ID"),
    "ban": ("GROUP", "USER_ID"),
    "unban": ("GROUP", "USER_ID"),
    "promote": ("GROUP", "USER_ID"),
    "demote": ("GROUP", "USER_ID"),
    "rename": ("GROUP", "NAME"),
    "topic": ("GROUP", "TEXT"),
    "leave": ("GROUP",),
}
"""Each action and the operands it takes, in order."""


def _show(group: dict[str, Any]) -> None:
    role = group.get("my_role") or "-"
    print(f"{group['id']}  {group['name'] or '-'}  ({len(group['members'])} members, you: {role})")


async def run_group(client: ApiClient, args: Any) -> int:
    """One `hearthmesh group` action; returns its exit code."""
    action, operands = args.action, list(args.operands)
    needs = GROUP_ACTIONS[action]
    if len(operands) != len(needs):
        print(f"usage: hearthmesh group {action} {' '.join(needs)}", file=sys.stderr)
        return _EXIT_USAGE
    if action == "list":
        groups = (await client.call("GET", "/v1/groups"))["groups"]
        for group in groups:
            _show(group)
        if not groups:
            print("no groups yet: `hearthmesh group create NAME` or `hearthmesh group join LINK`")
        return 0
    if action == "create":
        _show(await client.call("POST", "/v1/groups", {"name": operands[0], "open": args.open}))
        return 0
    if action == "join":
        _show(await client.call("POST", "/v1/groups/join", {"link": operands[0]}))
        return 0
    path = f"/v1/groups/{operands[0]}"
    if action == "invite":
        body = {"max_uses": args.uses, "ttl_s": args.ttl_s}
        invite = await client.call("POST", f"{path}/invites", body)
        from hearthmesh.tools.client import show_qr

        show_qr(invite["link"], args.png)
        print(invite["link"])
        uses, invite_id = invite["max_uses"], invite["invite_id"]
        print(f"works {uses} time(s); shown only now (its id, to revoke: {invite_id})")
        return 0
    if action == "invites":
        for held in (await client.call("GET", f"{path}/invites"))["invites"]:
            state = "revoked" if held["revoked"] else f"{held['uses']}/{held['max_uses']} used"
            print(f"{held['invite_id']}  {state}  by {held['issuer']}")
        return 0
    if action == "revoke":
        await client.call("DELETE", f"{path}/invites/{operands[1]}")
        print(f"revoked {operands[1]}")
        return 0
    if action == "history":
        setting: dict[str, Any] = {"history": operands[1]}
        if operands[1] == "shared":
            setting["history_limit"] = args.limit
        group = await client.call("PATCH", path, setting)
        print(f"{group['id']}  history: {group['history']} {group['history_limit'] or ''}")
        return 0
    if action == "members":
        listing = await client.call("GET", f"{path}/members?page_size=1024")
        for member in listing["members"]:
            print(f"{member['user_id']}  {member['role']}")
        for banned in listing["banned"]:
            print(f"{banned}  banned")
        return 0
    if action == "leave":
        await client.call("POST", f"{path}/leave")
        print(f"left {operands[0]}")
        return 0
    if action in ("rename", "topic"):
        field = "name" if action == "rename" else "topic"
        _show(await client.call("PATCH", path, {field: operands[1]}))
        return 0
    user = operands[1]
    if action in _ROLE_OF:
        await client.call("POST", f"{path}/role", {"user_id": user, "role": _ROLE_OF[action]})
    else:
        await client.call("POST", f"{path}/{action}", {"user_id": user})
    print(f"{action}: {user} in {operands[0]}")
    return 0
