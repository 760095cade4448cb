"""The `hearthmesh` command line. Heavy imports (libp2p) happen inside the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from hearthmesh.tools.group_cli import GROUP_ACTIONS
from hearthmesh.tools.settings import LOG_LEVELS
from hearthmesh.tools.social_cli import FRIEND_ACTIONS

__all__ = ["main"]


def _version() -> str:
    try:
        return version("hearthmesh")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hearthmesh",
        description="hearthmesh: decentralized chat. Every node is a home node and a relay.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("version", help="print the hearthmesh and protocol versions")
    init = commands.add_parser(
        "init", help="create a node identity, a user, its first device and the API token"
    )
    _data_dir(init)
    init.add_argument("--name", default="", help="the user's display name")
    init.add_argument(
        "--force", action="store_true", help="replace an existing identity (deletes it!)"
    )
    init.add_argument(
        "--listen", metavar="MULTIADDR", action="append", help="with --link: where it will listen"
    )
    init.add_argument(
        "--link",
        metavar="CODE",
        help="join an existing user as a new device, with the code `hearthmesh device link` shows",
    )
    run = commands.add_parser(
        "run",
        help="run the home node: libp2p, client API, presence, delivery, push",
        description="Run a home node until Ctrl-C / SIGTERM. Settings, in rising priority: "
        "--config (default DATA_DIR/config.toml), HEARTHMESH_<KEY> environment variables, "
        "the command line; `hearthmesh config show` prints them.",
    )
    _settings_flags(run)
    run.add_argument("--name", help="display name if a new identity is created")
    config = commands.add_parser("config", help="show the effective settings and their sources")
    config.add_argument("action", choices=["show"], help="show: every setting, value and source")
    _settings_flags(config)
    status = _client(commands.add_parser("status", help="show a running node's status"))
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    send = _client(commands.add_parser("send", help="send a text message or a file"))
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--room", help="conversation id (64 hex digits)")
    target.add_argument("--to", metavar="USER_ID", help="a user: the direct conversation")
    send.add_argument("text", nargs="?", default="", help="the message (a file's caption)")
    send.add_argument("--file", metavar="PATH", help="send this file (image, video, audio, file)")
    send.add_argument("--reply-to", metavar="MESSAGE_ID", help="answer this message (quoted)")
    from hearthmesh.tools.message_cli import add_message_parsers

    add_message_parsers(commands, _client)
    tail = _client(commands.add_parser("tail", help="follow conversations as they happen"))
    tail.add_argument("room", nargs="?", help="only this conversation")
    tail.add_argument("--cursor", help="resume after this cursor")
    tail.add_argument("--ack", action="store_true", help="send delivered receipts")
    tail.add_argument("--json", action="store_true", help="print every frame as JSON")
    friends = _client(
        commands.add_parser("friends", help="list, add, answer or block friends; our invite")
    )
    friends.add_argument("action", nargs="?", choices=FRIEND_ACTIONS)
    friends.add_argument("user", nargs="?", metavar="USER_ID|LINK")
    friends.add_argument("--note", default="", help="a note with a friend request")
    friends.add_argument("--png", metavar="FILE", help="with invite: also write the QR as PNG")
    profile = _client(commands.add_parser("profile", help="show or change a profile"))
    profile.add_argument("action", nargs="?", choices=["show", "set"], default="show")
    profile.add_argument("user", nargs="?", metavar="USER_ID", help="with show: another user")
    profile.add_argument("--name", help="with set: the display name")
    profile.add_argument("--handle", help="with set: the handle")
    profile.add_argument("--bio", help="with set: the bio")
    profile.add_argument("--picture", metavar="FILE", help="with set: an image to upload")
    device = _client(commands.add_parser("device", help="link, list or revoke this user's devices"))
    device.add_argument("action", nargs="?", choices=["list", "link", "revoke"], default="list")
    device.add_argument("device_id", nargs="?", metavar="DEVICE_ID", help="for revoke")
    device.add_argument("--png", metavar="FILE", help="with link: also write the QR code as PNG")
    client = _client(
        commands.add_parser("client", help="pair, list or revoke browser clients (web client)")
    )
    client.add_argument("action", nargs="?", choices=["list", "pair", "revoke"], default="list")
    client.add_argument("client_id", nargs="?", metavar="CLIENT_ID", help="for revoke")
    client.add_argument("--png", metavar="FILE", help="with pair: also write the QR code as PNG")
    verify = _client(
        commands.add_parser("verify", help="verify a device by comparing emoji (SAS), or trust")
    )
    verify.add_argument(
        "action",
        nargs="?",
        choices=["list", "start", "show", "confirm", "cancel", "trust"],
        default="list",
    )
    verify.add_argument("target", nargs="?", metavar="USER_ID|FLOW_ID")
    verify.add_argument("--peer", metavar="PEER_ID", help="with start: that home of the user")
    group = _client(commands.add_parser("group", help="create, join and run groups (SPEC §30)"))
    group.add_argument("action", choices=list(GROUP_ACTIONS))
    group.add_argument("operands", nargs="*", metavar="GROUP|USER_ID|NAME|LINK")
    group.add_argument("--open", action="store_true", help="with create: anyone may join")
    group.add_argument("--uses", type=int, default=1, help="with invite: how many may join by it")
    group.add_argument("--ttl-s", type=int, default=7 * 86_400, help="with invite: valid for (s)")
    group.add_argument("--png", metavar="FILE", help="with invite: also write the QR code as PNG")
    group.add_argument("--limit", type=int, default=50, help="with history shared: messages")
    bench = commands.add_parser("bench", help="run a benchmark and print one JSON object")
    bench.add_argument("name", nargs="?", help="which benchmark (see --list)")
    bench.add_argument("--list", action="store_true", help="name the benchmarks")
    bench.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    bench.add_argument("--members", type=int, help="with group: its size (256; 64 with --quick)")
    from hearthmesh.tools.conformance.cli import add_conformance_parser

    add_conformance_parser(commands)
    from hearthmesh.tools.simulate.cli import add_simulate_parser

    add_simulate_parser(commands)
    return parser


_MESSAGE_COMMAND_NAMES: Final = frozenset(
    {"recall", "edit", "react", "forward", "delete", "conversations", "read", "history"}
)
"""tools/message_cli.py's subcommands (SPEC §31.8), named here so the parser stays light."""


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", metavar="DIR", help="where the node keeps its data (./data/node)"
    )


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    _data_dir(parser)
    parser.add_argument("--config", help="a TOML file of settings (DATA_DIR/config.toml)")
    parser.add_argument("--api", metavar="HOST:PORT", help="client API address (127.0.0.1:8470)")
    parser.add_argument(
        "--listen",
        metavar="MULTIADDR",
        action="append",
        help="libp2p address, repeatable (all interfaces, TCP and QUIC on 4470)",
    )
    parser.add_argument(
        "--announce", metavar="MULTIADDR", action="append", help="address for the home record"
    )
    parser.add_argument(
        "--bootstrap", metavar="MULTIADDR", nargs="+", help="peers to dial at start"
    )
    parser.add_argument("--no-mdns", action="store_true", help="do not look for peers on the LAN")
    parser.add_argument(
        "--share-presence",
        action=argparse.BooleanOptionalAction,
        help="announce the user's presence and home record on gossip (on)",
    )
    for flag, what in (  # NAT traversal, SPEC §10.7, §10.11, §10.12
        ("relay-service", "offer circuit relay v2 to peers, within the relay_* limits (on)"),
        ("webrtc", "upgrade relayed connections that hole punching left relayed to WebRTC (on)"),
        ("upnp", "ask the LAN's gateway (UPnP IGD) to forward the listen ports (on)"),
        ("autonat-loopback", "run AutoNAT rounds while only loopback is advertised (off)"),
    ):
        parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, help=what)
    parser.add_argument(
        "--stun-server",
        dest="stun_servers",
        metavar="URL",
        action="append",
        help="stun:HOST:PORT: WebRTC asks it where the NAT maps us (repeatable; SPEC §10.16)",
    )
    parser.add_argument(
        "--public",
        action="store_true",
        default=None,  # absent must not override the config file
        help="run as a public bootstrap/relay node (SPEC §10.14): every interface, relay service "
        "for 128 peers, no reservations of its own, no UPnP or mDNS; explicit settings win",
    )
    parser.add_argument(
        "--public-address",
        metavar="IP",
        help="the public IP peers reach this node at: announce the listen ports there",
    )
    for name, what in (
        ("reservations", "relays this node reserves on when private (2; 0: never)"),
        ("max-reservations", "peers holding a reservation at once (16)"),
        ("circuits-per-reservation", "circuits open at once per reserved peer (8)"),
        ("circuit-bytes", "bytes one circuit carries (16 MiB)"),
        ("circuit-seconds", "seconds one circuit lives (600)"),
        ("inbox-days", "days an envelope for an away home is held (7)"),
        ("inbox-recipient-count", "envelopes held for one away user (10,000)"),
        ("inbox-recipient-bytes", "bytes held for one away user (64 MiB)"),
        ("inbox-stranger-count", "envelopes between strangers held in all (2,000)"),
        ("inbox-stranger-bytes", "bytes between strangers held in all (32 MiB)"),
        ("inbox-total-count", "envelopes held for away homes in all (50,000)"),
        ("inbox-total-bytes", "bytes held for away homes in all (256 MiB)"),
    ):
        parser.add_argument(f"--relay-{name}", type=int, metavar="N", help=f"relay: {what}")
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, help="what the node logs on stderr (warning)"
    )
    parser.add_argument(
        "--prefix-exempt-loopback",
        action=argparse.BooleanOptionalAction,
        help="peers on loopback count against no address prefix (on; SPEC §11.6.5)",
    )
    parser.add_argument(
        "--trio-on-loop",
        action=argparse.BooleanOptionalAction,
        help="run libp2p's trio on the event loop's thread (off; ARCHITECTURE §5)",
    )
    parser.add_argument(
        "--uvloop",
        action=argparse.BooleanOptionalAction,
        help="run the node on uvloop's event loop, not asyncio's (on; ARCHITECTURE §5)",
    )
    parser.add_argument(
        "--api-allowed-host",
        dest="api_allowed_hosts",
        metavar="NAME",
        action="append",
        help="a Host header name the API accepts besides loopback (repeatable)",
    )
    parser.add_argument(
        "--api-allowed-origin",
        dest="api_allowed_origins",
        metavar="ORIGIN",
        action="append",
        help="a browser origin allowed to call the API (repeatable)",
    )
    _tls_flag(parser, "serve the API over HTTPS (needed beyond loopback, e.g. --api 0.0.0.0:8470)")


def _client(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    _data_dir(parser)
    parser.add_argument("--api", metavar="HOST:PORT", help="the node's API (127.0.0.1:8470)")
    parser.add_argument("--token-file", help="the API token file (DATA_DIR/api-token)")
    _tls_flag(parser, "the node serves HTTPS (pins DATA_DIR/api-cert.pem)")
    return parser


def _tls_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    # default None: an absent flag must not override the config file (False would)
    parser.add_argument("--tls", dest="api_tls", action="store_true", default=None, help=help_text)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hearthmesh` console script; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        from hearthmesh.protocol.envelope import PROTOCOL_VERSION

        print(f"hearthmesh {_version()} (protocol v{PROTOCOL_VERSION})")
        return 0
    if args.command == "init":
        from hearthmesh.protocol.errors import HearthError
        from hearthmesh.tools.home import init_node
        from hearthmesh.tools.settings import resolve_settings

        try:
            settings = resolve_settings(args)
            if args.link:
                from hearthmesh.tools.home import link_node

                ids = link_node(settings.data_dir, args.link, settings.listen)
            else:
                ids = init_node(settings.data_dir, args.name, force=args.force)
        except HearthError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"initialised {settings.data_dir}")
        for key, value in ids.items():
            print(f"  {key}: {value}")
        return 0
    if args.command in ("run", "config"):
        from hearthmesh.protocol.errors import HearthError
        from hearthmesh.tools.settings import resolve_settings

        try:
            settings = resolve_settings(args)
        except HearthError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.command == "run":
            from hearthmesh.tools.home import run_node

            return run_node(settings)
        for key, value, source in settings.describe():
            print(f"{key} = {value}  # {source}")
        return 0
    if args.command in (
        "status",
        "send",
        "tail",
        "friends",
        "profile",
        "device",
        "client",
        "verify",
        "group",
    ) or (args.command in _MESSAGE_COMMAND_NAMES):
        from hearthmesh.tools.client import run_client_command

        return run_client_command(args)
    if args.command == "bench":
        from hearthmesh.tools.bench.runner import run_bench

        if args.members is not None:  # the bench's own knob, read where the group is built
            # imported only here: the group bench imports the node and libp2p (~1.2 s of CPU)
            from hearthmesh.tools.bench.group import MAX_MEMBERS, MEMBERS_ENV, REAL_NODES

            if not REAL_NODES <= args.members <= MAX_MEMBERS:
                parser.error(f"--members is {REAL_NODES} to {MAX_MEMBERS}")
            os.environ[MEMBERS_ENV] = str(args.members)
        return run_bench(args.name, list_only=args.list, quick=args.quick)
    if args.command == "conformance":
        from hearthmesh.tools.conformance.cli import run_conformance

        return run_conformance(args)
    if args.command == "simulate":
        from hearthmesh.tools.simulate.cli import run_simulate

        return run_simulate(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
