"""Address prefixes (protocol/prefixes.py, SPEC §11.6.5): new identities, prefix bans."""

from __future__ import annotations

from hearthmesh.protocol.prefixes import PrefixPolicy, PrefixTable, address_prefix


def test_prefixes_are_ipv4_24_and_ipv6_48_and_loopback_only_if_asked() -> None:
    assert address_prefix("203.0.113.77") == "203.0.113.0/24"
    assert address_prefix("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert address_prefix("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert address_prefix("127.0.0.1") is None
    assert address_prefix("::1") is None
    assert address_prefix("127.0.0.1", exempt_loopback=False) == "127.0.0.0/24"
    assert address_prefix("not an address") is None


def test_new_identities_per_prefix_are_capped_per_window() -> None:
    policy = PrefixPolicy(new_identities_per_prefix=3, window_ms=1000)
    table = PrefixTable(policy)
    net, other = "198.51.100.0/24", "192.0.2.0/24"
    assert [table.admit(net, f"id{i}", 0) for i in range(5)] == [True, True, True, False, False]
    assert table.admit(net, "id0", 10)  # one already counted comes back freely
    assert table.admit(other, "id9", 10)  # another prefix has its own count
    assert table.admit(net, "id5", 1001)  # the window moved on


def test_several_banned_identities_ban_the_prefix_one_does_not() -> None:
    policy = PrefixPolicy(prefix_ban_identities=3, window_ms=10_000, ban_ms=5000)
    table = PrefixTable(policy)
    net = "198.51.100.0/24"
    assert table.peer_banned(net, "a", 0) is None
    assert table.peer_banned(net, "b", 100) is None
    assert not table.banned(net, 100) and table.admit(net, "fresh", 100)
    assert table.peer_banned(net, "c", 200) == 5200
    assert table.banned(net, 200) and not table.admit(net, "fresh2", 300)
    assert not table.banned("192.0.2.0/24", 300)
    assert not table.banned(net, 5200)
    # banned identities outside the window do not add up
    assert table.peer_banned(net, "d", 6000) is None
    assert table.peer_banned(net, "e", 17_000) is None
    assert table.peer_banned(net, "f", 27_500) is None
    # a second ban doubles
    table.peer_banned(net, "g", 27_600)
    assert table.peer_banned(net, "h", 27_700) == 27_700 + 10_000


def test_the_table_is_bounded_and_keeps_bans() -> None:
    table = PrefixTable(PrefixPolicy(max_prefixes=4, prefix_ban_identities=1))
    table.peer_banned("10.0.0.0/24", "x", 0)
    for i in range(20):
        table.admit(f"10.0.{i + 1}.0/24", "p", 1)
    assert len(table) == 4
    assert table.banned("10.0.0.0/24", 2)
