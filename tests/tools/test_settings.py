"""`hearthmesh.tools.settings`: one config file, environment and flags, each value's source."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from hearthmesh.storage.api import DEFAULT_RELAY_QUOTA
from hearthmesh.tools.cli import _build_parser
from hearthmesh.tools.home import node_config
from hearthmesh.tools.settings import (
    DEFAULT_LISTEN_ALL,
    SettingsError,
    env_setting,
    public_announce,
    resolve_settings,
)
from tests.integration.api_helpers import run_main

EVERY_SETTING = """\
# every key once
api = "127.0.0.1:9001"
listen = ["/ip4/0.0.0.0/tcp/4480"]
announce = ["/ip4/203.0.113.7/tcp/4480"]
bootstrap = ["/ip4/198.51.100.1/tcp/4470/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"]
mdns = false
name = "Alice"
share_presence = false
api_allowed_hosts = ["chat.example"]
api_allowed_origins = ["https://chat.example"]
relay_service = false
relay_max_reservations = 4
relay_circuits_per_reservation = 2
relay_circuit_bytes = 1048576
relay_circuit_seconds = 120
api_tls = true
api_tls_cert = "/etc/hearthmesh/cert.pem"
api_tls_key = "/etc/hearthmesh/key.pem"
prefix_exempt_loopback = false
recall_window_ms = 3600000
webrtc = false
upnp = false
autonat_loopback = true
relay_reservations = 1
relay_inbox_days = 3
relay_inbox_recipient_count = 500
relay_inbox_recipient_bytes = 1048576
relay_inbox_stranger_count = 20
relay_inbox_stranger_bytes = 65536
relay_inbox_total_count = 1000
relay_inbox_total_bytes = 4194304
public = true
public_address = "203.0.113.7"
stun_servers = ["stun:198.51.100.3:3478"]
log_level = "info"
trio_on_loop = true
uvloop = false
"""


def args(*argv: str) -> object:
    return _build_parser().parse_args(["run", *argv])


def test_run_listens_on_every_interface_with_tcp_and_quic_and_keeps_the_api_on_loopback() -> None:
    settings = resolve_settings(args(), env={})
    assert settings.listen == list(DEFAULT_LISTEN_ALL)
    assert settings.listen == ["/ip4/0.0.0.0/tcp/4470", "/ip4/0.0.0.0/udp/4470/quic-v1"]
    assert settings.api == "127.0.0.1:8470"
    assert all(source == "default" for *_, source in settings.describe()[1:])


def test_the_config_file_in_the_data_dir_sets_every_setting(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(EVERY_SETTING)
    settings = resolve_settings(args("--data-dir", str(tmp_path)), env={})
    assert settings.api == "127.0.0.1:9001"
    assert settings.announce == ["/ip4/203.0.113.7/tcp/4480"]
    assert not settings.mdns and not settings.share_presence
    assert settings.api_allowed_origins == ["https://chat.example"]
    assert not settings.relay_service and settings.relay_circuit_seconds == 120
    assert not settings.prefix_exempt_loopback
    assert settings.recall_window_ms == 3_600_000
    assert not settings.webrtc and not settings.upnp
    assert settings.autonat_loopback
    assert settings.log_level == "info"
    assert settings.trio_on_loop
    assert not settings.uvloop
    assert all(source != "default" for *_, source in settings.describe())
    sources = {key: source for key, _, source in settings.describe()}
    assert sources["data_dir"] == "flag"
    assert sources["api_allowed_origins"] == f"file {tmp_path / 'config.toml'}:10"
    assert sources["api"] == f"file {tmp_path / 'config.toml'}:2"


def test_the_relay_inbox_quotas_reach_the_node() -> None:
    """The store-and-forward bounds (SPEC §11.5.3) are settings like any other."""
    settings = resolve_settings(
        args("--relay-inbox-days", "2", "--relay-inbox-stranger-count", "50"),
        env={"HEARTHMESH_RELAY_INBOX_TOTAL_BYTES": "1048576"},
    )
    config = node_config(settings)
    assert config.relay_ttl_ms == 2 * 86_400_000
    assert config.relay_quota.stranger_count == 50
    assert config.relay_quota.total_bytes == 1 << 20
    assert config.relay_quota == replace(
        DEFAULT_RELAY_QUOTA, stranger_count=50, total_bytes=1 << 20
    )
    assert node_config(resolve_settings(args(), env={})).relay_quota == DEFAULT_RELAY_QUOTA


def test_trio_runs_in_a_thread_unless_told_to_run_on_the_loop() -> None:
    """Off by default: on loaded machines it made cross-node delivery slower (ARCHITECTURE
    §5); the flag and the environment turn it on."""
    assert not node_config(resolve_settings(args(), env={})).trio_on_loop
    assert node_config(resolve_settings(args("--trio-on-loop"), env={})).trio_on_loop
    on = resolve_settings(args(), env={"HEARTHMESH_TRIO_ON_LOOP": "1"})
    assert node_config(on).trio_on_loop


def test_autonat_rounds_on_loopback_alone_are_off_unless_asked() -> None:
    """SPEC §10.6: a home advertising loopback only asks no AutoNAT server by itself; the flag
    (which `simulate --scale` passes) reaches the node's config."""
    assert not node_config(resolve_settings(args(), env={})).autonat_loopback
    assert node_config(resolve_settings(args("--autonat-loopback"), env={})).autonat_loopback


def test_a_node_run_without_hearthmesh_run_reads_one_setting_from_the_environment() -> None:
    """`bench delivery` and `node_process` take `trio_on_loop` as `hearthmesh run` does."""
    assert env_setting("trio_on_loop", {}) is False
    assert env_setting("trio_on_loop", {"HEARTHMESH_TRIO_ON_LOOP": "1"}) is True
    assert env_setting("trio_on_loop", {"HEARTHMESH_TRIO_ON_LOOP": "0"}) is False
    with pytest.raises(SettingsError):
        env_setting("trio_on_loop", {"HEARTHMESH_TRIO_ON_LOOP": "maybe"})


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(EVERY_SETTING)
    env = {"HEARTHMESH_SHARE_PRESENCE": "yes", "HEARTHMESH_LISTEN": "/ip4/10.0.0.1/tcp/1,"}
    settings = resolve_settings(
        args("--data-dir", str(tmp_path), "--listen", "/ip4/10.0.0.2/tcp/2"), env=env
    )
    assert settings.share_presence
    assert settings.sources["share_presence"] == "env HEARTHMESH_SHARE_PRESENCE"
    assert settings.listen == ["/ip4/10.0.0.2/tcp/2"] and settings.sources["listen"] == "flag"
    flagged = resolve_settings(
        args("--data-dir", str(tmp_path), "--no-share-presence", "--relay-circuit-seconds", "0"),
        env={**env, "HEARTHMESH_RELAY_MAX_RESERVATIONS": "9"},
    )
    assert not flagged.share_presence and flagged.relay_circuit_seconds == 0
    assert flagged.relay_max_reservations == 9


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ('api = "127.0.0.1:1"\nlisten_addrs = ["/ip4/0.0.0.0/tcp/1"]\n', 2, "listen_addrs"),
        ('name = "x"\n\nshare_presence = "no"\n', 3, "share_presence"),
        ('listen = "/ip4/0.0.0.0/tcp/1"\n', 1, "listen"),
        ("[relay]\nlimit = 1\n", 1, "relay"),
        ("relay_circuit_bytes = -1\n", 1, "relay_circuit_bytes"),
    ],
)
def test_a_bad_config_file_is_refused_with_the_line_and_key_at_fault(
    tmp_path: Path, text: str, line: int, key: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=rf"{path}:{line}: .*{key}"):
        resolve_settings(args("--config", str(path)), env={})


def test_a_log_level_outside_the_four_is_refused_with_its_source() -> None:
    refused = r"log_level wants one of .*'chatty' \(env HEARTHMESH_LOG_LEVEL\)"
    with pytest.raises(SettingsError, match=refused):
        resolve_settings(args(), env={"HEARTHMESH_LOG_LEVEL": "chatty"})
    assert resolve_settings(args("--log-level", "debug"), env={}).log_level == "debug"


def test_a_bad_environment_value_is_refused() -> None:
    with pytest.raises(SettingsError, match="HEARTHMESH_MDNS"):
        resolve_settings(args(), env={"HEARTHMESH_MDNS": "maybe"})
    with pytest.raises(SettingsError, match="stun_servers wants stun:HOST:PORT"):
        resolve_settings(args(), env={"HEARTHMESH_STUN_SERVERS": "198.51.100.3:3478"})


def test_config_show_prints_each_value_and_its_source(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(EVERY_SETTING)
    shown = config_show("--data-dir", str(tmp_path), "--api", "127.0.0.1:9002")
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(" = ", 1) for line in shown.stdout.splitlines())
    assert lines["api"] == '"127.0.0.1:9002"  # flag'
    assert lines["share_presence"] == f"false  # file {tmp_path / 'config.toml'}:8"
    assert lines["api_allowed_hosts"].startswith('["chat.example"]  # file ')
    (tmp_path / "config.toml").write_text("mdns = 1\n")
    refused = config_show("--data-dir", str(tmp_path))
    assert refused.returncode == 2 and "config.toml:1: mdns wants true or false" in refused.stderr


def config_show(*argv: str) -> subprocess.CompletedProcess[str]:
    """`hearthmesh config show` by the CLI's main in this process (`run_main`): the script
    itself is started by tests/tools/test_cli_home.py; here a start cost ~0.3 s of CPU."""
    return run_main("config", "show", *argv)


def test_public_sets_its_profile_where_nothing_else_set_a_value(tmp_path: Path) -> None:
    public = ("--public", "--public-address", "203.0.113.7")
    shown = config_show("--data-dir", str(tmp_path), *public, "--relay-max-reservations", "64")
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(" = ", 1) for line in shown.stdout.splitlines())
    assert lines["public"] == "true  # flag"
    assert lines["listen"] == (
        '["/ip4/0.0.0.0/tcp/4470", "/ip4/0.0.0.0/udp/4470/quic-v1"]  # public (flag)'
    )
    assert lines["announce"] == (
        '["/ip4/203.0.113.7/tcp/4470", "/ip4/203.0.113.7/udp/4470/quic-v1"]'
        "  # public_address (flag)"
    )
    assert lines["relay_service"] == "true  # public (flag)"
    assert lines["relay_reservations"] == "0  # public (flag)"
    assert lines["upnp"] == "false  # public (flag)" and lines["mdns"] == "false  # public (flag)"
    # An explicit value wins over the profile; what the profile leaves alone stays default.
    assert lines["relay_max_reservations"] == "64  # flag"
    assert lines["relay_circuit_seconds"] == "600  # default"
    assert lines["api"] == '"127.0.0.1:8470"  # default'


def test_public_in_the_config_file_names_the_file_and_yields_to_the_environment(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.toml").write_text('name = "relay"\npublic = true\n')
    env = {"HEARTHMESH_UPNP": "1"}
    settings = resolve_settings(args("--data-dir", str(tmp_path)), env=env)
    assert settings.relay_reservations == 0 and settings.relay_max_reservations == 128
    assert settings.sources["relay_reservations"] == f"public (file {tmp_path / 'config.toml'}:2)"
    assert settings.upnp and settings.sources["upnp"] == "env HEARTHMESH_UPNP"
    assert settings.announce == [] and settings.sources.get("announce") is None
    plain = resolve_settings(args(), env={})
    assert not plain.public and plain.relay_reservations == 2 and plain.relay_max_reservations == 16


def test_public_announce_keeps_each_transport_and_port_and_skips_loopback() -> None:
    listen = [
        "/ip4/0.0.0.0/tcp/4470",
        "/ip6/::/tcp/4470",
        "/ip4/127.0.0.1/tcp/4471",
        "/ip4/0.0.0.0/udp/4470/quic-v1",
    ]
    assert public_announce("2001:db8::7", listen) == [
        "/ip6/2001:db8::7/tcp/4470",
        "/ip6/2001:db8::7/udp/4470/quic-v1",
    ]
    assert public_announce("198.51.100.9", listen[:2]) == ["/ip4/198.51.100.9/tcp/4470"]


def test_a_public_address_that_is_not_an_ip_is_refused(tmp_path: Path) -> None:
    refused = config_show("--data-dir", str(tmp_path), "--public-address", "relay.example.org")
    assert refused.returncode == 2
    assert "public_address wants an IPv4 or IPv6 address, got 'relay.example.org'" in (
        refused.stderr
    )


def test_the_systemd_example_runs_a_public_node_with_settings_run_accepts(tmp_path: Path) -> None:
    unit = Path(__file__).parents[2] / "docs" / "hearthmesh-public.service"
    exec_start = next(
        line.removeprefix("ExecStart=")
        for line in unit.read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    program, command, *flags = shlex.split(exec_start)
    assert program.endswith("/hearthmesh") and command == "run"
    flags[flags.index("--data-dir") + 1] = str(tmp_path)
    shown = config_show(*flags)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(" = ", 1) for line in shown.stdout.splitlines())
    assert lines["public"] == "true  # flag"
    assert lines["relay_reservations"] == "0  # public (flag)"
    assert lines["announce"].startswith('["/ip4/203.0.113.7/tcp/4470", ')
