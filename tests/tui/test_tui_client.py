"""The dashboard's data side without a terminal: parsing, connection defaults, the REST
client's errors, the demo data and the series arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cortex_node.contracts import REMOTE_PID_BASE, NodeLoad, RunMetrics, Usage, read_lenient
from cortex_tui.client.config import ConfigProblem, resolve_connection
from cortex_tui.client.demo import DemoClient, DemoFleet, large_fleet
from cortex_tui.client.models import BadAnswer, Directive, FleetState, Node, Snapshot
from cortex_tui.client.rest import SwarmClient
from cortex_tui.client.series import MINUTE_MS, counter_rates, tokens
from cortex_tui.client.source import ControlAction, NotFound, RequestFailed, Unauthorized, Unreachable

NODE_DOC = {
    "id": "node_a", "name": "alpha", "endpoint": "http://127.0.0.1:4220", "tier": "root", "status": "online",
    "lifecycle": "active", "isSelf": True, "host": "127.0.0.1", "port": 4220, "groupName": "core",
    "metrics": {"cpuPercent": 12.5, "memoryUsedMb": 512.0, "memoryTotalMb": 2048.0, "activeSessions": 2,
                "activeProcesses": 3, "uptimeSeconds": 61.5,
                "today": {"tokensIn": 1200, "tokensOut": 300, "costUsd": 0.25, "toolCalls": 4, "cpuMs": 900.0,
                          "peakMemoryMb": 80.0}},
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
    assert (node.name, node.group, node.load.cpu_percent, node.load.active_processes, node.address) == \
        ("alpha", "core", 12.5, 3, "127.0.0.1:4220")
    assert node.today == Usage(tokens_in=1200, tokens_out=300, cost_usd=0.25, tool_calls=4, cpu_ms=900.0,
                               peak_memory_mb=80.0)
    assert fleet.self_node is node and fleet.live_nodes == 1
    assert [p.is_remote for p in fleet.processes] == [False, True]
    assert fleet.processes[1].resources == Usage(tokens_in=10, tokens_out=4)
    assert fleet.totals.usage == Usage(tokens_in=100, tokens_out=40, cost_usd=0.5)
    assert fleet.server_now_ms == 1795687200000


def test_missing_fields_get_neutral_defaults_and_wrong_shapes_are_bad_answers() -> None:
    node = Node.from_json({"id": "node_x"})
    assert (node.name, node.status, node.heartbeat_age_ms, node.address) == ("node_x", "unknown", None, "—")
    with pytest.raises(BadAnswer):
        Node.from_json({"name": "no id"})
    with pytest.raises(BadAnswer):
        FleetState.from_json({"selfId": "x", "nodes": "not a list"}, TOPOLOGY_DOC, REPORT_DOC)


def test_the_node_s_24h_usage_is_read_from_the_nested_today_and_shown_in_its_facts() -> None:
    from cortex_tui.widgets.node_facts import facts_table

    node = Node.from_json(NODE_DOC)
    table = facts_table(node, now_ms=0, stale_after_ms=120_000)
    facts = dict(zip((str(c) for c in table.columns[0].cells), (str(c) for c in table.columns[1].cells)))
    assert facts["24h usage"] == "1.2k in / 300 out, $0.25"
    assert facts["cpu"] == "12.5 %" and facts["work"] == "2 sessions, 3 processes"


def test_the_dashboard_reads_every_figure_the_node_writes() -> None:
    """Documents built from the contracts' own types and their to_wire, as the node sends them."""
    from cortex_node.contracts import (DirectiveKind, DirectivePriority, DirectiveRecord, DirectiveRole,
                                       DirectiveStatus, NodeMetrics, ProcessInfo, ProcessStatus, SeriesPoint,
                                       SwarmResourceReport, project, to_wire)

    usage = Usage(tokens_in=11, tokens_out=22, cost_usd=0.33, tool_calls=4, cpu_ms=55.5, peak_memory_mb=66.0)
    metrics = NodeMetrics(cpu_percent=1.5, memory_used_mb=2.0, memory_total_mb=3.0, disk_used_mb=4.0,
                          disk_total_mb=5.0, active_sessions=6, active_processes=7, uptime_seconds=8.5, today=usage)
    node = Node.from_json({**NODE_DOC, "metrics": to_wire(metrics)})
    assert (node.load, node.today) == (project(NodeLoad, metrics), usage)

    process = ProcessInfo(pid=REMOTE_PID_BASE, parent_pid=None, name="coder", role="agent",
                          status=ProcessStatus.RUNNING, node_id="node_b", resources=usage)
    report = SwarmResourceReport("2026-11-25T10:00:00.000Z", "2026-11-26T10:00:00.000Z", 1, 1, total_tokens_in=11,
                                 total_tokens_out=22, total_cost_usd=0.33, total_tool_calls=4, total_cpu_ms=55.5,
                                 total_peak_memory_mb=66.0, per_node=[])
    fleet = FleetState.from_json({"selfId": "node_a", "nodes": [NODE_DOC]},
                                 {"processes": [to_wire(process)]}, to_wire(report))
    assert fleet.processes[0].resources == usage and fleet.totals.usage == usage

    run = RunMetrics(**fields_of(usage), duration_ms=900)
    record = DirectiveRecord(**fields_of(run), directive_id="dir_1", source_node_id="node_a",
                             target_node_id="node_b", kind=DirectiveKind.EXECUTE_TASK, payload={},
                             priority=DirectivePriority.HIGH, status=DirectiveStatus.COMPLETED,
                             role=DirectiveRole.OUTBOUND, ttl_ms=1000)
    assert Directive.from_json(to_wire(record)).metrics == run

    point = SeriesPoint(**fields_of(usage), **fields_of(project(NodeLoad, metrics)),
                        snapshot_at="2026-11-26T10:00:00.000Z")
    sample = Snapshot.from_json(to_wire(point))
    assert (sample.at_ms, sample.usage(), project(NodeLoad, sample)) == (1795687200000, usage, node.load)


def fields_of(value: object) -> dict:
    import dataclasses

    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


def test_figures_from_older_and_newer_nodes_are_read_without_fuss() -> None:
    older = {**NODE_DOC, "metrics": {"cpuPercent": 3, "tokensUsedToday": 50, "tokensOutToday": 7, "costUsdToday": 0.1}}
    node = Node.from_json(older)  # before the one usage vector: three flat ...Today figures
    assert (node.load.cpu_percent, node.today) == (3.0, Usage(tokens_in=50, tokens_out=7, cost_usd=0.1))
    newer = {**NODE_DOC, "metrics": {"cpuPercent": "busy", "gpuPercent": 80, "today": {"tokensIn": 5, "joules": 1}}}
    node = Node.from_json(newer)
    assert (node.load, node.today) == (NodeLoad(), Usage(tokens_in=5))
    assert Node.from_json({**NODE_DOC, "metrics": None}).today == Usage()


def test_directives_carry_their_run_metrics_and_series_points_the_contracts_snapshot() -> None:
    d = Directive.from_json({"directiveId": "dir_1", "tokensIn": 10, "tokensOut": 3, "costUsd": 0.01,
                             "toolCalls": 2, "cpuMs": 5.5, "peakMemoryMb": 12.0, "durationMs": 900})
    assert d.metrics == RunMetrics(tokens_in=10, tokens_out=3, cost_usd=0.01, tool_calls=2, cpu_ms=5.5,
                                   peak_memory_mb=12.0, duration_ms=900)
    s = Snapshot.from_json({"snapshotAt": "2026-11-26T10:00:00.000Z", "cpuPercent": 50, "tokensIn": 9,
                            "diskUsedMb": 7.5, "peakMemoryMb": None})
    assert (s.at_ms, s.cpu_percent, s.tokens_in, s.disk_used_mb, s.peak_memory_mb) == (1795687200000, 50.0, 9, 7.5, 0.0)
    with pytest.raises(BadAnswer):
        Snapshot.from_json({"cpuPercent": 1})


def test_liveness_is_the_contracts_rule_and_an_unknown_status_is_not_live() -> None:
    from cortex_node.contracts import NodeStatus

    for status in NodeStatus:
        assert Node(id="n", name="n", status=status.value).is_live is status.is_live
    assert Node(id="n", name="n", status="hibernating").is_live is False


LENIENT_VALUES = (None, 0, 7, -3, 2.0, 2.75, 1e20, True, False, "x", "", [1], {"a": 1})


@pytest.mark.parametrize("cls", [Usage, RunMetrics, NodeLoad])
def test_the_lenient_reader_keeps_defaults_for_what_it_cannot_read(cls: type) -> None:
    import dataclasses
    import math
    import random

    from cortex_node.contracts import camel

    fields = {camel(f.name): f for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    rng = random.Random(5)
    docs: list[object] = [None, [], "x", {}]
    docs += [{key: value} for key in fields for value in LENIENT_VALUES]
    docs += [{key: rng.choice(LENIENT_VALUES) for key in fields if rng.random() < 0.7} for _ in range(300)]
    docs += [{key: float("nan") for key in fields}, {key: float("inf") for key in fields}]
    for doc in docs:
        got = read_lenient(cls, doc)
        for key, f in fields.items():
            value = doc.get(key) if isinstance(doc, dict) else None
            kind = type(f.default)
            usable = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                      if kind in (int, float) else isinstance(value, kind))  # an int field truncates 2.75
            expected = kind(value) if usable else f.default
            assert getattr(got, f.name) == expected and type(getattr(got, f.name)) is kind, (doc, key)


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
        if node.is_live:
            assert node.today.tokens_in > 0 and node.load.cpu_percent > 0, "a beating node reports its figures"
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
    assert [n.load.cpu_percent for n in later.nodes] != [n.load.cpu_percent for n in fleet.nodes]
    assert fleet.totals.usage.tokens_in == sum(n.today.tokens_in for n in fleet.nodes) > 0
