"""The five directive kinds from one real node process to another over loopback, checked in both
nodes' swarm_directives rows; admission (drain, tier, TTL, replay, token) and bad input."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.nodes import NodeProcess, http, run_cli, wait_for

TOKEN = "directive-test-token"
FAST = ["--heartbeat-interval", "0.3", "--stale-after", "3"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    base = tmp_path_factory.mktemp("pair")
    a = NodeProcess(data_dir=base / "a", home=base / "home", name="alpha", args=FAST, token=TOKEN).start()
    b = NodeProcess(data_dir=base / "b", home=base / "home", name="beta", args=FAST + ["--seed", a.url],
                    token=TOKEN).start()
    wait_for(lambda: b.node_id in {n["id"] for n in a.get("/api/swarm/nodes")[1]["nodes"]}, what="alpha to know beta")
    yield a, b
    a.kill()
    b.kill()


def row(node: NodeProcess, directive_id: str, role: str) -> dict:
    db = sqlite3.connect(node.data_dir / "swarm.db")
    db.row_factory = sqlite3.Row
    try:
        r = db.execute("SELECT * FROM swarm_directives WHERE directive_id = ? AND role = ?", (directive_id, role)).fetchone()
        return dict(r) if r else {}
    finally:
        db.close()


def dispatch(a: NodeProcess, b: NodeProcess, kind: str, payload: dict | None = None, **extra) -> dict:
    status, doc = a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": kind,
                                                   "payload": payload or {}, **extra})
    assert status in (200, 202), doc
    return doc


def both_rows(a: NodeProcess, b: NodeProcess, directive_id: str) -> tuple[dict, dict]:
    out = row(a, directive_id, "outbound")
    inn = wait_for(lambda: (r := row(b, directive_id, "inbound")) and r["status"] not in ("pending", "dispatched") and r,
                   what="the target's row to end")
    return out, inn


def test_query_resources(pair) -> None:
    a, b = pair
    doc = dispatch(a, b, "query_resources")
    assert doc["status"] == "completed", doc
    out = doc["output"]
    assert out["nodeId"] == b.node_id and out["metrics"]["memoryTotalMb"] > 0
    assert set(out["queue"]) == {"queued", "running", "workers"} and out["processCount"] >= 1
    sent, got = both_rows(a, b, doc["directiveId"])
    assert sent["status"] == got["status"] == "completed"
    assert sent["source_node_id"] == got["source_node_id"] == a.node_id


def test_execute_task_success_and_failure(pair) -> None:
    a, b = pair
    ok = dispatch(a, b, "execute_task", {"command": ["sh", "-c", "echo out; echo err >&2"]})
    assert ok["status"] == "completed" and ok["output"]["stdout"] == "out\n" and ok["output"]["stderr"] == "err\n"
    bad = dispatch(a, b, "execute_task", {"command": ["sh", "-c", "exit 3"]})
    assert bad["status"] == "failed" and bad["output"]["exitCode"] == 3 and "exit code 3" in bad["error"]
    for d in (ok, bad):
        sent, got = both_rows(a, b, d["directiveId"])
        assert sent["status"] == got["status"] == d["status"]
        assert sent["duration_ms"] == got["duration_ms"] >= 0


def test_spawn_agent_echo_and_sim_with_metrics(pair) -> None:
    a, b = pair
    echo = dispatch(a, b, "spawn_agent", {"agentType": "echo", "instruction": "hello there", "sessionId": "s-echo"})
    assert echo["status"] == "completed", echo
    assert "hello there" in echo["output"]["output"] and echo["output"]["sessionId"] == "s-echo"
    assert echo["output"]["pid"] >= 2 and echo["output"]["osPid"] > 0
    sim = dispatch(a, b, "spawn_agent", {"agentType": "sim", "instruction": "plan", "env": {"CORTEX_SIM_SECONDS": "0.3"}})
    assert sim["status"] == "completed", sim
    assert sim["tokensIn"] > 0 and sim["tokensOut"] > 0 and sim["costUsd"] > 0
    sent, got = both_rows(a, b, sim["directiveId"])
    for key in ("tokens_in", "tokens_out", "cost_usd", "tool_calls"):
        assert sent[key] == got[key] == sim[{"tokens_in": "tokensIn", "tokens_out": "tokensOut",
                                              "cost_usd": "costUsd", "tool_calls": "toolCalls"}[key]]
    # the remote agent is in the dispatcher's tree at once, with a PID from 900000
    topo = a.get("/api/swarm/topology")[1]
    remote = [p for p in topo["processes"] if p["agentId"] == sim["output"]["agentId"]]
    assert len(remote) == 1 and remote[0]["pid"] >= 900000 and remote[0]["nodeId"] == b.node_id


def test_forward_message_queues_then_delivers_to_the_session(pair) -> None:
    a, b = pair
    session = f"s-{uuid.uuid4().hex[:6]}"
    queued = dispatch(a, b, "forward_message", {"targetSessionId": session, "message": {"note": "first"}})
    assert queued["status"] == "completed" and queued["output"]["status"] == "queued"
    msgs = b.get(f"/api/swarm/messages?sessionId={session}")[1]["messages"]
    assert [m["message"] for m in msgs] == [{"note": "first"}] and msgs[0]["status"] == "queued"
    # a detached echo agent of that session gets the queued message on start, the next one live
    spawned = dispatch(a, b, "spawn_agent", {"agentType": "echo", "instruction": "hi", "sessionId": session,
                                             "detach": True})
    assert spawned["status"] == "completed" and spawned["output"]["detached"] is True
    wait_for(lambda: b.get(f"/api/swarm/messages?sessionId={session}")[1]["messages"][0]["status"] == "delivered",
             what="the queued message to be delivered")
    live = dispatch(a, b, "forward_message", {"targetSessionId": session, "message": {"note": "second"}})
    assert live["output"]["status"] == "delivered" and live["output"]["deliveredTo"] == [spawned["output"]["pid"]]


def test_sync_state_merges_both_ways_last_writer_wins(pair) -> None:
    a, b = pair
    key = f"k{uuid.uuid4().hex[:6]}"
    status, put = http("PUT", f"{b.url}/api/swarm/state/memory/{key}-b", {"value": "from-b"}, token=TOKEN)
    assert status == 200 and put["version"]["origin"] == b.node_id
    doc = dispatch(a, b, "sync_state", {"namespace": "memory",
                                        "entries": {key: {"value": "from-a", "version": {"hlc": 10, "origin": a.node_id}}},
                                        "digest": {}})
    assert doc["status"] == "completed" and doc["output"]["applied"] == 1
    assert doc["output"]["entries"][f"{key}-b"]["value"] == "from-b"  # what the sender lacked comes back
    assert key not in doc["output"]["entries"]
    assert http("GET", f"{b.url}/api/swarm/state/memory/{key}", token=TOKEN)[1]["value"] == "from-a"
    stale = dispatch(a, b, "sync_state", {"namespace": "memory",
                                          "entries": {key: {"value": "older", "version": {"hlc": 5, "origin": a.node_id}}}})
    assert stale["output"]["applied"] == 0 and stale["output"]["entries"][key]["value"] == "from-a"
    secret = dispatch(a, b, "sync_state", {"namespace": "config",
                                           "entries": {"apiToken": {"value": "x", "version": {"hlc": 1, "origin": "o"}}}})
    assert secret["status"] == "failed" and "never carries secrets" in secret["error"]


def test_ttl_expiry_kills_the_task_and_records_timed_out(pair) -> None:
    a, b = pair
    marker = Path(b.data_dir) / f"late-{uuid.uuid4().hex[:6]}"
    doc = dispatch(a, b, "execute_task", {"command": ["sh", "-c", f"sleep 3; touch {marker}"]}, ttlMs=400)
    assert doc["status"] == "timed_out" and "TTL" in doc["error"]
    sent, got = both_rows(a, b, doc["directiveId"])
    assert sent["status"] == "timed_out" and got["status"] in ("timed_out", "cancelled")
    # the process group was killed: the command's later step never happens
    assert not marker.exists()


def test_unknown_and_unreachable_targets_fail_clearly(pair) -> None:
    a, _ = pair
    status, doc = a.post("/api/swarm/directives", {"targetNodeId": "node_nope", "kind": "query_resources"})
    assert status == 200 and doc["status"] == "failed" and "unknown target node 'node_nope'" in doc["error"]
    status, doc = a.post("/api/swarm/directives", {"targetEndpoint": "http://127.0.0.1:9/a2a", "kind": "query_resources"})
    assert status == 200 and doc["status"] == "failed" and "unreachable" in doc["error"]


def test_a_target_named_by_url_is_registered_on_first_contact(tmp_path: Path, node_factory) -> None:
    a = node_factory("solo-a", *FAST)
    b = node_factory("solo-b", *FAST)
    status, doc = a.post("/api/swarm/directives", {"targetEndpoint": b.url + "/a2a", "kind": "query_resources"})
    assert status == 200 and doc["status"] == "completed" and doc["targetNodeId"] == b.node_id
    assert b.node_id in {n["id"] for n in a.get("/api/swarm/nodes")[1]["nodes"]}


@pytest.mark.parametrize("body, needle", [
    ({"kind": "fly", "targetNodeId": "x"}, "kind must be one of"),
    ({"kind": "query_resources"}, "exactly one target"),
    ({"kind": "query_resources", "targetNodeId": "x", "group": "g"}, "exactly one target"),
    ({"kind": "query_resources", "targetNodeId": "x", "ttlMs": "soon"}, "ttlMs must be an integer"),
    ({"kind": "query_resources", "targetNodeId": "x", "payload": []}, "payload must be an object"),
    ({"kind": "query_resources", "targetNodeId": "x", "priority": "urgent"}, "priority must be one of"),
    ({"kind": "query_resources", "targetNodeId": "x", "colour": 1}, "unknown field(s) colour"),
])
def test_bad_dispatch_requests_are_400s(pair, body: dict, needle: str) -> None:
    a, _ = pair
    before = len(a.get("/api/swarm/directives?limit=1000")[1]["directives"])
    status, doc = a.post("/api/swarm/directives", body)
    assert status == 400 and needle in doc["error"]["message"]
    assert len(a.get("/api/swarm/directives?limit=1000")[1]["directives"]) == before


def test_group_broadcast_writes_one_row_per_target(pair) -> None:
    a, b = pair
    status, doc = a.post("/api/swarm/directives", {"group": "default", "kind": "query_resources"})
    assert status == 200
    targets = sorted(d["targetNodeId"] for d in doc["directives"])
    assert targets == sorted([a.node_id, b.node_id]) and all(d["status"] == "completed" for d in doc["directives"])
    assert len({d["directiveId"] for d in doc["directives"]}) == 2


def test_cli_dispatch_and_directives(pair) -> None:
    a, b = pair
    env = {"CORTEX_SWARM_TOKEN": TOKEN}
    out = run_cli("swarm", "dispatch", "execute_task", "--target", b.node_id, "--payload", '{"command": ["echo", "via-cli"]}',
                  "--url", a.url, home=a.home, env_extra=env)
    assert out.returncode == 0 and "via-cli" in out.stdout and "completed" in out.stdout, out.stderr
    out = run_cli("swarm", "dispatch", "execute_task", "--target", b.node_id, "--payload", "{oops", "--url", a.url,
                  home=a.home, env_extra=env)
    assert out.returncode == 2 and "--payload is not valid JSON" in out.stderr
    out = run_cli("swarm", "directives", "--status", "completed", "--limit", "5", "--url", a.url, "--json",
                  home=a.home, env_extra=env)
    rows = json.loads(out.stdout)["directives"]
    assert 0 < len(rows) <= 5 and all(r["status"] == "completed" for r in rows)


def test_get_and_cancel_directive(pair) -> None:
    a, b = pair
    doc = dispatch(a, b, "execute_task", {"command": ["sleep", "20"]}, ttlMs=30_000, wait=False)
    assert doc["status"] == "dispatched"
    wait_for(lambda: row(b, doc["directiveId"], "inbound").get("status") == "pending" and
             b.get("/healthz")[1]["queue"]["running"] >= 1, what="the task to run on the target")
    status, cancelled = a.post(f"/api/swarm/directives/{doc['directiveId']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled"
    _, got = both_rows(a, b, doc["directiveId"])
    assert got["status"] == "cancelled"
    assert a.get(f"/api/swarm/directives/{doc['directiveId']}")[1]["status"] == "cancelled"
    assert a.get("/api/swarm/directives/dir_nope")[0] == 404


def test_draining_rejects_new_work_and_the_deadline_cancels_what_runs(node_factory) -> None:
    a = node_factory("d-a", *FAST)
    b = node_factory("d-b", *FAST)
    long = a.post("/api/swarm/directives", {"targetEndpoint": b.url, "kind": "execute_task",
                                            "payload": {"command": ["sleep", "30"]}, "wait": False})[1]
    wait_for(lambda: b.get("/healthz")[1]["queue"]["running"] == 1, what="the long task to run")
    status, node = b.post("/api/swarm/drain", {"reason": "maintenance", "deadlineSeconds": 0.5})
    assert status == 200 and node["status"] == "draining"
    refused = a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": "execute_task",
                                               "payload": {"command": ["true"]}})[1]
    assert refused["status"] == "failed" and "node_draining" in refused["error"]
    served = a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": "query_resources"})[1]
    assert served["status"] == "completed"
    sent = wait_for(lambda: (r := a.get(f"/api/swarm/directives/{long['directiveId']}")[1])["status"] != "dispatched" and r,
                    what="the long task to end at the deadline")
    assert sent["status"] == "cancelled" and "drain deadline" in (row(b, long["directiveId"], "inbound")["error"] or "")
    assert b.post("/api/swarm/drain", {"deadlineSeconds": "soon"})[0] == 400


def test_unprivileged_node_refuses_execute_task_and_nothing_runs(node_factory, tmp_path: Path) -> None:
    a = node_factory("u-a", *FAST)
    b = node_factory("u-b", *FAST, "--tier", "unprivileged")
    marker = tmp_path / "ran"
    doc = a.post("/api/swarm/directives", {"targetEndpoint": b.url, "kind": "execute_task",
                                           "payload": {"command": ["touch", str(marker)]}})[1]
    assert doc["status"] == "failed" and "not_permitted" in doc["error"] and not marker.exists()
    echo = a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": "spawn_agent",
                                            "payload": {"agentType": "echo", "instruction": "safe"}})[1]
    assert echo["status"] == "completed"  # built-in agents are marked safe


def test_a_flood_gets_429_while_heartbeats_still_land(node_factory, tmp_path: Path) -> None:
    cfg = tmp_path / "limits.json"
    cfg.write_text(json.dumps({"swarm": {"rateLimitPerSecond": 5}}))
    n = node_factory("limited", *FAST, "--config", str(cfg))
    statuses = [http("GET", n.url + "/api/swarm/nodes") for _ in range(40)]
    limited = [s for s in statuses if s[0] == 429]
    assert limited and "too many requests" in limited[0][1]["error"]["message"]
    assert all(http("GET", n.url + "/healthz")[0] == 200 for _ in range(20))  # health is never throttled
    beat = {"jsonrpc": "2.0", "id": 1, "method": "SwarmHeartbeat", "params": {
        "node": {"id": "node_fake_peer1", "name": "fake", "endpoint": "http://127.0.0.1:9"}, "lifecycle": "active",
        "metrics": {}, "counters": {}, "processes": []}}
    status, answer = http("POST", n.url + "/a2a", beat, headers={"A2A-Version": "1.0"})
    assert status == 200 and answer["result"]["nodeId"] == n.node_id
