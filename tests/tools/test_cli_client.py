"""`hearthmesh client pair|list|revoke` against a running API (SPEC §15.7), as a person runs it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from hearthmesh.node.api.tls import KEY_FILE, ensure_certificate
from tests.integration.api_helpers import TOKEN, Home, home, run_cli


async def _cli(h: Home, token_file: Path, *args: str) -> tuple[int, str]:
    return await run_cli(h, token_file, "client", *args)


@pytest.mark.slow
async def test_pair_shows_a_code_and_qr_then_list_and_revoke(tmp_path: Path) -> None:
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN)
    async with asyncio.timeout(120), home(tmp_path / "a") as h:  # 4 CLI processes
        status, shown = await _cli(h, token_file, "pair", "--png", str(tmp_path / "qr.png"))
        assert status == 0, shown
        assert (tmp_path / "qr.png").read_bytes().startswith(b"\x89PNG")
        code = shown.split("type the code ")[1].split()[0]
        assert f"{h.url}/#pair={code}" in shown
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
            browser.post(h.url + "/v1/pair", json={"code": code, "name": "phone"}) as response,
        ):
            assert response.status == 201
            client_id = (await response.json())["client_id"]
        status, listing = await _cli(h, token_file, "list")
        assert status == 0 and listing.startswith(f"{client_id}  phone  paired ")
        assert (await _cli(h, token_file, "revoke"))[0] == 2  # which one?
        status, revoked = await _cli(h, token_file, "revoke", client_id)
        assert status == 0, revoked
        status, listing = await _cli(h, token_file, "list")
        assert "no browser is paired" in listing
        status, again = await _cli(h, token_file, "revoke", client_id)
        assert status == 1 and "404" in again


async def test_the_cli_reaches_a_tls_node_by_pinning_its_certificate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "api-token").write_text(TOKEN)
    tls = {"tls_cert_file": ensure_certificate(data), "tls_key_file": data / KEY_FILE}
    async with asyncio.timeout(30), home(tmp_path / "a", api=tls) as h:
        flags = ("--data-dir", str(data), "--tls")
        status, listing = await _cli(h, data / "api-token", "list", *flags)
        assert status == 0 and "no browser is paired" in listing, listing
        (tmp_path / "other").mkdir()
        (data / "api-cert.pem").write_bytes(ensure_certificate(tmp_path / "other").read_bytes())
        status, refused = await _cli(h, data / "api-token", "list", *flags)
        assert status == 3 and "fingerprint" in refused.lower(), refused  # not the pinned one
