"""The settings of `hearthmesh run` (and the client commands): one TOML config file, environment
variables and command-line flags, merged in that rising order; each value remembers its source.

The config file is `--config FILE`, else `DATA_DIR/config.toml` if present. Every key is also
an environment variable `HEARTHMESH_<KEY>` (lists comma-separated, booleans 1/0, true/false,
yes/no) and a flag. A key the file does not know, or a value of the wrong type, is refused with
the line and the key at fault. `hearthmesh config show` prints the effective values.

`public` (`run --public`, SPEC §10.14) is a profile: it gives the keys of `PUBLIC_PROFILE` its
values where no file, variable or flag set them, and `public_address` makes the announce
addresses; their source then names the profile and where `public` was set.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hearthmesh.node.p2p.relay_limits import RelayServiceLimits
from hearthmesh.protocol.actions import MAX_RECALL_WINDOW_MS
from hearthmesh.protocol.errors import HearthError
from hearthmesh.storage.api import DEFAULT_RELAY_QUOTA

__all__ = [
    "DEFAULT_API",
    "DEFAULT_DATA_DIR",
    "DEFAULT_LISTEN_ALL",
    "LOG_LEVELS",
    "PUBLIC_PROFILE",
    "SETTING_KEYS",
    "HomeSettings",
    "SettingsError",
    "env_setting",
    "parse_api",
    "public_announce",
    "resolve_settings",
]

DEFAULT_DATA_DIR: Final = Path("data/node")
DEFAULT_API: Final = "127.0.0.1:8470"
DEFAULT_LISTEN_ALL: Final = ("/ip4/0.0.0.0/tcp/4470", "/ip4/0.0.0.0/udp/4470/quic-v1")
"""Peers reach a home on every interface, TCP and QUIC on 4470; the client API stays on
loopback (`DEFAULT_API`)."""


_RELAY: Final = RelayServiceLimits()
_INBOX: Final = DEFAULT_RELAY_QUOTA


class SettingsError(HearthError):
    """A setting that cannot be used (a bad address, an unknown key, an unreadable file)."""


@dataclass(kw_only=True)
class HomeSettings:
    """Everything `run` needs; `sources` says where each value came from."""

    data_dir: Path = DEFAULT_DATA_DIR
    api: str = DEFAULT_API
    """The client API's HOST:PORT; loopback by default."""
    listen: list[str] = field(default_factory=lambda: list(DEFAULT_LISTEN_ALL))
    """libp2p multiaddrs to listen on (`0.0.0.0`: every interface)."""
    announce: list[str] = field(default_factory=list)
    """Addresses put in the home record instead of the listen addresses (a forwarded port)."""
    bootstrap: list[str] = field(default_factory=list)
    mdns: bool = True
    name: str = ""
    share_presence: bool = True
    api_allowed_hosts: list[str] = field(default_factory=list)
    """Host header names the API accepts besides the loopback names (a reverse proxy)."""
    api_allowed_origins: list[str] = field(default_factory=list)
    """Browser origins (scheme://host[:port]) allowed to call the API."""
    # web client (#17): the API beyond loopback (SPEC §15.7)
    api_tls: bool = False
    """Serve the API over HTTPS (`--tls`); plain HTTP is refused beyond loopback."""
    api_tls_cert: str = ""
    """An operator's certificate (PEM), with `api_tls_key`; "" is the one made at init."""
    api_tls_key: str = ""
    relay_service: bool = True
    """Offer circuit relay v2 to peers within the limits below (SPEC §10.7)."""
    relay_max_reservations: int = _RELAY.max_reservations
    relay_circuits_per_reservation: int = _RELAY.max_circuits_per_reservation
    relay_circuit_bytes: int = _RELAY.circuit_bytes
    relay_circuit_seconds: int = _RELAY.circuit_seconds
    relay_reservations: int = 2
    # store-and-forward for away homes (SPEC §11.5.3): what the relay inbox holds at most
    relay_inbox_days: int = 7
    """Days an envelope is held for an away home before it is dropped."""
    relay_inbox_recipient_count: int = _INBOX.max_count
    relay_inbox_recipient_bytes: int = _INBOX.max_bytes
    relay_inbox_stranger_count: int = _INBOX.stranger_count
    """Strangers' envelopes (neither end known here) held in all."""
    relay_inbox_stranger_bytes: int = _INBOX.stranger_bytes
    relay_inbox_total_count: int = _INBOX.total_count
    relay_inbox_total_bytes: int = _INBOX.total_bytes
    """Relays this node reserves on when AutoNAT finds it private (SPEC §10.7); 0: never."""
    public: bool = False
    """Run as a public bootstrap/relay node: `PUBLIC_PROFILE` (SPEC §10.14)."""
    public_address: str = ""
    """The public IPv4 or IPv6 address peers reach this node at; when set (and `announce` is
    not), the announce addresses are the listen addresses' ports at it (`public_announce`)."""
    webrtc: bool = True
    """Upgrade relayed connections that hole punching left relayed to WebRTC (SPEC §10.11)."""
    stun_servers: list[str] = field(default_factory=list)
    """`stun:HOST:PORT` servers WebRTC's ICE asks for our NAT's mapping (SPEC §10.16)."""
    upnp: bool = True
    """Ask the LAN's gateway (UPnP IGD) to forward the listen ports (SPEC §10.12)."""
    autonat_loopback: bool = False
    """Ask AutoNAT servers in rounds even while every address we advertise is loopback (SPEC
    §10.6): only this machine could dial us back then; `simulate` turns it on, so a mesh on
    one machine does the rounds homes on many do."""
    log_level: str = "warning"
    """What the node logs on stderr: debug, info, warning or error (libp2p's own chatter stays
    silent whatever this says: it logs a peer's every misstep as an error)."""
    prefix_exempt_loopback: bool = True
    """A peer on loopback counts against no address prefix (SPEC §11.6.5: a local proxy or
    tunnel says nothing about who is behind it); off where loopback peers are plain peers."""
    recall_window_ms: int = MAX_RECALL_WINDOW_MS
    """How long after sending a message its sender may recall it (SPEC §31.1.3); at most
    the protocol's 48 h."""
    trio_on_loop: bool = False
    """Run libp2p's trio on the event loop's thread, not a thread of its own (ARCHITECTURE §5):
    off, since on a loaded machine it made cross-node delivery slower."""
    uvloop: bool = True
    """Run the node on uvloop's event loop, not asyncio's own (`tools/event_loop.py`,
    ARCHITECTURE §5)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Key -> `default`, `file <path>:<line>`, `env HEARTHMESH_<KEY>` or `flag`."""

    def describe(self) -> list[tuple[str, str, str]]:
        """(key, value as TOML would spell it, source) for every key, in `SETTING_KEYS` order."""
        rows = []
        for key in SETTING_KEYS:
            value = getattr(self, key)
            shown = str(value) if isinstance(value, Path) else value
            rows.append((key, _toml_value(shown), self.sources.get(key, "default")))
        return rows


SETTING_KEYS: Final[dict[str, type]] = {
    "data_dir": Path,
    "api": str,
    "listen": list,
    "announce": list,
    "bootstrap": list,
    "mdns": bool,
    "name": str,
    "share_presence": bool,
    "api_allowed_hosts": list,
    "api_allowed_origins": list,
    "api_tls": bool,
    "api_tls_cert": str,
    "api_tls_key": str,
    "relay_service": bool,
    "relay_max_reservations": int,
    "relay_circuits_per_reservation": int,
    "relay_circuit_bytes": int,
    "relay_circuit_seconds": int,
    "relay_reservations": int,
    "relay_inbox_days": int,
    "relay_inbox_recipient_count": int,
    "relay_inbox_recipient_bytes": int,
    "relay_inbox_stranger_count": int,
    "relay_inbox_stranger_bytes": int,
    "relay_inbox_total_count": int,
    "relay_inbox_total_bytes": int,
    "public": bool,
    "public_address": str,
    "webrtc": bool,
    "stun_servers": list,
    "upnp": bool,
    "autonat_loopback": bool,
    "prefix_exempt_loopback": bool,
    "log_level": str,
    "recall_window_ms": int,
    "trio_on_loop": bool,
    "uvloop": bool,
}
"""Every setting and its type; the config file accepts these keys and no others."""

LOG_LEVELS: Final = ("debug", "info", "warning", "error")

PUBLIC_PROFILE: Final[dict[str, Any]] = {
    "listen": list(DEFAULT_LISTEN_ALL),
    "relay_service": True,
    "relay_max_reservations": 128,
    "relay_reservations": 0,
    "upnp": False,
    "mdns": False,
}
"""What `public` sets (SPEC §10.14): every interface, TCP and QUIC on 4470; the relay service on,
for up to 128 reserved peers (the other relay limits stay as documented in SPEC §10.7); no
reservations of its own, whatever AutoNAT says; no gateway to ask (UPnP) and no LAN to search
(mDNS) on a server."""

_TRUE: Final = frozenset({"1", "true", "yes"})
_FALSE: Final = frozenset({"0", "false", "no", ""})


def parse_api(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT). Raises SettingsError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise SettingsError(f"--api wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _ip(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise SettingsError(f"{what} wants an IPv4 or IPv6 address, got {text!r}") from None


def public_announce(address: str, listen: list[str]) -> list[str]:
    """The addresses peers dial a public node at: each listen address's transport and port at
    `address`, loopback listen addresses left out, no duplicates (SPEC §10.14).

    Raises:
        SettingsError: `address` is not an IP address.
    """
    ip = _ip(address, "public_address")  # a DNS name too: nothing here resolves one
    prefix = f"/ip{ip.version}/{ip.compressed}"
    announced: list[str] = []
    for listen_addr in listen:
        parts = listen_addr.split("/")
        if len(parts) < 4 or parts[1] not in ("ip4", "ip6"):
            continue
        if _ip(parts[2], f"listen address {listen_addr!r}").is_loopback:
            continue
        candidate = "/".join([prefix, *parts[3:]])
        if candidate not in announced:
            announced.append(candidate)
    return announced


def _apply_public(settings: HomeSettings) -> None:
    """`public`'s profile and `public_address`'s announce addresses, where nothing set them."""
    if settings.public:
        origin = f"public ({settings.sources.get('public', 'default')})"
        for key, value in PUBLIC_PROFILE.items():
            if key not in settings.sources:
                setattr(settings, key, list(value) if isinstance(value, list) else value)
                settings.sources[key] = origin
    if settings.public_address:
        announced = public_announce(settings.public_address, settings.listen)
        if "announce" not in settings.sources:
            settings.announce = announced
            settings.sources["announce"] = (
                f"public_address ({settings.sources.get('public_address', 'default')})"
            )


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line_of(text: str, key: str) -> int:
    """The 1-based line where `key = ...` is set in TOML `text` (0 if not found)."""
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=.\[]")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line) or line.strip().strip("[]").strip() == key:
            return number
    return 0


def _checked(key: str, value: Any, where: str) -> Any:
    """`value` as the type of setting `key`; SettingsError naming `where` otherwise."""
    kind = SETTING_KEYS.get(key)
    if kind is None:
        raise SettingsError(f"{where}: unknown setting {key!r} (known: {', '.join(SETTING_KEYS)})")
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where}: {key} wants a list of strings, got {value!r}")
        return list(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: {key} wants true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SettingsError(f"{where}: {key} wants a whole number >= 0, got {value!r}")
        return value
    if not isinstance(value, str):
        raise SettingsError(f"{where}: {key} wants a string, got {value!r}")
    return Path(value) if kind is Path else value


def read_config_file(path: Path) -> dict[str, tuple[Any, str]]:
    """Key -> (checked value, `file <path>:<line>`) for each key `path` sets.

    Raises:
        SettingsError: the file cannot be read, is not TOML, or sets an unknown key or a value
            of the wrong type (the message names the line and the key).
    """
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    checked = {}
    for key, value in values.items():
        where = f"file {path}:{_line_of(text, key)}"
        checked[key] = (_checked(key, value, f"config {where.removeprefix('file ')}"), where)
    return checked


def _from_env(key: str, text: str) -> Any:
    kind = SETTING_KEYS[key]
    if kind is list:
        return [item for item in text.split(",") if item]
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise SettingsError(f"HEARTHMESH_{key.upper()} wants 1 or 0, got {text!r}")
        return lowered in _TRUE
    if kind is int:
        if not text.strip().isdigit():
            raise SettingsError(f"HEARTHMESH_{key.upper()} wants a whole number, got {text!r}")
        return int(text)
    return Path(text) if kind is Path else text


def env_setting(key: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting as the environment gives it (`HEARTHMESH_<KEY>`), else its default: for
    processes that run a node without `hearthmesh run` (`bench delivery`, `node_process`).

    Raises:
        SettingsError: a bad value.
    """
    text = (os.environ if env is None else env).get(f"HEARTHMESH_{key.upper()}")
    return getattr(HomeSettings(), key) if text is None else _from_env(key, text)


def _from_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for key in SETTING_KEYS:
        value: Any = getattr(args, key, None)
        if isinstance(value, int) or value:  # an unset flag is None, "" or [] (0 is set)
            flags[key] = Path(str(value)) if SETTING_KEYS[key] is Path else value
    if getattr(args, "no_mdns", False):
        flags["mdns"] = False
    return flags


def resolve_settings(args: Any, env: dict[str, str] | None = None) -> HomeSettings:
    """Merge defaults, config file, environment and command line (in that order).

    Raises:
        SettingsError: a bad config file, environment value or API address.
    """
    env = dict(os.environ) if env is None else env
    settings = HomeSettings()
    flags = _from_flags(args)
    data_dir: Path | str | None = flags.get("data_dir") or env.get("HEARTHMESH_DATA_DIR")
    config_path = getattr(args, "config", None) or env.get("HEARTHMESH_CONFIG")
    if config_path is None and data_dir and (Path(data_dir) / "config.toml").is_file():
        config_path = Path(data_dir) / "config.toml"
    layers: list[tuple[str, Any, str]] = []
    if config_path is not None:
        for key, (value, where) in read_config_file(Path(config_path)).items():
            layers.append((key, value, where))
    for key in SETTING_KEYS:
        name = f"HEARTHMESH_{key.upper()}"
        if name in env:
            layers.append((key, _from_env(key, env[name]), f"env {name}"))
    if env.get("HEARTHMESH_NO_MDNS", "").lower() in _TRUE:
        layers.append(("mdns", False, "env HEARTHMESH_NO_MDNS"))
    layers += [(key, value, "flag") for key, value in flags.items()]
    for key, value, source in layers:
        setattr(settings, key, value)
        settings.sources[key] = source
    _apply_public(settings)
    parse_api(settings.api)
    for server in settings.stun_servers:
        if not server.startswith("stun:"):
            raise SettingsError(f"stun_servers wants stun:HOST:PORT URLs, got {server!r}")
    if settings.log_level not in LOG_LEVELS:
        raise SettingsError(
            f"log_level wants one of {', '.join(LOG_LEVELS)}, got {settings.log_level!r} "
            f"({settings.sources['log_level']})"
        )
    return settings
