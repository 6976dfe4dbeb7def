"""Fleet membership: discovery through one seed, stale detection, restart, leave on seal, remote
processes, the fleet report, remote control, the event stream, /metrics and digests.

Two kinds of test. In-process fleets (tests/support/inproc.py) for what process boundaries
prove nothing about; where a test says how *fast* something happens, it runs on the fleet's
manual clock and counts node time (heartbeat intervals, stale_after, or none at all), never the
test machine's wall time. Real ``cortex-node`` processes for what only a process shows: kill -9,
a restart of the daemon, a seal that ends it with exit code 0; their timing checks are in the
node's own terms too (its recorded receipt and event times).
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from typing import Any

import aiohttp
import pytest

from cortex_node.contracts import parse_ts
from tests.support.inproc import Fleet, InProcNode
from tests.support.nodes import NodeProcess, all_connected, wait_for
from tests.support.wait import wait_until

# --- in-process fleets on the manual clock: node time ---------------------------------------------
NODE_INTERVAL = 5.0  # node seconds; cost no wall time
NODE_STALE = 15.0
TWO_INTERVALS = 2 * NODE_INTERVAL * 1.1  # two heartbeat intervals with the ±10 % jitter


@pytest.fixture
async def trio(manual_fleet: Fleet) -> list[InProcNode]:
    """n1; n2 seeded with n1; n3 seeded with n2's A2A URL (that form is accepted too)."""
    timing = {"heartbeat_s": NODE_INTERVAL, "stale_s": NODE_STALE}
    n1 = await manual_fleet.start("n1", **timing)
    n2 = await manual_fleet.start("n2", seeds=[n1.url], **timing)
    n3 = await manual_fleet.start("n3", seeds=[n2.a2a_url], **timing)
    return [n1, n2, n3]


async def converge(fleet: Fleet) -> None:
    await fleet.advance_until(fleet.converged, within=TWO_INTERVALS, what="the fleet to converge")


async def test_one_seed_each_gives_everyone_the_same_fleet_within_two_intervals(
        manual_fleet: Fleet, trio: list[InProcNode]) -> None:
    # from the moment all three run, node time moves only here: the fleet must agree (everyone
    # knows all three, all live) before two heartbeat intervals (with the jitter) have passed
    took = await manual_fleet.advance_until(manual_fleet.converged, within=TWO_INTERVALS,
                                            what="three nodes connected everywhere")
    assert took <= TWO_INTERVALS


async def test_a_crashed_node_is_disconnected_after_stale_after_and_a_restart_reconnects_it(
        manual_fleet: Fleet, trio: list[InProcNode]) -> None:
    """The in-process twin of the kill -9 test below, timed in node seconds: a node that vanishes
    without a leave notice is disconnected on every peer once stale_after has passed since its
    last heartbeat, and within stale_after + one interval of its end."""
    n1, n2, n3 = trio
    await converge(manual_fleet)
    await manual_fleet.crash("n3")

    async def disconnected_everywhere() -> bool:
        return await n1.status_of(n3) == "disconnected" and await n2.status_of(n3) == "disconnected"

    took = await manual_fleet.advance_until(disconnected_everywhere, within=NODE_STALE + NODE_INTERVAL,
                                            what="n3 disconnected on n1 and n2")
    assert took <= NODE_STALE + NODE_INTERVAL
    for observer in (n1, n2):
        events = await observer.events_about(n3)
        assert events[0]["kind"] == "disconnected"
        # never before stale_after: measured from the observer's own receipt of n3's last beat
        age = (parse_ts(events[0]["at"]) - parse_ts((await observer.row_of(n3))["lastHeartbeat"])) / 1000
        assert NODE_STALE < age <= NODE_STALE + NODE_INTERVAL

    await manual_fleet.restart("n3")  # same data directory, port and id; a new boot
    await converge(manual_fleet)
    for observer in (n1, n2):
        with closing(sqlite3.connect(f"file:{observer.data_dir / 'swarm.db'}?mode=ro", uri=True)) as db:
            assert db.execute("SELECT COUNT(*) FROM nodes WHERE id = ?", (n3.node_id,)).fetchone() == (1,)
            assert db.execute("SELECT COUNT(*) FROM nodes").fetchone() == (3,)
        kinds = [e["kind"] for e in await observer.events_about(n3)]
        assert "restarted" in kinds and "recovered" in kinds


async def test_a_sealed_node_is_shown_sealed_at_once(manual_fleet: Fleet, trio: list[InProcNode]) -> None:
    n1, n2, n3 = trio
    await converge(manual_fleet)
    before = manual_fleet.now_s()
    status, doc = await n2.post("/api/swarm/seal", {"reason": "decommission"})
    assert status in (200, 202) and doc["status"] == "sealed", doc
    # at once: the peers show it sealed before any node time has passed (no heartbeat round, no
    # stale sweep could have told them; the leave notice did)
    assert await n1.status_of(n2) == "sealed" and await n3.status_of(n2) == "sealed"
    assert manual_fleet.now_s() == before
    assert (await n1.events_about(n2))[0]["kind"] == "sealed"
    # and the node ends as the daemon would (whose exit code 0 the real-process test checks)
    await n2.wait_stopped()
    assert n2.state == "stopped" and n2.stop_error is None


async def test_remote_control_drains_a_peer(manual_fleet: Fleet, trio: list[InProcNode]) -> None:
    n1, n2, _ = trio
    await converge(manual_fleet)
    status, doc = await n1.post(f"/api/swarm/nodes/{n2.node_id}/drain", {"reason": "from n1"})
    assert status == 200 and doc["status"] == "draining"
    assert (await n2.get("/healthz"))[1]["status"] == "draining"
    # a drain makes n2 beat at once: n1 sees it without any node time passing
    await manual_fleet.advance_until(lambda: _status_is(n1, n2, "draining"), within=0,
                                     what="n1 to see n2 draining")
    status, doc = await n1.post(f"/api/swarm/nodes/{n2.node_id}/undrain")
    assert status == 200 and doc["status"] == "online"
    assert (await n1.post("/api/swarm/nodes/node_nope/drain"))[0] == 404


async def test_the_digest_is_sent_only_when_membership_changed(manual_fleet: Fleet) -> None:
    # on the manual clock no sweep can change the membership between these calls
    n = await manual_fleet.start("digest")

    async def beat(peer: str, known: Any = None) -> dict:
        params = {"node": {"id": peer, "name": peer, "endpoint": f"http://127.0.0.1:{9000 + len(peer)}"},
                  "lifecycle": "active", "metrics": {}, "counters": {}, "processes": [], "digestVersion": known}
        status, answer = await n.rpc("SwarmHeartbeat", params)
        assert status == 200, answer
        return answer["result"]

    first = await beat("node_p1")
    assert {m["id"] for m in first["members"]} == {n.node_id, "node_p1"}
    again = await beat("node_p1", first["digestVersion"])
    assert again == {"nodeId": n.node_id, "digestVersion": first["digestVersion"], "unchanged": True}
    await beat("node_p22")  # a new member moves the version: the full digest comes back
    changed = await beat("node_p1", first["digestVersion"])
    assert "node_p22" in {m["id"] for m in changed["members"]}


async def _status_is(observer: InProcNode, node: InProcNode, status: str) -> bool:
    return await observer.status_of(node) == status


# --- in-process fleets on the system clock: agents run for real -----------------------------------
async def test_remote_spawn_shows_in_the_tree_and_counts_once(fleet: Fleet) -> None:
    n1 = await fleet.start("n1")
    n2 = await fleet.start("n2", seeds=[n1.url])
    n3 = await fleet.start("n3", seeds=[n2.a2a_url])
    await wait_until(fleet.converged, timeout=15, what="the fleet")
    status, doc = await n1.post("/api/swarm/directives", {"targetNodeId": n3.node_id, "kind": "spawn_agent",
                                                          "payload": {"agentType": "sim", "instruction": "count me",
                                                                      "env": {"CORTEX_SIM_SECONDS": "1.0"},
                                                                      "detach": True}})
    assert status == 200 and doc["status"] == "completed", doc
    agent_id = doc["output"]["agentId"]

    async def remote_proc() -> dict | None:
        procs = [p for p in (await n1.get("/api/swarm/topology"))[1]["processes"] if p["agentId"] == agent_id]
        return procs[0] if procs else None

    proc = await remote_proc()
    assert proc is not None and proc["pid"] >= 900000 and proc["nodeId"] == n3.node_id and proc["parentPid"] == 1
    pid = proc["pid"]
    topo = (await n1.get("/api/swarm/topology"))[1]
    n3_row = [n for n in topo["nodes"] if n["id"] == n3.node_id][0]
    assert n3_row["remoteProcessCount"] >= 1

    async def exited() -> dict | None:
        p = await remote_proc()
        return p if p and p["status"] == "exited" else None

    done = await wait_until(exited, timeout=10, what="the agent to exit")
    assert done["pid"] == pid  # the same local PID for its whole life
    tokens = done["resources"]["tokensIn"]
    assert tokens > 0

    # n3's heartbeats carry its counters; the report counts the agent's tokens once
    async def report_with_n3() -> dict | None:
        r = (await n1.get("/api/swarm/report"))[1]
        return r if [n for n in r["perNode"] if n["nodeId"] == n3.node_id][0]["tokensIn"] >= tokens else None

    report = await wait_until(report_with_n3, timeout=10, what="n3's usage in n1's report")
    n3_usage = [n for n in report["perNode"] if n["nodeId"] == n3.node_id][0]
    assert n3_usage["tokensIn"] == tokens
    assert report["totalTokensIn"] == sum(n["tokensIn"] for n in report["perNode"])
    assert report["totalCostUsd"] == pytest.approx(sum(n["costUsd"] for n in report["perNode"]))


async def test_the_event_stream_and_metrics(fleet: Fleet) -> None:
    token = "metrics-token-123"
    n1 = await fleet.start("m1", token=token)
    kinds: set[str] = set()
    async with fleet.session.get(n1.url + "/api/swarm/events", headers={"Authorization": f"Bearer {token}"},
                                 timeout=aiohttp.ClientTimeout(total=5)) as stream:
        async for raw in stream.content:
            line = raw.decode()
            if line.startswith("event: "):
                kinds.add(line.split(": ", 1)[1].strip())
            if "node.heartbeat" in kinds:
                break
    assert "node.heartbeat" in kinds
    await n1.post("/api/swarm/directives", {"targetNodeId": n1.node_id, "kind": "query_resources"})
    status, text = await n1.get("/metrics")
    assert status == 200 and isinstance(text, str)
    assert f'cortex_node_up{{node_id="{n1.node_id}",node="m1"}} 1' in text
    assert 'cortex_directives_total{role="outbound",kind="query_resources",status="completed"} 1' in text
    assert "# TYPE cortex_directive_queue_length gauge" in text
    assert token not in text
    assert (await n1.get("/metrics", token=None))[0] == 401


# --- real processes: kill -9, the daemon's restart and exit code ----------------------------------
INTERVAL = 0.5
STALE = 2.0
FAST = ["--heartbeat-interval", str(INTERVAL), "--stale-after", str(STALE)]
FLEET_TOKEN = "membership-fleet-token"  # one swarm token for the fleet, as operators configure it


@pytest.fixture
def process_trio(node_factory) -> list[NodeProcess]:
    n1 = node_factory("n1", *FAST, token=FLEET_TOKEN)
    n2 = node_factory("n2", *FAST, "--seed", n1.url, token=FLEET_TOKEN)
    n3 = node_factory("n3", *FAST, "--seed", n2.url + "/a2a", token=FLEET_TOKEN)  # the A2A URL form is accepted too
    return [n1, n2, n3]


def heard_last(observer: NodeProcess, node_id: str) -> int:
    """When ``observer`` last received a heartbeat from ``node_id``, on its own clock (epoch ms)."""
    (row,) = [n for n in observer.get("/api/swarm/nodes")[1]["nodes"] if n["id"] == node_id]
    return parse_ts(row["lastHeartbeat"])


def stalled(node: NodeProcess) -> bool:
    """Whether the node saw its own event loop stall (and so gave every peer a fresh grace period)."""
    text = node.get("/metrics")[1]
    match = re.search(r"^cortex_event_loop_max_lag_seconds(?:\{[^}]*\})? (\S+)$", text, re.M)
    return bool(match) and float(match.group(1)) > 0


def test_kill_9_disconnects_and_a_restart_reconnects_the_same_node(process_trio) -> None:
    n1, n2, n3 = process_trio
    wait_for(lambda: all_connected(process_trio), what="the fleet")
    n3.kill()
    wait_for(lambda: n1.statuses()[n3.node_id] == "disconnected" and n2.statuses()[n3.node_id] == "disconnected",
             timeout=STALE + 5, what="n3 disconnected on n1 and n2")
    events = n1.get(f"/api/swarm/nodes/{n3.node_id}/events")[1]["events"]
    assert events[0]["kind"] == "disconnected"
    # How long detection took, in each observer's own terms: from its last receipt of n3's beat to
    # its "disconnected" verdict (both on its clock). Not before stale_after; within stale_after +
    # one interval (+1 s for the sweep's tick), unless the observer's own event loop stalled,
    # which by design gives every peer a fresh grace period of stale_after.
    for observer in (n1, n2):
        (verdict,) = [e for e in observer.events_about(n3.node_id) if e["kind"] == "disconnected"]
        age = (parse_ts(verdict["at"]) - heard_last(observer, n3.node_id)) / 1000
        bound = STALE + INTERVAL + 1.0 + (STALE if stalled(observer) else 0.0)
        assert STALE < age <= bound, (observer.name, age)
    n3.start()
    wait_for(lambda: all_connected(process_trio), what="n3 back")
    for n in (n1, n2):
        db = sqlite3.connect(n.data_dir / "swarm.db")
        assert db.execute("SELECT COUNT(*) FROM nodes WHERE id = ?", (n3.node_id,)).fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM nodes").fetchone() == (3,)
        db.close()
        kinds = [e["kind"] for e in n.get(f"/api/swarm/nodes/{n3.node_id}/events")[1]["events"]]
        assert "restarted" in kinds and "recovered" in kinds


def test_a_sealed_daemon_is_shown_sealed_by_its_peers_and_exits_0(process_trio) -> None:
    n1, n2, n3 = process_trio
    wait_for(lambda: all_connected(process_trio), what="the fleet")
    n2.post("/api/swarm/seal", {"reason": "decommission"})
    wait_for(lambda: n1.statuses()[n2.node_id] == "sealed" and n3.statuses()[n2.node_id] == "sealed", timeout=5,
             what="n2 sealed on n1 and n3")
    # the leave notice told them, not staleness: each recorded "sealed" before stale_after had
    # passed since its last receipt of n2's beat (its own clock both times); "at once" in node
    # time is test_a_sealed_node_is_shown_sealed_at_once above
    for observer in (n1, n3):
        latest = observer.events_about(n2.node_id)[0]
        assert latest["kind"] == "sealed"
        assert parse_ts(latest["at"]) - heard_last(observer, n2.node_id) <= STALE * 1000
    assert n2.wait_exit() == 0


def test_report_stays_right_across_a_counter_reset(node_factory) -> None:
    n1 = node_factory("r1", *FAST, token=FLEET_TOKEN)
    n2 = node_factory("r2", *FAST, "--seed", n1.url, token=FLEET_TOKEN)
    wait_for(lambda: all_connected([n1, n2]), what="two nodes")

    def spawn() -> int:
        doc = n1.post("/api/swarm/directives", {"targetNodeId": n2.node_id, "kind": "spawn_agent",
                                                "payload": {"agentType": "sim", "instruction": "x",
                                                            "env": {"CORTEX_SIM_SECONDS": "0.2"}}})[1]
        assert doc["status"] == "completed", doc
        return doc["tokensIn"]

    def n2_tokens() -> int:
        return [n for n in n1.get("/api/swarm/report")[1]["perNode"] if n["nodeId"] == n2.node_id][0]["tokensIn"]

    first = spawn()
    wait_for(lambda: n2_tokens() == first, what="the first run in the report")
    n2.kill()  # counters restart from zero with the new process
    n2.start()
    second = spawn()
    wait_for(lambda: n2_tokens() == first + second, what="both runs in the report")
    report = n1.get("/api/swarm/report")[1]
    assert report["totalTokensIn"] == sum(n["tokensIn"] for n in report["perNode"])
