"""Our gossipsub router (node/p2p/gossip_router.py) with real hosts on 127.0.0.1 (SPEC §14.3)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager

import pytest
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from hearthmesh.node.p2p import gossip_router
from hearthmesh.node.p2p.gossip_router import (
    BACKOFF_SLACK_S,
    GOSSIP_PEERS,
    MeshCounts,
    MeshRouter,
    TopicGossip,
)
from hearthmesh.node.p2p.gossipsub import MESH_SLACK
from hearthmesh.node.p2p.host import HostConfig, P2PHost
from hearthmesh.protocol.gossip import PRESENCE_TOPIC

pytestmark = pytest.mark.integration

TOPIC = "hearthmesh/test/mesh"
LEAVES = 6
DEGREE = 2
"""D 2: D_low 1, D_high 4, so six peers grafting one hub over-fill its mesh."""


@asynccontextmanager
async def hosts(count: int, degree: int = DEGREE) -> AsyncIterator[list[P2PHost]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                P2PHost(HostConfig(identity_seed=bytes([n]) * 32, gossip_degree=degree))
            )
            for n in range(1, count + 1)
        ]


def _router(host: P2PHost) -> MeshRouter:
    router = host._gossip._gossipsub
    assert router is not None
    return router


def _counts(host: P2PHost) -> MeshCounts:
    return host._gossip.mesh_counts()


def _mesh(host: P2PHost) -> set[str]:
    """The peers in `host`'s mesh for TOPIC (read from another thread: copied until stable)."""
    while True:
        try:
            return {peer.to_base58() for peer in _router(host).mesh.get(TOPIC, set())}
        except RuntimeError:  # changed during the copy
            continue


async def _until(condition: object) -> None:
    while not condition():  # type: ignore[operator]  # noqa: ASYNC110 (the router has no event)
        await asyncio.sleep(0.05)


def _backing_off_from(host: P2PHost, peer: str) -> bool:
    """`host` holds a backoff for `peer` on TOPIC (read from another thread, as `_mesh`)."""
    while True:
        try:
            return any(p.to_base58() == peer for p in _router(host).back_off.get(TOPIC, {}))
        except RuntimeError:  # changed during the copy
            continue


async def test_a_peer_the_heartbeat_pruned_is_not_grafted_again_within_the_backoff() -> None:
    """py-libp2p's heartbeat pruned an over-full mesh with no backoff on its own side, and
    grafted a pruned peer again as soon as its mesh ran short: the pruned peer, still in its
    60 s backoff, refused that GRAFT as a flood (SPEC §14.3)."""
    async with asyncio.timeout(30), hosts(1 + LEAVES) as (hub, *leaves):
        for leaf in leaves:
            await leaf.connect(hub.listen_addrs[0])
        subs = [await host.subscribe(TOPIC) for host in (hub, *leaves)]

        def pruned() -> set[str]:  # leaves the hub pruned: each backs off from it
            return {leaf.peer_id for leaf in leaves if _backing_off_from(leaf, hub.peer_id)}

        def settled() -> bool:  # each leaf in the hub's mesh or pruned from it, one pruned
            gone, kept = pruned(), _mesh(hub)
            # Both sides of each kept link: a leaf counts the hub in its mesh once it sent its
            # GRAFT, and a hub that has not read it yet may graft that leaf itself at the
            # next heartbeat (a GRAFT counted after the snapshot below).
            return bool(gone) and all(
                leaf.peer_id in gone or (hub.peer_id in _mesh(leaf) and leaf.peer_id in kept)
                for leaf in leaves
            )

        # The hub is each leaf's one peer: six end up in a mesh whose D_high is 4, whoever
        # grafted whom and however the heartbeats fall, and a heartbeat prunes it back to D.
        await _until(settled)
        gone = pruned()
        # The leaves it kept leave the topic: the hub's mesh is empty, below D_low.
        grafted = _counts(hub).grafts_sent
        for leaf, sub in zip(leaves, subs[1:], strict=True):
            if leaf.peer_id not in gone:
                await sub.unsubscribe()
        await _until(lambda: not _mesh(hub))
        beats = _counts(hub).heartbeats
        await _until(lambda: _counts(hub).heartbeats >= beats + 3)
        # Its heartbeat grafts nobody: the only peers left in the topic are the ones it pruned.
        assert _counts(hub).grafts_sent == grafted
        assert sum(_counts(leaf).grafts_refused for leaf in leaves) == 0
        assert _mesh(hub) == set()


async def test_a_mesh_grafted_past_d_plus_2_is_pruned_back() -> None:
    """D_high is D + 2 (SPEC §14.3): peers GRAFT us whenever their mesh runs short, so with
    py-libp2p's 2 * D meshes filled towards 12 peers at D 6, each a copy of every message. A
    hub and 6 leaves, D 3: every leaf grafts the hub, the only peer it has; a mesh of 6 is past
    D_high 5 (2 * D: 6, kept whole), so the hub refuses or prunes some of them."""
    async with asyncio.timeout(30), hosts(1 + LEAVES, degree=3) as (hub, *leaves):
        assert _router(hub).degree_high == 3 + MESH_SLACK == 5
        for leaf in leaves:
            await leaf.connect(hub.listen_addrs[0])
        for host in (hub, *leaves):
            await host.subscribe(TOPIC)

        def tried() -> bool:  # each leaf has the hub in its mesh, or was pruned by it
            return all(
                hub.peer_id in _mesh(leaf) or _backing_off_from(leaf, hub.peer_id)
                for leaf in leaves
            )

        await _until(tried)
        beats = _counts(hub).heartbeats
        await _until(lambda: _counts(hub).heartbeats >= beats + 2)
        assert len(_mesh(hub)) <= 5
        assert any(_backing_off_from(leaf, hub.peer_id) for leaf in leaves)


def test_we_graft_a_peer_a_while_after_its_backoff_ended_and_take_its_graft_at_once() -> None:
    """Both sides of a PRUNE count its backoff in whole seconds of their own clocks, so ours
    may end a second before the peer's: a GRAFT of ours waits BACKOFF_SLACK_S more (it would
    be refused, and the peer's backoff extended), while the peer's is taken as soon as its
    backoff ended (SPEC §14.3)."""
    router = MeshRouter(protocols=[], degree=DEGREE, degree_low=1, degree_high=2 * DEGREE)
    peer, other = ID(b"\x00\x01a"), ID(b"\x00\x01b")
    router.back_off[TOPIC] = {peer: int(time.time()), other: int(time.time()) - BACKOFF_SLACK_S}
    assert router._check_back_off(peer, TOPIC)  # ended just now: not ours to GRAFT yet
    assert not router._check_back_off(other, TOPIC)  # ended BACKOFF_SLACK_S ago
    assert other not in router.back_off[TOPIC]  # and forgotten
    router._taking_graft = True  # as `handle_graft` asks
    assert not router._check_back_off(peer, TOPIC)


@contextmanager
def _router_alone(
    *, degree: int, degree_low: int, peers: int
) -> Iterator[tuple[MeshRouter, list[ID]]]:
    """A real router and pubsub, not running (a test calls its heartbeat's steps), with
    `peers` peers subscribed to TOPIC."""
    router = MeshRouter(
        protocols=[PROTOCOL_ID_V11],
        degree=degree,
        degree_low=degree_low,
        degree_high=2 * degree,
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(new_host(key_pair=create_new_key_pair()), router)
    try:
        ids = [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(peers)]
        pubsub.peer_topics[TOPIC] = set(ids)
        router.peer_protocol.update(dict.fromkeys(ids, PROTOCOL_ID_V11))
        yield router, ids
    finally:
        pubsub.seen_messages.stop()  # its sweeper thread


def test_a_mesh_at_its_degree_grafts_nobody_more_however_peers_score() -> None:
    """Our peers' scores are all 0 (no weights), and py-libp2p's opportunistic grafting took
    every peer not in backoff as scoring well enough: each heartbeat grafted 2 more into a mesh
    at its degree, until D_high was passed and a heartbeat pruned it; each minute, as the
    backoffs ended, it began again (SPEC §14.3). A real router and pubsub, not running: one
    heartbeat's mesh maintenance, with six peers in the topic and two in the mesh."""
    with _router_alone(degree=DEGREE, degree_low=1, peers=6) as (router, peers):
        router.mesh[TOPIC] = set(peers[:DEGREE])
        to_graft, to_prune = router.mesh_heartbeat()
        assert (dict(to_graft), dict(to_prune)) == ({}, {})
        assert router.mesh[TOPIC] == set(peers[:DEGREE])


def test_grafting_for_ip_diversity_passes_over_the_peers_we_back_off_from() -> None:
    """py-libp2p's eclipse protection grafts, each heartbeat after the mesh's maintenance, up
    to 2 peers of IPs the mesh lacks when a mesh of 3 or more has fewer than 3 IPs; it asked no
    backoff, so it grafted a peer we had just pruned (or that pruned us), which that peer
    counts a flood or a violation (SPEC §14.3). Its IPs are set here: on loopback all are one.
    A real router and pubsub, not running: one heartbeat's mesh maintenance, a mesh of 3 on one
    IP and three peers outside it on three others, two of them in backoff."""
    with _router_alone(degree=3, degree_low=2, peers=6) as (router, peers):
        inside, outside = peers[:3], peers[3:]
        scorer = router.scorer
        assert scorer is not None
        for peer in inside:
            scorer.add_peer_ip(peer, "10.0.0.1")
        for n, peer in enumerate(outside, start=2):
            scorer.add_peer_ip(peer, f"10.0.0.{n}")
        router.mesh[TOPIC] = set(inside)
        pruned, pruned_us, free = outside
        router._add_back_off(pruned, TOPIC, False)  # as our heartbeat's PRUNE records it
        router._add_back_off(pruned_us, TOPIC, False)  # as a PRUNE from it does
        to_graft, to_prune = router.mesh_heartbeat()
        assert (dict(to_graft), dict(to_prune)) == ({}, {})
        assert router._ensure_mesh_diversity(TOPIC) == [free]
        assert router.mesh[TOPIC] == {*inside, free}


def test_an_ihave_goes_to_d_lazy_peers_outside_the_mesh_once_per_id_however_many_peers() -> None:
    """py-libp2p sent each heartbeat's IHAVE to a quarter of the peers outside a topic's mesh
    when that was more than 6, and named the ids of the last 3 heartbeats, so each id went out
    three times: a node's IHAVEs grew with the mesh (SPEC §14.3, §20.6). A real router and
    pubsub, not running: a mesh of 6 among 46 peers (40 outside: py-libp2p gossiped to 10), one
    message cached, then two heartbeats' gossip."""
    with _router_alone(degree=6, degree_low=4, peers=46) as (router, peers):
        router.mesh[TOPIC] = set(peers[:6])
        message = rpc_pb2.Message(from_id=b"\x01", seqno=b"\x00" * 8, data=b"x", topicIDs=[TOPIC])
        router.mcache.put(message)
        offered = router.gossip_heartbeat()
        assert len(offered) == GOSSIP_PEERS == 6
        assert not set(offered) & set(peers[:6])
        router.mcache.shift()  # as the heartbeat does after its gossip
        assert dict(router.gossip_heartbeat()) == {}  # offered once, not in 3 heartbeats


def test_ihaves_are_counted_by_kind_of_topic_and_by_the_peers_that_carry_them() -> None:
    """SPEC §20.6: each heartbeat's IHAVEs per kind of topic (a room's, presence), the ids
    offered, the peers outside the topic's mesh they were picked from, and the RPCs that
    carried them: a heartbeat packs a peer's IHAVEs of both topics into one, so two topics'
    picks of 6 among 40 make 6 to 12 RPCs, fewer the more the picks overlap. A real router
    and pubsub, not running: both topics with a mesh of 6 among 46 peers, a message cached in
    each, one heartbeat's gossip."""
    room = "/hearthmesh/room/0/" + "ab" * 16
    with _router_alone(degree=6, degree_low=4, peers=46) as (router, peers):
        assert router.pubsub is not None
        for topic in (room, PRESENCE_TOPIC):
            router.pubsub.peer_topics[topic] = set(peers)
            router.mesh[topic] = set(peers[:6])
            message = rpc_pb2.Message(
                from_id=b"\x01", seqno=topic.encode()[-8:], data=b"x", topicIDs=[topic]
            )
            router.mcache.put(message)
        offered = router.gossip_heartbeat()
        counts = router.counts
        for kind in ("room", "presence"):
            found = counts.topics[kind]
            assert (found.messages, found.heartbeats, found.ihaves) == (1, 1, GOSSIP_PEERS)
            assert (found.ids_offered, found.outside_mesh) == (GOSSIP_PEERS, 40)
        assert counts.topics["other"] == TopicGossip()
        assert counts.ihave_peers == len(offered)
        assert GOSSIP_PEERS <= counts.ihave_peers <= 2 * GOSSIP_PEERS


def test_meshes_are_counted_by_kind_of_topic() -> None:
    """SPEC §20.6: each heartbeat's mesh size per kind of topic, so a run can tell the presence
    topic's mesh (what a node's copies of each record follow) from its rooms'. A real router
    and pubsub, not running: a presence mesh of 6 and two rooms' of 3 and 4 among 8 peers (D 3,
    so maintenance keeps them; D_high 6), two heartbeats' mesh maintenance."""
    rooms = ["/hearthmesh/room/0/" + "ab" * 16, "/hearthmesh/room/0/" + "cd" * 16]
    with _router_alone(degree=3, degree_low=2, peers=8) as (router, peers):
        assert router.pubsub is not None
        for topic, size in ((PRESENCE_TOPIC, 6), (rooms[0], 3), (rooms[1], 4)):
            router.pubsub.peer_topics[topic] = set(peers)
            router.mesh[topic] = set(peers[:size])
        for _ in range(2):
            router.mesh_heartbeat()
        found = router.counts.topics
        assert (found["presence"].mesh_peers, found["presence"].meshes) == (12, 2)
        assert (found["room"].mesh_peers, found["room"].meshes) == (14, 4)
        assert (found["other"].mesh_peers, found["other"].meshes) == (0, 0)
        assert router.counts.mesh_peers_seen == 26  # all kinds, as before


async def test_each_pubsub_peer_is_scored_with_the_ip_of_its_connection() -> None:
    """py-libp2p 0.8.1 looked a new peer's IP up on its pubsub stream before that stream was
    stored, so it recorded none, and its IP-colocation scoring and grafting for IP diversity
    never ran (SPEC §14.3). Three hosts on 127.0.0.1, the hub connected to both others: once
    each is the hub's pubsub peer, the hub's scorer holds its IP; once one disconnects, its IP
    is forgotten."""
    async with asyncio.timeout(30), hosts(3) as (hub, *leaves):
        for leaf in leaves:
            await leaf.connect(hub.listen_addrs[0])
        router = _router(hub)
        scorer = router.scorer
        assert scorer is not None
        ids = {ID.from_base58(leaf.peer_id) for leaf in leaves}
        await _until(lambda: ids <= set(dict(router.peer_protocol)))
        assert {peer: scorer.ip_by_peer.get(peer) for peer in ids} == dict.fromkeys(
            ids, "127.0.0.1"
        )
        gone = ID.from_base58(leaves[0].peer_id)
        await leaves[0].disconnect(hub.peer_id)
        await _until(lambda: gone not in dict(router.peer_protocol))
        assert gone not in dict(scorer.ip_by_peer)


async def test_an_ihave_names_the_ids_peers_dedupe_by_so_nothing_seen_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p's message cache keyed messages by `from + seqno` whatever id pubsub dedupes
    by, so its IHAVEs named ids no seen-cache held: each was asked for by IWANT and sent whole
    again (SPEC §14.3). Four hosts, all connected, D 1 (D_high 2): each has peers outside its
    mesh, which its heartbeats send IHAVEs; the app's ids are content hashes, as ours are. The
    gossip window is py-libp2p's 3 heartbeats here, so that ids every host has seen are still
    offered (ours offers each id in one heartbeat, often before every host has it)."""
    monkeypatch.setattr(gossip_router, "GOSSIP_WINDOW", 3)

    def message_id(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    async with asyncio.timeout(30), AsyncExitStack() as stack:
        group = [
            await stack.enter_async_context(
                P2PHost(
                    HostConfig(
                        identity_seed=bytes([n]) * 32, gossip_degree=1, message_id=message_id
                    )
                )
            )
            for n in range(1, 5)
        ]
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                await a.connect(b.listen_addrs[0])
        subs = [await host.subscribe(TOPIC) for host in group]
        await _until(lambda: all(_mesh(host) for host in group))
        for host in group:
            await host.publish(TOPIC, b"from " + host.peer_id.encode())
        for sub in subs:
            await _until(lambda sub=sub: sub.delivered >= 3)  # the other hosts' messages
        # Every host has seen every message now. Before, an IHAVE may have come ahead of the
        # mesh's copy and been rightly asked for (at load 30 in a whole-suite run, 1 id): so
        # count from here, over 3 heartbeats that still gossip them.
        offered = sum(_counts(host).ids_offered for host in group)
        wanted = [_counts(host).ids_wanted for host in group]
        beats = max(_counts(host).heartbeats for host in group)
        await _until(lambda: min(_counts(host).heartbeats for host in group) >= beats + 3)
        assert sum(_counts(host).ids_offered for host in group) > offered
        assert [_counts(host).ids_wanted for host in group] == wanted


async def test_each_peer_gets_only_its_own_grafts_prunes_and_ihaves_from_a_heartbeat() -> None:
    """py-libp2p 0.8.1's `_emit_control_msgs` kept its GRAFT and IHAVE lists across the peers
    it grafted, so the second grafted peer also got the first's, and a pruned peer with no
    IHAVE of its own got the last one's. A hub and three leaves, on a topic nobody joined (so
    nothing else sends on it): the hub emits a heartbeat's messages; each leaf reads only its
    own (before: the second leaf read the first's IHAVE and GRAFT, the third that IHAVE)."""
    topic, other = "hearthmesh/test/control", "hearthmesh/test/control-2"
    fence = "hearthmesh/test/control-fence"  # a GRAFT sent after them: all before it arrived
    async with asyncio.timeout(30), hosts(4) as (hub, first, second, third):
        leaves = (first, second, third)
        for leaf in leaves:
            await leaf.connect(hub.listen_addrs[0])
        router = _router(hub)
        ids = {ID.from_base58(leaf.peer_id): leaf for leaf in leaves}
        await _until(lambda: set(ids) <= set(dict(router.peer_protocol)))
        read: dict[str, list[tuple[str, str]]] = {leaf.peer_id: [] for leaf in leaves}

        def note(leaf: P2PHost, kind: str) -> None:
            leaf_router = _router(leaf)
            handle = getattr(leaf_router, f"handle_{kind}")

            async def noted(message: object, sender: ID) -> None:
                name = getattr(message, "topicID", "")
                if name in (topic, other, fence):
                    read[leaf.peer_id].append((kind, name))
                else:
                    await handle(message, sender)

            setattr(leaf_router, f"handle_{kind}", noted)

        for leaf in leaves:
            for kind in ("graft", "prune", "ihave"):
                note(leaf, kind)
        one, two, three = (ID.from_base58(leaf.peer_id) for leaf in leaves)
        await hub._bridge.run(
            router._emit_control_msgs,
            {one: [topic], two: [other]},
            {three: [topic]},
            {one: {topic: [b"id-for-the-first"]}},
        )
        # Each leaf reads the hub's control messages in order on one stream.
        await hub._bridge.run(router._emit_control_msgs, {peer: [fence] for peer in ids}, {}, {})
        await _until(lambda: all(("graft", fence) in got for got in read.values()))
        for got in read.values():
            got[:] = [entry for entry in got if entry[1] != fence]
        assert read == {
            first.peer_id: [("ihave", topic), ("graft", topic)],
            second.peer_id: [("graft", other)],
            third.peer_id: [("prune", topic)],
        }
