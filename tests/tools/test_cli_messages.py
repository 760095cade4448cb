"""`hearthmesh send --file/--reply-to`, `recall`, `edit`, `react`, `conversations`, `read` and
`history` against two running nodes, as a person runs them (SPEC §31.8)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.api_helpers import TOKEN, Home, home, link, open_conversation, run_cli


async def _cli(h: Home, token_file: Path, command: str, *args: str) -> str:
    code, output = await run_cli(h, token_file, command, *args)
    assert code == 0, output
    return output


@pytest.mark.slow
async def test_a_conversation_driven_from_the_command_line(tmp_path: Path) -> None:
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN)
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    async with asyncio.timeout(240), home(tmp_path / "a") as a, home(tmp_path / "b") as b:
        await link(a, b)
        alice = (await a.status())["user_id"]
        room = await open_conversation(b, alice)
        sent = await _cli(b, token_file, "send", "--room", room, "first")
        first = sent.split()[1]
        await _cli(b, token_file, "send", "--room", room, "--file", str(picture), "a cat")
        await _cli(b, token_file, "send", "--room", room, "--reply-to", first, "answering")
        await _cli(b, token_file, "edit", first, "first, edited")
        await _cli(b, token_file, "react", first, "🎉")
        shown = await _cli(b, token_file, "history", room)
        assert "first, edited (edited) 🎉1" in shown and "> first, edited" in shown
        assert "a cat" in shown
        await _cli(b, token_file, "recall", first)
        assert "(recalled)" in await _cli(b, token_file, "history", room)
        listing = await _cli(a, token_file, "conversations")
        while "unread" not in listing:  # bob's messages are on their way
            await asyncio.sleep(0.05)
            listing = await _cli(a, token_file, "conversations")
        assert room in listing
        assert "read up to" in await _cli(a, token_file, "read", room)
