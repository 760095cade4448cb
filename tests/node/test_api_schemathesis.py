"""schemathesis against a running client API: the OpenAPI document states what the server
accepts, and no input is a 5xx (SPEC §15.6).

Every check runs (server errors, status codes, content types, headers and schemas of responses,
schema-valid requests accepted, schema-invalid ones refused, missing auth refused, 405 with
`Allow`), over the examples, coverage and fuzzing phases. The coverage phase is the hostile part
(each operation's bounds, types and required fields just inside and outside, every method a
path lacks, no auth): 1,735 cases over 67 operations. The suite adds one fuzzed case per
operation and mode (57 cases; 28 s of CPU for the test in all, against 51 s at 5 per
operation); `make fuzz-api` is the long form (FUZZ_EXAMPLES per operation), which `make test`
and CI do not run. Strings are generated in ASCII: the document's `maxLength` counts
characters and the server's bounds UTF-8 bytes, which agree only there (lone surrogates and
non-ASCII text are the subject of tests/node/test_api_input.py). `/v1/ws` is left out: OpenAPI
cannot describe a WebSocket, and its frames are fuzzed in tests/node/test_api_ws_fuzz.py.
tests/node/schemathesis.toml names the two widenings the schema cannot express.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.integration.api_helpers import TOKEN, home

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES: Final = int(os.environ.get("HEARTHMESH_SCHEMATHESIS_EXAMPLES", "1"))
"""Fuzzed cases per operation and mode; `make fuzz-api` sets more."""
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
    # Against a hang only: at load 60-80 the suite's form took 190-330 s (28 s of CPU).
    async with asyncio.timeout(600 + 120 * EXAMPLES), home(tmp_path / "a", api=_UNLIMITED) as h:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run"),
            *(f"{h.url}/openapi.json", "--checks", "all", "--workers", "1"),
            # A bound on each request, not a speed check: a group of 30 took over 20 s at load 70.
            *("-H", f"Authorization: Bearer {TOKEN}", "--request-timeout", "90"),
            *("--max-examples", str(EXAMPLES), "--seed", "12", "--generation-codec", "ascii"),
            *("--phases", "examples,coverage,fuzzing", "--exclude-path", "/v1/ws"),
            *("--no-color",),
            cwd=tmp_path,  # its cache directory goes there, not into the worktree
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        report = output.decode(errors="replace")
        assert process.returncode == 0, report[-6000:]
        # Every generated case passed; the summary's warnings ("Authentication failed: N
        # operations returned only 401/403", a refusal's normal answer) are not failures.
        cases = re.search(r"(\d+) generated, (\d+) passed", report.split("SUMMARY")[-1])
        assert cases is not None and cases[1] == cases[2], report[-6000:]
