"""The five directive kinds from one node to another over loopback HTTP, checked in both nodes'
swarm_directives rows; admission (drain, tier, TTL, replay, token) and bad input.

The nodes are whole nodes in this process (tests/support/inproc.py: build_app on a TestServer,
system clock, their own data directories); commands and agents still run as real child
processes, and the CLI test runs the real CLI. Nothing here is about the daemon's process (signals,
kill -9, exit codes): that is tests/integration/test_node_daemon.py and tests/reliability, which
also dispatch between real daemons.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from tests.support.inproc import Fleet, InProcNode
from tests.support.nodes import run_cli
from tests.support.wait import wait_until

TOKEN = "directive-test-token"
FAST = {"heartbeat_s": 0.3, "stale_s": 3.0}


@pytest.fixture
async def pair(fleet: Fleet) -> tuple[InProcNode, InProcNode]:
    a = await fleet.start("alpha", token=TOKEN, **FAST)
    b = await fleet.start("beta", seeds=[a], token=TOKEN, **FAST)
    await wait_until(lambda: _knows(a, b), timeout=10, what="alpha to know beta")
    return a, b


async def _knows(a: InProcNode, b: InProcNode) -> bool:
    return b.node_id in await a.statuses()


async def dispatch(a: InProcNode, b: InProcNode, kind: str, payload: dict | None = None, **extra) -> dict:
    status, doc = await a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": kind,
                                                         "payload": payload or {}, **extra})
    assert status in (200, 202), doc
    return doc


async def both_rows(a: InProcNode, b: InProcNode, directive_id: str) -> tuple[dict, dict]:
    out = a.directive_row(directive_id, "outbound")
    inn = await wait_until(lambda: (r := b.directive_row(directive_id, "inbound"))
                           and r["status"] not in ("pending", "dispatched") and r,
                           timeout=10, what="the target's row to end")
    return out, inn


async def test_query_resources(pair) -> None:
    a, b = pair
    doc = await dispatch(a, b, "query_resources")
    assert doc["status"] == "completed", doc
    out = doc["output"]
    assert out["nodeId"] == b.node_id and out["metrics"]["memoryTotalMb"] > 0
    assert set(out["queue"]) == {"queued", "running", "workers"} and out["processCount"] >= 1
    sent, got = await both_rows(a, b, doc["directiveId"])
    assert sent["status"] == got["status"] == "completed"
    assert sent["source_node_id"] == got["source_node_id"] == a.node_id


async def test_execute_task_success_and_failure(pair) -> None:
    a, b = pair
    ok = await dispatch(a, b, "execute_task", {"command": ["sh", "-c", "echo out; echo err >&2"]})
    assert ok["status"] == "completed" and ok["output"]["stdout"] == "out\n" and ok["output"]["stderr"] == "err\n"
    bad = await dispatch(a, b, "execute_task", {"command": ["sh", "-c", "exit 3"]})
    assert bad["status"] == "failed" and bad["output"]["exitCode"] == 3 and "exit code 3" in bad["error"]
    for d in (ok, bad):
        sent, got = await both_rows(a, b, d["directiveId"])
        assert sent["status"] == got["status"] == d["status"]
        assert sent["duration_ms"] == got["duration_ms"] >= 0


async def test_spawn_agent_echo_and_sim_with_metrics(pair) -> None:
    a, b = pair
    echo = await dispatch(a, b, "spawn_agent", {"agentType": "echo", "instruction": "hello there", "sessionId": "s-echo"})
    assert echo["status"] == "completed", echo
    assert "hello there" in echo["output"]["output"] and echo["output"]["sessionId"] == "s-echo"
    assert echo["output"]["pid"] >= 2 and echo["output"]["osPid"] > 0
    sim = await dispatch(a, b, "spawn_agent", {"agentType": "sim", "instruction": "plan",
                                               "env": {"CORTEX_SIM_SECONDS": "0.3"}})
    assert sim["status"] == "completed", sim
    assert sim["tokensIn"] > 0 and sim["tokensOut"] > 0 and sim["costUsd"] > 0
    sent, got = await both_rows(a, b, sim["directiveId"])
    for key in ("tokens_in", "tokens_out", "cost_usd", "tool_calls"):
        assert sent[key] == got[key] == sim[{"tokens_in": "tokensIn", "tokens_out": "tokensOut",
                                              "cost_usd": "costUsd", "tool_calls": "toolCalls"}[key]]
    # the remote agent is in the dispatcher's tree at once, with a PID from 900000
    topo = (await a.get("/api/swarm/topology"))[1]
    remote = [p for p in topo["processes"] if p["agentId"] == sim["output"]["agentId"]]
    assert len(remote) == 1 and remote[0]["pid"] >= 900000 and remote[0]["nodeId"] == b.node_id


async def test_forward_message_queues_then_delivers_to_the_session(pair) -> None:
    a, b = pair
    session = f"s-{uuid.uuid4().hex[:6]}"
    queued = await dispatch(a, b, "forward_message", {"targetSessionId": session, "message": {"note": "first"}})
    assert queued["status"] == "completed" and queued["output"]["status"] == "queued"
    msgs = (await b.get(f"/api/swarm/messages?sessionId={session}"))[1]["messages"]
    assert [m["message"] for m in msgs] == [{"note": "first"}] and msgs[0]["status"] == "queued"
    # a detached echo agent of that session gets the queued message on start, the next one live
    spawned = await dispatch(a, b, "spawn_agent", {"agentType": "echo", "instruction": "hi", "sessionId": session,
                                                   "detach": True})
    assert spawned["status"] == "completed" and spawned["output"]["detached"] is True

    async def delivered() -> bool:
        return (await b.get(f"/api/swarm/messages?sessionId={session}"))[1]["messages"][0]["status"] == "delivered"

    await wait_until(delivered, timeout=10, what="the queued message to be delivered")
    live = await dispatch(a, b, "forward_message", {"targetSessionId": session, "message": {"note": "second"}})
    assert live["output"]["status"] == "delivered" and live["output"]["deliveredTo"] == [spawned["output"]["pid"]]


async def test_sync_state_merges_both_ways_last_writer_wins(pair) -> None:
    a, b = pair
    key = f"k{uuid.uuid4().hex[:6]}"
    status, put = await b.put(f"/api/swarm/state/memory/{key}-b", {"value": "from-b"})
    assert status == 200 and put["version"]["origin"] == b.node_id
    doc = await dispatch(a, b, "sync_state", {"namespace": "memory",
                                              "entries": {key: {"value": "from-a",
                                                                "version": {"hlc": 10, "origin": a.node_id}}},
                                              "digest": {}})
    assert doc["status"] == "completed" and doc["output"]["applied"] == 1
    assert doc["output"]["entries"][f"{key}-b"]["value"] == "from-b"  # what the sender lacked comes back
    assert key not in doc["output"]["entries"]
    assert (await b.get(f"/api/swarm/state/memory/{key}"))[1]["value"] == "from-a"
    stale = await dispatch(a, b, "sync_state", {"namespace": "memory",
                                                "entries": {key: {"value": "older",
                                                                  "version": {"hlc": 5, "origin": a.node_id}}}})
    assert stale["output"]["applied"] == 0 and stale["output"]["entries"][key]["value"] == "from-a"
    secret = await dispatch(a, b, "sync_state", {"namespace": "config",
                                                 "entries": {"apiToken": {"value": "x",
                                                                          "version": {"hlc": 1, "origin": "o"}}}})
    assert secret["status"] == "failed" and "never carries secrets" in secret["error"]


async def test_ttl_expiry_kills_the_task_and_records_timed_out(pair) -> None:
    a, b = pair
    marker = Path(b.data_dir) / f"late-{uuid.uuid4().hex[:6]}"
    doc = await dispatch(a, b, "execute_task", {"command": ["sh", "-c", f"sleep 3; touch {marker}"]}, ttlMs=400)
    assert doc["status"] == "timed_out" and "TTL" in doc["error"]
    sent, got = await both_rows(a, b, doc["directiveId"])
    assert sent["status"] == "timed_out" and got["status"] in ("timed_out", "cancelled")
    # the process group was killed: the command's later step never happens
    assert not marker.exists()


async def test_unknown_and_unreachable_targets_fail_clearly(pair) -> None:
    a, _ = pair
    status, doc = await a.post("/api/swarm/directives", {"targetNodeId": "node_nope", "kind": "query_resources"})
    assert status == 200 and doc["status"] == "failed" and "unknown target node 'node_nope'" in doc["error"]
    status, doc = await a.post("/api/swarm/directives", {"targetEndpoint": "http://127.0.0.1:9/a2a",
                                                         "kind": "query_resources"})
    assert status == 200 and doc["status"] == "failed" and "unreachable" in doc["error"]


async def test_a_target_named_by_url_is_registered_on_first_contact(fleet: Fleet) -> None:
    a = await fleet.start("solo-a", **FAST)
    b = await fleet.start("solo-b", **FAST)
    status, doc = await a.post("/api/swarm/directives", {"targetEndpoint": b.a2a_url, "kind": "query_resources"})
    assert status == 200 and doc["status"] == "completed" and doc["targetNodeId"] == b.node_id
    assert b.node_id in await a.statuses()


@pytest.mark.parametrize("body, needle", [
    ({"kind": "fly", "targetNodeId": "x"}, "kind must be one of"),
    ({"kind": "query_resources"}, "exactly one target"),
    ({"kind": "query_resources", "targetNodeId": "x", "group": "g"}, "exactly one target"),
    ({"kind": "query_resources", "targetNodeId": "x", "ttlMs": "soon"}, "ttlMs must be an integer"),
    ({"kind": "query_resources", "targetNodeId": "x", "payload": []}, "payload must be an object"),
    ({"kind": "query_resources", "targetNodeId": "x", "priority": "urgent"}, "priority must be one of"),
    ({"kind": "query_resources", "targetNodeId": "x", "colour": 1}, "unknown field(s) colour"),
])
async def test_bad_dispatch_requests_are_400s(pair, body: dict, needle: str) -> None:
    a, _ = pair
    before = len((await a.get("/api/swarm/directives?limit=1000"))[1]["directives"])
    status, doc = await a.post("/api/swarm/directives", body)
    assert status == 400 and needle in doc["error"]["message"]
    assert len((await a.get("/api/swarm/directives?limit=1000"))[1]["directives"]) == before


async def test_group_broadcast_writes_one_row_per_target(pair) -> None:
    a, b = pair
    status, doc = await a.post("/api/swarm/directives", {"group": "default", "kind": "query_resources"})
    assert status == 200
    targets = sorted(d["targetNodeId"] for d in doc["directives"])
    assert targets == sorted([a.node_id, b.node_id]) and all(d["status"] == "completed" for d in doc["directives"])
    assert len({d["directiveId"] for d in doc["directives"]}) == 2


async def test_cli_dispatch_and_directives(pair, tmp_path: Path) -> None:
    a, b = pair
    home = tmp_path / "home"
    env = {"CORTEX_SWARM_TOKEN": TOKEN}

    async def cli(*args: str):
        # the real CLI in a child process; the thread keeps this event loop (and the nodes) serving
        return await asyncio.to_thread(run_cli, *args, home=home, env_extra=env)

    out = await cli("swarm", "dispatch", "execute_task", "--target", b.node_id, "--payload",
                    '{"command": ["echo", "via-cli"]}', "--url", a.url)
    assert out.returncode == 0 and "via-cli" in out.stdout and "completed" in out.stdout, out.stderr
    out = await cli("swarm", "dispatch", "execute_task", "--target", b.node_id, "--payload", "{oops", "--url", a.url)
    assert out.returncode == 2 and "--payload is not valid JSON" in out.stderr
    out = await cli("swarm", "directives", "--status", "completed", "--limit", "5", "--url", a.url, "--json")
    rows = json.loads(out.stdout)["directives"]
    assert 0 < len(rows) <= 5 and all(r["status"] == "completed" for r in rows)


async def test_get_and_cancel_directive(pair) -> None:
    a, b = pair
    doc = await dispatch(a, b, "execute_task", {"command": ["sleep", "20"]}, ttlMs=30_000, wait=False)
    assert doc["status"] == "dispatched"

    async def running() -> bool:
        return (b.directive_row(doc["directiveId"], "inbound").get("status") == "pending"
                and (await b.get("/healthz"))[1]["queue"]["running"] >= 1)

    await wait_until(running, timeout=10, what="the task to run on the target")
    status, cancelled = await a.post(f"/api/swarm/directives/{doc['directiveId']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled"
    _, got = await both_rows(a, b, doc["directiveId"])
    assert got["status"] == "cancelled"
    assert (await a.get(f"/api/swarm/directives/{doc['directiveId']}"))[1]["status"] == "cancelled"
    assert (await a.get("/api/swarm/directives/dir_nope"))[0] == 404


async def test_draining_rejects_new_work_and_the_deadline_cancels_what_runs(fleet: Fleet) -> None:
    a = await fleet.start("d-a", **FAST)
    b = await fleet.start("d-b", **FAST)
    long = (await a.post("/api/swarm/directives", {"targetEndpoint": b.url, "kind": "execute_task",
                                                   "payload": {"command": ["sleep", "30"]}, "wait": False}))[1]

    async def one_running() -> bool:
        return (await b.get("/healthz"))[1]["queue"]["running"] == 1

    await wait_until(one_running, timeout=10, what="the long task to run")
    status, node = await b.post("/api/swarm/drain", {"reason": "maintenance", "deadlineSeconds": 0.5})
    assert status == 200 and node["status"] == "draining"
    refused = (await a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": "execute_task",
                                                      "payload": {"command": ["true"]}}))[1]
    assert refused["status"] == "failed" and "node_draining" in refused["error"]
    served = (await a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": "query_resources"}))[1]
    assert served["status"] == "completed"

    async def ended() -> dict | None:
        r = (await a.get(f"/api/swarm/directives/{long['directiveId']}"))[1]
        return r if r["status"] != "dispatched" else None

    sent = await wait_until(ended, timeout=10, what="the long task to end at the deadline")
    assert sent["status"] == "cancelled"
    assert "drain deadline" in (b.directive_row(long["directiveId"], "inbound")["error"] or "")
    assert (await b.post("/api/swarm/drain", {"deadlineSeconds": "soon"}))[0] == 400


async def test_unprivileged_node_refuses_execute_task_and_nothing_runs(fleet: Fleet, tmp_path: Path) -> None:
    a = await fleet.start("u-a", **FAST)
    b = await fleet.start("u-b", tier="unprivileged", **FAST)
    marker = tmp_path / "ran"
    doc = (await a.post("/api/swarm/directives", {"targetEndpoint": b.url, "kind": "execute_task",
                                                  "payload": {"command": ["touch", str(marker)]}}))[1]
    assert doc["status"] == "failed" and "not_permitted" in doc["error"] and not marker.exists()
    echo = (await a.post("/api/swarm/directives", {"targetNodeId": b.node_id, "kind": "spawn_agent",
                                                   "payload": {"agentType": "echo", "instruction": "safe"}}))[1]
    assert echo["status"] == "completed"  # built-in agents are marked safe


async def test_a_flood_gets_429_while_heartbeats_still_land(fleet: Fleet) -> None:
    # (the same limit set through a config file, on a real daemon: tests/reliability/test_security.py)
    n = await fleet.start("limited", rate_limit_per_s=5, **FAST)
    statuses = [await n.get("/api/swarm/nodes") for _ in range(40)]
    limited = [s for s in statuses if s[0] == 429]
    assert limited and "too many requests" in limited[0][1]["error"]["message"]
    assert [(await n.get("/healthz"))[0] for _ in range(20)] == [200] * 20  # health is never throttled
    status, answer = await n.rpc("SwarmHeartbeat", {
        "node": {"id": "node_fake_peer1", "name": "fake", "endpoint": "http://127.0.0.1:9"}, "lifecycle": "active",
        "metrics": {}, "counters": {}, "processes": []})
    assert status == 200 and answer["result"]["nodeId"] == n.node_id
