"""The `hearthmesh simulate` workload's bookkeeping (SPEC §20.4): a run is judged converged only
once every send's fate is known, so a message acked after the drain began is not judged
missing from a history read before it got there."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import aiohttp

from hearthmesh.tools.simulate.checker import Seen
from hearthmesh.tools.simulate.mesh import Mesh
from hearthmesh.tools.simulate.run import SimulateConfig, _Run
from hearthmesh.tools.simulate.workload import DeviceClient, Send

_NO_SOCKET = cast(aiohttp.ClientWebSocketResponse, None)
"""`_frame` writes to the socket only to ack a `message` frame, which these tests never give."""


def _run(tmp_path: Path) -> _Run:
    config = SimulateConfig(nodes=2, progress=False)
    run = _Run(config, Mesh(tmp_path, tmp_path, [(0, 0), (1, 0)], ["hearthmesh"] * 2, None))
    run.clients = [DeviceClient(node, "room", 0.0, {}) for node in run.mesh.nodes]
    for client in run.clients:
        client.connections = 1
    return run


async def _frame(client: DeviceClient, frame: dict[str, Any]) -> None:
    await client._frame(_NO_SOCKET, frame)


async def test_a_run_is_not_converged_while_a_send_awaits_its_answer(tmp_path: Path) -> None:
    run = _run(tmp_path)
    sender, other = run.clients
    sender.sends["d0-0"] = Send("d0-0", 0, 1.0, connection=1)
    # Nothing acked is missing anywhere, yet the send may be acked in a moment: its message
    # would then be judged against histories read before it reached them.
    assert run.missing() == 0
    assert not run.converged()
    await _frame(sender, {"event": "message_sent", "client_id": "d0-0", "message_id": "m1"})
    assert run.missing() == 1 and not run.converged()
    other.seen.append(Seen("m1", "d0", 1, 2.0))
    assert run.converged()


async def test_a_send_settles_by_its_ack_its_refusal_or_the_end_of_its_connection(
    tmp_path: Path,
) -> None:
    client = _run(tmp_path).clients[0]
    client.sends = {c: Send(c, 0, 1.0, connection=1) for c in ("acked", "refused", "cut")}
    client.sends["later"] = Send("later", 0, 1.0, connection=2)
    assert client.in_flight() == 4
    await _frame(client, {"event": "message_sent", "client_id": "acked", "message_id": "m"})
    await _frame(client, {"event": "error", "code": 4, "client_id": "refused"})
    assert client.in_flight() == 2
    client._connection_ended()  # connection 1 ended: no answer comes for "cut"
    assert client.in_flight() == 1 and not client.sends["later"].settled
    assert client.sends["acked"].acked() is not None and client.sends["cut"].acked() is None
