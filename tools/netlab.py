"""Network namespaces that a test or benchmark creates and removes: an "internet" bridge, public
hosts on it, and homes behind routers (nftables masquerade, nothing inbound) or behind a host
firewall.

Real kernel networking, no netem. Nodes run in this process: `in_netns(name)` moves the calling
thread into a namespace while a host starts, and the host's trio thread (created meanwhile)
stays there with every socket it opens. Needs root, `ip` and `nft`; `netlab_unavailable()`
says why not where they are missing (tests skip on it, tests/integration/netlab.py).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from hearthmesh.node.config import NodeConfig
from hearthmesh.node.node import Node

__all__ = [
    "PUBLIC_NET",
    "SHIFTED_PORTS",
    "UDP_SHIFT",
    "NetLab",
    "in_netns",
    "netlab_unavailable",
    "start_in_netns",
]

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_serial = itertools.count()

PUBLIC_NET = "45.16.0"
"""The "internet": public hosts are PUBLIC_NET.1-99, routers' WAN sides PUBLIC_NET.101+. A
global range, not a private one: a UPnP gateway (miniupnpd) and its clients refuse to map
ports behind a private WAN address (a double NAT). The namespaces reach nothing outside."""


UDP_SHIFT = 10_000
"""How far a router with `shifted_udp_ports` moves a home's UDP source port."""
SHIFTED_PORTS = range(40_000, 40_256)
"""The ephemeral ports of a home behind such a router (and the ones it maps)."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with the calling thread in network namespace `name` (threads it starts
    inherit the namespace)."""
    with open(f"/var/run/netns/{name}") as target, open("/proc/thread-self/ns/net") as home:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())


async def start_in_netns(stack: AsyncExitStack, ns: str, config: NodeConfig) -> Node:
    """A node started in namespace `ns` (its libp2p thread stays there), stopped with `stack`."""
    with in_netns(ns):
        return await stack.enter_async_context(Node(config))


def _sh(*args: str, ns: str | None = None, stdin: str | None = None) -> None:
    """Run a command, in namespace `ns` when given: forked from this thread moved there, which
    costs the child half what `ip netns exec` does (no mount namespace, no remount of /sys;
    `ip` and `nft` need neither)."""
    with in_netns(ns) if ns else nullcontext():
        subprocess.run(args, check=True, capture_output=True, text=True, input=stdin, timeout=10)


def _ip(ns: str | None, *commands: str) -> None:
    """Several `ip` commands in one process (`ip -batch`): a lab's setup ran ~25 `ip`
    processes per home behind a NAT, ~2-3 ms of CPU each."""
    _sh("ip", "-batch", "-", ns=ns, stdin="".join(f"{command}\n" for command in commands))


def _sysctl(ns: str, name: str, value: str) -> None:
    """Set a network sysctl of namespace `ns`: /proc/sys/net is the opening thread's namespace's."""
    with in_netns(ns):
        Path("/proc/sys", *name.split(".")).write_text(value)


@cache
def netlab_unavailable() -> str | None:
    """Why namespaces, veth pairs and nftables are not usable here (None if they are); probed
    once per process (each test asked, with a namespace made and removed every time)."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nft"):
        return "needs root, iproute2 and nftables (network namespaces)"
    probe = f"hmprobe{os.getpid()}"
    try:
        _sh("ip", "netns", "add", probe)
        _sh("nft", "list", "tables", ns=probe)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"network namespaces not usable here: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@dataclass
class NetLab:
    """A topology of namespaces; `close()` (or the context manager) removes all of them."""

    prefix: str = field(default_factory=lambda: f"hm{os.getpid() % 100000}x{next(_serial)}")
    namespaces: list[str] = field(default_factory=list)
    _links: int = 0
    _daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> NetLab:
        self._internet = self._namespace("net")
        _ip(self._internet, "link add br0 type bridge", "link set br0 up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for daemon in self._daemons:
            daemon.terminate()
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
        self._daemons.clear()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.namespaces.clear()

    def _namespace(self, role: str) -> str:
        name = f"{self.prefix}{role}"
        _sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        _ip(name, "link set lo up")
        return name

    def _veth(
        self,
        a_ns: str,
        a_if: str,
        b_ns: str,
        b_if: str,
        a_then: tuple[str, ...] = (),
        b_then: tuple[str, ...] = (),
    ) -> None:
        """A veth pair made with each end in its namespace under its name, both up, then each
        side's further `ip` commands (addresses, routes) in the same process."""
        self._links += 1
        _ip(None, f"link add {a_if} netns {a_ns} type veth peer name {b_if} netns {b_ns}")
        _ip(a_ns, f"link set {a_if} up", *a_then)
        _ip(b_ns, f"link set {b_if} up", *b_then)

    def _on_internet(self, ns: str, ifname: str, host: int) -> str:
        address, port = f"{PUBLIC_NET}.{host}", f"p{self._links + 1}"
        mine, bridged = (f"addr add {address}/24 dev {ifname}",), (f"link set {port} master br0",)
        self._veth(ns, ifname, self._internet, port, mine, bridged)
        return address

    def public_host(self, number: int) -> tuple[str, str]:
        """A host with public address PUBLIC_NET.`number`; returns (namespace, address)."""
        ns = self._namespace(f"pub{number}")
        return ns, self._on_internet(ns, "eth0", number)

    def firewalled_host(self, number: int) -> tuple[str, str]:
        """A public address whose host firewall drops every inbound connection it did not
        open itself (answers arrive, new connections are refused with a reset)."""
        ns, address = self.public_host(number)
        _sh("nft", "-f", "-", ns=ns, stdin=_FIREWALL)
        return ns, address

    def router(self, number: int) -> str:
        """The namespace of the router in front of home `number` (`home_behind_nat`)."""
        return f"{self.prefix}rtr{number}"

    def nft(self, ns: str, commands: str) -> None:
        """Run nftables `commands` (a ruleset, or e.g. `delete table inet x`) in namespace `ns`:
        loss and partitions of `hearthmesh simulate`."""
        _sh("nft", "-f", "-", ns=ns, stdin=commands)

    def home_behind_nat(
        self,
        number: int,
        *,
        random_ports: bool = False,
        random_tcp_ports: bool = False,
        shifted_udp_ports: bool = False,
        upnp: bool = False,
    ) -> tuple[str, str]:
        """A home 192.168.`number`.2 behind its own router (WAN PUBLIC_NET.(100+number)) that
        masquerades outbound and forwards nothing inbound (an unsolicited packet is dropped,
        not answered); returns (namespace, LAN address).

        The router keeps a connection's source port where it is free (Linux's masquerade: the
        mapping of a home's listen port is predictable, so TCP hole punching works), or with
        `random_ports` picks a random one per connection (a symmetric-like NAT: it does not).
        `random_tcp_ports` does so for TCP alone and keeps UDP ports: TCP hole punching fails
        and WebRTC (UDP) gets through (SPEC §10.11). `shifted_udp_ports` maps each UDP source
        port of the home to one other port (+`UDP_SHIFT`) whatever the destination, as a cone
        NAT that translates ports does, and picks random TCP ports: only a STUN server tells a
        home where its UDP packets come from (SPEC §10.16); the home's ephemeral ports are
        `SHIFTED_PORTS`. With `upnp` the router runs miniupnpd (UPnP IGD and NAT-PMP on its
        LAN side), which forwards the ports a home asks for (SPEC §10.12)."""
        router = self._namespace(f"rtr{number}")
        home = self._namespace(f"home{number}")
        self._on_internet(router, "wan", 100 + number)
        lan = f"192.168.{number}"
        home_side = (f"addr add {lan}.2/24 dev eth0", f"route add default via {lan}.1")
        self._veth(router, "lan", home, "eth0", (f"addr add {lan}.1/24 dev lan",), home_side)
        _sysctl(router, "net.ipv4.ip_forward", "1")
        masquerade = "masquerade random,fully-random" if random_ports else "masquerade"
        if random_tcp_ports and not random_ports:
            tcp_only = "meta l4proto tcp masquerade random,fully-random"
            masquerade = f'{tcp_only}\n    oifname "wan" masquerade'
        if shifted_udp_ports:
            first, last = SHIFTED_PORTS[0], SHIFTED_PORTS[-1]
            _sysctl(home, "net.ipv4.ip_local_port_range", f"{first} {last}")
            shifts = ", ".join(f"{port} : {port + UDP_SHIFT}" for port in SHIFTED_PORTS)
            wan = f"{PUBLIC_NET}.{100 + number}"
            udp_only = f"meta l4proto udp snat ip to {wan} : udp sport map {{ {shifts} }}"
            masquerade = f'{udp_only}\n    oifname "wan" masquerade random,fully-random'
        _sh("nft", "-f", "-", ns=router, stdin=_NAT_ROUTER.replace("masquerade", masquerade))
        if upnp:
            self._gateway(router, f"{lan}.0/24")
        return home, f"{lan}.2"

    def _gateway(self, router: str, lan: str) -> None:
        """Run miniupnpd in `router`: it forwards ports to hosts of `lan` that ask."""
        miniupnpd = shutil.which("miniupnpd")
        if miniupnpd is None:
            raise OSError("miniupnpd is not installed (make netlab installs it)")
        _sh("nft", "-f", "-", ns=router, stdin=_UPNP_CHAINS)
        workdir = Path(tempfile.mkdtemp(prefix=f"{router}-"))
        conf = workdir / "miniupnpd.conf"
        conf.write_text(_MINIUPNPD_CONF.format(lan=lan))
        self._daemons.append(
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    router,
                    miniupnpd,
                    "-d",
                    "-f",
                    str(conf),
                    "-P",
                    str(workdir / "pid"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )


_FIREWALL = """
table inet hostfw {
  chain input {
    type filter hook input priority 0; policy accept;
    iif "lo" accept
    ct state established,related accept
    tcp flags syn reject with tcp reset
    udp dport 1024-65535 reject
  }
}
"""

# miniupnpd's nftables backend adds its rules to chains it expects to exist, in tables of the
# inet family: the forward filter's "miniupnpd", and NAT's "prerouting_miniupnpd" and
# "postrouting_miniupnpd".
_UPNP_CHAINS = """
table inet filter {
  chain miniupnpd {
  }
  chain forward {
    jump miniupnpd
  }
}
table inet nat {
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100;
    jump postrouting_miniupnpd
  }
}
"""

_MINIUPNPD_CONF = """\
ext_ifname=wan
listening_ip=lan
port=0
enable_upnp=yes
enable_natpmp=yes
secure_mode=yes
system_uptime=yes
uuid=4a6f6c2e-6865-6172-7468-6d6573680001
upnp_table_name=filter
upnp_nat_table_name=nat
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 {lan} 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""

_NAT_ROUTER = """
table ip nat {
  chain postrouting {
    type nat hook postrouting priority 100;
    oifname "wan" masquerade
  }
}
table inet filter {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan" accept
  }
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "wan" ct state new drop
  }
}
"""
