"""`hearthmesh simulate --scale` (SPEC §20.6): the socket counters read from `ss`, the cost
summary, the growth ratios and the latency windows; and one small run of real processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hearthmesh.tools.cli import main
from hearthmesh.tools.simulate.checker import Acked, Seen
from hearthmesh.tools.simulate.cost import NodeCost, parse_ss, peers_of, summarize
from hearthmesh.tools.simulate.idle_bytes import by_cause
from hearthmesh.tools.simulate.scale import (
    ScaleConfig,
    _above_idle,
    _by_window,
    _closed_between,
    _connection_census,
    _formation,
    _growth,
    _mesh,
    _periodic_between,
    _wire_between,
    run_counters,
    run_scale,
)
from hearthmesh.tools.simulate.scale_groups import group_homes, group_rate
from hearthmesh.tools.simulate.slow_paths import messages_of, slow_messages

SS = """\
0      0      127.0.0.1:4001 127.0.0.1:50000 users:(("hearthmesh",pid=11,fd=7))
\t cubic wscale:7,7 rto:204 bytes_sent:1500 bytes_acked:1500 bytes_received:700 segs_out:9
0      0      127.0.0.1:50000 127.0.0.1:4001 users:(("hearthmesh",pid=12,fd=9))
\t cubic wscale:7,7 rto:204 bytes_sent:700 bytes_received:1500 segs_out:9
0      0      127.0.0.1:8470 127.0.0.1:50100 users:(("hearthmesh",pid=11,fd=12))
\t cubic bytes_sent:99999 bytes_received:99999
0      0      127.0.0.1:50200 127.0.0.1:4001 users:(("hearthmesh",pid=13,fd=3))
\t cubic rto:204 segs_out:1
"""


def test_ss_counters_are_read_per_pid_and_socket_and_api_ports_are_left_out() -> None:
    counts = parse_ss(SS, frozenset({8470}))
    assert counts == {
        (11, "127.0.0.1:4001", "127.0.0.1:50000"): [1500, 700],
        (12, "127.0.0.1:50000", "127.0.0.1:4001"): [700, 1500],
        (13, "127.0.0.1:50200", "127.0.0.1:4001"): [0, 0],  # nothing sent yet: no counters
    }
    assert (11, "127.0.0.1:8470", "127.0.0.1:50100") in parse_ss(SS)


def test_a_nodes_peers_are_the_processes_its_connections_lead_to_each_once() -> None:
    """SPEC §20.6: pids 11 and 12 joined by two connections (both dialled), 13 by one to 11,
    and a socket to a process not metered: 11 has 2 peers on 3 connections, 12 and 13 one."""
    sockets = {
        (11, "127.0.0.1:4001", "127.0.0.1:50000"),
        (12, "127.0.0.1:50000", "127.0.0.1:4001"),
        (12, "127.0.0.1:4002", "127.0.0.1:50001"),
        (11, "127.0.0.1:50001", "127.0.0.1:4002"),
        (13, "127.0.0.1:50200", "127.0.0.1:4001"),
        (11, "127.0.0.1:4001", "127.0.0.1:50200"),
        (13, "127.0.0.1:50300", "127.0.0.1:9999"),
    }
    assert peers_of(sockets) == {11: 2, 12: 1, 13: 1}
    costs = {
        11: NodeCost(cpu_s=1.0, sent_bytes=0, received_bytes=0, rss_mb=1.0, connections=3, peers=2),
        12: NodeCost(cpu_s=1.0, sent_bytes=0, received_bytes=0, rss_mb=1.0, connections=2, peers=1),
    }
    assert summarize(costs, 1.0)["connections_beyond_one_a_peer"] == {
        "mean": 1.0,
        "p50": 1.0,
        "max": 1.0,
    }


def test_a_summary_spreads_each_cost_over_the_nodes_and_the_phase() -> None:
    costs = {
        1: NodeCost(cpu_s=1.0, sent_bytes=10240, received_bytes=0, rss_mb=100.0, connections=2),
        2: NodeCost(cpu_s=3.0, sent_bytes=30720, received_bytes=0, rss_mb=120.0, connections=4),
    }
    summary = summarize(costs, 10.0)
    assert summary["cpu_s"] == {"mean": 2.0, "p50": 2.0, "max": 3.0}
    assert summary["cpu_pct_of_a_core"] == {"mean": 20.0, "p50": 20.0, "max": 30.0}
    assert summary["sent_kib_per_s"] == {"mean": 2.0, "p50": 2.0, "max": 3.0}
    assert summary["connections"] == {"mean": 3.0, "p50": 3.0, "max": 4.0}
    assert summarize({}, 10.0) == {}


def test_cpu_seconds_keep_a_third_decimal_of_the_mean_of_ticks() -> None:
    """Each node's CPU comes in 10 ms ticks; the mean over three nodes of 10, 20 and 20 ms is
    17 ms, which two decimals would round to 20 (a cut of 3 ms a node would not show)."""
    costs = {
        pid: NodeCost(cpu_s=cpu, sent_bytes=0, received_bytes=0, rss_mb=1.0, connections=0)
        for pid, cpu in ((1, 0.01), (2, 0.02), (3, 0.02))
    }
    summary = summarize(costs, 30.0)
    assert summary["cpu_s"] == {"mean": 0.017, "p50": 0.02, "max": 0.02}


def _size(cpu: float, sent: float) -> dict[str, object]:
    phase = {
        "cpu_s": {"mean": cpu},
        "sent_kib": {"mean": sent},
        "received_kib": {"mean": sent},
        "rss_mb": {"mean": 100.0},
    }
    return {"idle": phase, "workload": phase}


def test_growth_is_the_largest_size_over_the_smallest() -> None:
    growth = _growth([_size(1.0, 0.0), _size(1.5, 5.0), _size(2.0, 10.0)])
    assert growth["idle.cpu_s"] == growth["workload.cpu_s"] == 2.0
    assert growth["idle.sent_kib"] is None  # nothing at the smallest size: no ratio
    assert growth["workload.rss_mb"] == 1.0
    assert _growth([_size(1.0, 1.0)]) == {}


def test_cpu_per_message_above_idle_leaves_out_the_idle_rate_over_the_workload() -> None:
    """A node spending 0.3 CPU s in a 30 s idle phase spends 1.2 s of a 120 s workload on
    nothing sent: of its 4.2 s over 60 messages, 50 ms a message is the messages'."""
    work = {"cpu_s": {"mean": 4.2}, "seconds": 120.0}
    idle = {"cpu_s": {"mean": 0.3}, "seconds": 30.0}
    assert _above_idle(work, idle, 30.0, 60) == 50.0
    assert _above_idle({}, idle, 30.0, 60) is None


def test_periodic_jobs_in_a_phase_are_per_node_and_left_out_of_the_cpu_a_message() -> None:
    """Each job's runs and CPU per node over a phase (status `wire.periodic`), and the CPU a
    message above idle with each phase's periodic CPU taken out: two nodes, one of which ran an
    AutoNAT round (0.4 s) in the workload, none in the idle phase; of a node's 4.4 s over 60
    messages, 0.2 s (its share of the round) and 1.2 s (the idle rate) are no message's."""

    def status(rounds: int, cpu_s: float) -> dict[str, Any]:
        jobs = {"autonat_round": {"runs": rounds, "cpu_s": cpu_s}}
        return {"wire": {"periodic": jobs | {"kad_refresh": {"runs": 1, "cpu_s": 0.1}}}}

    before, after = [status(1, 0.3), status(1, 0.3)], [status(2, 0.7), status(1, 0.3)]
    work = {"cpu_s": {"mean": 4.4}, "seconds": 120.0, "periodic": _periodic_between(before, after)}
    assert work["periodic"] == {
        "cpu_s": 0.2,
        "jobs": {
            "autonat_round": {"runs": 0.5, "cpu_s": 0.2},
            "kad_refresh": {"runs": 0, "cpu_s": 0},
        },
    }
    idle = {"cpu_s": {"mean": 0.3}, "seconds": 30.0, "periodic": _periodic_between(after, after)}
    assert _above_idle(work, idle, 30.0, 60) == round(1000 * (4.4 - 1.2) / 60, 2)  # 53.33
    assert _above_idle(work, idle, 30.0, 60, less_periodic=True) == 50.0
    # nodes of a release that does not meter them: no figure, not a wrong one
    assert _periodic_between([{"wire": {}}], [{"wire": {}}]) == {}
    work["periodic"] = {}
    assert _above_idle(work, idle, 30.0, 60, less_periodic=True) is None


def test_closes_in_a_phase_are_each_nodes_new_ones_summed_per_reason() -> None:
    before: list[dict[str, Any]] = [
        {"connections_closed": {"unanswered": 2}},
        {"connections_closed": {}},
    ]
    after: list[dict[str, Any]] = [
        {"connections_closed": {"unanswered": 3, "peer_or_transport": 1}},
        {"connections_closed": {"peer_or_transport": 2}},
    ]
    assert _closed_between(before, after) == {"peer_or_transport": 3, "unanswered": 1}
    assert _closed_between(after, after) == {}


def test_wire_counts_in_a_phase_are_per_protocol_per_node_per_message() -> None:
    """Two nodes, 10 messages (or seconds): each protocol's new bytes and writes over 2 x 10,
    largest first (a protocol first seen in the phase counts from 0), and the drops summed."""

    def wire(
        bytes_: dict[str, int], writes: dict[str, int], dropped: int, opens: dict[str, int]
    ) -> dict[str, Any]:
        return {
            "wire": {
                "bytes": bytes_,
                "writes": writes,
                "opens": opens,
                "gossip_rpcs_dropped": dropped,
            }
        }

    before = [wire({"/meshsub": 100}, {"/meshsub": 1}, 0, {"/kad": 2}), wire({}, {}, 2, {})]
    after = [
        wire({"/meshsub": 2100, "/kad": 400}, {"/meshsub": 21, "/kad": 4}, 1, {"/kad": 6}),
        wire({"/meshsub": 4000, "/kad": 3600}, {"/meshsub": 40, "/kad": 16}, 5, {"/d": 2}),
    ]
    assert _wire_between(before, after, 10, "message") == {
        "bytes_per_node_per_message": {"/meshsub": 300, "/kad": 200},
        "writes_per_node_per_message": {"/meshsub": 3.0, "/kad": 1.0},
        "opens_per_node_per_message": {"/kad": 0.2, "/d": 0.1},
        "gossip_rpcs_dropped": 4,
    }
    assert _wire_between(before, after, 10.0, "s")["bytes_per_node_per_s"]["/kad"] == 200


def test_gossip_counts_in_a_phase_are_per_node_per_message_and_the_mesh_a_mean() -> None:
    """The router's counts (status `wire.gossip`) over a phase: ids offered and wanted, GRAFTs
    and PRUNEs per node per message, and a topic's mean mesh over the phase's heartbeats (two
    nodes, 10 messages: meshes of 8 and 6 through 20 topic-heartbeats each, so 7)."""

    def wire(offered: int, wanted: int, mesh_peers: int, meshes: int) -> dict[str, Any]:
        counts = {"ids_offered": offered, "ids_wanted": wanted, "grafts_sent": 3}
        counts |= {"prunes_sent": 1, "mesh_peers_seen": mesh_peers, "meshes_seen": meshes}
        return {
            "wire": {"bytes": {}, "writes": {}, "opens": {}, "gossip_rpcs_dropped": 0}
            | {"gossip": counts}
        }

    before = [wire(5, 0, 40, 5), wire(0, 0, 0, 0)]
    after = [wire(65, 4, 200, 25), wire(40, 2, 120, 20)]
    found = _wire_between(before, after, 10, "message")
    assert found["gossip_per_node_per_message"] == {
        "ids_offered": 5.0,
        "ids_wanted": 0.3,
        "grafts_sent": 0.0,
        "prunes_sent": 0.0,
    }
    assert found["gossip_mesh_mean"] == 7.0
    # a release without the counts: nothing reported
    for status in before + after:
        del status["wire"]["gossip"]
    assert "gossip_mesh_mean" not in _wire_between(before, after, 10, "message")


def test_ihaves_in_a_phase_are_counted_per_kind_of_topic() -> None:
    """The router's IHAVE counts by kind of topic (`wire.gossip.topics`) over a phase, per node
    per message, with the peers outside a topic's mesh a mean over the heartbeats that
    gossiped it, and the RPCs that carried IHAVEs (two nodes, 10 messages)."""

    def wire(room: tuple[int, ...], presence: tuple[int, ...], rpcs: int) -> dict[str, Any]:
        keys = ("messages", "heartbeats", "ihaves", "ids_offered", "outside_mesh")
        counts: dict[str, Any] = {"ids_offered": 0, "ids_wanted": 0, "grafts_sent": 0}
        counts |= {"prunes_sent": 0, "mesh_peers_seen": 0, "meshes_seen": 0, "ihave_peers": rpcs}
        kinds = {"room": room, "presence": presence}
        counts["topics"] = {k: dict(zip(keys, v, strict=True)) for k, v in kinds.items()}
        return {
            "wire": {"bytes": {}, "writes": {}, "opens": {}, "gossip_rpcs_dropped": 0}
            | {"gossip": counts}
        }

    zero = (0, 0, 0, 0, 0)
    before = [wire(zero, zero, 0), wire((2, 1, 6, 6, 40), zero, 6)]
    after = [
        wire((10, 8, 48, 60, 320), (20, 4, 24, 24, 80), 60),
        wire((12, 9, 54, 66, 400), zero, 46),
    ]
    found = _wire_between(before, after, 10, "message")
    assert found["gossip_by_topic_per_node_per_message"] == {
        "room": {"messages": 1.0, "ihaves": 4.8, "ids_offered": 6.0, "outside_mesh_mean": 42.5},
        "presence": {"messages": 1.0, "ihaves": 1.2, "ids_offered": 1.2, "outside_mesh_mean": 20.0},
    }
    assert found["ihave_rpcs_per_node_per_message"] == 5.0
    # with each kind's mesh sizes: the kind's mean mesh over the phase's heartbeats
    for status, presence_mesh in zip(before + after, (0, 0, 96, 0), strict=True):
        for kind, topics in status["wire"]["gossip"]["topics"].items():
            topics |= {"mesh_peers": presence_mesh if kind == "presence" else 0, "meshes": 0}
    after[0]["wire"]["gossip"]["topics"]["presence"]["meshes"] = 20
    found = _wire_between(before, after, 10, "message")["gossip_by_topic_per_node_per_message"]
    assert (found["presence"]["mesh_mean"], found["room"]["mesh_mean"]) == (4.8, 0.0)
    for status in before + after:
        del status["wire"]["gossip"]["topics"]
    assert "ihave_rpcs_per_node_per_message" not in _wire_between(before, after, 10, "message")


def test_idle_bytes_are_split_by_cause() -> None:
    """An idle phase's bytes sent a second per node by cause (SPEC §20.6): gossip copies (0.8
    copies a second of 0.2 messages taken in: 4 a message, 1,150 bytes each), IHAVEs, the rest
    of gossip, other protocols, and the kernel's count beyond every payload (framing, pings)."""
    idle: dict[str, Any] = {
        "sent_kib_per_s": {"mean": 1.0},
        "wire": {
            "bytes_per_node_per_s": {
                "/meshsub/1.1.0": 980,
                "/meshsub/1.1.0 message": 920,
                "/meshsub/1.1.0 ihave": 50,
                "/meshsub/1.1.0 iwant": 10,
                "/ipfs/kad/1.0.0": 20,
                "negotiation": 4,
            },
            "writes_per_node_per_s": {"/meshsub/1.1.0 message": 0.8},
            "gossip_by_topic_per_node_per_s": {
                "room": {"messages": 0.0},
                "presence": {"messages": 0.2},
            },
        },
    }
    assert by_cause(idle) == {
        "messages_taken_in": 0.2,
        "copies_a_message": 4.0,
        "bytes_a_copy": 1150,
        "copies": 920,
        "ihaves": 50,
        "other_gossip": 10,
        "other_protocols": 24,
        "framing_and_pings": 20,
    }
    del idle["wire"]["gossip_by_topic_per_node_per_s"]  # a release without the counts
    assert by_cause(idle) == {}


def test_formation_steps_count_from_the_mesh_connected() -> None:
    """Where a group's formation waits: the creator's calls, then the homes one by one."""
    formed = {0: 20.0, 1: 18.0, 2: 31.0, 3: 19.0}
    assert _formation(10.0, 12.04, 15.5, formed) == {
        "created_s": 2.0,
        "added_s": 5.5,
        "homes_formed_s": {"first": 8.0, "p50": 9.5, "last": 21.0},
        "last_homes_s": {"2": 21.0, "0": 10.0, "3": 9.0},
    }


def test_latency_windows_show_a_mesh_that_falls_behind() -> None:
    latencies = [(0.5, 1.0), (3.0, 3.0), (9.9, 2.0), (10.0, 20.0), (25.0, 40.0)]
    assert _by_window(latencies, 10.0) == [2.0, 20.0, 40.0]


@pytest.mark.parametrize("sizes", ["ten", "1,5"])
def test_scale_sizes_that_are_not_node_counts_are_refused(
    sizes: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--scale", sizes]) == 2
    assert "--scale" in capsys.readouterr().err


def test_group_homes_split_every_size_into_groups_of_k_each_sent_into_at_the_rate() -> None:
    """`--group-homes K` (SPEC §20.6): each node in one group of K homes, and the rate is each
    group's, so a node sends and hears the same at every size; 0 is one group of everyone."""
    assert group_homes(4, 0) == [[0, 1, 2, 3]]
    assert group_homes(6, 2) == [[0, 1], [2, 3], [4, 5]]
    assert group_homes(50, 5)[-1] == [45, 46, 47, 48, 49]
    assert (group_rate(0.5, 50, 0), group_rate(0.5, 10, 5), group_rate(0.5, 50, 5)) == (
        0.5,
        1.0,
        5.0,
    )


@pytest.mark.parametrize("homes", ["3", "1"])
def test_group_homes_that_do_not_split_a_size_are_refused(
    homes: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--scale", "4,10", "--group-homes", homes]) == 2
    assert "--group-homes" in capsys.readouterr().err


def test_a_scale_runs_nodes_run_autonat_rounds_though_all_are_on_loopback(tmp_path: Path) -> None:
    """SPEC §10.6, §20.6: a node advertising loopback alone asks no AutoNAT server by itself;
    the scale run's nodes are told to, as homes on many machines do."""
    quiet = _mesh(ScaleConfig(sizes=(3,), out=tmp_path), tmp_path, tmp_path, 3)
    assert quiet.flags == ("--autonat-loopback",)
    info = ScaleConfig(sizes=(3,), out=tmp_path, node_log_level="info")
    assert _mesh(info, tmp_path, tmp_path, 3).flags == ("--autonat-loopback", "--log-level", "info")


@pytest.mark.integration
@pytest.mark.slow
async def test_a_scale_run_meters_real_processes_idle_and_under_load(tmp_path: Path) -> None:
    """Three `hearthmesh run` processes and a group of five (two members whose homes are
    absent): every acked message reaches the two other real members once, and both phases
    are metered per node. A busy bystander (`--bystanders 1 --busy-bystanders`) runs beside
    them, in a group of its own, and sends into it while they do."""
    config = ScaleConfig(
        sizes=(3,),
        bystanders=1,
        busy_bystanders=True,
        members=5,
        idle=1.0,
        settle=1.0,
        duration=3.0,  # 12 messages, as 6 s at 2 a second were: the same work, 3 s sooner
        rate=4.0,
        out=tmp_path,
        progress=False,
        node_log_level="info",
    )
    async with asyncio.timeout(300):  # a guard: under load a start takes 10-30 s
        report = await run_scale(config)
    assert report["ok"], report
    (size,) = report["sizes"]
    assert size["nodes"] == 3 and size["members"] == 5 and size["absent_members"] == 2
    work = size["workload"]
    assert work["acked"] >= 5 and work["missing"] == work["duplicates"] == 0, work
    assert work["delivered"] == 2 * work["acked"], work
    assert work["to_last_member"]["messages"] == work["acked"], work
    assert work["slow_messages"]["count"] <= work["acked"], work  # each named (SPEC §20.6)
    assert work["cpu_s"]["mean"] > 0 and work["sent_kib"]["mean"] > 0, work
    assert work["connections"]["mean"] >= 2, work  # the two other nodes, whatever else
    assert isinstance(work["connections_closed"], dict), work  # per reason (SPEC §10.13)
    assert work["wire"]["bytes_per_node_per_message"]["/meshsub/1.1.0"] > 0, work
    assert size["idle"]["wire"]["gossip_rpcs_dropped"] == 0, size
    assert size["idle"]["rss_mb"]["mean"] > 0, size
    # the periodic jobs of both phases, and the CPU a message without them (SPEC §20.6)
    assert set(size["idle"]["periodic"]["jobs"]) >= {"autonat_round", "kad_refresh"}, size
    assert work["cpu_ms_per_message_per_node_above_idle_less_periodic"] is not None, work
    assert set(work["wire"]["gossip_by_topic_per_node_per_message"]) >= {"room", "presence"}
    formation, homes = size["formation"], size["formation"]["homes_formed_s"]
    assert 0 <= formation["created_s"] <= formation["added_s"] <= homes["first"], size
    assert homes["first"] <= homes["p50"] <= homes["last"] <= size["formation_s"], size
    # the nodes' counters over the run, from their statuses (SPEC §11.5.1, §20.7.1)
    assert set(size["counters"]) == {
        "deferred_due_again",
        "capability_asks",
        "capability_asks_unanswered",
        "capability_hellos_awaited",
    }, size
    assert (tmp_path / "scale.png").stat().st_size > 0
    assert (tmp_path / "latency-3.png").stat().st_size > 0
    assert report["config"]["bystanders"] == 1 and report["config"]["busy_bystanders"]
    crowd = size["bystanders"]
    assert crowd["busy"] and crowd["sent"] >= 5 and crowd["acked"] >= 5, crowd
    assert (tmp_path / "nodes" / "n3-by" / "node0" / "store").is_dir()  # the bystander ran
    # --node-log-level reaches the nodes (it did not: a 50-node run's logs held no INFO)
    assert " INFO " in (tmp_path / "nodes" / "n3" / "node0.log").read_text()


def _short_phases(**options: Any) -> ScaleConfig:
    """A scale run of 1 s idle and settle phases and 2 s of sending, quiet, with `options`."""
    return ScaleConfig(idle=1.0, settle=1.0, duration=2.0, progress=False, **options)


@pytest.mark.integration
@pytest.mark.slow
async def test_first_sends_are_metered_apart_and_no_workload_message_is_a_senders_first(
    tmp_path: Path,
) -> None:
    """`--first-sends` (SPEC §20.6): each of three nodes sends once before the idle phase,
    metered as a phase of its own, then dropped: the workload's messages are checked and
    counted alone."""
    config = _short_phases(sizes=(3,), members=4, rate=3.0, first_sends=True)
    async with asyncio.timeout(300):
        report = await run_scale(config)
    assert report["ok"], report
    assert report["config"]["first_sends"]
    (size,) = report["sizes"]
    first, work = size["first_sends"], size["workload"]
    assert first["sent"] == first["acked"] == 3 and first["missing"] == 0, first
    assert first["cpu_s"]["mean"] > 0, first
    assert first["wire"]["writes_per_node_per_message"]["/hearthmesh/deliver/0"] > 0, first
    assert first["cpu_ms_per_message_per_node_above_idle_less_periodic"] is not None, first
    assert first["to_last_member"]["messages"] == 3, first  # each reached every member
    assert first["slow_messages"]["count"] <= first["acked"], first  # each slow one named
    assert work["acked"] == work["sent"] >= 3, work  # none of the first sends among them
    assert work["missing"] == work["duplicates"] == 0, work
    assert work["delivered"] == 2 * work["acked"], work  # the first sends are not counted
    assert work["to_last_member"]["messages"] == work["acked"], work


def test_a_slow_message_names_its_last_member_its_path_and_the_senders_outage() -> None:
    """SPEC §20.6: a message slow to its last member is listed with that member, the path
    its node noted (direct from the sender's home, a relay, gossip) and the sender's outage of
    that member it was sent in; a fast one is not listed."""
    statuses: list[dict[str, Any]] = [
        {
            "peer_id": f"peer{i}",
            "user_id": f"user{i}",
            "slow_arrivals": [],
            "outages_ended": [],
        }
        for i in range(3)
    ]
    statuses[2]["slow_arrivals"] = [{"message_id": "m1", "route": "deliver:peer0", "late_ms": 9}]
    statuses[1]["slow_arrivals"] = [{"message_id": "m2", "route": "deliver:peer2", "late_ms": 5}]
    start_wall_s = 1000.0
    statuses[0]["outages_ended"] = [
        {"user": "user2", "since_ms": 1_001_000, "ended_ms": 1_002_000, "absent": False},
        {"user": "user2", "since_ms": 1_004_000, "ended_ms": 1_019_000, "absent": True},
        {"user": "user1", "since_ms": 1_004_000, "ended_ms": 1_019_000, "absent": False},
    ]
    messages = messages_of(
        [Acked("m1", 0, 10.0, 10.1), Acked("m2", 0, 12.0, 12.1), Acked("m3", 1, 12.0, 12.1)],
        {
            0: [Seen("m3", "d1", 1, 12.5)],
            1: [Seen("m1", "d0", 1, 10.4), Seen("m2", "d0", 2, 17.0)],
            2: [Seen("m1", "d0", 1, 19.0), Seen("m2", "d0", 2, 12.3), Seen("m3", "d1", 1, 12.4)],
        },
    )
    report = slow_messages(messages, statuses, start_wall_s)
    assert report["count"] == 2
    first, second = report["slowest"]
    assert first == {
        "sent_s": 10.0,
        "to_last_s": 9.0,
        "acked_s": 0.1,
        "sender": 0,
        "senders_nth": 1,
        "last_member": 2,
        "path": "direct",
        "parked": {"down_before_s": 6.0, "ended_after_s": 9.0, "no_record": True},
    }
    assert (second["last_member"], second["path"]) == (1, "relayed via node 2")
    assert second["senders_nth"] == 2
    assert second["parked"] == {"down_before_s": 8.0, "ended_after_s": 7.0, "no_record": False}
    assert report["by_path"] == {"direct, parked": 1, "relayed via node 2, parked": 1}
    # m1 and m3 are their senders' first (9.0 and 0.5 s), m2 a later one (5.0 s)
    assert report["first_sends"] == {"messages": 2, "p50_s": 4.75, "slow": 1}
    assert report["later_sends"] == {"messages": 1, "p50_s": 5.0, "slow": 1}


@pytest.mark.integration
@pytest.mark.slow
async def test_groups_of_k_homes_each_deliver_within_their_group_alone(tmp_path: Path) -> None:
    """`--group-homes 2` (SPEC §20.6): four `hearthmesh run` processes in two groups of two
    homes, each group sent into at the rate: every acked message reaches the one other home
    of its group once and no other (a group of everyone: the three others), and the checks,
    the convergence and the latency to the last member are the groups'."""
    config = _short_phases(sizes=(4,), group_homes=2, members=2, rate=2.0)  # 4/s in all
    async with asyncio.timeout(300):
        report = await run_scale(config)
    assert report["ok"], report
    assert report["config"]["group_homes"] == 2
    (size,) = report["sizes"]
    assert (size["groups"], size["rate_per_s"], size["members"]) == (2, 4.0, 2), size
    assert size["absent_members"] == 0, size
    work = size["workload"]
    assert work["acked"] >= 4 and work["missing"] == work["duplicates"] == 0, work
    assert work["expected"] == work["delivered"] == work["acked"], work  # one other home each
    assert work["to_last_member"]["messages"] == work["acked"], work


def test_the_connection_census_is_a_mean_per_node_with_the_unnamed_rest() -> None:
    """SPEC §20.6: each node's `wire.connections` summed and shared; the connections whose
    dialler opened no other stream than gossip's, identify or ping count under `none`."""
    statuses = [
        {"wire": {"connections": {"outbound": 4, "outbound /ipfs/kad/1.0.0": 3, "inbound": 2}}},
        {"wire": {"connections": {"outbound": 2, "inbound": 4, "inbound /ipfs/kad/1.0.0": 3}}},
    ]
    assert _connection_census(statuses) == {
        "outbound": 3.0,
        "inbound": 3.0,
        "outbound /ipfs/kad/1.0.0": 1.5,
        "inbound /ipfs/kad/1.0.0": 1.5,
        "outbound none": 1.5,
        "inbound none": 1.5,
    }
    earlier = [{"wire": {"connections": {"outbound": 2, "outbound /ipfs/kad/1.0.0": 1}}}, {}]
    earlier[1] = {"wire": {}}  # a status without the census counts none
    assert _connection_census(statuses, earlier)["outbound /ipfs/kad/1.0.0"] == 1.0
    assert _connection_census(statuses, earlier)["outbound none"] == 1.0


def test_the_runs_counters_are_summed_over_the_nodes() -> None:
    """`simulate --scale` reports the rows made due again and the capability asks of all
    nodes (SPEC §11.5.1, §20.7.1); a node of a release without them counts none."""
    statuses: list[dict[str, Any]] = [
        {"deferred_due_again": 3, "capability_asks": {"asked": 2, "unanswered": 1, "hellos": 4}},
        {"deferred_due_again": 5, "capability_asks": {"asked": 0, "unanswered": 0, "hellos": 1}},
        {},
    ]
    assert run_counters(statuses) == {
        "deferred_due_again": 8,
        "capability_asks": 2,
        "capability_asks_unanswered": 1,
        "capability_hellos_awaited": 5,
    }
