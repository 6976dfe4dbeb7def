"""Fleet membership with real node processes: discovery through one seed, stale detection after
kill -9, restart, leave on seal, remote processes, the fleet report, remote control, the event
stream and /metrics."""

from __future__ import annotations

import sqlite3
import time
import urllib.request

import pytest

from tests.support.nodes import NodeProcess, wait_for

INTERVAL = 0.5
STALE = 2.0
FAST = ["--heartbeat-interval", str(INTERVAL), "--stale-after", str(STALE)]


def statuses(node: NodeProcess) -> dict[str, str]:
    return {n["id"]: n["status"] for n in node.get("/api/swarm/nodes")[1]["nodes"]}


def all_connected(nodes: list[NodeProcess]) -> bool:
    ids = {n.node_id for n in nodes}
    for n in nodes:
        seen = statuses(n)
        if set(seen) != ids or any(seen[i] not in ("online", "connected") for i in ids):
            return False
    return True


@pytest.fixture
def trio(node_factory) -> list[NodeProcess]:
    n1 = node_factory("n1", *FAST)
    n2 = node_factory("n2", *FAST, "--seed", n1.url)
    n3 = node_factory("n3", *FAST, "--seed", n2.url + "/a2a")  # the A2A URL form is accepted too
    return [n1, n2, n3]


def test_one_seed_each_gives_everyone_the_same_fleet_within_two_intervals(node_factory) -> None:
    n1 = node_factory("n1", *FAST)
    n2 = node_factory("n2", *FAST, "--seed", n1.url)
    n3 = node_factory("n3", *FAST, "--seed", n2.url + "/a2a")
    start = time.monotonic()
    wait_for(lambda: all_connected([n1, n2, n3]), timeout=10, what="three nodes connected everywhere")
    # two heartbeat intervals (plus the jitter and this machine's scheduling)
    assert time.monotonic() - start <= 2 * INTERVAL * 1.1 + 0.5


def test_kill_9_disconnects_and_a_restart_reconnects_the_same_node(trio) -> None:
    n1, n2, n3 = trio
    wait_for(lambda: all_connected(trio), what="the fleet")
    n3.kill()
    killed_at = time.monotonic()
    wait_for(lambda: statuses(n1)[n3.node_id] == "disconnected" and statuses(n2)[n3.node_id] == "disconnected",
             timeout=STALE + 5, what="n3 disconnected on n1 and n2")
    assert time.monotonic() - killed_at <= STALE + INTERVAL + 1.0
    events = n1.get(f"/api/swarm/nodes/{n3.node_id}/events")[1]["events"]
    assert events[0]["kind"] == "disconnected"
    n3.start()
    wait_for(lambda: all_connected(trio), what="n3 back")
    for n in (n1, n2):
        db = sqlite3.connect(n.data_dir / "swarm.db")
        assert db.execute("SELECT COUNT(*) FROM nodes WHERE id = ?", (n3.node_id,)).fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM nodes").fetchone() == (3,)
        db.close()
        kinds = [e["kind"] for e in n.get(f"/api/swarm/nodes/{n3.node_id}/events")[1]["events"]]
        assert "restarted" in kinds and "recovered" in kinds


def test_a_sealed_node_is_shown_sealed_at_once(trio) -> None:
    n1, n2, n3 = trio
    wait_for(lambda: all_connected(trio), what="the fleet")
    n2.post("/api/swarm/seal", {"reason": "decommission"})
    sealed_at = time.monotonic()
    wait_for(lambda: statuses(n1)[n2.node_id] == "sealed" and statuses(n3)[n2.node_id] == "sealed", timeout=5,
             what="n2 sealed on n1 and n3")
    assert time.monotonic() - sealed_at <= 1.0
    assert n2.wait_exit() == 0


def test_remote_spawn_shows_in_the_tree_and_counts_once(trio) -> None:
    n1, _, n3 = trio
    wait_for(lambda: all_connected(trio), what="the fleet")
    status, doc = n1.post("/api/swarm/directives", {"targetNodeId": n3.node_id, "kind": "spawn_agent",
                                                    "payload": {"agentType": "sim", "instruction": "count me",
                                                                "env": {"CORTEX_SIM_SECONDS": "1.0"},
                                                                "detach": True}})
    assert status == 200 and doc["status"] == "completed", doc
    agent_id = doc["output"]["agentId"]

    def remote_proc() -> dict | None:
        procs = [p for p in n1.get("/api/swarm/topology")[1]["processes"] if p["agentId"] == agent_id]
        return procs[0] if procs else None

    proc = remote_proc()
    assert proc is not None and proc["pid"] >= 900000 and proc["nodeId"] == n3.node_id and proc["parentPid"] == 1
    pid = proc["pid"]
    topo = n1.get("/api/swarm/topology")[1]
    n3_row = [n for n in topo["nodes"] if n["id"] == n3.node_id][0]
    assert n3_row["remoteProcessCount"] >= 1
    done = wait_for(lambda: (p := remote_proc()) and p["status"] == "exited" and p, timeout=10, what="the agent to exit")
    assert done["pid"] == pid  # the same local PID for its whole life
    tokens = done["resources"]["tokensIn"]
    assert tokens > 0
    # n3's heartbeats carry its counters; the report counts the agent's tokens once
    report = wait_for(lambda: (r := n1.get("/api/swarm/report")[1]) and
                      [n for n in r["perNode"] if n["nodeId"] == n3.node_id][0]["tokensIn"] >= tokens and r,
                      what="n3's usage in n1's report")
    n3_usage = [n for n in report["perNode"] if n["nodeId"] == n3.node_id][0]
    assert n3_usage["tokensIn"] == tokens
    assert report["totalTokensIn"] == sum(n["tokensIn"] for n in report["perNode"])
    assert report["totalCostUsd"] == pytest.approx(sum(n["costUsd"] for n in report["perNode"]))


def test_report_stays_right_across_a_counter_reset(node_factory) -> None:
    n1 = node_factory("r1", *FAST)
    n2 = node_factory("r2", *FAST, "--seed", n1.url)
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


def test_remote_control_drains_a_peer(trio) -> None:
    n1, n2, _ = trio
    wait_for(lambda: all_connected(trio), what="the fleet")
    status, doc = n1.post(f"/api/swarm/nodes/{n2.node_id}/drain", {"reason": "from n1"})
    assert status == 200 and doc["status"] == "draining"
    assert n2.get("/healthz")[1]["status"] == "draining"
    wait_for(lambda: statuses(n1)[n2.node_id] == "draining", what="n1 to see n2 draining")
    status, doc = n1.post(f"/api/swarm/nodes/{n2.node_id}/undrain")
    assert status == 200 and doc["status"] == "online"
    assert n1.post("/api/swarm/nodes/node_nope/drain")[0] == 404


def test_the_event_stream_and_metrics(node_factory) -> None:
    token = "metrics-token-123"
    n1 = node_factory("m1", *FAST, token=token)
    req = urllib.request.Request(n1.url + "/api/swarm/events", headers={"Authorization": f"Bearer {token}"})
    kinds = set()
    with urllib.request.urlopen(req, timeout=5) as stream:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "node.heartbeat" not in kinds:
            line = stream.readline().decode()
            if line.startswith("event: "):
                kinds.add(line.split(": ", 1)[1].strip())
    assert "node.heartbeat" in kinds
    n1.post("/api/swarm/directives", {"targetNodeId": n1.node_id, "kind": "query_resources"})
    status, text = n1.get("/metrics")
    assert status == 200 and isinstance(text, str)
    assert f'cortex_node_up{{node_id="{n1.node_id}",node="m1"}} 1' in text
    assert 'cortex_directives_total{role="outbound",kind="query_resources",status="completed"} 1' in text
    assert "# TYPE cortex_directive_queue_length gauge" in text
    assert token not in text
    assert n1.get("/metrics", token=None)[0] == 401


def test_the_digest_is_sent_only_when_membership_changed(node_factory) -> None:
    from tests.support.nodes import http
    n = node_factory("digest", *FAST)

    def beat(peer: str, known=None) -> dict:
        params = {"node": {"id": peer, "name": peer, "endpoint": f"http://127.0.0.1:{9000 + len(peer)}"},
                  "lifecycle": "active", "metrics": {}, "counters": {}, "processes": [], "digestVersion": known}
        status, answer = http("POST", n.url + "/a2a", {"jsonrpc": "2.0", "id": 1, "method": "SwarmHeartbeat",
                                                       "params": params}, headers={"A2A-Version": "1.0"})
        assert status == 200, answer
        return answer["result"]

    first = beat("node_p1")
    assert {m["id"] for m in first["members"]} == {n.node_id, "node_p1"}
    again = beat("node_p1", first["digestVersion"])
    assert again == {"nodeId": n.node_id, "digestVersion": first["digestVersion"], "unchanged": True}
    beat("node_p22")  # a new member moves the version: the full digest comes back
    changed = beat("node_p1", first["digestVersion"])
    assert "node_p22" in {m["id"] for m in changed["members"]}
