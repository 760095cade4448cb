"""`hearthmesh init`, `run`, `status`, `send`, `friends` as a person runs them: `run`, `status`
and an `init` start the console script; the other commands run its `main` in the test's process
(`run_main`), the same code without a Python start each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hearthmesh.protocol.identity import UserId, keypair_from_seed, user_id_text
from tests.integration.api_helpers import run_main

SCRIPT = Path(sys.executable).parent / "hearthmesh"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_init_writes_a_private_token_and_refuses_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "node"
    first = cli("init", "--data-dir", str(data), "--name", "Alice")
    assert first.returncode == 0, first.stderr
    assert "user_id: u" in first.stdout
    assert (data / "api-token").stat().st_mode & 0o777 == 0o600
    again = run_main("init", "--data-dir", str(data))
    assert again.returncode == 1 and "--force" in again.stderr
    forced = run_main("init", "--data-dir", str(data), "--force")
    assert forced.returncode == 0
    assert forced.stdout.split("user_id: ")[1][:53] != first.stdout.split("user_id: ")[1][:53]


def test_status_without_a_running_node_exits_3(tmp_path: Path) -> None:
    data = tmp_path / "node"
    assert run_main("init", "--data-dir", str(data)).returncode == 0
    result = cli("status", "--data-dir", str(data), "--api", "127.0.0.1:9")
    assert result.returncode == 3 and "hearthmesh run" in result.stderr


@pytest.mark.slow
def test_run_prints_addresses_serves_status_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "node"
    assert run_main("init", "--data-dir", str(data), "--name", "Alice").returncode == 0
    process = subprocess.Popen(
        [
            str(SCRIPT),
            "run",
            "--data-dir",
            str(data),
            "--api",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # blocks until the node prints its API line
            lines.append(line)
            if line.strip().startswith("API:"):
                break
        output = "".join(lines)
        assert "peer id:" in output and "/p2p/12D3KooW" in output
        api = output.split("API:")[1].split()[0].removeprefix("http://")
        status = cli("status", "--data-dir", str(data), "--api", api)
        assert status.returncode == 0, status.stderr
        assert "user id:" in status.stdout
        friends = run_main("friends", "--data-dir", str(data), "--api", api)
        assert friends.returncode == 0 and "no friends yet" in friends.stdout
        named = run_main(
            "profile", "set", "--name", "Alice A.", "--data-dir", str(data), "--api", api
        )
        assert named.returncode == 0 and "display_name: Alice A." in named.stdout, named.stderr
        shown = run_main("profile", "--data-dir", str(data), "--api", api)
        assert "display_name: Alice A." in shown.stdout
        invite = run_main("friends", "invite", "--data-dir", str(data), "--api", api)
        assert invite.returncode == 0 and "hearthmesh:friend/" in invite.stdout
        mallory = user_id_text(UserId(keypair_from_seed(b"m" * 32).public))
        for action in ("block", "blocked", "unblock"):
            done = run_main("friends", action, mallory, "--data-dir", str(data), "--api", api)
            assert done.returncode == 0 and mallory in done.stdout, done.stderr
        bad = run_main("send", "--data-dir", str(data), "--api", api, "--room", "zz", "hi")
        assert bad.returncode == 1 and "INVALID_IDENTIFIER" in bad.stderr
        process.send_signal(signal.SIGTERM)
        rest, errors = process.communicate(timeout=20)
        assert process.returncode == 0, errors
        assert "stopped cleanly" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_device_link_shows_a_qr_code_and_links_a_second_device(tmp_path: Path) -> None:
    data, laptop = tmp_path / "node", tmp_path / "laptop"
    assert run_main("init", "--data-dir", str(data), "--name", "Alice").returncode == 0
    process = subprocess.Popen(
        [
            *(str(SCRIPT), "run", "--data-dir", str(data), "--api", "127.0.0.1:0"),
            *("--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        output = ""
        for line in process.stdout:
            output += line
            if line.strip().startswith("API:"):
                break
        api = output.split("API:")[1].split()[0].removeprefix("http://")
        png = tmp_path / "link.png"
        shown = run_main("device", "link", "--data-dir", str(data), "--api", api, "--png", str(png))
        assert shown.returncode == 0, shown.stderr
        assert png.read_bytes().startswith(b"\x89PNG")
        code = shown.stdout.split("--link ")[1].split()[0]
        linked = run_main(
            "init", "--data-dir", str(laptop), "--link", code, "--listen", "/ip4/127.0.0.1/tcp/0"
        )
        assert linked.returncode == 0, linked.stderr
        user = output.split("user id:")[1].split()[0]
        assert f"user_id: {user}" in linked.stdout
        listing = run_main("device", "list", "--data-dir", str(data), "--api", api)
        assert listing.returncode == 0 and listing.stdout.count("\n") == 2
        reused = run_main(
            "init",
            "--data-dir",
            str(tmp_path / "third"),
            "--link",
            code,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        )
        assert reused.returncode == 1 and "pairing code" in reused.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
