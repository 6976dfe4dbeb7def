"""The dashboard's data side without a terminal: parsing, connection defaults, the REST
client's errors, the demo data and the series arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cortex_node.contracts import REMOTE_PID_BASE
from cortex_tui.client.config import ConfigProblem, resolve_connection
from cortex_tui.client.demo import DemoClient, DemoFleet, large_fleet
from cortex_tui.client.models import BadAnswer, FleetState, Node, Snapshot
from cortex_tui.client.rest import SwarmClient
from cortex_tui.client.series import MINUTE_MS, counter_rates, tokens
from cortex_tui.client.source import ControlAction, NotFound, RequestFailed, Unauthorized, Unreachable

NODE_DOC = {
    "id": "node_a", "name": "alpha", "endpoint": "http://127.0.0.1:4220", "tier": "root", "status": "online",
    "lifecycle": "active", "isSelf": True, "host": "127.0.0.1", "port": 4220, "groupName": "core",
    "metrics": {"cpuPercent": 12.5, "memoryUsedMb": 512.0, "memoryTotalMb": 2048.0, "activeSessions": 2,
                "activeProcesses": 3},
    "lastHeartbeat": "2026-11-26T10:19:20.472Z", "heartbeatAgeMs": 43,
}
TOPOLOGY_DOC = {"selfId": "node_a", "nodes": [], "processes": [
    {"pid": 1, "parentPid": None, "name": "cortex-node", "role": "node", "status": "running", "nodeId": "node_a"},
    {"pid": REMOTE_PID_BASE, "parentPid": None, "name": "coder", "role": "agent", "status": "running",
     "nodeId": "node_b", "agentType": "coder", "resources": {"tokensIn": 10, "tokensOut": 4}},
]}
REPORT_DOC = {"windowStart": "2026-11-25T10:00:00.000Z", "windowEnd": "2026-11-26T10:00:00.000Z", "totalNodes": 1,
              "onlineNodes": 1, "totalTokensIn": 100, "totalTokensOut": 40, "totalCostUsd": 0.5, "perNode": []}


# --- models ---------------------------------------------------------------------------------------
def test_fleet_state_parses_the_node_documents() -> None:
    fleet = FleetState.from_json({"selfId": "node_a", "nodes": [NODE_DOC]}, TOPOLOGY_DOC, REPORT_DOC)
    node = fleet.nodes[0]
    assert (node.name, node.group, node.cpu_percent, node.active_processes, node.address) == \
        ("alpha", "core", 12.5, 3, "127.0.0.1:4220")
    assert fleet.self_node is node and fleet.live_nodes == 1
    assert [p.is_remote for p in fleet.processes] == [False, True]
    assert fleet.processes[1].tokens_in == 10
    assert fleet.server_now_ms == 1795687200000


def test_missing_fields_get_neutral_defaults_and_wrong_shapes_are_bad_answers() -> None:
    node = Node.from_json({"id": "node_x"})
    assert (node.name, node.status, node.heartbeat_age_ms, node.address) == ("node_x", "unknown", None, "—")
    with pytest.raises(BadAnswer):
        Node.from_json({"name": "no id"})
    with pytest.raises(BadAnswer):
        FleetState.from_json({"selfId": "x", "nodes": "not a list"}, TOPOLOGY_DOC, REPORT_DOC)


def test_counter_rates_treat_a_drop_as_a_restart() -> None:
    series = [Snapshot(at_ms=0, tokens_in=100), Snapshot(at_ms=60_000, tokens_in=160),
              Snapshot(at_ms=120_000, tokens_in=30)]
    assert counter_rates(series, tokens, MINUTE_MS) == [(60_000, 60.0), (120_000, 30.0)]


# --- connection defaults --------------------------------------------------------------------------
def test_connection_comes_from_flags_then_environment_then_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"swarm": {"host": "0.0.0.0", "port": 4300, "token": "file"}}))
    env = {"CORTEX_HOME": str(tmp_path)}
    assert resolve_connection(None, None, env) == ("http://127.0.0.1:4300", "file")
    assert resolve_connection(None, None, {**env, "CORTEX_SWARM_TOKEN": "env"}) == ("http://127.0.0.1:4300", "env")
    assert resolve_connection("http://10.0.0.5:4220/", "flag", env) == ("http://10.0.0.5:4220", "flag")
    assert resolve_connection(None, None, {"CORTEX_HOME": str(tmp_path / "none")}) == ("http://127.0.0.1:4220", None)


def test_a_broken_config_file_is_one_clear_problem(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigProblem, match="not valid JSON"):
        resolve_connection(None, None, {"CORTEX_HOME": str(tmp_path)})


# --- REST client errors ---------------------------------------------------------------------------
async def fake_node(routes: web.RouteTableDef) -> TestServer:
    app = web.Application()
    app.add_routes(routes)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_an_unreachable_node_is_one_line_not_a_traceback() -> None:
    server = await fake_node(web.RouteTableDef())
    url = str(server.make_url("")).rstrip("/")
    await server.close()
    client = SwarmClient(url)
    with pytest.raises(Unreachable, match="no cortex-node answers"):
        await client.fetch_fleet()
    await client.close()


async def test_401_tells_the_operator_about_the_token() -> None:
    routes = web.RouteTableDef()

    @routes.get("/api/swarm/nodes")
    async def refuse(_: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "unauthorized", "message": "missing token"}}, status=401)

    server = await fake_node(routes)
    client = SwarmClient(str(server.make_url("")), token="wrong")
    with pytest.raises(Unauthorized, match="--token"):
        await client.fetch_fleet()
    await client.close()
    await server.close()


async def test_controlling_a_remote_node_through_an_older_node_says_how_to_reach_it() -> None:
    routes = web.RouteTableDef()

    @routes.post("/api/swarm/nodes/{node_id}/drain")
    async def missing(_: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "not_found", "message": "no route"}}, status=404)

    @routes.post("/api/swarm/drain")
    async def drain_self(_: web.Request) -> web.Response:
        return web.json_response({**NODE_DOC, "status": "draining"})

    server = await fake_node(routes)
    client = SwarmClient(str(server.make_url("")))
    remote = Node(id="node_b", name="beta", status="connected", endpoint="http://10.0.0.2:4220")
    with pytest.raises(NotFound, match="cortex-tui --url http://10.0.0.2:4220"):
        await client.control(ControlAction.DRAIN, remote)
    me = Node.from_json(NODE_DOC)
    assert (await client.control(ControlAction.DRAIN, me)).status == "draining"
    await client.close()
    await server.close()


async def test_an_answer_that_is_not_json_is_a_request_failure() -> None:
    routes = web.RouteTableDef()

    @routes.get("/api/swarm/directives")
    async def html(_: web.Request) -> web.Response:
        return web.Response(text="<html>", content_type="text/html")

    server = await fake_node(routes)
    client = SwarmClient(str(server.make_url("")))
    with pytest.raises(RequestFailed, match="not JSON"):
        await client.fetch_directives()
    await client.close()
    await server.close()


# --- demo data ------------------------------------------------------------------------------------
def test_the_demo_fleet_is_the_same_for_the_same_seed() -> None:
    a, b = DemoFleet.small(seed=3), DemoFleet.small(seed=3)
    assert a.state == b.state and a.directives == b.directives and a.events == b.events
    node_id = a.state.self_id
    assert a.series(node_id, limit=100) == b.series(node_id, limit=100)


def test_demo_series_end_at_the_last_heartbeat_and_counters_never_fall() -> None:
    fleet = DemoFleet.small()
    for node in fleet.state.nodes:
        series = fleet.series(node.id, limit=1440)
        if node.heartbeat_age_ms is None:
            assert series == []
            continue
        assert series[-1].at_ms <= fleet.now_ms - node.heartbeat_age_ms
        assert all(b.tokens_in >= a.tokens_in and b.cost_usd >= a.cost_usd for a, b in zip(series, series[1:]))
    window = fleet.series(fleet.state.self_id, limit=1440, since_ms=fleet.now_ms - 15 * MINUTE_MS)
    assert len(window) == 30


async def test_the_demo_client_controls_nodes_and_moves_only_when_asked() -> None:
    client = DemoClient(step_s=2)
    first = await client.fetch_fleet()
    second = await client.fetch_fleet()
    assert second.server_now_ms == first.server_now_ms + 2000
    node = next(n for n in second.nodes if n.status == "connected")
    assert (await client.control(ControlAction.DRAIN, node)).status == "draining"
    events = await client.fetch_events(node.id)
    assert events[0].kind == "draining"
    assert all(d.status == "failed" for d in await client.fetch_directives(status="failed"))


def test_the_large_fleet_has_remote_processes_under_their_nodes_and_ticks_change_only_figures() -> None:
    fleet = large_fleet(nodes=1000, processes=10_000)
    assert len(fleet.nodes) == 1000 and len(fleet.processes) == 10_000
    node_ids = {n.id for n in fleet.nodes}
    remote = [p for p in fleet.processes if p.node_id != fleet.self_id]
    assert remote and all(p.pid >= REMOTE_PID_BASE and p.node_id in node_ids for p in remote)
    later = large_fleet(nodes=1000, processes=10_000, tick=1)
    assert [n.id for n in later.nodes] == [n.id for n in fleet.nodes]
    assert [p.pid for p in later.processes] == [p.pid for p in fleet.processes]
    assert [n.cpu_percent for n in later.nodes] != [n.cpu_percent for n in fleet.nodes]
