"""Creating a group does not wait for the creator's profile to go out (SPEC §32.1, §20.6).

The profile a creator sends its new co-members starts the room's first Megolm session, whose
key shares wait on every member's home (record lookups, one-time key claims, capability
asks): 17 s of a 50-node group's create at load 50, on the path of every ADD after it. The
group is whole without it, so it follows aside, and still reaches every member.
"""

from __future__ import annotations

import asyncio

import pytest

from hearthmesh.protocol.envelope import RoomId

from .conftest import NodeFactory, wait_until_async

pytestmark = pytest.mark.integration


async def test_a_group_is_created_before_the_creators_profile_goes_out(
    make_node: NodeFactory,
) -> None:
    async with asyncio.timeout(30), make_node("alice") as alice, make_node("bob") as bob:
        await alice.connect(bob.listen_addrs[0])
        await alice.social.set_profile({"display_name": "Alice"})
        # The profile's sending is held (as its key shares wait on a loaded mesh) until let go.
        let_go = asyncio.Event()
        share = alice.social.share_with

        async def held_share(room: RoomId) -> None:
            await let_go.wait()
            await share(room)

        alice.social.share_with = held_share  # type: ignore[method-assign]
        group = await alice.create_group("hearth", [bob.user_id])  # with the profile held
        assert await alice.members(group) == {alice.user_id, bob.user_id}
        let_go.set()

        async def bob_sees_alice() -> int:
            profile = await bob.store.read(bob.store.store.get_profile, alice.user_id)
            return int(profile is not None and profile.display_name == "Alice")

        await wait_until_async(bob_sees_alice, 1)
