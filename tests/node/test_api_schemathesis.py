"""schemathesis against a running client API: the OpenAPI document states what the server
accepts, and no input is a 5xx (SPEC §15.6).

Every check runs (server errors, status codes, content types, headers and schemas of responses,
schema-valid requests accepted, schema-invalid ones refused, missing auth refused, 405 with
`Allow`), over the examples, coverage and fuzzing phases, with a bounded number of cases per
operation so the run stays well under a minute. Strings are generated in ASCII: the document's
`maxLength` counts characters and the server's bounds UTF-8 bytes, which agree only there
(lone surrogates and non-ASCII text are the subject of tests/node/test_api_input.py).
`/v1/ws` is left out: OpenAPI cannot describe a WebSocket, and its frames are fuzzed in
tests/node/test_api_ws_fuzz.py. tests/node/schemathesis.toml names the two widenings the
schema cannot express.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.integration.api_helpers import TOKEN, home

CONFIG = Path(__file__).with_name("schemathesis.toml")
_UNLIMITED = {
    "http_rate_per_s": 1e6,
    "http_burst": 1_000_000,
    "unauthenticated_rate_per_s": 1e6,
    "unauthenticated_burst": 1_000_000,
    "media_fetch_wait_s": 0.1,
    "pairing_rate_per_s": 1e6,
    "pairing_burst": 1_000_000,
}


@pytest.mark.slow
async def test_schemathesis_all_checks_find_nothing(tmp_path: Path) -> None:
    async with asyncio.timeout(300), home(tmp_path / "a", api=_UNLIMITED) as h:  # 50 routes
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run"),
            *(f"{h.url}/openapi.json", "--checks", "all", "--workers", "1"),
            *("-H", f"Authorization: Bearer {TOKEN}", "--request-timeout", "20"),
            *("--max-examples", "5", "--seed", "12", "--generation-codec", "ascii"),
            *("--phases", "examples,coverage,fuzzing", "--exclude-path", "/v1/ws"),
            *("--no-color",),
            cwd=tmp_path,  # its cache directory goes there, not into the worktree
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        report = output.decode(errors="replace")
        assert process.returncode == 0, report[-6000:]
        assert "generated" in report and " failed" not in report.split("SUMMARY")[-1]
