"""Groups through the client API and the CLI (SPEC §30.5): invites, joins, members, roles."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.protocol.envelope import Kind, RoomId
from hearthmesh.protocol.identity import UserId, user_id_text
from hearthmesh.tools.client import ApiRefused
from tests.integration.api_helpers import TOKEN, Home, home, link, run_cli


async def _refused(
    h: Home, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, int | None]:
    """The (status, code) a refused call answers; fails the test on a 2xx."""
    with pytest.raises(ApiRefused) as refused:
        await h.client.call(method, path, body)
    return refused.value.status, refused.value.error_code


async def _wait_for(h: Home, path: str, check: Any) -> Any:
    while not check(answer := await h.client.call("GET", path)):  # noqa: ASYNC110 - polling the API
        await asyncio.sleep(0.05)
    return answer


async def test_invite_join_members_and_roles_through_the_api(tmp_path: Path) -> None:
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        group = await a.client.call("POST", "/v1/groups", {"name": "hearth"})
        assert group["my_role"] == "owner" and group["topic"] == "" and group["avatar"] is None
        gid = group["id"]
        invite = await a.client.call("POST", f"/v1/groups/{gid}/invites", {"max_uses": 2})
        assert invite["link"] == "hearthmesh:join/" + invite["code"]
        assert invite["qr"].startswith("data:image/svg+xml")
        assert (invite["uses"], invite["max_uses"], invite["revoked"]) == (0, 2, False)

        joined = await b.client.call("POST", "/v1/groups/join", {"link": invite["code"]})
        assert (joined["id"], joined["my_role"], joined["name"]) == (gid, "member", "hearth")
        assert any(g["id"] == gid for g in (await b.client.call("GET", "/v1/groups"))["groups"])
        members = await a.client.call("GET", f"/v1/groups/{gid}/members")
        alice, bob = user_id_text(a.node.user_id), user_id_text(b.node.user_id)
        assert members["members"] == [
            {"user_id": alice, "role": "owner"},
            {"user_id": bob, "role": "member"},
        ]
        assert (members["member_count"], members["has_more"]) == (2, False)
        first = await a.client.call("GET", f"/v1/groups/{gid}/members?page_size=1&page_number=2")
        assert first["members"] == [{"user_id": bob, "role": "member"}] and not first["has_more"]
        listed = (await a.client.call("GET", f"/v1/groups/{gid}/invites"))["invites"]
        assert [(i["invite_id"], i["uses"]) for i in listed] == [(invite["invite_id"], 1)]

        async with b.socket() as socket:  # the WebSocket tells bob's clients (SPEC §30.5)
            await a.client.call("POST", f"/v1/groups/{gid}/role", {"user_id": bob, "role": "admin"})
            frame = await socket.next("membership", lambda f: f.get("action") == "role")
        assert (frame["room_id"], frame["by"], frame["target"]) == (gid, alice, bob)
        assert frame["roles"] == {alice: "owner", bob: "admin"}
        await _wait_for(b, "/v1/groups", lambda r: r["groups"][0]["my_role"] == "admin")
        changed = await b.client.call("PATCH", f"/v1/groups/{gid}", {"name": "home", "topic": "t"})
        assert (changed["name"], changed["topic"]) == ("home", "t")
        await _wait_for(a, "/v1/groups", lambda r: r["groups"][0]["name"] == "home")
        await a.client.call("DELETE", f"/v1/groups/{gid}/invites/{invite['invite_id']}")
        assert (await a.client.call("GET", f"/v1/groups/{gid}/invites"))["invites"][0]["revoked"]


def _texts(details: dict[str, Any]) -> list[str]:
    return [m["message"] for m in details["messages"] if m.get("type") == "text"]


async def test_a_joiner_is_shown_the_history_the_group_shares_through_the_api(
    tmp_path: Path,
) -> None:
    """SPEC §30.6 over the API: an admin PATCHes `history`, a joiner by invite is then shown
    the last `history_limit` messages sent before it joined, in order; a member cannot change
    the setting, nor name a limit out of range."""
    async with asyncio.timeout(60), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        gid = (await a.client.call("POST", "/v1/groups", {"name": "hearth"}))["id"]
        for text in ("one", "two", "three"):
            await a.client.call("POST", f"/v1/conversation/{gid}/messages", {"message": text})
        too_many = {"history": "shared", "history_limit": 257}
        assert await _refused(a, "PATCH", f"/v1/groups/{gid}", too_many) == (400, 2)
        assert await _refused(a, "PATCH", f"/v1/groups/{gid}", {"history": "all"}) == (400, 2)
        for body in (
            {"history": "joined", "history_limit": 257},
            {"name": "x", "history_limit": 5},
        ):
            assert await _refused(a, "PATCH", f"/v1/groups/{gid}", body) == (400, 2)
        shared = await a.client.call(
            "PATCH", f"/v1/groups/{gid}", {"history": "shared", "history_limit": 2}
        )
        assert (shared["history"], shared["history_limit"]) == ("shared", 2)
        invite = await a.client.call("POST", f"/v1/groups/{gid}/invites", {})
        joined = await b.client.call("POST", "/v1/groups/join", {"link": invite["link"]})
        assert (joined["history"], joined["history_limit"]) == ("shared", 2)
        shown = await _wait_for(
            b, f"/v1/conversation/{gid}/details", lambda r: _texts(r) == ["two", "three"]
        )
        held = [m for m in shown["messages"] if m.get("type") in ("text", "encrypted")]
        assert len(held) == 2, "nothing before what the group shares"
        refused = await _refused(b, "PATCH", f"/v1/groups/{gid}", {"history": "joined"})
        assert refused == (403, 63)


async def test_refused_actions_answer_their_code_never_200(tmp_path: Path) -> None:
    async with asyncio.timeout(30), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        gid = (await a.client.call("POST", "/v1/groups", {"name": "g"}))["id"]
        invite = await a.client.call("POST", f"/v1/groups/{gid}/invites", {})
        await b.client.call("POST", "/v1/groups/join", {"link": invite["link"]})
        alice, bob = user_id_text(a.node.user_id), user_id_text(b.node.user_id)
        stranger = user_id_text(UserId(bytes(range(32))))
        kick_owner = {"user_id": alice}
        assert await _refused(b, "POST", f"/v1/groups/{gid}/kick", kick_owner) == (403, 63)
        promote_self = {"user_id": bob, "role": "admin"}
        assert await _refused(b, "POST", f"/v1/groups/{gid}/role", promote_self) == (403, 63)
        assert await _refused(b, "PATCH", f"/v1/groups/{gid}", {"name": "mine"}) == (403, 63)
        assert await _refused(b, "POST", f"/v1/groups/{gid}/invites", {}) == (403, 63)
        assert await _refused(a, "POST", f"/v1/groups/{gid}/kick", {"user_id": stranger}) == (
            409,
            64,
        )
        as_member = {"user_id": bob, "role": "member"}
        assert await _refused(a, "POST", f"/v1/groups/{gid}/role", as_member) == (409, 64)
        spent = {"link": invite["link"]}  # one use, bob's
        assert await _refused(b, "POST", "/v1/groups/join", spent) == (403, 61)
        assert await _refused(a, "POST", "/v1/groups/join", {"link": "hearthmesh:join/x1"}) == (
            400,
            8,
        )
        bad_uses = {"max_uses": 0}
        assert await _refused(a, "POST", f"/v1/groups/{gid}/invites", bad_uses) == (400, 2)
        no_invite = f"/v1/groups/{gid}/invites/{'00' * 16}"
        assert await _refused(a, "DELETE", no_invite) == (404, 14)
        await a.client.call("POST", f"/v1/groups/{gid}/ban", {"user_id": bob})
        assert await _refused(a, "POST", f"/v1/groups/{gid}/members", {"user_id": bob}) == (
            403,
            62,
        )
        members = await a.client.call("GET", f"/v1/groups/{gid}/members")
        assert members["banned"] == [bob] and members["member_count"] == 1


async def _cli(h: Home, token_file: Path, *args: str) -> tuple[int, str]:
    return await run_cli(h, token_file, "group", *args)


@pytest.mark.slow
async def test_the_cli_runs_a_group(tmp_path: Path) -> None:
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN)
    async with asyncio.timeout(240), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        status, created = await _cli(a, token_file, "create", "hearth")
        assert status == 0, created
        gid = created.split()[0]
        status, shown = await _cli(a, token_file, "invite", gid, "--uses", "2")
        assert status == 0, shown
        invite = next(w for w in shown.split() if w.startswith("hearthmesh:join/"))
        status, joined = await _cli(b, token_file, "join", invite)
        assert status == 0 and joined.startswith(gid) and "you: member" in joined, joined
        bob = user_id_text(b.node.user_id)
        assert (await _cli(a, token_file, "promote", gid, bob))[0] == 0
        status, listing = await _cli(a, token_file, "members", gid)
        assert f"{bob}  admin" in listing and "  owner" in listing, listing
        assert (await _cli(a, token_file, "rename", gid, "home"))[0] == 0
        status, refused = await _cli(b, token_file, "kick", gid, user_id_text(a.node.user_id))
        assert status == 1 and "ROLE_REQUIRED" in refused, refused
        assert (await _cli(a, token_file, "demote", gid, bob))[0] == 0
        assert (await _cli(a, token_file, "kick", gid, bob))[0] == 0
        status, listing = await _cli(a, token_file, "list")
        assert status == 0 and f"{gid}  home  (1 members, you: owner)" in listing, listing
        assert (await _cli(a, token_file, "leave", gid))[0] == 0
        assert (await _cli(a, token_file, "kick", gid))[0] == 2  # usage


@pytest.mark.slow
async def test_the_cli_lists_and_revokes_invites_and_sets_the_history(tmp_path: Path) -> None:
    """SPEC §30.5.2, §30.6: `group invites|revoke|history`."""
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN)
    async with asyncio.timeout(60), home(tmp_path / "a") as a:
        gid = (await a.client.call("POST", "/v1/groups", {"name": "hearth"}))["id"]
        await a.client.call("POST", f"/v1/groups/{gid}/invites", {"max_uses": 2})
        status, shown = await _cli(a, token_file, "history", gid, "shared", "--limit", "20")
        assert status == 0 and "history: shared 20" in shown, shown
        status, listing = await _cli(a, token_file, "invites", gid)
        invite_id = listing.split()[0]
        assert status == 0 and "0/2 used" in listing, listing
        assert (await _cli(a, token_file, "revoke", gid, invite_id))[0] == 0
        listed = (await a.client.call("GET", f"/v1/groups/{gid}/invites"))["invites"]
        assert [(i["invite_id"], i["revoked"]) for i in listed] == [(invite_id, True)]


async def test_one_post_adds_a_list_of_members_by_one_event(tmp_path: Path) -> None:
    """SPEC §12.1.1, §30.5: `{user_ids}` adds up to 64 users by one ADD, welcomed together;
    a list naming a member already adds no one, and 65 are refused before anything is
    written."""
    async with asyncio.timeout(60), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        gid = (await a.client.call("POST", "/v1/groups", {"name": "g"}))["id"]
        room = RoomId(bytes.fromhex(gid))
        bob = user_id_text(b.node.user_id)
        absent = [user_id_text(UserId(bytes([n]) * 32)) for n in range(1, 63)]
        await link(a, b)
        async with b.socket() as socket:
            added = await a.client.call(
                "POST", f"/v1/groups/{gid}/members", {"user_ids": [bob, *absent]}
            )
            assert added["id"] == gid
            frame = await socket.next("membership", lambda f: f.get("action") == "add")
        assert frame["targets"] == [bob, *absent] and frame["target"] == bob
        page = await a.node.history(room, limit=10)
        kinds = [e.envelope.kind for e in page.events]
        assert kinds.count(Kind.MEMBERSHIP) == 2  # the CREATE, and one ADD of 63
        members = await a.client.call("GET", f"/v1/groups/{gid}/members?page_size=100")
        assert members["member_count"] == 64
        # bob is a member already: the whole list is refused, the other user is not added
        other = user_id_text(UserId(bytes([99]) * 32))
        body = {"user_ids": [other, bob]}
        assert await _refused(a, "POST", f"/v1/groups/{gid}/members", body) == (409, 64)
        too_many = {"user_ids": [user_id_text(UserId(bytes([n]) * 32)) for n in range(100, 165)]}
        assert await _refused(a, "POST", f"/v1/groups/{gid}/members", too_many) == (400, 2)
        twice = {"user_ids": [other, other]}
        assert await _refused(a, "POST", f"/v1/groups/{gid}/members", twice) == (400, 2)
        members = await a.client.call("GET", f"/v1/groups/{gid}/members?page_size=100")
        assert members["member_count"] == 64
        page = await a.node.history(room, limit=10)
        assert [e.envelope.kind for e in page.events].count(Kind.MEMBERSHIP) == 2
